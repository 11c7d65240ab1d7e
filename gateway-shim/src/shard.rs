//! The gateway's part of one shard: its listener, budgets and open connections. Lives on the
//! shard's executor only (`Rc`, no locks).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine::shard::ShardContext;
use engine::ShardId;
use ferrogram_net::codec;
use ferrogram_net::limits::{
    DIALOGS_PAGE_MAX, DIFFERENCE_LIMIT_MAX, FRAME_MAX, HISTORY_PAGE_MAX, IDS_PER_REQUEST_MAX, MESSAGE_TEXT_MAX,
    PROTOCOL_VERSION,
};
use ferrogram_net::{ErrorBody, ErrorCode, Limits, UnixMs, Welcome};
use futures_lite::AsyncWriteExt;
use glommio::net::TcpListener;
use glommio::sync::Semaphore;

use crate::config::{
    BODY_BUFFERS_PER_SHARD_MAX, BODY_BUFFER_BYTES_MAX, DEADLINE_SWEEP_INTERVAL, REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX,
    SHUTDOWN_DRAIN_TIMEOUT, WRITE_BATCH_BYTES_MAX,
};

/// Smaller buffers are not worth pooling (they come from the allocator's warm size classes).
const READ_BUFFER_POOLED_BYTES_MIN: usize = 64 * 1024;
/// Batch buffers (`WRITE_BATCH_BYTES_MAX` each) a shard keeps for its writers: 8 MiB at most,
/// whatever the number of connections.
const WRITE_BATCHES_PER_SHARD_MAX: usize = 32;
/// The live-update pumps' share of the core when requests wait too (glommio's default queue
/// has 1000): deliveries still get a tenth under a flood of requests, and all of it otherwise.
const LIVE_UPDATE_SHARES: usize = 100;
use crate::connection::{self, within, CloseReason, Connection};
use crate::metrics::ShardMetrics;
use crate::Gateway;

thread_local! {
    /// The shard's gateway, found again by the shutdown task.
    static SHARD_GATEWAY: RefCell<Option<Rc<ShardGateway>>> = const { RefCell::new(None) };
}

pub(crate) struct ShardGateway {
    pub gateway: Arc<Gateway>,
    pub shard: ShardId,
    pub request_budget: Rc<Semaphore>,
    pub outbound_budget: Rc<Semaphore>,
    connections: RefCell<HashMap<u64, Weak<Connection>>>,
    /// Buffers of large request bodies (upload parts), handed back once a frame is decoded
    /// and reused by the next large frame on any connection of the shard.
    body_buffers: RefCell<Vec<Vec<u8>>>,
    /// Buffers the writers build batches of several frames in, lent for one socket write each:
    /// they follow the writes in progress, not the connections open.
    write_batches: RefCell<Vec<Vec<u8>>>,
    next_connection: Cell<u64>,
    stop: (flume::Sender<()>, flume::Receiver<()>),
    /// The task queue the connections' live-update pumps run in. A channel post wakes one
    /// pump per online subscriber; in the queue every other task runs in, the poster's reply
    /// and its writer would run only after all of them (about 28 ms for 10,000 subscribers).
    /// Apart, the executor runs the shard's own queue, replies included, before a burst of
    /// pumps, and the pumps take what time is left.
    pub live_updates: glommio::TaskQueueHandle,
}

impl ShardGateway {
    pub fn metrics(&self) -> &ShardMetrics {
        &self.gateway.metrics.shards[self.shard.index()]
    }

    pub fn welcome(&self) -> Welcome {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Welcome {
            version: PROTOCOL_VERSION,
            server_time: UnixMs(u64::try_from(now.as_millis()).unwrap_or(u64::MAX)),
            limits: Limits {
                frame_max: FRAME_MAX as u32,
                message_text_max: MESSAGE_TEXT_MAX as u32,
                history_page_max: HISTORY_PAGE_MAX,
                difference_limit_max: DIFFERENCE_LIMIT_MAX,
                dialogs_page_max: DIALOGS_PAGE_MAX,
                ids_per_request_max: IDS_PER_REQUEST_MAX as u32,
                requests_in_flight_max: REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX as u32,
            },
        }
    }

    pub fn register(&self, connection: &Rc<Connection>) -> u64 {
        let id = self.next_connection.get();
        self.next_connection.set(id + 1);
        self.connections.borrow_mut().insert(id, Rc::downgrade(connection));
        self.metrics().connections_open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        id
    }

    /// A buffer for a large request body: a pooled one, or a new empty one.
    pub fn take_body_buffer(&self) -> Vec<u8> {
        self.body_buffers.borrow_mut().pop().unwrap_or_default()
    }

    /// Keeps a large body's buffer for the next large frame, up to `BODY_BUFFERS_PER_SHARD_MAX`
    /// buffers of at most `BODY_BUFFER_BYTES_MAX` each; others are freed.
    pub fn give_body_buffer(&self, mut buffer: Vec<u8>) {
        let mut pool = self.body_buffers.borrow_mut();
        let capacity = buffer.capacity();
        if capacity > READ_BUFFER_POOLED_BYTES_MIN
            && capacity <= BODY_BUFFER_BYTES_MAX
            && pool.len() < BODY_BUFFERS_PER_SHARD_MAX
        {
            buffer.clear();
            pool.push(buffer);
        }
    }

    /// A buffer to build a batch of frames in: a pooled one, or a new one of a batch's size.
    pub fn take_write_batch(&self) -> Vec<u8> {
        self.write_batches.borrow_mut().pop().unwrap_or_else(|| Vec::with_capacity(WRITE_BATCH_BYTES_MAX))
    }

    /// Takes back a batch buffer once it is written, up to `WRITE_BATCHES_PER_SHARD_MAX`.
    pub fn give_write_batch(&self, mut batch: Vec<u8>) {
        let mut pool = self.write_batches.borrow_mut();
        if batch.capacity() == WRITE_BATCH_BYTES_MAX && pool.len() < WRITE_BATCHES_PER_SHARD_MAX {
            batch.clear();
            pool.push(batch);
        }
    }

    pub fn unregister(&self, id: u64) {
        if let Some(connection) = self.connections.borrow_mut().remove(&id).and_then(|weak| weak.upgrade()) {
            self.gateway.rates.disconnect(connection.ip);
        }
        self.metrics().connections_open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Binds this shard's listener (SO_REUSEPORT: every shard on the same address) and serves
/// connections until [`stop`]. Reports the bind's result on `bound`.
pub(crate) async fn listen(gateway: Arc<Gateway>, context: Rc<ShardContext>, bound: flume::Sender<Result<(), String>>) {
    let shard = context.id;
    let listener = match TcpListener::bind(gateway.config.listen) {
        Ok(listener) => listener,
        Err(error) => {
            let _ = bound.send(Err(format!("shard {shard}: cannot listen on {}: {error}", gateway.config.listen)));
            return;
        }
    };
    let limits = &gateway.config.limits;
    let state = Rc::new(ShardGateway {
        request_budget: Rc::new(Semaphore::new(limits.request_bytes_per_shard_max)),
        outbound_budget: Rc::new(Semaphore::new(limits.outbound_bytes_per_shard_max)),
        gateway: gateway.clone(),
        shard,
        connections: RefCell::new(HashMap::new()),
        body_buffers: RefCell::new(Vec::new()),
        write_batches: RefCell::new(Vec::new()),
        next_connection: Cell::new(0),
        stop: flume::bounded(1),
        live_updates: glommio::executor().create_task_queue(
            glommio::Shares::Static(LIVE_UPDATE_SHARES),
            glommio::Latency::NotImportant,
            "live-updates",
        ),
    });
    SHARD_GATEWAY.with(|slot| *slot.borrow_mut() = Some(state.clone()));
    let _ = bound.send(Ok(()));
    if shard.index() == 0 {
        glommio::spawn_local(forget_idle_rate_limits(gateway.clone())).detach();
    }
    glommio::spawn_local(sample_storage_stats(state.clone(), context)).detach();
    glommio::spawn_local(expire_deadlines(state.clone())).detach();

    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            let _ = state.stop.1.recv_async().await;
            None
        })
        .await;
        let stream = match accepted {
            None => break,
            Some(Ok(stream)) => stream,
            Some(Err(error)) => {
                // Out of descriptors or memory: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else { continue };
        let metrics = state.metrics();
        let shard_full = state.connections.borrow().len() >= gateway.connections_per_shard_cap();
        if shard_full || !gateway.rates.connect(peer.ip()) {
            metrics.connections_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            glommio::spawn_local(refuse(stream, shard_full)).detach();
            continue;
        }
        metrics.connections_accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        glommio::spawn_local(connection::serve(state.clone(), stream, peer.ip())).detach();
    }
}

/// Tells a connection over a cap why it is refused, briefly, then closes it.
async fn refuse(mut stream: glommio::net::TcpStream, shard_full: bool) {
    let error = if shard_full {
        ErrorBody {
            code: ErrorCode::Overloaded,
            message: "the server is at its connection limit".into(),
            retry_after_s: 5,
        }
    } else {
        ErrorBody {
            code: ErrorCode::FloodWait,
            message: "too many connections from this address".into(),
            retry_after_s: 5,
        }
    };
    let mut frame = Vec::new();
    if codec::encode_error(&mut frame, &error).is_ok() {
        within(Duration::from_secs(1), stream.write_all(&frame)).await;
    }
}

/// Closes connections past their read deadline (handshake, idle or frame timeout), once a
/// second: one sweep over the shard's connections instead of a timer per read.
async fn expire_deadlines(state: Rc<ShardGateway>) {
    while !state.gateway.stopping() {
        glommio::timer::sleep(DEADLINE_SWEEP_INTERVAL).await;
        let now = std::time::Instant::now();
        let expired: Vec<Rc<Connection>> = state
            .connections
            .borrow()
            .values()
            .filter_map(|weak| weak.upgrade())
            .filter(|connection| connection.deadline.get().is_some_and(|deadline| deadline <= now))
            .collect();
        for connection in expired {
            connection.close(CloseReason::Timeout);
        }
    }
}

/// Copies the shard's WAL figures (batches, bytes, fdatasyncs and their time) and its media
/// store's storage statistics into its metrics once a second: the log and the store live on
/// this thread, the scrape on another.
async fn sample_storage_stats(state: Rc<ShardGateway>, context: Rc<ShardContext>) {
    use std::sync::atomic::Ordering::Relaxed;
    while !state.gateway.stopping() {
        let stats = context.log.stats();
        let metrics = state.metrics();
        metrics.wal_batches.store(stats.batches, Relaxed);
        metrics.wal_batch_bytes.store(stats.batch_bytes, Relaxed);
        metrics.wal_syncs.store(stats.syncs, Relaxed);
        metrics.wal_sync_us.store(stats.sync_time_us, Relaxed);
        metrics.wal_sync_us_max.store(stats.sync_time_us_max, Relaxed);
        // The store answers after the operation it is running; one busy for longer than this
        // keeps its previous figures until the next sample.
        let media = state.gateway.media.shard_stats(state.shard);
        if let Some(Ok(stats)) = within(MEDIA_STATS_WAIT, media).await {
            let gauges = &metrics.media;
            gauges.files.store(stats.files, Relaxed);
            gauges.logical_bytes.store(stats.logical_bytes, Relaxed);
            gauges.stored_bytes.store(stats.stored_bytes, Relaxed);
            gauges.chunks.store(stats.chunks, Relaxed);
            gauges.chunks_unreferenced.store(stats.chunks_unreferenced, Relaxed);
            gauges.physical_bytes.store(stats.physical_bytes, Relaxed);
            gauges.garbage_bytes.store(stats.garbage_bytes, Relaxed);
            gauges.segments.store(stats.segments, Relaxed);
            gauges.uploads.store(stats.uploads, Relaxed);
            gauges.staging_bytes.store(stats.staging_bytes, Relaxed);
            gauges.cache_bytes.store(stats.cache_bytes, Relaxed);
        }
        glommio::timer::sleep(Duration::from_secs(1)).await;
    }
}

/// How long a storage sample waits for the media store's answer.
const MEDIA_STATS_WAIT: Duration = Duration::from_millis(500);

async fn forget_idle_rate_limits(gateway: Arc<Gateway>) {
    loop {
        glommio::timer::sleep(Duration::from_secs(60)).await;
        if gateway.stopping() {
            return;
        }
        gateway.rates.forget_idle();
    }
}

/// Stops this shard's gateway: no more accepts; each connection finishes its in-flight
/// requests (at most `SHUTDOWN_DRAIN_TIMEOUT`), flushes its answers and closes.
pub(crate) async fn stop() {
    let Some(state) = SHARD_GATEWAY.with(|slot| slot.borrow_mut().take()) else { return };
    let _ = state.stop.0.try_send(());
    let connections: Vec<Rc<Connection>> =
        state.connections.borrow().values().filter_map(|weak| weak.upgrade()).collect();
    let deadline = std::time::Instant::now() + SHUTDOWN_DRAIN_TIMEOUT;
    for connection in &connections {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        connection.drain(left).await;
        connection.close_after_flush(CloseReason::Shutdown);
    }
    // Give the writers a moment to flush the last answers.
    let flushed = async {
        while !state.connections.borrow().is_empty() {
            glommio::timer::sleep(Duration::from_millis(5)).await;
        }
    };
    within(Duration::from_secs(2), flushed).await;
}
