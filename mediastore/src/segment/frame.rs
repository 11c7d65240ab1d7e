//! The on-disk frame of one chunk in a segment (little-endian, versioned):
//!
//! ```text
//!  0  magic "FGMC"        4  version (1)       5  kind (1 = chunk)   6  reserved (2)
//!  8  payload length u32  12 collision u32     16 hash u128
//! 32  segment number u64  40 payload checksum  48 reserved (8)      56 header checksum
//! 64  payload
//! ```
//!
//! Both checksums are xxh3-64 seeded with the segment number, so a frame that ended up in the
//! wrong file never verifies. Frames are packed back to back; each write is padded with
//! zeroes to a 4 KiB block and the next write starts on a fresh block, so a scan skips to the
//! next block when it meets zeroes.

use crate::hash::frame_checksum;
use crate::ids::{ChunkKey, SegmentId};
use crate::limits::{CHUNK_BYTES_MAX, FRAME_HEADER_BYTES};

pub const FRAME_MAGIC: [u8; 4] = *b"FGMC";
const FRAME_VERSION: u8 = 1;
const FRAME_KIND_CHUNK: u8 = 1;
const HEADER: usize = FRAME_HEADER_BYTES as usize;

/// A verified frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub key: ChunkKey,
    pub length: u32,
    pub payload_checksum: u64,
}

/// Appends the frame of `payload` to `out`.
pub fn encode_frame(out: &mut Vec<u8>, segment: SegmentId, key: ChunkKey, payload: &[u8]) {
    assert!(payload.len() <= CHUNK_BYTES_MAX as usize, "chunk larger than the chunker allows");
    let mut header = [0u8; HEADER];
    header[0..4].copy_from_slice(&FRAME_MAGIC);
    header[4] = FRAME_VERSION;
    header[5] = FRAME_KIND_CHUNK;
    header[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    header[12..16].copy_from_slice(&key.collision.to_le_bytes());
    header[16..32].copy_from_slice(&key.hash.to_le_bytes());
    header[32..40].copy_from_slice(&segment.0.to_le_bytes());
    header[40..48].copy_from_slice(&frame_checksum(payload, segment.0).to_le_bytes());
    let header_checksum = frame_checksum(&header[..56], segment.0);
    header[56..64].copy_from_slice(&header_checksum.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
}

/// Reads and verifies the header at the start of `bytes`.
pub fn decode_header(bytes: &[u8], segment: SegmentId) -> Result<FrameHeader, &'static str> {
    let header = bytes.get(..HEADER).ok_or("frame header cut short")?;
    if header[0..4] != FRAME_MAGIC {
        return Err("no frame magic");
    }
    let stored = u64::from_le_bytes(header[56..64].try_into().expect("8 bytes"));
    if frame_checksum(&header[..56], segment.0) != stored {
        return Err("frame header checksum mismatch");
    }
    if header[4] != FRAME_VERSION || header[5] != FRAME_KIND_CHUNK {
        return Err("unknown frame version or kind");
    }
    if u64::from_le_bytes(header[32..40].try_into().expect("8 bytes")) != segment.0 {
        return Err("frame belongs to another segment");
    }
    let length = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if length > CHUNK_BYTES_MAX {
        return Err("frame longer than any chunk");
    }
    let key = ChunkKey {
        hash: u128::from_le_bytes(header[16..32].try_into().expect("16 bytes")),
        collision: u32::from_le_bytes(header[12..16].try_into().expect("4 bytes")),
    };
    let payload_checksum = u64::from_le_bytes(header[40..48].try_into().expect("8 bytes"));
    Ok(FrameHeader { key, length, payload_checksum })
}

/// Verifies a whole frame (header and payload) read from `segment`, expecting `key`, and
/// returns its payload.
pub fn verify_frame(bytes: &[u8], segment: SegmentId, key: ChunkKey) -> Result<&[u8], &'static str> {
    let header = decode_header(bytes, segment)?;
    if header.key != key {
        return Err("frame holds another chunk");
    }
    let payload = bytes.get(HEADER..HEADER + header.length as usize).ok_or("frame payload cut short")?;
    if frame_checksum(payload, segment.0) != header.payload_checksum {
        return Err("frame payload checksum mismatch");
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a frame verifies where it was written and fails for another segment, another
    /// key, or any flipped bit in its header or payload.
    #[test]
    fn frames_verify_only_intact_and_in_place() {
        let key = ChunkKey { hash: 0x1234_5678_9ABC_DEF0_u128 << 40, collision: 1 };
        let mut frame = Vec::new();
        encode_frame(&mut frame, SegmentId(5), key, b"chunk payload");
        assert_eq!(verify_frame(&frame, SegmentId(5), key), Ok(&b"chunk payload"[..]));
        assert!(verify_frame(&frame, SegmentId(6), key).is_err());
        assert!(verify_frame(&frame, SegmentId(5), ChunkKey { collision: 0, ..key }).is_err());
        for index in 0..frame.len() {
            let mut damaged = frame.clone();
            damaged[index] ^= 0x10;
            assert!(verify_frame(&damaged, SegmentId(5), key).is_err(), "flip at {index} went unnoticed");
        }
    }
}
