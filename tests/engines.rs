//! Both I/O engines, explicitly: every scenario here runs once with `--io-engine uring` and once
//! with `--io-engine epoll`, so a plain `cargo test` covers both whatever `auto` picks. (The rest
//! of the suite runs against one engine; `PYSTASH_TEST_ENGINE=uring|epoll` chooses it.)
//!
//! The scenarios: TCP, UDP and unix through CPython's handlers, the flush at shutdown, a Redis
//! restart under load, bursts from many connections at once, bad input next to good, a datagram
//! larger than the frame limit, and datagrams the kernel dropped (counted as `dropped_kernel`, so
//! received = pushed + dropped).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::UdpSocket;
use std::thread;
use std::time::{Duration, Instant};

use common::expect::{assert_none, check_records};
use common::*;
use redis_protocol::resp2::types::OwnedFrame;

const HOST: &str = "h";
const WAIT: Duration = Duration::from_secs(30);

/// The engines to run; io_uring only where the kernel allows it (the proxy's `auto` would fall
/// back to epoll there, and this file says so rather than fail).
fn engines() -> Vec<&'static str> {
    let mut all = vec!["epoll"];
    if uring_available() {
        all.push("uring");
    } else {
        eprintln!("io_uring is not available here: the uring runs are skipped");
    }
    all
}

/// Asks the binary itself: `--io-engine uring` exits with an error when io_uring is refused.
fn uring_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let redis = RedisServer::start();
        // The binary refuses to start when io_uring was asked for and is not allowed.
        let proxy = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Pystash::start(&redis, &["--io-engine", "uring", "--workers", "1"])
        }));
        match proxy {
            Ok(p) => {
                p.stop();
                true
            }
            Err(_) => false,
        }
    })
}

fn start(redis: &RedisServer, engine: &str, args: &[&str]) -> Pystash {
    let mut all = vec!["--io-engine", engine, "--host-name", HOST];
    all.extend(args);
    let proxy = Pystash::start(redis, &all);
    let text = proxy.stderr_text();
    assert!(
        text.contains(&format!("engine=\"{engine}\""))
            || text.contains(&format!("engine={engine}")),
        "the listening line does not name engine {engine}:\n{text}"
    );
    proxy
}

fn expect_stats(stopped: &Stopped, want: &[(&str, u64)], failures: &mut Vec<String>) {
    if !stopped.status.success() || stopped.stats.is_empty() {
        failures.push(format!(
            "exit {} without a clean stats line; stderr tail:\n{}",
            stopped.status,
            stopped.tail(20)
        ));
        return;
    }
    for (key, value) in want {
        let got = stopped.stats.get(*key).copied().unwrap_or(0);
        if got != *value {
            failures.push(format!("stats {key}: expected {value}, got {got}"));
        }
    }
}

/// Counts each `<prefix> <i>` message: (missing indices, duplicates).
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
    (missing, seen.values().map(|n| n - 1).sum())
}

/// Kills Redis while `client` (a [`spawn_seq`] of `records`) sends, restarts it half a second
/// later, and checks that every `seq` number reached the list, that the proxy counted each
/// record once and dropped none, and that it reconnected.
fn restart_and_check(
    redis: &mut RedisServer,
    proxy: Pystash,
    client: PyClient,
    records: usize,
    failures: &mut Vec<String>,
) {
    redis.stop();
    thread::sleep(Duration::from_millis(500));
    redis.restart();
    client.finish(Duration::from_secs(120));
    redis.wait_for_len("logstash", records, Duration::from_secs(60));
    let stopped = proxy.stop();
    let seen: BTreeSet<i64> = redis
        .events("logstash")
        .iter()
        .filter_map(|e| e.get("seq").and_then(Json::as_i64))
        .collect();
    let missing: Vec<i64> = (0..records as i64).filter(|n| !seen.contains(n)).collect();
    if !missing.is_empty() {
        failures.push(format!(
            "{} of {records} lost, first {:?}",
            missing.len(),
            &missing[..missing.len().min(20)]
        ));
    }
    expect_stats(
        &stopped,
        &[
            ("received", records as u64),
            ("dropped", 0),
            ("rejected", 0),
        ],
        failures,
    );
    if stopped.stats.get("reconnects").copied().unwrap_or(0) == 0 {
        failures.push("no reconnect counted".into());
    }
}

/// CPython's SocketHandler (TCP and unix) and DatagramHandler: every event as the client
/// computed it, in order per connection.
#[test]
fn handlers_over_tcp_udp_and_unix() {
    for engine in engines() {
        let redis = RedisServer::start();
        let dir = TempDir::new("engines");
        let sock = dir.path().join("p.sock");
        let sock = sock.to_str().expect("utf-8 temp path");
        let proxy = start(&redis, engine, &["--unix", sock]);
        let mut failures = Vec::new();
        let mut total = 0;
        for transport in ["tcp", "udp", "unix"] {
            let port = if transport == "udp" {
                proxy.udp_port
            } else {
                proxy.tcp_port
            }
            .to_string();
            let mut args = vec!["--transport", transport, "--scenario", "full"];
            if transport == "unix" {
                args.extend(["--path", sock]);
            } else {
                args.extend(["--port", &port]);
            }
            redis.client().del("logstash");
            let out = run_client("stdlib_client.py", &args);
            let records = out.at("records").as_array();
            total += records.len();
            redis.wait_for_len("logstash", records.len(), WAIT);
            redis.wait_for_quiet("logstash", Duration::from_millis(200), WAIT);
            for f in check_records(
                &redis.events("logstash"),
                records,
                &Layout::v1(HOST),
                transport != "udp",
            ) {
                failures.push(format!("{transport}: {f}"));
            }
        }
        let stopped = proxy.stop();
        let n = total as u64;
        expect_stats(
            &stopped,
            &[
                ("received", n),
                ("pushed", n),
                ("dropped", 0),
                ("rejected", 0),
                ("redis_errors", 0),
            ],
            &mut failures,
        );
        assert_none(&format!("{engine}: handlers"), &failures);
    }
}

/// Many records over several TCP connections and UDP at once: nothing lost, each connection's
/// records in order.
#[test]
fn many_records_over_concurrent_connections() {
    const PER_CLIENT: usize = 3000;
    for engine in engines() {
        let redis = RedisServer::start();
        let proxy = start(&redis, engine, &[]);
        let clients: Vec<PyClient> = (0..3)
            .map(|i| {
                let transport = if i == 2 { "udp" } else { "tcp" };
                let port = if i == 2 {
                    proxy.udp_port
                } else {
                    proxy.tcp_port
                };
                let rate = if i == 2 { "20000" } else { "0" };
                PyClient::spawn(
                    "stdlib_client.py",
                    &[
                        "--transport",
                        transport,
                        "--port",
                        &port.to_string(),
                        "--scenario",
                        "simple",
                        "--prefix",
                        &format!("c{i}"),
                        "--count",
                        &PER_CLIENT.to_string(),
                        "--rate",
                        rate,
                    ],
                )
            })
            .collect();
        for c in clients {
            c.finish(Duration::from_secs(120));
        }
        redis.wait_for_len("logstash", 3 * PER_CLIENT, WAIT);
        let stopped = proxy.stop();
        let events = redis.events("logstash");
        let mut failures = Vec::new();
        for i in 0..3 {
            let prefix = format!("c{i}");
            let (missing, duplicates) = tally(&events, &prefix, PER_CLIENT);
            if !missing.is_empty() || duplicates > 0 {
                failures.push(format!(
                    "{prefix}: {} missing (first {:?}), {duplicates} duplicates",
                    missing.len(),
                    &missing[..missing.len().min(10)]
                ));
            }
            if i < 2 {
                let order: Vec<usize> = events
                    .iter()
                    .filter_map(|e| e.get("message").and_then(Json::as_str))
                    .filter_map(|m| m.strip_prefix(&format!("{prefix} ")))
                    .filter_map(|n| n.parse().ok())
                    .collect();
                if order.windows(2).any(|w| w[0] > w[1]) {
                    failures.push(format!("{prefix}: records out of order"));
                }
            }
        }
        let n = 3 * PER_CLIENT as u64;
        expect_stats(
            &stopped,
            &[("received", n), ("pushed", n), ("dropped", 0)],
            &mut failures,
        );
        assert_none(&format!("{engine}: concurrent connections"), &failures);
    }
}

/// Many connections sending a burst at once, more than the uring engine's stream ring holds
/// (64 buffers of 32 KiB) and more than a small buffer takes: the ring runs dry, receives are
/// cancelled and armed again, and every record still arrives once, in order per connection.
#[test]
fn bursts_larger_than_the_stream_ring_arrive_whole() {
    const CONNECTIONS: usize = 96;
    const PER_CONNECTION: usize = 250;
    let pad = "p".repeat(400);
    for engine in engines() {
        let redis = RedisServer::start();
        let proxy = start(&redis, engine, &["--buffer-records", "2000"]);
        let port = proxy.tcp_port;
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(CONNECTIONS));
        let senders: Vec<_> = (0..CONNECTIONS)
            .map(|c| {
                let barrier = barrier.clone();
                let burst: String = (0..PER_CONNECTION)
                    .map(|i| format!("{{\"message\":\"b{c} {i}\",\"pad\":\"{pad}\"}}\n"))
                    .collect();
                thread::spawn(move || {
                    use std::io::Write;
                    let mut stream =
                        std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
                    barrier.wait();
                    stream.write_all(burst.as_bytes()).expect("send the burst");
                })
            })
            .collect();
        for s in senders {
            s.join().expect("sender");
        }
        let n = CONNECTIONS * PER_CONNECTION;
        // All of it while the proxy runs, not only in the flush at its exit.
        let arrived = redis.wait_for_len("logstash", n, WAIT);
        let stopped = proxy.stop();
        let mut failures = Vec::new();
        if arrived < n {
            failures.push(format!("{arrived} of {n} records in Redis before the stop"));
        }
        // Per connection: the indices in the order they arrived.
        let mut seen: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for e in redis.events("logstash") {
            let message = e.get("message").and_then(Json::as_str).unwrap_or_default();
            let parsed = message
                .strip_prefix('b')
                .and_then(|m| m.split_once(' '))
                .and_then(|(c, i)| Some((c.parse().ok()?, i.parse().ok()?)));
            match parsed {
                Some((c, i)) => seen.entry(c).or_default().push(i),
                None => failures.push(format!("unexpected event {e}")),
            }
        }
        for c in 0..CONNECTIONS {
            let got = seen.remove(&c).unwrap_or_default();
            if got != (0..PER_CONNECTION).collect::<Vec<_>>() {
                failures.push(format!(
                    "connection {c}: {} records, first out of place at {:?}",
                    got.len(),
                    got.iter().enumerate().position(|(k, &i)| k != i)
                ));
            }
        }
        expect_stats(
            &stopped,
            &[("received", n as u64), ("pushed", n as u64), ("dropped", 0)],
            &mut failures,
        );
        assert_none(&format!("{engine}: bursts over the stream ring"), &failures);
    }
}

/// Records waiting for a paused Redis when SIGTERM comes are flushed before the exit.
#[test]
fn shutdown_flushes_buffered_records() {
    for engine in engines() {
        let redis = RedisServer::start();
        let proxy = start(&redis, engine, &["--shutdown-timeout", "20"]);
        redis.client().ok(&["CLIENT", "PAUSE", "2000", "WRITE"]);
        send_simple("tcp", proxy.tcp_port, "flush", 300);
        send_simple("udp", proxy.udp_port, "uflush", 100);
        thread::sleep(Duration::from_millis(100));
        let stopped = proxy.stop();
        let events = redis.events("logstash");
        let mut failures = Vec::new();
        for (prefix, n) in [("flush", 300), ("uflush", 100)] {
            let (missing, _) = tally(&events, prefix, n);
            if !missing.is_empty() {
                failures.push(format!("{prefix}: {} of {n} lost", missing.len()));
            }
        }
        expect_stats(
            &stopped,
            &[("received", 400), ("pushed", 400), ("dropped", 0)],
            &mut failures,
        );
        assert_none(&format!("{engine}: shutdown flush"), &failures);
    }
}

/// With Redis gone, the shutdown gives up after --shutdown-timeout and counts the loss.
#[test]
fn shutdown_deadline_counts_undelivered_records() {
    for engine in engines() {
        let mut redis = RedisServer::start();
        redis.stop();
        let proxy = start(&redis, engine, &["--shutdown-timeout", "1"]);
        send_simple("tcp", proxy.tcp_port, "doomed", 20);
        thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        let stopped = proxy.stop_with(libc::SIGTERM, Duration::from_secs(20));
        let mut failures = Vec::new();
        expect_stats(
            &stopped,
            &[
                ("received", 20),
                ("pushed", 0),
                ("dropped", 20),
                ("dropped_shutdown", 20),
            ],
            &mut failures,
        );
        if t.elapsed() > Duration::from_secs(8) {
            failures.push(format!("exit took {:?}", t.elapsed()));
        }
        assert_none(&format!("{engine}: shutdown deadline"), &failures);
    }
}

/// Redis is killed and restarted while records flow: every sequence number arrives.
#[test]
fn redis_restart_loses_nothing() {
    const RECORDS: usize = 6000;
    for engine in engines() {
        let mut redis =
            RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
        let proxy = start(&redis, engine, &["--shutdown-timeout", "30"]);
        let client = spawn_seq(proxy.tcp_port, RECORDS, 4000);
        thread::sleep(Duration::from_millis(400));
        let mut failures = Vec::new();
        restart_and_check(&mut redis, proxy, client, RECORDS, &mut failures);
        assert_none(&format!("{engine}: Redis restart"), &failures);
    }
}

/// Redis reached through its unix socket (`--redis-socket`): the proxy's connection is a unix
/// one, every record arrives, and a Redis restart is survived over the socket too.
#[test]
fn redis_over_a_unix_socket() {
    const RECORDS: usize = 3000;
    for engine in engines() {
        let dir = TempDir::new("redis-unix");
        let path = dir.path().join("redis.sock");
        let path = path.to_str().expect("utf-8 temp path");
        let mut redis = RedisServer::start_with(&[
            "--unixsocket",
            path,
            "--unixsocketperm",
            "700",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ]);
        let proxy = start(&redis, engine, &["--redis-socket", path]);
        let mut failures = Vec::new();
        if !proxy.stderr_text().contains(&format!("redis={path}")) {
            failures.push(format!("the listening line does not name {path}"));
        }
        let client = spawn_seq(proxy.tcp_port, RECORDS, 4000);
        // The proxy's connections, and only they, are unix ones (flag U): the harness's own
        // come over TCP.
        let unix_clients = poll(WAIT, || {
            let list = match redis.client().cmd(&["CLIENT", "LIST"]) {
                Ok(OwnedFrame::BulkString(b)) => String::from_utf8_lossy(&b).into_owned(),
                _ => return None,
            };
            let n = list
                .lines()
                .filter(|l| {
                    l.split(' ')
                        .any(|f| f.starts_with("flags=") && f.contains('U'))
                })
                .count();
            (n > 0).then_some(n)
        });
        if unix_clients.is_none() {
            failures.push("no unix client connected to redis".into());
        }
        thread::sleep(Duration::from_millis(300));
        restart_and_check(&mut redis, proxy, client, RECORDS, &mut failures);
        assert_none(&format!("{engine}: redis over a unix socket"), &failures);
    }
}

/// Garbage next to good records, on TCP and UDP: rejected and counted; the good ones arrive.
#[test]
fn bad_input_is_rejected_and_neighbours_arrive() {
    for engine in engines() {
        let redis = RedisServer::start();
        let proxy = start(&redis, engine, &["--max-record-bytes", "4096"]);
        let line = |id: &str| format!("{{\"message\":\"{id}\"}}\n").into_bytes();
        // TCP: a bad pickle and a line that is not UTF-8 are skipped.
        send_tcp(
            proxy.tcp_port,
            &[&line("t0"), b"\x00\x00\x00\x04junk", &line("t1")],
        );
        send_tcp(proxy.tcp_port, &[b"\xff\xfe\xfd\n", &line("t2")]);
        // UDP: random bytes, a bad pickle, an oversized datagram (truncated by the uring
        // engine's buffers, too long for the frame limit in both).
        let big = vec![b'x'; 9000];
        send_udp(
            proxy.udp_port,
            &[
                &line("u0"),
                b"\x00\x00\x00\x03abc",
                &big,
                b"\x00\x00\x00\x09\x80",
                &line("u1"),
            ],
        );
        redis.wait_for_len("logstash", 5, WAIT);
        redis.wait_for_quiet("logstash", Duration::from_millis(300), WAIT);
        let stopped = proxy.stop();
        let messages: Vec<String> = redis
            .events("logstash")
            .iter()
            .filter_map(|e| e.get("message").and_then(Json::as_str).map(str::to_owned))
            .collect();
        let mut failures = Vec::new();
        for id in ["t0", "t1", "t2", "u0", "u1"] {
            if !messages.iter().any(|m| m == id) {
                failures.push(format!("{id} missing; events: {messages:?}"));
            }
        }
        if stopped
            .stats
            .get("rejected_oversized")
            .copied()
            .unwrap_or(0)
            != 1
        {
            failures.push(format!(
                "the 9000-byte datagram was not counted as oversized: {}",
                stopped.tail(3)
            ));
        }
        if stopped.stats.get("rejected").copied().unwrap_or(0) < 4 {
            failures.push(format!("too few rejections: {}", stopped.tail(3)));
        }
        let s = |k: &str| stopped.stats.get(k).copied().unwrap_or(0);
        if s("received") != s("pushed") + s("rejected") + s("dropped") {
            failures.push(format!("counters do not add up: {}", stopped.tail(3)));
        }
        assert_none(&format!("{engine}: bad input"), &failures);
    }
}

/// A burst into a tiny receive buffer: the kernel drops datagrams, and the proxy counts them,
/// so that every datagram sent ends up pushed or dropped_kernel.
#[test]
fn kernel_drops_are_counted() {
    const SENT: usize = 20_000;
    for engine in engines() {
        let redis = RedisServer::start();
        let proxy = start(
            &redis,
            engine,
            &["--udp-recv-buffer", "4096", "--workers", "1"],
        );
        let tx = UdpSocket::bind((LOCALHOST, 0)).expect("bind");
        let mut sent = 0;
        for i in 0..SENT {
            let d = format!("{{\"message\":\"k{i}\"}}");
            if tx
                .send_to(d.as_bytes(), (LOCALHOST, proxy.udp_port))
                .is_ok()
            {
                sent += 1;
            }
        }
        // A datagram after the burst carries the drop counter (and the meminfo check at exit
        // finds it anyway).
        thread::sleep(Duration::from_millis(200));
        send_udp(proxy.udp_port, &[b"{\"message\":\"last\"}"]);
        sent += 1;
        redis.wait_for_quiet("logstash", Duration::from_millis(300), WAIT);
        let stopped = proxy.stop();
        let s = |k: &str| stopped.stats.get(k).copied().unwrap_or(0);
        eprintln!("{engine}: sent {sent}; {}", stopped.tail(1));
        let mut failures = Vec::new();
        if s("dropped_kernel") == 0 {
            failures.push(format!(
                "a {SENT}-datagram burst into a 4 KiB buffer dropped nothing? {}",
                stopped.tail(3)
            ));
        }
        if s("received") != sent as u64 || s("pushed") + s("dropped") != sent as u64 {
            failures.push(format!(
                "sent {sent}; counters do not account for all: {}",
                stopped.tail(3)
            ));
        }
        let listed = redis.client().llen("logstash") as u64;
        if listed != s("pushed") {
            failures.push(format!("{listed} in Redis, pushed={}", s("pushed")));
        }
        assert_none(&format!("{engine}: kernel drops"), &failures);
    }
}

/// Hostile stream clients cost a counter, not the service: a slow-loris that never finishes
/// its frame and one stuck mid-frame are closed by `--frame-timeout`; connections past
/// `--max-connections` are closed at once; 1,000 idle connections holding no partial frame stay open
/// (CPython's SocketHandler keeps its connection between records); good records keep arriving.
#[test]
fn slow_and_surplus_connections_are_bounded() {
    use std::io::{Read, Write};
    for engine in engines() {
        let redis = RedisServer::start();
        let proxy = start(
            &redis,
            engine,
            &[
                "--workers",
                "1",
                "--frame-timeout",
                "1",
                "--max-connections",
                "1010",
            ],
        );
        let mut failures = Vec::new();
        // 1,000 idle connections: they hold no partial frame, so they stay.
        let idle: Vec<_> = (0..1000).map(|_| tcp(proxy.tcp_port)).collect();
        // Half a pickle frame, then nothing.
        let mut stuck = tcp(proxy.tcp_port);
        stuck.write_all(&[0, 0, 1, 0, b'}']).unwrap();
        // A slow-loris: one byte of a JSON line every 200 ms.
        let mut loris = tcp(proxy.tcp_port);
        // 8 more fill the limit (1000 + 2 + 8 = 1010); 5 past it are closed at once.
        let filler: Vec<_> = (0..8).map(|_| tcp(proxy.tcp_port)).collect();
        thread::sleep(Duration::from_millis(300));
        let surplus: Vec<_> = (0..5).map(|_| tcp(proxy.tcp_port)).collect();
        for mut s in surplus {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut b = [0u8; 1];
            if !matches!(s.read(&mut b), Ok(0) | Err(_)) {
                failures.push(format!("{engine}: a surplus connection was served"));
            }
        }
        let started = Instant::now();
        let mut loris_closed = false;
        while started.elapsed() < Duration::from_secs(6) {
            if loris.write_all(b"{").is_err() {
                loris_closed = true;
                break;
            }
            thread::sleep(Duration::from_millis(200));
        }
        if !loris_closed {
            failures.push(format!("{engine}: the slow-loris was not closed"));
        }
        stuck
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 1];
        if !matches!(stuck.read(&mut b), Ok(0) | Err(_)) {
            failures.push(format!("{engine}: the stuck connection was not closed"));
        }
        // The service goes on: records from an idle connection and a new one arrive.
        let mut first = idle.into_iter().next().unwrap();
        first.write_all(b"{\"message\":\"after 0\"}\n").unwrap();
        close(first);
        drop(filler);
        thread::sleep(Duration::from_millis(300));
        send_tcp(proxy.tcp_port, &[b"{\"message\":\"after 1\"}\n"]);
        let got = redis.wait_for_len("logstash", 2, WAIT);
        if got != 2 {
            failures.push(format!(
                "{engine}: {got} of 2 records after the hostile clients"
            ));
        }
        let stopped = proxy.stop();
        expect_stats(
            &stopped,
            &[
                ("connections_refused", 5),
                ("connections_expired", 2),
                ("pushed", 2),
            ],
            &mut failures,
        );
        if stopped.stat("rejected_truncated") != 2 {
            failures.push(format!(
                "{engine}: expected the 2 cut frames as rejected_truncated; {}",
                stopped.tail(3)
            ));
        }
        assert_none("hostile stream clients", &failures);
    }
}
