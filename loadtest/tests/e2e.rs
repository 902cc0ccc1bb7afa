//! Short real runs: the pystash binary and a private redis-server on free ports, records over
//! UDP, TCP and a unix socket, popped with LRANGE and BLPOP; nothing may be lost.
//!
//! The pystash binary is `$PYSTASH_BIN`, else `debug/pystash` in the target dir (`cargo test
//! --workspace` builds it), else it is built into `target/loadtest-e2e` (a separate target
//! dir: the running `cargo test` holds the lock on the default one).

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use pystash_loadtest::config::{Cli, RunConfig};
use pystash_loadtest::run;
use pystash_loadtest::summary::Summary;

/// Kills its process on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited with {status}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn pystash_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PYSTASH_BIN") {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace().join("target"), PathBuf::from);
    let default = target.join("debug/pystash");
    if default.exists() {
        return default;
    }
    let dir = workspace().join("target/loadtest-e2e");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "pystash", "--bin", "pystash", "--target-dir"])
        .arg(&dir)
        .current_dir(workspace())
        .status()
        .unwrap();
    assert!(status.success(), "building pystash failed");
    dir.join("debug/pystash")
}

struct Servers {
    redis_port: u16,
    tcp_port: u16,
    udp_port: u16,
    unix: PathBuf,
    // Dropped in this order: pystash first, then Redis.
    _pystash: Proc,
    _redis: Proc,
}

fn start() -> Servers {
    let redis_port = free_tcp_port();
    let mut redis = Command::new("redis-server")
        .args([
            "--port",
            &redis_port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server must be installed (scripts/test.sh installs it)");
    wait_for_port(redis_port, "redis-server", &mut redis);
    let redis = Proc(redis);

    let (tcp_port, udp_port) = (free_tcp_port(), free_udp_port());
    let unix =
        std::env::temp_dir().join(format!("pystash-loadtest-e2e-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&unix);
    let mut pystash = Command::new(pystash_bin())
        .args([
            "--bind-ip",
            "127.0.0.1",
            "--tcp-port",
            &tcp_port.to_string(),
        ])
        .args(["--udp-port", &udp_port.to_string(), "--unix"])
        .arg(&unix)
        .args([
            "--redis-host",
            "127.0.0.1",
            "--redis-port",
            &redis_port.to_string(),
        ])
        .args(["--workers", "1", "--stats-interval", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting pystash");
    wait_for_port(tcp_port, "pystash", &mut pystash);
    Servers {
        redis_port,
        tcp_port,
        udp_port,
        unix,
        _pystash: Proc(pystash),
        _redis: redis,
    }
}

fn load(s: &Servers, transport: &str, extra: &[&str]) -> Summary {
    let target = match transport {
        "udp" => format!("127.0.0.1:{}", s.udp_port),
        "tcp" => format!("127.0.0.1:{}", s.tcp_port),
        _ => s.unix.display().to_string(),
    };
    let redis = format!("redis://127.0.0.1:{}", s.redis_port);
    let mut argv = vec![
        "pystash-loadtest",
        "--transport",
        transport,
        "--target",
        &target,
    ];
    argv.extend_from_slice(&["--redis", &redis, "--quiet", "--drain-timeout", "20s"]);
    argv.extend_from_slice(extra);
    let cfg = RunConfig::from_args(Cli::try_parse_from(&argv).unwrap().run).unwrap();
    let summary = run::run(&cfg, Arc::new(AtomicBool::new(false)))
        .unwrap()
        .summary;
    eprint!("{summary}");
    summary
}

fn assert_clean(s: &Summary, sent: u64) {
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(s.sent, sent, "{s}");
    assert_eq!(
        (s.delivered, s.lost, s.duplicates, s.foreign),
        (sent, 0, 0, 0),
        "{s}"
    );
    assert_eq!(s.latency_ms.count, sent);
    assert!(s.send_seconds > 0.0 && s.sent_per_sec > 0.0, "{s}");
    assert!(s.cpu_seconds > 0.0, "{s}");
    assert!(
        s.latency_ms.p50 > 0.0 && s.latency_ms.max >= s.latency_ms.p99,
        "{s}"
    );
}

#[test]
fn short_runs_against_pystash_lose_nothing() {
    let s = start();

    let udp = load(
        &s,
        "udp",
        &["--count", "2000", "--rate", "20k", "--senders", "2"],
    );
    assert_clean(&udp, 2000);
    // One UDP socket per sender, each its own sequence.
    assert_eq!(udp.streams.len(), 2);

    let tcp = load(
        &s,
        "tcp",
        &[
            "--count",
            "2000",
            "--rate",
            "max",
            "--connections",
            "3",
            "--format",
            "json",
        ],
    );
    assert_clean(&tcp, 2000);
    // Each TCP connection is one ordered stream: nothing reordered within one.
    assert_eq!(tcp.streams.len(), 3);
    assert_eq!(tcp.reordered, 0);

    let unix = load(
        &s,
        "unix",
        &[
            "--count",
            "1000",
            "--rate",
            "10k",
            "--consume",
            "blpop",
            "--senders",
            "1",
        ],
    );
    assert_clean(&unix, 1000);
    assert_eq!(unix.reordered, 0);

    // The binary, with files: summary, histograms, plot; then `report` and `plot` on them.
    let out = std::env::temp_dir().join(format!("pystash-loadtest-e2e-out-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let bin = env!("CARGO_BIN_EXE_pystash-loadtest");
    let status = Command::new(bin)
        .args([
            "--transport",
            "udp",
            "--target",
            &format!("127.0.0.1:{}", s.udp_port),
        ])
        .args(["--redis", &format!("redis://127.0.0.1:{}", s.redis_port)])
        .args([
            "--count",
            "500",
            "--rate",
            "5k",
            "--size",
            "300..900@9,8000@1",
            "--quiet",
        ])
        .args(["--label", "bin-udp", "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    for f in [
        "bin-udp.json",
        "bin-udp.hgrm",
        "bin-udp.uncorrected.hgrm",
        "bin-udp.svg",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let summary: Summary =
        serde_json::from_str(&std::fs::read_to_string(out.join("bin-udp.json")).unwrap()).unwrap();
    assert_clean(&summary, 500);
    assert!(summary.mean_record_bytes > 300.0);

    std::fs::write(out.join("tcp.json"), serde_json::to_string(&tcp).unwrap()).unwrap();
    let report = Command::new(bin)
        .arg("report")
        .args([out.join("bin-udp.json"), out.join("tcp.json")])
        .output()
        .unwrap();
    assert!(report.status.success());
    let table = String::from_utf8(report.stdout).unwrap();
    assert_eq!(table.lines().count(), 4, "{table}");
    assert!(
        table.contains("| bin-udp | udp | pickle | 5k/s | 500 |"),
        "{table}"
    );

    let svg = out.join("both.svg");
    let plot = Command::new(bin)
        .args(["plot", "-o"])
        .arg(&svg)
        .args([out.join("tcp.json"), out.join("bin-udp.hgrm")])
        .status()
        .unwrap();
    assert!(plot.success());
    let text = std::fs::read_to_string(&svg).unwrap();
    assert_eq!(text.matches("<polyline").count(), 2);
    assert!(text.contains("tcp-json-max") && text.contains(">bin-udp  p50"));
    std::fs::remove_dir_all(&out).unwrap();
    let _ = std::fs::remove_file(&s.unix);
}
