//! Logging handlers for Rust programs: `log` and `tracing` records as Logstash events, sent
//! straight from the application to Logstash (TCP, UDP, unix), a Redis list, or a pystash proxy.
//!
//! The data path, with the proxy's own formatter and RESP encoder:
//!
//! 1. The application thread encodes the record (level, time, target, file, line, the message
//!    formatted in place, key-value fields: [`record::Encoder`]) into a reused per-thread buffer
//!    and copies it into a bounded queue (`queue.rs`); nothing else runs on its thread, nothing
//!    there allocates or waits for the network.
//! 2. A background thread decodes each record ([`record::Captured`]), turns it into a CPython
//!    `LogRecord`-shaped dict ([`record::Captured::to_value`]) and writes
//!    the Logstash v1/v0 event with [`EventFormat::write_record`], the same code the proxy runs
//!    on Python records.
//! 3. `transport.rs` sends the events: newline-delimited JSON on a stream, one datagram each, or
//!    multi-value `RPUSH` batches through the proxy's [`Pipeline`](crate::redis::pipeline).
//!
//! When the queue is full, records are dropped and counted ([`OnFull::Drop`], the default) or
//! the logging thread waits for room ([`OnFull::Block`]). A destination that is down is
//! reconnected with backoff (50 ms doubling to 2 s) while records wait in the queue.
//! [`Handle::flush`] and dropping the [`Handle`] deliver what is queued, waiting at most a
//! bounded time. [`Handle::stats`] counts every record accepted, sent and dropped.
//!
//! ```no_run
//! use pystash::handler::{Builder, Destination};
//!
//! let _handle = Builder::new(Destination::Udp("127.0.0.1:5959".into()))
//!     .message_type("myapp")
//!     .init_log()?;
//! log::info!(user = "ada"; "logged in");
//! # Ok::<(), pystash::handler::HandlerError>(())
//! ```

pub mod log;
mod queue;
pub mod record;
#[cfg(feature = "tracing")]
pub mod tracing;
mod transport;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use crate::config::{parse_redis_url, ConfigError, RedisTarget};
use crate::event::{EventConfig, EventFormat, LogstashVersion};
use crate::redis::pipeline::{Pipeline, PipelineConfig, PushCommand};
use queue::{Format, Queue};
use transport::{Datagram, Redis, Stream, StreamTarget, Transport};

/// Where events go.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Destination {
    /// Logstash's `tcp` input (`codec => json_lines`) at `host:port`: one event per line.
    Tcp(String),
    /// Logstash's `udp` input (`codec => json`) at `host:port`: one event per datagram.
    Udp(String),
    /// Logstash's `unix` input (`codec => json_lines`) at this path: one event per line.
    Unix(PathBuf),
    /// A Redis list, for Logstash's `redis` input; events leave in batched `RPUSH`es.
    Redis(RedisTarget),
    /// A pystash proxy's TCP port: record dicts as JSON lines, formatted by the proxy with its
    /// own `type`, `host`, version and tags (the configured tags lead the record's own).
    PystashTcp(String),
    /// A pystash proxy's UDP port: one record dict as JSON per datagram.
    PystashUdp(String),
    /// A pystash proxy's unix socket (`--unix`): record dicts as JSON lines.
    PystashUnix(PathBuf),
}

impl Destination {
    /// A Redis list at `redis://[user:password@]host[:port][/db]` (AUTH and SELECT as given).
    ///
    /// # Errors
    ///
    /// [`HandlerError::RedisUrl`] when the URL is not of that form.
    pub fn redis(url: &str) -> Result<Self, HandlerError> {
        parse_redis_url(url)
            .map(Destination::Redis)
            .map_err(|e| match e {
                ConfigError::RedisUrl(why) => HandlerError::RedisUrl(why),
                other => HandlerError::RedisUrl(other.to_string()),
            })
    }
}

/// What a logging call does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFull {
    /// Drop the record and count it in [`Stats::dropped_full`]: the application never waits.
    #[default]
    Drop,
    /// Wait for room: nothing is lost while the process runs, but a destination that is down
    /// stops every thread that logs once the queue is full.
    Block,
}

/// Counters of one handler, from [`Handle::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Records put on the queue.
    pub accepted: u64,
    /// Events delivered: datagrams sent, lines written to the stream, pushes Redis acknowledged.
    pub sent: u64,
    /// Records queued or being formatted now (not counting events a transport holds).
    pub pending: u64,
    /// Records dropped because the queue was full ([`OnFull::Drop`]).
    pub dropped_full: u64,
    /// Datagrams that could not be sent (no such host, nothing listening: `ECONNREFUSED`).
    pub dropped_unavailable: u64,
    /// Events larger than a UDP datagram can carry.
    pub dropped_oversized: u64,
    /// Records the formatter rejected (a time outside years 1 to 9999).
    pub dropped_invalid: u64,
    /// Records logged after shutdown began, or not delivered by its deadline.
    pub dropped_shutdown: u64,
    /// Failed connection attempts, broken connections and pushes Redis refused.
    pub errors: u64,
    /// Connections made again after a failure.
    pub reconnects: u64,
}

impl Stats {
    /// Records lost, for whatever reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_full
            + self.dropped_unavailable
            + self.dropped_oversized
            + self.dropped_invalid
            + self.dropped_shutdown
    }
}

/// Why a handler could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The Redis URL is not `redis://[user:password@]host[:port][/db]`.
    #[error("bad redis url: {0}")]
    RedisUrl(String),
    /// The worker thread could not be started.
    #[error("cannot start the handler thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// A `log` backend was installed already.
    #[error("a log backend is already installed: {0}")]
    SetLogger(#[from] ::log::SetLoggerError),
}

/// The default queue capacity, in records.
pub const DEFAULT_QUEUE_CAPACITY: usize = 32 * 1024;
/// The default wait for delivery when the handle is dropped.
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// The default pause of the worker after a busy round, during which records gather.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(1);
/// The default Redis list key (Logstash's `redis` input default).
pub const DEFAULT_REDIS_KEY: &str = "logstash";
/// Events in one batch at most, by default: one `RPUSH`, or one write on a stream.
pub const DEFAULT_MAX_BATCH_RECORDS: usize = 1000;
/// Event bytes in one `RPUSH` at most.
const MAX_BATCH_BYTES: usize = 4 << 20;

/// Settings of a handler; ends in [`Builder::init_log`], [`Builder::build_log`],
/// [`Builder::build_layer`] (feature `tracing`) or [`Builder::spawn`].
#[derive(Debug, Clone)]
pub struct Builder {
    destination: Destination,
    event: EventConfig,
    queue_capacity: usize,
    on_full: OnFull,
    flush_timeout: Duration,
    linger: Duration,
    max_batch_records: usize,
    redis_key: String,
    redis_push: PushCommand,
    level: ::log::LevelFilter,
}

impl Builder {
    /// A handler sending to `destination`, with the defaults: v1 events of `type` `"rust"`,
    /// this machine's hostname, no tags, a queue of [`DEFAULT_QUEUE_CAPACITY`] records that
    /// drops when full, `log` level INFO.
    pub fn new(destination: Destination) -> Self {
        Builder {
            destination,
            event: EventConfig {
                version: LogstashVersion::V1,
                host: crate::host::hostname(false),
                message_type: "rust".to_owned(),
                tags: Vec::new(),
            },
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            on_full: OnFull::Drop,
            flush_timeout: DEFAULT_FLUSH_TIMEOUT,
            linger: DEFAULT_LINGER,
            max_batch_records: DEFAULT_MAX_BATCH_RECORDS,
            redis_key: DEFAULT_REDIS_KEY.to_owned(),
            redis_push: PushCommand::Rpush,
            level: ::log::LevelFilter::Info,
        }
    }

    /// The events' `type` (`@type` in v0).
    pub fn message_type(mut self, message_type: impl Into<String>) -> Self {
        self.event.message_type = message_type.into();
        self
    }

    /// Tags put first in every event's `tags`; a record's own `tags` field follows them.
    pub fn tags<I, T>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.event.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// The events' `host` (`@source_host` in v0), instead of this machine's hostname.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.event.host = host.into();
        self
    }

    /// The event layout: [`LogstashVersion::V1`] (default) or the old `V0`.
    pub fn version(mut self, version: LogstashVersion) -> Self {
        self.event.version = version;
        self
    }

    /// Records held at most before [`OnFull`] applies (at least 1).
    pub fn queue_capacity(mut self, records: usize) -> Self {
        self.queue_capacity = records.max(1);
        self
    }

    /// What a logging call does when the queue is full.
    pub fn on_full(mut self, on_full: OnFull) -> Self {
        self.on_full = on_full;
        self
    }

    /// How long dropping the [`Handle`] (and `log::logger().flush()`) waits for delivery.
    pub fn flush_timeout(mut self, timeout: Duration) -> Self {
        self.flush_timeout = timeout;
        self
    }

    /// How long the worker pauses after a busy round so that records gather into one batch
    /// (default 1 ms; zero: never pause, at the price of waking the worker more often).
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Events per `RPUSH` or stream write at most; also how many formatted events a stream
    /// destination holds while it is down (the queue holds the rest).
    pub fn max_batch_records(mut self, records: usize) -> Self {
        self.max_batch_records = records.max(1);
        self
    }

    /// The Redis list's key (default `logstash`).
    pub fn redis_key(mut self, key: impl Into<String>) -> Self {
        self.redis_key = key.into();
        self
    }

    /// `RPUSH` (default: Logstash pops from the head) or `LPUSH`.
    pub fn redis_push(mut self, push: PushCommand) -> Self {
        self.redis_push = push;
        self
    }

    /// The most verbose `log` level sent (default INFO); only for [`Builder::init_log`] and
    /// [`Builder::build_log`]. `tracing` layers are filtered with `Layer::with_filter`.
    pub fn level(mut self, level: ::log::LevelFilter) -> Self {
        self.level = level;
        self
    }

    /// Starts the worker thread: returns the sending side (for a custom front end, see
    /// [`Sender::send`]) and the handle that owns the worker.
    ///
    /// Nothing is connected yet: the worker connects when the first record arrives, and keeps
    /// retrying with backoff while the destination is unreachable.
    ///
    /// # Errors
    ///
    /// [`HandlerError::Spawn`] when the thread cannot be started.
    pub fn spawn(self) -> Result<(Sender, Handle), HandlerError> {
        let batch = self.max_batch_records;
        let format = match &self.destination {
            Destination::PystashTcp(_)
            | Destination::PystashUdp(_)
            | Destination::PystashUnix(_) => Format::Record {
                tags: self.event.tags.clone(),
            },
            _ => Format::Event(EventFormat::new(self.event.clone())),
        };
        let transport = match self.destination {
            Destination::Tcp(addr) | Destination::PystashTcp(addr) => {
                Transport::Stream(Stream::new(StreamTarget::Tcp(addr), batch))
            }
            Destination::Unix(path) | Destination::PystashUnix(path) => {
                Transport::Stream(Stream::new(StreamTarget::Unix(path), batch))
            }
            Destination::Udp(addr) | Destination::PystashUdp(addr) => {
                Transport::Datagram(Datagram::new(addr))
            }
            Destination::Redis(target) => {
                let pipeline = Pipeline::new(PipelineConfig {
                    key: Bytes::from(self.redis_key.into_bytes()),
                    command: self.redis_push,
                    capacity: batch,
                    max_batch_records: batch,
                    max_batch_bytes: MAX_BATCH_BYTES,
                    max_in_flight: 1,
                });
                Transport::Redis(Box::new(Redis::new(target, pipeline)))
            }
        };
        let (queue, worker) = queue::new(
            self.queue_capacity,
            self.on_full,
            format,
            transport,
            self.linger,
        );
        let thread = std::thread::Builder::new()
            .name("pystash-handler".into())
            .spawn(move || worker.run())
            .map_err(HandlerError::Spawn)?;
        let sender = Sender {
            queue: queue.clone(),
            flush_timeout: self.flush_timeout,
        };
        let handle = Handle {
            queue,
            thread: Some(thread),
            flush_timeout: self.flush_timeout,
        };
        Ok((sender, handle))
    }
}

/// The sending side of a handler: what the `log` backend and the `tracing` layer hold.
#[derive(Debug, Clone)]
pub struct Sender {
    queue: Queue,
    flush_timeout: Duration,
}

impl Sender {
    /// Queues one record.
    pub fn send(&self, record: &record::Captured<'_>) {
        queue::with_scratch(|buf| {
            record.encode(buf);
            self.queue.send(buf);
        });
    }

    /// Encodes one record with `encode` (a [`record::Encoder`]) into this thread's reused buffer
    /// and queues it: the `log` and `tracing` front ends' path, with no allocation. Nothing is
    /// queued when `encode` writes nothing.
    pub fn send_with(&self, encode: impl FnOnce(&mut Vec<u8>)) {
        queue::with_scratch(|buf| {
            encode(buf);
            if !buf.is_empty() {
                self.queue.send(buf);
            }
        });
    }

    /// Waits for delivery of what is queued, at most the configured flush timeout.
    pub fn flush(&self) -> bool {
        self.queue.flush(self.flush_timeout)
    }

    /// The handler's counters.
    pub fn stats(&self) -> Stats {
        self.queue.stats()
    }
}

/// Owns a handler's worker thread. Dropping it delivers what is queued, waiting at most the
/// flush timeout, and stops the handler: later records are dropped (and counted).
#[derive(Debug)]
#[must_use = "dropping the handle stops the handler; keep it until the program ends"]
pub struct Handle {
    queue: Queue,
    thread: Option<std::thread::JoinHandle<()>>,
    flush_timeout: Duration,
}

impl Handle {
    /// The handler's counters.
    pub fn stats(&self) -> Stats {
        self.queue.stats()
    }

    /// Waits until everything queued before the call was delivered, at most `timeout`.
    /// Returns whether it was (false when the destination stayed down).
    pub fn flush(&self, timeout: Duration) -> bool {
        self.queue.flush(timeout)
    }

    /// The description of the destination's last failure (counted in [`Stats::errors`]).
    pub fn last_error(&self) -> Option<String> {
        self.queue.last_error()
    }

    /// Delivers what is queued for at most `timeout`, stops the worker, and returns the final
    /// counters (records not delivered by then are in [`Stats::dropped_shutdown`]; when the
    /// worker is stuck in a write past the deadline it is left to finish alone).
    pub fn shutdown(mut self, timeout: Duration) -> Stats {
        self.stop(timeout);
        self.queue.stats()
    }

    fn stop(&mut self, timeout: Duration) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        if self.queue.shutdown(timeout) {
            // The worker has returned, so this does not wait.
            let _ = thread.join();
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.stop(self.flush_timeout);
    }
}
