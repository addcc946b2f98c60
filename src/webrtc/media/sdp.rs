//! Our SDP policy, independent of the WebRTC library: parse the PBX's plain RTP/AVP SDP, build
//! the plain SDP we send the PBX, read and filter the browser's WebRTC SDP (codecs, direction).
//!
//! Only what a G.711 relay needs is modelled: the first `m=audio` section, its connection
//! address, port, payload types (rtpmap), telephone-event, direction, ptime and `a=rtcp`.
//! Everything is line based; `\r\n` and `\n` are both accepted, `\r\n` is written.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::MediaError;

/// Media direction (RFC 3264), from the point of view of the SDP's author.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Both ways.
    #[default]
    SendRecv,
    /// The author only sends (the other side holds).
    SendOnly,
    /// The author only receives.
    RecvOnly,
    /// No media.
    Inactive,
}

impl Direction {
    /// The attribute name.
    pub fn attr(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }

    fn from_attr(a: &str) -> Option<Self> {
        Some(match a {
            "sendrecv" => Self::SendRecv,
            "sendonly" => Self::SendOnly,
            "recvonly" => Self::RecvOnly,
            "inactive" => Self::Inactive,
            _ => return None,
        })
    }

    /// `c=0.0.0.0` (RFC 2543 hold) means "do not send to me": the author can only send.
    fn without_receiving(self) -> Self {
        match self {
            Self::SendRecv | Self::SendOnly => Self::SendOnly,
            Self::RecvOnly | Self::Inactive => Self::Inactive,
        }
    }

    /// This answer's direction made consistent with the offer's (RFC 3264 §6.1): the answerer
    /// sends only if the offerer receives, and receives only if the offerer sends. Not every
    /// engine gets this right (webrtc-rs answers `sendrecv` to `sendonly`).
    pub fn answering(self, offer: Self) -> Self {
        match (
            self.sends() && offer.receives(),
            self.receives() && offer.sends(),
        ) {
            (true, true) => Self::SendRecv,
            (true, false) => Self::SendOnly,
            (false, true) => Self::RecvOnly,
            (false, false) => Self::Inactive,
        }
    }

    /// Whether the author receives media.
    pub fn receives(self) -> bool {
        matches!(self, Self::SendRecv | Self::RecvOnly)
    }

    /// Whether the author sends media.
    pub fn sends(self) -> bool {
        matches!(self, Self::SendRecv | Self::SendOnly)
    }
}

/// The two G.711 laws, the only codecs relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum G711 {
    /// μ-law, static PT 0.
    Pcmu,
    /// A-law, static PT 8.
    Pcma,
}

impl G711 {
    /// The encoding name as in `a=rtpmap`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pcmu => "PCMU",
            Self::Pcma => "PCMA",
        }
    }

    /// The static payload type.
    pub fn static_pt(self) -> u8 {
        match self {
            Self::Pcmu => 0,
            Self::Pcma => 8,
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("PCMU") {
            Some(Self::Pcmu)
        } else if name.eq_ignore_ascii_case("PCMA") {
            Some(Self::Pcma)
        } else {
            None
        }
    }
}

/// One payload type of an `m=` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    /// The payload type.
    pub pt: u8,
    /// Encoding name (from `a=rtpmap`, or the static table for 0 and 8).
    pub name: String,
    /// Clock rate.
    pub rate: u32,
}

/// The audio part of an SDP (plain or WebRTC) as far as the relay cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioSdp {
    /// The connection address; `None` for `0.0.0.0`/`::` (hold).
    pub addr: Option<IpAddr>,
    /// The `m=audio` port (never 0: a rejected stream is an error).
    pub port: u16,
    /// The transport protocol of the `m=` line (`RTP/AVP`, `UDP/TLS/RTP/SAVPF` ...).
    pub proto: String,
    /// Payload types in the `m=` line's order.
    pub formats: Vec<Format>,
    /// The effective direction (`c=0.0.0.0` folded in).
    pub direction: Direction,
    /// `a=ptime`.
    pub ptime: Option<u32>,
    /// `a=rtcp:` port, when the author's RTCP is not on port+1.
    pub rtcp_port: Option<u16>,
}

impl AudioSdp {
    /// The first PCMU/PCMA in the author's preference order, with its PT.
    pub fn first_g711(&self) -> Option<(G711, u8)> {
        self.formats.iter().find_map(|f| {
            (f.rate == 8000)
                .then(|| G711::from_name(&f.name))
                .flatten()
                .map(|c| (c, f.pt))
        })
    }

    /// The PT of the given law, if offered.
    pub fn pt_of(&self, codec: G711) -> Option<u8> {
        self.formats
            .iter()
            .find(|f| f.rate == 8000 && G711::from_name(&f.name) == Some(codec))
            .map(|f| f.pt)
    }

    /// The PT of telephone-event/8000, if offered.
    pub fn dtmf_pt(&self) -> Option<u8> {
        self.formats
            .iter()
            .find(|f| f.rate == 8000 && f.name.eq_ignore_ascii_case("telephone-event"))
            .map(|f| f.pt)
    }

    /// The G.711 laws offered, in the author's order.
    pub fn g711s(&self) -> Vec<G711> {
        let mut v = Vec::new();
        for f in &self.formats {
            if let Some(c) = G711::from_name(&f.name).filter(|_| f.rate == 8000) {
                if !v.contains(&c) {
                    v.push(c);
                }
            }
        }
        v
    }
}

fn bad(m: impl Into<String>) -> MediaError {
    MediaError::BadSdp(m.into())
}

fn lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty())
}

/// Parses the first `m=audio` section of a plain (PBX) SDP; `c=0.0.0.0` counts as hold.
///
/// # Errors
/// [`MediaError::BadSdp`] when the text is not UTF-8, has no `m=audio`, a rejected (port 0)
/// audio stream, no connection address, or a broken `m=`/`c=` line.
pub fn parse_plain(sdp: &[u8]) -> Result<AudioSdp, MediaError> {
    parse_audio(sdp, false)
}

/// Parses the first `m=audio` section of a WebRTC SDP: `c=IN IP4 0.0.0.0` and port 9 are the
/// usual placeholders there (ICE decides the address), not hold.
///
/// # Errors
/// As [`parse_plain`], except that a missing `c=` is fine.
pub fn parse_webrtc(sdp: &[u8]) -> Result<AudioSdp, MediaError> {
    parse_audio(sdp, true)
}

fn parse_audio(sdp: &[u8], webrtc: bool) -> Result<AudioSdp, MediaError> {
    let text = std::str::from_utf8(sdp).map_err(|_| bad("not UTF-8"))?;
    let mut session_c = None;
    let mut session_dir = None;
    let mut media: Option<AudioSdp> = None;
    let mut media_c = None;
    let mut media_dir = None;
    let mut rtpmaps: Vec<(u8, String, u32)> = Vec::new();
    let mut in_audio = false;
    let mut seen_media = false;
    for line in lines(text) {
        if let Some(m) = line.strip_prefix("m=") {
            if media.is_some() {
                break; // only the first audio section matters
            }
            seen_media = true;
            in_audio = m.starts_with("audio ");
            if in_audio {
                media = Some(parse_m_line(m)?);
            }
            continue;
        }
        if seen_media && !in_audio {
            continue;
        }
        if let Some(c) = line.strip_prefix("c=") {
            let addr = parse_c_line(c)?;
            if seen_media {
                media_c = Some(addr)
            } else {
                session_c = Some(addr)
            }
        } else if let Some(a) = line.strip_prefix("a=") {
            let (name, value) = a.split_once(':').unwrap_or((a, ""));
            if let Some(d) = Direction::from_attr(name) {
                if seen_media {
                    media_dir = Some(d)
                } else {
                    session_dir = Some(d)
                }
            } else if !seen_media {
                continue;
            } else if name == "rtpmap" {
                rtpmaps.push(parse_rtpmap(value)?);
            } else if name == "ptime" {
                if let (Some(m), Ok(p)) = (media.as_mut(), value.trim().parse()) {
                    m.ptime = Some(p);
                }
            } else if name == "rtcp" {
                if let (Some(m), Some(Ok(p))) = (
                    media.as_mut(),
                    value.split_whitespace().next().map(str::parse),
                ) {
                    m.rtcp_port = Some(p);
                }
            }
        }
    }
    let mut m = media.ok_or_else(|| bad("no m=audio"))?;
    let addr = match media_c.or(session_c) {
        Some(a) => a,
        None if webrtc => None,
        None => return Err(bad("no c= line")),
    };
    m.addr = addr;
    m.direction = media_dir.or(session_dir).unwrap_or_default();
    if addr.is_none() && !webrtc {
        m.direction = m.direction.without_receiving();
    }
    for f in &mut m.formats {
        if let Some((_, name, rate)) = rtpmaps.iter().find(|(pt, ..)| *pt == f.pt) {
            f.name.clone_from(name);
            f.rate = *rate;
        }
    }
    Ok(m)
}

fn parse_m_line(m: &str) -> Result<AudioSdp, MediaError> {
    let mut it = m.split_whitespace();
    let (_, port, proto) = (it.next(), it.next(), it.next());
    let port = port
        .and_then(|p| p.split('/').next()?.parse::<u16>().ok())
        .ok_or_else(|| bad("bad m= port"))?;
    if port == 0 {
        return Err(bad("the audio stream is rejected (port 0)"));
    }
    let proto = proto.ok_or_else(|| bad("m= without protocol"))?.to_owned();
    let formats = it
        .map(|f| {
            let pt: u8 = f
                .parse()
                .map_err(|_| bad(format!("bad payload type `{f}`")))?;
            let (name, rate) = match pt {
                0 => ("PCMU", 8000),
                8 => ("PCMA", 8000),
                _ => ("", 0),
            };
            Ok(Format {
                pt,
                name: name.to_owned(),
                rate,
            })
        })
        .collect::<Result<Vec<_>, MediaError>>()?;
    Ok(AudioSdp {
        addr: None,
        port,
        proto,
        formats,
        direction: Direction::SendRecv,
        ptime: None,
        rtcp_port: None,
    })
}

fn parse_c_line(c: &str) -> Result<Option<IpAddr>, MediaError> {
    let addr = c
        .split_whitespace()
        .nth(2)
        .ok_or_else(|| bad("bad c= line"))?;
    let addr = addr.split('/').next().unwrap_or(addr);
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| bad(format!("c= address `{addr}` is not an IP address")))?;
    Ok((!ip.is_unspecified()).then_some(ip))
}

fn parse_rtpmap(v: &str) -> Result<(u8, String, u32), MediaError> {
    let (pt, enc) = v.split_once(' ').ok_or_else(|| bad("bad a=rtpmap"))?;
    let pt = pt
        .trim()
        .parse()
        .map_err(|_| bad("bad a=rtpmap payload type"))?;
    let mut parts = enc.trim().split('/');
    let name = parts.next().unwrap_or_default().to_owned();
    let rate = parts
        .next()
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| bad("bad a=rtpmap clock rate"))?;
    Ok((pt, name, rate))
}

/// What we put in a plain SDP for the PBX.
#[derive(Debug, Clone)]
pub struct PlainParams<'a> {
    /// `o=` session id (stable per session).
    pub session_id: u64,
    /// `o=` version (incremented for every new SDP of the session).
    pub version: u64,
    /// Our address for the PBX.
    pub ip: IpAddr,
    /// Our RTP port (RTCP is on port+1).
    pub port: u16,
    /// The codecs in preference order, with their PTs.
    pub codecs: &'a [(G711, u8)],
    /// telephone-event/8000 PT, if negotiated.
    pub dtmf_pt: Option<u8>,
    /// Our direction.
    pub direction: Direction,
    /// `a=ptime`.
    pub ptime: u32,
}

/// Builds a plain RTP/AVP SDP (offer or answer) for the PBX.
pub fn build_plain(p: &PlainParams<'_>) -> String {
    let fam = if p.ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut s = String::with_capacity(320);
    let _ = write!(
        s,
        "v=0\r\no=callgate {} {} IN {fam} {}\r\ns=callgate\r\n",
        p.session_id, p.version, p.ip
    );
    let _ = write!(
        s,
        "c=IN {fam} {}\r\nt=0 0\r\nm=audio {} RTP/AVP",
        p.ip, p.port
    );
    for (_, pt) in p.codecs {
        let _ = write!(s, " {pt}");
    }
    if let Some(pt) = p.dtmf_pt {
        let _ = write!(s, " {pt}");
    }
    s.push_str("\r\n");
    for (c, pt) in p.codecs {
        let _ = write!(s, "a=rtpmap:{pt} {}/8000\r\n", c.name());
    }
    if let Some(pt) = p.dtmf_pt {
        let _ = write!(
            s,
            "a=rtpmap:{pt} telephone-event/8000\r\na=fmtp:{pt} 0-16\r\n"
        );
    }
    let _ = write!(s, "a=ptime:{}\r\na={}\r\n", p.ptime, p.direction.attr());
    s
}

/// Keeps only the payload types in `keep` (the codec first, then telephone-event) in the first `m=audio` section of a WebRTC SDP
/// (the `m=` format list and the `a=rtpmap`/`a=fmtp`/`a=rtcp-fb` lines of the others go), so
/// that the WebRTC engine can only answer with what the PBX leg uses.
///
/// # Errors
/// [`MediaError::NoCommonCodec`] when nothing in `keep` is in the audio section.
pub fn keep_formats(sdp: &str, keep: &[u8]) -> Result<String, MediaError> {
    let mut out = String::with_capacity(sdp.len());
    let mut section = Section::Session;
    for line in lines(sdp) {
        if let Some(m) = line.strip_prefix("m=") {
            section = if section == Section::Session && m.starts_with("audio ") {
                Section::Audio
            } else {
                Section::Other
            };
            if section == Section::Audio {
                let mut it = m.split_whitespace();
                let head: Vec<&str> = it.by_ref().take(3).collect();
                let kept: Vec<&str> = it
                    .filter(|f| f.parse::<u8>().is_ok_and(|pt| keep.contains(&pt)))
                    .collect();
                if !kept
                    .iter()
                    .any(|f| f.parse::<u8>().ok() == keep.first().copied())
                {
                    return Err(MediaError::NoCommonCodec);
                }
                let _ = write!(out, "m={} {}\r\n", head.join(" "), kept.join(" "));
                continue;
            }
        } else if section == Section::Audio && is_dropped_format_line(line, keep) {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    Ok(out)
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Section {
    Session,
    Audio,
    Other,
}

fn is_dropped_format_line(line: &str, keep: &[u8]) -> bool {
    for prefix in ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"] {
        if let Some(rest) = line.strip_prefix(prefix) {
            let pt = rest.split(' ').next().unwrap_or_default();
            return pt != "*" && !pt.parse::<u8>().is_ok_and(|pt| keep.contains(&pt));
        }
    }
    false
}

/// The DTLS role an `a=setup` value gives its author once negotiated: `active` is the DTLS
/// client, `passive` the server; `actpass` (offers only) is not a role yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtlsRole {
    /// `a=setup:active` (DTLS client).
    Active,
    /// `a=setup:passive` (DTLS server).
    Passive,
}

impl DtlsRole {
    fn attr(self) -> &'static str {
        match self {
            Self::Active => "a=setup:active",
            Self::Passive => "a=setup:passive",
        }
    }

    /// The other end's role.
    pub fn peer(self) -> Self {
        match self {
            Self::Active => Self::Passive,
            Self::Passive => Self::Active,
        }
    }
}

/// The negotiated role in an SDP's first `a=setup` (`None` for `actpass` or none).
pub fn dtls_role(sdp: &str) -> Option<DtlsRole> {
    lines(sdp).find_map(|l| match l.strip_prefix("a=setup:")?.trim() {
        "active" => Some(DtlsRole::Active),
        "passive" => Some(DtlsRole::Passive),
        _ => None,
    })
}

/// Rewrites every `a=setup` to `role`: once DTLS is up, later offers and answers must keep the
/// established roles (RFC 5763 §5, JSEP §5.3.1), or the browser starts a new handshake that our
/// engine, whose DTLS transport keeps running, never answers.
pub fn set_dtls_role(sdp: &str, role: DtlsRole) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in lines(sdp) {
        out.push_str(if line.starts_with("a=setup:") {
            role.attr()
        } else {
            line
        });
        out.push_str("\r\n");
    }
    out
}

/// Sets the direction attribute of the first audio section (replacing any, at session or media
/// level) in a WebRTC SDP we generated.
pub fn set_direction(sdp: &str, dir: Direction) -> String {
    let mut out = String::with_capacity(sdp.len() + 16);
    let mut section = Section::Session;
    let mut written = false;
    for line in lines(sdp) {
        if let Some(m) = line.strip_prefix("m=") {
            if section == Section::Audio && !written {
                let _ = write!(out, "a={}\r\n", dir.attr());
                written = true;
            }
            section = if section == Section::Session && m.starts_with("audio ") {
                Section::Audio
            } else {
                Section::Other
            };
        } else if section != Section::Other
            && line
                .strip_prefix("a=")
                .and_then(Direction::from_attr)
                .is_some()
        {
            if section == Section::Audio && !written {
                let _ = write!(out, "a={}\r\n", dir.attr());
                written = true;
            }
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    if section == Section::Audio && !written {
        let _ = write!(out, "a={}\r\n", dir.attr());
    }
    out
}

#[cfg(test)]
mod tests;
