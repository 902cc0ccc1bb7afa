//! `--spool-dir`: with Redis away, records go to disk and survive the proxy being killed
//! (SIGKILL) or stopped (SIGTERM); the next run replays them in order.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(30);

fn lines(prefix: &str, range: std::ops::Range<usize>) -> String {
    range
        .map(|i| format!("{{\"message\":\"{prefix} {i}\"}}\n"))
        .collect()
}

/// Waits until the proxy has taken in `n` frames, read from its metrics endpoint.
fn wait_received(metrics: &str, n: u64) -> HashMap<String, u64> {
    poll(WAIT, || {
        let mut s = std::net::TcpStream::connect(metrics).ok()?;
        use std::io::{Read, Write};
        s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let values: HashMap<String, u64> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect();
        let spooled = values.get("pystash_spool_bytes").is_some_and(|b| *b > 0);
        (values.get("pystash_records_received_total") == Some(&n) && spooled).then_some(values)
    })
    .expect("the proxy took every record in")
}

fn messages(redis: &RedisServer) -> Vec<String> {
    redis
        .events("logstash")
        .iter()
        .filter_map(|e| e.get("message").and_then(Json::as_str).map(str::to_owned))
        .collect()
}

fn run(kill_signal: libc::c_int) {
    let dir = TempDir::new("spool");
    let spool = dir.path().join("spool");
    let spool = spool.to_str().unwrap();
    // Redis is not there yet: its port is reserved but nothing listens.
    let redis_port = free_tcp_port();
    let metrics = format!("127.0.0.1:{}", free_tcp_port());
    let args = [
        "--workers",
        "1",
        "--buffer-records",
        "100",
        "--spool-dir",
        spool,
        "--spool-fsync",
        "never",
        "--metrics",
        &metrics,
        "--shutdown-timeout",
        "1",
    ];
    let first = Pystash::start_on(redis_port, &args);
    send_tcp(first.tcp_port, &[lines("s", 0..3000).as_bytes()]);
    let values = wait_received(&metrics, 3000);
    assert!(values["pystash_spool_bytes"] > 0, "{values:?}");
    let stopped = first.stop_with(kill_signal, Duration::from_secs(20));
    if kill_signal == libc::SIGTERM {
        stopped.assert_clean_exit();
        assert_eq!(stopped.stat("dropped"), 0);
        // Everything accepted is accounted for: all 3000 wait in the spool.
        assert_eq!(stopped.stat("received"), 3000);
        assert_eq!(stopped.stat("buffered"), 3000);
        assert_eq!(stopped.stat("pushed") + stopped.stat("rejected"), 0);
    }
    // Redis comes up; a new proxy on the same spool replays it.
    let redis = RedisServer::start_on_port(redis_port);
    let second = Pystash::start_on(redis_port, &args);
    redis.wait_for_len("logstash", 3000, WAIT);
    let got = messages(&redis);
    let want: Vec<String> = (0..3000).map(|i| format!("s {i}")).collect();
    assert_eq!(got, want, "every record once, in order");
    let stopped = second.stop();
    stopped.assert_clean_exit();
    assert_eq!(stopped.stat("pushed"), 3000);
    let left: Vec<_> = std::fs::read_dir(spool).unwrap().collect();
    assert!(left.is_empty(), "delivered segments are deleted: {left:?}");
}

#[test]
fn spool_survives_sigkill() {
    run(libc::SIGKILL);
}

#[test]
fn spool_survives_sigterm_with_redis_down() {
    run(libc::SIGTERM);
}
