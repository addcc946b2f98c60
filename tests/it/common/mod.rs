//! Test helpers: a gateway on 127.0.0.1:0 with its own data directory, an admin client, and
//! the loopback topology every SIP test follows (one address per role, so that who sent a
//! message is never decided by a port).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use callgate::config::{Config, Secret};
use callgate::Gateway;
use reqwest::{Method, Response};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub mod node;
pub mod sipp;

pub const TOKEN: &str = "test-admin-token-0123456789";

/// The PBX, and callgate itself (its listeners bind 127.0.0.1:0).
pub const PBX_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
/// The agents' IP phones, one extension per address: 101, 102, 103.
pub const PHONE_IPS: [(&str, IpAddr); 3] = [
    ("101", IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))),
    ("102", IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3))),
    ("103", IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4))),
];
/// Someone on the internet with no business with callgate.
pub const ATTACKER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5));
/// A third party an attacker would like callgate to send to.
pub const VICTIM_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6));

/// The address of `ext`'s phone (101..=103).
pub fn phone_ip(ext: &str) -> IpAddr {
    PHONE_IPS.iter().find(|(e, _)| *e == ext).map(|(_, ip)| *ip).unwrap_or_else(|| panic!("no phone address for extension {ext}"))
}

/// A running gateway. Dropping it cancels it; [`TestGateway::stop`] waits for a clean stop.
pub struct TestGateway {
    pub base: String,
    pub addresses: std::collections::BTreeMap<String, String>,
    pub data: PathBuf,
    pub client: reqwest::Client,
    token: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

/// A config bound to port 0 everywhere, storing under `data`.
pub fn test_config(data: &std::path::Path) -> Config {
    let mut cfg = Config::default();
    cfg.sip.udp = "127.0.0.1:0".into();
    cfg.sip.tcp = "127.0.0.1:0".into();
    cfg.sip.tls = String::new();
    cfg.http.listen = "127.0.0.1:0".into();
    cfg.store.path = data.join("callgate.db");
    cfg.admin.token = Secret::new(TOKEN);
    cfg.shutdown.grace = std::time::Duration::from_secs(2);
    cfg
}

impl TestGateway {
    /// A fresh gateway with a new temporary data directory.
    pub async fn spawn() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().to_path_buf();
        let mut gw = Self::spawn_on(&data, |_| {}).await;
        gw._dir = Some(dir);
        gw
    }

    /// A gateway on an existing data directory, config adjusted by `tweak`.
    pub async fn spawn_on(data: &std::path::Path, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::spawn_built(data, tweak, |g| g).await
    }

    /// [`Self::spawn_on`], the built gateway passed through `finish` before it runs (test hooks
    /// such as `Gateway::with_media_gate`).
    pub async fn spawn_built(data: &std::path::Path, tweak: impl FnOnce(&mut Config), finish: impl FnOnce(Gateway) -> Gateway) -> Self {
        init_tracing();
        let mut cfg = test_config(data);
        tweak(&mut cfg);
        let gateway = finish(Gateway::build(cfg).await.expect("gateway builds"));
        let base = format!("http://{}", gateway.http_addr());
        let addresses = gateway.addresses().clone();
        let token = gateway.shutdown_token();
        let task = tokio::spawn(gateway.run_until_stopped());
        let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build().unwrap();
        Self { base, addresses, data: data.to_path_buf(), client, token, task: Some(task), _dir: None }
    }

    /// Hands the gateway a temporary directory to own (removed when it drops).
    pub fn keep_dir(&mut self, dir: tempfile::TempDir) {
        self._dir = Some(dir);
    }

    /// Cancels, waits for a clean stop, and hands back the data directory it owned (if any), so a
    /// restart can reuse it.
    pub async fn stop(mut self) -> Option<tempfile::TempDir> {
        self.token.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), task).await.expect("stops in time").unwrap().expect("clean stop");
        self._dir.take()
    }

    /// An admin API call with the right token; `body` as JSON when given.
    pub async fn api(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, body, Some(TOKEN)).await
    }

    /// The first finished call (`GET /api/v1/calls`) matching `pred`, waited for (bounded: 10 s
    /// in 50 ms steps).
    pub async fn finished_call(&self, pred: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..200 {
            let (status, calls) = self.api(Method::GET, "/api/v1/calls?limit=1000", None).await;
            assert_eq!(status, 200);
            if let Some(c) = calls.as_array().unwrap().iter().find(|c| pred(c) && !c["ended_at"].is_null()) {
                return c.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let (_, calls) = self.api(Method::GET, "/api/v1/calls?limit=1000", None).await;
        panic!("no such finished call; calls: {calls:#}");
    }

    /// An HTTP call with an explicit token (or none).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>, token: Option<&str>) -> (u16, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        json_of(req.send().await.expect("request sent")).await
    }

    /// Imports `csv` (`number,user_id` rows) into portal `id`'s personal-manager index.
    pub async fn upload_index(&self, id: i64, csv: &str) {
        let url = format!("{}/api/v1/portals/{id}/index", self.base);
        let resp = self.client.post(url).bearer_auth(TOKEN).header("content-type", "text/csv").body(csv.to_owned()).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }

    /// A portal on `realm` in WebRTC mode whose PBX is `pbx`, with extension 101 (user 11)
    /// holding fresh browser credentials: (portal id, 101's password).
    pub async fn webrtc_portal(&self, realm: &str, pbx: std::net::SocketAddr) -> (i64, String) {
        let portal = self.portal(realm).await;
        let path = format!("/api/v1/portals/{portal}/settings");
        let mut settings = self.api(Method::GET, &path, None).await.1;
        settings["telephony_mode"] = serde_json::json!("webrtc");
        settings["pbx_host"] = serde_json::json!(pbx.to_string());
        let (status, body) = self.api(Method::PUT, &path, Some(settings)).await;
        assert_eq!(status, 200, "{body}");
        let m = serde_json::json!({ "user_id": 11, "extension": "101", "use_for_personal_manager": false, "contact": null });
        let (status, body) = self.api(Method::POST, &format!("/api/v1/portals/{portal}/mappings"), Some(m)).await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = self.api(Method::POST, &format!("/api/v1/portals/{portal}/agents/101/credentials"), None).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["realm"], realm, "{body}");
        (portal, body["password"].as_str().unwrap().to_owned())
    }

    /// Creates a portal and returns its id.
    pub async fn portal(&self, domain: &str) -> i64 {
        let (status, body) = self.api(Method::POST, "/api/v1/portals", Some(serde_json::json!({ "domain": domain }))).await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_i64().unwrap()
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

pub async fn json_of(resp: Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Serves `ep` as `GET /sip` (subprotocol `sip`) on 127.0.0.1 until `cancel`, as the gateway's
/// HTTP listener does, without the rest of the gateway; returns its `ws://` URL.
pub async fn serve_sip_websocket(ep: std::sync::Arc<callgate::sip::transport::WsEndpoint>, cancel: CancellationToken) -> String {
    use axum::extract::ws::WebSocketUpgrade;
    use axum::extract::ConnectInfo;
    use std::net::SocketAddr;
    let app = axum::Router::new().route(
        "/sip",
        axum::routing::get(move |ws: WebSocketUpgrade, ConnectInfo(addr): ConnectInfo<SocketAddr>| async move {
            let permit = ep.admit().unwrap();
            ws.protocols(["sip"]).on_upgrade(move |s| async move { ep.serve(s, addr, false, permit) })
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/sip", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let service = app.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service).with_graceful_shutdown(async move { cancel.cancelled().await }).await.unwrap();
    });
    url
}

/// Quiet unless TEST_LOG=1. Also installs the crypto provider every HTTP client needs, so a
/// test works whatever ran before it in this process.
pub fn init_tracing() {
    callgate::tls::install_crypto_provider();
    if std::env::var_os("TEST_LOG").is_some() {
        callgate::telemetry::init(&callgate::config::LogConfig { level: "debug".into(), format: callgate::config::LogFormat::Text });
    }
}

/// The field paths of a 422 body.
pub fn fields(body: &Value) -> Vec<String> {
    body["fields"].as_array().map(|a| a.iter().map(|f| f["field"].as_str().unwrap_or_default().to_owned()).collect()).unwrap_or_default()
}
