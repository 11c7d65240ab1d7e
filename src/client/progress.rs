//! A progress bar for transfers, drawn on standard error when it is a terminal, redrawn at
//! most ten times a second (a transfer reports progress thousands of times a second), and a
//! summary line at the end with the time taken and the rate.
//!
//! Hand-written rather than a crate: it is one line of text and a clock.

use std::io::Write;
use std::time::{Duration, Instant};

/// The shortest time between two redraws.
pub const REDRAW_INTERVAL: Duration = Duration::from_millis(100);
/// The bar's width in characters, between the brackets.
pub const BAR_WIDTH: usize = 30;

/// A bar for one transfer, writing to `out`.
#[derive(Debug)]
pub struct ProgressBar<W: Write> {
    out: W,
    /// Draw the bar at all (standard error is a terminal); the summary is written either way.
    draw: bool,
    label: &'static str,
    started: Instant,
    last_drawn: Option<Instant>,
    redraws: u64,
}

impl<W: Write> ProgressBar<W> {
    pub fn new(out: W, draw: bool, label: &'static str, started: Instant) -> ProgressBar<W> {
        ProgressBar { out, draw, label, started, last_drawn: None, redraws: 0 }
    }

    /// Notes progress at `now`; redraws only when `REDRAW_INTERVAL` has passed since the last
    /// redraw. Returns whether it redrew.
    pub fn update(&mut self, now: Instant, done: u64, total: Option<u64>) -> bool {
        if !self.draw || self.last_drawn.is_some_and(|last| now.duration_since(last) < REDRAW_INTERVAL) {
            return false;
        }
        self.last_drawn = Some(now);
        self.redraws += 1;
        let line = bar_line(self.label, done, total, now.duration_since(self.started));
        // A bar that cannot be drawn is not worth failing the transfer for.
        let _ = write!(self.out, "\r{line}\x1b[K");
        let _ = self.out.flush();
        true
    }

    /// Ends the bar and writes the summary: bytes, seconds and the rate in MB/s (10^6 bytes).
    pub fn finish(&mut self, now: Instant, bytes: u64) {
        let elapsed = now.duration_since(self.started);
        if self.draw && self.last_drawn.is_some() {
            let _ = write!(self.out, "\r\x1b[K");
        }
        let _ = writeln!(self.out, "{}", summary(self.label, bytes, elapsed));
        let _ = self.out.flush();
    }

    #[cfg(test)]
    pub fn redraws(&self) -> u64 {
        self.redraws
    }
}

/// `uploaded 1073741824 bytes (1.00 GiB) in 1.234 s: 870.1 MB/s`
pub fn summary(label: &str, bytes: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    format!("{label} {bytes} bytes ({}) in {seconds:.3} s: {} MB/s", human_bytes(bytes), format_rate(bytes, elapsed))
}

/// `[##########                    ]  33%  341.2 MiB / 1.00 GiB  870.1 MB/s`
fn bar_line(label: &str, done: u64, total: Option<u64>, elapsed: Duration) -> String {
    let rate = format_rate(done, elapsed);
    match total {
        Some(total) => {
            let fraction = if total == 0 { 1.0 } else { (done as f64 / total as f64).min(1.0) };
            let filled = (fraction * BAR_WIDTH as f64).round() as usize;
            let bar = format!("{}{}", "#".repeat(filled), " ".repeat(BAR_WIDTH - filled));
            let percent = (fraction * 100.0).floor();
            format!("{label} [{bar}] {percent:3}%  {} / {}  {rate} MB/s", human_bytes(done), human_bytes(total))
        }
        None => format!("{label} {}  {rate} MB/s", human_bytes(done)),
    }
}

fn format_rate(bytes: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 {
        return "-".to_owned();
    }
    format!("{:.1}", bytes as f64 / seconds / 1e6)
}

/// Bytes in binary units, as people read file sizes.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // However often progress arrives, the bar is redrawn at most once per interval: a
    // thousand updates over half a second draw five or six times, and the first draws at once.
    #[test]
    fn redraws_are_rate_limited() {
        let started = Instant::now();
        let mut bar = ProgressBar::new(Vec::new(), true, "uploaded", started);
        assert!(bar.update(started, 0, Some(1000)));
        assert!(!bar.update(started + Duration::from_millis(99), 1, Some(1000)));
        for step in 0..1000u64 {
            bar.update(started + Duration::from_micros(step * 500), step, Some(1000));
        }
        assert!((5..=6).contains(&bar.redraws()), "{} redraws", bar.redraws());
        assert!(bar.update(started + Duration::from_secs(10), 1000, Some(1000)));

        // Not a terminal: nothing but the summary.
        let mut quiet = ProgressBar::new(Vec::new(), false, "downloaded", started);
        assert!(!quiet.update(started + Duration::from_secs(1), 10, Some(10)));
        quiet.finish(started + Duration::from_secs(2), 2_000_000);
        let text = String::from_utf8(quiet.out).unwrap();
        assert_eq!(text, "downloaded 2000000 bytes (1.91 MiB) in 2.000 s: 1.0 MB/s\n");
    }

    // The bar fills with the fraction done and names sizes in binary units.
    #[test]
    fn bar_lines_read_well() {
        let line = bar_line("uploaded", 1 << 29, Some(1 << 30), Duration::from_secs(1));
        assert!(line.starts_with("uploaded [###############               ]  50%"), "{line}");
        assert!(line.contains("512.00 MiB / 1.00 GiB"), "{line}");
        assert!(line.ends_with("536.9 MB/s"), "{line}");
        assert!(bar_line("uploaded", 0, Some(0), Duration::ZERO).contains("100%"));
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
    }
}
