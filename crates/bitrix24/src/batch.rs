//! `batch`: up to [`MAX_BATCH_COMMANDS`] sub-calls in one HTTP request (one unit of the portal's
//! rate limit). [`BatchCommand`] is one `key → "method?query"` entry; [`check_batch`] refuses what
//! Bitrix24 would execute wrongly (too many commands, numeric or duplicate keys, a nested `batch`);
//! [`BatchResult::take`] decodes one command's answer as its typed [`Method`] output.
//!
//! Keys are non-numeric on purpose: with keys `0..n-1` PHP answers JSON arrays instead of maps,
//! and a later command names an earlier result as `$result[key][FIELD]`
//! ([`Params::reference`]).

use serde_json::Value;

use crate::client::{check_method, Response};
use crate::methods::Method;
use crate::{BatchResult, Error, Params};

/// The most commands Bitrix24 executes in one `batch` (the rest get `ERROR_BATCH_LENGTH_EXCEEDED`).
pub const MAX_BATCH_COMMANDS: usize = 50;

/// One `batch` command: `key` → `method?query`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchCommand {
    /// Unique, non-numeric, `[A-Za-z0-9_]+` (so results are always maps and references work).
    pub key: String,
    /// Method name.
    pub method: String,
    /// Parameters; may hold [`Params::reference`] values.
    pub params: Params,
}

impl BatchCommand {
    /// A command.
    pub fn new(key: impl Into<String>, method: impl Into<String>, params: Params) -> Self {
        Self {
            key: key.into(),
            method: method.into(),
            params,
        }
    }

    /// The command for a typed method.
    pub fn of<M: Method>(key: impl Into<String>, method: &M) -> Self {
        Self::new(key, method.name(), method.params())
    }

    /// `method?php-query` as it goes into `cmd`.
    pub fn cmd_string(&self) -> String {
        let q = self.params.to_query();
        if q.is_empty() {
            self.method.clone()
        } else {
            format!("{}?{q}", self.method)
        }
    }
}

/// Checks a batch before sending: ≤ 50 commands, valid unique keys, valid method names.
///
/// # Errors
/// [`Error::BatchTooLarge`], [`Error::InvalidBatchKey`], [`Error::InvalidMethod`].
pub fn check_batch(cmds: &[BatchCommand]) -> Result<(), Error> {
    if cmds.len() > MAX_BATCH_COMMANDS {
        return Err(Error::BatchTooLarge {
            commands: cmds.len(),
            max: MAX_BATCH_COMMANDS,
        });
    }
    let mut seen = std::collections::HashSet::new();
    for c in cmds {
        let k = c.key.as_str();
        let charset = k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let numeric = k.bytes().all(|b| b.is_ascii_digit());
        if k.is_empty() || !charset || numeric || !seen.insert(k) {
            return Err(Error::InvalidBatchKey { key: c.key.clone() });
        }
        check_method(&c.method)?;
        if c.method.eq_ignore_ascii_case("batch") {
            return Err(Error::InvalidMethod {
                method: c.method.clone(),
            });
        }
    }
    Ok(())
}

impl BatchResult {
    /// Removes command `key`'s outcome and decodes it as `M`'s output (`total`/`next` included
    /// for list methods): `None` when it did not run (after a `halt`) or is absent.
    pub fn take<M: Method>(&mut self, key: &str) -> Option<Result<M::Output, Error>> {
        if let Some(e) = self.result_error.remove(key) {
            return Some(Err(e));
        }
        let result: Value = self.result.remove(key)?;
        let resp = Response {
            result,
            total: self.result_total.get(key).copied(),
            next: self.result_next.get(key).copied(),
            time: None,
        };
        Some(M::decode(resp))
    }
}
