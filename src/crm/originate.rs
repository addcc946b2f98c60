//! Click-to-call origination (DESIGN.md §5, click-to-call row) as the simplest standards-based
//! thing: callgate acts as a UAC on a UDP socket of its own, rings the agent's phone (From: the
//! customer's number, so the phone shows whom it will call; `Call-Info: answer-after=0` asks
//! for auto-answer), and once the agent answers sends `REFER` (`Refer-To:
//! <sip:NUMBER@pbx_host>`, RFC 3515) so that the phone places the outgoing call itself, through
//! its outbound proxy, callgate's edge proxy; then it hangs up its own dialog (`BYE`). The
//! tracker sees only the phone's outgoing call, which the outbox rules match to the pending
//! click.
//!
//! Scope: phones reached at a static contact (`sip:EXT@IP:PORT` in the mapping) over UDP;
//! phones that only register are not reached yet (their binding lives in the proxy's registrar).
//! No media: the offer is `a=inactive`. The phone's NOTIFYs (and anything else it sends) are
//! answered 200 while the dialog lasts; callgate does not wait for them.
//!
//! Shape: `Leg` builds the messages (pure, tested); [`SipOriginator`] drives them with
//! RFC 3261 timers (A/E retransmission from 500 ms, B/F 32 s), a CANCEL when the agent does not
//! answer in time, and the ACK for every final answer.
//!
//! Bounded: at most [`MAX_ORIGINATIONS`] at once (each holds a socket for up to the answer
//! timeout plus Timer B), and one per agent (a phone rung for a click is busy for the next):
//! beyond that a click fails at once with `503` or `486`, its finish status.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::events::{Originate, OriginateFuture, PendingClick};
use crate::directory::PortalEntry;
use crate::settings::PortalId;
use crate::sip::core::{write_response, HeaderName, Method, SipMessage, Uri};

/// Timer T1 (RFC 3261).
const T1: Duration = Duration::from_millis(500);
/// Timer T2.
const T2: Duration = Duration::from_secs(4);
/// Timers B and F: 64·T1.
const TIMER_B: Duration = Duration::from_secs(32);

/// Originations in flight at most.
pub const MAX_ORIGINATIONS: usize = 64;

/// Originates over UDP from an ephemeral socket.
#[derive(Debug, Clone)]
pub struct SipOriginator {
    /// How long the agent's phone may ring before the INVITE is cancelled.
    pub answer_timeout: Duration,
    in_flight: Arc<InFlight>,
}

impl Default for SipOriginator {
    fn default() -> Self {
        Self {
            answer_timeout: Duration::from_secs(30),
            in_flight: Arc::new(InFlight {
                slots: Arc::new(Semaphore::new(MAX_ORIGINATIONS)),
                agents: Mutex::new(HashSet::new()),
            }),
        }
    }
}

/// What is being originated now.
#[derive(Debug)]
struct InFlight {
    slots: Arc<Semaphore>,
    /// Agents being rung (portal, extension); short critical sections.
    agents: Mutex<HashSet<(PortalId, String)>>,
}

/// One origination's claim on a slot and on its agent; released on drop.
struct Claim {
    in_flight: Arc<InFlight>,
    agent: (PortalId, String),
    _slot: OwnedSemaphorePermit,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.in_flight.agents.lock().remove(&self.agent);
    }
}

impl InFlight {
    /// A slot and the agent, or the finish status of a click that cannot be placed now.
    fn claim(self: &Arc<Self>, portal: PortalId, extension: &str) -> Result<Claim, Failure> {
        let slot = Arc::clone(&self.slots).try_acquire_owned().map_err(|_| {
            (
                "503",
                format!("{MAX_ORIGINATIONS} click-to-calls are being placed already"),
            )
        })?;
        let agent = (portal, extension.to_owned());
        if !self.agents.lock().insert(agent.clone()) {
            return Err((
                "486",
                "the agent is being rung for another click-to-call".to_owned(),
            ));
        }
        Ok(Claim {
            in_flight: Arc::clone(self),
            agent,
            _slot: slot,
        })
    }
}

impl Originate for SipOriginator {
    fn originate<'a>(
        &'a self,
        portal: &'a PortalEntry,
        click: &'a PendingClick,
    ) -> OriginateFuture<'a> {
        Box::pin(async move {
            let outcome = self.run(portal, click).await;
            if let Err((status, why)) = &outcome {
                tracing::warn!(portal = click.portal, extension = %click.extension, status, reason = %why, "click-to-call origination failed");
            }
            outcome.map_err(|(status, _)| status.to_owned())
        })
    }
}

/// A failed origination: the finish STATUS_CODE and why.
type Failure = (&'static str, String);

impl SipOriginator {
    async fn run(&self, portal: &PortalEntry, click: &PendingClick) -> Result<(), Failure> {
        let _claim = self.in_flight.claim(click.portal, &click.extension)?;
        let mapping = portal
            .by_extension
            .get(&click.extension)
            .ok_or(("603-S", "the extension is no longer mapped".to_owned()))?;
        let contact = mapping.contact.as_deref().ok_or((
            "603-S",
            "the extension has no static contact (registered-only phones are not supported)"
                .to_owned(),
        ))?;
        let (target, uri) = udp_target(contact).ok_or((
            "603-S",
            format!("the contact {contact} is not a sip: URI with an IP address over UDP"),
        ))?;
        let io = |e: std::io::Error| ("603-S", format!("socket: {e}"));
        let bind: SocketAddr = if target.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let sock = UdpSocket::bind(bind).await.map_err(io)?;
        sock.connect(target).await.map_err(io)?;
        let local = sock.local_addr().map_err(io)?;
        let mut leg = Leg::new(
            local,
            &uri,
            &click.extension,
            &click.number.to_string(),
            portal.portal.settings.pbx_host_port(),
        );
        let mut tx = Transport {
            sock,
            buf: vec![0; 65_536],
        };
        tracing::info!(portal = click.portal, extension = %click.extension, "click-to-call: ringing the agent");
        let answer = self.invite(&mut tx, &mut leg).await?;
        leg.answered(&answer);
        tx.send(&leg.ack()).await;
        let branch = leg.branch();
        let refer = tx
            .transact(&leg.refer(&branch), &branch, Method::Refer, TIMER_B)
            .await;
        let branch = leg.branch();
        let _ = tx
            .transact(&leg.bye(&branch), &branch, Method::Bye, TIMER_B)
            .await;
        match refer {
            Some(s) if (200..300).contains(&s) => {
                tracing::info!(portal = click.portal, extension = %click.extension, "click-to-call: the agent's phone accepted the REFER");
                Ok(())
            }
            Some(s) => Err(("603-S", format!("the phone refused the REFER with {s}"))),
            None => Err(("603-S", "the phone did not answer the REFER".to_owned())),
        }
    }

    /// The INVITE transaction; `Ok` with the 2xx, `Err` after ACKing a failure (or cancelling).
    async fn invite(&self, tx: &mut Transport, leg: &mut Leg) -> Result<SipMessage, Failure> {
        let branch = leg.branch();
        let invite = leg.invite(&branch);
        let started = Instant::now();
        let (mut rto, mut next, mut ringing) = (T1, started + T1, false);
        // Set once the INVITE is cancelled: how long to wait for its 487 (to ACK it).
        let mut cancelled: Option<Instant> = None;
        tx.send(&invite).await;
        loop {
            let deadline = match cancelled {
                Some(until) => until,
                None if ringing => started + self.answer_timeout,
                None => started + TIMER_B.min(self.answer_timeout),
            };
            let wake = if ringing || cancelled.is_some() {
                deadline
            } else {
                next.min(deadline)
            };
            match tx.recv_until(wake).await {
                Some(msg) if msg.is_request() => tx.answer_in_dialog(&msg).await,
                Some(msg) if is_answer_to(&msg, &branch, Method::Invite) => {
                    match msg.status().unwrap_or(0) {
                        100..=199 => ringing = true,
                        200..=299 => return Ok(msg),
                        s => {
                            tx.send(&leg.ack_failure(&invite, &msg)).await;
                            let status = match s {
                                486 | 600 => "486",
                                403 | 603 => "603",
                                _ => "480", // no answer (487 after our CANCEL), or unavailable
                            };
                            return Err((status, format!("the phone answered {s}")));
                        }
                    }
                }
                Some(_) => {}
                None if Instant::now() >= deadline && ringing && cancelled.is_none() => {
                    let _ = tx
                        .transact(
                            &leg.cancel(&invite),
                            &branch,
                            Method::Cancel,
                            Duration::from_secs(4),
                        )
                        .await;
                    // The 487 (or a late 200) arrives as the INVITE's answer.
                    cancelled = Some(Instant::now() + Duration::from_secs(4));
                }
                None if Instant::now() >= deadline => {
                    return Err(("480", "the agent did not answer".to_owned()))
                }
                None => {
                    tx.send(&invite).await;
                    rto *= 2;
                    next = Instant::now() + rto;
                }
            }
        }
    }
}

/// The socket of one origination.
struct Transport {
    sock: UdpSocket,
    buf: Vec<u8>,
}

impl Transport {
    async fn send(&self, msg: &[u8]) {
        if let Err(e) = self.sock.send(msg).await {
            tracing::debug!(error = %e, "click-to-call: send failed");
        }
    }

    /// The next parsable message, or `None` at `until`. Receive errors (an ICMP "port
    /// unreachable" from a phone that is off) are skipped: the timers decide.
    async fn recv_until(&mut self, until: Instant) -> Option<SipMessage> {
        loop {
            let Ok(got) = tokio::time::timeout_at(until, self.sock.recv(&mut self.buf)).await
            else {
                return None;
            };
            if let Ok(n) = got {
                if let Ok(msg) = SipMessage::parse(Bytes::copy_from_slice(&self.buf[..n])) {
                    return Some(msg);
                }
            }
        }
    }

    /// Answers a request of the phone within our dialog (NOTIFY, BYE, OPTIONS...) with 200.
    async fn answer_in_dialog(&self, req: &SipMessage) {
        if req.method() == Some(Method::Ack) {
            return;
        }
        let mut out = BytesMut::new();
        write_response(req, 200, "OK", None, &[], &mut out);
        self.send(&out).await;
    }

    /// A non-INVITE transaction (Timer E doubling up to T2, Timer F); the final status.
    async fn transact(
        &mut self,
        msg: &[u8],
        branch: &str,
        method: Method,
        limit: Duration,
    ) -> Option<u16> {
        let end = Instant::now() + limit;
        let mut rto = T1;
        let mut next = Instant::now() + rto;
        self.send(msg).await;
        loop {
            match self.recv_until(next.min(end)).await {
                Some(m) if m.is_request() => self.answer_in_dialog(&m).await,
                Some(m) if is_answer_to(&m, branch, method) => match m.status() {
                    Some(s) if s >= 200 => return Some(s),
                    _ => rto = T2,
                },
                Some(_) => {}
                None if Instant::now() >= end => return None,
                None => {
                    self.send(msg).await;
                    rto = (rto * 2).min(T2);
                    next = Instant::now() + rto;
                }
            }
        }
    }
}

fn is_answer_to(msg: &SipMessage, branch: &str, method: Method) -> bool {
    let ours = msg
        .top_via()
        .and_then(|v| v.branch)
        .is_some_and(|b| b == branch.as_bytes());
    ours && msg
        .cseq()
        .is_some_and(|c| Method::from_bytes(c.method) == method)
}

/// `sip:101@10.0.0.5:5062` -> (10.0.0.5:5062, the URI); `None` for host names, TCP/TLS, sips.
fn udp_target(contact: &str) -> Option<(SocketAddr, String)> {
    let raw = contact.trim().trim_start_matches('<').trim_end_matches('>');
    let uri = Uri::parse(raw.as_bytes())?;
    let transport = uri.param(b"transport").unwrap_or(b"udp");
    if !uri.scheme.eq_ignore_ascii_case(b"sip") || !transport.eq_ignore_ascii_case(b"udp") {
        return None;
    }
    let host = std::str::from_utf8(uri.host)
        .ok()?
        .trim_start_matches('[')
        .trim_end_matches(']');
    Some((
        SocketAddr::new(host.parse().ok()?, uri.port.unwrap_or(5060)),
        raw.to_owned(),
    ))
}

/// callgate's side of the dialog with the agent's phone: builds every message (pure).
#[derive(Debug, Clone)]
struct Leg {
    local: SocketAddr,
    /// Where requests go: the contact at first, the phone's Contact once it answered.
    target: String,
    agent_uri: String,
    number: String,
    refer_to: String,
    call_id: String,
    tag: String,
    /// The To header of the answer (with the phone's tag).
    remote_to: Option<String>,
    cseq: u32,
    salt: u64,
}

impl Leg {
    fn new(
        local: SocketAddr,
        contact_uri: &str,
        extension: &str,
        number: &str,
        pbx_host: &str,
    ) -> Self {
        let salt: u64 = rand::random();
        let host = host_of(local);
        Self {
            local,
            target: contact_uri.to_owned(),
            agent_uri: format!(
                "sip:{extension}@{}",
                contact_uri
                    .split_once('@')
                    .map_or(host.as_str(), |(_, h)| h)
            ),
            number: number.to_owned(),
            refer_to: format!("<sip:{number}@{pbx_host}>"),
            call_id: format!("c2c-{salt:016x}@{host}"),
            tag: format!("cg{:08x}", salt >> 32),
            remote_to: None,
            cseq: 1,
            salt,
        }
    }

    fn branch(&mut self) -> String {
        self.salt = self.salt.wrapping_add(1);
        format!("z9hG4bK-c2c-{:x}", self.salt)
    }

    fn from(&self) -> String {
        format!(
            "\"{n}\" <sip:{n}@{}>;tag={}",
            host_of(self.local),
            self.tag,
            n = self.number
        )
    }

    fn to(&self) -> String {
        self.remote_to
            .clone()
            .unwrap_or_else(|| format!("<{}>", self.agent_uri))
    }

    fn head(&self, method: &str, uri: &str, branch: &str, cseq: u32) -> String {
        format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\n",
            local = self.local,
            from = self.from(),
            to = self.to(),
            cid = self.call_id
        )
    }

    fn invite(&self, branch: &str) -> Vec<u8> {
        let ip = host_of(self.local);
        let v = if self.local.is_ipv4() { 4 } else { 6 };
        let ip = ip.trim_start_matches('[').trim_end_matches(']');
        let sdp = format!("v=0\r\no=callgate {} 1 IN IP{v} {ip}\r\ns=click-to-call\r\nc=IN IP{v} {ip}\r\nt=0 0\r\nm=audio 9 RTP/AVP 0 8\r\na=inactive\r\n", self.salt >> 16);
        let mut m = self.head("INVITE", &self.target, branch, 1);
        m.push_str(&format!(
            "Contact: <sip:callgate@{}>\r\nCall-Info: <sip:{}>;answer-after=0\r\nAllow: INVITE, ACK, CANCEL, BYE, NOTIFY, OPTIONS\r\nSupported: replaces\r\nUser-Agent: callgate\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            self.local,
            host_of(self.local),
            sdp.len()
        ));
        m.into_bytes()
    }

    /// CANCEL of `invite` (same Via branch, RFC 3261 §9.1).
    fn cancel(&self, invite: &[u8]) -> Vec<u8> {
        let line = |name: &str| header_line(invite, name).unwrap_or_default();
        format!("CANCEL {} SIP/2.0\r\n{}{}Max-Forwards: 70\r\n{}{}CSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n", self.target, line("Via"), line("From"), line("To"), line("Call-ID"))
            .into_bytes()
    }

    /// ACK of a non-2xx final answer: same branch as the INVITE, To from the answer.
    fn ack_failure(&self, invite: &[u8], answer: &SipMessage) -> Vec<u8> {
        let line = |name: &str| header_line(invite, name).unwrap_or_default();
        let to = answer
            .header(HeaderName::To)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default();
        format!("ACK {} SIP/2.0\r\n{}{}Max-Forwards: 70\r\nTo: {to}\r\n{}CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n", self.target, line("Via"), line("From"), line("Call-ID")).into_bytes()
    }

    /// Learns the phone's tag and Contact from its 2xx.
    fn answered(&mut self, ok: &SipMessage) {
        self.remote_to = ok
            .header(HeaderName::To)
            .map(|v| String::from_utf8_lossy(v).into_owned());
        if let Some(c) = ok.contact() {
            self.target = String::from_utf8_lossy(c.uri.raw).into_owned();
        }
    }

    fn ack(&mut self) -> Vec<u8> {
        let branch = self.branch();
        let mut m = self.head("ACK", &self.target.clone(), &branch, 1);
        m.push_str("Content-Length: 0\r\n\r\n");
        m.into_bytes()
    }

    fn refer(&mut self, branch: &str) -> Vec<u8> {
        let extra = format!(
            "Refer-To: {}\r\nContact: <sip:callgate@{}>\r\n",
            self.refer_to, self.local
        );
        self.in_dialog("REFER", branch, &extra)
    }

    fn bye(&mut self, branch: &str) -> Vec<u8> {
        self.in_dialog("BYE", branch, "")
    }

    /// A new in-dialog request (the next CSeq).
    fn in_dialog(&mut self, method: &str, branch: &str, extra: &str) -> Vec<u8> {
        self.cseq += 1;
        let mut m = self.head(method, &self.target.clone(), branch, self.cseq);
        m.push_str(extra);
        m.push_str("Content-Length: 0\r\n\r\n");
        m.into_bytes()
    }
}

fn host_of(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    }
}

/// `Name: value\r\n` of a message we built.
fn header_line(msg: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(msg).ok()?;
    text.split("\r\n")
        .find(|l| {
            l.split_once(':')
                .is_some_and(|(n, _)| n.eq_ignore_ascii_case(name))
        })
        .map(|l| format!("{l}\r\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> SipMessage {
        SipMessage::parse(Bytes::copy_from_slice(b)).unwrap()
    }

    #[test]
    fn originations_are_bounded_in_all_and_per_agent() {
        let o = SipOriginator::default();
        let first = o.in_flight.claim(1, "101").unwrap();
        assert_eq!(
            o.in_flight.claim(1, "101").err().map(|f| f.0),
            Some("486"),
            "one per agent"
        );
        let others: Vec<Claim> = (1..MAX_ORIGINATIONS)
            .map(|i| o.in_flight.claim(2, &i.to_string()).unwrap())
            .collect();
        assert_eq!(
            o.in_flight.claim(3, "101").err().map(|f| f.0),
            Some("503"),
            "all slots taken"
        );
        drop(first);
        assert!(o.in_flight.claim(1, "101").is_ok(), "released on drop");
        drop(others);
    }

    #[test]
    fn contacts_must_be_udp_ip_literals() {
        assert_eq!(
            udp_target("<sip:101@127.0.0.1:5062>").map(|t| t.0),
            Some("127.0.0.1:5062".parse().unwrap())
        );
        assert_eq!(
            udp_target("sip:101@10.0.0.5").map(|t| t.0),
            Some("10.0.0.5:5060".parse().unwrap())
        );
        assert!(udp_target("sip:101@phone.local:5060").is_none());
        assert!(udp_target("sip:101@127.0.0.1:5062;transport=tcp").is_none());
        assert!(udp_target("sips:101@127.0.0.1:5061").is_none());
    }

    #[test]
    fn the_invite_shows_the_customer_and_the_refer_names_the_pbx() {
        let mut leg = Leg::new(
            "127.0.0.1:40000".parse().unwrap(),
            "sip:101@127.0.0.1:5062",
            "101",
            "79161234567",
            "127.0.0.1:5080",
        );
        let branch = leg.branch();
        let invite = parse(&leg.invite(&branch));
        assert_eq!(invite.request_uri(), Some(&b"sip:101@127.0.0.1:5062"[..]));
        assert_eq!(
            invite.from().and_then(|f| f.uri.user),
            Some(&b"79161234567"[..])
        );
        assert_eq!(
            invite.top_via().and_then(|v| v.branch),
            Some(branch.as_bytes())
        );
        assert!(invite
            .header_by_name(b"Call-Info")
            .is_some_and(|v| v.ends_with(b"answer-after=0")));
        assert!(invite.body().starts_with(b"v=0"));
        let ok = parse(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch=x\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:101@127.0.0.1:5062>;tag=ph1\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContact: <sip:101@127.0.0.1:5999>\r\nContent-Length: 0\r\n\r\n");
        leg.answered(&ok);
        let branch = leg.branch();
        let refer = parse(&leg.refer(&branch));
        assert_eq!(
            refer.top_via().and_then(|v| v.branch),
            Some(branch.as_bytes()),
            "the transaction's branch"
        );
        assert_eq!(
            refer.request_uri(),
            Some(&b"sip:101@127.0.0.1:5999"[..]),
            "sent to the phone's Contact"
        );
        assert_eq!(
            refer.header(HeaderName::ReferTo),
            Some(&b"<sip:79161234567@127.0.0.1:5080>"[..])
        );
        assert_eq!(refer.to().and_then(|t| t.tag), Some(&b"ph1"[..]));
        assert_eq!(refer.cseq().map(|c| c.seq), Some(2));
        let branch = leg.branch();
        assert_eq!(parse(&leg.bye(&branch)).cseq().map(|c| c.seq), Some(3));
    }

    #[test]
    fn cancel_and_failure_ack_reuse_the_invite_branch() {
        let mut leg = Leg::new(
            "127.0.0.1:40000".parse().unwrap(),
            "sip:101@127.0.0.1:5062",
            "101",
            "79161234567",
            "pbx:5060",
        );
        let branch = leg.branch();
        let invite = leg.invite(&branch);
        let cancel = parse(&leg.cancel(&invite));
        assert_eq!(
            (cancel.method(), cancel.top_via().and_then(|v| v.branch)),
            (Some(Method::Cancel), Some(branch.as_bytes()))
        );
        let busy = parse(b"SIP/2.0 486 Busy\r\nVia: SIP/2.0/UDP 127.0.0.1:40000;branch=x\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:101@h>;tag=ph2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n");
        let ack = parse(&leg.ack_failure(&invite, &busy));
        assert_eq!(
            (ack.method(), ack.top_via().and_then(|v| v.branch)),
            (Some(Method::Ack), Some(branch.as_bytes()))
        );
        assert_eq!(ack.to().and_then(|t| t.tag), Some(&b"ph2"[..]));
    }
}
