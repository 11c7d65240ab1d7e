//! The messaging embedding API: [`Messenger`], a cloneable `Send + Sync` handle whose async
//! methods route each request to the shard owning its key (DESIGN §2) and join the few
//! operations that span shards (sign-up checks, usernames, forwards, differences, dialogs).

use std::collections::BTreeMap;
use std::future::Future;

use crate::engine::Engine;
use crate::ids::{ShardId, VShard};
use crate::media::{Holder, MediaError, ReferenceError};
use crate::messaging::driver::Connected;
use crate::messaging::limits::{DIALOGS_PAGE_MAX, MESSAGE_IDS_MAX, PUSH_PAGE_MAX};
use crate::messaging::media::PendingRelease;
use crate::messaging::protocol::{HistoryPage, Request, Response, SendRequest};
use crate::messaging::push::{DeviceKind, NotifySettings, PendingPush, PushDevice, PushRecipient};
use crate::messaging::types::*;

/// The messaging API over an [`Engine`].
#[derive(Clone, Debug)]
pub struct Messenger {
    engine: Engine,
}

/// A message to send.
#[derive(Clone, Debug, Default)]
pub struct NewMessage {
    pub random_id: RandomId,
    pub text: String,
    pub reply_to: Option<MessageId>,
}

/// A photo or document to send: the file a finished upload gave (`file` is
/// `FileId::raw`), and the caption (at most `CAPTION_CHARS_MAX` characters, may be empty).
#[derive(Clone, Debug)]
pub struct NewMediaMessage {
    pub random_id: RandomId,
    pub caption: String,
    pub reply_to: Option<MessageId>,
    pub kind: MediaKind,
    pub file: u64,
    pub access_hash: u64,
}

/// Who sends a message: the user, and the live session the request came through, if any.
///
/// That session learns the update the send puts in the user's box from the answer
/// (`SendAck::sender_pts`) and is not sent the same update live: a send costs its own device
/// one frame, not two. The user's other sessions get it live as usual. A `UserId` alone
/// (`Author::from`) sends through no session, and every session gets the update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Author {
    pub user: UserId,
    pub session: Option<SessionId>,
}

impl From<UserId> for Author {
    fn from(user: UserId) -> Author {
        Author { user, session: None }
    }
}

/// The media store's key for the reference of message (chat, sender, random_id).
pub fn holder(chat: ChatId, sender: UserId, random_id: RandomId) -> Holder {
    Holder { chat: chat.0, sender: sender.0, random_id: random_id.0 }
}

/// Where a dialogs page starts: after this (date, chat) in the newest-first order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DialogsOffset {
    pub date: UnixMs,
    pub chat: ChatId,
}

macro_rules! expect {
    ($answer:expr, $variant:pat => $value:expr) => {
        match $answer? {
            $variant => Ok($value),
            other => Err(unexpected(other)),
        }
    };
}

fn unexpected(response: Response) -> MessagingError {
    MessagingError::Storage(format!("unexpected answer from a shard: {response:?}"))
}

impl Messenger {
    pub fn new(engine: Engine) -> Messenger {
        Messenger { engine }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn shard(&self, vshard: VShard) -> ShardId {
        self.engine.shard_of(vshard)
    }

    fn call(
        &self,
        vshard: VShard,
        request: Request,
    ) -> impl Future<Output = MessagingResult<Response>> + Send + 'static {
        self.engine.messaging(self.shard(vshard), request)
    }

    // Users.

    /// Registers a user with a phone number (E.164, `+` and digits).
    pub async fn sign_up(&self, phone: &str, first_name: &str, last_name: &str) -> MessagingResult<UserId> {
        let request =
            Request::SignUp { phone: phone.into(), first_name: first_name.into(), last_name: last_name.into() };
        expect!(self.call(key_vshard(phone), request).await, Response::User(user) => user)
    }

    pub async fn lookup_phone(&self, phone: &str) -> MessagingResult<Option<UserId>> {
        let request = Request::LookupPhone { phone: phone.into() };
        expect!(self.call(key_vshard(phone), request).await, Response::MaybeUser(user) => user)
    }

    /// Profiles of `users`, in the order asked; one request per shard. Unknown users are an error.
    pub async fn get_users(&self, users: &[UserId]) -> MessagingResult<Vec<UserProfile>> {
        let mut by_shard: BTreeMap<ShardId, Vec<UserId>> = BTreeMap::new();
        for &user in users {
            by_shard.entry(self.shard(user.vshard())).or_default().push(user);
        }
        let calls: Vec<_> = by_shard
            .into_iter()
            .map(|(shard, users)| self.engine.messaging(shard, Request::GetUsers { users }))
            .collect();
        let mut found = Vec::new();
        for call in calls {
            found.extend(expect!(call.await, Response::Profiles(profiles) => profiles)?);
        }
        Ok(users.iter().filter_map(|user| found.iter().find(|p| p.id == *user).cloned()).collect())
    }

    pub async fn set_name(&self, user: UserId, first_name: &str, last_name: &str) -> MessagingResult<()> {
        let request = Request::SetName { user, first_name: first_name.into(), last_name: last_name.into() };
        expect!(self.call(user.vshard(), request).await, Response::Done => ())
    }

    /// Sets (or with `None` clears) the user's unique username. The index entry on the
    /// username's vshard is taken first, so two users can never both hold a name; a crash
    /// between the steps can leave a claimed name unused (it stays the user's).
    pub async fn set_username(&self, user: UserId, username: Option<&str>) -> MessagingResult<()> {
        let normalized = username.map(crate::messaging::core::normalize_username).transpose()?;
        if let Some(name) = &normalized {
            let claim = Request::ClaimUsername { username: name.clone(), user };
            expect!(self.call(key_vshard(name), claim).await, Response::Done => ())?;
        }
        let set = Request::SetUsername { user, username: normalized.clone() };
        let previous = expect!(self.call(user.vshard(), set).await, Response::Username(previous) => previous)?;
        if let Some(previous) = previous.filter(|previous| Some(previous) != normalized.as_ref()) {
            let release = Request::ReleaseUsername { username: previous.clone(), user };
            expect!(self.call(key_vshard(&previous), release).await, Response::Done => ())?;
        }
        Ok(())
    }

    pub async fn lookup_username(&self, username: &str) -> MessagingResult<Option<UserId>> {
        let name = crate::messaging::core::normalize_username(username)?;
        let request = Request::LookupUsername { username: name.clone() };
        expect!(self.call(key_vshard(&name), request).await, Response::MaybeUser(user) => user)
    }

    /// Blocks (or unblocks) `peer` for `user`: neither can then start or write to their
    /// private chat.
    pub async fn set_blocked(&self, user: UserId, peer: UserId, blocked: bool) -> MessagingResult<()> {
        self.get_users(&[user, peer]).await?;
        let request = Request::SetBlocked { user, peer, blocked };
        expect!(self.call(pair_vshard(user, peer), request).await, Response::Done => ())
    }

    // Chats.

    /// The private chat of `user` and `peer`, created on first use. Both users must exist.
    pub async fn open_private(&self, user: UserId, peer: UserId) -> MessagingResult<ChatId> {
        self.get_users(&[user, peer]).await?;
        let request = Request::OpenPrivate { user, peer };
        expect!(self.call(pair_vshard(user, peer), request).await, Response::Chat(chat) => chat)
    }

    pub async fn create_group(&self, creator: UserId, title: &str, members: &[UserId]) -> MessagingResult<ChatId> {
        self.create_chat(ChatKind::Group, creator, title, members).await
    }

    pub async fn create_channel(&self, creator: UserId, title: &str) -> MessagingResult<ChatId> {
        self.create_chat(ChatKind::Channel, creator, title, &[]).await
    }

    async fn create_chat(
        &self,
        kind: ChatKind,
        creator: UserId,
        title: &str,
        members: &[UserId],
    ) -> MessagingResult<ChatId> {
        let mut everyone = vec![creator];
        everyone.extend_from_slice(members);
        self.get_users(&everyone).await?;
        let request = Request::CreateChat { kind, creator, title: title.into(), members: members.to_vec() };
        expect!(self.call(creator.vshard(), request).await, Response::Chat(chat) => chat)
    }

    pub async fn join(&self, chat: ChatId, user: UserId) -> MessagingResult<()> {
        self.get_users(&[user]).await?;
        expect!(self.call(chat.vshard(), Request::Join { chat, user }).await, Response::Done => ())
    }

    pub async fn leave(&self, chat: ChatId, user: UserId) -> MessagingResult<()> {
        expect!(self.call(chat.vshard(), Request::Leave { chat, user }).await, Response::Done => ())
    }

    pub async fn add_member(&self, chat: ChatId, by: UserId, user: UserId) -> MessagingResult<()> {
        self.get_users(&[user]).await?;
        expect!(self.call(chat.vshard(), Request::AddMember { chat, by, user }).await, Response::Done => ())
    }

    pub async fn remove_member(&self, chat: ChatId, by: UserId, user: UserId) -> MessagingResult<()> {
        expect!(self.call(chat.vshard(), Request::RemoveMember { chat, by, user }).await, Response::Done => ())
    }

    pub async fn promote(&self, chat: ChatId, by: UserId, user: UserId) -> MessagingResult<()> {
        expect!(self.call(chat.vshard(), Request::Promote { chat, by, user }).await, Response::Done => ())
    }

    pub async fn get_chat(&self, chat: ChatId, user: UserId) -> MessagingResult<ChatInfo> {
        expect!(self.call(chat.vshard(), Request::GetChat { chat, user }).await, Response::ChatInfo(info) => info)
    }

    /// A page of the chat's members in user id order: those after `after` (from the first
    /// with `None`), at most `limit` (clamped to `MEMBERS_PAGE_MAX`). A short page is the last.
    pub async fn get_members(
        &self,
        chat: ChatId,
        user: UserId,
        after: Option<UserId>,
        limit: usize,
    ) -> MessagingResult<Vec<(UserId, Role)>> {
        let request = Request::GetMembers { chat, user, after, limit };
        expect!(self.call(chat.vshard(), request).await, Response::Members(m) => m)
    }

    // Messages.

    /// Sends a message; idempotent per (chat, sender, random_id) within the idempotency window.
    pub fn send(
        &self,
        chat: ChatId,
        sender: impl Into<Author>,
        message: NewMessage,
    ) -> impl Future<Output = MessagingResult<SendAck>> + Send + 'static {
        let Author { user: sender, session } = sender.into();
        let NewMessage { random_id, text, reply_to } = message;
        let request = Request::Send(SendRequest {
            chat,
            sender,
            session,
            random_id,
            text,
            reply_to,
            forwarded_from: None,
            media: None,
        });
        let call = self.call(chat.vshard(), request);
        async move { expect!(call.await, Response::Sent(ack) => ack) }
    }

    /// Forwards messages `ids` of `from` (which `user` must be able to see) into `to`; each
    /// copy keeps its original sender and chat. `random_id` is the first copy's; the others
    /// follow it.
    pub async fn forward(
        &self,
        user: impl Into<Author>,
        from: ChatId,
        ids: &[MessageId],
        to: ChatId,
        random_id: RandomId,
    ) -> MessagingResult<Vec<SendAck>> {
        let Author { user, session } = user.into();
        // Copy i takes random_id + i: none may be 0, so none may wrap past the largest. Checked
        // before any copy takes a file reference or is appended.
        if random_id.0 == 0 {
            return Err(MessagingError::InvalidArgument("random_id must not be 0"));
        }
        if random_id.0.checked_add(ids.len().saturating_sub(1) as u64).is_none() {
            return Err(MessagingError::InvalidArgument("a copy's random_id (random_id + i) would wrap to 0"));
        }
        let originals = self.get_messages(from, user, ids).await?;
        let mut acks = Vec::with_capacity(originals.len());
        for (index, original) in originals.into_iter().enumerate() {
            let forwarded_from = original.forwarded_from.map_or(
                ForwardedFrom {
                    chat: original.chat,
                    message: original.id,
                    sender: original.sender,
                    date: original.date,
                },
                |from| *from,
            );
            let random_id = RandomId(random_id.0 + index as u64);
            // The copy takes its own reference on the same file: no bytes move. If the original
            // was deleted meanwhile and its file is gone, the forward fails here, before
            // anything is appended.
            let media = match original.media {
                Some(media) => {
                    Some(self.take_media(to, user, random_id, media.kind, media.file, media.access_hash).await?)
                }
                None => None,
            };
            let holder = media.as_ref().map(|media| (media.file, holder(to, user, random_id)));
            let request = Request::Send(SendRequest {
                chat: to,
                sender: user,
                session,
                random_id,
                text: original.text,
                reply_to: None,
                forwarded_from: Some(forwarded_from),
                media,
            });
            let ack = expect!(self.call(to.vshard(), request).await, Response::Sent(ack) => ack)?;
            if let Some((file, holder)) = holder.filter(|_| !ack.duplicate) {
                self.confirm_media(file, holder);
            }
            acks.push(ack);
        }
        Ok(acks)
    }

    /// Sends a photo or document already uploaded to the media store (`file` and its
    /// `access_hash`, from `finish_upload`), with `caption` as the message's text.
    ///
    /// The message takes its reference on the file's shard first, keyed by (chat, sender,
    /// random_id), then is appended: a message never points at a file that could be freed.
    /// A retry takes the same key again (idempotent). If the send is refused or the process
    /// dies in between, the reference is a leak the media upkeep's sweep finds and gives back.
    pub async fn send_media(
        &self,
        chat: ChatId,
        sender: impl Into<Author>,
        message: NewMediaMessage,
    ) -> MessagingResult<SendAck> {
        let Author { user: sender, session } = sender.into();
        let NewMediaMessage { random_id, caption, reply_to, kind, file, access_hash } = message;
        if random_id.0 == 0 {
            return Err(MessagingError::InvalidArgument("random_id must not be 0"));
        }
        let media = self.take_media(chat, sender, random_id, kind, file, access_hash).await?;
        let request = Request::Send(SendRequest {
            chat,
            sender,
            session,
            random_id,
            text: caption,
            reply_to,
            forwarded_from: None,
            media: Some(media),
        });
        let ack = expect!(self.call(chat.vshard(), request).await, Response::Sent(ack) => ack)?;
        // A duplicate's message may have been deleted since (its reference given back, and
        // taken again just now by this retry): only the leak check, which asks the chat, may
        // decide about that reference.
        if !ack.duplicate {
            self.confirm_media(file, holder(chat, sender, random_id));
        }
        Ok(ack)
    }

    /// Takes the reference of the message (chat, sender, random_id) on `file` and describes
    /// the file as the message will show it.
    async fn take_media(
        &self,
        chat: ChatId,
        sender: UserId,
        random_id: RandomId,
        kind: MediaKind,
        file: u64,
        access_hash: u64,
    ) -> MessagingResult<MessageMedia> {
        let (file_id, hash) = (crate::media::FileId::from_raw(file), crate::media::AccessHash::new(access_hash));
        let info =
            self.engine.media().take_holder(file_id, hash, holder(chat, sender, random_id)).await.map_err(|error| {
                match error {
                    MediaError::Overloaded => MessagingError::Overloaded,
                    MediaError::Unavailable => MessagingError::Unavailable,
                    MediaError::Store(ReferenceError::Storage(error)) => MessagingError::Storage(error.to_string()),
                    MediaError::Store(_) => MessagingError::FileUnavailable,
                }
            })?;
        Ok(MessageMedia { kind, file, access_hash, size: info.size, name: info.name, mime_type: info.mime_type })
    }

    /// Tells the file's shard that a durable message holds this reference, so the leak check
    /// need not ask about it. Not waited for: the request is queued when the call is made (see
    /// `Engine::request_raw`), and a confirmation lost to a crash only costs the leak check a
    /// question, so the sender's acknowledgement does not wait for another group commit.
    fn confirm_media(&self, file: u64, holder: Holder) {
        drop(self.engine.media().confirm_holder(crate::media::FileId::from_raw(file), holder));
    }

    /// The media of message `id` of `chat`, if `user` can see it: the only way to a file's
    /// access hash for anyone but its uploader.
    pub async fn message_media(&self, chat: ChatId, user: UserId, id: MessageId) -> MessagingResult<MessageMedia> {
        let request = Request::GetMessageMedia { chat, user, id };
        expect!(self.call(chat.vshard(), request).await, Response::Media(media) => media)
    }

    /// Up to `limit` references of `shard`'s release outbox after sequence `after`, each
    /// queued by a durable tombstone (for the media upkeep).
    pub async fn pending_media_releases(
        &self,
        shard: ShardId,
        after: u64,
        limit: usize,
    ) -> MessagingResult<Vec<PendingRelease>> {
        let request = Request::PendingMediaReleases { after, limit };
        expect!(self.engine.messaging(shard, request).await, Response::MediaReleases(pending) => pending)
    }

    /// Marks references of `shard`'s release outbox given back.
    pub async fn media_releases_done(&self, shard: ShardId, sequences: Vec<u64>) -> MessagingResult<()> {
        let request = Request::MediaReleasesDone { sequences };
        expect!(self.engine.messaging(shard, request).await, Response::Done => ())
    }

    /// For each (sender, random_id, file) of `chat`, whether a live message holds the file
    /// under that key; keys answered `false` are refused to media sends for a while (see
    /// `Request::CheckMediaHolders`).
    pub async fn check_media_holders(
        &self,
        chat: ChatId,
        holders: Vec<(UserId, RandomId, u64)>,
    ) -> MessagingResult<Vec<bool>> {
        let request = Request::CheckMediaHolders { chat, holders };
        expect!(self.call(chat.vshard(), request).await, Response::HolderStates(states) => states)
    }

    pub async fn edit(&self, chat: ChatId, user: UserId, id: MessageId, text: &str) -> MessagingResult<()> {
        let request = Request::Edit { chat, user, id, text: text.into() };
        expect!(self.call(chat.vshard(), request).await, Response::Done => ())
    }

    /// Deletes messages for everyone (a tombstone keeps the id) or for `user` only.
    pub async fn delete(
        &self,
        chat: ChatId,
        user: UserId,
        ids: &[MessageId],
        for_everyone: bool,
    ) -> MessagingResult<()> {
        let request = Request::Delete { chat, user, ids: ids.to_vec(), for_everyone };
        expect!(self.call(chat.vshard(), request).await, Response::Done => ())
    }

    pub async fn pin(&self, chat: ChatId, user: UserId, id: Option<MessageId>) -> MessagingResult<()> {
        expect!(self.call(chat.vshard(), Request::Pin { chat, user, id }).await, Response::Done => ())
    }

    /// A history page, newest first (see [`HistoryPage`]); at most 100 messages.
    pub fn get_history(
        &self,
        chat: ChatId,
        user: UserId,
        page: HistoryPage,
    ) -> impl Future<Output = MessagingResult<Vec<Message>>> + Send + 'static {
        let call = self.call(chat.vshard(), Request::GetHistory { chat, user, page });
        async move { expect!(call.await, Response::Messages(messages) => messages) }
    }

    /// The messages among `ids` that `user` can see.
    pub async fn get_messages(&self, chat: ChatId, user: UserId, ids: &[MessageId]) -> MessagingResult<Vec<Message>> {
        let request = Request::GetMessages { chat, user, ids: ids.to_vec() };
        expect!(self.call(chat.vshard(), request).await, Response::Messages(messages) => messages)
    }

    /// Marks the chat read by `user` up to `max_id`.
    pub async fn read_history(&self, chat: ChatId, user: UserId, max_id: MessageId) -> MessagingResult<()> {
        expect!(self.call(chat.vshard(), Request::ReadHistory { chat, user, max_id }).await, Response::Done => ())
    }

    /// Tells the chat's online members that `user` is typing (never stored).
    pub async fn typing(&self, chat: ChatId, user: UserId) -> MessagingResult<()> {
        expect!(self.call(chat.vshard(), Request::Typing { chat, user }).await, Response::Done => ())
    }

    // Sync.

    pub async fn get_state(&self, user: UserId) -> MessagingResult<BoxState> {
        expect!(self.call(user.vshard(), Request::GetState { user }).await, Response::State(state) => state)
    }

    /// The box updates after `pts` (at most `limit`), with the messages they reference,
    /// fetched with one request per chat shard.
    pub async fn get_difference(&self, user: UserId, pts: Pts, limit: usize) -> MessagingResult<Difference> {
        let request = Request::GetDifference { user, pts, limit };
        let (updates, state, slice) = expect!(
            self.call(user.vshard(), request).await,
            Response::BoxDifference { updates, state, slice } => (updates, state, slice)
        )?;
        let mut wanted: BTreeMap<ShardId, BTreeMap<ChatId, Vec<MessageId>>> = BTreeMap::new();
        for update in &updates {
            if let Some(id) = update.update.message() {
                let chat = update.update.chat();
                let ids = wanted.entry(self.shard(chat.vshard())).or_default().entry(chat).or_default();
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
        }
        let calls: Vec<_> = wanted
            .into_iter()
            .map(|(shard, chats)| {
                let request = Request::FetchMessages { user, wanted: chats.into_iter().collect() };
                self.engine.messaging(shard, request)
            })
            .collect();
        let mut messages = Vec::new();
        for call in calls {
            messages.extend(expect!(call.await, Response::Messages(found) => found)?);
        }
        Ok(Difference { updates, messages, state, slice })
    }

    /// The updates of a chat fanned out on read after `pts`.
    pub async fn get_chat_difference(
        &self,
        chat: ChatId,
        user: UserId,
        pts: Pts,
        limit: usize,
    ) -> MessagingResult<ChatDifference> {
        let request = Request::GetChatDifference { chat, user, pts, limit };
        expect!(self.call(chat.vshard(), request).await, Response::ChatDifference(difference) => difference)
    }

    /// A page of the user's dialogs, by last activity, newest first.
    pub async fn get_dialogs(
        &self,
        user: UserId,
        offset: Option<DialogsOffset>,
        limit: usize,
    ) -> MessagingResult<Vec<Dialog>> {
        if limit == 0 || limit > DIALOGS_PAGE_MAX {
            return Err(MessagingError::InvalidArgument("dialogs page limit must be 1 to 100"));
        }
        let mut dialogs =
            expect!(self.call(user.vshard(), Request::GetDialogs { user }).await, Response::Dialogs(d) => d)?;
        // Chats fanned out on read are not in the box: ask their shards for the current top.
        let mut by_shard: BTreeMap<ShardId, Vec<ChatId>> = BTreeMap::new();
        for dialog in dialogs.iter().filter(|dialog| dialog.fanout_on_read) {
            by_shard.entry(self.shard(dialog.chat.vshard())).or_default().push(dialog.chat);
        }
        for (shard, chats) in by_shard {
            for chunk in chats.chunks(MESSAGE_IDS_MAX * 10) {
                let request = Request::ChatTops { user, chats: chunk.to_vec() };
                let tops = expect!(self.engine.messaging(shard, request).await, Response::Dialogs(d) => d)?;
                for top in tops {
                    if let Some(dialog) = dialogs.iter_mut().find(|dialog| dialog.chat == top.chat) {
                        *dialog = Dialog { top_date: top.top_date.max(dialog.top_date), ..top };
                    }
                }
            }
        }
        dialogs.sort_by_key(|dialog| std::cmp::Reverse((dialog.top_date, dialog.chat)));
        let start = match offset {
            Some(offset) => dialogs.iter().position(|d| (d.top_date, d.chat) < (offset.date, offset.chat)),
            None => Some(0),
        };
        Ok(start.map_or_else(Vec::new, |start| dialogs.into_iter().skip(start).take(limit).collect()))
    }

    // Login authorizations (the gateway's logged-in devices).

    /// Creates a login authorization of `user` on the user's shard and returns its id. The
    /// host hands the client a token of the id and a random secret, and gives the engine only
    /// the secret's hash. At most `AUTHORIZATIONS_PER_USER_MAX` live ones per user
    /// (`TooManyAuthorizations`); `device` is at most `AUTHORIZATION_DEVICE_MAX` characters.
    pub async fn create_authorization(
        &self,
        user: UserId,
        secret_hash: [u8; SECRET_HASH_BYTES],
        device: &str,
    ) -> MessagingResult<AuthorizationId> {
        let request = Request::CreateAuthorization { user, secret_hash, device: device.into() };
        expect!(self.call(user.vshard(), request).await, Response::Authorization(id) => id)
    }

    /// The user holding authorization `id`, if it is live and `secret_hash` matches (compared
    /// in constant time). Anything else is `Unauthorized`, never saying which. Writes nothing.
    pub async fn check_authorization(
        &self,
        id: AuthorizationId,
        secret_hash: [u8; SECRET_HASH_BYTES],
    ) -> MessagingResult<UserId> {
        let request = Request::CheckAuthorization { id, secret_hash };
        expect!(self.call(id.vshard(), request).await, Response::User(user) => user)
    }

    /// The user's live authorizations, oldest first.
    pub async fn list_authorizations(&self, user: UserId) -> MessagingResult<Vec<AuthorizationInfo>> {
        let request = Request::ListAuthorizations { user };
        expect!(self.call(user.vshard(), request).await, Response::Authorizations(list) => list)
    }

    /// Revokes one of the user's authorizations for good (it is durable before this returns)
    /// and ends the sessions connected under it. An id that is not a live authorization of
    /// this user — unknown, already revoked, or someone else's — is `Unauthorized`.
    pub async fn revoke_authorization(&self, user: UserId, id: AuthorizationId) -> MessagingResult<()> {
        let request = Request::RevokeAuthorization { user, id };
        expect!(self.call(user.vshard(), request).await, Response::Done => ())
    }

    // Sessions and presence.

    /// Registers an online session of `user` held on `shard` (the core its connection lives
    /// on). The box state comes back in the same step: every update after it arrives live.
    pub async fn connect(&self, user: UserId, shard: ShardId) -> MessagingResult<Connected> {
        self.engine.connect(shard, user, None).await
    }

    /// As [`Messenger::connect`], for a session opened under one of the user's authorizations:
    /// refused with `Unauthorized` unless it is live and the user's, and ended when it is
    /// revoked: its stream then ends with [`LiveEvent::Revoked`].
    pub async fn connect_authorized(
        &self,
        user: UserId,
        authorization: AuthorizationId,
        shard: ShardId,
    ) -> MessagingResult<Connected> {
        self.engine.connect(shard, user, Some(authorization)).await
    }

    pub async fn disconnect(&self, session: SessionId) -> MessagingResult<()> {
        expect!(self.engine.messaging(session.shard(), Request::Disconnect { session }).await, Response::Done => ())
    }

    /// Streams a chat fanned out on read to `session`; answers the chat's pts at subscription.
    pub async fn subscribe_chat(&self, session: SessionId, chat: ChatId) -> MessagingResult<Pts> {
        let request = Request::SubscribeChat { session, chat };
        expect!(self.engine.messaging(session.shard(), request).await, Response::Pts(pts) => pts)
    }

    pub async fn unsubscribe_chat(&self, session: SessionId, chat: ChatId) -> MessagingResult<()> {
        let request = Request::UnsubscribeChat { session, chat };
        expect!(self.engine.messaging(session.shard(), request).await, Response::Done => ())
    }

    /// Like [`Messenger::get_presence`], and from now on `session` gets a
    /// `LiveEvent::Presence` whenever `user` comes online or goes offline (until the session
    /// ends; at most `PRESENCE_WATCHERS_PER_USER_MAX` sessions watch one user, the oldest
    /// dropped first).
    pub async fn watch_presence(&self, session: SessionId, user: UserId) -> MessagingResult<(bool, UnixMs)> {
        expect!(
            self.call(user.vshard(), Request::WatchPresence { session, user }).await,
            Response::Presence { online, last_seen } => (online, last_seen)
        )
    }

    // Push (DESIGN §8; see `messaging/push.rs`).

    /// Registers a device for push (Telegram's `account.registerDevice`). The same kind and
    /// token replace an earlier registration's flags; past `DEVICES_PER_USER_MAX` the oldest
    /// device goes.
    pub async fn register_device(&self, user: UserId, device: PushDevice) -> MessagingResult<()> {
        expect!(self.call(user.vshard(), Request::RegisterDevice { user, device }).await, Response::Done => ())
    }

    /// Answers whether the device was registered.
    pub async fn unregister_device(&self, user: UserId, kind: DeviceKind, token: &str) -> MessagingResult<bool> {
        let request = Request::UnregisterDevice { user, kind, token: token.into() };
        expect!(self.call(user.vshard(), request).await, Response::Unregistered(registered) => registered)
    }

    pub async fn list_devices(&self, user: UserId) -> MessagingResult<Vec<PushDevice>> {
        expect!(self.call(user.vshard(), Request::ListDevices { user }).await, Response::Devices(devices) => devices)
    }

    /// Sets `user`'s notification settings for `chat`, which the user must be a member of.
    pub async fn set_notify_settings(
        &self,
        user: UserId,
        chat: ChatId,
        settings: NotifySettings,
    ) -> MessagingResult<()> {
        self.get_chat(chat, user).await?;
        let request = Request::SetNotifySettings { user, chat, settings };
        expect!(self.call(user.vshard(), request).await, Response::Done => ())
    }

    pub async fn get_notify_settings(&self, user: UserId, chat: ChatId) -> MessagingResult<NotifySettings> {
        let request = Request::GetNotifySettings { user, chat };
        expect!(self.call(user.vshard(), request).await, Response::NotifySettings(settings) => settings)
    }

    /// For the host's push directory: of the members of `chat` after `after` (in user id
    /// order, up to `limit`), those to notify of a post by `sender`: not the sender, with a
    /// device, no online session, not muted. Also answers the last member looked at, to
    /// continue after; `None` once there are no more.
    pub async fn push_members_page(
        &self,
        chat: ChatId,
        sender: UserId,
        after: Option<UserId>,
        limit: usize,
    ) -> MessagingResult<(Vec<PushRecipient>, Option<UserId>)> {
        let limit = limit.clamp(1, PUSH_PAGE_MAX);
        let page = Request::MembersPage { chat, after, limit };
        let members = expect!(self.call(chat.vshard(), page).await, Response::Members(members) => members)?;
        let last = members.last().map(|(user, _)| *user);
        let mut by_shard: BTreeMap<ShardId, Vec<UserId>> = BTreeMap::new();
        for (user, _) in members.into_iter().filter(|(user, _)| *user != sender) {
            by_shard.entry(self.shard(user.vshard())).or_default().push(user);
        }
        let calls: Vec<_> = by_shard
            .into_iter()
            .map(|(shard, users)| self.engine.messaging(shard, Request::PushRecipients { chat, users }))
            .collect();
        let mut recipients = Vec::new();
        for call in calls {
            recipients.extend(expect!(call.await, Response::PushRecipients(found) => found)?);
        }
        recipients.sort_unstable_by_key(|recipient| recipient.user);
        Ok((recipients, last))
    }

    /// Up to `limit` jobs of `shard`'s push outbox after sequence `after`, oldest first: after
    /// a restart, and for jobs the host could not hand to its dispatcher.
    pub async fn pending_pushes(&self, shard: ShardId, after: u64, limit: usize) -> MessagingResult<Vec<PendingPush>> {
        let request = Request::PendingPushes { after, limit };
        expect!(self.engine.messaging(shard, request).await, Response::PendingPushes(pending) => pending)
    }

    /// The host finished these jobs of `shard`'s outbox: they are removed (durably). Jobs
    /// already removed are ignored.
    pub async fn pushes_done(&self, shard: ShardId, sequences: Vec<u64>) -> MessagingResult<()> {
        let mut sequences = sequences;
        while !sequences.is_empty() {
            let rest = sequences.split_off(sequences.len().min(PUSH_PAGE_MAX));
            let request = Request::PushesDone { sequences };
            expect!(self.engine.messaging(shard, request).await, Response::Done => ())?;
            sequences = rest;
        }
        Ok(())
    }

    /// Whether the user has an online session, and when they were last seen.
    pub async fn get_presence(&self, user: UserId) -> MessagingResult<(bool, UnixMs)> {
        expect!(
            self.call(user.vshard(), Request::GetPresence { user }).await,
            Response::Presence { online, last_seen } => (online, last_seen)
        )
    }
}
