//! What the fake records for assertions: every REST request, with batch sub-calls.

use std::time::Instant;

use serde_json::Value;

use super::envelope::ApiError;
use super::faults::Fault;

/// How a request authenticated (or tried to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    /// `/rest/{user}/{code}/...`
    Webhook { user_id: String, code: String },
    /// `/rest/...` with an access token (`auth`, `access_token` or `Bearer`); empty when none.
    OAuth { token: String },
}

/// One HTTP request, or one batch sub-call (then `key` is its `cmd` key).
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Real (not fake-clock) time the request arrived.
    pub at: Instant,
    /// Lower-cased method without `.json` (`"batch"` for a batch).
    pub method: String,
    /// The parameter tree (query + body merged; `auth` stripped); for sub-calls, after
    /// `$result[..]` substitution. PHP lists (`USER_ID[0]`, `USER_ID[1]`) show as JSON arrays.
    pub params: Value,
    /// HTTP status answered (0 = connection reset). Sub-calls: the status the error would have
    /// had on its own, 200 when fine.
    pub status: u16,
    pub via: Via,
    pub key: Option<String>,
    pub result: Option<Value>,
    pub error: Option<ApiError>,
    /// The injected fault that answered this request, if any.
    pub fault: Option<Fault>,
    pub sub_calls: Vec<Self>,
}

impl Recorded {
    pub fn new(at: Instant, method: &str, params: Value, via: Via) -> Self {
        Self {
            at,
            method: method.to_owned(),
            params,
            status: 0,
            via,
            key: None,
            result: None,
            error: None,
            fault: None,
            sub_calls: Vec::new(),
        }
    }

    /// Answered without error (HTTP 200 and no error object).
    pub fn ok(&self) -> bool {
        self.status == 200 && self.error.is_none()
    }

    /// A parameter by top-level key.
    pub fn param(&self, key: &str) -> Option<&Value> {
        self.params.get(key)
    }

    /// A scalar parameter as text (numbers printed, strings as is).
    pub fn param_str(&self, key: &str) -> Option<String> {
        match self.params.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(if *b { "1".into() } else { String::new() }),
            _ => None,
        }
    }

    /// The error description, if the call failed with a REST error.
    pub fn error_description(&self) -> Option<&str> {
        self.error.as_ref().map(|e| e.description.as_str())
    }
}
