//! Graceful shutdown of the real binary: after SIGTERM `/ready` turns 503, a new call gets
//! `503` + `Retry-After`, the call already up keeps its dialog (the PBX's BYE still flows
//! through the proxy), the process exits 0 as soon as it ended (well within `shutdown.grace`),
//! and the call's Bitrix24 intents are in the store. The same run checks that neither the admin
//! token nor a webhook secret ever reaches the log or `/metrics`.

use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::binary::{command, KillOnDrop};
use crate::common::phone_ip;
use crate::common::sipp::{free_addr, free_port, Sipp};
use crate::common::TOKEN;

const WEBHOOK_SECRET: &str = "w3bh00ks3cr3tc0de42";
const CUSTOMER: &str = "79161234567";

async fn api(
    client: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client
        .request(method, format!("{base}{path}"))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    crate::common::json_of(req.send().await.unwrap()).await
}

/// Polls `check` every 50 ms, at most `tries` times.
async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    tries: u32,
    mut check: impl FnMut() -> F,
) {
    for _ in 0..tries {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not reached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sigterm_new_calls_get_503_open_calls_drain_and_the_process_exits_0() {
    crate::common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut child = KillOnDrop(
        command(dir.path())
            .env("CALLGATE__ADMIN__TOKEN", TOKEN)
            .env("CALLGATE__SHUTDOWN__GRACE", "60s")
            .env("CALLGATE__CALLS__LINGER", "300ms")
            .env("CALLGATE__LOG__LEVEL", "debug")
            .arg("run")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (addr, logs) = crate::tls::read_logs(child.0.stderr.take().unwrap());
    let base = format!("http://{addr}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let ready = || async {
        client
            .get(format!("{base}/ready"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    until("ready", 400, || async { ready().await == 200 }).await;
    let sip = client
        .get(format!("{base}/ready"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["sip_udp"]
        .as_str()
        .unwrap()
        .to_owned();

    // An active portal whose Bitrix24 is a webhook nobody answers (the intents stay queued).
    let (pbx, phone) = (free_port(), free_addr(phone_ip("101")));
    let webhook = format!("http://127.0.0.1:9/rest/1/{WEBHOOK_SECRET}/");
    let (status, body) = api(
        &client,
        &base,
        Method::POST,
        "/api/v1/portals",
        Some(json!({"domain": "office.bitrix24.ru", "auth": {"webhook_url": webhook}})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_i64().unwrap();
    let settings = json!({"active": true, "incoming": {"default_responsible": 1}, "outgoing": {"default_responsible": 1}, "pbx_host": format!("127.0.0.1:{pbx}")});
    assert_eq!(
        api(
            &client,
            &base,
            Method::PUT,
            &format!("/api/v1/portals/{id}/settings"),
            Some(settings)
        )
        .await
        .0,
        200
    );
    let mapping = json!({"user_id": 11, "extension": "101", "use_for_personal_manager": true, "contact": format!("sip:101@{phone}")});
    assert_eq!(
        api(
            &client,
            &base,
            Method::POST,
            &format!("/api/v1/portals/{id}/mappings"),
            Some(mapping)
        )
        .await
        .0,
        201
    );

    // A call that is up when SIGTERM comes: the PBX hangs up 3 s after the answer.
    let agent = Sipp::new("agent-answer.xml", &sip)
        .at(phone)
        .key("ext", "101")
        .key("ring_ms", "100")
        .spawn();
    let pbx_side = Sipp::new("pbx-answered.xml", &sip)
        .port(pbx)
        .key("ext", "101")
        .key("caller", CUSTOMER)
        .key("xcid", "drain-1")
        .key("hold_ms", "3000")
        .spawn();
    until("the call is answered", 200, || async {
        let (_, calls) = api(&client, &base, Method::GET, "/api/v1/calls?limit=5", None).await;
        calls.as_array().is_some_and(|a| {
            a.iter()
                .any(|c| !c["answered_at"].is_null() && c["ended_at"].is_null())
        })
    })
    .await;
    let metrics_text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    until("/ready turns 503", 200, || async { ready().await == 503 }).await;

    // A new call is refused with 503 + Retry-After; the open one goes on.
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = sock.local_addr().unwrap();
    let invite = format!(
        "INVITE sip:101@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKdrain2\r\nMax-Forwards: 70\r\nFrom: <sip:{CUSTOMER}@{local}>;tag=d2\r\n\
         To: <sip:101@{sip}>\r\nCall-ID: drain-2\r\nCSeq: 1 INVITE\r\nContact: <sip:{CUSTOMER}@{local}>\r\nX-Call-Id: drain-2\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(invite.as_bytes(), &sip).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let answer =
        callgate::sip::core::SipMessage::parse(bytes::Bytes::copy_from_slice(&buf[..n])).unwrap();
    assert_eq!(
        answer.status(),
        Some(503),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(answer.header_by_name(b"Retry-After").is_some());

    let (agent, pbx_side) = (agent.wait().await, pbx_side.wait().await);
    assert_eq!(
        (agent.successful, agent.failed),
        (1, 0),
        "the BYE must still flow:\n{}\n{}",
        agent.screen,
        agent.errors
    );
    assert_eq!(
        (pbx_side.successful, pbx_side.failed),
        (1, 0),
        "{}\n{}",
        pbx_side.screen,
        pbx_side.errors
    );

    let mut status = None;
    for _ in 0..600 {
        if let Some(s) = child.0.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status.expect("exits after the drain").code(), Some(0));
    let logs = logs.lock().join("\n");
    assert!(
        logs.contains("every call has ended"),
        "the drain ended with the call, not the grace period"
    );
    assert!(logs.contains("callgate stopped"));

    // Outbox flushed: the call's register and finish are durable, waiting for Bitrix24.
    let db = rusqlite::Connection::open(dir.path().join("callgate.db")).unwrap();
    let kinds: Vec<String> = db
        .prepare("SELECT kind FROM outbox ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        kinds.iter().any(|k| k.contains("finish")),
        "finish intent stored: {kinds:?}"
    );

    // No secret in the log (debug level) or in /metrics.
    for secret in [TOKEN, WEBHOOK_SECRET] {
        assert!(!logs.contains(secret), "secret in the log");
        assert!(!metrics_text.contains(secret), "secret in /metrics");
    }
}
