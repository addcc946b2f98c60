//! [`Method`] (request methods) and [`CSeq`] (RFC 3261 §20.16).
//!
//! Methods are case-sensitive (RFC 3261 §7.1): `invite` is an unknown method, not INVITE.
//! Unknown methods are [`Method::Other`]; their bytes stay available through
//! `SipMessage::method_raw`.

use super::scan::{is_token, parse_u32, trim_lws, Cursor};

/// A request method.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // the variant names are the methods
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Options,
    Register,
    Refer,
    Notify,
    Subscribe,
    Update,
    Info,
    Prack,
    Message,
    Publish,
    /// Any other (extension) method.
    Other,
}

impl Method {
    /// Maps method bytes (exact, case-sensitive) to a `Method`.
    #[must_use]
    pub fn from_bytes(raw: &[u8]) -> Self {
        match raw {
            b"INVITE" => Self::Invite,
            b"ACK" => Self::Ack,
            b"BYE" => Self::Bye,
            b"CANCEL" => Self::Cancel,
            b"OPTIONS" => Self::Options,
            b"REGISTER" => Self::Register,
            b"REFER" => Self::Refer,
            b"NOTIFY" => Self::Notify,
            b"SUBSCRIBE" => Self::Subscribe,
            b"UPDATE" => Self::Update,
            b"INFO" => Self::Info,
            b"PRACK" => Self::Prack,
            b"MESSAGE" => Self::Message,
            b"PUBLISH" => Self::Publish,
            _ => Self::Other,
        }
    }

    /// The method name; `None` for [`Method::Other`].
    #[must_use]
    pub const fn as_str(self) -> Option<&'static str> {
        Some(match self {
            Self::Invite => "INVITE",
            Self::Ack => "ACK",
            Self::Bye => "BYE",
            Self::Cancel => "CANCEL",
            Self::Options => "OPTIONS",
            Self::Register => "REGISTER",
            Self::Refer => "REFER",
            Self::Notify => "NOTIFY",
            Self::Subscribe => "SUBSCRIBE",
            Self::Update => "UPDATE",
            Self::Info => "INFO",
            Self::Prack => "PRACK",
            Self::Message => "MESSAGE",
            Self::Publish => "PUBLISH",
            Self::Other => return None,
        })
    }
}

/// A parsed CSeq: sequence number and method bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    /// The sequence number (RFC 3261 requires < 2^31; any `u32` is accepted).
    pub seq: u32,
    /// The method as written (compare with `SipMessage::method_raw`).
    pub method: &'a [u8],
}

impl<'a> CSeq<'a> {
    /// Parses `1*DIGIT LWS Method`. `None` if the number is missing, not decimal, or does not
    /// fit `u32` (RFC 4475 §3.1.2.4), or the method is not a token.
    #[must_use]
    pub fn parse(raw: &'a [u8]) -> Option<Self> {
        let mut c = Cursor::new(trim_lws(raw));
        let seq = parse_u32(c.take_while(|b| b.is_ascii_digit()))?;
        if !c.skip_lws() {
            return None;
        }
        let method = c.rest();
        is_token(method).then_some(Self { seq, method })
    }

    /// The method as a [`Method`].
    #[must_use]
    pub fn method_kind(&self) -> Method {
        Method::from_bytes(self.method)
    }
}

#[cfg(test)]
mod tests {
    use super::{CSeq, Method};

    #[test]
    fn methods_round_trip_and_are_case_sensitive() {
        for m in [
            "INVITE",
            "ACK",
            "BYE",
            "CANCEL",
            "OPTIONS",
            "REGISTER",
            "REFER",
            "NOTIFY",
            "SUBSCRIBE",
            "UPDATE",
            "INFO",
            "PRACK",
            "MESSAGE",
            "PUBLISH",
        ] {
            assert_eq!(Method::from_bytes(m.as_bytes()).as_str(), Some(m));
        }
        assert_eq!(Method::from_bytes(b"invite"), Method::Other);
        assert_eq!(Method::from_bytes(b"RE%47IST%45R"), Method::Other);
        assert_eq!(Method::Other.as_str(), None);
    }

    #[test]
    fn cseq_parses_with_folding_and_rejects_overflow() {
        assert_eq!(
            CSeq::parse(b"0009\r\n  INVITE"),
            Some(CSeq {
                seq: 9,
                method: b"INVITE"
            })
        );
        assert_eq!(
            CSeq::parse(b"4294967295 BYE").map(|c| c.seq),
            Some(u32::MAX)
        );
        let bad: &[&[u8]] = &[
            b"36893488147419103232 REGISTER",
            b"4294967296 BYE",
            b"INVITE",
            b"1",
            b"1INVITE",
            b"-1 INVITE",
            b"1 INVITE x",
            b"",
            b"1 IN\xffVITE",
        ];
        for raw in bad {
            assert_eq!(CSeq::parse(raw), None, "{}", String::from_utf8_lossy(raw));
        }
        assert_eq!(
            CSeq::parse(b"1 ACK").map(|c| c.method_kind()),
            Some(Method::Ack)
        );
    }
}
