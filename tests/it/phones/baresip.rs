//! Debian's baresip 1.0 as an agent's phone, configured the way an operator sets one up: the SIP
//! domain is the PBX's host name, the password is the PBX's, and callgate is the outbound proxy
//! (`accounts`: `<sip:101@pbx.office.example;transport=udp>;auth_pass=...;outbound="sip:CALLGATE;transport=udp"`).
//!
//! The account line is what the operator would put in `accounts`; the driver hands it to
//! baresip with the `uanew` command once it is connected, so no event is missed.
//!
//! Each phone gets its own config directory in a temporary directory: `sip_listen` and
//! `net_interface` on its own loopback address (so its SDP names it too), G.711, a 440 Hz sine
//! as microphone (`ausine`, which wants 48 kHz stereo: baresip resamples), no audio player (baresip
//! 1.0 plays nothing and still decodes and counts what it receives), and `ctrl_tcp` as the only
//! user interface. The driver sends ctrl_tcp commands (netstring JSON `{"command", "params",
//! "token"}`, the `menu` module's commands: `dial`, `accept`, `hangup`, `hold`, `resume`, `line`,
//! `transfer`, `audio_debug`, `listcalls`) and collects its events (`REGISTER_OK`,
//! `CALL_INCOMING`, `CALL_ESTABLISHED`, `CALL_RTPESTAB`, `CALL_CLOSED`, ...). baresip runs with
//! `-s` (SIP trace), so its log shows every SIP message with its source and destination:
//! [`Baresip::trace_ends`] tells whom the phone really exchanged SIP with.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::nat::UdpNat;
use super::pbx::{password, PBX_DOMAIN};
use crate::common::sipp::free_port_on;

/// How long a phone waits for an event or a command's answer.
const WAIT: Duration = Duration::from_secs(15);

/// The SIP transport a phone uses toward callgate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// The `transport=` parameter value.
    pub fn param(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }

    /// The name baresip's SIP trace gives it (`UDP 127.0.0.2:5060 -> ...`).
    fn trace_name(self) -> &'static str {
        match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
            Self::Tls => "TLS",
        }
    }
}

/// How a phone is set up.
#[derive(Clone, Debug)]
pub struct Phone {
    pub ext: String,
    pub transport: Transport,
    /// The outbound proxy: callgate's listener for `transport` (or a NAT in front of it).
    pub outbound: SocketAddr,
    /// The SIP domain (the account's host): the PBX's host name unless a test says otherwise.
    pub domain: String,
    /// Where the phone listens and what it writes in Via, Contact and SDP.
    pub ip: IpAddr,
    /// The CA file that signs callgate's TLS certificate (`sip_cafile`).
    pub ca: Option<PathBuf>,
    /// `answermode` (`manual`: calls wait for `accept`; `auto`).
    pub answermode: &'static str,
    /// Registration interval asked for (`regint`).
    pub regint: u32,
    /// Where its TCP and TLS connections come from (see `tests/data/baresip/bind-source.c`):
    /// `ip` unless a NAT translates it.
    pub source_ip: IpAddr,
}

impl Phone {
    /// Extension `ext` on `ip`, registering in the PBX's domain through `outbound` over
    /// `transport`, answering by command.
    pub fn new(ext: &str, ip: IpAddr, transport: Transport, outbound: SocketAddr) -> Self {
        Self { ext: ext.to_owned(), transport, outbound, domain: PBX_DOMAIN.to_owned(), ip, ca: None, answermode: "manual", regint: 600, source_ip: ip }
    }

    /// The `accounts` line, as an operator writes it.
    pub fn account_line(&self) -> String {
        let t = self.transport.param();
        format!(
            "<sip:{ext}@{domain};transport={t}>;auth_pass={pw};outbound=\"sip:{outbound};transport={t}\";regint={regint};answermode={answer};mwi=no;ptime=20",
            ext = self.ext,
            domain = self.domain,
            pw = password(&self.ext),
            outbound = self.outbound,
            regint = self.regint,
            answer = self.answermode,
        )
    }
}

/// What the reader task collected from ctrl_tcp.
#[derive(Default)]
struct Inbox {
    events: VecDeque<Value>,
    responses: Vec<Value>,
    closed: bool,
}

/// A running baresip with its ctrl_tcp connection. Dropping it kills the process.
pub struct Baresip {
    pub phone: Phone,
    /// Where it listens for SIP (UDP and TCP; TLS on the next port).
    pub sip: SocketAddr,
    child: Child,
    log: PathBuf,
    /// The NAT its SIP goes through, if any (kept running as long as the phone).
    nat: Option<UdpNat>,
    ctrl: tokio::sync::Mutex<tokio::net::tcp::OwnedWriteHalf>,
    inbox: Arc<Mutex<Inbox>>,
    notify: Arc<Notify>,
    reader: tokio::task::JoinHandle<()>,
    token: std::sync::atomic::AtomicU64,
    _dir: tempfile::TempDir,
}

impl Baresip {
    /// Writes the phone's config, starts baresip and connects to its control port (bounded),
    /// then creates its account.
    pub async fn start(phone: Phone) -> Self {
        Self::start_behind(phone, None).await
    }

    /// Like [`Self::start`], the phone's SIP going through `nat` (its `outbound` must name
    /// the NAT's inside address).
    pub async fn start_behind(phone: Phone, nat: Option<UdpNat>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let sip = sip_listen(phone.ip);
        let ctrl_addr = SocketAddr::new(phone.ip, free_port_on(phone.ip));
        std::fs::write(dir.path().join("config"), config(&phone, sip, ctrl_addr)).unwrap();
        // The account is created through ctrl_tcp (`uanew`, which parses the same line as the
        // accounts file) once the driver listens: events from before that would be lost.
        std::fs::write(dir.path().join("accounts"), "").unwrap();
        std::fs::write(dir.path().join("contacts"), "").unwrap();
        let log = dir.path().join("baresip.log");
        let out = std::fs::File::create(&log).unwrap();
        let shim = bind_source_shim(dir.path());
        let child = Command::new("baresip")
            .env("LD_PRELOAD", &shim)
            .env("BIND_SRC_IP", phone.source_ip.to_string())
            .arg("-s")
            .arg("-f")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("baresip runs (apt-get install baresip)");
        let stream = connect(ctrl_addr, &log).await;
        let (read, write) = stream.into_split();
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let notify = Arc::new(Notify::new());
        let reader = tokio::spawn(read_netstrings(read, inbox.clone(), notify.clone()));
        let phone = Self { phone, sip, child, log, nat, ctrl: tokio::sync::Mutex::new(write), inbox, notify, reader, token: 0.into(), _dir: dir };
        phone.run("uanew", &phone.phone.account_line()).await;
        phone
    }

    /// Everything baresip printed so far (its SIP trace included).
    pub fn log(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        raw.replace("\r\n", "\n").replace("\x1b[36;1m", "").replace("\x1b[31m", "").replace("\x1b[;m", "")
    }

    /// Runs a menu command; its output (`data`) if baresip says `ok`, else the error text.
    pub async fn command(&self, command: &str, params: &str) -> Result<String, String> {
        let token = format!("t{}", self.token.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let body = json!({ "command": command, "params": params, "token": token }).to_string();
        let frame = format!("{}:{body},", body.len());
        self.ctrl.lock().await.write_all(frame.as_bytes()).await.expect("ctrl_tcp write");
        let what = format!("the answer to {command} {params}");
        let response = self
            .wait_for(&what, |inbox| {
                let at = inbox.responses.iter().position(|r| r["token"] == token.as_str())?;
                Some(inbox.responses.remove(at))
            })
            .await;
        let data = response["data"].as_str().unwrap_or_default().to_owned();
        if response["ok"] == true {
            Ok(data)
        } else {
            Err(data)
        }
    }

    /// Runs a command that must succeed.
    pub async fn run(&self, command: &str, params: &str) -> String {
        match self.command(command, params).await {
            Ok(data) => data,
            Err(e) => panic!("baresip {} refused `{command} {params}`: {e}\nits log:\n{}", self.phone.ext, self.log()),
        }
    }

    /// The next event of type `kind` not taken yet (earlier events of other types stay),
    /// waited for up to 15 s.
    pub async fn event(&self, kind: &str) -> Value {
        self.wait_for(&format!("event {kind}"), |inbox| {
            let at = inbox.events.iter().position(|e| e["type"] == kind)?;
            inbox.events.remove(at)
        })
        .await
    }

    /// The next event of type `kind` not taken yet that `pred` accepts, waited for up to
    /// `within`.
    pub async fn event_where(&self, kind: &str, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_until(&format!("event {kind} (with a condition)"), within, |inbox| {
            let at = inbox.events.iter().position(|e| e["type"] == kind && pred(e))?;
            inbox.events.remove(at)
        })
        .await
    }

    /// Waits for the answer to a re-INVITE the phone sent (hold, resume): its
    /// `CALL_REMOTE_SDP` event with `param` `answer`.
    pub async fn reinvite_answered(&self) -> Value {
        self.event_where("CALL_REMOTE_SDP", WAIT, |e| e["param"] == "answer").await
    }

    /// Makes the call with Call-ID `call_id` the current one (`callfind`): `hold`, `transfer`,
    /// `hangup` and `audio_debug` act on it.
    pub async fn select_call(&self, call_id: &str) {
        let out = self.run("callfind", call_id).await;
        assert!(out.contains("setting current call"), "phone {} has no call {call_id}: {out}", self.phone.ext);
    }

    /// The (From tag, To tag) of the dialog `call_id`, from the 200 to its INVITE in the trace.
    pub fn dialog_tags(&self, call_id: &str) -> (String, String) {
        let ok = self.traced("SIP/2.0 200", call_id).filter(|m| m.contains(" INVITE\n")).unwrap_or_else(|| panic!("no 200 for the INVITE of {call_id} in the trace:\n{}", self.log()));
        let tag = |name: &str| {
            let line = ok.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {ok}"));
            line.split(";tag=").nth(1).map(|t| t.split(';').next().unwrap_or_default().trim().to_owned()).unwrap_or_else(|| panic!("no tag in {line}"))
        };
        (tag("From:"), tag("To:"))
    }

    /// Like [`Self::event`], for the first of several types.
    pub async fn event_of(&self, kinds: &[&str]) -> Value {
        self.wait_for(&format!("one of the events {kinds:?}"), |inbox| {
            let at = inbox.events.iter().position(|e| kinds.iter().any(|k| e["type"] == *k))?;
            inbox.events.remove(at)
        })
        .await
    }

    /// Every event seen and not taken, by type (for assertions that something did not happen).
    pub fn pending_events(&self, kind: &str) -> Vec<Value> {
        self.inbox.lock().events.iter().filter(|e| e["type"] == kind).cloned().collect()
    }

    /// Waits for `REGISTER_OK` (panics on `REGISTER_FAIL`, with the log).
    pub async fn registered(&self) -> Value {
        let ev = self.event_of(&["REGISTER_OK", "REGISTER_FAIL"]).await;
        assert_eq!(ev["type"], "REGISTER_OK", "{} did not register: {ev}\nits log:\n{}", self.phone.ext, self.log());
        ev
    }

    /// Dials `number` (a user part: baresip completes it with the account's domain).
    pub async fn dial(&self, number: &str) {
        self.run("dial", number).await;
    }

    /// Waits for an incoming call and answers it: its `CALL_INCOMING` event.
    pub async fn answer(&self) -> Value {
        let incoming = self.event("CALL_INCOMING").await;
        self.run("accept", "").await;
        self.event("CALL_ESTABLISHED").await;
        incoming
    }

    /// The RTP packets the current call's audio stream sent and received so far, from
    /// `audio_debug` (`TX: packets=N`; `rcvd=N` summed over the RTCP session's members).
    pub async fn rtp_counts(&self) -> (u64, u64) {
        let text = self.run("audio_debug", "").await;
        let number_after = |at: &str| at.chars().take_while(char::is_ascii_digit).collect::<String>().parse::<u64>().unwrap_or(0);
        let sent = text.split("TX: packets=").nth(1).map(number_after).unwrap_or(0);
        let received = text.split("rcvd=").skip(1).map(number_after).sum();
        (sent, received)
    }

    /// Waits (bounded: 10 s) until the current call has both sent and received at least `n`
    /// RTP packets; the counts.
    pub async fn rtp_flowed(&self, n: u64) -> (u64, u64) {
        let mut counts = (0, 0);
        for _ in 0..50 {
            counts = self.rtp_counts().await;
            if counts.0 >= n && counts.1 >= n {
                return counts;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("phone {} RTP (sent, received) = {counts:?}, wanted {n} each way\nits log:\n{}", self.phone.ext, self.log());
    }

    /// The (source, destination) of every SIP message in baresip's trace, sent or received
    /// (`UDP 127.0.0.1:5060 -> 127.0.0.2:40000` heads each message), without repeats.
    pub fn trace_ends(&self) -> Vec<(SocketAddr, SocketAddr)> {
        let mut ends = Vec::new();
        for line in self.log().lines() {
            let Some(rest) = line.strip_prefix(self.phone.transport.trace_name()).map(str::trim) else { continue };
            let Some((from, to)) = rest.split_once(" -> ") else { continue };
            let (Ok(from), Ok(to)) = (from.trim().parse::<SocketAddr>(), to.trim().parse::<SocketAddr>()) else { continue };
            if !ends.contains(&(from, to)) {
                ends.push((from, to));
            }
        }
        ends
    }

    /// Asserts that the phone exchanged SIP with `peer` only (its NAT or relay): nobody sent to
    /// it around that peer, over a datagram or a connection of their own.
    pub fn assert_only_talked_to(&self, peer: SocketAddr) {
        let ends = self.trace_ends();
        assert!(!ends.is_empty(), "no SIP in the trace:\n{}", self.log());
        let around: Vec<_> = ends.iter().filter(|(from, to)| *from != peer && *to != peer).collect();
        assert!(around.is_empty(), "phone {} was reached around {peer}: {around:?}\nits log:\n{}", self.phone.ext, self.log());
    }

    /// The first SIP message in the trace whose first line starts with `start_line` and that
    /// carries `Call-ID: call_id`, as traced.
    pub fn traced(&self, start_line: &str, call_id: &str) -> Option<String> {
        let log = self.log();
        log.split("\n#\n").find(|m| m.lines().nth(1).is_some_and(|l| l.starts_with(start_line)) && m.contains(&format!("Call-ID: {call_id}\n"))).map(str::to_owned)
    }

    async fn wait_for<T>(&self, what: &str, take: impl FnMut(&mut Inbox) -> Option<T>) -> T {
        self.wait_until(what, WAIT, take).await
    }

    async fn wait_until<T>(&self, what: &str, within: Duration, mut take: impl FnMut(&mut Inbox) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.notify.notified();
            {
                let mut inbox = self.inbox.lock();
                if let Some(found) = take(&mut inbox) {
                    return found;
                }
                if inbox.closed {
                    panic!("baresip {}'s control connection closed while waiting for {what}\nits log:\n{}", self.phone.ext, self.log());
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let events: Vec<Value> = self.inbox.lock().events.iter().cloned().collect();
                panic!("baresip {}: no {what} within {within:?}; events not taken: {events:#?}\nits log:\n{}", self.phone.ext, self.log());
            }
        }
    }
}

impl Drop for Baresip {
    fn drop(&mut self) {
        self.reader.abort();
        self.nat.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::env::var_os("TEST_LOG").is_some() {
            eprintln!("---- baresip {} log ----\n{}", self.phone.ext, self.log());
        }
    }
}

/// Builds `tests/data/baresip/bind-source.c` into `dir` (with the system's C compiler, which
/// cargo needs anyway as its linker): the LD_PRELOAD shim that makes the phone's TCP and TLS
/// connections come from its own address.
fn bind_source_shim(dir: &std::path::Path) -> PathBuf {
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/baresip/bind-source.c");
    let shim = dir.join("bind-source.so");
    let out = Command::new("cc").args(["-shared", "-fPIC", "-O2", "-o"]).arg(&shim).arg(&source).arg("-ldl").output().expect("cc runs");
    assert!(out.status.success(), "cc {}: {}", source.display(), String::from_utf8_lossy(&out.stderr));
    shim
}

/// A SIP address on `ip` whose port is free for UDP and TCP, and whose next port (baresip's TLS
/// listener) is free for TCP.
fn sip_listen(ip: IpAddr) -> SocketAddr {
    for _ in 0..50 {
        let port = free_port_on(ip);
        if port < u16::MAX && std::net::TcpListener::bind((ip, port + 1)).is_ok() {
            return SocketAddr::new(ip, port);
        }
    }
    panic!("no SIP port pair free on {ip}");
}

fn config(phone: &Phone, sip: SocketAddr, ctrl: SocketAddr) -> String {
    let ca = phone.ca.as_ref().map(|p| format!("sip_cafile\t\t{}\n", p.display())).unwrap_or_default();
    format!(
        "poll_method\t\tepoll\n\
         sip_listen\t\t{sip}\n\
         {ca}\
         net_interface\t\t{ip}\n\
         call_local_timeout\t60\n\
         call_max_calls\t\t4\n\
         audio_source\t\tausine,440\n\
         ausrc_srate\t\t48000\n\
         ausrc_channels\t\t2\n\
         rtp_timeout\t\t0\n\
         module_path\t\t/usr/lib/baresip/modules\n\
         module\t\t\tg711.so\n\
         module\t\t\tausine.so\n\
         module_tmp\t\taccount.so\n\
         module_app\t\tmenu.so\n\
         module_app\t\tctrl_tcp.so\n\
         ctrl_tcp_listen\t\t{ctrl}\n",
        ip = phone.ip
    )
}

/// Connects to ctrl_tcp, retrying while baresip starts (bounded: 10 s).
async fn connect(addr: SocketAddr, log: &std::path::Path) -> TcpStream {
    for _ in 0..100 {
        if let Ok(s) = TcpStream::connect(addr).await {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("baresip's ctrl_tcp on {addr} never accepted; its log:\n{}", std::fs::read_to_string(log).unwrap_or_default());
}

/// Reads `LEN:JSON,` frames until the connection closes, sorting events from responses.
async fn read_netstrings(mut read: tokio::net::tcp::OwnedReadHalf, inbox: Arc<Mutex<Inbox>>, notify: Arc<Notify>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = read.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            inbox.lock().closed = true;
            notify.notify_waiters();
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        while let Some((value, used)) = netstring(&buf) {
            buf.drain(..used);
            let mut inbox = inbox.lock();
            if value["event"] == true {
                inbox.events.push_back(value);
            } else {
                inbox.responses.push(value);
            }
        }
        notify.notify_waiters();
    }
}

/// One complete netstring at the start of `buf`: its JSON and the bytes it took.
fn netstring(buf: &[u8]) -> Option<(Value, usize)> {
    let colon = buf.iter().position(|b| *b == b':')?;
    let len: usize = std::str::from_utf8(&buf[..colon]).ok()?.parse().ok()?;
    let end = colon + 1 + len;
    if buf.len() <= end {
        return None;
    }
    assert_eq!(buf[end], b',', "a netstring ends with a comma");
    let value = serde_json::from_slice(&buf[colon + 1..end]).unwrap_or(Value::Null);
    Some((value, end + 1))
}
