//! Media never blocks SIP (issue 17): a browser call's media set-up goes through a bounded
//! mailbox to the media runtime, and the SIP thread that delivered the INVITE goes on at once.
//! The media stage is held still by a test gate (`Gateway::with_media_gate`) and callgate has
//! one UDP receive thread (the default), so every assertion is about order, never time:
//!
//! - a routing INVITE is answered (302) while a browser call's set-up waits at the gate; the
//!   PBX's retransmission of that INVITE meanwhile starts no second set-up;
//! - a full mailbox answers the next browser call `503` + `Retry-After` at once and keeps
//!   nothing of it; once there is room again, the PBX's retry gets media;
//! - a CANCEL sent while its INVITE's media is being set up waits for the INVITE (the PBX gets
//!   `200` for it, not `481`) and ends the call and its media;
//! - an outsider's INVITEs for the browser agent are refused before the media stage and take no
//!   place in the mailbox (the PBX's call, next, gets the only place); its forged CANCEL for the
//!   call being set up waits like any message of that call, then is refused and changes nothing.
//!
//! Topology: the PBX on 127.0.0.1 (a UDP socket), browser agent 101 over the gateway's
//! WebSocket (`media/office.rs`), the attacker on 127.0.0.5. Every wait is bounded.

use bytes::Bytes;
use callgate::sip::core::SipMessage;
use callgate::webrtc::MediaGate;
use reqwest::Method;
use serde_json::json;
use tokio::net::UdpSocket;

use crate::common::ATTACKER_IP;
use crate::media::office::{invite_from, Office};
use crate::media::{bounded, pbx_sdp};

/// The caller the routing index knows (its personal manager is user 12, extension 102).
const CALLER: &str = "79161234567";

/// An office whose media stage waits at `gate`, with room for `max_sessions` media sessions
/// (and as many set-ups waiting), one UDP receive thread, and a routing index for [`CALLER`].
async fn office(max_sessions: usize, gate: &MediaGate) -> Office {
    let gate = gate.clone();
    let o = Office::open_built(
        move |cfg| {
            cfg.media.max_sessions = max_sessions;
            cfg.sip.udp_threads = 1;
        },
        move |g| g.with_media_gate(gate),
    )
    .await;
    route_caller_to_102(&o).await;
    o
}

/// The office's portal routes: active, [`CALLER`] indexed to user 12 (extension 102).
async fn route_caller_to_102(o: &Office) {
    let (status, portals) = o.gw.api(Method::GET, "/api/v1/portals", None).await;
    assert_eq!(status, 200, "{portals}");
    let id = portals.as_array().and_then(|p| p.first()).and_then(|p| p["id"].as_i64()).expect("the office's portal");
    let path = format!("/api/v1/portals/{id}/settings");
    let mut settings = o.gw.api(Method::GET, &path, None).await.1;
    settings["active"] = json!(true);
    settings["incoming"]["forward_to_personal_manager"] = json!(true);
    settings["incoming"]["default_responsible"] = json!(1);
    settings["outgoing"]["default_responsible"] = json!(1);
    let (status, body) = o.gw.api(Method::PUT, &path, Some(settings)).await;
    assert_eq!(status, 200, "{body}");
    let m = json!({ "user_id": 12, "extension": "102", "use_for_personal_manager": true });
    let (status, body) = o.gw.api(Method::POST, &format!("/api/v1/portals/{id}/mappings"), Some(m)).await;
    assert_eq!(status, 201, "{body}");
    let csv = format!("number,user_id\n{CALLER},12\n");
    let resp = o.gw.client.post(format!("{}/api/v1/portals/{id}/index", o.gw.base)).bearer_auth(crate::common::TOKEN).header("content-type", "text/csv").body(csv).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

/// A routing request: [`CALLER`] asks where to go (INVITE to the routing user).
fn routing_invite(from: std::net::SocketAddr, sip: std::net::SocketAddr, call_id: &str) -> String {
    format!(
        "INVITE sip:pm-route@{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-{call_id}\r\nMax-Forwards: 70\r\n\
         From: <sip:{CALLER}@{from}>;tag=r1\r\nTo: <sip:pm-route@{sip}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:{CALLER}@{from}>\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The next SIP message at `sock` (bounded).
async fn next_at(sock: &UdpSocket) -> SipMessage {
    let mut buf = vec![0u8; 65_536];
    let (n, _) = bounded("a SIP message", sock.recv_from(&mut buf)).await.unwrap();
    SipMessage::parse(Bytes::copy_from_slice(&buf[..n])).expect("a SIP message")
}

/// The next INVITE the browser agent gets (ACKs of earlier calls skipped).
async fn next_invite_at_browser(o: &mut Office) -> SipMessage {
    for _ in 0..10 {
        let msg = o.agent.recv().await;
        if msg.method_raw() == Some(b"INVITE") {
            return msg;
        }
    }
    panic!("no INVITE at the browser");
}

/// The CANCEL of `invite` (same Via, Call-ID, tags and CSeq number; no body).
fn cancel_of(invite: &str) -> String {
    let head = invite.split("Content-Type:").next().expect("an INVITE with SDP");
    format!("{}Content-Length: 0\r\n\r\n", head.replacen("INVITE sip", "CANCEL sip", 1).replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL"))
}

fn call_id(msg: &SipMessage) -> String {
    String::from_utf8_lossy(msg.call_id().unwrap_or_default()).into_owned()
}

/// The PBX's call to 101 ends with the browser's 486 (the proxy ACKs it): nothing of it is left.
async fn browser_declines(o: &mut Office, invite: &SipMessage) {
    let id = call_id(invite);
    o.agent.answer(invite, 486, "Busy Here", "").await;
    o.pbx_gets(&id, |m| m.status() == Some(486)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routing_decision_is_answered_while_a_browser_calls_media_set_up_is_stalled() {
    let gate = MediaGate::shut();
    let mut o = office(10, &gate).await;
    let sdp = pbx_sdp(4000, "0 101", "a=sendrecv\r\n");

    // The PBX calls browser agent 101: the set-up is queued and held still. The PBX retransmits
    // the INVITE (timer A) while it waits.
    let invite = o.invite("stalled-1", 70, &sdp);
    o.pbx_sends(&invite).await;
    o.pbx_sends(&invite).await;

    // A routing request after them, on the same receive thread: answered with the decision.
    let router = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    router.send_to(routing_invite(router.local_addr().unwrap(), o.sip, "route-1").as_bytes(), o.sip).await.unwrap();
    let answer = next_at(&router).await;
    assert_eq!(answer.status(), Some(302), "{answer:?}");
    let pbx = o.pbx.local_addr().unwrap();
    assert_eq!(answer.contact().map(|c| c.uri.raw), Some(format!("sip:102@{pbx}").as_bytes()), "{answer:?}");

    // ... while the browser call's set-up had not run yet.
    let media = o.media().await;
    assert_eq!(media["open_sessions"], 0, "{media:#}");

    // One set-up goes through the gate: the INVITE reaches the browser with WebRTC SDP.
    gate.let_through(1);
    let at_browser = next_invite_at_browser(&mut o).await;
    assert_eq!(call_id(&at_browser), "stalled-1");
    assert!(std::str::from_utf8(at_browser.body()).unwrap().contains("UDP/TLS/RTP/SAVPF"), "{at_browser:?}");
    o.pbx_gets("stalled-1", |m| m.status() == Some(100)).await;
    browser_declines(&mut o, &at_browser).await;
    o.assert_no_media_left().await;

    // The retransmission started no second set-up: had it, that one would be next through the
    // gate (the mailbox is first in, first out). The next one is the PBX's next call.
    o.pbx_sends(&o.invite("after-1", 70, &sdp)).await;
    gate.let_through(1);
    let next = next_invite_at_browser(&mut o).await;
    assert_eq!(call_id(&next), "after-1", "the retransmitted INVITE was set up twice");
    browser_declines(&mut o, &next).await;
    o.assert_no_media_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_media_mailbox_answers_the_next_browser_call_503_at_once_and_keeps_nothing_of_it() {
    let gate = MediaGate::shut();
    // Room for one media session: one new call's set-up may wait.
    let mut o = office(1, &gate).await;
    let sdp = pbx_sdp(4000, "0 101", "a=sendrecv\r\n");

    o.pbx_sends(&o.invite("waits-1", 70, &sdp)).await;
    o.pbx_sends(&o.invite("shed-1", 70, &sdp)).await;
    // Answered while the first set-up is still held at the gate: at once.
    let shed = o.pbx_gets("shed-1", |_| true).await;
    assert_eq!(shed.status(), Some(503), "the first answer is the refusal, not a 100 Trying: {shed:?}");
    assert_eq!(shed.header(callgate::sip::core::HeaderName::RetryAfter), Some(&b"5"[..]), "{shed:?}");
    let (_, calls) = o.gw.api(Method::GET, "/api/v1/calls?limit=100", None).await;
    assert!(!calls.to_string().contains("shed-1"), "no call state for the refused INVITE: {calls}");
    let metrics = o.gw.client.get(format!("{}/metrics", o.gw.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("callgate_sip_refused_media_busy_total ") && !l.ends_with(" 0")), "the shedding is counted");

    // The waiting call goes on once the media stage does; the PBX's retry then gets media too.
    gate.let_through(1);
    let first = next_invite_at_browser(&mut o).await;
    assert_eq!(call_id(&first), "waits-1");
    browser_declines(&mut o, &first).await;
    o.assert_no_media_left().await;
    o.pbx_sends(&o.invite("shed-1-retry", 70, &sdp)).await;
    gate.let_through(1);
    let retry = next_invite_at_browser(&mut o).await;
    assert_eq!(call_id(&retry), "shed-1-retry");
    browser_declines(&mut o, &retry).await;
    o.assert_no_media_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_sent_while_the_media_is_set_up_waits_for_its_invite_and_ends_the_call() {
    let gate = MediaGate::shut();
    let mut o = office(10, &gate).await;
    let sdp = pbx_sdp(4000, "0 101", "a=sendrecv\r\n");
    let invite = o.invite("cancelled-1", 70, &sdp);
    o.pbx_sends(&invite).await;
    // The PBX gives up before its INVITE reached anyone.
    let cancel = cancel_of(&invite);
    o.pbx_sends(&cancel).await;

    gate.let_through(1);
    let at_browser = next_invite_at_browser(&mut o).await;
    assert_eq!(call_id(&at_browser), "cancelled-1");
    // The CANCEL came after the INVITE reached the proxy: the PBX gets 200 for it, not 481.
    let answered = o.pbx_gets("cancelled-1", |m| m.cseq().is_some_and(|c| c.method == b"CANCEL")).await;
    assert_eq!(answered.status(), Some(200), "{answered:?}");
    // It goes on to the browser once the browser rings; the INVITE ends 487.
    o.agent.answer(&at_browser, 180, "Ringing", "").await;
    let cancel_at_browser = o.agent.request("CANCEL", "cancelled-1").await;
    o.agent.answer(&cancel_at_browser, 200, "OK", "").await;
    o.agent.answer(&at_browser, 487, "Request Terminated", "").await;
    o.pbx_gets("cancelled-1", |m| m.status() == Some(487)).await;
    o.assert_no_media_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outsiders_invites_take_no_place_in_the_media_mailbox_and_its_forged_cancel_changes_nothing() {
    let gate = MediaGate::shut();
    // One place for a new call.
    let mut o = office(1, &gate).await;
    let sdp = pbx_sdp(4000, "0 101", "a=sendrecv\r\n");
    let attacker = UdpSocket::bind((ATTACKER_IP, 0)).await.unwrap();
    let me = attacker.local_addr().unwrap();

    // The attack: INVITEs with SDP for the browser agent from an address nobody trusts. Each is
    // refused by the trust model at once; none reaches the media stage.
    for i in 0..5 {
        attacker.send_to(invite_from(me, o.sip, &format!("outsider-{i}"), 70, &sdp).as_bytes(), o.sip).await.unwrap();
        let refused = next_at(&attacker).await;
        assert_eq!((call_id(&refused), refused.status()), (format!("outsider-{i}"), Some(403)), "{refused:?}");
    }

    // The PBX's call takes the one place (no 503), and waits at the gate.
    let invite = o.invite("legit-1", 70, &sdp);
    o.pbx_sends(&invite).await;
    // The attacker, who knows the Call-ID, the tags and the branch, cancels it from its own
    // address (the PBX's very Via): the CANCEL waits behind the INVITE's set-up like any
    // message of that call.
    let forged = cancel_of(&invite);
    attacker.send_to(forged.as_bytes(), o.sip).await.unwrap();

    gate.let_through(1);
    let at_browser = next_invite_at_browser(&mut o).await;
    assert_eq!(call_id(&at_browser), "legit-1");
    let first = o.pbx_gets("legit-1", |_| true).await;
    assert_eq!(first.status(), Some(100), "the PBX's call was taken, not shed: {first:?}");
    // Its turn come, the forged CANCEL meets the trust model: refused, the call goes on.
    let refused = next_at(&attacker).await;
    assert_eq!((call_id(&refused), refused.status()), ("legit-1".to_owned(), Some(403)), "{refused:?}");
    let media = o.media().await;
    assert_eq!(media["open_sessions"], 1, "the call kept its media: {media:#}");
    browser_declines(&mut o, &at_browser).await;
    o.assert_no_media_left().await;
}
