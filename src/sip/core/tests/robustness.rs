//! No-panic sweep: every single-byte mutation and every truncation of a realistic INVITE goes
//! through `parse`, `parse_unvalidated`, every accessor, `frame_stream` and `write_response`.
//! A poor man's fuzzer that runs in `cargo test` (bounded: about 25k variants, well under a
//! second in debug builds, where integer overflow checks are on).

use bytes::{Bytes, BytesMut};

use super::super::{
    frame_stream, to_tag_for, write_response, HeaderName, NameAddr, SipMessage, Uri, Via,
};

const SAMPLE: &[u8] = b"INVITE sip:pm-route@gw.example;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK-1;rport , SIP/2.0/TCP h2;branch=z9hG4bK-2\r\n\
Max-Forwards: 70\r\n\
From: \"\xC8\xE2\xE0\xED \\\"x\\\"\" <sip:+74951234567@pbx.example>;tag=abc\r\n\
To : <sip:pm-route@gw.example;gr=urn:uuid:1-2>\r\n\
i: c-1@10.0.0.1\r\n\
CSeq: 42 INVITE\r\n\
Contact: <sip:a@10.0.0.1:5060;ob>;expires=60, sip:b@h\r\n\
Subject: folded\r\n value\r\n\
l: 10\r\n\
\r\n\
v=0\r\no=x\r\n";

const MUTATIONS: [u8; 12] = [
    0x00, 0xFF, b':', b'\n', b'\r', b' ', b'"', b'<', b'>', b';', b',', b'9',
];

#[test]
fn sample_is_valid() {
    let m = SipMessage::parse(Bytes::from_static(SAMPLE)).expect("sample parses");
    exercise(&m);
    assert_eq!(m.body(), b"v=0\r\no=x\r\n");
}

#[test]
fn every_single_byte_mutation_is_handled() {
    let mut variant = SAMPLE.to_vec();
    for pos in 0..SAMPLE.len() {
        for &byte in &MUTATIONS {
            variant[pos] = byte;
            run(&variant);
        }
        variant[pos] = SAMPLE[pos];
    }
}

#[test]
fn every_truncation_and_extension_is_handled() {
    for len in 0..=SAMPLE.len() {
        run(&SAMPLE[..len]);
        // The same prefix with junk after it (trailing datagram bytes, a second frame).
        let mut extended = SAMPLE[..len].to_vec();
        extended.extend_from_slice(b"\r\n\r\n\xFF");
        run(&extended);
    }
}

#[test]
fn degenerate_inputs_are_handled() {
    let many_headers = format!("OPTIONS sip:a@b SIP/2.0\r\n{}\r\n", "v:x\r\n".repeat(100));
    let inputs: &[&[u8]] = &[
        b"",
        b"\r",
        b"\n",
        b"\r\n\r\n",
        b":",
        b" ",
        b"\0\0\0",
        b"SIP/2.0",
        b"SIP/2.0 ",
        b"SIP/",
        b"A B C\r\n\r\n",
        b"A B C\n\n",
        b"\n\n\n\nX",
        b"INVITE sip:a@b SIP/2.0\r\n \r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nVia:\r\n\r\n",
        many_headers.as_bytes(),
        b"SIP/2.0 200 OK\r\nl: 4294967295\r\n\r\n",
        b"SIP/2.0 200 OK\r\nl: 18446744073709551616\r\n\r\n",
    ];
    for input in inputs {
        run(input);
    }
    run(&vec![b'\n'; 70_000]);
    run(&vec![b'a'; 70_000]);
}

#[test]
fn random_multi_byte_mutations_of_the_torture_messages_are_handled() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc4475/");
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64; // xorshift64: deterministic, no dependency
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for entry in std::fs::read_dir(dir).expect("test data directory") {
        let original = std::fs::read(entry.expect("dir entry").path()).expect("readable");
        if original.is_empty() {
            continue;
        }
        for _ in 0..200 {
            let mut variant = original.clone();
            for _ in 0..=(next() % 4) {
                let pos = (next() % variant.len() as u64) as usize;
                variant[pos] = next() as u8;
            }
            variant.truncate((next() % (variant.len() as u64 + 1)) as usize);
            run(&variant);
        }
    }
}

/// Drives every entry point on one input; only a panic fails the test.
fn run(input: &[u8]) {
    let _ = frame_stream(input, 65_535);
    let _ = frame_stream(input, 0);
    let bytes = Bytes::copy_from_slice(input);
    if let Ok(m) = SipMessage::parse(bytes.clone()) {
        exercise(&m);
    }
    if let Ok(m) = SipMessage::parse_unvalidated(bytes) {
        exercise(&m);
    }
    // The value parsers must also survive any raw slice.
    let _ = (Uri::parse(input), NameAddr::parse(input), Via::parse(input));
}

fn exercise(m: &SipMessage) {
    let _ = (
        m.as_bytes(),
        m.is_request(),
        m.method(),
        m.method_raw(),
        m.request_uri(),
    );
    let _ = (
        m.status(),
        m.reason(),
        m.call_id(),
        m.cseq(),
        m.top_via(),
        m.from(),
        m.to(),
    );
    let _ = (
        m.contact(),
        m.max_forwards(),
        m.content_length(),
        m.body(),
        m.start_line(),
    );
    let _ = m.request_uri().map(Uri::parse);
    let _ = m.header_by_name(b"x-unknown");
    for (name, _, value) in m.header_lines() {
        let _ = (m.header(name), Via::parse(value), NameAddr::parse(value));
    }
    let _ = m.values(HeaderName::Contact).map(NameAddr::parse).count();
    let _ = to_tag_for(m);
    let mut out = BytesMut::new();
    write_response(
        m,
        400,
        "Bad Request",
        Some(b"tag"),
        &[("X-A", b"b")],
        &mut out,
    );
    if m.is_request() && SipMessage::parse(Bytes::copy_from_slice(m.as_bytes())).is_ok() {
        // A response to a valid request must itself be valid.
        if let Err(e) = SipMessage::parse(out.clone().freeze()) {
            panic!(
                "{e}: {:?}\n=> {:?}",
                String::from_utf8_lossy(m.as_bytes()),
                String::from_utf8_lossy(&out)
            );
        }
    }
}
