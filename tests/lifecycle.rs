//! The proxy's life around the records: signals, the flush at shutdown and its deadline, Redis
//! absent at start or slow to take writes, a full buffer (streams wait, datagrams are dropped and
//! counted), periodic stats, and the Redis URL from the environment.
//!
//! Redis is made slow with `CLIENT PAUSE <ms> WRITE`: it stops executing writes (so pystash's
//! pushes wait) while reads such as the tests' LLEN still answer.

mod common;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use common::expect::{assert_none, check_records};
use common::*;

const HOST: &str = "h";
const WAIT: Duration = Duration::from_secs(30);

/// Counts each `<prefix> <i>` message in the list: (missing indices, duplicate events).
fn tally(events: &[Json], prefix: &str, count: usize) -> (Vec<usize>, usize) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for e in events {
        if let Some(m) = e.get("message").and_then(Json::as_str) {
            *seen.entry(m.to_owned()).or_default() += 1;
        }
    }
    let missing = (0..count)
        .filter(|i| !seen.contains_key(&format!("{prefix} {i}")))
        .collect();
    let duplicates = seen.values().map(|n| n - 1).sum();
    (missing, duplicates)
}

/// Loss is a failure; duplicates are one too unless the proxy documents at-least-once delivery.
fn check_tally(events: &[Json], prefix: &str, count: usize, failures: &mut Vec<String>) {
    let (missing, duplicates) = tally(events, prefix, count);
    if !missing.is_empty() {
        let head: Vec<usize> = missing.iter().take(20).copied().collect();
        failures.push(format!(
            "{} of {count} records lost, first {head:?}",
            missing.len()
        ));
    }
    if duplicates > 0 && !documents_at_least_once() {
        failures.push(format!(
            "{duplicates} duplicates, and at-least-once delivery is not documented"
        ));
    }
}

fn expect_stats(stopped: &Stopped, want: &[(&str, u64)], failures: &mut Vec<String>) {
    if !stopped.status.success() {
        failures.push(format!(
            "exit status {}; stderr tail:\n{}",
            stopped.status,
            stopped.tail(20)
        ));
    }
    if stopped.stats.is_empty() {
        failures.push(format!(
            "no `pystash stats` line at exit; stderr tail:\n{}",
            stopped.tail(20)
        ));
        return;
    }
    for (key, value) in want {
        let got = stopped.stat(key);
        if got != *value {
            failures.push(format!("stats {key}: expected {value}, got {got}"));
        }
    }
}

/// SIGINT ends the proxy like SIGTERM: exit 0 and the final stats line.
#[test]
fn sigint_exits_zero_with_final_stats() {
    let redis = RedisServer::start();
    let proxy = Pystash::start(&redis, &["--host-name", HOST]);
    let out = send_simple("tcp", proxy.tcp_port, "sigint", 5);
    redis.wait_for_len("logstash", 5, WAIT);
    let stopped = proxy.stop_with(libc::SIGINT, Duration::from_secs(30));
    let mut failures = check_records(
        &redis.events("logstash"),
        out.at("records").as_array(),
        &Layout::v1(HOST),
        true,
    );
    expect_stats(
        &stopped,
        &[
            ("received", 5),
            ("pushed", 5),
            ("dropped", 0),
            ("rejected", 0),
        ],
        &mut failures,
    );
    assert_none("SIGINT", &failures);
}

/// Records still waiting for a slow Redis when SIGTERM comes are flushed before the exit.
#[test]
fn shutdown_flushes_what_redis_was_slow_to_take() {
    let redis = RedisServer::start();
    let proxy = Pystash::start(&redis, &["--host-name", HOST, "--shutdown-timeout", "20"]);
    redis.client().ok(&["CLIENT", "PAUSE", "3000", "WRITE"]);
    let paused = Instant::now();
    send_simple("tcp", proxy.tcp_port, "flush", 500);
    thread::sleep(Duration::from_millis(200));
    let before = redis.client().llen("logstash");
    let stopped = proxy.stop();
    let exited = paused.elapsed();
    let events = redis.events("logstash");
    let mut failures = Vec::new();
    if before != 0 {
        failures.push(format!(
            "{before} events were in Redis while writes were paused (the pause did not hold)"
        ));
    }
    check_tally(&events, "flush", 500, &mut failures);
    expect_stats(
        &stopped,
        &[("received", 500), ("dropped", 0), ("rejected", 0)],
        &mut failures,
    );
    if stopped.stats.get("pushed").is_some_and(|p| *p < 500) {
        failures.push(format!("pushed={} < 500", stopped.stat("pushed")));
    }
    assert_none(
        &format!("flush at shutdown (exited {exited:?} after a 3 s write pause)"),
        &failures,
    );
}

/// With Redis gone, the shutdown gives up after --shutdown-timeout, counts what it could not
/// deliver as dropped (dropped_shutdown), and still exits 0.
#[test]
fn shutdown_deadline_counts_undelivered_records() {
    let mut redis = RedisServer::start();
    redis.stop();
    let proxy = Pystash::start(&redis, &["--host-name", HOST, "--shutdown-timeout", "1"]);
    send_simple("tcp", proxy.tcp_port, "doomed", 20);
    thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let stopped = proxy.stop_with(libc::SIGTERM, Duration::from_secs(20));
    let took = t.elapsed();
    let mut failures = Vec::new();
    expect_stats(
        &stopped,
        &[
            ("received", 20),
            ("pushed", 0),
            ("dropped", 20),
            ("dropped_shutdown", 20),
            ("rejected", 0),
        ],
        &mut failures,
    );
    if took > Duration::from_secs(8) {
        failures.push(format!("exit took {took:?} with --shutdown-timeout 1"));
    }
    assert_none("shutdown deadline with Redis down", &failures);
}

/// Redis absent when the proxy starts: the proxy listens anyway, keeps the records, and
/// delivers them once Redis comes up.
#[test]
fn redis_down_at_start_then_up() {
    let mut redis = RedisServer::start();
    redis.stop();
    let proxy = Pystash::start(&redis, &["--host-name", HOST]);
    let out = send_simple("tcp", proxy.tcp_port, "late", 50);
    thread::sleep(Duration::from_millis(500));
    redis.restart();
    let seen = redis.wait_for_len("logstash", 50, WAIT);
    let stopped = proxy.stop();
    let mut failures = Vec::new();
    if seen < 50 {
        failures.push(format!(
            "only {seen} of 50 events within {WAIT:?} of Redis starting"
        ));
    }
    failures.extend(check_records(
        &redis.events("logstash"),
        out.at("records").as_array(),
        &Layout::v1(HOST),
        true,
    ));
    expect_stats(
        &stopped,
        &[("received", 50), ("pushed", 50), ("dropped", 0)],
        &mut failures,
    );
    assert_none("Redis down at start", &failures);
}

/// --stats-interval 1 logs the counters every second, not only at exit.
#[test]
fn periodic_stats_lines() {
    let redis = RedisServer::start();
    let proxy = Pystash::start(&redis, &["--stats-interval", "1"]);
    send_simple("tcp", proxy.tcp_port, "periodic", 3);
    redis.wait_for_len("logstash", 3, WAIT);
    let lines = poll(Duration::from_secs(10), || {
        let n = proxy
            .stderr_text()
            .lines()
            .filter(|l| l.contains("pystash stats"))
            .count();
        (n >= 2).then_some(n)
    });
    let stderr = proxy.stderr_text();
    let stopped = proxy.stop();
    let mut failures = Vec::new();
    if lines.is_none() {
        failures.push(format!(
            "fewer than 2 periodic `pystash stats` lines within 10 s; stderr:\n{stderr}"
        ));
    }
    let last_periodic = parse_stats(&stderr);
    if last_periodic.get("pushed") != Some(&3) {
        failures.push(format!("periodic stats {last_periodic:?} lack pushed=3"));
    }
    expect_stats(&stopped, &[("received", 3), ("pushed", 3)], &mut failures);
    assert_none("--stats-interval 1", &failures);
}

/// A full buffer stops reading streams instead of dropping: with room for 20 records and Redis
/// pausing writes, a SocketHandler sending 2,000 records waits, and every record arrives.
#[test]
fn full_buffer_holds_back_streams() {
    let redis = RedisServer::start();
    let proxy = Pystash::start(
        &redis,
        &[
            "--host-name",
            HOST,
            "--buffer-records",
            "20",
            "--workers",
            "1",
        ],
    );
    redis.client().ok(&["CLIENT", "PAUSE", "2000", "WRITE"]);
    send_simple("tcp", proxy.tcp_port, "held", 2000);
    redis.wait_for_len("logstash", 2000, WAIT);
    let stopped = proxy.stop();
    let events = redis.events("logstash");
    let mut failures = Vec::new();
    check_tally(&events, "held", 2000, &mut failures);
    expect_stats(
        &stopped,
        &[("received", 2000), ("dropped", 0), ("rejected", 0)],
        &mut failures,
    );
    assert_none("full buffer, TCP", &failures);
}

/// A full buffer drops datagrams and counts them: received = pushed + dropped, and the list
/// holds exactly what was pushed.
#[test]
fn full_buffer_drops_datagrams_and_counts_them() {
    let redis = RedisServer::start();
    let proxy = Pystash::start(
        &redis,
        &[
            "--host-name",
            HOST,
            "--buffer-records",
            "20",
            "--workers",
            "1",
        ],
    );
    redis.client().ok(&["CLIENT", "PAUSE", "2000", "WRITE"]);
    send_simple("udp", proxy.udp_port, "dgram", 300);
    thread::sleep(Duration::from_millis(2500));
    redis.wait_for_quiet("logstash", Duration::from_millis(500), WAIT);
    let stopped = proxy.stop();
    let in_list = redis.client().llen("logstash") as u64;
    let mut failures = Vec::new();
    expect_stats(&stopped, &[("rejected", 0)], &mut failures);
    if !stopped.stats.is_empty() {
        let (received, pushed, dropped) = (
            stopped.stat("received"),
            stopped.stat("pushed"),
            stopped.stat("dropped"),
        );
        if stopped.stat("dropped_buffer_full") == 0 {
            failures.push(format!(
                "no dropped_buffer_full with a 20-record buffer and 300 datagrams: {:?}",
                stopped.stats
            ));
        }
        if received != pushed + dropped {
            failures.push(format!(
                "received={received} != pushed={pushed} + dropped={dropped}"
            ));
        }
        if in_list != pushed {
            failures.push(format!(
                "the list holds {in_list} events but pushed={pushed}"
            ));
        }
    }
    assert_none("full buffer, UDP", &failures);
}

/// PYSTASH_REDIS_URL stands for --redis-url, keeping the password off the command line.
#[test]
fn redis_url_from_the_environment() {
    let redis = RedisServer::start_with(&["--requirepass", "env-pw"]);
    let url = format!("redis://default:env-pw@127.0.0.1:{}/4", redis.port);
    let proxy = Pystash::start_env(
        redis.port,
        &["--host-name", HOST],
        &[("PYSTASH_REDIS_URL", &url)],
    );
    let out = send_simple("tcp", proxy.tcp_port, "env", 5);
    redis.wait_for_len_in(4, "logstash", 5, WAIT);
    let stopped = proxy.stop();
    let mut failures = check_records(
        &redis.events_in(4, "logstash"),
        out.at("records").as_array(),
        &Layout::v1(HOST),
        true,
    );
    expect_stats(&stopped, &[("received", 5), ("pushed", 5)], &mut failures);
    assert_none("PYSTASH_REDIS_URL", &failures);
}
