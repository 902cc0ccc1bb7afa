//! Harness for the integration tests: a private `redis-server`, the `pystash` binary, a tiny
//! RESP client, the Python clients in `tests/clients/`, and free ports.
//!
//! Everything listens on 127.0.0.1 only, every wait has a deadline, and every process started
//! here is killed by its own PID when its guard drops (redis-rs `redis-test/src/server.rs`).

// Each test binary uses a different part of this module.
#![allow(dead_code, unreachable_pub)]

pub mod expect;
pub mod json;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use redis_protocol::resp2::types::OwnedFrame;

#[allow(unused_imports)]
pub use expect::Layout;
#[allow(unused_imports)]
pub use json::Json;

pub const LOCALHOST: &str = "127.0.0.1";
/// How long a process gets to come up.
const START_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Ports, directories, processes

/// A TCP port that was free a moment ago (bound to port 0, then released).
pub fn free_tcp_port() -> u16 {
    let l = TcpListener::bind((LOCALHOST, 0)).expect("bind a free TCP port");
    l.local_addr().expect("local addr").port()
}

/// A UDP port that was free a moment ago.
pub fn free_udp_port() -> u16 {
    let s = UdpSocket::bind((LOCALHOST, 0)).expect("bind a free UDP port");
    s.local_addr().expect("local addr").port()
}

/// A directory of its own under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "pystash-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // Safety: kill(2) with a PID we spawned and have not reaped yet, so it names our child.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Waits for `child` to exit, up to `timeout`.
fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// SIGKILL and reap.
fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        signal(child, libc::SIGKILL);
        let _ = wait_timeout(child, Duration::from_secs(10));
    }
}

/// Reads a pipe to the end in a thread, into a shared buffer.
fn drain<R: Read + Send + 'static>(mut pipe: R, buf: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf
                    .lock()
                    .expect("pipe buffer")
                    .extend_from_slice(&chunk[..n]),
            }
        }
    })
}

/// Polls `f` every 20 ms until it returns `Some`, or `None` after `timeout`.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Redis

/// A private `redis-server` on a free port: no persistence unless asked, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: TempDir,
    args: Vec<String>,
    /// `AUTH` arguments for the harness's own connections.
    auth: Vec<String>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts with extra `redis-server` arguments; later ones override the defaults.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        RedisServer::start_with_on(free_tcp_port(), extra)
    }

    /// Starts on a port chosen earlier (a proxy may already be waiting for it).
    pub fn start_on_port(port: u16) -> RedisServer {
        RedisServer::start_with_on(port, &[])
    }

    fn start_with_on(port: u16, extra: &[&str]) -> RedisServer {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut auth = Vec::new();
        if let Some(i) = args.iter().position(|a| a == "--requirepass") {
            auth.push(args.get(i + 1).cloned().expect("--requirepass value"));
        }
        args.shrink_to_fit();
        let mut server = RedisServer {
            port,
            child: None,
            dir: TempDir::new("redis"),
            args,
            auth,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = self.dir.path().join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", LOCALHOST])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-server (apt-get install redis-server)");
        self.child = Some(child);
        let port = self.port;
        let auth = self.auth.clone();
        let ready = poll(START_TIMEOUT, || {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "redis-server exited ({status}) on port {port}: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
            let mut c = Resp::connect(port).ok()?;
            if !auth.is_empty() {
                c.cmd(&["AUTH", &auth[0]]).ok()?;
            }
            match c.cmd(&["PING"]).ok()? {
                OwnedFrame::SimpleString(s) if s == b"PONG" => Some(()),
                _ => None,
            }
        });
        if ready.is_none() {
            panic!(
                "redis-server on port {port} did not answer PING within {START_TIMEOUT:?}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    }

    /// SIGKILLs the server (its data goes with it unless AOF is on).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_reap(&mut c);
        }
    }

    /// Starts the server again on the same port, with the same arguments and directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// A new connection, authenticated when the server has a password.
    pub fn client(&self) -> Resp {
        let mut c = Resp::connect(self.port).expect("connect to redis-server");
        if let Some(pw) = self.auth.first() {
            c.ok(&["AUTH", pw]);
        }
        c
    }

    /// A connection with database `db` selected.
    pub fn client_in(&self, db: u32) -> Resp {
        let mut c = self.client();
        if db != 0 {
            c.ok(&["SELECT", &db.to_string()]);
        }
        c
    }

    /// Waits until list `key` holds at least `n` items; returns the last length seen.
    pub fn wait_for_len(&self, key: &str, n: usize, timeout: Duration) -> usize {
        self.wait_for_len_in(0, key, n, timeout)
    }

    pub fn wait_for_len_in(&self, db: u32, key: &str, n: usize, timeout: Duration) -> usize {
        let mut c = self.client_in(db);
        let mut last = 0;
        let _ = poll(timeout, || {
            last = c.llen(key);
            (last >= n).then_some(())
        });
        last
    }

    /// Waits until list `key` has held the same length for `quiet`; returns it.
    pub fn wait_for_quiet(&self, key: &str, quiet: Duration, timeout: Duration) -> usize {
        let mut c = self.client();
        let deadline = Instant::now() + timeout;
        let mut last = c.llen(key);
        let mut since = Instant::now();
        while Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
            let now = c.llen(key);
            if now != last {
                last = now;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                break;
            }
        }
        last
    }

    /// Every item of list `key`, parsed as JSON, panicking on an item that is not JSON.
    pub fn events(&self, key: &str) -> Vec<Json> {
        self.events_in(0, key)
    }

    pub fn events_in(&self, db: u32, key: &str) -> Vec<Json> {
        self.raw_events_in(db, key)
            .iter()
            .enumerate()
            .map(|(i, raw)| Json::parse_or_panic(raw, &format!("item {i} of list {key:?}")))
            .collect()
    }

    /// Every item of list `key` as bytes.
    pub fn raw_events_in(&self, db: u32, key: &str) -> Vec<Vec<u8>> {
        self.client_in(db).lrange(key)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A blocking RESP2 client over one TCP connection: enough for the tests' own look-ups.
pub struct Resp {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Resp {
    pub fn connect(port: u16) -> io::Result<Resp> {
        let stream = TcpStream::connect_timeout(
            &(std::net::Ipv4Addr::LOCALHOST, port).into(),
            Duration::from_secs(2),
        )?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.set_write_timeout(Some(Duration::from_secs(20)))?;
        stream.set_nodelay(true)?;
        Ok(Resp {
            stream,
            buf: Vec::new(),
        })
    }

    /// Sends one command and reads its reply (an error reply is `Ok(OwnedFrame::Error)`).
    pub fn cmd(&mut self, args: &[&str]) -> io::Result<OwnedFrame> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.stream.write_all(&out)?;
        let mut chunk = [0u8; 65536];
        loop {
            match redis_protocol::resp2::decode::decode(&self.buf) {
                Ok(Some((frame, used))) => {
                    self.buf.drain(..used);
                    return Ok(frame);
                }
                Ok(None) => {}
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// A command that must succeed.
    pub fn ok(&mut self, args: &[&str]) -> OwnedFrame {
        match self.cmd(args) {
            Ok(OwnedFrame::Error(e)) => panic!("redis {args:?}: {e}"),
            Ok(f) => f,
            Err(e) => panic!("redis {args:?}: {e}"),
        }
    }

    pub fn llen(&mut self, key: &str) -> usize {
        match self.ok(&["LLEN", key]) {
            OwnedFrame::Integer(n) => usize::try_from(n).unwrap_or(0),
            f => panic!("LLEN reply {f:?}"),
        }
    }

    pub fn lrange(&mut self, key: &str) -> Vec<Vec<u8>> {
        match self.ok(&["LRANGE", key, "0", "-1"]) {
            OwnedFrame::Array(items) => items
                .into_iter()
                .map(|f| match f {
                    OwnedFrame::BulkString(b) => b,
                    f => panic!("LRANGE item {f:?}"),
                })
                .collect(),
            f => panic!("LRANGE reply {f:?}"),
        }
    }

    pub fn del(&mut self, key: &str) {
        self.ok(&["DEL", key]);
    }

    pub fn ping(&mut self) -> bool {
        matches!(self.cmd(&["PING"]), Ok(OwnedFrame::SimpleString(s)) if s == b"PONG")
    }
}

// ---------------------------------------------------------------------------------------------
// pystash

/// A running `pystash` on free ports; SIGTERMed on drop.
pub struct Pystash {
    child: Option<Child>,
    pub tcp_port: u16,
    pub udp_port: u16,
    stderr: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
    pub args: Vec<String>,
}

/// How a `pystash` run ended.
pub struct Stopped {
    pub status: ExitStatus,
    pub stderr: String,
    /// The last `pystash stats` line, parsed.
    pub stats: HashMap<String, u64>,
}

impl Stopped {
    /// A counter from the final stats line; absent counts as 0 for `rejected_*`, a panic
    /// otherwise (the contract says those keys are always there).
    pub fn stat(&self, key: &str) -> u64 {
        match self.stats.get(key) {
            Some(v) => *v,
            None if key.starts_with("rejected_") => 0,
            None => panic!(
                "no {key:?} in the final stats line; stderr:\n{}",
                self.tail(40)
            ),
        }
    }

    /// The last `lines` lines of stderr.
    pub fn tail(&self, lines: usize) -> String {
        let all: Vec<&str> = self.stderr.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Checks the run ended well: exit 0 and a stats line.
    pub fn assert_clean_exit(&self) {
        assert!(
            self.status.success(),
            "pystash exited with {} after SIGTERM; stderr:\n{}",
            self.status,
            self.tail(40)
        );
        assert!(
            !self.stats.is_empty(),
            "pystash printed no `pystash stats` line on exit; stderr:\n{}",
            self.tail(40)
        );
    }
}

impl Pystash {
    /// Starts pystash against `redis` with `args`, adding `--bind-ip`, free `--tcp-port` and
    /// `--udp-port`, and `--redis-host`/`--redis-port` unless `args` has `--redis-url`.
    pub fn start(redis: &RedisServer, args: &[&str]) -> Pystash {
        Pystash::start_on(redis.port, args)
    }

    pub fn start_on(redis_port: u16, args: &[&str]) -> Pystash {
        Pystash::start_env(redis_port, args, &[])
    }

    /// [`Pystash::start_on`] with extra environment variables.
    pub fn start_env(redis_port: u16, args: &[&str], envs: &[(&str, &str)]) -> Pystash {
        let tcp_port = free_tcp_port();
        let udp_port = free_udp_port();
        let mut all: Vec<String> = vec![
            "--bind-ip".into(),
            LOCALHOST.into(),
            "--tcp-port".into(),
            tcp_port.to_string(),
            "--udp-port".into(),
            udp_port.to_string(),
        ];
        let url_given =
            args.contains(&"--redis-url") || envs.iter().any(|(k, _)| *k == "PYSTASH_REDIS_URL");
        if !url_given {
            all.extend(["--redis-host".into(), LOCALHOST.into()]);
            all.extend(["--redis-port".into(), redis_port.to_string()]);
        }
        // `PYSTASH_TEST_ENGINE=uring|epoll` runs every test against one engine.
        if !args.contains(&"--io-engine") {
            if let Ok(engine) = std::env::var("PYSTASH_TEST_ENGINE") {
                all.extend(["--io-engine".into(), engine]);
            }
        }
        all.extend(args.iter().map(|s| s.to_string()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_pystash"))
            .args(&all)
            .env("NO_COLOR", "1")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the pystash binary");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let reader = drain(child.stderr.take().expect("stderr pipe"), stderr.clone());
        let mut p = Pystash {
            child: Some(child),
            tcp_port,
            udp_port,
            stderr,
            reader: Some(reader),
            args: all,
        };
        let up = poll(START_TIMEOUT, || {
            if let Some(Ok(Some(status))) = p.child.as_mut().map(Child::try_wait) {
                panic!(
                    "pystash {:?} exited ({status}) before listening; stderr:\n{}",
                    p.args,
                    p.stderr_text()
                );
            }
            p.stderr_text().contains("pystash listening").then_some(())
        });
        if up.is_none() {
            panic!(
                "pystash {:?} printed no `pystash listening` within {START_TIMEOUT:?}; stderr:\n{}",
                p.args,
                p.stderr_text()
            );
        }
        p
    }

    /// Stderr so far.
    pub fn stderr_text(&self) -> String {
        strip_ansi(&String::from_utf8_lossy(
            &self.stderr.lock().expect("stderr buffer"),
        ))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// SIGTERM, wait for the exit (at most 60 s), and return the status, stderr and final stats.
    pub fn stop(self) -> Stopped {
        self.stop_with(libc::SIGTERM, Duration::from_secs(60))
    }

    /// Sends `sig`, waits for the exit (at most `timeout`), and returns how it ended.
    pub fn stop_with(mut self, sig: libc::c_int, timeout: Duration) -> Stopped {
        let mut child = self.child.take().expect("pystash is running");
        signal(&child, sig);
        let status = match wait_timeout(&mut child, timeout) {
            Some(s) => s,
            None => {
                kill_and_reap(&mut child);
                panic!(
                    "pystash did not exit within {timeout:?} of signal {sig}; stderr:\n{}",
                    self.stderr_text()
                );
            }
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let stderr = self.stderr_text();
        let stats = parse_stats(&stderr);
        Stopped {
            status,
            stderr,
            stats,
        }
    }
}

impl Drop for Pystash {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                signal(&child, libc::SIGTERM);
                if wait_timeout(&mut child, Duration::from_secs(15)).is_none() {
                    kill_and_reap(&mut child);
                }
            }
        }
    }
}

/// Removes ANSI colour sequences (tracing colours its output unless told not to).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `key=value` counters of the last line containing `pystash stats`.
pub fn parse_stats(stderr: &str) -> HashMap<String, u64> {
    let mut map = HashMap::new();
    if let Some(line) = stderr.lines().rev().find(|l| l.contains("pystash stats")) {
        let line = strip_ansi(line);
        for token in line.split(|c: char| c.is_whitespace() || c == ',') {
            if let Some((k, v)) = token.split_once('=') {
                let v = v.trim_matches(|c: char| c == '"' || c == '\'' || c == ',');
                if let Ok(n) = v.parse::<u64>() {
                    map.insert(k.trim_matches('"').to_owned(), n);
                }
            }
        }
    }
    map
}

// ---------------------------------------------------------------------------------------------
// Python clients

/// The interpreter for the clients: `$PYSTASH_PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("PYSTASH_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Absolute path of a script in `tests/clients/`.
pub fn client_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("clients")
        .join(name)
}

/// A Python client running in the background.
pub struct PyClient {
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    label: String,
}

impl PyClient {
    pub fn spawn(script: &str, args: &[&str]) -> PyClient {
        let mut child = Command::new(python())
            .arg(client_script(script))
            .args(args)
            .env("PYTHONIOENCODING", "utf-8")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {} {script}: {e}", python()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            drain(child.stdout.take().expect("stdout pipe"), stdout.clone()),
            drain(child.stderr.take().expect("stderr pipe"), stderr.clone()),
        ];
        PyClient {
            child: Some(child),
            stdout,
            stderr,
            readers,
            label: format!("{script} {args:?}"),
        }
    }

    /// Waits for a clean exit and returns the JSON the client printed.
    pub fn finish(mut self, timeout: Duration) -> Json {
        let mut child = self.child.take().expect("client running");
        let status = wait_timeout(&mut child, timeout);
        if status.is_none() {
            kill_and_reap(&mut child);
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let out = self.stdout.lock().expect("stdout").clone();
        let err = String::from_utf8_lossy(&self.stderr.lock().expect("stderr")).into_owned();
        match status {
            None => panic!(
                "{} did not finish within {timeout:?}; stderr:\n{err}",
                self.label
            ),
            Some(s) if !s.success() => panic!("{} failed ({s}); stderr:\n{err}", self.label),
            Some(_) => {}
        }
        // The handlers report send failures on stderr (logging's handleError) and go on.
        assert!(
            !err.contains("Traceback") && !err.contains("--- Logging error ---"),
            "{} reported errors:\n{err}",
            self.label
        );
        Json::parse_or_panic(&out, &format!("output of {}", self.label))
    }
}

impl Drop for PyClient {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_reap(&mut c);
        }
    }
}

/// Runs a client to the end (2 minutes at most) and returns its JSON output.
pub fn run_client(script: &str, args: &[&str]) -> Json {
    PyClient::spawn(script, args).finish(Duration::from_secs(120))
}

/// Logs `count` records "<prefix> <i>" through a real SocketHandler (`tcp`) or DatagramHandler
/// (`udp`) and returns the client's output.
pub fn send_simple(transport: &str, port: u16, prefix: &str, count: usize) -> Json {
    run_client(
        "stdlib_client.py",
        &[
            "--transport",
            transport,
            "--port",
            &port.to_string(),
            "--scenario",
            "simple",
            "--prefix",
            prefix,
            "--count",
            &count.to_string(),
        ],
    )
}

/// Starts a real SocketHandler logging records numbered 0 to `count` - 1 (attribute `seq`) over
/// TCP at `rate` records per second.
pub fn spawn_seq(port: u16, count: usize, rate: usize) -> PyClient {
    PyClient::spawn(
        "stdlib_client.py",
        &[
            "--transport",
            "tcp",
            "--port",
            &port.to_string(),
            "--scenario",
            "seq",
            "--count",
            &count.to_string(),
            "--rate",
            &rate.to_string(),
        ],
    )
}

// ---------------------------------------------------------------------------------------------
// Raw senders for hand-made input

/// Connects to pystash's TCP port.
pub fn tcp(port: u16) -> TcpStream {
    let s = TcpStream::connect((LOCALHOST, port)).expect("connect to pystash TCP");
    s.set_write_timeout(Some(Duration::from_secs(20)))
        .expect("write timeout");
    s
}

/// Writes `parts` on one connection, then closes it (write side first, so the proxy sees EOF
/// after every byte).
pub fn send_tcp(port: u16, parts: &[&[u8]]) {
    let mut s = tcp(port);
    for p in parts {
        s.write_all(p).expect("write to pystash");
    }
    close(s);
}

/// Half-closes, then waits (bounded) for the proxy to close its side before dropping, so no
/// unread byte turns the close into a reset.
pub fn close(mut s: TcpStream) {
    let _ = s.flush();
    let _ = s.shutdown(Shutdown::Write);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut sink = [0u8; 1024];
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match s.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// Sends each payload as one datagram to pystash's UDP port.
pub fn send_udp(port: u16, datagrams: &[&[u8]]) {
    let s = UdpSocket::bind((LOCALHOST, 0)).expect("bind UDP");
    for d in datagrams {
        s.send_to(d, (LOCALHOST, port)).expect("send datagram");
        // Loopback drops datagrams only when the receiver's buffer is full; keep it from filling.
        thread::sleep(Duration::from_millis(2));
    }
}

/// Decodes a hex string from a Python client.
pub fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

/// Whether the proxy's own docs (README, crate and module docs) promise at-least-once delivery.
pub fn documents_at_least_once() -> bool {
    fn scan(dir: &Path, hit: &mut bool) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                scan(&p, hit);
            } else if p.extension().is_some_and(|x| x == "rs" || x == "md") {
                let text = std::fs::read_to_string(&p)
                    .unwrap_or_default()
                    .to_lowercase();
                if text.contains("at-least-once") || text.contains("at least once") {
                    *hit = true;
                }
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut hit = false;
    scan(&root.join("src"), &mut hit);
    if let Ok(readme) = std::fs::read_to_string(root.join("README.md")) {
        let readme = readme.to_lowercase();
        hit |= readme.contains("at-least-once") || readme.contains("at least once");
    }
    hit
}
