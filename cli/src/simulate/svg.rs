//! A hand-written SVG of a run: per-step metadata latency on top, real and padded tokens
//! per step below, eager steps marked in red. Long runs are binned to at most 600 columns
//! (each column shows the mean of its steps, and the latency panel also the maximum). The
//! latency axis ends near three times the p99, so a few descheduled steps (milliseconds on
//! a busy machine) do not flatten the rest; taller values are drawn at the top edge.
//!
//! A third panel shows where the steps land against the bucket table: every distinct real
//! shape as a dot at (tokens, prefill requests), its size by the number of steps, a line
//! to the shape it was padded to, and every bucket as a square (filled when steps used
//! it); eager steps are red. Both axes are logarithmic (tokens from 1, prefill requests
//! from 0), so decode-only steps and buckets lie along the bottom edge.

use std::fmt::Write;

use super::report::Report;

const W: f64 = 900.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 20.0;
const PANEL_H: f64 = 160.0;
const TOP1: f64 = 66.0;
const TOP2: f64 = TOP1 + PANEL_H + 50.0;
const TOP3: f64 = TOP2 + PANEL_H + 100.0;
const SCATTER_H: f64 = 240.0;
const H: f64 = TOP3 + SCATTER_H + 45.0;
/// Most distinct step shapes drawn (the most frequent), to bound the file.
const MAX_SHAPES: usize = 4000;
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
    shapes_panel(&mut s, report);
    s.push_str("</svg>\n");
    s
}

/// The third panel: real step shapes over the bucket table.
fn shapes_panel(s: &mut String, report: &Report) {
    use std::collections::BTreeMap;
    // Distinct (real, padded, graphed) with their step counts, most frequent first.
    // (real tokens, real prefill, padded tokens, padded prefill, graphed).
    type Key = (u32, u32, u32, u32, bool);
    let mut counts: BTreeMap<Key, u64> = BTreeMap::new();
    for r in &report.records {
        *counts
            .entry((
                r.real.tokens,
                r.real.prefill,
                r.padded.tokens,
                r.padded.prefill,
                r.bucket.is_some(),
            ))
            .or_default() += 1;
    }
    let mut shapes: Vec<(Key, u64)> = counts.into_iter().collect();
    shapes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let drawn = shapes.len().min(MAX_SHAPES);
    let t_max = shapes
        .iter()
        .map(|((t, _, pt, _, _), _)| (*t).max(*pt))
        .chain(report.buckets.iter().map(|b| b.tokens))
        .max()
        .unwrap_or(1)
        .max(2);
    let p_max = shapes
        .iter()
        .map(|((_, p, _, pp, _), _)| (*p).max(*pp))
        .chain(report.buckets.iter().map(|b| b.prefill))
        .max()
        .unwrap_or(1)
        .max(1);
    let plot_w = W - LEFT - RIGHT;
    let lx_max = f64::from(t_max).log2();
    let ly_max = (f64::from(p_max) + 1.0).log2();
    let x = |t: u32| LEFT + f64::from(t.max(1)).log2() / lx_max * plot_w;
    let y =
        |p: u32| TOP3 + SCATTER_H - (f64::from(p) + 1.0).log2() / ly_max * (SCATTER_H - 8.0) - 4.0;
    let hit = |b: &attention_layout_codegen::BatchDims| {
        report
            .bucket_hits
            .iter()
            .any(|h| (h.tokens, h.prefill, h.decode) == (b.tokens, b.prefill, b.decode))
    };
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP3}" width="{plot_w}" height="{SCATTER_H}" fill="#fafafa" stroke="#999"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{LEFT}" y="{}" font-weight="bold">{}</text>"#,
        TOP3 - 26.0,
        escape(&format!(
            "where the steps land: {} step shapes{} over {} buckets",
            shapes.len(),
            if drawn < shapes.len() {
                format!(" ({drawn} most frequent drawn)")
            } else {
                String::new()
            },
            report.buckets.len()
        ))
    );
    // Axes: tokens at powers of four from 1, prefill requests at 0 and powers of four.
    let powers = |max: u32| -> Vec<u32> {
        let mut v = Vec::new();
        let mut x: u64 = 1;
        while x <= u64::from(max) {
            v.push(u32::try_from(x).unwrap_or(max));
            x *= 4;
        }
        v
    };
    for t in powers(t_max) {
        let xx = x(t);
        let _ = writeln!(
            s,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{TOP3}" y2="{}" stroke="#eee"/><text x="{xx:.1}" y="{}" text-anchor="middle" font-size="10">{t}</text>"##,
            TOP3 + SCATTER_H,
            TOP3 + SCATTER_H + 13.0
        );
    }
    for p in std::iter::once(0).chain(powers(p_max)) {
        let yy = y(p);
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{:.1}" text-anchor="end" font-size="10">{p}</text>"##,
            LEFT - 6.0,
            yy + 3.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">real tokens per step (log scale); rows: prefill requests (log scale)</text>"#,
        LEFT + plot_w / 2.0,
        TOP3 + SCATTER_H + 30.0
    );
    // Padding lines, then buckets, then the steps on top.
    for &((t, p, pt, pp, graphed), _) in shapes.iter().take(drawn) {
        if (t, p) != (pt, pp) {
            let _ = writeln!(
                s,
                r##"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="0.5" opacity="0.35"/>"##,
                x(t),
                y(p),
                x(pt),
                y(pp),
                if graphed { "#ff7f0e" } else { "#d62728" }
            );
        }
    }
    for b in &report.buckets {
        let _ = writeln!(
            s,
            r##"<rect x="{:.1}" y="{:.1}" width="7" height="7" fill="{}" stroke="#333" stroke-width="0.8"/>"##,
            x(b.tokens) - 3.5,
            y(b.prefill) - 3.5,
            if hit(b) { "#9e9e9e" } else { "none" }
        );
    }
    for &((t, p, _, _, graphed), n) in shapes.iter().take(drawn) {
        let r = 1.2 + (n as f64).log2().max(0.0) * 0.6;
        let _ = writeln!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="{r:.1}" fill="{}" opacity="0.55"/>"##,
            x(t),
            y(p),
            if graphed { "#1f77b4" } else { "#d62728" }
        );
    }
    let items = [
        ("#1f77b4", "step shape (graphed)"),
        ("#d62728", "eager"),
        ("#ff7f0e", "padding to its bucket"),
        ("#9e9e9e", "bucket (hit)"),
    ];
    let width: f64 = items
        .iter()
        .map(|(_, t)| 40.0 + 7.0 * t.chars().count() as f64)
        .sum();
    let mut px = W - RIGHT - width;
    for (color, text) in items {
        let _ = writeln!(
            s,
            r#"<rect x="{px}" y="{}" width="14" height="4" fill="{color}"/><text x="{}" y="{}">{text}</text>"#,
            TOP3 - 10.0,
            px + 18.0,
            TOP3 - 6.0
        );
        px += 40.0 + 7.0 * text.chars().count() as f64;
    }
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
