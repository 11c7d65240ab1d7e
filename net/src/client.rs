//! A client for ferrogram's wire protocol (DESIGN §6): async and executor-agnostic, plus a
//! blocking wrapper for simple programs and tests.
//!
//! Like hyper's client connection, [`connect`] returns three parts: a [`Client`] handle that
//! sends requests (cheap to clone, `Send + Sync`), the [`Connection`] future that owns the
//! socket and must be polled (spawned on the caller's executor, or driven on a thread), and the
//! [`UpdateStream`] of live events. The library never spawns a task itself, since it cannot
//! know which executor the caller runs; [`connect_blocking`] runs the connection on a thread of
//! its own for programs without one. The socket comes from `async-net`, whose reactor
//! (`async-io`) runs inside `async_io::block_on` or, under another runtime such as tokio, on a
//! thread of its own; either way no runtime has to be the caller's.
//!
//! The connection ends when the server closes the socket, on an I/O or protocol error, when
//! [`Client::close`] is called, or when every [`Client`] handle has been dropped. Then every
//! request still waiting fails with [`ClientError::Closed`] and the update stream ends.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::Duration;

use async_io::Timer;
use async_net::{AsyncToSocketAddrs, Shutdown, TcpStream};
use futures_lite::future;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::codec::{
    decode_error, decode_outcome_payload, decode_updates, decode_welcome, encode_hello, encode_ping, encode_request,
    split_req_id, DecodeError, EncodeError,
};
use crate::frame::{FrameError, FrameHeader, FrameType, PING_BYTES_MAX};
use crate::limits::{CLIENT_NAME_MAX, FRAME_HEADER_BYTES, FRAME_MAX, PROTOCOL_VERSION};
use crate::protocol::{
    Authorization, AuthorizationId, BoxState, Chat, ChatDifference, ChatId, DeviceKind, Dialog, DialogsOffset,
    Difference, ErrorBody, ErrorCode, FileInfo, FileRef, Hello, LiveEvent, MediaKind, Member, Message, MessageId,
    NewMediaMessage, NotifySettings, Outcome, Pts, PushDevice, Request, Response, SentMessage, UploadId, User, UserId,
    Welcome,
};

// Limits of the client side. They bound memory per connection; none is visible on the wire.

/// Live events buffered for a consumer that has not read them yet. Past this, events are
/// dropped and one synthetic [`LiveEvent::Resync`] is queued (see [`UpdateStream`]).
pub const UPDATE_QUEUE_EVENTS_MAX: usize = 4096;
/// Encoded request frames waiting for the writer; a caller beyond this waits for room.
pub const REQUEST_QUEUE_FRAMES_MAX: usize = 1024;
/// Pongs waiting for the writer. A server pings rarely; more than this is dropped unanswered
/// rather than stalling the reader behind the writer.
pub const PONG_QUEUE_FRAMES_MAX: usize = 16;
/// A client that has written nothing for this long sends a `Ping`, so a quiet but live
/// connection outlasts the server's idle timeout (300 s by default).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Bytes of queued frames gathered into one socket write.
pub const WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;
/// The read buffer: a burst of small frames costs one system call.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;
/// How long [`connect_blocking`] waits for the TCP connection and the handshake.
pub const BLOCKING_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a [`BlockingClient`] call waits for its answer unless configured otherwise.
pub const BLOCKING_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long closing a [`BlockingClient`] waits for a graceful close before it shuts the
/// socket down.
pub const BLOCKING_CLOSE_GRACE: Duration = Duration::from_secs(1);

const _: () = assert!(WRITE_BATCH_BYTES_MAX < FRAME_MAX, "a batch limit below one frame would never batch");
const _: () = assert!(PING_BYTES_MAX + FRAME_HEADER_BYTES < WRITE_BATCH_BYTES_MAX);

// The handles are shared between threads and tasks; losing `Send` or `Sync` to a new field
// should fail here rather than in a caller's build.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    const fn send<T: Send>() {}
    send_and_sync::<Client>();
    send_and_sync::<BlockingClient>();
    send_and_sync::<UpdateStream>();
    send_and_sync::<ClientError>();
    send::<Connection>();
};

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Connecting, reading or writing the socket failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("the client name is {bytes} bytes, more than {CLIENT_NAME_MAX}")]
    ClientNameTooLong { bytes: usize },
    /// The server answered the handshake with an error frame (e.g. `UNSUPPORTED_VERSION`).
    #[error("the server refused the connection: {0}{retry}", retry = retry_suffix(.0))]
    Refused(ErrorBody),
    #[error("the server speaks protocol version {server}, this client {client}")]
    VersionMismatch { client: u32, server: u32 },
    /// The server answered the request with a typed error; `retry_after_s` says when a
    /// `FLOOD_WAIT` or `OVERLOADED` request may be retried (see [`ClientError::retry_after`]).
    #[error("{0}{retry}", retry = retry_suffix(.0))]
    Server(ErrorBody),
    /// The server sent an error frame for the connection and then closed it.
    #[error("the server closed the connection: {0}{retry}", retry = retry_suffix(.0))]
    Connection(ErrorBody),
    /// The connection ended before the answer came, or had ended before the request.
    #[error("the connection is closed")]
    Closed,
    #[error("timed out")]
    Timeout,
    /// A frame header from the server was refused (a length over the limit, or zero).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A payload from the server was not a valid message.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The server sent a frame that the client never expects at that point.
    #[error("the server sent a frame of type {type_byte} {during}")]
    UnexpectedFrame { type_byte: u8, during: &'static str },
    /// A typed helper got a response of another kind than the request calls for.
    #[error("expected a {expected} response, the server answered {actual:?}")]
    UnexpectedResponse { expected: &'static str, actual: Box<Response> },
}

impl ClientError {
    /// The server's typed error, for `Server`, `Refused` and `Connection`.
    pub fn error_body(&self) -> Option<&ErrorBody> {
        match self {
            ClientError::Server(body) | ClientError::Refused(body) | ClientError::Connection(body) => Some(body),
            _ => None,
        }
    }

    /// The server's error code, if the server said why.
    pub fn code(&self) -> Option<ErrorCode> {
        self.error_body().map(|body| body.code)
    }

    /// How long to wait before retrying, when the server said (`FLOOD_WAIT`, `OVERLOADED`).
    pub fn retry_after(&self) -> Option<Duration> {
        self.error_body()
            .filter(|body| body.retry_after_s > 0)
            .map(|body| Duration::from_secs(u64::from(body.retry_after_s)))
    }
}

/// Connects over TCP, sends `Hello` and waits for `Welcome`. Bound the wait with
/// [`connect_timeout`] (or the caller's own timer): a silent server would hold this forever.
pub async fn connect(
    address: impl AsyncToSocketAddrs,
    client_name: &str,
) -> Result<(Client, Connection, UpdateStream), ClientError> {
    let (parts, _stream) = connect_tcp(address, client_name).await?;
    Ok(parts)
}

/// [`connect`], giving up with [`ClientError::Timeout`] after `timeout`.
pub async fn connect_timeout(
    address: impl AsyncToSocketAddrs,
    client_name: &str,
    timeout: Duration,
) -> Result<(Client, Connection, UpdateStream), ClientError> {
    within(timeout, connect(address, client_name)).await.unwrap_or(Err(ClientError::Timeout))
}

/// The handshake over any byte stream (TLS, a Unix socket, an in-memory pipe), given as its
/// read and write halves (`futures_lite::io::split` makes them from one stream).
pub async fn handshake<R, W>(
    reader: R,
    mut writer: W,
    client_name: &str,
) -> Result<(Client, Connection, UpdateStream), ClientError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    if client_name.len() > CLIENT_NAME_MAX {
        return Err(ClientError::ClientNameTooLong { bytes: client_name.len() });
    }
    let mut frame = Vec::new();
    encode_hello(&mut frame, &Hello { protocol_version: PROTOCOL_VERSION, client: client_name.to_owned() })?;
    writer.write_all(&frame).await?;
    writer.flush().await?;

    // The reader keeps its buffer past the handshake: the server may send frames right
    // behind `Welcome`, and they must not be lost.
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, reader);
    let mut body = Vec::new();
    let Some(header) = read_frame(&mut reader, &mut body).await? else {
        return Err(ClientError::Closed);
    };
    let welcome = match header.frame_type {
        Some(FrameType::Welcome) => decode_welcome(&body)?,
        Some(FrameType::Error) => return Err(ClientError::Refused(decode_error(&body)?)),
        _ => return Err(ClientError::UnexpectedFrame { type_byte: header.type_byte, during: "instead of Welcome" }),
    };
    if welcome.version != PROTOCOL_VERSION {
        return Err(ClientError::VersionMismatch { client: PROTOCOL_VERSION, server: welcome.version });
    }

    let shared = Arc::new(Shared { pending: Mutex::new(Pending::default()), connection_error: Mutex::new(None) });
    let (request_sender, request_receiver) = flume::bounded(REQUEST_QUEUE_FRAMES_MAX);
    let (close_sender, close_receiver) = flume::bounded(1);
    let (update_sender, updates) = update_queue(UPDATE_QUEUE_EVENTS_MAX);
    let client = Client {
        inner: Arc::new(ClientInner {
            welcome,
            // 0 is left unused so a zeroed req_id in a capture stands out.
            next_req_id: AtomicU64::new(1),
            requests: request_sender,
            close: close_sender,
            shared: shared.clone(),
        }),
    };
    // Created outside the future so that even a connection dropped before its first poll
    // fails the requests waiting on it.
    let close_guard = CloseOnDrop(shared.clone());
    let future = async move {
        let _close_guard = close_guard;
        let (pong_sender, pong_receiver) = flume::bounded(PONG_QUEUE_FRAMES_MAX);
        let reading = read_loop(reader, body, &shared, pong_sender, update_sender);
        let writing = write_loop(writer, request_receiver, pong_receiver, close_receiver);
        future::or(reading, writing).await
    };
    Ok((client, Connection { future: Box::pin(future) }, updates))
}

/// Sends requests over one connection. Cloning is cheap; every clone shares the connection,
/// which closes when the last clone is dropped (or on [`Client::close`]).
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("welcome", &self.inner.welcome).field("closed", &self.is_closed()).finish()
    }
}

impl Client {
    /// The server's `Welcome`: its version, clock and the limits requests must respect.
    pub fn welcome(&self) -> &Welcome {
        &self.inner.welcome
    }

    /// Sends one request and waits for its answer; a typed error from the server becomes
    /// [`ClientError::Server`]. Dropping the future forgets the request (its answer, if it
    /// comes, is discarded).
    pub async fn call(&self, request: Request) -> Result<Response, ClientError> {
        self.send(&request).await?.wait().await
    }

    /// Sends every request before waiting for the first answer, so they cost one round trip
    /// rather than one each. The answers come back in the requests' order.
    pub async fn call_many(&self, requests: Vec<Request>) -> Vec<Result<Response, ClientError>> {
        let mut calls = Vec::with_capacity(requests.len());
        for request in &requests {
            calls.push(self.send(request).await);
        }
        let mut answers = Vec::with_capacity(calls.len());
        for call in calls {
            answers.push(match call {
                Ok(call) => call.wait().await,
                Err(error) => Err(error),
            });
        }
        answers
    }

    /// Queues one request at once and returns a handle to its answer, so one task can keep
    /// several requests in flight and wait for their answers in the order it chooses (the
    /// whole-file transfers keep a window of parts this way). Dropping the handle forgets the
    /// request.
    pub async fn submit(&self, request: &Request) -> Result<Submitted, ClientError> {
        self.send(request).await.map(|call| Submitted { call })
    }

    /// Asks the connection to close: queued requests are written, waiting requests then fail
    /// with [`ClientError::Closed`], and the connection future completes.
    pub fn close(&self) {
        // A full queue already holds a close request; a disconnected one means it is closed.
        let _ = self.inner.close.try_send(());
    }

    /// Whether the connection has ended: every call now fails with [`ClientError::Closed`].
    pub fn is_closed(&self) -> bool {
        lock(&self.inner.shared.pending).closed
    }

    /// The last error frame the server sent for the connection, if any.
    pub fn connection_error(&self) -> Option<ErrorBody> {
        lock(&self.inner.shared.connection_error).clone()
    }

    /// `SignIn`: the new login, or [`SignInOutcome::SignUpRequired`] for a phone without an
    /// account (then call [`Client::sign_up`] with the same code).
    pub async fn sign_in(&self, phone: &str, code: &str) -> Result<SignInOutcome, ClientError> {
        match self.call(Request::SignIn { phone: phone.to_owned(), code: code.to_owned() }).await? {
            Response::Authorized { user, token, authorization, state } => {
                Ok(SignInOutcome::Authorized(Authorized { user, token, authorization, state }))
            }
            Response::SignUpRequired => Ok(SignInOutcome::SignUpRequired),
            other => Err(unexpected("Authorized or SignUpRequired", other)),
        }
    }

    /// Encodes and queues one request, registering where its answer goes.
    async fn send(&self, request: &Request) -> Result<PendingCall, ClientError> {
        let req_id = self.inner.next_req_id.fetch_add(1, Ordering::Relaxed);
        let mut frame = Vec::new();
        encode_request(&mut frame, req_id, request)?;
        let call = self.inner.shared.register(req_id)?;
        // A send fails only once the connection future is gone; `call` then drops, taking its
        // registration with it.
        self.inner.requests.send_async(frame).await.map_err(|_| ClientError::Closed)?;
        Ok(call)
    }
}

/// The connection's work: writing request frames (several per socket write when they queue
/// up), reading frames, routing responses to their callers and live events to the
/// [`UpdateStream`], and answering the server's pings. Poll it to completion: spawn it on the
/// caller's executor, or `block_on` it on a thread of its own.
///
/// It resolves to `Ok(())` when the server closed the connection cleanly or the client closed
/// it, and to [`ClientError::Connection`] when the server closed it after an error frame.
pub struct Connection {
    future: Pin<Box<dyn Future<Output = Result<(), ClientError>> + Send>>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

impl Future for Connection {
    type Output = Result<(), ClientError>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        self.future.as_mut().poll(context)
    }
}

/// Live events in the order the server sent them. It ends (`None`) when the connection ends.
///
/// At most [`UPDATE_QUEUE_EVENTS_MAX`] events wait here. When a consumer falls further
/// behind, later events are dropped and one [`LiveEvent::Resync`] is queued after the events
/// already waiting: on reading it, catch up with `GetDifference` (and `GetChatDifference` for
/// subscribed chats) from the last pts applied. Every event dropped was dropped while that
/// `Resync` was still unread, so the catch-up, which starts later, covers it. A payload that
/// fails to decode is handled the same way.
pub struct UpdateStream {
    receiver: flume::Receiver<LiveEvent>,
    resync_queued: Arc<AtomicBool>,
}

impl fmt::Debug for UpdateStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateStream").field("queued", &self.receiver.len()).finish()
    }
}

impl UpdateStream {
    /// The next event, or `None` once the connection has ended and every event was read.
    pub async fn next(&mut self) -> Option<LiveEvent> {
        let event = self.receiver.recv_async().await.ok();
        self.observe(event)
    }

    /// The next event if one is waiting, without blocking.
    pub fn try_next(&self) -> Option<LiveEvent> {
        self.observe(self.receiver.try_recv().ok())
    }

    /// Blocks this thread for the next event, up to `timeout`; `None` on timeout or once the
    /// stream has ended (see [`UpdateStream::is_ended`]).
    pub fn next_timeout(&self, timeout: Duration) -> Option<LiveEvent> {
        self.observe(self.receiver.recv_timeout(timeout).ok())
    }

    /// Whether the connection has ended and every event has been read.
    pub fn is_ended(&self) -> bool {
        self.receiver.is_disconnected() && self.receiver.is_empty()
    }

    fn observe(&self, event: Option<LiveEvent>) -> Option<LiveEvent> {
        if let Some(LiveEvent::Resync) = event {
            // The queued Resync has been read: a later overflow needs a new one.
            self.resync_queued.store(false, Ordering::Release);
        }
        event
    }
}

/// A request written to the connection's queue by [`Client::submit`].
pub struct Submitted {
    call: PendingCall,
}

impl fmt::Debug for Submitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Submitted").field("req_id", &self.call.req_id).finish()
    }
}

impl Submitted {
    /// Waits for the answer; a typed error from the server becomes [`ClientError::Server`].
    pub async fn answer(self) -> Result<Response, ClientError> {
        self.call.wait().await
    }
}

/// What `UploadFinish` answers: the file's reference (keep it: sending it in a message with
/// `send_media` is how anyone reads the file) and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadedFile {
    pub file: FileRef,
    pub size: u64,
}

/// What `SendCode` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodeSent {
    pub code_length: u8,
    pub timeout_s: u32,
}

/// A login: the user, the token to save for later connections (`Authenticate`), and the
/// box state live updates start after.
#[derive(Clone, PartialEq, Eq)]
pub struct Authorized {
    pub user: User,
    /// The new login's token after `SignIn`/`SignUp`; empty after `Authenticate`.
    pub token: Vec<u8>,
    pub authorization: AuthorizationId,
    pub state: BoxState,
}

impl fmt::Debug for Authorized {
    // The token is a credential: it stays out of logs and panic messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authorized")
            .field("user", &self.user)
            .field("token_bytes", &self.token.len())
            .field("authorization", &self.authorization)
            .field("state", &self.state)
            .finish()
    }
}

/// What `SignIn` answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignInOutcome {
    Authorized(Authorized),
    /// The phone has no account: `SignUp` with the same code.
    SignUpRequired,
}

/// The typed helpers, each a thin wrapper that sends one request and takes the response
/// variant that request calls for, on both [`Client`] (async) and [`BlockingClient`].
macro_rules! typed_helpers {
    ($(
        $(#[$meta:meta])*
        fn $name:ident(&self $(, $argument:ident: $type:ty)*) -> $output:ty {
            $request:expr, $expected:literal, $pattern:pat => $value:expr
        }
    )*) => {
        impl Client {
            $(
                $(#[$meta])*
                pub async fn $name(&self $(, $argument: $type)*) -> Result<$output, ClientError> {
                    match self.call($request).await? {
                        $pattern => Ok($value),
                        other => Err(unexpected($expected, other)),
                    }
                }
            )*
        }

        impl BlockingClient {
            $(
                $(#[$meta])*
                pub fn $name(&self $(, $argument: $type)*) -> Result<$output, ClientError> {
                    self.wait(self.client.$name($($argument),*))
                }
            )*
        }
    };
}

typed_helpers! {
    /// `SendCode` → `CodeSent`.
    fn send_code(&self, phone: &str) -> CodeSent {
        Request::SendCode { phone: phone.to_owned() },
        "CodeSent", Response::CodeSent { code_length, timeout_s } => CodeSent { code_length, timeout_s }
    }
    /// `SignUp` → `Authorized`.
    fn sign_up(&self, phone: &str, code: &str, first_name: &str, last_name: &str) -> Authorized {
        Request::SignUp {
            phone: phone.to_owned(),
            code: code.to_owned(),
            first_name: first_name.to_owned(),
            last_name: last_name.to_owned(),
        },
        "Authorized",
        Response::Authorized { user, token, authorization, state } => Authorized { user, token, authorization, state }
    }
    /// `Authenticate` → `Authorized` (with an empty token).
    fn authenticate(&self, token: &[u8]) -> Authorized {
        Request::Authenticate { token: token.to_vec() },
        "Authorized",
        Response::Authorized { user, token, authorization, state } => Authorized { user, token, authorization, state }
    }
    /// `LogOut` → `Done`.
    fn log_out(&self) -> () {
        Request::LogOut, "Done", Response::Done => ()
    }
    /// `GetAuthorizations` → `Authorizations`.
    fn get_authorizations(&self) -> Vec<Authorization> {
        Request::GetAuthorizations, "Authorizations", Response::Authorizations(list) => list
    }
    /// `RevokeAuthorization` → `Done`.
    fn revoke_authorization(&self, id: AuthorizationId) -> () {
        Request::RevokeAuthorization { id }, "Done", Response::Done => ()
    }
    /// `GetSelf` → `User`.
    fn get_self(&self) -> User {
        Request::GetSelf, "User", Response::User(user) => user
    }
    /// `GetUsers` → `Users`.
    fn get_users(&self, ids: &[UserId]) -> Vec<User> {
        Request::GetUsers { ids: ids.to_vec() }, "Users", Response::Users(users) => users
    }
    /// `SetName` → `Done`.
    fn set_name(&self, first_name: &str, last_name: &str) -> () {
        Request::SetName { first_name: first_name.to_owned(), last_name: last_name.to_owned() },
        "Done", Response::Done => ()
    }
    /// `SetUsername` → `Done`; `None` removes the username.
    fn set_username(&self, username: Option<&str>) -> () {
        Request::SetUsername { username: username.map(str::to_owned) }, "Done", Response::Done => ()
    }
    /// `ResolveUsername` → `MaybeUser`.
    fn resolve_username(&self, username: &str) -> Option<User> {
        Request::ResolveUsername { username: username.to_owned() }, "MaybeUser", Response::MaybeUser(user) => user
    }
    /// `ResolvePhone` → `MaybeUser`.
    fn resolve_phone(&self, phone: &str) -> Option<User> {
        Request::ResolvePhone { phone: phone.to_owned() }, "MaybeUser", Response::MaybeUser(user) => user
    }
    /// `OpenPrivate` → `ChatId`.
    fn open_private(&self, peer: UserId) -> ChatId {
        Request::OpenPrivate { peer }, "ChatId", Response::ChatId(chat) => chat
    }
    /// `CreateGroup` → `ChatId`.
    fn create_group(&self, title: &str, members: &[UserId]) -> ChatId {
        Request::CreateGroup { title: title.to_owned(), members: members.to_vec() },
        "ChatId", Response::ChatId(chat) => chat
    }
    /// `CreateChannel` → `ChatId`.
    fn create_channel(&self, title: &str) -> ChatId {
        Request::CreateChannel { title: title.to_owned() }, "ChatId", Response::ChatId(chat) => chat
    }
    /// `JoinChat` → `Done`.
    fn join_chat(&self, chat: ChatId) -> () {
        Request::JoinChat { chat }, "Done", Response::Done => ()
    }
    /// `LeaveChat` → `Done`.
    fn leave_chat(&self, chat: ChatId) -> () {
        Request::LeaveChat { chat }, "Done", Response::Done => ()
    }
    /// `AddMember` → `Done`.
    fn add_member(&self, chat: ChatId, user: UserId) -> () {
        Request::AddMember { chat, user }, "Done", Response::Done => ()
    }
    /// `RemoveMember` → `Done`.
    fn remove_member(&self, chat: ChatId, user: UserId) -> () {
        Request::RemoveMember { chat, user }, "Done", Response::Done => ()
    }
    /// `PromoteMember` → `Done`.
    fn promote_member(&self, chat: ChatId, user: UserId) -> () {
        Request::PromoteMember { chat, user }, "Done", Response::Done => ()
    }
    /// `GetChat` → `Chat`.
    fn get_chat(&self, chat: ChatId) -> Chat {
        Request::GetChat { chat }, "Chat", Response::Chat(chat) => chat
    }
    /// `GetMembers` → `Members`: one page, after `after`.
    fn get_members(&self, chat: ChatId, after: Option<UserId>, limit: u32) -> Vec<Member> {
        Request::GetMembers { chat, after, limit }, "Members", Response::Members(members) => members
    }
    /// `SendMessage` (not a reply) → `Sent`. Retrying with the same `random_id` is safe: the
    /// server answers the original message.
    fn send_message(&self, chat: ChatId, random_id: u64, text: &str) -> SentMessage {
        Request::SendMessage { chat, random_id, text: text.to_owned(), reply_to: None },
        "Sent", Response::Sent(sent) => sent
    }
    /// `GetHistory` without `min_id`/`max_id` bounds → `Messages`, newest first.
    fn get_history(&self, chat: ChatId, offset_id: MessageId, limit: u32) -> Vec<Message> {
        Request::GetHistory { chat, offset_id, limit, min_id: MessageId(0), max_id: MessageId(0) },
        "Messages", Response::Messages(messages) => messages
    }
    /// `GetMessages` → `Messages`.
    fn get_messages(&self, chat: ChatId, ids: &[MessageId]) -> Vec<Message> {
        Request::GetMessages { chat, ids: ids.to_vec() }, "Messages", Response::Messages(messages) => messages
    }
    /// `ReadHistory` → `Done`.
    fn read_history(&self, chat: ChatId, max_id: MessageId) -> () {
        Request::ReadHistory { chat, max_id }, "Done", Response::Done => ()
    }
    /// `SetTyping` → `Done`.
    fn set_typing(&self, chat: ChatId) -> () {
        Request::SetTyping { chat }, "Done", Response::Done => ()
    }
    /// `GetState` → `State`.
    fn get_state(&self) -> BoxState {
        Request::GetState, "State", Response::State(state) => state
    }
    /// `GetDifference` → `Difference`.
    fn get_difference(&self, pts: Pts, limit: u32) -> Difference {
        Request::GetDifference { pts, limit }, "Difference", Response::Difference(difference) => difference
    }
    /// `GetChatDifference` → `ChatDifference`.
    fn get_chat_difference(&self, chat: ChatId, pts: Pts, limit: u32) -> ChatDifference {
        Request::GetChatDifference { chat, pts, limit },
        "ChatDifference", Response::ChatDifference(difference) => difference
    }
    /// `GetDialogs` → `Dialogs`, newest first.
    fn get_dialogs(&self, offset: Option<DialogsOffset>, limit: u32) -> Vec<Dialog> {
        Request::GetDialogs { offset, limit }, "Dialogs", Response::Dialogs(dialogs) => dialogs
    }
    /// `SubscribeChat` → `Pts`: the chat's pts its live events follow.
    fn subscribe_chat(&self, chat: ChatId) -> Pts {
        Request::SubscribeChat { chat }, "Pts", Response::Pts(pts) => pts
    }
    /// `UnsubscribeChat` → `Done`.
    fn unsubscribe_chat(&self, chat: ChatId) -> () {
        Request::UnsubscribeChat { chat }, "Done", Response::Done => ()
    }
    /// `RegisterDevice` → `Done`. Registering the same kind and token again updates the flags.
    fn register_device(&self, kind: DeviceKind, token: &str, app_sandbox: bool, no_muted: bool) -> () {
        Request::RegisterDevice { kind, token: token.to_owned(), app_sandbox, no_muted },
        "Done", Response::Done => ()
    }
    /// `UnregisterDevice` → `Unregistered`: whether the device was registered.
    fn unregister_device(&self, kind: DeviceKind, token: &str) -> bool {
        Request::UnregisterDevice { kind, token: token.to_owned() },
        "Unregistered", Response::Unregistered { was_registered } => was_registered
    }
    /// `ListDevices` → `Devices`, oldest first.
    fn list_devices(&self) -> Vec<PushDevice> {
        Request::ListDevices, "Devices", Response::Devices(devices) => devices
    }
    /// `SetNotifySettings` → `Done`.
    fn set_notify_settings(&self, chat: ChatId, settings: NotifySettings) -> () {
        Request::SetNotifySettings {
            chat,
            mute_until: settings.mute_until,
            show_previews: settings.show_previews,
        },
        "Done", Response::Done => ()
    }
    /// `GetNotifySettings` → `NotifySettings`.
    fn get_notify_settings(&self, chat: ChatId) -> NotifySettings {
        Request::GetNotifySettings { chat }, "NotifySettings", Response::NotifySettings(settings) => settings
    }
    /// `UploadStart` → `UploadStarted`. See `BlockingClient::upload_file` for a whole file.
    fn upload_start(&self, client_upload_id: u64, total_bytes: Option<u64>) -> UploadId {
        Request::UploadStart { client_upload_id, total_bytes },
        "UploadStarted", Response::UploadStarted { upload_id } => upload_id
    }
    /// `UploadPart` → `PartStored`: whether the part had been stored before.
    fn upload_part(&self, upload_id: UploadId, part: u32, bytes: Vec<u8>) -> bool {
        Request::UploadPart { upload_id, part, bytes }, "PartStored", Response::PartStored { duplicate } => duplicate
    }
    /// `UploadFinish` → `UploadFinished`.
    fn upload_finish(
        &self,
        upload_id: UploadId,
        parts: u32,
        total_bytes: Option<u64>,
        name: &str,
        mime_type: &str
    ) -> UploadedFile {
        Request::UploadFinish {
            parts,
            upload_id,
            total_bytes,
            name: name.to_owned(),
            mime_type: mime_type.to_owned(),
        },
        "UploadFinished", Response::UploadFinished { file, size } => UploadedFile { file, size }
    }
    /// `UploadCancel` → `Done`.
    fn upload_cancel(&self, upload_id: UploadId) -> () {
        Request::UploadCancel { upload_id }, "Done", Response::Done => ()
    }
    /// `GetFile` → `FileBytes`: a range of the file of media message `message` of `chat`.
    /// See `BlockingClient::download_file` for a whole file.
    fn get_file(&self, chat: ChatId, message: MessageId, offset: u64, limit: u32) -> Vec<u8> {
        Request::GetFile { chat, message, offset, limit }, "FileBytes", Response::FileBytes { bytes } => bytes
    }
    /// `GetFileInfo` → `FileInfo` of the file of media message `message` of `chat`.
    fn get_file_info(&self, chat: ChatId, message: MessageId) -> FileInfo {
        Request::GetFileInfo { chat, message }, "FileInfo", Response::FileInfo(info) => info
    }
    /// `SendMedia` (not a reply) → `Sent`: `file` as a photo or document with `caption` (may
    /// be empty). Retrying with the same `random_id` is safe, as for `send_message`.
    fn send_media(&self, chat: ChatId, random_id: u64, file: FileRef, kind: MediaKind, caption: &str) -> SentMessage {
        Request::SendMedia(Box::new(NewMediaMessage {
            chat,
            random_id,
            file,
            kind,
            caption: caption.to_owned(),
            reply_to: None,
        })),
        "Sent", Response::Sent(sent) => sent
    }
}

/// Connects like [`connect`], waiting at most [`BLOCKING_CONNECT_TIMEOUT`], and runs the
/// connection on a thread of its own.
pub fn connect_blocking(address: impl AsyncToSocketAddrs, client_name: &str) -> Result<BlockingClient, ClientError> {
    connect_blocking_timeout(address, client_name, BLOCKING_CONNECT_TIMEOUT)
}

/// [`connect_blocking`] with another timeout for the connection and handshake.
pub fn connect_blocking_timeout(
    address: impl AsyncToSocketAddrs,
    client_name: &str,
    timeout: Duration,
) -> Result<BlockingClient, ClientError> {
    let connecting = within(timeout, connect_tcp(address, client_name));
    // async-io's block_on drives the socket reactor on this thread while it waits, rather than
    // handing every readiness event through async-io's fallback thread as futures-lite's would.
    let ((client, connection, updates), stream) =
        async_io::block_on(connecting).unwrap_or(Err(ClientError::Timeout))?;
    let (done_sender, done_receiver) = flume::bounded(1);
    let thread = std::thread::Builder::new().name("ferrogram-client".to_owned()).spawn(move || {
        let result = async_io::block_on(connection);
        let _ = done_sender.send(());
        result
    })?;
    Ok(BlockingClient {
        client,
        updates,
        stream,
        connection: Some(thread),
        connection_done: done_receiver,
        call_timeout: BLOCKING_CALL_TIMEOUT,
    })
}

/// A blocking client for simple programs and tests: the connection runs on a background
/// thread, calls block the calling thread (at most the call timeout), and live events are
/// read with [`BlockingClient::next_update_timeout`]. It may be shared between threads.
///
/// Dropping it closes the connection (see [`BlockingClient::close`]); [`Client`] clones taken
/// from [`BlockingClient::client`] then fail with [`ClientError::Closed`].
pub struct BlockingClient {
    client: Client,
    updates: UpdateStream,
    /// A handle on the socket, to shut it down if a graceful close does not finish in time.
    stream: TcpStream,
    connection: Option<JoinHandle<Result<(), ClientError>>>,
    /// Receives once when the connection thread is about to finish.
    connection_done: flume::Receiver<()>,
    call_timeout: Duration,
}

impl fmt::Debug for BlockingClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingClient")
            .field("client", &self.client)
            .field("updates", &self.updates)
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

impl BlockingClient {
    /// Sets how long each call waits for its answer before failing with
    /// [`ClientError::Timeout`] (default [`BLOCKING_CALL_TIMEOUT`]).
    pub fn with_call_timeout(mut self, timeout: Duration) -> BlockingClient {
        self.call_timeout = timeout;
        self
    }

    pub fn call_timeout(&self) -> Duration {
        self.call_timeout
    }

    /// The async client underneath, e.g. to hand to code written against [`Client`].
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn welcome(&self) -> &Welcome {
        self.client.welcome()
    }

    /// [`Client::call`], blocking.
    pub fn call(&self, request: Request) -> Result<Response, ClientError> {
        self.wait(self.client.call(request))
    }

    /// [`Client::call_many`], blocking; on timeout every answer is [`ClientError::Timeout`].
    pub fn call_many(&self, requests: Vec<Request>) -> Vec<Result<Response, ClientError>> {
        let count = requests.len();
        let answers = async_io::block_on(within(self.call_timeout, self.client.call_many(requests)));
        answers.unwrap_or_else(|| (0..count).map(|_| Err(ClientError::Timeout)).collect())
    }

    /// [`Client::sign_in`], blocking.
    pub fn sign_in(&self, phone: &str, code: &str) -> Result<SignInOutcome, ClientError> {
        self.wait(self.client.sign_in(phone, code))
    }

    /// Runs any client future on this thread, bounded by the call timeout.
    pub fn wait<T>(&self, future: impl Future<Output = Result<T, ClientError>>) -> Result<T, ClientError> {
        async_io::block_on(within(self.call_timeout, future)).unwrap_or(Err(ClientError::Timeout))
    }

    /// The next live event, waiting at most `timeout`; `None` on timeout or once the
    /// connection has ended (see [`BlockingClient::is_closed`]).
    pub fn next_update_timeout(&self, timeout: Duration) -> Option<LiveEvent> {
        self.updates.next_timeout(timeout)
    }

    /// The next live event if one is waiting.
    pub fn try_next_update(&self) -> Option<LiveEvent> {
        self.updates.try_next()
    }

    pub fn updates(&self) -> &UpdateStream {
        &self.updates
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    pub fn connection_error(&self) -> Option<ErrorBody> {
        self.client.connection_error()
    }

    /// Closes the connection: gracefully if it finishes within [`BLOCKING_CLOSE_GRACE`], else
    /// by shutting the socket down. Returns how the connection ended (`Ok` for a clean close
    /// by either side).
    pub fn close(mut self) -> Result<(), ClientError> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<(), ClientError> {
        let Some(thread) = self.connection.take() else { return Ok(()) };
        self.client.close();
        if self.connection_done.recv_timeout(BLOCKING_CLOSE_GRACE).is_err() {
            // A writer stuck on a peer that stopped reading would hold the graceful close;
            // shutting the socket down wakes both halves with an error.
            let _ = self.stream.shutdown(Shutdown::Both);
        }
        match thread.join() {
            Ok(result) => result,
            // The connection code panicked: a bug, not an operating error, so it propagates.
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for BlockingClient {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Don't join a connection thread while unwinding; the socket shutdown ends it.
            let _ = self.stream.shutdown(Shutdown::Both);
            return;
        }
        let _ = self.shut_down();
    }
}

// Helpers.

struct ClientInner {
    welcome: Welcome,
    next_req_id: AtomicU64,
    /// Encoded request frames for the writer. Only `Client`s hold a sender, so the writer
    /// sees the queue disconnect when the last one is dropped.
    requests: flume::Sender<Vec<u8>>,
    close: flume::Sender<()>,
    shared: Arc<Shared>,
}

/// What the clients and the connection future share.
struct Shared {
    pending: Mutex<Pending>,
    connection_error: Mutex<Option<ErrorBody>>,
}

#[derive(Default)]
struct Pending {
    waiters: HashMap<u64, Waiter>,
    /// Set once the connection has ended; no request registers after it.
    closed: bool,
}

/// Where one request's answer goes: a one-slot channel, so completing never blocks.
type Waiter = flume::Sender<Result<Outcome, ClientError>>;

impl Shared {
    fn register(self: &Arc<Shared>, req_id: u64) -> Result<PendingCall, ClientError> {
        let (sender, receiver) = flume::bounded(1);
        let mut pending = lock(&self.pending);
        if pending.closed {
            return Err(ClientError::Closed);
        }
        let previous = pending.waiters.insert(req_id, sender);
        assert!(previous.is_none(), "req_id {req_id} was handed out twice");
        Ok(PendingCall { shared: self.clone(), req_id, receiver })
    }

    /// Hands a response to its caller. An unknown req_id is a call that gave up waiting.
    fn complete(&self, req_id: u64, answer: Result<Outcome, ClientError>) {
        if let Some(waiter) = lock(&self.pending).waiters.remove(&req_id) {
            let _ = waiter.try_send(answer);
        }
    }

    /// The connection has ended: dropping the waiters wakes each caller with `Closed`.
    fn close(&self) {
        let waiters = {
            let mut pending = lock(&self.pending);
            pending.closed = true;
            std::mem::take(&mut pending.waiters)
        };
        drop(waiters);
    }
}

/// One request waiting for its answer. Dropping it unregisters the request, so a caller that
/// gives up (a timeout, a dropped future) leaves nothing behind.
struct PendingCall {
    shared: Arc<Shared>,
    req_id: u64,
    receiver: flume::Receiver<Result<Outcome, ClientError>>,
}

impl PendingCall {
    async fn wait(self) -> Result<Response, ClientError> {
        match self.receiver.recv_async().await {
            Ok(Ok(Outcome::Ok(response))) => Ok(response),
            Ok(Ok(Outcome::Err(body))) => Err(ClientError::Server(body)),
            Ok(Err(error)) => Err(error),
            Err(flume::RecvError::Disconnected) => Err(ClientError::Closed),
        }
    }
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        lock(&self.shared.pending).waiters.remove(&self.req_id);
    }
}

/// Fails every waiting request when the connection future completes or is dropped.
struct CloseOnDrop(Arc<Shared>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The connection's end of the [`UpdateStream`].
struct UpdateSender {
    sender: flume::Sender<LiveEvent>,
    resync_queued: Arc<AtomicBool>,
    events_max: usize,
}

/// A queue of `events_max` events plus one slot kept for the synthetic `Resync`, so that it
/// always fits when the events have filled the rest.
fn update_queue(events_max: usize) -> (UpdateSender, UpdateStream) {
    let (sender, receiver) = flume::bounded(events_max + 1);
    let resync_queued = Arc::new(AtomicBool::new(false));
    (
        UpdateSender { sender, resync_queued: resync_queued.clone(), events_max },
        UpdateStream { receiver, resync_queued },
    )
}

impl UpdateSender {
    fn push(&self, event: LiveEvent) {
        if self.sender.len() < self.events_max {
            // Only this sender adds to the queue, so there is still room for the send; a
            // consumer that dropped its stream makes it fail, which is fine.
            let _ = self.sender.try_send(event);
        } else {
            self.push_resync();
        }
    }

    /// Notes that events were lost. While a synthetic `Resync` is still unread nothing more is
    /// needed: the consumer's catch-up starts after reading it, so it covers these too.
    fn push_resync(&self) {
        if !self.resync_queued.swap(true, Ordering::AcqRel) {
            let _ = self.sender.try_send(LiveEvent::Resync);
        }
    }
}

async fn connect_tcp(
    address: impl AsyncToSocketAddrs,
    client_name: &str,
) -> Result<((Client, Connection, UpdateStream), TcpStream), ClientError> {
    let stream = TcpStream::connect(address).await?;
    // Requests are small and waited on; Nagle's algorithm would hold each one back for an ACK.
    stream.set_nodelay(true)?;
    let parts = handshake(stream.clone(), stream.clone(), client_name).await?;
    Ok((parts, stream))
}

/// Reads frames until the server closes the connection, routing each.
async fn read_loop<R: AsyncRead + Unpin>(
    mut reader: BufReader<R>,
    mut body: Vec<u8>,
    shared: &Shared,
    pongs: flume::Sender<Vec<u8>>,
    updates: UpdateSender,
) -> Result<(), ClientError> {
    loop {
        let header = match read_frame(&mut reader, &mut body).await {
            Ok(Some(header)) => header,
            Ok(None) => return closed_by_server(shared, Ok(())),
            Err(error @ ClientError::Io(_)) => return closed_by_server(shared, Err(error)),
            Err(error) => return Err(error),
        };
        match header.frame_type {
            Some(FrameType::Response) => {
                let (req_id, archive) = split_req_id("response", &body)?;
                // A bad payload fails only its request: the framing around it is intact.
                shared.complete(req_id, decode_outcome_payload(archive).map_err(ClientError::Decode));
            }
            Some(FrameType::Updates) => match decode_updates(&body) {
                Ok(batch) => batch.events.into_iter().for_each(|event| updates.push(event)),
                Err(_) => updates.push_resync(),
            },
            Some(FrameType::Ping) if body.len() <= PING_BYTES_MAX => {
                let _ = pongs.try_send(body.clone());
            }
            // An oversized ping breaks the protocol, but leaving it unanswered costs the server
            // only a missed pong, so the connection goes on. The client sends no pings, so
            // there is nothing to match a pong against.
            Some(FrameType::Ping | FrameType::Pong) => {}
            Some(FrameType::Error) => *lock(&shared.connection_error) = Some(decode_error(&body)?),
            Some(FrameType::Hello | FrameType::Welcome | FrameType::Request) => {
                return Err(ClientError::UnexpectedFrame {
                    type_byte: header.type_byte,
                    during: "after the handshake",
                });
            }
            // A frame type from a newer protocol: the header says how long it is, so it is
            // skipped rather than treated as a broken stream.
            None => {}
        }
        if body.capacity() > READ_BUFFER_BYTES {
            // One large frame should not pin a megabyte per idle connection.
            body = Vec::new();
        }
    }
}

/// How the reading side ends: the server's error frame, if it sent one, explains the close
/// better than the end of stream or reset that followed.
fn closed_by_server(shared: &Shared, result: Result<(), ClientError>) -> Result<(), ClientError> {
    match lock(&shared.connection_error).clone() {
        Some(body) => Err(ClientError::Connection(body)),
        None => result,
    }
}

/// What woke the writer.
enum Wake {
    Request(Vec<u8>),
    Pong(Vec<u8>),
    Keepalive,
    Close,
}

/// Writes queued frames, gathering whatever has queued up into one write, until the clients
/// close the connection or are all dropped.
async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: W,
    requests: flume::Receiver<Vec<u8>>,
    pongs: flume::Receiver<Vec<u8>>,
    close: flume::Receiver<()>,
) -> Result<(), ClientError> {
    let mut batch = Vec::with_capacity(READ_BUFFER_BYTES);
    // One keep-alive timer for the connection, pushed back at most once a second as frames go
    // out: a timer made per wake-up would register with the reactor on every request.
    let mut keepalive = async_io::Timer::after(KEEPALIVE_INTERVAL);
    let mut keepalive_set = std::time::Instant::now();
    loop {
        let wake = future::or(
            async { requests.recv_async().await.map_or(Wake::Close, Wake::Request) },
            future::or(
                async { pongs.recv_async().await.map_or(Wake::Close, Wake::Pong) },
                future::or(
                    async {
                        // Either a close request or every client gone (the sender dropped).
                        let _ = close.recv_async().await;
                        Wake::Close
                    },
                    async {
                        (&mut keepalive).await;
                        Wake::Keepalive
                    },
                ),
            ),
        )
        .await;
        let mut closing = false;
        match wake {
            Wake::Request(frame) => batch.extend_from_slice(&frame),
            Wake::Pong(payload) => encode_ping(&mut batch, FrameType::Pong, &payload)?,
            Wake::Keepalive => encode_ping(&mut batch, FrameType::Ping, b"keepalive")?,
            Wake::Close => closing = true,
        }
        // Pongs first: the server times them.
        while let Ok(payload) = pongs.try_recv() {
            encode_ping(&mut batch, FrameType::Pong, &payload)?;
        }
        while batch.len() < WRITE_BATCH_BYTES_MAX {
            match requests.try_recv() {
                Ok(frame) => batch.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            if keepalive_set.elapsed() >= std::time::Duration::from_secs(1) {
                keepalive.set_after(KEEPALIVE_INTERVAL);
                keepalive_set = std::time::Instant::now();
            }
            writer.write_all(&batch).await?;
            writer.flush().await?;
            batch.clear();
            if batch.capacity() > WRITE_BATCH_BYTES_MAX * 2 {
                batch = Vec::with_capacity(READ_BUFFER_BYTES);
            }
        }
        // Requests can keep the first branch busy, so a close request is also checked here.
        if closing || !matches!(close.try_recv(), Err(flume::TryRecvError::Empty)) {
            // Half-closes: the server sees the end of the stream after the last request.
            writer.close().await?;
            return Ok(());
        }
    }
}

/// Reads one frame into `body` (reused between frames). `None` is a clean end of stream
/// before the frame began.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    body: &mut Vec<u8>,
) -> Result<Option<FrameHeader>, ClientError> {
    let mut header = [0; FRAME_HEADER_BYTES];
    let mut filled = 0;
    while filled < header.len() {
        match reader.read(&mut header[filled..]).await {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error.into()),
        }
    }
    let header = FrameHeader::parse(header, FRAME_MAX)?;
    body.clear();
    body.resize(header.body_bytes, 0);
    reader.read_exact(body).await?;
    Ok(Some(header))
}

/// `future`'s output, or `None` once `timeout` has passed.
pub(crate) async fn within<T>(timeout: Duration, future: impl Future<Output = T>) -> Option<T> {
    future::or(async { Some(future.await) }, async {
        Timer::after(timeout).await;
        None
    })
    .await
}

pub(crate) fn unexpected(expected: &'static str, actual: Response) -> ClientError {
    ClientError::UnexpectedResponse { expected, actual: Box::new(actual) }
}

/// ` (retry in N s)` when the server gave a delay its message does not already state.
fn retry_suffix(body: &ErrorBody) -> String {
    let suffix = match body.retry_after_s {
        0 => return String::new(),
        seconds => format!("retry in {seconds} s"),
    };
    if body.message.contains(&suffix) {
        String::new()
    } else {
        format!(" ({suffix})")
    }
}

/// Locks a mutex even if a thread panicked while holding it: the maps behind these locks are
/// changed by single inserts and removes, so they are never seen half-updated.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener};
    use std::time::Instant;

    use super::*;
    use crate::codec::{decode_hello, decode_request, encode_error, encode_response, encode_updates, encode_welcome};
    use crate::protocol::{Limits, UnixMs, Updates};

    const TEST_TIMEOUT: Duration = Duration::from_secs(10);

    // Two calls in flight at once are answered in the opposite order, and each caller still
    // gets its own answer: responses are routed by req_id, not by arrival order.
    #[test]
    fn concurrent_calls_are_matched_by_req_id() {
        let (address, server) = fake_server(|mut peer| {
            peer.accept_hello();
            let first = peer.read_request();
            let second = peer.read_request();
            assert_ne!(first.0, second.0, "each request has its own req_id");
            for (req_id, request) in [second, first] {
                let Request::GetUsers { ids } = request else { panic!("expected GetUsers, got {request:?}") };
                let users = ids.into_iter().map(|id| user(id.0)).collect();
                peer.respond(req_id, Outcome::Ok(Response::Users(users)));
            }
            peer.expect_end();
        });
        let answers = async_io::block_on(within(TEST_TIMEOUT, async {
            let (client, connection, _updates) = connect(address, "test").await.expect("connects");
            let calls = future::zip(client.get_users(&[UserId(1)]), client.get_users(&[UserId(2)]));
            let answers = future::or(async { Ok(calls.await) }, async { Err(connection.await) }).await;
            drop(client);
            answers
        }))
        .expect("finishes in time")
        .expect("the calls finish before the connection");
        assert_eq!(answers.0.expect("first call").first().map(|user| user.id), Some(UserId(1)));
        assert_eq!(answers.1.expect("second call").first().map(|user| user.id), Some(UserId(2)));
        server.join().expect("the fake server's checks pass");
    }

    // Live events reach the update stream in order, a server ping is answered with a pong
    // carrying the same bytes, and a graceful close ends the stream on both sides.
    #[test]
    fn updates_are_delivered_and_pings_answered() {
        let (address, server) = fake_server(|mut peer| {
            peer.accept_hello();
            let typing = LiveEvent::Typing { chat: ChatId(7), user: UserId(3) };
            let mut frame = Vec::new();
            encode_updates(&mut frame, &Updates { events: vec![typing, LiveEvent::Revoked] }).expect("encodes");
            encode_ping(&mut frame, FrameType::Ping, b"are you there").expect("encodes");
            peer.write(&frame);
            let (frame_type, body) = peer.read_frame().expect("a pong");
            assert_eq!((frame_type, body.as_slice()), (FrameType::Pong, b"are you there".as_slice()));
            peer.expect_end();
        });
        let client = connect_blocking(address, "test").expect("connects").with_call_timeout(TEST_TIMEOUT);
        let first = client.next_update_timeout(TEST_TIMEOUT);
        assert_eq!(first, Some(LiveEvent::Typing { chat: ChatId(7), user: UserId(3) }));
        assert_eq!(client.next_update_timeout(TEST_TIMEOUT), Some(LiveEvent::Revoked));
        client.close().expect("a clean close");
        server.join().expect("the fake server saw the pong and the close");
    }

    // When the server drops the connection, a request waiting for its answer fails with
    // Closed instead of hanging, later calls fail at once, and the update stream ends.
    #[test]
    fn pending_requests_fail_when_the_server_drops() {
        let (address, server) = fake_server(|mut peer| {
            peer.accept_hello();
            let _ = peer.read_request();
            // Dropping the peer closes the socket with the request unanswered.
        });
        let client = connect_blocking(address, "test").expect("connects").with_call_timeout(TEST_TIMEOUT);
        let started = Instant::now();
        assert!(matches!(client.call(Request::GetState), Err(ClientError::Closed)));
        assert!(started.elapsed() < TEST_TIMEOUT, "the failure came from the close, not the timeout");
        assert!(matches!(client.get_self(), Err(ClientError::Closed)));
        assert_eq!(client.next_update_timeout(TEST_TIMEOUT), None);
        assert!(client.updates().is_ended() && client.is_closed());
        server.join().expect("the fake server ran");
    }

    // An error frame instead of Welcome refuses the connection with the server's typed error.
    #[test]
    fn an_error_frame_in_the_handshake_is_refused() {
        let (address, server) = fake_server(|mut peer| {
            let (frame_type, _) = peer.read_frame().expect("a hello");
            assert_eq!(frame_type, FrameType::Hello);
            let mut frame = Vec::new();
            let error = ErrorBody::new(ErrorCode::UnsupportedVersion, "this server speaks version 2");
            encode_error(&mut frame, &error).expect("encodes");
            peer.write(&frame);
        });
        match connect_blocking(address, "test") {
            Err(ClientError::Refused(body)) => assert_eq!(body.code, ErrorCode::UnsupportedVersion),
            other => panic!("expected Refused, got {other:?}"),
        }
        server.join().expect("the fake server ran");
    }

    // A server error keeps its code and retry delay, and a typed helper given a response of
    // the wrong kind says so instead of misreading it.
    #[test]
    fn server_errors_and_wrong_responses_are_typed() {
        let (address, server) = fake_server(|mut peer| {
            peer.accept_hello();
            let (req_id, _) = peer.read_request();
            peer.respond(req_id, Outcome::Err(ErrorBody::flood_wait(7)));
            let (req_id, _) = peer.read_request();
            peer.respond(req_id, Outcome::Ok(Response::Done));
            peer.expect_end();
        });
        let client = connect_blocking(address, "test").expect("connects").with_call_timeout(TEST_TIMEOUT);
        let error = client.send_code("+15550001111").expect_err("a flood wait");
        assert_eq!(error.code(), Some(ErrorCode::FloodWait));
        assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
        assert!(error.to_string().ends_with("retry in 7 s"), "{error}");
        let terse = ClientError::Server(ErrorBody { message: "slow down".into(), ..ErrorBody::flood_wait(7) });
        assert_eq!(terse.to_string(), "FLOOD_WAIT: slow down (retry in 7 s)");
        let wrong = client.get_self().expect_err("Done is not a User");
        assert!(matches!(wrong, ClientError::UnexpectedResponse { expected: "User", .. }), "{wrong:?}");
        drop(client);
        server.join().expect("the fake server saw the close");
    }

    // `call_many` writes every request before the first answer comes back (the fake server
    // reads them all before answering any), and the answers, given in reverse, still come back
    // in the requests' order.
    #[test]
    fn call_many_pipelines_requests() {
        const REQUESTS: u64 = 300;
        let (address, server) = fake_server(|mut peer| {
            peer.accept_hello();
            let requests: Vec<_> = (0..REQUESTS).map(|_| peer.read_request()).collect();
            let mut frames = Vec::new();
            for (req_id, request) in requests.into_iter().rev() {
                let Request::GetUsers { ids } = request else { panic!("expected GetUsers, got {request:?}") };
                let outcome = Outcome::Ok(Response::Users(ids.into_iter().map(|id| user(id.0)).collect()));
                encode_response(&mut frames, req_id, &outcome).expect("encodes");
            }
            peer.write(&frames);
            peer.expect_end();
        });
        let client = connect_blocking(address, "test").expect("connects").with_call_timeout(TEST_TIMEOUT);
        let requests = (0..REQUESTS).map(|id| Request::GetUsers { ids: vec![UserId(id)] }).collect();
        for (id, answer) in (0..REQUESTS).zip(client.call_many(requests)) {
            match answer {
                Ok(Response::Users(users)) => assert_eq!(users[0].id, UserId(id)),
                other => panic!("request {id}: {other:?}"),
            }
        }
        client.close().expect("a clean close");
        server.join().expect("the fake server ran");
    }

    // A consumer that falls behind loses the events past the queue's limit but reads exactly
    // one Resync after those it kept, and events flow again once it has caught up.
    #[test]
    fn a_slow_consumer_gets_one_resync() {
        let (sender, mut stream) = update_queue(4);
        let typing = |user| LiveEvent::Typing { chat: ChatId(1), user: UserId(user) };
        (0..10).for_each(|user| sender.push(typing(user)));
        let read: Vec<_> = std::iter::from_fn(|| stream.try_next()).collect();
        assert_eq!(read, vec![typing(0), typing(1), typing(2), typing(3), LiveEvent::Resync]);
        sender.push(typing(20));
        (0..6).for_each(|user| sender.push(typing(30 + user)));
        let next = async_io::block_on(stream.next());
        assert_eq!(next, Some(typing(20)), "after the Resync is read, events are kept again");
        let rest: Vec<_> = std::iter::from_fn(|| stream.try_next()).collect();
        assert_eq!(rest, vec![typing(30), typing(31), typing(32), LiveEvent::Resync]);
        drop(sender);
        assert!(stream.is_ended());
    }

    fn user(id: u64) -> User {
        User {
            id: UserId(id),
            phone: String::new(),
            first_name: format!("user {id}"),
            last_name: String::new(),
            username: None,
        }
    }

    /// One accepted connection of the fake server, with blocking reads bounded in time.
    struct FakePeer {
        stream: std::net::TcpStream,
    }

    impl FakePeer {
        /// `None` at a clean end of stream.
        fn read_frame(&mut self) -> Option<(FrameType, Vec<u8>)> {
            let mut header = [0; FRAME_HEADER_BYTES];
            match self.stream.read(&mut header[..1]) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(error) => panic!("reading a frame: {error}"),
            }
            self.stream.read_exact(&mut header[1..]).expect("a whole header");
            let header = FrameHeader::parse(header, FRAME_MAX).expect("a valid header");
            let mut body = vec![0; header.body_bytes];
            self.stream.read_exact(&mut body).expect("a whole body");
            Some((header.frame_type.expect("a known frame type"), body))
        }

        fn write(&mut self, bytes: &[u8]) {
            self.stream.write_all(bytes).expect("writes");
        }

        fn accept_hello(&mut self) {
            let (frame_type, body) = self.read_frame().expect("a hello");
            assert_eq!(frame_type, FrameType::Hello);
            let hello = decode_hello(&body).expect("a valid hello");
            assert_eq!((hello.protocol_version, hello.client.as_str()), (PROTOCOL_VERSION, "test"));
            let limits = Limits {
                frame_max: FRAME_MAX as u32,
                message_text_max: 4096,
                history_page_max: 100,
                difference_limit_max: 1000,
                dialogs_page_max: 100,
                ids_per_request_max: 100,
                requests_in_flight_max: 64,
            };
            let mut frame = Vec::new();
            let welcome = Welcome { version: PROTOCOL_VERSION, server_time: UnixMs(1), limits };
            encode_welcome(&mut frame, &welcome).expect("encodes");
            self.write(&frame);
        }

        fn read_request(&mut self) -> (u64, Request) {
            let (frame_type, body) = self.read_frame().expect("a request");
            assert_eq!(frame_type, FrameType::Request);
            let (req_id, request) = decode_request(&body).expect("a req_id");
            (req_id, request.expect("a valid request"))
        }

        fn respond(&mut self, req_id: u64, outcome: Outcome) {
            let mut frame = Vec::new();
            encode_response(&mut frame, req_id, &outcome).expect("encodes");
            self.write(&frame);
        }

        /// Checks that the client sends nothing more and closes its side.
        fn expect_end(&mut self) {
            if let Some((frame_type, _)) = self.read_frame() {
                panic!("expected the end of the stream, got a {frame_type:?} frame");
            }
        }
    }

    /// Serves one connection on 127.0.0.1 with `script` on a thread. Accepting and every read
    /// give up after the test timeout, so a broken client fails the test instead of hanging it.
    fn fake_server(script: impl FnOnce(FakePeer) + Send + 'static) -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds a loopback port");
        let address = listener.local_addr().expect("has an address");
        listener.set_nonblocking(true).expect("non-blocking accept");
        let server = std::thread::spawn(move || {
            let deadline = Instant::now() + TEST_TIMEOUT;
            let stream = loop {
                match listener.accept() {
                    Ok((stream, _)) => break stream,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(error) => panic!("no client connected: {error}"),
                }
            };
            stream.set_nonblocking(false).expect("blocking reads");
            stream.set_read_timeout(Some(TEST_TIMEOUT)).expect("a read timeout");
            stream.set_write_timeout(Some(TEST_TIMEOUT)).expect("a write timeout");
            script(FakePeer { stream });
        });
        (address, server)
    }
}
