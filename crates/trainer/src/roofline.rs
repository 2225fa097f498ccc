//! The roofline of a training step: each op's arithmetic intensity (FLOPs per byte it must move,
//! from `Backward::flops` and `Backward::bytes`) and its achieved GFLOP/s per thread, set against
//! the two ceilings `pmixer bench` measures: the FMA peak of one thread, and the memory bandwidth
//! one thread gets when all run (the triad over the thread count). An op can reach at most
//! min(peak, bandwidth × intensity): left of the ridge (peak / bandwidth FLOPs per byte) memory
//! bounds it, right of it the FMA units do.

use crate::svg::escape;
use pmixer_autodiff::profile::Profile;

/// One op in one phase of the step.
pub struct Point {
    pub label: String,
    /// FLOPs per byte.
    pub intensity: f64,
    /// Achieved GFLOP/s per thread.
    pub gflops: f64,
    /// Share of the profiled thread time.
    pub share: f64,
}

/// The profile's rows that do arithmetic, slowest first.
pub fn points(p: &Profile) -> Vec<Point> {
    let mut rows: Vec<_> = p.rows.iter().filter(|r| r.flops > 0 && r.bytes > 0 && r.seconds > 0.0).collect();
    rows.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    let busy = p.busy_seconds.max(1e-12);
    rows.iter()
        .map(|r| Point {
            label: format!("{} {}", r.name, r.phase.name()),
            intensity: r.flops as f64 / r.bytes as f64,
            gflops: r.flops as f64 / r.seconds / 1e9,
            share: r.seconds / busy,
        })
        .collect()
}

/// What bounds an op of `intensity` FLOPs per byte, and the rate it can reach at most.
pub fn bound(intensity: f64, peak: f64, bandwidth: f64) -> (&'static str, f64) {
    if bandwidth * intensity < peak {
        ("memory", bandwidth * intensity)
    } else {
        ("compute", peak)
    }
}

/// The points as a table: share, FLOPs per byte, achieved and attainable GFLOP/s, the bound.
pub fn table(points: &[Point], peak: f64, bandwidth: f64) -> String {
    let mut out = format!(
        "roofline per thread: FMA peak {peak:.1} GFLOP/s, bandwidth {bandwidth:.1} GB/s, ridge at {:.1} FLOP/B\n",
        peak / bandwidth
    );
    out.push_str(&format!(
        "{:<30} {:>6} {:>7} {:>9} {:>10} {:>8} {:>8}\n",
        "op", "share", "FLOP/B", "GFLOP/s", "attainable", "of it", "bound"
    ));
    for p in points {
        let (what, roof) = bound(p.intensity, peak, bandwidth);
        out.push_str(&format!(
            "{:<30} {:>5.1}% {:>7.1} {:>9.1} {:>10.1} {:>7.0}% {:>8}\n",
            p.label,
            100.0 * p.share,
            p.intensity,
            p.gflops,
            roof,
            100.0 * p.gflops / roof,
            what
        ));
    }
    out
}

/// The roofline as a log-log SVG: both roofs, and a labelled dot per op.
pub fn svg(title: &str, points: &[Point], peak: f64, bandwidth: f64) -> String {
    let (w, h, left, right, top, bottom) = (720.0, 440.0, 70.0, 20.0, 40.0, 50.0);
    let (x0, x1) = (0.25f64, 1000.0f64);
    let (y0, y1) = (1.0f64, (peak * 2.0).max(10.0));
    let sx = |x: f64| left + (x.clamp(x0, x1) / x0).log10() / (x1 / x0).log10() * (w - left - right);
    let sy = |y: f64| h - bottom - (y.clamp(y0, y1) / y0).log10() / (y1 / y0).log10() * (h - top - bottom);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"{w}\" height=\"{h}\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n",
        w / 2.0,
        escape(title)
    );
    // Axes with decade ticks.
    out.push_str(&format!(
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - bottom,
        w - right,
        h - bottom,
        h - bottom
    ));
    for e in -1..=3 {
        let x = 10f64.powi(e);
        if (x0..=x1).contains(&x) {
            out.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{x}</text>\n",
                sx(x),
                h - bottom + 16.0
            ));
        }
    }
    for e in 0..=4 {
        let y = 10f64.powi(e);
        if (y0..=y1).contains(&y) {
            out.push_str(&format!(
                "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{y}</text>\n",
                left - 6.0,
                sy(y) + 4.0
            ));
        }
    }
    out.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">FLOPs per byte moved</text>\n\
         <text x=\"16\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {:.1})\">GFLOP/s per thread</text>\n",
        (left + w - right) / 2.0,
        h - 12.0,
        (top + h - bottom) / 2.0,
        (top + h - bottom) / 2.0
    ));
    // The roofs: bandwidth × intensity up to the ridge, the FMA peak after it.
    let ridge = peak / bandwidth;
    out.push_str(&format!(
        "<polyline fill=\"none\" stroke=\"#c0392b\" stroke-width=\"2\" points=\"{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#c0392b\">FMA peak {peak:.0} GFLOP/s</text>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" fill=\"#c0392b\" text-anchor=\"end\">memory {bandwidth:.1} GB/s</text>\n",
        sx(x0),
        sy(bandwidth * x0),
        sx(ridge),
        sy(peak),
        sx(x1),
        sy(peak),
        sx(ridge) + 6.0,
        sy(peak) - 6.0,
        sx(ridge) - 10.0,
        sy(peak) + 16.0
    ));
    // Each dot numbered, and the numbers listed under the plot's right half (with each op's
    // share of the step's thread time).
    for (i, p) in points.iter().enumerate() {
        let (cx, cy) = (sx(p.intensity), sy(p.gflops));
        let (lx, ly) = (w * 0.47, h - bottom - 12.0 - 14.0 * (points.len() - 1 - i) as f64);
        out.push_str(&format!(
            "<circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"4\" fill=\"#2c7fb8\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>\n\
             <text x=\"{lx:.1}\" y=\"{ly:.1}\" font-size=\"11\">{}. {}: {:.1} FLOP/B, {:.0} GFLOP/s, {:.0}%</text>\n",
            cx + 6.0,
            cy - 5.0,
            i + 1,
            i + 1,
            escape(&p.label),
            p.intensity,
            p.gflops,
            100.0 * p.share
        ));
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pmixer_autodiff::profile::Phase;

    #[test]
    fn ops_are_placed_against_both_roofs() {
        // Ridge at 100 / 10 = 10 FLOPs per byte.
        assert_eq!(bound(2.0, 100.0, 10.0), ("memory", 20.0));
        assert_eq!(bound(10.0, 100.0, 10.0), ("compute", 100.0));
        assert_eq!(bound(50.0, 100.0, 10.0), ("compute", 100.0));
        let mut p = Profile { busy_seconds: 4.0, ..Profile::default() };
        // 2e9 FLOPs and 1e8 bytes in 1 s: 20 FLOP/B at 2 GFLOP/s; the row without FLOPs is left out.
        p.record("mlp", Phase::Backward, 1.0, 2_000_000_000, 100_000_000);
        p.record("mlp", Phase::Forward, 3.0, 3_000_000_000, 1_000_000_000);
        p.record("reshape", Phase::Forward, 0.5, 0, 4096);
        let pts = points(&p);
        assert_eq!(pts.len(), 2);
        assert_eq!(pts[0].label, "mlp forward", "slowest first");
        assert!((pts[1].intensity - 20.0).abs() < 1e-12 && (pts[1].gflops - 2.0).abs() < 1e-12);
        assert!((pts[0].share - 0.75).abs() < 1e-12);
        let table = table(&pts, 100.0, 10.0);
        assert!(table.contains("ridge at 10.0 FLOP/B"), "{table}");
        let svg = svg("a <step>", &pts, 100.0, 10.0);
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(svg.contains("a &lt;step&gt;") && svg.ends_with("</svg>\n"));
    }
}
