//! The timestamp a message carries from its sender to every receiver: its text starts with
//! `lg:<unix_ns>:`, the intended send time in nanoseconds since the Unix epoch, padded with
//! `x` to the chosen size. A receiver measures delivery latency from that time, so delivery
//! figures, like ack figures, start at the intended send time.
//!
//! Within one process the stamp is converted with one [`Clock`] (a monotonic instant paired
//! with the wall clock once), so a wall-clock step during a run does not bend the figures.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const PREFIX: &str = "lg:";

/// Pairs the monotonic clock with Unix time, once.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base_instant: Instant,
    base_unix_ns: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let base_unix_ns = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos() as u64);
        Clock { base_instant: Instant::now(), base_unix_ns }
    }

    pub fn unix_ns(&self, instant: Instant) -> u64 {
        match instant.checked_duration_since(self.base_instant) {
            Some(after) => self.base_unix_ns.saturating_add(after.as_nanos() as u64),
            None => self.base_unix_ns.saturating_sub(self.base_instant.duration_since(instant).as_nanos() as u64),
        }
    }

    pub fn instant(&self, unix_ns: u64) -> Instant {
        if unix_ns >= self.base_unix_ns {
            self.base_instant + Duration::from_nanos(unix_ns - self.base_unix_ns)
        } else {
            let before = Duration::from_nanos(self.base_unix_ns - unix_ns);
            self.base_instant.checked_sub(before).unwrap_or(self.base_instant)
        }
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::new()
    }
}

/// The text of a message intended at `unix_ns`: the stamp, then `x` up to `bytes` (never
/// shorter than the stamp itself).
pub fn text(unix_ns: u64, bytes: usize) -> String {
    let mut text = String::with_capacity(bytes.max(32));
    text.push_str(PREFIX);
    text.push_str(&unix_ns.to_string());
    text.push(':');
    while text.len() < bytes {
        text.push('x');
    }
    text
}

/// The intended send time a message text carries, if it carries one.
pub fn parse(text: &str) -> Option<u64> {
    let rest = text.strip_prefix(PREFIX)?;
    let (digits, _) = rest.split_once(':')?;
    digits.parse().ok()
}

/// The shortest text a stamp can take for times of this era (19 digits of nanoseconds).
pub const STAMP_BYTES: usize = PREFIX.len() + 19 + 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_round_trips_and_pads_to_size() {
        let stamped = text(1_764_000_000_123_456_789, 64);
        assert_eq!(stamped.len(), 64);
        assert!(stamped.starts_with("lg:1764000000123456789:xxx"));
        assert_eq!(parse(&stamped), Some(1_764_000_000_123_456_789));
        assert_eq!(text(5, 2), "lg:5:", "never cut below the stamp");
        assert_eq!(parse("hello"), None);
        assert_eq!(parse("lg:12x:"), None);
        assert_eq!(STAMP_BYTES, text(1_764_000_000_123_456_789, 0).len());
    }

    #[test]
    fn the_clock_maps_instants_both_ways() {
        let clock = Clock::new();
        let later = Instant::now() + Duration::from_millis(1500);
        assert_eq!(clock.instant(clock.unix_ns(later)), later);
        let unix = clock.unix_ns(later);
        assert_eq!(clock.unix_ns(clock.instant(unix)), unix);
    }
}
