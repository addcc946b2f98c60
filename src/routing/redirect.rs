//! The redirect listener (DESIGN.md §2.1): a stateless UAS in the RFC 3261 §8.2.7 sense that
//! answers a routing INVITE with 302 (Contact: the manager's extension at the PBX) or the
//! configured "no decision" status, from memory.
//!
//! Transaction handling kept deliberately small: every final answer to an INVITE is remembered
//! by transaction key (top Via branch + sent-by) until its ACK arrives or timer H (64·T1 = 32 s)
//! runs out, so a retransmitted INVITE gets the very same bytes again and no second decision.
//! What is remembered is the answer (the Contact or the reason), not its bytes: a retransmission
//! is the same request, and the To-tag comes from the transaction key, so writing the answer
//! again gives the same bytes without an allocation and a copy on every decision.
//! The memory is bounded (`max_remembered`); past it, answers are still correct and the To-tag
//! still deterministic, only a retransmission would be decided afresh. ACK is absorbed; CANCEL
//! gets 200 when it matches an answered INVITE (nothing left to cancel) and 481 otherwise.

use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use foldhash::quality::RandomState;

use super::audit::{DecisionLog, DecisionRecord};
use super::decide::{decide, Decision, Reason};
use super::metrics::RoutingMetrics;
use crate::calls::{CallsHandle, Event};
use crate::directory::{Directory, PortalEntry, Snapshot};
use crate::phone::{normalize_bytes, number_text};
use crate::sip::core::{to_tag_for, write_response, HeaderName, Method, NameAddr, SipMessage, Uri};
use crate::sip::transport::{Outbox, Peer, SipHandler};

/// Timer H: how long an unacknowledged final answer is remembered (64·T1).
const TIMER_H: Duration = Duration::from_secs(32);
/// How often remembered answers are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Redirect server settings.
#[derive(Debug, Clone, Copy)]
pub struct RedirectConfig {
    /// Status of "no decision".
    pub no_decision_code: u16,
    /// Answered transactions remembered at most.
    pub max_remembered: usize,
}

/// The redirect listener's logic.
pub struct RedirectServer {
    directory: Directory,
    cfg: RedirectConfig,
    /// Keyed by [`tx_key`], already a seeded hash: the map hashes no further.
    answered: DashMap<u64, Answered, BuildHasherDefault<PreHashed>>,
    keys: RandomState,
    metrics: RoutingMetrics,
    log: Arc<DecisionLog>,
    /// Where decisions are reported as the start of a customer call.
    calls: Option<CallsHandle>,
    /// When `answered` was last swept; the lock only serialises the (rare) sweep decision.
    last_sweep: parking_lot::Mutex<Option<Instant>>,
}

struct Answered {
    answer: Answer,
    expires: Instant,
}

/// A final answer to a routing INVITE, enough to write it again.
#[derive(Clone)]
enum Answer {
    /// 302 to this Contact (shared with the directory's entry; empty if the mapping vanished).
    Redirect(Option<Arc<str>>),
    /// The configured "no decision" status, with this reason.
    NoDecision(Reason),
}

impl RedirectServer {
    /// A server reading `directory`, recording decisions into `log`.
    pub fn new(directory: Directory, cfg: RedirectConfig, log: Arc<DecisionLog>) -> Self {
        Self { directory, cfg, answered: DashMap::default(), keys: RandomState::default(), metrics: RoutingMetrics::new(), log, calls: None, last_sweep: parking_lot::Mutex::new(None) }
    }

    /// Reports every decision to the call tracker (a `Routed` event).
    #[must_use]
    pub fn with_calls(mut self, calls: CallsHandle) -> Self {
        self.calls = Some(calls);
        self
    }

    /// Answered transactions currently remembered.
    pub fn remembered(&self) -> usize {
        self.answered.len()
    }

    fn handle(&self, msg: &SipMessage, snap: &Snapshot, peer: Peer, now: Instant, reply: &mut BytesMut) {
        let Some(method) = msg.method() else {
            self.metrics.stray_response.increment(1);
            return; // a response: a stateless redirect server sent no request
        };
        if method == Method::Ack {
            return self.absorb_ack(msg);
        }
        let portal = find_portal(snap, msg);
        if !snap.trusts(portal.map(AsRef::as_ref), peer.addr.ip()) {
            self.metrics.forbidden.increment(1);
            tracing::debug!(addr = %peer.addr, "request from an untrusted source refused");
            return write_response(msg, 403, "Forbidden", Some(&to_tag_for(msg)), &[], reply);
        }
        if msg.max_forwards() == Some(0) {
            return write_response(msg, 483, "Too Many Hops", Some(&to_tag_for(msg)), &[], reply);
        }
        match method {
            Method::Invite => self.invite(msg, snap, portal.map(AsRef::as_ref), now, reply),
            Method::Cancel => {
                let known = self.answered.contains_key(&tx_key(&self.keys, msg));
                let (code, text) = if known { (200, "OK") } else { (481, "Call/Transaction Does Not Exist") };
                write_response(msg, code, text, Some(&to_tag_for(msg)), &[], reply);
            }
            Method::Options => write_response(msg, 200, "OK", Some(&to_tag_for(msg)), &[("Allow", ALLOW), ("Accept", b"application/sdp")], reply),
            _ => write_response(msg, 405, "Method Not Allowed", Some(&to_tag_for(msg)), &[("Allow", ALLOW)], reply),
        }
    }

    fn invite(&self, msg: &SipMessage, snap: &Snapshot, portal: Option<&PortalEntry>, now: Instant, reply: &mut BytesMut) {
        // The caller first: the index's cache line then loads while the transaction is checked.
        let caller_user = caller_user(msg);
        let caller = normalize_bytes(caller_user);
        self.directory.prefetch_manager(portal, caller);
        let key = tx_key(&self.keys, msg);
        let tag = to_tag(key);
        if let Some(prev) = self.answered.get(&key) {
            self.metrics.retransmission.increment(1);
            let answer = prev.answer.clone();
            drop(prev); // the map's shard lock is not held while writing
            return self.write_answer(msg, &tag, &answer, reply);
        }
        let ruri_user = msg.request_uri().and_then(Uri::user_of).unwrap_or_default();
        let is_routing = match portal {
            Some(p) => p.portal.settings.routing_user.as_bytes() == ruri_user,
            None => snap.portals.values().any(|p| p.portal.settings.routing_user.as_bytes() == ruri_user),
        };
        if !is_routing {
            self.metrics.not_routing.increment(1);
            return write_response(msg, 404, "Not Found", Some(&tag), &[], reply);
        }
        let manager = self.directory.manager_of(portal, caller);
        let decision = decide(portal, caller, caller_user, manager);
        let reason = decision.reason();
        let (answer, target) = match decision {
            Decision::Redirect { mapping } => {
                let redirect = portal.and_then(|p| p.redirects.get(&mapping.user_id));
                (Answer::Redirect(redirect.map(|r| Arc::clone(&r.contact))), redirect.map(|r| Arc::clone(&r.extension)))
            }
            Decision::NoDecision(r) => (Answer::NoDecision(r), None),
        };
        self.write_answer(msg, &tag, &answer, reply);
        self.metrics.decision(reason);
        self.remember(key, answer, now);
        if let (Some(calls), Some(p)) = (&self.calls, portal) {
            calls.feed(now, [routed_event(msg, p, number_text(caller, caller_user), manager, target.clone())]);
        }
        self.log.push(DecisionRecord::new(msg.call_id().unwrap_or_default(), portal.map(|p| p.portal.id), caller, manager, target, reason, "sip"));
    }

    /// ACK is never answered (RFC 3261 §17.2.1), whoever sends it: it only ends a remembered
    /// transaction.
    fn absorb_ack(&self, msg: &SipMessage) {
        self.absorb(tx_key(&self.keys, msg));
    }

    /// Ends the remembered transaction `key`, if any.
    fn absorb(&self, key: u64) {
        if self.answered.remove(&key).is_some() {
            self.metrics.ack_absorbed.increment(1);
        }
    }

    /// [`SipHandler::on_message`] with the directory snapshot the caller already holds (the
    /// edge front loads one per message for its own checks; one load instead of two).
    pub fn on_message_in(&self, snap: &Snapshot, data: Bytes, peer: Peer, now: Instant, out: &mut Outbox) {
        let reply = &mut out.reply;
        // Every look-up is followed by an ACK that is never answered and only needs the top
        // Via: find that line alone (no header index at all); anything unusual (no RFC 3261
        // branch, a folded Via) takes the indexed path.
        if data.starts_with(b"ACK ") {
            if let Some(key) = crate::sip::core::raw_top_via(&data).and_then(branch_and_sent_by).map(|bs| self.keys.hash_one(bs)) {
                self.absorb(key);
            } else if let Ok(msg) = SipMessage::parse_unvalidated(data) {
                self.absorb_ack(&msg);
            }
            return;
        }
        // Matched by reference: the ~1 KB message is not moved out of the `Result` again.
        match &SipMessage::parse_or_return(data) {
            Ok(msg) => self.handle(msg, snap, peer, now, reply),
            Err((e, data)) => {
                // A malformed request that still has what a response needs gets a 400 with the
                // reason; anything else is dropped. Both are counted.
                self.metrics.malformed.increment(1);
                tracing::debug!(addr = %peer.addr, error = %e, "malformed SIP message");
                crate::sip::core::write_bad_request(data, e, reply);
            }
        }
    }

    fn write_answer(&self, msg: &SipMessage, tag: &[u8], answer: &Answer, reply: &mut BytesMut) {
        match answer {
            Answer::Redirect(contact) => {
                let contact = contact.as_deref().map_or(&b""[..], str::as_bytes);
                write_response(msg, 302, "Moved Temporarily", Some(tag), &[("Contact", contact), ("X-Callgate-Reason", Reason::PersonalManager.as_str().as_bytes())], reply);
            }
            Answer::NoDecision(r) => {
                let code = self.cfg.no_decision_code;
                write_response(msg, code, no_decision_text(code), Some(tag), &[("X-Callgate-Reason", r.as_str().as_bytes())], reply);
            }
        }
    }

    fn remember(&self, key: u64, answer: Answer, now: Instant) {
        if self.answered.len() >= self.cfg.max_remembered {
            self.metrics.remember_full.increment(1);
            return;
        }
        self.answered.insert(key, Answered { answer, expires: now.checked_add(TIMER_H).unwrap_or(now) });
    }
}

const ALLOW: &[u8] = b"INVITE, ACK, CANCEL, OPTIONS";

fn no_decision_text(code: u16) -> &'static str {
    match code {
        404 => "No Personal Manager",
        480 => "Temporarily Unavailable",
        486 => "Busy Here",
        _ => "No Decision",
    }
}

impl SipHandler for RedirectServer {
    fn on_message(&self, data: Bytes, peer: Peer, now: Instant, out: &mut Outbox) {
        self.on_message_in(&self.directory.snapshot(), data, peer, now, out);
    }

    fn on_bad_frame(&self, head: &[u8], _peer: Peer, reply: &mut BytesMut) {
        crate::sip::core::write_bad_frame(head, reply);
    }

    fn on_tick(&self, now: Instant, _out: &mut Outbox) {
        // Sweeping is a full scan: once a second is plenty for a 32 s memory.
        let mut last = self.last_sweep.lock();
        if last.is_some_and(|t| now.saturating_duration_since(t) < SWEEP_EVERY) {
            return;
        }
        *last = Some(now);
        drop(last);
        self.answered.retain(|_, a| a.expires > now);
    }
}

/// The hasher of the `answered` map: its keys are [`tx_key`] values, uniformly spread and
/// unpredictable to senders already, so the key is its own hash.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; anything else still spreads (FNV-1a).
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The transaction key: top Via branch and sent-by (RFC 3261 §17.2.3). Without an RFC 3261
/// branch, Call-ID + From tag + CSeq number stand in (RFC 2543 matching).
/// The To-tag of our answer: derived from the transaction key, so a retransmission (same key)
/// gets the same tag, as a stateless UAS must (RFC 3261 §8.2.7).
fn to_tag(key: u64) -> [u8; 16] {
    let mut tag = [0u8; 16];
    for (i, b) in tag.iter_mut().enumerate() {
        *b = b"0123456789abcdef"[((key >> (60 - 4 * i)) & 0xf) as usize];
    }
    tag
}

/// Keyed with a per-process random seed (foldhash, about 5x cheaper than std's SipHash here), so
/// a sender cannot predict keys and craft two transactions that collide; only trusted PBX
/// addresses get this far for an INVITE anyway. Found by a scan of the raw top Via value rather than
/// a full Via parse: this runs for every INVITE and every ACK.
fn tx_key(keys: &RandomState, msg: &SipMessage) -> u64 {
    match msg.header(HeaderName::Via).and_then(branch_and_sent_by) {
        Some((branch, sent_by)) => keys.hash_one((branch, sent_by)),
        None => keys.hash_one((msg.call_id(), msg.from().and_then(|f| f.tag), msg.cseq().map(|c| c.seq))),
    }
}

/// From the first value of a Via line (`SIP/2.0/UDP host:port;branch=z9hG4bK..;rport, ...`):
/// the RFC 3261 branch and the sent-by, or `None` without a magic-cookie branch.
fn branch_and_sent_by(via: &[u8]) -> Option<(&[u8], &[u8])> {
    // memchr jumps rather than byte-wise splitting: this runs for every INVITE and ACK.
    let first = via.get(..memchr::memchr(b',', via).unwrap_or(via.len()))?;
    let semi = memchr::memchr(b';', first)?; // no parameters: no branch
    let (proto_and_host, mut params) = (first.get(..semi)?, first.get(semi + 1..)?);
    let sent_by = proto_and_host.trim_ascii().rsplit(|b| b.is_ascii_whitespace()).next()?;
    let branch = loop {
        let end = memchr::memchr(b';', params).unwrap_or(params.len());
        let p = params.get(..end)?.trim_ascii();
        match p.split_at_checked(7) {
            Some((name, value)) if !value.is_empty() && name.eq_ignore_ascii_case(b"branch=") => break value.trim_ascii(),
            _ => params = params.get(end + 1..)?,
        }
    };
    branch.starts_with(b"z9hG4bK").then_some((branch, sent_by))
}

/// The decision as the tracker's `Routed` event: the PBX's call id (the portal's correlation
/// header), the caller, the called line (To user, when it is one of the portal's lines).
fn routed_event(msg: &SipMessage, portal: &PortalEntry, caller: Arc<str>, manager: Option<crate::settings::UserId>, extension: Option<Arc<str>>) -> Event {
    let line = msg.to_user_tag().and_then(|t| t.user).filter(|u| normalize_bytes(u).is_some_and(|n| portal.lines.contains_key(&n.as_u64())));
    let line = line.map(|u| Arc::<str>::from(String::from_utf8_lossy(u).as_ref()));
    Event::Routed { portal: portal.portal.id, correlation: portal.correlation(msg), caller, line, manager, extension }
}

/// The caller's user part: P-Asserted-Identity first (the PBX's trusted caller id), else From.
fn caller_user(msg: &SipMessage) -> &[u8] {
    msg.header(HeaderName::PAssertedIdentity)
        .and_then(NameAddr::user_of)
        .or_else(|| msg.from_user_tag().and_then(|f| f.user))
        .unwrap_or_default()
}

/// Portal by called line (Request-URI user, To user, Diversion users); the only portal otherwise.
fn find_portal<'s>(snap: &'s Snapshot, msg: &SipMessage) -> Option<&'s Arc<PortalEntry>> {
    if snap.by_line.is_empty() {
        return snap.single(); // no lines configured: nothing to look up
    }
    let by_number = |user: Option<&[u8]>| snap.by_line_number(normalize_bytes(user?)?);
    by_number(msg.request_uri().and_then(Uri::user_of))
        .or_else(|| by_number(msg.to_user_tag().and_then(|t| t.user)))
        .or_else(|| msg.headers(HeaderName::Diversion).filter_map(NameAddr::parse).find_map(|d| by_number(d.uri.user)))
        .or_else(|| snap.single())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_and_sent_by_from_raw_via() {
        type Case<'a> = (&'a [u8], Option<(&'a [u8], &'a [u8])>);
        let cases: &[Case<'_>] = &[
            (b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1-0", Some((b"z9hG4bK-1-0", b"127.0.0.1:5060"))),
            (b"SIP/2.0/TCP  pbx.example.com ; rport ; Branch=z9hG4bKx , SIP/2.0/UDP b;branch=z9hG4bKy", Some((b"z9hG4bKx", b"pbx.example.com"))),
            (b"SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bKv6;received=10.0.0.1", Some((b"z9hG4bKv6", b"[2001:db8::1]:5060"))),
            (b"SIP/2.0/UDP 10.0.0.1;branch=1234", None), // RFC 2543 branch: matched otherwise
            (b"SIP/2.0/UDP 10.0.0.1", None),
            (b"", None),
        ];
        for (via, want) in cases {
            assert_eq!(branch_and_sent_by(via), *want, "{}", String::from_utf8_lossy(via));
        }
    }

    #[test]
    fn the_ack_fast_path_finds_the_same_transaction_key_as_the_full_parse() {
        let keys = RandomState::default();
        let acks: &[&str] = &[
            "ACK sip:pm-route@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:pm-route@c>;tag=2\r\nCall-ID: x\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            "ACK sip:pm-route@127.0.0.1 SIP/2.0\r\nFrom: <sip:a@b>;tag=1\r\nv : SIP/2.0/UDP [::1]:5061 ; branch=z9hG4bKz, SIP/2.0/UDP other;branch=z9hG4bKy\r\nTo: <sip:pm-route@c>;tag=2\r\nCall-ID: x\r\nCSeq: 1 ACK\r\n\r\n",
        ];
        for ack in acks {
            let fast = crate::sip::core::raw_top_via(ack.as_bytes()).and_then(branch_and_sent_by).map(|bs| keys.hash_one(bs));
            let msg = SipMessage::parse_unvalidated(Bytes::copy_from_slice(ack.as_bytes())).unwrap();
            assert_eq!(fast, Some(tx_key(&keys, &msg)), "{ack}");
        }
        let folded = "ACK sip:x@y SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\n ,SIP/2.0/UDP b\r\n\r\n";
        assert_eq!(crate::sip::core::raw_top_via(folded.as_bytes()), None, "folded lines take the full parse");
    }

    #[test]
    fn to_tag_is_hex_of_the_key() {
        assert_eq!(&to_tag(0x0123_4567_89ab_cdef), b"0123456789abcdef");
        assert_eq!(to_tag(7), to_tag(7));
    }
}
