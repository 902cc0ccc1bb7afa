//! Frame payload to Logstash event: pickle decode + v1 event, JSON decode + event, per record.
//!
//! Besides criterion's timings this bench has a counting mode for instruction counts under
//! callgrind, which are stable on a busy machine where times are not:
//!
//! ```text
//! EVENTS_COUNT=1000  valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/deps/events-* pickle_typical_V1
//! EVENTS_COUNT=11000 valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/deps/events-* pickle_typical_V1
//! ```
//!
//! runs one case that many times and exits; the difference of the two totals over 10,000 is
//! the cost of one record without the setup. `scripts/count-events.sh` does exactly that.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{BatchSize, Criterion, Throughput};
use pystash::decode::json::JsonDecoder;
use pystash::decode::pickle;
use pystash::event::{EventConfig, EventFormat, LogstashVersion};
use pystash::intake::framing::FrameKind;
use pystash::intake::Decoder;

fn config(version: LogstashVersion) -> EventConfig {
    EventConfig {
        version,
        host: "web-1.example.com".into(),
        message_type: "pystash".into(),
        tags: vec!["prod".into()],
    }
}

const TYPICAL: &[u8] = include_bytes!("data/typical.frame");
const PLAIN: &[u8] = include_bytes!("data/plain.frame");
const EXCEPTION: &[u8] = include_bytes!("data/exception.frame");
const RECORD_JSON: &[u8] = include_bytes!("data/record.json");
const LOGSTASH_JSON: &[u8] = include_bytes!("data/logstash.json");

/// The frame payloads fed to [`Decoder::decode`], by name.
fn cases() -> [(&'static str, FrameKind, &'static [u8]); 5] {
    [
        ("pickle_typical", FrameKind::Pickle, &TYPICAL[4..]),
        ("pickle_plain", FrameKind::Pickle, &PLAIN[4..]),
        ("pickle_exception", FrameKind::Pickle, &EXCEPTION[4..]),
        ("json_record", FrameKind::Line, RECORD_JSON.trim_ascii_end()),
        (
            "json_logstash_event",
            FrameKind::Line,
            LOGSTASH_JSON.trim_ascii_end(),
        ),
    ]
}

/// One named case as a closure doing one record's work; what [`count`] runs.
fn case(name: &str) -> Option<Box<dyn FnMut()>> {
    let typical = &TYPICAL[4..];
    let limits = pickle::Limits::default();
    match name {
        "pickle_decode_only" => {
            let mut decoder = pickle::Decoder::new();
            return Some(Box::new(move || {
                decoder
                    .decode_with(black_box(typical), &limits, |record| {
                        black_box(record);
                    })
                    .expect("sample decodes");
            }));
        }
        "json_decode_only" => {
            let line = RECORD_JSON.trim_ascii_end();
            let mut decoder = JsonDecoder::new();
            let mut buf = line.to_vec();
            return Some(Box::new(move || {
                buf.clear();
                buf.extend_from_slice(line);
                decoder
                    .decode_with(black_box(&mut buf), |record| {
                        black_box(record);
                    })
                    .expect("sample decodes");
            }));
        }
        "event_write_only" => {
            let format = EventFormat::new(config(LogstashVersion::V1));
            let record = pickle::decode(typical, &limits).expect("sample decodes");
            let mut out = Vec::with_capacity(4096);
            return Some(Box::new(move || {
                out.clear();
                format
                    .write_record(black_box(&record), &mut out)
                    .expect("sample writes");
                black_box(&out);
            }));
        }
        _ => {}
    }
    for version in [LogstashVersion::V1, LogstashVersion::V0] {
        for (case, kind, payload) in cases() {
            if name == format!("{case}_{version:?}") {
                let mut decoder = Decoder::new(config(version));
                let mut out = Vec::with_capacity(4096);
                let mut buf = payload.to_vec();
                let now = SystemTime::now();
                return Some(Box::new(move || {
                    buf.clear();
                    buf.extend_from_slice(payload);
                    out.clear();
                    decoder
                        .decode(kind, black_box(&mut buf), now, &mut out)
                        .expect("sample decodes");
                    black_box(&out);
                }));
            }
        }
    }
    None
}

/// Counting mode: runs the case named by the first argument `iterations` times.
fn count(iterations: usize) {
    let name = std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with('-'))
        .expect("EVENTS_COUNT needs a case name argument");
    let mut run = case(&name).unwrap_or_else(|| panic!("no case {name}"));
    for _ in 0..iterations {
        run();
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("event");
    group.throughput(Throughput::Elements(1));
    // Halves of the pipeline: decoding alone (decoder kept across records, as the intake keeps
    // it), and writing an already decoded record.
    for name in ["pickle_decode_only", "json_decode_only", "event_write_only"] {
        let mut run = case(name).expect("case exists");
        group.bench_function(name, |b| b.iter(&mut run));
    }
    for version in [LogstashVersion::V1, LogstashVersion::V0] {
        let mut decoder = Decoder::new(config(version));
        let mut out = Vec::with_capacity(4096);
        for (name, kind, payload) in cases() {
            let now = SystemTime::now();
            group.bench_function(format!("{name}_{version:?}"), |b| {
                b.iter_batched_ref(
                    || payload.to_vec(),
                    |payload| {
                        out.clear();
                        decoder
                            .decode(kind, payload, now, &mut out)
                            .expect("sample decodes");
                        out.len()
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

fn main() {
    if let Ok(n) = std::env::var("EVENTS_COUNT") {
        count(n.parse().expect("EVENTS_COUNT is a number"));
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
}
