//! Our `Json` extractor: unknown fields and type errors become 422 with the JSON path of the field
//! (`incoming.assign_responsible_to`), malformed JSON becomes 400, a too-large body 413.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body, deserialised with field paths in its errors.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v.starts_with("application/json") || v.contains("+json"));
        if !json_type {
            return Err(ApiError::BadRequest("Content-Type must be application/json".into()));
        }
        let body = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge
            } else {
                ApiError::BadRequest("cannot read the request body".into())
            }
        })?;
        parse(&body).map(ApiJson)
    }
}

/// Deserialises with the failing field's path.
///
/// # Errors
/// 400 for syntax errors, 422 naming the field for everything else.
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let result: Result<T, _> = serde_path_to_error::deserialize(de);
    result.map_err(|err| {
        let inner = err.inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::BadRequest(format!("invalid JSON: {inner}"));
        }
        let msg = inner.to_string();
        let path = err.path().to_string();
        // For a missing field serde names it in the message while the path stops at the parent
        // object: append it so the path points at the field itself.
        let missing = msg.starts_with("missing field").then(|| quoted_field(&msg)).flatten();
        let field = match (path.as_str(), missing) {
            (".", Some(f)) => f.to_owned(),
            (p, Some(f)) => format!("{p}.{f}"),
            (".", None) => "body".to_owned(),
            (p, None) => p.to_owned(),
        };
        ApiError::field(field, strip_position(&msg))
    })
}

fn quoted_field(msg: &str) -> Option<&str> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(&msg[start..start + len])
}

/// serde_json appends " at line 1 column 42"; the field path already says where.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::PortalSettings;

    fn field_of(body: &str) -> String {
        match parse::<PortalSettings>(body.as_bytes()) {
            Err(ApiError::Validation(f)) => f.0[0].field.clone(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn paths_point_at_the_field() {
        assert_eq!(field_of(r#"{"bogus": 1}"#), "bogus");
        assert_eq!(field_of(r#"{"incoming": {"bogus": 1}}"#), "incoming.bogus");
        assert_eq!(field_of(r#"{"incoming": {"assign_responsible_to": "middle"}}"#), "incoming.assign_responsible_to");
        assert_eq!(field_of(r#"{"other": {"utm_tags": ["utm_source", "utm_nope"]}}"#), "other.utm_tags[1]");
        assert_eq!(field_of(r#"{"min_talk_seconds": -1}"#), "min_talk_seconds");
        let missing = parse::<crate::settings::PortalInput>(br#"{"name": "x"}"#);
        assert!(matches!(missing, Err(ApiError::Validation(f)) if f.0[0].field == "domain"));
        let missing = parse::<crate::settings::PortalInput>(br#"{"domain": "a.ru", "auth": {"oauth": {"client_id": "x"}}}"#);
        assert!(matches!(missing, Err(ApiError::Validation(f)) if f.0[0].field == "auth.oauth.client_secret"), "nested missing field");
    }

    #[test]
    fn syntax_errors_are_400() {
        assert!(matches!(parse::<PortalSettings>(b"{"), Err(ApiError::BadRequest(_))));
        assert!(matches!(parse::<PortalSettings>(b"{]"), Err(ApiError::BadRequest(_))));
    }
}
