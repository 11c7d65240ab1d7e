//! Online sessions and subscriptions: which sessions a user has, which sessions a connection
//! shard holds and which chats they follow, and delivering live events to them.

use super::*;

impl MessagingCore {
    pub(super) fn deliver(&mut self, session: SessionId, event: LiveEvent) {
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

    pub(super) fn deliver_chat(&mut self, chat: ChatId, update: Sequenced, message: Option<Arc<Message>>) {
        let Some(sessions) = self.live.hub_chats.get(&chat) else { return };
        let events = sessions
            .iter()
            .map(|&session| (session, LiveEvent::Chat { chat, update: update.clone(), message: message.clone() }));
        self.effects.deliveries.extend(events);
    }

    pub(super) fn register_session(
        &mut self,
        session: SessionId,
        user: UserId,
        authorization: Option<AuthorizationId>,
        origin: Origin,
        now: UnixMs,
    ) {
        let result = self.box_state(user).and_then(|state| {
            if let Some(id) = authorization {
                // Checked here, on the shard that revokes: a revocation is either before this
                // (refused) or after it (and then ends this session).
                if self.state.authorization(id).is_none_or(|found| found.user != user) {
                    return Err(MessagingError::Unauthorized);
                }
            }
            let sessions = self.live.sessions.entry(user).or_default();
            if sessions.len() >= SESSIONS_PER_USER_MAX {
                return Err(MessagingError::TooLong {
                    what: "online sessions",
                    length: sessions.len(),
                    limit: SESSIONS_PER_USER_MAX,
                });
            }
            let came_online = sessions.is_empty();
            sessions.push(session);
            if let Some(id) = authorization {
                self.live.session_authorizations.insert(session, id);
            }
            self.live.presence.insert(user, (true, now));
            if came_online {
                self.notify_presence(user, true, now);
            }
            Ok(Response::State(state))
        });
        let message = PeerMessage::SessionRegistered { session, user, origin, result };
        // Answered once the box state it reports is acknowledged, in order with live updates.
        self.peer_after_acked(self.box_lsn(user), session.shard(), message);
    }

    pub(super) fn unregister_session(&mut self, session: SessionId, user: UserId, now: UnixMs) {
        self.live.session_authorizations.remove(&session);
        if let Some(sessions) = self.live.sessions.get_mut(&user) {
            sessions.retain(|&s| s != session);
            if sessions.is_empty() {
                self.live.sessions.remove(&user);
                self.live.presence.insert(user, (false, now));
                self.notify_presence(user, false, now);
            }
        }
    }

    /// On `user`'s shard: pushes the user's presence to `session` from now on (a session
    /// watching already is moved to the newest place).
    pub(super) fn watch_presence(&mut self, session: SessionId, user: UserId) {
        let watchers = self.live.presence_watchers.entry(user).or_default();
        watchers.retain(|&watcher| watcher != session);
        if watchers.len() >= PRESENCE_WATCHERS_PER_USER_MAX {
            watchers.remove(0);
        }
        watchers.push(session);
    }

    pub(super) fn unwatch_presence(&mut self, session: SessionId, user: UserId) {
        if let Some(watchers) = self.live.presence_watchers.get_mut(&user) {
            watchers.retain(|&watcher| watcher != session);
            if watchers.is_empty() {
                self.live.presence_watchers.remove(&user);
            }
        }
    }

    /// Tells every session watching `user` that the user came online or went offline.
    fn notify_presence(&mut self, user: UserId, online: bool, now: UnixMs) {
        let Some(watchers) = self.live.presence_watchers.get(&user) else { return };
        let watchers = watchers.clone();
        for session in watchers {
            self.deliver(session, LiveEvent::Presence { user, online, last_seen: now });
        }
    }

    /// On the user's shard, once authorization `id` is revoked by the record at `lsn`: forgets
    /// the sessions that connected under it at once (they get no more updates) and tells their
    /// shards to end them.
    pub(super) fn end_sessions_of(&mut self, user: UserId, id: AuthorizationId, lsn: Lsn, now: UnixMs) {
        let Some(sessions) = self.live.sessions.get(&user) else { return };
        let revoked: Vec<SessionId> = sessions
            .iter()
            .copied()
            .filter(|session| self.live.session_authorizations.get(session) == Some(&id))
            .collect();
        for session in revoked {
            self.unregister_session(session, user, now);
            // Queued behind the session's registration answer (it waits on the same queue), so
            // its shard never hears of the end before the start.
            self.peer_after_acked(lsn, session.shard(), PeerMessage::EndRevokedSession { session });
        }
    }

    /// On the session's shard: its authorization was revoked. Drops it and has the driver end
    /// its stream; a session already gone is left alone.
    pub(super) fn end_revoked_session(&mut self, session: SessionId) {
        if self.live.hub.contains_key(&session) {
            self.drop_hub_session(session);
            self.effects.revoked.push(session);
        }
    }

    pub(super) fn drop_hub_session(&mut self, session: SessionId) {
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

    pub(super) fn subscribe_at_chat(
        &mut self,
        chat: ChatId,
        user: UserId,
        session: SessionId,
        origin: Origin,
        counted: bool,
    ) {
        let result = match self.state.chats.get(&chat) {
            None => Err(MessagingError::UnknownChat(chat)),
            Some(state) if !state.members.contains_key(&user) => Err(MessagingError::NotMember(user)),
            Some(state) if !counted => Ok(Response::Pts(state.public_pts)),
            Some(state) => {
                let pts = state.public_pts;
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
        let counted = counted && result.is_ok();
        let message = PeerMessage::Subscribed { chat, user, session, origin, counted, result };
        self.peer_after_acked(self.chat_lsn(chat), session.shard(), message);
    }

    pub(super) fn subscribed(
        &mut self,
        chat: ChatId,
        user: UserId,
        session: SessionId,
        origin: Origin,
        counted: bool,
        result: MessagingResult<Response>,
    ) {
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
                    if counted {
                        let message = PeerMessage::Unsubscribe { chat, user, shard: self.shard };
                        self.route_no_journal(self.owner(chat.vshard()), message);
                    }
                    self.effects.replies.push((origin, Err(MessagingError::InvalidArgument("unknown session"))));
                    return;
                }
            }
        }
        self.effects.replies.push((origin, result));
    }

    pub(super) fn unsubscribe_at_chat(&mut self, chat: ChatId, user: UserId, shard: ShardId) {
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

    pub(super) fn hub_unsubscribe(&mut self, session: SessionId, chat: ChatId) {
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
}
