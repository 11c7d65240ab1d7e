//! The durable state of a media shard — the chunk index (key → location, refcount) and the
//! file manifests — and `MediaState::apply`, the one function that changes it, live and in
//! replay alike. Sans-I/O: it never touches a disk.
//!
//! Refcount invariant: a chunk's refcount is the number of times it appears in the chunk
//! lists of live files. A file is live while a message references it (anonymously, or as a
//! keyed holder) or its uploader reference has not expired. A chunk whose refcount falls to 0 remembers when, so
//! compaction can wait a grace period before its bytes are dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::ids::{ChunkKey, ChunkLocation, FileId, Holder, SegmentId, TimestampMs, VShard};
use crate::records::{
    FileMeta, ManifestChunk, MediaRecord, MediaSnapshot, SnapshotChunk, SnapshotFile, SNAPSHOT_VERSION,
};

/// One chunk of the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkEntry {
    pub location: ChunkLocation,
    pub refcount: u64,
    pub unreferenced_since: Option<TimestampMs>,
}

/// A finished, live file.
#[derive(Clone, Debug)]
pub struct FileEntry {
    pub meta: FileMeta,
    pub chunks: Vec<ChunkKey>,
    /// `chunk_ends[i]` is the file offset just past chunk `i`, for range reads.
    pub chunk_ends: Vec<u64>,
    /// Anonymous message references (`ReferenceTaken`).
    pub references: u64,
    /// Keyed message references, by the holding message's idempotency key.
    pub holders: BTreeMap<Holder, HolderEntry>,
    /// Set while the uploader reference is held.
    pub uploader_expires_at: Option<TimestampMs>,
}

/// One keyed message reference on a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HolderEntry {
    pub taken_at: TimestampMs,
    /// The holding message is known to be durable (the leak check no longer asks about it).
    pub confirmed: bool,
}

impl FileEntry {
    /// Whether anything holds the file: a message (anonymous or keyed) or its uploader.
    pub fn is_referenced(&self) -> bool {
        self.references > 0 || !self.holders.is_empty() || self.uploader_expires_at.is_some()
    }

    /// Message references of both kinds.
    pub fn message_references(&self) -> u64 {
        self.references + self.holders.len() as u64
    }

    pub fn chunk_length(&self, index: usize) -> u64 {
        self.chunk_ends[index] - if index == 0 { 0 } else { self.chunk_ends[index - 1] }
    }
}

/// Live chunks and their frame bytes in one segment (derived, not stored).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentUsage {
    pub chunks: u64,
    pub frame_bytes: u64,
}

/// Totals over the chunks some file references (refcount above 0), kept as refcounts change
/// so statistics never walk the chunk index (derived, not stored).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReferencedTotals {
    pub chunks: u64,
    /// Chunk bytes (without frame headers and padding).
    pub stored_bytes: u64,
    /// Bytes those chunks' frames take in the segments.
    pub frame_bytes: u64,
}

impl ReferencedTotals {
    fn add(&mut self, location: ChunkLocation) {
        self.chunks += 1;
        self.stored_bytes += u64::from(location.length);
        self.frame_bytes += location.frame_bytes();
    }

    fn remove(&mut self, location: ChunkLocation) {
        self.chunks -= 1;
        self.stored_bytes -= u64::from(location.length);
        self.frame_bytes -= location.frame_bytes();
    }
}

/// The chunk index and the manifests.
#[derive(Debug, Default)]
pub struct MediaState {
    chunks: HashMap<ChunkKey, ChunkEntry>,
    files: HashMap<FileId, FileEntry>,
    pending: HashMap<FileId, Vec<ManifestChunk>>,
    next_sequences: BTreeMap<VShard, u64>,
    retired: BTreeSet<SegmentId>,
    usage: BTreeMap<SegmentId, SegmentUsage>,
    logical_bytes: u64,
    referenced: ReferencedTotals,
}

/// Why a record does not fit the state: a bug live, corruption in replay.
pub type ApplyError = &'static str;

impl MediaState {
    pub fn chunk(&self, key: &ChunkKey) -> Option<&ChunkEntry> {
        self.chunks.get(key)
    }

    pub fn chunks(&self) -> impl Iterator<Item = (&ChunkKey, &ChunkEntry)> {
        self.chunks.iter()
    }

    pub fn file(&self, file: FileId) -> Option<&FileEntry> {
        self.files.get(&file)
    }

    pub fn files(&self) -> impl Iterator<Item = &FileEntry> {
        self.files.values()
    }

    pub fn usage(&self) -> &BTreeMap<SegmentId, SegmentUsage> {
        &self.usage
    }

    pub fn is_retired(&self, segment: SegmentId) -> bool {
        self.retired.contains(&segment)
    }

    /// Sum of the sizes of live files.
    pub fn logical_bytes(&self) -> u64 {
        self.logical_bytes
    }

    /// Totals over referenced chunks, and how many chunks are not referenced.
    pub fn referenced(&self) -> (ReferencedTotals, u64) {
        (self.referenced, self.chunks.len() as u64 - self.referenced.chunks)
    }

    /// The same totals recomputed by walking the whole chunk index: for tests and offline
    /// checks, never on a serving path.
    pub fn referenced_by_scan(&self) -> (ReferencedTotals, u64) {
        let mut totals = ReferencedTotals::default();
        for entry in self.chunks.values().filter(|entry| entry.refcount > 0) {
            totals.add(entry.location);
        }
        (totals, self.chunks.len() as u64 - totals.chunks)
    }

    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// The id the next file of `vshard` gets.
    pub fn next_file_id(&self, vshard: VShard) -> FileId {
        FileId::new(self.next_sequences.get(&vshard).copied().unwrap_or(1), vshard)
    }

    /// Highest segment number the state knows of.
    pub fn highest_segment(&self) -> Option<SegmentId> {
        let in_use = self.usage.keys().next_back().copied();
        let retired = self.retired.iter().next_back().copied();
        in_use.max(retired)
    }

    /// Drops chunk lists whose `FileFinished` never came (the upload died with the process).
    pub fn discard_pending(&mut self) {
        self.pending.clear();
    }

    /// What each chunk's refcount should be according to the live manifests.
    pub fn expected_refcounts(&self) -> HashMap<ChunkKey, u64> {
        let mut expected: HashMap<ChunkKey, u64> = HashMap::new();
        for file in self.files.values() {
            for key in &file.chunks {
                *expected.entry(*key).or_default() += 1;
            }
        }
        expected
    }

    /// Applies one record. Validation happens before a record is appended, so an error here is
    /// a bug when live and damage when replaying; nothing is changed when it fails.
    pub fn apply(&mut self, record: &MediaRecord) -> Result<(), ApplyError> {
        match record {
            MediaRecord::FileChunks { file, chunks } => {
                if self.files.contains_key(file) {
                    return Err("chunks for a file that is already finished");
                }
                self.bump_sequence(*file);
                self.pending.entry(*file).or_default().extend_from_slice(chunks);
                Ok(())
            }
            MediaRecord::FileFinished { meta, chunk_count, uploader_expires_at } => {
                self.finish_file(meta, *chunk_count, *uploader_expires_at)
            }
            MediaRecord::ReferenceTaken { file } => {
                let entry = self.files.get_mut(file).ok_or("reference to an unknown file")?;
                entry.references = entry.references.checked_add(1).ok_or("reference count overflow")?;
                // The first message takes over the uploader's reference.
                entry.uploader_expires_at = None;
                Ok(())
            }
            MediaRecord::ReferenceReleased { file, at } => {
                let entry = self.files.get_mut(file).ok_or("release of an unknown file")?;
                entry.references = entry.references.checked_sub(1).ok_or("release without a reference")?;
                self.delete_if_unreferenced(*file, *at);
                Ok(())
            }
            MediaRecord::UploaderReferenceExpired { file, at } => {
                let entry = self.files.get_mut(file).ok_or("expiry of an unknown file")?;
                entry.uploader_expires_at.take().ok_or("expiry of an uploader reference not held")?;
                self.delete_if_unreferenced(*file, *at);
                Ok(())
            }
            MediaRecord::ChunksMoved { from, moves } => {
                for chunk_move in moves {
                    let entry = self.chunks.get(&chunk_move.key).ok_or("move of an unknown chunk")?;
                    if entry.location.segment != *from || chunk_move.to.length != entry.location.length {
                        return Err("move of a chunk that is not where the record says");
                    }
                }
                for chunk_move in moves {
                    let entry = self.chunks.get_mut(&chunk_move.key).expect("checked above");
                    let old = std::mem::replace(&mut entry.location, chunk_move.to);
                    Self::unuse(&mut self.usage, old);
                    Self::use_(&mut self.usage, chunk_move.to);
                    if entry.refcount > 0 {
                        self.referenced.remove(old);
                        self.referenced.add(chunk_move.to);
                    }
                }
                Ok(())
            }
            MediaRecord::SegmentRetired { segment } => {
                let doomed: Vec<ChunkKey> = self
                    .chunks
                    .iter()
                    .filter(|(_, entry)| entry.location.segment == *segment)
                    .map(|(key, _)| *key)
                    .collect();
                if doomed.iter().any(|key| self.chunks[key].refcount != 0) {
                    return Err("retiring a segment that still holds referenced chunks");
                }
                for key in doomed {
                    self.chunks.remove(&key);
                }
                self.usage.remove(segment);
                self.retired.insert(*segment);
                Ok(())
            }
            MediaRecord::HolderTaken { file, holder, at } => {
                let entry = self.files.get_mut(file).ok_or("holder taken on an unknown file")?;
                if entry.holders.contains_key(holder) {
                    return Err("holder taken twice");
                }
                entry.holders.insert(*holder, HolderEntry { taken_at: *at, confirmed: false });
                // The first message takes over the uploader's reference.
                entry.uploader_expires_at = None;
                Ok(())
            }
            MediaRecord::HolderReleased { file, holder, at } => {
                let entry = self.files.get_mut(file).ok_or("holder released on an unknown file")?;
                entry.holders.remove(holder).ok_or("release of a holder not held")?;
                self.delete_if_unreferenced(*file, *at);
                Ok(())
            }
            MediaRecord::HolderConfirmed { file, holder } => {
                let entry = self.files.get_mut(file).ok_or("holder confirmed on an unknown file")?;
                entry.holders.get_mut(holder).ok_or("confirmation of a holder not held")?.confirmed = true;
                Ok(())
            }
            MediaRecord::RefcountRepaired { key, refcount, at } => {
                let entry = self.chunks.get_mut(key).ok_or("repair of an unknown chunk")?;
                match (entry.refcount > 0, *refcount > 0) {
                    (false, true) => self.referenced.add(entry.location),
                    (true, false) => self.referenced.remove(entry.location),
                    _ => {}
                }
                entry.refcount = *refcount;
                entry.unreferenced_since = if *refcount == 0 { entry.unreferenced_since.or(Some(*at)) } else { None };
                Ok(())
            }
        }
    }

    fn finish_file(
        &mut self,
        meta: &FileMeta,
        chunk_count: u32,
        uploader_expires_at: TimestampMs,
    ) -> Result<(), ApplyError> {
        if self.files.contains_key(&meta.id) {
            return Err("file finished twice");
        }
        let pieces = self.pending.get(&meta.id).map_or(&[][..], Vec::as_slice);
        if pieces.len() != chunk_count as usize {
            return Err("file finished with a different number of chunks than were journaled");
        }
        // Check everything before changing anything.
        let mut adding: HashMap<ChunkKey, ChunkLocation> = HashMap::new();
        let mut size = 0u64;
        for chunk in pieces {
            size += u64::from(chunk.length);
            match (self.chunks.get(&chunk.key), chunk.stored_at) {
                (Some(_), Some(_)) => return Err("chunk stored twice"),
                (Some(entry), None) if entry.location.length != chunk.length => return Err("chunk length differs"),
                (None, Some(location)) => {
                    let listed_twice = adding.insert(chunk.key, location).is_some();
                    if listed_twice || location.length != chunk.length {
                        return Err("new chunk listed twice or with the wrong length");
                    }
                }
                (None, None) if !adding.contains_key(&chunk.key) => return Err("chunk not in the index"),
                _ => {}
            }
        }
        if size != meta.size {
            return Err("chunk lengths do not add up to the file size");
        }
        let pieces = self.pending.remove(&meta.id).unwrap_or_default();
        self.bump_sequence(meta.id);
        for (key, location) in adding {
            self.chunks.insert(key, ChunkEntry { location, refcount: 0, unreferenced_since: None });
            Self::use_(&mut self.usage, location);
        }
        let mut chunk_ends = Vec::with_capacity(pieces.len());
        let mut end = 0u64;
        for chunk in &pieces {
            let entry = self.chunks.get_mut(&chunk.key).expect("checked above");
            if entry.refcount == 0 {
                self.referenced.add(entry.location);
            }
            entry.refcount += 1;
            entry.unreferenced_since = None;
            end += u64::from(chunk.length);
            chunk_ends.push(end);
        }
        self.logical_bytes += meta.size;
        self.files.insert(
            meta.id,
            FileEntry {
                meta: meta.clone(),
                chunks: pieces.iter().map(|chunk| chunk.key).collect(),
                chunk_ends,
                references: 0,
                holders: BTreeMap::new(),
                uploader_expires_at: Some(uploader_expires_at),
            },
        );
        Ok(())
    }

    fn delete_if_unreferenced(&mut self, file: FileId, at: TimestampMs) {
        if self.files[&file].is_referenced() {
            return;
        }
        let entry = self.files.remove(&file).expect("present");
        self.logical_bytes -= entry.meta.size;
        for key in entry.chunks {
            let chunk = self.chunks.get_mut(&key).expect("a live file's chunks are indexed");
            // A refcount that is already 0 is a leak the sweep repairs; never underflow.
            if chunk.refcount == 1 {
                self.referenced.remove(chunk.location);
            }
            chunk.refcount = chunk.refcount.saturating_sub(1);
            if chunk.refcount == 0 {
                chunk.unreferenced_since = Some(at);
            }
        }
    }

    fn bump_sequence(&mut self, file: FileId) {
        let next = self.next_sequences.entry(file.vshard()).or_insert(1);
        *next = (*next).max(file.sequence() + 1);
    }

    fn use_(usage: &mut BTreeMap<SegmentId, SegmentUsage>, location: ChunkLocation) {
        let entry = usage.entry(location.segment).or_default();
        entry.chunks += 1;
        entry.frame_bytes += location.frame_bytes();
    }

    fn unuse(usage: &mut BTreeMap<SegmentId, SegmentUsage>, location: ChunkLocation) {
        let entry = usage.get_mut(&location.segment).expect("a used segment has usage");
        entry.chunks -= 1;
        entry.frame_bytes -= location.frame_bytes();
        if entry.chunks == 0 {
            usage.remove(&location.segment);
        }
    }

    /// The state as a checkpoint snapshot (sorted, so equal states give equal snapshots).
    pub fn snapshot(&self) -> MediaSnapshot {
        let mut chunks: Vec<SnapshotChunk> = self
            .chunks
            .iter()
            .map(|(key, entry)| SnapshotChunk {
                key: *key,
                location: entry.location,
                refcount: entry.refcount,
                unreferenced_since: entry.unreferenced_since,
            })
            .collect();
        chunks.sort_by_key(|chunk| chunk.key);
        let mut files: Vec<SnapshotFile> = self
            .files
            .values()
            .map(|file| SnapshotFile {
                meta: file.meta.clone(),
                chunks: (0..file.chunks.len()).map(|i| (file.chunks[i], file.chunk_length(i) as u32)).collect(),
                references: file.references,
                uploader_expires_at: file.uploader_expires_at,
                holders: file
                    .holders
                    .iter()
                    .map(|(holder, entry)| (*holder, entry.taken_at, entry.confirmed))
                    .collect(),
            })
            .collect();
        files.sort_by_key(|file| file.meta.id);
        let mut pending: Vec<(FileId, Vec<ManifestChunk>)> =
            self.pending.iter().map(|(file, chunks)| (*file, chunks.clone())).collect();
        pending.sort_by_key(|(file, _)| *file);
        MediaSnapshot {
            version: SNAPSHOT_VERSION,
            chunks,
            files,
            pending,
            next_sequences: self.next_sequences.iter().map(|(vshard, next)| (*vshard, *next)).collect(),
            retired_segments: self.retired.iter().copied().collect(),
        }
    }

    /// Rebuilds the state from a snapshot, checking that its manifests name indexed chunks.
    pub fn restore(snapshot: &MediaSnapshot) -> Result<MediaState, ApplyError> {
        let mut state = MediaState::default();
        for chunk in &snapshot.chunks {
            let entry = ChunkEntry {
                location: chunk.location,
                refcount: chunk.refcount,
                unreferenced_since: chunk.unreferenced_since,
            };
            if state.chunks.insert(chunk.key, entry).is_some() {
                return Err("snapshot lists a chunk twice");
            }
            Self::use_(&mut state.usage, chunk.location);
            if chunk.refcount > 0 {
                state.referenced.add(chunk.location);
            }
        }
        for file in &snapshot.files {
            let mut chunk_ends = Vec::with_capacity(file.chunks.len());
            let mut end = 0u64;
            for (key, length) in &file.chunks {
                if !state.chunks.contains_key(key) {
                    return Err("snapshot file names a chunk that is not indexed");
                }
                end += u64::from(*length);
                chunk_ends.push(end);
            }
            if end != file.meta.size {
                return Err("snapshot file size does not match its chunks");
            }
            let mut holders = BTreeMap::new();
            for &(holder, taken_at, confirmed) in &file.holders {
                if holders.insert(holder, HolderEntry { taken_at, confirmed }).is_some() {
                    return Err("snapshot file lists a holder twice");
                }
            }
            state.logical_bytes += file.meta.size;
            let entry = FileEntry {
                meta: file.meta.clone(),
                chunks: file.chunks.iter().map(|(key, _)| *key).collect(),
                chunk_ends,
                references: file.references,
                holders,
                uploader_expires_at: file.uploader_expires_at,
            };
            if state.files.insert(file.meta.id, entry).is_some() {
                return Err("snapshot lists a file twice");
            }
        }
        state.pending = snapshot.pending.iter().cloned().collect();
        state.next_sequences = snapshot.next_sequences.iter().copied().collect();
        state.retired = snapshot.retired_segments.iter().copied().collect();
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::AccessHash;

    const FILE_RAW: u64 = 4103;
    const HOLDER: Holder = Holder { chat: 1, sender: 2, random_id: 3 };

    /// A state with one finished file of one chunk, its uploader reference held.
    fn one_file() -> MediaState {
        let key = ChunkKey { hash: 42, collision: 0 };
        let location = ChunkLocation { segment: SegmentId(1), offset: 0, length: 1000 };
        let meta = FileMeta {
            id: FileId::from_raw(FILE_RAW),
            size: 1000,
            content_hash: 7,
            name: "a".into(),
            mime_type: "b".into(),
            access_hash: AccessHash::new(9),
        };
        let mut state = MediaState::default();
        let chunks = vec![ManifestChunk { key, length: 1000, stored_at: Some(location) }];
        state.apply(&MediaRecord::FileChunks { file: FileId::from_raw(FILE_RAW), chunks }).expect("chunks");
        state
            .apply(&MediaRecord::FileFinished { meta, chunk_count: 1, uploader_expires_at: TimestampMs(100) })
            .expect("finish");
        state
    }

    /// Proves `apply` refuses holder records that do not fit (a holder taken twice, a release
    /// or confirmation of a holder not held, any of them on an unknown file) and changes
    /// nothing when it does.
    #[test]
    fn holder_records_that_do_not_fit_are_refused() {
        let mut state = one_file();
        let other = FileId::from_raw(8199);
        let taken = MediaRecord::HolderTaken { file: FileId::from_raw(FILE_RAW), holder: HOLDER, at: TimestampMs(5) };
        state.apply(&taken).expect("first take");
        let before = state.snapshot();
        assert_eq!(state.apply(&taken), Err("holder taken twice"));
        let stranger = Holder { random_id: 4, ..HOLDER };
        let refused = [
            MediaRecord::HolderTaken { file: other, holder: HOLDER, at: TimestampMs(5) },
            MediaRecord::HolderReleased { file: FileId::from_raw(FILE_RAW), holder: stranger, at: TimestampMs(6) },
            MediaRecord::HolderReleased { file: other, holder: HOLDER, at: TimestampMs(6) },
            MediaRecord::HolderConfirmed { file: FileId::from_raw(FILE_RAW), holder: stranger },
            MediaRecord::HolderConfirmed { file: other, holder: HOLDER },
        ];
        for record in &refused {
            assert!(state.apply(record).is_err(), "{record:?} applied");
        }
        assert_eq!(state.snapshot(), before, "a refused record changed the state");
    }

    /// Proves a holder keeps a file live on its own: the first holder takes over the uploader
    /// reference, an anonymous reference and a holder each keep the file, and the file goes
    /// (its chunk unreferenced from then) only when the last of them is released.
    #[test]
    fn a_file_lives_while_any_holder_or_reference_does() {
        let mut state = one_file();
        let key = ChunkKey { hash: 42, collision: 0 };
        state
            .apply(&MediaRecord::HolderTaken { file: FileId::from_raw(FILE_RAW), holder: HOLDER, at: TimestampMs(5) })
            .expect("take");
        let entry = state.file(FileId::from_raw(FILE_RAW)).expect("live");
        assert_eq!((entry.uploader_expires_at, entry.message_references()), (None, 1));
        state.apply(&MediaRecord::ReferenceTaken { file: FileId::from_raw(FILE_RAW) }).expect("anonymous");
        state
            .apply(&MediaRecord::HolderConfirmed { file: FileId::from_raw(FILE_RAW), holder: HOLDER })
            .expect("confirm");
        assert_eq!(
            state.file(FileId::from_raw(FILE_RAW)).expect("live").holders[&HOLDER],
            HolderEntry { taken_at: TimestampMs(5), confirmed: true }
        );
        state
            .apply(&MediaRecord::ReferenceReleased { file: FileId::from_raw(FILE_RAW), at: TimestampMs(6) })
            .expect("release anonymous");
        assert!(state.file(FileId::from_raw(FILE_RAW)).is_some(), "the holder keeps the file");
        state
            .apply(&MediaRecord::HolderReleased {
                file: FileId::from_raw(FILE_RAW),
                holder: HOLDER,
                at: TimestampMs(7),
            })
            .expect("release");
        assert!(state.file(FileId::from_raw(FILE_RAW)).is_none());
        assert_eq!(
            state.chunk(&key).map(|chunk| (chunk.refcount, chunk.unreferenced_since)),
            Some((0, Some(TimestampMs(7))))
        );
    }

    /// Proves holders survive a snapshot and a snapshot listing a holder twice is refused.
    #[test]
    fn holders_restore_and_duplicates_are_refused() {
        let mut state = one_file();
        state
            .apply(&MediaRecord::HolderTaken { file: FileId::from_raw(FILE_RAW), holder: HOLDER, at: TimestampMs(5) })
            .expect("take");
        let snapshot = state.snapshot();
        let restored = MediaState::restore(&snapshot).expect("restores");
        assert_eq!(restored.snapshot(), snapshot);
        assert_eq!(restored.file(FileId::from_raw(FILE_RAW)).expect("live").holders.len(), 1);
        let mut doubled = snapshot.clone();
        let first = doubled.files[0].holders[0];
        doubled.files[0].holders.push(first);
        assert_eq!(MediaState::restore(&doubled).err(), Some("snapshot file lists a holder twice"));
    }
}
