//! A WebRTC-mode office on loopback for the media attack tests (`attack_media.rs`): a real gateway,
//! one portal in WebRTC mode whose PBX is a UDP socket on 127.0.0.1, and browser agent 101
//! registered over the gateway's WebSocket with its issued password (digest, as JsSIP does). The
//! agent's SIP is written by hand here; its media side is a [`FakeBrowser`] (the `webrtc`
//! crate). Every wait is bounded.

use std::net::SocketAddr;
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

use super::browser::FakeBrowser;
use crate::common::TestGateway;

pub const REALM: &str = "office.bitrix24.ru";
const WAIT: Duration = Duration::from_secs(10);

/// The gateway, the PBX's SIP socket and agent 101's WebSocket.
pub struct Office {
    pub gw: TestGateway,
    pub pbx: UdpSocket,
    /// callgate's SIP UDP address.
    pub sip: SocketAddr,
    pub agent: Agent,
}

impl Office {
    /// A gateway (config adjusted by `tweak`) with 101 registered from a browser.
    pub async fn open(tweak: impl FnOnce(&mut callgate::config::Config)) -> Self {
        Self::open_built(tweak, |g| g).await
    }

    /// [`Self::open`], the built gateway passed through `finish` first (test hooks).
    pub async fn open_built(tweak: impl FnOnce(&mut callgate::config::Config), finish: impl FnOnce(callgate::Gateway) -> callgate::Gateway) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut gw = TestGateway::spawn_built(dir.path(), tweak, finish).await;
        gw.keep_dir(dir);
        let pbx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (_, password) = gw.webrtc_portal(REALM, pbx.local_addr().unwrap()).await;
        let mut agent = Agent::connect(&format!("{}/sip", gw.base.replace("http://", "ws://"))).await;
        assert_eq!(agent.login("101", &password).await.status(), Some(200), "101 registers");
        let sip = gw.addresses["sip_udp"].parse().unwrap();
        Self { gw, pbx, sip, agent }
    }

    /// `GET /api/v1/media`.
    pub async fn media(&self) -> Value {
        let (status, body) = self.gw.api(Method::GET, "/api/v1/media", None).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits (bounded) until `GET /api/v1/media` satisfies `pred`; returns it.
    pub async fn media_until(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut media = Value::Null;
        for _ in 0..200 {
            media = self.media().await;
            if pred(&media) {
                return media;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("never: {what}; media: {media:#}");
    }

    /// No session, port or peer connection left (the engine lets go of sockets a moment after
    /// the close, hence the wait).
    pub async fn assert_no_media_left(&self) {
        self.media_until("no media left", |m| {
            m["open_sessions"] == 0 && m["live_peer_connections"] == 0 && m["ports_in_use"] == json!({"webrtc": 0, "rtp": 0})
        })
        .await;
    }

    /// The PBX sends `text` to callgate.
    pub async fn pbx_sends(&self, text: &str) {
        self.pbx.send_to(text.as_bytes(), self.sip).await.unwrap();
    }

    /// The next message at the PBX for `call_id` that `want` accepts (others are skipped).
    pub async fn pbx_gets(&self, call_id: &str, want: impl Fn(&SipMessage) -> bool) -> SipMessage {
        let mut buf = vec![0u8; 65_536];
        tokio::time::timeout(WAIT, async {
            loop {
                let (n, _) = self.pbx.recv_from(&mut buf).await.unwrap();
                let Ok(msg) = SipMessage::parse(Bytes::copy_from_slice(&buf[..n])) else { continue };
                if msg.call_id() == Some(call_id.as_bytes()) && want(&msg) {
                    return msg;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the PBX got nothing wanted for {call_id}"))
    }

    /// The PBX calls 101 with `sdp` and `max_forwards`; from `from` (the PBX's socket unless
    /// another is given).
    pub fn invite(&self, call_id: &str, max_forwards: u8, sdp: &str) -> String {
        let pbx = self.pbx.local_addr().unwrap();
        invite_from(pbx, self.sip, call_id, max_forwards, sdp)
    }

    /// What the PBX needs for in-dialog requests, from the 200 it got: the To (with the
    /// browser's tag), its Route set (the Record-Route reversed) and the browser's Contact.
    pub fn dialog_of(ok: &SipMessage) -> Dialog {
        let to = text(ok.header(HeaderName::To).unwrap());
        let mut routes: Vec<String> = ok.values(HeaderName::RecordRoute).map(|v| text(v.trim_ascii())).collect();
        routes.reverse();
        let contact = ok.contact().map(|c| text(c.uri.raw)).unwrap();
        Dialog { to, routes, contact }
    }

    /// An in-dialog request of the PBX's call `call_id` (BYE, re-INVITE with `sdp`...), as sent
    /// from `from`.
    pub fn in_dialog(&self, from: SocketAddr, d: &Dialog, call_id: &str, method: &str, cseq: u32, sdp: &str) -> String {
        let route = d.routes.iter().map(|r| format!("Route: {r}\r\n")).collect::<String>();
        let ctype = if sdp.is_empty() { "" } else { "Content-Type: application/sdp\r\n" };
        format!(
            "{method} {} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-{method}-{cseq}-{}\r\nMax-Forwards: 70\r\n{route}\
             From: <sip:79161234567@{from}>;tag=pbx-tag\r\nTo: {}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n\
             Contact: <sip:79161234567@{from}>\r\n{ctype}Content-Length: {}\r\n\r\n{sdp}",
            d.contact,
            from.port(),
            d.to,
            sdp.len()
        )
    }
}

/// What the PBX needs to send in-dialog requests.
pub struct Dialog {
    pub to: String,
    pub routes: Vec<String>,
    pub contact: String,
}

/// An initial INVITE for 101 from `from` to callgate at `sip`.
pub fn invite_from(from: SocketAddr, sip: SocketAddr, call_id: &str, max_forwards: u8, sdp: &str) -> String {
    format!(
        "INVITE sip:101@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-{call_id}-{max_forwards}\r\nMax-Forwards: {max_forwards}\r\n\
         From: <sip:79161234567@{from}>;tag=pbx-tag\r\nTo: <sip:101@{sip}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:79161234567@{from}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A JsSIP-like browser softphone on one WebSocket (SIP only).
pub struct Agent {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    cseq: u32,
}

impl Agent {
    async fn connect(url: &str) -> Self {
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(req).await.expect("websocket upgrade");
        Self { ws, cseq: 0 }
    }

    pub async fn send(&mut self, text: String) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// The next SIP message (Pings and Pongs skipped).
    pub async fn recv(&mut self) -> SipMessage {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next()).await.expect("a message in time").expect("socket open").unwrap();
            match frame {
                Message::Text(t) => return SipMessage::parse(Bytes::copy_from_slice(t.as_bytes())).unwrap(),
                Message::Binary(b) => return SipMessage::parse(b).unwrap(),
                Message::Close(c) => panic!("closed: {c:?}"),
                _ => {}
            }
        }
    }

    /// The next request `method` for `call_id` (anything else is skipped).
    pub async fn request(&mut self, method: &str, call_id: &str) -> SipMessage {
        for _ in 0..50 {
            let msg = self.recv().await;
            if msg.method_raw() == Some(method.as_bytes()) && msg.call_id() == Some(call_id.as_bytes()) {
                return msg;
            }
        }
        panic!("no {method} for {call_id}");
    }

    async fn register(&mut self, ext: &str, auth: Option<String>) -> SipMessage {
        self.cseq += 1;
        let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
        let cseq = self.cseq;
        self.send(format!(
            "REGISTER sip:{REALM} SIP/2.0\r\nVia: SIP/2.0/WSS 3f8q2kdl9c1v.invalid;branch=z9hG4bK{cseq}r\r\nMax-Forwards: 69\r\n\
             To: <sip:{ext}@{REALM}>\r\nFrom: <sip:{ext}@{REALM}>;tag=reg1\r\nCall-ID: reg{ext}\r\nCSeq: {cseq} REGISTER\r\n\
             Contact: <sip:t8mz2q4r@3f8q2kdl9c1v.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:0d7c3b4e-1f2a>\";expires=600\r\n\
             {auth}Content-Length: 0\r\n\r\n"
        ))
        .await;
        self.recv().await
    }

    async fn login(&mut self, ext: &str, password: &str) -> SipMessage {
        let first = self.register(ext, None).await;
        assert_eq!(first.status(), Some(401));
        let c = Challenge::parse(first.header(HeaderName::WwwAuthenticate).expect("WWW-Authenticate")).unwrap();
        let (realm, nonce) = (std::str::from_utf8(c.realm).unwrap(), std::str::from_utf8(c.nonce).unwrap());
        let auth = authorization(ext, realm, nonce, &format!("sip:{REALM}"), "REGISTER", password, Some((1, "9vd0a3kq")));
        self.register(ext, Some(auth)).await
    }

    /// Answers `invite` with `status` (and `sdp` in a 2xx), To tag `br-tag`, Record-Route
    /// copied.
    pub async fn answer(&mut self, invite: &SipMessage, status: u16, reason: &str, sdp: &str) {
        let mut head = format!("SIP/2.0 {status} {reason}\r\n");
        for (name, raw, value) in invite.header_lines() {
            if matches!(name, HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq | HeaderName::RecordRoute) {
                head.push_str(&format!("{}: {}\r\n", text(raw), text(value)));
            }
        }
        head.push_str(&format!("To: {};tag=br-tag\r\n", text(invite.header(HeaderName::To).unwrap())));
        head.push_str("Contact: <sip:t8mz2q4r@3f8q2kdl9c1v.invalid;transport=ws>\r\n");
        if !sdp.is_empty() {
            head.push_str("Content-Type: application/sdp\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n{sdp}", sdp.len()));
        self.send(head).await;
    }
}

/// The browser answers a WebRTC offer that reached it over SIP: its answer SDP.
pub async fn browser_answer(b: &FakeBrowser, invite: &SipMessage) -> String {
    let offer = std::str::from_utf8(invite.body()).unwrap();
    assert!(offer.contains("a=ice-lite") && offer.contains("UDP/TLS/RTP/SAVPF"), "the browser gets a WebRTC offer:\n{offer}");
    tokio::time::timeout(WAIT, b.answer(offer)).await.expect("browser answer in time")
}
