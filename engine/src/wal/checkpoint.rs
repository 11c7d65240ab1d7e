//! The checkpoint file format: a ticket (the LSN the state is captured at and where replay
//! resumes) and the state bytes the layers above hand in, under one checksummed header.
//!
//! ```text
//! header = magic u32 · version u16 · reserved u16 · lsn u64 · replay_segment u64
//!          · replay_offset u64 · state_bytes u64 · state_checksum u64 · reserved [u8; 8]
//!          · header_checksum u64            (64 bytes, xxh3-64 seeded with the log's salt)
//! file   = header · state
//! ```
//!
//! Files are named `checkpoint-<lsn>.ckpt`; a checkpoint is written to a temporary name,
//! synced, renamed and its directory synced, so a crash leaves either the whole file or none.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::ids::{Lsn, SegmentId};
use crate::wal::core::{CheckpointTicket, LogPosition};

pub const CHECKPOINT_MAGIC: u32 = u32::from_le_bytes(*b"FGCK");
pub const CHECKPOINT_VERSION: u16 = 1;
pub const CHECKPOINT_HEADER_BYTES: usize = 64;

/// The file name of the checkpoint at `lsn`.
pub fn file_name(lsn: Lsn) -> String {
    format!("checkpoint-{:020}.ckpt", lsn.0)
}

/// The LSN in a checkpoint file name, if it is one.
pub fn parse_file_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_prefix("checkpoint-")?.strip_suffix(".ckpt")?;
    (digits.len() == 20).then(|| digits.parse().ok().map(Lsn)).flatten()
}

/// Header and state, ready to write.
pub fn encode(ticket: CheckpointTicket, state: &[u8], salt: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHECKPOINT_HEADER_BYTES + state.len());
    out.extend_from_slice(&encode_header(ticket, state.len() as u64, xxh3_64_with_seed(state, salt), salt));
    out.extend_from_slice(state);
    out
}

/// The header of a checkpoint of `state_bytes` bytes whose xxh3-64 (seeded with `salt`) is
/// `state_checksum`: written apart from the state, which may be too large to copy behind it.
pub fn encode_header(
    ticket: CheckpointTicket,
    state_bytes: u64,
    state_checksum: u64,
    salt: u64,
) -> [u8; CHECKPOINT_HEADER_BYTES] {
    let mut out = [0u8; CHECKPOINT_HEADER_BYTES];
    out[0..4].copy_from_slice(&CHECKPOINT_MAGIC.to_le_bytes());
    out[4..6].copy_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
    out[8..16].copy_from_slice(&ticket.lsn.0.to_le_bytes());
    out[16..24].copy_from_slice(&ticket.replay_from.segment.0.to_le_bytes());
    out[24..32].copy_from_slice(&ticket.replay_from.offset.to_le_bytes());
    out[32..40].copy_from_slice(&state_bytes.to_le_bytes());
    out[40..48].copy_from_slice(&state_checksum.to_le_bytes());
    let checksum = xxh3_64_with_seed(&out[..56], salt);
    out[56..64].copy_from_slice(&checksum.to_le_bytes());
    out
}

/// Why a checkpoint file was not usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint file is truncated")]
    Truncated,
    #[error("checkpoint header does not verify")]
    BadHeader,
    #[error("checkpoint state does not verify")]
    BadState,
}

/// What a checkpoint's header says, once the header itself verified: its ticket, and the
/// length and checksum of the state after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointHeader {
    pub ticket: CheckpointTicket,
    state_bytes: u64,
    state_checksum: u64,
}

/// Verifies a checkpoint's header (its first [`CHECKPOINT_HEADER_BYTES`] bytes) alone.
pub fn decode_header(bytes: &[u8], salt: u64) -> Result<CheckpointHeader, CheckpointError> {
    let header = bytes.get(..CHECKPOINT_HEADER_BYTES).ok_or(CheckpointError::Truncated)?;
    let u64_at = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    let magic = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let version = u16::from_le_bytes([header[4], header[5]]);
    if magic != CHECKPOINT_MAGIC
        || version != CHECKPOINT_VERSION
        || u64_at(56) != xxh3_64_with_seed(&header[..56], salt)
    {
        return Err(CheckpointError::BadHeader);
    }
    let ticket = CheckpointTicket {
        lsn: Lsn(u64_at(8)),
        replay_from: LogPosition { segment: SegmentId(u64_at(16)), offset: u64_at(24) },
    };
    Ok(CheckpointHeader { ticket, state_bytes: u64_at(32), state_checksum: u64_at(40) })
}

/// Finds a checkpoint's state by its header, which must verify; the state itself is not
/// verified yet. Check it with [`CheckpointHeader::state_verifies`] before trusting anything
/// read from it.
pub fn locate(bytes: &[u8], salt: u64) -> Result<(CheckpointHeader, &[u8]), CheckpointError> {
    let header = decode_header(bytes, salt)?;
    let state_bytes = usize::try_from(header.state_bytes).map_err(|_| CheckpointError::BadHeader)?;
    let state = bytes
        .get(CHECKPOINT_HEADER_BYTES..CHECKPOINT_HEADER_BYTES.saturating_add(state_bytes))
        .ok_or(CheckpointError::Truncated)?;
    Ok((header, state))
}

impl CheckpointHeader {
    /// Whether `state` is the state this header was written with.
    pub fn state_verifies(&self, state: &[u8], salt: u64) -> bool {
        xxh3_64_with_seed(state, salt) == self.state_checksum
    }
}

/// Verifies a checkpoint file and returns its ticket and state.
pub fn decode(bytes: &[u8], salt: u64) -> Result<(CheckpointTicket, &[u8]), CheckpointError> {
    let (header, state) = locate(bytes, salt)?;
    if !header.state_verifies(state, salt) {
        return Err(CheckpointError::BadState);
    }
    Ok((header.ticket, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> CheckpointTicket {
        CheckpointTicket { lsn: Lsn(42), replay_from: LogPosition { segment: SegmentId(3), offset: 8192 } }
    }

    /// Proves a checkpoint round-trips and that a flipped bit anywhere is refused.
    #[test]
    fn round_trip_and_every_bit_flip_refused() {
        let state = b"shard state bytes".to_vec();
        let bytes = encode(ticket(), &state, 7);
        let (decoded, decoded_state) = decode(&bytes, 7).expect("valid checkpoint");
        assert_eq!(decoded, ticket());
        assert_eq!(decoded_state, &state[..]);
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&damaged, 7).is_err(), "bit {bit} flipped was accepted");
        }
        assert_eq!(decode(&bytes[..bytes.len() - 1], 7), Err(CheckpointError::Truncated));
        assert!(decode(&bytes, 8).is_err(), "another log's salt must not verify");
    }

    /// Proves file names round-trip and foreign names are ignored.
    #[test]
    fn file_names() {
        assert_eq!(parse_file_name(&file_name(Lsn(99))), Some(Lsn(99)));
        assert_eq!(parse_file_name("checkpoint-12.ckpt"), None);
        assert_eq!(parse_file_name("checkpoint-00000000000000000099.ckpt.tmp"), None);
    }
}
