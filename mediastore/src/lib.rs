//! ferrogram's media store (DESIGN §7): chunked uploads, content-defined chunking, a
//! deduplicated chunk store per shard, reference counting and ranged downloads.
//!
//! It imports nothing of the engine, the network or the gateway. What it must make durable it
//! describes as [`MediaRecord`]s and hands to a [`Journal`] it defines (the engine's WAL
//! implements it); checkpoints are [`MediaSnapshot`]s. See `docs/ARCHITECTURE.md` for the
//! map and [`shard`] for the order of durability that makes crashes harmless.

pub mod cache;
pub mod chunker;
pub mod config;
pub mod error;
pub mod hash;
pub mod ids;
pub mod journal;
pub mod limits;
pub mod records;
pub mod segment;
pub mod shard;
pub mod state;
pub mod upload;

pub use config::MediaConfig;
pub use error::{
    ConfigError, FinishError, JournalError, OpenError, PutPartError, ReadError, RecordError, ReferenceError,
    StartError, StorageError,
};
pub use hash::ChunkHasher;
pub use ids::{
    AccessHash, ChunkKey, ChunkLocation, FileId, Holder, SegmentId, TimestampMs, UploadId, UploaderId, VShard,
};
pub use journal::{Journal, JournalFault, JournalTicket, MemoryJournal, Recovery};
pub use records::{MediaRecord, MediaSnapshot};
pub use segment::dma::{DmaSegmentReader, DmaSegments};
pub use segment::memory::{MemorySegmentReader, MemorySegments};
pub use segment::std_files::{StdSegmentReader, StdSegments};
pub use segment::{SegmentIo, SegmentReader};
pub use shard::{
    CompactionReport, FileInfo, FinishUpload, FinishedFile, MaintenanceReport, MediaShard, PendingRead, ReadsInFlight,
    StartUpload, StorageStats, SweepReport,
};
pub use state::HolderEntry;
pub use upload::PartAccepted;
