//! Authorizing a connection and pumping its live updates (DESIGN §5).
//!
//! Authorizing registers an engine session on the connection's own shard and starts a pump
//! that turns its live events into `Updates` frames, one frame per batch of whatever is queued.
//! New and edited messages travel with their bodies, fetched with one request per chat of the
//! batch, so a client can show them without asking.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

use engine::messaging::{self as model, AuthorizationId, BoxState, MessagingResult, SessionEvents, UserId};
use ferrogram_net::{codec, LiveEvent, Updates};

use crate::config::UPDATES_PER_FRAME_MAX;
use crate::connection::{Authorized, CloseReason, Connection};
use crate::convert;

/// Tries to fetch a batch's message bodies from an overloaded chat shard (waiting 1, 2, 4, ...
/// ms between tries) before sending the updates without them.
const BODY_FETCH_ATTEMPTS_MAX: u32 = 6;

/// Authorizes `connection` as `user` and starts its live updates; answers the box state at
/// registration (every later update arrives live).
pub(crate) async fn authorize(
    connection: &Rc<Connection>,
    user: UserId,
    authorization: AuthorizationId,
) -> MessagingResult<BoxState> {
    let messenger = &connection.shard.gateway.messenger;
    let connected = messenger.connect_authorized(user, authorization, connection.shard.shard).await?;
    if connection.is_closed() {
        let _ = messenger.disconnect(connected.session).await;
        return Err(model::MessagingError::Unavailable);
    }
    if connection.auth.get().is_some() {
        // Another login on this connection finished first; one engine session per connection.
        let _ = messenger.disconnect(connected.session).await;
        return Err(model::MessagingError::InvalidArgument("the connection is already authorized"));
    }
    let generation = connection.auth_generation.get() + 1;
    connection.auth_generation.set(generation);
    connection.auth.set(Some(Authorized { user, authorization, session: Some(connected.session) }));
    spawn_pump(connection, connected.events, generation);
    Ok(connected.state)
}

/// Ends the connection's engine session, if it has one (on close or log out).
pub(crate) async fn end_session(connection: &Connection) {
    let session = connection.auth.get().and_then(|auth| auth.session);
    connection.auth_generation.set(connection.auth_generation.get() + 1);
    connection.auth.set(None);
    if let Some(session) = session {
        let _ = connection.shard.gateway.messenger.disconnect(session).await;
    }
}

/// Starts the connection's live-update pump in the shard's live-update queue (see
/// `ShardGateway::live_updates`).
fn spawn_pump(connection: &Rc<Connection>, events: SessionEvents, generation: u64) {
    let queue = connection.shard.live_updates;
    match glommio::spawn_local_into(pump(connection.clone(), events, generation), queue) {
        Ok(task) => {
            task.detach();
        }
        // The queue lives as long as the shard, so this is not expected. Without a pump the
        // connection would get no updates: close it, and the client connects again.
        Err(error) => {
            tracing::error!(%error, "cannot start a live-update pump");
            connection.close_after_flush(CloseReason::Shutdown);
        }
    }
}

async fn pump(connection: Rc<Connection>, mut events: SessionEvents, generation: u64) {
    while let Some(first) = events.next().await {
        // Sending a batch takes far more state than waiting for one (body fetches, a new
        // registration after a resync): it runs boxed, so the pump of an idle connection,
        // which lives as long as the connection, stays small.
        if !Box::pin(forward(&connection, &mut events, first, generation)).await {
            return;
        }
    }
}

/// Sends `first` and whatever else is queued behind it as `Updates` frames, and registers
/// the session again if the engine dropped it; `false` when the pump is to stop.
async fn forward(
    connection: &Rc<Connection>,
    events: &mut SessionEvents,
    first: model::LiveEvent,
    generation: u64,
) -> bool {
    let current = |connection: &Connection| !connection.is_closed() && connection.auth_generation.get() == generation;
    if !current(connection) {
        return false;
    }
    let mut batch = vec![first];
    while batch.len() < UPDATES_PER_FRAME_MAX {
        match events.try_next() {
            Some(event) => batch.push(event),
            None => break,
        }
    }
    let Some(auth) = connection.auth.get() else { return false };
    let (wire, resync, revoked) = convert_batch(connection, auth.user, batch).await;
    if !current(connection) {
        return false;
    }
    let metrics = connection.shard.metrics();
    metrics.updates_sent.fetch_add(wire.len() as u64, Relaxed);
    for events in crate::fit::split_events(wire) {
        metrics.update_frames_sent.fetch_add(1, Relaxed);
        let mut frame = Vec::new();
        match codec::encode_updates(&mut frame, &Updates { events }) {
            Ok(()) => {
                connection.send_frame(frame);
            }
            Err(error) => tracing::error!(%error, "an updates frame does not fit"),
        }
    }
    if revoked {
        connection.auth.set(None);
        connection.close_after_flush(CloseReason::Revoked);
        return false;
    }
    if resync {
        // The engine dropped the session (its queue overflowed or its shard restarted it):
        // register again; the client catches up with `GetDifference`.
        metrics.resyncs.fetch_add(1, Relaxed);
        let messenger = &connection.shard.gateway.messenger;
        match messenger.connect_authorized(auth.user, auth.authorization, connection.shard.shard).await {
            Ok(connected) if current(connection) => {
                connection.auth.set(Some(Authorized { session: Some(connected.session), ..auth }));
                *events = connected.events;
                resubscribe(connection, connected.session).await;
            }
            Ok(connected) => {
                let _ = messenger.disconnect(connected.session).await;
                return false;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot register a session again after a resync");
                connection.close(CloseReason::Shutdown);
                return false;
            }
        }
    }
    true
}

/// Follows the connection's chats and watched users again on a new engine session; a chat
/// that refuses (left, deleted) is dropped from the set.
async fn resubscribe(connection: &Connection, session: model::SessionId) {
    let watched: Vec<UserId> = connection.watched.borrow().iter().copied().collect();
    for user in watched {
        let _ = connection.shard.gateway.messenger.watch_presence(session, user).await;
    }
    let chats: Vec<model::ChatId> = connection.subscriptions.borrow().iter().copied().collect();
    for chat in chats {
        if connection.shard.gateway.messenger.subscribe_chat(session, chat).await.is_err() {
            connection.subscriptions.borrow_mut().remove(&chat);
        }
    }
}

/// Converts a batch of engine events. A new message's update comes with its body; the
/// bodies of edited messages (and of new ones re-sent after a restart) are fetched, one
/// request per chat.
async fn convert_batch(
    connection: &Connection,
    user: UserId,
    batch: Vec<model::LiveEvent>,
) -> (Vec<LiveEvent>, bool, bool) {
    let mut wanted: BTreeMap<model::ChatId, Vec<model::MessageId>> = BTreeMap::new();
    for event in &batch {
        if let model::LiveEvent::Box { update, message: None } = event {
            if let Some(id) = update.update.message() {
                wanted.entry(update.update.chat()).or_default().push(id);
            }
        }
    }
    let mut bodies: HashMap<(model::ChatId, model::MessageId), ferrogram_net::Message> = HashMap::new();
    let messenger = &connection.shard.gateway.messenger;
    for (chat, ids) in wanted {
        // A message deleted or a chat left since is simply sent without its body. A chat shard
        // too busy to answer is asked again a few times: under load, updates lost their bodies.
        for attempt in 0..BODY_FETCH_ATTEMPTS_MAX {
            match messenger.get_messages(chat, user, &ids).await {
                Ok(messages) => {
                    let converted =
                        messages.iter().map(|message| ((message.chat, message.id), convert::message(message)));
                    bodies.extend(converted);
                    break;
                }
                Err(model::MessagingError::Overloaded) => {
                    glommio::timer::sleep(std::time::Duration::from_millis(1 << attempt)).await;
                }
                Err(_) => break,
            }
        }
    }
    let (mut resync, mut revoked) = (false, false);
    let mut wire = Vec::with_capacity(batch.len());
    for event in batch {
        wire.push(match event {
            model::LiveEvent::Box { update, message: Some(message) } => {
                LiveEvent::Box { update: convert::sequenced(&update), message: Some(convert::message(&message)) }
            }
            model::LiveEvent::Box { update, message: None } => {
                let message = update.update.message().and_then(|id| bodies.get(&(update.update.chat(), id)).cloned());
                LiveEvent::Box { update: convert::sequenced(&update), message }
            }
            model::LiveEvent::Chat { chat, update, message } => LiveEvent::Chat {
                chat: ferrogram_net::ChatId(chat.0),
                update: convert::sequenced(&update),
                message: message.as_deref().map(convert::message),
            },
            model::LiveEvent::Typing { chat, user } => {
                LiveEvent::Typing { chat: ferrogram_net::ChatId(chat.0), user: ferrogram_net::UserId(user.0) }
            }
            model::LiveEvent::Resync => {
                resync = true;
                LiveEvent::Resync
            }
            model::LiveEvent::Presence { user, online, last_seen } => LiveEvent::Presence {
                user: ferrogram_net::UserId(user.0),
                online,
                last_seen: ferrogram_net::UnixMs(last_seen.0),
            },
            model::LiveEvent::Revoked => {
                revoked = true;
                LiveEvent::Revoked
            }
        });
    }
    (wire, resync, revoked)
}
