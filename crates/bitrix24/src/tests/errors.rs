//! Classification of error envelopes, with the bodies and statuses Bitrix24 sends (current and
//! older documentation, and what portals were seen to answer).

use std::time::Duration;

use crate::Error;

fn classify(status: u16, body: &str) -> Error {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    let code = v["error"].as_str().unwrap();
    let description = v["error_description"].as_str().unwrap_or_default();
    Error::from_api_error(status, code, description, "telephony.externalcall.finish")
}

fn auth(code: &str, description: &str) -> Error {
    Error::Auth {
        code: code.to_owned(),
        description: description.to_owned(),
    }
}

#[test]
fn envelopes_map_to_variants() {
    let method = "telephony.externalcall.finish".to_owned();
    let call_not_found = "Call is not found (call should be registered prior to finishing";
    let empty_code = format!(r#"{{"error":"","error_description":"{call_not_found}"}}"#);
    let core_code = format!(r#"{{"error":"ERROR_CORE","error_description":"{call_not_found}"}}"#);
    let table: Vec<(u16, &str, Error)> = vec![
        (503, r#"{"error":"QUERY_LIMIT_EXCEEDED","error_description":"Too many requests"}"#, Error::RateLimited),
        (429, r#"{"error":"QUERY_LIMIT_EXCEEDED","error_description":"Too many requests"}"#, Error::RateLimited),
        (200, r#"{"error":"QUERY_LIMIT_EXCEEDED","error_description":"Too many requests"}"#, Error::RateLimited),
        (
            429,
            r#"{"error":"OPERATION_TIME_LIMIT","error_description":"Method is blocked due to operation time limit."}"#,
            Error::OperationLimit { method: method.clone() },
        ),
        (503, r#"{"error":"OVERLOAD_LIMIT","error_description":"REST API is blocked due to overload."}"#, Error::Overload),
        (401, r#"{"error":"expired_token","error_description":"The access token provided has expired."}"#, Error::ExpiredToken),
        (401, r#"{"error":"invalid_token","error_description":"Unable to get application by token"}"#, Error::InvalidToken),
        (
            401,
            r#"{"error":"INVALID_CREDENTIALS","error_description":"Invalid request credentials"}"#,
            auth("INVALID_CREDENTIALS", "Invalid request credentials"),
        ),
        (401, r#"{"error":"NO_AUTH_FOUND","error_description":"Wrong authorization data"}"#, auth("NO_AUTH_FOUND", "Wrong authorization data")),
        (
            403,
            r#"{"error":"insufficient_scope","error_description":"The request requires higher privileges than provided by the webhook token"}"#,
            auth("insufficient_scope", "The request requires higher privileges than provided by the webhook token"),
        ),
        (
            401,
            r#"{"error":"authorization_error","error_description":"Unable to authorize user"}"#,
            auth("authorization_error", "Unable to authorize user"),
        ),
        (
            403,
            r#"{"error":"ACCESS_DENIED","error_description":"REST is available only on commercial plans."}"#,
            auth("ACCESS_DENIED", "REST is available only on commercial plans."),
        ),
        (401, r#"{"error":"PAYMENT_REQUIRED","error_description":"Payment required"}"#, auth("PAYMENT_REQUIRED", "Payment required")),
        (
            403,
            r#"{"error":"WRONG_AUTH_TYPE","error_description":"Current authorization type is denied for this method"}"#,
            auth("WRONG_AUTH_TYPE", "Current authorization type is denied for this method"),
        ),
        (
            401,
            r#"{"error":"METHOD_CONFIRM_WAITING","error_description":"Waiting for confirmation"}"#,
            auth("METHOD_CONFIRM_WAITING", "Waiting for confirmation"),
        ),
        (404, r#"{"error":"ERROR_METHOD_NOT_FOUND","error_description":"Method not found!"}"#, Error::MethodNotFound { method: method.clone() }),
        (400, &empty_code, Error::CallNotFound { description: call_not_found.to_owned() }),
        (
            400,
            &core_code,
            Error::CallNotFound { description: call_not_found.to_owned() },
        ),
        (
            400,
            r#"{"error":"","error_description":"Call is not found in the statistic table. It looks like it is not finished yet."}"#,
            Error::CallNotFound {
                description: "Call is not found in the statistic table. It looks like it is not finished yet.".to_owned(),
            },
        ),
        (400, r#"{"error":"","error_description":"User is not found or is not active"}"#, Error::UserNotFound),
        (400, r#"{"error":"ERROR_CORE","error_description":"User is not found or is not active"}"#, Error::UserNotFound),
        (
            400,
            r#"{"error":"","error_description":"Not found"}"#,
            Error::Api { code: String::new(), description: "Not found".to_owned(), status: 400 },
        ),
        (
            400,
            r#"{"error":"","error_description":"Unknown TYPE"}"#,
            Error::Api { code: String::new(), description: "Unknown TYPE".to_owned(), status: 400 },
        ),
        (
            400,
            r#"{"error":"INVALID_REQUEST","error_description":"Https required."}"#,
            Error::Api { code: "INVALID_REQUEST".to_owned(), description: "Https required.".to_owned(), status: 400 },
        ),
        (
            500,
            r#"{"error":"INTERNAL_SERVER_ERROR","error_description":"Internal server error"}"#,
            Error::Server { status: 500, code: "INTERNAL_SERVER_ERROR".to_owned() },
        ),
        (
            500,
            r#"{"error":"ERROR_UNEXPECTED_ANSWER","error_description":"Server returned an unexpected response"}"#,
            Error::Server { status: 500, code: "ERROR_UNEXPECTED_ANSWER".to_owned() },
        ),
        // Unknown codes fall back to the status.
        (502, r#"{"error":"SOMETHING_NEW","error_description":"x"}"#, Error::Server { status: 502, code: "SOMETHING_NEW".to_owned() }),
        (401, r#"{"error":"SOMETHING_NEW","error_description":"x"}"#, auth("SOMETHING_NEW", "x")),
        (
            400,
            r#"{"error":"ERROR_BATCH_LENGTH_EXCEEDED","error_description":"Max batch length exceeded"}"#,
            Error::Api {
                code: "ERROR_BATCH_LENGTH_EXCEEDED".to_owned(),
                description: "Max batch length exceeded".to_owned(),
                status: 400,
            },
        ),
    ];
    for (status, body, want) in table {
        assert_eq!(classify(status, body), want, "HTTP {status} {body}");
    }
}

#[test]
fn retry_refresh_and_hints() {
    let net = Error::Network {
        message: "timed out".into(),
    };
    let html502 = Error::Http {
        status: 502,
        body_snippet: "<html>".into(),
    };
    let html404 = Error::Http {
        status: 404,
        body_snippet: "<html>".into(),
    };
    let table: Vec<(Error, bool, bool, Option<Duration>)> = vec![
        (net, true, false, Some(Duration::from_secs(1))),
        (html502, true, false, Some(Duration::from_secs(1))),
        (
            Error::Http {
                status: 504,
                body_snippet: String::new(),
            },
            true,
            false,
            Some(Duration::from_secs(1)),
        ),
        (html404, false, false, None),
        (
            Error::RateLimited,
            true,
            false,
            Some(Duration::from_secs(1)),
        ),
        (
            Error::OperationLimit { method: "m".into() },
            true,
            false,
            Some(Duration::from_secs(60)),
        ),
        (Error::Overload, true, false, Some(Duration::from_secs(60))),
        (
            Error::Server {
                status: 500,
                code: "INTERNAL_SERVER_ERROR".into(),
            },
            true,
            false,
            Some(Duration::from_secs(1)),
        ),
        (Error::ExpiredToken, false, true, None),
        (Error::InvalidToken, false, true, None),
        (auth("invalid_grant", ""), false, false, None),
        (
            Error::CallNotFound {
                description: String::new(),
            },
            false,
            false,
            None,
        ),
        (Error::UserNotFound, false, false, None),
        (
            Error::Moved {
                location: "https://new.bitrix24.ru/rest/1/x/".into(),
            },
            false,
            false,
            None,
        ),
        (
            Error::Decode {
                message: String::new(),
            },
            false,
            false,
            None,
        ),
    ];
    for (err, retry, refresh, hint) in table {
        assert_eq!(err.retryable(), retry, "{err:?}");
        assert_eq!(err.needs_token_refresh(), refresh, "{err:?}");
        assert_eq!(err.retry_after_hint(), hint, "{err:?}");
    }
}

#[test]
fn moved_prints_only_the_origin() {
    let e = Error::Moved {
        location: "https://new.bitrix24.ru/rest/1/s3cr3tcode/profile.json".into(),
    };
    let shown = e.to_string();
    assert!(shown.contains("https://new.bitrix24.ru"), "{shown}");
    assert!(!shown.contains("s3cr3tcode"), "{shown}");
}

#[test]
fn codes_compare_case_insensitively() {
    assert_eq!(
        Error::from_api_error(401, "EXPIRED_TOKEN", "", "m"),
        Error::ExpiredToken
    );
    assert_eq!(
        Error::from_api_error(503, "query_limit_exceeded", "", "m"),
        Error::RateLimited
    );
}
