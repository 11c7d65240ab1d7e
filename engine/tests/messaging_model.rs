//! Model-based simulation of the messaging core: seeded random sign-ups, private chats, groups
//! and channels, sends (with retries and reused random_ids), edits, deletes, reads, joins,
//! leaves, blocks, live sessions and checkpoints on three shards joined by a simulated mesh,
//! with whole-process crashes at random points, checked after every recovery and at the end
//! against a simple in-memory model.
//!
//! An operation answered before a crash must have happened; one in flight at a crash may or
//! may not have: the model keeps the states it could have led to, takes the one recovery
//! shows, and from then on that state must stay.
//!
//! `FERROGRAM_SIM_SEEDS=N` runs N seeds instead of the default; `FERROGRAM_SIM_SEED=S` runs
//! seed S alone (what a failure message asks for).

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use ferrogram_engine::ids::ShardId;
use ferrogram_engine::messaging::limits::{HISTORY_PAGE_MAX, IDEMPOTENCY_WINDOW_MS};
use ferrogram_engine::messaging::state::{pair_key, Chat, ChatLogEntry};
use ferrogram_engine::messaging::{
    ChatId, ChatKind, HistoryPage, LiveEvent, MemberChange, Message, MessageId, MessagingError, MessagingResult, Pts,
    RandomId, Request, Response, Role, SendRequest, Sequenced, SessionId, UnixMs, Update, UserId,
};
use ferrogram_engine::sim::messaging::{CrashKind, MessagingSim};
use ferrogram_engine::sim::{OpKind, SimRng};
use ferrogram_engine::{Durability, LogConfig};

const SHARDS: usize = 3;
const OPERATIONS_PER_SEED: usize = 800;
/// Seeds by default: keeps this file under 20 s in a debug build.
const SEEDS_DEFAULT: u64 = 8;
const USERS_MAX: usize = 9;
const CHATS_MAX: usize = 10;
const SESSIONS_PER_USER_MAX: usize = 2;
/// Clock jumps of a day per run: each pushes remembered random_ids out of their window.
const DAY_JUMPS_MAX: u32 = 2;

fn config(durability: Durability) -> LogConfig {
    // Small segments roll and recycle under checkpoints; two pending batches make bursts of
    // long messages meet backpressure (and fan-outs wait in the receiving core's inbox).
    LogConfig {
        durability,
        segment_bytes: 128 << 10,
        batch_bytes_max: 16 << 10,
        pending_batches_max: 2,
        ..LogConfig::default()
    }
}

/// Proves, over many seeded runs in sync mode with power losses and process kills, that every
/// answered operation's effect survives every crash, that what recovery shows of an unanswered
/// one stays, that histories, boxes (dense pts, exact suffixes, each chat event in each
/// then-member's box exactly once) and live streams (gapless after connect, never a pts that
/// recovery gives to another update) match the model.
#[test]
fn messaging_matches_the_model() {
    run_seeds("sync", Durability::Sync, false, SEEDS_DEFAULT);
}

/// Proves the same in interval mode, where answers precede `fdatasync` and only fan-out and
/// live updates wait for it, across process kills (the page cache keeps what was written, so
/// every answered operation must survive), with epochs bumped at every unclean restart.
#[test]
fn interval_mode_matches_the_model_across_process_kills() {
    run_seeds("interval", Durability::Interval { interval_ms: 20 }, true, SEEDS_DEFAULT / 2);
}

/// Proves that in interval mode, where a power loss may take back answered operations (and
/// does, in these runs), no update was ever delivered live or reported offline that recovery
/// takes back or gives to another pts, and every restart bumps the epochs so that clients
/// holding a pts from an answer know to reload.
#[test]
fn interval_mode_live_updates_survive_power_loss() {
    let mut total = LiveCoverage::default();
    for seed in seeds(SEEDS_DEFAULT / 2) {
        match catch_unwind(AssertUnwindSafe(|| live_survives_power_loss(seed))) {
            Ok(coverage) => total.add(&coverage),
            Err(panic) => {
                eprintln!(
                    "messaging_model interval power loss: seed {seed} failed; rerun with FERROGRAM_SIM_SEED={seed}"
                );
                resume_unwind(panic);
            }
        }
    }
    eprintln!("messaging_model interval power loss: {total:?}");
    if std::env::var("FERROGRAM_SIM_SEED").is_err() {
        assert!(total.shown > 0, "nothing was delivered live: {total:?}");
        assert!(total.answered_lost > 0, "no power loss took back an answered send, so this proves nothing: {total:?}");
    }
}

#[derive(Debug, Default)]
struct LiveCoverage {
    shown: u64,
    answered: u64,
    answered_lost: u64,
}

impl LiveCoverage {
    fn add(&mut self, other: &LiveCoverage) {
        self.shown += other.shown;
        self.answered += other.answered;
        self.answered_lost += other.answered_lost;
    }
}

fn seeds(default: u64) -> Vec<u64> {
    match (std::env::var("FERROGRAM_SIM_SEED"), std::env::var("FERROGRAM_SIM_SEEDS")) {
        (Ok(seed), _) => vec![seed.parse().expect("FERROGRAM_SIM_SEED is a number")],
        (_, Ok(count)) => (0..count.parse().expect("FERROGRAM_SIM_SEEDS is a number")).collect(),
        _ => (0..default).collect(),
    }
}

fn live_survives_power_loss(seed: u64) -> LiveCoverage {
    const USERS: usize = 6;
    const ROUNDS: u64 = 6;
    let mut sim = MessagingSim::new(seed, SHARDS, config(Durability::Interval { interval_ms: 50 }));
    let mut rng = SimRng::new(seed ^ 0x4c49_5645);
    let mut coverage = LiveCoverage::default();
    let users: Vec<UserId> = (0..USERS)
        .map(|index| {
            let request =
                Request::SignUp { phone: format!("+1777{index:07}"), first_name: "L".into(), last_name: String::new() };
            match sim.call(request) {
                Ok(Response::User(user)) => user,
                other => panic!("seed {seed}: sign up: {other:?}"),
            }
        })
        .collect();
    let mut chats: Vec<(ChatId, Vec<UserId>)> = Vec::new();
    for creator in [users[0], users[3]] {
        let request =
            Request::CreateChat { kind: ChatKind::Group, creator, title: "all".into(), members: users.clone() };
        match sim.call(request) {
            Ok(Response::Chat(chat)) => chats.push((chat, users.clone())),
            other => panic!("seed {seed}: create: {other:?}"),
        }
    }
    for pair in users.chunks(2) {
        match sim.call(Request::OpenPrivate { user: pair[0], peer: pair[1] }) {
            Ok(Response::Chat(chat)) => chats.push((chat, pair.to_vec())),
            other => panic!("seed {seed}: open: {other:?}"),
        }
    }
    sim.run_until_quiet().expect("quiet");
    let mut random_id = 0;
    for round in 0..ROUNDS {
        let context = format!("seed {seed} round {round}");
        let mut sessions = BTreeMap::new();
        for &user in &users {
            let session = sim.new_session(ShardId(rng.index(SHARDS) as u16));
            match sim.call(Request::Connect { user, session }) {
                Ok(Response::State(state)) => assert_eq!(state.epoch, round, "{context}: an epoch per restart"),
                other => panic!("{context}: connect: {other:?}"),
            }
            sessions.insert(session, user);
        }
        let mut shown: BTreeMap<(UserId, Pts), Update> = BTreeMap::new();
        let mut waiting = BTreeMap::new();
        let mut answered = Vec::new();
        for _ in 0..rng.between(20, 80) {
            let (chat, members) = chats[rng.index(chats.len())].clone();
            let sender = members[rng.index(members.len())];
            random_id += 1;
            let send = SendRequest {
                chat,
                sender,
                session: None,
                random_id: RandomId(random_id),
                text: format!("live {random_id}"),
                reply_to: None,
                forwarded_from: None,
                media: None,
            };
            waiting.insert(sim.submit(Request::Send(send)), (chat, sender));
            sim.run(rng.below(12));
            let ids: Vec<u64> = waiting.keys().copied().collect();
            for id in ids {
                if let Some(result) = sim.take_reply(id) {
                    let (chat, sender) = waiting.remove(&id).expect("waiting");
                    if let Ok(Response::Sent(ack)) = result {
                        answered.push((chat, sender, ack.id));
                    }
                }
            }
            for (session, events) in sim.take_session_events() {
                for event in events {
                    if let LiveEvent::Box { update: entry, .. } = event {
                        let previous = shown.insert((sessions[&session], entry.pts), entry.update.clone());
                        assert!(
                            previous.is_none_or(|previous| previous == entry.update),
                            "{context}: two updates at one pts"
                        );
                    }
                }
            }
            for (user, entry) in sim.take_offline() {
                shown.insert((user, entry.pts), entry.update);
            }
        }
        sim.crash(CrashKind::PowerLoss).unwrap_or_else(|error| panic!("{context}: recovery: {error}"));
        sim.run_until_quiet().expect("quiet");
        for ((user, pts), update) in &shown {
            let entry = match sim.call(Request::GetDifference { user: *user, pts: Pts(pts.0 - 1), limit: 1 }) {
                Ok(Response::BoxDifference { updates, .. }) => updates.into_iter().next(),
                other => panic!("{context}: difference of {user}: {other:?}"),
            };
            assert_eq!(
                entry.map(|entry| entry.update).as_ref(),
                Some(update),
                "{context}: user {user} was shown {update:?} at pts {pts} live; recovery holds otherwise"
            );
        }
        coverage.shown += shown.len() as u64;
        coverage.answered += answered.len() as u64;
        for (chat, sender, id) in answered {
            match sim.call(Request::GetMessages { chat, user: sender, ids: vec![id] }) {
                Ok(Response::Messages(messages)) if messages.is_empty() => coverage.answered_lost += 1,
                Ok(Response::Messages(_)) => {}
                other => panic!("{context}: get_messages: {other:?}"),
            }
        }
    }
    coverage
}

fn run_seeds(name: &str, durability: Durability, kills_only: bool, seeds_default: u64) {
    let seeds = seeds(seeds_default);
    let mut total = Coverage::default();
    for seed in seeds.iter().copied() {
        match catch_unwind(AssertUnwindSafe(|| Run::new(seed, durability, kills_only).run())) {
            Ok(coverage) => total.add(&coverage),
            Err(panic) => {
                eprintln!("messaging_model {name}: seed {seed} failed; rerun with FERROGRAM_SIM_SEED={seed}");
                resume_unwind(panic);
            }
        }
    }
    eprintln!("messaging_model {name}: {} seeds, {total:?}", seeds.len());
    // A simulation that never reached these cases would pass without proving anything.
    if seeds.len() as u64 >= seeds_default {
        assert!(total.crashes > 0 && total.recovered_from_checkpoint > 0, "{total:?}");
        assert!(
            total.maybe_happened > 0 && total.maybe_lost > 0,
            "in-flight operations both survived and not: {total:?}"
        );
        assert!(total.duplicates > 0 && total.in_flight_duplicates > 0 && total.reuses_refused > 0, "{total:?}");
        assert!(total.resent_after_window > 0, "no random_id outlived its window: {total:?}");
        assert!(total.overloaded > 0, "no operation met backpressure: {total:?}");
        assert!(total.storage_errors > 0, "no injected disk fault failed a request: {total:?}");
        assert!(total.live_box_events > 0 && total.live_chat_events > 0, "{total:?}");
        assert!(total.answered_not_live > 0, "no send went through a live session: {total:?}");
        assert!(total.box_updates_checked > 0 && total.messages_checked > 0, "{total:?}");
    }
}

/// What the runs exercised, so the test can insist it exercised something.
#[derive(Debug, Default)]
struct Coverage {
    operations: u64,
    steps: u64,
    sends_acknowledged: u64,
    duplicates: u64,
    in_flight_duplicates: u64,
    resent_after_window: u64,
    reuses_refused: u64,
    overloaded: u64,
    refusals: u64,
    faults: u64,
    storage_errors: u64,
    crashes: u64,
    recovered_from_checkpoint: u64,
    checkpoints: u64,
    maybe_happened: u64,
    maybe_lost: u64,
    live_box_events: u64,
    live_chat_events: u64,
    /// Sends whose answer, not a live update, gave the sending session its box pts.
    answered_not_live: u64,
    offline_notices: u64,
    box_updates_checked: u64,
    messages_checked: u64,
    checks: u64,
}

impl Coverage {
    fn add(&mut self, other: &Coverage) {
        self.operations += other.operations;
        self.steps += other.steps;
        self.sends_acknowledged += other.sends_acknowledged;
        self.duplicates += other.duplicates;
        self.in_flight_duplicates += other.in_flight_duplicates;
        self.resent_after_window += other.resent_after_window;
        self.reuses_refused += other.reuses_refused;
        self.overloaded += other.overloaded;
        self.refusals += other.refusals;
        self.faults += other.faults;
        self.storage_errors += other.storage_errors;
        self.crashes += other.crashes;
        self.recovered_from_checkpoint += other.recovered_from_checkpoint;
        self.checkpoints += other.checkpoints;
        self.maybe_happened += other.maybe_happened;
        self.maybe_lost += other.maybe_lost;
        self.live_box_events += other.live_box_events;
        self.live_chat_events += other.live_chat_events;
        self.answered_not_live += other.answered_not_live;
        self.offline_notices += other.offline_notices;
        self.box_updates_checked += other.box_updates_checked;
        self.messages_checked += other.messages_checked;
        self.checks += other.checks;
    }
}

// ---------------------------------------------------------------------------------------------
// The model's building block: a value, and the operations on it whose outcome is not settled.

/// Where an operation on a modelled value stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    /// Submitted, not answered yet.
    Pending,
    /// Answered with success.
    Applied,
    /// Answered with an error: it changed nothing.
    Refused,
    /// In flight at a crash: it may or may not have happened.
    Maybe,
}

#[derive(Clone, Debug)]
struct Op<T> {
    request: u64,
    op: T,
    status: Status,
}

/// A state an operation moves to another, or `None` when the operation cannot succeed there.
trait Apply<T>: Sized {
    fn apply(&self, op: &T) -> Option<Self>;
}

/// A modelled value: its settled state, and the operations since, in the order the owning
/// shard handled them (all operations on one value are handled by one shard, synchronously
/// at submission, so submission order is their order).
#[derive(Clone, Debug, Default)]
struct Entity<S, T> {
    base: S,
    ops: Vec<Op<T>>,
}

impl<S: Clone + Ord + std::fmt::Debug + Apply<T>, T: std::fmt::Debug> Entity<S, T> {
    fn new(base: S) -> Self {
        Entity { base, ops: Vec::new() }
    }

    /// Every state the value may be in now.
    fn possible(&self) -> BTreeSet<S> {
        let mut states = BTreeSet::from([self.base.clone()]);
        for op in &self.ops {
            match op.status {
                Status::Refused => {}
                Status::Applied => states = states.iter().filter_map(|state| state.apply(&op.op)).collect(),
                Status::Pending | Status::Maybe => {
                    let applied: Vec<S> = states.iter().filter_map(|state| state.apply(&op.op)).collect();
                    states.extend(applied);
                }
            }
        }
        states
    }

    fn push(&mut self, request: u64, op: T) {
        self.ops.push(Op { request, op, status: Status::Pending });
    }

    /// Request `request` was answered.
    fn answer(&mut self, request: u64, applied: bool, context: &str) {
        for op in self.ops.iter_mut().filter(|op| op.request == request) {
            op.status = if applied { Status::Applied } else { Status::Refused };
        }
        if self.ops.iter().any(|op| matches!(op.status, Status::Pending | Status::Maybe)) {
            return;
        }
        for op in std::mem::take(&mut self.ops) {
            if op.status == Status::Applied {
                match self.base.apply(&op.op) {
                    Some(next) => self.base = next,
                    None => panic!("{context}: {:?} succeeded, but it cannot from {:?}", op.op, self.base),
                }
            }
        }
    }

    fn crash(&mut self) {
        for op in &mut self.ops {
            if op.status == Status::Pending {
                op.status = Status::Maybe;
            }
        }
    }

    /// Request `request` failed in a way that does not say whether it took effect.
    fn unknown(&mut self, request: u64) {
        for op in self.ops.iter_mut().filter(|op| op.request == request) {
            op.status = Status::Maybe;
        }
    }

    /// Recovery shows `actual`: it must be one of the possible states, and it is settled now.
    /// Returns how many in-flight operations turned out to have happened and not.
    fn adopt(&mut self, actual: S, context: &str) -> (u64, u64) {
        let possible = self.possible();
        assert!(
            possible.contains(&actual),
            "{context}: recovery shows {actual:?}, but only {possible:?} could be (settled {:?}, then {:?})",
            self.base,
            self.ops
        );
        let maybes = self.ops.iter().filter(|op| op.status == Status::Maybe).count() as u64;
        let changed = u64::from(actual != self.base && maybes > 0);
        self.base = actual;
        self.ops.clear();
        (changed, maybes - changed.min(maybes))
    }
}

/// A user's standing in a chat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
enum Standing {
    #[default]
    Out,
    Member,
    Admin,
    Creator,
}

impl Standing {
    fn of(role: Option<Role>) -> Standing {
        match role {
            None => Standing::Out,
            Some(Role::Member) => Standing::Member,
            Some(Role::Admin) => Standing::Admin,
            Some(Role::Creator) => Standing::Creator,
        }
    }

    fn is_in(self) -> bool {
        self != Standing::Out
    }

    fn is_admin(self) -> bool {
        matches!(self, Standing::Admin | Standing::Creator)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MemberOp {
    Join,
    Leave,
    Remove,
    Promote,
}

impl Apply<MemberOp> for Standing {
    fn apply(&self, op: &MemberOp) -> Option<Standing> {
        match (op, self) {
            (MemberOp::Join, Standing::Out) => Some(Standing::Member),
            (MemberOp::Join, standing) => Some(*standing),
            (MemberOp::Leave, Standing::Out) | (MemberOp::Remove, Standing::Out | Standing::Creator) => None,
            (MemberOp::Leave | MemberOp::Remove, _) => Some(Standing::Out),
            (MemberOp::Promote, Standing::Out) => None,
            (MemberOp::Promote, Standing::Member) => Some(Standing::Admin),
            (MemberOp::Promote, standing) => Some(*standing),
        }
    }
}

/// A message as the model knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct MessageState {
    text: String,
    edited: bool,
    deleted: bool,
    /// Members it is deleted for (only users who never leave the chat delete for themselves).
    hidden: BTreeSet<UserId>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum MessageOp {
    Edit(String),
    Delete,
    DeleteForMe(UserId),
}

impl Apply<MessageOp> for MessageState {
    fn apply(&self, op: &MessageOp) -> Option<MessageState> {
        let mut next = self.clone();
        match op {
            MessageOp::Edit(_) if self.deleted => return None,
            MessageOp::Edit(text) => {
                next.text = text.clone();
                next.edited = true;
            }
            MessageOp::Delete => {
                next.deleted = true;
                next.text.clear();
            }
            MessageOp::DeleteForMe(user) => {
                next.hidden.insert(*user);
            }
        }
        Some(next)
    }
}

impl Apply<bool> for bool {
    fn apply(&self, op: &bool) -> Option<bool> {
        Some(*op)
    }
}

// ---------------------------------------------------------------------------------------------
// The model.

#[derive(Debug)]
struct ModelMessage {
    sender: UserId,
    random_id: RandomId,
    reply_to: Option<MessageId>,
    date: UnixMs,
    state: Entity<MessageState, MessageOp>,
}

/// What makes two sends with one random_id the same send (a retry) or not (a reuse).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Content {
    text: String,
    reply_to: Option<MessageId>,
}

/// What is known of a (sender, random_id) in a chat.
#[derive(Clone, Debug, PartialEq, Eq)]
enum RandomIdState {
    /// A send with it is unanswered (or was in flight at a crash).
    Unsettled,
    /// It made message `id` with `content` at `date`.
    Known { id: MessageId, content: Content, date: UnixMs },
    /// No message has it: a retry is a new send.
    Absent,
}

/// A send that may create a message, not answered yet.
#[derive(Debug)]
struct PendingSend {
    sender: UserId,
    random_id: RandomId,
    content: Content,
    status: Status,
}

#[derive(Debug)]
struct ModelChat {
    kind: ChatKind,
    creator: UserId,
    /// Members at creation, creator first (what the creation fanned out to).
    initial: Vec<UserId>,
    members: BTreeMap<UserId, Entity<Standing, MemberOp>>,
    messages: BTreeMap<MessageId, ModelMessage>,
    random_ids: BTreeMap<(UserId, RandomId), RandomIdState>,
    sends: BTreeMap<u64, PendingSend>,
}

impl ModelChat {
    fn standing(&mut self, user: UserId) -> &mut Entity<Standing, MemberOp> {
        self.members.entry(user).or_insert_with(|| Entity::new(Standing::Out))
    }

    fn possible_standing(&self, user: UserId) -> BTreeSet<Standing> {
        self.members.get(&user).map_or_else(|| BTreeSet::from([Standing::Out]), Entity::possible)
    }

    /// Users whose settled standing is in the chat.
    fn settled_members(&self) -> Vec<UserId> {
        self.members.iter().filter(|(_, entity)| entity.base.is_in()).map(|(user, _)| *user).collect()
    }

    /// Users who never leave: a group's or channel's creator, both users of a private chat.
    fn permanent(&self) -> Vec<UserId> {
        match self.kind {
            ChatKind::Private => self.initial.clone(),
            _ => vec![self.creator],
        }
    }
}

#[derive(Debug)]
struct CreateRequest {
    kind: ChatKind,
    creator: UserId,
    title: String,
    members: Vec<UserId>,
}

/// A live session the model follows.
#[derive(Debug)]
struct ModelSession {
    user: UserId,
    /// The box pts the connect answered; `None` until it answered.
    connected_pts: Option<Pts>,
    received: Vec<Sequenced>,
    /// The box pts of sends made through this session, which their answers gave instead of
    /// a live update.
    answered: Vec<Pts>,
    /// Per subscribed channel: the chat pts the subscription answered, whether the stream is
    /// still expected whole (no membership change of the user since), and what came.
    channels: BTreeMap<ChatId, Subscription>,
}

#[derive(Debug, Default)]
struct Subscription {
    pts: Option<Pts>,
    whole: bool,
    received: Vec<Sequenced>,
}

/// What the workload expects of an answer, decided when the request is submitted (from what
/// the handling shard may hold at that moment).
#[derive(Clone, Debug)]
struct Allowed {
    ok: bool,
    errors: BTreeSet<&'static str>,
}

impl Allowed {
    fn new(ok: bool, errors: &[&'static str]) -> Allowed {
        Allowed { ok, errors: errors.iter().copied().collect() }
    }

    fn with(mut self, error: &'static str, when: bool) -> Allowed {
        if when {
            self.errors.insert(error);
        }
        self
    }
}

#[derive(Clone, Copy, Debug)]
enum SendKind {
    /// A new random_id, one no message has, or one remembered longer ago than the window.
    Fresh,
    /// The same random_id and content as a send not answered yet: it answers with the same
    /// message once that is committed (or makes it, if the first was refused).
    InFlight,
    /// The same random_id and content as message `id`.
    Retry { id: MessageId },
    /// The same random_id as an existing message, other content.
    Reuse,
}

impl SendKind {
    /// Whether the send may create a message.
    fn creates(self) -> bool {
        matches!(self, SendKind::Fresh | SendKind::InFlight)
    }
}

#[derive(Debug)]
enum Outstanding {
    SignUp {
        phone: String,
    },
    OpenPrivate {
        pair: (UserId, UserId),
        allowed: Allowed,
    },
    Create {
        request: CreateRequest,
    },
    Send {
        chat: ChatId,
        sender: UserId,
        /// The sender's session the send went through, if any.
        session: Option<SessionId>,
        random_id: RandomId,
        content: Content,
        kind: SendKind,
        allowed: Allowed,
    },
    MessageOp {
        chat: ChatId,
        ids: Vec<MessageId>,
        allowed: Allowed,
    },
    Member {
        chat: ChatId,
        user: UserId,
        allowed: Allowed,
    },
    Block {
        key: (UserId, UserId),
    },
    Plain {
        what: &'static str,
        allowed: Allowed,
    },
    Connect {
        session: SessionId,
    },
    Subscribe {
        session: SessionId,
        chat: ChatId,
    },
    Difference {
        user: UserId,
    },
    History {
        chat: ChatId,
    },
}

#[derive(Debug, Default)]
struct Model {
    /// Users known to exist, by id, with their phone.
    users: BTreeMap<UserId, String>,
    /// Phones whose sign-up was in flight at a crash.
    maybe_phones: Vec<String>,
    chats: BTreeMap<ChatId, ModelChat>,
    pairs: BTreeMap<(UserId, UserId), ChatId>,
    maybe_pairs: BTreeSet<(UserId, UserId)>,
    maybe_creates: Vec<CreateRequest>,
    /// Per (blocker, blocked).
    blocks: BTreeMap<(UserId, UserId), Entity<bool, bool>>,
    outstanding: BTreeMap<u64, Outstanding>,
    sessions: BTreeMap<SessionId, ModelSession>,
    /// Every box entry a client was shown (live, offline notice, difference, send ack): each
    /// must stay what it was, through every crash.
    shown_box: BTreeMap<(UserId, Pts), Update>,
    /// Every chat log entry a client was shown (live, send ack).
    shown_chat: BTreeMap<(ChatId, Pts), Update>,
    /// Every message a client was shown in a history page: (sender, random_id).
    shown_messages: BTreeMap<(ChatId, MessageId), (UserId, RandomId)>,
    /// The highest box pts a client was shown, per user.
    known_pts: BTreeMap<UserId, Pts>,
    next_phone: u64,
    next_random_id: u64,
    next_text: u64,
}

impl Model {
    fn blocked_possible(&self, a: UserId, b: UserId) -> (bool, bool) {
        let mut possible = false;
        let mut certain = false;
        for key in [(a, b), (b, a)] {
            if let Some(entity) = self.blocks.get(&key) {
                let states = entity.possible();
                possible |= states.contains(&true);
                certain |= !states.contains(&false);
            }
        }
        (possible, certain)
    }

    fn show_box(&mut self, user: UserId, entry: &Sequenced, context: &str) {
        let known = self.known_pts.entry(user).or_default();
        *known = (*known).max(entry.pts);
        if let Some(previous) = self.shown_box.insert((user, entry.pts), entry.update.clone()) {
            assert_eq!(
                previous, entry.update,
                "{context}: user {user} was shown two different updates at box pts {}",
                entry.pts
            );
        }
    }

    fn show_chat(&mut self, chat: ChatId, pts: Pts, update: &Update, context: &str) {
        if let Some(previous) = self.shown_chat.insert((chat, pts), update.clone()) {
            assert_eq!(&previous, update, "{context}: two different updates were shown at chat {chat} pts {pts}");
        }
    }
}

fn error_kind(error: &MessagingError) -> &'static str {
    match error {
        MessagingError::InvalidArgument(_) => "InvalidArgument",
        MessagingError::TooLong { .. } => "TooLong",
        MessagingError::UnknownUser(_) => "UnknownUser",
        MessagingError::UnknownChat(_) => "UnknownChat",
        MessagingError::UnknownMessage(..) => "UnknownMessage",
        MessagingError::PhoneTaken(_) => "PhoneTaken",
        MessagingError::UsernameTaken => "UsernameTaken",
        MessagingError::NotMember(_) => "NotMember",
        MessagingError::NotAdmin => "NotAdmin",
        MessagingError::Blocked => "Blocked",
        MessagingError::NotSender => "NotSender",
        MessagingError::RandomIdReused => "RandomIdReused",
        MessagingError::DifferenceTooLong(_) => "DifferenceTooLong",
        MessagingError::Overloaded => "Overloaded",
        MessagingError::Unavailable => "Unavailable",
        MessagingError::Storage(_) => "Storage",
        _ => "other",
    }
}

// ---------------------------------------------------------------------------------------------
// One seeded run.

struct Run {
    seed: u64,
    sim: MessagingSim,
    rng: SimRng,
    model: Model,
    coverage: Coverage,
    /// Operations since the start, named in assertion messages.
    operation: usize,
    day_jumps: u32,
    /// The logs acknowledge before `fdatasync`: every unclean restart bumps the epochs.
    relaxed: bool,
    /// Crash only by killing the process (the page cache survives).
    kills_only: bool,
    /// The shard whose disk has a fault armed since the last restart: storage errors may come.
    faulted: Option<ShardId>,
}

impl Run {
    fn new(seed: u64, durability: Durability, kills_only: bool) -> Run {
        Run {
            seed,
            sim: MessagingSim::new(seed, SHARDS, config(durability)),
            relaxed: durability != Durability::Sync,
            kills_only,
            faulted: None,
            rng: SimRng::new(seed ^ 0x4d45_5353_4147_4521),
            model: Model { next_random_id: 1 + (seed % 1000) * 1_000_000, ..Model::default() },
            coverage: Coverage::default(),
            operation: 0,
            day_jumps: 0,
        }
    }

    /// The epoch every box and chat must have: a crash in sync mode loses nothing answered,
    /// while in a relaxed mode every unclean restart may have.
    fn epoch(&self) -> u64 {
        if self.relaxed {
            self.coverage.crashes
        } else {
            0
        }
    }

    fn context(&self) -> String {
        format!("seed {} operation {}", self.seed, self.operation)
    }

    fn run(mut self) -> Coverage {
        for operation in 0..OPERATIONS_PER_SEED {
            self.operation = operation;
            self.coverage.operations += 1;
            self.random_operation();
            let steps = self.rng.below(6);
            for _ in 0..steps {
                self.sim.step();
            }
            self.poll();
        }
        self.operation = OPERATIONS_PER_SEED;
        self.restart_after_fault();
        // At the end: everything settles and must match, live streams included; then the
        // process dies once more and recovery must show the same.
        self.settle();
        self.check_everything(true);
        self.crash(if self.kills_only { CrashKind::ProcessKill } else { CrashKind::PowerLoss });
        self.coverage.steps = self.sim.stats().steps;
        self.coverage
    }

    fn random_operation(&mut self) {
        let users = self.model.users.len();
        let roll = self.rng.below(1000);
        if self.faulted.is_some() && (roll < 60 || (900..=918).contains(&roll)) {
            self.restart_after_fault();
            return;
        }
        match roll {
            _ if users < 3 => self.sign_up(),
            0..=29 if users < USERS_MAX => self.sign_up(),
            30..=59 => self.open_private(),
            60..=79 if self.model.chats.len() < CHATS_MAX => self.create_chat(),
            80..=449 => self.send_fresh(None),
            450..=499 => self.send_retry(),
            500..=579 => self.edit(),
            580..=639 => self.delete(),
            640..=679 => self.read(),
            680..=759 => self.membership(),
            760..=774 => self.block(),
            775..=799 => self.connect(),
            800..=824 => self.subscribe(),
            825..=827 => self.disconnect(),
            828..=849 => self.pin(),
            850..=879 => self.query(),
            880..=889 => self.burst(),
            890..=899 => {
                let shard = ShardId(self.rng.index(SHARDS) as u16);
                let context = self.context();
                match self.sim.checkpoint(shard) {
                    Ok(_) => self.coverage.checkpoints += 1,
                    Err(_) if self.faulted == Some(shard) => {}
                    Err(error) => panic!("{context}: checkpoint: {error}"),
                }
            }
            900..=908 if self.faulted.is_some() => self.restart_after_fault(),
            900..=908 => {
                self.settle();
                self.check_everything(true);
            }
            909..=918 if self.faulted.is_some() => self.restart_after_fault(),
            909..=918 => {
                let kill = self.kills_only || self.rng.chance(1, 3);
                let kind = if kill { CrashKind::ProcessKill } else { CrashKind::PowerLoss };
                self.crash(kind);
            }
            924..=926 if self.faulted.is_none() => {
                // A write or fsync of one shard's log fails soon.
                let shard = ShardId(self.rng.index(SHARDS) as u16);
                let kind = if self.rng.chance(1, 2) { OpKind::Write } else { OpKind::Sync };
                let n = self.rng.between(1, 4);
                self.sim.disk_mut(shard).fail_nth_op(n, kind);
                self.faulted = Some(shard);
                self.coverage.faults += 1;
            }
            919..=923 => {
                // Time passes: minutes; now and then a day, past the idempotency window (but
                // never a week, the age boxes and chat logs keep).
                let elapsed = if roll <= 920 && self.day_jumps < DAY_JUMPS_MAX {
                    self.day_jumps += 1;
                    IDEMPOTENCY_WINDOW_MS + self.rng.below(3_600_000)
                } else {
                    self.rng.below(600_000)
                };
                self.sim.advance_clock(elapsed);
            }
            _ => {
                let steps = self.rng.between(1, 40);
                self.sim.run(steps);
            }
        }
    }

    // -- submitting -----------------------------------------------------------------------

    fn submit(&mut self, request: Request, outstanding: Outstanding) -> u64 {
        // Most requests enter on the shard that owns their key; some on another shard (a
        // connection there), whose answer must find its way back.
        let owner = self.sim.route(&request);
        let origin = match request {
            Request::Connect { .. }
            | Request::ConnectAuthorized { .. }
            | Request::SubscribeChat { .. }
            | Request::Disconnect { .. } => owner,
            _ if self.rng.chance(1, 4) => ShardId(self.rng.index(SHARDS) as u16),
            _ => owner,
        };
        let id = self.sim.submit_from(origin, request);
        self.model.outstanding.insert(id, outstanding);
        id
    }

    fn random_user(&mut self) -> UserId {
        let users: Vec<UserId> = self.model.users.keys().copied().collect();
        users[self.rng.index(users.len())]
    }

    fn random_chat(&mut self, filter: impl Fn(&ModelChat) -> bool) -> Option<ChatId> {
        let chats: Vec<ChatId> = self.model.chats.iter().filter(|(_, chat)| filter(chat)).map(|(id, _)| *id).collect();
        (!chats.is_empty()).then(|| chats[self.rng.index(chats.len())])
    }

    fn text(&mut self, prefix: &str) -> String {
        self.model.next_text += 1;
        let number = self.model.next_text;
        match self.rng.below(40) {
            0 => format!("{prefix}{number} {}", "long ".repeat(self.rng.between(200, 810) as usize)),
            1 => format!("{prefix}{number} привет, ✓ ёжик"),
            _ => {
                let words = ["hi", "ok", "lunch?", "ship it", "the log", "fan-out", "pts", "see you"];
                let count = self.rng.between(1, 6) as usize;
                let chosen: Vec<&str> = (0..count).map(|_| words[self.rng.index(words.len())]).collect();
                format!("{prefix}{number} {}", chosen.join(" "))
            }
        }
    }

    fn sign_up(&mut self) {
        self.model.next_phone += 1;
        let phone = format!("+1{:03}555{:04}", self.seed % 1000, self.model.next_phone);
        let request = Request::SignUp { phone: phone.clone(), first_name: "Sim".into(), last_name: String::new() };
        self.submit(request, Outstanding::SignUp { phone });
    }

    fn open_private(&mut self) {
        let user = self.random_user();
        let peer = self.random_user();
        if user == peer {
            return;
        }
        let (blocked, _) = self.model.blocked_possible(user, peer);
        let exists = self.model.pairs.contains_key(&pair_key(user, peer));
        let allowed = Allowed::new(true, &["Overloaded"]).with("Blocked", blocked && !exists);
        self.submit(
            Request::OpenPrivate { user, peer },
            Outstanding::OpenPrivate { pair: pair_key(user, peer), allowed },
        );
    }

    fn create_chat(&mut self) {
        let creator = self.random_user();
        let kind = if self.rng.chance(1, 3) { ChatKind::Channel } else { ChatKind::Group };
        let mut members = Vec::new();
        for _ in 0..self.rng.below(5) {
            members.push(self.random_user());
        }
        self.model.next_text += 1;
        let title = format!("chat {}", self.model.next_text);
        let request = Request::CreateChat { kind, creator, title: title.clone(), members: members.clone() };
        self.submit(request, Outstanding::Create { request: CreateRequest { kind, creator, title, members } });
    }

    /// Who may send now, and what the answer may be.
    fn send_allowed(&self, chat: ChatId, sender: UserId, kind: SendKind) -> Allowed {
        let state = &self.model.chats[&chat];
        let standing = state.possible_standing(sender);
        let (blocked, blocked_certain) = match state.kind {
            ChatKind::Private => {
                let peer = state.initial.iter().copied().find(|&user| user != sender).unwrap_or(sender);
                self.model.blocked_possible(sender, peer)
            }
            _ => (false, false),
        };
        let may = match state.kind {
            ChatKind::Channel => standing.iter().any(|s| s.is_admin()),
            _ => standing.iter().any(|s| s.is_in()) && !blocked_certain,
        };
        let base = match kind {
            SendKind::Fresh | SendKind::InFlight => Allowed::new(may, &["Overloaded"]),
            SendKind::Retry { .. } => Allowed::new(may, &[]),
            SendKind::Reuse => Allowed::new(false, &["RandomIdReused"]),
        };
        base.with("NotMember", standing.contains(&Standing::Out))
            .with("NotAdmin", state.kind == ChatKind::Channel && standing.contains(&Standing::Member))
            .with("Blocked", blocked)
    }

    /// A sender for `chat`: usually one who may post, sometimes anyone.
    fn pick_sender(&mut self, chat: ChatId) -> UserId {
        let state = &self.model.chats[&chat];
        let candidates: Vec<UserId> = state
            .members
            .iter()
            .filter(|(_, entity)| {
                let possible = entity.possible();
                match state.kind {
                    ChatKind::Channel => possible.iter().any(|s| s.is_admin()),
                    _ => possible.iter().any(|s| s.is_in()),
                }
            })
            .map(|(user, _)| *user)
            .collect();
        if candidates.is_empty() || self.rng.chance(1, 12) {
            self.random_user()
        } else {
            candidates[self.rng.index(candidates.len())]
        }
    }

    fn send_fresh(&mut self, text: Option<String>) {
        let Some(chat) = self.random_chat(|_| true) else { return };
        let sender = self.pick_sender(chat);
        self.model.next_random_id += 1;
        let random_id = RandomId(self.model.next_random_id);
        let text = match text {
            Some(text) => text,
            None => self.text("m"),
        };
        let reply_to = self.reply_to(chat);
        self.submit_send(chat, sender, random_id, Content { text, reply_to }, SendKind::Fresh);
    }

    /// Sometimes a message of the chat to reply to.
    fn reply_to(&mut self, chat: ChatId) -> Option<MessageId> {
        let top = self.model.chats[&chat].messages.keys().next_back().copied()?;
        self.rng.chance(1, 4).then(|| MessageId(self.rng.between(1, top.0)))
    }

    fn submit_send(&mut self, chat: ChatId, sender: UserId, random_id: RandomId, content: Content, kind: SendKind) {
        let allowed = self.send_allowed(chat, sender, kind);
        // Half the sends of a user with a live session go through one of them.
        let sessions: Vec<SessionId> = self
            .model
            .sessions
            .iter()
            .filter(|(_, s)| s.user == sender && s.connected_pts.is_some())
            .map(|(id, _)| *id)
            .collect();
        let session = (!sessions.is_empty() && self.rng.chance(1, 2)).then(|| sessions[self.rng.index(sessions.len())]);
        let request = Request::Send(SendRequest {
            chat,
            sender,
            session,
            random_id,
            text: content.text.clone(),
            reply_to: content.reply_to,
            forwarded_from: None,
            media: None,
        });
        let outstanding =
            Outstanding::Send { chat, sender, session, random_id, content: content.clone(), kind, allowed };
        let id = self.submit(request, outstanding);
        if kind.creates() {
            let state = self.model.chats.get_mut(&chat).expect("known chat");
            state.random_ids.insert((sender, random_id), RandomIdState::Unsettled);
            state.sends.insert(id, PendingSend { sender, random_id, content, status: Status::Pending });
        }
    }

    /// Sends again with a random_id already used: the same content (a retry, maybe while the
    /// first is still being committed), or other content.
    fn send_retry(&mut self) {
        let Some(chat) = self.random_chat(|chat| !chat.random_ids.is_empty()) else { return };
        let used: Vec<((UserId, RandomId), RandomIdState)> =
            self.model.chats[&chat].random_ids.iter().map(|(key, state)| (*key, state.clone())).collect();
        let ((sender, random_id), state) = used[self.rng.index(used.len())].clone();
        let now = self.sim.now();
        let pending = self.model.chats[&chat]
            .sends
            .values()
            .find(|send| send.sender == sender && send.random_id == random_id)
            .map(|send| send.content.clone());
        if let Some(content) = pending {
            self.submit_send(chat, sender, random_id, content, SendKind::InFlight);
            return;
        }
        match state {
            RandomIdState::Unsettled => unreachable!("a random_id is unsettled only while a send with it is"),
            // Remembered for a window only: after it the same random_id makes a new message.
            RandomIdState::Known { content, date, .. } if date.0 + IDEMPOTENCY_WINDOW_MS < now.0 => {
                // A fresh send must not be answered as a duplicate: `answer_send` checks it.
                self.coverage.resent_after_window += 1;
                self.submit_send(chat, sender, random_id, content, SendKind::Fresh)
            }
            RandomIdState::Known { id, content, .. } if self.rng.chance(3, 4) => {
                self.submit_send(chat, sender, random_id, content, SendKind::Retry { id })
            }
            RandomIdState::Known { mut content, .. } => {
                if self.rng.chance(1, 2) {
                    content.text.push_str(" (changed)");
                } else {
                    content.reply_to = match content.reply_to {
                        Some(_) => None,
                        None => Some(MessageId(1)),
                    };
                }
                self.submit_send(chat, sender, random_id, content, SendKind::Reuse)
            }
            RandomIdState::Absent => {
                let text = self.text("r");
                let reply_to = self.reply_to(chat);
                self.submit_send(chat, sender, random_id, Content { text, reply_to }, SendKind::Fresh)
            }
        }
    }

    /// A random message of a random chat, and whether the model may consider it deleted.
    fn random_message(&mut self) -> Option<(ChatId, MessageId)> {
        let chat = self.random_chat(|chat| !chat.messages.is_empty())?;
        let ids: Vec<MessageId> = self.model.chats[&chat].messages.keys().copied().collect();
        Some((chat, ids[self.rng.index(ids.len())]))
    }

    fn edit(&mut self) {
        let Some((chat, id)) = self.random_message() else { return };
        let message_sender = self.model.chats[&chat].messages[&id].sender;
        let user = if self.rng.chance(6, 7) { message_sender } else { self.pick_sender(chat) };
        let state = &self.model.chats[&chat];
        let standing = state.possible_standing(user);
        let message = state.messages[&id].state.possible();
        let may_edit_others = state.kind == ChatKind::Channel && standing.iter().any(|s| s.is_admin());
        let may = standing.iter().any(|s| s.is_in())
            && message.iter().any(|m| !m.deleted)
            && (user == message_sender || may_edit_others);
        let allowed = Allowed::new(may, &["Overloaded"])
            .with("NotMember", standing.contains(&Standing::Out))
            .with("UnknownMessage", message.iter().any(|m| m.deleted))
            .with("NotSender", user != message_sender && !(may_edit_others && standing.len() == 1));
        let text = self.text("e");
        let request_id = self.submit(
            Request::Edit { chat, user, id, text: text.clone() },
            Outstanding::MessageOp { chat, ids: vec![id], allowed },
        );
        let entity = &mut self.model.chats.get_mut(&chat).expect("known").messages.get_mut(&id).expect("known").state;
        entity.push(request_id, MessageOp::Edit(text));
    }

    fn delete(&mut self) {
        let Some((chat, first)) = self.random_message() else { return };
        let state = &self.model.chats[&chat];
        let mut ids = vec![first];
        for (&id, _) in state.messages.range(first..).skip(1).take(self.rng.below(3) as usize) {
            ids.push(id);
        }
        let permanent = state.permanent();
        // Deleting for oneself: only by users who never leave (a leaving member's hidden
        // messages are forgotten with their membership); never in a channel.
        let for_me = state.kind != ChatKind::Channel && self.rng.chance(1, 3);
        let user = if for_me {
            permanent[self.rng.index(permanent.len())]
        } else if self.rng.chance(4, 5) {
            state.messages[&first].sender
        } else {
            self.pick_sender(chat)
        };
        let state = &self.model.chats[&chat];
        let standing = state.possible_standing(user);
        let allowed = if for_me {
            Allowed::new(standing.iter().any(|s| s.is_in()), &["Overloaded"])
                .with("NotMember", standing.contains(&Standing::Out))
        } else {
            let admin_may = state.kind != ChatKind::Private && standing.iter().any(|s| s.is_admin());
            let own = ids.iter().all(|id| state.messages[id].sender == user);
            Allowed::new(standing.iter().any(|s| s.is_in()) && (own || admin_may), &["Overloaded"])
                .with("NotMember", standing.contains(&Standing::Out))
                .with("NotSender", !own)
        };
        let request = Request::Delete { chat, user, ids: ids.clone(), for_everyone: !for_me };
        let request_id = self.submit(request, Outstanding::MessageOp { chat, ids: ids.clone(), allowed });
        let op = if for_me { MessageOp::DeleteForMe(user) } else { MessageOp::Delete };
        let state = self.model.chats.get_mut(&chat).expect("known");
        for id in ids {
            state.messages.get_mut(&id).expect("known").state.push(request_id, op.clone());
        }
    }

    fn read(&mut self) {
        let Some(chat) = self.random_chat(|_| true) else { return };
        let user = self.pick_sender(chat);
        let top = self.model.chats[&chat].messages.keys().next_back().map_or(0, |id| id.0);
        let max_id = MessageId(self.rng.between(0, top + 2));
        let standing = self.model.chats[&chat].possible_standing(user);
        let allowed = Allowed::new(standing.iter().any(|s| s.is_in()), &["Overloaded"])
            .with("NotMember", standing.contains(&Standing::Out));
        self.submit(Request::ReadHistory { chat, user, max_id }, Outstanding::Plain { what: "read", allowed });
    }

    fn pin(&mut self) {
        let Some((chat, id)) = self.random_message() else { return };
        let user = self.pick_sender(chat);
        let state = &self.model.chats[&chat];
        let standing = state.possible_standing(user);
        let message = state.messages[&id].state.possible();
        let need_admin = state.kind != ChatKind::Private;
        let allowed = Allowed::new(true, &["Overloaded", "UnknownMessage"])
            .with("NotMember", standing.contains(&Standing::Out))
            .with("NotAdmin", need_admin && standing.contains(&Standing::Member));
        let _ = message;
        let id = if self.rng.chance(1, 5) { None } else { Some(id) };
        self.submit(Request::Pin { chat, user, id }, Outstanding::Plain { what: "pin", allowed });
    }

    fn membership(&mut self) {
        let Some(chat) = self.random_chat(|chat| chat.kind != ChatKind::Private) else { return };
        let user = self.random_user();
        let state = &self.model.chats[&chat];
        if user == state.creator {
            return;
        }
        let creator = state.creator;
        let standing = state.possible_standing(user);
        let by = if self.rng.chance(3, 4) { creator } else { self.random_user() };
        let state = &self.model.chats[&chat];
        let by_standing = state.possible_standing(by);
        let admin_errors = |allowed: Allowed| {
            allowed
                .with("NotMember", by_standing.contains(&Standing::Out))
                .with("NotAdmin", by_standing.iter().any(|s| !s.is_admin()))
        };
        let by_may = by_standing.iter().any(|s| s.is_admin());
        let (request, op, allowed) = match self.rng.below(5) {
            0 | 1 => (Request::Join { chat, user }, MemberOp::Join, Allowed::new(true, &["Overloaded"])),
            2 => (
                Request::Leave { chat, user },
                MemberOp::Leave,
                Allowed::new(standing.iter().any(|s| s.is_in()), &["Overloaded"])
                    .with("NotMember", standing.contains(&Standing::Out)),
            ),
            3 if self.rng.chance(1, 2) => (
                Request::AddMember { chat, by, user },
                MemberOp::Join,
                admin_errors(Allowed::new(by_may, &["Overloaded"])),
            ),
            3 => (
                Request::RemoveMember { chat, by, user },
                MemberOp::Remove,
                admin_errors(Allowed::new(by_may && standing.iter().any(|s| s.is_in()), &["Overloaded"]))
                    .with("NotMember", standing.contains(&Standing::Out)),
            ),
            _ => (
                Request::Promote { chat, by, user },
                MemberOp::Promote,
                admin_errors(Allowed::new(by_may && standing.iter().any(|s| s.is_in()), &["Overloaded"]))
                    .with("NotMember", standing.contains(&Standing::Out)),
            ),
        };
        let request_id = self.submit(request, Outstanding::Member { chat, user, allowed });
        self.model.chats.get_mut(&chat).expect("known").standing(user).push(request_id, op);
        // The user's channel stream may stop here: no longer expect it whole.
        for session in self.model.sessions.values_mut().filter(|session| session.user == user) {
            if let Some(subscription) = session.channels.get_mut(&chat) {
                subscription.whole = false;
            }
        }
    }

    fn block(&mut self) {
        let user = self.random_user();
        let peer = self.random_user();
        if user == peer {
            return;
        }
        let blocked = self.rng.chance(1, 2);
        let request_id =
            self.submit(Request::SetBlocked { user, peer, blocked }, Outstanding::Block { key: (user, peer) });
        self.model.blocks.entry((user, peer)).or_insert_with(|| Entity::new(false)).push(request_id, blocked);
    }

    fn connect(&mut self) {
        let user = self.random_user();
        if self.model.sessions.values().filter(|session| session.user == user).count() >= SESSIONS_PER_USER_MAX {
            return;
        }
        let shard = ShardId(self.rng.index(SHARDS) as u16);
        let session = self.sim.new_session(shard);
        let model_session = ModelSession {
            user,
            connected_pts: None,
            received: Vec::new(),
            answered: Vec::new(),
            channels: BTreeMap::new(),
        };
        self.model.sessions.insert(session, model_session);
        self.submit(Request::Connect { user, session }, Outstanding::Connect { session });
    }

    fn subscribe(&mut self) {
        let sessions: Vec<SessionId> =
            self.model.sessions.iter().filter(|(_, s)| s.connected_pts.is_some()).map(|(id, _)| *id).collect();
        if sessions.is_empty() {
            return;
        }
        let session = sessions[self.rng.index(sessions.len())];
        let user = self.model.sessions[&session].user;
        let Some(chat) = self.random_chat(|chat| {
            chat.kind == ChatKind::Channel
                && chat.members.get(&user).is_some_and(|e| e.possible().iter().any(|s| s.is_in()))
        }) else {
            return;
        };
        if self.model.sessions[&session].channels.contains_key(&chat) {
            return;
        }
        let settled = self.model.chats[&chat].members.get(&user).is_some_and(|e| e.ops.is_empty());
        let subscription = Subscription { pts: None, whole: settled, received: Vec::new() };
        self.model.sessions.get_mut(&session).expect("known").channels.insert(chat, subscription);
        self.submit(Request::SubscribeChat { session, chat }, Outstanding::Subscribe { session, chat });
    }

    fn disconnect(&mut self) {
        let sessions: Vec<SessionId> = self.model.sessions.keys().copied().collect();
        if sessions.is_empty() {
            return;
        }
        let session = sessions[self.rng.index(sessions.len())];
        self.model.sessions.remove(&session);
        let allowed = Allowed::new(true, &[]);
        self.submit(Request::Disconnect { session }, Outstanding::Plain { what: "disconnect", allowed });
    }

    /// Reads while writes are in flight: whatever a read shows must survive any crash after.
    fn query(&mut self) {
        if self.rng.chance(1, 2) {
            let user = self.random_user();
            let known = self.model.known_pts.get(&user).copied().unwrap_or_default();
            let pts = Pts(self.rng.between(0, known.0));
            let limit = self.rng.between(1, 50) as usize;
            self.submit(Request::GetDifference { user, pts, limit }, Outstanding::Difference { user });
        } else {
            let Some(chat) = self.random_chat(|_| true) else { return };
            let user = self.pick_sender(chat);
            let page =
                HistoryPage { offset_id: MessageId(0), limit: self.rng.between(1, 30) as usize, ..Default::default() };
            self.submit(Request::GetHistory { chat, user, page }, Outstanding::History { chat });
        }
    }

    /// Many sends at once, some long, before the disk moves: some meet backpressure.
    fn burst(&mut self) {
        for _ in 0..self.rng.between(6, 24) {
            let text = if self.rng.chance(4, 5) {
                self.model.next_text += 1;
                Some(format!("b{} {}", self.model.next_text, "burst ".repeat(self.rng.between(300, 680) as usize)))
            } else {
                None
            };
            self.send_fresh(text);
        }
    }

    // -- answers --------------------------------------------------------------------------

    /// Takes every answer and live event that arrived.
    fn poll(&mut self) {
        let ids: Vec<u64> = self.model.outstanding.keys().copied().collect();
        for id in ids {
            if let Some(result) = self.sim.take_reply(id) {
                let outstanding = self.model.outstanding.remove(&id).expect("outstanding");
                self.answer(id, outstanding, result);
            }
        }
        let context = self.context();
        for (session, events) in self.sim.take_session_events() {
            let Some(user) = self.model.sessions.get(&session).map(|s| s.user) else { continue };
            for event in events {
                match event {
                    LiveEvent::Box { update: entry, .. } => {
                        self.coverage.live_box_events += 1;
                        self.model.show_box(user, &entry, &context);
                        self.model.sessions.get_mut(&session).expect("known").received.push(entry);
                    }
                    LiveEvent::Chat { chat, update, message } => {
                        self.coverage.live_chat_events += 1;
                        self.model.show_chat(chat, update.pts, &update.update, &context);
                        if let Some(message) = &message {
                            assert_eq!(Some(message.id), update.update.message(), "{context}: live message body");
                        }
                        if let Some(subscription) =
                            self.model.sessions.get_mut(&session).expect("known").channels.get_mut(&chat)
                        {
                            subscription.received.push(update);
                        }
                    }
                    LiveEvent::Typing { .. } | LiveEvent::Presence { .. } => {}
                    LiveEvent::Resync => panic!("{context}: session {session:?} was told to resync"),
                    LiveEvent::Revoked => {
                        panic!("{context}: session {session:?} was revoked (the model never revokes)")
                    }
                }
            }
        }
        for (user, entry) in self.sim.take_offline() {
            self.coverage.offline_notices += 1;
            self.model.show_box(user, &entry, &context);
        }
    }

    fn check_allowed(&mut self, allowed: &Allowed, result: &MessagingResult<Response>, what: &str) {
        let context = self.context();
        match result {
            Ok(response) => assert!(allowed.ok, "{context}: {what} succeeded ({response:?}) but could not have"),
            Err(error) => {
                let kind = error_kind(error);
                assert!(allowed.errors.contains(kind), "{context}: {what} failed with {error:?}; allowed {allowed:?}");
                match kind {
                    "Overloaded" => self.coverage.overloaded += 1,
                    _ => self.coverage.refusals += 1,
                }
            }
        }
    }

    fn answer(&mut self, request: u64, outstanding: Outstanding, result: MessagingResult<Response>) {
        let context = self.context();
        if let Err(MessagingError::Storage(error)) = &result {
            // The log failed: the request may have been appended (and may survive) or not.
            assert!(self.faulted.is_some(), "{context}: a storage error with no fault injected: {error}");
            self.coverage.storage_errors += 1;
            self.unknown(request, outstanding);
            return;
        }
        match outstanding {
            Outstanding::SignUp { phone } => match result {
                Ok(Response::User(user)) => {
                    assert_eq!(
                        self.sim.table().owner(user.vshard()),
                        self.sim.route(&Request::LookupPhone { phone: phone.clone() })
                    );
                    assert!(self.model.users.insert(user, phone).is_none(), "{context}: user id {user} given twice");
                }
                Err(MessagingError::Overloaded) => self.coverage.overloaded += 1,
                other => panic!("{context}: sign up {phone}: {other:?}"),
            },
            Outstanding::OpenPrivate { pair, allowed } => {
                self.check_allowed(&allowed, &result, "open_private");
                if let Ok(response) = result {
                    let Response::Chat(chat) = response else {
                        panic!("{context}: open_private answered {response:?}")
                    };
                    self.adopt_private(pair, chat);
                }
            }
            Outstanding::Create { request: create } => match result {
                Ok(Response::Chat(chat)) => self.adopt_created(chat, create),
                Err(MessagingError::Overloaded) => self.coverage.overloaded += 1,
                other => panic!("{context}: create {create:?}: {other:?}"),
            },
            Outstanding::Send { chat, sender, session, random_id, content, kind, allowed } => {
                self.check_allowed(&allowed, &result, &format!("send {kind:?} to {chat} by {sender}"));
                if let (Some(session), Ok(Response::Sent(ack))) = (session, &result) {
                    if let (Some(pts), Some(model)) = (ack.sender_pts, self.model.sessions.get_mut(&session)) {
                        model.answered.push(pts);
                        self.coverage.answered_not_live += 1;
                    }
                }
                self.answer_send(request, chat, sender, random_id, content, kind, result);
            }
            Outstanding::MessageOp { chat, ids, allowed } => {
                self.check_allowed(&allowed, &result, &format!("message op on {chat} {ids:?}"));
                let applied = result.is_ok();
                let state = self.model.chats.get_mut(&chat).expect("known chat");
                for id in ids {
                    let message = state.messages.get_mut(&id).expect("known message");
                    message.state.answer(request, applied, &format!("{context}: chat {chat} message {id}"));
                }
            }
            Outstanding::Member { chat, user, allowed } => {
                self.check_allowed(&allowed, &result, &format!("membership of {user} in {chat}"));
                let state = self.model.chats.get_mut(&chat).expect("known chat");
                state.standing(user).answer(request, result.is_ok(), &format!("{context}: {user} in {chat}"));
            }
            Outstanding::Block { key } => {
                let allowed = Allowed::new(true, &["Overloaded"]);
                self.check_allowed(&allowed, &result, "block");
                let entity = self.model.blocks.get_mut(&key).expect("known block");
                entity.answer(request, result.is_ok(), &format!("{context}: block {key:?}"));
            }
            Outstanding::Plain { what, allowed } => self.check_allowed(&allowed, &result, what),
            Outstanding::Connect { session } => match result {
                Ok(Response::State(state)) => {
                    if let Some(model_session) = self.model.sessions.get_mut(&session) {
                        model_session.connected_pts = Some(state.pts);
                        let user = model_session.user;
                        let known = self.model.known_pts.entry(user).or_default();
                        *known = (*known).max(state.pts);
                    }
                }
                other => panic!("{context}: connect {session:?}: {other:?}"),
            },
            Outstanding::Subscribe { session, chat } => match result {
                Ok(Response::Pts(pts)) => {
                    if let Some(subscription) =
                        self.model.sessions.get_mut(&session).and_then(|s| s.channels.get_mut(&chat))
                    {
                        subscription.pts = Some(pts);
                    }
                }
                Err(MessagingError::NotMember(_)) | Err(MessagingError::InvalidArgument(_)) => {
                    if let Some(model_session) = self.model.sessions.get_mut(&session) {
                        model_session.channels.remove(&chat);
                    }
                }
                other => panic!("{context}: subscribe {session:?} to {chat}: {other:?}"),
            },
            Outstanding::Difference { user } => match result {
                Ok(Response::BoxDifference { updates, .. }) => {
                    for entry in &updates {
                        self.model.show_box(user, entry, &context);
                    }
                }
                other => panic!("{context}: get_difference of {user}: {other:?}"),
            },
            Outstanding::History { chat } => match result {
                Ok(Response::Messages(messages)) => {
                    for message in messages {
                        self.model.shown_messages.insert((chat, message.id), (message.sender, message.random_id));
                    }
                }
                Err(MessagingError::NotMember(_)) => {}
                other => panic!("{context}: history of {chat}: {other:?}"),
            },
        }
    }

    /// Request `request` got an answer that does not say whether it took effect.
    fn unknown(&mut self, request: u64, outstanding: Outstanding) {
        match outstanding {
            Outstanding::SignUp { phone } => self.model.maybe_phones.push(phone),
            Outstanding::OpenPrivate { pair, .. } => {
                self.model.maybe_pairs.insert(pair);
            }
            Outstanding::Create { request } => self.model.maybe_creates.push(request),
            Outstanding::Send { chat, .. } => {
                if let Some(send) = self.model.chats.get_mut(&chat).and_then(|state| state.sends.get_mut(&request)) {
                    send.status = Status::Maybe;
                }
            }
            Outstanding::MessageOp { chat, ids, .. } => {
                let state = self.model.chats.get_mut(&chat).expect("known chat");
                for id in ids {
                    state.messages.get_mut(&id).expect("known message").state.unknown(request);
                }
            }
            Outstanding::Member { chat, user, .. } => {
                self.model.chats.get_mut(&chat).expect("known chat").standing(user).unknown(request);
            }
            Outstanding::Block { key } => self.model.blocks.get_mut(&key).expect("known block").unknown(request),
            Outstanding::Connect { session } => {
                self.model.sessions.remove(&session);
            }
            Outstanding::Subscribe { session, chat } => {
                if let Some(model_session) = self.model.sessions.get_mut(&session) {
                    model_session.channels.remove(&chat);
                }
            }
            Outstanding::Plain { .. } | Outstanding::Difference { .. } | Outstanding::History { .. } => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn answer_send(
        &mut self,
        request: u64,
        chat: ChatId,
        sender: UserId,
        random_id: RandomId,
        content: Content,
        kind: SendKind,
        result: MessagingResult<Response>,
    ) {
        let context = self.context();
        let state = self.model.chats.get_mut(&chat).expect("known chat");
        let key = (sender, random_id);
        if kind.creates() {
            state.sends.remove(&request);
        }
        let ack = match result {
            Ok(Response::Sent(ack)) => ack,
            Ok(other) => panic!("{context}: send answered {other:?}"),
            Err(error) => {
                // Nothing was sent, unless another send with the random_id still may.
                let others = state.sends.values().any(|send| (send.sender, send.random_id) == key);
                if kind.creates() && !others && state.random_ids.get(&key) == Some(&RandomIdState::Unsettled) {
                    state.random_ids.insert(key, RandomIdState::Absent);
                }
                if error == MessagingError::RandomIdReused {
                    self.coverage.reuses_refused += 1;
                }
                return;
            }
        };
        assert_eq!(ack.chat, chat, "{context}: ack of another chat");
        let update = Update::NewMessage { chat, id: ack.id, sender, date: ack.date };
        match kind {
            SendKind::Fresh | SendKind::InFlight => {
                assert!(
                    !ack.duplicate || matches!(kind, SendKind::InFlight),
                    "{context}: a new random_id {random_id} was answered as a duplicate: {ack:?}"
                );
                // A message another answer (a retry in flight) already showed must be this one,
                // unless the two were sent more than the window apart.
                let mut newest = true;
                if let Some(RandomIdState::Known { id, date, .. }) = state.random_ids.get(&key) {
                    assert!(
                        *id == ack.id || date.0.abs_diff(ack.date.0) > IDEMPOTENCY_WINDOW_MS,
                        "{context}: random_id {random_id} made message {id}, and now {ack:?}"
                    );
                    newest = *date <= ack.date;
                }
                match state.messages.get(&ack.id) {
                    Some(known) => assert_eq!(
                        (known.sender, known.random_id, known.reply_to, known.date),
                        (sender, random_id, content.reply_to, ack.date),
                        "{context}: chat {chat} gave id {} to two messages",
                        ack.id
                    ),
                    None => {
                        let message = ModelMessage {
                            sender,
                            random_id,
                            reply_to: content.reply_to,
                            date: ack.date,
                            state: Entity::new(MessageState { text: content.text.clone(), ..MessageState::default() }),
                        };
                        state.messages.insert(ack.id, message);
                    }
                }
                if newest {
                    state.random_ids.insert(key, RandomIdState::Known { id: ack.id, content, date: ack.date });
                }
                if ack.duplicate {
                    // Answered only once the original is acknowledged: it must survive a crash.
                    assert_eq!(ack.sender_pts, None, "{context}: a retry does not claim a new pts");
                    self.model.shown_messages.insert((chat, ack.id), (sender, random_id));
                    self.coverage.in_flight_duplicates += 1;
                } else {
                    self.coverage.sends_acknowledged += 1;
                    match ack.sender_pts {
                        Some(pts) => {
                            let entry = Sequenced { pts, date: ack.date, update: update.clone() };
                            self.model.show_box(sender, &entry, &context);
                        }
                        None => assert_eq!(state.kind, ChatKind::Channel, "{context}: a send carries the sender's pts"),
                    }
                }
            }
            SendKind::Retry { id } => {
                assert!(ack.duplicate && ack.id == id, "{context}: a retry of message {id} answered {ack:?}");
                assert_eq!(ack.date, state.messages[&id].date, "{context}: a retry answers the original date");
                assert_eq!(ack.sender_pts, None, "{context}: a retry does not claim a new pts");
                self.coverage.duplicates += 1;
            }
            SendKind::Reuse => panic!("{context}: a reused random_id with other content was sent: {ack:?}"),
        }
        if ack.chat_pts != Pts::ZERO {
            self.model.show_chat(chat, ack.chat_pts, &update, &context);
        }
    }

    fn adopt_private(&mut self, pair: (UserId, UserId), chat: ChatId) {
        let context = self.context();
        if let Some(&known) = self.model.pairs.get(&pair) {
            assert_eq!(known, chat, "{context}: two private chats for {pair:?}");
            return;
        }
        assert_eq!(
            self.sim.table().owner(chat.vshard()),
            self.sim.table().owner(ferrogram_engine::messaging::pair_vshard(pair.0, pair.1))
        );
        self.model.pairs.insert(pair, chat);
        let mut members = BTreeMap::new();
        members.insert(pair.0, Entity::new(Standing::Member));
        members.insert(pair.1, Entity::new(Standing::Member));
        let previous = self.model.chats.insert(
            chat,
            ModelChat {
                kind: ChatKind::Private,
                creator: pair.0,
                initial: vec![pair.0, pair.1],
                members,
                messages: BTreeMap::new(),
                random_ids: BTreeMap::new(),
                sends: BTreeMap::new(),
            },
        );
        assert!(previous.is_none(), "{context}: chat id {chat} given twice");
    }

    fn adopt_created(&mut self, chat: ChatId, create: CreateRequest) {
        let context = self.context();
        assert_eq!(chat.vshard(), create.creator.vshard(), "{context}: a chat's id comes from its creator's vshard");
        let mut initial = vec![create.creator];
        for member in create.members {
            if !initial.contains(&member) {
                initial.push(member);
            }
        }
        let members = initial
            .iter()
            .map(|&user| {
                let standing = if user == create.creator { Standing::Creator } else { Standing::Member };
                (user, Entity::new(standing))
            })
            .collect();
        let previous = self.model.chats.insert(
            chat,
            ModelChat {
                kind: create.kind,
                creator: create.creator,
                initial,
                members,
                messages: BTreeMap::new(),
                random_ids: BTreeMap::new(),
                sends: BTreeMap::new(),
            },
        );
        assert!(previous.is_none(), "{context}: chat id {chat} given twice");
    }

    // -- crash and recovery ---------------------------------------------------------------

    /// A shard's log failed (or is about to): once it has, every request must still be
    /// answered; then the process restarts, as it must to use that shard again.
    fn restart_after_fault(&mut self) {
        let Some(shard) = self.faulted else { return };
        let context = self.context();
        // The armed fault must fire before the restart, or it would fire in recovery's own
        // I/O: append on that shard (a username's index entry lives there) until it does.
        let mut attempt = 0;
        while self.sim.log(shard).failure().is_none() {
            attempt += 1;
            assert!(attempt < 100, "{context}: the armed fault on {shard} never fired");
            let username = (0..)
                .map(|index| format!("fault{}x{attempt}x{index}", self.seed))
                .find(|name| self.sim.route(&Request::LookupUsername { username: name.clone() }) == shard)
                .expect("some username lives on every shard");
            let id = self.sim.submit(Request::ClaimUsername { username, user: UserId(1) });
            self.sim.run_until_reply(id);
            self.sim.run(10);
        }
        self.settle();
        let kill = self.kills_only || self.rng.chance(1, 2);
        self.crash(if kill { CrashKind::ProcessKill } else { CrashKind::PowerLoss });
    }

    fn settle(&mut self) {
        let context = self.context();
        self.sim.run_until_quiet().unwrap_or_else(|error| panic!("{context}: the shards do not settle: {error}"));
        self.poll();
        assert!(
            self.model.outstanding.is_empty() && self.sim.waiting_requests().is_empty(),
            "{context}: the shards settled with requests unanswered: {:?}",
            self.model.outstanding
        );
    }

    fn crash(&mut self, kind: CrashKind) {
        self.poll();
        let context = self.context();
        let report = self.sim.crash(kind).unwrap_or_else(|error| panic!("{context}: recovery after {kind:?}: {error}"));
        self.coverage.crashes += 1;
        self.faulted = None;
        self.coverage.recovered_from_checkpoint +=
            report.shards.iter().filter(|shard| shard.checkpoint.is_some()).count() as u64;
        for request in &report.lost_requests {
            assert!(self.model.outstanding.contains_key(request), "{context}: the driver lost an unknown request");
        }
        assert_eq!(report.lost_requests.len(), self.model.outstanding.len(), "{context}: lost requests");
        // Whatever was in flight may or may not have happened.
        for (request, outstanding) in std::mem::take(&mut self.model.outstanding) {
            self.unknown(request, outstanding);
        }
        for chat in self.model.chats.values_mut() {
            for member in chat.members.values_mut() {
                member.crash();
            }
            for message in chat.messages.values_mut() {
                message.state.crash();
            }
            for send in chat.sends.values_mut() {
                send.status = Status::Maybe;
            }
        }
        for block in self.model.blocks.values_mut() {
            block.crash();
        }
        self.model.sessions.clear();
        self.settle();
        self.resolve();
        self.check_everything(false);
    }

    /// After a recovery: every in-flight operation either happened or not; look which, check
    /// it could have, and settle the model on it.
    fn resolve(&mut self) {
        let context = self.context();
        for phone in std::mem::take(&mut self.model.maybe_phones) {
            match self.sim.call(Request::LookupPhone { phone: phone.clone() }) {
                Ok(Response::MaybeUser(Some(user))) => {
                    self.coverage.maybe_happened += 1;
                    assert!(self.model.users.insert(user, phone).is_none(), "{context}: user {user} twice");
                }
                Ok(Response::MaybeUser(None)) => self.coverage.maybe_lost += 1,
                other => panic!("{context}: lookup {phone}: {other:?}"),
            }
        }
        // Users: exactly the known ones exist.
        for shard in 0..SHARDS {
            let state = self.sim.core(ShardId(shard as u16)).state();
            for (user, record) in &state.users {
                assert_eq!(
                    self.model.users.get(user),
                    Some(&record.profile.phone),
                    "{context}: user {user} exists on shard {shard} but no answered sign-up made it"
                );
            }
            assert_eq!(
                state.users.len(),
                self.model.users.keys().filter(|user| self.sim.table().owner(user.vshard()).index() == shard).count(),
                "{context}: an acknowledged user is missing on shard {shard}"
            );
        }
        // Chats: every chat is known or was made by an operation in flight.
        let creates = std::mem::take(&mut self.model.maybe_creates);
        let maybe_pairs = std::mem::take(&mut self.model.maybe_pairs);
        let mut found = Vec::new();
        for shard in 0..SHARDS {
            let state = self.sim.core(ShardId(shard as u16)).state();
            for (&chat, record) in &state.chats {
                if self.model.chats.contains_key(&chat) {
                    continue;
                }
                found.push((
                    chat,
                    record.kind,
                    record.title.clone(),
                    record.members.keys().copied().collect::<Vec<_>>(),
                ));
            }
        }
        let mut adopted_creates = BTreeSet::new();
        for (chat, kind, title, members) in found {
            if kind == ChatKind::Private {
                let pair = pair_key(members[0], members[1]);
                assert!(
                    maybe_pairs.contains(&pair),
                    "{context}: private chat {chat} of {pair:?} appeared from nowhere"
                );
                self.coverage.maybe_happened += 1;
                self.adopt_private(pair, chat);
            } else {
                let index = creates.iter().position(|create| create.title == title);
                let Some(index) = index else { panic!("{context}: chat {chat} '{title}' appeared from nowhere") };
                assert!(adopted_creates.insert(index), "{context}: one creation made two chats");
                self.coverage.maybe_happened += 1;
                let create = &creates[index];
                let request = CreateRequest {
                    kind: create.kind,
                    creator: create.creator,
                    title: create.title.clone(),
                    members: create.members.clone(),
                };
                self.adopt_created(chat, request);
            }
        }
        self.coverage.maybe_lost += (creates.len() - adopted_creates.len()) as u64;

        // Blocks.
        let keys: Vec<(UserId, UserId)> = self.model.blocks.keys().copied().collect();
        for (by, peer) in keys {
            let owner = self.sim.table().owner(ferrogram_engine::messaging::pair_vshard(by, peer));
            let actual = self
                .sim
                .core(owner)
                .state()
                .pairs
                .get(&pair_key(by, peer))
                .is_some_and(|pair| pair.blocked_by.contains(&by));
            let (happened, lost) = self
                .model
                .blocks
                .get_mut(&(by, peer))
                .expect("known")
                .adopt(actual, &format!("{context}: block {by}->{peer}"));
            self.coverage.maybe_happened += happened;
            self.coverage.maybe_lost += lost;
        }

        // Per chat: membership, then messages.
        let chats: Vec<ChatId> = self.model.chats.keys().copied().collect();
        for chat in chats {
            let owner = self.sim.table().owner(chat.vshard());
            let record = self.sim.core(owner).state().chats.get(&chat).map(snapshot_chat);
            let Some(actual) = record else { panic!("{context}: acknowledged chat {chat} is gone") };
            let users: BTreeSet<UserId> = self.model.users.keys().copied().collect();
            let model = self.model.chats.get_mut(&chat).expect("known");
            for &user in actual.members.keys() {
                assert!(users.contains(&user), "{context}: unknown user {user} is a member of {chat}");
                model.standing(user);
            }
            for (user, entity) in model.members.iter_mut() {
                let standing = Standing::of(actual.members.get(user).copied());
                let (happened, lost) = entity.adopt(standing, &format!("{context}: {user} in chat {chat}"));
                self.coverage.maybe_happened += happened;
                self.coverage.maybe_lost += lost;
            }
            // Messages the model does not know came from sends in flight.
            for message in &actual.messages {
                if model.messages.contains_key(&message.id) {
                    continue;
                }
                let key = model
                    .sends
                    .iter()
                    .find(|(_, send)| {
                        send.status == Status::Maybe
                            && send.sender == message.sender
                            && send.random_id == message.random_id
                            && send.content.text == message.text
                            && send.content.reply_to == message.reply_to
                    })
                    .map(|(key, _)| *key);
                let Some(key) = key else {
                    panic!("{context}: message {} of chat {chat} ({message:?}) came from no send in flight", message.id)
                };
                let send = model.sends.remove(&key).expect("found");
                self.coverage.maybe_happened += 1;
                model.random_ids.insert(
                    (send.sender, send.random_id),
                    RandomIdState::Known { id: message.id, content: send.content.clone(), date: message.date },
                );
                model.messages.insert(
                    message.id,
                    ModelMessage {
                        sender: send.sender,
                        random_id: send.random_id,
                        reply_to: send.content.reply_to,
                        date: message.date,
                        state: Entity::new(MessageState { text: send.content.text, ..MessageState::default() }),
                    },
                );
            }
            for (_, send) in std::mem::take(&mut model.sends) {
                assert_eq!(send.status, Status::Maybe, "{context}: a send still pending after settling");
                self.coverage.maybe_lost += 1;
                let key = (send.sender, send.random_id);
                if model.random_ids.get(&key) == Some(&RandomIdState::Unsettled) {
                    model.random_ids.insert(key, RandomIdState::Absent);
                }
            }
            assert_eq!(
                model.messages.keys().map(|id| id.0).collect::<Vec<_>>(),
                (1..=actual.messages.len() as u64).collect::<Vec<_>>(),
                "{context}: chat {chat}: message ids are not dense, or an acknowledged message is gone"
            );
            for message in &actual.messages {
                let known = model.messages.get_mut(&message.id).expect("dense");
                assert_eq!(
                    (known.sender, known.random_id, known.date, known.reply_to.filter(|_| !message.deleted)),
                    (message.sender, message.random_id, message.date, message.reply_to),
                    "{context}: chat {chat} message {} changed identity",
                    message.id
                );
                let hidden: BTreeSet<UserId> =
                    actual.hidden.iter().filter(|(_, ids)| ids.contains(&message.id)).map(|(user, _)| *user).collect();
                let state = MessageState {
                    text: message.text.clone(),
                    edited: message.edit_date.is_some(),
                    deleted: message.deleted,
                    hidden,
                };
                let (happened, lost) =
                    known.state.adopt(state, &format!("{context}: chat {chat} message {}", message.id));
                self.coverage.maybe_happened += happened;
                self.coverage.maybe_lost += lost;
            }
        }
        // What clients were shown in histories is still there.
        for (&(chat, id), &(sender, random_id)) in &self.model.shown_messages {
            let known = self.model.chats.get(&chat).and_then(|state| state.messages.get(&id));
            assert!(
                known.is_some_and(|message| message.sender == sender && message.random_id == random_id),
                "{context}: chat {chat} message {id} was shown in a history page, and recovery lost it"
            );
        }
    }

    // -- checks ---------------------------------------------------------------------------

    /// Everything the model can say about the settled shards. `live`: sessions survived since
    /// they connected, so their streams must be whole.
    fn check_everything(&mut self, live: bool) {
        self.coverage.checks += 1;
        let chats: Vec<ChatId> = self.model.chats.keys().copied().collect();
        for &chat in &chats {
            self.check_chat(chat);
        }
        let users: Vec<UserId> = self.model.users.keys().copied().collect();
        let mut boxes = BTreeMap::new();
        for &user in &users {
            boxes.insert(user, self.check_box(user));
        }
        self.check_fanout(&boxes);
        let context = self.context();
        for (&(user, pts), update) in &self.model.shown_box {
            let entry = boxes.get(&user).and_then(|entries| entries.get(pts.0 as usize - 1));
            assert_eq!(
                entry.map(|entry| &entry.update),
                Some(update),
                "{context}: user {user} was shown {update:?} at pts {pts}; the box now holds {entry:?}"
            );
        }
        for (&(chat, pts), update) in &self.model.shown_chat {
            let log = self.chat_log(chat);
            let entry = log.iter().find(|entry| entry.entry.pts == pts);
            assert_eq!(
                entry.map(|entry| &entry.entry.update),
                Some(update),
                "{context}: chat {chat} pts {pts} was shown as {update:?}; the chat log now holds {entry:?}"
            );
        }
        if live {
            self.check_live(&boxes);
        }
    }

    fn chat_log(&self, chat: ChatId) -> Vec<ChatLogEntry> {
        let owner = self.sim.table().owner(chat.vshard());
        self.sim.core(owner).state().chats.get(&chat).map_or_else(Vec::new, |state| state.log.iter().cloned().collect())
    }

    /// A chat's history, as each member pages through it, is the model's; its log is dense.
    fn check_chat(&mut self, chat: ChatId) {
        let context = format!("{}: chat {chat}", self.context());
        let model = &self.model.chats[&chat];
        let members = model.settled_members();
        let top = model.messages.keys().next_back().copied().unwrap_or_default();
        let kind = model.kind;
        let reader = members.first().copied();
        if let Some(reader) = reader {
            match self.sim.call(Request::GetChat { chat, user: reader }) {
                Ok(Response::ChatInfo(info)) => {
                    assert_eq!(info.top_message, top, "{context}: top message");
                    assert_eq!(info.kind, kind, "{context}: kind");
                    assert_eq!(info.members, members.len(), "{context}: member count");
                    assert_eq!(info.fanout_on_read, kind == ChatKind::Channel, "{context}: sync mode");
                    assert_eq!(info.epoch, self.epoch(), "{context}: the chat's epoch");
                }
                other => panic!("{context}: get_chat: {other:?}"),
            }
        }
        for user in members {
            let expected: Vec<HistoryRow> = self.model.chats[&chat]
                .messages
                .iter()
                .rev()
                .filter(|(_, message)| !message.state.base.deleted && !message.state.base.hidden.contains(&user))
                .map(|(id, message)| {
                    let state = &message.state.base;
                    let content = Content { text: state.text.clone(), reply_to: message.reply_to };
                    (*id, message.sender, message.random_id, content, state.edited, message.date)
                })
                .collect();
            let mut actual = Vec::new();
            let mut offset = MessageId(0);
            loop {
                let limit = self.rng.between(1, HISTORY_PAGE_MAX as u64) as usize;
                let page = HistoryPage { offset_id: offset, limit, ..HistoryPage::default() };
                let messages = match self.sim.call(Request::GetHistory { chat, user, page }) {
                    Ok(Response::Messages(messages)) => messages,
                    other => panic!("{context}: history for {user}: {other:?}"),
                };
                assert!(messages.len() <= limit, "{context}: a page longer than its limit");
                let Some(last) = messages.last() else { break };
                offset = last.id;
                actual.extend(messages);
            }
            let actual: Vec<HistoryRow> = actual
                .iter()
                .map(|m: &Message| {
                    let content = Content { text: m.text.clone(), reply_to: m.reply_to };
                    (m.id, m.sender, m.random_id, content, m.edit_date.is_some(), m.date)
                })
                .collect();
            assert_eq!(actual, expected, "{context}: the history {user} sees");
            self.coverage.messages_checked += actual.len() as u64;
            self.check_get_messages(chat, user, &expected);
            self.check_chat_difference(chat, user);
        }
        // Dates never go backwards with ids.
        let dates: Vec<_> = self.model.chats[&chat].messages.values().map(|message| message.date).collect();
        assert!(dates.windows(2).all(|pair| pair[0] <= pair[1]), "{context}: dates go backwards");
        // The chat log is dense in public pts from its first event, and holds no event for
        // one member only.
        let owner = self.sim.table().owner(chat.vshard());
        let state = self.sim.core(owner).state().chats.get(&chat).expect("exists");
        let pts: Vec<u64> = state.log.iter().map(|entry| entry.entry.pts.0).collect();
        assert_eq!(pts, (1..=state.public_pts.0).collect::<Vec<_>>(), "{context}: the chat log's pts are not dense");
        assert!(state.public_pts <= state.pts, "{context}: public pts ahead of the chat's sequence");
        assert!(state.log.iter().all(|entry| entry.only_for.is_none()), "{context}: a private event in the log");
    }

    /// `get_messages` of every id of the chat shows `user` exactly the messages history shows.
    fn check_get_messages(&mut self, chat: ChatId, user: UserId, history: &[HistoryRow]) {
        let context = format!("{}: chat {chat}", self.context());
        let top = self.model.chats[&chat].messages.keys().next_back().map_or(0, |id| id.0);
        let mut shown = Vec::new();
        let mut from = 1;
        while from <= top + 1 {
            let ids: Vec<MessageId> = (from..=(from + 99).min(top + 1)).map(MessageId).collect();
            from += 100;
            match self.sim.call(Request::GetMessages { chat, user, ids }) {
                Ok(Response::Messages(messages)) => shown.extend(messages.into_iter().map(|message| message.id)),
                other => panic!("{context}: get_messages for {user}: {other:?}"),
            }
        }
        let expected: Vec<MessageId> = history.iter().rev().map(|row| row.0).collect();
        assert_eq!(shown, expected, "{context}: get_messages for {user}");
    }

    /// `get_chat_difference` read in pages from 0 gives `user` the chat's log, less what is
    /// only for other members, and says how far each page went.
    fn check_chat_difference(&mut self, chat: ChatId, user: UserId) {
        let context = format!("{}: chat {chat} difference for {user}", self.context());
        let log = self.chat_log(chat);
        let expected: Vec<Sequenced> = log
            .iter()
            .filter(|entry| entry.only_for.is_none_or(|only| only == user))
            .map(|entry| entry.entry.clone())
            .collect();
        let end = log.last().map_or(Pts::ZERO, |entry| entry.entry.pts);
        let mut got = Vec::new();
        let mut pts = Pts::ZERO;
        loop {
            let limit = self.rng.between(1, 40) as usize;
            let difference = match self.sim.call(Request::GetChatDifference { chat, user, pts, limit }) {
                Ok(Response::ChatDifference(difference)) => difference,
                other => panic!("{context}: from {pts}: {other:?}"),
            };
            assert!(difference.pts >= pts && difference.pts.0 <= pts.0 + limit as u64, "{context}: page end");
            assert_eq!(difference.slice, difference.pts < end, "{context}: slice flag at {}", difference.pts);
            assert!(difference.updates.iter().all(|entry| entry.pts > pts && entry.pts <= difference.pts));
            got.extend(difference.updates);
            if !difference.slice {
                break;
            }
            pts = difference.pts;
        }
        assert_eq!(got, expected, "{context}");
    }

    /// A user's box read with `get_difference` in pages is dense from 1, and from any earlier
    /// pts returns exactly the suffix. Returns the box.
    fn check_box(&mut self, user: UserId) -> Vec<Sequenced> {
        let context = format!("{}: box of {user}", self.context());
        let state = match self.sim.call(Request::GetState { user }) {
            Ok(Response::State(state)) => state,
            other => panic!("{context}: get_state: {other:?}"),
        };
        assert_eq!(state.epoch, self.epoch(), "{context}: the box's epoch");
        let mut entries: Vec<Sequenced> = Vec::new();
        let mut pts = Pts::ZERO;
        loop {
            let limit = self.rng.between(1, 80) as usize;
            let (updates, page_state, slice) = match self.sim.call(Request::GetDifference { user, pts, limit }) {
                Ok(Response::BoxDifference { updates, state, slice }) => (updates, state, slice),
                other => panic!("{context}: get_difference from {pts}: {other:?}"),
            };
            assert!(updates.len() <= limit, "{context}: a page longer than its limit");
            for (offset, entry) in updates.iter().enumerate() {
                assert_eq!(entry.pts.0, pts.0 + 1 + offset as u64, "{context}: box pts are not dense: {updates:?}");
            }
            let end = updates.last().map_or(pts, |entry| entry.pts);
            entries.extend(updates);
            assert_eq!(page_state.pts, end, "{context}: a page's state names its last pts");
            if !slice {
                break;
            }
            assert!(end > pts, "{context}: a slice that does not move");
            pts = end;
        }
        assert_eq!(entries.len() as u64, state.pts.0, "{context}: get_state pts against the box");
        for _ in 0..2 {
            let from = self.rng.between(0, state.pts.0);
            let suffix = match self.sim.call(Request::GetDifference { user, pts: Pts(from), limit: 1000 }) {
                Ok(Response::BoxDifference { updates, .. }) => updates,
                other => panic!("{context}: get_difference from {from}: {other:?}"),
            };
            let expected: Vec<Sequenced> = entries.iter().skip(from as usize).take(1000).cloned().collect();
            assert_eq!(suffix, expected, "{context}: get_difference from {from} is not the suffix");
        }
        let ahead = self.sim.call(Request::GetDifference { user, pts: state.pts.next(), limit: 10 });
        assert!(matches!(ahead, Err(MessagingError::InvalidArgument(_))), "{context}: a pts ahead: {ahead:?}");
        self.coverage.box_updates_checked += entries.len() as u64;
        entries
    }

    /// Every public event of every chat is in the box of each user who was a member when it
    /// happened (and the subject of a membership change), exactly once and in chat order;
    /// nothing else. Events for one member only (their reads, deletes for me, channel joins
    /// and leaves) are not in the chat's log: their box updates must add up to that member's
    /// standing in the chat (see `check_private_updates`).
    fn check_fanout(&self, boxes: &BTreeMap<UserId, Vec<Sequenced>>) {
        let context = self.context();
        let known: BTreeSet<ChatId> = self.model.chats.keys().copied().collect();
        for (user, entries) in boxes {
            for entry in entries {
                assert!(
                    known.contains(&entry.update.chat()),
                    "{context}: box of {user} holds {entry:?} of a chat nobody made"
                );
            }
        }
        for (&chat, model) in &self.model.chats {
            let log = self.chat_log(chat);
            for (&user, entries) in boxes {
                let expected = expected_box(chat, model, &log, user);
                let private = |update: &Update| is_private(model.kind, user, update);
                let actual: Vec<&Update> = entries
                    .iter()
                    .map(|entry| &entry.update)
                    .filter(|update| update.chat() == chat && !matches!(update, Update::ReadOutbox { .. }))
                    .filter(|update| !private(update))
                    .collect();
                let expected: Vec<&Update> = expected.iter().filter(|update| !private(update)).collect();
                assert_eq!(actual, expected, "{context}: the updates of chat {chat} in the box of {user}");
                self.check_private_updates(chat, model.kind, user, entries);
            }
        }
    }

    /// The updates in `user`'s box that only `user` gets from `chat` add up to what the chat's
    /// shard holds for them: since their last join, the highest read marker, the messages
    /// hidden for them, and (in a channel) whether they are a member.
    fn check_private_updates(&self, chat: ChatId, kind: ChatKind, user: UserId, entries: &[Sequenced]) {
        let context = self.context();
        let owner = self.sim.table().owner(chat.vshard());
        let Some(state) = self.sim.core(owner).state().chats.get(&chat) else { return };
        let (mut read, mut hidden, mut member) = (MessageId(0), BTreeSet::new(), None);
        for entry in entries.iter().filter(|entry| entry.update.chat() == chat) {
            match &entry.update {
                Update::ChatMember { user: subject, change, .. } if *subject == user => match change {
                    MemberChange::Joined | MemberChange::Added { .. } => {
                        (read, hidden, member) = (MessageId(0), BTreeSet::new(), Some(true));
                    }
                    MemberChange::Left | MemberChange::Removed { .. } => member = Some(false),
                    MemberChange::Promoted { .. } => {}
                },
                Update::ReadInbox { max_id, .. } => read = read.max(*max_id),
                Update::DeleteMessages { ids, .. } => hidden.extend(ids.iter().copied()),
                _ => {}
            }
        }
        let holds = state.members.get(&user);
        if kind == ChatKind::Channel && user != state.creator {
            assert_eq!(member.unwrap_or(false), holds.is_some(), "{context}: {user}'s membership of channel {chat}");
        }
        // A private chat's members never join: their markers count from its creation.
        if let Some(holds) = holds.filter(|_| member.is_some() || kind == ChatKind::Private) {
            assert_eq!(read, holds.read_inbox_max, "{context}: {user}'s read marker in chat {chat}");
            assert_eq!(hidden, holds.hidden, "{context}: messages chat {chat} hides for {user}");
        }
    }

    /// Live streams: every session got every update of its box after the pts it connected at,
    /// in order and once; every channel subscriber every post after it subscribed.
    fn check_live(&self, boxes: &BTreeMap<UserId, Vec<Sequenced>>) {
        let context = self.context();
        for (session, model) in &self.model.sessions {
            let Some(connected) = model.connected_pts else { panic!("{context}: {session:?} never connected") };
            // A send through the session is answered with its pts instead of a live update: the
            // two together are the box since the connect, each pts once.
            let live: Vec<u64> = model.received.iter().map(|e| e.pts.0).filter(|&pts| pts > connected.0).collect();
            let answered: Vec<u64> = model.answered.iter().map(|pts| pts.0).collect();
            let twice: Vec<&u64> = live.iter().filter(|pts| answered.contains(pts)).collect();
            assert!(twice.is_empty(), "{context}: {session:?} got its own sends at pts {twice:?} live as well");
            let mut got: Vec<u64> = live.iter().chain(&answered).copied().collect();
            got.sort_unstable();
            let end = boxes[&model.user].len() as u64;
            let expected: Vec<u64> = (connected.0 + 1..=end).collect();
            assert_eq!(
                got, expected,
                "{context}: {session:?} of user {} connected at pts {connected}; these came live or in its answers",
                model.user
            );
            for (&chat, subscription) in &model.channels {
                let Some(from) = subscription.pts else { panic!("{context}: {session:?} subscription unanswered") };
                if !subscription.whole {
                    continue;
                }
                let got: Vec<u64> = subscription.received.iter().map(|e| e.pts.0).filter(|&pts| pts > from.0).collect();
                let expected: Vec<u64> = self
                    .chat_log(chat)
                    .iter()
                    .filter(|entry| entry.only_for.is_none() && entry.entry.pts > from)
                    .map(|entry| entry.entry.pts.0)
                    .collect();
                assert_eq!(
                    got, expected,
                    "{context}: {session:?} subscribed to {chat} at pts {from} and received these"
                );
            }
        }
    }
}

/// Whether `update` of a chat of `kind` is one that only `user`'s box gets (and the chat's
/// log does not hold).
fn is_private(kind: ChatKind, user: UserId, update: &Update) -> bool {
    match update {
        Update::ReadInbox { .. } | Update::DeleteMessages { .. } => true,
        Update::ChatMember { user: subject, .. } => kind == ChatKind::Channel && *subject == user,
        _ => false,
    }
}

/// A message as a history page shows it: id, sender, random_id, content, edited, date.
type HistoryRow = (MessageId, UserId, RandomId, Content, bool, UnixMs);

/// The parts of a chat's state the resolution reads.
struct ChatSnapshot {
    members: BTreeMap<UserId, Role>,
    messages: Vec<Message>,
    hidden: BTreeMap<UserId, BTreeSet<MessageId>>,
}

fn snapshot_chat(chat: &Chat) -> ChatSnapshot {
    ChatSnapshot {
        members: chat.members.iter().map(|(user, member)| (*user, member.role)).collect(),
        messages: chat.messages.iter().cloned().collect(),
        hidden: chat.members.iter().map(|(user, member)| (*user, member.hidden.clone())).collect(),
    }
}

/// The updates of `chat` the box of `user` must hold (read-outbox markers aside), from the
/// chat's log: each event reaches the members of the moment before it, a membership change
/// also its subject, a read or delete-for-me only its user; creation tells each initial member.
fn expected_box(chat: ChatId, model: &ModelChat, log: &[ChatLogEntry], user: UserId) -> Vec<Update> {
    let fanout_on_read = model.kind == ChatKind::Channel;
    let mut members: BTreeSet<UserId> = model.initial.iter().copied().collect();
    let mut expected = Vec::new();
    for entry in log {
        if entry.entry.pts == Pts(1) && model.kind != ChatKind::Private {
            if model.initial.contains(&user) {
                let change = MemberChange::Added { by: model.creator };
                expected.push(Update::ChatMember { chat, user, change, fanout_on_read });
            }
            continue;
        }
        if let Some(only) = entry.only_for {
            if only == user {
                expected.push(entry.entry.update.clone());
            }
            continue;
        }
        let reaches = !fanout_on_read && members.contains(&user);
        match &entry.entry.update {
            Update::ChatMember { user: subject, change, .. } => {
                if reaches || *subject == user {
                    expected.push(entry.entry.update.clone());
                }
                match change {
                    MemberChange::Joined | MemberChange::Added { .. } => {
                        members.insert(*subject);
                    }
                    MemberChange::Left | MemberChange::Removed { .. } => {
                        members.remove(subject);
                    }
                    MemberChange::Promoted { .. } => {}
                }
            }
            Update::ChatSyncMode { .. } => {
                if members.contains(&user) {
                    expected.push(entry.entry.update.clone());
                }
            }
            _ => {
                if reaches {
                    expected.push(entry.entry.update.clone());
                }
            }
        }
    }
    expected
}
