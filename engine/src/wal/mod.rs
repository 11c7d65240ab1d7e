//! The per-shard write-ahead log (DESIGN §4): its format, its sans-I/O core, recovery,
//! checkpoints, and the glommio driver that runs it on a shard.

pub mod archive;
pub mod checkpoint;
pub mod checkpoint_file;
pub mod chunked;
pub mod core;
pub mod driver;
pub mod format;
pub mod meta;
pub mod recovery;

pub use self::checkpoint_file::CheckpointSink;
pub use self::chunked::ChunkedBytes;
pub use self::core::{
    AppendError, Appended, CheckpointTicket, IoBuffer, IoCompletion, IoFailure, IoRequest, LogCore, LogPosition,
    LogStart, OwnedRecord, RecordPosition,
};
pub use self::format::Record;
pub use self::recovery::{Corruption, ReplayFrom, ScanOutcome, SegmentImage};
