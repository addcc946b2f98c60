//! Browser tests of the widget page (issue 6, "Browser tests"): headless Debian Chromium, driven
//! by `playwright-core` from `tests/browser/` (node), against a real gateway on 127.0.0.1.
//!
//! Needs `/usr/bin/chromium` (or `$CHROMIUM`), `node`, and `npm ci --prefix tests/browser`;
//! `scripts/test.sh` installs them. When one is missing the test FAILS with what to install: a
//! browser test that silently passes without a browser would prove nothing.
//! Screenshots and the page's log go to `target/browser-artifacts/`. The harness that runs the
//! scripts is `common/node.rs`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use callgate::sip::core::SipMessage;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::net::UdpSocket;

use crate::common::node::{preflight, NodeRun};
use crate::common::TestGateway;

pub(crate) const REALM: &str = "office.bitrix24.ru";
/// One step of a node script, browser start included (the scripts stop themselves after 60 s).
pub(crate) const STEP_TIMEOUT: Duration = Duration::from_secs(45);

/// A gateway with one portal in WebRTC mode mapping 101, and 101's password.
struct Setup {
    gw: TestGateway,
    portal: i64,
    pbx: UdpSocket,
    password: String,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = TestGateway::spawn_on(dir.path(), |_| {}).await;
    gw.keep_dir(dir);
    let pbx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (portal, password) = gw.webrtc_portal(REALM, pbx.local_addr().unwrap()).await;
    Setup { gw, portal, pbx, password }
}

fn env_for(s: &Setup) -> Vec<(&'static str, String)> {
    vec![
        ("CALLGATE_URL", s.gw.base.clone()),
        ("PORTAL_ID", s.portal.to_string()),
        ("EXTENSION", "101".to_owned()),
        ("PASSWORD", s.password.clone()),
        ("SIP_DOMAIN", REALM.to_owned()),
    ]
}

/// `GET .../agents`, the entry of 101.
async fn agent_101(s: &Setup) -> Value {
    let (status, body) = s.gw.api(Method::GET, &format!("/api/v1/portals/{}/agents", s.portal), None).await;
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().iter().find(|a| a["extension"] == "101").cloned().expect("101 listed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn widget_page_registers_an_agent_in_chromium() {
    let chromium = preflight();
    let s = setup().await;
    let mut node = NodeRun::spawn("register.mjs", &chromium, &env_for(&s), STEP_TIMEOUT);
    let seen = node.expect("registered").await;

    // The registrar's own view while the page is open.
    let agent = agent_101(&s).await;
    assert_eq!(agent["credentials"], true, "{agent}");
    let reg = &agent["registration"];
    assert_eq!(reg, &seen, "the script and the harness see the same registration");
    assert_eq!(reg["extension"], "101", "{reg}");
    assert_eq!(reg["transport"], "ws", "{reg}");
    assert!(reg["user_agent"].as_str().unwrap_or_default().starts_with("JsSIP 3."), "{reg}");
    assert!(reg["contact"].as_str().unwrap_or_default().contains("transport=ws"), "{reg}");
    assert!(reg["remote"].as_str().unwrap_or_default().starts_with("127.0.0.1:"), "{reg}");
    assert!(reg["expires_in"].as_u64().unwrap_or_default() > 60, "{reg}");
    node.say("checked").await;
    node.finish().await;

    // The browser is gone: its socket closed, so is its registration.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !agent_101(&s).await["registration"].is_null() {
        assert!(Instant::now() < deadline, "registration outlived the browser");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn widget_page_is_served_with_its_assets() {
    let gw = TestGateway::spawn().await;
    for (path, ty, needle) in [
        ("/widget/", "text/html", "data-testid=\"login-submit\""),
        ("/widget/app.js", "text/javascript", "JsSIP.UA"),
        ("/widget/jssip.min.js", "text/javascript", "JsSIP"),
    ] {
        let resp = gw.client.get(format!("{}{path}", gw.base)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with(ty), "{path}");
        assert!(resp.text().await.unwrap().contains(needle), "{path}");
    }
    let resp = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
        .get(format!("{}/widget", gw.base)).send().await.unwrap();
    assert_eq!(resp.status(), 308);
    assert_eq!(resp.headers()["location"], "/widget/");
}

/// The next SIP message the PBX socket gets, skipping what `skip` says (bounded).
async fn pbx_recv(pbx: &UdpSocket, what: &str, mut want: impl FnMut(&SipMessage) -> bool) -> SipMessage {
    let mut buf = vec![0u8; 65536];
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        let (n, _) = tokio::time::timeout_at(deadline, pbx.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("the PBX never got {what}"))
            .unwrap();
        let msg = SipMessage::parse(Bytes::copy_from_slice(&buf[..n])).expect("callgate sends valid SIP");
        if want(&msg) {
            return msg;
        }
    }
}

/// Stretch goal of the first browser test: signalling only (no media: the B2BUA and media
/// anchoring are not built yet, so the INVITE carries no SDP and JsSIP treats it as a late offer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pbx_invite_rings_in_the_widget_with_the_caller_and_cancel_ends_it() {
    let chromium = preflight();
    let s = setup().await;
    let mut node = NodeRun::spawn("incoming.mjs", &chromium, &env_for(&s), STEP_TIMEOUT);
    node.expect("registered").await;

    let sip: std::net::SocketAddr = s.gw.addresses["sip_udp"].parse().unwrap();
    let pbx = s.pbx.local_addr().unwrap();
    let via = format!("Via: SIP/2.0/UDP {pbx};branch=z9hG4bK-brw-1\r\n");
    let dialog = format!("From: \"Ivan Petrov\" <sip:79161234567@{pbx}>;tag=pbx1\r\nTo: <sip:101@{sip}>\r\nCall-ID: brw-call-1\r\n");
    let invite = format!(
        "INVITE sip:101@{sip} SIP/2.0\r\n{via}Max-Forwards: 70\r\n{dialog}CSeq: 1 INVITE\r\n\
         Contact: <sip:79161234567@{pbx}>\r\nContent-Length: 0\r\n\r\n"
    );
    s.pbx.send_to(invite.as_bytes(), sip).await.unwrap();
    node.say("invite-sent").await;

    let ringing = node.expect("ringing").await;
    assert_eq!(ringing["number"], "79161234567", "{ringing}");
    assert_eq!(ringing["text"], "Ivan Petrov (79161234567)", "{ringing}");
    assert_eq!(ringing["answerEnabled"], true, "{ringing}");
    let r180 = pbx_recv(&s.pbx, "180 Ringing", |m| m.status() == Some(180)).await;
    assert_eq!(r180.call_id(), Some(&b"brw-call-1"[..]));

    // The caller gives up: CANCEL → 200, the INVITE → 487 (which the PBX ACKs).
    let cancel = format!("CANCEL sip:101@{sip} SIP/2.0\r\n{via}Max-Forwards: 70\r\n{dialog}CSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n");
    s.pbx.send_to(cancel.as_bytes(), sip).await.unwrap();
    let r487 = pbx_recv(&s.pbx, "487 for the INVITE", |m| m.status() == Some(487)).await;
    let to_487 = String::from_utf8_lossy(r487.header_by_name(b"To").expect("To")).into_owned();
    let ack = format!("ACK sip:101@{sip} SIP/2.0\r\n{via}Max-Forwards: 70\r\nFrom: \"Ivan Petrov\" <sip:79161234567@{pbx}>;tag=pbx1\r\nTo: {to_487}\r\nCall-ID: brw-call-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n");
    s.pbx.send_to(ack.as_bytes(), sip).await.unwrap();
    node.say("cancelled").await;
    node.expect("ended").await;
    node.finish().await;
}

// ---- Media through the anchor (issue 6, "Must show"): SIPp plays a PBX that sends G.711 RTP.

/// A gateway with one WebRTC-mode portal whose PBX is a SIPp on `pbx_port`, and browser agents
/// with their passwords.
pub(crate) struct MediaOffice {
    pub(crate) gw: TestGateway,
    pub(crate) portal: i64,
    pub(crate) sip: String,
    pub(crate) pbx_port: u16,
    pub(crate) passwords: std::collections::BTreeMap<&'static str, String>,
}

pub(crate) async fn media_office(agents: &[(&'static str, u64)]) -> MediaOffice {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut gw = TestGateway::spawn_on(dir.path(), |cfg| cfg.calls.linger = Duration::from_millis(300)).await;
    gw.keep_dir(dir);
    let pbx_port = crate::common::sipp::free_port();
    let portal = gw.portal(REALM).await;
    let path = format!("/api/v1/portals/{portal}/settings");
    let mut settings = gw.api(Method::GET, &path, None).await.1;
    settings["telephony_mode"] = json!("webrtc");
    settings["pbx_host"] = json!(format!("127.0.0.1:{pbx_port}"));
    settings["incoming"]["default_responsible"] = json!(1);
    let (status, body) = gw.api(Method::PUT, &path, Some(settings)).await;
    assert_eq!(status, 200, "{body}");
    let mut passwords = std::collections::BTreeMap::new();
    for &(ext, user) in agents {
        let m = json!({ "user_id": user, "extension": ext, "use_for_personal_manager": false, "contact": null });
        let (status, body) = gw.api(Method::POST, &format!("/api/v1/portals/{portal}/mappings"), Some(m)).await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = gw.api(Method::POST, &format!("/api/v1/portals/{portal}/agents/{ext}/credentials"), None).await;
        assert_eq!(status, 201, "{body}");
        passwords.insert(ext, body["password"].as_str().unwrap().to_owned());
    }
    let sip = gw.addresses["sip_udp"].clone();
    MediaOffice { gw, portal, sip, pbx_port, passwords }
}

impl MediaOffice {
    pub(crate) fn env(&self, ext: &'static str) -> Vec<(&'static str, String)> {
        vec![
            ("CALLGATE_URL", self.gw.base.clone()),
            ("PORTAL_ID", self.portal.to_string()),
            ("EXTENSION", ext.to_owned()),
            ("PASSWORD", self.passwords[ext].clone()),
            ("SIP_DOMAIN", REALM.to_owned()),
        ]
    }

    /// SIPp as the PBX calling `ext` with `scenario`, RTP from the tone file (started now).
    pub(crate) fn pbx_calls(&self, scenario: &str, ext: &str, xcid: &str, extra: &[(&str, &str)]) -> crate::common::sipp::SippChild {
        self.pbx_calls_from(self.pbx_port, scenario, ext, xcid, extra)
    }

    /// Like [`Self::pbx_calls`] from another port of the PBX's address (PBXs send from several).
    fn pbx_calls_from(&self, port: u16, scenario: &str, ext: &str, xcid: &str, extra: &[(&str, &str)]) -> crate::common::sipp::SippChild {
        let media_port = crate::common::sipp::free_port().to_string();
        let mut s = crate::common::sipp::Sipp::new(scenario, &self.sip)
            .port(port)
            .key("ext", ext)
            .key("xcid", xcid)
            .file("tone-1khz-pcmu.wav")
            .args(&["-mp", &media_port, "-timeout", "120s"]);
        let caller = extra.iter().find(|(k, _)| *k == "caller").map_or("79161234567", |(_, v)| *v);
        s = s.key("caller", caller);
        for (k, v) in extra.iter().filter(|(k, _)| *k != "caller") {
            s = s.key(k, v);
        }
        s.spawn()
    }

    /// `GET /api/v1/media`: this gateway's media anchor (the Prometheus counters are
    /// process-wide, shared by every gateway of the test binary).
    async fn media(&self) -> Value {
        let (status, body) = self.gw.api(Method::GET, "/api/v1/media", None).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The RTP counters of the one call with media anchored now.
    pub(crate) async fn call_media(&self) -> Value {
        let media = self.media().await;
        assert_eq!(media["open_sessions"], 1, "{media:#}");
        media["calls"][0]["stats"].clone()
    }

    /// Every media session is closed and its ports and peer connection released (waited for:
    /// 5 s in 50 ms steps).
    pub(crate) async fn assert_no_media_left(&self) {
        let mut media = Value::Null;
        for _ in 0..100 {
            media = self.media().await;
            if media["open_sessions"] == 0 && media["live_peer_connections"] == 0 && media["ports_in_use"] == json!({"webrtc": 0, "rtp": 0}) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("media outlived its call: {media:#}");
    }

    /// The finished call with correlation `xcid` (bounded wait).
    pub(crate) async fn finished(&self, xcid: &str) -> Value {
        self.gw.finished_call(|c| c["correlation"] == xcid).await
    }

    /// The finished call to `customer` (bounded wait).
    async fn finished_outgoing(&self, customer: &str) -> Value {
        self.gw.finished_call(|c| c["customer"] == customer).await
    }
}

/// Packets of one direction in the page's stats.
fn packets(stats: &Value, dir: &str) -> u64 {
    stats[dir]["packets"].as_u64().unwrap_or(0)
}

pub(crate) fn assert_media_flows(stats: &Value) {
    let (first, second) = (&stats["first"], &stats["second"]);
    assert_eq!(first["dtls"], "connected", "DTLS to callgate: {stats:#}");
    assert!(first["srtpCipher"].is_string(), "SRTP in use: {stats:#}");
    assert_eq!(first["inbound"]["codec"], "audio/PCMU", "the PBX's codec, no Opus: {stats:#}");
    assert_eq!(first["outbound"]["codec"], "audio/PCMU", "{stats:#}");
    assert!(packets(second, "inbound") > packets(first, "inbound") && packets(first, "inbound") > 0, "packets from the PBX keep arriving: {stats:#}");
    assert!(packets(second, "outbound") > packets(first, "outbound") && packets(first, "outbound") > 0, "{stats:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pbx_call_with_media_is_answered_in_chromium_and_the_agent_hangs_up() {
    let chromium = preflight();
    let o = media_office(&[("101", 11)]).await;
    let mut env = o.env("101");
    env.push(("HANGUP", "browser".to_owned()));
    let mut node = NodeRun::spawn("media.mjs", &chromium, &env, STEP_TIMEOUT);
    node.expect("registered").await;
    let pbx = o.pbx_calls("pbx-media-wait-bye.xml", "101", "media-agent-bye", &[]);
    node.say("invite-sent").await;
    node.expect("talking").await;
    let stats = node.expect("stats").await;
    assert_media_flows(&stats);

    // callgate's side of the same media: RTP from the browser relayed to the PBX, and back.
    let stats = o.call_media().await;
    for counter in ["from_browser_packets", "to_pbx_packets", "from_pbx_packets", "to_browser_packets"] {
        assert!(stats[counter].as_u64().unwrap_or(0) > 10, "{counter}: {stats:#}");
    }
    assert_eq!(stats["codec"], "PCMU", "{stats:#}");
    assert_eq!(stats["dtls_connected"], true, "{stats:#}");

    node.say("hang-up").await;
    let pcs = node.expect("ended").await;
    assert_eq!(pcs, json!(["closed"]), "the page's peer connection is closed");
    node.finish().await;
    // The PBX got the agent's BYE (its scenario waits for it).
    pbx.wait().await.assert_all_ok(1);
    let call = o.finished("media-agent-bye").await;
    assert_eq!(call["outcome"], "answered", "{call:#}");
    assert_eq!(call["first_talker"]["extension"], "101", "{call:#}");
    assert_eq!(call["legs"][0]["end_reason"]["reason"], "bye", "{call:#}");
    assert_eq!(call["legs"][0]["end_reason"]["by"], "agent", "{call:#}");
    o.assert_no_media_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pbx_hanging_up_ends_the_browser_leg_and_its_media() {
    let chromium = preflight();
    let o = media_office(&[("101", 11)]).await;
    let mut env = o.env("101");
    env.push(("HANGUP", "pbx".to_owned()));
    let mut node = NodeRun::spawn("media.mjs", &chromium, &env, STEP_TIMEOUT);
    node.expect("registered").await;
    let pbx = o.pbx_calls("pbx-media-hangup.xml", "101", "media-pbx-bye", &[("hold_ms", "5000")]);
    node.say("invite-sent").await;
    node.expect("talking").await;
    assert_media_flows(&node.expect("stats").await);
    let pcs = node.expect("ended").await;
    assert_eq!(pcs, json!(["closed"]), "the page's peer connection is closed");
    node.finish().await;
    pbx.wait().await.assert_all_ok(1);
    let call = o.finished("media-pbx-bye").await;
    assert_eq!(call["outcome"], "answered", "{call:#}");
    assert_eq!(call["legs"][0]["end_reason"]["by"], "remote", "{call:#}");
    o.assert_no_media_left().await;
}

/// A PBX's re-INVITEs in a browser agent's call (issue 16, item 6): a session refresh (the same
/// SDP, `sendrecv`) is no hold, although the offer the browser gets from callgate's media anchor
/// says `c=IN IP4 0.0.0.0` (WebRTC's placeholder); the hold and resume that follow are one hold
/// period, closed by the resume, not by the end of the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pbx_session_refresh_in_a_browser_call_is_no_hold_and_a_real_hold_is_recorded() {
    let chromium = preflight();
    let o = media_office(&[("101", 11)]).await;
    let mut env = o.env("101");
    env.push(("HANGUP", "pbx".to_owned()));
    let mut node = NodeRun::spawn("media.mjs", &chromium, &env, STEP_TIMEOUT);
    node.expect("registered").await;
    let pbx = o.pbx_calls("pbx-media-refresh.xml", "101", "media-refresh", &[("talk_ms", "5000"), ("step_ms", "1000")]);
    node.say("invite-sent").await;
    node.expect("talking").await;
    assert_media_flows(&node.expect("stats").await);
    node.expect("ended").await;
    node.finish().await;
    pbx.wait().await.assert_all_ok(1);
    let call = o.finished("media-refresh").await;
    assert_eq!(call["outcome"], "answered", "{call:#}");
    let leg = &call["legs"][0];
    let holds = leg["holds"].as_array().cloned().unwrap_or_default();
    assert_eq!(holds.len(), 1, "the hold only, not the refresh: {call:#}");
    let (to, ended) = (holds[0]["to"].as_u64(), leg["ended_at"].as_u64());
    assert!(to.is_some() && to < ended, "the hold ended with the resume, before the call did: {call:#}");
    o.assert_no_media_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blind_transfer_between_two_browser_agents_ends_with_the_second_as_last_talker() {
    let chromium = preflight();
    let o = media_office(&[("101", 11), ("102", 12)]).await;
    o.gw.api(Method::GET, "/api/v1/calls", None).await;
    let path = format!("/api/v1/portals/{}/settings", o.portal);
    let mut settings = o.gw.api(Method::GET, &path, None).await.1;
    settings["incoming"]["assign_responsible_to"] = json!("last");
    assert_eq!(o.gw.api(Method::PUT, &path, Some(settings)).await.0, 200);
    let mut env = o.env("101");
    env.push(("EXTENSION_B", "102".to_owned()));
    env.push(("PASSWORD_B", o.passwords["102"].clone()));
    let mut node = NodeRun::spawn("transfer.mjs", &chromium, &env, STEP_TIMEOUT);
    node.expect("registered").await;
    let first = o.pbx_calls("pbx-refer-target.xml", "101", "media-blind", &[]);
    node.say("invite-sent").await;
    node.expect("talking-a").await;
    node.expect("transferred").await;
    // The PBX followed the REFER (and hung up on A); now it calls B, referred by A.
    first.wait().await.assert_all_ok(1);
    // The PBX holds the transferred leg long enough for B's ICE/DTLS and a stats sample even on
    // a loaded machine (1.5 s was once too short with the whole suite running).
    let second = o.pbx_calls("pbx-transferred-leg.xml", "102", "media-blind", &[("referrer", "101"), ("hold_ms", "4000")]);
    node.say("b-invited").await;
    let stats = node.expect("talking-b").await;
    assert_eq!(stats["dtls"], "connected", "{stats:#}");
    node.expect("ended").await;
    node.finish().await;
    second.wait().await.assert_all_ok(1);
    let call = o.finished("media-blind").await;
    assert_eq!(call["outcome"], "answered", "{call:#}");
    assert_eq!(call["first_talker"]["extension"], "101", "{call:#}");
    assert_eq!(call["last_talker"]["extension"], "102", "{call:#}");
    assert_eq!(call["responsible"], 12, "assign_responsible_to = last: {call:#}");
    let legs: Vec<_> = call["legs"].as_array().unwrap().iter().map(|l| (l["extension"].clone(), l["end_reason"]["reason"].clone())).collect();
    assert_eq!(legs, [(json!("101"), json!("transferred")), (json!("102"), json!("bye"))], "{call:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_vanishes_mid_call_is_hung_up_for_by_callgate() {
    let chromium = preflight();
    let o = media_office(&[("101", 11)]).await;
    let mut env = o.env("101");
    env.push(("HANGUP", "close".to_owned()));
    let mut node = NodeRun::spawn("media.mjs", &chromium, &env, STEP_TIMEOUT);
    node.expect("registered").await;
    let pbx = o.pbx_calls("pbx-media-wait-bye.xml", "101", "media-vanish", &[]);
    node.say("invite-sent").await;
    node.expect("talking").await;
    assert_media_flows(&node.expect("stats").await);
    node.say("close").await;
    node.expect("ended").await;
    node.finish().await;
    // The tab closed its WebSocket without a BYE: callgate sent the PBX one on its behalf.
    pbx.wait().await.assert_all_ok(1);
    let call = o.finished("media-vanish").await;
    assert_eq!(call["outcome"], "answered", "{call:#}");
    assert_eq!(call["legs"][0]["end_reason"], json!({"reason": "bye", "by": "agent"}), "{call:#}");
    o.assert_no_media_left().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_agent_calls_out_through_the_pbx_with_media_and_holds() {
    let chromium = preflight();
    let o = media_office(&[("101", 11)]).await;
    let path = format!("/api/v1/portals/{}/settings", o.portal);
    let mut settings = o.gw.api(Method::GET, &path, None).await.1;
    settings["outgoing"]["default_responsible"] = json!(2);
    assert_eq!(o.gw.api(Method::PUT, &path, Some(settings)).await.0, 200);
    let mut env = o.env("101");
    env.push(("DIAL", "74951112233".to_owned()));
    let mut node = NodeRun::spawn("outgoing.mjs", &chromium, &env, STEP_TIMEOUT);
    node.expect("registered").await;
    let media_port = crate::common::sipp::free_port().to_string();
    let pbx = crate::common::sipp::Sipp::new("pbx-uas-media.xml", &o.sip)
        .port(o.pbx_port)
        .args(&["-mp", &media_port, "-rtp_echo", "-timeout", "120s", "-trace_logs"])
        .spawn();
    node.say("pbx-ready").await;
    node.expect("talking").await;
    let stats = node.expect("stats").await;
    assert_media_flows(&stats);
    node.expect("held").await;
    node.expect("resumed").await;
    node.expect("dtmf-sent").await;
    let stats = o.call_media().await;
    assert!(stats["from_browser_packets"].as_u64().unwrap_or(0) > 10, "callgate relays the browser's RTP: {stats:#}");
    node.say("hang-up").await;
    node.expect("ended").await;
    node.finish().await;
    let pbx = pbx.wait().await;
    pbx.assert_all_ok(1);
    // The widget's DTMF reached the PBX as SIP INFO (the scenario logs the digit; SIPp counts it).
    let info = pbx.screen.lines().find(|l| l.contains("INFO") && l.contains("---")).unwrap_or_default();
    assert!(info.split_whitespace().nth(2) == Some("1"), "one INFO at the PBX: {info:?}\n{}", pbx.screen);
    let call = o.finished_outgoing("74951112233").await;
    assert_eq!(call["kind"], "outgoing", "{call:#}");
    assert_eq!(call["outcome"], "answered", "{call:#}");
    assert_eq!(call["first_talker"]["extension"], "101", "{call:#}");
    assert_eq!(call["responsible"], 11, "{call:#}");
    assert_eq!(call["legs"][0]["end_reason"], json!({"reason": "bye", "by": "agent"}), "{call:#}");
    let holds = call["legs"][0]["holds"].as_array().map_or(0, Vec::len);
    assert_eq!(holds, 1, "one hold period, ended by the resume: {call:#}");
    assert!(!call["legs"][0]["holds"][0]["to"].is_null(), "{call:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attended_transfer_from_the_widget_hands_the_customer_to_the_consulted_browser_agent() {
    let chromium = preflight();
    let o = media_office(&[("101", 11), ("102", 12)]).await;
    let mut env = o.env("101");
    env.push(("EXTENSION_B", "102".to_owned()));
    env.push(("PASSWORD_B", o.passwords["102"].clone()));
    let mut node = NodeRun::spawn("attended.mjs", &chromium, &env, STEP_TIMEOUT);
    node.expect("registered").await;
    // The customer's leg to A, from another port of the PBX's address: the PBX accepts A's hold
    // and REFER, then hangs up on A.
    let customer_port = crate::common::sipp::free_port();
    let customer = crate::common::sipp::Sipp::new("pbx-refer-target.xml", &o.sip)
        .port(customer_port)
        .key("ext", "101")
        .key("caller", "79161234567")
        .key("xcid", "media-attended")
        .args(&["-mp", &crate::common::sipp::free_port().to_string(), "-timeout", "120s"])
        .spawn();
    node.say("invite-sent").await;
    node.expect("talking-a").await;
    // A's consultation call goes out to the PBX, which answers it here ...
    let consult_pbx = crate::common::sipp::Sipp::new("pbx-uas-media.xml", &o.sip)
        .port(o.pbx_port)
        .args(&["-mp", &crate::common::sipp::free_port().to_string(), "-rtp_echo", "-timeout", "120s"])
        .spawn();
    node.say("consult-ready").await;
    node.expect("consulting").await;
    // ... and calls B on A's behalf (caller 101), whom it joins with the customer after the REFER.
    let leg_b = o.pbx_calls_from(crate::common::sipp::free_port(), "pbx-media-hangup.xml", "102", "media-consultation", &[("caller", "101"), ("hold_ms", "6000")]);
    node.say("b-invited").await;
    let stats = node.expect("talking-b").await;
    assert_eq!(stats["dtls"], "connected", "{stats:#}");
    node.expect("transferred").await;
    node.expect("ended").await;
    node.finish().await;
    customer.wait().await.assert_all_ok(1);
    consult_pbx.wait().await.assert_all_ok(1);
    leg_b.wait().await.assert_all_ok(1);
    let call = o.finished("media-attended").await;
    assert_eq!(call["outcome"], "answered", "{call:#}");
    assert_eq!(call["first_talker"]["extension"], "101", "{call:#}");
    assert_eq!(call["last_talker"]["extension"], "102", "{call:#}");
    let legs: Vec<_> = call["legs"].as_array().unwrap().iter().map(|l| (l["extension"].clone(), l["end_reason"]["reason"].clone())).collect();
    assert!(legs.contains(&(json!("101"), json!("transferred"))), "{call:#}");
    let (_, calls) = o.gw.api(Method::GET, "/api/v1/calls", None).await;
    assert!(!calls.as_array().unwrap().iter().any(|c| c["kind"] == "internal"), "the consultation was merged into the customer call: {calls:#}");
}
