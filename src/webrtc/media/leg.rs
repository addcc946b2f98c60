//! The seam between the anchor and a WebRTC library: [`BrowserLeg`] (one peer connection toward
//! one browser) and [`LegSink`] (what the leg reports back). Only `rtc_leg` implements it today
//! (`webrtc` 0.21.1); a sans-IO engine (str0m, `rtc` with a shared socket) would replace that one
//! file. SDP policy (which codecs, which direction) stays in `sdp` and `session`: the leg applies
//! descriptions and hands back the text its engine generated.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use super::rewrite::RtpPacket;
use super::sdp::G711;
use super::MediaError;

/// What happened to the browser leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LegState {
    /// ICE checks succeeded.
    IceConnected,
    /// DTLS-SRTP is up (the peer connection is connected).
    DtlsConnected,
    /// The leg is gone for good (consent lost, DTLS closed, failed).
    Gone(&'static str),
}

/// Receives what the browser leg produces. Called on the engine's tasks: implementations must
/// not block (no awaits, short locks only).
pub(crate) trait LegSink: Send + Sync + 'static {
    /// One RTP packet from the browser, decrypted, header as the browser sent it.
    fn on_rtp(&self, pkt: RtpPacket);
    /// A state change.
    fn on_state(&self, state: LegState);
}

/// How to build a leg.
pub(crate) struct LegParams {
    /// The socket the leg binds (one port per leg, from our allocator).
    pub(crate) bind: SocketAddr,
    /// The address put in candidates (1:1 NAT) when it differs from `bind`'s.
    pub(crate) advertise: IpAddr,
    /// The G.711 laws the engine may negotiate (telephone-event/8000 is always added).
    pub(crate) codecs: Vec<G711>,
    /// ICE consent: no check from the browser this long -> [`LegState::Gone`].
    pub(crate) consent_timeout: Duration,
    /// Our SSRC toward the browser (packets given to `send_rtp` carry it).
    pub(crate) ssrc: u32,
    /// Where events go.
    pub(crate) sink: Arc<dyn LegSink>,
    /// Counts live engine connections: the leg adds one, the engine's release of the
    /// connection (its event handler dropped) takes it back.
    pub(crate) live: Arc<AtomicUsize>,
}

/// One WebRTC peer connection toward a browser: ICE-lite, DTLS-SRTP, rtcp-mux, one audio
/// transceiver. RTCP toward the browser (SR/RR) is the engine's business.
#[async_trait::async_trait]
pub(crate) trait BrowserLeg: Send + Sync + 'static {
    /// Creates and applies a local offer; returns its SDP (candidates included).
    async fn create_offer(&self) -> Result<String, MediaError>;
    /// Applies the browser's answer to our last offer.
    async fn accept_answer(&self, sdp: &str) -> Result<(), MediaError>;
    /// Applies the browser's offer (already filtered to the codec we relay), creates and applies
    /// our answer; returns its SDP.
    async fn accept_offer(&self, sdp: &str) -> Result<String, MediaError>;
    /// Sends one RTP packet (header already rewritten: our SSRC, negotiated PT).
    async fn send_rtp(&self, pkt: RtpPacket) -> Result<(), MediaError>;
    /// Closes the peer connection and releases its socket. Idempotent.
    async fn close(&self);
}
