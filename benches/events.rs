//! Frame payload to Logstash event: pickle decode + v1 event, JSON decode + event, per record.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::SystemTime;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pystash::event::{EventConfig, LogstashVersion};
use pystash::intake::framing::FrameKind;
use pystash::intake::Decoder;

fn decoder(version: LogstashVersion) -> Decoder {
    Decoder::new(EventConfig {
        version,
        host: "web-1.example.com".into(),
        message_type: "pystash".into(),
        tags: vec!["prod".into()],
    })
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("event");
    group.throughput(Throughput::Elements(1));
    let cases: [(&str, FrameKind, &[u8]); 4] = [
        (
            "pickle_typical",
            FrameKind::Pickle,
            &include_bytes!("data/typical.frame")[4..],
        ),
        (
            "pickle_exception",
            FrameKind::Pickle,
            &include_bytes!("data/exception.frame")[4..],
        ),
        (
            "json_record",
            FrameKind::Line,
            include_bytes!("data/record.json").trim_ascii_end(),
        ),
        (
            "json_logstash_event",
            FrameKind::Line,
            include_bytes!("data/logstash.json").trim_ascii_end(),
        ),
    ];
    let typical = &include_bytes!("data/typical.frame")[4..];
    let limits = pystash::decode::pickle::Limits::default();
    group.bench_function("pickle_decode_only", |b| {
        b.iter(|| match pystash::decode::pickle::decode(typical, &limits) {
            Ok(pystash::Value::Dict(items)) => items.len(),
            _ => panic!("sample decodes to a dict"),
        })
    });
    for version in [LogstashVersion::V1, LogstashVersion::V0] {
        let mut decoder = decoder(version);
        let mut out = Vec::with_capacity(4096);
        for (name, kind, payload) in cases {
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

criterion_group!(benches, bench);
criterion_main!(benches);
