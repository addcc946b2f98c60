//! Sans-IO SIP wire core: a tolerant, zero-copy parser, stream framing and response writing.
//!
//! No tokio, no clock, no I/O, no logging: bytes in, typed views or bytes out. The transport
//! drivers (`sip/transport`) feed it; transactions and the redirect/proxy logic build on it.
//! Depends only on `bytes`, `memchr` and `md-5` (digest authentication, `digest.rs`); UTF-8 is
//! never required anywhere.
//!
//! Data path and module map:
//! ```text
//! TCP/TLS bytes --framing::frame_stream--> one frame --+
//! UDP datagram ----------------------------------------+--> SipMessage::parse
//!     parse.rs    start line + header index (lines.rs scans, header.rs names, table.rs stores)
//!     validate.rs RFC 3261 / RFC 4475 acceptance rules       -> ParseError (error.rs) => 400
//! SipMessage accessors (message.rs) parse values on demand:
//!     via.rs Via | name_addr.rs NameAddr | uri.rs Uri | method.rs Method, CSeq
//! response.rs write_response(req, ...) -> BytesMut; to_tag_for (stateless UAS To-tag)
//! transaction/ the four RFC 3261 §17 transaction state machines (+ RFC 6026), build_ack
//! digest.rs   Digest auth (RFC 2617 MD5): Authorization/WWW-Authenticate, stateless nonces
//! scan.rs     byte helpers (token/LWS classes, cursor, quote-aware splitting)
//! ```
//!
//! Invariants for every file here: no `unsafe`, no indexing that can go out of bounds, no
//! `unwrap` on input-derived data, checked or saturating arithmetic, no allocation per message
//! (the header index is an inline array of [`MAX_HEADERS`] byte ranges). The RFC 4475 torture
//! messages and mutation sweeps (the `tests` module) exercise this.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
// No-panic by construction, enforced for the library code (tests may index and unwrap).
#![cfg_attr(
    not(test),
    warn(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::arithmetic_side_effects
    )
)]

pub mod digest;
mod error;
mod forward;
mod framing;
mod header;
mod lines;
mod message;
mod method;
mod name_addr;
mod parse;
mod response;
mod scan;
mod table;
pub mod stun;
pub mod transaction;
mod uri;
mod validate;
mod via;

#[cfg(test)]
mod tests;

pub use self::error::ParseError;
pub use self::forward::{first_value, second_via, write_cancel, write_forwarded_request, write_forwarded_response, RequestEdit, StripHeader};
pub use self::framing::{frame_stream, Frame, FrameError};
pub use self::header::HeaderName;
pub use self::message::{SipMessage, UserTag, MAX_MESSAGE};
pub use self::method::{CSeq, Method};
pub use self::name_addr::NameAddr;
pub use self::response::{to_tag_for, write_bad_frame, write_bad_request, write_response};
pub use self::scan::{comma_values, delta_seconds, raw_top_via, CommaValues};
pub use self::table::MAX_HEADERS;
pub use self::uri::{socket_addr, Uri};
pub use self::via::Via;
