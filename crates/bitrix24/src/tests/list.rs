//! `list::Pager` against the stub: the first pages of every list in one batch, the rest by
//! `total`, rows in page order, requests counted; a failed page command fails the read.

use serde_json::{json, Value};

use super::stub::{Canned, Stub};
use crate::crm::{EntityKind, List};
use crate::list::{ListJob, Pager};
use crate::user::UserGet;
use crate::{Client, Endpoint, Error, Secret};

fn rows(from: u64, n: u64) -> Value {
    Value::Array(
        (from..from + n)
            .map(|i| json!({"ID": i.to_string()}))
            .collect(),
    )
}

#[tokio::test]
async fn every_page_of_every_list_is_read_in_few_batches() {
    let first = json!({"result": {"result": {"contact_0": rows(0, 50), "users_0": rows(0, 3)},
        "result_total": {"contact_0": 120, "users_0": 3}, "result_next": {"contact_0": 50}}});
    let rest = json!({"result": {"result": {"contact_50": rows(50, 50), "contact_100": rows(100, 20)},
        "result_total": {"contact_50": 120, "contact_100": 120}}});
    let stub = Stub::start(vec![
        Canned::json(200, &first.to_string()),
        Canned::json(200, &rest.to_string()),
    ])
    .await;
    let client = Client::new().unwrap();
    let ep = Endpoint::webhook(&Secret::new(stub.url("/rest/1/c0de/"))).unwrap();
    let mut pager = Pager::new(&client, &ep, 100.0, 10);
    let jobs = [
        ListJob::of("contact", &List::by_id(EntityKind::Contact, ["ID"])),
        ListJob::of("users", &UserGet::active()),
    ];
    let lists = pager.read_all(&jobs).await.unwrap();

    let ids: Vec<u64> = lists[0]
        .iter()
        .map(|r| r["ID"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(
        ids,
        (0..120).collect::<Vec<_>>(),
        "every row once, in page order"
    );
    assert_eq!(lists[1].len(), 3);
    assert_eq!(pager.requests(), 2);
    let seen = stub.seen();
    let keys = |i: usize| {
        seen[i].json()["cmd"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(0), ["contact_0", "users_0"]);
    assert_eq!(keys(1), ["contact_100", "contact_50"]);
    assert!(seen[1].json()["cmd"]["contact_100"]
        .as_str()
        .unwrap()
        .ends_with("&start=100"));
}

#[tokio::test]
async fn a_failed_page_fails_the_read() {
    let answer = json!({"result": {"result": [], "result_error": {"contact_0": {"error": "insufficient_scope", "error_description": "no crm"}}}});
    let stub = Stub::start(vec![Canned::json(200, &answer.to_string())]).await;
    let client = Client::new().unwrap();
    let ep = Endpoint::webhook(&Secret::new(stub.url("/rest/1/c0de/"))).unwrap();
    let err = Pager::new(&client, &ep, 100.0, 10)
        .read_all(&[ListJob::of(
            "contact",
            &List::by_id(EntityKind::Contact, ["ID"]),
        )])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Auth { .. }), "{err:?}");
}
