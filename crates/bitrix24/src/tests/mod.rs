//! Tests that need more than one module or a local HTTP stub (`stub`: axum on 127.0.0.1:0 with
//! canned answers).

mod client;
mod errors;
mod list;
mod methods;
mod oauth;
mod session;
mod stub;
mod tls;
mod types;
