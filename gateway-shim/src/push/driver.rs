//! The dispatcher's thread: a private current-thread tokio runtime that feeds the core from
//! the input channel, the expansions and the clock, performs the requests it asks for (up to
//! `requests_in_flight_max` at once, multiplexed over HTTP/2 where the provider speaks it), and
//! offers its reports to the host.
//!
//! The input is a crossbeam channel so shards can `try_send` without any async runtime; a
//! `Notify` wakes the loop after each send (it keeps a permit when the loop is busy, so no
//! wake-up is lost). Chat-level jobs are expanded on tokio's blocking threads, since the
//! host's directory may block; recipients come back through a bounded channel that the loop
//! reads only while the core has room, which holds the expansion back.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam::channel::{Receiver, Sender, TrySendError};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;

use super::config::{EXPANSIONS_IN_PROGRESS_MAX, EXPANSION_QUEUE_MAX, INTAKE_PER_TURN_MAX, REPORTS_RETRY_INTERVAL};
use super::core::{Core, DeliveryRef, ExpansionOrder, Millis, Outcome};
use super::job::{JobId, PushDirectory, PushInput, PushReport, Recipient};
use super::metrics::PushMetrics;
use super::provider::Providers;

/// Everything the thread owns.
pub(crate) struct Driver {
    pub core: Core,
    pub input: Receiver<PushInput>,
    pub wake: Arc<Notify>,
    pub stop: Arc<AtomicBool>,
    pub reports: Sender<PushReport>,
    pub providers: Arc<Providers>,
    pub directory: Arc<dyn PushDirectory>,
    pub metrics: Arc<PushMetrics>,
    pub requests_in_flight_max: usize,
    pub clock: Clock,
}

/// The dispatcher's time: Unix milliseconds at start plus monotonic time since, so it never
/// goes backwards and still compares with `mute_until`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    start: Instant,
    start_unix_ms: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let start_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64);
        Clock { start: Instant::now(), start_unix_ms }
    }

    pub fn now_ms(&self) -> Millis {
        self.start_unix_ms + self.start.elapsed().as_millis() as u64
    }

    fn instant_at(&self, at: Millis) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.start + Duration::from_millis(at.saturating_sub(self.start_unix_ms)))
    }
}

/// What an expansion sends back.
enum Expansion {
    Recipient(JobId, Recipient),
    Finished(JobId, bool),
}

impl Driver {
    /// Runs until `stop` is set. Pushes not yet delivered are left to the host's outbox.
    pub async fn serve(mut self) {
        let (expansions, mut expanded) = mpsc::channel::<Expansion>(EXPANSION_QUEUE_MAX);
        let mut expanding = 0usize;
        let mut in_flight: JoinSet<Outcome> = JoinSet::new();
        let mut in_flight_deliveries: HashMap<tokio::task::Id, DeliveryRef> = HashMap::new();
        while !self.stop.load(Ordering::Acquire) {
            let now = self.clock.now_ms();
            while let Some(joined) = in_flight.try_join_next_with_id() {
                self.finished_request(joined, &mut in_flight_deliveries, now);
            }
            for _ in 0..INTAKE_PER_TURN_MAX {
                if !self.core.has_room() {
                    break;
                }
                match self.input.try_recv() {
                    Ok(PushInput::Job(job)) => self.core.accept(job, now),
                    Ok(PushInput::Cancel(cancel)) => self.core.cancel(cancel, now),
                    Err(_) => break,
                }
            }
            for _ in 0..INTAKE_PER_TURN_MAX {
                if !self.core.has_room() {
                    break;
                }
                match expanded.try_recv() {
                    Ok(event) => self.expanded(event, &mut expanding, now),
                    Err(_) => break,
                }
            }
            while expanding < EXPANSIONS_IN_PROGRESS_MAX {
                let Some(order) = self.core.next_expansion() else { break };
                self.expand(order, expansions.clone());
                expanding += 1;
            }
            self.core.poll_timers(now);
            while in_flight.len() < self.requests_in_flight_max {
                let Some(order) = self.core.next_send() else { break };
                let providers = self.providers.clone();
                let clock = self.clock;
                let delivery = order.delivery;
                let task = in_flight.spawn(async move { providers.send(&order, clock.now_ms()).await });
                in_flight_deliveries.insert(task.id(), delivery);
            }
            self.offer_reports();
            self.update_gauges(in_flight.len());

            let next_timer = self.core.next_timer().map(|at| self.clock.instant_at(at));
            let reports_held = !self.core.reports().is_empty();
            let has_room = self.core.has_room();
            tokio::select! {
                _ = self.wake.notified() => {}
                joined = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                    if let Some(joined) = joined {
                        self.finished_request(joined, &mut in_flight_deliveries, self.clock.now_ms());
                    }
                }
                event = expanded.recv(), if has_room => {
                    if let Some(event) = event {
                        self.expanded(event, &mut expanding, self.clock.now_ms());
                    }
                }
                _ = tokio::time::sleep_until(next_timer.unwrap_or_else(tokio::time::Instant::now)), if next_timer.is_some() => {}
                _ = tokio::time::sleep(REPORTS_RETRY_INTERVAL), if reports_held => {}
            }
        }
        in_flight.abort_all();
        PushMetrics::set(&self.metrics.requests_in_flight, 0);
    }

    fn finished_request(
        &mut self,
        joined: Result<(tokio::task::Id, Outcome), tokio::task::JoinError>,
        deliveries: &mut HashMap<tokio::task::Id, DeliveryRef>,
        now: Millis,
    ) {
        let (id, outcome) = match joined {
            Ok(finished) => finished,
            Err(error) => {
                // A request task panicked or was cancelled: count it as a failed attempt.
                tracing::error!(%error, "a push request task failed");
                (error.id(), Outcome::Retry { after: None })
            }
        };
        if let Some(delivery) = deliveries.remove(&id) {
            self.core.on_outcome(delivery, outcome, now);
        }
    }

    fn expanded(&mut self, event: Expansion, expanding: &mut usize, now: Millis) {
        match event {
            Expansion::Recipient(job, recipient) => self.core.add_recipient(job, recipient, now),
            Expansion::Finished(job, listed_all) => {
                *expanding = expanding.saturating_sub(1);
                self.core.expansion_finished(job, listed_all, now);
            }
        }
    }

    /// Lists a chat-level job's members on a blocking thread; a failure or panic of the
    /// directory ends the expansion as failed (the core retries it with backoff).
    fn expand(&self, order: ExpansionOrder, sender: mpsc::Sender<Expansion>) {
        let directory = self.directory.clone();
        tokio::task::spawn_blocking(move || {
            let job = order.job;
            let listed = std::panic::catch_unwind(AssertUnwindSafe(|| {
                for member in directory.members_to_notify(&order.post, order.after) {
                    match member {
                        Ok(recipient) => {
                            if sender.blocking_send(Expansion::Recipient(job, recipient)).is_err() {
                                return false;
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%job, %error, "listing a chat's members to notify failed");
                            return false;
                        }
                    }
                }
                true
            }));
            let listed_all = listed.unwrap_or_else(|_| {
                tracing::error!(%job, "the push directory panicked");
                false
            });
            let _ = sender.blocking_send(Expansion::Finished(job, listed_all));
        });
    }

    /// Hands reports to the host as far as its channel has room; the rest wait in the core.
    fn offer_reports(&mut self) {
        let reports = self.core.reports();
        while let Some(report) = reports.pop_front() {
            match self.reports.try_send(report) {
                Ok(()) => {}
                Err(TrySendError::Full(report)) => {
                    reports.push_front(report);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => {
                    // Nobody listens any more: the host keeps every job in its outbox.
                    reports.clear();
                    break;
                }
            }
        }
    }

    fn update_gauges(&mut self, requests_in_flight: usize) {
        let metrics = &self.metrics;
        PushMetrics::set(&metrics.queue_depth, self.input.len() as u64);
        PushMetrics::set(&metrics.pending_pushes, self.core.pending_pushes() as u64);
        PushMetrics::set(&metrics.jobs_live, self.core.jobs_live() as u64);
        PushMetrics::set(&metrics.requests_in_flight, requests_in_flight as u64);
        let held = self.core.reports().len() as u64;
        PushMetrics::set(&metrics.reports_held, held);
    }
}
