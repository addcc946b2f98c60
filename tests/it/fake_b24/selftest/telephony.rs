//! Self-tests: telephony (register dedup, CRM binding, finish, attachRecord).

use std::time::Duration;

use serde_json::{json, Value};

use super::{client, form, json_call, register};
use crate::fake_b24::FakeB24;

/// Attaches to `call_id` via the webhook with extra form pairs.
async fn attach(fake: &FakeB24, call_id: &str, extra: &[(&str, &str)]) -> Value {
    let mut pairs = vec![("CALL_ID", call_id)];
    pairs.extend_from_slice(extra);
    form(fake, "telephony.externalCall.attachRecord", &pairs)
        .await
        .1
}

async fn finished_call(fake: &FakeB24) -> String {
    let call_id = register(fake, "11", "79001112233", &[]).await;
    let fin = [
        ("CALL_ID", call_id.as_str()),
        ("USER_ID", "11"),
        ("DURATION", "5"),
        ("STATUS_CODE", "200"),
        ("ADD_TO_CHAT", "1"),
    ];
    assert_eq!(
        form(fake, "telephony.externalcall.finish", &fin).await.0,
        200
    );
    call_id
}

#[tokio::test]
async fn re_registration_within_thirty_minutes_returns_the_same_call_id() {
    let fake = FakeB24::spawn().await;
    fake.pause_clock();
    let first = register(&fake, "11", "+7 (900) 111-22-33", &[]).await;
    assert!(
        first.starts_with("externalCall.") && first.split('.').nth(1).unwrap().len() == 32,
        "{first}"
    );
    assert_eq!(
        register(&fake, "11", "89001112233", &[]).await,
        first,
        "same user, normalised phone, type"
    );
    let unique = register(&fake, "11", "89001112233", &[("EXTERNAL_CALL_ID", "pbx-2")]).await;
    assert_ne!(unique, first, "a new EXTERNAL_CALL_ID is a new call");
    assert_ne!(
        register(&fake, "12", "89001112233", &[]).await,
        first,
        "another user"
    );
    fake.advance(Duration::from_secs(31 * 60));
    assert_ne!(
        register(&fake, "11", "89001112233", &[]).await,
        first,
        "the window is 30 minutes"
    );
    assert_eq!(fake.registered()[0].registrations, 2);
}

#[tokio::test]
async fn finish_validates_and_a_second_finish_is_call_not_found() {
    let fake = FakeB24::spawn().await;
    let call_id = register(&fake, "11", "79001112233", &[]).await;
    let (status, body) = json_call(
        &fake,
        "telephony.externalcall.finish",
        json!({"CALL_ID": 5, "USER_ID": 11}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("INVALID_ARGUMENT")),
        "{body}"
    );

    let fin = [
        ("CALL_ID", call_id.as_str()),
        ("USER_ID", "11"),
        ("DURATION", "0"),
    ];
    let (status, body) = form(&fake, "telephony.externalcall.finish", &fin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["result"]["CALL_FAILED_CODE"], "304",
        "default by DURATION"
    );
    assert_eq!(body["result"]["REST_APP_NAME"], false);
    let finished = fake.registered()[0].finished.clone().unwrap();
    assert_eq!(
        (finished.status_code, finished.add_to_chat),
        (None, None),
        "absent params stay visible as absent"
    );
    assert!(fake.registered()[0].missed, "304 on an incoming call");

    let (status, body) = form(&fake, "telephony.externalcall.finish", &fin).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "", "error_description": "Call is not found (call should be registered prior to finishing"})
    );
    let (_, body) = form(
        &fake,
        "telephony.externalcall.show",
        &[("CALL_ID", call_id.as_str())],
    )
    .await;
    assert_eq!(body["result"], false, "show on a finished call");
}

#[tokio::test]
async fn register_binds_a_known_contact_instead_of_creating_a_lead() {
    let fake = FakeB24::spawn().await;
    let contact = fake.add_contact("+7 900 555-00-11", 13);
    let reg = [
        ("USER_ID", "11"),
        ("PHONE_NUMBER", "89005550011"),
        ("TYPE", "2"),
        ("CRM_CREATE", "1"),
    ];
    let (_, body) = form(&fake, "telephony.externalcall.register", &reg).await;
    let r = &body["result"];
    assert_eq!(
        (r["CRM_ENTITY_TYPE"].as_str(), r["CRM_ENTITY_ID"].as_u64()),
        (Some("CONTACT"), Some(contact))
    );
    assert_eq!(
        (&r["CRM_CREATED_LEAD"], &r["CRM_CREATED_ENTITIES"]),
        (&Value::Null, &json!([]))
    );
    assert!(fake.leads().is_empty());
}

#[tokio::test]
async fn crm_create_makes_a_lead_for_the_user_but_never_for_an_extension() {
    let fake = FakeB24::spawn().await;
    let reg = [
        ("USER_ID", "12"),
        ("PHONE_NUMBER", "79007770000"),
        ("TYPE", "2"),
        ("CRM_CREATE", "1"),
        ("CRM_SOURCE", "CALLBACK"),
    ];
    let (_, body) = form(&fake, "telephony.externalcall.register", &reg).await;
    let lead = body["result"]["CRM_CREATED_LEAD"].as_u64().expect("a lead");
    assert_eq!(
        body["result"]["CRM_CREATED_ENTITIES"],
        json!([{"ENTITY_TYPE": "LEAD", "ENTITY_ID": lead}])
    );
    let leads = fake.leads();
    assert_eq!(
        (
            leads[0].id,
            leads[0].assigned_by_id,
            leads[0].source_id.as_str()
        ),
        (lead, 12, "CALLBACK")
    );

    let internal = [
        ("USER_ID", "11"),
        ("PHONE_NUMBER", "102"),
        ("TYPE", "1"),
        ("CRM_CREATE", "1"),
    ];
    let (_, body) = form(&fake, "telephony.externalcall.register", &internal).await;
    assert_eq!(
        body["result"]["CRM_ENTITY_TYPE"], "",
        "an employee extension creates nothing"
    );
    assert_eq!(fake.leads().len(), 1);

    let (_, body) = form(
        &fake,
        "telephony.externalcall.register",
        &[
            ("USER_ID", "99"),
            ("PHONE_NUMBER", "79007770000"),
            ("TYPE", "2"),
        ],
    )
    .await;
    assert_eq!(
        body,
        json!({"error": "", "error_description": "User is not found or is not active"})
    );
}

#[tokio::test]
async fn attach_record_needs_a_finished_call_and_a_wav_or_mp3_name() {
    let fake = FakeB24::spawn().await;
    let open = register(&fake, "12", "79001110000", &[]).await;
    let body = attach(
        &fake,
        &open,
        &[("FILENAME", "a.mp3"), ("FILE_CONTENT", "aGVsbG8=")],
    )
    .await;
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .starts_with("Call is not found in the statistic table"),
        "{body}"
    );
    let call_id = finished_call(&fake).await;
    let body = attach(
        &fake,
        &call_id,
        &[("FILENAME", "a.ogg"), ("FILE_CONTENT", "aGVsbG8=")],
    )
    .await;
    assert_eq!(
        body["error_description"],
        "Wrong file extension. Only wav and mp3 are allowed"
    );
    let body = attach(
        &fake,
        &call_id,
        &[("FILENAME", "a.mp3"), ("FILE_CONTENT", "%%%")],
    )
    .await;
    assert_eq!(
        body["error_description"],
        "File content is not properly encoded. Base64 encoding is expected."
    );
    assert_eq!(fake.chat_messages(), vec![(11, call_id)], "ADD_TO_CHAT=1");
}

#[tokio::test]
async fn attach_record_accepts_base64_content_or_an_upload_url() {
    let fake = FakeB24::spawn().await;
    let call_id = finished_call(&fake).await;
    let body = attach(
        &fake,
        &call_id,
        &[("FILENAME", "a.mp3"), ("FILE_CONTENT", "aGVsbG8=")],
    )
    .await;
    assert!(body["result"]["FILE_ID"].is_u64(), "{body}");
    assert_eq!(
        fake.registered()[0].record.as_ref().unwrap().bytes,
        b"hello"
    );

    let body = attach(&fake, &call_id, &[("FILENAME", "b.wav")]).await;
    let upload = body["result"]["uploadUrl"]
        .as_str()
        .expect("uploadUrl")
        .to_owned();
    assert_eq!(body["result"]["fieldName"], "file");
    let part = "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.wav\"\r\n\r\nRIFF\r\n--XyZ--\r\n";
    let req = client()
        .post(upload)
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body(part);
    assert_eq!(req.send().await.unwrap().status().as_u16(), 200);
    let call = &fake.registered()[0];
    let record = call.record.clone().unwrap();
    assert_eq!(
        (
            record.filename.as_str(),
            record.bytes.as_slice(),
            record.via.as_str()
        ),
        ("b.wav", &b"RIFF"[..], "upload")
    );
    assert_eq!(
        call.record_attachments, 2,
        "the upload replaced the first record"
    );
}

#[tokio::test]
async fn a_lost_answer_executes_the_request_and_only_an_open_call_is_deduplicated() {
    let fake = FakeB24::spawn().await;
    let pairs = [("USER_ID", "11"), ("PHONE_NUMBER", "79001112233"), ("TYPE", "2"), ("EXTERNAL_CALL_ID", "pbx-1")];
    let url = format!("{}telephony.externalcall.register", fake.webhook_url());
    fake.fail_next(1, crate::fake_b24::Fault::LoseAnswerReset);
    assert!(client().post(&url).form(&pairs).send().await.is_err(), "the answer is lost");
    fake.fail_next(1, crate::fake_b24::Fault::LoseAnswer502);
    let resp = client().post(&url).form(&pairs).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 502);
    // Both were executed: one open call, registered three times counting this answer.
    let (_, body) = form(&fake, "telephony.externalcall.register", &pairs).await;
    let call_id = body["result"]["CALL_ID"].as_str().unwrap().to_owned();
    assert_eq!(fake.registered().len(), 1);
    assert_eq!(fake.registered()[0].registrations, 3);
    // Once finished, the same register makes a second call: Bitrix24 de-duplicates open calls only.
    let fin = [("CALL_ID", call_id.as_str()), ("USER_ID", "11"), ("DURATION", "5"), ("STATUS_CODE", "200")];
    assert_eq!(form(&fake, "telephony.externalcall.finish", &fin).await.0, 200);
    let again = form(&fake, "telephony.externalcall.register", &pairs).await.1;
    assert_ne!(again["result"]["CALL_ID"].as_str(), Some(call_id.as_str()));
    assert_eq!(fake.registered().len(), 2);
    // A user deactivated mid-test is refused as Bitrix24 refuses it.
    fake.set_user_active(11, false);
    let (status, body) = form(&fake, "telephony.externalcall.register", &[("USER_ID", "11"), ("PHONE_NUMBER", "79001112234"), ("TYPE", "2")]).await;
    assert_eq!((status, body["error_description"].as_str()), (400, Some("User is not found or is not active")));
}
