//! Runs a shard's `MediaShard` on its glommio executor. The store's operations take
//! `&mut self` across their I/O, so one task owns the store and serves its jobs one at a time
//! from a bounded local queue: requests from the handle, the maintenance timer's ticks, and
//! snapshots for the shard's checkpoints.
//!
//! Downloads are the exception. The owning task only plans a read (`begin_read`: which
//! chunks, which are cached, which spans to read, holding the segments open) and hands its
//! disk reads to a task of their own, then goes on with the next job: the ranges a client
//! keeps in flight, and those of other clients and files, are read from disk at once instead
//! of each waiting for the one before. The store bounds how many run at once and the bytes
//! they hold (`reads_in_flight_max`, `read_bytes_in_flight_max`); at the bound, planning the
//! next read waits for one to finish. A read answered from the cache is answered at once.
//!
//! Checkpoints. The messaging driver takes a checkpoint's ticket and asks for the media
//! section in the same step ([`MediaDriver::checkpoint_section`]); the snapshot job goes to
//! the front of the queue and runs as soon as the operation running now has ended, when every
//! media record in the log is applied (or, after a failed operation, is added from the
//! journal's in-flight list). So the section holds every media record up to its
//! `covers_lsn`, which includes every media record at or below the ticket's LSN: the segments
//! the log frees after the checkpoint hold no media record the checkpoint lacks, and replay
//! skips the few records after the ticket that the section already holds. Media record bytes count toward the shard's
//! checkpoint interval like messaging's, so a shard that only stores media still checkpoints.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ferrogram_mediastore::state::MediaState;
use ferrogram_mediastore::{DmaSegments, MediaShard, TimestampMs};

use crate::ids::Lsn;
use crate::media::api::MediaError;
use crate::media::checkpoint::encode_media_section;
use crate::media::config::MediaSettings;
use crate::media::journal::{JournalShared, WalJournal};
use crate::media::requests::{MediaRequest, Refusal, Reply};
use crate::shard::ShardContext;
use crate::wal::driver::Notify;

/// One shard's media store.
pub(crate) type Store = MediaShard<DmaSegments, WalJournal>;

/// A section for a checkpoint: the newest media record it holds, and its bytes.
type Section = Option<(Lsn, Vec<u8>)>;

enum Job {
    Request(MediaRequest),
    Snapshot(flume::Sender<Section>),
    Tick(Tick),
    Stop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tick {
    Maintain = 1,
    Compact = 2,
    Sweep = 4,
}

/// The media side of a shard. Lives on its executor only.
pub(crate) struct MediaDriver {
    jobs: RefCell<VecDeque<Job>>,
    /// Requests in `jobs`; past `settings.queue_max` new ones answer `Overloaded`.
    requests_queued: Cell<usize>,
    /// Ticks in `jobs` (a bit per `Tick`), so a slow shard does not pile them up.
    ticks_queued: Cell<u8>,
    wake: Notify,
    stopping: Cell<bool>,
    stopped: Cell<bool>,
    done: Notify,
    journal: Rc<JournalShared>,
    settings: MediaSettings,
    checkpoint_every_bytes: u64,
}

impl MediaDriver {
    pub(crate) fn new(journal: Rc<JournalShared>, settings: MediaSettings, checkpoint_every_bytes: u64) -> Self {
        MediaDriver {
            jobs: RefCell::new(VecDeque::new()),
            requests_queued: Cell::new(0),
            ticks_queued: Cell::new(0),
            wake: Notify::default(),
            stopping: Cell::new(false),
            stopped: Cell::new(false),
            done: Notify::default(),
            journal,
            settings,
            checkpoint_every_bytes: checkpoint_every_bytes.max(1),
        }
    }

    /// Starts the task that owns `store` and the maintenance timer.
    pub(crate) fn start(context: &Rc<ShardContext>, store: Store) {
        glommio::spawn_local(serve(context.clone(), store)).detach();
        glommio::spawn_local(timer(context.clone())).detach();
    }

    /// Queues a request from the handle, or answers it at once when the shard cannot take it.
    pub(crate) fn request(context: &Rc<ShardContext>, request: MediaRequest) {
        let driver = &context.media;
        if driver.stopping.get() {
            return request.refuse(Refusal::Unavailable);
        }
        if driver.requests_queued.get() >= driver.settings.queue_max {
            return request.refuse(Refusal::Overloaded);
        }
        driver.requests_queued.set(driver.requests_queued.get() + 1);
        driver.jobs.borrow_mut().push_back(Job::Request(request));
        driver.wake.notify();
    }

    pub(crate) fn settings(&self) -> &MediaSettings {
        &self.settings
    }

    /// Whether the shard's media store is stopping (its services should end).
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Whether enough media records were written since the last snapshot to want a checkpoint.
    pub(crate) fn wants_checkpoint(&self) -> bool {
        self.journal.bytes_since_snapshot() >= self.checkpoint_every_bytes
    }

    /// The media section of a checkpoint whose ticket is taken in this step (see the module
    /// documentation); `None` if the store is stopping or the section could not be made.
    pub(crate) fn checkpoint_section(context: &Rc<ShardContext>) -> impl Future<Output = Option<Vec<u8>>> + 'static {
        let driver = &context.media;
        let receiver = (!driver.stopping.get()).then(|| {
            let (sender, receiver) = flume::bounded(1);
            // Ahead of waiting requests: taken as soon as the operation running now ends.
            driver.jobs.borrow_mut().push_front(Job::Snapshot(sender));
            driver.wake.notify();
            receiver
        });
        let log = context.log.clone();
        async move {
            let (covers, bytes) = receiver?.recv_async().await.ok()??;
            // A checkpoint holds only durable records. Between operations every applied media
            // record is durable already; the in-flight records of a failed one may not be.
            log.durable(covers).await.ok()?;
            Some(bytes)
        }
    }

    /// Stops the store after the operation running now: what is still queued is answered
    /// `Unavailable`, and the segment files are closed. Unfinished uploads end with it.
    pub(crate) async fn stop(context: &Rc<ShardContext>) {
        let driver = &context.media;
        if !driver.stopping.replace(true) {
            driver.jobs.borrow_mut().push_front(Job::Stop);
            driver.wake.notify();
        }
        while !driver.stopped.get() {
            driver.done.wait().await;
        }
    }

    fn tick(&self, tick: Tick) {
        let queued = self.ticks_queued.get();
        if queued & tick as u8 != 0 || self.stopping.get() {
            return;
        }
        self.ticks_queued.set(queued | tick as u8);
        self.jobs.borrow_mut().push_back(Job::Tick(tick));
        self.wake.notify();
    }
}

/// The task that owns the store: one job at a time, in queue order.
async fn serve(context: Rc<ShardContext>, mut store: Store) {
    let driver = &context.media;
    loop {
        let job = driver.jobs.borrow_mut().pop_front();
        let Some(job) = job else {
            driver.wake.wait().await;
            continue;
        };
        match job {
            Job::Stop => break,
            Job::Snapshot(reply) => {
                // A checkpoint refused meanwhile dropped its receiver: no snapshot to take.
                if !reply.is_disconnected() {
                    let _ = reply.send(section(&driver.journal, &store));
                }
            }
            Job::Request(request) => {
                driver.requests_queued.set(driver.requests_queued.get() - 1);
                perform(&mut store, request).await;
            }
            Job::Tick(tick) => {
                driver.ticks_queued.set(driver.ticks_queued.get() & !(tick as u8));
                // A storage error stops the store (every later request answers that it
                // failed); the timer has no one else to tell.
                let now = now();
                match tick {
                    Tick::Maintain => {
                        let _ = store.maintain(now).await;
                    }
                    Tick::Compact => {
                        let _ = store.compact(now).await;
                    }
                    Tick::Sweep => {
                        let _ = store.sweep(now).await;
                    }
                }
            }
        }
        if driver.wants_checkpoint() {
            crate::messaging::driver::maybe_checkpoint(&context);
        }
        glommio::yield_if_needed().await;
    }
    let left: Vec<Job> = driver.jobs.borrow_mut().drain(..).collect();
    for job in left {
        match job {
            Job::Request(request) => request.refuse(Refusal::Unavailable),
            Job::Snapshot(reply) => {
                let _ = reply.send(None);
            }
            Job::Tick(_) | Job::Stop => {}
        }
    }
    driver.requests_queued.set(0);
    // Reads already planned are answered before their segment files are closed.
    store.reads_finished().await;
    let (segments, _journal) = store.into_parts();
    let _ = segments.close().await;
    driver.stopped.set(true);
    driver.done.notify();
}

async fn perform(store: &mut Store, request: MediaRequest) {
    let now = now();
    match request {
        MediaRequest::Start { request, reply } => answer(reply, store.start(request, now)),
        MediaRequest::PutPart { upload, part, bytes, reply } => {
            let result = store.put_part(upload, part, &bytes.bytes, now).await;
            // The budget comes back before the answer, so the caller's next part finds it.
            drop(bytes);
            answer(reply, result);
        }
        MediaRequest::Finish { upload, request, reply } => answer(reply, store.finish(upload, request, now).await),
        MediaRequest::Cancel { upload, reply } => answer(reply, Ok::<_, Infallible>(store.cancel(upload))),
        MediaRequest::Read { file, access_hash, offset, limit, reply } => {
            // A read nobody waits for any more is not worth the disk.
            if reply.is_disconnected() {
                return;
            }
            match store.begin_read(file, access_hash, offset, limit).await {
                Err(error) => answer(reply, Err(error)),
                Ok(read) if !read.needs_disk() => answer(reply, read.run().await),
                // Its disk reads run beside the jobs that follow (see the module documentation).
                Ok(read) => {
                    glommio::spawn_local(async move { answer(reply, read.run().await) }).detach();
                }
            }
        }
        MediaRequest::FileInfo { file, access_hash, reply } => answer(reply, store.file_info(file, access_hash)),
        MediaRequest::TakeReference { file, access_hash, reply } => {
            answer(reply, store.take_reference(file, access_hash).await)
        }
        MediaRequest::ReleaseReference { file, reply } => answer(reply, store.release_reference(file, now).await),
        MediaRequest::TakeHolder { file, access_hash, holder, reply } => {
            answer(reply, store.take_holder(file, access_hash, holder, now).await)
        }
        MediaRequest::ReleaseHolder { file, holder, reply } => {
            answer(reply, store.release_holder(file, holder, now).await)
        }
        MediaRequest::ConfirmHolder { file, holder, reply } => answer(reply, store.confirm_holder(file, holder).await),
        MediaRequest::UnconfirmedHolders { older_than_ms, limit, reply } => {
            let taken_before = TimestampMs(now.0.saturating_sub(older_than_ms));
            answer(reply, Ok::<_, Infallible>(store.unconfirmed_holders(taken_before, limit)))
        }
        MediaRequest::Stats { reply } => answer(reply, Ok::<_, Infallible>(store.stats())),
        MediaRequest::Maintain { reply } => answer(reply, store.maintain(now).await),
        MediaRequest::Compact { reply } => answer(reply, store.compact(now).await),
        MediaRequest::Sweep { reply } => answer(reply, store.sweep(now).await),
    }
}

fn answer<T, E>(reply: Reply<T, E>, result: Result<T, E>) {
    let _ = reply.send(result.map_err(MediaError::Store));
}

/// The store's snapshot with the in-flight records of a failed operation applied, so it holds
/// every media record in the log up to the journal's newest.
fn section(journal: &JournalShared, store: &Store) -> Section {
    let mut snapshot = store.snapshot();
    let inflight = journal.inflight().ok()?;
    if !inflight.is_empty() {
        let mut state = MediaState::restore(&snapshot).ok()?;
        for record in &inflight {
            state.apply(record).ok()?;
        }
        snapshot = state.snapshot();
    }
    let covers = journal.last_lsn();
    let bytes = encode_media_section(covers, &snapshot).ok()?;
    journal.snapshot_taken();
    Some((covers, bytes))
}

/// Queues the periodic upkeep: `maintain` every tick, `compact` and `sweep` less often. Each
/// is bounded per call (expiries per call, bytes moved per call), so a tick never holds the
/// shard's media for long.
async fn timer(context: Rc<ShardContext>) {
    let driver = &context.media;
    let every = Duration::from_millis(driver.settings.maintain_every_ms);
    let compact_every = Duration::from_millis(driver.settings.compact_every_ms);
    let sweep_every = Duration::from_millis(driver.settings.sweep_every_ms);
    let (mut compacted, mut swept) = (Instant::now(), Instant::now());
    loop {
        glommio::timer::sleep(every).await;
        if driver.stopping.get() {
            return;
        }
        driver.tick(Tick::Maintain);
        if compacted.elapsed() >= compact_every {
            driver.tick(Tick::Compact);
            compacted = Instant::now();
        }
        if swept.elapsed() >= sweep_every {
            driver.tick(Tick::Sweep);
            swept = Instant::now();
        }
    }
}

fn now() -> TimestampMs {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    TimestampMs(since_epoch.as_millis() as u64)
}
