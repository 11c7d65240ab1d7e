//! The store's vocabulary: newtypes for ids, keys, locations and time, so a segment number is
//! never passed where a file id was meant.

use std::fmt;

/// Number of virtual shards (DESIGN §2); ids carry theirs in the low 12 bits.
pub const VSHARDS: u16 = 4096;
const VSHARD_BITS: u32 = 12;

/// A virtual shard.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct VShard(u16);

impl VShard {
    /// `None` when `value` is not below [`VSHARDS`].
    pub fn new(value: u16) -> Option<VShard> {
        (value < VSHARDS).then_some(VShard(value))
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

/// A finished file: a per-vshard sequence number with the vshard in the low 12 bits, so
/// routing a file id is a mask (DESIGN §2).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq, Hash))]
pub struct FileId(u64);

impl FileId {
    pub fn new(sequence: u64, vshard: VShard) -> FileId {
        assert!(sequence < 1 << (64 - VSHARD_BITS), "file sequence overflows its id");
        FileId(sequence << VSHARD_BITS | u64::from(vshard.0))
    }

    pub fn from_raw(raw: u64) -> FileId {
        FileId(raw)
    }

    pub fn raw(self) -> u64 {
        self.0
    }

    pub fn vshard(self) -> VShard {
        VShard((self.0 & (u64::from(VSHARDS) - 1)) as u16)
    }

    pub fn sequence(self) -> u64 {
        self.0 >> VSHARD_BITS
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "file {}", self.0)
    }
}

/// The secret a client must present with a [`FileId`] to read it or reference it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct AccessHash(u64);

impl AccessHash {
    pub fn new(value: u64) -> AccessHash {
        AccessHash(value)
    }

    pub fn get(self) -> u64 {
        self.0
    }

    /// Compares without an early exit, so timing does not tell how much of a guess matched.
    pub fn matches(self, presented: AccessHash) -> bool {
        let difference = self.0 ^ presented.0;
        std::hint::black_box(difference) == 0
    }
}

impl fmt::Debug for AccessHash {
    // Access hashes are secrets: keep them out of logs.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("AccessHash(..)")
    }
}

/// An upload session. Random, so one client cannot guess another's upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UploadId(u64);

impl UploadId {
    pub fn from_raw(raw: u64) -> UploadId {
        UploadId(raw)
    }

    pub fn raw(self) -> u64 {
        self.0
    }
}

/// Who started an upload (the gateway's session or user id; opaque here). Together with the
/// client's own upload id it makes a retried `start` idempotent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UploaderId(pub u64);

/// A chunk's address: its keyed content hash and, when different contents share a hash,
/// which one of them (0 for the first). Bytes are compared before a key is shared.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq, Hash))]
pub struct ChunkKey {
    pub hash: u128,
    pub collision: u32,
}

impl ChunkKey {
    /// The chunk's vshard, taken from its hash (DESIGN §7: chunk → shard by the hash's vshard).
    pub fn vshard(self) -> VShard {
        VShard((self.hash as u16) & (VSHARDS - 1))
    }
}

/// A chunk segment file of one shard; numbers only grow, a file is never reused.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord, Hash))]
pub struct SegmentId(pub u64);

impl fmt::Display for SegmentId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "segment {}", self.0)
    }
}

/// Where a chunk's frame starts in its segment, and its payload length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ChunkLocation {
    pub segment: SegmentId,
    pub offset: u64,
    pub length: u32,
}

impl ChunkLocation {
    /// Header plus payload: the bytes the frame occupies in its segment.
    pub fn frame_bytes(self) -> u64 {
        u64::from(crate::limits::FRAME_HEADER_BYTES) + u64::from(self.length)
    }
}

/// A moment, in milliseconds since the Unix epoch. Time enters the store only as an input.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct TimestampMs(pub u64);

impl TimestampMs {
    pub fn plus_ms(self, duration_ms: u64) -> TimestampMs {
        TimestampMs(self.0.saturating_add(duration_ms))
    }
}

/// A keyed message reference on a file: the idempotency key of the message that holds it
/// (its chat, its sender and the client's random id), known before the message is appended.
/// Taking or releasing the same holder twice changes nothing the second time, so an outbox
/// that delivers a release at least once never frees a file another message still holds.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct Holder {
    pub chat: u64,
    pub sender: u64,
    pub random_id: u64,
}

/// Which `finish` a group of journal records belongs to: a file's chunk list is journaled in
/// bounded pieces, tied together by this number.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
#[rkyv(derive(Debug, PartialEq, Eq, Hash))]
pub struct FinishId(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a file id carries its vshard in the low 12 bits and its sequence above them.
    #[test]
    fn file_ids_route_by_mask() {
        let vshard = VShard::new(4095).expect("in range");
        let file = FileId::new(7, vshard);
        assert_eq!((file.vshard(), file.sequence()), (vshard, 7));
        assert_eq!(file.raw() & 0xFFF, 4095);
        assert!(VShard::new(VSHARDS).is_none());
    }
}
