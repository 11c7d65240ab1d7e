//! The host side of push (DESIGN §8): joins the engine's durable push outboxes to the
//! [`PushDispatcher`].
//!
//! ```text
//!  shard: job durable ──PushHook──▶ intake ─┐
//!                                            ▼
//!                              feeder thread: names, devices ──try_send──▶ dispatcher ──HTTP──▶
//!                                  ▲     │                                        │
//!   Messenger::pending_pushes ─────┘     └──Messenger::pushes_done ◀── reports ───┘
//! ```
//!
//! - The engine's hook runs on a shard and must not block: it offers the job to a bounded
//!   channel. A job that does not fit stays in its outbox and is found by the next sweep.
//! - The feeder thread turns each job into the dispatcher's form (the sender's name comes from
//!   the engine, cached) and offers it with `try_send`. When the dispatcher is full it stops
//!   and sweeps later: every job of an outbox after the last one fed from it is fed from
//!   [`Messenger::pending_pushes`]. The dispatcher delivers a job fed twice once.
//! - At start it sweeps every shard: jobs queued before a crash or shutdown are delivered.
//! - Finished jobs (completed or dead-lettered) are removed from their outbox in batches with
//!   [`Messenger::pushes_done`], retried until the engine takes them. Tokens a provider reports
//!   invalid are unregistered.
//!
//! So a job leaves its outbox only after the dispatcher reported it finished: a crash at any
//! moment loses no push, and at worst repeats one (the payload's collapse id lets the device
//! replace it).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender, TrySendError};
use engine::ids::ShardId;
use engine::messaging::{ChatKind, Messenger, PendingPush, PushHook, PushRecipient, PushTarget, UserId};
use futures_lite::future::block_on;

use crate::push::{
    ChatPost, DirectoryError, JobId, MessagePush, PushConfig, PushDirectory, PushDispatcher, PushError, PushJob,
    PushJobKind, PushMetrics, PushReport, PushSendError, PushSender, Recipient,
};

/// Jobs the engine's hook can hold for the feeder before it leaves them to the next sweep.
pub const INTAKE_MAX: usize = 65_536;
/// Finished jobs of one shard removed from its outbox in one call.
const DONE_BATCH_MAX: usize = 512;
/// How often finished jobs are written back even when a batch is not full.
const TICK: Duration = Duration::from_millis(100);
/// A full sweep of the outboxes at least this often, even when nothing was refused: a safety
/// net (the dispatcher ignores jobs it already has).
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// After the dispatcher refused a job, wait this long before sweeping.
const SWEEP_AFTER_FULL: Duration = Duration::from_secs(1);
/// Reports and jobs taken in a row before the feeder looks at its timer and stop signal.
const DRAIN_MAX: usize = 4096;
/// Members asked for per page when a chat-level job is expanded.
const DIRECTORY_PAGE: usize = 256;
/// Sender names remembered (the cache is emptied when it fills).
const NAMES_CACHED_MAX: usize = 100_000;

/// The receiving end of the engine's push hook.
#[derive(Debug)]
pub struct PushIntake {
    jobs: Receiver<PendingPush>,
    /// Set when the hook found the channel full: a sweep must find what it dropped.
    overflowed: Arc<AtomicBool>,
}

/// The hook to install as `EngineHooks::push` before the engine opens, and its other end for
/// [`PushHost::start`].
pub fn push_intake() -> (PushHook, PushIntake) {
    let (sender, jobs) = crossbeam::channel::bounded(INTAKE_MAX);
    let overflowed = Arc::new(AtomicBool::new(false));
    let flag = overflowed.clone();
    let hook: PushHook = Arc::new(move |pending| match sender.try_send(pending) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => flag.store(true, Ordering::Relaxed),
        // The host is gone (shutting down): the job waits in its outbox for the next start.
        Err(TrySendError::Disconnected(_)) => {}
    });
    (hook, PushIntake { jobs, overflowed })
}

/// Counters of the feeder, beside the dispatcher's own.
#[derive(Debug, Default)]
pub struct PushHostMetrics {
    /// Jobs removed from the outboxes.
    pub jobs_removed: AtomicU64,
    /// Full sweeps of the outboxes.
    pub sweeps: AtomicU64,
    /// Devices unregistered because a provider said their token is invalid.
    pub devices_removed: AtomicU64,
    /// Calls to the engine that failed (retried).
    pub engine_errors: AtomicU64,
}

/// The running push side of a server: the dispatcher and the feeder thread.
#[derive(Debug)]
pub struct PushHost {
    dispatcher: Option<PushDispatcher>,
    sender: PushSender,
    metrics: Arc<PushHostMetrics>,
    stop: Sender<()>,
    feeder: Option<JoinHandle<()>>,
}

impl PushHost {
    /// Starts the dispatcher (with a directory over `messenger` for chat-level jobs) and the
    /// feeder, which first sweeps every outbox.
    pub fn start(messenger: Messenger, intake: PushIntake, config: PushConfig) -> Result<PushHost, PushError> {
        let directory = Arc::new(EngineDirectory { messenger: messenger.clone() });
        let dispatcher = PushDispatcher::start(config, directory)?;
        let metrics = Arc::new(PushHostMetrics::default());
        let (stop, stopped) = crossbeam::channel::bounded(1);
        let shards = messenger.engine().shard_count();
        let feeder = Feeder {
            shards,
            messenger,
            intake,
            sender: dispatcher.sender(),
            reports: dispatcher.reports(),
            stopped,
            names: HashMap::new(),
            done: BTreeMap::new(),
            metrics: metrics.clone(),
            sweep_due: Some(Instant::now()),
            last_sweep: Instant::now(),
            swept: vec![0; shards],
        };
        let feeder = std::thread::Builder::new().name("push-feeder".into()).spawn(move || feeder.run())?;
        Ok(PushHost { sender: dispatcher.sender(), dispatcher: Some(dispatcher), metrics, stop, feeder: Some(feeder) })
    }

    /// For cancels: reading a chat drops its pending pushes.
    pub fn sender(&self) -> PushSender {
        self.sender.clone()
    }

    pub fn dispatcher_metrics(&self) -> Option<Arc<PushMetrics>> {
        self.dispatcher.as_ref().map(PushDispatcher::metrics)
    }

    pub fn metrics(&self) -> Arc<PushHostMetrics> {
        self.metrics.clone()
    }

    /// Stops the feeder (writing back the finished jobs it holds) and the dispatcher. Jobs not
    /// finished stay in their outboxes for the next start. Call before the engine stops.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        let _ = self.stop.try_send(());
        if let Some(feeder) = self.feeder.take() {
            if feeder.join().is_err() {
                tracing::error!("the push feeder thread panicked");
            }
        }
        if let Some(dispatcher) = self.dispatcher.take() {
            dispatcher.shutdown();
        }
    }
}

impl Drop for PushHost {
    fn drop(&mut self) {
        self.stop_all();
    }
}

impl PushHostMetrics {
    /// Appends the metrics in Prometheus text format, named `ferrogram_push_host_*`.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let counters = [
            ("jobs_removed_total", &self.jobs_removed, "push jobs removed from the outboxes"),
            ("sweeps_total", &self.sweeps, "full sweeps of the push outboxes"),
            ("devices_removed_total", &self.devices_removed, "devices removed for an invalid token"),
            ("engine_errors_total", &self.engine_errors, "engine calls of the push feeder that failed"),
        ];
        for (name, value, help) in counters {
            let _ =
                writeln!(out, "# HELP ferrogram_push_host_{name} {help}\n# TYPE ferrogram_push_host_{name} counter");
            let _ = writeln!(out, "ferrogram_push_host_{name} {}", value.load(Ordering::Relaxed));
        }
    }
}

struct Feeder {
    messenger: Messenger,
    shards: usize,
    intake: PushIntake,
    sender: PushSender,
    reports: Receiver<PushReport>,
    stopped: Receiver<()>,
    /// Display names of senders, by user.
    names: HashMap<UserId, String>,
    /// Finished jobs not yet removed, per shard.
    done: BTreeMap<ShardId, Vec<u64>>,
    metrics: Arc<PushHostMetrics>,
    /// When the next sweep is due, if one is.
    sweep_due: Option<Instant>,
    last_sweep: Instant,
    /// Per shard, the sequence up to which every job of its outbox has been fed (or finished):
    /// a sweep resumes after it instead of feeding the dispatcher again what it already has.
    /// Jobs are queued and handed over in increasing sequence per shard, so any job the
    /// intake dropped lies after it.
    swept: Vec<u64>,
}

/// What feeding one job came to.
enum Fed {
    Taken,
    /// Nothing to deliver (no device any more): finished at once.
    Nothing,
    /// The dispatcher is full or stopped: the job stays in its outbox.
    Refused,
}

impl Feeder {
    fn run(mut self) {
        let ticker = crossbeam::channel::tick(TICK);
        let (jobs, reports, stopped) = (self.intake.jobs.clone(), self.reports.clone(), self.stopped.clone());
        let mut last_tick = Instant::now();
        loop {
            // While work is queued take it without blocking: `select!` registers with every
            // channel on each call, and under load that registration cost more than the work.
            let mut took = 0;
            while took < DRAIN_MAX {
                if let Ok(report) = reports.try_recv() {
                    self.report(report);
                } else if let Ok(pending) = jobs.try_recv() {
                    self.feed_or_sweep(pending);
                } else {
                    break;
                }
                took += 1;
            }
            if took > 0 {
                if last_tick.elapsed() >= TICK {
                    last_tick = Instant::now();
                    self.tick();
                }
                if !matches!(stopped.try_recv(), Err(crossbeam::channel::TryRecvError::Empty)) {
                    break;
                }
                continue;
            }
            crossbeam::channel::select! {
                recv(jobs) -> pending => match pending {
                    Ok(pending) => self.feed_or_sweep(pending),
                    Err(_) => break,
                },
                recv(reports) -> report => match report {
                    Ok(report) => self.report(report),
                    Err(_) => break,
                },
                recv(ticker) -> _ => {
                    last_tick = Instant::now();
                    self.tick();
                }
                recv(stopped) -> _ => break,
            }
        }
        // What the dispatcher finished is written back; the rest waits in the outboxes.
        while let Ok(report) = self.reports.try_recv() {
            self.report(report);
        }
        self.flush_done(0);
    }

    fn tick(&mut self) {
        self.flush_done(0);
        if self.intake.overflowed.swap(false, Ordering::Relaxed) {
            self.schedule_sweep(Duration::ZERO);
        }
        let now = Instant::now();
        if now.duration_since(self.last_sweep) >= SWEEP_EVERY {
            self.schedule_sweep(Duration::ZERO);
        }
        if self.sweep_due.is_some_and(|due| due <= now) {
            self.sweep();
        }
    }

    fn schedule_sweep(&mut self, after: Duration) {
        let at = Instant::now() + after;
        self.sweep_due = Some(self.sweep_due.map_or(at, |due| due.min(at)));
    }

    fn feed_or_sweep(&mut self, pending: PendingPush) {
        if let Fed::Refused = self.feed(pending) {
            self.schedule_sweep(SWEEP_AFTER_FULL);
        }
    }

    /// Feeds every job of every outbox not fed yet, page by page, until the dispatcher refuses
    /// one (the next sweep starts again at that one).
    fn sweep(&mut self) {
        self.sweep_due = None;
        self.last_sweep = Instant::now();
        PushHostMetrics::add(&self.metrics.sweeps);
        for index in 0..self.shards {
            let shard = ShardId(index as u16);
            let mut after = self.swept[index];
            loop {
                let page = match block_on(self.messenger.pending_pushes(
                    shard,
                    after,
                    engine::messaging::limits::PUSH_PAGE_MAX,
                )) {
                    Ok(page) => page,
                    Err(error) => {
                        tracing::warn!(%error, %shard, "cannot list pending pushes; will retry");
                        PushHostMetrics::add(&self.metrics.engine_errors);
                        self.schedule_sweep(SWEEP_AFTER_FULL);
                        return;
                    }
                };
                let Some(last) = page.last() else { break };
                after = last.job.sequence;
                for pending in page {
                    let sequence = pending.job.sequence;
                    if let Fed::Refused = self.feed(pending) {
                        self.swept[index] = sequence - 1;
                        self.schedule_sweep(SWEEP_AFTER_FULL);
                        return;
                    }
                    self.swept[index] = sequence;
                }
            }
        }
    }

    fn feed(&mut self, pending: PendingPush) -> Fed {
        let id = JobId { shard: pending.shard, sequence: pending.job.sequence };
        let Some(kind) = self.job_kind(pending) else {
            self.finished(id);
            return Fed::Nothing;
        };
        match self.sender.try_send_job(PushJob { id, kind }) {
            Ok(()) => Fed::Taken,
            Err(PushSendError::Full | PushSendError::Stopped) => Fed::Refused,
        }
    }

    /// The dispatcher's form of a job; `None` when there is no one to push to.
    fn job_kind(&mut self, pending: PendingPush) -> Option<PushJobKind> {
        let job = pending.job;
        match job.target {
            PushTarget::User(_) => {
                let recipient = pending.recipient?;
                let sender_name = match job.chat_kind {
                    ChatKind::Group => format!("{} @ {}", self.name_of(job.sender), job.chat_title),
                    ChatKind::Channel => job.chat_title.clone(),
                    ChatKind::Private => self.name_of(job.sender),
                };
                Some(PushJobKind::Message(MessagePush {
                    user: recipient.user,
                    chat: job.chat,
                    message: job.message,
                    sender_name,
                    text_preview: job.preview,
                    unread_badge: badge(&recipient),
                    date: job.date,
                    devices: recipient.devices,
                    settings: recipient.settings,
                }))
            }
            PushTarget::ChatMembers => Some(PushJobKind::ChatPost(ChatPost {
                chat: job.chat,
                message: job.message,
                sender: job.sender,
                sender_name: job.chat_title,
                text_preview: job.preview,
                date: job.date,
            })),
        }
    }

    fn name_of(&mut self, user: UserId) -> String {
        if let Some(name) = self.names.get(&user) {
            return name.clone();
        }
        let name = match block_on(self.messenger.get_users(&[user])) {
            Ok(profiles) => match profiles.first() {
                Some(profile) if profile.last_name.is_empty() => profile.first_name.clone(),
                Some(profile) => format!("{} {}", profile.first_name, profile.last_name),
                None => String::new(),
            },
            Err(error) => {
                // Not cached: the next job asks again.
                tracing::debug!(%error, %user, "cannot read a sender's name for a push");
                PushHostMetrics::add(&self.metrics.engine_errors);
                return String::new();
            }
        };
        if self.names.len() >= NAMES_CACHED_MAX {
            self.names.clear();
        }
        self.names.insert(user, name.clone());
        name
    }

    fn report(&mut self, report: PushReport) {
        match report {
            PushReport::Completed { job } | PushReport::DeadLettered { job } => self.finished(job),
            PushReport::InvalidToken { user, device } => {
                match block_on(self.messenger.unregister_device(user, device.kind, &device.token)) {
                    Ok(true) => PushHostMetrics::add(&self.metrics.devices_removed),
                    Ok(false) => {}
                    Err(error) => {
                        // The next push to it fails the same way and reports it again.
                        tracing::warn!(%error, %user, "cannot remove an invalid device");
                        PushHostMetrics::add(&self.metrics.engine_errors);
                    }
                }
            }
        }
    }

    fn finished(&mut self, job: JobId) {
        let batch = self.done.entry(job.shard).or_default();
        batch.push(job.sequence);
        if batch.len() >= DONE_BATCH_MAX {
            self.flush_done(DONE_BATCH_MAX);
        }
    }

    /// Removes finished jobs from their outboxes, for shards holding at least `at_least`. A
    /// batch the engine refuses is kept and tried again at the next tick.
    fn flush_done(&mut self, at_least: usize) {
        for (shard, batch) in self.done.iter_mut() {
            if batch.is_empty() || batch.len() < at_least {
                continue;
            }
            match block_on(self.messenger.pushes_done(*shard, batch.clone())) {
                Ok(()) => {
                    self.metrics.jobs_removed.fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch.clear();
                }
                Err(error) => {
                    tracing::warn!(%error, %shard, "cannot remove finished push jobs; will retry");
                    PushHostMetrics::add(&self.metrics.engine_errors);
                }
            }
        }
    }
}

impl PushHostMetrics {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Expands chat-level jobs through the engine: members page by page, the offline ones with a
/// device and the chat not muted.
struct EngineDirectory {
    messenger: Messenger,
}

impl PushDirectory for EngineDirectory {
    fn members_to_notify<'a>(
        &'a self,
        post: &ChatPost,
        after: Option<UserId>,
    ) -> Box<dyn Iterator<Item = Result<Recipient, DirectoryError>> + Send + 'a> {
        let (chat, sender) = (post.chat, post.sender);
        let mut cursor = after;
        let mut page: std::vec::IntoIter<PushRecipient> = Vec::new().into_iter();
        let mut exhausted = false;
        Box::new(std::iter::from_fn(move || loop {
            if let Some(recipient) = page.next() {
                return Some(Ok(Recipient {
                    user: recipient.user,
                    unread_badge: badge(&recipient),
                    devices: recipient.devices,
                    settings: recipient.settings,
                }));
            }
            if exhausted {
                return None;
            }
            match block_on(self.messenger.push_members_page(chat, sender, cursor, DIRECTORY_PAGE)) {
                Ok((recipients, last)) => {
                    exhausted = last.is_none();
                    cursor = last.or(cursor);
                    page = recipients.into_iter();
                }
                Err(error) => {
                    exhausted = true;
                    return Some(Err(DirectoryError { source: Box::new(error) }));
                }
            }
        }))
    }
}

fn badge(recipient: &PushRecipient) -> u32 {
    u32::try_from(recipient.unread_badge).unwrap_or(u32::MAX)
}
