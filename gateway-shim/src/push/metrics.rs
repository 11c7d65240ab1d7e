//! The dispatcher's counters and gauges: plain atomics written by the dispatcher thread (and
//! `input_full` by the senders), read by whoever renders them.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Counters only grow; gauges (`queue_depth`, `pending_pushes`, `requests_in_flight`,
/// `jobs_live`, `reports_held`) are set by the dispatcher on every turn of its loop.
#[derive(Debug, Default)]
pub struct PushMetrics {
    /// Jobs taken from the channel (chat-level ones count once).
    pub jobs_accepted: AtomicU64,
    /// Jobs ignored because a job with the same id is live or finished recently.
    pub jobs_duplicate: AtomicU64,
    pub jobs_completed: AtomicU64,
    pub jobs_dead_lettered: AtomicU64,
    /// Jobs the shards could not hand over because the input channel was full (they stay in
    /// their outboxes).
    pub input_full: AtomicU64,
    /// Requests a provider accepted (one per push per device).
    pub pushes_sent: AtomicU64,
    /// Attempts that failed (a retry follows unless the push was dead-lettered).
    pub pushes_failed: AtomicU64,
    /// Pushes to a device given up on: attempts exhausted or refused for good.
    pub pushes_dead_lettered: AtomicU64,
    /// Messages folded into a push already collecting for the same (user, chat).
    pub messages_coalesced: AtomicU64,
    /// Messages not pushed: chat muted, read before the push went out, or no device that a
    /// configured provider serves.
    pub dropped_muted: AtomicU64,
    pub dropped_cancelled: AtomicU64,
    pub dropped_no_device: AtomicU64,
    /// Devices reported to the host as invalid.
    pub invalid_tokens: AtomicU64,
    /// Chat-level jobs' expansions that failed (and were retried or dead-lettered).
    pub expansions_failed: AtomicU64,
    /// Gauges.
    pub queue_depth: AtomicU64,
    pub pending_pushes: AtomicU64,
    pub requests_in_flight: AtomicU64,
    pub jobs_live: AtomicU64,
    pub reports_held: AtomicU64,
}

impl PushMetrics {
    /// Appends the metrics in Prometheus text format, named `ferrogram_push_*`.
    pub fn render(&self, out: &mut String) {
        let counters: [(&str, &AtomicU64, &str); 15] = [
            ("jobs_accepted_total", &self.jobs_accepted, "push jobs taken from the shards"),
            ("jobs_duplicate_total", &self.jobs_duplicate, "push jobs ignored as already seen"),
            ("jobs_completed_total", &self.jobs_completed, "push jobs finished"),
            ("jobs_dead_lettered_total", &self.jobs_dead_lettered, "push jobs finished with an undeliverable push"),
            ("input_full_total", &self.input_full, "push jobs refused by a full input channel"),
            ("sent_total", &self.pushes_sent, "pushes a provider accepted"),
            ("failed_total", &self.pushes_failed, "push attempts that failed"),
            ("dead_lettered_total", &self.pushes_dead_lettered, "pushes given up on"),
            ("coalesced_total", &self.messages_coalesced, "messages folded into another push"),
            ("dropped_muted_total", &self.dropped_muted, "messages not pushed: chat muted"),
            ("dropped_cancelled_total", &self.dropped_cancelled, "messages not pushed: read first"),
            ("dropped_no_device_total", &self.dropped_no_device, "messages not pushed: no device served"),
            ("invalid_tokens_total", &self.invalid_tokens, "device tokens a provider reported invalid"),
            ("expansions_failed_total", &self.expansions_failed, "chat-level job expansions that failed"),
            ("queue_depth", &self.queue_depth, "push jobs waiting in the input channel"),
        ];
        let gauges: [(&str, &AtomicU64, &str); 4] = [
            ("pending", &self.pending_pushes, "(user, chat) pairs with a push collecting or in delivery"),
            ("requests_in_flight", &self.requests_in_flight, "provider requests in flight"),
            ("jobs_live", &self.jobs_live, "push jobs accepted and not finished"),
            ("reports_held", &self.reports_held, "reports waiting for room in the reports channel"),
        ];
        for (name, value, help) in counters {
            let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
            let _ = writeln!(out, "# HELP ferrogram_push_{name} {help}\n# TYPE ferrogram_push_{name} {kind}");
            let _ = writeln!(out, "ferrogram_push_{name} {}", value.load(Relaxed));
        }
        for (name, value, help) in gauges {
            let _ = writeln!(out, "# HELP ferrogram_push_{name} {help}\n# TYPE ferrogram_push_{name} gauge");
            let _ = writeln!(out, "ferrogram_push_{name} {}", value.load(Relaxed));
        }
    }

    pub(crate) fn add(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Relaxed);
    }

    pub(crate) fn set(gauge: &AtomicU64, value: u64) {
        gauge.store(value, Relaxed);
    }
}
