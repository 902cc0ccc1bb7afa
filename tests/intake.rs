//! Good input end to end: CPython's real handlers (SocketHandler over TCP and a unix socket,
//! DatagramHandler over UDP), python-logstash's handlers and hand-written JSON lines go through a
//! real pystash into a real redis-server, and every event is compared field by field, with key
//! order, to what the client computed in Python.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::expect::{assert_none, check_records, compare, short};
use common::json::json_eq;
use common::*;

const HOST: &str = "test-host";
const WAIT: Duration = Duration::from_secs(30);

/// The layout the `full_*` tests configure: every option that shapes an event set.
fn configured(version: u8) -> Layout {
    Layout {
        version,
        host: HOST.to_owned(),
        kind: "mytype".to_owned(),
        tags: vec!["a".to_owned(), "b".to_owned()],
    }
}

/// Counters a run with only good input must end with.
fn clean_stats(stopped: &Stopped, n: usize, out: &mut Vec<String>) {
    if !stopped.status.success() {
        out.push(format!("exit status after SIGTERM: {}", stopped.status));
    }
    if stopped.stats.is_empty() {
        out.push(format!(
            "no `pystash stats` line on exit; stderr tail:\n{}",
            stopped.tail(20)
        ));
        return;
    }
    let n = n as u64;
    for (key, want) in [
        ("received", n),
        ("pushed", n),
        ("dropped", 0),
        ("rejected", 0),
        ("redis_errors", 0),
    ] {
        match stopped.stats.get(key) {
            Some(v) if *v == want => {}
            Some(v) => out.push(format!("stats {key}: expected {want}, got {v}")),
            None => out.push(format!("stats: no {key}= in the final stats line")),
        }
    }
}

/// Runs `stdlib_client.py` with the full scenario over `transport` against a proxy with every
/// layout option set, and checks every event.
fn full_scenario(transport: &str, version: u8, extra: &[&str], client_extra: &[&str]) {
    let redis = RedisServer::start();
    let dir = TempDir::new("unix");
    let sock = dir.path().join("pystash.sock");
    let sock = sock.to_str().expect("utf-8 temp path");
    let v = version.to_string();
    let mut args = vec![
        "--host-name",
        HOST,
        "--message-type",
        "mytype",
        "--logstash-tags",
        "a,b",
        "--logstash-version",
        &v,
        "--redis-queue",
        "q-intake",
    ];
    let (unix, udp) = (transport.starts_with("unix"), transport.starts_with("udp"));
    if unix {
        args.extend(["--unix", sock]);
    }
    args.extend(extra);
    let proxy = Pystash::start(&redis, &args);
    let port = if udp { proxy.udp_port } else { proxy.tcp_port }.to_string();
    let mut client = vec!["--transport", transport, "--scenario", "full"];
    if unix {
        client.extend(["--path", sock]);
    } else {
        client.extend(["--port", &port]);
    }
    client.extend(client_extra);
    let out = run_client("stdlib_client.py", &client);
    let records = out.at("records").as_array();
    assert!(
        records.len() >= 20,
        "the client logged only {} records",
        records.len()
    );

    let seen = redis.wait_for_len("q-intake", records.len(), WAIT);
    let stopped = proxy.stop();
    let events = redis.events("q-intake");
    let mut failures = Vec::new();
    if seen < records.len() {
        failures.push(format!(
            "only {seen} of {} events within {WAIT:?}",
            records.len()
        ));
    }
    // Records from one connection arrive in order; datagrams may be reordered across workers.
    failures.extend(check_records(&events, records, &configured(version), !udp));
    clean_stats(&stopped, records.len(), &mut failures);
    assert_none(
        &format!("{transport} --logstash-version {version}"),
        &failures,
    );
}

#[test]
fn tcp_socket_handler_v1() {
    full_scenario("tcp", 1, &[], &[]);
}

#[test]
fn tcp_socket_handler_v0() {
    full_scenario("tcp", 0, &["--workers", "1"], &[]);
}

#[test]
fn udp_datagram_handler_v1() {
    full_scenario("udp", 1, &[], &[]);
}

#[test]
fn udp_datagram_handler_v0() {
    full_scenario("udp", 0, &[], &[]);
}

#[test]
fn unix_socket_handler_v1() {
    full_scenario("unix", 1, &[], &[]);
}

#[test]
fn unix_socket_handler_v0() {
    full_scenario("unix", 0, &[], &[]);
}

// SocketHandler pickles with protocol 1; other Pythons and handlers use the others.

#[test]
fn tcp_pickle_protocol_0_v1() {
    full_scenario("tcp", 1, &[], &["--pickle-protocol", "0"]);
}

#[test]
fn tcp_pickle_protocol_2_v1() {
    full_scenario("tcp", 1, &[], &["--pickle-protocol", "2"]);
}

#[test]
fn tcp_pickle_protocol_3_v0() {
    full_scenario("tcp", 0, &[], &["--pickle-protocol", "3"]);
}

#[test]
fn udp_pickle_protocol_4_v1() {
    full_scenario("udp", 1, &[], &["--pickle-protocol", "4"]);
}

#[test]
fn unix_pickle_protocol_5_v1() {
    full_scenario("unix", 1, &[], &["--pickle-protocol", "5"]);
}

// The same records as JSON objects (SocketHandler's dict, json.dumps(default=str)): pystash
// recognises a record dict and formats it like a pickled one.

#[test]
fn tcp_json_records_v1() {
    full_scenario("tcp-json", 1, &[], &[]);
}

#[test]
fn udp_json_records_v1() {
    full_scenario("udp-json", 1, &[], &[]);
}

#[test]
fn unix_json_records_v0() {
    full_scenario("unix-json", 0, &[], &[]);
}

/// No layout option given: host is the machine's name, type `pystash`, no configured tags,
/// version 1, queue `logstash`.
#[test]
fn defaults_hostname_type_queue_version() {
    let redis = RedisServer::start();
    let proxy = Pystash::start(&redis, &[]);
    let out = send_simple("tcp", proxy.tcp_port, "defaults", 5);
    let records = out.at("records").as_array();
    redis.wait_for_len("logstash", records.len(), WAIT);
    let stopped = proxy.stop();
    let events = redis.events("logstash");
    let host = out.at("hostname").as_str().expect("hostname");
    let mut failures = check_records(&events, records, &Layout::v1(host), true);
    clean_stats(&stopped, records.len(), &mut failures);
    assert_none("defaults", &failures);
}

/// `--fqdn`: host is the fully qualified name, as python-logstash's `fqdn=True` takes it
/// (`socket.getfqdn()`). Where the resolver knows no dotted name for this machine, Python falls
/// back to the reverse lookup's primary name (often `localhost`); the plain hostname is as good
/// an answer there, so either is accepted.
#[test]
fn fqdn_host() {
    let redis = RedisServer::start();
    let proxy = Pystash::start(&redis, &["--fqdn"]);
    let out = send_simple("tcp", proxy.tcp_port, "fqdn", 3);
    let records = out.at("records").as_array();
    redis.wait_for_len("logstash", records.len(), WAIT);
    let stopped = proxy.stop();
    let events = redis.events("logstash");
    let fqdn = out.at("fqdn").as_str().expect("fqdn");
    let hostname = out.at("hostname").as_str().expect("hostname");
    let got = events
        .first()
        .and_then(|e| e.get("host"))
        .and_then(Json::as_str);
    let host = if !fqdn.contains('.') && got == Some(hostname) {
        hostname
    } else {
        fqdn
    };
    let mut failures = check_records(&events, records, &Layout::v1(host), true);
    clean_stats(&stopped, records.len(), &mut failures);
    assert_none(
        &format!("--fqdn (Python: getfqdn() = {fqdn:?}, gethostname() = {hostname:?})"),
        &failures,
    );
}

/// `--push lpush`: the list holds the newest event first.
#[test]
fn lpush_puts_newest_first() {
    let redis = RedisServer::start();
    let proxy = Pystash::start(&redis, &["--push", "lpush", "--host-name", HOST]);
    let out = send_simple("tcp", proxy.tcp_port, "lpush", 30);
    let records = out.at("records").as_array();
    redis.wait_for_len("logstash", records.len(), WAIT);
    let stopped = proxy.stop();
    let mut events = redis.events("logstash");
    events.reverse();
    let mut failures = check_records(&events, records, &Layout::v1(HOST), true);
    clean_stats(&stopped, records.len(), &mut failures);
    assert_none(
        "--push lpush (list read newest first, then reversed)",
        &failures,
    );
}

/// `--redis-url` with a user, password and database number.
fn redis_url(user: &str, password: &str, db: u32, setup: impl FnOnce(&RedisServer)) {
    let redis = RedisServer::start_with(&["--requirepass", "s3cret-pw"]);
    setup(&redis);
    let url = format!("redis://{user}:{password}@127.0.0.1:{}/{db}", redis.port);
    let proxy = Pystash::start(
        &redis,
        &[
            "--redis-url",
            &url,
            "--redis-queue",
            "q-url",
            "--host-name",
            HOST,
        ],
    );
    let out = send_simple("tcp", proxy.tcp_port, "url", 20);
    let records = out.at("records").as_array();
    redis.wait_for_len_in(db, "q-url", records.len(), WAIT);
    let stopped = proxy.stop();
    let events = redis.events_in(db, "q-url");
    let mut failures = check_records(&events, records, &Layout::v1(HOST), true);
    clean_stats(&stopped, records.len(), &mut failures);
    let in_db0 = redis.client_in(0).llen("q-url");
    if in_db0 != 0 {
        failures.push(format!(
            "{in_db0} events went to database 0 instead of {db}"
        ));
    }
    assert_none(&format!("--redis-url {url}"), &failures);
}

#[test]
fn redis_url_default_user_password_db() {
    redis_url("default", "s3cret-pw", 3, |_| {});
}

#[test]
fn redis_url_acl_user_password_db() {
    redis_url("alice", "alice-pw", 5, |redis| {
        redis.client().ok(&[
            "ACL",
            "SETUSER",
            "alice",
            "on",
            ">alice-pw",
            "~*",
            "&*",
            "+@all",
        ]);
    });
}

/// Four SocketHandlers at once: all records arrive, each connection's in its own order.
#[test]
fn concurrent_tcp_connections_keep_their_order() {
    let redis = RedisServer::start();
    let proxy = Pystash::start(&redis, &["--host-name", HOST, "--workers", "2"]);
    let port = proxy.tcp_port.to_string();
    let clients: Vec<(String, PyClient)> = (0..4)
        .map(|i| {
            let prefix = format!("conn{i}");
            let c = PyClient::spawn(
                "stdlib_client.py",
                &[
                    "--transport",
                    "tcp",
                    "--port",
                    &port,
                    "--scenario",
                    "simple",
                    "--prefix",
                    &prefix,
                    "--count",
                    "300",
                ],
            );
            (prefix, c)
        })
        .collect();
    let outs: Vec<(String, Json)> = clients
        .into_iter()
        .map(|(p, c)| (p, c.finish(Duration::from_secs(120))))
        .collect();
    let total: usize = outs
        .iter()
        .map(|(_, o)| o.at("records").as_array().len())
        .sum();
    redis.wait_for_len("logstash", total, WAIT);
    let stopped = proxy.stop();
    let events = redis.events("logstash");
    let mut failures = Vec::new();
    if events.len() != total {
        failures.push(format!(
            "event count: expected {total}, got {}",
            events.len()
        ));
    }
    for (prefix, out) in &outs {
        let mine: Vec<Json> = events
            .iter()
            .filter(|e| {
                e.get("message")
                    .and_then(Json::as_str)
                    .is_some_and(|m| m.starts_with(&format!("{prefix} ")))
            })
            .cloned()
            .collect();
        for f in check_records(&mine, out.at("records").as_array(), &Layout::v1(HOST), true) {
            failures.push(format!("{prefix}: {f}"));
        }
    }
    clean_stats(&stopped, total, &mut failures);
    assert_none("4 concurrent TCP connections", &failures);
}

/// Events python-logstash built are not records: each must reach Redis exactly as sent (same
/// keys, same order, same values); nothing is missing, so nothing is added.
fn python_logstash(transport: &str) {
    let redis = RedisServer::start();
    let proxy = Pystash::start(
        &redis,
        &[
            "--host-name",
            HOST,
            "--message-type",
            "mytype",
            "--logstash-tags",
            "a,b",
        ],
    );
    let port = if transport == "udp" {
        proxy.udp_port
    } else {
        proxy.tcp_port
    };
    let out = run_client(
        "logstash_client.py",
        &["--transport", transport, "--port", &port.to_string()],
    );
    let sent: Vec<Json> = out
        .at("payloads")
        .as_array()
        .iter()
        .map(|p| {
            Json::parse_or_panic(
                p.as_str().expect("payload").as_bytes(),
                "python-logstash payload",
            )
        })
        .collect();
    redis.wait_for_len("logstash", sent.len(), WAIT);
    let stopped = proxy.stop();
    let events = redis.events("logstash");
    let mut failures = Vec::new();
    if events.len() != sent.len() {
        failures.push(format!(
            "event count: expected {}, got {}",
            sent.len(),
            events.len()
        ));
    }
    let mut positions = Vec::new();
    for want in &sent {
        let msg = want.at("message").as_str().expect("message");
        match events
            .iter()
            .position(|e| e.get("message").and_then(Json::as_str) == Some(msg))
        {
            None => failures.push(format!("[{}]: no event", short(msg))),
            Some(i) => {
                positions.push(i);
                compare(
                    &format!("[{}]", short(msg)),
                    &events[i],
                    want,
                    &mut failures,
                );
            }
        }
    }
    if transport == "tcp" && positions.windows(2).any(|w| w[0] > w[1]) {
        failures.push(format!("events not in the order sent: {positions:?}"));
    }
    clean_stats(&stopped, sent.len(), &mut failures);
    assert_none(&format!("python-logstash {transport}"), &failures);
}

#[test]
fn python_logstash_tcp_passes_through() {
    python_logstash("tcp");
}

#[test]
fn python_logstash_udp_passes_through() {
    python_logstash("udp");
}

/// Seconds since the epoch of a `%Y-%m-%dT%H:%M:%S.<digits>Z` timestamp.
fn parse_timestamp(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() < 21
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || !s.ends_with('Z')
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let frac = s.get(20..s.len() - 1)?;
    if frac.is_empty() || !frac.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(secs as f64 + format!("0.{frac}").parse::<f64>().ok()?)
}

/// Checks a field pystash had to add: `@timestamp` near now, the rest fixed.
fn check_added(label: &str, event: &Json, tags: &Json, out: &mut Vec<String>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    match event.get("@timestamp").and_then(Json::as_str) {
        None => out.push(format!(
            "{label}: no string @timestamp added: {}",
            event.compact(300)
        )),
        Some(ts) => match parse_timestamp(ts) {
            Some(t) if (t - now).abs() < 600.0 => {}
            _ => out.push(format!(
                "{label}: added @timestamp {ts:?} is not %Y-%m-%dT%H:%M:%S.%fZ near now"
            )),
        },
    }
    let fixed = [
        ("@version", Json::int(1)),
        ("host", Json::str(HOST)),
        ("type", Json::str("mytype")),
        ("tags", tags.clone()),
    ];
    for (key, want) in fixed {
        match event.get(key) {
            None => out.push(format!("{label}: {key} not added")),
            Some(v) if !json_eq(v, &want) => out.push(format!(
                "{label}.{key}: expected {}, got {}",
                want.compact(100),
                v.compact(100)
            )),
            Some(_) => {}
        }
    }
}

/// JSON lines and datagrams that are not records: kept as they are (keys in order), with
/// `@timestamp`, `@version`, `host`, `type`, `tags` added only where missing; a line that is not
/// JSON becomes `{"message": line, "tags": ["_jsonparsefailure"], ...}`.
#[test]
fn json_lines_and_text_lines() {
    let redis = RedisServer::start();
    let proxy = Pystash::start(
        &redis,
        &[
            "--host-name",
            HOST,
            "--message-type",
            "mytype",
            "--logstash-tags",
            "a,b",
        ],
    );
    // (id, wire form, whether pystash has nothing to add)
    let objects: [(&str, &[u8], bool); 5] = [
        ("j1", br#"{"msg_id":"j1","foo":1}"#, false),
        (
            "j2",
            br#"{"msg_id":"j2","@timestamp":"2020-01-01T00:00:00.000Z","@version":"1","host":"keep","type":"keep-type","tags":["keep"]}"#,
            true,
        ),
        (
            "j3",
            "{\"msg_id\":\"j3\",\"nested\":{\"z\":1,\"a\":[1,2.5,{\"b\":null}]},\"uni\":\"h\u{e9}llo \u{2713} \u{65e5}\u{672c} \\ud83d\\ude00\",\"esc\":\"\\\"\\\\\\n\\u0001\",\"big\":12345678901234,\"neg\":-1.5e-7,\"t\":true}".as_bytes(),
            false,
        ),
        ("u1", br#"{"msg_id":"u1","foo":2}"#, false),
        ("u2", br#"{"msg_id":"u2","@version":1,"host":"h2","type":"t2","tags":[],"@timestamp":"2021-02-03T04:05:06.789012Z"}"#, true),
    ];
    let mut lines = Vec::new();
    for (id, wire, _) in &objects[..3] {
        lines.extend_from_slice(wire);
        lines.extend_from_slice(if *id == "j2" { b"\r\n" } else { b"\n" });
    }
    lines.extend_from_slice(b"this is not json\n");
    send_tcp(proxy.tcp_port, &[&lines]);
    let u1 = objects[3].1;
    let mut u2 = objects[4].1.to_vec();
    u2.push(b'\n');
    send_udp(proxy.udp_port, &[u1, &u2, b"udp text, not json"]);

    let total = objects.len() + 2;
    redis.wait_for_len("logstash", total, WAIT);
    let stopped = proxy.stop();
    let events = redis.events("logstash");
    let mut failures = Vec::new();
    if events.len() != total {
        failures.push(format!(
            "event count: expected {total}, got {}",
            events.len()
        ));
    }
    let cli_tags = Json::strs(&["a", "b"]);
    for (id, wire, complete) in &objects {
        let sent = Json::parse_or_panic(wire, "test input");
        let Some(event) = events
            .iter()
            .find(|e| e.get("msg_id").and_then(Json::as_str) == Some(*id))
        else {
            failures.push(format!("[{id}]: no event"));
            continue;
        };
        if *complete {
            compare(&format!("[{id}]"), event, &sent, &mut failures);
            continue;
        }
        // The sent keys, in their order, with their values; then the added ones.
        let kept: Vec<(String, Json)> = event
            .keys()
            .into_iter()
            .filter(|k| sent.get(k).is_some())
            .map(|k| (k.to_owned(), event.at(k).clone()))
            .collect();
        compare(
            &format!("[{id}] (sent keys)"),
            &Json::Obj(kept),
            &sent,
            &mut failures,
        );
        check_added(&format!("[{id}]"), event, &cli_tags, &mut failures);
        let unexpected: Vec<&str> = event
            .keys()
            .into_iter()
            .filter(|k| {
                sent.get(k).is_none()
                    && !["@timestamp", "@version", "host", "type", "tags"].contains(k)
            })
            .collect();
        if !unexpected.is_empty() {
            failures.push(format!("[{id}]: unexpected keys {unexpected:?}"));
        }
    }
    for text in ["this is not json", "udp text, not json"] {
        match events
            .iter()
            .find(|e| e.get("message").and_then(Json::as_str) == Some(text))
        {
            None => failures.push(format!("[{text}]: no event with that message")),
            Some(e) => {
                let tags = e.get("tags").map(Json::as_array).unwrap_or(&[]);
                if !tags.iter().any(|t| t.as_str() == Some("_jsonparsefailure")) {
                    failures.push(format!(
                        "[{text}]: tags lack _jsonparsefailure: {}",
                        e.compact(300)
                    ));
                }
                if e.get("@timestamp")
                    .and_then(Json::as_str)
                    .and_then(parse_timestamp)
                    .is_none()
                {
                    failures.push(format!("[{text}]: no valid @timestamp: {}", e.compact(300)));
                }
                for (key, want) in [("host", HOST), ("type", "mytype")] {
                    if e.get(key).and_then(Json::as_str) != Some(want) {
                        failures.push(format!(
                            "[{text}].{key}: expected {want:?}: {}",
                            e.compact(300)
                        ));
                    }
                }
            }
        }
    }
    clean_stats(&stopped, total, &mut failures);
    assert_none("JSON and text lines", &failures);
}
