//! The redirect listener against real SIPp over UDP and TCP.

use std::net::UdpSocket;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::common::sipp::Sipp;
use crate::common::TestGateway;

const KNOWN: &str = "79161234567";
const EXCLUDED: &str = "79161234568";
const UNMAPPED: &str = "79161234569";
const STRANGER: &str = "79990000000";

/// One active portal: user 5 (ext 101) is a manager, user 6 (ext 102) is mapped without the
/// personal-manager flag, user 77 is not mapped.
async fn gateway_with_portal(tweak: impl FnOnce(&mut callgate::config::Config)) -> (TestGateway, i64) {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = TestGateway::spawn_on(dir.path(), tweak).await;
    gw.keep_dir(dir);
    let id = gw.portal("a.bitrix24.ru").await;
    let (status, body) = gw.api(Method::PUT, &format!("/api/v1/portals/{id}/settings"), Some(active_settings(true))).await;
    assert_eq!(status, 200, "{body}");
    for (user, ext, pm) in [(5, "101", true), (6, "102", false)] {
        let (status, _) = gw.api(Method::POST, &format!("/api/v1/portals/{id}/mappings"), Some(json!({"user_id": user, "extension": ext, "use_for_personal_manager": pm}))).await;
        assert_eq!(status, 201);
    }
    let csv = format!("number,user_id\n+7 (916) 123-45-67,5\n{EXCLUDED},6\n{UNMAPPED},77\n");
    let resp = gw.client.post(format!("{}/api/v1/portals/{id}/index", gw.base)).bearer_auth(crate::common::TOKEN).header("content-type", "text/csv").body(csv).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    (gw, id)
}

fn active_settings(forward: bool) -> serde_json::Value {
    json!({"active": true, "incoming": {"forward_to_personal_manager": forward, "default_responsible": 1}, "outgoing": {"default_responsible": 1}, "pbx_host": "127.0.0.1:5080"})
}

impl TestGateway {
    fn sip_udp(&self) -> String {
        self.addresses["sip_udp"].clone()
    }
    fn sip_tcp(&self) -> String {
        self.addresses["sip_tcp"].clone()
    }
}

#[tokio::test]
async fn known_caller_is_redirected_to_the_managers_extension_over_udp_and_tcp() {
    let (gw, _) = gateway_with_portal(|_| {}).await;
    let rows: Vec<[&str; 2]> = vec![[KNOWN, "101"], ["89161234567", "101"], ["+79161234567", "101"]];
    let rows: Vec<&[&str]> = rows.iter().map(|r| &r[..]).collect();
    Sipp::new("uac-redirect.xml", &gw.sip_udp()).rows(&rows).calls(3).run().await.assert_all_ok(3);
    Sipp::new("uac-redirect.xml", &gw.sip_tcp()).rows(&rows).calls(3).args(&["-t", "t1"]).run().await.assert_all_ok(3);

    let (_, recent) = gw.api(Method::GET, "/api/v1/decisions?limit=6", None).await;
    let recent = recent.as_array().unwrap();
    assert_eq!(recent.len(), 6);
    for d in recent {
        assert_eq!((d["outcome"].as_str(), d["target"].as_str(), d["reason"].as_str()), (Some("redirect"), Some("101"), Some("personal_manager")));
        assert_eq!(d["caller"], KNOWN);
        assert_eq!(d["manager"], 5);
    }
    let metrics = gw.client.get(format!("{}/metrics", gw.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"callgate_routing_decisions_total{outcome="redirect",reason="personal_manager"}"#), "{metrics}");
}

#[tokio::test]
async fn callers_without_an_eligible_manager_get_no_decision() {
    let (gw, id) = gateway_with_portal(|_| {}).await;
    let rows: Vec<[&str; 2]> = vec![[STRANGER, "404"], [EXCLUDED, "404"], [UNMAPPED, "404"], ["anonymous", "404"], ["101", "404"]];
    let rows: Vec<&[&str]> = rows.iter().map(|r| &r[..]).collect();
    Sipp::new("uac-status.xml", &gw.sip_udp()).rows(&rows).calls(5).run().await.assert_all_ok(5);
    let (_, recent) = gw.api(Method::GET, "/api/v1/decisions?limit=5", None).await;
    let reasons: Vec<&str> = recent.as_array().unwrap().iter().rev().map(|d| d["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["not_in_index", "manager_excluded", "manager_unmapped", "no_caller_number", "no_caller_number"]);

    // Flag off, then portal inactive: the known caller is not routed either.
    gw.api(Method::PUT, &format!("/api/v1/portals/{id}/settings"), Some(active_settings(false))).await;
    Sipp::new("uac-status.xml", &gw.sip_udp()).rows(&[&[KNOWN, "404"]]).run().await.assert_all_ok(1);
    gw.api(Method::PUT, &format!("/api/v1/portals/{id}/settings"), Some(json!({"active": false, "pbx_host": "127.0.0.1:5080"}))).await;
    Sipp::new("uac-status.xml", &gw.sip_tcp()).rows(&[&[KNOWN, "404"]]).args(&["-t", "t1"]).run().await.assert_all_ok(1);
    let (_, recent) = gw.api(Method::GET, "/api/v1/decisions?limit=2", None).await;
    let reasons: Vec<&str> = recent.as_array().unwrap().iter().rev().map(|d| d["reason"].as_str().unwrap()).collect();
    assert_eq!(reasons, ["forwarding_off", "inactive"]);
}

#[tokio::test]
async fn no_decision_status_is_configurable() {
    let (gw, _) = gateway_with_portal(|cfg| cfg.sip.no_decision_code = 480).await;
    Sipp::new("uac-status.xml", &gw.sip_udp()).rows(&[&[STRANGER, "480"]]).run().await.assert_all_ok(1);
}

#[tokio::test]
async fn a_retransmitted_invite_gets_the_same_answer_without_a_second_decision() {
    let (gw, _) = gateway_with_portal(|_| {}).await;
    // SIPp loses the first 302 and retransmits the INVITE (timer A): the same 302 comes back.
    Sipp::new("uac-retransmit.xml", &gw.sip_udp()).rows(&[&[KNOWN, "101"]]).calls(3).run().await.assert_all_ok(3);
    let metrics = gw.client.get(format!("{}/metrics", gw.base)).send().await.unwrap().text().await.unwrap();
    let retrans: u64 = metrics
        .lines()
        .find(|l| l.starts_with("callgate_sip_retransmissions_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(retrans >= 3, "each call's INVITE was retransmitted at least once: {retrans}");
    // Byte for byte, over UDP and TCP, even when the index changes in between.
    let target = gw.sip_udp();
    let invite = request("INVITE", "z9hG4bKsame", "");
    let (first, second) = tokio::task::spawn_blocking(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        (exchange(&sock, &target, invite.as_bytes()), exchange(&sock, &target, invite.as_bytes()))
    })
    .await
    .unwrap();
    assert!(first.as_deref().is_some_and(|f| f.starts_with("SIP/2.0 302")));
    assert_eq!(first, second, "a retransmission gets the identical answer");
    let tcp = tcp_exchange_twice(&gw.sip_tcp(), &request("INVITE", "z9hG4bKsametcp", "").replace("SIP/2.0/UDP", "SIP/2.0/TCP")).await;
    assert!(tcp.0.starts_with("SIP/2.0 302"));
    assert_eq!(tcp.0, tcp.1);
    let (_, recent) = gw.api(Method::GET, "/api/v1/decisions?limit=100", None).await;
    assert_eq!(recent.as_array().unwrap().len(), 5, "one decision per call, not per INVITE");
}

async fn tcp_exchange_twice(target: &str, msg: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(target).await.unwrap();
    let mut answers = Vec::new();
    for _ in 0..2 {
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        answers.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    (answers.remove(0), answers.remove(0))
}

#[tokio::test]
async fn an_untrusted_source_gets_403() {
    let (gw, _) = gateway_with_portal(|_| {}).await;
    // The attacker's 127.0.0.5 is loopback too, but neither in trusted_pbx nor the pbx_host.
    let attacker = crate::common::ATTACKER_IP;
    Sipp::new("uac-status.xml", &gw.sip_udp()).rows(&[&[KNOWN, "403"]]).ip(attacker).run().await.assert_all_ok(1);
    Sipp::new("uac-status.xml", &gw.sip_tcp()).rows(&[&[KNOWN, "403"]]).ip(attacker).args(&["-t", "t1"]).run().await.assert_all_ok(1);
    let (_, recent) = gw.api(Method::GET, "/api/v1/decisions", None).await;
    assert_eq!(recent, json!([]), "no decision is taken for an untrusted source");
}

fn exchange(sock: &UdpSocket, target: &str, msg: &[u8]) -> Option<String> {
    sock.send_to(msg, target).unwrap();
    let mut buf = [0u8; 4096];
    match sock.recv_from(&mut buf) {
        Ok((n, _)) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        Err(_) => None,
    }
}

fn request(method: &str, branch: &str, extra: &str) -> String {
    format!(
        "{method} sip:pm-route@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch={branch}\r\nFrom: <sip:{KNOWN}@127.0.0.1>;tag=a1\r\nTo: <sip:pm-route@127.0.0.1>\r\nCall-ID: {branch}@test\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

#[tokio::test]
async fn malformed_and_oversized_datagrams_are_refused_while_sipp_keeps_getting_answers() {
    let (gw, _) = gateway_with_portal(|cfg| cfg.sip.max_message_bytes = 4096).await;
    let target = gw.sip_udp();
    let result = tokio::task::spawn_blocking(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut seen = Vec::new();
        // Garbage and an oversized datagram: dropped (no answer at all).
        seen.push(exchange(&sock, &target, b"\x00\xff garbage \r\n\r\n"));
        let mut big = request("INVITE", "z9hG4bKbig", "").into_bytes();
        big.extend(std::iter::repeat_n(b'x', 5000));
        seen.push(exchange(&sock, &target, &big));
        // Missing Call-ID: no response can be built, so it is dropped.
        let no_call_id = request("INVITE", "z9hG4bKnocid", "").replace("Call-ID: z9hG4bKnocid@test\r\n", "");
        seen.push(exchange(&sock, &target, no_call_id.as_bytes()));
        // Content-Length beyond the datagram: 400 with the reason.
        let short = request("INVITE", "z9hG4bKshort", "").replace("Content-Length: 0", "Content-Length: 9999");
        seen.push(exchange(&sock, &target, short.as_bytes()));
        // CSeq method mismatch: 400.
        let mismatch = request("INVITE", "z9hG4bKmm", "").replace("CSeq: 1 INVITE", "CSeq: 1 OPTIONS");
        seen.push(exchange(&sock, &target, mismatch.as_bytes()));
        // Well-formed others.
        seen.push(exchange(&sock, &target, request("OPTIONS", "z9hG4bKopt", "").as_bytes()));
        seen.push(exchange(&sock, &target, request("CANCEL", "z9hG4bKnone", "").as_bytes()));
        seen.push(exchange(&sock, &target, request("BYE", "z9hG4bKbye", "").as_bytes()));
        seen.push(exchange(&sock, &target, request("INVITE", "z9hG4bKmf0", "Max-Forwards: 0\r\n").as_bytes()));
        // INVITE, then CANCEL of it: the INVITE was answered at once, so CANCEL gets 200.
        seen.push(exchange(&sock, &target, request("INVITE", "z9hG4bKcx", "").as_bytes()));
        seen.push(exchange(&sock, &target, request("CANCEL", "z9hG4bKcx", "").as_bytes()));
        seen
    })
    .await
    .unwrap();
    let status = |s: &Option<String>| s.as_deref().map(|t| t.lines().next().unwrap_or("").to_owned());
    assert_eq!(status(&result[0]), None, "garbage is dropped");
    assert_eq!(status(&result[1]), None, "oversized is dropped");
    assert_eq!(status(&result[2]), None, "no Call-ID: nothing to answer with");
    let bad = status(&result[3]).unwrap_or_default();
    assert!(bad.starts_with("SIP/2.0 400 "), "{:?}", result[3]);
    assert!(bad.len() > "SIP/2.0 400 ".len(), "a reason phrase says what is wrong: {bad}");
    assert!(status(&result[4]).is_some_and(|s| s.starts_with("SIP/2.0 400")), "{:?}", result[4]);
    assert_eq!(status(&result[5]).as_deref(), Some("SIP/2.0 200 OK"));
    assert!(result[5].as_deref().unwrap().contains("Allow: INVITE, ACK, CANCEL, OPTIONS"));
    assert_eq!(status(&result[6]).as_deref(), Some("SIP/2.0 481 Call/Transaction Does Not Exist"));
    assert_eq!(status(&result[7]).as_deref(), Some("SIP/2.0 405 Method Not Allowed"));
    assert_eq!(status(&result[8]).as_deref(), Some("SIP/2.0 483 Too Many Hops"));
    assert_eq!(status(&result[9]).as_deref(), Some("SIP/2.0 302 Moved Temporarily"));
    assert!(result[9].as_deref().unwrap().contains("Contact: <sip:101@127.0.0.1:5080>"));
    assert_eq!(status(&result[10]).as_deref(), Some("SIP/2.0 200 OK"));
    // And the server still answers SIPp.
    Sipp::new("uac-redirect.xml", &gw.sip_udp()).rows(&[&[KNOWN, "101"]]).calls(3).run().await.assert_all_ok(3);
}

#[tokio::test]
async fn tcp_with_a_bad_content_length_gets_400_and_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (gw, _) = gateway_with_portal(|_| {}).await;
    for bad in ["Content-Length: abc\r\n", "", "Content-Length: -1\r\n"] {
        let mut s = tokio::net::TcpStream::connect(gw.sip_tcp()).await.unwrap();
        let msg = request("INVITE", "z9hG4bKtcp", "").replace("Content-Length: 0\r\n", bad).replace("SIP/2.0/UDP", "SIP/2.0/TCP");
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.expect("closed by callgate").unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("SIP/2.0 400"), "{bad:?} -> {text}");
    }
    // A good message on a fresh connection still works.
    Sipp::new("uac-redirect.xml", &gw.sip_tcp()).rows(&[&[KNOWN, "101"]]).args(&["-t", "t1"]).run().await.assert_all_ok(1);
}

#[tokio::test]
async fn http_route_returns_the_same_decision() {
    let (gw, _) = gateway_with_portal(|_| {}).await;
    let (status, d) = gw.call(Method::GET, "/api/v1/route?caller=%2B7%20916%20123-45-67", None, None).await;
    assert_eq!(status, 200, "trusted source (127.0.0.1) needs no token: {d}");
    assert_eq!((d["decision"].as_str(), d["target"].as_str(), d["contact"].as_str()), (Some("redirect"), Some("101"), Some("sip:101@127.0.0.1:5080")));
    assert_eq!(d["user_id"], 5);
    let (_, d) = gw.call(Method::GET, &format!("/api/v1/route?caller={EXCLUDED}"), None, None).await;
    assert_eq!((d["decision"].as_str(), d["target"].clone(), d["reason"].as_str()), (Some("no_decision"), serde_json::Value::Null, Some("manager_excluded")));
    let (status, body) = gw.call(Method::GET, "/api/v1/route", None, None).await;
    assert_eq!((status, crate::common::fields(&body)), (422, vec!["caller".to_owned()]));
}

#[tokio::test]
async fn http_route_from_an_untrusted_source_needs_the_token() {
    let (gw, id) = gateway_with_portal(|_| {}).await;
    let mut s = active_settings(true);
    s["trusted_pbx"] = json!(["10.9.9.9"]);
    s["pbx_host"] = json!("10.9.9.9:5060");
    gw.api(Method::PUT, &format!("/api/v1/portals/{id}/settings"), Some(s)).await;
    let (status, _) = gw.call(Method::GET, &format!("/api/v1/route?caller={KNOWN}"), None, None).await;
    assert_eq!(status, 403);
    let (status, d) = gw.api(Method::GET, &format!("/api/v1/route?caller={KNOWN}"), None).await;
    assert_eq!((status, d["target"].as_str()), (200, Some("101")));
}

#[tokio::test]
async fn the_index_survives_a_restart_without_bitrix24() {
    let (gw, id) = gateway_with_portal(|_| {}).await;
    let (_, count) = gw.api(Method::GET, &format!("/api/v1/portals/{id}/index"), None).await;
    assert_eq!(count["count"], 3);
    let dir = gw.stop().await.expect("owns its directory");
    let gw = TestGateway::spawn_on(dir.path(), |_| {}).await;
    let (_, count) = gw.api(Method::GET, &format!("/api/v1/portals/{id}/index"), None).await;
    assert_eq!(count["count"], 3);
    Sipp::new("uac-redirect.xml", &gw.sip_udp()).rows(&[&[KNOWN, "101"]]).run().await.assert_all_ok(1);
    // A bad upload changes nothing and names the line.
    let resp = gw.client.post(format!("{}/api/v1/portals/{id}/index?replace=true", gw.base)).bearer_auth(crate::common::TOKEN).body("79160000001,5\nnot-a-number,5\n").send().await.unwrap();
    assert_eq!(resp.status(), 422);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(crate::common::fields(&body), ["line 2"]);
    let (_, count) = gw.api(Method::GET, &format!("/api/v1/portals/{id}/index"), None).await;
    assert_eq!(count["count"], 3);
    // replace=true swaps the whole index.
    let resp = gw.client.post(format!("{}/api/v1/portals/{id}/index?replace=true", gw.base)).bearer_auth(crate::common::TOKEN).body("79160000001,5\n").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (_, count) = gw.api(Method::GET, &format!("/api/v1/portals/{id}/index"), None).await;
    assert_eq!(count["count"], 1);
    drop(dir);
}
