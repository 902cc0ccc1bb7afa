//! RESP encoding of one multi-value RPUSH, and the pipeline that batches events into it.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pystash::redis::pipeline::{Pipeline, PipelineConfig, PushCommand, Reply};
use pystash::redis::resp::write_push;

const BATCH: usize = 1000;

fn bench(c: &mut Criterion) {
    let event = br#"{"@timestamp":"2024-05-01T12:00:03.250000Z","@version":1,"message":"order A-10023 placed by user ada@example.com in 12.5 ms","host":"web-1","path":"/srv/shop/checkout/api.py","tags":["prod","checkout"],"type":"pystash","levelname":"INFO","logger":"shop.checkout.api","request_id":"9f1c2b7e-4d3a","status":201}"#;
    let events: Vec<&[u8]> = vec![&event[..]; BATCH];
    let mut group = c.benchmark_group("resp");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut out = Vec::with_capacity(1 << 20);
    group.bench_function("write_push_1000", |b| {
        b.iter(|| {
            out.clear();
            write_push(&mut out, b"RPUSH", b"logstash", events.iter().copied());
            out.len()
        })
    });
    let mut pipeline = Pipeline::new(PipelineConfig {
        key: Bytes::from_static(b"logstash"),
        command: PushCommand::Rpush,
        capacity: 100_000,
        max_batch_records: BATCH,
        max_batch_bytes: 1 << 20,
        max_in_flight: 8,
    });
    group.bench_function("pipeline_push_write_ack_1000", |b| {
        b.iter(|| {
            for e in &events {
                pipeline.push(e);
            }
            out.clear();
            pipeline.poll_write(&mut out);
            pipeline.handle_reply(Reply::Integer(BATCH as i64));
            out.len()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
