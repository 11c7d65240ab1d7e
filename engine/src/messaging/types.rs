//! The messaging model's public vocabulary (DESIGN §3): ids, what a user, chat, message and
//! update look like from outside, and the typed errors of every operation.

// rkyv's derive makes a public resolver type for each tuple-struct id, without `Debug`.
#![allow(missing_debug_implementations)]

use std::fmt;

use crate::ids::{ShardId, VShard, VSHARD_COUNT};
use crate::messaging::chunked::Chunked;

/// Bits of an id that hold its vshard: routing an id is a mask (DESIGN §2).
const VSHARD_BITS: u32 = VSHARD_COUNT.trailing_zeros();

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
        #[rkyv(derive(Debug, Hash, PartialEq, Eq, PartialOrd, Ord))]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

macro_rules! routed_id {
    ($name:ident) => {
        impl $name {
            /// The id numbered `sequence` on `vshard`.
            pub fn compose(sequence: u64, vshard: VShard) -> $name {
                $name((sequence << VSHARD_BITS) | vshard.index() as u64)
            }

            /// The vshard that owns this id: its low 12 bits.
            pub fn vshard(self) -> VShard {
                VShard::of(self.0)
            }
        }
    };
}

id_type!(
    /// A user: allocated by the vshard of the user's phone number at sign-up.
    UserId
);
routed_id!(UserId);
id_type!(
    /// A chat: a group or channel's is allocated by its creator's vshard, a private chat's by
    /// the vshard of its pair of users.
    ChatId
);
routed_id!(ChatId);
id_type!(
    /// A login authorization (Telegram's word for a logged-in device; an online live-update
    /// stream is a [`SessionId`]). Allocated on its user's vshard, so routing the id of a login
    /// token finds the user's shard.
    AuthorizationId
);
routed_id!(AuthorizationId);
id_type!(
    /// A message, dense from 1 within its chat.
    MessageId
);
id_type!(
    /// A position in an update sequence (a user's box or a chat's log), dense from 1.
    Pts
);
id_type!(
    /// A client-chosen number that makes a send idempotent within its (chat, sender).
    RandomId
);
id_type!(
    /// Milliseconds since the Unix epoch. Time enters the model only as an input.
    UnixMs
);

impl Pts {
    pub const ZERO: Pts = Pts(0);

    pub fn next(self) -> Pts {
        Pts(self.0 + 1)
    }
}

impl MessageId {
    pub fn next(self) -> MessageId {
        MessageId(self.0 + 1)
    }
}

/// An online session: the connection shard that holds its queue is in the low 8 bits.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct SessionId(pub u64);

impl SessionId {
    pub fn compose(sequence: u64, shard: ShardId) -> SessionId {
        SessionId((sequence << 8) | shard.0 as u64 & 0xff)
    }

    /// The shard that holds the session's queue.
    pub fn shard(self) -> ShardId {
        ShardId((self.0 & 0xff) as u16)
    }
}

const _: () = assert!(crate::config::SHARD_COUNT_MAX <= 256, "a session id keeps its shard in 8 bits");

/// The vshard of a private chat of `a` and `b`: the same whichever of them asks, and spread
/// over all vshards so no account's vshard holds all of its private chats (DESIGN §2).
pub fn pair_vshard(a: UserId, b: UserId) -> VShard {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&low.0.to_le_bytes());
    key[8..].copy_from_slice(&high.0.to_le_bytes());
    VShard::of(xxhash_rust::xxh3::xxh3_64(&key))
}

/// The vshard of a phone number (E.164) or a username, which owns its index entry.
pub fn key_vshard(key: &str) -> VShard {
    VShard::of(xxhash_rust::xxh3::xxh3_64(key.as_bytes()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ChatKind {
    /// Two users, addressed by the peer's user id.
    Private,
    /// Members and admins; every member may post.
    Group,
    /// Broadcast: admins post, subscribers read. Always fanned out on read.
    Channel,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Role {
    #[default]
    Member,
    Admin,
    Creator,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct UserProfile {
    pub id: UserId,
    pub phone: String,
    pub first_name: String,
    pub last_name: String,
    pub username: Option<String>,
    pub created: UnixMs,
}

/// Bytes of an authorization's secret hash. The host hashes the token's secret (the gateway
/// uses SHA-256); the engine stores the hash and compares it, never sees the secret.
pub const SECRET_HASH_BYTES: usize = 32;

/// A login authorization as its user's device list shows it (the secret hash stays inside).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizationInfo {
    pub id: AuthorizationId,
    pub user: UserId,
    pub device: String,
    pub created: UnixMs,
    /// The last successful check since the user's shard started, if any. Kept in memory only:
    /// a check never writes to the WAL, so this is lost on restart.
    pub last_used: Option<UnixMs>,
}

/// Where a forwarded message first appeared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ForwardedFrom {
    pub chat: ChatId,
    pub message: MessageId,
    pub sender: UserId,
    pub date: UnixMs,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Message {
    pub id: MessageId,
    pub chat: ChatId,
    pub sender: UserId,
    pub date: UnixMs,
    pub random_id: RandomId,
    pub text: String,
    pub reply_to: Option<MessageId>,
    /// Boxed, as `media` is, because few messages have one: a chat holds every message in
    /// memory, and these two inline cost 112 of a message's 224 bytes. The archive keeps the
    /// value inline ([`InlineBox`]), so records and checkpoints are laid out as before.
    #[rkyv(with = rkyv::with::Map<InlineBox>)]
    pub forwarded_from: Option<Box<ForwardedFrom>>,
    pub edit_date: Option<UnixMs>,
    /// Deleted for everyone: the id stays taken, the content is gone.
    pub deleted: bool,
    /// A photo or document; `text` is then its caption.
    ///
    /// Not in this type's archive, so the layout of records and checkpoints written before
    /// media messages existed still validates: the log carries it beside the message
    /// (`ChatChange::NewMediaMessage`) and checkpoints in a piece of its own. Build a chat
    /// change with `ChatChange::new_message`, which picks the variant that keeps it.
    #[rkyv(with = rkyv::with::Skip)]
    pub media: Option<Box<MessageMedia>>,
}

/// Archives a `Box<T>` as the `T` inside, in place: the archive has no pointer to follow, and
/// boxing a field changes what it costs in memory without changing the bytes on disk.
#[derive(Debug)]
pub struct InlineBox;

impl<T: rkyv::Archive> rkyv::with::ArchiveWith<Box<T>> for InlineBox {
    type Archived = T::Archived;
    type Resolver = T::Resolver;

    fn resolve_with(field: &Box<T>, resolver: T::Resolver, out: rkyv::Place<T::Archived>) {
        T::resolve(field, resolver, out);
    }
}

impl<T, S> rkyv::with::SerializeWith<Box<T>, S> for InlineBox
where
    T: rkyv::Serialize<S>,
    S: rkyv::rancor::Fallible + ?Sized,
{
    fn serialize_with(field: &Box<T>, serializer: &mut S) -> Result<T::Resolver, S::Error> {
        T::serialize(field, serializer)
    }
}

impl<T, D> rkyv::with::DeserializeWith<T::Archived, Box<T>, D> for InlineBox
where
    T: rkyv::Archive,
    T::Archived: rkyv::Deserialize<T, D>,
    D: rkyv::rancor::Fallible + ?Sized,
{
    fn deserialize_with(field: &T::Archived, deserializer: &mut D) -> Result<Box<T>, D::Error> {
        rkyv::Deserialize::deserialize(field, deserializer).map(Box::new)
    }
}

/// Archives a [`Chunked`] sequence as an empty vector, and restores it from whatever vector the
/// archive holds.
///
/// For a chat's messages and log and a box's entries, which checkpoints since version 8 write
/// in pieces of their own, most of them in a few bytes (`ChatMessages`, `ChatLog` and
/// `BoxEntries` in `messaging::core`). The archived layout is a plain vector's, so the chat
/// and user pieces of older checkpoints, which hold them inline, restore through the same type.
#[derive(Debug)]
pub struct ArchivedApart;

impl<T: rkyv::Archive> rkyv::with::ArchiveWith<Chunked<T>> for ArchivedApart {
    type Archived = rkyv::vec::ArchivedVec<T::Archived>;
    type Resolver = rkyv::vec::VecResolver;

    fn resolve_with(_: &Chunked<T>, resolver: Self::Resolver, out: rkyv::Place<Self::Archived>) {
        rkyv::vec::ArchivedVec::resolve_from_len(0, resolver, out);
    }
}

impl<T, S> rkyv::with::SerializeWith<Chunked<T>, S> for ArchivedApart
where
    T: rkyv::Serialize<S>,
    S: rkyv::rancor::Fallible + rkyv::ser::Allocator + rkyv::ser::Writer + ?Sized,
{
    fn serialize_with(_: &Chunked<T>, serializer: &mut S) -> Result<Self::Resolver, S::Error> {
        rkyv::vec::ArchivedVec::<T::Archived>::serialize_from_slice::<T, S>(&[], serializer)
    }
}

impl<T, D> rkyv::with::DeserializeWith<rkyv::vec::ArchivedVec<T::Archived>, Chunked<T>, D> for ArchivedApart
where
    T: rkyv::Archive,
    T::Archived: rkyv::Deserialize<T, D>,
    D: rkyv::rancor::Fallible + ?Sized,
{
    fn deserialize_with(
        field: &rkyv::vec::ArchivedVec<T::Archived>,
        deserializer: &mut D,
    ) -> Result<Chunked<T>, D::Error> {
        let mut out = Chunked::new();
        for item in field.iter() {
            out.push_back(rkyv::Deserialize::deserialize(item, deserializer)?);
        }
        Ok(out)
    }
}

/// How a client shows a media message's file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum MediaKind {
    Photo,
    Document,
}

/// A media message's file: a reference into the media store (DESIGN §7) and what a client
/// shows before downloading. The message holds a reference on the file, so the bytes live as
/// long as some message that carries it; `access_hash` is handed out only with the message.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MessageMedia {
    pub kind: MediaKind,
    /// The media store's file id (`crate::media::FileId::raw`).
    pub file: u64,
    pub access_hash: u64,
    pub size: u64,
    pub name: String,
    pub mime_type: String,
}

/// A chat as a member sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatInfo {
    pub id: ChatId,
    pub kind: ChatKind,
    pub title: String,
    pub members: usize,
    /// The chat's own update sequence (what `get_chat_difference` reads).
    pub pts: Pts,
    pub top_message: MessageId,
    pub pinned: Option<MessageId>,
    /// Whether members sync it with `get_chat_difference` rather than through their boxes.
    pub fanout_on_read: bool,
    pub epoch: u64,
    /// For a private chat: the two users.
    pub private_pair: Option<(UserId, UserId)>,
}

/// What happened to a chat's membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum MemberChange {
    Joined,
    Added { by: UserId },
    Left,
    Removed { by: UserId },
    Promoted { by: UserId },
}

/// One entry of a user's box or of a chat's log, as `get_difference`, `get_chat_difference`
/// and the live stream hand it out.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Update {
    NewMessage {
        chat: ChatId,
        id: MessageId,
        sender: UserId,
        date: UnixMs,
    },
    EditMessage {
        chat: ChatId,
        id: MessageId,
        edit_date: UnixMs,
    },
    DeleteMessages {
        chat: ChatId,
        ids: Vec<MessageId>,
    },
    ReadInbox {
        chat: ChatId,
        max_id: MessageId,
        unread: u64,
    },
    ReadOutbox {
        chat: ChatId,
        max_id: MessageId,
    },
    PinMessage {
        chat: ChatId,
        id: Option<MessageId>,
    },
    /// A membership change; `fanout_on_read` says how the chat is synced now.
    ChatMember {
        chat: ChatId,
        user: UserId,
        change: MemberChange,
        fanout_on_read: bool,
    },
    /// The chat crossed `FANOUT_MAX`: sync it per chat (`fanout_on_read`) or through the box.
    ChatSyncMode {
        chat: ChatId,
        fanout_on_read: bool,
    },
    /// Messages deleted for everyone, with each one's sender, so a box can lower its unread
    /// count. (Appended: `DeleteMessages`, which logs written before this variant hold for
    /// both kinds of delete, now means delete-for-me only.)
    DeleteMessagesForEveryone {
        chat: ChatId,
        /// Boxed: every box and chat log entry is an `Update`, and this variant's two vectors
        /// inline made each entry 16 bytes larger (56 rather than 40). Archived inline
        /// ([`InlineBox`]), so records and checkpoints are laid out as before.
        #[rkyv(with = InlineBox)]
        deleted: Box<DeletedMessages>,
    },
}

/// The messages of one delete for everyone: `senders[i]` sent `ids[i]`.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct DeletedMessages {
    pub ids: Vec<MessageId>,
    pub senders: Vec<UserId>,
}

impl Update {
    pub fn chat(&self) -> ChatId {
        match self {
            Update::NewMessage { chat, .. }
            | Update::EditMessage { chat, .. }
            | Update::DeleteMessages { chat, .. }
            | Update::DeleteMessagesForEveryone { chat, .. }
            | Update::ReadInbox { chat, .. }
            | Update::ReadOutbox { chat, .. }
            | Update::PinMessage { chat, .. }
            | Update::ChatMember { chat, .. }
            | Update::ChatSyncMode { chat, .. } => *chat,
        }
    }

    /// The message whose body a client needs to show this update, if any.
    pub fn message(&self) -> Option<MessageId> {
        match self {
            Update::NewMessage { id, .. } | Update::EditMessage { id, .. } => Some(*id),
            _ => None,
        }
    }
}

/// An update with its place in a sequence.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Sequenced {
    pub pts: Pts,
    pub date: UnixMs,
    pub update: Update,
}

/// The state of a user's box.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoxState {
    pub pts: Pts,
    pub date: UnixMs,
    /// Unread messages over the chats synced through the box.
    pub unread: u64,
    /// Bumped when acknowledged updates may have been lost: reload instead of trusting a pts.
    pub epoch: u64,
}

/// What a send acknowledges (DESIGN §3): the message id and date, and the sender's new pts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendAck {
    pub chat: ChatId,
    pub id: MessageId,
    pub date: UnixMs,
    /// The chat's pts of the new message.
    pub chat_pts: Pts,
    /// The sender's box pts of this message; `None` for a retry of a message already sent
    /// (the first send's answer carried it) and for chats fanned out on read.
    pub sender_pts: Option<Pts>,
    /// Whether this answered a retry with the original message.
    pub duplicate: bool,
}

/// A page of `get_difference`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub updates: Vec<Sequenced>,
    /// The bodies of the messages the updates reference (where still visible).
    pub messages: Vec<Message>,
    pub state: BoxState,
    /// More updates remain after this slice: ask again from `state.pts`... of the last update.
    pub slice: bool,
}

/// A page of `get_chat_difference`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatDifference {
    pub updates: Vec<Sequenced>,
    pub messages: Vec<Message>,
    pub pts: Pts,
    pub epoch: u64,
    pub slice: bool,
}

/// A user's dialog (a chat in their chat list).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dialog {
    pub chat: ChatId,
    pub top_message: MessageId,
    pub top_date: UnixMs,
    pub read_inbox_max: MessageId,
    pub read_outbox_max: MessageId,
    pub unread: u64,
    pub fanout_on_read: bool,
}

/// A live event on a session's stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LiveEvent {
    /// A durable update of the user's box, with the new message's body when the update is
    /// one (`None` for other updates, and for a new message whose fan-out was re-sent after a
    /// restart: fetch it with `get_messages`).
    Box { update: Sequenced, message: Option<std::sync::Arc<Message>> },
    /// A durable update of a chat fanned out on read that the session subscribed to.
    Chat { chat: ChatId, update: Sequenced, message: Option<std::sync::Arc<Message>> },
    /// Someone is typing in a chat (ephemeral).
    Typing { chat: ChatId, user: UserId },
    /// A watched user came online or went offline (ephemeral; see `Messenger::watch_presence`).
    Presence { user: UserId, online: bool, last_seen: UnixMs },
    /// The session's queue overflowed or the engine restarted it: resync with `get_difference`.
    Resync,
    /// The authorization the session connected under was revoked: the session is gone and
    /// this is its stream's last event (see `Messenger::connect_authorized`).
    Revoked,
}

/// Why a messaging operation was refused or failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessagingError {
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    #[error("{what} is too long: {length} > {limit}")]
    TooLong { what: &'static str, length: usize, limit: usize },
    #[error("no such user {0}")]
    UnknownUser(UserId),
    #[error("no such chat {0}")]
    UnknownChat(ChatId),
    #[error("no such message {1} in chat {0}")]
    UnknownMessage(ChatId, MessageId),
    #[error("the phone number is already registered to user {0}")]
    PhoneTaken(UserId),
    #[error("the username is taken")]
    UsernameTaken,
    /// The authorization does not exist, was revoked, is not the user's, or the secret does
    /// not match: deliberately one error, so an answer never says which.
    #[error("not authorized")]
    Unauthorized,
    #[error("the user has too many authorizations: revoke one first")]
    TooManyAuthorizations,
    #[error("user {0} is not a member of the chat")]
    NotMember(UserId),
    #[error("this needs a chat admin")]
    NotAdmin,
    #[error("the user has blocked this conversation")]
    Blocked,
    #[error("only the message's sender may do this")]
    NotSender,
    #[error("the random_id was already used for a different message")]
    RandomIdReused,
    #[error("the update box no longer holds pts {0}: reload the state")]
    DifferenceTooLong(Pts),
    #[error("the shard's queue is full; retry later")]
    Overloaded,
    #[error("the engine is shutting down or a shard stopped")]
    Unavailable,
    #[error("storage failed: {0}")]
    Storage(String),
    /// The file of a media message does not exist (never uploaded, expired, or its last
    /// message is gone) or the access hash is wrong: deliberately one error.
    #[error("the file is not available: upload it again")]
    FileUnavailable,
    #[error("message {1} of chat {0} has no media")]
    NoMedia(ChatId, MessageId),
}

pub type MessagingResult<T> = Result<T, MessagingError>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every message of every chat, and every entry of every box and chat log, is held in
    /// memory: proves their sizes on a 64-bit target stay where the boxing of rare fields put
    /// them (they were 224, 56, 72 and 88 bytes).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_message_and_a_box_entry_stay_small() {
        assert_eq!(std::mem::size_of::<Message>(), 120);
        assert_eq!(std::mem::size_of::<Update>(), 40);
        assert_eq!(std::mem::size_of::<Sequenced>(), 56);
        assert_eq!(std::mem::size_of::<crate::messaging::state::ChatLogEntry>(), 72);
    }

    /// Proves `ArchivedApart` writes an empty vector, and restores a sequence from the plain
    /// vector older checkpoints hold inline, in order, across chunks.
    #[test]
    fn a_sequence_archives_apart_and_restores_from_an_inline_vector() {
        #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
        struct Inline {
            list: Vec<u64>,
        }
        // Not named `Apart`: its archived type would be `ArchivedApart`.
        #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
        struct Separate {
            #[rkyv(with = ArchivedApart)]
            list: Chunked<u64>,
        }
        let empty = rkyv::to_bytes::<rkyv::rancor::Error>(&Inline { list: Vec::new() }).expect("archives");
        for len in [0u64, 1, 5, 511, 512, 513, 2000] {
            let values: Vec<u64> = (0..len).collect();
            let inline = rkyv::to_bytes::<rkyv::rancor::Error>(&Inline { list: values.clone() }).expect("archives");
            let apart = Separate { list: values.iter().copied().collect() };
            let apart_bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&apart).expect("archives");
            assert_eq!(apart_bytes.as_slice(), empty.as_slice(), "{len}: archived as an empty vector");
            let restored = rkyv::from_bytes::<Separate, rkyv::rancor::Error>(&inline).expect("restores");
            assert!(restored.list.iter().eq(values.iter()), "{len}");
            assert_eq!(restored.list.len(), values.len());
        }
    }
}
