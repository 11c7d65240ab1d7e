//! Runs a shard's [`MessagingCore`] on its glommio executor: feeds it requests, peer batches
//! from the channel mesh and the log's watermarks, and performs its effects — replies to the
//! host, one mesh message per destination shard per step, events into session queues, offline
//! notices, and automatic checkpoints.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ids::{Lsn, RecordKind, ShardId, VShard};
use crate::media::checkpoint as layout;
use crate::messaging::core::{Journal, MessagingCore};
use crate::messaging::limits::{
    CHECKPOINT_PIECES_PER_STEP, CHECKPOINT_SHARES, SESSION_QUEUE_MAX, SESSION_QUEUE_SHRINK_EVENTS,
};
use crate::messaging::protocol::{Effects, Origin, PeerMessage, Request, Response};
use crate::messaging::push::PendingPush;
use crate::messaging::state::Map;
use crate::messaging::types::{
    AuthorizationId, BoxState, LiveEvent, MessagingError, MessagingResult, Sequenced, SessionId, UnixMs, UserId,
};
use crate::shard::{MeshTask, ShardContext};
use crate::wal::driver::{CheckpointError, Notify, ShardLog};
use crate::wal::{AppendError, ChunkedBytes};

/// Told about every durable box update of a user with no online session (push uses it).
/// Runs on the user's shard: it must not block.
pub type OfflineHook = Arc<dyn Fn(UserId, &Sequenced) + Send + Sync>;

/// Told about every push job once it is durable in its shard's outbox (see `messaging/push.rs`).
/// Runs on the job's shard: it must not block (hand the job to a channel).
pub type PushHook = Arc<dyn Fn(PendingPush) + Send + Sync>;

/// A session registered with [`crate::messaging::api::Messenger::connect`].
#[derive(Debug)]
pub struct Connected {
    pub session: SessionId,
    /// The box state at registration: every later update arrives on `events`.
    pub state: BoxState,
    pub events: SessionEvents,
}

/// A session's live events. Bounded: a session that falls `SESSION_QUEUE_MAX` events behind is
/// dropped, and its stream ends with [`LiveEvent::Resync`]. A session connected under an
/// authorization that is then revoked is dropped too: its stream ends, after the events
/// already queued, with [`LiveEvent::Revoked`].
#[derive(Debug)]
pub struct SessionEvents {
    receiver: flume::Receiver<Envelope>,
    /// Why the engine dropped the session, if it did ([`ENDED_OVERFLOWED`], [`ENDED_REVOKED`]):
    /// one shared word per session rather than an allocation per reason.
    ended_because: Arc<AtomicU8>,
    ended: bool,
}

/// The session's queue overflowed: its stream ends with [`LiveEvent::Resync`].
const ENDED_OVERFLOWED: u8 = 1;
/// Its authorization was revoked: the stream ends with [`LiveEvent::Revoked`].
const ENDED_REVOKED: u8 = 2;

impl SessionEvents {
    /// The next event; `None` once the session is gone.
    pub async fn next(&mut self) -> Option<LiveEvent> {
        loop {
            match self.receiver.recv_async().await {
                Ok(Envelope::Event(event)) => return Some(event),
                Ok(Envelope::MovedTo(receiver)) => self.receiver = receiver,
                Err(_) => return self.end(),
            }
        }
    }

    /// The next event if one is queued.
    pub fn try_next(&mut self) -> Option<LiveEvent> {
        loop {
            match self.receiver.try_recv() {
                Ok(Envelope::Event(event)) => return Some(event),
                Ok(Envelope::MovedTo(receiver)) => self.receiver = receiver,
                Err(flume::TryRecvError::Empty) => return None,
                Err(flume::TryRecvError::Disconnected) => return self.end(),
            }
        }
    }

    /// The next event, waiting at most `timeout` (from a thread outside the engine).
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<LiveEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.receiver.recv_deadline(deadline) {
                Ok(Envelope::Event(event)) => return Some(event),
                Ok(Envelope::MovedTo(receiver)) => self.receiver = receiver,
                Err(flume::RecvTimeoutError::Timeout) => return None,
                Err(flume::RecvTimeoutError::Disconnected) => return self.end(),
            }
        }
    }

    /// The stream's last event, once: why the engine dropped the session, if it did.
    fn end(&mut self) -> Option<LiveEvent> {
        if self.ended {
            return None;
        }
        self.ended = true;
        // A revoked session must not resync: its authorization would be refused anyway.
        let because = self.ended_because.load(Ordering::Acquire);
        if because & ENDED_REVOKED != 0 {
            return Some(LiveEvent::Revoked);
        }
        (because & ENDED_OVERFLOWED != 0).then_some(LiveEvent::Resync)
    }
}

enum Pending {
    Plain(flume::Sender<MessagingResult<Response>>),
    Connect { session: SessionId, events: SessionEvents, reply: flume::Sender<MessagingResult<Connected>> },
}

/// What a session queue carries.
#[derive(Debug)]
enum Envelope {
    Event(LiveEvent),
    /// The stream goes on in this fresh queue (see [`Sink::shrink_if_drained`]).
    MovedTo(flume::Receiver<Envelope>),
}

struct Sink {
    sender: flume::Sender<Envelope>,
    ended_because: Arc<AtomicU8>,
    /// The queue has held `SESSION_QUEUE_SHRINK_EVENTS` events since it was made.
    grown: bool,
    /// Events until the queue's length is looked at again (see `shrink_if_drained`).
    until_check: u8,
}

/// The queue's length is looked at before one event in this many: asking takes the lock the
/// reader's thread takes. Asked per event, a channel posting to 50,000 sessions 10 times a
/// second cost its shard several points of a core; once in 32, about one.
const SHRINK_CHECK_EVERY: u8 = 32;

impl Sink {
    fn new(ended_because: Arc<AtomicU8>) -> (Sink, flume::Receiver<Envelope>) {
        // flume allocates a bounded queue's storage as events arrive, not up front: an idle
        // session holds none of its `SESSION_QUEUE_MAX` slots.
        let (sender, receiver) = flume::bounded(SESSION_QUEUE_MAX);
        (Sink { sender, ended_because, grown: false, until_check: SHRINK_CHECK_EVERY }, receiver)
    }

    /// Before an event is queued (looking once every `SHRINK_CHECK_EVERY` events): once a burst
    /// has grown the queue and the session has read all of it, the stream moves to a fresh
    /// queue and the grown one is freed when the reader reaches the move. flume keeps a queue's
    /// storage at its largest, so without this a session that once fell 4,096 events behind
    /// would hold about 300 KB (of 72-byte events) for its whole life.
    fn shrink_if_drained(&mut self) {
        self.until_check -= 1;
        if self.until_check > 0 {
            return;
        }
        self.until_check = SHRINK_CHECK_EVERY;
        let queued = self.sender.len();
        if queued >= SESSION_QUEUE_SHRINK_EVENTS {
            self.grown = true;
        }
        if !self.grown || queued > 0 {
            return;
        }
        let (fresh, receiver) = Sink::new(self.ended_because.clone());
        // Empty, so it has room; a reader that is gone fails the event's own send next.
        if self.sender.try_send(Envelope::MovedTo(receiver)).is_ok() {
            *self = fresh;
        }
    }
}

/// What the delivery task does for the sessions, in the order the core produced it.
enum Delivery {
    Event(SessionId, LiveEvent),
    /// The session's authorization was revoked: end its stream after what is queued before.
    Revoke(SessionId),
}

/// A step's deliveries beyond this many go to the delivery task instead of being pushed into
/// the session queues at once. A channel post to 10,000 online subscribers takes 6–11 ms to
/// push (measured), and everything the step answered, the poster's own acknowledgement
/// included, would wait for that.
const DELIVERIES_INLINE_MAX: usize = 256;
/// Deliveries the delivery task pushes before it lets the shard's other tasks run.
const DELIVERIES_PER_TURN: usize = 256;

/// The messaging side of a shard. Lives on its executor only.
pub(crate) struct MessagingDriver {
    core: RefCell<MessagingCore>,
    pending: RefCell<Map<u64, Pending>>,
    next_request: Cell<u64>,
    next_session: Cell<u64>,
    sinks: RefCell<Map<SessionId, Sink>>,
    /// Wakes the watermark task when the core has new things waiting.
    wake: Notify,
    /// The (acknowledged, durable) positions the watermark task waits for now: new waits that
    /// differ wake it, so a reply waiting for the acknowledged watermark is not held behind a
    /// fan-out waiting for the durable one (an `interval` log syncs only once a second).
    watching: Cell<(Option<Lsn>, Option<Lsn>)>,
    /// Per destination shard: mesh tasks waiting for room in the channel, in order.
    outgoing: RefCell<Vec<VecDeque<MeshTask>>>,
    offline: Option<OfflineHook>,
    push: Option<PushHook>,
    /// The host's last checkpoint state, carried into the automatic checkpoints.
    host_state: RefCell<Vec<u8>>,
    checkpointing: Rc<Cell<bool>>,
    /// The task queue automatic checkpoints run in (see `CHECKPOINT_SHARES`).
    checkpoint_queue: glommio::TaskQueueHandle,
    /// Hand segments covered by a finished checkpoint back to the log for reuse.
    release_log: bool,
    /// Deliveries waiting for the delivery task, oldest first. While it holds anything, every
    /// new delivery joins it, so each session still gets its events in order.
    backlog: RefCell<VecDeque<Delivery>>,
    /// Wakes the delivery task when the backlog was empty.
    backlog_wake: Notify,
}

impl MessagingDriver {
    /// On the shard's executor (it creates the checkpoint task queue there).
    pub(crate) fn new(
        core: MessagingCore,
        shard_count: usize,
        offline: Option<OfflineHook>,
        push: Option<PushHook>,
        host_state: Vec<u8>,
        release_log: bool,
    ) -> MessagingDriver {
        MessagingDriver {
            core: RefCell::new(core),
            pending: RefCell::new(Map::default()),
            next_request: Cell::new(1),
            next_session: Cell::new(1),
            sinks: RefCell::new(Map::default()),
            wake: Notify::default(),
            watching: Cell::new((None, None)),
            outgoing: RefCell::new((0..shard_count).map(|_| VecDeque::new()).collect()),
            offline,
            push,
            host_state: RefCell::new(host_state),
            checkpointing: Rc::new(Cell::new(false)),
            checkpoint_queue: glommio::executor().create_task_queue(
                glommio::Shares::Static(CHECKPOINT_SHARES),
                glommio::Latency::NotImportant,
                "checkpoints",
            ),
            release_log,
            backlog: RefCell::new(VecDeque::new()),
            backlog_wake: Notify::default(),
        }
    }

    /// Starts the watermark task and re-sends what recovery left in the outbox.
    pub(crate) fn start(context: &Rc<ShardContext>) {
        glommio::spawn_local(watermarks(context.clone())).detach();
        glommio::spawn_local(deliver_backlog(context.clone())).detach();
        perform(context);
    }

    pub(crate) fn request(
        context: &Rc<ShardContext>,
        request: Request,
        reply: flume::Sender<MessagingResult<Response>>,
    ) {
        let driver = &context.messaging;
        let origin = driver.origin(context.id, Pending::Plain(reply));
        driver.core.borrow_mut().handle(origin, request, now(), &mut LogJournal(&context.log));
        perform(context);
    }

    pub(crate) fn connect(
        context: &Rc<ShardContext>,
        user: UserId,
        authorization: Option<AuthorizationId>,
        reply: flume::Sender<MessagingResult<Connected>>,
    ) {
        let driver = &context.messaging;
        let sequence = driver.next_session.get();
        driver.next_session.set(sequence + 1);
        let session = SessionId::compose(sequence, context.id);
        let ended_because = Arc::new(AtomicU8::new(0));
        let (sink, receiver) = Sink::new(ended_because.clone());
        driver.sinks.borrow_mut().insert(session, sink);
        let events = SessionEvents { receiver, ended_because, ended: false };
        let origin = driver.origin(context.id, Pending::Connect { session, events, reply });
        let request = match authorization {
            Some(authorization) => Request::ConnectAuthorized { user, authorization, session },
            None => Request::Connect { user, session },
        };
        driver.core.borrow_mut().handle(origin, request, now(), &mut LogJournal(&context.log));
        perform(context);
    }

    /// A batch of peer messages from another shard's core.
    pub(crate) fn receive(context: &Rc<ShardContext>, messages: Vec<PeerMessage>) {
        {
            let mut core = context.messaging.core.borrow_mut();
            let now = now();
            for message in messages {
                core.peer(message, now, &mut LogJournal(&context.log));
            }
        }
        perform(context);
    }

    /// The host checkpoints `host_state`: the messaging state as of now, the host's state kept
    /// for the automatic checkpoints after it.
    pub(crate) fn checkpoint_snapshot(&self, host_state: Vec<u8>) -> ChunkedBytes {
        let snapshot = self.core.borrow_mut().snapshot();
        *self.host_state.borrow_mut() = host_state;
        snapshot
    }

    fn origin(&self, shard: ShardId, pending: Pending) -> Origin {
        let request = self.next_request.get();
        self.next_request.set(request + 1);
        self.pending.borrow_mut().insert(request, pending);
        Origin { shard, request }
    }
}

/// Splits a checkpoint into (host state, messaging snapshot).
pub(crate) fn split(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let length = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let host = bytes.get(8..8usize.checked_add(length)?)?;
    Some((host, &bytes[8 + length..]))
}

pub(crate) struct LogJournal<'a>(pub &'a ShardLog);

impl Journal for LogJournal<'_> {
    fn append_all(&mut self, records: &[(RecordKind, VShard, &[u8])]) -> Result<Lsn, AppendError> {
        self.0.append_all(records, |_| {})
    }
}

fn now() -> UnixMs {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    UnixMs(since_epoch.as_millis() as u64)
}

/// Performs what the core produced, until it produces nothing more.
fn perform(context: &Rc<ShardContext>) {
    let driver = &context.messaging;
    loop {
        let mut effects = driver.core.borrow_mut().take_effects();
        if effects.is_empty() {
            driver.core.borrow_mut().recycle_effects(effects);
            break;
        }
        let Effects { replies, peers, deliveries, offline, revoked, pushes } = &mut effects;
        for (origin, result) in replies.drain(..) {
            let Some(pending) = driver.pending.borrow_mut().remove(&origin.request) else { continue };
            match pending {
                Pending::Plain(reply) => {
                    let _ = reply.send(result);
                }
                Pending::Connect { session, events, reply } => {
                    let connected = match result {
                        Ok(Response::State(state)) => Ok(Connected { session, state, events }),
                        Ok(_) => Err(MessagingError::Storage("unexpected answer to connect".into())),
                        Err(error) => Err(error),
                    };
                    if connected.is_err() {
                        driver.sinks.borrow_mut().remove(&session);
                    }
                    if let Err(Ok(connected)) = reply.send(connected).map_err(|unsent| unsent.into_inner()) {
                        // The host stopped waiting: the session has no reader.
                        driver.sinks.borrow_mut().remove(&connected.session);
                        driver.core.borrow_mut().session_lost(connected.session);
                    }
                }
            }
        }
        send_batches(context, peers.drain(..));
        let backlogged = !driver.backlog.borrow().is_empty();
        if backlogged || deliveries.len() > DELIVERIES_INLINE_MAX {
            let mut backlog = driver.backlog.borrow_mut();
            backlog.extend(deliveries.drain(..).map(|(session, event)| Delivery::Event(session, event)));
            backlog.extend(revoked.drain(..).map(Delivery::Revoke));
            if !backlogged && !backlog.is_empty() {
                driver.backlog_wake.notify();
            }
        } else {
            for (session, event) in deliveries.drain(..) {
                deliver(driver, session, event);
            }
            for session in revoked.drain(..) {
                revoke(driver, session);
            }
        }
        if let Some(hook) = &driver.offline {
            for (user, update) in offline.iter() {
                hook(*user, update);
            }
        }
        if let Some(hook) = &driver.push {
            for pending in pushes.drain(..) {
                hook(pending);
            }
        }
        // The next step fills the same vectors: no allocation per step (STYLE, hot paths).
        driver.core.borrow_mut().recycle_effects(effects);
    }
    // Wake the watermark task only for waits it is not waiting for already: waking it for
    // nothing would spin.
    let core = driver.core.borrow();
    let (waiting, watching) = (core.waiting(), driver.watching.get());
    if waiting != watching && waiting != (None, None) || core.has_inbox() && watching == (None, None) {
        driver.wake.notify();
    }
    drop(core);
    maybe_checkpoint(context);
}

/// One mesh message per run of messages to the same shard.
fn send_batches(context: &Rc<ShardContext>, peers: impl Iterator<Item = (ShardId, PeerMessage)>) {
    let mut batch: Vec<PeerMessage> = Vec::new();
    let mut batch_shard = None;
    for (shard, message) in peers {
        if batch_shard != Some(shard) {
            if let Some(previous) = batch_shard {
                send_batch(context, previous, std::mem::take(&mut batch));
            }
            batch_shard = Some(shard);
        }
        batch.push(message);
    }
    if let Some(shard) = batch_shard {
        send_batch(context, shard, batch);
    }
}

fn send_batch(context: &Rc<ShardContext>, shard: ShardId, batch: Vec<PeerMessage>) {
    let task: MeshTask = Box::new(move |context: &Rc<ShardContext>| MessagingDriver::receive(context, batch));
    let mut outgoing = context.messaging.outgoing.borrow_mut();
    let Some(queue) = outgoing.get_mut(shard.index()) else { return };
    if queue.is_empty() {
        match context.try_send_to(shard, task) {
            Ok(()) => return,
            Err(task) => queue.push_back(task),
        }
        // The channel is full: a flusher sends the queue in order as room appears.
        let context = context.clone();
        glommio::spawn_local(async move {
            loop {
                let task = context.messaging.outgoing.borrow_mut()[shard.index()].pop_front();
                let Some(task) = task else { break };
                if context.send_to(shard, task).await.is_err() {
                    break;
                }
            }
        })
        .detach();
    } else {
        queue.push_back(task);
    }
}

/// Takes an automatic checkpoint when enough messaging or media records were written since
/// the last one (the media driver calls it too).
pub(crate) fn maybe_checkpoint(context: &Rc<ShardContext>) {
    let driver = &context.messaging;
    let wanted = driver.core.borrow().wants_checkpoint() || context.media.wants_checkpoint();
    if driver.checkpointing.get() || !wanted {
        return;
    }
    begin_checkpoint(context);
}

/// Called by a clean shutdown before the media store stops and the log closes, so the next
/// open replays little. If enough was written since the last checkpoint began
/// (`EngineConfig::checkpoint_at_close_min_bytes`), takes one more, dropping one still being
/// archived (it would cover less); otherwise lets one in progress finish rather than abandon
/// it (with a large state that left gigabytes of log to replay). No request is served any
/// more, so the pieces are archived at full speed; the shutdown lasts as long as that
/// checkpoint takes.
pub(crate) async fn checkpoint_for_close(context: &Rc<ShardContext>) {
    let driver = &context.messaging;
    // A checkpoint waits for its ticket to be durable: under `interval` durability that
    // would be the next interval's sync, possibly an hour away.
    context.log.sync_now();
    if driver.core.borrow().wants_checkpoint_at_close() {
        driver.core.borrow_mut().abandon_checkpoint();
        wait_for_checkpoint(driver).await;
        begin_checkpoint(context);
        context.log.sync_now();
    }
    wait_for_checkpoint(driver).await;
}

async fn wait_for_checkpoint(driver: &MessagingDriver) {
    while driver.checkpointing.get() {
        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
    }
}

fn begin_checkpoint(context: &Rc<ShardContext>) {
    let driver = &context.messaging;
    // The log's ticket and the core's snapshot are taken in this same step; the pieces are
    // then written a few at a time between other work, so the shard keeps serving.
    driver.checkpointing.set(true);
    driver.core.borrow_mut().begin_checkpoint();
    let host_state = driver.host_state.borrow().clone();
    // Asked in this step too: the media section holds every media record up to the ticket.
    let media = crate::media::driver::MediaDriver::checkpoint_section(context);
    let producer = context.clone();
    let checkpoint = context.log.checkpoint_with(move |mut sink| async move {
        let core = &producer.messaging.core;
        sink.write(&layout::head(&host_state)).await?;
        // Each filled chunk is written while the next pieces are archived into another.
        loop {
            let archived = core.borrow_mut().checkpoint_step(CHECKPOINT_PIECES_PER_STEP);
            let filled = core.borrow_mut().take_checkpoint_bytes();
            sink.write_chunks(&filled).await?;
            if archived {
                break;
            }
            futures_lite::future::yield_now().await;
        }
        let rest = core.borrow_mut().finish_checkpoint().ok_or(CheckpointError::Abandoned)?;
        sink.write_chunks(&rest).await?;
        let media = media.await.ok_or(CheckpointError::Abandoned)?;
        sink.write(&media).await?;
        sink.write(&layout::trailer(rest.len(), media.len())).await?;
        Ok(sink)
    });
    let context = context.clone();
    let queue = context.messaging.checkpoint_queue;
    let finish = async move {
        // A failed checkpoint is retried after the next interval; the log is what is durable.
        if let Ok(ticket) = checkpoint.await {
            if context.messaging.release_log {
                // Everything before the checkpoint's replay start is in the checkpoint: the log
                // may reuse those segments once no retained checkpoint needs them either.
                context.log.release_before(ticket.replay_from.segment);
            }
        }
        // Refused (another checkpoint was being written): drop the one begun.
        let _ = context.messaging.core.borrow_mut().finish_checkpoint();
        context.messaging.checkpointing.set(false);
    };
    // Archiving, checksumming and writing run in their own task queue, so under load they
    // take a bounded share of the core rather than every other turn.
    // (The queue lives as long as the executor: spawning into it cannot fail.)
    if let Ok(task) = glommio::spawn_local_into(finish, queue) {
        task.detach();
    }
}

/// Pushes `event` into the session's queue; a session whose queue is full, or whose reader
/// is gone, is dropped.
fn deliver(driver: &MessagingDriver, session: SessionId, event: LiveEvent) {
    let lost = match driver.sinks.borrow_mut().get_mut(&session) {
        None => false,
        Some(sink) => {
            sink.shrink_if_drained();
            match sink.sender.try_send(Envelope::Event(event)) {
                Ok(()) => false,
                Err(flume::TrySendError::Full(_)) => {
                    sink.ended_because.fetch_or(ENDED_OVERFLOWED, Ordering::Release);
                    true
                }
                Err(flume::TrySendError::Disconnected(_)) => true,
            }
        }
    };
    if lost {
        driver.sinks.borrow_mut().remove(&session);
        driver.core.borrow_mut().session_lost(session);
    }
}

/// The core has dropped the session; dropping its sender ends the stream once the events
/// already queued are read.
fn revoke(driver: &MessagingDriver, session: SessionId) {
    if let Some(sink) = driver.sinks.borrow_mut().remove(&session) {
        sink.ended_because.fetch_or(ENDED_REVOKED, Ordering::Release);
    }
}

/// Pushes the backlog into the session queues `DELIVERIES_PER_TURN` at a time, letting the
/// shard's other tasks (the replies of the same step among them) run between turns.
async fn deliver_backlog(context: Rc<ShardContext>) {
    let driver = &context.messaging;
    loop {
        driver.backlog_wake.wait().await;
        loop {
            for _ in 0..DELIVERIES_PER_TURN {
                let Some(delivery) = driver.backlog.borrow_mut().pop_front() else { break };
                match delivery {
                    Delivery::Event(session, event) => deliver(driver, session, event),
                    Delivery::Revoke(session) => revoke(driver, session),
                }
            }
            // A dropped session has told the core, which may have something to send.
            perform(&context);
            if driver.backlog.borrow().is_empty() {
                break;
            }
            futures_lite::future::yield_now().await;
        }
    }
}

/// Waits for the log's watermarks to pass what the core waits on, then lets it release.
async fn watermarks(context: Rc<ShardContext>) {
    let driver = &context.messaging;
    loop {
        // A notification from before this look (this task's own `perform` included) is
        // answered by it.
        driver.wake.clear();
        let (acked, durable) = driver.core.borrow().waiting();
        driver.watching.set((acked, durable));
        let result = match (acked, durable) {
            (None, None) => {
                if driver.core.borrow().has_inbox() {
                    glommio::timer::sleep(Duration::from_millis(1)).await;
                } else {
                    driver.wake.wait().await;
                }
                Ok(())
            }
            (acked, durable) => {
                let log = &context.log;
                let acked = async {
                    match acked {
                        Some(lsn) => log.acked(lsn).await,
                        None => std::future::pending().await,
                    }
                };
                let durable = async {
                    match durable {
                        Some(lsn) => log.durable(lsn).await,
                        None => std::future::pending().await,
                    }
                };
                // Or something new to wait for came (see `watching`): look again.
                let changed = async {
                    driver.wake.wait().await;
                    Ok(())
                };
                futures_lite::future::or(futures_lite::future::or(acked, durable), changed).await
            }
        };
        if let Err(error) = result {
            // The log stopped: nothing waiting will ever be released. Fail the waiting
            // requests instead of leaving their callers hanging.
            driver.core.borrow_mut().fail_waiting(MessagingError::Storage(error.to_string()));
            perform(&context);
            return;
        }
        let (acked, durable) = (context.log.acked_lsn(), context.log.durable_lsn());
        driver.core.borrow_mut().advance(acked, durable, &mut LogJournal(&context.log));
        perform(&context);
        glommio::yield_if_needed().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messaging::types::{ChatId, UserId};

    fn event(n: u64) -> LiveEvent {
        LiveEvent::Typing { chat: ChatId(n), user: UserId(1) }
    }

    fn queue(sink: &mut Sink, n: u64) {
        sink.shrink_if_drained();
        sink.sender.try_send(Envelope::Event(event(n))).expect("the queue has room");
    }

    fn read(events: &mut SessionEvents, count: usize) -> Vec<u64> {
        (0..count)
            .map(|_| match events.try_next() {
                Some(LiveEvent::Typing { chat, .. }) => chat.0,
                other => panic!("expected a queued event, got {other:?}"),
            })
            .collect()
    }

    // A burst grows a session's queue. Once the reader has drained it, an event soon after
    // (the length is looked at once every `SHRINK_CHECK_EVERY` events) moves the stream to a
    // fresh queue: the reader sees every event once and in order, lets go of the grown queue,
    // and the stream still ends the way the engine says.
    #[test]
    fn a_drained_burst_moves_the_stream_to_a_fresh_queue() {
        let ended_because = Arc::new(AtomicU8::new(0));
        let (mut sink, receiver) = Sink::new(ended_because.clone());
        let mut events = SessionEvents { receiver, ended_because, ended: false };
        let burst = (SESSION_QUEUE_SHRINK_EVENTS + 2 * SHRINK_CHECK_EVERY as usize) as u64;
        for n in 0..burst {
            queue(&mut sink, n);
        }
        assert!(sink.grown, "a burst of {burst} events grew the queue");
        let grown = sink.sender.clone();
        assert_eq!(read(&mut events, 5), [0, 1, 2, 3, 4]);
        for n in burst..burst + u64::from(SHRINK_CHECK_EVERY) {
            queue(&mut sink, n);
        }
        assert!(sink.sender.same_channel(&grown), "not moved while the reader is behind");
        let end = burst + u64::from(SHRINK_CHECK_EVERY);
        assert_eq!(read(&mut events, end as usize - 5), (5..end).collect::<Vec<u64>>());
        let mut next = end;
        while sink.sender.same_channel(&grown) {
            assert!(next < end + u64::from(SHRINK_CHECK_EVERY), "no move within {SHRINK_CHECK_EVERY} events");
            queue(&mut sink, next);
            assert_eq!(read(&mut events, 1), [next], "the stream goes on in order");
            next += 1;
        }
        assert!(!sink.grown, "the fresh queue starts small");
        assert!(grown.is_disconnected(), "the reader let go of the grown queue");
        assert_eq!(events.try_next(), None);

        // A session dropped after the move ends on the fresh queue, after what it holds.
        queue(&mut sink, next);
        sink.ended_because.fetch_or(ENDED_OVERFLOWED, Ordering::Release);
        drop(sink);
        assert_eq!(read(&mut events, 1), [next]);
        assert_eq!(events.try_next(), Some(LiveEvent::Resync));
        assert_eq!(events.try_next(), None);
    }

    // A queue that never held a burst is kept: a move costs a channel, worth it only for the
    // storage a burst left behind.
    #[test]
    fn a_small_queue_is_kept() {
        let ended_because = Arc::new(AtomicU8::new(0));
        let (mut sink, receiver) = Sink::new(ended_because.clone());
        let mut events = SessionEvents { receiver, ended_because, ended: false };
        let first = sink.sender.clone();
        for round in 0..3u64 {
            for n in 0..SESSION_QUEUE_SHRINK_EVENTS as u64 - 1 {
                queue(&mut sink, round * 1000 + n);
            }
            assert_eq!(read(&mut events, SESSION_QUEUE_SHRINK_EVENTS - 1).len(), SESSION_QUEUE_SHRINK_EVENTS - 1);
        }
        queue(&mut sink, 7);
        assert!(sink.sender.same_channel(&first));
        assert_eq!(read(&mut events, 1), [7]);
    }
}
