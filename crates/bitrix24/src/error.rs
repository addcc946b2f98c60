//! [`Error`]: every way a Bitrix24 REST call can fail, as one enum.
//!
//! Classification: the `error` code first (compared
//! ASCII-case-insensitively: the portal mixes `expired_token` and `QUERY_LIMIT_EXCEEDED`), then the
//! `error_description` when the code is empty or `ERROR_CORE` (telephony and legacy CRM errors come
//! as `{"error":"","error_description":"Call is not found (…"}`), then the HTTP status (older docs
//! list most errors with HTTP 200, current ones with 400/401/403/429/503, so the status is only a
//! tie-breaker). [`Error::from_api_error`] is pure and table-tested; `classify_raw` applies it
//! to a whole HTTP answer (redirects, non-JSON bodies, errors inside HTTP 200).
//!
//! No variant carries a token, a webhook code or a full URL: errors are logged, and the webhook URL
//! *is* the secret. [`Error::Moved`] keeps the new location for the caller but prints only its
//! origin.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use url::Url;

/// A failed Bitrix24 REST call (or OAuth token request).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request did not get an HTTP answer: DNS, connect, TLS, timeout, reset.
    #[error("network error: {message}")]
    Network {
        /// What failed (never contains the URL).
        message: String,
    },
    /// The answer was not a Bitrix24 JSON envelope (e.g. an HTML 502 page from a proxy).
    #[error("HTTP {status} without a Bitrix24 envelope: {body_snippet}")]
    Http {
        /// HTTP status.
        status: u16,
        /// The start of the body, for the log.
        body_snippet: String,
    },
    /// The portal answered 3xx: it moved to a new address (see [`crate::moves`]). Re-send the
    /// request to the new host yourself and persist it; POST bodies are never re-sent blindly.
    #[error("the portal moved (HTTP 3xx) to {}", origin_of(location))]
    Moved {
        /// The absolute `Location` (may contain the webhook path: treat as a secret).
        location: String,
    },
    /// `QUERY_LIMIT_EXCEEDED` (503, older docs 429): the per-IP leaky bucket overflowed.
    #[error("QUERY_LIMIT_EXCEEDED: too many requests")]
    RateLimited,
    /// `OPERATION_TIME_LIMIT` (429): this method is blocked until `operating_reset_at`.
    #[error("OPERATION_TIME_LIMIT for {method}")]
    OperationLimit {
        /// The blocked method.
        method: String,
    },
    /// `OVERLOAD_LIMIT` (503): REST is blocked for the portal.
    #[error("OVERLOAD_LIMIT: REST API is blocked due to overload")]
    Overload,
    /// `expired_token`: refresh the OAuth token and retry once.
    #[error("the access token has expired")]
    ExpiredToken,
    /// `invalid_token`: unknown or revoked token; refresh, and reinstall if that fails.
    #[error("the access token is invalid")]
    InvalidToken,
    /// Authentication or authorisation failed in a way a refresh does not fix
    /// (`INVALID_CREDENTIALS`, `NO_AUTH_FOUND`, `insufficient_scope`, `authorization_error`,
    /// `ACCESS_DENIED`, `PAYMENT_REQUIRED`, OAuth `invalid_grant`/`invalid_client`, …).
    #[error("authorisation failed: {code}: {description}")]
    Auth {
        /// The `error` code (may be empty).
        code: String,
        /// The `error_description`.
        description: String,
    },
    /// `ERROR_METHOD_NOT_FOUND` (404).
    #[error("method not found: {method}")]
    MethodNotFound {
        /// The method that was called.
        method: String,
    },
    /// "Call is not found (call should be registered prior to finishing" or "Call is not found in
    /// the statistic table…" (attachRecord before finish).
    #[error("call not found: {description}")]
    CallNotFound {
        /// The exact description, to tell the two cases apart.
        description: String,
    },
    /// "User is not found or is not active".
    #[error("user is not found or is not active")]
    UserNotFound,
    /// Any other method-level error.
    #[error("Bitrix24 error {code:?} (HTTP {status}): {description}")]
    Api {
        /// The `error` code (may be empty).
        code: String,
        /// The `error_description`.
        description: String,
        /// HTTP status of the envelope (200 for errors inside a `batch`).
        status: u16,
    },
    /// A 5xx with a Bitrix24 error code (`INTERNAL_SERVER_ERROR`, `ERROR_UNEXPECTED_ANSWER`, …).
    #[error("Bitrix24 server error {code:?} (HTTP {status})")]
    Server {
        /// HTTP status.
        status: u16,
        /// The `error` code.
        code: String,
    },
    /// A JSON answer that does not have the expected shape.
    #[error("cannot decode the answer: {message}")]
    Decode {
        /// What did not match.
        message: String,
    },
    /// The answer body exceeded the client's size cap.
    #[error("the answer is larger than {limit_bytes} bytes")]
    TooLarge {
        /// The cap.
        limit_bytes: usize,
    },
    /// A URL that the client refuses before sending: `http://` to a non-loopback host.
    #[error("refusing plain http:// to {host}: only https, or http to a loopback address")]
    InsecureUrl {
        /// The host (no path: the path may hold the webhook code).
        host: String,
    },
    /// A URL that cannot be used at all (unparsable, wrong scheme, no host, query or fragment).
    #[error("unusable URL: {reason}")]
    InvalidUrl {
        /// Why.
        reason: String,
    },
    /// A method name with characters other than letters, digits, `.` and `_`.
    #[error("invalid method name {method:?}")]
    InvalidMethod {
        /// The rejected name.
        method: String,
    },
    /// A `batch` with more commands than Bitrix24 executes (50).
    #[error("batch has {commands} commands; at most {max} are allowed")]
    BatchTooLarge {
        /// Commands given.
        commands: usize,
        /// The limit.
        max: usize,
    },
    /// A `batch` command key that is empty, numeric, duplicated or not `[A-Za-z0-9_]`.
    #[error("invalid batch key {key:?}: keys must be unique, non-numeric, [A-Za-z0-9_]+")]
    InvalidBatchKey {
        /// The rejected key.
        key: String,
    },
    /// The HTTP client could not be built (bad root CA, TLS setup).
    #[error("cannot build the HTTP client: {message}")]
    ClientBuild {
        /// What failed.
        message: String,
    },
}

/// How long to wait at least before retrying after a rate-limit answer (Bitrix24 drains its
/// per-portal bucket by 2 requests a second).
pub const RATE_LIMIT_BACKOFF: Duration = Duration::from_secs(1);
/// Minimum wait after `OPERATION_TIME_LIMIT` or `OVERLOAD_LIMIT` when no `operating_reset_at` is
/// known: the operating sum is kept in one-minute buckets.
pub const LIMIT_BLOCK_BACKOFF: Duration = Duration::from_secs(60);
/// Minimum wait after a transient network or server failure.
pub const TRANSIENT_BACKOFF: Duration = Duration::from_secs(1);

impl Error {
    /// Classifies an error envelope `{"error": code, "error_description": description}` that came
    /// with HTTP `status` from a call of `method`.
    pub fn from_api_error(status: u16, code: &str, description: &str, method: &str) -> Self {
        if let Some(err) = by_code(status, code, description, method) {
            return err;
        }
        if code.is_empty() || code.eq_ignore_ascii_case("ERROR_CORE") {
            if let Some(err) = by_description(description) {
                return err;
            }
        }
        by_status(status, code, description)
    }

    /// True when the same request may succeed later without any change: network failures,
    /// non-envelope 408/429/5xx, rate and operation limits, overload, Bitrix24 5xx.
    pub fn retryable(&self) -> bool {
        match self {
            Self::Network { .. }
            | Self::RateLimited
            | Self::OperationLimit { .. }
            | Self::Overload
            | Self::Server { .. } => true,
            Self::Http { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            _ => false,
        }
    }

    /// True for `expired_token` / `invalid_token`: refresh the OAuth token, then retry once.
    pub fn needs_token_refresh(&self) -> bool {
        matches!(self, Self::ExpiredToken | Self::InvalidToken)
    }

    /// The minimum wait before retrying a [`retryable`](Self::retryable) error; `None` when the
    /// error is not retryable. Callers grow it exponentially on repeats; for
    /// [`OperationLimit`](Self::OperationLimit) prefer `operating_reset_at` of the last success.
    pub fn retry_after_hint(&self) -> Option<Duration> {
        match self {
            Self::RateLimited => Some(RATE_LIMIT_BACKOFF),
            Self::OperationLimit { .. } | Self::Overload => Some(LIMIT_BLOCK_BACKOFF),
            _ if self.retryable() => Some(TRANSIENT_BACKOFF),
            _ => None,
        }
    }

    /// A short stable name for metrics labels and logs (`"rate_limited"`, `"call_not_found"`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Network { .. } => "network",
            Self::Http { .. } => "http",
            Self::Moved { .. } => "moved",
            Self::RateLimited => "rate_limited",
            Self::OperationLimit { .. } => "operation_limit",
            Self::Overload => "overload",
            Self::ExpiredToken => "expired_token",
            Self::InvalidToken => "invalid_token",
            Self::Auth { .. } => "auth",
            Self::MethodNotFound { .. } => "method_not_found",
            Self::CallNotFound { .. } => "call_not_found",
            Self::UserNotFound => "user_not_found",
            Self::Api { .. } => "api",
            Self::Server { .. } => "server",
            Self::Decode { .. } => "decode",
            Self::TooLarge { .. } => "too_large",
            Self::InsecureUrl { .. } => "insecure_url",
            Self::InvalidUrl { .. } => "invalid_url",
            Self::InvalidMethod { .. } => "invalid_method",
            Self::BatchTooLarge { .. } => "batch_too_large",
            Self::InvalidBatchKey { .. } => "invalid_batch_key",
            Self::ClientBuild { .. } => "client_build",
        }
    }

    /// A [`Decode`](Self::Decode) error from anything displayable.
    pub(crate) fn decode(message: impl std::fmt::Display) -> Self {
        Self::Decode {
            message: message.to_string(),
        }
    }
}

/// Codes that mean "authorisation failed, a token refresh does not help".
const AUTH_CODES: &[&str] = &[
    "INVALID_CREDENTIALS",
    "NO_AUTH_FOUND",
    "insufficient_scope",
    "invalid_scope",
    "authorization_error",
    "user_access_error",
    "ACCESS_DENIED",
    "PAYMENT_REQUIRED",
    "APPLICATION_NOT_FOUND",
    "METHOD_CONFIRM_WAITING",
    "METHOD_CONFIRM_DENIED",
    "WRONG_AUTH_TYPE",
    "PORTAL_DELETED",
    "invalid_grant",
    "invalid_client",
    "wrong_client",
    "NOT_INSTALLED",
];

/// Bitrix24 codes that mean "the server failed", whatever the status.
const SERVER_CODES: &[&str] = &["INTERNAL_SERVER_ERROR", "ERROR_UNEXPECTED_ANSWER"];

fn by_code(status: u16, code: &str, description: &str, method: &str) -> Option<Error> {
    let is = |c: &str| code.eq_ignore_ascii_case(c);
    let err = if is("QUERY_LIMIT_EXCEEDED") {
        Error::RateLimited
    } else if is("OPERATION_TIME_LIMIT") {
        Error::OperationLimit {
            method: method.to_owned(),
        }
    } else if is("OVERLOAD_LIMIT") {
        Error::Overload
    } else if is("expired_token") {
        Error::ExpiredToken
    } else if is("invalid_token") {
        Error::InvalidToken
    } else if is("ERROR_METHOD_NOT_FOUND") {
        Error::MethodNotFound {
            method: method.to_owned(),
        }
    } else if AUTH_CODES.iter().any(|c| is(c)) {
        Error::Auth {
            code: code.to_owned(),
            description: description.to_owned(),
        }
    } else if SERVER_CODES.iter().any(|c| is(c)) {
        Error::Server {
            status,
            code: code.to_owned(),
        }
    } else {
        return None;
    };
    Some(err)
}

/// Codeless errors that callers must tell apart (telephony errors come without a code).
fn by_description(description: &str) -> Option<Error> {
    let d = description.trim();
    if d.starts_with("Call is not found") {
        Some(Error::CallNotFound {
            description: d.to_owned(),
        })
    } else if d.starts_with("User is not found or is not active") {
        Some(Error::UserNotFound)
    } else {
        None
    }
}

fn by_status(status: u16, code: &str, description: &str) -> Error {
    match status {
        401 => Error::Auth {
            code: code.to_owned(),
            description: description.to_owned(),
        },
        500..=599 => Error::Server {
            status,
            code: code.to_owned(),
        },
        _ => Error::Api {
            code: code.to_owned(),
            description: description.to_owned(),
            status,
        },
    }
}

/// `scheme://host[:port]` of a URL, or a placeholder: what may be printed of a location.
pub(crate) fn origin_of(location: &str) -> String {
    match Url::parse(location) {
        Ok(u) => u.origin().ascii_serialization(),
        Err(_) => "<unparsable location>".to_owned(),
    }
}

/// How much of a non-envelope body goes into [`Error::Http`].
const SNIPPET_CHARS: usize = 200;

/// Status, `Location` and body of an HTTP answer.
pub(crate) struct RawAnswer {
    pub(crate) status: u16,
    pub(crate) location: Option<String>,
    pub(crate) body: Bytes,
}

/// Classifies an HTTP answer to a call of `method` at `url` (pure), up to the success shape:
/// 3xx with `Location` → [`Error::Moved`]; a JSON object with `error` →
/// [`Error::from_api_error`] (whatever the status, even 200); a non-2xx or non-JSON answer →
/// [`Error::Http`]; otherwise the JSON object of the 2xx answer.
pub(crate) fn classify_raw(
    raw: &RawAnswer,
    url: &Url,
    method: &str,
) -> Result<serde_json::Map<String, Value>, Error> {
    if (300..400).contains(&raw.status) {
        if let Some(loc) = &raw.location {
            let location = url.join(loc).map_or_else(|_| loc.clone(), String::from);
            return Err(Error::Moved { location });
        }
    }
    let http = || Error::Http {
        status: raw.status,
        body_snippet: snippet(&raw.body, SNIPPET_CHARS),
    };
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(&raw.body) else {
        return Err(http());
    };
    if let Some(code) = obj.get("error") {
        let code = match code {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        let description = obj
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Err(Error::from_api_error(
            raw.status,
            &code,
            description,
            method,
        ));
    }
    if !(200..300).contains(&raw.status) {
        return Err(http());
    }
    Ok(obj)
}

/// At most `max` characters of `body`, lossily decoded, control characters replaced.
fn snippet(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(max * 4)]);
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}
