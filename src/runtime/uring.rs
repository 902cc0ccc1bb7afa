//! The completion-based engine (io_uring): one thread per worker, each with its own ring, owning
//! its sockets, connections and Redis connection from end to end (with `DEFER_TASKRUN` only the
//! ring's own thread can reap it, so no other event loop could watch it).
//!
//! - UDP: one multishot `recvmsg` lands datagrams in a provided buffer ring, with their sender
//!   and the kernel's drop counter (`SO_RXQ_OVFL`) in front of each.
//! - TCP and unix: multishot `accept`; each connection has one multishot `recv` that fills
//!   buffers from a second buffer ring as data arrives, so the kernel keeps reading while the
//!   loop is busy or holding for a batch. The bytes go to the connection's [`StreamConn`] and
//!   the buffer goes back at once. When the pipeline is full the `recv` is cancelled (what it
//!   delivers meanwhile is kept), so the rest waits in the kernel and the client feels it.
//! - Redis: `connect`, `send` from an owned buffer that [`Session::poll_transmit`] fills (a
//!   second one collects the next commands while one is on the wire), `recv` for the replies.
//! - Waits are batched: after a turn that found records arriving fast, the next wait asks for
//!   `batch::TARGET` completions or a short timeout (`BatchWait`), unless a push to Redis
//!   is on its way. A turn takes at most `STREAM_TURN_BYTES` from streams, so Redis gets its
//!   turn often.
//!
//! Every buffer the kernel writes to belongs to a buffer ring that lives as long as the ring, so
//! dropping or closing a connection never leaves the kernel writing into freed memory.

use std::collections::VecDeque;
use std::io;
use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use io_uring::types::{BufRingEntry, Fd, RecvMsgOut, SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, IoUring};
use slab::Slab;
use socket2::{SockAddr, SockRef, Socket};
use tracing::{debug, info, warn};

use super::batch::{self, BatchWait};
use super::udp::{self, DatagramBatch, KernelDrops, Peer};
use super::{ConnGuard, Listeners};
use crate::config::Config;
use crate::intake::{Intake, StreamConn};
use crate::redis::session::{Session, SinkError};
use crate::redis::sink::{stream_socket, Addresses};
use crate::stats::Stats;

/// Submission queue entries.
const SQ_ENTRIES: u32 = 1024;
/// Completion queue entries: room for a full UDP buffer ring's worth and everything else.
const CQ_ENTRIES: u32 = 8192;
/// Buffer group of the UDP buffer ring.
const UDP_GROUP: u16 = 0;
/// Buffer group of the stream (TCP, unix, Redis replies) buffer ring.
const STREAM_GROUP: u16 = 1;
/// Datagrams the UDP ring holds at once. Each buffer fits the largest datagram allowed, so
/// most of each stays untouched (and unbacked) for small datagrams. When the ring runs dry
/// the multishot receive ends until the next turn re-arms it; at 300k datagrams/s 256
/// buffers ran dry often enough to lose datagrams in the kernel, 1024 did not in most runs.
const UDP_BUFFERS: u16 = 1024;
/// Stream reads the stream ring holds at once (2 MiB). The ring bounds how much the kernel
/// hands over before the loop sees that the pipeline is full: with 256 (8 MiB), half of
/// everything received at the maximum TCP rate arrived after that, piling up to 5 MiB per
/// connection in buffers that grew into fresh pages and went cold before they were decoded
/// (5 to 7% of the engine's CPU zeroing pages, 11% more CPU per record than with 64).
const STREAM_BUFFERS: u16 = 64;
/// Bytes per stream read.
const STREAM_BUFFER_BYTES: usize = 32 * 1024;
/// What precedes a datagram's payload in its buffer: the multishot header, the name and the
/// control message areas.
const UDP_HEADER_BYTES: usize = RECVMSG_OUT_BYTES + udp::NAME_BYTES + udp::CONTROL_BYTES;
/// `struct io_uring_recvmsg_out`: four `u32`s.
const RECVMSG_OUT_BYTES: usize = 16;
/// Stream bytes one turn takes in before Redis gets its turn. Multishot receives gather
/// whatever the sockets hold (up to the whole stream ring) while the loop works, so without
/// a bound one turn could decode for tens of milliseconds with Redis's replies and the next
/// push waiting behind it, and the pipeline would fill. epoll bounds its reads the same way.
const STREAM_TURN_BYTES: usize = 1 << 20;
/// Completions taken from the ring at a time (the budget is checked between takes).
const REAP_BATCH: usize = 64;
/// At shutdown, how long cancelled receives get to report back.
const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// multishot `recvmsg` needs Linux 6.0.
const MIN_KERNEL: (u32, u32) = (6, 0);

/// Checks that this kernel lets us run the engine: version, ring setup, opcodes, buffer rings.
///
/// # Errors
/// Why not (e.g. `EPERM` under a seccomp profile or `kernel.io_uring_disabled`).
pub fn probe() -> io::Result<()> {
    let release = kernel_release();
    match parse_release(&release) {
        Some(v) if v >= MIN_KERNEL => {}
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("kernel {release} is older than 6.0 (multishot recvmsg)"),
            ))
        }
    }
    let (ring, _) = build_ring(8, false)?;
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    for (code, name) in [
        (opcode::RecvMsg::CODE, "recvmsg"),
        (opcode::Recv::CODE, "recv"),
        (opcode::Send::CODE, "send"),
        (opcode::Accept::CODE, "accept"),
        (opcode::Connect::CODE, "connect"),
        (opcode::PollAdd::CODE, "poll_add"),
        (opcode::AsyncCancel::CODE, "async_cancel"),
    ] {
        if !probe.is_supported(code) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("io_uring has no {name}"),
            ));
        }
    }
    let mut bufs = BufRing::new(1, 64, 7)?;
    bufs.register(&ring)?;
    ring.submitter().unregister_buf_ring(7)?;
    bufs.registered = false;
    Ok(())
}

fn kernel_release() -> String {
    // Safety: an all-zero utsname is valid; uname(2) fills it with NUL-terminated strings.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // Safety: `uts` is ours and large enough.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return String::new();
    }
    let bytes: Vec<u8> = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `"6.1.0-18-amd64"` -> `(6, 1)`.
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// A ring with the cheapest task-running mode the kernel has: `SINGLE_ISSUER` +
/// `DEFER_TASKRUN` (completions are processed only when this thread waits), else
/// `COOP_TASKRUN` (no interrupts to run them), else none. Returns the mode's name.
fn build_ring(entries: u32, disabled: bool) -> io::Result<(IoUring, &'static str)> {
    let modes: [(&str, bool, bool, bool); 4] = [
        ("single_issuer+defer_taskrun+coop_taskrun", true, true, true),
        ("single_issuer+defer_taskrun", true, true, false),
        ("coop_taskrun", false, false, true),
        ("plain", false, false, false),
    ];
    let mut last = io::Error::from(io::ErrorKind::Unsupported);
    for (name, single, defer, coop) in modes {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(CQ_ENTRIES.max(entries * 2));
        if single {
            builder.setup_single_issuer();
        }
        if defer {
            builder.setup_defer_taskrun();
        }
        if coop {
            builder.setup_coop_taskrun();
        }
        if disabled {
            builder.setup_r_disabled();
        }
        match builder.build(entries) {
            Ok(ring) => return Ok((ring, name)),
            // An older kernel refuses flags it does not know; anything else is final.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// A provided buffer ring: `count` buffers of `size` bytes the kernel picks from as data
/// arrives, handed back with [`push`](Self::push) + [`publish`](Self::publish).
struct BufRing {
    entries: *mut BufRingEntry,
    entries_len: usize,
    bufs: *mut u8,
    bufs_len: usize,
    count: u16,
    size: usize,
    group: u16,
    tail: u16,
    registered: bool,
}

// Safety: the mappings are owned by this struct alone; the kernel's side of them belongs to the
// ring, which moves to the worker thread together with it.
unsafe impl Send for BufRing {}

fn map(len: usize) -> io::Result<*mut u8> {
    // Safety: a fresh private anonymous mapping; no existing memory is touched.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(ptr.cast())
}

impl BufRing {
    /// Maps the ring (page-aligned, as the kernel requires) and the buffers. `count` must be a
    /// power of two.
    fn new(count: u16, size: usize, group: u16) -> io::Result<BufRing> {
        debug_assert!(count.is_power_of_two());
        let entries_len = usize::from(count) * size_of::<BufRingEntry>();
        let bufs_len = usize::from(count)
            .checked_mul(size)
            .ok_or(io::ErrorKind::InvalidInput)?;
        let entries = map(entries_len)?.cast::<BufRingEntry>();
        let bufs = match map(bufs_len) {
            Ok(bufs) => bufs,
            Err(e) => {
                // Safety: the mapping made just above, unused.
                unsafe { libc::munmap(entries.cast(), entries_len) };
                return Err(e);
            }
        };
        Ok(BufRing {
            entries,
            entries_len,
            bufs,
            bufs_len,
            count,
            size,
            group,
            tail: 0,
            registered: false,
        })
    }

    /// Registers the ring with `ring` and hands it every buffer.
    fn register(&mut self, ring: &IoUring) -> io::Result<()> {
        // Safety: the entries mapping is `count` entries long, page-aligned, and stays mapped
        // until after the buffer group is unregistered or the ring is gone (see `Drop`).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                self.entries as u64,
                self.count,
                self.group,
                0,
            )?;
        }
        self.registered = true;
        for bid in 0..self.count {
            self.push(bid);
        }
        self.publish();
        Ok(())
    }

    /// Queues buffer `bid` for the kernel again (seen once [`publish`](Self::publish)ed).
    fn push(&mut self, bid: u16) {
        if bid >= self.count {
            return;
        }
        let index = usize::from(self.tail & (self.count - 1));
        // Safety: `index < count`, inside the entries mapping; the kernel reads only entries
        // between its head and the published tail, and this one is past the tail.
        let entry = unsafe { &mut *self.entries.add(index) };
        // Safety: `bid < count`, so the buffer lies inside the buffers mapping.
        entry.set_addr(unsafe { self.bufs.add(usize::from(bid) * self.size) } as u64);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the pushed buffers visible to the kernel.
    fn publish(&self) {
        // Safety: the tail field lives in the first entry of our mapping; the kernel reads it
        // concurrently, so it is written atomically with release ordering (liburing does so).
        let tail = unsafe { &*BufRingEntry::tail(self.entries).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    /// The first `len` bytes of buffer `bid`, which the kernel filled and handed to us.
    fn buf(&mut self, bid: u16, len: usize) -> &mut [u8] {
        if bid >= self.count {
            return &mut [];
        }
        // Safety: `bid < count` and `len <= size` keep the slice inside the buffers mapping; a
        // buffer handed back by a completion is ours until it is pushed again.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.bufs.add(usize::from(bid) * self.size),
                len.min(self.size),
            )
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.registered {
            // The kernel may still hold the group (an operation not yet cancelled): keep the
            // memory for the rest of the process rather than let it write into freed pages.
            return;
        }
        // Safety: our own mappings, no longer known to the kernel.
        unsafe {
            libc::munmap(self.entries.cast(), self.entries_len);
            libc::munmap(self.bufs.cast(), self.bufs_len);
        }
    }
}

/// The `msghdr` a multishot `recvmsg` reads its name and control sizes from.
struct MsgHeader(Box<libc::msghdr>);

// Safety: only the two lengths are set; every pointer in it is null.
unsafe impl Send for MsgHeader {}

impl MsgHeader {
    fn new() -> MsgHeader {
        // Safety: an all-zero msghdr is valid (null pointers, zero lengths).
        let mut msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        msg.msg_namelen = udp::NAME_BYTES as libc::socklen_t;
        msg.msg_controllen = udp::CONTROL_BYTES as _;
        MsgHeader(msg)
    }
}

/// Wakes a worker blocked in its ring (an eventfd the ring polls).
#[derive(Clone)]
pub struct Waker(Arc<OwnedFd>);

impl Waker {
    /// Wakes the worker.
    ///
    /// # Errors
    /// The OS error of the eventfd write.
    pub fn wake(&self) -> io::Result<()> {
        // Safety: eventfd_write(3) on an eventfd we own.
        if unsafe { libc::eventfd_write(self.0.as_raw_fd(), 1) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

/// What a completion is for, packed into its user data: kind in the top byte, a key or a
/// connection generation in the low 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Wake,
    UdpRecv,
    AcceptTcp,
    AcceptUnix,
    ConnRecv(u32),
    RedisConnect(u32),
    RedisSend(u32),
    RedisRecv(u32),
    Cancel,
}

impl Op {
    fn encode(self) -> u64 {
        let (kind, value): (u64, u32) = match self {
            Op::Wake => (1, 0),
            Op::UdpRecv => (2, 0),
            Op::AcceptTcp => (3, 0),
            Op::AcceptUnix => (4, 0),
            Op::ConnRecv(k) => (5, k),
            Op::RedisConnect(g) => (6, g),
            Op::RedisSend(g) => (7, g),
            Op::RedisRecv(g) => (8, g),
            Op::Cancel => (9, 0),
        };
        kind << 56 | u64::from(value)
    }

    fn decode(data: u64) -> Option<Op> {
        let value = data as u32;
        Some(match data >> 56 {
            1 => Op::Wake,
            2 => Op::UdpRecv,
            3 => Op::AcceptTcp,
            4 => Op::AcceptUnix,
            5 => Op::ConnRecv(value),
            6 => Op::RedisConnect(value),
            7 => Op::RedisSend(value),
            8 => Op::RedisRecv(value),
            9 => Op::Cancel,
            _ => return None,
        })
    }
}

struct Conn {
    fd: OwnedFd,
    intake: StreamConn,
    /// A multishot `recv` is in flight (the connection may not be dropped before its last
    /// completion, the one without `IORING_CQE_F_MORE`).
    armed: bool,
    /// Its `recv` is being cancelled because the pipeline is full.
    cancelling: bool,
    /// In [`Worker::idle`]: its buffered frames wait for room (or for stream buffers).
    waiting: bool,
    /// The peer closed, or the connection failed, while frames waited for room: it ends once
    /// they are taken.
    ended: bool,
    /// Shut down by the sweep: what it left unfinished is truncated, not a last frame.
    expired: bool,
}

/// The Redis connection's socket side; the protocol is in [`Session`].
struct Redis {
    session: Session,
    socket: Option<Socket>,
    /// Bumped per connection, so completions of a dropped one are recognised.
    generation: u32,
    connected: bool,
    addrs: Addresses,
    /// The address being connected to (read by the kernel when the connect is submitted).
    addr: Box<SockAddr>,
    /// Commands encoded while `sending` is on the wire.
    out: Vec<u8>,
    /// Commands on the wire; `sending[sent..]` is not written yet. The kernel reads it until
    /// the send reports back, so it is only touched when `send_busy` is false.
    sending: Vec<u8>,
    sent: usize,
    send_busy: bool,
    recv_busy: bool,
}

/// One worker: its ring, sockets, connections and Redis connection.
pub struct Worker {
    id: usize,
    // Dropped first: the buffer rings below must outlive it.
    ring: IoUring,
    ring_mode: &'static str,
    wake_fd: Arc<OwnedFd>,
    udp: Option<std::net::UdpSocket>,
    udp_armed: bool,
    udp_msg: MsgHeader,
    tcp: Option<std::net::TcpListener>,
    tcp_armed: bool,
    unix: Option<std::os::unix::net::UnixListener>,
    unix_armed: bool,
    udp_bufs: BufRing,
    udp_payload_bytes: usize,
    stream_bufs: BufRing,
    conns: Slab<Conn>,
    /// Connections waiting to be read again (the pipeline was full, or the stream buffer ring
    /// ran dry); stale keys are skipped by their `waiting` flag.
    idle: VecDeque<usize>,
    /// Operations submitted and not yet finished (their last completion not seen).
    in_flight: usize,
    closing: bool,
    intake: Intake,
    drops: KernelDrops,
    redis: Redis,
    batch_wait: BatchWait,
    completions: Vec<cqueue::Entry>,
    /// Stream bytes taken in this turn (see [`STREAM_TURN_BYTES`]).
    turn_bytes: usize,
    stats: Arc<Stats>,
    shutdown: Arc<AtomicBool>,
    shutdown_timeout: Duration,
    guard: ConnGuard,
    max_record_bytes: usize,
    last_meminfo: Instant,
}

impl Worker {
    /// Sets up the ring (disabled until [`run`](Self::run) enables it on the worker's own
    /// thread), its buffer rings, and the shutdown eventfd.
    ///
    /// # Errors
    /// When the ring, a buffer ring or the eventfd cannot be set up.
    pub fn new(
        id: usize,
        listeners: Listeners,
        config: &Config,
        buffer_records: usize,
        stats: Arc<Stats>,
        shutdown: Arc<AtomicBool>,
    ) -> io::Result<Worker> {
        let (ring, ring_mode) = build_ring(SQ_ENTRIES, true)?;
        // The ring waits instead of the sockets: they stay blocking, so the kernel parks each
        // operation on the socket rather than failing it with EAGAIN.
        listeners.udp.set_nonblocking(false)?;
        listeners.tcp.set_nonblocking(false)?;
        if let Some(unix) = &listeners.unix {
            unix.set_nonblocking(false)?;
        }
        // Room for a whole frame (prefix and newline included), at most the largest datagram.
        let udp_payload_bytes = config
            .max_record_bytes
            .saturating_add(8)
            .min(udp::DATAGRAM_BYTES);
        let mut udp_bufs = BufRing::new(
            UDP_BUFFERS,
            (UDP_HEADER_BYTES + udp_payload_bytes).next_multiple_of(64),
            UDP_GROUP,
        )?;
        udp_bufs.register(&ring)?;
        let mut stream_bufs = BufRing::new(STREAM_BUFFERS, STREAM_BUFFER_BYTES, STREAM_GROUP)?;
        stream_bufs.register(&ring)?;
        // Safety: eventfd(2) returns a new descriptor or -1.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // Safety: `raw` is a fresh descriptor nobody else owns.
        let wake_fd = Arc::new(unsafe { OwnedFd::from_raw_fd(raw) });
        let pipeline = super::pipeline(config, id, buffer_records)?;
        let now = Instant::now();
        let mut session = Session::new(config.redis.clone(), pipeline, Arc::clone(&stats), now);
        session.set_max_queue_length(config.max_queue_length);
        let guard = ConnGuard::new(config, Arc::clone(&stats), Instant::now());
        Ok(Worker {
            id,
            ring,
            ring_mode,
            wake_fd,
            udp: Some(listeners.udp),
            udp_armed: false,
            udp_msg: MsgHeader::new(),
            tcp: Some(listeners.tcp),
            tcp_armed: false,
            unix: listeners.unix,
            unix_armed: false,
            udp_bufs,
            udp_payload_bytes,
            stream_bufs,
            conns: Slab::new(),
            idle: VecDeque::new(),
            in_flight: 0,
            closing: false,
            intake: Intake::new(
                config.event.clone(),
                config.max_record_bytes,
                Arc::clone(&stats),
            ),
            drops: KernelDrops::new(Arc::clone(&stats)),
            redis: Redis {
                session,
                socket: None,
                generation: 0,
                connected: false,
                addrs: Addresses::default(),
                addr: Box::new(SockAddr::from(SocketAddr::from(([127, 0, 0, 1], 0)))),
                out: Vec::new(),
                sending: Vec::new(),
                sent: 0,
                send_busy: false,
                recv_busy: false,
            },
            batch_wait: BatchWait::default(),
            completions: Vec::with_capacity(REAP_BATCH),
            turn_bytes: 0,
            stats,
            shutdown,
            shutdown_timeout: config.shutdown_timeout,
            guard,
            max_record_bytes: config.max_record_bytes,
            last_meminfo: now,
        })
    }

    /// A handle that wakes this worker (used to signal shutdown).
    pub fn waker(&self) -> Waker {
        Waker(Arc::clone(&self.wake_fd))
    }

    /// Runs the loop until shutdown, then flushes.
    pub fn run(mut self) {
        let _span = tracing::info_span!("worker", id = self.id).entered();
        // The thread that enables a SINGLE_ISSUER ring is the one allowed to submit to it.
        if let Err(err) = self.ring.submitter().register_enable_rings() {
            tracing::error!(%err, "cannot enable the io_uring; this worker's sockets are not served");
            return;
        }
        debug!(
            mode = self.ring_mode,
            udp_payload_bytes = self.udp_payload_bytes,
            "io_uring worker running"
        );
        self.push(
            opcode::PollAdd::new(Fd(self.wake_fd.as_raw_fd()), libc::POLLIN as u32)
                .multi(true)
                .build(),
            Op::Wake,
        );
        let mut took = 0;
        let mut turn = Instant::now();
        let mut backlog = false;
        loop {
            let now = Instant::now();
            let mut hold = self.batch_wait.handle_turn(took, turn);
            if backlog || self.redis.send_busy {
                // Completions are waiting already: nothing to gather. Or a push waits for room
                // in the socket: with DEFER_TASKRUN the kernel moves it on only while this
                // thread waits, and a wait held for a batch does not wake for it, so Redis
                // would go without input for the whole hold.
                hold = Duration::ZERO;
            }
            self.arm_listeners();
            self.resume_idle(now);
            self.poll_redis(now);
            self.udp_bufs.publish();
            self.stream_bufs.publish();
            self.update_gauge();
            if self.shutdown.load(Ordering::SeqCst) {
                break;
            }
            let deadline = Some(
                self.redis
                    .session
                    .deadline()
                    .map_or(self.guard.deadline(), |d| d.min(self.guard.deadline())),
            );
            self.wait(hold, deadline, now);
            turn = Instant::now();
            let before = self.stats.received.load(Ordering::Relaxed);
            backlog = self.reap(turn);
            took = (self.stats.received.load(Ordering::Relaxed) - before) as usize;
            if turn.duration_since(self.last_meminfo) >= Duration::from_secs(1) {
                self.check_kernel_drops(turn);
            }
            if self.guard.sweep_due(turn) {
                self.sweep(turn);
            }
        }
        self.finish();
    }

    fn update_gauge(&self) {
        super::update_gauges(&self.stats, self.redis.session.pipeline_ref());
    }

    fn check_kernel_drops(&mut self, now: Instant) {
        self.last_meminfo = now;
        if let Some(udp) = &self.udp {
            if let Some(counter) = udp::meminfo_drops(udp.as_raw_fd()) {
                self.drops.observe(counter);
            }
        }
    }

    /// Queues `entry` for submission, submitting first when the queue is full.
    fn push(&mut self, entry: squeue::Entry, op: Op) {
        let entry = entry.user_data(op.encode());
        loop {
            // Safety: every buffer and address an entry points at is owned by this worker
            // (buffer rings, `udp_msg`, `redis.addr`, `redis.sending`) and stays valid and
            // untouched until the operation's last completion is reaped.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                self.in_flight += 1;
                return;
            }
            if let Err(err) = self.ring.submit() {
                if err.raw_os_error() != Some(libc::EBUSY) {
                    warn!(%err, "io_uring submit failed");
                }
            }
        }
    }

    /// Submits what is queued and waits: for a batch when `hold` is set, else for one
    /// completion or Redis's deadline.
    fn wait(&mut self, hold: Duration, deadline: Option<Instant>, now: Instant) {
        let until_deadline = deadline.map(|d| d.saturating_duration_since(now));
        let (want, timeout) = if hold > Duration::ZERO {
            let t = until_deadline.map_or(hold, |d| d.min(hold));
            (batch::TARGET, Some(t))
        } else {
            (1, until_deadline)
        };
        let result = match timeout {
            Some(t) => {
                let ts = Timespec::from(t);
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(want, &args)
            }
            None => self.ring.submitter().submit_and_wait(want),
        };
        if let Err(err) = result {
            match err.raw_os_error() {
                Some(libc::ETIME | libc::EINTR | libc::EBUSY) => {}
                _ => warn!(%err, "io_uring wait failed"),
            }
        }
    }

    /// Takes the completions the ring holds and handles them, until a turn's worth of stream
    /// bytes ([`STREAM_TURN_BYTES`]); the rest stay in the ring for the next turn. Returns
    /// whether some were left.
    fn reap(&mut self, now: Instant) -> bool {
        let mut completions = std::mem::take(&mut self.completions);
        self.turn_bytes = 0;
        let left = loop {
            completions.clear();
            if self.turn_bytes >= STREAM_TURN_BYTES {
                break !self.ring.completion().is_empty();
            }
            completions.extend(self.ring.completion().take(REAP_BATCH));
            if completions.is_empty() {
                break false;
            }
            for cqe in &completions {
                if !cqueue::more(cqe.flags()) {
                    self.in_flight = self.in_flight.saturating_sub(1);
                }
                match Op::decode(cqe.user_data()) {
                    Some(Op::UdpRecv) => self.handle_udp(cqe, now),
                    Some(Op::ConnRecv(key)) => self.handle_conn_recv(key as usize, cqe, now),
                    Some(Op::AcceptTcp) => self.handle_accept(false, cqe),
                    Some(Op::AcceptUnix) => self.handle_accept(true, cqe),
                    Some(Op::RedisConnect(g)) => self.handle_redis_connect(g, cqe.result(), now),
                    Some(Op::RedisSend(g)) => self.handle_redis_send(g, cqe.result(), now),
                    Some(Op::RedisRecv(g)) => self.handle_redis_recv(g, cqe, now),
                    Some(Op::Wake) => self.handle_wake(cqe),
                    Some(Op::Cancel) | None => {}
                }
            }
        };
        self.completions = completions;
        left
    }

    fn handle_wake(&mut self, cqe: &cqueue::Entry) {
        let mut value: libc::eventfd_t = 0;
        // Safety: eventfd_read(3) on our nonblocking eventfd into a local.
        unsafe { libc::eventfd_read(self.wake_fd.as_raw_fd(), &mut value) };
        if !cqueue::more(cqe.flags()) && !self.closing {
            self.push(
                opcode::PollAdd::new(Fd(self.wake_fd.as_raw_fd()), libc::POLLIN as u32)
                    .multi(true)
                    .build(),
                Op::Wake,
            );
        }
    }

    // ---------------------------------------------------------------------------------------
    // UDP

    fn arm_listeners(&mut self) {
        if self.closing {
            return;
        }
        if let (Some(udp), false) = (&self.udp, self.udp_armed) {
            let entry = opcode::RecvMsgMulti::new(
                Fd(udp.as_raw_fd()),
                std::ptr::addr_of!(*self.udp_msg.0),
                UDP_GROUP,
            )
            .build();
            self.udp_armed = true;
            self.push(entry, Op::UdpRecv);
        }
        if let (Some(tcp), false) = (&self.tcp, self.tcp_armed) {
            let entry = opcode::AcceptMulti::new(Fd(tcp.as_raw_fd()))
                .flags(libc::SOCK_CLOEXEC)
                .build();
            self.tcp_armed = true;
            self.push(entry, Op::AcceptTcp);
        }
        if let (Some(unix), false) = (&self.unix, self.unix_armed) {
            let entry = opcode::AcceptMulti::new(Fd(unix.as_raw_fd()))
                .flags(libc::SOCK_CLOEXEC)
                .build();
            self.unix_armed = true;
            self.push(entry, Op::AcceptUnix);
        }
    }

    fn handle_udp(&mut self, cqe: &cqueue::Entry, now: Instant) {
        if !cqueue::more(cqe.flags()) {
            self.udp_armed = false;
        }
        let result = cqe.result();
        let Some(bid) = cqueue::buffer_select(cqe.flags()) else {
            match -result {
                0 | libc::ENOBUFS | libc::ECANCELED => {}
                errno => debug!(err = %io::Error::from_raw_os_error(errno), "udp receive error"),
            }
            return;
        };
        let len = usize::try_from(result).unwrap_or(0);
        let buf = self.udp_bufs.buf(bid, len);
        let parsed = RecvMsgOut::parse(buf, &self.udp_msg.0).ok().map(|out| {
            let payload = out.payload_data();
            let start = payload.as_ptr() as usize - buf.as_ptr() as usize;
            (
                start..start + payload.len(),
                Peer(udp::peer_addr(out.name_data())),
                out.is_payload_truncated(),
                out.incoming_payload_len() as usize,
                udp::rxq_ovfl(out.control_data()),
            )
        });
        match parsed {
            Some((range, peer, truncated, size, drops)) => {
                if let Some(counter) = drops {
                    self.drops.observe(counter);
                }
                if truncated {
                    self.intake.handle_truncated_datagram(size, &peer, now);
                } else {
                    self.intake.handle_datagram(
                        &mut buf[range],
                        &peer,
                        self.redis.session.pipeline(),
                        now,
                    );
                }
            }
            None => debug!(len, "unreadable multishot recvmsg result"),
        }
        self.udp_bufs.push(bid);
    }

    // ---------------------------------------------------------------------------------------
    // Streams

    fn handle_accept(&mut self, unix: bool, cqe: &cqueue::Entry) {
        if !cqueue::more(cqe.flags()) {
            if unix {
                self.unix_armed = false;
            } else {
                self.tcp_armed = false;
            }
        }
        let result = cqe.result();
        if result < 0 {
            if result != -libc::ECANCELED {
                // EMFILE and friends: the connection waits in the backlog; re-armed next turn.
                warn!(err = %io::Error::from_raw_os_error(-result), "accept failed");
            }
            return;
        }
        // Safety: a successful accept returns a new descriptor that nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(result) };
        if self.closing {
            return;
        }
        let peer = if unix {
            "unix".to_owned()
        } else {
            SockRef::from(&fd)
                .peer_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .map_or_else(|| "tcp".to_owned(), |a| a.to_string())
        };
        let now = Instant::now();
        if !self.guard.admit(self.conns.len(), now) {
            return;
        }
        debug!(%peer, "connection accepted");
        let key = self.conns.insert(Conn {
            fd,
            intake: StreamConn::new(peer, self.max_record_bytes, now),
            armed: false,
            cancelling: false,
            waiting: false,
            ended: false,
            expired: false,
        });
        self.arm_conn(key);
    }

    fn arm_conn(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Ok(tag) = u32::try_from(key) else {
            return;
        };
        conn.armed = true;
        let entry = opcode::RecvMulti::new(Fd(conn.fd.as_raw_fd()), STREAM_GROUP).build();
        self.push(entry, Op::ConnRecv(tag));
    }

    /// Stops `key`'s receive: the pipeline is full, so new data should stay in the kernel.
    fn cancel_conn(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !conn.armed || conn.cancelling {
            return;
        }
        conn.cancelling = true;
        let target = Op::ConnRecv(key as u32).encode();
        self.push(opcode::AsyncCancel::new(target).build(), Op::Cancel);
    }

    fn handle_conn_recv(&mut self, key: usize, cqe: &cqueue::Entry, now: Instant) {
        let result = cqe.result();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !cqueue::more(cqe.flags()) {
            conn.armed = false;
            conn.cancelling = false;
        }
        // Whatever arrived is kept, even while the pipeline is full: the kernel has consumed it.
        if let Some(bid) = cqueue::buffer_select(cqe.flags()) {
            let len = usize::try_from(result).unwrap_or(0);
            self.turn_bytes += len;
            conn.intake
                .buf
                .extend_from_slice(self.stream_bufs.buf(bid, len));
            self.stream_bufs.push(bid);
        }
        let pipeline = self.redis.session.pipeline();
        if conn.expired {
            // The sweep shut the socket down: the receive ends with 0 soon.
            if !conn.armed {
                self.intake
                    .handle_stream_abort(&mut conn.intake, pipeline, now);
                self.close(key);
            }
            return;
        }
        match result {
            n if n > 0 || n == -libc::ENOBUFS || n == -libc::ECANCELED => {}
            0 => conn.ended = true,
            n => {
                debug!(peer = %conn.intake.peer, err = %io::Error::from_raw_os_error(-n), "connection error");
                conn.ended = true;
            }
        }
        if self.closing {
            // `finish` drains and ends every connection still open.
            if conn.ended && !conn.armed {
                self.intake
                    .handle_stream_end(&mut conn.intake, pipeline, now);
                self.close(key);
            }
            return;
        }
        if conn.waiting {
            // `resume_idle` takes it on once there is room.
        } else if result == -libc::ENOBUFS {
            // The stream ring ran dry; the buffers are back by the next turn.
            conn.waiting = true;
            self.idle.push_back(key);
        } else if self.intake.handle_stream(&mut conn.intake, pipeline, now) {
            if conn.ended {
                self.end_conn(key, now);
            } else if !conn.armed {
                // The kernel ended the receive (cancelled, or for its own reasons): another one.
                self.arm_conn(key);
            }
            return;
        } else {
            conn.waiting = true;
            self.idle.push_back(key);
        }
        self.cancel_conn(key);
    }

    /// `key`'s peer is gone and its frames are taken: the rest becomes a last frame.
    fn end_conn(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        self.intake
            .handle_stream_end(&mut conn.intake, self.redis.session.pipeline(), now);
        if !conn.armed {
            self.close(key);
        }
    }

    /// Takes on the connections that waited for room (or for stream buffers), while there is
    /// room: their buffered frames first, then a new receive.
    fn resume_idle(&mut self, now: Instant) {
        for _ in 0..self.idle.len() {
            if self.closing || self.redis.session.pipeline_ref().is_full() {
                return;
            }
            let Some(key) = self.idle.pop_front() else {
                return;
            };
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if !conn.waiting {
                continue;
            }
            if !self
                .intake
                .handle_stream(&mut conn.intake, self.redis.session.pipeline(), now)
            {
                self.idle.push_back(key);
                continue;
            }
            conn.waiting = false;
            if conn.ended {
                self.end_conn(key, now);
            } else if !conn.armed {
                self.arm_conn(key);
            }
            // Else its cancel has not landed yet; the cancel's completion arms it again.
        }
    }

    /// Closes the connections that stalled mid-frame or idled past the limits. One with a
    /// receive in flight is shut down instead: its receive then completes with 0 and the
    /// usual end-of-stream path closes it, so no completion arrives for a reused key.
    fn sweep(&mut self, now: Instant) {
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| self.guard.expired(&c.intake, now))
            .map(|(k, _)| k)
            .collect();
        for key in expired {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            if conn.armed {
                conn.expired = true;
                // Safety: shutdown(2) on a descriptor this connection owns.
                unsafe { libc::shutdown(conn.fd.as_raw_fd(), libc::SHUT_RDWR) };
            } else {
                self.intake.handle_stream_abort(
                    &mut conn.intake,
                    self.redis.session.pipeline(),
                    now,
                );
                self.close(key);
            }
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(conn) = self.conns.try_remove(key) {
            debug!(peer = %conn.intake.peer, "connection closed");
        }
    }

    // ---------------------------------------------------------------------------------------
    // Redis

    /// Connects when due, encodes waiting records and sends them when the wire is free.
    fn poll_redis(&mut self, now: Instant) {
        let redis = &mut self.redis;
        if redis.session.connect_timed_out(now) {
            self.fail_redis(SinkError::ConnectTimeout, now);
        }
        if self.redis.session.poll_connect(now) {
            if let Err(err) = self.connect_redis() {
                self.fail_redis(err, now);
            }
            return;
        }
        let redis = &mut self.redis;
        if !redis.connected {
            return;
        }
        redis.session.poll_transmit(now, &mut redis.out);
        if redis.send_busy || redis.out.is_empty() {
            return;
        }
        std::mem::swap(&mut redis.out, &mut redis.sending);
        redis.out.clear();
        redis.sent = 0;
        self.send_redis();
    }

    fn send_redis(&mut self) {
        let redis = &mut self.redis;
        let Some(socket) = &redis.socket else {
            return;
        };
        let rest = &redis.sending[redis.sent..];
        let entry = opcode::Send::new(
            Fd(socket.as_raw_fd()),
            rest.as_ptr(),
            u32::try_from(rest.len()).unwrap_or(u32::MAX),
        )
        .flags(libc::MSG_NOSIGNAL)
        .build();
        redis.send_busy = true;
        let op = Op::RedisSend(redis.generation);
        self.push(entry, op);
        // On the wire now rather than after the rest of the turn: Redis works while we decode.
        if let Err(err) = self.ring.submit() {
            if err.raw_os_error() != Some(libc::EBUSY) {
                warn!(%err, "io_uring submit failed");
            }
        }
    }

    fn connect_redis(&mut self) -> Result<(), SinkError> {
        let redis = &mut self.redis;
        let addr = redis.addrs.next(redis.session.target())?;
        let socket = stream_socket(&addr)?;
        redis.generation = redis.generation.wrapping_add(1);
        *redis.addr = addr;
        let entry = opcode::Connect::new(
            Fd(socket.as_raw_fd()),
            redis.addr.as_ptr().cast(),
            redis.addr.len(),
        )
        .build();
        redis.socket = Some(socket);
        let op = Op::RedisConnect(redis.generation);
        self.push(entry, op);
        Ok(())
    }

    fn handle_redis_connect(&mut self, generation: u32, result: i32, now: Instant) {
        if generation != self.redis.generation || self.redis.socket.is_none() {
            return;
        }
        if result < 0 {
            self.fail_redis(io::Error::from_raw_os_error(-result).into(), now);
            return;
        }
        self.redis.connected = true;
        self.redis.addrs.connected();
        self.redis.session.handle_connected(now);
        self.arm_redis_recv();
        self.poll_redis(now);
    }

    fn arm_redis_recv(&mut self) {
        let redis = &mut self.redis;
        let Some(socket) = &redis.socket else {
            return;
        };
        let entry = opcode::Recv::new(
            Fd(socket.as_raw_fd()),
            std::ptr::null_mut(),
            STREAM_BUFFER_BYTES as u32,
        )
        .buf_group(STREAM_GROUP)
        .build()
        .flags(squeue::Flags::BUFFER_SELECT);
        redis.recv_busy = true;
        let op = Op::RedisRecv(redis.generation);
        self.push(entry, op);
    }

    fn handle_redis_send(&mut self, generation: u32, result: i32, now: Instant) {
        let redis = &mut self.redis;
        redis.send_busy = false;
        if generation != redis.generation || !redis.connected {
            redis.sending.clear();
            redis.sent = 0;
            return;
        }
        match result {
            n if n > 0 => {
                redis.sent += n as usize;
                if redis.sent < redis.sending.len() {
                    self.send_redis();
                } else {
                    redis.sending.clear();
                    redis.sent = 0;
                    self.poll_redis(now);
                }
            }
            0 => self.fail_redis(SinkError::Closed, now),
            n => self.fail_redis(io::Error::from_raw_os_error(-n).into(), now),
        }
    }

    fn handle_redis_recv(&mut self, generation: u32, cqe: &cqueue::Entry, now: Instant) {
        let result = cqe.result();
        let current = generation == self.redis.generation && self.redis.connected;
        if current {
            self.redis.recv_busy = false;
        }
        let mut outcome = Ok(());
        if let Some(bid) = cqueue::buffer_select(cqe.flags()) {
            let len = usize::try_from(result).unwrap_or(0);
            if current {
                let data = self.stream_bufs.buf(bid, len);
                outcome = self.redis.session.handle_received(data, now);
            }
            self.stream_bufs.push(bid);
        }
        if !current {
            return;
        }
        match (result, outcome) {
            (_, Err(err)) => self.fail_redis(err, now),
            (0, _) => self.fail_redis(SinkError::Closed, now),
            (n, _) if n > 0 || n == -libc::ENOBUFS || n == -libc::EINTR => {
                self.arm_redis_recv();
                self.poll_redis(now);
            }
            (n, _) => self.fail_redis(io::Error::from_raw_os_error(-n).into(), now),
        }
    }

    /// Drops the connection; everything unacknowledged is sent again after the backoff.
    fn fail_redis(&mut self, err: SinkError, now: Instant) {
        let redis = &mut self.redis;
        if let Some(socket) = redis.socket.take() {
            // Ends the operations still parked on it (they hold the socket open otherwise);
            // their completions carry an old generation and are ignored.
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
        redis.connected = false;
        redis.recv_busy = false;
        redis.out.clear();
        redis.session.handle_failure(&err, now);
    }

    // ---------------------------------------------------------------------------------------
    // Shutdown

    /// Stops accepting, takes in what the sockets already hold, and flushes to Redis until
    /// empty or the shutdown timeout.
    fn finish(mut self) {
        self.closing = true;
        let start = Instant::now();
        // Stop every receive; what they already took is reaped below.
        let mut cancels = Vec::new();
        if self.udp_armed {
            cancels.push(Op::UdpRecv);
        }
        if self.tcp_armed {
            cancels.push(Op::AcceptTcp);
        }
        if self.unix_armed {
            cancels.push(Op::AcceptUnix);
        }
        for (key, conn) in &self.conns {
            if conn.armed {
                cancels.push(Op::ConnRecv(key as u32));
            }
        }
        for op in cancels {
            self.push(opcode::AsyncCancel::new(op.encode()).build(), Op::Cancel);
        }
        self.tcp = None;
        self.unix = None;
        self.redis.session.pipeline().set_capacity(usize::MAX);
        let grace = start + CANCEL_GRACE;
        while (self.udp_armed
            || self.tcp_armed
            || self.unix_armed
            || self.conns.iter().any(|(_, c)| c.armed))
            && Instant::now() < grace
        {
            let now = Instant::now();
            self.wait(Duration::ZERO, Some(now + Duration::from_millis(10)), now);
            self.reap(Instant::now());
        }
        let now = Instant::now();
        self.drain_udp(now);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.drain_conn(key, now);
        }
        self.udp_bufs.publish();
        self.stream_bufs.publish();

        let deadline = now + self.shutdown_timeout;
        loop {
            let now = Instant::now();
            self.poll_redis(now);
            self.stream_bufs.publish();
            self.update_gauge();
            if self.redis.session.pipeline_ref().is_empty() {
                break;
            }
            if now >= deadline {
                let lost = self.redis.session.abandon();
                Stats::add(&self.stats.dropped_shutdown, lost as u64);
                break;
            }
            let wake = self
                .redis
                .session
                .deadline()
                .unwrap_or(deadline)
                .min(deadline)
                .max(now + Duration::from_millis(1));
            self.wait(Duration::ZERO, Some(wake), now);
            self.reap(Instant::now());
        }
        self.update_gauge();
        self.release();
        info!("worker stopped");
    }

    /// Reads what the UDP socket still holds, directly (the multishot receive is gone).
    fn drain_udp(&mut self, now: Instant) {
        let Some(udp) = self.udp.take() else {
            return;
        };
        let mut batch = DatagramBatch::new();
        while let Ok(n) = batch.read(udp.as_raw_fd()) {
            for i in 0..n {
                let Some(d) = batch.get(i) else {
                    break;
                };
                if let Some(counter) = d.drops {
                    self.drops.observe(counter);
                }
                if d.truncated {
                    self.intake
                        .handle_truncated_datagram(d.payload.len(), &d.peer, now);
                } else {
                    self.intake.handle_datagram(
                        d.payload,
                        &d.peer,
                        self.redis.session.pipeline(),
                        now,
                    );
                }
            }
        }
        if let Some(counter) = udp::meminfo_drops(udp.as_raw_fd()) {
            self.drops.observe(counter);
        }
    }

    /// Takes what the kernel holds for one connection (one pass: a client still sending is cut
    /// off here), then ends it.
    fn drain_conn(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !conn.armed {
            loop {
                conn.intake.buf.reserve(STREAM_BUFFER_BYTES);
                match read_nonblocking(conn.fd.as_raw_fd(), &mut conn.intake.buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        self.intake
            .handle_stream_end(&mut conn.intake, self.redis.session.pipeline(), now);
        if !conn.armed {
            self.close(key);
        }
    }

    /// Ends the Redis connection and waits (briefly) for the kernel to give back every
    /// buffer before the rings go.
    fn release(&mut self) {
        if let Some(socket) = self.redis.socket.take() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
        self.redis.connected = false;
        let grace = Instant::now() + CANCEL_GRACE;
        while self.in_flight > 1 && Instant::now() < grace {
            let now = Instant::now();
            self.wait(Duration::ZERO, Some(now + Duration::from_millis(10)), now);
            self.reap(Instant::now());
        }
        // Only the eventfd poll may be left (it never touches a buffer).
        if self.in_flight <= 1 {
            let submitter = self.ring.submitter();
            for bufs in [&mut self.udp_bufs, &mut self.stream_bufs] {
                if submitter.unregister_buf_ring(bufs.group).is_ok() {
                    bufs.registered = false;
                }
            }
        }
    }
}

/// Reads from `fd` into the spare capacity of `buf` without blocking.
fn read_nonblocking(fd: RawFd, buf: &mut BytesMut) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    // Safety: recv(2) writes at most `spare.len()` bytes into memory we own.
    let n = unsafe {
        libc::recv(
            fd,
            spare.as_mut_ptr().cast(),
            spare.len(),
            libc::MSG_DONTWAIT,
        )
    };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    // Safety: the first `n` spare bytes were initialised by recv(2) just above.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        for op in [
            Op::Wake,
            Op::UdpRecv,
            Op::AcceptTcp,
            Op::AcceptUnix,
            Op::ConnRecv(0),
            Op::ConnRecv(u32::MAX),
            Op::RedisConnect(7),
            Op::RedisSend(8),
            Op::RedisRecv(9),
            Op::Cancel,
        ] {
            assert_eq!(Op::decode(op.encode()), Some(op));
        }
        assert_eq!(Op::decode(0), None);
    }

    #[test]
    fn kernel_releases() {
        assert_eq!(parse_release("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(parse_release("6.18.44-fc-v782"), Some((6, 18)));
        assert_eq!(parse_release("5.15"), Some((5, 15)));
        assert_eq!(parse_release(""), None);
        assert!(parse_release("5.19.0").is_some_and(|v| v < MIN_KERNEL));
    }

    #[test]
    fn buffer_ring_hands_out_and_takes_back_buffers() {
        if probe().is_err() {
            return;
        }
        let (ring, _) = build_ring(8, false).unwrap();
        let mut bufs = BufRing::new(4, 128, 3).unwrap();
        bufs.register(&ring).unwrap();
        assert_eq!(bufs.tail, 4);
        bufs.buf(2, 200).fill(7);
        assert_eq!(bufs.buf(2, 200).len(), 128, "clamped to the buffer size");
        assert!(bufs.buf(4, 1).is_empty(), "no such buffer");
        bufs.push(2);
        bufs.publish();
        assert_eq!(bufs.tail, 5);
        ring.submitter().unregister_buf_ring(3).unwrap();
        bufs.registered = false;
    }
}
