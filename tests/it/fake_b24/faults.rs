//! Fault injection (bitrix24-rest.md §10.3 item 13).
//!
//! A fault is applied before anything else (bucket, auth, state): the request never "reaches"
//! Bitrix24, except `Stall`, which delays the request and then processes it normally (a slow
//! portal; if the client gave up meanwhile, the request may still have taken effect — as in real
//! life), and the lost-answer faults (`LoseAnswerReset`, `LoseAnswer502`), which process the
//! request in full and then drop the connection or answer a proxy's 502 instead of the result:
//! Bitrix24 did it, the client never learns. Faults apply to `/rest/...` requests; the OAuth
//! server has its own queue (`FakeB24::fail_next_oauth`).
//!
//! A user deactivated mid-test is not a fault but state: `FakeB24::set_user_active(id, false)`
//! (register and finish then answer "User is not found or is not active").

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::Value;

use super::envelope::ApiError;

/// One injected misbehaviour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 503 `QUERY_LIMIT_EXCEEDED` "Too many requests" (counted in `rejected()`).
    Status503QueryLimit,
    /// 503 `OVERLOAD_LIMIT` "REST API is blocked due to overload."
    Overload503,
    /// 500 `INTERNAL_SERVER_ERROR` "Internal server error".
    Internal500,
    /// 429 `OPERATION_TIME_LIMIT`.
    OperationTimeLimit429,
    /// Waits this long, then processes the request normally.
    Stall(Duration),
    /// 502 with an nginx HTML page (not JSON).
    Html502,
    /// Closes the connection (RST) without any response bytes.
    Reset,
    /// 302 to `<new base><same path and query>` ("portal renamed", §1.6).
    Redirect(String),
    /// Executes the request, then closes the connection (RST) instead of answering.
    LoseAnswerReset,
    /// Executes the request, then answers a proxy's HTML 502 instead of the result.
    LoseAnswer502,
}

/// What the server does for a fault.
#[derive(Clone, Debug)]
pub enum Action {
    Json(u16, Value),
    Html(u16, String),
    Redirect(String),
    Stall(Duration),
    Reset,
}

pub const HTML_502: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

impl Fault {
    /// `path_and_query` is the original request target, for redirects.
    pub fn action(&self, path_and_query: &str) -> Action {
        let err = |e: ApiError| Action::Json(e.status, e.body(None));
        match self {
            Self::Status503QueryLimit => err(ApiError::query_limit()),
            Self::Overload503 => err(ApiError::new(
                503,
                "OVERLOAD_LIMIT",
                "REST API is blocked due to overload.",
            )),
            Self::Internal500 => err(ApiError::new(
                500,
                "INTERNAL_SERVER_ERROR",
                "Internal server error",
            )),
            Self::OperationTimeLimit429 => err(ApiError::new(
                429,
                "OPERATION_TIME_LIMIT",
                "Method is blocked due to operation time limit.",
            )),
            Self::Stall(d) => Action::Stall(*d),
            Self::Html502 => Action::Html(502, HTML_502.to_owned()),
            Self::Reset | Self::LoseAnswerReset => Action::Reset,
            Self::LoseAnswer502 => Action::Html(502, HTML_502.to_owned()),
            Self::Redirect(base) => {
                Action::Redirect(format!("{}{}", base.trim_end_matches('/'), path_and_query))
            }
        }
    }

    /// Whether the request is executed before the answer is lost.
    pub fn executes_first(&self) -> bool {
        matches!(self, Self::LoseAnswerReset | Self::LoseAnswer502)
    }

    /// The HTTP status the client sees (0 = no response).
    pub fn status(&self) -> u16 {
        match self.action("/") {
            Action::Json(s, _) | Action::Html(s, _) => s,
            Action::Redirect(_) => 302,
            Action::Stall(_) => 200,
            Action::Reset => 0,
        }
    }
}

/// Queued one-shot faults and a sticky mode.
#[derive(Debug, Default)]
pub struct Faults {
    next: VecDeque<Fault>,
    pub mode: Option<Fault>,
    next_oauth: VecDeque<Fault>,
    pub oauth_mode: Option<Fault>,
}

impl Faults {
    pub fn push(&mut self, n: usize, fault: Fault) {
        self.next.extend(std::iter::repeat_n(fault, n));
    }

    pub fn push_oauth(&mut self, n: usize, fault: Fault) {
        self.next_oauth.extend(std::iter::repeat_n(fault, n));
    }

    /// The fault for the next REST request, if any (one-shot faults first).
    pub fn take(&mut self) -> Option<Fault> {
        self.next.pop_front().or_else(|| self.mode.clone())
    }

    pub fn take_oauth(&mut self) -> Option<Fault> {
        self.next_oauth
            .pop_front()
            .or_else(|| self.oauth_mode.clone())
    }

    pub fn pending(&self) -> usize {
        self.next.len()
    }
}

/// A fault's JSON status helper used by the recorder.
pub fn fault_error(f: &Fault) -> Option<ApiError> {
    match f.action("/") {
        Action::Json(status, body) => Some(ApiError::new(
            status,
            body["error"].as_str().unwrap_or_default(),
            body["error_description"].as_str().unwrap_or_default(),
        )),
        _ => None,
    }
}
