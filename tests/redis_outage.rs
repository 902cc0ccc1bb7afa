//! Redis dies under load and comes back: 20,000 records flow from a CPython SocketHandler at a
//! steady rate while redis-server is SIGKILLed and restarted on the same port; every sequence
//! number must reach the list.
//!
//! Redis runs with `--appendonly yes --appendfsync always` here, so whatever it acknowledged
//! before the kill is still there after the restart: a missing record is the proxy's loss, not
//! Redis's. A record Redis applied but whose reply the kill swallowed may be sent again; such
//! duplicates are allowed only when the proxy documents at-least-once delivery.

mod common;

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use common::expect::assert_none;
use common::*;

const RECORDS: usize = 20_000;
const RATE: usize = 5_000;

#[test]
fn redis_killed_and_restarted_loses_nothing() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let proxy = Pystash::start(&redis, &["--host-name", "h", "--shutdown-timeout", "30"]);
    let client = spawn_seq(proxy.tcp_port, RECORDS, RATE);

    // Let records flow, kill Redis mid-stream, keep it down for a second, bring it back.
    let started = Instant::now();
    thread::sleep(Duration::from_millis(1000));
    let before_kill = redis.client().llen("logstash");
    redis.stop();
    let killed_at = started.elapsed();
    thread::sleep(Duration::from_millis(1000));
    redis.restart();
    let restarted_at = started.elapsed();
    let after_restart = redis.client().llen("logstash");

    let out = client.finish(Duration::from_secs(120));
    let sent = out.at("sent").as_i64().expect("sent") as usize;
    let seconds = out.at("seconds").as_f64().unwrap_or(0.0);
    assert_eq!(sent, RECORDS);

    let reached = redis.wait_for_len("logstash", RECORDS, Duration::from_secs(90));
    redis.wait_for_quiet(
        "logstash",
        Duration::from_millis(500),
        Duration::from_secs(30),
    );
    let stopped = proxy.stop();
    let events = redis.events("logstash");

    let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
    let mut inversions = 0;
    let mut last = -1;
    let mut failures = Vec::new();
    for e in &events {
        match e.get("seq").and_then(Json::as_i64) {
            Some(n) => {
                *seen.entry(n).or_default() += 1;
                if n < last {
                    inversions += 1;
                }
                last = last.max(n);
            }
            None => failures.push(format!("event without an integer seq: {}", e.compact(200))),
        }
    }
    let missing: Vec<i64> = (0..RECORDS as i64)
        .filter(|n| !seen.contains_key(n))
        .collect();
    let duplicates: usize = seen.values().map(|c| c - 1).sum();
    let report = format!(
        "{} events for {RECORDS} records sent in {seconds:.1} s; Redis killed at {killed_at:?} \
         (list had {before_kill}), back at {restarted_at:?} (list had {after_restart} after AOF load); \
         waited list length {reached}; missing {}, duplicates {duplicates}, order inversions {inversions}; stats: {:?}",
        events.len(),
        missing.len(),
        stopped.stats
    );
    eprintln!("{report}");

    if !missing.is_empty() {
        let head: Vec<i64> = missing.iter().take(30).copied().collect();
        failures.push(format!(
            "{} sequence numbers lost, first {head:?}",
            missing.len()
        ));
    }
    if duplicates > 0 && !documents_at_least_once() {
        failures.push(format!(
            "{duplicates} duplicate events, and neither README.md nor src/ documents at-least-once delivery"
        ));
    }
    if !stopped.status.success() {
        failures.push(format!(
            "exit status {} after SIGTERM; stderr tail:\n{}",
            stopped.status,
            stopped.tail(30)
        ));
    }
    if stopped.stats.is_empty() {
        failures.push(format!("no stats line; stderr tail:\n{}", stopped.tail(30)));
    } else {
        if stopped.stat("redis_errors") + stopped.stat("reconnects") == 0 {
            failures.push(
                "the stats show neither redis_errors nor reconnects for a killed Redis".to_owned(),
            );
        }
        for key in ["dropped", "rejected"] {
            if stopped.stat(key) != 0 {
                failures.push(format!("{key}={}", stopped.stat(key)));
            }
        }
        if stopped.stat("received") != RECORDS as u64 {
            failures.push(format!(
                "received={}, expected {RECORDS}",
                stopped.stat("received")
            ));
        }
    }
    assert_none(&format!("Redis outage ({report})"), &failures);
}
