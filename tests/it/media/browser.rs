//! A browser stand-in for the media anchor's tests and soak benchmark: a full-ICE (not lite)
//! `webrtc` 0.21.1 peer connection on 127.0.0.1, audio only, with PCMU/PCMA and
//! telephone-event/8000 at the PT Chrome uses (126), one local track to send RTP and a counter
//! (plus an optional queue) of what it receives. Shared by `tests/it/media.rs` and
//! `benches/webrtc_soak.rs` (`#[path]`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RtpCodecKind,
};
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    configure_rtcp_reports, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
};

static LIVE: AtomicU64 = AtomicU64::new(0);

/// Fake-browser peer connections whose handler the engine still holds (drops when released).
pub fn live_browsers() -> u64 {
    LIVE.load(Ordering::Relaxed)
}

/// The PT this browser gives telephone-event/8000 (as Chrome does).
pub const BROWSER_DTMF_PT: u8 = 126;

/// One received RTP packet.
#[derive(Debug, Clone)]
pub struct Rtp {
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub payload: Vec<u8>,
}

/// The fake browser.
pub struct FakeBrowser {
    pub pc: Arc<dyn PeerConnection>,
    track: Arc<TrackLocalStaticRTP>,
    pub ssrc: u32,
    gathered: watch::Receiver<bool>,
    pub state: watch::Receiver<RTCPeerConnectionState>,
    /// Received packets (only when built with `keep`; bounded, extra ones are dropped).
    pub rx: Option<mpsc::Receiver<Rtp>>,
    pub received: Arc<AtomicU64>,
}

fn codec(mime: &str) -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: mime.to_owned(),
        clock_rate: 8000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

struct Handler {
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
    tx: Option<mpsc::Sender<Rtp>>,
    received: Arc<AtomicU64>,
}

impl Drop for Handler {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::Relaxed);
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        self.gathered
            .send_replace(state == RTCIceGatheringState::Complete);
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.state.send_replace(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let tx = self.tx.clone();
        let received = Arc::clone(&self.received);
        tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                match ev {
                    TrackRemoteEvent::OnRtpPacket(p) => {
                        received.fetch_add(1, Ordering::Relaxed);
                        if let Some(tx) = &tx {
                            let _ = tx.try_send(Rtp {
                                pt: p.header.payload_type,
                                seq: p.header.sequence_number,
                                ts: p.header.timestamp,
                                ssrc: p.header.ssrc,
                                payload: p.payload.to_vec(),
                            });
                        }
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

impl FakeBrowser {
    /// `codecs`: the G.711 laws in preference order as (mime, PT), e.g. `[("audio/PCMU", 0)]`.
    /// `keep`: queue received packets for inspection (tests) or only count them (soak).
    pub async fn new(codecs: &[(&str, u8)], keep: bool) -> Self {
        let mut me = MediaEngine::default();
        for (mime, pt) in codecs {
            let p = RTCRtpCodecParameters {
                rtp_codec: codec(mime),
                payload_type: *pt,
            };
            me.register_codec(p, RtpCodecKind::Audio).unwrap();
        }
        let te = RTCRtpCodecParameters {
            rtp_codec: codec("audio/telephone-event"),
            payload_type: BROWSER_DTMF_PT,
        };
        me.register_codec(te, RtpCodecKind::Audio).unwrap();
        let registry = configure_rtcp_reports(Registry::new());
        let se = SettingEngineBuilder::new()
            .with_include_loopback_candidate(true)
            .build();
        let (gathered_tx, gathered) = watch::channel(false);
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let (tx, rx) = if keep {
            let (tx, rx) = mpsc::channel(4096);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let received = Arc::new(AtomicU64::new(0));
        LIVE.fetch_add(1, Ordering::Relaxed);
        let handler = Arc::new(Handler {
            gathered: gathered_tx,
            state: state_tx,
            tx,
            received: Arc::clone(&received),
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .with_setting_engine(se)
            .with_handler(handler)
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .build()
            .await
            .unwrap();
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let ssrc = rand::random();
        let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
            "browser".to_owned(),
            "mic".to_owned(),
            "mic".to_owned(),
            RtpCodecKind::Audio,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                // No codec here: it would become the only codec offered (see rtc_leg.rs).
                ..Default::default()
            }],
        )));
        pc.add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
            .await
            .unwrap();
        Self {
            pc,
            track,
            ssrc,
            gathered,
            state,
            rx,
            received,
        }
    }

    async fn local_sdp(&self) -> String {
        let mut g = self.gathered.clone();
        let _ = tokio::time::timeout(Duration::from_secs(5), g.wait_for(|d| *d)).await;
        self.pc.local_description().await.unwrap().sdp
    }

    /// Answers an offer (the anchor's), returning the answer SDP.
    pub async fn answer(&self, offer: &str) -> String {
        self.pc
            .set_remote_description(RTCSessionDescription::offer(offer.to_owned()).unwrap())
            .await
            .unwrap();
        let a = self.pc.create_answer(None).await.unwrap();
        self.pc.set_local_description(a).await.unwrap();
        self.local_sdp().await
    }

    /// Makes an offer, returning its SDP.
    pub async fn offer(&self) -> String {
        let o = self.pc.create_offer(None).await.unwrap();
        self.pc.set_local_description(o).await.unwrap();
        self.local_sdp().await
    }

    /// Applies the anchor's answer.
    pub async fn accept_answer(&self, answer: &str) {
        self.pc
            .set_remote_description(RTCSessionDescription::answer(answer.to_owned()).unwrap())
            .await
            .unwrap();
    }

    /// Waits (bounded) until the peer connection is connected (ICE + DTLS).
    pub async fn connected(&self, within: Duration) -> bool {
        let mut s = self.state.clone();
        tokio::time::timeout(
            within,
            s.wait_for(|s| *s == RTCPeerConnectionState::Connected),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }

    /// Sends one RTP packet with this browser's SSRC.
    pub async fn send(&self, pt: u8, seq: u16, ts: u32, payload: &[u8]) -> bool {
        let header = rtp::header::Header {
            version: 2,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc: self.ssrc,
            ..Default::default()
        };
        let pkt = rtp::Packet {
            header,
            payload: bytes::Bytes::copy_from_slice(payload),
        };
        self.track.write_rtp(pkt).await.is_ok()
    }

    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}
