//! The consumer: pops events from the Redis list as Logstash's `redis` input does, finds each
//! event's stamp (`lt_*` fields, wherever the proxy put them) and feeds the sequence tracker
//! and the latency histograms.
//!
//! Logstash (`logstash-input-redis`, `data_type => "list"`) reads in batches with
//! `MULTI; LRANGE key 0 n-1; LTRIM key n -1; EXEC`, or one event at a time with `BLPOP`.
//! Commands are RESP arrays of bulk strings; replies are decoded with redis-protocol.
//!
//! Redis may go away mid-run (a fault test kills or stops it): the consumer then reconnects and
//! goes on. An atomic pop whose reply was lost with the connection may have removed events
//! nobody saw; those pops are counted (`uncertain_pops`). `--consume exact` closes that gap:
//! it reads with `LRANGE`, tallies, and only then trims in `MULTI; LTRIM; INCR counter; EXEC`,
//! so after a lost reply the counter says whether the trim ran, and nothing is lost or counted
//! twice.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use memchr::memmem::Finder;
use redis_protocol::resp2::decode::decode_range;
use redis_protocol::resp2::types::RangeFrame;
use thiserror::Error;

use crate::hist::Latency;
use crate::record::{FIELD_DUE, FIELD_RUN, FIELD_SENT, FIELD_SEQ, FIELD_STREAM};
use crate::track::{Seen, Tracker};
use crate::Clock;

/// How events are popped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PopMode {
    /// `MULTI; LRANGE 0 n-1; LTRIM n -1; EXEC` batches (Logstash with `batch_count > 1`); an
    /// empty batch is followed by a `BLPOP` that returns on the next push, so the consumer adds
    /// no polling delay to the latencies.
    Lrange,
    /// `BLPOP`, one event per round trip (Logstash with `batch_count => 1`).
    Blpop,
    /// `LRANGE 0 n-1`, then `MULTI; LTRIM n -1; INCR counter; EXEC`: a pop survives a lost
    /// connection exactly (for fault tests). Needs a single consumer and a producer that
    /// appends (`RPUSH`).
    Exact,
}

/// How long one read waits before the consumer checks whether it should give up.
const READ_TICK: Duration = Duration::from_millis(200);
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait of the `BLPOP` that follows an empty `lrange` batch.
pub const WAKE_BLOCK: Duration = Duration::from_millis(10);
/// Error replies that mean "not now" rather than "never" (a restarted Redis loading its data).
const TRANSIENT_REPLIES: [&str; 4] = ["LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN"];
/// Runs besides this one whose records are tallied; more are only counted as foreign.
const MAX_OTHER_RUNS: usize = 16;

/// Failures talking to Redis.
#[derive(Debug, Error)]
pub enum ConsumeError {
    /// The connection failed.
    #[error("redis: {0}")]
    Io(#[from] io::Error),
    /// Redis answered with an error.
    #[error("redis replied: {0}")]
    Reply(String),
    /// The reply was not RESP, or not the shape the command has.
    #[error("redis: unexpected reply ({0})")]
    Protocol(String),
    /// `--redis` is not a `redis://` URL.
    #[error("bad redis url {0:?}: want redis://[[user]:password@]host[:port][/db]")]
    Url(String),
    /// Redis did not answer before the drain deadline.
    #[error("redis: no reply before the drain deadline")]
    GaveUp,
}

impl ConsumeError {
    /// Whether trying again later may succeed: the connection failed, or Redis said "not now".
    pub fn is_transient(&self) -> bool {
        match self {
            ConsumeError::Io(_) => true,
            ConsumeError::Reply(r) => TRANSIENT_REPLIES.iter().any(|t| r.starts_with(t)),
            ConsumeError::Protocol(_) | ConsumeError::Url(_) | ConsumeError::GaveUp => false,
        }
    }
}

/// Where Redis is: `redis://[[user]:password@]host[:port][/db]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `AUTH` user.
    pub user: Option<String>,
    /// `AUTH` password.
    pub password: Option<String>,
    /// `SELECT` database.
    pub db: u32,
}

impl std::str::FromStr for RedisUrl {
    type Err = ConsumeError;

    fn from_str(url: &str) -> Result<RedisUrl, ConsumeError> {
        let bad = || ConsumeError::Url(url.to_string());
        let rest = url.strip_prefix("redis://").ok_or_else(bad)?;
        let (authority, db) = match rest.split_once('/') {
            Some((a, "")) => (a, 0),
            Some((a, db)) => (a, db.parse().map_err(|_| bad())?),
            None => (rest, 0),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some(("", pw)) => (None, Some(pw.to_string())),
                Some((user, pw)) => (Some(user.to_string()), Some(pw.to_string())),
                None => (None, Some(u.to_string())),
            },
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, p) = v6.split_once(']').ok_or_else(bad)?;
            (h, p.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad())?,
            None => 6379,
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(RedisUrl {
            host: host.to_string(),
            port,
            user,
            password,
            db,
        })
    }
}

/// Appends one command as a RESP array of bulk strings.
fn encode_command(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// One Redis connection with a read buffer.
pub struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    /// Bytes of `rbuf` holding data.
    filled: usize,
    wbuf: Vec<u8>,
    /// A read still waiting for its reply at this instant fails with [`ConsumeError::GaveUp`];
    /// before it, a slow (even stopped) Redis is waited for on the same connection, so no
    /// command is ever left behind on an abandoned one.
    give_up: Option<Instant>,
}

/// Opens a TCP connection to the first address of `host:port` that answers.
fn open(url: &RedisUrl) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in (url.host.as_str(), url.port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl Conn {
    /// Connects, authenticates and selects the database.
    ///
    /// # Errors
    /// Connecting fails or Redis refuses `AUTH`/`SELECT`.
    pub fn connect(url: &RedisUrl) -> Result<Conn, ConsumeError> {
        Conn::connect_until(url, None)
    }

    /// [`Conn::connect`], giving up on replies at `give_up`.
    fn connect_until(url: &RedisUrl, give_up: Option<Instant>) -> Result<Conn, ConsumeError> {
        let stream = open(url)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(READ_TICK))?;
        let mut conn = Conn {
            stream,
            rbuf: vec![0; 1 << 20],
            filled: 0,
            wbuf: Vec::new(),
            give_up,
        };
        if let Some(pw) = &url.password {
            match &url.user {
                Some(u) => conn.simple(&[b"AUTH", u.as_bytes(), pw.as_bytes()])?,
                None => conn.simple(&[b"AUTH", pw.as_bytes()])?,
            }
        }
        if url.db != 0 {
            conn.simple(&[b"SELECT", url.db.to_string().as_bytes()])?;
        }
        Ok(conn)
    }

    /// Sends one command and reads its reply, expecting no error.
    ///
    /// # Errors
    /// I/O, or Redis replies with an error.
    pub fn simple(&mut self, args: &[&[u8]]) -> Result<(), ConsumeError> {
        self.wbuf.clear();
        encode_command(args, &mut self.wbuf);
        self.stream.write_all(&self.wbuf)?;
        let (frame, used) = self.read_frame()?;
        let r = match frame {
            RangeFrame::Error(r) => Err(ConsumeError::Reply(
                String::from_utf8_lossy(&self.rbuf[r.0..r.1]).into_owned(),
            )),
            _ => Ok(()),
        };
        self.consume(used);
        r
    }

    /// Reads until one whole reply is buffered; returns it (ranges into `rbuf`) and its length.
    fn read_frame(&mut self) -> Result<(RangeFrame, usize), ConsumeError> {
        loop {
            match decode_range(&self.rbuf[..self.filled]) {
                Ok(Some(f)) => return Ok(f),
                Ok(None) => {}
                Err(e) => return Err(ConsumeError::Protocol(e.to_string())),
            }
            if self.filled == self.rbuf.len() {
                let grown = self.rbuf.len() * 2;
                self.rbuf.resize(grown, 0);
            }
            let n = match self.stream.read(&mut self.rbuf[self.filled..]) {
                Ok(0) => return Err(ConsumeError::Io(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if self.give_up.is_some_and(|t| Instant::now() >= t) {
                        return Err(ConsumeError::GaveUp);
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            self.filled += n;
        }
    }

    /// Sends `args` and reads the reply as an integer (`GET` of a counter: nil is 0).
    fn integer(&mut self, args: &[&[u8]]) -> Result<u64, ConsumeError> {
        self.wbuf.clear();
        encode_command(args, &mut self.wbuf);
        self.stream.write_all(&self.wbuf)?;
        let (frame, used) = self.read_frame()?;
        let text = |r: (usize, usize)| String::from_utf8_lossy(&self.rbuf[r.0..r.1]).into_owned();
        let r = match frame {
            RangeFrame::Null => Ok(0),
            RangeFrame::Integer(i) => {
                u64::try_from(i).map_err(|_| ConsumeError::Protocol(i.to_string()))
            }
            RangeFrame::BulkString(r) => text(r)
                .parse()
                .map_err(|_| ConsumeError::Protocol(format!("not a counter: {:?}", text(r)))),
            RangeFrame::Error(r) => Err(ConsumeError::Reply(text(r))),
            f => Err(ConsumeError::Protocol(format!("{f:?}"))),
        };
        self.consume(used);
        r
    }

    fn consume(&mut self, used: usize) {
        self.rbuf.copy_within(used..self.filled, 0);
        self.filled -= used;
    }
}

/// A stamp as read back from an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadStamp {
    /// `lt_run`
    pub run: u64,
    /// `lt_stream`
    pub stream: u64,
    /// `lt_seq`
    pub seq: u64,
    /// `lt_due_ns`
    pub due_ns: u64,
    /// `lt_sent_ns`
    pub sent_ns: u64,
}

/// Finds the `lt_*` fields in an event's JSON text without parsing the rest: `"key":` then an
/// integer, optionally quoted, at any depth, so proxies that nest or stringify fields work too.
pub struct StampParser {
    finders: [Finder<'static>; 5],
}

impl Default for StampParser {
    fn default() -> Self {
        let f = |name: &str| Finder::new(format!("\"{name}\"").as_bytes()).into_owned();
        StampParser {
            finders: [
                f(FIELD_RUN),
                f(FIELD_STREAM),
                f(FIELD_SEQ),
                f(FIELD_DUE),
                f(FIELD_SENT),
            ],
        }
    }
}

fn parse_number_after(event: &[u8], at: usize) -> Option<u64> {
    let mut i = at;
    let skip_ws = |i: &mut usize| {
        while event.get(*i).is_some_and(|b| b.is_ascii_whitespace()) {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    if event.get(i) != Some(&b':') {
        return None;
    }
    i += 1;
    skip_ws(&mut i);
    if event.get(i) == Some(&b'"') {
        i += 1;
    }
    let start = i;
    while event.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    std::str::from_utf8(&event[start..i]).ok()?.parse().ok()
}

impl StampParser {
    /// The stamp of one event, or `None` when it lacks one.
    pub fn parse(&self, event: &[u8]) -> Option<ReadStamp> {
        let mut v = [0u64; 5];
        for (slot, f) in v.iter_mut().zip(&self.finders) {
            let at = f.find(event)? + f.needle().len();
            *slot = parse_number_after(event, at)?;
        }
        Some(ReadStamp {
            run: v[0],
            stream: v[1],
            seq: v[2],
            due_ns: v[3],
            sent_ns: v[4],
        })
    }
}

/// What the consumer found so far.
#[derive(Debug)]
pub struct Tally {
    /// Sequence tracking.
    pub tracker: Tracker,
    /// Latencies of first deliveries.
    pub latency: Latency,
    /// Events popped, all kinds.
    pub popped: u64,
    /// Corrected latency of the last first delivery (ns), for progress lines.
    pub last_latency_ns: u64,
    /// Records of other runs in the same list (another generator sending with
    /// `--no-consume`), each tracked like this run's; they also count as foreign.
    pub others: Vec<OtherRun>,
}

/// Another run's records found in the list.
#[derive(Debug, Clone)]
pub struct OtherRun {
    /// Its `lt_run`.
    pub run: u32,
    /// Its streams, as many as show up.
    pub tracker: Tracker,
}

impl Tally {
    /// An empty tally for a run with `streams` streams.
    pub fn new(streams: u32) -> Tally {
        Tally {
            tracker: Tracker::new(streams),
            latency: Latency::default(),
            popped: 0,
            last_latency_ns: 0,
            others: Vec::new(),
        }
    }

    /// Notes one event read back at `now_ns` by a consumer of run `run`.
    pub fn handle_event(&mut self, parser: &StampParser, run: u32, event: &[u8], now_ns: u64) {
        self.popped += 1;
        let Some(s) = parser.parse(event) else {
            self.tracker.handle_foreign();
            return;
        };
        if s.stream > u64::from(u32::MAX) || s.run > u64::from(u32::MAX) {
            self.tracker.handle_foreign();
            return;
        }
        if s.run != u64::from(run) {
            self.tracker.handle_foreign();
            self.handle_other(s.run as u32, s.stream as u32, s.seq);
            return;
        }
        match self.tracker.handle(s.stream as u32, s.seq) {
            Seen::InOrder | Seen::Reordered => {
                self.latency.record(now_ns, s.due_ns, s.sent_ns);
                self.last_latency_ns = now_ns.saturating_sub(s.due_ns);
            }
            Seen::Duplicate | Seen::Foreign => {}
        }
    }

    fn handle_other(&mut self, run: u32, stream: u32, seq: u64) {
        let i = match self.others.iter().position(|o| o.run == run) {
            Some(i) => i,
            None if self.others.len() < MAX_OTHER_RUNS => {
                self.others.push(OtherRun {
                    run,
                    tracker: Tracker::open(),
                });
                self.others.len() - 1
            }
            None => return,
        };
        self.others[i].tracker.handle(stream, seq);
    }
}

/// What to pop and how.
#[derive(Debug, Clone)]
pub struct Pop {
    /// Redis.
    pub url: RedisUrl,
    /// The list.
    pub queue: String,
    /// LRANGE batches or BLPOP.
    pub mode: PopMode,
    /// Events per LRANGE.
    pub batch: usize,
    /// How long one BLPOP blocks.
    pub block: Duration,
}

/// Pops events and tallies them; reconnects when Redis went away.
pub struct Consumer {
    pop: Pop,
    /// `None` after a failure: the next poll reconnects.
    conn: Option<Conn>,
    /// A connection was made once (later ones are reconnects).
    connected: bool,
    /// The pop command (lrange, blpop) or the read (exact).
    cmd: Vec<u8>,
    /// `lrange`: a `BLPOP` that waits for the next push after an empty batch.
    wake: Vec<u8>,
    /// `--consume exact`: the key counting this consumer's trims.
    counter: String,
    /// Trims Redis confirmed (the counter's value).
    trims: u64,
    /// Events read and tallied whose trim was sent but not confirmed.
    pending_trim: Option<usize>,
    give_up: Option<Instant>,
    parser: StampParser,
    run: u32,
    clock: Clock,
    /// The tally so far.
    pub tally: Tally,
    /// Connections made again after a failure.
    pub reconnects: u64,
    /// Atomic pops (`lrange`, `blpop`) whose reply was lost with the connection: Redis may have
    /// removed up to a batch each that was never seen.
    pub uncertain_pops: u64,
}

impl Consumer {
    /// A consumer for a run with `streams` streams, not connected yet: its first poll
    /// connects.
    pub fn new(pop: &Pop, run: u32, streams: u32, clock: Clock) -> Consumer {
        let mut cmd = Vec::new();
        let key = pop.queue.as_bytes();
        let last = (pop.batch.max(1) - 1).to_string();
        match pop.mode {
            PopMode::Lrange => {
                let keep = pop.batch.max(1).to_string();
                encode_command(&[b"MULTI"], &mut cmd);
                encode_command(&[b"LRANGE", key, b"0", last.as_bytes()], &mut cmd);
                encode_command(&[b"LTRIM", key, keep.as_bytes(), b"-1"], &mut cmd);
                encode_command(&[b"EXEC"], &mut cmd);
            }
            PopMode::Blpop => {
                let secs = format!("{:.3}", pop.block.as_secs_f64().max(0.001));
                encode_command(&[b"BLPOP", key, secs.as_bytes()], &mut cmd);
            }
            PopMode::Exact => encode_command(&[b"LRANGE", key, b"0", last.as_bytes()], &mut cmd),
        }
        let mut wake = Vec::new();
        let secs = format!("{:.3}", WAKE_BLOCK.as_secs_f64());
        encode_command(&[b"BLPOP", key, secs.as_bytes()], &mut wake);
        Consumer {
            counter: format!("{}:pystash-loadtest:{run}:trims", pop.queue),
            pop: pop.clone(),
            conn: None,
            connected: false,
            cmd,
            wake,
            trims: 0,
            pending_trim: None,
            give_up: None,
            parser: StampParser::default(),
            run,
            clock,
            tally: Tally::new(streams),
            reconnects: 0,
            uncertain_pops: 0,
        }
    }

    /// A consumer for a run with `streams` streams, connected.
    ///
    /// # Errors
    /// Connecting to Redis fails.
    pub fn connect(
        pop: &Pop,
        run: u32,
        streams: u32,
        clock: Clock,
    ) -> Result<Consumer, ConsumeError> {
        let mut c = Consumer::new(pop, run, streams, clock);
        c.conn = Some(Conn::connect(&pop.url)?);
        c.connected = true;
        Ok(c)
    }

    /// From `at` on, a reply still awaited fails with [`ConsumeError::GaveUp`] instead of
    /// being waited for (the drain deadline).
    pub fn give_up_at(&mut self, at: Instant) {
        self.give_up = Some(at);
        if let Some(c) = &mut self.conn {
            c.give_up = Some(at);
        }
    }

    /// One round trip (two with `exact`), reconnecting first when the last one failed; returns
    /// the number of events popped (0: the list was empty).
    ///
    /// # Errors
    /// I/O, a Redis error reply, or a reply of the wrong shape. After an I/O error the
    /// connection is dropped and the next call reconnects; [`ConsumeError::is_transient`] says
    /// whether that is worth trying.
    pub fn poll(&mut self) -> Result<usize, ConsumeError> {
        self.poll_with(false)
    }

    /// After an empty `lrange` batch: one `BLPOP` that returns as soon as the next event is
    /// pushed (or after [`WAKE_BLOCK`]), so waiting adds no polling delay to the latencies
    /// measured. Other modes poll as usual. Returns and fails as [`Self::poll`].
    ///
    /// # Errors
    /// As [`Self::poll`].
    pub fn poll_wait(&mut self) -> Result<usize, ConsumeError> {
        self.poll_with(self.pop.mode == PopMode::Lrange)
    }

    fn poll_with(&mut self, wake: bool) -> Result<usize, ConsumeError> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => {
                let c = Conn::connect_until(&self.pop.url, self.give_up)?;
                if self.connected {
                    self.reconnects += 1;
                }
                self.connected = true;
                c
            }
        };
        let result = match self.pop.mode {
            PopMode::Exact => self.poll_exact(&mut conn),
            PopMode::Lrange | PopMode::Blpop => self.poll_atomic(&mut conn, wake),
        };
        // Replies were all read after an error reply, so the connection is still in step.
        if matches!(result, Ok(_) | Err(ConsumeError::Reply(_))) {
            self.conn = Some(conn);
        }
        result
    }

    /// `MULTI; LRANGE; LTRIM; EXEC` or `BLPOP`: one atomic pop.
    fn poll_atomic(&mut self, conn: &mut Conn, wake: bool) -> Result<usize, ConsumeError> {
        let (cmd, mode) = if wake {
            (&self.wake, PopMode::Blpop)
        } else {
            (&self.cmd, self.pop.mode)
        };
        conn.stream.write_all(cmd)?;
        let replies = if mode == PopMode::Lrange { 4 } else { 1 };
        let mut n = 0;
        let mut failed = None;
        for i in 0..replies {
            let (frame, used) = match conn.read_frame() {
                Ok(f) => f,
                Err(e) => {
                    // The pop may have run: its events are gone unseen.
                    self.uncertain_pops += 1;
                    return Err(e);
                }
            };
            let now = self.clock.now_ns();
            let buf = &conn.rbuf;
            let events: &[RangeFrame] = match (&frame, mode, i) {
                (RangeFrame::Error(r), _, _) => {
                    let msg = String::from_utf8_lossy(&buf[r.0..r.1]).into_owned();
                    failed.get_or_insert(ConsumeError::Reply(msg));
                    &[]
                }
                // EXEC: [LRANGE's array, LTRIM's OK].
                (RangeFrame::Array(parts), PopMode::Lrange, 3) => match parts.first() {
                    Some(RangeFrame::Array(events)) => events,
                    _ => return Err(ConsumeError::Protocol(format!("EXEC gave {frame:?}"))),
                },
                // LRANGE ran on its own: MULTI was refused (a Redis still loading).
                (RangeFrame::Array(events), PopMode::Lrange, 1) => events,
                (_, PopMode::Lrange, _) => &[],
                // BLPOP: [key, value], or nil on timeout.
                (RangeFrame::Array(kv), PopMode::Blpop, _) if kv.len() == 2 => &kv[1..],
                (RangeFrame::Null, PopMode::Blpop, _) => &[],
                _ => return Err(ConsumeError::Protocol(format!("{mode:?} gave {frame:?}"))),
            };
            for e in events {
                if let RangeFrame::BulkString(r) = e {
                    self.tally
                        .handle_event(&self.parser, self.run, &buf[r.0..r.1], now);
                    n += 1;
                }
            }
            conn.consume(used);
        }
        failed.map_or(Ok(n), Err)
    }

    /// `LRANGE`, tally, then trim what was read; a trim whose reply was lost is settled by the
    /// counter first.
    fn poll_exact(&mut self, conn: &mut Conn) -> Result<usize, ConsumeError> {
        if let Some(m) = self.pending_trim {
            let v = conn.integer(&[b"GET", self.counter.as_bytes()])?;
            if v == self.trims + 1 {
                // It ran; its reply was lost.
                self.trims = v;
                self.pending_trim = None;
            } else if v == self.trims {
                // It did not run: the head of the list still holds the events tallied.
                self.trim(conn, m)?;
            } else {
                return Err(self.foreign_trim(v));
            }
            return Ok(0);
        }
        conn.stream.write_all(&self.cmd)?;
        let (frame, used) = conn.read_frame()?;
        let now = self.clock.now_ns();
        let buf = &conn.rbuf;
        let events: &[RangeFrame] = match &frame {
            RangeFrame::Array(events) => events,
            RangeFrame::Error(r) => {
                let msg = String::from_utf8_lossy(&buf[r.0..r.1]).into_owned();
                conn.consume(used);
                return Err(ConsumeError::Reply(msg));
            }
            _ => return Err(ConsumeError::Protocol(format!("LRANGE gave {frame:?}"))),
        };
        for e in events {
            if let RangeFrame::BulkString(r) = e {
                self.tally
                    .handle_event(&self.parser, self.run, &buf[r.0..r.1], now);
            }
        }
        let m = events.len();
        conn.consume(used);
        if m > 0 {
            self.pending_trim = Some(m);
            self.trim(conn, m)?;
        }
        Ok(m)
    }

    /// `MULTI; LTRIM key m -1; INCR counter; EXEC`.
    fn trim(&mut self, conn: &mut Conn, m: usize) -> Result<(), ConsumeError> {
        let (key, counter, from) = (
            self.pop.queue.as_bytes(),
            self.counter.as_bytes(),
            m.to_string(),
        );
        let mut cmd = Vec::new();
        encode_command(&[b"MULTI"], &mut cmd);
        encode_command(&[b"LTRIM", key, from.as_bytes(), b"-1"], &mut cmd);
        encode_command(&[b"INCR", counter], &mut cmd);
        encode_command(&[b"EXEC"], &mut cmd);
        conn.stream.write_all(&cmd)?;
        let mut failed = None;
        let mut count = None;
        for i in 0..4 {
            let (frame, used) = conn.read_frame()?;
            match (&frame, i) {
                (RangeFrame::Error(r), _) => {
                    let msg = String::from_utf8_lossy(&conn.rbuf[r.0..r.1]).into_owned();
                    failed.get_or_insert(ConsumeError::Reply(msg));
                }
                (RangeFrame::Array(parts), 3) => match parts.get(1) {
                    Some(RangeFrame::Integer(v)) => count = u64::try_from(*v).ok(),
                    _ => return Err(ConsumeError::Protocol(format!("EXEC gave {frame:?}"))),
                },
                _ => {}
            }
            conn.consume(used);
        }
        if let Some(e) = failed {
            // Settled by the counter on the next poll.
            return Err(e);
        }
        match count {
            Some(v) if v == self.trims + 1 => {
                self.trims = v;
                self.pending_trim = None;
                Ok(())
            }
            Some(v) => Err(self.foreign_trim(v)),
            None => Err(ConsumeError::Protocol("EXEC gave no count".into())),
        }
    }

    fn foreign_trim(&self, v: u64) -> ConsumeError {
        ConsumeError::Protocol(format!(
            "{} is {v}, expected {} or {}: another consumer on this run's list?",
            self.counter,
            self.trims,
            self.trims + 1
        ))
    }

    /// Deletes the trim counter (`exact`); best effort, on the current connection only.
    pub fn finish(&mut self) {
        if let (PopMode::Exact, Some(c)) = (self.pop.mode, &mut self.conn) {
            let _ = c.simple(&[b"DEL", self.counter.as_bytes()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u: RedisUrl = "redis://127.0.0.1:6380/2".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.db, u.password),
            ("127.0.0.1", 6380, 2, None)
        );
        let u: RedisUrl = "redis://:s3cret@[::1]".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.password.as_deref()),
            ("::1", 6379, Some("s3cret"))
        );
        let u: RedisUrl = "redis://ada:pw@localhost/".parse().unwrap();
        assert_eq!((u.user.as_deref(), u.db), (Some("ada"), 0));
        for bad in ["http://x", "redis://", "redis://h:port", "redis://h/db"] {
            assert!(bad.parse::<RedisUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn commands_decode_as_resp_arrays() {
        let mut out = Vec::new();
        encode_command(&[b"LRANGE", b"logstash", b"0", b"124"], &mut out);
        assert_eq!(
            out,
            b"*4\r\n$6\r\nLRANGE\r\n$8\r\nlogstash\r\n$1\r\n0\r\n$3\r\n124\r\n"
        );
        let (frame, used) = redis_protocol::resp2::decode::decode(&out)
            .unwrap()
            .unwrap();
        assert_eq!(used, out.len());
        assert!(
            matches!(frame, redis_protocol::resp2::types::OwnedFrame::Array(a) if a.len() == 4)
        );
    }

    #[test]
    fn stamps_are_found_anywhere() {
        let p = StampParser::default();
        let flat = br#"{"@timestamp":"x","message":"lt_seq 99","lt_run":7,"lt_stream":2,"lt_seq":41,"lt_due_ns":1700000000000000000,"lt_sent_ns":1700000000000000005}"#;
        assert_eq!(
            p.parse(flat),
            Some(ReadStamp {
                run: 7,
                stream: 2,
                seq: 41,
                due_ns: 1_700_000_000_000_000_000,
                sent_ns: 1_700_000_000_000_000_005
            })
        );
        // Nested and stringified, as other proxies may write them.
        let nested = br#"{"@fields": {"lt_run" : "7", "lt_stream": "2", "lt_seq": "41", "lt_due_ns": "5", "lt_sent_ns": "6"}}"#;
        assert_eq!(
            p.parse(nested).map(|s| (s.seq, s.due_ns, s.sent_ns)),
            Some((41, 5, 6))
        );
        assert_eq!(p.parse(br#"{"message":"hello"}"#), None);
        assert_eq!(
            p.parse(br#"{"lt_run":"x","lt_stream":1,"lt_seq":1,"lt_due_ns":1,"lt_sent_ns":1}"#),
            None
        );
    }

    #[test]
    fn tally_counts_foreign_runs_and_duplicates() {
        let p = StampParser::default();
        let mut t = Tally::new(1);
        let ev = |run: u32, seq: u64| {
            format!(
                r#"{{"lt_run":{run},"lt_stream":0,"lt_seq":{seq},"lt_due_ns":1000,"lt_sent_ns":2000}}"#
            )
        };
        t.handle_event(&p, 5, ev(5, 0).as_bytes(), 3_000_000);
        t.handle_event(&p, 5, ev(5, 0).as_bytes(), 3_000_000);
        t.handle_event(&p, 5, ev(6, 1).as_bytes(), 3_000_000);
        t.handle_event(&p, 5, b"{}", 3_000_000);
        assert_eq!(t.popped, 4);
        assert_eq!(t.tracker.delivered(), 1);
        assert_eq!(t.tracker.foreign(), 2);
        assert_eq!(t.latency.corrected.len(), 1);
    }

    /// A Redis of a few commands (MULTI/EXEC, LRANGE, LTRIM, INCR, GET) that can drop the
    /// connection at an EXEC, having run it or not: the two ways a reply is lost.
    mod fake {
        use std::collections::VecDeque;
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        use std::sync::{Arc, Mutex};

        use redis_protocol::resp2::types::OwnedFrame;

        #[derive(Debug, Clone, Copy)]
        pub(super) enum Fault {
            /// Run the transaction, then close without replying.
            RunThenDrop,
            /// Close without running it.
            Drop,
        }

        #[derive(Default)]
        pub(super) struct State {
            pub(super) list: VecDeque<Vec<u8>>,
            pub(super) counter: i64,
            /// Faults for the coming EXECs, in order; `None`: answer normally.
            pub(super) faults: VecDeque<Option<Fault>>,
        }

        enum Reply {
            Simple(&'static str),
            Int(i64),
            Bulk(Vec<u8>),
            Nil,
            Items(Vec<Vec<u8>>),
            Many(Vec<Reply>),
        }

        fn encode(r: &Reply, out: &mut Vec<u8>) {
            match r {
                Reply::Simple(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
                Reply::Int(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
                Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
                Reply::Bulk(b) => {
                    out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
                    out.extend_from_slice(b);
                    out.extend_from_slice(b"\r\n");
                }
                Reply::Items(items) => {
                    out.extend_from_slice(format!("*{}\r\n", items.len()).as_bytes());
                    for i in items {
                        out.extend_from_slice(format!("${}\r\n", i.len()).as_bytes());
                        out.extend_from_slice(i);
                        out.extend_from_slice(b"\r\n");
                    }
                }
                Reply::Many(rs) => {
                    out.extend_from_slice(format!("*{}\r\n", rs.len()).as_bytes());
                    for r in rs {
                        encode(r, out);
                    }
                }
            }
        }

        fn index(arg: &[u8], len: usize) -> usize {
            let i: i64 = std::str::from_utf8(arg).unwrap().parse().unwrap();
            if i < 0 {
                (len as i64 + i).max(0) as usize
            } else {
                i as usize
            }
        }

        fn run(st: &mut State, cmd: &[Vec<u8>]) -> Reply {
            let len = st.list.len();
            match cmd[0].as_slice() {
                b"LRANGE" => {
                    let (a, b) = (index(&cmd[2], len), index(&cmd[3], len));
                    Reply::Items(
                        st.list
                            .iter()
                            .skip(a)
                            .take((b + 1).saturating_sub(a))
                            .cloned()
                            .collect(),
                    )
                }
                b"LTRIM" => {
                    let a = index(&cmd[2], len).min(len);
                    st.list.drain(..a);
                    Reply::Simple("OK")
                }
                b"INCR" => {
                    st.counter += 1;
                    Reply::Int(st.counter)
                }
                b"GET" if st.counter == 0 => Reply::Nil,
                b"GET" => Reply::Bulk(st.counter.to_string().into_bytes()),
                b"DEL" => Reply::Int(1),
                c => panic!("fake redis: {}", String::from_utf8_lossy(c)),
            }
        }

        fn serve(mut s: TcpStream, state: &Mutex<State>) {
            let mut buf = Vec::new();
            let mut queued: Option<Vec<Vec<Vec<u8>>>> = None;
            let mut chunk = [0u8; 65536];
            loop {
                while let Some((frame, used)) = redis_protocol::resp2::decode::decode(&buf).unwrap()
                {
                    buf.drain(..used);
                    let OwnedFrame::Array(parts) = frame else {
                        panic!("not a command")
                    };
                    let cmd: Vec<Vec<u8>> = parts
                        .into_iter()
                        .map(|p| match p {
                            OwnedFrame::BulkString(b) => b,
                            f => panic!("{f:?}"),
                        })
                        .collect();
                    let mut st = state.lock().unwrap();
                    let reply = match (cmd[0].as_slice(), &mut queued) {
                        (b"MULTI", q) => {
                            *q = Some(Vec::new());
                            Reply::Simple("OK")
                        }
                        (b"EXEC", q) => {
                            let cmds = q.take().unwrap();
                            let fault = st.faults.pop_front().flatten();
                            if matches!(fault, Some(Fault::Drop)) {
                                return;
                            }
                            let replies = cmds.iter().map(|c| run(&mut st, c)).collect();
                            if matches!(fault, Some(Fault::RunThenDrop)) {
                                return;
                            }
                            Reply::Many(replies)
                        }
                        (_, Some(q)) => {
                            q.push(cmd);
                            Reply::Simple("QUEUED")
                        }
                        (_, None) => run(&mut st, &cmd),
                    };
                    let mut out = Vec::new();
                    encode(&reply, &mut out);
                    if s.write_all(&out).is_err() {
                        return;
                    }
                }
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        }

        /// Serves connections one after another; returns the port.
        pub(super) fn start(state: Arc<Mutex<State>>) -> u16 {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            std::thread::spawn(move || {
                for s in l.incoming() {
                    serve(s.unwrap(), &state);
                }
            });
            port
        }
    }

    /// Polls until the list is drained, reconnecting through transient errors.
    fn drain(c: &mut Consumer, state: &std::sync::Mutex<fake::State>) {
        for _ in 0..100 {
            match c.poll() {
                Err(e) => assert!(e.is_transient(), "{e}"),
                Ok(_) if state.lock().unwrap().list.is_empty() && c.pending_trim.is_none() => {
                    return
                }
                Ok(_) => {}
            }
        }
        panic!("not drained");
    }

    fn consumer_for(
        mode: PopMode,
        events: usize,
    ) -> (Consumer, std::sync::Arc<std::sync::Mutex<fake::State>>) {
        let state = std::sync::Arc::new(std::sync::Mutex::new(fake::State::default()));
        {
            let mut st = state.lock().unwrap();
            for seq in 0..events {
                st.list.push_back(
                    format!(r#"{{"lt_run":5,"lt_stream":0,"lt_seq":{seq},"lt_due_ns":1,"lt_sent_ns":2}}"#)
                        .into_bytes(),
                );
            }
        }
        let port = fake::start(state.clone());
        let pop = Pop {
            url: format!("redis://127.0.0.1:{port}").parse().unwrap(),
            queue: "q".into(),
            mode,
            batch: 100,
            block: Duration::from_millis(10),
        };
        let c = Consumer::connect(&pop, 5, 1, Clock::start()).unwrap();
        (c, state)
    }

    #[test]
    fn exact_pops_survive_lost_replies() {
        let (mut c, state) = consumer_for(PopMode::Exact, 250);
        // The first trim runs but its reply is lost; the second is lost before it runs.
        state.lock().unwrap().faults =
            [Some(fake::Fault::RunThenDrop), Some(fake::Fault::Drop)].into();
        drain(&mut c, &state);
        let t = &c.tally.tracker;
        assert_eq!((t.delivered(), t.duplicates(), t.foreign()), (250, 0, 0));
        assert_eq!(c.reconnects, 2);
        assert_eq!(c.uncertain_pops, 0);
        // 100 + 100 + 50: three trims, each counted once.
        assert_eq!(state.lock().unwrap().counter, 3);
    }

    #[test]
    fn atomic_pops_count_the_replies_they_lost() {
        let (mut c, state) = consumer_for(PopMode::Lrange, 250);
        state.lock().unwrap().faults =
            [Some(fake::Fault::RunThenDrop), Some(fake::Fault::Drop)].into();
        drain(&mut c, &state);
        // The first batch was popped unseen; the second was not popped and comes again.
        assert_eq!(c.tally.tracker.delivered(), 150);
        assert_eq!((c.reconnects, c.uncertain_pops), (2, 2));
    }

    #[test]
    fn other_runs_are_tracked_apart() {
        let p = StampParser::default();
        let mut t = Tally::new(1);
        let ev = |run: u32, stream: u32, seq: u64| {
            format!(
                r#"{{"lt_run":{run},"lt_stream":{stream},"lt_seq":{seq},"lt_due_ns":1,"lt_sent_ns":2}}"#
            )
        };
        for (run, stream, seq) in [
            (5, 0, 0),
            (9, 3, 0),
            (9, 3, 1),
            (9, 3, 1),
            (9, 0, 7),
            (5, 0, 1),
        ] {
            t.handle_event(&p, 5, ev(run, stream, seq).as_bytes(), 10);
        }
        assert_eq!((t.tracker.delivered(), t.tracker.foreign()), (2, 4));
        let o = &t.others[0];
        assert_eq!(
            (
                o.run,
                o.tracker.streams(),
                o.tracker.delivered(),
                o.tracker.duplicates()
            ),
            (9, 4, 3, 1)
        );
    }
}
