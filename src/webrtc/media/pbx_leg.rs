//! The plain RTP leg toward the PBX: an RTP/RTCP socket pair from `rtp_ports` (even port RTP,
//! +1 RTCP), the PBX's address from its SDP, then latched onto the actual source of the first
//! packet (symmetric RTP, RFC 4961: a PBX behind NAT sends from where it wants to receive), and
//! a minimal RTCP of our own: an SR (or RR before we sent anything) + SDES CNAME every
//! [`RTCP_INTERVAL`]. The PBX's RTCP is received and counted but not interpreted.

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
            let Ok(rtcp) = UdpSocket::bind((ip, port + 1)).await else {
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
    /// old destination is kept.
    pub(crate) fn set_from_sdp(&self, addr: Option<IpAddr>, port: u16, rtcp_port: Option<u16>) {
        let Some(ip) = addr else { return };
        let mut r = self.remote.lock();
        let rtp = SocketAddr::new(ip, port);
        if r.from_sdp != Some(rtp) {
            *r = Remote {
                rtp: Some(rtp),
                rtcp: Some(SocketAddr::new(
                    ip,
                    rtcp_port.unwrap_or(port.wrapping_add(1)),
                )),
                latched: false,
                from_sdp: Some(rtp),
            };
        }
    }

    /// Whether a packet from `from` is the PBX's: latches onto the first source seen after the
    /// SDP (symmetric RTP), then accepts only that source (until an SDP moves the PBX).
    pub(crate) fn accept_rtp_from(&self, from: SocketAddr) -> bool {
        let mut r = self.remote.lock();
        if r.latched {
            return r.rtp == Some(from);
        }
        if r.rtp != Some(from) {
            // The RTCP source usually moves with it (NAT keeps the port pair only by luck).
            r.rtcp = Some(SocketAddr::new(from.ip(), from.port().wrapping_add(1)));
        }
        r.rtp = Some(from);
        r.latched = true;
        true
    }

    /// RTCP from the PBX: latch its source as our RTCP destination.
    pub(crate) fn latch_rtcp(&self, from: SocketAddr) {
        self.remote.lock().rtcp = Some(from);
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

    #[tokio::test]
    async fn latches_onto_the_first_source_then_only_that_one() {
        let pool = PortPool::new((31_000, 31_999), 2).unwrap();
        let (leg, _lease) = PbxLeg::bind("127.0.0.1".parse().unwrap(), &pool)
            .await
            .unwrap();
        leg.set_from_sdp(Some("127.0.0.1".parse().unwrap()), 4000, None);
        assert_eq!(leg.remote().rtcp, Some("127.0.0.1:4001".parse().unwrap()));
        let nat: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert!(leg.accept_rtp_from(nat));
        assert!(leg.accept_rtp_from(nat));
        assert!(
            !leg.accept_rtp_from("127.0.0.1:6000".parse().unwrap()),
            "a stranger after latching"
        );
        assert_eq!(leg.remote().rtp, Some(nat));
        assert_eq!(leg.remote().rtcp, Some("127.0.0.1:5001".parse().unwrap()));
        // A re-INVITE with the same address keeps the latch; hold (no address) keeps it too.
        leg.set_from_sdp(None, 4000, None);
        leg.set_from_sdp(Some("127.0.0.1".parse().unwrap()), 4000, None);
        assert_eq!((leg.remote().rtp, leg.remote().latched), (Some(nat), true));
        leg.set_from_sdp(Some("127.0.0.2".parse().unwrap()), 4100, Some(4200));
        let r = leg.remote();
        assert_eq!(
            (r.rtp, r.rtcp, r.latched),
            (
                Some("127.0.0.2:4100".parse().unwrap()),
                Some("127.0.0.2:4200".parse().unwrap()),
                false
            )
        );
    }
}
