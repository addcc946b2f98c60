//! `[media]`: the media anchor for browser agents (issue 6). Kept as text here (ports as
//! `"lo-hi"`, addresses as strings, so `CALLGATE__MEDIA__RTP_PORTS=32000-32999` works like any
//! other key); [`MediaSection::anchor_config`] turns it into the anchor's typed
//! [`crate::webrtc::media::MediaConfig`] and [`MediaSection::check`] reports what is wrong.

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
    /// The anchor's configuration.
    ///
    /// # Errors
    /// Every bad key, as (key, message).
    pub fn anchor_config(
        &self,
    ) -> Result<crate::webrtc::media::MediaConfig, Vec<(&'static str, String)>> {
        let mut errs = Vec::new();
        let bind_ip = self.bind_ip.trim().parse::<IpAddr>();
        if bind_ip.is_err() {
            errs.push((
                "media.bind_ip",
                format!("`{}` is not an IP address", self.bind_ip),
            ));
        }
        let advertise_ip = match self.advertise_ip.trim() {
            "" => Ok(None),
            s => s
                .parse::<IpAddr>()
                .map(Some)
                .map_err(|_| format!("`{s}` is not an IP address (or empty)")),
        };
        if let Err(m) = &advertise_ip {
            errs.push(("media.advertise_ip", m.clone()));
        }
        let webrtc = port_range(&self.webrtc_ports)
            .inspect_err(|m| errs.push(("media.webrtc_ports", m.clone())));
        let rtp =
            port_range(&self.rtp_ports).inspect_err(|m| errs.push(("media.rtp_ports", m.clone())));
        if let Ok((lo, hi)) = rtp {
            if hi - lo < 1 {
                errs.push((
                    "media.rtp_ports",
                    "must hold at least one even/odd pair".to_owned(),
                ));
            }
        }
        if let (Ok(w), Ok(r)) = (&webrtc, &rtp) {
            if w.0 <= r.1 && r.0 <= w.1 {
                errs.push((
                    "media.rtp_ports",
                    "must not overlap media.webrtc_ports".to_owned(),
                ));
            }
        }
        if self.max_sessions == 0 {
            errs.push(("media.max_sessions", "must be at least 1".to_owned()));
        }
        if self.consent_timeout < Duration::from_secs(1)
            || self.consent_timeout > Duration::from_secs(300)
        {
            errs.push((
                "media.consent_timeout",
                "must be between 1s and 5m".to_owned(),
            ));
        }
        if self.idle_timeout < Duration::from_secs(1)
            || self.idle_timeout > Duration::from_secs(3600)
        {
            errs.push(("media.idle_timeout", "must be between 1s and 1h".to_owned()));
        }
        match (bind_ip, advertise_ip, webrtc, rtp) {
            (Ok(bind_ip), Ok(advertise_ip), Ok(webrtc_ports), Ok(rtp_ports)) if errs.is_empty() => {
                Ok(crate::webrtc::media::MediaConfig {
                    bind_ip,
                    advertise_ip,
                    webrtc_ports,
                    rtp_ports,
                    max_sessions: self.max_sessions,
                    consent_timeout: self.consent_timeout,
                    idle_timeout: self.idle_timeout,
                })
            }
            _ => Err(errs),
        }
    }

    /// Adds every problem of the section to `errs`.
    pub(crate) fn check(&self, errs: &mut ConfigErrors) {
        if let Err(list) = self.anchor_config() {
            for (key, m) in list {
                errs.push(key, m);
            }
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
    fn defaults_as_documented() {
        let c = MediaSection::default().anchor_config().unwrap();
        assert_eq!(c.bind_ip, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(
            (c.advertise_ip, c.webrtc_ports, c.rtp_ports),
            (None, (40000, 40999), (30000, 30999))
        );
        assert_eq!(
            (c.max_sessions, c.consent_timeout, c.idle_timeout),
            (1000, Duration::from_secs(30), Duration::from_secs(300))
        );
    }

    #[test]
    fn file_and_env_override() {
        let cfg = load(
            "[media]\nbind_ip = \"0.0.0.0\"\nadvertise_ip = \"203.0.113.7\"\nmax_sessions = 5\n",
            &[
                ("CALLGATE__MEDIA__RTP_PORTS", "32000-32099"),
                ("CALLGATE__MEDIA__CONSENT_TIMEOUT", "10s"),
                ("CALLGATE__MEDIA__IDLE_TIMEOUT", "10m"),
            ],
        )
        .unwrap();
        let c = cfg.media.anchor_config().unwrap();
        assert_eq!(c.advertise_ip, Some("203.0.113.7".parse().unwrap()));
        assert_eq!(
            (c.rtp_ports, c.max_sessions, c.consent_timeout),
            ((32000, 32099), 5, Duration::from_secs(10))
        );
        assert_eq!(c.idle_timeout, Duration::from_secs(600));
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
