//! [`Via`]: one Via value (RFC 3261 §20.42, §18.2.1; RFC 3581 `rport`), zero-copy.
//!
//! Grammar accepted: `SIP / 2.0 / transport LWS host [: port] *(; param)`, with LWS (including
//! folded line breaks) allowed around `/`, `:`, `;` and `=` as RFC 4475 §3.1.1.1 exercises.
//! IPv6 hosts keep their brackets. Empty parameters (`;;`) are refused (RFC 4475 §3.1.2.1).

use std::fmt::Write as _;
use std::net::SocketAddr;

use super::scan::{comma_values, find_param, header_params, params, parse_port, Cursor};
use super::uri::{host, socket_addr};

/// One Via value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    /// Transport token (`UDP`, `TCP`, `TLS`, `WSS`, ...) as written.
    pub transport: &'a [u8],
    /// sent-by host; an IPv6 reference keeps its brackets.
    pub host: &'a [u8],
    /// sent-by port, if present.
    pub port: Option<u16>,
    /// The `branch` parameter.
    pub branch: Option<&'a [u8]>,
    /// The `received` parameter.
    pub received: Option<&'a [u8]>,
    /// `rport` (RFC 3581): `None` absent, `Some(None)` present without a value,
    /// `Some(Some(port))` filled in.
    pub rport: Option<Option<u16>>,
    /// All parameters without the leading `;` (`branch=z9hG4bK1;rport`).
    pub params: &'a [u8],
    /// The whole value as parsed (the first comma-separated value of `raw` passed in).
    pub raw: &'a [u8],
}

impl<'a> Via<'a> {
    /// Parses the *first* value of a Via header (a line may hold several, comma-separated).
    /// `None` if it is malformed.
    #[must_use]
    pub fn parse(raw: &'a [u8]) -> Option<Self> {
        let raw = comma_values(raw).next()?;
        let mut c = Cursor::new(raw);
        let transport = sent_protocol(&mut c)?;
        if !c.skip_lws() {
            return None;
        }
        let host = host(&mut c)?;
        c.skip_lws();
        let port = if c.eat(b':') {
            c.skip_lws();
            Some(parse_port(c.take_while(|b| b.is_ascii_digit()))?)
        } else {
            None
        };
        let (params, [branch, received, rport]) =
            header_params(c.rest(), [b"branch", b"received", b"rport"])?;
        let rport = match rport {
            None => None,
            Some([]) => Some(None),
            Some(p) => Some(Some(parse_port(p)?)),
        };
        Some(Self {
            transport,
            host,
            port,
            branch,
            received,
            rport,
            params,
            raw,
        })
    }

    /// A parameter by case-insensitive name (`maddr`, `ttl`, `alias`); `Some(b"")` for a flag.
    #[must_use]
    pub fn param(&self, name: &[u8]) -> Option<&'a [u8]> {
        find_param(self.params, name)
    }

    /// Whether the branch starts with the RFC 3261 magic cookie `z9hG4bK` (otherwise the
    /// transaction must be matched the RFC 2543 way, RFC 3261 §17.2.3).
    #[must_use]
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch
            .is_some_and(|b| b.starts_with(b"z9hG4bK") && b.len() > 7)
    }
}

impl Via<'_> {
    /// This value as a server passes it on after receiving it from `source` (RFC 3261 §18.2.1,
    /// RFC 3581 §4): with `received=` the source address when the sent-by host is not that
    /// address (a name, or another IP) or `rport` is asked for, and `rport=` the source port when
    /// asked for. Every other parameter is kept, in order. `None` when nothing changes.
    #[must_use]
    pub fn stamped(&self, source: SocketAddr) -> Option<String> {
        let rport = self.rport.is_some();
        let differs = socket_addr(self.host, None).is_none_or(|a| a.ip() != source.ip());
        if !rport && !differs {
            return None;
        }
        let head_len = if self.params.is_empty() { self.raw.len() } else { (self.params.as_ptr() as usize).saturating_sub(self.raw.as_ptr() as usize) };
        let head = self.raw.get(..head_len).unwrap_or(self.raw).trim_ascii_end();
        let mut out = String::from_utf8_lossy(head.strip_suffix(b";").unwrap_or(head).trim_ascii_end()).into_owned();
        for p in params(self.params).filter(|p| !p.name.eq_ignore_ascii_case(b"received") && !p.name.eq_ignore_ascii_case(b"rport")) {
            out.push(';');
            out.push_str(&String::from_utf8_lossy(p.name));
            if let Some(v) = p.value {
                out.push('=');
                out.push_str(&String::from_utf8_lossy(v));
            }
        }
        let _ = write!(out, ";received={}", source.ip());
        if rport {
            let _ = write!(out, ";rport={}", source.port());
        }
        Some(out)
    }
}

/// `protocol-name / version / transport`; returns the transport.
fn sent_protocol<'a>(c: &mut Cursor<'a>) -> Option<&'a [u8]> {
    c.token()?;
    slash(c)?;
    c.token()?;
    slash(c)?;
    c.token()
}

/// `LWS? "/" LWS?`
fn slash(c: &mut Cursor<'_>) -> Option<()> {
    c.skip_lws();
    let found = c.eat(b'/');
    c.skip_lws();
    found.then_some(())
}

#[cfg(test)]
mod tests {
    use super::Via;

    fn parse(raw: &[u8]) -> Via<'_> {
        Via::parse(raw).unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(raw)))
    }

    #[test]
    fn common_vias() {
        // (input, transport, host, port, branch, received, rport)
        type Row = (
            &'static [u8],
            &'static [u8],
            &'static [u8],
            Option<u16>,
            Option<&'static [u8]>,
            Option<&'static [u8]>,
            Option<Option<u16>>,
        );
        let rows: &[Row] = &[
            (
                b"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds",
                b"UDP",
                b"192.0.2.1",
                Some(5060),
                Some(b"z9hG4bK776asdhds"),
                None,
                None,
            ),
            (
                b"SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bKabc",
                b"TCP",
                b"[2001:db8::1]",
                Some(5060),
                Some(b"z9hG4bKabc"),
                None,
                None,
            ),
            (
                b"SIP/2.0/UDP pc33.example.com;rport;branch=z9hG4bKx",
                b"UDP",
                b"pc33.example.com",
                None,
                Some(b"z9hG4bKx"),
                None,
                Some(None),
            ),
            (
                b"SIP/2.0/UDP 10.0.0.1;received=2001:db8::9;rport=5070;branch=z9hG4bKy",
                b"UDP",
                b"10.0.0.1",
                None,
                Some(b"z9hG4bKy"),
                Some(b"2001:db8::9"),
                Some(Some(5070)),
            ),
            (
                b"SIP  /   2.0\r\n /UDP\r\n    192.0.2.2;branch=390skdjuw",
                b"UDP",
                b"192.0.2.2",
                None,
                Some(b"390skdjuw"),
                None,
                None,
            ),
            (
                b"SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKasudf",
                b"WSS",
                b"df7jal23ls0d.invalid",
                None,
                Some(b"z9hG4bKasudf"),
                None,
                None,
            ),
            (
                b"SIP/2.0/UDP iftgw.example.com",
                b"UDP",
                b"iftgw.example.com",
                None,
                None,
                None,
                None,
            ),
        ];
        for &(raw, transport, host, port, branch, received, rport) in rows {
            let v = parse(raw);
            assert_eq!(
                (v.transport, v.host, v.port, v.branch, v.received, v.rport),
                (transport, host, port, branch, received, rport)
            );
        }
    }

    #[test]
    fn only_the_first_of_comma_separated_values_is_parsed() {
        let v = parse(b"SIP / 2.0 / TCP spindle.example.com ;\r\n  branch  =   z9hG4bK9ikj8  ,\r\n SIP/2.0/UDP 192.168.255.111;branch=z9hG4bK30239");
        assert_eq!(
            (v.transport, v.host, v.branch),
            (
                &b"TCP"[..],
                &b"spindle.example.com"[..],
                Some(&b"z9hG4bK9ikj8"[..])
            )
        );
        assert!(v.raw.ends_with(b"z9hG4bK9ikj8"));
        assert!(v.has_rfc3261_branch());
    }

    #[test]
    fn received_and_rport_are_stamped_when_asked_for_or_the_host_differs() {
        let from: std::net::SocketAddr = "203.0.113.7:40123".parse().unwrap();
        let stamp = |raw: &[u8]| parse(raw).stamped(from);
        assert_eq!(stamp(b"SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;rport").as_deref(), Some("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK1;received=203.0.113.7;rport=40123"));
        assert_eq!(stamp(b"SIP/2.0/UDP 10.0.0.5 ; rport ; branch=z9hG4bK1").as_deref(), Some("SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1;received=203.0.113.7;rport=40123"));
        assert_eq!(stamp(b"SIP/2.0/TCP phone.invalid;branch=z9hG4bK1").as_deref(), Some("SIP/2.0/TCP phone.invalid;branch=z9hG4bK1;received=203.0.113.7"), "a name: received only");
        assert_eq!(stamp(b"SIP/2.0/UDP 203.0.113.7:5060;branch=z9hG4bK1"), None, "sent from where it says, no rport: unchanged");
        assert_eq!(stamp(b"SIP/2.0/UDP 203.0.113.7:5060;rport;branch=z9hG4bK1").as_deref(), Some("SIP/2.0/UDP 203.0.113.7:5060;branch=z9hG4bK1;received=203.0.113.7;rport=40123"), "rport: received even when equal (RFC 3581 §4)");
        assert_eq!(stamp(b"SIP/2.0/UDP 10.0.0.5;received=1.2.3.4;rport=9;branch=z9hG4bK1").as_deref(), Some("SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1;received=203.0.113.7;rport=40123"), "a sender's own values are replaced");
        let v6: std::net::SocketAddr = "[2001:db8::9]:5062".parse().unwrap();
        let stamped = parse(b"SIP/2.0/UDP [2001:db8::1];rport;branch=z9hG4bK1").stamped(v6).unwrap();
        assert_eq!(stamped, "SIP/2.0/UDP [2001:db8::1];branch=z9hG4bK1;received=2001:db8::9;rport=5062");
        let again = parse(stamped.as_bytes());
        assert_eq!((again.received, again.rport), (Some(&b"2001:db8::9"[..]), Some(Some(5062))), "the result parses");
    }

    #[test]
    fn malformed_vias_are_refused() {
        let bad: &[&[u8]] = &[
            b"SIP/2.0/UDP 192.0.2.15;;,;,,",
            b"SIP/2.0/UDP",
            b"SIP/2.0 host",
            b"SIP/2.0/UDPhost",
            b"SIP/2.0/UDP host:99999",
            b"SIP/2.0/UDP host;rport=x",
            b"SIP/2.0/UDP [::1;branch=z9hG4bK1",
            b"SIP/2.0/UDP host junk",
            b"SIP/2.0/UDP host;",
            b"",
        ];
        for raw in bad {
            assert_eq!(Via::parse(raw), None, "{}", String::from_utf8_lossy(raw));
        }
        assert!(!parse(b"SIP/2.0/UDP h;branch=z9hG4bK").has_rfc3261_branch());
    }
}
