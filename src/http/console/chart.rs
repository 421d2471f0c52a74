//! Charts drawn on the server as inline SVG (no script, no outside file): stacked bars of two
//! series over time, with the largest value on the axis. Styled by the console's stylesheet
//! (classes, never `style` attributes, which the CSP forbids).

use maud::{Markup, html};

const W: f64 = 720.0;
const H: f64 = 180.0;
const LEFT: f64 = 70.0;
const BOTTOM: f64 = 20.0;

/// Stacked bars: each point is (label under the bar, series a, series b); `fmt` writes the
/// axis' maximum. `title` is the chart's accessible name.
pub fn stacked_bars(
    title: &str,
    points: &[(String, u64, u64)],
    fmt: impl Fn(u64) -> String,
) -> Markup {
    let max = points
        .iter()
        .map(|(_, a, b)| a + b)
        .max()
        .unwrap_or(0)
        .max(1);
    let n = points.len().max(1) as f64;
    let slot = (W - LEFT - 10.0) / n;
    let bar = (slot * 0.8).max(1.0);
    let plot_h = H - BOTTOM - 10.0;
    let y = |v: u64| plot_h * (v as f64) / (max as f64);
    // Label every k-th bar so labels do not overlap.
    let every = ((n * 40.0) / (W - LEFT)).ceil().max(1.0) as usize;
    html! {
        svg.chart viewBox={ "0 0 " (W) " " (H) } role="img" aria-label=(title) {
            title { (title) }
            line.axis x1=(LEFT) y1=(10) x2=(LEFT) y2=(H - BOTTOM) {}
            line.axis x1=(LEFT) y1=(H - BOTTOM) x2=(W - 10.0) y2=(H - BOTTOM) {}
            text x=(LEFT - 6.0) y=(16) text-anchor="end" { (fmt(max)) }
            text x=(LEFT - 6.0) y=(H - BOTTOM) text-anchor="end" { "0" }
            @for (i, (label, a, b)) in points.iter().enumerate() {
                @let x = LEFT + 2.0 + slot * i as f64;
                @let ha = y(*a);
                @let hb = y(*b);
                rect.a x=(format!("{x:.1}")) y=(format!("{:.1}", H - BOTTOM - ha)) width=(format!("{bar:.1}")) height=(format!("{ha:.1}")) {
                    title { (label) ": " (fmt(*a)) }
                }
                rect.b x=(format!("{x:.1}")) y=(format!("{:.1}", H - BOTTOM - ha - hb)) width=(format!("{bar:.1}")) height=(format!("{hb:.1}")) {
                    title { (label) ": " (fmt(*b)) }
                }
                @if i % every == 0 {
                    text x=(format!("{:.1}", x + bar / 2.0)) y=(H - 6.0) text-anchor="middle" { (label) }
                }
            }
        }
    }
}
