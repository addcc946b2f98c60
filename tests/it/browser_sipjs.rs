//! SIP.js (npm `sip.js` 0.21, issue 16) beside the widget's JsSIP: a SIP.js application in headless
//! Debian Chromium (fake media devices) registers browser agents at callgate's `/sip` with the
//! credentials the admin API issued, answers a PBX call with media anchored in callgate, holds and
//! resumes, transfers blind and hangs up; a PBX session refresh leaves no hold in the call record.
//!
//! The page is `tests/browser/sipjs-phone.js` on SIP.js's `UserAgent` / `Registerer` /
//! `Invitation` / `Session` API, served with SIP.js's ES modules on callgate's origin by
//! `tests/browser/sipjs.mjs`, which the tests drive one step at a time. The PBX is SIPp, as in
//! `browser.rs` (whose office and media checks these tests share).

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::browser::{assert_media_flows, media_office, MediaOffice, STEP_TIMEOUT};
use crate::common::node::{preflight, repo, NodeRun};

/// Chromium (from [`preflight`]) and SIP.js in `tests/browser/node_modules`, or a panic saying how to get them.
fn chromium_with_sipjs() -> std::path::PathBuf {
    let chromium = preflight();
    let sipjs = repo().join("tests/browser/node_modules/sip.js/package.json");
    assert!(sipjs.exists(), "SIP.js missing at {}: npm ci --prefix tests/browser (scripts/test.sh runs it)", sipjs.display());
    chromium
}

/// `tests/browser/sipjs.mjs` (its page log: `sipjs-<run>.log`) with agent 101 (and `b` in a second
/// page) registered; what it said on `registered` (`a`, `b`: SIP.js's User-Agent and Contact; `api`:
/// 101's registration in the admin API).
async fn sipjs(o: &MediaOffice, run: &str, b: Option<&'static str>) -> (NodeRun, Value) {
    let chromium = chromium_with_sipjs();
    let mut env = o.env("101");
    env.push(("RUN", run.to_owned()));
    if let Some(ext) = b {
        env.push(("EXTENSION_B", ext.to_owned()));
        env.push(("PASSWORD_B", o.passwords[ext].clone()));
    }
    let mut node = NodeRun::spawn("sipjs.mjs", &chromium, &env, STEP_TIMEOUT);
    let registered = node.expect("registered").await;
    (node, registered)
}

/// One step of the script (`<a|b> <verb> [arg]`); its answer.
async fn step(node: &mut NodeRun, line: &str) -> Value {
    node.say(line).await;
    let verb = line.split(' ').nth(1).expect("<who> <verb>");
    node.expect(verb).await
}

/// Closes the browser and waits for the script's clean exit.
async fn done(mut node: NodeRun) {
    node.say("done").await;
    node.finish().await;
}

/// 101's registration in `GET .../agents` (null when none).
async fn registration_101(o: &MediaOffice) -> Value {
    let (status, agents) = o.gw.api(Method::GET, &format!("/api/v1/portals/{}/agents", o.portal), None).await;
    assert_eq!(status, 200, "{agents}");
    agents.as_array().unwrap().iter().find(|a| a["extension"] == "101").map_or(Value::Null, |a| a["registration"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipjs_registers_answers_with_media_holds_resumes_and_hangs_up() {
    let o = media_office(&[("101", 11)]).await;
    let (mut node, registered) = sipjs(&o, "hold", None).await;
    let reg = &registered["api"];
    assert_eq!(reg["transport"], "ws", "{registered:#}");
    assert!(reg["user_agent"].as_str().unwrap_or_default().starts_with("SIP.js/0.21."), "{registered:#}");
    assert_eq!(reg["user_agent"], registered["a"]["userAgent"], "{registered:#}");
    assert!(reg["contact"].as_str().unwrap_or_default().contains("transport=ws"), "{registered:#}");
    assert!(reg["expires_in"].as_u64().unwrap_or_default() > 60, "{registered:#}");

    let pbx = o.pbx_calls("pbx-media-hold-wait-bye.xml", "101", "sipjs-hold", &[]);
    let answered = step(&mut node, "a answer").await;
    assert_eq!(answered["user"], "79161234567", "{answered}");
    assert_media_flows(&step(&mut node, "a stats").await);
    let relayed = o.call_media().await;
    for counter in ["from_browser_packets", "to_pbx_packets", "from_pbx_packets", "to_browser_packets"] {
        assert!(relayed[counter].as_u64().unwrap_or(0) > 10, "{counter}: {relayed:#}");
    }

    // Hold: SIP.js offers sendonly, the PBX answers recvonly through callgate; resume: sendrecv.
    let held = step(&mut node, "a hold").await;
    assert_eq!(held["answer"], "recvonly", "{held}");
    let resumed = step(&mut node, "a unhold").await;
    assert_eq!(resumed["answer"], "sendrecv", "{resumed}");
    assert_media_flows(&step(&mut node, "a stats").await);

    let pcs = step(&mut node, "a hangup").await;
    assert_eq!(pcs, json!(["closed"]), "the page's peer connection is closed");
    done(node).await;
    pbx.wait().await.assert_all_ok(1);

    let call = o.finished("sipjs-hold").await;
    assert_eq!(call["outcome"], "answered", "{call:#}");
    assert_eq!(call["first_talker"]["extension"], "101", "{call:#}");
    assert_eq!(call["last_talker"]["extension"], "101", "{call:#}");
    assert_eq!(call["responsible"], 11, "{call:#}");
    let leg = &call["legs"][0];
    assert_eq!(leg["end_reason"], json!({"reason": "bye", "by": "agent"}), "{call:#}");
    let holds = leg["holds"].as_array().cloned().unwrap_or_default();
    assert_eq!(holds.len(), 1, "one hold period: {call:#}");
    assert!(!holds[0]["to"].is_null(), "ended by the resume: {call:#}");
    o.assert_no_media_left().await;

    // The browser is gone: its WebSocket closed, so is its registration (5 s in 50 ms steps).
    for _ in 0..100 {
        if registration_101(&o).await.is_null() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("SIP.js's registration outlived the browser: {}", registration_101(&o).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blind_transfer_from_sipjs_to_another_sipjs_agent_ends_with_the_second_as_last_talker() {
    let o = media_office(&[("101", 11), ("102", 12)]).await;
    let path = format!("/api/v1/portals/{}/settings", o.portal);
    let mut settings = o.gw.api(Method::GET, &path, None).await.1;
    settings["incoming"]["assign_responsible_to"] = json!("last");
    assert_eq!(o.gw.api(Method::PUT, &path, Some(settings)).await.0, 200);
    let (mut node, registered) = sipjs(&o, "blind", Some("102")).await;
    assert!(registered["b"]["userAgent"].as_str().unwrap_or_default().starts_with("SIP.js/"), "{registered:#}");

    let first = o.pbx_calls("pbx-refer-target.xml", "101", "sipjs-blind", &[]);
    step(&mut node, "a answer").await;
    let referred = step(&mut node, "a refer 102").await;
    assert_eq!(referred["status"], 202, "{referred}");
    assert_eq!(referred["sipfrag"], "SIP/2.0 200 OK", "the PBX's NOTIFY reached SIP.js: {referred}");
    step(&mut node, "a wait-ended").await;
    first.wait().await.assert_all_ok(1);

    // The PBX followed the REFER: it calls B, referred by A, and hangs up after hold_ms.
    let second = o.pbx_calls("pbx-transferred-leg.xml", "102", "sipjs-blind", &[("referrer", "101"), ("hold_ms", "4000")]);
    step(&mut node, "b answer").await;
    let stats = step(&mut node, "b stats dtls").await;
    assert_eq!(stats["dtls"], "connected", "{stats:#}");
    step(&mut node, "b wait-ended").await;
    done(node).await;
    second.wait().await.assert_all_ok(1);

    let call = o.finished("sipjs-blind").await;
    assert_eq!(call["outcome"], "answered", "{call:#}");
    assert_eq!(call["first_talker"]["extension"], "101", "{call:#}");
    assert_eq!(call["last_talker"]["extension"], "102", "{call:#}");
    assert_eq!(call["responsible"], 12, "assign_responsible_to = last: {call:#}");
    let legs: Vec<_> = call["legs"].as_array().unwrap().iter().map(|l| (l["extension"].clone(), l["end_reason"]["reason"].clone())).collect();
    assert_eq!(legs, [(json!("101"), json!("transferred")), (json!("102"), json!("bye"))], "{call:#}");
    o.assert_no_media_left().await;
}

/// A PBX's session refresh (a re-INVITE with its unchanged SDP) is no hold: SIP.js answers it
/// through callgate with sendrecv, audio keeps flowing, and the call record shows no hold.
/// Fails before issue 16 item 6: the proxy observes the offer the bridge rewrote for the browser,
/// whose `c=IN IP4 0.0.0.0` reads as an RFC 2543 hold (recorded from the refresh to the BYE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pbx_session_refresh_to_sipjs_leaves_no_hold_in_the_call_record() {
    let o = media_office(&[("101", 11)]).await;
    let (mut node, _) = sipjs(&o, "refresh", None).await;
    let pbx = o.pbx_calls("pbx-media-session-refresh.xml", "101", "sipjs-refresh", &[("hold_ms", "5000")]);
    step(&mut node, "a answer").await;
    let events = step(&mut node, "a event re-INVITE").await;
    assert!(events.as_array().unwrap().iter().any(|e| e == "re-INVITE answered 200"), "{events}");
    assert_media_flows(&step(&mut node, "a stats").await);
    step(&mut node, "a wait-ended").await;
    done(node).await;
    // The PBX's scenario checks the refresh's answer is sendrecv.
    pbx.wait().await.assert_all_ok(1);

    let call = o.finished("sipjs-refresh").await;
    assert_eq!(call["outcome"], "answered", "{call:#}");
    let leg = &call["legs"][0];
    assert_eq!(leg["end_reason"]["by"], "remote", "{call:#}");
    assert_eq!(leg["holds"].as_array().map_or(0, Vec::len), 0, "a refresh is no hold: {call:#}");
    o.assert_no_media_left().await;
}
