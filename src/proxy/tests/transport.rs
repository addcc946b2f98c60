//! Transports in memory: the PBX reached over the transport its `pbx_host` names whatever the
//! phone used, both sides of a transport change record-routed (RFC 5658) and in-dialog requests
//! going back over each side's own transport, TLS legs naming the TLS listener, a failed
//! connect answered 503 at once, SUBSCRIBE record-routed so its NOTIFYs come back through
//! callgate, and `received`/`rport` on the sender's Via (RFC 3581).
//!
//! Addresses: callgate UDP and TCP on 127.0.0.1:5060, TLS on 127.0.0.1:5061; the PBX
//! 127.0.0.1:5080; phone 101 at 127.0.0.2 (static contact 127.0.0.2:6001), connecting over TCP
//! or TLS from 127.0.0.2:40000; the attacker 127.0.0.5.

use super::*;
use crate::calls::EndReason;
use crate::proxy::trust::RouteKey;
use crate::sip::core::{Method, Uri};

const TLS_US: &str = "127.0.0.1:5061";
const PHONE_FLOW: &str = "127.0.0.2:40000";
/// Phone 101's static contact.
const PHONE: &str = "127.0.0.2:6001";
const ATTACKER: &str = "127.0.0.5:5060";

fn peer(s: &str, transport: Transport) -> Peer {
    Peer { addr: addr(s), transport }
}

fn local() -> Local {
    Local { udp: Some(addr(US)), tcp: Some(addr(US)), tls: Some(addr(TLS_US)) }
}

/// The office with its PBX at `pbx_host` (`127.0.0.1:5080` plus parameters) and callgate on
/// UDP, TCP and TLS.
fn edge(pbx_host: &str) -> Harness {
    let settings = PortalSettings { active: true, pbx_host: pbx_host.into(), ..PortalSettings::default() };
    let portal = Portal { id: 1, name: None, domain: "https://office.bitrix24.ru/".into(), auth: None, settings };
    let office = PortalEntry::build(portal, vec![mapping(1, 11, "101", Some(&format!("sip:101@{PHONE}")))], Vec::new());
    let t0 = Instant::now();
    let directory = Directory::default();
    directory.install_for_test(vec![office]);
    let calls = CallsHandle::new(TrackerConfig::default(), t0, 1_700_000_000_000);
    let proxy = Proxy::new(directory, local(), calls.clone(), Timers::RFC3261).with_route_key(RouteKey::new(&TEST_KEY));
    Harness { proxy, calls, t0 }
}

/// Everything sent after one message: (destination, message), in order, the in-place reply
/// parsed as a send to `from`.
fn deliver(h: &Harness, from: Peer, text: &str, ms: u64) -> Vec<(Peer, SipMessage)> {
    deliver_bytes(h, from, sip(text), ms)
}

/// [`deliver`] for a message already on the wire (`\r\n` line ends).
fn deliver_bytes(h: &Harness, from: Peer, data: Bytes, ms: u64) -> Vec<(Peer, SipMessage)> {
    let mut out = Outbox::new();
    h.proxy.on_message(data, from, h.at(ms), &mut out);
    collect(out, from)
}

fn collect(out: Outbox, from: Peer) -> Vec<(Peer, SipMessage)> {
    let reply = (!out.reply.is_empty()).then(|| (from, out.reply.freeze()));
    reply.into_iter().chain(out.sends).map(|(p, b)| (p, SipMessage::parse(b).expect("callgate sends what parses"))).collect()
}

/// The only message sent to `to`.
fn only_to(sent: &[(Peer, SipMessage)], to: Peer) -> SipMessage {
    let mut found: Vec<&SipMessage> = sent.iter().filter(|(p, _)| *p == to).map(|(_, m)| m).collect();
    assert_eq!(found.len(), 1, "one message to {to:?}: {:?}", sent.iter().map(|(p, m)| (p, text(m.start_line()))).collect::<Vec<_>>());
    found.remove(0).clone()
}

fn values(msg: &SipMessage, name: HeaderName) -> Vec<String> {
    msg.values(name).map(|v| text(v.trim_ascii())).collect()
}

/// Phone 101's request of `method` (a new dialog: no To tag), sent over `via` from its flow.
fn phone_request(method: &str, ruri: &str, call_id: &str, via: &str, extra: &str) -> String {
    format!(
        "{method} {ruri} SIP/2.0\n\
         Via: SIP/2.0/{via};branch=z9hG4bK-{call_id}\n\
         Max-Forwards: 70\n\
         From: <sip:101@127.0.0.1:5060>;tag=ph\n\
         To: <sip:{CUSTOMER}@127.0.0.1:5060>\n\
         Call-ID: {call_id}\n\
         CSeq: 1 {method}\n\
         Contact: <sip:101@{PHONE_FLOW};transport=tcp>\n\
         {extra}Content-Length: 0\n\n"
    )
}

/// The PBX's 200 to `req` (as it reached the PBX): Record-Route copied back, its Contact.
fn pbx_200(req: &SipMessage) -> Bytes {
    let rr = values(req, HeaderName::RecordRoute).join(", ");
    answer(req, 200, "OK", &[("Record-Route", rr.as_bytes()), ("Contact", b"<sip:pbx@127.0.0.1:5080>")])
}

/// A request inside dialog `call_id` with route set `routes` (first first) and the (From, To)
/// `tags`.
fn in_dialog(method: &str, ruri: &str, call_id: &str, via: &str, routes: &[String], (from_tag, to_tag): (&str, &str), cseq: u32) -> String {
    format!(
        "{method} {ruri} SIP/2.0\n\
         Via: SIP/2.0/{via};branch=z9hG4bK-{call_id}-{cseq}\n\
         Route: {}\n\
         Max-Forwards: 70\n\
         From: <sip:x@127.0.0.1>;tag={from_tag}\n\
         To: <sip:y@127.0.0.1>;tag={to_tag}\n\
         Call-ID: {call_id}\n\
         CSeq: {cseq} {method}\n\
         Content-Length: 0\n\n",
        routes.join(", ")
    )
}

#[test]
fn record_route_names_each_sides_listener_and_transport() {
    let (l, udp_pbx) = (local(), peer(PBX, Transport::Udp));
    let tcp_phone = peer(PHONE_FLOW, Transport::Tcp);
    let tls_phone = peer(PHONE_FLOW, Transport::Tls);
    // Downstream side first; listeners on one port still get two values for two transports.
    assert_eq!(l.record_route(tcp_phone, udp_pbx, "t", false), ["<sip:t@127.0.0.1:5060;lr>", "<sip:t@127.0.0.1:5060;transport=tcp;lr>"]);
    assert_eq!(l.record_route(udp_pbx, tcp_phone, "t", false), ["<sip:t@127.0.0.1:5060;transport=tcp;lr>", "<sip:t@127.0.0.1:5060;lr>"]);
    assert_eq!(l.record_route(tls_phone, udp_pbx, "t", false), ["<sip:t@127.0.0.1:5060;lr>", "<sip:t@127.0.0.1:5061;transport=tls;lr>"]);
    assert_eq!(l.record_route(tls_phone, udp_pbx, "t", true)[1], "<sips:t@127.0.0.1:5061;lr>", "a SIPS Request-URI");
    assert_eq!(l.record_route(tcp_phone, peer(PBX, Transport::Tcp), "t", false), ["<sip:t@127.0.0.1:5060;transport=tcp;lr>"]);
    assert_eq!(l.record_route(tls_phone, peer(PBX, Transport::Tls), "t", false), ["<sip:t@127.0.0.1:5061;transport=tls;lr>"]);
    // The TLS listener's address is ours; another port is not.
    for (uri, ours) in [("sip:t@127.0.0.1:5061;transport=tls;lr", true), ("sips:t@127.0.0.1:5061;lr", true), ("sip:t@127.0.0.1:5062;lr", false)] {
        assert_eq!(l.is_ours(&Uri::parse(uri.as_bytes()).unwrap()), ours, "{uri}");
    }
    // Without a TLS listener the TCP one is named (the README says to configure sip.tls).
    let no_tls = Local { tls: None, ..local() };
    assert_eq!(no_tls.route_uri(Transport::Tls, "t"), "<sip:t@127.0.0.1:5060;transport=tls;lr>");
}

#[test]
fn a_tcp_phones_call_reaches_a_udp_pbx_and_each_sides_in_dialog_requests_come_back_over_its_own_transport() {
    let h = edge(PBX);
    let (phone, pbx) = (peer(PHONE_FLOW, Transport::Tcp), peer(PBX, Transport::Udp));
    let call = "tcp-out-1";
    let sent = deliver(&h, phone, &phone_request("INVITE", &format!("sip:{CUSTOMER}@127.0.0.1:5060"), call, &format!("TCP {PHONE_FLOW};rport"), ""), 0);
    let invite = only_to(&sent, pbx);
    assert!(values(&invite, HeaderName::Via)[0].starts_with("SIP/2.0/UDP 127.0.0.1:5060;branch="), "our UDP face: {:?}", values(&invite, HeaderName::Via));
    let rr = values(&invite, HeaderName::RecordRoute);
    assert_eq!(rr.len(), 2, "{rr:?}");
    assert!(rr[0].ends_with("@127.0.0.1:5060;lr>") && rr[1].ends_with("@127.0.0.1:5060;transport=tcp;lr>"), "{rr:?}");
    assert_eq!(values(&invite, HeaderName::Via)[1], format!("SIP/2.0/TCP {PHONE_FLOW};branch=z9hG4bK-{call};received=127.0.0.2;rport=40000"));

    // The PBX answers; the 200 goes back over the phone's connection with both values.
    let ok = deliver_bytes(&h, pbx, pbx_200(&invite), 100);
    assert_eq!(values(&only_to(&ok, phone), HeaderName::RecordRoute), rr);

    // The phone's route set is the reversed Record-Route: ACK and BYE reach the PBX over UDP.
    let phone_routes = [rr[1].clone(), rr[0].clone()];
    let ack = deliver(&h, phone, &in_dialog("ACK", "sip:pbx@127.0.0.1:5080", call, &format!("TCP {PHONE_FLOW}"), &phone_routes, ("ph", AGENT_TAG), 1), 150);
    let ack = only_to(&ack, pbx);
    assert_eq!((ack.method(), ack.header(HeaderName::Route)), (Some(Method::Ack), None), "both of our values popped");
    // The PBX's re-INVITE and BYE (route set = Record-Route) reach the phone over its connection.
    for (i, method) in ["INVITE", "BYE"].into_iter().enumerate() {
        let cseq = u32::try_from(i).unwrap() + 1;
        let sent = deliver(&h, pbx, &in_dialog(method, &format!("sip:101@{PHONE_FLOW};transport=tcp"), call, "UDP 127.0.0.1:5080", &rr, (AGENT_TAG, "ph"), cseq), 200 + 100 * u64::from(cseq));
        let req = only_to(&sent, phone);
        assert_eq!((req.method_raw(), req.header(HeaderName::Route)), (Some(method.as_bytes()), None));
        assert!(values(&req, HeaderName::Via)[0].starts_with("SIP/2.0/TCP 127.0.0.1:5060;branch="), "our TCP face");
    }
}

#[test]
fn the_pbx_is_reached_over_the_transport_pbx_host_names_with_path_naming_callgates_face_to_it() {
    let h = edge("127.0.0.1:5080;transport=tcp");
    let phone = peer(PHONE, Transport::Udp);
    let sent = deliver(&h, phone, &phone_request("INVITE", "sip:74951234567@127.0.0.1", "to-tcp-pbx", &format!("UDP {PHONE}"), ""), 0);
    let invite = only_to(&sent, peer(PBX, Transport::Tcp));
    assert_eq!(text(invite.start_line()), "INVITE sip:74951234567@127.0.0.1:5080 SIP/2.0", "the Request-URI names host:port only");
    assert!(values(&invite, HeaderName::Via)[0].starts_with("SIP/2.0/TCP 127.0.0.1:5060;"));
    assert_eq!(values(&invite, HeaderName::RecordRoute).len(), 2, "UDP phone, TCP PBX");
    // A REGISTER's Path names what the PBX reaches callgate on (TCP); the token names the phone's flow.
    let register = format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bK-r1\nMax-Forwards: 70\n\
         From: <sip:101@127.0.0.1>;tag=r\nTo: <sip:101@127.0.0.1>\nCall-ID: reg-1\nCSeq: 1 REGISTER\nContact: <sip:101@{PHONE}>\nContent-Length: 0\n\n"
    );
    let sent = deliver(&h, phone, &register, 100);
    let reg = only_to(&sent, peer(PBX, Transport::Tcp));
    let path = values(&reg, HeaderName::Path);
    assert_eq!(path.len(), 1, "{path:?}");
    assert!(path[0].ends_with("@127.0.0.1:5060;transport=tcp;lr>"), "{path:?}");
}

#[test]
fn a_tls_phones_call_record_routes_the_tls_listener() {
    let h = edge(PBX);
    let phone = peer(PHONE_FLOW, Transport::Tls);
    let sent = deliver(&h, phone, &phone_request("INVITE", &format!("sip:{CUSTOMER}@127.0.0.1:5061"), "tls-1", &format!("TLS {PHONE_FLOW}"), ""), 0);
    let rr = values(&only_to(&sent, peer(PBX, Transport::Udp)), HeaderName::RecordRoute);
    assert!(rr[1].ends_with("@127.0.0.1:5061;transport=tls;lr>"), "{rr:?}");
    let sent = deliver(&h, phone, &phone_request("INVITE", &format!("sips:{CUSTOMER}@127.0.0.1:5061"), "tls-2", &format!("TLS {PHONE_FLOW}"), ""), 10);
    let rr = values(&only_to(&sent, peer(PBX, Transport::Udp)), HeaderName::RecordRoute);
    assert!(rr[1].starts_with("<sips:") && rr[1].ends_with("@127.0.0.1:5061;lr>"), "{rr:?}");
}

#[test]
fn a_pbx_that_cannot_be_reached_gets_the_phone_a_503_at_once_and_a_failed_call() {
    let h = edge("127.0.0.1:5080;transport=tcp");
    let (phone, pbx) = (peer(PHONE_FLOW, Transport::Tcp), peer(PBX, Transport::Tcp));
    let sent = deliver(&h, phone, &phone_request("INVITE", &format!("sip:{CUSTOMER}@127.0.0.1"), "refused-1", &format!("TCP {PHONE_FLOW}"), ""), 0);
    only_to(&sent, pbx);
    // The hub could not connect: the INVITE gets 503 now, not 408 after Timer B.
    let mut out = Outbox::new();
    h.proxy.unreachable(pbx, h.at(50), &mut out);
    let answers: Vec<Option<u16>> = collect(out, phone).iter().filter(|(p, _)| *p == phone).map(|(_, m)| m.status()).collect();
    assert_eq!(answers, [Some(503)]);
    assert_eq!(h.proxy.transactions().1, 0, "the client transaction is over");
    h.tick(100);
    let call = h.calls.list(10).into_iter().next().expect("the call was tracked");
    assert_eq!(call.legs.first().and_then(|l| l.end_reason), Some(EndReason::Other { status: 503 }), "{call:?}");
    // Another peer's failure, or one after the PBX answered, ends nothing.
    let sent = deliver(&h, phone, &phone_request("INVITE", &format!("sip:{CUSTOMER}@127.0.0.1"), "ringing-1", &format!("TCP {PHONE_FLOW}"), ""), 200);
    let invite = only_to(&sent, pbx);
    deliver_bytes(&h, pbx, answer(&invite, 180, "Ringing", &[]), 250);
    let mut out = Outbox::new();
    h.proxy.unreachable(pbx, h.at(300), &mut out);
    h.proxy.unreachable(peer(ATTACKER, Transport::Tcp), h.at(300), &mut out);
    assert!(out.is_empty(), "{:?}", out.sends);
    assert_eq!(h.proxy.transactions().1, 1, "the ringing INVITE's client transaction lives on");
}

#[test]
fn a_subscription_is_record_routed_so_its_notify_reaches_the_phone_and_nobody_elses_does() {
    let h = edge(PBX);
    let phone = udp(PHONE);
    let call = "sub-1";
    let subscribe = phone_request("SUBSCRIBE", "sip:102@127.0.0.1:5060", call, &format!("UDP {PHONE}"), "Event: dialog\nExpires: 600\n");
    let sent = deliver(&h, phone, &subscribe, 0);
    let sub = only_to(&sent, udp(PBX));
    let rr = values(&sub, HeaderName::RecordRoute);
    assert_eq!(rr, [dialog_route(PHONE, PBX, call)]);
    deliver_bytes(&h, udp(PBX), pbx_200(&sub), 50);
    // The PBX's NOTIFY inside the subscription: Route = the Record-Route, Request-URI the Contact.
    let notify = in_dialog("NOTIFY", &format!("sip:101@{PHONE}"), call, "UDP 127.0.0.1:5080", &rr, (AGENT_TAG, "ph"), 1).replace("Content-Length: 0", "Event: dialog\nSubscription-State: active;expires=600\nContent-Length: 0");
    // Attack: the same NOTIFY from another host is refused, and nothing reaches the phone.
    let forged = deliver(&h, udp(ATTACKER), &notify, 100);
    assert_eq!(forged.iter().map(|(p, m)| (p.addr, m.status())).collect::<Vec<_>>(), [(addr(ATTACKER), Some(403))]);
    let sent = deliver(&h, udp(PBX), &notify, 200);
    let relayed = only_to(&sent, phone);
    assert_eq!((relayed.method(), relayed.header(HeaderName::Route)), (Some(Method::Notify), None));
}
