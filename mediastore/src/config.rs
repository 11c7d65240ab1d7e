//! `MediaConfig`: the store's configurable limits and secrets, checked against the hard
//! bounds of `limits.rs` when a shard opens.

use crate::error::ConfigError;
use crate::limits::*;

/// How a shard of the media store behaves. Every field has a default (`MediaConfig::new`).
#[derive(Clone, Debug)]
pub struct MediaConfig {
    /// The deployment's secret seed for the keyed chunk and file hashes. Keep it secret and
    /// never change it for an existing store: chunk keys would no longer match their content.
    pub hash_seed: u64,
    /// Test hook: keep only this many bits of each chunk hash, so different chunks collide
    /// and the byte comparison on every hash hit is exercised. `None` in production.
    pub weak_hash_bits_for_tests: Option<u32>,
    /// Largest finished file.
    pub file_bytes_max: u64,
    /// Upload sessions open at once on this shard.
    pub uploads_max: usize,
    /// Bytes of parts held in memory for all uploads of the shard (parts that arrived ahead of
    /// the contiguous prefix, and each upload's chunker carry).
    pub staging_bytes_max: u64,
    /// The same bound for one upload.
    pub upload_staging_bytes_max: u64,
    /// An upload with no part for this long is dropped and its space comes back.
    pub upload_idle_timeout_ms: u64,
    /// How long a finished file is kept with no message referencing it.
    pub uploader_reference_ttl_ms: u64,
    /// How long an unreferenced chunk keeps its bytes before compaction may drop them.
    pub grace_period_ms: u64,
    /// Segments are rolled at this size.
    pub segment_bytes_max: u64,
    /// Bytes of chunks the read cache holds.
    pub cache_bytes_max: u64,
    /// Compaction rewrites a segment whose live bytes are under this fraction (per mille).
    pub compaction_live_per_mille: u32,
    /// Live bytes one compaction call may move.
    pub compaction_bytes_per_call: u64,
    /// Downloads reading from disk at once; past it `begin_read` waits for one to finish.
    pub reads_in_flight_max: usize,
    /// Bytes those downloads may hold (their disk reads and answers); past it `begin_read`
    /// waits too, unless no read is in flight (so one read always proceeds).
    pub read_bytes_in_flight_max: u64,
}

impl MediaConfig {
    /// Defaults, with the deployment's secret seed.
    pub fn new(hash_seed: u64) -> MediaConfig {
        MediaConfig {
            hash_seed,
            weak_hash_bits_for_tests: None,
            file_bytes_max: FILE_BYTES_MAX_DEFAULT,
            uploads_max: UPLOADS_MAX_DEFAULT,
            staging_bytes_max: STAGING_BYTES_DEFAULT,
            upload_staging_bytes_max: UPLOAD_STAGING_BYTES_DEFAULT,
            upload_idle_timeout_ms: UPLOAD_IDLE_TIMEOUT_MS_DEFAULT,
            uploader_reference_ttl_ms: UPLOADER_REFERENCE_TTL_MS_DEFAULT,
            grace_period_ms: GRACE_PERIOD_MS_DEFAULT,
            segment_bytes_max: SEGMENT_BYTES_DEFAULT,
            cache_bytes_max: CACHE_BYTES_DEFAULT,
            compaction_live_per_mille: COMPACTION_LIVE_PER_MILLE_DEFAULT,
            compaction_bytes_per_call: COMPACTION_BYTES_PER_CALL_DEFAULT,
            reads_in_flight_max: READS_IN_FLIGHT_MAX_DEFAULT,
            read_bytes_in_flight_max: READ_BYTES_IN_FLIGHT_MAX_DEFAULT,
        }
    }

    /// Refuses settings outside the hard bounds, naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, setting: &'static str, bound: String| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError { setting, bound })
            }
        };
        check(
            (1..=FILE_BYTES_MAX_LIMIT).contains(&self.file_bytes_max),
            "file_bytes_max",
            format!("1..={FILE_BYTES_MAX_LIMIT}"),
        )?;
        check((1..=UPLOADS_MAX_LIMIT).contains(&self.uploads_max), "uploads_max", format!("1..={UPLOADS_MAX_LIMIT}"))?;
        let staging_min = 2 * u64::from(PART_BYTES_MAX) + u64::from(CHUNK_BYTES_MAX);
        check(
            self.upload_staging_bytes_max >= staging_min,
            "upload_staging_bytes_max",
            format!(">= {staging_min} (two parts and a chunk)"),
        )?;
        check(
            self.staging_bytes_max >= self.upload_staging_bytes_max,
            "staging_bytes_max",
            ">= upload_staging_bytes_max".to_string(),
        )?;
        check(
            (SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes_max)
                && self.segment_bytes_max.is_multiple_of(BLOCK_BYTES),
            "segment_bytes_max",
            format!("{SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}, a multiple of {BLOCK_BYTES}"),
        )?;
        check(self.compaction_live_per_mille <= 1000, "compaction_live_per_mille", "0..=1000".to_string())?;
        check(
            self.compaction_bytes_per_call >= u64::from(CHUNK_BYTES_MAX),
            "compaction_bytes_per_call",
            format!(">= {CHUNK_BYTES_MAX}"),
        )?;
        check(
            (1..=READS_IN_FLIGHT_LIMIT).contains(&self.reads_in_flight_max),
            "reads_in_flight_max",
            format!("1..={READS_IN_FLIGHT_LIMIT}"),
        )?;
        check(
            self.read_bytes_in_flight_max >= READ_BYTES_TYPICAL_MAX,
            "read_bytes_in_flight_max",
            format!(">= {READ_BYTES_TYPICAL_MAX} (one read of a whole range)"),
        )?;
        check(
            self.weak_hash_bits_for_tests.is_none_or(|bits| (1..=128).contains(&bits)),
            "weak_hash_bits_for_tests",
            "1..=128".to_string(),
        )?;
        Ok(())
    }
}

impl Default for MediaConfig {
    /// Defaults with a zero seed: for tests and tools only; a deployment sets its own secret.
    fn default() -> MediaConfig {
        MediaConfig::new(0)
    }
}
