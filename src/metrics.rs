//! `--metrics ADDR`: the counters in Prometheus' text exposition format
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>), served over plain HTTP by one
//! small thread. Rendering is pure; the server answers `GET /metrics` and nothing else.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use tracing::debug;

use crate::stats::{Reject, Snapshot, RTT_BUCKETS_US};

/// Longest request head read; anything longer is answered 431 and closed.
const MAX_REQUEST: usize = 8 * 1024;
/// A client that sends its request slower than this is dropped.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Appends every counter in the text format. `engine` and `workers` describe the process.
pub fn render(s: &Snapshot, engine: &str, workers: usize, out: &mut String) {
    metric(
        out,
        "pystash_info",
        "gauge",
        "The I/O engine in use and the worker count.",
    );
    let _ = writeln!(
        out,
        "pystash_info{{engine=\"{engine}\",workers=\"{workers}\"}} 1"
    );
    let counters: [(&str, &str, u64); 6] = [
        (
            "pystash_records_received_total",
            "Frames read from clients.",
            s.received,
        ),
        (
            "pystash_records_pushed_total",
            "Records Redis acknowledged.",
            s.pushed,
        ),
        (
            "pystash_bytes_received_total",
            "Payload bytes of the frames read.",
            s.bytes_received,
        ),
        (
            "pystash_redis_errors_total",
            "Redis error replies and connection failures.",
            s.redis_errors,
        ),
        (
            "pystash_redis_reconnects_total",
            "Connections to Redis made after a lost one.",
            s.reconnects,
        ),
        (
            "pystash_redis_congestion_pauses_total",
            "Times pushing paused because the list was over --max-queue-length.",
            s.congestion_pauses,
        ),
    ];
    let connections: [(&str, &str, u64); 2] = [
        (
            "pystash_connections_refused_total",
            "Stream connections closed at accept: --max-connections reached.",
            s.connections_refused,
        ),
        (
            "pystash_connections_expired_total",
            "Stream connections closed by --frame-timeout or --idle-timeout.",
            s.connections_expired,
        ),
    ];
    for (name, help, value) in counters.into_iter().chain(connections) {
        metric(out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
    metric(
        out,
        "pystash_records_rejected_total",
        "counter",
        "Frames rejected, by reason.",
    );
    for reason in Reject::ALL {
        let _ = writeln!(
            out,
            "pystash_records_rejected_total{{reason=\"{}\"}} {}",
            reason.name(),
            s.rejected[reason as usize]
        );
    }
    metric(
        out,
        "pystash_records_dropped_total",
        "counter",
        "Records dropped, by reason.",
    );
    for (reason, value) in [
        ("buffer_full", s.dropped_buffer_full),
        ("shutdown", s.dropped_shutdown),
        ("kernel", s.dropped_kernel),
    ] {
        let _ = writeln!(
            out,
            "pystash_records_dropped_total{{reason=\"{reason}\"}} {value}"
        );
    }
    metric(
        out,
        "pystash_records_buffered",
        "gauge",
        "Records held for Redis now.",
    );
    let _ = writeln!(out, "pystash_records_buffered {}", s.buffered);
    metric(
        out,
        "pystash_spool_bytes",
        "gauge",
        "Bytes in the disk spool now.",
    );
    let _ = writeln!(out, "pystash_spool_bytes {}", s.spool_bytes);
    let name = "pystash_redis_rtt_seconds";
    metric(
        out,
        name,
        "histogram",
        "Time from writing a push to its reply.",
    );
    let mut cumulative = 0;
    for (i, count) in s.redis_rtt.iter().enumerate() {
        cumulative += count;
        match RTT_BUCKETS_US.get(i) {
            Some(us) => {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{le=\"{}\"}} {cumulative}",
                    *us as f64 / 1e6
                );
            }
            None => {
                let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
            }
        }
    }
    let _ = writeln!(out, "{name}_sum {}", s.redis_rtt_sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {cumulative}");
}

/// Serves `GET /metrics` on `listener` until the process exits. `snapshot` sums the workers'
/// counters at each request.
pub fn serve(listener: TcpListener, snapshot: impl Fn() -> (Snapshot, &'static str, usize)) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if let Err(err) = answer(stream, &snapshot) {
            debug!(%err, "metrics request failed");
        }
    }
}

fn answer(
    mut stream: TcpStream,
    snapshot: &impl Fn() -> (Snapshot, &'static str, usize),
) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
        if head.len() > MAX_REQUEST {
            return respond(&mut stream, "431 Request Header Fields Too Large", "");
        }
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or(b"");
    let mut parts = line.split(|&b| b == b' ');
    let (method, path) = (parts.next().unwrap_or(b""), parts.next().unwrap_or(b""));
    if method != b"GET" {
        return respond(&mut stream, "405 Method Not Allowed", "");
    }
    if path != b"/metrics" && !path.starts_with(b"/metrics?") {
        return respond(&mut stream, "404 Not Found", "try /metrics\n");
    }
    let (snap, engine, workers) = snapshot();
    let mut body = String::with_capacity(4096);
    render(&snap, engine, workers, &mut body);
    respond(&mut stream, "200 OK", &body)
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) -> io::Result<()> {
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let mut s = Snapshot {
            received: 10,
            pushed: 7,
            buffered: 1,
            ..Snapshot::default()
        };
        s.rejected[Reject::BadPickle as usize] = 2;
        s.redis_rtt[0] = 3; // <= 50 µs
        s.redis_rtt[4] = 1; // <= 1 ms
        s.redis_rtt[RTT_BUCKETS_US.len()] = 1; // > 1 s
        s.redis_rtt_sum_us = 2_000_500;
        let mut out = String::new();
        render(&s, "epoll", 2, &mut out);
        for line in [
            "pystash_info{engine=\"epoll\",workers=\"2\"} 1",
            "pystash_records_received_total 10",
            "pystash_records_pushed_total 7",
            "pystash_records_rejected_total{reason=\"bad_pickle\"} 2",
            "pystash_records_rejected_total{reason=\"oversized\"} 0",
            "pystash_records_buffered 1",
            "pystash_redis_rtt_seconds_bucket{le=\"0.00005\"} 3",
            "pystash_redis_rtt_seconds_bucket{le=\"0.001\"} 4",
            "pystash_redis_rtt_seconds_bucket{le=\"1\"} 4",
            "pystash_redis_rtt_seconds_bucket{le=\"+Inf\"} 5",
            "pystash_redis_rtt_seconds_count 5",
            "pystash_redis_rtt_seconds_sum 2.0005",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
        }
        // Every sample line names a metric that has a TYPE line.
        for l in out.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            let base = name
                .trim_end_matches("_bucket")
                .trim_end_matches("_sum")
                .trim_end_matches("_count");
            assert!(out.contains(&format!("# TYPE {base} ")), "{name}");
        }
    }

    #[test]
    fn serves_get_metrics_only() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            serve(listener, || {
                (
                    Snapshot {
                        pushed: 42,
                        ..Snapshot::default()
                    },
                    "epoll",
                    1,
                )
            })
        });
        let get = |request: &str| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            let mut reply = String::new();
            s.read_to_string(&mut reply).unwrap();
            reply
        };
        let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("\npystash_records_pushed_total 42\n"));
        assert!(get("GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get("POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    }
}
