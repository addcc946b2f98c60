//! The production [`Bitrix`] port: the worker's planned commands as one `batch` through
//! [`CrmClient`] to the portal's endpoint (its incoming-webhook URL; OAuth portals through their
//! token cell), answers mapped back to per-command outcomes.

use std::collections::HashMap;

use serde_json::Value;

use super::client::{BatchCommand, CrmClient, Endpoint};
use super::error::CrmError;
use super::params::{ParamValue, Params};
use super::plan::{CallRef, Cmd};
use super::worker::{Bitrix, CmdOutcome, SendFailure, SendFuture};
use crate::routing::PortalEntry;
use crate::settings::Auth;

/// Sends through one shared HTTP client.
pub struct RestBitrix {
    client: CrmClient,
}

impl RestBitrix {
    /// A port over `client`.
    pub fn new(client: CrmClient) -> Self {
        Self { client }
    }
}

impl Bitrix for RestBitrix {
    fn send<'a>(&'a self, portal: &'a PortalEntry, cmds: &'a [Cmd]) -> SendFuture<'a> {
        Box::pin(async move {
            let ep = endpoint(portal)?;
            let batch: Vec<BatchCommand> = cmds.iter().map(to_batch_command).collect();
            let answer = self.client.batch(&ep, &batch, false).await.map_err(failure)?;
            let mut out = HashMap::new();
            for (key, v) in answer.result {
                out.insert(key, CmdOutcome::Ok(v));
            }
            for (key, e) in answer.result_error {
                out.insert(key, outcome_of(&e));
            }
            Ok(out)
        })
    }
}

fn endpoint(portal: &PortalEntry) -> Result<Endpoint, SendFailure> {
    match &portal.portal.auth {
        Some(Auth::Webhook { url }) => Endpoint::webhook(url).map_err(failure),
        Some(Auth::OAuth { .. }) => Err(SendFailure { rate_limited: false, message: "OAuth portal without an installed token yet".into() }),
        None => Err(SendFailure { rate_limited: false, message: "the portal has no Bitrix24 credentials".into() }),
    }
}

fn to_batch_command(cmd: &Cmd) -> BatchCommand {
    let mut params = json_to_params(&cmd.params);
    match &cmd.call_id {
        CallRef::None => {}
        CallRef::Known(id) => params.insert("CALL_ID", id.as_str()),
        CallRef::Result(key) => params.insert("CALL_ID", Params::reference(key.clone(), "CALL_ID")),
    }
    BatchCommand::new(cmd.key.clone(), cmd.method, params)
}

/// A JSON object of parameters as [`Params`] (numbers stay numbers, arrays lists, objects maps).
fn json_to_params(v: &Value) -> Params {
    let mut p = Params::new();
    if let Value::Object(m) = v {
        for (k, v) in m {
            if let Some(pv) = json_to_value(v) {
                p.insert(k.clone(), pv);
            }
        }
    }
    p
}

fn json_to_value(v: &Value) -> Option<ParamValue> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => ParamValue::Int(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => ParamValue::Int(i),
            None => ParamValue::Float(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => ParamValue::Str(s.clone()),
        Value::Array(a) => ParamValue::List(a.iter().filter_map(json_to_value).collect()),
        Value::Object(_) => ParamValue::Map(json_to_params(v)),
    })
}

fn failure(e: CrmError) -> SendFailure {
    SendFailure { rate_limited: matches!(e, CrmError::RateLimited), message: e.to_string() }
}

fn outcome_of(e: &CrmError) -> CmdOutcome {
    CmdOutcome::Err { retryable: e.retryable(), call_not_found: matches!(e, CrmError::CallNotFound { .. }), message: e.to_string() }
}
