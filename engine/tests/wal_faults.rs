//! Fault injection against the write-ahead log on the simulated disk: torn tails, flipped
//! bits, recycled segments, failed fsyncs and writes, a full disk, and checkpoints, each
//! followed by recovery and a check of exactly what came back.

use ferrogram_engine::sim::{segment_file_name, CrashMode, OpKind, OpenError, SimDisk, SimError, SimLog, SimRng};
use ferrogram_engine::wal::format::{decode_record, segment_seed, Batch, BATCH_HEADER_BYTES, BATCH_MAGIC, BLOCK_BYTES};
use ferrogram_engine::wal::{checkpoint, AppendError, Appended, RecordPosition};
use ferrogram_engine::{LogConfig, Lsn, RecordKind, SegmentId, VShard};

const SEGMENT_BYTES: u64 = 64 << 10;

fn config() -> LogConfig {
    LogConfig { segment_bytes: SEGMENT_BYTES, batch_bytes_max: 16 << 10, ..LogConfig::default() }
}

/// A payload that names its record, so a record recovered in the wrong place shows.
fn payload(tag: u64, bytes: usize) -> Vec<u8> {
    let mut out = format!("record {tag}:").into_bytes();
    out.resize(bytes.max(out.len()), (tag % 251) as u8);
    out
}

/// A log kept alongside what was appended to it.
struct Fixture {
    log: SimLog,
    rng: SimRng,
    appended: Vec<(Appended, Vec<u8>)>,
}

impl Fixture {
    fn open(seed: u64) -> Fixture {
        let (log, recovered) = SimLog::open(SimDisk::new(seed), config(), false).expect("a new disk opens");
        assert!(recovered.records.is_empty());
        Fixture { log, rng: SimRng::new(seed), appended: Vec::new() }
    }

    fn append(&mut self, bytes: usize) -> Result<Appended, AppendError> {
        let tag = self.appended.len() as u64 + 1;
        let payload = payload(tag, bytes);
        let appended = self.log.append(RecordKind(1), VShard::of(tag), &payload)?;
        self.appended.push((appended, payload));
        Ok(appended)
    }

    /// Appends `count` records, each synced in its own batch before the next.
    fn append_synced(&mut self, count: usize, bytes: usize) {
        for _ in 0..count {
            self.append(bytes).expect("append");
            self.log.settle(&mut self.rng).expect("settle");
        }
    }

    /// Crashes, reopens, and checks the recovered records are exactly LSNs 1..=`through` as
    /// appended (or from after the checkpoint recovery started at).
    fn crash_and_expect(self, mode: CrashMode, through: Lsn) -> (SimLog, SimRng) {
        let Fixture { log, mut rng, appended } = self;
        let disk = log.crash_with(mode, &mut rng);
        let (log, recovered) = SimLog::open(disk, config(), false).expect("reopens");
        let first = recovered.checkpoint.as_ref().map_or(Lsn(1), |checkpoint| checkpoint.ticket.lsn.next());
        let lsns: Vec<u64> = recovered.records.iter().map(|record| record.lsn.0).collect();
        assert_eq!(lsns, (first.0..=through.0).collect::<Vec<u64>>());
        for record in &recovered.records {
            assert_eq!(record.payload, appended[record.lsn.0 as usize - 1].1, "payload of LSN {}", record.lsn);
        }
        assert_eq!(log.next_lsn(), through.next());
        (log, rng)
    }
}

/// The offset of the batch a batch's first record sits in.
fn batch_of_first_record(position: RecordPosition) -> u64 {
    u64::from(position.offset) - BATCH_HEADER_BYTES as u64
}

/// Proves a newest batch torn by a crash is dropped whole: its first block, with the batch
/// header and a complete first record, survived, yet none of its records come back.
#[test]
fn torn_newest_batch_is_dropped_whole() {
    let mut fixture = Fixture::open(1);
    fixture.append_synced(5, 200);
    // Three records of 1500 bytes make one batch of two blocks.
    let torn: Vec<Appended> = (0..3).map(|_| fixture.append(1500).expect("append")).collect();
    while fixture.log.written_lsn() < Lsn(8) {
        assert!(fixture.log.step(&mut fixture.rng), "the write is pending");
    }
    assert_eq!(fixture.log.acked_lsn(), Lsn(5), "written but not yet synced");
    let salt = fixture.log.core().salt();
    let Fixture { log, mut rng, appended } = fixture;
    let disk = log.crash_with(CrashMode::KeepFirstBlock, &mut rng);

    let first = torn[0].position;
    let durable = disk.durable_bytes(&segment_file_name(first.segment)).expect("segment exists");
    let (intact, _) = decode_record(&durable[first.offset as usize..], segment_seed(salt, first.segment))
        .expect("the torn batch's first record reached the disk whole");
    assert_eq!(intact.lsn, Lsn(6));
    let batch_start = batch_of_first_record(first) as usize;
    assert_eq!(durable[batch_start..batch_start + 4], BATCH_MAGIC.to_le_bytes(), "its header reached the disk too");

    let (_, recovered) = SimLog::open(disk, config(), false).expect("a torn tail is not corruption");
    let lsns: Vec<u64> = recovered.records.iter().map(|record| record.lsn.0).collect();
    assert_eq!(lsns, vec![1, 2, 3, 4, 5]);
    assert!(recovered.outcome.torn_tail);
    assert_eq!(recovered.outcome.next_lsn, Lsn(6));
    for record in &recovered.records {
        assert_eq!(record.payload, appended[record.lsn.0 as usize - 1].1);
    }
}

/// Proves a flipped bit in an acknowledged batch followed by later synced batches is refused
/// with an error naming its segment and offset; that `repair` then opens the log, dropping
/// from the bad batch on and bumping the generation; and that the log carries on from there.
#[test]
fn mid_log_corruption_is_refused_then_repaired() {
    let mut fixture = Fixture::open(2);
    fixture.append_synced(10, 300);
    let (victim, _) = fixture.appended[3];
    let bad_batch = batch_of_first_record(victim.position);
    let Fixture { log, mut rng, .. } = fixture;
    let generation = log.generation();
    let mut disk = log.crash_with(CrashMode::Random, &mut rng);
    disk.flip_bit(&segment_file_name(victim.position.segment), u64::from(victim.position.offset) + 30, 3);

    let failure = SimLog::open(disk, config(), false).expect_err("acknowledged data was damaged");
    let OpenError::Corrupt(corruption) = &failure.error else { panic!("expected corruption, got {}", failure.error) };
    assert_eq!((corruption.segment, corruption.offset), (victim.position.segment, bad_batch));
    assert_eq!(corruption.evidence_offset, bad_batch + BLOCK_BYTES as u64, "the next batch proves it was acked");
    let message = failure.error.to_string();
    assert!(message.contains(&victim.position.segment.to_string()), "{message}");
    assert!(message.contains(&format!("offset {bad_batch}")), "{message}");

    let (mut log, recovered) = SimLog::open(failure.disk, config(), true).expect("repair opens the log");
    let lsns: Vec<u64> = recovered.records.iter().map(|record| record.lsn.0).collect();
    assert_eq!(lsns, vec![1, 2, 3], "everything from the bad batch on is dropped");
    assert_eq!(recovered.generation, generation + 1);
    assert_eq!(
        recovered.repaired.as_ref().map(|cut| (cut.segment, cut.offset)),
        Some((victim.position.segment, bad_batch))
    );

    let appended = log.append(RecordKind(1), VShard::of(4), b"after repair").expect("append");
    assert_eq!(appended.lsn, Lsn(4));
    log.settle(&mut rng).expect("settle");
    let disk = log.crash(&mut rng);
    let (_, recovered) = SimLog::open(disk, config(), false).expect("a repaired log opens without repair");
    let lsns: Vec<u64> = recovered.records.iter().map(|record| record.lsn.0).collect();
    assert_eq!(lsns, vec![1, 2, 3, 4]);
    assert_eq!(recovered.records[3].payload, b"after repair");
    assert_eq!(recovered.generation, generation + 1, "only a repair bumps the generation");
}

/// Proves bytes a recycled segment kept from its earlier life are never accepted: after a
/// checkpoint and `release_before` let a segment be reused under a new number, a crash loses
/// the batch written over its old contents, and recovery ends at the last synced record even
/// though valid-looking old batches follow, including one forged to continue the LSNs.
#[test]
fn stale_record_in_a_recycled_segment_is_never_accepted() {
    let mut fixture = Fixture::open(3);
    // Sixteen one-block batches fill a 64 KiB segment: fill segments 1 and 2, half of 3.
    fixture.append_synced(40, 3000);
    let ticket = fixture.log.checkpoint(b"state", &mut fixture.rng).expect("checkpoint");
    fixture.log.release_before(ticket.replay_from.segment);
    while fixture.log.recycled().is_empty() {
        fixture.append_synced(1, 3000);
    }
    let (new, old) = fixture.log.recycled()[0];
    // Write into the recycled segment until it holds one synced batch of the new life.
    while fixture.appended.last().expect("appended").0.position.segment < new {
        fixture.append_synced(1, 3000);
    }
    let synced = fixture.log.acked_lsn();
    let lost = fixture.append(3000).expect("append");
    while fixture.log.written_lsn() < lost.lsn {
        assert!(fixture.log.step(&mut fixture.rng));
    }
    assert_eq!(lost.position.segment, new, "the lost batch goes over the old contents");
    let salt_check = fixture.log.core().salt();
    let Fixture { log, mut rng, appended } = fixture;
    let mut disk = log.crash_with(CrashMode::LoseAll, &mut rng);

    let name = segment_file_name(new);
    let at = batch_of_first_record(lost.position);
    let durable = disk.durable_bytes(&name).expect("recycled segment exists").to_vec();
    let stale = Batch::decode(&durable[at as usize..], segment_seed(salt_check, old), old)
        .expect("the old life's batch is still there, valid under its old number");
    assert!(stale.header.last_lsn() < synced);
    // Forge the worst case: an old-life batch whose LSNs continue the log and whose watermark
    // claims they were durable, sealed (as the old life would have) under the old number.
    let forged = forge_batch(salt_check, old, synced.next(), synced.next(), b"forged");
    disk.write_durable(&name, at, &forged).expect("write");

    let (_, recovered) = SimLog::open(disk, config(), false).expect("stale bytes are a tail, not corruption");
    let first = recovered.checkpoint.as_ref().map_or(Lsn(1), |checkpoint| checkpoint.ticket.lsn.next());
    let lsns: Vec<u64> = recovered.records.iter().map(|record| record.lsn.0).collect();
    assert_eq!(lsns, (first.0..=synced.0).collect::<Vec<u64>>());
    for record in &recovered.records {
        assert_eq!(record.payload, appended[record.lsn.0 as usize - 1].1);
    }
    assert!(recovered.outcome.torn_tail);
}

/// A batch of one record sealed for `segment`, as the writer would have.
fn forge_batch(salt: u64, segment: SegmentId, lsn: Lsn, durable_lsn: Lsn, payload: &[u8]) -> Vec<u8> {
    use ferrogram_engine::wal::format::{batch_span, body_checksum, encode_record, record_span, BatchHeader};
    let seed = segment_seed(salt, segment);
    let body_bytes = record_span(payload.len());
    let mut out = vec![0u8; batch_span(body_bytes)];
    encode_record(&mut out[BATCH_HEADER_BYTES..], seed, RecordKind(1), VShard::of(0), lsn, payload);
    let header = BatchHeader {
        record_count: 1,
        body_bytes: body_bytes as u32,
        segment,
        first_lsn: lsn,
        body_checksum: body_checksum(seed, &out[BATCH_HEADER_BYTES..BATCH_HEADER_BYTES + body_bytes]),
        durable_lsn,
    };
    header.encode(seed, &mut out);
    out
}

/// Proves a failed fsync stops the log for good: appends are refused with `Failed`, nothing
/// after the failure is acknowledged however long the log runs, and after power loss the log
/// recovers exactly what had been synced; under random crash fates it never recovers less, and
/// never anything that was not appended.
#[test]
fn failed_fsync_stops_the_log() {
    check_failure_stops_the_log(OpKind::Sync);
}

/// Proves a failed write stops the log the same way (its partial bytes never come back as
/// records).
#[test]
fn failed_write_stops_the_log() {
    check_failure_stops_the_log(OpKind::Write);
}

fn check_failure_stops_the_log(kind: OpKind) {
    for (seed, mode) in
        [(10, CrashMode::LoseAll), (11, CrashMode::Random), (12, CrashMode::Random), (13, CrashMode::KeepAll)]
    {
        let mut fixture = Fixture::open(seed);
        fixture.append_synced(5, 700);
        fixture.log.disk_mut().fail_nth_op(1, kind);
        for _ in 0..3 {
            fixture.append(2500).expect("append before the failure");
        }
        let settled = fixture.log.settle(&mut fixture.rng);
        assert!(matches!(settled, Err(SimError::Failed(_))), "{kind:?}: {settled:?}");
        assert!(fixture.log.failure().is_some());
        assert_eq!(fixture.log.acked_lsn(), Lsn(5), "{kind:?}: nothing after the failure is acknowledged");
        assert!(matches!(fixture.append(10), Err(AppendError::Failed(_))), "appends are refused");
        for _ in 0..100 {
            fixture.log.advance_time(10);
            fixture.log.step(&mut fixture.rng);
        }
        assert_eq!(fixture.log.acked_lsn(), Lsn(5), "{kind:?}: the log never resumes by itself");
        assert_eq!(fixture.log.durable_lsn(), Lsn(5));

        if mode == CrashMode::LoseAll {
            fixture.crash_and_expect(mode, Lsn(5));
            continue;
        }
        let Fixture { log, mut rng, appended } = fixture;
        let disk = log.crash_with(mode, &mut rng);
        let (_, recovered) = SimLog::open(disk, config(), false).expect("reopens");
        let end = recovered.outcome.next_lsn.0 - 1;
        assert!((5..=8).contains(&end), "{kind:?} seed {seed}: recovered through {end}");
        for (index, record) in recovered.records.iter().enumerate() {
            assert_eq!(record.lsn.0, index as u64 + 1);
            assert_eq!(record.payload, appended[index].1, "{kind:?} seed {seed}: LSN {}", record.lsn);
        }
    }
}

/// Proves a full disk refuses only what needs a new segment: appends that fit the current
/// segment go on, the next gets `DiskFull` (not `Failed`), acknowledged records stay readable,
/// and once space is freed and the retry comes, the waiting records and new ones are written.
#[test]
fn disk_full_refuses_new_segments_until_space_returns() {
    let mut fixture = Fixture::open(20);
    // Room for the meta and three segments, not a fourth.
    fixture.log.disk_mut().set_capacity_bytes(Some(3 * SEGMENT_BYTES + 4096));
    let refused = fill_until_disk_full(&mut fixture);
    assert!(fixture.log.is_disk_full());
    assert!(fixture.log.failure().is_none(), "a full disk does not stop the log");
    assert!(matches!(refused, AppendError::DiskFull));
    assert!(matches!(fixture.append(3000), Err(AppendError::DiskFull)), "still full");
    check_acked_records_readable(&fixture);

    fixture.log.disk_mut().set_capacity_bytes(None);
    assert!(!fixture.log.step(&mut fixture.rng), "the prepare is not retried before its time");
    fixture.log.advance_time(2000);
    while fixture.log.is_disk_full() {
        assert!(fixture.log.step(&mut fixture.rng), "the prepare is retried");
    }
    let after = fixture.append(3000).expect("appends resume");
    fixture.log.settle(&mut fixture.rng).expect("settle");
    assert_eq!(fixture.log.acked_lsn(), after.lsn, "everything appended is acknowledged");
    check_acked_records_readable(&fixture);
    let through = fixture.log.acked_lsn();
    fixture.crash_and_expect(CrashMode::Random, through);
}

/// Proves a full disk also recovers without new space, by recycling: a checkpoint and
/// `release_before` make old segments reusable, and the next prepare renames one instead of
/// creating a file.
#[test]
fn disk_full_recovers_by_recycling_segments() {
    let mut fixture = Fixture::open(21);
    fixture.log.disk_mut().set_capacity_bytes(Some(3 * SEGMENT_BYTES + 4096));
    fill_until_disk_full(&mut fixture);
    let ticket = fixture.log.checkpoint(b"state", &mut fixture.rng).expect("a checkpoint needs no new segment");
    fixture.log.release_before(ticket.replay_from.segment);
    let resumed = loop {
        match fixture.append(3000) {
            Ok(appended) => break appended,
            Err(AppendError::DiskFull) => assert!(fixture.log.step(&mut fixture.rng), "the recycling prepare runs"),
            Err(error) => panic!("unexpected {error}"),
        }
    };
    fixture.log.settle(&mut fixture.rng).expect("settle");
    assert_eq!(fixture.log.acked_lsn(), resumed.lsn);
    assert!(!fixture.log.recycled().is_empty(), "space came from a recycled segment");
    assert!(fixture.log.disk().used_bytes() <= 3 * SEGMENT_BYTES + 4096 + 4096, "no new space was taken");
    let through = fixture.log.acked_lsn();
    fixture.crash_and_expect(CrashMode::Random, through);
}

/// Appends one-block records, syncing each, until an append is refused; returns the refusal.
fn fill_until_disk_full(fixture: &mut Fixture) -> AppendError {
    loop {
        match fixture.append(3000) {
            Ok(_) => match fixture.log.settle(&mut fixture.rng) {
                Ok(()) | Err(SimError::Stalled) => {}
                Err(error) => panic!("settle failed: {error}"),
            },
            Err(error) => return error,
        }
    }
}

fn check_acked_records_readable(fixture: &Fixture) {
    let acked = fixture.log.acked_lsn();
    for (appended, payload) in fixture.appended.iter().filter(|(appended, _)| appended.lsn <= acked) {
        let record = fixture.log.read(appended.position).expect("an acknowledged record reads back");
        assert_eq!((record.lsn, &record.payload), (appended.lsn, payload));
    }
}

/// Proves a checkpoint followed by a crash recovers from the checkpoint: its state bytes come
/// back and only the records after it are replayed; only the retained checkpoints stay on
/// disk; and a damaged newest checkpoint falls back to the older one, replaying more.
#[test]
fn checkpoint_then_crash_recovers_from_the_checkpoint() {
    let mut fixture = Fixture::open(30);
    fixture.append_synced(20, 900);
    let older = fixture.log.checkpoint(b"state after 20", &mut fixture.rng).expect("checkpoint");
    assert_eq!(older.lsn, Lsn(20));
    fixture.append_synced(5, 900);
    // A checkpoint taken with records still unsynced waits for them.
    for _ in 0..3 {
        fixture.append(900).expect("append");
    }
    let newest = fixture.log.checkpoint(b"state after 28", &mut fixture.rng).expect("checkpoint");
    assert_eq!(newest.lsn, Lsn(28));
    assert!(fixture.log.durable_lsn() >= Lsn(28));
    fixture.append_synced(7, 900);

    let Fixture { log, mut rng, appended } = fixture;
    let disk = log.crash(&mut rng);
    let mut damaged = disk.clone();
    let (_, recovered) = SimLog::open(disk, config(), false).expect("reopens");
    let checkpoint_found = recovered.checkpoint.as_ref().expect("recovery starts at the checkpoint");
    assert_eq!(checkpoint_found.ticket, newest);
    assert_eq!(checkpoint_found.state, b"state after 28");
    let lsns: Vec<u64> = recovered.records.iter().map(|record| record.lsn.0).collect();
    assert_eq!(lsns, (29..=35).collect::<Vec<u64>>());
    for record in &recovered.records {
        assert_eq!(record.payload, appended[record.lsn.0 as usize - 1].1);
    }

    damaged.flip_bit(&checkpoint::file_name(newest.lsn), 70, 0);
    let (_, recovered) = SimLog::open(damaged, config(), false).expect("reopens from the older checkpoint");
    let checkpoint_found = recovered.checkpoint.as_ref().expect("the older checkpoint");
    assert_eq!((checkpoint_found.ticket, &checkpoint_found.state[..]), (older, &b"state after 20"[..]));
    let lsns: Vec<u64> = recovered.records.iter().map(|record| record.lsn.0).collect();
    assert_eq!(lsns, (21..=35).collect::<Vec<u64>>());
}

/// Proves only the retained checkpoints stay on disk, and that checkpoints repeated at the
/// same LSN (an idle shard checkpointing on a timer), which share one file, never delete it:
/// recovery still starts from the newest.
#[test]
fn only_retained_checkpoints_stay_on_disk() {
    let mut fixture = Fixture::open(31);
    let mut lsns = Vec::new();
    for round in 0..4 {
        fixture.append_synced(3, 100);
        let ticket = fixture.log.checkpoint(format!("round {round}").as_bytes(), &mut fixture.rng).expect("checkpoint");
        lsns.push(ticket.lsn);
    }
    for idle in 0..3 {
        let again = fixture.log.checkpoint(format!("idle {idle}").as_bytes(), &mut fixture.rng).expect("checkpoint");
        assert_eq!(again.lsn, lsns[3]);
    }
    let files: Vec<String> = fixture
        .log
        .disk()
        .file_names()
        .into_iter()
        .filter(|name| checkpoint::parse_file_name(name).is_some())
        .collect();
    assert_eq!(files, vec![checkpoint::file_name(lsns[2]), checkpoint::file_name(lsns[3])]);
    let (_, recovered) = SimLog::open(fixture.log.crash(&mut fixture.rng), config(), false).expect("reopens");
    let found = recovered.checkpoint.expect("the newest checkpoint is on disk");
    assert_eq!((found.ticket.lsn, &found.state[..]), (lsns[3], &b"idle 2"[..]));
}

/// Proves a process restart (page cache kept) followed later by power loss stays consistent:
/// recovery after the restart reads records that were written but never synced, and the
/// reopened log makes them durable before its own batches declare them so; otherwise the
/// power loss would turn them into a gap that later batches prove was acknowledged.
#[test]
fn restart_then_power_loss_keeps_the_log_openable() {
    let mut fixture = Fixture::open(40);
    fixture.append_synced(3, 500);
    fixture.append(500).expect("append");
    while fixture.log.written_lsn() < Lsn(4) {
        assert!(fixture.log.step(&mut fixture.rng));
    }
    assert_eq!(fixture.log.durable_lsn(), Lsn(3));
    let Fixture { log, mut rng, appended } = fixture;
    let disk = log.kill(&mut rng);
    let (log, recovered) = SimLog::open(disk, config(), false).expect("reopens after the restart");
    assert_eq!(recovered.outcome.next_lsn, Lsn(5), "the written record is recovered from the page cache");
    let mut fixture = Fixture { log, rng, appended };
    fixture.append_synced(2, 500);
    fixture.crash_and_expect(CrashMode::LoseAll, Lsn(6));
}
