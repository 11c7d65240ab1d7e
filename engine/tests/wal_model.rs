//! Model-based simulation of the write-ahead log: seeded random appends, steps, reads,
//! checkpoints, process kills and power losses on several shards, each on its own simulated
//! disk, checked after every recovery against an in-memory model of what the log must hold.
//!
//! `FERROGRAM_SIM_SEEDS=N` runs N seeds per durability mode instead of the default;
//! `FERROGRAM_SIM_SEED=S` runs seed S alone (what a failure message asks for).

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use ferrogram_engine::sim::{CrashMode, Recovered, SimCluster, SimLog, SimRng};
use ferrogram_engine::wal::format::{record_span, BATCH_HEADER_BYTES};
use ferrogram_engine::wal::{AppendError, RecordPosition};
use ferrogram_engine::{Durability, LogConfig, Lsn, RecordKind, VShard};

const SHARDS: usize = 3;
const OPERATIONS_PER_SEED: usize = 2000;
/// Seeds per durability mode by default: keeps this file under 20 s in a debug build.
const SEEDS_DEFAULT: u64 = 12;
const PAYLOAD_BYTES_MAX: u64 = 2000;
const GROUP_RECORDS_MAX: u64 = 14;
/// Most records appended back to back without the disk moving (to reach backpressure).
const BURST_RECORDS_MAX: u64 = 60;
const BATCH_BYTES_MAX: usize = 16 << 10;

fn config(durability: Durability) -> LogConfig {
    // Small segments roll every few batches; a short pending queue makes bursts hit backpressure.
    LogConfig {
        durability,
        segment_bytes: 64 << 10,
        batch_bytes_max: BATCH_BYTES_MAX,
        pending_batches_max: 4,
        ..LogConfig::default()
    }
}

/// Proves, over many seeded runs in sync mode, that every acknowledged record survives every
/// crash and restart whole and in order, that recovered LSNs are dense (from 1 or from after
/// the checkpoint, whose state matches), and that nothing is recovered that was not appended.
#[test]
fn sync_mode_matches_the_model() {
    run_seeds(Durability::Sync);
}

/// Proves the same in interval mode for every record synced before the crash (records
/// acknowledged after the last completed sync may be lost, never reordered or invented).
#[test]
fn interval_mode_matches_the_model() {
    run_seeds(Durability::Interval { interval_ms: 20 });
}

fn run_seeds(durability: Durability) {
    let seeds: Vec<u64> = match (std::env::var("FERROGRAM_SIM_SEED"), std::env::var("FERROGRAM_SIM_SEEDS")) {
        (Ok(seed), _) => vec![seed.parse().expect("FERROGRAM_SIM_SEED is a number")],
        (_, Ok(count)) => (0..count.parse().expect("FERROGRAM_SIM_SEEDS is a number")).collect(),
        _ => (0..SEEDS_DEFAULT).collect(),
    };
    let mut total = Coverage::default();
    for seed in seeds.iter().copied() {
        match catch_unwind(AssertUnwindSafe(|| run_seed(seed, durability))) {
            Ok(coverage) => total.add(&coverage),
            Err(panic) => {
                eprintln!("wal_model: seed {seed} failed in {durability:?}; rerun with FERROGRAM_SIM_SEED={seed}");
                resume_unwind(panic);
            }
        }
    }
    eprintln!("wal_model {durability:?}: {} seeds, {total:?}", seeds.len());
    // A simulation that never reached these cases would pass without proving anything.
    if seeds.len() as u64 >= SEEDS_DEFAULT {
        assert!(total.crashes > 0 && total.kills > 0, "{total:?}");
        assert!(total.recovered_from_checkpoint > 0, "no recovery started at a checkpoint: {total:?}");
        assert!(total.torn_tails > 0, "no crash left a torn or unsynced tail: {total:?}");
        assert!(total.unacknowledged_lost > 0, "no crash lost an unsynced record: {total:?}");
        assert!(total.segments_recycled > 0, "no segment was recycled: {total:?}");
        assert!(total.group_appends > 0 && total.reads > 0, "{total:?}");
        assert!(total.backpressure > 0 && total.too_large > 0, "{total:?}");
    }
}

/// What the runs exercised, so the test can insist it exercised something.
#[derive(Debug, Default)]
struct Coverage {
    appended: u64,
    group_appends: u64,
    backpressure: u64,
    too_large: u64,
    reads: u64,
    checkpoints: u64,
    crashes: u64,
    kills: u64,
    recovered_from_checkpoint: u64,
    torn_tails: u64,
    unacknowledged_lost: u64,
    segments_recycled: u64,
}

impl Coverage {
    fn add(&mut self, other: &Coverage) {
        self.appended += other.appended;
        self.group_appends += other.group_appends;
        self.backpressure += other.backpressure;
        self.too_large += other.too_large;
        self.reads += other.reads;
        self.checkpoints += other.checkpoints;
        self.crashes += other.crashes;
        self.kills += other.kills;
        self.recovered_from_checkpoint += other.recovered_from_checkpoint;
        self.torn_tails += other.torn_tails;
        self.unacknowledged_lost += other.unacknowledged_lost;
        self.segments_recycled += other.segments_recycled;
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ModelRecord {
    kind: RecordKind,
    vshard: VShard,
    payload: Vec<u8>,
}

/// What one shard's log must hold: its history as it stands (index = LSN - 1), and where each
/// record was placed.
#[derive(Debug, Default)]
struct ShardModel {
    records: Vec<ModelRecord>,
    positions: Vec<RecordPosition>,
}

/// A run's fixed context, named in every assertion message.
#[derive(Clone, Copy, Debug)]
struct Context {
    seed: u64,
    shard: usize,
    durability: Durability,
}

impl std::fmt::Display for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "seed {} shard {} {:?}", self.seed, self.shard, self.durability)
    }
}

fn run_seed(seed: u64, durability: Durability) -> Coverage {
    let config = config(durability);
    let mut cluster =
        SimCluster::open(seed, SHARDS, config).unwrap_or_else(|failure| panic!("seed {seed}: {}", failure.error));
    let mut models: Vec<ShardModel> = (0..SHARDS).map(|_| ShardModel::default()).collect();
    let mut workload = SimRng::new(seed ^ 0x5EED_F00D);
    let mut coverage = Coverage::default();

    for _ in 0..OPERATIONS_PER_SEED {
        let shard = workload.index(SHARDS);
        let context = Context { seed, shard, durability };
        let model = &mut models[shard];
        match workload.below(100) {
            0..=39 => append_one(&mut cluster, model, &mut workload, &mut coverage, context),
            40..=46 => append_group(&mut cluster, model, &mut workload, &mut coverage, context),
            47 => {
                for _ in 0..workload.between(1, BURST_RECORDS_MAX) {
                    append_one(&mut cluster, model, &mut workload, &mut coverage, context);
                }
            }
            48..=86 => {
                for _ in 0..workload.between(1, 4) {
                    cluster.tick();
                }
            }
            87..=91 => read_back(&mut cluster, model, &mut workload, &mut coverage, context),
            92..=94 => {
                let (log, rng) = cluster.log_and_rng(shard);
                let state = state_of(&model.records);
                let ticket =
                    log.checkpoint(&state, rng).unwrap_or_else(|error| panic!("{context}: checkpoint: {error}"));
                assert_eq!(ticket.lsn.0, model.records.len() as u64, "{context}: the ticket covers every append");
                if workload.chance(2, 3) {
                    log.release_before(ticket.replay_from.segment);
                }
                coverage.checkpoints += 1;
            }
            95..=96 => {
                let log = cluster.log(shard);
                let bound = survival_bound(log, durability);
                coverage.segments_recycled += log.recycled().len() as u64;
                let appended = log.next_lsn();
                let recovered = cluster
                    .crash(shard, CrashMode::Random)
                    .unwrap_or_else(|failure| panic!("{context}: recovery after power loss: {}", failure.error));
                verify_recovery(&recovered, model, bound, appended, &mut coverage, context);
                coverage.crashes += 1;
            }
            97 => {
                let log = cluster.log(shard);
                // The page cache survives a process kill: everything written comes back.
                let bound = log.written_lsn();
                coverage.segments_recycled += log.recycled().len() as u64;
                let appended = log.next_lsn();
                let recovered = cluster
                    .kill(shard)
                    .unwrap_or_else(|failure| panic!("{context}: recovery after a kill: {}", failure.error));
                verify_recovery(&recovered, model, bound, appended, &mut coverage, context);
                coverage.kills += 1;
            }
            _ => {
                cluster.tick();
            }
        }
    }

    // Finally everything is made durable, and a last power loss must keep all of it.
    for (shard, model) in models.iter_mut().enumerate() {
        let context = Context { seed, shard, durability };
        let (log, rng) = cluster.log_and_rng(shard);
        log.settle(rng).unwrap_or_else(|error| panic!("{context}: settle: {error}"));
        assert_eq!(log.acked_lsn().0, model.records.len() as u64, "{context}: everything appended is acknowledged");
        let bound = log.durable_lsn();
        let appended = log.next_lsn();
        coverage.segments_recycled += log.recycled().len() as u64;
        let recovered =
            cluster.crash(shard, CrashMode::Random).unwrap_or_else(|failure| panic!("{context}: {}", failure.error));
        verify_recovery(&recovered, model, bound, appended, &mut coverage, context);
        assert_eq!(recovered.outcome.next_lsn.0 - 1, model.records.len() as u64, "{context}: nothing durable was lost");
    }
    coverage
}

/// The LSN through which a crash must keep records: acknowledged ones in sync mode, synced ones
/// in interval mode.
fn survival_bound(log: &SimLog, durability: Durability) -> Lsn {
    match durability {
        Durability::Sync => log.acked_lsn(),
        Durability::Interval { .. } | Durability::None => log.durable_lsn(),
    }
}

fn random_record(workload: &mut SimRng) -> ModelRecord {
    let bytes = match workload.below(10) {
        0 => 0,
        1 => workload.between(1, 16),
        _ => workload.below(PAYLOAD_BYTES_MAX + 1),
    } as usize;
    let mut payload = vec![0u8; bytes];
    workload.fill(&mut payload);
    ModelRecord { kind: RecordKind(workload.below(8) as u16), vshard: VShard::of(workload.next_u64()), payload }
}

fn append_one(
    cluster: &mut SimCluster,
    model: &mut ShardModel,
    workload: &mut SimRng,
    coverage: &mut Coverage,
    context: Context,
) {
    let record = random_record(workload);
    match cluster.log(context.shard).append(record.kind, record.vshard, &record.payload) {
        Ok(appended) => {
            assert_eq!(appended.lsn.0, model.records.len() as u64 + 1, "{context}: LSNs are dense");
            model.records.push(record);
            model.positions.push(appended.position);
            coverage.appended += 1;
        }
        Err(AppendError::Backpressure) => coverage.backpressure += 1,
        Err(error) => panic!("{context}: append: {error}"),
    }
}

fn append_group(
    cluster: &mut SimCluster,
    model: &mut ShardModel,
    workload: &mut SimRng,
    coverage: &mut Coverage,
    context: Context,
) {
    let group: Vec<ModelRecord> =
        (0..workload.between(1, GROUP_RECORDS_MAX)).map(|_| random_record(workload)).collect();
    let span: usize = group.iter().map(|record| record_span(record.payload.len())).sum();
    let borrowed: Vec<(RecordKind, VShard, &[u8])> =
        group.iter().map(|record| (record.kind, record.vshard, record.payload.as_slice())).collect();
    let mut positions = Vec::new();
    match cluster.log(context.shard).append_all(&borrowed, |appended| positions.push(appended)) {
        Ok(first) => {
            assert!(span <= BATCH_BYTES_MAX - BATCH_HEADER_BYTES, "{context}: a group of {span} bytes was taken");
            assert_eq!(first.0, model.records.len() as u64 + 1, "{context}: LSNs are dense");
            assert_eq!(positions.len(), group.len());
            for (offset, appended) in positions.iter().enumerate() {
                assert_eq!(appended.lsn.0, first.0 + offset as u64, "{context}: a group's LSNs are dense");
                model.positions.push(appended.position);
            }
            model.records.extend(group);
            coverage.appended += positions.len() as u64;
            coverage.group_appends += 1;
        }
        Err(AppendError::Backpressure) => coverage.backpressure += 1,
        Err(AppendError::RecordTooLarge { .. }) => {
            assert!(span > BATCH_BYTES_MAX - BATCH_HEADER_BYTES, "{context}: a group of {span} bytes was refused");
            coverage.too_large += 1;
        }
        Err(error) => panic!("{context}: append_all: {error}"),
    }
}

/// Reads a random record back while the log runs; one written and not released must read
/// back identical.
fn read_back(
    cluster: &mut SimCluster,
    model: &ShardModel,
    workload: &mut SimRng,
    coverage: &mut Coverage,
    context: Context,
) {
    if model.records.is_empty() {
        return;
    }
    let index = workload.index(model.records.len());
    let log = cluster.log(context.shard);
    let position = model.positions[index];
    if !log.core().is_readable(position) {
        return;
    }
    let record = log.read(position).unwrap_or_else(|error| panic!("{context}: read of LSN {}: {error}", index + 1));
    let expected = &model.records[index];
    assert_eq!(record.lsn.0, index as u64 + 1, "{context}: read");
    assert_eq!(
        (record.kind, record.vshard, &record.payload),
        (expected.kind, expected.vshard, &expected.payload),
        "{context}: read"
    );
    coverage.reads += 1;
}

/// Checks a recovery against the model, then makes the model what the log now holds.
/// `bound`: records through it must have survived; `appended`: the log's next LSN before.
fn verify_recovery(
    recovered: &Recovered,
    model: &mut ShardModel,
    bound: Lsn,
    appended: Lsn,
    coverage: &mut Coverage,
    context: Context,
) {
    assert_eq!(appended.0, model.records.len() as u64 + 1, "{context}: the model tracks every append");
    let end = recovered.outcome.next_lsn.0 - 1;
    assert!(end >= bound.0, "{context}: recovered through LSN {end}, but LSN {bound} had to survive");
    assert!(end <= model.records.len() as u64, "{context}: recovered through LSN {end}, beyond anything appended");
    let start = match &recovered.checkpoint {
        Some(checkpoint) => {
            let lsn = checkpoint.ticket.lsn.0;
            assert!(lsn <= end, "{context}: checkpoint at {lsn} beyond the recovered end {end}");
            assert_eq!(
                checkpoint.state,
                state_of(&model.records[..lsn as usize]),
                "{context}: checkpoint state at {lsn}"
            );
            coverage.recovered_from_checkpoint += 1;
            lsn
        }
        None => 0,
    };
    assert_eq!(recovered.records.len() as u64, end - start, "{context}: records {start}..{end} are not dense");
    for (offset, record) in recovered.records.iter().enumerate() {
        let lsn = start + 1 + offset as u64;
        assert_eq!(record.lsn.0, lsn, "{context}: recovered LSNs are dense and in order");
        let expected = &model.records[lsn as usize - 1];
        assert_eq!(
            (record.kind, record.vshard, &record.payload),
            (expected.kind, expected.vshard, &expected.payload),
            "{context}: LSN {lsn} came back different from what was appended"
        );
        assert_eq!(record.position, model.positions[lsn as usize - 1], "{context}: LSN {lsn} moved");
    }
    if recovered.outcome.torn_tail {
        coverage.torn_tails += 1;
    }
    coverage.unacknowledged_lost += model.records.len() as u64 - end;
    model.records.truncate(end as usize);
    model.positions.truncate(end as usize);
}

/// The state a checkpoint captures: the count of records and a hash of all of them in order.
fn state_of(records: &[ModelRecord]) -> Vec<u8> {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0100_0000_01b3;
    let mut hash = FNV_OFFSET;
    let mut mix = |bytes: &[u8]| {
        for &byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
        }
    };
    for record in records {
        mix(&record.kind.0.to_le_bytes());
        mix(&record.vshard.index().to_le_bytes());
        mix(&(record.payload.len() as u64).to_le_bytes());
        mix(&record.payload);
    }
    let mut state = (records.len() as u64).to_le_bytes().to_vec();
    state.extend_from_slice(&hash.to_le_bytes());
    state
}
