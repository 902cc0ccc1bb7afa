//! Flags (clap) and the validated run configuration they become.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::consume::{PopMode, RedisUrl};
use crate::dist::SizeDist;
use crate::send::Target;
use crate::Format;

/// Open-loop load generator for log proxies that end in a Redis list.
///
/// Sends CPython logging records (SocketHandler pickle frames or JSON lines) over UDP, TCP or
/// a unix socket at a fixed rate, pops the resulting events from Redis as Logstash does, and
/// reports loss, duplicates, reordering and end-to-end latency percentiles.
#[derive(Debug, Parser)]
#[command(
    name = "pystash-loadtest",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// `plot` or `report`; without one, runs a load test.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Load test flags.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Overlay the latency-by-percentile curves of runs (JSON summaries or .hgrm files) in one SVG.
    Plot(PlotArgs),
    /// Print one markdown table of runs (JSON summaries).
    Report(ReportArgs),
}

/// `plot` flags.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Run summaries (`.json`) or HdrHistogram percentile distributions (`.hgrm`).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Where to write the SVG.
    #[arg(short, long, default_value = "latency.svg")]
    pub output: PathBuf,
    /// Title above the plot.
    #[arg(long, default_value = "End-to-end latency by percentile")]
    pub title: String,
    /// Latency axis on a log scale (for runs that differ by orders of magnitude).
    #[arg(long)]
    pub log_y: bool,
}

/// `report` flags.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run summaries (`.json`).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
}

/// Transport to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// One record per datagram (`DatagramHandler`).
    Udp,
    /// Streams over TCP (`SocketHandler`).
    Tcp,
    /// Streams over a unix socket (`SocketHandler(path, None)`).
    Unix,
}

/// Load test flags.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Transport.
    #[arg(long, value_enum, default_value = "udp")]
    pub transport: Transport,
    /// Proxy address (`host:port`, or a path for unix). Default: pystash's ports,
    /// 127.0.0.1:9021 for UDP and 127.0.0.1:9020 for TCP.
    #[arg(long)]
    pub target: Option<String>,
    /// Record encoding: CPython SocketHandler pickle frames, or JSON lines.
    #[arg(long, value_enum, default_value = "pickle")]
    pub format: Format,
    /// Records per second over all senders (`50k`, `1M`), or `max`.
    #[arg(long, default_value = "10k")]
    pub rate: String,
    /// Records to send (`200k`); with --duration, whichever ends first.
    #[arg(long)]
    pub count: Option<String>,
    /// How long to send (`10s`, `500ms`, `2m`). Default 10s when --count is not given.
    #[arg(long)]
    pub duration: Option<String>,
    /// Sender threads.
    #[arg(long, default_value_t = 2)]
    pub senders: usize,
    /// TCP/unix connections, spread over the senders (default: one per sender).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Record size in bytes on the wire: `400`, `200..600`, or a weighted mix like
    /// `300..900@95,4000..16000@5`. Records never shrink below their fields.
    #[arg(long, default_value = "800..1600")]
    pub size: String,
    /// Records per send syscall at most (one sendmmsg or write).
    #[arg(long, default_value_t = 64)]
    pub send_batch: usize,
    /// Redis the proxy writes to.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis: String,
    /// The Redis list.
    #[arg(long, default_value = "logstash")]
    pub queue: String,
    /// How to pop: LRANGE+LTRIM batches in MULTI, BLPOP (one event per round trip), or
    /// exact (LRANGE, then LTRIM with a counter: nothing lost or counted twice when Redis dies
    /// mid-pop; one consumer per list, a producer that appends).
    #[arg(long, value_enum, default_value = "lrange")]
    pub consume: PopMode,
    /// Events per LRANGE (Logstash's batch_count; its default is 125).
    #[arg(long, default_value_t = 1000)]
    pub pop_batch: usize,
    /// Only send; do not read Redis.
    #[arg(long)]
    pub no_consume: bool,
    /// Delete the list before starting (events of earlier runs are otherwise popped and
    /// counted as foreign).
    #[arg(long)]
    pub flush_queue: bool,
    /// After sending, wait this long at most for the remaining events.
    #[arg(long, default_value = "10s")]
    pub drain_timeout: String,
    /// Start even when Redis is not there yet: the consumer connects once it is (a fault test
    /// may start Redis later).
    #[arg(long, conflicts_with = "flush_queue")]
    pub wait_redis: bool,
    /// After sending, stop waiting once nothing arrived for this long (lossy runs otherwise
    /// wait the whole drain timeout).
    #[arg(long)]
    pub quiet_drain: Option<String>,
    /// Write `LABEL.json`, `LABEL.hgrm`, `LABEL.uncorrected.hgrm` and `LABEL.svg` here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Name of this run in files, tables and plots (default: transport-format-rate).
    #[arg(long)]
    pub label: Option<String>,
    /// Print the JSON summary on stdout instead of the text one.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// Seed for field values and sizes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// A validated load test.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Transport.
    pub transport: Transport,
    /// Resolved target.
    pub target: Target,
    /// Target as given, for the summary.
    pub target_text: String,
    /// Encoding.
    pub format: Format,
    /// Records per second over all senders; `None`: max.
    pub rate: Option<f64>,
    /// Records to send over all senders.
    pub count: Option<u64>,
    /// How long to send.
    pub duration: Option<Duration>,
    /// Sender threads.
    pub senders: usize,
    /// Streams: connections for TCP/unix, one per sender for UDP.
    pub streams: usize,
    /// Sizes.
    pub sizes: SizeDist,
    /// Records per syscall.
    pub send_batch: usize,
    /// Redis, or `None` with --no-consume.
    pub redis: Option<RedisUrl>,
    /// The list.
    pub queue: String,
    /// Pop mode.
    pub consume: PopMode,
    /// Events per LRANGE.
    pub pop_batch: usize,
    /// DEL the list first.
    pub flush_queue: bool,
    /// Drain wait.
    pub drain_timeout: Duration,
    /// Stop draining after this long without an event.
    pub quiet_drain: Option<Duration>,
    /// Redis may come up after the start.
    pub wait_redis: bool,
    /// Output directory.
    pub out: Option<PathBuf>,
    /// Run name.
    pub label: String,
    /// JSON on stdout.
    pub json: bool,
    /// Progress lines.
    pub progress: bool,
    /// Seed.
    pub seed: u64,
}

/// Parses `123`, `50k`, `1.5M`, `2G`.
///
/// # Errors
/// Not a non-negative number with an optional k/M/G suffix.
pub fn parse_count(s: &str) -> anyhow::Result<f64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1e3),
        Some((i, 'm' | 'M')) => (&s[..i], 1e6),
        Some((i, 'g' | 'G')) => (&s[..i], 1e9),
        _ => (s, 1.0),
    };
    let v: f64 = num
        .replace('_', "")
        .parse()
        .with_context(|| format!("not a number: {s:?}"))?;
    if !v.is_finite() || v < 0.0 {
        bail!("not a non-negative number: {s:?}");
    }
    Ok(v * mult)
}

/// Parses `10s`, `500ms`, `2m`, `1h`, `250us`, or bare seconds (`1.5`).
///
/// # Errors
/// Not a duration.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num
        .parse()
        .with_context(|| format!("not a duration: {s:?}"))?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1e3,
        "us" => v / 1e6,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => bail!("unknown unit in {s:?} (use us, ms, s, m, h)"),
    };
    Duration::try_from_secs_f64(secs).with_context(|| format!("not a duration: {s:?}"))
}

fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("cannot resolve {addr:?} (want host:port)"))?
        .next()
        .with_context(|| format!("{addr:?} resolves to nothing"))
}

/// Keeps a label usable as a file name.
fn file_safe(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl RunConfig {
    /// Validates the flags.
    ///
    /// # Errors
    /// A flag is malformed or contradicts another.
    pub fn from_args(a: RunArgs) -> anyhow::Result<RunConfig> {
        let target_text = a.target.clone().unwrap_or_else(|| {
            match a.transport {
                Transport::Udp => "127.0.0.1:9021",
                Transport::Tcp => "127.0.0.1:9020",
                Transport::Unix => "",
            }
            .to_string()
        });
        let target = match a.transport {
            Transport::Udp => Target::Udp(resolve(&target_text)?),
            Transport::Tcp => Target::Tcp(resolve(&target_text)?),
            Transport::Unix => {
                if target_text.is_empty() {
                    bail!("--transport unix needs --target PATH");
                }
                Target::Unix(PathBuf::from(&target_text))
            }
        };
        let rate = if a.rate.eq_ignore_ascii_case("max") {
            None
        } else {
            let r = parse_count(&a.rate).context("--rate")?;
            if r < 1.0 {
                bail!("--rate must be at least 1 record per second, or max");
            }
            Some(r)
        };
        let count = a
            .count
            .as_deref()
            .map(parse_count)
            .transpose()
            .context("--count")?;
        let count = count.map(|c| c.round() as u64);
        let duration = match (&a.duration, count) {
            (Some(d), _) => Some(parse_duration(d).context("--duration")?),
            (None, None) => Some(Duration::from_secs(10)),
            (None, Some(_)) => None,
        };
        if a.senders == 0 || a.senders > 256 {
            bail!("--senders must be 1..=256");
        }
        let (senders, streams) = match a.transport {
            Transport::Udp => {
                if a.connections.is_some() {
                    bail!("--connections is for tcp and unix; UDP uses one socket per sender");
                }
                (a.senders, a.senders)
            }
            Transport::Tcp | Transport::Unix => {
                let conns = a.connections.unwrap_or(a.senders);
                if conns == 0 || conns > 4096 {
                    bail!("--connections must be 1..=4096");
                }
                (a.senders.min(conns), conns)
            }
        };
        let sizes: SizeDist = a.size.parse()?;
        if a.transport == Transport::Udp && sizes.max() > 65_507 {
            bail!("--size: a UDP datagram holds at most 65507 bytes");
        }
        if a.send_batch == 0 || a.send_batch > 1024 {
            bail!("--send-batch must be 1..=1024 (sendmmsg takes at most 1024)");
        }
        if a.pop_batch == 0 {
            bail!("--pop-batch must be positive");
        }
        let redis = if a.no_consume {
            None
        } else {
            Some(a.redis.parse()?)
        };
        let label = a.label.unwrap_or_else(|| {
            let rate = match rate {
                None => "max".to_string(),
                Some(r) if r >= 1000.0 && r % 1000.0 == 0.0 => format!("{}k", r / 1000.0),
                Some(r) => format!("{r}"),
            };
            format!("{:?}-{:?}-{rate}", a.transport, a.format).to_lowercase()
        });
        Ok(RunConfig {
            transport: a.transport,
            target,
            target_text,
            format: a.format,
            rate,
            count,
            duration,
            senders,
            streams,
            sizes,
            send_batch: a.send_batch,
            redis,
            queue: a.queue,
            consume: a.consume,
            pop_batch: a.pop_batch,
            flush_queue: a.flush_queue,
            drain_timeout: parse_duration(&a.drain_timeout).context("--drain-timeout")?,
            wait_redis: a.wait_redis,
            quiet_drain: a
                .quiet_drain
                .as_deref()
                .map(parse_duration)
                .transpose()
                .context("--quiet-drain")?,
            out: a.out,
            label: file_safe(&label),
            json: a.json,
            progress: !a.quiet,
            seed: a.seed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> anyhow::Result<RunConfig> {
        let mut argv = vec!["pystash-loadtest"];
        argv.extend_from_slice(extra);
        let cli = Cli::try_parse_from(argv)?;
        RunConfig::from_args(cli.run)
    }

    #[test]
    fn numbers_and_durations() {
        assert_eq!(parse_count("50k").unwrap(), 50_000.0);
        assert_eq!(parse_count("1.5M").unwrap(), 1_500_000.0);
        assert_eq!(parse_count("200_000").unwrap(), 200_000.0);
        assert!(parse_count("-1").is_err() && parse_count("k").is_err());
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("3 parsecs").is_err() && parse_duration("-1s").is_err());
    }

    #[test]
    fn defaults_point_at_pystash() {
        let c = args(&[]).unwrap();
        assert!(matches!(c.target, Target::Udp(a) if a.to_string() == "127.0.0.1:9021"));
        assert_eq!(
            (c.rate, c.count, c.duration),
            (Some(10_000.0), None, Some(Duration::from_secs(10)))
        );
        assert_eq!(c.label, "udp-pickle-10k");
        let c = args(&["--transport", "tcp", "--rate", "max", "--count", "200k"]).unwrap();
        assert!(matches!(c.target, Target::Tcp(a) if a.port() == 9020));
        assert_eq!((c.rate, c.count, c.duration), (None, Some(200_000), None));
        assert_eq!(c.label, "tcp-pickle-max");
    }

    #[test]
    fn connections_spread_over_senders() {
        let c = args(&["--transport", "tcp", "--connections", "8", "--senders", "2"]).unwrap();
        assert_eq!((c.senders, c.streams), (2, 8));
        let c = args(&["--transport", "tcp", "--connections", "1", "--senders", "4"]).unwrap();
        assert_eq!((c.senders, c.streams), (1, 1));
        assert!(args(&["--connections", "4"]).is_err());
        assert!(args(&["--transport", "unix"]).is_err());
        assert!(args(&["--size", "70000"]).is_err());
        assert!(args(&["--rate", "0"]).is_err());
    }
}
