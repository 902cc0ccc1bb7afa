//! Sockets in, frames out: [`framing`] cuts streams and datagrams into frames (pure); the
//! engines in [`runtime`](crate::runtime) own the sockets; [`Decoder`] turns one frame into one
//! Logstash event.

pub mod framing;

use std::time::SystemTime;

use framing::{FrameError, FrameKind};
use tracing::debug;

use crate::decode::json::JsonDecoder;
use crate::decode::pickle;
use crate::event::{EventConfig, EventFormat};
use crate::stats::Reject;
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
                let record = pickle::decode(payload, &self.limits).map_err(|err| {
                    debug!(%err, "rejected pickle");
                    Reject::BadPickle
                })?;
                if !matches!(record, Value::Dict(_)) {
                    return Err(Reject::NotARecord);
                }
                self.format.write_record(&record, out).map_err(|err| {
                    debug!(%err, "rejected record");
                    Reject::NotARecord
                })
            }
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
            self.line.clear();
            self.line.extend_from_slice(payload);
            if let Ok(value) = self.json.decode(payload) {
                let written = if EventFormat::is_record(&value) {
                    self.format.write_record(&value, out)
                } else {
                    self.format.write_event(&value, now, out)
                };
                return written.map_err(|err| {
                    debug!(%err, "rejected json");
                    Reject::NotARecord
                });
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
