//! One TCP connection to Redis with requests pipelined on it: callers queue encoded commands,
//! a writer task sends whatever is queued in one write, and a reader task matches replies to
//! requests in order (Redis answers a connection's commands in the order it got them). A
//! subscriber connection's reader also turns Pub/Sub `message` pushes into deliveries.

use std::collections::VecDeque;
use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, Mutex};

use futures_lite::{AsyncReadExt, AsyncWriteExt};

use super::resp::{self, Value};
use super::{delivery_of_message, WRITE_BATCH_BYTES_MAX};
use crate::reactor::Stream;
use crate::stats::lock;
use crate::target::{within, Delivery, Spawner, TargetError, CLOSED, IO, PROTOCOL};

/// A reply on its way to the caller that asked.
type ReplySender = flume::Sender<Result<Value, TargetError>>;

/// See the module documentation. Dropping it leaves the connection to its tasks; `shut_down`
/// ends it.
#[derive(Debug)]
pub struct Connection {
    requests: flume::Sender<(Vec<u8>, ReplySender)>,
    stream: Arc<Stream>,
    pending: Arc<Mutex<Pending>>,
}

/// Requests written and not yet answered, oldest first.
#[derive(Debug, Default)]
struct Pending {
    replies: VecDeque<ReplySender>,
    /// Once set, nothing is queued any more: requests fail at once.
    closed: bool,
}

impl Connection {
    /// Connects; with `updates`, the connection is a subscriber's and its pushed messages go
    /// there.
    pub async fn open(
        address: SocketAddr,
        spawner: &Spawner,
        updates: Option<flume::Sender<Delivery>>,
    ) -> Result<Connection, TargetError> {
        let stream = within(crate::limits::CONNECT_TIMEOUT, Stream::connect(address))
            .await
            .ok_or_else(TargetError::timeout)?
            .map_err(|error| TargetError::local(IO, format!("cannot connect to {address}: {error}")))?;
        // Small pipelined writes must not wait for Nagle.
        stream.get_ref().set_nodelay(true).map_err(|error| TargetError::local(IO, error.to_string()))?;
        let stream = Arc::new(stream);
        let pending = Arc::new(Mutex::new(Pending::default()));
        let (requests, queued) = flume::unbounded();
        spawner.spawn(write_loop(stream.clone(), queued, pending.clone()));
        spawner.spawn(read_loop(stream.clone(), pending.clone(), updates));
        Ok(Connection { requests, stream, pending })
    }

    /// Queues one command now; the answer comes on the returned receiver, in order with the
    /// connection's other commands.
    pub fn submit(&self, arguments: &[&[u8]]) -> flume::Receiver<Result<Value, TargetError>> {
        let mut bytes = Vec::with_capacity(64 + arguments.iter().map(|argument| argument.len() + 16).sum::<usize>());
        resp::encode(&mut bytes, arguments);
        let (reply, answer) = flume::bounded(1);
        // When the writer is gone the reply sender is dropped with the message: the caller
        // sees the connection closed.
        let _ = self.requests.send((bytes, reply));
        answer
    }

    /// One command and its reply; an error reply is an error.
    pub async fn call(&self, arguments: &[&[u8]]) -> Result<Value, TargetError> {
        answer(self.submit(arguments)).await
    }

    /// Ends the connection: every request still waiting fails.
    pub fn shut_down(&self) {
        fail_all(&self.pending);
        let _ = self.stream.get_ref().shutdown(Shutdown::Both);
    }
}

/// The reply a `submit` receiver gives.
pub async fn answer(receiver: flume::Receiver<Result<Value, TargetError>>) -> Result<Value, TargetError> {
    match receiver.recv_async().await {
        Ok(Ok(Value::Error(message))) => Err(server_error(&message)),
        Ok(result) => result,
        Err(_) => Err(TargetError::local(CLOSED, "the connection to Redis is closed")),
    }
}

/// An error reply as a target error: its first word is the code when it is one loadgen
/// knows (the library's own codes, Redis's busy and out-of-memory answers).
fn server_error(message: &str) -> TargetError {
    let first = message.split(' ').next().unwrap_or("");
    let code = match first {
        "NOT_FOUND" => "NOT_FOUND",
        "PERMISSION_DENIED" => "PERMISSION_DENIED",
        "OOM" => "OOM",
        "BUSY" => "BUSY",
        "LOADING" => "LOADING",
        "MISCONF" => "MISCONF",
        _ => "REDIS_ERROR",
    };
    TargetError::server(code, message.to_owned(), None)
}

async fn write_loop(
    stream: Arc<Stream>,
    queued: flume::Receiver<(Vec<u8>, ReplySender)>,
    pending: Arc<Mutex<Pending>>,
) {
    let mut buffer = Vec::with_capacity(WRITE_BATCH_BYTES_MAX);
    while let Ok(first) = queued.recv_async().await {
        buffer.clear();
        let mut next = Some(first);
        // Everything queued meanwhile goes out in the same write (one syscall per batch).
        while let Some((bytes, reply)) = next.take() {
            {
                let mut pending = lock(&pending);
                if pending.closed {
                    // Dropping `reply` fails the request.
                    continue;
                }
                // Registered before the bytes leave, so the reply always finds its sender.
                pending.replies.push_back(reply);
            }
            buffer.extend_from_slice(&bytes);
            if buffer.len() < WRITE_BATCH_BYTES_MAX {
                next = queued.try_recv().ok();
            }
        }
        if buffer.is_empty() {
            continue;
        }
        if (&*stream).write_all(&buffer).await.is_err() {
            break;
        }
    }
    fail_all(&pending);
    let _ = stream.get_ref().shutdown(Shutdown::Both);
}

async fn read_loop(stream: Arc<Stream>, pending: Arc<Mutex<Pending>>, updates: Option<flume::Sender<Delivery>>) {
    let mut buffer: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    'reading: loop {
        let mut start = 0;
        loop {
            match resp::decode(&buffer[start..]) {
                Ok(Some((value, used))) => {
                    start += used;
                    dispatch(value, &pending, updates.as_ref());
                }
                Ok(None) => break,
                Err(error) => {
                    let broken = TargetError::local(PROTOCOL, format!("Redis sent a broken reply: {error}"));
                    if let Some(reply) = lock(&pending).replies.pop_front() {
                        let _ = reply.send(Err(broken));
                    }
                    break 'reading;
                }
            }
        }
        buffer.drain(..start);
        match (&*stream).read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
        }
    }
    fail_all(&pending);
    let _ = stream.get_ref().shutdown(Shutdown::Both);
    // Dropping `updates` ends the session's update stream.
}

/// Hands one reply to its request, or a pushed message to the session's deliveries.
fn dispatch(value: Value, pending: &Mutex<Pending>, updates: Option<&flume::Sender<Delivery>>) {
    if let (Some(updates), Value::Array(Some(elements))) = (updates, &value) {
        if let [Value::Bulk(Some(kind)), _, Value::Bulk(Some(payload))] = elements.as_slice() {
            if kind == b"message" {
                let _ = updates.send(delivery_of_message(payload));
                return;
            }
        }
    }
    // A reply (a subscribe confirmation on a subscriber connection) answers the oldest request.
    if let Some(reply) = lock(pending).replies.pop_front() {
        let _ = reply.send(Ok(value));
    }
}

fn fail_all(pending: &Mutex<Pending>) {
    let mut pending = lock(pending);
    pending.closed = true;
    // Dropping the senders fails every waiting request as closed.
    pending.replies.clear();
}
