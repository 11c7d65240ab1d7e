//! The push side of a shard's core (DESIGN §8): device and notification-settings requests,
//! queuing jobs in the same batch as the events that cause them, and handing jobs to the host
//! once they are durable. See `messaging/push.rs` for the outbox's rules.

use super::*;
use crate::messaging::push::{PendingPush, PushJob, PushRecipient, PushSource, PushTarget};

impl MessagingCore {
    /// New messages queue push jobs from now on. The host turns this on when it runs a
    /// dispatcher that drains the outbox; without one, jobs would only pile up.
    pub fn enable_push(&mut self) {
        self.push_enabled = true;
    }

    /// What a box on another shard needs to queue a push for `update`, read from the chat here.
    pub(super) fn push_source(&self, update: &Update) -> Option<Arc<PushSource>> {
        let Update::NewMessage { chat, id, .. } = update else { return None };
        if !self.push_enabled {
            return None;
        }
        let state = self.state.chats.get(chat)?;
        let message = state.message(*id)?;
        let preview = match &message.media {
            Some(media) if message.text.is_empty() => media_preview(media),
            _ => message.text.clone(),
        };
        Some(Arc::new(PushSource::new(state.kind, &state.title, &preview)))
    }

    /// Jobs for the users of a box update on this shard who should hear of it by push: a new
    /// message from someone else, to a user with a device, no online session, and the chat not
    /// muted. Sequences are taken from `next`.
    pub(super) fn box_push_jobs(
        &self,
        users: &[(UserId, Pts)],
        update: &Update,
        source: Option<&PushSource>,
        date: UnixMs,
        next: &mut u64,
    ) -> Vec<PushJob> {
        let (true, Some(source), Update::NewMessage { chat, id, sender, .. }) = (self.push_enabled, source, update)
        else {
            return Vec::new();
        };
        let push = &self.state.push;
        users
            .iter()
            .map(|&(user, _)| user)
            .filter(|user| user != sender && push.devices.contains_key(user))
            .filter(|user| self.live.sessions.get(user).is_none_or(Vec::is_empty))
            .filter(|user| !push.settings(*user, *chat).muted_at(date))
            .map(|user| {
                let sequence = *next;
                *next += 1;
                job(sequence, PushTarget::User(user), *chat, source, *id, *sender, date)
            })
            .collect()
    }

    /// The push jobs a chat event queues here: one chat-level job for a post to a chat fanned
    /// out on read, and user-level jobs for the boxes on this shard that it reaches.
    pub(super) fn commit_push_jobs(&self, event: &Event, local_events: &[Event]) -> Option<Event> {
        if !self.push_enabled {
            return None;
        }
        let Event::Chat { chat, date, change, .. } = event else { return None };
        let (message, media) = change.posted()?;
        let state = self.state.chats.get(chat)?;
        let source = match media {
            Some(media) if message.text.is_empty() => PushSource::new(state.kind, &state.title, &media_preview(media)),
            _ => PushSource::new(state.kind, &state.title, &message.text),
        };
        let mut next = self.state.push.next_sequence();
        let mut jobs = Vec::new();
        if state.fanout_on_read {
            jobs.push(job(next, PushTarget::ChatMembers, *chat, &source, message.id, message.sender, *date));
            next += 1;
        }
        for box_event in local_events {
            if let Event::BoxAppended { users, update, date, .. } = box_event {
                jobs.extend(self.box_push_jobs(users, update, Some(&source), *date, &mut next));
            }
        }
        (!jobs.is_empty()).then_some(Event::PushQueued { jobs })
    }

    /// Applies an appended `PushQueued` and hands its jobs to the host once `lsn` is durable.
    pub(super) fn queue_pushes(&mut self, event: Event, lsn: Lsn) {
        let Event::PushQueued { jobs } = &event else { return };
        let sequences = jobs.iter().map(|job| job.sequence).collect();
        self.preserve(&event);
        self.state.apply(event);
        self.after_durable.push_back((lsn, Deferred::Pushes(sequences)));
    }

    pub(super) fn release_pushes(&mut self, sequences: Vec<u64>) {
        for sequence in sequences {
            // A job finished before it was released (impossible today) is simply not handed over.
            if let Some(job) = self.state.push.outbox.get(&sequence) {
                let pending = self.pending_push(job);
                self.effects.pushes.push(pending);
            }
        }
    }

    fn pending_push(&self, job: &PushJob) -> PendingPush {
        let recipient = match job.target {
            PushTarget::User(user) => self.push_recipient(user, job.chat),
            PushTarget::ChatMembers => None,
        };
        PendingPush { shard: self.shard, job: job.clone(), recipient }
    }

    /// `user`'s devices, settings for `chat` and badge, if the user has a device.
    fn push_recipient(&self, user: UserId, chat: ChatId) -> Option<PushRecipient> {
        let devices = self.state.push.devices.get(&user)?.clone();
        let unread_badge = self.box_state(user).map_or(0, |state| state.unread);
        Some(PushRecipient { user, devices, settings: self.state.push.settings(user, chat), unread_badge })
    }

    pub(super) fn dispatch_push(&mut self, origin: Origin, request: Request, journal: &mut dyn Journal) -> Result<()> {
        match request {
            Request::RegisterDevice { user, device } => {
                check_token(&device.token)?;
                self.user(user)?;
                let lsn = self.commit_plain(Event::DeviceRegistered { user, device }, journal)?;
                self.box_lsn.insert(user, lsn);
                self.reply_after_acked(lsn, origin, Ok(Response::Done));
            }
            Request::UnregisterDevice { user, kind, token } => {
                check_token(&token)?;
                self.user(user)?;
                let registered =
                    self.state.push.devices(user).iter().any(|device| device.kind == kind && device.token == token);
                let lsn = if registered {
                    let lsn = self.commit_plain(Event::DeviceUnregistered { user, kind, token }, journal)?;
                    self.box_lsn.insert(user, lsn);
                    lsn
                } else {
                    self.box_lsn(user)
                };
                self.reply_after_acked(lsn, origin, Ok(Response::Unregistered(registered)));
            }
            Request::ListDevices { user } => {
                self.user(user)?;
                let devices = self.state.push.devices(user).to_vec();
                self.reply_after_acked(self.box_lsn(user), origin, Ok(Response::Devices(devices)));
            }
            Request::SetNotifySettings { user, chat, settings } => {
                self.user(user)?;
                let held = self.state.push.settings.get(&user).map_or(0, |chats| chats.len());
                let new_entry = self.state.push.settings.get(&user).is_none_or(|chats| !chats.contains_key(&chat));
                if settings != NotifySettings::DEFAULT && new_entry && held >= NOTIFY_SETTINGS_PER_USER_MAX {
                    return Err(MessagingError::TooLong {
                        what: "chats with notification settings",
                        length: held + 1,
                        limit: NOTIFY_SETTINGS_PER_USER_MAX,
                    });
                }
                let lsn = self.commit_plain(Event::NotifySettingsSet { user, chat, settings }, journal)?;
                self.box_lsn.insert(user, lsn);
                self.reply_after_acked(lsn, origin, Ok(Response::Done));
            }
            Request::GetNotifySettings { user, chat } => {
                self.user(user)?;
                let settings = self.state.push.settings(user, chat);
                self.reply_after_acked(self.box_lsn(user), origin, Ok(Response::NotifySettings(settings)));
            }
            Request::MembersPage { chat, after, limit } => {
                let state = self.chat(chat)?;
                let start = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
                let members = state
                    .members
                    .range((start, std::ops::Bound::Unbounded))
                    .take(limit.clamp(1, PUSH_PAGE_MAX))
                    .map(|(&user, member)| (user, member.role))
                    .collect();
                self.reply_after_acked(self.chat_lsn(chat), origin, Ok(Response::Members(members)));
            }
            Request::PushRecipients { chat, users } => {
                if users.len() > PUSH_PAGE_MAX {
                    return Err(MessagingError::TooLong { what: "users", length: users.len(), limit: PUSH_PAGE_MAX });
                }
                let now = self.now;
                let recipients = users
                    .iter()
                    .filter(|user| self.owner(user.vshard()) == self.shard)
                    .filter(|user| self.live.sessions.get(user).is_none_or(Vec::is_empty))
                    .filter_map(|&user| self.push_recipient(user, chat))
                    .filter(|recipient| !recipient.settings.muted_at(now))
                    .collect();
                self.reply_after_acked(self.last_lsn, origin, Ok(Response::PushRecipients(recipients)));
            }
            Request::PendingPushes { after, limit } => {
                let pending = self
                    .state
                    .push
                    .outbox
                    .range(after.saturating_add(1)..)
                    .take(limit.clamp(1, PUSH_PAGE_MAX))
                    .map(|(_, job)| self.pending_push(job))
                    .collect();
                self.reply_after_acked(self.last_lsn, origin, Ok(Response::PendingPushes(pending)));
            }
            Request::PushesDone { sequences } => {
                if sequences.len() > PUSH_PAGE_MAX {
                    let length = sequences.len();
                    return Err(MessagingError::TooLong { what: "push jobs", length, limit: PUSH_PAGE_MAX });
                }
                let outbox = &self.state.push.outbox;
                let mut finished: Vec<u64> = sequences.into_iter().filter(|s| outbox.contains_key(s)).collect();
                finished.sort_unstable();
                finished.dedup();
                // Reported twice (a report after a re-feed): nothing left to write.
                let lsn = if finished.is_empty() {
                    self.last_lsn
                } else {
                    self.commit_plain(Event::PushesDone { sequences: finished }, journal)?
                };
                self.reply_after_acked(lsn, origin, Ok(Response::Done));
            }
            other => unreachable!("not a push request: {other:?}"),
        }
        Ok(())
    }
}

fn job(
    sequence: u64,
    target: PushTarget,
    chat: ChatId,
    source: &PushSource,
    message: MessageId,
    sender: UserId,
    date: UnixMs,
) -> PushJob {
    PushJob {
        sequence,
        target,
        chat,
        chat_kind: source.chat_kind,
        chat_title: source.chat_title.clone(),
        message,
        sender,
        date,
        preview: source.preview.clone(),
    }
}

/// What a push shows for a media message without a caption.
fn media_preview(media: &MessageMedia) -> String {
    match media.kind {
        MediaKind::Photo => "Photo".to_owned(),
        MediaKind::Document => format!("Document: {}", media.name),
    }
}

fn check_token(token: &str) -> Result<()> {
    if token.is_empty() {
        return Err(MessagingError::InvalidArgument("a device token is empty"));
    }
    if token.len() > DEVICE_TOKEN_BYTES_MAX {
        return Err(MessagingError::TooLong {
            what: "device token",
            length: token.len(),
            limit: DEVICE_TOKEN_BYTES_MAX,
        });
    }
    if token.chars().any(char::is_control) {
        return Err(MessagingError::InvalidArgument("a device token has control characters"));
    }
    Ok(())
}
