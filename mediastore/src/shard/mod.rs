//! `MediaShard`: one shard's media store — upload sessions, the deduplicating chunk store,
//! reference counting and downloads — driving the sans-I/O pieces (`upload`, `chunker`,
//! `state`) over its segments (`SegmentIo`) and its `Journal`.
//!
//! Thread-per-core: one `MediaShard` per shard, owned by that shard's executor, no locks and
//! nothing shared. Every operation takes `&mut self`, so operations of one shard run one at a
//! time and each sees the state the previous one left; none is long (a part is at most
//! 512 KiB, `finish` only folds the tail, compaction moves a bounded number of bytes per
//! call), so a queue of them drains quickly. Downloads are the exception: a read is planned
//! under `&mut self` and its disk reads run without it (`read.rs`), so many ranges are read
//! at once, beside the operations that follow.
//!
//! Order of durability, which is what makes a crash harmless:
//! 1. a chunk's bytes are written to a segment and synced,
//! 2. then the record naming the chunk is appended and made durable,
//! 3. then the change is applied to the state readers see.
//!
//! So no reader sees a file whose records could be lost, and no record names bytes that could
//! be lost. What a crash can leave behind is only unreferenced bytes in segments (chunks of
//! unfinished uploads), which compaction reclaims.

use std::cell::{Cell, RefCell};
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::rc::Rc;

use crate::cache::ChunkCache;
use crate::config::MediaConfig;
use crate::error::{FinishError, OpenError, PutPartError, ReadError, ReferenceError, StartError, StorageError};
use crate::hash::ChunkHasher;
use crate::ids::{AccessHash, ChunkKey, ChunkLocation, FileId, Holder, TimestampMs, UploadId, UploaderId, VShard};
use crate::journal::{Journal, Recovery};
use crate::limits::*;
use crate::records::{FileMeta, ManifestChunk, MediaRecord, MediaSnapshot};
use crate::segment::{SegmentIo, SegmentStore};
use crate::state::{FileEntry, MediaState};
use crate::upload::{PartAccepted, Upload};

mod compaction;
mod read;

use read::ReadSlots;
pub use read::{PendingRead, ReadsInFlight};

/// What `start` needs.
#[derive(Clone, Debug)]
pub struct StartUpload {
    /// Who uploads (opaque: the gateway's user or session id).
    pub owner: UploaderId,
    /// The client's own id for this upload; a retried `start` with the same owner and id
    /// returns the same upload.
    pub client_upload_id: Option<u64>,
    /// The file size, when the client announces it; parts and `finish` are checked against it.
    pub total_bytes: Option<u64>,
    /// The vshard the finished file's id is allocated on.
    pub vshard: VShard,
}

/// What `finish` needs.
#[derive(Clone, Debug, Default)]
pub struct FinishUpload {
    /// How many parts the file has.
    pub parts: u32,
    /// The file size, when the client states it.
    pub total_bytes: Option<u64>,
    pub name: String,
    pub mime_type: String,
}

/// A finished file: what the uploader needs to reference or read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinishedFile {
    pub file: FileId,
    pub access_hash: AccessHash,
    pub size: u64,
    /// Keyed xxh3-128 of the whole content.
    pub content_hash: u128,
}

/// A file's description, for someone holding its access hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub file: FileId,
    pub size: u64,
    pub name: String,
    pub mime_type: String,
    pub content_hash: u128,
    pub chunks: usize,
    /// Message references: anonymous ones plus holders.
    pub references: u64,
    pub uploader_reference_held: bool,
}

/// What `maintain` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub uploads_expired: usize,
    pub uploader_references_expired: usize,
}

/// What `compact` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactionReport {
    pub segments_retired: usize,
    pub chunks_moved: usize,
    pub bytes_moved: u64,
    pub chunks_dropped: usize,
    pub bytes_reclaimed: u64,
}

/// What `sweep` found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Chunks whose refcount did not match the manifests, now set right.
    pub refcounts_repaired: usize,
    /// Chunks named by a manifest but absent from the index or from the segments: data loss
    /// the sweep cannot repair (never expected; reported so an operator hears of it).
    pub chunks_missing: usize,
    /// Segment bytes that hold nothing referenced, for compaction to reclaim.
    pub garbage_bytes: u64,
}

/// Storage statistics of one shard.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StorageStats {
    pub files: u64,
    /// Sum of the sizes of live files.
    pub logical_bytes: u64,
    /// Chunks referenced by a live file, and their payload bytes (each counted once).
    pub chunks: u64,
    pub stored_bytes: u64,
    /// Indexed chunks no file references, waiting for their grace period and compaction.
    pub chunks_unreferenced: u64,
    /// Bytes of segment files.
    pub physical_bytes: u64,
    /// Segment bytes that hold nothing referenced: unreferenced and orphaned chunks, padding.
    pub garbage_bytes: u64,
    /// `logical_bytes / stored_bytes` (1 when nothing is stored).
    pub dedup_ratio: f64,
    pub segments: u64,
    pub uploads: u64,
    pub staging_bytes: u64,
    pub cache_bytes: u64,
    /// Downloads reading from disk now, and the bytes they hold; and the most of each at
    /// once since the shard opened (each at its own moment).
    pub reads_in_flight: u64,
    pub read_bytes_in_flight: u64,
    pub reads_in_flight_peak: u64,
    pub read_bytes_in_flight_peak: u64,
}

/// One shard's media store (see the module documentation).
#[derive(Debug)]
pub struct MediaShard<S, J> {
    config: MediaConfig,
    hasher: ChunkHasher,
    state: MediaState,
    uploads: HashMap<UploadId, Upload>,
    uploads_by_client: HashMap<(UploaderId, u64), UploadId>,
    staging_bytes: u64,
    /// Chunks written for unfinished uploads, not yet named by any record.
    provisional: HashMap<ChunkKey, ChunkLocation>,
    /// How many unfinished uploads use each chunk; a pinned chunk is never dropped.
    pins: HashMap<ChunkKey, u32>,
    segments: SegmentStore<S>,
    /// Shared with the reads in flight, which fill it as they finish (`read.rs`).
    cache: Rc<RefCell<ChunkCache>>,
    journal: J,
    /// Set by the first storage error, also by one a read in flight meets.
    failed: Rc<Cell<bool>>,
    reads: Rc<ReadSlots>,
}

impl<S: SegmentIo, J: Journal> MediaShard<S, J> {
    /// Rebuilds a shard from its checkpoint and the journal records after it, over the
    /// segments `io` holds. Chunk lists of files that never finished are dropped, segments
    /// retired before the crash are deleted, and every indexed chunk is checked to lie inside
    /// an existing segment. Writing resumes in a new segment.
    pub async fn open(config: MediaConfig, mut io: S, journal: J, recovery: Recovery) -> Result<Self, OpenError> {
        config.validate()?;
        let mut state = match &recovery.snapshot {
            Some(snapshot) => MediaState::restore(snapshot).map_err(OpenError::Snapshot)?,
            None => MediaState::default(),
        };
        for (index, record) in recovery.records.iter().enumerate() {
            state.apply(record).map_err(|reason| OpenError::Replay { index, reason })?;
        }
        state.discard_pending();
        let existing = io.list().map_err(|source| StorageError::Io { context: "listing segments", source })?;
        let (retired, existing): (Vec<_>, Vec<_>) =
            existing.into_iter().partition(|(segment, _)| state.is_retired(*segment));
        for (segment, _) in retired {
            io.remove(segment)
                .await
                .map_err(|source| StorageError::Io { context: "removing a retired segment", source })?;
        }
        let segments = SegmentStore::new(io, config.segment_bytes_max, existing, state.highest_segment());
        for (key, entry) in state.chunks() {
            let end = entry.location.offset + entry.location.frame_bytes();
            if segments.sizes().get(&entry.location.segment).is_none_or(|&size| end > size) {
                return Err(StorageError::ChunkMissing { key: *key }.into());
            }
        }
        Ok(MediaShard {
            hasher: ChunkHasher::from_config(&config),
            cache: Rc::new(RefCell::new(ChunkCache::new(config.cache_bytes_max))),
            reads: ReadSlots::new(config.reads_in_flight_max, config.read_bytes_in_flight_max),
            config,
            state,
            uploads: HashMap::new(),
            uploads_by_client: HashMap::new(),
            staging_bytes: 0,
            provisional: HashMap::new(),
            pins: HashMap::new(),
            segments,
            journal,
            failed: Rc::new(Cell::new(false)),
        })
    }

    /// Opens an upload session (or returns the one a retried `start` opened).
    pub fn start(&mut self, request: StartUpload, now: TimestampMs) -> Result<UploadId, StartError> {
        self.check_failed()?;
        if let Some(total) = request.total_bytes {
            if total > self.config.file_bytes_max {
                return Err(StartError::TooLarge { bytes: total, max: self.config.file_bytes_max });
            }
        }
        if let Some(client_id) = request.client_upload_id {
            if let Some(&existing) = self.uploads_by_client.get(&(request.owner, client_id)) {
                return Ok(existing);
            }
        }
        if self.uploads.len() >= self.config.uploads_max {
            return Err(StartError::TooManyUploads { max: self.config.uploads_max });
        }
        let id = loop {
            let id = UploadId::from_raw(random_u64().map_err(StorageError::Entropy)?);
            if !self.uploads.contains_key(&id) {
                break id;
            }
        };
        let upload = Upload::new(
            id,
            request.owner,
            request.client_upload_id,
            request.vshard,
            request.total_bytes,
            self.hasher.whole_file(),
            now,
        );
        if let Some(client_id) = request.client_upload_id {
            self.uploads_by_client.insert((request.owner, client_id), id);
        }
        self.uploads.insert(id, upload);
        Ok(id)
    }

    /// Stores part `part` of an upload. Parts may come in any order; a retry with the same
    /// bytes answers `Duplicate`, one with different bytes `PartConflict`.
    pub async fn put_part(
        &mut self,
        upload: UploadId,
        part: u32,
        bytes: &[u8],
        now: TimestampMs,
    ) -> Result<PartAccepted, PutPartError> {
        self.check_failed()?;
        let mut session = self.uploads.remove(&upload).ok_or(PutPartError::UnknownUpload)?;
        let held_before = session.held_bytes();
        let result = self.put_part_into(&mut session, part, bytes, now).await;
        self.staging_bytes = self.staging_bytes - held_before + session.held_bytes();
        self.uploads.insert(upload, session);
        result
    }

    async fn put_part_into(
        &mut self,
        session: &mut Upload,
        part: u32,
        bytes: &[u8],
        now: TimestampMs,
    ) -> Result<PartAccepted, PutPartError> {
        let incoming = bytes.len() as u64;
        if !session.is_next(part) {
            let upload_full = session.held_bytes() + incoming > self.config.upload_staging_bytes_max;
            let shard_full = self.staging_bytes + incoming > self.config.staging_bytes_max;
            if upload_full || shard_full {
                let (held, max) = if upload_full {
                    (session.held_bytes(), self.config.upload_staging_bytes_max)
                } else {
                    (self.staging_bytes, self.config.staging_bytes_max)
                };
                return Err(PutPartError::StagingFull { held, max });
            }
        }
        let accepted = session.accept_part(part, bytes, self.config.file_bytes_max)?;
        session.last_activity = now;
        while let Some(folded) = session.take_foldable() {
            session.fold(&folded);
            self.place_ready_chunks(session, false).await?;
        }
        Ok(accepted)
    }

    /// Completes an upload: checks every part is there, chunks the rest of the file, syncs
    /// the new chunks, journals the manifest and waits for it to be durable. On a refusal the
    /// upload stays open, so the client can send what is missing and finish again.
    pub async fn finish(
        &mut self,
        upload: UploadId,
        request: FinishUpload,
        now: TimestampMs,
    ) -> Result<FinishedFile, FinishError> {
        self.check_failed()?;
        if request.name.len() > FILE_NAME_BYTES_MAX {
            return Err(FinishError::NameTooLong { bytes: request.name.len(), max: FILE_NAME_BYTES_MAX });
        }
        if request.mime_type.len() > MIME_TYPE_BYTES_MAX {
            return Err(FinishError::MimeTypeTooLong { bytes: request.mime_type.len(), max: MIME_TYPE_BYTES_MAX });
        }
        let mut session = self.uploads.remove(&upload).ok_or(FinishError::UnknownUpload)?;
        let size = match session.check_complete(request.parts, request.total_bytes, self.config.file_bytes_max) {
            Ok(size) => size,
            Err(error) => {
                self.uploads.insert(upload, session);
                return Err(error);
            }
        };
        self.staging_bytes -= session.held_bytes();
        if let Some(client_id) = session.client_upload_id {
            self.uploads_by_client.remove(&(session.owner, client_id));
        }
        let result = self.finish_session(&mut session, size, request, now).await;
        for (key, _) in &session.chunks {
            self.unpin(*key);
        }
        result
    }

    async fn finish_session(
        &mut self,
        session: &mut Upload,
        size: u64,
        request: FinishUpload,
        now: TimestampMs,
    ) -> Result<FinishedFile, FinishError> {
        for part in session.take_remaining() {
            session.fold(&part);
            self.place_ready_chunks(session, false).await?;
        }
        self.place_ready_chunks(session, true).await?;
        assert_eq!(session.bytes_folded, size, "folded bytes differ from the checked size");
        // The chunks' bytes are durable before any record names them.
        let synced = self.segments.sync().await;
        self.storage(synced)?;
        let file = self.state.next_file_id(session.vshard);
        let access_hash = AccessHash::new(random_u64().map_err(StorageError::Entropy)?);
        let content_hash = session.content_hash.digest128();
        let mut listed_new = HashSet::new();
        let chunks: Vec<ManifestChunk> = session
            .chunks
            .iter()
            .map(|&(key, length)| {
                let stored_at = if self.state.chunk(&key).is_some() || !listed_new.insert(key) {
                    None
                } else {
                    Some(*self.provisional.get(&key).expect("a pinned chunk outside the index is provisional"))
                };
                ManifestChunk { key, length, stored_at }
            })
            .collect();
        let chunk_count = chunks.len() as u32;
        let mut records: Vec<MediaRecord> = chunks
            .chunks(RECORD_CHUNKS_MAX)
            .map(|piece| MediaRecord::FileChunks { file, chunks: piece.to_vec() })
            .collect();
        let meta =
            FileMeta { id: file, size, content_hash, name: request.name, mime_type: request.mime_type, access_hash };
        records.push(MediaRecord::FileFinished {
            meta,
            chunk_count,
            uploader_expires_at: now.plus_ms(self.config.uploader_reference_ttl_ms),
        });
        self.commit(&records).await?;
        for key in listed_new {
            self.provisional.remove(&key);
        }
        Ok(FinishedFile { file, access_hash, size, content_hash })
    }

    /// Drops an upload and gives its space back. Returns whether it existed.
    pub fn cancel(&mut self, upload: UploadId) -> bool {
        let Some(session) = self.uploads.remove(&upload) else { return false };
        self.drop_session(session);
        true
    }

    /// Describes a file to someone holding its access hash.
    pub fn file_info(&self, file: FileId, access_hash: AccessHash) -> Result<FileInfo, ReadError> {
        self.authorized(file, access_hash).map(describe)
    }

    /// Takes a message's reference on a file; call it before the message is appended. The
    /// first message takes over the uploader's expiring reference.
    pub async fn take_reference(&mut self, file: FileId, access_hash: AccessHash) -> Result<(), ReferenceError> {
        self.check_failed()?;
        let entry = self.state.file(file).ok_or(ReferenceError::NotFound(file))?;
        if !entry.meta.access_hash.matches(access_hash) {
            return Err(ReferenceError::AccessDenied(file));
        }
        self.commit(&[MediaRecord::ReferenceTaken { file }]).await?;
        Ok(())
    }

    /// Gives a message's reference back (once the message's tombstone is durable). The last
    /// reference going deletes the file; its chunks wait out the grace period.
    pub async fn release_reference(&mut self, file: FileId, now: TimestampMs) -> Result<(), ReferenceError> {
        self.check_failed()?;
        let entry = self.state.file(file).ok_or(ReferenceError::NotFound(file))?;
        if entry.references == 0 {
            return Err(ReferenceError::NoReference(file));
        }
        self.commit(&[MediaRecord::ReferenceReleased { file, at: now }]).await?;
        Ok(())
    }

    /// Takes a keyed reference on a file for the message whose idempotency key is `holder`;
    /// call it before the message is appended. Idempotent: when `holder` already holds the
    /// file nothing is journaled and the answer is the same, so a retried send is harmless.
    /// The first message takes over the uploader's expiring reference.
    ///
    /// A take that arrives after the same holder was released takes it again: the leak check
    /// ([`MediaShard::unconfirmed_holders`]) finds such a holder, as its message is not durable.
    pub async fn take_holder(
        &mut self,
        file: FileId,
        access_hash: AccessHash,
        holder: Holder,
        now: TimestampMs,
    ) -> Result<FileInfo, ReferenceError> {
        self.check_failed()?;
        let entry = self.state.file(file).ok_or(ReferenceError::NotFound(file))?;
        if !entry.meta.access_hash.matches(access_hash) {
            return Err(ReferenceError::AccessDenied(file));
        }
        if !entry.holders.contains_key(&holder) {
            self.commit(&[MediaRecord::HolderTaken { file, holder, at: now }]).await?;
        }
        Ok(describe(self.state.file(file).expect("a file that is held stays")))
    }

    /// Gives a keyed reference back (once the holding message's tombstone is durable, or when
    /// its send failed). `Ok(false)`, with nothing journaled, when the file is gone or
    /// `holder` does not hold it: an outbox may deliver a release more than once. The last
    /// reference going deletes the file; its chunks wait out the grace period.
    pub async fn release_holder(
        &mut self,
        file: FileId,
        holder: Holder,
        now: TimestampMs,
    ) -> Result<bool, StorageError> {
        self.check_failed()?;
        if !self.state.file(file).is_some_and(|entry| entry.holders.contains_key(&holder)) {
            return Ok(false);
        }
        self.commit(&[MediaRecord::HolderReleased { file, holder, at: now }]).await?;
        Ok(true)
    }

    /// Marks `holder` as belonging to a durable message, so the leak check stops listing it.
    /// `Ok(false)` when `holder` does not hold the file; `Ok(true)` when it does (journaling
    /// only the first confirmation).
    pub async fn confirm_holder(&mut self, file: FileId, holder: Holder) -> Result<bool, StorageError> {
        self.check_failed()?;
        let Some(held) = self.state.file(file).and_then(|entry| entry.holders.get(&holder)) else {
            return Ok(false);
        };
        if !held.confirmed {
            self.commit(&[MediaRecord::HolderConfirmed { file, holder }]).await?;
        }
        Ok(true)
    }

    /// The first `limit` unconfirmed holders (in file, then holder order) taken at or before
    /// `taken_before`: references whose message may never have been appended, for a periodic
    /// leak check to ask the messaging side about.
    ///
    /// It walks every file of the shard. That is acceptable for a rare check and keeps the
    /// state free of a second index that every take, confirm and release would maintain;
    /// memory stays bounded by `limit`.
    pub fn unconfirmed_holders(&self, taken_before: TimestampMs, limit: usize) -> Vec<(FileId, Holder)> {
        if limit == 0 {
            return Vec::new();
        }
        // A max-heap of the smallest `limit` seen so far: its top is the first to give way.
        // It grows as it fills, not to `limit` up front: callers may pass a large limit.
        let mut smallest: BinaryHeap<(FileId, Holder)> = BinaryHeap::new();
        for file in self.state.files() {
            for (holder, entry) in &file.holders {
                if entry.confirmed || entry.taken_at > taken_before {
                    continue;
                }
                smallest.push((file.meta.id, *holder));
                if smallest.len() > limit {
                    smallest.pop();
                }
            }
        }
        smallest.into_sorted_vec()
    }

    /// Periodic upkeep: drops uploads idle past their timeout and expires uploader references
    /// no message took (at most `EXPIRIES_PER_CALL_MAX` per call; the rest on the next).
    pub async fn maintain(&mut self, now: TimestampMs) -> Result<MaintenanceReport, StorageError> {
        self.check_failed()?;
        let idle_timeout_ms = self.config.upload_idle_timeout_ms;
        let idle: Vec<UploadId> = self
            .uploads
            .values()
            .filter(|upload| upload.last_activity.plus_ms(idle_timeout_ms) <= now)
            .map(|upload| upload.id)
            .collect();
        for id in &idle {
            let session = self.uploads.remove(id).expect("listed above");
            self.drop_session(session);
        }
        let mut expired: Vec<FileId> = self
            .state
            .files()
            .filter(|file| file.uploader_expires_at.is_some_and(|expires| expires <= now))
            .map(|file| file.meta.id)
            .collect();
        expired.sort();
        expired.truncate(EXPIRIES_PER_CALL_MAX);
        let records: Vec<MediaRecord> =
            expired.iter().map(|&file| MediaRecord::UploaderReferenceExpired { file, at: now }).collect();
        self.commit(&records).await?;
        Ok(MaintenanceReport { uploads_expired: idle.len(), uploader_references_expired: expired.len() })
    }

    /// The durable state as a checkpoint snapshot. Between operations every applied record is
    /// durable, so the snapshot covers exactly the records journaled so far.
    pub fn snapshot(&self) -> MediaSnapshot {
        self.state.snapshot()
    }

    /// The durable state (read-only), for checks and tools.
    pub fn state(&self) -> &MediaState {
        &self.state
    }

    pub fn config(&self) -> &MediaConfig {
        &self.config
    }

    /// Storage statistics.
    pub fn stats(&self) -> StorageStats {
        let mut stats = StorageStats {
            logical_bytes: self.state.logical_bytes(),
            physical_bytes: self.segments.physical_bytes(),
            segments: self.segments.sizes().len() as u64,
            uploads: self.uploads.len() as u64,
            staging_bytes: self.staging_bytes,
            cache_bytes: self.cache.borrow().bytes(),
            ..StorageStats::default()
        };
        let reads = self.reads_in_flight();
        stats.reads_in_flight = reads.reads as u64;
        stats.read_bytes_in_flight = reads.bytes;
        stats.reads_in_flight_peak = reads.reads_peak as u64;
        stats.read_bytes_in_flight_peak = reads.bytes_peak;
        stats.files = self.state.file_count() as u64;
        // Kept as refcounts change: a statistics sample never walks the chunk index. Debug
        // builds (every test) check the running totals against a walk.
        let (referenced, unreferenced) = self.state.referenced();
        debug_assert_eq!((referenced, unreferenced), self.state.referenced_by_scan(), "running chunk totals drifted");
        stats.chunks = referenced.chunks;
        stats.stored_bytes = referenced.stored_bytes;
        stats.chunks_unreferenced = unreferenced;
        let referenced_frame_bytes = referenced.frame_bytes;
        let provisional_frame_bytes: u64 = self.provisional.values().map(|location| location.frame_bytes()).sum();
        stats.garbage_bytes = stats.physical_bytes.saturating_sub(referenced_frame_bytes + provisional_frame_bytes);
        stats.dedup_ratio =
            if stats.stored_bytes == 0 { 1.0 } else { stats.logical_bytes as f64 / stats.stored_bytes as f64 };
        stats
    }

    /// Gives back the segment I/O and the journal (to close files, or to reopen in tests).
    pub fn into_parts(self) -> (S, J) {
        (self.segments.into_io(), self.journal)
    }

    // ---- helpers ----

    fn authorized(&self, file: FileId, access_hash: AccessHash) -> Result<&FileEntry, ReadError> {
        let entry = self.state.file(file).ok_or(ReadError::NotFound(file))?;
        if !entry.meta.access_hash.matches(access_hash) {
            return Err(ReadError::AccessDenied(file));
        }
        Ok(entry)
    }

    /// Cuts the chunks that are final out of the upload's chunker and places each one.
    async fn place_ready_chunks(&mut self, session: &mut Upload, at_end: bool) -> Result<(), StorageError> {
        let lengths = session.chunker.ready_chunks(at_end);
        let mut offset = 0;
        for length in lengths {
            let key = self.place_chunk(&session.chunker.buffered()[offset..offset + length]).await?;
            *self.pins.entry(key).or_default() += 1;
            session.chunks.push((key, length as u32));
            offset += length;
        }
        session.chunker.consume(offset);
        Ok(())
    }

    /// Finds the chunk with exactly these bytes, or stores them. A key is shared only after
    /// the stored bytes compared equal; different bytes under the same hash get the next
    /// collision number, so a forced collision never serves one user's bytes as another's.
    async fn place_chunk(&mut self, bytes: &[u8]) -> Result<ChunkKey, StorageError> {
        let hash = self.hasher.hash(bytes);
        for collision in 0..COLLISIONS_MAX {
            let key = ChunkKey { hash, collision };
            let existing = self.state.chunk(&key).map(|entry| entry.location).or(self.provisional.get(&key).copied());
            let Some(location) = existing else {
                let location = self.segments.append(key, bytes).await;
                let location = self.storage(location)?;
                self.provisional.insert(key, location);
                // Fresh media is the most likely to be read next (the recipients download it).
                self.cache.borrow_mut().insert(key, Rc::from(bytes));
                return Ok(key);
            };
            if location.length as usize != bytes.len() {
                continue;
            }
            match self.chunk_payload(key).await {
                Ok(stored) if stored[..] == *bytes => return Ok(key),
                Ok(_) => {}
                // A damaged copy is never shared; the content is stored again under another key.
                Err(StorageError::Corrupt { .. } | StorageError::ChunkMissing { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Err(StorageError::TooManyCollisions { count: COLLISIONS_MAX })
    }

    /// A chunk's payload, from the cache or read (and verified) from its segment.
    async fn chunk_payload(&mut self, key: ChunkKey) -> Result<Rc<[u8]>, StorageError> {
        let cached = self.cache.borrow_mut().get(&key);
        if let Some(bytes) = cached {
            return Ok(bytes);
        }
        let location = self
            .state
            .chunk(&key)
            .map(|entry| entry.location)
            .or(self.provisional.get(&key).copied())
            .ok_or(StorageError::ChunkMissing { key })?;
        let read = self.segments.read(key, location).await;
        let bytes = self.storage(read)?;
        self.cache.borrow_mut().insert(key, bytes.clone());
        Ok(bytes)
    }

    fn unpin(&mut self, key: ChunkKey) {
        let count = self.pins.get_mut(&key).expect("unpinning a chunk that is not pinned");
        *count -= 1;
        if *count == 0 {
            self.pins.remove(&key);
            // A chunk only an abandoned upload wrote is garbage now: compaction takes it.
            if self.provisional.remove(&key).is_some() {
                self.cache.borrow_mut().remove(&key);
            }
        }
    }

    fn drop_session(&mut self, session: Upload) {
        self.staging_bytes -= session.held_bytes();
        if let Some(client_id) = session.client_upload_id {
            self.uploads_by_client.remove(&(session.owner, client_id));
        }
        for (key, _) in &session.chunks {
            self.unpin(*key);
        }
    }

    /// Appends records, waits until they are durable, then applies them.
    pub(crate) async fn commit(&mut self, records: &[MediaRecord]) -> Result<(), StorageError> {
        let mut last = None;
        for record in records {
            let ticket = self.journal.append(record).map_err(StorageError::from);
            last = Some(self.storage(ticket)?);
        }
        if let Some(ticket) = last {
            let durable = self.journal.wait_durable(ticket).await.map_err(StorageError::from);
            self.storage(durable)?;
        }
        for record in records {
            if let Err(reason) = self.state.apply(record) {
                panic!("a validated media record does not apply ({reason}): {record:?}");
            }
        }
        Ok(())
    }

    /// Passes a storage result through, marking the shard failed on an I/O or journal error.
    pub(crate) fn storage<T>(&mut self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        if let Err(StorageError::Io { .. } | StorageError::Journal(_) | StorageError::Entropy(_)) = &result {
            self.failed.set(true);
        }
        result
    }

    pub(crate) fn check_failed(&self) -> Result<(), StorageError> {
        if self.failed.get() {
            Err(StorageError::PreviouslyFailed)
        } else {
            Ok(())
        }
    }
}

/// Telegram's download rules.
pub fn check_download_range(offset: u64, limit: u64) -> Result<(), ReadError> {
    if !offset.is_multiple_of(DOWNLOAD_ALIGN_BYTES) {
        return Err(ReadError::MisalignedOffset { offset });
    }
    if limit == 0 || !limit.is_multiple_of(DOWNLOAD_ALIGN_BYTES) || limit > DOWNLOAD_LIMIT_BYTES_MAX {
        return Err(ReadError::InvalidLimit { limit });
    }
    if offset / DOWNLOAD_WINDOW_BYTES != (offset + limit - 1) / DOWNLOAD_WINDOW_BYTES {
        return Err(ReadError::CrossesBoundary { offset, limit });
    }
    Ok(())
}

/// A file's description, as `file_info` and `take_holder` give it.
fn describe(entry: &FileEntry) -> FileInfo {
    FileInfo {
        file: entry.meta.id,
        size: entry.meta.size,
        name: entry.meta.name.clone(),
        mime_type: entry.meta.mime_type.clone(),
        content_hash: entry.meta.content_hash,
        chunks: entry.chunks.len(),
        references: entry.message_references(),
        uploader_reference_held: entry.uploader_expires_at.is_some(),
    }
}

fn random_u64() -> Result<u64, getrandom::Error> {
    getrandom::u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the download rules: aligned offsets and limits, at most 1 MiB, one window.
    #[test]
    fn download_ranges() {
        assert!(check_download_range(0, 1 << 20).is_ok());
        assert!(check_download_range(512 << 10, 512 << 10).is_ok());
        assert!(check_download_range(4096, 4096).is_ok());
        assert!(matches!(check_download_range(100, 4096), Err(ReadError::MisalignedOffset { .. })));
        assert!(matches!(check_download_range(0, 1000), Err(ReadError::InvalidLimit { .. })));
        assert!(matches!(check_download_range(0, 0), Err(ReadError::InvalidLimit { .. })));
        assert!(matches!(check_download_range(0, 2 << 20), Err(ReadError::InvalidLimit { .. })));
        assert!(matches!(check_download_range(4096, 1 << 20), Err(ReadError::CrossesBoundary { .. })));
        assert!(matches!(check_download_range((1 << 20) - 4096, 8192), Err(ReadError::CrossesBoundary { .. })));
    }
}
