//! What goes into and comes out of a shard's messaging core: the requests the embedding API
//! routes to the shard owning their key, their responses, the messages shards send each other,
//! and the effects a step leaves for its driver to perform.

use std::sync::Arc;

use crate::ids::ShardId;
use crate::messaging::media::PendingRelease;
use crate::messaging::push::{DeviceKind, NotifySettings, PendingPush, PushDevice, PushRecipient, PushSource};
use crate::messaging::types::{
    AuthorizationId, AuthorizationInfo, BoxState, ChatDifference, ChatId, ChatInfo, ChatKind, Dialog, ForwardedFrom,
    LiveEvent, Message, MessageId, MessageMedia, MessagingResult, Pts, RandomId, Role, SendAck, Sequenced, SessionId,
    UnixMs, Update, UserId, UserProfile, SECRET_HASH_BYTES,
};

/// Names a request inside the shard that received it from the host, so a reply produced on
/// another shard finds its way back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub shard: ShardId,
    pub request: u64,
}

/// A request, sent to the shard that owns the vshard of its key (noted on each variant).
/// Checks that need another shard (that a user given by id exists) are `Messenger`'s.
#[derive(Clone, Debug)]
pub enum Request {
    /// Phone's vshard.
    SignUp {
        phone: String,
        first_name: String,
        last_name: String,
    },
    /// Phone's vshard.
    LookupPhone {
        phone: String,
    },
    /// The users' shard (all of them on it).
    GetUsers {
        users: Vec<UserId>,
    },
    /// User's vshard.
    SetName {
        user: UserId,
        first_name: String,
        last_name: String,
    },
    /// Username's vshard: takes the index entry if it is free or already the user's.
    ClaimUsername {
        username: String,
        user: UserId,
    },
    /// Username's vshard.
    ReleaseUsername {
        username: String,
        user: UserId,
    },
    /// Username's vshard.
    LookupUsername {
        username: String,
    },
    /// User's vshard: sets the profile's username, answering the previous one.
    SetUsername {
        user: UserId,
        username: Option<String>,
    },
    /// Pair's vshard: the private chat of the two users, created if new. Both must exist:
    /// their profiles live on other shards, so `Messenger` checks that before it asks.
    OpenPrivate {
        user: UserId,
        peer: UserId,
    },
    /// Pair's vshard.
    SetBlocked {
        user: UserId,
        peer: UserId,
        blocked: bool,
    },
    /// Creator's vshard.
    CreateChat {
        kind: ChatKind,
        creator: UserId,
        title: String,
        members: Vec<UserId>,
    },
    /// Chat's vshard, and every request below it up to `GetState`.
    Join {
        chat: ChatId,
        user: UserId,
    },
    Leave {
        chat: ChatId,
        user: UserId,
    },
    AddMember {
        chat: ChatId,
        by: UserId,
        user: UserId,
    },
    RemoveMember {
        chat: ChatId,
        by: UserId,
        user: UserId,
    },
    Promote {
        chat: ChatId,
        by: UserId,
        user: UserId,
    },
    Send(SendRequest),
    Edit {
        chat: ChatId,
        user: UserId,
        id: MessageId,
        text: String,
    },
    Delete {
        chat: ChatId,
        user: UserId,
        ids: Vec<MessageId>,
        for_everyone: bool,
    },
    Pin {
        chat: ChatId,
        user: UserId,
        id: Option<MessageId>,
    },
    GetHistory {
        chat: ChatId,
        user: UserId,
        page: HistoryPage,
    },
    GetMessages {
        chat: ChatId,
        user: UserId,
        ids: Vec<MessageId>,
    },
    /// Message bodies for one user's difference: every chat on this shard at once.
    FetchMessages {
        user: UserId,
        wanted: Vec<(ChatId, Vec<MessageId>)>,
    },
    ReadHistory {
        chat: ChatId,
        user: UserId,
        max_id: MessageId,
    },
    GetChat {
        chat: ChatId,
        user: UserId,
    },
    /// Members in user id order after `after`, at most `limit` (clamped to `MEMBERS_PAGE_MAX`).
    GetMembers {
        chat: ChatId,
        user: UserId,
        after: Option<UserId>,
        limit: usize,
    },
    GetChatDifference {
        chat: ChatId,
        user: UserId,
        pts: Pts,
        limit: usize,
    },
    /// Current top message and unread count of chats fanned out on read, for dialogs.
    ChatTops {
        user: UserId,
        chats: Vec<ChatId>,
    },
    Typing {
        chat: ChatId,
        user: UserId,
    },
    /// User's vshard.
    GetState {
        user: UserId,
    },
    GetDifference {
        user: UserId,
        pts: Pts,
        limit: usize,
    },
    GetDialogs {
        user: UserId,
    },
    GetPresence {
        user: UserId,
    },
    /// User's vshard: answers the user's presence, like `GetPresence`, and pushes
    /// `LiveEvent::Presence` to `session` whenever the user comes online or goes offline.
    WatchPresence {
        session: SessionId,
        user: UserId,
    },
    /// User's vshard: a new login authorization of the user, answered with its id.
    CreateAuthorization {
        user: UserId,
        secret_hash: [u8; SECRET_HASH_BYTES],
        device: String,
    },
    /// The id's vshard (its user's): the user, if the authorization is live and the hash
    /// matches. Never writes to the log.
    CheckAuthorization {
        id: AuthorizationId,
        secret_hash: [u8; SECRET_HASH_BYTES],
    },
    /// User's vshard.
    ListAuthorizations {
        user: UserId,
    },
    /// User's vshard: revokes one of the user's authorizations and ends the sessions that
    /// connected under it.
    RevokeAuthorization {
        user: UserId,
        id: AuthorizationId,
    },
    /// The session's shard (`session.shard()`): registers it with the user's shard, which
    /// answers the box state in the same step.
    Connect {
        user: UserId,
        session: SessionId,
    },
    /// The session's shard: as `Connect`, for a session opened under one of the user's
    /// authorizations; the user's shard refuses it unless the authorization is live, and
    /// ends it when the authorization is revoked.
    ConnectAuthorized {
        user: UserId,
        authorization: AuthorizationId,
        session: SessionId,
    },
    Disconnect {
        session: SessionId,
    },
    SubscribeChat {
        session: SessionId,
        chat: ChatId,
    },
    UnsubscribeChat {
        session: SessionId,
        chat: ChatId,
    },
    /// User's vshard.
    RegisterDevice {
        user: UserId,
        device: PushDevice,
    },
    /// User's vshard: answers whether the device was registered.
    UnregisterDevice {
        user: UserId,
        kind: DeviceKind,
        token: String,
    },
    /// User's vshard.
    ListDevices {
        user: UserId,
    },
    /// User's vshard. `Messenger` checks on the chat's shard first that the user is a member.
    SetNotifySettings {
        user: UserId,
        chat: ChatId,
        settings: NotifySettings,
    },
    /// User's vshard.
    GetNotifySettings {
        user: UserId,
        chat: ChatId,
    },
    /// Chat's vshard: up to `limit` members after `after`, in user id order. For the host's
    /// push directory: no membership check.
    MembersPage {
        chat: ChatId,
        after: Option<UserId>,
        limit: usize,
    },
    /// The users' shard (all of them on it): which to notify of a post to `chat`, with their
    /// devices, settings and badge: those with a device, no online session, not muted.
    PushRecipients {
        chat: ChatId,
        users: Vec<UserId>,
    },
    /// The shard addressed: up to `limit` jobs of its push outbox after sequence `after`.
    PendingPushes {
        after: u64,
        limit: usize,
    },
    /// The shard addressed: the host finished these jobs of its outbox.
    PushesDone {
        sequences: Vec<u64>,
    },
    /// Chat's vshard: the media of message `id`, if `user` can see it (a file is read only
    /// through a message its reader can see, DESIGN §7).
    GetMessageMedia {
        chat: ChatId,
        user: UserId,
        id: MessageId,
    },
    /// The shard addressed: up to `limit` references of its release outbox after `after`.
    PendingMediaReleases {
        after: u64,
        limit: usize,
    },
    /// The shard addressed: these references were given back.
    MediaReleasesDone {
        sequences: Vec<u64>,
    },
    /// Chat's vshard: for each (sender, random_id, file), whether a live message of the chat
    /// holds that file under that key. A key answered `false` is refused to media sends for a
    /// while, so a send racing the leak sweep's release cannot append a message whose
    /// reference is being given back.
    CheckMediaHolders {
        chat: ChatId,
        holders: Vec<(UserId, RandomId, u64)>,
    },
}

#[derive(Clone, Debug)]
pub struct SendRequest {
    pub chat: ChatId,
    pub sender: UserId,
    /// The sender's live session the request came through: its answer carries the sender's
    /// box pts, and that session is not sent the same update live (see `Author`).
    pub session: Option<SessionId>,
    pub random_id: RandomId,
    pub text: String,
    pub reply_to: Option<MessageId>,
    /// Set by the API layer after it read the original (which the sender must be able to see).
    pub forwarded_from: Option<ForwardedFrom>,
    /// Set by the API layer after it took the message's reference on the file.
    pub media: Option<MessageMedia>,
}

/// `get_history`'s window: newest first, starting below `offset_id` (0: from the top), within
/// `(min_id, max_id)` when those are not 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryPage {
    pub offset_id: MessageId,
    pub limit: usize,
    pub min_id: MessageId,
    pub max_id: MessageId,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Done,
    User(UserId),
    MaybeUser(Option<UserId>),
    Profiles(Vec<UserProfile>),
    Username(Option<String>),
    Chat(ChatId),
    Sent(SendAck),
    Messages(Vec<Message>),
    ChatInfo(ChatInfo),
    Members(Vec<(UserId, Role)>),
    ChatDifference(ChatDifference),
    Dialogs(Vec<Dialog>),
    State(BoxState),
    BoxDifference { updates: Vec<Sequenced>, state: BoxState, slice: bool },
    Pts(Pts),
    Presence { online: bool, last_seen: UnixMs },
    Authorization(AuthorizationId),
    Authorizations(Vec<AuthorizationInfo>),
    Devices(Vec<PushDevice>),
    Unregistered(bool),
    NotifySettings(NotifySettings),
    PendingPushes(Vec<PendingPush>),
    PushRecipients(Vec<PushRecipient>),
    Media(MessageMedia),
    MediaReleases(Vec<PendingRelease>),
    HolderStates(Vec<bool>),
}

/// What one shard's core sends another's.
#[derive(Debug)]
pub enum PeerMessage {
    /// Box updates of a chat event for users on the receiving shard.
    FanOut(FanOut),
    /// The receiving shard's boxes durably hold (chat, chat_pts, part).
    FanOutDone {
        chat: ChatId,
        chat_pts: Pts,
        part: u8,
        from: ShardId,
    },
    Reply {
        origin: Origin,
        result: MessagingResult<Response>,
    },
    Deliver(Vec<(SessionId, LiveEvent)>),
    ChatLive {
        chat: ChatId,
        update: Sequenced,
        message: Option<Arc<Message>>,
    },
    /// `authorization`: the one the session connected under, if any.
    RegisterSession {
        session: SessionId,
        user: UserId,
        authorization: Option<AuthorizationId>,
        origin: Origin,
    },
    SessionRegistered {
        session: SessionId,
        user: UserId,
        origin: Origin,
        result: MessagingResult<Response>,
    },
    UnregisterSession {
        session: SessionId,
        user: UserId,
    },
    /// The authorization `session` connected under was revoked: drop the session and end its
    /// stream. The user's shard has already forgotten it.
    EndRevokedSession {
        session: SessionId,
    },
    /// `counted` is false when the session already subscribed (only the pts is wanted).
    Subscribe {
        chat: ChatId,
        user: UserId,
        session: SessionId,
        origin: Origin,
        counted: bool,
    },
    Subscribed {
        chat: ChatId,
        user: UserId,
        session: SessionId,
        origin: Origin,
        counted: bool,
        result: MessagingResult<Response>,
    },
    Unsubscribe {
        chat: ChatId,
        user: UserId,
        shard: ShardId,
    },
    /// To `user`'s shard: `session` is gone, stop pushing `user`'s presence to it.
    Unwatch {
        session: SessionId,
        user: UserId,
    },
    /// `user` is no longer a member: drop their sessions from the chat's subscribers.
    DropSubscriber {
        chat: ChatId,
        user: UserId,
    },
    Typing {
        chat: ChatId,
        user: UserId,
        to: Vec<UserId>,
    },
}

#[derive(Debug)]
pub struct FanOut {
    pub chat: ChatId,
    pub chat_pts: Pts,
    /// Which of the event's consequences this is (a read has two).
    pub part: u8,
    pub date: UnixMs,
    pub update: Update,
    pub users: Vec<UserId>,
    pub from: ShardId,
    /// The sender is among `users`: answer the send with its new pts.
    pub sender: Option<SenderReply>,
    /// For a new message: what a push to an offline recipient shows.
    /// Shared by the fan-outs of one message to every destination shard.
    pub push: Option<Arc<PushSource>>,
    /// For a new message: its body, for the live updates of the boxes it reaches (`None`
    /// when re-sent after a restart; the gateway then fetches it).
    pub message: Option<Arc<Message>>,
}

#[derive(Clone, Copy, Debug)]
pub struct SenderReply {
    pub origin: Origin,
    pub user: UserId,
    /// The session the request came through, which the answer serves instead of a live
    /// update of the same box pts.
    pub session: Option<SessionId>,
    /// A send's acknowledgement (completed with the user's box pts); `None` answers `Done`.
    pub ack: Option<SendAck>,
}

impl SenderReply {
    /// The answer, once the user's box holds the update (at `box_pts`, if it took one).
    pub fn response(&self, box_pts: Option<Pts>) -> Response {
        match self.ack {
            Some(ack) => Response::Sent(SendAck { sender_pts: box_pts.or(ack.sender_pts), ..ack }),
            None => Response::Done,
        }
    }
}

/// What a step of the core leaves for its driver to do.
#[derive(Debug, Default)]
pub struct Effects {
    /// Answers to requests that arrived on this shard.
    pub replies: Vec<(Origin, MessagingResult<Response>)>,
    pub peers: Vec<(ShardId, PeerMessage)>,
    /// Events for sessions held on this shard.
    pub deliveries: Vec<(SessionId, LiveEvent)>,
    /// Durable box updates of users with no online session (push uses these).
    pub offline: Vec<(UserId, Sequenced)>,
    /// Sessions held on this shard whose authorization was revoked: end their streams with
    /// `LiveEvent::Revoked`.
    pub revoked: Vec<SessionId>,
    /// Push jobs of this shard's outbox that just became durable, for the host's dispatcher.
    pub pushes: Vec<PendingPush>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.replies.is_empty()
            && self.peers.is_empty()
            && self.deliveries.is_empty()
            && self.offline.is_empty()
            && self.revoked.is_empty()
            && self.pushes.is_empty()
    }
}
