//! The systems loadgen drives, behind one trait. A scenario is written once against
//! [`Target`]; each system gets an adapter that does what a strong team would do on it.
//! Today: [`ferrogram::FerrogramTarget`] (the real server through `ferrogram_net::client`) and
//! [`fake::FakeTarget`] (in-process, for loadgen's own tests) and [`redis::RedisTarget`]
//! (Redis 7 streams and Pub/Sub: provisioning creates the user keys, `send` is one Lua
//! function call, the update stream is the user's Pub/Sub subscription).
//!
//! Ids are the wire protocol's newtypes; an adapter for another system mints its own values
//! in them (they are opaque to loadgen).
//!
//! Media messages (files) are optional: a target that stores files says so
//! ([`Target::supports_media`]) and implements [`Target::send_media`] and
//! [`Target::download`]; the others answer `UNSUPPORTED`, and a run of the media scenario
//! against them is refused before it starts.

pub mod fake;
pub mod ferrogram;
pub mod redis;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use ferrogram_net::{ChatId, MessageId, UserId};

use crate::media::Content;

/// A system under load.
///
/// Methods return `Send` futures: loadgen runs them as tasks on a multi-threaded executor.
/// Every method may be called from many tasks at once.
pub trait Target: Send + Sync + 'static {
    /// One online user: its login and connection (or whatever the system's client holds).
    type Session: Send + Sync + 'static;
    /// The live events of one online session.
    type Updates: UpdateSource;

    /// The system's name in reports ("ferrogram").
    fn name(&self) -> &'static str;

    /// Makes the user exist (signing it up when it is new, logging in when it is not) and,
    /// when `user.push_device` is set, registers its push device
    /// ([`push_device_token`]) before anything else. An online user keeps its session and
    /// update stream; an offline one is logged out again.
    fn provision(
        &self,
        user: &UserSpec,
        online: bool,
    ) -> impl Future<Output = Result<Provisioned<Self::Session, Self::Updates>, TargetError>> + Send;

    /// Creates a chat with `creator` as its owner.
    fn create_chat(
        &self,
        creator: &Self::Session,
        chat: &ChatSpec,
    ) -> impl Future<Output = Result<ChatId, TargetError>> + Send;

    /// Joins a broadcast channel and follows its live stream on this session.
    fn follow(&self, member: &Self::Session, chat: ChatId) -> impl Future<Output = Result<(), TargetError>> + Send;

    /// Sends one message and waits for its acknowledgement.
    fn send(
        &self,
        sender: &Self::Session,
        chat: ChatId,
        random_id: u64,
        text: String,
    ) -> impl Future<Output = Result<Ack, TargetError>> + Send;

    /// Sends several messages back to back (setup's prefill), answering each in order.
    fn send_batch(
        &self,
        sender: &Self::Session,
        chat: ChatId,
        messages: Vec<(u64, String)>,
    ) -> impl Future<Output = Vec<Result<Ack, TargetError>>> + Send;

    /// Reads one page of history: up to `limit` messages below `offset` (newest first);
    /// answers how many came back.
    fn history(
        &self,
        reader: &Self::Session,
        chat: ChatId,
        offset: MessageId,
        limit: u32,
    ) -> impl Future<Output = Result<usize, TargetError>> + Send;

    /// Whether the system stores files and sends them as media messages.
    fn supports_media(&self) -> bool {
        false
    }

    /// Uploads `upload.content` as one file (in parts of `upload.part_bytes`, a window of
    /// `upload.parts_in_flight` in flight), sends it into `chat` as a media message with
    /// `upload.caption`, and answers the acknowledgement and when the upload had finished.
    fn send_media(
        &self,
        sender: &Self::Session,
        chat: ChatId,
        random_id: u64,
        upload: &MediaUpload,
    ) -> impl Future<Output = Result<MediaSent, TargetError>> + Send {
        let _ = (sender, chat, random_id, upload);
        async { Err(media_unsupported()) }
    }

    /// Downloads the whole file of media message `message` of `chat` (`bytes` long, as the
    /// message says), a window of `ranges_in_flight` ranges in flight, handing each range to
    /// `check` in file order; a range `check` refuses ends the download with its error.
    /// Answers the bytes read.
    fn download(
        &self,
        reader: &Self::Session,
        chat: ChatId,
        message: MessageId,
        bytes: u64,
        ranges_in_flight: usize,
        check: RangeCheck<'_>,
    ) -> impl Future<Output = Result<u64, TargetError>> + Send {
        let _ = (reader, chat, message, bytes, ranges_in_flight, check);
        async { Err(media_unsupported()) }
    }

    /// Ends an online session gracefully (logging it out where the system has logins).
    fn close(&self, session: &Self::Session) -> impl Future<Output = ()> + Send;

    /// Drops the session's connection at once: every request still waiting on it fails.
    /// Called for every session after `close`, also for those whose `close` did not finish.
    fn disconnect(&self, session: &Self::Session);
}

/// The live events of one online session, in the order the system sent them.
pub trait UpdateSource: Send + 'static {
    /// The next delivery; `None` once the session has ended.
    fn next(&mut self) -> impl Future<Output = Option<Delivery>> + Send;
}

/// A user to provision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSpec {
    /// E.164, e.g. `+19990000042`.
    pub phone: String,
    pub first_name: String,
    /// Whether the user registers one `webhook` push device (`--push-devices`).
    pub push_device: bool,
}

/// The token of the `webhook` push device a user registers with `--push-devices`: derived
/// from the user id, so a relay (or a test) can tell whose device a push went to.
pub fn push_device_token(user: UserId) -> String {
    format!("loadgen-{}", user.0)
}

/// What provisioning a user gave.
#[derive(Debug)]
pub struct Provisioned<S, U> {
    pub user: UserId,
    /// The session and its live events, for an online user.
    pub online: Option<(S, U)>,
}

/// A chat to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatSpec {
    /// The private chat of the creator and `peer`.
    Private { peer: UserId },
    /// A group of the creator and `members` (fanned out on write while small).
    Group { title: String, members: Vec<UserId> },
    /// A broadcast channel; `admins` may post besides the creator.
    Channel { title: String, admins: Vec<UserId> },
}

/// A file to upload and send as a media message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaUpload {
    /// What the file holds (generated part by part while uploading).
    pub content: Content,
    /// The message's caption (the send-time stamp and the content's seed).
    pub caption: String,
    pub part_bytes: usize,
    pub parts_in_flight: usize,
}

/// What sending a media message gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaSent {
    pub ack: Ack,
    /// When the upload was finished (the file stored), before the message was sent.
    pub uploaded: Instant,
}

/// Takes each downloaded range (its offset and bytes), in file order.
pub type RangeCheck<'a> = &'a mut (dyn FnMut(u64, &[u8]) -> Result<(), TargetError> + Send);

/// The error of a target that stores no files.
pub fn media_unsupported() -> TargetError {
    TargetError::local(UNSUPPORTED, "this target has no media messages")
}

/// A send's acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub chat: ChatId,
    pub id: MessageId,
    /// The system answered an earlier message with the same random_id.
    pub duplicate: bool,
}

/// One event of an update stream that matters to loadgen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// A new message, with its body; `media_bytes` is the size of its file, for a media
    /// message.
    Message { chat: ChatId, id: MessageId, sender: UserId, random_id: u64, text: String, media_bytes: Option<u64> },
    /// A new message announced without its body (ferrogram sends a box update without the
    /// message when it could not fetch it): it cannot be matched to a send.
    Bodiless { chat: ChatId, id: MessageId },
    /// The stream lost events (the system dropped some for this session).
    Resync,
    /// Anything else (typing, edits, membership changes).
    Other,
}

/// Why an operation failed. `code` is the server's error code name (`FLOOD_WAIT`,
/// `OVERLOADED`, ...) when `from_server`, else loadgen's own (`TIMEOUT`, `CLOSED`, `IO`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
#[non_exhaustive]
pub struct TargetError {
    pub code: &'static str,
    pub message: String,
    pub from_server: bool,
    pub retry_after: Option<Duration>,
}

impl TargetError {
    /// An error of loadgen's side (a timeout, a closed connection).
    pub fn local(code: &'static str, message: impl Into<String>) -> TargetError {
        TargetError { code, message: message.into(), from_server: false, retry_after: None }
    }

    /// An error the server answered.
    pub fn server(code: &'static str, message: impl Into<String>, retry_after: Option<Duration>) -> TargetError {
        TargetError { code, message: message.into(), from_server: true, retry_after }
    }

    pub fn timeout() -> TargetError {
        TargetError::local(TIMEOUT, "no answer before the deadline")
    }

    /// Whether the operation may still have taken effect (its answer was lost).
    pub fn outcome_unknown(&self) -> bool {
        matches!(self.code, TIMEOUT | CLOSED | IO)
    }
}

/// Loadgen's own error codes.
pub const TIMEOUT: &str = "TIMEOUT";
pub const CLOSED: &str = "CLOSED";
pub const IO: &str = "IO";
pub const PROTOCOL: &str = "PROTOCOL";
/// The target has no media messages.
pub const UNSUPPORTED: &str = "UNSUPPORTED";
/// A download's bytes (or length) differ from what was uploaded: the server answered wrong
/// content. Counted as the server's error.
pub const CONTENT_MISMATCH: &str = "CONTENT_MISMATCH";

/// A future that runs to completion on loadgen's executor, detached.
pub type BoxedTask = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Starts background futures (a connection's driver) on loadgen's executor; adapters get one
/// instead of knowing the executor.
#[derive(Clone)]
pub struct Spawner(Arc<dyn Fn(BoxedTask) + Send + Sync>);

impl Spawner {
    pub fn new(spawn: impl Fn(BoxedTask) + Send + Sync + 'static) -> Spawner {
        Spawner(Arc::new(spawn))
    }

    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        (self.0)(Box::pin(task))
    }
}

impl fmt::Debug for Spawner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Spawner")
    }
}

pub use crate::reactor::within;
