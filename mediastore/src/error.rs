//! Typed errors, one enum per operation. An operating error (bad input, a full staging area)
//! is reported and the shard goes on; a storage error (I/O, journal) makes the shard refuse
//! every later operation until it is reopened (fail-stop, STYLE "Errors").

use std::io;

use crate::ids::{ChunkKey, FileId, SegmentId};

/// A setting outside its hard bounds.
#[derive(Debug, thiserror::Error)]
#[error("media config: {setting} must be {bound}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub bound: String,
}

/// What went wrong below the store's logic; the shard is unusable after any of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("segment I/O failed while {context}: {source}")]
    Io { context: &'static str, source: io::Error },
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    #[error("{segment} is corrupt at offset {offset}: {reason}")]
    Corrupt { segment: SegmentId, offset: u64, reason: &'static str },
    #[error("chunk {key:?} is referenced but its segment is gone")]
    ChunkMissing { key: ChunkKey },
    #[error("{count} different chunks share one hash; refusing to probe further")]
    TooManyCollisions { count: u32 },
    #[error("the random source failed: {0}")]
    Entropy(getrandom::Error),
    #[error("an earlier storage error stopped this shard; reopen it")]
    PreviouslyFailed,
}

/// Why a journal could not append or make records durable. After one, the shard stops.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    #[error("journal I/O: {0}")]
    Io(#[from] io::Error),
    #[error("the journal is closed")]
    Closed,
    #[error("record of {bytes} bytes is larger than the journal accepts ({max})")]
    RecordTooLarge { bytes: usize, max: usize },
    #[error("record could not be encoded")]
    Encode,
}

/// A journal record or snapshot that does not decode.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    #[error("media record or snapshot failed validation")]
    Invalid,
    #[error("media snapshot version {found} is not {expected}")]
    Version { found: u32, expected: u32 },
}

/// Opening a shard.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("the checkpoint snapshot is inconsistent: {0}")]
    Snapshot(&'static str),
    #[error("journal record {index} does not apply to the state: {reason}")]
    Replay { index: usize, reason: &'static str },
}

/// Starting an upload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("file of {bytes} bytes is larger than the maximum of {max}")]
    TooLarge { bytes: u64, max: u64 },
    #[error("{max} uploads are already open on this shard; retry later")]
    TooManyUploads { max: usize },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Storing one part.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PutPartError {
    #[error("no such upload (it may have expired)")]
    UnknownUpload,
    #[error("part {part} is empty")]
    EmptyPart { part: u32 },
    #[error("part {part} has {bytes} bytes; a part holds at most {max}")]
    PartTooLarge { part: u32, bytes: usize, max: u32 },
    #[error("part number {part} is at or past the limit of {max} parts")]
    TooManyParts { part: u32, max: u32 },
    #[error("part {part} has {bytes} bytes; every part but the last must be a multiple of 1 KiB dividing 512 KiB")]
    InvalidPartSize { part: u32, bytes: usize },
    #[error("part {part} has {bytes} bytes but the parts of this upload have {expected}")]
    PartSizeMismatch { part: u32, bytes: usize, expected: u32 },
    #[error("part {part} comes after part {last}, which was shorter and so is the last")]
    PartBeyondLast { part: u32, last: u32 },
    #[error("part {part} was already stored with different bytes")]
    PartConflict { part: u32 },
    #[error("the file would reach at least {bytes} bytes; the maximum is {max}")]
    TooLarge { bytes: u64, max: u64 },
    #[error("the file would reach at least {bytes} bytes, more than the {total} announced at start")]
    BeyondTotal { bytes: u64, total: u64 },
    #[error("staging is full ({held} of {max} bytes held); send earlier parts first or retry later")]
    StagingFull { held: u64, max: u64 },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Finishing an upload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FinishError {
    #[error("no such upload (it may have expired)")]
    UnknownUpload,
    #[error("{count} parts are missing, first: {listed:?}")]
    MissingParts { count: u32, listed: Vec<u32> },
    #[error("part {part} was stored but the file has only {expected} parts")]
    UnexpectedPart { part: u32, expected: u32 },
    #[error("{expected} parts were announced; at most {max} are allowed")]
    TooManyParts { expected: u32, max: u32 },
    #[error("the parts hold {actual} bytes, not the {expected} announced")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("file of {bytes} bytes is larger than the maximum of {max}")]
    TooLarge { bytes: u64, max: u64 },
    #[error("file name of {bytes} bytes is longer than {max}")]
    NameTooLong { bytes: usize, max: usize },
    #[error("MIME type of {bytes} bytes is longer than {max}")]
    MimeTypeTooLong { bytes: usize, max: usize },
    #[error(transparent)]
    Part(#[from] PutPartError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Reading a range of a file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error("offset {offset} is not a multiple of 4 KiB")]
    MisalignedOffset { offset: u64 },
    #[error("limit {limit} must be a positive multiple of 4 KiB, at most 1 MiB")]
    InvalidLimit { limit: u64 },
    #[error("offset {offset} with limit {limit} crosses a 1 MiB boundary")]
    CrossesBoundary { offset: u64, limit: u64 },
    #[error("{0} does not exist")]
    NotFound(FileId),
    #[error("wrong access hash for {0}")]
    AccessDenied(FileId),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Taking or giving back a file reference.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReferenceError {
    #[error("{0} does not exist")]
    NotFound(FileId),
    #[error("wrong access hash for {0}")]
    AccessDenied(FileId),
    #[error("{0} has no message reference to release")]
    NoReference(FileId),
    #[error(transparent)]
    Storage(#[from] StorageError),
}
