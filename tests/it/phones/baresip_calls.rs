//! baresip's calls through callgate, the Kamailio PBX and its trunk, each over UDP, TCP and TLS
//! (the PBX on UDP): a customer's call delivered along the registration's Path and answered with
//! audio both ways, held and resumed; an outgoing call the PBX challenges with 407. Each is
//! checked in `GET /api/v1/calls` and in what the fake Bitrix24 got.

use std::time::Duration;

use super::baresip::{Baresip, Transport};
use super::office::{media_port, Office, CUSTOMER};
use crate::common::sipp::SippRun;
use crate::fake_b24::CallState;

/// `run` finished its one call.
fn succeeded(run: &SippRun, who: &str, phone: &Baresip) {
    assert!(run.successful == 1 && run.failed == 0, "{who}:\n{}\n{}\nphone log:\n{}", run.screen, run.errors, phone.log());
}

/// The one call Bitrix24 was told of (registered and finished).
async fn reported_once(o: &Office) -> CallState {
    let calls = o.reported(1).await;
    assert_eq!(calls.len(), 1, "one call in Bitrix24: {calls:#?}");
    calls.into_iter().next().unwrap()
}

/// Talks until both directions carried RTP, then some more: the counts before and after.
async fn talk(phone: &Baresip) -> (u64, u64) {
    let (sent, received) = phone.rtp_flowed(5).await;
    phone.rtp_flowed(sent.max(received) + 10).await
}

/// The customer calls 101 through the PBX, which finds 101's registration and sends the call
/// along callgate's Path; the phone answers, RTP flows both ways (the customer echoes it: the
/// phone receives what went to the customer and back), it holds (the customer sees sendonly)
/// and resumes (sendrecv, RTP flows again), then hangs up. callgate reports one answered call of
/// user 11 with one hold that ended.
async fn takes_a_call_with_audio_holds_and_resumes(t: Transport) {
    let o = Office::open().await;
    let phone = o.registered_phone("101", t).await;
    let customer = o.customer_calls("101", "in-1", ["", ""]);
    let incoming = phone.answer().await;
    assert!(incoming["peeruri"].as_str().unwrap_or_default().contains(CUSTOMER), "{incoming}");
    talk(&phone).await;

    phone.run("hold", "").await;
    phone.reinvite_answered().await;
    phone.run("resume", "").await;
    phone.reinvite_answered().await;
    let (sent, received) = phone.rtp_counts().await;
    phone.rtp_flowed(sent.max(received) + 10).await;
    phone.run("hangup", "").await;
    let run = customer.wait().await;
    succeeded(&run, "customer", &phone);
    assert!(run.logs.contains("a=sendonly answered a=recvonly") && run.logs.contains("a=sendrecv answered a=sendrecv"), "hold then resume: {}", run.logs);

    let call = o.finished(|c| c["correlation"] == "in-1").await;
    assert_eq!((call["kind"].as_str(), call["outcome"].as_str(), call["status_code"].as_str()), (Some("incoming"), Some("answered"), Some("200")), "{call:#}");
    assert_eq!((call["first_talker"]["extension"].as_str(), call["last_talker"]["extension"].as_str()), (Some("101"), Some("101")), "{call:#}");
    assert_eq!(call["responsible"], 11, "{call:#}");
    let holds = call["legs"][0]["holds"].as_array().cloned().unwrap_or_default();
    assert_eq!(holds.len(), 1, "one hold: {call:#}");
    assert!(!holds[0]["from"].is_null() && !holds[0]["to"].is_null(), "the hold ended: {call:#}");

    let reported = reported_once(&o).await;
    let finish = reported.finished.as_ref().unwrap();
    // Registered with the incoming default responsible (no personal manager was routed), finished
    // with the agent who answered.
    assert_eq!((reported.call_type, reported.phone_number.as_str()), (2, CUSTOMER), "{reported:#?}");
    assert!(reported.shows.iter().any(|users| users.contains(&11)), "the card was shown to user 11 while 101 rang: {reported:#?}");
    assert_eq!((finish.user_id, finish.status_code.as_deref()), (11, Some("200")), "{reported:#?}");
    assert!(finish.duration > 0, "{reported:#?}");
}

/// 101 dials the customer. The PBX challenges the INVITE (407), the phone sends it again with
/// its credentials on the same Call-ID, the PBX sends it to the trunk and the customer answers;
/// RTP flows both ways; the phone hangs up after a second or more. One answered outgoing call of
/// user 11 with its real duration, for callgate and for Bitrix24.
async fn places_a_call_the_pbx_challenges(t: Transport) {
    let o = Office::open().await;
    let phone = o.registered_phone("101", t).await;
    let customer = o.customer_answers();
    phone.dial(CUSTOMER).await;
    let established = phone.event("CALL_ESTABLISHED").await;
    let call_id = established["id"].as_str().unwrap().to_owned();
    talk(&phone).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    phone.run("hangup", "").await;
    let run = customer.wait().await;
    succeeded(&run, "customer", &phone);
    let challenged = phone.traced("SIP/2.0 407", &call_id);
    assert!(challenged.is_some(), "the PBX challenged the call:\n{}", phone.log());

    let call = o.finished(|c| c["kind"] == "outgoing").await;
    assert_eq!((call["customer"].as_str(), call["outcome"].as_str(), call["status_code"].as_str()), (Some(CUSTOMER), Some("answered"), Some("200")), "{call:#}");
    assert_eq!(call["responsible"], 11, "{call:#}");
    assert!(call["talk_seconds"].as_u64().unwrap_or(0) >= 1, "{call:#}");
    let calls = o.calls().await;
    assert_eq!(calls.len(), 1, "the challenge is no call of its own: {calls:#?}");

    let reported = reported_once(&o).await;
    let finish = reported.finished.as_ref().unwrap();
    assert_eq!((reported.call_type, reported.user_id, reported.phone_number.as_str()), (1, 11, CUSTOMER), "{reported:#?}");
    assert_eq!((finish.user_id, finish.status_code.as_deref()), (11, Some("200")), "{reported:#?}");
    assert!(finish.duration >= 1, "the real duration: {reported:#?}");
}

/// The customer's call with a session timer (Session-Expires 90 s, the customer refreshes every
/// 45 s): the two refreshes are re-INVITEs with the same media, answered sendrecv; the call lasts
/// longer than the session interval and its record has no hold.
async fn outlives_its_session_timer_with_no_hold(t: Transport) {
    let o = Office::open().await;
    let phone = o.registered_phone("101", t).await;
    let customer = crate::common::sipp::Sipp::new("trunk-calls-refresh.xml", &o.pbx.addr.to_string())
        .at(o.pbx.trunk)
        .key("ext", "101")
        .key("caller", CUSTOMER)
        .key("xcid", "timer-1")
        .key("refresh_ms", "45000")
        .args(&["-rtp_echo", "-mp", &media_port(), "-trace_logs", "-timeout", "150s", "-recv_timeout", "60000"])
        .spawn();
    phone.answer().await;
    // The INVITE's own offer; the refreshes' come 45 and 90 s later.
    phone.event_where("CALL_REMOTE_SDP", Duration::from_secs(5), |e| e["param"] == "offer").await;
    talk(&phone).await;
    for refresh in 1..=2 {
        let offer = phone.event_where("CALL_REMOTE_SDP", Duration::from_secs(60), |e| e["param"] == "offer").await;
        assert_eq!(offer["type"], "CALL_REMOTE_SDP", "refresh {refresh}");
    }
    let (sent, received) = phone.rtp_counts().await;
    phone.rtp_flowed(sent.max(received) + 10).await;
    phone.run("hangup", "").await;
    let run = customer.wait().await;
    succeeded(&run, "customer", &phone);
    assert!(run.logs.contains("refresh 2 answered a=sendrecv"), "{}", run.logs);

    let call = o.finished(|c| c["correlation"] == "timer-1").await;
    assert_eq!(call["outcome"], "answered", "{call:#}");
    assert!(call["talk_seconds"].as_u64().unwrap_or(0) > 90, "longer than the session interval: {call:#}");
    let holds: usize = call["legs"].as_array().unwrap().iter().map(|l| l["holds"].as_array().map_or(0, Vec::len)).sum();
    assert_eq!(holds, 0, "a session refresh is no hold: {call:#}");
    assert_eq!(call["conversations"].as_array().map(Vec::len), Some(1), "{call:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_takes_a_call_along_the_path_with_audio_and_holds_over_udp() {
    takes_a_call_with_audio_holds_and_resumes(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_takes_a_call_along_the_path_with_audio_and_holds_over_tcp() {
    takes_a_call_with_audio_holds_and_resumes(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_takes_a_call_along_the_path_with_audio_and_holds_over_tls() {
    takes_a_call_with_audio_holds_and_resumes(Transport::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_places_a_call_the_pbx_challenges_reported_answered_over_udp() {
    places_a_call_the_pbx_challenges(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_places_a_call_the_pbx_challenges_reported_answered_over_tcp() {
    places_a_call_the_pbx_challenges(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_places_a_call_the_pbx_challenges_reported_answered_over_tls() {
    places_a_call_the_pbx_challenges(Transport::Tls).await;
}

/// About 95 s: the one story that waits out a real session interval (RFC 4028's minimum is 90 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_call_outlives_its_session_timer_with_no_false_hold_over_udp() {
    outlives_its_session_timer_with_no_hold(Transport::Udp).await;
}
