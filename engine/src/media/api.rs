//! The media embedding API: [`Media`], a cloneable `Send + Sync` handle whose async methods
//! route each operation to the shard that owns it (DESIGN §2, §7). An upload lives on the shard
//! of the vshard it was started on (the uploader's user vshard), and so does the file it
//! becomes: a [`FileId`] carries that vshard in its low 12 bits, so routing a file is a mask.
//!
//! Like every engine request, an operation is queued before its future is first polled (a
//! full queue answers `Overloaded` at once), and dropping the future does not undo it.

use std::convert::Infallible;
use std::future::Future;

use ferrogram_mediastore::limits::PART_BYTES_MAX;
use ferrogram_mediastore::shard::check_download_range;
use ferrogram_mediastore::{
    AccessHash, CompactionReport, FileId, FileInfo, FinishError, FinishUpload, FinishedFile, Holder, MaintenanceReport,
    PartAccepted, PutPartError, ReadError, ReferenceError, StartError, StartUpload, StorageError, StorageStats,
    SweepReport, UploadId,
};

use crate::engine::{Engine, EngineError};
use crate::ids::ShardId;
use crate::media::recovery::MediaOpenReport;
use crate::media::requests::{MediaRequest, PartBytes, Reply};
use crate::shard::ShardRequest;

/// An upload in progress: where it lives and the store's id for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MediaUpload {
    /// The vshard the upload was started on; the finished file's id carries it.
    pub vshard: ferrogram_mediastore::VShard,
    pub id: UploadId,
}

/// Why a media operation failed: the shard could not take it, or the store refused it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaError<E> {
    /// The shard's queue, its media queue or its in-flight part budget is full; retry later.
    #[error("the shard is overloaded; retry later")]
    Overloaded,
    /// The shard has stopped (or is stopping).
    #[error("the shard's media store is not running")]
    Unavailable,
    /// The media store's own answer.
    #[error(transparent)]
    Store(E),
}

/// Storage statistics of every shard and their sum.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MediaStats {
    pub shards: Vec<StorageStats>,
    pub total: StorageStats,
}

/// The media API over an [`Engine`].
#[derive(Clone, Debug)]
pub struct Media {
    engine: Engine,
}

impl Media {
    pub(crate) fn new(engine: Engine) -> Media {
        Media { engine }
    }

    /// What each shard's media store found when it opened, by shard.
    pub fn open_reports(&self) -> &[MediaOpenReport] {
        self.engine.media_open_reports()
    }

    /// Opens an upload on the shard of `request.vshard` (the uploader's user vshard).
    pub fn start_upload(
        &self,
        request: StartUpload,
    ) -> impl Future<Output = Result<MediaUpload, MediaError<StartError>>> + Send + 'static {
        let vshard = request.vshard;
        let answer = self.call(self.shard_of(vshard), move |reply| MediaRequest::Start { request, reply });
        async move { answer.await.map(|id| MediaUpload { vshard, id }) }
    }

    /// Stores part `part` of an upload (any order; a retry with the same bytes is a
    /// `Duplicate`). The bytes count against the shard's in-flight part budget until stored.
    pub fn put_part(
        &self,
        upload: MediaUpload,
        part: u32,
        bytes: Vec<u8>,
    ) -> impl Future<Output = Result<PartAccepted, MediaError<PutPartError>>> + Send + 'static {
        let shard = self.shard_of(upload.vshard);
        // A part larger than any part is refused before it holds any budget.
        let reserved = if bytes.len() > PART_BYTES_MAX as usize {
            Err(MediaError::Store(PutPartError::PartTooLarge { part, bytes: bytes.len(), max: PART_BYTES_MAX }))
        } else {
            let (budget, max) = self.engine.media_part_budget(shard);
            PartBytes::reserve(bytes, budget, max).map_err(|_| MediaError::Overloaded)
        };
        let answer = reserved.map(|bytes| {
            self.call(shard, move |reply| MediaRequest::PutPart { upload: upload.id, part, bytes, reply })
        });
        async move { answer?.await }
    }

    /// Completes an upload: every part must be there. The file holds an expiring uploader
    /// reference until a message takes one.
    pub fn finish_upload(
        &self,
        upload: MediaUpload,
        request: FinishUpload,
    ) -> impl Future<Output = Result<FinishedFile, MediaError<FinishError>>> + Send + 'static {
        self.call(self.shard_of(upload.vshard), move |reply| MediaRequest::Finish { upload: upload.id, request, reply })
    }

    /// Drops an upload and gives its space back; `false` if it did not exist.
    pub fn cancel_upload(
        &self,
        upload: MediaUpload,
    ) -> impl Future<Output = Result<bool, MediaError<Infallible>>> + Send + 'static {
        self.call(self.shard_of(upload.vshard), move |reply| MediaRequest::Cancel { upload: upload.id, reply })
    }

    /// Reads `limit` bytes of a file at `offset` under Telegram's download rules (offset and
    /// limit multiples of 4 KiB, limit at most 1 MiB, not crossing a 1 MiB boundary).
    pub fn read(
        &self,
        file: FileId,
        access_hash: AccessHash,
        offset: u64,
        limit: u64,
    ) -> impl Future<Output = Result<Vec<u8>, MediaError<ReadError>>> + Send + 'static {
        // Refused here, before a shard is bothered.
        let checked = check_download_range(offset, limit).map_err(MediaError::Store);
        let answer = checked.map(|()| {
            self.call(self.shard_of(file.vshard()), move |reply| MediaRequest::Read {
                file,
                access_hash,
                offset,
                limit,
                reply,
            })
        });
        async move { answer?.await }
    }

    /// Describes a file to someone holding its access hash.
    pub fn file_info(
        &self,
        file: FileId,
        access_hash: AccessHash,
    ) -> impl Future<Output = Result<FileInfo, MediaError<ReadError>>> + Send + 'static {
        self.call(self.shard_of(file.vshard()), move |reply| MediaRequest::FileInfo { file, access_hash, reply })
    }

    /// Takes a message's reference on a file (before the message is appended).
    pub fn take_reference(
        &self,
        file: FileId,
        access_hash: AccessHash,
    ) -> impl Future<Output = Result<(), MediaError<ReferenceError>>> + Send + 'static {
        self.call(self.shard_of(file.vshard()), move |reply| MediaRequest::TakeReference { file, access_hash, reply })
    }

    /// Gives a message's reference back (once the message's tombstone is durable).
    pub fn release_reference(
        &self,
        file: FileId,
    ) -> impl Future<Output = Result<(), MediaError<ReferenceError>>> + Send + 'static {
        self.call(self.shard_of(file.vshard()), move |reply| MediaRequest::ReleaseReference { file, reply })
    }

    /// Takes a keyed reference on a file for the message whose idempotency key is `holder`
    /// (before the message is appended), and describes the file. Idempotent: a retry with the
    /// same holder changes nothing and answers the same.
    pub fn take_holder(
        &self,
        file: FileId,
        access_hash: AccessHash,
        holder: Holder,
    ) -> impl Future<Output = Result<FileInfo, MediaError<ReferenceError>>> + Send + 'static {
        self.call(self.shard_of(file.vshard()), move |reply| MediaRequest::TakeHolder {
            file,
            access_hash,
            holder,
            reply,
        })
    }

    /// Gives a keyed reference back; `false` when `holder` does not hold the file (already
    /// released, or never taken), so an outbox may deliver a release more than once.
    pub fn release_holder(
        &self,
        file: FileId,
        holder: Holder,
    ) -> impl Future<Output = Result<bool, MediaError<StorageError>>> + Send + 'static {
        self.call(self.shard_of(file.vshard()), move |reply| MediaRequest::ReleaseHolder { file, holder, reply })
    }

    /// Marks `holder` as belonging to a durable message (the leak check stops listing it);
    /// `false` when `holder` does not hold the file.
    pub fn confirm_holder(
        &self,
        file: FileId,
        holder: Holder,
    ) -> impl Future<Output = Result<bool, MediaError<StorageError>>> + Send + 'static {
        self.call(self.shard_of(file.vshard()), move |reply| MediaRequest::ConfirmHolder { file, holder, reply })
    }

    /// Unconfirmed holders on one shard taken at least `older_than_ms` ago.
    ///
    /// At most `limit`, in file then holder order. For a periodic leak check: the shard walks
    /// all its files to answer.
    pub async fn unconfirmed_holders(
        &self,
        shard: ShardId,
        older_than_ms: u64,
        limit: usize,
    ) -> Result<Vec<(FileId, Holder)>, MediaError<Infallible>> {
        self.call(shard, move |reply| MediaRequest::UnconfirmedHolders { older_than_ms, limit, reply }).await
    }

    /// Storage statistics of every shard and their sum.
    pub async fn stats(&self) -> Result<MediaStats, MediaError<Infallible>> {
        let answers: Vec<_> = self.every_shard(|reply| MediaRequest::Stats { reply });
        let mut stats = MediaStats::default();
        for answer in answers {
            stats.shards.push(answer.await?);
        }
        stats.total = total(&stats.shards);
        Ok(stats)
    }

    /// Storage statistics of one shard (a shard's own host services sample their shard's).
    pub fn shard_stats(
        &self,
        shard: ShardId,
    ) -> impl Future<Output = Result<StorageStats, MediaError<Infallible>>> + Send + 'static {
        self.call(shard, |reply| MediaRequest::Stats { reply })
    }

    /// Runs the periodic upkeep on every shard now (the shards also run it on a timer).
    pub async fn maintain(&self) -> Result<Vec<MaintenanceReport>, MediaError<StorageError>> {
        let answers: Vec<_> = self.every_shard(|reply| MediaRequest::Maintain { reply });
        let mut reports = Vec::with_capacity(answers.len());
        for answer in answers {
            reports.push(answer.await?);
        }
        Ok(reports)
    }

    /// Compacts every shard now, one bounded step each (the shards also do it on a timer).
    pub async fn compact(&self) -> Result<Vec<CompactionReport>, MediaError<StorageError>> {
        let answers: Vec<_> = self.every_shard(|reply| MediaRequest::Compact { reply });
        let mut reports = Vec::with_capacity(answers.len());
        for answer in answers {
            reports.push(answer.await?);
        }
        Ok(reports)
    }

    /// Checks every refcount against the manifests on every shard now, repairing leaks, and
    /// reports chunks a manifest names that are gone.
    pub async fn sweep(&self) -> Result<Vec<SweepReport>, MediaError<StorageError>> {
        let answers: Vec<_> = self.every_shard(|reply| MediaRequest::Sweep { reply });
        let mut reports = Vec::with_capacity(answers.len());
        for answer in answers {
            reports.push(answer.await?);
        }
        Ok(reports)
    }

    fn shard_of(&self, vshard: ferrogram_mediastore::VShard) -> ShardId {
        self.engine.shard_of(crate::media::route(vshard))
    }

    fn every_shard<T: Send + 'static, E: Send + 'static>(
        &self,
        make: impl Fn(Reply<T, E>) -> MediaRequest + Copy + 'static,
    ) -> Vec<impl Future<Output = Result<T, MediaError<E>>> + Send + 'static> {
        (0..self.engine.shard_count()).map(|index| self.call(ShardId(index as u16), make)).collect()
    }

    fn call<T: Send + 'static, E: Send + 'static>(
        &self,
        shard: ShardId,
        make: impl FnOnce(Reply<T, E>) -> MediaRequest,
    ) -> impl Future<Output = Result<T, MediaError<E>>> + Send + 'static {
        let answer = self.engine.request_raw(shard, move |reply| ShardRequest::Media(make(reply)));
        async move {
            match answer.await {
                Ok(result) => result,
                Err(EngineError::Overloaded) => Err(MediaError::Overloaded),
                Err(_) => Err(MediaError::Unavailable),
            }
        }
    }
}

/// The sum of the shards' statistics; the dedup ratio is recomputed from the sums.
fn total(shards: &[StorageStats]) -> StorageStats {
    let mut total = StorageStats::default();
    for stats in shards {
        total.files += stats.files;
        total.logical_bytes += stats.logical_bytes;
        total.chunks += stats.chunks;
        total.stored_bytes += stats.stored_bytes;
        total.chunks_unreferenced += stats.chunks_unreferenced;
        total.physical_bytes += stats.physical_bytes;
        total.garbage_bytes += stats.garbage_bytes;
        total.segments += stats.segments;
        total.uploads += stats.uploads;
        total.staging_bytes += stats.staging_bytes;
        total.cache_bytes += stats.cache_bytes;
        total.reads_in_flight += stats.reads_in_flight;
        total.read_bytes_in_flight += stats.read_bytes_in_flight;
        // Each shard's peak came at its own moment: the total keeps the highest, not a sum.
        total.reads_in_flight_peak = total.reads_in_flight_peak.max(stats.reads_in_flight_peak);
        total.read_bytes_in_flight_peak = total.read_bytes_in_flight_peak.max(stats.read_bytes_in_flight_peak);
    }
    total.dedup_ratio =
        if total.stored_bytes == 0 { 1.0 } else { total.logical_bytes as f64 / total.stored_bytes as f64 };
    total
}
