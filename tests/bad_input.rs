//! Hostile and broken input, interleaved with good records: every good record must arrive, the
//! proxy must keep serving, no pickle may run code, and the final stats line must count the
//! rejections.
//!
//! Each bad input ends either as one rejection or as one event (some inputs, such as a record
//! with a code-running extra, may legitimately become an event with that extra as a string), so
//! `rejected == bad inputs - events that are not good records` is exact.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use common::expect::assert_none;
use common::*;

const WAIT: Duration = Duration::from_secs(30);

/// Frames from `tests/clients/frames.py`.
struct Frames {
    good: Vec<(String, Vec<u8>)>,
    named: HashMap<String, Vec<u8>>,
    touch: PathBuf,
    _dir: TempDir,
}

impl Frames {
    fn build(big_bytes: usize) -> Frames {
        let dir = TempDir::new("touch");
        let touch = dir.path().join("pwned");
        let out = run_client(
            "frames.py",
            &[
                "--touch",
                touch.to_str().expect("utf-8 path"),
                "--good",
                "60",
                "--big-bytes",
                &big_bytes.to_string(),
            ],
        );
        let good = out
            .at("good")
            .as_array()
            .iter()
            .map(|g| {
                (
                    g.at("message").as_str().expect("message").to_owned(),
                    unhex(g.at("frame").as_str().expect("hex")),
                )
            })
            .collect();
        let Json::Obj(pairs) = out.at("frames") else {
            panic!("frames is not an object")
        };
        let named = pairs
            .iter()
            .map(|(k, v)| (k.clone(), unhex(v.as_str().expect("hex"))))
            .collect();
        Frames {
            good,
            named,
            touch,
            _dir: dir,
        }
    }

    fn frame(&self, name: &str) -> &[u8] {
        &self.named[name]
    }
}

/// Hands out good frames in order, remembering which messages must arrive and in which
/// per-connection order.
struct Good<'a> {
    frames: &'a Frames,
    next: usize,
    expected: Vec<String>,
    /// Pairs (earlier, later) sent on one connection.
    ordered: Vec<(String, String)>,
}

impl<'a> Good<'a> {
    fn new(frames: &'a Frames) -> Good<'a> {
        Good {
            frames,
            next: 0,
            expected: Vec::new(),
            ordered: Vec::new(),
        }
    }

    fn take(&mut self) -> (&'a [u8], String) {
        let (msg, frame) = &self.frames.good[self.next];
        self.next += 1;
        self.expected.push(msg.clone());
        (frame, msg.clone())
    }

    /// A JSON line that is not a record, identified by `sentinel`.
    fn json_line(&mut self, id: &str) -> Vec<u8> {
        self.expected.push(format!("sentinel:{id}"));
        format!("{{\"sentinel\":\"{id}\"}}\n").into_bytes()
    }

    /// good, `bad`, good on one connection; the second good must arrive, after the first.
    fn sandwich(&mut self, port: u16, bad: &[u8]) {
        let (before, b) = self.take();
        let (after, a) = self.take();
        self.ordered.push((b, a));
        send_tcp(port, &[before, bad, after]);
    }

    /// The same with JSON lines around `bad`.
    fn json_sandwich(&mut self, port: u16, id: &str, bad: &[u8]) {
        let before = self.json_line(&format!("{id}-before"));
        let after = self.json_line(&format!("{id}-after"));
        self.ordered.push((
            format!("sentinel:{id}-before"),
            format!("sentinel:{id}-after"),
        ));
        send_tcp(port, &[&before, bad, &after]);
    }
}

/// The key an event is known by: its message, or `sentinel:<id>` for the JSON sentinels.
fn event_key(e: &Json) -> Option<String> {
    if let Some(s) = e.get("sentinel").and_then(Json::as_str) {
        return Some(format!("sentinel:{s}"));
    }
    e.get("message").and_then(Json::as_str).map(str::to_owned)
}

/// Parses the list; an item too deeply nested for serde_json counts as an unknown event.
fn read_events(redis: &RedisServer) -> (Vec<Json>, usize, Vec<String>) {
    let mut events = Vec::new();
    let mut unparsed = 0;
    let mut failures = Vec::new();
    for (i, raw) in redis.raw_events_in(0, "logstash").iter().enumerate() {
        match Json::parse(raw) {
            Ok(j) => events.push(j),
            Err(e) if e.to_string().contains("recursion limit") => unparsed += 1,
            Err(e) => failures.push(format!(
                "item {i} is not JSON ({e}): {}",
                String::from_utf8_lossy(&raw[..raw.len().min(300)])
            )),
        }
    }
    (events, unparsed, failures)
}

/// Checks arrival and order of the good records; returns events that are none of them.
fn check_good(events: &[Json], good: &Good<'_>, failures: &mut Vec<String>) -> Vec<Json> {
    let mut pos: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        if let Some(k) = event_key(e) {
            pos.entry(k).or_default().push(i);
        }
    }
    for m in &good.expected {
        match pos.get(m).map(Vec::len) {
            None => failures.push(format!("good record {m:?} did not arrive")),
            Some(1) => {}
            Some(n) => failures.push(format!("good record {m:?} arrived {n} times")),
        }
    }
    for (a, b) in &good.ordered {
        if let (Some(pa), Some(pb)) = (pos.get(a), pos.get(b)) {
            if pa[0] > pb[0] {
                failures.push(format!(
                    "{a:?} and {b:?} (one connection) arrived out of order"
                ));
            }
        }
    }
    events
        .iter()
        .filter(|e| event_key(e).is_none_or(|k| !good.expected.contains(&k)))
        .cloned()
        .collect()
}

/// Prints what happened (visible with --nocapture), then fails on any difference.
fn finish(what: &str, failures: &[String]) {
    eprintln!("{what}");
    assert_none(what, failures);
}

fn stats_line(stopped: &Stopped) -> String {
    let mut kv: Vec<_> = stopped.stats.iter().collect();
    kv.sort();
    kv.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Framed garbage at the default --max-record-bytes: truncation, bad opcodes, a list instead
/// of a record, code-running reduces (bare and inside a record), nesting 100,000 deep (bare
/// and inside a record), invalid UTF-8, deep JSON, broken JSON; over TCP and UDP.
#[test]
fn framed_garbage_is_rejected_and_neighbours_arrive() {
    let frames = Frames::build(8192);
    let redis = RedisServer::start();
    let proxy = Pystash::start(&redis, &["--host-name", "h"]);
    let (tcp, udp) = (proxy.tcp_port, proxy.udp_port);
    let mut good = Good::new(&frames);

    // Good records before anything bad, on their own connection.
    let (g0, _) = good.take();
    let (g1, _) = good.take();
    send_tcp(tcp, &[g0, g1]);

    // Framed bad pickles: the framing stays in step, so the next record on the same
    // connection must arrive.
    let mut bad_inputs = 0;
    let framed = [
        "bad_opcode",
        "list_pickle",
        "os_system_bare",
        "deep_bare",
        "os_system_in_record",
        "eval_in_record",
        "deep_in_record",
    ];
    for name in framed {
        good.sandwich(tcp, frames.frame(name));
        bad_inputs += 1;
    }

    // Closed mid-frame: what came before on that connection still arrives.
    let (g, _) = good.take();
    send_tcp(tcp, &[g, frames.frame("truncated")]);
    bad_inputs += 1;

    // JSON lines: invalid UTF-8, nesting 100,000 deep (array and object), broken JSON.
    let mut deep_array = vec![b'['; 100_000];
    deep_array.extend(vec![b']'; 100_000]);
    deep_array.push(b'\n');
    let mut deep_object = b"{\"a\":".repeat(100_000);
    deep_object.push(b'1');
    deep_object.extend(vec![b'}'; 100_000]);
    deep_object.push(b'\n');
    let lines: [(&str, Vec<u8>); 4] = [
        (
            "utf8",
            b"{\"message\":\"bad \xff\xfe utf-8 \xc3\x28\"}\n".to_vec(),
        ),
        ("deep-array", deep_array),
        ("deep-object", deep_object),
        ("broken", b"{\"message\": \"broken json\", \n".to_vec()),
    ];
    for (id, line) in &lines {
        good.json_sandwich(tcp, id, line);
        bad_inputs += 1;
    }

    // Datagrams between good datagrams.
    let truncated_dgram = frames.frame("truncated");
    let (u0, _) = good.take();
    let (u1, _) = good.take();
    let (u2, _) = good.take();
    send_udp(
        udp,
        &[
            u0,
            frames.frame("bad_opcode"),
            truncated_dgram,
            u1,
            b"{\"message\":\"udp \xff\xfe\"}",
            frames.frame("list_pickle"),
            u2,
        ],
    );
    bad_inputs += 4;

    // Still serving after all of it.
    let (last, _) = good.take();
    send_tcp(tcp, &[last]);

    let expected = good.expected.len();
    redis.wait_for_len("logstash", expected, WAIT);
    redis.wait_for_quiet("logstash", Duration::from_millis(500), WAIT);
    let stopped = proxy.stop();
    let (events, unparsed, mut failures) = read_events(&redis);
    let unknown = check_good(&events, &good, &mut failures);

    if frames.touch.exists() {
        failures.push(format!(
            "a pickle ran code: {} exists",
            frames.touch.display()
        ));
    }
    // A record with a code-running extra may arrive, with that extra as a readable string.
    for e in &unknown {
        let msg = e.get("message").and_then(Json::as_str).unwrap_or("");
        if msg.starts_with("evil ") && msg != "evil deep" {
            match e.get("evil") {
                Some(Json::Str(_)) => {}
                other => failures.push(format!(
                    "[{msg}]: the `evil` extra should be a string rendering, got {:?}",
                    other.map(|v| v.compact(200))
                )),
            }
        }
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
        let s = |k: &str| stopped.stat(k);
        let became_events = (unknown.len() + unparsed) as u64;
        let want_rejected = bad_inputs as u64 - became_events.min(bad_inputs as u64);
        if s("rejected") != want_rejected {
            failures.push(format!(
                "rejected={} but {bad_inputs} bad inputs of which {became_events} became events -> expected {want_rejected}",
                s("rejected")
            ));
        }
        // The reasons that no other input here can produce.
        let lower_bounds = [
            ("rejected_truncated", 1, "TCP connection closed mid-frame"),
            (
                "rejected_bad_utf8",
                2,
                "JSON line and datagram with invalid UTF-8",
            ),
            ("rejected_bad_pickle", 2, "invalid opcode 0xff, TCP and UDP"),
        ];
        for (key, min, why) in lower_bounds {
            if s(key) < min {
                failures.push(format!("{key}={} < {min} ({why})", s(key)));
            }
        }
        let pickle_kinds = s("rejected_bad_pickle") + s("rejected_not_a_record");
        if pickle_kinds < 4 {
            failures.push(format!(
                "rejected_bad_pickle + rejected_not_a_record = {pickle_kinds} < 4 (bad opcode and a list, each over TCP and UDP)"
            ));
        }
        if s("pushed") != events.len() as u64 + unparsed as u64 {
            failures.push(format!(
                "pushed={} but the list holds {}",
                s("pushed"),
                events.len() + unparsed
            ));
        }
        if s("dropped") != 0 {
            failures.push(format!("dropped={}", s("dropped")));
        }
    }
    let unknown_msgs: Vec<String> = unknown.iter().map(|e| e.compact(150)).collect();
    finish(
        &format!(
            "framed garbage (stats: {}; {} non-good events: {unknown_msgs:?})",
            stats_line(&stopped),
            unknown.len() + unparsed
        ),
        &failures,
    );
}

/// With --max-record-bytes 4096: an oversized frame, line and datagram are skipped, and the
/// record right after the oversized frame or line on the SAME connection arrives.
#[test]
fn oversized_records_are_skipped_on_the_same_connection() {
    let frames = Frames::build(8192);
    let redis = RedisServer::start();
    let proxy = Pystash::start(&redis, &["--max-record-bytes", "4096", "--host-name", "h"]);
    let (tcp, udp) = (proxy.tcp_port, proxy.udp_port);
    let mut good = Good::new(&frames);
    assert!(frames.frame("big").len() > 8192);

    good.sandwich(tcp, frames.frame("big"));
    let mut long_line = b"{\"message\":\"".to_vec();
    long_line.extend(vec![b'x'; 6000]);
    long_line.extend_from_slice(b"\"}\n");
    good.json_sandwich(tcp, "long-line", &long_line);
    let (u0, _) = good.take();
    let (u1, _) = good.take();
    send_udp(udp, &[u0, frames.frame("big"), u1]);

    let expected = good.expected.len();
    redis.wait_for_len("logstash", expected, WAIT);
    redis.wait_for_quiet("logstash", Duration::from_millis(300), WAIT);
    let stopped = proxy.stop();
    let (events, _, mut failures) = read_events(&redis);
    let unknown = check_good(&events, &good, &mut failures);
    if !unknown.is_empty() {
        failures.push(format!(
            "oversized input became events: {:?}",
            unknown.iter().map(|e| e.compact(150)).collect::<Vec<_>>()
        ));
    }
    if !stopped.status.success() {
        failures.push(format!("exit status {}", stopped.status));
    }
    if stopped.stats.is_empty() {
        failures.push(format!("no stats line; stderr tail:\n{}", stopped.tail(30)));
    } else {
        for (key, want) in [
            ("rejected_oversized", 3),
            ("rejected", 3),
            ("pushed", expected as u64),
            ("dropped", 0),
        ] {
            if stopped.stat(key) != want {
                failures.push(format!("{key}: expected {want}, got {}", stopped.stat(key)));
            }
        }
    }
    finish(
        &format!("oversized (stats: {})", stats_line(&stopped)),
        &failures,
    );
}

/// A length prefix of 0xFFFFFFFF (TCP and UDP) and of 0: rejected, and the proxy serves the
/// next connection.
#[test]
fn impossible_length_prefixes_are_rejected() {
    let frames = Frames::build(100);
    let redis = RedisServer::start();
    let proxy = Pystash::start(&redis, &["--host-name", "h"]);
    let (tcp, udp) = (proxy.tcp_port, proxy.udp_port);
    let mut good = Good::new(&frames);

    let (g, _) = good.take();
    let mut huge = vec![0xff; 4];
    huge.extend_from_slice(&g[4..]);
    send_tcp(tcp, &[&huge]);
    send_udp(udp, &[&huge]);
    send_tcp(tcp, &[&[0, 0, 0, 0]]);
    good.expected.clear();

    let (a, _) = good.take();
    send_tcp(tcp, &[a]);
    let (b, _) = good.take();
    send_udp(udp, &[b]);

    redis.wait_for_len("logstash", good.expected.len(), WAIT);
    redis.wait_for_quiet("logstash", Duration::from_millis(300), WAIT);
    let stopped = proxy.stop();
    let (events, _, mut failures) = read_events(&redis);
    let unknown = check_good(&events, &good, &mut failures);
    eprintln!(
        "length prefixes: {} events from the bad input: {:?}",
        unknown.len(),
        unknown.iter().map(|e| e.compact(120)).collect::<Vec<_>>()
    );
    // A stream byte other than 0x00 starts a text line (a real length prefix is below 16 MiB,
    // so its first byte is 0), so the bytes after 0xFFFFFFFF may legitimately come out as
    // `_jsonparsefailure` lines; anything else made of them is a bug.
    for e in &unknown {
        let tags = e.get("tags").map(Json::as_array).unwrap_or(&[]);
        if !tags.iter().any(|t| t.as_str() == Some("_jsonparsefailure")) {
            failures.push(format!(
                "a bad length prefix became an event: {}",
                e.compact(200)
            ));
        }
    }
    if !stopped.status.success() {
        failures.push(format!("exit status {}", stopped.status));
    }
    if stopped.stats.is_empty() {
        failures.push(format!("no stats line; stderr tail:\n{}", stopped.tail(30)));
    } else if stopped.stat("rejected") < 3 {
        failures.push(format!(
            "rejected={} < 3 (0xFFFFFFFF over TCP and UDP, 0 over TCP)",
            stopped.stat("rejected")
        ));
    }
    finish(
        &format!("length prefixes (stats: {})", stats_line(&stopped)),
        &failures,
    );
}

/// Pseudo-random bytes on TCP connections and in datagrams: counted, and good records on
/// other connections still arrive.
#[test]
fn random_bytes_do_not_stop_the_proxy() {
    let frames = Frames::build(100);
    let redis = RedisServer::start();
    let proxy = Pystash::start(&redis, &["--host-name", "h"]);
    let (tcp, udp) = (proxy.tcp_port, proxy.udp_port);
    let mut good = Good::new(&frames);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut random = |n: usize, first: u8| -> Vec<u8> {
        let mut v: Vec<u8> = (0..n)
            .map(|_| {
                // xorshift64*
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect();
        v[0] = first;
        v
    };
    let (g, _) = good.take();
    send_tcp(tcp, &[g]);
    for first in [0x00, b'{', 0x80, b'a', 0xff, 0x01] {
        let bytes = random(3000, first);
        // The proxy may close the connection early; a failed write is fine here.
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", tcp)) {
            let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
            let _ = s.write_all(&bytes);
            close(s);
        }
        let d = random(500, first);
        send_udp(udp, &[&d]);
        let (g, _) = good.take();
        send_tcp(tcp, &[g]);
    }
    // A connection that stays open with half a frame while others are served.
    let mut idle = common::tcp(tcp);
    idle.write_all(&frames.good[0].1[..10]).expect("write");
    let (g, _) = good.take();
    send_tcp(tcp, &[g]);

    redis.wait_for_len("logstash", good.expected.len(), WAIT);
    let mut failures = Vec::new();
    let (events, _, parse_failures) = read_events(&redis);
    failures.extend(parse_failures);
    check_good(&events, &good, &mut failures);
    drop(idle);
    let stopped = proxy.stop();
    if !stopped.status.success() {
        failures.push(format!("exit status {}", stopped.status));
    }
    if stopped.stats.is_empty() {
        failures.push(format!("no stats line; stderr tail:\n{}", stopped.tail(30)));
    } else if stopped.stat("rejected") < 6 {
        failures.push(format!(
            "rejected={} < 6 for 12 inputs of random bytes",
            stopped.stat("rejected")
        ));
    }
    finish(
        &format!("random bytes (stats: {})", stats_line(&stopped)),
        &failures,
    );
}
