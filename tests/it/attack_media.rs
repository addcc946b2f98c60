//! Attacks on the media anchor (browser agents' calls), each beside the legitimate call it must
//! not disturb. Topology: the PBX on 127.0.0.1, the attacker on 127.0.0.5.
//!
//! - RTP/RTCP sprayed over the port range never takes the PBX leg (the latch goes only to the
//!   address the PBX's SDP named) and never re-points our RTCP; the PBX's audio still reaches the
//!   agent and the agent's voice the PBX.
//! - INVITEs the proxy refuses (`Max-Forwards: 0` from the PBX itself) or that come from an
//!   outsider leave no media session; the PBX's next call gets media.
//! - BYE, CANCEL, re-INVITE, responses and a refused INVITE for an anchored Call-ID from another
//!   address leave the call's media alone; the PBX's own BYE ends it.
//! - A session whose browser never connects is closed after `media.idle_timeout`; a connected
//!   call that sends no RTP keeps its media.
//!
//! Every wait is bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use callgate::sip::core::SipMessage;
use callgate::webrtc::media::MediaAnchor;
use serde_json::Value;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::media::browser::FakeBrowser;
use crate::media::office::{browser_answer, invite_from, Dialog, Office};
use crate::media::{
    all_released, bounded, browser_gets, browser_sends, config, our_rtp_port, payload, pbx_gets, pbx_sdp, pbx_sender, rtp, wait_until, WAIT,
};

const ATTACKER: &str = "127.0.0.5";
/// What the attacker's RTP carries (no PBX payload looks like it).
const EVIL: [u8; 160] = [0xaa; 160];

/// One sweep of `range`: three RTP packets at every even port, an RTCP RR at every odd one.
async fn spray(attacker: &UdpSocket, range: (u16, u16)) {
    let rr = [0x80, 201, 0, 1, 0xde, 0xad, 0xbe, 0xef];
    for port in range.0..=range.1 {
        let to: SocketAddr = SocketAddr::from(([127, 0, 0, 1], port));
        if port % 2 == 0 {
            for seq in 0..3u16 {
                let _ = attacker.send_to(&rtp(0, seq, u32::from(seq) * 160, 0xbad, &EVIL), to).await;
            }
        } else {
            let _ = attacker.send_to(&rr, to).await;
        }
    }
}

/// Nothing has arrived at `sock` (checked without waiting).
fn got_nothing(sock: &UdpSocket) -> bool {
    let mut buf = [0u8; 1500];
    sock.try_recv_from(&mut buf).is_err()
}

#[tokio::test]
async fn rtp_and_rtcp_sprayed_from_another_address_never_take_the_pbx_leg_while_the_pbx_media_flows() {
    let cfg = config(42_500);
    let (anchor, _events) = MediaAnchor::start(cfg.clone()).await.unwrap();
    let pbx = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let pbx_rtcp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let attacker = UdpSocket::bind((ATTACKER, 0)).await.unwrap();
    let extra = format!("a=rtcp:{}\r\na=sendrecv\r\n", pbx_rtcp.local_addr().unwrap().port());
    let sdp = pbx_sdp(pbx.local_addr().unwrap().port(), "0 101", &extra);
    let (id, offer) = bounded("pbx_offer", anchor.pbx_offer("spray", sdp.as_bytes())).await.unwrap();

    // The attack, before the PBX's first packet (it sends only once the call is answered).
    spray(&attacker, cfg.rtp_ports).await;
    let mut b = FakeBrowser::new(&[("audio/PCMU", 0)], true).await;
    let answer = bounded("browser answer", b.answer(&offer)).await;
    let plain = bounded("browser_answer", anchor.browser_answer(id, answer.as_bytes())).await.unwrap();
    assert!(b.connected(WAIT).await, "browser never connected");
    spray(&attacker, cfg.rtp_ports).await;
    wait_until("the sprayed packets counted", || anchor.stats(id).is_some_and(|s| s.foreign_rtp_dropped >= 6 && s.foreign_rtcp_dropped >= 2)).await;
    let st = anchor.stats(id).unwrap();
    assert_eq!((st.pbx_latched, st.from_pbx_packets, st.to_browser_packets), (None, 0, 0), "the attacker took nothing: {st:?}");

    // The PBX's audio reaches the agent, and only it.
    let stop = CancellationToken::new();
    let to_anchor = SocketAddr::from(([127, 0, 0, 1], our_rtp_port(&plain)));
    pbx_sender(pbx.clone(), to_anchor, 0, 101, stop.clone());
    let got = browser_gets(&mut b, 25).await;
    assert!(got.iter().all(|p| p.pt == 101 || (0..500).any(|i| payload(i) == p.payload)), "only the PBX's audio reaches the agent");
    // After latching the spray goes on: still dropped, still not the PBX.
    spray(&attacker, cfg.rtp_ports).await;
    wait_until("the later spray counted", || anchor.stats(id).is_some_and(|s| s.foreign_rtp_dropped >= 9)).await;
    let more = browser_gets(&mut b, 10).await;
    assert!(more.iter().all(|p| p.payload != EVIL));
    let st = anchor.stats(id).unwrap();
    assert_eq!(st.pbx_latched, Some(pbx.local_addr().unwrap()), "latched onto the PBX's own source: {st:?}");

    // The agent's voice goes to the PBX, our RTCP to the PBX's RTCP port; the attacker hears none.
    browser_sends(&b, 0, 30).await;
    let back = pbx_gets(&pbx, 20).await;
    assert!(back.iter().all(|p| p.3 == [0xd5; 160]));
    let mut rbuf = [0u8; 1500];
    let (n, _) = bounded("RTCP at the PBX", pbx_rtcp.recv_from(&mut rbuf)).await.unwrap();
    assert!(n >= 8 && (rbuf[1] == 200 || rbuf[1] == 201), "{:?}", &rbuf[..n]);
    assert!(got_nothing(&attacker), "nothing of the call reached the attacker");

    stop.cancel();
    anchor.close(id);
    all_released(&anchor).await;
    b.close().await;
}

/// A call from the PBX answered by the browser agent, ICE and DTLS up.
struct Call {
    id: String,
    browser: FakeBrowser,
    /// The PBX's RTP socket (named in its SDP).
    rtp: Arc<UdpSocket>,
    /// callgate's RTP address toward the PBX.
    anchor: SocketAddr,
    dialog: Dialog,
}

async fn connected_call(o: &mut Office, id: &str) -> Call {
    let (invite, rtp) = ringing_call(o, id).await;
    answered(o, &invite, rtp).await
}

/// The PBX calls 101 with its RTP socket in the SDP; the agent's WebSocket gets the INVITE and
/// answers 180.
async fn ringing_call(o: &mut Office, id: &str) -> (SipMessage, Arc<UdpSocket>) {
    let rtp = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let sdp = pbx_sdp(rtp.local_addr().unwrap().port(), "0 101", "a=sendrecv\r\n");
    o.pbx_sends(&o.invite(id, 70, &sdp)).await;
    let invite = o.agent.request("INVITE", id).await;
    o.agent.answer(&invite, 180, "Ringing", "").await;
    (invite, rtp)
}

/// The browser answers the ringing `invite`; its media connects.
async fn answered(o: &mut Office, invite: &SipMessage, rtp: Arc<UdpSocket>) -> Call {
    let id = String::from_utf8_lossy(invite.call_id().unwrap()).into_owned();
    let browser = FakeBrowser::new(&[("audio/PCMU", 0)], true).await;
    let answer = browser_answer(&browser, invite).await;
    o.agent.answer(invite, 200, "OK", &answer).await;
    let ok = o.pbx_gets(&id, |m| m.status() == Some(200)).await;
    let plain = std::str::from_utf8(ok.body()).unwrap();
    assert!(plain.contains("RTP/AVP") && plain.contains("c=IN IP4 127.0.0.1"), "the PBX gets plain RTP:\n{plain}");
    let anchor = SocketAddr::from(([127, 0, 0, 1], our_rtp_port(plain)));
    assert!(browser.connected(WAIT).await, "browser never connected");
    Call { id, browser, rtp, anchor, dialog: Office::dialog_of(&ok) }
}

/// Sends `forged` from `attacker` and waits until the last one (an INVITE with branch
/// `last_branch`) has its final answer: everything before it was handled by then.
async fn attack(o: &Office, attacker: &UdpSocket, forged: &[String], last_branch: &str) {
    for text in forged {
        attacker.send_to(text.as_bytes(), o.sip).await.unwrap();
    }
    let mut buf = vec![0u8; 65_536];
    bounded("the last forged message's answer", async {
        loop {
            let (n, _) = attacker.recv_from(&mut buf).await.unwrap();
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.contains(last_branch) && !text.starts_with("SIP/2.0 100") {
                break;
            }
        }
    })
    .await;
}

/// The media entry of call `id` in `GET /api/v1/media`.
fn entry<'a>(media: &'a Value, id: &str) -> Option<&'a Value> {
    media["calls"].as_array()?.iter().find(|c| c["call_id"] == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_invites_leave_no_media_session_and_the_pbx_next_call_gets_media() {
    let mut o = Office::open(|_| {}).await;
    let sdp = pbx_sdp(4000, "0 101", "a=sendrecv\r\n");
    // The PBX's own INVITEs that the proxy refuses (483): the bridge set a session up for each
    // before the proxy looked; the refusal releases it.
    for i in 0..3 {
        let id = format!("hop-{i}");
        o.pbx_sends(&o.invite(&id, 0, &sdp)).await;
        let refused = o.pbx_gets(&id, |m| m.status().is_some_and(|s| s >= 200)).await;
        assert_eq!(refused.status(), Some(483));
    }
    // An outsider's INVITEs for the browser agent: no media is set up for them, whatever the
    // proxy answers.
    let attacker = UdpSocket::bind((ATTACKER, 0)).await.unwrap();
    for (i, hops) in [70u8, 70, 0].into_iter().enumerate() {
        let text = invite_from(attacker.local_addr().unwrap(), o.sip, &format!("outsider-{i}"), hops, &sdp);
        attacker.send_to(text.as_bytes(), o.sip).await.unwrap();
    }
    // The last one (Max-Forwards 0) gets its final answer: everything before it was handled.
    let mut buf = vec![0u8; 65_536];
    bounded("the outsider's answers", async {
        loop {
            let (n, _) = attacker.recv_from(&mut buf).await.unwrap();
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.contains("Call-ID: outsider-2") && !text.starts_with("SIP/2.0 100") {
                break;
            }
        }
    })
    .await;
    o.assert_no_media_left().await;

    // The legitimate call: media set up, flowing, and gone with the PBX's BYE.
    let mut call = connected_call(&mut o, "legit-1").await;
    let media = o.media().await;
    assert_eq!(media["open_sessions"], 1, "{media:#}");
    let stop = CancellationToken::new();
    pbx_sender(call.rtp.clone(), call.anchor, 0, 101, stop.clone());
    browser_gets(&mut call.browser, 10).await;
    let media = o.media_until("the PBX latched", |m| entry(m, "legit-1").is_some_and(|c| !c["stats"]["pbx_latched"].is_null())).await;
    assert_eq!(entry(&media, "legit-1").unwrap()["stats"]["pbx_latched"], call.rtp.local_addr().unwrap().to_string(), "{media:#}");
    stop.cancel();
    let pbx = o.pbx.local_addr().unwrap();
    o.pbx_sends(&o.in_dialog(pbx, &call.dialog, &call.id, "BYE", 2, "")).await;
    o.assert_no_media_left().await;
    call.browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sip_for_an_anchored_call_from_another_address_leaves_its_media_alone() {
    let mut o = Office::open(|_| {}).await;
    let attacker = UdpSocket::bind((ATTACKER, 0)).await.unwrap();
    let evil_rtp = UdpSocket::bind((ATTACKER, 0)).await.unwrap();
    let me = attacker.local_addr().unwrap();
    let evil_sdp = pbx_sdp(evil_rtp.local_addr().unwrap().port(), "0 101", "a=sendrecv\r\n").replace("127.0.0.1", ATTACKER);
    let id = "victim-1";
    let last_branch = format!("branch=z9hG4bK-{id}-0");

    // While it rings, the attacker (who knows the Call-ID and the PBX's tag) sends from
    // 127.0.0.5: a CANCEL, a 486 for the INVITE, and the INVITE again with Max-Forwards 0 (which
    // the proxy refuses: for the attacker's source, not the PBX's).
    let (invite, rtp) = ringing_call(&mut o, id).await;
    let session = entry(&o.media().await, id).expect("anchored while ringing")["session"].clone();
    let busy = format!(
        "SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP {};branch=z9hG4bK-x\r\nFrom: <sip:79161234567@{me}>;tag=pbx-tag\r\nTo: <sip:101@{}>;tag=evil\r\nCall-ID: {id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        o.sip, o.sip
    );
    let ringing_forgeries = [
        invite_from(me, o.sip, id, 70, "").replacen("INVITE sip", "CANCEL sip", 1).replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL"),
        busy,
        invite_from(me, o.sip, id, 0, &evil_sdp),
    ];
    attack(&o, &attacker, &ringing_forgeries, &last_branch).await;
    let media = o.media().await;
    assert_eq!(entry(&media, id).map(|e| &e["session"]), Some(&session), "the ringing call kept its media: {media:#}");

    // The agent answers: media flows.
    let mut call = answered(&mut o, &invite, rtp).await;
    let stop = CancellationToken::new();
    pbx_sender(call.rtp.clone(), call.anchor, 0, 101, stop.clone());
    browser_gets(&mut call.browser, 5).await;

    // In the call: a BYE, a re-INVITE moving the PBX's media to the attacker, and the refused
    // INVITE again.
    // (A new branch: the first refused INVITE's transaction still retransmits its answer.)
    let again = format!("{last_branch}-again");
    let answered_forgeries = [
        o.in_dialog(me, &call.dialog, id, "BYE", 5, ""),
        o.in_dialog(me, &call.dialog, id, "INVITE", 6, &evil_sdp),
        invite_from(me, o.sip, id, 0, &evil_sdp).replace(&last_branch, &again),
    ];
    attack(&o, &attacker, &answered_forgeries, &again).await;

    // Same session, still latched to the PBX, audio still flowing both ways; nothing to the attacker.
    let media = o.media().await;
    let e = entry(&media, id).unwrap_or_else(|| panic!("the call lost its media: {media:#}"));
    assert_eq!((&e["session"], media["open_sessions"].as_u64()), (&session, Some(1)), "{media:#}");
    assert_eq!(e["stats"]["pbx_latched"], call.rtp.local_addr().unwrap().to_string(), "{media:#}");
    let rx = call.browser.rx.as_mut().unwrap();
    while rx.try_recv().is_ok() {}
    browser_gets(&mut call.browser, 10).await;
    browser_sends(&call.browser, 0, 30).await;
    pbx_gets(&call.rtp, 10).await;
    assert!(got_nothing(&evil_rtp), "the re-INVITE moved no media to the attacker");

    // The PBX's own BYE ends it.
    stop.cancel();
    let pbx = o.pbx.local_addr().unwrap();
    o.pbx_sends(&o.in_dialog(pbx, &call.dialog, id, "BYE", 7, "")).await;
    o.assert_no_media_left().await;
    call.browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_browser_never_connects_is_closed_when_idle_while_a_quiet_connected_call_keeps_its_media() {
    let mut o = Office::open(|cfg| cfg.media.idle_timeout = Duration::from_secs(3)).await;
    // A connected call that sends no RTP at all for longer than the idle timeout.
    let mut call = connected_call(&mut o, "quiet-1").await;
    // A call the browser never answers (it only rings).
    ringing_call(&mut o, "ringing-1").await;
    let media = o.media().await;
    assert_eq!(media["open_sessions"], 2, "{media:#}");

    let media = o.media_until("the never-connected session closed", |m| m["open_sessions"] == 1).await;
    assert!(entry(&media, "ringing-1").is_none() && entry(&media, "quiet-1").is_some(), "{media:#}");
    assert_eq!(entry(&media, "quiet-1").unwrap()["stats"]["ice_connected"], true, "{media:#}");
    // The quiet call still has its media.
    let stop = CancellationToken::new();
    pbx_sender(call.rtp.clone(), call.anchor, 0, 101, stop.clone());
    browser_gets(&mut call.browser, 10).await;
    stop.cancel();
    let pbx = o.pbx.local_addr().unwrap();
    o.pbx_sends(&o.in_dialog(pbx, &call.dialog, &call.id, "BYE", 2, "")).await;
    o.assert_no_media_left().await;
    call.browser.close().await;
}
