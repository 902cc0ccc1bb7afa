//! One load test: senders and the consumer on their own threads, progress on stderr, then the
//! summary and its files.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::config::RunConfig;
use crate::consume::{ConsumeError, Consumer, Pop, PopMode};
use crate::dist::Rng;
use crate::hist::{self, Latency, Percentiles};
use crate::plot::{self, Series};
use crate::record::RecordGen;
use crate::send::{Plan, SendStats, Sender};
use crate::summary::{OtherRunCounts, RunInfo, Summary};
use crate::track::Tracker;
use crate::Clock;

/// Progress lines start once a run is this old, so short runs print none.
const PROGRESS_AFTER: Duration = Duration::from_secs(2);
/// How often progress is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How long `exact` polling sleeps on an empty list.
const EMPTY_SLEEP: Duration = Duration::from_millis(1);
/// How long BLPOP blocks.
const BLPOP_BLOCK: Duration = Duration::from_millis(100);

/// Splits the run over the senders: streams dealt round-robin, count and rate shared evenly.
pub fn plans(cfg: &RunConfig) -> Vec<Plan> {
    let n = cfg.senders;
    (0..n)
        .map(|i| {
            let streams: Vec<u32> = (i..cfg.streams).step_by(n).map(|s| s as u32).collect();
            let count = cfg
                .count
                .map(|c| c / n as u64 + u64::from((i as u64) < c % n as u64));
            Plan {
                streams,
                rate: cfg.rate.map(|r| r / n as f64),
                count,
                duration: cfg.duration,
                batch: cfg.send_batch,
            }
        })
        .collect()
}

/// What the consumer thread shares while it runs.
#[derive(Default)]
struct Live {
    sending_done: AtomicBool,
    delivered: AtomicU64,
    last_latency_ns: AtomicU64,
    /// Clock time of the last first-delivery, ns since the clock's start.
    last_delivery_ns: AtomicU64,
}

/// When the consumer stops after sending ended.
#[derive(Debug, Clone, Copy)]
struct Drain {
    /// At the latest this long after sending ended.
    timeout: Duration,
    /// Once nothing arrived for this long (sending's end counts as an arrival).
    quiet: Option<Duration>,
}

/// How long the list must stay empty, once this run's records are all in, before records of
/// other runs (a second generator on the same list) are taken as all in too.
const OTHERS_QUIET: Duration = Duration::from_secs(1);
/// Backoff between attempts while Redis is away.
const RETRY_MIN: Duration = Duration::from_millis(20);
const RETRY_MAX: Duration = Duration::from_millis(500);

fn consume_loop(
    mut consumer: Consumer,
    live: &Live,
    stats: &SendStats,
    clock: Clock,
    drain: Drain,
    mode: PopMode,
) -> (Consumer, Option<ConsumeError>) {
    let mut deadline = None;
    let mut delivered = 0;
    let mut last_event = Instant::now();
    let mut backoff = RETRY_MIN;
    let mut empty = false;
    loop {
        if deadline.is_none() && live.sending_done.load(Ordering::Acquire) {
            let now = Instant::now();
            deadline = Some(now + drain.timeout);
            consumer.give_up_at(now + drain.timeout);
            last_event = now;
        }
        let polled = if empty {
            consumer.poll_wait()
        } else {
            consumer.poll()
        };
        let n = match polled {
            Ok(n) => {
                backoff = RETRY_MIN;
                n
            }
            Err(e) if e.is_transient() => {
                // Redis went away or is loading: try again until the drain deadline. Time
                // without Redis is not quiet time: the records may be waiting in the proxy.
                last_event = Instant::now();
                let left = deadline.map_or(backoff, |d: Instant| {
                    d.saturating_duration_since(Instant::now())
                });
                if left.is_zero() {
                    return (consumer, Some(e));
                }
                thread::sleep(backoff.min(left));
                backoff = (backoff * 2).min(RETRY_MAX);
                continue;
            }
            Err(e) => return (consumer, Some(e)),
        };
        if n > 0 {
            last_event = Instant::now();
        }
        let d = consumer.tally.tracker.delivered();
        if d > delivered {
            delivered = d;
            live.delivered.store(d, Ordering::Relaxed);
            live.last_delivery_ns
                .store(clock.elapsed_ns(), Ordering::Relaxed);
            live.last_latency_ns
                .store(consumer.tally.last_latency_ns, Ordering::Relaxed);
        }
        if let Some(deadline) = deadline {
            let quiet_for = last_event.elapsed();
            let others_in = consumer.tally.others.is_empty()
                || quiet_for >= drain.quiet.unwrap_or(OTHERS_QUIET);
            if (delivered >= stats.total() && others_in)
                || drain.quiet.is_some_and(|q| quiet_for >= q)
                || Instant::now() >= deadline
            {
                return (consumer, None);
            }
        }
        // An empty lrange batch is followed by a BLPOP that wakes on the next push; exact
        // mode (no atomic pop to block on) sleeps.
        empty = n == 0;
        if empty && mode == PopMode::Exact {
            thread::sleep(EMPTY_SLEEP);
        }
    }
}

fn rate_text(per_sec: f64) -> String {
    if per_sec >= 1e6 {
        format!("{:.2}M/s", per_sec / 1e6)
    } else if per_sec >= 1e3 {
        format!("{:.1}k/s", per_sec / 1e3)
    } else {
        format!("{per_sec:.0}/s")
    }
}

/// Prints one progress line per second until `done` says stop.
struct Progress {
    enabled: bool,
    started: Instant,
    last: Instant,
    last_sent: u64,
    last_delivered: u64,
}

impl Progress {
    fn tick(&mut self, stats: &SendStats, live: &Live, consuming: bool) {
        let now = Instant::now();
        if !self.enabled || now < self.started + PROGRESS_AFTER || now < self.last + PROGRESS_EVERY
        {
            return;
        }
        let dt = (now - self.last).as_secs_f64();
        let sent = stats.total();
        let delivered = live.delivered.load(Ordering::Relaxed);
        let mut line = format!(
            "[{:6.1}s] sent {sent} ({})  sender lag {:.2} ms",
            (now - self.started).as_secs_f64(),
            rate_text((sent - self.last_sent) as f64 / dt),
            stats.lag_ns.load(Ordering::Relaxed) as f64 / 1e6
        );
        if consuming {
            line += &format!(
                "  delivered {delivered} ({})  in flight {}  latency {:.2} ms",
                rate_text(delivered.saturating_sub(self.last_delivered) as f64 / dt),
                sent.saturating_sub(delivered),
                live.last_latency_ns.load(Ordering::Relaxed) as f64 / 1e6
            );
        }
        eprintln!("{line}");
        self.last = now;
        self.last_sent = sent;
        self.last_delivered = delivered;
    }
}

fn run_id(seed: u64) -> u32 {
    run_id_of(Clock::start().epoch_ns(), std::process::id(), seed)
}

/// The run id of a generator started at `epoch_ns` with process id `pid`. Each input is mixed
/// on its own before they are combined: two generators started together (clocks a few ns
/// apart, consecutive pids) differ in a few low bits of each, and a plain XOR of the two can
/// cancel out, giving both the same id.
fn run_id_of(epoch_ns: u64, pid: u32, seed: u64) -> u32 {
    let mix = |x: u64| Rng::new(x).next_u64();
    let mut rng = Rng::new(mix(epoch_ns) ^ mix(u64::from(pid)).rotate_left(32) ^ seed);
    rng.next_u64() as u32
}

/// User plus system CPU seconds this process has used so far, all threads (exited ones too).
fn cpu_seconds() -> f64 {
    // Safety: getrusage only writes the rusage it is given; a zeroed rusage is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // RUSAGE_SELF with a valid pointer cannot fail.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// Runs the load test; `stop` ends sending early (Ctrl-C) and goes on to drain and report.
///
/// # Errors
/// Redis cannot be reached at the start. Failures later (a sender's connection, Redis going
/// away) end up in the summary's `errors`.
pub fn run(cfg: &RunConfig, stop: Arc<AtomicBool>) -> anyhow::Result<Outcome> {
    let run = run_id(cfg.seed);
    let clock = Clock::start();
    let stats = Arc::new(SendStats::new(cfg.streams));
    let live = Arc::new(Live::default());

    let consumer = match &cfg.redis {
        None => None,
        Some(url) => {
            let redis = format!("{}:{}", url.host, url.port);
            if cfg.flush_queue {
                crate::consume::Conn::connect(url)
                    .and_then(|mut c| c.simple(&[b"DEL", cfg.queue.as_bytes()]))
                    .with_context(|| format!("clearing {} on {redis}", cfg.queue))?;
            }
            let pop = Pop {
                url: url.clone(),
                queue: cfg.queue.clone(),
                mode: cfg.consume,
                batch: cfg.pop_batch,
                block: BLPOP_BLOCK,
            };
            let c = if cfg.wait_redis {
                Consumer::new(&pop, run, cfg.streams as u32, clock)
            } else {
                Consumer::connect(&pop, run, cfg.streams as u32, clock)
                    .with_context(|| format!("connecting to Redis at {redis}"))?
            };
            let (live, stats) = (live.clone(), stats.clone());
            let drain = Drain {
                timeout: cfg.drain_timeout,
                quiet: cfg.quiet_drain,
            };
            let mode = cfg.consume;
            Some(
                thread::Builder::new()
                    .name("consumer".into())
                    .spawn(move || consume_loop(c, &live, &stats, clock, drain, mode))?,
            )
        }
    };

    let plans = plans(cfg);
    let ready = Arc::new(Barrier::new(plans.len() + 1));
    let pid = std::process::id();
    let mut senders = Vec::new();
    for (i, plan) in plans.into_iter().enumerate() {
        let gens = plan
            .streams
            .iter()
            .map(|&s| {
                RecordGen::new(
                    cfg.seed,
                    s,
                    cfg.sizes.clone(),
                    cfg.format,
                    pid,
                    clock.epoch_ns(),
                )
            })
            .collect();
        let sender = Sender {
            plan,
            target: cfg.target.clone(),
            gens,
            run,
            clock,
            stats: stats.clone(),
            stop: stop.clone(),
            ready: ready.clone(),
        };
        senders.push(
            thread::Builder::new()
                .name(format!("sender-{i}"))
                .spawn(move || sender.run())?,
        );
    }
    ready.wait();
    let send_start_ns = clock.elapsed_ns();
    let cpu_start = cpu_seconds();
    let mut progress = Progress {
        enabled: cfg.progress,
        started: Instant::now(),
        last: Instant::now(),
        last_sent: 0,
        last_delivered: 0,
    };

    let mut errors = Vec::new();
    while senders.iter().any(|s| !s.is_finished()) {
        thread::sleep(Duration::from_millis(20));
        progress.tick(&stats, &live, consumer.is_some());
    }
    for s in senders {
        match s.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(format!("sender: {e}")),
            Err(_) => errors.push("sender panicked".into()),
        }
    }
    let send_end_ns = stats
        .last_send_ns
        .load(Ordering::Relaxed)
        .max(send_start_ns);
    live.sending_done.store(true, Ordering::Release);

    let consumer = match consumer {
        None => None,
        Some(c) => {
            while !c.is_finished() {
                thread::sleep(Duration::from_millis(20));
                progress.tick(&stats, &live, true);
            }
            match c.join() {
                Ok((mut consumer, err)) => {
                    if let Some(e) = err {
                        errors.push(format!("consumer: {e}"));
                    }
                    consumer.finish();
                    Some(consumer)
                }
                Err(_) => {
                    errors.push("consumer panicked".into());
                    None
                }
            }
        }
    };
    let cpu = cpu_seconds() - cpu_start;
    let last_delivery_ns = live.last_delivery_ns.load(Ordering::Relaxed);
    let summary = summarize(
        cfg,
        run,
        &stats,
        consumer.as_ref(),
        errors,
        send_start_ns,
        send_end_ns,
        last_delivery_ns,
        cpu,
    );
    Ok(Outcome {
        summary,
        latency: consumer.map(|c| c.tally.latency),
    })
}

/// A finished run.
pub struct Outcome {
    /// The summary.
    pub summary: Summary,
    /// The histograms, when Redis was read.
    pub latency: Option<Latency>,
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    cfg: &RunConfig,
    run: u32,
    stats: &SendStats,
    consumer: Option<&Consumer>,
    errors: Vec<String>,
    send_start_ns: u64,
    send_end_ns: u64,
    last_delivery_ns: u64,
    cpu_seconds: f64,
) -> Summary {
    let sent_per_stream: Vec<u64> = stats
        .sent
        .iter()
        .map(|s| s.load(Ordering::Relaxed))
        .collect();
    let sent: u64 = sent_per_stream.iter().sum();
    let tally = consumer.map(|c| &c.tally);
    let bytes = stats.bytes.load(Ordering::Relaxed);
    let send_seconds = send_end_ns.saturating_sub(send_start_ns) as f64 / 1e9;
    let empty = Tracker::new(cfg.streams as u32);
    let tracker = tally.map_or(&empty, |t| &t.tracker);
    let streams = tracker.counts(&sent_per_stream);
    let delivered = tracker.delivered();
    let delivery_seconds = last_delivery_ns.saturating_sub(send_start_ns) as f64 / 1e9;
    let (latency_ms, latency_uncorrected_ms, percentiles) = match tally {
        Some(t) => (
            Percentiles::of(&t.latency.corrected),
            Percentiles::of(&t.latency.uncorrected),
            hist::distribution(&t.latency.corrected),
        ),
        None => Default::default(),
    };
    Summary {
        tool: "pystash-loadtest".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        label: cfg.label.clone(),
        run_id: run,
        config: RunInfo {
            transport: format!("{:?}", cfg.transport).to_lowercase(),
            target: cfg.target_text.clone(),
            format: format!("{:?}", cfg.format).to_lowercase(),
            rate: cfg.rate,
            count: cfg.count,
            duration_s: cfg.duration.map(|d| d.as_secs_f64()),
            senders: cfg.senders,
            streams: cfg.streams,
            size: cfg.sizes.to_string(),
            consume: cfg
                .redis
                .as_ref()
                .map(|_| format!("{:?}", cfg.consume).to_lowercase()),
            pop_batch: cfg.pop_batch,
        },
        sent,
        delivered,
        lost: streams.iter().map(|s| s.lost).sum(),
        duplicates: streams.iter().map(|s| s.duplicates).sum(),
        reordered: streams.iter().map(|s| s.reordered).sum(),
        foreign: tracker.foreign(),
        other_runs: tally.map_or_else(Vec::new, |t| {
            t.others
                .iter()
                .map(|o| OtherRunCounts {
                    run_id: o.run,
                    streams: o.tracker.streams(),
                    delivered: o.tracker.delivered(),
                    duplicates: o.tracker.duplicates(),
                    reordered: o.tracker.reordered(),
                })
                .collect()
        }),
        consumer_reconnects: consumer.map_or(0, |c| c.reconnects),
        uncertain_pops: consumer.map_or(0, |c| c.uncertain_pops),
        consumed: tally.is_some(),
        bytes_sent: bytes,
        mean_record_bytes: if sent > 0 {
            bytes as f64 / sent as f64
        } else {
            0.0
        },
        send_seconds,
        sent_per_sec: if send_seconds > 0.0 {
            sent as f64 / send_seconds
        } else {
            0.0
        },
        delivery_seconds,
        delivered_per_sec: if delivery_seconds > 0.0 {
            delivered as f64 / delivery_seconds
        } else {
            0.0
        },
        sender_max_lag_ms: stats.max_lag_ns.load(Ordering::Relaxed) as f64 / 1e6,
        send_retries: stats.retries.load(Ordering::Relaxed),
        cpu_seconds,
        errors,
        latency_ms,
        latency_uncorrected_ms,
        percentiles,
        streams,
    }
}

/// Writes `LABEL.json`, and with histograms `LABEL.hgrm`, `LABEL.uncorrected.hgrm` and
/// `LABEL.svg`, into `dir`; returns the paths written.
///
/// # Errors
/// The directory or a file cannot be written.
pub fn write_outputs(dir: &Path, outcome: &Outcome) -> io::Result<Vec<PathBuf>> {
    let summary = &outcome.summary;
    fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let path = dir.join(format!("{}.json", summary.label));
    let mut f = fs::File::create(&path)?;
    serde_json::to_writer_pretty(&mut f, summary)?;
    f.write_all(b"\n")?;
    written.push(path);
    if let Some(latency) = &outcome.latency {
        for (name, h) in [
            ("hgrm", &latency.corrected),
            ("uncorrected.hgrm", &latency.uncorrected),
        ] {
            let path = dir.join(format!("{}.{name}", summary.label));
            let mut f = io::BufWriter::new(fs::File::create(&path)?);
            hist::write_hgrm(h, &mut f)?;
            f.flush()?;
            written.push(path);
        }
        let series = [
            Series {
                label: format!("{} (from schedule)", summary.label),
                points: hist::distribution(&latency.corrected),
                headline: Some([
                    summary.latency_ms.p50,
                    summary.latency_ms.p99,
                    summary.latency_ms.max,
                ]),
            },
            Series {
                label: format!("{} (from actual send)", summary.label),
                points: hist::distribution(&latency.uncorrected),
                headline: Some([
                    summary.latency_uncorrected_ms.p50,
                    summary.latency_uncorrected_ms.p99,
                    summary.latency_uncorrected_ms.max,
                ]),
            },
        ];
        let path = dir.join(format!("{}.svg", summary.label));
        fs::write(&path, plot::render(&summary.label, &series, false))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_started_together_get_different_run_ids() {
        let t0 = 1_796_000_000_123_456_789u64;
        let mut ids = std::collections::HashSet::new();
        for dt in 0..512 {
            for pid in 4000..4016 {
                assert!(
                    ids.insert(run_id_of(t0 + dt, pid, 0)),
                    "two generators share a run id (+{dt} ns, pid {pid})"
                );
            }
        }
    }

    #[test]
    fn cpu_seconds_counts_this_process() {
        let start = cpu_seconds();
        let wall = Instant::now();
        let mut x = 0u64;
        // Spin until 10 ms of CPU show up; the wall-clock bound only guards a broken clock.
        while cpu_seconds() - start < 0.01 && wall.elapsed() < Duration::from_secs(10) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(
            cpu_seconds() - start >= 0.01,
            "no CPU counted after {x} spins"
        );
    }
}
