//! [`BrowserLeg`] implemented with the `webrtc` crate 0.21.1 (and its `rtc` core): the only file
//! that imports either.
//!
//! Per leg: one `PeerConnection` with ICE-lite, one UDP socket at the address our allocator
//! chose, loopback candidates allowed (tests and single-host setups), a media engine with only
//! the G.711 law(s) of the call + telephone-event/8000 (never `register_default_codecs`, which
//! puts Opus first), and only the RTCP report interceptors (SR/RR; no NACK/TWCC for audio).
//! One handler object receives every engine event and turns it into [`LegState`] or RTP for the
//! [`LegSink`]; it makes no decisions.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use tokio::sync::watch;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    configure_rtcp_reports, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceCandidateType,
    RTCIceConnectionState, RTCIceGatheringState, RTCPeerConnectionState, RTCSessionDescription,
    Registry, SettingEngineBuilder,
};

use super::leg::{BrowserLeg, LegParams, LegSink, LegState};
use super::rewrite::RtpPacket;
use super::sdp::G711;
use super::MediaError;

/// Payload type we register for telephone-event/8000 (Chrome offers 126; the answer follows the
/// offer's numbers, so this only shows in our own offers).
const DTMF_PT: u8 = 101;
/// How long ICE gathering (host candidates only) may take before we give up.
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);

fn engine(e: impl std::fmt::Display) -> MediaError {
    MediaError::Engine(e.to_string())
}

fn codec(c: G711) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: format!("audio/{}", c.name()),
        clock_rate: 8000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

fn dtmf_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: "audio/telephone-event".to_owned(),
        clock_rate: 8000,
        channels: 0,
        sdp_fmtp_line: "0-16".to_owned(),
        rtcp_feedback: vec![],
    }
}

/// The leg: the peer connection and the local track we feed.
pub(crate) struct RtcLeg {
    pc: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticRTP>,
    gathered: watch::Receiver<bool>,
}

/// Builds a leg: binds its socket and starts the engine's driver.
pub(crate) async fn open(p: LegParams) -> Result<Arc<dyn BrowserLeg>, MediaError> {
    let mut me = MediaEngine::default();
    for c in &p.codecs {
        let params = RTCRtpCodecParameters {
            rtp_codec: codec(*c),
            payload_type: c.static_pt(),
        };
        me.register_codec(params, RtpCodecKind::Audio)
            .map_err(engine)?;
    }
    let te = RTCRtpCodecParameters {
        rtp_codec: dtmf_codec(),
        payload_type: DTMF_PT,
    };
    me.register_codec(te, RtpCodecKind::Audio).map_err(engine)?;
    let registry = configure_rtcp_reports(Registry::new());

    let mut se = SettingEngineBuilder::new()
        .with_lite(true)
        .with_include_loopback_candidate(true)
        .with_ice_timeouts(Some(p.consent_timeout / 2), Some(p.consent_timeout), None);
    if p.advertise != p.bind.ip() {
        se = se.with_nat_1to1_ips(vec![p.advertise.to_string()], RTCIceCandidateType::Host);
    }
    let (gathered_tx, gathered) = watch::channel(false);
    // Counted up here, down when the engine drops the handler: it does so only once the
    // connection and its driver are gone, so a leak like webrtc-rs #906 shows in the count.
    p.live.fetch_add(1, Ordering::Relaxed);
    let handler = Arc::new(Handler {
        sink: p.sink,
        gathered: gathered_tx,
        live: p.live,
    });
    let pc = PeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .with_setting_engine(se.build())
        .with_handler(handler)
        .with_udp_addrs(vec![p.bind])
        .build()
        .await
        .map_err(engine)?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);

    // No codec on the encoding: one there would become the transceiver's only codec preference
    // (rtc `codec_preferences_from_encodings`) and drop telephone-event from our SDP. The media
    // engine already holds nothing but what this call may use.
    let encoding = RTCRtpEncodingParameters {
        rtp_coding_parameters: RTCRtpCodingParameters {
            ssrc: Some(p.ssrc),
            ..Default::default()
        },
        ..Default::default()
    };
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "callgate".to_owned(),
        "audio".to_owned(),
        "audio".to_owned(),
        RtpCodecKind::Audio,
        vec![encoding],
    )));
    if let Err(e) = pc
        .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
        .await
    {
        let _ = pc.close().await;
        return Err(engine(e));
    }
    Ok(Arc::new(RtcLeg {
        pc,
        track,
        gathered,
    }))
}

impl RtcLeg {
    /// The local description once ICE gathering is complete (no trickle toward SIP).
    async fn local_sdp(&self) -> Result<String, MediaError> {
        let mut rx = self.gathered.clone();
        let _ = tokio::time::timeout(GATHER_TIMEOUT, rx.wait_for(|done| *done)).await;
        let desc = self
            .pc
            .local_description()
            .await
            .ok_or_else(|| engine("no local description"))?;
        Ok(desc.sdp)
    }
}

#[async_trait::async_trait]
impl BrowserLeg for RtcLeg {
    async fn create_offer(&self) -> Result<String, MediaError> {
        let offer = self.pc.create_offer(None).await.map_err(engine)?;
        self.pc.set_local_description(offer).await.map_err(engine)?;
        self.local_sdp().await
    }

    async fn accept_answer(&self, sdp: &str) -> Result<(), MediaError> {
        let desc = RTCSessionDescription::answer(sdp.to_owned())
            .map_err(|e| MediaError::BadSdp(e.to_string()))?;
        self.pc.set_remote_description(desc).await.map_err(engine)
    }

    async fn accept_offer(&self, sdp: &str) -> Result<String, MediaError> {
        let desc = RTCSessionDescription::offer(sdp.to_owned())
            .map_err(|e| MediaError::BadSdp(e.to_string()))?;
        self.pc.set_remote_description(desc).await.map_err(engine)?;
        let answer = self.pc.create_answer(None).await.map_err(engine)?;
        self.pc
            .set_local_description(answer)
            .await
            .map_err(engine)?;
        self.local_sdp().await
    }

    async fn send_rtp(&self, pkt: RtpPacket) -> Result<(), MediaError> {
        let header = rtp::header::Header {
            version: 2,
            marker: pkt.marker,
            payload_type: pkt.pt,
            sequence_number: pkt.seq,
            timestamp: pkt.ts,
            ssrc: pkt.ssrc,
            ..Default::default()
        };
        self.track
            .write_rtp(rtp::Packet {
                header,
                payload: pkt.payload,
            })
            .await
            .map_err(engine)
    }

    async fn close(&self) {
        if let Err(e) = self.pc.close().await {
            tracing::debug!(error = %e, "closing the peer connection");
        }
    }
}

/// Gets every engine event of one peer connection.
struct Handler {
    sink: Arc<dyn LegSink>,
    gathered: watch::Sender<bool>,
    live: Arc<AtomicUsize>,
}

impl Drop for Handler {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        self.gathered
            .send_replace(state == RTCIceGatheringState::Complete);
    }

    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        match state {
            RTCIceConnectionState::Connected => self.sink.on_state(LegState::IceConnected),
            RTCIceConnectionState::Failed => self.sink.on_state(LegState::Gone("ICE consent lost")),
            _ => {}
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        match state {
            RTCPeerConnectionState::Connected => self.sink.on_state(LegState::DtlsConnected),
            RTCPeerConnectionState::Failed => {
                self.sink.on_state(LegState::Gone("peer connection failed"))
            }
            RTCPeerConnectionState::Closed => {
                self.sink.on_state(LegState::Gone("peer connection closed"))
            }
            _ => {}
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        // The handler runs on the driver: read the track on a task of its own. The loop ends
        // when the track ends (the connection closed), so the task does not outlive the leg.
        let sink = Arc::clone(&self.sink);
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                match ev {
                    TrackRemoteEvent::OnRtpPacket(p) => sink.on_rtp(RtpPacket {
                        marker: p.header.marker,
                        pt: p.header.payload_type,
                        seq: p.header.sequence_number,
                        ts: p.header.timestamp,
                        ssrc: p.header.ssrc,
                        payload: p.payload,
                    }),
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}
