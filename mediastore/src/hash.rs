//! Content hashes: chunks are addressed by xxh3-128 keyed with the deployment's secret seed,
//! and the whole file gets the same keyed hash. xxh3 is fast, not collision resistant against
//! someone who knows the seed, which is why a hash hit is always confirmed by comparing bytes
//! (see `shard::MediaShard::place_chunk`). The weak variant is the test hook that forces
//! collisions.

use xxhash_rust::xxh3::{xxh3_128_with_seed, Xxh3};

/// The chunk hash of a shard: keyed xxh3-128, optionally truncated for tests.
#[derive(Clone, Copy, Debug)]
pub struct ChunkHasher {
    seed: u64,
    mask: u128,
}

impl ChunkHasher {
    /// The production hasher.
    pub fn keyed(seed: u64) -> ChunkHasher {
        ChunkHasher { seed, mask: u128::MAX }
    }

    /// Keeps only the low `bits` bits, so different contents collide on purpose.
    pub fn weak_for_tests(seed: u64, bits: u32) -> ChunkHasher {
        assert!((1..=128).contains(&bits), "weak hash bits out of range");
        let mask = if bits == 128 { u128::MAX } else { (1u128 << bits) - 1 };
        ChunkHasher { seed, mask }
    }

    pub fn from_config(config: &crate::MediaConfig) -> ChunkHasher {
        match config.weak_hash_bits_for_tests {
            Some(bits) => ChunkHasher::weak_for_tests(config.hash_seed, bits),
            None => ChunkHasher::keyed(config.hash_seed),
        }
    }

    pub fn hash(&self, bytes: &[u8]) -> u128 {
        xxh3_128_with_seed(bytes, self.seed) & self.mask
    }

    /// The whole-file hash of `bytes` at once (what the streaming hasher computes).
    pub fn whole_file_hash(&self, bytes: &[u8]) -> u128 {
        xxh3_128_with_seed(bytes, self.seed)
    }

    /// A streaming hasher for a whole file (never truncated: it is an integrity check).
    pub fn whole_file(&self) -> Xxh3 {
        Xxh3::with_seed(self.seed)
    }
}

/// The unkeyed checksum of a frame's payload and header, seeded with the segment number so a
/// frame copied into another segment does not verify there.
pub fn frame_checksum(bytes: &[u8], segment_seed: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(bytes, segment_seed)
}

/// A short digest of a part already folded into its file, to tell a retry with the same bytes
/// from one with different bytes without keeping the part.
pub fn part_digest(bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the seed keys the hash and the weak hasher keeps only the bits asked for.
    #[test]
    fn seed_keys_and_weak_truncates() {
        let bytes = b"the same bytes";
        assert_ne!(ChunkHasher::keyed(1).hash(bytes), ChunkHasher::keyed(2).hash(bytes));
        let weak = ChunkHasher::weak_for_tests(1, 4);
        assert!(weak.hash(bytes) < 16);
        assert_eq!(weak.hash(bytes), ChunkHasher::keyed(1).hash(bytes) & 15);
    }
}
