//! One run from start to end: plan, setup, the open-loop load, the drain, closing the
//! sessions, and the report.
//!
//! The scheduler task releases each operation at its intended time (all the overdue ones at
//! once after any stall) and spawns it as a task of its own, so a slow answer never delays
//! the next send. Every wait is bounded: at the drain deadline (the end of the window plus
//! `--drain-s`) the scheduler stops issuing, the sessions are closed, and every operation
//! still waiting fails and counts as timed out; closing has its own bound.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use crate::acks::{AckRecord, AckWriter};
use crate::limits::{CLOSE_GRACE, CLOSE_TIMEOUT, DRAIN_POLL, LOAD_START_LEAD};
use crate::observer::Observer;
use crate::options::{Pool, RunOptions};
use crate::plan::{Plan, PlanError};
use crate::report::{judge, CpuFigures, DeliveryFigures, LoadFigures, Report};
use crate::runtime::{Handle, Runtime};
use crate::schedule::{Schedule, Window};
use crate::setup::{concurrently, set_up, RandomIds, SetupError, World};
use crate::slots::{Slot, Slots};
use crate::stamp;
use crate::stats::{Measure, Recorder};
use crate::system::{self, CpuTicks, CpuTime};
use crate::target::{within, MessageId, Target, TargetError};

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
}

impl<T: Target> RunContext<T> {
    fn recorder(&self) -> &Recorder {
        self.observer.recorder().expect("the window is set before the load")
    }
}

/// One operation of the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operation {
    Send { chat: usize, sender: usize },
    History { chat: usize, reader: usize, offset: MessageId },
}

async fn run_async<T: Target>(
    handle: Handle,
    threads: usize,
    target: Arc<T>,
    server: &str,
    options: &RunOptions,
) -> Result<Report, RunError> {
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
    });

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
        async_io::Timer::after(DRAIN_POLL).await;
    }
    while !observer.deliveries.all_arrived() && Instant::now() < drain_deadline {
        async_io::Timer::after(DRAIN_POLL).await;
    }
    observer.closing.store(true, Relaxed);
    close_sessions(&context, &handle, options.provision_concurrency).await;
    let grace = Instant::now() + CLOSE_GRACE;
    while in_flight.free() < in_flight.capacity() && Instant::now() < grace {
        async_io::Timer::after(DRAIN_POLL).await;
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
            async_io::Timer::at(schedule.intended(next)).await;
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
            let operation = choose(&mut rng, &context.world.plan, &pools, total_weight, context.page, context.prefill);
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

/// Draws the next operation: a pool by weight, a chat of it, a sender or reader of the chat.
fn choose(
    rng: &mut fastrand::Rng,
    plan: &Plan,
    pools: &[(Pool, u32)],
    total_weight: u32,
    page: u32,
    prefill: usize,
) -> Operation {
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
            let newest = prefill as u64 + 1;
            let lowest = (u64::from(page) + 1).min(newest);
            Operation::History { chat, reader: sender, offset: MessageId(rng.u64(lowest..=newest)) }
        }
        _ => Operation::Send { chat, sender },
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
                if ack.duplicate && measured {
                    recorder.counters.duplicate_acks.fetch_add(1, Relaxed);
                }
                let offline = context.offline_members[chat];
                if offline > 0 && !ack.duplicate {
                    context.offline_recipient_messages.fetch_add(u64::from(offline), Relaxed);
                }
                if let Some(acks) = &context.acks {
                    let record = AckRecord { chat: ack.chat, id: ack.id, random_id, sender: world.users[sender] };
                    if acks.ack(record).is_err() {
                        context.ack_write_errors.fetch_add(1, Relaxed);
                    }
                }
            }
            (Measure::SendAck, result.map(|_| ()), Some(random_id))
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
                if measure == Measure::SendAck {
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
                }
            }
        }
    }
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
