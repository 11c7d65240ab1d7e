//! What the media store makes durable: `MediaRecord`s handed to a [`crate::Journal`], and the
//! `MediaSnapshot` of a checkpoint. Both are rkyv archives, always validated when decoded
//! (they may come from another version or a damaged disk; the journal's checksum is not
//! validation, NOTES-runtime).
//!
//! Every record is bounded: a file's chunk list is written in pieces of at most
//! `RECORD_CHUNKS_MAX` chunks ([`MediaRecord::FileChunks`]) before the
//! [`MediaRecord::FileFinished`] that completes it, so a record always fits a WAL batch.
//!
//! Compatibility. A record's variant is archived as its place in [`MediaRecord`], and rkyv
//! finds a record's root by the archived enum's size, so new variants go at the end and must
//! not make the archived enum larger (a test pins its size). A snapshot names its layout in
//! `version`; the previous layout (version 1, files without holders) is still read and
//! converted, as checkpoints written before holders existed must restore.

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::error::{JournalError, RecordError};
use crate::ids::{AccessHash, ChunkKey, ChunkLocation, FileId, Holder, SegmentId, TimestampMs, VShard};

/// A change to the chunk index or the file manifests. The state changes only by applying
/// these (`state::MediaState::apply`), live and in replay alike.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[non_exhaustive]
pub enum MediaRecord {
    /// The next piece of a finishing file's chunk list, in file order. Chunks new to the index
    /// carry where their bytes were written (synced before this record was appended).
    FileChunks { file: FileId, chunks: Vec<ManifestChunk> },
    /// The file is complete: its chunk list is every `FileChunks` of this file, in order. It
    /// holds an uploader reference until `uploader_expires_at` or until a message takes it.
    FileFinished { meta: FileMeta, chunk_count: u32, uploader_expires_at: TimestampMs },
    /// A message took a reference (before the message itself is appended).
    ReferenceTaken { file: FileId },
    /// A message's reference was given back (after its tombstone is durable).
    ReferenceReleased { file: FileId, at: TimestampMs },
    /// No message took the file in time.
    UploaderReferenceExpired { file: FileId, at: TimestampMs },
    /// Compaction copied live chunks out of `from` (the copies were synced first).
    ChunksMoved { from: SegmentId, moves: Vec<ChunkMove> },
    /// Compaction is done with `segment`: every chunk still in it is unreferenced and leaves
    /// the index, and the file may be deleted.
    SegmentRetired { segment: SegmentId },
    /// The sweep found a refcount that did not match the manifests and set it right.
    RefcountRepaired { key: ChunkKey, refcount: u64, at: TimestampMs },
    /// A message, named by its idempotency key, took a keyed reference (before the message
    /// itself is appended). Like `ReferenceTaken`, it takes over the uploader's reference.
    HolderTaken { file: FileId, holder: Holder, at: TimestampMs },
    /// A keyed reference was given back; the file goes when nothing else holds it.
    HolderReleased { file: FileId, holder: Holder, at: TimestampMs },
    /// The holder's message is known to be durable, so the leak check stops asking about it.
    HolderConfirmed { file: FileId, holder: Holder },
}

/// One chunk of a file, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ManifestChunk {
    pub key: ChunkKey,
    pub length: u32,
    /// Set when this record adds the chunk to the index.
    pub stored_at: Option<ChunkLocation>,
}

/// A file's description; its chunk list travels separately.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FileMeta {
    pub id: FileId,
    pub size: u64,
    /// Keyed xxh3-128 of the whole content.
    pub content_hash: u128,
    pub name: String,
    pub mime_type: String,
    pub access_hash: AccessHash,
}

/// A chunk's new place after compaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ChunkMove {
    pub key: ChunkKey,
    pub to: ChunkLocation,
}

impl MediaRecord {
    /// The vshard the record belongs to, so one vshard's records can be moved with it (DESIGN
    /// §2); `None` for records about the shard's own segments.
    pub fn vshard(&self) -> Option<VShard> {
        match self {
            MediaRecord::FileChunks { file, .. }
            | MediaRecord::ReferenceTaken { file }
            | MediaRecord::ReferenceReleased { file, .. }
            | MediaRecord::UploaderReferenceExpired { file, .. }
            | MediaRecord::HolderTaken { file, .. }
            | MediaRecord::HolderReleased { file, .. }
            | MediaRecord::HolderConfirmed { file, .. } => Some(file.vshard()),
            MediaRecord::FileFinished { meta, .. } => Some(meta.id.vshard()),
            MediaRecord::RefcountRepaired { key, .. } => Some(key.vshard()),
            MediaRecord::ChunksMoved { .. } | MediaRecord::SegmentRetired { .. } => None,
        }
    }

    /// Archives the record; the bytes start 8-byte aligned as rkyv requires.
    pub fn encode(&self) -> Result<AlignedVec, JournalError> {
        rkyv::to_bytes::<rancor::Error>(self).map_err(|_| JournalError::Encode)
    }

    /// Validates and decodes a record (copying first when `bytes` is not aligned).
    pub fn decode(bytes: &[u8]) -> Result<MediaRecord, RecordError> {
        decode_validated(bytes)
    }
}

/// The durable state at one point of the journal, for checkpoints.
#[derive(Clone, Debug, PartialEq, Eq, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MediaSnapshot {
    pub version: u32,
    pub chunks: Vec<SnapshotChunk>,
    pub files: Vec<SnapshotFile>,
    /// Chunk lists of files whose `FileFinished` was not yet appended.
    pub pending: Vec<(FileId, Vec<ManifestChunk>)>,
    pub next_sequences: Vec<(VShard, u64)>,
    pub retired_segments: Vec<SegmentId>,
}

/// The snapshot format version written now. Version 1 (before holders) is still read;
/// any other version is refused, not misread.
pub const SNAPSHOT_VERSION: u32 = 2;
/// The layout before holders existed: files carry only the anonymous reference count.
const SNAPSHOT_VERSION_V1: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SnapshotChunk {
    pub key: ChunkKey,
    pub location: ChunkLocation,
    pub refcount: u64,
    pub unreferenced_since: Option<TimestampMs>,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SnapshotFile {
    pub meta: FileMeta,
    pub chunks: Vec<(ChunkKey, u32)>,
    /// Anonymous message references (`ReferenceTaken`), not counting holders.
    pub references: u64,
    pub uploader_expires_at: Option<TimestampMs>,
    /// Keyed message references: the holder, when it was taken, whether it is confirmed.
    pub holders: Vec<(Holder, TimestampMs, bool)>,
}

impl MediaSnapshot {
    pub fn encode(&self) -> Result<AlignedVec, JournalError> {
        rkyv::to_bytes::<rancor::Error>(self).map_err(|_| JournalError::Encode)
    }

    /// Validates and decodes a snapshot of the current layout, or of version 1 converted to
    /// it (files without holders), refusing other versions.
    ///
    /// rkyv archives do not describe themselves, so the layout is found by trying: the root
    /// (where `version` lives) is the same in both layouts, but a version 1 snapshot with files
    /// may fail validation as the current layout, and one without files passes it and says 1.
    pub fn decode(bytes: &[u8]) -> Result<MediaSnapshot, RecordError> {
        let current = decode_validated::<MediaSnapshot>(bytes);
        if let Ok(snapshot) = &current {
            if snapshot.version == SNAPSHOT_VERSION {
                return current;
            }
        }
        match decode_validated::<MediaSnapshotV1>(bytes) {
            Ok(old) if old.version == SNAPSHOT_VERSION_V1 => Ok(old.into_current()),
            Ok(old) => Err(RecordError::Version { found: old.version, expected: SNAPSHOT_VERSION }),
            Err(error) => match current {
                Ok(snapshot) => Err(RecordError::Version { found: snapshot.version, expected: SNAPSHOT_VERSION }),
                Err(_) => Err(error),
            },
        }
    }
}

/// The version 1 snapshot layout, read only to convert it.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct MediaSnapshotV1 {
    version: u32,
    chunks: Vec<SnapshotChunk>,
    files: Vec<SnapshotFileV1>,
    pending: Vec<(FileId, Vec<ManifestChunk>)>,
    next_sequences: Vec<(VShard, u64)>,
    retired_segments: Vec<SegmentId>,
}

/// A file of a version 1 snapshot: no holders.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SnapshotFileV1 {
    meta: FileMeta,
    chunks: Vec<(ChunkKey, u32)>,
    references: u64,
    uploader_expires_at: Option<TimestampMs>,
}

impl MediaSnapshotV1 {
    fn into_current(self) -> MediaSnapshot {
        let files = self
            .files
            .into_iter()
            .map(|file| SnapshotFile {
                meta: file.meta,
                chunks: file.chunks,
                references: file.references,
                uploader_expires_at: file.uploader_expires_at,
                holders: Vec::new(),
            })
            .collect();
        MediaSnapshot {
            version: SNAPSHOT_VERSION,
            chunks: self.chunks,
            files,
            pending: self.pending,
            next_sequences: self.next_sequences,
            retired_segments: self.retired_segments,
        }
    }
}

// rkyv finds a record's root at `length - size_of::<ArchivedMediaRecord>()`: if new variants
// made the archived enum larger, records already in journals would be misread.
const _: () = assert!(std::mem::size_of::<ArchivedMediaRecord>() == 96);

fn decode_validated<T>(bytes: &[u8]) -> Result<T, RecordError>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
{
    if (bytes.as_ptr() as usize).is_multiple_of(16) {
        return rkyv::from_bytes::<T, rancor::Error>(bytes).map_err(|_| RecordError::Invalid);
    }
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, rancor::Error>(&aligned).map_err(|_| RecordError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MediaRecord {
        let key = ChunkKey { hash: 0xDEAD_BEEF_u128 << 64 | 7, collision: 2 };
        let location = ChunkLocation { segment: SegmentId(3), offset: 8192, length: 65_536 };
        MediaRecord::FileChunks {
            file: FileId::new(9, VShard::new(17).expect("vshard")),
            chunks: vec![ManifestChunk { key, length: 65_536, stored_at: Some(location) }],
        }
    }

    /// Proves records round-trip, decode from unaligned bytes, and damaged or truncated bytes
    /// are refused or decode to something, never panic.
    #[test]
    fn records_round_trip_and_are_validated() {
        let record = sample();
        let bytes = record.encode().expect("encode");
        assert_eq!(MediaRecord::decode(&bytes).expect("decode"), record);
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        assert_eq!(MediaRecord::decode(&shifted[1..]).expect("unaligned decode"), record);
        assert!(MediaRecord::decode(&bytes[..bytes.len() - 3]).is_err());
        for index in 0..bytes.len() {
            let mut damaged = bytes.to_vec();
            damaged[index] ^= 0xFF;
            let _ = MediaRecord::decode(&damaged);
        }
    }

    /// Proves a record of the most chunks fits the journal's record bound.
    #[test]
    fn largest_record_fits_a_batch() {
        let chunk = ManifestChunk {
            key: ChunkKey { hash: u128::MAX, collision: u32::MAX },
            length: u32::MAX,
            stored_at: Some(ChunkLocation { segment: SegmentId(u64::MAX), offset: u64::MAX, length: u32::MAX }),
        };
        let record = MediaRecord::FileChunks {
            file: FileId::from_raw(u64::MAX),
            chunks: vec![chunk; crate::limits::RECORD_CHUNKS_MAX],
        };
        let bytes = record.encode().expect("encode");
        println!("largest record: {} bytes", bytes.len());
        assert!(bytes.len() <= crate::limits::JOURNAL_RECORD_BYTES_MAX, "{} bytes", bytes.len());
        assert!(bytes.len() / crate::limits::RECORD_CHUNKS_MAX <= crate::limits::RECORD_CHUNK_ENTRY_BYTES_MAX);
        for holder_record in holder_records() {
            let holder_bytes = holder_record.encode().expect("encode").len();
            assert!(holder_bytes < bytes.len(), "{holder_record:?} is {holder_bytes} bytes");
        }
    }

    fn holder_records() -> Vec<MediaRecord> {
        let file = FileId::new(5, VShard::new(4095).expect("vshard"));
        let holder = Holder { chat: u64::MAX, sender: u64::MAX - 1, random_id: u64::MAX - 2 };
        vec![
            MediaRecord::HolderTaken { file, holder, at: TimestampMs(u64::MAX) },
            MediaRecord::HolderReleased { file, holder, at: TimestampMs(u64::MAX) },
            MediaRecord::HolderConfirmed { file, holder },
        ]
    }

    /// Proves the holder records round-trip, belong to their file's vshard, and that the
    /// variants before them kept their tags (the tag is the first byte of the archived enum).
    #[test]
    fn holder_records_round_trip_after_the_old_variants() {
        for (record, tag) in holder_records().into_iter().zip(8u8..) {
            let bytes = record.encode().expect("encode");
            assert_eq!(MediaRecord::decode(&bytes).expect("decode"), record);
            assert_eq!(record.vshard(), VShard::new(4095));
            assert_eq!(bytes[bytes.len() - std::mem::size_of::<ArchivedMediaRecord>()], tag, "{record:?}");
        }
        let old =
            MediaRecord::RefcountRepaired { key: ChunkKey { hash: 1, collision: 0 }, refcount: 2, at: TimestampMs(3) };
        let bytes = old.encode().expect("encode");
        assert_eq!(bytes[bytes.len() - std::mem::size_of::<ArchivedMediaRecord>()], 7);
    }

    fn v1_file(id: u64, references: u64) -> SnapshotFileV1 {
        let key = ChunkKey { hash: u128::from(id) << 64 | 5, collision: 0 };
        SnapshotFileV1 {
            meta: FileMeta {
                id: FileId::from_raw(id),
                size: 1000,
                content_hash: 77,
                name: "old.bin".into(),
                mime_type: "application/octet-stream".into(),
                access_hash: AccessHash::new(99),
            },
            chunks: vec![(key, 1000)],
            references,
            uploader_expires_at: (references == 0).then_some(TimestampMs(123)),
        }
    }

    /// Proves a snapshot in the version 1 layout (no holders) decodes into the current layout,
    /// files and all, with no holders; with and without files (a version 1 snapshot without
    /// files also validates as the current layout, and is told apart by its version).
    #[test]
    fn version_1_snapshots_are_converted() {
        for files in [vec![v1_file(4103, 2), v1_file(8199, 0)], Vec::new()] {
            let old = MediaSnapshotV1 {
                version: 1,
                chunks: Vec::new(),
                files: files.clone(),
                pending: vec![(FileId::from_raw(12_295), Vec::new())],
                next_sequences: vec![(VShard::new(7).expect("vshard"), 3)],
                retired_segments: vec![SegmentId(4)],
            };
            let bytes = rkyv::to_bytes::<rancor::Error>(&old).expect("encode");
            let snapshot = MediaSnapshot::decode(&bytes).expect("a version 1 snapshot decodes");
            assert_eq!(snapshot.version, SNAPSHOT_VERSION);
            assert_eq!(snapshot.files.len(), files.len());
            for (new, old) in snapshot.files.iter().zip(&files) {
                assert_eq!((&new.meta, &new.chunks, new.references), (&old.meta, &old.chunks, old.references));
                assert_eq!(new.uploader_expires_at, old.uploader_expires_at);
                assert!(new.holders.is_empty());
            }
            assert_eq!(snapshot.pending, old.pending);
            assert_eq!(snapshot.next_sequences, old.next_sequences);
            assert_eq!(snapshot.retired_segments, old.retired_segments);
        }
        let other = MediaSnapshotV1 {
            version: 7,
            chunks: Vec::new(),
            files: vec![v1_file(4103, 1)],
            pending: Vec::new(),
            next_sequences: Vec::new(),
            retired_segments: Vec::new(),
        };
        let bytes = rkyv::to_bytes::<rancor::Error>(&other).expect("encode");
        assert!(matches!(MediaSnapshot::decode(&bytes), Err(RecordError::Version { found: 7, .. })));
    }

    /// Proves a current snapshot with holders round-trips.
    #[test]
    fn snapshots_with_holders_round_trip() {
        let v1 = v1_file(4103, 1);
        let file = SnapshotFile {
            meta: v1.meta,
            chunks: v1.chunks,
            references: 1,
            uploader_expires_at: None,
            holders: vec![
                (Holder { chat: 1, sender: 2, random_id: 3 }, TimestampMs(10), true),
                (Holder { chat: 1, sender: 2, random_id: 4 }, TimestampMs(11), false),
            ],
        };
        let snapshot = MediaSnapshot { version: SNAPSHOT_VERSION, files: vec![file], ..MediaSnapshot::default() };
        let bytes = snapshot.encode().expect("encode");
        assert_eq!(MediaSnapshot::decode(&bytes).expect("decode"), snapshot);
    }

    /// Proves a snapshot of another version is refused.
    #[test]
    fn snapshot_version_is_checked() {
        let snapshot = MediaSnapshot { version: SNAPSHOT_VERSION + 1, ..MediaSnapshot::default() };
        let bytes = snapshot.encode().expect("encode");
        assert!(matches!(MediaSnapshot::decode(&bytes), Err(RecordError::Version { .. })));
    }
}
