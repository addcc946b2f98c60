//! The harness of the browser tests (`browser.rs`, `settings_page.rs`): a node script from
//! `tests/browser/` driving headless Debian Chromium through `playwright-core`, in step mode.
//!
//! Needs `/usr/bin/chromium` (or `$CHROMIUM`), `node`, and `npm ci --prefix tests/browser`;
//! `scripts/test.sh` installs them. When one is missing the test FAILS with what to install: a
//! browser test that silently passes without a browser would prove nothing.
//! Screenshots and the page logs go to [`artifacts`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::TOKEN;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/browser-artifacts/`: the scripts' screenshots and page logs.
pub fn artifacts() -> PathBuf {
    repo().join("target/browser-artifacts")
}

/// Chromium and the node modules, or a panic saying how to get them.
pub fn preflight() -> PathBuf {
    let chromium = std::env::var_os("CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    let mut missing = Vec::new();
    if !chromium.exists() {
        missing.push(format!(
            "Chromium at {} (apt-get install -y chromium, or set CHROMIUM)",
            chromium.display()
        ));
    }
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .map_or(true, |o| !o.status.success())
    {
        missing.push("node (Node.js 18 or newer)".to_owned());
    }
    if !repo()
        .join("tests/browser/node_modules/playwright-core/package.json")
        .exists()
    {
        missing.push("playwright-core (npm ci --prefix tests/browser)".to_owned());
    }
    assert!(
        missing.is_empty(),
        "browser test prerequisites missing: {}; scripts/test.sh installs them",
        missing.join("; ")
    );
    chromium
}

/// A running `tests/browser/<script>` in step mode (STEPS=1): it prints `<tag>: <json>` lines and
/// waits for ours between steps. Killed when dropped; every wait is bounded by the step timeout.
pub struct NodeRun {
    script: &'static str,
    step: Duration,
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    seen: Vec<String>,
    stderr: tokio::task::JoinHandle<String>,
    started: Instant,
}

impl NodeRun {
    /// Starts `script` with `chromium` (from [`preflight`]), the admin token and `env`; each step
    /// (browser start included) must come within `step`.
    pub fn spawn(
        script: &'static str,
        chromium: &Path,
        env: &[(&str, String)],
        step: Duration,
    ) -> Self {
        use std::process::Stdio;
        use tokio::io::{AsyncBufReadExt, AsyncReadExt};
        std::fs::create_dir_all(artifacts()).unwrap();
        let mut cmd = tokio::process::Command::new("node");
        cmd.arg(repo().join("tests/browser").join(script))
            .current_dir(repo())
            .env("CHROMIUM", chromium)
            .env("ARTIFACTS", artifacts())
            .env("CALLGATE_TOKEN", TOKEN)
            .env("STEPS", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("node starts");
        let stdin = child.stdin.take().unwrap();
        let stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut err = child.stderr.take().unwrap();
        let stderr = tokio::spawn(async move {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s).await;
            s
        });
        Self {
            script,
            step,
            child,
            stdin,
            stdout,
            seen: Vec::new(),
            stderr,
            started: Instant::now(),
        }
    }

    /// Everything the script said, for a failure message.
    pub async fn failure(&mut self, why: String) -> ! {
        let _ = self.child.start_kill();
        let stderr = tokio::time::timeout(Duration::from_secs(5), &mut self.stderr)
            .await
            .map(|r| r.unwrap_or_default())
            .unwrap_or_default();
        panic!(
            "{}: {why} after {:?}; artifacts in {}\n--- stdout\n{}\n--- stderr\n{stderr}",
            self.script,
            self.started.elapsed(),
            artifacts().display(),
            self.seen.join("\n")
        );
    }

    /// Waits for the line `<tag>: <json>`; its JSON.
    pub async fn expect(&mut self, tag: &str) -> Value {
        let prefix = format!("{tag}: ");
        let step = self.step;
        loop {
            match tokio::time::timeout(step, self.stdout.next_line()).await {
                Ok(Ok(Some(line))) => {
                    self.seen.push(line.clone());
                    if let Some(json) = line.strip_prefix(&prefix) {
                        return serde_json::from_str(json).unwrap_or(Value::Null);
                    }
                }
                Ok(_) => self.failure(format!("exited before \"{tag}\"")).await,
                Err(_) => self.failure(format!("no \"{tag}\" within {step:?}")).await,
            }
        }
    }

    /// Tells the script to go on.
    pub async fn say(&mut self, line: &str) {
        use tokio::io::AsyncWriteExt;
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("node reads its stdin");
        self.stdin.flush().await.unwrap();
    }

    /// Waits for a clean exit (`<script>: ok`, status 0).
    pub async fn finish(mut self) {
        loop {
            match tokio::time::timeout(self.step, self.stdout.next_line()).await {
                Ok(Ok(Some(line))) => self.seen.push(line),
                Ok(_) => break,
                Err(_) => self.failure("did not finish".into()).await,
            }
        }
        match tokio::time::timeout(self.step, self.child.wait()).await {
            Ok(Ok(st)) if st.success() => {}
            other => {
                let why = format!("ended with {other:?}");
                self.failure(why).await
            }
        }
    }
}
