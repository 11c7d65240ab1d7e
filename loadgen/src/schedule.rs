//! The open-loop schedule (DESIGN §9): operation `i` is due at `start + i / rate`, whatever
//! happened to the operations before it. Each operation's latency is measured from this
//! intended time, not from when it was actually sent, so a stall (of the server, or of
//! loadgen itself) shows up in the latency of every operation that had to wait for it instead
//! of silently lowering the rate (no coordinated omission).

use std::ops::Range;
use std::time::{Duration, Instant};

/// When each operation of a run is due.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    start: Instant,
    period_ns: f64,
    count: u64,
}

impl Schedule {
    /// `rate_per_second` operations a second for `span`, the first at `start`.
    pub fn new(start: Instant, rate_per_second: f64, span: Duration) -> Schedule {
        assert!(rate_per_second > 0.0 && rate_per_second.is_finite(), "a positive, finite rate");
        let count = (span.as_secs_f64() * rate_per_second).floor() as u64;
        Schedule { start, period_ns: 1e9 / rate_per_second, count }
    }

    /// Operations in the whole schedule.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    /// The intended start of operation `index`. Computed from the index, never by adding
    /// periods up, so rounding cannot drift over a long run.
    pub fn intended(&self, index: u64) -> Instant {
        self.start + Duration::from_nanos((index as f64 * self.period_ns).round() as u64)
    }

    /// The operations from `next` on that are due by `now`. After a stall this is every
    /// operation that fell due meanwhile: they go out at once, each still measured from its
    /// own intended time, so the burst cannot hide the wait.
    pub fn due(&self, next: u64, now: Instant) -> Range<u64> {
        if next >= self.count || now < self.intended(next) {
            return next..next;
        }
        let elapsed_ns = now.saturating_duration_since(self.start).as_nanos() as f64;
        // A first guess from the clock, then corrected by the exact intended times, since
        // the floating-point division may land one off either way.
        let mut last = ((elapsed_ns / self.period_ns).floor() as u64).clamp(next, self.count - 1);
        while last + 1 < self.count && self.intended(last + 1) <= now {
            last += 1;
        }
        while last > next && self.intended(last) > now {
            last -= 1;
        }
        next..last + 1
    }
}

/// The measured part of a run: operations intended before `start` are warm-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    pub fn contains(&self, instant: Instant) -> bool {
        self.start <= instant && instant < self.end
    }

    pub fn length(&self) -> Duration {
        self.end.saturating_duration_since(self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Intended times are evenly spaced from the start, computed per index: after a million
    // operations at an awkward rate they are still exactly where the rate puts them.
    #[test]
    fn intended_times_are_evenly_spaced_without_drift() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 3.0, Duration::from_secs(2));
        assert_eq!(schedule.count(), 6);
        let offsets: Vec<u128> = (0..6).map(|i| (schedule.intended(i) - start).as_nanos()).collect();
        assert_eq!(offsets, vec![0, 333_333_333, 666_666_667, 1_000_000_000, 1_333_333_333, 1_666_666_667]);

        let schedule = Schedule::new(start, 7_000.0, Duration::from_secs(3600));
        let late = schedule.intended(7_000 * 3000) - start;
        assert_eq!(late, Duration::from_secs(3000), "no drift after 21 million periods");
        for index in [1u64, 999, 123_456] {
            let gap = schedule.intended(index + 1) - schedule.intended(index);
            let nominal = 1e9 / 7000.0;
            assert!((gap.as_nanos() as f64 - nominal).abs() <= 1.0, "gap {gap:?} at {index}");
        }
    }

    // Nothing is due before its time; after a gap of 200 ms at 1,000/s exactly the 200 (or
    // 201, counting the one due at the very instant) operations that fell due are released
    // together, and each keeps its own intended time, spread over the gap: a scheduler that
    // stalled does not pretend those operations were sent on time, nor skip them.
    #[test]
    fn a_stalled_scheduler_releases_what_fell_due_with_their_own_times() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 1000.0, Duration::from_secs(1));
        assert_eq!(schedule.due(0, start), 0..1, "the first operation is due at the start");
        assert_eq!(schedule.due(1, start + Duration::from_micros(999)), 1..1, "not yet");
        assert_eq!(schedule.due(1, start + Duration::from_millis(1)), 1..2);

        let after_stall = start + Duration::from_millis(201);
        let due = schedule.due(2, after_stall);
        assert_eq!(due, 2..202);
        let waits: Vec<Duration> = due.map(|index| after_stall - schedule.intended(index)).collect();
        assert_eq!(waits.first(), Some(&Duration::from_millis(199)));
        assert_eq!(waits.last(), Some(&Duration::ZERO));
        assert!(waits.windows(2).all(|pair| pair[0] - pair[1] == Duration::from_millis(1)));

        // The end of the schedule bounds what is released, however late it is.
        assert_eq!(schedule.due(202, start + Duration::from_secs(60)), 202..1000);
        assert_eq!(schedule.due(1000, start + Duration::from_secs(60)), 1000..1000);
    }

    #[test]
    fn the_window_is_half_open() {
        let start = Instant::now();
        let window = Window { start, end: start + Duration::from_secs(1) };
        assert!(window.contains(start));
        assert!(!window.contains(start + Duration::from_secs(1)));
        assert_eq!(window.length(), Duration::from_secs(1));
    }
}
