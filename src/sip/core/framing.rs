//! Stream framing for SIP over TCP/TLS (RFC 3261 §18.3): where does the next message end?
//!
//! Role: look at the bytes a connection has buffered and say `Complete(n)` (the next message is
//! the first `n` bytes, body included), `Incomplete` (read more), or `KeepAlive(n)` (skip `n`
//! bytes of CR/LF, RFC 5626 §4.4.1 pings). The driver then hands `Complete` frames to
//! `SipMessage::parse`. Same split as mini-redis `Frame::check` / `Frame::parse`.
//!
//! Rules: the header section ends at the first empty line (CRLF CRLF, or bare LF LF).
//! Content-Length (or compact `l`) is mandatory on streams; an absent, unparsable, negative,
//! overlong (> `u32`) or repeated Content-Length is [`FrameError::BadContentLength`], never
//! "assume 0" (that desynchronises the stream). The caller should close the connection on
//! any error: there is no way to find the next message boundary.
//!
//! Invariants: no allocation, no panics, one pass over the header section per call.

use std::fmt;

use memchr::memchr_iter;

use super::header::HeaderName;
use super::lines::{split_line, HeaderLines};
use super::scan::parse_u32;

/// What the buffered bytes hold next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// The next message is complete: its total length, body included.
    Complete(usize),
    /// More bytes are needed.
    Incomplete,
    /// Leading CR/LF bytes (keep-alive ping `CRLF CRLF`, or stray line ends) to skip. RFC 5626
    /// asks to answer a double-CRLF ping with a single CRLF pong.
    KeepAlive(usize),
}

/// Why the stream cannot be framed. Close the connection.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The header section, or headers plus declared body, exceed `max_size`.
    TooLarge,
    /// Content-Length is absent, not a decimal `u32`, or given more than once.
    BadContentLength,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TooLarge => "Message Too Large",
            Self::BadContentLength => "Bad Content-Length",
        })
    }
}

impl std::error::Error for FrameError {}

/// Frames the next message in a stream buffer; see the module docs.
///
/// # Errors
/// [`FrameError::TooLarge`] if the header section (complete or not) or the whole message would
/// exceed `max_size`; [`FrameError::BadContentLength`] as described in the module docs.
pub fn frame_stream(buf: &[u8], max_size: usize) -> Result<Frame, FrameError> {
    let keep_alive = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    if keep_alive > 0 {
        return Ok(Frame::KeepAlive(keep_alive));
    }
    let Some(head_len) = header_end(buf) else {
        return if buf.len() > max_size {
            Err(FrameError::TooLarge)
        } else {
            Ok(Frame::Incomplete)
        };
    };
    if head_len > max_size {
        return Err(FrameError::TooLarge);
    }
    let head = buf.get(..head_len).unwrap_or_default();
    let total = head_len
        .checked_add(content_length(head)?)
        .ok_or(FrameError::TooLarge)?;
    if total > max_size {
        Err(FrameError::TooLarge)
    } else if buf.len() >= total {
        Ok(Frame::Complete(total))
    } else {
        Ok(Frame::Incomplete)
    }
}

/// Length of the header section including its closing empty line, if it is all there.
fn header_end(buf: &[u8]) -> Option<usize> {
    memchr_iter(b'\n', buf).find_map(|lf| {
        let after = lf.checked_add(1)?;
        match buf.get(after..)? {
            [b'\n', ..] => after.checked_add(1),
            [b'\r', b'\n', ..] => after.checked_add(2),
            _ => None,
        }
    })
}

/// The one Content-Length of a complete header section (start line included).
fn content_length(head: &[u8]) -> Result<usize, FrameError> {
    let (_start_line, section) = split_line(head).ok_or(FrameError::BadContentLength)?;
    let mut found = None;
    // Malformed lines are skipped: framing only needs Content-Length, and the parser will
    // refuse the message with a precise error once it is framed.
    for header in HeaderLines::new(section, 2).flatten() {
        if HeaderName::from_bytes(header.name) != HeaderName::ContentLength {
            continue;
        }
        if found.is_some() {
            return Err(FrameError::BadContentLength);
        }
        let n = parse_u32(header.value).ok_or(FrameError::BadContentLength)?;
        found = Some(usize::try_from(n).map_err(|_| FrameError::BadContentLength)?);
    }
    found.ok_or(FrameError::BadContentLength)
}

#[cfg(test)]
mod tests {
    use super::{frame_stream, Frame, FrameError};

    const MAX: usize = 65_535;

    fn msg(content_length: &str, body: &str) -> Vec<u8> {
        format!(
            "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: {content_length}\r\n\r\n{body}"
        )
        .into_bytes()
    }

    #[test]
    fn complete_and_incomplete_messages() {
        let m = msg("5", "hello");
        assert_eq!(frame_stream(&m, MAX), Ok(Frame::Complete(m.len())));
        for cut in [1, 20, m.len() - 10, m.len() - 6, m.len() - 5, m.len() - 1] {
            assert_eq!(
                frame_stream(&m[..cut], MAX),
                Ok(Frame::Incomplete),
                "cut at {cut}"
            );
        }
        assert_eq!(frame_stream(b"", MAX), Ok(Frame::Incomplete));
    }

    #[test]
    fn two_messages_back_to_back_frame_one_at_a_time() {
        let (a, b) = (msg("3", "abc"), msg("0", ""));
        let both = [a.clone(), b.clone()].concat();
        assert_eq!(frame_stream(&both, MAX), Ok(Frame::Complete(a.len())));
        assert_eq!(
            frame_stream(&both[a.len()..], MAX),
            Ok(Frame::Complete(b.len()))
        );
    }

    #[test]
    fn compact_name_bare_lf_and_folded_value() {
        let m = b"BYE sip:a@b SIP/2.0\nl:\n 2\n\nhi";
        assert_eq!(frame_stream(m, MAX), Ok(Frame::Complete(m.len())));
        let m = b"BYE sip:a@b SIP/2.0\r\nCONTENT-LENGTH : 0\r\n\r\nBYE";
        assert_eq!(frame_stream(m, MAX), Ok(Frame::Complete(m.len() - 3)));
    }

    #[test]
    fn keep_alives_are_skipped() {
        assert_eq!(frame_stream(b"\r\n\r\n", MAX), Ok(Frame::KeepAlive(4)));
        let mut m = b"\r\n\r\n".to_vec();
        m.extend(msg("0", ""));
        assert_eq!(frame_stream(&m, MAX), Ok(Frame::KeepAlive(4)));
        assert_eq!(frame_stream(&m[4..], MAX), Ok(Frame::Complete(m.len() - 4)));
    }

    #[test]
    fn missing_bad_or_repeated_content_length_is_an_error() {
        let no_cl = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n";
        assert_eq!(frame_stream(no_cl, MAX), Err(FrameError::BadContentLength));
        for bad in ["abc", "-1", "99999999999", "", "1 2", "0x10", "+5"] {
            assert_eq!(
                frame_stream(&msg(bad, ""), MAX),
                Err(FrameError::BadContentLength),
                "{bad:?}"
            );
        }
        let twice = b"OPTIONS sip:a@b SIP/2.0\r\nl: 5\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(frame_stream(twice, MAX), Err(FrameError::BadContentLength));
    }

    #[test]
    fn oversized_messages_are_refused() {
        let m = msg("5", "hello");
        assert_eq!(frame_stream(&m, m.len() - 1), Err(FrameError::TooLarge));
        assert_eq!(
            frame_stream(&msg("4000000000", ""), MAX),
            Err(FrameError::TooLarge)
        );
        // A header section that never ends is refused once it outgrows the limit.
        let endless = vec![b'X'; 200];
        assert_eq!(frame_stream(&endless, 100), Err(FrameError::TooLarge));
        assert_eq!(frame_stream(&endless, 1000), Ok(Frame::Incomplete));
    }
}
