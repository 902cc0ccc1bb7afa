//! When to wait for a batch (pure; time is a parameter).
//!
//! Most of the CPU a datagram costs is the kernel's receive work and the wakeup that follows it.
//! Under load, waking less often, once per few dozen records instead of once per record, about
//! halves it. So after a turn that found records arriving fast, the loop holds off its next wait
//! for as long as [`TARGET`] records take to arrive at that rate (at most [`MAX_HOLD`]); at low
//! rates it does not hold, so a lone record is taken at once. Batches form by themselves: the
//! hold grows with the load until it reaches the cap.

use std::time::{Duration, Instant};

/// Records a hold aims to gather.
pub(crate) const TARGET: usize = 32;
/// Longest hold: bounds the latency it adds.
pub(crate) const MAX_HOLD: Duration = Duration::from_micros(500);
/// Below this rate (records per second) there is no hold.
pub(crate) const MIN_RATE: f64 = 10_000.0;

/// The hold policy: fed each turn's record count, answers how long to hold the next wait.
#[derive(Debug, Default)]
pub(crate) struct BatchWait {
    last_turn: Option<Instant>,
}

impl BatchWait {
    /// A turn that started at `now` took `records` records: how long to hold before waiting for
    /// more ([`Duration::ZERO`]: wait as usual).
    pub(crate) fn handle_turn(&mut self, records: usize, now: Instant) -> Duration {
        let Some(last) = self.last_turn.replace(now) else {
            return Duration::ZERO;
        };
        let interval = now.saturating_duration_since(last).as_secs_f64();
        if records == 0 || interval <= 0.0 {
            return Duration::ZERO;
        }
        let rate = records as f64 / interval;
        if rate < MIN_RATE {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(TARGET as f64 / rate).min(MAX_HOLD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    fn about(got: Duration, want: Duration) -> bool {
        got.abs_diff(want) <= us(1)
    }

    #[test]
    fn a_lone_record_is_not_held() {
        let t0 = Instant::now();
        let mut w = BatchWait::default();
        assert_eq!(w.handle_turn(1, t0), Duration::ZERO, "first turn");
        assert_eq!(
            w.handle_turn(1, t0 + Duration::from_secs(1)),
            Duration::ZERO
        );
        assert_eq!(
            w.handle_turn(1, t0 + Duration::from_secs(1) + us(200)),
            Duration::ZERO
        );
        assert_eq!(
            w.handle_turn(0, t0 + Duration::from_secs(2)),
            Duration::ZERO
        );
    }

    #[test]
    fn holds_grow_with_the_rate_up_to_the_cap() {
        let t0 = Instant::now();
        let mut w = BatchWait::default();
        w.handle_turn(0, t0);
        // 100k/s: one record every 10 µs; 32 records take 320 µs.
        assert!(about(w.handle_turn(1, t0 + us(10)), us(320)));
        // 1M/s: 32 µs.
        assert!(about(w.handle_turn(100, t0 + us(110)), us(32)));
        // 20k/s: 1.6 ms, capped.
        assert_eq!(w.handle_turn(2, t0 + us(210)), MAX_HOLD);
        // The load stops: the next turn finds nothing and does not hold.
        assert_eq!(w.handle_turn(0, t0 + us(710)), Duration::ZERO);
    }

    #[test]
    fn under_steady_load_the_hold_settles() {
        // Records arrive at 200k/s; each turn takes what arrived since the last one.
        let t0 = Instant::now();
        let mut w = BatchWait::default();
        let mut now = t0;
        w.handle_turn(0, now);
        let mut hold = Duration::ZERO;
        for _ in 0..20 {
            let step = hold + us(5);
            now += step;
            let took = (step.as_secs_f64() * 200_000.0).round() as usize;
            hold = w.handle_turn(took, now);
        }
        assert!((us(150)..=us(170)).contains(&hold), "{hold:?}");
    }
}
