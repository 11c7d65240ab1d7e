//! The media store's [`Journal`] over the shard's write-ahead log: each `MediaRecord` becomes
//! one log record of kind [`MEDIA_RECORD_KIND`] with the record's vshard, and a record is
//! durable when the log's durable watermark passes its LSN.
//!
//! `append` only encodes and queues: the records of one media operation are handed to the log
//! together when the store waits for them (`wait_durable`), in the same step, so they ride in
//! the same batch when they fit. A log pushing back (`Backpressure`) is waited out there
//! instead of failing the media store; any other refusal fails it (fail-stop, STYLE "Errors").
//!
//! The journal also keeps, for the shard's checkpoints ([`JournalShared`]): the LSN of the
//! newest media record appended, the record bytes appended since the last media snapshot, and
//! the records appended whose operation has not applied them yet.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;

use ferrogram_mediastore::{Journal, JournalError, JournalTicket, MediaRecord};
use rkyv::util::AlignedVec;

use crate::ids::{Lsn, RecordKind, VShard};
use crate::wal::driver::{LogError, ShardLog};
use crate::wal::AppendError;

/// The log record kind of media records ("MD"). Messaging ignores it on replay, as media
/// ignores messaging's.
pub const MEDIA_RECORD_KIND: RecordKind = RecordKind(0x4d44);

/// What the shard's media driver reads of its journal.
#[derive(Debug, Default)]
pub(crate) struct JournalShared {
    /// Records handed to the log whose operation has not applied them: empty between
    /// operations, unless an operation failed after appending (then the media store has
    /// stopped, and these may still become durable).
    inflight: RefCell<Vec<AlignedVec>>,
    /// The newest media record in the log (recovered or appended).
    last_lsn: Cell<Lsn>,
    /// Payload bytes of media records appended since the last media snapshot.
    bytes_since_snapshot: Cell<u64>,
}

impl JournalShared {
    pub(crate) fn new(last_lsn: Lsn) -> JournalShared {
        JournalShared { last_lsn: Cell::new(last_lsn), ..JournalShared::default() }
    }

    pub(crate) fn last_lsn(&self) -> Lsn {
        self.last_lsn.get()
    }

    pub(crate) fn bytes_since_snapshot(&self) -> u64 {
        self.bytes_since_snapshot.get()
    }

    pub(crate) fn snapshot_taken(&self) {
        self.bytes_since_snapshot.set(0);
    }

    /// Decodes the records appended but not applied (see `inflight`).
    pub(crate) fn inflight(&self) -> Result<Vec<MediaRecord>, ferrogram_mediastore::RecordError> {
        self.inflight.borrow().iter().map(|bytes| MediaRecord::decode(bytes)).collect()
    }
}

/// The media store's journal on one shard's log.
#[derive(Debug)]
pub struct WalJournal {
    log: ShardLog,
    /// The vshard of records about the shard's own segments (which name no file or chunk):
    /// the lowest vshard this shard owns.
    shard_vshard: VShard,
    record_bytes_max: usize,
    next_ticket: u64,
    queued: Vec<(VShard, AlignedVec)>,
    shared: Rc<JournalShared>,
}

impl WalJournal {
    pub(crate) fn new(
        log: ShardLog,
        shard_vshard: VShard,
        record_bytes_max: usize,
        shared: Rc<JournalShared>,
    ) -> WalJournal {
        WalJournal { log, shard_vshard, record_bytes_max, next_ticket: 0, queued: Vec::new(), shared }
    }

    /// Hands the queued records to the log, in order, waiting while it pushes back.
    async fn flush(&mut self) -> Result<(), JournalError> {
        let queued = std::mem::take(&mut self.queued);
        for (vshard, bytes) in queued {
            loop {
                match self.log.append(MEDIA_RECORD_KIND, vshard, &bytes) {
                    Ok(appended) => {
                        self.shared.last_lsn.set(appended.lsn);
                        let grown = self.shared.bytes_since_snapshot.get() + bytes.len() as u64;
                        self.shared.bytes_since_snapshot.set(grown);
                        self.shared.inflight.borrow_mut().push(bytes);
                        break;
                    }
                    // Too many batches wait for the disk: once what is appended is durable,
                    // they are written. The rest of this operation's records are not lost by
                    // waiting, since nothing has applied them.
                    Err(AppendError::Backpressure) => {
                        let newest = Lsn(self.log.next_lsn().0.saturating_sub(1));
                        self.log.durable(newest).await.map_err(log_error)?;
                    }
                    Err(error) => return Err(append_error(error)),
                }
            }
        }
        Ok(())
    }
}

impl Journal for WalJournal {
    fn append(&mut self, record: &MediaRecord) -> Result<JournalTicket, JournalError> {
        let bytes = record.encode()?;
        if bytes.len() > self.record_bytes_max {
            return Err(JournalError::RecordTooLarge { bytes: bytes.len(), max: self.record_bytes_max });
        }
        let vshard = record.vshard().and_then(|vshard| VShard::new(vshard.get())).unwrap_or(self.shard_vshard);
        self.queued.push((vshard, bytes));
        self.next_ticket += 1;
        Ok(JournalTicket(self.next_ticket))
    }

    async fn wait_durable(&mut self, ticket: JournalTicket) -> Result<(), JournalError> {
        assert!(ticket.0 <= self.next_ticket, "ticket from the future");
        // Tickets only grow and every queued record precedes `ticket`'s, so the newest media
        // record in the log covers it once the queue is flushed.
        self.flush().await?;
        self.log.durable(self.shared.last_lsn.get()).await.map_err(log_error)?;
        // The store applies these records as soon as this returns, before anything else runs
        // on the shard: from now on the snapshot holds them.
        self.shared.inflight.borrow_mut().clear();
        Ok(())
    }
}

fn log_error(error: LogError) -> JournalError {
    match error {
        LogError::Closed => JournalError::Closed,
        other => JournalError::Io(io::Error::other(other)),
    }
}

fn append_error(error: AppendError) -> JournalError {
    match error {
        AppendError::RecordTooLarge { bytes, limit } => JournalError::RecordTooLarge { bytes, max: limit },
        AppendError::DiskFull => JournalError::Io(io::Error::new(io::ErrorKind::StorageFull, error)),
        other => JournalError::Io(io::Error::other(other)),
    }
}
