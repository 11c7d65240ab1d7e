//! Single operations of the messaging core and their refusals, each run on three simulated
//! shards through the deterministic driver (`sim::messaging`), so every request crosses the
//! same routing, logs and mesh as in the model test.

use ferrogram_engine::ids::ShardId;
use ferrogram_engine::messaging::limits::{
    CREATE_MEMBERS_MAX, FANOUT_BACK_UNDER, FANOUT_MAX, HISTORY_AGE_MS_MAX, HISTORY_PAGE_MAX, SESSIONS_PER_USER_MAX,
    TEXT_CHARS_MAX,
};
use ferrogram_engine::messaging::{
    AuthorizationId, ChatId, ChatInfo, ChatKind, Dialog, ForwardedFrom, HistoryPage, LiveEvent, Message, MessageId,
    MessagingError, MessagingResult, Pts, RandomId, Request, Response, Role, SendAck, SendRequest, SessionId, Update,
    UserId, SECRET_HASH_BYTES,
};
use ferrogram_engine::sim::messaging::{CrashKind, MessagingSim};
use ferrogram_engine::sim::OpKind;
use ferrogram_engine::{Durability, LogConfig};

const SHARDS: usize = 3;

fn sim(seed: u64) -> MessagingSim {
    let config = LogConfig {
        durability: Durability::Sync,
        segment_bytes: 256 << 10,
        batch_bytes_max: 32 << 10,
        ..LogConfig::default()
    };
    MessagingSim::new(seed, SHARDS, config)
}

fn sign_up(sim: &mut MessagingSim, phone: &str) -> UserId {
    let request =
        Request::SignUp { phone: phone.into(), first_name: format!("User {phone}"), last_name: String::new() };
    match sim.call(request) {
        Ok(Response::User(user)) => user,
        other => panic!("sign up {phone}: {other:?}"),
    }
}

/// Signs up `count` users; the phones are chosen so the users live on every shard.
fn users(sim: &mut MessagingSim, count: usize) -> Vec<UserId> {
    (0..count).map(|index| sign_up(sim, &format!("+1555000{:04}", index))).collect()
}

fn create(sim: &mut MessagingSim, kind: ChatKind, creator: UserId, members: &[UserId]) -> ChatId {
    let request = Request::CreateChat { kind, creator, title: "a chat".into(), members: members.to_vec() };
    match sim.call(request) {
        Ok(Response::Chat(chat)) => chat,
        other => panic!("create {kind:?}: {other:?}"),
    }
}

fn open_private(sim: &mut MessagingSim, user: UserId, peer: UserId) -> MessagingResult<ChatId> {
    sim.call(Request::OpenPrivate { user, peer }).map(|response| match response {
        Response::Chat(chat) => chat,
        other => panic!("open_private answered {other:?}"),
    })
}

fn send(sim: &mut MessagingSim, chat: ChatId, sender: UserId, random_id: u64, text: &str) -> MessagingResult<SendAck> {
    let request = Request::Send(SendRequest {
        chat,
        sender,
        session: None,
        random_id: RandomId(random_id),
        text: text.into(),
        reply_to: None,
        forwarded_from: None,
        media: None,
    });
    sim.call(request).map(|response| match response {
        Response::Sent(ack) => ack,
        other => panic!("send answered {other:?}"),
    })
}

fn done(result: MessagingResult<Response>) -> MessagingResult<()> {
    result.map(|response| assert_eq!(response, Response::Done))
}

fn history(sim: &mut MessagingSim, chat: ChatId, user: UserId, page: HistoryPage) -> MessagingResult<Vec<Message>> {
    sim.call(Request::GetHistory { chat, user, page }).map(|response| match response {
        Response::Messages(messages) => messages,
        other => panic!("history answered {other:?}"),
    })
}

fn ids(messages: &[Message]) -> Vec<u64> {
    messages.iter().map(|message| message.id.0).collect()
}

fn page(offset_id: u64, limit: usize, min_id: u64, max_id: u64) -> HistoryPage {
    HistoryPage { offset_id: MessageId(offset_id), limit, min_id: MessageId(min_id), max_id: MessageId(max_id) }
}

/// Proves users land on several shards, so the tests below cross shards.
#[test]
fn users_are_spread_over_the_shards() {
    let mut sim = sim(1);
    let users = users(&mut sim, 9);
    let mut shards: Vec<ShardId> = users.iter().map(|user| sim.table().owner(user.vshard())).collect();
    shards.sort();
    shards.dedup();
    assert_eq!(shards.len(), SHARDS, "users {users:?} sit on {shards:?}");
}

/// Proves only members may send to, read or edit in a chat, and a chat that does not exist is
/// named as unknown.
#[test]
fn non_members_and_unknown_chats_are_refused() {
    let mut sim = sim(2);
    let u = users(&mut sim, 3);
    let chat = create(&mut sim, ChatKind::Group, u[0], &[u[1]]);
    send(&mut sim, chat, u[1], 1, "hello").expect("a member sends");
    assert_eq!(send(&mut sim, chat, u[2], 2, "let me in"), Err(MessagingError::NotMember(u[2])));
    assert_eq!(history(&mut sim, chat, u[2], page(0, 10, 0, 0)), Err(MessagingError::NotMember(u[2])));
    let edit = Request::Edit { chat, user: u[2], id: MessageId(1), text: "mine now".into() };
    assert_eq!(sim.call(edit), Err(MessagingError::NotMember(u[2])));
    let read = Request::ReadHistory { chat, user: u[2], max_id: MessageId(1) };
    assert_eq!(sim.call(read), Err(MessagingError::NotMember(u[2])));

    let unknown = ChatId::compose(999, chat.vshard());
    assert_eq!(send(&mut sim, unknown, u[0], 3, "anyone?"), Err(MessagingError::UnknownChat(unknown)));
    assert_eq!(history(&mut sim, unknown, u[0], page(0, 10, 0, 0)), Err(MessagingError::UnknownChat(unknown)));

    // After leaving, a former member is refused too; joining again lets them back in.
    done(sim.call(Request::Leave { chat, user: u[1] })).expect("leave");
    assert_eq!(send(&mut sim, chat, u[1], 4, "still here?"), Err(MessagingError::NotMember(u[1])));
    done(sim.call(Request::Join { chat, user: u[1] })).expect("join");
    send(&mut sim, chat, u[1], 5, "back").expect("a member again");
}

/// Proves only admins post to a channel, add, remove or promote members, and pin in a group;
/// a promoted subscriber may then post.
#[test]
fn admin_only_operations_are_refused_to_members() {
    let mut sim = sim(3);
    let u = users(&mut sim, 4);
    let channel = create(&mut sim, ChatKind::Channel, u[0], &[]);
    done(sim.call(Request::Join { chat: channel, user: u[1] })).expect("subscribe");
    assert_eq!(send(&mut sim, channel, u[1], 1, "my post"), Err(MessagingError::NotAdmin));
    send(&mut sim, channel, u[0], 1, "the first post").expect("the creator posts");
    let promote = Request::Promote { chat: channel, by: u[1], user: u[1] };
    assert_eq!(sim.call(promote), Err(MessagingError::NotAdmin));
    done(sim.call(Request::Promote { chat: channel, by: u[0], user: u[1] })).expect("promote");
    send(&mut sim, channel, u[1], 2, "now I may").expect("an admin posts");

    let group = create(&mut sim, ChatKind::Group, u[0], &[u[1]]);
    let add = Request::AddMember { chat: group, by: u[1], user: u[2] };
    assert_eq!(sim.call(add), Err(MessagingError::NotAdmin));
    let remove = Request::RemoveMember { chat: group, by: u[1], user: u[0] };
    assert_eq!(sim.call(remove), Err(MessagingError::NotAdmin));
    let message = send(&mut sim, group, u[1], 1, "pin me").expect("send");
    let pin = Request::Pin { chat: group, user: u[1], id: Some(message.id) };
    assert_eq!(sim.call(pin), Err(MessagingError::NotAdmin));
    done(sim.call(Request::AddMember { chat: group, by: u[0], user: u[2] })).expect("the creator adds");
    // Even an admin cannot remove the creator.
    done(sim.call(Request::Promote { chat: group, by: u[0], user: u[1] })).expect("promote");
    let remove = Request::RemoveMember { chat: group, by: u[1], user: u[0] };
    assert_eq!(sim.call(remove), Err(MessagingError::NotAdmin));
    done(sim.call(Request::RemoveMember { chat: group, by: u[1], user: u[2] })).expect("an admin removes");
    assert_eq!(send(&mut sim, group, u[2], 1, "hi"), Err(MessagingError::NotMember(u[2])));
}

/// Proves a blocked user can neither start nor write to a private chat with the blocker, and
/// can again once unblocked.
#[test]
fn blocked_users_cannot_start_or_write_private_chats() {
    let mut sim = sim(4);
    let u = users(&mut sim, 4);
    let chat = open_private(&mut sim, u[0], u[1]).expect("open");
    assert_eq!(open_private(&mut sim, u[1], u[0]), Ok(chat), "the same chat whoever opens it");
    send(&mut sim, chat, u[0], 1, "hi").expect("send before the block");
    done(sim.call(Request::SetBlocked { user: u[1], peer: u[0], blocked: true })).expect("block");
    assert_eq!(send(&mut sim, chat, u[0], 2, "hello?"), Err(MessagingError::Blocked));
    done(sim.call(Request::SetBlocked { user: u[1], peer: u[0], blocked: false })).expect("unblock");
    send(&mut sim, chat, u[0], 3, "hello again").expect("send after the unblock");

    done(sim.call(Request::SetBlocked { user: u[3], peer: u[2], blocked: true })).expect("block first");
    assert_eq!(open_private(&mut sim, u[2], u[3]), Err(MessagingError::Blocked));
    done(sim.call(Request::SetBlocked { user: u[3], peer: u[2], blocked: false })).expect("unblock");
    let chat = open_private(&mut sim, u[2], u[3]).expect("open after the unblock");
    send(&mut sim, chat, u[2], 1, "finally").expect("send");
    // A private chat is nobody's to join, and nobody else may write in it.
    assert!(matches!(sim.call(Request::Join { chat, user: u[0] }), Err(MessagingError::InvalidArgument(_))));
    assert_eq!(send(&mut sim, chat, u[0], 1, "me too"), Err(MessagingError::NotMember(u[0])));
}

/// Proves the text limit counts characters, not bytes: 4096 characters pass, 4097 are refused,
/// for sends and edits alike; an empty text is refused.
#[test]
fn text_over_the_limit_is_refused() {
    let mut sim = sim(5);
    let u = users(&mut sim, 2);
    let chat = open_private(&mut sim, u[0], u[1]).expect("open");
    let longest: String = "é".repeat(TEXT_CHARS_MAX);
    let ack = send(&mut sim, chat, u[0], 1, &longest).expect("4096 characters (8192 bytes) fit");
    let too_long: String = "a".repeat(TEXT_CHARS_MAX + 1);
    let refused = MessagingError::TooLong { what: "message text", length: TEXT_CHARS_MAX + 1, limit: TEXT_CHARS_MAX };
    assert_eq!(send(&mut sim, chat, u[0], 2, &too_long), Err(refused.clone()));
    let edit = Request::Edit { chat, user: u[0], id: ack.id, text: too_long };
    assert_eq!(sim.call(edit), Err(refused));
    assert!(matches!(send(&mut sim, chat, u[0], 3, ""), Err(MessagingError::InvalidArgument(_))));
    assert!(matches!(send(&mut sim, chat, u[0], 0, "random_id 0"), Err(MessagingError::InvalidArgument(_))));
    let stored = history(&mut sim, chat, u[1], page(0, 10, 0, 0)).expect("history");
    assert_eq!(ids(&stored), vec![1]);
    assert_eq!(stored[0].text, longest);
}

/// Proves a sender edits and deletes only their own messages (a group admin may delete
/// others'), edits show in history with their date, and deleted messages leave history.
#[test]
fn editing_or_deleting_anothers_message_is_refused() {
    let mut sim = sim(6);
    let u = users(&mut sim, 3);
    let chat = open_private(&mut sim, u[0], u[1]).expect("open");
    let first = send(&mut sim, chat, u[0], 1, "original").expect("send");
    let edit = |user, text: &str| Request::Edit { chat, user, id: first.id, text: text.into() };
    assert_eq!(sim.call(edit(u[1], "not yours")), Err(MessagingError::NotSender));
    done(sim.call(edit(u[0], "edited"))).expect("the sender edits");
    let delete = |user, for_everyone| Request::Delete { chat, user, ids: vec![first.id], for_everyone };
    assert_eq!(sim.call(delete(u[1], true)), Err(MessagingError::NotSender));
    let missing = Request::Edit { chat, user: u[0], id: MessageId(9), text: "x".into() };
    assert_eq!(sim.call(missing), Err(MessagingError::UnknownMessage(chat, MessageId(9))));

    let shown = history(&mut sim, chat, u[1], page(0, 10, 0, 0)).expect("history");
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].text, "edited");
    assert!(shown[0].edit_date.is_some_and(|date| date >= first.date));

    // Deleting for oneself hides it from that user only.
    done(sim.call(delete(u[1], false))).expect("delete for me");
    assert!(history(&mut sim, chat, u[1], page(0, 10, 0, 0)).expect("history").is_empty());
    assert_eq!(ids(&history(&mut sim, chat, u[0], page(0, 10, 0, 0)).expect("history")), vec![1]);
    done(sim.call(delete(u[0], true))).expect("the sender deletes for everyone");
    assert!(history(&mut sim, chat, u[0], page(0, 10, 0, 0)).expect("history").is_empty());
    assert_eq!(sim.call(edit(u[0], "too late")), Err(MessagingError::UnknownMessage(chat, first.id)));

    let group = create(&mut sim, ChatKind::Group, u[0], &[u[1], u[2]]);
    let theirs = send(&mut sim, group, u[2], 1, "delete me").expect("send");
    let by_member = Request::Delete { chat: group, user: u[1], ids: vec![theirs.id], for_everyone: true };
    assert_eq!(sim.call(by_member), Err(MessagingError::NotSender));
    let by_admin = Request::Delete { chat: group, user: u[0], ids: vec![theirs.id], for_everyone: true };
    done(sim.call(by_admin)).expect("the creator deletes another's message");
    let by_admin_edit = Request::Edit { chat: group, user: u[0], id: MessageId(1), text: "x".into() };
    assert_eq!(sim.call(by_admin_edit), Err(MessagingError::UnknownMessage(group, MessageId(1))));
}

/// Proves a retried send with the same random_id and content returns the original message
/// (marked duplicate, no second message), while the same random_id with other content is
/// refused; random_ids are per sender, and the memory survives a restart.
#[test]
fn retries_are_idempotent_and_reuse_is_refused() {
    let mut sim = sim(7);
    let u = users(&mut sim, 3);
    let chat = create(&mut sim, ChatKind::Group, u[0], &[u[1], u[2]]);
    let first = send(&mut sim, chat, u[1], 42, "once").expect("send");
    assert!(!first.duplicate);
    assert!(first.sender_pts.is_some(), "a first send carries the sender's pts");
    let retry = send(&mut sim, chat, u[1], 42, "once").expect("retry");
    assert_eq!((retry.id, retry.date, retry.chat_pts, retry.duplicate), (first.id, first.date, first.chat_pts, true));
    assert_eq!(send(&mut sim, chat, u[1], 42, "twice"), Err(MessagingError::RandomIdReused));
    let other = send(&mut sim, chat, u[2], 42, "same random_id, other sender").expect("send");
    assert_ne!(other.id, first.id);

    sim.run_until_quiet().expect("quiet");
    sim.crash(CrashKind::PowerLoss).expect("recover");
    let retry = send(&mut sim, chat, u[1], 42, "once").expect("retry after a restart");
    assert_eq!((retry.id, retry.duplicate), (first.id, true));
    assert_eq!(send(&mut sim, chat, u[1], 42, "twice"), Err(MessagingError::RandomIdReused));
    assert_eq!(ids(&history(&mut sim, chat, u[0], page(0, 10, 0, 0)).expect("history")), vec![2, 1]);
}

/// Proves history pages newest first, strictly below `offset_id`, strictly inside
/// (`min_id`, `max_id`), at most `limit` (1 to 100) messages, skipping deleted ones.
#[test]
fn history_pages_newest_first_within_bounds() {
    let mut sim = sim(8);
    let u = users(&mut sim, 2);
    let chat = open_private(&mut sim, u[0], u[1]).expect("open");
    for index in 1..=250u64 {
        send(&mut sim, chat, u[index as usize % 2], index, &format!("message {index}")).expect("send");
    }
    let delete = Request::Delete { chat, user: u[0], ids: vec![MessageId(200), MessageId(150)], for_everyone: true };
    done(sim.call(delete)).expect("delete");

    for limit in [0, HISTORY_PAGE_MAX + 1] {
        assert!(matches!(history(&mut sim, chat, u[0], page(0, limit, 0, 0)), Err(MessagingError::InvalidArgument(_))));
    }
    let top = history(&mut sim, chat, u[0], page(0, 3, 0, 0)).expect("history");
    assert_eq!(ids(&top), vec![250, 249, 248]);
    assert_eq!(top[0].text, "message 250");
    let below = history(&mut sim, chat, u[0], page(202, 3, 0, 0)).expect("history");
    assert_eq!(ids(&below), vec![201, 199, 198], "strictly below offset_id, skipping deleted 200");
    let window = history(&mut sim, chat, u[0], page(0, 100, 10, 15)).expect("history");
    assert_eq!(ids(&window), vec![14, 13, 12, 11], "strictly inside (min_id, max_id)");
    let window = history(&mut sim, chat, u[0], page(13, 100, 10, 15)).expect("history");
    assert_eq!(ids(&window), vec![12, 11], "offset_id and max_id together");
    let oldest = history(&mut sim, chat, u[0], page(3, 100, 0, 0)).expect("history");
    assert_eq!(ids(&oldest), vec![2, 1]);

    // Paging by offset_id through the whole chat visits every live message once, in order.
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let messages = history(&mut sim, chat, u[1], page(offset, HISTORY_PAGE_MAX, 0, 0)).expect("history");
        assert!(messages.len() <= HISTORY_PAGE_MAX);
        let Some(last) = messages.last() else { break };
        offset = last.id.0;
        seen.extend(ids(&messages));
    }
    let expected: Vec<u64> = (1..=250).rev().filter(|id| *id != 200 && *id != 150).collect();
    assert_eq!(seen, expected);
    // Dates never go backwards with the ids.
    let all = history(&mut sim, chat, u[1], page(0, 100, 0, 0)).expect("history");
    assert!(all.windows(2).all(|pair| pair[0].date >= pair[1].date));
}

/// Proves a connected session receives each durable update of its user's box live, with the
/// pts the box gives it, and a subscriber of a channel receives its posts.
#[test]
fn sessions_receive_box_and_channel_updates_live() {
    let mut sim = sim(9);
    let u = users(&mut sim, 3);
    let chat = create(&mut sim, ChatKind::Group, u[0], &[u[1], u[2]]);
    let session_shard = ShardId((sim.table().owner(u[1].vshard()).0 + 1) % SHARDS as u16);
    sim.run_until_quiet().expect("the creation reaches every member's box");
    let session = sim.new_session(session_shard);
    let state = match sim.call(Request::Connect { user: u[1], session }) {
        Ok(Response::State(state)) => state,
        other => panic!("connect: {other:?}"),
    };
    let ack = send(&mut sim, chat, u[2], 1, "live").expect("send");
    sim.run_until_quiet().expect("quiet");
    let events = sim.session_events(session).to_vec();
    let boxed: Vec<_> = events
        .iter()
        .filter_map(|event| match event {
            LiveEvent::Box { update: sequenced, .. } => Some(sequenced.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(boxed.len(), 1, "{events:?}");
    assert_eq!(boxed[0].pts, Pts(state.pts.0 + 1));
    assert_eq!(boxed[0].update, Update::NewMessage { chat, id: ack.id, sender: u[2], date: ack.date });

    let channel = create(&mut sim, ChatKind::Channel, u[0], &[u[1]]);
    let subscribed = sim.call(Request::SubscribeChat { session, chat: channel });
    assert!(matches!(subscribed, Ok(Response::Pts(_))), "{subscribed:?}");
    let post = send(&mut sim, channel, u[0], 1, "to all").expect("post");
    sim.run_until_quiet().expect("quiet");
    let posted: Vec<_> = sim
        .session_events(session)
        .iter()
        .filter_map(|event| match event {
            LiveEvent::Chat { chat, update, message } if *chat == channel => Some((update.clone(), message.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert_eq!(posted[0].0.pts, post.chat_pts);
    assert_eq!(posted[0].1.as_ref().map(|message| message.text.as_str()), Some("to all"));
}

/// Proves a channel's pts counts only what every subscriber may see: subscribers' reads,
/// joins and leaves take no chat pts and stay out of its log (each reaches the member's own
/// box), so posts stay dense in `get_chat_difference` and live; and that the
/// chat's public pts survives a checkpoint and a restart.
#[test]
fn a_channels_readers_take_no_chat_pts() {
    let mut sim = sim(16);
    let u = users(&mut sim, 4);
    let channel = create(&mut sim, ChatKind::Channel, u[0], &[]);
    for &user in &u[1..] {
        done(sim.call(Request::Join { chat: channel, user })).expect("join");
    }
    assert_eq!(chat_info(&mut sim, channel, u[1]).pts, Pts(1), "joins take no chat pts: only the creation");
    let session = sim.new_session(ShardId(0));
    assert!(matches!(sim.call(Request::Connect { user: u[1], session }), Ok(Response::State(_))));
    let subscribed = sim.call(Request::SubscribeChat { session, chat: channel });
    assert_eq!(subscribed, Ok(Response::Pts(Pts(1))));
    for index in 1..=4 {
        let post = send(&mut sim, channel, u[0], index, "post").expect("post");
        assert_eq!(post.chat_pts, Pts(1 + index), "the post's chat pts is the next public one");
        // Every subscriber reads it; one leaves and comes back.
        for &user in &u[1..] {
            let read = Request::ReadHistory { chat: channel, user, max_id: post.id };
            done(sim.call(read)).expect("read");
        }
        done(sim.call(Request::Leave { chat: channel, user: u[3] })).expect("leave");
        done(sim.call(Request::Join { chat: channel, user: u[3] })).expect("join again");
    }
    sim.run_until_quiet().expect("quiet");
    assert_eq!(chat_info(&mut sim, channel, u[2]).pts, Pts(5), "creation and four posts");
    let live: Vec<u64> = sim
        .session_events(session)
        .iter()
        .filter_map(|event| match event {
            LiveEvent::Chat { update, .. } => Some(update.pts.0),
            _ => None,
        })
        .collect();
    assert_eq!(live, vec![2, 3, 4, 5], "live posts come without gaps");
    let difference = |sim: &mut MessagingSim, user| match sim.call(Request::GetChatDifference {
        chat: channel,
        user,
        pts: Pts(1),
        limit: 100,
    }) {
        Ok(Response::ChatDifference(difference)) => difference,
        other => panic!("chat difference: {other:?}"),
    };
    let seen = difference(&mut sim, u[2]);
    assert_eq!(seen.updates.iter().map(|entry| entry.pts.0).collect::<Vec<_>>(), vec![2, 3, 4, 5]);
    assert!(seen.updates.iter().all(|entry| matches!(entry.update, Update::NewMessage { .. })), "{seen:?}");
    assert_eq!(seen.messages.len(), 4, "{seen:?}");
    assert_eq!((seen.pts, seen.slice), (Pts(5), false));
    let updates = box_updates(&mut sim, u[2]);
    let reads = updates.iter().filter(|update| matches!(update, Update::ReadInbox { chat, .. } if *chat == channel));
    assert_eq!(reads.count(), 4, "each read reaches the reader's box: {updates:?}");
    let rejoins = box_updates(&mut sim, u[3]);
    let member = rejoins.iter().filter(|update| matches!(update, Update::ChatMember { chat, .. } if *chat == channel));
    assert_eq!(member.count(), 9, "the join, then each leave and join again, in the member's box: {rejoins:?}");

    // The public pts lags the chat's own sequence by every private event; a checkpoint keeps it.
    let owner = sim.route(&Request::GetChat { chat: channel, user: u[0] });
    sim.checkpoint(owner).expect("checkpoint");
    sim.crash(CrashKind::ProcessKill).expect("recover");
    assert_eq!(chat_info(&mut sim, channel, u[1]).pts, Pts(5), "the public pts survives a checkpoint and a restart");
    let post = send(&mut sim, channel, u[0], 5, "after").expect("post");
    assert_eq!(post.chat_pts, Pts(6));
    sim.run_until_quiet().expect("quiet");
    let after = difference(&mut sim, u[2]);
    assert_eq!(after.updates.iter().map(|entry| entry.pts.0).collect::<Vec<_>>(), vec![2, 3, 4, 5, 6]);
}

/// Proves a request handed to a shard that does not own its key is refused there, not served
/// from that shard's state, and its answer still reaches the shard it entered on.
#[test]
fn misrouted_requests_are_refused() {
    let mut sim = sim(10);
    let u = users(&mut sim, 2);
    let chat = create(&mut sim, ChatKind::Group, u[0], &[u[1]]);
    let owner = sim.table().owner(chat.vshard());
    let wrong = ShardId((owner.0 + 1) % SHARDS as u16);
    let entered = ShardId((owner.0 + 2) % SHARDS as u16);
    let id = sim.submit_to(wrong, entered, Request::GetChat { chat, user: u[0] });
    assert!(matches!(sim.run_until_reply(id), Some(Err(MessagingError::InvalidArgument(_)))));
    let id = sim.submit_to(
        wrong,
        entered,
        Request::SignUp { phone: "+15550009999".into(), first_name: "Misrouted".into(), last_name: String::new() },
    );
    let reply = sim.run_until_reply(id);
    let expected_owner = sim.route(&Request::LookupPhone { phone: "+15550009999".into() });
    if expected_owner != wrong {
        assert!(matches!(reply, Some(Err(MessagingError::InvalidArgument(_)))), "{reply:?}");
    }
    // Routed properly, from any entry shard, the answer comes back where it entered.
    let id = sim.submit_from(entered, Request::GetChat { chat, user: u[0] });
    assert!(matches!(sim.run_until_reply(id), Some(Ok(Response::ChatInfo(_)))));
}

/// Proves a group crossing `FANOUT_MAX` members switches to fan-out on read (every member's
/// box hears it once, posts stop reaching boxes and are read with `get_chat_difference`), the
/// switch survives a restart, and falling under `FANOUT_BACK_UNDER` switches it back.
#[test]
fn a_group_crossing_fanout_max_switches_how_it_syncs() {
    let mut sim = sim(11);
    let users = users(&mut sim, FANOUT_MAX + 1);
    let creator = users[0];
    let chat = create(&mut sim, ChatKind::Group, creator, &users[1..CREATE_MEMBERS_MAX]);
    for &user in &users[CREATE_MEMBERS_MAX..] {
        done(sim.call(Request::AddMember { chat, by: creator, user })).expect("add");
    }
    sim.run_until_quiet().expect("quiet");
    let info = |sim: &mut MessagingSim| match sim.call(Request::GetChat { chat, user: creator }) {
        Ok(Response::ChatInfo(info)) => info,
        other => panic!("get_chat: {other:?}"),
    };
    assert!(info(&mut sim).fanout_on_read, "{} members sync on read", FANOUT_MAX + 1);
    let post = send(&mut sim, chat, users[5], 1, "to many").expect("a member still posts");
    assert_eq!(post.sender_pts, None, "a chat synced on read puts nothing in boxes");
    sim.run_until_quiet().expect("quiet");
    sim.crash(CrashKind::ProcessKill).expect("recover");
    assert!(info(&mut sim).fanout_on_read, "the switch survives a restart");
    for &user in [users[0], users[7], users[FANOUT_MAX]].iter() {
        let updates = match sim.call(Request::GetDifference { user, pts: Pts(0), limit: 1000 }) {
            Ok(Response::BoxDifference { updates, .. }) => updates,
            other => panic!("difference: {other:?}"),
        };
        let switches: Vec<&Update> =
            updates.iter().map(|entry| &entry.update).filter(|u| matches!(u, Update::ChatSyncMode { .. })).collect();
        assert_eq!(switches, vec![&Update::ChatSyncMode { chat, fanout_on_read: true }], "box of {user}");
        assert!(
            !updates.iter().any(|entry| matches!(entry.update, Update::NewMessage { id, .. } if id == post.id)),
            "box of {user} got a post of a chat synced on read"
        );
    }
    let difference = sim.call(Request::GetChatDifference { chat, user: users[9], pts: Pts(0), limit: 1000 });
    let Ok(Response::ChatDifference(difference)) = difference else { panic!("{difference:?}") };
    assert!(difference.messages.iter().any(|message| message.id == post.id), "the post is read from the chat");

    let under = FANOUT_BACK_UNDER - 1;
    for &user in &users[under..] {
        done(sim.call(Request::Leave { chat, user })).expect("leave");
    }
    sim.run_until_quiet().expect("quiet");
    assert!(!info(&mut sim).fanout_on_read, "under {FANOUT_BACK_UNDER} members it is fanned out on write again");
    let post = send(&mut sim, chat, users[5], 2, "to fewer").expect("post");
    assert!(post.sender_pts.is_some(), "posts reach boxes again");
    sim.run_until_quiet().expect("quiet");
    let updates = match sim.call(Request::GetDifference { user: users[7], pts: Pts(0), limit: 1000 }) {
        Ok(Response::BoxDifference { updates, .. }) => updates,
        other => panic!("difference: {other:?}"),
    };
    let last_switch = updates.iter().rev().find_map(|entry| match entry.update {
        Update::ChatSyncMode { fanout_on_read, .. } => Some(fanout_on_read),
        _ => None,
    });
    assert_eq!(last_switch, Some(false));
    assert!(updates.iter().any(|entry| matches!(entry.update, Update::NewMessage { id, .. } if id == post.id)));
}

/// Proves usernames are unique and compared case-insensitively on their own vshard, only their
/// holder releases one, and a profile shows the username it was set to.
#[test]
fn usernames_are_unique_and_case_insensitive() {
    let mut sim = sim(12);
    let u = users(&mut sim, 2);
    let claim = |username: &str, user| Request::ClaimUsername { username: username.into(), user };
    let lookup = |username: &str| Request::LookupUsername { username: username.into() };
    done(sim.call(claim("Alice_1", u[0]))).expect("claim");
    done(sim.call(claim("alice_1", u[0]))).expect("claiming one's own again is fine");
    assert_eq!(sim.call(claim("@ALICE_1", u[1])), Err(MessagingError::UsernameTaken));
    assert!(matches!(sim.call(claim("ab", u[1])), Err(MessagingError::InvalidArgument(_))));
    assert!(matches!(sim.call(claim("1abcde", u[1])), Err(MessagingError::InvalidArgument(_))));
    assert_eq!(sim.call(lookup("@ALICE_1")), Ok(Response::MaybeUser(Some(u[0]))));
    let set = Request::SetUsername { user: u[0], username: Some("Alice_1".into()) };
    assert_eq!(sim.call(set), Ok(Response::Username(None)));
    let profiles = sim.call(Request::GetUsers { users: vec![u[0]] });
    let Ok(Response::Profiles(profiles)) = profiles else { panic!("{profiles:?}") };
    assert_eq!(profiles[0].username.as_deref(), Some("alice_1"));

    let release = |user| Request::ReleaseUsername { username: "alice_1".into(), user };
    done(sim.call(release(u[1]))).expect("releasing another's username changes nothing");
    assert_eq!(sim.call(lookup("alice_1")), Ok(Response::MaybeUser(Some(u[0]))));
    sim.run_until_quiet().expect("quiet");
    sim.crash(CrashKind::PowerLoss).expect("recover");
    assert_eq!(sim.call(lookup("alice_1")), Ok(Response::MaybeUser(Some(u[0]))), "a claim survives a restart");
    done(sim.call(release(u[0]))).expect("release");
    assert_eq!(sim.call(lookup("alice_1")), Ok(Response::MaybeUser(None)));
    done(sim.call(claim("alice_1", u[1]))).expect("a released username is free");
}

/// Proves presence follows a user's sessions, typing reaches the other members' sessions only,
/// and a box update for a user with no session is reported offline (for push) instead.
#[test]
fn presence_typing_and_offline_notices() {
    let mut sim = sim(13);
    let u = users(&mut sim, 3);
    let chat = create(&mut sim, ChatKind::Group, u[0], &[u[1], u[2]]);
    sim.run_until_quiet().expect("quiet");
    sim.take_offline();
    let presence = |sim: &mut MessagingSim, user| match sim.call(Request::GetPresence { user }) {
        Ok(Response::Presence { online, last_seen }) => (online, last_seen),
        other => panic!("presence: {other:?}"),
    };
    assert!(!presence(&mut sim, u[1]).0);
    let mut sessions = Vec::new();
    for (index, &user) in u[..2].iter().enumerate() {
        let session = sim.new_session(ShardId(index as u16 % SHARDS as u16));
        assert!(matches!(sim.call(Request::Connect { user, session }), Ok(Response::State(_))));
        sessions.push(session);
    }
    assert!(presence(&mut sim, u[1]).0);

    done(sim.call(Request::Typing { chat, user: u[0] })).expect("typing");
    sim.run_until_quiet().expect("quiet");
    let typing = |sim: &MessagingSim, session| {
        sim.session_events(session).iter().filter(|event| matches!(event, LiveEvent::Typing { .. })).count()
    };
    assert_eq!(typing(&sim, sessions[1]), 1, "the other member sees the typing");
    assert_eq!(typing(&sim, sessions[0]), 0, "the typer does not");
    assert_eq!(
        sim.session_events(sessions[1]).iter().find(|event| matches!(event, LiveEvent::Typing { .. })),
        Some(&LiveEvent::Typing { chat, user: u[0] })
    );

    let ack = send(&mut sim, chat, u[0], 1, "who is here?").expect("send");
    sim.run_until_quiet().expect("quiet");
    let offline = sim.take_offline();
    let notified: Vec<UserId> = offline.iter().map(|(user, _)| *user).collect();
    assert_eq!(notified, vec![u[2]], "only the member without a session is reported offline: {offline:?}");
    assert!(matches!(offline[0].1.update, Update::NewMessage { id, .. } if id == ack.id));

    done(sim.call(Request::Disconnect { session: sessions[1] })).expect("disconnect");
    sim.run_until_quiet().expect("quiet");
    let (online, last_seen) = presence(&mut sim, u[1]);
    assert!(!online && last_seen.0 > 0, "offline, last seen at the disconnect");
}

/// Proves a session watching a user's presence (on another shard) is told each time the user
/// comes online (first session) and goes offline (last session), not for a second session;
/// and a watcher whose session is gone gets nothing (its shard has the watch dropped).
#[test]
fn watched_presence_is_pushed() {
    let mut sim = sim(23);
    let u = users(&mut sim, 2);
    sim.run_until_quiet().expect("quiet");
    let watcher = sim.new_session(ShardId(1));
    assert!(matches!(sim.call(Request::Connect { user: u[0], session: watcher }), Ok(Response::State(_))));
    let watched = sim.call(Request::WatchPresence { session: watcher, user: u[1] });
    assert!(matches!(watched, Ok(Response::Presence { online: false, .. })), "{watched:?}");

    let presence_events = |sim: &MessagingSim, session| -> Vec<(UserId, bool)> {
        sim.session_events(session)
            .iter()
            .filter_map(|event| match event {
                LiveEvent::Presence { user, online, .. } => Some((*user, *online)),
                _ => None,
            })
            .collect()
    };
    let first = sim.new_session(ShardId(0));
    assert!(matches!(sim.call(Request::Connect { user: u[1], session: first }), Ok(Response::State(_))));
    let second = sim.new_session(ShardId(1));
    assert!(matches!(sim.call(Request::Connect { user: u[1], session: second }), Ok(Response::State(_))));
    sim.run_until_quiet().expect("quiet");
    assert_eq!(presence_events(&sim, watcher), vec![(u[1], true)], "online once, for the first session");

    done(sim.call(Request::Disconnect { session: first })).expect("disconnect");
    sim.run_until_quiet().expect("quiet");
    assert_eq!(presence_events(&sim, watcher).len(), 1, "still online with one session left");
    done(sim.call(Request::Disconnect { session: second })).expect("disconnect");
    sim.run_until_quiet().expect("quiet");
    assert_eq!(presence_events(&sim, watcher), vec![(u[1], true), (u[1], false)], "offline with the last");

    // The watcher goes away; the next change reaches nobody and unregisters it.
    done(sim.call(Request::Disconnect { session: watcher })).expect("disconnect");
    let again = sim.new_session(ShardId(0));
    assert!(matches!(sim.call(Request::Connect { user: u[1], session: again }), Ok(Response::State(_))));
    sim.run_until_quiet().expect("quiet");
    assert_eq!(presence_events(&sim, watcher).len(), 2, "a gone session is told nothing");
    assert!(
        sim.call(Request::WatchPresence { session: watcher, user: UserId(u[1].0 + (1 << 40)) }).is_err(),
        "unknown users cannot be watched"
    );
}

/// Proves a read is answered only once the reader's box (on another shard than the chat)
/// holds it: the reader's state read right after the answer already shows no unread messages.
#[test]
fn a_read_is_answered_after_the_readers_box_has_it() {
    let mut sim = sim(24);
    let u = users(&mut sim, 9);
    let (reader, writer, chat) = u
        .iter()
        .flat_map(|&a| u.iter().map(move |&b| (a, b)))
        .filter(|(a, b)| a != b)
        .find_map(|(reader, writer)| {
            let chat = open_private(&mut sim, reader, writer).expect("open");
            (sim.table().owner(chat.vshard()) != sim.table().owner(reader.vshard())).then_some((reader, writer, chat))
        })
        .expect("some private chat lives on another shard than its reader");
    for random_id in 1..=3 {
        send(&mut sim, chat, writer, random_id, "unread").expect("send");
    }
    sim.run_until_quiet().expect("quiet");
    let unread = |sim: &mut MessagingSim| match sim.call(Request::GetState { user: reader }) {
        Ok(Response::State(state)) => state.unread,
        other => panic!("state: {other:?}"),
    };
    assert_eq!(unread(&mut sim), 3);
    done(sim.call(Request::ReadHistory { chat, user: reader, max_id: MessageId(3) })).expect("read");
    // No settling in between: the answer itself must come after the box took the read.
    assert_eq!(unread(&mut sim), 0, "the reader's box holds the read when the read is answered");
}

/// Proves a box keeps a bounded history: once its oldest updates are older than the age limit,
/// `get_difference` from before them answers `DifferenceTooLong`, and from the oldest kept pts
/// on it still answers the suffix.
#[test]
fn a_box_forgets_updates_older_than_the_age_limit() {
    let mut sim = sim(14);
    let u = users(&mut sim, 2);
    let chat = open_private(&mut sim, u[0], u[1]).expect("open");
    for index in 1..=3 {
        send(&mut sim, chat, u[0], index, "old").expect("send");
    }
    sim.advance_clock(HISTORY_AGE_MS_MAX + 1);
    send(&mut sim, chat, u[0], 4, "new").expect("send");
    sim.run_until_quiet().expect("quiet");
    let difference = |sim: &mut MessagingSim, pts| sim.call(Request::GetDifference { user: u[1], pts, limit: 100 });
    assert_eq!(difference(&mut sim, Pts(0)), Err(MessagingError::DifferenceTooLong(Pts(0))));
    let Ok(Response::BoxDifference { updates, .. }) = difference(&mut sim, Pts(3)) else { panic!("suffix") };
    assert_eq!(updates.iter().map(|entry| entry.pts.0).collect::<Vec<_>>(), vec![4]);
    let chat_difference = sim.call(Request::GetChatDifference { chat, user: u[1], pts: Pts(0), limit: 100 });
    assert_eq!(chat_difference, Err(MessagingError::DifferenceTooLong(Pts(0))));
    // The messages themselves stay: history is not bounded by age.
    assert_eq!(ids(&history(&mut sim, chat, u[1], page(0, 10, 0, 0)).expect("history")), vec![4, 3, 2, 1]);
}

/// Proves a user holds at most `SESSIONS_PER_USER_MAX` online sessions; one more is refused.
#[test]
fn sessions_per_user_are_limited() {
    let mut sim = sim(15);
    let u = users(&mut sim, 1);
    for index in 0..SESSIONS_PER_USER_MAX {
        let session = sim.new_session(ShardId((index % SHARDS) as u16));
        assert!(matches!(sim.call(Request::Connect { user: u[0], session }), Ok(Response::State(_))));
    }
    let session = sim.new_session(ShardId(0));
    assert!(matches!(sim.call(Request::Connect { user: u[0], session }), Err(MessagingError::TooLong { .. })));
}

/// Proves a shard whose log fails (an injected write error) answers every request that was
/// waiting on it, and every later one, with a storage error instead of leaving callers hanging;
/// after a restart what was acknowledged before the failure is all there.
#[test]
fn a_failed_log_answers_storage_errors() {
    let mut sim = sim(16);
    let u = users(&mut sim, 2);
    let chat = create(&mut sim, ChatKind::Group, u[0], &[u[1]]);
    let first = send(&mut sim, chat, u[0], 1, "before").expect("send");
    sim.run_until_quiet().expect("quiet");
    let shard = sim.table().owner(chat.vshard());
    sim.disk_mut(shard).fail_nth_op(1, OpKind::Write);
    let request = |random_id| {
        Request::Send(SendRequest {
            chat,
            sender: u[1],
            session: None,
            random_id: RandomId(random_id),
            text: "during".into(),
            reply_to: None,
            forwarded_from: None,
            media: None,
        })
    };
    let waiting = sim.submit(request(2));
    // A read that must wait for the failed write: it shows the chat as of that write.
    let read = sim.submit(Request::GetHistory { chat, user: u[0], page: page(0, 10, 0, 0) });
    let storage = |result: Option<MessagingResult<Response>>| matches!(result, Some(Err(MessagingError::Storage(_))));
    assert!(storage(sim.run_until_reply(waiting)), "the waiting send fails");
    assert!(storage(sim.run_until_reply(read)), "the waiting read fails");
    let later = sim.submit(request(3));
    assert!(storage(sim.run_until_reply(later)), "a later send fails");
    let later_read = sim.submit(Request::GetHistory { chat, user: u[0], page: page(0, 10, 0, 0) });
    let answer = sim.run_until_reply(later_read);
    assert!(storage(answer.clone()), "a later read of what the failed write touched fails too: {answer:?}");

    sim.crash(CrashKind::ProcessKill).expect("recover");
    let shown = history(&mut sim, chat, u[0], page(0, 10, 0, 0)).expect("history after the restart");
    assert!(shown.iter().any(|message| message.id == first.id), "the acknowledged message survives");
    send(&mut sim, chat, u[1], 4, "after").expect("the restarted shard takes writes");
}

/// Proves a send to a healthy chat shard is still answered (with a storage error) when the
/// sender's box lives on a shard whose log failed, since that shard is where its answer
/// comes from.
#[test]
fn a_send_whose_senders_box_shard_failed_is_answered() {
    let mut sim = sim(17);
    let u = users(&mut sim, 9);
    let creator = u[0];
    let chat_shard = sim.table().owner(creator.vshard());
    let sender = *u.iter().find(|user| sim.table().owner(user.vshard()) != chat_shard).expect("another shard");
    let failed = sim.table().owner(sender.vshard());
    let chat = create(&mut sim, ChatKind::Group, creator, &[sender]);
    sim.run_until_quiet().expect("quiet");
    sim.disk_mut(failed).fail_nth_op(1, OpKind::Write);
    let rename = Request::SetName { user: sender, first_name: "Renamed".into(), last_name: String::new() };
    assert!(matches!(sim.call(rename), Err(MessagingError::Storage(_))), "the sender's shard fails");
    let id = sim.submit(Request::Send(SendRequest {
        chat,
        sender,
        session: None,
        random_id: RandomId(1),
        text: "anyone?".into(),
        reply_to: None,
        forwarded_from: None,
        media: None,
    }));
    let answer = sim.run_until_reply(id);
    assert!(matches!(answer, Some(Err(MessagingError::Storage(_)))), "{answer:?}");
}

fn chat_info(sim: &mut MessagingSim, chat: ChatId, user: UserId) -> ChatInfo {
    match sim.call(Request::GetChat { chat, user }) {
        Ok(Response::ChatInfo(info)) => info,
        other => panic!("get_chat: {other:?}"),
    }
}

fn box_updates(sim: &mut MessagingSim, user: UserId) -> Vec<Update> {
    match sim.call(Request::GetDifference { user, pts: Pts(0), limit: 1000 }) {
        Ok(Response::BoxDifference { updates, .. }) => updates.into_iter().map(|entry| entry.update).collect(),
        other => panic!("difference: {other:?}"),
    }
}

fn dialog(sim: &mut MessagingSim, user: UserId, chat: ChatId) -> Dialog {
    match sim.call(Request::GetDialogs { user }) {
        Ok(Response::Dialogs(dialogs)) => {
            dialogs.into_iter().find(|dialog| dialog.chat == chat).expect("the chat is among the dialogs")
        }
        other => panic!("dialogs: {other:?}"),
    }
}

/// Proves a pin names a message its pinner can see, is cleared when that message is deleted
/// for everyone, reaches the members' boxes, and survives a restart.
#[test]
fn pins_follow_their_message() {
    let mut sim = sim(18);
    let u = users(&mut sim, 2);
    let chat = open_private(&mut sim, u[0], u[1]).expect("open");
    let first = send(&mut sim, chat, u[0], 1, "pin me").expect("send");
    let second = send(&mut sim, chat, u[0], 2, "then me").expect("send");
    done(sim.call(Request::Pin { chat, user: u[1], id: Some(first.id) })).expect("either member pins a private chat");
    assert_eq!(chat_info(&mut sim, chat, u[0]).pinned, Some(first.id));
    done(sim.call(Request::Delete { chat, user: u[0], ids: vec![first.id], for_everyone: true })).expect("delete");
    assert_eq!(chat_info(&mut sim, chat, u[0]).pinned, None, "deleting the pinned message unpins it");
    let pin_deleted = Request::Pin { chat, user: u[0], id: Some(first.id) };
    assert_eq!(sim.call(pin_deleted), Err(MessagingError::UnknownMessage(chat, first.id)));
    done(sim.call(Request::Delete { chat, user: u[1], ids: vec![second.id], for_everyone: false })).expect("hide");
    let pin_hidden = Request::Pin { chat, user: u[1], id: Some(second.id) };
    assert_eq!(sim.call(pin_hidden), Err(MessagingError::UnknownMessage(chat, second.id)), "hidden for the pinner");
    done(sim.call(Request::Pin { chat, user: u[0], id: Some(second.id) })).expect("pin");
    sim.run_until_quiet().expect("quiet");
    sim.crash(CrashKind::PowerLoss).expect("recover");
    assert_eq!(chat_info(&mut sim, chat, u[1]).pinned, Some(second.id), "a pin survives a restart");
    let pins: Vec<Update> =
        box_updates(&mut sim, u[1]).into_iter().filter(|update| matches!(update, Update::PinMessage { .. })).collect();
    assert_eq!(
        pins,
        vec![Update::PinMessage { chat, id: Some(first.id) }, Update::PinMessage { chat, id: Some(second.id) }]
    );
}

/// Proves where a forwarded message came from is part of what makes a retry the same send: the
/// same origin answers the original, another origin is a reused random_id; a forward needs no
/// text, and history shows its origin.
#[test]
fn forwards_are_part_of_a_sends_identity() {
    let mut sim = sim(19);
    let u = users(&mut sim, 2);
    let chat = open_private(&mut sim, u[0], u[1]).expect("open");
    let original = send(&mut sim, chat, u[0], 1, "worth forwarding").expect("send");
    let other = send(&mut sim, chat, u[0], 2, "also").expect("send");
    let forward = |message: MessageId, date| {
        Request::Send(SendRequest {
            chat,
            sender: u[1],
            session: None,
            random_id: RandomId(7),
            text: String::new(),
            reply_to: None,
            forwarded_from: Some(ForwardedFrom { chat, message, sender: u[0], date }),
            media: None,
        })
    };
    let Ok(Response::Sent(first)) = sim.call(forward(original.id, original.date)) else { panic!("forward") };
    let Ok(Response::Sent(retry)) = sim.call(forward(original.id, original.date)) else { panic!("retry") };
    assert_eq!((retry.id, retry.duplicate), (first.id, true));
    assert_eq!(sim.call(forward(other.id, other.date)), Err(MessagingError::RandomIdReused));
    let shown = history(&mut sim, chat, u[0], page(0, 1, 0, 0)).expect("history");
    assert_eq!(shown[0].forwarded_from.as_ref().map(|from| from.message), Some(original.id));
}

/// Proves reading moves the reader's marker and unread count and tells the sender (read
/// outbox); reading backwards changes nothing and reading past the top stops at the top.
#[test]
fn reads_move_markers_and_unread_counts() {
    let mut sim = sim(20);
    let u = users(&mut sim, 2);
    let chat = open_private(&mut sim, u[0], u[1]).expect("open");
    for random_id in 1..=3 {
        send(&mut sim, chat, u[0], random_id, "unread").expect("send");
    }
    sim.run_until_quiet().expect("quiet");
    assert_eq!(dialog(&mut sim, u[1], chat).unread, 3);
    done(sim.call(Request::ReadHistory { chat, user: u[1], max_id: MessageId(2) })).expect("read");
    sim.run_until_quiet().expect("quiet");
    let reader = dialog(&mut sim, u[1], chat);
    assert_eq!((reader.read_inbox_max, reader.unread), (MessageId(2), 1));
    assert_eq!(dialog(&mut sim, u[0], chat).read_outbox_max, MessageId(2), "the sender learns it was read");
    assert!(box_updates(&mut sim, u[0]).contains(&Update::ReadOutbox { chat, max_id: MessageId(2) }));
    assert!(box_updates(&mut sim, u[1]).contains(&Update::ReadInbox { chat, max_id: MessageId(2), unread: 1 }));

    let before = box_updates(&mut sim, u[1]).len();
    done(sim.call(Request::ReadHistory { chat, user: u[1], max_id: MessageId(1) })).expect("read backwards");
    sim.run_until_quiet().expect("quiet");
    assert_eq!(box_updates(&mut sim, u[1]).len(), before, "reading backwards is not an event");
    done(sim.call(Request::ReadHistory { chat, user: u[1], max_id: MessageId(99) })).expect("read past the top");
    // A read is answered once the chat holds it; the reader's box hears it by fan-out after.
    sim.run_until_quiet().expect("quiet");
    let reader = dialog(&mut sim, u[1], chat);
    assert_eq!((reader.read_inbox_max, reader.unread), (MessageId(3), 0));
    let state = match sim.call(Request::GetState { user: u[1] }) {
        Ok(Response::State(state)) => state,
        other => panic!("state: {other:?}"),
    };
    assert_eq!(state.unread, 0);
}

/// Proves deleting unread messages for everyone lowers each member's unread count by the ones
/// that were unread for them (not their own, not already read), in a group whose members sit
/// on several shards, and a recount at the next read agrees.
#[test]
fn deleting_unread_messages_lowers_unread_counts() {
    let mut sim = sim(21);
    let u = users(&mut sim, 4);
    let chat = create(&mut sim, ChatKind::Group, u[0], &u[1..]);
    for (random_id, sender) in [(1, u[0]), (2, u[0]), (3, u[1]), (4, u[0])] {
        send(&mut sim, chat, sender, random_id, "soon gone").expect("send");
    }
    // Message ids 1..=4 of the chat (its creation is an event, not a message).
    done(sim.call(Request::ReadHistory { chat, user: u[2], max_id: MessageId(2) })).expect("read");
    sim.run_until_quiet().expect("quiet");
    let unread = |sim: &mut MessagingSim, user: UserId| dialog(sim, user, chat).unread;
    assert_eq!([unread(&mut sim, u[1]), unread(&mut sim, u[2]), unread(&mut sim, u[3])], [3, 2, 4]);

    // Delete 2 (u0's) and 3 (u1's) for everyone.
    let delete = Request::Delete { chat, user: u[0], ids: vec![MessageId(2), MessageId(3)], for_everyone: true };
    done(sim.call(delete)).expect("an admin deletes");
    sim.run_until_quiet().expect("quiet");
    // u1: 2 was unread, 3 is their own. u2 had read 2; 3 was unread. u3: both were unread.
    assert_eq!([unread(&mut sim, u[1]), unread(&mut sim, u[2]), unread(&mut sim, u[3])], [2, 1, 2]);
    assert!(box_updates(&mut sim, u[3]).iter().any(|update| matches!(
        update,
        Update::DeleteMessagesForEveryone { deleted, .. }
            if deleted.ids == [MessageId(2), MessageId(3)] && deleted.senders == [u[0], u[1]]
    )));
    // Deleting them again changes nothing; a read recounts and agrees.
    let again = Request::Delete { chat, user: u[0], ids: vec![MessageId(2)], for_everyone: true };
    done(sim.call(again)).expect("deleting again is accepted");
    done(sim.call(Request::ReadHistory { chat, user: u[3], max_id: MessageId(1) })).expect("read");
    sim.run_until_quiet().expect("quiet");
    assert_eq!(unread(&mut sim, u[3]), 1, "only message 4 is left unread after 1");
    assert_eq!(unread(&mut sim, u[1]), 2);
}

fn create_authorization(sim: &mut MessagingSim, user: UserId, secret: u8) -> AuthorizationId {
    let request = Request::CreateAuthorization {
        user,
        secret_hash: [secret; SECRET_HASH_BYTES],
        device: format!("device {secret}"),
    };
    match sim.call(request) {
        Ok(Response::Authorization(id)) => id,
        other => panic!("create authorization: {other:?}"),
    }
}

fn check_authorization(sim: &mut MessagingSim, id: AuthorizationId, secret: u8) -> MessagingResult<UserId> {
    sim.call(Request::CheckAuthorization { id, secret_hash: [secret; SECRET_HASH_BYTES] }).map(
        |response| match response {
            Response::User(user) => user,
            other => panic!("check authorization answered {other:?}"),
        },
    )
}

/// Proves authorizations are allocated on their user's vshard, so a check routed by the id
/// alone reaches the user's shard, and that revoking one ends the sessions connected under
/// it on whichever shard holds them, while the user's other sessions keep their updates.
#[test]
fn revoking_an_authorization_ends_its_sessions_on_every_shard() {
    let mut sim = sim(17);
    let u = users(&mut sim, 6);
    let user = u[0];
    let home = sim.table().owner(user.vshard());
    let phone = create_authorization(&mut sim, user, 1);
    let laptop = create_authorization(&mut sim, user, 2);
    assert_eq!(sim.table().owner(phone.vshard()), home, "an authorization lives on its user's shard");
    assert_eq!(check_authorization(&mut sim, phone, 1), Ok(user));
    assert_eq!(check_authorization(&mut sim, phone, 2), Err(MessagingError::Unauthorized));

    // One session under each authorization and a plain one, each held by another shard.
    let connect = |sim: &mut MessagingSim, shard: u16, authorization: Option<AuthorizationId>| {
        let session = sim.new_session(ShardId(shard));
        let request = match authorization {
            Some(authorization) => Request::ConnectAuthorized { user, authorization, session },
            None => Request::Connect { user, session },
        };
        (session, sim.call(request))
    };
    let shards = SHARDS as u16;
    let (phone_session, answer) = connect(&mut sim, (home.0 + 1) % shards, Some(phone));
    assert!(matches!(answer, Ok(Response::State(_))), "{answer:?}");
    let (laptop_session, answer) = connect(&mut sim, home.0, Some(laptop));
    assert!(matches!(answer, Ok(Response::State(_))), "{answer:?}");
    let (plain_session, answer) = connect(&mut sim, (home.0 + 2) % shards, None);
    assert!(matches!(answer, Ok(Response::State(_))), "{answer:?}");

    done(sim.call(Request::RevokeAuthorization { user, id: phone })).expect("revoke");
    sim.run_until_quiet().expect("quiet");
    assert!(sim.session_revoked(phone_session), "the session under the revoked authorization ended");
    assert!(!sim.session_revoked(laptop_session) && !sim.session_revoked(plain_session));
    assert_eq!(check_authorization(&mut sim, phone, 1), Err(MessagingError::Unauthorized));
    let (_, answer) = connect(&mut sim, home.0, Some(phone));
    assert_eq!(answer, Err(MessagingError::Unauthorized), "a revoked authorization cannot connect again");

    sim.take_session_events();
    let chat = open_private(&mut sim, u[1], user).expect("open");
    send(&mut sim, chat, u[1], 1, "hello").expect("send");
    sim.run_until_quiet().expect("quiet");
    let events = sim.take_session_events();
    let got = |session: SessionId| events.get(&session).is_some_and(|events| !events.is_empty());
    assert!(got(laptop_session) && got(plain_session), "the user's other sessions still get updates");
    assert!(!got(phone_session), "the revoked session gets none");
}

/// Proves a session connecting under an authorization while it is being revoked either is
/// refused or is ended: the end never overtakes the registration and leaves it open.
#[test]
fn a_connect_racing_a_revocation_never_outlives_it() {
    let mut outcomes = [0; 2];
    for seed in 0..40 {
        let mut sim = sim(1000 + seed);
        let u = users(&mut sim, 4);
        let user = u[(seed % 4) as usize];
        let home = sim.table().owner(user.vshard());
        let id = create_authorization(&mut sim, user, 7);
        let session = sim.new_session(ShardId(((home.0 as u64 + 1 + seed % 2) % SHARDS as u64) as u16));
        // A change still being written makes the registration's answer wait in the queue
        // the revocation's end of session joins after it.
        let rename = sim.submit(Request::SetName { user, first_name: "Renamed".into(), last_name: String::new() });
        let connect = sim.submit(Request::ConnectAuthorized { user, authorization: id, session });
        for _ in 0..seed % 8 {
            sim.step();
        }
        let revoke = sim.submit(Request::RevokeAuthorization { user, id });
        sim.run_until_quiet().expect("quiet");
        assert_eq!(sim.take_reply(rename), Some(Ok(Response::Done)), "seed {seed}");
        assert_eq!(sim.take_reply(revoke), Some(Ok(Response::Done)), "seed {seed}");
        match sim.take_reply(connect) {
            Some(Ok(Response::State(_))) => {
                assert!(sim.session_revoked(session), "seed {seed}: a session connected in time is ended");
                outcomes[0] += 1;
            }
            Some(Err(MessagingError::Unauthorized)) => {
                assert!(!sim.session_revoked(session), "seed {seed}");
                outcomes[1] += 1;
            }
            other => panic!("seed {seed}: connect answered {other:?}"),
        }
    }
    assert!(outcomes[0] > 0 && outcomes[1] > 0, "both orders happened: {outcomes:?}");
}

/// Proves authorizations and revocations survive a power loss, from a checkpoint and from the
/// log after it, and ids are not given out again after recovery.
#[test]
fn authorizations_survive_a_crash_across_a_checkpoint() {
    let mut sim = sim(18);
    let u = users(&mut sim, 3);
    let before = [create_authorization(&mut sim, u[0], 1), create_authorization(&mut sim, u[0], 2)];
    done(sim.call(Request::RevokeAuthorization { user: u[0], id: before[1] })).expect("revoke");
    let home = sim.table().owner(u[0].vshard());
    sim.checkpoint(home).expect("checkpoint");
    let after = [create_authorization(&mut sim, u[0], 3), create_authorization(&mut sim, u[0], 4)];
    done(sim.call(Request::RevokeAuthorization { user: u[0], id: before[0] })).expect("revoke");
    done(sim.call(Request::RevokeAuthorization { user: u[0], id: after[1] })).expect("revoke");
    sim.run_until_quiet().expect("quiet");
    sim.crash(CrashKind::PowerLoss).expect("recover");

    assert_eq!(check_authorization(&mut sim, after[0], 3), Ok(u[0]));
    for (id, secret) in [(before[0], 1), (before[1], 2), (after[1], 4)] {
        assert_eq!(check_authorization(&mut sim, id, secret), Err(MessagingError::Unauthorized), "{id}");
    }
    let listed = match sim.call(Request::ListAuthorizations { user: u[0] }) {
        Ok(Response::Authorizations(list)) => list.into_iter().map(|info| info.id).collect::<Vec<_>>(),
        other => panic!("list: {other:?}"),
    };
    assert_eq!(listed, [after[0]]);
    let next = create_authorization(&mut sim, u[0], 5);
    assert!(next > after[1], "{next} is not an id given out before the crash");
}

/// Proves members come in pages in user id order, each after the last one seen, a short page
/// ends the listing, and a non-member is refused.
#[test]
fn members_are_listed_page_by_page() {
    let mut sim = sim(31);
    let u = users(&mut sim, 12);
    let chat = create(&mut sim, ChatKind::Group, u[0], &u[1..11]);
    let page = |sim: &mut MessagingSim, after: Option<UserId>, limit: usize| match sim.call(Request::GetMembers {
        chat,
        user: u[3],
        after,
        limit,
    }) {
        Ok(Response::Members(members)) => members,
        other => panic!("members: {other:?}"),
    };
    let mut seen = Vec::new();
    loop {
        let members = page(&mut sim, seen.last().copied(), 4);
        assert!(members.len() <= 4, "a page holds at most its limit");
        seen.extend(members.iter().map(|(user, _)| *user));
        if members.len() < 4 {
            break;
        }
    }
    let mut expected: Vec<UserId> = u[..11].to_vec();
    expected.sort();
    assert_eq!(seen, expected, "every member once, in user id order");
    let whole = page(&mut sim, None, usize::MAX);
    assert_eq!(whole.len(), 11, "a limit past the bound is clamped, not refused");
    assert_eq!(whole.iter().filter(|(_, role)| *role == Role::Creator).count(), 1);
    assert!(page(&mut sim, Some(expected[10]), 4).is_empty(), "nothing after the last member");
    let outsider = Request::GetMembers { chat, user: u[11], after: None, limit: 4 };
    assert_eq!(sim.call(outsider), Err(MessagingError::NotMember(u[11])));
}
