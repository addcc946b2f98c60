//! The plain RTP leg toward the PBX: an RTP/RTCP socket pair from `rtp_ports` (even port RTP,
//! +1 RTCP), the PBX's address from its SDP, then latched onto the actual source port of the
//! first RTP packet from that address (symmetric RTP, RFC 4961: a PBX behind a port-translating
//! NAT sends from where it wants to receive), and a minimal RTCP of our own: an SR (or RR before
//! we sent anything) + SDES CNAME every [`RTCP_INTERVAL`]. The PBX's RTCP is received and counted
//! but not interpreted.
//!
//! Who may be the PBX: only the IP address the PBX's SDP named (`c=`). A packet from any other
//! address is [`Source::Foreign`], before and after latching, RTP and RTCP alike: an attacker
//! spraying the port range can neither take the latch (and with it the agent's voice) nor
//! re-point our RTCP. A port change from the SDP's address is fine (NAT); once latched, only that
//! source is the PBX until a new SDP moves it.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use parking_lot::Mutex;
use tokio::net::UdpSocket;

use super::ports::{PortLease, PortPool};
use super::{ports_exhausted, MediaError};

/// Our RTCP report interval toward the PBX (RFC 3550's 5 s minimum).
pub(crate) const RTCP_INTERVAL: Duration = Duration::from_secs(5);
/// Ports tried before giving up when some in the range are taken by other processes.
const BIND_ATTEMPTS: usize = 16;

/// Where the PBX's media goes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Remote {
    /// RTP destination (from SDP, then the latched source).
    pub(crate) rtp: Option<SocketAddr>,
    /// RTCP destination (`a=rtcp`, port+1, or the latched RTCP source).
    pub(crate) rtcp: Option<SocketAddr>,
    /// Whether `rtp` came from a received packet.
    pub(crate) latched: bool,
    /// The RTP address the PBX's last SDP gave.
    pub(crate) from_sdp: Option<SocketAddr>,
}

/// Who a datagram on the PBX leg came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The PBX (the latched source, or RTCP from the SDP's address).
    Pbx,
    /// The SDP's address but not the PBX's stream: not RTP, or another port after latching.
    Other,
    /// Any other address (or no SDP yet): dropped and counted.
    Foreign,
}

/// Whether two addresses are the same host (an IPv4-mapped IPv6 source equals its IPv4 form).
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

/// The socket pair and the PBX's address.
pub(crate) struct PbxLeg {
    pub(crate) rtp: UdpSocket,
    pub(crate) rtcp: UdpSocket,
    pub(crate) local_port: u16,
    // Written on SDP updates and on latching, read per packet; never held across an await.
    remote: Mutex<Remote>,
}

impl PbxLeg {
    /// Binds a free pair from `pool` on `ip`.
    ///
    /// # Errors
    /// [`MediaError::PortsExhausted`] when no pair could be bound.
    pub(crate) async fn bind(ip: IpAddr, pool: &PortPool) -> Result<(Self, PortLease), MediaError> {
        for _ in 0..BIND_ATTEMPTS {
            let Some(lease) = pool.take() else { break };
            let port = lease.port();
            let Ok(rtp) = UdpSocket::bind((ip, port)).await else {
                continue;
            };
            // The pool hands out only ports whose +1 is in the range.
            let Some(rtcp_port) = port.checked_add(1) else {
                continue;
            };
            let Ok(rtcp) = UdpSocket::bind((ip, rtcp_port)).await else {
                continue;
            };
            let leg = Self {
                rtp,
                rtcp,
                local_port: port,
                remote: Mutex::new(Remote::default()),
            };
            return Ok((leg, lease));
        }
        Err(ports_exhausted("rtp_ports"))
    }

    /// The PBX's SDP said where it wants media. A new address forgets the latched source; the
    /// same address again (a re-INVITE) keeps it. `addr` is `None` on hold (`c=0.0.0.0`): the
    /// old destination is kept. An RTCP port of 0 (or none past 65535) means no RTCP.
    pub(crate) fn set_from_sdp(&self, addr: Option<IpAddr>, port: u16, rtcp_port: Option<u16>) {
        let Some(ip) = addr else { return };
        let mut r = self.remote.lock();
        let rtp = SocketAddr::new(ip, port);
        if r.from_sdp != Some(rtp) {
            let rtcp = rtcp_port
                .or_else(|| port.checked_add(1))
                .filter(|p| *p != 0);
            *r = Remote {
                rtp: Some(rtp),
                rtcp: rtcp.map(|p| SocketAddr::new(ip, p)),
                latched: false,
                from_sdp: Some(rtp),
            };
        }
    }

    /// Who sent an RTP datagram from `from` (`is_rtp`: it parsed as RTP). The first RTP
    /// packet from the SDP's address latches its source port (symmetric RTP); after that only
    /// that source is the PBX, until an SDP moves it.
    pub(crate) fn rtp_source(&self, from: SocketAddr, is_rtp: bool) -> Source {
        let mut r = self.remote.lock();
        if !r.from_sdp.is_some_and(|sdp| same_ip(sdp.ip(), from.ip())) {
            return Source::Foreign;
        }
        if !is_rtp {
            return Source::Other;
        }
        if r.latched {
            return if r.rtp == Some(from) {
                Source::Pbx
            } else {
                Source::Other
            };
        }
        if r.rtp != Some(from) {
            // The RTCP source usually moves with it (NAT keeps the port pair only by luck).
            if let Some(port) = from.port().checked_add(1) {
                r.rtcp = Some(SocketAddr::new(from.ip(), port));
            }
        }
        r.rtp = Some(from);
        r.latched = true;
        Source::Pbx
    }

    /// RTCP from `from`: when it is the PBX's (the SDP's address), its source becomes our RTCP
    /// destination; a foreign source changes nothing.
    pub(crate) fn rtcp_source(&self, from: SocketAddr) -> Source {
        let mut r = self.remote.lock();
        if !r.from_sdp.is_some_and(|sdp| same_ip(sdp.ip(), from.ip())) {
            return Source::Foreign;
        }
        r.rtcp = Some(from);
        Source::Pbx
    }

    pub(crate) fn remote(&self) -> Remote {
        *self.remote.lock()
    }

    /// Sends one RTP datagram to the PBX without waiting (a full socket buffer drops it, like
    /// the network would).
    pub(crate) fn send_rtp(&self, buf: &[u8]) -> bool {
        let Some(to) = self.remote().rtp else {
            return false;
        };
        self.rtp.try_send_to(buf, to).is_ok()
    }
}

/// What our RTCP report says about the stream we send to the PBX.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SenderInfo {
    pub(crate) ssrc: u32,
    pub(crate) packets: u32,
    pub(crate) octets: u32,
    pub(crate) last_ts: u32,
}

/// An RTCP compound packet: SR (or RR when nothing was sent yet) + SDES CNAME.
pub(crate) fn rtcp_report(info: SenderInfo, cname: &str, now: SystemTime) -> BytesMut {
    let mut b = BytesMut::with_capacity(64);
    if info.packets > 0 {
        // NTP time: seconds since 1900 and a 32-bit fraction.
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs().wrapping_add(2_208_988_800) as u32;
        let frac = ((u64::from(since.subsec_nanos()) << 32) / 1_000_000_000) as u32;
        b.put_u8(0x80);
        b.put_u8(200);
        b.put_u16(6);
        b.put_u32(info.ssrc);
        b.put_u32(secs);
        b.put_u32(frac);
        b.put_u32(info.last_ts);
        b.put_u32(info.packets);
        b.put_u32(info.octets);
    } else {
        b.put_u8(0x80);
        b.put_u8(201);
        b.put_u16(1);
        b.put_u32(info.ssrc);
    }
    let name = &cname.as_bytes()[..cname.len().min(255)];
    // SSRC + type + len + text + END, padded to 32-bit words.
    let body = 4 + 2 + name.len() + 1;
    let words = body.div_ceil(4);
    b.put_u8(0x81);
    b.put_u8(202);
    b.put_u16(words as u16);
    b.put_u32(info.ssrc);
    b.put_u8(1);
    b.put_u8(name.len() as u8);
    b.put_slice(name);
    b.put_bytes(0, words * 4 - (body - 1));
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtcp_reports_are_well_formed_compounds() {
        for (packets, first_pt, first_len) in [(0u32, 201u8, 8usize), (10, 200, 28)] {
            let info = SenderInfo {
                ssrc: 0x1234_5678,
                packets,
                octets: 1600,
                last_ts: 99,
            };
            let b = rtcp_report(info, "callgate@1", UNIX_EPOCH + Duration::from_secs(1));
            assert_eq!(b[1], first_pt);
            // Every packet's length field (in words minus one) must walk exactly to the end.
            let mut off = 0;
            let mut seen = Vec::new();
            while off < b.len() {
                assert_eq!(b[off] >> 6, 2, "version");
                seen.push(b[off + 1]);
                off += 4 * (usize::from(u16::from_be_bytes([b[off + 2], b[off + 3]])) + 1);
            }
            assert_eq!(off, b.len());
            assert_eq!(seen, vec![first_pt, 202]);
            assert_eq!(u32::from_be_bytes([b[4], b[5], b[6], b[7]]), 0x1234_5678);
            assert_eq!(
                usize::from(u16::from_be_bytes([b[2], b[3]]) + 1) * 4,
                first_len
            );
            assert_eq!(b.len() % 4, 0);
        }
    }

    async fn leg() -> (PbxLeg, PortLease) {
        let pool = PortPool::new((31_000, 31_999), 2).unwrap();
        PbxLeg::bind("127.0.0.1".parse().unwrap(), &pool)
            .await
            .unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn latches_onto_the_first_source_from_the_sdp_address_then_only_that_one() {
        let (leg, _lease) = leg().await;
        leg.set_from_sdp(Some("127.0.0.1".parse().unwrap()), 4000, None);
        assert_eq!(leg.remote().rtcp, Some(sa("127.0.0.1:4001")));
        // A port change from the SDP's address is fine (NAT): the latch follows it.
        let nat = sa("127.0.0.1:5000");
        assert_eq!(leg.rtp_source(nat, true), Source::Pbx);
        assert_eq!(leg.rtp_source(nat, true), Source::Pbx);
        assert_eq!(
            leg.rtp_source(sa("127.0.0.1:6000"), true),
            Source::Other,
            "a second stream after latching"
        );
        assert_eq!(
            (leg.remote().rtp, leg.remote().rtcp),
            (Some(nat), Some(sa("127.0.0.1:5001")))
        );
        // A re-INVITE with the same address keeps the latch; hold (no address) keeps it too.
        leg.set_from_sdp(None, 4000, None);
        leg.set_from_sdp(Some("127.0.0.1".parse().unwrap()), 4000, None);
        assert_eq!((leg.remote().rtp, leg.remote().latched), (Some(nat), true));
        leg.set_from_sdp(Some("127.0.0.2".parse().unwrap()), 4100, Some(4200));
        let r = leg.remote();
        assert_eq!(
            (r.rtp, r.rtcp, r.latched),
            (
                Some(sa("127.0.0.2:4100")),
                Some(sa("127.0.0.2:4200")),
                false
            )
        );
        assert_eq!(
            leg.rtp_source(nat, true),
            Source::Foreign,
            "the old address is nobody once the SDP moved"
        );
    }

    #[tokio::test]
    async fn another_address_never_takes_the_latch_or_the_rtcp_before_or_after_latching() {
        let (leg, _lease) = leg().await;
        let attacker = sa("127.0.0.5:17000");
        // No SDP yet: nobody is the PBX.
        assert_eq!(leg.rtp_source(sa("127.0.0.1:4000"), true), Source::Foreign);
        leg.set_from_sdp(Some("127.0.0.1".parse().unwrap()), 4000, Some(4001));
        // Before the PBX's first packet the attacker sprays RTP and RTCP: nothing moves.
        for _ in 0..3 {
            assert_eq!(leg.rtp_source(attacker, true), Source::Foreign);
            assert_eq!(leg.rtcp_source(attacker), Source::Foreign);
        }
        let r = leg.remote();
        assert_eq!(
            (r.rtp, r.rtcp, r.latched),
            (
                Some(sa("127.0.0.1:4000")),
                Some(sa("127.0.0.1:4001")),
                false
            )
        );
        // Garbage from the PBX's address does not latch either; its first RTP packet does.
        assert_eq!(leg.rtp_source(sa("127.0.0.1:4000"), false), Source::Other);
        assert!(!leg.remote().latched);
        assert_eq!(leg.rtp_source(sa("127.0.0.1:4000"), true), Source::Pbx);
        // After latching: still foreign, and the PBX's own RTCP may move our RTCP destination.
        assert_eq!(leg.rtp_source(attacker, true), Source::Foreign);
        assert_eq!(leg.rtcp_source(attacker), Source::Foreign);
        assert_eq!(leg.rtcp_source(sa("127.0.0.1:4555")), Source::Pbx);
        let r = leg.remote();
        assert_eq!(
            (r.rtp, r.rtcp, r.latched),
            (Some(sa("127.0.0.1:4000")), Some(sa("127.0.0.1:4555")), true)
        );
    }

    #[tokio::test]
    async fn edge_ports_and_mapped_addresses() {
        let (leg, _lease) = leg().await;
        // The last port has no +1: no RTCP destination rather than port 0 (or a panic).
        leg.set_from_sdp(Some("127.0.0.1".parse().unwrap()), 65_535, None);
        assert_eq!(leg.remote().rtcp, None);
        leg.set_from_sdp(Some("127.0.0.1".parse().unwrap()), 4000, Some(0));
        assert_eq!(leg.remote().rtcp, None, "a=rtcp:0 is no address");
        // A source at port 65535 latches; its RTCP guess would overflow and is left alone.
        assert_eq!(leg.rtp_source(sa("127.0.0.1:65535"), true), Source::Pbx);
        assert_eq!(leg.remote().rtcp, None);
        // A dual-stack socket sees IPv4 sources as IPv4-mapped IPv6: the same host.
        leg.set_from_sdp(Some("127.0.0.1".parse().unwrap()), 4100, None);
        assert_eq!(
            leg.rtp_source(sa("[::ffff:127.0.0.1]:4100"), true),
            Source::Pbx
        );
        assert_eq!(
            leg.rtp_source(sa("[::ffff:127.0.0.5]:4100"), true),
            Source::Foreign
        );
    }
}
