//! An in-process target for loadgen's own tests: users, chats, messages, files and live
//! deliveries in memory, with an answer delay and injected faults (a server stall, a stall of
//! loadgen's own thread, lost deliveries, corrupted downloads), so the accounting can be
//! checked against a known truth.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{
    Ack, ChatId, ChatSpec, Delivery, MediaSent, MediaUpload, MessageId, Provisioned, RangeCheck, Target, TargetError,
    UpdateSource, UserId, UserSpec, CLOSED,
};
use crate::stats::lock;

/// Faults and delays of a [`FakeTarget`].
#[derive(Clone, Debug, Default)]
pub struct FakeBehaviour {
    /// Every answer takes this long (an asynchronous wait).
    pub answer_delay: Duration,
    /// The "server" stops answering during `[at, at + length)`: a request arriving then is
    /// answered at the end of the stall.
    pub server_stall: Option<(Instant, Duration)>,
    /// The first send after this instant blocks the calling thread for the duration: a stall
    /// of loadgen itself (its executor can run nothing else meanwhile).
    pub thread_stall: Option<(Instant, Duration)>,
    /// Every n-th delivery is lost.
    pub lose_every_nth_delivery: Option<u64>,
    /// Every n-th download gets one byte flipped in its middle, as a server answering wrong
    /// bytes would.
    pub corrupt_every_nth_download: Option<u64>,
}

/// Bytes of one range of a fake download (the protocol's largest).
const FAKE_RANGE_BYTES: usize = ferrogram_net::limits::DOWNLOAD_LIMIT_BYTES_MAX as usize;

/// See the module documentation.
#[derive(Debug)]
pub struct FakeTarget {
    behaviour: FakeBehaviour,
    state: Mutex<FakeState>,
    thread_stalled: Mutex<bool>,
    deliveries: AtomicU64,
    /// Sends answered (for tests to compare with loadgen's count).
    pub sends: AtomicU64,
    /// Media messages sent, downloads served, and those of them corrupted.
    pub media_sends: AtomicU64,
    pub downloads: AtomicU64,
    pub corrupted_downloads: AtomicU64,
    /// (message, member) pairs where the member was offline with a push device: what a
    /// server with push on would queue push jobs for.
    pub pushes_due: AtomicU64,
}

#[derive(Debug, Default)]
struct FakeState {
    users_by_phone: HashMap<String, UserId>,
    online: HashMap<UserId, flume::Sender<Delivery>>,
    chats: HashMap<ChatId, FakeChat>,
    /// Push device tokens registered, by user.
    push_devices: HashMap<UserId, String>,
    /// The file of each media message.
    files: HashMap<(ChatId, MessageId), std::sync::Arc<Vec<u8>>>,
}

#[derive(Debug)]
struct FakeChat {
    members: Vec<UserId>,
    /// Chats fanned out on read deliver only to followers.
    followers: Option<Vec<UserId>>,
    messages: u64,
}

/// One online fake user.
#[derive(Debug)]
pub struct FakeSession {
    pub user: UserId,
}

/// A fake user's live deliveries.
#[derive(Debug)]
pub struct FakeUpdates {
    receiver: flume::Receiver<Delivery>,
}

impl UpdateSource for FakeUpdates {
    async fn next(&mut self) -> Option<Delivery> {
        self.receiver.recv_async().await.ok()
    }
}

impl FakeTarget {
    pub fn new(behaviour: FakeBehaviour) -> FakeTarget {
        FakeTarget {
            behaviour,
            state: Mutex::new(FakeState::default()),
            thread_stalled: Mutex::new(false),
            deliveries: AtomicU64::new(0),
            sends: AtomicU64::new(0),
            media_sends: AtomicU64::new(0),
            downloads: AtomicU64::new(0),
            corrupted_downloads: AtomicU64::new(0),
            pushes_due: AtomicU64::new(0),
        }
    }

    /// The push device token `user` registered, if any.
    pub fn push_device(&self, user: UserId) -> Option<String> {
        lock(&self.state).push_devices.get(&user).cloned()
    }

    /// Waits as the server would: to the end of a stall, then the answer delay. A session
    /// disconnected meanwhile fails the request, as a closed connection does.
    async fn serve_delay(&self, user: UserId) -> Result<(), TargetError> {
        let now = Instant::now();
        let mut until = now;
        if let Some((at, length)) = self.behaviour.server_stall {
            if at <= now && now < at + length {
                until = at + length;
            }
        }
        until += self.behaviour.answer_delay;
        loop {
            if !lock(&self.state).online.contains_key(&user) {
                return Err(TargetError::local(CLOSED, "the session is closed"));
            }
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            crate::reactor::sleep((until - now).min(Duration::from_millis(5))).await;
        }
    }

    fn maybe_stall_thread(&self) {
        let Some((at, length)) = self.behaviour.thread_stall else { return };
        if Instant::now() < at {
            return;
        }
        let mut stalled = lock(&self.thread_stalled);
        if !*stalled {
            *stalled = true;
            drop(stalled);
            std::thread::sleep(length);
        }
    }

    fn deliver(
        &self,
        chat: ChatId,
        id: MessageId,
        sender: UserId,
        random_id: u64,
        text: &str,
        media_bytes: Option<u64>,
    ) {
        let state = lock(&self.state);
        let Some(entry) = state.chats.get(&chat) else { return };
        let offline_with_device = entry
            .members
            .iter()
            .filter(|&&member| member != sender)
            .filter(|member| !state.online.contains_key(member) && state.push_devices.contains_key(member))
            .count();
        self.pushes_due.fetch_add(offline_with_device as u64, Relaxed);
        let recipients = entry.followers.as_ref().unwrap_or(&entry.members);
        for user in recipients {
            let Some(stream) = state.online.get(user) else { continue };
            let count = self.deliveries.fetch_add(1, Relaxed) + 1;
            if self.behaviour.lose_every_nth_delivery.is_some_and(|nth| count.is_multiple_of(nth)) {
                continue;
            }
            let _ = stream.send(Delivery::Message { chat, id, sender, random_id, text: text.to_owned(), media_bytes });
        }
    }

    fn append(&self, sender: UserId, chat: ChatId) -> Result<MessageId, TargetError> {
        let mut state = lock(&self.state);
        let entry = state.chats.get_mut(&chat).ok_or_else(|| TargetError::server("NOT_FOUND", "no chat", None))?;
        if !entry.members.contains(&sender) {
            return Err(TargetError::server("PERMISSION_DENIED", "not a member", None));
        }
        entry.messages += 1;
        Ok(MessageId(entry.messages))
    }
}

impl Target for FakeTarget {
    type Session = FakeSession;
    type Updates = FakeUpdates;

    fn name(&self) -> &'static str {
        "fake"
    }

    async fn provision(
        &self,
        user: &UserSpec,
        online: bool,
    ) -> Result<Provisioned<FakeSession, FakeUpdates>, TargetError> {
        let mut state = lock(&self.state);
        let next = UserId(state.users_by_phone.len() as u64 + 1);
        let id = *state.users_by_phone.entry(user.phone.clone()).or_insert(next);
        if user.push_device {
            state.push_devices.insert(id, super::push_device_token(id));
        }
        if !online {
            return Ok(Provisioned { user: id, online: None });
        }
        let (sender, receiver) = flume::unbounded();
        state.online.insert(id, sender);
        Ok(Provisioned { user: id, online: Some((FakeSession { user: id }, FakeUpdates { receiver })) })
    }

    async fn create_chat(&self, creator: &FakeSession, chat: &ChatSpec) -> Result<ChatId, TargetError> {
        let mut state = lock(&self.state);
        let id = ChatId(state.chats.len() as u64 + 1);
        let mut members = vec![creator.user];
        let followers = match chat {
            ChatSpec::Private { peer } => {
                members.push(*peer);
                None
            }
            ChatSpec::Group { members: others, .. } => {
                members.extend(others);
                None
            }
            ChatSpec::Channel { admins, .. } => {
                members.extend(admins);
                Some(Vec::new())
            }
        };
        state.chats.insert(id, FakeChat { members, followers, messages: 0 });
        Ok(id)
    }

    async fn follow(&self, member: &FakeSession, chat: ChatId) -> Result<(), TargetError> {
        let mut state = lock(&self.state);
        let entry = state.chats.get_mut(&chat).ok_or_else(|| TargetError::server("NOT_FOUND", "no chat", None))?;
        entry.members.push(member.user);
        entry.followers.get_or_insert_with(Vec::new).push(member.user);
        Ok(())
    }

    async fn send(&self, sender: &FakeSession, chat: ChatId, random_id: u64, text: String) -> Result<Ack, TargetError> {
        self.maybe_stall_thread();
        self.serve_delay(sender.user).await?;
        let id = self.append(sender.user, chat)?;
        self.sends.fetch_add(1, Relaxed);
        self.deliver(chat, id, sender.user, random_id, &text, None);
        Ok(Ack { chat, id, duplicate: false })
    }

    fn supports_media(&self) -> bool {
        true
    }

    /// Generates the file part by part, as the real upload does, then stores it with the
    /// message and delivers the message.
    async fn send_media(
        &self,
        sender: &FakeSession,
        chat: ChatId,
        random_id: u64,
        upload: &MediaUpload,
    ) -> Result<MediaSent, TargetError> {
        self.serve_delay(sender.user).await?;
        let size = upload.content.bytes;
        let mut file = Vec::with_capacity(size as usize);
        let mut offset = 0;
        while offset < size {
            let length = (size - offset).min(upload.part_bytes as u64) as usize;
            file.extend_from_slice(&upload.content.range(offset, length));
            offset += length as u64;
        }
        let uploaded = Instant::now();
        let id = self.append(sender.user, chat)?;
        lock(&self.state).files.insert((chat, id), std::sync::Arc::new(file));
        self.media_sends.fetch_add(1, Relaxed);
        self.deliver(chat, id, sender.user, random_id, &upload.caption, Some(size));
        Ok(MediaSent { ack: Ack { chat, id, duplicate: false }, uploaded })
    }

    async fn download(
        &self,
        reader: &FakeSession,
        chat: ChatId,
        message: MessageId,
        _bytes: u64,
        _ranges_in_flight: usize,
        check: RangeCheck<'_>,
    ) -> Result<u64, TargetError> {
        self.serve_delay(reader.user).await?;
        let file = {
            let state = lock(&self.state);
            let entry = state.chats.get(&chat).ok_or_else(|| TargetError::server("NOT_FOUND", "no chat", None))?;
            if !entry.members.contains(&reader.user) {
                return Err(TargetError::server("PERMISSION_DENIED", "not a member", None));
            }
            state
                .files
                .get(&(chat, message))
                .cloned()
                .ok_or_else(|| TargetError::server("NOT_FOUND", "no file", None))?
        };
        let count = self.downloads.fetch_add(1, Relaxed) + 1;
        let mut served: Vec<u8> = file.as_ref().clone();
        if self.behaviour.corrupt_every_nth_download.is_some_and(|nth| count.is_multiple_of(nth)) && !served.is_empty()
        {
            let middle = served.len() / 2;
            served[middle] ^= 0x01;
            self.corrupted_downloads.fetch_add(1, Relaxed);
        }
        let mut offset = 0u64;
        for range in served.chunks(FAKE_RANGE_BYTES) {
            check(offset, range)?;
            offset += range.len() as u64;
        }
        Ok(offset)
    }

    async fn send_batch(
        &self,
        sender: &FakeSession,
        chat: ChatId,
        messages: Vec<(u64, String)>,
    ) -> Vec<Result<Ack, TargetError>> {
        let mut answers = Vec::with_capacity(messages.len());
        for (random_id, text) in messages {
            answers.push(self.send(sender, chat, random_id, text).await);
        }
        answers
    }

    async fn history(
        &self,
        reader: &FakeSession,
        chat: ChatId,
        offset: MessageId,
        limit: u32,
    ) -> Result<usize, TargetError> {
        self.serve_delay(reader.user).await?;
        let state = lock(&self.state);
        let entry = state.chats.get(&chat).ok_or_else(|| TargetError::server("NOT_FOUND", "no chat", None))?;
        let below = if offset.0 == 0 { entry.messages } else { offset.0.saturating_sub(1).min(entry.messages) };
        Ok(below.min(u64::from(limit)) as usize)
    }

    async fn close(&self, session: &FakeSession) {
        self.disconnect(session);
    }

    fn disconnect(&self, session: &FakeSession) {
        lock(&self.state).online.remove(&session.user);
    }
}
