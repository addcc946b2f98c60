//! Abuse resistance: an untrusted SIP source flooding at ten times the trusted PBX's rate gets
//! 403 (then 503 and silence past its rate limit) while every trusted call still succeeds
//! (SIPp on two loopback addresses); HTTP 429 with Retry-After for unknown sources; the admin
//! surface (no secrets in logs or /metrics, no CORS, body limits). Counts, never timings.

use reqwest::Method;
use serde_json::json;

use crate::common::sipp::Sipp;
use crate::common::{TestGateway, TOKEN};

/// Counter value (summed over label sets) from Prometheus text.
fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l.as_bytes().get(name.len()) == Some(&b'{')
                    || l.as_bytes().get(name.len()) == Some(&b' '))
                && l.contains(label)
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

async fn metrics(gw: &TestGateway) -> String {
    gw.client
        .get(format!("{}/metrics", gw.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// One active portal trusting 127.0.0.1 (the default), user 5 on ext 101 manages 79161234567.
async fn routing_gateway(tweak: impl FnOnce(&mut callgate::config::Config)) -> TestGateway {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = TestGateway::spawn_on(dir.path(), tweak).await;
    gw.keep_dir(dir);
    let id = gw.portal("abuse.bitrix24.ru").await;
    let settings = json!({"active": true, "incoming": {"default_responsible": 1}, "outgoing": {"default_responsible": 1}, "pbx_host": "127.0.0.1:5080"});
    let (status, body) = gw
        .api(
            Method::PUT,
            &format!("/api/v1/portals/{id}/settings"),
            Some(settings),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = gw
        .api(
            Method::POST,
            &format!("/api/v1/portals/{id}/mappings"),
            Some(json!({"user_id": 5, "extension": "101", "use_for_personal_manager": true})),
        )
        .await;
    assert_eq!(status, 201);
    gw.upload_index(id, "number,user_id
79161234567,5
").await;
    gw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_flood_at_ten_times_the_rate_is_refused_while_every_trusted_call_succeeds() {
    // Unknown sources: 50 messages/s after a burst of 100 (an INVITE and its ACK are two).
    let gw = routing_gateway(|c| {
        c.sip.rate_per_source = 50.0;
        c.sip.burst_per_source = 100;
    })
    .await;
    let before = metrics(&gw).await;
    let sip = gw.addresses["sip_udp"].clone();
    let (trusted_calls, trusted_rate) = (300_usize, 50_u32);
    let (flood_calls, flood_rate) = (3000_usize, 500_u32);
    let rows: Vec<[&str; 2]> = vec![["79161234567", "101"]; trusted_calls];
    let rows: Vec<&[&str]> = rows.iter().map(|r| &r[..]).collect();
    let trusted = Sipp::new("uac-redirect.xml", &sip)
        .rows(&rows)
        .calls(trusted_calls)
        .rate(trusted_rate)
        .run();
    let flood = Sipp::new("flood-invite.xml", &sip)
        .calls(flood_calls)
        .rate(flood_rate)
        .ip(crate::common::ATTACKER_IP)
        .args(&["-l", "3000"])
        .run();
    let (trusted, flood) = tokio::join!(trusted, flood);

    trusted.assert_all_ok(trusted_calls as u64);
    // The untrusted source was answered 403 (or 503) up to its limit, and ignored beyond.
    assert!(
        flood.successful > 0,
        "the flood got no answer at all: {}",
        flood.screen
    );
    assert!(flood.failed > 0, "nothing was dropped: {}", flood.screen);
    assert_eq!(
        flood.successful + flood.failed,
        flood_calls as u64,
        "{}",
        flood.screen
    );
    let after = metrics(&gw).await;
    let delta =
        |name: &str, label: &str| metric(&after, name, label) - metric(&before, name, label);
    assert!(
        delta("callgate_sip_forbidden_total", "") >= 40.0,
        "403s: {}",
        delta("callgate_sip_forbidden_total", "")
    );
    assert!(delta("callgate_sip_rate_limited_total", "action=\"drop\"") > 0.0);
    assert!(delta("callgate_sip_rate_limited_total", "action=\"503\"") > 0.0);
    let (_, decisions) = gw
        .api(Method::GET, "/api/v1/decisions?limit=10000", None)
        .await;
    let redirected = decisions
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["reason"] == "personal_manager")
        .count();
    assert_eq!(redirected, trusted_calls, "every trusted call was decided");
}

#[tokio::test]
async fn over_its_rate_an_unknown_http_source_gets_429_with_retry_after_but_the_admin_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = TestGateway::spawn_on(dir.path(), |c| {
        c.http.rate_per_source = 1.0;
        c.http.burst_per_source = 5;
    })
    .await;
    gw.keep_dir(dir);
    let mut codes = Vec::new();
    let mut retry_after = None;
    for _ in 0..20 {
        let resp = gw
            .client
            .get(format!("{}/api/v1/portals", gw.base))
            .bearer_auth("wrong-token-wrong-token")
            .send()
            .await
            .unwrap();
        if resp.status() == 429 {
            retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u32>().ok());
        }
        codes.push(resp.status().as_u16());
    }
    assert_eq!(codes.iter().filter(|c| **c == 401).count(), 5, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 429).count(), 15, "{codes:?}");
    assert!(retry_after.is_some_and(|s| s >= 1), "Retry-After missing");
    // The events endpoint is limited too; the admin with its token is not.
    let resp = gw
        .client
        .post(format!("{}/api/v1/bitrix24/events", gw.base))
        .form(&[("event", "ONAPPTEST")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    for _ in 0..30 {
        assert_eq!(gw.api(Method::GET, "/api/v1/portals", None).await.0, 200);
    }
    // Health endpoints are never limited.
    assert_eq!(
        gw.client
            .get(format!("{}/ready", gw.base))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn the_admin_surface_has_no_cors_and_limits_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = TestGateway::spawn_on(dir.path(), |c| c.http.body_limit_bytes = 4096).await;
    gw.keep_dir(dir);
    // A cross-origin preflight and request get no Access-Control-* header: browsers refuse.
    let pre = gw
        .client
        .request(Method::OPTIONS, format!("{}/api/v1/portals", gw.base))
        .header("Origin", "https://evil.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "authorization")
        .send()
        .await
        .unwrap();
    assert!(
        pre.headers()
            .keys()
            .all(|k| !k.as_str().starts_with("access-control-")),
        "{:?}",
        pre.headers()
    );
    let get = gw
        .client
        .get(format!("{}/api/v1/portals", gw.base))
        .bearer_auth(TOKEN)
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    assert!(get.headers().get("access-control-allow-origin").is_none());
    // Bodies over http.body_limit_bytes: 413.
    let big = json!({"domain": "x".repeat(8192)});
    assert_eq!(
        gw.api(Method::POST, "/api/v1/portals", Some(big)).await.0,
        413
    );
}

#[tokio::test]
async fn http_connections_beyond_the_global_cap_wait_until_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    // Every client here is on 127.0.0.1: the per-source cap is off to show the global one
    // (tests/it/attack_http.rs has the per-source cap and the header timeout that ends a
    // slowloris).
    let mut gw = TestGateway::spawn_on(dir.path(), |c| {
        c.http.max_connections = 16;
        c.http.max_connections_per_source = 0;
        c.http.header_read_timeout = std::time::Duration::from_secs(60);
    })
    .await;
    gw.keep_dir(dir);
    let addr = gw.base.trim_start_matches("http://").to_owned();
    // Sixteen idle connections take every slot (until the header timeout closes them).
    let mut idle = Vec::new();
    for _ in 0..16 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let fresh = || {
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(1))
            .build()
            .unwrap()
    };
    assert!(
        fresh()
            .get(format!("{}/live", gw.base))
            .send()
            .await
            .is_err(),
        "a 17th connection must not be served"
    );
    // One closes: the next connection is served.
    drop(idle.pop());
    let mut served = false;
    for _ in 0..20 {
        if fresh()
            .get(format!("{}/live", gw.base))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            served = true;
            break;
        }
    }
    assert!(served, "served once a slot is free");
}
