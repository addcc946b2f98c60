//! SIP over WebSocket (RFC 7118) and callgate as the registrar for browser agents (WebRTC
//! widget, issue 6 part 1): a tokio-tungstenite client plays the browser (what JsSIP sends:
//! subprotocol `sip`, `Via: SIP/2.0/WSS <x>.invalid`, a `;transport=ws` Contact with
//! `+sip.instance`, digest MD5 with qop=auth) against the real HTTP listener; a UDP socket plays
//! the PBX.

use std::time::Duration;

use bytes::Bytes;
use callgate::sip::core::digest::{authorization, Challenge};
use callgate::sip::core::{HeaderName, SipMessage};
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::net::{TcpStream, UdpSocket};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::TestGateway;

const REALM: &str = "office.bitrix24.ru";
const WAIT: Duration = Duration::from_secs(5);

/// A gateway with one portal in WebRTC mode whose PBX is `pbx` and which maps 101 and 102.
struct Widget {
    gw: TestGateway,
    portal: i64,
    pbx: UdpSocket,
}

impl Widget {
    async fn open() -> Self {
        let gw = TestGateway::spawn().await;
        let pbx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let portal = gw.portal(REALM).await;
        let path = format!("/api/v1/portals/{portal}/settings");
        let mut settings = gw.api(Method::GET, &path, None).await.1;
        settings["telephony_mode"] = json!("webrtc");
        settings["pbx_host"] = json!(pbx.local_addr().unwrap().to_string());
        let (status, body) = gw.api(Method::PUT, &path, Some(settings)).await;
        assert_eq!(status, 200, "{body}");
        for (user, ext) in [(11, "101"), (12, "102")] {
            let m = json!({ "user_id": user, "extension": ext, "use_for_personal_manager": false, "contact": null });
            let (status, body) = gw.api(Method::POST, &format!("/api/v1/portals/{portal}/mappings"), Some(m)).await;
            assert_eq!(status, 201, "{body}");
        }
        Self { gw, portal, pbx }
    }

    /// Issues (or rotates) `ext`'s credentials; the whole answer.
    async fn credentials(&self, ext: &str) -> (u16, Value) {
        self.gw.api(Method::POST, &format!("/api/v1/portals/{}/agents/{ext}/credentials", self.portal), None).await
    }

    async fn password(&self, ext: &str) -> String {
        let (status, body) = self.credentials(ext).await;
        assert!(status == 201 || status == 200, "{status} {body}");
        body["password"].as_str().unwrap().to_owned()
    }

    /// `GET .../agents`, the entry of `ext`.
    async fn agent(&self, ext: &str) -> Value {
        let (status, body) = self.gw.api(Method::GET, &format!("/api/v1/portals/{}/agents", self.portal), None).await;
        assert_eq!(status, 200, "{body}");
        body.as_array().unwrap().iter().find(|a| a["extension"] == ext).cloned().unwrap()
    }

    /// Waits until `ext`'s registration is (or is no longer) listed.
    async fn until_registered(&self, ext: &str, registered: bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let agent = self.agent(ext).await;
            if agent["registration"].is_null() != registered {
                return agent;
            }
            assert!(tokio::time::Instant::now() < deadline, "registration of {ext} still {agent}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn ws_url(&self) -> String {
        format!("{}/sip", self.gw.base.replace("http://", "ws://"))
    }

    async fn browser(&self) -> Browser {
        Browser::connect(&self.ws_url()).await
    }
}

/// A JsSIP-like browser softphone on one WebSocket.
struct Browser {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    cseq: u32,
    nc: u32,
}

impl Browser {
    async fn connect(url: &str) -> Self {
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
        let (ws, resp) = tokio_tungstenite::connect_async(req).await.expect("websocket upgrade");
        assert_eq!(resp.headers().get("sec-websocket-protocol").unwrap(), "sip");
        Self { ws, cseq: 0, nc: 0 }
    }

    async fn send(&mut self, text: String) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// The next SIP message (Pings and Pongs skipped).
    async fn recv(&mut self) -> SipMessage {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next()).await.expect("a message in time").expect("socket open").unwrap();
            match frame {
                Message::Text(t) => return SipMessage::parse(Bytes::copy_from_slice(t.as_bytes())).unwrap(),
                Message::Binary(b) => return SipMessage::parse(b).unwrap(),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
                Message::Close(c) => panic!("closed: {c:?}"),
            }
        }
    }

    /// A REGISTER as JsSIP writes it, with `auth` as Authorization.
    async fn register(&mut self, ext: &str, auth: Option<String>, expires: u32) -> SipMessage {
        self.cseq += 1;
        let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
        let cseq = self.cseq;
        self.send(format!(
            "REGISTER sip:{REALM} SIP/2.0\r\nVia: SIP/2.0/WSS 3f8q2kdl9c1v.invalid;branch=z9hG4bK{cseq}x7\r\nMax-Forwards: 69\r\n\
             To: <sip:{ext}@{REALM}>\r\nFrom: <sip:{ext}@{REALM}>;tag=jn4ab7cd\r\nCall-ID: regcall{ext}\r\nCSeq: {cseq} REGISTER\r\n\
             Contact: <sip:t8mz2q4r@3f8q2kdl9c1v.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:0d7c3b4e-1f2a>\";expires={expires}\r\n\
             {auth}Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY\r\nSupported: path,gruu,outbound\r\n\
             User-Agent: JsSIP 3.13.8\r\nContent-Length: 0\r\n\r\n"
        ))
        .await;
        self.recv().await
    }

    /// The answer to `challenge` with `password` (JsSIP counts nc per nonce).
    fn answer(&mut self, ext: &str, challenge: &SipMessage, password: &str) -> String {
        let c = Challenge::parse(challenge.header(HeaderName::WwwAuthenticate).expect("WWW-Authenticate")).unwrap();
        self.nc += 1;
        let (realm, nonce) = (std::str::from_utf8(c.realm).unwrap(), std::str::from_utf8(c.nonce).unwrap());
        authorization(ext, realm, nonce, &format!("sip:{REALM}"), "REGISTER", password, Some((self.nc, "9vd0a3kq")))
    }

    /// Challenge, then the answer: the final response.
    async fn login(&mut self, ext: &str, password: &str) -> SipMessage {
        let first = self.register(ext, None, 600).await;
        assert_eq!(first.status(), Some(401));
        let auth = self.answer(ext, &first, password);
        self.register(ext, Some(auth), 600).await
    }
}

fn challenge_of(resp: &SipMessage) -> (String, String, bool) {
    let c = Challenge::parse(resp.header(HeaderName::WwwAuthenticate).expect("WWW-Authenticate")).unwrap();
    (String::from_utf8_lossy(c.realm).into_owned(), String::from_utf8_lossy(c.nonce).into_owned(), c.stale)
}

#[tokio::test]
async fn an_upgrade_without_the_sip_subprotocol_is_refused() {
    let w = Widget::open().await;
    let err = tokio_tungstenite::connect_async(w.ws_url()).await.expect_err("refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => assert_eq!(resp.status(), 400),
        other => panic!("unexpected {other:?}"),
    }
    let mut req = w.ws_url().into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "chat".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_err());
}

#[tokio::test]
async fn a_register_without_credentials_is_challenged_with_the_portal_realm() {
    let w = Widget::open().await;
    let mut b = w.browser().await;
    let resp = b.register("101", None, 600).await;
    assert_eq!(resp.status(), Some(401));
    let (realm, nonce, stale) = challenge_of(&resp);
    assert_eq!((realm.as_str(), stale), (REALM, false));
    assert!(nonce.len() >= 32, "{nonce}");
    let raw = std::str::from_utf8(resp.header(HeaderName::WwwAuthenticate).unwrap()).unwrap();
    assert!(raw.contains("algorithm=MD5") && raw.contains("qop=\"auth\""), "{raw}");
}

#[tokio::test]
async fn the_issued_password_registers_the_agent_and_the_binding_is_listed() {
    let w = Widget::open().await;
    let (status, creds) = w.credentials("101").await;
    assert_eq!(status, 201, "{creds}");
    assert_eq!((creds["username"].as_str(), creds["realm"].as_str()), (Some("101"), Some(REALM)));
    assert_eq!(creds["password"].as_str().unwrap().len(), 24);
    assert_eq!(creds["ws_url"].as_str(), Some(w.ws_url().as_str()));
    let password = creds["password"].as_str().unwrap();

    let mut b = w.browser().await;
    let ok = b.login("101", password).await;
    assert_eq!(ok.status(), Some(200));
    let contact = ok.contact().unwrap();
    assert_eq!(contact.uri.raw, b"sip:t8mz2q4r@3f8q2kdl9c1v.invalid;transport=ws");
    assert_eq!(contact.param(b"expires"), Some(&b"600"[..]));

    let agent = w.agent("101").await;
    assert_eq!(agent["credentials"], true);
    assert_eq!(agent["registration"]["contact"], "sip:t8mz2q4r@3f8q2kdl9c1v.invalid;transport=ws");
    assert_eq!(agent["registration"]["transport"], "ws");
    assert_eq!(agent["registration"]["user_agent"], "JsSIP 3.13.8");
    assert_eq!(w.agent("102").await["credentials"], false);
}

#[tokio::test]
async fn a_wrong_password_is_challenged_again_and_registers_nothing() {
    let w = Widget::open().await;
    let _ = w.password("101").await;
    let mut b = w.browser().await;
    let resp = b.login("101", "not-the-password-at-all1").await;
    assert_eq!(resp.status(), Some(401));
    assert!(!challenge_of(&resp).2, "a wrong password is not a stale nonce");
    assert!(w.agent("101").await["registration"].is_null());
}

#[tokio::test]
async fn a_forged_nonce_gets_a_stale_challenge_and_the_fresh_one_works() {
    let w = Widget::open().await;
    let password = w.password("101").await;
    let mut b = w.browser().await;
    let forged = "0000000000000001000000000000000200000000000000000000000000000003";
    let auth = authorization("101", REALM, forged, &format!("sip:{REALM}"), "REGISTER", &password, Some((1, "abc")));
    let resp = b.register("101", Some(auth), 600).await;
    assert_eq!(resp.status(), Some(401));
    assert!(challenge_of(&resp).2, "stale=true: the password was right, the nonce was not ours");
    let auth = b.answer("101", &resp, &password);
    assert_eq!(b.register("101", Some(auth), 600).await.status(), Some(200));
}

#[tokio::test]
async fn a_malformed_frame_is_answered_400_and_the_connection_stays_usable() {
    let w = Widget::open().await;
    let password = w.password("101").await;
    let mut b = w.browser().await;
    // CSeq names another method: a request that can be answered.
    b.send(format!(
        "REGISTER sip:{REALM} SIP/2.0\r\nVia: SIP/2.0/WSS x.invalid;branch=z9hG4bKbad1\r\nTo: <sip:101@{REALM}>\r\n\
         From: <sip:101@{REALM}>;tag=1\r\nCall-ID: bad1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ))
    .await;
    let bad = b.recv().await;
    assert_eq!(bad.status(), Some(400));
    // Garbage cannot be answered: dropped. A keep-alive gets its pong.
    b.send("this is not SIP at all".to_owned()).await;
    b.send("\r\n\r\n".to_owned()).await;
    let pong = tokio::time::timeout(WAIT, b.ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(pong.into_data().as_ref(), b"\r\n");
    assert_eq!(b.login("101", &password).await.status(), Some(200));
}

#[tokio::test]
async fn rotating_the_credentials_ends_the_registration_and_the_old_password() {
    let w = Widget::open().await;
    let old = w.password("101").await;
    let mut b = w.browser().await;
    assert_eq!(b.login("101", &old).await.status(), Some(200));
    let (status, rotated) = w.credentials("101").await;
    assert_eq!(status, 200, "a rotation: {rotated}");
    let new = rotated["password"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(w.agent("101").await["registration"].is_null(), "the old registration ends");
    assert_eq!(b.login("101", &old).await.status(), Some(401));
    assert_eq!(b.login("101", &new).await.status(), Some(200));
}

#[tokio::test]
async fn revoked_credentials_no_longer_register() {
    let w = Widget::open().await;
    let password = w.password("101").await;
    let mut b = w.browser().await;
    assert_eq!(b.login("101", &password).await.status(), Some(200));
    let path = format!("/api/v1/portals/{}/agents/101/credentials", w.portal);
    assert_eq!(w.gw.api(Method::DELETE, &path, None).await.0, 204);
    assert_eq!(w.gw.api(Method::DELETE, &path, None).await.0, 404);
    let agent = w.agent("101").await;
    assert_eq!((agent["credentials"].as_bool(), agent["registration"].is_null()), (Some(false), true));
    assert_eq!(b.login("101", &password).await.status(), Some(401));
}

#[tokio::test]
async fn credentials_need_a_mapped_extension_and_the_admin_token_in_either_mode() {
    let w = Widget::open().await;
    assert_eq!(w.credentials("999").await.0, 404);
    let path = format!("/api/v1/portals/{}/agents/101/credentials", w.portal);
    assert_eq!(w.gw.call(Method::POST, &path, None, None).await.0, 401);
    let settings = format!("/api/v1/portals/{}/settings", w.portal);
    let mut s = w.gw.api(Method::GET, &settings, None).await.1;
    s["telephony_mode"] = json!("ip");
    assert_eq!(w.gw.api(Method::PUT, &settings, Some(s)).await.0, 200);
    // IP mode: the password is an IP phone's for callgate's own digest challenge.
    let (status, body) = w.credentials("101").await;
    assert!(status == 201 || status == 200, "{status} {body}");
}

#[tokio::test]
async fn an_unregistered_websocket_cannot_send_requests() {
    let w = Widget::open().await;
    let mut b = w.browser().await;
    b.send(format!(
        "INVITE sip:79161234567@{REALM} SIP/2.0\r\nVia: SIP/2.0/WSS x.invalid;branch=z9hG4bKinv1\r\nMax-Forwards: 70\r\n\
         To: <sip:79161234567@{REALM}>\r\nFrom: <sip:101@{REALM}>;tag=1\r\nCall-ID: inv1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    ))
    .await;
    assert_eq!(b.recv().await.status(), Some(403));
}

#[tokio::test]
async fn the_pbx_invite_for_a_registered_agent_arrives_on_its_websocket() {
    let w = Widget::open().await;
    let password = w.password("101").await;
    let mut b = w.browser().await;
    assert_eq!(b.login("101", &password).await.status(), Some(200));
    let sip: std::net::SocketAddr = w.gw.addresses["sip_udp"].parse().unwrap();
    let pbx = w.pbx.local_addr().unwrap();
    let invite = format!(
        "INVITE sip:101@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx};branch=z9hG4bK-pbx-1\r\nMax-Forwards: 70\r\n\
         From: <sip:79161234567@{pbx}>;tag=pbx1\r\nTo: <sip:101@{sip}>\r\nCall-ID: pbx-call-1\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:79161234567@{pbx}>\r\nX-Call-Id: xc-1\r\nContent-Length: 0\r\n\r\n"
    );
    w.pbx.send_to(invite.as_bytes(), sip).await.unwrap();

    let got = b.recv().await;
    assert_eq!(got.method_raw(), Some(&b"INVITE"[..]));
    assert_eq!(got.request_uri(), Some(&b"sip:t8mz2q4r@3f8q2kdl9c1v.invalid;transport=ws"[..]));
    assert_eq!(got.call_id(), Some(&b"pbx-call-1"[..]));
    let via = got.top_via().unwrap();
    assert_eq!(via.transport, b"WS");
    assert!(got.header_by_name(b"Record-Route").is_some());

    // The browser is busy: the PBX hears it.
    let vias: Vec<String> = got.headers(HeaderName::Via).map(|v| format!("Via: {}\r\n", String::from_utf8_lossy(v))).collect();
    let busy = format!(
        "SIP/2.0 486 Busy Here\r\n{}From: <sip:79161234567@{pbx}>;tag=pbx1\r\nTo: <sip:101@{sip}>;tag=br1\r\nCall-ID: pbx-call-1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        vias.concat()
    );
    b.send(busy).await;
    let mut buf = [0u8; 4096];
    let status = loop {
        let (n, _) = tokio::time::timeout(WAIT, w.pbx.recv_from(&mut buf)).await.expect("the PBX hears back").unwrap();
        let msg = SipMessage::parse(Bytes::copy_from_slice(&buf[..n])).unwrap();
        if msg.status() != Some(100) {
            break msg.status();
        }
    };
    assert_eq!(status, Some(486));
}

#[tokio::test]
async fn closing_the_socket_removes_the_binding() {
    let w = Widget::open().await;
    let password = w.password("101").await;
    let mut b = w.browser().await;
    assert_eq!(b.login("101", &password).await.status(), Some(200));
    w.until_registered("101", true).await;
    b.ws.close(None).await.unwrap();
    drop(b);
    w.until_registered("101", false).await;
}

#[tokio::test]
async fn unregistering_with_expires_zero_removes_the_binding() {
    let w = Widget::open().await;
    let password = w.password("101").await;
    let mut b = w.browser().await;
    let first = b.register("101", None, 600).await;
    let auth = b.answer("101", &first, &password);
    assert_eq!(b.register("101", Some(auth), 600).await.status(), Some(200));
    let auth = b.answer("101", &first, &password);
    let gone = b.register("101", Some(auth), 0).await;
    assert_eq!((gone.status(), gone.contact().is_none()), (Some(200), true));
    assert!(w.agent("101").await["registration"].is_null());
}

/// The WebSocket driver alone, with a recording handler: pings, idle close, the close hook.
mod driver {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytes::{Bytes, BytesMut};
    use callgate::sip::transport::{Hub, Outbox, Peer, SipHandler, TcpLimits, Transport, WsEndpoint, WsLimits};
    use futures_util::{SinkExt, StreamExt};
    use parking_lot::Mutex;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    #[derive(Default)]
    struct Recorder {
        messages: Mutex<Vec<(Bytes, Peer)>>,
        closed: Mutex<Vec<Peer>>,
    }

    impl SipHandler for Recorder {
        fn on_message(&self, data: Bytes, peer: Peer, _now: Instant, out: &mut Outbox) {
            self.messages.lock().push((data, peer));
            out.reply.extend_from_slice(b"SIP/2.0 200 OK\r\n\r\n");
        }
        fn on_bad_frame(&self, _head: &[u8], _peer: Peer, _reply: &mut BytesMut) {}
        fn on_tick(&self, _now: Instant, _out: &mut Outbox) {}
        fn on_closed(&self, peer: Peer, _now: Instant, _out: &mut Outbox) {
            self.closed.lock().push(peer);
        }
    }

    struct Rig {
        url: String,
        recorder: Arc<Recorder>,
        hub: Arc<Hub>,
        cancel: CancellationToken,
    }

    async fn rig(ping_every: Duration, idle: Duration) -> Rig {
        let recorder = Arc::new(Recorder::default());
        let (tasks, cancel) = (TaskTracker::new(), CancellationToken::new());
        let tcp = TcpLimits { max_message: 65_535, max_connections: 10, idle: Duration::from_secs(60), ..TcpLimits::default() };
        let hub = Hub::new(recorder.clone(), tcp, tasks.clone(), cancel.clone());
        let ep = WsEndpoint::new(hub.clone(), WsLimits { ping_every, idle, max_connections: 10, max_message: 65_535 }, tasks.clone());
        let url = crate::common::serve_sip_websocket(ep, cancel.clone()).await;
        Rig { url, recorder, hub, cancel }
    }

    async fn connect(url: &str) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
        tokio_tungstenite::connect_async(req).await.unwrap().0
    }

    /// The next data message's bytes (control frames skipped).
    async fn next_data(ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>) -> Bytes {
        loop {
            match tokio::time::timeout(Duration::from_secs(2), ws.next()).await.unwrap().unwrap().unwrap() {
                Message::Text(t) => return Bytes::copy_from_slice(t.as_bytes()),
                Message::Binary(b) => return b,
                _ => {}
            }
        }
    }

    #[tokio::test]
    async fn a_websocket_that_answers_pings_stays_open_and_one_that_does_not_is_closed() {
        let r = rig(Duration::from_millis(50), Duration::from_millis(200)).await;
        // A live peer: it reads, so its library answers every Ping with a Pong.
        let mut live = connect(&r.url).await;
        let mut pings = 0;
        let until = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(until, live.next()).await {
            pings += usize::from(matches!(frame, Message::Ping(_)));
        }
        assert!(pings >= 3, "{pings} pings");
        live.send(Message::text("OPTIONS sip:x SIP/2.0\r\n\r\n")).await.unwrap();
        assert_eq!(next_data(&mut live).await.as_ref(), b"SIP/2.0 200 OK\r\n\r\n");
        let (_, peer) = r.recorder.messages.lock()[0].clone();
        assert_eq!(peer.transport, Transport::Ws);

        // A silent peer: it never reads, so it never pongs.
        let mut silent = connect(&r.url).await;
        assert_eq!(r.hub.websocket_count(), 2);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut closed = false;
        while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(2), silent.next()).await {
            if let Ok(Message::Close(Some(c))) = frame {
                assert_eq!(u16::from(c.code), 1001);
                closed = true;
            }
        }
        assert!(closed, "the server closed the silent socket");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while r.recorder.closed.lock().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "on_closed never called");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(r.recorder.closed.lock().len(), 1);
        assert_eq!(r.hub.websocket_count(), 1, "the live one is still registered");
        r.cancel.cancel();
    }

    #[tokio::test]
    async fn the_hub_sends_to_a_websocket_flow_and_drops_for_unknown_ones() {
        let r = rig(Duration::from_secs(30), Duration::from_secs(90)).await;
        let mut ws = connect(&r.url).await;
        ws.send(Message::text("OPTIONS sip:x SIP/2.0\r\n\r\n")).await.unwrap();
        let _ = next_data(&mut ws).await;
        let (_, peer) = r.recorder.messages.lock()[0].clone();
        r.hub.send(peer, Bytes::from_static(b"NOTIFY sip:x SIP/2.0\r\n\r\n"));
        assert_eq!(next_data(&mut ws).await.as_ref(), b"NOTIFY sip:x SIP/2.0\r\n\r\n");
        // Never dialled: a WS peer without a connection is just dropped.
        r.hub.send(Peer { addr: "127.0.0.1:9".parse().unwrap(), transport: Transport::Ws }, Bytes::from_static(b"x"));
        assert_eq!(r.hub.websocket_count(), 1);
        r.cancel.cancel();
    }
}

#[tokio::test]
async fn the_openapi_document_lists_the_agent_endpoints() {
    let gw = TestGateway::spawn().await;
    let (status, doc) = gw.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    for path in ["/api/v1/portals/{id}/agents", "/api/v1/portals/{id}/agents/{extension}/credentials", "/sip"] {
        assert!(doc["paths"][path].is_object(), "{path} missing from OpenAPI");
    }
}

#[tokio::test]
async fn a_registered_agents_call_goes_to_the_pbx_over_udp() {
    let w = Widget::open().await;
    let password = w.password("101").await;
    let mut b = w.browser().await;
    assert_eq!(b.login("101", &password).await.status(), Some(200));
    b.send(format!(
        "INVITE sip:79161234567@{REALM} SIP/2.0\r\nVia: SIP/2.0/WSS 3f8q2kdl9c1v.invalid;branch=z9hG4bKout1\r\nMax-Forwards: 70\r\n\
         To: <sip:79161234567@{REALM}>\r\nFrom: <sip:101@{REALM}>;tag=out1\r\nCall-ID: out-call-1\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:t8mz2q4r@3f8q2kdl9c1v.invalid;transport=ws;ob>\r\nContent-Length: 0\r\n\r\n"
    ))
    .await;
    assert_eq!(b.recv().await.status(), Some(100));
    let mut buf = [0u8; 4096];
    let (n, _) = tokio::time::timeout(WAIT, w.pbx.recv_from(&mut buf)).await.expect("the PBX gets the INVITE").unwrap();
    let got = SipMessage::parse(Bytes::copy_from_slice(&buf[..n])).unwrap();
    let pbx = w.pbx.local_addr().unwrap();
    assert_eq!(got.request_uri().map(|u| String::from_utf8_lossy(u).into_owned()), Some(format!("sip:79161234567@{pbx}")));
    assert_eq!(got.top_via().unwrap().transport, b"UDP");
    assert_eq!(got.call_id(), Some(&b"out-call-1"[..]));
}
