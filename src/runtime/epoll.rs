//! The readiness-based engine (epoll through mio): one thread per worker owning its UDP socket,
//! TCP and unix listeners, their connections and its Redis connection. Reads are batched per
//! wakeup (`recvmmsg` for datagrams, large reads for streams), and under load the loop holds off
//! its next wait a little (`batch::BatchWait`) so that each wakeup finds many records.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mio::event::Source;
use mio::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;
use tracing::{debug, info, warn};

use super::batch::BatchWait;
use super::udp::{self, DatagramBatch, KernelDrops};
use super::{ConnGuard, Listeners};
use crate::config::Config;
use crate::intake::{Intake, StreamConn};
use crate::redis::sink::Sink;
use crate::stats::Stats;

const UDP: Token = Token(0);
const TCP: Token = Token(1);
const UNIX: Token = Token(2);
const REDIS: Token = Token(3);
const WAKER: Token = Token(4);
const FIRST_CONN: usize = 16;

/// Datagrams read per wakeup before other sockets get a turn.
const UDP_BUDGET: usize = 1024;
/// Bytes read from one connection per turn.
const STREAM_BUDGET: usize = 1 << 20;
/// Read size for streams.
const READ_CHUNK: usize = 64 * 1024;

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn source(&mut self) -> &mut dyn Source {
        match self {
            Stream::Tcp(s) => s,
            Stream::Unix(s) => s,
        }
    }
}

impl Stream {
    fn fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// Reads from `fd` into the spare capacity of `buf`, without zeroing it first.
fn read_into(fd: RawFd, buf: &mut BytesMut) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    // Safety: read(2) writes at most `spare.len()` bytes into memory we own and never reads it.
    let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), spare.len()) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    // Safety: the first `n` spare bytes were initialised by read(2) just above.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

struct Conn {
    stream: Stream,
    intake: StreamConn,
    /// In the ready list (readable, or holding frames while the buffer was full).
    queued: bool,
}

/// One worker: its sockets, its connections, its Redis sink.
pub struct Worker {
    id: usize,
    poll: Poll,
    waker: Arc<Waker>,
    udp: Option<UdpSocket>,
    tcp: Option<TcpListener>,
    unix: Option<UnixListener>,
    conns: Slab<Conn>,
    ready: VecDeque<usize>,
    udp_ready: bool,
    intake: Intake,
    datagrams: DatagramBatch,
    drops: KernelDrops,
    batch_wait: BatchWait,
    last_meminfo: Instant,
    max_record_bytes: usize,
    sink: Sink,
    stats: Arc<Stats>,
    shutdown: Arc<AtomicBool>,
    shutdown_timeout: Duration,
    guard: ConnGuard,
}

impl Worker {
    /// Registers the sockets with a new poller.
    ///
    /// # Errors
    /// When the poller cannot be created or a socket registered.
    pub fn new(
        id: usize,
        listeners: Listeners,
        config: &Config,
        buffer_records: usize,
        stats: Arc<Stats>,
        shutdown: Arc<AtomicBool>,
    ) -> io::Result<Worker> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut udp = UdpSocket::from_std(listeners.udp);
        let mut tcp = TcpListener::from_std(listeners.tcp);
        let mut unix = listeners.unix.map(UnixListener::from_std);
        poll.registry()
            .register(&mut udp, UDP, Interest::READABLE)?;
        poll.registry()
            .register(&mut tcp, TCP, Interest::READABLE)?;
        if let Some(unix) = &mut unix {
            poll.registry().register(unix, UNIX, Interest::READABLE)?;
        }
        let pipeline = super::pipeline(config, id, buffer_records)?;
        let mut sink = Sink::new(
            config.redis.clone(),
            REDIS,
            pipeline,
            Arc::clone(&stats),
            Instant::now(),
        );
        sink.session().set_max_queue_length(config.max_queue_length);
        let guard = ConnGuard::new(config, Arc::clone(&stats), Instant::now());
        Ok(Worker {
            id,
            poll,
            waker,
            udp: Some(udp),
            tcp: Some(tcp),
            unix,
            conns: Slab::new(),
            ready: VecDeque::new(),
            udp_ready: true,
            intake: Intake::new(
                config.event.clone(),
                config.max_record_bytes,
                Arc::clone(&stats),
            ),
            datagrams: DatagramBatch::new(),
            drops: KernelDrops::new(Arc::clone(&stats)),
            batch_wait: BatchWait::default(),
            last_meminfo: Instant::now(),
            max_record_bytes: config.max_record_bytes,
            sink,
            stats,
            shutdown,
            shutdown_timeout: config.shutdown_timeout,
            guard,
        })
    }

    /// Wakes this worker's loop (used to signal shutdown).
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// Runs the loop until shutdown, then flushes.
    pub fn run(mut self) {
        let _span = tracing::info_span!("worker", id = self.id).entered();
        let mut events = Events::with_capacity(1024);
        let mut took = 0;
        let mut turn = Instant::now();
        loop {
            let now = Instant::now();
            let busy =
                self.udp_ready || (!self.ready.is_empty() && !self.sink.pipeline_ref().is_full());
            let hold = self.batch_wait.handle_turn(took, turn);
            let timeout = if busy {
                Some(Duration::ZERO)
            } else {
                if hold > Duration::ZERO {
                    // Records are arriving fast: let a batch gather in the kernel rather than
                    // wake for each one.
                    let until = self
                        .sink
                        .deadline()
                        .map_or(hold, |d| d.saturating_duration_since(now).min(hold));
                    std::thread::sleep(until);
                }
                let deadline = self
                    .sink
                    .deadline()
                    .map_or(self.guard.deadline(), |d| d.min(self.guard.deadline()));
                Some(deadline.saturating_duration_since(Instant::now()))
            };
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() != io::ErrorKind::Interrupted {
                    warn!(worker = self.id, %err, "poll failed");
                }
                continue;
            }
            let now = Instant::now();
            turn = now;
            let before = self.stats.received.load(Ordering::Relaxed);
            for event in events.iter() {
                match event.token() {
                    UDP => self.udp_ready = true,
                    TCP | UNIX => self.accept(event.token()),
                    REDIS => self.sink.handle_event(self.poll.registry(), event, now),
                    WAKER => {}
                    Token(n) => self.mark_ready(n - FIRST_CONN),
                }
            }
            if self.shutdown.load(Ordering::SeqCst) {
                break;
            }
            self.read_udp(now);
            self.read_streams(now);
            self.sink.poll(self.poll.registry(), now);
            self.update_gauge();
            took = (self.stats.received.load(Ordering::Relaxed) - before) as usize;
            if now.duration_since(self.last_meminfo) >= Duration::from_secs(1) {
                self.check_kernel_drops(now);
            }
            if self.guard.sweep_due(now) {
                self.sweep(now);
            }
        }
        self.finish();
    }

    fn check_kernel_drops(&mut self, now: Instant) {
        self.last_meminfo = now;
        if let Some(udp) = &self.udp {
            if let Some(counter) = udp::meminfo_drops(udp.as_raw_fd()) {
                self.drops.observe(counter);
            }
        }
    }

    fn update_gauge(&self) {
        super::update_gauges(&self.stats, self.sink.pipeline_ref());
    }

    fn mark_ready(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.queued {
                conn.queued = true;
                self.ready.push_back(key);
            }
        }
    }

    fn accept(&mut self, token: Token) {
        loop {
            let accepted = match token {
                TCP => match &self.tcp {
                    Some(l) => l.accept().map(|(s, peer)| {
                        let _ = s.set_nodelay(true);
                        (Stream::Tcp(s), peer.to_string())
                    }),
                    None => return,
                },
                _ => match &self.unix {
                    Some(l) => l
                        .accept()
                        .map(|(s, _)| (Stream::Unix(s), "unix".to_owned())),
                    None => return,
                },
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    // EMFILE and friends: the connection waits in the backlog; try later.
                    warn!(worker = self.id, %err, "accept failed");
                    return;
                }
            };
            let now = Instant::now();
            if !self.guard.admit(self.conns.len(), now) {
                continue;
            }
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            let mut conn = Conn {
                stream,
                intake: StreamConn::new(peer, self.max_record_bytes, now),
                queued: true,
            };
            if let Err(err) = self.poll.registry().register(
                conn.stream.source(),
                Token(FIRST_CONN + key),
                Interest::READABLE,
            ) {
                warn!(worker = self.id, %err, "cannot watch a new connection");
                continue;
            }
            debug!(peer = %conn.intake.peer, "connection accepted");
            entry.insert(conn);
            // Data may have arrived before registration: read once without waiting for an edge.
            self.ready.push_back(key);
        }
    }

    fn read_udp(&mut self, now: Instant) {
        if !self.udp_ready {
            return;
        }
        let Some(udp) = self.udp.take() else {
            self.udp_ready = false;
            return;
        };
        let fd = udp.as_raw_fd();
        let mut taken = 0;
        while taken < UDP_BUDGET {
            let n = match self.datagrams.read(fd) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.udp_ready = false;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    // An ICMP error queued on the socket, say: reported once, then reading goes on.
                    debug!(worker = self.id, %err, "udp receive error");
                    continue;
                }
            };
            taken += n;
            for i in 0..n {
                let Some(d) = self.datagrams.get(i) else {
                    break;
                };
                if let Some(counter) = d.drops {
                    self.drops.observe(counter);
                }
                if d.truncated {
                    self.intake
                        .handle_truncated_datagram(d.payload.len(), &d.peer, now);
                } else {
                    self.intake
                        .handle_datagram(d.payload, &d.peer, self.sink.pipeline(), now);
                }
            }
            if n < udp::BATCH {
                // A partial batch: the socket is (almost certainly) empty; epoll says when not.
                self.udp_ready = false;
                break;
            }
        }
        self.udp = Some(udp);
    }

    fn read_streams(&mut self, now: Instant) {
        for _ in 0..self.ready.len() {
            if self.sink.pipeline_ref().is_full() {
                return;
            }
            let Some(key) = self.ready.pop_front() else {
                return;
            };
            match self.read_conn(key, now) {
                ConnState::Drained => {
                    if let Some(conn) = self.conns.get_mut(key) {
                        conn.queued = false;
                    }
                }
                ConnState::More => self.ready.push_back(key),
                ConnState::Closed => self.close(key),
            }
        }
    }

    /// Decodes what `key` has buffered and reads more, within the budget.
    fn read_conn(&mut self, key: usize, now: Instant) -> ConnState {
        let Some(conn) = self.conns.get_mut(key) else {
            return ConnState::Drained;
        };
        let mut read = 0;
        loop {
            // Frames already buffered go first; stop (keeping them) when the pipeline is full.
            if !self
                .intake
                .handle_stream(&mut conn.intake, self.sink.pipeline(), now)
            {
                return ConnState::More;
            }
            if read >= STREAM_BUDGET {
                return ConnState::More;
            }
            conn.intake.buf.reserve(READ_CHUNK);
            match read_into(conn.stream.fd(), &mut conn.intake.buf) {
                Ok(0) => {
                    self.intake
                        .handle_stream_end(&mut conn.intake, self.sink.pipeline(), now);
                    return ConnState::Closed;
                }
                Ok(n) => read += n,
                Err(e) => match e.kind() {
                    io::ErrorKind::WouldBlock => return ConnState::Drained,
                    io::ErrorKind::Interrupted => {}
                    _ => {
                        debug!(peer = %conn.intake.peer, err = %e, "connection error");
                        self.intake
                            .handle_stream_end(&mut conn.intake, self.sink.pipeline(), now);
                        return ConnState::Closed;
                    }
                },
            }
        }
    }

    /// Closes the connections that stalled mid-frame or idled past the limits.
    fn sweep(&mut self, now: Instant) {
        let expired: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| self.guard.expired(&c.intake, now))
            .map(|(k, _)| k)
            .collect();
        for key in expired {
            if let Some(conn) = self.conns.get_mut(key) {
                self.intake
                    .handle_stream_abort(&mut conn.intake, self.sink.pipeline(), now);
            }
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        if self.conns.contains(key) {
            let mut conn = self.conns.remove(key);
            let _ = self.poll.registry().deregister(conn.stream.source());
            debug!(peer = %conn.intake.peer, "connection closed");
        }
    }

    /// Stops accepting, takes in what the sockets already hold, and flushes to Redis until
    /// empty or the shutdown timeout.
    fn finish(mut self) {
        let registry: &Registry = self.poll.registry();
        if let Some(mut l) = self.tcp.take() {
            let _ = registry.deregister(&mut l);
        }
        if let Some(mut l) = self.unix.take() {
            let _ = registry.deregister(&mut l);
        }
        self.sink.pipeline().set_capacity(usize::MAX);
        let now = Instant::now();
        // Everything the socket holds, however much (the budget is for sharing the loop).
        loop {
            self.udp_ready = true;
            let before = self.stats.received.load(Ordering::Relaxed);
            self.read_udp(now);
            if self.stats.received.load(Ordering::Relaxed) == before {
                break;
            }
        }
        self.check_kernel_drops(now);
        self.udp = None;
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            // One pass: what the kernel holds now; a client still sending is cut off here.
            while let ConnState::More = self.read_conn(key, now) {}
            if let Some(conn) = self.conns.get_mut(key) {
                self.intake
                    .handle_stream_end(&mut conn.intake, self.sink.pipeline(), now);
            }
            self.close(key);
        }
        let deadline = now + self.shutdown_timeout;
        let mut events = Events::with_capacity(64);
        loop {
            let now = Instant::now();
            self.sink.poll(self.poll.registry(), now);
            self.update_gauge();
            if self.sink.pipeline_ref().is_empty() {
                break;
            }
            if now >= deadline {
                let lost = self.sink.abandon();
                Stats::add(&self.stats.dropped_shutdown, lost as u64);
                break;
            }
            let wait = self
                .sink
                .deadline()
                .unwrap_or(deadline)
                .min(deadline)
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            if self.poll.poll(&mut events, Some(wait)).is_ok() {
                let now = Instant::now();
                for event in events.iter() {
                    if event.token() == REDIS {
                        self.sink.handle_event(self.poll.registry(), event, now);
                    }
                }
            }
        }
        self.update_gauge();
        info!("worker stopped");
    }
}

enum ConnState {
    /// Read until the socket had nothing more; wait for the next readiness event.
    Drained,
    /// Budget used or pipeline full: come back to it.
    More,
    /// The peer closed or failed; remove it.
    Closed,
}
