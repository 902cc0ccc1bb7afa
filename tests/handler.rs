//! The logging handlers against real destinations: TCP, UDP and unix listeners opened here, a
//! real `redis-server` on a free port, and the real pystash binary as a proxy.
//!
//! Every wait is bounded; every process started here is killed by its PID on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::LevelFilter;
use pystash::event::LogstashVersion;
use pystash::handler::log::Logger;
use pystash::handler::{Builder, Destination, Handle, OnFull};
use pystash::redis::resp;
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use serde_json::{json, Value as Json};

/// Upper bound of every wait for delivery.
const WAIT: Duration = Duration::from_secs(10);

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pystash-handler-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A logger for one test (the `log` macros take it with `logger:`), so tests do not share the
/// global one. The global max level must allow the records through.
fn logger(builder: Builder) -> (Logger, Handle) {
    log::set_max_level(LevelFilter::Trace);
    builder.level(LevelFilter::Trace).build_log().unwrap()
}

fn parse(line: &[u8]) -> Json {
    serde_json::from_slice(line)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(line)))
}

/// Asserts that `keys` occur in this order in the event's text (serde_json's map is sorted).
fn assert_key_order(line: &[u8], keys: &[&str]) {
    let text = String::from_utf8_lossy(line);
    let positions: Vec<usize> = keys
        .iter()
        .map(|k| {
            text.find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("no {k} in {text}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "{keys:?} in {text}"
    );
}

/// Lines a TCP listener receives, over every connection it accepts, in order.
fn tcp_lines(listener: TcpListener) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            for line in BufReader::new(stream).split(b'\n') {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

fn recv_lines(rx: &mpsc::Receiver<Vec<u8>>, n: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + WAIT;
    let mut lines = Vec::new();
    while lines.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("got {} of {n} events", lines.len()),
        }
    }
    lines
}

fn recv_n(rx: &mpsc::Receiver<Vec<u8>>, n: usize) -> Vec<Json> {
    recv_lines(rx, n).iter().map(|l| parse(l)).collect()
}

fn assert_recent_timestamp(event: &Json, key: &str) {
    let text = event[key].as_str().unwrap();
    assert_eq!(text.len(), 27, "{text}");
    assert!(text.ends_with('Z'));
    // Same day and hour as now, give or take a boundary: compare to the second by parsing.
    let secs = civil_to_unix(text);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - secs).abs() < 60, "{text} is not now");
}

/// Seconds of `YYYY-MM-DDTHH:MM:SS...`.
fn civil_to_unix(text: &str) -> i64 {
    let n = |range: std::ops::Range<usize>| text[range].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let (y, m) = if m <= 2 { (y - 1, m + 12) } else { (y, m) };
    let days = 365 * y + y / 4 - y / 100 + y / 400 + (153 * (m - 3) + 2) / 5 + d - 719_469;
    days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

#[derive(Debug)]
struct Failure;

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("payment declined")
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        static CAUSE: std::sync::OnceLock<std::io::Error> = std::sync::OnceLock::new();
        Some(CAUSE.get_or_init(|| std::io::Error::other("card expired")))
    }
}

#[test]
fn tcp_events_field_by_field() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let lines = tcp_lines(listener);
    let (logger, handle) = logger(
        Builder::new(Destination::Tcp(addr))
            .host("test-host")
            .message_type("rusttest")
            .tags(["t1", "t2"]),
    );
    let line = line!() + 1;
    log::warn!(logger: logger, user = "ada", n = -5, big = u64::MAX, ratio = 0.5, ok = true, list:? = vec![1, 2], tags = "mine"; "user {} logged in ✓", "ada");
    log::info!(logger: logger, target: "custom::target", "plain");
    let err = Failure;
    log::error!(logger: logger, err:err = err; "charge failed");
    log::trace!(logger: logger, "fine detail");
    let raw = recv_lines(&lines, 4);
    let events: Vec<Json> = raw.iter().map(|l| parse(l)).collect();

    let e = &events[0];
    assert_key_order(
        &raw[0],
        &[
            "@timestamp",
            "@version",
            "message",
            "host",
            "path",
            "tags",
            "type",
            "levelname",
            "logger",
            "module_path",
            "line",
            "user",
            "n",
            "big",
            "ratio",
            "ok",
            "list",
        ],
    );
    assert_recent_timestamp(e, "@timestamp");
    let mut expected = json!({
        "@version": 1,
        "message": "user ada logged in ✓",
        "host": "test-host",
        "path": file!(),
        "tags": ["t1", "t2", "mine"],
        "type": "rusttest",
        "levelname": "WARNING",
        "logger": module_path!(),
        "module_path": module_path!(),
        "line": line,
        "user": "ada",
        "n": -5,
        "big": u64::MAX,
        "ratio": 0.5,
        "ok": true,
        "list": "[1, 2]",
    });
    expected["@timestamp"] = e["@timestamp"].clone();
    assert_eq!(e, &expected);

    assert_eq!(events[1]["message"], "plain");
    assert_eq!(events[1]["logger"], "custom::target");
    assert_eq!(events[1]["module_path"], module_path!());
    assert_eq!(events[1]["levelname"], "INFO");
    assert_eq!(events[1]["tags"], json!(["t1", "t2"]));

    let e = &events[2];
    assert_eq!(e["levelname"], "ERROR");
    assert_eq!(e["err"], "payment declined");
    assert_eq!(e["exc_info"], "payment declined\nCaused by: card expired");
    assert_eq!(e["filename"], "handler.rs");
    assert!(e["lineno"].as_u64().unwrap() > u64::from(line));
    assert_eq!(events[3]["levelname"], "TRACE");

    let stats = handle.shutdown(WAIT);
    assert_eq!((stats.accepted, stats.sent, stats.dropped()), (4, 4, 0));
}

/// Logs while being formatted for another record.
struct Noisy<'a>(&'a Logger);

impl std::fmt::Display for Noisy<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        log::info!(logger: self.0, "inner");
        f.write_str("outer")
    }
}

#[test]
fn logging_while_formatting_a_record_is_safe() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let lines = tcp_lines(listener);
    let (logger, handle) = logger(Builder::new(Destination::Tcp(addr)));
    log::info!(logger: logger, "{} {}", Noisy(&logger), Noisy(&logger));
    let events = recv_n(&lines, 3);
    let messages: Vec<&str> = events
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["inner", "inner", "outer outer"]);
    assert_eq!(handle.shutdown(WAIT).sent, 3);
}

#[test]
fn udp_one_event_per_datagram_v0() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    let (logger, handle) = logger(
        Builder::new(Destination::Udp(addr))
            .host("h")
            .message_type("t")
            .version(LogstashVersion::V0),
    );
    for i in 0..20 {
        log::info!(logger: logger, i = i; "datagram {i}");
    }
    let mut buf = vec![0u8; 65536];
    for i in 0..20 {
        let n = socket.recv(&mut buf).expect("a datagram");
        let e = parse(&buf[..n]);
        assert_eq!(e["@message"], format!("datagram {i}"));
        assert_eq!(e["@source_host"], "h");
        assert_eq!(e["@type"], "t");
        assert_eq!(e["@source_path"], file!());
        assert_eq!(e["@source"], format!("t://h/{}", file!()));
        assert_eq!(e["@tags"], json!([]));
        assert_eq!(e["@fields"]["levelname"], "INFO");
        assert_eq!(e["@fields"]["logger"], module_path!());
        assert_eq!(e["@fields"]["i"], i);
        assert!(e.get("@version").is_none());
    }
    assert!(handle.flush(WAIT));
    let stats = handle.stats();
    assert_eq!((stats.accepted, stats.sent), (20, 20));
}

#[test]
fn udp_unreachable_and_oversized_are_counted() {
    let port = free_udp_port();
    let (logger, handle) = logger(Builder::new(Destination::Udp(format!("127.0.0.1:{port}"))));
    let big = "x".repeat(70_000);
    log::info!(logger: logger, "{big}");
    // Nothing listens: the kernel reports ECONNREFUSED on a send after the first one.
    for _ in 0..10 {
        log::info!(logger: logger, "nobody hears this");
        thread::sleep(Duration::from_millis(5));
    }
    assert!(handle.flush(WAIT));
    let stats = handle.stats();
    assert_eq!(stats.dropped_oversized, 1);
    assert!(stats.dropped_unavailable >= 1, "{stats:?}");
    assert_eq!(stats.sent + stats.dropped(), 11);
}

#[test]
fn unix_stream_lines() {
    let dir = temp_dir("unix");
    let path = dir.join("logstash.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        for line in BufReader::new(stream).split(b'\n') {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let (logger, handle) = logger(Builder::new(Destination::Unix(path)).host("u"));
    for i in 0..100 {
        log::debug!(logger: logger, seq = i; "unix {i}");
    }
    drop(handle); // delivers what is queued
    let events = recv_n(&rx, 100);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i);
        assert_eq!(e["levelname"], "DEBUG");
        assert_eq!(e["host"], "u");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A private redis-server, killed by PID on drop.
struct RedisServer {
    child: Child,
    port: u16,
    args: Vec<String>,
}

impl RedisServer {
    fn start(args: &[&str]) -> Self {
        Self::start_on(
            free_tcp_port(),
            args.iter().map(|a| a.to_string()).collect(),
        )
    }

    fn start_on(port: u16, args: Vec<String>) -> Self {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let server = RedisServer { child, port, args };
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn restart(&mut self) {
        self.stop();
        *self = RedisServer::start_on(self.port, self.args.clone());
    }

    fn client(&self, password: Option<&str>, db: u32) -> Redis {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut redis = Redis {
            stream,
            buf: Vec::new(),
        };
        if let Some(password) = password {
            redis.command(&[b"AUTH", password.as_bytes()]);
        }
        redis.command(&[b"SELECT", db.to_string().as_bytes()]);
        redis
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A minimal Redis client: our RESP encoder out, redis-protocol's decoder in.
struct Redis {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Redis {
    fn command(&mut self, args: &[&[u8]]) -> OwnedFrame {
        let mut out = Vec::new();
        resp::write_command(&mut out, args);
        self.stream.write_all(&out).unwrap();
        loop {
            if let Some((frame, used)) = decode(&self.buf).unwrap() {
                self.buf.drain(..used);
                return frame;
            }
            let mut chunk = [0u8; 65536];
            let n = self.stream.read(&mut chunk).expect("redis replies");
            assert!(n > 0, "redis closed the connection");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn llen(&mut self, key: &str) -> i64 {
        match self.command(&[b"LLEN", key.as_bytes()]) {
            OwnedFrame::Integer(n) => n,
            other => panic!("LLEN: {other:?}"),
        }
    }

    /// Waits until the list holds `n` events, and returns them.
    fn wait_events(&mut self, key: &str, n: usize) -> Vec<Json> {
        let deadline = Instant::now() + WAIT;
        loop {
            let len = self.llen(key);
            if len as usize >= n {
                break;
            }
            assert!(Instant::now() < deadline, "{len} of {n} events in {key}");
            thread::sleep(Duration::from_millis(20));
        }
        match self.command(&[b"LRANGE", key.as_bytes(), b"0", b"-1"]) {
            OwnedFrame::Array(items) => items
                .into_iter()
                .map(|f| match f {
                    OwnedFrame::BulkString(b) => parse(&b),
                    other => panic!("not a bulk string: {other:?}"),
                })
                .collect(),
            other => panic!("LRANGE: {other:?}"),
        }
    }
}

#[test]
fn redis_batched_rpush_with_auth_and_select() {
    let server = RedisServer::start(&["--requirepass", "s3cret"]);
    let url = format!("redis://:s3cret@127.0.0.1:{}/2", server.port);
    let (logger, handle) = logger(
        Builder::new(Destination::redis(&url).unwrap())
            .redis_key("app-logs")
            .message_type("svc"),
    );
    for i in 0..2000 {
        log::info!(logger: logger, seq = i; "record {i}");
    }
    let mut redis = server.client(Some("s3cret"), 2);
    let events = redis.wait_events("app-logs", 2000);
    assert_eq!(events.len(), 2000);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i, "order kept");
        assert_eq!(e["message"], format!("record {i}"));
        assert_eq!(e["type"], "svc");
    }
    // Nothing went to database 0.
    assert_eq!(server.client(Some("s3cret"), 0).llen("app-logs"), 0);
    let stats = handle.shutdown(WAIT);
    assert_eq!((stats.sent, stats.dropped(), stats.errors), (2000, 0, 0));
}

#[test]
fn redis_wrong_password_is_retried_and_reported() {
    let server = RedisServer::start(&["--requirepass", "right"]);
    let url = format!("redis://:wrong@127.0.0.1:{}", server.port);
    let (logger, handle) = logger(Builder::new(Destination::redis(&url).unwrap()));
    log::info!(logger: logger, "never delivered");
    assert!(!handle.flush(Duration::from_millis(300)));
    let stats = handle.stats();
    assert!(stats.errors >= 1 && stats.sent == 0, "{stats:?}");
    let last = handle.last_error().unwrap();
    assert!(last.contains("AUTH refused"), "{last}");
}

#[test]
fn redis_restart_reconnects_and_delivers() {
    let mut server = RedisServer::start(&[]);
    let url = format!("redis://127.0.0.1:{}", server.port);
    let (logger, handle) = logger(Builder::new(Destination::redis(&url).unwrap()));
    for i in 0..10 {
        log::info!(logger: logger, seq = i; "before");
    }
    assert!(handle.flush(WAIT));
    assert_eq!(server.client(None, 0).wait_events("logstash", 10).len(), 10);

    server.stop();
    for i in 10..30 {
        log::info!(logger: logger, seq = i; "during");
    }
    // Redis is down: nothing can be delivered, and flush says so in bounded time.
    let started = Instant::now();
    assert!(!handle.flush(Duration::from_millis(200)));
    assert!(started.elapsed() < Duration::from_secs(2));
    server.restart();
    assert!(handle.flush(WAIT));
    // The restarted server kept nothing (--save ''): it holds exactly the records of the outage.
    let events = server.client(None, 0).wait_events("logstash", 20);
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (10..30).collect::<Vec<_>>());
    let stats = handle.stats();
    assert_eq!(stats.sent, 30);
    assert!(stats.reconnects >= 1 && stats.errors >= 1, "{stats:?}");
}

#[test]
fn tcp_listener_restart_reconnects_and_delivers() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (logger, handle) = logger(Builder::new(Destination::Tcp(addr.to_string())));
    log::info!(logger: logger, seq = 0; "first");
    let (conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    let mut first = String::new();
    BufReader::new(&conn).read_line(&mut first).unwrap();
    assert_eq!(parse(first.trim_end().as_bytes())["seq"], 0);
    // The listener goes away, and the connection with it.
    drop(listener);
    conn.shutdown(std::net::Shutdown::Both).unwrap();
    drop(conn);
    thread::sleep(Duration::from_millis(100));
    for i in 1..=50 {
        log::info!(logger: logger, seq = i; "during the outage");
    }
    assert!(!handle.flush(Duration::from_millis(200)));
    let lines = tcp_lines(TcpListener::bind(addr).unwrap());
    let events = recv_n(&lines, 50);
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    assert!(handle.flush(WAIT));
    let stats = handle.stats();
    assert_eq!((stats.sent, stats.dropped()), (51, 0));
    assert!(stats.reconnects >= 1);
}

#[test]
fn queue_full_drops_and_counts_then_delivers_what_it_kept() {
    let port = free_tcp_port();
    let (logger, handle) = logger(
        Builder::new(Destination::Tcp(format!("127.0.0.1:{port}")))
            .queue_capacity(10)
            .max_batch_records(5),
    );
    for i in 0..100 {
        log::info!(logger: logger, seq = i; "flood");
    }
    let stats = handle.stats();
    assert_eq!(stats.accepted + stats.dropped_full, 100);
    // The queue holds 10, the stream's pending batch 5 more.
    assert!(stats.accepted <= 15 && stats.accepted >= 10, "{stats:?}");
    let lines = tcp_lines(TcpListener::bind(("127.0.0.1", port)).unwrap());
    assert!(handle.flush(WAIT));
    let events = recv_n(&lines, stats.accepted as usize);
    assert_eq!(events[0]["seq"], 0);
    let stats = handle.stats();
    assert_eq!(stats.sent, stats.accepted);
    assert!(lines.recv_timeout(Duration::from_millis(100)).is_err());
}

#[test]
fn block_when_full_waits_for_room() {
    let port = free_tcp_port();
    let (logger, handle) = logger(
        Builder::new(Destination::Tcp(format!("127.0.0.1:{port}")))
            .queue_capacity(5)
            .max_batch_records(5)
            .on_full(OnFull::Block),
    );
    let (done_tx, done_rx) = mpsc::channel();
    let app = thread::spawn(move || {
        for i in 0..50 {
            log::info!(logger: logger, seq = i; "blocking");
        }
        done_tx.send(()).unwrap();
    });
    // The destination is down: the logging thread is held up once queue and batch are full.
    assert!(done_rx.recv_timeout(Duration::from_millis(300)).is_err());
    let lines = tcp_lines(TcpListener::bind(("127.0.0.1", port)).unwrap());
    done_rx
        .recv_timeout(WAIT)
        .expect("the logging thread goes on");
    app.join().unwrap();
    let events = recv_n(&lines, 50);
    assert_eq!(events[49]["seq"], 49);
    let stats = handle.shutdown(WAIT);
    assert_eq!((stats.accepted, stats.sent, stats.dropped()), (50, 50, 0));
}

#[test]
fn drop_waits_a_bounded_time_and_counts_what_it_gives_up() {
    let port = free_tcp_port();
    let (logger, handle) = logger(
        Builder::new(Destination::Tcp(format!("127.0.0.1:{port}")))
            .flush_timeout(Duration::from_millis(300)),
    );
    for _ in 0..20 {
        log::info!(logger: logger, "lost");
    }
    let started = Instant::now();
    let stats = handle.shutdown(Duration::from_millis(300));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!((stats.sent, stats.dropped_shutdown), (0, 20), "{stats:?}");
    // After shutdown, records are dropped at once and counted.
    log::info!(logger: logger, "too late");
    assert_eq!(logger.sender().stats().dropped_shutdown, 21);
}

#[test]
fn drop_delivers_what_is_queued() {
    let server = RedisServer::start(&[]);
    let url = format!("redis://127.0.0.1:{}", server.port);
    let (logger, handle) = logger(Builder::new(Destination::redis(&url).unwrap()));
    for i in 0..5000 {
        log::info!(logger: logger, seq = i; "exit");
    }
    drop(handle);
    // Delivered before drop returned: no waiting here.
    let mut redis = server.client(None, 0);
    assert_eq!(redis.llen("logstash"), 5000);
    let stats = logger.sender().stats();
    assert_eq!((stats.sent, stats.dropped()), (5000, 0));
}

/// The pystash binary on free ports, killed by PID on drop.
struct Proxy {
    child: Child,
    tcp: u16,
    udp: u16,
    unix: PathBuf,
}

impl Proxy {
    fn start(redis_port: u16, dir: &Path) -> Self {
        let (tcp, udp) = (free_tcp_port(), free_udp_port());
        let unix = dir.join("pystash.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_pystash"))
            .args([
                "--tcp-port",
                &tcp.to_string(),
                "--udp-port",
                &udp.to_string(),
            ])
            .arg("--unix")
            .arg(&unix)
            .args([
                "--redis-host",
                "127.0.0.1",
                "--redis-port",
                &redis_port.to_string(),
            ])
            .args(["--message-type", "proxied", "--host-name", "proxy-host"])
            .args(["--logstash-tags", "via-proxy", "--workers", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let proxy = Proxy {
            child,
            tcp,
            udp,
            unix,
        };
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", tcp)).is_err() || !proxy.unix.exists() {
            assert!(Instant::now() < deadline, "pystash did not start");
            thread::sleep(Duration::from_millis(20));
        }
        proxy
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn through_a_pystash_proxy_over_tcp_udp_and_unix() {
    let server = RedisServer::start(&[]);
    let dir = temp_dir("proxy");
    let proxy = Proxy::start(server.port, &dir);
    let destinations = [
        Destination::PystashTcp(format!("127.0.0.1:{}", proxy.tcp)),
        Destination::PystashUdp(format!("127.0.0.1:{}", proxy.udp)),
        Destination::PystashUnix(proxy.unix.clone()),
    ];
    for (i, destination) in destinations.into_iter().enumerate() {
        let (logger, handle) = logger(
            Builder::new(destination)
                .tags(["app-tag"])
                // Ignored: the proxy's own --message-type and --host-name apply.
                .message_type("not-used")
                .host("not-used"),
        );
        log::warn!(logger: logger, via = i, tags = "own"; "through the proxy {}", i);
        drop(handle);
    }
    let events = server.client(None, 0).wait_events("logstash", 3);
    let mut vias: Vec<i64> = events.iter().map(|e| e["via"].as_i64().unwrap()).collect();
    vias.sort();
    assert_eq!(vias, [0, 1, 2]);
    for e in &events {
        let via = e["via"].as_i64().unwrap();
        assert_eq!(e["message"], format!("through the proxy {via}"));
        assert_eq!(e["type"], "proxied");
        assert_eq!(e["host"], "proxy-host");
        assert_eq!(e["tags"], json!(["via-proxy", "app-tag", "own"]));
        assert_eq!(e["levelname"], "WARNING");
        assert_eq!(e["logger"], module_path!());
        assert_eq!(e["path"], file!());
        assert_eq!(e["module_path"], module_path!());
        assert!(e["line"].as_u64().is_some());
        assert_recent_timestamp(e, "@timestamp");
        // The record's bookkeeping attributes stay out of the event, as for Python records.
        for absent in [
            "levelno", "process", "msecs", "module", "name", "msg", "created",
        ] {
            assert!(e.get(absent).is_none(), "{absent} in {e}");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn python_example_app_through_the_proxy() {
    let server = RedisServer::start(&[]);
    let dir = temp_dir("python");
    let proxy = Proxy::start(server.port, &dir);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/example_app.py");
    let status = Command::new("python3")
        .arg(&script)
        .args(["127.0.0.1", &proxy.tcp.to_string(), &proxy.udp.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("python3 runs");
    assert!(status.success());
    // Each record kind goes once through SocketHandler (TCP) and once through DatagramHandler.
    let events = server.client(None, 0).wait_events("logstash", 2 * 8);
    let by = |kind: &str, transport: &str| -> Json {
        events
            .iter()
            .find(|e| e["kind"] == kind && e["transport"] == transport)
            .unwrap_or_else(|| panic!("no {kind} over {transport}"))
            .clone()
    };
    for transport in ["tcp", "udp"] {
        assert_eq!(by("plain", transport)["message"], "plain message");
        assert_eq!(by("args", transport)["message"], "user ada has 3 items");
        assert_eq!(by("unicode", transport)["message"], "héllo wörld ✓ 日本");
        let extras = by("extras", transport);
        assert_eq!(extras["an_int"], 42);
        assert_eq!(extras["a_list"], json!([1, "two", 3.0]));
        assert_eq!(extras["a_none"], Json::Null);
        assert_eq!(
            by("tags", transport)["tags"],
            json!(["via-proxy", "billing", "eu"])
        );
        let exc = by("exception", transport);
        assert!(exc["exc_info"]
            .as_str()
            .unwrap()
            .contains("ZeroDivisionError"));
        assert!(by("stack", transport)["stack_info"]
            .as_str()
            .unwrap()
            .starts_with("Stack (most recent call last)"));
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg(feature = "tracing")]
#[test]
fn tracing_layer_with_span_fields() {
    use tracing_subscriber::prelude::*;

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    let (layer, handle) = Builder::new(Destination::Udp(addr))
        .host("h")
        .build_layer()
        .unwrap();
    let subscriber = tracing_subscriber::registry().with(layer);
    let line = tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("request", request_id = 7, path = "/pay");
        let _entered = span.enter();
        let inner = tracing::debug_span!("db", table = "orders");
        let _inner = inner.enter();
        let err = Failure;
        let line = line!() + 1;
        tracing::warn!(
            user = "ada",
            amount = 2.5,
            error = &err as &dyn std::error::Error,
            "payment {} failed",
            12
        );
        line
    });
    let mut buf = vec![0u8; 65536];
    let n = socket.recv(&mut buf).unwrap();
    let e = parse(&buf[..n]);
    assert_eq!(e["message"], "payment 12 failed");
    assert_eq!(e["levelname"], "WARNING");
    assert_eq!(e["logger"], module_path!());
    assert_eq!(e["module_path"], module_path!());
    assert_eq!(e["line"], line);
    assert_eq!(e["request_id"], 7);
    // A field named like a fixed field replaces its value, as a Python extra does.
    assert_eq!(e["path"], "/pay");
    assert_eq!(e["table"], "orders");
    assert_eq!(e["user"], "ada");
    assert_eq!(e["amount"], 2.5);
    assert_eq!(e["error"], "payment declined");
    assert_eq!(e["exc_info"], "payment declined\nCaused by: card expired");
    assert_eq!(handle.shutdown(WAIT).sent, 1);
}
