//! A hand-written SVG of a run: per-step metadata latency on top, real and padded tokens
//! per step below, eager steps marked in red. Long runs are binned to at most 600 columns
//! (each column shows the mean of its steps, and the latency panel also the maximum). The
//! latency axis ends near three times the p99, so a few descheduled steps (milliseconds on
//! a busy machine) do not flatten the rest; taller values are drawn at the top edge.

use std::fmt::Write;

use super::report::Report;

const W: f64 = 900.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 20.0;
const PANEL_H: f64 = 160.0;
const TOP1: f64 = 66.0;
const TOP2: f64 = TOP1 + PANEL_H + 50.0;
const H: f64 = TOP2 + PANEL_H + 45.0;
const MAX_COLS: usize = 600;

/// One column of the plot.
#[derive(Debug, Clone, Copy, Default)]
struct Col {
    lat_mean: f64,
    lat_max: f64,
    real: f64,
    padded: f64,
    eager: f64,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" axis maximum at or above `x` (1, 2 or 5 times a power of ten).
fn nice(x: f64) -> f64 {
    if !(x.is_finite() && x > 0.0) {
        return 1.0;
    }
    let p = 10f64.powf(x.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|&v| v >= x)
        .unwrap_or(10.0 * p)
}

fn polyline(out: &mut String, pts: &[(f64, f64)], style: &str) {
    let mut d = String::with_capacity(pts.len() * 14);
    for (x, y) in pts {
        let _ = write!(d, "{x:.1},{y:.1} ");
    }
    let _ = writeln!(
        out,
        r#"<polyline fill="none" {style} points="{}"/>"#,
        d.trim_end()
    );
}

/// Draws a run's report as an SVG document.
pub fn plot(report: &Report) -> String {
    let recs = &report.records;
    let per = recs.len().div_ceil(MAX_COLS).max(1);
    let cols: Vec<Col> = recs
        .chunks(per)
        .map(|c| {
            let k = c.len() as f64;
            let mut col = Col::default();
            for r in c {
                let us = r.latency_ns as f64 / 1000.0;
                col.lat_mean += us / k;
                col.lat_max = col.lat_max.max(us);
                col.real += f64::from(r.real.tokens) / k;
                col.padded += f64::from(r.padded.tokens) / k;
                col.eager += if r.bucket.is_none() { 1.0 / k } else { 0.0 };
            }
            col
        })
        .collect();
    let n = cols.len().max(1) as f64;
    let plot_w = W - LEFT - RIGHT;
    let x = |i: usize| LEFT + (i as f64 + 0.5) * plot_w / n;

    let col_mean_max = cols.iter().map(|c| c.lat_mean).fold(0.0, f64::max);
    let lat_top = nice((3.0 * report.latency.p99_us).min(col_mean_max.max(report.latency.p99_us)));
    let tok_top = nice(
        cols.iter()
            .map(|c| c.padded.max(c.real))
            .fold(1.0, f64::max),
    );
    let y1 = |v: f64| TOP1 + PANEL_H - (v.min(lat_top) / lat_top) * PANEL_H;
    let y2 = |v: f64| TOP2 + PANEL_H - (v.min(tok_top) / tok_top) * PANEL_H;

    let mut s = String::with_capacity(64 * 1024);
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="20" font-size="15" font-weight="bold">{}</text>"#,
        escape(&format!(
            "simulate {} — {} backend, {} steps",
            report.layout, report.backend, report.steps
        ))
    );
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="38">{}</text>"#,
        escape(&format!(
            "metadata p50 {:.2} µs, p99 {:.2} µs · eager steps {:.1} % · padding waste {:.1} % · {} of {} buckets hit",
            report.latency.p50_us,
            report.latency.p99_us,
            report.eager_share * 100.0,
            report.padding.waste_share * 100.0,
            report.bucket_hits.len(),
            report.bucket_count
        ))
    );
    for (top, label, max) in [
        (TOP1, "metadata latency per step (µs)", lat_top),
        (TOP2, "tokens per step", tok_top),
    ] {
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_H}" fill="#fafafa" stroke="#999"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="{}" font-weight="bold">{label}</text>"#,
            top - 8.0
        );
        for frac in [0.0, 0.5, 1.0] {
            let yy = top + PANEL_H - frac * PANEL_H;
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" x2="{}" y1="{yy}" y2="{yy}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
                LEFT + plot_w,
                LEFT - 6.0,
                yy + 4.0,
                max * frac
            );
        }
    }
    // Eager steps: red ticks under the token panel, height by the column's eager share.
    for (i, c) in cols.iter().enumerate() {
        if c.eager > 0.0 {
            let _ = writeln!(
                s,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.2}" height="{:.1}" fill="#d62728" opacity="0.35"/>"##,
                x(i) - plot_w / n / 2.0,
                TOP2 + PANEL_H - c.eager * PANEL_H,
                plot_w / n,
                c.eager * PANEL_H
            );
        }
    }
    let pts = |f: &dyn Fn(&Col) -> f64, y: &dyn Fn(f64) -> f64| -> Vec<(f64, f64)> {
        cols.iter()
            .enumerate()
            .map(|(i, c)| (x(i), y(f(c))))
            .collect()
    };
    polyline(
        &mut s,
        &pts(&|c| c.lat_max, &y1),
        r##"stroke="#9ecae1" stroke-width="1""##,
    );
    polyline(
        &mut s,
        &pts(&|c| c.lat_mean, &y1),
        r##"stroke="#1f77b4" stroke-width="1.5""##,
    );
    polyline(
        &mut s,
        &pts(&|c| c.padded, &y2),
        r##"stroke="#ff7f0e" stroke-width="1.5""##,
    );
    polyline(
        &mut s,
        &pts(&|c| c.real, &y2),
        r##"stroke="#2ca02c" stroke-width="1.5""##,
    );
    let legend: [(f64, &[(&str, &str)]); 2] = [
        (
            TOP1,
            &[
                ("#1f77b4", "mean of the column"),
                ("#9ecae1", "max of the column"),
            ],
        ),
        (
            TOP2,
            &[
                ("#ff7f0e", "padded (bucket or eager)"),
                ("#2ca02c", "real"),
                ("#d62728", "eager share"),
            ],
        ),
    ];
    for (top, items) in legend {
        // Right-aligned; about 7 px per character at 12 px.
        let width: f64 = items
            .iter()
            .map(|(_, t)| 40.0 + 7.0 * t.chars().count() as f64)
            .sum();
        let mut px = W - RIGHT - width;
        for (color, text) in items {
            let _ = writeln!(
                s,
                r#"<rect x="{px}" y="{}" width="14" height="4" fill="{color}"/><text x="{}" y="{}">{text}</text>"#,
                top - 12.0,
                px + 18.0,
                top - 8.0
            );
            px += 40.0 + 7.0 * text.chars().count() as f64;
        }
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">step (1 – {}{})</text>"#,
        LEFT + plot_w / 2.0,
        TOP2 + PANEL_H + 30.0,
        report.steps,
        if per > 1 {
            format!(", {per} steps per column")
        } else {
            String::new()
        }
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        reason = "Test code: a panic is a failed test."
    )]

    use super::*;

    #[test]
    fn nice_axis() {
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(nice(3.0), 5.0);
        assert_eq!(nice(12.0), 20.0);
        assert_eq!(nice(100.0), 100.0);
        assert_eq!(escape("a<b&c"), "a&lt;b&amp;c");
    }
}
