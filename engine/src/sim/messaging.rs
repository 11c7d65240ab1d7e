//! A deterministic driver for several shards' [`MessagingCore`]s, each over its own
//! [`SimLog`], joined by a simulated mesh: one FIFO queue of [`PeerMessage`]s per (from, to)
//! pair, as glommio's channel mesh has, delivered in an interleaving a [`SimRng`] chooses. The
//! whole process crashes at once (every log loses, keeps or tears its unsynced writes on its
//! own) and restarts from each shard's checkpoint and log, exactly as the glommio driver
//! recovers. Everything follows from the seed, so a failing run replays.
//!
//! The driver's contract with the core, which the glommio driver must keep too:
//! - a request goes to the shard owning its key ([`request_shard`]); its reply comes out of the
//!   core of `origin.shard`, exactly once, unless the process dies first;
//! - after every step of a shard's log, the core hears the log's watermarks (`advance`);
//! - once a shard's log fails (an injected write or sync error), its core is told once
//!   (`fail_waiting`) and hears no more watermarks: the shard is unusable until the process
//!   restarts;
//! - a peer message a core addresses to its own shard is handed back to it right after the
//!   step that produced it, before any other input;
//! - on restart: `restore` the checkpoint, `replay` every record after it, then `resume`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::config::{Durability, LogConfig};
use crate::ids::{Lsn, RecordKind, ShardId, VShard};
use crate::messaging::core::{normalize_username, RestoreError};
use crate::messaging::protocol::{Effects, Origin, PeerMessage, Request, Response};
use crate::messaging::records::DecodeError;
use crate::messaging::types::{
    key_vshard, pair_vshard, LiveEvent, MessagingError, MessagingResult, Sequenced, SessionId, UnixMs, UserId,
};
use crate::messaging::{Journal, MessagingCore};
use crate::sim::disk::{CrashMode, SimDisk};
use crate::sim::log::{OpenFailure, SimError, SimLog};
use crate::sim::rng::SimRng;
use crate::vshards::VShardTable;
use crate::wal::{AppendError, CheckpointTicket};

/// Where the simulated clock starts: a plausible present, so dates look like dates.
pub const CLOCK_START_MS: u64 = 1_700_000_000_000;
/// Most milliseconds the clock moves in one step.
const STEP_MS_MAX: u64 = 3;
/// Steps `run_until_quiet` takes before deciding the shards cannot settle.
const QUIET_STEPS_MAX: u64 = 2_000_000;
/// Rounds of handing a core its own messages back within one step before calling it a loop.
const SELF_ROUNDS_MAX: usize = 10_000;

/// The shard that owns a request's key, as each [`Request`] variant documents it.
pub fn request_shard(table: &VShardTable, request: &Request) -> ShardId {
    let username_vshard = |username: &str| match normalize_username(username) {
        Ok(name) => key_vshard(&name),
        Err(_) => key_vshard(username),
    };
    let vshard = match request {
        Request::SignUp { phone, .. } | Request::LookupPhone { phone } => key_vshard(phone),
        Request::GetUsers { users } => users.first().map_or(VShard::of(0), |user| user.vshard()),
        Request::ClaimUsername { username, .. }
        | Request::ReleaseUsername { username, .. }
        | Request::LookupUsername { username } => username_vshard(username),
        Request::SetName { user, .. }
        | Request::SetUsername { user, .. }
        | Request::GetState { user }
        | Request::GetDifference { user, .. }
        | Request::GetDialogs { user }
        | Request::GetPresence { user }
        | Request::WatchPresence { user, .. }
        | Request::CreateAuthorization { user, .. }
        | Request::ListAuthorizations { user }
        | Request::RevokeAuthorization { user, .. }
        | Request::RegisterDevice { user, .. }
        | Request::UnregisterDevice { user, .. }
        | Request::ListDevices { user }
        | Request::SetNotifySettings { user, .. }
        | Request::GetNotifySettings { user, .. } => user.vshard(),
        Request::MembersPage { chat, .. } => chat.vshard(),
        Request::PushRecipients { users, chat } => users.first().map_or(chat.vshard(), |user| user.vshard()),
        // A shard's own outbox: address it with `submit_to`.
        Request::PendingPushes { .. }
        | Request::PushesDone { .. }
        | Request::PendingMediaReleases { .. }
        | Request::MediaReleasesDone { .. } => VShard::of(0),
        Request::CheckAuthorization { id, .. } => id.vshard(),
        Request::OpenPrivate { user, peer } | Request::SetBlocked { user, peer, .. } => pair_vshard(*user, *peer),
        Request::CreateChat { creator, .. } => creator.vshard(),
        Request::Join { chat, .. }
        | Request::Leave { chat, .. }
        | Request::AddMember { chat, .. }
        | Request::RemoveMember { chat, .. }
        | Request::Promote { chat, .. }
        | Request::Edit { chat, .. }
        | Request::Delete { chat, .. }
        | Request::Pin { chat, .. }
        | Request::GetHistory { chat, .. }
        | Request::GetMessages { chat, .. }
        | Request::ReadHistory { chat, .. }
        | Request::GetChat { chat, .. }
        | Request::GetMembers { chat, .. }
        | Request::GetChatDifference { chat, .. }
        | Request::GetMessageMedia { chat, .. }
        | Request::CheckMediaHolders { chat, .. }
        | Request::Typing { chat, .. } => chat.vshard(),
        Request::Send(send) => send.chat.vshard(),
        Request::FetchMessages { wanted, .. } => wanted.first().map_or(VShard::of(0), |(chat, _)| chat.vshard()),
        Request::ChatTops { chats, .. } => chats.first().map_or(VShard::of(0), |chat| chat.vshard()),
        Request::Connect { session, .. }
        | Request::ConnectAuthorized { session, .. }
        | Request::Disconnect { session }
        | Request::SubscribeChat { session, .. }
        | Request::UnsubscribeChat { session, .. } => return session.shard(),
    };
    table.owner(vshard)
}

/// A [`SimLog`] as the core's [`Journal`].
#[derive(Debug)]
pub struct SimJournal<'a>(pub &'a mut SimLog);

impl Journal for SimJournal<'_> {
    fn append_all(&mut self, records: &[(RecordKind, VShard, &[u8])]) -> Result<Lsn, AppendError> {
        self.0.append_all(records, |_| {})
    }
}

/// How the process dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashKind {
    /// The machine loses power: each log's unsynced writes survive, vanish or tear.
    PowerLoss,
    /// The process is killed: the page cache keeps everything written.
    ProcessKill,
}

/// What one shard found when it restarted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardRecovery {
    pub shard: ShardId,
    /// The LSN of the checkpoint it restored, if any.
    pub checkpoint: Option<Lsn>,
    pub records_replayed: usize,
    /// The last LSN it recovered, and the next LSN the log had handed out before the crash.
    pub recovered_lsn: Lsn,
    pub appended_before: Lsn,
    pub torn_tail: bool,
    /// The epoch the shard resumed with (see [`MessagingSim::crash`]).
    pub epoch: u64,
}

/// What a crash took away and what recovery found.
#[derive(Clone, Debug, Default)]
pub struct CrashReport {
    /// Requests that had no answer yet: they may or may not have taken effect.
    pub lost_requests: Vec<u64>,
    /// Sessions that were registered with the driver; all of them are gone.
    pub lost_sessions: Vec<SessionId>,
    pub shards: Vec<ShardRecovery>,
}

/// Why a shard could not restart.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoverError {
    #[error("{shard}: the log does not open: {}", failure.error)]
    Open { shard: ShardId, failure: Box<OpenFailure> },
    #[error("{shard}: {error}")]
    Restore { shard: ShardId, error: RestoreError },
    #[error("{shard}: record at LSN {lsn}: {error}")]
    Replay { shard: ShardId, lsn: Lsn, error: DecodeError },
}

/// Counts of what the scheduler did, for a test to insist it exercised something.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    pub steps: u64,
    pub peer_messages: u64,
    pub log_steps: u64,
    pub requests: u64,
    pub replies: u64,
    pub deliveries: u64,
    pub offline: u64,
    pub checkpoints: u64,
    pub crashes: u64,
}

struct SimShard {
    log: SimLog,
    core: MessagingCore,
    /// The log failed and the core was told.
    failed: bool,
}

/// N shards' messaging cores over simulated logs and a simulated mesh. See the module
/// documentation.
pub struct MessagingSim {
    table: Arc<VShardTable>,
    config: LogConfig,
    rng: SimRng,
    shards: Vec<SimShard>,
    /// Index `from * shard_count + to`: FIFO per pair, as the channel mesh is.
    mesh: Vec<VecDeque<PeerMessage>>,
    now_ms: u64,
    /// Milliseconds since the start, which is the logs' own clock.
    elapsed_ms: u64,
    next_request: u64,
    next_session: u64,
    /// Requests submitted and not yet answered.
    waiting: BTreeMap<u64, ShardId>,
    replies: BTreeMap<u64, MessagingResult<Response>>,
    sessions: BTreeMap<SessionId, Vec<LiveEvent>>,
    /// Sessions their shard ended because their authorization was revoked.
    revoked: BTreeSet<SessionId>,
    offline: Vec<(UserId, Sequenced)>,
    /// Push jobs the shards handed over, in order.
    pushes: Vec<crate::messaging::push::PendingPush>,
    /// Per shard, crashes that may have lost acknowledged records (see `crash`).
    epoch_bumps: Vec<u64>,
    stats: SimStats,
    /// New messages queue push jobs (as with a host push hook), also after crashes.
    push_enabled: bool,
}

impl std::fmt::Debug for MessagingSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessagingSim")
            .field("shards", &self.shards.len())
            .field("now_ms", &self.now_ms)
            .field("queued", &self.queued())
            .field("waiting", &self.waiting.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl MessagingSim {
    /// `shard_count` shards with vshards dealt round-robin, each on a fresh disk.
    pub fn new(seed: u64, shard_count: usize, config: LogConfig) -> MessagingSim {
        let table = Arc::new(VShardTable::round_robin(shard_count));
        let mut rng = SimRng::new(seed);
        let mut shards = Vec::with_capacity(shard_count);
        for index in 0..shard_count {
            let disk = SimDisk::new(rng.next_u64());
            let (log, _) = match SimLog::open(disk, config.clone(), false) {
                Ok(opened) => opened,
                // A fresh disk has nothing that could fail to open.
                Err(failure) => panic!("a fresh simulated disk does not open: {}", failure.error),
            };
            let shard = ShardId(index as u16);
            let mut core = MessagingCore::new(shard, Arc::clone(&table));
            core.resume(log.generation(), Lsn::ZERO);
            shards.push(SimShard { log, core, failed: false });
        }
        MessagingSim {
            table,
            config,
            rng,
            shards,
            mesh: (0..shard_count * shard_count).map(|_| VecDeque::new()).collect(),
            now_ms: CLOCK_START_MS,
            elapsed_ms: 0,
            next_request: 1,
            next_session: 1,
            waiting: BTreeMap::new(),
            replies: BTreeMap::new(),
            sessions: BTreeMap::new(),
            revoked: BTreeSet::new(),
            offline: Vec::new(),
            pushes: Vec::new(),
            epoch_bumps: vec![0; shard_count],
            stats: SimStats::default(),
            push_enabled: false,
        }
    }

    /// Every shard queues push jobs for new messages from now on, as under a host with a push
    /// hook; shards restarted by `crash` too.
    pub fn enable_push(&mut self) {
        self.push_enabled = true;
        for shard in &mut self.shards {
            shard.core.enable_push();
        }
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    pub fn table(&self) -> &VShardTable {
        &self.table
    }

    pub fn now(&self) -> UnixMs {
        UnixMs(self.now_ms)
    }

    /// Moves the clock forward (it never goes back).
    pub fn advance_clock(&mut self, milliseconds: u64) {
        self.now_ms += milliseconds;
        self.elapsed_ms += milliseconds;
        for shard in &mut self.shards {
            shard.log.advance_time(milliseconds);
        }
    }

    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }

    pub fn stats(&self) -> SimStats {
        self.stats
    }

    pub fn core(&self, shard: ShardId) -> &MessagingCore {
        &self.shards[shard.index()].core
    }

    pub fn log(&self, shard: ShardId) -> &SimLog {
        &self.shards[shard.index()].log
    }

    /// A shard's disk, to inject faults into.
    pub fn disk_mut(&mut self, shard: ShardId) -> &mut SimDisk {
        self.shards[shard.index()].log.disk_mut()
    }

    /// The shard that owns `request`'s key.
    pub fn route(&self, request: &Request) -> ShardId {
        request_shard(&self.table, request)
    }

    /// Hands `request` to the shard owning its key, as a host thread on that shard would.
    /// Returns the request's id; its answer appears in [`MessagingSim::reply`].
    pub fn submit(&mut self, request: Request) -> u64 {
        let shard = self.route(&request);
        self.submit_from(shard, request)
    }

    /// As `submit`, but the request entered the engine on `origin` (another shard's host
    /// thread, or a connection there): its answer must come back there.
    pub fn submit_from(&mut self, origin: ShardId, request: Request) -> u64 {
        let shard = self.route(&request);
        self.submit_to(shard, origin, request)
    }

    /// Hands `request` to `shard`'s core whether or not it owns the key (a misrouted request
    /// must be refused there), as if it entered on `origin`.
    pub fn submit_to(&mut self, shard: ShardId, origin: ShardId, request: Request) -> u64 {
        let id = self.next_request;
        self.next_request += 1;
        self.waiting.insert(id, origin);
        self.stats.requests += 1;
        let now = self.now();
        let SimShard { log, core, .. } = &mut self.shards[shard.index()];
        core.handle(Origin { shard: origin, request: id }, request, now, &mut SimJournal(log));
        self.drain(shard);
        id
    }

    /// The answer to request `id`, once it came.
    pub fn reply(&self, id: u64) -> Option<&MessagingResult<Response>> {
        self.replies.get(&id)
    }

    pub fn take_reply(&mut self, id: u64) -> Option<MessagingResult<Response>> {
        self.replies.remove(&id)
    }

    /// Whether request `id` is still waiting for its answer.
    pub fn is_waiting(&self, id: u64) -> bool {
        self.waiting.contains_key(&id)
    }

    /// Requests still waiting for their answer, oldest first.
    pub fn waiting_requests(&self) -> Vec<u64> {
        self.waiting.keys().copied().collect()
    }

    /// Submits `request` and runs until it is answered. Panics if the shards settle without
    /// answering it: every request is answered exactly once while the process lives.
    pub fn call(&mut self, request: Request) -> MessagingResult<Response> {
        let described = format!("{request:?}");
        let id = self.submit(request);
        match self.run_until_reply(id) {
            Some(result) => result,
            None => panic!("the shards settled without answering {described}"),
        }
    }

    /// Runs until request `id` is answered (and takes the answer) or nothing is left to do.
    pub fn run_until_reply(&mut self, id: u64) -> Option<MessagingResult<Response>> {
        for _ in 0..QUIET_STEPS_MAX {
            if let Some(result) = self.replies.remove(&id) {
                return Some(result);
            }
            if !self.waiting.contains_key(&id) {
                return None;
            }
            if !self.step() && self.is_quiet() {
                return self.replies.remove(&id);
            }
        }
        panic!("request {id} not answered after {QUIET_STEPS_MAX} steps: {self:?}");
    }

    /// A new session id held by `shard`.
    pub fn new_session(&mut self, shard: ShardId) -> SessionId {
        let session = SessionId::compose(self.next_session, shard);
        self.next_session += 1;
        self.sessions.entry(session).or_default();
        session
    }

    /// Live events delivered to `session` so far.
    pub fn session_events(&self, session: SessionId) -> &[LiveEvent] {
        self.sessions.get(&session).map_or(&[], Vec::as_slice)
    }

    /// Whether `session`'s shard ended it because its authorization was revoked.
    pub fn session_revoked(&self, session: SessionId) -> bool {
        self.revoked.contains(&session)
    }

    /// Every session's events so far, leaving the sessions registered with empty logs.
    pub fn take_session_events(&mut self) -> BTreeMap<SessionId, Vec<LiveEvent>> {
        self.sessions.iter_mut().map(|(session, events)| (*session, std::mem::take(events))).collect()
    }

    /// Offline notices (durable box updates of users with no online session) so far.
    pub fn take_offline(&mut self) -> Vec<(UserId, Sequenced)> {
        std::mem::take(&mut self.offline)
    }

    /// Push jobs handed over since the last call.
    pub fn take_pushes(&mut self) -> Vec<crate::messaging::push::PendingPush> {
        std::mem::take(&mut self.pushes)
    }

    /// Peer messages queued in the mesh.
    pub fn queued(&self) -> usize {
        self.mesh.iter().map(VecDeque::len).sum()
    }

    /// Nothing is queued, no log has I/O to do, and no core waits on a watermark or for room
    /// in its log (a failed shard waits on nothing: it will never move again).
    pub fn is_quiet(&self) -> bool {
        self.queued() == 0
            && self.shards.iter().all(|shard| {
                shard.failed
                    || shard.log.core().is_quiet()
                        && shard.core.waiting() == (None, None)
                        && !shard.core.has_inbox()
                        && !shard.log.core().is_disk_busy()
            })
    }

    /// One scheduling decision: deliver one queued peer message, step one shard's log I/O and
    /// tell its core the watermarks, or let time pass. True when something happened.
    pub fn step(&mut self) -> bool {
        self.stats.steps += 1;
        let elapsed = self.rng.below(STEP_MS_MAX + 1);
        self.advance_clock(elapsed);
        let queued = self.queued();
        match self.rng.below(9) {
            0..=3 if queued > 0 => {
                self.deliver_one();
                true
            }
            0..=7 => {
                let shard = ShardId(self.rng.index(self.shards.len()) as u16);
                self.step_log(shard)
            }
            _ => false,
        }
    }

    /// Steps `steps` times.
    pub fn run(&mut self, steps: u64) {
        for _ in 0..steps {
            self.step();
        }
    }

    /// Runs until the shards are quiet (see [`MessagingSim::is_quiet`]); returns the steps taken.
    pub fn run_until_quiet(&mut self) -> Result<u64, SimError> {
        let mut steps = 0;
        while steps < QUIET_STEPS_MAX {
            if self.is_quiet() {
                // Watermarks may have moved past what some core waits on since it last heard.
                for index in 0..self.shards.len() {
                    self.step_log(ShardId(index as u16));
                }
                if self.is_quiet() {
                    return Ok(steps);
                }
            }
            if self.queued() > 0 {
                self.deliver_one();
            }
            for index in 0..self.shards.len() {
                self.step_log(ShardId(index as u16));
            }
            // In interval mode a sync waits for its deadline: let time reach it.
            let deadline = self.shards.iter().filter_map(|shard| shard.log.core().next_deadline_ms()).min();
            match deadline {
                Some(deadline) if deadline > self.elapsed_ms && self.queued() == 0 => {
                    self.advance_clock(deadline - self.elapsed_ms)
                }
                _ => {
                    let elapsed = self.rng.below(STEP_MS_MAX + 1);
                    self.advance_clock(elapsed);
                }
            }
            steps += 1;
        }
        Err(SimError::Stalled)
    }

    /// Checkpoints `shard`: the core's snapshot (which covers everything it appended), written
    /// once the log is durable through it; the host then reads no segment before it again.
    pub fn checkpoint(&mut self, shard: ShardId) -> Result<CheckpointTicket, SimError> {
        let SimShard { log, core, .. } = &mut self.shards[shard.index()];
        let state = core.snapshot();
        let result = log.checkpoint(&state.to_vec(), &mut self.rng);
        if let Ok(ticket) = &result {
            log.release_before(ticket.replay_from.segment);
            self.stats.checkpoints += 1;
        }
        // The log moved (or failed) while it made the checkpoint durable: tell the core.
        self.step_log(shard);
        result
    }

    /// The process dies: every log crashes on its own (losing, keeping or tearing its unsynced
    /// writes), then every shard restarts from its checkpoint and log. Requests in flight, the
    /// mesh's queues and every session are gone.
    ///
    /// Each shard resumes with its log's generation as its epoch. A log that acknowledges
    /// before `fdatasync` (interval, none) may have lost acknowledged records at any unclean
    /// stop; the glommio driver then bumps the generation in the log's meta file, which
    /// [`SimLog`] does not model, so the simulator adds one per such crash.
    pub fn crash(&mut self, kind: CrashKind) -> Result<CrashReport, RecoverError> {
        self.stats.crashes += 1;
        let mut report = CrashReport {
            lost_requests: std::mem::take(&mut self.waiting).into_keys().collect(),
            lost_sessions: std::mem::take(&mut self.sessions).into_keys().collect(),
            shards: Vec::new(),
        };
        self.revoked.clear();
        for queue in &mut self.mesh {
            queue.clear();
        }
        let old = std::mem::take(&mut self.shards);
        let disks: Vec<(Lsn, SimDisk)> = old
            .into_iter()
            .map(|shard| {
                let appended = shard.log.next_lsn();
                let disk = match kind {
                    CrashKind::PowerLoss => shard.log.crash_with(CrashMode::Random, &mut self.rng),
                    CrashKind::ProcessKill => shard.log.kill(&mut self.rng),
                };
                (appended, disk)
            })
            .collect();
        for (index, (appended_before, disk)) in disks.into_iter().enumerate() {
            let shard = ShardId(index as u16);
            let (mut log, recovered) = SimLog::open(disk, self.config.clone(), false)
                .map_err(|failure| RecoverError::Open { shard, failure })?;
            log.advance_time(self.elapsed_ms);
            let mut core = MessagingCore::new(shard, Arc::clone(&self.table));
            if let Some(checkpoint) = &recovered.checkpoint {
                core.restore(&checkpoint.state).map_err(|error| RecoverError::Restore { shard, error })?;
            }
            for record in &recovered.records {
                core.replay(record.kind, &record.payload).map_err(|error| RecoverError::Replay {
                    shard,
                    lsn: record.lsn,
                    error,
                })?;
            }
            let recovered_lsn = Lsn(log.next_lsn().0 - 1);
            if self.config.durability != Durability::Sync {
                self.epoch_bumps[index] += 1;
            }
            let epoch = recovered.generation + self.epoch_bumps[index];
            core.resume(epoch, recovered_lsn);
            if self.push_enabled {
                core.enable_push();
            }
            report.shards.push(ShardRecovery {
                shard,
                checkpoint: recovered.checkpoint.as_ref().map(|checkpoint| checkpoint.ticket.lsn),
                records_replayed: recovered.records.len(),
                recovered_lsn,
                appended_before,
                torn_tail: recovered.outcome.torn_tail,
                epoch,
            });
            self.shards.push(SimShard { log, core, failed: false });
        }
        for index in 0..self.shards.len() {
            self.drain(ShardId(index as u16));
        }
        Ok(report)
    }

    /// Delivers the front message of a random non-empty queue.
    fn deliver_one(&mut self) {
        let count = self.shards.len();
        let candidates: Vec<usize> = (0..self.mesh.len()).filter(|&index| !self.mesh[index].is_empty()).collect();
        let Some(&index) = candidates.get(self.rng.index(candidates.len().max(1))) else { return };
        let Some(message) = self.mesh[index].pop_front() else { return };
        let to = ShardId((index % count) as u16);
        self.stats.peer_messages += 1;
        let now = self.now();
        let SimShard { log, core, .. } = &mut self.shards[to.index()];
        core.peer(message, now, &mut SimJournal(log));
        self.drain(to);
    }

    /// Completes one I/O of `shard`'s log (if it has any) and tells its core the watermarks.
    fn step_log(&mut self, shard: ShardId) -> bool {
        let SimShard { log, core, failed } = &mut self.shards[shard.index()];
        if *failed {
            return false;
        }
        let stepped = log.step(&mut self.rng);
        if let Some(failure) = log.failure() {
            // As the glommio driver does: nothing waiting will be released; answer it.
            core.fail_waiting(MessagingError::Storage(failure.to_string()));
            *failed = true;
            self.drain(shard);
            return stepped;
        }
        let (acked, durable) = (log.acked_lsn(), log.durable_lsn());
        core.advance(acked, durable, &mut SimJournal(log));
        if stepped {
            self.stats.log_steps += 1;
        }
        self.drain(shard);
        stepped
    }

    /// Performs what `shard`'s core produced: replies are recorded, deliveries go to their
    /// sessions, peer messages are queued, and those to the shard itself are handed back
    /// at once.
    fn drain(&mut self, shard: ShardId) {
        let count = self.shards.len();
        for _ in 0..SELF_ROUNDS_MAX {
            let Effects { replies, peers, deliveries, offline, revoked, pushes } =
                self.shards[shard.index()].core.take_effects();
            let mut to_self = Vec::new();
            for (origin, result) in replies {
                assert_eq!(
                    origin.shard, shard,
                    "{shard} answered request {} that entered on {}",
                    origin.request, origin.shard
                );
                let Some(entered) = self.waiting.remove(&origin.request) else {
                    panic!("{shard} answered request {} twice, or one it never got: {result:?}", origin.request);
                };
                assert_eq!(entered, origin.shard, "request {} came back to the wrong shard", origin.request);
                self.stats.replies += 1;
                self.replies.insert(origin.request, result);
            }
            for (session, event) in deliveries {
                assert_eq!(session.shard(), shard, "{shard} delivered to {session:?}, held by another shard");
                self.stats.deliveries += 1;
                self.sessions.entry(session).or_default().push(event);
            }
            for session in revoked {
                assert_eq!(session.shard(), shard, "{shard} ended {session:?}, held by another shard");
                self.revoked.insert(session);
            }
            self.stats.offline += offline.len() as u64;
            self.offline.extend(offline);
            self.pushes.extend(pushes);
            for (to, message) in peers {
                if to == shard {
                    to_self.push(message);
                } else {
                    self.mesh[shard.index() * count + to.index()].push_back(message);
                }
            }
            if to_self.is_empty() {
                return;
            }
            let now = self.now();
            for message in to_self {
                let SimShard { log, core, .. } = &mut self.shards[shard.index()];
                core.peer(message, now, &mut SimJournal(log));
            }
        }
        panic!("{shard} keeps sending itself messages");
    }
}
