//! The handler's cost on the application's thread: capturing a record and queueing it for the
//! worker (the part a logging call waits for). Destination: a local TCP listener that discards.
//!
//! Each sample times only the logging calls, then waits (untimed) for the worker to deliver them,
//! so the queue never fills and every timed call takes the accepted path; `dropped_full`
//! measures the other path (queue full, record dropped and counted).
//!
//!     cargo bench --bench handler --features tracing

use std::hint::black_box;
use std::io::Read;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use log::LevelFilter;
use pystash::handler::log::Logger;
use pystash::handler::{Builder, Destination, Handle};

/// Accepts connections and discards what they send.
fn discard_listener() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

fn builder(addr: String) -> Builder {
    Builder::new(Destination::Tcp(addr))
        .host("bench-host")
        .message_type("bench")
        .tags(["bench"])
        .queue_capacity(1 << 22)
        .level(LevelFilter::Info)
}

/// Times `iters` calls of `log_once`, then lets the worker catch up outside the timing.
fn timed(handle: &Handle, iters: u64, mut log_once: impl FnMut(u64)) -> Duration {
    let start = Instant::now();
    for i in 0..iters {
        log_once(i);
    }
    let elapsed = start.elapsed();
    assert!(handle.flush(Duration::from_secs(60)), "worker fell behind");
    elapsed
}

fn check(name: &str, handle: &Handle) {
    let stats = handle.stats();
    assert_eq!(stats.dropped(), 0, "{name}: {stats:?}");
    eprintln!("{name}: {stats:?}");
}

fn log_records(c: &mut Criterion) {
    log::set_max_level(LevelFilter::Trace);
    let addr = discard_listener();
    let mut group = c.benchmark_group("app_thread");
    group.throughput(Throughput::Elements(1));

    let (logger, handle): (Logger, Handle) = builder(addr.clone()).build_log().unwrap();
    group.bench_function("log_static_message", |b| {
        b.iter_custom(|iters| {
            timed(&handle, iters, |_| {
                log::info!(logger: logger, "cache warmed up");
            })
        })
    });
    group.bench_function("log_typical", |b| {
        b.iter_custom(|iters| {
            timed(&handle, iters, |i| {
                log::info!(logger: logger, user = "ada", request_id = i; "user {} logged in from {}", black_box("ada"), black_box("10.0.0.1"));
            })
        })
    });
    group.bench_function("log_filtered_out", |b| {
        b.iter_custom(|iters| {
            timed(&handle, iters, |i| {
                log::debug!(logger: logger, request_id = i; "below the level");
            })
        })
    });
    check("log", &handle);
    drop(handle);

    // Queue of one record and nothing listening: every call but the first is dropped.
    let down = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let (logger, handle) = builder(down)
        .queue_capacity(1)
        .max_batch_records(1)
        .flush_timeout(Duration::ZERO)
        .build_log()
        .unwrap();
    group.bench_function("log_dropped_full", |b| {
        b.iter(|| {
            log::info!(logger: logger, user = "ada"; "user {} logged in", black_box("ada"));
        })
    });
    eprintln!("dropped_full: {:?}", handle.stats());
    drop(handle);

    #[cfg(feature = "tracing")]
    {
        use tracing_subscriber::prelude::*;
        let (layer, handle) = builder(addr).build_layer().unwrap();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", request_id = 7);
            let _entered = span.enter();
            group.bench_function("tracing_typical", |b| {
                b.iter_custom(|iters| {
                    timed(&handle, iters, |i| {
                        tracing::info!(
                            user = "ada",
                            seq = i,
                            "user {} logged in from {}",
                            black_box("ada"),
                            black_box("10.0.0.1")
                        );
                    })
                })
            });
        });
        check("tracing", &handle);

        // The same event and span with no layer: what tracing itself costs, for comparison.
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", request_id = 7);
            let _entered = span.enter();
            group.bench_function("tracing_registry_alone", |b| {
                b.iter(|| {
                    tracing::info!(
                        user = "ada",
                        seq = 1u64,
                        "user {} logged in from {}",
                        black_box("ada"),
                        black_box("10.0.0.1")
                    );
                })
            });
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = log_records
}
criterion_main!(benches);
