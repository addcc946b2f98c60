//! The real binary: port 0, /ready, SIGTERM, exit codes.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::TOKEN;

const BIN: &str = env!("CARGO_BIN_EXE_callgate");

/// Kills the child if the test fails before it could stop it (no orphans after a panic).
pub(crate) struct KillOnDrop(pub(crate) std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub(crate) fn command(data: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("CALLGATE__SIP__UDP", "127.0.0.1:0")
        .env("CALLGATE__SIP__TCP", "127.0.0.1:0")
        .env("CALLGATE__SIP__TLS", "")
        .env("CALLGATE__HTTP__LISTEN", "127.0.0.1:0")
        .env("CALLGATE__STORE__PATH", data.join("callgate.db"))
        .env("CALLGATE__LOG__FORMAT", "json")
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd
}

/// Reads JSON log lines until the `listening` line for `http` and returns its address.
pub(crate) fn http_address(stderr: impl std::io::Read + Send + 'static) -> (String, std::thread::JoinHandle<Vec<String>>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if v["listener"] == "http" {
                        let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                        sent = true;
                    }
                }
            }
            lines.push(line);
        }
        lines
    });
    let addr = rx.recv_timeout(Duration::from_secs(30)).expect("the binary logs its http address");
    (addr, reader)
}

#[test]
fn binary_serves_ready_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = KillOnDrop(command(dir.path()).env("CALLGATE__ADMIN__TOKEN", TOKEN).arg("run").stderr(Stdio::piped()).spawn().unwrap());
    let (addr, logs) = http_address(child.0.stderr.take().unwrap());
    assert!(!addr.ends_with(":0"));

    crate::common::init_tracing();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ready = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(format!("http://{addr}/ready")).await {
                if r.status() == 200 {
                    break r.json::<serde_json::Value>().await.unwrap();
                }
            }
            assert!(Instant::now() < deadline, "not ready in time");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert_eq!(ready["http"], addr.as_str());
    assert!(ready["sip_udp"].as_str().is_some_and(|a| !a.ends_with(":0")));

    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "clean exit");
    let logs = logs.join().unwrap().join("\n");
    assert!(logs.contains("callgate stopped"));
    assert!(!logs.contains(TOKEN), "the admin token must never be logged");
    assert!(dir.path().join("callgate.db").exists(), "SQLite store created on first run");
}

#[test]
fn generated_admin_token_is_written_private_and_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = KillOnDrop(command(dir.path()).arg("run").stderr(Stdio::piped()).spawn().unwrap());
    let (_addr, logs) = http_address(child.0.stderr.take().unwrap());
    let path = dir.path().join("admin.token");
    let token = std::fs::read_to_string(&path).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    unsafe { libc::kill(child.0.id() as i32, libc::SIGINT) };
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
    let logs = logs.join().unwrap().join("\n");
    assert!(!logs.contains(token.trim()));
    assert!(logs.contains("admin.token"));
}

#[test]
fn check_config_reports_every_error_with_exit_64() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path()).arg("check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let out = command(dir.path())
        .env("CALLGATE__SIP__UDP", "nope")
        .env("CALLGATE__SHUTDOWN__GRACE", "0s")
        .env("CALLGATE__ADMIN__TOKEN", "short secret")
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["sip.udp", "shutdown.grace", "admin.token"] {
        assert!(err.contains(key), "{key} not reported: {err}");
    }
    assert!(!err.contains("short secret"), "secret printed: {err}");
    let out = command(dir.path()).args(["check-config", "--config", "/nonexistent/callgate.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = command(dir.path()).args(["run", "--config"]).arg(dir.path().join("missing.toml")).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn import_index_cli_fills_the_store_and_refuses_bad_files() {
    use callgate::store::{NewPortal, SqliteStore, Store};
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("callgate.db")).unwrap();
    let p = store.insert_portal(&NewPortal { name: None, domain: "https://a.bitrix24.ru/".into(), auth: None }).unwrap();
    drop(store);
    let good = dir.path().join("pm.csv");
    std::fs::write(&good, "number,user_id\n+7 916 123-45-67,5\n89161234568,6\n").unwrap();
    let out = command(dir.path()).args(["import-index", "--portal", &p.id.to_string()]).arg(&good).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "79160000000,5\nnope,6\n").unwrap();
    let out = command(dir.path()).args(["import-index", "--portal", &p.id.to_string(), "--replace"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));
    let out = command(dir.path()).args(["import-index", "--portal", "99"]).arg(&good).output().unwrap();
    assert_eq!(out.status.code(), Some(65));
    let store = SqliteStore::open(&dir.path().join("callgate.db")).unwrap();
    let mut rows = store.load_index().unwrap();
    rows.sort();
    assert_eq!(rows, [(p.id, 79_161_234_567, 5), (p.id, 79_161_234_568, 6)], "the bad file changed nothing");
}
