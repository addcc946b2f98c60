//! STUN keep-alives on the SIP UDP port (RFC 5626 §4.4.2, §8.4): a phone using SIP outbound
//! sends RFC 5389 Binding requests to the edge proxy's SIP port and learns from the
//! XOR-MAPPED-ADDRESS of the answer whether its NAT binding still stands.
//!
//! Role: tell a STUN message from SIP by its first bytes ([`looks_like_stun`]), and answer a
//! well-formed Binding request with a Binding success response ([`binding_response`]). Only
//! that: no authentication (RFC 5626 §8.4 keep-alives carry none), no other method, no error
//! responses. Anything malformed gets no answer at all.
//!
//! Checks on a request: the two leading zero bits, the magic cookie, a length that is a
//! multiple of 4 and equals what follows the header, the Binding request type, attributes
//! that tile the body exactly, no unknown comprehension-required attribute (RFC 5389 §7.3.1
//! would answer 420; a keep-alive never has one, so it is dropped), and a FINGERPRINT, when
//! present, that is last and correct. The answer echoes the transaction id and carries
//! XOR-MAPPED-ADDRESS, plus a FINGERPRINT when the request had one. An answer is never longer
//! than 52 bytes: little more than the 20-byte minimum request (no amplification).
//!
//! Pure: no I/O, no clock, no allocation beyond the answer.

use std::net::{IpAddr, SocketAddr};

/// RFC 5389 §6: the fixed magic cookie.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
const HEADER: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const FINGERPRINT: u16 = 0x8028;
/// RFC 5389 §15.5: the FINGERPRINT CRC is XORed with this.
const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// Whether a datagram is a STUN message rather than SIP: the top two bits of the first byte
/// are zero (SIP starts with a letter or CR) and the magic cookie follows the length. Cheap:
/// looks at eight bytes.
#[must_use]
pub fn looks_like_stun(data: &[u8]) -> bool {
    data.len() >= HEADER && data.first().is_some_and(|b| b & 0xC0 == 0) && data.get(4..8) == Some(&MAGIC_COOKIE.to_be_bytes()[..])
}

/// The Binding success response to `request` received from `source`, or `None` when
/// `request` is not a well-formed Binding request (see the module doc).
#[must_use]
pub fn binding_response(request: &[u8], source: SocketAddr) -> Option<Vec<u8>> {
    let fingerprinted = check_binding_request(request)?;
    let txid = request.get(8..HEADER)?;
    let mut out = Vec::with_capacity(52);
    out.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    out.extend_from_slice(&[0, 0]); // the length, set below
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(txid);
    put_xor_mapped_address(&mut out, source, txid);
    if fingerprinted {
        let at = out.len();
        set_length(&mut out, 8);
        let crc = crc32_with_length(&out, at)? ^ FINGERPRINT_XOR;
        out.extend_from_slice(&FINGERPRINT.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&crc.to_be_bytes());
    }
    set_length(&mut out, 0);
    Some(out)
}

/// A big-endian u16 at `at`.
fn u16_at(msg: &[u8], at: usize) -> Option<u16> {
    let b = msg.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
}

/// `Some(had_fingerprint)` for a well-formed Binding request.
fn check_binding_request(msg: &[u8]) -> Option<bool> {
    if !looks_like_stun(msg) {
        return None;
    }
    let length = usize::from(u16_at(msg, 2)?);
    if u16_at(msg, 0)? != BINDING_REQUEST || length % 4 != 0 || msg.len() != HEADER.checked_add(length)? {
        return None;
    }
    let mut at = HEADER;
    let mut fingerprinted = false;
    while at < msg.len() {
        if fingerprinted {
            return None; // FINGERPRINT must be the last attribute (RFC 5389 §15.5)
        }
        let (attr, len) = (u16_at(msg, at)?, usize::from(u16_at(msg, at.checked_add(2)?)?));
        let start = at.checked_add(4)?;
        let value = msg.get(start..start.checked_add(len)?)?;
        match attr {
            FINGERPRINT => {
                let expected = crc32_with_length(msg, at)? ^ FINGERPRINT_XOR;
                if value != expected.to_be_bytes() {
                    return None;
                }
                fingerprinted = true;
            }
            // Comprehension-required attributes callgate does not understand (MESSAGE-INTEGRITY,
            // USERNAME and the like: a keep-alive has none).
            0x0000..=0x7FFF => return None,
            _ => {}
        }
        at = start.checked_add(len.div_ceil(4).checked_mul(4)?)?;
    }
    (at == msg.len()).then_some(fingerprinted)
}

/// The CRC-32 of `msg[..end]` as the FINGERPRINT at `end` sees it: the header's length field
/// already counting the FINGERPRINT attribute itself and nothing after it (RFC 5389 §15.5).
fn crc32_with_length(msg: &[u8], end: usize) -> Option<u32> {
    let length = u16::try_from(end.checked_add(8)?.checked_sub(HEADER)?).ok()?.to_be_bytes();
    let mut crc = Crc32::new();
    crc.update(msg.get(..2)?);
    crc.update(&length);
    crc.update(msg.get(4..end)?);
    Some(crc.finish())
}

/// XOR-MAPPED-ADDRESS (RFC 5389 §15.2): port XOR the cookie's top half, an IPv4 address XOR
/// the cookie, an IPv6 address XOR the cookie and the transaction id.
fn put_xor_mapped_address(out: &mut Vec<u8>, source: SocketAddr, txid: &[u8]) {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let port = source.port() ^ 0x2112;
    let (family, address): (u8, Vec<u8>) = match source.ip() {
        IpAddr::V4(ip) => (1, ip.octets().iter().zip(cookie).map(|(a, k)| a ^ k).collect()),
        IpAddr::V6(ip) => (2, ip.octets().iter().zip(cookie.iter().chain(txid)).map(|(a, k)| a ^ k).collect()),
    };
    let len: u16 = if family == 1 { 8 } else { 20 };
    out.extend_from_slice(&XOR_MAPPED_ADDRESS.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[0, family]);
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&address);
}

/// Sets the header's length field: the body so far plus `more` bytes still to come.
fn set_length(out: &mut [u8], more: usize) {
    let body = out.len().saturating_sub(HEADER).saturating_add(more);
    let length = u16::try_from(body).unwrap_or(u16::MAX).to_be_bytes();
    if let Some(field) = out.get_mut(2..4) {
        field.copy_from_slice(&length);
    }
}

/// CRC-32 (ISO-HDLC, as zlib and RFC 5389 use), bit by bit: a keep-alive is a few dozen bytes.
struct Crc32(u32);

impl Crc32 {
    fn new() -> Self {
        Self(0xFFFF_FFFF)
    }

    fn update(&mut self, data: &[u8]) {
        for &byte in data {
            self.0 ^= u32::from(byte);
            for _ in 0..8 {
                self.0 = if self.0 & 1 == 1 { (self.0 >> 1) ^ 0xEDB8_8320 } else { self.0 >> 1 };
            }
        }
    }

    fn finish(&self) -> u32 {
        !self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5769 §2.1's sample request: SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME,
    /// MESSAGE-INTEGRITY and FINGERPRINT.
    const RFC5769_REQUEST: &str = "000100582112a442b7e7a701bc34d686fa87dfae802200105354554e207465737420636c69656e74002400046e0001ff80290008932ff9b151263b36000600096576746a3a68367659202020000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// A bare Binding request (what RFC 5626 keep-alives are), optionally fingerprinted.
    fn keepalive(fingerprint: bool) -> Vec<u8> {
        let mut m = vec![0x00, 0x01, 0, 0];
        m.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        m.extend_from_slice(b"0123456789ab");
        if fingerprint {
            let crc = crc32_with_length(&m, m.len()).unwrap() ^ FINGERPRINT_XOR;
            m.extend_from_slice(&[0x80, 0x28, 0, 4]);
            m.extend_from_slice(&crc.to_be_bytes());
            m[3] = 8;
        }
        m
    }

    /// The address in a response's XOR-MAPPED-ADDRESS, decoded independently of the encoder.
    fn mapped(resp: &[u8]) -> SocketAddr {
        assert_eq!(&resp[20..22], &[0x00, 0x20]);
        let port = u16::from_be_bytes([resp[26], resp[27]]) ^ 0x2112;
        let key: Vec<u8> = resp[4..20].to_vec();
        let ip: IpAddr = match resp[25] {
            1 => IpAddr::from(<[u8; 4]>::try_from(resp[28..32].iter().zip(&key).map(|(a, k)| a ^ k).collect::<Vec<u8>>()).unwrap()),
            2 => IpAddr::from(<[u8; 16]>::try_from(resp[28..44].iter().zip(&key).map(|(a, k)| a ^ k).collect::<Vec<u8>>()).unwrap()),
            f => panic!("family {f}"),
        };
        SocketAddr::new(ip, port)
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = Crc32::new();
        crc.update(data);
        crc.finish()
    }

    #[test]
    fn crc32_and_the_rfc5769_sample_fingerprint_agree() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926, "the standard check value");
        let sample = hex(RFC5769_REQUEST);
        let at = sample.len() - 8;
        assert_eq!(crc32_with_length(&sample, at).unwrap() ^ FINGERPRINT_XOR, u32::from_be_bytes(sample[at + 4..].try_into().unwrap()));
        assert!(looks_like_stun(&sample));
        // It carries USERNAME and MESSAGE-INTEGRITY: not a keep-alive callgate answers.
        assert_eq!(binding_response(&sample, "192.0.2.1:32853".parse().unwrap()), None);
    }

    #[test]
    fn a_keepalive_gets_the_senders_address_back_with_its_transaction_id() {
        for source in ["192.0.2.1:32853", "[2001:db8:1234:5678:11:2233:4455:6677]:32853"] {
            let source: SocketAddr = source.parse().unwrap();
            let resp = binding_response(&keepalive(false), source).expect("answered");
            assert_eq!(&resp[..2], &[0x01, 0x01], "Binding success");
            assert_eq!(usize::from(u16::from_be_bytes([resp[2], resp[3]])), resp.len() - 20);
            assert_eq!(&resp[4..20], &keepalive(false)[4..20], "cookie and transaction id");
            assert_eq!(mapped(&resp), source);
            assert!(looks_like_stun(&resp));
        }
    }

    #[test]
    fn rfc5769_sample_address_encodings_match() {
        // RFC 5769 §2.2 / §2.3: the XOR-MAPPED-ADDRESS bytes for 192.0.2.1:32853 and the IPv6
        // sample, with the sample transaction id.
        let mut req = keepalive(false);
        req[8..20].copy_from_slice(&hex("b7e7a701bc34d686fa87dfae"));
        let v4 = binding_response(&req, "192.0.2.1:32853".parse().unwrap()).unwrap();
        assert_eq!(&v4[20..32], &hex("002000080001a147e112a643")[..]);
        let v6 = binding_response(&req, "[2001:db8:1234:5678:11:2233:4455:6677]:32853".parse().unwrap()).unwrap();
        assert_eq!(&v6[20..44], &hex("002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9")[..]);
    }

    #[test]
    fn a_fingerprinted_request_gets_a_fingerprinted_answer() {
        let resp = binding_response(&keepalive(true), "127.0.0.2:5062".parse().unwrap()).expect("answered");
        let at = resp.len() - 8;
        assert_eq!(&resp[at..at + 4], &[0x80, 0x28, 0, 4]);
        assert_eq!(crc32_with_length(&resp, at).unwrap() ^ FINGERPRINT_XOR, u32::from_be_bytes(resp[at + 4..].try_into().unwrap()));
        assert!(resp.len() <= 52);
    }

    #[test]
    fn malformed_or_other_stun_messages_get_nothing() {
        let src: SocketAddr = "127.0.0.5:5060".parse().unwrap();
        let good = keepalive(true);
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        cases.push(("truncated", good[..good.len() - 1].to_vec()));
        cases.push(("a header alone that announces a body", { let mut m = keepalive(false); m[3] = 4; m }));
        cases.push(("a length not a multiple of 4", { let mut m = keepalive(false); m.push(0); m[3] = 1; m }));
        cases.push(("a binding response", { let mut m = keepalive(false); m[0] = 1; m[1] = 1; m }));
        cases.push(("an allocate request", { let mut m = keepalive(false); m[1] = 3; m }));
        cases.push(("a wrong cookie", { let mut m = keepalive(false); m[4] = 0x22; m }));
        cases.push(("a wrong fingerprint", { let mut m = good.clone(); let n = m.len(); m[n - 1] ^= 1; m }));
        cases.push(("an attribute past the end", { let mut m = keepalive(false); m.extend_from_slice(&[0x80, 0x22, 0, 8, b'x', b'y', b'z', b'w']); m[3] = 8; m }));
        cases.push(("an unknown comprehension-required attribute", { let mut m = keepalive(false); m.extend_from_slice(&[0x00, 0x06, 0, 4, b'u', b's', b'e', b'r']); m[3] = 8; m }));
        cases.push(("something after the fingerprint", { let mut m = good.clone(); m.extend_from_slice(&[0x80, 0x22, 0, 0]); m[3] = 12; m }));
        cases.push(("SIP", b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n\r\n".to_vec()));
        for (what, msg) in cases {
            assert_eq!(binding_response(&msg, src), None, "{what}");
        }
        // Comprehension-optional attributes (SOFTWARE) are fine.
        let mut soft = keepalive(false);
        soft.extend_from_slice(&[0x80, 0x22, 0, 3, b'a', b'b', b'c', 0]);
        soft[3] = 8;
        assert!(binding_response(&soft, src).is_some());
        assert!(!looks_like_stun(b"\r\n\r\n") && !looks_like_stun(b"INVITE sip:x SIP/2.0\r\n\r\n"));
    }
}
