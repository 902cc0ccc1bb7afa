//! Runs the proxy: binds the sockets, starts one worker per core, waits for SIGINT/SIGTERM,
//! reports counters. The per-worker event loop lives in [`epoll`].

pub mod epoll;

use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::redis::pipeline::{Pipeline, PipelineConfig};
use crate::spool::Spool;
use crate::stats::{Snapshot, Stats};

/// Receive buffer asked for on UDP sockets, so bursts wait in the kernel instead of being lost.
const UDP_RECV_BUFFER: usize = 8 << 20;

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

fn udp_socket(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    if socket.set_recv_buffer_size(UDP_RECV_BUFFER).is_ok() {
        let got = socket.recv_buffer_size().unwrap_or(0);
        // Linux reports double the usable size; less than asked means net.core.rmem_max caps it.
        if got < UDP_RECV_BUFFER {
            warn!(
                asked = UDP_RECV_BUFFER,
                got,
                "kernel capped the UDP receive buffer (raise net.core.rmem_max); bursts may be lost"
            );
        }
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
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
        let udp = udp_socket(udp_addr).map_err(bind_error(format!("udp {udp_addr}")))?;
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

/// Publishes a worker's gauges.
pub fn update_gauges(stats: &Stats, pipeline: &Pipeline) {
    use std::sync::atomic::Ordering::Relaxed;
    stats.buffered.store(pipeline.len() as u64, Relaxed);
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
    for (id, listeners) in listeners.into_iter().enumerate() {
        let worker_stats = Arc::new(Stats::default());
        let worker = epoll::Worker::new(
            id,
            listeners,
            &config,
            per_worker_buffer,
            Arc::clone(&worker_stats),
            Arc::clone(&shutdown),
        )?;
        wakers.push(worker.waker());
        stats.push(worker_stats);
        handles.push(
            thread::Builder::new()
                .name(format!("pystash-worker-{id}"))
                .spawn(move || worker.run())?,
        );
    }
    info!(
        %tcp,
        %udp,
        unix = ?config.unix,
        workers = config.workers,
        engine = "epoll",
        redis = %format_args!("{}:{}", config.redis.host, config.redis.port),
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
            .spawn(move || crate::metrics::serve(listener, || (total(&stats), "epoll", workers)))?;
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
        let _ = waker.wake();
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
