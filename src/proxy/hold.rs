//! Whether an SDP offer in a re-INVITE or UPDATE puts the other side on hold (RFC 3264 §8.4,
//! RFC 6337 §5), read from the offer as its sender wrote it: the proxy is given the sender's
//! SDP, not the media bridge's rewrite of it (`edge`), so a browser agent's WebRTC SDP is
//! never judged by what callgate sends the PBX, nor the PBX's by what the browser is sent.
//!
//! The rule, per audio section that is not rejected (port 0), with its session-level defaults:
//! - a direction attribute decides: `a=sendonly` or `a=inactive` is a hold, `a=sendrecv` or
//!   `a=recvonly` is none (an explicit direction always wins over the address);
//! - without one, `c=IN IP4 0.0.0.0` (or `::`) is the RFC 2543 hold, unless the section uses ICE
//!   (`a=ice-ufrag`, `a=candidate`, or the WebRTC profile `UDP/TLS/RTP/SAVPF`): there `0.0.0.0`
//!   is only the placeholder address of RFC 8839 §4.2.1 and ICE picks the real one;
//! - the offer holds when it has such a section and every one of them holds. An offer with no
//!   audio section (or only rejected ones) reads as no hold.
//!
//! Pure: bytes in, a `bool` out. Malformed lines are skipped, never an error.

/// What one media section (with its session-level defaults) says.
#[derive(Debug, Default, Clone, Copy)]
struct Section {
    audio: bool,
    rejected: bool,
    /// Held by a direction attribute: `Some(true)` sendonly/inactive, `Some(false)` sendrecv/recvonly.
    direction: Option<bool>,
    /// The connection address is the unspecified one (`0.0.0.0`, `::`).
    null_address: Option<bool>,
    ice: bool,
}

impl Section {
    fn holds(&self) -> bool {
        self.direction.unwrap_or_else(|| self.null_address == Some(true) && !self.ice)
    }

    /// Applies one `c=` or `a=` line.
    fn apply(&mut self, line: &[u8]) {
        if let Some(c) = line.strip_prefix(b"c=") {
            self.null_address = Some(null_address(c));
        } else if let Some(a) = line.strip_prefix(b"a=") {
            match a {
                b"sendonly" | b"inactive" => self.direction = Some(true),
                b"sendrecv" | b"recvonly" => self.direction = Some(false),
                _ if a.starts_with(b"ice-ufrag:") || a.starts_with(b"candidate:") || a == b"ice-lite" => self.ice = true,
                _ => {}
            }
        }
    }

    /// A section from its `m=` line, inheriting the session level.
    fn media(m: &[u8], session: Self) -> Self {
        let mut fields = m.split(|&b| b == b' ').filter(|f| !f.is_empty());
        let audio = fields.next() == Some(b"audio");
        let rejected = fields.next().is_some_and(|port| port == b"0");
        let webrtc = fields.next().is_some_and(|proto| proto.eq_ignore_ascii_case(b"UDP/TLS/RTP/SAVPF"));
        Self { audio, rejected, ice: session.ice || webrtc, ..session }
    }
}

/// Whether the SDP `body` offered in a re-INVITE or UPDATE puts the other side on hold (see the
/// module doc for the rule).
pub(crate) fn holds(body: &[u8]) -> bool {
    let mut session = Section::default();
    let mut sections: Vec<Section> = Vec::new();
    for line in body.split(|&b| b == b'\n').map(<[u8]>::trim_ascii) {
        if let Some(m) = line.strip_prefix(b"m=") {
            sections.push(Section::media(m, session));
        } else if let Some(current) = sections.last_mut() {
            current.apply(line);
        } else {
            session.apply(line);
        }
    }
    let mut audio = sections.iter().filter(|s| s.audio && !s.rejected).peekable();
    audio.peek().is_some() && audio.all(Section::holds)
}

/// `IN IP4 0.0.0.0` or `IN IP6 ::` (the unspecified address, with or without a TTL suffix).
fn null_address(c: &[u8]) -> bool {
    let addr = c.split(|&b| b == b' ').filter(|f| !f.is_empty()).nth(2).unwrap_or_default();
    let addr = addr.split(|&b| b == b'/').next().unwrap_or_default();
    matches!(addr, b"0.0.0.0" | b"::")
}

#[cfg(test)]
mod tests {
    use super::holds;

    fn plain(lines: &str) -> String {
        format!("v=0\r\no=pbx 1 2 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n{lines}")
    }

    /// A browser's offer as Chrome writes it: ICE, the placeholder `c=IN IP4 0.0.0.0`.
    fn webrtc(direction: &str) -> String {
        format!(
            "v=0\r\no=- 4611 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0 8\r\nc=IN IP4 0.0.0.0\r\n\
             a=rtcp:9 IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdef012345\r\na=fingerprint:sha-256 AA:BB\r\na=setup:actpass\r\n\
             a=mid:0\r\n{direction}a=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n"
        )
    }

    #[test]
    fn direction_attributes_decide() {
        assert!(holds(plain("a=sendonly\r\n").as_bytes()));
        assert!(holds(plain("a=inactive\r\n").as_bytes()));
        assert!(!holds(plain("a=sendrecv\r\n").as_bytes()), "a session refresh or an unhold");
        assert!(!holds(plain("a=recvonly\r\n").as_bytes()), "the answer side of a hold");
        assert!(!holds(plain("").as_bytes()), "sendrecv by default");
    }

    #[test]
    fn the_rfc_2543_hold_is_a_null_address_without_a_direction() {
        let old = "v=0\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        assert!(holds(old.as_bytes()));
        assert!(holds(b"v=0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP6 ::\r\n"));
        assert!(holds(b"v=0\nt=0 0\nm=audio 4000 RTP/AVP 0\nc=IN IP4 0.0.0.0/127\n"), "bare LF, a TTL");
        assert!(holds(b"v=0\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n"));
        // An explicit direction wins over the address.
        assert!(!holds(b"v=0\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendrecv\r\n"));
        // A media-level address overrides the session's.
        assert!(!holds(b"v=0\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 10.0.0.2\r\n"));
    }

    #[test]
    fn webrtcs_placeholder_address_is_no_hold() {
        assert!(!holds(webrtc("a=sendrecv\r\n").as_bytes()));
        assert!(!holds(webrtc("").as_bytes()), "ICE: 0.0.0.0 is a placeholder");
        assert!(holds(webrtc("a=sendonly\r\n").as_bytes()), "the browser holds");
        assert!(holds(webrtc("a=inactive\r\n").as_bytes()));
        // ICE-lite offers (callgate's own toward a browser) and bare candidates count as ICE too.
        assert!(!holds(b"v=0\r\na=ice-lite\r\nt=0 0\r\nm=audio 9 RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\n"));
        assert!(!holds(b"v=0\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\na=candidate:1 1 udp 1 10.0.0.1 5000 typ host\r\n"));
    }

    #[test]
    fn only_audio_sections_that_are_not_rejected_count() {
        let video_held = "v=0\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendrecv\r\nm=video 5000 RTP/AVP 96\r\na=sendonly\r\n";
        assert!(!holds(video_held.as_bytes()));
        let both = "v=0\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\nm=audio 0 RTP/AVP 0\r\n";
        assert!(holds(both.as_bytes()), "the rejected second stream does not count");
        assert!(holds(b"v=0\r\nt=0 0\r\na=sendonly\r\nm=audio 4000 RTP/AVP 0\r\nc=IN IP4 10.0.0.1\r\n"), "a session-level direction");
        assert!(!holds(b"v=0\r\nt=0 0\r\na=sendonly\r\nm=audio 4000 RTP/AVP 0\r\na=sendrecv\r\n"), "the media level overrides it");
        assert!(!holds(b"v=0\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"), "no media at all");
        assert!(!holds(b"not sdp at all"));
        assert!(!holds(b""));
    }
}
