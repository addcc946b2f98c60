//! baresip transferring a customer's call, over UDP, TCP and TLS. The PBX's part (a B2BUA that
//! takes the REFER and calls the target) is played by the trunk's customer (SIPp): it accepts the
//! REFER (202, NOTIFY 200), and calls the target through the Kamailio PBX with the same
//! X-Call-Id, as the PBX would bridge it. The call ends with the target as last talker, in
//! `GET /api/v1/calls` and (the portal assigning the call to its last talker) in Bitrix24.
//!
//! baresip 1.0 has a blind transfer command (`transfer 102`) and no attended one; its `transfer`
//! sends whatever URI it is given as Refer-To, so an attended transfer is `hold`, `dial 102`,
//! then `callfind <the customer's call>` and `transfer <sip:102@domain?Replaces=...>` naming the
//! consultation dialog. baresip 1.0 does not honour Replaces in an INVITE it receives: the target
//! takes the transferred call as a second call (putting the consultation on hold) and the
//! transferor hangs up the consultation.

use super::baresip::{Baresip, Transport};
use super::office::{Office, CUSTOMER};
use super::pbx::PBX_DOMAIN;
use crate::common::sipp::SippRun;

fn succeeded(run: &SippRun, who: &str, phone: &Baresip) {
    assert!(run.successful == 1 && run.failed == 0, "{who}:\n{}\n{}\nphone log:\n{}", run.screen, run.errors, phone.log());
}

/// An office whose calls go to their last talker, with 101 and 102 registered over `t`.
async fn office_of_two(t: Transport) -> (Office, Baresip, Baresip) {
    let o = Office::open().await;
    o.settings(|s| s["incoming"]["assign_responsible_to"] = serde_json::json!("last")).await;
    let a = o.registered_phone("101", t).await;
    let b = o.registered_phone("102", t).await;
    (o, a, b)
}

/// The transferred call's record and its Bitrix24 report: first talker 101, last 102, finished
/// with user 12 (the last talker).
async fn ended_with_the_target(o: &Office, xcid: &str) -> serde_json::Value {
    let call = o.finished(|c| c["correlation"] == xcid).await;
    assert_eq!((call["kind"].as_str(), call["outcome"].as_str()), (Some("incoming"), Some("answered")), "{call:#}");
    assert_eq!((call["first_talker"]["extension"].as_str(), call["last_talker"]["extension"].as_str()), (Some("101"), Some("102")), "{call:#}");
    assert_eq!(call["responsible"], 12, "{call:#}");
    let customer_calls: Vec<_> = o.calls().await.into_iter().filter(|c| c["kind"] != "internal").collect();
    assert_eq!(customer_calls.len(), 1, "one customer call: {customer_calls:#?}");
    let reported = o.reported(1).await;
    assert_eq!(reported.len(), 1, "one call in Bitrix24: {reported:#?}");
    let finish = reported[0].finished.as_ref().unwrap();
    assert_eq!((reported[0].phone_number.as_str(), finish.user_id, finish.status_code.as_deref()), (CUSTOMER, 12, Some("200")), "{reported:#?}");
    call
}

/// 101 answers the customer and transfers the call to 102 (`transfer 102`: REFER, Refer-To
/// `sip:102@pbx.office.example`); the customer's side accepts, 101 hangs up, and the call comes
/// to 102 with Referred-By 101; 102 answers, talks and hangs up.
async fn blind_transfer(t: Transport) {
    let (o, a, b) = office_of_two(t).await;
    let first = o.customer_calls("101", "blind-1", ["", ""]);
    a.answer().await;
    a.rtp_flowed(5).await;
    a.run("transfer", "102").await;
    let closed = a.event("CALL_CLOSED").await;
    assert_eq!(closed["param"], "Call transfered", "{closed}");
    let run = first.wait().await;
    succeeded(&run, "customer's first leg", &a);
    assert!(run.logs.contains(&format!("Refer-To: sip:102@{PBX_DOMAIN}")), "{}", run.logs);

    let referred_by = format!("Referred-By: <sip:101@{PBX_DOMAIN}>");
    let second = o.customer_calls("102", "blind-1", [&referred_by, ""]);
    b.answer().await;
    b.rtp_flowed(5).await;
    b.run("hangup", "").await;
    succeeded(&second.wait().await, "customer's leg to the target", &b);

    let call = ended_with_the_target(&o, "blind-1").await;
    let legs: Vec<(&str, &str)> = call["legs"].as_array().unwrap().iter().map(|l| (l["extension"].as_str().unwrap_or("?"), l["end_reason"]["reason"].as_str().unwrap_or("none"))).collect();
    assert_eq!(legs, [("101", "transferred"), ("102", "bye")], "{call:#}");
}

/// 101 answers the customer, holds, consults 102 (its own call, which the PBX challenges and
/// sends along 102's Path), then transfers the customer to 102 replacing the consultation; the
/// customer's side calls 102 with that Replaces; 102 takes it, 101 hangs up the consultation,
/// 102 talks with the customer and hangs up.
async fn attended_transfer(t: Transport) {
    let (o, a, b) = office_of_two(t).await;
    let first = o.customer_calls("101", "att-1", ["", ""]);
    let incoming = a.answer().await;
    let customer_leg = incoming["id"].as_str().unwrap().to_owned();
    a.rtp_flowed(5).await;
    a.run("hold", "").await;
    a.reinvite_answered().await;

    a.dial("102").await;
    b.answer().await;
    let consult = a.event("CALL_ESTABLISHED").await;
    let consult_id = consult["id"].as_str().unwrap().to_owned();
    let (from_tag, to_tag) = a.dialog_tags(&consult_id);
    let replaces = format!("{consult_id};to-tag={to_tag};from-tag={from_tag}");
    let escaped = replaces.replace('@', "%40").replace(';', "%3B").replace('=', "%3D");
    a.select_call(&customer_leg).await;
    a.run("transfer", &format!("<sip:102@{PBX_DOMAIN}?Replaces={escaped}>")).await;
    let closed = a.event("CALL_CLOSED").await;
    assert_eq!((closed["id"].as_str(), closed["param"].as_str()), (Some(customer_leg.as_str()), Some("Call transfered")), "{closed}");
    let run = first.wait().await;
    succeeded(&run, "customer's first leg", &a);
    assert!(run.logs.contains("?Replaces="), "{}", run.logs);

    let second = o.customer_calls("102", "att-1", [&format!("Replaces: {replaces}"), &format!("Referred-By: <sip:101@{PBX_DOMAIN}>")]);
    b.answer().await;
    a.select_call(&consult_id).await;
    a.run("hangup", "").await;
    b.rtp_flowed(5).await;
    b.run("hangup", "").await;
    succeeded(&second.wait().await, "customer's leg to the target", &b);

    ended_with_the_target(&o, "att-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_blind_transfer_ends_with_the_target_as_last_talker_over_udp() {
    blind_transfer(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_blind_transfer_ends_with_the_target_as_last_talker_over_tcp() {
    blind_transfer(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_blind_transfer_ends_with_the_target_as_last_talker_over_tls() {
    blind_transfer(Transport::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_attended_transfer_ends_with_the_target_as_last_talker_over_udp() {
    attended_transfer(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_attended_transfer_ends_with_the_target_as_last_talker_over_tcp() {
    attended_transfer(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_attended_transfer_ends_with_the_target_as_last_talker_over_tls() {
    attended_transfer(Transport::Tls).await;
}
