//! Proves the messaging API end to end on real shards and files: two users on two shards open
//! a private chat, exchange messages that arrive live in order with the pts the boxes gave
//! them, read history and differences, and find everything again after a restart.

use std::path::Path;
use std::time::Duration;

use ferrogram::engine::messaging::{HistoryPage, LiveEvent, MessagingError, NewMessage, RandomId, Update, UserId};
use ferrogram::engine::{Engine, EngineConfig};

mod in_process;
use in_process::{block_on, temp_dir};

fn open(dir: &Path) -> Engine {
    let mut config = EngineConfig::new(dir);
    config.shards = 2;
    config.log.segment_bytes = 4 << 20;
    Engine::open(config).expect("engine opens")
}

fn text(message: &str, random_id: u64) -> NewMessage {
    NewMessage { random_id: RandomId(random_id), text: message.into(), reply_to: None }
}

/// Proves sends are acknowledged with dense ids and pts, delivered live, readable as history
/// and differences, and recovered after a restart.
#[test]
fn private_chat_round_trip() {
    let dir = temp_dir("private-chat");
    let engine = open(&dir);
    let messenger = engine.messenger();
    // Users spread by phone over the vshards; find two that live on different shards.
    let mut users: Vec<UserId> = Vec::new();
    for index in 0..8 {
        let user =
            block_on(messenger.sign_up(&format!("+1555000{index:04}"), "User", &index.to_string())).expect("sign up");
        users.push(user);
    }
    let alice = users[0];
    let bob =
        *users.iter().find(|u| engine.shard_of(u.vshard()) != engine.shard_of(alice.vshard())).unwrap_or(&users[1]);
    assert!(matches!(
        block_on(messenger.sign_up("+15550000000", "Again", "")),
        Err(MessagingError::PhoneTaken(user)) if user == alice
    ));

    let chat = block_on(messenger.open_private(alice, bob)).expect("open private chat");
    assert_eq!(block_on(messenger.open_private(bob, alice)).expect("same chat"), chat, "one chat per pair");
    let mut bob_session = block_on(messenger.connect(bob, engine.shard_of(bob.vshard()))).expect("bob connects");
    assert_eq!(bob_session.state.pts.0, 0);

    let mut acks = Vec::new();
    for index in 1..=20u64 {
        let ack = block_on(messenger.send(chat, alice, text(&format!("hello {index}"), index))).expect("send");
        assert_eq!(ack.id.0, index, "message ids are dense");
        assert_eq!(ack.sender_pts.map(|pts| pts.0), Some(index), "the sender's box pts comes with the ack");
        acks.push(ack);
    }
    let retry = block_on(messenger.send(chat, alice, text("hello 3", 3))).expect("retry");
    assert!(retry.duplicate && retry.id == acks[2].id, "a retry answers the original message");
    assert_eq!(block_on(messenger.send(chat, alice, text("something else", 3))), Err(MessagingError::RandomIdReused));

    for index in 1..=20u64 {
        match bob_session.events.next_timeout(Duration::from_secs(5)) {
            Some(LiveEvent::Box { update, message }) => {
                assert_eq!(update.pts.0, index, "live updates arrive in pts order");
                assert!(matches!(update.update, Update::NewMessage { id, .. } if id.0 == index));
                // Bob's box is on another shard: the body came with the fan-out.
                let body = message.as_deref().map(|message| (message.id.0, message.text.clone()));
                assert_eq!(body, Some((index, format!("hello {index}"))), "a new message's update carries its body");
            }
            other => panic!("expected live update {index}, got {other:?}"),
        }
    }

    let page = HistoryPage { limit: 5, ..HistoryPage::default() };
    let history = block_on(messenger.get_history(chat, bob, page)).expect("history");
    let ids: Vec<u64> = history.iter().map(|m| m.id.0).collect();
    assert_eq!(ids, vec![20, 19, 18, 17, 16], "history is newest first");
    let difference =
        block_on(messenger.get_difference(bob, ferrogram::engine::messaging::Pts(15), 100)).expect("difference");
    assert_eq!(difference.updates.iter().map(|u| u.pts.0).collect::<Vec<_>>(), (16..=20).collect::<Vec<_>>());
    assert_eq!(difference.messages.len(), 5, "the difference carries the message bodies");
    block_on(messenger.read_history(chat, bob, acks[19].id)).expect("read");
    let dialogs = block_on(messenger.get_dialogs(bob, None, 10)).expect("dialogs");
    assert_eq!(dialogs.len(), 1);
    assert_eq!((dialogs[0].top_message.0, dialogs[0].unread), (20, 0));
    engine.shutdown().expect("shutdown");
    drop(bob_session);

    let engine = open(&dir);
    let messenger = engine.messenger();
    let history = block_on(messenger.get_history(chat, alice, HistoryPage { limit: 100, ..HistoryPage::default() }))
        .expect("history after restart");
    assert_eq!(history.len(), 20);
    assert_eq!(history[0].text, "hello 20");
    let state = block_on(messenger.get_state(bob)).expect("state");
    assert_eq!(state.pts.0, 21, "twenty messages and the read marker");
    assert_eq!(block_on(messenger.lookup_phone("+15550000000")).expect("lookup"), Some(alice));
    let retry = block_on(messenger.send(chat, alice, text("hello 3", 3))).expect("retry after restart");
    assert!(retry.duplicate, "idempotency windows are recovered");
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
