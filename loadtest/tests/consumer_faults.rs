//! The consumer against a real redis-server that is SIGKILLed and restarted, then SIGSTOPped
//! and continued, mid-drain: it reconnects (or waits), and every event is tallied exactly once.
//!
//! Redis runs with `--appendonly yes --appendfsync always`, so what it acknowledged survives
//! the kill and a missing event would be the consumer's fault.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pystash_loadtest::consume::{Conn, Consumer, Pop, PopMode, RedisUrl};
use pystash_loadtest::Clock;

const RUN: u32 = 7;

/// A private redis-server with an append-only file in its own directory; killed on drop.
struct Redis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Redis {
    fn start() -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!(
            "pystash-loadtest-consumer-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Redis {
            port,
            dir,
            child: None,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        self.child = Some(child);
        // Up once it answers PING (not LOADING its append-only file).
        let deadline = Instant::now() + Duration::from_secs(20);
        while !Conn::connect(&self.url()).is_ok_and(|mut c| c.simple(&[b"PING"]).is_ok()) {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.as_ref().unwrap().id() as libc::pid_t;
        // Safety: kill(2) on the PID of our own child, not yet reaped.
        unsafe {
            libc::kill(pid, sig);
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> RedisUrl {
        format!("redis://127.0.0.1:{}", self.port).parse().unwrap()
    }

    /// Appends events `seqs` of stream 0, 500 per `RPUSH`.
    fn push(&self, seqs: std::ops::Range<u64>) {
        let mut c = Conn::connect(&self.url()).unwrap();
        let events: Vec<String> = seqs
            .map(|seq| {
                format!(
                    r#"{{"message":"m","lt_run":{RUN},"lt_stream":0,"lt_seq":{seq},"lt_due_ns":1,"lt_sent_ns":2}}"#
                )
            })
            .collect();
        for chunk in events.chunks(500) {
            let mut args: Vec<&[u8]> = vec![b"RPUSH", b"logstash"];
            args.extend(chunk.iter().map(|e| e.as_bytes()));
            c.simple(&args).unwrap();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal(libc::SIGCONT);
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls, retrying transient errors as the run loop does, until `n` events were delivered.
fn poll_until(c: &mut Consumer, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.tally.tracker.delivered() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} delivered",
            c.tally.tracker.delivered()
        );
        match c.poll() {
            Ok(0) => std::thread::sleep(Duration::from_millis(1)),
            Ok(_) => {}
            Err(e) if e.is_transient() => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn a_consumer_made_before_redis_connects_once_it_is_up() {
    let mut redis = Redis::start();
    redis.kill();
    let pop = Pop {
        url: redis.url(),
        queue: "logstash".into(),
        mode: PopMode::Lrange,
        batch: 100,
        block: Duration::from_millis(100),
    };
    let mut c = Consumer::new(&pop, RUN, 1, Clock::start());
    assert!(c.poll().unwrap_err().is_transient());
    redis.spawn();
    redis.push(0..250);
    poll_until(&mut c, 250);
    // The first connection is not a reconnection.
    assert_eq!((c.reconnects, c.uncertain_pops), (0, 0));
}

#[test]
fn exact_consumer_survives_redis_kill_and_stop() {
    let mut redis = Redis::start();
    redis.push(0..3000);
    let pop = Pop {
        url: redis.url(),
        queue: "logstash".into(),
        mode: PopMode::Exact,
        batch: 100,
        block: Duration::from_millis(100),
    };
    let mut c = Consumer::connect(&pop, RUN, 1, Clock::start()).unwrap();
    poll_until(&mut c, 500);

    // Killed mid-drain: the next polls fail until it is back with its append-only file.
    redis.kill();
    let err = c.poll().unwrap_err();
    assert!(err.is_transient(), "{err}");
    redis.spawn();
    poll_until(&mut c, 3000);
    assert!(c.reconnects >= 1, "reconnects {}", c.reconnects);

    // Stopped (a hung Redis): the consumer waits on the same connection, then goes on.
    redis.push(3000..4000);
    let reconnects = c.reconnects;
    redis.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    let cont = {
        let pid = redis.child.as_ref().unwrap().id() as libc::pid_t;
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1000));
            // Safety: kill(2) on the test's redis-server child, which the test still owns.
            unsafe {
                libc::kill(pid, libc::SIGCONT);
            }
        })
    };
    poll_until(&mut c, 4000);
    cont.join().unwrap();
    assert!(stopped.elapsed() >= Duration::from_millis(900));
    assert_eq!(c.reconnects, reconnects, "a slow Redis is waited for");

    let t = &c.tally.tracker;
    assert_eq!((t.delivered(), t.duplicates(), t.foreign()), (4000, 0, 0));
    assert_eq!(c.uncertain_pops, 0);
    let mut check = Conn::connect(&redis.url()).unwrap();
    check.simple(&[b"PING"]).unwrap();
    c.finish();
}
