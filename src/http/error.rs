//! `ApiError`: every failure of the admin API as one enum, rendered as JSON
//! `{"error": "<code>", "message": "...", "fields": [{"field": "...", "message": "..."}]}`.
//! Internal errors are logged once here, at the boundary, and never leak their details.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::settings::{FieldError, FieldErrors};
use crate::store::StoreError;

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

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            Self::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
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
        let mut resp = (status, Json(json!({ "error": code, "message": self.to_string(), "fields": fields }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
