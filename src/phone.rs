//! Phone numbers: normalisation to E.164 digits (without `+`), held as a `u64`. A basic type
//! below `settings` that every layer may use; it depends on nothing else in the crate.
//!
//! Rules, in order: cut an extension suffix (`;ext=`, `ext`, `доб`, `x`, `#`, `,`, `p`, `w`);
//! drop visual separators (spaces, `-`, `.`, `(`, `)`, `/`); strip `+`, the international
//! prefixes `00` and Russian `810`; then Russian national forms: `8XXXXXXXXXX` -> `7XXXXXXXXXX`,
//! a bare 10-digit number -> `7` + it. A SIP URI (`sip:+7...@host;user=phone`) is reduced to its
//! user part first. Anything left that is not 11-15 digits (or 7-10 digits in other plans) is not a
//! customer number: extensions and garbage give `None`.
//!
//! [`is_internal_number`] tells feature codes and short internal numbers from customers (the
//! portal's `internal_max_digits`).

use std::fmt;

/// A normalised number: E.164 digits without the `+`. Fits in a `u64` (at most 15 digits; E.164
/// numbers never start with 0, so no leading zero is lost).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Number(u64);

impl Number {
    /// The digits as an integer.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// From an integer already normalised (snapshots).
    pub fn from_u64(v: u64) -> Option<Self> {
        (1_000_000..1_000_000_000_000_000).contains(&v).then_some(Self(v))
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A customer number as the call tracker compares it: E.164 digits when `raw` normalises, else
/// as written. Every signalling source (redirect listener, proxy) reports numbers through this,
/// so a routing decision and the call's legs match.
pub fn customer_text(raw: &[u8]) -> std::sync::Arc<str> {
    number_text(normalize_bytes(raw), raw)
}

/// [`customer_text`] for a caller already normalised to `number` (`None`: it did not normalise).
pub fn number_text(number: Option<Number>, raw: &[u8]) -> std::sync::Arc<str> {
    match number {
        // u64's own ToString, not Display through the formatter: this runs per routing decision.
        Some(n) => {
            // Written into a stack buffer, then one allocation for the Arc (no String first).
            let mut digits = [0u8; 20];
            let mut at = digits.len();
            let mut rest = n.as_u64();
            while let Some(slot) = at.checked_sub(1).and_then(|i| digits.get_mut(i)) {
                *slot = b'0' + (rest % 10) as u8;
                at -= 1;
                rest /= 10;
                if rest == 0 {
                    break;
                }
            }
            std::sync::Arc::from(std::str::from_utf8(digits.get(at..).unwrap_or_default()).unwrap_or_default())
        }
        None => std::sync::Arc::from(String::from_utf8_lossy(raw).as_ref()),
    }
}

/// Normalises text (or raw bytes from a SIP header) to a [`Number`].
pub fn normalize_number(input: &str) -> Option<Number> {
    normalize_bytes(input.as_bytes())
}

/// Byte version of [`normalize_number`]; allocation-free (the SIP hot path calls it).
pub fn normalize_bytes(input: &[u8]) -> Option<Number> {
    let user = sip_user_part(input);
    let mut digits = [0u8; 20];
    let mut n = 0usize;
    let mut i = 0usize;
    while i < user.len() {
        let b = user[i];
        match b {
            b'0'..=b'9' => {
                if n == digits.len() {
                    return None;
                }
                digits[n] = b - b'0';
                n += 1;
            }
            b' ' | b'-' | b'.' | b'(' | b')' | b'/' | b'\t' => {}
            b'+' if i == 0 => {}
            _ if is_extension_start(&user[i..]) => break,
            _ => return None,
        }
        i += 1;
    }
    let d = strip_prefixes(&digits[..n]);
    to_number(d)
}

/// `sip:+7916...@host;user=phone` -> `+7916...`; `tel:+7...;ext=1` -> `+7...;ext=1`.
fn sip_user_part(input: &[u8]) -> &[u8] {
    let s = trim(input);
    let s = s.strip_prefix(b"<").unwrap_or(s);
    let rest = if let Some(r) = strip_ci(s, b"sips:").or_else(|| strip_ci(s, b"sip:")) {
        let end = memchr::memchr(b'@', r).unwrap_or(r.len());
        &r[..end]
    } else if let Some(r) = strip_ci(s, b"tel:") {
        let end = memchr::memchr(b'>', r).unwrap_or(r.len());
        &r[..end]
    } else {
        s
    };
    trim(rest)
}

fn is_extension_start(s: &[u8]) -> bool {
    const MARKS: [&[u8]; 8] = [b";", b"#", b",", b"x", b"ext", b"p", b"w", "доб".as_bytes()];
    MARKS.iter().any(|m| s.len() >= m.len() && s[..m.len()].eq_ignore_ascii_case(m))
        || s.first().is_some_and(|&b| b == b'X' || b == b'P' || b == b'W')
}

fn strip_prefixes(d: &[u8]) -> &[u8] {
    if d.len() > 12 && d.starts_with(&[8, 1, 0]) {
        &d[3..]
    } else if d.len() > 10 && d.starts_with(&[0, 0]) {
        &d[2..]
    } else {
        d
    }
}

fn to_number(d: &[u8]) -> Option<Number> {
    let value = |digits: &[u8]| digits.iter().fold(0u64, |acc, &x| acc * 10 + u64::from(x));
    match d.len() {
        // Russian trunk prefix 8 -> country code 7.
        11 if d[0] == 8 => Some(Number(7 * 10_000_000_000 + value(&d[1..]))),
        // A bare Russian national number (3-digit code + 7 digits).
        10 if d[0] != 0 => Some(Number(7 * 10_000_000_000 + value(d))),
        7..=15 if d[0] != 0 => Some(Number(value(d))),
        _ => None,
    }
}

/// A number that is not a customer's, whatever the portal's mappings say: a **feature code**
/// (starts with `*` or `#`; in a SIP URI `#` arrives escaped as `%23`, e.g. `*97` voicemail,
/// `#31#`) or a **short internal number** of 1 to `max_digits` digits (an extension callgate has
/// no mapping for, a queue, an IVR, a service number such as 112). Calls with such a number on
/// the far end are internal: nothing about them goes to Bitrix24, so no lead is created for them.
pub fn is_internal_number(raw: &str, max_digits: u8) -> bool {
    let s = raw.trim();
    let feature = s.starts_with(['*', '#']) || s.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("%23") || p.eq_ignore_ascii_case("%2a"));
    let short = !s.is_empty() && s.len() <= usize::from(max_digits) && s.bytes().all(|b| b.is_ascii_digit());
    feature || short
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &s[start..end]
}

fn strip_ci<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)).then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, Option<u64>)] = &[
            ("79161234567", Some(79_161_234_567)),
            ("+79161234567", Some(79_161_234_567)),
            ("89161234567", Some(79_161_234_567)),
            ("+7 (916) 123-45-67", Some(79_161_234_567)),
            ("8 (916) 123 45 67", Some(79_161_234_567)),
            ("8-916-123-45-67", Some(79_161_234_567)),
            ("9161234567", Some(79_161_234_567)),
            ("(495) 123-45-67", Some(74_951_234_567)),
            ("+7 495 123-45-67 доб. 123", Some(74_951_234_567)),
            ("+7 495 123-45-67 ext 12", Some(74_951_234_567)),
            ("+74951234567;ext=55", Some(74_951_234_567)),
            ("+74951234567#55", Some(74_951_234_567)),
            ("+74951234567,,55", Some(74_951_234_567)),
            ("+7 495 1234567 x55", Some(74_951_234_567)),
            ("0079161234567", Some(79_161_234_567)),
            ("81049301234567", Some(49_301_234_567)),
            ("+44 20 7946 0958", Some(442_079_460_958)),
            ("+1 (212) 555-0100", Some(12_125_550_100)),
            ("sip:+79161234567@pbx.example.com;user=phone", Some(79_161_234_567)),
            ("<sip:89161234567@10.0.0.1:5060>", Some(79_161_234_567)),
            ("tel:+7-916-123-45-67", Some(79_161_234_567)),
            ("  +79161234567  ", Some(79_161_234_567)),
            ("101", None),
            ("", None),
            ("anonymous", None),
            ("sip:anonymous@anonymous.invalid", None),
            ("+7916abc4567", None),
            ("0123456789", None),
            ("1234567890123456789", None),
            ("++79161234567", None),
            ("7+9161234567", None),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_number(input).map(Number::as_u64), *want, "{input}");
        }
    }

    #[test]
    fn feature_codes_and_short_numbers_are_internal_customer_numbers_are_not() {
        for internal in ["*97", "*", "#31#", "%2331%23", "%2A97", "101", "1001", " 112 ", "0"] {
            assert!(is_internal_number(internal, 4), "{internal}");
        }
        for customer in ["79161234567", "+7 916 123-45-67", "10001", "4951234", "anonymous", "", "+101", "101a"] {
            assert!(!is_internal_number(customer, 4), "{customer}");
        }
        assert!(is_internal_number("10001", 5), "the portal may allow longer extensions");
        assert!(!is_internal_number("101", 0), "0: only feature codes");
        assert!(is_internal_number("*97", 0));
    }

    #[test]
    fn bytes_with_non_utf8_do_not_panic() {
        assert_eq!(normalize_bytes(b"\xff\xfe79161234567"), None);
        assert_eq!(normalize_bytes(b"79161234567\xff").map(Number::as_u64), None);
    }
}
