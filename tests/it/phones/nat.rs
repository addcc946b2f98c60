//! A phone behind a NAT, on loopback. The phone sits on its "LAN" address [`LAN_IP`] (standing
//! for 192.168.x.y) and writes that address in its Via, Contact and SDP; callgate sees it at
//! the NAT's public address, the phone's documented address (`common::phone_ip`).
//!
//! - UDP: [`UdpNat`] forwards the phone's datagrams from its public socket to callgate and
//!   what callgate sends back to that socket in to the phone. The phone
//!   is configured with the NAT's inside address as outbound proxy: loopback has no router to
//!   translate packets addressed to callgate, so to the phone callgate lives at the NAT's inside
//!   address. The NAT swaps the two addresses in the headers of everything it passes (callgate's
//!   Record-Route, Via and Path name the inside address toward the phone; the phone's Route names
//!   callgate again on the way out), so callgate sees exactly what a real NAT would show it:
//!   the phone's own messages, from the public address, naming the LAN address. Bodies are left
//!   alone (Content-Length stays right; the SDP never names callgate).
//! - TCP and TLS: the phone's connections go straight to callgate and leave from the public
//!   address (`Phone::source_ip`, the LD_PRELOAD shim): a NAT changes a connection's source, and
//!   nothing can open a connection to the phone from outside.
//!
//! Loopback cannot make the LAN address unreachable (callgate could still send straight to it),
//! so a test proves the phone was reached through the NAT by its SIP trace: every message it
//! sent or heard went through the NAT's inside address (UDP) or over the connection it opened to
//! callgate (`Baresip::assert_only_talked_to`). Media is not translated.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;

/// A phone's address behind the NAT: nobody outside may send to it.
pub const LAN_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));

/// A running UDP NAT for one phone toward one server (callgate's UDP listener).
pub struct UdpNat {
    /// Where the phone sends (its outbound proxy).
    pub inside: SocketAddr,
    /// The address callgate sees the phone at.
    pub public: SocketAddr,
    tasks: JoinSet<()>,
}

impl UdpNat {
    /// A NAT on `public_ip` (inside and public sides on two ports of it) toward `server`.
    pub async fn start(public_ip: IpAddr, server: SocketAddr) -> Self {
        let inside = UdpSocket::bind((public_ip, 0)).await.unwrap();
        let outside = UdpSocket::bind((public_ip, 0)).await.unwrap();
        let (inside_addr, public) = (inside.local_addr().unwrap(), outside.local_addr().unwrap());
        let phone = Arc::new(Mutex::new(None));
        let (inside, outside) = (Arc::new(inside), Arc::new(outside));
        let mut tasks = JoinSet::new();
        tasks.spawn(outbound(inside.clone(), outside.clone(), server, phone.clone()));
        tasks.spawn(inbound(inside, outside, server, phone));
        Self { inside: inside_addr, public, tasks }
    }
}

impl Drop for UdpNat {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

/// Phone -> server: every datagram on the inside leaves from the public side, naming the server
/// where the phone named the NAT.
async fn outbound(inside: Arc<UdpSocket>, outside: Arc<UdpSocket>, server: SocketAddr, phone: Arc<Mutex<Option<SocketAddr>>>) {
    let me = inside.local_addr().unwrap();
    let mut buf = vec![0u8; 65536];
    while let Ok((n, from)) = inside.recv_from(&mut buf).await {
        *phone.lock() = Some(from);
        let datagram = swap_in_head(&buf[..n], me, server);
        let _ = outside.send_to(&datagram, server).await;
    }
}

/// The server -> the public side: in to the phone, naming the NAT where the server named itself.
/// Anyone else's datagrams are dropped (a port-restricted NAT).
async fn inbound(inside: Arc<UdpSocket>, outside: Arc<UdpSocket>, server: SocketAddr, phone: Arc<Mutex<Option<SocketAddr>>>) {
    let me = inside.local_addr().unwrap();
    let mut buf = vec![0u8; 65536];
    while let Ok((n, from)) = outside.recv_from(&mut buf).await {
        let to = *phone.lock();
        if let (Some(to), true) = (to, from == server) {
            let datagram = swap_in_head(&buf[..n], server, me);
            let _ = inside.send_to(&datagram, to).await;
        }
    }
}

/// `datagram` with every `from` address (`ip:port`) in its header written as `to`; the body is
/// left alone, so Content-Length stays right.
fn swap_in_head(datagram: &[u8], from: SocketAddr, to: SocketAddr) -> Vec<u8> {
    let Some(end) = datagram.windows(4).position(|w| w == b"\r\n\r\n") else { return datagram.to_vec() };
    let head = String::from_utf8_lossy(&datagram[..end]).replace(&from.to_string(), &to.to_string());
    let mut out = head.into_bytes();
    out.extend_from_slice(&datagram[end..]);
    out
}
