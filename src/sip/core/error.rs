//! [`ParseError`]: why `SipMessage::parse` refused a message.
//!
//! Role: one typed error for the parser boundary. Its `Display` text is short ASCII meant to be
//! used verbatim as the reason phrase of the error response (`SIP/2.0 400 Missing Call-ID`), and
//! [`ParseError::status_code`] picks that response's code. No `thiserror`: this module has no
//! dependencies beyond `std`.

use std::fmt;

/// Why a message was refused. See `SipMessage::parse` for the rules.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Nothing but CR/LF (a keep-alive) or no bytes at all.
    Empty,
    /// Larger than `MAX_MESSAGE`.
    TooLarge,
    /// The start line is not `METHOD SP Request-URI SP SIP/2.0` (one SP each, nothing after),
    /// or not a status line.
    BadStartLine,
    /// A well-formed `SIP/x.y` other than `SIP/2.0` (answer 505).
    BadVersion,
    /// The Request-URI does not parse, or is a SIP URI with headers (`?...`, RFC 3261 §19.1.5).
    BadRequestUri,
    /// The status code is not three digits in `100..=699`.
    BadStatus,
    /// A header line without a colon or with a non-token name. `line` counts from 1 (the start
    /// line).
    BadHeader {
        /// Line number, 1-based, counting the start line.
        line: usize,
    },
    /// The input ended before the empty line that closes the header section.
    UnterminatedHeaders,
    /// More than `MAX_HEADERS` header lines.
    TooManyHeaders,
    /// A mandatory header (To, From, CSeq, Call-ID, Via) is absent.
    MissingHeader(&'static str),
    /// A single-valued header (To, From, CSeq, Call-ID, Max-Forwards) appears more than once.
    DuplicateHeader(&'static str),
    /// Content-Length is not a plain decimal number that fits `u32`, or appears more than once.
    BadContentLength,
    /// The body is shorter than Content-Length.
    BodyTooShort,
    /// CSeq is not `number SP method` with a number that fits `u32`.
    BadCSeq,
    /// The CSeq method differs from the request method.
    CSeqMismatch,
    /// The top Via value does not parse.
    BadVia,
    /// The named header's value does not parse (From, To, Contact, Max-Forwards, Date).
    BadHeaderValue(&'static str),
}

impl ParseError {
    /// The status code of the response this error calls for (when a response is possible at
    /// all, i.e. the message was a request): 505 for [`Self::BadVersion`], 513 for
    /// [`Self::TooLarge`], otherwise 400.
    #[must_use]
    pub const fn status_code(&self) -> u16 {
        match self {
            Self::BadVersion => 505,
            Self::TooLarge => 513,
            _ => 400,
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("Empty Message"),
            Self::TooLarge => f.write_str("Message Too Large"),
            Self::BadStartLine => f.write_str("Malformed Start Line"),
            Self::BadVersion => f.write_str("Version Not Supported"),
            Self::BadRequestUri => f.write_str("Bad Request-URI"),
            Self::BadStatus => f.write_str("Bad Status Code"),
            Self::BadHeader { line } => write!(f, "Malformed Header Line {line}"),
            Self::UnterminatedHeaders => f.write_str("Unterminated Header Section"),
            Self::TooManyHeaders => f.write_str("Too Many Headers"),
            Self::MissingHeader(name) => write!(f, "Missing {name}"),
            Self::DuplicateHeader(name) => write!(f, "Multiple {name} Values"),
            Self::BadContentLength => f.write_str("Bad Content-Length"),
            Self::BodyTooShort => f.write_str("Body Shorter Than Content-Length"),
            Self::BadCSeq => f.write_str("Bad CSeq"),
            Self::CSeqMismatch => f.write_str("CSeq Method Mismatch"),
            Self::BadVia => f.write_str("Bad Via"),
            Self::BadHeaderValue(name) => write!(f, "Bad {name}"),
        }
    }
}

impl std::error::Error for ParseError {}

#[cfg(test)]
mod tests {
    use super::ParseError;

    #[test]
    fn display_is_a_short_ascii_reason_phrase() {
        let cases = [
            (ParseError::MissingHeader("Call-ID"), "Missing Call-ID"),
            (ParseError::BadHeader { line: 7 }, "Malformed Header Line 7"),
            (ParseError::BadHeaderValue("From"), "Bad From"),
            (ParseError::DuplicateHeader("To"), "Multiple To Values"),
            (ParseError::CSeqMismatch, "CSeq Method Mismatch"),
        ];
        for (err, text) in cases {
            let shown = err.to_string();
            assert_eq!(shown, text);
            assert!(shown.is_ascii() && shown.len() < 40);
        }
    }

    #[test]
    fn status_code_follows_rfc_3261() {
        assert_eq!(ParseError::BadVersion.status_code(), 505);
        assert_eq!(ParseError::TooLarge.status_code(), 513);
        assert_eq!(ParseError::BadVia.status_code(), 400);
    }
}
