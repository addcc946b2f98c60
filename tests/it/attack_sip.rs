//! The security review's SIP attacks against a running gateway on real sockets: the PBX on
//! 127.0.0.1, phone 101 on 127.0.0.2 (its static contact), the attacker on 127.0.0.5 and the victim
//! on 127.0.0.6. Each test shows the attack refused (a 403 or nothing, nothing reaching the victim,
//! no tracked call) and, in the same test, the legitimate message beside it going through.
//!
//! "Nothing arrived" is read after a later message that took the same path did arrive (one UDP
//! socket, handled in order), or after a bounded wait where no such marker exists.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::SinkExt;
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{phone_ip, TestGateway, ATTACKER_IP, PBX_IP, VICTIM_IP};

/// A gateway with one portal: PBX socket on 127.0.0.1, phone 101 on 127.0.0.2, 102 without a
/// contact; an attacker's and a victim's sockets.
struct Edge {
    gw: TestGateway,
    udp: SocketAddr,
    tcp: SocketAddr,
    pbx: UdpSocket,
    phone: UdpSocket,
    attacker: UdpSocket,
    victim: UdpSocket,
    victim_tcp: TcpListener,
}

impl Edge {
    async fn open() -> Self {
        let gw = TestGateway::spawn().await;
        let udp: SocketAddr = gw.addresses["sip_udp"].parse().unwrap();
        let tcp: SocketAddr = gw.addresses["sip_tcp"].parse().unwrap();
        let pbx = UdpSocket::bind((PBX_IP, 0)).await.unwrap();
        let phone = UdpSocket::bind((phone_ip("101"), 0)).await.unwrap();
        let attacker = UdpSocket::bind((ATTACKER_IP, 0)).await.unwrap();
        let victim = UdpSocket::bind((VICTIM_IP, 0)).await.unwrap();
        let victim_tcp = TcpListener::bind((VICTIM_IP, 0)).await.unwrap();
        let id = gw.portal("office.bitrix24.ru").await;
        let settings = json!({"pbx_host": pbx.local_addr().unwrap().to_string(), "trusted_pbx": ["127.0.0.1"],
                              "incoming": {"default_responsible": 1}, "outgoing": {"default_responsible": 2}});
        let (status, body) = gw.api(Method::PUT, &format!("/api/v1/portals/{id}/settings"), Some(settings)).await;
        assert_eq!(status, 200, "{body}");
        for (user, ext, contact) in [(11, "101", Some(format!("sip:101@{}", phone.local_addr().unwrap()))), (12, "102", None)] {
            let m = json!({"user_id": user, "extension": ext, "use_for_personal_manager": true, "contact": contact});
            let (status, body) = gw.api(Method::POST, &format!("/api/v1/portals/{id}/mappings"), Some(m)).await;
            assert_eq!(status, 201, "{body}");
        }
        Self { gw, udp, tcp, pbx, phone, attacker, victim, victim_tcp }
    }

    async fn calls(&self) -> Vec<serde_json::Value> {
        self.gw.api(Method::GET, "/api/v1/calls?limit=100", None).await.1.as_array().cloned().unwrap_or_default()
    }
}

/// An INVITE from `from` (its Via and Contact), From 101, to `ruri`, with `extra` header lines.
fn invite(from: SocketAddr, transport: &str, ruri: &str, call_id: &str, extra: &str) -> String {
    format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/{transport} {from};branch=z9hG4bK-{call_id}\r\n{extra}Max-Forwards: 70\r\n\
         From: <sip:101@office.bitrix24.ru>;tag=a\r\nTo: <sip:0088216000001@office.bitrix24.ru>\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 INVITE\r\nContact: <sip:101@{from}>\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The same in compact form (RFC 3261 §7.3.3) and lower case, as an attacker varies it.
fn compact_invite(from: SocketAddr, ruri: &str, call_id: &str, extra: &str) -> String {
    format!(
        "INVITE {ruri} SIP/2.0\r\nv: SIP/2.0/UDP {from};branch=z9hG4bK-{call_id}\r\n{extra}max-forwards: 70\r\n\
         f: <sip:101@office.bitrix24.ru>;tag=a\r\nt: <sip:0088216000001@office.bitrix24.ru>\r\ni: {call_id}\r\n\
         CSeq: 1 INVITE\r\nm: <sip:101@{from}>\r\nl: 0\r\n\r\n"
    )
}

async fn send(sock: &UdpSocket, to: SocketAddr, text: &str) {
    sock.send_to(text.as_bytes(), to).await.unwrap();
}

/// The next datagram on `sock` (within 5 s), as text.
async fn recv(sock: &UdpSocket) -> String {
    let mut buf = vec![0u8; 65536];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf)).await.expect("a datagram within 5 s").unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The next datagram that is not `100 Trying`.
async fn recv_final(sock: &UdpSocket) -> String {
    for _ in 0..5 {
        let m = recv(sock).await;
        if !m.starts_with("SIP/2.0 100") {
            return m;
        }
    }
    panic!("only 100 Trying");
}

/// Whatever is already waiting on `sock` (nothing blocks).
fn pending(sock: &UdpSocket) -> Vec<String> {
    let mut buf = vec![0u8; 65536];
    let mut got = Vec::new();
    while let Ok((n, _)) = sock.try_recv_from(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        if got.len() > 100 {
            break;
        }
    }
    got
}

/// One request over a fresh TCP connection from the attacker's address; the first answer.
async fn over_tcp(to: SocketAddr, text: &str) -> String {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(ATTACKER_IP, 0)).unwrap();
    let mut stream = sock.connect(to).await.unwrap();
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.expect("an answer").unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn status_line(m: &str) -> &str {
    m.lines().next().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toll_fraud_from_an_outsider_is_refused_on_every_transport_while_the_agents_call_goes_out() {
    let e = Edge::open().await;
    let a = e.attacker.local_addr().unwrap();
    send(&e.attacker, e.udp, &invite(a, "UDP", "sip:0088216000001@callgate", "fraud-udp", "")).await;
    assert_eq!(status_line(&recv(&e.attacker).await), "SIP/2.0 403 Forbidden");
    send(&e.attacker, e.udp, &compact_invite(a, "sip:0088216000001@callgate", "fraud-compact", "")).await;
    assert_eq!(status_line(&recv(&e.attacker).await), "SIP/2.0 403 Forbidden");
    let tcp = over_tcp(e.tcp, &invite(a, "TCP", "sip:0088216000001@callgate", "fraud-tcp", "")).await;
    assert_eq!(status_line(&tcp), "SIP/2.0 403 Forbidden");

    // Legitimate: phone 101 at its contact dials the same number; the PBX gets that INVITE first.
    let p = e.phone.local_addr().unwrap();
    send(&e.phone, e.udp, &invite(p, "UDP", "sip:0088216000001@callgate", "legit-out", "")).await;
    let at_pbx = recv(&e.pbx).await;
    assert!(at_pbx.starts_with("INVITE sip:0088216000001@127.0.0.1:"), "{at_pbx}");
    assert!(at_pbx.contains("Call-ID: legit-out"), "the fraud never reached the PBX: {at_pbx}");
    let calls = e.calls().await;
    assert!(calls.iter().all(|c| !c.to_string().contains("fraud")), "no tracked fraud call: {calls:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_relay_by_route_or_to_tag_never_reaches_the_victim() {
    let e = Edge::open().await;
    let (a, v) = (e.attacker.local_addr().unwrap(), e.victim.local_addr().unwrap());
    let route = format!("Route: <sip:{};lr>, <sip:{v};lr>\r\nCall-Info: <sip:x>;answer-after=0\r\n", e.udp);
    send(&e.attacker, e.udp, &invite(a, "UDP", &format!("sip:u@{v}"), "relay-1", &route)).await;
    assert_eq!(status_line(&recv(&e.attacker).await), "SIP/2.0 403 Forbidden");
    let lower = route.replace("Route:", "route:");
    send(&e.attacker, e.udp, &compact_invite(a, &format!("sip:u@{v}"), "relay-2", &lower)).await;
    assert_eq!(status_line(&recv(&e.attacker).await), "SIP/2.0 403 Forbidden");
    let message = format!(
        "MESSAGE sip:u@{v} SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bK-m1\r\nMax-Forwards: 70\r\nFrom: <sip:101@x>;tag=a\r\n\
         To: <sip:u@x>;tag=t\r\nCall-ID: relay-3\r\nCSeq: 1 MESSAGE\r\nContent-Length: 5\r\n\r\nhello"
    );
    send(&e.attacker, e.udp, &message).await;
    assert_eq!(status_line(&recv(&e.attacker).await), "SIP/2.0 403 Forbidden");
    let tcp = over_tcp(e.tcp, &message.replace("SIP/2.0/UDP", "SIP/2.0/TCP").replace("relay-3", "relay-4")).await;
    assert_eq!(status_line(&tcp), "SIP/2.0 403 Forbidden");

    // The agent's INVITE with that Route and auto-answer goes to its PBX only, stripped of both.
    let p = e.phone.local_addr().unwrap();
    send(&e.phone, e.udp, &invite(p, "UDP", &format!("sip:u@{v}"), "legit-route", &route)).await;
    let at_pbx = recv(&e.pbx).await;
    assert!(at_pbx.contains("Call-ID: legit-route"), "{at_pbx}");
    assert!(!at_pbx.lines().any(|l| l.starts_with("Route:")) && !at_pbx.contains("answer-after"), "{at_pbx}");
    assert_eq!(pending(&e.victim), Vec::<String>::new());
    assert!(tokio::time::timeout(Duration::from_millis(300), e.victim_tcp.accept()).await.is_err(), "no connection to the victim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_hijack_binds_nothing_and_an_overflowing_expires_stops_no_listener() {
    let e = Edge::open().await;
    let a = e.attacker.local_addr().unwrap();
    let register = format!(
        "REGISTER sip:office.bitrix24.ru SIP/2.0\r\nVia: SIP/2.0/UDP {a};branch=z9hG4bK-r1\r\nRoute: <sip:{};lr>, <sip:{a};lr>\r\n\
         Max-Forwards: 70\r\nFrom: <sip:102@office.bitrix24.ru>;tag=r\r\nTo: <sip:102@office.bitrix24.ru>\r\nCall-ID: hijack-1\r\n\
         CSeq: 1 REGISTER\r\nContact: <sip:102@{a}>;expires=3600\r\nContent-Length: 0\r\n\r\n",
        e.udp
    );
    send(&e.attacker, e.udp, &register).await;
    // It reaches the PBX (the registrar) only, without the attacker's Route.
    let at_pbx = recv(&e.pbx).await;
    assert!(at_pbx.starts_with("REGISTER ") && !at_pbx.lines().any(|l| l.starts_with("Route:")), "{at_pbx}");
    let branch = at_pbx.lines().find(|l| l.starts_with("Via:")).unwrap().split("branch=").nth(1).unwrap().trim().to_owned();
    let vias: Vec<&str> = at_pbx.lines().filter(|l| l.starts_with("Via:")).collect();
    let ok = |expires: &str| {
        format!(
            "SIP/2.0 200 OK\r\n{}\r\nFrom: <sip:102@office.bitrix24.ru>;tag=r\r\nTo: <sip:102@office.bitrix24.ru>;tag=pbx\r\nCall-ID: hijack-1\r\n\
             CSeq: 1 REGISTER\r\nContact: <sip:102@{a}>\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n",
            vias.join("\r\n")
        )
    };
    assert!(branch.len() > 40, "an unguessable branch: {branch}");
    // The attacker answers the relayed REGISTER itself (it guessed the branch): nothing binds.
    send(&e.attacker, e.udp, &ok("3600")).await;
    let pbx_call = |id: &str| {
        format!(
            "INVITE sip:102@{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK-{id}\r\nMax-Forwards: 70\r\nFrom: <sip:79161234567@pbx>;tag=p\r\n\
             To: <sip:102@callgate>\r\nCall-ID: {id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
            e.udp,
            e.pbx.local_addr().unwrap()
        )
    };
    send(&e.pbx, e.udp, &pbx_call("after-forged-200")).await;
    assert_eq!(status_line(&recv_final(&e.pbx).await), "SIP/2.0 480 Temporarily Unavailable");
    assert_eq!(pending(&e.attacker), Vec::<String>::new(), "the customer's call is not the attacker's");

    // The PBX's own 200 with an Expires past u64: the listener keeps serving, /ready stays 200.
    send(&e.pbx, e.udp, &ok("18446744073709551616999")).await;
    send(&e.pbx, e.udp, &ok("18446744073709551615")).await;
    let options = format!(
        "OPTIONS sip:{} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK-o1\r\nFrom: <sip:p@x>;tag=1\r\nTo: <sip:c@x>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        e.udp,
        e.pbx.local_addr().unwrap()
    );
    send(&e.pbx, e.udp, &options).await;
    let mut answer = recv(&e.pbx).await;
    for _ in 0..5 {
        if answer.contains("Call-ID: o1") {
            break;
        }
        answer = recv(&e.pbx).await;
    }
    assert_eq!(status_line(&answer), "SIP/2.0 200 OK");
    let ready = e.gw.client.get(format!("{}/ready", e.gw.base)).send().await.unwrap().status();
    assert_eq!(ready, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_responses_over_udp_or_an_unregistered_websocket_open_nothing_toward_a_victim() {
    let e = Edge::open().await;
    let victim = e.victim_tcp.local_addr().unwrap();
    let forged = format!(
        "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK-x, SIP/2.0/TCP {victim};branch=y\r\nFrom: <sip:a@b>;tag=1\r\n\
         To: <sip:c@d>;tag=2\r\nCall-ID: ssrf\r\nCSeq: 1 OPTIONS\r\nContent-Length: 25\r\n\r\n*1\r\n$8\r\nFLUSHALL\r\nSET x 1",
        e.udp
    );
    send(&e.attacker, e.udp, &forged).await;
    // Over the public HTTP port: a WebSocket that never registered.
    let url = format!("{}/sip", e.gw.base.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
    let stream = {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(ATTACKER_IP, 0)).unwrap();
        sock.connect(e.gw.base.trim_start_matches("http://").parse().unwrap()).await.unwrap()
    };
    let (mut ws, _) = tokio_tungstenite::client_async(req, stream).await.expect("websocket upgrade");
    ws.send(Message::text(forged.replace("SIP/2.0/UDP", "SIP/2.0/WSS"))).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(500), e.victim_tcp.accept()).await.is_err(), "callgate dialled the victim");

    // Legitimate: the phone's answer to the PBX's call is relayed; the attacker's, for the same
    // branch, is not.
    let pbx = e.pbx.local_addr().unwrap();
    let call = format!(
        "INVITE sip:101@{} SIP/2.0\r\nVia: SIP/2.0/UDP {pbx};branch=z9hG4bK-c1\r\nMax-Forwards: 70\r\nFrom: <sip:79161234567@pbx>;tag=p\r\n\
         To: <sip:101@callgate>\r\nCall-ID: legit-in\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        e.udp
    );
    send(&e.pbx, e.udp, &call).await;
    let at_phone = recv(&e.phone).await;
    let answer = |status: &str| {
        let vias: Vec<&str> = at_phone.lines().filter(|l| l.starts_with("Via:")).collect();
        format!(
            "SIP/2.0 {status}\r\n{}\r\nFrom: <sip:79161234567@pbx>;tag=p\r\nTo: <sip:101@callgate>;tag=ph\r\nCall-ID: legit-in\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
            vias.join("\r\n")
        )
    };
    send(&e.attacker, e.udp, &answer("486 Busy Here")).await;
    send(&e.phone, e.udp, &answer("180 Ringing")).await;
    assert_eq!(status_line(&recv_final(&e.pbx).await), "SIP/2.0 180 Ringing", "the attacker's 486 was dropped");
    let mut probe = TcpStream::connect(victim).await.unwrap();
    probe.write_all(b"x").await.unwrap();
    let (mut first, _) = e.victim_tcp.accept().await.unwrap();
    let mut buf = [0u8; 1];
    first.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"x", "the only connection the victim saw is the test's own probe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_portal_trusts_no_address_until_the_operator_names_its_pbx() {
    let gw = TestGateway::spawn().await;
    let udp: SocketAddr = gw.addresses["sip_udp"].parse().unwrap();
    let id = gw.portal("office.bitrix24.ru").await;
    let (_, settings) = gw.api(Method::GET, &format!("/api/v1/portals/{id}/settings"), None).await;
    assert_eq!((settings["trusted_pbx"].clone(), settings["pbx_host"].clone()), (json!([]), json!("")));
    let pbx = UdpSocket::bind((PBX_IP, 0)).await.unwrap();
    let ask = |id: &str| {
        format!(
            "INVITE sip:pm-route@{udp} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK-{id}\r\nMax-Forwards: 70\r\nFrom: <sip:79161234567@pbx>;tag=p\r\n\
             To: <sip:pm-route@callgate>\r\nCall-ID: {id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
            pbx.local_addr().unwrap()
        )
    };
    send(&pbx, udp, &ask("untrusted")).await;
    assert_eq!(status_line(&recv_final(&pbx).await), "SIP/2.0 403 Forbidden", "even from 127.0.0.1");
    let (status, body) = gw.call(Method::GET, "/api/v1/route?caller=79161234567", None, None).await;
    assert!(status == 403 || status == 401, "{status} {body}");
    let (status, body) = gw.api(Method::PUT, &format!("/api/v1/portals/{id}/settings"), Some(json!({"trusted_pbx": ["127.0.0.1"], "pbx_host": pbx.local_addr().unwrap().to_string(), "active": true,
        "incoming": {"default_responsible": 1}, "outgoing": {"default_responsible": 1}}))).await;
    assert_eq!(status, 200, "{body}");
    send(&pbx, udp, &ask("trusted")).await;
    let answer = recv_final(&pbx).await;
    assert_ne!(status_line(&answer), "SIP/2.0 403 Forbidden", "{answer}");
}
