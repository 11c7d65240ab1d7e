//! The durable-append workload behind `ferrogram stress`: every shard appends records of a
//! fixed size as fast as its log acknowledges them (closed loop, a window of appends in
//! flight) or at a fixed rate (open loop, latency measured from each record's intended send
//! time, so a stalled log shows in the percentiles). Payloads are a function of (shard, LSN),
//! so a crash test can check every recovered record byte for byte.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::rc::Rc;
use std::time::{Duration, Instant};

use engine::shard::ShardContext;
use engine::wal::driver::{LogStats, ShardLog};
use engine::wal::AppendError;
use engine::{Engine, EngineError, Lsn, RecordKind, ShardId, VShard, VSHARD_COUNT};
use hdrhistogram::Histogram;

/// The record kind the workload writes.
pub const STRESS_KIND: RecordKind = RecordKind(0xF00D);
/// How often the acknowledged watermark is printed with `report_acks`.
const REPORT_EVERY: Duration = Duration::from_millis(5);
const TICK: Duration = Duration::from_micros(200);

#[derive(Clone, Debug)]
pub struct StressParams {
    pub duration: Duration,
    pub record_bytes: usize,
    /// Closed loop: appends in flight per shard.
    pub in_flight: usize,
    /// Open loop: records per second per shard (overrides `in_flight`).
    pub rate_per_shard: Option<u64>,
    /// Print `acked <shard> <lsn>` lines as the acknowledged watermark moves.
    pub report_acks: bool,
}

/// What one shard measured.
#[derive(Debug)]
pub struct ShardResult {
    pub shard: ShardId,
    pub records: u64,
    pub payload_bytes: u64,
    pub elapsed: Duration,
    /// Append → acknowledgement, nanoseconds.
    pub latency_ns: Histogram<u64>,
    pub log: LogStats,
    pub error: Option<String>,
}

/// The payload of the record at `lsn` on `shard`: recognisable, and different per record.
pub fn fill_payload(shard: ShardId, lsn: Lsn, bytes: usize, out: &mut Vec<u8>) {
    out.clear();
    let mut state = xxhash_rust::xxh3::xxh3_64_with_seed(&lsn.0.to_le_bytes(), shard.0 as u64);
    while out.len() < bytes {
        out.extend_from_slice(&state.to_le_bytes());
        state = state.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(lsn.0);
    }
    out.truncate(bytes);
}

/// Whether `payload` is what `fill_payload` writes for (shard, lsn).
pub fn payload_matches(shard: ShardId, lsn: Lsn, payload: &[u8]) -> bool {
    let mut expected = Vec::with_capacity(payload.len());
    fill_payload(shard, lsn, payload.len(), &mut expected);
    expected == payload
}

/// Runs the workload on every shard of `engine` and returns each shard's figures.
pub fn run(engine: &Engine, params: StressParams) -> Result<Vec<ShardResult>, EngineError> {
    let (sender, results) = std::sync::mpsc::channel();
    engine.run_on_every_shard(move |context: Rc<ShardContext>| {
        let params = params.clone();
        let sender = sender.clone();
        async move {
            let _ = sender.send(run_shard(context, params).await);
        }
    })?;
    let mut all: Vec<ShardResult> = (0..engine.shard_count()).filter_map(|_| results.recv().ok()).collect();
    all.sort_by_key(|result| result.shard);
    Ok(all)
}

struct Load {
    log: ShardLog,
    shard: ShardId,
    vshard: VShard,
    params: StressParams,
    started: Instant,
    deadline: Instant,
    sent: Cell<u64>,
    acked: Cell<u64>,
    /// Closed-loop slots refused by backpressure, refilled by the ticker.
    parked: Cell<usize>,
    latency_ns: RefCell<Histogram<u64>>,
    payload: RefCell<Vec<u8>>,
    error: RefCell<Option<String>>,
}

async fn run_shard(context: Rc<ShardContext>, params: StressParams) -> ShardResult {
    let shard = context.id;
    let vshard = (0..VSHARD_COUNT as u64)
        .map(VShard::of)
        .find(|&vshard| context.table.owner(vshard) == shard)
        .expect("every shard owns a vshard");
    let started = Instant::now();
    let load = Rc::new(Load {
        log: context.log.clone(),
        shard,
        vshard,
        deadline: started + params.duration,
        params,
        started,
        sent: Cell::new(0),
        acked: Cell::new(0),
        parked: Cell::new(0),
        latency_ns: RefCell::new(Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")),
        payload: RefCell::new(Vec::new()),
        error: RefCell::new(None),
    });
    if load.params.rate_per_shard.is_none() {
        for _ in 0..load.params.in_flight {
            if !send(&load, Instant::now()) {
                load.parked.set(load.parked.get() + 1);
            }
        }
    }
    let mut last_report = Instant::now();
    let mut reported = Lsn::ZERO;
    while Instant::now() < load.deadline && load.error.borrow().is_none() {
        glommio::timer::sleep(TICK).await;
        match load.params.rate_per_shard {
            Some(rate) => {
                let due = (load.started.elapsed().as_secs_f64() * rate as f64) as u64;
                while load.sent.get() < due {
                    let intended = load.started + Duration::from_secs_f64(load.sent.get() as f64 / rate as f64);
                    if !send(&load, intended) {
                        break;
                    }
                }
            }
            None => {
                while load.parked.get() > 0 && send(&load, Instant::now()) {
                    load.parked.set(load.parked.get() - 1);
                }
            }
        }
        if load.params.report_acks && last_report.elapsed() >= REPORT_EVERY {
            report_acked(&load, &mut reported);
            last_report = Instant::now();
        }
    }
    let last = Lsn(load.log.next_lsn().0 - 1);
    if let Err(error) = load.log.acked(last).await {
        load.error.borrow_mut().get_or_insert(error.to_string());
    }
    if load.params.report_acks {
        report_acked(&load, &mut reported);
    }
    let elapsed = load.started.elapsed();
    let latency_ns = load.latency_ns.borrow().clone();
    let error = load.error.borrow().clone();
    ShardResult {
        shard,
        records: load.acked.get(),
        payload_bytes: load.acked.get() * load.params.record_bytes as u64,
        elapsed,
        latency_ns,
        log: load.log.stats(),
        error,
    }
}

fn report_acked(load: &Load, reported: &mut Lsn) {
    let acked = load.log.acked_lsn();
    if acked > *reported {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "acked {} {}", load.shard.0, acked.0);
        let _ = out.flush();
        *reported = acked;
    }
}

/// Appends one record; false when the log refused it for now.
fn send(load: &Rc<Load>, intended: Instant) -> bool {
    if Instant::now() >= load.deadline {
        return false;
    }
    let lsn = load.log.next_lsn();
    let appended = {
        let mut payload = load.payload.borrow_mut();
        fill_payload(load.shard, lsn, load.params.record_bytes, &mut payload);
        load.log.append(STRESS_KIND, load.vshard, &payload)
    };
    match appended {
        Ok(appended) => {
            debug_assert_eq!(appended.lsn, lsn);
            load.sent.set(load.sent.get() + 1);
            let load_for_ack = load.clone();
            load.log.on_acked(appended.lsn, Box::new(move |result| on_ack(&load_for_ack, intended, result)));
            true
        }
        Err(AppendError::Backpressure) => false,
        Err(error) => {
            load.error.borrow_mut().get_or_insert(error.to_string());
            false
        }
    }
}

fn on_ack(load: &Rc<Load>, intended: Instant, result: Result<(), engine::wal::driver::LogError>) {
    if let Err(error) = result {
        load.error.borrow_mut().get_or_insert(error.to_string());
        return;
    }
    let latency_ns = intended.elapsed().as_nanos().max(1) as u64;
    let _ = load.latency_ns.borrow_mut().record(latency_ns.min(60_000_000_000));
    load.acked.set(load.acked.get() + 1);
    if load.params.rate_per_shard.is_none() && !send(load, Instant::now()) && Instant::now() < load.deadline {
        load.parked.set(load.parked.get() + 1);
    }
}
