//! The REST envelope (bitrix24-rest.md §1.3-1.5): `{"result", "total"?, "next"?, "time"}` on
//! success, `{"error", "error_description"}` (no `time`) on failure, and PHP's JSON quirks.

use serde_json::{json, Map, Value};

use super::clock::iso;
use super::params::is_sequential;

/// A method-level or transport-level error as Bitrix24 answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    /// May be empty: legacy telephony/CRM errors are thrown without a code (§1.4).
    pub code: String,
    pub description: String,
}

impl ApiError {
    pub fn new(status: u16, code: &str, description: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            description: description.into(),
        }
    }

    /// HTTP 400 with `error: ""` (telephony and legacy CRM validation errors).
    pub fn legacy(description: impl Into<String>) -> Self {
        Self::new(400, "", description)
    }

    pub fn method_not_found() -> Self {
        Self::new(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")
    }

    pub fn query_limit() -> Self {
        Self::new(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")
    }

    pub fn no_auth() -> Self {
        Self::new(401, "NO_AUTH_FOUND", "Wrong authorization data")
    }

    pub fn wrong_auth_type() -> Self {
        Self::new(
            403,
            "WRONG_AUTH_TYPE",
            "Current authorization type is denied for this method",
        )
    }

    /// The error object; `error_code_mode` replaces an empty code (observed) with e.g. `ERROR_CORE`
    /// (documented) when the fake is configured so.
    pub fn body(&self, empty_code_as: Option<&str>) -> Value {
        let code = match (self.code.is_empty(), empty_code_as) {
            (true, Some(c)) => c,
            _ => self.code.as_str(),
        };
        json!({ "error": code, "error_description": self.description })
    }
}

/// What a method returns: `total`/`next` are lifted out of the result by the server.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    pub result: Value,
    pub total: Option<u64>,
    pub next: Option<u64>,
}

impl Output {
    pub fn of(result: Value) -> Self {
        Self {
            result,
            total: None,
            next: None,
        }
    }
}

/// The `time` block: floats for seconds, ISO dates with offset, the operating counters.
#[derive(Clone, Copy, Debug)]
pub struct TimeInfo {
    pub start: f64,
    pub finish: f64,
    pub operating: f64,
    pub operating_reset_at: Option<i64>,
}

impl TimeInfo {
    pub fn to_json(self, tz_offset: i32) -> Value {
        let duration = (self.finish - self.start).max(0.0);
        let mut t = json!({
            "start": self.start,
            "finish": self.finish,
            "duration": duration,
            "processing": duration * 0.9,
            "date_start": iso(self.start.floor() as i64, tz_offset),
            "date_finish": iso(self.finish.floor() as i64, tz_offset),
            "operating": self.operating,
        });
        let reset = self
            .operating_reset_at
            .unwrap_or(self.finish.floor() as i64);
        t["operating_reset_at"] = json!(reset);
        t
    }
}

/// `{"result": .., "total"?, "next"?, "time": ..}`.
pub fn success_body(out: &Output, time: Value) -> Value {
    let mut body = json!({ "result": out.result });
    if let Some(t) = out.total {
        body["total"] = json!(t);
    }
    if let Some(n) = out.next {
        body["next"] = json!(n);
    }
    body["time"] = time;
    body
}

/// A PHP associative array as JSON: `[]` when empty, an array when keyed 0..n-1, else an object.
pub fn php_map(entries: Vec<(String, Value)>) -> Value {
    if entries.is_empty() {
        return json!([]);
    }
    if is_sequential(entries.iter().map(|(k, _)| k.as_str())) {
        return Value::Array(entries.into_iter().map(|(_, v)| v).collect());
    }
    Value::Object(entries.into_iter().collect::<Map<String, Value>>())
}
