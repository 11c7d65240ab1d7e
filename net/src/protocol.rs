//! The messages inside frames. Every type here is an rkyv archive on the wire, validated
//! (bytecheck) before use; `docs/PROTOCOL.md` describes each one for clients in other languages.
//!
//! Ids are the engine's: a user, chat or authorization id carries its vshard in the low 12
//! bits, message ids are dense per chat from 1, and `pts` values are dense per box or chat.

// The archived twins rkyv derives are read only through validation; they need no Debug.
#![allow(missing_debug_implementations)]

macro_rules! wire_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash,
            rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
        )]
        pub struct $name(pub u64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

wire_id!(UserId);
wire_id!(ChatId);
wire_id!(MessageId);
wire_id!(
    /// A position in a user's update box or a chat's update sequence.
    Pts
);
wire_id!(
    /// A login (Telegram's "authorization"): one per device that logged in.
    AuthorizationId
);
wire_id!(
    /// Milliseconds since the Unix epoch.
    UnixMs
);
wire_id!(
    /// An upload in progress: a random number the server gave its uploader, who alone uses it.
    UploadId
);
wire_id!(
    /// A stored file. Like every id it carries the server's vshard in its low 12 bits; sending
    /// the file in a message also takes its access hash ([`FileRef`]).
    FileId
);

use crate::bytes::ByteVec;

// Handshake.

/// The client's first frame.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Hello {
    pub protocol_version: u32,
    /// Free text naming the client, e.g. "ferrogram-cli 0.1"; at most 128 bytes.
    pub client: String,
}

/// The server's answer to `Hello`.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Welcome {
    pub version: u32,
    pub server_time: UnixMs,
    pub limits: Limits,
}

/// The limits a client must respect; larger requests are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Limits {
    pub frame_max: u32,
    pub message_text_max: u32,
    pub history_page_max: u32,
    pub difference_limit_max: u32,
    pub dialogs_page_max: u32,
    pub ids_per_request_max: u32,
    /// Requests a connection may have in flight; more are answered `OVERLOADED`.
    pub requests_in_flight_max: u32,
}

// Requests.

/// What a client asks. Everything except the login requests (`SendCode`, `SignIn`, `SignUp`,
/// `Authenticate`) needs an authorized connection and acts as the logged-in user.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Request {
    // Login and authorizations.
    /// Sends a login code to `phone` (E.164: `+` and 8 to 15 digits).
    SendCode {
        phone: String,
    },
    /// Logs in with the code; answers `Authorized`, or `SignUpRequired` for a new phone
    /// (the code stays valid for the `SignUp` that follows).
    SignIn {
        phone: String,
        code: String,
    },
    /// Registers the phone (after `SignIn` answered `SignUpRequired`) and logs in.
    SignUp {
        phone: String,
        code: String,
        first_name: String,
        last_name: String,
    },
    /// Authorizes this connection with a token from an earlier login.
    Authenticate {
        token: Vec<u8>,
    },
    /// Revokes this connection's authorization.
    LogOut,
    GetAuthorizations,
    RevokeAuthorization {
        id: AuthorizationId,
    },

    // Users.
    GetSelf,
    GetUsers {
        ids: Vec<UserId>,
    },
    SetName {
        first_name: String,
        last_name: String,
    },
    /// `None` removes the username.
    SetUsername {
        username: Option<String>,
    },
    ResolveUsername {
        username: String,
    },
    ResolvePhone {
        phone: String,
    },
    SetBlocked {
        peer: UserId,
        blocked: bool,
    },

    // Chats.
    /// The private chat with `peer` (created on first use; one per pair).
    OpenPrivate {
        peer: UserId,
    },
    CreateGroup {
        title: String,
        members: Vec<UserId>,
    },
    CreateChannel {
        title: String,
    },
    JoinChat {
        chat: ChatId,
    },
    LeaveChat {
        chat: ChatId,
    },
    AddMember {
        chat: ChatId,
        user: UserId,
    },
    RemoveMember {
        chat: ChatId,
        user: UserId,
    },
    PromoteMember {
        chat: ChatId,
        user: UserId,
    },
    GetChat {
        chat: ChatId,
    },
    /// A page of members in user id order after `after`, at most `limit` (1 to 10,000).
    GetMembers {
        chat: ChatId,
        after: Option<UserId>,
        limit: u32,
    },

    // Messages.
    /// Idempotent per (chat, sender, random_id) for 24 hours.
    SendMessage {
        chat: ChatId,
        random_id: u64,
        text: String,
        reply_to: Option<MessageId>,
    },
    /// Copies `ids` of `from_chat` into `to_chat`; copy `i` uses `random_id + i`.
    ForwardMessages {
        from_chat: ChatId,
        ids: Vec<MessageId>,
        to_chat: ChatId,
        random_id: u64,
    },
    EditMessage {
        chat: ChatId,
        id: MessageId,
        text: String,
    },
    DeleteMessages {
        chat: ChatId,
        ids: Vec<MessageId>,
        for_everyone: bool,
    },
    /// `None` unpins.
    PinMessage {
        chat: ChatId,
        id: Option<MessageId>,
    },
    /// Newest first: messages below `offset_id` (0: from the newest), above `min_id` and
    /// below `max_id` (0: no bound), both exclusive as in Telegram; at most `limit` (≤ 100).
    GetHistory {
        chat: ChatId,
        offset_id: MessageId,
        limit: u32,
        min_id: MessageId,
        max_id: MessageId,
    },
    GetMessages {
        chat: ChatId,
        ids: Vec<MessageId>,
    },
    ReadHistory {
        chat: ChatId,
        max_id: MessageId,
    },
    /// Tells the chat's online members this user is typing; never stored.
    SetTyping {
        chat: ChatId,
    },

    // Sync.
    GetState,
    GetDifference {
        pts: Pts,
        limit: u32,
    },
    GetChatDifference {
        chat: ChatId,
        pts: Pts,
        limit: u32,
    },
    /// Newest first; the offset is the (date, chat) of the last dialog of the previous page.
    GetDialogs {
        offset: Option<DialogsOffset>,
        limit: u32,
    },
    /// Streams a chat fanned out on read (a channel) to this connection; answers its pts.
    SubscribeChat {
        chat: ChatId,
    },
    UnsubscribeChat {
        chat: ChatId,
    },
    GetPresence {
        user: UserId,
    },

    // Push notifications (appended: the tags above stay as they were).
    /// Registers a device for pushes (Telegram's `account.registerDevice`). Registering the
    /// same `kind` and `token` again updates its flags; past the per-user limit the oldest
    /// device is dropped. `token` is 1 to `DEVICE_TOKEN_BYTES_MAX` bytes.
    RegisterDevice {
        kind: DeviceKind,
        token: String,
        /// A development build of the app: APNs pushes go to the sandbox.
        app_sandbox: bool,
        /// The device wants no silent pushes for muted chats.
        no_muted: bool,
    },
    /// Answers `Unregistered`, saying whether the device was registered.
    UnregisterDevice {
        kind: DeviceKind,
        token: String,
    },
    ListDevices,
    /// This user's notification settings for one chat they are a member of.
    SetNotifySettings {
        chat: ChatId,
        /// No pushes before this date: 0 (or any past date) unmutes, `u64::MAX` mutes for ever.
        mute_until: UnixMs,
        /// Whether pushes may show the sender and the start of the text.
        show_previews: bool,
    },
    GetNotifySettings {
        chat: ChatId,
    },

    // Media (appended). Fields are in an order that keeps every variant within the 48 bytes
    // of `Request`, so the enum's size, and with it every request's layout, stays as it was.
    /// Opens an upload (answers `UploadStarted`). A retry with the same non-zero
    /// `client_upload_id` answers the same upload; 0 asks for a new one every time.
    /// `total_bytes`, when given, is checked against the server's maximum at once and against
    /// the parts and `UploadFinish` later.
    UploadStart {
        client_upload_id: u64,
        total_bytes: Option<u64>,
    },
    /// Stores part `part` (0-based) of an upload, in any order; sending a part again with the
    /// same bytes is harmless. Every part but the last has the same size: a multiple of 1 KiB
    /// dividing 512 KiB.
    UploadPart {
        upload_id: UploadId,
        part: u32,
        #[rkyv(with = ByteVec)]
        bytes: Vec<u8>,
    },
    /// Completes an upload of `parts` parts (answers `UploadFinished`, or `FILE_PARTS_MISSING`).
    UploadFinish {
        parts: u32,
        upload_id: UploadId,
        total_bytes: Option<u64>,
        name: String,
        mime_type: String,
    },
    /// Drops an upload and its parts (answers `Done`, also for an unknown upload).
    UploadCancel {
        upload_id: UploadId,
    },
    /// Reads `limit` bytes at `offset` of the file of media message `message` of `chat`, which
    /// the user must be able to see (answers `FileBytes`, fewer at the end of the file): both
    /// multiples of 4 KiB, the limit at most 1 MiB, the range inside one 1 MiB window. A file
    /// is read only through a message (DESIGN §7), never by its id.
    GetFile {
        chat: ChatId,
        message: MessageId,
        offset: u64,
        limit: u32,
    },
    /// The size, name and MIME type of the file of media message `message` of `chat`.
    GetFileInfo {
        chat: ChatId,
        message: MessageId,
    },

    // Media messages (appended). The fields do not fit the 48 bytes of `Request`, so they sit
    // in a box out of line and every other request's layout stays as it was.
    /// Sends an uploaded file as a photo or document with a caption (answers `Sent`, like
    /// `SendMessage`, and is idempotent per (chat, sender, `random_id`) the same way).
    SendMedia(Box<NewMediaMessage>),
}

/// A media message to send (`Request::SendMedia`).
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct NewMediaMessage {
    pub chat: ChatId,
    /// Not 0; a retry with the same one answers the original message.
    pub random_id: u64,
    /// The file: from `UploadFinished`, or from a media message the user can see.
    pub file: FileRef,
    pub kind: MediaKind,
    /// The message's text, at most `MEDIA_CAPTION_MAX` characters; may be empty.
    pub caption: String,
    pub reply_to: Option<MessageId>,
}

/// A file as a message names it: its id and access hash. `UploadFinished` gives it to the
/// uploader, and a media message to whoever can see the message; either may send the file in
/// a message of their own (`SendMedia`). Reading the file takes a message, not this. The access
/// hash is a secret all the same, so `Debug` leaves it out.
#[derive(Clone, Copy, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FileRef {
    pub id: FileId,
    pub access_hash: u64,
}

/// How a client shows a media message's file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum MediaKind {
    /// Shown inline as a picture.
    Photo,
    /// Shown as a file to download.
    Document,
}

/// The file a media message carries, as its readers see it before downloading.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MessageMedia {
    pub kind: MediaKind,
    /// What `SendMedia` takes to send the same file again (nothing is uploaded twice).
    pub file: FileRef,
    pub size: u64,
    pub name: String,
    pub mime_type: String,
}

impl std::fmt::Debug for FileRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileRef").field("id", &self.id).field("access_hash", &"<redacted>").finish()
    }
}

/// The push service a device token belongs to (Telegram's `token_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum DeviceKind {
    /// Apple Push Notification service: the token is the device token in hex.
    Apns,
    /// Firebase Cloud Messaging: the registration token.
    Fcm,
    /// A browser's Web Push subscription, delivered through the server's relay.
    WebPush,
    /// A token only the server's webhook relay understands.
    Webhook,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct DialogsOffset {
    pub date: UnixMs,
    pub chat: ChatId,
}

// Responses.

/// The answer to one request: the response or a typed error.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Outcome {
    Ok(Response),
    Err(ErrorBody),
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Response {
    Done,
    CodeSent {
        code_length: u8,
        timeout_s: u32,
    },
    SignUpRequired,
    /// The connection is authorized as `user`: live updates start after `state`. `token` is
    /// the new login's token after `SignIn`/`SignUp`, empty after `Authenticate`.
    Authorized {
        user: User,
        token: Vec<u8>,
        authorization: AuthorizationId,
        state: BoxState,
    },
    Authorizations(Vec<Authorization>),
    User(User),
    Users(Vec<User>),
    MaybeUser(Option<User>),
    ChatId(ChatId),
    Chat(Chat),
    Members(Vec<Member>),
    Sent(SentMessage),
    SentMany(Vec<SentMessage>),
    Messages(Vec<Message>),
    State(BoxState),
    Difference(Difference),
    ChatDifference(ChatDifference),
    Dialogs(Vec<Dialog>),
    Pts(Pts),
    Presence {
        online: bool,
        last_seen: UnixMs,
    },
    // Appended: the tags above stay as they were.
    /// The user's registered devices, oldest first.
    Devices(Vec<PushDevice>),
    /// The answer to `UnregisterDevice`: whether that device was registered.
    Unregistered {
        was_registered: bool,
    },
    NotifySettings(NotifySettings),
    // Media (appended).
    UploadStarted {
        upload_id: UploadId,
    },
    /// A part is stored; `duplicate` when it had been stored before (a retry).
    PartStored {
        duplicate: bool,
    },
    /// The upload is a file now. Keep `file`: sending it in a message (`SendMedia`) is how
    /// anyone, the uploader included, reads it; unsent, it is deleted after 24 hours.
    UploadFinished {
        file: FileRef,
        size: u64,
    },
    FileBytes {
        #[rkyv(with = ByteVec)]
        bytes: Vec<u8>,
    },
    FileInfo(FileInfo),
}

/// A stored file as its readers see it.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct FileInfo {
    pub size: u64,
    pub name: String,
    pub mime_type: String,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct User {
    pub id: UserId,
    /// Empty unless it is the requesting user's own profile.
    pub phone: String,
    pub first_name: String,
    pub last_name: String,
    pub username: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Authorization {
    pub id: AuthorizationId,
    pub device: String,
    pub created: UnixMs,
    /// Whether it is the connection's own authorization.
    pub current: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ChatKind {
    Private,
    Group,
    Channel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Role {
    Member,
    Admin,
    Creator,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Chat {
    pub id: ChatId,
    pub kind: ChatKind,
    pub title: String,
    pub members: u32,
    /// The chat's own update sequence (what `GetChatDifference` reads).
    pub pts: Pts,
    pub top_message: MessageId,
    pub pinned: Option<MessageId>,
    /// Synced with `GetChatDifference` rather than through the box.
    pub fanout_on_read: bool,
    pub epoch: u64,
    /// For a private chat: the other user.
    pub peer: Option<UserId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Member {
    pub user: UserId,
    pub role: Role,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SentMessage {
    pub chat: ChatId,
    pub id: MessageId,
    pub date: UnixMs,
    pub chat_pts: Pts,
    /// The sender's box pts of the message; `None` for a retry and for chats fanned out on read.
    pub sender_pts: Option<Pts>,
    /// This answered a retry with the original message.
    pub duplicate: bool,
}

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
    pub random_id: u64,
    pub text: String,
    pub reply_to: Option<MessageId>,
    pub forwarded_from: Option<ForwardedFrom>,
    pub edit_date: Option<UnixMs>,
    /// Deleted for everyone: the id stays taken, the text is gone.
    pub deleted: bool,
    /// A photo or document (`text` is then its caption); read its bytes with `GetFile`.
    pub media: Option<MessageMedia>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct BoxState {
    pub pts: Pts,
    pub date: UnixMs,
    pub unread: u64,
    /// Changes when acknowledged updates may have been lost: reload instead of trusting a pts.
    pub epoch: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum MemberChange {
    Joined,
    Added { by: UserId },
    Left,
    Removed { by: UserId },
    Promoted { by: UserId },
}

/// One entry of a box or a chat's sequence.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Update {
    NewMessage { chat: ChatId, id: MessageId, sender: UserId, date: UnixMs },
    EditMessage { chat: ChatId, id: MessageId, edit_date: UnixMs },
    DeleteMessages { chat: ChatId, ids: Vec<MessageId> },
    ReadInbox { chat: ChatId, max_id: MessageId, unread: u64 },
    ReadOutbox { chat: ChatId, max_id: MessageId },
    PinMessage { chat: ChatId, id: Option<MessageId> },
    ChatMember { chat: ChatId, user: UserId, change: MemberChange, fanout_on_read: bool },
    ChatSyncMode { chat: ChatId, fanout_on_read: bool },
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Sequenced {
    pub pts: Pts,
    pub date: UnixMs,
    pub update: Update,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Difference {
    pub updates: Vec<Sequenced>,
    /// The bodies of the messages the updates reference, where still visible.
    pub messages: Vec<Message>,
    pub state: BoxState,
    /// More updates remain: ask again from the last update's pts.
    pub slice: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ChatDifference {
    pub updates: Vec<Sequenced>,
    pub messages: Vec<Message>,
    pub pts: Pts,
    pub epoch: u64,
    pub slice: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Dialog {
    pub chat: ChatId,
    pub top_message: MessageId,
    pub top_date: UnixMs,
    pub read_inbox_max: MessageId,
    pub read_outbox_max: MessageId,
    pub unread: u64,
    pub fanout_on_read: bool,
}

/// A device registered for pushes.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PushDevice {
    pub kind: DeviceKind,
    pub token: String,
    pub app_sandbox: bool,
    pub no_muted: bool,
}

/// A user's notification settings for one chat. A chat never set has the defaults: not
/// muted, previews shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct NotifySettings {
    /// No pushes before this date: 0 is not muted, `u64::MAX` is muted for ever.
    pub mute_until: UnixMs,
    pub show_previews: bool,
}

impl NotifySettings {
    /// What a chat whose settings were never changed has.
    pub const DEFAULT: NotifySettings = NotifySettings { mute_until: UnixMs(0), show_previews: true };
    /// `mute_until` for a chat muted for ever.
    pub const MUTED_FOREVER: UnixMs = UnixMs(u64::MAX);

    /// Whether pushes are held back at `now`.
    pub fn muted_at(&self, now: UnixMs) -> bool {
        now < self.mute_until
    }
}

impl Default for NotifySettings {
    fn default() -> NotifySettings {
        NotifySettings::DEFAULT
    }
}

// Updates.

/// Unsolicited live events, batched.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Updates {
    pub events: Vec<LiveEvent>,
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum LiveEvent {
    /// A durable update of the user's box, with the message body for new and edited messages.
    Box {
        update: Sequenced,
        message: Option<Message>,
    },
    /// A durable update of a subscribed chat fanned out on read.
    Chat {
        chat: ChatId,
        update: Sequenced,
        message: Option<Message>,
    },
    Typing {
        chat: ChatId,
        user: UserId,
    },
    /// The stream lost events (the connection fell behind or the server restarted its
    /// session): catch up with `GetDifference` from the last pts applied.
    Resync,
    /// The connection's authorization was revoked; the server closes the connection.
    Revoked,
    /// A user whose presence this connection asked for (`GetPresence`) came online or went
    /// offline. Never stored; sent only while the connection is open.
    Presence {
        user: UserId,
        online: bool,
        last_seen: UnixMs,
    },
}

// Errors.

/// A typed error, for one request (in `Outcome::Err`) or for the connection (an `Error` frame).
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// For `FloodWait` and `Overloaded`: seconds to wait before retrying; 0 otherwise.
    pub retry_after_s: u32,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody { code, message: message.into(), retry_after_s: 0 }
    }

    pub fn flood_wait(retry_after_s: u32) -> ErrorBody {
        ErrorBody {
            code: ErrorCode::FloodWait,
            message: format!("too many requests: retry in {retry_after_s} s"),
            retry_after_s,
        }
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.name(), self.message)
    }
}

impl std::error::Error for ErrorBody {}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
#[repr(u16)]
pub enum ErrorCode {
    /// Rate limited: wait `retry_after_s`.
    FloodWait = 1,
    /// The request needs an authorized connection.
    AuthRequired = 2,
    /// The token is unknown, wrong or revoked.
    AuthInvalid = 3,
    PermissionDenied = 4,
    NotFound = 5,
    InvalidArgument = 6,
    TooLarge = 7,
    /// The server is busy: retry after `retry_after_s`.
    Overloaded = 8,
    Internal = 9,
    /// The login code is wrong, expired or out of attempts.
    PhoneCodeInvalid = 10,
    /// A unique name (username, phone) is taken, or a random_id was reused for other content.
    Conflict = 11,
    /// The update box no longer holds that pts: reload with `GetState`.
    DifferenceTooLong = 12,
    /// The frame or payload could not be decoded.
    Malformed = 13,
    /// The client's protocol version is not supported.
    UnsupportedVersion = 14,
    /// The server is shutting down.
    Unavailable = 15,
    /// `UploadFinish` found parts missing; the message counts them and names the first ones.
    FilePartsMissing = 16,
}

impl ErrorCode {
    /// The name used in logs, metrics and `docs/PROTOCOL.md`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::FloodWait => "FLOOD_WAIT",
            ErrorCode::AuthRequired => "AUTH_REQUIRED",
            ErrorCode::AuthInvalid => "AUTH_INVALID",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::Overloaded => "OVERLOADED",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::PhoneCodeInvalid => "PHONE_CODE_INVALID",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::DifferenceTooLong => "DIFFERENCE_TOO_LONG",
            ErrorCode::Malformed => "MALFORMED",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::FilePartsMissing => "FILE_PARTS_MISSING",
        }
    }

    pub const ALL: [ErrorCode; 16] = [
        ErrorCode::FloodWait,
        ErrorCode::AuthRequired,
        ErrorCode::AuthInvalid,
        ErrorCode::PermissionDenied,
        ErrorCode::NotFound,
        ErrorCode::InvalidArgument,
        ErrorCode::TooLarge,
        ErrorCode::Overloaded,
        ErrorCode::Internal,
        ErrorCode::PhoneCodeInvalid,
        ErrorCode::Conflict,
        ErrorCode::DifferenceTooLong,
        ErrorCode::Malformed,
        ErrorCode::UnsupportedVersion,
        ErrorCode::Unavailable,
        ErrorCode::FilePartsMissing,
    ];
}
