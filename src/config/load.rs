//! Layering (defaults → file → env) and the collected error report.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use toml::Value;

use super::Config;

/// Prefix of environment overrides: `CALLGATE__SECTION__KEY`.
const ENV_PREFIX: &str = "CALLGATE__";

/// One problem found while loading or validating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key path (`sip.udp`), or `file` for problems with the file itself.
    pub key: String,
    /// What is wrong, never containing a secret value.
    pub message: String,
}

/// Every problem found, reported at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub(crate) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError { key: key.into(), message: message.into() });
    }

    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} configuration error(s):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  {}: {}", e.key, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Where configuration comes from. Tests build one from strings and a map, never from the
/// process environment.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// TOML text of the config file, if any.
    pub file: Option<String>,
    /// Environment variables (all of them; only `CALLGATE__*` are read).
    pub env: BTreeMap<String, String>,
}

impl ConfigSource {
    /// Reads `path` (missing is fine when `required` is false) and the process environment.
    ///
    /// # Errors
    /// The file is required and missing, or unreadable.
    pub fn from_process(path: &Path, required: bool) -> Result<Self, ConfigErrors> {
        let file = match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => None,
            Err(e) => {
                let mut errs = ConfigErrors::default();
                errs.push("file", format!("cannot read {}: {e}", path.display()));
                return Err(errs);
            }
        };
        Ok(Self { file, env: std::env::vars().collect() })
    }
}

impl Config {
    /// Builds the configuration from its layers and validates it.
    ///
    /// # Errors
    /// Every unknown key, type error and failed validation, at once.
    pub fn load(source: &ConfigSource) -> Result<Self, ConfigErrors> {
        let mut errs = ConfigErrors::default();
        let mut tree = Value::try_from(Self::default()).expect("defaults serialise");
        if let Some(text) = &source.file {
            match text.parse::<toml::Table>() {
                Ok(file) => merge(&mut tree, Value::Table(file)),
                Err(e) => errs.push("file", format!("not valid TOML: {}", e.message())),
            }
        }
        apply_env(&mut tree, &source.env, &mut errs);
        let cfg = from_tree(tree, &mut errs);
        if let Some(cfg) = &cfg {
            cfg.validate(&mut errs);
        }
        match cfg {
            Some(cfg) if errs.is_empty() => Ok(cfg),
            _ => Err(errs),
        }
    }
}

/// Deep-merges `over` into `base` (tables merge, everything else replaces).
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Table(b), Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Applies `CALLGATE__SECTION__KEY` overrides, typed after the default value of that key.
fn apply_env(tree: &mut Value, env: &BTreeMap<String, String>, errs: &mut ConfigErrors) {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else { continue };
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        let key = path.join(".");
        let Some(slot) = lookup_mut(tree, &path) else {
            errs.push(&key, format!("unknown key (from environment variable {name})"));
            continue;
        };
        match typed_like(slot, raw) {
            Ok(v) => *slot = v,
            Err(m) => errs.push(&key, format!("{m} (from environment variable {name})")),
        }
    }
}

fn lookup_mut<'a>(tree: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut cur = tree;
    for part in path {
        cur = cur.as_table_mut()?.get_mut(part)?;
    }
    (!cur.is_table()).then_some(cur)
}

/// Parses an environment string as the same TOML type as the value it replaces.
fn typed_like(current: &Value, raw: &str) -> Result<Value, String> {
    match current {
        Value::String(_) => Ok(Value::String(raw.to_owned())),
        Value::Integer(_) => raw.trim().parse().map(Value::Integer).map_err(|_| "expected an integer".into()),
        Value::Float(_) => raw.trim().parse().map(Value::Float).map_err(|_| "expected a number".into()),
        Value::Boolean(_) => raw.trim().parse().map(Value::Boolean).map_err(|_| "expected true or false".into()),
        _ => format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .ok_or_else(|| "expected a TOML value".into()),
    }
}

/// Deserialises section by section so that one bad section does not hide the others.
fn from_tree(tree: Value, errs: &mut ConfigErrors) -> Option<Config> {
    let Value::Table(mut table) = tree else { return None };
    let mut cfg = Config::default();
    let before = errs.0.len();
    let known = ["sip", "http", "store", "admin", "log", "shutdown", "calls", "crm", "media"];
    for key in table.keys().filter(|k| !known.contains(&k.as_str())) {
        errs.push(key.clone(), "unknown section");
    }
    section(&mut table, "sip", &mut cfg.sip, errs);
    section(&mut table, "http", &mut cfg.http, errs);
    section(&mut table, "store", &mut cfg.store, errs);
    section(&mut table, "admin", &mut cfg.admin, errs);
    section(&mut table, "log", &mut cfg.log, errs);
    section(&mut table, "shutdown", &mut cfg.shutdown, errs);
    section(&mut table, "calls", &mut cfg.calls, errs);
    section(&mut table, "crm", &mut cfg.crm, errs);
    section(&mut table, "media", &mut cfg.media, errs);
    (errs.0.len() == before).then_some(cfg)
}

fn section<T: DeserializeOwned>(table: &mut toml::Table, name: &str, out: &mut T, errs: &mut ConfigErrors) {
    let Some(value) = table.remove(name) else { return };
    let mut unknown = Vec::new();
    let result: Result<T, _> = serde_ignored::deserialize(value, |path| unknown.push(path.to_string()));
    for key in &unknown {
        errs.push(format!("{name}.{key}"), "unknown key");
    }
    match result {
        Ok(v) => *out = v,
        Err(e) => errs.push(name, strip_secrets(&e.to_string())),
    }
}

/// Type errors from serde quote the offending value; never let a secret through that way.
fn strip_secrets(message: &str) -> String {
    message.lines().next().unwrap_or(message).to_owned()
}
