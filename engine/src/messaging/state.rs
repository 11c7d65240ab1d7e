//! A shard's durable messaging state and the one function that changes it, `State::apply`,
//! used alike for a request's events right after they are appended and for events replayed
//! from the log. `State::consequences` says which boxes an event reaches, computed from the
//! state before the event: the membership as of each record (DESIGN §3).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use xxhash_rust::xxh3::Xxh3DefaultBuilder;

use crate::ids::VShard;
use crate::messaging::chunked::Chunked;
use crate::messaging::limits::{
    BOX_HISTORY_MAX, CHAT_LOG_HISTORY_MAX, HISTORY_AGE_MS_MAX, IDEMPOTENCY_ENTRIES_MAX, IDEMPOTENCY_FORGET_PER_EVENT,
    IDEMPOTENCY_WINDOW_MS,
};
use crate::messaging::media::MediaReleases;
use crate::messaging::push::PushState;
use crate::messaging::records::{ChatChange, Event};
use crate::messaging::types::{
    ArchivedApart, AuthorizationId, ChatId, ChatKind, DeletedMessages, MemberChange, Message, MessageId, Pts, RandomId,
    Role, Sequenced, UnixMs, Update, UserId, UserProfile, SECRET_HASH_BYTES,
};

/// Deterministic hashing: the same events build the same maps on every run, so a simulation
/// seed replays exactly.
pub type Map<K, V> = HashMap<K, V, Xxh3DefaultBuilder>;

#[derive(Debug, Default)]
pub struct State {
    pub users: Map<UserId, User>,
    pub phones: Map<String, UserId>,
    pub usernames: Map<String, UserId>,
    /// Private chat index and blocks, by (lower user id, higher user id).
    pub pairs: Map<(UserId, UserId), Pair>,
    pub chats: Map<ChatId, Chat>,
    /// Highest sequence allocated per vshard, for user and chat ids.
    pub user_sequences: Map<u16, u64>,
    pub chat_sequences: Map<u16, u64>,
    /// Remembered random_ids, oldest first, for expiry and the memory cap. Up to millions of
    /// entries: in chunks, since a vector of them doubling in one step stalled the shard for
    /// 88 and 153 ms of page faults.
    pub idempotency_order: Chunked<IdempotencyEntry>,
    /// Each user's live login authorizations, oldest first; a revoked one is removed. Kept
    /// beside `users` rather than in `User` so a checkpoint stores them as pieces of their own
    /// and one written before authorizations existed still restores.
    pub authorizations: Map<UserId, Vec<Authorization>>,
    /// Which user holds each live authorization. Derived from `authorizations`: a checkpoint
    /// does not store it, restore rebuilds it.
    pub authorization_owners: Map<AuthorizationId, UserId>,
    /// Highest sequence allocated per vshard for authorization ids, revoked ones included, so
    /// an id is never given out twice.
    pub authorization_sequences: Map<u16, u64>,
    /// Devices, notification settings and the push outbox (see `push.rs`).
    pub push: PushState,
    /// Media references to give back (see `media.rs`).
    pub media_releases: MediaReleases,
}

#[derive(Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Authorization {
    pub id: AuthorizationId,
    pub user: UserId,
    pub secret_hash: [u8; SECRET_HASH_BYTES],
    pub device: String,
    pub created: UnixMs,
}

impl std::fmt::Debug for Authorization {
    // The hash stays out of logs and panic messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorization")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("device", &self.device)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct User {
    pub profile: UserProfile,
    pub update_box: UpdateBox,
}

#[derive(Debug, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct UpdateBox {
    pub pts: Pts,
    pub date: UnixMs,
    /// The newest updates, oldest first; bounded by count and age. Checkpoints write them in
    /// a piece of their own (`ArchivedApart`).
    #[rkyv(with = ArchivedApart)]
    pub entries: Chunked<Sequenced>,
    /// Per chat, the highest chat pts applied: fan-out is at-least-once, boxes make it once.
    pub applied: Map<ChatId, Pts>,
    pub dialogs: Map<ChatId, DialogState>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct DialogState {
    pub top_message: MessageId,
    pub top_date: UnixMs,
    pub read_inbox_max: MessageId,
    pub read_outbox_max: MessageId,
    pub unread: u64,
    pub fanout_on_read: bool,
}

#[derive(Debug, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Pair {
    pub chat: Option<ChatId>,
    /// Which of the two has blocked the other.
    pub blocked_by: Vec<UserId>,
}

#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Chat {
    pub id: ChatId,
    pub kind: ChatKind,
    pub title: String,
    pub creator: UserId,
    pub members: BTreeMap<UserId, Member>,
    /// Message `id` is at index `id - 1`. Checkpoints write them in pieces of their own
    /// (`ArchivedApart`).
    #[rkyv(with = ArchivedApart)]
    pub messages: Chunked<Message>,
    /// The chat's own sequence: one per chat event, private ones included. It keys the
    /// event's fan-out (boxes apply each (chat, pts) once) and is never shown to clients.
    pub pts: Pts,
    pub last_date: UnixMs,
    pub pinned: Option<MessageId>,
    pub fanout_on_read: bool,
    /// The highest message id some member other than its sender has read.
    pub read_outbox_max: MessageId,
    /// The newest events, oldest first, for `get_chat_difference`; bounded by count and age.
    /// Checkpoints write them in a piece of their own (`ArchivedApart`).
    #[rkyv(with = ArchivedApart)]
    pub log: Chunked<ChatLogEntry>,
    pub random_ids: Map<(UserId, RandomId), Remembered>,
    /// Live (not deleted) media messages by their idempotency key, which keys their file
    /// reference. Derived from `messages`: not archived, rebuilt on restore.
    #[rkyv(with = rkyv::with::Skip)]
    pub media_index: Map<(UserId, RandomId), MessageId>,
    /// The pts clients see: one per event every member may see (`log`, `get_chat_difference`,
    /// live chat updates), dense. An event for one member only (their read marker, their delete
    /// for me, their join or leave of a channel) takes none: it reaches that member's box, so a
    /// channel's readers neither open gaps in its sequence nor push posts out of its log.
    /// Outside the chat's archive, so older checkpoints still validate: a checkpoint stores it
    /// in a piece of its own when it differs from `pts`.
    #[rkyv(with = rkyv::with::Skip)]
    pub public_pts: Pts,
}

#[derive(Clone, Debug, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Member {
    pub role: Role,
    pub read_inbox_max: MessageId,
    /// Messages this member deleted for themselves only.
    pub hidden: BTreeSet<MessageId>,
}

#[derive(Clone, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ChatLogEntry {
    pub entry: Sequenced,
    /// An event only one member may see (their read marker, their delete-for-me). Only in
    /// logs restored from checkpoints before version 6: since then such events take no public
    /// pts and stay out of the log.
    pub only_for: Option<UserId>,
}

#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Remembered {
    pub id: MessageId,
    pub content_hash: u64,
    pub date: UnixMs,
}

/// One box update caused by a chat event, and the users whose boxes get it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consequence {
    pub update: Update,
    pub users: Vec<UserId>,
}

impl Chat {
    /// A group of no members and no messages, for tests.
    #[cfg(test)]
    pub(crate) fn empty(id: ChatId) -> Chat {
        Chat {
            id,
            kind: ChatKind::Group,
            title: String::new(),
            creator: UserId(1),
            members: BTreeMap::new(),
            messages: Chunked::new(),
            pts: Pts::ZERO,
            last_date: UnixMs(0),
            pinned: None,
            fanout_on_read: false,
            read_outbox_max: MessageId(0),
            log: Chunked::new(),
            random_ids: Map::default(),
            media_index: Map::default(),
            public_pts: Pts::ZERO,
        }
    }

    pub fn message(&self, id: MessageId) -> Option<&Message> {
        (id.0 >= 1).then(|| self.messages.get(id.0 as usize - 1)).flatten()
    }

    pub fn top_message(&self) -> MessageId {
        MessageId(self.messages.len() as u64)
    }

    pub fn role(&self, user: UserId) -> Option<Role> {
        self.members.get(&user).map(|member| member.role)
    }

    pub fn is_admin(&self, user: UserId) -> bool {
        matches!(self.role(user), Some(Role::Admin | Role::Creator))
    }

    /// Messages after `after` that `user` did not send and that still exist: their unread count.
    pub fn unread_after(&self, user: UserId, after: MessageId) -> u64 {
        let hidden = self.members.get(&user).map(|member| &member.hidden);
        self.messages
            .iter()
            .skip(after.0 as usize)
            .filter(|message| message.sender != user && !message.deleted)
            .filter(|message| hidden.is_none_or(|hidden| !hidden.contains(&message.id)))
            .count() as u64
    }

    /// Whether `user` may see message `id` (it exists, is not deleted and not hidden for them).
    pub fn visible(&self, user: UserId, id: MessageId) -> Option<&Message> {
        let message = self.message(id)?;
        let hidden = self.members.get(&user).is_some_and(|member| member.hidden.contains(&id));
        (!message.deleted && !hidden).then_some(message)
    }

    pub fn other_member(&self, user: UserId) -> Option<UserId> {
        self.members.keys().copied().find(|&member| member != user)
    }
}

/// A content fingerprint of a send, to tell a retry from a reuse of its random_id. A message
/// without media hashes as it did before media existed (remembered hashes are in checkpoints).
pub fn content_hash(
    text: &str,
    reply_to: Option<MessageId>,
    forwarded: Option<(ChatId, MessageId)>,
    media_file: Option<u64>,
) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(text.as_bytes());
    hasher.update(&reply_to.map_or(0, |id| id.0).to_le_bytes());
    let (chat, message) = forwarded.map_or((0, 0), |(chat, message)| (chat.0, message.0));
    hasher.update(&chat.to_le_bytes());
    hasher.update(&message.to_le_bytes());
    if let Some(file) = media_file {
        hasher.update(b"media");
        hasher.update(&file.to_le_bytes());
    }
    hasher.digest()
}

impl Chat {
    /// Rebuilds `media_index` from the messages (for a chat put together from its parts, as a
    /// checkpoint's chat as it was is; a restore builds it from the media pieces instead).
    pub fn index_media(&mut self) {
        self.media_index = self
            .messages
            .iter()
            .filter(|message| !message.deleted && message.media.is_some())
            .map(|message| ((message.sender, message.random_id), message.id))
            .collect();
    }
}

pub fn pair_key(a: UserId, b: UserId) -> (UserId, UserId) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

impl State {
    pub fn next_user_id(&self, vshard: VShard) -> UserId {
        UserId::compose(self.user_sequences.get(&vshard.index()).copied().unwrap_or(0) + 1, vshard)
    }

    pub fn next_chat_id(&self, vshard: VShard) -> ChatId {
        ChatId::compose(self.chat_sequences.get(&vshard.index()).copied().unwrap_or(0) + 1, vshard)
    }

    pub fn next_authorization_id(&self, vshard: VShard) -> AuthorizationId {
        AuthorizationId::compose(self.authorization_sequences.get(&vshard.index()).copied().unwrap_or(0) + 1, vshard)
    }

    /// The live authorization `id`.
    pub fn authorization(&self, id: AuthorizationId) -> Option<&Authorization> {
        let user = self.authorization_owners.get(&id)?;
        self.authorizations.get(user)?.iter().find(|authorization| authorization.id == id)
    }

    /// The box updates `event` causes, from the state before it is applied.
    pub fn consequences(&self, event: &Event) -> Vec<Consequence> {
        match event {
            Event::ChatCreated { chat, kind, creator, members, .. } if *kind != ChatKind::Private => {
                let change = MemberChange::Added { by: *creator };
                let fanout_on_read = *kind == ChatKind::Channel;
                members
                    .iter()
                    .map(|&user| Consequence {
                        update: Update::ChatMember { chat: *chat, user, change, fanout_on_read },
                        users: vec![user],
                    })
                    .collect()
            }
            Event::Chat { chat, change, date, .. } => match self.chats.get(chat) {
                Some(state) => chat_consequences(state, change, *date),
                None => Vec::new(),
            },
            _ => Vec::new(),
        }
    }

    /// Applies one event. Events are validated before they are appended, so an event that
    /// does not fit the state is a bug (or a log from another program): it panics rather than
    /// build state on a broken invariant.
    pub fn apply(&mut self, event: Event) {
        match event {
            Event::UserCreated { user, phone, first_name, last_name, date } => {
                let sequence = self.user_sequences.entry(user.vshard().index()).or_default();
                *sequence = (*sequence).max(user.0 >> 12);
                self.phones.insert(phone.clone(), user);
                let profile = UserProfile { id: user, phone, first_name, last_name, username: None, created: date };
                let previous = self.users.insert(user, User { profile, update_box: UpdateBox::default() });
                assert!(previous.is_none(), "user {user} created twice");
            }
            Event::NameSet { user, first_name, last_name } => {
                if let Some(state) = self.users.get_mut(&user) {
                    state.profile.first_name = first_name;
                    state.profile.last_name = last_name;
                }
            }
            Event::UsernameClaimed { username, user } => {
                self.usernames.insert(username, user);
            }
            Event::UsernameReleased { username, user } => {
                if self.usernames.get(&username) == Some(&user) {
                    self.usernames.remove(&username);
                }
            }
            Event::UsernameSet { user, username } => {
                if let Some(state) = self.users.get_mut(&user) {
                    state.profile.username = username;
                }
            }
            Event::PairBlocked { by, peer, blocked } => {
                let pair = self.pairs.entry(pair_key(by, peer)).or_default();
                pair.blocked_by.retain(|&user| user != by);
                if blocked {
                    pair.blocked_by.push(by);
                }
            }
            Event::ChatCreated { chat, kind, creator, title, members, date } => {
                let sequence = self.chat_sequences.entry(chat.vshard().index()).or_default();
                *sequence = (*sequence).max(chat.0 >> 12);
                let mut state = Chat {
                    id: chat,
                    kind,
                    title,
                    creator,
                    members: BTreeMap::new(),
                    messages: Chunked::new(),
                    pts: Pts::ZERO,
                    last_date: date,
                    pinned: None,
                    fanout_on_read: kind == ChatKind::Channel,
                    read_outbox_max: MessageId(0),
                    log: Chunked::new(),
                    random_ids: Map::default(),
                    media_index: Map::default(),
                    public_pts: Pts::ZERO,
                };
                for &user in &members {
                    let role = if user == creator && kind != ChatKind::Private { Role::Creator } else { Role::Member };
                    state.members.insert(user, Member { role, ..Member::default() });
                }
                if kind == ChatKind::Private {
                    assert_eq!(members.len(), 2, "a private chat has two members");
                    self.pairs.entry(pair_key(members[0], members[1])).or_default().chat = Some(chat);
                } else {
                    // Creation is the chat's first event: each member's box hears of it.
                    state.pts = Pts(1);
                    let fanout_on_read = state.fanout_on_read;
                    let update =
                        Update::ChatMember { chat, user: creator, change: MemberChange::Joined, fanout_on_read };
                    push_log(&mut state, date, update);
                }
                let previous = self.chats.insert(chat, state);
                assert!(previous.is_none(), "chat {chat} created twice");
            }
            Event::Chat { chat, pts, date, change } => {
                let Some(state) = self.chats.get_mut(&chat) else { panic!("event for unknown chat {chat}") };
                assert_eq!(pts, state.pts.next(), "chat {chat} pts must stay dense");
                assert!(date >= state.last_date, "chat {chat} dates must not go backwards");
                state.pts = pts;
                state.last_date = date;
                apply_chat_change(state, &mut self.idempotency_order, &mut self.media_releases, date, change);
            }
            Event::BoxAppended { chat, chat_pts, date, update, users } => {
                for (user, pts) in users {
                    let Some(state) = self.users.get_mut(&user) else { continue };
                    apply_box(&mut state.update_box, user, chat, chat_pts, pts, date, &update);
                    if let Update::ChatMember {
                        user: member,
                        change: MemberChange::Left | MemberChange::Removed { .. },
                        ..
                    } = update
                    {
                        if member == user {
                            self.push.forget_chat(user, chat);
                        }
                    }
                }
            }
            Event::AuthorizationCreated { id, user, secret_hash, device, date } => {
                let sequence = self.authorization_sequences.entry(id.vshard().index()).or_default();
                *sequence = (*sequence).max(id.0 >> 12);
                let previous = self.authorization_owners.insert(id, user);
                assert!(previous.is_none(), "authorization {id} created twice");
                let authorization = Authorization { id, user, secret_hash, device, created: date };
                self.authorizations.entry(user).or_default().push(authorization);
            }
            Event::AuthorizationRevoked { id, user } => {
                // Checked before it was appended; applying it twice changes nothing.
                if self.authorization_owners.get(&id) == Some(&user) {
                    self.authorization_owners.remove(&id);
                }
                if let Some(authorizations) = self.authorizations.get_mut(&user) {
                    authorizations.retain(|authorization| authorization.id != id);
                    if authorizations.is_empty() {
                        self.authorizations.remove(&user);
                    }
                }
            }
            Event::DeviceRegistered { user, device } => self.push.register(user, device),
            Event::DeviceUnregistered { user, kind, token } => self.push.unregister(user, kind, &token),
            Event::NotifySettingsSet { user, chat, settings } => self.push.set_settings(user, chat, settings),
            Event::PushQueued { jobs } => self.push.queue(jobs),
            Event::PushesDone { sequences } => self.push.finish(&sequences),
            Event::MediaReleasesDone { sequences } => self.media_releases.finish(&sequences),
        }
    }
}

/// Whether two secret hashes are equal, in time that does not depend on where they differ:
/// every byte is compared, with no early exit, so timing a wrong guess says nothing about
/// how much of it was right.
pub fn secret_hash_matches(stored: &[u8; SECRET_HASH_BYTES], given: &[u8; SECRET_HASH_BYTES]) -> bool {
    let difference = stored.iter().zip(given).fold(0u8, |difference, (a, b)| difference | (a ^ b));
    // Keeps the compiler from turning the fold back into a comparison that stops early.
    std::hint::black_box(difference) == 0
}

fn chat_consequences(chat: &Chat, change: &ChatChange, date: UnixMs) -> Vec<Consequence> {
    let id = chat.id;
    let everyone = || if chat.fanout_on_read { Vec::new() } else { chat.members.keys().copied().collect() };
    let one = |update: Update, users: Vec<UserId>| vec![Consequence { update, users }];
    match change {
        ChatChange::NewMessage(message) => {
            one(Update::NewMessage { chat: id, id: message.id, sender: message.sender, date: message.date }, everyone())
        }
        ChatChange::NewMediaMessage { message, .. } => {
            one(Update::NewMessage { chat: id, id: message.id, sender: message.sender, date: message.date }, everyone())
        }
        ChatChange::Edit { id: message, .. } => {
            one(Update::EditMessage { chat: id, id: *message, edit_date: date }, everyone())
        }
        ChatChange::Delete { ids } => one(deleted_for_everyone(chat, ids), everyone()),
        ChatChange::DeleteForMe { user, ids } => {
            one(Update::DeleteMessages { chat: id, ids: ids.clone() }, vec![*user])
        }
        ChatChange::Pin { id: message } => one(Update::PinMessage { chat: id, id: *message }, everyone()),
        ChatChange::Member { user, change } => {
            let mut users = everyone();
            if !users.contains(user) {
                users.push(*user);
            }
            let update =
                Update::ChatMember { chat: id, user: *user, change: *change, fanout_on_read: chat.fanout_on_read };
            one(update, users)
        }
        ChatChange::Read { user, max_id } => {
            let unread = chat.unread_after(*user, *max_id);
            let mut consequences = one(Update::ReadInbox { chat: id, max_id: *max_id, unread }, vec![*user]);
            // The senders learn their messages were read (for a group: by someone).
            let outbox_max = (*max_id).max(chat.read_outbox_max);
            if !chat.fanout_on_read && outbox_max > chat.read_outbox_max {
                let others: Vec<UserId> = chat.members.keys().copied().filter(|member| member != user).collect();
                if !others.is_empty() {
                    consequences.push(Consequence {
                        update: Update::ReadOutbox { chat: id, max_id: outbox_max },
                        users: others,
                    });
                }
            }
            consequences
        }
        ChatChange::SyncMode { fanout_on_read } => one(
            Update::ChatSyncMode { chat: id, fanout_on_read: *fanout_on_read },
            chat.members.keys().copied().collect(),
        ),
    }
}

fn append_message(chat: &mut Chat, order: &mut Chunked<IdempotencyEntry>, date: UnixMs, message: Message) {
    let id = chat.id;
    assert_eq!(message.id, chat.top_message().next(), "chat {id} message ids must stay dense");
    let hash = content_hash(
        &message.text,
        message.reply_to,
        message.forwarded_from.as_ref().map(|f| (f.chat, f.message)),
        message.media.as_ref().map(|media| media.file),
    );
    if message.random_id.0 != 0 {
        let remembered = Remembered { id: message.id, content_hash: hash, date };
        chat.random_ids.insert((message.sender, message.random_id), remembered);
        order.push_back((date, id, message.sender, message.random_id));
    }
    if message.media.is_some() {
        chat.media_index.insert((message.sender, message.random_id), message.id);
    }
    let update = Update::NewMessage { chat: id, id: message.id, sender: message.sender, date };
    chat.messages.push_back(message);
    push_log(chat, date, update);
}

fn apply_chat_change(
    chat: &mut Chat,
    order: &mut Chunked<IdempotencyEntry>,
    releases: &mut MediaReleases,
    date: UnixMs,
    change: ChatChange,
) {
    let id = chat.id;
    match change {
        ChatChange::NewMessage(message) => append_message(chat, order, date, message),
        ChatChange::NewMediaMessage { message, media } => {
            let mut message = *message;
            message.media = Some(media);
            append_message(chat, order, date, message);
        }
        ChatChange::Edit { id: message, text } => {
            let Some(state) = chat.messages.get_mut(message.0 as usize - 1) else { panic!("edit of unknown message") };
            state.text = text;
            state.edit_date = Some(date);
            push_log(chat, date, Update::EditMessage { chat: id, id: message, edit_date: date });
        }
        ChatChange::Delete { ids } => {
            let update = deleted_for_everyone(chat, &ids);
            for message in &ids {
                if let Some(state) = chat.messages.get_mut(message.0 as usize - 1) {
                    // The tombstone gives the file reference back, through the outbox.
                    if let Some(media) = state.media.take().filter(|_| !state.deleted) {
                        releases.queue(media.file, id, state.sender, state.random_id);
                        chat.media_index.remove(&(state.sender, state.random_id));
                    }
                    state.deleted = true;
                    state.text = String::new();
                    state.reply_to = None;
                    state.forwarded_from = None;
                }
                if chat.pinned == Some(*message) {
                    chat.pinned = None;
                }
            }
            push_log(chat, date, update);
        }
        ChatChange::DeleteForMe { user, ids } => {
            if let Some(member) = chat.members.get_mut(&user) {
                member.hidden.extend(ids.iter().copied());
            }
            // For this member only: it reaches their box, not the chat's log.
        }
        ChatChange::Pin { id: message } => {
            chat.pinned = message;
            push_log(chat, date, Update::PinMessage { chat: id, id: message });
        }
        ChatChange::Member { user, change } => {
            match change {
                MemberChange::Joined | MemberChange::Added { .. } => {
                    chat.members.entry(user).or_default();
                }
                MemberChange::Left | MemberChange::Removed { .. } => {
                    chat.members.remove(&user);
                }
                MemberChange::Promoted { .. } => {
                    if let Some(member) = chat.members.get_mut(&user) {
                        member.role = Role::Admin;
                    }
                }
            }
            // A channel's subscriber list is not public: only the member sees their change, in
            // their box.
            if chat.kind != ChatKind::Channel {
                let fanout_on_read = chat.fanout_on_read;
                push_log(chat, date, Update::ChatMember { chat: id, user, change, fanout_on_read });
            }
        }
        ChatChange::Read { user, max_id } => {
            if let Some(member) = chat.members.get_mut(&user) {
                member.read_inbox_max = member.read_inbox_max.max(max_id);
            }
            chat.read_outbox_max = chat.read_outbox_max.max(max_id);
            // For this member only (the senders hear of it as a read outbox, in their boxes).
        }
        ChatChange::SyncMode { fanout_on_read } => {
            chat.fanout_on_read = fanout_on_read;
            push_log(chat, date, Update::ChatSyncMode { chat: id, fanout_on_read });
        }
    }
}

/// The update of a delete for everyone, naming each message's sender (read before the delete
/// is applied).
fn deleted_for_everyone(chat: &Chat, ids: &[MessageId]) -> Update {
    let senders = ids.iter().map(|&id| chat.message(id).map_or(UserId(0), |message| message.sender)).collect();
    Update::DeleteMessagesForEveryone {
        chat: chat.id,
        deleted: Box::new(DeletedMessages { ids: ids.to_vec(), senders }),
    }
}

/// Gives an event every member may see the chat's next public pts and keeps it in the log.
fn push_log(chat: &mut Chat, date: UnixMs, update: Update) {
    chat.public_pts = chat.public_pts.next();
    let pushed_out = log_entries_pushed_out(&chat.log, date);
    let entry = Sequenced { pts: chat.public_pts, date, update };
    chat.log.push_back(ChatLogEntry { entry, only_for: None });
    chat.log.drop_front(pushed_out);
}

/// How many of a chat log's oldest entries an event dated `date`, if it enters the log,
/// pushes out: beyond `CHAT_LOG_HISTORY_MAX` entries, and older than `HISTORY_AGE_MS_MAX`.
pub fn log_entries_pushed_out(log: &Chunked<ChatLogEntry>, date: UnixMs) -> usize {
    pushed_out(log, CHAT_LOG_HISTORY_MAX, date, |entry| entry.entry.date)
}

/// How many of `entries`' oldest one more entry dated `date` pushes out: beyond `max`, and
/// those then at the front older than `HISTORY_AGE_MS_MAX` before it.
fn pushed_out<T>(entries: &Chunked<T>, max: usize, date: UnixMs, date_of: impl Fn(&T) -> UnixMs) -> usize {
    let by_count = (entries.len() + 1).saturating_sub(max);
    let expired = |entry: &&T| date_of(entry).0 + HISTORY_AGE_MS_MAX < date.0;
    by_count + entries.iter().skip(by_count).take_while(expired).count()
}

impl State {
    /// Forgets random_ids older than the window before `now`, and the oldest beyond the
    /// memory cap, at most `IDEMPOTENCY_FORGET_PER_EVENT` of them. Called after each chat
    /// event, except while a checkpoint is being taken piece by piece (it touches other
    /// chats); forgetting later changes nothing a client sees, because a send checks the
    /// window's dates itself. The bound spreads what a checkpoint held back over the events
    /// after it: forgotten at once, what a checkpoint of seconds held back at 10 M messages
    /// stalled the shard for about 60 ms.
    pub fn expire_idempotency(&mut self, now: UnixMs) {
        let (order, chats) = (&mut self.idempotency_order, &mut self.chats);
        forget_oldest(order, chats, now, IDEMPOTENCY_ENTRIES_MAX, IDEMPOTENCY_FORGET_PER_EVENT);
    }

    /// What replay calls after each chat event instead: nothing until the window holds
    /// `IDEMPOTENCY_REPLAY_SLACK` entries over its cap, then what
    /// [`State::expire_idempotency`] would forget, grouped by chat. Past the cap every new
    /// message forgets one random_id of some other chat, a lookup in a map that is cold by
    /// then; grouped, each chat's map is brought in once for all it forgets. Call
    /// [`State::expire_idempotency_grouped`] when replay ends.
    pub fn expire_idempotency_in_batches(&mut self, now: UnixMs) {
        if self.idempotency_order.len() > IDEMPOTENCY_ENTRIES_MAX + IDEMPOTENCY_REPLAY_SLACK {
            self.expire_idempotency_grouped(now);
        }
    }

    /// Forgets what [`State::expire_idempotency`] would, grouped by chat.
    pub fn expire_idempotency_grouped(&mut self, now: UnixMs) {
        forget_grouped(&mut self.idempotency_order, &mut self.chats, now, IDEMPOTENCY_ENTRIES_MAX);
    }
}

/// How far replay lets the idempotency window run over its cap before forgetting in a batch:
/// 125,000 entries, 4 MB.
const IDEMPOTENCY_REPLAY_SLACK: usize = IDEMPOTENCY_ENTRIES_MAX / 32;

/// A remembered random_id: when, in which chat, from whom.
pub type IdempotencyEntry = (UnixMs, ChatId, UserId, RandomId);

/// The window's oldest entry, if it is to be forgotten at `now` with `cap` entries at most.
fn forgettable(order: &Chunked<IdempotencyEntry>, now: UnixMs, cap: usize) -> Option<IdempotencyEntry> {
    let &entry = order.front()?;
    (entry.0 .0 + IDEMPOTENCY_WINDOW_MS < now.0 || order.len() > cap).then_some(entry)
}

/// Forgets the window's oldest entries while they are to be forgotten, `most` at most, one
/// at a time; returns how many.
fn forget_oldest(
    order: &mut Chunked<IdempotencyEntry>,
    chats: &mut Map<ChatId, Chat>,
    now: UnixMs,
    cap: usize,
    most: usize,
) -> usize {
    let mut forgotten = 0;
    while forgotten < most {
        let Some(entry) = forgettable(order, now, cap) else { break };
        order.pop_front();
        forget(chats, entry);
        forgotten += 1;
    }
    forgotten
}

fn forget_grouped(order: &mut Chunked<IdempotencyEntry>, chats: &mut Map<ChatId, Chat>, now: UnixMs, cap: usize) {
    let mut forgotten = Vec::new();
    while let Some(entry) = forgettable(order, now, cap) {
        order.pop_front();
        forgotten.push(entry);
    }
    // Each entry checks its own date, so the order they are forgotten in does not matter.
    forgotten.sort_unstable_by_key(|&(_, chat, _, _)| chat);
    for entry in forgotten {
        forget(chats, entry);
    }
}

/// Removes a random_id the window no longer holds, unless the chat remembers it from a later
/// message (the same random_id used again after it was forgotten once).
fn forget(chats: &mut Map<ChatId, Chat>, (date, chat, sender, random_id): IdempotencyEntry) {
    if let Some(state) = chats.get_mut(&chat) {
        if state.random_ids.get(&(sender, random_id)).is_some_and(|remembered| remembered.date == date) {
            state.random_ids.remove(&(sender, random_id));
        }
    }
}

fn apply_box(
    update_box: &mut UpdateBox,
    owner: UserId,
    chat: ChatId,
    chat_pts: Pts,
    pts: Pts,
    date: UnixMs,
    update: &Update,
) {
    if update_box.applied.get(&chat).is_some_and(|&applied| applied >= chat_pts) {
        return;
    }
    assert_eq!(pts, update_box.pts.next(), "box of user {owner} pts must stay dense");
    // Checked applied just above: the count alone, without asking the map again.
    let pushed_out = box_entries_over(&update_box.entries, date);
    update_box.applied.insert(chat, chat_pts);
    update_box.pts = pts;
    update_box.date = update_box.date.max(date);
    let update = update.clone();
    apply_dialog(update_box, owner, &update, date);
    update_box.entries.push_back(Sequenced { pts, date, update });
    update_box.entries.drop_front(pushed_out);
}

/// How many of a box's oldest entries the update of chat event (`chat`, `chat_pts`) dated
/// `date` pushes out when it is applied: beyond `BOX_HISTORY_MAX` entries, and older than
/// `HISTORY_AGE_MS_MAX` before it. None when the box has applied that event already.
pub fn box_entries_pushed_out(update_box: &UpdateBox, chat: ChatId, chat_pts: Pts, date: UnixMs) -> usize {
    if update_box.applied.get(&chat).is_some_and(|&applied| applied >= chat_pts) {
        return 0;
    }
    box_entries_over(&update_box.entries, date)
}

/// How many of a box's oldest `entries` one more entry dated `date` pushes out.
fn box_entries_over(entries: &Chunked<Sequenced>, date: UnixMs) -> usize {
    pushed_out(entries, BOX_HISTORY_MAX, date, |entry| entry.date)
}

fn apply_dialog(update_box: &mut UpdateBox, owner: UserId, update: &Update, date: UnixMs) {
    match *update {
        Update::NewMessage { chat, id, sender, date } => {
            let dialog = update_box.dialogs.entry(chat).or_default();
            dialog.top_message = dialog.top_message.max(id);
            dialog.top_date = dialog.top_date.max(date);
            if sender != owner && id > dialog.read_inbox_max {
                dialog.unread += 1;
            }
        }
        Update::ReadInbox { chat, max_id, unread } => {
            let dialog = update_box.dialogs.entry(chat).or_default();
            dialog.read_inbox_max = dialog.read_inbox_max.max(max_id);
            dialog.unread = unread;
        }
        Update::ReadOutbox { chat, max_id } => {
            let dialog = update_box.dialogs.entry(chat).or_default();
            dialog.read_outbox_max = dialog.read_outbox_max.max(max_id);
        }
        // A message deleted for everyone that was unread here is unread no more. (A delete for
        // me does not lower the count: the next read recounts without it. So a message hidden
        // first and deleted for everyone later is discounted once.)
        Update::DeleteMessagesForEveryone { chat, ref deleted } => {
            if let Some(dialog) = update_box.dialogs.get_mut(&chat) {
                let unread = deleted
                    .ids
                    .iter()
                    .zip(&deleted.senders)
                    .filter(|(id, sender)| **sender != owner && **id > dialog.read_inbox_max)
                    .count() as u64;
                dialog.unread = dialog.unread.saturating_sub(unread);
            }
        }
        Update::ChatMember { chat, user, change, fanout_on_read } if user == owner => match change {
            MemberChange::Joined | MemberChange::Added { .. } => {
                let dialog = update_box.dialogs.entry(chat).or_default();
                dialog.top_date = dialog.top_date.max(date);
                dialog.fanout_on_read = fanout_on_read;
            }
            MemberChange::Left | MemberChange::Removed { .. } => {
                update_box.dialogs.remove(&chat);
            }
            MemberChange::Promoted { .. } => {}
        },
        Update::ChatSyncMode { chat, fanout_on_read } => {
            update_box.dialogs.entry(chat).or_default().fanout_on_read = fanout_on_read;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window of `entries` random_ids over a few chats, each remembered by its chat as the
    /// window says; every fifth reuses the random_id of the entry three before it, so the
    /// chat remembers the later date only.
    fn window(entries: u64) -> (Chunked<IdempotencyEntry>, Map<ChatId, Chat>) {
        let mut order = Chunked::default();
        let mut chats: Map<ChatId, Chat> = Map::default();
        for index in 0..entries {
            let reused = index % 5 == 4;
            let key = if reused { index - 3 } else { index };
            let (chat, sender, random_id) = (ChatId(key * 7 % 5 + 1), UserId(key % 3 + 1), RandomId(key));
            let date = UnixMs(1_000 * index);
            chats
                .entry(chat)
                .or_insert_with(|| Chat::empty(chat))
                .random_ids
                .insert((sender, random_id), Remembered { id: MessageId(index + 1), content_hash: 0, date });
            order.push_back((date, chat, sender, random_id));
        }
        (order, chats)
    }

    fn remembered(chats: &Map<ChatId, Chat>) -> BTreeSet<(ChatId, UserId, RandomId, UnixMs)> {
        let mut all = BTreeSet::new();
        for (chat, state) in chats {
            all.extend(state.random_ids.iter().map(|(&(sender, random_id), r)| (*chat, sender, random_id, r.date)));
        }
        all
    }

    #[test]
    fn forgetting_grouped_by_chat_forgets_what_a_few_at_a_time_does() {
        // Over the cap by 40, and the first 10 entries past the window.
        let now = UnixMs(1_000 * 9 + IDEMPOTENCY_WINDOW_MS + 1);
        let cap = 60;
        let (mut one_at_a_time, mut chats_one) = window(100);
        // At most 16 a time, as after each event: 16, 16, then the 8 left.
        let mut rounds = Vec::new();
        loop {
            match forget_oldest(&mut one_at_a_time, &mut chats_one, now, cap, 16) {
                0 => break,
                forgotten => rounds.push(forgotten),
            }
        }
        assert_eq!(rounds, [16, 16, 8]);
        let (mut grouped, mut chats_grouped) = window(100);
        forget_grouped(&mut grouped, &mut chats_grouped, now, cap);
        assert_eq!(grouped, one_at_a_time);
        assert_eq!(remembered(&chats_grouped), remembered(&chats_one));
        assert_eq!(grouped.len(), cap, "forgotten down to the cap");
        // What is left is what the window still holds: a reused random_id whose first use was
        // forgotten is remembered with its later date.
        let mut latest: BTreeMap<(ChatId, UserId, RandomId), UnixMs> = BTreeMap::new();
        for &(date, chat, sender, id) in &grouped {
            latest.insert((chat, sender, id), date);
        }
        let expected: BTreeSet<_> =
            latest.into_iter().map(|((chat, sender, id), date)| (chat, sender, id, date)).collect();
        assert_eq!(remembered(&chats_grouped), expected);
    }
}
