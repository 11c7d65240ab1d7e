//! The dispatcher's rules as a sans-I/O state machine: jobs, cancels, expansion results,
//! provider outcomes and the time go in; requests to send, expansions to run and reports for
//! the host come out. It performs nothing, so tests drive it with a made-up clock.
//!
//! State per (user, chat) — a *slot* — holds at most one push collecting messages (`pending`,
//! until its window closes) and at most one push being delivered to the user's devices
//! (`outgoing`, in flight or waiting for a retry). A window that closes while the previous push
//! is still being delivered waits for it, so a chat's pushes reach a device in order and a
//! retried older push never lands after a newer one.
//!
//! A job is finished when no push carries it any more (and, for a chat-level job, its
//! expansion is over); only then is it reported, once, and its id remembered so a copy fed
//! again is ignored.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use engine::messaging::{ChatId, MessageId, UnixMs, UserId};

use super::config::{DEVICES_PER_PUSH_MAX, FINISHED_JOBS_REMEMBERED_MAX, READ_MARKS_REMEMBERED_MAX, REPORTS_HELD_MAX};
use super::job::{
    Cancel, ChatPost, Device, DeviceKind, JobId, NotificationSettings, PushJob, PushJobKind, PushReport, Recipient,
};
use super::metrics::PushMetrics;
use super::notification::{shorten_preview, shorten_sender, Notification, Preview};

/// Milliseconds on the dispatcher's clock: Unix time at start plus monotonic time since, so it
/// compares with `mute_until` and never goes backwards.
pub(crate) type Millis = u64;

/// One push to one device: the slot, the push's number and the device's index in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct DeliveryRef {
    pub user: UserId,
    pub chat: ChatId,
    pub push: u64,
    pub device: u16,
}

/// A request for the driver to perform.
#[derive(Debug)]
pub(crate) struct SendOrder {
    pub delivery: DeliveryRef,
    pub device: Device,
    pub notification: Arc<Notification>,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// A chat-level job for the driver to expand through the directory.
#[derive(Debug)]
pub(crate) struct ExpansionOrder {
    pub job: JobId,
    pub post: Arc<ChatPost>,
    pub after: Option<UserId>,
}

/// How a provider answered one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Delivered,
    /// The token is unknown or expired: the device is to be removed.
    InvalidToken,
    /// Worth trying again (no connection, timeout, overload, server error), no sooner than
    /// `after` when the provider said so.
    Retry {
        after: Option<Duration>,
    },
    /// Refused for good (a malformed request, a configuration the provider rejects): retrying
    /// cannot help.
    Refused,
}

/// Which device kinds some configured provider serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Routable {
    pub apns: bool,
    pub fcm: bool,
    pub relay: bool,
}

impl Routable {
    pub fn serves(self, kind: DeviceKind) -> bool {
        match kind {
            DeviceKind::Apns => self.apns || self.relay,
            DeviceKind::Fcm => self.fcm || self.relay,
            DeviceKind::WebPush | DeviceKind::Webhook => self.relay,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct CoreSettings {
    pub window_ms: u64,
    pub attempts_max: u32,
    pub retry_delay_min_ms: u64,
    pub retry_delay_max_ms: u64,
    pub pending_pushes_max: usize,
    pub jobs_live_max: usize,
    pub routable: Routable,
}

pub(crate) struct Core {
    settings: CoreSettings,
    slots: HashMap<SlotKey, Slot>,
    jobs: HashMap<JobId, JobState>,
    finished: Recent<JobId>,
    read_marks: RecentMarks,
    timers: BinaryHeap<Reverse<(Millis, Timer)>>,
    ready: VecDeque<DeliveryRef>,
    expansions: VecDeque<JobId>,
    reports: VecDeque<PushReport>,
    next_number: u64,
    rng: fastrand::Rng,
    metrics: Arc<PushMetrics>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("slots", &self.slots.len())
            .field("jobs", &self.jobs.len())
            .field("timers", &self.timers.len())
            .field("ready", &self.ready.len())
            .finish_non_exhaustive()
    }
}

impl Core {
    pub fn new(settings: CoreSettings, seed: u64, metrics: Arc<PushMetrics>) -> Core {
        Core {
            settings,
            slots: HashMap::new(),
            jobs: HashMap::new(),
            finished: Recent::new(FINISHED_JOBS_REMEMBERED_MAX),
            read_marks: RecentMarks::new(READ_MARKS_REMEMBERED_MAX),
            timers: BinaryHeap::new(),
            ready: VecDeque::new(),
            expansions: VecDeque::new(),
            reports: VecDeque::new(),
            next_number: 1,
            rng: fastrand::Rng::with_seed(seed),
            metrics,
        }
    }

    /// Whether the core can take another job or recipient without passing a limit.
    pub fn has_room(&self) -> bool {
        self.slots.len() < self.settings.pending_pushes_max
            && self.jobs.len() < self.settings.jobs_live_max
            && self.reports.len() < REPORTS_HELD_MAX
    }

    pub fn accept(&mut self, job: PushJob, now: Millis) {
        if self.jobs.contains_key(&job.id) || self.finished.contains(&job.id) {
            PushMetrics::add(&self.metrics.jobs_duplicate, 1);
            return;
        }
        PushMetrics::add(&self.metrics.jobs_accepted, 1);
        match job.kind {
            PushJobKind::Message(push) => {
                self.jobs.insert(job.id, JobState { holders: 0, dead: false, post: None });
                let offer = Offer {
                    message: push.message,
                    sender_name: shorten_sender(&push.sender_name).into(),
                    text: shorten_preview(&push.text_preview).into(),
                    date: push.date,
                    badge: push.unread_badge,
                    devices: push.devices,
                    settings: push.settings,
                };
                self.offer(job.id, (push.user, push.chat), offer, now);
                self.finish_if_done(job.id);
            }
            PushJobKind::ChatPost(mut post) => {
                post.sender_name = shorten_sender(&post.sender_name);
                post.text_preview = shorten_preview(&post.text_preview);
                let post = PostState { post: Arc::new(post), phase: Phase::Queued, last_user: None, failures: 0 };
                self.jobs.insert(job.id, JobState { holders: 0, dead: false, post: Some(post) });
                self.expansions.push_back(job.id);
            }
        }
    }

    /// The user read a chat: drop what is not yet sent of pushes for messages up to the mark.
    pub fn cancel(&mut self, cancel: Cancel, now: Millis) {
        let key = (cancel.user, cancel.chat);
        let read = cancel.read_max_id;
        self.read_marks.raise(key, read);
        let Some(slot) = self.slots.get_mut(&key) else { return };
        let mut released = Vec::new();
        if let Some(pending) = &mut slot.pending {
            pending.jobs.retain(|&(job, message)| {
                let keep = message > read;
                if !keep {
                    released.push(job);
                }
                keep
            });
            if pending.jobs.is_empty() {
                slot.pending = None;
            }
        }
        if let Some(outgoing) = &mut slot.outgoing {
            if outgoing.notification.message <= read {
                let mut dropped = false;
                for delivery in &mut outgoing.deliveries {
                    if matches!(delivery.state, DeliveryState::Ready | DeliveryState::Waiting) {
                        delivery.state = DeliveryState::Done;
                        dropped = true;
                    }
                }
                if dropped {
                    PushMetrics::add(&self.metrics.dropped_cancelled, 1);
                }
            }
        }
        PushMetrics::add(&self.metrics.dropped_cancelled, released.len() as u64);
        for job in released {
            self.release(job, false);
        }
        self.settle(key, now);
    }

    /// The next chat-level job to expand, with where to resume.
    pub fn next_expansion(&mut self) -> Option<ExpansionOrder> {
        while let Some(job) = self.expansions.pop_front() {
            let Some(post) = self.jobs.get_mut(&job).and_then(|state| state.post.as_mut()) else { continue };
            if post.phase != Phase::Queued {
                continue;
            }
            post.phase = Phase::Running;
            return Some(ExpansionOrder { job, post: post.post.clone(), after: post.last_user });
        }
        None
    }

    /// One member of a chat-level job's chat, from its expansion.
    pub fn add_recipient(&mut self, job: JobId, recipient: Recipient, now: Millis) {
        let Some(post) = self.jobs.get_mut(&job).and_then(|state| state.post.as_mut()) else { return };
        if post.last_user.is_some_and(|last| recipient.user <= last) {
            tracing::error!(%job, user = %recipient.user, "the push directory listed members out of order; skipped");
            return;
        }
        post.last_user = Some(recipient.user);
        let post = post.post.clone();
        let offer = Offer {
            message: post.message,
            sender_name: post.sender_name.as_str().into(),
            text: post.text_preview.as_str().into(),
            date: post.date,
            badge: recipient.unread_badge,
            devices: recipient.devices,
            settings: recipient.settings,
        };
        self.offer(job, (recipient.user, post.chat), offer, now);
    }

    /// A chat-level job's expansion ended: every member was listed, or the directory failed.
    pub fn expansion_finished(&mut self, job: JobId, listed_all: bool, now: Millis) {
        let Some(state) = self.jobs.get_mut(&job) else { return };
        let Some(post) = state.post.as_mut() else { return };
        if listed_all {
            post.phase = Phase::Finished;
        } else {
            PushMetrics::add(&self.metrics.expansions_failed, 1);
            post.failures += 1;
            if post.failures >= self.settings.attempts_max {
                tracing::error!(%job, "giving up expanding a chat-level push job");
                post.phase = Phase::Finished;
                state.dead = true;
            } else {
                post.phase = Phase::Waiting;
                let failures = post.failures;
                let delay = self.backoff_ms(failures, None);
                self.timers.push(Reverse((now + delay, Timer::Expansion(job))));
            }
        }
        self.finish_if_done(job);
    }

    /// Closes the windows and ends the retry waits that are due.
    pub fn poll_timers(&mut self, now: Millis) {
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, timer))) = self.timers.pop() else { break };
            match timer {
                Timer::Window { key, generation } => {
                    let current = self.slots.get(&key).and_then(|slot| slot.pending.as_ref()).map(|p| p.generation);
                    if current == Some(generation) {
                        self.promote(key, now);
                    }
                }
                Timer::Retry(delivery) => {
                    if let Some(found) = self.delivery_mut(delivery) {
                        if found.state == DeliveryState::Waiting {
                            found.state = DeliveryState::Ready;
                            self.ready.push_back(delivery);
                        }
                    }
                }
                Timer::Expansion(job) => {
                    if let Some(post) = self.jobs.get_mut(&job).and_then(|state| state.post.as_mut()) {
                        if post.phase == Phase::Waiting {
                            post.phase = Phase::Queued;
                            self.expansions.push_back(job);
                        }
                    }
                }
            }
        }
    }

    /// When the next timer is due (it may turn out to be stale).
    pub fn next_timer(&self) -> Option<Millis> {
        self.timers.peek().map(|Reverse((at, _))| *at)
    }

    /// The next request to perform, if one is ready.
    pub fn next_send(&mut self) -> Option<SendOrder> {
        while let Some(delivery) = self.ready.pop_front() {
            let Some(slot) = self.slots.get_mut(&(delivery.user, delivery.chat)) else { continue };
            let Some(outgoing) = slot.outgoing.as_mut().filter(|outgoing| outgoing.id == delivery.push) else {
                continue;
            };
            let Some(found) = outgoing.deliveries.get_mut(delivery.device as usize) else { continue };
            if found.state != DeliveryState::Ready {
                continue;
            }
            found.state = DeliveryState::InFlight;
            found.attempts += 1;
            return Some(SendOrder {
                delivery,
                device: found.device.clone(),
                notification: outgoing.notification.clone(),
                attempt: found.attempts,
            });
        }
        None
    }

    /// A request finished.
    pub fn on_outcome(&mut self, delivery: DeliveryRef, outcome: Outcome, now: Millis) {
        let attempts_max = self.settings.attempts_max;
        let metrics = self.metrics.clone();
        let Some(found) = self.delivery_mut(delivery) else { return };
        if found.state != DeliveryState::InFlight {
            return;
        }
        let attempts = found.attempts;
        let mut dead = false;
        let mut retry_after = None;
        match outcome {
            Outcome::Delivered => {
                found.state = DeliveryState::Done;
                PushMetrics::add(&metrics.pushes_sent, 1);
            }
            Outcome::InvalidToken => {
                found.state = DeliveryState::Done;
                let device = found.device.clone();
                PushMetrics::add(&metrics.invalid_tokens, 1);
                self.reports.push_back(PushReport::InvalidToken { user: delivery.user, device });
            }
            Outcome::Retry { after } => {
                PushMetrics::add(&metrics.pushes_failed, 1);
                if attempts >= attempts_max {
                    found.state = DeliveryState::Done;
                    dead = true;
                } else {
                    found.state = DeliveryState::Waiting;
                    retry_after = Some(after);
                }
            }
            Outcome::Refused => {
                PushMetrics::add(&metrics.pushes_failed, 1);
                found.state = DeliveryState::Done;
                dead = true;
            }
        }
        if dead {
            PushMetrics::add(&self.metrics.pushes_dead_lettered, 1);
            if let Some(outgoing) =
                self.slots.get_mut(&(delivery.user, delivery.chat)).and_then(|s| s.outgoing.as_mut())
            {
                outgoing.dead = true;
            }
        }
        if let Some(after) = retry_after {
            let delay = self.backoff_ms(attempts, after);
            self.timers.push(Reverse((now + delay, Timer::Retry(delivery))));
        }
        self.settle((delivery.user, delivery.chat), now);
    }

    /// Reports waiting for the host, oldest first.
    pub fn reports(&mut self) -> &mut VecDeque<PushReport> {
        &mut self.reports
    }

    pub fn pending_pushes(&self) -> usize {
        self.slots.len()
    }

    pub fn jobs_live(&self) -> usize {
        self.jobs.len()
    }

    /// Puts one message for one user into its slot, unless a rule drops it.
    fn offer(&mut self, job: JobId, key: SlotKey, offer: Offer, now: Millis) {
        if self.read_marks.get(&key).is_some_and(|read| offer.message <= read) {
            PushMetrics::add(&self.metrics.dropped_cancelled, 1);
            return;
        }
        if offer.settings.muted_at(UnixMs(now)) {
            PushMetrics::add(&self.metrics.dropped_muted, 1);
            return;
        }
        let routable = self.settings.routable;
        let devices: Vec<Device> = offer
            .devices
            .into_iter()
            .filter(|device| routable.serves(device.kind))
            .take(DEVICES_PER_PUSH_MAX)
            .collect();
        if devices.is_empty() {
            PushMetrics::add(&self.metrics.dropped_no_device, 1);
            return;
        }
        let latest =
            Latest { message: offer.message, sender_name: offer.sender_name, text: offer.text, date: offer.date };
        let slot = self.slots.entry(key).or_default();
        match &mut slot.pending {
            Some(pending) => {
                if pending.jobs.iter().any(|&(held, _)| held == job) {
                    return;
                }
                PushMetrics::add(&self.metrics.messages_coalesced, 1);
                pending.jobs.push((job, offer.message));
                if offer.message >= pending.latest.message {
                    pending.latest = latest;
                    pending.badge = offer.badge;
                }
                // The newest job knows the newest devices and settings.
                pending.devices = devices;
                pending.settings = offer.settings;
            }
            None => {
                let generation = self.next_number;
                self.next_number += 1;
                let deadline = now + self.settings.window_ms;
                slot.pending = Some(Pending {
                    generation,
                    deadline,
                    jobs: vec![(job, offer.message)],
                    latest,
                    badge: offer.badge,
                    devices,
                    settings: offer.settings,
                });
                self.timers.push(Reverse((deadline, Timer::Window { key, generation })));
            }
        }
        if let Some(state) = self.jobs.get_mut(&job) {
            state.holders += 1;
        }
    }

    /// The window of `key` closed: its pending push becomes the outgoing one, unless the
    /// previous push is still being delivered (then `settle` promotes it when that ends).
    fn promote(&mut self, key: SlotKey, now: Millis) {
        let Some(slot) = self.slots.get_mut(&key) else { return };
        if slot.outgoing.is_some() {
            return;
        }
        let Some(pending) = slot.pending.take() else { return };
        if pending.settings.muted_at(UnixMs(now)) {
            PushMetrics::add(&self.metrics.dropped_muted, pending.jobs.len() as u64);
            for (job, _) in pending.jobs {
                self.release(job, false);
            }
            self.settle(key, now);
            return;
        }
        let preview = pending
            .settings
            .show_previews
            .then(|| Preview { sender_name: pending.latest.sender_name.clone(), text: pending.latest.text.clone() });
        let notification = Notification {
            user: key.0,
            chat: key.1,
            message: pending.latest.message,
            count: pending.jobs.len().try_into().unwrap_or(u32::MAX),
            badge: pending.badge,
            date: pending.latest.date,
            preview,
        };
        let push = self.next_number;
        self.next_number += 1;
        for device in 0..pending.devices.len() {
            // `offer` keeps at most DEVICES_PER_PUSH_MAX devices, so the index fits.
            self.ready.push_back(DeliveryRef { user: key.0, chat: key.1, push, device: device as u16 });
        }
        let deliveries = pending
            .devices
            .into_iter()
            .map(|device| Delivery { device, attempts: 0, state: DeliveryState::Ready })
            .collect();
        slot.outgoing = Some(Outgoing {
            id: push,
            notification: Arc::new(notification),
            jobs: pending.jobs,
            deliveries,
            dead: false,
        });
    }

    /// After a change to `key`'s slot: finish its outgoing push if every device is done,
    /// promote a pending push whose window has closed, drop the slot when empty.
    fn settle(&mut self, key: SlotKey, now: Millis) {
        let Some(slot) = self.slots.get_mut(&key) else { return };
        let finished = slot
            .outgoing
            .as_ref()
            .is_some_and(|outgoing| outgoing.deliveries.iter().all(|delivery| delivery.state == DeliveryState::Done));
        if finished {
            if let Some(outgoing) = slot.outgoing.take() {
                for (job, _) in outgoing.jobs {
                    self.release(job, outgoing.dead);
                }
            }
        }
        let Some(slot) = self.slots.get(&key) else { return };
        if slot.outgoing.is_none() && slot.pending.as_ref().is_some_and(|pending| pending.deadline <= now) {
            self.promote(key, now);
        }
        if self.slots.get(&key).is_some_and(|slot| slot.pending.is_none() && slot.outgoing.is_none()) {
            self.slots.remove(&key);
        }
    }

    /// A push that carried `job` is over.
    fn release(&mut self, job: JobId, dead: bool) {
        let Some(state) = self.jobs.get_mut(&job) else { return };
        assert!(state.holders > 0, "push job {job} released more often than held");
        state.holders -= 1;
        state.dead |= dead;
        self.finish_if_done(job);
    }

    fn finish_if_done(&mut self, job: JobId) {
        let Some(state) = self.jobs.get(&job) else { return };
        let expanding = state.post.as_ref().is_some_and(|post| post.phase != Phase::Finished);
        if state.holders > 0 || expanding {
            return;
        }
        let dead = state.dead;
        self.jobs.remove(&job);
        self.finished.insert(job);
        if dead {
            PushMetrics::add(&self.metrics.jobs_dead_lettered, 1);
            self.reports.push_back(PushReport::DeadLettered { job });
        } else {
            PushMetrics::add(&self.metrics.jobs_completed, 1);
            self.reports.push_back(PushReport::Completed { job });
        }
    }

    fn delivery_mut(&mut self, delivery: DeliveryRef) -> Option<&mut Delivery> {
        let outgoing = self.slots.get_mut(&(delivery.user, delivery.chat))?.outgoing.as_mut()?;
        if outgoing.id != delivery.push {
            return None;
        }
        outgoing.deliveries.get_mut(delivery.device as usize)
    }

    /// Exponential backoff with jitter: attempt n waits between half and all of
    /// `min · 2^(n-1)` (capped at max), and no less than the provider's `Retry-After`.
    fn backoff_ms(&mut self, attempt: u32, after: Option<Duration>) -> u64 {
        let doublings = attempt.saturating_sub(1).min(40);
        let full =
            self.settings.retry_delay_min_ms.saturating_mul(1 << doublings).min(self.settings.retry_delay_max_ms);
        let delay = full / 2 + self.rng.u64(0..=full - full / 2);
        let asked = after.map_or(0, |after| (after.as_millis() as u64).min(self.settings.retry_delay_max_ms));
        delay.max(asked)
    }
}

type SlotKey = (UserId, ChatId);

#[derive(Debug, Default)]
struct Slot {
    pending: Option<Pending>,
    outgoing: Option<Outgoing>,
}

/// A push collecting messages until its window closes.
#[derive(Debug)]
struct Pending {
    generation: u64,
    deadline: Millis,
    /// The jobs it carries with their message ids (a read mark releases some of them).
    jobs: Vec<(JobId, MessageId)>,
    latest: Latest,
    badge: u32,
    devices: Vec<Device>,
    settings: NotificationSettings,
}

#[derive(Debug)]
struct Latest {
    message: MessageId,
    sender_name: Arc<str>,
    text: Arc<str>,
    date: UnixMs,
}

/// A push being delivered to each device of the user.
#[derive(Debug)]
struct Outgoing {
    id: u64,
    notification: Arc<Notification>,
    jobs: Vec<(JobId, MessageId)>,
    deliveries: Vec<Delivery>,
    /// Some device's push was given up on: its jobs are dead-lettered.
    dead: bool,
}

#[derive(Debug)]
struct Delivery {
    device: Device,
    attempts: u32,
    state: DeliveryState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DeliveryState {
    Ready,
    InFlight,
    Waiting,
    Done,
}

#[derive(Debug)]
struct JobState {
    /// Pushes (pending or outgoing) that carry the job.
    holders: u32,
    dead: bool,
    post: Option<PostState>,
}

#[derive(Debug)]
struct PostState {
    post: Arc<ChatPost>,
    phase: Phase,
    /// The last member taken: a retried expansion resumes after it.
    last_user: Option<UserId>,
    failures: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Queued,
    Running,
    Waiting,
    Finished,
}

struct Offer {
    message: MessageId,
    sender_name: Arc<str>,
    text: Arc<str>,
    date: UnixMs,
    badge: u32,
    devices: Vec<Device>,
    settings: NotificationSettings,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Window { key: SlotKey, generation: u64 },
    Retry(DeliveryRef),
    Expansion(JobId),
}

/// A set that forgets its oldest members past a capacity.
#[derive(Debug)]
struct Recent<K> {
    order: VecDeque<K>,
    members: HashSet<K>,
    capacity: usize,
}

impl<K: Copy + Eq + Hash> Recent<K> {
    fn new(capacity: usize) -> Recent<K> {
        Recent { order: VecDeque::new(), members: HashSet::new(), capacity }
    }

    fn contains(&self, key: &K) -> bool {
        self.members.contains(key)
    }

    fn insert(&mut self, key: K) {
        if self.members.insert(key) {
            self.order.push_back(key);
            if self.order.len() > self.capacity {
                if let Some(oldest) = self.order.pop_front() {
                    self.members.remove(&oldest);
                }
            }
        }
    }
}

/// Read marks per (user, chat), forgetting the oldest past a capacity.
#[derive(Debug)]
struct RecentMarks {
    order: VecDeque<SlotKey>,
    marks: HashMap<SlotKey, MessageId>,
    capacity: usize,
}

impl RecentMarks {
    fn new(capacity: usize) -> RecentMarks {
        RecentMarks { order: VecDeque::new(), marks: HashMap::new(), capacity }
    }

    fn get(&self, key: &SlotKey) -> Option<MessageId> {
        self.marks.get(key).copied()
    }

    fn raise(&mut self, key: SlotKey, read: MessageId) {
        match self.marks.get_mut(&key) {
            Some(mark) => *mark = (*mark).max(read),
            None => {
                self.marks.insert(key, read);
                self.order.push_back(key);
                if self.order.len() > self.capacity {
                    if let Some(oldest) = self.order.pop_front() {
                        self.marks.remove(&oldest);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::job::MessagePush;
    use engine::ShardId;

    const WINDOW: u64 = 2000;

    fn core(attempts_max: u32) -> Core {
        let settings = CoreSettings {
            window_ms: WINDOW,
            attempts_max,
            retry_delay_min_ms: 100,
            retry_delay_max_ms: 1000,
            pending_pushes_max: 1000,
            jobs_live_max: 1000,
            routable: Routable { apns: true, fcm: true, relay: false },
        };
        Core::new(settings, 7, Arc::new(PushMetrics::default()))
    }

    fn device(token: &str) -> Device {
        Device { kind: DeviceKind::Fcm, token: token.into(), app_sandbox: false, no_muted: false }
    }

    fn job(sequence: u64, user: u64, chat: u64, message: u64, badge: u32) -> PushJob {
        PushJob {
            id: JobId { shard: ShardId(0), sequence },
            kind: PushJobKind::Message(MessagePush {
                user: UserId(user),
                chat: ChatId(chat),
                message: MessageId(message),
                sender_name: "Ann".into(),
                text_preview: format!("text {message}"),
                unread_badge: badge,
                date: UnixMs(1),
                devices: vec![device("t1")],
                settings: NotificationSettings::DEFAULT,
            }),
        }
    }

    fn id(sequence: u64) -> JobId {
        JobId { shard: ShardId(0), sequence }
    }

    fn sends(core: &mut Core) -> Vec<SendOrder> {
        std::iter::from_fn(|| core.next_send()).collect()
    }

    fn reports(core: &mut Core) -> Vec<PushReport> {
        core.reports().drain(..).collect()
    }

    // Three messages of one chat within a window make one push with their count, the latest
    // text and the latest badge, sent when the window closes; all three jobs then complete.
    #[test]
    fn a_window_coalesces_messages_into_one_push() {
        let mut core = core(3);
        core.accept(job(1, 10, 20, 1, 1), 0);
        core.accept(job(2, 10, 20, 2, 2), 500);
        core.accept(job(3, 10, 20, 3, 3), 1500);
        core.poll_timers(WINDOW - 1);
        assert!(core.next_send().is_none(), "nothing before the window closes");
        core.poll_timers(WINDOW);
        let sent = sends(&mut core);
        assert_eq!(sent.len(), 1);
        let notification = &sent[0].notification;
        assert_eq!((notification.count, notification.badge, notification.message), (3, 3, MessageId(3)));
        assert_eq!(notification.body(), "text 3");
        core.on_outcome(sent[0].delivery, Outcome::Delivered, WINDOW + 10);
        let mut done = reports(&mut core);
        done.sort_by_key(|report| format!("{report:?}"));
        assert_eq!(done, (1..=3).map(|n| PushReport::Completed { job: id(n) }).collect::<Vec<_>>());
        assert_eq!(core.pending_pushes(), 0);
        assert_eq!(core.jobs_live(), 0);
    }

    // A job fed again while live, or after it finished, is ignored.
    #[test]
    fn a_job_fed_twice_is_taken_once() {
        let mut core = core(3);
        core.accept(job(1, 10, 20, 1, 1), 0);
        core.accept(job(1, 10, 20, 1, 1), 10);
        core.poll_timers(WINDOW + 10);
        let sent = sends(&mut core);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].notification.count, 1);
        core.on_outcome(sent[0].delivery, Outcome::Delivered, WINDOW + 20);
        core.accept(job(1, 10, 20, 1, 1), WINDOW + 30);
        core.poll_timers(2 * WINDOW + 100);
        assert!(core.next_send().is_none());
        assert_eq!(reports(&mut core), vec![PushReport::Completed { job: id(1) }]);
        assert_eq!(core.metrics.jobs_duplicate.load(std::sync::atomic::Ordering::Relaxed), 2);
    }

    // A read before the window closes drops the pushes of the messages read, not of later
    // ones, and a job for a read message that arrives later is dropped too.
    #[test]
    fn a_read_cancels_pending_pushes_up_to_its_mark() {
        let mut core = core(3);
        core.accept(job(1, 10, 20, 1, 1), 0);
        core.accept(job(2, 10, 20, 2, 2), 0);
        core.cancel(Cancel { user: UserId(10), chat: ChatId(20), read_max_id: MessageId(2) }, 100);
        assert_eq!(reports(&mut core).len(), 2);
        core.accept(job(3, 10, 20, 2, 2), 200);
        assert_eq!(reports(&mut core), vec![PushReport::Completed { job: id(3) }]);
        core.accept(job(4, 10, 20, 3, 1), 300);
        core.poll_timers(10_000);
        let sent = sends(&mut core);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].notification.message, MessageId(3));
    }

    // A muted chat gets no push; its job completes at once.
    #[test]
    fn a_muted_chat_gets_none() {
        let mut core = core(3);
        let mut muted = job(1, 10, 20, 1, 1);
        if let PushJobKind::Message(push) = &mut muted.kind {
            push.settings.mute_until = UnixMs(u64::MAX);
        }
        core.accept(muted, 0);
        core.poll_timers(10_000);
        assert!(core.next_send().is_none());
        assert_eq!(reports(&mut core), vec![PushReport::Completed { job: id(1) }]);
    }

    // Failed attempts are retried with growing delays until the bound, then the job is
    // dead-lettered; an invalid token is reported with its device.
    #[test]
    fn retries_are_bounded_and_invalid_tokens_reported() {
        let mut core = core(3);
        core.accept(job(1, 10, 20, 1, 1), 0);
        let mut now = WINDOW;
        core.poll_timers(now);
        for attempt in 1..=3 {
            let sent = sends(&mut core);
            assert_eq!(sent.len(), 1, "attempt {attempt}");
            assert_eq!(sent[0].attempt, attempt);
            core.on_outcome(sent[0].delivery, Outcome::Retry { after: None }, now);
            let due = core.next_timer();
            if attempt < 3 {
                let due = due.expect("a retry is scheduled");
                let full = 100u64 << (attempt - 1);
                assert!(due >= now + full / 2 && due <= now + full, "attempt {attempt}: {due}");
                now = due;
                core.poll_timers(now);
            }
        }
        assert_eq!(reports(&mut core), vec![PushReport::DeadLettered { job: id(1) }]);

        core.accept(job(2, 11, 20, 1, 1), now);
        core.poll_timers(now + WINDOW);
        let sent = sends(&mut core);
        core.on_outcome(sent[0].delivery, Outcome::InvalidToken, now + WINDOW);
        assert_eq!(
            reports(&mut core),
            vec![
                PushReport::InvalidToken { user: UserId(11), device: device("t1") },
                PushReport::Completed { job: id(2) }
            ]
        );
    }

    // A window that closes while the previous push is still retrying waits for it, so the
    // newer push is never overtaken.
    #[test]
    fn a_newer_push_waits_for_the_older_one() {
        let mut core = core(5);
        core.accept(job(1, 10, 20, 1, 1), 0);
        core.poll_timers(WINDOW);
        let first = sends(&mut core);
        core.on_outcome(first[0].delivery, Outcome::Retry { after: Some(Duration::from_millis(900)) }, WINDOW);
        core.accept(job(2, 10, 20, 2, 2), WINDOW + 1);
        core.poll_timers(2 * WINDOW + 1);
        let retried = sends(&mut core);
        assert_eq!(retried.len(), 1, "only the older push's retry is due");
        assert_eq!(retried[0].notification.message, MessageId(1));
        core.on_outcome(retried[0].delivery, Outcome::Delivered, 2 * WINDOW + 2);
        let newer = sends(&mut core);
        assert_eq!(newer.len(), 1);
        assert_eq!(newer[0].notification.message, MessageId(2));
    }

    // A chat-level job finishes only when its expansion is over and every push carrying it
    // is; members listed out of order are skipped.
    #[test]
    fn a_chat_post_completes_after_its_members() {
        let mut core = core(3);
        let post = ChatPost {
            chat: ChatId(5),
            message: MessageId(9),
            sender: UserId(100),
            sender_name: "News".into(),
            text_preview: "post".into(),
            date: UnixMs(0),
        };
        core.accept(PushJob { id: id(1), kind: PushJobKind::ChatPost(post) }, 0);
        let order = core.next_expansion().expect("an expansion");
        assert_eq!(order.after, None);
        for user in [1, 2, 2, 3] {
            let recipient = Recipient {
                user: UserId(user),
                devices: vec![device(&format!("u{user}"))],
                settings: NotificationSettings::DEFAULT,
                unread_badge: user as u32,
            };
            core.add_recipient(id(1), recipient, 0);
        }
        core.expansion_finished(id(1), false, 0);
        assert!(reports(&mut core).is_empty());
        core.poll_timers(10_000);
        let order = core.next_expansion().expect("the expansion is retried");
        assert_eq!(order.after, Some(UserId(3)));
        core.expansion_finished(id(1), true, 10_000);
        let sent = sends(&mut core);
        assert_eq!(sent.len(), 3);
        for send in &sent {
            assert_eq!(send.notification.badge as u64, send.notification.user.0);
            core.on_outcome(send.delivery, Outcome::Delivered, 10_001);
        }
        assert_eq!(reports(&mut core), vec![PushReport::Completed { job: id(1) }]);
    }
}
