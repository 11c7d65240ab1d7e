//! Proves the live side of the messaging API on real shards: channel posts reach subscribed
//! sessions and `get_chat_difference`, only admins post, typing reaches online members, a
//! session that stops reading is dropped and told to resync, users with no online session
//! are reported to the host's offline hook, a send through a session is answered rather than
//! echoed to it, and a group crossing FANOUT_MAX switches to fan-out on read with an event in
//! every member's box.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrogram::engine::engine::EngineHooks;
use ferrogram::engine::messaging::limits::{FANOUT_MAX, SESSION_QUEUE_MAX};
use ferrogram::engine::messaging::{
    Author, LiveEvent, MessagingError, Messenger, NewMessage, Pts, RandomId, Sequenced, Update, UserId,
};
use ferrogram::engine::{Engine, EngineConfig};

mod in_process;
use in_process::{block_on, temp_dir};

fn open(dir: &Path, hooks: EngineHooks) -> Engine {
    let mut config = EngineConfig::new(dir);
    config.shards = 2;
    config.log.segment_bytes = 8 << 20;
    Engine::open_with_hooks(config, hooks).expect("engine opens")
}

fn text(message: &str, random_id: u64) -> NewMessage {
    NewMessage { random_id: RandomId(random_id), text: message.into(), reply_to: None }
}

/// Signs up `count` users from several threads (sign-ups are independent requests).
fn sign_up_many(messenger: &Messenger, prefix: &str, count: usize) -> Vec<UserId> {
    let threads: Vec<_> = (0..4)
        .map(|thread| {
            let messenger = messenger.clone();
            let prefix = prefix.to_string();
            std::thread::spawn(move || {
                (thread..count)
                    .step_by(4)
                    .map(|index| {
                        let user = block_on(messenger.sign_up(&format!("+1{prefix}{index:06}"), "User", ""));
                        (index, user.expect("sign up"))
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut users: Vec<(usize, UserId)> = threads.into_iter().flat_map(|t| t.join().expect("thread")).collect();
    users.sort();
    users.into_iter().map(|(_, user)| user).collect()
}

fn next_event(events: &mut ferrogram::engine::messaging::SessionEvents) -> LiveEvent {
    events.next_timeout(Duration::from_secs(10)).expect("a live event within 10 s")
}

/// Proves channel posts reach subscribed sessions live and through get_chat_difference, and
/// that only admins post.
#[test]
fn channel_posts_reach_subscribers() {
    let dir = temp_dir("channel");
    let engine = open(&dir, EngineHooks::default());
    let messenger = engine.messenger();
    let users = sign_up_many(&messenger, "666", 6);
    let admin = users[0];
    let channel = block_on(messenger.create_channel(admin, "news")).expect("create channel");
    let mut sessions = Vec::new();
    for &user in &users[1..] {
        block_on(messenger.join(channel, user)).expect("join");
        // Half the sessions on the other shard than the user's, so delivery crosses shards.
        let shard = engine.shard_of(user.vshard());
        let mut connected = block_on(messenger.connect(user, shard)).expect("connect");
        let pts = block_on(messenger.subscribe_chat(connected.session, channel)).expect("subscribe");
        assert!(pts.0 >= 1, "the channel's pts counts its creation and joins");
        // The join itself is in the user's box (fan-out on read still tells the member).
        while connected.events.try_next().is_some() {}
        sessions.push((user, connected));
    }
    assert_eq!(
        block_on(messenger.send(channel, users[1], text("not an admin", 1))),
        Err(MessagingError::NotAdmin),
        "subscribers cannot post to a channel"
    );
    let before = block_on(messenger.get_chat(channel, users[1])).expect("chat").pts;
    for index in 1..=5u64 {
        let ack = block_on(messenger.send(channel, admin, text(&format!("post {index}"), index))).expect("post");
        assert_eq!(ack.sender_pts, None, "channels are fanned out on read: no box pts");
    }
    for (user, session) in &mut sessions {
        for index in 1..=5u64 {
            // Skip what the session heard before the posts (its own box's join updates).
            let event = loop {
                match next_event(&mut session.events) {
                    LiveEvent::Chat { update, .. } if update.pts <= before => continue,
                    LiveEvent::Box { .. } => continue,
                    event => break event,
                }
            };
            match event {
                LiveEvent::Chat { chat, update, message } => {
                    assert_eq!(chat, channel);
                    assert_eq!(update.pts.0, before.0 + index, "user {user}: posts arrive in chat pts order");
                    assert_eq!(message.map(|m| m.text.clone()), Some(format!("post {index}")));
                }
                other => panic!("user {user}: expected a channel post, got {other:?}"),
            }
        }
    }
    let difference = block_on(messenger.get_chat_difference(channel, users[2], before, 100)).expect("difference");
    assert_eq!(difference.updates.len(), 5);
    assert_eq!(difference.messages.iter().map(|m| m.text.as_str()).collect::<Vec<_>>()[4], "post 5");
    assert!(!difference.slice);
    let dialogs = block_on(messenger.get_dialogs(users[3], None, 10)).expect("dialogs");
    assert_eq!(dialogs.len(), 1);
    assert_eq!((dialogs[0].chat, dialogs[0].top_message.0, dialogs[0].unread), (channel, 5, 5));
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Proves typing reaches online members, a session that does not read is dropped with a
/// resync, and users without online sessions are reported to the offline hook.
#[test]
fn typing_overflow_and_offline_hook() {
    let dir = temp_dir("sessions");
    let offline: Arc<Mutex<Vec<(UserId, Sequenced)>>> = Arc::default();
    let hook = {
        let offline = offline.clone();
        Arc::new(move |user: UserId, update: &Sequenced| offline.lock().expect("lock").push((user, update.clone())))
    };
    let engine = open(&dir, EngineHooks { offline: Some(hook), ..EngineHooks::default() });
    let messenger = engine.messenger();
    let users = sign_up_many(&messenger, "777", 3);
    let (alice, bob, carol) = (users[0], users[1], users[2]);
    let group = block_on(messenger.create_group(alice, "friends", &[bob, carol])).expect("group");
    let mut bob_session = block_on(messenger.connect(bob, engine.shard_of(bob.vshard()))).expect("connect bob");
    let mut alice_session = block_on(messenger.connect(alice, engine.shard_of(carol.vshard()))).expect("connect");

    block_on(messenger.typing(group, alice)).expect("typing");
    match next_event(&mut bob_session.events) {
        LiveEvent::Typing { chat, user } => assert_eq!((chat, user), (group, alice)),
        other => panic!("expected typing, got {other:?}"),
    }
    assert!(alice_session.events.try_next().is_none(), "the typist does not see their own typing");

    let ack = block_on(messenger.send(group, alice, text("hi all", 1))).expect("send");
    match next_event(&mut bob_session.events) {
        LiveEvent::Box { update, message } => {
            assert!(matches!(update.update, Update::NewMessage { id, .. } if id == ack.id));
            assert_eq!(message.map(|m| m.text.clone()), Some("hi all".to_string()), "with its body");
        }
        other => panic!("expected the message, got {other:?}"),
    }
    match next_event(&mut alice_session.events) {
        LiveEvent::Box { update, message } => {
            assert_eq!(Some(update.pts), ack.sender_pts, "the sender's devices see it too");
            assert_eq!(message.map(|m| m.id), Some(ack.id), "with its body");
        }
        other => panic!("expected the sender's own update, got {other:?}"),
    }
    // Carol has no session: the host hears of her update once it is durable.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reported = offline.lock().expect("lock").iter().any(|(user, update)| {
            *user == carol && matches!(update.update, Update::NewMessage { id, .. } if id == ack.id)
        });
        if reported {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the offline hook never reported carol's update");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !offline.lock().expect("lock").iter().any(|(user, update)| {
            *user == bob && matches!(update.update, Update::NewMessage { id, .. } if id == ack.id)
        }),
        "an online user is not reported offline"
    );

    // Bob stops reading: more updates than his queue holds drop the session with a resync.
    let sends: Vec<_> = (0..SESSION_QUEUE_MAX as u64 + 100)
        .map(|index| messenger.send(group, alice, text(&format!("flood {index}"), 100 + index)))
        .collect();
    for send in sends {
        block_on(send).expect("send");
    }
    // Deliveries follow the acknowledgements; let them all land before reading.
    std::thread::sleep(Duration::from_millis(500));
    let mut events = 0;
    let ended_with_resync = loop {
        match bob_session.events.next_timeout(Duration::from_secs(10)) {
            Some(LiveEvent::Resync) => break true,
            Some(_) => events += 1,
            None => break false,
        }
    };
    assert!(ended_with_resync, "a session that fell behind ends with Resync (after {events} events)");
    assert!(events <= SESSION_QUEUE_MAX, "the queue never held more than its bound");
    // Catching up after a resync is get_difference from the last pts the client held.
    let difference = block_on(messenger.get_difference(bob, Pts(events as u64), 1000)).expect("difference");
    assert!(!difference.updates.is_empty() && difference.updates[0].pts.0 == events as u64 + 1);
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Proves a group that grows past FANOUT_MAX switches to fan-out on read, with the switch
/// announced in every member's box, and that its posts then stay out of the boxes.
// Alice has two devices. What she sends through one comes back to that one as the answer
// (with her box pts) and to the other as a live update; the sending device's stream skips
// that pts and goes on with the next update. With both boxes on either shard of the chat.
#[test]
fn a_send_through_a_session_is_answered_not_echoed() {
    let dir = temp_dir("answered");
    let engine = open(&dir, EngineHooks::default());
    let messenger = engine.messenger();
    let users = sign_up_many(&messenger, "778", 8);
    let alice = users[0];
    for (index, &bob) in users[1..].iter().enumerate() {
        let chat = block_on(messenger.open_private(alice, bob)).expect("private chat");
        let mut laptop = block_on(messenger.connect(alice, engine.shard_of(alice.vshard()))).expect("laptop");
        let mut phone = block_on(messenger.connect(alice, engine.shard_of(bob.vshard()))).expect("phone");
        let through = Author { user: alice, session: Some(laptop.session) };
        let random_id = 10 + index as u64;
        let ack = block_on(messenger.send(chat, through, text("from my laptop", random_id))).expect("send");
        let own = ack.sender_pts.expect("the answer carries alice's box pts");
        match next_event(&mut phone.events) {
            LiveEvent::Box { update, message } => {
                assert_eq!(update.pts, own, "her other device gets the update live");
                assert_eq!(message.map(|m| m.id), Some(ack.id), "with its body");
            }
            other => panic!("expected alice's message on her phone, got {other:?}"),
        }
        let reply = block_on(messenger.send(chat, bob, text("seen", random_id))).expect("bob answers");
        match next_event(&mut laptop.events) {
            LiveEvent::Box { update, .. } => {
                assert!(
                    matches!(update.update, Update::NewMessage { id, .. } if id == reply.id),
                    "the laptop's next update is bob's reply, not its own message: {update:?}"
                );
                assert_eq!(update.pts, Pts(own.0 + 1), "the laptop's stream goes on after the answered pts");
            }
            other => panic!("expected bob's reply on the laptop, got {other:?}"),
        }
        block_on(messenger.disconnect(laptop.session)).expect("laptop leaves");
        block_on(messenger.disconnect(phone.session)).expect("phone leaves");
    }
}

#[test]
fn group_crossing_fanout_max_switches_sync_mode() {
    let dir = temp_dir("crossing");
    let engine = open(&dir, EngineHooks::default());
    let messenger = engine.messenger();
    let users = sign_up_many(&messenger, "888", FANOUT_MAX + 1);
    let owner = users[0];
    let group = block_on(messenger.create_group(owner, "big", &users[1..10])).expect("group");
    let joins: Vec<_> = users[10..].iter().map(|&user| (user, messenger.clone())).collect();
    let threads: Vec<_> = joins
        .chunks(joins.len().div_ceil(4))
        .map(|chunk| {
            let chunk = chunk.to_vec();
            std::thread::spawn(move || {
                for (user, messenger) in chunk {
                    block_on(messenger.join(group, user)).expect("join");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("join thread");
    }
    let info = block_on(messenger.get_chat(group, owner)).expect("chat");
    assert_eq!(info.members, FANOUT_MAX + 1);
    assert!(info.fanout_on_read, "a group above FANOUT_MAX is fanned out on read");
    let state_before = block_on(messenger.get_state(users[5])).expect("state");
    let difference = block_on(messenger.get_difference(users[5], Pts(state_before.pts.0 - 1), 10)).expect("diff");
    assert!(
        difference
            .updates
            .iter()
            .any(|u| matches!(u.update, Update::ChatSyncMode { chat, fanout_on_read: true } if chat == group)),
        "members hear that the chat switched to fan-out on read"
    );
    block_on(messenger.send(group, users[3], text("to many", 1))).expect("send");
    let state_after = block_on(messenger.get_state(users[5])).expect("state");
    assert_eq!(state_after.pts, state_before.pts, "posts of a chat fanned out on read stay out of boxes");
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
