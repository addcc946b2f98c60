//! Fuzz entries for the HTTP side (`crate::fuzzing`, issue 8): the admin API's JSON bodies go
//! through the same deserialiser ([`super::json`]) and validation as the handlers, and every
//! error is rendered as the response the client would get. Nothing here may panic.

use axum::response::IntoResponse;

use super::json::parse;
use crate::settings::{
    check_line, check_mapping, check_settings, portal_from_input, Line, MappingInput, PortalInput,
    PortalSettings,
};

/// The Bitrix24 event endpoint's form parser.
#[doc(hidden)]
pub fn fuzz_event_form(body: &[u8]) {
    super::events::fuzz_form(body);
}

/// The admin API's JSON bodies: settings, portal, mapping, line.
#[doc(hidden)]
pub fn fuzz_admin_json(body: &[u8]) {
    match parse::<PortalSettings>(body) {
        Ok(s) => {
            if let Err(e) = check_settings(&s) {
                drop(super::ApiError::Validation(e).into_response());
            }
            let _ = serde_json::to_vec(&s).expect("settings serialise");
        }
        Err(e) => drop(e.into_response()),
    }
    match parse::<PortalInput>(body) {
        Ok(input) => drop(portal_from_input(&input, None)),
        Err(e) => drop(e.into_response()),
    }
    match parse::<MappingInput>(body) {
        Ok(m) => drop(check_mapping(&m)),
        Err(e) => drop(e.into_response()),
    }
    match parse::<Line>(body) {
        Ok(l) => drop(check_line(&l)),
        Err(e) => drop(e.into_response()),
    }
}
