//! The trust model at the front door, in memory: each attack of the security review refused
//! (no answer but a refusal, nothing relayed, no transaction, no tracked call, no binding), and
//! in the same test the legitimate message beside it still going through.
//!
//! Addresses: the PBX 127.0.0.1:5080, phone 101 at its static contact 127.0.0.1:6001, the
//! attacker 127.0.0.5, the victim 127.0.0.6.

use super::*;
use crate::settings::Line;

const ATTACKER: &str = "127.0.0.5:5060";
const VICTIM: &str = "127.0.0.6:5060";
const CALL: &str = "in-1@pbx";

/// An agent-looking INVITE from `from` (its Via), From user 101, to `ruri`, with `extra` headers.
pub(super) fn invite_from(from: &str, ruri: &str, call_id: &str, extra: &str) -> String {
    format!(
        "INVITE {ruri} SIP/2.0\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bK-{call_id}\n\
         {extra}\
         Max-Forwards: 70\n\
         From: <sip:101@127.0.0.1:5060>;tag=a\n\
         To: <sip:0088216000001@127.0.0.1:5060>\n\
         Call-ID: {call_id}\n\
         CSeq: 1 INVITE\n\
         Contact: <sip:101@{from}>\n\
         Content-Length: 0\n\n"
    )
}

fn status(sent: &Sent, to: &str) -> Option<u16> {
    sent.one_to(to).status()
}

#[test]
fn toll_fraud_an_outsiders_invite_never_reaches_the_pbx_while_the_agents_does() {
    let h = Harness::new();
    // Attack (F1): any host dials a premium number as "101".
    let attack = h.recv(ATTACKER, &invite_from(ATTACKER, "sip:0088216000001@127.0.0.1:5060", "fraud-1", ""), 0);
    assert_eq!(status(&attack, ATTACKER), Some(403), "{:?}", attack.lines());
    assert!(attack.to(PBX).is_empty());
    assert_eq!(h.proxy.transactions(), (0, 0), "no state");
    h.tick(100);
    assert!(h.calls.list(10).is_empty(), "no tracked call, nothing for the CRM");
    // Legitimate: phone 101 at its static contact.
    let legit = h.recv(PHONE_101, &invite_from(PHONE_101, "sip:0088216000001@127.0.0.1:5060", "out-1", ""), 200);
    assert_eq!(legit.one_to(PBX).method(), Some(crate::sip::core::Method::Invite));
}

#[test]
fn open_relay_a_route_or_a_to_tag_never_sends_anything_to_the_victim() {
    let h = Harness::new();
    // F2: a Route naming callgate, then the victim; from an outsider and from an agent alike.
    let route = format!("Route: <sip:127.0.0.1:5060;lr>, <sip:{VICTIM};lr>\nCall-Info: <sip:x>;answer-after=0\n");
    for (from, id) in [(ATTACKER, "relay-1"), (PHONE_101, "relay-2")] {
        let sent = h.recv(from, &invite_from(from, &format!("sip:u@{VICTIM}"), id, &route), 0);
        assert!(sent.to(VICTIM).is_empty(), "{:?}", sent.lines());
    }
    // A MESSAGE with a To tag for the victim (the old stateless in-dialog relay).
    let message = format!(
        "MESSAGE sip:u@{VICTIM} SIP/2.0\nVia: SIP/2.0/UDP {ATTACKER};branch=z9hG4bK-m1\nMax-Forwards: 70\n\
         From: <sip:101@x>;tag=a\nTo: <sip:u@x>;tag=t\nCall-ID: m1\nCSeq: 1 MESSAGE\nContent-Length: 0\n\n"
    );
    let sent = h.recv(ATTACKER, &message, 10);
    assert_eq!(status(&sent, ATTACKER), Some(403));
    assert!(sent.to(VICTIM).is_empty());
    // A forged token naming the victim as a dialog end.
    let forged = "Route: <sip:cgr.u7f0000050013c4.u7f0000060013c4.00112233445566778899aabbccddeeff@127.0.0.1:5060;lr>\n";
    let sent = h.recv(ATTACKER, &invite_from(ATTACKER, &format!("sip:u@{VICTIM}"), "relay-3", forged).replace("To: <sip:0088216000001@127.0.0.1:5060>", "To: <sip:u@x>;tag=t"), 20);
    assert_eq!(status(&sent, ATTACKER), Some(403));
    assert!(sent.to(VICTIM).is_empty());
    assert_eq!(h.proxy.transactions().1, 1, "only the agent's call (to the PBX) is live");
    // The agent's INVITE with that Route went to its PBX, without the Route and the auto-answer.
    h.recv(PHONE_101, &invite_from(PHONE_101, "sip:555@127.0.0.1:5060", "legit-1", &route), 30);
}

#[test]
fn an_agents_request_reaches_the_pbx_without_routes_identities_or_auto_answer() {
    let h = Harness::new();
    let extra = format!("Route: <sip:127.0.0.1:5060;lr>, <sip:{VICTIM};lr>\nCall-Info: <sip:x>;answer-after=0\nAlert-Info: <http://x>;info=alert-autoanswer\nP-Asserted-Identity: <sip:102@x>\nRemote-Party-ID: <sip:102@x>\nX-Call-Id: forged\nDiversion: <sip:74951234567@x>\n");
    let sent = h.recv(PHONE_101, &invite_from(PHONE_101, "sip:555@127.0.0.1:5060", "strip-1", &extra), 0);
    let fwd = sent.one_to(PBX);
    for name in ["Route", "Call-Info", "Alert-Info", "P-Asserted-Identity", "Remote-Party-ID", "X-Call-Id", "Diversion"] {
        assert_eq!(fwd.header_by_name(name.as_bytes()), None, "{name} passed on");
    }
    assert!(sent.to(VICTIM).is_empty());
}

#[test]
fn register_hijack_the_attackers_registrar_and_its_200_bind_nothing() {
    let h = Harness::new();
    // F3: a REGISTER routed to the attacker's "registrar" goes to the PBX only, Route stripped.
    let register = format!(
        "REGISTER sip:office.example.com SIP/2.0\nVia: SIP/2.0/UDP {ATTACKER};branch=z9hG4bK-r1\n\
         Route: <sip:127.0.0.1:5060;lr>, <sip:{ATTACKER};lr>\nMax-Forwards: 70\nFrom: <sip:102@127.0.0.1:5080>;tag=r\n\
         To: <sip:102@127.0.0.1:5080>\nCall-ID: r1\nCSeq: 1 REGISTER\nContact: <sip:102@{ATTACKER}>;expires=3600\nContent-Length: 0\n\n"
    );
    let sent = h.recv(ATTACKER, &register, 0);
    let at_pbx = sent.one_to(PBX).clone();
    assert_eq!(header(&at_pbx, HeaderName::Route), None);
    assert!(sent.to(ATTACKER).is_empty(), "nothing to the attacker's registrar");
    // The attacker answers 200 itself (it saw nothing, but may guess): dropped, no binding.
    let forged = answer(&at_pbx, 200, "OK", &[("Contact", format!("<sip:102@{ATTACKER}>;expires=3600").as_bytes())]);
    assert!(h.recv_bytes(ATTACKER, forged, 10).is_empty());
    let call = h.recv(PBX, &pbx_invite("102", "in-h1", "z9hG4bK-pbx-h1"), 20);
    assert_eq!(call.lines(), [(PBX.to_owned(), "SIP/2.0 480 Temporarily Unavailable".to_owned())]);
    // F4 in the same breath: the PBX's own 200, with an absurd Expires, binds (clamped) and
    // nothing panics; the customer's call then reaches the registered contact.
    let ok = answer(&at_pbx, 200, "OK", &[("Expires", b"18446744073709551615")]);
    h.recv_bytes(PBX, ok, 30);
    let call = h.recv(PBX, &pbx_invite("102", "in-h2", "z9hG4bK-pbx-h2"), 40);
    assert_eq!(call.to(ATTACKER).len(), 1, "the PBX accepted that contact: {:?}", call.lines());
    assert_eq!(h.recv(PBX, "OPTIONS sip:127.0.0.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-o\nFrom: <sip:p@x>;tag=1\nTo: <sip:c@x>\nCall-ID: o\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n", 50).one_to(PBX).status(), Some(200));
}

#[test]
fn forged_responses_are_dropped_and_never_forwarded_along_a_second_via() {
    let h = Harness::new();
    let invite = h.offer("101", CALL, PHONE_101);
    // F5: our Via on top, a TCP victim below: nothing is sent anywhere.
    let ssrf = format!(
        "SIP/2.0 200 OK\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-x, SIP/2.0/TCP {VICTIM};branch=y\nFrom: <sip:a@b>;tag=1\n\
         To: <sip:c@d>;tag=2\nCall-ID: r\nCSeq: 1 OPTIONS\nContent-Length: 16\n\n*1\r\n$8\r\nFLUSHALL"
    );
    assert!(h.recv(ATTACKER, &ssrf, 10).is_empty());
    // The right branch from the wrong source: dropped; the call is still ringing.
    assert!(h.recv_bytes(ATTACKER, answer(&invite, 486, "Busy Here", &[]), 20).is_empty());
    // The phone's own answer goes through.
    let ok = h.recv_bytes(PHONE_101, answer_200(&invite), 30);
    assert_eq!(ok.lines(), [(PBX.to_owned(), "SIP/2.0 200 OK".to_owned())]);
    // Branches are unguessable: 128 random bits each.
    let branch = top_branch(&invite);
    assert!(branch.len() >= "z9hG4bK-cg-".len() + 32, "{branch}");
}

#[test]
fn only_the_dialogs_ends_may_use_its_route_and_only_the_inviter_may_cancel() {
    let h = Harness::new();
    let invite = h.offer("101", CALL, PHONE_101);
    // CANCEL of the PBX's INVITE from the attacker (same branch and sent-by, forged).
    let cancel = h.recv(ATTACKER, &pbx_cancel("101", CALL, "z9hG4bK-pbx-1"), 10);
    assert_eq!(status(&cancel, ATTACKER), Some(403));
    assert!(cancel.to(PHONE_101).is_empty());
    h.recv_bytes(PHONE_101, answer_200(&invite), 100);
    // The dialog's valid route, replayed from the attacker: refused.
    let bye = pbx_in_dialog("BYE", 2, CALL, "z9hG4bK-evil-bye");
    let evil = h.recv(ATTACKER, &bye, 200);
    assert_eq!(status(&evil, ATTACKER), Some(403));
    assert!(evil.to(PHONE_101).is_empty());
    // From the PBX, the same BYE reaches the phone.
    assert_eq!(h.recv(PBX, &bye, 300).one_to(PHONE_101).method(), Some(crate::sip::core::Method::Bye));
}

/// Two portals behind one PBX address, both with extension 101 (phones .2 and .3), lines
/// 74950000001 and 74950000002.
fn two_tenants() -> Harness {
    let portal = |id: i64, phone: &str, line: &str| {
        let settings = PortalSettings { active: true, pbx_host: PBX.into(), ..PortalSettings::default() };
        let portal = Portal { id, name: None, domain: format!("https://tenant{id}.bitrix24.ru/"), auth: None, settings };
        let lines = vec![Line { number: line.into(), utm: None }];
        PortalEntry::build(portal, vec![mapping(id, 10 + u64::try_from(id).unwrap(), "101", Some(&format!("sip:101@{phone}")))], lines)
    };
    Harness::with_portals(vec![portal(1, "127.0.0.2:5060", "74950000001"), portal(2, "127.0.0.3:5060", "74950000002")])
}

#[test]
fn two_tenants_on_one_pbx_each_call_rings_its_own_portals_phone() {
    let h = two_tenants();
    for (line, phone, portal, id) in [("74950000001", "127.0.0.2:5060", 1, "t-1"), ("74950000002", "127.0.0.3:5060", 2, "t-2")] {
        let invite = pbx_invite("101", id, &format!("z9hG4bK-{id}")).replace("To: <sip:101@127.0.0.1:5060>", &format!("To: <sip:{line}@127.0.0.1:5060>"));
        let sent = h.recv(PBX, &invite, 0);
        assert_eq!(sent.to(phone).len(), 1, "{line}: {:?}", sent.lines());
        h.tick(50);
        let calls = h.calls.list(10);
        assert!(calls.iter().any(|c| c.portal == portal), "{calls:#?}");
    }
    // No line named: the portal is ambiguous, nobody's phone rings.
    let sent = h.recv(PBX, &pbx_invite("101", "t-3", "z9hG4bK-t-3"), 100);
    assert_eq!(status(&sent, PBX), Some(403));
    // Each phone calls out through its own portal only (its static contact decides).
    let out = h.recv("127.0.0.3:5060", &invite_from("127.0.0.3:5060", "sip:555@127.0.0.1:5060", "t-4", ""), 200);
    assert_eq!(out.to(PBX).len(), 1);
    h.tick(300);
    let call = h.calls.list(10).into_iter().find(|c| c.legs.iter().any(|l| l.leg.0.as_ref() == "t-4")).expect("tracked");
    assert_eq!(call.portal, 2);
}

#[test]
fn a_webrtc_portal_takes_no_calls_from_ip_phones() {
    let settings = PortalSettings { active: true, pbx_host: PBX.into(), telephony_mode: crate::settings::TelephonyMode::Webrtc, ..PortalSettings::default() };
    let portal = Portal { id: 1, name: None, domain: "https://office.bitrix24.ru/".into(), auth: None, settings };
    let h = Harness::with_portals(vec![PortalEntry::build(portal, vec![mapping(1, 11, "101", Some("sip:101@127.0.0.1:6001"))], Vec::new())]);
    let sent = h.recv(PHONE_101, &invite_from(PHONE_101, "sip:555@127.0.0.1:5060", "w-1", ""), 0);
    assert_eq!(status(&sent, PHONE_101), Some(403));
    assert!(sent.to(PBX).is_empty());
    // The PBX still reaches the extension (in a real gateway: its browser).
    assert_eq!(h.recv(PBX, &pbx_invite("101", "w-2", "z9hG4bK-w-2"), 10).to(PHONE_101).len(), 1);
}

#[test]
fn one_source_holds_at_most_a_thousand_transactions_and_others_are_unaffected() {
    let h = Harness::new();
    // Phone 101 (an agent) sends 1,000 INVITEs the PBX never answers: all relayed; the next gets 503.
    for i in 0..1_000 {
        let sent = h.recv(PHONE_101, &invite_from(PHONE_101, "sip:555@127.0.0.1:5060", &format!("flood-{i}"), ""), 0);
        assert_eq!(sent.to(PBX).len(), 1, "call {i}");
    }
    let over = h.recv(PHONE_101, &invite_from(PHONE_101, "sip:555@127.0.0.1:5060", "flood-x", ""), 1);
    assert_eq!(status(&over, PHONE_101), Some(503));
    assert!(over.to(PBX).is_empty());
    // The PBX's call to 101 still goes through.
    assert_eq!(h.recv(PBX, &pbx_invite("101", "in-cap", "z9hG4bK-pbx-cap"), 2).to(PHONE_101).len(), 1);
}
