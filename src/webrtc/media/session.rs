//! One anchored call: the PBX leg, the browser leg, the relay between them and the offer/answer
//! state. SDP operations are serialised per session by an async mutex (they await the engine);
//! packet relaying never takes it.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::idle::IdleWatch;
use super::leg::{BrowserLeg, LegParams, LegSink};
use super::pbx_leg::PbxLeg;
use super::ports::{PortLease, PortPool};
use super::relay::{pbx_to_browser, rtcp_to_pbx, Counters, PacketMetrics, Relay};
use super::rewrite::{PtMap, Rewriter};
use super::sdp::{self, AudioSdp, Direction, DtlsRole, PlainParams, G711};
use super::{ports_exhausted, rtc_leg, MediaError, MediaEvent, SessionId, SessionStats};

/// PT we give telephone-event in offers to the PBX (the common choice).
const PBX_DTMF_PT: u8 = 101;
/// Engine builds tried on different ports when a port is taken by another process.
const LEG_ATTEMPTS: usize = 4;
const PTIME: u32 = 20;

/// What a session needs from the anchor.
pub(crate) struct Ctx {
    pub(crate) id: SessionId,
    pub(crate) bind_ip: IpAddr,
    pub(crate) advertise_ip: IpAddr,
    pub(crate) consent_timeout: Duration,
    pub(crate) webrtc_ports: PortPool,
    pub(crate) rtp_ports: PortPool,
    pub(crate) events: mpsc::Sender<MediaEvent>,
    pub(crate) tasks: TaskTracker,
    pub(crate) live_legs: Arc<std::sync::atomic::AtomicUsize>,
}

/// Where the offer/answer exchange is.
#[derive(Debug)]
enum Phase {
    /// We sent the browser an offer (from the PBX's).
    BrowserAnswer,
    /// We sent the PBX an offer (from the browser's, kept here until the PBX answers).
    PbxAnswer {
        browser_offer: String,
        parsed: AudioSdp,
    },
    /// Nothing pending.
    Active,
    /// A PBX re-offer went to the browser.
    BrowserReanswer,
    /// A browser re-offer went to the PBX; the engine's answer waits for the PBX's direction.
    PbxReanswer { answer: String },
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Self::BrowserAnswer => "waiting for the browser's answer",
            Self::PbxAnswer { .. } => "waiting for the PBX's answer",
            Self::Active => "no offer pending",
            Self::BrowserReanswer => "waiting for the browser's re-answer",
            Self::PbxReanswer { .. } => "waiting for the PBX's re-answer",
        }
    }
}

/// Negotiated state, changed only by SDP operations.
struct Negotiation {
    phase: Phase,
    /// The direction of the offer in flight, as we passed it on (answers are clamped to it).
    offered: Direction,
    /// Our DTLS role toward the browser once the first exchange settled it; kept in every later
    /// offer and answer we give the browser.
    dtls: Option<DtlsRole>,
    /// `o=` version of our SDPs toward the PBX.
    version: u64,
    codec: Option<G711>,
    /// PTs on the PBX side: codec, telephone-event.
    pbx_pt: u8,
    pbx_dtmf: Option<u8>,
}

/// One anchored call.
pub(crate) struct Session {
    label: String,
    relay: Arc<Relay>,
    leg: Arc<dyn BrowserLeg>,
    // Serialises SDP operations (they await the engine); packets never take it.
    neg: tokio::sync::Mutex<Negotiation>,
    cancel: CancellationToken,
    // Released after the leg is closed (the engine's socket is gone by then).
    leases: Mutex<Option<(PortLease, PortLease)>>,
    tasks: TaskTracker,
    closed: AtomicBool,
    /// Our address in SDP toward the PBX.
    advertise_ip: IpAddr,
    // Touched only by the anchor's idle sweep.
    idle: Mutex<IdleWatch>,
}

impl Session {
    /// The PBX called a browser agent.
    pub(crate) async fn from_pbx_offer(
        ctx: Ctx,
        label: &str,
        offer: &AudioSdp,
    ) -> Result<(Arc<Self>, String), MediaError> {
        let (codec, pbx_pt) = offer.first_g711().ok_or(MediaError::NoCommonCodec)?;
        let neg = Negotiation {
            phase: Phase::BrowserAnswer,
            offered: offer.direction,
            dtls: None,
            version: 1,
            codec: Some(codec),
            pbx_pt,
            pbx_dtmf: offer.dtmf_pt(),
        };
        let s = Self::open(ctx, label, vec![codec], neg).await?;
        s.relay
            .pbx
            .set_from_sdp(offer.addr, offer.port, offer.rtcp_port);
        *s.relay.codec.lock() = Some(codec.name());
        let text = match s.leg.create_offer().await {
            Ok(t) => t,
            Err(e) => {
                s.close();
                return Err(e);
            }
        };
        Ok((s, with_direction(text, offer.direction)))
    }

    /// A browser agent dials out.
    pub(crate) async fn from_browser_offer(
        ctx: Ctx,
        label: &str,
        raw: &[u8],
        offer: AudioSdp,
    ) -> Result<(Arc<Self>, String), MediaError> {
        let g711s = offer.g711s();
        if g711s.is_empty() {
            return Err(MediaError::NoCommonCodec);
        }
        let browser_offer =
            String::from_utf8(raw.to_vec()).map_err(|_| MediaError::BadSdp("not UTF-8".into()))?;
        let direction = offer.direction;
        let dtmf = offer.dtmf_pt().map(|_| PBX_DTMF_PT);
        let phase = Phase::PbxAnswer {
            browser_offer,
            parsed: offer,
        };
        let neg = Negotiation {
            phase,
            offered: direction,
            dtls: None,
            version: 1,
            codec: None,
            pbx_pt: 0,
            pbx_dtmf: None,
        };
        let s = Self::open(ctx, label, g711s.clone(), neg).await?;
        let codecs: Vec<(G711, u8)> = g711s.iter().map(|c| (*c, c.static_pt())).collect();
        let sdp = s.plain(1, &codecs, dtmf, direction);
        Ok((s, sdp))
    }

    /// Binds both legs and starts the relay tasks.
    async fn open(
        ctx: Ctx,
        label: &str,
        codecs: Vec<G711>,
        neg: Negotiation,
    ) -> Result<Arc<Self>, MediaError> {
        let (pbx, rtp_lease) = PbxLeg::bind(ctx.bind_ip, &ctx.rtp_ports).await?;
        let relay = Arc::new(Relay {
            id: ctx.id,
            pbx,
            to_pbx: Mutex::new(None),
            to_browser: Mutex::new(None),
            counters: Counters::default(),
            codec: Mutex::new(None),
            dtls: AtomicBool::new(false),
            ice: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            events: ctx.events.clone(),
            ssrc_to_pbx: rand::random(),
            ssrc_to_browser: rand::random(),
            metrics: PacketMetrics::new(),
        });
        let (leg, webrtc_lease) = open_leg(&ctx, &relay, codecs).await?;
        let s = Arc::new(Self {
            label: label.to_owned(),
            relay,
            leg,
            neg: tokio::sync::Mutex::new(neg),
            cancel: CancellationToken::new(),
            leases: Mutex::new(Some((rtp_lease, webrtc_lease))),
            tasks: ctx.tasks.clone(),
            closed: AtomicBool::new(false),
            advertise_ip: ctx.advertise_ip,
            idle: Mutex::new(IdleWatch::default()),
        });
        s.tasks.spawn(pbx_to_browser(
            Arc::clone(&s.relay),
            Arc::clone(&s.leg),
            s.cancel.clone(),
        ));
        s.tasks.spawn(rtcp_to_pbx(
            Arc::clone(&s.relay),
            s.cancel.clone(),
            format!("callgate-{}", ctx.id.0),
        ));
        tracing::debug!(session = %ctx.id, label, rtp_port = s.relay.pbx.local_port, "media session opened");
        Ok(s)
    }

    fn plain(
        &self,
        version: u64,
        codecs: &[(G711, u8)],
        dtmf_pt: Option<u8>,
        direction: Direction,
    ) -> String {
        sdp::build_plain(&PlainParams {
            session_id: self.relay.id.0,
            version,
            ip: self.advertise_ip,
            port: self.relay.pbx.local_port,
            codecs,
            dtmf_pt,
            direction,
            ptime: PTIME,
        })
    }

    /// The browser answered our offer (made from the PBX's).
    pub(crate) async fn browser_answer(&self, raw: &[u8]) -> Result<String, MediaError> {
        self.take_browser_answer(raw, true).await
    }

    /// The browser's answer to our first offer (`first`: its DTLS role is learnt) or to a PBX
    /// re-offer: the answer for the PBX.
    async fn take_browser_answer(&self, raw: &[u8], first: bool) -> Result<String, MediaError> {
        let mut neg = self.neg.lock().await;
        expect(&neg.phase, |p| if first { matches!(p, Phase::BrowserAnswer) } else { matches!(p, Phase::BrowserReanswer) })?;
        let text = utf8(raw)?;
        let answer = sdp::parse_webrtc(raw)?;
        let codec = neg.codec.ok_or(MediaError::NoCommonCodec)?;
        let browser_pt = answer.pt_of(codec).ok_or(MediaError::NoCommonCodec)?;
        self.leg.accept_answer(text).await?;
        self.set_maps(&neg, browser_pt, answer.dtmf_pt());
        neg.version += 1;
        neg.phase = Phase::Active;
        if first {
            neg.dtls = sdp::dtls_role(text).map(DtlsRole::peer);
        }
        let dtmf = neg.pbx_dtmf.filter(|_| answer.dtmf_pt().is_some());
        let direction = answer.direction.answering(neg.offered);
        Ok(self.plain(neg.version, &[(codec, neg.pbx_pt)], dtmf, direction))
    }

    /// The PBX answered our offer (made from the browser's).
    pub(crate) async fn pbx_answer(&self, raw: &[u8]) -> Result<String, MediaError> {
        let mut neg = self.neg.lock().await;
        let Phase::PbxAnswer {
            browser_offer,
            parsed,
        } = &neg.phase
        else {
            return Err(MediaError::WrongState {
                state: neg.phase.name(),
            });
        };
        let answer = sdp::parse_plain(raw)?;
        let (codec, pbx_pt) = answer.first_g711().ok_or(MediaError::NoCommonCodec)?;
        let browser_pt = parsed.pt_of(codec).ok_or(MediaError::NoCommonCodec)?;
        let mut keep = vec![browser_pt];
        keep.extend(parsed.dtmf_pt());
        let filtered = sdp::keep_formats(browser_offer, &keep)?;
        let engine_answer = self.leg.accept_offer(&filtered).await?;
        // The engine answers with the offer's numbers; read them back rather than assume.
        let ours = sdp::parse_webrtc(engine_answer.as_bytes())?;
        let browser_pt = ours.pt_of(codec).ok_or(MediaError::NoCommonCodec)?;
        neg.codec = Some(codec);
        neg.pbx_pt = pbx_pt;
        neg.pbx_dtmf = answer.dtmf_pt();
        *self.relay.codec.lock() = Some(codec.name());
        self.relay
            .pbx
            .set_from_sdp(answer.addr, answer.port, answer.rtcp_port);
        self.set_maps(&neg, browser_pt, ours.dtmf_pt());
        neg.phase = Phase::Active;
        neg.dtls = sdp::dtls_role(&engine_answer);
        Ok(with_direction(
            engine_answer,
            answer.direction.answering(neg.offered),
        ))
    }

    /// A re-INVITE from the PBX (hold/unhold): the offer for the browser.
    pub(crate) async fn pbx_reoffer(&self, raw: &[u8]) -> Result<String, MediaError> {
        let mut neg = self.neg.lock().await;
        expect(&neg.phase, |p| matches!(p, Phase::Active))?;
        let offer = sdp::parse_plain(raw)?;
        let codec = neg.codec.ok_or(MediaError::NoCommonCodec)?;
        // The codec stays for the life of the call: the browser leg was built for it.
        let pbx_pt = offer.pt_of(codec).ok_or(MediaError::NoCommonCodec)?;
        let text = self.leg.create_offer().await?;
        neg.pbx_pt = pbx_pt;
        neg.pbx_dtmf = offer.dtmf_pt();
        self.relay
            .pbx
            .set_from_sdp(offer.addr, offer.port, offer.rtcp_port);
        neg.phase = Phase::BrowserReanswer;
        neg.offered = offer.direction;
        Ok(keep_role(with_direction(text, offer.direction), neg.dtls))
    }

    /// The browser's answer to a PBX re-offer: the answer for the PBX.
    pub(crate) async fn browser_reanswer(&self, raw: &[u8]) -> Result<String, MediaError> {
        self.take_browser_answer(raw, false).await
    }

    /// A re-INVITE from the browser (hold/unhold): the offer for the PBX.
    pub(crate) async fn browser_reoffer(&self, raw: &[u8]) -> Result<String, MediaError> {
        let mut neg = self.neg.lock().await;
        expect(&neg.phase, |p| matches!(p, Phase::Active))?;
        let text = utf8(raw)?;
        let offer = sdp::parse_webrtc(raw)?;
        let codec = neg.codec.ok_or(MediaError::NoCommonCodec)?;
        let browser_pt = offer.pt_of(codec).ok_or(MediaError::NoCommonCodec)?;
        let mut keep = vec![browser_pt];
        keep.extend(offer.dtmf_pt());
        let filtered = sdp::keep_formats(text, &keep)?;
        let answer = self.leg.accept_offer(&filtered).await?;
        let ours = sdp::parse_webrtc(answer.as_bytes())?;
        self.set_maps(
            &neg,
            ours.pt_of(codec).unwrap_or(browser_pt),
            ours.dtmf_pt(),
        );
        neg.version += 1;
        neg.phase = Phase::PbxReanswer { answer };
        neg.offered = offer.direction;
        let dtmf = neg.pbx_dtmf.or(offer.dtmf_pt().map(|_| PBX_DTMF_PT));
        Ok(self.plain(neg.version, &[(codec, neg.pbx_pt)], dtmf, offer.direction))
    }

    /// The PBX's answer to a browser re-offer: the answer for the browser.
    pub(crate) async fn pbx_reanswer(&self, raw: &[u8]) -> Result<String, MediaError> {
        let mut neg = self.neg.lock().await;
        let Phase::PbxReanswer { answer } = &neg.phase else {
            return Err(MediaError::WrongState {
                state: neg.phase.name(),
            });
        };
        let pbx = sdp::parse_plain(raw)?;
        let codec = neg.codec.ok_or(MediaError::NoCommonCodec)?;
        let pbx_pt = pbx.pt_of(codec).ok_or(MediaError::NoCommonCodec)?;
        let out = with_direction(answer.clone(), pbx.direction.answering(neg.offered));
        let out = keep_role(out, neg.dtls);
        neg.pbx_pt = pbx_pt;
        if pbx.dtmf_pt().is_some() {
            neg.pbx_dtmf = pbx.dtmf_pt();
        }
        self.relay
            .pbx
            .set_from_sdp(pbx.addr, pbx.port, pbx.rtcp_port);
        let browser = sdp::parse_webrtc(out.as_bytes())?;
        self.set_maps(
            &neg,
            browser.pt_of(codec).ok_or(MediaError::NoCommonCodec)?,
            browser.dtmf_pt(),
        );
        neg.phase = Phase::Active;
        Ok(out)
    }

    /// Installs (or updates) both rewriters; SSRCs and numbering carry over.
    fn set_maps(&self, neg: &Negotiation, browser_pt: u8, browser_dtmf: Option<u8>) {
        let dtmf = neg.pbx_dtmf.zip(browser_dtmf);
        let to_browser = PtMap {
            codec: (neg.pbx_pt, browser_pt),
            dtmf,
        };
        let to_pbx = PtMap {
            codec: (browser_pt, neg.pbx_pt),
            dtmf: dtmf.map(|(p, b)| (b, p)),
        };
        for (slot, map, ssrc) in [
            (
                &self.relay.to_browser,
                to_browser,
                self.relay.ssrc_to_browser,
            ),
            (&self.relay.to_pbx, to_pbx, self.relay.ssrc_to_pbx),
        ] {
            let mut g = slot.lock();
            match g.as_mut() {
                Some(r) => r.set_map(map),
                None => *g = Some(Rewriter::new(ssrc, map, rand::random(), rand::random())),
            }
        }
    }

    /// Stops relaying and closes the browser leg; the ports come back once its socket is gone.
    /// Idempotent.
    pub(crate) fn close(&self) {
        if self.closed.swap(true, Ordering::Relaxed) {
            return;
        }
        self.relay.closing.store(true, Ordering::Relaxed);
        self.cancel.cancel();
        let leg = Arc::clone(&self.leg);
        let leases = self.leases.lock().take();
        tracing::debug!(session = %self.relay.id, label = %self.label, "media session closing");
        self.tasks.spawn(async move {
            leg.close().await;
            drop(leg);
            drop(leases);
        });
    }

    /// An SDP operation is about to run on this session (a sign of life for the idle sweep).
    pub(crate) fn touch(&self) {
        self.relay.counters.signalling.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the session has been idle for `limit` at `now` (see `idle.rs` for the rule).
    pub(crate) fn is_idle(&self, now: Instant, limit: Duration) -> bool {
        let c = &self.relay.counters;
        let activity = [&c.signalling, &c.from_pbx, &c.from_browser]
            .iter()
            .fold(0u64, |sum, a| sum.wrapping_add(a.load(Ordering::Relaxed)));
        let connected = self.relay.ice.load(Ordering::Relaxed) || self.relay.dtls.load(Ordering::Relaxed);
        self.idle.lock().is_idle(activity, connected, now, limit)
    }

    pub(crate) fn stats(&self) -> SessionStats {
        let c = &self.relay.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SessionStats {
            from_browser_packets: get(&c.from_browser),
            to_browser_packets: get(&c.to_browser),
            from_pbx_packets: get(&c.from_pbx),
            to_pbx_packets: get(&c.to_pbx),
            from_browser_bytes: get(&c.from_browser_bytes),
            from_pbx_bytes: get(&c.from_pbx_bytes),
            dtmf_packets: get(&c.dtmf),
            rtcp_to_pbx: get(&c.rtcp_to_pbx),
            rtcp_from_pbx: get(&c.rtcp_from_pbx),
            foreign_rtp_dropped: get(&c.foreign_rtp),
            foreign_rtcp_dropped: get(&c.foreign_rtcp),
            ice_connected: self.relay.ice.load(Ordering::Relaxed),
            codec: *self.relay.codec.lock(),
            dtls_connected: self.relay.dtls.load(Ordering::Relaxed),
            pbx_latched: Some(self.relay.pbx.remote())
                .filter(|r| r.latched)
                .and_then(|r| r.rtp),
            pbx_rtp_port: self.relay.pbx.local_port,
        }
    }
}

fn expect(phase: &Phase, ok: impl Fn(&Phase) -> bool) -> Result<(), MediaError> {
    if ok(phase) {
        Ok(())
    } else {
        Err(MediaError::WrongState {
            state: phase.name(),
        })
    }
}

fn utf8(raw: &[u8]) -> Result<&str, MediaError> {
    std::str::from_utf8(raw).map_err(|_| MediaError::BadSdp("not UTF-8".into()))
}

/// After the first exchange our DTLS role toward the browser stays what it is (the engine
/// writes `actpass` in re-offers and may pick the other role in re-answers).
fn keep_role(text: String, role: Option<DtlsRole>) -> String {
    match role {
        Some(r) => sdp::set_dtls_role(&text, r),
        None => text,
    }
}

/// The engine always generates `sendrecv`; the other side's direction carries over.
fn with_direction(text: String, dir: Direction) -> String {
    if sdp::parse_webrtc(text.as_bytes()).is_ok_and(|a| a.direction == dir) {
        text
    } else {
        sdp::set_direction(&text, dir)
    }
}

/// Builds the browser leg on a free port (a few tries: another process may hold some).
async fn open_leg(
    ctx: &Ctx,
    relay: &Arc<Relay>,
    codecs: Vec<G711>,
) -> Result<(Arc<dyn BrowserLeg>, PortLease), MediaError> {
    // The exhaustion is reported (logged, counted) only when it happens: no port left to try.
    let mut last = None;
    for _ in 0..LEG_ATTEMPTS {
        let Some(lease) = ctx.webrtc_ports.take() else {
            break;
        };
        let params = LegParams {
            bind: SocketAddr::new(ctx.bind_ip, lease.port()),
            advertise: ctx.advertise_ip,
            codecs: codecs.clone(),
            consent_timeout: ctx.consent_timeout,
            ssrc: relay.ssrc_to_browser,
            sink: Arc::clone(relay) as Arc<dyn LegSink>,
            live: Arc::clone(&ctx.live_legs),
        };
        match rtc_leg::open(params).await {
            Ok(leg) => return Ok((leg, lease)),
            Err(e) => {
                tracing::debug!(port = lease.port(), error = %e, "browser leg could not be built");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| ports_exhausted("webrtc_ports")))
}
