//! One run from start to end: plan, setup, the open-loop load, the drain, closing the
//! sessions, and the report.
//!
//! The scheduler task releases each operation at its intended time (all the overdue ones at
//! once after any stall) and spawns it as a task of its own, so a slow answer never delays
//! the next send. Every wait is bounded: at the drain deadline (the end of the window plus
//! `--drain-s`) the scheduler stops issuing, the sessions are closed, and every operation
//! still waiting fails and counts as timed out; closing has its own bound.
//!
//! Media operations upload and send a file; the recipient's receiver queues each media
//! message meant to be downloaded, and the run's downloader task starts a download task for
//! it on the recipient's session, measured from the send's intended start too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use crate::acks::{AckRecord, AckWriter};
use crate::limits::{
    CLOSE_GRACE, CLOSE_TIMEOUT, DRAIN_POLL, LOAD_START_LEAD, MEDIA_DOWNLOADS_IN_FLIGHT_MAX, MEDIA_UPLOADS_IN_FLIGHT_MAX,
};
use crate::media::{self, CaptionInfo, Content, ContentPicker};
use crate::observer::{MediaArrival, Observer};
use crate::options::{MediaOptions, Pool, RunOptions};
use crate::plan::{Plan, PlanError};
use crate::report::{judge, CpuFigures, DeliveryFigures, LoadFigures, MediaFigures, Report};
use crate::runtime::{Handle, Runtime};
use crate::schedule::{Schedule, Window};
use crate::setup::{concurrently, set_up, RandomIds, SetupError, World};
use crate::slots::{Slot, Slots};
use crate::stamp;
use crate::stats::{Measure, Recorder};
use crate::system::{self, CpuTicks, CpuTime};
use crate::target::{within, Ack, MediaUpload, MessageId, Target, TargetError, UserId, CONTENT_MISMATCH};

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("cannot write the acks file: {0}")]
    Acks(#[from] std::io::Error),
    #[error("the media scenario needs a target with media messages; {target} has none (use --target ferrogram)")]
    MediaUnsupported { target: &'static str },
}

/// Runs `options` against `target` on `runtime` and reports what it measured.
pub fn run<T: Target>(
    runtime: &Runtime,
    target: Arc<T>,
    server: &str,
    options: &RunOptions,
) -> Result<Report, RunError> {
    runtime.block_on(run_async(runtime.handle(), runtime.threads(), target, server, options))
}

/// What the operations of a run share.
struct RunContext<T: Target> {
    target: Arc<T>,
    world: World<T>,
    observer: Arc<Observer>,
    acks: Option<Arc<AckWriter>>,
    random_ids: Arc<RandomIds>,
    message_bytes: usize,
    page: u32,
    prefill: usize,
    drain_deadline: Instant,
    ack_write_errors: AtomicU64,
    /// Offline members of each chat, by the plan's index.
    offline_members: Vec<u32>,
    /// Offline members reached by the acknowledged sends of the whole load.
    offline_recipient_messages: AtomicU64,
    media: MediaOptions,
    /// Each media operation's content.
    content: ContentPicker,
    /// Uploads and downloads in flight over the run (bounds loadgen's media memory).
    uploads: Slots,
    downloads: Slots,
    /// The plan's index of each user, for the downloader.
    user_index: HashMap<UserId, usize>,
}

impl<T: Target> RunContext<T> {
    fn recorder(&self) -> &Recorder {
        self.observer.recorder().expect("the window is set before the load")
    }
}

/// One operation of the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Send {
        chat: usize,
        sender: usize,
    },
    History {
        chat: usize,
        reader: usize,
        offset: MessageId,
    },
    /// Upload a file of `content` and send it; `duplicate` when it comes from the pool, and
    /// `download` when the recipient is to download it.
    Media {
        chat: usize,
        sender: usize,
        content: Content,
        duplicate: bool,
        download: bool,
    },
}

async fn run_async<T: Target>(
    handle: Handle,
    threads: usize,
    target: Arc<T>,
    server: &str,
    options: &RunOptions,
) -> Result<Report, RunError> {
    if options.mix.weight(Pool::Media) > 0 && !target.supports_media() {
        return Err(RunError::MediaUnsupported { target: target.name() });
    }
    let plan = Plan::new(options)?;
    let observer = Arc::new(Observer::new());
    let acks = match &options.record_acks {
        Some(path) => Some(Arc::new(AckWriter::create(path)?)),
        None => None,
    };
    let random_ids = Arc::new(RandomIds::new());
    let (world, setup) = set_up(&target, plan, options, &handle, &observer, acks.as_ref(), &random_ids).await?;

    let start = Instant::now() + LOAD_START_LEAD;
    let schedule = Schedule::new(start, options.rate_per_second, options.warmup + options.duration);
    let window = Window { start: start + options.warmup, end: start + options.warmup + options.duration };
    observer.start(window);
    let drain_deadline = window.end + options.drain;
    let offline_members = (0..world.plan.chats.len()).map(|chat| world.plan.offline_members(chat)).collect();
    let user_index = world.users.iter().enumerate().map(|(index, &user)| (user, index)).collect();
    let content = ContentPicker {
        // Drawn anew each run, not from the seed: see `ContentPicker`.
        salt: fastrand::u64(..),
        bytes: options.media.file_bytes,
        duplicate_fraction: options.media.duplicate_fraction,
        pool: options.media.pool_files,
    };
    let context = Arc::new(RunContext {
        target: target.clone(),
        world,
        observer: observer.clone(),
        acks: acks.clone(),
        random_ids,
        message_bytes: options.message_bytes,
        page: options.page,
        prefill: options.prefill,
        drain_deadline,
        ack_write_errors: AtomicU64::new(0),
        offline_members,
        offline_recipient_messages: AtomicU64::new(0),
        media: options.media,
        content,
        uploads: Slots::new(MEDIA_UPLOADS_IN_FLIGHT_MAX),
        downloads: Slots::new(MEDIA_DOWNLOADS_IN_FLIGHT_MAX),
        user_index,
    });
    // Runs until dropped below, after the drain.
    let downloader = handle.spawn(download_media(context.clone(), handle.clone()));

    let cpus = system::allowed_cpu_list();
    let ticks_before = CpuTicks::read(&cpus);
    let cpu_before = CpuTime::now();
    let server_cpu_before = options.server_pid.and_then(system::process_cpu_time);
    let wall_before = Instant::now();
    let in_flight = Slots::new(options.in_flight_max);
    dispatch(&context, &schedule, &in_flight, &handle, options).await;
    let cpu = CpuTime::now().since(cpu_before);
    let cores_busy = match (ticks_before, CpuTicks::read(&cpus)) {
        (Some(before), Some(after)) => Some(after.busy_share_since(before)),
        _ => None,
    };
    let server_cpu = match (server_cpu_before, options.server_pid.and_then(system::process_cpu_time)) {
        (Some(before), Some(after)) => Some(after.since(before)),
        _ => None,
    };
    let wall = wall_before.elapsed();

    // Answers and deliveries may come until the drain deadline. Operations carry no timer of
    // their own (a timer per operation would cost a reactor wake-up each): whatever is still
    // unanswered then fails when the sessions close, and counts as timed out.
    while in_flight.free() < in_flight.capacity() && Instant::now() < drain_deadline {
        crate::reactor::sleep(DRAIN_POLL).await;
    }
    while !observer.deliveries.all_arrived() && Instant::now() < drain_deadline {
        crate::reactor::sleep(DRAIN_POLL).await;
    }
    while !(observer.downloads.all_arrived() && context.downloads.free() == context.downloads.capacity())
        && Instant::now() < drain_deadline
    {
        crate::reactor::sleep(DRAIN_POLL).await;
    }
    observer.closing.store(true, Relaxed);
    drop(downloader);
    close_sessions(&context, &handle, options.provision_concurrency).await;
    let grace = Instant::now() + CLOSE_GRACE;
    while (in_flight.free() < in_flight.capacity() || context.downloads.free() < context.downloads.capacity())
        && Instant::now() < grace
    {
        crate::reactor::sleep(DRAIN_POLL).await;
    }
    if let Some(acks) = &acks {
        acks.flush()?;
    }
    let cpu = CpuFigures { cores_busy, ..CpuFigures::new(cpu, wall, cpus.len(), threads) };
    let server_cpu = server_cpu.map(|time| CpuFigures { cores: 0, threads: 0, ..CpuFigures::new(time, wall, 1, 0) });
    Ok(report(&context, &target, server, options, setup, cpu, server_cpu))
}

/// Releases every operation of the schedule at its intended time.
async fn dispatch<T: Target>(
    context: &Arc<RunContext<T>>,
    schedule: &Schedule,
    in_flight: &Slots,
    handle: &Handle,
    options: &RunOptions,
) {
    let recorder = context.recorder();
    let mut rng = fastrand::Rng::with_seed(options.seed ^ 0x6c6f_6164_6765_6e21);
    let pools: Vec<(Pool, u32)> = Pool::ALL
        .iter()
        .map(|&pool| (pool, options.mix.weight(pool)))
        .filter(|&(pool, weight)| weight > 0 && !context.world.plan.pools[pool.index()].is_empty())
        .collect();
    let total_weight: u32 = pools.iter().map(|(_, weight)| weight).sum();
    if total_weight == 0 {
        recorder.counters.not_issued.fetch_add(schedule.count(), Relaxed);
        return;
    }
    let mut next = 0;
    while next < schedule.count() {
        let now = Instant::now();
        if now >= context.drain_deadline {
            break;
        }
        let due = schedule.due(next, now);
        if due.is_empty() {
            crate::reactor::sleep_until(schedule.intended(next)).await;
            continue;
        }
        for index in due {
            let slot = match in_flight.try_take() {
                Some(slot) => slot,
                None => {
                    recorder.counters.in_flight_cap_waits.fetch_add(1, Relaxed);
                    let left = context.drain_deadline.saturating_duration_since(Instant::now());
                    match within(left, in_flight.take()).await {
                        Some(slot) => slot,
                        None => break,
                    }
                }
            };
            let operation = choose(&mut rng, context, &pools, total_weight, index);
            let intended = schedule.intended(index);
            handle.spawn(perform(context.clone(), operation, intended, slot)).detach();
            next = index + 1;
        }
    }
    // Whatever was never released: only when the drain deadline came first.
    let never: u64 =
        (next..schedule.count()).filter(|&index| recorder.measured(schedule.intended(index))).count() as u64;
    recorder.counters.not_issued.fetch_add(never, Relaxed);
}

/// Draws operation `index`: a pool by weight, a chat of it, a sender or reader of the chat
/// (and for media, the file and whether it is downloaded).
fn choose<T: Target>(
    rng: &mut fastrand::Rng,
    context: &RunContext<T>,
    pools: &[(Pool, u32)],
    total_weight: u32,
    index: u64,
) -> Operation {
    let plan = &context.world.plan;
    let mut pick = rng.u32(0..total_weight);
    let pool = pools
        .iter()
        .find(|&&(_, weight)| {
            if pick < weight {
                return true;
            }
            pick -= weight;
            false
        })
        .map_or(pools[0].0, |&(pool, _)| pool);
    let chats = &plan.pools[pool.index()];
    let chat = chats[rng.usize(0..chats.len())];
    let senders = &plan.chats[chat].senders;
    let sender = senders[rng.usize(0..senders.len())];
    match pool {
        Pool::History => {
            // Ids are dense from 1: an offset in page+1 ..= prefill+1 gives a full page.
            let newest = context.prefill as u64 + 1;
            let lowest = (u64::from(context.page) + 1).min(newest);
            Operation::History { chat, reader: sender, offset: MessageId(rng.u64(lowest..=newest)) }
        }
        Pool::Media => {
            let (content, duplicate) = context.content.pick(rng, index);
            let download = plan.chats[chat].recipients() > 0 && rng.f64() < context.media.download_fraction;
            Operation::Media { chat, sender, content, duplicate, download }
        }
        Pool::Dm | Pool::Group | Pool::Channel => Operation::Send { chat, sender },
    }
}

/// Performs one operation and records it.
async fn perform<T: Target>(context: Arc<RunContext<T>>, operation: Operation, intended: Instant, _slot: Slot) {
    let recorder = context.recorder();
    let issued = Instant::now();
    let measured = recorder.measured(intended);
    let window = recorder.window();
    if measured {
        recorder.counters.issued.fetch_add(1, Relaxed);
        recorder.record(Measure::IssueLag, issued.saturating_duration_since(intended));
    }
    if window.contains(issued) {
        recorder.counters.issued_in_window.fetch_add(1, Relaxed);
    }
    let world = &context.world;
    let (measure, result, random_id) = match operation {
        Operation::Send { chat, sender } => {
            let random_id = context.random_ids.next();
            let planned = &world.plan.chats[chat];
            if measured {
                context.observer.deliveries.expect(random_id, planned.recipients(), intended);
            }
            let text = stamp::text(context.observer.clock.unix_ns(intended), context.message_bytes);
            let result = context.target.send(world.session(sender), world.chats[chat], random_id, text).await;
            if let Ok(ack) = &result {
                context.acknowledged(ack, chat, sender, random_id, measured);
            }
            (Measure::SendAck, result.map(|_| ()), Some(random_id))
        }
        Operation::Media { chat, sender, content, duplicate, download } => {
            let random_id = context.random_ids.next();
            let planned = &world.plan.chats[chat];
            if measured {
                context.observer.deliveries.expect(random_id, planned.recipients(), intended);
                if download {
                    context.observer.downloads.expect(random_id, 1, intended);
                }
                if duplicate {
                    recorder.counters.media_duplicate_sends.fetch_add(1, Relaxed);
                }
            }
            let info = CaptionInfo { content, download };
            let upload = MediaUpload {
                content,
                caption: media::caption(context.observer.clock.unix_ns(intended), info),
                part_bytes: context.media.part_bytes,
                parts_in_flight: context.media.parts_in_flight,
            };
            let _upload = match context.uploads.try_take() {
                Some(slot) => slot,
                None => {
                    if measured {
                        recorder.counters.media_slot_waits.fetch_add(1, Relaxed);
                    }
                    context.uploads.take().await
                }
            };
            let result = context.target.send_media(world.session(sender), world.chats[chat], random_id, &upload).await;
            if let Ok(sent) = &result {
                context.acknowledged(&sent.ack, chat, sender, random_id, measured);
                if measured {
                    recorder.record(Measure::MediaUpload, sent.uploaded.saturating_duration_since(intended));
                }
                if window.contains(Instant::now()) {
                    recorder.counters.media_upload_bytes_in_window.fetch_add(content.bytes, Relaxed);
                }
            }
            (Measure::MediaSend, result.map(|_| ()), Some(random_id))
        }
        Operation::History { chat, reader, offset } => {
            let result = context.target.history(world.session(reader), world.chats[chat], offset, context.page).await;
            if matches!(result, Ok(count) if count < context.page as usize) && measured {
                recorder.counters.short_pages.fetch_add(1, Relaxed);
            }
            (Measure::History, result.map(|_| ()), None)
        }
    };
    let done = Instant::now();
    match result {
        Ok(()) => {
            if window.contains(done) {
                recorder.counters.completed_in_window.fetch_add(1, Relaxed);
            }
            if measured {
                recorder.counters.succeeded.fetch_add(1, Relaxed);
                let latency = done.saturating_duration_since(intended);
                recorder.record(measure, latency);
                if matches!(measure, Measure::SendAck | Measure::MediaSend) {
                    recorder.record_ack_timeline(intended, latency);
                }
            }
        }
        Err(mut error) => {
            if done >= context.drain_deadline {
                // Still unanswered at the deadline: the run closed its sessions under it.
                error = TargetError::timeout();
            }
            if measured {
                recorder.counters.failed.fetch_add(1, Relaxed);
                recorder.error(&error);
                if let Some(random_id) = random_id {
                    context.observer.deliveries.abandon(random_id, error.outcome_unknown());
                    context.observer.downloads.abandon(random_id, error.outcome_unknown());
                }
            }
        }
    }
}

impl<T: Target> RunContext<T> {
    /// Book-keeping of an acknowledged send (text or media): duplicates, the push jobs it
    /// causes, the acks file.
    fn acknowledged(&self, ack: &Ack, chat: usize, sender: usize, random_id: u64, measured: bool) {
        if ack.duplicate && measured {
            self.recorder().counters.duplicate_acks.fetch_add(1, Relaxed);
        }
        let offline = self.offline_members[chat];
        if offline > 0 && !ack.duplicate {
            self.offline_recipient_messages.fetch_add(u64::from(offline), Relaxed);
        }
        if let Some(acks) = &self.acks {
            let record = AckRecord { chat: ack.chat, id: ack.id, random_id, sender: self.world.users[sender] };
            if acks.ack(record).is_err() {
                self.ack_write_errors.fetch_add(1, Relaxed);
            }
        }
    }
}

/// The downloader: takes each media message a receiver queued and downloads it on the
/// recipient's session as a task of its own, at most `MEDIA_DOWNLOADS_IN_FLIGHT_MAX` at once.
/// Runs until the run drops it.
async fn download_media<T: Target>(context: Arc<RunContext<T>>, handle: Handle) {
    let queue = context.observer.media_queue.clone();
    while let Ok(arrival) = queue.recv_async().await {
        let Some(&reader) = context.user_index.get(&arrival.recipient) else { continue };
        if context.world.sessions[reader].is_none() {
            continue;
        }
        let slot = match context.downloads.try_take() {
            Some(slot) => slot,
            None => {
                match context.observer.recorder() {
                    Some(recorder) if recorder.measured(arrival.intended) => {
                        recorder.counters.media_slot_waits.fetch_add(1, Relaxed);
                    }
                    _ => {}
                }
                context.downloads.take().await
            }
        };
        handle.spawn(download(context.clone(), arrival, reader, slot)).detach();
    }
}

/// Downloads one media message on the recipient's session, checks every byte against the
/// content its caption names, and records the outcome.
async fn download<T: Target>(context: Arc<RunContext<T>>, arrival: MediaArrival, reader: usize, _slot: Slot) {
    let observer = &context.observer;
    let measured = observer.measured(arrival.intended);
    let content = arrival.info.content;
    let result = if arrival.bytes != content.bytes {
        Err(mismatch(format!("the message says {} bytes, {} were uploaded", arrival.bytes, content.bytes)))
    } else {
        let mut check =
            |offset: u64, bytes: &[u8]| content.check(offset, bytes).map_err(|found| mismatch(found.to_string()));
        let session = context.world.session(reader);
        let ranges = context.media.ranges_in_flight;
        match context.target.download(session, arrival.chat, arrival.id, arrival.bytes, ranges, &mut check).await {
            Ok(read) if read == content.bytes => Ok(()),
            Ok(read) => Err(mismatch(format!("{read} bytes downloaded of {}", content.bytes))),
            Err(error) => Err(error),
        }
    };
    let done = Instant::now();
    let Some(recorder) = observer.recorder() else { return };
    record_download(recorder, &arrival, measured, done, context.drain_deadline, result);
    if measured {
        observer.downloads.arrived(arrival.random_id, true);
    }
}

/// Records a download's outcome: its latency and bytes when checked whole, else the error (a
/// refused check as `CONTENT_MISMATCH`, the server's fault).
fn record_download(
    recorder: &Recorder,
    arrival: &MediaArrival,
    measured: bool,
    done: Instant,
    drain_deadline: Instant,
    result: Result<(), TargetError>,
) {
    let counters = &recorder.counters;
    match result {
        Ok(()) => {
            if recorder.window().contains(done) {
                counters.media_download_bytes_in_window.fetch_add(arrival.bytes, Relaxed);
            }
            if measured {
                counters.media_downloads_verified.fetch_add(1, Relaxed);
                recorder.record(Measure::MediaDownload, done.saturating_duration_since(arrival.intended));
            }
        }
        Err(mut error) => {
            if done >= drain_deadline && error.code != CONTENT_MISMATCH {
                // Still unanswered at the deadline: the run closed its sessions under it.
                error = TargetError::timeout();
            }
            if measured {
                let outcome = if error.code == CONTENT_MISMATCH {
                    &counters.media_downloads_corrupt
                } else {
                    &counters.media_downloads_failed
                };
                outcome.fetch_add(1, Relaxed);
                recorder.error(&error);
            }
        }
    }
}

fn mismatch(message: String) -> TargetError {
    TargetError::server(CONTENT_MISMATCH, message, None)
}

/// Ends every online session (bounded in time).
async fn close_sessions<T: Target>(context: &Arc<RunContext<T>>, handle: &Handle, concurrency: usize) {
    let online: Vec<usize> =
        (0..context.world.sessions.len()).filter(|&user| context.world.sessions[user].is_some()).collect();
    let count = online.len();
    let (shared, online) = (context.clone(), Arc::new(online));
    let closing = concurrently(handle, count, concurrency, move |index| {
        let (context, online) = (shared.clone(), online.clone());
        async move {
            context.target.close(context.world.session(online[index])).await;
            Ok(())
        }
    });
    let _ = within(CLOSE_TIMEOUT, closing).await;
    // Whatever did not close gracefully in time is cut off now, so nothing waits past here.
    for session in context.world.sessions.iter().flatten() {
        context.target.disconnect(session);
    }
}

fn report<T: Target>(
    context: &RunContext<T>,
    target: &Arc<T>,
    server: &str,
    options: &RunOptions,
    setup: crate::setup::SetupReport,
    cpu: CpuFigures,
    server_cpu: Option<CpuFigures>,
) -> Report {
    let recorder = context.recorder();
    let counters = &recorder.counters;
    let window_s = recorder.window().length().as_secs_f64();
    let load = LoadFigures {
        offered_rate_per_s: options.rate_per_second,
        issued_rate_per_s: counters.issued_in_window.load(Relaxed) as f64 / window_s,
        achieved_rate_per_s: counters.completed_in_window.load(Relaxed) as f64 / window_s,
        window_s,
        warmup_s: options.warmup.as_secs_f64(),
        issued: counters.issued.load(Relaxed),
        succeeded: counters.succeeded.load(Relaxed),
        failed: counters.failed.load(Relaxed),
        not_issued: counters.not_issued.load(Relaxed),
        in_flight_cap_waits: counters.in_flight_cap_waits.load(Relaxed),
        duplicate_acks: counters.duplicate_acks.load(Relaxed),
        short_pages: counters.short_pages.load(Relaxed),
        media_slot_waits: counters.media_slot_waits.load(Relaxed),
    };
    let deliveries = &context.observer.deliveries;
    let delivery_figures = DeliveryFigures {
        expected: deliveries.expected.load(Relaxed),
        received: deliveries.received.load(Relaxed),
        missing: deliveries.missing(),
        unexpected: deliveries.unexpected.load(Relaxed),
        resyncs: counters.resyncs.load(Relaxed),
        streams_lost: context.observer.streams_lost.load(Relaxed),
        bodiless: context.observer.bodiless.load(Relaxed),
    };
    let media = (options.mix.weight(Pool::Media) > 0).then(|| {
        let downloads = &context.observer.downloads;
        let upload_bytes = counters.media_upload_bytes_in_window.load(Relaxed);
        let download_bytes = counters.media_download_bytes_in_window.load(Relaxed);
        MediaFigures {
            file_bytes: options.media.file_bytes,
            sends: recorder.summary(Measure::MediaSend).count,
            duplicate_sends: counters.media_duplicate_sends.load(Relaxed),
            upload_bytes_in_window: upload_bytes,
            upload_mb_per_s: upload_bytes as f64 / 1e6 / window_s,
            downloads_expected: downloads.expected.load(Relaxed),
            downloads_verified: counters.media_downloads_verified.load(Relaxed),
            downloads_corrupt: counters.media_downloads_corrupt.load(Relaxed),
            downloads_failed: counters.media_downloads_failed.load(Relaxed),
            downloads_missing: downloads.missing(),
            downloads_unexpected: downloads.unexpected.load(Relaxed),
            download_bytes_in_window: download_bytes,
            download_mb_per_s: download_bytes as f64 / 1e6 / window_s,
        }
    });
    let issue_lag_p99_ms = recorder.summary(Measure::IssueLag).p99_ms;
    let judgement = judge(&load, &cpu, issue_lag_p99_ms, recorder.server_reported_errors());
    Report {
        tool: "ferrogram-loadgen",
        version: env!("CARGO_PKG_VERSION"),
        target: target.name(),
        server: server.to_owned(),
        options: options.clone(),
        setup,
        load,
        measures: Measure::ALL.iter().map(|&measure| (measure.name(), recorder.summary(measure))).collect(),
        errors_by_code: recorder.errors(),
        deliveries: delivery_figures,
        media,
        loadgen_cpu: cpu,
        server_cpu,
        loadgen_bottleneck: judgement.loadgen_bottleneck,
        bottleneck_reasons: judgement.reasons,
        server_saturated: judgement.server_saturated,
        ack_write_errors: context.ack_write_errors.load(Relaxed),
        offline_recipient_messages: context.offline_recipient_messages.load(Relaxed),
        send_ack_max_ms_by_100ms: recorder.ack_timeline_ms(),
        histograms: Measure::ALL.iter().map(|&measure| (measure, recorder.histogram(measure))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::target::ChatId;

    // Bytes that differ from the uploaded content fail the check, and the failed check is
    // recorded as a CONTENT_MISMATCH error of the server and a corrupt download, with no
    // latency sample and no bytes counted; the right bytes are recorded as a checked download.
    #[test]
    fn a_download_with_wrong_bytes_is_an_error() {
        let start = Instant::now();
        let recorder = Recorder::new(Window { start, end: start + Duration::from_secs(60) });
        let content = Content { seed: 11, bytes: 8192 };
        let arrival = MediaArrival {
            recipient: UserId(2),
            chat: ChatId(1),
            id: MessageId(5),
            random_id: 77,
            bytes: content.bytes,
            info: CaptionInfo { content, download: true },
            intended: start,
        };
        let mut downloaded = content.range(0, 8192);
        downloaded[4100] ^= 0xff;
        let checked = content.check(0, &downloaded).map_err(|found| mismatch(found.to_string()));
        let deadline = start + Duration::from_secs(120);
        record_download(&recorder, &arrival, true, start + Duration::from_millis(3), deadline, checked);
        let counters = &recorder.counters;
        assert_eq!(counters.media_downloads_corrupt.load(Relaxed), 1);
        assert_eq!(counters.media_downloads_verified.load(Relaxed), 0);
        assert_eq!(counters.media_download_bytes_in_window.load(Relaxed), 0);
        assert_eq!(recorder.summary(Measure::MediaDownload).count, 0);
        let errors = recorder.errors();
        assert_eq!((errors[CONTENT_MISMATCH].count, errors[CONTENT_MISMATCH].from_server), (1, true));

        let checked = content.check(0, &content.range(0, 8192)).map_err(|found| mismatch(found.to_string()));
        record_download(&recorder, &arrival, true, start + Duration::from_millis(3), deadline, checked);
        assert_eq!(counters.media_downloads_verified.load(Relaxed), 1);
        assert_eq!(counters.media_download_bytes_in_window.load(Relaxed), 8192);
        assert_eq!(recorder.summary(Measure::MediaDownload).count, 1);
        assert_eq!(recorder.errors()[CONTENT_MISMATCH].count, 1, "no new error");
    }
}
