//! Sender threads: an open-loop schedule ([`Pacer`], pure) decides how many records are due;
//! each batch is built into one buffer and leaves in one syscall (`sendmmsg` for UDP, one
//! `write` for a stream), stamped with the time the schedule meant it to leave.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use crate::record::{RecordGen, Stamp};
use crate::Clock;

/// The open-loop schedule of one sender: record `k` is due `k * interval` after the start,
/// whether or not the ones before it could leave on time. Pure.
#[derive(Debug, Clone)]
pub struct Pacer {
    /// `None`: as fast as possible.
    interval_ns: Option<f64>,
    issued: u64,
    limit: u64,
}

impl Pacer {
    /// A schedule of `rate` records per second (`None`: no schedule), at most `limit` records.
    pub fn new(rate: Option<f64>, limit: Option<u64>) -> Pacer {
        Pacer {
            interval_ns: rate.map(|r| 1e9 / r),
            issued: 0,
            limit: limit.unwrap_or(u64::MAX),
        }
    }

    /// Records due at `elapsed_ns` and not yet issued, at most `max`; marks them issued and
    /// returns how many, with the due time (ns since the start) of each through `due`.
    pub fn poll(&mut self, elapsed_ns: u64, max: usize, due: &mut Vec<u64>) -> usize {
        due.clear();
        let left = self.limit - self.issued;
        let n = match self.interval_ns {
            None => left.min(max as u64),
            Some(iv) => {
                let upto = (elapsed_ns as f64 / iv).floor() as u64 + 1;
                upto.saturating_sub(self.issued).min(left).min(max as u64)
            }
        };
        for k in self.issued..self.issued + n {
            due.push(match self.interval_ns {
                None => elapsed_ns,
                Some(iv) => (k as f64 * iv) as u64,
            });
        }
        self.issued += n;
        n as usize
    }

    /// When the next record is due (ns since the start); `None` when all are issued or there
    /// is no schedule.
    pub fn next_due(&self) -> Option<u64> {
        let iv = self.interval_ns?;
        (self.issued < self.limit).then_some((self.issued as f64 * iv) as u64)
    }

    /// All `limit` records issued.
    pub fn finished(&self) -> bool {
        self.issued >= self.limit
    }
}

/// Where records go.
#[derive(Debug, Clone)]
pub enum Target {
    /// UDP datagrams, one record each.
    Udp(SocketAddr),
    /// TCP connections.
    Tcp(SocketAddr),
    /// Unix stream socket.
    Unix(PathBuf),
}

/// Counters a sender shares with the progress reporter and the summary.
#[derive(Debug, Default)]
pub struct SendStats {
    /// Records handed to the kernel, per stream.
    pub sent: Vec<AtomicU64>,
    /// Bytes handed to the kernel.
    pub bytes: AtomicU64,
    /// How far the sender is behind its schedule now (ns).
    pub lag_ns: AtomicU64,
    /// The most it was ever behind (ns).
    pub max_lag_ns: AtomicU64,
    /// When the last batch was handed to the kernel (ns since the clock's start).
    pub last_send_ns: AtomicU64,
    /// Send calls that failed and were retried (UDP `ECONNREFUSED`, `ENOBUFS`).
    pub retries: AtomicU64,
}

impl SendStats {
    /// Counters for `streams` streams.
    pub fn new(streams: usize) -> SendStats {
        SendStats {
            sent: (0..streams).map(|_| AtomicU64::new(0)).collect(),
            ..Default::default()
        }
    }

    /// Records sent over all streams.
    pub fn total(&self) -> u64 {
        self.sent.iter().map(|s| s.load(Ordering::Relaxed)).sum()
    }
}

/// One sender thread's share of the work.
#[derive(Debug)]
pub struct Plan {
    /// Streams this sender owns (its UDP socket, or its connections).
    pub streams: Vec<u32>,
    /// Records per second for this sender; `None`: as fast as possible.
    pub rate: Option<f64>,
    /// Records this sender sends; `None`: until `duration`.
    pub count: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Records per syscall, at most.
    pub batch: usize,
}

/// A connected socket of any transport.
enum Sock {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Asks for a larger send buffer; the kernel caps it at `wmem_max`, which is fine.
fn set_sndbuf(fd: i32, bytes: i32) {
    // Safety: fd is an open socket; the option value is a live c_int of the given size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&bytes as *const i32).cast(),
            size_of::<i32>() as libc::socklen_t,
        );
    }
}

/// Opens one socket to `target`.
///
/// # Errors
/// Connecting fails.
fn connect(target: &Target) -> io::Result<Sock> {
    Ok(match target {
        Target::Udp(addr) => {
            let local: SocketAddr = if addr.is_ipv4() {
                "0.0.0.0:0".parse().expect("literal")
            } else {
                "[::]:0".parse().expect("literal")
            };
            let s = UdpSocket::bind(local)?;
            s.connect(addr)?;
            set_sndbuf(s.as_raw_fd(), 4 << 20);
            Sock::Udp(s)
        }
        Target::Tcp(addr) => {
            let s = TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            set_sndbuf(s.as_raw_fd(), 4 << 20);
            Sock::Tcp(s)
        }
        Target::Unix(path) => Sock::Unix(UnixStream::connect(path)?),
    })
}

/// Sends `lens.len()` datagrams laid end to end in `buf` with as few `sendmmsg` calls as the
/// kernel allows. Returns the number of retried failures.
///
/// # Errors
/// A failure other than the transient ones (`EINTR`, `EAGAIN`, `ENOBUFS`, `ECONNREFUSED` from
/// an earlier datagram's ICMP error), or `stop` set while retrying.
fn write_datagrams(
    sock: &UdpSocket,
    buf: &[u8],
    lens: &[usize],
    stop: &AtomicBool,
) -> io::Result<u64> {
    let mut iovs: Vec<libc::iovec> = Vec::with_capacity(lens.len());
    let mut off = 0;
    for &len in lens {
        iovs.push(libc::iovec {
            iov_base: buf[off..].as_ptr() as *mut libc::c_void,
            iov_len: len,
        });
        off += len;
    }
    // Safety: mmsghdr is plain data; all-zero is a valid "no name, no control" header.
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; lens.len()];
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut done = 0;
    let mut retries = 0;
    while done < msgs.len() {
        let left = (msgs.len() - done) as libc::c_uint;
        // Safety: msgs[done..] are initialised headers whose iovecs point into `buf`, which
        // outlives the call; the kernel writes only msg_len.
        let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs[done..].as_mut_ptr(), left, 0) };
        if n >= 0 {
            done += n as usize;
            continue;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN | libc::ENOBUFS | libc::ECONNREFUSED) => {
                retries += 1;
                if stop.load(Ordering::Relaxed) {
                    return Err(err);
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            _ => return Err(err),
        }
    }
    Ok(retries)
}

/// Makes this thread's sleeps end on time: the default 50 µs timer slack would add to every
/// record's latency.
fn tighten_timer_slack() {
    // Safety: PR_SET_TIMERSLACK takes one integer argument and affects only this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong, 0, 0, 0);
    }
}

/// Everything a sender thread needs.
pub struct Sender {
    /// Its share of the work.
    pub plan: Plan,
    /// Where to send.
    pub target: Target,
    /// One record generator per stream, indexed like `plan.streams`.
    pub gens: Vec<RecordGen>,
    /// The run id stamped on every record.
    pub run: u32,
    /// The shared clock.
    pub clock: Clock,
    /// Shared counters.
    pub stats: Arc<SendStats>,
    /// Set to stop early (Ctrl-C, another sender's failure).
    pub stop: Arc<AtomicBool>,
    /// Passed once every sender has connected, so no schedule starts behind.
    pub ready: Arc<Barrier>,
}

impl Sender {
    /// Runs the schedule to its end.
    ///
    /// # Errors
    /// Connecting or sending fails.
    pub fn run(mut self) -> io::Result<()> {
        tighten_timer_slack();
        let socks: io::Result<Vec<Sock>> = self
            .plan
            .streams
            .iter()
            .map(|_| connect(&self.target))
            .collect();
        // Every sender reaches the barrier, connected or not, so none waits forever.
        self.ready.wait();
        let mut socks = socks?;
        let t0 = self.clock.elapsed_ns();
        let mut seqs = vec![0u64; socks.len()];
        let mut pacer = Pacer::new(self.plan.rate, self.plan.count);
        let end_ns = self.plan.duration.map(|d| d.as_nanos() as u64);
        let mut due = Vec::with_capacity(self.plan.batch);
        let mut buf = Vec::with_capacity(self.plan.batch * 1024);
        let mut lens = Vec::with_capacity(self.plan.batch);
        let mut turn = 0;
        while !pacer.finished() && !self.stop.load(Ordering::Relaxed) {
            let elapsed = self.clock.elapsed_ns() - t0;
            if end_ns.is_some_and(|end| elapsed >= end) {
                break;
            }
            if pacer.poll(elapsed, self.plan.batch, &mut due) == 0 {
                if let Some(next) = pacer.next_due() {
                    let wait = next.saturating_sub(elapsed);
                    let wait = end_ns.map_or(wait, |end| wait.min(end.saturating_sub(elapsed)));
                    std::thread::sleep(Duration::from_nanos(wait));
                }
                continue;
            }
            let lag = elapsed.saturating_sub(due[0]);
            self.stats.lag_ns.store(lag, Ordering::Relaxed);
            self.stats.max_lag_ns.fetch_max(lag, Ordering::Relaxed);

            // One batch goes to one stream; streams take turns.
            let i = turn % socks.len();
            turn += 1;
            let stream = self.plan.streams[i];
            buf.clear();
            lens.clear();
            let sent_ns = self.clock.now_ns();
            for &d in &due {
                let stamp = Stamp {
                    run: self.run,
                    stream,
                    seq: seqs[i],
                    due_ns: self.clock.epoch_ns() + t0 + d,
                    sent_ns,
                };
                seqs[i] += 1;
                lens.push(self.gens[i].encode(stamp, &mut buf));
            }
            match &mut socks[i] {
                Sock::Udp(s) => {
                    let retries = write_datagrams(s, &buf, &lens, &self.stop)?;
                    self.stats.retries.fetch_add(retries, Ordering::Relaxed);
                }
                Sock::Tcp(s) => s.write_all(&buf)?,
                Sock::Unix(s) => s.write_all(&buf)?,
            }
            self.stats.sent[stream as usize].fetch_add(due.len() as u64, Ordering::Relaxed);
            self.stats
                .bytes
                .fetch_add(buf.len() as u64, Ordering::Relaxed);
            let now = self.clock.elapsed_ns();
            self.stats.last_send_ns.fetch_max(now, Ordering::Relaxed);
        }
        self.stats.lag_ns.store(0, Ordering::Relaxed);
        for s in &mut socks {
            match s {
                Sock::Tcp(s) => s.flush()?,
                Sock::Unix(s) => s.flush()?,
                Sock::Udp(_) => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_open_loop() {
        // 1000/s: one record per ms, the first at 0.
        let mut p = Pacer::new(Some(1000.0), Some(10));
        let mut due = Vec::new();
        assert_eq!(p.poll(0, 64, &mut due), 1);
        assert_eq!(due, [0]);
        assert_eq!(p.next_due(), Some(1_000_000));
        assert_eq!(p.poll(999_999, 64, &mut due), 0);
        // A stall of 5.5 ms: the five records missed are due now, with their own due times.
        assert_eq!(p.poll(6_500_000, 64, &mut due), 6);
        assert_eq!(
            due,
            [1_000_000, 2_000_000, 3_000_000, 4_000_000, 5_000_000, 6_000_000]
        );
        // The batch limit holds back the rest for the next poll.
        assert_eq!(p.poll(100_000_000, 2, &mut due), 2);
        assert_eq!(p.poll(100_000_000, 64, &mut due), 1);
        assert!(p.finished());
        assert_eq!(p.next_due(), None);
        assert_eq!(p.poll(200_000_000, 64, &mut due), 0);
    }

    #[test]
    fn max_rate_issues_full_batches_due_now() {
        let mut p = Pacer::new(None, Some(100));
        let mut due = Vec::new();
        assert_eq!(p.poll(5, 64, &mut due), 64);
        assert!(due.iter().all(|&d| d == 5));
        assert_eq!(p.poll(9, 64, &mut due), 36);
        assert!(p.finished());
        let mut unbounded = Pacer::new(None, None);
        assert_eq!(unbounded.poll(0, 8, &mut due), 8);
        assert!(!unbounded.finished());
    }

    #[test]
    fn sendmmsg_delivers_every_datagram() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let lens = [3, 1, 5];
        write_datagrams(&tx, b"abcdefghi", &lens, &AtomicBool::new(false)).unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 16];
        for _ in 0..3 {
            let n = rx.recv(&mut b).unwrap();
            got.push(b[..n].to_vec());
        }
        assert_eq!(got, [b"abc".to_vec(), b"d".to_vec(), b"efghi".to_vec()]);
    }
}
