//! What the media stage ([`super::Bridge`]) makes of one message, decided at once: [`Plan::Now`]
//! (a [`Rewrite`]) or [`Plan::Media`], a [`MediaWork`] the media runtime runs
//! ([`MediaWork::run`]) before [`super::Bridge::finish`] records its result. A `MediaWork` owns
//! everything it needs (the Call-ID, the sender's SDP, the session and what its result updates),
//! so it can wait in the mailbox (`mailbox.rs`) and run on another thread; running it is the only
//! place the stage awaits the media anchor.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;

use super::media::{MediaAnchor, MediaError, SessionId};
use crate::sip::core::SipMessage;
use crate::sip::transport::Peer;

/// What the stage makes of a message.
#[derive(Debug)]
pub enum Rewrite {
    /// Not a media message of a browser call: hand it to the proxy as it is.
    Pass,
    /// The same message with the other side's SDP (boxed: a parsed message is ~1 KB, the
    /// other variants a few bytes).
    Replace(Box<SipMessage>),
    /// Answer the request with this status instead of forwarding it (no media possible).
    Refuse { status: u16, reason: &'static str },
}

/// How long one media operation may take before the message it serves is refused (a new call
/// 503, a re-offer 488) or, for an answer, forwarded as it is.
pub const MEDIA_TIMEOUT: Duration = Duration::from_secs(5);

/// What a message needs from the stage: decided at once ([`super::Bridge::plan`]).
#[derive(Debug)]
pub enum Plan {
    /// No media operation: what to do with the message now.
    Now(Rewrite),
    /// A media operation first (run it on the media runtime, then [`super::Bridge::finish`]).
    Media(MediaWork),
}

impl From<Rewrite> for Plan {
    fn from(r: Rewrite) -> Self {
        Self::Now(r)
    }
}

/// One media operation for one message, with what [`super::Bridge::finish`] needs to record its result.
/// Owns its data: it can wait in a queue and run on another thread.
#[derive(Debug)]
pub struct MediaWork {
    pub(super) call_id: Box<[u8]>,
    /// The SDP the operation reads (the sender's).
    pub(super) body: Bytes,
    pub(super) op: Op,
}

/// The operation and what its result updates.
#[derive(Debug)]
pub(super) enum Op {
    /// An initial INVITE with SDP: a new session.
    Open { label: String, cseq: u32, call: NewCall, caller_tag: Option<Box<[u8]>>, pbx_contact: Option<String> },
    /// A re-INVITE with SDP from one side.
    Reoffer { session: SessionId, cseq: u32, from_browser: bool },
    /// The answer to a pending offer (`pending`), from the side it went to.
    Answer { session: SessionId, pending: (u32, Pending), key: (u32, bool, bool) },
}

/// A [`MediaWork`] that ran: its result, for [`super::Bridge::finish`].
#[derive(Debug)]
pub struct MediaDone {
    pub(super) work: MediaWork,
    pub(super) result: Result<(Option<SessionId>, String), MediaError>,
}

impl MediaWork {
    /// The Call-ID the operation is for.
    pub fn call_id(&self) -> &[u8] {
        &self.call_id
    }

    /// Whether it opens a new call's media (else it serves a call already anchored).
    pub fn opens_call(&self) -> bool {
        matches!(self.op, Op::Open { .. })
    }

    /// Runs the operation on `anchor`, at most `limit` (a timeout is a [`MediaError::Engine`]).
    ///
    /// # Cancel safety
    /// Dropping the future before it ends leaves no session open: the anchor registers a session
    /// only when its set-up has finished, after the last await.
    pub async fn run(self, anchor: &MediaAnchor, limit: Duration) -> MediaDone {
        let result = tokio::time::timeout(limit, self.call(anchor)).await;
        let result = result.unwrap_or_else(|_| Err(MediaError::Engine("media operation timed out".into())));
        MediaDone { work: self, result }
    }

    async fn call(&self, anchor: &MediaAnchor) -> Result<(Option<SessionId>, String), MediaError> {
        let body = &self.body[..];
        let sdp = match &self.op {
            Op::Open { label, call, .. } if call.kind == Pending::PbxOffer => return anchor.pbx_offer(label, body).await.map(|(s, sdp)| (Some(s), sdp)),
            Op::Open { label, .. } => return anchor.browser_offer(label, body).await.map(|(s, sdp)| (Some(s), sdp)),
            Op::Reoffer { session, from_browser: true, .. } => anchor.browser_reoffer(*session, body).await,
            Op::Reoffer { session, from_browser: false, .. } => anchor.pbx_reoffer(*session, body).await,
            Op::Answer { session, pending: (_, kind), .. } => match kind {
                Pending::PbxOffer => anchor.browser_answer(*session, body).await,
                Pending::PbxReoffer => anchor.browser_reanswer(*session, body).await,
                Pending::BrowserOffer => anchor.pbx_answer(*session, body).await,
                Pending::BrowserReoffer => anchor.pbx_reanswer(*session, body).await,
            },
        };
        sdp.map(|sdp| (None, sdp))
    }
}

impl MediaDone {
    /// The Call-ID the operation was for.
    pub fn call_id(&self) -> &[u8] {
        &self.work.call_id
    }
}

/// Which offer waits for its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pending {
    /// The PBX's INVITE to a browser agent.
    PbxOffer,
    /// A browser agent's INVITE out through the PBX.
    BrowserOffer,
    /// A re-INVITE (hold, unhold) from the PBX.
    PbxReoffer,
    /// A re-INVITE from the browser.
    BrowserReoffer,
}

impl Pending {
    /// Whether the browser answers this offer (else the PBX does).
    pub(super) fn browser_answers(self) -> bool {
        matches!(self, Self::PbxOffer | Self::PbxReoffer)
    }
}

/// What a new anchored call needs besides the INVITE.
#[derive(Debug)]
pub(super) struct NewCall {
    pub(super) browser: Peer,
    pub(super) creator: Peer,
    pub(super) pbx_ip: Option<IpAddr>,
    pub(super) kind: Pending,
}
