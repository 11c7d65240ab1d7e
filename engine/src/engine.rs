//! The embedding API (DESIGN §2): `Engine::open` starts one pinned glommio executor per
//! shard and returns a cloneable, `Send + Sync` handle whose async methods work from any
//! thread or runtime. Requests cross into a shard through a bounded queue: a full queue
//! answers `Overloaded` at once. A request is queued before its future is first polled, so
//! dropping the future never undoes it.

use std::future::Future;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::{EngineConfig, MESH_CHANNEL_CAPACITY, SHARD_COUNT_MAX};
use crate::ids::{Lsn, RecordKind, ShardId, VShard};
use crate::lifeline::{Lifeline, LifelineGuard};
use crate::media::{Media, MediaOpenError, MediaOpenReport};
use crate::messaging::driver::{Connected, OfflineHook, PushHook};
use crate::messaging::{AuthorizationId, MessagingError, MessagingResult, Request, Response, UserId};
use crate::preflight::{self, PreflightError};
use crate::shard::{self, HostTask, ShardContext, ShardRequest, ShardStart};
use crate::vshards::{VShardTable, VShardTableError};
use crate::wal::driver::{CheckpointError, LogError, OpenError, OpenReport, ReadError};
use crate::wal::{AppendError, CheckpointTicket, OwnedRecord, Record, RecordPosition};

/// Entries of each of a shard's io_uring rings (glommio's default is 128). The kernel sizes a
/// ring's table of armed polls by its completion queue: 8 buckets at 128 entries, 256 (its
/// most) from 4,096. Every idle connection keeps a poll armed there, and glommio cancels a
/// timer or two each time it returns to the reactor; a cancel walks one bucket. With 1,000
/// connections and 8 buckets that walk was 7.2–7.7% of the shard's time in a dm run
/// (`io_poll_find`, perf, 5,000 sends/s). The three rings then take about 1.2 MB per shard.
const RING_DEPTH: usize = 4096;

/// How long a shard runs tasks before it returns to the reactor to submit and reap I/O
/// (glommio's preempt timer; its default is 100 ms). The vendored glommio keeps a pending
/// preemption timer across reactor turns instead of cancelling and re-arming it on each
/// (vendor/glommio/PATCHES.md), so this is the real bound on how long a ready socket or a
/// finished WAL write waits while other tasks run. At 1 ms the timer is re-armed at most
/// about 2,000 times a second, against once or twice per turn before (tens of thousands).
const PREEMPT_SLICE: std::time::Duration = std::time::Duration::from_millis(1);

/// Called for every record replayed while a shard opens, on that shard's executor.
pub type ReplayHook = Arc<dyn Fn(ShardId, RecordPosition, Record<'_>) + Send + Sync>;

/// The host's hooks into the shards.
#[derive(Clone, Default)]
pub struct EngineHooks {
    pub replay: Option<ReplayHook>,
    /// Durable box updates for users with no online session.
    pub offline: Option<OfflineHook>,
    /// Durable push jobs (DESIGN §8). With it, new messages queue jobs in the shards' push
    /// outboxes; without it, none are queued.
    pub push: Option<PushHook>,
}

impl std::fmt::Debug for EngineHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHooks")
            .field("replay", &self.replay.is_some())
            .field("offline", &self.offline.is_some())
            .field("push", &self.push.is_some())
            .finish()
    }
}

/// An acknowledged append: the records' shard, first LSN (the rest follow densely) and
/// positions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendAck {
    pub shard: ShardId,
    pub first_lsn: Lsn,
    pub positions: Vec<RecordPosition>,
}

/// What can go wrong with an engine request. Cheap to clone.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("the shard's queue is full; retry later")]
    Overloaded,
    #[error("the shard has stopped")]
    ShardGone,
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    #[error(transparent)]
    Append(AppendError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Read(Arc<ReadError>),
    #[error(transparent)]
    Checkpoint(Arc<CheckpointError>),
    #[error(transparent)]
    Open(Arc<OpenError>),
    #[error(transparent)]
    Preflight(Arc<PreflightError>),
    #[error(transparent)]
    VShardTable(Arc<VShardTableError>),
    #[error("starting shard executors: {0}")]
    Executor(String),
    #[error("the checkpoint's state covers LSN {covers} but the shard's log is at LSN {newest}")]
    StaleCheckpoint { covers: Lsn, newest: Lsn },
    #[error("the data directory {0} is in use by another process")]
    Locked(PathBuf),
    #[error("{path}: {source}")]
    DataDir { path: PathBuf, source: Arc<std::io::Error> },
    #[error("messaging state does not recover: {0}")]
    Messaging(String),
    #[error("media store does not open: {0}")]
    MediaOpen(Arc<MediaOpenError>),
}

/// The engine handle. Clone it freely; the shards stop when `shutdown` is called.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

/// What routing a request to a shard needs, without keeping the engine alive: the engine's own
/// per-shard services hold this rather than an [`Engine`], whose last handle dropped on a
/// shard's thread would wait there for that very shard to stop.
#[derive(Clone)]
pub(crate) struct Router {
    table: Arc<VShardTable>,
    shards: Vec<flume::Sender<ShardRequest>>,
    lifelines: Vec<Arc<Lifeline>>,
}

struct EngineInner {
    router: Router,
    data_dir: PathBuf,
    table: Arc<VShardTable>,
    shards: Vec<flume::Sender<ShardRequest>>,
    /// Disconnected once a shard's thread has ended, however it ended.
    lifelines: Vec<Arc<Lifeline>>,
    reports: Vec<OpenReport>,
    media_reports: Vec<MediaOpenReport>,
    /// Per shard: bytes of upload parts sent to it and not yet stored (`Media::put_part`).
    media_part_budgets: Vec<Arc<AtomicU64>>,
    media_inflight_part_bytes_max: u64,
    threads: Mutex<Vec<glommio::ExecutorJoinHandle<()>>>,
    /// The data directory's lock, held until shutdown.
    lock: Mutex<Option<std::fs::File>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("data_dir", &self.inner.data_dir)
            .field("shards", &self.inner.shards.len())
            .finish()
    }
}

impl Engine {
    /// Checks the host, starts the shards and recovers their logs.
    pub fn open(config: EngineConfig) -> Result<Engine, EngineError> {
        Engine::open_with_replay(config, None)
    }

    /// As [`Engine::open`], calling `replay` for every record recovered from each log.
    pub fn open_with_replay(config: EngineConfig, replay: Option<ReplayHook>) -> Result<Engine, EngineError> {
        Engine::open_with_hooks(config, EngineHooks { replay, ..EngineHooks::default() })
    }

    /// As [`Engine::open`], with the host's hooks.
    pub fn open_with_hooks(mut config: EngineConfig, hooks: EngineHooks) -> Result<Engine, EngineError> {
        // Every file is opened by an absolute path: a shard never depends on the process's
        // working directory, and some of glommio's calls refuse relative paths.
        config.data_dir = std::path::absolute(&config.data_dir)
            .map_err(|_| EngineError::InvalidArgument("the data directory has no absolute path"))?;
        if config.shards == 0 || config.shards > SHARD_COUNT_MAX {
            return Err(EngineError::InvalidArgument("shard count must be between 1 and 256"));
        }
        config.log.validate().map_err(|_| EngineError::InvalidArgument("invalid log configuration"))?;
        config.media.validate().map_err(|error| EngineError::MediaOpen(Arc::new(MediaOpenError::Config(error))))?;
        preflight::check_host(&config.data_dir).map_err(|error| EngineError::Preflight(Arc::new(error)))?;
        let lock = lock_data_dir(&config.data_dir, DataDirLock::Exclusive)?;
        let media = media_settings(&config)?;
        let table = Arc::new(
            VShardTable::load_or_create(&config.data_dir, config.shards)
                .map_err(|error| EngineError::VShardTable(Arc::new(error)))?,
        );
        let cpus = available_cpus();
        if let Some(list) = &config.cpus {
            if list.is_empty() || list.iter().any(|cpu| !cpus.contains(cpu)) {
                return Err(EngineError::InvalidArgument(
                    "every CPU to pin a shard to must be one this process may run on",
                ));
            }
        }
        let mesh = MeshBuilder::full(config.shards, MESH_CHANNEL_CAPACITY);
        let (opened_sender, opened) = std::sync::mpsc::channel();
        let mut senders = Vec::with_capacity(config.shards);
        let mut threads = Vec::with_capacity(config.shards);
        let mut lifelines = Vec::with_capacity(config.shards);
        for index in 0..config.shards {
            let id = ShardId(index as u16);
            let cpu = match &config.cpus {
                Some(list) => list[index % list.len()],
                None => cpus[index % cpus.len()],
            };
            let lifeline = Arc::new(Lifeline::default());
            lifelines.push(lifeline.clone());
            let (sender, requests) = flume::bounded(config.shard_queue_depth);
            senders.push(sender);
            let start = ShardStart {
                id,
                dir: config.data_dir.join(format!("shard-{index}")),
                log_config: config.log.clone(),
                repair: config.repair,
                table: table.clone(),
                mesh: mesh.clone(),
                requests,
                opened: opened_sender.clone(),
                replay: hooks.replay.clone(),
                offline: hooks.offline.clone(),
                push: hooks.push.clone(),
                checkpoint_every_bytes: config.checkpoint_every_bytes,
                checkpoint_at_close_min_bytes: config.checkpoint_at_close_min_bytes,
                retain_log: config.retain_log,
                media: media.clone(),
            };
            let thread = LocalExecutorBuilder::new(Placement::Fixed(cpu))
                .name(&format!("shard-{index}"))
                .ring_depth(RING_DEPTH)
                .preempt_timer(PREEMPT_SLICE)
                .spawn(move || {
                    shard::hold_lifeline(LifelineGuard(lifeline));
                    shard::run(start)
                })
                .map_err(|error| EngineError::Executor(error.to_string()))?;
            threads.push(thread);
        }
        drop(opened_sender);
        let mut reports: Vec<Option<(OpenReport, MediaOpenReport)>> = (0..config.shards).map(|_| None).collect();
        let mut first_error = None;
        let mut answered = vec![false; config.shards];
        while answered.iter().any(|answered| !answered) {
            match opened.recv_timeout(Duration::from_millis(50)) {
                Ok((id, result)) => {
                    answered[id.index()] = true;
                    match result {
                        Ok(report) => reports[id.index()] = Some(report),
                        Err(error) => {
                            first_error.get_or_insert(error);
                        }
                    }
                }
                // A shard whose thread ended (a panic) without answering never will.
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if (0..config.shards).any(|index| !answered[index] && lifelines[index].is_dead()) {
                        first_error.get_or_insert(EngineError::ShardGone);
                        break;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    first_error.get_or_insert(EngineError::ShardGone);
                    break;
                }
            }
        }
        let (reports, media_reports) = reports.into_iter().flatten().unzip();
        let router = Router { table: table.clone(), shards: senders.clone(), lifelines: lifelines.clone() };
        let inner = EngineInner {
            router,
            data_dir: config.data_dir.clone(),
            table,
            shards: senders,
            lifelines,
            reports,
            media_reports,
            media_part_budgets: (0..config.shards).map(|_| Arc::new(AtomicU64::new(0))).collect(),
            media_inflight_part_bytes_max: media.inflight_part_bytes_max,
            threads: Mutex::new(threads),
            lock: Mutex::new(Some(lock)),
        };
        let engine = Engine { inner: Arc::new(inner) };
        if let Some(error) = first_error {
            let _ = engine.shutdown();
            return Err(error);
        }
        let router = engine.inner.router.clone();
        engine.run_on_every_shard(move |context| crate::messaging::upkeep::run(router.clone(), context))?;
        Ok(engine)
    }

    /// The messaging API over this engine.
    pub fn messenger(&self) -> crate::messaging::Messenger {
        crate::messaging::Messenger::new(self.clone())
    }

    /// The media API over this engine.
    pub fn media(&self) -> Media {
        Media::new(self.clone())
    }

    pub(crate) fn media_open_reports(&self) -> &[MediaOpenReport] {
        &self.inner.media_reports
    }

    /// The in-flight part budget of `shard` and its bound.
    pub(crate) fn media_part_budget(&self, shard: ShardId) -> (&Arc<AtomicU64>, u64) {
        (&self.inner.media_part_budgets[shard.index()], self.inner.media_inflight_part_bytes_max)
    }

    pub fn shard_count(&self) -> usize {
        self.inner.shards.len()
    }

    /// The shard that owns `vshard`.
    pub fn shard_of(&self, vshard: VShard) -> ShardId {
        self.inner.table.owner(vshard)
    }

    /// What each shard found when it opened, by shard.
    pub fn open_reports(&self) -> &[OpenReport] {
        &self.inner.reports
    }

    /// Appends a record on the shard owning `vshard`; resolves when it is acknowledged.
    pub fn append(
        &self,
        vshard: VShard,
        kind: RecordKind,
        payload: Vec<u8>,
    ) -> impl Future<Output = Result<AppendAck, EngineError>> + Send + 'static {
        self.append_all(self.shard_of(vshard), vec![(kind, vshard, payload)])
    }

    /// Appends records of one request to `shard`, in one batch; they are acknowledged together.
    pub fn append_all(
        &self,
        shard: ShardId,
        records: Vec<(RecordKind, VShard, Vec<u8>)>,
    ) -> impl Future<Output = Result<AppendAck, EngineError>> + Send + 'static {
        let misrouted = records.iter().any(|(_, vshard, _)| self.shard_of(*vshard) != shard);
        let queued = if misrouted {
            Err(EngineError::InvalidArgument("a record's vshard is not owned by the shard it is appended to"))
        } else {
            Ok(())
        };
        let request = queued.map(|()| self.request(shard, |reply| ShardRequest::Append { records, reply }));
        async move { request?.await }
    }

    /// Reads a record back from its shard's log.
    pub fn read(
        &self,
        shard: ShardId,
        position: RecordPosition,
    ) -> impl Future<Output = Result<OwnedRecord, EngineError>> + Send + 'static {
        self.request(shard, move |reply| ShardRequest::Read { position, reply })
    }

    /// Writes a checkpoint of `state` for `shard`; recovery then starts from it. `state` must
    /// reflect every record of the shard up to `covers`, and `covers` must be the shard's newest
    /// LSN when the request is served: a checkpoint that missed a record would make replay
    /// skip it, so any other LSN is refused with `StaleCheckpoint`.
    pub fn checkpoint(
        &self,
        shard: ShardId,
        state: Vec<u8>,
        covers: Lsn,
    ) -> impl Future<Output = Result<CheckpointTicket, EngineError>> + Send + 'static {
        self.request(shard, move |reply| ShardRequest::Checkpoint { state, covers, reply })
    }

    /// Sends a messaging request to `shard` (the owner of its key); see `messaging::api`.
    pub(crate) fn messaging(
        &self,
        shard: ShardId,
        request: Request,
    ) -> impl Future<Output = MessagingResult<Response>> + Send + 'static {
        self.inner.router.messaging(shard, request)
    }

    /// Registers an online session of `user`, held on `shard` (the connection's core), under
    /// one of the user's authorizations if one is given.
    pub(crate) fn connect(
        &self,
        shard: ShardId,
        user: UserId,
        authorization: Option<AuthorizationId>,
    ) -> impl Future<Output = MessagingResult<Connected>> + Send + 'static {
        let answer = self.request_raw(shard, move |reply| ShardRequest::Connect { user, authorization, reply });
        async move { answer.await.map_err(messaging_error)? }
    }

    /// Runs `service(context)` as a local task on every shard's executor: the host's own
    /// per-shard services (the gateway accepts connections this way).
    pub fn run_on_every_shard<F, Fut>(&self, service: F) -> Result<(), EngineError>
    where
        F: Fn(Rc<ShardContext>) -> Fut + Send + Sync + Clone + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        for sender in &self.inner.shards {
            let service = service.clone();
            let task: HostTask = Box::new(move |context| {
                glommio::spawn_local(service(context)).detach();
            });
            // Waits for room rather than start the service on only some shards.
            sender.send(ShardRequest::Run(task)).map_err(|_| EngineError::ShardGone)?;
        }
        Ok(())
    }

    /// Waits for every shard to make its appends durable, stops the shards, joins their
    /// threads and releases the data directory. Other clones of the handle get `ShardGone`
    /// afterwards. Call it from outside the shards: a shard waiting for its own stop never stops.
    pub fn shutdown(&self) -> Result<(), EngineError> {
        self.inner.stop()
    }

    fn request<T: Send + 'static>(
        &self,
        shard: ShardId,
        make: impl FnOnce(flume::Sender<Result<T, EngineError>>) -> ShardRequest,
    ) -> impl Future<Output = Result<T, EngineError>> + Send + 'static {
        let answer = self.request_raw(shard, make);
        async move { answer.await? }
    }

    /// Queues the request `make` builds around its reply channel; resolves with the answer,
    /// or `ShardGone` if the shard dies first.
    pub(crate) fn request_raw<R: Send + 'static>(
        &self,
        shard: ShardId,
        make: impl FnOnce(flume::Sender<R>) -> ShardRequest,
    ) -> impl Future<Output = Result<R, EngineError>> + Send + 'static {
        self.inner.router.request_raw(shard, make)
    }
}

impl Router {
    /// The shard that owns `vshard`.
    pub(crate) fn shard_of(&self, vshard: VShard) -> ShardId {
        self.table.owner(vshard)
    }

    /// Queues the request `make` builds around its reply channel; resolves with the answer,
    /// or `ShardGone` if the shard dies first.
    pub(crate) fn request_raw<R: Send + 'static>(
        &self,
        shard: ShardId,
        make: impl FnOnce(flume::Sender<R>) -> ShardRequest,
    ) -> impl Future<Output = Result<R, EngineError>> + Send + 'static {
        let (reply, receiver) = flume::bounded(1);
        // Queued now, not on first poll: dropping the future never undoes the request.
        let queued = match (self.shards.get(shard.index()), self.lifelines.get(shard.index())) {
            (Some(sender), Some(lifeline)) => {
                sender.try_send(make(reply)).map_err(queue_error).map(|()| lifeline.clone())
            }
            _ => Err(EngineError::InvalidArgument("no such shard")),
        };
        async move {
            let lifeline = queued?;
            let answer = async { receiver.recv_async().await.map_err(|_| EngineError::ShardGone) };
            // A shard that died (a panic) answers nothing; its lifeline says so.
            let gone = async {
                lifeline.gone().await;
                Err(EngineError::ShardGone)
            };
            futures_lite::future::or(answer, gone).await
        }
    }

    /// A messaging request to `shard`.
    pub(crate) fn messaging(
        &self,
        shard: ShardId,
        request: Request,
    ) -> impl Future<Output = MessagingResult<Response>> + Send + 'static {
        let answer = self.request_raw(shard, move |reply| ShardRequest::Messaging { request, reply });
        async move { answer.await.map_err(messaging_error)? }
    }
}

impl EngineInner {
    /// Stops every shard (see `Engine::shutdown`). A shard whose thread already died is
    /// skipped: nothing would ever answer it.
    fn stop(&self) -> Result<(), EngineError> {
        let mut result = Ok(());
        let mut replies = Vec::with_capacity(self.shards.len());
        for (sender, lifeline) in self.shards.iter().zip(&self.lifelines) {
            let (reply, receiver) = flume::bounded(1);
            let mut request = ShardRequest::Shutdown { reply };
            // A full queue still gets the shutdown: wait for room rather than skip a live shard.
            loop {
                match sender.send_timeout(request, Duration::from_millis(50)) {
                    Ok(()) => {
                        replies.push((receiver, lifeline));
                        break;
                    }
                    Err(flume::SendTimeoutError::Timeout(unsent)) if !lifeline.is_dead() => request = unsent,
                    Err(_) => break,
                }
            }
        }
        for (receiver, lifeline) in replies {
            loop {
                match receiver.recv_timeout(Duration::from_millis(50)) {
                    Ok(Ok(())) => break,
                    Ok(Err(error)) => {
                        result = result.and(Err(error));
                        break;
                    }
                    Err(flume::RecvTimeoutError::Timeout) if !lifeline.is_dead() => {}
                    Err(_) => break,
                }
            }
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|poison| poison.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
        // Every shard has stopped writing: the directory is free for another engine.
        drop(self.lock.lock().unwrap_or_else(|poison| poison.into_inner()).take());
        result
    }
}

impl Drop for EngineInner {
    /// The last handle gone stops the shards, as `shutdown` would.
    fn drop(&mut self) {
        let running = !self.threads.get_mut().map(|threads| threads.is_empty()).unwrap_or(true);
        if running {
            let _ = self.stop();
        }
    }
}

/// The media settings the shards run with: the deployment's hash seed (the host's, or the data
/// directory's own), and a file bound whose chunk lists fit the log's batches.
fn media_settings(config: &EngineConfig) -> Result<crate::media::MediaSettings, EngineError> {
    let mut media = config.media.clone();
    media.store.hash_seed = match media.hash_seed {
        Some(seed) => seed,
        None => crate::media::seed::load_or_create(&config.data_dir)
            .map_err(|(path, source)| EngineError::DataDir { path, source: Arc::new(source) })?,
    };
    let file_bytes_max = crate::media::config::file_bytes_max_for_batch(config.log.batch_bytes_max);
    media.store.file_bytes_max = media.store.file_bytes_max.min(file_bytes_max);
    media.store.validate().map_err(|error| EngineError::MediaOpen(Arc::new(MediaOpenError::Config(error))))?;
    Ok(media)
}

fn messaging_error(error: EngineError) -> MessagingError {
    match error {
        EngineError::Overloaded => MessagingError::Overloaded,
        EngineError::ShardGone => MessagingError::Unavailable,
        other => MessagingError::Storage(other.to_string()),
    }
}

fn queue_error<T>(error: flume::TrySendError<T>) -> EngineError {
    match error {
        flume::TrySendError::Full(_) => EngineError::Overloaded,
        flume::TrySendError::Disconnected(_) => EngineError::ShardGone,
    }
}

/// CPUs this process may run on, so shard `i` is pinned to the `i`th of them.
fn available_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above; pid 0 is this thread.
    let status = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    let cpus: Vec<usize> = if status == 0 {
        // SAFETY: CPU_ISSET reads the set sched_getaffinity filled.
        (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect()
    } else {
        Vec::new()
    };
    if cpus.is_empty() {
        vec![0]
    } else {
        cpus
    }
}

/// How a data directory is locked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataDirLock {
    /// The engine: the only writer.
    Exclusive,
    /// Offline readers (`admin check`): any number, but never beside a running engine.
    Shared,
}

/// Takes the data directory's lock, held as long as the returned file is open: two engines
/// on one directory would be two writers of every log, and a reader beside a writer maps
/// files that change under it. The kernel drops the lock when the process dies.
pub fn lock_data_dir(data_dir: &std::path::Path, mode: DataDirLock) -> Result<std::fs::File, EngineError> {
    use std::os::fd::AsRawFd;
    let path = data_dir.join("LOCK");
    let io_error = |source| EngineError::DataDir { path: path.clone(), source: Arc::new(source) };
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io_error)?;
    let operation = match mode {
        DataDirLock::Exclusive => libc::LOCK_EX,
        DataDirLock::Shared => libc::LOCK_SH,
    };
    // SAFETY: flock only takes a lock on the open descriptor.
    if unsafe { libc::flock(file.as_raw_fd(), operation | libc::LOCK_NB) } != 0 {
        return Err(EngineError::Locked(data_dir.to_path_buf()));
    }
    Ok(file)
}
