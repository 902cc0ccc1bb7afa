//! pystash: a log proxy from CPython `logging` to Logstash, through a Redis list.
//!
//! The data path, one worker thread per core, each with its own sockets and Redis connection:
//!
//! 1. [`intake`] reads datagrams and streams (UDP, TCP, unix) and cuts them into frames:
//!    4-byte length + pickle (CPython `SocketHandler`/`DatagramHandler`) or JSON/text lines.
//! 2. [`decode`] turns a frame into a [`Value`]: [`decode::pickle`] runs no code,
//!    [`decode::json`] parses with simd-json.
//! 3. [`event`] writes the Logstash v1 or v0 JSON event for that record.
//! 4. [`redis`] batches events into multi-value RPUSH commands ([`redis::resp`]), pipelines them
//!    ([`redis::pipeline`]) and keeps every record until Redis acknowledged it ([`redis::sink`]).
//! 5. [`runtime`] runs the loops; [`stats`] counts every record received, rejected, dropped and
//!    pushed.
//!
//! [`handler`] is the other half, for Rust programs: a `log` backend and a `tracing` layer that
//! format records with the same [`event`] writer and send them to Logstash (TCP, UDP, unix), a
//! Redis list (the same [`redis::resp`] encoder and [`redis::pipeline`]) or a pystash proxy.

pub mod config;
pub mod decode;
pub mod event;
pub mod handler;
pub mod host;
pub mod intake;
pub mod metrics;
pub mod redis;
pub mod repr;
pub mod runtime;
pub mod spool;
pub mod stats;
pub mod value;

pub use value::Value;
