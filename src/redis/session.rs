//! One Redis connection's protocol state, without the socket: when to connect, what to send
//! (AUTH, SELECT, then pushes from the [`Pipeline`]), what every reply means, and how long to
//! back off. Each engine owns the socket and reports to it: `handle_*` in, `poll_*` out, time
//! passed in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use std::sync::Arc;
use thiserror::Error;
use tracing::{debug, error, info, warn};

use super::pipeline::{Ack, Pipeline, Reply};
use super::resp;
use crate::config::RedisTarget;
use crate::stats::Stats;

/// First wait after a failure; doubled on each further failure up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// Longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A connection attempt that has not completed by then is abandoned.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a continuing outage is logged again.
const OUTAGE_REMINDER: Duration = Duration::from_secs(30);
/// Replies longer than this are a broken peer, not Redis.
const MAX_REPLY_BYTES: usize = 1 << 20;
/// While the list is over `--max-queue-length`, its length is asked this often.
pub const CONGESTION_PROBE: Duration = Duration::from_millis(200);

/// What an error reply means, from its first word
/// (<https://redis.io/docs/latest/develop/reference/protocol-spec/#simple-errors>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisErrorKind {
    /// `WRONGTYPE`: the key holds something other than a list.
    WrongType,
    /// `OOM`: `maxmemory` reached.
    Oom,
    /// `NOAUTH`/`WRONGPASS`/`NOPERM`: not logged in, or not allowed.
    Auth,
    /// `LOADING`: Redis is loading its dataset after a restart.
    Loading,
    /// `READONLY`: a replica (after a failover); reconnecting may reach the new primary.
    ReadOnly,
    /// `MISCONF`: Redis refuses writes because it cannot persist.
    Misconf,
    /// `BUSY`: a script is running.
    Busy,
    /// Anything else.
    Other,
}

impl RedisErrorKind {
    /// Classifies an error reply.
    pub fn of(reply: &str) -> Self {
        match reply.split_ascii_whitespace().next().unwrap_or("") {
            "WRONGTYPE" => Self::WrongType,
            "OOM" => Self::Oom,
            "NOAUTH" | "WRONGPASS" | "NOPERM" => Self::Auth,
            "LOADING" => Self::Loading,
            "READONLY" => Self::ReadOnly,
            "MISCONF" => Self::Misconf,
            "BUSY" => Self::Busy,
            _ => Self::Other,
        }
    }

    /// Whether the connection should be dropped and made again (logging in again, or reaching
    /// a new primary) rather than the push retried on it.
    pub fn needs_reconnect(self) -> bool {
        matches!(self, Self::Auth | Self::ReadOnly)
    }

    /// What an operator should know.
    pub fn hint(self) -> &'static str {
        match self {
            Self::WrongType => {
                "the key holds another type: delete it or choose another --redis-queue"
            }
            Self::Oom => "redis reached maxmemory: is the consumer (Logstash) running?",
            Self::Auth => "check the password and ACL user in --redis-url",
            Self::Loading => "redis is loading its dataset",
            Self::ReadOnly => "connected to a replica; reconnecting",
            Self::Misconf => "redis cannot persist to disk and refuses writes",
            Self::Busy => "a script is blocking redis",
            Self::Other => "unexpected error reply",
        }
    }
}

/// A reply the session waits for, in the order the commands were written.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// AUTH or SELECT.
    Setup(&'static str),
    /// A push of the pipeline, written at this time.
    Push(Instant),
    /// An LLEN probe while the list is over `--max-queue-length`.
    Length,
}

/// Why the connection failed. All are caused by Redis or the network: the records stay.
#[derive(Debug, Error)]
pub enum SinkError {
    /// The host name did not resolve.
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, std::io::Error),
    /// Connecting, reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Connecting took longer than [`CONNECT_TIMEOUT`].
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
    /// An error reply that a new connection may cure (NOAUTH, READONLY).
    #[error("{reply} ({})", kind.hint())]
    Refused {
        /// Its class.
        kind: RedisErrorKind,
        /// Redis' error text.
        reply: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not connected; connect at this time.
    Idle { retry_at: Instant },
    /// The engine is connecting since then.
    Connecting { since: Instant },
    /// Connected; AUTH/SELECT not yet written.
    Connected,
    /// Connected and the setup commands are written (their replies may still be due).
    Open,
}

#[derive(Debug)]
struct Outage {
    since: Instant,
    last_logged: Instant,
    failures: u64,
}

/// One worker's Redis protocol state and the records it owes Redis.
#[derive(Debug)]
pub struct Session {
    target: RedisTarget,
    pipeline: Pipeline,
    state: State,
    replies: BytesMut,
    /// Replies still due, in the order their commands were written.
    expect: VecDeque<Expect>,
    backoff: Duration,
    /// `--max-queue-length`: above it, pushes pause until the list is shorter.
    max_queue_length: Option<u64>,
    /// The list was over `max_queue_length`; pushes resume once it is not. Holds the time of
    /// the next LLEN probe, `None` while one is in flight.
    congested: Option<Option<Instant>>,
    /// No new pushes before this time (after Redis refused one).
    hold_until: Option<Instant>,
    outage: Option<Outage>,
    ever_connected: bool,
    stats: Arc<Stats>,
}

impl Session {
    /// A session that wants to connect at once.
    pub fn new(target: RedisTarget, pipeline: Pipeline, stats: Arc<Stats>, now: Instant) -> Self {
        Session {
            target,
            pipeline,
            state: State::Idle { retry_at: now },
            replies: BytesMut::with_capacity(4096),
            expect: VecDeque::new(),
            backoff: MIN_BACKOFF,
            max_queue_length: None,
            congested: None,
            hold_until: None,
            outage: None,
            ever_connected: false,
            stats,
        }
    }

    /// Pauses pushes while the list is longer than `limit` (Logstash's
    /// `congestion_threshold`), so a stalled consumer cannot run Redis out of memory.
    pub fn set_max_queue_length(&mut self, limit: Option<u64>) {
        self.max_queue_length = limit;
    }

    /// Whether pushes are paused because the list is over `--max-queue-length`.
    pub fn is_congested(&self) -> bool {
        self.congested.is_some()
    }

    /// Where Redis is.
    pub fn target(&self) -> &RedisTarget {
        &self.target
    }

    /// The records this session holds.
    pub fn pipeline(&mut self) -> &mut Pipeline {
        &mut self.pipeline
    }

    /// Read-only view of the records this session holds.
    pub fn pipeline_ref(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The earliest time the session has something to do without a socket event.
    pub fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Idle { retry_at } => Some(retry_at),
            State::Connecting { since } => Some(since + CONNECT_TIMEOUT),
            State::Connected | State::Open => match self.congested {
                Some(probe) => probe,
                None => self.hold_until.filter(|_| self.pipeline.unsent() > 0),
            },
        }
    }

    /// Whether the engine should start connecting now. Returns `true` once per attempt.
    pub fn poll_connect(&mut self, now: Instant) -> bool {
        match self.state {
            State::Idle { retry_at } if now >= retry_at => {
                self.state = State::Connecting { since: now };
                true
            }
            _ => false,
        }
    }

    /// Whether a connection attempt has run out of time; the engine then drops it and calls
    /// [`handle_failure`](Self::handle_failure).
    pub fn connect_timed_out(&self, now: Instant) -> bool {
        matches!(self.state, State::Connecting { since } if now >= since + CONNECT_TIMEOUT)
    }

    /// The engine's connection attempt succeeded.
    pub fn handle_connected(&mut self, now: Instant) {
        self.state = State::Connected;
        if self.ever_connected {
            Stats::add(&self.stats.reconnects, 1);
        }
        self.ever_connected = true;
        self.replies.clear();
        self.expect.clear();
        self.hold_until = None;
        if self.congested.is_some() {
            self.congested = Some(Some(now));
        }
        if self.target.password.is_none() && self.target.db == 0 {
            self.state = State::Open;
            self.usable(now);
        }
    }

    /// Appends what should be written next to `out`: setup commands after a connect, then
    /// pushes while the in-flight limit and backoff allow.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) {
        self.pipeline.sync(now);
        match self.state {
            State::Connected => {
                if let Some(password) = &self.target.password {
                    let mut args: Vec<&[u8]> = vec![b"AUTH"];
                    if let Some(user) = &self.target.user {
                        args.push(user.as_bytes());
                    }
                    args.push(password.as_bytes());
                    resp::write_command(out, &args);
                    self.expect.push_back(Expect::Setup("AUTH"));
                }
                if self.target.db != 0 {
                    let db = itoa::Buffer::new().format(self.target.db).to_owned();
                    resp::write_command(out, &[b"SELECT", db.as_bytes()]);
                    self.expect.push_back(Expect::Setup("SELECT"));
                }
                self.state = State::Open;
            }
            State::Open if !matches!(self.expect.front(), Some(Expect::Setup(_))) => {
                if let Some(probe) = self.congested {
                    if probe.is_some_and(|t| now >= t) {
                        resp::write_command(out, &[b"LLEN", self.pipeline.key()]);
                        self.expect.push_back(Expect::Length);
                        self.congested = Some(None);
                    }
                    return;
                }
                if self.hold_until.is_some_and(|t| now < t) {
                    return;
                }
                self.hold_until = None;
                for _ in 0..self.pipeline.poll_write(out) {
                    self.expect.push_back(Expect::Push(now));
                }
            }
            _ => {}
        }
    }

    /// Handles bytes read from Redis.
    ///
    /// # Errors
    /// A [`SinkError`] when the connection must be dropped (refused setup, protocol error).
    pub fn handle_received(&mut self, data: &[u8], now: Instant) -> Result<(), SinkError> {
        self.replies.extend_from_slice(data);
        loop {
            let (frame, used) = match decode(&self.replies) {
                Ok(Some(decoded)) => decoded,
                Ok(None) if self.replies.len() > MAX_REPLY_BYTES => {
                    return Err(SinkError::Protocol("reply too long".into()))
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(SinkError::Protocol(e.to_string())),
            };
            self.replies.advance(used);
            let expected = self.expect.pop_front().ok_or_else(|| {
                SinkError::Protocol(format!("unrequested reply {}", describe(&frame)))
            })?;
            match expected {
                Expect::Setup(command) => {
                    if let OwnedFrame::Error(reply) = frame {
                        return Err(SinkError::Setup { command, reply });
                    }
                    if !matches!(self.expect.front(), Some(Expect::Setup(_))) {
                        self.usable(now);
                    }
                }
                Expect::Length => self.handle_length(&frame, now)?,
                Expect::Push(sent) => self.handle_push_reply(&frame, sent, now)?,
            }
        }
    }

    fn handle_push_reply(
        &mut self,
        frame: &OwnedFrame,
        sent: Instant,
        now: Instant,
    ) -> Result<(), SinkError> {
        let reply = match frame {
            OwnedFrame::Integer(n) => Reply::Integer(*n),
            OwnedFrame::Error(e) => Reply::Error(e),
            _ => Reply::Unexpected,
        };
        match self.pipeline.handle_reply(reply) {
            Some(Ack::Pushed { records, list_len }) => {
                Stats::add(&self.stats.pushed, records as u64);
                self.stats
                    .redis_rtt
                    .record(now.saturating_duration_since(sent));
                if self.outage.is_some() {
                    self.usable(now);
                }
                self.check_length(list_len, now);
                Ok(())
            }
            Some(Ack::Refused { records }) => {
                Stats::add(&self.stats.redis_errors, 1);
                let kind = match frame {
                    OwnedFrame::Error(e) => RedisErrorKind::of(e),
                    _ => RedisErrorKind::Other,
                };
                let why = format!("push refused: {} ({})", describe(frame), kind.hint());
                if kind.needs_reconnect() {
                    return Err(SinkError::Refused {
                        kind,
                        reply: describe(frame),
                    });
                }
                self.note_failure(&why, records, now);
                self.hold_until = Some(now + self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                Ok(())
            }
            None => Err(SinkError::Protocol(format!(
                "unrequested reply {}",
                describe(frame)
            ))),
        }
    }

    fn handle_length(&mut self, frame: &OwnedFrame, now: Instant) -> Result<(), SinkError> {
        match frame {
            OwnedFrame::Integer(len) => {
                self.congested = Some(Some(now + CONGESTION_PROBE));
                self.check_length(*len, now);
                Ok(())
            }
            OwnedFrame::Error(e) => {
                // Most likely WRONGTYPE: the pushes will report it.
                debug!(reply = %e, "LLEN refused");
                self.congested = None;
                Ok(())
            }
            other => Err(SinkError::Protocol(format!(
                "LLEN answered {}",
                describe(other)
            ))),
        }
    }

    /// Starts or ends a congestion pause from the list's length.
    fn check_length(&mut self, len: i64, now: Instant) {
        let Some(limit) = self.max_queue_length else {
            return;
        };
        let over = u64::try_from(len).is_ok_and(|len| len > limit);
        match (over, self.congested.is_some()) {
            (true, false) => {
                warn!(
                    list_len = len,
                    limit,
                    buffered = self.pipeline.len(),
                    "redis list over --max-queue-length: pausing pushes until the consumer catches up"
                );
                Stats::add(&self.stats.congestion_pauses, 1);
                self.congested = Some(Some(now + CONGESTION_PROBE));
                self.pipeline.set_spill(true);
            }
            (false, true) => {
                info!(
                    list_len = len,
                    limit, "redis list below --max-queue-length: resuming pushes"
                );
                self.congested = None;
            }
            _ => {}
        }
    }

    /// The connection (or the attempt) is gone: whatever was unacknowledged is sent again on
    /// the next one, after the backoff.
    pub fn handle_failure(&mut self, err: &SinkError, now: Instant) {
        let requeued = self.pipeline.handle_disconnect();
        Stats::add(&self.stats.redis_errors, 1);
        self.note_failure(&err.to_string(), requeued, now);
        self.state = State::Idle {
            retry_at: now + self.backoff,
        };
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.replies.clear();
        self.expect.clear();
        self.hold_until = None;
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

    /// The connection can carry pushes: end an outage.
    fn usable(&mut self, now: Instant) {
        self.backoff = MIN_BACKOFF;
        self.pipeline.set_spill(self.congested.is_some());
        match self.outage.take() {
            Some(outage) => info!(
                redis = %self.target,
                down_for = ?now.duration_since(outage.since),
                failures = outage.failures,
                buffered = self.pipeline.len(),
                "redis is reachable again; resending buffered records"
            ),
            None => debug!(redis = %self.target, "connected to redis"),
        }
    }

    /// Logs a failure once per outage (and a reminder while it lasts).
    fn note_failure(&mut self, why: &str, records: usize, now: Instant) {
        let buffered = self.pipeline.len();
        match &mut self.outage {
            None => {
                warn!(
                    redis = %self.target,
                    buffered,
                    "redis unavailable: {why}; keeping records and retrying"
                );
                self.outage = Some(Outage {
                    since: now,
                    last_logged: now,
                    failures: 1,
                });
                self.pipeline.set_spill(true);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::pipeline::{PipelineConfig, PushCommand};
    use bytes::Bytes;

    fn session(password: Option<&str>, db: u32, now: Instant) -> Session {
        let target = RedisTarget {
            host: "localhost".into(),
            port: 6379,
            socket: None,
            user: password.map(|_| "app".into()),
            password: password.map(Into::into),
            db,
        };
        let pipeline = Pipeline::new(PipelineConfig {
            key: Bytes::from_static(b"q"),
            command: PushCommand::Rpush,
            capacity: 100,
            max_batch_records: 10,
            max_batch_bytes: 1 << 20,
            max_in_flight: 2,
        });
        Session::new(target, pipeline, Arc::new(Stats::default()), now)
    }

    fn transmit(s: &mut Session, now: Instant) -> String {
        let mut out = Vec::new();
        s.poll_transmit(now, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn connect_setup_push_ack() {
        let t0 = Instant::now();
        let mut s = session(Some("pw"), 3, t0);
        assert!(s.poll_connect(t0));
        assert!(!s.poll_connect(t0), "one attempt at a time");
        s.pipeline().push(b"e1");
        s.handle_connected(t0);
        let setup = transmit(&mut s, t0);
        assert_eq!(
            setup,
            "*3\r\n$4\r\nAUTH\r\n$3\r\napp\r\n$2\r\npw\r\n*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n"
        );
        // No push before the setup replies.
        assert_eq!(transmit(&mut s, t0), "");
        s.handle_received(b"+OK\r\n+O", t0).unwrap();
        assert_eq!(transmit(&mut s, t0), "");
        s.handle_received(b"K\r\n", t0).unwrap();
        assert_eq!(
            transmit(&mut s, t0),
            "*3\r\n$5\r\nRPUSH\r\n$1\r\nq\r\n$2\r\ne1\r\n"
        );
        s.handle_received(b":1\r\n", t0).unwrap();
        assert!(s.pipeline_ref().is_empty());
        assert_eq!(s.stats.snapshot().pushed, 1);
    }

    #[test]
    fn refused_auth_drops_the_connection() {
        let t0 = Instant::now();
        let mut s = session(Some("bad"), 0, t0);
        assert!(s.poll_connect(t0));
        s.handle_connected(t0);
        transmit(&mut s, t0);
        let err = s
            .handle_received(b"-WRONGPASS invalid username-password pair\r\n", t0)
            .unwrap_err();
        assert!(
            matches!(
                err,
                SinkError::Setup {
                    command: "AUTH",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn failures_back_off_exponentially_and_resend() {
        let t0 = Instant::now();
        let mut s = session(None, 0, t0);
        s.pipeline().push(b"e1");
        assert!(s.poll_connect(t0));
        s.handle_connected(t0);
        assert!(transmit(&mut s, t0).contains("e1"));
        s.handle_failure(&SinkError::Closed, t0);
        assert_eq!(s.deadline(), Some(t0 + MIN_BACKOFF));
        assert!(!s.poll_connect(t0 + MIN_BACKOFF / 2));
        let t1 = t0 + MIN_BACKOFF;
        assert!(s.poll_connect(t1));
        s.handle_failure(&SinkError::Closed, t1);
        assert_eq!(s.deadline(), Some(t1 + MIN_BACKOFF * 2));
        let mut t = t1;
        for _ in 0..10 {
            t += MAX_BACKOFF;
            assert!(s.poll_connect(t));
            s.handle_failure(&SinkError::Closed, t);
        }
        assert_eq!(s.deadline(), Some(t + MAX_BACKOFF), "capped");
        t += MAX_BACKOFF;
        assert!(s.poll_connect(t));
        s.handle_connected(t);
        // The unacknowledged record goes again on the new connection.
        assert!(transmit(&mut s, t).contains("e1"));
        s.handle_received(b":1\r\n", t).unwrap();
        assert_eq!(s.deadline(), None);
        assert_eq!(s.stats.snapshot().reconnects, 1);
    }

    #[test]
    fn refused_push_holds_new_pushes_for_the_backoff() {
        let t0 = Instant::now();
        let mut s = session(None, 0, t0);
        s.poll_connect(t0);
        s.handle_connected(t0);
        s.pipeline().push(b"e1");
        transmit(&mut s, t0);
        s.handle_received(b"-OOM command not allowed\r\n", t0)
            .unwrap();
        assert_eq!(s.pipeline_ref().unsent(), 1);
        assert_eq!(transmit(&mut s, t0), "", "held");
        assert_eq!(s.deadline(), Some(t0 + MIN_BACKOFF));
        assert!(transmit(&mut s, t0 + MIN_BACKOFF).contains("e1"));
    }

    #[test]
    fn connect_timeout_and_protocol_errors() {
        let t0 = Instant::now();
        let mut s = session(None, 0, t0);
        assert!(s.poll_connect(t0));
        assert!(!s.connect_timed_out(t0 + CONNECT_TIMEOUT / 2));
        assert!(s.connect_timed_out(t0 + CONNECT_TIMEOUT));
        s.handle_failure(&SinkError::ConnectTimeout, t0 + CONNECT_TIMEOUT);
        let t1 = t0 + CONNECT_TIMEOUT + MIN_BACKOFF;
        assert!(s.poll_connect(t1));
        s.handle_connected(t1);
        assert!(matches!(
            s.handle_received(b":5\r\n", t1),
            Err(SinkError::Protocol(_))
        ));
        assert!(matches!(
            s.handle_received(b"?garbage\r\n", t1),
            Err(SinkError::Protocol(_))
        ));
    }

    #[test]
    fn congestion_pauses_pushes_until_llen_drops() {
        let t0 = Instant::now();
        let mut s = session(None, 0, t0);
        s.set_max_queue_length(Some(5));
        s.poll_connect(t0);
        s.handle_connected(t0);
        s.pipeline().push(b"e1");
        transmit(&mut s, t0);
        s.handle_received(b":6\r\n", t0).unwrap();
        assert!(s.is_congested());
        s.pipeline().push(b"e2");
        assert_eq!(transmit(&mut s, t0), "", "paused");
        assert_eq!(s.deadline(), Some(t0 + CONGESTION_PROBE));
        let t1 = t0 + CONGESTION_PROBE;
        assert_eq!(transmit(&mut s, t1), "*2\r\n$4\r\nLLEN\r\n$1\r\nq\r\n");
        assert_eq!(transmit(&mut s, t1), "", "one probe at a time");
        assert_eq!(s.deadline(), None);
        s.handle_received(b":9\r\n", t1).unwrap();
        assert!(s.is_congested());
        let t2 = t1 + CONGESTION_PROBE;
        assert!(transmit(&mut s, t2).contains("LLEN"));
        s.handle_received(b":5\r\n", t2).unwrap();
        assert!(!s.is_congested());
        assert!(transmit(&mut s, t2).contains("e2"));
        assert_eq!(
            s.stats
                .congestion_pauses
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn error_replies_are_classified() {
        assert_eq!(
            RedisErrorKind::of("WRONGTYPE Operation against a key holding the wrong kind of value"),
            RedisErrorKind::WrongType
        );
        assert_eq!(
            RedisErrorKind::of("OOM command not allowed"),
            RedisErrorKind::Oom
        );
        assert_eq!(
            RedisErrorKind::of("NOAUTH Authentication required."),
            RedisErrorKind::Auth
        );
        assert_eq!(
            RedisErrorKind::of("LOADING Redis is loading"),
            RedisErrorKind::Loading
        );
        assert_eq!(
            RedisErrorKind::of("READONLY You can't write"),
            RedisErrorKind::ReadOnly
        );
        assert_eq!(RedisErrorKind::of("ERR unknown"), RedisErrorKind::Other);
        let t0 = Instant::now();
        let mut s = session(None, 0, t0);
        s.poll_connect(t0);
        s.handle_connected(t0);
        s.pipeline().push(b"e1");
        transmit(&mut s, t0);
        let err = s
            .handle_received(b"-NOAUTH Authentication required.\r\n", t0)
            .unwrap_err();
        assert!(matches!(
            err,
            SinkError::Refused {
                kind: RedisErrorKind::Auth,
                ..
            }
        ));
        s.handle_failure(&err, t0);
        assert_eq!(s.pipeline_ref().unsent(), 1, "kept for the next connection");
    }

    #[test]
    fn round_trip_time_is_recorded() {
        let t0 = Instant::now();
        let mut s = session(None, 0, t0);
        s.poll_connect(t0);
        s.handle_connected(t0);
        s.pipeline().push(b"e1");
        transmit(&mut s, t0);
        s.handle_received(b":1\r\n", t0 + Duration::from_micros(300))
            .unwrap();
        let (buckets, sum) = s.stats.redis_rtt.snapshot();
        assert_eq!(sum, 300);
        assert_eq!(buckets[3], 1, "the 250..500 µs bucket");
    }
}
