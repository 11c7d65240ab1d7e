//! The media store's settings inside the engine and the limits of its shard driver, with the
//! `const` assertions that tie them to the log and to the media store's own bounds.

use ferrogram_mediastore::limits::{CHUNK_BYTES_MIN, PART_BYTES_MAX, RECORD_CHUNKS_MAX, RECORD_CHUNK_ENTRY_BYTES_MAX};
use ferrogram_mediastore::{ConfigError, MediaConfig};

use crate::config::{BATCH_BYTES_MAX_DEFAULT, RECORD_PAYLOAD_BYTES_MAX};
use crate::wal::format::{BATCH_HEADER_BYTES, RECORD_HEADER_BYTES};

/// Where a shard keeps its chunk segments, under `data_dir/shard-N/`.
pub const MEDIA_DIR: &str = "media";

/// How often each shard's media store drops idle uploads and expires uploader references.
pub const MAINTAIN_EVERY_MS_DEFAULT: u64 = 5_000;
/// How often it compacts segments (each call moves a bounded number of bytes).
pub const COMPACT_EVERY_MS_DEFAULT: u64 = 60_000;
/// How often it checks every refcount against the manifests.
pub const SWEEP_EVERY_MS_DEFAULT: u64 = 10 * 60_000;
/// Media requests waiting on one shard behind the one being served; more answer `Overloaded`.
/// The shard's request queue bounds what is on its way; this bounds what was taken off it.
/// Default leak check of message references: every 10 minutes, those older than 10 minutes.
pub const HOLDER_CHECK_EVERY_MS_DEFAULT: u64 = 10 * 60_000;
pub const HOLDER_GRACE_MS_DEFAULT: u64 = 10 * 60_000;
pub const QUEUE_MAX_DEFAULT: usize = 1024;
/// Bytes of upload parts on their way to one shard (sent, not yet stored); a part that would
/// pass it answers `Overloaded` before its bytes are queued.
pub const INFLIGHT_PART_BYTES_MAX_DEFAULT: u64 = 64 << 20;

/// An upper bound on a media record's payload: the most chunks a record names, each at its
/// largest, and room for the rest of the record (mediastore `records.rs`).
pub const MEDIA_RECORD_BYTES_MAX: usize = RECORD_CHUNKS_MAX * RECORD_CHUNK_ENTRY_BYTES_MAX + 4096;

// The default log batch holds the largest media record, so every file up to the media store's
// maximum can be journaled (smaller batches lower the file maximum, `file_bytes_max_for_batch`).
const _: () = assert!(MEDIA_RECORD_BYTES_MAX <= RECORD_PAYLOAD_BYTES_MAX);
const _: () = assert!(BATCH_BYTES_MAX_DEFAULT - BATCH_HEADER_BYTES - RECORD_HEADER_BYTES >= MEDIA_RECORD_BYTES_MAX);
// A shard must be able to take at least one whole part in flight.
const _: () = assert!(INFLIGHT_PART_BYTES_MAX_DEFAULT >= PART_BYTES_MAX as u64);
const _: () = assert!(MAINTAIN_EVERY_MS_DEFAULT <= COMPACT_EVERY_MS_DEFAULT);
const _: () = assert!(COMPACT_EVERY_MS_DEFAULT <= SWEEP_EVERY_MS_DEFAULT);
// Media and the engine agree on the number of vshards, so a file id's vshard routes as is.
const _: () = assert!(ferrogram_mediastore::ids::VSHARDS as usize == crate::ids::VSHARD_COUNT);

/// How the engine runs the media store on its shards.
#[derive(Clone, Debug)]
pub struct MediaSettings {
    /// The media store's own settings. Its `hash_seed` is replaced by [`Self::hash_seed`] or,
    /// when that is `None`, by the data directory's secret (`media.seed`, made at first open).
    pub store: MediaConfig,
    /// The deployment's secret seed for chunk hashes; `None` keeps it in the data directory.
    pub hash_seed: Option<u64>,
    pub maintain_every_ms: u64,
    pub compact_every_ms: u64,
    pub sweep_every_ms: u64,
    pub queue_max: usize,
    pub inflight_part_bytes_max: u64,
    /// How often each shard asks about its unconfirmed message references (see
    /// `messaging/upkeep.rs`), and how old one must be before it is asked about: far longer
    /// than a send spends between taking its reference and being answered.
    pub holder_check_every_ms: u64,
    pub holder_grace_ms: u64,
}

impl Default for MediaSettings {
    fn default() -> MediaSettings {
        MediaSettings {
            store: MediaConfig::default(),
            hash_seed: None,
            maintain_every_ms: MAINTAIN_EVERY_MS_DEFAULT,
            compact_every_ms: COMPACT_EVERY_MS_DEFAULT,
            sweep_every_ms: SWEEP_EVERY_MS_DEFAULT,
            queue_max: QUEUE_MAX_DEFAULT,
            inflight_part_bytes_max: INFLIGHT_PART_BYTES_MAX_DEFAULT,
            holder_check_every_ms: HOLDER_CHECK_EVERY_MS_DEFAULT,
            holder_grace_ms: HOLDER_GRACE_MS_DEFAULT,
        }
    }
}

impl MediaSettings {
    /// Refuses settings the driver cannot run with, naming the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let refuse = |setting: &'static str, bound: &str| Err(ConfigError { setting, bound: bound.to_string() });
        if self.maintain_every_ms == 0 || self.compact_every_ms == 0 || self.sweep_every_ms == 0 {
            return refuse("maintain_every_ms, compact_every_ms and sweep_every_ms", "> 0");
        }
        if self.holder_check_every_ms == 0 {
            return refuse("holder_check_every_ms", "> 0");
        }
        if self.queue_max == 0 {
            return refuse("queue_max", "> 0");
        }
        if self.inflight_part_bytes_max < u64::from(PART_BYTES_MAX) {
            return refuse("inflight_part_bytes_max", "at least one part (512 KiB)");
        }
        self.store.validate()
    }
}

/// The largest file whose chunk list is sure to fit records of a log whose batches hold
/// `batch_bytes_max` bytes: every chunk but the last is at least `CHUNK_BYTES_MIN`, and a
/// record must fit one batch. `u64::MAX` when the batch holds the largest record.
pub fn file_bytes_max_for_batch(batch_bytes_max: usize) -> u64 {
    let payload_bytes_max = batch_bytes_max.saturating_sub(BATCH_HEADER_BYTES + RECORD_HEADER_BYTES);
    if payload_bytes_max >= MEDIA_RECORD_BYTES_MAX {
        return u64::MAX;
    }
    let chunks = payload_bytes_max.saturating_sub(4096) / RECORD_CHUNK_ENTRY_BYTES_MAX;
    chunks.saturating_sub(1) as u64 * u64::from(CHUNK_BYTES_MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the default batch puts no bound on files, and a small batch bounds them so that
    /// the worst-case chunk list of the largest file still fits one record.
    #[test]
    fn small_batches_bound_the_file_size() {
        assert_eq!(file_bytes_max_for_batch(BATCH_BYTES_MAX_DEFAULT), u64::MAX);
        let bound = file_bytes_max_for_batch(256 << 10);
        let chunks_worst_case = bound / u64::from(CHUNK_BYTES_MIN) + 1;
        let record_bytes = chunks_worst_case as usize * RECORD_CHUNK_ENTRY_BYTES_MAX + 4096;
        assert!(bound > 16 << 20, "{bound}");
        assert!(record_bytes <= (256 << 10) - BATCH_HEADER_BYTES - RECORD_HEADER_BYTES, "{record_bytes}");
        assert!(file_bytes_max_for_batch(8192) < bound);
        assert!(MediaSettings::default().validate().is_ok());
    }
}
