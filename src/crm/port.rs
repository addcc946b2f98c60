//! The production [`Bitrix`] port: the worker's planned commands as one `batch` through
//! [`CrmClient`] to the portal's endpoint (its incoming-webhook URL; OAuth portals: the installed
//! `client_endpoint` with the current access token from [`Tokens`], refreshed once on
//! `expired_token` and the batch sent again), answers mapped back to per-command outcomes.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::client::BatchCommand;
use super::error::CrmError;
use super::params::{ParamValue, Params};
use super::plan::{CallRef, Cmd};
use super::tokens::{AccessError, Tokens};
use super::worker::{Bitrix, CmdOutcome, SendFailure, SendFuture};
use crate::directory::PortalEntry;

/// Sends through the shared HTTP client of `tokens`.
pub struct RestBitrix {
    tokens: Arc<Tokens>,
}

impl RestBitrix {
    /// A port calling portals as `tokens` says.
    pub fn new(tokens: Arc<Tokens>) -> Self {
        Self { tokens }
    }
}

impl Bitrix for RestBitrix {
    fn send<'a>(&'a self, portal: &'a PortalEntry, cmds: &'a [Cmd]) -> SendFuture<'a> {
        Box::pin(async move {
            let batch: Vec<BatchCommand> = cmds.iter().map(to_batch_command).collect();
            let client = self.tokens.client();
            let answer = self.tokens.call(portal, |ep| {
                let batch = &batch;
                async move { client.batch(&ep, batch, false).await }
            });
            let answer = answer.await.map_err(failure)?;
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

fn failure(e: AccessError) -> SendFailure {
    SendFailure { rate_limited: e.rate_limited(), message: e.to_string() }
}

fn outcome_of(e: &CrmError) -> CmdOutcome {
    CmdOutcome::Err { retryable: e.retryable(), call_not_found: matches!(e, CrmError::CallNotFound { .. }), user_refused: matches!(e, CrmError::UserNotFound), message: e.to_string() }
}
