//! The result of one run: a JSON document for scripts, a text block for people, a row of the
//! markdown comparison table.

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use crate::hist::Percentiles;
use crate::track::StreamCounts;

/// How the run was set up, as recorded in the summary.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct RunInfo {
    /// `udp`, `tcp`, `unix`.
    pub transport: String,
    /// Address or path.
    pub target: String,
    /// `pickle` or `json`.
    pub format: String,
    /// Records per second asked for; `null`: max.
    pub rate: Option<f64>,
    /// `--count`.
    pub count: Option<u64>,
    /// `--duration` in seconds.
    pub duration_s: Option<f64>,
    /// Sender threads.
    pub senders: usize,
    /// Streams (connections, or UDP sockets).
    pub streams: usize,
    /// `--size`.
    pub size: String,
    /// `lrange`, `blpop`, or `null` with --no-consume.
    pub consume: Option<String>,
    /// Events per LRANGE.
    pub pop_batch: usize,
}

/// Another run's records, as this run's consumer saw them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(default)]
pub struct OtherRunCounts {
    /// Its run id (`run_id` in its own summary).
    pub run_id: u32,
    /// Streams seen (the highest stream id, plus one).
    pub streams: usize,
    /// Distinct records delivered.
    pub delivered: u64,
    /// Deliveries of records already delivered.
    pub duplicates: u64,
    /// Records delivered after a later one of the same stream.
    pub reordered: u64,
}

/// The result of one run.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Summary {
    /// Always `pystash-loadtest`.
    pub tool: String,
    /// The tool's version.
    pub version: String,
    /// Run name.
    pub label: String,
    /// Random id stamped on this run's records.
    pub run_id: u32,
    /// Setup.
    pub config: RunInfo,
    /// Records handed to the kernel.
    pub sent: u64,
    /// Distinct records read back from Redis (`null`-equivalent 0 with --no-consume).
    pub delivered: u64,
    /// `sent - delivered`.
    pub lost: u64,
    /// Extra deliveries of records already delivered.
    pub duplicates: u64,
    /// Records delivered after a later one of the same stream.
    pub reordered: u64,
    /// Events popped that were not this run's.
    pub foreign: u64,
    /// Records of other runs among the foreign events (a second generator sending to the
    /// same proxy with `--no-consume`), tracked by stream and sequence like this run's.
    pub other_runs: Vec<OtherRunCounts>,
    /// Times the consumer connected again after losing Redis.
    pub consumer_reconnects: u64,
    /// Atomic pops (`lrange`, `blpop`) whose reply was lost with the connection: each may have
    /// removed up to `pop_batch` events unseen, so loss may be overstated (`exact` has none).
    pub uncertain_pops: u64,
    /// Whether Redis was read.
    pub consumed: bool,
    /// Bytes handed to the kernel.
    pub bytes_sent: u64,
    /// `bytes_sent / sent`.
    pub mean_record_bytes: f64,
    /// From the first send to the last.
    pub send_seconds: f64,
    /// `sent / send_seconds`.
    pub sent_per_sec: f64,
    /// From the first send to the last delivery.
    pub delivery_seconds: f64,
    /// `delivered / delivery_seconds`.
    pub delivered_per_sec: f64,
    /// The most any sender fell behind its schedule (ms); large values mean the generator or
    /// the proxy's socket was the bottleneck, and latency includes that wait.
    pub sender_max_lag_ms: f64,
    /// Send calls retried (UDP ENOBUFS/ECONNREFUSED).
    pub send_retries: u64,
    /// The generator's own user+system CPU over the run, from the first send to the end of the
    /// drain: its senders and its Redis consumer (the whole process, all threads; 0 in
    /// summaries from before it was recorded).
    pub cpu_seconds: f64,
    /// What went wrong (a sender or the consumer failing), if anything.
    pub errors: Vec<String>,
    /// End-to-end latency from the scheduled send time: corrected for coordinated omission.
    pub latency_ms: Percentiles,
    /// End-to-end latency from the actual send time.
    pub latency_uncorrected_ms: Percentiles,
    /// `(percentile, ms)` of the corrected distribution, for plots.
    pub percentiles: Vec<(f64, f64)>,
    /// Per-stream counts.
    pub streams: Vec<StreamCounts>,
}

fn rate_text(rate: Option<f64>) -> String {
    match rate {
        None => "max".to_string(),
        Some(r) => format!("{}/s", si(r)),
    }
}

/// `1234567` -> `1.23M`.
fn si(v: f64) -> String {
    let trim = |s: String| s.trim_end_matches('0').trim_end_matches('.').to_string();
    if v >= 1e6 {
        trim(format!("{:.3}", v / 1e6)) + "M"
    } else if v >= 1e3 {
        trim(format!("{:.2}", v / 1e3)) + "k"
    } else {
        format!("{v:.0}")
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "{}: {} {} {} at {}, {} sender(s), {} stream(s), sizes {}",
            self.label,
            c.transport,
            c.target,
            c.format,
            rate_text(c.rate),
            c.senders,
            c.streams,
            c.size
        )?;
        writeln!(
            f,
            "  sent       {:>10} in {:.2} s  ({}/s, mean {:.0} B, {:.1} MB/s){}",
            self.sent,
            self.send_seconds,
            si(self.sent_per_sec),
            self.mean_record_bytes,
            self.bytes_sent as f64 / self.send_seconds.max(1e-9) / 1e6,
            if self.sender_max_lag_ms > 1.0 {
                format!(
                    ", fell {:.1} ms behind schedule at worst",
                    self.sender_max_lag_ms
                )
            } else {
                String::new()
            }
        )?;
        if !self.consumed {
            writeln!(f, "  (not consumed: --no-consume)")?;
        } else {
            writeln!(
                f,
                "  delivered  {:>10} in {:.2} s  ({}/s)",
                self.delivered,
                self.delivery_seconds,
                si(self.delivered_per_sec)
            )?;
            writeln!(
                f,
                "  lost {} ({:.3}%)  duplicates {}  reordered {}  foreign {}",
                self.lost,
                pct(self.lost, self.sent),
                self.duplicates,
                self.reordered,
                self.foreign
            )?;
            for o in &self.other_runs {
                writeln!(
                    f,
                    "  of which run {}: delivered {} on {} stream(s), duplicates {}, reordered {}",
                    o.run_id, o.delivered, o.streams, o.duplicates, o.reordered
                )?;
            }
            if self.consumer_reconnects > 0 || self.uncertain_pops > 0 {
                writeln!(
                    f,
                    "  consumer reconnected {} time(s); {} pop(s) lost their reply{}",
                    self.consumer_reconnects,
                    self.uncertain_pops,
                    if self.uncertain_pops > 0 {
                        " (their events may count as lost: use --consume exact)"
                    } else {
                        ""
                    }
                )?;
            }
            let l = &self.latency_ms;
            writeln!(
                f,
                "  latency ms  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  p99.99 {:.3}  max {:.3}",
                l.p50, l.p90, l.p99, l.p99_9, l.p99_99, l.max
            )?;
            let u = &self.latency_uncorrected_ms;
            writeln!(
                f,
                "  (from the schedule; from the actual send: p50 {:.3}  p99 {:.3}  max {:.3})",
                u.p50, u.p99, u.max
            )?;
        }
        if self.cpu_seconds > 0.0 {
            writeln!(
                f,
                "  generator CPU {:.3} s user+system ({:.2} µs per record sent)",
                self.cpu_seconds,
                self.cpu_seconds * 1e6 / self.sent.max(1) as f64
            )?;
        }
        for e in &self.errors {
            writeln!(f, "  error: {e}")?;
        }
        Ok(())
    }
}

/// One markdown table of runs.
pub fn markdown_table(runs: &[Summary]) -> String {
    let mut t = String::new();
    t.push_str("| run | transport | format | rate | sent | sent/s | delivered | lost | dup | reord | p50 ms | p90 ms | p99 ms | p99.9 ms | p99.99 ms | max ms |\n");
    t.push_str("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for s in runs {
        let l = &s.latency_ms;
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
            s.label,
            s.config.transport,
            s.config.format,
            rate_text(s.config.rate),
            s.sent,
            si(s.sent_per_sec),
            if s.consumed { s.delivered.to_string() } else { "-".into() },
            if s.consumed { s.lost.to_string() } else { "-".into() },
            s.duplicates,
            s.reordered,
            l.p50,
            l.p90,
            l.p99,
            l.p99_9,
            l.p99_99,
            l.max
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn si_units() {
        assert_eq!(si(999.0), "999");
        assert_eq!(si(50_000.0), "50k");
        assert_eq!(si(1_234_567.0), "1.235M");
        assert_eq!(si(12_340.0), "12.34k");
    }

    #[test]
    fn summary_round_trips_and_renders() {
        let s = Summary {
            label: "udp-pickle-50k".into(),
            sent: 1000,
            delivered: 999,
            lost: 1,
            consumed: true,
            send_seconds: 1.0,
            cpu_seconds: 0.002,
            config: RunInfo {
                transport: "udp".into(),
                rate: Some(50_000.0),
                ..Default::default()
            },
            ..Default::default()
        };
        let json = serde_json::to_string(&s).unwrap();
        let back: Summary = serde_json::from_str(&json).unwrap();
        assert_eq!((back.lost, back.cpu_seconds), (1, 0.002));
        // Older or partial summaries still load.
        let partial: Summary = serde_json::from_str(r#"{"label":"x","sent":5}"#).unwrap();
        assert_eq!((partial.label.as_str(), partial.sent), ("x", 5));
        assert_eq!(partial.cpu_seconds, 0.0);
        let text = s.to_string();
        assert!(text.contains("lost 1 (0.100%)"), "{text}");
        assert!(
            text.contains("generator CPU 0.002 s user+system (2.00 µs per record sent)"),
            "{text}"
        );
        let table = markdown_table(&[s]);
        assert_eq!(table.lines().count(), 3);
        assert!(
            table.contains("| udp-pickle-50k | udp |  | 50k/s | 1000 |"),
            "{table}"
        );
    }
}
