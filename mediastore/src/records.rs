//! What the media store makes durable: `MediaRecord`s handed to a [`crate::Journal`], and the
//! `MediaSnapshot` of a checkpoint. Both are rkyv archives, always validated when decoded
//! (they may come from another version or a damaged disk; the journal's checksum is not
//! validation, NOTES-runtime).
//!
//! Every record is bounded: a file's chunk list is written in pieces of at most
//! `RECORD_CHUNKS_MAX` chunks ([`MediaRecord::FileChunks`]) before the
//! [`MediaRecord::FileFinished`] that completes it, so a record always fits a WAL batch.

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::error::{JournalError, RecordError};
use crate::ids::{AccessHash, ChunkKey, ChunkLocation, FileId, SegmentId, TimestampMs, VShard};

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
            | MediaRecord::UploaderReferenceExpired { file, .. } => Some(file.vshard()),
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

/// The snapshot format version; another version is refused, not misread.
pub const SNAPSHOT_VERSION: u32 = 1;

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
    pub references: u64,
    pub uploader_expires_at: Option<TimestampMs>,
}

impl MediaSnapshot {
    pub fn encode(&self) -> Result<AlignedVec, JournalError> {
        rkyv::to_bytes::<rancor::Error>(self).map_err(|_| JournalError::Encode)
    }

    /// Validates and decodes a snapshot, refusing other format versions.
    pub fn decode(bytes: &[u8]) -> Result<MediaSnapshot, RecordError> {
        let snapshot: MediaSnapshot = decode_validated(bytes)?;
        if snapshot.version != SNAPSHOT_VERSION {
            return Err(RecordError::Version { found: snapshot.version, expected: SNAPSHOT_VERSION });
        }
        Ok(snapshot)
    }
}

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
    }

    /// Proves a snapshot of another version is refused.
    #[test]
    fn snapshot_version_is_checked() {
        let snapshot = MediaSnapshot { version: SNAPSHOT_VERSION + 1, ..MediaSnapshot::default() };
        let bytes = snapshot.encode().expect("encode");
        assert!(matches!(MediaSnapshot::decode(&bytes), Err(RecordError::Version { .. })));
    }
}
