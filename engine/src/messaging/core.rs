//! A shard's messaging core: a sans-I/O state machine (DESIGN §2). Requests and peer
//! messages go in with the time; records go out through a [`Journal`]; everything a client or
//! another shard may see waits in a queue until the log's watermarks say the records behind
//! it are acknowledged (replies) or durable (fan-out, live updates), then leaves as
//! [`Effects`]. The glommio driver and the simulator run this same code.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::ids::{Lsn, RecordKind, ShardId, VShard};
use crate::messaging::limits::*;
use crate::messaging::protocol::{
    Effects, FanOut, HistoryPage, Origin, PeerMessage, Request, Response, SendRequest, SenderReply,
};
use crate::messaging::records::{self, ChatChange, Event, EVENT_KIND};
use crate::messaging::state::{content_hash, pair_key, Chat, Map, State, User};
use crate::messaging::types::*;
use crate::vshards::VShardTable;
use crate::wal::AppendError;

/// Where the core's records go: the shard's log, or the simulator's.
pub trait Journal {
    /// Appends the records of one step together (same batch, durable together) and returns
    /// the first one's LSN; the others follow densely.
    fn append_all(&mut self, records: &[(RecordKind, VShard, &[u8])]) -> std::result::Result<Lsn, AppendError>;
}

/// One shard's messaging state machine.
pub struct MessagingCore {
    shard: ShardId,
    table: Arc<VShardTable>,
    /// The log's generation: bumped when acknowledged records may have been lost, so every
    /// box and chat of the shard has this epoch.
    epoch: u64,
    state: State,
    /// Cross-shard consequences not yet confirmed durable by every destination (DESIGN §3).
    outbox: BTreeMap<(ChatId, Pts, u8), OutboxEntry>,
    /// Sender replies riding on outbox entries; never durable (a restarted shard has no
    /// waiting sender).
    outbox_replies: Map<(ChatId, Pts, u8), SenderReply>,
    /// Fan-outs received while the log had no room, in arrival order (order matters: a box
    /// skips chat pts at or below what it applied).
    inbox: VecDeque<FanOut>,
    after_acked: VecDeque<(Lsn, Deferred)>,
    after_durable: VecDeque<(Lsn, Deferred)>,
    acked: Lsn,
    durable: Lsn,
    /// The newest record of each chat and box, so reads wait only for what they show.
    chat_lsn: Map<ChatId, Lsn>,
    box_lsn: Map<UserId, Lsn>,
    last_lsn: Lsn,
    live: Live,
    effects: Effects,
    /// Record bytes appended since the last checkpoint.
    bytes_since_checkpoint: u64,
    /// The time of the latest input.
    now: UnixMs,
    checkpoint_every_bytes: u64,
}

impl std::fmt::Debug for MessagingCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessagingCore")
            .field("shard", &self.shard)
            .field("users", &self.state.users.len())
            .field("chats", &self.state.chats.len())
            .field("outbox", &self.outbox.len())
            .field("last_lsn", &self.last_lsn)
            .finish_non_exhaustive()
    }
}

/// Ephemeral state: online sessions, subscriptions, presence. Never in the WAL.
#[derive(Default)]
struct Live {
    /// On a user's shard: their online sessions.
    sessions: Map<UserId, Vec<SessionId>>,
    presence: Map<UserId, (bool, UnixMs)>,
    /// On a connection shard: sessions held here, and per chat the subscribed ones.
    hub: Map<SessionId, HubSession>,
    hub_chats: Map<ChatId, Vec<SessionId>>,
    /// On a chat's shard: per connection shard, subscribed sessions per user.
    subscribers: Map<ChatId, BTreeMap<ShardId, BTreeMap<UserId, u32>>>,
}

struct HubSession {
    user: UserId,
    chats: Vec<ChatId>,
}

#[derive(Clone, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct OutboxEntry {
    pub date: UnixMs,
    pub update: Update,
    pub targets: BTreeMap<u16, Vec<UserId>>,
}

enum Deferred {
    Reply(Origin, MessagingResult<Response>),
    Peer(ShardId, PeerMessage),
    FanOut((ChatId, Pts, u8)),
    BoxLive { date: UnixMs, update: Update, users: Vec<(UserId, Pts)> },
    ChatLive { chat: ChatId, update: Sequenced, message: Option<Arc<Message>> },
}

/// A checkpoint's contents: the durable state and the unconfirmed outbox.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Snapshot {
    state: State,
    outbox: Vec<((ChatId, Pts, u8), OutboxEntry)>,
}

/// Why a checkpoint could not be restored.
#[derive(Debug, thiserror::Error)]
#[error("the messaging checkpoint does not decode: {0}")]
pub struct RestoreError(rkyv::rancor::Error);

type Result<T> = std::result::Result<T, MessagingError>;

impl MessagingCore {
    pub fn new(shard: ShardId, table: Arc<VShardTable>) -> MessagingCore {
        MessagingCore {
            shard,
            table,
            epoch: 0,
            state: State::default(),
            outbox: BTreeMap::new(),
            outbox_replies: Map::default(),
            inbox: VecDeque::new(),
            after_acked: VecDeque::new(),
            after_durable: VecDeque::new(),
            acked: Lsn::ZERO,
            durable: Lsn::ZERO,
            chat_lsn: Map::default(),
            box_lsn: Map::default(),
            last_lsn: Lsn::ZERO,
            live: Live::default(),
            effects: Effects::default(),
            bytes_since_checkpoint: 0,
            now: UnixMs(0),
            checkpoint_every_bytes: CHECKPOINT_EVERY_BYTES,
        }
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Loads a checkpoint's state; call before replaying the records after it.
    pub fn restore(&mut self, snapshot: &[u8]) -> std::result::Result<(), RestoreError> {
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(snapshot.len());
        aligned.extend_from_slice(snapshot);
        let snapshot = rkyv::from_bytes::<Snapshot, rkyv::rancor::Error>(&aligned).map_err(RestoreError)?;
        self.state = snapshot.state;
        self.outbox = snapshot.outbox.into_iter().collect();
        Ok(())
    }

    /// The checkpoint of everything applied so far.
    pub fn snapshot(&mut self) -> Vec<u8> {
        let state = std::mem::take(&mut self.state);
        let snapshot =
            Snapshot { state, outbox: self.outbox.iter().map(|(key, entry)| (*key, entry.clone())).collect() };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&snapshot);
        self.state = snapshot.state;
        self.bytes_since_checkpoint = 0;
        match bytes {
            Ok(bytes) => bytes.into_vec(),
            Err(error) => panic!("archiving the messaging state failed: {error}"),
        }
    }

    /// Take a checkpoint after this many bytes of records (default `CHECKPOINT_EVERY_BYTES`).
    pub fn set_checkpoint_every(&mut self, bytes: u64) {
        self.checkpoint_every_bytes = bytes.max(1);
    }

    /// Whether enough has been written since the last checkpoint to take another.
    pub fn wants_checkpoint(&self) -> bool {
        self.bytes_since_checkpoint >= self.checkpoint_every_bytes
    }

    /// Applies a record replayed from the log (any kind; other kinds are the host's).
    pub fn replay(&mut self, kind: RecordKind, payload: &[u8]) -> std::result::Result<(), records::DecodeError> {
        if kind != EVENT_KIND {
            return Ok(());
        }
        let event = records::decode(payload)?;
        for (part, consequence) in self.state.consequences(&event).into_iter().enumerate() {
            let (chat, chat_pts, date) = event_key(&event);
            let targets = self.remote_targets(&consequence.users);
            if !targets.is_empty() {
                let entry = OutboxEntry { date, update: consequence.update, targets };
                self.outbox.insert((chat, chat_pts, part as u8), entry);
            }
        }
        self.state.apply(event);
        Ok(())
    }

    /// After open: sets the epoch and watermarks, and re-sends every unconfirmed fan-out (boxes
    /// skip what they already hold).
    pub fn resume(&mut self, epoch: u64, recovered: Lsn) {
        self.epoch = epoch;
        self.acked = recovered;
        self.durable = recovered;
        self.last_lsn = recovered;
        let keys: Vec<_> = self.outbox.keys().copied().collect();
        for key in keys {
            self.send_fanout(key);
        }
    }

    /// What the step produced; the driver performs it.
    pub fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.effects)
    }

    /// The lowest LSN something waits on, per watermark: the driver waits for it.
    pub fn waiting(&self) -> (Option<Lsn>, Option<Lsn>) {
        (self.after_acked.front().map(|(lsn, _)| *lsn), self.after_durable.front().map(|(lsn, _)| *lsn))
    }

    /// Fan-outs are waiting for room in the log.
    pub fn has_inbox(&self) -> bool {
        !self.inbox.is_empty()
    }

    /// The log's watermarks moved: release what waited on them.
    pub fn advance(&mut self, acked: Lsn, durable: Lsn, journal: &mut dyn Journal) {
        self.acked = self.acked.max(acked);
        self.durable = self.durable.max(durable);
        while self.after_acked.front().is_some_and(|(lsn, _)| *lsn <= self.acked) {
            let Some((_, deferred)) = self.after_acked.pop_front() else { break };
            self.release(deferred);
        }
        while self.after_durable.front().is_some_and(|(lsn, _)| *lsn <= self.durable) {
            let Some((_, deferred)) = self.after_durable.pop_front() else { break };
            self.release(deferred);
        }
        self.pump_inbox(journal);
    }

    /// The log failed: answer every waiting request with `error` and drop what else waits
    /// (nothing more can become durable).
    pub fn fail_waiting(&mut self, error: MessagingError) {
        let waiting: Vec<Deferred> =
            self.after_acked.drain(..).chain(self.after_durable.drain(..)).map(|(_, deferred)| deferred).collect();
        for deferred in waiting {
            match deferred {
                Deferred::Reply(origin, _) => self.reply_now(origin, Err(error.clone())),
                Deferred::Peer(shard, PeerMessage::SessionRegistered { session, user, origin, .. }) => {
                    let message = PeerMessage::SessionRegistered { session, user, origin, result: Err(error.clone()) };
                    self.send_peer(shard, message);
                }
                Deferred::Peer(shard, PeerMessage::Subscribed { chat, session, origin, .. }) => {
                    let message = PeerMessage::Subscribed { chat, session, origin, result: Err(error.clone()) };
                    self.send_peer(shard, message);
                }
                _ => {}
            }
        }
        for (_, sender) in std::mem::take(&mut self.outbox_replies) {
            self.reply_now(sender.origin, Err(error.clone()));
        }
    }

    /// A request from the host, arriving on the shard that owns its key.
    pub fn handle(&mut self, origin: Origin, request: Request, now: UnixMs, journal: &mut dyn Journal) {
        self.now = self.now.max(now);
        if let Err(error) = self.dispatch(origin, request, now, journal) {
            self.reply_now(origin, Err(error));
        }
    }

    /// A session's queue overflowed or its receiver went away: forget it.
    pub fn session_lost(&mut self, session: SessionId) {
        self.drop_hub_session(session);
    }

    /// A message from another shard's core.
    pub fn peer(&mut self, message: PeerMessage, now: UnixMs, journal: &mut dyn Journal) {
        self.now = self.now.max(now);
        match message {
            PeerMessage::FanOut(fanout) => {
                if self.inbox.is_empty() {
                    if let Some(fanout) = self.fan_in(fanout, journal) {
                        self.inbox.push_back(fanout);
                    }
                } else {
                    self.inbox.push_back(fanout);
                }
            }
            PeerMessage::FanOutDone { chat, chat_pts, part, from } => {
                let key = (chat, chat_pts, part);
                if let Some(entry) = self.outbox.get_mut(&key) {
                    entry.targets.remove(&from.0);
                    if entry.targets.is_empty() {
                        self.outbox.remove(&key);
                    }
                }
            }
            PeerMessage::Reply { origin, result } => self.effects.replies.push((origin, result)),
            PeerMessage::Deliver(events) => {
                let events = events.into_iter().filter(|(session, _)| self.live.hub.contains_key(session));
                self.effects.deliveries.extend(events);
            }
            PeerMessage::ChatLive { chat, update, message } => self.deliver_chat(chat, update, message),
            PeerMessage::RegisterSession { session, user, origin } => self.register_session(session, user, origin, now),
            PeerMessage::SessionRegistered { session, user, origin, result } => {
                if result.is_ok() {
                    self.live.hub.insert(session, HubSession { user, chats: Vec::new() });
                }
                self.effects.replies.push((origin, result));
            }
            PeerMessage::UnregisterSession { session, user } => self.unregister_session(session, user, now),
            PeerMessage::Subscribe { chat, user, session, origin } => {
                self.subscribe_at_chat(chat, user, session, origin)
            }
            PeerMessage::Subscribed { chat, session, origin, result } => self.subscribed(chat, session, origin, result),
            PeerMessage::Unsubscribe { chat, user, shard } => self.unsubscribe_at_chat(chat, user, shard),
            PeerMessage::DropSubscriber { chat, user } => {
                let sessions: Vec<SessionId> =
                    self.live.hub.iter().filter(|(_, s)| s.user == user).map(|(id, _)| *id).collect();
                for session in sessions {
                    self.hub_unsubscribe(session, chat);
                }
            }
            PeerMessage::Typing { chat, user, to } => {
                for recipient in to {
                    for session in self.live.sessions.get(&recipient).cloned().unwrap_or_default() {
                        self.deliver(session, LiveEvent::Typing { chat, user });
                    }
                }
            }
        }
    }

    fn dispatch(&mut self, origin: Origin, request: Request, now: UnixMs, journal: &mut dyn Journal) -> Result<()> {
        match request {
            Request::SignUp { phone, first_name, last_name } => {
                self.sign_up(origin, phone, first_name, last_name, now, journal)
            }
            Request::LookupPhone { phone } => {
                let found = self.state.phones.get(&phone).copied();
                let lsn = found.map_or(Lsn::ZERO, |user| self.box_lsn(user));
                self.reply_after_acked(lsn, origin, Ok(Response::MaybeUser(found)));
                Ok(())
            }
            Request::GetUsers { users } => {
                let mut profiles = Vec::with_capacity(users.len());
                let mut barrier = Lsn::ZERO;
                for user in users {
                    let state = self.user(user)?;
                    profiles.push(state.profile.clone());
                    barrier = barrier.max(self.box_lsn(user));
                }
                self.reply_after_acked(barrier, origin, Ok(Response::Profiles(profiles)));
                Ok(())
            }
            Request::SetName { user, first_name, last_name } => {
                check_name(&first_name, "first name", true)?;
                check_name(&last_name, "last name", false)?;
                self.user(user)?;
                let lsn = self.commit_plain(Event::NameSet { user, first_name, last_name }, journal)?;
                self.box_lsn.insert(user, lsn);
                self.reply_after_acked(lsn, origin, Ok(Response::Done));
                Ok(())
            }
            Request::ClaimUsername { username, user } => {
                let username = normalize_username(&username)?;
                match self.state.usernames.get(&username) {
                    Some(&owner) if owner == user => {
                        self.reply_after_acked(self.last_lsn, origin, Ok(Response::Done));
                    }
                    Some(_) => return Err(MessagingError::UsernameTaken),
                    None => {
                        let lsn = self.commit_plain(Event::UsernameClaimed { username, user }, journal)?;
                        self.reply_after_acked(lsn, origin, Ok(Response::Done));
                    }
                }
                Ok(())
            }
            Request::ReleaseUsername { username, user } => {
                let username = normalize_username(&username)?;
                let lsn = if self.state.usernames.get(&username) == Some(&user) {
                    self.commit_plain(Event::UsernameReleased { username, user }, journal)?
                } else {
                    self.last_lsn
                };
                self.reply_after_acked(lsn, origin, Ok(Response::Done));
                Ok(())
            }
            Request::LookupUsername { username } => {
                let found =
                    normalize_username(&username).ok().and_then(|name| self.state.usernames.get(&name).copied());
                self.reply_after_acked(self.last_lsn, origin, Ok(Response::MaybeUser(found)));
                Ok(())
            }
            Request::SetUsername { user, username } => {
                let username = username.map(|name| normalize_username(&name)).transpose()?;
                let previous = self.user(user)?.profile.username.clone();
                let lsn = self.commit_plain(Event::UsernameSet { user, username }, journal)?;
                self.box_lsn.insert(user, lsn);
                self.reply_after_acked(lsn, origin, Ok(Response::Username(previous)));
                Ok(())
            }
            Request::OpenPrivate { user, peer } => self.open_private(origin, user, peer, now, journal),
            Request::SetBlocked { user, peer, blocked } => {
                if user == peer {
                    return Err(MessagingError::InvalidArgument("a user cannot block themselves"));
                }
                self.check_owned(pair_vshard(user, peer))?;
                let lsn = self.commit_plain(Event::PairBlocked { by: user, peer, blocked }, journal)?;
                self.reply_after_acked(lsn, origin, Ok(Response::Done));
                Ok(())
            }
            Request::CreateChat { kind, creator, title, members } => {
                self.create_chat(origin, kind, creator, title, members, now, journal)
            }
            Request::Join { chat, user } => {
                let state = self.chat(chat)?;
                if state.kind == ChatKind::Private {
                    return Err(MessagingError::InvalidArgument("a private chat cannot be joined"));
                }
                if state.members.contains_key(&user) {
                    self.reply_after_acked(self.chat_lsn(chat), origin, Ok(Response::Done));
                    return Ok(());
                }
                self.member_change(origin, chat, user, MemberChange::Joined, now, journal)
            }
            Request::Leave { chat, user } => {
                let state = self.chat(chat)?;
                if state.kind == ChatKind::Private {
                    return Err(MessagingError::InvalidArgument("a private chat cannot be left"));
                }
                state.role(user).ok_or(MessagingError::NotMember(user))?;
                self.member_change(origin, chat, user, MemberChange::Left, now, journal)
            }
            Request::AddMember { chat, by, user } => {
                let state = self.chat(chat)?;
                if state.kind == ChatKind::Private {
                    return Err(MessagingError::InvalidArgument("a private chat has no other members"));
                }
                self.require_admin(state, by)?;
                if state.members.contains_key(&user) {
                    self.reply_after_acked(self.chat_lsn(chat), origin, Ok(Response::Done));
                    return Ok(());
                }
                self.member_change(origin, chat, user, MemberChange::Added { by }, now, journal)
            }
            Request::RemoveMember { chat, by, user } => {
                let state = self.chat(chat)?;
                if state.kind == ChatKind::Private {
                    return Err(MessagingError::InvalidArgument("a private chat has no other members"));
                }
                self.require_admin(state, by)?;
                match state.role(user) {
                    None => return Err(MessagingError::NotMember(user)),
                    Some(Role::Creator) => return Err(MessagingError::NotAdmin),
                    Some(_) => {}
                }
                self.member_change(origin, chat, user, MemberChange::Removed { by }, now, journal)
            }
            Request::Promote { chat, by, user } => {
                let state = self.chat(chat)?;
                if state.kind == ChatKind::Private {
                    return Err(MessagingError::InvalidArgument("a private chat has no admins"));
                }
                self.require_admin(state, by)?;
                match state.role(user) {
                    None => return Err(MessagingError::NotMember(user)),
                    Some(Role::Admin | Role::Creator) => {
                        self.reply_after_acked(self.chat_lsn(chat), origin, Ok(Response::Done));
                        return Ok(());
                    }
                    Some(Role::Member) => {}
                }
                self.member_change(origin, chat, user, MemberChange::Promoted { by }, now, journal)
            }
            Request::Send(send) => self.send(origin, send, now, journal),
            Request::Edit { chat, user, id, text } => {
                check_text(&text)?;
                let state = self.chat(chat)?;
                self.require_member(state, user)?;
                let message =
                    state.message(id).filter(|m| !m.deleted).ok_or(MessagingError::UnknownMessage(chat, id))?;
                let may = message.sender == user || (state.kind == ChatKind::Channel && state.is_admin(user));
                if !may {
                    return Err(MessagingError::NotSender);
                }
                let lsn = self.commit_chat(chat, ChatChange::Edit { id, text }, now, None, journal)?;
                self.reply_after_acked(lsn, origin, Ok(Response::Done));
                Ok(())
            }
            Request::Delete { chat, user, ids, for_everyone } => {
                if ids.is_empty() || ids.len() > MESSAGE_IDS_MAX {
                    return Err(MessagingError::InvalidArgument("delete takes 1 to 100 message ids"));
                }
                let state = self.chat(chat)?;
                self.require_member(state, user)?;
                let mut ids = ids;
                ids.sort_unstable();
                ids.dedup();
                for &id in &ids {
                    let message = state.message(id).ok_or(MessagingError::UnknownMessage(chat, id))?;
                    if for_everyone
                        && message.sender != user
                        && !(state.kind != ChatKind::Private && state.is_admin(user))
                    {
                        return Err(MessagingError::NotSender);
                    }
                }
                let change = if for_everyone {
                    ids.retain(|&id| state.message(id).is_some_and(|m| !m.deleted));
                    ChatChange::Delete { ids }
                } else {
                    if state.kind == ChatKind::Channel {
                        return Err(MessagingError::InvalidArgument(
                            "channel posts cannot be deleted for one subscriber",
                        ));
                    }
                    ChatChange::DeleteForMe { user, ids }
                };
                if matches!(&change, ChatChange::Delete { ids } if ids.is_empty()) {
                    self.reply_after_acked(self.chat_lsn(chat), origin, Ok(Response::Done));
                    return Ok(());
                }
                let lsn = self.commit_chat(chat, change, now, None, journal)?;
                self.reply_after_acked(lsn, origin, Ok(Response::Done));
                Ok(())
            }
            Request::Pin { chat, user, id } => {
                let state = self.chat(chat)?;
                self.require_member(state, user)?;
                if state.kind != ChatKind::Private {
                    self.require_admin(state, user)?;
                }
                if let Some(id) = id {
                    state.visible(user, id).ok_or(MessagingError::UnknownMessage(chat, id))?;
                }
                let lsn = self.commit_chat(chat, ChatChange::Pin { id }, now, None, journal)?;
                self.reply_after_acked(lsn, origin, Ok(Response::Done));
                Ok(())
            }
            Request::GetHistory { chat, user, page } => {
                let state = self.chat(chat)?;
                self.require_member(state, user)?;
                let messages = history(state, user, page)?;
                self.reply_after_acked(self.chat_lsn(chat), origin, Ok(Response::Messages(messages)));
                Ok(())
            }
            Request::GetMessages { chat, user, ids } => {
                if ids.len() > MESSAGE_IDS_MAX {
                    return Err(MessagingError::InvalidArgument("get_messages takes at most 100 ids"));
                }
                let state = self.chat(chat)?;
                self.require_member(state, user)?;
                let messages = ids.iter().filter_map(|&id| state.visible(user, id).cloned()).collect();
                self.reply_after_acked(self.chat_lsn(chat), origin, Ok(Response::Messages(messages)));
                Ok(())
            }
            Request::FetchMessages { user, wanted } => {
                let mut messages = Vec::new();
                let mut barrier = Lsn::ZERO;
                for (chat, ids) in wanted {
                    let Some(state) = self.state.chats.get(&chat) else { continue };
                    if !state.members.contains_key(&user) {
                        continue;
                    }
                    barrier = barrier.max(self.chat_lsn(chat));
                    messages.extend(ids.iter().filter_map(|&id| state.visible(user, id).cloned()));
                }
                self.reply_after_acked(barrier, origin, Ok(Response::Messages(messages)));
                Ok(())
            }
            Request::ReadHistory { chat, user, max_id } => {
                let state = self.chat(chat)?;
                let member = state.members.get(&user).ok_or(MessagingError::NotMember(user))?;
                let max_id = max_id.min(state.top_message());
                if max_id <= member.read_inbox_max {
                    self.reply_after_acked(self.chat_lsn(chat), origin, Ok(Response::Done));
                    return Ok(());
                }
                let lsn = self.commit_chat(chat, ChatChange::Read { user, max_id }, now, None, journal)?;
                self.reply_after_acked(lsn, origin, Ok(Response::Done));
                Ok(())
            }
            Request::GetChat { chat, user } => {
                let state = self.chat(chat)?;
                self.require_member(state, user)?;
                let info = self.chat_info(state);
                self.reply_after_acked(self.chat_lsn(chat), origin, Ok(Response::ChatInfo(info)));
                Ok(())
            }
            Request::GetMembers { chat, user } => {
                let state = self.chat(chat)?;
                self.require_member(state, user)?;
                let members = state.members.iter().map(|(&user, member)| (user, member.role)).collect();
                self.reply_after_acked(self.chat_lsn(chat), origin, Ok(Response::Members(members)));
                Ok(())
            }
            Request::GetChatDifference { chat, user, pts, limit } => {
                let state = self.chat(chat)?;
                self.require_member(state, user)?;
                let difference = self.chat_difference(state, user, pts, limit)?;
                self.reply_after_acked(self.chat_lsn(chat), origin, Ok(Response::ChatDifference(difference)));
                Ok(())
            }
            Request::ChatTops { user, chats } => {
                let mut dialogs = Vec::new();
                let mut barrier = Lsn::ZERO;
                for chat in chats {
                    let Some(state) = self.state.chats.get(&chat) else { continue };
                    let Some(member) = state.members.get(&user) else { continue };
                    barrier = barrier.max(self.chat_lsn(chat));
                    let top = state.messages.iter().rev().find(|m| !m.deleted);
                    dialogs.push(Dialog {
                        chat,
                        top_message: top.map_or(MessageId(0), |m| m.id),
                        top_date: top.map_or(state.last_date, |m| m.date),
                        read_inbox_max: member.read_inbox_max,
                        read_outbox_max: state.read_outbox_max,
                        unread: state.unread_after(user, member.read_inbox_max),
                        fanout_on_read: state.fanout_on_read,
                    });
                }
                self.reply_after_acked(barrier, origin, Ok(Response::Dialogs(dialogs)));
                Ok(())
            }
            Request::Typing { chat, user } => {
                let state = self.chat(chat)?;
                self.require_member(state, user)?;
                if !state.fanout_on_read {
                    let others: Vec<UserId> = state.members.keys().copied().filter(|&m| m != user).collect();
                    for (shard, to) in self.group_by_shard(&others) {
                        self.send_peer(shard, PeerMessage::Typing { chat, user, to });
                    }
                }
                self.reply_now(origin, Ok(Response::Done));
                Ok(())
            }
            Request::GetState { user } => {
                let state = self.box_state(user)?;
                self.reply_after_acked(self.box_lsn(user), origin, Ok(Response::State(state)));
                Ok(())
            }
            Request::GetDifference { user, pts, limit } => {
                let limit = limit.clamp(1, DIFFERENCE_LIMIT_MAX);
                let state = self.box_state(user)?;
                let update_box = &self.user(user)?.update_box;
                if pts > update_box.pts {
                    return Err(MessagingError::InvalidArgument("pts is ahead of the box"));
                }
                let oldest = update_box.entries.front().map_or(update_box.pts.next(), |entry| entry.pts);
                if pts.next() < oldest {
                    return Err(MessagingError::DifferenceTooLong(pts));
                }
                let skip = (pts.0 + 1).saturating_sub(oldest.0) as usize;
                let updates: Vec<Sequenced> = update_box.entries.iter().skip(skip).take(limit).cloned().collect();
                let slice = updates.last().is_some_and(|last| last.pts < update_box.pts);
                let state = match updates.last() {
                    Some(last) if slice => BoxState { pts: last.pts, date: last.date, ..state },
                    _ => state,
                };
                self.reply_after_acked(
                    self.box_lsn(user),
                    origin,
                    Ok(Response::BoxDifference { updates, state, slice }),
                );
                Ok(())
            }
            Request::GetDialogs { user } => {
                let update_box = &self.user(user)?.update_box;
                let dialogs = update_box
                    .dialogs
                    .iter()
                    .map(|(&chat, dialog)| Dialog {
                        chat,
                        top_message: dialog.top_message,
                        top_date: dialog.top_date,
                        read_inbox_max: dialog.read_inbox_max,
                        read_outbox_max: dialog.read_outbox_max,
                        unread: dialog.unread,
                        fanout_on_read: dialog.fanout_on_read,
                    })
                    .collect();
                self.reply_after_acked(self.box_lsn(user), origin, Ok(Response::Dialogs(dialogs)));
                Ok(())
            }
            Request::GetPresence { user } => {
                self.user(user)?;
                let (online, last_seen) = self.live.presence.get(&user).copied().unwrap_or((false, UnixMs(0)));
                self.reply_now(origin, Ok(Response::Presence { online, last_seen }));
                Ok(())
            }
            Request::Connect { user, session } => {
                if session.shard() != self.shard {
                    return Err(MessagingError::InvalidArgument("a session connects on its own shard"));
                }
                let home = self.owner(user.vshard());
                let message = PeerMessage::RegisterSession { session, user, origin };
                if home == self.shard {
                    self.peer(message, now, journal);
                } else {
                    self.send_peer(home, message);
                }
                Ok(())
            }
            Request::Disconnect { session } => {
                self.drop_hub_session(session);
                self.reply_now(origin, Ok(Response::Done));
                Ok(())
            }
            Request::SubscribeChat { session, chat } => {
                let user = self
                    .live
                    .hub
                    .get(&session)
                    .map(|s| s.user)
                    .ok_or(MessagingError::InvalidArgument("unknown session"))?;
                self.route(
                    self.owner(chat.vshard()),
                    PeerMessage::Subscribe { chat, user, session, origin },
                    now,
                    journal,
                );
                Ok(())
            }
            Request::UnsubscribeChat { session, chat } => {
                self.hub_unsubscribe(session, chat);
                self.reply_now(origin, Ok(Response::Done));
                Ok(())
            }
        }
    }

    fn sign_up(
        &mut self,
        origin: Origin,
        phone: String,
        first_name: String,
        last_name: String,
        now: UnixMs,
        journal: &mut dyn Journal,
    ) -> Result<()> {
        check_phone(&phone)?;
        check_name(&first_name, "first name", true)?;
        check_name(&last_name, "last name", false)?;
        let vshard = self.check_owned(key_vshard(&phone))?;
        if let Some(&user) = self.state.phones.get(&phone) {
            return Err(MessagingError::PhoneTaken(user));
        }
        let user = self.state.next_user_id(vshard);
        let lsn = self.commit_plain(Event::UserCreated { user, phone, first_name, last_name, date: now }, journal)?;
        self.box_lsn.insert(user, lsn);
        self.reply_after_acked(lsn, origin, Ok(Response::User(user)));
        Ok(())
    }

    fn open_private(
        &mut self,
        origin: Origin,
        user: UserId,
        peer: UserId,
        now: UnixMs,
        journal: &mut dyn Journal,
    ) -> Result<()> {
        if user == peer {
            return Err(MessagingError::InvalidArgument("a private chat needs two different users"));
        }
        let vshard = self.check_owned(pair_vshard(user, peer))?;
        let pair = self.state.pairs.get(&pair_key(user, peer));
        if let Some(chat) = pair.and_then(|pair| pair.chat) {
            self.reply_after_acked(self.chat_lsn(chat), origin, Ok(Response::Chat(chat)));
            return Ok(());
        }
        if pair.is_some_and(|pair| !pair.blocked_by.is_empty()) {
            return Err(MessagingError::Blocked);
        }
        let chat = self.state.next_chat_id(vshard);
        let event = Event::ChatCreated {
            chat,
            kind: ChatKind::Private,
            creator: user,
            title: String::new(),
            members: vec![user, peer],
            date: now,
        };
        let lsn = self.commit_plain(event, journal)?;
        self.chat_lsn.insert(chat, lsn);
        self.reply_after_acked(lsn, origin, Ok(Response::Chat(chat)));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn create_chat(
        &mut self,
        origin: Origin,
        kind: ChatKind,
        creator: UserId,
        title: String,
        members: Vec<UserId>,
        now: UnixMs,
        journal: &mut dyn Journal,
    ) -> Result<()> {
        if kind == ChatKind::Private {
            return Err(MessagingError::InvalidArgument("private chats are opened with open_private"));
        }
        if title.trim().is_empty() {
            return Err(MessagingError::InvalidArgument("a chat needs a title"));
        }
        check_length(&title, "title", TITLE_CHARS_MAX)?;
        if members.len() > CREATE_MEMBERS_MAX {
            return Err(MessagingError::TooLong {
                what: "member list",
                length: members.len(),
                limit: CREATE_MEMBERS_MAX,
            });
        }
        let vshard = self.check_owned(creator.vshard())?;
        self.user(creator)?;
        let mut all = vec![creator];
        for member in members {
            if !all.contains(&member) {
                all.push(member);
            }
        }
        let chat = self.state.next_chat_id(vshard);
        let event = Event::ChatCreated { chat, kind, creator, title, members: all, date: now };
        let lsn = self.commit(event, None, journal)?;
        self.reply_after_acked(lsn, origin, Ok(Response::Chat(chat)));
        Ok(())
    }

    fn member_change(
        &mut self,
        origin: Origin,
        chat: ChatId,
        user: UserId,
        change: MemberChange,
        now: UnixMs,
        journal: &mut dyn Journal,
    ) -> Result<()> {
        let lsn = self.commit_chat(chat, ChatChange::Member { user, change }, now, None, journal)?;
        self.reply_after_acked(lsn, origin, Ok(Response::Done));
        if matches!(change, MemberChange::Left | MemberChange::Removed { .. }) {
            let shards: Vec<ShardId> = self
                .live
                .subscribers
                .get(&chat)
                .map(|by_shard| {
                    by_shard.iter().filter(|(_, users)| users.contains_key(&user)).map(|(s, _)| *s).collect()
                })
                .unwrap_or_default();
            for shard in shards {
                self.route(shard, PeerMessage::DropSubscriber { chat, user }, now, journal);
            }
        }
        // Crossing FANOUT_MAX switches how the chat is synced; if the log has no room now, the
        // next membership change tries again.
        let state = self.chat(chat)?;
        let members = state.members.len();
        let switch = match (state.kind, state.fanout_on_read) {
            (ChatKind::Group, false) if members > FANOUT_MAX => Some(true),
            (ChatKind::Group, true) if members < FANOUT_BACK_UNDER => Some(false),
            _ => None,
        };
        if let Some(fanout_on_read) = switch {
            let _ = self.commit_chat(chat, ChatChange::SyncMode { fanout_on_read }, now, None, journal);
        }
        Ok(())
    }

    fn send(&mut self, origin: Origin, send: SendRequest, now: UnixMs, journal: &mut dyn Journal) -> Result<()> {
        let SendRequest { chat, sender, random_id, text, reply_to, forwarded_from } = send;
        check_text(&text)?;
        if text.is_empty() && forwarded_from.is_none() {
            return Err(MessagingError::InvalidArgument("a message needs text"));
        }
        if random_id.0 == 0 {
            return Err(MessagingError::InvalidArgument("random_id must not be 0"));
        }
        let state = self.chat(chat)?;
        self.require_member(state, sender)?;
        match state.kind {
            ChatKind::Channel => self.require_admin(state, sender)?,
            ChatKind::Private => {
                let peer = state.other_member(sender).unwrap_or(sender);
                if self.state.pairs.get(&pair_key(sender, peer)).is_some_and(|pair| !pair.blocked_by.is_empty()) {
                    return Err(MessagingError::Blocked);
                }
            }
            ChatKind::Group => {}
        }
        if let Some(reply_to) = reply_to {
            if reply_to.0 == 0 || reply_to > state.top_message() {
                return Err(MessagingError::UnknownMessage(chat, reply_to));
            }
        }
        let hash = content_hash(&text, reply_to, forwarded_from.map(|f| (f.chat, f.message)));
        if let Some(remembered) = state.random_ids.get(&(sender, random_id)) {
            if remembered.date.0 + IDEMPOTENCY_WINDOW_MS >= now.0 {
                if remembered.content_hash != hash {
                    return Err(MessagingError::RandomIdReused);
                }
                let chat_pts = state
                    .log
                    .iter()
                    .find(|entry| matches!(entry.entry.update, Update::NewMessage { id, .. } if id == remembered.id))
                    .map_or(Pts::ZERO, |entry| entry.entry.pts);
                let ack = SendAck {
                    chat,
                    id: remembered.id,
                    date: remembered.date,
                    chat_pts,
                    sender_pts: None,
                    duplicate: true,
                };
                // A retry of a send still committing waits for it: the chat's newest record is
                // at or after the original's.
                self.reply_after_acked(self.chat_lsn(chat), origin, Ok(Response::Sent(ack)));
                return Ok(());
            }
        }
        let date = now.max(state.last_date);
        let id = state.top_message().next();
        let message = Message {
            id,
            chat,
            sender,
            date,
            random_id,
            text,
            reply_to,
            forwarded_from,
            edit_date: None,
            deleted: false,
        };
        let chat_pts = state.pts.next();
        let ack = SendAck { chat, id, date, chat_pts, sender_pts: None, duplicate: false };
        let reply = SenderReply { origin, user: sender, ack };
        self.commit_chat(chat, ChatChange::NewMessage(message), date, Some(reply), journal)?;
        Ok(())
    }

    /// Appends and applies a chat event dated no earlier than the chat's last one.
    fn commit_chat(
        &mut self,
        chat: ChatId,
        change: ChatChange,
        now: UnixMs,
        sender: Option<SenderReply>,
        journal: &mut dyn Journal,
    ) -> Result<Lsn> {
        let state = self.chat(chat)?;
        let date = now.max(state.last_date);
        let event = Event::Chat { chat, pts: state.pts.next(), date, change };
        self.commit(event, sender, journal)
    }

    /// Appends an event with no box consequences; returns its LSN.
    fn commit_plain(&mut self, event: Event, journal: &mut dyn Journal) -> Result<Lsn> {
        self.commit(event, None, journal)
    }

    /// Appends `event` together with the box updates it causes on this shard, applies them,
    /// and queues its consequences: fan-out to other shards and live updates once durable,
    /// the sender's answer once acknowledged. Returns the event's LSN.
    fn commit(&mut self, event: Event, sender: Option<SenderReply>, journal: &mut dyn Journal) -> Result<Lsn> {
        let consequences = self.state.consequences(&event);
        let (chat, chat_pts, date) = event_key(&event);
        let mut local_events = Vec::new();
        let mut remote = Vec::new();
        let mut sender_pts = None;
        for (part, consequence) in consequences.into_iter().enumerate() {
            let mut local = Vec::new();
            for &user in &consequence.users {
                if self.owner(user.vshard()) == self.shard {
                    if let Some(state) = self.state.users.get(&user) {
                        let pts = state.update_box.pts.next();
                        if sender.is_some_and(|reply| reply.user == user) {
                            sender_pts = Some(pts);
                        }
                        local.push((user, pts));
                    }
                }
            }
            let targets = self.remote_targets(&consequence.users);
            if !local.is_empty() {
                local_events.push(Event::BoxAppended {
                    chat,
                    chat_pts,
                    date,
                    update: consequence.update.clone(),
                    users: local,
                });
            }
            if !targets.is_empty() {
                remote.push(((chat, chat_pts, part as u8), OutboxEntry { date, update: consequence.update, targets }));
            }
        }
        let vshard = event_vshard(&event);
        let mut payloads = Vec::with_capacity(1 + local_events.len());
        payloads.push((vshard, records::encode(&event)));
        for box_event in &local_events {
            let Event::BoxAppended { users, .. } = box_event else { unreachable!() };
            payloads.push((users[0].0.vshard(), records::encode(box_event)));
        }
        let refs: Vec<(RecordKind, VShard, &[u8])> =
            payloads.iter().map(|(vshard, bytes)| (EVENT_KIND, *vshard, bytes.as_slice())).collect();
        let first = journal.append_all(&refs).map_err(append_error)?;
        let last = Lsn(first.0 + payloads.len() as u64 - 1);
        self.bytes_since_checkpoint += payloads.iter().map(|(_, bytes)| bytes.len() as u64).sum::<u64>();
        self.last_lsn = last;

        // Applied only once appended: an append refused for lack of room changes nothing.
        let live_message = match &event {
            Event::Chat { change: ChatChange::NewMessage(message), .. } => Some(Arc::new(message.clone())),
            _ => None,
        };
        let on_read =
            matches!(&event, Event::Chat { chat, .. } if self.state.chats.get(chat).is_some_and(|c| c.fanout_on_read));
        self.state.apply(event);
        if chat != ChatId(0) {
            self.chat_lsn.insert(chat, first);
        }
        for box_event in local_events {
            let Event::BoxAppended { date, update, users, .. } = &box_event else { unreachable!() };
            for (user, _) in users {
                self.box_lsn.insert(*user, last);
            }
            let deferred = Deferred::BoxLive { date: *date, update: update.clone(), users: users.clone() };
            self.state.apply(box_event);
            self.after_durable.push_back((last, deferred));
        }
        if on_read && chat_pts != Pts::ZERO {
            if let Some(entry) = self.state.chats.get(&chat).and_then(|c| c.log.back()) {
                if entry.only_for.is_none() {
                    let deferred = Deferred::ChatLive { chat, update: entry.entry.clone(), message: live_message };
                    self.after_durable.push_back((first, deferred));
                }
            }
        }
        let mut reply = sender;
        for (key, entry) in remote {
            if let Some(sender) = reply {
                if entry
                    .targets
                    .get(&self.owner(sender.user.vshard()).0)
                    .is_some_and(|users| users.contains(&sender.user))
                {
                    self.outbox_replies.insert(key, sender);
                    reply = None;
                }
            }
            self.outbox.insert(key, entry);
            self.after_durable.push_back((first, Deferred::FanOut(key)));
        }
        if let Some(sender) = reply {
            // The sender's box is here (its pts is known) or the chat is fanned out on read.
            let ack = SendAck { sender_pts, ..sender.ack };
            self.after_acked.push_back((last, Deferred::Reply(sender.origin, Ok(Response::Sent(ack)))));
        }
        Ok(first)
    }

    /// Applies a fan-out from another shard to the boxes here. Hands it back when the log
    /// has no room, to be retried in order.
    fn fan_in(&mut self, fanout: FanOut, journal: &mut dyn Journal) -> Option<FanOut> {
        let mut users = Vec::new();
        for &user in &fanout.users {
            let Some(state) = self.state.users.get(&user) else { continue };
            let update_box = &state.update_box;
            if update_box.applied.get(&fanout.chat).is_some_and(|&applied| applied >= fanout.chat_pts) {
                continue;
            }
            users.push((user, update_box.pts.next()));
        }
        let confirm = PeerMessage::FanOutDone {
            chat: fanout.chat,
            chat_pts: fanout.chat_pts,
            part: fanout.part,
            from: self.shard,
        };
        if users.is_empty() {
            // Already held (a re-send after a restart): confirm once what holds it is durable.
            self.after_durable.push_back((self.last_lsn, Deferred::Peer(fanout.from, confirm)));
            if let Some(sender) = fanout.sender {
                self.after_acked
                    .push_back((self.last_lsn, Deferred::Reply(sender.origin, Ok(Response::Sent(sender.ack)))));
            }
            return None;
        }
        let sender_pts = fanout.sender.and_then(|s| users.iter().find(|(u, _)| *u == s.user).map(|(_, pts)| *pts));
        let event = Event::BoxAppended {
            chat: fanout.chat,
            chat_pts: fanout.chat_pts,
            date: fanout.date,
            update: fanout.update.clone(),
            users: users.clone(),
        };
        let bytes = records::encode(&event);
        let lsn = match journal.append_all(&[(EVENT_KIND, users[0].0.vshard(), &bytes)]) {
            Ok(lsn) => lsn,
            Err(_) => return Some(fanout),
        };
        self.bytes_since_checkpoint += bytes.len() as u64;
        self.last_lsn = lsn;
        for (user, _) in &users {
            self.box_lsn.insert(*user, lsn);
        }
        self.state.apply(event);
        if let Some(sender) = fanout.sender {
            let ack = SendAck { sender_pts, ..sender.ack };
            self.after_acked.push_back((lsn, Deferred::Reply(sender.origin, Ok(Response::Sent(ack)))));
        }
        self.after_durable.push_back((lsn, Deferred::BoxLive { date: fanout.date, update: fanout.update, users }));
        self.after_durable.push_back((lsn, Deferred::Peer(fanout.from, confirm)));
        None
    }

    fn pump_inbox(&mut self, journal: &mut dyn Journal) {
        while let Some(fanout) = self.inbox.pop_front() {
            if let Some(fanout) = self.fan_in(fanout, journal) {
                self.inbox.push_front(fanout);
                break;
            }
        }
    }

    fn release(&mut self, deferred: Deferred) {
        match deferred {
            Deferred::Reply(origin, result) => self.reply_now(origin, result),
            Deferred::Peer(shard, message) => self.send_peer(shard, message),
            Deferred::FanOut(key) => self.send_fanout(key),
            Deferred::BoxLive { date, update, users } => {
                for (user, pts) in users {
                    let sequenced = Sequenced { pts, date, update: update.clone() };
                    match self.live.sessions.get(&user) {
                        Some(sessions) if !sessions.is_empty() => {
                            for session in sessions.clone() {
                                self.deliver(session, LiveEvent::Box(sequenced.clone()));
                            }
                        }
                        _ => self.effects.offline.push((user, sequenced)),
                    }
                }
            }
            Deferred::ChatLive { chat, update, message } => {
                let shards: Vec<ShardId> =
                    self.live.subscribers.get(&chat).map(|s| s.keys().copied().collect()).unwrap_or_default();
                for shard in shards {
                    if shard == self.shard {
                        self.deliver_chat(chat, update.clone(), message.clone());
                    } else {
                        self.send_peer(
                            shard,
                            PeerMessage::ChatLive { chat, update: update.clone(), message: message.clone() },
                        );
                    }
                }
            }
        }
    }

    fn send_fanout(&mut self, key: (ChatId, Pts, u8)) {
        let Some(entry) = self.outbox.get(&key) else { return };
        let (chat, chat_pts, part) = key;
        let sends: Vec<(ShardId, FanOut)> = entry
            .targets
            .iter()
            .map(|(&shard, users)| {
                let shard = ShardId(shard);
                let sender = self.outbox_replies.get(&key).copied().filter(|s| users.contains(&s.user));
                let fanout = FanOut {
                    chat,
                    chat_pts,
                    part,
                    date: entry.date,
                    update: entry.update.clone(),
                    users: users.clone(),
                    from: self.shard,
                    sender,
                };
                (shard, fanout)
            })
            .collect();
        self.outbox_replies.remove(&key);
        for (shard, fanout) in sends {
            self.send_peer(shard, PeerMessage::FanOut(fanout));
        }
    }

    fn deliver(&mut self, session: SessionId, event: LiveEvent) {
        if session.shard() == self.shard {
            if self.live.hub.contains_key(&session) {
                self.effects.deliveries.push((session, event));
            }
            return;
        }
        // Batched per destination shard: consecutive deliveries to one shard share a message.
        if let Some((shard, PeerMessage::Deliver(events))) = self.effects.peers.last_mut() {
            if *shard == session.shard() {
                events.push((session, event));
                return;
            }
        }
        self.effects.peers.push((session.shard(), PeerMessage::Deliver(vec![(session, event)])));
    }

    fn deliver_chat(&mut self, chat: ChatId, update: Sequenced, message: Option<Arc<Message>>) {
        let Some(sessions) = self.live.hub_chats.get(&chat) else { return };
        let events = sessions
            .iter()
            .map(|&session| (session, LiveEvent::Chat { chat, update: update.clone(), message: message.clone() }));
        self.effects.deliveries.extend(events);
    }

    fn register_session(&mut self, session: SessionId, user: UserId, origin: Origin, now: UnixMs) {
        let result = self.box_state(user).and_then(|state| {
            let sessions = self.live.sessions.entry(user).or_default();
            if sessions.len() >= SESSIONS_PER_USER_MAX {
                return Err(MessagingError::TooLong {
                    what: "online sessions",
                    length: sessions.len(),
                    limit: SESSIONS_PER_USER_MAX,
                });
            }
            sessions.push(session);
            self.live.presence.insert(user, (true, now));
            Ok(Response::State(state))
        });
        let message = PeerMessage::SessionRegistered { session, user, origin, result };
        // Answered once the box state it reports is acknowledged, in order with live updates.
        let lsn = self.box_lsn(user);
        self.after_acked.push_back((lsn, Deferred::Peer(session.shard(), message)));
        if lsn <= self.acked {
            self.advance_replies_only();
        }
    }

    fn unregister_session(&mut self, session: SessionId, user: UserId, now: UnixMs) {
        if let Some(sessions) = self.live.sessions.get_mut(&user) {
            sessions.retain(|&s| s != session);
            if sessions.is_empty() {
                self.live.sessions.remove(&user);
                self.live.presence.insert(user, (false, now));
            }
        }
    }

    fn drop_hub_session(&mut self, session: SessionId) {
        let Some(hub) = self.live.hub.remove(&session) else { return };
        for chat in hub.chats {
            if let Some(sessions) = self.live.hub_chats.get_mut(&chat) {
                sessions.retain(|&s| s != session);
                if sessions.is_empty() {
                    self.live.hub_chats.remove(&chat);
                }
            }
            let message = PeerMessage::Unsubscribe { chat, user: hub.user, shard: self.shard };
            self.route_no_journal(self.owner(chat.vshard()), message);
        }
        let message = PeerMessage::UnregisterSession { session, user: hub.user };
        self.route_no_journal(self.owner(hub.user.vshard()), message);
    }

    fn subscribe_at_chat(&mut self, chat: ChatId, user: UserId, session: SessionId, origin: Origin) {
        let result = match self.state.chats.get(&chat) {
            None => Err(MessagingError::UnknownChat(chat)),
            Some(state) if !state.members.contains_key(&user) => Err(MessagingError::NotMember(user)),
            Some(state) => {
                let pts = state.pts;
                *self
                    .live
                    .subscribers
                    .entry(chat)
                    .or_default()
                    .entry(session.shard())
                    .or_default()
                    .entry(user)
                    .or_default() += 1;
                Ok(Response::Pts(pts))
            }
        };
        let message = PeerMessage::Subscribed { chat, session, origin, result };
        let lsn = self.chat_lsn(chat);
        self.after_acked.push_back((lsn, Deferred::Peer(session.shard(), message)));
        if lsn <= self.acked {
            self.advance_replies_only();
        }
    }

    fn subscribed(&mut self, chat: ChatId, session: SessionId, origin: Origin, result: MessagingResult<Response>) {
        if result.is_ok() {
            match self.live.hub.get_mut(&session) {
                Some(hub) => {
                    if !hub.chats.contains(&chat) {
                        hub.chats.push(chat);
                        self.live.hub_chats.entry(chat).or_default().push(session);
                    }
                }
                None => {
                    // The session went away meanwhile; give the count back.
                    self.effects.replies.push((origin, Err(MessagingError::InvalidArgument("unknown session"))));
                    return;
                }
            }
        }
        self.effects.replies.push((origin, result));
    }

    fn unsubscribe_at_chat(&mut self, chat: ChatId, user: UserId, shard: ShardId) {
        let Some(by_shard) = self.live.subscribers.get_mut(&chat) else { return };
        if let Some(users) = by_shard.get_mut(&shard) {
            if let Some(count) = users.get_mut(&user) {
                *count -= 1;
                if *count == 0 {
                    users.remove(&user);
                }
            }
            if users.is_empty() {
                by_shard.remove(&shard);
            }
        }
        if by_shard.is_empty() {
            self.live.subscribers.remove(&chat);
        }
    }

    fn hub_unsubscribe(&mut self, session: SessionId, chat: ChatId) {
        let Some(hub) = self.live.hub.get_mut(&session) else { return };
        if !hub.chats.contains(&chat) {
            return;
        }
        hub.chats.retain(|&c| c != chat);
        let user = hub.user;
        if let Some(sessions) = self.live.hub_chats.get_mut(&chat) {
            sessions.retain(|&s| s != session);
            if sessions.is_empty() {
                self.live.hub_chats.remove(&chat);
            }
        }
        self.route_no_journal(self.owner(chat.vshard()), PeerMessage::Unsubscribe { chat, user, shard: self.shard });
    }

    /// Releases replies whose LSN is already acknowledged, keeping their order.
    fn advance_replies_only(&mut self) {
        while self.after_acked.front().is_some_and(|(lsn, _)| *lsn <= self.acked) {
            let Some((_, deferred)) = self.after_acked.pop_front() else { break };
            self.release(deferred);
        }
    }

    fn reply_now(&mut self, origin: Origin, result: MessagingResult<Response>) {
        if origin.shard == self.shard {
            self.effects.replies.push((origin, result));
        } else {
            self.effects.peers.push((origin.shard, PeerMessage::Reply { origin, result }));
        }
    }

    /// Answers once everything the answer shows (up to `lsn`) is acknowledged: a client must
    /// never see a message, or hold a pts, that a crash could take back.
    fn reply_after_acked(&mut self, lsn: Lsn, origin: Origin, result: MessagingResult<Response>) {
        if lsn <= self.acked && self.after_acked.is_empty() {
            self.reply_now(origin, result);
        } else {
            self.after_acked.push_back((lsn, Deferred::Reply(origin, result)));
        }
    }

    fn send_peer(&mut self, shard: ShardId, message: PeerMessage) {
        self.route_no_journal(shard, message);
    }

    /// Sends `message` to `shard`'s core, handling it here when that is this shard.
    fn route(&mut self, shard: ShardId, message: PeerMessage, now: UnixMs, journal: &mut dyn Journal) {
        if shard == self.shard {
            self.peer(message, now, journal);
        } else {
            self.effects.peers.push((shard, message));
        }
    }

    /// As `route`, for messages that never append (session and subscription bookkeeping,
    /// replies, confirmations).
    fn route_no_journal(&mut self, shard: ShardId, message: PeerMessage) {
        let now = self.now;
        self.route(shard, message, now, &mut NoJournal);
    }

    fn owner(&self, vshard: VShard) -> ShardId {
        self.table.owner(vshard)
    }

    fn check_owned(&self, vshard: VShard) -> Result<VShard> {
        if self.owner(vshard) != self.shard {
            return Err(MessagingError::InvalidArgument("request sent to a shard that does not own its key"));
        }
        Ok(vshard)
    }

    fn remote_targets(&self, users: &[UserId]) -> BTreeMap<u16, Vec<UserId>> {
        let mut targets: BTreeMap<u16, Vec<UserId>> = BTreeMap::new();
        for &user in users {
            let shard = self.owner(user.vshard());
            if shard != self.shard {
                targets.entry(shard.0).or_default().push(user);
            }
        }
        targets
    }

    fn group_by_shard(&self, users: &[UserId]) -> BTreeMap<ShardId, Vec<UserId>> {
        let mut groups: BTreeMap<ShardId, Vec<UserId>> = BTreeMap::new();
        for &user in users {
            groups.entry(self.owner(user.vshard())).or_default().push(user);
        }
        groups
    }

    fn user(&self, user: UserId) -> Result<&User> {
        if self.owner(user.vshard()) != self.shard {
            return Err(MessagingError::InvalidArgument("request sent to a shard that does not own its user"));
        }
        self.state.users.get(&user).ok_or(MessagingError::UnknownUser(user))
    }

    fn chat(&self, chat: ChatId) -> Result<&Chat> {
        if self.owner(chat.vshard()) != self.shard {
            return Err(MessagingError::InvalidArgument("request sent to a shard that does not own its chat"));
        }
        self.state.chats.get(&chat).ok_or(MessagingError::UnknownChat(chat))
    }

    fn require_member(&self, chat: &Chat, user: UserId) -> Result<()> {
        chat.role(user).map(|_| ()).ok_or(MessagingError::NotMember(user))
    }

    fn require_admin(&self, chat: &Chat, user: UserId) -> Result<()> {
        self.require_member(chat, user)?;
        if chat.is_admin(user) {
            Ok(())
        } else {
            Err(MessagingError::NotAdmin)
        }
    }

    fn chat_lsn(&self, chat: ChatId) -> Lsn {
        self.chat_lsn.get(&chat).copied().unwrap_or(Lsn::ZERO)
    }

    fn box_lsn(&self, user: UserId) -> Lsn {
        self.box_lsn.get(&user).copied().unwrap_or(Lsn::ZERO)
    }

    fn box_state(&self, user: UserId) -> Result<BoxState> {
        let update_box = &self.user(user)?.update_box;
        let unread = update_box.dialogs.values().filter(|d| !d.fanout_on_read).map(|d| d.unread).sum();
        Ok(BoxState { pts: update_box.pts, date: update_box.date, unread, epoch: self.epoch })
    }

    fn chat_info(&self, chat: &Chat) -> ChatInfo {
        let private_pair = (chat.kind == ChatKind::Private).then(|| {
            let mut members = chat.members.keys().copied();
            let first = members.next().unwrap_or_default();
            (first, members.next().unwrap_or(first))
        });
        ChatInfo {
            id: chat.id,
            kind: chat.kind,
            title: chat.title.clone(),
            members: chat.members.len(),
            pts: chat.pts,
            top_message: chat.top_message(),
            pinned: chat.pinned,
            fanout_on_read: chat.fanout_on_read,
            epoch: self.epoch,
            private_pair,
        }
    }

    fn chat_difference(&self, chat: &Chat, user: UserId, pts: Pts, limit: usize) -> Result<ChatDifference> {
        let limit = limit.clamp(1, DIFFERENCE_LIMIT_MAX);
        if pts > chat.pts {
            return Err(MessagingError::InvalidArgument("pts is ahead of the chat"));
        }
        let oldest = chat.log.front().map_or(chat.pts.next(), |entry| entry.entry.pts);
        if pts.next() < oldest {
            return Err(MessagingError::DifferenceTooLong(pts));
        }
        let skip = (pts.0 + 1).saturating_sub(oldest.0) as usize;
        let window: Vec<_> = chat.log.iter().skip(skip).take(limit).collect();
        let last_pts = window.last().map_or(pts, |entry| entry.entry.pts);
        let updates: Vec<Sequenced> = window
            .iter()
            .filter(|entry| entry.only_for.is_none_or(|only| only == user))
            .map(|entry| entry.entry.clone())
            .collect();
        let mut messages: Vec<Message> = Vec::new();
        for update in &updates {
            if let Some(id) = update.update.message() {
                if let Some(message) = chat.visible(user, id) {
                    if messages.last().is_none_or(|last| last.id != id) {
                        messages.push(message.clone());
                    }
                }
            }
        }
        Ok(ChatDifference { updates, messages, pts: last_pts, epoch: self.epoch, slice: last_pts < chat.pts })
    }
}

/// The journal of steps that must not append: using it is a bug.
struct NoJournal;

impl Journal for NoJournal {
    fn append_all(&mut self, _: &[(RecordKind, VShard, &[u8])]) -> std::result::Result<Lsn, AppendError> {
        unreachable!("session bookkeeping and replies never append")
    }
}

fn history(chat: &Chat, user: UserId, page: HistoryPage) -> Result<Vec<Message>> {
    if page.limit == 0 || page.limit > HISTORY_PAGE_MAX {
        return Err(MessagingError::InvalidArgument("history page limit must be 1 to 100"));
    }
    let top = chat.top_message();
    // Newest first, strictly below offset_id and max_id (when set), strictly above min_id.
    let mut below = MessageId(top.0 + 1);
    if page.offset_id.0 != 0 {
        below = below.min(page.offset_id);
    }
    if page.max_id.0 != 0 {
        below = below.min(page.max_id);
    }
    let hidden = chat.members.get(&user).map(|member| &member.hidden);
    let messages = chat.messages[..(below.0.saturating_sub(1) as usize).min(chat.messages.len())]
        .iter()
        .rev()
        .take_while(|message| message.id > page.min_id)
        .filter(|message| !message.deleted && hidden.is_none_or(|hidden| !hidden.contains(&message.id)))
        .take(page.limit)
        .cloned()
        .collect();
    Ok(messages)
}

fn event_key(event: &Event) -> (ChatId, Pts, UnixMs) {
    match event {
        Event::Chat { chat, pts, date, .. } => (*chat, *pts, *date),
        Event::ChatCreated { chat, date, kind, .. } => {
            (*chat, if *kind == ChatKind::Private { Pts::ZERO } else { Pts(1) }, *date)
        }
        Event::UserCreated { date, .. } => (ChatId(0), Pts::ZERO, *date),
        _ => (ChatId(0), Pts::ZERO, UnixMs(0)),
    }
}

fn event_vshard(event: &Event) -> VShard {
    match event {
        Event::UserCreated { user, .. } | Event::NameSet { user, .. } | Event::UsernameSet { user, .. } => {
            user.vshard()
        }
        Event::UsernameClaimed { username, .. } | Event::UsernameReleased { username, .. } => key_vshard(username),
        Event::PairBlocked { by, peer, .. } => pair_vshard(*by, *peer),
        Event::ChatCreated { chat, .. } | Event::Chat { chat, .. } => chat.vshard(),
        Event::BoxAppended { users, chat, .. } => users.first().map_or(chat.vshard(), |(user, _)| user.vshard()),
    }
}

fn append_error(error: AppendError) -> MessagingError {
    match error {
        AppendError::Backpressure => MessagingError::Overloaded,
        other => MessagingError::Storage(other.to_string()),
    }
}

fn check_length(value: &str, what: &'static str, limit: usize) -> Result<()> {
    let length = value.chars().count();
    if length > limit {
        return Err(MessagingError::TooLong { what, length, limit });
    }
    Ok(())
}

fn check_text(text: &str) -> Result<()> {
    check_length(text, "message text", TEXT_CHARS_MAX)
}

fn check_name(name: &str, what: &'static str, required: bool) -> Result<()> {
    if required && name.trim().is_empty() {
        return Err(MessagingError::InvalidArgument("a first name is required"));
    }
    if name.chars().any(char::is_control) {
        return Err(MessagingError::InvalidArgument("names must not hold control characters"));
    }
    check_length(name, what, NAME_CHARS_MAX)
}

fn check_phone(phone: &str) -> Result<()> {
    let digits = phone.strip_prefix('+').ok_or(MessagingError::InvalidArgument("a phone number starts with +"))?;
    let valid = (PHONE_DIGITS_MIN..=PHONE_DIGITS_MAX).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if !valid {
        return Err(MessagingError::InvalidArgument("a phone number is + and 7 to 15 digits (E.164)"));
    }
    Ok(())
}

/// Usernames compare case-insensitively: they are stored lower-case.
pub fn normalize_username(username: &str) -> Result<String> {
    let name = username.strip_prefix('@').unwrap_or(username).to_ascii_lowercase();
    let valid = (USERNAME_CHARS_MIN..=USERNAME_CHARS_MAX).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && name.as_bytes()[0].is_ascii_lowercase();
    if !valid {
        return Err(MessagingError::InvalidArgument("a username is 5 to 32 of a-z, 0-9 and _, starting with a letter"));
    }
    Ok(name)
}
