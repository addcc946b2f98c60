//! The path from the tracker to the Bitrix24 outbox recorder: a bounded channel, a spill behind
//! it, and the gate that says whether new calls may still be accepted.
//!
//! Back-pressure, not loss. The channel (`crm.effects_queue` slots) fills when the recorder
//! cannot write the outbox (the store is stuck or slow). Then:
//! - **new calls are refused** once fewer than a quarter of the slots are free
//!   ([`Outlet::accepting`], read by the SIP front door, which answers a new INVITE `503` +
//!   `Retry-After`); the free quarter is the room kept for the calls already accepted;
//! - **effects of accepted calls are never dropped**: what does not fit in the channel waits in
//!   the spill, in order, and goes first when room appears (every tick and every event moves
//!   it). An effect is never sent ahead of an older one (a finish must not overtake its
//!   register: the recorder ignores a finish whose call it has not seen start).
//!
//! Why a spill and not the alternatives: blocking the sender would stall the SIP threads (they
//! feed the tracker under its lock) and with them every open call's signalling, for as long as
//! the store is stuck; a fixed reservation per accepted call cannot be sized, since a call's
//! effects grow with its legs (ring groups, transfers). The spill is bounded by what the calls
//! already accepted can still produce: new calls, and new legs (each arrives as a new INVITE),
//! are refused while it is not empty, so it holds at most their pending show/hide and finish.
//!
//! Lock order: the tracker's lock, then the spill's (only [`CallsHandle`](super::CallsHandle)
//! calls in here, while holding the tracker).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;

use super::Effect;

/// The tracker's sink: channel first, spill behind it.
pub(crate) struct Outlet {
    tx: Sender<Effect>,
    /// Effects that found the channel full, oldest first. Why a lock: the handle is shared by
    /// the SIP threads and the tick; it is only taken under the tracker's lock, never across
    /// an await.
    spill: Mutex<VecDeque<Effect>>,
    /// The spill's length, for the gate's lock-free read.
    spilled: AtomicUsize,
    /// Below this many free slots new calls are refused.
    reserve: usize,
    metrics: OutletMetrics,
}

struct OutletMetrics {
    /// Effects that went to the spill (not lost: delivered later, in order).
    overflow: metrics::Counter,
    /// The spill's current length.
    spill_len: metrics::Gauge,
}

impl Outlet {
    /// An outlet over `tx`; a quarter of its slots are kept for calls already accepted.
    pub(crate) fn new(tx: Sender<Effect>) -> Self {
        let reserve = (tx.max_capacity() / 4).max(1);
        let metrics = OutletMetrics {
            overflow: metrics::counter!("callgate_calls_effects_overflow_total"),
            spill_len: metrics::gauge!("callgate_calls_effects_spilled"),
        };
        Self { tx, spill: Mutex::new(VecDeque::new()), spilled: AtomicUsize::new(0), reserve, metrics }
    }

    /// Sends `effect` after everything spilled before it; keeps it when the channel is full.
    /// Returns `false` only when the recorder is gone (shutdown, nothing left to deliver to).
    pub(crate) fn push(&self, effect: Effect) -> bool {
        let mut spill = self.spill.lock();
        if !self.flush_locked(&mut spill) {
            return false;
        }
        if !spill.is_empty() {
            self.keep(&mut spill, effect);
            return true;
        }
        match self.tx.try_send(effect) {
            Ok(()) => true,
            Err(TrySendError::Full(effect)) => {
                self.keep(&mut spill, effect);
                true
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    /// Moves spilled effects into the channel while there is room (called on every tick).
    pub(crate) fn flush(&self) {
        let mut spill = self.spill.lock();
        self.flush_locked(&mut spill);
    }

    /// New calls may be accepted: nothing waits in the spill and at least the reserve is free.
    pub(crate) fn accepting(&self) -> bool {
        self.spilled.load(Ordering::Relaxed) == 0 && self.tx.capacity() >= self.reserve
    }

    /// Effects waiting in the spill.
    pub(crate) fn spilled(&self) -> usize {
        self.spilled.load(Ordering::Relaxed)
    }

    /// Hands the whole spill to the recorder, waiting for room (graceful shutdown, after the
    /// SIP listeners stopped: nothing feeds the tracker any more).
    ///
    /// # Cancel safety
    /// An effect taken from the spill is lost if the future is dropped while it waits for room;
    /// callers bound it with a timeout only when the recorder is stuck anyway.
    pub(crate) async fn flush_all(&self) {
        loop {
            let next = {
                let mut spill = self.spill.lock();
                let next = spill.pop_front();
                self.set_len(&spill);
                next
            };
            let Some(effect) = next else { return };
            if self.tx.send(effect).await.is_err() {
                return;
            }
        }
    }

    /// `false` when the channel is closed.
    fn flush_locked(&self, spill: &mut VecDeque<Effect>) -> bool {
        if spill.is_empty() {
            return true;
        }
        let mut open = true;
        while let Some(effect) = spill.pop_front() {
            match self.tx.try_send(effect) {
                Ok(()) => {}
                Err(TrySendError::Full(effect)) => {
                    spill.push_front(effect);
                    break;
                }
                Err(TrySendError::Closed(_)) => {
                    spill.clear();
                    open = false;
                    break;
                }
            }
        }
        self.set_len(spill);
        open
    }

    fn keep(&self, spill: &mut VecDeque<Effect>, effect: Effect) {
        spill.push_back(effect);
        self.metrics.overflow.increment(1);
        self.set_len(spill);
    }

    fn set_len(&self, spill: &VecDeque<Effect>) {
        self.spilled.store(spill.len(), Ordering::Relaxed);
        self.metrics.spill_len.set(spill.len() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::CallId;

    fn show(n: u64) -> Effect {
        Effect::Show { call: CallId(n), portal: 1, users: vec![n] }
    }

    fn id(e: &Effect) -> u64 {
        match e {
            Effect::Show { call, .. } => call.0,
            _ => panic!("only shows here"),
        }
    }

    #[test]
    fn a_full_channel_spills_in_order_and_closes_the_gate_until_drained() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let out = Outlet::new(tx);
        assert_eq!(out.reserve, 2);
        for n in 0..6 {
            assert!(out.push(show(n)));
        }
        assert!(out.accepting(), "2 of 8 free: exactly the reserve");
        assert!(out.push(show(6)));
        assert!(!out.accepting(), "1 of 8 free: below the reserve, new calls are refused");
        for n in 7..20 {
            assert!(out.push(show(n)));
        }
        assert_eq!(out.spilled(), 12, "8 in the channel, the rest kept");
        assert!(!out.accepting());

        // The recorder takes three; the spill moves up behind them, oldest first.
        let first: Vec<u64> = (0..3).map(|_| id(&rx.try_recv().unwrap())).collect();
        out.flush();
        assert_eq!(out.spilled(), 9);
        assert!(out.push(show(20)), "newer effects queue behind the spill, never ahead of it");
        let mut seen = first;
        while seen.len() < 21 {
            while let Ok(e) = rx.try_recv() {
                seen.push(id(&e));
            }
            out.flush();
        }
        assert_eq!(seen, (0..21).collect::<Vec<_>>(), "every effect, once, in order");
        assert_eq!(out.spilled(), 0);
        assert!(out.accepting(), "open again once drained");
    }

    #[test]
    fn a_closed_recorder_is_reported_and_nothing_is_kept_for_it() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let out = Outlet::new(tx);
        drop(rx);
        assert!(!out.push(show(1)));
        assert_eq!(out.spilled(), 0);
    }

    #[tokio::test]
    async fn at_shutdown_the_whole_spill_reaches_the_recorder() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let out = std::sync::Arc::new(Outlet::new(tx));
        for n in 0..50 {
            assert!(out.push(show(n)));
        }
        assert_eq!(out.spilled(), 46);
        let flushing = tokio::spawn({
            let out = std::sync::Arc::clone(&out);
            async move { out.flush_all().await }
        });
        let mut seen = Vec::new();
        while seen.len() < 50 {
            seen.push(id(&rx.recv().await.expect("open")));
        }
        flushing.await.expect("flushed");
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
    }
}
