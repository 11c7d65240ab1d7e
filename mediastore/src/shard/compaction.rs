//! Getting space back without ever freeing live data: compaction copies the chunks that must
//! stay out of segments that are mostly garbage and retires those segments; the sweep checks
//! every refcount against the manifests and repairs leaks.
//!
//! A chunk stays (is copied, never dropped) when any of these holds: a file references it
//! (its refcount, and independently the manifests themselves, so a refcount that is wrong
//! low cannot lose data), an unfinished upload uses it (a pin), or its refcount reached 0
//! less than a grace period ago. Segments holding chunks that unfinished uploads wrote are
//! left alone until those uploads finish or expire.

use std::collections::{HashMap, HashSet};

use super::{CompactionReport, MediaShard, SweepReport};
use crate::error::StorageError;
use crate::ids::{ChunkKey, SegmentId, TimestampMs};
use crate::journal::Journal;
use crate::limits::RECORD_CHUNKS_MAX;
use crate::records::{ChunkMove, MediaRecord};
use crate::segment::SegmentIo;

impl<S: SegmentIo, J: Journal> MediaShard<S, J> {
    /// Rewrites segments whose live fraction is under the threshold: live chunks are copied to
    /// the open segment and synced, the moves and the retirement are journaled and durable,
    /// and only then are the old files deleted. Moves at most `compaction_bytes_per_call` live
    /// bytes (always at least one segment's worth, so every segment can be compacted).
    pub async fn compact(&mut self, now: TimestampMs) -> Result<CompactionReport, StorageError> {
        self.check_failed()?;
        let referenced: HashSet<ChunkKey> = self.state.files().flat_map(|file| file.chunks.iter().copied()).collect();
        let grace_ms = self.config.grace_period_ms;
        let keep = |key: &ChunkKey, entry: &crate::state::ChunkEntry| {
            entry.refcount > 0
                || self.pins.contains_key(key)
                || referenced.contains(key)
                || entry.unreferenced_since.is_none_or(|since| now < since.plus_ms(grace_ms))
        };
        let mut kept: HashMap<SegmentId, Vec<(ChunkKey, u64)>> = HashMap::new();
        for (key, entry) in self.state.chunks() {
            if keep(key, entry) {
                kept.entry(entry.location.segment).or_default().push((*key, entry.location.offset));
            }
        }
        let busy: HashSet<SegmentId> = self.provisional.values().map(|location| location.segment).collect();
        let threshold = u64::from(self.config.compaction_live_per_mille);
        let mut candidates: Vec<(u64, SegmentId)> = Vec::new();
        for (&segment, &size) in self.segments.sizes() {
            if busy.contains(&segment) {
                continue;
            }
            let live_bytes: u64 = kept.get(&segment).map_or(0, |chunks| {
                chunks.iter().map(|(key, _)| self.state.chunk(key).expect("kept").location.frame_bytes()).sum()
            });
            if live_bytes * 1000 < threshold * size || size == 0 {
                candidates.push((live_bytes, segment));
            }
        }
        candidates.sort();
        if candidates.iter().any(|(_, segment)| *segment == self.segments.open_segment()) {
            // The open segment qualifies: seal it so the copies go elsewhere.
            let rolled = self.segments.roll().await;
            self.storage(rolled)?;
        }
        let mut report = CompactionReport::default();
        let mut records = Vec::new();
        let mut retired = Vec::new();
        let mut moved = HashSet::new();
        for (live_bytes, segment) in candidates {
            if !retired.is_empty() && report.bytes_moved + live_bytes > self.config.compaction_bytes_per_call {
                break;
            }
            let mut chunks = kept.remove(&segment).unwrap_or_default();
            // Read in segment order: sequential on the device.
            chunks.sort_by_key(|(_, offset)| *offset);
            let mut moves = Vec::with_capacity(chunks.len());
            for (key, _) in chunks {
                let payload = self.chunk_payload(key).await?;
                let appended = self.segments.append(key, &payload).await;
                let to = self.storage(appended)?;
                report.bytes_moved += u64::from(to.length);
                moved.insert(key);
                moves.push(ChunkMove { key, to });
            }
            report.chunks_moved += moves.len();
            for piece in moves.chunks(RECORD_CHUNKS_MAX) {
                records.push(MediaRecord::ChunksMoved { from: segment, moves: piece.to_vec() });
            }
            records.push(MediaRecord::SegmentRetired { segment });
            retired.push(segment);
        }
        if retired.is_empty() {
            return Ok(report);
        }
        // The copies are durable before the records that point at them.
        let synced = self.segments.sync().await;
        self.storage(synced)?;
        let dropped: Vec<ChunkKey> = self
            .state
            .chunks()
            .filter(|(key, entry)| retired.contains(&entry.location.segment) && !moved.contains(*key))
            .map(|(key, _)| *key)
            .collect();
        self.commit(&records).await?;
        report.chunks_dropped = dropped.len();
        {
            let mut cache = self.cache.borrow_mut();
            for key in dropped {
                cache.remove(&key);
            }
        }
        for segment in retired {
            report.bytes_reclaimed += self.segments.sizes().get(&segment).copied().unwrap_or(0);
            let removed = self.segments.remove(segment).await;
            self.storage(removed)?;
            report.segments_retired += 1;
        }
        Ok(report)
    }

    /// Checks every chunk's refcount against the live manifests and repairs the ones that
    /// differ (a journaled `RefcountRepaired` each), and reports chunks a manifest names that
    /// are gone. Space that nothing references is left for `compact` to take.
    pub async fn sweep(&mut self, now: TimestampMs) -> Result<SweepReport, StorageError> {
        self.check_failed()?;
        let expected = self.state.expected_refcounts();
        let mut records = Vec::new();
        let mut report = SweepReport::default();
        let mut referenced_frame_bytes = 0;
        for (key, entry) in self.state.chunks() {
            let refcount = expected.get(key).copied().unwrap_or(0);
            if entry.refcount != refcount {
                records.push(MediaRecord::RefcountRepaired { key: *key, refcount, at: now });
            }
            let end = entry.location.offset + entry.location.frame_bytes();
            let present = self.segments.sizes().get(&entry.location.segment).is_some_and(|&size| end <= size)
                || entry.location.segment == self.segments.open_segment();
            if refcount > 0 {
                referenced_frame_bytes += entry.location.frame_bytes();
                if !present {
                    report.chunks_missing += 1;
                }
            }
        }
        report.chunks_missing += expected.keys().filter(|key| self.state.chunk(key).is_none()).count();
        records.sort_by_key(|record| match record {
            MediaRecord::RefcountRepaired { key, .. } => *key,
            _ => unreachable!("only repairs are listed"),
        });
        report.refcounts_repaired = records.len();
        self.commit(&records).await?;
        let provisional_frame_bytes: u64 = self.provisional.values().map(|location| location.frame_bytes()).sum();
        report.garbage_bytes =
            self.segments.physical_bytes().saturating_sub(referenced_frame_bytes + provisional_frame_bytes);
        Ok(report)
    }
}
