//! `ApiError`: every failure of the admin API as one enum, rendered as [`ErrorBody`]:
//! `{"error": "<code>", "message": "...", "fields": [{"field": "...", "message": "..."}]}`.
//! Internal errors are logged once here, at the boundary, and never leak their details.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::settings::{FieldError, FieldErrors};
use crate::store::StoreError;

/// What went wrong, for programs (the HTTP status says it too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ErrorCode {
    /// 400: malformed JSON, a wrong content type, a bad query or form field.
    BadRequest,
    /// 401: no or a wrong admin bearer token.
    Unauthorized,
    /// 403: the source may not use this endpoint.
    Forbidden,
    /// 404: no such resource.
    NotFound,
    /// 409: a unique field clashes, or the resource is busy.
    Conflict,
    /// 413: the body is too large.
    TooLarge,
    /// 422: invalid input; `fields` names every invalid field.
    ValidationFailed,
    /// 429: too many requests from this address (`Retry-After`).
    RateLimited,
    /// 500: something failed inside callgate (details in its log only).
    Internal,
    /// 502: Bitrix24 failed or refused (`bitrix24_error` says how).
    BadGateway,
    /// 503: a service this request needs is not running, or is stopping.
    Unavailable,
    /// 503: the queue is full (`Retry-After`).
    Overloaded,
}

/// The body of every refusal of the admin API.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// The kind of failure.
    pub(crate) error: ErrorCode,
    /// What went wrong, for people.
    pub(crate) message: String,
    /// Every invalid field with its JSON path (422), or the clashing field (409); else empty.
    pub(crate) fields: Vec<FieldError>,
    /// 502 only: the kind of Bitrix24 failure (`network`, `http`, `auth`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) bitrix24_error: Option<&'static str>,
    /// 409 of a portal delete only: the portal's calls still open in callgate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) open_calls: Option<usize>,
    /// 409 of a portal delete only: its calls ended but not yet finished in Bitrix24.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) unfinished_in_bitrix24: Option<usize>,
}

impl ErrorBody {
    /// A body without fields.
    pub(crate) fn new(error: ErrorCode, message: impl Into<String>) -> Self {
        Self { error, message: message.into(), fields: Vec::new(), bitrix24_error: None, open_calls: None, unfinished_in_bitrix24: None }
    }

    /// The response with `status`.
    pub(crate) fn answer(self, status: StatusCode) -> Response {
        (status, Json(self)).into_response()
    }
}

/// A failed API request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// Missing or wrong bearer token.
    #[error("a valid admin bearer token is required")]
    Unauthorized,
    /// The source may not use this endpoint (403).
    #[error("this source is not allowed; use the admin token or a trusted PBX address")]
    Forbidden,
    /// No such resource.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Input failed validation (422).
    #[error("the input is invalid")]
    Validation(FieldErrors),
    /// A unique field clashes with an existing record (409).
    #[error("{field} already exists")]
    Conflict {
        /// The clashing field.
        field: &'static str,
    },
    /// Malformed request (400): bad JSON syntax, wrong content type.
    #[error("{0}")]
    BadRequest(String),
    /// The request body is larger than `http.body_limit_bytes` (413).
    #[error("the request body is too large")]
    TooLarge,
    /// Something failed inside callgate (500); details go to the log only.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// A 422 for one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Validation(FieldErrors::one(field, message))
    }

    fn parts(&self) -> (StatusCode, ErrorCode) {
        match self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
            Self::Forbidden => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            Self::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::ValidationFailed),
            Self::Conflict { .. } => (StatusCode::CONFLICT, ErrorCode::Conflict),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
            Self::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::TooLarge),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict { field } => Self::Conflict { field },
            other => Self::Internal(other.into()),
        }
    }
}

impl From<FieldErrors> for ApiError {
    fn from(e: FieldErrors) -> Self {
        Self::Validation(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let fields: Vec<FieldError> = match &self {
            Self::Validation(f) => f.0.clone(),
            Self::Conflict { field } => vec![FieldError { field: (*field).into(), message: "already exists".into() }],
            _ => Vec::new(),
        };
        if let Self::Internal(e) = &self {
            tracing::error!(error = format!("{e:#}"), "admin API request failed");
        }
        let mut resp = ErrorBody { fields, ..ErrorBody::new(code, self.to_string()) }.answer(status);
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
