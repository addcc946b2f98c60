//! The anchor's [`MediaConfig`] from the `[media]` config section ([`MediaSection`]): config
//! parses and validates the text (ports as `"lo-hi"`, addresses as strings), this turns a valid
//! section into the typed values the anchor binds with.

use crate::config::MediaSection;

use super::MediaConfig;

impl TryFrom<&MediaSection> for MediaConfig {
    /// Every bad key, as (key, message) ([`MediaSection::problems`]).
    type Error = Vec<(&'static str, String)>;

    fn try_from(s: &MediaSection) -> Result<Self, Self::Error> {
        let problems = s.problems();
        match (s.bind_ip(), s.advertise_ip(), s.webrtc_ports(), s.rtp_ports()) {
            (Ok(bind_ip), Ok(advertise_ip), Ok(webrtc_ports), Ok(rtp_ports)) if problems.is_empty() => Ok(Self {
                bind_ip,
                advertise_ip,
                webrtc_ports,
                rtp_ports,
                max_sessions: s.max_sessions,
                consent_timeout: s.consent_timeout,
                idle_timeout: s.idle_timeout,
            }),
            _ => Err(problems),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::IpAddr;
    use std::time::Duration;

    use crate::config::{Config, ConfigSource};

    use super::*;

    fn load(file: &str, env: &[(&str, &str)]) -> Config {
        let env: BTreeMap<_, _> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::load(&ConfigSource { file: Some(file.into()), env }).unwrap()
    }

    #[test]
    fn defaults_as_documented() {
        let c = MediaConfig::try_from(&MediaSection::default()).unwrap();
        assert_eq!(c.bind_ip, IpAddr::from([127, 0, 0, 1]));
        assert_eq!((c.advertise_ip, c.webrtc_ports, c.rtp_ports), (None, (40000, 40999), (30000, 30999)));
        assert_eq!((c.max_sessions, c.consent_timeout, c.idle_timeout), (1000, Duration::from_secs(30), Duration::from_secs(300)));
    }

    #[test]
    fn file_and_env_override() {
        let cfg = load(
            "[media]\nbind_ip = \"0.0.0.0\"\nadvertise_ip = \"203.0.113.7\"\nmax_sessions = 5\n",
            &[("CALLGATE__MEDIA__RTP_PORTS", "32000-32099"), ("CALLGATE__MEDIA__CONSENT_TIMEOUT", "10s"), ("CALLGATE__MEDIA__IDLE_TIMEOUT", "10m")],
        );
        let c = MediaConfig::try_from(&cfg.media).unwrap();
        assert_eq!(c.advertise_ip, Some("203.0.113.7".parse().unwrap()));
        assert_eq!((c.rtp_ports, c.max_sessions, c.consent_timeout), ((32000, 32099), 5, Duration::from_secs(10)));
        assert_eq!(c.idle_timeout, Duration::from_secs(600));
    }

    #[test]
    fn a_bad_section_builds_nothing_and_names_every_key() {
        let s = MediaSection { bind_ip: "here".into(), rtp_ports: "40900-41100".into(), ..MediaSection::default() };
        let errs = MediaConfig::try_from(&s).unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["media.bind_ip", "media.rtp_ports"]);
    }
}
