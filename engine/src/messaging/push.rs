//! Push notification state on the shards (DESIGN §8): users' registered devices, their
//! per-chat notification settings, and the durable push outbox.
//!
//! The outbox is the source of truth for notifications that must still be delivered:
//! - A user-level job is queued on the user's shard when a new message lands in the box of a
//!   user who has a device, is not muted in that chat and has no online session. It is
//!   appended in the same log batch as the box update ([`Event::PushQueued`]).
//! - A post to a chat fanned out on read queues one chat-level job on the chat's shard, not
//!   one per member: the host expands it to the offline members ([`PushTarget::ChatMembers`]).
//! - The host hears of each job once it is durable ([`PendingPush`] through the engine's push
//!   hook), hands it to its dispatcher, and says when it is finished
//!   (`Messenger::pushes_done`), which removes it ([`Event::PushesDone`]). Jobs the host never
//!   finished (a crash, a full dispatcher) are listed again by `Messenger::pending_pushes`.
//!
//! Nothing here is on the send path's critical section beyond one small record per batch of
//! offline recipients: delivery is the host's, on its own thread.
//!
//! [`Event::PushQueued`]: crate::messaging::records::Event::PushQueued
//! [`Event::PushesDone`]: crate::messaging::records::Event::PushesDone

// rkyv's derive makes public resolver types without `Debug`.
#![allow(missing_debug_implementations)]

use std::collections::BTreeMap;

use crate::ids::ShardId;
use crate::messaging::limits::{DEVICES_PER_USER_MAX, PUSH_PREVIEW_CHARS_MAX};
use crate::messaging::state::Map;
use crate::messaging::types::{ChatId, ChatKind, MessageId, UnixMs, UserId};

/// The provider a device token belongs to (Telegram's `token_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum DeviceKind {
    Apns,
    Fcm,
    /// A browser's Web Push subscription, delivered through the host's relay.
    WebPush,
    /// A token only the host's relay understands.
    Webhook,
}

impl DeviceKind {
    /// The kind's name in payloads and logs.
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Apns => "apns",
            DeviceKind::Fcm => "fcm",
            DeviceKind::WebPush => "webpush",
            DeviceKind::Webhook => "webhook",
        }
    }
}

/// A registered device (Telegram's `account.registerDevice`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PushDevice {
    pub kind: DeviceKind,
    pub token: String,
    /// A development build of the app: APNs pushes go to the sandbox.
    pub app_sandbox: bool,
    /// The device wants no silent pushes for muted chats.
    pub no_muted: bool,
}

/// A user's notification settings for one chat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct NotifySettings {
    /// No push while the clock is before this (0: not muted; `u64::MAX`: for ever).
    pub mute_until: UnixMs,
    /// Whether the sender and text may appear in a push.
    pub show_previews: bool,
}

impl NotifySettings {
    /// Not muted, previews shown: what a user who never changed anything has.
    pub const DEFAULT: NotifySettings = NotifySettings { mute_until: UnixMs(0), show_previews: true };

    pub fn muted_at(&self, now: UnixMs) -> bool {
        now < self.mute_until
    }
}

impl Default for NotifySettings {
    fn default() -> NotifySettings {
        NotifySettings::DEFAULT
    }
}

/// Whom a job notifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum PushTarget {
    /// One user, whose shard holds the job.
    User(UserId),
    /// The offline members of a chat fanned out on read, whose shard holds the job.
    ChatMembers,
}

/// A durable job of a shard's push outbox: one new message to notify.
#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PushJob {
    /// Its number in the shard's outbox, increasing; with the shard, the job's identity.
    pub sequence: u64,
    pub target: PushTarget,
    pub chat: ChatId,
    pub chat_kind: ChatKind,
    /// The chat's title when the job was queued (empty for a private chat).
    pub chat_title: String,
    pub message: MessageId,
    pub sender: UserId,
    pub date: UnixMs,
    /// The start of the message text (at most `PUSH_PREVIEW_CHARS_MAX` characters), shown only
    /// where the recipient's settings allow previews.
    pub preview: String,
}

impl PushJob {
    /// The vshard whose key the job is queued under (its user's, or its chat's).
    pub fn vshard(&self) -> crate::ids::VShard {
        match self.target {
            PushTarget::User(user) => user.vshard(),
            PushTarget::ChatMembers => self.chat.vshard(),
        }
    }
}

/// What the chat's shard hands a box along with a new message, so the box's shard can queue a
/// push without asking for the message again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushSource {
    pub chat_kind: ChatKind,
    pub chat_title: String,
    pub preview: String,
}

impl PushSource {
    pub fn new(chat_kind: ChatKind, chat_title: &str, text: &str) -> PushSource {
        // A private chat's title is the sender's name, which the host knows better.
        let chat_title = if chat_kind == ChatKind::Private { String::new() } else { chat_title.to_owned() };
        PushSource { chat_kind, chat_title, preview: preview_of(text) }
    }
}

/// The start of `text` that a push may show.
pub fn preview_of(text: &str) -> String {
    match text.char_indices().nth(PUSH_PREVIEW_CHARS_MAX) {
        Some((end, _)) => text[..end].to_owned(),
        None => text.to_owned(),
    }
}

/// A user to notify, with what their shard knows now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushRecipient {
    pub user: UserId,
    pub devices: Vec<PushDevice>,
    pub settings: NotifySettings,
    /// The user's unread messages over the chats synced through the box: the app's badge.
    pub unread_badge: u64,
}

/// A durable job as the host receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingPush {
    /// The shard whose outbox holds the job: `Messenger::pushes_done` goes there.
    pub shard: ShardId,
    pub job: PushJob,
    /// For a user-level job: the user's devices, settings for the chat and badge, read when
    /// the job was handed over. `None` for a chat-level job (the host expands it) and for a
    /// user who has since unregistered every device.
    pub recipient: Option<PushRecipient>,
}

/// A shard's push state: part of [`crate::messaging::state::State`], changed only by
/// `State::apply`.
#[derive(Debug, Default, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PushState {
    /// Each user's devices, oldest registration first (never empty).
    pub devices: Map<UserId, Vec<PushDevice>>,
    /// Each user's settings that differ from the default, per chat (never empty).
    pub settings: Map<UserId, BTreeMap<ChatId, NotifySettings>>,
    pub outbox: BTreeMap<u64, PushJob>,
    /// The highest job sequence given out (finished jobs included), so none is reused.
    pub sequence: u64,
}

impl PushState {
    pub fn settings(&self, user: UserId, chat: ChatId) -> NotifySettings {
        self.settings.get(&user).and_then(|chats| chats.get(&chat)).copied().unwrap_or_default()
    }

    pub fn devices(&self, user: UserId) -> &[PushDevice] {
        self.devices.get(&user).map_or(&[], Vec::as_slice)
    }

    pub fn next_sequence(&self) -> u64 {
        self.sequence + 1
    }

    /// Registers a device; the same kind and token replace the earlier registration's flags,
    /// and the oldest device goes when the user already has `DEVICES_PER_USER_MAX`.
    pub fn register(&mut self, user: UserId, device: PushDevice) {
        let devices = self.devices.entry(user).or_default();
        devices.retain(|known| !(known.kind == device.kind && known.token == device.token));
        devices.push(device);
        if devices.len() > DEVICES_PER_USER_MAX {
            devices.remove(0);
        }
    }

    pub fn unregister(&mut self, user: UserId, kind: DeviceKind, token: &str) {
        if let Some(devices) = self.devices.get_mut(&user) {
            devices.retain(|known| !(known.kind == kind && known.token == token));
            if devices.is_empty() {
                self.devices.remove(&user);
            }
        }
    }

    pub fn set_settings(&mut self, user: UserId, chat: ChatId, settings: NotifySettings) {
        let chats = self.settings.entry(user).or_default();
        if settings == NotifySettings::DEFAULT {
            chats.remove(&chat);
        } else {
            chats.insert(chat, settings);
        }
        if chats.is_empty() {
            self.settings.remove(&user);
        }
    }

    pub fn queue(&mut self, jobs: Vec<PushJob>) {
        for job in jobs {
            self.sequence = self.sequence.max(job.sequence);
            self.outbox.insert(job.sequence, job);
        }
    }

    pub fn finish(&mut self, sequences: &[u64]) {
        for sequence in sequences {
            self.outbox.remove(sequence);
        }
    }

    /// A user left a chat: their settings for it go too.
    pub fn forget_chat(&mut self, user: UserId, chat: ChatId) {
        self.set_settings(user, chat, NotifySettings::DEFAULT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(token: &str) -> PushDevice {
        PushDevice { kind: DeviceKind::Fcm, token: token.into(), app_sandbox: false, no_muted: false }
    }

    /// Proves re-registering a token replaces it instead of adding a second device, and the
    /// oldest device goes once a user has the maximum.
    #[test]
    fn devices_are_unique_and_bounded() {
        let mut state = PushState::default();
        let user = UserId(1 << 12);
        state.register(user, device("a"));
        state.register(user, PushDevice { app_sandbox: true, ..device("a") });
        assert_eq!(state.devices(user), &[PushDevice { app_sandbox: true, ..device("a") }]);
        for n in 0..DEVICES_PER_USER_MAX {
            state.register(user, device(&format!("t{n}")));
        }
        assert_eq!(state.devices(user).len(), DEVICES_PER_USER_MAX);
        assert!(state.devices(user).iter().all(|d| d.token != "a"), "the oldest registration went");
        state.unregister(user, DeviceKind::Apns, "t0");
        assert_eq!(state.devices(user).len(), DEVICES_PER_USER_MAX, "another kind's token is another device");
        state.unregister(user, DeviceKind::Fcm, "t0");
        assert_eq!(state.devices(user).len(), DEVICES_PER_USER_MAX - 1);
    }

    /// Proves default settings take no space and a preview stops at the character limit
    /// without splitting a character.
    #[test]
    fn default_settings_are_not_stored_and_previews_are_cut_on_characters() {
        let mut state = PushState::default();
        let (user, chat) = (UserId(1 << 12), ChatId(2 << 12));
        let muted = NotifySettings { mute_until: UnixMs(u64::MAX), show_previews: false };
        state.set_settings(user, chat, muted);
        assert_eq!(state.settings(user, chat), muted);
        assert!(muted.muted_at(UnixMs(1)));
        state.set_settings(user, chat, NotifySettings::DEFAULT);
        assert!(state.settings.is_empty());
        let text = "é".repeat(PUSH_PREVIEW_CHARS_MAX + 5);
        assert_eq!(preview_of(&text).chars().count(), PUSH_PREVIEW_CHARS_MAX);
        assert_eq!(preview_of("short"), "short");
    }
}
