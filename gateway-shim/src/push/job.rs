//! What the host hands the push dispatcher and what it hands back: jobs with their durable ids,
//! cancels, devices, notification settings, the directory that expands chat-level jobs, and
//! the reports that let the host delete finished jobs from its outbox.

use std::fmt;

use engine::messaging::{ChatId, MessageId, UnixMs, UserId};
use engine::ShardId;

/// A durable push job's identity, assigned by the host: the shard whose outbox holds the job
/// (where its report must be applied) and its sequence number in that outbox. The dispatcher
/// treats two jobs with the same id as the same job and delivers it once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId {
    pub shard: ShardId,
    pub sequence: u64,
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.shard.0, self.sequence)
    }
}

/// What goes into the dispatcher's input channel.
#[derive(Clone, Debug)]
pub enum PushInput {
    Job(PushJob),
    Cancel(Cancel),
}

/// A durable job from an outbox.
#[derive(Clone, Debug)]
pub struct PushJob {
    pub id: JobId,
    pub kind: PushJobKind,
}

#[derive(Clone, Debug)]
pub enum PushJobKind {
    /// A message for one user with no online session (a chat fanned out on write).
    Message(MessagePush),
    /// A post to a chat fanned out on read (a channel): the dispatcher asks the
    /// [`PushDirectory`] for the members to notify. One durable job for all of them.
    ChatPost(ChatPost),
}

/// One new message for one offline user, with that user's devices and settings as the
/// user's shard knows them when it feeds the job (they need not be stored in the outbox record).
#[derive(Clone, Debug)]
pub struct MessagePush {
    pub user: UserId,
    pub chat: ChatId,
    pub message: MessageId,
    /// Who wrote it, as the notification should name them (a channel's title for a post).
    pub sender_name: String,
    /// The message text, or a description of its media ("Photo"); shown only when the user's
    /// settings allow previews. The dispatcher shortens it to `PREVIEW_CHARS_MAX`.
    pub text_preview: String,
    /// The user's total unread count, shown as the app icon's badge.
    pub unread_badge: u32,
    pub date: UnixMs,
    pub devices: Vec<Device>,
    pub settings: NotificationSettings,
}

/// A post to a chat fanned out on read. Each member's badge, devices and settings come from the
/// directory.
#[derive(Clone, Debug)]
pub struct ChatPost {
    pub chat: ChatId,
    pub message: MessageId,
    /// Who posted: never notified of their own post.
    pub sender: UserId,
    pub sender_name: String,
    pub text_preview: String,
    pub date: UnixMs,
}

/// The user read `chat` up to `read_max_id` on some device: pending pushes of those messages
/// are dropped, and jobs for them that arrive later are dropped too (for a while; see
/// `READ_MARKS_REMEMBERED_MAX`). Not durable: a lost cancel costs at most one push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cancel {
    pub user: UserId,
    pub chat: ChatId,
    pub read_max_id: MessageId,
}

/// Devices and notification settings are the engine's own types (the shards store them): the
/// dispatcher reads them as they are, under the names it has always used.
pub use engine::messaging::{DeviceKind, NotifySettings as NotificationSettings, PushDevice as Device};

/// One member of a chat to notify of a [`ChatPost`].
#[derive(Clone, Debug)]
pub struct Recipient {
    pub user: UserId,
    pub devices: Vec<Device>,
    pub settings: NotificationSettings,
    pub unread_badge: u32,
}

/// The host's view of chat membership, used to expand a [`ChatPost`].
///
/// It is called on a blocking worker thread of the dispatcher (never on a shard), at most
/// `EXPANSIONS_IN_PROGRESS_MAX` at once, so it may block, for example on the engine's futures.
/// The iterator is pulled only as fast as the dispatcher has room for pushes, so it may fetch
/// members page by page.
pub trait PushDirectory: Send + Sync + 'static {
    /// The members of `post.chat` to notify: those with no online session, in increasing user
    /// id order, starting after `after` (when an earlier expansion failed part-way, the
    /// dispatcher resumes after the last member it took, so nobody is notified twice).
    /// Members the iterator yields out of order are skipped.
    fn members_to_notify<'a>(
        &'a self,
        post: &ChatPost,
        after: Option<UserId>,
    ) -> Box<dyn Iterator<Item = Result<Recipient, DirectoryError>> + Send + 'a>;
}

/// A directory with no chats: for hosts without chats fanned out on read, and for tests. Every
/// chat-level job completes at once with nobody notified.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDirectory;

impl PushDirectory for NoDirectory {
    fn members_to_notify<'a>(
        &'a self,
        _post: &ChatPost,
        _after: Option<UserId>,
    ) -> Box<dyn Iterator<Item = Result<Recipient, DirectoryError>> + Send + 'a> {
        Box::new(std::iter::empty())
    }
}

/// The directory could not list a chat's members (the expansion is retried with backoff).
#[derive(Debug, thiserror::Error)]
#[error("the push directory failed: {source}")]
pub struct DirectoryError {
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// What the dispatcher tells the host, through the reports channel.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushReport {
    /// The job is finished: its pushes were delivered, or dropped by the rules (muted, read,
    /// no device). The host deletes it from its outbox.
    Completed { job: JobId },
    /// The job is finished but some push of it could not be delivered within the bounded
    /// attempts (or was refused for good). The host deletes it from its outbox too (and may
    /// keep a note); re-feeding it would only fail again.
    DeadLettered { job: JobId },
    /// The provider said this device's token is no longer valid: the host removes the device.
    InvalidToken { user: UserId, device: Device },
}
