//! The consumer: pops events from the Redis list as Logstash's `redis` input does, finds each
//! event's stamp (`lt_*` fields, wherever the proxy put them) and feeds the sequence tracker
//! and the latency histograms.
//!
//! Logstash (`logstash-input-redis`, `data_type => "list"`) reads in batches with
//! `MULTI; LRANGE key 0 n-1; LTRIM key n -1; EXEC`, or one event at a time with `BLPOP`.
//! Commands are RESP arrays of bulk strings; replies are decoded with redis-protocol.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

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
    /// `MULTI; LRANGE 0 n-1; LTRIM n -1; EXEC` batches (Logstash with `batch_count > 1`).
    Lrange,
    /// `BLPOP`, one event per round trip (Logstash with `batch_count => 1`).
    Blpop,
}

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
}

impl Conn {
    /// Connects, authenticates and selects the database.
    ///
    /// # Errors
    /// Connecting fails or Redis refuses `AUTH`/`SELECT`.
    pub fn connect(url: &RedisUrl) -> Result<Conn, ConsumeError> {
        let stream = TcpStream::connect((url.host.as_str(), url.port))?;
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            rbuf: vec![0; 1 << 20],
            filled: 0,
            wbuf: Vec::new(),
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
            let n = self.stream.read(&mut self.rbuf[self.filled..])?;
            if n == 0 {
                return Err(ConsumeError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            self.filled += n;
        }
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
}

impl Tally {
    /// Notes one event read back at `now_ns` by a consumer of run `run`.
    pub fn handle_event(&mut self, parser: &StampParser, run: u32, event: &[u8], now_ns: u64) {
        self.popped += 1;
        let Some(s) = parser.parse(event) else {
            self.tracker.handle_foreign();
            return;
        };
        if s.run != u64::from(run) || s.stream > u64::from(u32::MAX) {
            self.tracker.handle_foreign();
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

/// Pops events and tallies them.
pub struct Consumer {
    conn: Conn,
    mode: PopMode,
    cmd: Vec<u8>,
    parser: StampParser,
    run: u32,
    clock: Clock,
    /// The tally so far.
    pub tally: Tally,
}

impl Consumer {
    /// A consumer for a run with `streams` streams.
    ///
    /// # Errors
    /// Connecting to Redis fails.
    pub fn connect(
        pop: &Pop,
        run: u32,
        streams: u32,
        clock: Clock,
    ) -> Result<Consumer, ConsumeError> {
        let (queue, mode, batch, block) = (&pop.queue, pop.mode, pop.batch, pop.block);
        let conn = Conn::connect(&pop.url)?;
        let mut cmd = Vec::new();
        let key = queue.as_bytes();
        match mode {
            PopMode::Lrange => {
                let last = (batch.max(1) - 1).to_string();
                let keep = batch.max(1).to_string();
                encode_command(&[b"MULTI"], &mut cmd);
                encode_command(&[b"LRANGE", key, b"0", last.as_bytes()], &mut cmd);
                encode_command(&[b"LTRIM", key, keep.as_bytes(), b"-1"], &mut cmd);
                encode_command(&[b"EXEC"], &mut cmd);
            }
            PopMode::Blpop => {
                let secs = format!("{:.3}", block.as_secs_f64().max(0.001));
                encode_command(&[b"BLPOP", key, secs.as_bytes()], &mut cmd);
            }
        }
        Ok(Consumer {
            conn,
            mode,
            cmd,
            parser: StampParser::default(),
            run,
            clock,
            tally: Tally {
                tracker: Tracker::new(streams),
                latency: Latency::default(),
                popped: 0,
                last_latency_ns: 0,
            },
        })
    }

    /// One round trip; returns the number of events popped (0: the list was empty).
    ///
    /// # Errors
    /// I/O, a Redis error reply, or a reply of the wrong shape.
    pub fn poll(&mut self) -> Result<usize, ConsumeError> {
        self.conn.stream.write_all(&self.cmd)?;
        let replies = match self.mode {
            PopMode::Lrange => 4,
            PopMode::Blpop => 1,
        };
        let mut n = 0;
        for i in 0..replies {
            let (frame, used) = self.conn.read_frame()?;
            let now = self.clock.now_ns();
            let buf = &self.conn.rbuf;
            let events: &[RangeFrame] = match (&frame, self.mode, i) {
                (RangeFrame::Error(r), _, _) => {
                    let msg = String::from_utf8_lossy(&buf[r.0..r.1]).into_owned();
                    return Err(ConsumeError::Reply(msg));
                }
                // EXEC: [LRANGE's array, LTRIM's OK].
                (RangeFrame::Array(parts), PopMode::Lrange, 3) => match parts.first() {
                    Some(RangeFrame::Array(events)) => events,
                    _ => return Err(ConsumeError::Protocol(format!("EXEC gave {frame:?}"))),
                },
                (_, PopMode::Lrange, _) => &[],
                // BLPOP: [key, value], or nil on timeout.
                (RangeFrame::Array(kv), PopMode::Blpop, _) if kv.len() == 2 => &kv[1..],
                (RangeFrame::Null, PopMode::Blpop, _) => &[],
                _ => return Err(ConsumeError::Protocol(format!("BLPOP gave {frame:?}"))),
            };
            for e in events {
                if let RangeFrame::BulkString(r) = e {
                    self.tally
                        .handle_event(&self.parser, self.run, &buf[r.0..r.1], now);
                    n += 1;
                }
            }
            self.conn.consume(used);
        }
        Ok(n)
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
        let mut t = Tally {
            tracker: Tracker::new(1),
            latency: Latency::default(),
            popped: 0,
            last_latency_ns: 0,
        };
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
}
