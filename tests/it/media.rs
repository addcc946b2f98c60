//! The media anchor end to end on loopback, with the `webrtc` crate (0.21.1) as the browser
//! (`media/browser.rs`) and a UDP socket as the PBX: both offer directions, payload bytes
//! relayed unchanged, our SSRC and continuous numbering per leg, telephone-event PT remapped,
//! hold re-offers from either side, close freeing ports and peer connections, and a vanished
//! browser reported as `BrowserGone`. Every wait is bounded (10 s).

pub mod browser;
pub mod office;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use browser::{FakeBrowser, BROWSER_DTMF_PT};
use callgate::webrtc::media::{MediaAnchor, MediaConfig, MediaError, MediaEvent, SessionId};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(10);

pub async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Each test gets its own port ranges so parallel tests never collide.
pub fn config(base: u16) -> MediaConfig {
    MediaConfig {
        bind_ip: "127.0.0.1".parse().unwrap(),
        advertise_ip: None,
        webrtc_ports: (base, base + 9),
        rtp_ports: (base + 10, base + 29),
        max_sessions: 4,
        consent_timeout: Duration::from_secs(4),
        idle_timeout: Duration::from_secs(300),
    }
}

pub fn pbx_sdp(port: u16, m: &str, extra: &str) -> String {
    format!(
        "v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=pbx\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP {m}\r\n\
         a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n{extra}"
    )
}

pub fn m_line(sdp: &str) -> &str {
    sdp.lines()
        .find(|l| l.starts_with("m=audio"))
        .unwrap_or_else(|| panic!("no m=audio in {sdp}"))
}

pub fn our_rtp_port(plain: &str) -> u16 {
    m_line(plain)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

pub fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0x80, pt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    b[2..4].copy_from_slice(&seq.to_be_bytes());
    b[4..8].copy_from_slice(&ts.to_be_bytes());
    b[8..12].copy_from_slice(&ssrc.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

/// The payload of PBX packet `i`: distinct bytes, so the browser can prove nothing was changed.
pub fn payload(i: u16) -> Vec<u8> {
    (0..160u16)
        .map(|k| (i.wrapping_mul(7).wrapping_add(k)) as u8)
        .collect()
}

pub const PBX_SSRC: u32 = 0x5151_5151;

/// Sends `pt` audio every 20 ms (at most 500 packets) until `stop`; every 10th packet is a
/// telephone-event packet with `dtmf_pt`.
pub fn pbx_sender(
    sock: std::sync::Arc<UdpSocket>,
    to: SocketAddr,
    pt: u8,
    dtmf_pt: u8,
    stop: CancellationToken,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for i in 0..500u16 {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let (p, body) = if i % 10 == 9 {
                (dtmf_pt, vec![5, 0x0a, 0, 160])
            } else {
                (pt, payload(i))
            };
            let _ = sock
                .send_to(&rtp(p, 1000 + i, 160 * u32::from(i), PBX_SSRC, &body), to)
                .await;
        }
    });
}

/// Collects `n` packets the browser received, bounded.
pub async fn browser_gets(b: &mut FakeBrowser, n: usize) -> Vec<browser::Rtp> {
    let rx = b.rx.as_mut().unwrap();
    let mut v = Vec::new();
    while v.len() < n {
        v.push(
            bounded("browser RTP", rx.recv())
                .await
                .expect("browser track ended"),
        );
    }
    v
}

/// Receives `n` RTP packets at the PBX socket, bounded; returns (pt, seq, ssrc, payload).
pub async fn pbx_gets(sock: &UdpSocket, n: usize) -> Vec<(u8, u16, u32, Vec<u8>)> {
    let mut buf = [0u8; 2048];
    let mut v = Vec::new();
    while v.len() < n {
        let (len, _) = bounded("PBX RTP", sock.recv_from(&mut buf)).await.unwrap();
        let b = &buf[..len];
        let seq = u16::from_be_bytes([b[2], b[3]]);
        let ssrc = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
        v.push((b[1] & 0x7f, seq, ssrc, b[12..].to_vec()));
    }
    v
}

pub async fn browser_sends(b: &FakeBrowser, pt: u8, count: u16) {
    for i in 0..count {
        assert!(b.send(pt, 7000 + i, 160 * u32::from(i), &[0xd5; 160]).await || i == 0);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    bounded(what, async {
        for _ in 0..1000 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never: {what}");
    })
    .await;
}

pub async fn all_released(anchor: &MediaAnchor) {
    wait_until("sessions, ports and peer connections released", || {
        anchor.open_sessions() == 0
            && anchor.ports_in_use() == (0, 0)
            && anchor.live_peer_connections() == 0
    })
    .await;
}

pub async fn next_gone(events: &mut mpsc::Receiver<MediaEvent>, id: SessionId) -> &'static str {
    bounded("BrowserGone", async {
        loop {
            match events.recv().await {
                Some(MediaEvent::BrowserGone { id: got, reason }) if got == id => return reason,
                Some(_) => {}
                None => panic!("event channel closed"),
            }
        }
    })
    .await
}

#[tokio::test]
async fn pbx_calls_a_browser_media_is_relayed_unchanged_both_ways_and_hold_carries_over() {
    let (anchor, _events) = MediaAnchor::start(config(42_100)).await.unwrap();
    let pbx = std::sync::Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let pbx_port = pbx.local_addr().unwrap().port();
    // The PBX's RTCP socket, announced with a=rtcp (not port+1).
    let pbx_rtcp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let rtcp_attr = format!(
        "a=rtcp:{}\r\na=sendrecv\r\n",
        pbx_rtcp.local_addr().unwrap().port()
    );

    // The PBX offers PCMU first: the browser is offered PCMU + telephone-event only.
    let (id, offer) = bounded(
        "pbx_offer",
        anchor.pbx_offer("t1", pbx_sdp(pbx_port, "0 8 101", &rtcp_attr).as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(
        m_line(&offer)
            .split_whitespace()
            .skip(2)
            .collect::<Vec<_>>(),
        ["UDP/TLS/RTP/SAVPF", "0", "101"],
        "{offer}"
    );
    for want in [
        "a=ice-lite",
        "a=setup:actpass",
        "a=rtcp-mux",
        "a=rtpmap:0 PCMU/8000",
        "telephone-event/8000",
        "a=fingerprint:",
        "127.0.0.1",
    ] {
        assert!(
            offer.contains(want),
            "{want} missing in our WebRTC offer:\n{offer}"
        );
    }
    assert!(
        !offer.contains("PCMA") && !offer.contains("opus"),
        "{offer}"
    );

    let mut b = FakeBrowser::new(&[("audio/PCMU", 0)], true).await;
    let answer = bounded("browser answer", b.answer(&offer)).await;
    let plain = bounded(
        "browser_answer",
        anchor.browser_answer(id, answer.as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(
        m_line(&plain),
        format!("m=audio {} RTP/AVP 0 101", our_rtp_port(&plain)),
        "{plain}"
    );
    assert!(
        plain.contains("c=IN IP4 127.0.0.1") && plain.contains("a=sendrecv"),
        "{plain}"
    );
    assert!(
        b.connected(WAIT).await,
        "browser never connected (ICE-lite + DTLS)"
    );

    // PBX -> browser: same payload bytes, PT 0, our SSRC (not the PBX's), DTMF PT 101 both sides.
    let stop = CancellationToken::new();
    let to_anchor: SocketAddr = format!("127.0.0.1:{}", our_rtp_port(&plain))
        .parse()
        .unwrap();
    pbx_sender(pbx.clone(), to_anchor, 0, 101, stop.clone());
    let got = browser_gets(&mut b, 25).await;
    let ssrc = got[0].ssrc;
    assert_ne!(ssrc, PBX_SSRC, "the browser leg has our own SSRC");
    let mut dtmf = 0;
    for w in got.windows(2) {
        assert_eq!(w[1].ssrc, ssrc);
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1), "continuous seq");
    }
    for p in &got {
        match p.pt {
            0 => assert!(
                (0..500).any(|i| payload(i) == p.payload),
                "payload changed on the way"
            ),
            101 => dtmf += 1,
            other => panic!("unexpected PT {other} at the browser"),
        }
    }
    assert!(dtmf >= 1, "telephone-event relayed");

    // Browser -> PBX: PT 0, our SSRC toward the PBX, increasing seq, bytes unchanged.
    browser_sends(&b, 0, 30).await;
    let back = pbx_gets(&pbx, 20).await;
    let pbx_ssrc = back[0].2;
    assert!(
        pbx_ssrc != b.ssrc && pbx_ssrc != ssrc,
        "own SSRC toward the PBX"
    );
    for w in back.windows(2) {
        assert_eq!((w[1].0, w[1].2), (0, pbx_ssrc));
        assert!(w[1].1.wrapping_sub(w[0].1) as i16 > 0, "increasing seq");
    }
    assert!(back.iter().all(|p| p.3 == [0xd5; 160]));
    // RTCP toward the PBX (a=rtcp port): SR, or RR before we sent RTP, from the SSRC of our RTP.
    let mut rbuf = [0u8; 1500];
    let (n, _) = bounded("RTCP at the PBX", pbx_rtcp.recv_from(&mut rbuf))
        .await
        .unwrap();
    assert!(
        n >= 8 && rbuf[0] >> 6 == 2 && (rbuf[1] == 200 || rbuf[1] == 201),
        "{:?}",
        &rbuf[..n]
    );
    assert_eq!(
        u32::from_be_bytes([rbuf[4], rbuf[5], rbuf[6], rbuf[7]]),
        pbx_ssrc,
        "SR/RR from our SSRC"
    );
    let st = anchor.stats(id).unwrap();
    assert!(st.dtls_connected && st.codec == Some("PCMU"), "{st:?}");
    assert!(
        st.from_pbx_packets >= 25 && st.to_browser_packets >= 25 && st.to_pbx_packets >= 20,
        "{st:?}"
    );
    assert_eq!(
        st.pbx_latched,
        Some(pbx.local_addr().unwrap()),
        "latched onto the PBX's own source"
    );
    assert_eq!(
        (st.foreign_rtp_dropped, st.foreign_rtcp_dropped),
        (0, 0),
        "{st:?}"
    );

    // The PBX holds (sendonly): the browser is offered sendonly, its recvonly goes back.
    let re = bounded(
        "pbx_reoffer",
        anchor.pbx_reoffer(id, pbx_sdp(pbx_port, "0 101", "a=sendonly\r\n").as_bytes()),
    )
    .await
    .unwrap();
    assert!(
        re.contains("a=sendonly") && !re.contains("a=sendrecv"),
        "{re}"
    );
    // Our DTLS role stays the one the first exchange gave us (no actpass, no flip).
    let ours = if answer.contains("a=setup:passive") {
        "a=setup:active"
    } else {
        "a=setup:passive"
    };
    assert!(
        re.contains(ours) && !re.contains("actpass"),
        "{ours} expected in:\n{re}"
    );
    let re_answer = bounded("browser re-answer", b.answer(&re)).await;
    let re_plain = bounded(
        "browser_reanswer",
        anchor.browser_reanswer(id, re_answer.as_bytes()),
    )
    .await
    .unwrap();
    assert!(
        re_plain.contains("a=recvonly") && our_rtp_port(&re_plain) == our_rtp_port(&plain),
        "{re_plain}"
    );
    // Music on hold still reaches the browser with the same SSRC, numbering continuing.
    let last = got.last().unwrap().seq;
    let more = browser_gets(&mut b, 40).await;
    assert!(more.iter().all(|p| p.ssrc == ssrc));
    assert!(more.last().unwrap().seq.wrapping_sub(last) < 1000);

    stop.cancel();
    anchor.close(id);
    anchor.close(id); // idempotent
    assert!(anchor.stats(id).is_none());
    all_released(&anchor).await;
    b.close().await;
}

#[tokio::test]
async fn browser_calls_out_the_pbx_picks_pcma_dtmf_pts_are_remapped_and_a_vanished_browser_is_reported(
) {
    let (anchor, mut events) = MediaAnchor::start(config(42_200)).await.unwrap();
    let pbx = std::sync::Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let pbx_port = pbx.local_addr().unwrap().port();

    let mut b = FakeBrowser::new(&[("audio/PCMU", 0), ("audio/PCMA", 8)], true).await;
    let offer = bounded("browser offer", b.offer()).await;
    let (id, plain) = bounded(
        "browser_offer",
        anchor.browser_offer("t2", offer.as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(
        m_line(&plain),
        format!("m=audio {} RTP/AVP 0 8 101", our_rtp_port(&plain)),
        "{plain}"
    );
    for want in [
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "c=IN IP4 127.0.0.1",
    ] {
        assert!(plain.contains(want), "{want} missing in:\n{plain}");
    }

    // The PBX answers with PCMA: the browser's answer carries PCMA + its own telephone-event PT.
    let pbx_answer = pbx_sdp(pbx_port, "8 101", "a=sendrecv\r\n");
    let answer = bounded("pbx_answer", anchor.pbx_answer(id, pbx_answer.as_bytes()))
        .await
        .unwrap();
    let fmts: Vec<&str> = m_line(&answer).split_whitespace().skip(3).collect();
    assert_eq!(
        fmts,
        ["8".to_owned(), BROWSER_DTMF_PT.to_string()],
        "{answer}"
    );
    assert!(
        !answer.contains("PCMU") && answer.contains("a=ice-lite"),
        "{answer}"
    );
    bounded("browser applies answer", b.accept_answer(&answer)).await;
    assert!(b.connected(WAIT).await, "browser never connected");

    // PBX PCMA + DTMF 101 -> browser PCMA + DTMF 126.
    let stop = CancellationToken::new();
    let to_anchor: SocketAddr = format!("127.0.0.1:{}", our_rtp_port(&plain))
        .parse()
        .unwrap();
    pbx_sender(pbx.clone(), to_anchor, 8, 101, stop.clone());
    let got = browser_gets(&mut b, 25).await;
    assert!(
        got.iter().all(|p| p.pt == 8 || p.pt == BROWSER_DTMF_PT),
        "PTs at the browser"
    );
    assert!(
        got.iter().any(|p| p.pt == BROWSER_DTMF_PT),
        "telephone-event remapped 101 -> 126"
    );
    assert!(got
        .iter()
        .filter(|p| p.pt == 8)
        .all(|p| (0..500).any(|i| payload(i) == p.payload)));

    // Browser DTMF 126 -> PBX DTMF 101.
    browser_sends(&b, BROWSER_DTMF_PT, 10).await;
    let back = pbx_gets(&pbx, 5).await;
    assert!(
        back.iter().all(|p| p.0 == 101),
        "telephone-event remapped 126 -> 101: {:?}",
        back.iter().map(|p| p.0).collect::<Vec<_>>()
    );
    let st = anchor.stats(id).unwrap();
    assert!(st.dtmf_packets >= 5, "{st:?}");
    assert_eq!(
        st.pbx_latched,
        Some(pbx.local_addr().unwrap()),
        "latched onto the PBX's own source (its answer's address)"
    );

    // The browser holds (sendonly): the PBX is offered sendonly, its recvonly goes back.
    let re = bounded("browser re-offer", b.offer())
        .await
        .replace("a=sendrecv", "a=sendonly");
    let re_plain = bounded("browser_reoffer", anchor.browser_reoffer(id, re.as_bytes()))
        .await
        .unwrap();
    assert!(
        re_plain.contains("a=sendonly") && m_line(&re_plain).ends_with("RTP/AVP 8 101"),
        "{re_plain}"
    );
    let re_answer = bounded(
        "pbx_reanswer",
        anchor.pbx_reanswer(id, pbx_sdp(pbx_port, "8 101", "a=recvonly\r\n").as_bytes()),
    )
    .await
    .unwrap();
    assert!(
        re_answer.contains("a=recvonly") && !re_answer.contains("a=sendrecv"),
        "{re_answer}"
    );
    let setup = |sdp: &str| {
        sdp.lines()
            .find(|l| l.starts_with("a=setup:"))
            .map(str::to_owned)
    };
    assert_eq!(
        setup(&re_answer),
        setup(&answer),
        "the DTLS role is kept in the re-answer"
    );
    bounded("browser applies re-answer", b.accept_answer(&re_answer)).await;
    // Media still flows to the browser after the re-negotiation (same DTLS session).
    let rx = b.rx.as_mut().unwrap();
    while rx.try_recv().is_ok() {}
    let after = browser_gets(&mut b, 10).await;
    assert!(after.iter().all(|p| p.pt == 8 || p.pt == BROWSER_DTMF_PT));
    // An answer out of turn is refused, not applied.
    assert!(anchor
        .pbx_reanswer(id, pbx_answer.as_bytes())
        .await
        .is_err());

    // The browser vanishes without SIP: the anchor reports it.
    b.close().await;
    let reason = next_gone(&mut events, id).await;
    eprintln!("browser gone: {reason}");
    assert!(!reason.is_empty());
    stop.cancel();
    anchor.close(id);
    all_released(&anchor).await;
}

#[tokio::test]
async fn refusals_leave_nothing_open() {
    let (anchor, _events) = MediaAnchor::start(config(42_300)).await.unwrap();
    let no_g711 = "v=0\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 9 101\r\n";
    assert!(matches!(
        anchor.pbx_offer("x", no_g711.as_bytes()).await,
        Err(MediaError::NoCommonCodec)
    ));
    assert!(matches!(
        anchor.pbx_offer("x", b"garbage").await,
        Err(MediaError::BadSdp(_))
    ));
    assert!(matches!(
        anchor.browser_answer(SessionId(999), b"v=0").await,
        Err(MediaError::UnknownSession)
    ));
    // max_sessions is 4.
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            anchor
                .pbx_offer("x", pbx_sdp(4000, "0", "").as_bytes())
                .await
                .unwrap()
                .0,
        );
    }
    assert!(matches!(
        anchor
            .pbx_offer("x", pbx_sdp(4000, "0", "").as_bytes())
            .await,
        Err(MediaError::TooManySessions)
    ));
    assert_eq!(anchor.open_sessions(), 4);
    assert_eq!(anchor.live_peer_connections(), 4);
    for id in ids {
        anchor.close(id);
    }
    all_released(&anchor).await;
    // One browser-leg port only: the second call finds none until the first is closed.
    let mut one_port = config(42_400);
    one_port.webrtc_ports = (42_400, 42_400);
    let (small, _events) = MediaAnchor::start(one_port).await.unwrap();
    let sdp = pbx_sdp(4000, "0", "");
    let (first, _) = small.pbx_offer("x", sdp.as_bytes()).await.unwrap();
    assert!(matches!(
        small.pbx_offer("x", sdp.as_bytes()).await,
        Err(MediaError::PortsExhausted)
    ));
    assert_eq!(
        small.ports_in_use(),
        (1, 1),
        "the refused call gave its PBX pair back"
    );
    small.close(first);
    all_released(&small).await;
    let (again, _) = small.pbx_offer("x", sdp.as_bytes()).await.unwrap();
    small.close(again);
    all_released(&small).await;
}
