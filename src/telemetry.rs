//! Logging (`tracing`, text or JSON) and the Prometheus metrics recorder.
//!
//! Structured fields only; SIP messages at `trace`; secrets never (config secrets are
//! [`crate::config::Secret`], whose Debug is `***`).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogConfig, LogFormat};

/// Wall-clock milliseconds since the UNIX epoch: the one place callgate reads the calendar clock
/// (audit times, the outbox and token expiry, the tracker's clock base). 0 before 1970.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The WebRTC engine's crates log every odd packet a browser sends at warn (unknown DTLS
/// extensions in Chrome's ClientHello, STUN before the answer is applied, RTP before SRTP keys):
/// they are kept at error unless the filter names them itself (`"debug,rtc_dtls=debug"`).
const MEDIA_ENGINE: &str = ",webrtc=error,rtc=error,rtc_dtls=error,rtc_ice=error,rtc_srtp=error,rtc_sctp=error,rtc_interceptor=error,rtc_rtp=error,rtc_rtcp=error,rtc_sdp=error,rtc_stun=error,rtc_mdns=error";

fn with_quiet_media(level: &str) -> String {
    if level.contains("rtc") {
        level.to_owned()
    } else {
        format!("{level}{MEDIA_ENGINE}")
    }
}

/// Installs the global subscriber. Safe to call twice (the second call does nothing).
pub fn init(cfg: &LogConfig) {
    let filter = EnvFilter::try_new(with_quiet_media(&cfg.level)).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    let _ = match cfg.format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The process-wide Prometheus recorder (installed on first use; a process has one).
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; then this handle renders nothing,
            // which is visible in /metrics rather than a crash.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!("callgate_http_requests_total", "HTTP requests by method, route template and status");
    metrics::describe_counter!("callgate_admin_auth_failures_total", "Admin API requests refused for a missing or wrong token");
}
