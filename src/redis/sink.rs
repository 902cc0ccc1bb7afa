//! The Redis connection of one worker: connects (AUTH, SELECT), writes what the [`Pipeline`]
//! encodes, reads and checks every reply, and backs off when Redis is down or refusing.
//!
//! Driven by the worker's event loop: [`Sink::handle_event`] on readiness, [`Sink::poll`] after
//! new records arrive or a deadline passes. Time is passed in, never read here.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use thiserror::Error;
use tracing::{debug, error, info, warn};

use super::pipeline::{Ack, Pipeline, Reply};
use super::resp;
use crate::config::RedisTarget;
use crate::stats::Stats;

/// First wait after a failure; doubled on each further failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A connection attempt that has not completed by then is abandoned.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a continuing outage is logged again.
const OUTAGE_REMINDER: Duration = Duration::from_secs(30);
/// Replies longer than this are a broken peer, not Redis.
const MAX_REPLY_BYTES: usize = 1 << 20;

/// Why the connection failed. All are caused by Redis or the network: the records stay.
#[derive(Debug, Error)]
pub enum SinkError {
    /// The host name did not resolve.
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, io::Error),
    /// Connecting, reading or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// Connecting took longer than the timeout.
    #[error("connection attempt timed out")]
    ConnectTimeout,
    /// Redis closed the connection.
    #[error("connection closed by redis")]
    Closed,
    /// AUTH or SELECT was refused.
    #[error("{command} refused: {reply}")]
    Setup {
        /// `AUTH` or `SELECT`.
        command: &'static str,
        /// Redis' error text.
        reply: String,
    },
    /// A reply that is not RESP2, or one no command asked for.
    #[error("protocol error: {0}")]
    Protocol(String),
}

#[derive(Debug)]
enum State {
    /// Not connected; try again at this time.
    Idle { retry_at: Instant },
    /// Waiting for a non-blocking connect to complete.
    Connecting { stream: TcpStream, since: Instant },
    /// Ready to push.
    Connected { stream: TcpStream },
}

/// One worker's connection to Redis and the records it owes Redis.
#[derive(Debug)]
pub struct Sink {
    target: RedisTarget,
    token: Token,
    pipeline: Pipeline,
    state: State,
    /// Encoded commands; `out[written..]` is not on the socket yet.
    out: Vec<u8>,
    written: usize,
    replies: BytesMut,
    /// Setup commands (AUTH, SELECT) whose replies are still due, in order.
    setup: Vec<&'static str>,
    backoff: Duration,
    /// No new pushes before this time (after Redis refused one).
    hold_until: Option<Instant>,
    /// When the current outage began, if Redis is failing.
    outage: Option<Outage>,
    addrs: Vec<SocketAddr>,
    next_addr: usize,
    ever_connected: bool,
    stats: Arc<Stats>,
}

#[derive(Debug)]
struct Outage {
    since: Instant,
    last_logged: Instant,
    failures: u64,
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
            target,
            token,
            pipeline,
            state: State::Idle { retry_at: now },
            out: Vec::new(),
            written: 0,
            replies: BytesMut::with_capacity(4096),
            setup: Vec::new(),
            backoff: MIN_BACKOFF,
            hold_until: None,
            outage: None,
            addrs: Vec::new(),
            next_addr: 0,
            ever_connected: false,
            stats,
        }
    }

    /// The records this sink holds.
    pub fn pipeline(&mut self) -> &mut Pipeline {
        &mut self.pipeline
    }

    /// Read-only view of the records this sink holds.
    pub fn pipeline_ref(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The earliest time [`poll`](Self::poll) has something to do without a socket event.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Idle { retry_at } => Some(*retry_at),
            State::Connecting { since, .. } => Some(*since + CONNECT_TIMEOUT),
            State::Connected { .. } => self.hold_until.filter(|_| self.pipeline.unsent() > 0),
        }
    }

    /// Handles readiness of the Redis socket.
    pub fn handle_event(&mut self, registry: &Registry, event: &Event, now: Instant) {
        if event.token() != self.token {
            return;
        }
        let result = match &self.state {
            State::Connecting { .. } if event.is_writable() || event.is_error() => {
                self.finish_connect(now)
            }
            State::Connected { .. } => self.read_replies(now),
            _ => Ok(()),
        };
        if let Err(err) = result {
            self.fail(registry, err, now);
        }
        self.poll(registry, now);
    }

    /// Connects when due, encodes waiting records and writes what the socket takes.
    pub fn poll(&mut self, registry: &Registry, now: Instant) {
        if let State::Idle { retry_at } = self.state {
            if now >= retry_at {
                if let Err(err) = self.connect(registry, now) {
                    self.fail(registry, err, now);
                }
            }
            return;
        }
        if let State::Connecting { since, .. } = self.state {
            if now >= since + CONNECT_TIMEOUT {
                self.fail(registry, SinkError::ConnectTimeout, now);
            }
            return;
        }
        if self.hold_until.is_some_and(|t| now < t) {
            return;
        }
        self.hold_until = None;
        if self.setup.is_empty() {
            self.pipeline.poll_write(&mut self.out);
        }
        if let Err(err) = self.write_out() {
            self.fail(registry, err, now);
        }
    }

    fn connect(&mut self, registry: &Registry, now: Instant) -> Result<(), SinkError> {
        if self.addrs.is_empty() || self.next_addr >= self.addrs.len() {
            let name = format!("{}:{}", self.target.host, self.target.port);
            let mut addrs: Vec<SocketAddr> = (self.target.host.as_str(), self.target.port)
                .to_socket_addrs()
                .map_err(|e| SinkError::Resolve(name.clone(), e))?
                .collect();
            // IPv4 first: a Redis bound to 127.0.0.1 only is the common case.
            addrs.sort_by_key(SocketAddr::is_ipv6);
            if addrs.is_empty() {
                return Err(SinkError::Resolve(name, io::ErrorKind::NotFound.into()));
            }
            self.addrs = addrs;
            self.next_addr = 0;
        }
        let addr = self.addrs[self.next_addr];
        self.next_addr += 1;
        debug!(%addr, "connecting to redis");
        let mut stream = TcpStream::connect(addr)?;
        registry.register(
            &mut stream,
            self.token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.state = State::Connecting { stream, since: now };
        Ok(())
    }

    fn finish_connect(&mut self, now: Instant) -> Result<(), SinkError> {
        let State::Connecting { stream, .. } = &self.state else {
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
        stream.set_nodelay(true)?;
        let State::Connecting { stream, .. } =
            std::mem::replace(&mut self.state, State::Idle { retry_at: now })
        else {
            unreachable!("checked above");
        };
        self.state = State::Connected { stream };
        self.next_addr = 0;
        if self.ever_connected {
            Stats::add(&self.stats.reconnects, 1);
        }
        self.ever_connected = true;
        self.out.clear();
        self.written = 0;
        self.setup.clear();
        if let Some(password) = &self.target.password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &self.target.user {
                args.push(user.as_bytes());
            }
            args.push(password.as_bytes());
            resp::write_command(&mut self.out, &args);
            self.setup.push("AUTH");
        }
        if self.target.db != 0 {
            let db = itoa::Buffer::new().format(self.target.db).to_owned();
            resp::write_command(&mut self.out, &[b"SELECT", db.as_bytes()]);
            self.setup.push("SELECT");
        }
        if self.setup.is_empty() {
            self.connected(now);
        }
        Ok(())
    }

    /// The connection is usable: end an outage.
    fn connected(&mut self, now: Instant) {
        self.backoff = MIN_BACKOFF;
        match self.outage.take() {
            Some(outage) => info!(
                host = %self.target.host,
                port = self.target.port,
                down_for = ?now.duration_since(outage.since),
                failures = outage.failures,
                buffered = self.pipeline.len(),
                "redis is reachable again; resending buffered records"
            ),
            None => debug!(host = %self.target.host, port = self.target.port, "connected to redis"),
        }
    }

    fn write_out(&mut self) -> Result<(), SinkError> {
        let State::Connected { stream } = &mut self.state else {
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
        loop {
            let State::Connected { stream } = &mut self.state else {
                return Ok(());
            };
            let mut chunk = [0u8; 16 * 1024];
            match stream.read(&mut chunk) {
                Ok(0) => return Err(SinkError::Closed),
                Ok(n) => {
                    self.replies.extend_from_slice(&chunk[..n]);
                    self.handle_replies(now)?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn handle_replies(&mut self, now: Instant) -> Result<(), SinkError> {
        loop {
            let (frame, used) = match decode(&self.replies) {
                Ok(Some(decoded)) => decoded,
                Ok(None) if self.replies.len() > MAX_REPLY_BYTES => {
                    return Err(SinkError::Protocol("reply too long".into()))
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(SinkError::Protocol(e.to_string())),
            };
            let _ = self.replies.split_to(used);
            if !self.setup.is_empty() {
                let command = self.setup.remove(0);
                if let OwnedFrame::Error(reply) = frame {
                    return Err(SinkError::Setup { command, reply });
                }
                if self.setup.is_empty() {
                    self.connected(now);
                }
                continue;
            }
            let reply = match &frame {
                OwnedFrame::Integer(n) => Reply::Integer(*n),
                OwnedFrame::Error(e) => Reply::Error(e),
                _ => Reply::Unexpected,
            };
            match self.pipeline.handle_reply(reply) {
                Some(Ack::Pushed { records, .. }) => {
                    Stats::add(&self.stats.pushed, records as u64);
                    if self.outage.is_some() {
                        self.connected(now);
                    }
                }
                Some(Ack::Refused { records }) => {
                    Stats::add(&self.stats.redis_errors, 1);
                    self.note_failure(&format!("push refused: {}", describe(&frame)), records, now);
                    self.hold_until = Some(now + self.backoff);
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
                None => {
                    return Err(SinkError::Protocol(format!(
                        "unrequested reply {}",
                        describe(&frame)
                    )))
                }
            }
        }
    }

    /// Drops the connection; everything unacknowledged is sent again after the backoff.
    fn fail(&mut self, registry: &Registry, err: SinkError, now: Instant) {
        if let State::Connecting { stream, .. } | State::Connected { stream } = &mut self.state {
            let _ = registry.deregister(stream);
        }
        let requeued = self.pipeline.handle_disconnect();
        Stats::add(&self.stats.redis_errors, 1);
        self.note_failure(&err.to_string(), requeued, now);
        self.state = State::Idle {
            retry_at: now + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.out.clear();
        self.written = 0;
        self.replies.clear();
        self.setup.clear();
        self.hold_until = None;
    }

    /// Logs a failure once per outage (and a reminder while it lasts).
    fn note_failure(&mut self, why: &str, records: usize, now: Instant) {
        let buffered = self.pipeline.len();
        match &mut self.outage {
            None => {
                warn!(
                    host = %self.target.host,
                    port = self.target.port,
                    buffered,
                    "redis unavailable: {why}; keeping records and retrying"
                );
                self.outage = Some(Outage {
                    since: now,
                    last_logged: now,
                    failures: 1,
                });
            }
            Some(outage) => {
                outage.failures += 1;
                if now.duration_since(outage.last_logged) >= OUTAGE_REMINDER {
                    outage.last_logged = now;
                    warn!(
                        down_for = ?now.duration_since(outage.since),
                        failures = outage.failures,
                        buffered,
                        "redis still unavailable: {why}"
                    );
                } else {
                    debug!(records, "redis failure: {why}");
                }
            }
        }
    }

    /// Gives up on every record held; called when the shutdown deadline passed.
    pub fn abandon(&mut self) -> usize {
        let lost = self.pipeline.clear();
        if lost > 0 {
            error!(
                lost,
                "shutdown timeout: records not delivered to redis are lost"
            );
        }
        lost
    }
}

fn describe(frame: &OwnedFrame) -> String {
    match frame {
        OwnedFrame::Error(e) => e.clone(),
        OwnedFrame::Integer(n) => n.to_string(),
        OwnedFrame::SimpleString(s) | OwnedFrame::BulkString(s) => {
            String::from_utf8_lossy(s).into_owned()
        }
        OwnedFrame::Array(a) => format!("array of {}", a.len()),
        OwnedFrame::Null => "null".into(),
    }
}
