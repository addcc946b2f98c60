//! What the proxy tells the call tracker: signalling facts read off the messages it relays
//! (DESIGN.md §2.2). Pure functions from a message to an optional [`Event`]; the proxy decides
//! which message is which (initial INVITE, in-dialog request, response to what).

use std::sync::Arc;
use std::time::Duration;

use crate::calls::{Direction, Event, LegId, Offer, Policy, Side};
use crate::directory::PortalEntry;
use crate::phone::customer_text;
use crate::sip::core::{HeaderName, Method, NameAddr, SipMessage, Uri};

/// The leg id of a message: its Call-ID.
pub(crate) fn leg_of(msg: &SipMessage) -> Option<LegId> {
    let id = msg.call_id()?;
    Some(LegId(Arc::from(String::from_utf8_lossy(id).as_ref())))
}

/// The call policy of `portal` at this moment.
pub(crate) fn policy(portal: &PortalEntry) -> Policy {
    let s = &portal.portal.settings;
    Policy {
        assign: s.incoming.assign_responsible_to,
        min_talk: Duration::from_secs(u64::from(s.min_talk_seconds)),
        default_incoming: s.incoming.default_responsible,
        default_outgoing: s.outgoing.default_responsible,
    }
}

/// An initial INVITE (no To-tag) relayed from the PBX to an agent or from an agent out. From
/// the PBX the agent is `agent` when the route named it (a Path-routed INVITE: the registration's
/// extension, not the Contact's user part), else the Request-URI user, else the To user.
pub(crate) fn offered(msg: &SipMessage, portal: &PortalEntry, direction: Direction, agent: Option<&str>) -> Option<Event> {
    let leg = leg_of(msg)?;
    let ruri_user = msg.request_uri().and_then(Uri::parse).and_then(|u| u.user).map(text);
    let (agent, remote) = match direction {
        // A caller URI without a user part is a withheld number like `anonymous`.
        Direction::FromPbx => (agent.map(Arc::from).or(ruri_user).or_else(|| user_of(msg.to()))?, caller(msg).unwrap_or_else(|| Arc::from("anonymous"))),
        Direction::FromAgent => (user_of(msg.from())?, ruri_user.or_else(|| user_of(msg.to()))?),
    };
    let remote = if portal.by_extension.contains_key(remote.as_ref()) { remote } else { customer_text(remote.as_bytes()) };
    let agent_user = portal.by_extension.get(agent.as_ref()).map(|m| m.user_id);
    // Feature codes and short internal numbers are no customers either (`internal_max_digits`).
    let remote_is_extension = portal.by_extension.contains_key(remote.as_ref()) || portal.portal.settings.is_internal_number(&remote);
    let correlation = portal.correlation(msg);
    let replaces = msg.header(HeaderName::Replaces).map(|v| LegId(text(call_id_part(v))));
    let referred_by = msg.header(HeaderName::ReferredBy).and_then(NameAddr::parse).and_then(|n| n.uri.user).map(text);
    // The line the customer dialled: the Diversion user, else (from the PBX) a To user that is
    // one of the portal's lines.
    let diversion = msg.header(HeaderName::Diversion).and_then(NameAddr::parse).and_then(|n| n.uri.user).map(text);
    let to_line = || {
        let user = user_of(msg.to())?;
        let number = crate::phone::normalize_number(&user)?;
        portal.lines.contains_key(&number.as_u64()).then_some(user)
    };
    let line = diversion.or_else(|| if direction == Direction::FromPbx { to_line() } else { None });
    Some(Event::Offered(Offer {
        leg,
        portal: portal.portal.id,
        policy: policy(portal),
        direction,
        agent_extension: agent,
        agent_user,
        remote,
        remote_is_extension,
        correlation,
        replaces,
        referred_by,
        line,
    }))
}

/// An in-dialog request (To-tag present) or a CANCEL, sent by `side`.
pub(crate) fn in_dialog(msg: &SipMessage, method: Method, side: Side) -> Option<Event> {
    let leg = leg_of(msg)?;
    match method {
        Method::Bye => Some(Event::Ended { leg, by: side }),
        Method::Cancel => Some(Event::Cancelled { leg, by: side }),
        Method::Invite | Method::Update if !msg.body().is_empty() => Some(Event::Hold { leg, held: super::hold::holds(msg.body()) }),
        Method::Refer => {
            let refer_to = msg.header(HeaderName::ReferTo).and_then(NameAddr::parse)?;
            let target = refer_to.uri.user.map(text).unwrap_or_else(|| Arc::from(""));
            let replaces = replaces_in_uri_headers(refer_to.uri.headers).map(|c| LegId(text(&c)));
            Some(Event::Refer { leg, by: side, target, replaces })
        }
        _ => None,
    }
}

/// A response to an initial INVITE (`Ringing`, `Answered`, `Failed`) or a 2xx to a REFER.
pub(crate) fn response(msg: &SipMessage, to_initial_invite: bool) -> Option<Event> {
    let leg = leg_of(msg)?;
    let status = msg.status()?;
    let method = msg.cseq()?.method_kind();
    match (method, to_initial_invite, status) {
        (Method::Invite, true, 180..=199) => Some(Event::Ringing { leg }),
        (Method::Invite, true, 200..=299) => Some(Event::Answered { leg }),
        (Method::Invite, true, 300..) => Some(Event::Failed { leg, status }),
        (Method::Refer, _, 200..=299) => Some(Event::ReferAccepted { leg }),
        _ => None,
    }
}

/// The caller: P-Asserted-Identity first (what the PBX vouches for), else From.
fn caller(msg: &SipMessage) -> Option<Arc<str>> {
    msg.header(HeaderName::PAssertedIdentity).and_then(NameAddr::parse).and_then(|n| n.uri.user).map(text).or_else(|| user_of(msg.from()))
}

fn user_of(n: Option<NameAddr<'_>>) -> Option<Arc<str>> {
    n.and_then(|n| n.uri.user).map(text)
}

/// The Call-ID of a Replaces header value (`callid;to-tag=..;from-tag=..`).
fn call_id_part(v: &[u8]) -> &[u8] {
    v.split(|&b| b == b';').next().unwrap_or_default().trim_ascii()
}

/// The Call-ID inside `Replaces=` of URI headers (`Replaces=abc%40host%3Bto-tag%3D1...`),
/// percent-decoded.
fn replaces_in_uri_headers(headers: &[u8]) -> Option<Vec<u8>> {
    let value = headers.split(|&b| b == b'&').find_map(|h| {
        let (name, value) = h.split_at(h.iter().position(|&b| b == b'=')?);
        name.eq_ignore_ascii_case(b"Replaces").then(|| value.get(1..).unwrap_or_default())
    })?;
    let decoded = percent_decode(value);
    Some(call_id_part(&decoded).to_vec())
}

fn percent_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        let hex = v.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match (v[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn text(v: &[u8]) -> Arc<str> {
    Arc::from(String::from_utf8_lossy(v).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_is_found_and_decoded_in_refer_to_uri_headers() {
        assert_eq!(replaces_in_uri_headers(b"Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2").as_deref(), Some(&b"abc@host"[..]));
        assert_eq!(replaces_in_uri_headers(b"x=1&replaces=c1").as_deref(), Some(&b"c1"[..]));
        assert_eq!(replaces_in_uri_headers(b""), None);
    }
}
