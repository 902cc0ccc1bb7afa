//! Checks of the test harness itself, with no proxy involved: the private redis-server (PING,
//! lists, SIGKILL and restart with AOF on the same port), the stats-line parser, and the Python
//! clients' frames as they leave CPython's handlers.

mod common;

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::thread;
use std::time::Duration;

use common::*;

#[test]
fn redis_server_lists_and_restart_on_the_same_port() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let port = redis.port;
    let mut c = redis.client();
    assert!(c.ping());
    c.ok(&["RPUSH", "k", "a", "b"]);
    assert_eq!(c.llen("k"), 2);
    redis.restart();
    assert_eq!(redis.port, port);
    assert_eq!(
        redis.client().lrange("k"),
        vec![b"a".to_vec(), b"b".to_vec()],
        "AOF kept the list"
    );
    redis.client().del("k");
    assert_eq!(redis.wait_for_len("k", 1, Duration::from_millis(100)), 0);
}

#[test]
fn redis_server_with_password() {
    let redis = RedisServer::start_with(&["--requirepass", "pw"]);
    let mut anonymous = Resp::connect(redis.port).expect("connect");
    assert!(matches!(
        anonymous.cmd(&["LLEN", "x"]),
        Ok(redis_protocol::resp2::types::OwnedFrame::Error(_))
    ));
    assert_eq!(redis.client_in(2).llen("x"), 0);
}

#[test]
fn stats_line_parser() {
    let stderr = "\u{1b}[2m2024-01-01T00:00:00Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m pystash: pystash listening tcp=1\n\
                  INFO pystash: pystash stats received=1 pushed=1\n\
                  \u{1b}[32m INFO\u{1b}[0m pystash: pystash stats \u{1b}[3mreceived\u{1b}[0m\u{1b}[2m=\u{1b}[0m12 pushed=10 dropped=0 rejected=2 redis_errors=0 reconnects=1 rejected_bad_pickle=2\n";
    let stats = parse_stats(stderr);
    assert_eq!(stats.get("received"), Some(&12));
    assert_eq!(stats.get("pushed"), Some(&10));
    assert_eq!(stats.get("rejected_bad_pickle"), Some(&2));
    assert_eq!(stats.get("reconnects"), Some(&1));
}

/// Frames received from a SocketHandler, by their 4-byte length prefixes.
fn count_frames(mut bytes: &[u8]) -> usize {
    let mut n = 0;
    while bytes.len() >= 4 {
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        assert!(bytes.len() >= 4 + len, "a frame is cut short");
        bytes = &bytes[4 + len..];
        n += 1;
    }
    assert!(bytes.is_empty(), "trailing bytes after the last frame");
    n
}

#[test]
fn stdlib_client_sends_one_frame_per_record() {
    let listener = TcpListener::bind((LOCALHOST, 0)).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut all = Vec::new();
        s.read_to_end(&mut all).expect("read");
        all
    });
    let out = run_client(
        "stdlib_client.py",
        &["--transport", "tcp", "--port", &port.to_string()],
    );
    let bytes = server.join().expect("server thread");
    let records = out.at("records").as_array();
    assert_eq!(count_frames(&bytes), records.len());
    let extras = records
        .iter()
        .find(|r| r.at("message").as_str() == Some("extras of every type"))
        .expect("extras record");
    let rendered: Vec<String> = extras
        .at("extras")
        .as_array()
        .iter()
        .map(|kv| kv.to_string())
        .collect();
    for want in [
        r#"["when","2024-01-02T03:04:05.123456"]"#,
        r#"["raw","b'\\x00ab\\xff'"]"#,
        r#"["point","__main__.Point(x=1, y=2)"]"#,
        r#"["st","{1, 2}"]"#,
        r#"["dec","1.50"]"#,
        r#"["uid","12345678-1234-5678-1234-567812345678"]"#,
        r#"["tup",[1,"x",[2,3]]]"#,
    ] {
        assert!(
            rendered.iter().any(|r| r == want),
            "{want} not in {rendered:?}"
        );
    }
    let exc = records
        .iter()
        .find(|r| r.at("message").as_str() == Some("failed op"))
        .expect("exception record");
    assert!(exc
        .at("exc_text")
        .as_str()
        .is_some_and(|t| t.starts_with("Traceback") && t.contains("ZeroDivisionError")));
}

#[test]
fn logstash_client_sends_one_datagram_per_event() {
    let sock = UdpSocket::bind((LOCALHOST, 0)).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let port = sock.local_addr().expect("addr").port();
    let out = run_client(
        "logstash_client.py",
        &["--transport", "udp", "--port", &port.to_string()],
    );
    let payloads = out.at("payloads").as_array();
    let mut buf = vec![0u8; 65536];
    for p in payloads {
        let n = sock.recv(&mut buf).expect("datagram");
        assert_eq!(&buf[..n], p.as_str().expect("payload").as_bytes());
    }
}
