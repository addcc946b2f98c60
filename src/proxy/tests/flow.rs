//! Browser agents' WebSocket flows in the Record-Route: the signed dialog token names both ends,
//! so the PBX's in-dialog requests go back over the browser's connection (its `.invalid`
//! Contact is never resolved) and the browser's go to the PBX, never elsewhere.

use super::*;
use crate::proxy::target::{route_head, to_other_end, RouteHead};
use crate::proxy::trust::{RouteKey, Token};

fn ws(s: &str) -> Peer {
    Peer { addr: addr(s), transport: Transport::Ws }
}

fn local() -> Local {
    Local { udp: Some(addr(US)), tcp: Some(addr(US)), tls: None }
}

fn request(start: &str, routes: &str) -> SipMessage {
    let text = format!(
        "{start}\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-f1\r\nRoute: {routes}\r\nFrom: <sip:79161234567@127.0.0.1:5080>;tag=p\r\n\
         To: <sip:101@127.0.0.1>;tag=b\r\nCall-ID: flow-1\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    SipMessage::parse(Bytes::from(text)).expect("a valid request")
}

#[test]
fn record_route_toward_a_browser_is_doubled_and_stays_single_on_udp() {
    let l = local();
    let rr = l.record_route(udp(PBX), ws("127.0.0.1:40123"), "cgr.t", false);
    assert_eq!(rr, ["<sip:cgr.t@127.0.0.1:5060;transport=ws;lr>".to_owned(), "<sip:cgr.t@127.0.0.1:5060;lr>".to_owned()]);
    let back = l.record_route(ws("127.0.0.1:40123"), udp(PBX), "cgr.t", false);
    assert_eq!(back, ["<sip:cgr.t@127.0.0.1:5060;lr>".to_owned(), "<sip:cgr.t@127.0.0.1:5060;transport=ws;lr>".to_owned()]);
    assert_eq!(l.record_route(udp(PBX), udp(PHONE_101), "cgr.t", false), ["<sip:cgr.t@127.0.0.1:5060;lr>".to_owned()]);
}

#[test]
fn the_pbx_in_dialog_request_goes_over_the_browser_flow_and_the_browser_one_to_the_pbx() {
    let (l, key) = (local(), RouteKey::new(&[3; 32]));
    let browser = ws("127.0.0.1:40123");
    let user = key.dialog(udp(PBX), browser, b"flow-1");
    let [ours_ws, ours_udp] = [format!("<sip:{user}@127.0.0.1:5060;transport=ws;lr>"), format!("<sip:{user}@127.0.0.1:5060;lr>")];
    // The PBX's route set (reversed Record-Route): our UDP face, then our WebSocket face.
    let from_pbx = request("BYE sip:x7@abc.invalid;transport=ws SIP/2.0", &format!("{ours_udp}, {ours_ws}"));
    let RouteHead::Ours { ours, token: Some(Ok(Token::Dialog { a, b })) } = route_head(&from_pbx, &l, &key) else { panic!("our dialog") };
    assert_eq!((ours, a, b), (2, udp(PBX), browser));
    let hop = to_other_end(&from_pbx, b, ours);
    assert_eq!((hop.peer, hop.request_uri, hop.pop_route), (browser, None, 2));

    // The browser's request names a Contact of its choosing: it still goes to the PBX's flow.
    let from_browser = request("BYE sip:79161234567@127.0.0.6:5060 SIP/2.0", &format!("{ours_ws}, {ours_udp}"));
    let RouteHead::Ours { ours, token: Some(Ok(Token::Dialog { a, .. })) } = route_head(&from_browser, &l, &key) else { panic!("our dialog") };
    assert_eq!(to_other_end(&from_browser, a, ours).peer, udp(PBX));

    // Another dialog's Call-ID, or one value forged: not ours.
    let forged = request("BYE sip:x@127.0.0.6 SIP/2.0", &format!("{ours_udp}, <sip:cgr.u7f0000050001.u7f0000060001.00@127.0.0.1:5060;transport=ws;lr>"));
    assert!(matches!(route_head(&forged, &l, &key), RouteHead::Ours { token: Some(Err(())), .. }));
}

#[test]
fn an_in_dialog_request_for_a_phone_on_tcp_goes_over_its_connection_not_to_its_contact_port() {
    let (l, key) = (local(), RouteKey::new(&[3; 32]));
    // The phone connected from an ephemeral port; its Contact names its listening port.
    let phone = Peer { addr: addr("127.0.0.1:40555"), transport: Transport::Tcp };
    let user = key.dialog(udp(PBX), phone, b"flow-1");
    let bye = request("BYE sip:101@127.0.0.1:5062;transport=tcp SIP/2.0", &format!("<sip:{user}@127.0.0.1:5060;lr>"));
    let RouteHead::Ours { ours, token: Some(Ok(Token::Dialog { b, .. })) } = route_head(&bye, &l, &key) else { panic!("our dialog") };
    assert_eq!(to_other_end(&bye, b, ours).peer, phone);

    // Over UDP the Contact's port on the flow's host is used (a phone sending from a second socket).
    let phone = udp("127.0.0.1:40556");
    let user = key.dialog(udp(PBX), phone, b"flow-1");
    let bye = request("BYE sip:101@127.0.0.1:5062 SIP/2.0", &format!("<sip:{user}@127.0.0.1:5060;lr>"));
    let RouteHead::Ours { ours, token: Some(Ok(Token::Dialog { b, .. })) } = route_head(&bye, &l, &key) else { panic!("our dialog") };
    assert_eq!(to_other_end(&bye, b, ours).peer, udp("127.0.0.1:5062"));
}
