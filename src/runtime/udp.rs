//! UDP pieces both engines share: the kernel's drop counter (`SO_RXQ_OVFL` control messages and
//! `SO_MEMINFO`), peer addresses from raw `sockaddr` bytes, and [`DatagramBatch`], a `recvmmsg`
//! batch (the epoll engine's reads, and the io_uring engine's last drain at shutdown).

use std::fmt;
use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::Arc;

use crate::stats::Stats;

/// Room for one `sockaddr_in6`, the largest address a UDP socket reports.
pub(crate) const NAME_BYTES: usize = size_of::<libc::sockaddr_in6>();
/// Room for the control messages we ask for: one `SO_RXQ_OVFL` (`CMSG_SPACE(4)`), with slack.
pub(crate) const CONTROL_BYTES: usize = 32;
/// Datagrams taken by one `recvmmsg`.
pub(crate) const BATCH: usize = 64;
/// Payload room per datagram: the largest UDP payload fits, so nothing is truncated.
pub(crate) const DATAGRAM_BYTES: usize = 1 << 16;

const fn cmsg_align(n: usize) -> usize {
    (n + size_of::<usize>() - 1) & !(size_of::<usize>() - 1)
}

/// The socket's cumulative drop count from an `SO_RXQ_OVFL` control message in `control` (the
/// bytes `recvmsg` wrote to `msg_control`), if there is one.
///
/// The layout is glibc's `struct cmsghdr` (`size_t` length, `int` level, `int` type, data
/// aligned to `size_t`), read byte by byte: the buffer needs no alignment. The kernel only
/// attaches the message once the socket has dropped something.
pub(crate) fn rxq_ovfl(control: &[u8]) -> Option<u32> {
    const LEN: usize = size_of::<usize>();
    const HDR: usize = size_of::<libc::cmsghdr>();
    let mut at = 0usize;
    while let Some(hdr) = control.get(at..at.checked_add(HDR)?) {
        let len = usize::from_ne_bytes(hdr[..LEN].try_into().ok()?);
        let level = i32::from_ne_bytes(hdr[LEN..LEN + 4].try_into().ok()?);
        let kind = i32::from_ne_bytes(hdr[LEN + 4..LEN + 8].try_into().ok()?);
        if len < HDR {
            return None;
        }
        if level == libc::SOL_SOCKET && kind == libc::SO_RXQ_OVFL {
            let data = at + cmsg_align(HDR);
            let bytes = control.get(data..data + 4)?;
            return Some(u32::from_ne_bytes(bytes.try_into().ok()?));
        }
        at = at.checked_add(cmsg_align(len))?;
    }
    None
}

/// The socket's cumulative drop count (`SO_MEMINFO`'s `SK_MEMINFO_DROPS`), the same counter
/// `SO_RXQ_OVFL` reports, readable when no datagram arrives to carry it.
pub(crate) fn meminfo_drops(fd: RawFd) -> Option<u32> {
    // SK_MEMINFO_VARS in linux/sock_diag.h.
    let mut info = [0u32; 9];
    let mut len = libc::socklen_t::try_from(size_of::<[u32; 9]>()).ok()?;
    // Safety: getsockopt(2) writes at most `len` bytes into `info`, which we own.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    (rc == 0).then(|| info[libc::SK_MEMINFO_DROPS as usize])
}

/// Turns one socket's cumulative drop counter into counts of new drops.
#[derive(Debug)]
pub(crate) struct KernelDrops {
    last: u32,
    stats: Arc<Stats>,
}

impl KernelDrops {
    /// A tracker for a socket that has dropped nothing yet (a new socket).
    pub(crate) fn new(stats: Arc<Stats>) -> Self {
        KernelDrops { last: 0, stats }
    }

    /// Takes a reading of the counter; new drops are counted as received and
    /// `dropped_kernel`, so every datagram that reached the socket ends in one counter.
    /// Returns how many were new.
    pub(crate) fn observe(&mut self, counter: u32) -> u32 {
        let new = counter.wrapping_sub(self.last);
        // A reading older than the last one (a reordered message): nothing new.
        if new == 0 || new > u32::MAX / 2 {
            return 0;
        }
        self.last = counter;
        Stats::add(&self.stats.received, u64::from(new));
        Stats::add(&self.stats.dropped_kernel, u64::from(new));
        new
    }
}

/// The peer address in raw `sockaddr_in`/`sockaddr_in6` bytes, as `recvmsg` writes it.
pub(crate) fn peer_addr(name: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes(name.get(..2)?.try_into().ok()?));
    let port = u16::from_be_bytes(name.get(2..4)?.try_into().ok()?);
    match family {
        libc::AF_INET => {
            let ip: [u8; 4] = name.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
        }
        libc::AF_INET6 => {
            let ip: [u8; 16] = name.get(8..24)?.try_into().ok()?;
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port))
        }
        _ => None,
    }
}

/// A datagram's sender, for logs.
pub(crate) struct Peer(pub(crate) Option<SocketAddr>);

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("udp"),
        }
    }
}

/// One datagram of a batch.
pub(crate) struct Datagram<'a> {
    /// Its bytes (all of them unless `truncated`).
    pub(crate) payload: &'a mut [u8],
    /// Who sent it.
    pub(crate) peer: Peer,
    /// It was larger than the room for it (`MSG_TRUNC`).
    pub(crate) truncated: bool,
    /// The socket's cumulative drop counter, when the kernel attached it.
    pub(crate) drops: Option<u32>,
}

/// Buffers for one `recvmmsg(2)` of up to [`BATCH`] datagrams, reused for every call.
pub(crate) struct DatagramBatch {
    payloads: Vec<u8>,
    names: Vec<[u8; NAME_BYTES]>,
    controls: Vec<[u8; CONTROL_BYTES]>,
    /// Per datagram of the last call: length, flags, name and control lengths.
    lens: [usize; BATCH],
    flags: [i32; BATCH],
    name_lens: [usize; BATCH],
    control_lens: [usize; BATCH],
    count: usize,
}

impl DatagramBatch {
    /// Empty buffers (payload pages are only touched when datagrams land in them).
    pub(crate) fn new() -> Self {
        DatagramBatch {
            payloads: vec![0; BATCH * DATAGRAM_BYTES],
            names: vec![[0; NAME_BYTES]; BATCH],
            controls: vec![[0; CONTROL_BYTES]; BATCH],
            lens: [0; BATCH],
            flags: [0; BATCH],
            name_lens: [0; BATCH],
            control_lens: [0; BATCH],
            count: 0,
        }
    }

    /// Reads up to [`BATCH`] datagrams from `fd` without blocking; returns how many.
    ///
    /// # Errors
    /// The OS error (`WouldBlock` when the socket holds none).
    pub(crate) fn read(&mut self, fd: RawFd) -> io::Result<usize> {
        // The headers point into `self`'s buffers; built per call so the worker stays `Send`.
        let mut iovecs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        // Safety: an all-zero mmsghdr is a valid value (null pointers, zero lengths).
        let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, ((iov, hdr), payload)) in iovecs
            .iter_mut()
            .zip(headers.iter_mut())
            .zip(self.payloads.chunks_exact_mut(DATAGRAM_BYTES))
            .enumerate()
        {
            iov.iov_base = payload.as_mut_ptr().cast();
            iov.iov_len = DATAGRAM_BYTES;
            hdr.msg_hdr.msg_name = self.names[i].as_mut_ptr().cast();
            hdr.msg_hdr.msg_namelen = NAME_BYTES as libc::socklen_t;
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_control = self.controls[i].as_mut_ptr().cast();
            hdr.msg_hdr.msg_controllen = CONTROL_BYTES as _;
        }
        // Safety: every header points at buffers owned by `self` (or `iovecs`, alive for the
        // call) with the lengths given; the kernel writes within them and nowhere else.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
        for (i, hdr) in headers.iter().take(n).enumerate() {
            self.lens[i] = (hdr.msg_len as usize).min(DATAGRAM_BYTES);
            self.flags[i] = hdr.msg_hdr.msg_flags;
            self.name_lens[i] = (hdr.msg_hdr.msg_namelen as usize).min(NAME_BYTES);
            // `msg_controllen` is a size_t on glibc, a socklen_t on musl.
            #[allow(clippy::unnecessary_cast)]
            let control_len = hdr.msg_hdr.msg_controllen as usize;
            self.control_lens[i] = control_len.min(CONTROL_BYTES);
        }
        self.count = n;
        Ok(n)
    }

    /// Datagram `i` of the last [`read`](Self::read).
    pub(crate) fn get(&mut self, i: usize) -> Option<Datagram<'_>> {
        if i >= self.count {
            return None;
        }
        let start = i * DATAGRAM_BYTES;
        Some(Datagram {
            payload: &mut self.payloads[start..start + self.lens[i]],
            peer: Peer(peer_addr(&self.names[i][..self.name_lens[i]])),
            truncated: self.flags[i] & libc::MSG_TRUNC != 0,
            drops: rxq_ovfl(&self.controls[i][..self.control_lens[i]]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    fn cmsg(level: i32, kind: i32, data: &[u8]) -> Vec<u8> {
        let hdr = size_of::<libc::cmsghdr>();
        let len = hdr + data.len();
        let mut out = Vec::new();
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&level.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(data);
        out.resize(cmsg_align(len), 0);
        out
    }

    #[test]
    fn rxq_ovfl_is_found_among_control_messages() {
        // Safety: CMSG_LEN only computes a length.
        let libc_len = unsafe { libc::CMSG_LEN(4) } as usize;
        assert_eq!(size_of::<libc::cmsghdr>() + 4, libc_len, "glibc's layout");
        assert_eq!(rxq_ovfl(&[]), None);
        let ovfl = cmsg(libc::SOL_SOCKET, libc::SO_RXQ_OVFL, &7u32.to_ne_bytes());
        assert_eq!(rxq_ovfl(&ovfl), Some(7));
        let mut two = cmsg(libc::SOL_IP, libc::IP_TTL, &64i32.to_ne_bytes());
        two.extend_from_slice(&ovfl);
        assert_eq!(rxq_ovfl(&two), Some(7));
        // Truncated or nonsense headers end the walk instead of reading past the buffer.
        assert_eq!(rxq_ovfl(&ovfl[..size_of::<libc::cmsghdr>() + 2]), None);
        let mut zero = ovfl.clone();
        zero[..size_of::<usize>()].copy_from_slice(&0usize.to_ne_bytes());
        assert_eq!(rxq_ovfl(&zero), None);
    }

    #[test]
    fn kernel_drops_count_deltas_of_a_cumulative_counter() {
        let stats = Arc::new(Stats::default());
        let mut drops = KernelDrops::new(Arc::clone(&stats));
        assert_eq!(drops.observe(5), 5);
        assert_eq!(drops.observe(5), 0);
        assert_eq!(drops.observe(4), 0, "older reading");
        assert_eq!(drops.observe(12), 7);
        let mut wrap = KernelDrops::new(Arc::clone(&stats));
        wrap.last = u32::MAX - 1;
        assert_eq!(wrap.observe(2), 4);
        let s = stats.snapshot();
        assert_eq!((s.dropped_kernel, s.received), (16, 16));
    }

    #[test]
    fn peer_addresses() {
        let v4 = socket2::SockAddr::from("10.1.2.3:4567".parse::<SocketAddr>().unwrap());
        // Safety: the SockAddr's storage holds `len()` initialised bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts(v4.as_ptr().cast::<u8>(), v4.len() as usize) };
        assert_eq!(peer_addr(bytes), Some("10.1.2.3:4567".parse().unwrap()));
        let v6 = socket2::SockAddr::from("[::1]:9".parse::<SocketAddr>().unwrap());
        // Safety: as above.
        let bytes =
            unsafe { std::slice::from_raw_parts(v6.as_ptr().cast::<u8>(), v6.len() as usize) };
        assert_eq!(peer_addr(bytes), Some("[::1]:9".parse().unwrap()));
        assert_eq!(peer_addr(&[]), None);
        assert_eq!(Peer(None).to_string(), "udp");
    }

    /// The kernel really reports drops: overflow a tiny receive buffer, then read.
    #[test]
    fn overflowed_socket_reports_its_drops() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sock = socket2::SockRef::from(&rx);
        sock.set_recv_buffer_size(4096).unwrap();
        let one: libc::c_int = 1;
        // Safety: setsockopt(2) reads an int we own.
        let rc = unsafe {
            libc::setsockopt(
                rx.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RXQ_OVFL,
                std::ptr::addr_of!(one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..200 {
            tx.send_to(&[b'x'; 1000], rx.local_addr().unwrap()).unwrap();
        }
        let mut batch = DatagramBatch::new();
        let n = batch.read(rx.as_raw_fd()).unwrap();
        assert!(n > 0 && n < 200, "{n} datagrams fit a 4 KiB buffer?");
        let d = batch.get(0).unwrap();
        assert_eq!(d.payload.len(), 1000);
        assert!(!d.truncated);
        assert_eq!(d.peer.0, Some(tx.local_addr().unwrap()));
        let dropped = meminfo_drops(rx.as_raw_fd()).unwrap();
        assert!(dropped as usize >= 200 - n, "{dropped} drops, {n} read");
        // A datagram queued after drops carries the counter.
        tx.send_to(b"after", rx.local_addr().unwrap()).unwrap();
        assert_eq!(batch.read(rx.as_raw_fd()).unwrap(), 1);
        let d = batch.get(0).unwrap();
        assert_eq!(&d.payload[..], b"after");
        assert_eq!(d.drops, Some(dropped));
        assert_eq!(
            batch.read(rx.as_raw_fd()).map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock)
        );
    }
}
