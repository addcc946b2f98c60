//! The shared handle to the one [`Tracker`]: the proxy and the redirect listener feed it, the
//! admin API reads it. The tracker stays pure; this handle adds the lock and the clock mapping.
//!
//! Why a lock: the tracker is one state machine fed from the SIP threads and read by HTTP
//! handlers; every call into it is short and never awaits. Time: the drivers pass monotonic
//! `Instant`s; records need wall-clock times, so `now` is mapped through a base pair taken once
//! at start-up (`Instant`, epoch milliseconds) — deterministic for a given `now`.
//!
//! Effects go to the outbox recorder through an [`Outlet`]: never dropped, and while its
//! channel is nearly full [`CallsHandle::accepting_calls`] is `false`, which the SIP front door
//! turns into `503` for new calls (back-pressure instead of loss, see `outlet.rs`).

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::outlet::Outlet;
use super::{CallId, CallRecord, Checkpoint, Effect, Event, Millis, SavedCall, Tracker, TrackerConfig};

/// Cheap to clone.
#[derive(Clone)]
pub struct CallsHandle {
    inner: Arc<Inner>,
}

struct Inner {
    tracker: Mutex<Tracker>,
    base: (Instant, u64),
    effects: EffectCounters,
    /// Where effects go (the Bitrix24 outbox recorder); bounded, never awaited here.
    sink: Option<Outlet>,
}

struct EffectCounters {
    started: metrics::Counter,
    show: metrics::Counter,
    hide: metrics::Counter,
    finished: metrics::Counter,
    /// Effects for a recorder that is gone (only after shutdown began).
    lost: metrics::Counter,
}

impl CallsHandle {
    /// A tracker whose clock reads `base_epoch_ms` at `base`.
    pub fn new(cfg: TrackerConfig, base: Instant, base_epoch_ms: u64) -> Self {
        Self::with_sink(cfg, base, base_epoch_ms, None)
    }

    /// Like [`Self::new`], sending every effect to `sink`. A full sink (the store stuck for
    /// minutes) loses nothing: effects wait in the outlet's spill, in order (counted in
    /// `callgate_calls_effects_overflow_total`, the spill's length in
    /// `callgate_calls_effects_spilled`), and [`Self::accepting_calls`] turns `false`.
    pub fn with_sink(cfg: TrackerConfig, base: Instant, base_epoch_ms: u64, sink: Option<tokio::sync::mpsc::Sender<Effect>>) -> Self {
        let effects = EffectCounters {
            started: metrics::counter!("callgate_calls_effects_total", "effect" => "started"),
            show: metrics::counter!("callgate_calls_effects_total", "effect" => "show"),
            hide: metrics::counter!("callgate_calls_effects_total", "effect" => "hide"),
            finished: metrics::counter!("callgate_calls_effects_total", "effect" => "finished"),
            lost: metrics::counter!("callgate_calls_effects_lost_total"),
        };
        let sink = sink.map(Outlet::new);
        Self { inner: Arc::new(Inner { tracker: Mutex::new(Tracker::new(cfg)), base: (base, base_epoch_ms), effects, sink }) }
    }

    fn millis(&self, now: Instant) -> Millis {
        let (base, epoch) = self.inner.base;
        let since = now.saturating_duration_since(base).as_millis();
        Millis(epoch.saturating_add(u64::try_from(since).unwrap_or(u64::MAX)))
    }

    /// Feeds events observed at `now`, in order.
    pub fn feed(&self, now: Instant, events: impl IntoIterator<Item = Event>) {
        let at = self.millis(now);
        let mut t = self.inner.tracker.lock();
        for e in events {
            t.handle(at, e);
        }
        self.drain(&mut t);
    }

    /// Expires what is due at `now` (call from a periodic tick).
    pub fn tick(&self, now: Instant) {
        let at = self.millis(now);
        let mut t = self.inner.tracker.lock();
        if t.poll_timeout().is_some_and(|d| d <= at) {
            t.handle_timeout(at);
        }
        if let Some(sink) = &self.inner.sink {
            sink.flush();
        }
        self.drain(&mut t);
    }

    /// Whether new calls may be accepted: `false` while the path to the outbox recorder is
    /// (nearly) full. Lock-free; the SIP front door asks it for every new INVITE.
    pub fn accepting_calls(&self) -> bool {
        self.inner.sink.as_ref().is_none_or(Outlet::accepting)
    }

    /// Effects waiting for room on the way to the outbox recorder.
    pub fn spilled_effects(&self) -> usize {
        self.inner.sink.as_ref().map_or(0, Outlet::spilled)
    }

    /// Hands every waiting effect to the outbox recorder, waiting for room (graceful shutdown,
    /// once nothing feeds the tracker any more).
    pub async fn flush_effects(&self) {
        if let Some(sink) = &self.inner.sink {
            sink.flush_all().await;
        }
    }

    /// Counts effects and hands them to the sink (the Bitrix24 outbox recorder).
    fn drain(&self, t: &mut Tracker) {
        while let Some(e) = t.poll_effect() {
            let c = &self.inner.effects;
            match e {
                Effect::CallStarted { .. } => c.started.increment(1),
                Effect::Show { .. } => c.show.increment(1),
                Effect::Hide { .. } => c.hide.increment(1),
                Effect::CallFinished(_) => c.finished.increment(1),
            }
            if let Some(sink) = &self.inner.sink {
                if !sink.push(e) {
                    c.lost.increment(1);
                    tracing::error!("the Bitrix24 outbox recorder has stopped; a call effect was not recorded");
                }
            }
        }
    }

    /// Open calls first (newest first), then finished ones, `limit` at most.
    pub fn list(&self, limit: usize) -> Vec<CallRecord> {
        let t = self.inner.tracker.lock();
        let mut open: Vec<CallRecord> = t.active().collect();
        open.sort_by_key(|c| std::cmp::Reverse(c.id));
        open.into_iter().chain(t.finished().map(|r| (**r).clone())).take(limit).collect()
    }

    /// Calls still open (including those lingering after their last leg): graceful shutdown
    /// waits for none.
    pub fn open_count(&self) -> usize {
        self.inner.tracker.lock().active().count()
    }

    /// One call, open or finished.
    pub fn get(&self, id: CallId) -> Option<CallRecord> {
        self.inner.tracker.lock().get(id).map(|r| (*r).clone())
    }

    /// What changed since the last checkpoint (clears it): see `checkpoint.rs`.
    pub fn checkpoint(&self) -> Checkpoint {
        self.inner.tracker.lock().take_checkpoint()
    }

    /// Takes back a call saved by an earlier run, up as of `evidence_ms` (unix ms); its new id,
    /// or `None` when the saved state is unusable.
    pub fn restore(&self, now: Instant, saved: SavedCall, evidence_ms: u64) -> Option<CallId> {
        let at = self.millis(now);
        let mut t = self.inner.tracker.lock();
        let id = t.restore(at, saved, Millis(evidence_ms));
        self.drain(&mut t);
        id
    }

    /// `now` as the tracker's wall-clock milliseconds.
    pub fn wall_ms(&self, now: Instant) -> u64 {
        self.millis(now).0
    }
}
