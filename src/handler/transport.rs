//! The handler's connection to its destination, driven by the worker thread (I/O).
//!
//! Three shapes, one interface: [`Transport::push`] takes a finished event (or record JSON),
//! [`Transport::poll`] connects when due and writes what is held, [`Transport::retry_at`] says
//! when to poll again after a failure.
//!
//! - datagrams (Logstash `udp` input, pystash's UDP port): one event per datagram, sent at once;
//!   a failed send drops that event (UDP has no delivery to wait for).
//! - streams (Logstash `tcp`/`unix` input with `json_lines`, pystash's TCP port and unix
//!   socket): newline-delimited, written in batches; while the peer is down the batch waits and
//!   the worker reconnects with backoff.
//! - Redis: multi-value `RPUSH` through the proxy's own [`Pipeline`] and
//!   [`resp`](crate::redis::resp) encoder, one command in flight, kept until Redis acknowledged
//!   it (at-least-once, like the proxy's sink).
//!
//! Sockets are blocking std sockets with timeouts: the worker thread is the only one waiting.

use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use socket2::SockRef;

use super::queue::Counters;
use crate::config::RedisTarget;
use crate::redis::pipeline::{Ack, Pipeline, Reply};
use crate::redis::resp;

/// First wait after a failure; doubled on each further failure up to [`MAX_BACKOFF`].
pub(crate) const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A connection attempt, a write or a Redis reply that takes longer fails the connection.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest UDP payload over IPv4 (65535 - 8 - 20).
pub(crate) const MAX_DATAGRAM: usize = 65_507;
/// Replies longer than this are a broken peer, not Redis.
const MAX_REPLY_BYTES: usize = 1 << 20;

/// When to try again after failures.
#[derive(Debug)]
struct Backoff {
    next: Duration,
    retry_at: Option<Instant>,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            next: MIN_BACKOFF,
            retry_at: None,
        }
    }

    fn due(&self, now: Instant) -> bool {
        self.retry_at.is_none_or(|t| now >= t)
    }

    fn fail(&mut self, now: Instant) {
        self.retry_at = Some(now + self.next);
        self.next = (self.next * 2).min(MAX_BACKOFF);
    }

    fn reset(&mut self) {
        self.next = MIN_BACKOFF;
        self.retry_at = None;
    }
}

/// Where a stream goes.
#[derive(Debug, Clone)]
pub(crate) enum StreamTarget {
    /// `host:port`, resolved at each connection attempt.
    Tcp(String),
    /// A unix stream socket's path.
    Unix(PathBuf),
}

impl std::fmt::Display for StreamTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamTarget::Tcp(addr) => write!(f, "tcp {addr}"),
            StreamTarget::Unix(path) => write!(f, "unix {}", path.display()),
        }
    }
}

/// The destination's connection and what it holds.
#[derive(Debug)]
pub(crate) enum Transport {
    Datagram(Datagram),
    Stream(Stream),
    Redis(Box<Redis>),
}

impl Transport {
    /// Whether [`push`](Self::push) may be called.
    pub(crate) fn has_room(&self) -> bool {
        match self {
            Transport::Datagram(_) => true,
            Transport::Stream(s) => s.records < s.max_records,
            Transport::Redis(r) => !r.pipeline.is_full(),
        }
    }

    /// Takes one event. Datagrams are sent here; the rest waits for [`poll`](Self::poll).
    pub(crate) fn push(&mut self, event: &[u8], now: Instant, counters: &Counters) {
        match self {
            Transport::Datagram(d) => d.send(event, now, counters),
            Transport::Stream(s) => {
                s.out.extend_from_slice(event);
                s.out.push(b'\n');
                s.records += 1;
            }
            Transport::Redis(r) => {
                // has_room() was checked, so this takes it.
                let taken = r.pipeline.push(event);
                debug_assert!(taken);
            }
        }
    }

    /// Connects when due and writes what is held. Returns whether anything was delivered.
    pub(crate) fn poll(&mut self, now: Instant, counters: &Counters) -> bool {
        match self {
            Transport::Datagram(_) => false,
            Transport::Stream(s) => s.poll(now, counters),
            Transport::Redis(r) => r.poll(now, counters),
        }
    }

    /// Records held and not delivered yet.
    pub(crate) fn held(&self) -> usize {
        match self {
            Transport::Datagram(_) => 0,
            Transport::Stream(s) => s.records,
            Transport::Redis(r) => r.pipeline.len(),
        }
    }

    /// Gives up on what is held (shutdown deadline). Returns how many records.
    pub(crate) fn clear(&mut self) -> usize {
        match self {
            Transport::Datagram(_) => 0,
            Transport::Stream(s) => {
                let n = s.records;
                s.out.clear();
                s.records = 0;
                n
            }
            Transport::Redis(r) => r.pipeline.clear(),
        }
    }

    /// When [`poll`](Self::poll) should run again to deliver what is held, if it is waiting
    /// for a backoff to pass.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        match self {
            Transport::Datagram(_) => None,
            Transport::Stream(s) => s.backoff.retry_at.filter(|_| s.records > 0),
            Transport::Redis(r) => r.backoff.retry_at.filter(|_| !r.pipeline.is_empty()),
        }
    }
}

/// Resolves `host:port`, IPv4 first (a service bound to 127.0.0.1 only is the common case).
fn resolve(addr: &str) -> io::Result<Vec<SocketAddr>> {
    let mut addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    addrs.sort_by_key(SocketAddr::is_ipv6);
    if addrs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{addr} resolves to no address"),
        ));
    }
    Ok(addrs)
}

/// Connects to the first address of `addr` that accepts.
fn connect_tcp(addr: &str) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in resolve(addr)? {
        match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                stream.set_write_timeout(Some(IO_TIMEOUT))?;
                stream.set_read_timeout(Some(IO_TIMEOUT))?;
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::ErrorKind::NotFound.into()))
}

/// One event per datagram.
#[derive(Debug)]
pub(crate) struct Datagram {
    addr: String,
    socket: Option<UdpSocket>,
    backoff: Backoff,
}

impl Datagram {
    pub(crate) fn new(addr: String) -> Self {
        Datagram {
            addr,
            socket: None,
            backoff: Backoff::new(),
        }
    }

    fn send(&mut self, event: &[u8], now: Instant, counters: &Counters) {
        if event.len() > MAX_DATAGRAM {
            Counters::add(&counters.dropped_oversized, 1);
            return;
        }
        if self.socket.is_none() && self.backoff.due(now) {
            match self.open() {
                Ok(socket) => {
                    self.socket = Some(socket);
                    self.backoff.reset();
                }
                Err(e) => {
                    counters.error(format_args!("udp {}: {e}", self.addr));
                    self.backoff.fail(now);
                }
            }
        }
        let Some(socket) = &self.socket else {
            Counters::add(&counters.dropped_unavailable, 1);
            return;
        };
        match socket.send(event) {
            Ok(_) => Counters::add(&counters.sent, 1),
            // A connected UDP socket reports an earlier ICMP "port unreachable" on a later send
            // (ECONNREFUSED); nothing is listening, so this event is lost too.
            Err(_) => Counters::add(&counters.dropped_unavailable, 1),
        }
    }

    fn open(&self) -> io::Result<UdpSocket> {
        let addr = resolve(&self.addr)?[0];
        let local: SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local)?;
        socket.connect(addr)?;
        socket.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(socket)
    }
}

/// A connected stream socket.
#[derive(Debug)]
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }

    /// Whether the peer closed the connection. Logstash's and pystash's inputs never send
    /// anything, so any readable byte is discarded and end-of-stream means closed: checking
    /// before a write keeps a batch from going into a socket the peer already closed (where
    /// the first write would succeed and the data vanish).
    fn peer_closed(&self) -> io::Result<bool> {
        let sock = match self {
            Conn::Tcp(s) => SockRef::from(s),
            Conn::Unix(s) => SockRef::from(s),
        };
        let mut buf = [MaybeUninit::<u8>::uninit(); 512];
        loop {
            match sock.recv_with_flags(&mut buf, libc::MSG_DONTWAIT) {
                Ok(0) => return Ok(true),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Newline-delimited JSON over a TCP or unix stream.
#[derive(Debug)]
pub(crate) struct Stream {
    target: StreamTarget,
    conn: Option<Conn>,
    /// Complete lines not written yet.
    out: Vec<u8>,
    /// Lines in `out`.
    records: usize,
    /// Lines held at most.
    max_records: usize,
    backoff: Backoff,
    ever_connected: bool,
}

impl Stream {
    pub(crate) fn new(target: StreamTarget, max_records: usize) -> Self {
        Stream {
            target,
            conn: None,
            out: Vec::new(),
            records: 0,
            max_records: max_records.max(1),
            backoff: Backoff::new(),
            ever_connected: false,
        }
    }

    fn connect(&self) -> io::Result<Conn> {
        match &self.target {
            StreamTarget::Tcp(addr) => connect_tcp(addr).map(Conn::Tcp),
            StreamTarget::Unix(path) => {
                let stream = UnixStream::connect(path)?;
                stream.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(Conn::Unix(stream))
            }
        }
    }

    fn poll(&mut self, now: Instant, counters: &Counters) -> bool {
        if self.records == 0 {
            return false;
        }
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                if !self.backoff.due(now) {
                    return false;
                }
                match self.connect() {
                    Ok(conn) => {
                        if self.ever_connected {
                            Counters::add(&counters.reconnects, 1);
                        }
                        self.ever_connected = true;
                        self.conn.insert(conn)
                    }
                    Err(e) => {
                        counters.error(format_args!("connecting to {}: {e}", self.target));
                        self.backoff.fail(now);
                        return false;
                    }
                }
            }
        };
        let mut written = 0;
        let result = match conn.peer_closed() {
            Ok(true) => Err(io::ErrorKind::ConnectionReset.into()),
            Err(e) => Err(e),
            Ok(false) => loop {
                if written == self.out.len() {
                    break Ok(());
                }
                match conn.write(&self.out[written..]) {
                    Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            },
        };
        match result {
            Ok(()) => {
                Counters::add(&counters.sent, self.records as u64);
                self.out.clear();
                self.records = 0;
                self.backoff.reset();
                true
            }
            Err(e) => {
                // Whole lines that reached the socket count as sent; a line cut short is sent
                // again whole on the next connection (events contain no raw newline).
                let line_start = self.out[..written]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                let lines = self.out[..line_start]
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count();
                self.out.drain(..line_start);
                self.records -= lines;
                Counters::add(&counters.sent, lines as u64);
                counters.error(format_args!("writing to {}: {e}", self.target));
                self.conn = None;
                self.backoff.fail(now);
                lines > 0
            }
        }
    }
}

/// Why a Redis connection failed.
#[derive(Debug, thiserror::Error)]
enum RedisError {
    /// Connecting, writing or reading failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// AUTH or SELECT was refused.
    #[error("{command} refused: {reply}")]
    Setup {
        command: &'static str,
        reply: String,
    },
    /// A reply that is not RESP2, too long, or not asked for.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

/// Batched pushes to a Redis list.
#[derive(Debug)]
pub(crate) struct Redis {
    target: RedisTarget,
    pipeline: Pipeline,
    conn: Option<TcpStream>,
    out: Vec<u8>,
    replies: Vec<u8>,
    backoff: Backoff,
    ever_connected: bool,
}

impl Redis {
    /// `pipeline` should allow one command in flight: each poll writes one push and waits for
    /// its reply, while new records pile up for the next one.
    pub(crate) fn new(target: RedisTarget, pipeline: Pipeline) -> Self {
        Redis {
            target,
            pipeline,
            conn: None,
            out: Vec::new(),
            replies: Vec::new(),
            backoff: Backoff::new(),
            ever_connected: false,
        }
    }

    fn poll(&mut self, now: Instant, counters: &Counters) -> bool {
        if self.pipeline.is_empty() || !self.backoff.due(now) {
            return false;
        }
        match self.push_once(counters) {
            Ok(delivered) => delivered,
            Err(e) => {
                self.pipeline.handle_disconnect();
                self.conn = None;
                counters.error(format_args!(
                    "redis {}:{}: {e}",
                    self.target.host, self.target.port
                ));
                self.backoff.fail(now);
                false
            }
        }
    }

    /// Connects if needed, writes one push and handles its reply.
    fn push_once(&mut self, counters: &Counters) -> Result<bool, RedisError> {
        if self.conn.is_none() {
            let stream = self.connect()?;
            if self.ever_connected {
                Counters::add(&counters.reconnects, 1);
            }
            self.ever_connected = true;
            self.conn = Some(stream);
        }
        self.out.clear();
        if self.pipeline.poll_write(&mut self.out) == 0 {
            return Ok(false);
        }
        let Some(conn) = &mut self.conn else {
            unreachable!("connected above");
        };
        conn.write_all(&self.out)?;
        let frame = read_reply(conn, &mut self.replies)?;
        let reply = match &frame {
            OwnedFrame::Integer(n) => Reply::Integer(*n),
            OwnedFrame::Error(e) => Reply::Error(e),
            _ => Reply::Unexpected,
        };
        match self.pipeline.handle_reply(reply) {
            Some(Ack::Pushed { records, .. }) => {
                Counters::add(&counters.sent, records as u64);
                self.backoff.reset();
                Ok(true)
            }
            Some(Ack::Refused { .. }) => {
                // OOM, READONLY, WRONGTYPE...: the records stay; wait before trying again.
                counters.error(format_args!("redis refused the push: {}", describe(&frame)));
                self.backoff.fail(Instant::now());
                Ok(false)
            }
            None => Err(RedisError::Protocol("unrequested reply")),
        }
    }

    /// Connects, then AUTH and SELECT as the URL asks.
    fn connect(&mut self) -> Result<TcpStream, RedisError> {
        let mut stream = connect_tcp(&format!("{}:{}", self.target.host, self.target.port))?;
        self.replies.clear();
        let mut setup = Vec::new();
        let mut commands = Vec::new();
        if let Some(password) = &self.target.password {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &self.target.user {
                args.push(user.as_bytes());
            }
            args.push(password.as_bytes());
            resp::write_command(&mut setup, &args);
            commands.push("AUTH");
        }
        if self.target.db != 0 {
            let db = itoa::Buffer::new().format(self.target.db).to_owned();
            resp::write_command(&mut setup, &[b"SELECT", db.as_bytes()]);
            commands.push("SELECT");
        }
        stream.write_all(&setup)?;
        for command in commands {
            if let OwnedFrame::Error(reply) = read_reply(&mut stream, &mut self.replies)? {
                return Err(RedisError::Setup { command, reply });
            }
        }
        Ok(stream)
    }
}

/// Reads until one whole reply is buffered, and takes it out of `buf`.
fn read_reply(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<OwnedFrame, RedisError> {
    loop {
        match decode(buf) {
            Ok(Some((frame, used))) => {
                buf.drain(..used);
                return Ok(frame);
            }
            Ok(None) if buf.len() > MAX_REPLY_BYTES => {
                return Err(RedisError::Protocol("reply too long"))
            }
            Ok(None) => {}
            Err(_) => return Err(RedisError::Protocol("not RESP2")),
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// A reply as text, for the error description.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let now = Instant::now();
        let mut b = Backoff::new();
        assert!(b.due(now));
        let mut waits = Vec::new();
        for _ in 0..8 {
            b.fail(now);
            waits.push(b.retry_at.unwrap() - now);
        }
        assert_eq!(waits[0], MIN_BACKOFF);
        assert_eq!(waits[1], MIN_BACKOFF * 2);
        assert_eq!(*waits.last().unwrap(), MAX_BACKOFF);
        assert!(!b.due(now));
        assert!(b.due(now + MAX_BACKOFF));
        b.reset();
        assert!(b.due(now));
    }
}
