use super::*;

const PBX_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
m=audio 20000 RTP/AVP 8 0 9 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n";

// Shaped like Chrome's audio-only offer (trimmed).
const CHROME_OFFER: &str = "v=0\r\no=- 46 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\na=fingerprint:sha-256 AA:BB\r\na=setup:actpass\r\na=mid:0\r\n\
a=sendrecv\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:63 red/48000/2\r\na=fmtp:63 111/111\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:13 CN/8000\r\na=rtpmap:110 telephone-event/48000\r\na=rtpmap:126 telephone-event/8000\r\n";

#[test]
fn plain_offers_parse() {
    // (sdp, addr, port, first g711, dtmf pt, direction, ptime)
    type Row = (
        String,
        Option<&'static str>,
        u16,
        Option<(G711, u8)>,
        Option<u8>,
        Direction,
        Option<u32>,
    );
    let table: Vec<Row> = vec![
        (PBX_OFFER.into(), Some("192.0.2.10"), 20000, Some((G711::Pcma, 8)), Some(101), Direction::SendRecv, Some(20)),
        // static PTs without rtpmap, LF line ends, media-level c= wins
        ("v=0\nc=IN IP4 10.0.0.1\nt=0 0\nm=audio 4000 RTP/AVP 0\nc=IN IP4 10.0.0.2\na=sendonly\n".into(),
            Some("10.0.0.2"), 4000, Some((G711::Pcmu, 0)), None, Direction::SendOnly, None),
        // RFC 2543 hold: c=0.0.0.0 with sendrecv means the author only sends
        ("v=0\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8\r\n".into(),
            None, 4000, Some((G711::Pcmu, 0)), None, Direction::SendOnly, None),
        ("v=0\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=recvonly\r\n".into(),
            None, 4000, Some((G711::Pcmu, 0)), None, Direction::Inactive, None),
        // session-level direction, a dynamic PT for PCMU, IPv6
        ("v=0\r\nc=IN IP6 ::1\r\na=inactive\r\nt=0 0\r\nm=audio 4002 RTP/AVP 96\r\na=rtpmap:96 pcmu/8000\r\n".into(),
            Some("::1"), 4002, Some((G711::Pcmu, 96)), None, Direction::Inactive, None),
        // no G.711 at all
        ("v=0\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 9\r\n".into(),
            Some("10.0.0.1"), 4000, None, None, Direction::SendRecv, None),
        // video first, audio second
        ("v=0\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=video 5000 RTP/AVP 96\r\na=sendonly\r\nm=audio 4000 RTP/AVP 8\r\n".into(),
            Some("10.0.0.1"), 4000, Some((G711::Pcma, 8)), None, Direction::SendRecv, None),
    ];
    for (i, (sdp, addr, port, g711, dtmf, dir, ptime)) in table.into_iter().enumerate() {
        let a = parse_plain(sdp.as_bytes()).unwrap_or_else(|e| panic!("case {i}: {e}"));
        assert_eq!(a.addr, addr.map(|s| s.parse().unwrap()), "case {i}");
        assert_eq!(
            (a.port, a.first_g711(), a.dtmf_pt(), a.direction, a.ptime),
            (port, g711, dtmf, dir, ptime),
            "case {i}"
        );
    }
}

#[test]
fn broken_sdps_are_refused() {
    let table: &[&[u8]] = &[
        b"",
        b"v=0\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n", // no audio
        b"v=0\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n", // rejected
        b"v=0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n", // no c=
        b"v=0\r\nc=IN IP4 pbx.example\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n", // not an IP
        b"v=0\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio x RTP/AVP 0\r\n", // bad port
        b"v=0\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 abc\r\n", // bad PT
        b"v=0\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU\r\n", // no rate
        b"\xff\xfe",
    ];
    for (i, sdp) in table.iter().enumerate() {
        assert!(
            matches!(parse_plain(sdp), Err(MediaError::BadSdp(_))),
            "case {i}"
        );
    }
}

#[test]
fn chrome_offer_is_understood_and_filtered_to_one_codec() {
    let a = parse_webrtc(CHROME_OFFER.as_bytes()).unwrap();
    assert_eq!(a.g711s(), vec![G711::Pcmu, G711::Pcma]);
    assert_eq!(
        a.dtmf_pt(),
        Some(126),
        "telephone-event/48000 (110) is not ours"
    );
    assert_eq!(a.proto, "UDP/TLS/RTP/SAVPF");

    let f = keep_formats(CHROME_OFFER, &[8, 126]).unwrap();
    assert!(f.contains("m=audio 9 UDP/TLS/RTP/SAVPF 8 126\r\n"), "{f}");
    for gone in [
        "opus",
        "red/",
        "G722",
        "PCMU",
        "CN/",
        "telephone-event/48000",
        "a=fmtp:111",
        "a=rtcp-fb:111",
    ] {
        assert!(!f.contains(gone), "{gone} left in:\n{f}");
    }
    for kept in [
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:126 telephone-event/8000",
        "a=ice-ufrag:abcd",
        "a=rtcp-mux",
        "a=setup:actpass",
    ] {
        assert!(f.contains(kept), "{kept} missing in:\n{f}");
    }
    let again = parse_webrtc(f.as_bytes()).unwrap();
    assert_eq!(
        (again.first_g711(), again.dtmf_pt()),
        (Some((G711::Pcma, 8)), Some(126))
    );

    assert!(matches!(
        keep_formats(CHROME_OFFER, &[18]),
        Err(MediaError::NoCommonCodec)
    ));
}

#[test]
fn plain_sdp_is_built_and_parses_back() {
    let table = [
        (
            &[(G711::Pcmu, 0u8)][..],
            Some(101u8),
            Direction::SendRecv,
            "m=audio 30000 RTP/AVP 0 101\r\n",
        ),
        (
            &[(G711::Pcmu, 0), (G711::Pcma, 8)][..],
            Some(101),
            Direction::SendOnly,
            "m=audio 30000 RTP/AVP 0 8 101\r\n",
        ),
        (
            &[(G711::Pcma, 8)][..],
            None,
            Direction::Inactive,
            "m=audio 30000 RTP/AVP 8\r\n",
        ),
    ];
    for (codecs, dtmf_pt, direction, m_line) in table {
        let s = build_plain(&PlainParams {
            session_id: 7,
            version: 2,
            ip: "127.0.0.1".parse().unwrap(),
            port: 30000,
            codecs,
            dtmf_pt,
            direction,
            ptime: 20,
        });
        assert!(s.contains(m_line), "{s}");
        assert!(
            s.starts_with("v=0\r\no=callgate 7 2 IN IP4 127.0.0.1\r\n"),
            "{s}"
        );
        let back = parse_plain(s.as_bytes()).unwrap();
        assert_eq!(back.g711s(), codecs.iter().map(|c| c.0).collect::<Vec<_>>());
        assert_eq!(
            (back.dtmf_pt(), back.direction, back.port, back.ptime),
            (dtmf_pt, direction, 30000, Some(20))
        );
    }
}

#[test]
fn direction_is_replaced_in_the_audio_section() {
    let table = [
        (CHROME_OFFER, Direction::SendOnly),
        ("v=0\r\nt=0 0\r\na=sendrecv\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\n", Direction::Inactive),
        ("v=0\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendrecv\r\n", Direction::RecvOnly),
    ];
    for (i, (sdp, dir)) in table.into_iter().enumerate() {
        let out = set_direction(sdp, dir);
        let audio = out.split("m=video").next().unwrap();
        assert_eq!(
            audio.matches("a=sendrecv").count()
                + audio.matches("a=sendonly").count()
                + audio.matches("a=recvonly").count()
                + audio.matches("a=inactive").count(),
            1,
            "case {i}: {out}"
        );
        assert_eq!(
            parse_webrtc(out.as_bytes()).unwrap().direction,
            dir,
            "case {i}"
        );
        assert!(
            out.split("m=video")
                .nth(1)
                .is_none_or(|v| v.contains("a=sendrecv")),
            "other sections untouched: {out}"
        );
    }
}

#[test]
fn answers_are_clamped_to_the_offer() {
    use Direction::*;
    // (answer as given, offer, answer we pass on)
    let table = [
        (SendRecv, SendRecv, SendRecv),
        (SendRecv, SendOnly, RecvOnly),
        (SendRecv, RecvOnly, SendOnly),
        (SendRecv, Inactive, Inactive),
        (RecvOnly, SendOnly, RecvOnly),
        (SendOnly, SendOnly, Inactive),
        (Inactive, SendRecv, Inactive),
    ];
    for (answer, offer, want) in table {
        assert_eq!(answer.answering(offer), want, "{answer:?} to {offer:?}");
    }
}

#[test]
fn dtls_roles_are_read_and_kept() {
    let table = [
        ("a=setup:actpass\r\n", None),
        ("a=setup:active\r\n", Some(DtlsRole::Active)),
        ("a=setup:passive\r\n", Some(DtlsRole::Passive)),
        ("a=mid:0\r\n", None),
    ];
    for (line, want) in table {
        let sdp = format!("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n{line}");
        assert_eq!(dtls_role(&sdp), want, "{line}");
        let kept = set_dtls_role(&sdp, DtlsRole::Passive);
        assert_eq!(
            kept.contains("a=setup:passive"),
            want.is_some() || line.contains("actpass"),
            "{kept}"
        );
        assert!(
            !kept.contains("a=setup:active") && !kept.contains("actpass"),
            "{kept}"
        );
    }
    assert_eq!(DtlsRole::Active.peer(), DtlsRole::Passive);
}
