//! The edge proxy driven in memory: messages go in as byte strings through
//! [`SipHandler::on_message`], time is a simulated clock (one `Instant` base plus offsets in
//! milliseconds), and what the proxy wants sent is read back from the [`Outbox`], parsed, per
//! destination. No sockets, no sleeps.
//!
//! The office: one portal whose PBX is 127.0.0.1:5080; extension 101 (user 11) with the static
//! contact `sip:101@127.0.0.1:6001`, extension 102 (user 12) without one; callgate listens on UDP
//! 127.0.0.1:5060 only.

mod dialog;
mod flow;
mod invite;
mod malformed;
mod register;
mod transport;
mod trust;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::{Local, Proxy};
use crate::calls::{CallsHandle, TrackerConfig};
use crate::directory::{Directory, PortalEntry};
use crate::settings::{Mapping, Portal, PortalSettings};
use crate::sip::core::transaction::Timers;
use crate::sip::core::{write_response, HeaderName, SipMessage};
use crate::sip::transport::{Outbox, Peer, SipHandler, Transport};

/// callgate's UDP listener.
const US: &str = "127.0.0.1:5060";
/// The portal's `pbx_host`.
const PBX: &str = "127.0.0.1:5080";
/// Extension 101's phone (its static contact).
const PHONE_101: &str = "127.0.0.1:6001";
/// Extension 102's phone (no static contact; it may register).
const PHONE_102: &str = "127.0.0.1:6002";
/// A Route naming callgate without a token (a phone using it as its outbound proxy).
const OUR_ROUTE: &str = "<sip:127.0.0.1:5060;lr>";
/// The test proxy's route key.
const TEST_KEY: [u8; 32] = [9; 32];

/// What callgate puts into Record-Route (UDP both ways) for the dialog `call_id` it relayed
/// from `a` to `b`.
fn dialog_route(a: &str, b: &str, call_id: &str) -> String {
    format!("<sip:{}@127.0.0.1:5060;lr>", super::RouteKey::new(&TEST_KEY).dialog(udp(a), udp(b), call_id.as_bytes()))
}

/// What callgate puts into Path for `ext`'s REGISTER from `flow` (portal 1).
fn path_route(flow: &str, ext: &str) -> String {
    format!("<sip:{}@127.0.0.1:5060;lr>", super::RouteKey::new(&TEST_KEY).path(udp(flow), 1, ext))
}
/// The To-tag the agents' phones answer with.
const AGENT_TAG: &str = "agent-tag";
/// The customer calling in.
const CUSTOMER: &str = "79161234567";

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a socket address")
}

fn udp(s: &str) -> Peer {
    Peer {
        addr: addr(s),
        transport: Transport::Udp,
    }
}

fn mapping(id: i64, user_id: u64, extension: &str, contact: Option<&str>) -> Mapping {
    Mapping {
        id,
        user_id,
        extension: extension.into(),
        use_for_personal_manager: true,
        contact: contact.map(Into::into),
    }
}

fn office() -> PortalEntry {
    let settings = PortalSettings {
        active: true,
        pbx_host: PBX.into(),
        ..PortalSettings::default()
    };
    let portal = Portal {
        id: 1,
        name: None,
        domain: "https://office.bitrix24.ru/".into(),
        auth: None,
        settings,
    };
    let mappings = vec![
        mapping(1, 11, "101", Some("sip:101@127.0.0.1:6001")),
        mapping(2, 12, "102", None),
    ];
    PortalEntry::build(portal, mappings, Vec::new())
}

/// `\n` line ends become `\r\n`.
fn sip(text: &str) -> Bytes {
    Bytes::from(text.replace('\n', "\r\n"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The proxy for the office, its tracker and the clock's base.
struct Harness {
    proxy: Proxy,
    calls: CallsHandle,
    t0: Instant,
}

impl Harness {
    fn new() -> Self {
        Self::with_tracker(TrackerConfig::default())
    }

    fn with_tracker(cfg: TrackerConfig) -> Self {
        Self::build(cfg, vec![office()])
    }

    /// A proxy for `portals` instead of the office.
    fn with_portals(portals: Vec<PortalEntry>) -> Self {
        Self::build(TrackerConfig::default(), portals)
    }

    fn build(cfg: TrackerConfig, portals: Vec<PortalEntry>) -> Self {
        let t0 = Instant::now();
        let directory = Directory::default();
        directory.install_for_test(portals);
        let local = Local {
            udp: Some(addr(US)),
            tcp: None,
            tls: None,
            names: Vec::new(),
        };
        let calls = CallsHandle::new(cfg, t0, 1_700_000_000_000);
        let proxy = Proxy::new(directory, local, calls.clone(), Timers::RFC3261).with_route_key(super::RouteKey::new(&TEST_KEY));
        Self { proxy, calls, t0 }
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    /// `msg` (text with `\n` line ends) arrives over UDP from `from` at `ms`.
    fn recv(&self, from: &str, msg: &str, ms: u64) -> Sent {
        self.recv_bytes(from, sip(msg), ms)
    }

    /// Raw bytes arrive over UDP from `from` at `ms`.
    fn recv_bytes(&self, from: &str, data: Bytes, ms: u64) -> Sent {
        let mut out = Outbox::new();
        self.proxy
            .on_message(data, udp(from), self.at(ms), &mut out);
        Sent::from(out)
    }

    /// The driver's periodic tick at `ms`.
    fn tick(&self, ms: u64) -> Sent {
        let mut out = Outbox::new();
        self.proxy.on_tick(self.at(ms), &mut out);
        Sent::from(out)
    }

    /// Ticks every `step` ms from `from` to `to` (both included), collecting what was sent
    /// with the time of the tick that sent it.
    fn tick_through(&self, from: u64, to: u64, step: u64) -> Vec<(u64, Sent)> {
        (from..=to)
            .step_by(usize::try_from(step).expect("a small step"))
            .map(|ms| (ms, self.tick(ms)))
            .collect()
    }

    /// The PBX offers the customer's call to `ext`; returns the INVITE as it reached the
    /// extension's phone at `phone`.
    fn offer(&self, ext: &str, call_id: &str, phone: &str) -> SipMessage {
        let sent = self.recv(PBX, &pbx_invite(ext, call_id, "z9hG4bK-pbx-1"), 0);
        sent.one_to(phone).clone()
    }
}

/// What the proxy wanted sent after one message or tick.
struct Sent {
    /// `out.reply`: the in-place answer to the sender (only parse failures use it).
    reply: BytesMut,
    /// `out.sends`, parsed.
    sends: Vec<(SocketAddr, SipMessage)>,
}

impl From<Outbox> for Sent {
    fn from(out: Outbox) -> Self {
        let sends = out
            .sends
            .into_iter()
            .map(|(peer, data)| {
                assert_eq!(peer.transport, Transport::Udp, "everything here is UDP");
                let msg = SipMessage::parse(data.clone()).unwrap_or_else(|e| {
                    panic!(
                        "the proxy sent an unparsable message ({e}): {}",
                        text(&data)
                    )
                });
                (peer.addr, msg)
            })
            .collect();
        Self {
            reply: out.reply,
            sends,
        }
    }
}

impl Sent {
    /// (destination, start line) of every send, in order.
    fn lines(&self) -> Vec<(String, String)> {
        self.sends
            .iter()
            .map(|(a, m)| (a.to_string(), text(m.start_line())))
            .collect()
    }

    /// Everything sent to `dest`.
    fn to(&self, dest: &str) -> Vec<&SipMessage> {
        let dest = addr(dest);
        self.sends
            .iter()
            .filter(|(a, _)| *a == dest)
            .map(|(_, m)| m)
            .collect()
    }

    /// The only message sent to `dest`.
    fn one_to(&self, dest: &str) -> &SipMessage {
        match self.to(dest).as_slice() {
            [m] => m,
            _ => panic!(
                "expected exactly one message to {dest}, got {:?}",
                self.lines()
            ),
        }
    }

    fn is_empty(&self) -> bool {
        self.reply.is_empty() && self.sends.is_empty()
    }
}

/// A header's first line as text.
fn header(msg: &SipMessage, name: HeaderName) -> Option<String> {
    msg.header(name).map(text)
}

/// All Via values, top first.
fn vias(msg: &SipMessage) -> Vec<String> {
    msg.values(HeaderName::Via)
        .map(|v| text(v.trim_ascii()))
        .collect()
}

fn top_branch(msg: &SipMessage) -> String {
    msg.top_via()
        .and_then(|v| v.branch)
        .map(text)
        .unwrap_or_default()
}

fn status_and_cseq(msg: &SipMessage) -> (Option<u16>, Option<String>) {
    (msg.status(), header(msg, HeaderName::CSeq))
}

/// The PBX's initial INVITE for `ext` (callgate's address in the Request-URI).
fn pbx_invite(ext: &str, call_id: &str, branch: &str) -> String {
    format!(
        "INVITE sip:{ext}@127.0.0.1:5060 SIP/2.0\n\
         Via: SIP/2.0/UDP 127.0.0.1:5080;branch={branch}\n\
         Max-Forwards: 70\n\
         From: \"Customer\" <sip:{CUSTOMER}@127.0.0.1:5080>;tag=pbx-tag\n\
         To: <sip:{ext}@127.0.0.1:5060>\n\
         Call-ID: {call_id}\n\
         CSeq: 1 INVITE\n\
         Contact: <sip:{CUSTOMER}@127.0.0.1:5080>\n\
         X-Call-Id: pbx-77\n\
         Content-Length: 0\n\n"
    )
}

/// The PBX's CANCEL for the INVITE of [`pbx_invite`] with the same branch.
fn pbx_cancel(ext: &str, call_id: &str, branch: &str) -> String {
    format!(
        "CANCEL sip:{ext}@127.0.0.1:5060 SIP/2.0\n\
         Via: SIP/2.0/UDP 127.0.0.1:5080;branch={branch}\n\
         Max-Forwards: 70\n\
         From: \"Customer\" <sip:{CUSTOMER}@127.0.0.1:5080>;tag=pbx-tag\n\
         To: <sip:{ext}@127.0.0.1:5060>\n\
         Call-ID: {call_id}\n\
         CSeq: 1 CANCEL\n\
         Content-Length: 0\n\n"
    )
}

/// The PBX's ACK for a non-2xx final answer to [`pbx_invite`]: same branch and Request-URI,
/// the answer's To-tag.
fn pbx_ack_non_2xx(ext: &str, call_id: &str, branch: &str) -> String {
    format!(
        "ACK sip:{ext}@127.0.0.1:5060 SIP/2.0\n\
         Via: SIP/2.0/UDP 127.0.0.1:5080;branch={branch}\n\
         Max-Forwards: 70\n\
         From: \"Customer\" <sip:{CUSTOMER}@127.0.0.1:5080>;tag=pbx-tag\n\
         To: <sip:{ext}@127.0.0.1:5060>;tag={AGENT_TAG}\n\
         Call-ID: {call_id}\n\
         CSeq: 1 ACK\n\
         Content-Length: 0\n\n"
    )
}

/// A request of the PBX inside the dialog with extension 101 (after a 200 carrying our
/// Record-Route and the phone's Contact): Request-URI the phone's Contact, Route us.
fn pbx_in_dialog(method: &str, cseq: u32, call_id: &str, branch: &str) -> String {
    let route = dialog_route(PBX, PHONE_101, call_id);
    format!(
        "{method} sip:101@127.0.0.1:6001 SIP/2.0\n\
         Via: SIP/2.0/UDP 127.0.0.1:5080;branch={branch}\n\
         Route: {route}\n\
         Max-Forwards: 70\n\
         From: \"Customer\" <sip:{CUSTOMER}@127.0.0.1:5080>;tag=pbx-tag\n\
         To: <sip:101@127.0.0.1:5060>;tag={AGENT_TAG}\n\
         Call-ID: {call_id}\n\
         CSeq: {cseq} {method}\n\
         Content-Length: 0\n\n"
    )
}

/// A phone's answer to `req` (as the proxy delivered it): its Vias, From, To (+ [`AGENT_TAG`]),
/// Call-ID and CSeq copied, then `extra` headers.
fn answer(req: &SipMessage, status: u16, reason: &str, extra: &[(&str, &[u8])]) -> Bytes {
    let mut buf = BytesMut::new();
    write_response(
        req,
        status,
        reason,
        Some(AGENT_TAG.as_bytes()),
        extra,
        &mut buf,
    );
    buf.freeze()
}

/// Phone 101's 200 for the INVITE: Record-Route copied back, its Contact.
fn answer_200(invite: &SipMessage) -> Bytes {
    let rr = invite.header(HeaderName::RecordRoute).unwrap_or_default();
    answer(
        invite,
        200,
        "OK",
        &[
            ("Record-Route", rr),
            ("Contact", b"<sip:101@127.0.0.1:6001>"),
        ],
    )
}
