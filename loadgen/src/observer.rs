//! What every task of a run shares: the clock, the recorder, the delivery bookkeeping, and the
//! receivers that read each online session's update stream from the moment it is provisioned
//! (so setup's own events never pile up) to the end of the run. A receiver that reads a media
//! message meant to be downloaded queues it for the run's downloader (`run`), which downloads
//! it on the recipient's session.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Instant;

use crate::limits::MEDIA_ARRIVALS_QUEUED_MAX;
use crate::media::{self, CaptionInfo};
use crate::schedule::Window;
use crate::stamp::{self, Clock};
use crate::stats::{Arrival, Deliveries, Measure, Recorder};
use crate::target::{ChatId, Delivery, MessageId, UpdateSource, UserId};

/// A media message its recipient is to download.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaArrival {
    pub recipient: UserId,
    pub chat: ChatId,
    pub id: MessageId,
    pub random_id: u64,
    /// The file's size as the message gives it.
    pub bytes: u64,
    /// What the caption says was uploaded.
    pub info: CaptionInfo,
    /// The send's intended start.
    pub intended: Instant,
}

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
    /// Downloads expected of measured media messages: one per message whose caption asks for
    /// it, counted off when the download ends (checked, refused or failed).
    pub downloads: Deliveries,
    media_arrivals: flume::Sender<MediaArrival>,
    /// Media messages waiting for the downloader.
    pub media_queue: flume::Receiver<MediaArrival>,
}

impl Observer {
    pub fn new() -> Observer {
        let (media_arrivals, media_queue) = flume::bounded(MEDIA_ARRIVALS_QUEUED_MAX);
        Observer {
            clock: Clock::new(),
            window: OnceLock::new(),
            recorder: OnceLock::new(),
            deliveries: Deliveries::new(),
            closing: AtomicBool::new(false),
            streams_lost: AtomicU64::new(0),
            bodiless: AtomicU64::new(0),
            downloads: Deliveries::new(),
            media_arrivals,
            media_queue,
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

    pub fn measured(&self, intended: Instant) -> bool {
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
            Delivery::Message { chat, id, sender, random_id, text, media_bytes } => {
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
                let Some(bytes) = media_bytes else { continue };
                let Some(info) = media::parse_caption(&text).filter(|info| info.download) else { continue };
                if observer.closing.load(Relaxed) {
                    continue;
                }
                let arrival = MediaArrival { recipient: me, chat, id, random_id, bytes, info, intended };
                // The downloader holds the receiving end for the whole run (the observer owns
                // both), so this fails only never; a full queue makes this stream wait.
                let _ = observer.media_arrivals.send_async(arrival).await;
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
