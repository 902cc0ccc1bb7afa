//! Latency-by-percentile plots as hand-written SVG, in the shape of HdrHistogram's plotter:
//! percentiles on a log scale of `1/(1-p)` (0 %, 90 %, 99 %, 99.9 %, ...) across, latency up,
//! one curve per run so runs compare at a glance. Pure: returns the SVG text.

use std::fmt::Write as _;

/// One run's curve.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// `(percentile 0..=100, latency ms)`, in increasing percentile order.
    pub points: Vec<(f64, f64)>,
    /// Exact `[p50, p99, max]` for the legend, when known (from a summary); otherwise they are
    /// read off the points.
    pub headline: Option<[f64; 3]>,
}

const W: f64 = 960.0;
/// Height of the plot area; the legend goes below it, one line per run.
const PH: f64 = 440.0;
const LEFT: f64 = 84.0;
const RIGHT: f64 = 44.0;
const TOP: f64 = 56.0;
const BOTTOM: f64 = 64.0;
const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#7f7f7f", "#bcbd22",
];
/// Nines shown at most: 99.9999 %.
const MAX_NINES: f64 = 6.0;

/// `log10(1/(1-p))`: 0 at 0 %, 1 at 90 %, 2 at 99 %; 100 % is placed at `cap`.
fn nines(p: f64, cap: f64) -> f64 {
    if p >= 100.0 {
        cap
    } else {
        (-(1.0 - p / 100.0).log10()).clamp(0.0, cap)
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round step giving about `n` ticks up to `max`.
fn nice_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let m = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 2.5 {
        2.5
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

fn ms_text(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn percentile_text(n: u32) -> String {
    match n {
        0 => "0%".into(),
        1 => "90%".into(),
        n => format!("99.{}%", "9".repeat(n as usize - 2)).replace("99.%", "99%"),
    }
}

/// The latency at or above percentile `p` in a series (the first point reaching it).
fn at(points: &[(f64, f64)], p: f64) -> Option<f64> {
    points.iter().find(|(q, _)| *q >= p).map(|&(_, v)| v)
}

/// Renders the runs as one SVG.
pub fn render(title: &str, series: &[Series], log_y: bool) -> String {
    let finite_max = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|(p, _)| *p < 100.0)
        .map(|&(p, _)| nines(p, MAX_NINES))
        .fold(0.0f64, f64::max);
    let x_max = finite_max.ceil().clamp(2.0, MAX_NINES);
    let v_max = series
        .iter()
        .flat_map(|s| s.points.iter())
        .map(|p| p.1)
        .fold(0.0f64, f64::max);
    let v_min_pos = series
        .iter()
        .flat_map(|s| s.points.iter())
        .map(|p| p.1)
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);

    let pw = W - LEFT - RIGHT;
    let ph = PH;
    let line_h = 20.0;
    let legend_top = TOP + PH + BOTTOM;
    let h = legend_top + line_h * series.len() as f64 + 12.0;
    let sx = |p: f64| LEFT + nines(p, x_max) / x_max * pw;
    // The latency axis: linear from 0, or log over whole decades.
    let (y_lo, y_hi, step) = if log_y {
        let lo = if v_min_pos.is_finite() {
            v_min_pos.log10().floor()
        } else {
            -3.0
        };
        let hi = v_max.max(1e-3).log10().ceil().max(lo + 1.0);
        (lo, hi, 1.0)
    } else {
        let step = nice_step(v_max.max(1e-3), 6.0);
        (0.0, (v_max / step).ceil().max(1.0) * step, step)
    };
    let sy = |v: f64| {
        let t = if log_y {
            v.max(10f64.powf(y_lo)).log10()
        } else {
            v
        };
        TOP + ph - (t - y_lo) / (y_hi - y_lo) * ph
    };

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="Helvetica, Arial, sans-serif" font-size="13">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="30" text-anchor="middle" font-size="17" font-weight="bold">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    // Percentile grid and labels.
    for n in 0..=x_max as u32 {
        let x = LEFT + f64::from(n) / x_max * pw;
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 20.0,
            percentile_text(n)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">Percentile</text>"#,
        LEFT + pw / 2.0,
        TOP + PH + BOTTOM - 16.0
    );
    // Latency grid and labels.
    let mut t = y_lo;
    while t <= y_hi + step * 1e-6 {
        let v = if log_y { 10f64.powf(t) } else { t };
        let y = sy(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 8.0,
            y + 4.0,
            ms_text(v)
        );
        t += step;
    }
    let _ = writeln!(
        s,
        r#"<text transform="translate(22 {:.1}) rotate(-90)" text-anchor="middle">Latency (ms{})</text>"#,
        TOP + ph / 2.0,
        if log_y { ", log scale" } else { "" }
    );
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    // Curves.
    for (i, ser) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut pts = String::new();
        for &(p, v) in &ser.points {
            let _ = write!(pts, "{:.1},{:.1} ", sx(p), sy(v));
        }
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" stroke-linejoin="round" points="{}"/>"#,
            pts.trim_end()
        );
    }
    // Legend below the plot, where no curve can hide it.
    for (i, ser) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let y = legend_top + line_h * (i as f64 + 0.5);
        let headline = ser.headline.or_else(|| {
            let max = ser.points.last()?.1;
            Some([at(&ser.points, 50.0)?, at(&ser.points, 99.0)?, max])
        });
        let stats = match headline {
            Some([p50, p99, max]) => format!(
                "  p50 {}  p99 {}  max {} ms",
                ms_text(p50),
                ms_text(p99),
                ms_text(max)
            ),
            _ => "  (no data)".into(),
        };
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}{}</text>"#,
            LEFT + 18.0,
            LEFT + 44.0,
            LEFT + 52.0,
            y + 4.5,
            escape(&ser.label),
            escape(&stats)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis_is_log_nines() {
        assert_eq!(nines(0.0, 5.0), 0.0);
        assert!((nines(90.0, 5.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9, 5.0) - 3.0).abs() < 1e-9);
        assert_eq!(nines(100.0, 4.0), 4.0);
        assert_eq!(percentile_text(0), "0%");
        assert_eq!(percentile_text(1), "90%");
        assert_eq!(percentile_text(2), "99%");
        assert_eq!(percentile_text(4), "99.99%");
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(10.0, 5.0), 2.0);
        assert_eq!(nice_step(12.0, 6.0), 2.0);
        assert_eq!(nice_step(0.7, 6.0), 0.2);
        assert_eq!(nice_step(130.0, 6.0), 25.0);
    }

    #[test]
    fn svg_has_a_curve_and_legend_per_run() {
        let a = Series {
            label: "a <udp>".into(),
            points: vec![(0.0, 0.1), (50.0, 0.2), (99.0, 1.0), (100.0, 3.0)],
            headline: None,
        };
        let b = Series {
            label: "b".into(),
            points: vec![(0.0, 0.2), (99.99, 2.0), (100.0, 2.5)],
            headline: Some([0.21, 1.9, 2.5]),
        };
        for log_y in [false, true] {
            let svg = render("t & t", &[a.clone(), b.clone()], log_y);
            assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
            assert_eq!(svg.matches("<polyline").count(), 2);
            assert!(
                svg.contains("a &lt;udp&gt;  p50 0.2  p99 1  max 3 ms"),
                "{svg}"
            );
            assert!(svg.contains("t &amp; t"));
            assert!(svg.contains(">b  p50 0.21  p99 1.9  max 2.5 ms<"), "{svg}");
            assert!(svg.contains(">99.99%<"));
            assert!(!svg.contains("NaN") && !svg.contains("inf"));
        }
        assert!(!render("empty", &[], false).contains("NaN"));
    }
}
