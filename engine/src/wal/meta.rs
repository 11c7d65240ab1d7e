//! The log's identity file, `log.meta`: the secret salt every checksum is seeded with and the
//! generation, bumped whenever acknowledged records may have been lost: by every repair, and
//! by reopening after a crash a log that acknowledged before `fdatasync` (the layers above
//! turn it into the epochs of DESIGN §3).
//!
//! ```text
//! magic u32 · version u16 · flags u16 · salt u64 · generation u64 · checksum u64
//! flags: 1 = open (not closed cleanly), 2 = acknowledges before fdatasync (interval, none)
//! ```

use xxhash_rust::xxh3::xxh3_64;

pub const META_FILE: &str = "log.meta";
pub const META_MAGIC: u32 = u32::from_le_bytes(*b"FGLM");
pub const META_VERSION: u16 = 1;
pub const META_BYTES: usize = 32;

const FLAG_OPEN: u16 = 1;
const FLAG_RELAXED: u16 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LogMeta {
    pub salt: u64,
    pub generation: u64,
    /// The log is open, or its last run ended without a clean close.
    pub open: bool,
    /// The last run acknowledged records before they were synced.
    pub relaxed: bool,
}

impl LogMeta {
    /// A new log's identity.
    pub fn new(salt: u64) -> LogMeta {
        LogMeta { salt, ..LogMeta::default() }
    }

    /// Whether the last run may have acknowledged records that did not survive it.
    pub fn may_have_lost_acknowledged(&self) -> bool {
        self.open && self.relaxed
    }
}

impl LogMeta {
    pub fn encode(&self) -> [u8; META_BYTES] {
        let mut out = [0u8; META_BYTES];
        out[0..4].copy_from_slice(&META_MAGIC.to_le_bytes());
        out[4..6].copy_from_slice(&META_VERSION.to_le_bytes());
        let flags = if self.open { FLAG_OPEN } else { 0 } | if self.relaxed { FLAG_RELAXED } else { 0 };
        out[6..8].copy_from_slice(&flags.to_le_bytes());
        out[8..16].copy_from_slice(&self.salt.to_le_bytes());
        out[16..24].copy_from_slice(&self.generation.to_le_bytes());
        let checksum = xxh3_64(&out[..24]);
        out[24..32].copy_from_slice(&checksum.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<LogMeta> {
        let bytes = bytes.get(..META_BYTES)?;
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let valid = bytes[0..4] == META_MAGIC.to_le_bytes()
            && bytes[4..6] == META_VERSION.to_le_bytes()
            && u64_at(24) == xxh3_64(&bytes[..24]);
        let flags = u16::from_le_bytes([bytes[6], bytes[7]]);
        valid.then(|| LogMeta {
            salt: u64_at(8),
            generation: u64_at(16),
            open: flags & FLAG_OPEN != 0,
            relaxed: flags & FLAG_RELAXED != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the meta file round-trips and a damaged one is refused.
    #[test]
    fn round_trip() {
        let meta = LogMeta { salt: 0xfeed, generation: 3, open: true, relaxed: true };
        let bytes = meta.encode();
        assert_eq!(LogMeta::decode(&bytes), Some(meta));
        let mut damaged = bytes;
        damaged[9] ^= 1;
        assert_eq!(LogMeta::decode(&damaged), None);
        assert_eq!(LogMeta::decode(&bytes[..10]), None);
    }
}
