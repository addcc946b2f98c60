//! baresip registering the way operators set it up: SIP domain = the PBX's host name, the PBX's
//! password, callgate as outbound proxy, over UDP, TCP and TLS (the PBX on UDP); and behind a
//! NAT, where its Via and Contact name an address it cannot be reached at.

use super::baresip::Transport;
use super::nat::LAN_IP;
use super::office::Office;

/// The phone registers through callgate with the PBX, which challenges it (401) and stores the
/// phone's own Contact with callgate's Path: the REGISTER reached the PBX once, naming the PBX's
/// domain as the phone wrote it.
async fn registers_with_the_pbx_domain(t: Transport) {
    let o = Office::open().await;
    let phone = o.registered_phone("101", t).await;
    let (contact, path) = o.pbx.registration("101").await.expect("the PBX stored 101");
    assert!(contact.starts_with("<sip:101-") && contact.contains(&format!("@{}:", phone.sip.ip())), "the phone's own Contact: {contact}\n{}", o.pbx.log());
    assert!(path.contains("cgp.") && path.contains("127.0.0.1"), "callgate's Path: {path}");
    let log = o.pbx.log();
    let registers: Vec<&str> = log.lines().filter(|l| l.contains("PBX got REGISTER")).collect();
    assert!(registers.iter().all(|l| l.contains("PBX got REGISTER sip:pbx.office.example")), "the Request-URI the phone wrote: {registers:#?}");
    assert!(registers.iter().all(|l| !l.contains(&format!("from {}", phone.sip.ip()))), "every REGISTER came through callgate: {registers:#?}");
    assert!(registers.iter().all(|l| l.contains("(udp)")), "the PBX is on UDP whatever the phone uses: {registers:#?}");
    assert_eq!(log.matches("PBX registered 101").count(), 1, "one challenge, one registration:\n{log}");
}

/// Behind a NAT: the phone on its LAN address writes that address in Via and Contact; callgate
/// sees it at the NAT's public address. It registers, and the PBX's call for 101, sent along the
/// Path to the Contact the PBX stored, reaches it through the NAT (every SIP message it heard came
/// from the NAT); it answers.
async fn registers_and_takes_a_call_behind_a_nat(t: Transport) {
    let o = Office::open().await;
    let (phone, peer) = o.registered_phone_behind_nat("101", t).await;
    let (contact, _) = o.pbx.registration("101").await.expect("the PBX stored 101");
    assert!(contact.contains(&LAN_IP.to_string()), "the Contact names the LAN address: {contact}");

    let customer = o.customer_calls("101", "nat-1", ["", ""]);
    phone.answer().await;
    phone.rtp_flowed(5).await;
    phone.run("hangup", "").await;
    let run = customer.wait().await;
    assert!(run.successful == 1, "customer:\n{}\n{}", run.screen, run.errors);
    phone.assert_only_talked_to(peer);
    let call = o.finished(|c| c["correlation"] == "nat-1").await;
    assert_eq!((call["outcome"].as_str(), call["last_talker"]["extension"].as_str()), (Some("answered"), Some("101")), "{call:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_registers_with_the_pbx_domain_through_callgate_over_udp() {
    registers_with_the_pbx_domain(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_registers_with_the_pbx_domain_through_callgate_over_tcp() {
    registers_with_the_pbx_domain(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_registers_with_the_pbx_domain_through_callgate_over_tls() {
    registers_with_the_pbx_domain(Transport::Tls).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_behind_a_nat_registers_and_takes_a_call_over_udp() {
    registers_and_takes_a_call_behind_a_nat(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_behind_a_nat_registers_and_takes_a_call_over_tcp() {
    registers_and_takes_a_call_behind_a_nat(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_behind_a_nat_registers_and_takes_a_call_over_tls() {
    registers_and_takes_a_call_behind_a_nat(Transport::Tls).await;
}
