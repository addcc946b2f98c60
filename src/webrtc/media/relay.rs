//! The packet path of one session: the [`Relay`] shared by the PBX-side tasks and the engine's
//! callbacks (it is the browser leg's [`LegSink`]), and the two tasks that run per session
//! (PBX -> browser, RTCP toward the PBX). Counters are atomics; the rewriters sit behind short
//! `parking_lot` locks that are never held across an await.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::leg::{BrowserLeg, LegSink, LegState};
use super::pbx_leg::{rtcp_report, PbxLeg, SenderInfo, Source, RTCP_INTERVAL};
use super::rewrite::{Rewriter, Rewritten, RtpPacket};
use super::{MediaEvent, SessionId};

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) from_browser: AtomicU64,
    pub(crate) to_browser: AtomicU64,
    pub(crate) from_pbx: AtomicU64,
    pub(crate) to_pbx: AtomicU64,
    pub(crate) from_browser_bytes: AtomicU64,
    pub(crate) from_pbx_bytes: AtomicU64,
    pub(crate) to_pbx_bytes: AtomicU64,
    pub(crate) dtmf: AtomicU64,
    pub(crate) rtcp_to_pbx: AtomicU64,
    pub(crate) rtcp_from_pbx: AtomicU64,
    /// Datagrams on the PBX leg from an address the PBX's SDP did not name (dropped).
    pub(crate) foreign_rtp: AtomicU64,
    pub(crate) foreign_rtcp: AtomicU64,
    /// SDP operations on the session (a sign of life for the idle sweep).
    pub(crate) signalling: AtomicU64,
}

/// The packet path, shared by the relay task and the engine's callbacks. It does not own the
/// browser leg (the engine holds this as its sink: owning the leg would be a cycle).
pub(crate) struct Relay {
    pub(crate) id: SessionId,
    pub(crate) pbx: PbxLeg,
    pub(crate) to_pbx: Mutex<Option<Rewriter>>,
    pub(crate) to_browser: Mutex<Option<Rewriter>>,
    pub(crate) counters: Counters,
    pub(crate) codec: Mutex<Option<&'static str>>,
    pub(crate) dtls: AtomicBool,
    /// ICE connected with the browser once: its consent checks now say whether it lives.
    pub(crate) ice: AtomicBool,
    /// Set before we close the leg ourselves: its "closed" is then no news for the proxy.
    pub(crate) closing: AtomicBool,
    pub(crate) gone: AtomicBool,
    pub(crate) events: mpsc::Sender<MediaEvent>,
    pub(crate) ssrc_to_pbx: u32,
    pub(crate) ssrc_to_browser: u32,
    pub(crate) metrics: PacketMetrics,
}

/// `callgate_media_packets_total{leg, dir}` handles, looked up once per session rather than
/// per packet.
pub(crate) struct PacketMetrics {
    browser_in: metrics::Counter,
    browser_out: metrics::Counter,
    pbx_in: metrics::Counter,
    pbx_out: metrics::Counter,
    foreign_rtp: metrics::Counter,
    foreign_rtcp: metrics::Counter,
}

impl PacketMetrics {
    pub(crate) fn new() -> Self {
        let c = |leg: &'static str, dir: &'static str| metrics::counter!("callgate_media_packets_total", "leg" => leg, "dir" => dir);
        Self {
            browser_in: c("browser", "in"),
            browser_out: c("browser", "out"),
            pbx_in: c("pbx", "in"),
            pbx_out: c("pbx", "out"),
            foreign_rtp: metrics::counter!("callgate_media_foreign_packets_total", "kind" => "rtp"),
            foreign_rtcp: metrics::counter!("callgate_media_foreign_packets_total", "kind" => "rtcp"),
        }
    }
}

impl Relay {
    fn event(&self, ev: MediaEvent) {
        if self.events.try_send(ev).is_err() {
            metrics::counter!("callgate_media_events_dropped_total").increment(1);
        }
    }
}

impl LegSink for Relay {
    fn on_rtp(&self, pkt: RtpPacket) {
        self.counters.from_browser.fetch_add(1, Ordering::Relaxed);
        self.counters
            .from_browser_bytes
            .fetch_add(pkt.payload.len() as u64, Ordering::Relaxed);
        self.metrics.browser_in.increment(1);
        let out = match self.to_pbx.lock().as_mut() {
            Some(r) => r.rewrite(pkt),
            None => return,
        };
        let Rewritten::Send { pkt, dtmf } = out else {
            return;
        };
        let mut buf = BytesMut::with_capacity(12 + pkt.payload.len());
        pkt.write(&mut buf);
        if self.pbx.send_rtp(&buf) {
            self.counters.to_pbx.fetch_add(1, Ordering::Relaxed);
            self.counters
                .to_pbx_bytes
                .fetch_add(pkt.payload.len() as u64, Ordering::Relaxed);
            self.counters
                .dtmf
                .fetch_add(u64::from(dtmf), Ordering::Relaxed);
            self.metrics.pbx_out.increment(1);
        }
    }

    fn on_state(&self, state: LegState) {
        match state {
            LegState::IceConnected => {
                self.ice.store(true, Ordering::Relaxed);
                self.event(MediaEvent::IceConnected { id: self.id });
            }
            LegState::DtlsConnected => {
                self.dtls.store(true, Ordering::Relaxed);
                self.event(MediaEvent::DtlsConnected { id: self.id });
            }
            LegState::Gone(reason) => {
                if !self.closing.load(Ordering::Relaxed) && !self.gone.swap(true, Ordering::Relaxed)
                {
                    tracing::info!(session = %self.id, reason, "browser media leg gone");
                    self.event(MediaEvent::BrowserGone {
                        id: self.id,
                        reason,
                    });
                }
            }
        }
    }
}

/// PBX -> browser: receive, check the source (only the PBX's SDP address; others are counted
/// and dropped), latch, rewrite, hand to the engine. Ends on cancel.
pub(crate) async fn pbx_to_browser(
    relay: Arc<Relay>,
    leg: Arc<dyn BrowserLeg>,
    cancel: CancellationToken,
) {
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = tokio::select! {
            () = cancel.cancelled() => break,
            r = relay.pbx.rtp.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP port unreachable (the PBX not listening yet) shows up here on Linux.
                    tracing::trace!(error = %e, "PBX RTP socket");
                    continue;
                }
            },
        };
        let pkt = RtpPacket::parse(&buf[..n]);
        match relay.pbx.rtp_source(from, pkt.is_some()) {
            Source::Pbx => {}
            Source::Other => continue,
            Source::Foreign => {
                relay.counters.foreign_rtp.fetch_add(1, Ordering::Relaxed);
                relay.metrics.foreign_rtp.increment(1);
                continue;
            }
        }
        let Some(pkt) = pkt else { continue };
        relay.counters.from_pbx.fetch_add(1, Ordering::Relaxed);
        relay
            .counters
            .from_pbx_bytes
            .fetch_add(pkt.payload.len() as u64, Ordering::Relaxed);
        relay.metrics.pbx_in.increment(1);
        let out = match relay.to_browser.lock().as_mut() {
            Some(r) => r.rewrite(pkt),
            None => continue, // the browser has not answered yet
        };
        let Rewritten::Send { pkt, dtmf } = out else {
            continue;
        };
        // Before DTLS is up the engine refuses to send; that is not worth a log line.
        if leg.send_rtp(pkt).await.is_ok() {
            relay.counters.to_browser.fetch_add(1, Ordering::Relaxed);
            relay
                .counters
                .dtmf
                .fetch_add(u64::from(dtmf), Ordering::Relaxed);
            relay.metrics.browser_out.increment(1);
        }
    }
}

/// Delay of our first RTCP report toward the PBX.
const RTCP_FIRST: std::time::Duration = std::time::Duration::from_secs(1);

/// Our RTCP toward the PBX every [`RTCP_INTERVAL`]; the PBX's RTCP is counted and dropped, RTCP
/// from anyone else counted as foreign (it never re-points ours).
pub(crate) async fn rtcp_to_pbx(relay: Arc<Relay>, cancel: CancellationToken, cname: String) {
    // The first report goes out shortly after the PBX's address is known, then every interval.
    let first = tokio::time::Instant::now() + RTCP_FIRST;
    let mut tick = tokio::time::interval_at(first, RTCP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 1500];
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            r = relay.pbx.rtcp.recv_from(&mut buf) => {
                if let Ok((_, from)) = r {
                    if relay.pbx.rtcp_source(from) == Source::Pbx {
                        relay.counters.rtcp_from_pbx.fetch_add(1, Ordering::Relaxed);
                    } else {
                        relay.counters.foreign_rtcp.fetch_add(1, Ordering::Relaxed);
                        relay.metrics.foreign_rtcp.increment(1);
                    }
                }
            }
            _ = tick.tick() => {
                let Some(to) = relay.pbx.remote().rtcp else { continue };
                let last_ts = relay.to_pbx.lock().as_ref().map_or(0, Rewriter::last_ts);
                // RTCP's packet and octet counts are 32-bit and wrap (RFC 3550 §6.4.1).
                let info = SenderInfo {
                    ssrc: relay.ssrc_to_pbx,
                    packets: relay.counters.to_pbx.load(Ordering::Relaxed) as u32,
                    octets: relay.counters.to_pbx_bytes.load(Ordering::Relaxed) as u32,
                    last_ts,
                };
                if relay.pbx.rtcp.try_send_to(&rtcp_report(info, &cname, SystemTime::now()), to).is_ok() {
                    relay.counters.rtcp_to_pbx.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}
