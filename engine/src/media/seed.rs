//! The deployment's secret seed for the media store's keyed chunk hashes (DESIGN §7), kept in
//! `data_dir/media.seed` when the host does not supply one. It must never change for a data
//! directory: new uploads would stop deduplicating against what is stored.
//!
//! ```text
//! file = magic "FGMSEED1" · seed u64 · xxh3-64(magic · seed) u64     (24 bytes)
//! ```

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::xxh3_64;

pub const SEED_FILE: &str = "media.seed";
const SEED_MAGIC: &[u8; 8] = b"FGMSEED1";
const SEED_FILE_BYTES: usize = 24;

/// Reads the data directory's seed, or makes one from the operating system's random source
/// and stores it durably (temporary file, fsync, rename, directory fsync). Blocking: call it
/// while the engine opens, before any shard serves. A damaged file is an error, never
/// silently replaced.
pub fn load_or_create(data_dir: &Path) -> Result<u64, (PathBuf, io::Error)> {
    let path = data_dir.join(SEED_FILE);
    let with_path = |error| (path.clone(), error);
    match std::fs::read(&path) {
        Ok(bytes) => decode(&bytes).ok_or_else(|| {
            with_path(io::Error::new(io::ErrorKind::InvalidData, "the media seed file is damaged; restore it"))
        }),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let seed = random_u64().map_err(with_path)?;
            write_durably(data_dir, &path, &encode(seed)).map_err(with_path)?;
            Ok(seed)
        }
        Err(error) => Err(with_path(error)),
    }
}

fn encode(seed: u64) -> [u8; SEED_FILE_BYTES] {
    let mut bytes = [0u8; SEED_FILE_BYTES];
    bytes[..8].copy_from_slice(SEED_MAGIC);
    bytes[8..16].copy_from_slice(&seed.to_le_bytes());
    let checksum = xxh3_64(&bytes[..16]);
    bytes[16..].copy_from_slice(&checksum.to_le_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> Option<u64> {
    if bytes.len() != SEED_FILE_BYTES || &bytes[..8] != SEED_MAGIC {
        return None;
    }
    let checksum = u64::from_le_bytes(bytes[16..24].try_into().ok()?);
    if checksum != xxh3_64(&bytes[..16]) {
        return None;
    }
    Some(u64::from_le_bytes(bytes[8..16].try_into().ok()?))
}

fn write_durably(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)?;
    std::fs::File::open(dir)?.sync_all()
}

fn random_u64() -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer it is given.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if filled != bytes.len() as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the seed is made once, read back the same, and a damaged file is refused.
    #[test]
    fn seed_is_stable_and_checked() {
        let dir = std::env::temp_dir().join(format!("ferrogram-media-seed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let _ = std::fs::remove_file(dir.join(SEED_FILE));
        let first = load_or_create(&dir).expect("created");
        assert_eq!(load_or_create(&dir).expect("read back"), first);
        let mut bytes = std::fs::read(dir.join(SEED_FILE)).expect("file");
        bytes[9] ^= 1;
        std::fs::write(dir.join(SEED_FILE), &bytes).expect("damage");
        assert!(load_or_create(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
