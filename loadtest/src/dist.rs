//! Record sizes drawn from a distribution (`--size`), and the small seeded generator behind
//! every random choice, so a run is reproducible from its seed. Pure.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// SplitMix64: tiny, fast, good enough for choosing field values and sizes.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        debug_assert!(lo <= hi);
        let span = hi - lo + 1;
        if span == 0 {
            return self.next_u64();
        }
        // Multiply-shift: bias is negligible for the spans used here.
        lo + ((u128::from(self.next_u64()) * u128::from(span)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len() as u64 - 1) as usize]
    }
}

/// `--size` is not a size distribution.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("bad size spec {spec:?}: {why} (examples: 400, 200..600, 300..900@95,4000..16000@5)")]
pub struct SizeError {
    spec: String,
    why: &'static str,
}

/// One weighted uniform range of sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Part {
    lo: usize,
    hi: usize,
    weight: u32,
}

/// Record sizes in bytes on the wire: a weighted mix of uniform ranges.
///
/// Spec: comma-separated `SIZE` or `LO..HI`, each with an optional `@WEIGHT` (default 1), e.g.
/// `300..900@95,4000..16000@5` (95 % small records, 5 % large ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeDist {
    parts: Vec<Part>,
    total_weight: u64,
}

/// Largest size accepted: pystash's default `--max-record-bytes` is 1 MiB.
pub const MAX_SIZE: usize = 1 << 20;

impl SizeDist {
    /// Draws one size.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let mut w = rng.range(0, self.total_weight - 1);
        for p in &self.parts {
            if w < u64::from(p.weight) {
                return rng.range(p.lo as u64, p.hi as u64) as usize;
            }
            w -= u64::from(p.weight);
        }
        unreachable!("weight drawn below the total")
    }

    /// The largest size the distribution can draw.
    pub fn max(&self) -> usize {
        self.parts.iter().map(|p| p.hi).max().unwrap_or(0)
    }

    /// The expected size.
    pub fn mean(&self) -> f64 {
        let sum: f64 = self
            .parts
            .iter()
            .map(|p| f64::from(p.weight) * (p.lo + p.hi) as f64 / 2.0)
            .sum();
        sum / self.total_weight as f64
    }
}

impl FromStr for SizeDist {
    type Err = SizeError;

    fn from_str(spec: &str) -> Result<SizeDist, SizeError> {
        let bad = |why| SizeError {
            spec: spec.to_string(),
            why,
        };
        let num = |s: &str| s.trim().parse::<usize>().map_err(|_| bad("not a number"));
        let mut parts = Vec::new();
        for item in spec.split(',') {
            let (range, weight) = match item.split_once('@') {
                Some((r, w)) => (r, w.trim().parse::<u32>().map_err(|_| bad("bad weight"))?),
                None => (item, 1),
            };
            let (lo, hi) = match range.split_once("..") {
                Some((lo, hi)) => (num(lo)?, num(hi.trim_start_matches('='))?),
                None => (num(range)?, num(range)?),
            };
            if lo == 0 || lo > hi {
                return Err(bad("a range must be LO..HI with 0 < LO <= HI"));
            }
            if hi > MAX_SIZE {
                return Err(bad("sizes are at most 1048576"));
            }
            if weight == 0 {
                return Err(bad("weights must be positive"));
            }
            parts.push(Part { lo, hi, weight });
        }
        let total_weight = parts.iter().map(|p| u64::from(p.weight)).sum();
        Ok(SizeDist {
            parts,
            total_weight,
        })
    }
}

impl fmt::Display for SizeDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.parts.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if p.lo == p.hi {
                write!(f, "{}", p.lo)?;
            } else {
                write!(f, "{}..{}", p.lo, p.hi)?;
            }
            if self.parts.len() > 1 {
                write!(f, "@{}", p.weight)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print() {
        for (spec, shown) in [
            ("400", "400"),
            ("200..600", "200..600"),
            ("200..=600", "200..600"),
            ("300..900@95, 4000..16000@5", "300..900@95,4000..16000@5"),
        ] {
            assert_eq!(spec.parse::<SizeDist>().unwrap().to_string(), shown);
        }
        for bad in ["", "x", "0", "600..200", "1..2000000", "5@0", "5@x"] {
            assert!(bad.parse::<SizeDist>().is_err(), "{bad}");
        }
    }

    #[test]
    fn samples_follow_the_weights() {
        let d: SizeDist = "100..199@9,1000@1".parse().unwrap();
        let mut rng = Rng::new(7);
        let n = 100_000;
        let mut big = 0;
        for _ in 0..n {
            let s = d.sample(&mut rng);
            assert!((100..200).contains(&s) || s == 1000, "{s}");
            big += usize::from(s == 1000);
        }
        // 10 % expected; 5 standard deviations is about 0.5 %.
        assert!((9_500..10_500).contains(&big), "{big}");
        assert_eq!(d.max(), 1000);
        assert!((d.mean() - (0.9 * 149.5 + 100.0)).abs() < 1e-9);
    }
}
