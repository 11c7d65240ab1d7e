//! What every task of a run shares: the clock, the recorder, the delivery bookkeeping, and the
//! receivers that read each online session's update stream from the moment it is provisioned
//! (so setup's own events never pile up) to the end of the run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Instant;

use crate::schedule::Window;
use crate::stamp::{self, Clock};
use crate::stats::{Arrival, Deliveries, Measure, Recorder};
use crate::target::{Delivery, UpdateSource, UserId};

/// Shared by the scheduler, the operations and the receivers of one run.
#[derive(Debug)]
pub struct Observer {
    pub clock: Clock,
    window: OnceLock<Window>,
    recorder: OnceLock<Recorder>,
    pub deliveries: Deliveries,
    /// Set before the run closes its sessions, so their streams' end is not a loss.
    pub closing: AtomicBool,
    /// Update streams that ended before the run closed them (the server closed the
    /// connection), during setup or load.
    pub streams_lost: AtomicU64,
    /// New messages announced without a body during the load.
    pub bodiless: AtomicU64,
}

impl Observer {
    pub fn new() -> Observer {
        Observer {
            clock: Clock::new(),
            window: OnceLock::new(),
            recorder: OnceLock::new(),
            deliveries: Deliveries::new(),
            closing: AtomicBool::new(false),
            streams_lost: AtomicU64::new(0),
            bodiless: AtomicU64::new(0),
        }
    }

    /// Fixes the measured window once the schedule is known.
    pub fn start(&self, window: Window) {
        assert!(self.window.set(window).is_ok(), "a run has one window");
        assert!(self.recorder.set(Recorder::new(window)).is_ok(), "a run has one recorder");
    }

    /// The recorder, once the load has a window.
    pub fn recorder(&self) -> Option<&Recorder> {
        self.recorder.get()
    }

    fn measured(&self, intended: Instant) -> bool {
        self.window.get().is_some_and(|window| window.contains(intended))
    }
}

impl Default for Observer {
    fn default() -> Observer {
        Observer::new()
    }
}

/// Reads one online session's deliveries until its stream ends: each stamped message from
/// someone else is a delivery sample measured from the stamp's intended send time.
pub async fn receive<U: UpdateSource>(observer: std::sync::Arc<Observer>, me: UserId, mut updates: U) {
    while let Some(delivery) = updates.next().await {
        match delivery {
            Delivery::Message { sender, random_id, text, .. } => {
                if sender == me {
                    continue;
                }
                let Some(unix_ns) = stamp::parse(&text) else { continue };
                let arrived = Instant::now();
                let intended = observer.clock.instant(unix_ns);
                let measured = observer.measured(intended);
                if let Arrival::Expected { last } = observer.deliveries.arrived(random_id, measured) {
                    if let Some(recorder) = observer.recorder() {
                        let latency = arrived.saturating_duration_since(intended);
                        recorder.record(Measure::Delivery, latency);
                        if last {
                            recorder.record(Measure::DeliveryAll, latency);
                        }
                    }
                }
            }
            Delivery::Bodiless { .. } => {
                if observer.recorder().is_some() {
                    observer.bodiless.fetch_add(1, Relaxed);
                }
            }
            Delivery::Resync => {
                if let Some(recorder) = observer.recorder() {
                    recorder.counters.resyncs.fetch_add(1, Relaxed);
                }
            }
            Delivery::Other => {}
        }
    }
    if !observer.closing.load(Relaxed) {
        observer.streams_lost.fetch_add(1, Relaxed);
    }
}
