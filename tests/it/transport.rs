//! Transports end to end (issue 16 items 4, 7, 8): the PBX on the transport its `pbx_host`
//! names whatever the phone uses, transport changes record-routed on both sides (RFC 5658) with
//! in-dialog requests both ways, TLS legs naming the TLS listener, a PBX dialled over TLS, a
//! refused connect answered 503 at once, STUN and CRLF keep-alives (RFC 5626), SUBSCRIBE
//! record-routed so its NOTIFY comes back through callgate, and `received`/`rport` on the
//! phone's Via (RFC 3581).
//!
//! SIPp plays the phones and the PBX where it can (TCP with `-t t1`); TLS peers, STUN and the
//! attacker are raw sockets (rustls, the test's development CA). Topology as everywhere: the PBX
//! on 127.0.0.1, phone 101 on 127.0.0.2, the attacker on 127.0.0.5. Every wait is bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use callgate::sip::core::{frame_stream, Frame, HeaderName, SipMessage};
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::common::sipp::Sipp;
use crate::common::{phone_ip, TestGateway, ATTACKER_IP, PBX_IP};
use crate::proxy::{Office, CUSTOMER};

const WAIT: Duration = Duration::from_secs(10);

fn talker(call: &serde_json::Value, which: &str) -> String {
    call[which]["extension"].as_str().unwrap_or("none").to_owned()
}

// ---------------------------------------------------------------------------------------------
// SIPp: a TCP phone in front of a UDP PBX, a PBX on TCP, a refused connect, a subscription.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_phone_calls_a_udp_pbx_and_either_side_hangs_up() {
    let o = Office::open("udp").await;
    let tcp = o.gw.addresses["sip_tcp"].clone();
    for (phone_scenario, pbx_scenario, who) in [("agent-dial.xml", "pbx-uas-answer.xml", "the phone"), ("agent-dial-wait-bye.xml", "pbx-uas-hangup.xml", "the PBX")] {
        let pbx = o.pbx_answers(pbx_scenario);
        let phone = Sipp::new(phone_scenario, &tcp).at(o.phones["101"]).key("ext", "101").key("dial", CUSTOMER).key("talk_ms", "300").args(&["-t", "t1"]).run().await;
        let pbx = pbx.wait().await;
        assert!(pbx.successful == 1 && pbx.failed == 0, "PBX (UDP), {who} hangs up:\n{}\n{}\nphone:\n{}\n{}", pbx.screen, pbx.errors, phone.screen, phone.errors);
        phone.assert_all_ok(1);
    }
    let (_, calls) = o.gw.api(Method::GET, "/api/v1/calls?limit=10", None).await;
    let answered = calls.as_array().unwrap().iter().filter(|c| c["kind"] == "outgoing" && c["outcome"] == "answered").count();
    assert_eq!(answered, 2, "{calls:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_phone_holds_and_resumes_a_udp_pbxs_call_and_the_pbx_hangs_up_over_its_connection() {
    let o = Office::open("udp").await;
    // 101's phone listens on TCP: the PBX's INVITE (UDP) reaches it over TCP, its re-INVITEs
    // (hold, resume) reach the PBX over UDP, the PBX's ACKs and BYE come back over TCP.
    o.set_contact("101", Some(&format!("sip:101@{};transport=tcp", o.phones["101"]))).await;
    let phone = Sipp::new("agent-hold.xml", &o.gw.addresses["sip_tcp"]).at(o.phones["101"]).key("ext", "101").key("hold_ms", "300").args(&["-t", "t1"]).spawn();
    let pbx = Sipp::new("pbx-answered-reinvite.xml", &o.sip).port(o.pbx).key("ext", "101").key("caller", CUSTOMER).key("xcid", "x-tcp-hold").key("reinvites", "2").key("hold_ms", "500").run().await;
    let phone = phone.wait().await;
    assert!(phone.successful == 1 && phone.failed == 0, "phone (TCP):\n{}\n{}\nPBX:\n{}", phone.screen, phone.errors, pbx.screen);
    pbx.assert_all_ok(1);
    let call = o.finished("x-tcp-hold").await;
    assert_eq!(call["conversations"].as_array().unwrap().len(), 1, "{call:#}");
    assert_eq!(call["legs"][0]["holds"].as_array().unwrap().len(), 1, "{call:#}");
}

/// The `name=value` a SIPp run logged last (`contact=<sip:...> path=<sip:...;lr>`).
fn logged<'a>(run: &'a crate::common::sipp::SippRun, name: &str) -> &'a str {
    let at = run.logs.rfind(&format!("{name}=")).unwrap_or_else(|| panic!("{name} logged: {}", run.logs));
    run.logs[at + name.len() + 1..].split_whitespace().next().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_phone_registers_with_a_udp_pbx_whose_path_names_callgates_udp_face_and_takes_its_call_along_it() {
    const PASSWORD: &str = "101-pbx-secret";
    let o = Office::open("udp").await;
    o.set_contact("101", None).await;
    let (phone, tcp) = (o.phones["101"], o.gw.addresses["sip_tcp"].clone());
    let pbx = Sipp::new("pbx-registrar.xml", &o.sip).port(o.pbx).key("user", "101").key("password", PASSWORD).key("realm", "pbx.office.example").key("granted", "600").spawn();
    let reg = Sipp::new("phone-register.xml", &tcp).at(phone).key("ext", "101").key("domain", "office.bitrix24.ru").key("expires", "600").key("granted", "600");
    let reg = reg.args(&["-t", "t1", "-au", "101", "-ap", PASSWORD, "-auth_uri", "office.bitrix24.ru"]).run().await;
    let pbx = pbx.wait().await;
    assert!(pbx.successful == 1 && pbx.failed == 0, "PBX registrar:\n{}\n{}\nphone:\n{}\n{}", pbx.screen, pbx.errors, reg.screen, reg.errors);
    reg.assert_all_ok(1);
    // The PBX reads the Path: it names where the PBX reaches callgate (UDP), not the phone's TCP.
    let (contact, path) = (logged(&pbx, "contact").trim_start_matches('<').trim_end_matches('>').to_owned(), logged(&pbx, "path").to_owned());
    assert!(path.ends_with(&format!("@{};lr>", o.sip)), "{path}");
    // The PBX calls the registered Contact along that Path; the phone answers over TCP.
    let answering = Sipp::new("agent-answer.xml", &tcp).at(phone).key("ext", "101").key("ring_ms", "100").args(&["-t", "t1"]).spawn();
    let pbx = Sipp::new("pbx-answered-path.xml", &o.sip).port(o.pbx).key("ext", "101").key("caller", CUSTOMER).key("xcid", "x-tcp-path").key("hold_ms", "300");
    let pbx = pbx.key("contact", &contact).key("path", &path).run().await;
    let answering = answering.wait().await;
    assert!(answering.successful == 1 && answering.failed == 0, "phone (TCP):\n{}\n{}\nPBX:\n{}\n{}", answering.screen, answering.errors, pbx.screen, pbx.errors);
    pbx.assert_all_ok(1);
    let call = o.finished("x-tcp-path").await;
    assert_eq!((call["outcome"].as_str(), talker(&call, "last_talker")), (Some("answered"), "101".into()), "{call:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pbx_on_tcp_is_reached_over_tcp_when_pbx_host_says_so() {
    let o = Office::open("udp").await;
    let pbx_host = format!("{PBX_IP}:{};transport=tcp", o.pbx);
    o.settings(|s| s["pbx_host"] = json!(pbx_host)).await;
    // The PBX listens on TCP only (SIPp -t t1); the phone is on UDP.
    let pbx = Sipp::new("pbx-uas-answer.xml", &o.sip).port(o.pbx).key("ring_ms", "200").key("talk_ms", "500").args(&["-t", "t1"]).spawn();
    o.agent_dials("101", "agent-dial.xml", CUSTOMER, pbx).await;
    let call = o.finished_where(|c| c["kind"] == "outgoing").await;
    assert_eq!((call["outcome"].as_str(), talker(&call, "last_talker")), (Some("answered"), "101".into()), "{call:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_pbx_transport_is_refused_naming_the_field() {
    let o = Office::open("udp").await;
    let path = format!("/api/v1/portals/{}/settings", o.portal);
    let mut settings = o.gw.api(Method::GET, &path, None).await.1;
    settings["pbx_host"] = json!(format!("{PBX_IP}:{};transport=sctp", o.pbx));
    let (status, body) = o.gw.api(Method::PUT, &path, Some(settings)).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("pbx_host") && body.to_string().contains("transport"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pbx_refusing_the_connection_gets_the_phone_a_503_at_once() {
    // A TCP port nobody listens on: the connect is refused.
    let closed = TcpListener::bind((PBX_IP, 0)).await.unwrap().local_addr().unwrap();
    let e = Edge::open(&format!("{closed};transport=tcp"), None).await;
    let phone = UdpSocket::bind((phone_ip("101"), 0)).await.unwrap();
    let me = phone.local_addr().unwrap();
    phone.send_to(phone_invite("refused-1", &format!("UDP {me}"), e.udp).as_bytes(), e.udp).await.unwrap();
    // The answers within WAIT (10 s): without the transport error the only final answer would be
    // a 408 after Timer B's 32 s. The 100 may come before or after the 503 (it leaves from the
    // UDP thread's batch, the 503 from the failed connect's task); a UA ignores a late 100.
    let status = final_status(&phone).await;
    assert_eq!(status, Some(503));
    let call = e.gw.finished_call(|c| c["kind"] == "outgoing").await;
    assert_eq!(call["legs"][0]["end_reason"]["status"], 503, "{call:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_is_record_routed_its_notify_reaches_the_phone_and_a_replayed_one_is_refused() {
    let o = Office::open("udp").await;
    let pbx = Sipp::new("pbx-notify.xml", &o.sip).port(o.pbx).spawn();
    let phone_addr = o.phones["101"];
    let phone = Sipp::new("phone-subscribe.xml", &o.sip).at(phone_addr).key("ext", "101").key("watch", "102").run().await;
    let pbx = pbx.wait().await;
    assert!(pbx.successful == 1 && pbx.failed == 0, "PBX:\n{}\n{}\nphone:\n{}\n{}", pbx.screen, pbx.errors, phone.screen, phone.errors);
    phone.assert_all_ok(1);
    // RFC 3581: the PBX saw where the phone's request really came from.
    let want = format!("received={};rport={}", phone_addr.ip(), phone_addr.port());
    assert!(pbx.logs.contains(&want), "the PBX's log: {}", pbx.logs);
    // The attacker replays the NOTIFY with callgate's Route from its own address: refused.
    let logged = |key: &str| pbx.logs.lines().find_map(|l| l.split_once(&format!("{key}=")).map(|(_, v)| v.trim().to_owned())).unwrap_or_else(|| panic!("{key} in {}", pbx.logs));
    let (rr, from, call_id, to_tag) = (logged("record-route"), logged("from"), logged("call-id"), logged("to-tag"));
    let attacker = UdpSocket::bind((ATTACKER_IP, 0)).await.unwrap();
    let notify = format!(
        "NOTIFY sip:101@{phone_addr} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK-replay\r\nRoute: {rr}\r\nMax-Forwards: 70\r\n\
         From: <sip:102@{}>;tag={to_tag}\r\nTo: {from}\r\nCall-ID: {call_id}\r\nCSeq: 2 NOTIFY\r\nEvent: dialog\r\n\
         Subscription-State: terminated\r\nContent-Length: 0\r\n\r\n",
        attacker.local_addr().unwrap(),
        o.sip
    );
    attacker.send_to(notify.as_bytes(), &o.sip).await.unwrap();
    let answer = recv_udp(&attacker).await;
    assert_eq!(answer.status(), Some(403), "{}", String::from_utf8_lossy(answer.as_bytes()));
}

// ---------------------------------------------------------------------------------------------
// Raw sockets: a gateway with a TLS listener, the PBX and phone 101 as sockets.

/// A gateway with SIP on UDP, TCP and TLS (a development CA made here), one portal whose PBX is
/// at `pbx_host`, phone 101's static contact on 127.0.0.2.
struct Edge {
    gw: TestGateway,
    udp: SocketAddr,
    tcp: SocketAddr,
    tls: SocketAddr,
    pki: callgate::tls::DevPki,
}

impl Edge {
    async fn open(pbx_host: &str, pbx_ca: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pki = callgate::tls::dev_pki(&["127.0.0.1".into()]).unwrap();
        let (cert, key, ca) = (dir.path().join("cert.pem"), dir.path().join("key.pem"), dir.path().join("pbx-ca.pem"));
        std::fs::write(&cert, &pki.cert_pem).unwrap();
        std::fs::write(&key, &pki.key_pem).unwrap();
        if let Some(pem) = pbx_ca {
            std::fs::write(&ca, pem).unwrap();
        }
        let mut gw = TestGateway::spawn_on(dir.path(), |cfg| {
            cfg.calls.linger = Duration::from_millis(300);
            cfg.sip.tls = "127.0.0.1:0".into();
            cfg.sip.tls_cert = cert.display().to_string();
            cfg.sip.tls_key = key.display().to_string();
            if pbx_ca.is_some() {
                cfg.sip.tls_ca_file = ca.display().to_string();
            }
        })
        .await;
        gw.keep_dir(dir);
        let addr = |k: &str| -> SocketAddr { gw.addresses[k].parse().unwrap() };
        let (udp, tcp, tls) = (addr("sip_udp"), addr("sip_tcp"), addr("sip_tls"));
        let id = gw.portal("office.bitrix24.ru").await;
        let settings = json!({"pbx_host": pbx_host, "trusted_pbx": ["127.0.0.1"], "incoming": {"default_responsible": 1}, "outgoing": {"default_responsible": 2}});
        let (status, body) = gw.api(Method::PUT, &format!("/api/v1/portals/{id}/settings"), Some(settings)).await;
        assert_eq!(status, 200, "{body}");
        let m = json!({"user_id": 11, "extension": "101", "use_for_personal_manager": true, "contact": format!("sip:101@{}:5060", phone_ip("101"))});
        let (status, body) = gw.api(Method::POST, &format!("/api/v1/portals/{id}/mappings"), Some(m)).await;
        assert_eq!(status, 201, "{body}");
        Self { gw, udp, tcp, tls, pki }
    }

    /// Phone 101 connecting to the TLS listener, trusting the test CA.
    async fn tls_phone(&self) -> tokio_rustls::client::TlsStream<TcpStream> {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(phone_ip("101"), 0)).unwrap();
        let tcp = sock.connect(self.tls).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(client_trusting(&self.pki.ca_pem));
        connector.connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await.expect("TLS handshake with the test CA")
    }
}

fn client_trusting(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(callgate::tls::provider()).with_safe_default_protocol_versions().unwrap().with_root_certificates(roots).with_no_client_auth();
    Arc::new(config)
}

/// One SIP datagram on `sock`, within [`WAIT`].
async fn recv_udp(sock: &UdpSocket) -> SipMessage {
    let mut buf = vec![0; 65_536];
    let (n, _) = tokio::time::timeout(WAIT, sock.recv_from(&mut buf)).await.expect("a datagram in time").unwrap();
    SipMessage::parse(Bytes::copy_from_slice(&buf[..n])).expect("SIP")
}

/// One SIP message from a stream (keep-alives skipped), within [`WAIT`].
async fn read_sip<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut) -> SipMessage {
    loop {
        match frame_stream(buf, 65_535).unwrap() {
            Frame::Complete(n) => return SipMessage::parse(buf.split_to(n).freeze()).unwrap(),
            Frame::KeepAlive(n) => drop(buf.split_to(n)),
            Frame::Incomplete => {
                let n = tokio::time::timeout(WAIT, stream.read_buf(buf)).await.expect("a message in time").unwrap();
                assert!(n > 0, "connection closed");
            }
        }
    }
}

/// The first final status `sock` receives (100s skipped), within [`WAIT`] each.
async fn final_status(sock: &UdpSocket) -> Option<u16> {
    for _ in 0..10 {
        let m = recv_udp(sock).await;
        if m.status() != Some(100) {
            return m.status();
        }
    }
    None
}

/// Exactly `want` from a stream, within [`WAIT`].
async fn read_exactly<S: AsyncRead + Unpin>(stream: &mut S, want: &[u8]) {
    let mut got = vec![0; want.len()];
    tokio::time::timeout(WAIT, stream.read_exact(&mut got)).await.expect("an answer in time").unwrap();
    assert_eq!(got, want);
}

fn values(msg: &SipMessage, name: HeaderName) -> Vec<String> {
    msg.values(name).map(|v| String::from_utf8_lossy(v.trim_ascii()).into_owned()).collect()
}

fn text(msg: &SipMessage) -> String {
    String::from_utf8_lossy(msg.as_bytes()).into_owned()
}

/// Phone 101's INVITE to the customer over `via` (`TLS 127.0.0.2:40000`).
fn phone_invite(call_id: &str, via: &str, ruri_host: SocketAddr) -> String {
    format!(
        "INVITE sip:{CUSTOMER}@{ruri_host} SIP/2.0\r\nVia: SIP/2.0/{via};branch=z9hG4bK-{call_id};rport\r\nMax-Forwards: 70\r\n\
         From: <sip:101@{ruri_host}>;tag=ph\r\nTo: <sip:{CUSTOMER}@{ruri_host}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:101@{via_addr}>\r\nContent-Length: 0\r\n\r\n",
        via_addr = via.split_once(' ').map_or(via, |(_, a)| a)
    )
}

/// The answer to `req` with `status`, Record-Route echoed and a Contact at `contact`.
fn answer(req: &SipMessage, status: u16, contact: &str) -> String {
    let mut out = format!("SIP/2.0 {status} Answer\r\n");
    for via in values(req, HeaderName::Via) {
        out.push_str(&format!("Via: {via}\r\n"));
    }
    for rr in values(req, HeaderName::RecordRoute) {
        out.push_str(&format!("Record-Route: {rr}\r\n"));
    }
    for name in [HeaderName::From, HeaderName::CallId, HeaderName::CSeq] {
        out.push_str(&format!("{}: {}\r\n", name.as_str(), String::from_utf8_lossy(req.header(name).unwrap())));
    }
    out.push_str(&format!("To: {};tag=pbx\r\nContact: <{contact}>\r\nContent-Length: 0\r\n\r\n", String::from_utf8_lossy(req.header(HeaderName::To).unwrap())));
    out
}

/// An in-dialog request with route set `routes` (first first) and the (From, To) values.
fn in_dialog(method: &str, ruri: &str, via: &str, routes: &[String], (from, to): (&str, &str), call_id: &str, cseq: u32) -> String {
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/{via};branch=z9hG4bK-{call_id}-{cseq}\r\nRoute: {}\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {to}\r\n\
         Call-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
        routes.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_phones_dialog_is_record_routed_through_the_tls_listener_both_ways() {
    let pbx = UdpSocket::bind((PBX_IP, 0)).await.unwrap();
    let e = Edge::open(&pbx.local_addr().unwrap().to_string(), None).await;
    let mut phone = e.tls_phone().await;
    let flow = phone.get_ref().0.local_addr().unwrap();
    let mut buf = BytesMut::new();
    phone.write_all(phone_invite("tls-1", &format!("TLS {flow}"), e.tls).as_bytes()).await.unwrap();
    let invite = recv_udp(&pbx).await;
    let rr = values(&invite, HeaderName::RecordRoute);
    assert_eq!(rr.len(), 2, "{}", text(&invite));
    assert!(rr[0].ends_with(&format!("@{};lr>", e.udp)), "the PBX's side: UDP listener: {rr:?}");
    assert!(rr[1].ends_with(&format!("@{};transport=tls;lr>", e.tls)), "the phone's side: the TLS listener: {rr:?}");
    assert!(values(&invite, HeaderName::Via)[1].ends_with(&format!("received={};rport={}", flow.ip(), flow.port())), "{}", text(&invite));
    // The PBX answers; the phone gets the 200 over its TLS connection.
    let pbx_contact = format!("sip:pbx@{}", pbx.local_addr().unwrap());
    pbx.send_to(answer(&invite, 200, &pbx_contact).as_bytes(), e.udp).await.unwrap();
    let ok = loop {
        let m = read_sip(&mut phone, &mut buf).await;
        if m.status() == Some(200) {
            break m;
        }
    };
    assert_eq!(values(&ok, HeaderName::RecordRoute), rr);
    let (from, to) = (String::from_utf8_lossy(ok.header(HeaderName::From).unwrap()).into_owned(), String::from_utf8_lossy(ok.header(HeaderName::To).unwrap()).into_owned());
    // The phone's ACK (route set reversed) reaches the PBX over UDP, our values popped.
    let phone_routes = [rr[1].clone(), rr[0].clone()];
    phone.write_all(in_dialog("ACK", &pbx_contact, &format!("TLS {flow}"), &phone_routes, (&from, &to), "tls-1", 1).as_bytes()).await.unwrap();
    let ack = recv_udp(&pbx).await;
    assert_eq!((ack.method_raw(), ack.header(HeaderName::Route)), (Some(&b"ACK"[..]), None), "{}", text(&ack));
    // The PBX's BYE comes back to the phone over its TLS connection.
    let bye = in_dialog("BYE", &format!("sip:101@{flow};transport=tls"), &format!("UDP {}", pbx.local_addr().unwrap()), &rr, (&to, &from), "tls-1", 1);
    pbx.send_to(bye.as_bytes(), e.udp).await.unwrap();
    let bye = read_sip(&mut phone, &mut buf).await;
    assert_eq!(bye.method_raw(), Some(&b"BYE"[..]), "{}", text(&bye));
    assert!(values(&bye, HeaderName::Via)[0].starts_with(&format!("SIP/2.0/TLS {};", e.tls)), "{}", text(&bye));
    // RFC 5626 §4.4.1 on the same connection: a double-CRLF ping gets a single-CRLF pong.
    phone.write_all(b"\r\n\r\n").await.unwrap();
    read_exactly(&mut phone, b"\r\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crlf_keepalives_on_tcp_are_answered_and_the_connection_stays_usable() {
    let pbx = UdpSocket::bind((PBX_IP, 0)).await.unwrap();
    let e = Edge::open(&pbx.local_addr().unwrap().to_string(), None).await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(phone_ip("101"), 0)).unwrap();
    let mut conn = sock.connect(e.tcp).await.unwrap();
    for _ in 0..3 {
        conn.write_all(b"\r\n\r\n").await.unwrap();
        read_exactly(&mut conn, b"\r\n").await;
    }
    // A pong from the phone (a single CRLF) is not answered; an OPTIONS after it is.
    let me = conn.local_addr().unwrap();
    let options = format!(
        "OPTIONS sip:{} SIP/2.0\r\nVia: SIP/2.0/TCP {me};branch=z9hG4bK-ka\r\nMax-Forwards: 70\r\nFrom: <sip:101@{me}>;tag=k\r\nTo: <sip:{}>\r\nCall-ID: ka\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        e.tcp, e.tcp
    );
    conn.write_all(b"\r\n").await.unwrap();
    conn.write_all(options.as_bytes()).await.unwrap();
    let mut first = [0u8; 12];
    tokio::time::timeout(WAIT, conn.read_exact(&mut first)).await.expect("an answer in time").unwrap();
    assert_eq!(&first, b"SIP/2.0 200 ", "the OPTIONS answer comes first: nothing was sent for the pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stun_binding_request_on_the_sip_port_gets_the_senders_address_and_garbage_gets_nothing() {
    let pbx = UdpSocket::bind((PBX_IP, 0)).await.unwrap();
    let e = Edge::open(&pbx.local_addr().unwrap().to_string(), None).await;
    let phone = UdpSocket::bind((phone_ip("101"), 0)).await.unwrap();
    let binding = |txid: &[u8; 12]| -> Vec<u8> { [&[0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42][..], txid].concat() };
    // STUN-looking but malformed (a length past the end), then a bad fingerprint-less garbage
    // attribute: no answer to either. Then a real keep-alive: its answer is the first datagram.
    let mut truncated = binding(b"malformed-01");
    truncated[3] = 8;
    phone.send_to(&truncated, e.udp).await.unwrap();
    let mut required = binding(b"malformed-02");
    required.extend_from_slice(&[0x00, 0x06, 0x00, 0x04, b'u', b's', b'e', b'r']);
    required[3] = 8;
    phone.send_to(&required, e.udp).await.unwrap();
    phone.send_to(&binding(b"keepalive-01"), e.udp).await.unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = tokio::time::timeout(WAIT, phone.recv_from(&mut buf)).await.expect("an answer in time").unwrap();
    assert_eq!(from, e.udp);
    let resp = &buf[..n];
    assert_eq!(&resp[..2], &[0x01, 0x01], "a Binding success response");
    assert_eq!(&resp[8..20], b"keepalive-01", "the keep-alive's, not a malformed one's");
    // XOR-MAPPED-ADDRESS (RFC 5389 §15.2), decoded here: the phone's own address and port.
    assert_eq!(&resp[20..24], &[0x00, 0x20, 0x00, 0x08]);
    assert_eq!(resp[25], 0x01, "IPv4");
    let port = u16::from_be_bytes([resp[26], resp[27]]) ^ 0x2112;
    let ip: Vec<u8> = resp[28..32].iter().zip([0x21, 0x12, 0xa4, 0x42]).map(|(a, k)| a ^ k).collect();
    let mapped = SocketAddr::from(([ip[0], ip[1], ip[2], ip[3]], port));
    assert_eq!(mapped, phone.local_addr().unwrap());
    // The SIP side is untouched: an OPTIONS to callgate is still answered.
    let me = phone.local_addr().unwrap();
    let options = format!("OPTIONS sip:{} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-o1\r\nMax-Forwards: 70\r\nFrom: <sip:101@{me}>;tag=o\r\nTo: <sip:{}>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", e.udp, e.udp);
    phone.send_to(options.as_bytes(), e.udp).await.unwrap();
    assert_eq!(recv_udp(&phone).await.status(), Some(200));
}

// ---------------------------------------------------------------------------------------------
// The PBX over TLS: dialled by callgate, its certificate checked.

/// A TLS "PBX" on 127.0.0.1 with a certificate from `pki`: accepts one connection, hands back
/// the first SIP message read and the stream.
async fn tls_pbx(pki: &callgate::tls::DevPki) -> (SocketAddr, tokio::task::JoinHandle<Option<(SipMessage, tokio_rustls::server::TlsStream<TcpStream>)>>) {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pki.cert_pem.as_bytes()).map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(callgate::tls::provider()).with_safe_default_protocol_versions().unwrap().with_no_client_auth().with_single_cert(chain, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind((PBX_IP, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (tcp, _) = tokio::time::timeout(WAIT, listener.accept()).await.ok()?.ok()?;
        let mut tls = tokio::time::timeout(WAIT, acceptor.accept(tcp)).await.ok()?.ok()?;
        let mut buf = BytesMut::new();
        let msg = read_sip(&mut tls, &mut buf).await;
        Some((msg, tls))
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pbx_on_tls_is_dialled_over_tls_and_its_certificate_is_checked() {
    let pbx_pki = callgate::tls::dev_pki(&["127.0.0.1".into()]).unwrap();
    let (pbx_addr, pbx) = tls_pbx(&pbx_pki).await;
    let e = Edge::open(&format!("{pbx_addr};transport=tls"), Some(&pbx_pki.ca_pem)).await;
    let phone = UdpSocket::bind((phone_ip("101"), 0)).await.unwrap();
    let me = phone.local_addr().unwrap();
    phone.send_to(phone_invite("to-tls-pbx", &format!("UDP {me}"), e.udp).as_bytes(), e.udp).await.unwrap();
    let (invite, mut conn) = tokio::time::timeout(WAIT, pbx).await.unwrap().unwrap().expect("the INVITE over TLS");
    assert!(values(&invite, HeaderName::Via)[0].starts_with(&format!("SIP/2.0/TLS {};", e.tls)), "{}", text(&invite));
    let rr = values(&invite, HeaderName::RecordRoute);
    assert!(rr[0].ends_with(&format!("@{};transport=tls;lr>", e.tls)) && rr[1].ends_with(&format!("@{};lr>", e.udp)), "{rr:?}");
    // The PBX answers over the connection callgate opened; the phone gets it over UDP.
    conn.write_all(answer(&invite, 486, &format!("sip:pbx@{pbx_addr};transport=tls")).as_bytes()).await.unwrap();
    let busy = loop {
        let m = recv_udp(&phone).await;
        if m.status() != Some(100) {
            break m;
        }
    };
    assert_eq!(busy.status(), Some(486), "{}", text(&busy));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pbx_whose_certificate_is_not_trusted_gets_no_call_and_the_phone_a_503_at_once() {
    // The PBX's certificate chains to a CA callgate was never told about.
    let stranger = callgate::tls::dev_pki(&["127.0.0.1".into()]).unwrap();
    let (pbx_addr, pbx) = tls_pbx(&stranger).await;
    let trusted = callgate::tls::dev_pki(&["127.0.0.1".into()]).unwrap();
    let e = Edge::open(&format!("{pbx_addr};transport=tls"), Some(&trusted.ca_pem)).await;
    let phone = UdpSocket::bind((phone_ip("101"), 0)).await.unwrap();
    let me = phone.local_addr().unwrap();
    phone.send_to(phone_invite("untrusted-pbx", &format!("UDP {me}"), e.udp).as_bytes(), e.udp).await.unwrap();
    assert_eq!(final_status(&phone).await, Some(503));
    assert!(tokio::time::timeout(WAIT, pbx).await.unwrap().unwrap().is_none(), "no SIP message reached the untrusted PBX");
}
