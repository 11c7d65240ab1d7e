//! Requests: rate limits, edge validation, login, and the mapping of every other request onto
//! the engine's messaging API on behalf of the connection's user (media requests go on to
//! `media.rs`).

use std::rc::Rc;
use std::time::Instant;

use engine::messaging::{self as model, DialogsOffset, HistoryPage, MessagingError, NewMediaMessage, NewMessage};
use ferrogram_net::limits::{
    DEVICE_TOKEN_BYTES_MAX, DIALOGS_PAGE_MAX, DIFFERENCE_LIMIT_MAX, GROUP_MEMBERS_AT_CREATION_MAX, IDS_PER_REQUEST_MAX,
    MEDIA_CAPTION_MAX,
};
use ferrogram_net::{ErrorBody, ErrorCode, Outcome, Request, Response};
use glommio::sync::StaticPermit;

use crate::config::{MEMBERS_PER_ANSWER_MAX, SUBSCRIPTIONS_PER_CONNECTION_MAX, WATCHED_USERS_PER_CONNECTION_MAX};
use crate::connection::Connection;
use crate::convert::{self, chat_id, message_id, message_ids, user_id};
use crate::fit;
use crate::login::{valid_phone, CodeError};
use crate::rate::MethodClass;
use crate::token::{self, Token};
use crate::updates;

/// The metrics index of requests that could not be decoded.
pub(crate) const MALFORMED_INDEX: usize = 52;
const UNAUTHORIZED_INDEX: usize = 53;

pub(crate) type Answer = Result<Response, ErrorBody>;

/// A request's outcome, and what stays reserved until the writer takes the answer (a
/// download's share of the connection's download budget).
pub(crate) struct Answered {
    pub outcome: Outcome,
    pub held: Option<StaticPermit>,
}

impl From<Outcome> for Answered {
    fn from(outcome: Outcome) -> Answered {
        Answered { outcome, held: None }
    }
}

/// Handles one request and answers it.
pub(crate) async fn handle(connection: &Rc<Connection>, request: Request) -> Answered {
    let (index, class) = classify(&request);
    let metrics = connection.shard.metrics();
    let session = connection.auth.get().map(|auth| auth.authorization.0);
    if let Err(wait_s) = connection.shard.gateway.rates.check_request(connection.ip, session, class) {
        metrics.count_request(index);
        return Outcome::Err(ErrorBody::flood_wait(wait_s)).into();
    }
    let started = Instant::now();
    let is_send = matches!(request, Request::SendMessage { .. });
    let mut held = None;
    let answer = match request {
        Request::SendCode { phone } => send_code(connection, &phone),
        Request::SignIn { phone, code } => sign_in(connection, phone, code).await,
        Request::SignUp { phone, code, first_name, last_name } => {
            sign_up(connection, phone, code, first_name, last_name).await
        }
        Request::Authenticate { token } => authenticate(connection, &token).await,
        request => match connection.auth.get() {
            None => {
                metrics.count_request(UNAUTHORIZED_INDEX);
                return Outcome::Err(ErrorBody::new(ErrorCode::AuthRequired, "log in or authenticate first")).into();
            }
            Some(auth) if class == MethodClass::Media => {
                let (answer, reserved) = crate::media::handle(connection, auth.user, request).await;
                held = reserved;
                answer
            }
            Some(auth) => authorized(connection, auth.user, auth.authorization, request).await,
        },
    };
    metrics.count_request(index);
    if is_send && answer.is_ok() {
        metrics.record_send_ack(started.elapsed());
    }
    let outcome = match answer {
        Ok(response) => Outcome::Ok(response),
        Err(error) => Outcome::Err(error),
    };
    Answered { outcome, held }
}

pub(crate) fn engine_error(error: MessagingError) -> ErrorBody {
    if let MessagingError::Storage(detail) = &error {
        tracing::error!(%detail, "storage error answering a request");
    }
    convert::error(&error)
}

pub(crate) fn invalid(message: &str) -> ErrorBody {
    ErrorBody::new(ErrorCode::InvalidArgument, message)
}

fn too_many(what: &str, limit: usize) -> ErrorBody {
    ErrorBody::new(ErrorCode::TooLarge, format!("at most {limit} {what} per request"))
}

/// A media message's edge checks, as the engine makes them again: a non-zero `random_id` (the
/// key of its idempotency and of its reference on the file) and a caption of at most
/// `MEDIA_CAPTION_MAX` characters, which may be empty.
fn check_media_message(random_id: u64, caption: &str) -> Result<(), ErrorBody> {
    if random_id == 0 {
        return Err(invalid("random_id must not be 0"));
    }
    let characters = caption.chars().count();
    if characters > MEDIA_CAPTION_MAX {
        return Err(ErrorBody::new(
            ErrorCode::TooLarge,
            format!("the caption has {characters} characters, more than {MEDIA_CAPTION_MAX}"),
        ));
    }
    Ok(())
}

/// A push token is 1 to `DEVICE_TOKEN_BYTES_MAX` bytes; its form is the push service's
/// business (the dispatcher drops tokens the service refuses).
fn check_device_token(token: &str) -> Result<(), ErrorBody> {
    if token.is_empty() {
        return Err(invalid("the device token is empty"));
    }
    if token.len() > DEVICE_TOKEN_BYTES_MAX {
        return Err(ErrorBody::new(
            ErrorCode::TooLarge,
            format!("the device token is {} bytes, more than {DEVICE_TOKEN_BYTES_MAX}", token.len()),
        ));
    }
    Ok(())
}

// Login.

fn send_code(connection: &Connection, phone: &str) -> Answer {
    if !valid_phone(phone) {
        return Err(invalid("the phone number must be + and 8 to 15 digits"));
    }
    let gateway = &connection.shard.gateway;
    gateway.rates.check_code(phone).map_err(ErrorBody::flood_wait)?;
    gateway.codes.issue(phone).map_err(code_error)?;
    Ok(Response::CodeSent {
        code_length: crate::config::LOGIN_CODE_DIGITS as u8,
        timeout_s: crate::config::LOGIN_CODE_LIFETIME.as_secs() as u32,
    })
}

fn code_error(error: CodeError) -> ErrorBody {
    match error {
        CodeError::Invalid | CodeError::AttemptsExhausted => {
            ErrorBody::new(ErrorCode::PhoneCodeInvalid, error.to_string())
        }
        CodeError::Busy => ErrorBody { code: ErrorCode::Overloaded, message: error.to_string(), retry_after_s: 5 },
        _ => ErrorBody::new(ErrorCode::Internal, error.to_string()),
    }
}

async fn sign_in(connection: &Rc<Connection>, phone: String, code: String) -> Answer {
    if connection.auth.get().is_some() {
        return Err(invalid("the connection is already authorized"));
    }
    if !valid_phone(&phone) {
        return Err(invalid("the phone number must be + and 8 to 15 digits"));
    }
    let gateway = &connection.shard.gateway;
    gateway.codes.check(&phone, &code, false).map_err(code_error)?;
    match gateway.messenger.lookup_phone(&phone).await.map_err(engine_error)? {
        Some(user) => {
            gateway.codes.consume(&phone);
            log_in(connection, user).await
        }
        None => {
            gateway.codes.mark_verified(&phone);
            Ok(Response::SignUpRequired)
        }
    }
}

async fn sign_up(
    connection: &Rc<Connection>,
    phone: String,
    code: String,
    first_name: String,
    last_name: String,
) -> Answer {
    if connection.auth.get().is_some() {
        return Err(invalid("the connection is already authorized"));
    }
    let gateway = &connection.shard.gateway;
    gateway.codes.check(&phone, &code, true).map_err(code_error)?;
    let user = gateway.messenger.sign_up(&phone, &first_name, &last_name).await.map_err(engine_error)?;
    gateway.codes.consume(&phone);
    log_in(connection, user).await
}

/// Creates an authorization for `user`, authorizes the connection with it and answers the
/// new token.
async fn log_in(connection: &Rc<Connection>, user: model::UserId) -> Answer {
    let messenger = &connection.shard.gateway.messenger;
    let (secret, hash) =
        token::new_secret().map_err(|_| ErrorBody::new(ErrorCode::Internal, "no randomness for a token"))?;
    let device = device_description(connection);
    let authorization = messenger.create_authorization(user, hash, &device).await.map_err(engine_error)?;
    let token = Token::new(authorization, secret);
    authorized_response(connection, user, authorization, token.to_bytes()).await
}

async fn authenticate(connection: &Rc<Connection>, token: &[u8]) -> Answer {
    if connection.auth.get().is_some() {
        return Err(invalid("the connection is already authorized"));
    }
    let Some(token) = Token::parse(token) else {
        return Err(ErrorBody::new(ErrorCode::AuthInvalid, "the token is not valid"));
    };
    let messenger = &connection.shard.gateway.messenger;
    let user = messenger.check_authorization(token.authorization, token.secret_hash()).await.map_err(engine_error)?;
    authorized_response(connection, user, token.authorization, Vec::new()).await
}

async fn authorized_response(
    connection: &Rc<Connection>,
    user: model::UserId,
    authorization: model::AuthorizationId,
    token: Vec<u8>,
) -> Answer {
    let messenger = &connection.shard.gateway.messenger;
    let profile = messenger.get_users(&[user]).await.map_err(engine_error)?.pop();
    let Some(profile) = profile else {
        return Err(ErrorBody::new(ErrorCode::NotFound, "the account no longer exists"));
    };
    let state = updates::authorize(connection, user, authorization).await.map_err(engine_error)?;
    Ok(Response::Authorized {
        user: convert::user(profile, user),
        token,
        authorization: ferrogram_net::AuthorizationId(authorization.0),
        state: convert::box_state(state),
    })
}

fn device_description(connection: &Connection) -> String {
    let mut device = format!("{} from {}", connection.client_name.borrow(), connection.ip);
    let mut limit = crate::config::DEVICE_DESCRIPTION_MAX.min(device.len());
    while !device.is_char_boundary(limit) {
        limit -= 1;
    }
    device.truncate(limit);
    device
}

// Everything else, as the connection's user.

/// The user sending through this connection, with the connection's live session: that
/// session learns its own sends from their answers (`SentMessage.sender_pts`) and is not sent
/// them again as updates; the user's other devices are.
fn author(connection: &Connection, me: model::UserId) -> model::Author {
    let session = connection.auth.get().filter(|auth| auth.user == me).and_then(|auth| auth.session);
    model::Author { user: me, session }
}

async fn authorized(
    connection: &Rc<Connection>,
    me: model::UserId,
    authorization: model::AuthorizationId,
    request: Request,
) -> Answer {
    let messenger = &connection.shard.gateway.messenger;
    let done = |result: Result<(), MessagingError>| result.map(|()| Response::Done).map_err(engine_error);
    match request {
        Request::SendCode { .. } | Request::SignIn { .. } | Request::SignUp { .. } | Request::Authenticate { .. } => {
            unreachable!("login requests are handled before authorization")
        }
        Request::UploadStart { .. }
        | Request::UploadPart { .. }
        | Request::UploadFinish { .. }
        | Request::UploadCancel { .. }
        | Request::GetFile { .. }
        | Request::GetFileInfo { .. } => unreachable!("media requests are handled in media.rs"),
        Request::LogOut => {
            // End this connection's session first, so the revocation's `Revoked` event does not
            // close the connection the answer goes out on.
            updates::end_session(connection).await;
            messenger.revoke_authorization(me, authorization).await.map_err(engine_error)?;
            Ok(Response::Done)
        }
        Request::GetAuthorizations => {
            let list = messenger.list_authorizations(me).await.map_err(engine_error)?;
            Ok(Response::Authorizations(
                list.into_iter()
                    .map(|info| ferrogram_net::Authorization {
                        id: ferrogram_net::AuthorizationId(info.id.0),
                        device: info.device,
                        created: ferrogram_net::UnixMs(info.created.0),
                        current: info.id == authorization,
                    })
                    .collect(),
            ))
        }
        Request::RevokeAuthorization { id } => {
            done(messenger.revoke_authorization(me, model::AuthorizationId(id.0)).await)
        }

        Request::GetSelf => {
            let profile = messenger.get_users(&[me]).await.map_err(engine_error)?.pop();
            profile
                .map(|p| Response::User(convert::user(p, me)))
                .ok_or_else(|| ErrorBody::new(ErrorCode::NotFound, "no such user"))
        }
        Request::GetUsers { ids } => {
            if ids.len() > IDS_PER_REQUEST_MAX {
                return Err(too_many("users", IDS_PER_REQUEST_MAX));
            }
            let ids: Vec<model::UserId> = ids.into_iter().map(user_id).collect();
            let profiles = messenger.get_users(&ids).await.map_err(engine_error)?;
            Ok(Response::Users(profiles.into_iter().map(|p| convert::user(p, me)).collect()))
        }
        Request::SetName { first_name, last_name } => done(messenger.set_name(me, &first_name, &last_name).await),
        Request::SetUsername { username } => done(messenger.set_username(me, username.as_deref()).await),
        Request::ResolveUsername { username } => {
            let user = messenger.lookup_username(&username).await.map_err(engine_error)?;
            maybe_user(messenger, me, user).await
        }
        Request::ResolvePhone { phone } => {
            if !valid_phone(&phone) {
                return Err(invalid("the phone number must be + and 8 to 15 digits"));
            }
            let user = messenger.lookup_phone(&phone).await.map_err(engine_error)?;
            maybe_user(messenger, me, user).await
        }
        Request::SetBlocked { peer, blocked } => done(messenger.set_blocked(me, user_id(peer), blocked).await),

        Request::OpenPrivate { peer } => {
            let chat = messenger.open_private(me, user_id(peer)).await.map_err(engine_error)?;
            Ok(Response::ChatId(ferrogram_net::ChatId(chat.0)))
        }
        Request::CreateGroup { title, members } => {
            if members.len() > GROUP_MEMBERS_AT_CREATION_MAX {
                return Err(too_many("members", GROUP_MEMBERS_AT_CREATION_MAX));
            }
            let members: Vec<model::UserId> = members.into_iter().map(user_id).collect();
            let chat = messenger.create_group(me, &title, &members).await.map_err(engine_error)?;
            Ok(Response::ChatId(ferrogram_net::ChatId(chat.0)))
        }
        Request::CreateChannel { title } => {
            let chat = messenger.create_channel(me, &title).await.map_err(engine_error)?;
            Ok(Response::ChatId(ferrogram_net::ChatId(chat.0)))
        }
        Request::JoinChat { chat } => done(messenger.join(chat_id(chat), me).await),
        Request::LeaveChat { chat } => done(messenger.leave(chat_id(chat), me).await),
        Request::AddMember { chat, user } => done(messenger.add_member(chat_id(chat), me, user_id(user)).await),
        Request::RemoveMember { chat, user } => done(messenger.remove_member(chat_id(chat), me, user_id(user)).await),
        Request::PromoteMember { chat, user } => done(messenger.promote(chat_id(chat), me, user_id(user)).await),
        Request::GetChat { chat } => {
            let info = messenger.get_chat(chat_id(chat), me).await.map_err(engine_error)?;
            Ok(Response::Chat(convert::chat(info, me)))
        }
        Request::GetMembers { chat, after, limit } => {
            if limit == 0 || limit as usize > MEMBERS_PER_ANSWER_MAX {
                return Err(invalid(&format!("limit must be between 1 and {MEMBERS_PER_ANSWER_MAX}")));
            }
            let after = after.map(user_id);
            let members =
                messenger.get_members(chat_id(chat), me, after, limit as usize).await.map_err(engine_error)?;
            Ok(Response::Members(
                members
                    .into_iter()
                    .map(|(user, role)| ferrogram_net::Member {
                        user: ferrogram_net::UserId(user.0),
                        role: convert::role(role),
                    })
                    .collect(),
            ))
        }

        Request::SendMessage { chat, random_id, text, reply_to } => {
            let message =
                NewMessage { random_id: model::RandomId(random_id), text, reply_to: reply_to.map(message_id) };
            let ack = messenger.send(chat_id(chat), author(connection, me), message).await.map_err(engine_error)?;
            Ok(Response::Sent(convert::sent(ack)))
        }
        Request::SendMedia(message) => {
            let ferrogram_net::NewMediaMessage { chat, random_id, file, kind, caption, reply_to } = *message;
            check_media_message(random_id, &caption)?;
            let message = NewMediaMessage {
                random_id: model::RandomId(random_id),
                caption,
                reply_to: reply_to.map(message_id),
                kind: convert::media_kind(kind),
                file: file.id.0,
                access_hash: file.access_hash,
            };
            let ack =
                messenger.send_media(chat_id(chat), author(connection, me), message).await.map_err(engine_error)?;
            Ok(Response::Sent(convert::sent(ack)))
        }
        Request::ForwardMessages { from_chat, ids, to_chat, random_id } => {
            if ids.len() > IDS_PER_REQUEST_MAX {
                return Err(too_many("messages", IDS_PER_REQUEST_MAX));
            }
            let acks = messenger
                .forward(
                    author(connection, me),
                    chat_id(from_chat),
                    &message_ids(&ids),
                    chat_id(to_chat),
                    model::RandomId(random_id),
                )
                .await
                .map_err(engine_error)?;
            Ok(Response::SentMany(acks.into_iter().map(convert::sent).collect()))
        }
        Request::EditMessage { chat, id, text } => done(messenger.edit(chat_id(chat), me, message_id(id), &text).await),
        Request::DeleteMessages { chat, ids, for_everyone } => {
            if ids.len() > IDS_PER_REQUEST_MAX {
                return Err(too_many("messages", IDS_PER_REQUEST_MAX));
            }
            done(messenger.delete(chat_id(chat), me, &message_ids(&ids), for_everyone).await)
        }
        Request::PinMessage { chat, id } => done(messenger.pin(chat_id(chat), me, id.map(message_id)).await),
        Request::GetHistory { chat, offset_id, limit, min_id, max_id } => {
            let page = HistoryPage {
                offset_id: message_id(offset_id),
                limit: limit as usize,
                min_id: message_id(min_id),
                max_id: message_id(max_id),
            };
            let messages = messenger.get_history(chat_id(chat), me, page).await.map_err(engine_error)?;
            let mut messages: Vec<_> = messages.iter().map(convert::message).collect();
            fit::fit_messages(&mut messages);
            Ok(Response::Messages(messages))
        }
        Request::GetMessages { chat, ids } => {
            if ids.len() > IDS_PER_REQUEST_MAX {
                return Err(too_many("messages", IDS_PER_REQUEST_MAX));
            }
            let messages = messenger.get_messages(chat_id(chat), me, &message_ids(&ids)).await.map_err(engine_error)?;
            let mut messages: Vec<_> = messages.iter().map(convert::message).collect();
            fit::fit_messages(&mut messages);
            Ok(Response::Messages(messages))
        }
        Request::ReadHistory { chat, max_id } => {
            messenger.read_history(chat_id(chat), me, message_id(max_id)).await.map_err(engine_error)?;
            // Read on any device: the pushes still waiting for those messages are dropped (best
            // effort: a cancel lost to a full channel costs one push).
            if let Some(push) = &connection.shard.gateway.push {
                let cancel = crate::push::Cancel { user: me, chat: chat_id(chat), read_max_id: message_id(max_id) };
                let _ = push.try_cancel(cancel);
            }
            Ok(Response::Done)
        }
        Request::SetTyping { chat } => done(messenger.typing(chat_id(chat), me).await),

        Request::GetState => {
            let state = messenger.get_state(me).await.map_err(engine_error)?;
            Ok(Response::State(convert::box_state(state)))
        }
        Request::GetDifference { pts, limit } => {
            if limit == 0 || limit > DIFFERENCE_LIMIT_MAX {
                return Err(invalid("the difference limit must be 1 to 1000"));
            }
            let difference =
                messenger.get_difference(me, convert::pts(pts), limit as usize).await.map_err(engine_error)?;
            let mut difference = convert::difference(difference);
            fit::fit_difference(&mut difference);
            Ok(Response::Difference(difference))
        }
        Request::GetChatDifference { chat, pts, limit } => {
            if limit == 0 || limit > DIFFERENCE_LIMIT_MAX {
                return Err(invalid("the difference limit must be 1 to 1000"));
            }
            let difference = messenger
                .get_chat_difference(chat_id(chat), me, convert::pts(pts), limit as usize)
                .await
                .map_err(engine_error)?;
            let mut difference = convert::chat_difference(difference);
            fit::fit_chat_difference(&mut difference);
            Ok(Response::ChatDifference(difference))
        }
        Request::GetDialogs { offset, limit } => {
            if limit == 0 || limit > DIALOGS_PAGE_MAX {
                return Err(invalid("the dialogs page limit must be 1 to 100"));
            }
            let offset =
                offset.map(|offset| DialogsOffset { date: model::UnixMs(offset.date.0), chat: chat_id(offset.chat) });
            let dialogs = messenger.get_dialogs(me, offset, limit as usize).await.map_err(engine_error)?;
            Ok(Response::Dialogs(dialogs.iter().map(convert::dialog).collect()))
        }
        Request::SubscribeChat { chat } => {
            let session = live_session(connection)?;
            let chat = chat_id(chat);
            let followed = connection.subscriptions.borrow().len();
            if followed >= SUBSCRIPTIONS_PER_CONNECTION_MAX && !connection.subscriptions.borrow().contains(&chat) {
                return Err(too_many("subscribed chats (per connection)", SUBSCRIPTIONS_PER_CONNECTION_MAX));
            }
            let pts = messenger.subscribe_chat(session, chat).await.map_err(engine_error)?;
            connection.subscriptions.borrow_mut().insert(chat);
            Ok(Response::Pts(ferrogram_net::Pts(pts.0)))
        }
        Request::UnsubscribeChat { chat } => {
            let session = live_session(connection)?;
            connection.subscriptions.borrow_mut().remove(&chat_id(chat));
            done(messenger.unsubscribe_chat(session, chat_id(chat)).await)
        }
        Request::GetPresence { user } => {
            let user = user_id(user);
            // Asking for someone's presence also watches it: changes arrive as live events.
            let session = connection.auth.get().and_then(|auth| auth.session);
            let room = connection.watched.borrow().len() < WATCHED_USERS_PER_CONNECTION_MAX
                || connection.watched.borrow().contains(&user);
            let (online, last_seen) = match session {
                Some(session) if room && user != me => {
                    let presence = messenger.watch_presence(session, user).await.map_err(engine_error)?;
                    connection.watched.borrow_mut().insert(user);
                    presence
                }
                _ => messenger.get_presence(user).await.map_err(engine_error)?,
            };
            Ok(Response::Presence { online, last_seen: ferrogram_net::UnixMs(last_seen.0) })
        }

        Request::RegisterDevice { kind, token, app_sandbox, no_muted } => {
            check_device_token(&token)?;
            let device = model::PushDevice { kind: convert::device_kind(kind), token, app_sandbox, no_muted };
            done(messenger.register_device(me, device).await)
        }
        Request::UnregisterDevice { kind, token } => {
            check_device_token(&token)?;
            let was_registered =
                messenger.unregister_device(me, convert::device_kind(kind), &token).await.map_err(engine_error)?;
            Ok(Response::Unregistered { was_registered })
        }
        Request::ListDevices => {
            let devices = messenger.list_devices(me).await.map_err(engine_error)?;
            Ok(Response::Devices(devices.into_iter().map(convert::push_device).collect()))
        }
        Request::SetNotifySettings { chat, mute_until, show_previews } => {
            let settings = model::NotifySettings { mute_until: model::UnixMs(mute_until.0), show_previews };
            done(messenger.set_notify_settings(me, chat_id(chat), settings).await)
        }
        Request::GetNotifySettings { chat } => {
            let settings = messenger.get_notify_settings(me, chat_id(chat)).await.map_err(engine_error)?;
            Ok(Response::NotifySettings(convert::notify_settings(settings)))
        }
    }
}

fn live_session(connection: &Connection) -> Result<model::SessionId, ErrorBody> {
    connection.auth.get().and_then(|auth| auth.session).ok_or_else(|| ErrorBody {
        code: ErrorCode::Overloaded,
        message: "the live session is being restored".into(),
        retry_after_s: 1,
    })
}

async fn maybe_user(messenger: &model::Messenger, me: model::UserId, user: Option<model::UserId>) -> Answer {
    let Some(user) = user else { return Ok(Response::MaybeUser(None)) };
    let profile = messenger.get_users(&[user]).await.map_err(engine_error)?.pop();
    Ok(Response::MaybeUser(profile.map(|profile| convert::user(profile, me))))
}

/// The metrics index and rate-limit class of a request.
fn classify(request: &Request) -> (usize, MethodClass) {
    use MethodClass::{Login, Media, Other, Send};
    match request {
        Request::SendCode { .. } => (0, Login),
        Request::SignIn { .. } => (1, Login),
        Request::SignUp { .. } => (2, Login),
        Request::Authenticate { .. } => (3, Login),
        Request::LogOut => (4, Other),
        Request::GetAuthorizations => (5, Other),
        Request::RevokeAuthorization { .. } => (6, Other),
        Request::GetSelf => (7, Other),
        Request::GetUsers { .. } => (8, Other),
        Request::SetName { .. } => (9, Other),
        Request::SetUsername { .. } => (10, Other),
        Request::ResolveUsername { .. } => (11, Other),
        Request::ResolvePhone { .. } => (12, Other),
        Request::SetBlocked { .. } => (13, Other),
        Request::OpenPrivate { .. } => (14, Other),
        Request::CreateGroup { .. } => (15, Send),
        Request::CreateChannel { .. } => (16, Send),
        Request::JoinChat { .. } => (17, Other),
        Request::LeaveChat { .. } => (18, Other),
        Request::AddMember { .. } => (19, Other),
        Request::RemoveMember { .. } => (20, Other),
        Request::PromoteMember { .. } => (21, Other),
        Request::GetChat { .. } => (22, Other),
        Request::GetMembers { .. } => (23, Other),
        Request::SendMessage { .. } => (24, Send),
        Request::ForwardMessages { .. } => (25, Send),
        Request::EditMessage { .. } => (26, Send),
        Request::DeleteMessages { .. } => (27, Send),
        Request::PinMessage { .. } => (28, Send),
        Request::GetHistory { .. } => (29, Other),
        Request::GetMessages { .. } => (30, Other),
        Request::ReadHistory { .. } => (31, Other),
        Request::SetTyping { .. } => (32, Other),
        Request::GetState => (33, Other),
        Request::GetDifference { .. } => (34, Other),
        Request::GetChatDifference { .. } => (35, Other),
        Request::GetDialogs { .. } => (36, Other),
        Request::SubscribeChat { .. } => (37, Other),
        Request::UnsubscribeChat { .. } => (38, Other),
        Request::GetPresence { .. } => (39, Other),
        // Settings of the account, rare and small, like `SetName`: not message writes.
        Request::RegisterDevice { .. } => (40, Other),
        Request::UnregisterDevice { .. } => (41, Other),
        Request::ListDevices => (42, Other),
        Request::SetNotifySettings { .. } => (43, Other),
        Request::GetNotifySettings { .. } => (44, Other),
        Request::UploadStart { .. } => (45, Media),
        Request::UploadPart { .. } => (46, Media),
        Request::UploadFinish { .. } => (47, Media),
        Request::UploadCancel { .. } => (48, Media),
        Request::GetFile { .. } => (49, Media),
        Request::GetFileInfo { .. } => (50, Media),
        // A message write like `SendMessage`; its file is already stored.
        Request::SendMedia(_) => (51, Send),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The metric names line up with the request kinds they count.
    #[test]
    fn request_indexes_match_metric_names() {
        use crate::metrics::REQUEST_NAMES;
        assert_eq!(REQUEST_NAMES[classify(&Request::SendCode { phone: String::new() }).0], "send_code");
        assert_eq!(REQUEST_NAMES[classify(&Request::GetState).0], "get_state");
        assert_eq!(REQUEST_NAMES[classify(&Request::GetPresence { user: Default::default() }).0], "get_presence");
        let send = Request::SendMessage { chat: Default::default(), random_id: 0, text: String::new(), reply_to: None };
        assert_eq!(REQUEST_NAMES[classify(&send).0], "send_message");
        let register = Request::RegisterDevice {
            kind: ferrogram_net::DeviceKind::Fcm,
            token: String::new(),
            app_sandbox: false,
            no_muted: false,
        };
        assert_eq!(REQUEST_NAMES[classify(&register).0], "register_device");
        assert_eq!(
            REQUEST_NAMES[classify(&Request::GetNotifySettings { chat: Default::default() }).0],
            "get_notify_settings"
        );
        let part = Request::UploadPart { upload_id: Default::default(), part: 0, bytes: Vec::new() };
        assert_eq!(classify(&part), (46, MethodClass::Media));
        assert_eq!(REQUEST_NAMES[classify(&part).0], "upload_part");
        let info = Request::GetFileInfo { chat: Default::default(), message: Default::default() };
        assert_eq!(REQUEST_NAMES[classify(&info).0], "get_file_info");
        let media = Request::SendMedia(Box::new(ferrogram_net::NewMediaMessage {
            chat: Default::default(),
            random_id: 1,
            file: ferrogram_net::FileRef { id: Default::default(), access_hash: 0 },
            kind: ferrogram_net::MediaKind::Photo,
            caption: String::new(),
            reply_to: None,
        }));
        assert_eq!(classify(&media), (51, MethodClass::Send));
        assert_eq!(REQUEST_NAMES[classify(&media).0], "send_media");
        assert_eq!(REQUEST_NAMES[MALFORMED_INDEX], "malformed");
        assert_eq!(REQUEST_NAMES[UNAUTHORIZED_INDEX], "unauthorized");
    }

    // Media messages are checked at the edge: random_id 0 is refused, a caption may be empty
    // and up to 1024 characters (not bytes) long, and one character more is too large.
    #[test]
    fn media_messages_are_checked_before_the_engine() {
        assert_eq!(check_media_message(0, "").unwrap_err().code, ErrorCode::InvalidArgument);
        assert!(check_media_message(1, "").is_ok());
        assert!(check_media_message(1, &"𝄞".repeat(MEDIA_CAPTION_MAX)).is_ok());
        assert_eq!(check_media_message(1, &"a".repeat(MEDIA_CAPTION_MAX + 1)).unwrap_err().code, ErrorCode::TooLarge);
    }

    // Device tokens are checked at the edge: empty is an invalid argument, one byte past the
    // limit is too large, and the limit itself passes.
    #[test]
    fn device_tokens_are_checked_before_the_engine() {
        assert_eq!(check_device_token("").unwrap_err().code, ErrorCode::InvalidArgument);
        assert_eq!(check_device_token(&"a".repeat(DEVICE_TOKEN_BYTES_MAX + 1)).unwrap_err().code, ErrorCode::TooLarge);
        assert!(check_device_token(&"a".repeat(DEVICE_TOKEN_BYTES_MAX)).is_ok());
        assert!(check_device_token("a").is_ok());
    }
}
