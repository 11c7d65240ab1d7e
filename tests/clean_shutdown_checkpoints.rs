//! Proves a clean shutdown leaves a checkpoint of everything written, so the next open
//! restores it and replays nothing, also under `interval` durability with an interval far
//! longer than the test (the shutdown must not wait for it); and that with the extra
//! checkpoint turned off the same writes are replayed instead. Messages come back either way.

use std::path::Path;

use ferrogram::engine::messaging::{ChatId, HistoryPage, MessageId, NewMessage, RandomId, UserId};
use ferrogram::engine::{Durability, Engine, EngineConfig};

mod in_process;
use in_process::{block_on, temp_dir};

const MESSAGES: u64 = 40;

fn config(dir: &Path, durability: Durability, at_close_min_bytes: u64) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    config.shards = 1;
    config.log.segment_bytes = 4 << 20;
    config.log.durability = durability;
    config.checkpoint_at_close_min_bytes = at_close_min_bytes;
    config
}

/// Writes a chat of `MESSAGES` messages and shuts down cleanly.
fn write(dir: &Path, durability: Durability, at_close_min_bytes: u64) -> (ChatId, UserId) {
    let engine = Engine::open(config(dir, durability, at_close_min_bytes)).expect("engine opens");
    let messenger = engine.messenger();
    let alice = block_on(messenger.sign_up("+15550000001", "Alice", "")).expect("sign up");
    let bob = block_on(messenger.sign_up("+15550000002", "Bob", "")).expect("sign up");
    let chat = block_on(messenger.open_private(alice, bob)).expect("open private");
    for index in 1..=MESSAGES {
        let message = NewMessage { random_id: RandomId(index), text: format!("message {index}"), reply_to: None };
        block_on(messenger.send(chat, alice, message)).expect("send");
    }
    engine.shutdown().expect("clean shutdown");
    (chat, bob)
}

/// Reopens; returns the records replayed and the texts of the chat, oldest first.
fn reopen(dir: &Path, chat: ChatId, reader: UserId) -> (u64, bool, Vec<String>) {
    let engine = Engine::open(config(dir, Durability::Sync, u64::MAX)).expect("engine reopens");
    let report = &engine.open_reports()[0];
    let (replayed, from_checkpoint) = (report.scan.records, report.checkpoint.is_some());
    let page = HistoryPage { offset_id: MessageId(0), limit: 100, min_id: MessageId(0), max_id: MessageId(0) };
    let history = block_on(engine.messenger().get_history(chat, reader, page)).expect("history");
    let texts = history.into_iter().rev().map(|message| message.text).collect();
    engine.shutdown().expect("shutdown");
    (replayed, from_checkpoint, texts)
}

fn expected_texts() -> Vec<String> {
    (1..=MESSAGES).map(|index| format!("message {index}")).collect()
}

#[test]
fn a_clean_shutdown_leaves_nothing_to_replay() {
    let cases = [
        ("sync", Durability::Sync),
        // An hour: the shutdown's checkpoint waits for its ticket to be durable, which must not
        // mean waiting for the interval's sync.
        ("interval", Durability::Interval { interval_ms: 3_600_000 }),
    ];
    for (name, durability) in cases {
        let dir = temp_dir(&format!("clean-shutdown-{name}"));
        let (chat, reader) = write(&dir, durability, 1);
        let (replayed, from_checkpoint, texts) = reopen(&dir, chat, reader);
        assert!(from_checkpoint, "{name}: a clean shutdown must leave a checkpoint");
        assert_eq!(replayed, 0, "{name}: everything written is in the shutdown's checkpoint");
        assert_eq!(texts, expected_texts(), "{name}: the chat restored from the checkpoint");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn below_the_threshold_a_clean_shutdown_takes_no_checkpoint() {
    let dir = temp_dir("clean-shutdown-off");
    let (chat, reader) = write(&dir, Durability::Sync, u64::MAX);
    let (replayed, from_checkpoint, texts) = reopen(&dir, chat, reader);
    assert!(!from_checkpoint, "no checkpoint was asked for");
    // Two users, a chat and each message: at least a record each.
    assert!(replayed >= MESSAGES + 3, "the writes are replayed: {replayed} records");
    assert_eq!(texts, expected_texts(), "the chat replayed from the log");
    let _ = std::fs::remove_dir_all(&dir);
}
