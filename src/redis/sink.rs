//! The Redis connection of the epoll engine: a mio socket driving a [`Session`].
//!
//! Driven by the worker's event loop: [`Sink::handle_event`] on readiness, [`Sink::poll`] after
//! new records arrive or a deadline passes.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use mio::event::Event;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use socket2::{SockAddr, Socket, Type};
use tracing::debug;

use super::pipeline::Pipeline;
use super::session::{Session, SinkError};
use crate::config::RedisTarget;
use crate::stats::Stats;

/// Redis's addresses, tried in turn by both engines: resolved once every one was tried, and
/// started over from the first after a connection succeeds.
#[derive(Debug, Default)]
pub struct Addresses {
    addrs: Vec<SockAddr>,
    next: usize,
}

impl Addresses {
    /// The address to connect to now.
    ///
    /// # Errors
    /// [`SinkError::Resolve`] when `target` does not resolve.
    pub fn next(&mut self, target: &RedisTarget) -> Result<SockAddr, SinkError> {
        if self.next >= self.addrs.len() {
            self.addrs = resolve(target)?;
            self.next = 0;
        }
        let addr = self.addrs[self.next].clone();
        self.next += 1;
        debug!(addr = ?addr.as_socket(), redis = %target, "connecting to redis");
        Ok(addr)
    }

    /// A connection succeeded: the next attempt starts from the first address.
    pub fn connected(&mut self) {
        self.next = 0;
    }
}

/// Where `target` is: its unix socket, or its host's addresses, IPv4 first (a Redis bound to
/// 127.0.0.1 only is the common case).
///
/// # Errors
/// [`SinkError::Resolve`] when the name does not resolve (or the path is too long for a
/// socket address).
fn resolve(target: &RedisTarget) -> Result<Vec<SockAddr>, SinkError> {
    if let Some(path) = &target.socket {
        let addr = SockAddr::unix(path).map_err(|e| SinkError::Resolve(target.to_string(), e))?;
        return Ok(vec![addr]);
    }
    let name = target.to_string();
    let mut addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| SinkError::Resolve(name.clone(), e))?
        .collect();
    addrs.sort_by_key(SocketAddr::is_ipv6);
    if addrs.is_empty() {
        return Err(SinkError::Resolve(name, io::ErrorKind::NotFound.into()));
    }
    Ok(addrs.into_iter().map(SockAddr::from).collect())
}

/// A stream socket for `addr`, not connected yet: TCP with Nagle off (pushes are whole
/// commands, written at once), or unix.
///
/// # Errors
/// The OS's, when the socket cannot be made.
pub fn stream_socket(addr: &SockAddr) -> io::Result<Socket> {
    let socket = Socket::new(addr.domain(), Type::STREAM.cloexec(), None)?;
    if addr.as_socket().is_some() {
        socket.set_tcp_nodelay(true)?;
    }
    Ok(socket)
}

/// One worker's connection to Redis (epoll engine).
#[derive(Debug)]
pub struct Sink {
    session: Session,
    token: Token,
    /// TCP or unix, registered by its fd.
    stream: Option<Socket>,
    /// The connect completed and the session knows it.
    connected: bool,
    /// Encoded commands; `out[written..]` is not on the socket yet.
    out: Vec<u8>,
    written: usize,
    addrs: Addresses,
}

impl Sink {
    /// A sink that will connect to `target` on the first [`poll`](Self::poll).
    pub fn new(
        target: RedisTarget,
        token: Token,
        pipeline: Pipeline,
        stats: Arc<Stats>,
        now: Instant,
    ) -> Self {
        Sink {
            session: Session::new(target, pipeline, stats, now),
            token,
            stream: None,
            connected: false,
            out: Vec::new(),
            written: 0,
            addrs: Addresses::default(),
        }
    }

    /// The protocol state, for settings such as [`Session::set_max_queue_length`].
    pub fn session(&mut self) -> &mut Session {
        &mut self.session
    }

    /// The records this sink holds.
    pub fn pipeline(&mut self) -> &mut Pipeline {
        self.session.pipeline()
    }

    /// Read-only view of the records this sink holds.
    pub fn pipeline_ref(&self) -> &Pipeline {
        self.session.pipeline_ref()
    }

    /// The earliest time [`poll`](Self::poll) has something to do without a socket event.
    pub fn deadline(&self) -> Option<Instant> {
        self.session.deadline()
    }

    /// Handles readiness of the Redis socket.
    pub fn handle_event(&mut self, registry: &Registry, event: &Event, now: Instant) {
        if event.token() != self.token || self.stream.is_none() {
            return;
        }
        let result = if self.connected {
            self.read_replies(now)
        } else if event.is_writable() || event.is_error() {
            self.finish_connect(now)
        } else {
            Ok(())
        };
        if let Err(err) = result {
            self.fail(registry, err, now);
        }
        self.poll(registry, now);
    }

    /// Connects when due, encodes waiting records and writes what the socket takes.
    pub fn poll(&mut self, registry: &Registry, now: Instant) {
        if self.session.connect_timed_out(now) {
            self.fail(registry, SinkError::ConnectTimeout, now);
        }
        if self.session.poll_connect(now) {
            if let Err(err) = self.connect(registry) {
                self.fail(registry, err, now);
            }
            return;
        }
        if !self.connected {
            return;
        }
        // New commands are encoded only once the last ones are all on the socket. While
        // Redis's socket is full they would only pile up here behind the bytes already
        // written, which stay until the buffer empties (it kept growing into fresh pages), and
        // each command's round trip would be timed from before it was sent.
        let mut result = self.write_out();
        if result.is_ok() && self.written == self.out.len() {
            self.session.poll_transmit(now, &mut self.out);
            result = self.write_out();
        }
        if let Err(err) = result {
            self.fail(registry, err, now);
        }
    }

    /// Gives up on every record held; called when the shutdown deadline passed.
    pub fn abandon(&mut self) -> usize {
        self.session.abandon()
    }

    fn connect(&mut self, registry: &Registry) -> Result<(), SinkError> {
        let addr = self.addrs.next(self.session.target())?;
        let stream = stream_socket(&addr)?;
        stream.set_nonblocking(true)?;
        match stream.connect(&addr) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e.into()),
        }
        registry.register(
            &mut SourceFd(&stream.as_raw_fd()),
            self.token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.stream = Some(stream);
        Ok(())
    }

    fn finish_connect(&mut self, now: Instant) -> Result<(), SinkError> {
        let Some(stream) = &self.stream else {
            return Ok(());
        };
        if let Some(err) = stream.take_error()? {
            return Err(err.into());
        }
        match stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        self.connected = true;
        self.addrs.connected();
        self.session.handle_connected(now);
        Ok(())
    }

    fn write_out(&mut self) -> Result<(), SinkError> {
        let Some(stream) = &mut self.stream else {
            return Ok(());
        };
        while self.written < self.out.len() {
            match stream.write(&self.out[self.written..]) {
                Ok(0) => return Err(SinkError::Closed),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.out.clear();
        self.written = 0;
        Ok(())
    }

    fn read_replies(&mut self, now: Instant) -> Result<(), SinkError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let Some(stream) = &mut self.stream else {
                return Ok(());
            };
            match stream.read(&mut chunk) {
                Ok(0) => return Err(SinkError::Closed),
                Ok(n) => self.session.handle_received(&chunk[..n], now)?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Drops the connection; everything unacknowledged is sent again after the backoff.
    fn fail(&mut self, registry: &Registry, err: SinkError, now: Instant) {
        if let Some(stream) = self.stream.take() {
            let _ = registry.deregister(&mut SourceFd(&stream.as_raw_fd()));
        }
        self.connected = false;
        self.out.clear();
        self.written = 0;
        self.session.handle_failure(&err, now);
    }
}
