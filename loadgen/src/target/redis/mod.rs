//! The Redis adapter: the messenger as a strong team would build it on Redis 7 (issue 5,
//! DESIGN §9). A stream per chat (XADD; XREVRANGE for history pages), a per-member update
//! stream for fan-out, Pub/Sub for live delivery, and each send ONE function call (`lg_send`
//! of `library.lua`, loaded with FUNCTION LOAD and invoked with FCALL) pipelined on the
//! sender's command connection. Users are provisioned without a login (`lg_user`).
//!
//! Connections: every online user has a subscriber connection (SUBSCRIBE to its own channel,
//! and to each channel it follows), as it has one connection with ferrogram; sends and history
//! reads go over a pool of command connections, as many as there are online users unless
//! `--redis-command-connections` says otherwise, each opened when a session first uses it (a
//! channel's followers never send, so they never open one). RESP2 cannot carry commands and
//! Pub/Sub on one connection, hence two kinds. Setup (users, chats, follows) goes over one
//! shared connection, pipelined.
//!
//! Media messages are not modelled (Redis would hold files as plain values, not what a
//! strong team would build): `supports_media` stays false and the media scenario is refused.
//!
//! Durability is the server's (`appendonly yes` with `appendfsync always` or `everysec`, set
//! when redis-server starts; see `benches/compare.sh`).

mod connection;
pub mod resp;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use connection::{answer, Connection};
use resp::Value;

use super::{
    within, Ack, ChatId, ChatSpec, Delivery, MessageId, Provisioned, Spawner, Target, TargetError, UpdateSource,
    UserId, UserSpec, PROTOCOL,
};
use crate::limits::SETUP_CALL_TIMEOUT;
use crate::stats::lock;

/// The function library every operation calls.
pub const LIBRARY: &str = include_str!("library.lua");
/// Bytes gathered into one socket write at most.
pub const WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;
/// Command connections at most (each also a file descriptor on both sides).
pub const COMMAND_CONNECTIONS_MAX: usize = 100_000;

/// Drives a running redis-server (7 or later: functions).
#[derive(Debug)]
pub struct RedisTarget {
    address: SocketAddr,
    spawner: Spawner,
    /// Provisioning, chat creation, follows.
    setup: Connection,
    /// Opened on first use; session n uses slot n modulo the pool's size.
    commands: Vec<Mutex<Option<Arc<Connection>>>>,
    next_session: AtomicUsize,
}

impl RedisTarget {
    /// Connects and loads the function library (replacing an older copy). `command_connections`
    /// is the size of the send/read pool (at least 1).
    pub async fn connect(
        address: SocketAddr,
        command_connections: usize,
        spawner: Spawner,
    ) -> Result<RedisTarget, TargetError> {
        assert!((1..=COMMAND_CONNECTIONS_MAX).contains(&command_connections), "a bounded, non-empty pool");
        let setup = Connection::open(address, &spawner, None).await?;
        setup_call(setup.call(&[b"FUNCTION", b"LOAD", b"REPLACE", LIBRARY.as_bytes()])).await?.map_err(|error| {
            TargetError { message: format!("{} (Redis 7 or later is needed)", error.message), ..error }
        })?;
        let commands = (0..command_connections).map(|_| Mutex::new(None)).collect();
        Ok(RedisTarget { address, spawner, setup, commands, next_session: AtomicUsize::new(0) })
    }

    /// The session's command connection, opened on its first use.
    async fn command(&self, session: &RedisSession) -> Result<Arc<Connection>, TargetError> {
        let slot = &self.commands[session.slot];
        if let Some(connection) = lock(slot).as_ref() {
            return Ok(connection.clone());
        }
        let opened = Arc::new(Connection::open(self.address, &self.spawner, None).await?);
        let mut slot = lock(slot);
        match slot.as_ref() {
            // Another session of the slot opened one meanwhile: keep the first.
            Some(connection) => {
                opened.shut_down();
                Ok(connection.clone())
            }
            None => {
                *slot = Some(opened.clone());
                Ok(opened)
            }
        }
    }

    async fn setup_integer(&self, arguments: &[&[u8]]) -> Result<u64, TargetError> {
        match setup_call(self.setup.call(arguments)).await?? {
            Value::Integer(value) if value >= 0 => Ok(value as u64),
            other => Err(unexpected("a non-negative integer", &other)),
        }
    }
}

/// One online user.
#[derive(Debug)]
pub struct RedisSession {
    user: UserId,
    slot: usize,
    subscriber: Connection,
}

impl RedisSession {
    pub fn user(&self) -> UserId {
        self.user
    }
}

/// A subscriber connection's pushed messages.
#[derive(Debug)]
pub struct RedisUpdates {
    receiver: flume::Receiver<Delivery>,
}

impl UpdateSource for RedisUpdates {
    async fn next(&mut self) -> Option<Delivery> {
        self.receiver.recv_async().await.ok()
    }
}

impl Target for RedisTarget {
    type Session = RedisSession;
    type Updates = RedisUpdates;

    fn name(&self) -> &'static str {
        "redis"
    }

    async fn provision(
        &self,
        user: &UserSpec,
        online: bool,
    ) -> Result<Provisioned<RedisSession, RedisUpdates>, TargetError> {
        if user.push_device {
            return Err(TargetError::local(PROTOCOL, "the Redis adapter has no push devices"));
        }
        let id = UserId(
            self.setup_integer(&[b"FCALL", b"lg_user", b"0", user.phone.as_bytes(), user.first_name.as_bytes()])
                .await?,
        );
        if !online {
            return Ok(Provisioned { user: id, online: None });
        }
        let (sender, receiver) = flume::unbounded();
        let subscriber = Connection::open(self.address, &self.spawner, Some(sender)).await?;
        subscribe(&subscriber, format!("lg:user:{}", id.0)).await?;
        let slot = self.next_session.fetch_add(1, Relaxed) % self.commands.len();
        let session = RedisSession { user: id, slot, subscriber };
        Ok(Provisioned { user: id, online: Some((session, RedisUpdates { receiver })) })
    }

    async fn create_chat(&self, creator: &RedisSession, chat: &ChatSpec) -> Result<ChatId, TargetError> {
        let (kind, title, others): (&[u8], &str, Vec<String>) = match chat {
            ChatSpec::Private { peer } => (b"private", "", vec![peer.0.to_string()]),
            ChatSpec::Group { title, members } => (b"group", title, members.iter().map(|m| m.0.to_string()).collect()),
            ChatSpec::Channel { title, admins } => {
                (b"channel", title, admins.iter().map(|a| a.0.to_string()).collect())
            }
        };
        let creator = creator.user.0.to_string();
        let mut arguments: Vec<&[u8]> = vec![b"FCALL", b"lg_chat", b"0", kind, creator.as_bytes(), title.as_bytes()];
        arguments.extend(others.iter().map(|other| other.as_bytes()));
        Ok(ChatId(self.setup_integer(&arguments).await?))
    }

    async fn follow(&self, member: &RedisSession, chat: ChatId) -> Result<(), TargetError> {
        let (chat_text, user) = (chat.0.to_string(), member.user.0.to_string());
        self.setup_integer(&[b"FCALL", b"lg_follow", b"0", chat_text.as_bytes(), user.as_bytes()]).await?;
        subscribe(&member.subscriber, format!("lg:chat:{}", chat.0)).await
    }

    async fn send(
        &self,
        sender: &RedisSession,
        chat: ChatId,
        random_id: u64,
        text: String,
    ) -> Result<Ack, TargetError> {
        let connection = self.command(sender).await?;
        let receiver = submit_send(&connection, sender.user, chat, random_id, &text);
        ack_of(chat, answer(receiver).await?)
    }

    async fn send_batch(
        &self,
        sender: &RedisSession,
        chat: ChatId,
        messages: Vec<(u64, String)>,
    ) -> Vec<Result<Ack, TargetError>> {
        let connection = match self.command(sender).await {
            Ok(connection) => connection,
            Err(error) => return messages.iter().map(|_| Err(error.clone())).collect(),
        };
        // All queued before the first answer is awaited: one pipelined batch.
        let receivers: Vec<_> = messages
            .iter()
            .map(|(random_id, text)| submit_send(&connection, sender.user, chat, *random_id, text))
            .collect();
        let mut answers = Vec::with_capacity(receivers.len());
        for receiver in receivers {
            answers.push(match within(SETUP_CALL_TIMEOUT, answer(receiver)).await {
                Some(reply) => reply.and_then(|value| ack_of(chat, value)),
                None => Err(TargetError::timeout()),
            });
        }
        answers
    }

    async fn history(
        &self,
        reader: &RedisSession,
        chat: ChatId,
        offset: MessageId,
        limit: u32,
    ) -> Result<usize, TargetError> {
        let connection = self.command(reader).await?;
        let (chat, user, offset, limit) =
            (chat.0.to_string(), reader.user.0.to_string(), offset.0.to_string(), limit.to_string());
        let arguments: [&[u8]; 7] =
            [b"FCALL_RO", b"lg_history", b"0", chat.as_bytes(), user.as_bytes(), offset.as_bytes(), limit.as_bytes()];
        match connection.call(&arguments).await? {
            Value::Array(Some(messages)) => Ok(messages.len()),
            other => Err(unexpected("an array of messages", &other)),
        }
    }

    async fn close(&self, session: &RedisSession) {
        self.disconnect(session);
    }

    fn disconnect(&self, session: &RedisSession) {
        session.subscriber.shut_down();
        // The command connection may be shared with other sessions of the slot; they are
        // being closed too (sessions only end together, at the end of a run).
        if let Some(connection) = lock(&self.commands[session.slot]).take() {
            connection.shut_down();
        }
    }
}

/// The delivery a Pub/Sub payload (`chat id sender random_id text`, as `lg_send` builds it)
/// stands for.
pub fn delivery_of_message(payload: &[u8]) -> Delivery {
    let Ok(payload) = std::str::from_utf8(payload) else { return Delivery::Other };
    let mut parts = payload.splitn(5, ' ');
    let mut number = || parts.next().and_then(|part| part.parse::<u64>().ok());
    let (Some(chat), Some(id), Some(sender), Some(random_id)) = (number(), number(), number(), number()) else {
        return Delivery::Other;
    };
    let text = parts.next().unwrap_or("").to_owned();
    Delivery::Message {
        chat: ChatId(chat),
        id: MessageId(id),
        sender: UserId(sender),
        random_id,
        text,
        media_bytes: None,
    }
}

fn submit_send(
    connection: &Connection,
    sender: UserId,
    chat: ChatId,
    random_id: u64,
    text: &str,
) -> flume::Receiver<Result<Value, TargetError>> {
    let (chat, sender, random_id) = (chat.0.to_string(), sender.0.to_string(), random_id.to_string());
    connection.submit(&[
        b"FCALL",
        b"lg_send",
        b"0",
        chat.as_bytes(),
        sender.as_bytes(),
        random_id.as_bytes(),
        text.as_bytes(),
    ])
}

fn ack_of(chat: ChatId, value: Value) -> Result<Ack, TargetError> {
    match &value {
        Value::Array(Some(fields)) => match fields.as_slice() {
            [Value::Integer(id), Value::Integer(duplicate)] if *id > 0 => {
                Ok(Ack { chat, id: MessageId(*id as u64), duplicate: *duplicate != 0 })
            }
            _ => Err(unexpected("{message id, duplicate}", &value)),
        },
        _ => Err(unexpected("{message id, duplicate}", &value)),
    }
}

/// SUBSCRIBE on a subscriber connection, waiting for Redis's confirmation so nothing
/// published afterwards is missed.
async fn subscribe(subscriber: &Connection, channel: String) -> Result<(), TargetError> {
    match setup_call(subscriber.call(&[b"SUBSCRIBE", channel.as_bytes()])).await?? {
        Value::Array(Some(fields)) if matches!(fields.first(), Some(Value::Bulk(Some(kind))) if kind == b"subscribe") => {
            Ok(())
        }
        other => Err(unexpected("a subscribe confirmation", &other)),
    }
}

/// A setup call bounded in time.
async fn setup_call<T>(future: impl std::future::Future<Output = T>) -> Result<T, TargetError> {
    within(SETUP_CALL_TIMEOUT, future).await.ok_or_else(TargetError::timeout)
}

fn unexpected(expected: &str, actual: &Value) -> TargetError {
    TargetError::local(PROTOCOL, format!("expected {expected}, Redis answered {actual:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A Pub/Sub payload becomes the delivery it announces, text spaces included; anything
    // else is not mistaken for a message.
    #[test]
    fn payloads_become_deliveries() {
        assert_eq!(
            delivery_of_message(b"7 12 3 99 lg:1:x y"),
            Delivery::Message {
                chat: ChatId(7),
                id: MessageId(12),
                sender: UserId(3),
                random_id: 99,
                text: "lg:1:x y".into(),
                media_bytes: None
            }
        );
        assert_eq!(delivery_of_message(b"7 12 3"), Delivery::Other);
        assert_eq!(delivery_of_message(b"7 x 3 99 t"), Delivery::Other);
        assert_eq!(delivery_of_message(&[0xff, 0xfe]), Delivery::Other);
    }
}
