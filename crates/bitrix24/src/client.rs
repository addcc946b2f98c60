//! [`Client`]: one `reqwest::Client` that calls Bitrix24 REST methods on any portal, and
//! [`Endpoint`]: where and how to call one portal.
//!
//! * Every call is a `POST` with a JSON body (Bitrix24 accepts GET, form and JSON; JSON keeps
//!   nested parameters exact); OAuth tokens travel as the `auth` body parameter, never in the URL.
//!   Answers are classified by `parse_envelope` (pure) into a [`Response`] or an [`Error`].
//! * Redirects are never followed (a renamed portal answers 302, and a client that silently
//!   follows with a GET loses the body): a 3xx becomes [`Error::Moved`]. The same holds for the
//!   OAuth `GET`, so the client secret in its query never goes to a host the caller did not choose.
//! * TLS certificates are verified (platform roots, plus [`ClientBuilder::with_root_ca`]);
//!   `http://` is refused unless the host is a loopback address (tests, a local fake).
//! * Nothing here retries, sleeps or rate-limits: callers do, with [`Error::retryable`],
//!   [`LeakyBucket`](crate::LeakyBucket) and [`TokenCell`](crate::TokenCell) (or
//!   [`OAuthSession`](crate::OAuthSession), which refreshes a stale token and calls again once).
//! * Secrets: the webhook URL and tokens never appear in `Debug`, errors or logs. Each finished
//!   request is reported to the [`Observer`], if one is set (metrics), by method name and outcome.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE, LOCATION};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};
use serde_json::Value;
use url::{Host, Url};

use crate::batch::{check_batch, BatchCommand};
use crate::error::{classify_raw, RawAnswer};
use crate::methods::Method;
use crate::{BatchResult, Error, ListPage, ParamValue, Params, Secret};

/// Default TCP connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default whole-request timeout (Bitrix24 itself cuts requests at 60 s).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default cap on an answer body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// One finished request, as reported to an [`Observer`].
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// The REST method (`batch` for a batch), as the caller spelled it.
    pub method: &'a str,
    /// `"ok"`, or the failure's [`Error::kind`].
    pub outcome: &'static str,
    /// From sending the request to the classified answer.
    pub took: Duration,
}

/// Called once per finished [`Client::call`] (metrics). Must not block.
pub type Observer = Arc<dyn Fn(&Observation<'_>) + Send + Sync>;

/// Settings for a [`Client`].
#[derive(Clone)]
pub struct ClientBuilder {
    connect_timeout: Duration,
    request_timeout: Duration,
    root_ca_pem: Vec<Vec<u8>>,
    user_agent: String,
    max_body_bytes: usize,
    observer: Option<Observer>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("root_cas", &self.root_ca_pem.len())
            .field("user_agent", &self.user_agent)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            root_ca_pem: Vec::new(),
            user_agent: concat!("bitrix24-rs/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            observer: None,
        }
    }
}

impl ClientBuilder {
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

    /// `User-Agent` header (default `bitrix24-rs/<version>`; Bitrix24 asks for a real one).
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

    /// Reports every finished call to `observer` (method, outcome, duration), e.g. for metrics.
    #[must_use]
    pub fn observer(mut self, observer: Observer) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Builds the client. Installs ring as the process-wide rustls crypto provider if none is
    /// installed yet (reqwest is built without one; aws-lc-rs is never pulled in).
    ///
    /// # Errors
    /// [`Error::ClientBuild`] for an unusable root CA or TLS setup.
    pub fn build(self) -> Result<Client, Error> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let build_err = |message: String| Error::ClientBuild { message };
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
        Ok(Client {
            http,
            max_body_bytes: self.max_body_bytes,
            observer: self.observer,
        })
    }
}

/// The Bitrix24 REST client: cheap to clone (one connection pool), shared by all portals.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    max_body_bytes: usize,
    observer: Option<Observer>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
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
    /// [`Error::InvalidUrl`] / [`Error::InsecureUrl`] (see [`check_base_url`]).
    pub fn webhook(url: &Secret) -> Result<Self, Error> {
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
    pub fn oauth(client_endpoint: &str, access_token: Secret) -> Result<Self, Error> {
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
    /// [`Error::InvalidMethod`] unless the name is `[A-Za-z0-9._]+`.
    pub fn method_url(&self, method: &str) -> Result<Url, Error> {
        check_method(method)?;
        self.base
            .join(&format!("{method}.json"))
            .map_err(|e| Error::InvalidUrl {
                reason: e.to_string(),
            })
    }
}

/// Validates a base URL and makes it end with `/` (method names are appended to it): `https`, or `http` to a loopback
/// host; a host; no query or fragment. Errors never echo the URL (it may hold a webhook code).
///
/// # Errors
/// [`Error::InsecureUrl`] for `http://` elsewhere, [`Error::InvalidUrl`] otherwise.
pub fn check_base_url(raw: &str) -> Result<Url, Error> {
    let invalid = |reason: &str| Error::InvalidUrl {
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
pub(crate) fn check_scheme(url: &Url) -> Result<(), Error> {
    let host = url.host().ok_or_else(|| Error::InvalidUrl {
        reason: "no host".to_owned(),
    })?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&host) => Ok(()),
        "http" => Err(Error::InsecureUrl {
            host: host.to_string(),
        }),
        other => Err(Error::InvalidUrl {
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

pub(crate) fn check_method(method: &str) -> Result<(), Error> {
    let ok = !method.is_empty()
        && !method.starts_with('.')
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidMethod {
            method: method.to_owned(),
        })
    }
}

/// A successful answer.
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

/// The operating (resource) limit state reported with a success.
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
    /// [`Error::Decode`].
    pub fn decode<T: serde::de::DeserializeOwned>(self) -> Result<T, Error> {
        crate::types::decode(self.result)
    }

    /// Decodes a list method's answer.
    ///
    /// # Errors
    /// [`Error::Decode`].
    pub fn into_page<T: serde::de::DeserializeOwned>(self) -> Result<ListPage<T>, Error> {
        ListPage::decode(self.result, self.total, self.next)
    }
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

impl Client {
    /// A client with the defaults.
    ///
    /// # Errors
    /// As [`ClientBuilder::build`].
    pub fn new() -> Result<Self, Error> {
        Self::builder().build()
    }

    /// Settings for a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Calls `method` on the portal `ep` with `params` (POST, JSON body).
    ///
    /// # Errors
    /// Every [`Error`] variant that describes an answer or a transport failure; nothing is
    /// sent for [`Error::InvalidMethod`].
    ///
    /// # Cancel safety
    /// Dropping the future abandons the request; it may or may not have reached Bitrix24.
    pub async fn call(
        &self,
        ep: &Endpoint,
        method: &str,
        params: &Params,
    ) -> Result<Response, Error> {
        let url = ep.method_url(method)?;
        let body = serde_json::to_vec(&Body {
            params,
            auth: ep.access_token(),
        })
        .map_err(Error::decode)?;
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
        if let Some(observe) = &self.observer {
            let outcome = outcome.as_ref().map_or_else(Error::kind, |_| "ok");
            observe(&Observation {
                method,
                outcome,
                took: started.elapsed(),
            });
        }
        tracing::debug!(
            method,
            origin = %ep.origin(),
            outcome = outcome.as_ref().map_or_else(Error::kind, |_| "ok"),
            "bitrix24 call"
        );
        outcome
    }

    /// Calls a typed [`Method`] and decodes its answer.
    ///
    /// # Errors
    /// As [`Client::call`], and [`Error::Decode`] when the answer does not fit the method's output.
    ///
    /// # Cancel safety
    /// As [`Client::call`].
    pub async fn invoke<M: Method>(&self, ep: &Endpoint, method: &M) -> Result<M::Output, Error> {
        let resp = self.call(ep, method.name(), &method.params()).await?;
        M::decode(resp)
    }

    /// Sends up to 50 commands as one `batch` request (one unit of the portal's rate limit).
    /// `halt` stops at the first failing command. An empty `cmds` sends nothing.
    ///
    /// # Errors
    /// [`check_batch`] errors before sending; otherwise as [`Client::call`] for the outer
    /// request (auth and limit errors of the whole batch). Per-command errors are in
    /// [`BatchResult::result_error`].
    ///
    /// # Cancel safety
    /// As [`Client::call`].
    pub async fn batch(
        &self,
        ep: &Endpoint,
        cmds: &[BatchCommand],
        halt: bool,
    ) -> Result<BatchResult, Error> {
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
    pub(crate) async fn get_raw(&self, url: Url) -> Result<RawAnswer, Error> {
        check_scheme(&url)?;
        self.send(self.http.get(url)).await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<RawAnswer, Error> {
        let mut resp = req.send().await.map_err(network_error)?;
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let limit = self.max_body_bytes;
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(Error::TooLarge { limit_bytes: limit });
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(network_error)? {
            if body.len() + chunk.len() > limit {
                return Err(Error::TooLarge { limit_bytes: limit });
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
/// Order: 3xx → [`Error::Moved`]; a JSON object with `error` → [`Error::from_api_error`]
/// (whatever the status, even 200); a non-2xx or non-JSON answer → [`Error::Http`]; a 2xx
/// JSON object → [`Response`] (`result` required).
pub(crate) fn parse_envelope(raw: &RawAnswer, url: &Url, method: &str) -> Result<Response, Error> {
    let obj = classify_raw(raw, url, method)?;
    let Some(result) = obj.get("result").cloned() else {
        return Err(Error::decode("the answer has neither `result` nor `error`"));
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
fn network_error(e: reqwest::Error) -> Error {
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
    Error::Network {
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

/// Errors Bitrix24 reports inside a successful `result` (pure): every top-level field named
/// `*_ERROR` (`LEAD_CREATION_ERROR`) with a non-empty text, as (field, text). Bitrix24 answers
/// 200 then and the request did take effect, so these are not [`Error`]s: the caller goes on
/// and surfaces them.
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
