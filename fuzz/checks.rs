//! What each fuzz target checks, one function per target, so that the fuzz binaries
//! (`fuzz/fuzz_targets/*.rs`, with this file as their library) and the corpus replay in
//! `tests/fuzz_corpus.rs` (which mounts this file as a module) run the same code.
//!
//! Every check takes arbitrary bytes and panics only on a pystash bug. Targets that need
//! parameters take them from the first bytes of the input (documented per function), so the
//! seeds in `fuzz/seeds/<target>/` start with those bytes.

use std::collections::HashMap;
use std::mem::{discriminant, Discriminant};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use pystash::config::RedisTarget;
use pystash::decode::json::JsonDecoder;
use pystash::decode::pickle::{self as pickle_decode, Limits};
use pystash::event::{EventConfig, EventFormat, LogstashVersion};
use pystash::intake::framing::{decode_datagram, Frame, FrameError, FrameKind, StreamFramer};
use pystash::intake::Decoder;
use pystash::redis::pipeline::{Pipeline, PipelineConfig, PushCommand};
use pystash::redis::session::{Session, MAX_BACKOFF};
use pystash::repr::{repr_string, ELLIPSIS, MAX_REPR_BYTES};
use pystash::stats::Stats;
use serde::de::IgnoredAny;

/// Bytes the framing target takes as parameters: the limit (2, big-endian) and the chunking.
pub const FRAMING_HEADER: usize = 3;
/// Bytes the RESP target takes as parameters: session flags and the chunk size.
pub const RESP_HEADER: usize = 2;

/// One frame or one rejection, as the framer reported it. Errors compare by variant only: an
/// oversized line's `claimed` counts the bytes seen so far, which depends on the reads.
type Outcome = Result<(FrameKind, Vec<u8>), Discriminant<FrameError>>;

/// Stream framing and datagram framing.
///
/// Input: `[limit_hi, limit_lo, step, stream...]`. The stream is framed once in one read and
/// once in reads of 1 to `step` bytes (`step` 0: one read). Checks: no frame is longer than the
/// limit; the framer never grows the buffer it is given, never reports more outcomes than bytes
/// read, never hands out more payload than it consumed, and leaves nothing behind after
/// `finish`; both runs report the same frames and the same errors (a stream means the same
/// whatever its reads). A datagram's payload range lies inside it and within the limit.
pub fn framing(data: &[u8]) {
    let Some((&[hi, lo, step], stream)) = data.split_first_chunk::<FRAMING_HEADER>() else {
        return;
    };
    let max = usize::from(u16::from_be_bytes([hi, lo]));
    let whole = run_framer(stream, max, &[stream.len()]);
    let split = run_framer(stream, max, &chunk_lengths(stream.len(), step));
    assert_eq!(split, whole, "frames depend on how the stream was read");

    if let Ok((kind, range)) = decode_datagram(stream, max) {
        assert!(
            range.end <= stream.len(),
            "range {range:?} outside the datagram"
        );
        assert!(range.len() <= max, "datagram payload over the limit {max}");
        if kind == FrameKind::Pickle {
            assert_eq!(range, 4..stream.len(), "pickle datagram range");
        }
    }
}

/// Read sizes of 1 to `step` bytes covering `len` bytes, from a small deterministic generator.
fn chunk_lengths(len: usize, step: u8) -> Vec<usize> {
    if step == 0 {
        return vec![len];
    }
    let mut state = u32::from(step) | 0x9e37_0000;
    let mut chunks = Vec::new();
    let mut left = len;
    while left > 0 {
        // xorshift32
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let n = (1 + state as usize % usize::from(step)).min(left);
        chunks.push(n);
        left -= n;
    }
    chunks
}

/// Frames `stream` delivered in reads of `chunks` bytes, as `Intake` does: decode after every
/// read until more bytes are needed, then `finish` once at the end.
fn run_framer(stream: &[u8], max: usize, chunks: &[usize]) -> Vec<Outcome> {
    let mut framer = StreamFramer::new(max);
    let mut buf = BytesMut::new();
    let mut outcomes = Vec::new();
    let mut fed = 0;
    // Payload bytes handed out, plus the 4-byte prefix of each length-prefixed frame.
    let mut taken = 0;
    let mut note =
        |result: Result<Option<Frame>, FrameError>, outcomes: &mut Vec<Outcome>| match result {
            Ok(Some(frame)) => {
                assert!(
                    frame.payload.len() <= max,
                    "{:?} frame of {} bytes over the limit {max}",
                    frame.kind,
                    frame.payload.len()
                );
                taken += frame.payload.len();
                if frame.kind == FrameKind::Pickle {
                    taken += 4;
                }
                outcomes.push(Ok((frame.kind, frame.payload.to_vec())));
            }
            Ok(None) => {}
            Err(err) => outcomes.push(Err(discriminant(&err))),
        };
    for &n in chunks {
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        loop {
            let before = buf.len();
            let result = framer.decode(&mut buf);
            assert!(buf.len() <= before, "decode grew the buffer");
            let more = matches!(result, Ok(None));
            note(result, &mut outcomes);
            assert!(outcomes.len() <= fed, "more outcomes than bytes read");
            if more {
                break;
            }
        }
    }
    note(framer.finish(&mut buf), &mut outcomes);
    assert!(buf.is_empty(), "finish left {} bytes behind", buf.len());
    assert!(
        taken <= stream.len(),
        "handed out {taken} of {} bytes",
        stream.len()
    );
    outcomes
}

/// The pickle decoder with default limits, then what is done with what it returns.
///
/// Input: a pickle (the bytes after `SocketHandler`'s length prefix). When it decodes: its repr
/// stays within [`MAX_REPR_BYTES`], and the event written for it (v1 and v0) is one JSON object
/// with `@timestamp`, or nothing at all when the value is not a record. The decoder's fast
/// path for flat records and its general machine agree (the same value or the same error).
pub fn pickle(data: &[u8]) {
    let decoded = pickle_decode::decode(data, &Limits::default());
    let general = pickle_decode::decode_general(data, &Limits::default());
    // Debug, because a NaN float is not equal to itself.
    assert_eq!(
        format!("{decoded:?}"),
        format!("{general:?}"),
        "fast path and machine disagree"
    );
    let Ok(value) = decoded else {
        return;
    };
    let text = repr_string(&value);
    assert!(
        text.len() <= MAX_REPR_BYTES + ELLIPSIS.len(),
        "repr too long"
    );
    for config in event_configs() {
        let mut out = Vec::new();
        match EventFormat::new(config).write_record(&value, &mut out) {
            Ok(()) => assert_event(&out),
            Err(_) => assert!(out.is_empty(), "a failed write left bytes behind"),
        }
    }
}

/// A line frame (JSON or text) to an event, as `Intake` decodes it.
///
/// Input: one line's payload. The decoder's output (v1 and v0), if any, is one JSON object with
/// `@timestamp`; a rejected line writes nothing. The JSON decoder's fast path for flat objects
/// builds what simd-json builds.
pub fn json_event(data: &[u8]) {
    if let Some(fast) = JsonDecoder::new().decode_flat_with(data, |v| format!("{v:?}")) {
        let mut copy = data.to_vec();
        let general = JsonDecoder::new()
            .decode(&mut copy)
            .map(|v| format!("{v:?}"));
        assert_eq!(
            Some(&fast),
            general.as_ref().ok(),
            "fast path and simd-json disagree"
        );
    }
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for config in event_configs() {
        let mut decoder = Decoder::new(config);
        // simd-json parses in place.
        let mut payload = data.to_vec();
        let mut out = Vec::new();
        match decoder.decode(FrameKind::Line, &mut payload, now, &mut out) {
            Ok(()) => assert_event(&out),
            Err(_) => assert!(out.is_empty(), "a rejected line left bytes behind"),
        }
    }
}

/// Both event layouts, with constant parts that need escaping.
fn event_configs() -> [EventConfig; 2] {
    let config = |version| EventConfig {
        version,
        host: "fuzz\"host\u{e9}".into(),
        message_type: "py\\stash".into(),
        tags: vec!["a".into(), "t\u{1}ag".into()],
    };
    [config(LogstashVersion::V1), config(LogstashVersion::V0)]
}

/// `event` is UTF-8 holding exactly one JSON object with an `@timestamp` field. Values are
/// checked for syntax only: a big integer is valid JSON though it fits no `f64`.
fn assert_event(event: &[u8]) {
    let text = std::str::from_utf8(event)
        .unwrap_or_else(|e| panic!("event is not UTF-8 ({e}): {event:?}"));
    let fields: HashMap<String, IgnoredAny> = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("event is not one JSON object ({e}): {text}"));
    assert!(fields.contains_key("@timestamp"), "no @timestamp: {text}");
}

/// A Redis session fed arbitrary replies.
///
/// Input: `[flags, chunk, replies...]`. Flags: bit 0 AUTH, bit 1 SELECT, bit 2
/// `--max-queue-length 5`, bits 4-7 records pushed minus one. The session connects, sends,
/// and is given the replies `chunk` bytes at a time (0: one at a time), 60 ms apart; after each
/// it sends what it wants, and after an error it fails, reconnects once the backoff is over, and
/// sends again. It must never panic, and every record pushed is at all times either
/// acknowledged or still held; after a failure nothing is in flight.
pub fn resp_reply(data: &[u8]) {
    let Some((&[flags, chunk], replies)) = data.split_first_chunk::<RESP_HEADER>() else {
        return;
    };
    let auth = flags & 1 != 0;
    let target = RedisTarget {
        host: "localhost".into(),
        port: 6379,
        socket: None,
        user: auth.then(|| "app".into()),
        password: auth.then(|| "pw".into()),
        db: if flags & 2 != 0 { 3 } else { 0 },
    };
    let pipeline = Pipeline::new(PipelineConfig {
        key: Bytes::from_static(b"logstash"),
        command: PushCommand::Rpush,
        capacity: 64,
        max_batch_records: 3,
        max_batch_bytes: 1 << 20,
        max_in_flight: 4,
    });
    let stats = Arc::new(Stats::default());
    let mut now = Instant::now();
    let mut session = Session::new(target, pipeline, Arc::clone(&stats), now);
    if flags & 4 != 0 {
        session.set_max_queue_length(Some(5));
    }
    let records = u64::from(flags >> 4) + 1;
    for i in 0..records {
        assert!(session.pipeline().push(format!("event {i}").as_bytes()));
    }
    connect(&mut session, now);
    let mut out = Vec::new();
    for piece in replies.chunks(usize::from(chunk).max(1)) {
        now += Duration::from_millis(60);
        match session.handle_received(piece, now) {
            Ok(()) => session.poll_transmit(now, &mut out),
            Err(err) => {
                session.handle_failure(&err, now);
                let held = session.pipeline_ref();
                assert_eq!(held.in_flight(), 0, "in flight after a failure");
                assert_eq!(held.unsent(), held.len(), "unsent after a failure");
                now += MAX_BACKOFF;
                connect(&mut session, now);
            }
        }
        out.clear();
        let pushed = stats.snapshot().pushed;
        let held = session.pipeline_ref().len() as u64;
        assert_eq!(
            pushed + held,
            records,
            "{pushed} acknowledged + {held} held != {records} pushed"
        );
    }
}

/// Connects `session` at `now` and lets it write its first commands.
fn connect(session: &mut Session, now: Instant) {
    assert!(
        session.poll_connect(now),
        "no connection attempt at {now:?}"
    );
    session.handle_connected(now);
    session.poll_transmit(now, &mut Vec::new());
}
