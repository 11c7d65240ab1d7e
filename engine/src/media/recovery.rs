//! Rebuilding a shard's media store while its log opens: the media section of the newest
//! checkpoint (from the log's restore callback), then every media record after what that
//! section covers (from the replay callback), handed to `MediaShard::open` over the shard's
//! chunk segments.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use ferrogram_mediastore::{
    ConfigError, DmaSegments, MediaConfig, MediaRecord, MediaShard, MediaSnapshot, OpenError, RecordError, Recovery,
};

use crate::ids::{Lsn, RecordKind};
use crate::media::checkpoint::decode_media_section;
use crate::media::journal::{JournalShared, WalJournal, MEDIA_RECORD_KIND};

/// What a shard's media store found when it opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MediaOpenReport {
    /// The newest media record the checkpoint's media section held; `None` when the shard
    /// had no checkpoint or a legacy one without a media section (all media records replayed).
    pub checkpoint_covers: Option<Lsn>,
    /// Media records replayed on top of the checkpoint.
    pub records_replayed: usize,
    /// Media records after the checkpoint's ticket that its media section already held.
    pub records_skipped: usize,
    pub files: u64,
    pub chunks: u64,
    pub segments: u64,
    /// Time to restore the snapshot, replay the records and open the segments.
    pub open_time: Duration,
}

/// Why a shard's media store did not open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MediaOpenError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the checkpoint's media section does not decode: {0}")]
    Checkpoint(RecordError),
    #[error("media record at LSN {lsn} does not decode: {source}")]
    Record { lsn: Lsn, source: RecordError },
    #[error("{path}: {source}")]
    Segments { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Store { path: PathBuf, source: OpenError },
}

/// The media state gathered while the log opens.
#[derive(Debug, Default)]
pub(crate) struct MediaRecovery {
    snapshot: Option<MediaSnapshot>,
    covers: Option<Lsn>,
    records: Vec<MediaRecord>,
    last_lsn: Lsn,
    skipped: usize,
    error: Option<MediaOpenError>,
    decode_time: Duration,
}

impl MediaRecovery {
    /// Takes the checkpoint's media section (`None` when the checkpoint has none).
    pub(crate) fn restore(&mut self, section: Option<&[u8]>) {
        let Some(bytes) = section else { return };
        let started = Instant::now();
        match decode_media_section(bytes) {
            Ok((covers, snapshot)) => {
                self.covers = Some(covers);
                self.last_lsn = covers;
                self.snapshot = Some(snapshot);
            }
            Err(error) => self.error = Some(MediaOpenError::Checkpoint(error)),
        }
        self.decode_time += started.elapsed();
    }

    /// Takes one replayed log record; records of other kinds are not media's.
    pub(crate) fn replay(&mut self, lsn: Lsn, kind: RecordKind, payload: &[u8]) {
        if kind != MEDIA_RECORD_KIND || self.error.is_some() {
            return;
        }
        if self.covers.is_some_and(|covers| lsn <= covers) {
            self.skipped += 1;
            return;
        }
        let started = Instant::now();
        match MediaRecord::decode(payload) {
            Ok(record) => {
                self.records.push(record);
                self.last_lsn = lsn;
            }
            Err(source) => self.error = Some(MediaOpenError::Record { lsn, source }),
        }
        self.decode_time += started.elapsed();
    }

    /// Opens the store over the segments in `dir`, journaling through `journal`.
    pub(crate) async fn open(
        self,
        config: MediaConfig,
        dir: &Path,
        journal: impl FnOnce(Rc<JournalShared>) -> WalJournal,
    ) -> Result<(MediaShard<DmaSegments, WalJournal>, Rc<JournalShared>, MediaOpenReport), MediaOpenError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let started = Instant::now();
        config.validate()?;
        let segments = DmaSegments::open(dir)
            .await
            .map_err(|source| MediaOpenError::Segments { path: dir.to_path_buf(), source })?;
        let shared = Rc::new(JournalShared::new(self.last_lsn));
        let records_replayed = self.records.len();
        let recovery = Recovery { snapshot: self.snapshot, records: self.records };
        let shard = MediaShard::open(config, segments, journal(shared.clone()), recovery)
            .await
            .map_err(|source| MediaOpenError::Store { path: dir.to_path_buf(), source })?;
        let stats = shard.stats();
        let report = MediaOpenReport {
            checkpoint_covers: self.covers,
            records_replayed,
            records_skipped: self.skipped,
            files: stats.files,
            chunks: stats.chunks,
            segments: stats.segments,
            open_time: self.decode_time + started.elapsed(),
        };
        Ok((shard, shared, report))
    }
}
