//! Push notifications for users with no online session (DESIGN §8): a dispatcher on its own
//! thread that takes durable jobs from the shards, applies the rules (coalescing, mute,
//! previews, cancel on read), delivers through APNs, FCM and a signed webhook relay, retries
//! with backoff, and reports back which jobs are finished and which device tokens are dead.
//!
//! # How a host uses it
//!
//! ```text
//!  user's shard                      dispatcher thread                         providers
//!  outbox ──PushSender::try_send──▶  core: slots per (user, chat)  ──HTTP──▶   APNs / FCM / relay
//!    ▲                               windows, retries, expansion
//!    └──── reports(): Completed / DeadLettered / InvalidToken ◀──┘
//! ```
//!
//! 1. [`PushDispatcher::start`] with a [`PushConfig`] and a [`PushDirectory`] (how to list the
//!    offline members of a chat fanned out on read).
//! 2. The durable outbox is the source of truth. When a shard makes a job durable it feeds a
//!    [`PushJob`] with [`PushSender::try_send`] (it never blocks). `Full` leaves the job
//!    unfed in the outbox: the host feeds unfed jobs again later (a periodic sweep), and feeds
//!    every job still in the outbox after a restart. Before feeding, the host may drop jobs
//!    whose message the user has read since.
//! 3. A job may be fed any number of times: the dispatcher delivers it once (it knows live
//!    jobs and remembers the last `FINISHED_JOBS_REMEMBERED_MAX` finished ones). So "fed
//!    twice" never means "pushed twice" within a process. Across a crash, a push sent but not
//!    yet reported finished is sent again after the restart; the payloads carry a collapse id
//!    per chat so the device replaces the first one instead of showing two.
//! 4. The host drains [`PushDispatcher::reports`]: `Completed{job}` and `DeadLettered{job}`
//!    mean "delete it from the outbox of `job.shard`"; `InvalidToken{user, device}` means
//!    "unregister that device". Each job is reported exactly once per process.
//! 5. Reading a chat on any device sends [`Cancel`] (best effort: a lost cancel costs one
//!    push).
//! 6. `try_send` answering `Stopped` means the dispatcher thread is gone (shut down, or a bug
//!    made it panic): nothing is lost, the outbox still holds every unreported job; the host
//!    may start a new dispatcher and feed them again.
//!
//! # The rules
//!
//! - Messages for one (user, chat) that arrive within `coalescing_window` of the first become
//!   one push with their count, the latest preview, and the badge of the latest job.
//! - No sender or text in a payload unless `show_previews`: the push then says "New message"
//!   or "N new messages".
//! - A chat muted now (`mute_until` in the future) gets no push; the job completes.
//! - A cancel drops what is not yet sent (collecting, or waiting for a retry) for messages up
//!   to its mark; requests already in flight finish.
//! - Failures (no connection, timeout, 408/429/5xx) are retried with exponential backoff and
//!   jitter, at most `attempts_max` attempts per device, then dead-lettered; refusals that no
//!   retry can fix dead-letter at once. A token reported dead (APNs 410 or `BadDeviceToken`,
//!   FCM 404/`UNREGISTERED`, the relay's 410) is reported as `InvalidToken`.
//! - Devices: `apns` → APNs, `fcm` → FCM, `webpush` and `webhook` → the relay; `apns`/`fcm`
//!   also go to the relay when their provider is not configured. Devices no configured
//!   provider serves are skipped (`dropped_no_device`).
//! - Everything is bounded: the input and report channels, (user, chat) slots, live jobs,
//!   devices per push, retries, requests in flight, timeouts, remembered ids (`config.rs`).
//!   When a bound is reached the dispatcher stops taking input: the shards' `try_send` fails
//!   and the jobs wait, safely, in their outboxes.
//!
//! # Transport
//!
//! `reqwest` over rustls (ring, Mozilla roots). APNs is spoken HTTP/2 only (ALPN `h2`); an
//! `http://` APNs endpoint is spoken h2c with prior knowledge, which is how tests reach a local
//! receiver (`ApnsTransport::Http1ForTests` speaks HTTP/1.1 to a plain receiver instead; Apple
//! refuses it). APNs provider tokens are signed here (ES256 JWT from the `.p8` key) or given by
//! the host; the FCM access token is given by the host and renewed through
//! [`PushDispatcher::set_fcm_access_token`].

mod config;
mod core;
mod driver;
mod job;
mod metrics;
mod notification;
mod provider;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam::channel::{Receiver, Sender, TrySendError};
use tokio::sync::Notify;

pub use self::config::*;
pub use self::job::{
    Cancel, ChatPost, Device, DeviceKind, DirectoryError, JobId, MessagePush, NoDirectory, NotificationSettings,
    PushDirectory, PushInput, PushJob, PushJobKind, PushReport, Recipient,
};
pub use self::metrics::PushMetrics;
pub use self::provider::webhook::{signature_hex, SIGNATURE_HEADER};

use self::core::{Core, CoreSettings};
use self::driver::{Clock, Driver};
use self::provider::{Credentials, Providers};

/// Why the dispatcher could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    #[error("invalid push configuration: {0}")]
    Config(String),
    #[error("cannot build the push HTTP client: {0}")]
    Client(String),
    #[error("cannot start the push dispatcher: {0}")]
    Start(#[from] std::io::Error),
}

/// Why [`PushSender::try_send`] did not take an input. Either way a job stays in its outbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushSendError {
    #[error("the push input channel is full")]
    Full,
    #[error("the push dispatcher has stopped")]
    Stopped,
}

/// The shards' end of the input channel: cheap to clone, never blocks.
#[derive(Clone, Debug)]
pub struct PushSender {
    input: Sender<PushInput>,
    wake: Arc<Notify>,
    metrics: Arc<PushMetrics>,
}

impl PushSender {
    /// Hands a job or a cancel to the dispatcher without blocking.
    pub fn try_send(&self, input: PushInput) -> Result<(), PushSendError> {
        match self.input.try_send(input) {
            Ok(()) => {
                self.wake.notify_one();
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                PushMetrics::add(&self.metrics.input_full, 1);
                Err(PushSendError::Full)
            }
            Err(TrySendError::Disconnected(_)) => Err(PushSendError::Stopped),
        }
    }

    pub fn try_send_job(&self, job: PushJob) -> Result<(), PushSendError> {
        self.try_send(PushInput::Job(job))
    }

    pub fn try_cancel(&self, cancel: Cancel) -> Result<(), PushSendError> {
        self.try_send(PushInput::Cancel(cancel))
    }
}

/// A running dispatcher. Dropping it stops it like [`PushDispatcher::shutdown`].
#[derive(Debug)]
pub struct PushDispatcher {
    sender: PushSender,
    reports: Receiver<PushReport>,
    metrics: Arc<PushMetrics>,
    credentials: Arc<Credentials>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PushDispatcher {
    /// Checks the configuration, builds the HTTP clients and starts the dispatcher thread.
    pub fn start(config: PushConfig, directory: Arc<dyn PushDirectory>) -> Result<PushDispatcher, PushError> {
        config.validate()?;
        let metrics = Arc::new(PushMetrics::default());
        let credentials = Arc::new(Credentials::default());
        let providers = Arc::new(Providers::new(&config, credentials.clone())?);
        let routable = providers.routable();
        if !(routable.apns || routable.fcm || routable.relay) {
            tracing::warn!("no push provider is configured: every push job completes without a push");
        }
        let settings = CoreSettings {
            window_ms: config.coalescing_window.as_millis() as u64,
            attempts_max: config.attempts_max,
            retry_delay_min_ms: config.retry_delay_min.as_millis() as u64,
            retry_delay_max_ms: config.retry_delay_max.as_millis() as u64,
            pending_pushes_max: config.pending_pushes_max,
            jobs_live_max: config.jobs_live_max,
            routable,
        };
        let (input, inputs) = crossbeam::channel::bounded(config.input_queue_max);
        let (reported, reports) = crossbeam::channel::bounded(config.reports_queue_max);
        let wake = Arc::new(Notify::new());
        let stop = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(EXPANSIONS_IN_PROGRESS_MAX + 2)
            .thread_name("push-blocking")
            .build()?;
        let driver = Driver {
            core: Core::new(settings, fastrand::u64(..), metrics.clone()),
            input: inputs,
            wake: wake.clone(),
            stop: stop.clone(),
            reports: reported,
            providers,
            directory,
            metrics: metrics.clone(),
            requests_in_flight_max: config.requests_in_flight_max,
            clock: Clock::new(),
        };
        let thread = std::thread::Builder::new().name("push-dispatcher".into()).spawn(move || {
            runtime.block_on(driver.serve());
            runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
        })?;
        Ok(PushDispatcher {
            sender: PushSender { input, wake, metrics: metrics.clone() },
            reports,
            metrics,
            credentials,
            stop,
            thread: Some(thread),
        })
    }

    /// A sender for the shards.
    pub fn sender(&self) -> PushSender {
        self.sender.clone()
    }

    /// The reports channel: every finished job once, and every token found invalid.
    pub fn reports(&self) -> Receiver<PushReport> {
        self.reports.clone()
    }

    pub fn metrics(&self) -> Arc<PushMetrics> {
        self.metrics.clone()
    }

    /// Replaces the FCM OAuth access token (they last an hour).
    pub fn set_fcm_access_token(&self, token: String) {
        Credentials::write(&self.credentials.fcm_access_token, token);
    }

    /// Replaces the APNs provider token, for `ApnsAuth::ProviderToken` (they last an hour).
    pub fn set_apns_provider_token(&self, token: String) {
        Credentials::write(&self.credentials.apns_provider_token, token);
    }

    /// Stops the thread. Requests in flight are abandoned and pushes not yet delivered are
    /// forgotten: their jobs were not reported, so they are still in the outboxes.
    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.sender.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the push dispatcher thread panicked");
            }
        }
    }
}

impl Drop for PushDispatcher {
    fn drop(&mut self) {
        self.stop_thread();
    }
}
