//! Debian's Kamailio playing the office PBX (`tests/data/kamailio/pbx.cfg`): the extensions'
//! registrar with digest auth (realm [`PBX_REALM`], extension EXT's password [`password`]),
//! keeping each registration's Path (RFC 3327), and a proxy that sends calls for registered
//! extensions along that Path and calls for any other number to the trunk, a SIPp "customer" at
//! [`Pbx::trunk`] (on [`TRUNK_IP`], the carrier behind the PBX) that it trusts by address and port.
//!
//! One Kamailio per test: its own copy of the cfg (ports substituted), its own runtime directory
//! in a temporary directory, in the foreground (`-DD -E`) in its own process group. Dropping
//! [`Pbx`] ends the whole group (SIGTERM, then SIGKILL after a bounded wait).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::sipp::{free_port, free_port_on};
use crate::common::PBX_IP;

/// The carrier behind the PBX (the customers' side of its trunk). Not 127.0.0.1: callgate must be
/// able to tell the PBX's record-routed hop from the far end of a dialog, as it can in a real
/// network; callgate never talks to it.
pub const TRUNK_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 8));

/// The PBX's host name: the SIP domain phones are configured with (Kamailio's `alias`).
pub const PBX_DOMAIN: &str = "pbx.office.example";
/// The PBX's digest realm.
pub const PBX_REALM: &str = "pbx.office.example";

/// The PBX's password for extension `ext` (the cfg derives it from the auth user).
pub fn password(ext: &str) -> String {
    format!("{ext}-pbx-secret")
}

/// A running Kamailio PBX on 127.0.0.1, UDP and TCP on [`Pbx::addr`].
pub struct Pbx {
    /// Where the PBX listens (UDP and TCP): a portal's `pbx_host`.
    pub addr: SocketAddr,
    /// The trunk's address (on [`TRUNK_IP`]): requests from it are trusted, calls for numbers
    /// that are not extensions go to it. A SIPp "customer" binds it (`Sipp::at(pbx.trunk)`).
    pub trunk: SocketAddr,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Pbx {
    /// Starts Kamailio and waits (bounded: 10 s) until it answers an OPTIONS.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr = SocketAddr::new(PBX_IP, free_port());
        let trunk = SocketAddr::new(TRUNK_IP, free_port_on(TRUNK_IP));
        let cfg = write_cfg(dir.path(), addr.port(), trunk);
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        let log = dir.path().join("kamailio.log");
        let child = spawn(&cfg, &run, &log);
        let pbx = Self { addr, trunk, child, log, _dir: dir };
        pbx.wait_ready().await;
        pbx
    }

    /// Everything Kamailio logged so far (its script logs each request it got with its source,
    /// and each registration: `PBX registered EXT contact=<...> path=<...>`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded by `within`, 50 ms steps) until the log has a line containing all of
    /// `needles`; that line, or `None`.
    pub async fn wait_log(&self, needles: &[&str], within: Duration) -> Option<String> {
        let steps = within.as_millis() / 50 + 1;
        for _ in 0..steps {
            if let Some(line) = self.log().lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return Some(line.to_owned());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// The last registration of `ext` the PBX accepted: (Contact, Path) as it stored them
    /// (Path `<null>` when the REGISTER had none), waited for up to 10 s.
    pub async fn registration(&self, ext: &str) -> Option<(String, String)> {
        let prefix = format!("PBX registered {ext} contact=");
        self.wait_log(&[&prefix], Duration::from_secs(10)).await?;
        let log = self.log();
        let line = log.lines().rev().find(|l| l.contains(&prefix))?;
        let rest = &line[line.find(&prefix)? + prefix.len()..];
        let (contact, path) = rest.split_once(" path=")?;
        Some((contact.to_owned(), path.trim().to_owned()))
    }

    async fn wait_ready(&self) {
        let sock = tokio::net::UdpSocket::bind((PBX_IP, 0)).await.unwrap();
        let local = sock.local_addr().unwrap();
        for i in 0..100 {
            let options = format!(
                "OPTIONS sip:{addr} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-ready-{i}\r\nFrom: <sip:probe@{local}>;tag=ready\r\nTo: <sip:{addr}>\r\n\
                 Call-ID: ready-{i}@{local}\r\nCSeq: {i} OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                addr = self.addr
            );
            sock.send_to(options.as_bytes(), self.addr).await.unwrap();
            let mut buf = [0u8; 2048];
            if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), sock.recv(&mut buf)).await {
                if buf[..n].starts_with(b"SIP/2.0 200") {
                    return;
                }
            }
        }
        panic!("Kamailio did not answer OPTIONS on {} within 10 s; its log:\n{}", self.addr, self.log());
    }
}

impl Drop for Pbx {
    fn drop(&mut self) {
        // Kamailio's main process ends its children on SIGTERM; the group kill covers a main
        // process that died first (children would otherwise keep the ports).
        let group = -(self.child.id() as i32);
        unsafe { libc::kill(group, libc::SIGTERM) };
        for _ in 0..40 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
        if std::env::var_os("TEST_LOG").is_some() {
            eprintln!("---- Kamailio PBX {} log ----\n{}", self.addr, self.log());
        }
    }
}

/// The cfg with this PBX's ports, written into `dir`.
fn write_cfg(dir: &Path, port: u16, trunk: SocketAddr) -> PathBuf {
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kamailio/pbx.cfg");
    let text = std::fs::read_to_string(&template).expect("tests/data/kamailio/pbx.cfg");
    let text = text.replace("@PBX_PORT@", &port.to_string()).replace("@TRUNK_IP@", &trunk.ip().to_string()).replace("@CUSTOMER_PORT@", &trunk.port().to_string());
    let cfg = dir.join("pbx.cfg");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

fn spawn(cfg: &Path, run: &Path, log: &Path) -> Child {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log).unwrap();
    // Debian installs it in /usr/sbin, which a normal user's PATH may lack.
    let kamailio = if Path::new("/usr/sbin/kamailio").exists() { "/usr/sbin/kamailio" } else { "kamailio" };
    Command::new(kamailio)
        .arg("-f")
        .arg(cfg)
        .args(["-DD", "-E", "-m", "32", "-M", "8"])
        .arg("-Y")
        .arg(run)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .spawn()
        .expect("kamailio runs (apt-get install kamailio)")
}
