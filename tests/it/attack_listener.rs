//! Nothing from the wire stops a listener, and secrets at rest stay private.
//!
//! - A panic while handling a message (a bug a message reaches) is caught, counted in
//!   `callgate_listener_panics_total`, and the listener answers the next message, on UDP, on
//!   the same TCP connection and on the same WebSocket flow.
//! - The review's F4: a registrar's 200 with `Expires: 18446744073709551615` once killed the
//!   UDP thread while `/ready` stayed 200. Now UDP keeps answering and `/ready` says so.
//! - A listener loop that ends anyway (its socket broke under it) turns `/ready` into 503 with
//!   `"listeners": {"sip_udp": "stopped"}`, while the TCP listener beside it still answers.
//! - Secrets at rest: the binary, started with umask 022, keeps its data folder 0700 and the
//!   database, its `-wal` and `-shm`, and `admin.token` 0600, also when an earlier run left them
//!   readable by others.
//!
//! Topology: the PBX on 127.0.0.1, a phone on 127.0.0.3, the attacker on 127.0.0.5.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use callgate::sip::transport::{serve_tcp, Hub, Outbox, Peer, SipHandler, TcpLimits, UdpDriver};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::common::TestGateway;

const ATTACKER: &str = "127.0.0.5";

/// Answers everything with a 200, except a request whose method is `CRASH`: a stand-in for
/// any bug a message can reach inside the handler.
struct Fragile;

impl SipHandler for Fragile {
    fn on_message(&self, data: Bytes, _: Peer, _: Instant, out: &mut Outbox) {
        assert!(!data.starts_with(b"CRASH "), "a bug reached by a message");
        out.reply.extend_from_slice(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n");
    }
    fn on_bad_frame(&self, _: &[u8], _: Peer, _: &mut BytesMut) {}
    fn on_tick(&self, _: Instant, _: &mut Outbox) {}
}

fn request(method: &str) -> Vec<u8> {
    format!("{method} sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {ATTACKER}:5060;branch=z9hG4bK-1\r\nCall-ID: p\r\nContent-Length: 0\r\n\r\n").into_bytes()
}

fn udp_from(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Reads one datagram, or `None` within the socket's timeout.
fn recv(s: &UdpSocket) -> Option<String> {
    let mut buf = [0u8; 65_536];
    s.recv(&mut buf).ok().map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_handling_a_message_is_counted_and_the_listener_answers_the_next_one() {
    crate::common::init_tracing();
    let metrics = callgate::telemetry::metrics();
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let hub = Hub::new(Arc::new(Fragile), TcpLimits::default(), tasks.clone(), cancel.clone());
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_addr = udp.local_addr().unwrap();
    let driver = UdpDriver::spawn(udp, 1, 65_535, &hub).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    tasks.spawn(serve_tcp(tcp, Arc::clone(&hub), tasks.clone()));

    let outcome = tokio::task::spawn_blocking(move || {
        // UDP: the crash gets no answer; the next request does.
        let attacker = udp_from(ATTACKER);
        attacker.send_to(&request("CRASH"), udp_addr).unwrap();
        attacker.send_to(&request("OPTIONS"), udp_addr).unwrap();
        let udp_answer = recv(&attacker);
        // TCP: the same connection survives its crash.
        let mut conn = TcpStream::connect(tcp_addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(&[request("CRASH"), request("OPTIONS")].concat()).unwrap();
        let mut got = [0u8; 256];
        let n = conn.read(&mut got).unwrap_or(0);
        (udp_answer, String::from_utf8_lossy(&got[..n]).into_owned())
    })
    .await
    .unwrap();
    assert!(outcome.0.is_some_and(|a| a.starts_with("SIP/2.0 200")), "UDP answers after the panic");
    assert!(outcome.1.starts_with("SIP/2.0 200 OK\r\n"), "the TCP connection answers after the panic: {:?}", outcome.1);
    let listeners = hub.listeners();
    assert_eq!((listeners.panics("sip_udp"), listeners.panics("sip_tcp")), (1, 1));
    assert!(listeners.all_running(), "{:?}", listeners.states());
    let text = metrics.render();
    assert!(text.lines().any(|l| l.starts_with("callgate_listener_panics_total{listener=\"sip_udp\"}")), "the panic is in /metrics");

    cancel.cancel();
    tokio::task::spawn_blocking(move || driver.join()).await.unwrap();
    tasks.close();
    tasks.wait().await;
}

#[tokio::test]
async fn a_panic_while_handling_a_websocket_message_leaves_the_flow_open_and_answering() {
    use callgate::sip::transport::{WsEndpoint, WsLimits};
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let (tasks, cancel) = (TaskTracker::new(), CancellationToken::new());
    let hub = Hub::new(Arc::new(Fragile), TcpLimits::default(), tasks.clone(), cancel.clone());
    let ep = WsEndpoint::new(Arc::clone(&hub), WsLimits::default(), tasks.clone());
    let url = crate::common::serve_sip_websocket(ep, cancel.clone()).await;
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
    let mut ws = tokio_tungstenite::connect_async(req).await.unwrap().0;

    ws.send(Message::binary(request("CRASH"))).await.unwrap();
    ws.send(Message::binary(request("OPTIONS"))).await.unwrap();
    let answer = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("an answer in time").expect("the flow stays open").unwrap() {
            Message::Text(t) => break t.as_str().to_owned(),
            Message::Binary(b) => break String::from_utf8_lossy(&b).into_owned(),
            _ => {}
        }
    };
    assert!(answer.starts_with("SIP/2.0 200 OK"), "{answer:?}");
    assert_eq!(hub.listeners().panics("sip_ws"), 1);
    cancel.cancel();
}

async fn ready(gw: &TestGateway) -> (u16, Value) {
    gw.call(Method::GET, "/ready", None, None).await
}

/// A portal whose PBX is `pbx` (a socket of the test) with extension 102 (no static contact).
async fn office(gw: &TestGateway, pbx: SocketAddr) {
    let id = gw.portal("listen.bitrix24.ru").await;
    let (status, body) = gw.api(Method::PUT, &format!("/api/v1/portals/{id}/settings"), Some(json!({ "active": true, "pbx_host": pbx.to_string(), "incoming": { "default_responsible": 1 }, "outgoing": { "default_responsible": 1 } }))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = gw.api(Method::POST, &format!("/api/v1/portals/{id}/mappings"), Some(json!({ "user_id": 12, "extension": "102" }))).await;
    assert_eq!(status, 201, "{body}");
}

fn register(phone: SocketAddr, expires: &str) -> String {
    format!(
        "REGISTER sip:listen.bitrix24.ru SIP/2.0\r\nVia: SIP/2.0/UDP {phone};branch=z9hG4bK-reg-{expires};rport\r\nMax-Forwards: 70\r\nFrom: <sip:102@listen.bitrix24.ru>;tag=r1\r\nTo: <sip:102@listen.bitrix24.ru>\r\nCall-ID: reg-102-{expires}\r\nCSeq: 1 REGISTER\r\nContact: <sip:102@{phone}>;expires={expires}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The PBX's 200 to a relayed REGISTER, with `expires`.
fn registered(req: &str, expires: &str) -> String {
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for line in req.split("\r\n").skip(1).take_while(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or_default().to_ascii_lowercase();
        match name.as_str() {
            "via" | "from" | "call-id" | "cseq" => out.push_str(&format!("{line}\r\n")),
            "to" => out.push_str(&format!("{line};tag=pbx\r\n")),
            "contact" => out.push_str(&format!("{}\r\n", line.split(";expires").next().unwrap_or(line))),
            _ => {}
        }
    }
    out.push_str(&format!("Expires: {expires}\r\nContent-Length: 0\r\n\r\n"));
    out
}

/// The PBX's redirect question (its routing user): always answered, whatever the decision.
fn redirect_question(pbx: SocketAddr, n: u32) -> String {
    format!("INVITE sip:pm-route@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {pbx};branch=z9hG4bK-q{n}\r\nMax-Forwards: 70\r\nFrom: <sip:79161234567@pbx>;tag=q\r\nTo: <sip:pm-route@127.0.0.1>\r\nCall-ID: q{n}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registrar_answer_with_an_absurd_expires_does_not_stop_the_udp_listener() {
    let gw = TestGateway::spawn().await;
    let sip: SocketAddr = gw.addresses["sip_udp"].parse().unwrap();
    let (pbx, phone) = (udp_from("127.0.0.1"), udp_from("127.0.0.3"));
    let (pbx_addr, phone_addr) = (pbx.local_addr().unwrap(), phone.local_addr().unwrap());
    office(&gw, pbx_addr).await;
    let (status, body) = ready(&gw).await;
    assert_eq!((status, &body["listeners"]["sip_udp"]), (200, &json!("running")), "{body}");

    let answers = tokio::task::spawn_blocking(move || {
        // The PBX answers the relayed REGISTER with the largest number a u64 holds.
        phone.send_to(register(phone_addr, "3600").as_bytes(), sip).unwrap();
        let relayed = recv(&pbx);
        if let Some(req) = relayed.as_deref().filter(|r| r.starts_with("REGISTER ")) {
            pbx.send_to(registered(req, "18446744073709551615").as_bytes(), sip).unwrap();
        }
        let _ = recv(&phone); // the 200 relayed back, if the proxy keeps it
        // UDP is still served: the PBX's next question is answered.
        pbx.send_to(redirect_question(pbx_addr, 1).as_bytes(), sip).unwrap();
        let mut answer = None;
        for _ in 0..5 {
            match recv(&pbx) {
                Some(a) if a.starts_with("SIP/2.0 1") => continue,
                other => {
                    answer = other;
                    break;
                }
            }
        }
        (relayed.is_some(), answer)
    })
    .await
    .unwrap();
    assert!(answers.0, "the REGISTER reached the PBX");
    assert!(answers.1.as_deref().is_some_and(|a| a.starts_with("SIP/2.0 ")), "UDP answers after the absurd Expires: {:?}", answers.1);
    let (status, body) = ready(&gw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["listeners"]["sip_udp"], "running");
    assert_eq!(body["ready"], true);
}

/// Replaces the gateway's UDP socket (found by its bound address among this process's file
/// descriptors) with /dev/null: the receive thread's socket is gone, as after a driver bug.
fn break_udp_socket(addr: SocketAddr) {
    let devnull = std::fs::File::open("/dev/null").unwrap();
    let mut broken = 0;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let sock = std::mem::ManuallyDrop::new(unsafe { <socket2::Socket as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        let dgram = sock.r#type().is_ok_and(|t| t == socket2::Type::DGRAM);
        if dgram && sock.local_addr().ok().and_then(|a| a.as_socket()) == Some(addr) {
            // dup2 swaps the descriptor atomically: its number is never free for reuse.
            assert!(unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&devnull), fd) } >= 0);
            broken += 1;
        }
    }
    assert_eq!(broken, 1, "exactly one socket bound to {addr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_listener_whose_loop_ends_makes_ready_503_while_tcp_still_answers() {
    let gw = TestGateway::spawn().await;
    let sip: SocketAddr = gw.addresses["sip_udp"].parse().unwrap();
    let tcp: SocketAddr = gw.addresses["sip_tcp"].parse().unwrap();
    let (status, body) = ready(&gw).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["listeners"], json!({ "sip_tcp": "running", "sip_timers": "running", "sip_udp": "running" }));

    break_udp_socket(sip);
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = ready(&gw).await;
        if status == 503 {
            break body;
        }
        assert!(Instant::now() < deadline, "/ready still {status}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["listeners"]["sip_udp"], "stopped", "{body}");
    assert_eq!(body["ready"], false);
    assert_eq!(body["sip_udp"], sip.to_string(), "the bound addresses are still listed");
    assert_eq!(body["listeners"]["sip_tcp"], "running");

    // The TCP listener beside it is untouched: a request over it is answered.
    let answer = tokio::task::spawn_blocking(move || {
        let mut conn = TcpStream::connect(tcp).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let msg = format!("OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP {};branch=z9hG4bK-t1\r\nMax-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=t\r\nTo: <sip:127.0.0.1>\r\nCall-ID: t1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", conn.local_addr().unwrap());
        conn.write_all(msg.as_bytes()).unwrap();
        let mut got = [0u8; 4096];
        let n = conn.read(&mut got).unwrap_or(0);
        String::from_utf8_lossy(&got[..n]).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("SIP/2.0 "), "TCP answers: {answer:?}");
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

/// Runs the binary on `data` with umask 022 until it has bound its listeners; returns the
/// child (stopped on drop) and the HTTP address.
fn start_with_umask_022(data: &std::path::Path) -> (crate::binary::KillOnDrop, String) {
    use std::os::unix::process::CommandExt;
    let mut cmd = crate::binary::command(data);
    cmd.env("CALLGATE__LOG__LEVEL", "warn,callgate::app=info").arg("run").stderr(std::process::Stdio::piped());
    // SAFETY: umask is async-signal-safe; it runs in the child between fork and exec only.
    unsafe {
        cmd.pre_exec(|| {
            libc::umask(0o022);
            Ok(())
        });
    }
    let mut child = crate::binary::KillOnDrop(cmd.spawn().unwrap());
    let (addr, _logs) = crate::binary::http_address(child.0.stderr.take().unwrap());
    (child, addr)
}

fn assert_private(data: &std::path::Path) {
    assert_eq!(mode(data), 0o700, "the data folder");
    for f in ["callgate.db", "callgate.db-wal", "callgate.db-shm", "admin.token"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
}

#[test]
fn secrets_at_rest_are_private_whatever_the_umask_and_whatever_an_earlier_run_left() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // First run: everything created under umask 022.
    let (child, _) = start_with_umask_022(&data);
    assert_private(&data);
    drop(child);

    // An earlier version (or an operator) left everything readable by others.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["callgate.db", "callgate.db-wal", "callgate.db-shm", "admin.token"] {
        let _ = std::fs::set_permissions(data.join(f), std::fs::Permissions::from_mode(0o644));
    }
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap().trim().to_owned();
    let (_child, addr) = start_with_umask_022(&data);
    assert_private(&data);
    // The token in the tightened file still opens the admin API.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status = rt.block_on(async {
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("http://{addr}/api/v1/portals")).bearer_auth(&token).send().await {
                return r.status().as_u16();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        0
    });
    assert_eq!(status, 200);
}
