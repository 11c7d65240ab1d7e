//! The push sink's rates: one sample of its counters a second, the line printed for it, and
//! the summary at the end (`--json`).

use std::fmt::Write as _;

use super::SinkTotals;
use crate::limits::SINK_SECONDS_RECORDED_MAX;

/// Requests per second, second by second, from samples of the counters.
#[derive(Debug, Default)]
pub struct Meter {
    last: SinkTotals,
    /// Requests answered in each whole second since the start (at most
    /// `SINK_SECONDS_RECORDED_MAX`; later seconds still count in the totals).
    requests_per_second: Vec<u64>,
    messages_per_second: Vec<u64>,
    seconds: u64,
}

/// What the sink saw, for the end of the run and `--json`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SinkReport {
    pub listen: String,
    /// Seconds the sink listened.
    pub seconds: f64,
    pub totals: SinkTotals,
    /// The busiest whole second.
    pub requests_per_s_peak: u64,
    /// Requests over the whole seconds from the first with a request to the last with one.
    pub requests_per_s_mean_active: f64,
    pub active_seconds: u64,
    pub requests_per_second: Vec<u64>,
    pub messages_per_second: Vec<u64>,
}

impl Meter {
    /// Records the second that ended with `totals`; answers the line to print for it.
    pub fn tick(&mut self, totals: SinkTotals) -> String {
        let requests = totals.requests - self.last.requests;
        let messages = totals.messages - self.last.messages;
        self.last = totals;
        self.seconds += 1;
        if self.requests_per_second.len() < SINK_SECONDS_RECORDED_MAX {
            self.requests_per_second.push(requests);
            self.messages_per_second.push(messages);
        }
        format!(
            "push-sink: {:>5} s {:>8} requests/s {:>8} messages/s {:>6} connections open {:>10} requests in all",
            self.seconds, requests, messages, totals.connections_open, totals.requests
        )
    }

    /// The summary once the sink stops, after `seconds` of listening with `totals` at the end.
    pub fn report(&self, listen: String, seconds: f64, totals: SinkTotals) -> SinkReport {
        let samples = &self.requests_per_second;
        let first = samples.iter().position(|&count| count > 0);
        let last = samples.iter().rposition(|&count| count > 0);
        let (active_seconds, active_requests) = match (first, last) {
            (Some(first), Some(last)) => ((last - first + 1) as u64, samples[first..=last].iter().sum::<u64>()),
            _ => (0, 0),
        };
        SinkReport {
            listen,
            seconds,
            totals,
            requests_per_s_peak: samples.iter().copied().max().unwrap_or(0),
            requests_per_s_mean_active: if active_seconds == 0 {
                0.0
            } else {
                active_requests as f64 / active_seconds as f64
            },
            active_seconds,
            requests_per_second: samples.clone(),
            messages_per_second: self.messages_per_second.clone(),
        }
    }
}

impl SinkReport {
    /// The lines printed at the end.
    pub fn text(&self) -> String {
        let totals = &self.totals;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "push-sink: {} requests ({} messages, {} body bytes) in {:.1} s on {}",
            totals.requests, totals.messages, totals.body_bytes, self.seconds, self.listen
        );
        let _ = writeln!(
            out,
            "push-sink: peak {}/s; mean {:.0}/s over the {} s from the first second with a request to the last",
            self.requests_per_s_peak, self.requests_per_s_mean_active, self.active_seconds
        );
        let _ = writeln!(
            out,
            "push-sink: {} connections accepted, {} refused; {} bad requests, {} not POST",
            totals.connections_accepted, totals.connections_refused, totals.bad_requests, totals.not_posts
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(requests: u64) -> SinkTotals {
        SinkTotals { requests, messages: requests * 2, ..SinkTotals::default() }
    }

    // Each tick records the second's difference; the mean runs over the seconds from the
    // first busy one to the last, quiet seconds in between included, idle ones around not.
    #[test]
    fn rates_are_per_second_differences_and_the_mean_spans_the_busy_seconds() {
        let mut meter = Meter::default();
        for total in [0, 100, 300, 300, 400, 400] {
            let line = meter.tick(totals(total));
            assert!(line.contains("requests/s"), "{line}");
        }
        let report = meter.report("127.0.0.1:1".into(), 6.2, totals(400));
        assert_eq!(report.requests_per_second, vec![0, 100, 200, 0, 100, 0]);
        assert_eq!(report.messages_per_second, vec![0, 200, 400, 0, 200, 0]);
        assert_eq!((report.requests_per_s_peak, report.active_seconds), (200, 4));
        assert!((report.requests_per_s_mean_active - 100.0).abs() < 1e-9);
        assert!(report.text().contains("400 requests (800 messages"));
        assert_eq!(Meter::default().report(String::new(), 1.0, SinkTotals::default()).active_seconds, 0);
    }
}
