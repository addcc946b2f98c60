//! Batched datagram I/O: `recvmmsg` / `sendmmsg` (Linux). SIPp and PBXs send in bursts, so one
//! system call moves several datagrams; at 10,000 decisions/s this halves the kernel time per
//! decision (see the README's performance section).
//!
//! The only `unsafe` in callgate's SIP path lives here: it fills `libc` structures that point at
//! buffers owned by [`Batch`], which outlives every call.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// Datagrams moved per system call at most.
pub(super) const BATCH: usize = 16;

/// Receive buffers and their `recvmmsg` headers for one thread, built once. The headers point
/// into `bufs` and `addrs`, whose heap storage never moves or reallocates after `new` (moving
/// the `Batch` itself moves only the `Vec` handles).
pub(super) struct Batch {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_storage>,
    iov: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    count: usize,
}

impl Batch {
    pub(super) fn new(max_message: usize) -> Self {
        let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; max_message + 1]).collect();
        // SAFETY: sockaddr_storage is plain old data; all-zero is a valid (AF_UNSPEC) value.
        let mut addrs: Vec<libc::sockaddr_storage> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        let mut iov: Vec<libc::iovec> = bufs.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() }).collect();
        let hdrs = iov
            .iter_mut()
            .zip(addrs.iter_mut())
            .map(|(io, addr)| {
                // SAFETY: msghdr is plain old data; zero is "no control data, no flags".
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_iov = io;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        Self { bufs, addrs, iov, hdrs, count: 0 }
    }

    /// Blocks (up to the socket's read timeout) until at least one datagram is there, then takes
    /// every one already queued, up to [`BATCH`].
    pub(super) fn recv(&mut self, sock: &UdpSocket) -> std::io::Result<usize> {
        debug_assert_eq!(self.iov.len(), self.hdrs.len());
        for h in &mut self.hdrs {
            // The kernel overwrites both on every call.
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_len = 0;
        }
        // SAFETY: every pointer in `hdrs` points into `self.bufs`, `self.addrs` or `self.iov`,
        // alive and not otherwise borrowed during the call; vlen = hdrs.len().
        let n = unsafe { libc::recvmmsg(sock.as_raw_fd(), self.hdrs.as_mut_ptr(), self.hdrs.len() as libc::c_uint, libc::MSG_WAITFORONE, std::ptr::null_mut()) };
        if n < 0 {
            self.count = 0;
            return Err(std::io::Error::last_os_error());
        }
        self.count = n as usize;
        Ok(self.count)
    }

    /// Datagram `i` of the last receive: bytes (cut to the buffer; `len` is what the kernel
    /// reported, possibly larger: the caller checks) and source.
    pub(super) fn get(&self, i: usize) -> Option<(&[u8], usize, SocketAddr)> {
        if i >= self.count {
            return None;
        }
        let len = self.hdrs[i].msg_len as usize;
        let data = &self.bufs[i][..len.min(self.bufs[i].len())];
        Some((data, len, to_socket_addr(&self.addrs[i])?))
    }
}

/// Replies collected during one batch, sent with as few `sendmmsg` calls as the kernel allows.
/// One reused byte buffer holds them all, so a reply costs no allocation; the `sendmmsg`
/// structures are reused too (only the entries a flush sends are filled in).
pub(super) struct Outgoing {
    buf: Vec<u8>,
    items: Vec<(std::ops::Range<usize>, SocketAddr)>,
    addrs: Box<[libc::sockaddr_storage; BATCH]>,
    iov: Box<[libc::iovec; BATCH]>,
    hdrs: Box<[libc::mmsghdr; BATCH]>,
}

impl Outgoing {
    pub(super) fn new() -> Self {
        Self {
            buf: Vec::with_capacity(BATCH * 1024),
            items: Vec::with_capacity(BATCH),
            addrs: Box::new([zeroed_storage(); BATCH]),
            // SAFETY: plain old data, zero is a valid starting value.
            iov: Box::new(unsafe { std::mem::zeroed() }),
            // SAFETY: as above; zero is "no control data, no flags".
            hdrs: Box::new(unsafe { std::mem::zeroed() }),
        }
    }

    pub(super) fn push(&mut self, bytes: &[u8], to: SocketAddr) {
        let start = self.buf.len();
        self.buf.extend_from_slice(bytes);
        self.items.push((start..self.buf.len(), to));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Sends everything queued and empties the queue; returns how many datagrams failed.
    pub(super) fn flush(&mut self, sock: &UdpSocket) -> usize {
        let mut failed = 0;
        let (addrs, iov, hdrs) = (&mut *self.addrs, &mut *self.iov, &mut *self.hdrs);
        for chunk in self.items.chunks(BATCH) {
            for (i, (range, to)) in chunk.iter().enumerate() {
                let namelen = write_socket_addr(*to, &mut addrs[i]);
                let bytes = &self.buf[range.clone()];
                iov[i] = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
                // Every field the kernel reads is set here: name, iov, and no control data.
                let h = &mut hdrs[i].msg_hdr;
                h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = namelen;
                h.msg_iov = &mut iov[i];
                h.msg_iovlen = 1;
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
                h.msg_flags = 0;
            }
            let mut sent = 0usize;
            while sent < chunk.len() {
                // SAFETY: pointers into `addrs`, `iov` (boxed, owned by `self`) and `self.buf`,
                // all alive and unmoved for the call; the kernel only reads the payload.
                let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), hdrs[sent..chunk.len()].as_mut_ptr(), (chunk.len() - sent) as libc::c_uint, 0) };
                if n <= 0 {
                    // Skip the datagram that failed (e.g. an unreachable destination), go on.
                    failed += 1;
                    sent += 1;
                } else {
                    sent += n as usize;
                }
            }
        }
        self.buf.clear();
        self.items.clear();
        failed
    }
}

fn zeroed_storage() -> libc::sockaddr_storage {
    // SAFETY: plain old data.
    unsafe { std::mem::zeroed() }
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

/// Writes `addr` into `s` (only the bytes of its family's structure) and returns their length.
fn write_socket_addr(addr: SocketAddr, s: &mut libc::sockaddr_storage) -> libc::socklen_t {
    let len = match addr {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let a: &mut libc::sockaddr_in = unsafe { &mut *(s as *mut libc::sockaddr_storage).cast() };
            a.sin_family = libc::AF_INET as libc::sa_family_t;
            a.sin_port = v4.port().to_be();
            a.sin_addr = libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() };
            a.sin_zero = [0; 8];
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above, for sockaddr_in6.
            let a: &mut libc::sockaddr_in6 = unsafe { &mut *(s as *mut libc::sockaddr_storage).cast() };
            a.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            a.sin6_port = v6.port().to_be();
            a.sin6_addr = libc::in6_addr { s6_addr: v6.ip().octets() };
            a.sin6_flowinfo = v6.flowinfo();
            a.sin6_scope_id = v6.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    len as libc::socklen_t
}
