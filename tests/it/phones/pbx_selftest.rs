//! The Kamailio PBX on its own, without callgate: it challenges a REGISTER, refuses a wrong
//! password and stores a right one, so the phone stories can rely on it.

use std::time::Duration;

use super::pbx::{password, Pbx, PBX_DOMAIN};
use crate::common::phone_ip;
use crate::common::sipp::{free_addr, Sipp};

/// A phone registering directly with the PBX: 401, then 200 with its Contact stored (no Path:
/// nobody relayed it); a wrong password from elsewhere gets 403 and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kamailio_pbx_challenges_registrations_and_keeps_the_right_ones() {
    let pbx = Pbx::start().await;
    let target = pbx.addr.to_string();
    let phone = free_addr(phone_ip("101"));
    let register = |at, pw: &str| {
        Sipp::new("phone-register.xml", &target).at(at).key("ext", "101").key("domain", PBX_DOMAIN).key("expires", "600").key("granted", "600").args(&[
            "-au",
            "101",
            "-ap",
            pw,
            "-auth_uri",
            PBX_DOMAIN,
        ])
    };
    let wrong = register(free_addr(phone_ip("102")), "a-guess").run().await;
    assert_eq!(wrong.successful, 0, "a wrong password is refused:\n{}", wrong.screen);
    assert!(pbx.wait_log(&["PBX refused REGISTER for 101"], Duration::from_secs(5)).await.is_some(), "{}", pbx.log());
    register(phone, &password("101")).run().await.assert_all_ok(1);
    let (contact, path) = pbx.registration("101").await.expect("101 registered");
    assert_eq!((contact.as_str(), path.as_str()), (format!("<sip:101@{phone}>").as_str(), "<null>"), "{}", pbx.log());
}
