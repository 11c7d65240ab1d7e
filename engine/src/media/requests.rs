//! What crosses from the `Media` handle into a shard: one [`MediaRequest`] per operation,
//! carried by `ShardRequest::Media` through the shard's bounded queue, each with the channel
//! its answer goes back on. Part bytes travel as a `Vec<u8>` holding a reservation of the
//! shard's in-flight part budget, given back when the shard is done with them.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ferrogram_mediastore::{
    AccessHash, CompactionReport, FileId, FileInfo, FinishError, FinishUpload, FinishedFile, Holder, MaintenanceReport,
    PartAccepted, PutPartError, ReadError, ReferenceError, StartError, StartUpload, StorageError, StorageStats,
    SweepReport, UploadId,
};

use crate::media::api::MediaError;

pub(crate) type Reply<T, E> = flume::Sender<Result<T, MediaError<E>>>;

/// One operation for a shard's media store, with the channel its answer goes back on.
/// `UnconfirmedHolders` lists the holders taken at least `older_than_ms` before the shard's
/// own clock (the time `maintain` and the other operations get).
pub(crate) enum MediaRequest {
    Start { request: StartUpload, reply: Reply<UploadId, StartError> },
    PutPart { upload: UploadId, part: u32, bytes: PartBytes, reply: Reply<PartAccepted, PutPartError> },
    Finish { upload: UploadId, request: FinishUpload, reply: Reply<FinishedFile, FinishError> },
    Cancel { upload: UploadId, reply: Reply<bool, Infallible> },
    Read { file: FileId, access_hash: AccessHash, offset: u64, limit: u64, reply: Reply<Vec<u8>, ReadError> },
    FileInfo { file: FileId, access_hash: AccessHash, reply: Reply<FileInfo, ReadError> },
    TakeReference { file: FileId, access_hash: AccessHash, reply: Reply<(), ReferenceError> },
    ReleaseReference { file: FileId, reply: Reply<(), ReferenceError> },
    TakeHolder { file: FileId, access_hash: AccessHash, holder: Holder, reply: Reply<FileInfo, ReferenceError> },
    ReleaseHolder { file: FileId, holder: Holder, reply: Reply<bool, StorageError> },
    ConfirmHolder { file: FileId, holder: Holder, reply: Reply<bool, StorageError> },
    UnconfirmedHolders { older_than_ms: u64, limit: usize, reply: Reply<Vec<(FileId, Holder)>, Infallible> },
    Stats { reply: Reply<StorageStats, Infallible> },
    Maintain { reply: Reply<MaintenanceReport, StorageError> },
    Compact { reply: Reply<CompactionReport, StorageError> },
    Sweep { reply: Reply<SweepReport, StorageError> },
}

/// Why a shard answers a request without serving it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Refusal {
    Overloaded,
    Unavailable,
}

impl MediaRequest {
    /// Answers the request with `refusal` (its part bytes, if any, go back to the budget).
    pub(crate) fn refuse(self, refusal: Refusal) {
        fn error<E>(refusal: Refusal) -> MediaError<E> {
            match refusal {
                Refusal::Overloaded => MediaError::Overloaded,
                Refusal::Unavailable => MediaError::Unavailable,
            }
        }
        // A caller that stopped waiting has dropped its receiver: nothing to tell it.
        match self {
            MediaRequest::Start { reply, .. } => {
                let _ = reply.send(Err(error(refusal)));
            }
            MediaRequest::PutPart { reply, .. } => {
                let _ = reply.send(Err(error(refusal)));
            }
            MediaRequest::Finish { reply, .. } => {
                let _ = reply.send(Err(error(refusal)));
            }
            MediaRequest::Cancel { reply, .. } => {
                let _ = reply.send(Err(error(refusal)));
            }
            MediaRequest::Read { reply, .. } => {
                let _ = reply.send(Err(error(refusal)));
            }
            MediaRequest::FileInfo { reply, .. } => {
                let _ = reply.send(Err(error(refusal)));
            }
            MediaRequest::TakeReference { reply, .. } => {
                let _ = reply.send(Err(error(refusal)));
            }
            MediaRequest::ReleaseReference { reply, .. } => {
                let _ = reply.send(Err(error(refusal)));
            }
            MediaRequest::TakeHolder { reply, .. } => {
                let _ = reply.send(Err(error(refusal)));
            }
            MediaRequest::ReleaseHolder { reply, .. } => {
                let _ = reply.send(Err(error(refusal)));
            }
            MediaRequest::ConfirmHolder { reply, .. } => {
                let _ = reply.send(Err(error(refusal)));
            }
            MediaRequest::UnconfirmedHolders { reply, .. } => {
                let _ = reply.send(Err(error(refusal)));
            }
            MediaRequest::Stats { reply } => {
                let _ = reply.send(Err(error(refusal)));
            }
            MediaRequest::Maintain { reply } => {
                let _ = reply.send(Err(error(refusal)));
            }
            MediaRequest::Compact { reply } => {
                let _ = reply.send(Err(error(refusal)));
            }
            MediaRequest::Sweep { reply } => {
                let _ = reply.send(Err(error(refusal)));
            }
        }
    }
}

/// A part's bytes and their reservation of the shard's in-flight part budget.
#[derive(Debug)]
pub(crate) struct PartBytes {
    pub(crate) bytes: Vec<u8>,
    _reservation: Reservation,
}

impl PartBytes {
    /// Reserves `bytes.len()` of `budget` (at most `max` in flight), or hands the bytes back.
    pub(crate) fn reserve(bytes: Vec<u8>, budget: &Arc<AtomicU64>, max: u64) -> Result<PartBytes, Vec<u8>> {
        let length = bytes.len() as u64;
        let reserved = budget.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            held.checked_add(length).filter(|&total| total <= max)
        });
        match reserved {
            Ok(_) => Ok(PartBytes { bytes, _reservation: Reservation { budget: budget.clone(), bytes: length } }),
            Err(_) => Err(bytes),
        }
    }
}

#[derive(Debug)]
struct Reservation {
    budget: Arc<AtomicU64>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the part budget refuses what would pass it and comes back when parts are dropped.
    #[test]
    fn part_budget_is_bounded_and_returned() {
        let budget = Arc::new(AtomicU64::new(0));
        let first = PartBytes::reserve(vec![0; 600], &budget, 1000).expect("fits");
        assert!(PartBytes::reserve(vec![0; 600], &budget, 1000).is_err());
        drop(first);
        assert_eq!(budget.load(Ordering::Acquire), 0);
        assert!(PartBytes::reserve(vec![0; 1000], &budget, 1000).is_ok());
        assert_eq!(budget.load(Ordering::Acquire), 0, "the dropped reservation came back");
    }
}
