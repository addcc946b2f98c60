//! The `edge` fuzz target: sequences of SIP messages from several sources through the whole
//! front door, as the listeners would deliver them.
//!
//! Each input builds a fresh gateway core without sockets: a [`Front`] over the redirect
//! listener, the edge proxy, the browser agents' registrar and the media bridge (its anchor binds
//! ports only for a call it anchors, on 127.0.0.1 in ranges of its own), with a [`Directory`]
//! holding two portals on one PBX address, extensions 101 (static contact), 102 (registers
//! through callgate) and 103 (a browser agent with digest credentials). Then:
//!
//! - byte 0 holds flags: bit 0 registers agent 103 over its WebSocket flow first (a real digest
//!   handshake), bit 1 puts portal 1 in WebRTC mode, bit 2 turns the per-source rate limit on,
//!   bit 3 starts draining (graceful shutdown);
//! - the rest is records separated by [`RS`] (0x1e). A record's first byte picks the source
//!   (low 3 bits: [`SOURCES`]) and how the far ends answer what callgate sends (the other bits),
//!   its second byte how far the simulated clock moves first (20 ms steps; 0xff jumps 64 s), the
//!   rest is one message;
//! - after each record the front is ticked, and every request it sent (to the PBX, a phone, the
//!   browser, or anyone a message named) is answered by its destination: 100/180/200/486/407/503
//!   or nothing, a 200 to INVITE with SDP (WebRTC SDP towards WebSocket flows), a 200 to
//!   REGISTER with an `Expires` chosen from ordinary to absurd. The answers come from the
//!   address and transport the request went to, once (the answers' own effects are not
//!   answered again);
//! - at the end the clock runs on past every SIP timer (Timer C, registrations), ticking.
//!
//! Nothing may panic. Outputs are not checked here (the unit and integration tests do that);
//! this finds the inputs that break an invariant with a panic, an overflow or an index.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::calls::{CallsHandle, TrackerConfig};
use crate::directory::Directory;
use crate::edge::Front;
use crate::limit::{Rate, SourceLimiter};
use crate::proxy::{Local, Proxy};
use crate::routing::{DecisionLog, RedirectConfig, RedirectServer};
use crate::settings::{MappingInput, PortalSettings, TelephonyMode};
use crate::sip::core::digest::{self, Challenge};
use crate::sip::core::transaction::Timers;
use crate::sip::core::{write_response, HeaderName, Method, SipMessage};
use crate::sip::transport::{Outbox, Peer, SipHandler, Transport};
use crate::store::AgentCredential;
use crate::webrtc::media::{MediaAnchor, MediaConfig};
use crate::webrtc::mailbox::Resume;
use crate::webrtc::{Bridge, Credentials, MediaInbox, MediaMailbox, Registrar, RegistrarConfig};

/// Inputs in which agent 103's digest registration succeeded / a call had its media anchored
/// by the bridge (shown after a run: the deep paths must be reached, not only the parser).
pub(super) static REGISTERED: AtomicU64 = AtomicU64::new(0);
pub(super) static ANCHORED: AtomicU64 = AtomicU64::new(0);

/// Separates records in an input.
pub(super) const RS: u8 = 0x1e;

/// Where messages come from, by the low 3 bits of a record's first byte.
pub(super) const SOURCES: [(&str, Transport); 8] = [
    ("127.0.0.1:5080", Transport::Udp),  // 0: the PBX
    ("127.0.0.1:5080", Transport::Tcp),  // 1: the PBX over TCP
    ("127.0.0.2:5060", Transport::Udp),  // 2: 101's phone (its static contact)
    ("127.0.0.3:5060", Transport::Udp),  // 3: 102's phone (registers through callgate)
    ("127.0.0.4:40000", Transport::Ws),  // 4: agent 103 in a browser
    ("127.0.0.5:5060", Transport::Udp),  // 5: the attacker
    ("127.0.0.5:5070", Transport::Tcp),  // 6: the attacker over TCP
    ("127.0.0.5:40001", Transport::Ws),  // 7: the attacker over a WebSocket
];

/// Agent 103's password (its HA1 is in the credentials).
const PASSWORD: &str = "fuzz-password-103";
const REALM: &str = "office.bitrix24.ru";

/// The target body.
pub(super) fn edge(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else { return };
    let rt = runtime();
    let _enter = rt.enter();
    let core = Core::new(flags);
    let mut clock = 0u64;
    if flags & 1 != 0 {
        core.register_browser(clock);
    }
    for record in rest.split(|&b| b == RS) {
        let [ctl, step, msg @ ..] = record else { continue };
        clock = clock.saturating_add(if *step == 0xff { 64_000 } else { u64::from(*step) * 20 });
        let from = source(*ctl);
        let mut out = Outbox::new();
        if !msg.is_empty() {
            core.front.on_message(Bytes::copy_from_slice(msg), from, core.at(clock), &mut out);
            core.drive_media(clock, &mut out);
        }
        core.front.on_tick(core.at(clock), &mut out);
        core.answer(&mut out, *ctl, clock);
    }
    // Past Timer C (3 min), transaction timers and registrations (1 h).
    for later in [1_000, 33_000, 200_000, 4_000_000] {
        let mut out = Outbox::new();
        core.front.on_tick(core.at(clock.saturating_add(later)), &mut out);
    }
    core.close();
}

/// The peer of source `ctl & 7`.
fn source(ctl: u8) -> Peer {
    let (addr, transport) = SOURCES[usize::from(ctl & 7)];
    Peer { addr: addr.parse().expect("a constant address"), transport }
}

/// One runtime for the media work of every input (run from this thread, see `Core::drive_media`).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("a tokio runtime"))
}

/// A gateway core for one input.
struct Core {
    front: Front,
    bridge: Arc<Bridge>,
    /// The media mailbox's far end: its jobs run here, one after the other, on the input's clock.
    inbox: std::cell::RefCell<MediaInbox>,
    t0: Instant,
}

impl Core {
    fn new(flags: u8) -> Self {
        let t0 = Instant::now();
        let (directories, mapping_103) = directories();
        let directory = directories[usize::from(flags & 2 != 0)].clone();
        let credential = AgentCredential {
            portal: 1,
            mapping_id: *mapping_103,
            extension: "103".into(),
            realm: REALM.into(),
            ha1: digest::ha1(b"103", REALM.as_bytes(), PASSWORD.as_bytes()).as_str().to_owned(),
        };
        let calls = CallsHandle::new(TrackerConfig::default(), t0, 1_700_000_000_000);
        let local = Local { udp: Some(addr("127.0.0.1:5060")), tcp: Some(addr("127.0.0.1:5060")), tls: None, names: Vec::new() };
        let registrar = Arc::new(Registrar::new(directory.clone(), Arc::new(Credentials::new(vec![credential])), RegistrarConfig::default(), &[7; 32], t0));
        let redirect = RedirectServer::new(directory.clone(), RedirectConfig { no_decision_code: 404, max_remembered: 1_000 }, Arc::new(DecisionLog::new(100))).with_calls(calls.clone());
        let media = MediaConfig { webrtc_ports: (47_000, 47_031), rtp_ports: (37_000, 37_063), max_sessions: 16, ..MediaConfig::default() };
        let (anchor, _events) = runtime().block_on(MediaAnchor::start(media)).expect("a valid media config");
        let bridge = Arc::new(Bridge::new(anchor, Arc::clone(&registrar), directory.clone()));
        let proxy = Proxy::new(directory.clone(), local, calls, Timers::default())
            .with_agents(Arc::clone(&registrar) as Arc<dyn crate::proxy::AgentDirectory>)
            .with_route_key(crate::proxy::RouteKey::new(&[5; 32]))
            .with_local_final_hook(Arc::clone(&bridge) as Arc<dyn crate::proxy::LocalFinalHook>);
        let (mailbox, inbox) = MediaMailbox::new(4);
        let mut front = Front::new(directory, Arc::new(redirect), Arc::new(proxy)).with_websocket(registrar).with_media(Arc::clone(&bridge), mailbox);
        if flags & 4 != 0 {
            front = front.with_limiter(Arc::new(SourceLimiter::new(Rate::new(5.0, 10), Rate::new(100.0, 200), 64, t0)));
        }
        if flags & 8 != 0 {
            front = front.with_draining(Arc::new(std::sync::atomic::AtomicBool::new(true)));
        }
        Self { front, bridge, inbox: std::cell::RefCell::new(inbox), t0 }
    }

    /// Runs the media work the last message queued (and what its call's waiting messages
    /// queue in turn), as the media runtime would; what comes of it goes into `out`.
    fn drive_media(&self, clock: u64, out: &mut Outbox) {
        let mut inbox = self.inbox.borrow_mut();
        while let Some(job) = inbox.try_next() {
            let finished = runtime().block_on(job.run(self.bridge.anchor()));
            self.front.media_done(finished, self.at(clock), out);
        }
    }

    fn at(&self, ms: u64) -> Instant {
        self.t0.checked_add(Duration::from_millis(ms)).unwrap_or(self.t0)
    }

    /// Agent 103 registers over its WebSocket flow: challenged, then with the right digest.
    fn register_browser(&self, clock: u64) {
        let browser = source(4);
        let mut out = Outbox::new();
        let first = register_103(1, None);
        self.front.on_message(first, browser, self.at(clock), &mut out);
        let Ok(challenge) = SipMessage::parse(out.reply.split().freeze()) else { return };
        let Some(c) = challenge.header(HeaderName::WwwAuthenticate).and_then(Challenge::parse) else { return };
        let nonce = String::from_utf8_lossy(c.nonce).into_owned();
        let auth = digest::authorization("103", REALM, &nonce, &format!("sip:{REALM}"), "REGISTER", PASSWORD, Some((1, "fz")));
        out.clear();
        self.front.on_message(register_103(2, Some(&auth)), browser, self.at(clock), &mut out);
        if out.reply.starts_with(b"SIP/2.0 200") {
            REGISTERED.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every request in `out.sends` answered by its destination, as `ctl` says.
    fn answer(&self, out: &mut Outbox, ctl: u8, clock: u64) {
        let sent: Vec<(Peer, Bytes)> = out.sends.drain(..).collect();
        let mut back = Outbox::new();
        for (to, data) in sent {
            let Ok(req) = SipMessage::parse(data) else { continue };
            if !req.is_request() || req.method() == Some(Method::Ack) {
                continue;
            }
            for answer in answers(&req, to, ctl) {
                back.clear();
                self.front.on_message(answer, to, self.at(clock), &mut back);
                self.drive_media(clock, &mut back);
            }
        }
    }

    /// Ends the media sessions this input opened (their ports go back to the pool).
    fn close(&self) {
        let calls = self.bridge.calls();
        if !calls.is_empty() {
            ANCHORED.fetch_add(1, Ordering::Relaxed);
        }
        for (_, session) in calls {
            self.bridge.anchor().close(session);
        }
    }
}

/// Statuses a far end answers with, by bits 3-5 of a record's first byte (0: no answer).
const STATUSES: [u16; 8] = [200, 180, 100, 486, 407, 200, 503, 0];

/// `Expires` of a 200 to REGISTER, by bits 6-7: ordinary, removal, and two absurd values.
const EXPIRES: [&[u8]; 4] = [b"3600", b"0", b"18446744073709551615", b"4294967296"];

/// The far end's answers to `req` (a 180 is followed by a 200).
fn answers(req: &SipMessage, to: Peer, ctl: u8) -> Vec<Bytes> {
    let statuses: &[u16] = match STATUSES[usize::from((ctl >> 3) & 7)] {
        0 => &[],
        180 => &[180, 200],
        200 => &[200],
        100 => &[100],
        486 => &[486],
        407 => &[407],
        _ => &[503],
    };
    statuses.iter().map(|&s| response(req, s, to, ctl)).collect()
}

fn response(req: &SipMessage, status: u16, to: Peer, ctl: u8) -> Bytes {
    let contact = format!("<sip:far@{};transport={}>", to.addr, if to.transport.is_websocket() { "ws" } else { "udp" });
    let mut extra: Vec<(&str, &[u8])> = vec![("Contact", contact.as_bytes())];
    let method = req.method();
    if method == Some(Method::Register) && status == 200 {
        extra.push(("Expires", EXPIRES[usize::from(ctl >> 6)]));
    }
    if status == 407 {
        extra.push(("Proxy-Authenticate", b"Digest realm=\"pbx\", nonce=\"n1\", qop=\"auth\""));
    }
    let mut out = BytesMut::new();
    write_response(req, status, "Fuzz", Some(b"fz1"), &extra, &mut out);
    if method == Some(Method::Invite) && status == 200 {
        let sdp = if to.transport.is_websocket() { browser_sdp() } else { PBX_SDP.to_owned() };
        with_body(&mut out, &sdp);
    }
    out.freeze()
}

/// Replaces the empty body `write_response` wrote with an SDP one.
fn with_body(msg: &mut BytesMut, sdp: &str) {
    let empty = b"Content-Length: 0\r\n\r\n";
    if msg.ends_with(empty) {
        msg.truncate(msg.len() - empty.len());
        msg.extend_from_slice(format!("Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len()).as_bytes());
    }
}

fn register_103(cseq: u32, auth: Option<&str>) -> Bytes {
    let mut m = format!(
        "REGISTER sip:{REALM} SIP/2.0\r\nVia: SIP/2.0/WSS fz.invalid;branch=z9hG4bK-reg{cseq}\r\nMax-Forwards: 70\r\nTo: <sip:103@{REALM}>\r\nFrom: <sip:103@{REALM}>;tag=b103\r\nCall-ID: reg-103\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:b103@fz.invalid;transport=ws>;expires=600\r\n"
    );
    if let Some(a) = auth {
        m.push_str(&format!("Authorization: {a}\r\n"));
    }
    m.push_str("Content-Length: 0\r\n\r\n");
    Bytes::from(m)
}

/// The directories of every input, read-only: portal 1 in IP mode, then in WebRTC mode (and
/// the mapping id of extension 103). Built once through a SQLite store in a scratch folder, the
/// way the gateway loads its settings.
fn directories() -> &'static ([Directory; 2], i64) {
    static DIRS: OnceLock<([Directory; 2], i64)> = OnceLock::new();
    DIRS.get_or_init(|| {
        let scratch = std::env::temp_dir().join(format!("callgate-fuzz-edge-{}", std::process::id()));
        let built = build_directories(&scratch.join("callgate.db"));
        let _ = std::fs::remove_dir_all(&scratch);
        built.expect("the fuzz directory builds")
    })
}

fn build_directories(path: &std::path::Path) -> Result<([Directory; 2], i64), crate::store::StoreError> {
    use crate::store::{NewPortal, SqliteStore, Store, StoreHandle};
    let store = SqliteStore::open(path)?;
    let office = store.insert_portal(&NewPortal { name: None, domain: format!("https://{REALM}/"), auth: None })?;
    let branch = store.insert_portal(&NewPortal { name: None, domain: "https://branch.bitrix24.ru/".into(), auth: None })?;
    store.insert_mapping(office.id, &mapping(11, "101", Some("sip:101@127.0.0.2:5060")))?;
    store.insert_mapping(office.id, &mapping(12, "102", None))?;
    let browser = store.insert_mapping(office.id, &mapping(13, "103", None))?;
    // A second tenant on the same PBX address with its own extension 101.
    store.insert_mapping(branch.id, &mapping(21, "101", Some("sip:101@127.0.0.3:5062")))?;
    store.put_settings(branch.id, &settings(TelephonyMode::Ip))?;
    let store = StoreHandle::new(Arc::new(store));
    let mut dirs = [Directory::default(), Directory::default()];
    for (dir, mode) in dirs.iter_mut().zip([TelephonyMode::Ip, TelephonyMode::Webrtc]) {
        store.inner().put_settings(office.id, &settings(mode))?;
        dir.reload_blocking(&store)?;
    }
    Ok((dirs, browser.id))
}

fn settings(mode: TelephonyMode) -> PortalSettings {
    PortalSettings { active: true, pbx_host: "127.0.0.1:5080".into(), telephony_mode: mode, ..PortalSettings::default() }
}

fn mapping(user_id: u64, extension: &str, contact: Option<&str>) -> MappingInput {
    MappingInput { user_id, extension: extension.into(), use_for_personal_manager: true, contact: contact.map(Into::into) }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a constant address")
}

/// The PBX's (and phones') plain offer/answer.
pub(super) const PBX_SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n";

/// A browser's WebRTC offer/answer, shaped like Chrome's (trimmed).
pub(super) fn browser_sdp() -> String {
    let fingerprint: Vec<String> = (0..32).map(|i| format!("{:02X}", i * 7 % 256)).collect();
    format!(
        "v=0\r\no=- 46 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0 8 126\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\na=fingerprint:sha-256 {}\r\na=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:126 telephone-event/8000\r\na=candidate:1 1 udp 2122260223 127.0.0.4 50000 typ host\r\n",
        fingerprint.join(":")
    )
}

/// Seeds: valid sequences (a call from the PBX to 101 and its BYE, a redirect, an agent's call
/// out, 102 registering through callgate, agent 103's calls both ways in WebRTC mode, a REFER
/// in a dialog) and the review's attacks (an outsider's INVITE, a Route to a third party, a
/// REGISTER through an attacker's registrar with an absurd Expires, a forged response with a
/// second Via, responses over a WebSocket nobody registered).
pub(super) fn seeds() -> Vec<Vec<u8>> {
    let pbx_invite = |user: &str, cid: &str| invite(&format!("sip:{user}@127.0.0.1:5060"), "127.0.0.1:5080", "UDP", "79161234567", user, cid, PBX_SDP);
    let mut list = vec![
        // The customer calls 101 through the PBX (answered), then hangs up.
        seq(0, &[(0, 0, pbx_invite("101", "c1")), (0, 5, ack("sip:101@127.0.0.2:5060", "127.0.0.1:5080", "c1", "79161234567", "101")), (0, 50, bye("sip:101@127.0.0.2:5060", "127.0.0.1:5080", "c1", "79161234567", "101", 2))]),
        // A ringing call cancelled, then the redirect listener's decision.
        seq(8, &[(0, 0, pbx_invite("101", "c2")), (0, 10, cancel("sip:101@127.0.0.1:5060", "127.0.0.1:5080", "c2")), (0, 10, pbx_invite("pm-route", "c3"))]),
        // 101 calls out; the PBX answers; 101 hangs up.
        seq(0, &[(2, 0, invite("sip:79161234567@127.0.0.1:5060", "127.0.0.2:5060", "UDP", "101", "79161234567", "c4", PBX_SDP)), (2, 5, ack("sip:79161234567@127.0.0.1:5080", "127.0.0.2:5060", "c4", "101", "79161234567")), (2, 40, bye("sip:79161234567@127.0.0.1:5080", "127.0.0.2:5060", "c4", "101", "79161234567", 2))]),
        // 102 registers through callgate (the PBX's 200 binds it), then the PBX calls 102.
        seq(0, &[(3, 0, register("102", "127.0.0.3:5060", "UDP", None)), (0, 10, pbx_invite("102", "c5"))]),
        // F4: the PBX grants 102's registration for 18446744073709551615 seconds.
        seq(0, &[(0x83, 0, register("102", "127.0.0.3:5060", "UDP", None)), (3, 10, register("102", "127.0.0.3:5060", "UDP", None))]),
        // WebRTC mode, agent 103 registered: the PBX calls 103, then 103 calls out.
        seq(3, &[(0, 0, pbx_invite("103", "c6")), (4, 0, invite("sip:79161234567@office.bitrix24.ru", "fz.invalid", "WSS", "103", "79161234567", "c7", &browser_sdp()))]),
        // A REFER in an answered call (a blind transfer by 101).
        seq(0, &[(0, 0, pbx_invite("101", "c8")), (2, 10, refer("c8"))]),
        // F1: an outsider calls an international number.
        seq(0, &[(5, 0, invite("sip:0088216000001@127.0.0.1:5060", "127.0.0.5:5060", "UDP", "101", "0088216000001", "a1", PBX_SDP))]),
        // F3/F4: REGISTER routed to the attacker's registrar, answered with an absurd Expires.
        seq(0, &[(0x85, 0, register("101", "127.0.0.5:5060", "UDP", Some("<sip:127.0.0.1:5060;lr>, <sip:127.0.0.5:16200;lr>")))]),
        // F5: a response with a second Via to an internal TCP service.
        seq(0, &[(6, 0, b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-x, SIP/2.0/TCP 127.0.0.6:16300;branch=y\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: r\r\nCSeq: 1 OPTIONS\r\nContent-Length: 4\r\n\r\nPING".to_vec())]),
        // F6: a response over a WebSocket nobody registered, and an OPTIONS over TCP.
        seq(2, &[(7, 0, b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/WSS 127.0.0.1:5060;branch=z9hG4bK-1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: w\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n".to_vec()), (6, 1, options())]),
    ];
    // F2: INVITE to a third party through a Route naming callgate, with an auto-answer header.
    let relay = invite("sip:u@127.0.0.6:16101", "127.0.0.5:5060", "UDP", "101", "u", "a2", PBX_SDP).replacen(b"Max-Forwards", b"Route: <sip:127.0.0.1:5060;lr>\r\nCall-Info: <sip:x>;answer-after=0\r\nMax-Forwards");
    list.push(seq(0, &[(5, 0, relay)]));
    list
}

/// An input: `flags`, then `(source ctl, clock step, message)` records.
fn seq(flags: u8, records: &[(u8, u8, Vec<u8>)]) -> Vec<u8> {
    let mut v = vec![flags];
    for (ctl, step, msg) in records {
        v.push(RS);
        v.push(*ctl);
        v.push(*step);
        v.extend_from_slice(msg);
    }
    v
}

trait ReplaceBytes {
    fn replacen(self, from: &[u8], to: &[u8]) -> Vec<u8>;
}

impl ReplaceBytes for Vec<u8> {
    fn replacen(self, from: &[u8], to: &[u8]) -> Vec<u8> {
        match self.windows(from.len()).position(|w| w == from) {
            Some(i) => [&self[..i], to, &self[i + from.len()..]].concat(),
            None => self,
        }
    }
}

fn invite(ruri: &str, via: &str, transport: &str, from: &str, to: &str, cid: &str, sdp: &str) -> Vec<u8> {
    format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/{transport} {via};branch=z9hG4bK-{cid}-1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:{from}@127.0.0.1>;tag=f-{cid}\r\nTo: <sip:{to}@127.0.0.1>\r\nCall-ID: {cid}\r\nCSeq: 1 INVITE\r\nContact: <sip:{from}@{via};transport={}>\r\nX-Call-Id: x-{cid}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        transport.to_ascii_lowercase(),
        sdp.len()
    )
    .into_bytes()
}

fn ack(ruri: &str, via: &str, cid: &str, from: &str, to: &str) -> Vec<u8> {
    format!("ACK {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK-{cid}-ack\r\nRoute: <sip:127.0.0.1:5060;lr>\r\nMax-Forwards: 70\r\nFrom: <sip:{from}@127.0.0.1>;tag=f-{cid}\r\nTo: <sip:{to}@127.0.0.1>;tag=fz1\r\nCall-ID: {cid}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n").into_bytes()
}

fn bye(ruri: &str, via: &str, cid: &str, from: &str, to: &str, cseq: u32) -> Vec<u8> {
    format!("BYE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK-{cid}-bye\r\nRoute: <sip:127.0.0.1:5060;lr>\r\nMax-Forwards: 70\r\nFrom: <sip:{from}@127.0.0.1>;tag=f-{cid}\r\nTo: <sip:{to}@127.0.0.1>;tag=fz1\r\nCall-ID: {cid}\r\nCSeq: {cseq} BYE\r\nContent-Length: 0\r\n\r\n").into_bytes()
}

fn cancel(ruri: &str, via: &str, cid: &str) -> Vec<u8> {
    format!("CANCEL {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK-{cid}-1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:79161234567@127.0.0.1>;tag=f-{cid}\r\nTo: <sip:101@127.0.0.1>\r\nCall-ID: {cid}\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n").into_bytes()
}

fn refer(cid: &str) -> Vec<u8> {
    format!("REFER sip:79161234567@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-{cid}-refer\r\nRoute: <sip:127.0.0.1:5060;lr>\r\nMax-Forwards: 70\r\nFrom: <sip:101@127.0.0.1>;tag=fz1\r\nTo: <sip:79161234567@127.0.0.1>;tag=f-{cid}\r\nCall-ID: {cid}\r\nCSeq: 1 REFER\r\nRefer-To: <sip:102@127.0.0.1>\r\nReferred-By: <sip:101@127.0.0.1>\r\nContent-Length: 0\r\n\r\n").into_bytes()
}

fn register(ext: &str, via: &str, transport: &str, route: Option<&str>) -> Vec<u8> {
    let route = route.map(|r| format!("Route: {r}\r\n")).unwrap_or_default();
    format!("REGISTER sip:office.bitrix24.ru SIP/2.0\r\nVia: SIP/2.0/{transport} {via};branch=z9hG4bK-reg-{ext};rport\r\n{route}Max-Forwards: 70\r\nFrom: <sip:{ext}@office.bitrix24.ru>;tag=r{ext}\r\nTo: <sip:{ext}@office.bitrix24.ru>\r\nCall-ID: reg-{ext}\r\nCSeq: 1 REGISTER\r\nContact: <sip:{ext}@{via}>;expires=3600\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n").into_bytes()
}

fn options() -> Vec<u8> {
    b"OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.5:5070;branch=z9hG4bK-o1\r\nMax-Forwards: 70\r\nFrom: <sip:a@127.0.0.5>;tag=o\r\nTo: <sip:127.0.0.1>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n".to_vec()
}

/// Tokens the mutator splices into `edge` inputs (on top of the SIP ones): record separators
/// and source bytes, so mutations also reorder, add and re-route messages.
pub(super) const TOKENS: &[&[u8]] = &[
    &[RS, 0, 0],
    &[RS, 4, 1],
    &[RS, 5, 0xff],
    &[RS],
    b"Expires: 18446744073709551615\r\n",
    b";expires=4294967296",
    b"Session-Expires: 18446744073709551615\r\n",
    b"Min-SE: 99999999999999999999\r\n",
    b"Retry-After: 18446744073709551615\r\n",
    b"CSeq: 4294967295 INVITE",
    b"Max-Forwards: 4294967296",
    b"Route: <sip:127.0.0.1:5060;lr>\r\n",
    b"Record-Route: <sip:127.0.0.1:5060;lr>\r\n",
    b"Route: <sip:127.0.0.6:16300;transport=tcp;lr>\r\n",
    b"To: <sip:101@127.0.0.1>;tag=fz1\r\n",
    b"Via: SIP/2.0/TCP 127.0.0.6:16300;branch=z9hG4bK-v\r\n",
    b"sip:103@office.bitrix24.ru",
    b"sip:pm-route@127.0.0.1",
    b"Content-Type: application/sdp\r\n",
    b"m=audio 0 RTP/AVP 0\r\n",
    b"c=IN IP4 0.0.0.0\r\n",
    b"BYE ",
    b"REFER ",
    b"REGISTER ",
    b"SIP/2.0 200 OK\r\n",
];
