//! [`CrmClient`]: one `reqwest::Client` that calls Bitrix24 REST methods on any portal, and
//! [`Endpoint`]: where and how to call one portal.
//!
//! * Every call is a `POST` with a JSON body (bitrix24-rest.md §1.2); OAuth tokens travel as the
//!   `auth` body parameter, never in the URL. Answers are classified by `parse_envelope` (pure)
//!   into a [`Response`] or a [`CrmError`].
//! * Redirects are never followed (a renamed portal answers 302 and a silent GET would lose the
//!   body, §1.6): a 3xx becomes [`CrmError::Moved`]. The same holds for the OAuth `GET`, so the
//!   client secret in its query never goes to a host we did not choose.
//! * TLS certificates are verified (platform roots, plus [`CrmClientBuilder::with_root_ca`]);
//!   `http://` is refused unless the host is a loopback address (tests, a local fake).
//! * Nothing here retries, sleeps or rate-limits: the outbox worker does that, with
//!   [`CrmError::retryable`], [`LeakyBucket`](super::LeakyBucket) and [`TokenCell`](super::TokenCell).
//! * Secrets: the webhook URL and tokens never appear in `Debug`, errors, logs or metrics.

use std::time::Duration;

use bytes::BytesMut;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE, LOCATION};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::Value;
use url::{Host, Url};

use super::error::{classify_raw, RawAnswer};
use super::{BatchResult, CrmError, ListPage, ParamValue, Params};
use crate::config::Secret;

/// Default TCP connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default whole-request timeout (Bitrix24 itself cuts requests at 60 s).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default cap on an answer body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// The most commands Bitrix24 executes in one `batch` (§4).
pub const MAX_BATCH_COMMANDS: usize = 50;

/// Settings for a [`CrmClient`].
#[derive(Debug, Clone)]
pub struct CrmClientBuilder {
    connect_timeout: Duration,
    request_timeout: Duration,
    root_ca_pem: Vec<Vec<u8>>,
    user_agent: String,
    max_body_bytes: usize,
}

impl Default for CrmClientBuilder {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            root_ca_pem: Vec::new(),
            user_agent: concat!("callgate/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

impl CrmClientBuilder {
    /// TCP connect timeout (default 5 s).
    #[must_use]
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Whole-request timeout, body included (default 30 s).
    #[must_use]
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// Trusts the CA certificate(s) in `pem` in addition to the platform roots (a test CA).
    #[must_use]
    pub fn with_root_ca(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_ca_pem.push(pem.into());
        self
    }

    /// `User-Agent` header (default `callgate/<version>`).
    #[must_use]
    pub fn user_agent(mut self, ua: impl Into<String>) -> Self {
        self.user_agent = ua.into();
        self
    }

    /// Cap on an answer body (default 16 MiB).
    #[must_use]
    pub fn max_body_bytes(mut self, n: usize) -> Self {
        self.max_body_bytes = n;
        self
    }

    /// Builds the client. Installs the process-wide rustls crypto provider if none is installed
    /// yet (reqwest is built without one).
    ///
    /// # Errors
    /// [`CrmError::ClientBuild`] for an unusable root CA or TLS setup.
    pub fn build(self) -> Result<CrmClient, CrmError> {
        crate::tls::install_crypto_provider();
        let build_err = |message: String| CrmError::ClientBuild { message };
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let mut b = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(self.user_agent)
            .default_headers(headers);
        for pem in &self.root_ca_pem {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| build_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(build_err("the root CA PEM holds no certificate".to_owned()));
            }
            b = b.tls_certs_merge(certs);
        }
        let http = b.build().map_err(|e| build_err(error_chain(&e)))?;
        Ok(CrmClient {
            http,
            max_body_bytes: self.max_body_bytes,
        })
    }
}

/// The Bitrix24 REST client: cheap to clone (one connection pool), shared by all portals.
#[derive(Debug, Clone)]
pub struct CrmClient {
    http: reqwest::Client,
    max_body_bytes: usize,
}

/// Where and how to call one portal: a webhook URL, or an OAuth `client_endpoint` plus token.
#[derive(Clone, PartialEq)]
pub struct Endpoint {
    /// Ends with `/`; for a webhook the path holds the secret code.
    base: Url,
    /// OAuth access token; `None` for a webhook.
    access_token: Option<Secret>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.access_token.is_some() {
            "oauth"
        } else {
            "webhook"
        };
        f.debug_struct("Endpoint")
            .field("kind", &kind)
            .field("origin", &self.origin())
            .finish()
    }
}

impl Endpoint {
    /// An incoming webhook `https://portal/rest/<user>/<code>/`: methods are appended to it.
    ///
    /// # Errors
    /// [`CrmError::InvalidUrl`] / [`CrmError::InsecureUrl`] (see [`check_base_url`]).
    pub fn webhook(url: &Secret) -> Result<Self, CrmError> {
        Ok(Self {
            base: check_base_url(url.expose())?,
            access_token: None,
        })
    }

    /// An OAuth app: `client_endpoint` (`https://portal/rest/`) plus the access token, sent as the
    /// `auth` body parameter.
    ///
    /// # Errors
    /// As [`Endpoint::webhook`].
    pub fn oauth(client_endpoint: &str, access_token: Secret) -> Result<Self, CrmError> {
        Ok(Self {
            base: check_base_url(client_endpoint)?,
            access_token: Some(access_token),
        })
    }

    /// The same portal with another access token (after a refresh). No-op for webhooks.
    #[must_use]
    pub fn with_access_token(&self, token: Secret) -> Self {
        let access_token = self.access_token.as_ref().map(|_| token);
        Self {
            base: self.base.clone(),
            access_token,
        }
    }

    /// The OAuth access token, if this is an OAuth endpoint.
    pub fn access_token(&self) -> Option<&Secret> {
        self.access_token.as_ref()
    }

    /// `scheme://host[:port]`: what may be logged.
    pub fn origin(&self) -> String {
        self.base.origin().ascii_serialization()
    }

    /// The URL of `method`: base + method + `.json`.
    ///
    /// # Errors
    /// [`CrmError::InvalidMethod`] unless the name is `[A-Za-z0-9._]+`.
    pub fn method_url(&self, method: &str) -> Result<Url, CrmError> {
        check_method(method)?;
        self.base
            .join(&format!("{method}.json"))
            .map_err(|e| CrmError::InvalidUrl {
                reason: e.to_string(),
            })
    }
}

/// Validates a base URL and makes it end with `/` (pitfall 18): `https`, or `http` to a loopback
/// host; a host; no query or fragment. Errors never echo the URL (it may hold a webhook code).
///
/// # Errors
/// [`CrmError::InsecureUrl`] for `http://` elsewhere, [`CrmError::InvalidUrl`] otherwise.
pub fn check_base_url(raw: &str) -> Result<Url, CrmError> {
    let invalid = |reason: &str| CrmError::InvalidUrl {
        reason: reason.to_owned(),
    };
    let mut url =
        Url::parse(raw.trim()).map_err(|e| invalid(&format!("not an absolute URL ({e})")))?;
    check_scheme(&url)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("a base URL must not have a query or fragment"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// `https`, or `http` to a loopback host.
pub(crate) fn check_scheme(url: &Url) -> Result<(), CrmError> {
    let host = url.host().ok_or_else(|| CrmError::InvalidUrl {
        reason: "no host".to_owned(),
    })?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&host) => Ok(()),
        "http" => Err(CrmError::InsecureUrl {
            host: host.to_string(),
        }),
        other => Err(CrmError::InvalidUrl {
            reason: format!("scheme {other:?} is not https"),
        }),
    }
}

fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
    }
}

fn check_method(method: &str) -> Result<(), CrmError> {
    let ok = !method.is_empty()
        && !method.starts_with('.')
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(CrmError::InvalidMethod {
            method: method.to_owned(),
        })
    }
}

/// A successful answer (§1.3).
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// `result`.
    pub result: Value,
    /// `total` (list methods).
    pub total: Option<u64>,
    /// `next` (list methods with more pages).
    pub next: Option<u64>,
    /// The operating-limit part of `time` (cloud portals with the limiter active).
    pub time: Option<Time>,
}

/// The operating (resource) limit state reported with a success (§3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Time {
    /// Seconds of execution time summed over the sliding 10 minutes, for this method.
    pub operating: f64,
    /// Unix time when the oldest bucket expires.
    pub operating_reset_at: u64,
}

impl Response {
    /// Decodes `result` into `T`.
    ///
    /// # Errors
    /// [`CrmError::Decode`].
    pub fn decode<T: serde::de::DeserializeOwned>(self) -> Result<T, CrmError> {
        super::types::decode(self.result)
    }

    /// Decodes a list method's answer.
    ///
    /// # Errors
    /// [`CrmError::Decode`].
    pub fn into_page<T: serde::de::DeserializeOwned>(self) -> Result<ListPage<T>, CrmError> {
        ListPage::decode(self.result, self.total, self.next)
    }
}

/// One `batch` command: `key` → `method?query`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchCommand {
    /// Unique, non-numeric, `[A-Za-z0-9_]+` (so results are always maps and references work).
    pub key: String,
    /// Method name.
    pub method: String,
    /// Parameters; may hold [`Params::reference`] values.
    pub params: Params,
}

impl BatchCommand {
    /// A command.
    pub fn new(key: impl Into<String>, method: impl Into<String>, params: Params) -> Self {
        Self {
            key: key.into(),
            method: method.into(),
            params,
        }
    }

    /// `method?php-query` as it goes into `cmd`.
    pub fn cmd_string(&self) -> String {
        let q = self.params.to_query();
        if q.is_empty() {
            self.method.clone()
        } else {
            format!("{}?{q}", self.method)
        }
    }
}

/// Checks a batch before sending: ≤ 50 commands, valid unique keys, valid method names.
///
/// # Errors
/// [`CrmError::BatchTooLarge`], [`CrmError::InvalidBatchKey`], [`CrmError::InvalidMethod`].
pub fn check_batch(cmds: &[BatchCommand]) -> Result<(), CrmError> {
    if cmds.len() > MAX_BATCH_COMMANDS {
        return Err(CrmError::BatchTooLarge {
            commands: cmds.len(),
            max: MAX_BATCH_COMMANDS,
        });
    }
    let mut seen = std::collections::HashSet::new();
    for c in cmds {
        let k = c.key.as_str();
        let charset = k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let numeric = k.bytes().all(|b| b.is_ascii_digit());
        if k.is_empty() || !charset || numeric || !seen.insert(k) {
            return Err(CrmError::InvalidBatchKey { key: c.key.clone() });
        }
        check_method(&c.method)?;
        if c.method.eq_ignore_ascii_case("batch") {
            return Err(CrmError::InvalidMethod {
                method: c.method.clone(),
            });
        }
    }
    Ok(())
}

/// The JSON body: the parameters plus `auth` for OAuth (an `auth` parameter is overridden).
struct Body<'a> {
    params: &'a Params,
    auth: Option<&'a Secret>,
}

impl Serialize for Body<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.params.iter() {
            if !(self.auth.is_some() && k == "auth") {
                map.serialize_entry(k, v)?;
            }
        }
        if let Some(token) = self.auth {
            map.serialize_entry("auth", token.expose())?;
        }
        map.end()
    }
}

impl CrmClient {
    /// A client with the defaults.
    ///
    /// # Errors
    /// As [`CrmClientBuilder::build`].
    pub fn new() -> Result<Self, CrmError> {
        Self::builder().build()
    }

    /// Settings for a client.
    pub fn builder() -> CrmClientBuilder {
        CrmClientBuilder::default()
    }

    /// Calls `method` on the portal `ep` with `params` (POST, JSON body).
    ///
    /// # Errors
    /// Every [`CrmError`] variant that describes an answer or a transport failure; nothing is
    /// sent for [`CrmError::InvalidMethod`].
    ///
    /// # Cancel safety
    /// Dropping the future abandons the request; it may or may not have reached Bitrix24.
    pub async fn call(
        &self,
        ep: &Endpoint,
        method: &str,
        params: &Params,
    ) -> Result<Response, CrmError> {
        let url = ep.method_url(method)?;
        let body = serde_json::to_vec(&Body {
            params,
            auth: ep.access_token(),
        })
        .map_err(CrmError::decode)?;
        let started = tokio::time::Instant::now();
        let req = self
            .http
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let outcome = match self.send(req).await {
            Ok(raw) => parse_envelope(&raw, &url, method),
            Err(e) => Err(e),
        };
        record(method, &outcome, started.elapsed());
        tracing::debug!(
            method,
            origin = %ep.origin(),
            outcome = outcome.as_ref().map_or_else(CrmError::kind, |_| "ok"),
            "bitrix24 call"
        );
        outcome
    }

    /// Sends up to 50 commands as one `batch` request (one unit of the portal's rate limit).
    /// `halt` stops at the first failing command. An empty `cmds` sends nothing.
    ///
    /// # Errors
    /// [`check_batch`] errors before sending; otherwise as [`CrmClient::call`] for the outer
    /// request (auth and limit errors of the whole batch). Per-command errors are in
    /// [`BatchResult::result_error`].
    ///
    /// # Cancel safety
    /// As [`CrmClient::call`].
    pub async fn batch(
        &self,
        ep: &Endpoint,
        cmds: &[BatchCommand],
        halt: bool,
    ) -> Result<BatchResult, CrmError> {
        check_batch(cmds)?;
        if cmds.is_empty() {
            return Ok(BatchResult::default());
        }
        let cmd: Params = cmds
            .iter()
            .map(|c| (c.key.clone(), ParamValue::Str(c.cmd_string())))
            .collect();
        let params = Params::new()
            .set("halt", i32::from(halt))
            .set_map("cmd", cmd);
        let resp = self.call(ep, "batch", &params).await?;
        let method_of = |key: &str| {
            cmds.iter()
                .find(|c| c.key == key)
                .map(|c| c.method.clone())
                .unwrap_or_default()
        };
        BatchResult::decode(&resp.result, method_of)
    }

    /// `GET url` without following redirects (the OAuth token endpoint).
    pub(crate) async fn get_raw(&self, url: Url) -> Result<RawAnswer, CrmError> {
        check_scheme(&url)?;
        self.send(self.http.get(url)).await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<RawAnswer, CrmError> {
        let mut resp = req.send().await.map_err(network_error)?;
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let limit = self.max_body_bytes;
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(CrmError::TooLarge { limit_bytes: limit });
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(network_error)? {
            if body.len() + chunk.len() > limit {
                return Err(CrmError::TooLarge { limit_bytes: limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(RawAnswer {
            status,
            location,
            body: body.freeze(),
        })
    }
}

/// Classifies an HTTP answer to a call of `method` at `url` (pure).
///
/// Order: 3xx → [`CrmError::Moved`]; a JSON object with `error` → [`CrmError::from_api_error`]
/// (whatever the status, even 200); a non-2xx or non-JSON answer → [`CrmError::Http`]; a 2xx
/// JSON object → [`Response`] (`result` required).
pub(crate) fn parse_envelope(
    raw: &RawAnswer,
    url: &Url,
    method: &str,
) -> Result<Response, CrmError> {
    let obj = classify_raw(raw, url, method)?;
    let Some(result) = obj.get("result").cloned() else {
        return Err(CrmError::decode(
            "the answer has neither `result` nor `error`",
        ));
    };
    Ok(Response {
        result,
        total: obj.get("total").and_then(lenient_u64),
        next: obj.get("next").and_then(lenient_u64),
        time: obj.get("time").and_then(parse_time),
    })
}

fn parse_time(t: &Value) -> Option<Time> {
    Some(Time {
        operating: t.get("operating")?.as_f64()?,
        operating_reset_at: lenient_u64(t.get("operating_reset_at")?)?,
    })
}

fn lenient_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A transport failure without the URL (it may hold the webhook code or the client secret).
fn network_error(e: reqwest::Error) -> CrmError {
    let e = e.without_url();
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connect failed"
    } else if e.is_body() || e.is_decode() {
        "reading the answer failed"
    } else {
        "request failed"
    };
    CrmError::Network {
        message: format!("{what}: {}", error_chain(&e)),
    }
}

/// `error: source: source…`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn record(method: &str, outcome: &Result<Response, CrmError>, took: Duration) {
    let kind = outcome.as_ref().map_or_else(CrmError::kind, |_| "ok");
    let method = method.to_ascii_lowercase();
    metrics::counter!("callgate_crm_http_requests_total", "method" => method.clone(), "outcome" => kind).increment(1);
    metrics::histogram!("callgate_crm_http_request_seconds", "method" => method)
        .record(took.as_secs_f64());
}

/// Errors Bitrix24 reports inside a successful `result` (pure): every top-level field named
/// `*_ERROR` (`LEAD_CREATION_ERROR`) with a non-empty text, as (field, text). Bitrix24 answers
/// 200 then and the request did take effect, so these are not [`CrmError`]s: the caller goes on
/// and surfaces them (`crm::notices`).
pub fn errors_inside(result: &Value) -> Vec<(String, String)> {
    let Some(map) = result.as_object() else {
        return Vec::new();
    };
    map.iter()
        .filter(|(k, _)| k.len() > "_ERROR".len() && k.to_ascii_uppercase().ends_with("_ERROR"))
        .filter_map(|(k, v)| match v {
            Value::String(s) if !s.trim().is_empty() => Some((k.clone(), s.trim().to_owned())),
            _ => None,
        })
        .collect()
}
