//! The vshard table (DESIGN §2): which shard owns each of the 4096 virtual shards, stored in
//! the data directory so a restart with another shard count cannot route keys to the wrong
//! shard.
//!
//! ```text
//! magic u32 · version u16 · shard_count u16 · owner u16 × 4096 · checksum u64 (xxh3-64)
//! ```

use std::io;
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

use crate::ids::{ShardId, VShard, VSHARD_COUNT};

pub const TABLE_FILE: &str = "vshards.table";
const TABLE_MAGIC: u32 = u32::from_le_bytes(*b"FGVT");
const TABLE_VERSION: u16 = 1;
const TABLE_BYTES: usize = 8 + 2 * VSHARD_COUNT + 8;

/// Why the table could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VShardTableError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is damaged (bad magic, version or checksum)")]
    Damaged { path: PathBuf },
    #[error("{path} is missing but the data directory holds shard directories: refusing to guess which shard owns which vshard")]
    Missing { path: PathBuf },
    #[error("the data directory was created with {stored} shards but {requested} were asked for; vshards would be routed to the wrong shards. Fix: start with --cores {stored} (resharding an existing data directory is not built yet)")]
    ShardCountMismatch { stored: usize, requested: usize },
}

/// vshard → shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VShardTable {
    shard_count: usize,
    owners: Vec<u16>,
}

impl VShardTable {
    /// The initial table: vshards dealt round-robin.
    pub fn round_robin(shard_count: usize) -> VShardTable {
        assert!((1..=crate::config::SHARD_COUNT_MAX).contains(&shard_count));
        VShardTable { shard_count, owners: (0..VSHARD_COUNT).map(|v| (v % shard_count) as u16).collect() }
    }

    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    pub fn owner(&self, vshard: VShard) -> ShardId {
        ShardId(self.owners[vshard.index() as usize])
    }

    /// Loads the table of `data_dir`, or stores a new one for `shard_count` shards.
    pub fn load_or_create(data_dir: &Path, shard_count: usize) -> Result<VShardTable, VShardTableError> {
        let path = data_dir.join(TABLE_FILE);
        let io_error = |source| VShardTableError::Io { path: path.clone(), source };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let table = VShardTable::decode(&bytes).ok_or(VShardTableError::Damaged { path: path.clone() })?;
                if table.shard_count != shard_count {
                    return Err(VShardTableError::ShardCountMismatch {
                        stored: table.shard_count,
                        requested: shard_count,
                    });
                }
                Ok(table)
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                let has_shards = std::fs::read_dir(data_dir)
                    .map_err(io_error)?
                    .filter_map(Result::ok)
                    .any(|entry| entry.file_name().to_string_lossy().starts_with("shard-"));
                if has_shards {
                    return Err(VShardTableError::Missing { path: path.clone() });
                }
                let table = VShardTable::round_robin(shard_count);
                let temporary = data_dir.join(format!("{TABLE_FILE}.tmp"));
                std::fs::write(&temporary, table.encode()).map_err(io_error)?;
                std::fs::File::open(&temporary).and_then(|file| file.sync_all()).map_err(io_error)?;
                std::fs::rename(&temporary, &path).map_err(io_error)?;
                std::fs::File::open(data_dir).and_then(|dir| dir.sync_all()).map_err(io_error)?;
                Ok(table)
            }
            Err(error) => Err(io_error(error)),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TABLE_BYTES);
        out.extend_from_slice(&TABLE_MAGIC.to_le_bytes());
        out.extend_from_slice(&TABLE_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.shard_count as u16).to_le_bytes());
        for owner in &self.owners {
            out.extend_from_slice(&owner.to_le_bytes());
        }
        let checksum = xxh3_64(&out);
        out.extend_from_slice(&checksum.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<VShardTable> {
        if bytes.len() != TABLE_BYTES {
            return None;
        }
        let (body, checksum) = bytes.split_at(TABLE_BYTES - 8);
        if xxh3_64(body) != u64::from_le_bytes(checksum.try_into().ok()?)
            || body[0..4] != TABLE_MAGIC.to_le_bytes()
            || body[4..6] != TABLE_VERSION.to_le_bytes()
        {
            return None;
        }
        let shard_count = u16::from_le_bytes([body[6], body[7]]) as usize;
        let owners: Vec<u16> = body[8..].chunks_exact(2).map(|pair| u16::from_le_bytes([pair[0], pair[1]])).collect();
        let valid = (1..=crate::config::SHARD_COUNT_MAX).contains(&shard_count)
            && owners.iter().all(|&owner| (owner as usize) < shard_count);
        valid.then_some(VShardTable { shard_count, owners })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the table is stored, reloaded identically, and that reopening with another
    /// shard count is refused rather than silently rerouting vshards.
    #[test]
    fn stored_and_shard_count_enforced() {
        let dir = std::env::temp_dir().join(format!("ferrogram-vshards-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let _ = std::fs::remove_file(dir.join(TABLE_FILE));
        let created = VShardTable::load_or_create(&dir, 3).expect("create");
        assert_eq!(created.owner(VShard::of(4)), ShardId(1));
        let loaded = VShardTable::load_or_create(&dir, 3).expect("reload");
        assert_eq!(created, loaded);
        match VShardTable::load_or_create(&dir, 2) {
            Err(VShardTableError::ShardCountMismatch { stored: 3, requested: 2 }) => {}
            other => panic!("expected a shard count mismatch, got {other:?}"),
        }
        let mut bytes = std::fs::read(dir.join(TABLE_FILE)).expect("read");
        bytes[100] ^= 1;
        std::fs::write(dir.join(TABLE_FILE), bytes).expect("write");
        assert!(matches!(VShardTable::load_or_create(&dir, 3), Err(VShardTableError::Damaged { .. })));
        std::fs::remove_file(dir.join(TABLE_FILE)).expect("remove");
        std::fs::create_dir_all(dir.join("shard-0")).expect("shard dir");
        assert!(matches!(VShardTable::load_or_create(&dir, 3), Err(VShardTableError::Missing { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
