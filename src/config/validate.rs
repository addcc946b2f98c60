//! Semantic checks on a deserialised [`Config`]; every failure is collected.

use super::{listener_addr, Config, ConfigErrors};

impl Config {
    /// Checks everything that serde cannot: addresses, ranges, filter syntax.
    pub(crate) fn validate(&self, errs: &mut ConfigErrors) {
        for (key, value) in [("sip.udp", &self.sip.udp), ("sip.tcp", &self.sip.tcp), ("sip.tls", &self.sip.tls)] {
            if let Err(m) = listener_addr(value) {
                errs.push(key, m);
            }
        }
        match listener_addr(&self.http.listen) {
            Ok(Some(_)) => {}
            Ok(None) => errs.push("http.listen", "must be set: the admin API, /ready and /metrics live there"),
            Err(m) => errs.push("http.listen", m),
        }
        if self.sip.tls_cert.is_empty() != self.sip.tls_key.is_empty() {
            errs.push("sip.tls_key", "sip.tls_cert and sip.tls_key go together");
        }
        if self.http.max_connections < 16 {
            errs.push("http.max_connections", "must be at least 16");
        }
        if self.http.tls_cert.is_empty() != self.http.tls_key.is_empty() {
            errs.push("http.tls_key", "http.tls_cert and http.tls_key go together");
        }
        for (key, path) in [("sip.tls_cert", &self.sip.tls_cert), ("sip.tls_key", &self.sip.tls_key), ("http.tls_cert", &self.http.tls_cert), ("http.tls_key", &self.http.tls_key), ("crm.ca_file", &self.crm.ca_file), ("sip.tls_ca_file", &self.sip.tls_ca_file)] {
            if !path.is_empty() && !std::path::Path::new(path).is_file() {
                errs.push(key, format!("`{path}` is not a readable file"));
            }
        }
        for (key, rate, burst) in [
            ("sip.rate_per_source", self.sip.rate_per_source, self.sip.burst_per_source),
            ("sip.trusted_rate", self.sip.trusted_rate, self.sip.trusted_burst),
            ("http.rate_per_source", self.http.rate_per_source, self.http.burst_per_source),
        ] {
            if !(rate.is_finite() && (0.0..=10_000_000.0).contains(&rate)) {
                errs.push(key, "must be between 0 (off) and 10000000");
            } else if rate > 0.0 && burst == 0 {
                errs.push(key, "needs a burst of at least 1");
            }
        }
        if !(1024..=65_535).contains(&self.sip.max_message_bytes) {
            errs.push("sip.max_message_bytes", "must be between 1024 and 65535");
        }
        if !(400..=699).contains(&self.sip.no_decision_code) {
            errs.push("sip.no_decision_code", "must be a final error status between 400 and 699");
        }
        if self.sip.max_tcp_connections == 0 {
            errs.push("sip.max_tcp_connections", "must be at least 1");
        }
        if !(1..=64).contains(&self.sip.udp_threads) {
            errs.push("sip.udp_threads", "must be between 1 and 64");
        }
        for (key, d) in [("sip.write_timeout", self.sip.write_timeout), ("sip.frame_timeout", self.sip.frame_timeout)] {
            if d.is_zero() || d.as_secs() > 3600 {
                errs.push(key, "must be between 1ms and 1h");
            }
        }
        if self.http.body_limit_bytes < 1024 {
            errs.push("http.body_limit_bytes", "must be at least 1024");
        }
        if let Err(m) = check_public_url(&self.http.public_url) {
            errs.push("http.public_url", m);
        }
        if self.http.request_timeout.is_zero() {
            errs.push("http.request_timeout", "must be greater than zero");
        }
        self.check_http_connections(errs);
        if self.store.path.as_os_str().is_empty() {
            errs.push("store.path", "must be set");
        }
        let token = self.admin.token.expose();
        if !token.is_empty() && (token.len() < 16 || token.chars().any(|c| c.is_whitespace() || c.is_control())) {
            errs.push("admin.token", "must be at least 16 characters without spaces (or empty to generate one)");
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            errs.push("log.level", format!("`{}` is not a valid tracing filter", self.log.level));
        }
        if !(self.crm.rate_per_s > 0.0 && self.crm.rate_per_s <= 50.0) {
            errs.push("crm.rate_per_s", "must be above 0 and at most 50");
        }
        if self.crm.burst == 0 || self.crm.burst > 250 {
            errs.push("crm.burst", "must be 1-250 (Bitrix24 refuses more than 50 queued requests, 250 on Enterprise)");
        }
        if self.crm.min_backoff.is_zero() || self.crm.min_backoff > self.crm.max_backoff {
            errs.push("crm.min_backoff", "must be above 0 and at most crm.max_backoff");
        }
        if self.crm.delivery_horizon < self.crm.max_backoff {
            errs.push("crm.delivery_horizon", "must be at least crm.max_backoff");
        }
        if self.crm.effects_queue < 1024 {
            errs.push("crm.effects_queue", "must be at least 1024");
        }
        if self.calls.keep_finished > 1_000_000 {
            errs.push("calls.keep_finished", "must be at most 1000000");
        }
        if self.calls.ring_timeout.is_zero() || self.calls.transfer_wait.is_zero() {
            errs.push("calls", "ring_timeout and transfer_wait must be above zero");
        }
        let interval = self.calls.checkpoint_interval;
        if interval < std::time::Duration::from_millis(10) || interval.as_secs() > 10 {
            errs.push("calls.checkpoint_interval", "must be between 10ms and 10s");
        }
        if self.calls.restore_wait.is_zero() {
            errs.push("calls.restore_wait", "must be above zero");
        }
        if self.shutdown.grace.is_zero() || self.shutdown.grace.as_secs() > 3600 {
            errs.push("shutdown.grace", "must be between 1ms and 1h");
        }
        self.media.check(errs);
    }
}

/// `http.public_url`: empty, or an absolute http(s) URL without credentials, query or fragment
/// (the events handler path is appended to it).
fn check_public_url(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Ok(());
    }
    let url = url::Url::parse(value).map_err(|_| "must be an absolute URL such as https://callgate.example.com")?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err("must be an https:// (or http://) URL");
    }
    if url.host_str().is_none_or(str::is_empty) || !url.username().is_empty() || url.password().is_some() {
        return Err("must name a host and no credentials");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must have no query or fragment");
    }
    Ok(())
}

impl Config {
    /// The HTTP connection limits: timeouts, head size, allowed origins.
    fn check_http_connections(&self, errs: &mut ConfigErrors) {
        let h = &self.http;
        if h.header_read_timeout.is_zero() || h.header_read_timeout.as_secs() > 3600 {
            errs.push("http.header_read_timeout", "must be between 1ms and 1h");
        }
        if h.idle_timeout.is_zero() || h.idle_timeout.as_secs() > 86_400 {
            errs.push("http.idle_timeout", "must be between 1ms and 24h");
        }
        // hyper refuses (panics on) a buffer below 8 KiB.
        if !(8192..=16 * 1024 * 1024).contains(&h.max_header_bytes) {
            errs.push("http.max_header_bytes", "must be between 8192 and 16777216");
        }
        for origin in &h.allowed_origins {
            if !origin_ok(origin) {
                errs.push("http.allowed_origins", format!("`{origin}` is not an origin like https://host[:port] (or *)"));
            }
        }
    }
}

/// `*`, or `http(s)://host[:port]` with nothing after it.
fn origin_ok(origin: &str) -> bool {
    if origin == "*" {
        return true;
    }
    let Some((scheme, rest)) = origin.split_once("://") else { return false };
    matches!(scheme, "http" | "https") && !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{ConfigSource, LogFormat};
    use super::*;

    fn load(file: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let env: BTreeMap<_, _> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::load(&ConfigSource { file: Some(file.into()), env })
    }

    fn keys(e: &ConfigErrors) -> Vec<&str> {
        e.0.iter().map(|e| e.key.as_str()).collect()
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(load("", &[]).unwrap(), Config::default());
    }

    #[test]
    fn shipped_config_file_parses_to_the_defaults() {
        let text = include_str!("../../config/callgate.toml");
        assert_eq!(load(text, &[]).unwrap(), Config::default());
    }

    #[test]
    fn file_then_env_override() {
        let cfg = load(
            "[sip]\nudp = \"127.0.0.1:5999\"\n[log]\nformat = \"json\"\n",
            &[("CALLGATE__SIP__UDP", "127.0.0.1:0"), ("CALLGATE__SHUTDOWN__GRACE", "3s"), ("OTHER", "x")],
        )
        .unwrap();
        assert_eq!(cfg.sip.udp, "127.0.0.1:0");
        assert_eq!(cfg.log.format, LogFormat::Json);
        assert_eq!(cfg.shutdown.grace, std::time::Duration::from_secs(3));
    }

    #[test]
    fn env_values_are_typed_after_the_default() {
        let cfg = load("", &[("CALLGATE__SIP__NO_DECISION_CODE", "480"), ("CALLGATE__ADMIN__TOKEN", "1234567890123456")]).unwrap();
        assert_eq!(cfg.sip.no_decision_code, 480);
        assert_eq!(cfg.admin.token.expose(), "1234567890123456");
        let e = load("", &[("CALLGATE__SIP__NO_DECISION_CODE", "many")]).unwrap_err();
        assert_eq!(keys(&e), ["sip.no_decision_code"]);
    }

    #[test]
    fn every_error_is_reported_at_once() {
        let e = load(
            "[sip]\nudp = \"nope\"\nbogus = 1\n[http]\nlisten = \"\"\n[shutdown]\ngrace = \"0s\"\n[extra]\nx = 1\n",
            &[("CALLGATE__NOPE__KEY", "1"), ("CALLGATE__LOG__LEVEL", "[[[")],
        )
        .unwrap_err();
        let k = keys(&e);
        for want in ["sip.bogus", "extra", "nope.key"] {
            assert!(k.contains(&want), "{want} missing in {k:?}");
        }
        // Unknown keys stop deserialisation of nothing else: semantic errors need a parsed tree,
        // so check them separately without unknown keys.
        let e = load("[sip]\nudp = \"nope\"\n[http]\nlisten = \"\"\n[shutdown]\ngrace = \"0s\"\n", &[("CALLGATE__LOG__LEVEL", "[[[")]).unwrap_err();
        assert_eq!(keys(&e), ["sip.udp", "http.listen", "log.level", "shutdown.grace"]);
    }

    #[test]
    fn type_errors_in_several_sections_are_all_reported() {
        let e = load("[sip]\nno_decision_code = \"x\"\n[shutdown]\ngrace = 5\n", &[]).unwrap_err();
        assert_eq!(keys(&e), ["sip", "shutdown"]);
    }

    #[test]
    fn http_connection_limits_are_checked() {
        let e = load(
            "[http]\nheader_read_timeout = \"0s\"\nmax_header_bytes = 100\nallowed_origins = [\"https://ok.example:8443\", \"evil.example\", \"https://x/path\"]\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(keys(&e), ["http.header_read_timeout", "http.max_header_bytes", "http.allowed_origins", "http.allowed_origins"]);
        let cfg = load("[http]\nallowed_origins = [\"*\"]\nmax_connections_per_source = 0\n", &[("CALLGATE__HTTP__IDLE_TIMEOUT", "5s")]).unwrap();
        assert_eq!(cfg.http.allowed_origins, ["*"]);
        assert_eq!(cfg.http.idle_timeout, std::time::Duration::from_secs(5));
    }

    #[test]
    fn delivery_backoff_and_horizon_are_checked() {
        let e = load("[crm]\nmin_backoff = \"0s\"\ndelivery_horizon = \"10s\"\n", &[]).unwrap_err();
        assert_eq!(keys(&e), ["crm.min_backoff", "crm.delivery_horizon"]);
        let cfg = load("[crm]\nmin_backoff = \"100ms\"\nmax_backoff = \"1s\"\n", &[("CALLGATE__CRM__DELIVERY_HORIZON", "2s")]).unwrap();
        assert_eq!((cfg.crm.min_backoff, cfg.crm.delivery_horizon), (std::time::Duration::from_millis(100), std::time::Duration::from_secs(2)));
        assert_eq!(load("", &[]).unwrap().crm.delivery_horizon, std::time::Duration::from_secs(48 * 3600), "at least 24 h by default");
    }

    #[test]
    fn secret_values_never_appear_in_errors() {
        let e = load("[admin]\ntoken = \"short secret\"\n", &[]).unwrap_err();
        assert_eq!(keys(&e), ["admin.token"]);
        assert!(!e.to_string().contains("short secret"));
        let e = load("[admin]\ntoken = [\"supersecretvalue-123\"]\n", &[]).unwrap_err();
        assert!(!e.to_string().contains("supersecretvalue"), "{e}");
    }

    #[test]
    fn tls_files_and_rate_limits_are_checked() {
        let e = load(
            "[sip]\ntls_cert = \"/nonexistent/cert.pem\"\nrate_per_source = -1.0\n[http]\ntls_cert = \"/nonexistent/c.pem\"\ntls_key = \"/nonexistent/k.pem\"\nburst_per_source = 0\n[crm]\nca_file = \"/nonexistent/ca.pem\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(keys(&e), ["sip.tls_key", "sip.tls_cert", "http.tls_cert", "http.tls_key", "crm.ca_file", "sip.rate_per_source", "http.rate_per_source"]);
        let cfg = load("[sip]\nrate_per_source = 0.0\n[http]\nrate_per_source = 0.0\n", &[]).unwrap();
        assert_eq!(cfg.sip.rate_per_source, 0.0, "0 turns a limit off");
    }

    #[test]
    fn the_public_url_is_an_absolute_http_url_or_empty() {
        for good in ["", "https://callgate.example.com", "https://gw.example.com:8443/callgate/", "http://203.0.113.5:8080"] {
            assert_eq!(check_public_url(good), Ok(()), "{good}");
        }
        for bad in ["callgate.example.com", "ftp://x", "https://u:p@x", "https://x/?a=1", "https://x/#f"] {
            assert!(check_public_url(bad).is_err(), "{bad}");
        }
        let e = load("[http]\npublic_url = \"gw.example.com\"\n", &[]).unwrap_err();
        assert_eq!(keys(&e), ["http.public_url"]);
    }

    #[test]
    fn port_zero_and_disabled_listeners_are_allowed() {
        let cfg = load("[sip]\nudp = \"127.0.0.1:0\"\ntcp = \"\"\ntls = \"\"\n", &[]).unwrap();
        assert_eq!(cfg.sip.tcp, "");
    }
}
