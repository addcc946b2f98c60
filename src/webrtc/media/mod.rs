//! Media anchor for browser agents (WebRTC widget mode): the browser leg speaks ICE-lite +
//! DTLS-SRTP, the PBX leg plain RTP/AVP, and G.711 payloads are relayed byte for byte (no
//! transcoding) with the RTP headers rewritten per leg.
//!
//! The proxy calls [`MediaAnchor`] when it forwards an SDP body between a PBX and a browser agent
//! and replaces the body with what comes back; it [`close`](MediaAnchor::close)s the session when
//! the dialog ends and listens for [`MediaEvent::BrowserGone`].
//!
//! Layout (only `rtc_leg` imports the `webrtc`/`rtc` crates; nothing of theirs is public here):
//! - `sdp`: our SDP policy: parse the plain side, build the plain side, filter the WebRTC side.
//! - `rewrite`: per-leg RTP header rewriting (SSRC, continuous seq/ts, PT map).
//! - `ports`: the UDP port allocator for both ranges.
//! - `pbx_leg`: the plain RTP/RTCP socket pair toward the PBX (symmetric RTP latching, only to the
//!   address the PBX's SDP named; RTCP RR/SR).
//! - `leg`: the [`BrowserLeg`](leg::BrowserLeg) trait, our seam over the WebRTC library.
//! - `rtc_leg`: that trait implemented with `webrtc` 0.21.1.
//! - `session`: one bridged call: the two legs and the offer/answer state.
//! - `relay`: the packet path of a session and its two tasks (PBX -> browser, RTCP).
//! - `idle`: when a session nobody uses is closed ([`MediaAnchor::expire_idle`]).
//! - `config`: [`MediaConfig`] from the `[media]` config section.

mod config;
mod idle;
mod leg;
mod pbx_leg;
mod ports;
mod relay;
mod rewrite;
mod rtc_leg;
pub mod sdp;
mod session;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

/// Configuration of the media anchor (the `[media]` config section).
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Where browser-side and PBX-side sockets bind.
    pub bind_ip: IpAddr,
    /// Put in SDP/candidates instead of `bind_ip` (1:1 NAT).
    pub advertise_ip: Option<IpAddr>,
    /// Inclusive port range for browser legs (one port per leg).
    pub webrtc_ports: (u16, u16),
    /// Inclusive port range for PBX legs (even port RTP, +1 RTCP).
    pub rtp_ports: (u16, u16),
    /// Open sessions at most.
    pub max_sessions: usize,
    /// No ICE consent / no media from the browser this long -> [`MediaEvent::BrowserGone`].
    pub consent_timeout: Duration,
    /// A session that never reached ICE and saw no SDP operation and no RTP this long is closed
    /// by [`MediaAnchor::expire_idle`] (keep it above the ringing limits; see `idle.rs`).
    pub idle_timeout: Duration,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            advertise_ip: None,
            webrtc_ports: (40_000, 40_999),
            rtp_ports: (30_000, 30_999),
            max_sessions: 1000,
            consent_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// One anchored call (two legs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionId(pub u64);

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "media-{}", self.0)
    }
}

/// Why a media call failed; the proxy answers the SDP-carrying message with an error status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError {
    /// Neither PCMU nor PCMA in common (the browser is never offered anything else).
    #[error("no common codec (PCMU/PCMA)")]
    NoCommonCodec,
    /// The SDP could not be understood.
    #[error("bad SDP: {0}")]
    BadSdp(String),
    /// No free port in a configured range (`webrtc_ports` or `rtp_ports`; the log says which).
    #[error("no free UDP port in the media port ranges")]
    PortsExhausted,
    /// `max_sessions` reached.
    #[error("too many media sessions")]
    TooManySessions,
    /// The session id is not (or no longer) open.
    #[error("unknown media session")]
    UnknownSession,
    /// The call is not in a state where this SDP fits (e.g. an answer without an offer).
    #[error("unexpected SDP in state {state}")]
    WrongState {
        /// What the session was waiting for.
        state: &'static str,
    },
    /// A socket could not be bound or used.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The WebRTC engine refused something.
    #[error("WebRTC engine: {0}")]
    Engine(String),
}

/// A port range is used up (or its free ports are held by other processes); says which.
pub(crate) fn ports_exhausted(range: &'static str) -> MediaError {
    tracing::warn!(range, "media port range exhausted");
    metrics::counter!("callgate_media_ports_exhausted_total", "range" => range).increment(1);
    MediaError::PortsExhausted
}

/// Something the proxy must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MediaEvent {
    /// The browser leg is gone (ICE consent lost, DTLS closed, peer connection failed): end the
    /// call as if it had hung up.
    BrowserGone {
        /// The session.
        id: SessionId,
        /// A short reason for logs.
        reason: &'static str,
    },
    /// ICE checks succeeded with the browser.
    IceConnected {
        /// The session.
        id: SessionId,
    },
    /// DTLS-SRTP is up with the browser.
    DtlsConnected {
        /// The session.
        id: SessionId,
    },
}

/// Per-session counters.
#[derive(Clone, Debug, Default, serde::Serialize, utoipa::ToSchema)]
pub struct SessionStats {
    /// RTP packets received from the browser.
    pub from_browser_packets: u64,
    /// RTP packets sent to the browser.
    pub to_browser_packets: u64,
    /// RTP packets received from the PBX.
    pub from_pbx_packets: u64,
    /// RTP packets sent to the PBX.
    pub to_pbx_packets: u64,
    /// RTP payload bytes received from the browser.
    pub from_browser_bytes: u64,
    /// RTP payload bytes received from the PBX.
    pub from_pbx_bytes: u64,
    /// RFC 4733 telephone-event packets relayed (either way).
    pub dtmf_packets: u64,
    /// RTCP packets sent to the PBX.
    pub rtcp_to_pbx: u64,
    /// RTCP packets received from the PBX (its SDP's address).
    pub rtcp_from_pbx: u64,
    /// RTP datagrams on the PBX leg from an address the PBX's SDP did not name (dropped).
    pub foreign_rtp_dropped: u64,
    /// RTCP datagrams on the PBX leg from such an address (dropped; ours are not re-pointed).
    pub foreign_rtcp_dropped: u64,
    /// ICE connected with the browser (once).
    pub ice_connected: bool,
    /// The relayed codec, once negotiated ("PCMU"/"PCMA").
    pub codec: Option<&'static str>,
    /// DTLS-SRTP is up with the browser.
    pub dtls_connected: bool,
    /// The PBX's RTP source we latched onto (symmetric RTP).
    #[schema(value_type = Option<String>)]
    pub pbx_latched: Option<std::net::SocketAddr>,
    /// Our RTP port toward the PBX (RTCP is on the next one).
    pub pbx_rtp_port: u16,
}

/// Shared by every clone of [`MediaAnchor`].
struct Inner {
    cfg: MediaConfig,
    sessions: DashMap<SessionId, Arc<session::Session>>,
    next_id: AtomicU64,
    webrtc_ports: ports::PortPool,
    rtp_ports: ports::PortPool,
    events: mpsc::Sender<MediaEvent>,
    /// Relay tasks and leg closings of every session.
    tasks: TaskTracker,
    /// Engine connections not yet released (see [`MediaAnchor::live_peer_connections`]).
    live_legs: Arc<AtomicUsize>,
}

/// The media anchor: a handle (cheap to clone) over the open sessions.
#[derive(Clone)]
pub struct MediaAnchor {
    inner: Arc<Inner>,
}

/// Events waiting for the proxy at most; when full, the oldest are not dropped but new ones
/// are (counted in `callgate_media_events_dropped_total`): a stuck proxy must not stall media.
const EVENT_QUEUE: usize = 1024;

impl MediaAnchor {
    /// Checks the configuration and makes the anchor. Sockets are bound per session.
    ///
    /// # Errors
    /// [`MediaError::Engine`] when a port range is empty or not a range (the `[media]` config
    /// check reports the same earlier).
    pub async fn start(cfg: MediaConfig) -> Result<(Self, mpsc::Receiver<MediaEvent>), MediaError> {
        let webrtc_ports = ports::PortPool::new(cfg.webrtc_ports, 1)
            .map_err(|m| MediaError::Engine(format!("webrtc_ports: {m}")))?;
        let rtp_ports = ports::PortPool::new(cfg.rtp_ports, 2)
            .map_err(|m| MediaError::Engine(format!("rtp_ports: {m}")))?;
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let inner = Inner {
            cfg,
            sessions: DashMap::new(),
            next_id: AtomicU64::new(1),
            webrtc_ports,
            rtp_ports,
            events: tx,
            tasks: TaskTracker::new(),
            live_legs: Arc::new(AtomicUsize::new(0)),
        };
        Ok((
            Self {
                inner: Arc::new(inner),
            },
            rx,
        ))
    }

    /// Call from the PBX to a browser agent: the PBX's plain RTP/AVP offer -> a new session and
    /// the WebRTC offer for the browser (UDP/TLS/RTP/SAVPF, ICE-lite, `setup:actpass`, rtcp-mux,
    /// only the PBX's first G.711 codec + telephone-event/8000).
    ///
    /// # Errors
    /// [`MediaError::BadSdp`], [`MediaError::NoCommonCodec`], [`MediaError::TooManySessions`],
    /// [`MediaError::PortsExhausted`], [`MediaError::Engine`].
    pub async fn pbx_offer(
        &self,
        label: &str,
        pbx_sdp: &[u8],
    ) -> Result<(SessionId, String), MediaError> {
        let offer = sdp::parse_plain(pbx_sdp)?;
        let id = self.new_id()?;
        let result = session::Session::from_pbx_offer(self.ctx(id), label, &offer).await;
        self.register(id, result)
    }

    /// The browser's answer to the offer of [`pbx_offer`](Self::pbx_offer) -> the plain RTP/AVP
    /// answer for the PBX (our RTP port, the codec, telephone-event with the PBX's PT).
    ///
    /// # Errors
    /// [`MediaError::UnknownSession`], [`MediaError::WrongState`], [`MediaError::BadSdp`],
    /// [`MediaError::NoCommonCodec`], [`MediaError::Engine`].
    pub async fn browser_answer(&self, id: SessionId, sdp: &[u8]) -> Result<String, MediaError> {
        self.session(id)?.browser_answer(sdp).await
    }

    /// Call from the browser: its WebRTC offer -> a new session and a plain RTP/AVP offer for the
    /// PBX (PCMU and PCMA if the browser offered them, + telephone-event 101).
    ///
    /// # Errors
    /// As [`pbx_offer`](Self::pbx_offer).
    pub async fn browser_offer(
        &self,
        label: &str,
        sdp: &[u8],
    ) -> Result<(SessionId, String), MediaError> {
        let offer = sdp::parse_webrtc(sdp)?;
        let id = self.new_id()?;
        let result = session::Session::from_browser_offer(self.ctx(id), label, sdp, offer).await;
        self.register(id, result)
    }

    /// The PBX's answer to the offer of [`browser_offer`](Self::browser_offer) -> the WebRTC
    /// answer for the browser (only the codec the PBX chose + telephone-event).
    ///
    /// # Errors
    /// As [`browser_answer`](Self::browser_answer).
    pub async fn pbx_answer(&self, id: SessionId, sdp: &[u8]) -> Result<String, MediaError> {
        self.session(id)?.pbx_answer(sdp).await
    }

    /// A mid-call offer from the PBX (hold/unhold) -> the offer for the browser. Direction and
    /// `c=0.0.0.0` hold carry over; ports, ICE and DTLS stay.
    ///
    /// # Errors
    /// As [`browser_answer`](Self::browser_answer).
    pub async fn pbx_reoffer(&self, id: SessionId, sdp: &[u8]) -> Result<String, MediaError> {
        self.session(id)?.pbx_reoffer(sdp).await
    }

    /// The browser's answer to [`pbx_reoffer`](Self::pbx_reoffer)'s offer -> the answer for the PBX.
    ///
    /// # Errors
    /// As [`browser_answer`](Self::browser_answer).
    pub async fn browser_reanswer(&self, id: SessionId, sdp: &[u8]) -> Result<String, MediaError> {
        self.session(id)?.browser_reanswer(sdp).await
    }

    /// A mid-call offer from the browser (hold/unhold) -> the offer for the PBX.
    ///
    /// # Errors
    /// As [`browser_answer`](Self::browser_answer).
    pub async fn browser_reoffer(&self, id: SessionId, sdp: &[u8]) -> Result<String, MediaError> {
        self.session(id)?.browser_reoffer(sdp).await
    }

    /// The PBX's answer to [`browser_reoffer`](Self::browser_reoffer)'s offer -> the answer for
    /// the browser.
    ///
    /// # Errors
    /// As [`browser_answer`](Self::browser_answer).
    pub async fn pbx_reanswer(&self, id: SessionId, sdp: &[u8]) -> Result<String, MediaError> {
        self.session(id)?.pbx_reanswer(sdp).await
    }

    /// Ends a session: stops the relay, closes the peer connection (in the background) and frees
    /// the ports. Idempotent.
    pub fn close(&self, id: SessionId) {
        if let Some((_, s)) = self.inner.sessions.remove(&id) {
            s.close();
            metrics::gauge!("callgate_media_sessions_open").set(self.inner.sessions.len() as f64);
        }
    }

    /// A snapshot of a session's counters.
    pub fn stats(&self, id: SessionId) -> Option<SessionStats> {
        self.inner.sessions.get(&id).map(|s| s.stats())
    }

    /// Closes every session idle at `now` (never reached ICE, no SDP operation and no RTP for
    /// `idle_timeout`; see `idle.rs`) and returns them, so the caller can end their calls. Call
    /// it every few seconds; the first call after a session opened starts its clock.
    pub fn expire_idle(&self, now: Instant) -> Vec<SessionId> {
        let limit = self.inner.cfg.idle_timeout;
        // Collected first: closing removes from the map, which must not happen while iterating.
        let idle: Vec<SessionId> = self
            .inner
            .sessions
            .iter()
            .filter(|e| e.value().is_idle(now, limit))
            .map(|e| *e.key())
            .collect();
        for id in &idle {
            tracing::info!(session = %id, ?limit, "media session idle (no ICE, no RTP, no SDP); closed");
            metrics::counter!("callgate_media_sessions_idle_total").increment(1);
            self.close(*id);
        }
        idle
    }

    /// Sessions open now.
    pub fn open_sessions(&self) -> usize {
        self.inner.sessions.len()
    }

    /// Ports in use now (browser legs, PBX legs): both are 0 once every session is closed and
    /// its peer connection has let go of its socket.
    pub fn ports_in_use(&self) -> (usize, usize) {
        (
            self.inner.webrtc_ports.in_use(),
            self.inner.rtp_ports.in_use(),
        )
    }

    /// WebRTC peer connections the engine has not released yet: up when a browser leg is
    /// built, down when the engine drops the leg's event handler. Back to 0 after every session
    /// is closed (give the engine's drivers a moment), or something leaks.
    pub fn live_peer_connections(&self) -> usize {
        self.inner.live_legs.load(Ordering::Relaxed)
    }

    fn new_id(&self) -> Result<SessionId, MediaError> {
        if self.inner.sessions.len() >= self.inner.cfg.max_sessions {
            metrics::counter!("callgate_media_sessions_refused_total").increment(1);
            return Err(MediaError::TooManySessions);
        }
        Ok(SessionId(
            self.inner.next_id.fetch_add(1, Ordering::Relaxed),
        ))
    }

    fn ctx(&self, id: SessionId) -> session::Ctx {
        session::Ctx {
            id,
            bind_ip: self.inner.cfg.bind_ip,
            advertise_ip: self
                .inner
                .cfg
                .advertise_ip
                .unwrap_or(self.inner.cfg.bind_ip),
            consent_timeout: self.inner.cfg.consent_timeout,
            webrtc_ports: self.inner.webrtc_ports.clone(),
            rtp_ports: self.inner.rtp_ports.clone(),
            events: self.inner.events.clone(),
            tasks: self.inner.tasks.clone(),
            live_legs: Arc::clone(&self.inner.live_legs),
        }
    }

    fn register(
        &self,
        id: SessionId,
        result: Result<(Arc<session::Session>, String), MediaError>,
    ) -> Result<(SessionId, String), MediaError> {
        let (s, sdp) = result?;
        self.inner.sessions.insert(id, s);
        metrics::counter!("callgate_media_sessions_total").increment(1);
        metrics::gauge!("callgate_media_sessions_open").set(self.inner.sessions.len() as f64);
        Ok((id, sdp))
    }

    fn session(&self, id: SessionId) -> Result<Arc<session::Session>, MediaError> {
        // Clone the handle out so no DashMap guard lives across an await.
        let s = self
            .inner
            .sessions
            .get(&id)
            .map(|s| Arc::clone(&s))
            .ok_or(MediaError::UnknownSession)?;
        s.touch();
        Ok(s)
    }
}
