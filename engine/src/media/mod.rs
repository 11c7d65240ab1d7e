//! Media inside the engine (DESIGN §7): one `ferrogram_mediastore::MediaShard` per shard, on
//! the shard's executor, over chunk segments in `shard-N/media/` and journaled through the
//! shard's write-ahead log; its state is a section of the shard's checkpoints. [`Media`] is
//! the embedding API over it.
//!
//! - `api.rs`: the `Media` handle, routing by vshard, the in-flight part budget.
//! - `requests.rs`: what crosses into a shard.
//! - `driver.rs`: the task that owns a shard's store, its maintenance timer, checkpoint sections.
//! - `journal.rs`: `WalJournal`, the media store's `Journal` over the log.
//! - `recovery.rs`: rebuilding the store from a checkpoint section and replayed records.
//! - `checkpoint.rs`: the layout of a shard checkpoint's state (host, messaging, media).
//! - `config.rs`, `seed.rs`: settings and limits; the deployment's secret hash seed.

pub mod api;
pub mod checkpoint;
pub mod config;
pub(crate) mod driver;
pub mod journal;
pub mod recovery;
pub(crate) mod requests;
pub mod seed;

pub use self::api::{Media, MediaError, MediaStats, MediaUpload};
pub use self::config::MediaSettings;
pub use self::journal::MEDIA_RECORD_KIND;
pub use self::recovery::{MediaOpenError, MediaOpenReport};
/// The media store's own vocabulary (ids, requests, answers, errors), for embedders.
pub use ferrogram_mediastore as store;
pub use ferrogram_mediastore::{
    AccessHash, CompactionReport, FileId, FileInfo, FinishError, FinishUpload, FinishedFile, Holder, HolderEntry,
    MaintenanceReport, MediaConfig, PartAccepted, PutPartError, ReadError, ReferenceError, StartError, StartUpload,
    StorageError, StorageStats, SweepReport, UploadId, UploaderId,
};

use crate::ids::VShard;

/// The engine's vshard of a media vshard (both count 4096, `config.rs` asserts it).
pub(crate) fn route(vshard: ferrogram_mediastore::VShard) -> VShard {
    VShard::of(u64::from(vshard.get()))
}

impl From<VShard> for ferrogram_mediastore::VShard {
    fn from(vshard: VShard) -> Self {
        ferrogram_mediastore::VShard::new(vshard.index()).expect("both count 4096 vshards")
    }
}
