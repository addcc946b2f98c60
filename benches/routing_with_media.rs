//! Browser-call load for `benches/routing_with_media.sh` (not a benchmark of its own): browser
//! agents registered over callgate's WebSocket, each answering with a `webrtc` 0.21.1 peer
//! connection (the soak client's `FakeBrowser`, `tests/it/media/browser.rs`), and a UDP "PBX"
//! calling them at a steady rate. Every call is a full media set-up in callgate (the PBX's plain
//! offer -> a WebRTC offer for the browser, the browser's answer -> a plain answer, ICE and
//! DTLS with the anchor), held for a moment, then hung up by the PBX.
//!
//! Environment (the script sets it): `CG_HTTP` (callgate's HTTP host:port), `CG_SIP` (its SIP
//! UDP address), `CG_REALM` (the portal's domain), `CG_AGENTS` (a file of `extension password`
//! lines), `CG_PBX` (the PBX's address: the portal's `pbx_host`), `LOAD_RATE` (calls a second,
//! default 20), `LOAD_SECS` (how long calls are started, default 30), `LOAD_HOLD_MS` (how long
//! each is held, default 2000). Prints `ready` once every agent is registered, and at the end the
//! calls started, answered, failed and the set-up time (INVITE sent -> 200 at the PBX) p50/p99.
//!
//! With `PROBE=1` it is the routing probe instead: from a socket of its own, one routing INVITE
//! at a time (to `pm-route`, callers `7900000000`.. as `benches/anchors/numbers.py` writes them),
//! `PROBE_RATE` a second (default 200) for `PROBE_SECS` (default 10), each answer timed in
//! microseconds (SIPp's own response times have millisecond steps, too coarse for a sub-millisecond
//! p99) and its 302 ACKed. Writes every time (µs, one a line) to `PROBE_OUT` and prints the count,
//! p50, p99, p99.9 and how many got no answer within a second.
//!
//! Run by the script: `cargo bench --bench routing_with_media` builds it.

#[path = "../tests/it/media/browser.rs"]
#[allow(dead_code, unreachable_pub)]
mod browser;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use browser::FakeBrowser;
use bytes::Bytes;
use callgate::sip::core::digest::{authorization, Challenge};
use callgate::sip::core::{HeaderName, SipMessage};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set (run benches/routing_with_media.sh)"))
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One registered browser agent: its WebSocket's sender (a writer task owns the sink).
type Ws = mpsc::Sender<String>;

/// Registers `ext` over a new WebSocket (digest, as JsSIP does) and starts answering its calls.
async fn agent(http: &str, realm: &str, ext: &str, password: &str) {
    let mut req = format!("ws://{http}/sip").into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(req).await.expect("websocket upgrade");
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<String>(256);
    tokio::spawn(async move {
        while let Some(t) = rx.recv().await {
            if sink.send(Message::text(t)).await.is_err() {
                break;
            }
        }
    });
    let register = |cseq: u32, auth: Option<String>| {
        let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
        format!(
            "REGISTER sip:{realm} SIP/2.0\r\nVia: SIP/2.0/WS bench.invalid;branch=z9hG4bK-reg-{ext}-{cseq}\r\nMax-Forwards: 69\r\n\
             To: <sip:{ext}@{realm}>\r\nFrom: <sip:{ext}@{realm}>;tag=reg{ext}\r\nCall-ID: reg-{ext}\r\nCSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{ext}@bench.invalid;transport=ws>;expires=600\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    };
    tx.send(register(1, None)).await.unwrap();
    let challenge = next_sip(&mut stream).await;
    let c = Challenge::parse(challenge.header(HeaderName::WwwAuthenticate).expect("a challenge")).unwrap();
    let auth = authorization(ext, &text(c.realm), &text(c.nonce), &format!("sip:{realm}"), "REGISTER", password, Some((1, "bench")));
    tx.send(register(2, Some(auth))).await.unwrap();
    let ok = next_sip(&mut stream).await;
    assert_eq!(ok.status(), Some(200), "{ext} registers");
    let ext = ext.to_owned();
    tokio::spawn(async move {
        let browsers: Arc<Mutex<HashMap<String, Arc<FakeBrowser>>>> = Arc::default();
        loop {
            let msg = next_sip(&mut stream).await;
            match msg.method_raw() {
                Some(b"INVITE") => {
                    tokio::spawn(answer_call(msg, tx.clone(), Arc::clone(&browsers), ext.clone()));
                }
                Some(b"BYE") => {
                    let _ = tx.send(response(&msg, 200, "OK", "", None)).await;
                    let gone = browsers.lock().remove(&text(msg.call_id().unwrap_or_default()));
                    if let Some(b) = gone {
                        tokio::spawn(async move { b.close().await });
                    }
                }
                Some(b"ACK") | None => {}
                Some(_) => {
                    let _ = tx.send(response(&msg, 200, "OK", "", None)).await;
                }
            }
        }
    });
}

/// The next SIP message on a WebSocket (pings skipped); ends the task when the socket closes.
async fn next_sip<S>(stream: &mut S) -> SipMessage
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(t))) => return SipMessage::parse(Bytes::copy_from_slice(t.as_bytes())).expect("SIP from callgate"),
            Some(Ok(Message::Binary(b))) => return SipMessage::parse(b).expect("SIP from callgate"),
            Some(Ok(_)) => {}
            _ => std::future::pending::<()>().await,
        }
    }
}

/// The browser answers the INVITE: a new peer connection, its answer in a 200.
async fn answer_call(invite: SipMessage, tx: Ws, browsers: Arc<Mutex<HashMap<String, Arc<FakeBrowser>>>>, ext: String) {
    let browser = Arc::new(FakeBrowser::new(&[("audio/PCMU", 0)], false).await);
    let sdp = browser.answer(&text(invite.body())).await;
    browsers.lock().insert(text(invite.call_id().unwrap_or_default()), browser);
    let _ = tx.send(response(&invite, 200, "OK", &sdp, Some(&ext))).await;
}

/// A response to `req` (To tag and Contact when `ext` is given: the browser's answer).
fn response(req: &SipMessage, status: u16, reason: &str, sdp: &str, ext: Option<&str>) -> String {
    let mut head = format!("SIP/2.0 {status} {reason}\r\n");
    for (name, raw, value) in req.header_lines() {
        if matches!(name, HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq | HeaderName::RecordRoute) {
            head.push_str(&format!("{}: {}\r\n", text(raw), text(value)));
        }
    }
    let to = text(req.header(HeaderName::To).unwrap_or_default());
    match ext {
        Some(ext) => head.push_str(&format!("To: {to};tag=br-{ext}\r\nContact: <sip:{ext}@bench.invalid;transport=ws>\r\n")),
        None => head.push_str(&format!("To: {to}\r\n")),
    }
    if !sdp.is_empty() {
        head.push_str("Content-Type: application/sdp\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n{sdp}", sdp.len()));
    head
}

/// What the PBX knows of one call.
struct Call {
    sent: Instant,
    set_up: Option<Duration>,
    done: bool,
    failed: bool,
}

/// The PBX: calls the agents round robin at `rate` for `secs`, ACKs each 200, hangs up after
/// `hold`; returns once every call ended (or 20 s after the last was started).
async fn pbx(me: SocketAddr, sip: SocketAddr, exts: Vec<String>, rate: u64, secs: u64, hold: Duration) {
    let sock = Arc::new(UdpSocket::bind(me).await.expect("the PBX's address (the portal's pbx_host) is free"));
    let calls: Arc<Mutex<HashMap<String, Call>>> = Arc::default();
    let (s, c) = (Arc::clone(&sock), Arc::clone(&calls));
    let receiver = tokio::spawn(async move { pbx_receive(s, c, sip, hold).await });
    let sdp = "v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=pbx\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\n\
               a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\na=sendrecv\r\n";
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    let total = rate * secs;
    // Unique across runs: callgate still knows the previous run's transactions for a while.
    let run = std::process::id();
    for i in 0..total {
        tick.tick().await;
        let ext = &exts[usize::try_from(i).unwrap_or(0) % exts.len()];
        let cid = format!("bench-{run}-{i}");
        let invite = format!(
            "INVITE sip:{ext}@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{cid}\r\nMax-Forwards: 70\r\n\
             From: <sip:79160000000@{me}>;tag=pbx-{i}\r\nTo: <sip:{ext}@{sip}>\r\nCall-ID: {cid}\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:79160000000@{me}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        );
        calls.lock().insert(cid, Call { sent: Instant::now(), set_up: None, done: false, failed: false });
        let _ = sock.send_to(invite.as_bytes(), sip).await;
    }
    for _ in 0..200 {
        if calls.lock().values().all(|c| c.done) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    receiver.abort();
    report(&calls.lock());
}

fn report(calls: &HashMap<String, Call>) {
    let mut times: Vec<Duration> = calls.values().filter_map(|c| c.set_up).collect();
    times.sort();
    let pct = |p: usize| times.get((times.len() * p / 100).min(times.len().saturating_sub(1))).map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    let failed = calls.values().filter(|c| c.failed).count();
    let unanswered = calls.values().filter(|c| !c.done && c.set_up.is_none()).count();
    let not_hung_up = calls.values().filter(|c| !c.done && c.set_up.is_some()).count();
    println!(
        "browser calls: started {}, answered {}, failed {failed}, never answered {unanswered}, BYE unanswered {not_hung_up}; set-up (INVITE -> 200 at the PBX) p50 {:.1} ms, p99 {:.1} ms",
        calls.len(),
        times.len(),
        pct(50),
        pct(99)
    );
}

/// The PBX's receive side: 200 to INVITE -> ACK now, BYE after `hold`; 200 to BYE -> done.
async fn pbx_receive(sock: Arc<UdpSocket>, calls: Arc<Mutex<HashMap<String, Call>>>, sip: SocketAddr, hold: Duration) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, _)) = sock.recv_from(&mut buf).await else { continue };
        let Ok(msg) = SipMessage::parse(Bytes::copy_from_slice(&buf[..n])) else { continue };
        let (Some(status), Some(cseq)) = (msg.status(), msg.cseq()) else { continue };
        let cid = text(msg.call_id().unwrap_or_default());
        let mut calls = calls.lock();
        let Some(call) = calls.get_mut(&cid) else { continue };
        match (status, cseq.method) {
            (200, b"INVITE") if call.set_up.is_none() => {
                call.set_up = Some(call.sent.elapsed());
                let (ack, bye) = (in_dialog(&msg, "ACK", 1, sock.local_addr().unwrap()), in_dialog(&msg, "BYE", 2, sock.local_addr().unwrap()));
                let s = Arc::clone(&sock);
                tokio::spawn(async move {
                    let _ = s.send_to(ack.as_bytes(), sip).await;
                    tokio::time::sleep(hold).await;
                    let _ = s.send_to(bye.as_bytes(), sip).await;
                });
            }
            (200, b"BYE") => call.done = true,
            (300.., b"INVITE") => {
                call.failed = true;
                call.done = true;
            }
            _ => {}
        }
    }
}

/// An in-dialog request of the PBX for the call `ok` answered: through callgate's Record-Route.
fn in_dialog(ok: &SipMessage, method: &str, cseq: u32, me: SocketAddr) -> String {
    let mut routes: Vec<String> = ok.values(HeaderName::RecordRoute).map(|v| text(v.trim_ascii())).collect();
    routes.reverse();
    let route: String = routes.iter().map(|r| format!("Route: {r}\r\n")).collect();
    let target = ok.contact().map(|c| text(c.uri.raw)).unwrap_or_default();
    let cid = text(ok.call_id().unwrap_or_default());
    format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{method}-{cid}\r\nMax-Forwards: 70\r\n{route}\
         From: {}\r\nTo: {}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
        text(ok.header(HeaderName::From).unwrap_or_default()),
        text(ok.header(HeaderName::To).unwrap_or_default()),
    )
}

/// The routing probe (see the module doc).
fn probe() {
    let sip: SocketAddr = env("CG_SIP").parse().expect("CG_SIP");
    let (rate, secs) = (env_num("PROBE_RATE", 200).max(1), env_num("PROBE_SECS", 10));
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let me = sock.local_addr().unwrap();
    let (run, interval) = (std::process::id(), Duration::from_micros(1_000_000 / rate));
    let (mut times, mut lost, mut other, mut buf) = (Vec::new(), 0u64, 0u64, vec![0u8; 65_536]);
    let mut next = Instant::now();
    for i in 0..rate * secs {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += interval;
        let cid = format!("probe-{run}-{i}");
        let head = format!(
            "sip:pm-route@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-{cid}\r\nMax-Forwards: 70\r\n\
             From: <sip:7900{:07}@{me}>;tag=p{i}\r\nTo: <sip:pm-route@{sip}>\r\nCall-ID: {cid}\r\n",
            i % 1000
        );
        let t = Instant::now();
        let _ = sock.send_to(format!("INVITE {head}CSeq: 1 INVITE\r\nContact: <sip:p@{me}>\r\nContent-Length: 0\r\n\r\n").as_bytes(), sip);
        loop {
            let Ok(n) = sock.recv(&mut buf) else {
                lost += 1;
                break;
            };
            let Ok(msg) = SipMessage::parse(Bytes::copy_from_slice(&buf[..n])) else { continue };
            if msg.call_id() == Some(cid.as_bytes()) && msg.status().is_some_and(|s| s >= 200) {
                times.push(t.elapsed().as_micros() as u64);
                other += u64::from(msg.status() != Some(302));
                let to = text(msg.header(HeaderName::To).unwrap_or_default());
                let ack = format!("ACK {head}").replace(&format!("To: <sip:pm-route@{sip}>"), &format!("To: {to}"));
                let _ = sock.send_to(format!("{ack}CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n").as_bytes(), sip);
                break;
            }
        }
    }
    let lines: String = times.iter().map(|t| format!("{t}\n")).collect();
    std::fs::write(env("PROBE_OUT"), lines).expect("PROBE_OUT");
    times.sort_unstable();
    let pct = |p: f64| times.get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1))).copied().unwrap_or(0);
    println!("routing probe: {} answers ({other} not 302), {lost} lost; p50 {} µs, p99 {} µs, p99.9 {} µs", times.len(), pct(0.5), pct(0.99), pct(0.999));
}

fn main() {
    if std::env::var_os("PROBE").is_some() {
        return probe();
    }
    let (http, realm) = (env("CG_HTTP"), env("CG_REALM"));
    let sip: SocketAddr = env("CG_SIP").parse().expect("CG_SIP");
    let me: SocketAddr = env("CG_PBX").parse().expect("CG_PBX");
    let agents: Vec<(String, String)> = std::fs::read_to_string(env("CG_AGENTS"))
        .expect("CG_AGENTS")
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(e, p)| (e.to_owned(), p.trim().to_owned())))
        .collect();
    let (rate, secs, hold) = (env_num("LOAD_RATE", 20), env_num("LOAD_SECS", 30), Duration::from_millis(env_num("LOAD_HOLD_MS", 2000)));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("client-rt").enable_all().build().unwrap();
    rt.block_on(async {
        for (ext, password) in &agents {
            agent(&http, &realm, ext, password).await;
        }
        println!("ready: {} browser agents registered; {rate} calls/s for {secs} s, each held {} ms", agents.len(), hold.as_millis());
        pbx(me, sip, agents.into_iter().map(|(e, _)| e).collect(), rate, secs, hold).await;
    });
}
