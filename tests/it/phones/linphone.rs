//! Debian's linphone-cli 5.1 as an agent's phone, configured as a user configures it: an account
//! whose identity is `sip:EXT@<the PBX's domain>`, with callgate as its outbound proxy, with the
//! PBX's digest credentials. In linphone's terms the account's server (`reg_proxy`) and its route
//! (`reg_route`) are both callgate: REGISTER goes to the server with the domain as Request-URI,
//! and calls to `sip:NUMBER@<domain>` go to the route (with the server alone, linphone would
//! look the domain up for calls).
//!
//! Driven through `linphone-daemon` (the same library as `linphonec`) on its stdin: one command
//! per line, each answered by a `Status: Ok|Error` block; call state changes arrive as
//! `Event: LinphoneCall...` / `Id: N` blocks in between (`--disable-stats-events` keeps RTCP
//! reports out of that stream). Each phone has its own HOME, config, log and ports, and binds
//! its SIP listening points and RTP to its own address (`[sip] bind_address`, `[rtp]
//! bind_address`). Linphone cannot choose the source address of the TCP and TLS connections it
//! opens (belle-sip binds them to no address), so over TCP and TLS it talks from 127.0.0.1.
//!
//! No sound card: linphone then sends what `[sound] hold_music` plays (a 1 kHz tone written by
//! the driver, looped) and plays what it receives to nothing. Its log (`--log`) has oRTP's
//! statistics of every audio stream that ended: [`Linphone::audio`] reads them, so a test can say
//! that audio went both ways.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::common::sipp::free_port_on;

/// How long a command, a registration or a call state is waited for.
const WAIT: Duration = Duration::from_secs(10);
/// The daemon's prompt, which readline prints (with the echoed command) before each command.
const PROMPT: &str = "daemon-linphone>";

/// The transport linphone uses to reach callgate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// The `transport=` URI parameter.
    pub fn param(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }
}

/// How a phone is set up before it starts.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The extension: the identity's user and the digest username.
    pub ext: String,
    /// The address the phone binds (SIP listening points and RTP).
    pub ip: IpAddr,
    pub transport: Transport,
    /// Where linphone sends everything: callgate's listener for `transport` (or a NAT in front).
    pub proxy: SocketAddr,
    /// The SIP domain (the identity's host and the REGISTER's Request-URI).
    pub domain: String,
    pub password: String,
    pub realm: String,
    /// Registration interval asked for (`reg_expires`).
    pub expires: u32,
    /// The CA a TLS server certificate must chain to (`[sip] root_ca`).
    pub root_ca: Option<PathBuf>,
    /// RFC 4028 session timer interval to ask for (linphone then refreshes at half of it).
    pub session_expires: Option<u32>,
}

impl Setup {
    /// Extension `ext` on `ip`, registering in `domain` through callgate at `proxy`.
    pub fn new(ext: &str, ip: IpAddr, transport: Transport, proxy: SocketAddr, domain: &str, password: &str) -> Self {
        Self {
            ext: ext.to_owned(),
            ip,
            transport,
            proxy,
            domain: domain.to_owned(),
            password: password.to_owned(),
            realm: domain.to_owned(),
            expires: 600,
            root_ca: None,
            session_expires: None,
        }
    }

    /// callgate as linphone names it: over TLS by the name in its certificate (`localhost`:
    /// belle-sip's mbedTLS checks DNS names only, not IP addresses), else by address.
    fn proxy_host(&self) -> String {
        match self.transport {
            Transport::Tls => format!("localhost:{}", self.proxy.port()),
            _ => self.proxy.to_string(),
        }
    }

    /// The `linphonerc` for this phone, its SIP UDP port `sip_port` (TCP and TLS listen on
    /// random ports of `ip`), its files in `dir`.
    fn rc(&self, sip_port: u16, dir: &Path) -> String {
        let proxy = format!("<sip:{};transport={}>", self.proxy_host(), self.transport.param());
        let tone = dir.join("tone.wav");
        let mut rc = format!(
            "[sip]\nsip_port={sip_port}\nsip_tcp_port=-1\nsip_tls_port=-1\nbind_address={ip}\ndefault_proxy=0\n",
            ip = self.ip
        );
        if let Some(ca) = &self.root_ca {
            rc.push_str(&format!("root_ca={}\nverify_server_certs=1\nverify_server_cn=1\n", ca.display()));
        }
        if let Some(se) = self.session_expires {
            rc.push_str(&format!("session_expires_enabled=1\nsession_expires_value={se}\nsession_expires_min_value={se}\nsession_expires_refresher_value=2\n"));
        }
        let route = format!("<sip:{};transport={};lr>", self.proxy_host(), self.transport.param());
        rc.push_str(&format!(
            "[rtp]\naudio_rtp_port={rtp}\nbind_address={ip}\naudio_jitt_comp=60\n\
             [sound]\nhold_music={tone}\necho_cancellation=0\n\
             [video]\nenabled=0\ndisplay=0\ncapture=0\n\
             [proxy_0]\nreg_proxy={proxy}\nreg_route={route}\nreg_identity=sip:{ext}@{domain}\nreg_expires={expires}\nreg_sendregister=1\npublish=0\n\
             [auth_info_0]\nusername={ext}\npasswd={password}\nrealm={realm}\ndomain={domain}\n",
            rtp = free_port_on(self.ip),
            ip = self.ip,
            tone = tone.display(),
            ext = self.ext,
            domain = self.domain,
            expires = self.expires,
            password = self.password,
            realm = self.realm,
        ));
        rc
    }
}

/// What oRTP counted for one audio stream that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioStats {
    pub sent: u64,
    pub received: u64,
}

/// A running `linphone-daemon`. Dropping it kills it.
pub struct Linphone {
    /// Its SIP UDP listening address (`ip:sip_port`).
    pub sip: SocketAddr,
    pub setup: Setup,
    child: Child,
    stdin: ChildStdin,
    /// Everything the daemon printed (responses and events), shared with the reader thread.
    out: Arc<Mutex<String>>,
    /// Serialises commands: a response is the first `Status:` after the command was written.
    lock: tokio::sync::Mutex<()>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// A parsed `call-state-changed` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEvent {
    /// `LinphoneCallIncomingReceived`, `LinphoneCallStreamsRunning`, ...
    pub state: String,
    pub id: u32,
}

impl Linphone {
    /// Starts the daemon with `setup`, waits (bounded) for its first prompt, and keeps only
    /// G.711 (PCMU, PCMA) enabled, as the SIPp PBX scenarios offer.
    pub async fn start(setup: Setup) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join(".local/share/linphone")).unwrap();
        std::fs::write(dir.path().join("tone.wav"), tone_wav()).unwrap();
        let sip = SocketAddr::new(setup.ip, free_port_on(setup.ip));
        let rc = dir.path().join("linphonerc");
        std::fs::write(&rc, setup.rc(sip.port(), dir.path())).unwrap();
        let log = dir.path().join("linphone.log");
        let mut child = Command::new("linphone-daemon")
            .arg("--config")
            .arg(&rc)
            .arg("--log")
            .arg(&log)
            .arg("--disable-stats-events")
            .env("HOME", dir.path())
            .env("TERM", "dumb")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("linphone-daemon runs (apt-get install linphone-cli)");
        let stdin = child.stdin.take().unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let mut stdout = child.stdout.take().unwrap();
        let sink = Arc::clone(&out);
        // Raw reads, not lines: the prompt has no newline, and a response is one write (so one
        // read), which is how its end is known.
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                sink.lock().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let phone = Self { sip, setup, child, stdin, out, lock: tokio::sync::Mutex::new(()), log, _dir: dir };
        phone.ok("audio-codec-disable ALL").await;
        phone.ok("audio-codec-enable 0").await;
        phone.ok("audio-codec-enable 8").await;
        phone
    }

    /// Runs `command` and returns its response (the lines from `Status:` on), waited for up
    /// to [`WAIT`].
    pub async fn command(&self, command: &str) -> Vec<String> {
        let _one = self.lock.lock().await;
        let from = self.out.lock().len();
        let mut stdin = &self.stdin;
        stdin.write_all(format!("{command}\n").as_bytes()).and_then(|()| stdin.flush()).unwrap_or_else(|e| panic!("{command}: daemon gone: {e}\n{}", self.transcript()));
        for _ in 0..(WAIT.as_millis() / 20) {
            if let Some(response) = response_after(&self.out.lock()[from..]) {
                return response;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{}: no answer to `{command}`; daemon printed:\n{}", self.setup.ext, self.transcript());
    }

    /// Runs `command`, which must answer `Status: Ok`; its response.
    pub async fn ok(&self, command: &str) -> Vec<String> {
        let r = self.command(command).await;
        assert_eq!(r.first().map(String::as_str), Some("Status: Ok"), "`{command}` on {}: {r:?}\n{}", self.setup.ext, self.transcript());
        r
    }

    /// The `name: value` of a response.
    pub fn field<'a>(response: &'a [String], name: &str) -> Option<&'a str> {
        response.iter().find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
    }

    /// Waits (bounded: [`WAIT`]) until the account's registration is `LinphoneRegistrationOk`.
    pub async fn wait_registered(&self) {
        self.wait_registration("LinphoneRegistrationOk").await;
    }

    /// Waits (bounded: [`WAIT`]) until the account's registration state is `state`.
    pub async fn wait_registration(&self, state: &str) {
        let mut last = String::new();
        for _ in 0..(WAIT.as_millis() / 100) {
            let r = self.ok("register-status 1").await;
            last = Self::field(&r, "State").unwrap_or_default().to_owned();
            if last == state {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{}: registration is {last}, not {state}; log tail:\n{}", self.setup.ext, self.log_tail(60));
    }

    /// Places a call to `target` (`sip:...` or a number in the account's domain); its id.
    pub async fn call(&self, target: &str) -> u32 {
        let uri = if target.starts_with("sip:") { target.to_owned() } else { format!("sip:{target}@{}", self.setup.domain) };
        let r = self.ok(&format!("call {uri}")).await;
        Self::field(&r, "Id").and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("call id in {r:?}"))
    }

    /// Waits for an incoming call; its id.
    pub async fn incoming(&self) -> u32 {
        self.wait_event(None, "LinphoneCallIncomingReceived").await
    }

    /// Answers call `id` and waits until its streams run.
    pub async fn answer(&self, id: u32) {
        self.ok(&format!("answer {id}")).await;
        self.wait_event(Some(id), "LinphoneCallStreamsRunning").await;
    }

    /// Hangs up call `id` and waits until it is released.
    pub async fn hang_up(&self, id: u32) {
        self.ok(&format!("terminate {id}")).await;
        self.wait_event(Some(id), "LinphoneCallReleased").await;
    }

    /// Puts call `id` on hold (waits for `Paused`).
    pub async fn hold(&self, id: u32) {
        self.ok(&format!("call-pause {id}")).await;
        self.wait_event(Some(id), "LinphoneCallPaused").await;
    }

    /// Takes call `id` off hold (waits for the streams to run again after the resume).
    pub async fn resume(&self, id: u32) {
        let seen = self.events().len();
        self.ok(&format!("call-resume {id}")).await;
        self.wait_event_after(seen, Some(id), "LinphoneCallStreamsRunning").await;
    }

    /// Blind transfer of call `id` to `target` (REFER with `Refer-To: target`).
    pub async fn transfer(&self, id: u32, target: &str) {
        let uri = if target.starts_with("sip:") { target.to_owned() } else { format!("sip:{target}@{}", self.setup.domain) };
        self.ok(&format!("call-transfer {id} {uri}")).await;
    }

    /// Attended transfer: call `id` is transferred to the party of call `to` (REFER with
    /// `Refer-To: <...?Replaces=...>`).
    pub async fn transfer_to_call(&self, id: u32, to: u32) {
        self.ok(&format!("call-transfer {id} {to}")).await;
    }

    /// `call-status` of call `id`: its `State:` (e.g. `LinphoneCallStreamsRunning`), or `None`
    /// when the daemon no longer knows the call.
    pub async fn state(&self, id: u32) -> Option<String> {
        let r = self.command(&format!("call-status {id}")).await;
        Self::field(&r, "State").map(str::to_owned)
    }

    /// Every call state event so far, in order.
    pub fn events(&self) -> Vec<CallEvent> {
        let out = self.out.lock();
        let mut events = Vec::new();
        let mut state: Option<String> = None;
        for line in out.lines().map(clean) {
            if let Some(s) = line.strip_prefix("Event: ") {
                state = Some(s.to_owned());
            } else if let (Some(s), Some(id)) = (&state, line.strip_prefix("Id: ")) {
                if let Ok(id) = id.trim().parse() {
                    events.push(CallEvent { state: s.clone(), id });
                }
                state = None;
            }
        }
        events
    }

    /// Waits (bounded: [`WAIT`]) for a `state` event of call `id` (any call when `None`); the
    /// call's id.
    pub async fn wait_event(&self, id: Option<u32>, state: &str) -> u32 {
        self.wait_event_after(0, id, state).await
    }

    /// Like [`Self::wait_event`], among the events after the first `seen`.
    pub async fn wait_event_after(&self, seen: usize, id: Option<u32>, state: &str) -> u32 {
        for _ in 0..(WAIT.as_millis() / 50) {
            if let Some(e) = self.events().iter().skip(seen).find(|e| e.state == state && id.is_none_or(|i| i == e.id)) {
                return e.id;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{}: no {state} for call {id:?}; events: {:?}\nlog tail:\n{}", self.setup.ext, self.events(), self.log_tail(80));
    }

    /// Whether call `id` ever reached `state`.
    pub fn reached(&self, id: u32, state: &str) -> bool {
        self.events().iter().any(|e| e.id == id && e.state == state)
    }

    /// The statistics of every audio stream that ended so far, from the log.
    pub fn audio(&self) -> Vec<AudioStats> {
        audio_stats(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// The whole log (SIP messages included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of the log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().filter(|l| !l.contains("mediastreamer-message-") && !l.contains("Codec ")).collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Everything the daemon printed, for failure messages.
    pub fn transcript(&self) -> String {
        self.out.lock().clone()
    }

    /// Quits the daemon (bounded wait; killed on timeout), so its log is complete.
    pub async fn quit(mut self) -> String {
        let _ = (&self.stdin).write_all(b"quit\n");
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.log()
    }
}

impl Drop for Linphone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // LINPHONE_LOGS=<dir>: keep each phone's transcript and log there, for a failing story.
        if let Some(dir) = std::env::var_os("LINPHONE_LOGS") {
            let name = format!("linphone-{}-{}", self.setup.ext, self.sip.port());
            let _ = std::fs::write(Path::new(&dir).join(format!("{name}.out")), self.transcript());
            let _ = std::fs::copy(&self.log, Path::new(&dir).join(format!("{name}.log")));
        }
    }
}

/// The first response in `out` (from its `Status:` line), if one was printed. A response is one
/// write: it ends at the next prompt or event, or at the end of what was printed.
fn response_after(out: &str) -> Option<Vec<String>> {
    let mut lines = out.lines().skip_while(|l| !clean(l).starts_with("Status:"));
    let status = lines.next()?;
    let rest = lines.take_while(|l| !l.starts_with(PROMPT) && !l.starts_with("Event-type:"));
    Some(std::iter::once(clean(status)).chain(rest).map(str::to_owned).collect())
}

/// A line without the prompt readline may have printed in front of it.
fn clean(line: &str) -> &str {
    line.trim_start_matches(PROMPT).trim_end()
}

/// oRTP's `AUDIO SESSION'S RTP STATISTICS` blocks in a linphone log: packets sent and received.
fn audio_stats(log: &str) -> Vec<AudioStats> {
    let mut all = Vec::new();
    let mut current: Option<AudioStats> = None;
    for line in log.lines() {
        let Some((_, text)) = line.split_once("ortp-message-") else { continue };
        if text.contains("AUDIO SESSION'S RTP STATISTICS") {
            current = Some(AudioStats { sent: 0, received: 0 });
            continue;
        }
        let Some(stats) = current.as_mut() else { continue };
        let count = || text.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
        if text.starts_with("sent ") && text.trim_end().ends_with(" packets") && !text.starts_with("sent rtcp") {
            stats.sent = count();
        } else if text.starts_with("received ") && text.trim_end().ends_with(" packets") && !text.starts_with("received rtcp") {
            stats.received = count();
        } else if text.starts_with("received rtcp") {
            all.extend(current.take());
        }
    }
    all
}

/// Two seconds of a 1 kHz tone, 16-bit PCM, 8 kHz mono: what the phone "says" (linphone's
/// file player reads PCM WAV only).
fn tone_wav() -> Vec<u8> {
    const RATE: u32 = 8000;
    let samples: Vec<i16> = (0..RATE * 2).map(|i| ((i as f64 * 2.0 * std::f64::consts::PI * 1000.0 / RATE as f64).sin() * 8000.0) as i16).collect();
    let data_len = (samples.len() * 2) as u32;
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&RATE.to_le_bytes());
    wav.extend_from_slice(&(RATE * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        wav.extend_from_slice(&s.to_le_bytes());
    }
    wav
}

#[test]
fn rtp_statistics_are_read_from_the_log() {
    let log = "x ortp-message-===\n\
               x ortp-message-             AUDIO SESSION'S RTP STATISTICS                \n\
               x ortp-message-sent                                        174 packets\n\
               x ortp-message-                                              0 duplicated packets\n\
               x ortp-message-received                                    170 packets\n\
               x ortp-message-incoming received too late                    0 packets\n\
               x ortp-message-sent rtcp                                     0 packets\n\
               x ortp-message-received rtcp                                 0 packets\n";
    assert_eq!(audio_stats(log), [AudioStats { sent: 174, received: 170 }]);
}

mod stories;

#[test]
fn a_response_ends_at_the_next_prompt_or_event() {
    let out = "daemon-linphone>call sip:x@y\nStatus: Ok\n\nId: 1\n\nEvent-type: call-state-changed\n\nEvent: LinphoneCallOutgoingInit\n";
    assert_eq!(response_after(out).unwrap(), ["Status: Ok", "", "Id: 1", ""]);
    let out = "daemon-linphone>\nEvent-type: call-state-changed\n\nEvent: LinphoneCallIncomingReceived\nFrom: sip:a@b\nId: 1\n\nanswer\nStatus: Ok\ndaemon-linphone>";
    assert_eq!(response_after(out).unwrap(), ["Status: Ok"]);
    assert!(response_after("daemon-linphone>version\n").is_none());
}
