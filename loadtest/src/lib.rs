//! pystash-loadtest: an open-loop load generator for log proxies that end in a Redis list.
//!
//! ```text
//! senders (send) --UDP/TCP/unix, pickle or JSON (record, pickle, json)--> proxy --> Redis list
//!      Redis list --MULTI LRANGE LTRIM EXEC or BLPOP (consume)--> tracker (track) + histograms (hist)
//!      --> summary (text, JSON, .hgrm) and plot (SVG)
//! ```
//!
//! Every record carries its run, stream, sequence number and send times as extra fields; the
//! consumer finds them in the events the proxy wrote, so loss, duplicates, reordering and
//! end-to-end latency are measured without knowing anything else about the proxy.

pub mod config;
pub mod consume;
pub mod dist;
pub mod hist;
pub mod json;
pub mod pickle;
pub mod plot;
pub mod record;
pub mod run;
pub mod send;
pub mod summary;
pub mod track;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How records are encoded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `SocketHandler.makePickle` frames: 4-byte big-endian length, protocol 1 pickle.
    Pickle,
    /// One JSON object per line (per datagram on UDP).
    Json,
}

/// The run's one clock: monotonic, mapped once to CLOCK_REALTIME, so every time stamped on a
/// record and read at the consumer is on the same scale, in ns since the Unix epoch.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    epoch_ns: u64,
}

impl Clock {
    /// Reads both clocks now.
    pub fn start() -> Clock {
        let epoch_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Clock {
            start: Instant::now(),
            epoch_ns,
        }
    }

    /// ns since [`Clock::start`].
    pub fn elapsed_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Wall-clock time of [`Clock::start`], ns since the Unix epoch.
    pub fn epoch_ns(&self) -> u64 {
        self.epoch_ns
    }

    /// Now, ns since the Unix epoch.
    pub fn now_ns(&self) -> u64 {
        self.epoch_ns + self.elapsed_ns()
    }
}
