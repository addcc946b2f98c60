//! `[media]`: the media anchor for browser agents (issue 6). Kept as text here (ports as
//! `"lo-hi"`, addresses as strings, so `CALLGATE__MEDIA__RTP_PORTS=32000-32999` works like any
//! other key). The accessors ([`MediaSection::bind_ip`], [`MediaSection::rtp_ports`] ...) parse
//! one key each and [`MediaSection::problems`] lists everything wrong, which config validation
//! reports; the media anchor builds its own typed configuration from a valid section
//! (`webrtc::media::MediaConfig::try_from`).

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ConfigErrors;

/// `[media]`: where the media anchor binds and how much it may hold.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct MediaSection {
    /// Address the browser-side and PBX-side UDP sockets bind.
    pub bind_ip: String,
    /// Address written into SDP and ICE candidates instead of `bind_ip` (1:1 NAT); empty: `bind_ip`.
    pub advertise_ip: String,
    /// Inclusive UDP port range for browser legs, `"lo-hi"` (one port per call).
    pub webrtc_ports: String,
    /// Inclusive UDP port range for PBX legs, `"lo-hi"` (even port RTP, +1 RTCP: two per call).
    pub rtp_ports: String,
    /// Anchored calls at most.
    pub max_sessions: usize,
    /// No ICE consent from the browser this long ends its leg.
    #[serde(with = "humantime_serde")]
    pub consent_timeout: Duration,
    /// A session that never reached ICE and saw no SDP operation and no RTP this long is closed
    /// (and its call hung up). Keep it above `calls.ring_timeout` and the proxy's Timer C (3 min).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl Default for MediaSection {
    fn default() -> Self {
        Self {
            bind_ip: "127.0.0.1".to_owned(),
            advertise_ip: String::new(),
            webrtc_ports: "40000-40999".to_owned(),
            rtp_ports: "30000-30999".to_owned(),
            max_sessions: 1000,
            consent_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

fn port_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("`{s}` is not a port range like 40000-40999");
    let (lo, hi) = s.trim().split_once('-').ok_or_else(bad)?;
    let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
    let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
    if lo == 0 || lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

impl MediaSection {
    /// `bind_ip`, parsed.
    ///
    /// # Errors
    /// The message for `media.bind_ip`.
    pub fn bind_ip(&self) -> Result<IpAddr, String> {
        self.bind_ip.trim().parse::<IpAddr>().map_err(|_| format!("`{}` is not an IP address", self.bind_ip))
    }

    /// `advertise_ip`, parsed (`None` when empty).
    ///
    /// # Errors
    /// The message for `media.advertise_ip`.
    pub fn advertise_ip(&self) -> Result<Option<IpAddr>, String> {
        match self.advertise_ip.trim() {
            "" => Ok(None),
            s => s.parse::<IpAddr>().map(Some).map_err(|_| format!("`{s}` is not an IP address (or empty)")),
        }
    }

    /// `webrtc_ports` as an inclusive (lo, hi) range.
    ///
    /// # Errors
    /// The message for `media.webrtc_ports`.
    pub fn webrtc_ports(&self) -> Result<(u16, u16), String> {
        port_range(&self.webrtc_ports)
    }

    /// `rtp_ports` as an inclusive (lo, hi) range.
    ///
    /// # Errors
    /// The message for `media.rtp_ports`.
    pub fn rtp_ports(&self) -> Result<(u16, u16), String> {
        port_range(&self.rtp_ports)
    }

    /// Every bad key, as (key, message); empty when the section is valid (then every accessor
    /// is `Ok`).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut errs = Vec::new();
        if let Err(m) = self.bind_ip() {
            errs.push(("media.bind_ip", m));
        }
        if let Err(m) = self.advertise_ip() {
            errs.push(("media.advertise_ip", m));
        }
        let webrtc = self.webrtc_ports().inspect_err(|m| errs.push(("media.webrtc_ports", m.clone())));
        let rtp = self.rtp_ports().inspect_err(|m| errs.push(("media.rtp_ports", m.clone())));
        if let Ok((lo, hi)) = rtp {
            if hi - lo < 1 {
                errs.push(("media.rtp_ports", "must hold at least one even/odd pair".to_owned()));
            }
        }
        if let (Ok(w), Ok(r)) = (&webrtc, &rtp) {
            if w.0 <= r.1 && r.0 <= w.1 {
                errs.push(("media.rtp_ports", "must not overlap media.webrtc_ports".to_owned()));
            }
        }
        if self.max_sessions == 0 {
            errs.push(("media.max_sessions", "must be at least 1".to_owned()));
        }
        if self.consent_timeout < Duration::from_secs(1) || self.consent_timeout > Duration::from_secs(300) {
            errs.push(("media.consent_timeout", "must be between 1s and 5m".to_owned()));
        }
        if self.idle_timeout < Duration::from_secs(1) || self.idle_timeout > Duration::from_secs(3600) {
            errs.push(("media.idle_timeout", "must be between 1s and 1h".to_owned()));
        }
        errs
    }

    /// Adds every problem of the section to `errs`.
    pub(crate) fn check(&self, errs: &mut ConfigErrors) {
        for (key, m) in self.problems() {
            errs.push(key, m);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{Config, ConfigSource};
    use super::*;

    fn load(file: &str, env: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let env: BTreeMap<_, _> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load(&ConfigSource {
            file: Some(file.into()),
            env,
        })
    }

    #[test]
    fn every_bad_key_is_reported() {
        let err = load(
            "[media]\nbind_ip = \"here\"\nadvertise_ip = \"x\"\nwebrtc_ports = \"40000-30000\"\nrtp_ports = \"3\"\nmax_sessions = 0\nconsent_timeout = \"0s\"\nidle_timeout = \"2h\"\n",
            &[],
        )
        .unwrap_err()
        .to_string();
        for key in [
            "media.bind_ip",
            "media.advertise_ip",
            "media.webrtc_ports",
            "media.rtp_ports",
            "media.max_sessions",
            "media.consent_timeout",
            "media.idle_timeout",
        ] {
            assert!(err.contains(key), "{key} not reported in:\n{err}");
        }
        let overlap = load("[media]\nrtp_ports = \"40900-41100\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(overlap.contains("overlap"), "{overlap}");
    }
}
