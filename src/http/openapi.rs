//! `GET /api/v1/openapi.json`: the OpenAPI 3.1 document of the HTTP listener, generated with
//! utoipa from the handlers' `#[utoipa::path]` attributes and the `ToSchema` types they take and
//! answer (the settings model, call records, ...), never written by hand.
//!
//! Routes are registered through `utoipa_axum`'s `routes!`, so a documented path and its methods
//! are the ones the router serves. The only routes left out are the static pages (`/`,
//! `/settings/...`, `/widget/...`: HTML, scripts, styles; `is_page` in the tests). The tests below walk the
//! built router and fail on any other route the document does not describe with its request and
//! answer shapes, and check the document's defaults and limits against the validators.

use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Extension;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref};
use utoipa::{Modify, OpenApi as _};

/// The routes that are pages, not API: the settings page, the widget, `/` (a redirect).
#[cfg(test)]
fn is_page(path: &str) -> bool {
    path == "/" || ["/settings", "/widget"].iter().any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

const DESCRIPTION: &str = "Portals (Bitrix24 credentials), per-portal settings, employee mappings, lines, the routing \
decision, tracked calls, browser agents. Bearer token: `admin.token` (operations marked otherwise need none). Errors: \
`{error, message, fields[{field, message}]}` (`ErrorBody`); 422 names the JSON path of every invalid field. Secrets are \
write-only: GET shows them masked (`***`); sending the masked value back keeps the stored one. Everything under `/api/v1` \
from a source without the token that no portal trusts is rate-limited (`http.rate_per_source`): 429 with `Retry-After`.";

/// The document's root: what no handler says.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "callgate admin API", version = "1", description = DESCRIPTION),
    modifiers(&BearerToken),
    security(("bearer" = [])),
    tags(
        (name = "portals", description = "Bitrix24 portals and their settings"),
        (name = "mappings", description = "Employee mappings: Bitrix24 user <-> PBX extension"),
        (name = "lines", description = "The portals' PBX lines (called numbers)"),
        (name = "routing", description = "The personal-manager decision, its index and audit"),
        (name = "calls", description = "Tracked calls"),
        (name = "agents", description = "Browser agents (WebRTC widget) and their media"),
        (name = "bitrix24", description = "Bitrix24's side: events, the app installation, syncs"),
        (name = "health", description = "Liveness, readiness, metrics, this document"),
    )
)]
pub(super) struct ApiDoc;

/// The `{id}` of a portal in a path (a non-number is a 404, as an unknown id).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only its documentation is used: the handlers parse the id themselves.
pub(super) struct PortalPath {
    /// The portal's id.
    id: i64,
}

/// The `bearer` security scheme the root's `security` names.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, api: &mut OpenApi) {
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("`admin.token` from the configuration")).build();
        api.components.get_or_insert_with(Default::default).add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The serialised document, served as it is.
#[derive(Clone)]
pub(super) struct Document(Bytes);

impl Document {
    /// Completes `api` (the answers every operation shares) and serialises it.
    ///
    /// # Panics
    /// Never in practice: the document is built from types whose serialisation cannot fail
    /// (utoipa's own model); a failure would be a bug caught by every test that builds the app.
    pub(super) fn new(mut api: OpenApi) -> Self {
        add_shared_answers(&mut api);
        Self(Bytes::from(api.to_json().expect("an OpenAPI document serialises")))
    }
}

/// 401 on every operation that needs the token (those that do not say otherwise), 429 on
/// everything under `/api/v1` (the per-source limit): said once here, not on every handler.
fn add_shared_answers(api: &mut OpenApi) {
    for (path, item) in &mut api.paths.paths {
        let limited = path.starts_with("/api/v1/");
        for op in operations(item) {
            if op.security.is_none() {
                add_error(op, "401", "No or a wrong admin token (`WWW-Authenticate: Bearer`)");
            }
            if limited {
                add_error(op, "429", "Too many requests from this address (`Retry-After`)");
            }
        }
    }
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.options, &mut item.head, &mut item.patch, &mut item.trace].into_iter().flatten()
}

fn add_error(op: &mut Operation, status: &str, description: &str) {
    let body = Content::new(Some(Ref::from_schema_name("ErrorBody")));
    let answer = ResponseBuilder::new().description(description).content("application/json", body).build();
    op.responses.responses.entry(status.to_owned()).or_insert_with(|| answer.into());
}

/// The root as `router` starts from.
pub(super) fn root() -> OpenApi {
    ApiDoc::openapi()
}

#[utoipa::path(get, path = "/openapi.json", tag = "health", summary = "This document", security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of the admin API", body = Object)))]
pub(super) async fn serve(Extension(doc): Extension<Document>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], doc.0)
}

#[cfg(test)]
mod tests;
