//! A shard: one glommio executor pinned to one core, owning its log outright. It serves the
//! requests of the engine handle from a bounded queue, runs tasks that other shards send it
//! over the channel mesh, and runs the host's own services.

use std::rc::Rc;
use std::sync::Arc;

use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};

use crate::engine::{AppendAck, EngineError, ReplayHook};
use crate::ids::{Lsn, RecordKind, ShardId, VShard, VSHARD_COUNT};
use crate::media::config::{MediaSettings, MEDIA_DIR};
use crate::media::driver::MediaDriver;
use crate::media::journal::WalJournal;
use crate::media::recovery::{MediaOpenReport, MediaRecovery};
use crate::media::requests::MediaRequest;
use crate::messaging::driver::{Connected, MessagingDriver, OfflineHook, PushHook};
use crate::messaging::{AuthorizationId, MessagingCore, MessagingResult, Request, Response, UserId};
use crate::vshards::VShardTable;
use crate::wal::driver::{CheckpointError, LogError, OpenReport, ShardLog};
use crate::wal::{AppendError, CheckpointTicket, OwnedRecord, RecordPosition};

/// Work one shard sends another: a closure run on the receiving shard's executor.
pub type MeshTask = Box<dyn FnOnce(&Rc<ShardContext>) + Send>;

/// A task the host runs on a shard (see `Engine::run_on_every_shard`).
pub type HostTask = Box<dyn FnOnce(Rc<ShardContext>) + Send>;

pub(crate) type Reply<T> = flume::Sender<Result<T, EngineError>>;

pub(crate) enum ShardRequest {
    Append { records: Vec<(RecordKind, VShard, Vec<u8>)>, reply: Reply<AppendAck> },
    Read { position: RecordPosition, reply: Reply<OwnedRecord> },
    Checkpoint { state: Vec<u8>, covers: Lsn, reply: Reply<CheckpointTicket> },
    Messaging { request: Request, reply: flume::Sender<MessagingResult<Response>> },
    Connect { user: UserId, authorization: Option<AuthorizationId>, reply: flume::Sender<MessagingResult<Connected>> },
    Media(MediaRequest),
    Run(HostTask),
    Shutdown { reply: Reply<()> },
}

/// What a shard owns and what code running on it may use. Lives on its executor only.
pub struct ShardContext {
    pub id: ShardId,
    pub log: ShardLog,
    pub table: Arc<VShardTable>,
    mesh: Senders<MeshTask>,
    pub(crate) messaging: MessagingDriver,
    pub(crate) media: MediaDriver,
}

impl std::fmt::Debug for ShardContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardContext").field("id", &self.id).finish_non_exhaustive()
    }
}

impl ShardContext {
    pub fn shard_count(&self) -> usize {
        self.table.shard_count()
    }

    /// Sends `task` to run on `shard` without waiting; a full channel hands it back, so the
    /// caller decides how to apply backpressure (NOTES-runtime: the mesh has no drop policy).
    pub fn try_send_to(&self, shard: ShardId, task: MeshTask) -> Result<(), MeshTask> {
        if shard == self.id {
            return Err(task);
        }
        self.mesh.try_send_to(shard.index(), task).map_err(|error| match error {
            glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(task)) => task,
            glommio::GlommioError::Closed(glommio::ResourceType::Channel(task)) => task,
            _ => unreachable!("try_send_to only fails with WouldBlock or Closed"),
        })
    }

    /// Sends `task` to run on `shard`, waiting while the channel is full.
    pub async fn send_to(&self, shard: ShardId, task: MeshTask) -> Result<(), MeshTask> {
        if shard == self.id {
            return Err(task);
        }
        self.mesh.send_to(shard.index(), task).await.map_err(|error| match error {
            glommio::GlommioError::Closed(glommio::ResourceType::Channel(task)) => task,
            glommio::GlommioError::WouldBlock(glommio::ResourceType::Channel(task)) => task,
            _ => unreachable!("send_to only fails with Closed"),
        })
    }
}

/// What a shard found when it opened: its log's report and its media store's.
pub(crate) type ShardOpened = (OpenReport, MediaOpenReport);

/// Everything a shard needs to start, moved into its executor.
pub(crate) struct ShardStart {
    pub id: ShardId,
    pub dir: std::path::PathBuf,
    pub log_config: crate::config::LogConfig,
    pub repair: bool,
    pub table: Arc<VShardTable>,
    pub mesh: MeshBuilder<MeshTask, Full>,
    pub requests: flume::Receiver<ShardRequest>,
    pub opened: std::sync::mpsc::Sender<(ShardId, Result<ShardOpened, EngineError>)>,
    pub replay: Option<ReplayHook>,
    pub offline: Option<OfflineHook>,
    pub push: Option<PushHook>,
    pub checkpoint_every_bytes: u64,
    pub checkpoint_at_close_min_bytes: u64,
    pub retain_log: bool,
    /// With the deployment's hash seed and a file bound that fits the log's batches.
    pub media: MediaSettings,
}

thread_local! {
    /// Dropped when the shard's thread ends, however it ends: the engine handle watches the
    /// other end to answer `ShardGone` instead of waiting forever on a dead shard.
    static LIFELINE: std::cell::RefCell<Option<crate::lifeline::LifelineGuard>> = const { std::cell::RefCell::new(None) };
}

/// Ties `lifeline` to the current thread's life. Call first thing on a shard's thread.
pub(crate) fn hold_lifeline(lifeline: crate::lifeline::LifelineGuard) {
    LIFELINE.with(|slot| *slot.borrow_mut() = Some(lifeline));
}

/// The shard's main future: join the mesh, recover the log, then serve until shutdown.
pub(crate) async fn run(start: ShardStart) {
    let ShardStart {
        id,
        dir,
        log_config,
        repair,
        table,
        mesh,
        requests,
        opened,
        replay,
        offline,
        push,
        checkpoint_every_bytes,
        checkpoint_at_close_min_bytes,
        retain_log,
        media,
    } = start;
    // Every peer must join the mesh or all of them hang, so join before anything can fail.
    let Ok((senders, mut receivers)) = mesh.join().await else {
        let _ = opened.send((id, Err(EngineError::ShardGone)));
        return;
    };
    if let Err(error) = crate::preflight::probe_dma_reads(&dir).await {
        let _ = opened.send((id, Err(EngineError::Preflight(Arc::new(error)))));
        return;
    }
    let record_bytes_max =
        log_config.batch_bytes_max - crate::wal::format::BATCH_HEADER_BYTES - crate::wal::format::RECORD_HEADER_BYTES;
    // Messaging and media state come back from the checkpoint, then from every record after it.
    let core = std::cell::RefCell::new(MessagingCore::new(id, table.clone()));
    let media_recovery = std::cell::RefCell::new(MediaRecovery::default());
    let mut restore_error = None;
    // The report keeps the host's own part of the checkpoint. Each call starts afresh: the
    // log calls again with an older checkpoint when the newest fails to verify.
    let restore = |checkpoint: Option<(CheckpointTicket, &[u8])>| {
        *core.borrow_mut() = MessagingCore::new(id, table.clone());
        *media_recovery.borrow_mut() = MediaRecovery::default();
        restore_error = None;
        let Some((_, bytes)) = checkpoint else { return Vec::new() };
        match crate::media::checkpoint::split(bytes) {
            Ok(sections) => {
                if let Err(error) = core.borrow_mut().restore(sections.messaging) {
                    restore_error = Some(error.to_string());
                }
                media_recovery.borrow_mut().restore(sections.media);
                sections.host.to_vec()
            }
            Err(error) => {
                restore_error = Some(format!("the checkpoint does not split into its sections: {error}"));
                Vec::new()
            }
        }
    };
    let mut replay_error = None;
    let replay_record = |position: RecordPosition, record: crate::wal::Record<'_>| {
        if let Err(error) = core.borrow_mut().replay(record.kind, record.payload) {
            replay_error.get_or_insert(format!("record {}: {error}", record.lsn));
        }
        media_recovery.borrow_mut().replay(record.lsn, record.kind, record.payload);
        if let Some(hook) = &replay {
            hook(id, position, record);
        }
    };
    let (log, report) = match ShardLog::open(&dir, log_config, repair, restore, replay_record).await {
        Ok(opened) => opened,
        Err(error) => {
            let _ = opened.send((id, Err(EngineError::Open(Arc::new(error)))));
            return;
        }
    };
    if let Some(error) = restore_error.or(replay_error) {
        let _ = opened.send((id, Err(EngineError::Messaging(format!("{}: {error}", dir.display())))));
        return;
    }
    // The log is open (and its DMA probe done): the media store's segments come next.
    let shard_vshard = (0..VSHARD_COUNT as u64)
        .map(VShard::of)
        .find(|vshard| table.owner(*vshard) == id)
        .expect("the vshard table gives every shard a vshard");
    let media_log = log.clone();
    let journal = move |shared| WalJournal::new(media_log, shard_vshard, record_bytes_max, shared);
    let opened_media = media_recovery.into_inner().open(media.store.clone(), &dir.join(MEDIA_DIR), journal).await;
    let (store, journal_shared, media_report) = match opened_media {
        Ok(opened) => opened,
        Err(error) => {
            let _ = opened.send((id, Err(EngineError::MediaOpen(Arc::new(error)))));
            return;
        }
    };
    let mut core = core.into_inner();
    core.set_checkpoint_every(checkpoint_every_bytes);
    core.set_checkpoint_at_close_min(checkpoint_at_close_min_bytes);
    core.resume(report.generation, Lsn(log.next_lsn().0 - 1));
    if push.is_some() {
        core.enable_push();
    }
    let host_state = report.checkpoint.as_ref().map(|(_, host)| host.clone()).unwrap_or_default();
    let messaging = MessagingDriver::new(core, table.shard_count(), offline, push, host_state, !retain_log);
    let media = MediaDriver::new(journal_shared, media, checkpoint_every_bytes);
    let context = Rc::new(ShardContext { id, log, table, mesh: senders, messaging, media });
    for (_, receiver) in receivers.streams() {
        let context = context.clone();
        glommio::spawn_local(async move {
            while let Some(task) = receiver.recv().await {
                task(&context);
            }
        })
        .detach();
    }
    MessagingDriver::start(&context);
    MediaDriver::start(&context, store);
    let _ = opened.send((id, Ok((report, media_report))));
    drop(opened);
    serve(&context, requests).await;
}

async fn serve(context: &Rc<ShardContext>, requests: flume::Receiver<ShardRequest>) {
    while let Ok(request) = requests.recv_async().await {
        let mut next = Some(request);
        // Drain what is queued before yielding: one wake-up serves a burst (NOTES-runtime).
        while let Some(request) = next {
            if let Some(reply) = handle(context, request) {
                crate::messaging::driver::checkpoint_for_close(context).await;
                MediaDriver::stop(context).await;
                let result = context.log.close().await.map_err(EngineError::from);
                let _ = reply.send(result);
                return;
            }
            next = requests.try_recv().ok();
        }
    }
    crate::messaging::driver::checkpoint_for_close(context).await;
    MediaDriver::stop(context).await;
    let _ = context.log.close().await;
}

/// Handles one request; returns the reply channel of a shutdown.
fn handle(context: &Rc<ShardContext>, request: ShardRequest) -> Option<Reply<()>> {
    match request {
        ShardRequest::Append { records, reply } => append(context, records, reply),
        ShardRequest::Read { position, reply } => {
            let context = context.clone();
            glommio::spawn_local(async move {
                let _ =
                    reply.send(context.log.read(position).await.map_err(|error| EngineError::Read(Arc::new(error))));
            })
            .detach();
        }
        ShardRequest::Checkpoint { state, covers, reply } => {
            let newest = Lsn(context.log.next_lsn().0 - 1);
            if covers != newest {
                let _ = reply.send(Err(EngineError::StaleCheckpoint { covers, newest }));
                return None;
            }
            // Host and messaging state as of this step, and the media section taken as soon as
            // the media operation running now ends (`media::driver`): all in the ticket taken now.
            let messaging = context.messaging.checkpoint_snapshot(state.clone());
            let media = MediaDriver::checkpoint_section(context);
            let checkpoint = context.log.checkpoint_with(move |mut sink| async move {
                let media = media.await.ok_or(CheckpointError::Abandoned)?;
                sink.write_chunks(&crate::media::checkpoint::compose(&state, messaging, media)).await?;
                Ok(sink)
            });
            glommio::spawn_local(async move {
                let _ = reply.send(checkpoint.await.map_err(|error| EngineError::Checkpoint(Arc::new(error))));
            })
            .detach();
        }
        ShardRequest::Messaging { request, reply } => MessagingDriver::request(context, request, reply),
        ShardRequest::Connect { user, authorization, reply } => {
            MessagingDriver::connect(context, user, authorization, reply)
        }
        ShardRequest::Media(request) => MediaDriver::request(context, request),
        ShardRequest::Run(task) => task(context.clone()),
        ShardRequest::Shutdown { reply } => return Some(reply),
    }
    None
}

fn append(context: &Rc<ShardContext>, records: Vec<(RecordKind, VShard, Vec<u8>)>, reply: Reply<AppendAck>) {
    if records.is_empty() {
        let _ = reply.send(Err(EngineError::InvalidArgument("an append needs at least one record")));
        return;
    }
    let refs: Vec<(RecordKind, VShard, &[u8])> =
        records.iter().map(|(kind, vshard, payload)| (*kind, *vshard, payload.as_slice())).collect();
    let mut positions = Vec::with_capacity(records.len());
    let shard = context.id;
    match context.log.append_all(&refs, |appended| positions.push(appended.position)) {
        Ok(first_lsn) => {
            let last = Lsn(first_lsn.0 + records.len() as u64 - 1);
            context.log.on_acked(
                last,
                Box::new(move |result: Result<(), LogError>| {
                    let ack = result.map(|()| AppendAck { shard, first_lsn, positions }).map_err(EngineError::from);
                    let _ = reply.send(ack);
                }),
            );
        }
        Err(AppendError::Backpressure) => {
            let _ = reply.send(Err(EngineError::Overloaded));
        }
        Err(error) => {
            let _ = reply.send(Err(EngineError::Append(error)));
        }
    }
}
