//! Requests: validation and permissions, then the events that carry them out; and the reads,
//! answered once what they show is acknowledged.

use super::*;

impl MessagingCore {
    pub(super) fn dispatch(
        &mut self,
        origin: Origin,
        request: Request,
        now: UnixMs,
        journal: &mut dyn Journal,
    ) -> Result<()> {
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
                self.check_owned(key_vshard(&username))?;
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
                self.check_owned(key_vshard(&username))?;
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
                // Answered by the reader's box shard once it holds the ReadInbox, so a dialogs
                // or state read right after sees the new unread count.
                let reply = SenderReply { origin, user, session: None, ack: None };
                self.commit_chat(chat, ChatChange::Read { user, max_id }, now, Some(reply), journal)?;
                Ok(())
            }
            Request::GetChat { chat, user } => {
                let state = self.chat(chat)?;
                self.require_member(state, user)?;
                let info = self.chat_info(state);
                self.reply_after_acked(self.chat_lsn(chat), origin, Ok(Response::ChatInfo(info)));
                Ok(())
            }
            Request::GetMembers { chat, user, after, limit } => {
                let state = self.chat(chat)?;
                self.require_member(state, user)?;
                let start = match after {
                    Some(after) => std::ops::Bound::Excluded(after),
                    None => std::ops::Bound::Unbounded,
                };
                let members = state
                    .members
                    .range((start, std::ops::Bound::Unbounded))
                    .take(limit.clamp(1, MEMBERS_PAGE_MAX))
                    .map(|(&user, member)| (user, member.role))
                    .collect();
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
            Request::WatchPresence { session, user } => {
                self.user(user)?;
                self.watch_presence(session, user);
                let (online, last_seen) = self.live.presence.get(&user).copied().unwrap_or((false, UnixMs(0)));
                self.reply_now(origin, Ok(Response::Presence { online, last_seen }));
                Ok(())
            }
            Request::CreateAuthorization { user, secret_hash, device } => {
                check_length(&device, "device", AUTHORIZATION_DEVICE_MAX)?;
                if device.chars().any(char::is_control) {
                    return Err(MessagingError::InvalidArgument("a device must not hold control characters"));
                }
                if secret_hash == [0; SECRET_HASH_BYTES] {
                    return Err(MessagingError::InvalidArgument("a secret hash of zeros is not a hash"));
                }
                self.user(user)?;
                if self.state.authorizations.get(&user).map_or(0, Vec::len) >= AUTHORIZATIONS_PER_USER_MAX {
                    return Err(MessagingError::TooManyAuthorizations);
                }
                let id = self.state.next_authorization_id(user.vshard());
                let event = Event::AuthorizationCreated { id, user, secret_hash, device, date: now };
                let lsn = self.commit_plain(event, journal)?;
                self.box_lsn.insert(user, lsn);
                self.reply_after_acked(lsn, origin, Ok(Response::Authorization(id)));
                Ok(())
            }
            Request::CheckAuthorization { id, secret_hash } => {
                self.check_owned(id.vshard())?;
                // An unknown (or revoked) id and a wrong secret answer the same error. Ids are
                // dense, so whether one exists is no secret; whether a secret is right is, and
                // the comparison takes the same time wherever the hashes differ.
                let Some(authorization) = self.state.authorization(id) else {
                    return Err(MessagingError::Unauthorized);
                };
                let user = authorization.user;
                let result = if secret_hash_matches(&authorization.secret_hash, &secret_hash) {
                    self.live.authorization_used.insert(id, now);
                    Ok(Response::User(user))
                } else {
                    Err(MessagingError::Unauthorized)
                };
                // A client is never let in on an authorization a crash could take back.
                self.reply_after_acked(self.box_lsn(user), origin, result);
                Ok(())
            }
            Request::ListAuthorizations { user } => {
                self.user(user)?;
                let used = &self.live.authorization_used;
                let list = self.state.authorizations.get(&user).map_or_else(Vec::new, |authorizations| {
                    authorizations
                        .iter()
                        .map(|authorization| AuthorizationInfo {
                            id: authorization.id,
                            user,
                            device: authorization.device.clone(),
                            created: authorization.created,
                            last_used: used.get(&authorization.id).copied(),
                        })
                        .collect()
                });
                self.reply_after_acked(self.box_lsn(user), origin, Ok(Response::Authorizations(list)));
                Ok(())
            }
            Request::RevokeAuthorization { user, id } => {
                self.user(user)?;
                // Another user's authorization is refused like a missing one: the answer does
                // not tell whether the id exists.
                if self.state.authorization(id).is_none_or(|authorization| authorization.user != user) {
                    return Err(MessagingError::Unauthorized);
                }
                let lsn = self.commit_plain(Event::AuthorizationRevoked { id, user }, journal)?;
                self.box_lsn.insert(user, lsn);
                self.live.authorization_used.remove(&id);
                self.end_sessions_of(user, id, lsn, now);
                self.reply_after_acked(lsn, origin, Ok(Response::Done));
                Ok(())
            }
            Request::Connect { user, session } => self.connect(origin, user, None, session, now, journal),
            Request::ConnectAuthorized { user, authorization, session } => {
                self.connect(origin, user, Some(authorization), session, now, journal)
            }
            Request::Disconnect { session } => {
                self.drop_hub_session(session);
                self.reply_now(origin, Ok(Response::Done));
                Ok(())
            }
            Request::SubscribeChat { session, chat } => {
                let hub = self.live.hub.get(&session).ok_or(MessagingError::InvalidArgument("unknown session"))?;
                let (user, counted) = (hub.user, !hub.chats.contains(&chat));
                self.route(
                    self.owner(chat.vshard()),
                    PeerMessage::Subscribe { chat, user, session, origin, counted },
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
            request @ (Request::RegisterDevice { .. }
            | Request::UnregisterDevice { .. }
            | Request::ListDevices { .. }
            | Request::SetNotifySettings { .. }
            | Request::GetNotifySettings { .. }
            | Request::MembersPage { .. }
            | Request::PushRecipients { .. }
            | Request::PendingPushes { .. }
            | Request::PushesDone { .. }) => self.dispatch_push(origin, request, journal),
            request @ (Request::GetMessageMedia { .. }
            | Request::PendingMediaReleases { .. }
            | Request::MediaReleasesDone { .. }
            | Request::CheckMediaHolders { .. }) => self.dispatch_media(origin, request, now, journal),
        }
    }

    /// Registers `session` (held here) with its user's shard, which answers the box state.
    pub(super) fn connect(
        &mut self,
        origin: Origin,
        user: UserId,
        authorization: Option<AuthorizationId>,
        session: SessionId,
        now: UnixMs,
        journal: &mut dyn Journal,
    ) -> Result<()> {
        if session.shard() != self.shard {
            return Err(MessagingError::InvalidArgument("a session connects on its own shard"));
        }
        let home = self.owner(user.vshard());
        let message = PeerMessage::RegisterSession { session, user, authorization, origin };
        if home == self.shard {
            self.peer(message, now, journal);
        } else {
            self.send_peer(home, message);
        }
        Ok(())
    }

    pub(super) fn sign_up(
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

    pub(super) fn open_private(
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
    pub(super) fn create_chat(
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

    pub(super) fn member_change(
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

    pub(super) fn send(
        &mut self,
        origin: Origin,
        send: SendRequest,
        now: UnixMs,
        journal: &mut dyn Journal,
    ) -> Result<()> {
        let SendRequest { chat, sender, session, random_id, text, reply_to, forwarded_from, media } = send;
        match &media {
            Some(media) => check_media(&text, media)?,
            None => check_text(&text)?,
        }
        if text.is_empty() && forwarded_from.is_none() && media.is_none() {
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
        let hash = content_hash(
            &text,
            reply_to,
            forwarded_from.map(|f| (f.chat, f.message)),
            media.as_ref().map(|media| media.file),
        );
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
        // A media message's file reference is keyed by its idempotency key, so a key may hold
        // one reference at a time: refused while a media message under it is live or its
        // release is still queued, however old (the window above is for retries only).
        if media.is_some() && self.media_key_taken(state, sender, random_id) {
            return Err(MessagingError::RandomIdReused);
        }
        // The leak sweep found no message for this key and is giving its reference back.
        if media.is_some()
            && self.live.holders_refused.get(&(chat, sender, random_id)).is_some_and(|&until| until > now)
        {
            return Err(MessagingError::FileUnavailable);
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
            forwarded_from: forwarded_from.map(Box::new),
            edit_date: None,
            deleted: false,
            media: media.map(Box::new),
        };
        // A new message is public: it takes the chat's next public pts.
        let chat_pts = state.public_pts.next();
        let ack = SendAck { chat, id, date, chat_pts, sender_pts: None, duplicate: false };
        let reply = SenderReply { origin, user: sender, session, ack: Some(ack) };
        self.commit_chat(chat, ChatChange::new_message(message), date, Some(reply), journal)?;
        Ok(())
    }

    /// Whether the file reference keyed (chat, `sender`, `random_id`) belongs to a media
    /// message of `chat`: one that is live, or one deleted whose release is still queued.
    fn media_key_taken(&self, chat: &Chat, sender: UserId, random_id: RandomId) -> bool {
        chat.media_index.contains_key(&(sender, random_id))
            || self.state.media_releases.is_queued(chat.id, sender, random_id)
    }

    pub(super) fn chat_info(&self, chat: &Chat) -> ChatInfo {
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
            pts: chat.public_pts,
            top_message: chat.top_message(),
            pinned: chat.pinned,
            fanout_on_read: chat.fanout_on_read,
            epoch: self.epoch,
            private_pair,
        }
    }

    pub(super) fn chat_difference(&self, chat: &Chat, user: UserId, pts: Pts, limit: usize) -> Result<ChatDifference> {
        let limit = limit.clamp(1, DIFFERENCE_LIMIT_MAX);
        if pts > chat.public_pts {
            return Err(MessagingError::InvalidArgument("pts is ahead of the chat"));
        }
        let oldest = chat.log.front().map_or(chat.public_pts.next(), |entry| entry.entry.pts);
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
        Ok(ChatDifference { updates, messages, pts: last_pts, epoch: self.epoch, slice: last_pts < chat.public_pts })
    }
}

pub(super) fn history(chat: &Chat, user: UserId, page: HistoryPage) -> Result<Vec<Message>> {
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
    let messages = chat
        .messages
        .range(..(below.0.saturating_sub(1) as usize).min(chat.messages.len()))
        .rev()
        .take_while(|message| message.id > page.min_id)
        .filter(|message| !message.deleted && hidden.is_none_or(|hidden| !hidden.contains(&message.id)))
        .take(page.limit)
        .cloned()
        .collect();
    Ok(messages)
}

pub(super) fn check_length(value: &str, what: &'static str, limit: usize) -> Result<()> {
    let length = value.chars().count();
    if length > limit {
        return Err(MessagingError::TooLong { what, length, limit });
    }
    Ok(())
}

pub(super) fn check_text(text: &str) -> Result<()> {
    check_length(text, "message text", TEXT_CHARS_MAX)
}

/// A media message's caption and the file description the API layer copied from the store.
fn check_media(caption: &str, media: &MessageMedia) -> Result<()> {
    check_length(caption, "caption", CAPTION_CHARS_MAX)?;
    check_length(&media.name, "file name", FILE_NAME_CHARS_MAX)?;
    check_length(&media.mime_type, "MIME type", MIME_TYPE_CHARS_MAX)?;
    if media.name.chars().chain(media.mime_type.chars()).any(char::is_control) {
        return Err(MessagingError::InvalidArgument("a file name or MIME type holds control characters"));
    }
    Ok(())
}

pub(super) fn check_name(name: &str, what: &'static str, required: bool) -> Result<()> {
    if required && name.trim().is_empty() {
        return Err(MessagingError::InvalidArgument("a first name is required"));
    }
    if name.chars().any(char::is_control) {
        return Err(MessagingError::InvalidArgument("names must not hold control characters"));
    }
    check_length(name, what, NAME_CHARS_MAX)
}

pub(super) fn check_phone(phone: &str) -> Result<()> {
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
