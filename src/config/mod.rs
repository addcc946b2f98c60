//! Configuration: a tree of serde structs with a default for every key.
//!
//! Layers, later wins: the built-in defaults ([`Config::default`]) → the TOML file
//! (`config/callgate.toml` unless `--config` names another) → environment variables
//! `CALLGATE__SECTION__KEY` (e.g. `CALLGATE__SIP__UDP=127.0.0.1:0`).
//!
//! Unknown keys are found with `serde_ignored` rather than `deny_unknown_fields` (which would stop
//! at the first one). Loading never stops at the first problem: unknown keys, type errors (one per section) and
//! semantic errors from [`Config::validate`] are all collected into one [`ConfigErrors`], so an
//! operator fixes everything in one pass. Secrets are [`Secret`]s: their `Debug` and `Display`
//! never show the value. This module depends on nothing else in the crate.

mod load;
mod media;
mod secret;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use load::{ConfigError, ConfigErrors, ConfigSource};
pub use media::MediaSection;
pub use secret::Secret;

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Config {
    /// SIP listeners and protocol knobs.
    pub sip: SipConfig,
    /// The HTTP listener (admin API, settings page, events, metrics).
    pub http: HttpConfig,
    /// The embedded store.
    pub store: StoreConfig,
    /// The admin API.
    pub admin: AdminConfig,
    /// Logging.
    pub log: LogConfig,
    /// Shutdown behaviour.
    pub shutdown: ShutdownConfig,
    /// The call tracker.
    pub calls: CallsConfig,
    /// Delivery to Bitrix24.
    pub crm: CrmConfig,
    /// The media anchor for browser agents.
    pub media: MediaSection,
}

/// `[sip]`: listeners are `ip:port` strings; an empty string disables a listener.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct SipConfig {
    /// UDP listener.
    pub udp: String,
    /// TCP listener.
    pub tcp: String,
    /// TLS listener; started only when `tls_cert` and `tls_key` are set.
    pub tls: String,
    /// PEM certificate chain for SIP over TLS.
    pub tls_cert: String,
    /// PEM private key for SIP over TLS.
    pub tls_key: String,
    /// PEM CA certificate(s) trusted besides the platform roots when callgate dials a PBX over
    /// TLS (a portal's `pbx_host` with `;transport=tls`): a private CA. Empty: platform roots only.
    pub tls_ca_file: String,
    /// Host names phones know callgate by (`sip.example.com`), besides its listeners' addresses
    /// and the DNS names of `tls_cert`: a Route or Request-URI naming one (with a listener's
    /// port) is callgate itself. Phones that verify callgate's TLS certificate must use a name.
    pub names: Vec<String>,
    /// Largest SIP message accepted, in bytes (datagram or stream frame).
    pub max_message_bytes: usize,
    /// Status code of the "no decision" answer of the redirect listener (the PBX scenario goes on).
    pub no_decision_code: u16,
    /// Open TCP connections at most; further connections are refused.
    pub max_tcp_connections: usize,
    /// Threads receiving on the UDP socket.
    pub udp_threads: usize,
    /// SIP messages per second per source IP address (token bucket) for sources no portal
    /// trusts; above it requests get 503 + Retry-After, and beyond one more burst they are
    /// dropped silently. 0 turns SIP rate limiting off.
    pub rate_per_source: f64,
    /// Messages a source may send in a burst.
    pub burst_per_source: u32,
    /// Messages per second per trusted PBX address (`trusted_pbx`, `pbx_host`).
    pub trusted_rate: f64,
    /// Burst per trusted PBX address.
    pub trusted_burst: u32,
    /// A SIP TCP/TLS write (reply or forwarded message) not finished within this closes the
    /// connection: a peer that stops reading cannot hold a connection slot.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// A SIP message over TCP/TLS not complete this long after its first byte closes the
    /// connection (headers trickled a byte at a time, a body announced and never sent).
    #[serde(with = "humantime_serde")]
    pub frame_timeout: Duration,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            udp: "127.0.0.1:5060".into(),
            tcp: "127.0.0.1:5060".into(),
            tls: "127.0.0.1:5061".into(),
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_ca_file: String::new(),
            names: Vec::new(),
            max_message_bytes: 65_535,
            no_decision_code: 404,
            max_tcp_connections: 4096,
            udp_threads: 1,
            rate_per_source: 100.0,
            burst_per_source: 200,
            trusted_rate: 50_000.0,
            trusted_burst: 100_000,
            write_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
        }
    }
}

/// `[http]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct HttpConfig {
    /// Listener address.
    pub listen: String,
    /// Largest request body accepted, in bytes.
    pub body_limit_bytes: usize,
    /// Time limit for one request.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Open connections at most (HTTP, HTTPS, and the SIP WebSockets upgraded from them); more
    /// wait in the kernel's backlog.
    pub max_connections: usize,
    /// PEM certificate chain: with `tls_key`, the listener serves HTTPS (and WSS at `/sip`).
    pub tls_cert: String,
    /// PEM private key for HTTPS.
    pub tls_key: String,
    /// Requests per second per source IP address on the admin API and the Bitrix24 events
    /// endpoint (token bucket; 429 + Retry-After above it). 0 turns it off.
    pub rate_per_source: f64,
    /// Requests a source may send in a burst.
    pub burst_per_source: u32,
    /// The base URL Bitrix24 reaches this listener at (`https://callgate.example.com`, a path
    /// prefix allowed): the app's events are bound to `{public_url}/api/v1/bitrix24/events`.
    /// Never taken from request headers. Empty: the listener's own bound address, and no
    /// binding at all when it is a wildcard (0.0.0.0, ::).
    pub public_url: String,
    /// Open connections at most per source (an IPv4 address, an IPv6 /64), SIP WebSockets
    /// included; more are closed at once. 0 turns it off (behind a reverse proxy every client
    /// has the proxy's address).
    pub max_connections_per_source: usize,
    /// How long a client may take to send a request's headers, counted from the moment the
    /// server waits for them (a new connection, or the end of the previous response): also how
    /// long a kept-alive connection may wait for its next request.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A connection on which no byte moves either way for this long, while no request is being
    /// handled, is closed (a client that stopped reading a response or sending a body).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Largest request head (request line and headers) a connection buffers; larger gets 431.
    pub max_header_bytes: usize,
    /// Origins (`https://host[:port]`) whose pages may open `GET /sip` WebSockets, besides the
    /// listener's own origin (the widget's); `*` allows any. Requests without `Origin`
    /// (non-browser SIP clients) are allowed.
    pub allowed_origins: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            body_limit_bytes: 16 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            max_connections: 8192,
            tls_cert: String::new(),
            tls_key: String::new(),
            rate_per_source: 50.0,
            burst_per_source: 200,
            public_url: String::new(),
            max_connections_per_source: 64,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            allowed_origins: Vec::new(),
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct StoreConfig {
    /// SQLite database file; its folder is created on first run.
    pub path: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { path: PathBuf::from("data/callgate.db") }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AdminConfig {
    /// Bearer token of the admin API. Empty: one is generated on first run and kept in
    /// `admin.token` beside the database (mode 0600); its path, never its value, is logged.
    pub token: Secret,
}

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LogConfig {
    /// A `tracing` filter directive, e.g. `info` or `callgate=debug,info`.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Text }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[shutdown]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ShutdownConfig {
    /// How long open calls and requests may drain after SIGTERM/SIGINT before being cut.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { grace: Duration::from_secs(10) }
    }
}

/// `[calls]`: how the call tracker closes and correlates calls (DESIGN.md §3); its defaults are
/// the tracker's too (`calls::TrackerConfig::default`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CallsConfig {
    /// A call with no live leg finishes after this long without a new one.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// How long an accepted transfer waits for the new leg.
    #[serde(with = "humantime_serde")]
    pub transfer_wait: Duration,
    /// How long a routing decision waits for the call's first leg.
    #[serde(with = "humantime_serde")]
    pub routed_wait: Duration,
    /// Legs without a correlation header join an open call of the same customer within this.
    #[serde(with = "humantime_serde")]
    pub correlation_window: Duration,
    /// A leg ringing longer than this ends as timed out.
    #[serde(with = "humantime_serde")]
    pub ring_timeout: Duration,
    /// Finished calls kept for `/api/v1/calls`.
    pub keep_finished: usize,
    /// Open calls are checkpointed to the store at most this often (what a crash can lose).
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// A call restored after a restart with no in-dialog request for this long after its last
    /// evidence is finished with what is known, ended at that evidence.
    #[serde(with = "humantime_serde")]
    pub restore_wait: Duration,
}

impl Default for CallsConfig {
    fn default() -> Self {
        Self {
            linger: Duration::from_secs(2),
            transfer_wait: Duration::from_secs(30),
            routed_wait: Duration::from_secs(60),
            correlation_window: Duration::from_secs(60),
            ring_timeout: Duration::from_secs(180),
            keep_finished: 10_000,
            checkpoint_interval: Duration::from_millis(250),
            restore_wait: Duration::from_secs(20 * 60),
        }
    }
}

/// `[crm]`: delivery to Bitrix24 (DESIGN.md §5).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct CrmConfig {
    /// Sustained requests per second per portal (Bitrix24 drains 2/s; Enterprise 5/s).
    pub rate_per_s: f64,
    /// Requests in a burst per portal (Bitrix24 refuses above 50; Enterprise 250).
    pub burst: u32,
    /// Show/hide of one call within this window travel as one call with a USER_ID array.
    #[serde(with = "humantime_serde")]
    pub show_hide_window: Duration,
    /// Time limit of one HTTP request to Bitrix24.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// First wait after a failed delivery attempt (doubles per attempt up to `max_backoff`).
    #[serde(with = "humantime_serde")]
    pub min_backoff: Duration,
    /// Longest wait between delivery attempts.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// An intent still undelivered this long after it was queued is overdue: it stays queued
    /// and retried, and is counted and listed (`GET /api/v1/calls?delivery=problems`).
    #[serde(with = "humantime_serde")]
    pub delivery_horizon: Duration,
    /// Call effects on their way to the outbox; under a quarter free, new calls are refused.
    pub effects_queue: usize,
    /// After a batch that was not full, the next one waits this long (fewer, fuller requests).
    #[serde(with = "humantime_serde")]
    pub batch_interval: Duration,
    /// PEM file of extra root CAs trusted for HTTPS to Bitrix24 (tests, private portals); the
    /// system's roots stay trusted. Empty: system roots only.
    pub ca_file: String,
    /// Full re-sync of the personal-manager index of webhook portals (which get no CRM events)
    /// this often; 0 turns it off.
    #[serde(with = "humantime_serde")]
    pub webhook_resync_interval: Duration,
    /// Installed OAuth apps' offline event queue (`event.offline.get`) is read at start and
    /// this often, so events missed while callgate was down or unreachable are processed; 0
    /// turns it off.
    #[serde(with = "humantime_serde")]
    pub offline_events_interval: Duration,
}

impl Default for CrmConfig {
    fn default() -> Self {
        Self {
            rate_per_s: 2.0,
            burst: 40,
            show_hide_window: Duration::from_millis(300),
            request_timeout: Duration::from_secs(30),
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            delivery_horizon: Duration::from_secs(48 * 3600),
            effects_queue: 65_536,
            batch_interval: Duration::from_millis(1200),
            ca_file: String::new(),
            webhook_resync_interval: Duration::from_secs(6 * 3600),
            offline_events_interval: Duration::from_secs(30),
        }
    }
}

/// Parses an optional listener address: `""` means disabled.
///
/// # Errors
/// The address text when it is not `ip:port`.
pub fn listener_addr(s: &str) -> Result<Option<SocketAddr>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(|_| format!("`{s}` is not an ip:port address"))
}
