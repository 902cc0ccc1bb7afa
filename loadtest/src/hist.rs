//! End-to-end latency histograms, their percentiles, and HdrHistogram's percentile-distribution
//! text (`.hgrm`). Pure: times come in as numbers.
//!
//! Coordinated omission: a generator that waits for a slow system sends less while it is slow,
//! so the slow period is under-sampled. Here the generator is open-loop and every record carries
//! the time the schedule meant it to leave (`due`) beside the time it left (`sent`). Latency
//! measured from `due` counts the time a record waited in the generator behind a stalled socket,
//! and no record goes unmeasured, which is exactly what `record_correct` approximates for
//! closed-loop tools by inventing the missing samples. [`Latency::record_closed_loop`] is that
//! approximation, for inputs measured without a schedule.

use std::io::{self, Write};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency tracked: one hour, in ns. Larger values are clamped to it.
const MAX_NS: u64 = 3_600_000_000_000;
/// HdrHistogram precision: three significant digits.
const SIGFIG: u8 = 3;
/// Steps per halving of the distance to 100 % in percentile output (HdrHistogram's default).
const TICKS_PER_HALF: u32 = 5;
/// ns per ms: `.hgrm` files and summaries are in milliseconds.
const NS_PER_MS: f64 = 1e6;

/// A histogram of latencies in ns.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, SIGFIG).expect("constant bounds are valid")
}

/// The two latency views of one run.
#[derive(Debug, Clone)]
pub struct Latency {
    /// From the scheduled send time: corrected for coordinated omission.
    pub corrected: Histogram<u64>,
    /// From the actual send time: what a closed-loop tool would report.
    pub uncorrected: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            corrected: new_histogram(),
            uncorrected: new_histogram(),
        }
    }
}

impl Latency {
    /// Records one delivery read back at `now_ns`; all times in ns on the same clock.
    /// A time before the send (clock stepped back) counts as zero.
    pub fn record(&mut self, now_ns: u64, due_ns: u64, sent_ns: u64) {
        self.corrected
            .saturating_record(now_ns.saturating_sub(due_ns.min(sent_ns)));
        self.uncorrected
            .saturating_record(now_ns.saturating_sub(sent_ns));
    }

    /// Records a latency measured by a closed-loop sender that meant to send one record every
    /// `interval_ns`: HdrHistogram's `record_correct`, which adds the samples the stall hid.
    pub fn record_closed_loop(&mut self, latency_ns: u64, interval_ns: u64) {
        let v = latency_ns.min(MAX_NS);
        self.corrected
            .record_correct(v, interval_ns)
            .expect("value clamped to the bounds");
        self.uncorrected.saturating_record(v);
    }

    /// Adds another run's or thread's histograms.
    pub fn add(&mut self, other: &Latency) {
        self.corrected.add(&other.corrected).expect("same bounds");
        self.uncorrected
            .add(&other.uncorrected)
            .expect("same bounds");
    }
}

/// The headline percentiles, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Percentiles {
    /// Deliveries measured.
    pub count: u64,
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// 99.99th percentile.
    pub p99_99: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of `h` (ns) in ms; all zero when it is empty.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |ns: u64| ns as f64 / NS_PER_MS;
        Percentiles {
            count: h.len(),
            min: ms(h.min()),
            mean: h.mean() / NS_PER_MS,
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            p99_99: ms(h.value_at_quantile(0.9999)),
            max: ms(h.max()),
        }
    }
}

/// `(percentile 0..=100, latency ms)` points of the distribution, as HdrHistogram prints them.
pub fn distribution(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_quantiles(TICKS_PER_HALF)
        .map(|v| {
            (
                v.quantile_iterated_to() * 100.0,
                v.value_iterated_to() as f64 / NS_PER_MS,
            )
        })
        .collect()
}

/// Writes `h` (ns) as HdrHistogram's `outputPercentileDistribution` text in ms, the `.hgrm`
/// format its plotter reads.
///
/// # Errors
/// Whatever writing to `out` returns.
pub fn write_hgrm(h: &Histogram<u64>, out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(TICKS_PER_HALF) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / NS_PER_MS;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                writeln!(
                    out,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                )?;
            } else {
                writeln!(out, "{value:12.3} {q:2.12} {total:10}")?;
            }
        }
    }
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (
            h.mean() / NS_PER_MS,
            h.stdev() / NS_PER_MS,
            h.max() as f64 / NS_PER_MS,
        )
    };
    writeln!(
        out,
        "#[Mean    = {mean:12.3}, StdDeviation   = {stdev:12.3}]"
    )?;
    writeln!(
        out,
        "#[Max     = {max:12.3}, Total count    = {:12}]",
        h.len()
    )?;
    writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        2048
    )
}

/// Reads the `(percentile 0..=100, value)` points of a `.hgrm` text; other lines are skipped.
pub fn parse_hgrm(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let value: f64 = cols.next()?.parse().ok()?;
            let q: f64 = cols.next()?.parse().ok()?;
            (0.0..=1.0).contains(&q).then_some((q * 100.0, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn close(a: f64, b: f64) -> bool {
        // Three significant digits.
        (a - b).abs() <= b.abs() * 1e-3 + 1e-9
    }

    #[test]
    fn percentiles_of_one_to_ten_thousand() {
        let mut h = new_histogram();
        for us in 1..=10_000u64 {
            h.record(us * 1000).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 10_000);
        assert!(close(p.min, 0.001), "{p:?}");
        assert!(close(p.p50, 5.0), "{p:?}");
        assert!(close(p.p90, 9.0), "{p:?}");
        assert!(close(p.p99, 9.9), "{p:?}");
        assert!(close(p.p99_9, 9.99), "{p:?}");
        assert!(close(p.p99_99, 9.999), "{p:?}");
        assert!(close(p.max, 10.0), "{p:?}");
        assert!(close(p.mean, 5.0005), "{p:?}");
    }

    /// An open-loop sender meant to send one record per ms for 10 s; the socket stalled it for
    /// the first second, after which it caught up. Every record took 1 ms from leaving to being
    /// read back. From the actual send times nothing is wrong; from the schedule, the records
    /// that waited behind the stall show it, and 10 % of them waited about half a second or
    /// more on average.
    #[test]
    fn schedule_exposes_a_stall_the_send_times_hide() {
        let mut lat = Latency::default();
        let t0 = 1_700_000_000 * 1_000_000_000u64;
        for i in 0..10_000u64 {
            let due = t0 + i * MS;
            let sent = due.max(t0 + 1000 * MS);
            lat.record(sent + MS, due, sent);
        }
        let u = Percentiles::of(&lat.uncorrected);
        assert!(close(u.p50, 1.0) && close(u.max, 1.0), "{u:?}");
        let c = Percentiles::of(&lat.corrected);
        assert!(close(c.p50, 1.0), "{c:?}");
        assert!(close(c.p90, 1.0), "{c:?}");
        // The first 1000 records waited 1000..1 ms (+1 ms): p99 is the 100th-worst.
        assert!((c.p99 - 901.0).abs() < 2.0, "{c:?}");
        assert!((c.max - 1001.0).abs() < 1.0, "{c:?}");
    }

    /// The same stall seen by a closed-loop sender (one record at a time, 1 ms apart): it
    /// measures one 1000 ms sample and 8 999 fast ones; `record_correct` restores the ~1000
    /// samples the stall hid, and its distribution then matches the schedule-based one.
    #[test]
    fn record_correct_restores_what_a_closed_loop_hid() {
        let mut closed = Latency::default();
        closed.record_closed_loop(1000 * MS, MS);
        for _ in 0..8_999 {
            closed.record_closed_loop(MS, MS);
        }
        let u = Percentiles::of(&closed.uncorrected);
        assert_eq!(u.count, 9_000);
        assert!(close(u.p99_9, 1.0), "{u:?}");
        let c = Percentiles::of(&closed.corrected);
        assert_eq!(c.count, 9_999);
        // Within the histogram's 0.1 % buckets of 900 ms and 1000 ms.
        assert!((c.p99 - 900.0).abs() < 2.0, "{c:?}");
        assert!((c.max - 1000.0).abs() < 1.0, "{c:?}");
    }

    #[test]
    fn hgrm_round_trips_through_the_parser() {
        let mut h = new_histogram();
        for v in [MS, 2 * MS, 3 * MS, 50 * MS] {
            h.record(v).unwrap();
        }
        let mut out = Vec::new();
        write_hgrm(&h, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"));
        assert!(
            text.contains("#[Max     =       50.004, Total count    =            4]"),
            "{text}"
        );
        let points = parse_hgrm(&text);
        let exact = distribution(&h);
        assert_eq!(points.len(), exact.len());
        for (&(p, v), &(q, w)) in points.iter().zip(&exact) {
            assert!(
                (p - q).abs() < 1e-9 && (v - w).abs() < 1e-3,
                "{p} {v} vs {q} {w}"
            );
        }
        let last = points.last().unwrap();
        assert_eq!(last.0, 100.0);
        assert!(close(last.1, 50.0));
        // Each value line: value, percentile, running count, and 1/(1-p) except on the last.
        let lines: Vec<&str> = text.lines().filter(|l| parse_hgrm(l).len() == 1).collect();
        assert!(lines[0].split_whitespace().count() == 4);
        assert!(lines.last().unwrap().split_whitespace().count() == 3);
        assert!(lines.last().unwrap().ends_with("         4"));
    }

    #[test]
    fn empty_histograms_print_zeros() {
        let h = new_histogram();
        assert_eq!(Percentiles::of(&h), Percentiles::default());
        assert!(distribution(&h).is_empty());
        let mut out = Vec::new();
        write_hgrm(&h, &mut out).unwrap();
        assert!(parse_hgrm(std::str::from_utf8(&out).unwrap()).is_empty());
    }
}
