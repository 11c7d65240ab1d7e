//! A shard's messaging core: a sans-I/O state machine (DESIGN §2). Requests and peer
//! messages go in with the time; records go out through a [`Journal`]; everything a client or
//! another shard may see waits in a queue until the log's watermarks say the records behind
//! it are acknowledged (replies) or durable (fan-out, live updates), then leaves as
//! [`Effects`]. The glommio driver and the simulator run this same code.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::ids::{Lsn, RecordKind, ShardId, VShard};
use crate::messaging::chunked::Chunked;
use crate::messaging::limits::*;
use crate::messaging::protocol::{
    Effects, FanOut, HistoryPage, Origin, PeerMessage, Request, Response, SendRequest, SenderReply,
};
use crate::messaging::push::{NotifySettings, PushDevice, PushJob};
use crate::messaging::records::{self, ChatChange, Event, EVENT_KIND};
use crate::messaging::state::{
    box_entries_pushed_out, content_hash, log_entries_pushed_out, pair_key, secret_hash_matches, Authorization, Chat,
    ChatLogEntry, DialogState, Map, Remembered, State, UpdateBox, User,
};
use crate::messaging::types::*;
use crate::vshards::VShardTable;
use crate::wal::{AppendError, ChunkedBytes};

mod media;
mod push;
mod requests;
mod sessions;

pub use self::requests::normalize_username;

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
    /// The latest date of a replayed chat event: what the random_ids replay left to forget
    /// are forgotten against when it ends.
    replayed_date: UnixMs,
    checkpoint_every_bytes: u64,
    checkpoint_at_close_min_bytes: u64,
    /// Performed effects handed back by the driver, reused by the next step.
    spare_effects: Effects,
    /// A checkpoint being taken piece by piece while the shard keeps serving.
    checkpoint: Option<CheckpointInProgress>,
    /// Set once the log failed: whatever comes to wait on it later is answered with this.
    failed: Option<MessagingError>,
    /// Whether new messages queue push jobs (the host runs a dispatcher that drains them).
    push_enabled: bool,
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
    /// On a user's shard: the sessions watching the user's presence, oldest first.
    presence_watchers: Map<UserId, Vec<SessionId>>,
    /// On a connection shard: sessions held here, and per chat the subscribed ones.
    hub: Map<SessionId, HubSession>,
    hub_chats: Map<ChatId, Vec<SessionId>>,
    /// On a chat's shard: per connection shard, subscribed sessions per user.
    subscribers: Map<ChatId, BTreeMap<ShardId, BTreeMap<UserId, u32>>>,
    /// On a user's shard: the authorization each online session connected under, if any.
    /// Kept where revocation happens, so registering a session and revoking its authorization
    /// are ordered by the one shard that does both.
    session_authorizations: Map<SessionId, AuthorizationId>,
    /// On a user's shard: each authorization's last successful check since the shard started.
    /// Never in the WAL: a check must not cost a write.
    authorization_used: Map<AuthorizationId, UnixMs>,
    /// On a chat's shard: media keys the leak sweep found no message for, refused to media
    /// sends until the time given (see `Request::CheckMediaHolders`). Never in the WAL: a
    /// crash ends every send in flight, which is all the refusal guards against.
    holders_refused: Map<(ChatId, UserId, RandomId), UnixMs>,
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
    /// A new message's body, carried to the boxes' shards for their live updates so the
    /// gateway need not fetch it. In memory only (not archived): after a restart the
    /// re-sent fan-out goes without it.
    #[rkyv(with = rkyv::with::Skip)]
    pub message: Option<Arc<Message>>,
}

enum Deferred {
    Reply(Origin, MessagingResult<Response>),
    Peer(ShardId, PeerMessage),
    FanOut((ChatId, Pts, u8)),
    BoxLive {
        date: UnixMs,
        update: Update,
        users: Vec<(UserId, Pts)>,
        message: Option<Arc<Message>>,
        /// The sender's session that learns this update from its answer (`SenderReply`), so
        /// it is not sent live there.
        answered: Option<SessionId>,
    },
    ChatLive {
        chat: ChatId,
        update: Sequenced,
        message: Option<Arc<Message>>,
    },
    /// Push jobs of the outbox, by sequence, for the host once durable.
    Pushes(Vec<u64>),
}

/// The part of a checkpoint that is not users or chats: the indexes, id sequences,
/// idempotency order and the unconfirmed outbox. A checkpoint is this header, then an
/// [`AuthorizationsHeader`], then each user (followed by its authorizations, if it has any)
/// and each chat, each archived on its own: one archive of everything would outgrow rkyv's
/// 32-bit relative offsets (it did, at about 6 M messages on one shard).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SnapshotHeader {
    phones: Map<String, UserId>,
    usernames: Map<String, UserId>,
    pairs: Map<(UserId, UserId), crate::messaging::state::Pair>,
    user_sequences: Map<u16, u64>,
    chat_sequences: Map<u16, u64>,
    idempotency_order: VecDeque<(UnixMs, ChatId, UserId, RandomId)>,
    outbox: Vec<((ChatId, Pts, u8), OutboxEntry)>,
    users: u64,
    chats: u64,
}

/// What a version 4 checkpoint adds to version 3, after the authorizations header: the push
/// outbox and its sequence, and how many users' push pieces follow.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct PushHeader {
    sequence: u64,
    outbox: Vec<PushJob>,
    users: u64,
}

/// The media messages of one chat, after the chat's piece (`Message::media` is not in the
/// chat's archive): (message id, media) of each live media message.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct ChatMedia {
    chat: ChatId,
    media: Vec<(MessageId, MessageMedia)>,
}

/// A chat's public pts, after the chat's piece (`Chat::public_pts` is not in its archive).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct ChatPublicPts {
    chat: ChatId,
    public_pts: Pts,
}

/// Messages of a chat in a checkpoint (version 8), after the chat's piece: from `first` on,
/// [`MESSAGES_PER_PIECE`] at most. A message with nothing but a sender, a date, a random_id
/// and a text goes in columns (24 bytes and its text, against 128 and its text for a
/// [`Message`]); an edited, deleted, replying or forwarded one whole, with its place. A message's
/// media is in the chat's media piece, as before.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct ChatMessages {
    chat: ChatId,
    first: MessageId,
    /// How many messages the chat holds: the last piece ends there.
    total: u64,
    senders: Vec<UserId>,
    dates: Vec<UnixMs>,
    random_ids: Vec<RandomId>,
    /// Where each text in the columns ends in `texts`.
    text_ends: Vec<u32>,
    texts: String,
    /// Where each whole message goes among all of this piece's, ascending.
    whole_at: Vec<u32>,
    whole: Vec<Message>,
}

impl ChatMessages {
    /// The piece of `chat`'s messages from index `from` on.
    fn new(chat: &ChatAsOf<'_>, from: usize) -> ChatMessages {
        let messages = (from..chat.count.min(from + MESSAGES_PER_PIECE)).map(|index| chat.message_at(index));
        let mut out = ChatMessages {
            chat: chat.fields.id,
            first: MessageId(from as u64 + 1),
            total: chat.count as u64,
            senders: Vec::with_capacity(messages.len()),
            dates: Vec::with_capacity(messages.len()),
            random_ids: Vec::with_capacity(messages.len()),
            text_ends: Vec::with_capacity(messages.len()),
            texts: String::with_capacity(messages.clone().map(|message| message.text.len()).sum()),
            whole_at: Vec::new(),
            whole: Vec::new(),
        };
        for (at, message) in messages.enumerate() {
            let Message {
                id,
                chat: of,
                sender,
                date,
                random_id,
                text,
                reply_to,
                forwarded_from,
                edit_date,
                deleted,
                media: _,
            } = message;
            let plain = *id == MessageId((from + at) as u64 + 1)
                && *of == chat.fields.id
                && reply_to.is_none()
                && forwarded_from.is_none()
                && edit_date.is_none()
                && !deleted;
            if plain {
                out.senders.push(*sender);
                out.dates.push(*date);
                out.random_ids.push(*random_id);
                out.texts.push_str(text);
                out.text_ends.push(out.texts.len() as u32);
            } else {
                out.whole_at.push(at as u32);
                // Its media is in the chat's media piece, so it is not copied here.
                out.whole.push(Message {
                    id: *id,
                    chat: *of,
                    sender: *sender,
                    date: *date,
                    random_id: *random_id,
                    text: text.clone(),
                    reply_to: *reply_to,
                    forwarded_from: forwarded_from.clone(),
                    edit_date: *edit_date,
                    deleted: *deleted,
                    media: None,
                });
            }
        }
        out
    }

    /// Appends the messages to `chat`'s, which must end right before them.
    fn restore_into(self, chat: &mut Chat) -> std::result::Result<(), RestoreError> {
        let ChatMessages { chat: _, first, total, senders, dates, random_ids, text_ends, texts, whole_at, whole } =
            self;
        let plain = senders.len();
        if dates.len() != plain
            || random_ids.len() != plain
            || text_ends.len() != plain
            || whole_at.len() != whole.len()
        {
            return Err(RestoreError::Format("a chat's messages come in columns of different lengths"));
        }
        if first != chat.top_message().next() {
            return Err(RestoreError::Format("a chat's messages are out of order or missing"));
        }
        let count = plain + whole.len();
        if count > MESSAGES_PER_PIECE || first.0 - 1 + count as u64 > total {
            return Err(RestoreError::Format("a piece holds more messages than its chat"));
        }
        let mut whole = whole_at.into_iter().zip(whole).peekable();
        let mut columns = senders.into_iter().zip(dates).zip(random_ids).zip(text_ends);
        let mut text_start = 0;
        for at in 0..count {
            let id = MessageId(first.0 + at as u64);
            let message = match whole.next_if(|(whole_at, _)| *whole_at as usize == at) {
                Some((_, message)) if message.id == id && message.chat == chat.id => message,
                Some(_) => return Err(RestoreError::Format("a whole message out of its place")),
                None => {
                    let (((sender, date), random_id), text_end) =
                        columns.next().ok_or(RestoreError::Format("a chat's whole messages are out of place"))?;
                    let text = texts
                        .get(text_start..text_end as usize)
                        .ok_or(RestoreError::Format("a message's text is out of its piece"))?;
                    text_start = text_end as usize;
                    Message {
                        id,
                        chat: chat.id,
                        sender,
                        date,
                        random_id,
                        text: text.to_string(),
                        reply_to: None,
                        forwarded_from: None,
                        edit_date: None,
                        deleted: false,
                        media: None,
                    }
                }
            };
            chat.messages.push_back(message);
        }
        Ok(())
    }
}

/// A box's entries in a checkpoint (version 8), after the user's piece. Most of a box is new
/// messages dated as their entry and numbered one after the other: those go in four columns of
/// 8 bytes, 32 bytes an entry against 64 for a [`Sequenced`]. Any other entry is kept whole,
/// with its place among them.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct BoxEntries {
    user: UserId,
    /// The first entry's pts; each entry in the columns has the pts after the entry before it.
    first_pts: Pts,
    chats: Vec<ChatId>,
    ids: Vec<MessageId>,
    senders: Vec<UserId>,
    dates: Vec<UnixMs>,
    /// Where each whole entry goes among all the entries, ascending.
    whole_at: Vec<u32>,
    whole: Vec<Sequenced>,
}

impl BoxEntries {
    fn new(user: UserId, entries: &Chunked<Sequenced>) -> BoxEntries {
        let compact = entries.len();
        let mut out = BoxEntries {
            user,
            first_pts: entries.front().map_or(Pts::ZERO, |entry| entry.pts),
            chats: Vec::with_capacity(compact),
            ids: Vec::with_capacity(compact),
            senders: Vec::with_capacity(compact),
            dates: Vec::with_capacity(compact),
            whole_at: Vec::new(),
            whole: Vec::new(),
        };
        let mut previous: Option<Pts> = None;
        for (at, entry) in entries.iter().enumerate() {
            let follows = previous.is_none_or(|previous| entry.pts == previous.next());
            match entry.update {
                Update::NewMessage { chat, id, sender, date } if follows && date == entry.date => {
                    out.chats.push(chat);
                    out.ids.push(id);
                    out.senders.push(sender);
                    out.dates.push(date);
                }
                _ => {
                    out.whole_at.push(at as u32);
                    out.whole.push(entry.clone());
                }
            }
            previous = Some(entry.pts);
        }
        out
    }

    /// The entries.
    fn into_entries(self) -> std::result::Result<Chunked<Sequenced>, RestoreError> {
        let BoxEntries { user: _, first_pts, chats, ids, senders, dates, whole_at, whole } = self;
        let compact = chats.len();
        if ids.len() != compact || senders.len() != compact || dates.len() != compact || whole_at.len() != whole.len() {
            return Err(RestoreError::Format("a box's entries come in columns of different lengths"));
        }
        let total = compact + whole.len();
        let mut out = Chunked::new();
        let mut whole = whole_at.into_iter().zip(whole).peekable();
        let mut columns = chats.into_iter().zip(ids).zip(senders).zip(dates);
        let mut previous: Option<Pts> = None;
        for at in 0..total {
            let entry = match whole.next_if(|(whole_at, _)| *whole_at as usize == at) {
                Some((_, entry)) => entry,
                None => {
                    let (((chat, id), sender), date) =
                        columns.next().ok_or(RestoreError::Format("a box's whole entries are out of place"))?;
                    let pts = previous.map_or(first_pts, Pts::next);
                    Sequenced { pts, date, update: Update::NewMessage { chat, id, sender, date } }
                }
            };
            previous = Some(entry.pts);
            out.push_back(entry);
        }
        Ok(out)
    }
}

/// A chat's log in a checkpoint (version 8), after the chat's piece. An entry announcing a
/// message of the chat, with the message's sender and date, numbered after the entry before it,
/// is the message's id alone: 8 bytes against 80 for a [`ChatLogEntry`]. Any other entry is
/// kept whole, its id 0.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct ChatLog {
    chat: ChatId,
    /// The first entry's pts; each implied entry has the pts after the entry before it.
    first_pts: Pts,
    ids: Vec<MessageId>,
    whole: Vec<ChatLogEntry>,
}

impl ChatLog {
    fn new(chat: &ChatAsOf<'_>) -> ChatLog {
        let mut out = ChatLog {
            chat: chat.fields.id,
            first_pts: chat.log().next().map_or(Pts::ZERO, |entry| entry.entry.pts),
            ids: Vec::with_capacity(chat.log_dropped.map_or(0, Chunked::len) + chat.log.len()),
            whole: Vec::new(),
        };
        let mut previous: Option<Pts> = None;
        for ChatLogEntry { entry, only_for } in chat.log() {
            let follows = previous.is_none_or(|previous| entry.pts == previous.next());
            match entry.update {
                Update::NewMessage { chat: of, id, sender, date }
                    if follows
                        && of == chat.fields.id
                        && only_for.is_none()
                        && date == entry.date
                        && chat.message(id).is_some_and(|message| message.sender == sender && message.date == date) =>
                {
                    out.ids.push(id)
                }
                _ => {
                    out.ids.push(MessageId(0));
                    out.whole.push(ChatLogEntry { entry: entry.clone(), only_for: *only_for });
                }
            }
            previous = Some(entry.pts);
        }
        out
    }

    /// The log of `chat` (restored from the piece before).
    fn into_log(self, chat: &Chat) -> std::result::Result<Chunked<ChatLogEntry>, RestoreError> {
        let ChatLog { chat: _, first_pts, ids, whole } = self;
        let mut out = Chunked::new();
        let mut whole = whole.into_iter();
        let mut previous: Option<Pts> = None;
        for id in ids {
            let entry = if id.0 == 0 {
                whole.next().ok_or(RestoreError::Format("a chat's log lacks whole entries it names"))?
            } else {
                let message = chat
                    .message(id)
                    .ok_or(RestoreError::Format("a chat's log names a message the chat does not hold"))?;
                let (sender, date) = (message.sender, message.date);
                let pts = previous.map_or(first_pts, Pts::next);
                let update = Update::NewMessage { chat: chat.id, id, sender, date };
                ChatLogEntry { entry: Sequenced { pts, date, update }, only_for: None }
            };
            previous = Some(entry.entry.pts);
            out.push_back(entry);
        }
        if whole.next().is_some() {
            return Err(RestoreError::Format("a chat's log holds whole entries it does not name"));
        }
        Ok(out)
    }
}

/// One user's devices and non-default notification settings, after the user's piece.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct UserPush {
    user: UserId,
    devices: Vec<PushDevice>,
    settings: Vec<(ChatId, NotifySettings)>,
}

/// What a version 3 checkpoint adds to version 2, right after the header: the authorization id
/// sequences, and how many users' authorization pieces follow (so a checkpoint that lost some
/// is refused like one that lost users).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct AuthorizationsHeader {
    sequences: Map<u16, u64>,
    users: u64,
}

/// Version 3 is version 2 plus authorizations: the same header, then an
/// [`AuthorizationsHeader`] piece, and a piece of authorizations after each user that has
/// some. A version 2 checkpoint (written before authorizations existed) restores with none;
/// an older build refuses version 3 by its magic rather than lose the authorizations.
///
/// Version 4 is version 3 plus push state: a [`PushHeader`] piece after the authorizations
/// header (the outbox and its sequence), and a piece of devices and notification settings
/// after each user that has some. Versions 2 and 3 restore with none.
///
/// Version 5 is version 4 plus media messages: the release outbox
/// ([`crate::messaging::MediaReleases`]) after the push header, and a [`ChatMedia`] piece
/// after each chat that holds media messages. Older versions restore with none.
///
/// Version 6 is version 5 plus public chat pts: a [`ChatPublicPts`] piece after each chat whose
/// public pts differs from its sequence (events for one member take none since version 6).
/// Older versions restore every chat with its public pts equal to its sequence, which is what
/// their clients saw.
///
/// Version 7 moves the idempotency window out of the header, which archived it in one step (a
/// window of 10 M sends is 320 MB): the header's window is empty, an
/// [`PIECE_IDEMPOTENCY_COUNT`] piece after the media releases says how many entries follow,
/// and [`PIECE_IDEMPOTENCY`] pieces carry them, oldest first, between the other pieces.
///
/// Version 8 writes a chat's messages and log and a box's entries in pieces of their own, most
/// of them in a few bytes: [`ChatMessages`] pieces after each chat (at least one, the last
/// ending at the chat's newest message), a [`ChatLog`] piece after each chat whose log holds
/// entries, a [`BoxEntries`] piece after each user whose box holds some. The chat and user
/// pieces keep their layout and hold those vectors empty. Older versions hold them inline,
/// and cannot have these pieces.
const SNAPSHOT_MAGIC: &[u8; 8] = b"FGMSNAP8";
const SNAPSHOT_MAGIC_V7: &[u8; 8] = b"FGMSNAP7";
const SNAPSHOT_MAGIC_V6: &[u8; 8] = b"FGMSNAP6";
const SNAPSHOT_MAGIC_V5: &[u8; 8] = b"FGMSNAP5";
const SNAPSHOT_MAGIC_V4: &[u8; 8] = b"FGMSNAP4";
const SNAPSHOT_MAGIC_V3: &[u8; 8] = b"FGMSNAP3";
const SNAPSHOT_MAGIC_V2: &[u8; 8] = b"FGMSNAP2";
const PIECE_HEADER: u64 = 0;
const PIECE_USER: u64 = 1;
const PIECE_CHAT: u64 = 2;
const PIECE_AUTHORIZATIONS_HEADER: u64 = 3;
/// One user's live authorizations, oldest first (never empty).
const PIECE_AUTHORIZATIONS: u64 = 4;
const PIECE_PUSH_HEADER: u64 = 5;
/// One user's devices and notification settings ([`UserPush`], never both empty).
const PIECE_USER_PUSH: u64 = 6;
const PIECE_MEDIA_RELEASES: u64 = 7;
/// One chat's media messages ([`ChatMedia`], never empty), right after the chat's piece.
const PIECE_CHAT_MEDIA: u64 = 8;
/// One chat's public pts ([`ChatPublicPts`]), right after the chat's piece, when it differs
/// from the chat's own sequence.
const PIECE_CHAT_PUBLIC_PTS: u64 = 9;
/// How many idempotency entries the checkpoint holds (a `u64`), after the media releases.
const PIECE_IDEMPOTENCY_COUNT: u64 = 10;
/// The next entries of the idempotency window (`Vec<IdempotencyEntry>`), in order.
const PIECE_IDEMPOTENCY: u64 = 11;
/// One box's entries ([`BoxEntries`], never empty), right after the user's piece.
const PIECE_BOX_ENTRIES: u64 = 12;
/// One chat's log ([`ChatLog`], never empty), right after the chat's piece.
const PIECE_CHAT_LOG: u64 = 13;
/// The next messages of a chat ([`ChatMessages`]), right after the chat's piece, in order.
const PIECE_CHAT_MESSAGES: u64 = 14;
/// Messages in one [`ChatMessages`] piece (a few in unit tests, so chats span several). A
/// piece stays far under the 2 GiB an archive can address however long its texts, and so
/// does a chat's own piece however many messages it has.
const MESSAGES_PER_PIECE: usize = if cfg!(test) { 3 } else { 4096 };
/// Idempotency entries in one piece (1 MiB of them; a few in unit tests, so their windows span
/// several pieces).
const IDEMPOTENCY_ENTRIES_PER_PIECE: usize = if cfg!(test) { 7 } else { 32 * 1024 };

type IdempotencyEntry = (UnixMs, ChatId, UserId, RandomId);

/// See [`MessagingCore::begin_checkpoint`].
struct CheckpointInProgress {
    out: ChunkedBytes,
    /// The idempotency entries still to write: `next..end` of the window. The window's first
    /// `end` entries do not change meanwhile: entries are only appended, and expiry waits
    /// until the checkpoint is done.
    idempotency_next: usize,
    idempotency_end: usize,
    /// Still to write, in the order `checkpoint_step` takes them.
    users: Vec<UserId>,
    chats: Vec<ChatId>,
    /// Not written yet (by a step or by `preserve`).
    pending_users: Map<UserId, ()>,
    pending_chats: Map<ChatId, ()>,
    /// Chats changed before their turn, as they were when the checkpoint began, to be written
    /// by a later step (see [`ChatBefore`]).
    chats_before: Map<ChatId, ChatBefore>,
    /// The keys of `chats_before`, in the order a step takes them.
    chats_before_order: Vec<ChatId>,
    /// Users changed before their turn, as they were when the checkpoint began (see
    /// [`UserBefore`]), and their ids in the order a step takes them.
    users_before: Map<UserId, UserBefore>,
    users_before_order: Vec<UserId>,
}

/// A user as it was when a checkpoint began, kept at the first change before the user's turn:
/// the profile, authorizations, push settings and box counters and maps cloned, but of the
/// box's entries only those the changes since pushed out at the front. Entries are only
/// appended at the back and dropped at the front, so the entries then are the ones dropped
/// since followed by those now up to the box's pts then. Archiving the user there instead (a
/// box holds up to `BOX_HISTORY_MAX` entries) was part of the 176–513 ms a checkpoint of
/// 3 M messages spent on the request path.
struct UserBefore {
    profile: UserProfile,
    pts: Pts,
    date: UnixMs,
    applied: Map<ChatId, Pts>,
    dialogs: Map<ChatId, DialogState>,
    dropped: Chunked<Sequenced>,
    authorizations: Option<Vec<Authorization>>,
    push: Option<UserPush>,
}

impl UserBefore {
    fn new(state: &State, id: UserId) -> UserBefore {
        let User { profile, update_box } = &state.users[&id];
        let UpdateBox { pts, date, entries: _, applied, dialogs } = update_box;
        UserBefore {
            profile: profile.clone(),
            pts: *pts,
            date: *date,
            applied: applied.clone(),
            dialogs: dialogs.clone(),
            dropped: Chunked::new(),
            authorizations: state.authorizations.get(&id).cloned(),
            push: user_push(state, id),
        }
    }

    /// Keeps the entries of `now` (this user's box) that the update of chat event (`chat`,
    /// `chat_pts`) dated `date` is about to push out, if they were there when the checkpoint
    /// began.
    fn keep_dropped(&mut self, now: &UpdateBox, chat: ChatId, chat_pts: Pts, date: UnixMs) {
        let pushed_out = box_entries_pushed_out(now, chat, chat_pts, date);
        let then = now.entries.iter().take(pushed_out).take_while(|entry| entry.pts <= self.pts);
        self.dropped.extend(then.cloned());
    }

    /// Appends the user's pieces as they were.
    fn push(self, out: &mut ChunkedBytes, now: &UpdateBox) {
        let UserBefore { profile, pts, date, applied, dialogs, mut dropped, authorizations, push } = self;
        dropped.extend(now.entries.iter().take_while(|entry| entry.pts <= pts).cloned());
        let user = User { profile, update_box: UpdateBox { pts, date, entries: dropped, applied, dialogs } };
        push_user_pieces(out, &user, authorizations.as_ref(), push.as_ref());
    }
}

/// A chat as it was when a checkpoint began, kept when a change came before the chat's turn:
/// its own small fields and members cloned; of its messages, how many there were and the old
/// versions of those changed in place since (messages are only appended or changed in place:
/// edit, delete); of its log, the entries pushed out at the front since (entries are only
/// appended at the back and dropped at the front); of its random_ids, the entries a new
/// message replaced since (entries are only added while a checkpoint is taken: expiry waits).
/// Keeping this is far cheaper on the send path than archiving the chat there (a chat of 500
/// messages took up to half a millisecond), or cloning its log and random_ids (`ChatBefore::new`
/// had 9% of the shard's samples over a slow second of a checkpoint, most of them clearing
/// fresh pages).
struct ChatBefore {
    /// The chat's own fields; its messages, log and random_ids are empty here.
    chat: Chat,
    messages: usize,
    changed: Map<usize, Message>,
    log_dropped: Chunked<ChatLogEntry>,
    random_ids_replaced: Map<(UserId, RandomId), Remembered>,
}

impl ChatBefore {
    fn new(chat: &Chat) -> ChatBefore {
        let Chat {
            id,
            kind,
            title,
            creator,
            members,
            messages,
            pts,
            last_date,
            pinned,
            fanout_on_read,
            read_outbox_max,
            log: _,
            random_ids: _,
            media_index: _,
            public_pts,
        } = chat;
        let chat = Chat {
            id: *id,
            kind: *kind,
            title: title.clone(),
            creator: *creator,
            members: members.clone(),
            messages: Chunked::new(),
            pts: *pts,
            last_date: *last_date,
            pinned: *pinned,
            fanout_on_read: *fanout_on_read,
            read_outbox_max: *read_outbox_max,
            log: Chunked::new(),
            random_ids: Map::default(),
            media_index: Map::default(),
            public_pts: *public_pts,
        };
        ChatBefore {
            chat,
            messages: messages.len(),
            changed: Map::default(),
            log_dropped: Chunked::new(),
            random_ids_replaced: Map::default(),
        }
    }

    /// Keeps what `change`, dated `date`, is about to change in place or push out of the chat
    /// as it was: old versions of messages, log entries, replaced random_ids.
    fn keep_changed(&mut self, now: &Chat, change: &ChatChange, date: UnixMs) {
        let ids: &[MessageId] = match change {
            ChatChange::Edit { id, .. } => std::slice::from_ref(id),
            ChatChange::Delete { ids } => ids,
            // The rest append a message or change only the chat's own fields.
            ChatChange::NewMessage(_)
            | ChatChange::NewMediaMessage { .. }
            | ChatChange::DeleteForMe { .. }
            | ChatChange::Pin { .. }
            | ChatChange::Member { .. }
            | ChatChange::Read { .. }
            | ChatChange::SyncMode { .. } => &[],
        };
        for index in ids.iter().filter_map(|id| (id.0 as usize).checked_sub(1)) {
            if index < self.messages {
                self.changed.entry(index).or_insert_with(|| now.messages[index].clone());
            }
        }
        // Whether the change enters the log or not, what it would push out is kept: keeping an
        // entry that stays is harmless (`ChatBefore::as_of` takes each pts once).
        let kept_up_to = self.log_dropped.back().map_or(Pts::ZERO, |entry| entry.entry.pts);
        let pushed_out = log_entries_pushed_out(&now.log, date);
        let then = now.log.iter().take(pushed_out).filter(|entry| entry.entry.pts > kept_up_to);
        self.log_dropped.extend(then.take_while(|entry| entry.entry.pts <= self.chat.public_pts).cloned());
        let new_message = match change {
            ChatChange::NewMessage(message) => Some(message),
            ChatChange::NewMediaMessage { message, .. } => Some(&**message),
            _ => None,
        };
        if let Some(message) = new_message.filter(|message| message.random_id.0 != 0) {
            let key = (message.sender, message.random_id);
            if let Some(remembered) = now.random_ids.get(&key).filter(|r| (r.id.0 as usize) <= self.messages) {
                self.random_ids_replaced.entry(key).or_insert(*remembered);
            }
        }
    }

    /// The chat as it was, read from what it kept and from the chat `now`: nothing is
    /// copied but its random_ids (a checkpoint at 10 M messages used to clone every message of
    /// every chat changed while it was taken, and their texts).
    fn as_of<'a>(&'a mut self, now: &'a Chat) -> ChatAsOf<'a> {
        let messages = self.messages;
        self.chat.random_ids = now
            .random_ids
            .iter()
            .filter(|(_, remembered)| (remembered.id.0 as usize) <= messages)
            .map(|(key, remembered)| (*key, *remembered))
            .chain(self.random_ids_replaced.drain())
            .collect();
        let kept_up_to = self.log_dropped.back().map_or(Pts::ZERO, |entry| entry.entry.pts);
        ChatAsOf {
            fields: &self.chat,
            messages: &now.messages,
            count: messages,
            changed: Some(&self.changed),
            log_dropped: Some(&self.log_dropped),
            log: &now.log,
            log_window: Some((kept_up_to, self.chat.public_pts)),
            media_index: &now.media_index,
        }
    }
}

/// A chat as a checkpoint archives it: its own fields and random_ids from `fields` (whose
/// messages, log and media index are not read), its first `count` messages from `messages`
/// each replaced by its version in `changed` if there is one, and its log: `log_dropped`, then
/// the entries of `log` with a pts in `log_window` (after the first, up to the second).
struct ChatAsOf<'a> {
    fields: &'a Chat,
    messages: &'a Chunked<Message>,
    count: usize,
    changed: Option<&'a Map<usize, Message>>,
    log_dropped: Option<&'a Chunked<ChatLogEntry>>,
    log: &'a Chunked<ChatLogEntry>,
    log_window: Option<(Pts, Pts)>,
    /// The live media messages of the chat now, by key.
    media_index: &'a Map<(UserId, RandomId), MessageId>,
}

impl<'a> ChatAsOf<'a> {
    /// The chat as it is.
    fn now(chat: &'a Chat) -> ChatAsOf<'a> {
        ChatAsOf {
            fields: chat,
            messages: &chat.messages,
            count: chat.messages.len(),
            changed: None,
            log_dropped: None,
            log: &chat.log,
            log_window: None,
            media_index: &chat.media_index,
        }
    }

    /// The message at `index`, which must be below `count`.
    fn message_at(&self, index: usize) -> &'a Message {
        self.changed.and_then(|changed| changed.get(&index)).unwrap_or(&self.messages[index])
    }

    fn message(&self, id: MessageId) -> Option<&'a Message> {
        let index = (id.0 as usize).checked_sub(1).filter(|&index| index < self.count)?;
        Some(self.message_at(index))
    }

    fn log(&self) -> impl Iterator<Item = &'a ChatLogEntry> + 'a {
        let window = self.log_window;
        let in_window = move |entry: &&ChatLogEntry| {
            window.is_none_or(|(after, through)| entry.entry.pts > after && entry.entry.pts <= through)
        };
        self.log_dropped.into_iter().flatten().chain(self.log.iter().filter(in_window))
    }

    /// The media messages, by id: those live now, and for a chat as it was, those of its
    /// messages deleted since (kept in `changed`), each if it has media and is not deleted.
    fn media(&self) -> Vec<(MessageId, MessageMedia)> {
        let changed =
            self.changed.into_iter().flat_map(|changed| changed.keys().map(|&index| MessageId(index as u64 + 1)));
        let mut ids: Vec<MessageId> = self.media_index.values().copied().chain(changed).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .filter_map(|id| {
                let message = self.message(id).filter(|message| !message.deleted)?;
                Some((id, message.media.as_deref()?.clone()))
            })
            .collect()
    }
}

/// Why a checkpoint could not be restored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    #[error("the messaging checkpoint does not decode: {0}")]
    Decode(rkyv::rancor::Error),
    #[error("the messaging checkpoint is malformed: {0}")]
    Format(&'static str),
}

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
            replayed_date: UnixMs(0),
            checkpoint_every_bytes: CHECKPOINT_EVERY_BYTES,
            checkpoint_at_close_min_bytes: CHECKPOINT_AT_CLOSE_MIN_BYTES,
            spare_effects: Effects::default(),
            checkpoint: None,
            failed: None,
            push_enabled: false,
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
        let mut pieces = SnapshotPieces::new(snapshot)?;
        let header: SnapshotHeader = pieces.next(PIECE_HEADER)?;
        let authorizations_header = match pieces.version {
            2 => AuthorizationsHeader { sequences: Map::default(), users: 0 },
            _ => pieces.next(PIECE_AUTHORIZATIONS_HEADER)?,
        };
        let push_header = match pieces.version {
            2 | 3 => PushHeader { sequence: 0, outbox: Vec::new(), users: 0 },
            _ => pieces.next(PIECE_PUSH_HEADER)?,
        };
        let media_releases = match pieces.version {
            2..=4 => crate::messaging::MediaReleases::default(),
            _ => pieces.next(PIECE_MEDIA_RELEASES)?,
        };
        let idempotency_count: Option<u64> = match pieces.version {
            2..=6 => None,
            _ => Some(pieces.next(PIECE_IDEMPOTENCY_COUNT)?),
        };
        let mut state = State {
            phones: header.phones,
            usernames: header.usernames,
            pairs: header.pairs,
            user_sequences: header.user_sequences,
            chat_sequences: header.chat_sequences,
            idempotency_order: header.idempotency_order.into_iter().collect(),
            authorization_sequences: authorizations_header.sequences,
            ..State::default()
        };
        // Counts of a checkpoint not verified yet (see `ShardLog::open`): no more room than its
        // pieces could fill, each at least a tag and a length.
        let pieces_at_most = snapshot.len() / 16;
        state.users.reserve((header.users as usize).min(pieces_at_most));
        state.chats.reserve((header.chats as usize).min(pieces_at_most));
        // Since version 8: how many messages each chat's message pieces say it holds.
        let mut message_totals: Map<ChatId, u64> = Map::default();
        // Users and chats come in any order (a checkpoint taken piece by piece writes first
        // whatever was about to change).
        while !pieces.is_empty() {
            match pieces.tag()? {
                PIECE_USER => {
                    let user: User = pieces.next(PIECE_USER)?;
                    state.users.insert(user.profile.id, user);
                }
                PIECE_CHAT => {
                    let mut chat: Chat = pieces.next(PIECE_CHAT)?;
                    // Until a public pts piece says otherwise (and always before version 6).
                    chat.public_pts = chat.pts;
                    state.chats.insert(chat.id, chat);
                }
                PIECE_CHAT_PUBLIC_PTS if pieces.version >= 6 => {
                    let ChatPublicPts { chat, public_pts } = pieces.next(PIECE_CHAT_PUBLIC_PTS)?;
                    let state = state.chats.get_mut(&chat).ok_or(RestoreError::Format(
                        "public pts of a chat the checkpoint does not hold (or not before it)",
                    ))?;
                    if public_pts > state.pts {
                        return Err(RestoreError::Format("a chat's public pts is ahead of its sequence"));
                    }
                    state.public_pts = public_pts;
                }
                PIECE_AUTHORIZATIONS if pieces.version >= 3 => {
                    let authorizations: Vec<Authorization> = pieces.next(PIECE_AUTHORIZATIONS)?;
                    restore_authorizations(&mut state, authorizations)?;
                }
                PIECE_USER_PUSH if pieces.version >= 4 => {
                    let user_push: UserPush = pieces.next(PIECE_USER_PUSH)?;
                    restore_user_push(&mut state, user_push)?;
                }
                PIECE_CHAT_MEDIA if pieces.version >= 5 => {
                    let chat_media: ChatMedia = pieces.next(PIECE_CHAT_MEDIA)?;
                    restore_chat_media(&mut state, chat_media)?;
                }
                PIECE_BOX_ENTRIES if pieces.version >= 8 => {
                    let entries: BoxEntries = pieces.next(PIECE_BOX_ENTRIES)?;
                    let user = state.users.get_mut(&entries.user).ok_or(RestoreError::Format(
                        "box entries of a user the checkpoint does not hold (or not before them)",
                    ))?;
                    if !user.update_box.entries.is_empty() {
                        return Err(RestoreError::Format("a box's entries come twice"));
                    }
                    user.update_box.entries = entries.into_entries()?;
                }
                PIECE_CHAT_MESSAGES if pieces.version >= 8 => {
                    let messages: ChatMessages = pieces.next(PIECE_CHAT_MESSAGES)?;
                    let chat = state.chats.get_mut(&messages.chat).ok_or(RestoreError::Format(
                        "messages of a chat the checkpoint does not hold (or not before them)",
                    ))?;
                    let total = messages.total;
                    if *message_totals.entry(chat.id).or_insert(total) != total {
                        return Err(RestoreError::Format("a chat's message pieces disagree on how many there are"));
                    }
                    // A message in a piece takes at least its sender, date, random_id and
                    // text end: 28 bytes.
                    messages.restore_into(chat)?;
                }
                PIECE_CHAT_LOG if pieces.version >= 8 => {
                    let log: ChatLog = pieces.next(PIECE_CHAT_LOG)?;
                    let chat = state.chats.get_mut(&log.chat).ok_or(RestoreError::Format(
                        "the log of a chat the checkpoint does not hold (or not before it)",
                    ))?;
                    if !chat.log.is_empty() {
                        return Err(RestoreError::Format("a chat's log comes twice"));
                    }
                    chat.log = log.into_log(chat)?;
                }
                PIECE_IDEMPOTENCY if pieces.version >= 7 => {
                    let entries: Vec<IdempotencyEntry> = pieces.next(PIECE_IDEMPOTENCY)?;
                    state.idempotency_order.extend(entries);
                }
                _ => return Err(RestoreError::Format("a piece of unknown kind")),
            }
        }
        if pieces.version >= 8
            && (message_totals.len() != state.chats.len()
                || state.chats.values().any(|chat| message_totals.get(&chat.id) != Some(&(chat.messages.len() as u64))))
        {
            return Err(RestoreError::Format("the checkpoint misses messages of a chat"));
        }
        if idempotency_count.is_some_and(|count| state.idempotency_order.len() as u64 != count) {
            return Err(RestoreError::Format("the checkpoint misses idempotency entries it counts"));
        }
        if state.users.len() as u64 != header.users || state.chats.len() as u64 != header.chats {
            return Err(RestoreError::Format("the checkpoint misses users or chats its header counts"));
        }
        if state.authorizations.len() as u64 != authorizations_header.users {
            return Err(RestoreError::Format("the checkpoint misses authorizations its header counts"));
        }
        if state.authorizations.keys().any(|user| !state.users.contains_key(user)) {
            return Err(RestoreError::Format("authorizations of a user the checkpoint does not hold"));
        }
        let push_users: std::collections::BTreeSet<UserId> =
            state.push.devices.keys().chain(state.push.settings.keys()).copied().collect();
        if push_users.len() as u64 != push_header.users {
            return Err(RestoreError::Format("the checkpoint misses push settings its header counts"));
        }
        if push_users.iter().any(|user| !state.users.contains_key(user)) {
            return Err(RestoreError::Format("push settings of a user the checkpoint does not hold"));
        }
        state.media_releases = media_releases;
        state.push.sequence = push_header.sequence;
        state.push.outbox = push_header.outbox.into_iter().map(|job| (job.sequence, job)).collect();
        self.state = state;
        self.outbox = header.outbox.into_iter().collect();
        Ok(())
    }

    /// The checkpoint of everything applied so far (see [`SnapshotHeader`] for its layout).
    pub fn snapshot(&mut self) -> ChunkedBytes {
        let mut out = self.snapshot_header();
        let window = self.state.idempotency_order.len();
        for start in (0..window).step_by(IDEMPOTENCY_ENTRIES_PER_PIECE) {
            push_idempotency(&mut out, &self.state, start..window.min(start + IDEMPOTENCY_ENTRIES_PER_PIECE));
        }
        for user in self.state.users.keys() {
            push_user(&mut out, &self.state, *user);
        }
        for chat in self.state.chats.values() {
            push_chat(&mut out, &ChatAsOf::now(chat));
        }
        self.bytes_since_checkpoint = 0;
        out
    }

    /// A checkpoint's first bytes: the magic and the header of the state as it is now.
    fn snapshot_header(&mut self) -> ChunkedBytes {
        let state = &mut self.state;
        // The indexes are moved into the header to archive them, not copied, then moved back.
        let header = SnapshotHeader {
            phones: std::mem::take(&mut state.phones),
            usernames: std::mem::take(&mut state.usernames),
            pairs: std::mem::take(&mut state.pairs),
            user_sequences: std::mem::take(&mut state.user_sequences),
            chat_sequences: std::mem::take(&mut state.chat_sequences),
            // Since version 7 the window follows in pieces of its own.
            idempotency_order: VecDeque::new(),
            outbox: self.outbox.iter().map(|(key, entry)| (*key, entry.clone())).collect(),
            users: state.users.len() as u64,
            chats: state.chats.len() as u64,
        };
        let mut out = ChunkedBytes::new();
        out.extend_from_slice(SNAPSHOT_MAGIC);
        push_piece(&mut out, PIECE_HEADER, &header);
        let SnapshotHeader { phones, usernames, pairs, user_sequences, chat_sequences, .. } = header;
        (state.phones, state.usernames, state.pairs) = (phones, usernames, pairs);
        (state.user_sequences, state.chat_sequences) = (user_sequences, chat_sequences);
        let authorizations_header = AuthorizationsHeader {
            sequences: std::mem::take(&mut state.authorization_sequences),
            users: state.authorizations.len() as u64,
        };
        push_piece(&mut out, PIECE_AUTHORIZATIONS_HEADER, &authorizations_header);
        state.authorization_sequences = authorizations_header.sequences;
        let push = &state.push;
        let push_users = push.devices.keys().chain(push.settings.keys().filter(|u| !push.devices.contains_key(u)));
        let push_header = PushHeader {
            sequence: push.sequence,
            outbox: push.outbox.values().cloned().collect(),
            users: push_users.count() as u64,
        };
        push_piece(&mut out, PIECE_PUSH_HEADER, &push_header);
        push_piece(&mut out, PIECE_MEDIA_RELEASES, &state.media_releases);
        push_piece(&mut out, PIECE_IDEMPOTENCY_COUNT, &(state.idempotency_order.len() as u64));
        out
    }

    /// Starts a checkpoint of the state as it is now, to be written piece by piece
    /// ([`MessagingCore::checkpoint_step`]) while the shard keeps serving. A user or chat
    /// about to change is written first, as it was: the finished checkpoint is the state of
    /// this moment, exactly what a log checkpoint ticket taken now covers.
    pub fn begin_checkpoint(&mut self) {
        let header_only = self.snapshot_header();
        let users: Vec<UserId> = self.state.users.keys().copied().collect();
        let chats: Vec<ChatId> = self.state.chats.keys().copied().collect();
        self.checkpoint = Some(CheckpointInProgress {
            out: header_only,
            idempotency_next: 0,
            idempotency_end: self.state.idempotency_order.len(),
            pending_users: users.iter().map(|&user| (user, ())).collect(),
            pending_chats: chats.iter().map(|&chat| (chat, ())).collect(),
            chats_before: Map::default(),
            chats_before_order: Vec::new(),
            users_before: Map::default(),
            users_before_order: Vec::new(),
            users,
            chats,
        });
        self.bytes_since_checkpoint = 0;
    }

    /// Writes more of the checkpoint begun: up to `pieces` pieces (idempotency entries, users,
    /// chats), stopping early once a step has archived `CHECKPOINT_STEP_BYTES`; true once all
    /// are written.
    pub fn checkpoint_step(&mut self, pieces: usize) -> bool {
        let (Some(progress), state) = (&mut self.checkpoint, &self.state) else { return true };
        let mut written = 0;
        let step_end = progress.out.len() + CHECKPOINT_STEP_BYTES;
        while written < pieces && progress.out.len() < step_end {
            if progress.idempotency_next < progress.idempotency_end {
                let start = progress.idempotency_next;
                let end = progress.idempotency_end.min(start + IDEMPOTENCY_ENTRIES_PER_PIECE);
                push_idempotency(&mut progress.out, state, start..end);
                progress.idempotency_next = end;
                written += 1;
            } else if let Some(chat) = progress.chats_before_order.pop() {
                let mut before = progress.chats_before.remove(&chat).expect("kept with its key");
                push_chat(&mut progress.out, &before.as_of(&state.chats[&chat]));
                written += 1;
            } else if let Some(user) = progress.users_before_order.pop() {
                let before = progress.users_before.remove(&user).expect("kept with its key");
                before.push(&mut progress.out, &state.users[&user].update_box);
                written += 1;
            } else if let Some(user) = progress.users.pop() {
                if progress.pending_users.remove(&user).is_some() {
                    push_user(&mut progress.out, state, user);
                    written += 1;
                }
            } else if let Some(chat) = progress.chats.pop() {
                if progress.pending_chats.remove(&chat).is_some() {
                    push_chat(&mut progress.out, &ChatAsOf::now(&state.chats[&chat]));
                    written += 1;
                }
            } else {
                return true;
            }
        }
        progress.idempotency_next == progress.idempotency_end
            && progress.chats_before.is_empty()
            && progress.users_before.is_empty()
            && progress.users.is_empty()
            && progress.chats.is_empty()
    }

    /// Takes out the checkpoint's bytes archived so far in filled chunks, to be written while
    /// the rest is archived (empty when no checkpoint is begun).
    pub fn take_checkpoint_bytes(&mut self) -> ChunkedBytes {
        self.checkpoint.as_mut().map(|progress| progress.out.take_filled()).unwrap_or_default()
    }

    /// The bytes of the checkpoint begun not taken out yet, once every piece is written (else
    /// `None`, and the checkpoint is dropped); their `len` counts those taken out too.
    /// Idempotency expiry, paused meanwhile, resumes.
    pub fn finish_checkpoint(&mut self) -> Option<ChunkedBytes> {
        let progress = self.checkpoint.take()?;
        let complete = progress.idempotency_next == progress.idempotency_end
            && progress.chats_before.is_empty()
            && progress.users_before.is_empty()
            && progress.pending_users.is_empty()
            && progress.pending_chats.is_empty();
        complete.then_some(progress.out)
    }

    /// Drops the checkpoint being archived, if any: its log checkpoint is then abandoned. One
    /// whose pieces are all archived is already the log's to write, and finishes.
    pub fn abandon_checkpoint(&mut self) {
        self.checkpoint = None;
    }

    /// Writes, as they are now, the users and chats `event` is about to change that a
    /// checkpoint in progress has not written yet.
    fn preserve(&mut self, event: &Event) {
        let (Some(progress), state) = (&mut self.checkpoint, &self.state) else { return };
        let mut user = |user: UserId| {
            if progress.pending_users.remove(&user).is_some() {
                progress.users_before.insert(user, UserBefore::new(state, user));
                progress.users_before_order.push(user);
            }
        };
        match event {
            Event::BoxAppended { chat, chat_pts, date, users, .. } => {
                for &(id, _) in users {
                    user(id);
                }
                for (id, _) in users {
                    if let (Some(before), Some(now)) = (progress.users_before.get_mut(id), state.users.get(id)) {
                        before.keep_dropped(&now.update_box, *chat, *chat_pts, *date);
                    }
                }
            }
            Event::NameSet { user: id, .. }
            | Event::UsernameSet { user: id, .. }
            | Event::AuthorizationCreated { user: id, .. }
            | Event::AuthorizationRevoked { user: id, .. }
            | Event::DeviceRegistered { user: id, .. }
            | Event::DeviceUnregistered { user: id, .. }
            | Event::NotifySettingsSet { user: id, .. } => user(*id),
            Event::Chat { chat, change, date, .. } => {
                let now = &state.chats[chat];
                if progress.pending_chats.remove(chat).is_some() {
                    progress.chats_before.insert(*chat, ChatBefore::new(now));
                    progress.chats_before_order.push(*chat);
                }
                if let Some(before) = progress.chats_before.get_mut(chat) {
                    before.keep_changed(now, change, *date);
                }
            }
            // New users and chats are not in the checkpoint; the indexes are in its header.
            Event::UserCreated { .. }
            | Event::ChatCreated { .. }
            | Event::UsernameClaimed { .. }
            | Event::UsernameReleased { .. }
            | Event::PairBlocked { .. } => {}
            // The outbox is in the header, as it was when the checkpoint began; the log after
            // the checkpoint's ticket replays the jobs queued and finished since.
            Event::PushQueued { .. } | Event::PushesDone { .. } => {}
            // Likewise the media release outbox (its releases are queued by chat events,
            // which preserve their chat above).
            Event::MediaReleasesDone { .. } => {}
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

    /// See `EngineConfig::checkpoint_at_close_min_bytes`.
    pub fn set_checkpoint_at_close_min(&mut self, bytes: u64) {
        self.checkpoint_at_close_min_bytes = bytes.max(1);
    }

    /// Whether a clean shutdown should take one more checkpoint: at least the configured bytes
    /// (or a whole interval, if that is smaller) were written since the last one began.
    pub fn wants_checkpoint_at_close(&self) -> bool {
        self.bytes_since_checkpoint >= self.checkpoint_at_close_min_bytes.min(self.checkpoint_every_bytes)
    }

    /// Applies a record replayed from the log (any kind; other kinds are the host's).
    pub fn replay(&mut self, kind: RecordKind, payload: &[u8]) -> std::result::Result<(), records::DecodeError> {
        if kind != EVENT_KIND {
            return Ok(());
        }
        let event = records::decode(payload)?;
        // Replayed records count towards the next checkpoint as written ones do: after a long
        // replay the first checkpoint comes soon, so a second crash does not replay it all again.
        self.bytes_since_checkpoint += payload.len() as u64;
        // The fan-out to other shards that the record still owes goes back into the outbox.
        // With one shard there is none to owe, and working out each event's consequences
        // (a vector of updates and their users) was a tenth of replay.
        let consequences = if self.table.shard_count() > 1 { self.state.consequences(&event) } else { Vec::new() };
        for (part, consequence) in consequences.into_iter().enumerate() {
            let (chat, chat_pts, date) = event_key(&event);
            let targets = self.remote_targets(&consequence.users);
            if !targets.is_empty() {
                let entry = OutboxEntry { date, update: consequence.update, targets, message: None };
                self.outbox.insert((chat, chat_pts, part as u8), entry);
            }
        }
        let expire = matches!(event, Event::Chat { .. }).then_some(event_key(&event).2);
        self.state.apply(event);
        if let Some(date) = expire {
            self.state.expire_idempotency_in_batches(date);
            self.replayed_date = self.replayed_date.max(date);
        }
        Ok(())
    }

    /// After open: sets the epoch and watermarks, and re-sends every unconfirmed fan-out (boxes
    /// skip what they already hold).
    pub fn resume(&mut self, epoch: u64, recovered: Lsn) {
        // Replay forgot random_ids in batches; what is left to forget goes now.
        self.state.expire_idempotency_grouped(self.replayed_date);
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
        std::mem::replace(&mut self.effects, std::mem::take(&mut self.spare_effects))
    }

    /// Hands back effects the driver has performed, so their vectors are filled again
    /// instead of allocated again.
    pub fn recycle_effects(&mut self, mut effects: Effects) {
        effects.replies.clear();
        effects.peers.clear();
        effects.deliveries.clear();
        effects.offline.clear();
        effects.revoked.clear();
        effects.pushes.clear();
        if self.spare_effects.replies.capacity() == 0 {
            self.spare_effects = effects;
        }
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
        self.failed = Some(error.clone());
        let waiting: Vec<Deferred> =
            self.after_acked.drain(..).chain(self.after_durable.drain(..)).map(|(_, deferred)| deferred).collect();
        for deferred in waiting {
            match deferred {
                Deferred::Reply(origin, _) => self.reply_now(origin, Err(error.clone())),
                Deferred::Peer(shard, PeerMessage::SessionRegistered { session, user, origin, .. }) => {
                    let message = PeerMessage::SessionRegistered { session, user, origin, result: Err(error.clone()) };
                    self.send_peer(shard, message);
                }
                Deferred::Peer(shard, PeerMessage::Subscribed { chat, user, session, origin, counted, .. }) => {
                    let result = Err(error.clone());
                    let message = PeerMessage::Subscribed { chat, user, session, origin, counted, result };
                    self.send_peer(shard, message);
                }
                // Whether or not the revocation survives, ending the session is safe: it can
                // connect again if its authorization turns out to be live.
                Deferred::Peer(shard, message @ PeerMessage::EndRevokedSession { .. }) => {
                    self.send_peer(shard, message)
                }
                _ => {}
            }
        }
        for (_, sender) in std::mem::take(&mut self.outbox_replies) {
            self.reply_now(sender.origin, Err(error.clone()));
        }
        // Fan-outs waiting for room in the log never get it now; some carry a sender's answer.
        let senders: Vec<SenderReply> = self.inbox.iter_mut().filter_map(|fanout| fanout.sender.take()).collect();
        for sender in senders {
            self.reply_now(sender.origin, Err(error.clone()));
        }
    }

    /// A request from the host, arriving on the shard that owns its key.
    pub fn handle(&mut self, origin: Origin, request: Request, now: UnixMs, journal: &mut dyn Journal) {
        self.now = self.now.max(now);
        if let Err(error) = self.dispatch(origin, request, now, journal) {
            self.reply_now(origin, Err(error));
        }
        self.fail_if_failed();
    }

    /// After the log failed no watermark moves again: answer what an input left waiting now.
    fn fail_if_failed(&mut self) {
        if let Some(error) = self.failed.clone() {
            self.fail_waiting(error);
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
                for (session, event) in events {
                    if self.live.hub.contains_key(&session) {
                        self.effects.deliveries.push((session, event));
                    } else if let LiveEvent::Presence { user, .. } = event {
                        // A watcher that is gone: have the watched user's shard forget it.
                        self.route_no_journal(self.owner(user.vshard()), PeerMessage::Unwatch { session, user });
                    }
                }
            }
            PeerMessage::ChatLive { chat, update, message } => self.deliver_chat(chat, update, message),
            PeerMessage::RegisterSession { session, user, authorization, origin } => {
                self.register_session(session, user, authorization, origin, now)
            }
            PeerMessage::SessionRegistered { session, user, origin, result } => {
                if result.is_ok() {
                    self.live.hub.insert(session, HubSession { user, chats: Vec::new() });
                }
                self.effects.replies.push((origin, result));
            }
            PeerMessage::UnregisterSession { session, user } => self.unregister_session(session, user, now),
            PeerMessage::EndRevokedSession { session } => self.end_revoked_session(session),
            PeerMessage::Subscribe { chat, user, session, origin, counted } => {
                self.subscribe_at_chat(chat, user, session, origin, counted)
            }
            PeerMessage::Subscribed { chat, user, session, origin, counted, result } => {
                self.subscribed(chat, user, session, origin, counted, result)
            }
            PeerMessage::Unsubscribe { chat, user, shard } => self.unsubscribe_at_chat(chat, user, shard),
            PeerMessage::Unwatch { session, user } => self.unwatch_presence(session, user),
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
        self.fail_if_failed();
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
        // A new message's body rides with its live updates, here and to the boxes' shards.
        let live_message = match &event {
            Event::Chat { change, .. } => change.posted_message().map(Arc::new),
            _ => None,
        };
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
                let message = consequence.update.message().and(live_message.clone());
                let entry = OutboxEntry { date, update: consequence.update, targets, message };
                remote.push(((chat, chat_pts, part as u8), entry));
            }
        }
        let push_event = self.commit_push_jobs(&event, &local_events);
        let vshard = event_vshard(&event);
        let mut payloads = Vec::with_capacity(2 + local_events.len());
        payloads.push((vshard, records::encode(&event)));
        for box_event in &local_events {
            let Event::BoxAppended { users, .. } = box_event else { unreachable!() };
            payloads.push((users[0].0.vshard(), records::encode(box_event)));
        }
        if let Some(push_event) = &push_event {
            payloads.push((event_vshard(push_event), records::encode(push_event)));
        }
        let refs: Vec<(RecordKind, VShard, &[u8])> =
            payloads.iter().map(|(vshard, bytes)| (EVENT_KIND, *vshard, bytes.as_slice())).collect();
        let first = journal.append_all(&refs).map_err(append_error)?;
        let last = Lsn(first.0 + payloads.len() as u64 - 1);
        self.bytes_since_checkpoint += payloads.iter().map(|(_, bytes)| bytes.len() as u64).sum::<u64>();
        self.last_lsn = last;

        // Applied only once appended: an append refused for lack of room changes nothing.
        // For a chat fanned out on read, its public pts before the event: an event every member
        // may see takes the next one (see `Chat::public_pts`) and goes live to subscribers.
        let on_read_public_before = match &event {
            Event::Chat { chat, .. } => self.state.chats.get(chat).filter(|c| c.fanout_on_read).map(|c| c.public_pts),
            _ => None,
        };
        let expire = matches!(event, Event::Chat { .. }).then_some(date);
        self.preserve(&event);
        self.state.apply(event);
        if let Some(date) = expire.filter(|_| self.checkpoint.is_none()) {
            self.state.expire_idempotency(date);
        }
        if chat != ChatId(0) {
            self.chat_lsn.insert(chat, first);
        }
        for box_event in local_events {
            let Event::BoxAppended { date, update, users, .. } = &box_event else { unreachable!() };
            for (user, _) in users {
                self.box_lsn.insert(*user, last);
            }
            let message = update.message().and(live_message.clone());
            let answered =
                sender.filter(|reply| users.iter().any(|(user, _)| *user == reply.user)).and_then(|r| r.session);
            let deferred =
                Deferred::BoxLive { date: *date, update: update.clone(), users: users.clone(), message, answered };
            self.preserve(&box_event);
            self.state.apply(box_event);
            self.after_durable.push_back((last, deferred));
        }
        if let Some(push_event) = push_event {
            self.queue_pushes(push_event, last);
        }
        if let Some(public_before) = on_read_public_before.filter(|_| chat_pts != Pts::ZERO) {
            let state = self.state.chats.get(&chat).filter(|c| c.public_pts != public_before);
            if let Some(entry) = state.and_then(|c| c.log.back()) {
                let deferred = Deferred::ChatLive { chat, update: entry.entry.clone(), message: live_message };
                self.after_durable.push_back((first, deferred));
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
            let response = sender.response(sender_pts);
            self.after_acked.push_back((last, Deferred::Reply(sender.origin, Ok(response))));
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
                self.after_acked.push_back((self.last_lsn, Deferred::Reply(sender.origin, Ok(sender.response(None)))));
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
        let mut next_push = self.state.push.next_sequence();
        let jobs = self.box_push_jobs(&users, &fanout.update, fanout.push.as_deref(), fanout.date, &mut next_push);
        let bytes = records::encode(&event);
        // The jobs ride in the same batch as the box update that caused them.
        let push_event = (!jobs.is_empty()).then_some(Event::PushQueued { jobs });
        let push_bytes = push_event.as_ref().map(records::encode);
        let mut batch = vec![(EVENT_KIND, users[0].0.vshard(), bytes.as_slice())];
        if let (Some(event), Some(bytes)) = (&push_event, &push_bytes) {
            batch.push((EVENT_KIND, event_vshard(event), bytes.as_slice()));
        }
        let first = match journal.append_all(&batch) {
            Ok(lsn) => lsn,
            Err(_) => return Some(fanout),
        };
        let lsn = Lsn(first.0 + batch.len() as u64 - 1);
        self.bytes_since_checkpoint += batch.iter().map(|(_, _, bytes)| bytes.len() as u64).sum::<u64>();
        self.last_lsn = lsn;
        for (user, _) in &users {
            self.box_lsn.insert(*user, lsn);
        }
        self.preserve(&event);
        self.state.apply(event);
        if let Some(event) = push_event {
            self.queue_pushes(event, lsn);
        }
        if let Some(sender) = fanout.sender {
            self.after_acked.push_back((lsn, Deferred::Reply(sender.origin, Ok(sender.response(sender_pts)))));
        }
        let answered = fanout.sender.filter(|_| sender_pts.is_some()).and_then(|sender| sender.session);
        let deferred =
            Deferred::BoxLive { date: fanout.date, update: fanout.update, users, message: fanout.message, answered };
        self.after_durable.push_back((lsn, deferred));
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
            Deferred::BoxLive { date, update, users, message, answered } => {
                for (user, pts) in users {
                    let sequenced = Sequenced { pts, date, update: update.clone() };
                    match self.live.sessions.get(&user) {
                        Some(sessions) if !sessions.is_empty() => {
                            // A session belongs to one user: `answered` matches only the sender's.
                            for session in sessions.clone().into_iter().filter(|&s| Some(s) != answered) {
                                let event = LiveEvent::Box { update: sequenced.clone(), message: message.clone() };
                                self.deliver(session, event);
                            }
                        }
                        _ => self.effects.offline.push((user, sequenced)),
                    }
                }
            }
            Deferred::Pushes(sequences) => self.release_pushes(sequences),
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
        let push = self.push_source(&entry.update);
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
                    push: push.clone(),
                    message: entry.message.clone(),
                };
                (shard, fanout)
            })
            .collect();
        self.outbox_replies.remove(&key);
        for (shard, fanout) in sends {
            self.send_peer(shard, PeerMessage::FanOut(fanout));
        }
    }

    /// Sends `message` to `shard` once `lsn` is acknowledged, in order with the replies
    /// already waiting.
    fn peer_after_acked(&mut self, lsn: Lsn, shard: ShardId, message: PeerMessage) {
        self.after_acked.push_back((lsn, Deferred::Peer(shard, message)));
        if lsn <= self.acked {
            self.advance_replies_only();
        }
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
        // A read unrelated to what waits needs no place in the queue: answering it before
        // earlier replies reorders nothing a client could observe (their records are newer).
        if lsn <= self.acked {
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
}

/// The journal of steps that must not append: using it is a bug.
struct NoJournal;

impl Journal for NoJournal {
    fn append_all(&mut self, _: &[(RecordKind, VShard, &[u8])]) -> std::result::Result<Lsn, AppendError> {
        unreachable!("session bookkeeping and replies never append")
    }
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
        Event::UserCreated { user, .. }
        | Event::NameSet { user, .. }
        | Event::UsernameSet { user, .. }
        | Event::AuthorizationCreated { user, .. }
        | Event::AuthorizationRevoked { user, .. }
        | Event::DeviceRegistered { user, .. }
        | Event::DeviceUnregistered { user, .. }
        | Event::NotifySettingsSet { user, .. } => user.vshard(),
        Event::UsernameClaimed { username, .. } | Event::UsernameReleased { username, .. } => key_vshard(username),
        Event::PairBlocked { by, peer, .. } => pair_vshard(*by, *peer),
        Event::ChatCreated { chat, .. } | Event::Chat { chat, .. } => chat.vshard(),
        Event::BoxAppended { users, chat, .. } => users.first().map_or(chat.vshard(), |(user, _)| user.vshard()),
        // Written only with jobs, and kept in the shard's checkpoint: any job's key will do.
        Event::PushQueued { jobs } => jobs.first().map_or(VShard::of(0), PushJob::vshard),
        Event::PushesDone { .. } | Event::MediaReleasesDone { .. } => VShard::of(0),
    }
}

fn append_error(error: AppendError) -> MessagingError {
    match error {
        AppendError::Backpressure => MessagingError::Overloaded,
        other => MessagingError::Storage(other.to_string()),
    }
}

/// Appends a user's piece, then its authorizations' piece and its push piece if it has them.
fn push_user(out: &mut ChunkedBytes, state: &State, user: UserId) {
    let push = user_push(state, user);
    push_user_pieces(out, &state.users[&user], state.authorizations.get(&user), push.as_ref());
}

fn push_user_pieces(
    out: &mut ChunkedBytes,
    user: &User,
    authorizations: Option<&Vec<Authorization>>,
    push: Option<&UserPush>,
) {
    push_piece(out, PIECE_USER, user);
    if !user.update_box.entries.is_empty() {
        push_piece(out, PIECE_BOX_ENTRIES, &BoxEntries::new(user.profile.id, &user.update_box.entries));
    }
    if let Some(authorizations) = authorizations {
        push_piece(out, PIECE_AUTHORIZATIONS, authorizations);
    }
    if let Some(push) = push {
        push_piece(out, PIECE_USER_PUSH, push);
    }
}

/// A user's devices and notification settings, when there are any.
fn user_push(state: &State, user: UserId) -> Option<UserPush> {
    let devices = state.push.devices.get(&user);
    let settings = state.push.settings.get(&user);
    (devices.is_some() || settings.is_some()).then(|| UserPush {
        user,
        devices: devices.cloned().unwrap_or_default(),
        settings: settings.map(|chats| chats.iter().map(|(c, s)| (*c, *s)).collect()).unwrap_or_default(),
    })
}

/// A chat's piece, its public pts piece when that differs from its sequence, and its media
/// piece when it holds media messages.
fn push_chat(out: &mut ChunkedBytes, chat: &ChatAsOf<'_>) {
    push_piece(out, PIECE_CHAT, chat.fields);
    // At least one, so a chat whose message pieces were all lost is told from one without.
    let mut from = 0;
    loop {
        push_piece(out, PIECE_CHAT_MESSAGES, &ChatMessages::new(chat, from));
        from += MESSAGES_PER_PIECE;
        if from >= chat.count {
            break;
        }
    }
    if chat.log().next().is_some() {
        push_piece(out, PIECE_CHAT_LOG, &ChatLog::new(chat));
    }
    let fields = chat.fields;
    if fields.public_pts != fields.pts {
        push_piece(out, PIECE_CHAT_PUBLIC_PTS, &ChatPublicPts { chat: fields.id, public_pts: fields.public_pts });
    }
    // The live media messages are indexed: no walk over every message of the chat.
    let media = chat.media();
    if !media.is_empty() {
        push_piece(out, PIECE_CHAT_MEDIA, &ChatMedia { chat: fields.id, media });
    }
}

fn restore_chat_media(state: &mut State, chat_media: ChatMedia) -> std::result::Result<(), RestoreError> {
    let chat = state
        .chats
        .get_mut(&chat_media.chat)
        .ok_or(RestoreError::Format("media of a chat the checkpoint does not hold (or not before it)"))?;
    for (id, media) in chat_media.media {
        let message = (id.0 >= 1)
            .then(|| chat.messages.get_mut(id.0 as usize - 1))
            .flatten()
            .ok_or(RestoreError::Format("media of a message the chat does not hold"))?;
        if message.deleted || message.media.replace(Box::new(media)).is_some() {
            return Err(RestoreError::Format("media of a deleted message, or listed twice"));
        }
        // The index `Chat::index_media` would build, from the media messages alone rather
        // than a walk over every message of every chat.
        chat.media_index.insert((message.sender, message.random_id), id);
    }
    Ok(())
}

/// Adds one user's push piece to a state being restored.
fn restore_user_push(state: &mut State, user_push: UserPush) -> std::result::Result<(), RestoreError> {
    let UserPush { user, devices, settings } = user_push;
    if devices.is_empty() && settings.is_empty() {
        return Err(RestoreError::Format("an empty push piece"));
    }
    if state.push.devices.contains_key(&user) || state.push.settings.contains_key(&user) {
        return Err(RestoreError::Format("a user's push piece appears twice"));
    }
    if !devices.is_empty() {
        state.push.devices.insert(user, devices);
    }
    if !settings.is_empty() {
        state.push.settings.insert(user, settings.into_iter().collect());
    }
    Ok(())
}

/// Adds one user's authorizations piece to a state being restored, indexing them.
fn restore_authorizations(
    state: &mut State,
    authorizations: Vec<Authorization>,
) -> std::result::Result<(), RestoreError> {
    let user = authorizations.first().ok_or(RestoreError::Format("an empty authorizations piece"))?.user;
    for authorization in &authorizations {
        if authorization.user != user || authorization.id.vshard() != user.vshard() {
            return Err(RestoreError::Format("an authorization in another user's piece"));
        }
        if state.authorization_owners.insert(authorization.id, user).is_some() {
            return Err(RestoreError::Format("an authorization appears twice"));
        }
    }
    if state.authorizations.insert(user, authorizations).is_some() {
        return Err(RestoreError::Format("a user's authorizations appear twice"));
    }
    Ok(())
}

/// Appends one archived piece: its kind and length (u64 each) and its bytes, padded to 16 so
/// the next piece starts aligned.
/// The idempotency window's entries `range`, in order.
fn push_idempotency(out: &mut ChunkedBytes, state: &State, range: std::ops::Range<usize>) {
    let entries: Vec<IdempotencyEntry> = state.idempotency_order.range(range).copied().collect();
    push_piece(out, PIECE_IDEMPOTENCY, &entries);
}

fn push_piece<T>(out: &mut ChunkedBytes, tag: u64, value: &T)
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            rkyv::util::AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Error,
        >,
    >,
{
    let bytes = match rkyv::to_bytes::<rkyv::rancor::Error>(value) {
        Ok(bytes) => bytes,
        // One user or one chat: far from the 4 GiB an archive can address.
        Err(error) => panic!("archiving a piece of the messaging state failed: {error}"),
    };
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(&bytes);
    out.pad_to(16);
}

/// Reads a checkpoint's pieces back, validating each.
struct SnapshotPieces<'a> {
    bytes: &'a [u8],
    offset: usize,
    aligned: rkyv::util::AlignedVec<16>,
    /// The format version its magic names: 2 to 8.
    version: u8,
}

impl<'a> SnapshotPieces<'a> {
    fn new(bytes: &'a [u8]) -> std::result::Result<SnapshotPieces<'a>, RestoreError> {
        let version = match bytes.get(..8) {
            Some(magic) if magic == SNAPSHOT_MAGIC.as_slice() => 8,
            Some(magic) if magic == SNAPSHOT_MAGIC_V7.as_slice() => 7,
            Some(magic) if magic == SNAPSHOT_MAGIC_V6.as_slice() => 6,
            Some(magic) if magic == SNAPSHOT_MAGIC_V5.as_slice() => 5,
            Some(magic) if magic == SNAPSHOT_MAGIC_V4.as_slice() => 4,
            Some(magic) if magic == SNAPSHOT_MAGIC_V3.as_slice() => 3,
            Some(magic) if magic == SNAPSHOT_MAGIC_V2.as_slice() => 2,
            _ => return Err(RestoreError::Format("not a messaging checkpoint of this version")),
        };
        Ok(SnapshotPieces { bytes, offset: 8, aligned: rkyv::util::AlignedVec::new(), version })
    }

    fn is_empty(&self) -> bool {
        self.offset >= self.bytes.len()
    }

    /// The kind of the next piece.
    fn tag(&self) -> std::result::Result<u64, RestoreError> {
        let tag = self.bytes.get(self.offset..self.offset + 8).ok_or(RestoreError::Format("a piece is cut short"))?;
        Ok(u64::from_le_bytes(tag.try_into().map_err(|_| RestoreError::Format("a piece is cut short"))?))
    }

    fn next<T>(&mut self, tag: u64) -> std::result::Result<T, RestoreError>
    where
        T: rkyv::Archive,
        T::Archived: for<'b> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'b, rkyv::rancor::Error>>
            + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
    {
        if self.tag()? != tag {
            return Err(RestoreError::Format("a piece of the wrong kind"));
        }
        self.offset += 8;
        let truncated = || RestoreError::Format("the checkpoint ends inside a piece");
        let length = self.bytes.get(self.offset..self.offset + 8).ok_or_else(truncated)?;
        let length = u64::from_le_bytes(length.try_into().map_err(|_| truncated())?) as usize;
        let start = self.offset + 8;
        let piece = start.checked_add(length).and_then(|end| self.bytes.get(start..end)).ok_or_else(truncated)?;
        self.offset = (start + length).next_multiple_of(16);
        // Pieces are padded to 16 bytes, so in a checkpoint read into an aligned buffer they
        // are aligned where they lie; only a misaligned one is copied.
        let piece = if piece.as_ptr().align_offset(16) == 0 {
            piece
        } else {
            self.aligned.clear();
            self.aligned.extend_from_slice(piece);
            &self.aligned
        };
        rkyv::from_bytes::<T, rkyv::rancor::Error>(piece).map_err(RestoreError::Decode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messaging::limits::{BOX_HISTORY_MAX, HISTORY_AGE_MS_MAX};

    struct MemoryJournal(u64);

    #[test]
    fn an_update_pushes_out_the_entries_over_the_count_then_the_expired() {
        let day = 24 * 3600 * 1000;
        let entry = |pts: u64, date: u64| Sequenced {
            pts: Pts(pts),
            date: UnixMs(date),
            update: Update::PinMessage { chat: ChatId(1), id: None },
        };
        // Full, the first two entries a day older than the rest.
        let mut update_box = UpdateBox {
            entries: (1..=BOX_HISTORY_MAX as u64).map(|pts| entry(pts, if pts <= 2 { 0 } else { day })).collect(),
            ..UpdateBox::default()
        };
        update_box.applied.insert(ChatId(1), Pts(5));
        let pushed_out = |update_box: &UpdateBox, date: u64, chat_pts: u64| {
            box_entries_pushed_out(update_box, ChatId(1), Pts(chat_pts), UnixMs(date))
        };
        assert_eq!(pushed_out(&update_box, day, 6), 1, "one over the count");
        let week = HISTORY_AGE_MS_MAX + 1;
        assert_eq!(pushed_out(&update_box, week, 6), 2, "the two of day 0 expired (one also over the count)");
        assert_eq!(pushed_out(&update_box, week + day, 6), BOX_HISTORY_MAX, "all expired");
        assert_eq!(pushed_out(&update_box, week, 5), 0, "an event already applied changes nothing");
        update_box.entries.truncate(10);
        assert_eq!(pushed_out(&update_box, day, 6), 0);
        assert_eq!(pushed_out(&update_box, week, 6), 2);
    }

    impl Journal for MemoryJournal {
        fn append_all(&mut self, records: &[(RecordKind, VShard, &[u8])]) -> std::result::Result<Lsn, AppendError> {
            let first = Lsn(self.0);
            self.0 += records.len() as u64;
            Ok(first)
        }
    }

    fn call(core: &mut MessagingCore, journal: &mut MemoryJournal, request: Request) -> Response {
        let origin = Origin { shard: ShardId(0), request: journal.0 };
        core.handle(origin, request, UnixMs(1_700_000_000_000), journal);
        let last = Lsn(journal.0 - 1);
        core.advance(last, last, journal);
        match core.take_effects().replies.pop() {
            Some((_, Ok(response))) => response,
            other => panic!("request failed: {other:?}"),
        }
    }

    /// A journal that keeps every record, to replay them; the second field moves the clock
    /// ahead by that many milliseconds.
    #[derive(Default)]
    struct RecordingJournal(Vec<(RecordKind, Vec<u8>)>, u64);

    impl RecordingJournal {
        /// Handles request number `*request + 1`, one millisecond after the one before, with
        /// everything recorded so far acknowledged and durable; returns its answer.
        fn call(&mut self, core: &mut MessagingCore, request: &mut u64, r: Request) -> Response {
            *request += 1;
            let origin = Origin { shard: ShardId(0), request: *request };
            core.handle(origin, r, UnixMs(1_700_000_000_000 + *request + self.1), self);
            let last = Lsn(self.0.len() as u64);
            core.advance(last, last, self);
            match core.take_effects().replies.pop() {
                Some((_, Ok(response))) => response,
                other => panic!("request failed: {other:?}"),
            }
        }
    }

    impl Journal for RecordingJournal {
        fn append_all(&mut self, records: &[(RecordKind, VShard, &[u8])]) -> std::result::Result<Lsn, AppendError> {
            let first = Lsn(self.0.len() as u64 + 1);
            self.0.extend(records.iter().map(|(kind, _, payload)| (*kind, payload.to_vec())));
            Ok(first)
        }
    }

    /// What two states must agree on: every box, every chat and every authorization, in id
    /// order.
    fn digest(state: &State) -> Vec<String> {
        let mut lines: Vec<String> = state
            .users
            .values()
            .map(|user| {
                let update_box = &user.update_box;
                let mut applied: Vec<_> = update_box.applied.iter().collect();
                applied.sort();
                let mut dialogs: Vec<_> = update_box.dialogs.iter().map(|(chat, d)| (chat, format!("{d:?}"))).collect();
                dialogs.sort();
                format!(
                    "{:?} {:?} {:?} {:?} applied {applied:?} dialogs {dialogs:?}",
                    user.profile, update_box.pts, update_box.date, update_box.entries
                )
            })
            .collect();
        lines.extend(state.authorizations.iter().map(|(user, authorizations)| {
            let hashes: Vec<_> = authorizations.iter().map(|authorization| authorization.secret_hash).collect();
            format!("authorizations of {user}: {authorizations:?} {hashes:?}")
        }));
        let mut owners: Vec<_> = state.authorization_owners.iter().collect();
        owners.sort();
        let mut sequences: Vec<_> = state.authorization_sequences.iter().collect();
        sequences.sort();
        lines.push(format!("authorization owners {owners:?} sequences {sequences:?}"));
        lines.extend(state.chats.values().map(|chat| {
            let members: Vec<_> = chat.members.iter().map(|(id, m)| (*id, m.read_inbox_max, &m.hidden)).collect();
            let log: Vec<_> = chat.log.iter().map(|entry| format!("{:?} {:?}", entry.entry, entry.only_for)).collect();
            let mut random_ids: Vec<_> =
                chat.random_ids.iter().map(|(key, r)| (*key, r.id, r.content_hash, r.date)).collect();
            random_ids.sort();
            format!(
                "{} {:?} {:?} {:?} log {:?} random_ids {:?} pinned {:?} public pts {:?}",
                chat.id, chat.pts, chat.messages, members, log, random_ids, chat.pinned, chat.public_pts
            )
        }));
        lines.sort();
        lines
    }

    /// Proves a checkpoint taken piece by piece while sends, reads and edits go on is the
    /// state of the moment it began: restored and replayed from there, it equals the live state.
    #[test]
    fn checkpoint_taken_piece_by_piece_is_the_state_when_it_began() {
        let table = Arc::new(VShardTable::round_robin(1));
        let mut core = MessagingCore::new(ShardId(0), table.clone());
        core.resume(0, Lsn::ZERO);
        let mut journal = RecordingJournal::default();
        let mut request = 0;
        let mut call =
            |core: &mut MessagingCore, journal: &mut RecordingJournal, r: Request| journal.call(core, &mut request, r);
        let mut users = Vec::new();
        for index in 0..40 {
            let phone = format!("+1555000{index:04}");
            let request = Request::SignUp { phone, first_name: "U".into(), last_name: String::new() };
            let Response::User(user) = call(&mut core, &mut journal, request) else { panic!() };
            users.push(user);
        }
        let mut chats = Vec::new();
        for pair in users.chunks(2) {
            let Response::Chat(chat) =
                call(&mut core, &mut journal, Request::OpenPrivate { user: pair[0], peer: pair[1] })
            else {
                panic!()
            };
            chats.push((chat, pair[0], pair[1]));
        }
        for (index, &(chat, sender, _)) in chats.iter().enumerate() {
            call(&mut core, &mut journal, send_text(chat, sender, index as u64 + 1));
        }
        // A media message, deleted for everyone while the checkpoint is taken: the checkpoint
        // keeps it with its media.
        let (media_chat, media_sender, _) = chats[13];
        let Request::Send(mut with_media) = send_text(media_chat, media_sender, 13_000) else { unreachable!() };
        with_media.media = Some(MessageMedia {
            kind: MediaKind::Photo,
            file: 77,
            access_hash: 78,
            size: 79,
            name: "photo.jpg".into(),
            mime_type: "image/jpeg".into(),
        });
        let Response::Sent(media_ack) = call(&mut core, &mut journal, Request::Send(with_media)) else { panic!() };
        // Begin; then change half the chats and boxes between small steps.
        let window = core.state().idempotency_order.len();
        assert!(window > 2 * IDEMPOTENCY_ENTRIES_PER_PIECE, "the window spans several pieces");
        let at_begin = core.snapshot().to_vec();
        core.begin_checkpoint();
        let began_at = journal.0.len();
        let mut random_id = 1000;
        let mut done = false;
        let mut first_step = true;
        let mut iteration = 0;
        while !done {
            done = core.checkpoint_step(3);
            iteration += 1;
            if iteration == 2 {
                // A week later: the next update of each box pushes out all its entries from
                // before the checkpoint, in boxes kept as they were already (the users of the
                // chats changed in the first round) and in boxes changed first now (chat 11).
                journal.1 = HISTORY_AGE_MS_MAX + 1;
                let (chat, sender, _) = chats[11];
                call(&mut core, &mut journal, send_text(chat, sender, 11_000));
                // And a random_id of a send from before the checkpoint, out of its window now:
                // a new message, which replaces the remembered one.
                let (chat, sender, _) = chats[0];
                let Response::Sent(ack) = call(&mut core, &mut journal, send_text(chat, sender, 1)) else { panic!() };
                assert!(!ack.duplicate && ack.id != MessageId(1), "{ack:?}");
            }
            for &(chat, sender, reader) in chats.iter().step_by(2) {
                random_id += 1;
                call(&mut core, &mut journal, send_text(chat, sender, random_id));
                call(&mut core, &mut journal, Request::ReadHistory { chat, user: reader, max_id: MessageId(1) });
            }
            let (chat, sender, _) = chats[3];
            call(
                &mut core,
                &mut journal,
                Request::Edit { chat, user: sender, id: MessageId(1), text: "edited".into() },
            );
            if first_step {
                // Changes in place to messages from before the checkpoint and from after it,
                // in chats not archived yet: the checkpoint keeps the old versions of the
                // first, and leaves the second out.
                first_step = false;
                let (chat, sender, reader) = chats[5];
                let delete =
                    |ids: Vec<MessageId>, for_everyone| Request::Delete { chat, user: sender, ids, for_everyone };
                call(&mut core, &mut journal, delete(vec![MessageId(1)], true));
                call(
                    &mut core,
                    &mut journal,
                    Request::Pin { chat: chats[7].0, user: chats[7].1, id: Some(MessageId(1)) },
                );
                let (chat_9, sender_9, _) = chats[9];
                call(&mut core, &mut journal, send_text(chat_9, sender_9, 9_000));
                let edit = Request::Edit { chat: chat_9, user: sender_9, id: MessageId(2), text: "new, edited".into() };
                call(&mut core, &mut journal, edit);
                call(
                    &mut core,
                    &mut journal,
                    Request::Edit { chat: chat_9, user: sender_9, id: MessageId(1), text: "old, edited".into() },
                );
                let delete_new =
                    Request::Delete { chat: chat_9, user: sender_9, ids: vec![MessageId(2)], for_everyone: true };
                call(&mut core, &mut journal, delete_new);
                let hide = Request::Delete { chat, user: reader, ids: vec![MessageId(1)], for_everyone: false };
                call(&mut core, &mut journal, hide);
                let delete_media = Request::Delete {
                    chat: media_chat,
                    user: media_sender,
                    ids: vec![media_ack.id],
                    for_everyone: true,
                };
                call(&mut core, &mut journal, delete_media);
            }
        }
        let bytes = core.finish_checkpoint().expect("every piece was written").to_vec();
        let mut restored = MessagingCore::new(ShardId(0), table.clone());
        restored.restore(&bytes).expect("restores");
        // Before any replay, exactly the state at the start (replay would hide a changed
        // message archived as it became, since applying an edit or delete again is harmless).
        let mut expected = MessagingCore::new(ShardId(0), table);
        expected.restore(&at_begin).expect("restores");
        assert_eq!(digest(restored.state()), digest(expected.state()));
        let media_message = restored.state().chats[&media_chat].message(media_ack.id).expect("the media message");
        assert!(media_message.media.is_some() && !media_message.deleted, "{media_message:?}");
        assert_eq!(restored.state().idempotency_order, expected.state().idempotency_order);
        for (kind, payload) in &journal.0[began_at..] {
            restored.replay(*kind, payload).expect("replays");
        }
        // Replay forgets the random_ids the week made old at once; the live core waited for
        // the checkpoint to end. Both forget them now, all at once.
        let now = UnixMs(1_700_000_000_000 + request + journal.1);
        core.state.expire_idempotency_grouped(now);
        restored.state.expire_idempotency_grouped(now);
        assert_eq!(digest(restored.state()), digest(core.state()));
        assert_eq!(restored.state().idempotency_order, core.state().idempotency_order);
        assert_ne!(began_at, journal.0.len(), "the state changed while the checkpoint was taken");

        // A checkpoint that lost a piece of the window is refused, not restored with a hole.
        let pieces = split_pieces(&bytes);
        let lost = pieces.iter().position(|(kind, _)| *kind == PIECE_IDEMPOTENCY).expect("window pieces");
        let damaged = join_pieces(
            SNAPSHOT_MAGIC,
            pieces.iter().enumerate().filter(|(index, _)| *index != lost).map(|(_, (_, piece))| *piece),
        );
        let mut refused = MessagingCore::new(ShardId(0), Arc::new(VShardTable::round_robin(1)));
        assert!(matches!(refused.restore(&damaged), Err(RestoreError::Format(_))));
    }

    /// One request on a one-shard core whose log is acknowledged and durable at once: its
    /// answer, and everything else the step produced.
    fn step(
        core: &mut MessagingCore,
        journal: &mut MemoryJournal,
        request: Request,
    ) -> (MessagingResult<Response>, Effects) {
        let origin = Origin { shard: ShardId(0), request: journal.0 };
        core.handle(origin, request, UnixMs(1_700_000_000_000), journal);
        let last = Lsn(journal.0 - 1);
        core.advance(last, last, journal);
        let mut effects = core.take_effects();
        let position = effects.replies.iter().position(|(replied, _)| *replied == origin).expect("answered");
        let (_, result) = effects.replies.remove(position);
        (result, effects)
    }

    /// A plain send of "text {random_id}".
    fn send_text(chat: ChatId, sender: UserId, random_id: u64) -> Request {
        Request::Send(SendRequest {
            chat,
            sender,
            session: None,
            random_id: RandomId(random_id),
            text: format!("text {random_id}"),
            reply_to: None,
            forwarded_from: None,
            media: None,
        })
    }

    fn try_call(core: &mut MessagingCore, journal: &mut MemoryJournal, request: Request) -> MessagingResult<Response> {
        step(core, journal, request).0
    }

    fn sign_up_user(core: &mut MessagingCore, journal: &mut MemoryJournal, phone: &str) -> UserId {
        let request = Request::SignUp { phone: phone.into(), first_name: "A".into(), last_name: String::new() };
        match call(core, journal, request) {
            Response::User(user) => user,
            other => panic!("sign up answered {other:?}"),
        }
    }

    fn create_authorization(
        core: &mut MessagingCore,
        journal: &mut MemoryJournal,
        user: UserId,
        secret_hash: [u8; SECRET_HASH_BYTES],
        device: &str,
    ) -> MessagingResult<AuthorizationId> {
        let request = Request::CreateAuthorization { user, secret_hash, device: device.into() };
        try_call(core, journal, request).map(|response| match response {
            Response::Authorization(id) => id,
            other => panic!("create_authorization answered {other:?}"),
        })
    }

    fn check_authorization(
        core: &mut MessagingCore,
        journal: &mut MemoryJournal,
        id: AuthorizationId,
        secret_hash: [u8; SECRET_HASH_BYTES],
    ) -> MessagingResult<UserId> {
        try_call(core, journal, Request::CheckAuthorization { id, secret_hash }).map(|response| match response {
            Response::User(user) => user,
            other => panic!("check_authorization answered {other:?}"),
        })
    }

    fn list_authorizations(
        core: &mut MessagingCore,
        journal: &mut MemoryJournal,
        user: UserId,
    ) -> Vec<AuthorizationInfo> {
        match call(core, journal, Request::ListAuthorizations { user }) {
            Response::Authorizations(list) => list,
            other => panic!("list_authorizations answered {other:?}"),
        }
    }

    /// A secret hash that differs from `[seed; 32]` only in byte `at` (none if `at` is 32).
    fn hash(seed: u8, at: usize) -> [u8; SECRET_HASH_BYTES] {
        let mut hash = [seed; SECRET_HASH_BYTES];
        if let Some(byte) = hash.get_mut(at) {
            *byte ^= 1;
        }
        hash
    }

    /// Proves an authorization checks with its own secret hash only, answers one error for a
    /// wrong hash (differing in its first or last byte), an unknown id or a revoked one, is
    /// listed with its device, and is revoked only by its own user, for good.
    #[test]
    fn authorizations_check_their_own_secret_until_revoked() {
        let table = Arc::new(VShardTable::round_robin(1));
        let mut core = MessagingCore::new(ShardId(0), table);
        let mut journal = MemoryJournal(1);
        let alice = sign_up_user(&mut core, &mut journal, "+15550001111");
        let bob = sign_up_user(&mut core, &mut journal, "+15550002222");
        let phone = create_authorization(&mut core, &mut journal, alice, hash(1, 32), "phone").expect("create");
        let laptop = create_authorization(&mut core, &mut journal, alice, hash(2, 32), "laptop").expect("create");
        assert_ne!(phone, laptop);
        assert_eq!(phone.vshard(), alice.vshard(), "an authorization lives on its user's vshard");

        assert_eq!(check_authorization(&mut core, &mut journal, phone, hash(1, 32)), Ok(alice));
        for wrong in [hash(2, 32), hash(1, 0), hash(1, SECRET_HASH_BYTES - 1)] {
            assert_eq!(check_authorization(&mut core, &mut journal, phone, wrong), Err(MessagingError::Unauthorized));
        }
        let unknown = AuthorizationId::compose(1000, alice.vshard());
        assert_eq!(
            check_authorization(&mut core, &mut journal, unknown, hash(1, 32)),
            Err(MessagingError::Unauthorized)
        );

        let list = list_authorizations(&mut core, &mut journal, alice);
        assert_eq!(
            list.iter().map(|info| (info.id, info.device.as_str())).collect::<Vec<_>>(),
            [(phone, "phone"), (laptop, "laptop")]
        );
        assert!(list.iter().all(|info| info.user == alice && info.created.0 > 0));
        assert!(list[0].last_used.is_some() && list[1].last_used.is_none(), "only a successful check counts as use");
        assert!(list_authorizations(&mut core, &mut journal, bob).is_empty());

        // Bob cannot revoke Alice's authorization, and is not told it exists.
        let revoke = |user, id| Request::RevokeAuthorization { user, id };
        assert_eq!(try_call(&mut core, &mut journal, revoke(bob, phone)), Err(MessagingError::Unauthorized));
        assert_eq!(try_call(&mut core, &mut journal, revoke(alice, phone)), Ok(Response::Done));
        assert_eq!(check_authorization(&mut core, &mut journal, phone, hash(1, 32)), Err(MessagingError::Unauthorized));
        assert_eq!(try_call(&mut core, &mut journal, revoke(alice, phone)), Err(MessagingError::Unauthorized));
        assert_eq!(check_authorization(&mut core, &mut journal, laptop, hash(2, 32)), Ok(alice));
        let list = list_authorizations(&mut core, &mut journal, alice);
        assert_eq!(list.iter().map(|info| info.id).collect::<Vec<_>>(), [laptop]);
    }

    /// Proves what creating an authorization refuses: an unknown user, a device description
    /// too long or with control characters, a hash of zeros, and more than
    /// `AUTHORIZATIONS_PER_USER_MAX` live ones; revoking one makes room, and ids are never
    /// given out twice.
    #[test]
    fn creating_authorizations_is_validated_and_capped() {
        let table = Arc::new(VShardTable::round_robin(1));
        let mut core = MessagingCore::new(ShardId(0), table);
        let mut journal = MemoryJournal(1);
        let alice = sign_up_user(&mut core, &mut journal, "+15550001111");
        let nobody = UserId::compose(999, alice.vshard());
        assert_eq!(
            create_authorization(&mut core, &mut journal, nobody, hash(1, 32), "phone"),
            Err(MessagingError::UnknownUser(nobody))
        );
        let longest = "é".repeat(AUTHORIZATION_DEVICE_MAX);
        create_authorization(&mut core, &mut journal, alice, hash(1, 32), &longest).expect("the longest device");
        let too_long = format!("{longest}x");
        assert_eq!(
            create_authorization(&mut core, &mut journal, alice, hash(1, 32), &too_long),
            Err(MessagingError::TooLong {
                what: "device",
                length: AUTHORIZATION_DEVICE_MAX + 1,
                limit: AUTHORIZATION_DEVICE_MAX
            })
        );
        assert!(matches!(
            create_authorization(&mut core, &mut journal, alice, hash(1, 32), "line\nbreak"),
            Err(MessagingError::InvalidArgument(_))
        ));
        assert!(matches!(
            create_authorization(&mut core, &mut journal, alice, [0; SECRET_HASH_BYTES], "phone"),
            Err(MessagingError::InvalidArgument(_))
        ));

        let mut ids = vec![list_authorizations(&mut core, &mut journal, alice)[0].id];
        while ids.len() < AUTHORIZATIONS_PER_USER_MAX {
            let device = format!("device {}", ids.len());
            ids.push(
                create_authorization(&mut core, &mut journal, alice, hash(2, 32), &device).expect("under the cap"),
            );
        }
        assert_eq!(
            create_authorization(&mut core, &mut journal, alice, hash(3, 32), "one too many"),
            Err(MessagingError::TooManyAuthorizations)
        );
        let newest = *ids.last().expect("some");
        let request = Request::RevokeAuthorization { user: alice, id: newest };
        assert_eq!(try_call(&mut core, &mut journal, request), Ok(Response::Done));
        let again = create_authorization(&mut core, &mut journal, alice, hash(3, 32), "again").expect("room again");
        assert!(again > newest, "a revoked id is not given out again");
        assert_eq!(list_authorizations(&mut core, &mut journal, alice).len(), AUTHORIZATIONS_PER_USER_MAX);
    }

    /// Proves a session connected under an authorization is refused unless the authorization is
    /// live and its user's, and that revoking it ends exactly the sessions connected under it:
    /// their shard drops them (the driver ends their streams) and they get no more updates.
    #[test]
    fn revoking_an_authorization_ends_its_sessions() {
        let table = Arc::new(VShardTable::round_robin(1));
        let mut core = MessagingCore::new(ShardId(0), table);
        let mut journal = MemoryJournal(1);
        let alice = sign_up_user(&mut core, &mut journal, "+15550001111");
        let bob = sign_up_user(&mut core, &mut journal, "+15550002222");
        let phone = create_authorization(&mut core, &mut journal, alice, hash(1, 32), "phone").expect("create");
        let laptop = create_authorization(&mut core, &mut journal, alice, hash(2, 32), "laptop").expect("create");
        let bobs = create_authorization(&mut core, &mut journal, bob, hash(3, 32), "bob's").expect("create");
        let session = |sequence| SessionId::compose(sequence, ShardId(0));
        let connect = |sequence, authorization| Request::ConnectAuthorized {
            user: alice,
            authorization,
            session: session(sequence),
        };
        assert!(matches!(try_call(&mut core, &mut journal, connect(1, phone)), Ok(Response::State(_))));
        assert!(matches!(try_call(&mut core, &mut journal, connect(2, laptop)), Ok(Response::State(_))));
        let plain = Request::Connect { user: alice, session: session(3) };
        assert!(matches!(try_call(&mut core, &mut journal, plain), Ok(Response::State(_))));
        assert_eq!(try_call(&mut core, &mut journal, connect(4, bobs)), Err(MessagingError::Unauthorized));

        let (result, effects) = step(&mut core, &mut journal, Request::RevokeAuthorization { user: alice, id: phone });
        assert_eq!(result, Ok(Response::Done));
        assert_eq!(effects.revoked, [session(1)], "only the session connected under the revoked authorization ends");
        assert_eq!(try_call(&mut core, &mut journal, connect(5, phone)), Err(MessagingError::Unauthorized));

        let Response::Chat(chat) = call(&mut core, &mut journal, Request::OpenPrivate { user: bob, peer: alice })
        else {
            panic!("open private")
        };
        let send = SendRequest {
            chat,
            sender: bob,
            session: None,
            random_id: RandomId(1),
            text: "still there?".into(),
            reply_to: None,
            forwarded_from: None,
            media: None,
        };
        let (result, effects) = step(&mut core, &mut journal, Request::Send(send));
        assert!(matches!(result, Ok(Response::Sent(_))), "{result:?}");
        let mut reached: Vec<SessionId> = effects.deliveries.iter().map(|(session, _)| *session).collect();
        reached.sort();
        assert_eq!(reached, [session(2), session(3)], "the revoked session gets no more updates");
    }

    /// Splits a checkpoint into its pieces: (kind, the piece's bytes with its kind, length and
    /// padding).
    fn split_pieces(bytes: &[u8]) -> Vec<(u64, &[u8])> {
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let mut pieces = Vec::new();
        let mut offset = 8;
        while offset < bytes.len() {
            let end = (offset + 16 + word(offset + 8) as usize).next_multiple_of(16);
            pieces.push((word(offset), &bytes[offset..end]));
            offset = end;
        }
        pieces
    }

    fn join_pieces<'a>(magic: &[u8; 8], pieces: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
        let mut bytes = magic.to_vec();
        pieces.into_iter().for_each(|piece| bytes.extend_from_slice(piece));
        bytes
    }

    /// A state with something of everything a box or a chat log holds: private chats and a
    /// group, messages, an edit, deletes for everyone and for one member, a pin, reads, and
    /// members added, promoted, removed and leaving. Deterministic (one clock, one order), so a
    /// checkpoint of it written by an older build is compared with the state built now.
    fn varied_state() -> MessagingCore {
        let table = Arc::new(VShardTable::round_robin(1));
        let mut core = MessagingCore::new(ShardId(0), table);
        let mut journal = MemoryJournal(1);
        let users: Vec<UserId> =
            (0..6).map(|index| sign_up_user(&mut core, &mut journal, &format!("+1555010{index:04}"))).collect();
        let mut random_id = 0;
        let mut privates = Vec::new();
        for pair in users.chunks(2) {
            let open = Request::OpenPrivate { user: pair[0], peer: pair[1] };
            let Response::Chat(chat) = call(&mut core, &mut journal, open) else { panic!() };
            privates.push((chat, pair[0], pair[1]));
            for turn in 0..5 {
                random_id += 1;
                call(&mut core, &mut journal, send_text(chat, pair[turn % 2], random_id));
            }
        }
        let create = Request::CreateChat {
            kind: ChatKind::Group,
            creator: users[0],
            title: "group".into(),
            members: users[1..4].to_vec(),
        };
        let Response::Chat(group) = call(&mut core, &mut journal, create) else { panic!() };
        for &sender in &users[0..4] {
            random_id += 1;
            call(&mut core, &mut journal, send_text(group, sender, random_id));
        }
        let (chat, sender, reader) = privates[0];
        call(&mut core, &mut journal, Request::Edit { chat, user: sender, id: MessageId(1), text: "edited".into() });
        call(
            &mut core,
            &mut journal,
            Request::Delete { chat, user: sender, ids: vec![MessageId(3)], for_everyone: true },
        );
        call(
            &mut core,
            &mut journal,
            Request::Delete { chat, user: reader, ids: vec![MessageId(2)], for_everyone: false },
        );
        call(&mut core, &mut journal, Request::Pin { chat, user: sender, id: Some(MessageId(4)) });
        call(&mut core, &mut journal, Request::ReadHistory { chat, user: reader, max_id: MessageId(5) });
        call(&mut core, &mut journal, Request::AddMember { chat: group, by: users[0], user: users[4] });
        call(&mut core, &mut journal, Request::Promote { chat: group, by: users[0], user: users[1] });
        call(&mut core, &mut journal, Request::RemoveMember { chat: group, by: users[0], user: users[2] });
        call(&mut core, &mut journal, Request::Leave { chat: group, user: users[3] });
        call(&mut core, &mut journal, Request::Pin { chat: group, user: users[0], id: Some(MessageId(2)) });
        call(&mut core, &mut journal, Request::ReadHistory { chat: group, user: users[4], max_id: MessageId(4) });
        for &sender in &[users[0], users[4], users[1]] {
            random_id += 1;
            call(&mut core, &mut journal, send_text(group, sender, random_id));
        }
        let delete = Request::Delete { chat: group, user: users[0], ids: vec![MessageId(1)], for_everyone: true };
        call(&mut core, &mut journal, delete);
        let (chat, sender, _) = privates[1];
        random_id += 1;
        call(&mut core, &mut journal, send_text(chat, sender, random_id));
        core
    }

    /// Proves a checkpoint written by the build before version 8 (`testdata/checkpoint-v7.bin`:
    /// [`varied_state`] with every box's entries and every chat's log inline) restores to the
    /// state this build makes of the same requests.
    #[test]
    fn a_version_7_checkpoint_restores_as_it_was_written() {
        let bytes = include_bytes!("testdata/checkpoint-v7.bin");
        assert_eq!(&bytes[..8], SNAPSHOT_MAGIC_V7);
        let mut restored = MessagingCore::new(ShardId(0), Arc::new(VShardTable::round_robin(1)));
        restored.restore(bytes).expect("restores");
        let live = varied_state();
        assert_eq!(digest(restored.state()), digest(live.state()));
        let entries: usize = restored.state().users.values().map(|user| user.update_box.entries.len()).sum();
        let logged: usize = restored.state().chats.values().map(|chat| chat.log.len()).sum();
        assert!(entries > 40 && logged > 30, "{entries} box entries, {logged} log entries");
        // Version 7 has no pieces of entries of their own.
        let mut pieces = split_pieces(bytes);
        let mut current = varied_state();
        let now = current.snapshot().to_vec();
        let extra = split_pieces(&now).into_iter().find(|(kind, _)| *kind == PIECE_BOX_ENTRIES).expect("some");
        pieces.push(extra);
        let mixed = join_pieces(SNAPSHOT_MAGIC_V7, pieces.iter().map(|(_, piece)| *piece));
        let mut refused = MessagingCore::new(ShardId(0), Arc::new(VShardTable::round_robin(1)));
        assert!(matches!(refused.restore(&mixed), Err(RestoreError::Format(_))));
    }

    /// Proves version 8 writes most box entries and log entries in their compact form, whole
    /// the rest (every kind of update is in [`varied_state`]), and restores every one as it
    /// was; and that the checkpoint is smaller for it than the same state in version 7.
    #[test]
    fn box_entries_and_chat_logs_are_written_apart_and_restored_whole() {
        let mut core = varied_state();
        let bytes = core.snapshot().to_vec();
        let mut restored = MessagingCore::new(ShardId(0), Arc::new(VShardTable::round_robin(1)));
        restored.restore(&bytes).expect("restores");
        assert_eq!(digest(restored.state()), digest(core.state()));

        let pieces = split_pieces(&bytes);
        let body = |piece: &[u8]| {
            let length = u64::from_le_bytes(piece[8..16].try_into().expect("8 bytes")) as usize;
            let mut aligned = rkyv::util::AlignedVec::<16>::new();
            aligned.extend_from_slice(&piece[16..16 + length]);
            aligned
        };
        let (mut compact, mut whole) = (0, 0);
        for (_, piece) in pieces.iter().filter(|(kind, _)| *kind == PIECE_BOX_ENTRIES) {
            let entries = rkyv::from_bytes::<BoxEntries, rkyv::rancor::Error>(&body(piece)).expect("decodes");
            compact += entries.chats.len();
            whole += entries.whole.len();
            let whole_messages = entries.whole.iter().filter(|entry| matches!(entry.update, Update::NewMessage { .. }));
            assert_eq!(whole_messages.count(), 0, "every new message of a box is in the columns");
        }
        let box_entries: usize = core.state().users.values().map(|user| user.update_box.entries.len()).sum();
        assert_eq!(compact + whole, box_entries);
        assert!(whole > 0 && compact > whole, "box entries: {compact} compact, {whole} whole");
        let (mut implied, mut whole) = (0, 0);
        for (_, piece) in pieces.iter().filter(|(kind, _)| *kind == PIECE_CHAT_LOG) {
            let log = rkyv::from_bytes::<ChatLog, rkyv::rancor::Error>(&body(piece)).expect("decodes");
            implied += log.ids.iter().filter(|id| id.0 != 0).count();
            whole += log.whole.len();
            let whole_messages = log.whole.iter().filter(|e| matches!(e.entry.update, Update::NewMessage { .. }));
            assert_eq!(whole_messages.count(), 0, "every new message of the log is implied by its message");
        }
        let logged: usize = core.state().chats.values().map(|chat| chat.log.len()).sum();
        assert_eq!(implied + whole, logged);
        assert!(whole > 0 && implied > whole, "log entries: {implied} implied, {whole} whole");
        let (mut plain, mut whole) = (0, 0);
        for (_, piece) in pieces.iter().filter(|(kind, _)| *kind == PIECE_CHAT_MESSAGES) {
            let messages = rkyv::from_bytes::<ChatMessages, rkyv::rancor::Error>(&body(piece)).expect("decodes");
            plain += messages.senders.len();
            whole += messages.whole.len();
            let plain_ones = messages.whole.iter().filter(|m| !m.deleted && m.edit_date.is_none());
            assert_eq!(plain_ones.count(), 0, "only edited and deleted messages are whole here");
        }
        let messages: usize = core.state().chats.values().map(|chat| chat.messages.len()).sum();
        assert_eq!(plain + whole, messages);
        assert!(whole > 0 && plain > whole, "messages: {plain} in columns, {whole} whole");
        let pieces_of = |kind| pieces.iter().filter(|(of, _)| *of == kind).count();
        assert!(pieces_of(PIECE_CHAT_MESSAGES) > pieces_of(PIECE_CHAT), "chats span several message pieces");
        let version_7 = include_bytes!("testdata/checkpoint-v7.bin");
        assert!(bytes.len() < version_7.len(), "{} bytes, {} in version 7", bytes.len(), version_7.len());
    }

    /// Proves a chat's messages restore whole from their pieces, a message that is more than a
    /// sender, a date, a random_id and a text included, and that a checkpoint missing any
    /// piece of them, or holding them out of order, is refused. A chat without messages has a
    /// piece too, so losing it is seen.
    #[test]
    fn chat_messages_restore_in_order_and_whole_or_not_at_all() {
        let mut core = varied_state();
        let mut journal = MemoryJournal(1000);
        let users: Vec<UserId> = core.state().users.keys().copied().collect();
        let Response::Chat(quiet) =
            call(&mut core, &mut journal, Request::OpenPrivate { user: users[0], peer: users[5] })
        else {
            panic!()
        };
        let (chat, sender) = {
            let chat = core.state().chats.values().find(|chat| chat.messages.len() >= 5).expect("a chat");
            (chat.id, chat.messages[0].sender)
        };
        let reply = SendRequest {
            chat,
            sender,
            session: None,
            random_id: RandomId(77),
            text: "réponse ✓".into(),
            reply_to: Some(MessageId(2)),
            forwarded_from: None,
            media: None,
        };
        call(&mut core, &mut journal, Request::Send(reply));
        let bytes = core.snapshot().to_vec();
        let mut restored = MessagingCore::new(ShardId(0), Arc::new(VShardTable::round_robin(1)));
        restored.restore(&bytes).expect("restores");
        assert_eq!(digest(restored.state()), digest(core.state()));
        assert!(restored.state().chats[&quiet].messages.is_empty());

        let pieces = split_pieces(&bytes);
        let chat_of = |piece: &[u8]| {
            let length = u64::from_le_bytes(piece[8..16].try_into().expect("8 bytes")) as usize;
            let mut aligned = rkyv::util::AlignedVec::<16>::new();
            aligned.extend_from_slice(&piece[16..16 + length]);
            rkyv::from_bytes::<ChatMessages, rkyv::rancor::Error>(&aligned).expect("decodes").chat
        };
        let of_quiet = pieces.iter().position(|(kind, piece)| *kind == PIECE_CHAT_MESSAGES && chat_of(piece) == quiet);
        let of_chat: Vec<usize> = (0..pieces.len())
            .filter(|&at| pieces[at].0 == PIECE_CHAT_MESSAGES && chat_of(pieces[at].1) == chat)
            .collect();
        assert!(of_chat.len() >= 2, "{of_chat:?}");
        let without = |lost: usize| {
            join_pieces(SNAPSHOT_MAGIC, pieces.iter().enumerate().filter(|(at, _)| *at != lost).map(|(_, p)| p.1))
        };
        let mut swapped: Vec<&[u8]> = pieces.iter().map(|(_, piece)| *piece).collect();
        swapped.swap(of_chat[0], of_chat[1]);
        let damaged = [
            without(of_quiet.expect("the quiet chat has its piece")),
            without(of_chat[0]),
            without(*of_chat.last().expect("some")),
            join_pieces(SNAPSHOT_MAGIC, swapped),
        ];
        for (index, damaged) in damaged.iter().enumerate() {
            let mut refused = MessagingCore::new(ShardId(0), Arc::new(VShardTable::round_robin(1)));
            assert!(matches!(refused.restore(damaged), Err(RestoreError::Format(_))), "damage {index} is refused");
        }
    }

    /// Proves the compact forms keep what does not fit them whole: a gap in the pts, an entry
    /// dated otherwise than its message, an event for one member, a message the chat does not
    /// hold as announced; and that a damaged piece is refused rather than restored otherwise.
    #[test]
    fn entries_that_do_not_fit_the_compact_form_are_kept_whole() {
        let new_message = |pts: u64, date: u64, id: u64, sender: u64| Sequenced {
            pts: Pts(pts),
            date: UnixMs(date),
            update: Update::NewMessage {
                chat: ChatId(9),
                id: MessageId(id),
                sender: UserId(sender),
                date: UnixMs(date),
            },
        };
        let mut dated_otherwise = new_message(8, 50, 4, 2);
        dated_otherwise.date = UnixMs(51);
        let entries: Chunked<Sequenced> = [
            new_message(3, 10, 1, 1),
            new_message(4, 20, 2, 2),
            Sequenced { pts: Pts(5), date: UnixMs(30), update: Update::PinMessage { chat: ChatId(9), id: None } },
            new_message(6, 40, 3, 1),
            // A gap: pts 7 is not here.
            new_message(8, 50, 4, 2),
            dated_otherwise,
            new_message(9, 60, 5, 1),
        ]
        .into_iter()
        .collect();
        let compact = BoxEntries::new(UserId(1), &entries);
        assert_eq!((compact.chats.len(), compact.whole_at.clone()), (4, vec![2, 4, 5]));
        assert_eq!(compact.into_entries().expect("restores"), entries);
        let mut damaged = BoxEntries::new(UserId(1), &entries);
        damaged.whole_at = vec![2, 5, 4];
        assert!(damaged.into_entries().is_err(), "whole entries out of order");
        let mut damaged = BoxEntries::new(UserId(1), &entries);
        damaged.dates.pop();
        assert!(damaged.into_entries().is_err(), "columns of different lengths");

        let message = |id: u64, sender: u64, date: u64| Message {
            id: MessageId(id),
            chat: ChatId(9),
            sender: UserId(sender),
            date: UnixMs(date),
            random_id: RandomId(id),
            text: String::new(),
            reply_to: None,
            forwarded_from: None,
            edit_date: None,
            deleted: false,
            media: None,
        };
        let mut chat = Chat::empty(ChatId(9));
        chat.messages = [message(1, 1, 10), message(2, 2, 20), message(3, 1, 30)].into_iter().collect();
        let announce = |pts: u64, id: u64, sender: u64, date: u64, only_for: Option<UserId>| ChatLogEntry {
            entry: new_message(pts, date, id, sender),
            only_for,
        };
        chat.log = [
            announce(1, 1, 1, 10, None),
            announce(2, 2, 1, 20, None),            // not the message's sender
            announce(3, 3, 1, 30, Some(UserId(1))), // for one member
            announce(5, 3, 1, 30, None),            // after a gap
            announce(6, 3, 1, 30, None),
        ]
        .into_iter()
        .collect();
        let log = ChatLog::new(&ChatAsOf::now(&chat));
        assert_eq!(log.ids, [MessageId(1), MessageId(0), MessageId(0), MessageId(0), MessageId(3)]);
        assert_eq!(format!("{:?}", log.into_log(&chat).expect("restores")), format!("{:?}", chat.log));
        let mut damaged = ChatLog::new(&ChatAsOf::now(&chat));
        damaged.ids[0] = MessageId(7);
        assert!(damaged.into_log(&chat).is_err(), "a message the chat does not hold");
        let mut damaged = ChatLog::new(&ChatAsOf::now(&chat));
        damaged.whole.pop();
        assert!(damaged.into_log(&chat).is_err(), "a whole entry missing");
        let mut damaged = ChatLog::new(&ChatAsOf::now(&chat));
        damaged.ids.remove(1);
        assert!(damaged.into_log(&chat).is_err(), "a whole entry left over");
    }

    /// Proves a full checkpoint holds the authorizations and their id sequences: restored, the
    /// live ones check, the revoked ones do not, and the next id is not one given out before
    /// (the newest was revoked, so only the stored sequence knows it). A checkpoint missing a
    /// user's authorizations is refused, and one of the previous version (before
    /// authorizations) still restores.
    #[test]
    fn checkpoints_hold_authorizations() {
        let table = Arc::new(VShardTable::round_robin(1));
        let mut core = MessagingCore::new(ShardId(0), table.clone());
        let mut journal = MemoryJournal(1);
        let alice = sign_up_user(&mut core, &mut journal, "+15550001111");
        let bob = sign_up_user(&mut core, &mut journal, "+15550002222");
        let kept = create_authorization(&mut core, &mut journal, alice, hash(1, 32), "kept").expect("create");
        let bobs = create_authorization(&mut core, &mut journal, bob, hash(2, 32), "bob's").expect("create");
        let revoked = create_authorization(&mut core, &mut journal, alice, hash(3, 32), "revoked").expect("create");
        assert!(revoked > kept && revoked > bobs);
        let request = Request::RevokeAuthorization { user: alice, id: revoked };
        assert_eq!(try_call(&mut core, &mut journal, request), Ok(Response::Done));

        let bytes = core.snapshot().to_vec();
        let mut restored = MessagingCore::new(ShardId(0), table.clone());
        restored.restore(&bytes).expect("restores");
        restored.resume(0, Lsn(journal.0 - 1));
        assert_eq!(digest(restored.state()), digest(core.state()));
        assert_eq!(check_authorization(&mut restored, &mut journal, kept, hash(1, 32)), Ok(alice));
        assert_eq!(check_authorization(&mut restored, &mut journal, bobs, hash(2, 32)), Ok(bob));
        assert_eq!(
            check_authorization(&mut restored, &mut journal, revoked, hash(3, 32)),
            Err(MessagingError::Unauthorized)
        );
        let next = create_authorization(&mut restored, &mut journal, alice, hash(4, 32), "next").expect("create");
        assert!(next > revoked, "the id sequence is restored: {next} after {revoked}");

        let pieces = split_pieces(&bytes);
        let kinds: Vec<u64> = pieces.iter().map(|(kind, _)| *kind).collect();
        assert_eq!(kinds.iter().filter(|&&kind| kind == PIECE_AUTHORIZATIONS).count(), 2, "{kinds:?}");
        let missing = join_pieces(
            SNAPSHOT_MAGIC,
            pieces.iter().filter(|(kind, _)| *kind != PIECE_AUTHORIZATIONS).map(|(_, piece)| *piece),
        );
        let first_authorizations = pieces.iter().position(|(kind, _)| *kind == PIECE_AUTHORIZATIONS).expect("some");
        let one_missing = join_pieces(
            SNAPSHOT_MAGIC,
            pieces.iter().enumerate().filter(|(index, _)| *index != first_authorizations).map(|(_, (_, p))| *p),
        );
        for damaged in [&missing, &one_missing] {
            let mut refused = MessagingCore::new(ShardId(0), table.clone());
            assert!(
                matches!(refused.restore(damaged), Err(RestoreError::Format(_))),
                "a checkpoint missing authorizations is refused"
            );
        }

        // Version 4 is version 5 without the media pieces, and cannot smuggle them in (nor the
        // idempotency pieces of version 7, nor the entries of version 8).
        let no_media = |kind: u64| {
            ![PIECE_MEDIA_RELEASES, PIECE_CHAT_MEDIA, PIECE_IDEMPOTENCY_COUNT, PIECE_IDEMPOTENCY].contains(&kind)
                && ![PIECE_BOX_ENTRIES, PIECE_CHAT_LOG, PIECE_CHAT_MESSAGES].contains(&kind)
        };
        let version_4 =
            join_pieces(SNAPSHOT_MAGIC_V4, pieces.iter().filter(|(kind, _)| no_media(*kind)).map(|(_, p)| *p));
        let mut old = MessagingCore::new(ShardId(0), table.clone());
        old.restore(&version_4).expect("a version 4 checkpoint restores");
        assert_eq!(old.state().authorizations.len(), 2);
        let mixed = join_pieces(SNAPSHOT_MAGIC_V4, pieces.iter().map(|(_, p)| *p));
        assert!(MessagingCore::new(ShardId(0), table.clone()).restore(&mixed).is_err(), "no media outbox in v4");

        // Version 3 is version 4 without the push pieces, and cannot smuggle them in.
        let no_push = |kind: u64| kind != PIECE_PUSH_HEADER && kind != PIECE_USER_PUSH && no_media(kind);
        let version_3 =
            join_pieces(SNAPSHOT_MAGIC_V3, pieces.iter().filter(|(kind, _)| no_push(*kind)).map(|(_, p)| *p));
        let mut old = MessagingCore::new(ShardId(0), table.clone());
        old.restore(&version_3).expect("a version 3 checkpoint restores");
        assert_eq!(old.state().authorizations.len(), 2);
        let mixed = join_pieces(SNAPSHOT_MAGIC_V3, pieces.iter().map(|(_, p)| *p));
        assert!(MessagingCore::new(ShardId(0), table.clone()).restore(&mixed).is_err(), "no push header in v3");

        // Version 2 is version 3 without the authorization pieces.
        let version_2 = join_pieces(
            SNAPSHOT_MAGIC_V2,
            pieces
                .iter()
                .filter(|(kind, _)| no_push(*kind))
                .filter(|(kind, _)| *kind != PIECE_AUTHORIZATIONS && *kind != PIECE_AUTHORIZATIONS_HEADER)
                .map(|(_, piece)| *piece),
        );
        let mut old = MessagingCore::new(ShardId(0), table.clone());
        old.restore(&version_2).expect("a version 2 checkpoint restores");
        assert_eq!(old.state().users.len(), 2);
        assert!(old.state().authorizations.is_empty() && old.state().authorization_owners.is_empty());
        // ... and a version 2 checkpoint cannot smuggle in authorization pieces.
        let mixed = join_pieces(
            SNAPSHOT_MAGIC_V2,
            pieces.iter().filter(|(kind, _)| *kind != PIECE_AUTHORIZATIONS_HEADER && no_push(*kind)).map(|(_, p)| *p),
        );
        let mut refused = MessagingCore::new(ShardId(0), table);
        assert!(refused.restore(&mixed).is_err(), "a version 2 checkpoint holds no authorizations");
    }

    /// Proves a checkpoint taken piece by piece while authorizations are created and revoked
    /// (of users already written and of users not yet written) is the state when it began:
    /// restored and replayed from there, it equals the live state.
    #[test]
    fn checkpoint_piece_by_piece_holds_authorizations_as_they_were() {
        let table = Arc::new(VShardTable::round_robin(1));
        let mut core = MessagingCore::new(ShardId(0), table.clone());
        core.resume(0, Lsn::ZERO);
        let mut journal = RecordingJournal::default();
        let mut request = 0;
        let mut call =
            |core: &mut MessagingCore, journal: &mut RecordingJournal, r: Request| journal.call(core, &mut request, r);
        let mut users = Vec::new();
        let mut authorizations = Vec::new();
        for index in 0..30u8 {
            let phone = format!("+1555000{index:04}");
            let request = Request::SignUp { phone, first_name: "U".into(), last_name: String::new() };
            let Response::User(user) = call(&mut core, &mut journal, request) else { panic!() };
            users.push(user);
            if index % 3 != 0 {
                let request = Request::CreateAuthorization { user, secret_hash: hash(index, 32), device: "d".into() };
                let Response::Authorization(id) = call(&mut core, &mut journal, request) else { panic!() };
                authorizations.push((user, id));
            }
        }
        core.begin_checkpoint();
        let began_at = journal.0.len();
        let mut done = false;
        let mut round = 0;
        while !done {
            done = core.checkpoint_step(4);
            round += 1;
            // Users without authorizations get one, users with one lose it.
            for &user in users.iter().skip(round % 3).step_by(5) {
                match authorizations.iter().position(|(holder, _)| *holder == user) {
                    Some(index) => {
                        let (_, id) = authorizations.remove(index);
                        call(&mut core, &mut journal, Request::RevokeAuthorization { user, id });
                    }
                    None => {
                        let secret_hash = hash(100 + round as u8, 32);
                        let request = Request::CreateAuthorization { user, secret_hash, device: "new".into() };
                        let Response::Authorization(id) = call(&mut core, &mut journal, request) else { panic!() };
                        authorizations.push((user, id));
                    }
                }
            }
        }
        let bytes = core.finish_checkpoint().expect("every piece was written").to_vec();
        let mut restored = MessagingCore::new(ShardId(0), table);
        restored.restore(&bytes).expect("restores");
        for (kind, payload) in &journal.0[began_at..] {
            restored.replay(*kind, payload).expect("replays");
        }
        assert_eq!(digest(restored.state()), digest(core.state()));
        assert_ne!(began_at, journal.0.len(), "authorizations changed while the checkpoint was taken");
    }

    /// Proves a checkpoint restores users, chats and messages, and a damaged one is refused.
    #[test]
    fn snapshot_restores_and_refuses_damage() {
        let table = Arc::new(VShardTable::round_robin(1));
        let mut core = MessagingCore::new(ShardId(0), table.clone());
        let mut journal = MemoryJournal(1);
        let sign_up =
            |phone: &str| Request::SignUp { phone: phone.into(), first_name: "A".into(), last_name: String::new() };
        let Response::User(alice) = call(&mut core, &mut journal, sign_up("+15550001111")) else { panic!() };
        let Response::User(bob) = call(&mut core, &mut journal, sign_up("+15550002222")) else { panic!() };
        let Response::Chat(chat) = call(&mut core, &mut journal, Request::OpenPrivate { user: alice, peer: bob })
        else {
            panic!()
        };
        for index in 1..=3u64 {
            let send = SendRequest {
                chat,
                sender: alice,
                session: None,
                random_id: RandomId(index),
                text: format!("message {index}"),
                reply_to: None,
                forwarded_from: None,
                media: None,
            };
            call(&mut core, &mut journal, Request::Send(send));
        }
        let bytes = core.snapshot().to_vec();
        let mut restored = MessagingCore::new(ShardId(0), table.clone());
        restored.restore(&bytes).expect("restores");
        restored.resume(0, Lsn(journal.0 - 1));
        let page = HistoryPage { limit: 10, ..HistoryPage::default() };
        let Response::Messages(history) =
            call(&mut restored, &mut journal, Request::GetHistory { chat, user: bob, page })
        else {
            panic!()
        };
        assert_eq!(
            history.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
            ["message 3", "message 2", "message 1"]
        );
        assert_eq!(restored.state().phones.len(), 2);
        assert_eq!(restored.state().users[&bob].update_box.pts, Pts(3));
        for cut in [0, 7, 16, bytes.len() / 2, bytes.len() - 17] {
            let mut damaged = MessagingCore::new(ShardId(0), table.clone());
            assert!(damaged.restore(&bytes[..cut]).is_err(), "a checkpoint cut at {cut} is refused");
        }
    }
}
