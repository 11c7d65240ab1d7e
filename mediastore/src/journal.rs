//! The `Journal` the media store writes its records through, and an in-memory one for tests.
//!
//! Durability contract (the engine's WAL implements it in the integration):
//! - `append` queues a record after every record appended before it and returns its ticket;
//!   the record is not durable yet and nothing built on it is shown to anyone.
//! - `wait_durable(ticket)` resolves once every record up to `ticket` survives a crash (after
//!   the fdatasync that covered it). The store applies a change to what readers see only
//!   after this returns, so no reader ever sees a file, a reference or a chunk location that
//!   recovery could lose.
//! - An error from either is fatal for the shard: the store stops accepting operations until
//!   it is reopened from the journal (no fsync retry, STYLE "Errors").
//! - Recovery hands the store the snapshot of the newest checkpoint and every record after it,
//!   in order (`MediaShard::open`). Records appended but never made durable may or may not be
//!   among them; either way the state is consistent, because every record stands on records
//!   and chunk bytes that were durable before it was appended.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::rc::Rc;

use rkyv::util::AlignedVec;

use crate::error::{JournalError, RecordError};
use crate::limits::JOURNAL_RECORD_BYTES_MAX;
use crate::records::{MediaRecord, MediaSnapshot};

/// Names a record's place in the journal; tickets only grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JournalTicket(pub u64);

/// Where the media store's records go (see the module documentation for the contract).
///
/// The futures are shard-local and deliberately not `Send` (thread-per-core), so the trait
/// uses plain `async fn`-style methods without `Send` bounds.
pub trait Journal {
    fn append(&mut self, record: &MediaRecord) -> Result<JournalTicket, JournalError>;

    fn wait_durable(&mut self, ticket: JournalTicket) -> impl Future<Output = Result<(), JournalError>>;
}

/// What a shard is rebuilt from: the newest checkpoint's snapshot and the records after it.
#[derive(Debug, Default)]
pub struct Recovery {
    pub snapshot: Option<MediaSnapshot>,
    pub records: Vec<MediaRecord>,
}

/// A fault the memory journal injects at the next `wait_durable`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JournalFault {
    /// Fail before syncing: the records stay unsynced (a crash just before fdatasync).
    FailBeforeSync,
    /// Sync, then fail: the records are durable but the caller is told otherwise (a crash
    /// just after fdatasync, before the acknowledgement).
    FailAfterSync,
}

/// An in-memory journal for tests: records are kept encoded and decoded (validated) on
/// recovery; a crash loses exactly the records not yet made durable. Cloning gives another
/// handle on the same journal, so a test keeps it across a shard it drops.
#[derive(Clone, Debug, Default)]
pub struct MemoryJournal {
    inner: Rc<RefCell<MemoryJournalInner>>,
}

#[derive(Debug, Default)]
struct MemoryJournalInner {
    records: Vec<AlignedVec>,
    synced: usize,
    checkpoint: Option<(AlignedVec, usize)>,
    fault: Option<JournalFault>,
    closed: bool,
}

impl MemoryJournal {
    pub fn new() -> MemoryJournal {
        MemoryJournal::default()
    }

    /// Makes the next `wait_durable` fail in the given way.
    pub fn inject(&self, fault: JournalFault) {
        self.inner.borrow_mut().fault = Some(fault);
    }

    /// Loses every record not yet durable, as a crash would, and reopens the journal.
    pub fn crash(&self) {
        let mut inner = self.inner.borrow_mut();
        let synced = inner.synced;
        inner.records.truncate(synced);
        inner.fault = None;
        inner.closed = false;
    }

    /// Keeps `snapshot` as the checkpoint covering every record so far (all must be durable,
    /// as the engine only checkpoints durable positions).
    pub fn checkpoint(&self, snapshot: &MediaSnapshot) -> Result<(), JournalError> {
        let mut inner = self.inner.borrow_mut();
        assert_eq!(inner.synced, inner.records.len(), "checkpoint of a position that is not durable");
        let position = inner.records.len();
        inner.checkpoint = Some((snapshot.encode()?, position));
        Ok(())
    }

    /// What a restart hands the shard: the checkpoint and every record after it, decoded.
    pub fn recovery(&self) -> Result<Recovery, RecordError> {
        let inner = self.inner.borrow();
        let (snapshot, start) = match &inner.checkpoint {
            Some((bytes, position)) => (Some(MediaSnapshot::decode(bytes)?), *position),
            None => (None, 0),
        };
        let records =
            inner.records[start..].iter().map(|bytes| MediaRecord::decode(bytes)).collect::<Result<_, _>>()?;
        Ok(Recovery { snapshot, records })
    }

    /// Records appended so far, durable or not.
    pub fn record_count(&self) -> usize {
        self.inner.borrow().records.len()
    }

    pub fn durable_count(&self) -> usize {
        self.inner.borrow().synced
    }
}

impl Journal for MemoryJournal {
    fn append(&mut self, record: &MediaRecord) -> Result<JournalTicket, JournalError> {
        let mut inner = self.inner.borrow_mut();
        if inner.closed {
            return Err(JournalError::Closed);
        }
        let bytes = record.encode()?;
        if bytes.len() > JOURNAL_RECORD_BYTES_MAX {
            return Err(JournalError::RecordTooLarge { bytes: bytes.len(), max: JOURNAL_RECORD_BYTES_MAX });
        }
        inner.records.push(bytes);
        Ok(JournalTicket(inner.records.len() as u64))
    }

    async fn wait_durable(&mut self, ticket: JournalTicket) -> Result<(), JournalError> {
        let mut inner = self.inner.borrow_mut();
        assert!(ticket.0 as usize <= inner.records.len(), "ticket from the future");
        if inner.closed {
            return Err(JournalError::Closed);
        }
        match inner.fault.take() {
            Some(JournalFault::FailBeforeSync) => {
                inner.closed = true;
                Err(JournalError::Io(io::Error::other("injected: crash before fdatasync")))
            }
            Some(JournalFault::FailAfterSync) => {
                inner.synced = inner.records.len();
                inner.closed = true;
                Err(JournalError::Io(io::Error::other("injected: crash after fdatasync")))
            }
            None => {
                // Like fdatasync, a sync covers everything appended so far.
                inner.synced = inner.records.len();
                Ok(())
            }
        }
    }
}
