//! The personal-manager index and the employee mappings from Bitrix24, on demand:
//! `POST /api/v1/portals/{id}/index/sync` (a full sync now, `crm::IndexSync`) and
//! `POST /api/v1/portals/{id}/mappings/import` (a mapping for every active user whose
//! extension, `UF_PHONE_INNER`, is free).
//!
//! The service reaches the handlers as an `Extension<Arc<IndexSync>>` layered on by `app`
//! (without it: 503). Answers: 404 unknown portal, 422 no usable credentials, 409 a sync of the
//! portal is running, 502 Bitrix24 failed (its error in `message`, the kind in `bitrix24_error`).

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ErrorBody, ErrorCode};
use super::openapi::PortalPath;
use super::{ApiError, AppState};
use crate::crm::{AccessError, IndexSync, SyncError, SyncReport, User};
use crate::settings::{check_mapping, Mapping, MappingInput, UserId};
use crate::store::StoreError;

/// Token-protected routes.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sync_index))
        .routes(routes!(import_mappings))
}

type Service = Option<Extension<Arc<IndexSync>>>;

#[utoipa::path(post, path = "/portals/{id}/index/sync", tag = "bitrix24", summary = "Full sync of the personal-manager index from Bitrix24, now",
    description = "Contacts, companies and leads (batched list pages; precedence contact > company > lead); the portal's index is replaced. No request body.",
    params(PortalPath),
    responses(
        (status = 200, description = "Synced", body = SyncReport),
        (status = 404, description = "No such portal", body = ErrorBody),
        (status = 409, description = "A sync of this portal is already running", body = ErrorBody),
        (status = 422, description = "The portal has no usable Bitrix24 credentials (`fields`: `auth`)", body = ErrorBody),
        (status = 502, description = "Bitrix24 failed or refused; `message` holds its error, `bitrix24_error` the kind", body = ErrorBody),
        (status = 503, description = "The index service is not running, or callgate is shutting down", body = ErrorBody),
    ))]
async fn sync_index(
    State(state): State<AppState>,
    service: Service,
    Path(raw): Path<String>,
) -> Result<Json<SyncReport>, Failure> {
    let pid = super::portals::load(&state, &raw).await?.id;
    let Some(Extension(service)) = service else {
        return Err(Failure::Unavailable);
    };
    let running = service.start_sync(pid)?;
    let report = running.await.map_err(|e| ApiError::Internal(e.into()))??;
    Ok(Json(report))
}

/// Why an active user got no mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub(crate) enum SkipReason {
    /// The user is mapped already.
    #[serde(rename = "already mapped")]
    AlreadyMapped,
    /// No `UF_PHONE_INNER`.
    #[serde(rename = "no extension")]
    NoExtension,
    /// The extension is not one a mapping accepts.
    #[serde(rename = "invalid extension")]
    InvalidExtension,
    /// Another mapping (or an earlier user of this import) has the extension.
    #[serde(rename = "extension taken")]
    ExtensionTaken,
}

/// An active Bitrix24 user who got no mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub(crate) struct Skipped {
    /// The user.
    #[schema(value_type = u64)]
    user_id: UserId,
    /// Why.
    reason: SkipReason,
}

/// What an import of mappings did.
#[derive(Serialize, ToSchema)]
struct ImportAnswer {
    /// The mappings created.
    created: Vec<Mapping>,
    /// The active users who got none, and why.
    skipped: Vec<Skipped>,
}

/// The mappings to create for `users` (active, sorted by id) next to `existing`, and why the
/// others get none (pure). Mappings take part in personal-manager routing, with no static contact.
pub(crate) fn plan_import(
    users: &[User],
    existing: &[Mapping],
) -> (Vec<MappingInput>, Vec<Skipped>) {
    let mut mapped: HashSet<UserId> = existing.iter().map(|m| m.user_id).collect();
    let mut taken: HashSet<String> = existing.iter().map(|m| m.extension.clone()).collect();
    let (mut create, mut skipped) = (Vec::new(), Vec::new());
    for u in users {
        let skip = |reason| Skipped {
            user_id: u.id,
            reason,
        };
        if mapped.contains(&u.id) {
            skipped.push(skip(SkipReason::AlreadyMapped));
            continue;
        }
        let Some(ext) = u.uf_phone_inner.as_deref() else {
            skipped.push(skip(SkipReason::NoExtension));
            continue;
        };
        let input = MappingInput {
            user_id: u.id,
            extension: ext.to_owned(),
            use_for_personal_manager: true,
            contact: None,
        };
        match check_mapping(&input) {
            Err(_) => skipped.push(skip(SkipReason::InvalidExtension)),
            Ok(m) if !taken.insert(m.extension.clone()) => {
                skipped.push(skip(SkipReason::ExtensionTaken))
            }
            Ok(m) => {
                mapped.insert(m.user_id);
                create.push(m);
            }
        }
    }
    (create, skipped)
}

#[utoipa::path(post, path = "/portals/{id}/mappings/import", tag = "mappings", summary = "Import mappings from Bitrix24's users",
    description = "Creates a mapping (use_for_personal_manager true, contact null) for every active Bitrix24 user (user.get) whose extension (UF_PHONE_INNER) is set and free and who is not mapped yet; reloads the directory. No request body.",
    params(PortalPath),
    responses(
        (status = 200, description = "Imported", body = ImportAnswer),
        (status = 404, description = "No such portal", body = ErrorBody),
        (status = 422, description = "The portal has no usable Bitrix24 credentials (`fields`: `auth`)", body = ErrorBody),
        (status = 502, description = "Bitrix24 failed or refused; `message` holds its error, `bitrix24_error` the kind", body = ErrorBody),
        (status = 503, description = "The index service is not running, or callgate is shutting down", body = ErrorBody),
    ))]
async fn import_mappings(
    State(state): State<AppState>,
    service: Service,
    Path(raw): Path<String>,
) -> Result<Json<ImportAnswer>, Failure> {
    let pid = super::portals::load(&state, &raw).await?.id;
    let Some(Extension(service)) = service else {
        return Err(Failure::Unavailable);
    };
    let (users, requests) = service.active_users(pid).await?;
    let (created, skipped) = state
        .store
        .run(move |s| {
            let (plan, mut skipped) = plan_import(&users, &s.list_mappings(pid)?);
            let mut created = Vec::new();
            for m in plan {
                match s.insert_mapping(pid, &m) {
                    Ok(c) => created.push(c),
                    // Added through the API meanwhile.
                    Err(StoreError::Conflict { field }) => {
                        let reason = if field == "user_id" {
                            SkipReason::AlreadyMapped
                        } else {
                            SkipReason::ExtensionTaken
                        };
                        skipped.push(Skipped {
                            user_id: m.user_id,
                            reason,
                        });
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok((created, skipped))
        })
        .await?;
    if !created.is_empty() {
        state.directory.reload(&state.store).await?;
    }
    tracing::info!(
        portal = pid,
        created = created.len(),
        skipped = skipped.len(),
        requests,
        "employee mappings imported from Bitrix24 users"
    );
    Ok(Json(ImportAnswer { created, skipped }))
}

/// A failed request: an [`ApiError`], or what the index service said.
#[derive(Debug)]
enum Failure {
    Api(ApiError),
    Sync(SyncError),
    /// The gateway runs without the index service (or is stopping).
    Unavailable,
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<SyncError> for Failure {
    fn from(e: SyncError) -> Self {
        Self::Sync(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::Api(e.into())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let e = match self {
            Self::Api(e) => return e.into_response(),
            Self::Unavailable => {
                return answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    "the Bitrix24 index service is not running",
                    None,
                )
            }
            Self::Sync(e) => e,
        };
        match e {
            e if e.no_credentials() => ApiError::field("auth", e.to_string()).into_response(),
            SyncError::Busy => answer(
                StatusCode::CONFLICT,
                ErrorCode::Conflict,
                "a sync of this portal is already running",
                None,
            ),
            SyncError::UnknownPortal => ApiError::NotFound("portal").into_response(),
            SyncError::Store(e) => ApiError::from(e).into_response(),
            SyncError::Cancelled => answer(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "callgate is shutting down",
                None,
            ),
            SyncError::Access(AccessError::Store(e)) => {
                ApiError::Internal(anyhow::anyhow!(e)).into_response()
            }
            SyncError::Access(AccessError::Crm(e) | AccessError::Reinstall(e)) => {
                tracing::warn!(error = %e, "Bitrix24 request of the admin API failed");
                answer(
                    StatusCode::BAD_GATEWAY,
                    ErrorCode::BadGateway,
                    &format!("Bitrix24: {e}"),
                    Some(e.kind()),
                )
            }
            other => ApiError::Internal(other.into()).into_response(),
        }
    }
}

/// The admin API's error shape, for the statuses `ApiError` has no variant for.
fn answer(status: StatusCode, code: ErrorCode, message: &str, bitrix24_error: Option<&'static str>) -> Response {
    ErrorBody { bitrix24_error, ..ErrorBody::new(code, message) }.answer(status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(id: u64, ext: Option<&str>) -> User {
        User {
            id,
            active: true,
            uf_phone_inner: ext.map(str::to_owned),
            name: String::new(),
        }
    }

    #[test]
    fn free_extensions_get_mappings_and_the_rest_a_reason() {
        let existing = [Mapping {
            id: 1,
            user_id: 11,
            extension: "101".into(),
            use_for_personal_manager: true,
            contact: None,
        }];
        let users = [
            user(1, None),
            user(11, Some("111")),
            user(21, Some("104")),
            user(22, Some("101")),
            user(23, Some("104")),
            user(24, Some("10 4")),
        ];
        let (create, skipped) = plan_import(&users, &existing);
        assert_eq!(
            create,
            [MappingInput {
                user_id: 21,
                extension: "104".into(),
                use_for_personal_manager: true,
                contact: None
            }]
        );
        let reasons: Vec<(u64, SkipReason)> =
            skipped.iter().map(|s| (s.user_id, s.reason)).collect();
        use SkipReason::*;
        assert_eq!(
            reasons,
            [
                (1, NoExtension),
                (11, AlreadyMapped),
                (22, ExtensionTaken),
                (23, ExtensionTaken),
                (24, InvalidExtension)
            ]
        );
        assert_eq!(
            serde_json::to_value(&skipped[0]).unwrap(),
            json!({"user_id": 1, "reason": "no extension"})
        );
    }
}
