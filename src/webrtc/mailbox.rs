//! The bounded mailbox between the SIP threads and the media runtime: media work never blocks
//! SIP.
//!
//! The front door admits a browser call's message (the proxy's trust decision), asks the media
//! stage what it needs ([`super::Bridge::plan`]) and, when that is a media operation, hands the
//! message, the admission and the operation to [`MediaMailbox::submit`] and returns at once: the
//! SIP thread goes on with the next datagram (a routing decision does not wait for a browser's
//! DTLS certificate). [`MediaInbox::serve`], a task on the media runtime, runs the operations
//! (several at once, each bounded by [`MEDIA_TIMEOUT`]) and gives each finished one back to the
//! front ([`Resume::media_done`]), which lets the rewritten message re-enter the proxy; what
//! that sends goes out through the SIP transports ([`Deliver`]).
//!
//! Invariants:
//! - **Bounded.** The mailbox holds at most `new_calls + ANSWER_ROOM` operations, and at most
//!   [`RUNNING`] run at once. A new call is taken only while more than [`ANSWER_ROOM`] places
//!   are free, so the answers and re-offers of calls already anchored keep their room. When
//!   there is no room, [`Submitted::Full`] hands the job back: the front answers an INVITE
//!   `503` + `Retry-After` at once (counted) and drops a response (counted; its sender
//!   retransmits over UDP).
//! - **One Call-ID at a time, in order.** While a Call-ID has media work in flight, every other
//!   message with that Call-ID waits behind it (its lane), at most [`WAITING_PER_CALL`], and is
//!   handed back in arrival order once the work is done ([`MediaMailbox::next_waiting`]), to
//!   meet the trust model and the media stage then like any message. So a CANCEL or BYE never
//!   overtakes the INVITE whose media is being set up, and the stage sees a call's messages in
//!   the order they came.
//! - **Retransmissions are absorbed.** A message identical to the one in flight, or to one
//!   waiting (same source, method or status, CSeq and top Via branch), is dropped and counted,
//!   so a retransmitted INVITE never starts a second set-up. The proxy answers the INVITE's
//!   retransmissions itself once the INVITE reached it.
//! - **Hostile by default.** Media work starts only for a message the trust model admitted. A
//!   message that waits in a lane was not judged yet: it is judged when its turn comes (and a
//!   refusal then leaves no state); a lane is as bounded as the mailbox.
//!
//! [`MediaInbox::try_next`] lets a synchronous driver (the fuzz target, unit tests) run the
//! operations itself, in order, on a clock of its own.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::plan::{MediaDone, MediaWork, MEDIA_TIMEOUT};
use super::media::MediaAnchor;
use super::Bridge;
use crate::proxy::Admitted;
use crate::sip::core::SipMessage;
use crate::sip::transport::{Outbox, Peer};

/// Places kept for the answers and re-offers of calls already anchored: a new call is taken
/// only while more than this many are free. A burst of new calls fills the rest; the 200s
/// that complete the calls already set up still get in.
pub const ANSWER_ROOM: usize = 16;
/// New calls waiting for media at most, whatever `media.max_sessions` says: at the ~20 set-ups
/// a second a 2-core host sustains, 64 is about three seconds of backlog, beyond which the PBX is
/// better told `503` at once than made to wait.
pub const MAX_NEW_CALLS: usize = 64;
/// Media operations running at once: a set-up costs a few milliseconds of CPU (DTLS
/// certificate, sockets), so a few at a time keep the cores busy while one waits on the engine.
pub const RUNNING: usize = 8;
/// Messages of one call waiting for its media work at most (a CANCEL, a BYE, a retransmitted
/// provisional answer: a handful at most in a real call).
pub const WAITING_PER_CALL: usize = 8;

/// A message whose media work is queued: the work, the message as its sender sent it, where it
/// came from and the proxy's admission of it.
pub struct Job {
    work: MediaWork,
    msg: SipMessage,
    peer: Peer,
    admitted: Admitted,
}

impl Job {
    /// `msg` from `peer`, admitted by the proxy as `admitted`, needs `work` first.
    pub fn new(work: MediaWork, msg: SipMessage, peer: Peer, admitted: Admitted) -> Self {
        Self { work, msg, peer, admitted }
    }

    /// The message.
    pub fn msg(&self) -> &SipMessage {
        &self.msg
    }

    /// Where it came from.
    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// Runs the media work on `anchor` (at most [`MEDIA_TIMEOUT`]).
    ///
    /// # Cancel safety
    /// As [`MediaWork::run`]: dropped early, it leaves no session open.
    pub async fn run(self, anchor: &MediaAnchor) -> Finished {
        let Self { work, msg, peer, admitted } = self;
        let done = work.run(anchor, MEDIA_TIMEOUT).await;
        Finished { done, msg, peer, admitted }
    }
}

/// A [`Job`] whose media work ran: hand it to [`Resume::media_done`].
pub struct Finished {
    /// The work's result, for [`super::Bridge::finish`].
    pub done: MediaDone,
    /// The message as its sender sent it.
    pub msg: SipMessage,
    /// Where it came from.
    pub peer: Peer,
    /// The proxy's admission, made before the work was queued.
    pub admitted: Admitted,
}

/// Who carries on with a message once its media work is done (the front door).
pub trait Resume: Send + Sync + 'static {
    /// The media work of `finished` is done: record it, let the message re-enter the proxy,
    /// then hand on the messages of its call that waited ([`MediaMailbox::next_waiting`]).
    /// Everything to send goes into `out.sends` (no reply in place: nobody is waiting on a
    /// socket for it). Must not block.
    fn media_done(&self, finished: Finished, now: Instant, out: &mut Outbox);
}

/// Sends what [`Resume::media_done`] produced (the SIP transports' hub).
pub type Deliver = Arc<dyn Fn(Outbox) + Send + Sync>;

/// What became of a submitted job.
pub enum Submitted {
    /// Queued for the media runtime.
    Sent,
    /// Another message of its call has media work in flight: the message waits behind it (or
    /// was a retransmission of it and is absorbed); the job's admission is dropped.
    Waits,
    /// No room: the job comes back for the caller to refuse (nothing was set up for it; boxed:
    /// a job holds a parsed message, ~1.5 KB).
    Full(Box<Job>),
}

/// The SIP side of the mailbox (held by the front door).
pub struct MediaMailbox {
    tx: mpsc::Sender<Job>,
    /// Per Call-ID with media work in flight: the messages waiting behind it. One lock, held
    /// only for a map operation (never across an await or a media call).
    lanes: Mutex<Lanes<(SipMessage, Peer)>>,
    /// Keys messages for the retransmission check (seeded: nobody can make their message look
    /// like somebody else's).
    keys: RandomState,
}

/// The media runtime's side of the mailbox.
pub struct MediaInbox {
    rx: mpsc::Receiver<Job>,
}

impl MediaMailbox {
    /// A mailbox with room for `new_calls` new calls (at most [`MAX_NEW_CALLS`], at least one)
    /// besides [`ANSWER_ROOM`].
    pub fn new(new_calls: usize) -> (Self, MediaInbox) {
        let (tx, rx) = mpsc::channel(new_calls.clamp(1, MAX_NEW_CALLS) + ANSWER_ROOM);
        (Self { tx, lanes: Mutex::new(Lanes::default()), keys: RandomState::new() }, MediaInbox { rx })
    }

    /// Whether `msg` from `peer` must wait because its call has media work in flight: it is
    /// then kept to be handed back later ([`Self::next_waiting`]), or absorbed (a
    /// retransmission) or dropped (its call's lane is full), counted either way.
    pub fn waits(&self, msg: &SipMessage, peer: Peer) -> bool {
        let Some(call_id) = msg.call_id() else { return false };
        let mut lanes = self.lanes.lock();
        if lanes.is_empty() {
            return false;
        }
        let key = self.key(msg, peer);
        !matches!(lanes.hold(call_id, key, (msg.clone(), peer)), Held::Free(_))
    }

    /// Queues `job` for the media runtime, unless its call already has media work in flight
    /// (then its message waits) or there is no room (then it comes back). Never blocks.
    pub fn submit(&self, job: Job) -> Submitted {
        let key = self.key(&job.msg, job.peer);
        let call_id: Box<[u8]> = job.work.call_id().into();
        let mut lanes = self.lanes.lock();
        if !lanes.start(&call_id, key) {
            // Another thread's message of this call got there first: this one waits behind it.
            lanes.hold(&call_id, key, (job.msg, job.peer));
            return Submitted::Waits;
        }
        let room = if job.work.opens_call() { ANSWER_ROOM + 1 } else { 1 };
        if self.tx.capacity() < room {
            lanes.abort(&call_id);
            return Submitted::Full(Box::new(job));
        }
        match self.tx.try_send(job) {
            Ok(()) => Submitted::Sent,
            Err(TrySendError::Full(job) | TrySendError::Closed(job)) => {
                lanes.abort(&call_id);
                Submitted::Full(Box::new(job))
            }
        }
    }

    /// The media work of `call_id` is done (call before handing its message to the proxy, so
    /// that whatever arrives meanwhile keeps waiting behind it).
    pub fn finished(&self, call_id: &[u8]) {
        self.lanes.lock().finish(call_id);
    }

    /// The next message that waited for `call_id`'s media work, in arrival order; `None` once
    /// none is left or new media work of that call is in flight (the rest wait for it).
    pub fn next_waiting(&self, call_id: &[u8]) -> Option<(SipMessage, Peer)> {
        self.lanes.lock().next(call_id)
    }

    fn key(&self, msg: &SipMessage, peer: Peer) -> u64 {
        let cseq = msg.cseq().map(|c| (c.seq, c.method));
        let branch = msg.top_via().and_then(|v| v.branch);
        self.keys.hash_one((peer, msg.method_raw(), msg.status(), cseq, branch))
    }
}

impl MediaInbox {
    /// The next queued job, if any (for a synchronous driver; [`Self::serve`] otherwise).
    pub fn try_next(&mut self) -> Option<Job> {
        self.rx.try_recv().ok()
    }

    /// Runs the queued jobs on this runtime, [`RUNNING`] at most at once, each in a task of
    /// `tasks`, handing each finished one to `resume` and its output to `deliver`. With a
    /// `gate`, each job waits for one of its permits first (tests stall the media stage so).
    /// Ends when `cancel` fires or every sender is gone.
    pub async fn serve(mut self, bridge: Arc<Bridge>, resume: Arc<dyn Resume>, deliver: Deliver, gate: Option<MediaGate>, tasks: TaskTracker, cancel: CancellationToken) {
        let running = Arc::new(Semaphore::new(RUNNING));
        loop {
            let permit = tokio::select! {
                () = cancel.cancelled() => break,
                p = Arc::clone(&running).acquire_owned() => p.expect("the semaphore is never closed"),
            };
            if let Some(gate) = &gate {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = gate.pass() => {}
                }
            }
            let job = tokio::select! {
                () = cancel.cancelled() => break,
                job = self.rx.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
            };
            let (bridge, resume, deliver, cancel) = (Arc::clone(&bridge), Arc::clone(&resume), Arc::clone(&deliver), cancel.clone());
            tasks.spawn(async move {
                let finished = tokio::select! {
                    () = cancel.cancelled() => return,
                    f = job.run(bridge.anchor()) => f,
                };
                let mut out = Outbox::new();
                resume.media_done(finished, tokio::time::Instant::now().into_std(), &mut out);
                deliver(out);
                drop(permit);
            });
        }
    }
}

/// A test hook: media jobs wait for one permit each before they run, so a test can hold the
/// media stage still (and see that SIP does not wait for it). Production never sets one.
#[derive(Clone)]
pub struct MediaGate(Arc<Semaphore>);

impl MediaGate {
    /// A gate that lets nothing through yet.
    pub fn shut() -> Self {
        Self(Arc::new(Semaphore::new(0)))
    }

    /// Lets `jobs` more jobs through.
    pub fn let_through(&self, jobs: usize) {
        self.0.add_permits(jobs);
    }

    async fn pass(&self) {
        if let Ok(permit) = self.0.acquire().await {
            permit.forget();
        }
    }
}

/// One Call-ID's media work in flight (`busy`, the key of its message) and what waits behind
/// it. A lane with nothing in flight still exists while its waiting messages are handed back.
struct Lane<T> {
    busy: Option<u64>,
    waiting: VecDeque<(u64, T)>,
}

/// What [`Lanes::hold`] did with an item.
enum Held<T> {
    /// Its call has no lane: the item comes back.
    Free(T),
    /// Kept, to be handed back by [`Lanes::next`].
    Waits,
    /// The same as the message in flight or one waiting: dropped.
    Absorbed,
    /// The lane is full: dropped.
    Dropped,
}

/// The lanes by Call-ID (pure bookkeeping; [`MediaMailbox`] holds it under its lock).
struct Lanes<T> {
    map: HashMap<Box<[u8]>, Lane<T>>,
}

impl<T> Default for Lanes<T> {
    fn default() -> Self {
        Self { map: HashMap::new() }
    }
}

impl<T> Lanes<T> {
    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// `item` (keyed `key`) waits when `call_id` has a lane; see [`Held`].
    fn hold(&mut self, call_id: &[u8], key: u64, item: T) -> Held<T> {
        let Some(lane) = self.map.get_mut(call_id) else { return Held::Free(item) };
        if lane.busy == Some(key) || lane.waiting.iter().any(|(k, _)| *k == key) {
            metrics::counter!("callgate_media_retransmissions_absorbed_total").increment(1);
            return Held::Absorbed;
        }
        if lane.waiting.len() >= WAITING_PER_CALL {
            metrics::counter!("callgate_media_waiting_dropped_total").increment(1);
            return Held::Dropped;
        }
        lane.waiting.push_back((key, item));
        Held::Waits
    }

    /// Media work keyed `key` starts for `call_id`: `false` when some is in flight already.
    fn start(&mut self, call_id: &[u8], key: u64) -> bool {
        match self.map.get_mut(call_id) {
            Some(Lane { busy: Some(_), .. }) => false,
            Some(lane) => {
                lane.busy = Some(key);
                true
            }
            None => {
                self.map.insert(call_id.into(), Lane { busy: Some(key), waiting: VecDeque::new() });
                true
            }
        }
    }

    /// The work [`Self::start`]ed could not be queued after all.
    fn abort(&mut self, call_id: &[u8]) {
        self.finish(call_id);
        if self.map.get(call_id).is_some_and(|l| l.waiting.is_empty()) {
            self.map.remove(call_id);
        }
    }

    /// The work in flight for `call_id` is done.
    fn finish(&mut self, call_id: &[u8]) {
        if let Some(lane) = self.map.get_mut(call_id) {
            lane.busy = None;
        }
    }

    /// The next waiting item of `call_id`, unless new work is in flight; the lane goes once
    /// nothing waits.
    fn next(&mut self, call_id: &[u8]) -> Option<T> {
        let lane = self.map.get_mut(call_id)?;
        if lane.busy.is_some() {
            return None;
        }
        match lane.waiting.pop_front() {
            Some((_, item)) => Some(item),
            None => {
                self.map.remove(call_id);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_with_work_in_flight_keeps_its_messages_in_order_and_absorbs_retransmissions() {
        let mut lanes: Lanes<&str> = Lanes::default();
        assert!(matches!(lanes.hold(b"c1", 1, "free"), Held::Free("free")), "no lane: nothing waits");
        assert!(lanes.start(b"c1", 1));
        assert!(!lanes.start(b"c1", 2), "one piece of work per call at a time");
        assert!(matches!(lanes.hold(b"c1", 1, "invite again"), Held::Absorbed), "the INVITE retransmitted");
        assert!(matches!(lanes.hold(b"c1", 3, "cancel"), Held::Waits));
        assert!(matches!(lanes.hold(b"c1", 3, "cancel again"), Held::Absorbed));
        assert!(matches!(lanes.hold(b"c1", 4, "bye"), Held::Waits));
        assert!(matches!(lanes.hold(b"c2", 1, "other call"), Held::Free(_)), "other calls never wait");
        assert_eq!(lanes.next(b"c1"), None, "nothing comes back while the work is in flight");

        lanes.finish(b"c1");
        assert_eq!(lanes.next(b"c1"), Some("cancel"));
        // Handing back, the lane still holds later arrivals behind the earlier ones.
        assert!(matches!(lanes.hold(b"c1", 5, "late"), Held::Waits));
        assert_eq!(lanes.next(b"c1"), Some("bye"));
        assert_eq!(lanes.next(b"c1"), Some("late"));
        assert_eq!(lanes.next(b"c1"), None);
        assert!(lanes.is_empty(), "the lane is gone once nothing waits");
    }

    #[test]
    fn work_started_while_handing_back_holds_the_rest_behind_it() {
        let mut lanes: Lanes<u32> = Lanes::default();
        assert!(lanes.start(b"c", 1));
        for k in 2..=4 {
            assert!(matches!(lanes.hold(b"c", k, k as u32), Held::Waits));
        }
        lanes.finish(b"c");
        assert_eq!(lanes.next(b"c"), Some(2));
        assert!(lanes.start(b"c", 2), "the re-INVITE handed back needs media work of its own");
        assert_eq!(lanes.next(b"c"), None, "3 and 4 wait for it");
        lanes.finish(b"c");
        assert_eq!((lanes.next(b"c"), lanes.next(b"c"), lanes.next(b"c")), (Some(3), Some(4), None));
    }

    #[test]
    fn a_lane_is_bounded_and_an_aborted_start_leaves_nothing() {
        let mut lanes: Lanes<u64> = Lanes::default();
        assert!(lanes.start(b"c", 0));
        for k in 1..=WAITING_PER_CALL as u64 {
            assert!(matches!(lanes.hold(b"c", k, k), Held::Waits));
        }
        assert!(matches!(lanes.hold(b"c", 99, 99), Held::Dropped), "a flood of one Call-ID stays bounded");

        let mut lanes: Lanes<u64> = Lanes::default();
        assert!(lanes.start(b"c", 0));
        lanes.abort(b"c");
        assert!(lanes.is_empty(), "refused work leaves no lane");
    }
}
