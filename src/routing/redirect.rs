//! The redirect listener (DESIGN.md §2.1): a stateless UAS in the RFC 3261 §8.2.7 sense that
//! answers a routing INVITE with 302 (Contact: the manager's extension at the PBX) or the
//! configured "no decision" status, from memory.
//!
//! Transaction handling kept deliberately small: every final answer to an INVITE is remembered
//! by transaction key (top Via branch + sent-by) until its ACK arrives or timer H (64·T1 = 32 s)
//! runs out, so a retransmitted INVITE gets the very same bytes again and no second decision.
//! The memory is bounded (`max_remembered`); past it, answers are still correct and the To-tag
//! still deterministic, only a retransmission would be decided afresh. ACK is absorbed; CANCEL
//! gets 200 when it matches an answered INVITE (nothing left to cancel) and 481 otherwise.

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;

use super::audit::{DecisionLog, DecisionRecord};
use super::decide::{decide, Decision};
use super::directory::{Directory, PortalEntry, Snapshot};
use super::metrics::RoutingMetrics;
use super::number::normalize_bytes;
use crate::sip::core::{to_tag_for, write_response, HeaderName, Method, NameAddr, SipMessage, Uri};
use crate::sip::transport::{Peer, SipHandler};

/// Timer H: how long an unacknowledged final answer is remembered (64·T1).
const TIMER_H: Duration = Duration::from_secs(32);

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
    answered: DashMap<u64, Answered>,
    keys: RandomState,
    metrics: RoutingMetrics,
    log: Arc<DecisionLog>,
}

struct Answered {
    response: Bytes,
    expires: Instant,
}

impl RedirectServer {
    /// A server reading `directory`, recording decisions into `log`.
    pub fn new(directory: Directory, cfg: RedirectConfig, log: Arc<DecisionLog>) -> Self {
        Self { directory, cfg, answered: DashMap::new(), keys: RandomState::new(), metrics: RoutingMetrics::new(), log }
    }

    /// Answered transactions currently remembered.
    pub fn remembered(&self) -> usize {
        self.answered.len()
    }

    fn handle(&self, msg: &SipMessage, peer: Peer, now: Instant, reply: &mut BytesMut) {
        let Some(method) = msg.method() else {
            self.metrics.stray_response.increment(1);
            return; // a response: a stateless redirect server sent no request
        };
        if method == Method::Ack {
            return self.absorb_ack(msg);
        }
        let snap = self.directory.snapshot();
        let portal = find_portal(&snap, msg);
        if !trusted(&snap, portal.as_deref(), peer.addr.ip()) {
            self.metrics.forbidden.increment(1);
            tracing::debug!(addr = %peer.addr, "request from an untrusted source refused");
            return write_response(msg, 403, "Forbidden", Some(&to_tag_for(msg)), &[], reply);
        }
        if msg.max_forwards() == Some(0) {
            return write_response(msg, 483, "Too Many Hops", Some(&to_tag_for(msg)), &[], reply);
        }
        match method {
            Method::Invite => self.invite(msg, &snap, portal.as_deref(), peer, now, reply),
            Method::Cancel => {
                let known = self.answered.contains_key(&tx_key(&self.keys, msg));
                let (code, text) = if known { (200, "OK") } else { (481, "Call/Transaction Does Not Exist") };
                write_response(msg, code, text, Some(&to_tag_for(msg)), &[], reply);
            }
            Method::Options => write_response(msg, 200, "OK", Some(&to_tag_for(msg)), &[("Allow", ALLOW), ("Accept", b"application/sdp")], reply),
            _ => write_response(msg, 405, "Method Not Allowed", Some(&to_tag_for(msg)), &[("Allow", ALLOW)], reply),
        }
    }

    fn invite(&self, msg: &SipMessage, snap: &Snapshot, portal: Option<&PortalEntry>, peer: Peer, now: Instant, reply: &mut BytesMut) {
        let key = tx_key(&self.keys, msg);
        if let Some(prev) = self.answered.get(&key) {
            self.metrics.retransmission.increment(1);
            reply.extend_from_slice(&prev.response);
            return;
        }
        let ruri_user = msg.request_uri().and_then(Uri::parse).and_then(|u| u.user).unwrap_or_default();
        let is_routing = match portal {
            Some(p) => p.portal.settings.routing_user.as_bytes() == ruri_user,
            None => snap.portals.values().any(|p| p.portal.settings.routing_user.as_bytes() == ruri_user),
        };
        if !is_routing {
            self.metrics.not_routing.increment(1);
            return write_response(msg, 404, "Not Found", Some(&to_tag_for(msg)), &[], reply);
        }
        let caller_user = caller_user(msg);
        let caller = normalize_bytes(caller_user);
        let manager = match (portal, caller) {
            (Some(p), Some(n)) => self.directory.index().lookup(p.portal.id, n.as_u64()),
            _ => None,
        };
        let decision = decide(portal, caller, caller_user, manager);
        let reason = decision.reason();
        let tag = to_tag_for(msg);
        let target = match decision {
            Decision::Redirect { mapping } => {
                let redirect = portal.and_then(|p| p.redirects.get(&mapping.user_id));
                let contact = redirect.map_or(&b""[..], |r| r.contact.as_bytes());
                write_response(msg, 302, "Moved Temporarily", Some(&tag), &[("Contact", contact), ("X-Callgate-Reason", reason.as_str().as_bytes())], reply);
                redirect.map(|r| Arc::clone(&r.extension))
            }
            Decision::NoDecision(r) => {
                write_response(msg, self.cfg.no_decision_code, no_decision_text(self.cfg.no_decision_code), Some(&tag), &[("X-Callgate-Reason", r.as_str().as_bytes())], reply);
                None
            }
        };
        self.metrics.decision(reason);
        self.remember(key, reply, now);
        self.log.push(DecisionRecord::new(msg, portal.map(|p| p.portal.id), caller, manager, target, reason, peer));
    }

    /// ACK is never answered (RFC 3261 §17.2.1), whoever sends it: it only ends a remembered
    /// transaction.
    fn absorb_ack(&self, msg: &SipMessage) {
        if self.answered.remove(&tx_key(&self.keys, msg)).is_some() {
            self.metrics.ack_absorbed.increment(1);
        }
    }

    fn remember(&self, key: u64, reply: &BytesMut, now: Instant) {
        if self.answered.len() >= self.cfg.max_remembered {
            self.metrics.remember_full.increment(1);
            return;
        }
        self.answered.insert(key, Answered { response: Bytes::copy_from_slice(reply), expires: now + TIMER_H });
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
    fn on_message(&self, data: Bytes, peer: Peer, now: Instant, reply: &mut BytesMut) {
        // Every look-up is followed by an ACK that is never answered and only needs the top
        // Via: index it without the semantic checks (about half the parse cost).
        if data.starts_with(b"ACK ") {
            if let Ok(msg) = SipMessage::parse_unvalidated(data) {
                self.absorb_ack(&msg);
            }
            return;
        }
        match SipMessage::parse(data.clone()) {
            Ok(msg) => self.handle(&msg, peer, now, reply),
            Err(e) => {
                // A malformed request that still has what a response needs gets a 400 with the
                // reason; anything else is dropped. Both are counted.
                self.metrics.malformed.increment(1);
                tracing::debug!(addr = %peer.addr, error = %e, "malformed SIP message");
                crate::sip::core::write_bad_request(&data, &e, reply);
            }
        }
    }

    fn on_bad_frame(&self, head: &[u8], _peer: Peer, reply: &mut BytesMut) {
        // Only the header section: the body length is exactly what is in doubt.
        let end = memchr::memmem::find(head, b"\r\n\r\n").map_or(head.len(), |i| i + 4);
        crate::sip::core::write_bad_request(&head[..end], &crate::sip::core::ParseError::BadContentLength, reply);
    }

    fn on_tick(&self, now: Instant) {
        self.answered.retain(|_, a| a.expires > now);
    }
}

/// The transaction key: top Via branch and sent-by (RFC 3261 §17.2.3). Without an RFC 3261
/// branch, Call-ID + From tag + CSeq number stand in (RFC 2543 matching).
/// Keyed with a per-process random SipHash key, so a sender cannot craft two transactions that
/// collide and receive each other's answers.
fn tx_key(keys: &RandomState, msg: &SipMessage) -> u64 {
    match msg.top_via() {
        Some(via) if via.branch.is_some_and(|b| b.starts_with(b"z9hG4bK")) => keys.hash_one((via.branch, via.host, via.port)),
        _ => keys.hash_one((msg.call_id(), msg.from().and_then(|f| f.tag), msg.cseq().map(|c| c.seq))),
    }
}

/// The caller's user part: P-Asserted-Identity first (the PBX's trusted caller id), else From.
fn caller_user(msg: &SipMessage) -> &[u8] {
    msg.header(HeaderName::PAssertedIdentity)
        .and_then(NameAddr::parse)
        .and_then(|n| n.uri.user)
        .or_else(|| msg.from().and_then(|f| f.uri.user))
        .unwrap_or_default()
}

/// Portal by called line (Request-URI user, To user, Diversion users); the only portal otherwise.
fn find_portal(snap: &Snapshot, msg: &SipMessage) -> Option<Arc<PortalEntry>> {
    let by_number = |user: Option<&[u8]>| {
        let n = normalize_bytes(user?)?;
        snap.by_line.get(&n.as_u64()).and_then(|id| snap.portals.get(id)).cloned()
    };
    by_number(msg.request_uri().and_then(Uri::parse).and_then(|u| u.user))
        .or_else(|| by_number(msg.to().and_then(|t| t.uri.user)))
        .or_else(|| msg.headers(HeaderName::Diversion).filter_map(NameAddr::parse).find_map(|d| by_number(d.uri.user)))
        .or_else(|| snap.single().cloned())
}

/// A request is trusted when its portal trusts the source; without a portal, when any does.
fn trusted(snap: &Snapshot, portal: Option<&PortalEntry>, ip: IpAddr) -> bool {
    match portal {
        Some(p) => p.trusts(ip),
        None => snap.portals.values().any(|p| p.trusts(ip)),
    }
}
