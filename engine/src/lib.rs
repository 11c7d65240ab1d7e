//! ferrogram's storage and delivery engine: thread-per-core shards, each owning its
//! write-ahead log, behind a handle callable from any thread (DESIGN §2, §4).

pub mod config;
pub mod engine;
pub mod ids;
mod lifeline;
pub mod media;
pub mod messaging;
pub mod preflight;
pub mod shard;
pub mod sim;
pub mod vshards;
pub mod wal;

pub use config::{Durability, EngineConfig, LogConfig};
pub use engine::{AppendAck, Engine, EngineError, EngineHooks};
pub use ids::{Lsn, RecordKind, SegmentId, ShardId, VShard, VSHARD_COUNT};
pub use media::Media;
