//! Limits and settings of the engine, in one place, with the assertions that relate them.

use std::path::PathBuf;
use std::str::FromStr;

use crate::wal::format::{BATCH_HEADER_BYTES, BLOCK_BYTES, RECORD_HEADER_BYTES};

pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
pub const BATCH_BYTES_MAX_DEFAULT: usize = 1 << 20;
pub const BATCH_RECORDS_MAX_DEFAULT: u32 = 65_536;
/// Sealed batches waiting behind the one being written; appends beyond it get `Backpressure`.
pub const PENDING_BATCHES_MAX_DEFAULT: usize = 8;
/// Largest record payload the log takes; a larger one is refused, never split.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = BATCH_BYTES_MAX_DEFAULT - BATCH_HEADER_BYTES - RECORD_HEADER_BYTES;
/// Requests a shard's inbound queue holds before answering `Overloaded`.
pub const SHARD_QUEUE_DEPTH_DEFAULT: usize = 16_384;
/// Capacity of each cross-shard channel (NOTES-runtime: small capacities ping-pong wake-ups).
pub const MESH_CHANNEL_CAPACITY: usize = 1024;
/// Most shards an engine runs; the vshard table must give every shard at least one vshard.
pub const SHARD_COUNT_MAX: usize = 256;
/// Checkpoints kept on disk; the log keeps every segment the oldest of them needs.
pub const CHECKPOINTS_RETAINED: usize = 2;
/// After a full disk refused a new segment, how long before preparing one is tried again.
pub const PREPARE_RETRY_MS: u64 = 1000;
/// Size of each zero-filling write when a fresh segment is pre-written.
pub const PREWRITE_CHUNK_BYTES: usize = 256 << 10;
/// A checkpoint file being written is synced every this many bytes (see `wal::checkpoint_file`).
pub const CHECKPOINT_SYNC_EVERY_BYTES: usize = 8 << 20;
/// Writes of `PREWRITE_CHUNK_BYTES` a checkpoint file being written keeps in flight, at most
/// (`LogConfig::checkpoint_writes_in_flight`): one sync interval's worth.
pub const CHECKPOINT_WRITES_IN_FLIGHT_MAX: usize = CHECKPOINT_SYNC_EVERY_BYTES / PREWRITE_CHUNK_BYTES;
const _: () = assert!(CHECKPOINT_SYNC_EVERY_BYTES.is_multiple_of(PREWRITE_CHUNK_BYTES));
/// Longest a pre-write chunk waits for the log's own write or sync to finish first.
pub const PREWRITE_YIELD: std::time::Duration = std::time::Duration::from_millis(2);
/// Chunk the recovery read-ahead thread reads at a time.
pub const PREFETCH_CHUNK_BYTES: u64 = 8 << 20;
/// How many segments the recovery read-ahead may run ahead of the scan (bounds the page
/// cache it fills for a log larger than memory).
pub const PREFETCH_SEGMENTS_AHEAD: u64 = 4;

const _: () = assert!(SEGMENT_BYTES_DEFAULT.is_multiple_of(BLOCK_BYTES as u64));
const _: () = assert!(BATCH_BYTES_MAX_DEFAULT.is_multiple_of(BLOCK_BYTES));
const _: () = assert!(BATCH_BYTES_MAX_DEFAULT as u64 * 4 <= SEGMENT_BYTES_DEFAULT);
const _: () = assert!(SHARD_COUNT_MAX <= crate::ids::VSHARD_COUNT);
const _: () = assert!(PREWRITE_CHUNK_BYTES.is_multiple_of(BLOCK_BYTES));
const _: () = assert!(CHECKPOINTS_RETAINED >= 2, "a torn newest checkpoint must leave an older one");

/// When an append counts as acknowledged (DESIGN §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge after the batch is written and `fdatasync` returned.
    Sync,
    /// Acknowledge once written; `fdatasync` at most every `interval_ms`. A crash may lose
    /// the acknowledged writes of the last interval.
    Interval { interval_ms: u64 },
    /// Never `fdatasync`. Benchmarks only.
    None,
}

impl FromStr for Durability {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "sync" => Ok(Durability::Sync),
            "none" => Ok(Durability::None),
            _ => match text.strip_prefix("interval:").map(str::parse::<u64>) {
                Some(Ok(interval_ms)) if interval_ms > 0 => Ok(Durability::Interval { interval_ms }),
                _ => Err(format!("unknown durability {text:?}: expected sync, interval:<ms> (ms > 0) or none")),
            },
        }
    }
}

/// Settings of one shard's write-ahead log.
#[derive(Clone, Debug)]
pub struct LogConfig {
    pub durability: Durability,
    pub segment_bytes: u64,
    pub batch_bytes_max: usize,
    pub batch_records_max: u32,
    pub pending_batches_max: usize,
    /// Prepared segments kept ready ahead of the one being written.
    pub spare_segments: usize,
    /// Writes of 256 KiB a checkpoint file being written keeps in flight (1 to
    /// `CHECKPOINT_WRITES_IN_FLIGHT_MAX`, the default). More write checkpoints faster, so they
    /// are taken as often as `EngineConfig::checkpoint_every_bytes` asks and leave less log
    /// to replay after a crash; they also delay the log's own syncs more while they run. See
    /// OPERATIONS.md, "Checkpoint writes".
    pub checkpoint_writes_in_flight: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            durability: Durability::Sync,
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            batch_bytes_max: BATCH_BYTES_MAX_DEFAULT,
            batch_records_max: BATCH_RECORDS_MAX_DEFAULT,
            pending_batches_max: PENDING_BATCHES_MAX_DEFAULT,
            spare_segments: 1,
            checkpoint_writes_in_flight: CHECKPOINT_WRITES_IN_FLIGHT_MAX,
        }
    }
}

impl LogConfig {
    /// Checks the relations the log relies on; a bad configuration is an operator's error.
    pub fn validate(&self) -> Result<(), String> {
        let block = BLOCK_BYTES as u64;
        if self.batch_bytes_max < 2 * BLOCK_BYTES || !self.batch_bytes_max.is_multiple_of(BLOCK_BYTES) {
            return Err(format!(
                "batch_bytes_max {} must be a multiple of 4096 and at least 8192",
                self.batch_bytes_max
            ));
        }
        if !self.segment_bytes.is_multiple_of(block) || self.segment_bytes < 2 * self.batch_bytes_max as u64 {
            return Err(format!(
                "segment_bytes {} must be a multiple of 4096 and hold at least two batches of {} bytes",
                self.segment_bytes, self.batch_bytes_max
            ));
        }
        if self.segment_bytes > u32::MAX as u64 {
            return Err("segment_bytes must stay under 4 GiB (record offsets are 32-bit)".into());
        }
        if self.batch_records_max == 0 || self.pending_batches_max == 0 {
            return Err("batch_records_max and pending_batches_max must be positive".into());
        }
        if !(1..=CHECKPOINT_WRITES_IN_FLIGHT_MAX).contains(&self.checkpoint_writes_in_flight) {
            return Err(format!(
                "checkpoint_writes_in_flight {} must be between 1 and {CHECKPOINT_WRITES_IN_FLIGHT_MAX}",
                self.checkpoint_writes_in_flight
            ));
        }
        Ok(())
    }
}

/// Settings of an engine: where it keeps its data and how many shards it runs.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub data_dir: PathBuf,
    pub shards: usize,
    pub log: LogConfig,
    /// Pin shard `i` to this CPU list's `i`th entry; `None` pins shard `i` to CPU `i`.
    pub cpus: Option<Vec<usize>>,
    pub shard_queue_depth: usize,
    /// Truncate the log at the first corrupt batch instead of refusing to open. Bumps the
    /// log's generation, so the layers above know acknowledged data may have been lost.
    pub repair: bool,
    /// WAL bytes of messaging records a shard writes between automatic checkpoints of its
    /// messaging state (restart replays at most about this much).
    pub checkpoint_every_bytes: u64,
    /// A clean shutdown first lets a checkpoint in progress finish, then takes one more if at
    /// least this many bytes of messaging records came after the last one began (or a whole
    /// `checkpoint_every_bytes`, if that is smaller), so the next open replays little. The
    /// shutdown then lasts as long as that checkpoint. `u64::MAX` turns the extra one off.
    pub checkpoint_at_close_min_bytes: u64,
    /// Keep every WAL segment. By default a shard hands segments back for reuse once a
    /// checkpoint of its messaging state covers them (the older of the two retained
    /// checkpoints still bounds what is reused); a host that reads its own old records with
    /// `Engine::read` sets this.
    pub retain_log: bool,
    /// How the shards run the media store (DESIGN §7).
    pub media: crate::media::MediaSettings,
}

impl EngineConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            data_dir: data_dir.into(),
            shards: 1,
            log: LogConfig::default(),
            cpus: None,
            shard_queue_depth: SHARD_QUEUE_DEPTH_DEFAULT,
            repair: false,
            checkpoint_every_bytes: crate::messaging::limits::CHECKPOINT_EVERY_BYTES,
            checkpoint_at_close_min_bytes: crate::messaging::limits::CHECKPOINT_AT_CLOSE_MIN_BYTES,
            retain_log: false,
            media: crate::media::MediaSettings::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the durability flag parses every documented form and refuses the rest.
    #[test]
    fn durability_parses() {
        assert_eq!("sync".parse::<Durability>(), Ok(Durability::Sync));
        assert_eq!("none".parse::<Durability>(), Ok(Durability::None));
        assert_eq!("interval:250".parse::<Durability>(), Ok(Durability::Interval { interval_ms: 250 }));
        assert!("interval:0".parse::<Durability>().is_err());
        assert!("interval:x".parse::<Durability>().is_err());
        assert!("always".parse::<Durability>().is_err());
    }

    /// Proves the default log settings satisfy their own validation.
    #[test]
    fn default_log_config_is_valid() {
        assert_eq!(LogConfig::default().validate(), Ok(()));
        let tiny = LogConfig { segment_bytes: 8192, ..LogConfig::default() };
        assert!(tiny.validate().is_err());
    }
}
