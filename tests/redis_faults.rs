//! Redis refusing writes, and the operator's view of it: a key of the wrong type, maxmemory
//! reached, a wrong password, a list over `--max-queue-length`. Each time the records wait in
//! the buffer and all arrive, exactly once, once the cause is fixed; the counters add up and
//! are served at `--metrics`.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(30);

/// Sends `count` JSON lines `{"message": "<prefix> <i>"}` over one TCP connection.
fn send_lines(port: u16, prefix: &str, count: usize) {
    let mut body = String::new();
    for i in 0..count {
        body.push_str(&format!("{{\"message\":\"{prefix} {i}\"}}\n"));
    }
    send_tcp(port, &[body.as_bytes()]);
}

/// Asserts the list holds each `<prefix> <i>` exactly once.
fn assert_all_once(redis: &RedisServer, key: &str, prefix: &str, count: usize) {
    let got = redis.wait_for_len(key, count, WAIT);
    assert_eq!(got, count, "records in {key}");
    let events = redis.events(key);
    let messages: HashSet<String> = events
        .iter()
        .filter_map(|e| e.get("message").and_then(Json::as_str).map(str::to_owned))
        .collect();
    assert_eq!(messages.len(), count, "distinct records");
    for i in 0..count {
        assert!(
            messages.contains(&format!("{prefix} {i}")),
            "{prefix} {i} missing"
        );
    }
}

fn metrics(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("metrics endpoint");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    reply
}

fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(line_start)
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
}

#[test]
fn wrong_type_key_holds_records_until_fixed() {
    let redis = RedisServer::start();
    redis.client().ok(&["SET", "logstash", "not a list"]);
    let proxy = Pystash::start(&redis, &["--workers", "1"]);
    send_lines(proxy.tcp_port, "wt", 50);
    // Redis refuses every push for a while; nothing may be dropped meanwhile.
    thread::sleep(Duration::from_millis(500));
    assert!(
        proxy.stderr_text().contains("WRONGTYPE"),
        "{}",
        proxy.stderr_text()
    );
    redis.client().del("logstash");
    assert_all_once(&redis, "logstash", "wt", 50);
    let stopped = proxy.stop();
    stopped.assert_clean_exit();
    assert_eq!(stopped.stat("pushed"), 50);
    assert!(stopped.stat("redis_errors") >= 1);
    assert_eq!(stopped.stat("dropped"), 0);
}

#[test]
fn maxmemory_holds_records_until_raised() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    let mut c = redis.client();
    // Below what Redis already uses: every write is refused with OOM.
    c.ok(&["CONFIG", "SET", "maxmemory", "1"]);
    let proxy = Pystash::start(&redis, &["--workers", "1"]);
    send_lines(proxy.tcp_port, "oom", 40);
    thread::sleep(Duration::from_millis(500));
    assert_eq!(c.llen("logstash"), 0);
    assert!(
        proxy.stderr_text().contains("OOM"),
        "{}",
        proxy.stderr_text()
    );
    c.ok(&["CONFIG", "SET", "maxmemory", "0"]);
    assert_all_once(&redis, "logstash", "oom", 40);
    let stopped = proxy.stop();
    stopped.assert_clean_exit();
    assert_eq!(stopped.stat("pushed"), 40);
}

#[test]
fn wrong_password_holds_records_until_fixed() {
    let redis = RedisServer::start_with(&["--requirepass", "right"]);
    let url = format!("redis://:wrong@127.0.0.1:{}/0", redis.port);
    let proxy = Pystash::start(&redis, &["--workers", "1", "--redis-url", &url]);
    send_lines(proxy.tcp_port, "pw", 30);
    thread::sleep(Duration::from_millis(500));
    let mut c = redis.client();
    assert_eq!(c.llen("logstash"), 0);
    let log = proxy.stderr_text();
    assert!(log.contains("AUTH refused"), "{log}");
    assert!(
        !log.contains("wrong@"),
        "the password must not be logged: {log}"
    );
    c.ok(&["CONFIG", "SET", "requirepass", "wrong"]);
    let deadline = std::time::Instant::now() + WAIT;
    while c.llen("logstash") < 30 && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(c.llen("logstash"), 30);
    let stopped = proxy.stop();
    stopped.assert_clean_exit();
    assert_eq!(stopped.stat("pushed"), 30);
}

#[test]
fn max_queue_length_pauses_until_the_consumer_catches_up() {
    let redis = RedisServer::start();
    let metrics_port = free_tcp_port();
    let addr = format!("127.0.0.1:{metrics_port}");
    let proxy = Pystash::start(
        &redis,
        &[
            "--workers",
            "1",
            "--max-queue-length",
            "100",
            "--metrics",
            &addr,
        ],
    );
    // 20 bursts of 50: pushes see the list pass 100 and pause.
    let mut s = tcp(proxy.tcp_port);
    for burst in 0..20 {
        let mut body = String::new();
        for i in burst * 50..(burst + 1) * 50 {
            body.push_str(&format!("{{\"message\":\"mq {i}\"}}\n"));
        }
        s.write_all(body.as_bytes()).unwrap();
        thread::sleep(Duration::from_millis(30));
    }
    close(s);
    // The list stops growing a burst or so past the limit.
    let held = redis.wait_for_quiet("logstash", Duration::from_millis(600), WAIT);
    assert!((101..=200).contains(&held), "list length {held}");
    let text = metrics(&addr);
    assert_eq!(metric(&text, "pystash_records_received_total "), 1000);
    assert!(metric(&text, "pystash_redis_congestion_pauses_total ") >= 1);
    let pushed = metric(&text, "pystash_records_pushed_total ");
    let buffered = metric(&text, "pystash_records_buffered ");
    assert_eq!(
        pushed + buffered,
        1000,
        "received = pushed + buffered\n{text}"
    );
    // A consumer drains the list as Logstash does; the rest follows.
    let mut c = redis.client();
    let mut drained = 0;
    let deadline = std::time::Instant::now() + WAIT;
    while drained < 1000 && std::time::Instant::now() < deadline {
        let items = c.lrange("logstash");
        if !items.is_empty() {
            c.ok(&["LTRIM", "logstash", &items.len().to_string(), "-1"]);
        }
        drained += items.len();
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(drained, 1000, "every record once");
    let stopped = proxy.stop();
    stopped.assert_clean_exit();
    assert_eq!(stopped.stat("pushed"), 1000);
    assert!(stopped.stat("congestion_pauses") >= 1);
}

#[test]
fn metrics_add_up_with_rejections() {
    let redis = RedisServer::start();
    let addr = format!("127.0.0.1:{}", free_tcp_port());
    let proxy = Pystash::start(&redis, &["--metrics", &addr, "--max-record-bytes", "1000"]);
    send_lines(proxy.tcp_port, "ok", 20);
    send_tcp(proxy.tcp_port, &[&[0u8, 0, 0, 3], b"bad"]);
    send_tcp(proxy.tcp_port, &[&[0u8, 0, 0x10, 0], &[b'x'; 4096]]);
    redis.wait_for_len("logstash", 20, WAIT);
    let text = poll(WAIT, || {
        let t = metrics(&addr);
        (metric(&t, "pystash_records_received_total ") == 22).then_some(t)
    })
    .expect("all frames counted");
    assert_eq!(
        metric(
            &text,
            "pystash_records_rejected_total{reason=\"bad_pickle\"} "
        ),
        1
    );
    assert_eq!(
        metric(
            &text,
            "pystash_records_rejected_total{reason=\"oversized\"} "
        ),
        1
    );
    let pushed = metric(&text, "pystash_records_pushed_total ");
    assert_eq!(pushed, 20);
    assert!(metric(&text, "pystash_redis_rtt_seconds_count ") >= 1);
    proxy.stop().assert_clean_exit();
}

#[test]
fn unix_socket_mode_and_url_file() {
    use std::os::unix::fs::PermissionsExt;
    let redis = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let dir = TempDir::new("mode");
    let sock = dir.path().join("p.sock");
    let url_file = dir.path().join("url");
    std::fs::write(
        &url_file,
        format!("redis://:s3cret@127.0.0.1:{}/2\n", redis.port),
    )
    .unwrap();
    let proxy = Pystash::start(
        &redis,
        &[
            "--unix",
            sock.to_str().unwrap(),
            "--unix-mode",
            "600",
            "--redis-url-file",
            url_file.to_str().unwrap(),
        ],
    );
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    s.write_all(b"{\"message\":\"via unix\"}\n").unwrap();
    drop(s);
    let mut c = redis.client_in(2);
    c.ok(&["AUTH", "s3cret"]);
    let got = poll(WAIT, || (c.llen("logstash") == 1).then_some(())).is_some();
    assert!(got, "the record reached db 2");
    proxy.stop().assert_clean_exit();
    assert!(!sock.exists(), "socket removed at exit");
}
