//! Proves that live deliveries handed to the shard's delivery task (a step with more than
//! `DELIVERIES_INLINE_MAX` of them, so that the step's replies go out first) reach every
//! session in order and once: group messages to 600 online members go out while other threads
//! send private messages to some of them, and each session's box updates arrive in dense pts
//! order with nothing missing or repeated.

use std::time::Duration;

use ferrogram::engine::messaging::{LiveEvent, NewMessage, RandomId, SessionEvents, UserId};
use ferrogram::engine::{Durability, Engine, EngineConfig};

mod in_process;
use in_process::{block_on, temp_dir};

/// More members than a step delivers to inline (`DELIVERIES_INLINE_MAX`, 256), so every group
/// message goes through the delivery task.
const MEMBERS: usize = 600;
const GROUP_MESSAGES: u64 = 30;
const PRIVATE_PAIRS: usize = 3;
const PRIVATE_MESSAGES_PER_PAIR: u64 = 60;

fn text(message: &str, random_id: u64) -> NewMessage {
    NewMessage { random_id: RandomId(random_id), text: message.into(), reply_to: None }
}

#[test]
fn large_deliveries_keep_each_sessions_order() {
    let dir = temp_dir("large-deliveries");
    let mut config = EngineConfig::new(&dir);
    // One shard: the group's and the private chats' deliveries all leave the same driver.
    config.shards = 1;
    config.log.segment_bytes = 8 << 20;
    // Watermarks move as soon as a batch is written, so steps follow each other closely.
    config.log.durability = Durability::None;
    let engine = Engine::open(config).expect("engine opens");
    let messenger = engine.messenger();
    let users: Vec<UserId> = (0..MEMBERS)
        .map(|index| block_on(messenger.sign_up(&format!("+1777{index:06}"), "Member", "")).expect("sign up"))
        .collect();
    let group = block_on(messenger.create_group(users[0], "crowd", &users[1..200])).expect("create group");
    for &user in &users[200..] {
        block_on(messenger.add_member(group, users[0], user)).expect("add member");
    }
    let shard = engine.shard_of(users[0].vshard());
    let mut sessions: Vec<(UserId, u64, SessionEvents)> = users
        .iter()
        .map(|&user| {
            let connected = block_on(messenger.connect(user, shard)).expect("connect");
            (user, connected.state.pts.0, connected.events)
        })
        .collect();

    // Private messages to some of the members from threads of their own, while the group
    // messages go out one after another: each group message's deliveries are still being
    // pushed by the delivery task when the next private message is released.
    let private_threads: Vec<_> = (0..PRIVATE_PAIRS)
        .map(|pair| {
            let messenger = messenger.clone();
            let (from, to) = (users[MEMBERS - 1 - pair], users[1 + pair]);
            std::thread::spawn(move || {
                let chat = block_on(messenger.open_private(from, to)).expect("open private");
                for index in 0..PRIVATE_MESSAGES_PER_PAIR {
                    block_on(messenger.send(chat, from, text("private", 1 + index))).expect("private send");
                }
            })
        })
        .collect();
    for index in 0..GROUP_MESSAGES {
        let sender = users[(index as usize * 7) % MEMBERS];
        block_on(messenger.send(group, sender, text("to everyone", 1_000 + index))).expect("group send");
    }
    for thread in private_threads {
        thread.join().expect("private sender");
    }

    for (user, connected_pts, events) in &mut sessions {
        let end = block_on(messenger.get_state(*user)).expect("state").pts.0;
        let mut next = *connected_pts + 1;
        while next <= end {
            match events.next_timeout(Duration::from_secs(10)) {
                Some(LiveEvent::Box { update, .. }) => {
                    assert_eq!(update.pts.0, next, "user {user}: box updates arrive in pts order, each once");
                    next += 1;
                }
                Some(LiveEvent::Typing { .. } | LiveEvent::Presence { .. }) => {}
                other => panic!("user {user}: expected box update {next} of {end}, got {other:?}"),
            }
        }
        assert!(events.try_next().is_none(), "user {user}: nothing after the box's last update");
    }
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
