//! One client connection, served on the core that accepted it (DESIGN §5, §6).
//!
//! Three tasks share a [`Connection`]: the reader (this file's [`serve`]), which reads frames
//! and spawns one task per request; the writer, which sends queued frames in batches, one
//! socket write per batch; and, once the connection is authorized, the update pump
//! (`updates.rs`). The reader and writer share the connection's one socket descriptor
//! ([`Socket`]): each polls its own direction, so neither waits for the other.
//!
//! Memory is bounded by budgets, never by trust: a frame's length is checked against
//! `FRAME_MAX` and its bytes are reserved from the shard's request budget before anything is
//! allocated; responses and updates are reserved from the shard's outbound budget and the
//! connection's own queue limit, and a connection that does not read is closed. An idle
//! connection holds no read buffer and no write buffer: issue 5 holds 10,000 connections at
//! under 8 KiB of server memory each (`tests/connection_memory.rs` of this crate counts what
//! one costs).

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use engine::messaging::{AuthorizationId, SessionId, UserId};
use ferrogram_net::codec::{self, DecodeError};
use ferrogram_net::frame::{FrameError, FrameHeader, FrameType, PING_BYTES_MAX};
use ferrogram_net::limits::{FRAME_HEADER_BYTES, FRAME_MAX, PROTOCOL_VERSION, REQ_ID_BYTES};
use ferrogram_net::{ErrorBody, ErrorCode, Outcome};
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use glommio::sync::{Semaphore, StaticPermit};

use crate::config::{
    CLOSE_FLUSH_TIMEOUT, DOWNLOAD_BYTES_QUEUED_PER_CONNECTION_MAX, DOWNLOAD_QUEUE_WAIT, FRAME_BODY_TIMEOUT,
    HANDSHAKE_TIMEOUT, OUTBOUND_BYTES_PER_CONNECTION_MAX, OUTBOUND_FRAMES_PER_CONNECTION_MAX,
    REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX, WRITE_BATCH_BYTES_MAX,
};
use crate::shard::ShardGateway;

/// The bytes read from the socket at once while frames are arriving: a first read takes at
/// most `READ_BUFFER_BYTES_FIRST`, later ones up to `READ_BUFFER_BYTES`. The buffer is freed
/// whenever it is empty, so an idle connection costs no buffer and a trickling one little.
const READ_BUFFER_BYTES_FIRST: usize = 1024;
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// The most one read puts straight into a large frame's body (past the read buffer), and so
/// the most a body is grown ahead of the bytes arriving to fill it.
const DIRECT_READ_BYTES_MAX: usize = 64 * 1024;

/// Why a connection ended, for the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseReason {
    ClientClosed,
    BadInput,
    Timeout,
    SlowReader,
    Shutdown,
    Revoked,
}

/// Who the connection acts for, once authorized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Authorized {
    pub user: UserId,
    pub authorization: AuthorizationId,
    /// The engine's live session; `None` while it is being registered again after a resync.
    pub session: Option<SessionId>,
}

pub(crate) struct Connection {
    pub shard: Rc<ShardGateway>,
    pub ip: IpAddr,
    pub client_name: RefCell<String>,
    pub auth: Cell<Option<Authorized>>,
    /// Bumped each time the connection is authorized, so an update pump of an earlier login
    /// knows to stop.
    pub auth_generation: Cell<u64>,
    /// Chats fanned out on read this connection follows; registered again on the engine
    /// session that replaces one dropped by a resync.
    pub subscriptions: RefCell<std::collections::BTreeSet<engine::messaging::ChatId>>,
    /// Users whose presence this connection watches (asked with `GetPresence`).
    pub watched: RefCell<std::collections::BTreeSet<UserId>>,
    /// The socket's descriptor, for `shutdown` (the stream itself is the reader's and
    /// writer's [`Socket`]).
    fd: RawFd,
    /// When the reader must have what it waits for (the next frame's first byte, or the rest
    /// of a frame); the shard's sweep closes the connection past it.
    pub deadline: Cell<Option<Instant>>,
    /// The handshake is done (its deadline covers the whole first frame; later waits are idle).
    greeted: Cell<bool>,
    /// Whether `fd` is still open (the [`Socket`] not yet dropped).
    fd_open: Cell<bool>,
    queue: RefCell<VecDeque<Queued>>,
    queued_bytes: Cell<usize>,
    /// Rung when a frame is queued or the connection closes; the writer waits on it.
    doorbell: Signal,
    closed: Cell<Option<CloseReason>>,
    in_flight: Cell<usize>,
    /// Rung when the last in-flight request finishes (graceful shutdown waits for it).
    drained: Signal,
    /// File bytes of downloads being read or queued (`DOWNLOAD_BYTES_QUEUED_PER_CONNECTION_MAX`);
    /// made by the connection's first download, so other connections do not pay for it.
    downloads: OnceCell<Rc<Semaphore>>,
}

/// A frame waiting for the writer, with its share of the shard's outbound budget and, for a
/// download's answer, its share of the connection's download budget (given back when the
/// writer takes the frame, so the next read can start while this one is written).
struct Queued {
    frame: Vec<u8>,
    _outbound: StaticPermit,
    _held: Option<StaticPermit>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("ip", &self.ip).field("fd", &self.fd).finish_non_exhaustive()
    }
}

impl Connection {
    pub fn is_closed(&self) -> bool {
        self.closed.get().is_some()
    }

    /// Closes the connection: later frames are dropped, both socket directions are shut so the
    /// reader and writer wake up, and the update pump stops.
    pub fn close(&self, reason: CloseReason) {
        if self.closed.get().is_some() {
            return;
        }
        self.mark_closed(reason);
        if reason != CloseReason::Shutdown && reason != CloseReason::Revoked {
            // Nothing more will be written: release the queue's budget now.
            self.queue.borrow_mut().clear();
            self.queued_bytes.set(0);
            self.shut_socket();
        }
        // The writer flushes what is queued (for a graceful close) and then shuts the socket.
        self.doorbell.ring();
    }

    /// Records why the connection closed, in its state and in the metrics.
    fn mark_closed(&self, reason: CloseReason) {
        self.closed.set(Some(reason));
        let metrics = self.shard.metrics();
        let counter = match reason {
            CloseReason::BadInput => &metrics.connections_closed_bad_input,
            CloseReason::Timeout => &metrics.connections_closed_timeout,
            CloseReason::SlowReader => &metrics.connections_dropped_slow,
            CloseReason::ClientClosed | CloseReason::Shutdown | CloseReason::Revoked => return,
        };
        counter.fetch_add(1, Relaxed);
    }

    fn shut_socket(&self) {
        // Once the socket is dropped its descriptor number may already belong to another
        // connection: never shut it then.
        if !self.fd_open.get() {
            return;
        }
        // SAFETY: `fd_open` says the connection's `Socket` still owns `fd` (`finish` clears it
        // before dropping the socket), so this is our socket; `shutdown` does not close it.
        unsafe {
            libc::shutdown(self.fd, libc::SHUT_RDWR);
        }
    }

    /// Queues a frame. A connection over its queue limit, or a shard over its outbound budget,
    /// is closed as not reading: it catches up with `GetDifference` when it comes back.
    pub fn send_frame(&self, frame: Vec<u8>) -> bool {
        self.send_frame_holding(frame, None)
    }

    /// Queues a frame that keeps `held` until the writer takes it.
    fn send_frame_holding(&self, frame: Vec<u8>, held: Option<StaticPermit>) -> bool {
        if self.closed.get().is_some_and(|reason| reason != CloseReason::Shutdown && reason != CloseReason::Revoked) {
            return false;
        }
        let bytes = frame.len();
        let over_queue = self.queued_bytes.get() + bytes > OUTBOUND_BYTES_PER_CONNECTION_MAX
            || self.queue.borrow().len() >= OUTBOUND_FRAMES_PER_CONNECTION_MAX;
        let permit =
            if over_queue { None } else { self.shard.outbound_budget.try_acquire_static_permit(bytes as u64).ok() };
        let Some(permit) = permit else {
            self.close(CloseReason::SlowReader);
            return false;
        };
        self.queue.borrow_mut().push_back(Queued { frame, _outbound: permit, _held: held });
        self.queued_bytes.set(self.queued_bytes.get() + bytes);
        self.doorbell.ring();
        true
    }

    /// Encodes and queues the outcome of request `req_id`.
    pub fn respond(&self, req_id: u64, outcome: &Outcome) {
        self.respond_holding(req_id, outcome, None);
    }

    /// Waits (at most `DOWNLOAD_QUEUE_WAIT`) until `bytes` more file bytes may be read for
    /// this connection, and reserves them; `None` when no room came in time.
    pub async fn reserve_download(&self, bytes: u64) -> Option<StaticPermit> {
        let downloads =
            self.downloads.get_or_init(|| Rc::new(Semaphore::new(DOWNLOAD_BYTES_QUEUED_PER_CONNECTION_MAX))).clone();
        within(DOWNLOAD_QUEUE_WAIT, downloads.acquire_static_permit(bytes)).await?.ok()
    }

    /// [`Connection::respond`], keeping `held` reserved until the writer takes the answer.
    pub fn respond_holding(&self, req_id: u64, outcome: &Outcome, held: Option<StaticPermit>) {
        if let Outcome::Err(error) = outcome {
            self.shard.metrics().count_error(error.code);
        }
        let mut frame = Vec::new();
        if let Err(error) = codec::encode_response(&mut frame, req_id, outcome) {
            // Pages and differences are cut to fit (`fit.rs`); anything else this large is a bug.
            tracing::error!(%error, "a response does not fit a frame");
            let too_large = Outcome::Err(ErrorBody::new(ErrorCode::TooLarge, "the response is too large"));
            frame.clear();
            if codec::encode_response(&mut frame, req_id, &too_large).is_err() {
                return;
            }
        }
        self.send_frame_holding(frame, held);
    }

    /// Sends a connection-level error frame, and closes the connection if `close` says so.
    pub fn fail(&self, error: ErrorBody, close: Option<CloseReason>) {
        self.shard.metrics().count_error(error.code);
        let mut frame = Vec::new();
        if codec::encode_error(&mut frame, &error).is_ok() {
            self.send_frame(frame);
        }
        if let Some(reason) = close {
            self.close_after_flush(reason);
        }
    }

    /// Closes the connection once the writer has sent what is queued (an error frame that
    /// explains the close, or the answers of a graceful shutdown).
    pub fn close_after_flush(&self, reason: CloseReason) {
        if self.closed.get().is_some() {
            return;
        }
        self.mark_closed(reason);
        self.doorbell.ring();
    }

    /// Waits until no request is in flight (for graceful shutdown), at most `timeout`.
    pub async fn drain(&self, timeout: Duration) {
        within(timeout, async {
            while self.in_flight.get() > 0 {
                self.drained.wait().await;
            }
        })
        .await;
    }
}

/// The connection's one socket, shared by the reader and the writer task. glommio keeps a
/// separate readiness source per direction, so a pending read and a pending write each wake
/// their own task. The stream is borrowed only inside one poll, never across an `.await`, so
/// the two tasks never meet at the `RefCell`.
pub(crate) struct Socket {
    stream: RefCell<TcpStream>,
}

impl Socket {
    fn new(stream: TcpStream) -> Socket {
        Socket { stream: RefCell::new(stream) }
    }

    /// Reads what the socket has, at most `buffer.len()` bytes; `Ok(0)` at the end of the stream.
    /// No buffer is lent to the kernel while it waits: glommio polls for readiness, then reads.
    async fn read(&self, buffer: &mut [u8]) -> std::io::Result<usize> {
        std::future::poll_fn(|context| Pin::new(&mut *self.stream.borrow_mut()).poll_read(context, buffer)).await
    }

    /// Waits for the readiness glommio watches after a short read, holding no buffer; `false`
    /// at once when it watches none (see `TcpStream::poll_armed_readable`).
    async fn armed_readable(&self) -> bool {
        std::future::poll_fn(|context| self.stream.borrow_mut().poll_armed_readable(context)).await
    }

    /// Writes all of `bytes`.
    async fn write_all(&self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            let written =
                std::future::poll_fn(|context| Pin::new(&mut *self.stream.borrow_mut()).poll_write(context, bytes))
                    .await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            bytes = &bytes[written..];
        }
        Ok(())
    }
}

/// Wakes one waiting task of the connection: the writer when a frame is queued, shutdown
/// when the last request finishes. A ring with nobody waiting is kept for the next wait, and
/// rings before it collapse into one. A waker in a cell, where a channel would allocate its
/// state and a waiter per wait.
#[derive(Default)]
struct Signal {
    rung: Cell<bool>,
    waiter: Cell<Option<Waker>>,
}

impl Signal {
    fn ring(&self) {
        self.rung.set(true);
        if let Some(waker) = self.waiter.take() {
            waker.wake();
        }
    }

    /// Waits for a ring (one already made returns at once), and consumes it.
    async fn wait(&self) {
        std::future::poll_fn(|context| {
            if self.rung.replace(false) {
                return Poll::Ready(());
            }
            self.waiter.set(Some(context.waker().clone()));
            Poll::Pending
        })
        .await
    }
}

/// Registers one accepted connection and starts its writer; the future returned serves it
/// until it closes. (Not an `async fn`: that would keep its arguments, the stream among them,
/// in the task for the connection's whole life.)
pub(crate) fn serve(shard: Rc<ShardGateway>, stream: TcpStream, ip: IpAddr) -> impl Future<Output = ()> {
    let fd = stream.as_raw_fd();
    let _ = stream.set_nodelay(true);
    let socket = Rc::new(Socket::new(stream));
    let connection = Rc::new(Connection {
        shard: shard.clone(),
        ip,
        client_name: RefCell::new(String::new()),
        auth: Cell::new(None),
        auth_generation: Cell::new(0),
        subscriptions: RefCell::new(std::collections::BTreeSet::new()),
        watched: RefCell::new(std::collections::BTreeSet::new()),
        fd,
        deadline: Cell::new(None),
        greeted: Cell::new(false),
        fd_open: Cell::new(true),
        queue: RefCell::new(VecDeque::new()),
        queued_bytes: Cell::new(0),
        doorbell: Signal::default(),
        closed: Cell::new(None),
        in_flight: Cell::new(0),
        drained: Signal::default(),
        downloads: OnceCell::new(),
    });
    let id = shard.register(&connection);
    let writer_task = glommio::spawn_local(write_loop(connection.clone(), socket.clone()));
    async move {
        let reason = read_loop(&connection, &socket).await;
        // The close runs once, boxed: its state does not enlarge the task every connection
        // keeps for as long as it is open.
        Box::pin(finish(&connection, socket, writer_task, reason)).await;
        connection.shard.unregister(id);
    }
}

/// Closes the connection for `reason`: lets the writer flush (at most `CLOSE_FLUSH_TIMEOUT`),
/// closes the socket and ends the engine session.
async fn finish(connection: &Connection, socket: Rc<Socket>, mut writer_task: glommio::Task<()>, reason: CloseReason) {
    connection.close(reason);
    // A close that lets the writer flush first (an error frame, a graceful shutdown) must not
    // wait forever on a client that does not read: past the grace, the socket is shut.
    if within(CLOSE_FLUSH_TIMEOUT, &mut writer_task).await.is_none() {
        connection.shut_socket();
        writer_task.await;
    }
    // The writer is done with the socket and has dropped its handle on it, so this drop closes
    // `fd`: from here on its number may be reused by a new connection.
    connection.fd_open.set(false);
    drop(socket);
    crate::updates::end_session(connection).await;
}

async fn read_loop(connection: &Rc<Connection>, socket: &Socket) -> CloseReason {
    let mut reader = FrameReader::default();
    // Once per connection, so boxed (as `finish`).
    if let Err(reason) = Box::pin(handshake(connection, socket, &mut reader)).await {
        return reason;
    }
    let shard = &connection.shard;
    let idle_timeout = shard.gateway.config.idle_timeout;
    loop {
        if let Some(reason) = connection.closed.get() {
            return reason;
        }
        let mut frame = match reader.next(socket, connection, idle_timeout).await {
            Ok(frame) => frame,
            Err(end) => return end.report(connection),
        };
        if frame.overloaded {
            // The body was dropped for want of budget: answer without closing.
            let error = ErrorBody {
                code: ErrorCode::Overloaded,
                message: "the server is holding too many request bytes".into(),
                retry_after_s: 1,
            };
            match frame.header.frame_type {
                Some(FrameType::Request) if frame.body.len() >= REQ_ID_BYTES => {
                    let req_id = u64::from_le_bytes(frame.body[..REQ_ID_BYTES].try_into().unwrap_or([0; 8]));
                    connection.respond(req_id, &Outcome::Err(error));
                }
                _ => connection.fail(error, None),
            }
            continue;
        }
        match frame.header.frame_type {
            Some(FrameType::Request) => match codec::decode_request(&frame.body) {
                Err(DecodeError::MissingReqId { .. }) | Err(_) => {
                    connection.fail(
                        ErrorBody::new(ErrorCode::Malformed, "a request body must start with its 8-byte req_id"),
                        Some(CloseReason::BadInput),
                    );
                    return CloseReason::BadInput;
                }
                Ok((req_id, Err(_))) => {
                    shard.metrics().count_request(crate::dispatch::MALFORMED_INDEX);
                    let error = ErrorBody::new(ErrorCode::Malformed, "the request payload is not a valid archive");
                    connection.respond(req_id, &Outcome::Err(error));
                }
                Ok((req_id, Ok(request))) => {
                    if connection.in_flight.get() >= REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX {
                        let mut error = ErrorBody::new(ErrorCode::Overloaded, "too many requests in flight");
                        error.retry_after_s = 1;
                        connection.respond(req_id, &Outcome::Err(error));
                        continue;
                    }
                    connection.in_flight.set(connection.in_flight.get() + 1);
                    let connection = connection.clone();
                    let permit = std::mem::take(&mut frame.permit);
                    glommio::spawn_local(async move {
                        let answered = crate::dispatch::handle(&connection, request).await;
                        // The request's bytes stay reserved until it has been answered.
                        drop(permit);
                        connection.respond_holding(req_id, &answered.outcome, answered.held);
                        let in_flight = connection.in_flight.get() - 1;
                        connection.in_flight.set(in_flight);
                        if in_flight == 0 {
                            connection.drained.ring();
                        }
                    })
                    .detach();
                }
            },
            Some(FrameType::Ping) => {
                if frame.body.len() > PING_BYTES_MAX {
                    connection.fail(ErrorBody::new(ErrorCode::TooLarge, "a ping carries at most 64 bytes"), None);
                    continue;
                }
                let mut pong = Vec::new();
                if codec::encode_ping(&mut pong, FrameType::Pong, &frame.body).is_ok() {
                    connection.send_frame(pong);
                }
            }
            Some(FrameType::Pong) => {}
            Some(FrameType::Hello) => {
                connection.fail(ErrorBody::new(ErrorCode::Malformed, "Hello was already received"), None);
            }
            Some(other) => {
                let message = format!("a client may not send {other:?} frames");
                connection.fail(ErrorBody::new(ErrorCode::Malformed, message), Some(CloseReason::BadInput));
                return CloseReason::BadInput;
            }
            None => {
                // The length was valid, so the stream is still framed: refuse this one frame.
                let message = format!("unknown frame type {}", frame.header.type_byte);
                connection.fail(ErrorBody::new(ErrorCode::Malformed, message), None);
            }
        }
    }
}

/// The handshake: the first frame must be a Hello, within the handshake timeout; it is
/// answered with a Welcome. `Err` says why the connection closes.
async fn handshake(connection: &Connection, socket: &Socket, reader: &mut FrameReader) -> Result<(), CloseReason> {
    let first = match reader.next(socket, connection, HANDSHAKE_TIMEOUT).await {
        Err(end) => return Err(end.report(connection)),
        Ok(frame) => frame,
    };
    if first.overloaded {
        let error = ErrorBody { code: ErrorCode::Overloaded, message: "the server is busy".into(), retry_after_s: 1 };
        connection.fail(error, Some(CloseReason::BadInput));
        return Err(CloseReason::BadInput);
    }
    if first.header.frame_type != Some(FrameType::Hello) {
        connection
            .fail(ErrorBody::new(ErrorCode::Malformed, "the first frame must be Hello"), Some(CloseReason::BadInput));
        return Err(CloseReason::BadInput);
    }
    let hello = match codec::decode_hello(&first.body) {
        Ok(hello) => hello,
        Err(_) => {
            connection.fail(
                ErrorBody::new(ErrorCode::Malformed, "Hello is not a valid archive"),
                Some(CloseReason::BadInput),
            );
            return Err(CloseReason::BadInput);
        }
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        let message = format!(
            "protocol version {} is not supported; this server speaks version {PROTOCOL_VERSION}",
            hello.protocol_version
        );
        connection.fail(ErrorBody::new(ErrorCode::UnsupportedVersion, message), Some(CloseReason::BadInput));
        return Err(CloseReason::BadInput);
    }
    let mut name = hello.client;
    name.truncate(ferrogram_net::limits::CLIENT_NAME_MAX.min(name.len()));
    while !name.is_char_boundary(name.len()) {
        name.pop();
    }
    *connection.client_name.borrow_mut() = name;
    let mut welcome = Vec::new();
    if codec::encode_welcome(&mut welcome, &connection.shard.welcome()).is_ok() {
        connection.send_frame(welcome);
    }
    drop(first);
    connection.greeted.set(true);
    Ok(())
}

/// Sends queued frames, one socket write per [`Connection::next_write`], until the connection
/// closes and its queue is flushed (or the client stops taking bytes).
async fn write_loop(connection: Rc<Connection>, socket: Rc<Socket>) {
    loop {
        let Some(outgoing) = connection.next_write() else {
            if connection.closed.get().is_some() {
                break;
            }
            connection.release_idle_queue();
            connection.doorbell.wait().await;
            continue;
        };
        let written = socket.write_all(outgoing.bytes()).await;
        if let Outgoing::Batch(batch) = outgoing {
            connection.shard.give_write_batch(batch);
        }
        if written.is_err() {
            connection.close(CloseReason::ClientClosed);
            break;
        }
    }
    connection.shut_socket();
}

/// What the writer sends next.
enum Outgoing {
    /// One frame, written from where it lies.
    Frame(Vec<u8>),
    /// Several frames copied into a buffer lent by the shard.
    Batch(Vec<u8>),
}

impl Outgoing {
    fn bytes(&self) -> &[u8] {
        match self {
            Outgoing::Frame(bytes) | Outgoing::Batch(bytes) => bytes,
        }
    }
}

impl Connection {
    /// Takes the next write off the queue: a frame alone in the queue, or one of at least a
    /// batch (a download's answer), as it lies; otherwise as many frames as fit one batch. The
    /// batch buffer is the shard's and goes back after the write, so a connection holds no
    /// write buffer between writes.
    fn next_write(&self) -> Option<Outgoing> {
        let mut queue = self.queue.borrow_mut();
        let front = queue.front()?;
        let outgoing = if queue.len() == 1 || front.frame.len() >= WRITE_BATCH_BYTES_MAX {
            Outgoing::Frame(queue.pop_front()?.frame)
        } else {
            let mut batch = self.shard.take_write_batch();
            while let Some(queued) = queue.front() {
                if !batch.is_empty() && batch.len() + queued.frame.len() > WRITE_BATCH_BYTES_MAX {
                    break;
                }
                batch.extend_from_slice(&queued.frame);
                queue.pop_front();
            }
            Outgoing::Batch(batch)
        };
        self.queued_bytes.set(self.queued_bytes.get() - outgoing.bytes().len());
        Some(outgoing)
    }

    /// Frees the empty queue's storage while the writer waits: most connections are idle
    /// most of the time, and the queue grows again with the next burst.
    fn release_idle_queue(&self) {
        let mut queue = self.queue.borrow_mut();
        if queue.is_empty() && queue.capacity() > 0 {
            *queue = VecDeque::new();
        }
    }
}

/// A frame read off the socket, with its bytes reserved from the shard's request budget.
struct Frame {
    header: FrameHeader,
    body: Vec<u8>,
    /// The reservations covering `body`, taken chunk by chunk as it arrived.
    permit: Vec<StaticPermit>,
    /// The shard's request budget had no room: the body was read and dropped (only its first
    /// bytes kept, for a request's `req_id`), and the frame is to be answered `OVERLOADED`.
    overloaded: bool,
    /// Where a large body's buffer goes back to once the frame is handled (its contents are
    /// decoded into the request by then).
    pool: Option<Rc<ShardGateway>>,
}

impl Drop for Frame {
    fn drop(&mut self) {
        if let Some(shard) = &self.pool {
            shard.give_body_buffer(std::mem::take(&mut self.body));
        }
    }
}

/// Why reading stopped.
enum ReadEnd {
    Closed,
    Timeout,
    TooLarge(FrameError),
}

impl ReadEnd {
    fn report(self, connection: &Connection) -> CloseReason {
        match self {
            ReadEnd::Closed => CloseReason::ClientClosed,
            ReadEnd::Timeout => CloseReason::Timeout,
            ReadEnd::TooLarge(error) => {
                let code = if matches!(error, FrameError::TooLarge { .. }) {
                    ErrorCode::TooLarge
                } else {
                    ErrorCode::Malformed
                };
                connection.fail(ErrorBody::new(code, error.to_string()), Some(CloseReason::BadInput));
                CloseReason::BadInput
            }
        }
    }
}

/// Reads frames. Bytes are reserved from the shard's request budget as they arrive, never on
/// the strength of an announced length, and never by waiting: a client trickling a large frame
/// holds only what it has sent, and cannot make other connections queue behind it. When the
/// budget is full the frame is read and dropped and answered `OVERLOADED`.
#[derive(Default)]
struct FrameReader {
    buffer: Vec<u8>,
    start: usize,
    /// A read filled the small buffer: data is flowing, read in larger pieces.
    grown: bool,
}

impl FrameReader {
    /// Reads the next frame. Waiting for its first byte may take `idle_timeout`; once a frame
    /// has begun, all of it must arrive within `FRAME_BODY_TIMEOUT`.
    ///
    /// The limits are deadlines on the connection, enforced by the shard's once-a-second sweep
    /// (`shard.rs`), which shuts the socket of a connection past its deadline: no timer is armed
    /// and cancelled per read, which cost the shard an io_uring timeout and cancellation per
    /// frame.
    async fn next(&mut self, socket: &Socket, connection: &Connection, wait: Duration) -> Result<Frame, ReadEnd> {
        // Before the handshake one deadline covers the whole first frame; after it each wait for
        // a frame gets `wait`, and each frame `FRAME_BODY_TIMEOUT` from its first byte.
        let greeted = connection.greeted.get();
        let limit = |at: Instant| match connection.deadline.get() {
            Some(deadline) if !greeted => deadline.min(at),
            _ => at,
        };
        connection.deadline.set(Some(limit(Instant::now() + wait)));
        let timed_out = |connection: &Connection| connection.closed.get() == Some(CloseReason::Timeout);
        if self.start == self.buffer.len() {
            self.buffer = Vec::new();
            self.start = 0;
            self.grown = false;
            // Wait for the next frame without holding a buffer. After a short read glommio
            // watches the socket for more: wait for that, then read what came into a buffer,
            // one `recv` per frame on a busy connection. When it watches nothing (the last read
            // filled its buffer), read just one byte, then give it a buffer. (A peek would lend
            // the kernel an aligned buffer for the whole wait.)
            if !socket.armed_readable().await {
                let mut first = [0u8; 1];
                match socket.read(&mut first).await {
                    Ok(0) | Err(_) if timed_out(connection) => return Err(ReadEnd::Timeout),
                    Ok(0) | Err(_) => return Err(ReadEnd::Closed),
                    Ok(_) => {}
                }
                self.buffer.reserve_exact(first.len() + READ_BUFFER_BYTES_FIRST);
                self.buffer.extend_from_slice(&first);
            }
        }
        connection.deadline.set(Some(limit(Instant::now() + FRAME_BODY_TIMEOUT)));
        // Reading a frame's body takes several times the state of waiting for its first byte:
        // boxed for the frame's duration, so the reader task an idle connection keeps stays
        // small. One small allocation per frame, beside the frame's own buffers.
        match Box::pin(self.read_frame(socket, &connection.shard)).await {
            Err(ReadEnd::Closed) if timed_out(connection) => Err(ReadEnd::Timeout),
            result => result,
        }
    }

    /// Reads one frame. A large body (an upload part) is read straight into a buffer from the
    /// shard's pool once the read buffer is drained, rather than through the read buffer and
    /// a growing vector: one copy fewer and no reallocation per part. Its bytes are still
    /// reserved as they arrive, and the body grows at most `DIRECT_READ_BYTES_MAX` ahead of
    /// them (a pooled buffer may be larger: the pool is bounded per shard).
    async fn read_frame(&mut self, socket: &Socket, shard: &Rc<ShardGateway>) -> Result<Frame, ReadEnd> {
        while self.buffered() < FRAME_HEADER_BYTES {
            self.fill(socket).await?;
        }
        let mut header_bytes = [0u8; FRAME_HEADER_BYTES];
        header_bytes.copy_from_slice(&self.buffer[self.start..self.start + FRAME_HEADER_BYTES]);
        let header = FrameHeader::parse(header_bytes, FRAME_MAX).map_err(ReadEnd::TooLarge)?;
        self.start += FRAME_HEADER_BYTES;

        let large = header.body_bytes > READ_BUFFER_BYTES;
        let body = if large { shard.take_body_buffer() } else { Vec::new() };
        let pool = large.then(|| shard.clone());
        let mut frame = Frame { header, body, permit: Vec::new(), overloaded: false, pool };
        let mut received = 0;
        while received < header.body_bytes {
            let remaining = header.body_bytes - received;
            if self.buffered() == 0 && !frame.overloaded && remaining > READ_BUFFER_BYTES {
                let at = frame.body.len();
                frame.body.resize(at + remaining.min(DIRECT_READ_BYTES_MAX), 0);
                let read = match socket.read(&mut frame.body[at..]).await {
                    Ok(0) | Err(_) => return Err(ReadEnd::Closed),
                    Ok(read) => read,
                };
                frame.body.truncate(at + read);
                match shard.request_budget.try_acquire_static_permit(read as u64) {
                    Ok(permit) => frame.permit.push(permit),
                    Err(_) => {
                        frame.overloaded = true;
                        frame.permit.clear();
                        frame.body.truncate(REQ_ID_BYTES);
                    }
                }
                received += read;
                continue;
            }
            if self.buffered() == 0 {
                self.fill(socket).await?;
            }
            let take = self.buffered().min(header.body_bytes - received);
            let chunk = &self.buffer[self.start..self.start + take];
            if !frame.overloaded {
                match shard.request_budget.try_acquire_static_permit(take as u64) {
                    Ok(permit) => {
                        frame.permit.push(permit);
                        frame.body.extend_from_slice(chunk);
                    }
                    Err(_) => {
                        frame.overloaded = true;
                        frame.permit.clear();
                        frame.body.truncate(REQ_ID_BYTES);
                    }
                }
            }
            if frame.overloaded && frame.body.len() < REQ_ID_BYTES {
                let keep = (REQ_ID_BYTES - frame.body.len()).min(chunk.len());
                frame.body.extend_from_slice(&chunk[..keep]);
            }
            self.start += take;
            received += take;
        }
        Ok(frame)
    }

    fn buffered(&self) -> usize {
        self.buffer.len() - self.start
    }

    /// Reads what the socket has into the buffer: at most `READ_BUFFER_BYTES_FIRST` until a
    /// read fills that, then up to `READ_BUFFER_BYTES`, so a connection trickling bytes holds
    /// little.
    async fn fill(&mut self, socket: &Socket) -> Result<(), ReadEnd> {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        let filled = self.buffer.len();
        let room = if self.grown { READ_BUFFER_BYTES } else { READ_BUFFER_BYTES_FIRST };
        self.buffer.resize(filled + room, 0);
        match socket.read(&mut self.buffer[filled..]).await {
            Ok(0) | Err(_) => Err(ReadEnd::Closed),
            Ok(read) => {
                self.grown |= read == room;
                self.buffer.truncate(filled + read);
                Ok(())
            }
        }
    }
}

/// Runs `future` for at most `duration`.
pub(crate) async fn within<T>(duration: Duration, future: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(future.await) }, async {
        glommio::timer::sleep(duration).await;
        None
    })
    .await
}
