//! The latency-percentile plot (`--svg`), drawn as SVG text: x is the percentile on a "nines"
//! scale (90%, 99%, 99.9%, ... equally spaced, as HdrHistogram's plots do), y the latency in
//! milliseconds on a log scale (latencies here span microseconds to seconds); one line per
//! measure, the maximum drawn at the right edge.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 540.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
/// Steps per halving of the distance to 100% when walking a histogram's percentiles.
const TICKS_PER_HALF_DISTANCE: u32 = 10;
const COLOURS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

/// One line of the plot: a name and a histogram of microseconds.
pub type Line<'a> = (&'a str, &'a Histogram<u64>);

/// The plot of `lines` (empty histograms are left out) under `title`.
pub fn plot(title: &str, lines: &[Line<'_>]) -> String {
    let lines: Vec<&Line<'_>> = lines.iter().filter(|(_, histogram)| !histogram.is_empty()).collect();
    let largest = lines.iter().map(|(_, histogram)| histogram.len()).max().unwrap_or(1);
    // As many nines as the largest sample count supports, between 2 and 6.
    let nines = ((largest as f64).log10().ceil() as u32).clamp(2, 6);
    let micros_low = lines.iter().map(|(_, histogram)| histogram.min().max(1)).min().unwrap_or(1);
    let micros_high = lines.iter().map(|(_, histogram)| histogram.max().max(1)).max().unwrap_or(1000);
    let decade_low = (micros_low as f64 / 1000.0).log10().floor() as i32;
    let decade_high = ((micros_high as f64 / 1000.0).log10().ceil() as i32).max(decade_low + 1);

    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let x_of = |nines_value: f64| LEFT + plot_width * (nines_value / f64::from(nines)).clamp(0.0, 1.0);
    let y_of = |ms: f64| {
        let position = (ms.max(1e-6).log10() - f64::from(decade_low)) / f64::from(decade_high - decade_low);
        TOP + plot_height * (1.0 - position.clamp(0.0, 1.0))
    };

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(svg, r#"<text x="{LEFT}" y="28" font-size="15">{}</text>"#, escape(title));
    // Vertical grid: one line per nine.
    for nine in 0..=nines {
        let x = x_of(f64::from(nine));
        let label = percentile_label(nine);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + plot_height,
            TOP + plot_height + 18.0
        );
    }
    // Horizontal grid: one line per decade of milliseconds.
    for decade in decade_low..=decade_high {
        let ms = 10f64.powi(decade);
        let y = y_of(ms);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_width,
            LEFT - 6.0,
            y + 4.0,
            ms_label(ms)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile (nines scale; right edge: max)</text>"#,
        LEFT + plot_width / 2.0,
        HEIGHT - 14.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">latency from the intended start (ms, log scale)</text>"#,
        TOP + plot_height / 2.0,
        TOP + plot_height / 2.0
    );
    for (index, (name, histogram)) in lines.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let mut points = Vec::new();
        for step in histogram.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            let quantile = step.quantile_iterated_to();
            if quantile >= 1.0 {
                break;
            }
            let nines_value = -(1.0 - quantile).log10();
            if nines_value > f64::from(nines) {
                break;
            }
            let ms = histogram.highest_equivalent(step.value_iterated_to()) as f64 / 1000.0;
            points.push(format!("{:.1},{:.1}", x_of(nines_value), y_of(ms)));
        }
        points.push(format!("{:.1},{:.1}", x_of(f64::from(nines)), y_of(histogram.max() as f64 / 1000.0)));
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        let legend_y = TOP + 10.0 + 22.0 * index as f64;
        let legend_x = LEFT + plot_width + 16.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{legend_x:.1}" y1="{legend_y:.1}" x2="{:.1}" y2="{legend_y:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{} (n={})</text>"#,
            legend_x + 24.0,
            legend_x + 30.0,
            legend_y + 4.0,
            escape(name),
            histogram.len()
        );
    }
    let _ = writeln!(svg, "</svg>");
    svg
}

fn percentile_label(nines: u32) -> String {
    match nines {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        count => format!("99.{}%", "9".repeat(count as usize - 2)),
    }
}

fn ms_label(ms: f64) -> String {
    if ms >= 1.0 {
        format!("{ms:.0}")
    } else {
        format!("{ms}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;

    // The plot is well-formed SVG with one polyline and legend entry per non-empty measure,
    // percentile labels up to the nines the data supports, and escaped text.
    #[test]
    fn the_plot_has_a_line_per_measure() {
        let mut fast = new_histogram();
        let mut slow = new_histogram();
        for micros in 1..=10_000u64 {
            fast.record(100 + micros % 50).unwrap();
            slow.record(1000 + micros).unwrap();
        }
        slow.record(250_000).unwrap();
        let empty = new_histogram();
        let svg = plot("a <test>", &[("send_ack", &fast), ("delivery", &slow), ("history_page", &empty)]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("send_ack (n=10000)") && svg.contains("delivery (n=10001)"));
        assert!(!svg.contains("history_page"));
        assert!(svg.contains(">99.99%<") && !svg.contains(">99.9999%<"));
        assert!(svg.contains("a &lt;test&gt;"));
        assert!(svg.contains(">1000<"), "the 250 ms maximum reaches the 1000 ms decade");
    }
}
