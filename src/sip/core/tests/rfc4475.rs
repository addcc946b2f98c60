//! RFC 4475 torture messages (`tests/data/rfc4475/`, see its README): every file has an expected
//! outcome in [`CASES`], and several valid ones are checked field by field.
//!
//! Policy (README): §3.1.1 valid -> parse; §3.1.2 invalid -> refuse, even where the RFC lets a
//! liberal element accept (lwsstart, trws, escruri, baddate, regbadct, badaspec), so callgate
//! never forwards what it cannot vouch for; §3.2/§3.3 -> parse, the upper layers react (483,
//! 416, 420, 415, ...), except where the RFC's reaction is a plain 400 that `parse` itself can
//! give (insuf, multi01, mcl01).

use bytes::Bytes;

use super::super::{HeaderName, Method, ParseError, SipMessage, Uri, Via};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc4475/");

fn load(name: &str) -> Bytes {
    let path = format!("{DIR}{name}.dat");
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

fn ok(name: &str) -> SipMessage {
    SipMessage::parse(load(name)).unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

type Expect = Result<(), ParseError>;
const VALID: Expect = Ok(());

/// Every file of the set with the expected `SipMessage::parse` outcome.
const CASES: &[(&str, Expect)] = &[
    // §3.1.1 valid messages: all must parse.
    ("wsinv", VALID), // 3.1.1.1 folding, odd spacing, compact names, escaped quotes
    ("intmeth", VALID), // 3.1.1.2 every token char in method, URI user, params
    ("esc01", VALID), // 3.1.1.3 %-escapes stay escaped
    ("escnull", VALID), // 3.1.1.4 %00 in URIs
    ("esc02", VALID), // 3.1.1.5 % that is not an escape; RE%47IST%45R is just a method
    ("lwsdisp", VALID), // 3.1.1.6 display name glued to <
    ("longreq", VALID), // 3.1.1.7 long values, 34 Via lines in all spellings
    ("dblreq", VALID), // 3.1.1.8 second message in the datagram is ignored
    ("semiuri", VALID), // 3.1.1.9 ; inside the URI user part
    ("transports", VALID), // 3.1.1.10 SCTP/TLS/UNKNOWN transports
    ("mpart01", VALID), // 3.1.1.11 binary multipart body
    ("unreason", VALID), // 3.1.1.12 UTF-8 reason phrase
    ("noreason", VALID), // 3.1.1.13 empty reason phrase
    // §3.1.2 invalid messages: all refused (400 where a response is possible).
    ("badinv01", Err(ParseError::BadVia)), // 3.1.2.1 ;;,;,, in Via (and Contact)
    ("clerr", Err(ParseError::BodyTooShort)), // 3.1.2.2 Content-Length 9999
    ("ncl", Err(ParseError::BadContentLength)), // 3.1.2.3 Content-Length -999
    ("scalar02", Err(ParseError::BadCSeq)), // 3.1.2.4 CSeq > 2^32 (also MF 300)
    ("scalarlg", Err(ParseError::BadCSeq)), // 3.1.2.5 response; dropped, never answered
    ("quotbal", Err(ParseError::BadHeaderValue("To"))), // 3.1.2.6 unterminated quote
    ("ltgtruri", Err(ParseError::BadRequestUri)), // 3.1.2.7 <> around Request-URI
    ("lwsruri", Err(ParseError::BadRequestUri)), // 3.1.2.8 SP inside Request-URI
    ("lwsstart", Err(ParseError::BadStartLine)), // 3.1.2.9 double SP (RFC: may accept)
    ("trws", Err(ParseError::BadStartLine)), // 3.1.2.10 trailing SP (RFC: may accept)
    ("escruri", Err(ParseError::BadRequestUri)), // 3.1.2.11 ?headers in SIP R-URI
    ("baddate", Ok(())), // 3.1.2.12 EST instead of GMT: accepted, callgate never reads Date
    ("regbadct", Err(ParseError::BadHeaderValue("Contact"))), // 3.1.2.13 ? in bare Contact URI
    ("badaspec", Err(ParseError::BadHeaderValue("To"))), // 3.1.2.14 "< sip:... >"
    ("baddn", Err(ParseError::BadHeaderValue("From"))), // 3.1.2.15 unquoted "Bell, Alexander"
    ("badvers", Err(ParseError::BadVersion)), // 3.1.2.16 SIP/7.0 -> 505
    ("mismatch01", Err(ParseError::CSeqMismatch)), // 3.1.2.17 OPTIONS vs CSeq INVITE
    ("mismatch02", Err(ParseError::CSeqMismatch)), // 3.1.2.18 NEWMETHOD vs CSeq INVITE
    ("bigcode", Err(ParseError::BadStatus)), // 3.1.2.19 status 4294967301
    // §3.2 transaction layer.
    ("badbranch", VALID), // 3.2.1 branch is just the cookie: RFC 2543 matching, not a parse error
    // §3.3 application layer: parse, the layer above answers (code in the comment).
    ("insuf", Err(ParseError::MissingHeader("To"))), // 3.3.1 400: no To/From/Call-ID
    ("unkscm", VALID),                               // 3.3.2 416 Unsupported URI Scheme
    ("novelsc", VALID),  // 3.3.3 416 (or process, if soap.beep is known)
    ("unksm2", VALID),   // 3.3.4 isbn:/http:/name: URIs in To/From/Contact are fine
    ("bext01", VALID),   // 3.3.5 420 Bad Extension
    ("invut", VALID),    // 3.3.6 415 Unsupported Media Type
    ("regaut01", VALID), // 3.3.7 401/403: unknown auth scheme
    ("multi01", Err(ParseError::DuplicateHeader("To"))), // 3.3.8 400: repeated single headers
    ("mcl01", Err(ParseError::BadContentLength)), // 3.3.9 400 / close the stream: 2 lengths
    ("bcast", VALID),    // 3.3.10 response: transaction layer drops the broadcast Via
    ("zeromf", VALID),   // 3.3.11 proxy answers 483, a UAS processes it
    ("cparam01", VALID), // 3.3.12 ;unknownparam is a Contact param (bare URI)
    ("cparam02", VALID), // 3.3.13 ;unknownparam is a URI param (inside <>)
    ("regescrt", VALID), // 3.3.14 registrar must not store the escaped Route
    ("sdp01", VALID),    // 3.3.15 406 Not Acceptable
    // §3.4 backwards compatibility.
    ("inv2543", VALID), // 3.4.1 RFC 2543 INVITE: no branch, no Max-Forwards, no Content-Length
];

#[test]
fn every_file_has_its_expected_outcome() {
    let mut files: Vec<String> = std::fs::read_dir(DIR)
        .expect("test data directory")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".dat").map(str::to_owned))
        .collect();
    files.sort();
    let mut listed: Vec<String> = CASES.iter().map(|(n, _)| (*n).to_owned()).collect();
    listed.sort();
    assert_eq!(
        files, listed,
        "CASES must list every .dat file exactly once"
    );
    assert_eq!(files.len(), 49);
    for (name, expect) in CASES {
        let got = SipMessage::parse(load(name)).map(|_| ());
        assert_eq!(got, *expect, "{name}");
        // Whatever parse says, indexing for an error response must not panic either.
        let _ = SipMessage::parse_unvalidated(load(name));
    }
}

#[test]
fn wsinv_fields() {
    let m = ok("wsinv");
    assert_eq!(
        (m.method(), m.request_uri()),
        (
            Some(Method::Invite),
            Some(&b"sip:vivekg@chair-dnrc.example.com;unknownparam"[..])
        )
    );
    assert_eq!(m.call_id(), Some(&b"wsinv.ndaksdj@192.0.2.1"[..]));
    let via = m.top_via().expect("via");
    assert_eq!(
        (via.transport, via.host, via.port, via.branch),
        (
            &b"UDP"[..],
            &b"192.0.2.2"[..],
            None,
            Some(&b"390skdjuw"[..])
        )
    );
    let hops: Vec<(&[u8], &[u8])> = m
        .values(HeaderName::Via)
        .filter_map(Via::parse)
        .map(|v| (v.host, v.branch.unwrap_or_default()))
        .collect();
    assert_eq!(
        hops,
        [
            (&b"192.0.2.2"[..], &b"390skdjuw"[..]),
            (b"spindle.example.com", b"z9hG4bK9ikj8"),
            (b"192.168.255.111", b"z9hG4bK30239")
        ]
    );
    let from = m.from().expect("from");
    assert_eq!(from.display, Some(&b"J Rosenberg \\\\\\\""[..]));
    assert_eq!(
        (from.uri.user, from.uri.host, from.tag),
        (
            Some(&b"jdrosen"[..]),
            &b"example.com"[..],
            Some(&b"98asjd8"[..])
        )
    );
    let to = m.to().expect("to");
    assert_eq!(
        (to.uri.user, to.uri.host, to.tag),
        (
            Some(&b"vivekg"[..]),
            &b"chair-dnrc.example.com"[..],
            Some(&b"1918181833n"[..])
        )
    );
    let cseq = m.cseq().expect("cseq");
    assert_eq!((cseq.seq, cseq.method), (9, &b"INVITE"[..]));
    let contact = m.contact().expect("contact");
    assert_eq!(
        (contact.display, contact.uri.user),
        (Some(&b"Quoted string \\\"\\\""[..]), Some(&b"jdrosen"[..]))
    );
    assert_eq!(contact.param(b"newparam"), Some(&b"newvalue"[..]));
    assert_eq!(contact.param(b"q"), Some(&b"0.33"[..]));
    assert_eq!(
        (m.max_forwards(), m.content_length(), m.body().len()),
        (Some(68), Some(150), 150)
    );
    assert_eq!(m.header(HeaderName::Subject), Some(&b""[..]));
    assert_eq!(
        m.header_by_name(b"newfangledheader"),
        Some(&b"newfangled value\r\n continued newfangled value"[..])
    );
}

#[test]
fn intmeth_fields() {
    let m = ok("intmeth");
    let method = b"!interesting-Method0123456789_*+`.%indeed'~";
    assert_eq!(
        (m.method(), m.method_raw()),
        (Some(Method::Other), Some(&method[..]))
    );
    let ruri = Uri::parse(m.request_uri().unwrap_or_default()).expect("R-URI");
    assert_eq!(
        ruri.user,
        Some(&b"1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"[..])
    );
    assert_eq!((ruri.host, ruri.headers), (&b"example.com"[..], &b""[..]));
    assert_eq!(
        m.cseq().map(|c| (c.seq, c.method)),
        Some((139_122_385, &method[..]))
    );
    assert_eq!(
        m.top_via().and_then(|v| v.branch),
        Some(&b"z9hG4bK-.!%66*_+`'~"[..])
    );
    let from = m.from().expect("from");
    assert_eq!(from.display, Some(&b"token1~` token2'+_ token3*%!.-"[..]));
    assert_eq!(
        (from.uri.user, from.tag),
        (Some(&b"mundane"[..]), Some(&b"_token~1'+`*%!-."[..]))
    );
    assert_eq!(
        m.to().map(|t| t.display),
        Some(Some(&b"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f"[..]))
    );
    assert_eq!(
        m.call_id(),
        Some(&b"intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"[..])
    );
    assert_eq!(m.max_forwards(), Some(255));
    assert_eq!(
        m.header_by_name(b"extensionHeader-!.%*+_`'~"),
        Some(&b"\xEF\xBB\xBF\xE5\xA4\xA7\xE5\x81\x9C\xE9\x9B\xBB"[..])
    );
}

#[test]
fn escaped_and_compact_forms() {
    let m = ok("esc01");
    assert_eq!(
        m.call_id(),
        Some(&b"esc01.239409asdfakjkn23onasd0-3234"[..])
    );
    assert_eq!(
        m.header(HeaderName::ContentType),
        Some(&b"application/sdp"[..])
    );
    let c = m.contact().expect("contact");
    assert_eq!(
        (c.uri.user, c.uri.params),
        (
            Some(&b"cal%6Cer"[..]),
            &b"%6C%72;n%61me=v%61lue%25%34%31"[..]
        )
    );
    assert_eq!(
        m.from().and_then(|f| f.uri.user),
        Some(&b"I%20have%20spaces"[..])
    );

    let m = ok("escnull");
    assert_eq!(m.values(HeaderName::Contact).count(), 2);
    assert_eq!(m.to().and_then(|t| t.uri.user), Some(&b"null-%00-null"[..]));

    let m = ok("esc02");
    assert_eq!(
        (m.method(), m.method_raw()),
        (Some(Method::Other), Some(&b"RE%47IST%45R"[..]))
    );
    assert_eq!(
        m.header_by_name(b"c%6fntact"),
        Some(&b"<sip:alias2@host2.example.com>"[..])
    );
    assert_eq!(m.values(HeaderName::Contact).count(), 2);
    assert_eq!(m.from().and_then(|f| f.display), Some(&b"%Z%45"[..]));

    let m = ok("lwsdisp");
    assert_eq!(
        m.from().map(|f| (f.display, f.tag)),
        Some((Some(&b"caller"[..]), Some(&b"323"[..])))
    );
}

#[test]
fn long_double_and_multi_transport_messages() {
    let m = ok("longreq");
    assert_eq!(m.headers(HeaderName::Via).count(), 34);
    let top = m.top_via().expect("via");
    assert_eq!(
        (top.transport, top.host, top.branch),
        (&b"TCP"[..], &b"sip33.example.com"[..], None)
    );
    assert_eq!(m.from().and_then(|f| f.tag).map(<[u8]>::len), Some(155));
    assert_eq!(m.to().and_then(|t| t.uri.port), Some(6000));
    assert_eq!(m.body().len(), 150);

    let m = ok("dblreq");
    assert_eq!((m.method(), m.body()), (Some(Method::Register), &b""[..]));
    assert!(m.as_bytes().ends_with(b"Content-Length: 0\r\n\r\n"));
    assert_eq!(
        m.call_id(),
        Some(&b"dblreq.0ha0isndaksdj99sdfafnl3lk233412"[..])
    );

    let m = ok("semiuri");
    let ruri = Uri::parse(m.request_uri().unwrap_or_default()).expect("R-URI");
    assert_eq!(
        (ruri.user, ruri.host),
        (Some(&b"user;par=u%40example.net"[..]), &b"example.com"[..])
    );

    let m = ok("transports");
    let transports: Vec<&[u8]> = m
        .values(HeaderName::Via)
        .filter_map(Via::parse)
        .map(|v| v.transport)
        .collect();
    assert_eq!(
        transports,
        [&b"UDP"[..], b"SCTP", b"TLS", b"UNKNOWN", b"TCP"]
    );

    let m = ok("mpart01");
    assert_eq!(
        (m.body().len(), m.top_via().and_then(|v| v.rport)),
        (553, Some(None))
    );
}

#[test]
fn responses_with_odd_reasons() {
    let m = ok("unreason");
    assert_eq!(m.status(), Some(200));
    assert!(m
        .reason()
        .is_some_and(|r| r.starts_with(b"= 2**3 * 5**2 ") && std::str::from_utf8(r).is_ok()));
    let m = ok("noreason");
    assert_eq!((m.status(), m.reason()), (Some(100), Some(&b""[..])));
    let m = ok("bcast");
    assert_eq!(
        m.values(HeaderName::Via)
            .nth(1)
            .and_then(Via::parse)
            .map(|v| v.host),
        Some(&b"255.255.255.255"[..])
    );
}

#[test]
fn application_layer_cases_expose_what_the_layer_needs() {
    assert_eq!(ok("zeromf").max_forwards(), Some(0));
    assert_eq!(
        ok("badbranch").top_via().map(|v| v.has_rfc3261_branch()),
        Some(false)
    );
    let ruri = ok("unkscm");
    assert_eq!(
        Uri::parse(ruri.request_uri().unwrap_or_default()).map(|u| u.is_sip()),
        Some(false)
    );
    let m = ok("unksm2");
    assert_eq!(m.to().map(|t| t.uri.scheme), Some(&b"isbn"[..]));
    assert_eq!(m.contact().map(|c| c.uri.scheme), Some(&b"name"[..]));
    let m = ok("cparam01");
    let c = m.contact().expect("contact");
    assert_eq!(
        (c.uri.params, c.param(b"unknownparam")),
        (&b""[..], Some(&b""[..]))
    );
    let m = ok("cparam02");
    let c = m.contact().expect("contact");
    assert_eq!(
        (c.uri.param(b"unknownparam"), c.params),
        (Some(&b""[..]), &b""[..])
    );
    let m = ok("regescrt");
    let c = m.contact().expect("contact");
    assert_eq!(c.uri.headers, b"Route=%3Csip:sip.example.com%3E");
    let m = ok("inv2543");
    assert_eq!(
        (
            m.max_forwards(),
            m.top_via().and_then(|v| v.branch),
            m.content_length()
        ),
        (None, None, None)
    );
    assert_eq!(m.to().and_then(|t| t.uri.param(b"user")), None); // bare URI: ;user= is a header param
    assert_eq!(m.to().and_then(|t| t.param(b"user")), Some(&b"phone"[..]));
    assert!(m.body().starts_with(b"v=0"));
}
