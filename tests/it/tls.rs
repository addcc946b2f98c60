//! TLS everywhere, through the real binary: a development CA and a certificate made in the test
//! (rcgen, `callgate::tls::dev_pki`; nothing committed), SIP over TLS (a tokio-rustls client
//! places a call to the redirect listener: INVITE, 302, ACK), HTTPS for the admin API (reqwest
//! trusting only the test CA), and WSS registration of a browser agent at `wss://.../sip`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use callgate::sip::core::digest::{authorization, Challenge};
use callgate::sip::core::{frame_stream, Frame, HeaderName, SipMessage};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::binary::{command, KillOnDrop};
use crate::common::TOKEN;

const REALM: &str = "office.bitrix24.ru";
const WAIT: Duration = Duration::from_secs(10);

/// The real binary with SIP over TLS and HTTPS on port 0, and the CA its certificate chains to.
pub(crate) struct TlsBinary {
    pub(crate) child: KillOnDrop,
    pub(crate) base: String,
    pub(crate) ready: Value,
    pub(crate) ca_pem: String,
    pub(crate) client: reqwest::Client,
    pub(crate) logs: Arc<parking_lot::Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl TlsBinary {
    pub(crate) async fn start(extra_env: &[(&str, &str)]) -> Self {
        crate::common::init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let pki = callgate::tls::dev_pki(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, &pki.cert_pem).unwrap();
        std::fs::write(&key, &pki.key_pem).unwrap();
        let mut cmd = command(dir.path());
        cmd.env("CALLGATE__ADMIN__TOKEN", TOKEN)
            .env("CALLGATE__SIP__TLS", "127.0.0.1:0")
            .env("CALLGATE__SIP__TLS_CERT", &cert)
            .env("CALLGATE__SIP__TLS_KEY", &key)
            .env("CALLGATE__HTTP__TLS_CERT", &cert)
            .env("CALLGATE__HTTP__TLS_KEY", &key);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let mut child = KillOnDrop(cmd.arg("run").stderr(Stdio::piped()).spawn().unwrap());
        let (addr, logs) = read_logs(child.0.stderr.take().unwrap());
        let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap();
        let client = reqwest::Client::builder()
            .tls_certs_merge([ca])
            .timeout(WAIT)
            .build()
            .unwrap();
        let base = format!("https://{addr}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let ready = loop {
            if let Ok(r) = client.get(format!("{base}/ready")).send().await {
                if r.status() == 200 {
                    break r.json::<Value>().await.unwrap();
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "not ready over https in time: {:?}",
                logs.lock()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Self {
            child,
            base,
            ready,
            ca_pem: pki.ca_pem,
            client,
            logs,
            _dir: dir,
        }
    }

    pub(crate) async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        crate::common::json_of(req.send().await.unwrap()).await
    }

    fn rustls_client(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(callgate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    async fn tls_connect(&self, addr: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
        self.tls_connect_from(addr, crate::common::PBX_IP).await
    }

    /// A TLS connection to `addr` from the local address `from`.
    async fn tls_connect_from(&self, addr: &str, from: std::net::IpAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(from, 0)).unwrap();
        let tcp = sock.connect(addr.parse().unwrap()).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(self.rustls_client());
        let name = ServerName::try_from("127.0.0.1").unwrap();
        connector
            .connect(name, tcp)
            .await
            .expect("TLS handshake with the test CA")
    }
}

/// Collects the child's log lines in the background; returns the HTTP address once logged.
pub(crate) fn read_logs(
    stderr: std::process::ChildStderr,
) -> (String, Arc<parking_lot::Mutex<Vec<String>>>) {
    let lines = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["listener"] == "http" {
                        let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                        sent = true;
                    }
                }
            }
            sink.lock().push(line);
        }
    });
    (
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the binary logs its http address"),
        lines,
    )
}

/// Reads one SIP message from a stream (Content-Length framing, as callgate does).
async fn read_sip<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> SipMessage {
    loop {
        match frame_stream(buf, 65_535).unwrap() {
            Frame::Complete(n) => return SipMessage::parse(buf.split_to(n).freeze()).unwrap(),
            Frame::KeepAlive(n) => {
                let _ = buf.split_to(n);
            }
            Frame::Incomplete => {
                let n = tokio::time::timeout(WAIT, stream.read_buf(buf))
                    .await
                    .expect("an answer in time")
                    .unwrap();
                assert!(n > 0, "connection closed");
            }
        }
    }
}

/// Portal `REALM` in WebRTC mode, active, ext 101 (user 11) a personal manager of 79161234567.
async fn set_up_portal(b: &TlsBinary) -> i64 {
    let (status, body) = b
        .api(
            reqwest::Method::POST,
            "/api/v1/portals",
            Some(json!({"domain": REALM})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_i64().unwrap();
    let settings = json!({"active": true, "telephony_mode": "webrtc", "incoming": {"default_responsible": 11},
                          "outgoing": {"default_responsible": 11}, "pbx_host": "127.0.0.1:5080"});
    let (status, body) = b
        .api(
            reqwest::Method::PUT,
            &format!("/api/v1/portals/{id}/settings"),
            Some(settings),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let m = json!({"user_id": 11, "extension": "101", "use_for_personal_manager": true});
    let (status, body) = b
        .api(
            reqwest::Method::POST,
            &format!("/api/v1/portals/{id}/mappings"),
            Some(m),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let resp = b
        .client
        .post(format!("{}/api/v1/portals/{id}/index", b.base))
        .bearer_auth(TOKEN)
        .header("content-type", "text/csv")
        .body("number,user_id\n79161234567,11\n")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_everywhere_https_admin_sip_over_tls_call_and_wss_registration() {
    let b = TlsBinary::start(&[]).await;
    // /ready (over HTTPS) reports both TLS listeners.
    assert_eq!(b.ready["http_scheme"], "https");
    let sip_tls = b.ready["sip_tls"]
        .as_str()
        .expect("sip_tls in /ready")
        .to_owned();
    assert!(!sip_tls.ends_with(":0"));

    // HTTPS: a client that does not trust the test CA is refused; the admin API works with it.
    let stranger = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    assert!(
        stranger
            .get(format!("{}/ready", b.base))
            .send()
            .await
            .is_err(),
        "certificate must not verify without the CA"
    );
    let plain = b.base.replace("https://", "http://");
    assert!(
        stranger
            .get(format!("{plain}/ready"))
            .send()
            .await
            .map_or(true, |r| r.status() != 200),
        "no plain HTTP on a TLS listener"
    );
    let portal = set_up_portal(&b).await;

    // SIP over TLS: a call to the routing user is redirected to the manager (302), then ACKed.
    let mut tls = b.tls_connect(&sip_tls).await;
    let local: SocketAddr = tls.get_ref().0.local_addr().unwrap();
    let invite = format!(
        "INVITE sip:pm-route@{sip_tls};transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bKtls1\r\nMax-Forwards: 70\r\n\
         From: <sip:79161234567@127.0.0.1>;tag=a1\r\nTo: <sip:pm-route@127.0.0.1>\r\nCall-ID: tls-call-1\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:79161234567@{local};transport=tls>\r\nContent-Length: 0\r\n\r\n"
    );
    tls.write_all(invite.as_bytes()).await.unwrap();
    let mut buf = BytesMut::new();
    let mut answer = read_sip(&mut tls, &mut buf).await;
    while answer.status() == Some(100) {
        answer = read_sip(&mut tls, &mut buf).await;
    }
    assert_eq!(
        answer.status(),
        Some(302),
        "{:?}",
        String::from_utf8_lossy(answer.as_bytes())
    );
    let contact = String::from_utf8_lossy(answer.header(HeaderName::Contact).unwrap()).into_owned();
    assert!(contact.contains("sip:101@"), "{contact}");
    let to = String::from_utf8_lossy(answer.header(HeaderName::To).unwrap()).into_owned();
    let ack = format!(
        "ACK sip:pm-route@{sip_tls};transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bKtls1\r\nMax-Forwards: 70\r\n\
         From: <sip:79161234567@127.0.0.1>;tag=a1\r\nTo: {to}\r\nCall-ID: tls-call-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    tls.write_all(ack.as_bytes()).await.unwrap();
    let (_, decisions) = b
        .api(reqwest::Method::GET, "/api/v1/decisions?limit=1", None)
        .await;
    assert_eq!(decisions[0]["reason"], "personal_manager", "{decisions}");

    // Over TLS too, an outsider (127.0.0.5) gets 403 for a routing request and for a call out
    // (toll fraud), and nothing of it is decided or relayed.
    let mut evil = b.tls_connect_from(&sip_tls, crate::common::ATTACKER_IP).await;
    let evil_local: SocketAddr = evil.get_ref().0.local_addr().unwrap();
    for (ruri, id) in [("pm-route", "tls-evil-1"), ("0088216000001", "tls-evil-2")] {
        let invite = format!(
            "INVITE sip:{ruri}@{sip_tls};transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS {evil_local};branch=z9hG4bK{id}\r\nMax-Forwards: 70\r\n\
             From: <sip:101@{REALM}>;tag=e1\r\nTo: <sip:{ruri}@{REALM}>\r\nCall-ID: {id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        evil.write_all(invite.as_bytes()).await.unwrap();
        let mut buf = BytesMut::new();
        assert_eq!(read_sip(&mut evil, &mut buf).await.status(), Some(403), "{id}");
    }
    let (_, decisions) = b.api(reqwest::Method::GET, "/api/v1/decisions?limit=1", None).await;
    assert_eq!(decisions[0]["call_id"].as_str().map(|c| c.starts_with("tls-evil")), Some(false), "{decisions}");

    // WSS: a browser agent registers at wss://.../sip (challenge, then 200).
    let (status, creds) = b
        .api(
            reqwest::Method::POST,
            &format!("/api/v1/portals/{portal}/agents/101/credentials"),
            None,
        )
        .await;
    assert_eq!(status, 201, "{creds}");
    let password = creds["password"].as_str().unwrap().to_owned();
    assert!(
        creds["ws_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("wss://")),
        "{creds}"
    );
    let http_addr = b.base.trim_start_matches("https://").to_owned();
    let stream = b.tls_connect(&http_addr).await;
    let mut req = format!("wss://{http_addr}/sip")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::client_async(req, stream)
        .await
        .expect("wss upgrade");
    assert_eq!(resp.headers().get("sec-websocket-protocol").unwrap(), "sip");
    let first = ws_register(&mut ws, 1, None).await;
    assert_eq!(first.status(), Some(401));
    let c = Challenge::parse(first.header(HeaderName::WwwAuthenticate).unwrap()).unwrap();
    let (realm, nonce) = (
        std::str::from_utf8(c.realm).unwrap(),
        std::str::from_utf8(c.nonce).unwrap(),
    );
    let auth = authorization(
        "101",
        realm,
        nonce,
        &format!("sip:{REALM}"),
        "REGISTER",
        &password,
        Some((1, "c0ffee")),
    );
    let second = ws_register(&mut ws, 2, Some(auth)).await;
    assert_eq!(
        second.status(),
        Some(200),
        "{:?}",
        String::from_utf8_lossy(second.as_bytes())
    );
    let (_, agents) = b
        .api(
            reqwest::Method::GET,
            &format!("/api/v1/portals/{portal}/agents"),
            None,
        )
        .await;
    let agent = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["extension"] == "101")
        .unwrap()
        .clone();
    assert!(!agent["registration"].is_null(), "{agent}");
    assert_eq!(agent["registration"]["transport"], "wss", "{agent}");
    drop(ws);

    let logs = b.logs.lock().join("\n");
    assert!(
        !logs.contains(TOKEN) && !logs.contains(&password),
        "secrets in the log"
    );
}

async fn ws_register<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    cseq: u32,
    auth: Option<String>,
) -> SipMessage
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let text = format!(
        "REGISTER sip:{REALM} SIP/2.0\r\nVia: SIP/2.0/WSS 3f8q2kdl9c1v.invalid;branch=z9hG4bK{cseq}w\r\nMax-Forwards: 69\r\n\
         To: <sip:101@{REALM}>\r\nFrom: <sip:101@{REALM}>;tag=jn4ab7cd\r\nCall-ID: wssreg101\r\nCSeq: {cseq} REGISTER\r\n\
         Contact: <sip:t8mz2q4r@3f8q2kdl9c1v.invalid;transport=ws>;+sip.instance=\"<urn:uuid:0d7c3b4e-1f2a>\";expires=600\r\n\
         {auth}User-Agent: JsSIP 3.13.8\r\nContent-Length: 0\r\n\r\n"
    );
    ws.send(Message::text(text)).await.unwrap();
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("an answer in time")
            .expect("open")
            .unwrap();
        match frame {
            Message::Text(t) => {
                return SipMessage::parse(Bytes::copy_from_slice(t.as_bytes())).unwrap()
            }
            Message::Binary(b) => return SipMessage::parse(b).unwrap(),
            _ => {}
        }
    }
}

#[test]
fn gen_cert_writes_a_ca_and_a_private_key_the_config_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let run = command(dir.path())
        .args(["gen-cert", "--out"])
        .arg(&out)
        .args(["--name", "localhost", "--name", "127.0.0.1"])
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(out.join("key.pem"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let key = std::fs::read_to_string(out.join("key.pem")).unwrap();
    assert!(key.contains("PRIVATE KEY"));
    assert!(
        !String::from_utf8_lossy(&run.stdout).contains("PRIVATE"),
        "the key is never printed"
    );
    let check = command(dir.path())
        .env("CALLGATE__SIP__TLS_CERT", out.join("cert.pem"))
        .env("CALLGATE__SIP__TLS_KEY", out.join("key.pem"))
        .env("CALLGATE__HTTP__TLS_CERT", out.join("cert.pem"))
        .env("CALLGATE__HTTP__TLS_KEY", out.join("key.pem"))
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // The CA verifies the certificate for 127.0.0.1.
    let ca = std::fs::read(out.join("ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(out.join("cert.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        callgate::tls::provider(),
    )
    .build()
    .unwrap();
    let now = rustls::pki_types::UnixTime::now();
    use rustls::client::danger::ServerCertVerifier;
    verifier
        .verify_server_cert(
            &chain[0],
            &chain[1..],
            &ServerName::try_from("127.0.0.1").unwrap(),
            &[],
            now,
        )
        .expect("the leaf chains to the CA");
}
