//! One Redis connection's protocol state, without the socket: when to connect, what to send
//! (AUTH, SELECT, then pushes from the [`Pipeline`]), what every reply means, and how long to
//! back off. Each engine owns the socket and reports to it: `handle_*` in, `poll_*` out, time
//! passed in.

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
    /// Setup commands (AUTH, SELECT) whose replies are still due, in order.
    setup: Vec<&'static str>,
    backoff: Duration,
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
            setup: Vec::new(),
            backoff: MIN_BACKOFF,
            hold_until: None,
            outage: None,
            ever_connected: false,
            stats,
        }
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
            State::Connected | State::Open => {
                self.hold_until.filter(|_| self.pipeline.unsent() > 0)
            }
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
        self.setup.clear();
        self.hold_until = None;
        if self.target.password.is_none() && self.target.db == 0 {
            self.state = State::Open;
            self.usable(now);
        }
    }

    /// Appends what should be written next to `out`: setup commands after a connect, then
    /// pushes while the in-flight limit and backoff allow.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) {
        match self.state {
            State::Connected => {
                if let Some(password) = &self.target.password {
                    let mut args: Vec<&[u8]> = vec![b"AUTH"];
                    if let Some(user) = &self.target.user {
                        args.push(user.as_bytes());
                    }
                    args.push(password.as_bytes());
                    resp::write_command(out, &args);
                    self.setup.push("AUTH");
                }
                if self.target.db != 0 {
                    let db = itoa::Buffer::new().format(self.target.db).to_owned();
                    resp::write_command(out, &[b"SELECT", db.as_bytes()]);
                    self.setup.push("SELECT");
                }
                self.state = State::Open;
            }
            State::Open if self.setup.is_empty() => {
                if self.hold_until.is_some_and(|t| now < t) {
                    return;
                }
                self.hold_until = None;
                self.pipeline.poll_write(out);
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
            if !self.setup.is_empty() {
                let command = self.setup.remove(0);
                if let OwnedFrame::Error(reply) = frame {
                    return Err(SinkError::Setup { command, reply });
                }
                if self.setup.is_empty() {
                    self.usable(now);
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
                        self.usable(now);
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
        self.setup.clear();
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
}
