//! Sockets in, frames out: [`framing`] cuts streams and datagrams into frames (pure); the
//! engines in [`runtime`](crate::runtime) own the sockets; [`Decoder`] turns one frame into one
//! Logstash event; [`Intake`] is what every engine does with the bytes it read.

pub mod framing;

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, BytesMut};
use framing::{FrameAt, FrameError, FrameKind, StreamFramer};
use tracing::{debug, warn};

use crate::decode::json::JsonDecoder;
use crate::decode::pickle;
use crate::event::{EventConfig, EventFormat};
use crate::redis::pipeline::Pipeline;
use crate::stats::{Reject, Stats};
use crate::value::Value;

impl From<FrameError> for Reject {
    fn from(err: FrameError) -> Reject {
        match err {
            FrameError::Oversized { .. } => Reject::Oversized,
            FrameError::Truncated { .. } => Reject::Truncated,
            FrameError::BadLength { .. } => Reject::BadLength,
        }
    }
}

/// Frame payloads to events. One per worker: it reuses its parse buffers.
pub struct Decoder {
    json: JsonDecoder,
    pickle: pickle::Decoder,
    limits: pickle::Limits,
    format: EventFormat,
    /// A copy of a JSON line, kept because simd-json parses in place and a line that fails to
    /// parse is still delivered as text.
    line: Vec<u8>,
}

impl Decoder {
    /// A decoder writing events in the given layout.
    pub fn new(event: EventConfig) -> Self {
        Decoder {
            json: JsonDecoder::new(),
            pickle: pickle::Decoder::new(),
            limits: pickle::Limits::default(),
            format: EventFormat::new(event),
            line: Vec::new(),
        }
    }

    /// Appends the event for one frame to `out`; `now` stamps events that carry no time.
    ///
    /// # Errors
    /// The [`Reject`] reason; `out` is then unchanged.
    pub fn decode(
        &mut self,
        kind: FrameKind,
        payload: &mut [u8],
        now: SystemTime,
        out: &mut Vec<u8>,
    ) -> Result<(), Reject> {
        match kind {
            FrameKind::Pickle => {
                let format = &self.format;
                self.pickle
                    .decode_with(payload, &self.limits, |record| {
                        if !matches!(record, Value::Dict(_)) {
                            return Err(Reject::NotARecord);
                        }
                        format.write_record(record, out).map_err(|err| {
                            debug!(%err, "rejected record");
                            Reject::NotARecord
                        })
                    })
                    .map_err(|err| {
                        debug!(%err, "rejected pickle");
                        Reject::BadPickle
                    })?
            }
            FrameKind::Line if cfg!(pystash_io_floor) => floor_event(payload, out),
            FrameKind::Line => self.decode_line(payload, now, out),
        }
    }

    fn decode_line(
        &mut self,
        payload: &mut [u8],
        now: SystemTime,
        out: &mut Vec<u8>,
    ) -> Result<(), Reject> {
        let start = payload
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(payload.len());
        let payload = &mut payload[start..];
        if payload.first() == Some(&b'{') {
            let format = &self.format;
            let mut write = |value: &Value<'_>| format.write_object(value, now, out);
            let rejected = |err| {
                debug!(%err, "rejected json");
                Reject::NotARecord
            };
            if let Some(written) = self.json.decode_flat_with(payload, &mut write) {
                return written.map_err(rejected);
            }
            // simd-json unescapes in place: keep the line for the text fallback.
            self.line.clear();
            self.line.extend_from_slice(payload);
            if let Ok(written) = self.json.decode_general_with(payload, &mut write) {
                return written.map_err(rejected);
            }
            // Not JSON after all: delivered as text, as Logstash's json codec does.
            let line = std::str::from_utf8(&self.line).map_err(|_| Reject::BadUtf8)?;
            self.format.write_unparsed(line, now, out);
            return Ok(());
        }
        let line = std::str::from_utf8(payload).map_err(|_| Reject::BadUtf8)?;
        self.format.write_unparsed(line, now, out);
        Ok(())
    }
}

/// The event a line becomes in a build with `--cfg pystash_io_floor`: what the load
/// generator's JSON record of `--size 370..370` becomes (376 bytes), with a fixed text in place
/// of everything but the generator's `lt_*` stamps, which are copied from the line. Decoding
/// and formatting cost nothing then, so the proxy's CPU per record is what the rest of its path
/// costs: the sockets, framing, the pipeline and the pushes (`scripts/io-floor.sh`).
fn floor_event(payload: &[u8], out: &mut Vec<u8>) -> Result<(), Reject> {
    const HEAD: &[u8] = br#"{"@timestamp":"2026-01-01T00:00:00.000000Z","@version":1,"message":""#;
    const TEXT: [u8; 196] = [b'x'; 196];
    // Built once, and forward: a searcher built per call, or the reverse one (no vector
    // prefilter), cost more than the rest of the function.
    static STAMPS: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(br#""lt_run""#));
    let at = STAMPS.find(payload).ok_or(Reject::NotARecord)?;
    let end = memchr::memrchr(b'}', payload)
        .filter(|&end| end > at)
        .ok_or(Reject::NotARecord)?;
    out.extend_from_slice(HEAD);
    out.extend_from_slice(&TEXT);
    out.extend_from_slice(b"\",");
    out.extend_from_slice(&payload[at..=end]);
    Ok(())
}

/// A rejection reason is logged at most this often per worker.
const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Logs rejections at most once per interval and reason, with how many were not logged.
#[derive(Debug, Default)]
struct RejectLog {
    last: [Option<Instant>; Reject::ALL.len()],
    unlogged: [u64; Reject::ALL.len()],
}

impl RejectLog {
    fn note(
        &mut self,
        reason: Reject,
        peer: &dyn fmt::Display,
        detail: &dyn fmt::Display,
        now: Instant,
    ) {
        let i = reason as usize;
        debug!(reason = reason.name(), %peer, %detail, "rejected frame");
        if self.last[i].is_some_and(|t| now.duration_since(t) < REJECT_LOG_INTERVAL) {
            self.unlogged[i] += 1;
            return;
        }
        warn!(
            reason = reason.name(),
            %peer,
            also_rejected_since_last_report = self.unlogged[i],
            "rejected a frame: {detail}"
        );
        self.last[i] = Some(now);
        self.unlogged[i] = 0;
    }
}

/// One stream connection's intake state: bytes read but not yet framed.
#[derive(Debug)]
pub struct StreamConn {
    /// Bytes read from the socket and not yet cut into frames.
    pub buf: BytesMut,
    /// Who sent them, for logs.
    pub peer: String,
    framer: StreamFramer,
    /// When bytes last arrived.
    last_read: Instant,
    /// When a frame was last completed (or the connection opened).
    last_frame: Instant,
}

impl StreamConn {
    /// A new connection from `peer`, opened at `now`.
    pub fn new(peer: String, max_record_bytes: usize, now: Instant) -> Self {
        StreamConn {
            buf: BytesMut::new(),
            peer,
            framer: StreamFramer::new(max_record_bytes),
            last_read: now,
            last_frame: now,
        }
    }

    /// Whether the connection should be closed at `now`: a frame begun but not finished for
    /// `frame_timeout` (a slow or stuck sender), or nothing received for `idle_timeout`.
    ///
    /// An idle timeout costs CPython's `SocketHandler` the record it sends on the closed
    /// connection (its next `sendall` still succeeds), which is why it is off by default.
    pub fn expired(
        &self,
        now: Instant,
        frame_timeout: Duration,
        idle_timeout: Option<Duration>,
    ) -> bool {
        let stalled = !self.buf.is_empty() && now.duration_since(self.last_frame) >= frame_timeout;
        let idle = idle_timeout.is_some_and(|t| now.duration_since(self.last_read) >= t);
        stalled || idle
    }
}

/// A worker's intake, the same for every engine: frames in, events into the pipeline, every
/// outcome counted.
pub struct Intake {
    decoder: Decoder,
    event: Vec<u8>,
    /// When the bytes being framed arrived, read from the clock once per call, at the first
    /// line that needs it (pickled records carry their own time).
    arrival: Option<SystemTime>,
    max_record_bytes: usize,
    stats: Arc<Stats>,
    rejects: RejectLog,
}

impl Intake {
    /// Intake writing events in the given layout, counting into `stats`.
    pub fn new(event: EventConfig, max_record_bytes: usize, stats: Arc<Stats>) -> Self {
        Intake {
            decoder: Decoder::new(event),
            event: Vec::with_capacity(4096),
            arrival: None,
            max_record_bytes,
            stats,
            rejects: RejectLog::default(),
        }
    }

    /// The counters this intake writes.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Handles one datagram. When the pipeline is full it is dropped and counted: datagrams
    /// cannot wait.
    pub fn handle_datagram(
        &mut self,
        datagram: &mut [u8],
        peer: &dyn fmt::Display,
        pipeline: &mut Pipeline,
        now: Instant,
    ) {
        if pipeline.is_full() {
            Stats::add(&self.stats.received, 1);
            Stats::add(&self.stats.dropped_buffer_full, 1);
            return;
        }
        self.arrival = None;
        match framing::decode_datagram(datagram, self.max_record_bytes) {
            Ok((kind, range)) => self.take_frame(kind, &mut datagram[range], peer, pipeline, now),
            Err(err) => self.reject(err, peer, now),
        }
    }

    /// Counts a datagram the engine could not read whole (`MSG_TRUNC`: larger than the room it
    /// had for one, `size` bytes) as an oversized frame.
    pub fn handle_truncated_datagram(
        &mut self,
        size: usize,
        peer: &dyn fmt::Display,
        now: Instant,
    ) {
        let err = FrameError::Oversized {
            claimed: size as u64,
            limit: self.max_record_bytes,
        };
        self.reject(err, peer, now);
    }

    /// Frames and decodes what `conn` has buffered, while the pipeline has room. Returns
    /// `false` when it stopped because the pipeline is full (the rest stays buffered).
    pub fn handle_stream(
        &mut self,
        conn: &mut StreamConn,
        pipeline: &mut Pipeline,
        now: Instant,
    ) -> bool {
        conn.last_read = now;
        self.arrival = None;
        loop {
            if pipeline.is_full() {
                return false;
            }
            match conn.framer.decode_at(&mut conn.buf) {
                Ok(Some(at)) => {
                    conn.last_frame = now;
                    self.take_frame_at(conn, at, pipeline, now);
                }
                Ok(None) => return true,
                Err(err) => self.reject(err, &conn.peer as &dyn fmt::Display, now),
            }
        }
    }

    /// The peer closed `conn`: everything buffered is taken (room or not), and what is left
    /// becomes a last frame or a truncation.
    pub fn handle_stream_end(
        &mut self,
        conn: &mut StreamConn,
        pipeline: &mut Pipeline,
        now: Instant,
    ) {
        self.take_complete(conn, pipeline, now);
        match conn.framer.finish(&mut conn.buf) {
            Ok(Some(mut frame)) => self.take_frame(
                frame.kind,
                &mut frame.payload,
                &conn.peer as &dyn fmt::Display,
                pipeline,
                now,
            ),
            Ok(None) => {}
            Err(err) => self.reject(err, &conn.peer as &dyn fmt::Display, now),
        }
    }

    /// The proxy is closing `conn` (it stalled or idled): complete frames are taken, and a
    /// frame or line left unfinished is counted as truncated, never delivered.
    pub fn handle_stream_abort(
        &mut self,
        conn: &mut StreamConn,
        pipeline: &mut Pipeline,
        now: Instant,
    ) {
        self.take_complete(conn, pipeline, now);
        if !conn.buf.is_empty() {
            conn.buf.clear();
            let err = FrameError::Truncated { missing: 0 };
            self.reject(err, &conn.peer as &dyn fmt::Display, now);
        }
    }

    /// Takes every complete frame `conn` holds, room in the pipeline or not.
    fn take_complete(&mut self, conn: &mut StreamConn, pipeline: &mut Pipeline, now: Instant) {
        self.arrival = None;
        loop {
            match conn.framer.decode_at(&mut conn.buf) {
                Ok(Some(at)) => self.take_frame_at(conn, at, pipeline, now),
                Ok(None) => break,
                Err(err) => self.reject(err, &conn.peer as &dyn fmt::Display, now),
            }
        }
    }

    /// Takes the frame at the front of `conn`'s buffer, decoding it where it lies (no buffer
    /// of its own), then moves past it.
    fn take_frame_at(
        &mut self,
        conn: &mut StreamConn,
        at: FrameAt,
        pipeline: &mut Pipeline,
        now: Instant,
    ) {
        let payload = &mut conn.buf[at.payload];
        self.take_frame(
            at.kind,
            payload,
            &conn.peer as &dyn fmt::Display,
            pipeline,
            now,
        );
        conn.buf.advance(at.len);
    }

    fn take_frame(
        &mut self,
        kind: FrameKind,
        payload: &mut [u8],
        peer: &dyn fmt::Display,
        pipeline: &mut Pipeline,
        now: Instant,
    ) {
        Stats::add(&self.stats.received, 1);
        Stats::add(&self.stats.bytes_received, payload.len() as u64);
        self.event.clear();
        // Only lines can lack a time of their own; a pickled record carries `created`, so the
        // clock is not read for it.
        let arrival = match kind {
            FrameKind::Line => *self.arrival.get_or_insert_with(SystemTime::now),
            FrameKind::Pickle => SystemTime::UNIX_EPOCH,
        };
        match self.decoder.decode(kind, payload, arrival, &mut self.event) {
            Ok(()) => {
                if !pipeline.push(&self.event) {
                    Stats::add(&self.stats.dropped_buffer_full, 1);
                }
            }
            Err(reason) => {
                self.stats.reject(reason);
                self.rejects.note(reason, peer, &reason.name(), now);
            }
        }
    }

    fn reject(&mut self, err: FrameError, peer: &dyn fmt::Display, now: Instant) {
        Stats::add(&self.stats.received, 1);
        let reason = Reject::from(err);
        self.stats.reject(reason);
        self.rejects.note(reason, peer, &err, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_event_keeps_the_stamps_in_an_event_of_the_usual_size() {
        let line = br#"{"name":"app.cache","msg":"slow query","lt_run":4064920993,"lt_stream":0,"lt_seq":7,"lt_due_ns":1796672667173070091,"lt_sent_ns":1796672667173070712}"#;
        let mut out = Vec::new();
        floor_event(line, &mut out).unwrap();
        let event: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(event["lt_seq"], 7);
        assert_eq!(event["lt_sent_ns"], 1796672667173070712u64);
        // The event pystash writes for the generator's records of this size.
        assert_eq!(out.len(), 376);
        assert_eq!(
            floor_event(b"{\"msg\":1}", &mut out),
            Err(Reject::NotARecord)
        );
    }
}
