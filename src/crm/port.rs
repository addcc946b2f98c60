//! The production [`Bitrix`] port: the worker's planned commands as one `batch` through
//! [`CrmClient`] to the portal's endpoint (its incoming-webhook URL; OAuth portals: the installed
//! `client_endpoint` with the current access token from [`Tokens`], refreshed once on
//! `expired_token` and the batch sent again), answers mapped back to per-command outcomes.

use std::collections::HashMap;
use std::sync::Arc;

use super::plan::{CallRef, Cmd};
use super::{BatchCommand, CrmError, Params};
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

/// The command with its stored parameters (JSON in the outbox) and its CALL_ID.
fn to_batch_command(cmd: &Cmd) -> BatchCommand {
    let mut params = Params::from_json(&cmd.params);
    match &cmd.call_id {
        CallRef::None => {}
        CallRef::Known(id) => params.insert("CALL_ID", id.as_str()),
        CallRef::Result(key) => params.insert("CALL_ID", Params::reference(key.clone(), "CALL_ID")),
    }
    BatchCommand::new(cmd.key.clone(), cmd.method, params)
}

fn failure(e: AccessError) -> SendFailure {
    SendFailure { rate_limited: e.rate_limited(), message: e.to_string() }
}

fn outcome_of(e: &CrmError) -> CmdOutcome {
    CmdOutcome::Err { retryable: e.retryable(), call_not_found: matches!(e, CrmError::CallNotFound { .. }), user_refused: matches!(e, CrmError::UserNotFound), message: e.to_string() }
}
