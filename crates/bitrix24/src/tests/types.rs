//! Tolerant decoding, with result bodies as Bitrix24 sends them (PHP quirks included).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::types::{decode, AssignedBy, CreatedEntity};
use crate::{
    BatchResult, ContactOrLead, Error, FinishResult, Id, ListPage, RegisterResult, SearchEntity,
    User,
};

fn v(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[test]
fn id_accepts_int_and_numeric_string_only() {
    assert_eq!(decode::<Id>(json!(42)).unwrap(), Id(42));
    assert_eq!(decode::<Id>(json!("42")).unwrap(), Id(42));
    assert_eq!(decode::<Id>(json!(" 7 ")).unwrap(), Id(7));
    assert!(matches!(
        decode::<Id>(json!("abc")),
        Err(Error::Decode { .. })
    ));
    assert!(decode::<Id>(json!(-1)).is_err());
    assert!(decode::<Id>(json!(null)).is_err());
    assert_eq!(serde_json::to_string(&Id(5)).unwrap(), "5");
}

#[test]
fn register_with_bound_contact() {
    let r: RegisterResult = decode(v(r#"{"CALL_ID":"externalCall.716f1cb73def9700a23842adf9c4c568.1773130779",
        "CRM_CREATED_LEAD":null, "CRM_CREATED_ENTITIES":[], "CRM_ENTITY_TYPE":"CONTACT", "CRM_ENTITY_ID":797}"#))
    .unwrap();
    assert_eq!(
        r,
        RegisterResult {
            call_id: "externalCall.716f1cb73def9700a23842adf9c4c568.1773130779".into(),
            crm_created_lead: None,
            crm_entity_type: Some("CONTACT".into()),
            crm_entity_id: Some(797),
            crm_created_entities: vec![],
            lead_creation_error: None,
        }
    );
    assert_eq!(r.created_lead_id(), None);
}

#[test]
fn register_with_created_lead_and_unbound_and_lead_error() {
    let r: RegisterResult = decode(v(r#"{"CALL_ID":"externalCall.a.1","CRM_CREATED_LEAD":"123",
        "CRM_CREATED_ENTITIES":[{"ENTITY_TYPE":"LEAD","ENTITY_ID":123}],"CRM_ENTITY_TYPE":"LEAD","CRM_ENTITY_ID":"123"}"#))
    .unwrap();
    assert_eq!(r.crm_created_lead, Some(123));
    assert_eq!(
        r.crm_created_entities,
        vec![CreatedEntity {
            entity_type: "LEAD".into(),
            entity_id: 123
        }]
    );

    // Only CRM_CREATED_ENTITIES names the lead.
    let r: RegisterResult = decode(v(
        r#"{"CALL_ID":"c","CRM_CREATED_ENTITIES":[{"ENTITY_TYPE":"LEAD","ENTITY_ID":"9"}]}"#,
    ))
    .unwrap();
    assert_eq!(r.created_lead_id(), Some(9));

    // Pitfall 4: HTTP 200, nothing bound, the lead error inside.
    let r: RegisterResult = decode(v(r#"{"CALL_ID":"c","CRM_CREATED_LEAD":null,"CRM_CREATED_ENTITIES":[],
        "CRM_ENTITY_TYPE":"","CRM_ENTITY_ID":null,"LEAD_CREATION_ERROR":"Lead creation is disabled for local users"}"#))
    .unwrap();
    assert_eq!(r.crm_entity_type, None);
    assert_eq!(r.crm_entity_id, None);
    assert_eq!(
        r.lead_creation_error.as_deref(),
        Some("Lead creation is disabled for local users")
    );
}

#[test]
fn finish_ignores_empty_date_object_and_false_app_name() {
    let r: FinishResult = decode(v(r#"{"CALL_ID":"externalCall.716f","EXTERNAL_CALL_ID":null,"PORTAL_USER_ID":1269,
        "PHONE_NUMBER":"19062195047","PORTAL_NUMBER":"3","INCOMING":"2","CALL_DURATION":95,"CALL_START_DATE":{},
        "CALL_STATUS":1,"CALL_VOTE":5,"COST":0,"COST_CURRENCY":"","CALL_FAILED_CODE":"200","CALL_FAILED_REASON":"",
        "REST_APP_ID":"3","REST_APP_NAME":false,"CRM_ACTIVITY_ID":7943,"COMMENT":null,
        "CRM_ENTITY_TYPE":"CONTACT","CRM_ENTITY_ID":797,"ID":7}"#))
    .unwrap();
    assert_eq!(r.call_id, "externalCall.716f");
    assert_eq!(r.id, Some(7));
    assert_eq!(r.external_call_id, None);
    assert_eq!(r.portal_user_id, Some(1269));
    assert_eq!(r.call_duration, Some(95));
    assert_eq!(r.call_status, Some(1));
    assert_eq!(r.call_failed_code.as_deref(), Some("200"));
    assert_eq!(r.crm_activity_id, Some(7943));
    assert_eq!(r.crm_entity_id, Some(797));
    assert!(r.errors.is_empty());

    let r: FinishResult = decode(v(
        r#"{"CALL_ID":"c","ERRORS":{"ACTIVITY_CREATION":"Could not create activity"}}"#,
    ))
    .unwrap();
    assert_eq!(r.errors["ACTIVITY_CREATION"], "Could not create activity");
    let r: FinishResult = decode(v(r#"{"CALL_ID":"c","ERRORS":[]}"#)).unwrap();
    assert!(r.errors.is_empty());
}

#[test]
fn search_entities_with_mixed_types() {
    let page: ListPage<SearchEntity> = ListPage::decode(
        v(r#"[{"CRM_ENTITY_TYPE":"CONTACT","CRM_ENTITY_ID":651,"ASSIGNED_BY_ID":99,"NAME":"John Doe",
          "ASSIGNED_BY":{"ID":"99","TIMEMAN_STATUS":"CLOSED","USER_PHONE_INNER":"102","WORK_PHONE":null,
                         "PERSONAL_PHONE":null,"PERSONAL_MOBILE":"19062195047"}}]"#),
        None,
        None,
    )
    .unwrap();
    let e = &page.items[0];
    assert_eq!(e.crm_entity_type, "CONTACT");
    assert_eq!(e.crm_entity_id, 651);
    assert_eq!(e.assigned_by_id, Some(99));
    assert_eq!(e.name.as_deref(), Some("John Doe"));
    assert_eq!(
        e.assigned_by,
        Some(AssignedBy {
            id: Some(99),
            timeman_status: Some("CLOSED".into()),
            user_phone_inner: Some("102".into()),
            work_phone: None,
            personal_phone: None,
            personal_mobile: Some("19062195047".into()),
        })
    );
    assert_eq!(e.responsible(), Some(99));

    let empty: ListPage<SearchEntity> = ListPage::decode(v("[]"), None, None).unwrap();
    assert!(empty.items.is_empty());
    let no_user: SearchEntity = decode(v(
        r#"{"CRM_ENTITY_TYPE":"LEAD","CRM_ENTITY_ID":"5","ASSIGNED_BY":[]}"#,
    ))
    .unwrap();
    assert_eq!(no_user.assigned_by, None);
    assert_eq!(no_user.responsible(), None);
}

#[test]
fn users_with_boolean_or_yn_active() {
    let page: ListPage<User> = ListPage::decode(
        v(r#"[{"ID":"1","ACTIVE":true,"NAME":"Anna","LAST_NAME":"Petrova","UF_PHONE_INNER":"101","UF_DEPARTMENT":[1]},
             {"ID":"2","ACTIVE":false,"NAME":"Boris","LAST_NAME":""},
             {"ID":3,"ACTIVE":"Y","NAME":null,"UF_PHONE_INNER":""},
             {"ID":"4","ACTIVE":"N","UF_PHONE_INNER":102}]"#),
        Some(4),
        None,
    )
    .unwrap();
    let want = vec![
        User {
            id: 1,
            active: true,
            uf_phone_inner: Some("101".into()),
            name: "Anna Petrova".into(),
        },
        User {
            id: 2,
            active: false,
            uf_phone_inner: None,
            name: "Boris".into(),
        },
        User {
            id: 3,
            active: true,
            uf_phone_inner: None,
            name: String::new(),
        },
        User {
            id: 4,
            active: false,
            uf_phone_inner: Some("102".into()),
            name: String::new(),
        },
    ];
    assert_eq!(
        page,
        ListPage {
            items: want,
            total: Some(4),
            next: None
        }
    );
}

#[test]
fn contact_with_string_ids_and_phone_multifield() {
    let c: ContactOrLead = decode(v(
        r#"{"ID":"43","ASSIGNED_BY_ID":"6","COMPANY_ID":"12","LEAD_ID":null,"OPENED":"Y",
        "PHONE":[{"ID":"156","VALUE_TYPE":"WORK","VALUE":"+13333333555","TYPE_ID":"PHONE"},
                 {"ID":"157","VALUE_TYPE":"MOBILE","VALUE":"+79990001122","TYPE_ID":"PHONE"}],
        "UTM_SOURCE":null}"#,
    ))
    .unwrap();
    assert_eq!(
        c,
        ContactOrLead {
            id: 43,
            assigned_by_id: Some(6),
            phones: vec!["+13333333555".into(), "+79990001122".into()]
        }
    );
    let no_phone: ContactOrLead = decode(v(r#"{"ID":"44","ASSIGNED_BY_ID":"1"}"#)).unwrap();
    assert!(no_phone.phones.is_empty());
}

#[test]
fn list_page_keeps_total_and_next() {
    let page: ListPage<ContactOrLead> = ListPage::decode(
        v(r#"[{"ID":"1","ASSIGNED_BY_ID":"2"}]"#),
        Some(120),
        Some(50),
    )
    .unwrap();
    assert_eq!((page.total, page.next), (Some(120), Some(50)));
    assert!(matches!(
        ListPage::<User>::decode(json!("x"), None, None),
        Err(Error::Decode { .. })
    ));
}

#[test]
fn decode_errors_name_the_path() {
    let err = decode::<RegisterResult>(v(r#"{"CALL_ID":"c","CRM_ENTITY_ID":"abc"}"#)).unwrap_err();
    let Error::Decode { message } = err else {
        panic!("{err:?}")
    };
    assert!(message.contains("CRM_ENTITY_ID"), "{message}");
}

#[test]
fn batch_with_maps_errors_totals_and_empty_arrays() {
    let result = v(r#"{
        "result": {"reg": {"CALL_ID":"externalCall.x.1"}, "users": [{"ID":"1"}]},
        "result_error": {"fin": {"error":"","error_description":"Call is not found (call should be registered prior to finishing"},
                         "scope": {"error":"insufficient_scope","error_description":"The request requires higher privileges than provided by the access token"}},
        "result_total": {"users": 120},
        "result_next": {"users": "50"},
        "result_time": {"reg": {"start": 1.0}}
    }"#);
    let methods: BTreeMap<&str, &str> = [
        ("fin", "telephony.externalcall.finish"),
        ("scope", "user.get"),
    ]
    .into();
    let b = BatchResult::decode(&result, |k| {
        methods.get(k).copied().unwrap_or_default().to_owned()
    })
    .unwrap();
    assert_eq!(b.result["reg"]["CALL_ID"], "externalCall.x.1");
    assert!(matches!(b.result_error["fin"], Error::CallNotFound { .. }));
    assert!(
        matches!(&b.result_error["scope"], Error::Auth { code, .. } if code == "insufficient_scope")
    );
    assert_eq!(b.result_total["users"], 120);
    assert_eq!(b.result_next["users"], 50);
    assert!(b.get("reg").unwrap().is_ok());
    assert!(b.get("fin").unwrap().is_err());
    assert!(b.get("never_ran").is_none());
}

#[test]
fn batch_empty_parts_as_arrays_and_numeric_keys_as_lists() {
    let all_failed = v(
        r#"{"result":[],"result_error":{"a":{"error":"QUERY_LIMIT_EXCEEDED","error_description":"Too many requests"}},
        "result_total":[],"result_next":[],"result_time":[]}"#,
    );
    let b = BatchResult::decode(&all_failed, |_| String::new()).unwrap();
    assert!(b.result.is_empty());
    assert_eq!(b.result_error["a"], Error::RateLimited);

    let numeric = v(
        r#"{"result":[{"CALL_ID":"c0"},true],"result_error":[],"result_total":[],"result_next":[],"result_time":[]}"#,
    );
    let b = BatchResult::decode(&numeric, |_| String::new()).unwrap();
    assert_eq!(b.result["0"]["CALL_ID"], "c0");
    assert_eq!(b.result["1"], json!(true));
    assert!(b.result_error.is_empty());

    assert_eq!(
        BatchResult::decode(&json!([]), |_| String::new()).unwrap(),
        BatchResult::default()
    );
    assert!(BatchResult::decode(&json!({"result": 5}), |_| String::new()).is_err());
}
