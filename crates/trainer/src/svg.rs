//! `curves.svg`: the per-epoch curves of a run, drawn as plain SVG (two panels: the metric,
//! accuracy or RMSE, and the loss; train and test in each), readable in any browser.

use crate::train::{metric_name, EpochRecord};
use pmixer_model::Task;

const PANEL_W: f64 = 420.0;
const PANEL_H: f64 = 300.0;
const MARGIN: f64 = 56.0;

/// A named, coloured curve: (epoch, value) points.
type Series<'a> = (&'a str, &'a str, Vec<(f64, f64)>);

/// One panel: axes with ticks and labels, one polyline per series, a legend.
fn panel(out: &mut String, x0: f64, title: &str, ylabel: &str, series: &[Series]) {
    let pts: Vec<(f64, f64)> =
        series.iter().flat_map(|s| s.2.iter().copied()).filter(|p| p.1.is_finite()).collect();
    let (xmax, mut ymin, mut ymax) =
        pts.iter().fold((1.0f64, f64::MAX, f64::MIN), |(a, b, c), p| (a.max(p.0), b.min(p.1), c.max(p.1)));
    if pts.is_empty() {
        (ymin, ymax) = (0.0, 1.0);
    }
    if ymax - ymin < 1e-12 {
        ymax += 0.5;
        ymin -= 0.5;
    }
    let pad = 0.05 * (ymax - ymin);
    let (ymin, ymax) = (ymin - pad, ymax + pad);
    let (left, top, w, h) = (x0 + MARGIN, 30.0, PANEL_W - MARGIN - 10.0, PANEL_H - 30.0 - 40.0);
    let sx = |x: f64| left + if xmax > 1.0 { (x - 1.0) / (xmax - 1.0) * w } else { w / 2.0 };
    let sy = |y: f64| top + (ymax - y) / (ymax - ymin) * h;
    out.push_str(&format!("<text x=\"{left:.1}\" y=\"18\" font-size=\"14\">{title}</text>\n"));
    out.push_str(&format!(
        "<rect x=\"{left:.1}\" y=\"{top:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"none\" stroke=\"#444\"/>\n"
    ));
    for i in 0..=4 {
        let y = ymin + (ymax - ymin) * i as f64 / 4.0;
        out.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" font-size=\"10\">{y:.4}</text>\n",
            left - 4.0,
            sy(y) + 3.0
        ));
    }
    let epochs = xmax as usize;
    let step = epochs.div_ceil(10).max(1);
    for e in (1..=epochs).step_by(step) {
        out.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{e}</text>\n",
            sx(e as f64),
            top + h + 14.0
        ));
    }
    out.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"12\">epoch</text>\n",
        left + w / 2.0,
        top + h + 32.0
    ));
    out.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"12\" transform=\"rotate(-90 {0:.1} {1:.1})\">{ylabel}</text>\n",
        x0 + 12.0,
        top + h / 2.0
    ));
    for (i, (name, colour, data)) in series.iter().enumerate() {
        let points: Vec<String> = data
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        out.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n",
            points.join(" ")
        ));
        // The legend sits in the title row, right-aligned, clear of the curves.
        let (lx, ly) = (left + w - 70.0 * (series.len() - i) as f64, 14.0);
        out.push_str(&format!(
            "<line x1=\"{lx:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{colour}\" stroke-width=\"2\"/>\n",
            lx + 20.0
        ));
        out.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{name}</text>\n",
            lx + 25.0,
            ly + 4.0
        ));
    }
}

/// The SVG document for a run's history.
pub fn curves(task: Task, title: &str, history: &[EpochRecord]) -> String {
    let m = metric_name(task);
    let series =
        |f: fn(&EpochRecord) -> f64| history.iter().map(|r| (r.epoch as f64, f(r))).collect::<Vec<_>>();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\">\n<title>{}</title>\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        2.0 * PANEL_W,
        PANEL_H,
        escape(title)
    );
    panel(
        &mut out,
        0.0,
        &format!("{} ({})", escape(title), m),
        m,
        &[("train", "#1f77b4", series(|r| r.train.metric)), ("test", "#d62728", series(|r| r.test.metric))],
    );
    panel(
        &mut out,
        PANEL_W,
        "loss",
        "loss",
        &[("train", "#1f77b4", series(|r| r.train.loss)), ("test", "#d62728", series(|r| r.test.loss))],
    );
    out.push_str("</svg>\n");
    out
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
