//! One shard's write-ahead log on a [`SimDisk`]: recovery as the real driver does it, and a
//! driver loop that performs the core's requests one completion at a time and checks, each
//! time the durable watermark moves, that every record up to it is in the disk's durable bytes.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{Durability, LogConfig};
use crate::ids::{Lsn, RecordKind, SegmentId, VShard};
use crate::sim::disk::{CrashMode, SimDisk};
use crate::sim::rng::SimRng;
use crate::wal::checkpoint;
use crate::wal::core::{
    AppendError, Appended, CheckpointTicket, IoCompletion, IoFailure, IoRequest, LogCore, LogPosition, LogStart,
    OwnedRecord, RecordPosition,
};
use crate::wal::format::{decode_record, segment_seed, FormatError, BLOCK_BYTES};
use crate::wal::meta::{LogMeta, META_FILE};
use crate::wal::recovery::{scan, Corruption, ReplayFrom, ScanOutcome, SegmentImage};

/// Passes a repair may take before giving up (each pass cuts the log at one corruption).
const REPAIR_PASSES_MAX: u32 = 4;
/// Steps `settle` takes before deciding the log cannot make progress.
const SETTLE_STEPS_MAX: u64 = 1_000_000;

/// The file name of a segment.
pub fn segment_file_name(segment: SegmentId) -> String {
    format!("segment-{segment}.wal")
}

/// The segment a file name names, if it is a segment file.
pub fn parse_segment_file_name(name: &str) -> Option<SegmentId> {
    let digits = name.strip_prefix("segment-")?.strip_suffix(".wal")?;
    (digits.len() == 20).then(|| digits.parse().ok().map(SegmentId)).flatten()
}

/// The checkpoint recovery started from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredCheckpoint {
    pub ticket: CheckpointTicket,
    pub state: Vec<u8>,
}

/// What `SimLog::open` found.
#[derive(Clone, Debug)]
pub struct Recovered {
    /// Records after the checkpoint (or from the first), in LSN order.
    pub records: Vec<OwnedRecord>,
    pub checkpoint: Option<RecoveredCheckpoint>,
    pub outcome: ScanOutcome,
    pub generation: u64,
    /// The corruption a repair cut the log at.
    pub repaired: Option<Corruption>,
}

/// Why a simulated log would not open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error(transparent)]
    Corrupt(#[from] Corruption),
    #[error("the disk has log segments but no valid {META_FILE}: refusing to guess the checksum salt")]
    MetaMissing,
    #[error("repair: {0}")]
    Repair(IoFailure),
}

/// A failed open gives the disk back, so a test can repair it or look at it.
#[derive(Debug)]
pub struct OpenFailure {
    pub disk: SimDisk,
    pub error: OpenError,
}

/// Why waiting on the simulated log failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    #[error("the log stopped after an I/O error: {0}")]
    Failed(IoFailure),
    #[error("the log cannot make progress (disk full, or nothing to do)")]
    Stalled,
}

/// Why a read failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error("record at {0:?} is not readable (not yet written, or released)")]
    NotReadable(RecordPosition),
    #[error("read failed: {0}")]
    Io(IoFailure),
    #[error("record at {position:?} does not verify: {error}")]
    Corrupt { position: RecordPosition, error: FormatError },
}

/// Where the durable bytes are known to hold a valid log up to (`end`, `next_lsn - 1`).
#[derive(Clone, Copy, Debug)]
struct Verified {
    end: LogPosition,
    next_lsn: Lsn,
}

/// One shard's log on a simulated disk. See the module documentation.
pub struct SimLog {
    disk: SimDisk,
    core: LogCore<Vec<u8>>,
    generation: u64,
    now_ms: u64,
    /// The write handed out by the core and not yet completed.
    write_in_flight: Option<IoRequest<Vec<u8>>>,
    /// The sync handed out by the core and not yet completed, and how many volatile writes its
    /// file had when it was handed out: all it may make durable.
    sync_in_flight: Option<IoRequest<Vec<u8>>>,
    sync_covers: usize,
    /// The prepare handed out by the core and not yet completed.
    prepare_in_flight: Option<IoRequest<Vec<u8>>>,
    verified: Verified,
    /// Segments that existed when the log was opened: the writer must never touch them again.
    recovered_segments: BTreeSet<SegmentId>,
    /// Per segment, where its last write ended: writes go forward, never over written blocks.
    write_ends: BTreeMap<SegmentId, u64>,
    /// Every prepare that recycled a segment, as (new, old).
    recycled: Vec<(SegmentId, SegmentId)>,
}

impl std::fmt::Debug for SimLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimLog")
            .field("core", &self.core)
            .field("generation", &self.generation)
            .field("now_ms", &self.now_ms)
            .finish_non_exhaustive()
    }
}

impl SimLog {
    /// Recovers the log on `disk` as a real driver would: meta (created with a fresh salt if
    /// the disk is new), newest checkpoint that verifies, a scan of every segment from there,
    /// and with `repair` a cut at the first corruption. The recovered bytes are then synced,
    /// because a restarted process may have read a tail that was only in the page cache, and
    /// new batches will declare it durable.
    pub fn open(mut disk: SimDisk, config: LogConfig, repair: bool) -> Result<(SimLog, Recovered), Box<OpenFailure>> {
        let fail = |disk: SimDisk, error: OpenError| Box::new(OpenFailure { disk, error });
        let mut meta = match disk.current_bytes(META_FILE).as_deref().and_then(LogMeta::decode) {
            Some(meta) => meta,
            None if list_segments(&disk).is_empty() => {
                let meta = LogMeta::new(disk.random_u64());
                disk.write_file_durable(META_FILE, &meta.encode());
                meta
            }
            None => return Err(fail(disk, OpenError::MetaMissing)),
        };
        let checkpoints = load_checkpoints(&disk, meta.salt);
        let newest = checkpoints.last().cloned();

        let mut repaired = None;
        let mut passes = 0;
        let (records, outcome) = loop {
            let segments = list_segments(&disk);
            let from = ReplayFrom::after(newest.as_ref().map(|checkpoint| &checkpoint.ticket), &segments);
            let owned: Vec<(SegmentId, Vec<u8>)> = segments
                .iter()
                .map(|&segment| (segment, disk.current_bytes(&segment_file_name(segment)).unwrap_or_default()))
                .collect();
            let images: Vec<SegmentImage<'_>> =
                owned.iter().map(|(segment, bytes)| SegmentImage { segment: *segment, bytes }).collect();
            let mut records = Vec::new();
            let result = scan(meta.salt, &images, from, |position, record| {
                records.push(OwnedRecord::new(position, record));
            });
            match result {
                Ok(outcome) => break (records, outcome),
                Err(corruption) if repair && passes < REPAIR_PASSES_MAX => {
                    passes += 1;
                    if let Err(failure) = truncate_at(&mut disk, &segments, &corruption) {
                        return Err(fail(disk, OpenError::Repair(failure)));
                    }
                    if repaired.is_none() {
                        meta.generation += 1;
                        disk.write_file_durable(META_FILE, &meta.encode());
                        repaired = Some(corruption);
                    }
                }
                Err(corruption) => return Err(fail(disk, OpenError::Corrupt(corruption))),
            }
        };

        let segments = list_segments(&disk);
        for &segment in &segments {
            if let Err(failure) = disk.sync(&segment_file_name(segment)) {
                return Err(fail(disk, OpenError::Repair(failure)));
            }
        }
        // The first new batch goes to a segment that was never written. A checkpoint taken just
        // before a roll may name a segment that was never created; new batches must go there
        // (or later), or the next recovery would start past them.
        let after_existing = segments.last().map_or(SegmentId(1), |last| last.next());
        let cursor_segment = newest
            .as_ref()
            .map_or(after_existing, |checkpoint| after_existing.max(checkpoint.ticket.replay_from.segment));
        let start = LogStart {
            next_lsn: outcome.next_lsn,
            cursor: LogPosition { segment: cursor_segment, offset: 0 },
            segments: segments.clone(),
            checkpoints: checkpoints.iter().map(|checkpoint| checkpoint.ticket).collect(),
        };
        let core = LogCore::new(config, meta.salt, start, Box::new(|bytes| vec![0u8; bytes]));
        let log = SimLog {
            disk,
            core,
            generation: meta.generation,
            now_ms: 0,
            write_in_flight: None,
            sync_in_flight: None,
            sync_covers: 0,
            prepare_in_flight: None,
            verified: Verified { end: outcome.end, next_lsn: outcome.next_lsn },
            recovered_segments: segments.into_iter().collect(),
            write_ends: BTreeMap::new(),
            recycled: Vec::new(),
        };
        let recovered = Recovered { records, checkpoint: newest, outcome, generation: meta.generation, repaired };
        Ok((log, recovered))
    }

    pub fn append(&mut self, kind: RecordKind, vshard: VShard, payload: &[u8]) -> Result<Appended, AppendError> {
        self.core.append(kind, vshard, payload)
    }

    /// Appends records that become durable together; `positions` sees each one.
    pub fn append_all(
        &mut self,
        records: &[(RecordKind, VShard, &[u8])],
        positions: impl FnMut(Appended),
    ) -> Result<Lsn, AppendError> {
        self.core.append_all(records, positions)
    }

    /// Hands out whatever I/O the core wants, then completes one in-flight request, chosen at
    /// random (a write, a sync and a prepare may be in flight together). False when there was
    /// nothing to do.
    pub fn step(&mut self, rng: &mut SimRng) -> bool {
        if self.write_in_flight.is_none() {
            self.write_in_flight = self.core.next_write(self.now_ms);
        }
        if self.sync_in_flight.is_none() {
            self.sync_in_flight = self.core.next_sync(self.now_ms);
            if let Some(IoRequest::Sync { segment }) = &self.sync_in_flight {
                self.sync_covers = self.disk.volatile_writes(&segment_file_name(*segment));
            }
        }
        if self.prepare_in_flight.is_none() {
            self.prepare_in_flight = self.core.next_prepare(self.now_ms);
        }
        let mut slots: Vec<&mut Option<IoRequest<Vec<u8>>>> =
            [&mut self.write_in_flight, &mut self.sync_in_flight, &mut self.prepare_in_flight]
                .into_iter()
                .filter(|slot| slot.is_some())
                .collect();
        if slots.is_empty() {
            return false;
        }
        let chosen = rng.below(slots.len() as u64) as usize;
        let request = slots[chosen].take().expect("the chosen slot holds a request");
        let completion = self.perform(request);
        self.core.complete(completion, self.now_ms);
        self.check_durable();
        true
    }

    /// Steps until `done` holds. In interval mode, jumps the clock to the next sync deadline
    /// when there is nothing else to do.
    pub fn settle_until(
        &mut self,
        rng: &mut SimRng,
        mut done: impl FnMut(&LogCore<Vec<u8>>) -> bool,
    ) -> Result<(), SimError> {
        for _ in 0..SETTLE_STEPS_MAX {
            if done(&self.core) {
                return Ok(());
            }
            if let Some(failure) = self.core.failure() {
                return Err(SimError::Failed(failure.clone()));
            }
            if self.step(rng) {
                continue;
            }
            match self.core.next_deadline_ms() {
                Some(deadline) if deadline > self.now_ms => self.now_ms = deadline,
                _ => return Err(SimError::Stalled),
            }
        }
        Err(SimError::Stalled)
    }

    /// Steps until every appended record is durable and nothing is in flight.
    pub fn settle(&mut self, rng: &mut SimRng) -> Result<(), SimError> {
        self.settle_until(rng, |core| core.is_quiet())?;
        // A prepare may still be in flight; finish it so the disk is at rest.
        while self.prepare_in_flight.is_some() || self.write_in_flight.is_some() || self.sync_in_flight.is_some() {
            self.step(rng);
        }
        Ok(())
    }

    /// Writes a checkpoint of `state`, which must be the state after every record appended so
    /// far: takes the ticket, waits until it is durable, writes the file durably, and deletes
    /// the files of checkpoints no longer retained.
    pub fn checkpoint(&mut self, state: &[u8], rng: &mut SimRng) -> Result<CheckpointTicket, SimError> {
        let ticket = self.core.checkpoint_ticket();
        self.settle_until(rng, |core| core.durable_lsn() >= ticket.lsn)?;
        let bytes = checkpoint::encode(ticket, state, self.core.salt());
        self.disk.write_file_durable(&checkpoint::file_name(ticket.lsn), &bytes);
        // As the real driver does, delete every dropped checkpoint's file: if the core ever
        // dropped a ticket whose file a retained one still names, recovery would show it.
        for old in self.core.checkpoint_written(ticket) {
            self.disk.delete(&checkpoint::file_name(old.lsn));
        }
        Ok(ticket)
    }

    /// The host will not read segments below `segment` again.
    pub fn release_before(&mut self, segment: SegmentId) {
        self.core.release_before(segment);
    }

    /// Reads a record back from the disk, verifying its checksum.
    pub fn read(&self, position: RecordPosition) -> Result<OwnedRecord, ReadError> {
        if !self.core.is_readable(position) {
            return Err(ReadError::NotReadable(position));
        }
        let bytes = self
            .disk
            .read(&segment_file_name(position.segment), u64::from(position.offset), position.bytes as usize)
            .map_err(ReadError::Io)?;
        let seed = segment_seed(self.core.salt(), position.segment);
        let corrupt = |error| ReadError::Corrupt { position, error };
        let (record, span) = decode_record(&bytes, seed).map_err(corrupt)?;
        if span != position.bytes as usize {
            return Err(corrupt(FormatError::RecordMismatch));
        }
        Ok(OwnedRecord::new(position, record))
    }

    /// Power loss: requests in flight may or may not have reached the disk, then every
    /// unsynced write survives, is lost or is torn. Returns the disk to reopen.
    pub fn crash(self, rng: &mut SimRng) -> SimDisk {
        self.crash_with(CrashMode::Random, rng)
    }

    /// Power loss where unsynced writes meet the fate `mode` says (in-flight requests too).
    pub fn crash_with(mut self, mode: CrashMode, rng: &mut SimRng) -> SimDisk {
        self.finish_in_flight(mode, rng);
        self.disk.crash_with(mode, rng);
        self.disk
    }

    /// The process dies but the machine does not: in-flight requests may or may not complete,
    /// and everything written stays in the page cache.
    pub fn kill(mut self, rng: &mut SimRng) -> SimDisk {
        self.finish_in_flight(CrashMode::Random, rng);
        self.disk
    }

    pub fn advance_time(&mut self, milliseconds: u64) {
        self.now_ms += milliseconds;
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    pub fn next_lsn(&self) -> Lsn {
        self.core.next_lsn()
    }

    pub fn acked_lsn(&self) -> Lsn {
        self.core.acked_lsn()
    }

    pub fn durable_lsn(&self) -> Lsn {
        self.core.durable_lsn()
    }

    pub fn written_lsn(&self) -> Lsn {
        self.core.written_lsn()
    }

    pub fn failure(&self) -> Option<&IoFailure> {
        self.core.failure()
    }

    pub fn is_disk_full(&self) -> bool {
        self.core.is_disk_full()
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn core(&self) -> &LogCore<Vec<u8>> {
        &self.core
    }

    pub fn disk(&self) -> &SimDisk {
        &self.disk
    }

    pub fn disk_mut(&mut self) -> &mut SimDisk {
        &mut self.disk
    }

    /// Every prepare that recycled a segment so far, as (new segment, old segment).
    pub fn recycled(&self) -> &[(SegmentId, SegmentId)] {
        &self.recycled
    }

    /// Performs a request against the disk and says how it went.
    fn perform(&mut self, request: IoRequest<Vec<u8>>) -> IoCompletion<Vec<u8>> {
        match request {
            IoRequest::Write { segment, offset, buffer, bytes } => {
                assert!(
                    offset % BLOCK_BYTES as u64 == 0 && bytes % BLOCK_BYTES == 0,
                    "O_DIRECT writes are block aligned"
                );
                assert!(
                    !self.recovered_segments.contains(&segment),
                    "write into {segment}, which holds recovered data: new batches must go to fresh segments"
                );
                let end = self.write_ends.entry(segment).or_insert(0);
                assert!(offset >= *end, "write at {segment}:{offset} goes over a block written before (up to {end})");
                *end = offset + bytes as u64;
                let result = self.disk.write(&segment_file_name(segment), offset, &buffer[..bytes]);
                IoCompletion::Written { buffer: Some(buffer), result }
            }
            IoRequest::Sync { segment } => {
                IoCompletion::Synced { result: self.disk.sync_writes(&segment_file_name(segment), self.sync_covers) }
            }
            IoRequest::Prepare { segment, reuse } => {
                let old = reuse.map(segment_file_name);
                let result =
                    self.disk.prepare(&segment_file_name(segment), self.core.config().segment_bytes, old.as_deref());
                if let (Ok(()), Some(old)) = (&result, reuse) {
                    self.recycled.push((segment, old));
                    self.write_ends.remove(&old);
                }
                IoCompletion::Prepared { segment, result }
            }
        }
    }

    /// Resolves in-flight requests at a crash: each reached the disk or not.
    fn finish_in_flight(&mut self, mode: CrashMode, rng: &mut SimRng) {
        let requests = [self.write_in_flight.take(), self.sync_in_flight.take(), self.prepare_in_flight.take()];
        for request in requests.into_iter().flatten() {
            let reached_disk = match (mode, &request) {
                (CrashMode::LoseAll, _) => false,
                (CrashMode::KeepAll, _) | (CrashMode::KeepFirstBlock, IoRequest::Write { .. }) => true,
                (CrashMode::KeepFirstBlock, _) => false,
                (CrashMode::Random, _) => rng.chance(1, 2),
            };
            if reached_disk {
                // The process is gone; nobody sees how the request ended.
                let _ = self.perform(request);
            }
        }
    }

    /// The invariant of the whole log: nothing is reported durable, nor in sync mode
    /// acknowledged, before its bytes are durable. Scans the durable-only view of the disk from
    /// the last verified point and requires it to reach both watermarks.
    fn check_durable(&mut self) {
        let durable = match self.core.config().durability {
            Durability::Sync => self.core.durable_lsn().max(self.core.acked_lsn()),
            Durability::Interval { .. } => self.core.durable_lsn(),
            Durability::None => return,
        };
        if durable < self.verified.next_lsn {
            return;
        }
        let segments = list_segments(&self.disk);
        let images: Vec<SegmentImage<'_>> = segments
            .iter()
            .map(|&segment| SegmentImage {
                segment,
                bytes: self.disk.durable_bytes(&segment_file_name(segment)).unwrap_or(&[]),
            })
            .collect();
        let from = ReplayFrom { position: self.verified.end, after_lsn: Lsn(self.verified.next_lsn.0 - 1) };
        let outcome = scan(self.core.salt(), &images, from, |_, _| {})
            .unwrap_or_else(|corruption| panic!("the durable bytes of the log do not verify: {corruption}"));
        assert!(
            outcome.next_lsn > durable,
            "LSN {durable} counts as durable (durability {:?}) but the durable bytes end before LSN {}",
            self.core.config().durability,
            outcome.next_lsn
        );
        self.verified = Verified { end: outcome.end, next_lsn: outcome.next_lsn };
    }
}

/// Segment files on the disk, in order.
fn list_segments(disk: &SimDisk) -> Vec<SegmentId> {
    let mut segments: Vec<SegmentId> =
        disk.file_names().iter().filter_map(|name| parse_segment_file_name(name)).collect();
    segments.sort();
    segments
}

/// Checkpoints that verify, oldest first. Damaged ones are skipped: an older checkpoint still
/// covers the log, because its segments are kept until it is dropped.
fn load_checkpoints(disk: &SimDisk, salt: u64) -> Vec<RecoveredCheckpoint> {
    let mut found = Vec::new();
    for name in disk.file_names() {
        let Some(lsn) = checkpoint::parse_file_name(&name) else { continue };
        let Some(bytes) = disk.current_bytes(&name) else { continue };
        if let Ok((ticket, state)) = checkpoint::decode(&bytes, salt) {
            if ticket.lsn == lsn {
                found.push(RecoveredCheckpoint { ticket, state: state.to_vec() });
            }
        }
    }
    found.sort_by_key(|checkpoint| checkpoint.ticket.lsn);
    found
}

/// Repair: zero the corrupt segment from the bad batch on and delete the later segments.
fn truncate_at(disk: &mut SimDisk, segments: &[SegmentId], corruption: &Corruption) -> Result<(), IoFailure> {
    let name = segment_file_name(corruption.segment);
    let length = disk.current_bytes(&name).map_or(0, |bytes| bytes.len() as u64);
    if corruption.offset < length {
        let zeroes = vec![0u8; (length - corruption.offset) as usize];
        disk.write_durable(&name, corruption.offset, &zeroes)?;
    }
    for &later in segments.iter().filter(|&&segment| segment > corruption.segment) {
        disk.delete(&segment_file_name(later));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::disk::OpKind;

    fn config() -> LogConfig {
        LogConfig { segment_bytes: 1 << 20, batch_bytes_max: 16 << 10, ..LogConfig::default() }
    }

    /// Proves a record appended, synced and recovered reads back identical, from the live log
    /// and after a crash.
    #[test]
    fn append_settle_crash_recover() {
        let mut rng = SimRng::new(3);
        let (mut log, recovered) = SimLog::open(SimDisk::new(3), config(), false).expect("a new disk opens");
        assert!(recovered.records.is_empty());
        let appended = log.append(RecordKind(1), VShard::of(5), b"hello").expect("append");
        log.settle(&mut rng).expect("settle");
        assert_eq!(log.acked_lsn(), appended.lsn);
        assert_eq!(log.read(appended.position).expect("readable").payload, b"hello");
        let disk = log.crash(&mut rng);
        let (_, recovered) = SimLog::open(disk, config(), false).expect("reopens");
        assert_eq!(recovered.records.len(), 1);
        assert_eq!(recovered.records[0].payload, b"hello");
        assert_eq!(recovered.records[0].position, appended.position);
    }

    /// Proves sync mode keeps acknowledging while appends never pause, whether they trickle
    /// (one record per step) or saturate the disk (more than a full batch per step): every write
    /// is followed by its fsync, instead of the writer chaining writes and starving the fsync
    /// until the segment rolls (a regression test for `LogCore::next_write`).
    #[test]
    fn sync_mode_acknowledges_under_continuous_load() {
        for (records_per_step, payload_bytes) in [(1, 100), (20, 1000)] {
            let mut rng = SimRng::new(4);
            let (mut log, _) = SimLog::open(SimDisk::new(4), config(), false).expect("a new disk opens");
            let mut acknowledgements = 0;
            let mut acked = log.acked_lsn();
            for _ in 0..400 {
                for _ in 0..records_per_step {
                    match log.append(RecordKind(1), VShard::of(1), &vec![1u8; payload_bytes]) {
                        Ok(_) | Err(AppendError::Backpressure) => {}
                        Err(error) => panic!("append failed: {error}"),
                    }
                }
                log.step(&mut rng);
                if log.acked_lsn() > acked {
                    acked = log.acked_lsn();
                    acknowledgements += 1;
                }
            }
            assert!(
                acknowledgements >= 100,
                "{records_per_step} records of {payload_bytes} bytes per step: only {acknowledgements} \
                 acknowledgements in 400 steps (acked {acked} of {})",
                log.next_lsn()
            );
        }
    }

    /// Proves the simulator's own durability check fires when a disk acknowledges an fsync it
    /// did not perform, so the check in every other test is live.
    #[test]
    #[should_panic(expected = "counts as durable")]
    fn lying_fsync_is_caught() {
        let mut rng = SimRng::new(5);
        let (mut log, _) = SimLog::open(SimDisk::new(5), config(), false).expect("a new disk opens");
        log.disk_mut().lie_on_nth_sync(1);
        log.append(RecordKind(1), VShard::of(1), b"never persisted").expect("append");
        let _ = log.settle(&mut rng);
    }

    /// Proves a failed prepare that is not about space stops the log.
    #[test]
    fn failed_prepare_stops_the_log() {
        let mut rng = SimRng::new(6);
        let mut disk = SimDisk::new(6);
        disk.fail_nth_op(1, OpKind::Prepare);
        let (mut log, _) = SimLog::open(disk, config(), false).expect("a new disk opens");
        log.append(RecordKind(1), VShard::of(1), b"x").expect("append before the failure is known");
        assert!(matches!(log.settle(&mut rng), Err(SimError::Failed(_))));
        assert!(matches!(log.append(RecordKind(1), VShard::of(1), b"y"), Err(AppendError::Failed(_))));
    }
}
