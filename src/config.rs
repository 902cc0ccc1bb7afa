//! Command-line flags ([`Args`], parsed by clap) and the validated [`Config`] built from them.
//!
//! Flags of the original pystash CLI keep their names, meanings and defaults, so an existing
//! deployment can swap binaries.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use thiserror::Error;

use crate::event::{EventConfig, LogstashVersion};
use crate::redis::pipeline::PushCommand;
use crate::spool::{FsyncPolicy, SpoolConfig};

/// Raw flags, as typed.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "pystash",
    version,
    about = "Forwards Python logging records (SocketHandler/DatagramHandler pickles, JSON lines) \
             to a Redis list as Logstash events"
)]
pub struct Args {
    /// IP address to listen on.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub bind_ip: IpAddr,
    /// TCP port to listen on (CPython SocketHandler, JSON lines). 0 picks a free port.
    #[arg(long, value_name = "PORT", default_value_t = 9020)]
    pub tcp_port: u16,
    /// UDP port to listen on (CPython DatagramHandler, one JSON object per datagram).
    #[arg(long, value_name = "PORT", default_value_t = 9021)]
    pub udp_port: u16,
    /// Also listen on this unix stream socket (`SocketHandler(path, None)`).
    #[arg(long, value_name = "PATH")]
    pub unix: Option<PathBuf>,
    /// Redis host.
    #[arg(long, value_name = "HOST", default_value = "localhost")]
    pub redis_host: String,
    /// Redis port.
    #[arg(long, value_name = "PORT", default_value_t = 6379)]
    pub redis_port: u16,
    /// Name of the Redis list.
    #[arg(long, value_name = "NAME", default_value = "logstash")]
    pub redis_queue: String,
    /// Connect to Redis through this unix socket (Redis's `unixsocket`) instead of
    /// --redis-host and --redis-port, for a Redis that listens only there.
    #[arg(long, value_name = "PATH")]
    pub redis_socket: Option<PathBuf>,
    /// `redis://[user:password@]host[:port][/db]`, or `unix://[user:password@]/path[?db=N]`
    /// for a unix socket; overrides --redis-host, --redis-port and --redis-socket.
    /// Prefer PYSTASH_REDIS_URL or --redis-url-file for passwords: the command line is public.
    #[arg(
        long,
        value_name = "URL",
        env = "PYSTASH_REDIS_URL",
        hide_env_values = true
    )]
    pub redis_url: Option<String>,
    /// Read the Redis URL from the first line of this file.
    #[arg(long, value_name = "PATH", conflicts_with = "redis_url")]
    pub redis_url_file: Option<PathBuf>,
    /// Pause pushing while the Redis list is longer than this (like Logstash's
    /// `congestion_threshold`); records wait in the buffer meanwhile.
    #[arg(long, value_name = "N")]
    pub max_queue_length: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9022).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Overflow records that do not fit in memory (Redis down, slow or congested) into an
    /// on-disk spool in this directory; it is replayed in order, also after a restart.
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Bytes the spool may hold (over all workers); when full, streams wait and datagrams are
    /// dropped and counted.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30)]
    pub spool_max_bytes: u64,
    /// When spooled records are fsync'ed: `always` (every loop turn that wrote), `interval`
    /// (every second) or `never` (left to the OS).
    #[arg(long, value_enum, default_value = "interval")]
    pub spool_fsync: FsyncArg,
    /// Permissions of the --unix socket, in octal.
    #[arg(long, value_name = "MODE", default_value = "660", value_parser = parse_mode)]
    pub unix_mode: u32,
    /// Which end of the list to push to (Logstash's redis input reads from the head).
    #[arg(long, value_enum, default_value = "rpush")]
    pub push: PushArg,
    /// The events' `type`.
    #[arg(long, value_name = "TYPE", default_value = "pystash")]
    pub message_type: String,
    /// Use the fully qualified domain name as `host`.
    #[arg(long)]
    pub fqdn: bool,
    /// The events' `host` (default: this machine's hostname).
    #[arg(long, value_name = "NAME")]
    pub host_name: Option<String>,
    /// Logstash event layout: 1 (`@version: 1`) or 0 (`@fields`).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub logstash_version: u8,
    /// Tags added to every event, comma-separated.
    #[arg(long, value_name = "TAGS", value_delimiter = ',')]
    pub logstash_tags: Vec<String>,
    /// Largest frame accepted; larger ones are skipped and counted.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub max_record_bytes: usize,
    /// Records held for Redis at most (over all workers). When full, UDP records are dropped
    /// and counted; streams are no longer read until there is room.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub buffer_records: usize,
    /// Seconds to keep flushing to Redis after SIGINT/SIGTERM.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub shutdown_timeout: f64,
    /// Seconds between counter reports at info level (0: only at exit).
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub stats_interval: f64,
    /// Worker threads, each with its own sockets (SO_REUSEPORT) and Redis connection.
    /// Default: one per core.
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Stream connections (TCP and unix) held at most per worker; more are closed at once and
    /// counted.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Seconds a stream may sit on a frame it began without finishing it (a slow or stuck
    /// sender) before it is closed and counted.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub frame_timeout: f64,
    /// Seconds a stream may send nothing before it is closed (0: never). CPython's
    /// SocketHandler loses the record it sends on a connection closed this way.
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    pub idle_timeout: f64,
    /// I/O engine: io_uring, epoll, or auto (io_uring when the kernel allows it, else epoll).
    #[arg(long, value_enum, default_value = "auto")]
    pub io_engine: IoEngine,
    /// UDP receive buffer asked for per socket (SO_RCVBUF; SO_RCVBUFFORCE past
    /// net.core.rmem_max when running as root).
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
    pub udp_recv_buffer: usize,
}

/// `--io-engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IoEngine {
    /// io_uring when the kernel allows it, else epoll.
    Auto,
    /// io_uring: completion-based, multishot receives into provided buffer rings.
    Uring,
    /// epoll: readiness-based, recvmmsg batches.
    Epoll,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("{s:?} is not an octal mode like 660"))
}

/// `--spool-fsync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FsyncArg {
    /// fsync after every loop turn that appended.
    Always,
    /// fsync at most once a second.
    Interval,
    /// Never fsync.
    Never,
}

/// `--push`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PushArg {
    /// RPUSH (append to the tail).
    Rpush,
    /// LPUSH (prepend to the head).
    Lpush,
}

/// Where Redis is and how to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// A unix socket to connect to instead of `host` and `port`.
    pub socket: Option<PathBuf>,
    /// `AUTH` user, if any (Redis 6 ACL).
    pub user: Option<String>,
    /// `AUTH` password, if any.
    pub password: Option<String>,
    /// `SELECT` database, if not 0.
    pub db: u32,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub bind_ip: IpAddr,
    /// TCP port.
    pub tcp_port: u16,
    /// UDP port.
    pub udp_port: u16,
    /// Optional unix socket path.
    pub unix: Option<PathBuf>,
    /// Its permissions.
    pub unix_mode: u32,
    /// `--max-queue-length`.
    pub max_queue_length: Option<u64>,
    /// `--metrics`.
    pub metrics: Option<std::net::SocketAddr>,
    /// `--spool-dir` and friends, per worker.
    pub spool: Option<SpoolConfig>,
    /// Redis server.
    pub redis: RedisTarget,
    /// The list's key.
    pub queue: Bytes,
    /// RPUSH or LPUSH.
    pub push: PushCommand,
    /// Event layout and constant fields.
    pub event: EventConfig,
    /// `--max-record-bytes`.
    pub max_record_bytes: usize,
    /// `--buffer-records`, for the whole process.
    pub buffer_records: usize,
    /// `--shutdown-timeout`.
    pub shutdown_timeout: Duration,
    /// `--stats-interval`; `None` reports only at exit.
    pub stats_interval: Option<Duration>,
    /// Worker threads.
    pub workers: usize,
    /// `--max-connections`, per worker.
    pub max_connections: usize,
    /// `--frame-timeout`.
    pub frame_timeout: Duration,
    /// `--idle-timeout`; `None` when 0.
    pub idle_timeout: Option<Duration>,
    /// `--io-engine`.
    pub io_engine: IoEngine,
    /// `--udp-recv-buffer`.
    pub udp_recv_buffer: usize,
}

impl fmt::Display for RedisTarget {
    /// Where Redis is, for logs: `host:port` or the socket's path; never the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.socket {
            Some(path) => write!(f, "{}", path.display()),
            None if self.host.contains(':') => write!(f, "[{}]:{}", self.host, self.port),
            None => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// A flag with a value that cannot work.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// `--redis-url` is not `redis://[user:password@]host[:port][/db]`.
    #[error("--redis-url: {0}")]
    RedisUrl(String),
    /// `--redis-url-file` cannot be read.
    #[error("--redis-url-file {path}: {source}")]
    RedisUrlFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A number out of range.
    #[error("{flag}: {why}")]
    Range {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        why: &'static str,
    },
}

fn seconds(flag: &'static str, secs: f64) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(secs).map_err(|_| ConfigError::Range {
        flag,
        why: "must be a non-negative number of seconds",
    })
}

impl Config {
    /// Validates `args`. `host` is this machine's name as the events should carry it, used
    /// unless `--host-name` is given.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the flag.
    pub fn from_args(args: Args, host: impl FnOnce(bool) -> String) -> Result<Config, ConfigError> {
        let from_file = match &args.redis_url_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::RedisUrlFile {
                        path: path.clone(),
                        source,
                    })?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        let redis = match from_file.as_ref().or(args.redis_url.as_ref()) {
            Some(url) => parse_redis_url(url)?,
            None => RedisTarget {
                host: args.redis_host.clone(),
                port: args.redis_port,
                socket: args.redis_socket.clone(),
                user: None,
                password: None,
                db: 0,
            },
        };
        if args.max_record_bytes == 0 || args.max_record_bytes > MAX_RECORD_BYTES_CAP {
            return Err(ConfigError::Range {
                flag: "--max-record-bytes",
                why: "must be between 1 and 16777215 (a 16 MiB frame's length prefix must \
                      start with a zero byte)",
            });
        }
        let workers = args
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if workers == 0 || workers > 1024 {
            return Err(ConfigError::Range {
                flag: "--workers",
                why: "must be between 1 and 1024",
            });
        }
        if args.buffer_records < workers {
            return Err(ConfigError::Range {
                flag: "--buffer-records",
                why: "must be at least the number of workers",
            });
        }
        if args.udp_recv_buffer == 0 || args.udp_recv_buffer > i32::MAX as usize {
            return Err(ConfigError::Range {
                flag: "--udp-recv-buffer",
                why: "must be between 1 and 2147483647",
            });
        }
        let stats_interval = seconds("--stats-interval", args.stats_interval)?;
        Ok(Config {
            bind_ip: args.bind_ip,
            tcp_port: args.tcp_port,
            udp_port: args.udp_port,
            unix: args.unix,
            unix_mode: args.unix_mode,
            max_queue_length: args.max_queue_length,
            metrics: args.metrics,
            spool: args.spool_dir.map(|dir| SpoolConfig {
                dir,
                max_bytes: args.spool_max_bytes / workers as u64,
                segment_bytes: (args.spool_max_bytes / workers as u64 / 8).clamp(1 << 16, 64 << 20),
                fsync: match args.spool_fsync {
                    FsyncArg::Always => FsyncPolicy::Always,
                    FsyncArg::Interval => FsyncPolicy::Interval(Duration::from_secs(1)),
                    FsyncArg::Never => FsyncPolicy::Never,
                },
            }),
            redis,
            queue: Bytes::from(args.redis_queue.into_bytes()),
            push: match args.push {
                PushArg::Rpush => PushCommand::Rpush,
                PushArg::Lpush => PushCommand::Lpush,
            },
            event: EventConfig {
                version: if args.logstash_version == 0 {
                    LogstashVersion::V0
                } else {
                    LogstashVersion::V1
                },
                host: args.host_name.unwrap_or_else(|| host(args.fqdn)),
                message_type: args.message_type,
                tags: args
                    .logstash_tags
                    .into_iter()
                    .filter(|t| !t.is_empty())
                    .collect(),
            },
            max_record_bytes: args.max_record_bytes,
            buffer_records: args.buffer_records,
            shutdown_timeout: seconds("--shutdown-timeout", args.shutdown_timeout)?,
            stats_interval: (!stats_interval.is_zero()).then_some(stats_interval),
            workers,
            max_connections: args.max_connections,
            frame_timeout: seconds("--frame-timeout", args.frame_timeout)?,
            idle_timeout: Some(seconds("--idle-timeout", args.idle_timeout)?)
                .filter(|t| !t.is_zero()),
            io_engine: args.io_engine,
            udp_recv_buffer: args.udp_recv_buffer,
        })
    }
}

/// Frames must stay under 16 MiB so a length prefix starts with 0x00 and is told apart from a
/// text line by its first byte.
const MAX_RECORD_BYTES_CAP: usize = (1 << 24) - 1;

/// Parses `redis://[[user]:password@]host[:port][/db]` or
/// `unix://[[user]:password@]/path/to/socket[?db=N]` (the form redis-py takes).
///
/// # Errors
/// [`ConfigError::RedisUrl`] saying what is wrong.
pub fn parse_redis_url(url: &str) -> Result<RedisTarget, ConfigError> {
    let bad = |why: &str| ConfigError::RedisUrl(why.to_owned());
    if let Some(rest) = url.strip_prefix("unix://") {
        return parse_unix_url(rest);
    }
    let rest = url
        .strip_prefix("redis://")
        .ok_or_else(|| bad("must start with redis:// or unix://"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, password) = credentials(userinfo)?;
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("unclosed [ in host"))?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| bad("port is not a number"))?,
        None => 6379,
    };
    let db = match path.split('?').next().unwrap_or("") {
        "" => 0,
        db => db.parse().map_err(|_| bad("database is not a number"))?,
    };
    Ok(RedisTarget {
        host: if host.is_empty() { "localhost" } else { host }.to_owned(),
        port,
        socket: None,
        user,
        password,
        db,
    })
}

/// The part of a `unix://` URL after the scheme: `[[user]:password@]/path[?db=N]`.
fn parse_unix_url(rest: &str) -> Result<RedisTarget, ConfigError> {
    let bad = |why: &str| ConfigError::RedisUrl(why.to_owned());
    // The path starts at the first `/`; credentials, if any, end with the `@` before it.
    let start = rest
        .find('/')
        .ok_or_else(|| bad("unix:// needs an absolute socket path"))?;
    let userinfo = match &rest[..start] {
        "" => None,
        info => Some(
            info.strip_suffix('@')
                .ok_or_else(|| bad("unix:// credentials must end with @"))?,
        ),
    };
    let (user, password) = credentials(userinfo)?;
    let (path, query) = rest[start..]
        .split_once('?')
        .unwrap_or((&rest[start..], ""));
    let mut db = 0;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("db", n)) => db = n.parse().map_err(|_| bad("database is not a number"))?,
            _ => return Err(bad("unix:// takes only ?db=N")),
        }
    }
    Ok(RedisTarget {
        host: "localhost".to_owned(),
        port: 6379,
        socket: Some(PathBuf::from(percent_decode(path)?)),
        user,
        password,
        db,
    })
}

/// The user and password of a URL's `[user][:password]` part.
fn credentials(userinfo: Option<&str>) -> Result<(Option<String>, Option<String>), ConfigError> {
    Ok(match userinfo {
        None => (None, None),
        Some(info) => {
            let (user, password) = match info.split_once(':') {
                Some((u, p)) => (percent_decode(u)?, Some(percent_decode(p)?)),
                None => (percent_decode(info)?, None),
            };
            ((!user.is_empty()).then_some(user), password)
        }
    })
}

fn percent_decode(s: &str) -> Result<String, ConfigError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ConfigError::RedisUrl("bad %-escape".to_owned()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ConfigError::RedisUrl("credentials are not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, port: u16, user: Option<&str>, pw: Option<&str>, db: u32) -> RedisTarget {
        RedisTarget {
            host: host.into(),
            port,
            socket: None,
            user: user.map(Into::into),
            password: pw.map(Into::into),
            db,
        }
    }

    #[test]
    fn redis_urls() {
        let cases = [
            (
                "redis://localhost",
                target("localhost", 6379, None, None, 0),
            ),
            ("redis://h:7000/3", target("h", 7000, None, None, 3)),
            (
                "redis://:s%40cret@h/1",
                target("h", 6379, None, Some("s@cret"), 1),
            ),
            (
                "redis://u:p:w@h:1/",
                target("h", 1, Some("u"), Some("p:w"), 0),
            ),
            ("redis://[::1]:6380/2", target("::1", 6380, None, None, 2)),
            ("redis://", target("localhost", 6379, None, None, 0)),
        ];
        for (url, want) in cases {
            assert_eq!(parse_redis_url(url).unwrap(), want, "{url}");
        }
        for bad in ["http://h", "redis://h:x", "redis://h/db", "redis://:%zz@h"] {
            assert!(parse_redis_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unix_socket_urls() {
        let unix = |path: &str, user: Option<&str>, pw: Option<&str>, db: u32| RedisTarget {
            socket: Some(PathBuf::from(path)),
            ..target("localhost", 6379, user, pw, db)
        };
        let cases = [
            (
                "unix:///run/redis/redis.sock",
                unix("/run/redis/redis.sock", None, None, 0),
            ),
            (
                "unix:///tmp/r.sock?db=3",
                unix("/tmp/r.sock", None, None, 3),
            ),
            (
                "unix://u:s%40cret@/tmp/r%20s.sock?db=1",
                unix("/tmp/r s.sock", Some("u"), Some("s@cret"), 1),
            ),
            (
                "unix://:pw@/tmp/r.sock",
                unix("/tmp/r.sock", None, Some("pw"), 0),
            ),
        ];
        for (url, want) in cases {
            assert_eq!(parse_redis_url(url).unwrap(), want, "{url}");
        }
        for bad in [
            "unix://",
            "unix://relative.sock",
            "unix://u:p/tmp/r.sock",
            "unix:///tmp/r.sock?db=x",
            "unix:///tmp/r.sock?timeout=1",
        ] {
            assert!(parse_redis_url(bad).is_err(), "{bad}");
        }
        let args = Args::parse_from(["pystash", "--redis-socket", "/tmp/r.sock"]);
        let c = Config::from_args(args, |_| String::new()).unwrap();
        assert_eq!(c.redis.socket, Some(PathBuf::from("/tmp/r.sock")));
        assert_eq!(c.redis.to_string(), "/tmp/r.sock");
        assert_eq!(target("::1", 6380, None, None, 0).to_string(), "[::1]:6380");
    }

    #[test]
    fn defaults_match_the_original_cli() {
        let args = Args::parse_from(["pystash"]);
        let c = Config::from_args(args, |fqdn| if fqdn { "a.b" } else { "a" }.into()).unwrap();
        assert_eq!(c.tcp_port, 9020);
        assert_eq!(c.udp_port, 9021);
        assert_eq!(c.bind_ip.to_string(), "127.0.0.1");
        assert_eq!(c.redis, target("localhost", 6379, None, None, 0));
        assert_eq!(&c.queue[..], b"logstash");
        assert_eq!(c.event.message_type, "pystash");
        assert_eq!(c.event.host, "a");
        assert!(c.event.tags.is_empty());
        assert_eq!(c.io_engine, IoEngine::Auto);
        assert_eq!(c.udp_recv_buffer, 16 << 20);
        let args = Args::parse_from([
            "pystash",
            "--fqdn",
            "--logstash-tags",
            "x,y",
            "--logstash-version",
            "0",
        ]);
        let c = Config::from_args(args, |fqdn| if fqdn { "a.b" } else { "a" }.into()).unwrap();
        assert_eq!(c.event.host, "a.b");
        assert_eq!(c.event.tags, ["x", "y"]);
        assert_eq!(c.event.version, LogstashVersion::V0);
        assert!(Args::try_parse_from(["pystash", "--logstash-version", "2"]).is_err());
        let args = Args::parse_from(["pystash", "--max-record-bytes", "16777216"]);
        assert!(Config::from_args(args, |_| String::new()).is_err());
    }
}
