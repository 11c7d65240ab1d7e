//! The glommio driver of a shard's log: it recovers the log from disk, then performs the
//! [`LogCore`]'s I/O with O_DIRECT `DmaFile`s on the shard's own io_uring reactor.
//!
//! Three local tasks run per log: the writer (one write at a time; records appended meanwhile
//! gather into the next batch: group commit), the syncer (one `fdatasync` at a time,
//! overlapping the next write) and the preparer (creates or recycles the next segment ahead
//! of need). Waiters are completed from the watermarks,
//! not from one channel per record.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, VecDeque};
use std::future::{poll_fn, Future};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use crate::config::{LogConfig, PREFETCH_CHUNK_BYTES, PREFETCH_SEGMENTS_AHEAD, PREWRITE_CHUNK_BYTES, PREWRITE_YIELD};
use crate::ids::{Lsn, RecordKind, SegmentId, VShard};
use crate::wal::checkpoint;
use crate::wal::checkpoint_file::CheckpointSink;
use crate::wal::core::{
    AppendError, Appended, CheckpointTicket, IoBuffer, IoCompletion, IoFailure, IoRequest, LogCore, LogStart,
    OwnedRecord, RecordPosition,
};
use crate::wal::format::{decode_record, segment_seed, Record};
use crate::wal::meta::{LogMeta, META_FILE};
use crate::wal::recovery::{self, Corruption, ReplayFrom, ScanOutcome, SegmentImage};

const WAL_DIR: &str = "wal";
const CHECKPOINT_DIR: &str = "checkpoints";

/// Why a log could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} has log segments but no valid {META_FILE}: refusing to guess the checksum salt")]
    MetaMissing { path: PathBuf },
    #[error("{dir}: {corruption}; start with --repair to truncate the log there (acknowledged records after it are lost and epochs are bumped)")]
    Corrupt { dir: PathBuf, corruption: Corruption },
}

/// Why waiting for a record failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    #[error("the log stopped after an I/O error: {0}")]
    Failed(IoFailure),
    #[error("the log is closed")]
    Closed,
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error("no readable record at {0:?}")]
    NotReadable(RecordPosition),
    #[error("reading segment {segment}: {source}")]
    Io { segment: SegmentId, source: io::Error },
    #[error("record at {position:?} does not verify: {reason}")]
    Corrupt { position: RecordPosition, reason: crate::wal::format::FormatError },
}

/// Why a checkpoint failed. The log is unaffected unless the error says it failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("writing checkpoint {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("another checkpoint of this log is being written")]
    Busy,
    #[error("the checkpoint's state was not produced")]
    Abandoned,
}

/// What opening found.
#[derive(Clone, Debug)]
pub struct OpenReport {
    pub scan: ScanOutcome,
    /// The checkpoint replay started from, with its state bytes.
    pub checkpoint: Option<(CheckpointTicket, Vec<u8>)>,
    /// Bumped whenever acknowledged records may have been lost (a repair, or a crash under
    /// `interval` or `none` durability).
    pub generation: u64,
    /// Whether this open bumped the generation.
    pub lost_acknowledged: bool,
    pub repaired: Option<Corruption>,
    /// The whole open, and its parts: reading, verifying and restoring the newest checkpoint
    /// (verified while it is restored), and scanning and replaying the log after it.
    pub recovery_time: Duration,
    pub restore_time: Duration,
    pub replay_time: Duration,
}

/// Counters of the log's work, for benchmarks and metrics.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogStats {
    pub batches: u64,
    pub batch_bytes: u64,
    pub syncs: u64,
    pub sync_time_us: u64,
    pub sync_time_us_max: u64,
}

impl IoBuffer for DmaBuffer {
    fn bytes(&self) -> &[u8] {
        self.as_bytes()
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        self.as_bytes_mut()
    }
}

/// One shard's write-ahead log. Cheap to clone; lives on its shard's executor only.
#[derive(Clone)]
pub struct ShardLog {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for ShardLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardLog").field("dir", &self.inner.dir).field("core", &self.inner.core).finish()
    }
}

type Callback = Box<dyn FnOnce(Result<(), LogError>)>;

enum Waiter {
    Wake(Waker),
    Call(Callback),
}

struct Inner {
    dir: PathBuf,
    core: RefCell<LogCore<DmaBuffer>>,
    files: RefCell<BTreeMap<SegmentId, Rc<DmaFile>>>,
    acked_waiters: RefCell<VecDeque<(Lsn, Waiter)>>,
    durable_waiters: RefCell<VecDeque<(Lsn, Waiter)>>,
    writer_wake: Notify,
    syncer_wake: Notify,
    preparer_wake: Notify,
    closed: Cell<bool>,
    checkpointing: Cell<bool>,
    meta: Cell<LogMeta>,
    started: Instant,
    stats: Cell<LogStats>,
}

impl ShardLog {
    /// Opens (or creates) the log in `dir`: hands the newest checkpoint (if any) to `restore`,
    /// then replays every record after it through `replay`. What `restore` returns is what the
    /// report keeps of the checkpoint's state. `restore` may be called more than once, each
    /// call starting from nothing: a checkpoint is verified while it is restored, and one that
    /// fails is replaced by the one before it ([`restore_newest_checkpoint`]). Must run on a
    /// glommio executor whose DMA probe has been done (`preflight::probe_dma_reads`).
    pub async fn open(
        dir: &Path,
        config: LogConfig,
        repair: bool,
        restore: impl FnMut(Option<(CheckpointTicket, &[u8])>) -> Vec<u8>,
        mut replay: impl FnMut(RecordPosition, Record<'_>),
    ) -> Result<(ShardLog, OpenReport), OpenError> {
        let started = Instant::now();
        // glommio opens directories with `openat(-1, path)`, which fails for relative paths.
        let dir = &std::path::absolute(dir).map_err(io_error(dir))?;
        let wal_dir = dir.join(WAL_DIR);
        let checkpoint_dir = dir.join(CHECKPOINT_DIR);
        for path in [&wal_dir, &checkpoint_dir] {
            std::fs::create_dir_all(path).map_err(|source| OpenError::Io { path: path.clone(), source })?;
        }
        remove_temporary_files(&wal_dir)?;
        remove_temporary_files(&checkpoint_dir)?;
        let segments = list_segments(&wal_dir)?;
        let mut meta = load_or_create_meta(dir, !segments.is_empty())?;
        let mut checkpoints = list_checkpoints(&checkpoint_dir, meta.salt)?;
        let (newest, kept) = restore_newest_checkpoint(&mut checkpoints, meta.salt, restore)?;
        let restore_time = started.elapsed();
        let from = ReplayFrom::after(newest.as_ref(), &segments);

        let mut repaired = None;
        let scan = match scan_segments(&wal_dir, &segments, meta.salt, from, &mut replay)? {
            Ok(scan) => scan,
            Err(corruption) if repair => {
                // Records replayed so far precede the corruption and survive the truncation,
                // so the second scan only has to find the new end.
                // The generation goes up before anything is cut: a crash in between must not
                // leave acknowledged records gone without the epoch bump that says so.
                meta.generation += 1;
                write_meta(dir, &meta)?;
                truncate_at(&wal_dir, &segments, &corruption)?;
                let segments = list_segments(&wal_dir)?;
                let scan = scan_segments(&wal_dir, &segments, meta.salt, from, |_, _| {})?
                    .map_err(|corruption| OpenError::Corrupt { dir: dir.to_path_buf(), corruption })?;
                repaired = Some(corruption);
                scan
            }
            Err(corruption) => return Err(OpenError::Corrupt { dir: dir.to_path_buf(), corruption }),
        };
        let replay_time = started.elapsed() - restore_time;

        let segments = list_segments(&wal_dir)?;
        let cursor_segment = segments.last().map_or(SegmentId(1), |last| last.next());
        let start = LogStart {
            next_lsn: scan.next_lsn,
            cursor: crate::wal::core::LogPosition { segment: cursor_segment, offset: 0 },
            segments: segments.clone(),
            checkpoints: checkpoints.iter().map(|(ticket, _)| *ticket).collect(),
        };
        let mut files = BTreeMap::new();
        for &segment in &segments {
            let path = segment_path(&wal_dir, segment);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .dma_open(&path)
                .await
                .map_err(|error| OpenError::Io { path: path.clone(), source: error.into() })?;
            // What recovery just read may sit in a volatile cache if the previous process died
            // before syncing it. New batches will claim it durable (their `durable_lsn`), so
            // make it so first, or a later power loss would look like corruption.
            if segment >= from.position.segment {
                file.fdatasync().await.map_err(|error| OpenError::Io { path, source: error.into() })?;
            }
            files.insert(segment, Rc::new(file));
        }
        // A crash of a log that acknowledged before syncing may have lost acknowledged records:
        // say so with a new generation. Then mark the log open until a clean close.
        let mut lost_acknowledged = meta.may_have_lost_acknowledged();
        if lost_acknowledged {
            meta.generation += 1;
        }
        lost_acknowledged |= repaired.is_some();
        meta.open = true;
        meta.relaxed = config.durability != crate::config::Durability::Sync;
        write_meta(dir, &meta)?;
        let core = LogCore::new(config, meta.salt, start, Box::new(glommio::allocate_dma_buffer));
        let inner = Rc::new(Inner {
            dir: dir.to_path_buf(),
            core: RefCell::new(core),
            files: RefCell::new(files),
            acked_waiters: RefCell::new(VecDeque::new()),
            durable_waiters: RefCell::new(VecDeque::new()),
            writer_wake: Notify::default(),
            syncer_wake: Notify::default(),
            preparer_wake: Notify::default(),
            closed: Cell::new(false),
            checkpointing: Cell::new(false),
            meta: Cell::new(meta),
            started: Instant::now(),
            stats: Cell::new(LogStats::default()),
        });
        // Prepare the first segment before reporting the log open, so the first appends do
        // not wait for a segment to be pre-written (that would show as a latency spike).
        prepare_next(&inner, &wal_dir).await;
        glommio::spawn_local(writer(inner.clone())).detach();
        glommio::spawn_local(syncer(inner.clone())).detach();
        glommio::spawn_local(preparer(inner.clone())).detach();
        let report = OpenReport {
            scan,
            checkpoint: newest.map(|ticket| (ticket, kept)),
            generation: meta.generation,
            lost_acknowledged,
            repaired,
            recovery_time: started.elapsed(),
            restore_time,
            replay_time,
        };
        Ok((ShardLog { inner }, report))
    }

    /// Appends a record; await [`ShardLog::acked`] with its LSN before acknowledging it.
    pub fn append(&self, kind: RecordKind, vshard: VShard, payload: &[u8]) -> Result<Appended, AppendError> {
        let appended = self.inner.core.borrow_mut().append(kind, vshard, payload)?;
        self.inner.kick();
        Ok(appended)
    }

    /// Appends the records of one request into one batch; see [`LogCore::append_all`].
    /// `positions` runs while the log is borrowed: it must not call back into the log.
    pub fn append_all(
        &self,
        records: &[(RecordKind, VShard, &[u8])],
        positions: impl FnMut(Appended),
    ) -> Result<Lsn, AppendError> {
        let first = self.inner.core.borrow_mut().append_all(records, positions)?;
        self.inner.kick();
        Ok(first)
    }

    /// Resolves once the record at `lsn` may be acknowledged under the durability mode.
    pub fn acked(&self, lsn: Lsn) -> impl Future<Output = Result<(), LogError>> + '_ {
        self.wait(lsn, Watermark::Acked)
    }

    /// Resolves once the record at `lsn` is on stable storage (in `none` mode: written).
    pub fn durable(&self, lsn: Lsn) -> impl Future<Output = Result<(), LogError>> + '_ {
        self.wait(lsn, Watermark::Durable)
    }

    /// Calls `callback` once the record at `lsn` may be acknowledged, or the log failed.
    pub fn on_acked(&self, lsn: Lsn, callback: Callback) {
        match self.inner.check(lsn, Watermark::Acked) {
            Some(result) => callback(result),
            None => insert_waiter(&mut self.inner.acked_waiters.borrow_mut(), lsn, Waiter::Call(callback)),
        }
    }

    fn wait(&self, lsn: Lsn, watermark: Watermark) -> impl Future<Output = Result<(), LogError>> + '_ {
        poll_fn(move |context| match self.inner.check(lsn, watermark) {
            Some(result) => Poll::Ready(result),
            None => {
                let queue = match watermark {
                    Watermark::Acked => &self.inner.acked_waiters,
                    Watermark::Durable => &self.inner.durable_waiters,
                };
                insert_waiter(&mut queue.borrow_mut(), lsn, Waiter::Wake(context.waker().clone()));
                if watermark == Watermark::Durable {
                    // An interval-mode log syncs on a timer; make sure the syncer is awake.
                    self.inner.syncer_wake.notify();
                }
                Poll::Pending
            }
        })
    }

    /// Reads the record at `position` back from disk, verifying its checksum.
    pub async fn read(&self, position: RecordPosition) -> Result<OwnedRecord, ReadError> {
        let (file, seed) = {
            let core = self.inner.core.borrow();
            if !core.is_readable(position) {
                return Err(ReadError::NotReadable(position));
            }
            let file = self.inner.files.borrow().get(&position.segment).cloned();
            (file.ok_or(ReadError::NotReadable(position))?, segment_seed(core.salt(), position.segment))
        };
        let bytes = file
            .read_at(position.offset as u64, position.bytes as usize)
            .await
            .map_err(|source| ReadError::Io { segment: position.segment, source: source.into() })?;
        let corrupt = |reason| ReadError::Corrupt { position, reason };
        let (record, span) = decode_record(&bytes, seed).map_err(corrupt)?;
        if span != position.bytes as usize {
            return Err(corrupt(crate::wal::format::FormatError::RecordMismatch));
        }
        Ok(OwnedRecord::new(position, record))
    }

    /// Writes a checkpoint of `state`, which must be the shard's state with every record
    /// appended so far applied. The ticket is taken now, before the returned future runs.
    pub fn checkpoint(
        &self,
        state: Vec<u8>,
    ) -> impl Future<Output = Result<CheckpointTicket, CheckpointError>> + 'static {
        self.checkpoint_with(move |mut sink| async move {
            sink.write(&state).await?;
            Ok(sink)
        })
    }

    /// As [`ShardLog::checkpoint`], for a state still being produced: the ticket is taken now,
    /// and `produce` writes the shard's state as it is now into the sink it is given, as it
    /// goes, then hands the sink back (or fails, to give up: `CheckpointError::Abandoned`).
    /// The checkpoint is published, under its name, once the sink's file is complete and
    /// synced and the ticket's LSN is durable.
    pub fn checkpoint_with<F, Produced>(
        &self,
        produce: F,
    ) -> impl Future<Output = Result<CheckpointTicket, CheckpointError>> + 'static
    where
        F: FnOnce(CheckpointSink) -> Produced + 'static,
        Produced: Future<Output = Result<CheckpointSink, CheckpointError>> + 'static,
    {
        let ticket = self.inner.core.borrow().checkpoint_ticket();
        // One checkpoint at a time: they must complete in ticket order, and they share names.
        // The guard frees the slot however the future ends, dropped unpolled included.
        let slot = (!self.inner.checkpointing.replace(true)).then(|| CheckpointSlot(self.inner.clone()));
        let log = self.clone();
        async move {
            let Some(_slot) = slot else { return Err(CheckpointError::Busy) };
            let path = log.inner.dir.join(CHECKPOINT_DIR).join(checkpoint::file_name(ticket.lsn));
            let temporary = path.with_extension("tmp");
            let written = log.write_checkpoint(ticket, &path, &temporary, produce).await;
            if written.is_err() {
                let _ = glommio::io::remove(&temporary).await;
            }
            written
        }
    }

    /// Streams the checkpoint into `temporary`, then publishes it as `path` and removes the
    /// checkpoints it replaces.
    async fn write_checkpoint<F, Produced>(
        &self,
        ticket: CheckpointTicket,
        path: &Path,
        temporary: &Path,
        produce: F,
    ) -> Result<CheckpointTicket, CheckpointError>
    where
        F: FnOnce(CheckpointSink) -> Produced,
        Produced: Future<Output = Result<CheckpointSink, CheckpointError>>,
    {
        let (salt, in_flight) = {
            let core = self.inner.core.borrow();
            (core.salt(), core.config().checkpoint_writes_in_flight)
        };
        let sink = CheckpointSink::create(path, temporary, salt, in_flight).await?;
        let file = produce(sink).await?.finish(ticket).await?;
        self.durable(ticket.lsn).await?;
        let io =
            |source: glommio::GlommioError<()>| CheckpointError::Io { path: path.to_path_buf(), source: source.into() };
        file.rename(path).await.map_err(io)?;
        file.close_rc().await.map_err(io)?;
        let dir = self.inner.dir.join(CHECKPOINT_DIR);
        sync_directory_async(&dir)
            .await
            .map_err(|source| CheckpointError::Io { path: dir.clone(), source: source.into() })?;
        let dropped = self.inner.core.borrow_mut().checkpoint_written(ticket);
        for old in dropped {
            let old_path = dir.join(checkpoint::file_name(old.lsn));
            if let Err(error) = glommio::io::remove(&old_path).await {
                let source = io::Error::from(error);
                if source.kind() != io::ErrorKind::NotFound {
                    return Err(CheckpointError::Io { path: old_path, source });
                }
            }
        }
        self.inner.preparer_wake.notify();
        Ok(ticket)
    }

    /// The host will not read segments below `segment` again; see [`LogCore::release_before`].
    pub fn release_before(&self, segment: SegmentId) {
        self.inner.core.borrow_mut().release_before(segment);
        self.inner.preparer_wake.notify();
    }

    pub fn next_lsn(&self) -> Lsn {
        self.inner.core.borrow().next_lsn()
    }

    pub fn durable_lsn(&self) -> Lsn {
        self.inner.core.borrow().durable_lsn()
    }

    pub fn acked_lsn(&self) -> Lsn {
        self.inner.core.borrow().acked_lsn()
    }

    pub fn failure(&self) -> Option<IoFailure> {
        self.inner.core.borrow().failure().cloned()
    }

    pub fn stats(&self) -> LogStats {
        self.inner.stats.get()
    }

    /// Asks for a sync of everything appended so far now rather than at the next interval
    /// (under `interval` durability; under `sync` one is coming anyway).
    pub fn sync_now(&self) {
        self.inner.core.borrow_mut().sync_soon();
        self.inner.syncer_wake.notify();
    }

    /// Waits until everything appended is durable, then stops the log's tasks.
    /// Waits until everything appended is durable, marks the log closed cleanly (unless that
    /// failed), then stops the log's tasks.
    pub async fn close(&self) -> Result<(), LogError> {
        let last = Lsn(self.next_lsn().0 - 1);
        self.sync_now();
        let result = self.durable(last).await;
        if result.is_ok() {
            let mut meta = self.inner.meta.get();
            meta.open = false;
            let dir = self.inner.dir.clone();
            // The shard serves nothing more; the blocking write goes to glommio's thread pool.
            let written = glommio::executor().spawn_blocking(move || write_meta(&dir, &meta)).await;
            if written.is_ok() {
                self.inner.meta.set(meta);
            }
        }
        self.inner.closed.set(true);
        self.inner.kick();
        self.inner.fail_waiters(LogError::Closed);
        result
    }
}

/// Holds a log's single checkpoint slot.
struct CheckpointSlot(Rc<Inner>);

impl Drop for CheckpointSlot {
    fn drop(&mut self) {
        self.0.checkpointing.set(false);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Watermark {
    Acked,
    Durable,
}

impl Inner {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn kick(&self) {
        self.writer_wake.notify();
        self.syncer_wake.notify();
        self.preparer_wake.notify();
    }

    fn check(&self, lsn: Lsn, watermark: Watermark) -> Option<Result<(), LogError>> {
        let core = self.core.borrow();
        let reached = match watermark {
            Watermark::Acked => core.acked_lsn(),
            Watermark::Durable => core.durable_lsn(),
        };
        if lsn <= reached {
            Some(Ok(()))
        } else if let Some(failure) = core.failure() {
            Some(Err(LogError::Failed(failure.clone())))
        } else if self.closed.get() {
            Some(Err(LogError::Closed))
        } else {
            None
        }
    }

    /// Completes every waiter the watermarks have passed.
    fn complete_waiters(&self) {
        let (acked, durable, failure) = {
            let core = self.core.borrow();
            (core.acked_lsn(), core.durable_lsn(), core.failure().cloned())
        };
        if let Some(failure) = failure {
            return self.fail_waiters(LogError::Failed(failure));
        }
        for (queue, reached) in [(&self.acked_waiters, acked), (&self.durable_waiters, durable)] {
            loop {
                let ready = {
                    let mut queue = queue.borrow_mut();
                    match queue.front() {
                        Some((lsn, _)) if *lsn <= reached => queue.pop_front(),
                        _ => None,
                    }
                };
                // Callbacks run with no borrow held: they may append or wait again.
                match ready {
                    Some((_, Waiter::Wake(waker))) => waker.wake(),
                    Some((_, Waiter::Call(callback))) => callback(Ok(())),
                    None => break,
                }
            }
        }
    }

    fn fail_waiters(&self, error: LogError) {
        for queue in [&self.acked_waiters, &self.durable_waiters] {
            let drained: Vec<_> = queue.borrow_mut().drain(..).collect();
            for (_, waiter) in drained {
                match waiter {
                    Waiter::Wake(waker) => waker.wake(),
                    Waiter::Call(callback) => callback(Err(error.clone())),
                }
            }
        }
    }

    fn file(&self, segment: SegmentId) -> Option<Rc<DmaFile>> {
        self.files.borrow().get(&segment).cloned()
    }

    fn add_stats(&self, update: impl FnOnce(&mut LogStats)) {
        let mut stats = self.stats.get();
        update(&mut stats);
        self.stats.set(stats);
    }
}

/// Waiters are kept sorted by LSN; they almost always arrive in order, so this is O(1).
fn insert_waiter(queue: &mut VecDeque<(Lsn, Waiter)>, lsn: Lsn, waiter: Waiter) {
    let at = queue.iter().rposition(|(queued, _)| *queued <= lsn).map_or(0, |index| index + 1);
    queue.insert(at, (lsn, waiter));
}

/// The writer task: performs the core's writes, one at a time, in LSN order.
async fn writer(inner: Rc<Inner>) {
    while !inner.closed.get() {
        let request = inner.core.borrow_mut().next_write(inner.now_ms());
        let Some(IoRequest::Write { segment, offset, mut buffer, bytes }) = request else {
            inner.writer_wake.wait().await;
            continue;
        };
        let result = match inner.file(segment) {
            Some(file) => {
                buffer.trim_to_size(bytes);
                match file.write_at(buffer, offset).await {
                    Ok(written) if written == bytes => Ok(()),
                    Ok(written) => Err(IoFailure::Other(format!("short write: {written} of {bytes} bytes"))),
                    Err(error) => Err(IoFailure::from_io(&error.into())),
                }
            }
            None => Err(IoFailure::Other(format!("segment {segment} is not open"))),
        };
        if result.is_ok() {
            inner.add_stats(|stats| {
                stats.batches += 1;
                stats.batch_bytes += bytes as u64;
            });
        }
        inner.core.borrow_mut().complete(IoCompletion::Written { buffer: None, result }, inner.now_ms());
        inner.complete_waiters();
        inner.syncer_wake.notify();
        inner.preparer_wake.notify();
    }
}

/// The syncer task: performs the core's `fdatasync`s, one at a time, concurrently with the
/// next write.
async fn syncer(inner: Rc<Inner>) {
    while !inner.closed.get() {
        let request = inner.core.borrow_mut().next_sync(inner.now_ms());
        let Some(IoRequest::Sync { segment }) = request else {
            let deadline = inner.core.borrow().next_deadline_ms();
            match deadline {
                Some(at) => {
                    let wait = Duration::from_millis(at.saturating_sub(inner.now_ms()));
                    futures_lite::future::or(inner.syncer_wake.wait(), glommio::timer::sleep(wait)).await;
                }
                None => inner.syncer_wake.wait().await,
            }
            continue;
        };
        let started = Instant::now();
        let result = match inner.file(segment) {
            Some(file) => file.fdatasync().await.map_err(|error| IoFailure::from_io(&error.into())),
            None => Err(IoFailure::Other(format!("segment {segment} is not open"))),
        };
        let elapsed_us = started.elapsed().as_micros() as u64;
        inner.add_stats(|stats| {
            stats.syncs += 1;
            stats.sync_time_us += elapsed_us;
            stats.sync_time_us_max = stats.sync_time_us_max.max(elapsed_us);
        });
        inner.core.borrow_mut().complete(IoCompletion::Synced { result }, inner.now_ms());
        inner.complete_waiters();
        // A write into the next segment may have been waiting for this sync.
        inner.writer_wake.notify();
    }
}

/// The preparer task: keeps the next segment ready, so a roll never waits for the disk.
async fn preparer(inner: Rc<Inner>) {
    let wal_dir = inner.dir.join(WAL_DIR);
    while !inner.closed.get() {
        if !prepare_next(&inner, &wal_dir).await {
            // Wake on demand, and once a second to retry after a full disk.
            futures_lite::future::or(inner.preparer_wake.wait(), glommio::timer::sleep(Duration::from_secs(1))).await;
        }
    }
}

/// Prepares the next segment the core wants, if any; returns whether it did anything.
async fn prepare_next(inner: &Rc<Inner>, wal_dir: &Path) -> bool {
    let request = inner.core.borrow_mut().next_prepare(inner.now_ms());
    let Some(IoRequest::Prepare { segment, reuse }) = request else { return false };
    let segment_bytes = inner.core.borrow().config().segment_bytes;
    let result = match reuse {
        Some(old) => recycle_segment(inner, wal_dir, old, segment).await,
        None => create_segment(inner, wal_dir, segment, segment_bytes).await.map(|file| {
            inner.files.borrow_mut().insert(segment, Rc::new(file));
        }),
    };
    let result = result.map_err(|error| IoFailure::from_io(&error));
    inner.core.borrow_mut().complete(IoCompletion::Prepared { segment, result }, inner.now_ms());
    inner.complete_waiters();
    inner.writer_wake.notify();
    true
}

/// Creates a segment preallocated and pre-written with zeroes (fdatasync on freshly
/// allocated extents costs far more than on written ones), durably, under its final name.
/// The zeroes go out one chunk at a time, each after the log's in-flight write or sync, so
/// pre-writing never queues a burst of writes in front of acknowledgements.
async fn create_segment(inner: &Inner, wal_dir: &Path, segment: SegmentId, bytes: u64) -> io::Result<DmaFile> {
    let final_path = segment_path(wal_dir, segment);
    let temporary = wal_dir.join(format!("{segment}.seg.tmp"));
    let result = async {
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).dma_open(&temporary).await?;
        file.pre_allocate(bytes, false).await?;
        let mut zeroes = glommio::allocate_dma_buffer(PREWRITE_CHUNK_BYTES);
        zeroes.as_bytes_mut().fill(0);
        let zeroes = Rc::new(zeroes);
        let mut offset = 0;
        while offset < bytes {
            if inner.core.borrow().is_disk_busy() {
                futures_lite::future::or(inner.preparer_wake.wait(), glommio::timer::sleep(PREWRITE_YIELD)).await;
            }
            let left = bytes - offset;
            if left < PREWRITE_CHUNK_BYTES as u64 {
                // The segment size need not be a multiple of the chunk: never write past its end.
                let mut tail = glommio::allocate_dma_buffer(left as usize);
                tail.as_bytes_mut().fill(0);
                file.write_at(tail, offset).await?;
                break;
            }
            file.write_rc_at(zeroes.clone(), offset).await?;
            offset += PREWRITE_CHUNK_BYTES as u64;
        }
        file.fdatasync().await?;
        file.rename(&final_path).await?;
        sync_directory_async(wal_dir).await?;
        Ok::<_, glommio::GlommioError<()>>(file)
    }
    .await;
    if result.is_err() {
        let _ = glommio::io::remove(&temporary).await;
    }
    result.map_err(io::Error::from)
}

/// Gives an old segment a new number. Its stale bytes never verify under the new number.
async fn recycle_segment(inner: &Inner, wal_dir: &Path, old: SegmentId, new: SegmentId) -> io::Result<()> {
    let file = inner.files.borrow_mut().remove(&old);
    let file = match file {
        Some(file) => file,
        None => Rc::new(OpenOptions::new().read(true).write(true).dma_open(segment_path(wal_dir, old)).await?),
    };
    let segment_bytes = inner.core.borrow().config().segment_bytes;
    if file.file_size().await? != segment_bytes {
        // Written under another --segment-mib: reusing it would write past its end. Replace it
        // (the old file goes only once the new one exists, so a full disk can retry later).
        let fresh = create_segment(inner, wal_dir, new, segment_bytes).await;
        let fresh = match fresh {
            Ok(fresh) => fresh,
            Err(error) => {
                inner.files.borrow_mut().insert(old, file);
                return Err(error);
            }
        };
        file.remove().await?;
        inner.files.borrow_mut().insert(new, Rc::new(fresh));
        return Ok(());
    }
    file.rename(segment_path(wal_dir, new)).await?;
    sync_directory_async(wal_dir).await?;
    inner.files.borrow_mut().insert(new, file);
    Ok(())
}

/// Makes renames and creations in `dir` durable. Blocking: only while opening, before the
/// shard serves.
fn sync_directory(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// As [`sync_directory`], through the shard's io_uring. A blocking directory fsync on the
/// reactor thread waits for a filesystem journal commit and stalls every task of the shard
/// for tens of milliseconds (measured: p99 acknowledgement latency of 57-114 ms).
async fn sync_directory_async(dir: &Path) -> glommio::Result<(), ()> {
    let directory = glommio::io::Directory::open(dir).await?;
    directory.sync().await?;
    directory.close().await
}

pub(crate) fn segment_path(wal_dir: &Path, segment: SegmentId) -> PathBuf {
    wal_dir.join(format!("{segment}.seg"))
}

fn parse_segment_name(name: &str) -> Option<SegmentId> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok().map(SegmentId))?
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> OpenError + '_ {
    move |source| OpenError::Io { path: path.to_path_buf(), source }
}

/// Segment files in `wal_dir`, in order.
pub fn list_segments(wal_dir: &Path) -> Result<Vec<SegmentId>, OpenError> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(wal_dir).map_err(io_error(wal_dir))? {
        let entry = entry.map_err(io_error(wal_dir))?;
        if let Some(segment) = entry.file_name().to_str().and_then(parse_segment_name) {
            segments.push(segment);
        }
    }
    segments.sort();
    Ok(segments)
}

fn remove_temporary_files(dir: &Path) -> Result<(), OpenError> {
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        if path.extension().is_some_and(|extension| extension == "tmp") {
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        }
    }
    Ok(())
}

/// Maps the segments and runs the recovery scan over them from `from`, while a helper thread
/// reads the segments ahead of it into the page cache: page faults through the mapping alone
/// read this disk at about 0.5 GB/s, large read-ahead at its full bandwidth.
fn scan_segments(
    wal_dir: &Path,
    segments: &[SegmentId],
    salt: u64,
    from: ReplayFrom,
    visit: impl FnMut(RecordPosition, Record<'_>),
) -> Result<Result<ScanOutcome, Corruption>, OpenError> {
    let maps = map_segments(wal_dir, segments)?;
    let images: Vec<SegmentImage<'_>> = segments
        .iter()
        .zip(&maps)
        .map(|(&segment, map)| SegmentImage { segment, bytes: map.as_deref().unwrap_or(&[]) })
        .collect();
    let ahead: Vec<(SegmentId, PathBuf)> = segments
        .iter()
        .filter(|&&segment| segment >= from.position.segment)
        .map(|&segment| (segment, segment_path(wal_dir, segment)))
        .collect();
    let stop = AtomicBool::new(false);
    let scanning = AtomicU64::new(from.position.segment.0);
    let mut visit = visit;
    Ok(std::thread::scope(|scope| {
        scope.spawn(|| prefetch(&ahead, &scanning, &stop));
        let result = recovery::scan(salt, &images, from, |position, record| {
            scanning.store(position.segment.0, Ordering::Relaxed);
            visit(position, record);
        });
        stop.store(true, Ordering::Relaxed);
        result
    }))
}

/// Reads `files` in order into the page cache, at most `PREFETCH_SEGMENTS_AHEAD` segments
/// ahead of the one being scanned, until told to stop. Best effort: errors only mean the scan
/// faults the pages in itself.
fn prefetch(files: &[(SegmentId, PathBuf)], scanning: &AtomicU64, stop: &AtomicBool) {
    use std::os::fd::AsRawFd;
    // Its reads and wake-ups would otherwise take turns with the scan on the shard's core.
    run_where_the_process_may();
    for (segment, path) in files {
        while segment.0 > scanning.load(Ordering::Relaxed) + PREFETCH_SEGMENTS_AHEAD {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let Ok(file) = std::fs::File::open(path) else { continue };
        let length = file.metadata().map_or(0, |metadata| metadata.len());
        let mut offset = 0;
        while offset < length {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            // SAFETY: readahead only reads the open file into the page cache.
            unsafe { libc::readahead(file.as_raw_fd(), offset as i64, PREFETCH_CHUNK_BYTES as usize) };
            offset += PREFETCH_CHUNK_BYTES;
        }
    }
}

/// Maps every segment read-only for the recovery scan (sequential, before the shard serves).
pub fn map_segments(wal_dir: &Path, segments: &[SegmentId]) -> Result<Vec<Option<memmap2::Mmap>>, OpenError> {
    segments
        .iter()
        .map(|&segment| {
            let path = segment_path(wal_dir, segment);
            let file = std::fs::File::open(&path).map_err(io_error(&path))?;
            if file.metadata().map_err(io_error(&path))?.len() == 0 {
                return Ok(None);
            }
            // SAFETY: the segment files belong to this shard, which is not writing yet; no
            // other process writes them (the data directory is locked by the engine).
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_error(&path))?;
            let _ = map.advise(memmap2::Advice::Sequential);
            Ok(Some(map))
        })
        .collect()
}

/// Reads the log's meta file, or creates it with a fresh random salt for a new log.
pub fn load_or_create_meta(dir: &Path, has_segments: bool) -> Result<LogMeta, OpenError> {
    let path = dir.join(META_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => LogMeta::decode(&bytes).ok_or(OpenError::MetaMissing { path }),
        Err(error) if error.kind() == io::ErrorKind::NotFound && !has_segments => {
            let meta = LogMeta::new(random_u64().map_err(io_error(&path))?);
            write_meta(dir, &meta)?;
            Ok(meta)
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Err(OpenError::MetaMissing { path }),
        Err(source) => Err(OpenError::Io { path, source }),
    }
}

fn write_meta(dir: &Path, meta: &LogMeta) -> Result<(), OpenError> {
    use std::io::Write;
    let path = dir.join(META_FILE);
    let temporary = dir.join(format!("{META_FILE}.tmp"));
    let write = || -> io::Result<()> {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&meta.encode())?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        sync_directory(dir)
    };
    write().map_err(io_error(&path))
}

/// Checkpoints in `dir` whose header verifies, oldest first, with their paths. Only the newest
/// one's state is read and verified ([`restore_newest_checkpoint`]): an older one is needed only
/// if that fails, and its ticket alone decides which segments it still holds on to.
fn list_checkpoints(dir: &Path, salt: u64) -> Result<Vec<(CheckpointTicket, PathBuf)>, OpenError> {
    use std::io::Read;
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let Some(lsn) = entry.file_name().to_str().and_then(checkpoint::parse_file_name) else { continue };
        let path = entry.path();
        let mut header = [0u8; checkpoint::CHECKPOINT_HEADER_BYTES];
        let file = std::fs::File::open(&path).map_err(io_error(&path))?;
        match file.take(header.len() as u64).read_exact(&mut header) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => continue,
            Err(error) => return Err(io_error(&path)(error)),
        }
        if let Ok(found_header) = checkpoint::decode_header(&header, salt) {
            if found_header.ticket.lsn == lsn {
                found.push((found_header.ticket, path));
            }
        }
    }
    found.sort_by_key(|(ticket, _)| ticket.lsn);
    Ok(found)
}

/// Hands the newest checkpoint of `found` whose state verifies to `restore` (or `None` when
/// none does) and returns its ticket with what `restore` made of it. Newer checkpoints that
/// did not verify are dropped from `found`: an older checkpoint still covers the log (its
/// segments are kept until it is dropped).
///
/// The state is mapped, not read into the heap: a checkpoint can be gigabytes, and a copy
/// would double the memory opening touches (page cache plus heap), on a VM the larger part of
/// a restart's time (see BENCHMARKS, "Restart"). It is restored where it lies in the map
/// while another thread verifies its checksum over the same pages, so reading it from disk,
/// verifying it and restoring it overlap rather than follow one another. So `restore` may
/// see a state that then fails to verify: it gets only what rkyv validates, what it made of
/// such a state is dropped (a panic included), and it is called again with the next
/// checkpoint. Each call must start from nothing. As with the segments' maps, a disk error
/// while reading the map is a SIGBUS rather than an error: the shard could not open either way.
fn restore_newest_checkpoint<K>(
    found: &mut Vec<(CheckpointTicket, PathBuf)>,
    salt: u64,
    mut restore: impl FnMut(Option<(CheckpointTicket, &[u8])>) -> K,
) -> Result<(Option<CheckpointTicket>, K), OpenError> {
    while let Some(&(ticket, ref path)) = found.last() {
        let file = std::fs::File::open(path).map_err(io_error(path))?;
        // SAFETY: checkpoint files are written once under a temporary name and renamed; none
        // is changed or truncated afterwards, and no other process writes this shard's files
        // (the data directory is locked by the engine).
        let file = unsafe { memmap2::Mmap::map(&file) }.map_err(io_error(path))?;
        let _ = file.advise(memmap2::Advice::Sequential);
        let located = checkpoint::locate(&file, salt).ok().filter(|(header, _)| header.ticket == ticket);
        let Some((header, state)) = located else {
            found.pop();
            continue;
        };
        let (verified, restored) = std::thread::scope(|scope| {
            let verifier =
                std::thread::Builder::new().name("checkpoint-verify".to_string()).spawn_scoped(scope, || {
                    run_where_the_process_may();
                    header.state_verifies(state, salt)
                });
            let restored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| restore(Some((ticket, state)))));
            let verified = match verifier {
                Ok(verifier) => verifier.join().unwrap_or(false),
                Err(_) => header.state_verifies(state, salt),
            };
            (verified, restored)
        });
        match (verified, restored) {
            (true, Ok(kept)) => return Ok((Some(ticket), kept)),
            // A checkpoint that verifies and still fails to restore is a bug, not damage.
            (true, Err(panic)) => std::panic::resume_unwind(panic),
            (false, _) => {
                found.pop();
            }
        }
    }
    Ok((None, restore(None)))
}

/// Lets the calling thread run on any CPU the process's main thread may. A thread spawned by
/// a shard inherits the one CPU the shard is pinned to, where it would take turns with the
/// restore or the scan it is meant to run beside.
fn run_where_the_process_may() {
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: cpu_set_t is plain data.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the process id names its main thread; the call fills at most `size` bytes.
    if unsafe { libc::sched_getaffinity(libc::getpid(), size, &mut set) } == 0 {
        // SAFETY: 0 is this thread, and the set is the one just filled. A failure leaves the
        // thread where it was, which is still correct.
        unsafe { libc::sched_setaffinity(0, size, &set) };
    }
}

/// Explicit repair: zero the corrupt segment from the bad batch on and delete later segments.
fn truncate_at(wal_dir: &Path, segments: &[SegmentId], corruption: &Corruption) -> Result<(), OpenError> {
    use std::os::unix::fs::FileExt;
    let path = segment_path(wal_dir, corruption.segment);
    let file = std::fs::OpenOptions::new().write(true).open(&path).map_err(io_error(&path))?;
    let length = file.metadata().map_err(io_error(&path))?.len();
    let zeroes = vec![0u8; PREWRITE_CHUNK_BYTES];
    let mut offset = corruption.offset;
    while offset < length {
        let chunk = (length - offset).min(zeroes.len() as u64) as usize;
        file.write_all_at(&zeroes[..chunk], offset).map_err(io_error(&path))?;
        offset += chunk as u64;
    }
    file.sync_all().map_err(io_error(&path))?;
    for &later in segments.iter().filter(|&&segment| segment > corruption.segment) {
        let path = segment_path(wal_dir, later);
        std::fs::remove_file(&path).map_err(io_error(&path))?;
    }
    sync_directory(wal_dir).map_err(io_error(wal_dir))
}

fn random_u64() -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer it is given.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if filled != bytes.len() as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from_le_bytes(bytes))
}

/// A single-task wake-up flag: `notify` before `wait` is not lost.
#[derive(Default)]
pub(crate) struct Notify {
    pending: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

impl Notify {
    pub(crate) fn notify(&self) {
        self.pending.set(true);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Forgets a notification not yet waited for (the waiter is about to look anyway).
    pub(crate) fn clear(&self) {
        self.pending.set(false);
    }

    pub(crate) fn wait(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(move |context| {
            if self.pending.replace(false) {
                Poll::Ready(())
            } else {
                self.waker.set(Some(context.waker().clone()));
                Poll::Pending
            }
        })
    }
}

/// Scans a shard's log without opening it for writing (for `admin check` and crash tests):
/// verifies every batch from the newest checkpoint on and calls `visit` for each record.
pub fn scan_offline(
    dir: &Path,
    visit: impl FnMut(RecordPosition, Record<'_>),
) -> Result<(ScanOutcome, Option<CheckpointTicket>), OpenError> {
    let wal_dir = dir.join(WAL_DIR);
    let segments = if wal_dir.exists() { list_segments(&wal_dir)? } else { Vec::new() };
    let meta_path = dir.join(META_FILE);
    let meta = match std::fs::read(&meta_path) {
        Ok(bytes) => LogMeta::decode(&bytes).ok_or(OpenError::MetaMissing { path: meta_path })?,
        Err(_) if segments.is_empty() => LogMeta::new(0),
        Err(_) => return Err(OpenError::MetaMissing { path: meta_path }),
    };
    let checkpoint_dir = dir.join(CHECKPOINT_DIR);
    let mut checkpoints =
        if checkpoint_dir.exists() { list_checkpoints(&checkpoint_dir, meta.salt)? } else { Vec::new() };
    let (newest, ()) = restore_newest_checkpoint(&mut checkpoints, meta.salt, |_| ())?;
    let from = ReplayFrom::after(newest.as_ref(), &segments);
    let scan = scan_segments(&wal_dir, &segments, meta.salt, from, visit)?
        .map_err(|corruption| OpenError::Corrupt { dir: dir.to_path_buf(), corruption })?;
    Ok((scan, newest))
}
