//! Runs real SIPp (Debian `sip-tester`) against a gateway and reads its final counters.

use std::path::{Path, PathBuf};
use std::process::Command;

/// What a SIPp run ended with.
#[derive(Debug)]
pub struct SippRun {
    pub exit: Option<i32>,
    pub successful: u64,
    pub failed: u64,
    pub screen: String,
    pub errors: String,
}

/// A SIPp invocation.
pub struct Sipp {
    scenario: PathBuf,
    target: String,
    rows: Vec<Vec<String>>,
    args: Vec<String>,
    calls: usize,
}

impl Sipp {
    /// `scenario` is a file name in `tests/sipp/`; `target` is `ip:port`.
    pub fn new(scenario: &str, target: &str) -> Self {
        Self {
            scenario: Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp").join(scenario),
            target: target.to_owned(),
            rows: Vec::new(),
            args: Vec::new(),
            calls: 1,
        }
    }

    /// Injection rows (`field0;field1;…`), used in order (SEQUENTIAL).
    pub fn rows<S: AsRef<str>>(mut self, rows: &[&[S]]) -> Self {
        self.rows = rows.iter().map(|r| r.iter().map(|f| f.as_ref().to_owned()).collect()).collect();
        self
    }

    /// Total calls (`-m`).
    pub fn calls(mut self, n: usize) -> Self {
        self.calls = n;
        self
    }

    /// Extra SIPp arguments.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// Runs to completion (bounded by `-timeout`), on a blocking thread.
    pub async fn run(self) -> SippRun {
        tokio::task::spawn_blocking(move || self.run_blocking()).await.unwrap()
    }

    fn run_blocking(&self) -> SippRun {
        let dir = tempfile::tempdir().unwrap();
        let screen = dir.path().join("screen.log");
        let errors = dir.path().join("errors.log");
        let mut cmd = Command::new("sipp");
        cmd.arg(&self.target)
            .arg("-sf")
            .arg(&self.scenario)
            .args(["-s", "pm-route", "-i", "127.0.0.1", "-m", &self.calls.to_string(), "-r", "200", "-l", "200"])
            .args(["-timeout", "30s", "-timeout_error", "-recv_timeout", "5000", "-nostdin"])
            .args(["-trace_screen", "-screen_file"])
            .arg(&screen)
            .args(["-trace_err", "-error_file"])
            .arg(&errors)
            .current_dir(dir.path());
        if !self.rows.is_empty() {
            let csv = dir.path().join("rows.csv");
            let mut text = String::from("SEQUENTIAL\n");
            for r in &self.rows {
                text.push_str(&r.join(";"));
                text.push_str(";\n");
            }
            std::fs::write(&csv, text).unwrap();
            cmd.arg("-inf").arg(&csv);
        }
        cmd.args(&self.args);
        let out = cmd.output().expect("sipp runs (apt-get install sip-tester)");
        let screen_text = std::fs::read_to_string(&screen).unwrap_or_default();
        SippRun {
            exit: out.status.code(),
            successful: counter(&screen_text, "Successful call"),
            failed: counter(&screen_text, "Failed call"),
            errors: std::fs::read_to_string(&errors).unwrap_or_default() + &String::from_utf8_lossy(&out.stderr),
            screen: screen_text,
        }
    }
}

/// The cumulative column of a SIPp screen counter line (`  Successful call  |  0  |  5  `).
fn counter(screen: &str, name: &str) -> u64 {
    screen
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with(name))
        .and_then(|l| l.split('|').nth(2))
        .and_then(|c| c.trim().parse().ok())
        .unwrap_or(0)
}

impl SippRun {
    /// Asserts that all `n` calls succeeded.
    pub fn assert_all_ok(&self, n: u64) {
        assert_eq!((self.successful, self.failed, self.exit), (n, 0, Some(0)), "screen:\n{}\nerrors:\n{}", self.screen, self.errors);
    }
}
