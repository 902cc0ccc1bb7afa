//! Stream framing: cutting a TCP read buffer of SocketHandler frames and JSON lines.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pystash::intake::framing::StreamFramer;

const FRAMES: usize = 1000;

fn stream(frame: &[u8]) -> Vec<u8> {
    frame.repeat(FRAMES)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("framing");
    group.throughput(Throughput::Elements(FRAMES as u64));
    for (name, input) in [
        ("pickle", stream(include_bytes!("data/typical.frame"))),
        ("json_lines", stream(include_bytes!("data/logstash.json"))),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || BytesMut::from(&input[..]),
                |buf| {
                    let mut framer = StreamFramer::new(1 << 20);
                    let mut n = 0;
                    while let Ok(Some(frame)) = framer.decode(buf) {
                        n += frame.payload.len();
                    }
                    n
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
