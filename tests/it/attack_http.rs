//! Attacks on the HTTP listener, each beside the legitimate traffic that must still work in the
//! same test: slowloris and connection floods from one source (the attacker on 127.0.0.5, the
//! admin and the PBX on 127.0.0.1), a client that stops reading, oversized request heads, SIP
//! WebSockets from foreign pages, and the trust behind `GET /api/v1/route` and the rate-limit
//! exemption. Every wait is bounded; nothing asserts a duration.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use callgate::sip::core::digest::{authorization, Challenge};
use callgate::sip::core::{HeaderName, SipMessage};
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::common::{TestGateway, TOKEN};

const ATTACKER: &str = "127.0.0.5";
const REALM: &str = "office.bitrix24.ru";
/// Longest any single wait in these tests may take.
const BOUND: Duration = Duration::from_secs(15);

async fn gateway(tweak: impl FnOnce(&mut callgate::config::Config)) -> TestGateway {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = TestGateway::spawn_on(dir.path(), tweak).await;
    gw.keep_dir(dir);
    gw
}

fn http_addr(gw: &TestGateway) -> SocketAddr {
    gw.base.trim_start_matches("http://").parse().unwrap()
}

/// A TCP connection to the gateway from `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    sock.connect(to).await.unwrap()
}

/// An HTTP client whose connections come from `from`.
fn client_from(from: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(from.parse::<IpAddr>().unwrap()).timeout(Duration::from_secs(5)).build().unwrap()
}

/// Reads until the server closes the connection; the bytes read, or `None` if it stayed open
/// for [`BOUND`].
async fn until_closed(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(all),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// Counter value (summed over label sets matching `label`) from `/metrics`.
async fn counter(gw: &TestGateway, name: &str, label: &str) -> f64 {
    let text = gw.client.get(format!("{}/metrics", gw.base)).send().await.unwrap().text().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{' | b' ')) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

async fn live_from(from: &str, gw: &TestGateway) -> u16 {
    client_from(from).get(format!("{}/live", gw.base)).send().await.map_or(0, |r| r.status().as_u16())
}

/// Whether `/live` answers `from` within a few tries (a closed connection's slot is given back
/// just after the client sees the close).
async fn live_again_from(from: &str, gw: &TestGateway) -> bool {
    for _ in 0..50 {
        if live_from(from, gw).await == 200 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn slowloris_from_one_source_is_capped_and_timed_out_while_the_admin_is_served() {
    let gw = gateway(|c| {
        c.http.max_connections = 64;
        c.http.max_connections_per_source = 8;
        c.http.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let addr = http_addr(&gw);
    let refused_before = counter(&gw, "callgate_http_connections_refused_total", "per_source").await;
    // Sixteen half-sent requests from the attacker: twice its cap.
    let mut half = Vec::new();
    for _ in 0..16 {
        let mut s = connect_from(ATTACKER, addr).await;
        let _ = s.write_all(b"GET /live HTTP/1.1\r\nHost: x\r\n").await;
        half.push(s);
    }
    // Meanwhile the admin API and the health endpoint answer another source.
    assert_eq!(live_from("127.0.0.1", &gw).await, 200);
    let (status, _) = gw.api(Method::GET, "/api/v1/portals", None).await;
    assert_eq!(status, 200);
    // Every half-sent request is closed: those over the cap at once, the others at the header
    // timeout. None is ever answered.
    for s in &mut half {
        let got = until_closed(s).await.expect("a half-sent request must not hold its connection");
        assert!(got.is_empty(), "nothing is answered to a half-sent request: {:?}", String::from_utf8_lossy(&got));
    }
    let refused = counter(&gw, "callgate_http_connections_refused_total", "per_source").await - refused_before;
    assert!(refused >= 8.0, "connections over the per-source cap are counted: {refused}");
    assert!(counter(&gw, "callgate_http_connections_closed_total", "header_timeout").await >= 8.0);
    // The attacker's address is free again for a well-behaved request.
    assert!(live_again_from(ATTACKER, &gw).await);
}

#[tokio::test]
async fn a_kept_alive_connection_waiting_for_its_next_request_is_closed_after_the_header_timeout() {
    let gw = gateway(|c| c.http.header_read_timeout = Duration::from_secs(1)).await;
    let mut s = connect_from(ATTACKER, http_addr(&gw)).await;
    s.write_all(b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    // The request is answered, then the idle keep-alive connection is closed.
    let got = until_closed(&mut s).await.expect("an idle keep-alive connection is closed");
    assert!(got.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&got));
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_after_the_idle_timeout_while_a_reader_gets_everything() {
    let gw = gateway(|c| c.http.idle_timeout = Duration::from_secs(1)).await;
    let addr = http_addr(&gw);
    // A reader: the whole 250 KB script.
    let body = client_from("127.0.0.1").get(format!("{}/widget/jssip.min.js", gw.base)).send().await.unwrap().bytes().await.unwrap();
    assert!(body.len() > 200_000);
    // The attacker pipelines 200 requests for it (50 MB) and reads nothing: the responses fill
    // the socket buffers, nothing moves, and the connection is closed.
    let mut s = connect_from(ATTACKER, addr).await;
    let req = b"GET /widget/jssip.min.js HTTP/1.1\r\nHost: x\r\n\r\n".repeat(200);
    s.write_all(&req).await.unwrap();
    let idle_before = counter(&gw, "callgate_http_connections_closed_total", "idle").await;
    let mut watched = false;
    for _ in 0..100 {
        if counter(&gw, "callgate_http_connections_closed_total", "idle").await > idle_before {
            watched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(watched, "the stalled connection is closed by the idle watchdog");
    let got = until_closed(&mut s).await.expect("closed");
    assert!(got.len() < 200 * body.len(), "not everything was sent: {} bytes", got.len());
}

#[tokio::test]
async fn an_oversized_request_head_gets_431_and_a_normal_one_is_served() {
    let gw = gateway(|c| c.http.max_header_bytes = 8192).await;
    let mut s = connect_from(ATTACKER, http_addr(&gw)).await;
    let big = format!("GET /live HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n", "a".repeat(20_000));
    let _ = s.write_all(big.as_bytes()).await;
    let got = until_closed(&mut s).await.expect("closed after the answer");
    assert!(got.starts_with(b"HTTP/1.1 431"), "{}", String::from_utf8_lossy(&got));
    assert_eq!(live_from(ATTACKER, &gw).await, 200);
}

// ---- SIP WebSockets ----

/// A gateway with a WebRTC portal (PBX at 127.0.0.1), extension 101 mapped; its password.
async fn webrtc_gateway(tweak: impl FnOnce(&mut callgate::config::Config)) -> (TestGateway, String) {
    let gw = gateway(tweak).await;
    let portal = gw.portal(REALM).await;
    let path = format!("/api/v1/portals/{portal}/settings");
    let mut settings = gw.api(Method::GET, &path, None).await.1;
    settings["telephony_mode"] = json!("webrtc");
    settings["pbx_host"] = json!("127.0.0.1:5080");
    let (status, body) = gw.api(Method::PUT, &path, Some(settings)).await;
    assert_eq!(status, 200, "{body}");
    let m = json!({ "user_id": 11, "extension": "101", "use_for_personal_manager": false, "contact": null });
    let (status, body) = gw.api(Method::POST, &format!("/api/v1/portals/{portal}/mappings"), Some(m)).await;
    assert_eq!(status, 201, "{body}");
    let (status, creds) = gw.api(Method::POST, &format!("/api/v1/portals/{portal}/agents/101/credentials"), None).await;
    assert_eq!(status, 201, "{creds}");
    (gw, creds["password"].as_str().unwrap().to_owned())
}

type Ws = WebSocketStream<TcpStream>;

/// A SIP WebSocket from `from` with `origin` (none: a non-browser client). The HTTP status on
/// refusal.
async fn sip_ws(gw: &TestGateway, from: &str, origin: Option<&str>) -> Result<Ws, u16> {
    let addr = http_addr(gw);
    let mut req = format!("ws://{addr}/sip").into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
    if let Some(o) = origin {
        req.headers_mut().insert("Origin", o.parse().unwrap());
    }
    let tcp = connect_from(from, addr).await;
    match tokio::time::timeout(BOUND, tokio_tungstenite::client_async(req, tcp)).await.expect("handshake in time") {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(_) => Err(0),
    }
}

async fn recv_sip(ws: &mut Ws) -> SipMessage {
    loop {
        let frame = tokio::time::timeout(BOUND, ws.next()).await.expect("a message in time").expect("open").unwrap();
        match frame {
            Message::Text(t) => return SipMessage::parse(Bytes::copy_from_slice(t.as_bytes())).unwrap(),
            Message::Binary(b) => return SipMessage::parse(b).unwrap(),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

async fn register(ws: &mut Ws, cseq: u32, auth: Option<String>) -> SipMessage {
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    let msg = format!(
        "REGISTER sip:{REALM} SIP/2.0\r\nVia: SIP/2.0/WSS h7.invalid;branch=z9hG4bK{cseq}ah\r\nMax-Forwards: 69\r\n\
         To: <sip:101@{REALM}>\r\nFrom: <sip:101@{REALM}>;tag=ah{cseq}\r\nCall-ID: attack-http-reg\r\nCSeq: {cseq} REGISTER\r\n\
         Contact: <sip:ah@h7.invalid;transport=ws>;expires=600\r\n{auth}Content-Length: 0\r\n\r\n"
    );
    ws.send(Message::text(msg)).await.unwrap();
    recv_sip(ws).await
}

/// Digest login as 101: the final status.
async fn login(ws: &mut Ws, password: &str) -> Option<u16> {
    let first = register(ws, 1, None).await;
    assert_eq!(first.status(), Some(401));
    let c = Challenge::parse(first.header(HeaderName::WwwAuthenticate).unwrap()).unwrap();
    let (realm, nonce) = (std::str::from_utf8(c.realm).unwrap(), std::str::from_utf8(c.nonce).unwrap());
    let auth = authorization("101", realm, nonce, &format!("sip:{REALM}"), "REGISTER", password, Some((1, "0a4f113b")));
    register(ws, 2, Some(auth)).await.status()
}

#[tokio::test]
async fn a_foreign_page_cannot_open_a_sip_websocket_while_the_widget_and_listed_origins_register() {
    let (gw, password) = webrtc_gateway(|c| c.http.allowed_origins = vec!["https://phone.example.com".into()]).await;
    let before = counter(&gw, "callgate_http_ws_origin_refused_total", "").await;
    // Drive-by pages: 403 before any upgrade.
    for origin in ["https://evil.example", "null", "http://127.0.0.1.evil.example"] {
        assert_eq!(sip_ws(&gw, ATTACKER, Some(origin)).await.err(), Some(403), "{origin}");
    }
    assert!(counter(&gw, "callgate_http_ws_origin_refused_total", "").await - before >= 3.0);
    // The widget's own origin (the page at /widget/ on this listener) connects and registers.
    let own = format!("http://{}", http_addr(&gw));
    let mut ws = sip_ws(&gw, "127.0.0.2", Some(&own)).await.expect("the widget's own origin");
    assert_eq!(login(&mut ws, &password).await, Some(200));
    // A listed origin, and a client without Origin (not a browser), may connect too; both still
    // have to authenticate.
    let mut listed = sip_ws(&gw, "127.0.0.3", Some("https://phone.example.com")).await.expect("listed origin");
    assert_eq!(register(&mut listed, 1, None).await.status(), Some(401));
    let mut plain = sip_ws(&gw, "127.0.0.4", None).await.expect("no Origin");
    assert_eq!(register(&mut plain, 1, None).await.status(), Some(401));
    // The widget itself may be framed by its portal's pages only (no clickjacking elsewhere).
    let page = gw.client.get(format!("{}/widget/", gw.base)).send().await.unwrap();
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains(&format!("frame-ancestors 'self' https://{REALM}")) && !csp.contains("frame-ancestors *"), "{csp}");
}

#[tokio::test]
async fn the_per_source_cap_covers_sip_websockets_and_spares_other_sources() {
    let (gw, password) = webrtc_gateway(|c| c.http.max_connections_per_source = 4).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(sip_ws(&gw, ATTACKER, None).await.expect("under the cap"));
    }
    // The fifth from the same source is closed before its handshake is answered.
    assert!(sip_ws(&gw, ATTACKER, None).await.is_err(), "over the per-source cap");
    // Plain HTTP from that source is refused too (the open WebSockets hold its slots)...
    assert_eq!(live_from(ATTACKER, &gw).await, 0);
    // ...while an agent elsewhere connects and registers.
    let mut agent = sip_ws(&gw, "127.0.0.2", None).await.expect("another source");
    assert_eq!(login(&mut agent, &password).await, Some(200));
    // Closing one WebSocket frees a slot for its source.
    let mut first = held.remove(0);
    first.close(None).await.unwrap();
    while tokio::time::timeout(BOUND, first.next()).await.expect("closed in time").is_some() {}
    drop(first);
    assert!(live_again_from(ATTACKER, &gw).await, "a closed WebSocket gives its slot back");
}

// ---- Trust of the routing endpoint and the rate-limit exemption ----

/// One active portal whose PBX is `pbx_host` and which trusts `trusted`; user 5 on 101 manages
/// 79161234567.
async fn routing_portal(gw: &TestGateway, trusted: &[&str], pbx_host: &str) -> i64 {
    let id = gw.portal("route.bitrix24.ru").await;
    let path = format!("/api/v1/portals/{id}/settings");
    let mut settings = gw.api(Method::GET, &path, None).await.1;
    settings["active"] = json!(true);
    settings["incoming"]["default_responsible"] = json!(1);
    settings["outgoing"]["default_responsible"] = json!(1);
    settings["trusted_pbx"] = json!(trusted);
    settings["pbx_host"] = json!(pbx_host);
    let (status, body) = gw.api(Method::PUT, &path, Some(settings)).await;
    assert_eq!(status, 200, "{body}");
    let m = json!({"user_id": 5, "extension": "101", "use_for_personal_manager": true});
    assert_eq!(gw.api(Method::POST, &format!("/api/v1/portals/{id}/mappings"), Some(m)).await.0, 201);
    gw.upload_index(id, "number,user_id
79161234567,5
").await;
    id
}

async fn route_from(from: &str, gw: &TestGateway, token: Option<&str>) -> (u16, Value) {
    let mut req = client_from(from).get(format!("{}/api/v1/route?caller=79161234567", gw.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    crate::common::json_of(req.send().await.unwrap()).await
}

#[tokio::test]
async fn with_nothing_trusted_the_routing_endpoint_needs_the_admin_token_and_every_source_is_rate_limited() {
    let gw = gateway(|c| {
        c.http.rate_per_source = 1.0;
        c.http.burst_per_source = 3;
    })
    .await;
    // No trusted_pbx, and a PBX elsewhere: nobody on loopback is trusted.
    routing_portal(&gw, &[], "192.0.2.10:5080").await;
    let (status, _) = route_from("127.0.0.1", &gw, None).await;
    assert_eq!(status, 403, "loopback is not trusted by default");
    let (status, body) = route_from("127.0.0.1", &gw, Some(TOKEN)).await;
    assert_eq!((status, body["target"].as_str()), (200, Some("101")), "{body}");
    // Without trust, loopback is limited like anyone: 403 for its burst, then 429.
    let codes: Vec<u16> = futures_util::future::join_all((0..10).map(|_| route_from("127.0.0.1", &gw, None))).await.into_iter().map(|r| r.0).collect();
    assert!(codes.contains(&429) && codes.iter().all(|c| *c == 403 || *c == 429), "{codes:?}");
    // The admin token is never limited.
    for _ in 0..10 {
        assert_eq!(route_from("127.0.0.1", &gw, Some(TOKEN)).await.0, 200);
    }
}

#[tokio::test]
async fn a_trusted_pbx_routes_without_a_token_and_unlimited_while_the_attacker_is_refused_and_limited() {
    let gw = gateway(|c| {
        c.http.rate_per_source = 1.0;
        c.http.burst_per_source = 3;
    })
    .await;
    routing_portal(&gw, &["127.0.0.1"], "127.0.0.1:5080").await;
    for _ in 0..20 {
        let (status, body) = route_from("127.0.0.1", &gw, None).await;
        assert_eq!((status, body["target"].as_str()), (200, Some("101")), "{body}");
    }
    let codes: Vec<u16> = futures_util::future::join_all((0..10).map(|_| route_from(ATTACKER, &gw, None))).await.into_iter().map(|r| r.0).collect();
    assert!(!codes.contains(&200) && codes.contains(&429), "{codes:?}");
}
