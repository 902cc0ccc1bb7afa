//! Runs the proxy: binds the sockets, picks the I/O engine, starts one worker per core, waits
//! for SIGINT/SIGTERM, reports counters. The per-worker loops live in [`uring`] (io_uring) and
//! [`epoll`]; both feed the same [`Intake`](crate::intake::Intake) and Redis
//! [`Session`](crate::redis::session::Session), and pace themselves with `batch`.

pub(crate) mod batch;
pub mod epoll;
pub(crate) mod udp;
pub mod uring;

use std::io;
use std::mem::size_of;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tracing::{debug, error, info, warn};

use crate::config::{Config, IoEngine};
use crate::intake::StreamConn;
use crate::redis::pipeline::{Pipeline, PipelineConfig};
use crate::spool::Spool;
use crate::stats::{Snapshot, Stats};

/// Failures that stop the proxy from starting.
#[derive(Debug, Error)]
pub enum RunError {
    /// A socket could not be created or bound.
    #[error("cannot listen on {what}: {source}")]
    Bind {
        /// Which socket.
        what: String,
        /// The OS error.
        source: io::Error,
    },
    /// Threads, signals or polling could not be set up.
    #[error("{0}")]
    Setup(#[from] io::Error),
    /// `--io-engine uring` was asked for and the kernel does not allow it.
    #[error("--io-engine uring: io_uring is not available: {0}")]
    Uring(io::Error),
}

/// Sockets one worker listens on.
pub struct Listeners {
    /// UDP socket (SO_REUSEPORT, shared port).
    pub udp: std::net::UdpSocket,
    /// TCP listener (SO_REUSEPORT, shared port).
    pub tcp: std::net::TcpListener,
    /// Unix listener, on the first worker only.
    pub unix: Option<std::os::unix::net::UnixListener>,
}

fn bind_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Bind { what, source }
}

/// What the kernel granted a UDP socket's receive buffer (as it reports it, i.e. doubled).
#[derive(Debug, Clone, Copy)]
struct RecvBuffer {
    asked: usize,
    got: usize,
    forced: bool,
}

fn set_int_option(socket: &Socket, level: i32, name: i32, value: i32) -> io::Result<()> {
    // Safety: setsockopt(2) reads one int we own; the fd is open for the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            std::ptr::addr_of!(value).cast(),
            size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn udp_socket(
    addr: SocketAddr,
    recv_buffer: usize,
) -> io::Result<(std::net::UdpSocket, RecvBuffer)> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    // Drops by the kernel (receive buffer full) are reported with each datagram that follows.
    set_int_option(&socket, libc::SOL_SOCKET, libc::SO_RXQ_OVFL, 1)?;
    let asked = recv_buffer;
    let _ = socket.set_recv_buffer_size(asked);
    // Linux reports double the size asked for (bookkeeping overhead); less than asked means
    // net.core.rmem_max capped it. Root may go past the cap.
    let mut got = socket.recv_buffer_size().unwrap_or(0);
    let mut forced = false;
    if got < asked {
        let value = i32::try_from(asked).unwrap_or(i32::MAX);
        if set_int_option(&socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, value).is_ok() {
            got = socket.recv_buffer_size().unwrap_or(0);
            forced = true;
        }
    }
    socket.bind(&addr.into())?;
    Ok((socket.into(), RecvBuffer { asked, got, forced }))
}

fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

fn unix_listener(path: &Path, mode: u32) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    // A socket file left by a previous run would make bind fail; anything else is not ours.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        }
    }
    // Created owner-only, then opened up to `mode`, so it is never more open than asked.
    // Safety: umask only swaps the process mask; no other thread runs while sockets are bound.
    let old = unsafe { libc::umask(0o177) };
    let bound = std::os::unix::net::UnixListener::bind(path);
    // Safety: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Binds every worker's sockets. Port 0 becomes one free port shared by all workers.
///
/// # Errors
/// [`RunError::Bind`] naming the socket.
pub fn bind(config: &Config) -> Result<Vec<Listeners>, RunError> {
    let mut udp_addr = SocketAddr::new(config.bind_ip, config.udp_port);
    let mut tcp_addr = SocketAddr::new(config.bind_ip, config.tcp_port);
    let mut all = Vec::with_capacity(config.workers);
    for worker in 0..config.workers {
        let (udp, buffer) = udp_socket(udp_addr, config.udp_recv_buffer)
            .map_err(bind_error(format!("udp {udp_addr}")))?;
        if worker == 0 {
            if buffer.got < buffer.asked {
                warn!(
                    asked = buffer.asked,
                    got = buffer.got,
                    "kernel capped the UDP receive buffer below --udp-recv-buffer (raise \
                     net.core.rmem_max, or run as root); bursts may be dropped (dropped_kernel)"
                );
            } else if buffer.forced {
                info!(
                    asked = buffer.asked,
                    got = buffer.got,
                    "UDP receive buffer set past net.core.rmem_max (SO_RCVBUFFORCE)"
                );
            }
        }
        let tcp = tcp_listener(tcp_addr).map_err(bind_error(format!("tcp {tcp_addr}")))?;
        udp_addr = udp.local_addr()?;
        tcp_addr = tcp.local_addr()?;
        let unix = match (&config.unix, worker) {
            (Some(path), 0) => Some(
                unix_listener(path, config.unix_mode)
                    .map_err(bind_error(format!("unix {}", path.display())))?,
            ),
            _ => None,
        };
        all.push(Listeners { udp, tcp, unix });
    }
    Ok(all)
}

/// The engine the workers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// [`uring`].
    Uring,
    /// [`epoll`].
    Epoll,
}

impl Engine {
    /// Its name, as `--io-engine` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Uring => "uring",
            Engine::Epoll => "epoll",
        }
    }
}

/// Resolves `--io-engine`: `auto` probes io_uring and falls back to epoll, saying why.
///
/// # Errors
/// [`RunError::Uring`] when `uring` was asked for and the kernel does not allow it.
pub fn choose_engine(asked: IoEngine) -> Result<Engine, RunError> {
    match asked {
        IoEngine::Epoll => Ok(Engine::Epoll),
        IoEngine::Uring => uring::probe()
            .map(|()| Engine::Uring)
            .map_err(RunError::Uring),
        IoEngine::Auto => match uring::probe() {
            Ok(()) => Ok(Engine::Uring),
            Err(err) => {
                info!(%err, "io_uring is not available; using epoll");
                Ok(Engine::Epoll)
            }
        },
    }
}

/// Wakes one worker's loop from another thread (for shutdown).
#[derive(Clone)]
enum Waker {
    Epoll(Arc<mio::Waker>),
    Uring(uring::Waker),
}

impl Waker {
    fn wake(&self) {
        let result = match self {
            Waker::Epoll(w) => w.wake(),
            Waker::Uring(w) => w.wake(),
        };
        if let Err(err) = result {
            warn!(%err, "cannot wake a worker");
        }
    }
}

/// Commands pipelined on one Redis connection.
const MAX_IN_FLIGHT: usize = 8;
/// Records per push at most.
const MAX_BATCH_RECORDS: usize = 1024;
/// Event bytes per push at most.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// Worker `id`'s pipeline: `capacity` records in memory, and its share of the spool when
/// `--spool-dir` is set (whatever a previous run left there is replayed first).
///
/// # Errors
/// When the spool cannot be opened.
pub fn pipeline(config: &Config, id: usize, capacity: usize) -> io::Result<Pipeline> {
    let mut pipeline = Pipeline::new(PipelineConfig {
        key: config.queue.clone(),
        command: config.push,
        capacity,
        max_batch_records: MAX_BATCH_RECORDS,
        max_batch_bytes: MAX_BATCH_BYTES,
        max_in_flight: MAX_IN_FLIGHT,
    });
    if let Some(spool) = &config.spool {
        let (spool, _) = Spool::open(spool.clone(), id, config.workers)?;
        pipeline.set_overflow(Box::new(spool));
    }
    Ok(pipeline)
}

/// How often stream connections are checked against `--frame-timeout`/`--idle-timeout`.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A worker's limits on stream connections, the same for every engine: how many may be open,
/// and when an open one has stalled or idled too long.
#[derive(Debug)]
pub struct ConnGuard {
    max_connections: usize,
    frame_timeout: Duration,
    idle_timeout: Option<Duration>,
    next_sweep: Instant,
    last_refusal_log: Option<Instant>,
    stats: Arc<Stats>,
}

impl ConnGuard {
    /// Limits from `config`, counting into `stats`.
    pub fn new(config: &Config, stats: Arc<Stats>, now: Instant) -> Self {
        ConnGuard {
            max_connections: config.max_connections,
            frame_timeout: config.frame_timeout,
            idle_timeout: config.idle_timeout,
            next_sweep: now + SWEEP_INTERVAL,
            last_refusal_log: None,
            stats,
        }
    }

    /// Whether one more connection may be kept when `open` are; a refusal is counted (and
    /// logged at most every 10 s).
    pub fn admit(&mut self, open: usize, now: Instant) -> bool {
        if open < self.max_connections {
            return true;
        }
        Stats::add(&self.stats.connections_refused, 1);
        if self
            .last_refusal_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            warn!(
                max = self.max_connections,
                "--max-connections reached: closing new connections"
            );
            self.last_refusal_log = Some(now);
        }
        false
    }

    /// When the next sweep is due.
    pub fn deadline(&self) -> Instant {
        self.next_sweep
    }

    /// Whether a sweep is due at `now`; if so, the next one is scheduled.
    pub fn sweep_due(&mut self, now: Instant) -> bool {
        if now < self.next_sweep {
            return false;
        }
        self.next_sweep = now + SWEEP_INTERVAL;
        true
    }

    /// Whether `conn` should be closed now; counts it if so.
    pub fn expired(&self, conn: &StreamConn, now: Instant) -> bool {
        let expired = conn.expired(now, self.frame_timeout, self.idle_timeout);
        if expired {
            Stats::add(&self.stats.connections_expired, 1);
            debug!(peer = %conn.peer, "closing a stalled or idle connection");
        }
        expired
    }
}

/// Publishes a worker's gauges.
pub fn update_gauges(stats: &Stats, pipeline: &Pipeline) {
    use std::sync::atomic::Ordering::Relaxed;
    stats.buffered.store(pipeline.held(), Relaxed);
    stats.spool_bytes.store(pipeline.overflow_bytes(), Relaxed);
}

/// The workers' counters, summed.
fn total(stats: &[Arc<Stats>]) -> Snapshot {
    let mut sum = Snapshot::default();
    for s in stats {
        sum.add(&s.snapshot());
    }
    sum
}

/// What the signal thread tells the main thread.
enum Control {
    Shutdown(i32),
}

/// Runs until SIGINT/SIGTERM, then flushes and returns the final counters.
///
/// # Errors
/// A [`RunError`] if the proxy could not start.
pub fn run(config: Config) -> Result<Snapshot, RunError> {
    let listeners = bind(&config)?;
    let udp = listeners[0].udp.local_addr()?;
    let tcp = listeners[0].tcp.local_addr()?;
    let shutdown = Arc::new(AtomicBool::new(false));
    let config = Arc::new(config);
    let mut wakers = Vec::new();
    let mut handles = Vec::new();
    let mut stats = Vec::new();
    let per_worker_buffer = config.buffer_records / config.workers;
    let engine = choose_engine(config.io_engine)?;
    for (id, listeners) in listeners.into_iter().enumerate() {
        let worker_stats = Arc::new(Stats::default());
        stats.push(Arc::clone(&worker_stats));
        let builder = thread::Builder::new().name(format!("pystash-worker-{id}"));
        let handle = match engine {
            Engine::Epoll => {
                let worker = epoll::Worker::new(
                    id,
                    listeners,
                    &config,
                    per_worker_buffer,
                    worker_stats,
                    Arc::clone(&shutdown),
                )?;
                wakers.push(Waker::Epoll(worker.waker()));
                builder.spawn(move || worker.run())?
            }
            Engine::Uring => {
                let worker = uring::Worker::new(
                    id,
                    listeners,
                    &config,
                    per_worker_buffer,
                    worker_stats,
                    Arc::clone(&shutdown),
                )?;
                wakers.push(Waker::Uring(worker.waker()));
                builder.spawn(move || worker.run())?
            }
        };
        handles.push(handle);
    }
    info!(
        %tcp,
        %udp,
        unix = ?config.unix,
        workers = config.workers,
        engine = engine.name(),
        redis = %config.redis,
        queue = %String::from_utf8_lossy(&config.queue),
        "pystash listening"
    );

    if let Some(addr) = config.metrics {
        let listener =
            std::net::TcpListener::bind(addr).map_err(bind_error(format!("metrics {addr}")))?;
        let stats = stats.clone();
        let workers = config.workers;
        thread::Builder::new()
            .name("pystash-metrics".into())
            .spawn(move || {
                crate::metrics::serve(listener, move || (total(&stats), engine.name(), workers))
            })?;
        info!(%addr, "serving metrics at /metrics");
    }

    let (tx, rx) = mpsc::channel();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    let signal_handle = signals.handle();
    thread::Builder::new()
        .name("pystash-signals".into())
        .spawn(move || {
            let mut count = 0;
            for signal in signals.forever() {
                count += 1;
                if count > 1 {
                    error!(signal, "second signal: exiting without flushing");
                    std::process::exit(1);
                }
                let _ = tx.send(Control::Shutdown(signal));
            }
        })?;

    let tick = config.stats_interval.unwrap_or(Duration::from_secs(3600));
    loop {
        match rx.recv_timeout(tick) {
            Ok(Control::Shutdown(signal)) => {
                info!(signal, timeout = ?config.shutdown_timeout, "shutting down: flushing buffered records");
                break;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if config.stats_interval.is_some() {
                    info!("pystash stats {}", total(&stats));
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    shutdown.store(true, Ordering::SeqCst);
    for waker in &wakers {
        waker.wake();
    }
    for handle in handles {
        if handle.join().is_err() {
            error!("a worker panicked");
        }
    }
    signal_handle.close();
    if let Some(path) = &config.unix {
        let _ = std::fs::remove_file(path);
    }
    let final_stats = total(&stats);
    info!("pystash stats {final_stats}");
    Ok(final_stats)
}
