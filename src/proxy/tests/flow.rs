//! Browser agents' WebSocket flows in the Record-Route: the token that brings the PBX's
//! in-dialog requests back to the right connection (the browser's `.invalid` Contact is never
//! resolved).

use super::*;
use crate::proxy::target::by_route;
use crate::proxy::{flow_token, parse_flow_token};

fn ws(s: &str) -> Peer {
    Peer { addr: addr(s), transport: Transport::Ws }
}

fn local() -> Local {
    Local { udp: Some(addr(US)), tcp: Some(addr(US)) }
}

fn request(start: &str, routes: &str) -> SipMessage {
    let text = format!(
        "{start}\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-f1\r\nRoute: {routes}\r\nFrom: <sip:79161234567@127.0.0.1:5080>;tag=p\r\n\
         To: <sip:101@127.0.0.1>;tag=b\r\nCall-ID: flow-1\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    SipMessage::parse(Bytes::from(text)).expect("a valid request")
}

#[test]
fn flow_tokens_round_trip_for_both_address_families_and_refuse_garbage() {
    for a in ["127.0.0.1:40123", "[2001:db8::7]:443", "10.1.2.3:1"] {
        let token = flow_token(addr(a));
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "{token}");
        assert_eq!(parse_flow_token(token.as_bytes()), Some(addr(a)));
    }
    for bad in ["", "cgf-", "cgf-7f000001", "cgf-zz000001-0001", "cgf-7f0000-0001", "101", "cgf-7f000001-fffff"] {
        assert_eq!(parse_flow_token(bad.as_bytes()), None, "{bad}");
    }
}

#[test]
fn record_route_toward_a_browser_names_its_flow_and_stays_single_on_udp() {
    let l = local();
    let rr = l.record_route(udp(PBX), ws("127.0.0.1:40123"));
    assert_eq!(rr, [format!("<sip:{}@127.0.0.1:5060;transport=ws;lr>", flow_token(addr("127.0.0.1:40123"))), OUR_ROUTE.to_owned()]);
    let back = l.record_route(ws("127.0.0.1:40123"), udp(PBX));
    assert_eq!(back, [OUR_ROUTE.to_owned(), format!("<sip:{}@127.0.0.1:5060;transport=ws;lr>", flow_token(addr("127.0.0.1:40123")))]);
    assert_eq!(l.record_route(udp(PBX), udp(PHONE_101)), [OUR_ROUTE.to_owned()]);
}

#[test]
fn the_pbx_in_dialog_request_goes_over_the_flow_in_the_route_and_the_browser_one_does_not_come_back() {
    let l = local();
    let flow = format!("<sip:{}@127.0.0.1:5060;transport=ws;lr>", flow_token(addr("127.0.0.1:40123")));
    // The PBX's route set (reversed Record-Route): our UDP face, then our WebSocket face.
    let from_pbx = request("BYE sip:x7@abc.invalid;transport=ws SIP/2.0", &format!("{OUR_ROUTE}, {flow}"));
    let hop = by_route(&from_pbx, &l, Transport::Udp).expect("routed by us").expect("a next hop");
    assert_eq!(hop.peer, ws("127.0.0.1:40123"));
    assert_eq!((hop.pop_route, hop.request_uri), (2, None));

    // The browser's route set names the same two values the other way round; its request goes on
    // to the PBX's Contact, never back over its own flow.
    let from_browser = request(&format!("BYE sip:79161234567@{PBX} SIP/2.0"), &format!("{flow}, {OUR_ROUTE}"));
    let hop = by_route(&from_browser, &l, Transport::Ws).expect("routed by us").expect("a next hop");
    assert_eq!(hop.peer, udp(PBX));
    assert_eq!(hop.pop_route, 2);
}
