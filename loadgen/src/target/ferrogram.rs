//! The ferrogram adapter: every user is one authorized connection of `ferrogram_net::client`
//! (the protocol carries one login per connection), logged in through the normal login with the
//! server's `fixed:CODE` code sender. Requests are pipelined on each connection up to the
//! server's in-flight bound; the connection futures run on loadgen's executor.
//!
//! Media messages go as any client sends them (docs/PROTOCOL.md §4.4): `UploadStart`, the
//! parts with a window in flight, `UploadFinish`, `SendMedia`; a download asks for the file in
//! 1 MiB ranges through the message, a window in flight. Each request of a window holds one of
//! the connection's slots; a transfer that finds none free answers its oldest request first
//! and waits for a slot only with nothing in flight, so transfers sharing a connection never
//! hold slots while waiting for more (no deadlock).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use ferrogram_net::client::{self, Client, ClientError, Submitted, UpdateStream};
use ferrogram_net::limits::DOWNLOAD_LIMIT_BYTES_MAX;
use ferrogram_net::{
    DeviceKind, LiveEvent, MediaKind, NewMediaMessage, Request, Response, SentMessage, Update, UploadId,
};

use super::{
    push_device_token, within, Ack, ChatId, ChatSpec, Delivery, MediaSent, MediaUpload, MessageId, Provisioned,
    RangeCheck, Spawner, Target, TargetError, UpdateSource, UserId, UserSpec, CLOSED, CONTENT_MISMATCH, IO, PROTOCOL,
    TIMEOUT,
};
use crate::limits::{
    CONNECT_TIMEOUT, GROUP_MEMBERS_AT_CREATION_MAX, IN_FLIGHT_PER_CONNECTION_MAX, LOG_OUT_TIMEOUT, MEDIA_WINDOW_MAX,
    PREFILL_BATCH, SETUP_CALL_TIMEOUT,
};
use crate::reactor::Stream;
use crate::slots::{Slot, Slots};

/// The MIME type of loadgen's files (random bytes).
const MEDIA_MIME_TYPE: &str = "application/octet-stream";

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
        // On loadgen's reactor rather than the client library's own socket (async-io), which
        // costs several times the system calls per frame (`reactor.rs`).
        let connecting = async {
            let stream = Stream::connect(self.address).await.map_err(ClientError::from)?;
            // Requests are small and waited on; Nagle's algorithm would hold each one back.
            stream.get_ref().set_nodelay(true).map_err(ClientError::from)?;
            client::handshake(stream.clone(), stream, CLIENT_NAME).await
        };
        let (client, connection, updates) =
            within(CONNECT_TIMEOUT, connecting).await.unwrap_or(Err(ClientError::Timeout)).map_err(error)?;
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

    /// A slot for the next request of a transfer's window: a free one now, else (with nothing
    /// of the window in flight) one when it frees. `None` says: answer the oldest request of
    /// the window first.
    async fn window_slot(&self, window_empty: bool) -> Option<Slot> {
        match self.slots.try_take() {
            Some(slot) => Some(slot),
            None if window_empty => Some(self.slots.take().await),
            None => None,
        }
    }

    /// Sends the parts of `upload` with a window in flight; answers how many there were.
    async fn upload_parts(&self, upload_id: UploadId, upload: &MediaUpload) -> Result<u32, TargetError> {
        let size = upload.content.bytes;
        let part_bytes = upload.part_bytes as u64;
        let parts = size.div_ceil(part_bytes);
        let window_max = upload.parts_in_flight.clamp(1, MEDIA_WINDOW_MAX);
        let mut window: VecDeque<(Submitted, Slot)> = VecDeque::with_capacity(window_max);
        let mut next = 0u64;
        loop {
            while next < parts && window.len() < window_max {
                let Some(slot) = self.window_slot(window.is_empty()).await else { break };
                let offset = next * part_bytes;
                // Generated when sent, so at most one window of parts is in memory.
                let bytes = upload.content.range(offset, (size - offset).min(part_bytes) as usize);
                let part = u32::try_from(next).map_err(|_| TargetError::local(PROTOCOL, "too many parts"))?;
                let submitted =
                    self.client.submit(&Request::UploadPart { upload_id, part, bytes }).await.map_err(error)?;
                window.push_back((submitted, slot));
                next += 1;
            }
            let Some((oldest, slot)) = window.pop_front() else { break };
            let answer = oldest.answer().await.map_err(error)?;
            drop(slot);
            if !matches!(answer, Response::PartStored { .. }) {
                return Err(unexpected("PartStored", &answer));
            }
        }
        u32::try_from(parts).map_err(|_| TargetError::local(PROTOCOL, "too many parts"))
    }

    /// `UploadFinish` after the parts.
    async fn finish_upload(
        &self,
        upload_id: UploadId,
        upload: &MediaUpload,
    ) -> Result<ferrogram_net::FileRef, TargetError> {
        let parts = self.upload_parts(upload_id, upload).await?;
        let finish = Request::UploadFinish {
            parts,
            upload_id,
            total_bytes: Some(upload.content.bytes),
            name: format!("loadgen-{:016x}.bin", upload.content.seed),
            mime_type: MEDIA_MIME_TYPE.into(),
        };
        match self.call(finish).await? {
            Response::UploadFinished { file, size } if size == upload.content.bytes => Ok(file),
            Response::UploadFinished { size, .. } => Err(TargetError::server(
                CONTENT_MISMATCH,
                format!("the server stored {size} bytes of the {} uploaded", upload.content.bytes),
                None,
            )),
            other => Err(unexpected("UploadFinished", &other)),
        }
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

    fn supports_media(&self) -> bool {
        true
    }

    async fn send_media(
        &self,
        sender: &FerrogramSession,
        chat: ChatId,
        random_id: u64,
        upload: &MediaUpload,
    ) -> Result<MediaSent, TargetError> {
        // The random_id doubles as the client's upload id: unique within the run, never 0.
        let start = Request::UploadStart { client_upload_id: random_id, total_bytes: Some(upload.content.bytes) };
        let upload_id = match sender.call(start).await? {
            Response::UploadStarted { upload_id } => upload_id,
            other => return Err(unexpected("UploadStarted", &other)),
        };
        let file = match sender.finish_upload(upload_id, upload).await {
            Ok(file) => file,
            Err(failed) => {
                // Gives the server its staging space back now rather than in an hour: best
                // effort, sent only when the connection has a slot free, its answer not awaited.
                if let Some(_slot) = sender.slots.try_take() {
                    let _ = sender.client.submit(&Request::UploadCancel { upload_id }).await;
                }
                return Err(failed);
            }
        };
        let uploaded = Instant::now();
        let message = NewMediaMessage {
            chat,
            random_id,
            file,
            kind: MediaKind::Document,
            caption: upload.caption.clone(),
            reply_to: None,
        };
        match sender.call(Request::SendMedia(Box::new(message))).await? {
            Response::Sent(sent) => Ok(MediaSent { ack: ack(sent), uploaded }),
            other => Err(unexpected("Sent", &other)),
        }
    }

    async fn download(
        &self,
        reader: &FerrogramSession,
        chat: ChatId,
        message: MessageId,
        bytes: u64,
        ranges_in_flight: usize,
        check: RangeCheck<'_>,
    ) -> Result<u64, TargetError> {
        let range = u64::from(DOWNLOAD_LIMIT_BYTES_MAX);
        let window_max = ranges_in_flight.clamp(1, MEDIA_WINDOW_MAX);
        let mut window: VecDeque<(Submitted, Slot, u64)> = VecDeque::with_capacity(window_max);
        let (mut next, mut read) = (0u64, 0u64);
        loop {
            while next < bytes && window.len() < window_max {
                let Some(slot) = reader.window_slot(window.is_empty()).await else { break };
                let request = Request::GetFile { chat, message, offset: next, limit: DOWNLOAD_LIMIT_BYTES_MAX };
                window.push_back((reader.client.submit(&request).await.map_err(error)?, slot, next));
                next += range;
            }
            let Some((oldest, slot, offset)) = window.pop_front() else { break };
            let answer = oldest.answer().await.map_err(error)?;
            drop(slot);
            let Response::FileBytes { bytes: found } = answer else { return Err(unexpected("FileBytes", &answer)) };
            let expected = (bytes - offset).min(range);
            if found.len() as u64 != expected {
                return Err(TargetError::server(
                    CONTENT_MISMATCH,
                    format!("{} bytes at offset {offset} of a file of {bytes}, {expected} expected", found.len()),
                    None,
                ));
            }
            check(offset, &found)?;
            read += expected;
        }
        Ok(read)
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
                media_bytes: message.media.as_ref().map(|media| media.size),
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
