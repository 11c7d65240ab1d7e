//! The ferrogram adapter: every user is one authorized connection of `ferrogram_net::client`
//! (the protocol carries one login per connection), logged in through the normal login with the
//! server's `fixed:CODE` code sender. Requests are pipelined on each connection up to the
//! server's in-flight bound; the connection futures run on loadgen's executor.

use std::net::SocketAddr;

use ferrogram_net::client::{self, Client, ClientError, UpdateStream};
use ferrogram_net::{DeviceKind, LiveEvent, Request, Response, SentMessage, Update};

use super::{
    push_device_token, within, Ack, ChatId, ChatSpec, Delivery, MessageId, Provisioned, Spawner, Target, TargetError,
    UpdateSource, UserId, UserSpec, CLOSED, IO, PROTOCOL, TIMEOUT,
};
use crate::limits::{
    CONNECT_TIMEOUT, GROUP_MEMBERS_AT_CREATION_MAX, IN_FLIGHT_PER_CONNECTION_MAX, LOG_OUT_TIMEOUT, PREFILL_BATCH,
    SETUP_CALL_TIMEOUT,
};
use crate::slots::Slots;

/// The client name the server stores in each login's device description.
const CLIENT_NAME: &str = "ferrogram-loadgen";

/// Drives a running `ferrogram serve`.
#[derive(Debug)]
pub struct FerrogramTarget {
    address: SocketAddr,
    code: String,
    spawner: Spawner,
}

impl FerrogramTarget {
    /// `code` is the one the server's `fixed:CODE` code sender accepts.
    pub fn new(address: SocketAddr, code: String, spawner: Spawner) -> FerrogramTarget {
        FerrogramTarget { address, code, spawner }
    }

    /// A new connection whose driver runs on the executor.
    async fn connect(&self) -> Result<(Client, UpdateStream), TargetError> {
        let (client, connection, updates) =
            client::connect_timeout(self.address, CLIENT_NAME, CONNECT_TIMEOUT).await.map_err(error)?;
        self.spawner.spawn(async move {
            // How it ended shows in the requests and the update stream.
            let _ = connection.await;
        });
        Ok((client, updates))
    }

    /// SendCode and SignIn pipelined (one round trip); SignUp when the phone is new.
    async fn log_in(&self, client: &Client, user: &UserSpec) -> Result<UserId, TargetError> {
        let phone = user.phone.clone();
        let requests = vec![
            Request::SendCode { phone: phone.clone() },
            Request::SignIn { phone: phone.clone(), code: self.code.clone() },
        ];
        let mut answers = setup_call(client.call_many(requests)).await?.into_iter();
        let (Some(sent), Some(signed_in)) = (answers.next(), answers.next()) else {
            return Err(TargetError::local(PROTOCOL, "call_many lost an answer"));
        };
        sent.map_err(login_error)?;
        let signed_in = match signed_in {
            // The server handles requests concurrently: a SignIn that overtook its SendCode
            // found no code (no attempt is used up then) and is simply asked again.
            Err(ClientError::Server(body)) if body.code == ferrogram_net::ErrorCode::PhoneCodeInvalid => {
                setup_call(client.call(Request::SignIn { phone: phone.clone(), code: self.code.clone() })).await?
            }
            other => other,
        };
        match signed_in.map_err(login_error)? {
            Response::Authorized { user, .. } => Ok(user.id),
            Response::SignUpRequired => {
                let request = Request::SignUp {
                    phone,
                    code: self.code.clone(),
                    first_name: user.first_name.clone(),
                    last_name: String::new(),
                };
                match setup_call(client.call(request)).await?.map_err(login_error)? {
                    Response::Authorized { user, .. } => Ok(user.id),
                    other => Err(unexpected("Authorized", &other)),
                }
            }
            other => Err(unexpected("Authorized or SignUpRequired", &other)),
        }
    }
}

/// One online user.
#[derive(Debug)]
pub struct FerrogramSession {
    client: Client,
    user: UserId,
    slots: Slots,
}

impl FerrogramSession {
    pub fn user(&self) -> UserId {
        self.user
    }

    /// One request within the connection's in-flight bound.
    async fn call(&self, request: Request) -> Result<Response, TargetError> {
        let _slot = self.slots.take().await;
        self.client.call(request).await.map_err(error)
    }
}

/// A connection's live events as deliveries.
#[derive(Debug)]
pub struct FerrogramUpdates {
    stream: UpdateStream,
}

impl UpdateSource for FerrogramUpdates {
    async fn next(&mut self) -> Option<Delivery> {
        Some(delivery(self.stream.next().await?))
    }
}

impl Target for FerrogramTarget {
    type Session = FerrogramSession;
    type Updates = FerrogramUpdates;

    fn name(&self) -> &'static str {
        "ferrogram"
    }

    async fn provision(
        &self,
        user: &UserSpec,
        online: bool,
    ) -> Result<Provisioned<FerrogramSession, FerrogramUpdates>, TargetError> {
        let (client, stream) = self.connect().await?;
        let id = self.log_in(&client, user).await?;
        if user.push_device {
            // A relay device: the server sends its pushes to `--push-webhook`. Registered while
            // logged in; it stays with the user after the log-out below.
            let token = push_device_token(id);
            setup_call(client.register_device(DeviceKind::Webhook, &token, false, false)).await?.map_err(error)?;
        }
        if online {
            let session = FerrogramSession { client, user: id, slots: Slots::new(IN_FLIGHT_PER_CONNECTION_MAX) };
            return Ok(Provisioned { user: id, online: Some((session, FerrogramUpdates { stream })) });
        }
        // Logging out keeps the user's logins under the server's per-user bound across runs.
        let _ = setup_call(client.log_out()).await;
        client.close();
        Ok(Provisioned { user: id, online: None })
    }

    async fn create_chat(&self, creator: &FerrogramSession, chat: &ChatSpec) -> Result<ChatId, TargetError> {
        match chat {
            ChatSpec::Private { peer } => {
                let id = setup_call(creator.client.open_private(*peer)).await?.map_err(error)?;
                Ok(id)
            }
            ChatSpec::Group { title, members } => {
                let (first, rest) = members.split_at(members.len().min(GROUP_MEMBERS_AT_CREATION_MAX));
                let id = setup_call(creator.client.create_group(title, first)).await?.map_err(error)?;
                for chunk in rest.chunks(PREFILL_BATCH) {
                    let adds = chunk.iter().map(|&user| Request::AddMember { chat: id, user }).collect();
                    for answer in setup_call(creator.client.call_many(adds)).await? {
                        answer.map_err(error)?;
                    }
                }
                Ok(id)
            }
            ChatSpec::Channel { title, admins } => {
                let id = setup_call(creator.client.create_channel(title)).await?.map_err(error)?;
                for &admin in admins {
                    setup_call(creator.client.add_member(id, admin)).await?.map_err(error)?;
                    setup_call(creator.client.promote_member(id, admin)).await?.map_err(error)?;
                }
                Ok(id)
            }
        }
    }

    async fn follow(&self, member: &FerrogramSession, chat: ChatId) -> Result<(), TargetError> {
        setup_call(member.client.join_chat(chat)).await?.map_err(error)?;
        setup_call(member.client.subscribe_chat(chat)).await?.map_err(error)?;
        Ok(())
    }

    async fn send(
        &self,
        sender: &FerrogramSession,
        chat: ChatId,
        random_id: u64,
        text: String,
    ) -> Result<Ack, TargetError> {
        match sender.call(Request::SendMessage { chat, random_id, text, reply_to: None }).await? {
            Response::Sent(sent) => Ok(ack(sent)),
            other => Err(unexpected("Sent", &other)),
        }
    }

    /// Pipelined on the sender's connection without taking its slots: the caller keeps at
    /// most one batch (of at most `PREFILL_BATCH`) in flight per session and nothing else.
    async fn send_batch(
        &self,
        sender: &FerrogramSession,
        chat: ChatId,
        messages: Vec<(u64, String)>,
    ) -> Vec<Result<Ack, TargetError>> {
        assert!(messages.len() <= PREFILL_BATCH, "a batch fits one connection's in-flight bound");
        let count = messages.len();
        let requests = messages
            .into_iter()
            .map(|(random_id, text)| Request::SendMessage { chat, random_id, text, reply_to: None })
            .collect();
        match within(SETUP_CALL_TIMEOUT, sender.client.call_many(requests)).await {
            Some(answers) => answers
                .into_iter()
                .map(|answer| match answer.map_err(error)? {
                    Response::Sent(sent) => Ok(ack(sent)),
                    other => Err(unexpected("Sent", &other)),
                })
                .collect(),
            None => (0..count).map(|_| Err(TargetError::timeout())).collect(),
        }
    }

    async fn history(
        &self,
        reader: &FerrogramSession,
        chat: ChatId,
        offset: MessageId,
        limit: u32,
    ) -> Result<usize, TargetError> {
        let request =
            Request::GetHistory { chat, offset_id: offset, limit, min_id: MessageId(0), max_id: MessageId(0) };
        match reader.call(request).await? {
            Response::Messages(messages) => Ok(messages.len()),
            other => Err(unexpected("Messages", &other)),
        }
    }

    async fn close(&self, session: &FerrogramSession) {
        let _ = within(LOG_OUT_TIMEOUT, session.client.log_out()).await;
        session.client.close();
    }

    fn disconnect(&self, session: &FerrogramSession) {
        // Queued requests are written, then the connection ends and waiting calls fail.
        session.client.close();
    }
}

/// The delivery a live event stands for.
fn delivery(event: LiveEvent) -> Delivery {
    match event {
        LiveEvent::Box { update, message: Some(message) } | LiveEvent::Chat { update, message: Some(message), .. }
            if matches!(update.update, Update::NewMessage { .. }) =>
        {
            Delivery::Message {
                chat: message.chat,
                id: message.id,
                sender: message.sender,
                random_id: message.random_id,
                text: message.text,
            }
        }
        LiveEvent::Box { update, message: None } | LiveEvent::Chat { update, message: None, .. } => {
            match update.update {
                Update::NewMessage { chat, id, .. } => Delivery::Bodiless { chat, id },
                _ => Delivery::Other,
            }
        }
        LiveEvent::Resync => Delivery::Resync,
        _ => Delivery::Other,
    }
}

fn ack(sent: SentMessage) -> Ack {
    Ack { chat: sent.chat, id: sent.id, duplicate: sent.duplicate }
}

/// A setup call bounded in time; its own result is left for the caller to judge.
async fn setup_call<T>(future: impl std::future::Future<Output = T>) -> Result<T, TargetError> {
    within(SETUP_CALL_TIMEOUT, future).await.ok_or_else(TargetError::timeout)
}

fn error(error: ClientError) -> TargetError {
    match &error {
        ClientError::Server(body) | ClientError::Connection(body) | ClientError::Refused(body) => {
            TargetError::server(body.code.name(), body.message.clone(), error.retry_after())
        }
        ClientError::Closed => TargetError::local(CLOSED, "the connection is closed"),
        ClientError::Timeout => TargetError::local(TIMEOUT, "timed out"),
        ClientError::Io(io) => TargetError::local(IO, io.to_string()),
        _ => TargetError::local(PROTOCOL, error.to_string()),
    }
}

/// A login error, with the fix when it is the server's login rate limit.
fn login_error(cause: ClientError) -> TargetError {
    let mut mapped = error(cause);
    if mapped.code == "FLOOD_WAIT" {
        mapped.message.push_str(
            " (the server's login limits are too low for a benchmark: start it with \
             `--config loadgen/bench-server.toml`)",
        );
    }
    mapped
}

fn unexpected(expected: &str, actual: &Response) -> TargetError {
    TargetError::local(PROTOCOL, format!("expected {expected}, the server answered {actual:?}"))
}
