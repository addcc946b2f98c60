//! Who and what callgate reports to Bitrix24, end to end (SIPp as PBX and phones through the
//! proxy, the strict fake Bitrix24): the guide's missed-call rule on a routed call, withheld
//! callers, feature codes and short internal numbers.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::common::sipp::{free_port, Sipp};
use crate::fake_b24::FakeB24;
use crate::proxy::{Office, CUSTOMER};

use crate::crm::{finished_calls, office};

/// The personal-manager index: `CUSTOMER` belongs to user 12 (extension 102).
async fn customer_belongs_to_12(o: &Office) {
    let csv = format!("{CUSTOMER},12\n");
    let url = format!("{}/api/v1/portals/{}/index", o.gw.base, o.portal);
    let resp = o.gw.client.post(url).bearer_auth(crate::common::TOKEN).header("content-type", "text/csv").body(csv).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routed_call_the_manager_misses_is_finished_for_the_incoming_default_with_the_manager_on_record() {
    let fake = FakeB24::spawn().await;
    let o = office(&fake).await;
    customer_belongs_to_12(&o).await;
    let route = Sipp::new("pbx-route.xml", &o.sip).port(free_port()).key("caller", CUSTOMER).key("line", "74951234567").key("xcid", "r-missed");
    route.run().await.assert_all_ok(1);
    // The PBX follows the 302 to 102; the manager's phone rings until the customer hangs up.
    let phone = o.phone("102", "agent-ring.xml", &[]);
    o.pbx_calls("102", "pbx-cancel.xml", "r-missed", &[], vec![phone]).await;

    let calls = finished_calls(&fake, 1).await;
    assert_eq!(calls[0].user_id, 12, "registered to the personal manager: {:#?}", calls[0]);
    assert_eq!(calls[0].shows, [vec![12]], "the manager's card was shown while it rang");
    let f = calls[0].finished.as_ref().unwrap();
    assert_eq!((f.user_id, f.status_code.as_deref(), f.duration), (1, Some("304"), 0), "finished for the incoming default responsible: {f:#?}");
    assert!(calls[0].missed);
    assert_eq!(calls[0].hides, [vec![12]], "the manager's card is hidden (the finish hides user 1's only)");

    let call = o.finished("r-missed").await;
    assert_eq!((call["responsible"].as_u64(), call["responsible_reason"].as_str()), (Some(1), Some("missed")), "{call:#}");
    assert_eq!((call["manager"].as_u64(), call["routed_extension"].as_str()), (Some(12), Some("102")), "the manager stays visible: {call:#}");
    assert_eq!((call["legs"][0]["extension"].as_str(), call["legs"][0]["user"].as_u64()), (Some("102"), Some(12)));
    let (status, decisions) = o.gw.api(Method::GET, "/api/v1/decisions", None).await;
    assert_eq!(status, 200);
    let d = decisions.as_array().unwrap().iter().find(|d| d["manager"] == 12).unwrap_or_else(|| panic!("{decisions:#}"));
    assert_eq!((d["target"].as_str(), d["outcome"].as_str()), (Some("102"), Some("redirect")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withheld_caller_is_registered_with_the_placeholder_and_makes_no_lead() {
    let fake = FakeB24::spawn().await;
    // The strict fake refuses what Bitrix24 refuses: a number with no digit left once letters go.
    let refused = reqwest::Client::new()
        .post(format!("{}telephony.externalcall.register", fake.webhook_url()))
        .json(&json!({"USER_ID": 1, "PHONE_NUMBER": "anonymous", "TYPE": 2, "CRM_CREATE": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["error_description"], "Unsupported phone number format", "{body}");

    let o = office(&fake).await;
    let phone = o.phone("101", "agent-answer.xml", &[]);
    o.pbx_calls("101", "pbx-answered.xml", "w-hidden", &[("caller", "anonymous")], vec![phone]).await;
    // Beside it, a caller with a number: registered as is, and the incoming toggle makes a lead.
    let phone = o.phone("101", "agent-answer.xml", &[]);
    o.pbx_calls("101", "pbx-answered.xml", "w-known", &[], vec![phone]).await;

    let calls = finished_calls(&fake, 2).await;
    assert_eq!(calls.len(), 2, "{calls:#?}");
    let hidden = calls.iter().find(|c| c.phone_number == "0").unwrap_or_else(|| panic!("{calls:#?}"));
    assert_eq!((hidden.crm_create, hidden.created_lead, hidden.call_type), (false, None, 2), "{hidden:#?}");
    let f = hidden.finished.as_ref().unwrap();
    assert_eq!((f.user_id, f.status_code.as_deref()), (11, Some("200")), "finished once as answered: {f:#?}");
    let known = calls.iter().find(|c| c.phone_number == CUSTOMER).unwrap_or_else(|| panic!("{calls:#?}"));
    assert!(known.crm_create && known.created_lead.is_some(), "{known:#?}");
    assert_eq!(fake.leads().len(), 1, "one lead, for the known caller only");
    assert_eq!(fake.calls_of("telephony.externalcall.register").iter().filter(|c| c.error.is_some()).count(), 0, "nothing refused, nothing dead-lettered");
    let call = o.finished("w-hidden").await;
    assert_eq!((call["kind"].as_str(), call["customer"].as_str()), (Some("incoming"), Some("anonymous")), "{call:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_codes_and_short_numbers_are_internal_and_reach_no_bitrix24_while_customers_do() {
    let fake = FakeB24::spawn().await;
    let o = office(&fake).await;
    for dial in ["*97", "555"] {
        o.agent_dials("101", "agent-dial.xml", dial, o.pbx_answers("pbx-uas-answer.xml")).await;
        let call = o.finished_where(|c| c["customer"] == dial).await;
        assert_eq!((call["kind"].as_str(), call["outcome"].as_str()), (Some("internal"), Some("answered")), "{call:#}");
    }
    // A customer's number from the same phone: an outgoing call, registered and finished.
    o.agent_dials("101", "agent-dial.xml", CUSTOMER, o.pbx_answers("pbx-uas-answer.xml")).await;
    let calls = finished_calls(&fake, 1).await;
    assert_eq!((calls[0].phone_number.as_str(), calls[0].call_type, calls[0].user_id), (CUSTOMER, 1, 11), "{calls:#?}");
    tokio::time::sleep(Duration::from_millis(1500)).await; // a worker round after the last intent
    let registers = fake.calls_of("telephony.externalcall.register");
    assert_eq!(registers.len(), 1, "only the customer's call: {registers:#?}");
    assert!(fake.leads().is_empty(), "no lead for *97 or 555 (and outgoing create_entity is off)");

    // The portal's rule: with 2-digit extensions only, 555 is a customer's (short) number.
    o.settings(|s| s["internal_max_digits"] = json!(2)).await;
    o.agent_dials("101", "agent-dial.xml", "555", o.pbx_answers("pbx-uas-answer.xml")).await;
    let call = o.finished_where(|c| c["customer"] == "555" && c["kind"] == "outgoing").await;
    assert_eq!(call["responsible"], 11, "{call:#}");
    let (status, body) = o.gw.api(Method::PUT, &format!("/api/v1/portals/{}/settings", o.portal), Some(json!({"internal_max_digits": 9}))).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["fields"][0]["field"], "internal_max_digits", "{body}");
}
