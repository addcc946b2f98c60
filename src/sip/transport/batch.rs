//! Batched datagram I/O: `recvmmsg` / `sendmmsg` (Linux). SIPp and PBXs send in bursts, so one
//! system call moves several datagrams; at 10,000 decisions/s this halves the kernel time per
//! decision (see the README's performance section).
//!
//! The only `unsafe` in callgate's SIP path lives here: it fills `libc` structures that point at
//! buffers owned by [`Batch`], which outlives every call.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// Datagrams moved per system call at most.
pub(super) const BATCH: usize = 32;

/// Receive and send buffers for one thread.
pub(super) struct Batch {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    lens: [usize; BATCH],
    count: usize,
}

impl Batch {
    pub(super) fn new(max_message: usize) -> Self {
        Self {
            bufs: (0..BATCH).map(|_| vec![0u8; max_message + 1]).collect(),
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid (AF_UNSPEC) value.
            addrs: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
            lens: [0; BATCH],
            count: 0,
        }
    }

    /// Blocks (up to the socket's read timeout) until at least one datagram is there, then takes
    /// every one already queued, up to [`BATCH`].
    pub(super) fn recv(&mut self, sock: &UdpSocket) -> std::io::Result<usize> {
        let mut iov: Vec<libc::iovec> = self.bufs.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() }).collect();
        let mut hdrs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .zip(self.addrs.iter_mut())
            .map(|(io, addr)| {
                // SAFETY: msghdr is plain old data; zero is "no control data, no flags".
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_hdr.msg_iov = io;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        // SAFETY: every pointer in `hdrs` points into `self.bufs`, `self.addrs` or `iov`, all
        // alive and not otherwise borrowed for the duration of the call; vlen = hdrs.len().
        let n = unsafe { libc::recvmmsg(sock.as_raw_fd(), hdrs.as_mut_ptr(), hdrs.len() as libc::c_uint, libc::MSG_WAITFORONE, std::ptr::null_mut()) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = n as usize;
        for (i, h) in hdrs.iter().take(n).enumerate() {
            self.lens[i] = h.msg_len as usize;
        }
        self.count = n;
        Ok(n)
    }

    /// Datagram `i` of the last receive: bytes (possibly longer than the limit: the caller
    /// checks) and source.
    pub(super) fn get(&self, i: usize) -> Option<(&[u8], usize, SocketAddr)> {
        if i >= self.count {
            return None;
        }
        let len = self.lens[i];
        let data = &self.bufs[i][..len.min(self.bufs[i].len())];
        Some((data, len, to_socket_addr(&self.addrs[i])?))
    }
}

/// Sends every `(bytes, destination)` in as few calls as the kernel allows; returns how many
/// datagrams could not be sent.
pub(super) fn send_all(sock: &UdpSocket, out: &[(bytes::Bytes, SocketAddr)]) -> usize {
    let mut failed = 0;
    for chunk in out.chunks(BATCH) {
        let mut addrs: Vec<(libc::sockaddr_storage, libc::socklen_t)> = chunk.iter().map(|(_, a)| from_socket_addr(*a)).collect();
        let mut iov: Vec<libc::iovec> = chunk.iter().map(|(b, _)| libc::iovec { iov_base: b.as_ptr() as *mut libc::c_void, iov_len: b.len() }).collect();
        let mut hdrs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .zip(addrs.iter_mut())
            .map(|(io, (addr, len))| {
                // SAFETY: plain old data, zero is a valid starting value.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_namelen = *len;
                h.msg_hdr.msg_iov = io;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        let mut sent = 0usize;
        while sent < hdrs.len() {
            // SAFETY: pointers into `addrs`, `iov` and the `Bytes` in `chunk`, all alive; the
            // kernel only reads the payload.
            let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), hdrs[sent..].as_mut_ptr(), (hdrs.len() - sent) as libc::c_uint, 0) };
            if n <= 0 {
                // Skip the datagram that failed (e.g. unreachable destination) and go on.
                failed += 1;
                sent += 1;
            } else {
                sent += n as usize;
            }
        }
    }
    failed
}

fn to_socket_addr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let a: &libc::sockaddr_in = unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)), u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 = unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(a.sin6_addr.s6_addr), u16::from_be(a.sin6_port), a.sin6_flowinfo, a.sin6_scope_id)))
        }
        _ => None,
    }
}

fn from_socket_addr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: plain old data.
    let mut s: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let a: &mut libc::sockaddr_in = unsafe { &mut *(&mut s as *mut libc::sockaddr_storage).cast() };
            a.sin_family = libc::AF_INET as libc::sa_family_t;
            a.sin_port = v4.port().to_be();
            a.sin_addr = libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let a: &mut libc::sockaddr_in6 = unsafe { &mut *(&mut s as *mut libc::sockaddr_storage).cast() };
            a.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            a.sin6_port = v6.port().to_be();
            a.sin6_addr = libc::in6_addr { s6_addr: v6.ip().octets() };
            a.sin6_flowinfo = v6.flowinfo();
            a.sin6_scope_id = v6.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (s, len as libc::socklen_t)
}
