//! The write-ahead log of one shard as a sans-I/O state machine.
//!
//! `LogCore` decides everything (LSNs, where each batch goes, when to write, when to
//! `fdatasync`, when a segment must be prepared, what is durable) and performs nothing. A
//! driver asks it for the next [`IoRequest`], performs it, and hands back the
//! [`IoCompletion`]. The glommio driver (`wal::driver`) does this with `DmaFile`s; the
//! simulator (`sim`) does it against an in-memory disk that loses unsynced writes.
//!
//! Group commit falls out of the shape: at most one write and one sync are in flight, and
//! records appended meanwhile gather in the open batch. A write may go out while the previous
//! batch's sync is still in flight (a sync covers the writes completed before it was issued),
//! so a slow `fdatasync` does not stop the log from writing, only from acknowledging.
//!
//! Ordering rules that recovery relies on (see `wal::recovery`):
//! - batches are written in LSN order, each on fresh blocks, never rewriting a written block;
//! - a segment is synced before the first write to the next one, so unsynced data, and with it
//!   any hole a crash can leave, only ever lies in the newest segment written;
//! - every batch carries the durable watermark at the time it was sealed.

use std::collections::{BTreeSet, VecDeque};

use crate::config::{Durability, LogConfig, CHECKPOINTS_RETAINED, PREPARE_RETRY_MS};
use crate::ids::{Lsn, RecordKind, SegmentId, VShard};
use crate::wal::format::{
    self, align_up, batch_span, encode_record, record_span, segment_seed, BatchHeader, BATCH_HEADER_BYTES, BLOCK_BYTES,
};

/// A buffer the driver can write to disk. The glommio driver uses `DmaBuffer`s, the simulator
/// plain vectors. Buffers always have `batch_bytes_max` bytes.
pub trait IoBuffer: 'static {
    fn bytes(&self) -> &[u8];
    fn bytes_mut(&mut self) -> &mut [u8];
}

impl IoBuffer for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self
    }
}

/// Where a record lives: its segment, the offset of its header in that segment, and its span
/// (header, payload and padding). Enough to read it back with one aligned read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RecordPosition {
    pub segment: SegmentId,
    pub offset: u32,
    pub bytes: u32,
}

/// A record copied out of the log, with where it lies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedRecord {
    pub lsn: Lsn,
    pub kind: RecordKind,
    pub vshard: VShard,
    pub payload: Vec<u8>,
    pub position: RecordPosition,
}

impl OwnedRecord {
    pub fn new(position: RecordPosition, record: format::Record<'_>) -> OwnedRecord {
        OwnedRecord {
            lsn: record.lsn,
            kind: record.kind,
            vshard: record.vshard,
            payload: record.payload.to_vec(),
            position,
        }
    }
}

/// A position in the log at batch granularity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPosition {
    pub segment: SegmentId,
    pub offset: u64,
}

/// What `append` returns: the record's LSN and position. It is not durable yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    pub lsn: Lsn,
    pub position: RecordPosition,
}

/// A promise that the state of the log up to `lsn` is captured; replay resumes at
/// `replay_from`, skipping records at or below `lsn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointTicket {
    pub lsn: Lsn,
    pub replay_from: LogPosition,
}

/// I/O the core wants performed.
#[derive(Debug)]
pub enum IoRequest<B> {
    /// Write `buffer[..bytes]` at `offset` of the segment's file (O_DIRECT, block aligned).
    Write { segment: SegmentId, offset: u64, buffer: B, bytes: usize },
    /// `fdatasync` the segment's file.
    Sync { segment: SegmentId },
    /// Make the segment's file exist at full size, durably (file and directory entry): either
    /// rename the old segment `reuse` to it, or create it preallocated and pre-written.
    Prepare { segment: SegmentId, reuse: Option<SegmentId> },
}

/// The outcome of an [`IoRequest`].
#[derive(Debug)]
pub enum IoCompletion<B> {
    /// `buffer` comes back for reuse unless the driver's write consumed it.
    Written {
        buffer: Option<B>,
        result: Result<(), IoFailure>,
    },
    Synced {
        result: Result<(), IoFailure>,
    },
    Prepared {
        segment: SegmentId,
        result: Result<(), IoFailure>,
    },
}

/// A failed I/O operation, as the core needs to know it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IoFailure {
    #[error("no space left on device")]
    NoSpace,
    #[error("{0}")]
    Other(String),
}

impl IoFailure {
    pub fn from_io(error: &std::io::Error) -> IoFailure {
        if error.raw_os_error() == Some(libc::ENOSPC) {
            IoFailure::NoSpace
        } else {
            IoFailure::Other(error.to_string())
        }
    }
}

/// Why an append was refused. Nothing was appended.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// A write or fsync failed earlier: the log is stopped until reopened.
    #[error("the log stopped after an I/O error: {0}")]
    Failed(IoFailure),
    /// No space for a new segment. Reads keep working; writes resume when space returns.
    #[error("disk full: the log cannot prepare a new segment")]
    DiskFull,
    /// Too many batches are waiting for the disk; retry once some are written.
    #[error("too many batches are waiting for the disk")]
    Backpressure,
    #[error("record of {bytes} bytes exceeds the limit of {limit} bytes")]
    RecordTooLarge { bytes: usize, limit: usize },
}

/// Where a recovered log ends and what is on disk; the input of [`LogCore::new`].
#[derive(Clone, Debug)]
pub struct LogStart {
    pub next_lsn: Lsn,
    /// Where the first new batch goes: always a segment that was never written, so nothing a
    /// crash left in the old tail can ever be mistaken for a new record.
    pub cursor: LogPosition,
    /// Segment files on disk, in order.
    pub segments: Vec<SegmentId>,
    /// Checkpoints on disk, oldest first.
    pub checkpoints: Vec<CheckpointTicket>,
}

impl LogStart {
    /// An empty log.
    pub fn empty() -> LogStart {
        LogStart {
            next_lsn: Lsn::FIRST,
            cursor: LogPosition { segment: SegmentId(1), offset: 0 },
            segments: Vec::new(),
            checkpoints: Vec::new(),
        }
    }
}

#[derive(Debug)]
struct OpenBatch<B> {
    start: LogPosition,
    buffer: B,
    seed: u64,
    first_lsn: Lsn,
    records: u32,
    body_bytes: usize,
}

#[derive(Debug)]
struct SealedBatch<B> {
    start: LogPosition,
    buffer: B,
    bytes: usize,
    /// Encoded into the buffer when the write is issued, with the durable watermark of that
    /// moment: the later the stamp, the more a valid batch proves about the ones before it.
    header: BatchHeader,
    seed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct WriteInFlight {
    segment: SegmentId,
    last_lsn: Lsn,
    end: LogPosition,
}

/// Milliseconds from any fixed origin; time enters the core only as an input.
pub type NowMs = u64;

/// The sans-I/O log. See the module documentation.
pub struct LogCore<B> {
    config: LogConfig,
    salt: u64,
    next_lsn: Lsn,
    written_lsn: Lsn,
    durable_lsn: Lsn,
    /// End of the last completed write: records before it can be read back from disk.
    written_end: LogPosition,
    cursor: LogPosition,
    open: Option<OpenBatch<B>>,
    sealed: VecDeque<SealedBatch<B>>,
    writing: Option<WriteInFlight>,
    /// The segment being synced and the last LSN the sync covers.
    syncing: Option<(SegmentId, Lsn)>,
    /// The segment with completed writes no sync has been issued for, and the last LSN written
    /// to it.
    unsynced: Option<(SegmentId, Lsn)>,
    last_sync_ms: NowMs,
    /// Set by `sync_soon`: the next sync is due whatever the durability mode's schedule.
    sync_wanted: bool,
    /// Segment files that exist and may be written.
    segments: BTreeSet<SegmentId>,
    next_new_segment: SegmentId,
    preparing: Option<(SegmentId, Option<SegmentId>)>,
    recyclable: VecDeque<SegmentId>,
    checkpoints: VecDeque<CheckpointTicket>,
    /// The host no longer reads segments below this one.
    released_before: SegmentId,
    free_buffers: Vec<B>,
    allocate: Box<dyn FnMut(usize) -> B>,
    failure: Option<IoFailure>,
    disk_full: bool,
    prepare_retry_at_ms: NowMs,
}

impl<B> std::fmt::Debug for LogCore<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogCore")
            .field("next_lsn", &self.next_lsn)
            .field("written_lsn", &self.written_lsn)
            .field("durable_lsn", &self.durable_lsn)
            .field("cursor", &self.cursor)
            .field("writing", &self.writing)
            .field("syncing", &self.syncing)
            .field("failure", &self.failure)
            .field("disk_full", &self.disk_full)
            .finish_non_exhaustive()
    }
}

impl<B: IoBuffer> LogCore<B> {
    /// A log continuing after `start`. `allocate(n)` makes a buffer of `n` bytes suitable for
    /// the driver's writes; the core reuses them.
    pub fn new(config: LogConfig, salt: u64, start: LogStart, allocate: Box<dyn FnMut(usize) -> B>) -> LogCore<B> {
        if let Err(reason) = config.validate() {
            panic!("invalid log configuration: {reason}");
        }
        let highest = start.segments.iter().max().copied().unwrap_or(SegmentId(0));
        assert!(start.cursor.segment > highest || start.segments.is_empty(), "the cursor must be a fresh segment");
        let durable = Lsn(start.next_lsn.0 - 1);
        LogCore {
            salt,
            next_lsn: start.next_lsn,
            written_lsn: durable,
            durable_lsn: durable,
            written_end: start.cursor,
            cursor: start.cursor,
            open: None,
            sealed: VecDeque::new(),
            writing: None,
            syncing: None,
            unsynced: None,
            last_sync_ms: 0,
            sync_wanted: false,
            segments: start.segments.iter().copied().collect(),
            next_new_segment: start.cursor.segment,
            preparing: None,
            recyclable: VecDeque::new(),
            checkpoints: start.checkpoints.into_iter().collect(),
            released_before: SegmentId(0),
            free_buffers: Vec::new(),
            allocate,
            failure: None,
            disk_full: false,
            prepare_retry_at_ms: 0,
            config,
        }
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn salt(&self) -> u64 {
        self.salt
    }

    /// The LSN the next append gets.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Every record up to here has been written and `fdatasync`ed (in `none` mode: written).
    pub fn durable_lsn(&self) -> Lsn {
        self.durable_lsn
    }

    /// Every record up to here has been written to the device (maybe not synced).
    pub fn written_lsn(&self) -> Lsn {
        self.written_lsn
    }

    /// Records up to here may be acknowledged to their writers under the durability mode.
    pub fn acked_lsn(&self) -> Lsn {
        match self.config.durability {
            Durability::Sync => self.durable_lsn,
            Durability::Interval { .. } | Durability::None => self.written_lsn,
        }
    }

    pub fn failure(&self) -> Option<&IoFailure> {
        self.failure.as_ref()
    }

    pub fn is_disk_full(&self) -> bool {
        self.disk_full
    }

    /// Whether the record at `position` has been written and can be read back from disk.
    pub fn is_readable(&self, position: RecordPosition) -> bool {
        let offset = position.offset as u64;
        let bytes = position.bytes as u64;
        // Positions may come from outside (a host's index); only shapes the log writes pass.
        let well_formed = offset.is_multiple_of(format::RECORD_ALIGN as u64)
            && bytes >= format::RECORD_HEADER_BYTES as u64
            && bytes <= (self.config.batch_bytes_max - BATCH_HEADER_BYTES) as u64
            && offset + bytes <= self.config.segment_bytes;
        let end = LogPosition { segment: position.segment, offset: offset + bytes };
        well_formed
            && position.segment >= self.released_before
            && self.segments.contains(&position.segment)
            && end <= self.written_end
    }

    /// True while a write or sync is in flight.
    pub fn is_disk_busy(&self) -> bool {
        self.writing.is_some() || self.syncing.is_some()
    }

    /// True when nothing is appended that is not yet durable.
    pub fn is_quiet(&self) -> bool {
        self.durable_lsn.next() == self.next_lsn && !self.is_disk_busy()
    }

    /// Appends one record. It becomes durable when `durable_lsn()` reaches its LSN.
    pub fn append(&mut self, kind: RecordKind, vshard: VShard, payload: &[u8]) -> Result<Appended, AppendError> {
        let span = self.admit(std::iter::once(payload.len()))?;
        Ok(self.push(kind, vshard, payload, span))
    }

    /// Appends several records of one request; they go into the same batch, so they become
    /// durable together. Returns the first record's LSN; the others follow densely.
    pub fn append_all(
        &mut self,
        records: &[(RecordKind, VShard, &[u8])],
        mut positions: impl FnMut(Appended),
    ) -> Result<Lsn, AppendError> {
        let span = self.admit(records.iter().map(|(_, _, payload)| payload.len()))?;
        let first = self.next_lsn;
        for (kind, vshard, payload) in records {
            let appended = self.push(*kind, *vshard, payload, record_span(payload.len()));
            positions(appended);
        }
        debug_assert_eq!(records.iter().map(|(_, _, p)| record_span(p.len())).sum::<usize>(), span);
        Ok(first)
    }

    /// Checks that records of these payload sizes can be appended together, and makes room
    /// for them in an open batch. Returns their total span.
    fn admit(&mut self, payload_sizes: impl Iterator<Item = usize>) -> Result<usize, AppendError> {
        if let Some(failure) = &self.failure {
            return Err(AppendError::Failed(failure.clone()));
        }
        let mut span = 0;
        let mut count = 0u32;
        for size in payload_sizes {
            span += record_span(size);
            count += 1;
        }
        let limit = self.config.batch_bytes_max - BATCH_HEADER_BYTES;
        if span > limit || count > self.config.batch_records_max {
            return Err(AppendError::RecordTooLarge { bytes: span, limit });
        }
        if let Some(open) = &self.open {
            let body = open.body_bytes + span;
            let fits = BATCH_HEADER_BYTES + body <= self.config.batch_bytes_max
                && open.records + count <= self.config.batch_records_max
                && open.start.offset + batch_span(body) as u64 <= self.config.segment_bytes;
            if fits {
                return Ok(span);
            }
            self.seal_open();
        }
        if self.sealed.len() >= self.config.pending_batches_max {
            return Err(AppendError::Backpressure);
        }
        let mut start = self.cursor;
        if start.offset + batch_span(span) as u64 > self.config.segment_bytes {
            start = LogPosition { segment: start.segment.next(), offset: 0 };
        }
        if self.disk_full && !self.segments.contains(&start.segment) {
            return Err(AppendError::DiskFull);
        }
        self.cursor = start;
        let buffer = match self.free_buffers.pop() {
            Some(buffer) => buffer,
            None => (self.allocate)(self.config.batch_bytes_max),
        };
        assert_eq!(buffer.bytes().len(), self.config.batch_bytes_max, "driver returned a buffer of the wrong size");
        self.open = Some(OpenBatch {
            start,
            buffer,
            seed: segment_seed(self.salt, start.segment),
            first_lsn: self.next_lsn,
            records: 0,
            body_bytes: 0,
        });
        Ok(span)
    }

    fn push(&mut self, kind: RecordKind, vshard: VShard, payload: &[u8], span: usize) -> Appended {
        let open = self.open.as_mut().expect("admit opened a batch");
        let at = BATCH_HEADER_BYTES + open.body_bytes;
        let lsn = self.next_lsn;
        let used = encode_record(&mut open.buffer.bytes_mut()[at..], open.seed, kind, vshard, lsn, payload);
        debug_assert_eq!(used, span);
        open.body_bytes += used;
        open.records += 1;
        self.next_lsn = lsn.next();
        let offset = open.start.offset + at as u64;
        Appended {
            lsn,
            position: RecordPosition { segment: open.start.segment, offset: offset as u32, bytes: used as u32 },
        }
    }

    /// Closes the open batch: header, checksums, padding. It then waits in `sealed`.
    fn seal_open(&mut self) {
        let Some(mut open) = self.open.take() else { return };
        if open.records == 0 {
            self.free_buffers.push(open.buffer);
            return;
        }
        let body_end = BATCH_HEADER_BYTES + open.body_bytes;
        let bytes = batch_span(open.body_bytes);
        let buffer = open.buffer.bytes_mut();
        buffer[body_end..bytes].fill(0);
        let header = BatchHeader {
            record_count: open.records,
            body_bytes: open.body_bytes as u32,
            segment: open.start.segment,
            first_lsn: open.first_lsn,
            body_checksum: format::body_checksum(open.seed, &buffer[BATCH_HEADER_BYTES..body_end]),
            durable_lsn: self.durable_lsn,
        };
        assert_eq!(header.last_lsn().next(), self.next_lsn, "sealed batch must end at the newest LSN");
        let end = open.start.offset + bytes as u64;
        assert!(end <= self.config.segment_bytes, "batch overruns its segment");
        self.cursor = LogPosition { segment: open.start.segment, offset: end };
        self.sealed.push_back(SealedBatch { start: open.start, buffer: open.buffer, bytes, header, seed: open.seed });
    }

    /// The next batch to write, if no write is in flight and there is one. Call again after
    /// every completion and every append.
    pub fn next_write(&mut self, _now_ms: NowMs) -> Option<IoRequest<B>> {
        if self.failure.is_some() || self.writing.is_some() {
            return None;
        }
        if self.sealed.is_empty() {
            self.seal_open();
        }
        let front = self.sealed.front()?;
        if !self.segments.contains(&front.start.segment) {
            return None; // waiting for `Prepare`
        }
        // A segment is synced before the first write to the next, so that a crash can leave a
        // hole only in the newest segment written.
        let behind = [self.unsynced, self.syncing].into_iter().flatten();
        if behind.map(|(segment, _)| segment).any(|segment| segment != front.start.segment) {
            return None; // waiting for the sync of the previous segment
        }
        let mut batch = self.sealed.pop_front().expect("front exists");
        batch.header.durable_lsn = self.durable_lsn;
        batch.header.encode(batch.seed, batch.buffer.bytes_mut());
        let end = LogPosition { segment: batch.start.segment, offset: batch.start.offset + batch.bytes as u64 };
        self.writing = Some(WriteInFlight { segment: batch.start.segment, last_lsn: batch.header.last_lsn(), end });
        Some(IoRequest::Write {
            segment: batch.start.segment,
            offset: batch.start.offset,
            buffer: batch.buffer,
            bytes: batch.bytes,
        })
    }

    /// The next `fdatasync` to perform, if no sync is in flight and the durability mode wants
    /// one now. It covers every write completed so far. Call again after every completion.
    pub fn next_sync(&mut self, now_ms: NowMs) -> Option<IoRequest<B>> {
        if self.failure.is_some() || self.syncing.is_some() {
            return None;
        }
        let (segment, up_to) = self.unsynced?;
        let next_segment = match self.sealed.front() {
            Some(batch) => Some(batch.start.segment),
            None => self.open.as_ref().filter(|open| open.records > 0).map(|open| open.start.segment),
        };
        let leaving_segment = next_segment.is_some_and(|next| next != segment);
        let due = self.sync_wanted
            || match self.config.durability {
                Durability::Sync => true,
                Durability::Interval { interval_ms } => {
                    leaving_segment || now_ms >= self.last_sync_ms.saturating_add(interval_ms)
                }
                Durability::None => false,
            };
        if !due {
            return None;
        }
        self.syncing = Some((segment, up_to));
        self.unsynced = None;
        self.sync_wanted = false;
        Some(IoRequest::Sync { segment })
    }

    /// Makes the next sync due now, whatever the durability mode's schedule (a clean close
    /// waits for everything to be durable and must not wait for an interval, or forever in
    /// `none` mode).
    pub fn sync_soon(&mut self) {
        self.sync_wanted = true;
    }

    /// When the driver should call `next_sync` again even if nothing else happens (the
    /// interval sync), or `None`.
    pub fn next_deadline_ms(&self) -> Option<NowMs> {
        match (self.config.durability, self.unsynced) {
            (Durability::Interval { interval_ms }, Some(_)) => Some(self.last_sync_ms.saturating_add(interval_ms)),
            _ => None,
        }
    }

    /// The next segment to prepare, if one is wanted and none is being prepared. Runs
    /// concurrently with writes.
    pub fn next_prepare(&mut self, now_ms: NowMs) -> Option<IoRequest<B>> {
        if self.failure.is_some() || self.preparing.is_some() {
            return None;
        }
        let wanted_through = SegmentId(self.cursor.segment.0 + self.config.spare_segments as u64);
        if self.next_new_segment > wanted_through {
            return None;
        }
        if self.disk_full && self.recyclable.is_empty() && now_ms < self.prepare_retry_at_ms {
            return None;
        }
        let segment = self.next_new_segment;
        let reuse = self.recyclable.pop_front();
        self.next_new_segment = segment.next();
        self.preparing = Some((segment, reuse));
        Some(IoRequest::Prepare { segment, reuse })
    }

    /// Applies the outcome of an I/O request.
    pub fn complete(&mut self, completion: IoCompletion<B>, now_ms: NowMs) {
        match completion {
            IoCompletion::Written { buffer, result } => {
                let WriteInFlight { segment, last_lsn, end } =
                    self.writing.take().expect("write completion without a write in flight");
                self.free_buffers.extend(buffer);
                if let Err(failure) = result {
                    return self.fail(failure);
                }
                assert!(last_lsn > self.written_lsn, "LSNs must be written in order");
                self.written_lsn = last_lsn;
                self.written_end = end;
                if self.config.durability == Durability::None {
                    self.durable_lsn = last_lsn;
                } else {
                    assert!(
                        self.unsynced.is_none_or(|(unsynced, _)| unsynced == segment),
                        "writes to a new segment wait for the previous one's sync"
                    );
                    self.unsynced = Some((segment, last_lsn));
                }
            }
            IoCompletion::Synced { result } => {
                let (_, up_to) = self.syncing.take().expect("sync completion without a sync in flight");
                if let Err(failure) = result {
                    // Never retry an fsync (fsyncgate): what it failed to persist is unknown.
                    return self.fail(failure);
                }
                assert!(up_to >= self.durable_lsn, "durable watermark never goes back");
                self.durable_lsn = up_to;
                self.last_sync_ms = now_ms;
            }
            IoCompletion::Prepared { segment, result } => {
                let (expected, reuse) = self.preparing.take().expect("prepare completion without a prepare");
                assert_eq!(segment, expected);
                match result {
                    Ok(()) => {
                        self.segments.insert(segment);
                        if let Some(old) = reuse {
                            self.segments.remove(&old);
                        }
                        self.disk_full = false;
                    }
                    Err(IoFailure::NoSpace) => {
                        self.disk_full = true;
                        self.prepare_retry_at_ms = now_ms + PREPARE_RETRY_MS;
                        self.next_new_segment = segment;
                        if let Some(old) = reuse {
                            self.recyclable.push_front(old);
                        }
                    }
                    Err(failure) => self.fail(failure),
                }
            }
        }
    }

    fn fail(&mut self, failure: IoFailure) {
        if self.failure.is_none() {
            self.failure = Some(failure);
        }
    }

    /// The ticket for a checkpoint of the state as it is now (all appended records applied).
    /// Write the checkpoint only once `durable_lsn() >= ticket.lsn`, then call
    /// [`LogCore::checkpoint_written`].
    pub fn checkpoint_ticket(&self) -> CheckpointTicket {
        let replay_from = self.open.as_ref().map_or(self.cursor, |open| open.start);
        CheckpointTicket { lsn: Lsn(self.next_lsn.0 - 1), replay_from }
    }

    /// Records that the checkpoint is durable. Returns the checkpoints no longer retained, whose
    /// files the driver deletes.
    pub fn checkpoint_written(&mut self, ticket: CheckpointTicket) -> Vec<CheckpointTicket> {
        assert!(ticket.lsn <= self.durable_lsn, "a checkpoint may only capture durable records");
        if let Some(newest) = self.checkpoints.back_mut() {
            assert!(ticket.lsn >= newest.lsn, "checkpoints are written in order");
            if ticket.lsn == newest.lsn {
                // Same LSN, same file: the new checkpoint overwrote it. Retaining both tickets
                // would later drop one, and the driver would delete the file the other needs.
                *newest = ticket;
                self.collect_recyclable();
                return Vec::new();
            }
        }
        self.checkpoints.push_back(ticket);
        let mut dropped = Vec::new();
        while self.checkpoints.len() > CHECKPOINTS_RETAINED {
            dropped.extend(self.checkpoints.pop_front());
        }
        self.collect_recyclable();
        dropped
    }

    /// The host will not read records in segments below `segment` again. Such segments are
    /// reused once no retained checkpoint needs them either.
    pub fn release_before(&mut self, segment: SegmentId) {
        self.released_before = self.released_before.max(segment);
        self.collect_recyclable();
    }

    fn collect_recyclable(&mut self) {
        let Some(oldest) = self.checkpoints.front() else { return };
        let floor = oldest.replay_from.segment.min(self.released_before).min(self.cursor.segment);
        let old: Vec<SegmentId> = self.segments.range(..floor).copied().collect();
        for segment in old {
            assert!(
                self.sealed.iter().all(|batch| batch.start.segment != segment),
                "a segment waiting for writes is never recycled"
            );
            self.segments.remove(&segment);
            self.recyclable.push_back(segment);
        }
    }
}

/// Pads `bytes` to whole blocks; what a driver writes must be block aligned.
pub fn block_aligned(bytes: usize) -> usize {
    align_up(bytes, BLOCK_BYTES)
}
