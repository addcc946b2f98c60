//! Header names: the [`HeaderName`] enum and the canonicalisation of wire names onto it.
//!
//! Role: turn whatever a peer wrote (`Via`, `VIA`, `v`, `Call-ID`, `i`) into one enum value so
//! the rest of the core compares small integers, never strings. Compact forms follow RFC 3261
//! §7.3.3 and the RFCs that registered the others (RFC 3265 `o`/`u`, RFC 3515 `r`, RFC 3892 `b`,
//! RFC 4028 `x`, RFC 3841 `a`/`j`/`d`, RFC 4474 `y`/`n`, RFC 3261 `c`/`e`/`k`/`s`).
//!
//! Invariants: lookups never allocate (names are lower-cased into a stack buffer) and never
//! panic; a name longer than any known one is simply [`HeaderName::Other`].

/// A known SIP header, or [`HeaderName::Other`] for any other (look those up by string with
/// `SipMessage::header_by_name`). Compact forms map onto the full name.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(missing_docs)] // the variant names are the header names
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    MaxForwards,
    ContentLength,
    ContentType,
    Route,
    RecordRoute,
    Supported,
    Require,
    Event,
    ReferTo,
    ReferredBy,
    Replaces,
    Subject,
    Allow,
    Expires,
    UserAgent,
    PAssertedIdentity,
    Diversion,
    HistoryInfo,
    Reason,
    Path,
    Authorization,
    WwwAuthenticate,
    ProxyAuthorization,
    ProxyAuthenticate,
    // Beyond the first list: every header with a compact form, plus a few common ones.
    ContentEncoding,
    ContentDisposition,
    AllowEvents,
    SessionExpires,
    MinSe,
    Identity,
    IdentityInfo,
    AcceptContact,
    RejectContact,
    RequestDisposition,
    Accept,
    Date,
    ProxyRequire,
    Unsupported,
    PPreferredIdentity,
    Privacy,
    RSeq,
    RAck,
    Server,
    Warning,
    RetryAfter,
    /// Any header not listed above.
    Other,
}

/// Known full names (lower case), grouped by length: `BY_LENGTH[n]` holds the names of n bytes.
#[rustfmt::skip]
const BY_LENGTH: [&[(&[u8], HeaderName)]; 21] = {
    use HeaderName::*;
    [
        &[],
        &[], // 1: compact forms, see `from_compact`
        &[(b"to", To)],
        &[(b"via", Via)],
        &[(b"from", From), (b"cseq", CSeq), (b"path", Path), (b"date", Date), (b"rseq", RSeq),
          (b"rack", RAck)],
        &[(b"route", Route), (b"allow", Allow), (b"event", Event)],
        &[(b"reason", Reason), (b"accept", Accept), (b"server", Server), (b"min-se", MinSe)],
        &[(b"contact", Contact), (b"call-id", CallId), (b"require", Require), (b"subject", Subject),
          (b"expires", Expires), (b"warning", Warning), (b"privacy", Privacy)],
        &[(b"refer-to", ReferTo), (b"replaces", Replaces), (b"identity", Identity)],
        &[(b"supported", Supported), (b"diversion", Diversion)],
        &[(b"user-agent", UserAgent)],
        &[(b"referred-by", ReferredBy), (b"retry-after", RetryAfter), (b"unsupported", Unsupported)],
        &[(b"max-forwards", MaxForwards), (b"content-type", ContentType),
          (b"record-route", RecordRoute), (b"history-info", HistoryInfo),
          (b"allow-events", AllowEvents)],
        &[(b"authorization", Authorization), (b"proxy-require", ProxyRequire),
          (b"identity-info", IdentityInfo)],
        &[(b"content-length", ContentLength), (b"accept-contact", AcceptContact),
          (b"reject-contact", RejectContact)],
        &[(b"session-expires", SessionExpires)],
        &[(b"www-authenticate", WwwAuthenticate), (b"content-encoding", ContentEncoding)],
        &[],
        &[(b"proxy-authenticate", ProxyAuthenticate)],
        &[(b"p-asserted-identity", PAssertedIdentity), (b"proxy-authorization", ProxyAuthorization),
          (b"content-disposition", ContentDisposition),
          (b"request-disposition", RequestDisposition)],
        &[(b"p-preferred-identity", PPreferredIdentity)],
    ]
};

/// `name` equals `lower` (a known name, lower case, same length) ignoring ASCII case: eight
/// bytes at a time, lower-casing only the letters of `name`.
fn eq_lower(name: &[u8], lower: &[u8]) -> bool {
    let len = name.len();
    if len != lower.len() {
        return false;
    }
    // Words at `at`, the last one overlapping the one before when the length is not a multiple
    // of the word size (names are 2 to 20 bytes).
    let same = |at: usize, wide: bool| {
        let (x, y) = if wide {
            (word8(name, at), word8(lower, at))
        } else {
            (word4(name, at), word4(lower, at))
        };
        swar_lower(x) == y
    };
    match len {
        0..4 => name
            .iter()
            .zip(lower)
            .all(|(x, y)| x.to_ascii_lowercase() == *y),
        // The arms guarantee len >= 4 and len >= 8: the subtractions never saturate.
        4..8 => same(0, false) && same(len.saturating_sub(4), false),
        _ => {
            let last = len.saturating_sub(8);
            (0..last).step_by(8).all(|at| same(at, true)) && same(last, true)
        }
    }
}

/// Eight bytes of `s` from `at` as a little-endian word (0 past the end: never for callers).
fn word8(s: &[u8], at: usize) -> u64 {
    s.get(at..)
        .and_then(<[u8]>::first_chunk::<8>)
        .map_or(0, |w| u64::from_le_bytes(*w))
}

/// Four bytes of `s` from `at`, zero-extended (see [`word8`]).
fn word4(s: &[u8], at: usize) -> u64 {
    s.get(at..)
        .and_then(<[u8]>::first_chunk::<4>)
        .map_or(0, |w| u64::from(u32::from_le_bytes(*w)))
}

/// ASCII lower-casing of eight bytes at once (bytes >= 0x80 and non-letters unchanged).
const fn swar_lower(x: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low = x & LOW7;
    // High bit of each byte: at least b'A' (0x41), resp. above b'Z' (0x5a); no carries cross
    // bytes since each 7-bit value plus the constant stays below 0x100.
    let ge_a = low.wrapping_add(0x3f3f_3f3f_3f3f_3f3f);
    let gt_z = low.wrapping_add(0x2525_2525_2525_2525);
    let upper = ge_a & !gt_z & !x & HIGH;
    x | (upper >> 2)
}

impl HeaderName {
    /// Number of variants, `Other` included (sizes per-name lookup tables).
    pub const COUNT: usize = Self::Other as usize + 1;

    /// Maps a wire name (any case, full or compact form) to a `HeaderName`.
    /// The caller passes the name already trimmed (`Via ` in `Via : x` is trimmed by the parser).
    #[must_use]
    pub fn from_bytes(name: &[u8]) -> Self {
        if name.len() == 1 {
            return Self::from_compact(name.first().map_or(0, u8::to_ascii_lowercase));
        }
        // A handful of same-length candidates, compared in place: no copy, no lower-casing
        // pass (this runs once per header line of every message). The first and last letters
        // tell the candidates of one length apart, so at most one full comparison is made.
        let (Some(group), Some(&first), Some(&last)) =
            (BY_LENGTH.get(name.len()), name.first(), name.last())
        else {
            return Self::Other;
        };
        let (first, last) = (first.to_ascii_lowercase(), last.to_ascii_lowercase());
        group
            .iter()
            .find(|(known, _)| {
                known.first() == Some(&first)
                    && known.last() == Some(&last)
                    && eq_lower(name, known)
            })
            .map_or(Self::Other, |&(_, header)| header)
    }

    /// Compact forms (lower-case letter).
    const fn from_compact(letter: u8) -> Self {
        match letter {
            b'v' => Self::Via,
            b'f' => Self::From,
            b't' => Self::To,
            b'i' => Self::CallId,
            b'm' => Self::Contact,
            b'l' => Self::ContentLength,
            b'c' => Self::ContentType,
            b'k' => Self::Supported,
            b's' => Self::Subject,
            b'e' => Self::ContentEncoding,
            b'o' => Self::Event,
            b'r' => Self::ReferTo,
            b'b' => Self::ReferredBy,
            b'u' => Self::AllowEvents,
            b'x' => Self::SessionExpires,
            b'y' => Self::Identity,
            b'n' => Self::IdentityInfo,
            b'a' => Self::AcceptContact,
            b'j' => Self::RejectContact,
            b'd' => Self::RequestDisposition,
            _ => Self::Other,
        }
    }

    /// The canonical full name as written by callgate (`Call-ID`, `WWW-Authenticate`);
    /// `""` for [`HeaderName::Other`].
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Via => "Via",
            Self::From => "From",
            Self::To => "To",
            Self::CallId => "Call-ID",
            Self::CSeq => "CSeq",
            Self::Contact => "Contact",
            Self::MaxForwards => "Max-Forwards",
            Self::ContentLength => "Content-Length",
            Self::ContentType => "Content-Type",
            Self::Route => "Route",
            Self::RecordRoute => "Record-Route",
            Self::Supported => "Supported",
            Self::Require => "Require",
            Self::Event => "Event",
            Self::ReferTo => "Refer-To",
            Self::ReferredBy => "Referred-By",
            Self::Replaces => "Replaces",
            Self::Subject => "Subject",
            Self::Allow => "Allow",
            Self::Expires => "Expires",
            Self::UserAgent => "User-Agent",
            Self::PAssertedIdentity => "P-Asserted-Identity",
            Self::Diversion => "Diversion",
            Self::HistoryInfo => "History-Info",
            Self::Reason => "Reason",
            Self::Path => "Path",
            Self::Authorization => "Authorization",
            Self::WwwAuthenticate => "WWW-Authenticate",
            Self::ProxyAuthorization => "Proxy-Authorization",
            Self::ProxyAuthenticate => "Proxy-Authenticate",
            _ => self.as_str_rare(),
        }
    }

    const fn as_str_rare(self) -> &'static str {
        match self {
            Self::ContentEncoding => "Content-Encoding",
            Self::ContentDisposition => "Content-Disposition",
            Self::AllowEvents => "Allow-Events",
            Self::SessionExpires => "Session-Expires",
            Self::MinSe => "Min-SE",
            Self::Identity => "Identity",
            Self::IdentityInfo => "Identity-Info",
            Self::AcceptContact => "Accept-Contact",
            Self::RejectContact => "Reject-Contact",
            Self::RequestDisposition => "Request-Disposition",
            Self::Accept => "Accept",
            Self::Date => "Date",
            Self::ProxyRequire => "Proxy-Require",
            Self::Unsupported => "Unsupported",
            Self::PPreferredIdentity => "P-Preferred-Identity",
            Self::Privacy => "Privacy",
            Self::RSeq => "RSeq",
            Self::RAck => "RAck",
            Self::Server => "Server",
            Self::Warning => "Warning",
            Self::RetryAfter => "Retry-After",
            _ => "",
        }
    }

    /// The compact form, if the header has one (`Via` -> `v`).
    #[must_use]
    pub const fn compact(self) -> Option<u8> {
        Some(match self {
            Self::Via => b'v',
            Self::From => b'f',
            Self::To => b't',
            Self::CallId => b'i',
            Self::Contact => b'm',
            Self::ContentLength => b'l',
            Self::ContentType => b'c',
            Self::Supported => b'k',
            Self::Subject => b's',
            Self::ContentEncoding => b'e',
            Self::Event => b'o',
            Self::ReferTo => b'r',
            Self::ReferredBy => b'b',
            Self::AllowEvents => b'u',
            Self::SessionExpires => b'x',
            Self::Identity => b'y',
            Self::IdentityInfo => b'n',
            Self::AcceptContact => b'a',
            Self::RejectContact => b'j',
            Self::RequestDisposition => b'd',
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::HeaderName::{self, *};

    #[test]
    fn every_compact_form_maps_to_its_full_name() {
        let table: &[(&[u8], HeaderName)] = &[
            (b"v", Via),
            (b"i", CallId),
            (b"f", From),
            (b"t", To),
            (b"m", Contact),
            (b"l", ContentLength),
            (b"c", ContentType),
            (b"k", Supported),
            (b"s", Subject),
            (b"e", ContentEncoding),
            (b"o", Event),
            (b"r", ReferTo),
            (b"b", ReferredBy),
            (b"u", AllowEvents),
            (b"x", SessionExpires),
            (b"y", Identity),
            (b"n", IdentityInfo),
            (b"a", AcceptContact),
            (b"j", RejectContact),
            (b"d", RequestDisposition),
        ];
        for (compact, name) in table {
            assert_eq!(HeaderName::from_bytes(compact), *name);
            assert_eq!(HeaderName::from_bytes(&compact.to_ascii_uppercase()), *name);
            assert_eq!(name.compact(), Some(compact[0]));
            assert_eq!(HeaderName::from_bytes(name.as_str().as_bytes()), *name);
        }
    }

    #[test]
    fn full_names_are_case_insensitive_and_round_trip() {
        for i in 0..HeaderName::COUNT {
            let name = all()[i];
            assert_eq!(name as usize, i, "all() must list variants in order");
            if name == Other {
                continue;
            }
            let s = name.as_str();
            assert!(!s.is_empty());
            assert_eq!(
                HeaderName::from_bytes(s.to_ascii_uppercase().as_bytes()),
                name,
                "{s}"
            );
            assert_eq!(
                HeaderName::from_bytes(s.to_ascii_lowercase().as_bytes()),
                name,
                "{s}"
            );
        }
        assert_eq!(HeaderName::from_bytes(b"MaX-fOrWaRdS"), MaxForwards);
    }

    #[test]
    fn length_table_is_consistent() {
        for (len, group) in super::BY_LENGTH.iter().enumerate() {
            for (name, header) in group.iter() {
                assert_eq!(name.len(), len);
                assert_eq!(*name, header.as_str().to_ascii_lowercase().as_bytes());
            }
        }
    }

    #[test]
    fn eight_byte_lower_casing_touches_only_letters() {
        for b in 0..=255u8 {
            let x = u64::from_le_bytes([b, b'A', b'z', b'@', b'[', 0xc1, b'-', b'Z']);
            let want = u64::from_le_bytes([
                b.to_ascii_lowercase(),
                b'a',
                b'z',
                b'@',
                b'[',
                0xc1,
                b'-',
                b'z',
            ]);
            assert_eq!(super::swar_lower(x), want, "{b:#x}");
        }
        assert_eq!(HeaderName::from_bytes(b"CONTENT-LENGTH"), ContentLength);
        assert_eq!(HeaderName::from_bytes(b"Content-Lengtx"), Other);
        assert_eq!(HeaderName::from_bytes(b"Content\rLength"), Other);
        assert_eq!(HeaderName::from_bytes(b"Content\xadLength"), Other);
    }

    #[test]
    fn unknown_empty_and_long_names_are_other() {
        assert_eq!(HeaderName::from_bytes(b"X-Call-Id"), Other);
        assert_eq!(HeaderName::from_bytes(b"C%6Fntact"), Other);
        assert_eq!(HeaderName::from_bytes(b""), Other);
        assert_eq!(HeaderName::from_bytes(&[b'a'; 300]), Other);
        assert_eq!(HeaderName::from_bytes(b"\xff\xfe"), Other);
        assert_eq!(Other.as_str(), "");
        assert_eq!(Other.compact(), None);
    }

    /// Every variant, in discriminant order (keeps the round-trip test exhaustive).
    fn all() -> [HeaderName; HeaderName::COUNT] {
        [
            Via,
            From,
            To,
            CallId,
            CSeq,
            Contact,
            MaxForwards,
            ContentLength,
            ContentType,
            Route,
            RecordRoute,
            Supported,
            Require,
            Event,
            ReferTo,
            ReferredBy,
            Replaces,
            Subject,
            Allow,
            Expires,
            UserAgent,
            PAssertedIdentity,
            Diversion,
            HistoryInfo,
            Reason,
            Path,
            Authorization,
            WwwAuthenticate,
            ProxyAuthorization,
            ProxyAuthenticate,
            ContentEncoding,
            ContentDisposition,
            AllowEvents,
            SessionExpires,
            MinSe,
            Identity,
            IdentityInfo,
            AcceptContact,
            RejectContact,
            RequestDisposition,
            Accept,
            Date,
            ProxyRequire,
            Unsupported,
            PPreferredIdentity,
            Privacy,
            RSeq,
            RAck,
            Server,
            Warning,
            RetryAfter,
            Other,
        ]
    }
}
