//! The generated document against the router it describes and the validators it promises.
//!
//! axum has no public way to list a `Router`'s routes; its `Debug` output names every path of
//! the router (`RouteId(3): "/api/v1/openapi.json"`). The walk below reads those paths and then
//! asks the router itself, with the admin token, which methods each one answers (anything but
//! 405 is served; without the token the protected routes answer 401 to every method). Should an
//! axum upgrade change that output, the walk finds no routes and the test fails; it never passes
//! blindly.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::is_page;
use crate::http::{router, AppState, HttpLimits};
use crate::settings::{check_mapping, check_settings, portal_from_input, MappingInput, PortalInput, PortalSettings};

/// Methods a route may answer (HEAD comes with GET).
const METHODS: [Method; 6] = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS];

/// POSTs that are actions on the resource their path names: they take no body.
const BODILESS: [(&str, &str); 4] = [
    ("post", "/api/v1/portals/{id}/index/sync"),
    ("post", "/api/v1/portals/{id}/mappings/import"),
    ("post", "/api/v1/portals/{id}/install/rearm"),
    ("post", "/api/v1/portals/{id}/agents/{extension}/credentials"),
];

/// The admin token of [`built`].
const TOKEN: &str = "token";

/// The real router over a throw-away (and empty) store.
fn built() -> (Router, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = crate::store::SqliteStore::open(&dir.path().join("t.db")).expect("store");
    let state = AppState {
        store: crate::store::StoreHandle::new(Arc::new(store)),
        token: Arc::new(crate::config::Secret::new(TOKEN)),
        addresses: Arc::default(),
        metrics: crate::telemetry::metrics(),
        directory: crate::directory::Directory::default(),
        decisions: Arc::new(crate::routing::DecisionLog::new(10)),
        calls: crate::calls::CallsHandle::new(crate::calls::TrackerConfig::default(), std::time::Instant::now(), 0),
        shutdown: tokio_util::sync::CancellationToken::new(),
        media: crate::webrtc::BridgeSlot::default(),
        delivery_horizon: Duration::from_secs(60),
    };
    let limits = HttpLimits { body_limit: 1 << 20, timeout: Duration::from_secs(5), per_source: crate::limit::Rate::unlimited(), allowed_origins: Vec::new() };
    (router(state, limits), dir)
}

async fn status_of(router: &Router, method: Method, uri: &str, token: bool) -> StatusCode {
    let mut req = Request::builder().method(method).uri(uri);
    if token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    }
    let req = req.body(Body::empty()).expect("request");
    router.clone().oneshot(req).await.expect("infallible").status()
}

/// The document as the router serves it.
async fn served(router: &Router) -> Value {
    let req = Request::get("/api/v1/openapi.json").body(Body::empty()).expect("request");
    let resp = router.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
    let body = axum::body::to_bytes(resp.into_body(), 1 << 24).await.expect("body");
    serde_json::from_slice(&body).expect("JSON")
}

/// Every path the router matches (not its fallback's), from its `Debug` output.
fn router_paths(router: &Router) -> BTreeSet<String> {
    let text = format!("{router:?}");
    let own = text.split("fallback_router").next().unwrap_or_default();
    own.split("RouteId(")
        .filter_map(|piece| {
            let rest = piece.trim_start_matches(|c: char| c.is_ascii_digit()).strip_prefix("): \"")?;
            Some(rest[..rest.find('"')?].to_owned())
        })
        .filter(|p| p.starts_with('/') && !p.contains("__private__axum"))
        .collect()
}

/// `/api/v1/portals/{id}` -> `/api/v1/portals/1`.
fn concrete(path: &str) -> String {
    path.split('/').map(|seg| if seg.starts_with('{') { "1" } else { seg }).collect::<Vec<_>>().join("/")
}

/// (method, path) of every route the router serves but the pages.
async fn served_operations(router: &Router) -> BTreeSet<(String, String)> {
    let paths = router_paths(router);
    assert!(paths.contains("/api/v1/portals") && paths.contains("/live") && paths.len() > 30, "the router's paths could not be read: {paths:?}");
    let mut ops = BTreeSet::new();
    for path in paths.iter().filter(|p| !is_page(p)) {
        for method in METHODS {
            if status_of(router, method.clone(), &concrete(path), true).await != StatusCode::METHOD_NOT_ALLOWED {
                ops.insert((method.as_str().to_ascii_lowercase(), path.clone()));
            }
        }
    }
    ops
}

fn documented_operations(doc: &Value) -> BTreeMap<(String, String), &Value> {
    let mut ops = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if method != "parameters" {
                ops.insert((method.clone(), path.clone()), op);
            }
        }
    }
    ops
}

fn has_schema(content: &Value) -> bool {
    content.as_object().is_some_and(|types| !types.is_empty() && types.values().all(|t| t["schema"].is_object()))
}

#[tokio::test]
async fn every_route_the_router_serves_is_documented_and_nothing_else() {
    let (router, _dir) = built();
    let doc = served(&router).await;
    let served = served_operations(&router).await;
    let documented: BTreeSet<_> = documented_operations(&doc).into_keys().collect();
    assert_eq!(served.difference(&documented).collect::<Vec<_>>(), Vec::<&(String, String)>::new(), "served but not documented");
    assert_eq!(documented.difference(&served).collect::<Vec<_>>(), Vec::<&(String, String)>::new(), "documented but not served");
    assert!(documented.iter().all(|(_, path)| !is_page(path)));
}

#[tokio::test]
async fn every_operation_has_its_request_and_answer_shapes() {
    let (router, _dir) = built();
    let doc = served(&router).await;
    assert_eq!(doc["openapi"], "3.1.0");
    for ((method, path), op) in documented_operations(&doc) {
        let answers = op["responses"].as_object().unwrap_or_else(|| panic!("{method} {path}: no responses"));
        assert!(answers.keys().any(|s| s.starts_with('2') || s == "101"), "{method} {path}: no success answer");
        for (status, answer) in answers {
            if status == "101" || status == "204" {
                assert!(answer.get("content").is_none(), "{method} {path} {status} has no body");
            } else {
                assert!(has_schema(&answer["content"]), "{method} {path} {status}: no answer schema");
            }
        }
        let bodiless = BODILESS.contains(&(method.as_str(), path.as_str()));
        if ["post", "put", "patch"].contains(&method.as_str()) && !bodiless {
            assert!(has_schema(&op["requestBody"]["content"]), "{method} {path}: no request schema");
            assert_eq!(op["requestBody"]["required"], true, "{method} {path}");
        } else {
            assert!(op.get("requestBody").is_none(), "{method} {path} takes no body");
        }
        for name in path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')) {
            let declared = op["parameters"].as_array().into_iter().flatten().any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true);
            assert!(declared, "{method} {path}: path parameter {name} undeclared");
        }
    }
}

#[tokio::test]
async fn the_documented_authentication_is_what_the_router_asks_for() {
    let (router, _dir) = built();
    let doc = served(&router).await;
    assert_eq!(doc["security"], json!([{ "bearer": [] }]));
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let mut public = BTreeSet::new();
    for ((method, path), op) in documented_operations(&doc) {
        let without_token = status_of(&router, method.parse().expect("method"), &concrete(&path), false).await;
        match op.get("security") {
            None => {
                assert_eq!(without_token, StatusCode::UNAUTHORIZED, "{method} {path} is documented as needing the token");
                assert!(op["responses"]["401"].is_object(), "{method} {path}: 401 undocumented");
            }
            Some(_) => {
                assert_ne!(without_token, StatusCode::UNAUTHORIZED, "{method} {path} is documented as public");
                public.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    let expected = ["GET /api/v1/openapi.json", "GET /api/v1/route", "GET /live", "GET /metrics", "GET /ready", "GET /sip", "POST /api/v1/bitrix24/events"];
    assert_eq!(public, expected.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>());
}

/// Every `$ref` anywhere in `v`.
fn refs(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.insert(r.clone());
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_reference_resolves() {
    let (router, _dir) = built();
    let doc = served(&router).await;
    let mut found = BTreeSet::new();
    refs(&doc, &mut found);
    assert!(found.contains("#/components/schemas/PortalSettings") && found.contains("#/components/schemas/ErrorBody"));
    for r in found {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{r}: not a schema reference"));
        assert!(doc["components"]["schemas"][name].is_object(), "{r} dangles");
    }
}

/// The document's schema of `name`.
fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let s = &doc["components"]["schemas"][name];
    assert!(s.is_object(), "no schema {name}");
    s
}

fn limit(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

fn settings_with(change: Value) -> PortalSettings {
    let mut json = serde_json::to_value(PortalSettings::default()).expect("settings serialise");
    json.as_object_mut().expect("object").extend(change.as_object().expect("object").clone());
    serde_json::from_value(json).expect("settings parse")
}

fn refused_field(result: Result<(), crate::settings::FieldErrors>) -> Vec<String> {
    result.err().map(|e| e.0.into_iter().map(|f| f.field).collect()).unwrap_or_default()
}

#[tokio::test]
async fn settings_defaults_are_the_models_defaults() {
    let (router, _dir) = built();
    let doc = served(&router).await;
    let defaults = serde_json::to_value(PortalSettings::default()).expect("settings serialise");
    let props = schema(&doc, "PortalSettings")["properties"].as_object().expect("properties");
    assert_eq!(props.keys().collect::<BTreeSet<_>>(), defaults.as_object().expect("object").keys().collect::<BTreeSet<_>>());
    for (name, prop) in props {
        assert_eq!(prop["default"], defaults[name], "default of {name}");
    }
    assert_eq!(props["sip_domains"]["default"], json!([]), "nothing is a SIP domain until the operator says so");
    assert_eq!(props["trusted_pbx"]["default"], json!([]), "nothing is trusted by default");
    assert_eq!(schema(&doc, "PortalSettings")["additionalProperties"], false, "unknown fields are refused");
    assert!(props["pbx_host"]["description"].as_str().is_some_and(|d| d.contains(";transport=")));
}

#[tokio::test]
async fn settings_limits_are_the_validators_limits() {
    let (router, _dir) = built();
    let doc = served(&router).await;
    let props = &schema(&doc, "PortalSettings")["properties"];
    for field in ["min_talk_seconds", "internal_max_digits"] {
        let max = limit(&props[field], "maximum");
        assert!(check_settings(&settings_with(json!({ field: max }))).is_ok(), "{field} = {max}");
        assert_eq!(refused_field(check_settings(&settings_with(json!({ field: max + 1 })))), [field]);
    }
    let max = usize::try_from(limit(&props["sip_domains"], "maxItems")).expect("small");
    let domains = |n: usize| (0..n).map(|i| format!("pbx{i}.example.com")).collect::<Vec<_>>();
    assert!(check_settings(&settings_with(json!({ "sip_domains": domains(max) }))).is_ok());
    assert_eq!(refused_field(check_settings(&settings_with(json!({ "sip_domains": domains(max + 1) })))), ["sip_domains"]);
    for example in props["pbx_host"]["examples"].as_array().expect("pbx_host examples") {
        assert!(check_settings(&settings_with(json!({ "pbx_host": example }))).is_ok(), "example {example}");
    }
    for block in ["IncomingSettings", "OutgoingSettings"] {
        let min = limit(&schema(&doc, block)["properties"]["default_responsible"], "minimum");
        let value = json!({ block.trim_end_matches("Settings").to_lowercase(): { "default_responsible": min - 1 } });
        assert_eq!(refused_field(check_settings(&settings_with(value))).len(), 1, "{block}: {min} is the least user id");
    }
}

#[tokio::test]
async fn mapping_and_portal_limits_are_the_validators_limits() {
    let (router, _dir) = built();
    let doc = served(&router).await;
    let mapping = &schema(&doc, "MappingInput")["properties"];
    let input = |user_id: u64, extension: String| MappingInput { user_id, extension, use_for_personal_manager: true, contact: None };
    let longest = usize::try_from(limit(&mapping["extension"], "maxLength")).expect("small");
    assert!(check_mapping(&input(1, "1".repeat(longest))).is_ok());
    assert!(check_mapping(&input(1, "1".repeat(longest + 1))).is_err());
    assert!(check_mapping(&input(limit(&mapping["user_id"], "minimum") - 1, "101".into())).is_err());
    assert_eq!(mapping["use_for_personal_manager"]["default"], true);
    let longest = usize::try_from(limit(&schema(&doc, "PortalInput")["properties"]["name"], "maxLength")).expect("small");
    let portal = |name: String| PortalInput { name: Some(name), domain: "a.bitrix24.ru".into(), auth: None };
    assert!(portal_from_input(&portal("n".repeat(longest)), None).is_ok());
    assert!(portal_from_input(&portal("n".repeat(longest + 1)), None).is_err());
}

#[tokio::test]
async fn a_422_is_the_documented_error_body_naming_each_field() {
    let (router, _dir) = built();
    let doc = served(&router).await;
    let answer = crate::http::ApiError::Validation(check_settings(&settings_with(json!({ "min_talk_seconds": 99_999, "trusted_pbx": ["nope"] }))).unwrap_err());
    let resp = axum::response::IntoResponse::into_response(answer);
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = serde_json::from_slice(&axum::body::to_bytes(resp.into_body(), 1 << 16).await.expect("body")).expect("JSON");
    let error = schema(&doc, "ErrorBody");
    for required in error["required"].as_array().expect("required") {
        assert!(body[required.as_str().expect("name")].is_string() || body[required.as_str().expect("name")].is_array(), "{required} missing in {body}");
    }
    let codes = &schema(&doc, "ErrorCode")["enum"];
    assert!(codes.as_array().expect("codes").contains(&body["error"]), "{} not in {codes}", body["error"]);
    let fields: Vec<&str> = body["fields"].as_array().expect("fields").iter().map(|f| f["field"].as_str().expect("field")).collect();
    assert_eq!(fields, ["min_talk_seconds", "trusted_pbx[0]"]);
    let item = schema(&doc, "FieldError");
    assert_eq!(item["required"], json!(["field", "message"]));
    let op = &doc["paths"]["/api/v1/portals/{id}/settings"]["put"]["responses"]["422"]["content"]["application/json"]["schema"];
    assert_eq!(op["$ref"], "#/components/schemas/ErrorBody");
}
