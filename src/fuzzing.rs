//! Fuzz targets and a dependency-free mutation fuzzer (issue 8).
//!
//! Four targets, each a function of arbitrary bytes that must never panic:
//! - [`edge`]: sequences of SIP messages from the PBX, phones, a browser agent and an attacker
//!   (UDP, TCP, WebSocket) through the whole front door: redirect listener, edge proxy, browser
//!   registrar and media bridge, with a simulated clock and far ends answering what callgate
//!   sends (see `fuzzing/edge.rs` for the input format);
//! - [`sip`]: stream framing (`frame_stream`, whole and in pieces: both must agree), the zero-copy parser, every
//!   accessor the redirect listener and the proxy use, the 400/503 writers, number
//!   normalisation, and the redirect listener's whole handler;
//! - [`b24_event`]: the form-encoded Bitrix24 event parser (PHP bracket keys) and what follows it
//!   (classification, de-duplication key);
//! - [`admin_json`]: the admin API's JSON bodies (settings, portal, mapping, line) through the
//!   same deserialiser and validation as the HTTP handlers, errors rendered as responses.
//!
//! The same functions are the bodies of the cargo-fuzz targets in `fuzz/` (libFuzzer, nightly
//! or `RUSTC_BOOTSTRAP=1`) and of [`run`], a deterministic mutation fuzzer on stable Rust:
//! seeds from a corpus, mutated by bit flips, interesting bytes, SIP/form/JSON tokens,
//! insertions, deletions, duplications and splices with a xorshift generator, so a run is
//! reproducible from its seed. `cargo run --release --example fuzz -- edge 10000000 1` is the
//! long run; the test suite runs a short one of each target (`tests/it/fuzz.rs`).
//!
//! Not part of the gateway's API (`#[doc(hidden)]` at the crate root).

mod edge;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::directory::Directory;
use crate::routing::{DecisionLog, RedirectConfig, RedirectServer};
use crate::sip::core::{
    frame_stream, to_tag_for, write_bad_frame, write_bad_request, write_response, Frame,
    HeaderName, SipMessage, Uri, Via,
};
use crate::sip::transport::{Outbox, Peer, SipHandler, Transport};

/// A fuzz target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// [`edge`].
    Edge,
    /// [`sip`].
    Sip,
    /// [`b24_event`].
    B24Event,
    /// [`admin_json`].
    AdminJson,
}

impl Target {
    /// By name: `edge`, `sip`, `b24_event`, `admin_json`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "edge" => Some(Self::Edge),
            "sip" => Some(Self::Sip),
            "b24_event" => Some(Self::B24Event),
            "admin_json" => Some(Self::AdminJson),
            _ => None,
        }
    }

    /// Runs the target on one input.
    pub fn call(self, data: &[u8]) {
        match self {
            Self::Edge => edge(data),
            Self::Sip => sip(data),
            Self::B24Event => b24_event(data),
            Self::AdminJson => admin_json(data),
        }
    }

    /// Built-in seeds (the run adds files given on the command line).
    pub fn seeds(self) -> Vec<Vec<u8>> {
        let list: &[&[u8]] = match self {
            Self::Edge => return edge::seeds(),
            Self::Sip => SIP_SEEDS,
            Self::B24Event => EVENT_SEEDS,
            Self::AdminJson => JSON_SEEDS,
        };
        list.iter().map(|s| s.to_vec()).collect()
    }

    fn tokens(self) -> &'static [&'static [u8]] {
        match self {
            Self::Edge => edge_tokens(),
            Self::Sip => SIP_TOKENS,
            Self::B24Event => EVENT_TOKENS,
            Self::AdminJson => JSON_TOKENS,
        }
    }
}

/// The edge target: message sequences through the whole front door (`fuzzing/edge.rs`).
pub fn edge(data: &[u8]) {
    edge::edge(data);
}

/// What the edge target reached so far in this process: inputs whose browser agent registered
/// with its digest, and inputs with a call whose media the bridge anchored.
pub fn edge_coverage() -> (u64, u64) {
    use std::sync::atomic::Ordering;
    (edge::REGISTERED.load(Ordering::Relaxed), edge::ANCHORED.load(Ordering::Relaxed))
}

/// The SIP tokens and the edge target's own (record separators, absurd numbers, routes).
fn edge_tokens() -> &'static [&'static [u8]] {
    static TOKENS: OnceLock<Vec<&'static [u8]>> = OnceLock::new();
    TOKENS.get_or_init(|| SIP_TOKENS.iter().chain(edge::TOKENS).copied().collect())
}

/// The SIP target: framing, parsing, accessors, answers, and the redirect handler.
pub fn sip(data: &[u8]) {
    // As a stream, all at once and then in pieces of 1-64 bytes (framing must agree with itself
    // however the bytes arrive).
    let whole = frames(data, data.len().max(1), true);
    let piece =
        1 + (data.len().wrapping_mul(7919) + usize::from(data.first().copied().unwrap_or(0))) % 64;
    let trickled = frames(data, piece, false);
    assert_eq!(whole, trickled, "framing depends on how the bytes arrive");
    // As a datagram.
    exercise(Bytes::copy_from_slice(data));
    let mut out = Outbox::new();
    let peer = Peer {
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 5060)),
        transport: Transport::Udp,
    };
    redirect().on_message(Bytes::copy_from_slice(data), peer, Instant::now(), &mut out);
}

/// Frames `data` arriving `chunk` bytes at a time (parsing each frame when `parse`); what each
/// frame was (length or error).
fn frames(data: &[u8], chunk: usize, parse: bool) -> Vec<Result<usize, ()>> {
    let mut seen = Vec::new();
    let mut buf = BytesMut::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match frame_stream(&buf, 65_535) {
                Ok(Frame::Complete(n)) => {
                    assert!(n > 0 && n <= buf.len(), "frame length {n} of {}", buf.len());
                    let msg = buf.split_to(n).freeze();
                    if parse {
                        exercise(msg);
                    }
                    seen.push(Ok(n));
                }
                Ok(Frame::KeepAlive(n)) => {
                    assert!(n > 0 && n <= buf.len());
                    let _ = buf.split_to(n);
                }
                Ok(Frame::Incomplete) => break,
                Err(_) => {
                    let mut reply = BytesMut::new();
                    write_bad_frame(&buf, &mut reply);
                    seen.push(Err(()));
                    return seen;
                }
            }
        }
    }
    seen
}

/// Every accessor and writer on one message.
fn exercise(raw: Bytes) {
    let mut out = BytesMut::new();
    match SipMessage::parse(raw.clone()) {
        Ok(msg) => {
            let _ = (
                msg.method(),
                msg.method_raw(),
                msg.status(),
                msg.reason(),
                msg.call_id(),
                msg.cseq(),
                msg.max_forwards(),
                msg.content_length(),
            );
            let _ = (
                msg.body().len(),
                msg.from_user_tag(),
                msg.to_user_tag(),
                msg.contact(),
            );
            if let Some(uri) = msg.request_uri() {
                let _ = (Uri::parse(uri), Uri::user_of(uri));
            }
            for addr in [msg.from(), msg.to()].into_iter().flatten() {
                let _ = (
                    addr.param(b"tag"),
                    addr.uri.param(b"transport"),
                    addr.uri.is_sip(),
                );
                if let Some(user) = addr.uri.user {
                    let _ = crate::phone::normalize_bytes(user);
                }
            }
            for via in msg.headers(HeaderName::Via) {
                if let Some(v) = Via::parse(via) {
                    let _ = (v.param(b"received"), v.has_rfc3261_branch());
                }
            }
            for (_, name, value) in msg.header_lines() {
                let _ = (name.len(), value.len());
            }
            let _ = msg.values(HeaderName::Route).count();
            let _ = msg.header_by_name(b"X-Call-Id");
            if msg.is_request() && msg.method_raw() != Some(b"ACK") {
                write_response(
                    &msg,
                    503,
                    "Service Unavailable",
                    Some(&to_tag_for(&msg)),
                    &[("Retry-After", b"5")],
                    &mut out,
                );
                let answer =
                    SipMessage::parse(out.split().freeze()).expect("our own answer parses");
                assert_eq!(answer.status(), Some(503));
            }
        }
        Err(e) => write_bad_request(&raw, &e, &mut out),
    }
    let _ = SipMessage::parse_unvalidated(raw);
}

/// One redirect listener with an empty directory (every request is parsed and answered 403).
fn redirect() -> &'static RedirectServer {
    static SERVER: OnceLock<RedirectServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let cfg = RedirectConfig {
            no_decision_code: 404,
            max_remembered: 10_000,
        };
        RedirectServer::new(Directory::default(), cfg, Arc::new(DecisionLog::new(100)))
    })
}

/// The Bitrix24 event form target.
pub fn b24_event(data: &[u8]) {
    crate::http::fuzz_event_form(data);
}

/// The admin API JSON target.
pub fn admin_json(data: &[u8]) {
    crate::http::fuzz_admin_json(data);
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Inputs run.
    pub inputs: u64,
    /// Bytes run.
    pub bytes: u64,
    /// Longest input.
    pub longest: usize,
    /// Inputs that panicked (only [`run_keep_going`] goes on after one).
    pub panics: u64,
}

/// The inputs of a run: the corpus entries, then mutations of them, deterministic for `seed`.
struct Inputs {
    target: Target,
    corpus: Vec<Vec<u8>>,
    rng: XorShift,
    max_len: usize,
    input: Vec<u8>,
    index: u64,
}

impl Inputs {
    fn new(target: Target, extra_seeds: Vec<Vec<u8>>, seed: u64, max_len: usize) -> Self {
        let mut corpus = target.seeds();
        corpus.extend(extra_seeds);
        Self { target, corpus, rng: XorShift(seed | 1), max_len, input: Vec::with_capacity(max_len), index: 0 }
    }

    /// The next input (its number, its bytes), counted into `stats`.
    fn next(&mut self, stats: &mut Stats) -> (u64, &[u8]) {
        self.input.clear();
        let base = &self.corpus[(self.rng.next() % self.corpus.len() as u64) as usize];
        self.input.extend_from_slice(base);
        if self.index >= self.corpus.len() as u64 {
            let rounds = 1 + self.rng.next() % 8;
            for _ in 0..rounds {
                mutate(&mut self.input, &self.corpus, self.target.tokens(), &mut self.rng, self.max_len);
            }
        }
        let i = self.index;
        self.index += 1;
        stats.inputs += 1;
        stats.bytes += self.input.len() as u64;
        stats.longest = stats.longest.max(self.input.len());
        (i, &self.input)
    }
}

/// Runs `target` on `inputs` mutated inputs (seeds first), deterministic for `seed`. A panic in
/// the target propagates with the input printed to stderr in hex first.
pub fn run(
    target: Target,
    extra_seeds: Vec<Vec<u8>>,
    inputs: u64,
    seed: u64,
    max_len: usize,
) -> Stats {
    let mut gen = Inputs::new(target, extra_seeds, seed, max_len);
    let mut stats = Stats::default();
    for _ in 0..inputs {
        let (i, input) = gen.next(&mut stats);
        let result = std::panic::catch_unwind(|| target.call(input));
        if let Err(panic) = result {
            eprintln!(
                "fuzz {target:?}: panic on input #{i} (seed {seed}): {}",
                hex::encode(input)
            );
            std::panic::resume_unwind(panic);
        }
    }
    stats
}

/// Like [`run`], but a panic is counted and the run goes on: for a long run on code with a
/// known bug. Each distinct panic (by location and message) is printed once, with the first
/// input that raised it in hex. Replaces the process's panic hook for the run.
pub fn run_keep_going(
    target: Target,
    extra_seeds: Vec<Vec<u8>>,
    inputs: u64,
    seed: u64,
    max_len: usize,
) -> Stats {
    static LAST: parking_lot::Mutex<String> = parking_lot::Mutex::new(String::new());
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        // Where in callgate: a panic inside std (`Instant + Duration`) is named by its caller.
        let place = callgate_frame().or_else(|| info.location().map(|l| format!("{}:{}", l.file(), l.line()))).unwrap_or_default();
        let what = info.payload().downcast_ref::<&str>().map(|s| (*s).to_owned()).or_else(|| info.payload().downcast_ref::<String>().cloned()).unwrap_or_default();
        *LAST.lock() = format!("{place}: {what}");
    }));
    let mut gen = Inputs::new(target, extra_seeds, seed, max_len);
    let mut stats = Stats::default();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..inputs {
        let (i, input) = gen.next(&mut stats);
        if std::panic::catch_unwind(|| target.call(input)).is_err() {
            stats.panics += 1;
            let what = LAST.lock().clone();
            if seen.insert(what.clone()) {
                eprintln!("fuzz {target:?}: panic on input #{i} (seed {seed}) at {what}: {}", hex::encode(input));
            }
        }
    }
    std::panic::set_hook(previous);
    stats
}

/// The innermost frame of the panicking thread in this crate's `src/` (not the fuzzer's own).
fn callgate_frame() -> Option<String> {
    let trace = std::backtrace::Backtrace::force_capture().to_string();
    trace
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("at "))
        .find(|l| l.contains("src/") && !l.contains("/rustc/") && !l.contains("/.cargo/") && !l.contains("fuzzing"))
        .map(|l| l.rsplit_once(':').map_or(l, |(file_line, _column)| file_line).to_owned())
}

/// xorshift64*: small, fast, reproducible.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % (n.max(1) as u64)) as usize
    }
}

const INTERESTING: &[u8] = b"\0\r\n \t:;,=<>\"[]%&+0123456789\x7f\x80\xff";

fn mutate(
    input: &mut Vec<u8>,
    corpus: &[Vec<u8>],
    tokens: &[&[u8]],
    rng: &mut XorShift,
    max_len: usize,
) {
    let len = input.len();
    match rng.next() % 9 {
        0 if len > 0 => {
            let i = rng.below(len);
            input[i] ^= 1 << (rng.next() % 8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            input[i] = INTERESTING[rng.below(INTERESTING.len())];
        }
        2 => {
            let t = tokens[rng.below(tokens.len())];
            let at = rng.below(len + 1);
            input.splice(at..at, t.iter().copied());
        }
        3 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(32));
            input.drain(at..at + n);
        }
        4 if len > 0 => {
            let at = rng.below(len);
            let n = 1 + rng.below((len - at).min(64));
            let chunk: Vec<u8> = input[at..at + n].to_vec();
            let to = rng.below(len + 1);
            input.splice(to..to, chunk);
        }
        5 => {
            let other = &corpus[rng.below(corpus.len())];
            if !other.is_empty() {
                let from = rng.below(other.len());
                let n = 1 + rng.below(other.len() - from);
                let at = rng.below(len + 1);
                input.truncate(at);
                input.extend_from_slice(&other[from..from + n]);
            }
        }
        6 if len > 0 => {
            // Replace a run of digits (Content-Length, CSeq, ports) with an extreme number.
            let at = rng.below(len);
            let end = input[at..]
                .iter()
                .position(|b| !b.is_ascii_digit())
                .map_or(len, |p| at + p);
            let numbers: [&[u8]; 6] = [
                b"0",
                b"4294967296",
                b"18446744073709551616",
                b"-1",
                b"99999999999999999999999",
                b"65536",
            ];
            input.splice(at..end, numbers[rng.below(numbers.len())].iter().copied());
        }
        7 if len > 0 => {
            let at = rng.below(len);
            input.truncate(at);
        }
        _ => {
            let at = rng.below(len + 1);
            let n = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..n).map(|_| (rng.next() & 0xff) as u8).collect();
            input.splice(at..at, bytes);
        }
    }
    input.truncate(max_len);
}

const SIP_SEEDS: &[&[u8]] = &[
    b"INVITE sip:pm-route@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK776asdhds;rport\r\nMax-Forwards: 70\r\nTo: <sip:pm-route@127.0.0.1>\r\nFrom: \"Ivan\" <sip:+79161234567@127.0.0.1>;tag=1928301774\r\nP-Asserted-Identity: <sip:79161234567@pbx>\r\nCall-ID: a84b4c76e66710@pc33\r\nCSeq: 314159 INVITE\r\nContact: <sip:79161234567@127.0.0.1:5080;transport=udp>\r\nX-Call-Id: pbx-77\r\nContent-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n",
    b"ACK sip:pm-route@127.0.0.1 SIP/2.0\r\nv: SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bKx\r\nf: <sip:1@h>;tag=a\r\nt: <sip:2@h>;tag=b\r\ni: c\r\nCSeq: 1 ACK\r\nl: 0\r\n\r\n",
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1\r\nRecord-Route: <sip:10.0.0.2;lr>, <sip:10.0.0.3;lr;transport=tcp>\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 2 INVITE\r\nContent-Length: 0\r\n\r\n",
    b"REGISTER sip:office.bitrix24.ru SIP/2.0\r\nVia: SIP/2.0/WSS 3f8q.invalid;branch=z9hG4bK1\r\nTo: <sip:101@office.bitrix24.ru>\r\nFrom: <sip:101@office.bitrix24.ru>;tag=x\r\nCall-ID: r\r\nCSeq: 2 REGISTER\r\nContact: <sip:t@3f8q.invalid;transport=ws>;+sip.instance=\"<urn:uuid:1>\";expires=600\r\nAuthorization: Digest username=\"101\", realm=\"r\", nonce=\"n\", uri=\"sip:r\", response=\"00000000000000000000000000000000\", qop=auth, nc=00000001, cnonce=\"c\"\r\nContent-Length: 0\r\n\r\n",
    b"BYE sip:101@10.0.0.5:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1\r\n ;branch=z9hG4bKfold\r\nRoute: <sip:127.0.0.1:5060;lr>\r\nFrom: =?cp1251?= \xc8\xe2\xe0\xed <sip:1@h>;tag=1\r\nTo : <sip:2@h>;tag=2\r\nCall-ID: y\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n",
    b"\r\n\r\n",
    b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 99999\r\n\r\n",
];

const SIP_TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b"\r\n ",
    b": ",
    b";",
    b",",
    b"<",
    b">",
    b"\"",
    b"sip:",
    b"sips:",
    b"tel:",
    b"@",
    b";tag=",
    b";branch=z9hG4bK",
    b";lr",
    b";transport=tcp",
    b"Content-Length: ",
    b"l: ",
    b"Via: SIP/2.0/UDP ",
    b"v: ",
    b"From: ",
    b"To: ",
    b"Call-ID: ",
    b"CSeq: 1 INVITE",
    b"Max-Forwards: 0",
    b"Route: ",
    b"Record-Route: ",
    b"Contact: *",
    b"SIP/2.0 ",
    b"INVITE ",
    b"ACK ",
    b"CANCEL ",
    b"[::1]",
    b":65536",
    b"%00",
    b"\0",
];

const EVENT_SEEDS: &[&[u8]] = &[
    b"event=ONEXTERNALCALLSTART&data%5BPHONE_NUMBER%5D=%2B79161234567&data%5BUSER_ID%5D=5&data%5BCALL_ID%5D=externalCall.1&ts=1773236988&auth%5Bdomain%5D=office.bitrix24.ru&auth%5Bmember_id%5D=m1&auth%5Bapplication_token%5D=t1",
    b"event=onCrmContactUpdate&event_handler_id=7&data%5BFIELDS%5D%5BID%5D=1001&ts=1773236988&auth[application_token]=t%2B1&extra=1",
    b"event=ONAPPINSTALL&data[VERSION]=1&auth[access_token]=a&auth[refresh_token]=r&auth[client_endpoint]=https://office.bitrix24.ru/rest/&auth[expires_in]=3600",
];

const EVENT_TOKENS: &[&[u8]] = &[
    b"&", b"=", b"[", b"]", b"][", b"%5B", b"%5D", b"%", b"+", b"data", b"auth", b"event", b"ts",
    b"%FF", b"%C3%28",
];

const JSON_SEEDS: &[&[u8]] = &[
    br#"{"active": true, "telephony_mode": "ip", "incoming": {"forward_to_personal_manager": true, "create_entity": true, "default_responsible": 1, "assign_responsible_to": "last"}, "outgoing": {"create_entity": false, "default_responsible": 2}, "other": {"calltracking": true, "utm_tags": ["utm_source"], "chat_message": true}, "min_talk_seconds": 5, "trusted_pbx": ["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"], "pbx_host": "127.0.0.1:5080", "correlation_header": "X-Call-Id", "routing_user": "pm-route"}"#,
    br#"{"name": "Main", "domain": "https://Example.Bitrix24.ru/path", "auth": {"webhook_url": "https://example.bitrix24.ru/rest/1/abc/"}}"#,
    br#"{"domain": "b.bitrix24.ru", "auth": {"oauth": {"client_id": "local.1", "client_secret": "s", "oauth_server": "https://oauth.bitrix.info/"}}}"#,
    br#"{"user_id": 5, "extension": "101", "use_for_personal_manager": true, "contact": "sip:101@10.0.0.5:5060"}"#,
    br#"{"number": "+7 (495) 123-45-67", "utm": {"utm_source": "google"}}"#,
];

const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"true",
    b"-1",
    b"1e999",
    b"18446744073709551616",
    b"\\u0000",
    b"\\ud800",
    b"\"active\"",
    b"\"trusted_pbx\"",
];
