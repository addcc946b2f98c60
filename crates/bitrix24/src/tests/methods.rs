//! Typed methods: the parameters each one sends (as the `batch` query string, which shows names,
//! nesting and order), and decoding through `invoke` and `BatchResult::take`.

use serde_json::json;

use super::stub::{Canned, Stub};
use crate::crm::{is_not_found, EntityKind, Get, LeadUpdate, List};
use crate::event::{Bind, OfflineClear, OfflineGet};
use crate::telephony::{
    AttachRecord, CallId, CallType, CallUser, Finish, Hide, RecordSource, Register,
    SearchCrmEntities, Show,
};
use crate::user::UserGet;
use crate::{BatchCommand, Client, Endpoint, Error, Method, Params, Secret};

fn query<M: Method>(m: &M) -> String {
    BatchCommand::of("k", m).cmd_string()
}

#[test]
fn telephony_methods_send_uppercase_keys_and_explicit_flags() {
    let mut reg = Register::new(CallUser::Id(5), "+74951234567", CallType::Incoming);
    reg.show = Some(false);
    reg.external_call_id = Some("pbx-1".into());
    reg.call_start_date = Some("2026-03-07T10:20:30+00:00".into());
    reg.line_number = Some("74950000000".into());
    assert_eq!(
        query(&reg),
        "telephony.externalcall.register?USER_ID=5&PHONE_NUMBER=%2B74951234567&TYPE=2&CRM_CREATE=0&SHOW=0\
         &EXTERNAL_CALL_ID=pbx-1&CALL_START_DATE=2026-03-07T10%3A20%3A30%2B00%3A00&LINE_NUMBER=74950000000"
    );
    let by_ext = Register::new(
        CallUser::Extension("101".into()),
        "8916",
        CallType::Outgoing,
    );
    assert_eq!(query(&by_ext), "telephony.externalcall.register?USER_PHONE_INNER=101&PHONE_NUMBER=8916&TYPE=1&CRM_CREATE=0");

    let mut fin = Finish::new(CallId::Ref("reg".into()), CallUser::Id(5), 0);
    fin.status_code = Some("304".into());
    assert_eq!(
        query(&fin),
        "telephony.externalcall.finish?CALL_ID=$result[reg][CALL_ID]&USER_ID=5&DURATION=0&STATUS_CODE=304&ADD_TO_CHAT=0",
        "ADD_TO_CHAT is always sent (its default changed over time)"
    );
    let show = Show {
        call_id: "externalCall.x".into(),
        users: vec![11, 12],
    };
    assert_eq!(
        query(&show),
        "telephony.externalcall.show?CALL_ID=externalCall.x&USER_ID[0]=11&USER_ID[1]=12"
    );
    let hide = Hide {
        call_id: "externalCall.x".into(),
        users: vec![],
    };
    assert_eq!(
        query(&hide),
        "telephony.externalcall.hide?CALL_ID=externalCall.x"
    );
    let rec = AttachRecord {
        call_id: "c".into(),
        filename: "call.mp3".into(),
        source: RecordSource::Upload,
    };
    assert_eq!(
        query(&rec),
        "telephony.externalcall.attachrecord?CALL_ID=c&FILENAME=call.mp3"
    );
    let search = SearchCrmEntities {
        phone_number: "+79161234567".into(),
    };
    assert_eq!(
        query(&search),
        "telephony.externalcall.searchcrmentities?PHONE_NUMBER=%2B79161234567"
    );
    assert_eq!(CallType::from_code(3), Some(CallType::IncomingRedirected));
    assert_eq!(CallType::from_code(9), None);
}

#[test]
fn crm_user_and_event_methods() {
    assert_eq!(
        query(&Get {
            kind: EntityKind::Company,
            id: 7
        }),
        "crm.company.get?id=7"
    );
    let list = List::by_id(EntityKind::Lead, ["ID", "PHONE"]);
    assert_eq!(
        query(&list),
        "crm.lead.list?select[0]=ID&select[1]=PHONE&order[ID]=ASC&start=0"
    );
    let utm = LeadUpdate {
        id: 9,
        fields: Params::new().set("UTM_SOURCE", "google"),
    };
    assert_eq!(
        query(&utm),
        "crm.lead.update?id=9&fields[UTM_SOURCE]=google"
    );
    assert_eq!(
        query(&UserGet::active()),
        "user.get?FILTER[ACTIVE]=true&sort=ID&order=ASC&start=0"
    );
    assert_eq!(
        query(&Bind::online("ONCRMLEADADD", "https://gw/events")),
        "event.bind?event=ONCRMLEADADD&handler=https%3A%2F%2Fgw%2Fevents"
    );
    assert_eq!(
        query(&Bind::offline("ONCRMLEADADD")),
        "event.bind?event=ONCRMLEADADD&event_type=offline"
    );
    let get = OfflineGet {
        clear: false,
        limit: 50,
        process_id: Some("p1".into()),
    };
    assert_eq!(
        query(&get),
        "event.offline.get?clear=0&limit=50&process_id=p1"
    );
    assert_eq!(
        query(&OfflineClear {
            process_id: "p1".into()
        }),
        "event.offline.clear?process_id=p1"
    );
    assert_eq!(EntityKind::parse(" contact"), Some(EntityKind::Contact));
    assert_eq!(EntityKind::parse("DEAL"), None);
    assert!(is_not_found(&Error::from_api_error(
        400,
        "",
        "Not found",
        "crm.lead.get"
    )));
    assert!(!is_not_found(&Error::from_api_error(
        400,
        "",
        "Access denied.",
        "crm.lead.get"
    )));
}

#[tokio::test]
async fn invoke_decodes_each_methods_result() {
    let stub = Stub::start(vec![
        Canned::json(200, r#"{"result":false}"#),
        Canned::json(
            200,
            r#"{"result":{"uploadUrl":"https://p/rest/upload.json?token=x","fieldName":"file"}}"#,
        ),
        Canned::json(
            200,
            r#"{"result":[{"ID":"3","NAME":"A"}],"total":51,"next":50}"#,
        ),
        Canned::json(200, r#"{"result":[]}"#),
    ])
    .await;
    let ep = Endpoint::webhook(&Secret::new(stub.url("/rest/1/c0de/"))).unwrap();
    let c = Client::new().unwrap();
    let shown = c
        .invoke(
            &ep,
            &Show {
                call_id: "gone".into(),
                users: vec![1],
            },
        )
        .await
        .unwrap();
    assert!(!shown, "false: the call is not active");
    let rec = AttachRecord {
        call_id: "c".into(),
        filename: "a.mp3".into(),
        source: RecordSource::Upload,
    };
    let up = c.invoke(&ep, &rec).await.unwrap();
    assert_eq!((up.file_id, up.field_name.as_deref()), (None, Some("file")));
    let page = c.invoke(&ep, &UserGet::active()).await.unwrap();
    assert_eq!(
        (page.items.len(), page.total, page.next),
        (1, Some(51), Some(50))
    );
    let none = c
        .invoke(
            &ep,
            &SearchCrmEntities {
                phone_number: "+7".into(),
            },
        )
        .await
        .unwrap();
    assert!(none.is_empty(), "PHP's [] is no entities");
    assert_eq!(
        stub.seen()[1].path,
        "/rest/1/c0de/telephony.externalcall.attachrecord.json"
    );
}

#[tokio::test]
async fn batch_results_are_taken_as_typed_outputs() {
    let answer = json!({"result": {
        "result": {"reg": {"CALL_ID": "externalCall.abc.1", "CRM_ENTITY_TYPE": "", "CRM_ENTITY_ID": null}, "users": [{"ID": "1"}]},
        "result_error": {"show": {"error": "", "error_description": "Call is not found (call should be registered prior to finishing"}},
        "result_total": {"users": 60}, "result_next": {"users": 50}, "result_time": []
    }});
    let stub = Stub::start(vec![Canned::json(200, &answer.to_string())]).await;
    let ep = Endpoint::webhook(&Secret::new(stub.url("/rest/1/c0de/"))).unwrap();
    let reg = Register::new(CallUser::Id(5), "+7", CallType::Incoming);
    let show = Show {
        call_id: CallId::Ref("reg".into()),
        users: vec![5],
    };
    let cmds = [
        BatchCommand::of("reg", &reg),
        BatchCommand::of("show", &show),
        BatchCommand::of("users", &UserGet::active()),
    ];
    let mut got = Client::new()
        .unwrap()
        .batch(&ep, &cmds, false)
        .await
        .unwrap();
    let registered = got.take::<Register>("reg").unwrap().unwrap();
    assert_eq!(
        (registered.call_id.as_str(), registered.crm_entity_type),
        ("externalCall.abc.1", None)
    );
    assert!(matches!(
        got.take::<Show>("show"),
        Some(Err(Error::CallNotFound { .. }))
    ));
    let users = got.take::<UserGet>("users").unwrap().unwrap();
    assert_eq!(
        (users.items.len(), users.total, users.next),
        (1, Some(60), Some(50))
    );
    assert!(got.take::<Register>("reg").is_none(), "taken once");
    assert_eq!(
        stub.seen()[0].json()["cmd"]["show"],
        "telephony.externalcall.show?CALL_ID=$result[reg][CALL_ID]&USER_ID[0]=5"
    );
}
