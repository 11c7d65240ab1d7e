//! What a run records: latency histograms (HdrHistogram, microseconds) per measure, counts of
//! operations, errors by code, and the bookkeeping that finds missing deliveries.
//!
//! Everything is recorded from many tasks on several threads; each histogram sits behind its
//! own mutex, held for one `record` (tens of nanoseconds), so the recording cost stays far
//! below an operation's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::limits::{
    HISTOGRAM_SIGNIFICANT_DIGITS, HISTOGRAM_US_HIGHEST, HISTOGRAM_US_LOWEST, TIMELINE_STEP, TIMELINE_STEPS_MAX,
};
use crate::schedule::Window;
use crate::target::TargetError;

/// The latencies a run measures, each from the operation's intended start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Measure {
    /// Send → the sender's acknowledgement.
    SendAck,
    /// Send → the message read from one online recipient's update stream (one sample per
    /// recipient).
    Delivery,
    /// Send → the message read by the last of its online recipients.
    DeliveryAll,
    /// A history page request → its answer.
    History,
    /// Intended start → handed to the target: loadgen's own lateness.
    IssueLag,
    /// A media send's intended start → its file stored (`UploadFinished`).
    MediaUpload,
    /// A media send's intended start → its `SendMedia` acknowledged: the whole upload and the
    /// message.
    MediaSend,
    /// A media send's intended start → the recipient has downloaded the whole file and
    /// checked every byte.
    MediaDownload,
}

impl Measure {
    pub const ALL: [Measure; 8] = [
        Measure::SendAck,
        Measure::Delivery,
        Measure::DeliveryAll,
        Measure::History,
        Measure::IssueLag,
        Measure::MediaUpload,
        Measure::MediaSend,
        Measure::MediaDownload,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Measure::SendAck => "send_ack",
            Measure::Delivery => "delivery",
            Measure::DeliveryAll => "delivery_all",
            Measure::History => "history_page",
            Measure::IssueLag => "issue_lag",
            Measure::MediaUpload => "media_upload",
            Measure::MediaSend => "media_send",
            Measure::MediaDownload => "media_download",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counts of a run, all restricted to the measured window unless named otherwise.
#[derive(Debug, Default)]
pub struct Counters {
    /// Operations whose intended time fell in the window and that were handed to the target.
    pub issued: AtomicU64,
    /// Of those, answered successfully / with an error.
    pub succeeded: AtomicU64,
    pub failed: AtomicU64,
    /// Successful answers that arrived inside the window (the achieved rate's numerator).
    pub completed_in_window: AtomicU64,
    /// Operations handed to the target while the window was open (the issued rate's).
    pub issued_in_window: AtomicU64,
    /// Operations of the schedule never handed to the target before the drain deadline.
    pub not_issued: AtomicU64,
    /// Times the scheduler waited for the in-flight cap.
    pub in_flight_cap_waits: AtomicU64,
    /// Sends answered as retries of an earlier message (a random_id collision).
    pub duplicate_acks: AtomicU64,
    /// History pages that came back shorter than asked.
    pub short_pages: AtomicU64,
    /// `Resync` events read from the update streams since the load started (events the
    /// server or the client dropped).
    pub resyncs: AtomicU64,
    /// Media: measured sends whose file came from the duplicate pool; file bytes of the sends
    /// acknowledged and of the downloads completed while the window was open (the achieved
    /// MB/s); downloads checked whole, refused by the check (wrong bytes or length), and
    /// failed otherwise; waits for a free upload or download slot (loadgen's own bound).
    pub media_duplicate_sends: AtomicU64,
    pub media_upload_bytes_in_window: AtomicU64,
    pub media_download_bytes_in_window: AtomicU64,
    pub media_downloads_verified: AtomicU64,
    pub media_downloads_corrupt: AtomicU64,
    pub media_downloads_failed: AtomicU64,
    pub media_slot_waits: AtomicU64,
}

/// How often each error code was seen and whether the server sent it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ErrorCount {
    pub count: u64,
    pub from_server: bool,
}

/// One measure's figures, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Everything recorded during a run.
#[derive(Debug)]
pub struct Recorder {
    window: Window,
    histograms: Vec<Mutex<Histogram<u64>>>,
    pub counters: Counters,
    errors: Mutex<BTreeMap<&'static str, ErrorCount>>,
    /// The slowest send → ack (microseconds) of the sends intended in each `TIMELINE_STEP` of
    /// the window, so a stall can be placed in time (and set beside a server's own events).
    ack_timeline: Vec<AtomicU64>,
}

impl Recorder {
    pub fn new(window: Window) -> Recorder {
        let histograms = Measure::ALL.iter().map(|_| Mutex::new(new_histogram())).collect();
        let steps = window.length().as_nanos().div_ceil(TIMELINE_STEP.as_nanos()).min(TIMELINE_STEPS_MAX as u128);
        Recorder {
            window,
            histograms,
            counters: Counters::default(),
            errors: Mutex::new(BTreeMap::new()),
            ack_timeline: (0..steps).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Places a measured send's `latency` in the timeline by its `intended` time.
    pub fn record_ack_timeline(&self, intended: Instant, latency: Duration) {
        let since = intended.saturating_duration_since(self.window.start);
        let step = (since.as_nanos() / TIMELINE_STEP.as_nanos()) as usize;
        if let Some(slowest) = self.ack_timeline.get(step) {
            slowest.fetch_max(latency.as_micros() as u64, Relaxed);
        }
    }

    /// The slowest send → ack of each `TIMELINE_STEP` of the window, in milliseconds (0 where
    /// no send was acknowledged).
    pub fn ack_timeline_ms(&self) -> Vec<f64> {
        self.ack_timeline.iter().map(|slowest| slowest.load(Relaxed) as f64 / 1000.0).collect()
    }

    pub fn window(&self) -> Window {
        self.window
    }

    /// Whether an operation intended at `intended` is measured (not warm-up).
    pub fn measured(&self, intended: Instant) -> bool {
        self.window.contains(intended)
    }

    pub fn record(&self, measure: Measure, latency: Duration) {
        let micros = (latency.as_micros() as u64).max(HISTOGRAM_US_LOWEST);
        lock(&self.histograms[measure.index()]).saturating_record(micros);
    }

    pub fn error(&self, error: &TargetError) {
        let mut errors = lock(&self.errors);
        let entry = errors.entry(error.code).or_default();
        entry.count += 1;
        entry.from_server |= error.from_server;
    }

    pub fn errors(&self) -> BTreeMap<&'static str, ErrorCount> {
        lock(&self.errors).clone()
    }

    /// Whether any error the server itself sent was recorded.
    pub fn server_reported_errors(&self) -> bool {
        lock(&self.errors).values().any(|count| count.from_server)
    }

    pub fn summary(&self, measure: Measure) -> Summary {
        summarize(&lock(&self.histograms[measure.index()]))
    }

    /// A copy of one measure's histogram (for the plot).
    pub fn histogram(&self, measure: Measure) -> Histogram<u64> {
        lock(&self.histograms[measure.index()]).clone()
    }
}

/// The figures of one histogram of microseconds.
pub fn summarize(histogram: &Histogram<u64>) -> Summary {
    let ms = |micros: u64| micros as f64 / 1000.0;
    if histogram.is_empty() {
        return Summary { count: 0, p50_ms: 0.0, p90_ms: 0.0, p99_ms: 0.0, p999_ms: 0.0, max_ms: 0.0, mean_ms: 0.0 };
    }
    Summary {
        count: histogram.len(),
        p50_ms: ms(histogram.value_at_quantile(0.50)),
        p90_ms: ms(histogram.value_at_quantile(0.90)),
        p99_ms: ms(histogram.value_at_quantile(0.99)),
        p999_ms: ms(histogram.value_at_quantile(0.999)),
        max_ms: ms(histogram.max()),
        mean_ms: histogram.mean() / 1000.0,
    }
}

pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants checked in `limits`; they cannot be refused.
    Histogram::new_with_bounds(HISTOGRAM_US_LOWEST, HISTOGRAM_US_HIGHEST, HISTOGRAM_SIGNIFICANT_DIGITS)
        .expect("valid histogram bounds")
}

/// Finds missing and unexpected deliveries: before a measured message is sent, the number of
/// online recipients it should reach is registered under its random_id; each arrival counts
/// one down. Whatever is left when the run ends was never delivered.
#[derive(Debug)]
pub struct Deliveries {
    shards: Vec<Mutex<DeliveryShard>>,
    pub expected: AtomicU64,
    pub received: AtomicU64,
    /// Arrivals of a measured message beyond its recipient count, or of one never registered.
    pub unexpected: AtomicU64,
}

#[derive(Debug, Default)]
struct DeliveryShard {
    pending: HashMap<u64, PendingDelivery>,
    /// Sends whose outcome is unknown: their deliveries, if any, are not counted.
    abandoned: HashSet<u64>,
}

#[derive(Clone, Copy, Debug)]
struct PendingDelivery {
    remaining: u32,
    intended: Instant,
}

/// What an arrival meant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// One of the expected deliveries; `last` when it was the final one.
    Expected { last: bool },
    /// Not registered (warm-up, setup) or its send failed: not counted.
    Untracked,
    /// More arrivals than recipients: a duplicate.
    Unexpected,
}

const DELIVERY_SHARDS: usize = 64;

impl Deliveries {
    pub fn new() -> Deliveries {
        Deliveries {
            shards: (0..DELIVERY_SHARDS).map(|_| Mutex::new(DeliveryShard::default())).collect(),
            expected: AtomicU64::new(0),
            received: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
        }
    }

    /// A measured message intended at `intended` will reach `recipients` online users.
    pub fn expect(&self, random_id: u64, recipients: u32, intended: Instant) {
        if recipients == 0 {
            return;
        }
        self.expected.fetch_add(u64::from(recipients), Relaxed);
        let previous =
            self.shard(random_id).pending.insert(random_id, PendingDelivery { remaining: recipients, intended });
        assert!(previous.is_none(), "random_id {random_id} was used twice in one run");
    }

    /// The send failed: stop expecting its deliveries. A send whose outcome is unknown (a
    /// timeout, a lost connection) may still be delivered; such arrivals are not counted.
    pub fn abandon(&self, random_id: u64, maybe_delivered: bool) {
        let mut shard = self.shard(random_id);
        if let Some(pending) = shard.pending.remove(&random_id) {
            self.expected.fetch_sub(u64::from(pending.remaining), Relaxed);
            if maybe_delivered {
                shard.abandoned.insert(random_id);
            }
        }
    }

    /// A delivery of `random_id` arrived. An arrival of a message whose stamp lies inside the
    /// window (`measured_stamp`) but that is not, or no longer, expected is unexpected: a
    /// duplicate, or a message loadgen never sent.
    pub fn arrived(&self, random_id: u64, measured_stamp: bool) -> Arrival {
        let mut shard = self.shard(random_id);
        if let Some(pending) = shard.pending.get_mut(&random_id) {
            pending.remaining -= 1;
            self.received.fetch_add(1, Relaxed);
            let last = pending.remaining == 0;
            if last {
                // A later arrival of the same message finds nothing and counts as unexpected.
                shard.pending.remove(&random_id);
            }
            return Arrival::Expected { last };
        }
        if shard.abandoned.contains(&random_id) {
            return Arrival::Untracked;
        }
        if measured_stamp {
            self.unexpected.fetch_add(1, Relaxed);
            return Arrival::Unexpected;
        }
        Arrival::Untracked
    }

    /// Deliveries still outstanding.
    pub fn missing(&self) -> u64 {
        self.shards.iter().map(|shard| lock(shard).pending.values().map(|p| u64::from(p.remaining)).sum::<u64>()).sum()
    }

    /// Whether every registered delivery has arrived.
    pub fn all_arrived(&self) -> bool {
        self.shards.iter().all(|shard| lock(shard).pending.is_empty())
    }

    /// The intended time of the oldest outstanding delivery.
    pub fn oldest_pending(&self) -> Option<Instant> {
        self.shards.iter().filter_map(|shard| lock(shard).pending.values().map(|p| p.intended).min()).min()
    }

    fn shard(&self, random_id: u64) -> MutexGuard<'_, DeliveryShard> {
        // random_ids are consecutive within a run: the low bits spread them evenly.
        lock(&self.shards[(random_id % DELIVERY_SHARDS as u64) as usize])
    }
}

impl Default for Deliveries {
    fn default() -> Deliveries {
        Deliveries::new()
    }
}

/// Locks a mutex even after a panic elsewhere: every critical section here is a single
/// insert, remove or record, so the data is never seen half-changed.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Percentiles come from the recorded values; an empty measure reports zeroes, not NaN.
    #[test]
    fn summaries_report_percentiles_in_milliseconds() {
        let start = Instant::now();
        let recorder = Recorder::new(Window { start, end: start + Duration::from_secs(1) });
        for micros in 1..=1000u64 {
            recorder.record(Measure::SendAck, Duration::from_micros(micros * 10));
        }
        let summary = recorder.summary(Measure::SendAck);
        assert_eq!(summary.count, 1000);
        assert!((summary.p50_ms - 5.0).abs() < 0.01, "{summary:?}");
        assert!((summary.p99_ms - 9.9).abs() < 0.01, "{summary:?}");
        assert!((summary.max_ms - 10.0).abs() < 0.01, "{summary:?}");
        assert_eq!(recorder.summary(Measure::History).count, 0);
        assert_eq!(recorder.summary(Measure::History).p99_ms, 0.0);
    }

    // Each registered recipient is counted once; one arrival too many is unexpected, and a
    // message never delivered shows up as missing. Failed sends and warm-up messages are not
    // counted either way.
    #[test]
    fn deliveries_find_missing_and_unexpected_arrivals() {
        let deliveries = Deliveries::new();
        let now = Instant::now();
        deliveries.expect(1, 2, now);
        deliveries.expect(2, 3, now);
        deliveries.expect(3, 1, now);
        assert_eq!(deliveries.arrived(1, true), Arrival::Expected { last: false });
        assert_eq!(deliveries.arrived(1, true), Arrival::Expected { last: true });
        assert_eq!(deliveries.arrived(1, true), Arrival::Unexpected, "one more than its recipients");
        assert_eq!(deliveries.arrived(2, true), Arrival::Expected { last: false });
        deliveries.abandon(3, true);
        assert_eq!(deliveries.arrived(3, true), Arrival::Untracked, "its send failed");
        assert_eq!(deliveries.arrived(99, false), Arrival::Untracked, "warm-up");
        assert_eq!(deliveries.arrived(98, true), Arrival::Unexpected, "measured but never sent");
        assert_eq!(deliveries.missing(), 2);
        assert_eq!(deliveries.expected.load(Relaxed), 5);
        assert_eq!(deliveries.received.load(Relaxed), 3);
        assert_eq!(deliveries.unexpected.load(Relaxed), 2);
        assert!(!deliveries.all_arrived());
        assert_eq!(deliveries.oldest_pending(), Some(now));
    }
}
