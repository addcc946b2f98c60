//! `SipMessage` tests: what real PBXs send (compact names, folding, `Name : value`, GRUUs,
//! CP1251, IPv6) and the acceptance rules of `parse`.

use bytes::Bytes;

use super::super::{HeaderName, Method, ParseError, SipMessage};

fn parse(text: &[u8]) -> SipMessage {
    SipMessage::parse(Bytes::copy_from_slice(text))
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(text)))
}

fn parse_err(text: &[u8]) -> ParseError {
    SipMessage::parse(Bytes::copy_from_slice(text)).expect_err("must be refused")
}

/// A valid INVITE with the given extra header lines and body (Content-Length added).
fn invite(extra: &str, body: &str) -> Vec<u8> {
    format!(
        "INVITE sip:101@pbx.example SIP/2.0\r\n\
         Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKtop\r\n\
         From: <sip:200@pbx.example>;tag=ft\r\n\
         To: <sip:101@pbx.example>\r\n\
         Call-ID: c1@10.0.0.1\r\n\
         CSeq: 1 INVITE\r\n\
         {extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn compact_headers_resolve_to_full_names() {
    let m = parse(
        b"INVITE sip:bob@b.example SIP/2.0\r\n\
          v: SIP/2.0/UDP h.example;branch=z9hG4bK1\r\n\
          f: \"A\" <sip:a@a.example>;tag=1\r\n\
          t: sip:bob@b.example\r\n\
          i: abc@h\r\n\
          CSeq: 7 INVITE\r\n\
          m: <sip:a@192.0.2.1>\r\n\
          c: application/sdp\r\n\
          k: replaces\r\ns: hello\r\no: refer\r\nr: <sip:c@d>\r\nb: <sip:e@f>\r\n\
          u: talk\r\nx: 1800\r\ny: sig\r\na: *;+sip.instance\r\ne: gzip\r\nj: *;x\r\nd: proxy\r\nn: <i>\r\n\
          l: 4\r\n\r\nv=0\r\n",
    );
    assert_eq!(m.call_id(), Some(&b"abc@h"[..]));
    assert_eq!(m.top_via().and_then(|v| v.branch), Some(&b"z9hG4bK1"[..]));
    assert_eq!(m.from().and_then(|f| f.tag), Some(&b"1"[..]));
    assert_eq!(m.to().map(|t| t.uri.host), Some(&b"b.example"[..]));
    assert_eq!(m.contact().map(|c| c.uri.host), Some(&b"192.0.2.1"[..]));
    assert_eq!(m.content_length(), Some(4));
    assert_eq!(m.body(), b"v=0\r");
    let expect: &[(HeaderName, &[u8])] = &[
        (HeaderName::ContentType, b"application/sdp"),
        (HeaderName::Supported, b"replaces"),
        (HeaderName::Subject, b"hello"),
        (HeaderName::Event, b"refer"),
        (HeaderName::ReferTo, b"<sip:c@d>"),
        (HeaderName::ReferredBy, b"<sip:e@f>"),
        (HeaderName::AllowEvents, b"talk"),
        (HeaderName::SessionExpires, b"1800"),
        (HeaderName::Identity, b"sig"),
        (HeaderName::AcceptContact, b"*;+sip.instance"),
        (HeaderName::ContentEncoding, b"gzip"),
        (HeaderName::RejectContact, b"*;x"),
        (HeaderName::RequestDisposition, b"proxy"),
        (HeaderName::IdentityInfo, b"<i>"),
    ];
    for (name, value) in expect {
        assert_eq!(m.header(*name), Some(*value), "{name:?}");
    }
    assert_eq!(m.header_by_name(b"Session-Expires"), Some(&b"1800"[..]));
    assert_eq!(m.header_by_name(b"I"), Some(&b"abc@h"[..]));
}

#[test]
fn folded_headers_and_space_before_colon() {
    let m = parse(&invite(
        "Subject : first line\r\n  second line\r\n\tthird\r\nX-Call-Id  :   pbx-42  \r\nNewFangled: a\r\n continued\r\n",
        "",
    ));
    assert_eq!(
        m.header(HeaderName::Subject),
        Some(&b"first line\r\n  second line\r\n\tthird"[..])
    );
    assert_eq!(m.header_by_name(b"x-call-id"), Some(&b"pbx-42"[..]));
    assert_eq!(
        m.header_by_name(b"newfangled"),
        Some(&b"a\r\n continued"[..])
    );
    assert_eq!(m.header_by_name(b"X-Missing"), None);
    let raw_names: Vec<&[u8]> = m.header_lines().map(|(_, raw, _)| raw).collect();
    assert!(raw_names.contains(&&b"X-Call-Id"[..]));
}

#[test]
fn uri_params_with_colons_and_gruu_contacts() {
    let m = parse(&invite(
        "Contact: <sip:101@10.0.0.5:5060;ob;gr=urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>;+sip.instance=\"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>\"\r\n",
        "",
    ));
    let c = m.contact().expect("contact");
    assert_eq!(
        c.uri.param(b"gr"),
        Some(&b"urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"[..])
    );
    assert_eq!(c.uri.port, Some(5060));
}

#[test]
fn cp1251_display_name_is_kept_byte_for_byte() {
    let mut text = invite("", "");
    let from = b"From: <sip:200@pbx.example>;tag=ft";
    let at = text
        .windows(from.len())
        .position(|w| w == from)
        .expect("From line");
    // "Иван Петров" in CP1251.
    let cp1251 =
        b"From: \"\xC8\xE2\xE0\xED \xCF\xE5\xF2\xF0\xEE\xE2\" <sip:200@pbx.example>;tag=ft";
    text.splice(at..at + from.len(), cp1251.iter().copied());
    let m = parse(&text);
    let f = m.from().expect("from");
    assert_eq!(
        f.display,
        Some(&b"\xC8\xE2\xE0\xED \xCF\xE5\xF2\xF0\xEE\xE2"[..])
    );
    assert_eq!(f.tag, Some(&b"ft"[..]));
}

#[test]
fn ipv6_two_value_via_line_and_several_via_lines() {
    let m = parse(&invite(
        "Via: SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bKv6a , SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKb\r\nv: SIP/2.0/UDP [::1];branch=z9hG4bKc;rport=5061\r\n",
        "",
    ));
    // The top Via is the first value of the first Via line.
    let top = m.top_via().expect("top via");
    assert_eq!(
        (top.transport, top.host, top.port),
        (&b"UDP"[..], &b"10.0.0.1"[..], Some(5060))
    );
    let branches: Vec<&[u8]> = m
        .values(HeaderName::Via)
        .map(|v| {
            super::super::Via::parse(v)
                .and_then(|v| v.branch)
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        branches,
        [&b"z9hG4bKtop"[..], b"z9hG4bKv6a", b"z9hG4bKb", b"z9hG4bKc"]
    );
    assert_eq!(m.headers(HeaderName::Via).count(), 3);
    let v6 = super::super::Via::parse(m.headers(HeaderName::Via).nth(1).unwrap_or_default())
        .expect("v6");
    assert_eq!(
        (v6.transport, v6.host, v6.port),
        (&b"TCP"[..], &b"[2001:db8::1]"[..], Some(5060))
    );

    let only_v6 = parse(
        b"OPTIONS sip:[2001:db8::2] SIP/2.0\r\nVia: SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bK77\r\n\
          From: <sip:a@[2001:db8::1]>;tag=1\r\nTo: <sip:[2001:db8::2]>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n",
    );
    assert_eq!(
        only_v6.top_via().map(|v| v.host),
        Some(&b"[2001:db8::1]"[..])
    );
}

#[test]
fn datagram_body_is_cut_to_content_length() {
    let mut text = invite("", "v=0\r\n");
    text.extend_from_slice(b"trailing garbage");
    let m = parse(&text);
    assert_eq!(m.body(), b"v=0\r\n");
    assert!(m.as_bytes().ends_with(b"\r\n\r\nv=0\r\n"));
    // No Content-Length on a datagram: the body is the rest.
    let no_cl = b"MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:c@d>;tag=1\r\n\
                  To: <sip:a@b>\r\nCall-ID: m\r\nCSeq: 1 MESSAGE\r\n\r\nhello";
    assert_eq!(parse(no_cl).body(), b"hello");
    assert_eq!(parse(no_cl).content_length(), None);
}

#[test]
fn responses_parse_status_and_reason() {
    let base = "Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: r\r\nCSeq: 1 INVITE\r\n\r\n";
    let cases: &[(&[u8], u16, &[u8])] = &[
        (b"SIP/2.0 200 OK", 200, b"OK"),
        (b"SIP/2.0 180 ", 180, b""),
        (b"SIP/2.0 100", 100, b""),
        (b"sip/2.0 302 Moved Temporarily", 302, b"Moved Temporarily"),
        (
            b"SIP/2.0 486 \xc7\xe0\xed\xff\xf2",
            486,
            b"\xc7\xe0\xed\xff\xf2",
        ),
    ];
    for (line, status, reason) in cases {
        let mut text = line.to_vec();
        text.extend_from_slice(b"\r\n");
        text.extend_from_slice(base.as_bytes());
        let m = parse(&text);
        assert!(!m.is_request());
        assert_eq!(
            (m.status(), m.reason(), m.method()),
            (Some(*status), Some(*reason), None)
        );
    }
}

#[test]
fn start_line_errors() {
    let rest = "\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: r\r\nCSeq: 1 INVITE\r\n\r\n";
    let cases: &[(&str, ParseError)] = &[
        ("INVITE sip:a@b SIP/3.0", ParseError::BadVersion),
        ("INVITE sip:a@b HTTP/1.1", ParseError::BadStartLine),
        ("INVITE sip:a@b", ParseError::BadStartLine),
        ("INVITE", ParseError::BadStartLine),
        ("INV ITE sip:a@b SIP/2.0", ParseError::BadRequestUri),
        ("INVITE <sip:a@b> SIP/2.0", ParseError::BadRequestUri),
        ("INVITE  sip:a@b SIP/2.0", ParseError::BadStartLine),
        ("INVITE sip:a@b SIP/2.0 ", ParseError::BadStartLine),
        ("INV\u{7f}TE sip:a@b SIP/2.0", ParseError::BadStartLine),
        ("SIP/2.0 99 Low", ParseError::BadStatus),
        ("SIP/2.0 700 High", ParseError::BadStatus),
        ("SIP/2.0 2000 Long", ParseError::BadStatus),
        ("SIP/2.0 20x OK", ParseError::BadStatus),
        ("SIP/2.1 200 OK", ParseError::BadVersion),
    ];
    for (line, err) in cases {
        assert_eq!(
            parse_err(format!("{line}{rest}").as_bytes()),
            *err,
            "{line:?}"
        );
    }
}

#[test]
fn header_section_errors() {
    assert_eq!(parse_err(b""), ParseError::Empty);
    assert_eq!(parse_err(b"\r\n\r\n"), ParseError::Empty);
    assert_eq!(
        parse_err(b"INVITE sip:a@b SIP/2.0"),
        ParseError::UnterminatedHeaders
    );
    assert_eq!(
        parse_err(b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n"),
        ParseError::UnterminatedHeaders
    );
    assert_eq!(
        parse_err(&invite("this line has no colon\r\n", "")),
        ParseError::BadHeader { line: 7 }
    );
    assert_eq!(
        parse_err(&invite("Bad Name: x\r\n", "")),
        ParseError::BadHeader { line: 7 }
    );
    let many = "X-H: 1\r\n".repeat(60);
    assert_eq!(parse_err(&invite(&many, "")), ParseError::TooManyHeaders);
    let big = format!("X-Big: {}\r\n", "a".repeat(super::MAX_MESSAGE));
    assert_eq!(parse_err(&invite(&big, "")), ParseError::TooLarge);
    // Leading CRLFs (stream keep-alives) are skipped, and excluded from as_bytes().
    let mut text = b"\r\n\r\n".to_vec();
    text.extend(invite("", ""));
    assert!(parse(&text).as_bytes().starts_with(b"INVITE "));
}

#[test]
fn acceptance_rules() {
    let cases: &[(&str, ParseError)] = &[
        (
            "X: y\r\nCall-ID: again\r\n",
            ParseError::DuplicateHeader("Call-ID"),
        ),
        (
            "Max-Forwards: 70\r\nMax-Forwards: 69\r\n",
            ParseError::DuplicateHeader("Max-Forwards"),
        ),
        (
            "Max-Forwards: 256\r\n",
            ParseError::BadHeaderValue("Max-Forwards"),
        ),
        (
            "Max-Forwards: ten\r\n",
            ParseError::BadHeaderValue("Max-Forwards"),
        ),
        (
            "Contact: <sip:a@b>, sip:c@d?x=y\r\n",
            ParseError::BadHeaderValue("Contact"),
        ),
        ("l: 3\r\n", ParseError::BadContentLength),
    ];
    for (extra, err) in cases {
        assert_eq!(parse_err(&invite(extra, "")), *err, "{extra:?}");
    }
    // A Date outside GMT is tolerated: callgate never reads Date.
    assert!(SipMessage::parse(invite("Date: Sat, 13 Nov 2010 23:29:00 PST\r\n", "").into()).is_ok());
    assert_eq!(
        parse_err(&invite("", "abc")[..invite("", "abc").len() - 1]),
        ParseError::BodyTooShort
    );
    let ok = parse(&invite(
        "Max-Forwards: 0\r\nContact: *\r\nDate: Sat, 13 Nov 2010 23:29:00 GMT\r\n",
        "",
    ));
    assert_eq!(
        (ok.max_forwards(), ok.method()),
        (Some(0), Some(Method::Invite))
    );
}

#[test]
fn missing_and_mismatched_headers_can_still_be_indexed_for_a_400() {
    let text =
        b"BYE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nTo: <sip:a@b>;tag=2\r\n\
                 Call-ID: q\r\nCSeq: 5 INVITE\r\nContent-Length: 99\r\n\r\n";
    assert_eq!(parse_err(text), ParseError::BodyTooShort);
    let m = SipMessage::parse_unvalidated(Bytes::copy_from_slice(text)).expect("indexable");
    assert_eq!(
        (m.call_id(), m.from().is_none(), m.body()),
        (Some(&b"q"[..]), true, &b""[..])
    );
    let fixed = [&text[..text.len() - 22], b"Content-Length: 0\r\n\r\n"].concat();
    assert_eq!(parse_err(&fixed), ParseError::MissingHeader("From"));
}
