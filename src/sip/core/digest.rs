//! HTTP Digest authentication as SIP uses it (RFC 3261 §22.4, RFC 2617, RFC 8760 for MD5), sans
//! I/O: parse `Authorization` / `WWW-Authenticate` values, write them, compute and check the MD5
//! response, and mint and verify nonces without keeping any state.
//!
//! Only `algorithm=MD5` with `qop=auth` (or no qop, RFC 2069) is supported: it is what JsSIP and
//! SIP.js send and what PBXs ask for. SHA-256 (RFC 8760) can follow behind the same types.
//!
//! Nonces are `hex(issued_at) || hex(salt) || hex(HMAC-MD5(key, issued_at || salt || realm))`:
//! whoever holds the per-process key can tell a nonce it minted from a forged one and how old it
//! is, with no table of outstanding nonces. The caller's salt (random) keeps two challenges in
//! the same second apart, so per-nonce `nc` counting works. Time is a parameter (`now_secs`, seconds on any clock the caller keeps
//! steady), never read here. Replay protection (one `nc` per nonce) needs state and belongs to
//! the caller (the registrar).
//!
//! Secrets: an HA1 is as good as the password for this realm, so [`HexDigest`] never prints its
//! value in `Debug`, and comparisons run in constant time.

use md5::{Digest as _, Md5};

/// The only algorithm offered and accepted.
pub const ALGORITHM: &str = "MD5";

/// An MD5 digest as 32 lowercase hex digits (HA1, HA2, a response).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HexDigest([u8; 32]);

impl HexDigest {
    /// MD5 over `parts` joined with `:` (how RFC 2617 composes every digest).
    #[must_use]
    pub fn of(parts: &[&[u8]]) -> Self {
        let mut h = Md5::new();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                h.update(b":");
            }
            h.update(part);
        }
        let raw: [u8; 16] = h.finalize().into();
        Self(hex32(&raw))
    }

    /// 32 hex digits (either case) as a digest; `None` otherwise.
    #[must_use]
    pub fn parse(text: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = text.try_into().ok()?;
        arr.iter().all(u8::is_ascii_hexdigit).then(|| Self(arr.map(|b| b.to_ascii_lowercase())))
    }

    /// The hex digits.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The hex digits as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// Constant-time equality (responses and HA1s are secrets to a timing attacker).
    #[must_use]
    pub fn ct_eq(&self, other: &Self) -> bool {
        ct_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for HexDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HexDigest(..)")
    }
}

/// HA1 = MD5(username:realm:password).
#[must_use]
pub fn ha1(username: &[u8], realm: &[u8], password: &[u8]) -> HexDigest {
    HexDigest::of(&[username, realm, password])
}

/// `qop=auth` inputs: the nonce count (8 hex digits as sent) and the client nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QopAuth<'a> {
    /// `nc`, e.g. `00000001`.
    pub nc: &'a [u8],
    /// `cnonce`.
    pub cnonce: &'a [u8],
}

/// The request digest: with `qop=auth`, MD5(HA1:nonce:nc:cnonce:auth:HA2); without,
/// MD5(HA1:nonce:HA2) (RFC 2069); HA2 = MD5(method:digest-uri).
#[must_use]
pub fn response(ha1: &HexDigest, nonce: &[u8], method: &[u8], uri: &[u8], qop: Option<QopAuth<'_>>) -> HexDigest {
    let ha2 = HexDigest::of(&[method, uri]);
    match qop {
        Some(q) => HexDigest::of(&[&ha1.0, nonce, q.nc, q.cnonce, b"auth", &ha2.0]),
        None => HexDigest::of(&[&ha1.0, nonce, &ha2.0]),
    }
}

/// A parsed `Authorization` (or `Proxy-Authorization`) value with the Digest scheme. Values
/// borrow from the header; quoted strings lose their quotes, escapes are kept as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials<'a> {
    /// `username`.
    pub username: &'a [u8],
    /// `realm`.
    pub realm: &'a [u8],
    /// `nonce`.
    pub nonce: &'a [u8],
    /// `uri` (the digest-uri; RFC 3261 wants it equal to the Request-URI).
    pub uri: &'a [u8],
    /// `response`.
    pub response: &'a [u8],
    /// `algorithm`, if given (absent means MD5).
    pub algorithm: Option<&'a [u8]>,
    /// `qop`, if given.
    pub qop: Option<&'a [u8]>,
    /// `nc`, if given.
    pub nc: Option<&'a [u8]>,
    /// `cnonce`, if given.
    pub cnonce: Option<&'a [u8]>,
    /// `opaque`, if given.
    pub opaque: Option<&'a [u8]>,
}

/// Why [`Credentials::verify`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    /// An algorithm other than MD5.
    Algorithm,
    /// A qop other than `auth`, or `qop=auth` without `nc`/`cnonce`, or `nc` not 8 hex digits.
    Qop,
    /// The response is not what the password gives.
    Mismatch,
}

impl<'a> Credentials<'a> {
    /// Parses a `Digest ...` value; `None` for another scheme, broken syntax, or when
    /// `username`, `realm`, `nonce`, `uri` or `response` is missing.
    #[must_use]
    pub fn parse(value: &'a [u8]) -> Option<Self> {
        const NAMES: [&[u8]; 10] = [b"username", b"realm", b"nonce", b"uri", b"response", b"algorithm", b"qop", b"nc", b"cnonce", b"opaque"];
        let [username, realm, nonce, uri, response, algorithm, qop, nc, cnonce, opaque] = named(value, NAMES)?;
        Some(Self { username: username?, realm: realm?, nonce: nonce?, uri: uri?, response: response?, algorithm, qop, nc, cnonce, opaque })
    }

    /// The nonce count as a number (`qop=auth` only).
    #[must_use]
    pub fn nc_value(&self) -> Option<u32> {
        let nc = self.nc?;
        if nc.len() != 8 {
            return None;
        }
        u32::from_str_radix(std::str::from_utf8(nc).ok()?, 16).ok()
    }

    /// Checks the response against `ha1` for a request with `method` (the digest-uri is the
    /// one in the header; compare it to the Request-URI separately).
    ///
    /// # Errors
    /// See [`VerifyError`].
    pub fn verify(&self, method: &[u8], ha1: &HexDigest) -> Result<(), VerifyError> {
        if self.algorithm.is_some_and(|a| !a.eq_ignore_ascii_case(ALGORITHM.as_bytes())) {
            return Err(VerifyError::Algorithm);
        }
        let qop = match self.qop {
            None => None,
            Some(q) if q.eq_ignore_ascii_case(b"auth") => {
                let (Some(nc), Some(cnonce), Some(_)) = (self.nc, self.cnonce, self.nc_value()) else { return Err(VerifyError::Qop) };
                Some(QopAuth { nc, cnonce })
            }
            Some(_) => return Err(VerifyError::Qop),
        };
        let expected = response(ha1, self.nonce, method, self.uri, qop);
        let given = HexDigest::parse(self.response).ok_or(VerifyError::Mismatch)?;
        if expected.ct_eq(&given) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}

/// Writes an `Authorization` value answering a challenge (a UAC's side: tests, and callgate
/// authenticating toward a PBX later). `qop` is used when the challenge offered `auth`.
#[must_use]
pub fn authorization(username: &str, realm: &str, nonce: &str, uri: &str, method: &str, password: &str, qop: Option<(u32, &str)>) -> String {
    let ha1 = ha1(username.as_bytes(), realm.as_bytes(), password.as_bytes());
    let nc = qop.map(|(n, cnonce)| (format!("{n:08x}"), cnonce));
    let resp =
        response(&ha1, nonce.as_bytes(), method.as_bytes(), uri.as_bytes(), nc.as_ref().map(|(nc, c)| QopAuth { nc: nc.as_bytes(), cnonce: c.as_bytes() }));
    let mut out =
        format!("Digest username=\"{username}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{}\", algorithm={ALGORITHM}", resp.as_str());
    if let Some((nc, cnonce)) = nc {
        out.push_str(&format!(", cnonce=\"{cnonce}\", qop=auth, nc={nc}"));
    }
    out
}

/// A parsed `WWW-Authenticate` (or `Proxy-Authenticate`) value with the Digest scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Challenge<'a> {
    /// `realm`.
    pub realm: &'a [u8],
    /// `nonce`.
    pub nonce: &'a [u8],
    /// `opaque`, if given.
    pub opaque: Option<&'a [u8]>,
    /// `algorithm`, if given.
    pub algorithm: Option<&'a [u8]>,
    /// `qop` options as sent (`auth`, `auth,auth-int`), if given.
    pub qop: Option<&'a [u8]>,
    /// `stale=true`: the nonce, not the password, was refused.
    pub stale: bool,
}

impl<'a> Challenge<'a> {
    /// Parses a `Digest ...` challenge; `None` for another scheme, broken syntax, or without
    /// `realm` and `nonce`.
    #[must_use]
    pub fn parse(value: &'a [u8]) -> Option<Self> {
        const NAMES: [&[u8]; 6] = [b"realm", b"nonce", b"opaque", b"algorithm", b"qop", b"stale"];
        let [realm, nonce, opaque, algorithm, qop, stale] = named(value, NAMES)?;
        let stale = stale.is_some_and(|v| v.eq_ignore_ascii_case(b"true"));
        Some(Self { realm: realm?, nonce: nonce?, opaque, algorithm, qop, stale })
    }

    /// Whether `qop=auth` is among the options.
    #[must_use]
    pub fn offers_auth(&self) -> bool {
        self.qop.is_some_and(|q| q.split(|&b| b == b',').any(|o| o.trim_ascii().eq_ignore_ascii_case(b"auth")))
    }
}

/// Writes the challenge callgate sends: `Digest realm="..", nonce="..", algorithm=MD5,
/// qop="auth"` and `, stale=true` when only the nonce was refused. `realm` must not hold `"`
/// or `\` (callers pass host names).
#[must_use]
pub fn challenge(realm: &str, nonce: &str, stale: bool) -> String {
    let stale = if stale { ", stale=true" } else { "" };
    format!("Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm={ALGORITHM}, qop=\"auth\"{stale}")
}

/// The values of the parameters `names` in a Digest credentials or challenge value (RFC 2617
/// §1.2 `auth-param`, comma separated, values quoted or tokens; names case-insensitive; a
/// repeated one keeps its last value; others ignored). `None` when the scheme is not Digest or
/// the syntax breaks. No allocation.
fn named<'a, const N: usize>(value: &'a [u8], names: [&[u8]; N]) -> Option<[Option<&'a [u8]>; N]> {
    let mut found = [None; N];
    let value = value.trim_ascii();
    let scheme_end = value.iter().position(|&b| b == b' ' || b == b'\t')?;
    let (scheme, mut rest) = value.split_at_checked(scheme_end)?;
    if !scheme.eq_ignore_ascii_case(b"Digest") {
        return None;
    }
    loop {
        rest = rest.trim_ascii_start();
        while let Some(r) = rest.strip_prefix(b",") {
            rest = r.trim_ascii_start();
        }
        if rest.is_empty() {
            return Some(found);
        }
        let eq = rest.iter().position(|&b| b == b'=')?;
        let (name, after) = rest.split_at_checked(eq)?;
        let name = name.trim_ascii();
        if name.is_empty() || !name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return None;
        }
        let after = after.get(1..)?.trim_ascii_start();
        let (v, tail) = if after.first() == Some(&b'"') { quoted(after)? } else { token(after) };
        if let Some(slot) = names.iter().position(|n| n.eq_ignore_ascii_case(name)).and_then(|i| found.get_mut(i)) {
            *slot = Some(v);
        }
        let tail = tail.trim_ascii_start();
        if !(tail.is_empty() || tail.first() == Some(&b',')) {
            return None;
        }
        rest = tail;
    }
}

/// `"..."` at the start of `s`: the content (escapes kept) and what follows the closing quote.
fn quoted(s: &[u8]) -> Option<(&[u8], &[u8])> {
    let body = s.strip_prefix(b"\"")?;
    let mut escaped = false;
    for (i, &b) in body.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            let (v, rest) = body.split_at_checked(i)?;
            return Some((v, rest.get(1..)?));
        }
    }
    None
}

/// An unquoted value: up to a comma or whitespace.
fn token(s: &[u8]) -> (&[u8], &[u8]) {
    let end = s.iter().position(|&b| b == b',' || b.is_ascii_whitespace()).unwrap_or(s.len());
    s.split_at_checked(end).unwrap_or((s, &[]))
}

/// What a nonce says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Minted by this key for this realm, at most the allowed age old.
    Fresh {
        /// When it was minted (`now_secs` of [`NonceKey::mint`]).
        issued_at: u64,
    },
    /// Minted by this key for this realm, but too old: answer `stale=true`.
    Stale,
    /// Not minted by this key for this realm (forged, from another process, or garbled).
    Invalid,
}

/// The per-process secret behind stateless nonces (HMAC-MD5, RFC 2104: MD5's collision
/// weakness does not make HMAC-MD5 forgeable, and MD5 is already what the digest uses).
pub struct NonceKey {
    ipad: [u8; 64],
    opad: [u8; 64],
}

impl std::fmt::Debug for NonceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NonceKey(..)")
    }
}

/// Hex digits of the timestamp in a nonce.
const TS_HEX: usize = 16;
/// Where the salt's hex digits end.
const SALT_END: usize = TS_HEX * 2;
/// Length of a nonce: timestamp + salt + MAC, in hex.
const NONCE_LEN: usize = SALT_END + 32;

impl NonceKey {
    /// A key from 32 secret random bytes.
    #[must_use]
    pub fn new(secret: &[u8; 32]) -> Self {
        let pad = |x: u8| std::array::from_fn(|i| secret.get(i).copied().unwrap_or(0) ^ x);
        Self { ipad: pad(0x36), opad: pad(0x5c) }
    }

    fn mac(&self, issued_at: u64, salt: u64, realm: &[u8]) -> [u8; 16] {
        let inner = Md5::new().chain_update(self.ipad).chain_update(issued_at.to_be_bytes()).chain_update(salt.to_be_bytes()).chain_update(realm).finalize();
        Md5::new().chain_update(self.opad).chain_update(inner).finalize().into()
    }

    /// A nonce for `realm` minted at `now_secs` (64 hex digits); `salt` should be random, so
    /// that nonces minted in the same second differ.
    #[must_use]
    pub fn mint(&self, realm: &[u8], now_secs: u64, salt: u64) -> String {
        let mut out = String::with_capacity(NONCE_LEN);
        out.push_str(std::str::from_utf8(&hex16(now_secs)).unwrap_or_default());
        out.push_str(std::str::from_utf8(&hex16(salt)).unwrap_or_default());
        out.push_str(std::str::from_utf8(&hex32(&self.mac(now_secs, salt, realm))).unwrap_or_default());
        out
    }

    /// Whether `nonce` was minted by this key for `realm`, and whether it is at most
    /// `max_age_secs` old at `now_secs`. A nonce from the future is invalid.
    #[must_use]
    pub fn check(&self, realm: &[u8], nonce: &[u8], now_secs: u64, max_age_secs: u64) -> NonceCheck {
        let (Some(ts), Some(salt), Some(mac)) = (nonce.get(..TS_HEX), nonce.get(TS_HEX..SALT_END), nonce.get(SALT_END..)) else { return NonceCheck::Invalid };
        if nonce.len() != NONCE_LEN {
            return NonceCheck::Invalid;
        }
        let hex = |t: &[u8]| std::str::from_utf8(t).ok().and_then(|t| u64::from_str_radix(t, 16).ok());
        let (Some(issued_at), Some(salt)) = (hex(ts), hex(salt)) else { return NonceCheck::Invalid };
        if !ct_eq(&hex32(&self.mac(issued_at, salt, realm)), &mac.to_ascii_lowercase()) || issued_at > now_secs {
            return NonceCheck::Invalid;
        }
        if now_secs.saturating_sub(issued_at) > max_age_secs {
            NonceCheck::Stale
        } else {
            NonceCheck::Fresh { issued_at }
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_digit(n: u8) -> u8 {
    HEX.get(usize::from(n & 0xf)).copied().unwrap_or(b'0')
}

fn hex32(raw: &[u8; 16]) -> [u8; 32] {
    std::array::from_fn(|i| {
        let b = raw.get(i / 2).copied().unwrap_or(0);
        hex_digit(if i % 2 == 0 { b >> 4 } else { b })
    })
}

fn hex16(n: u64) -> [u8; 16] {
    let bytes = n.to_be_bytes();
    std::array::from_fn(|i| {
        let b = bytes.get(i / 2).copied().unwrap_or(0);
        hex_digit(if i % 2 == 0 { b >> 4 } else { b })
    })
}

/// Equality in time that depends only on the lengths.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 §3.5: the Mufasa example (qop=auth, nc=00000001, cnonce 0a4f113b).
    #[test]
    fn rfc2617_example_vector() {
        let ha1 = ha1(b"Mufasa", b"testrealm@host.com", b"Circle Of Life");
        assert_eq!(ha1.as_str(), "939e7578ed9e3c518a452acee763bce9");
        let r = response(&ha1, b"dcd98b7102dd2f0e8b11d0f600bfb0c093", b"GET", b"/dir/index.html", Some(QopAuth { nc: b"00000001", cnonce: b"0a4f113b" }));
        assert_eq!(r.as_str(), "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn the_rfc2617_authorization_header_parses_and_verifies() {
        let value = br#"Digest username="Mufasa",
                 realm="testrealm@host.com",
                 nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
                 uri="/dir/index.html",
                 qop=auth,
                 nc=00000001,
                 cnonce="0a4f113b",
                 response="6629fae49393a05397450978507c4ef1",
                 opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
        let c = Credentials::parse(value).unwrap();
        assert_eq!(c.username, b"Mufasa");
        assert_eq!(c.uri, b"/dir/index.html");
        assert_eq!(c.nc_value(), Some(1));
        assert_eq!(c.opaque, Some(&b"5ccc069c403ebaf9f0171e9517f40e41"[..]));
        let good = ha1(b"Mufasa", b"testrealm@host.com", b"Circle Of Life");
        assert_eq!(c.verify(b"GET", &good), Ok(()));
        assert_eq!(c.verify(b"POST", &good), Err(VerifyError::Mismatch));
        let bad = ha1(b"Mufasa", b"testrealm@host.com", b"circle of life");
        assert_eq!(c.verify(b"GET", &bad), Err(VerifyError::Mismatch));
    }

    #[test]
    fn what_authorization_writes_verifies() {
        let v = authorization("101", "office.example", "abc", "sip:office.example", "REGISTER", "s3cret", Some((7, "xyz")));
        let c = Credentials::parse(v.as_bytes()).unwrap();
        assert_eq!((c.realm, c.nc, c.cnonce), (&b"office.example"[..], Some(&b"00000007"[..]), Some(&b"xyz"[..])));
        assert_eq!(c.verify(b"REGISTER", &ha1(b"101", b"office.example", b"s3cret")), Ok(()));
        // RFC 2069 style (no qop) works too.
        let v = authorization("101", "office.example", "abc", "sip:office.example", "REGISTER", "s3cret", None);
        assert_eq!(Credentials::parse(v.as_bytes()).unwrap().verify(b"REGISTER", &ha1(b"101", b"office.example", b"s3cret")), Ok(()));
    }

    #[test]
    fn a_jssip_authorization_parses() {
        let v = br#"Digest algorithm=MD5, username="101", realm="office.bitrix24.ru", nonce="0000000000000001aa", uri="sip:office.bitrix24.ru", response="0123456789abcdef0123456789ABCDEF", qop=auth, cnonce="t4fm0ngn4bsk", nc=00000001"#;
        let c = Credentials::parse(v).unwrap();
        assert_eq!(c.algorithm, Some(&b"MD5"[..]));
        assert_eq!(c.cnonce, Some(&b"t4fm0ngn4bsk"[..]));
        assert!(HexDigest::parse(c.response).is_some());
    }

    #[test]
    fn odd_qop_and_algorithm_are_refused() {
        let base = authorization("a", "r", "n", "sip:r", "REGISTER", "p", Some((1, "c")));
        let h = ha1(b"a", b"r", b"p");
        let sha = base.replace("algorithm=MD5", "algorithm=SHA-256");
        assert_eq!(Credentials::parse(sha.as_bytes()).unwrap().verify(b"REGISTER", &h), Err(VerifyError::Algorithm));
        let int = base.replace("qop=auth", "qop=auth-int");
        assert_eq!(Credentials::parse(int.as_bytes()).unwrap().verify(b"REGISTER", &h), Err(VerifyError::Qop));
        let short_nc = base.replace("nc=00000001", "nc=1");
        assert_eq!(Credentials::parse(short_nc.as_bytes()).unwrap().verify(b"REGISTER", &h), Err(VerifyError::Qop));
    }

    #[test]
    fn broken_values_do_not_parse() {
        for v in [
            &b"Basic dXNlcjpwYXNz"[..],
            b"Digest",
            b"Digest username=\"a",
            b"Digest username=\"a\" realm=\"r\"",
            b"Digest =x",
            b"Digest username=\"a\", realm=\"r\", nonce=\"n\", uri=\"u\"",
        ] {
            assert!(Credentials::parse(v).is_none(), "{}", String::from_utf8_lossy(v));
        }
        assert!(Credentials::parse(b"Digest username=\"a\\\"b\", realm=r, nonce=n, uri=u, response=x").is_some());
    }

    #[test]
    fn our_challenge_parses_back() {
        let text = challenge("office.example", "abcd", true);
        let c = Challenge::parse(text.as_bytes()).unwrap();
        assert_eq!((c.realm, c.nonce, c.stale), (&b"office.example"[..], &b"abcd"[..], true));
        assert!(c.offers_auth());
        assert_eq!(c.algorithm, Some(&b"MD5"[..]));
        assert!(!Challenge::parse(challenge("r", "n", false).as_bytes()).unwrap().stale);
        assert!(Challenge::parse(b"Digest realm=\"r\", qop=\"auth-int, auth\", nonce=x").unwrap().offers_auth());
    }

    #[test]
    fn nonces_verify_statelessly_until_they_age() {
        let key = NonceKey::new(&[7; 32]);
        let nonce = key.mint(b"office.example", 1_000, 42);
        assert_eq!(nonce.len(), NONCE_LEN);
        assert_ne!(nonce, key.mint(b"office.example", 1_000, 43), "the salt tells same-second nonces apart");
        let n = nonce.as_bytes();
        assert_eq!(key.check(b"office.example", n, 1_000, 300), NonceCheck::Fresh { issued_at: 1_000 });
        assert_eq!(key.check(b"office.example", n, 1_300, 300), NonceCheck::Fresh { issued_at: 1_000 });
        assert_eq!(key.check(b"office.example", n, 1_301, 300), NonceCheck::Stale);
        // Upper-case hex is the same nonce.
        assert_eq!(key.check(b"office.example", nonce.to_ascii_uppercase().as_bytes(), 1_001, 300), NonceCheck::Fresh { issued_at: 1_000 });
    }

    #[test]
    fn forged_or_foreign_nonces_are_invalid() {
        let key = NonceKey::new(&[7; 32]);
        let nonce = key.mint(b"office.example", 1_000, 42);
        // Another realm, another process's key, a changed timestamp, the future, garbage.
        assert_eq!(key.check(b"other.example", nonce.as_bytes(), 1_000, 300), NonceCheck::Invalid);
        assert_eq!(NonceKey::new(&[8; 32]).check(b"office.example", nonce.as_bytes(), 1_000, 300), NonceCheck::Invalid);
        let mut moved = nonce.clone().into_bytes();
        moved[15] = if moved[15] == b'9' { b'8' } else { b'9' };
        assert_eq!(key.check(b"office.example", &moved, 1_000, 300), NonceCheck::Invalid);
        assert_eq!(key.check(b"office.example", nonce.as_bytes(), 999, 300), NonceCheck::Invalid);
        let mut salted = nonce.clone().into_bytes();
        salted[20] = if salted[20] == b'1' { b'2' } else { b'1' };
        assert_eq!(key.check(b"office.example", &salted, 1_000, 300), NonceCheck::Invalid);
        for junk in [&b""[..], b"00", &[b'z'; NONCE_LEN][..], &nonce.as_bytes()[..40]] {
            assert_eq!(key.check(b"office.example", junk, 1_000, 300), NonceCheck::Invalid);
        }
        let mut longer = nonce.into_bytes();
        longer.push(b'0');
        assert_eq!(key.check(b"office.example", &longer, 1_000, 300), NonceCheck::Invalid);
    }

    #[test]
    fn debug_output_hides_secrets() {
        assert_eq!(format!("{:?}", ha1(b"a", b"b", b"c")), "HexDigest(..)");
        assert_eq!(format!("{:?}", NonceKey::new(&[1; 32])), "NonceKey(..)");
    }
}
