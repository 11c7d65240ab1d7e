//! Proves a checkpoint whose state was damaged where rkyv cannot see it (a letter of a
//! message's text, still valid UTF-8) is not what the engine comes back with: a checkpoint is
//! restored while its checksum is verified on another thread, and one that fails is dropped
//! for the one before it, the log replayed from there.

use std::path::Path;

use ferrogram::engine::messaging::{ChatId, HistoryPage, MessageId, NewMessage, RandomId, UserId};
use ferrogram::engine::{Engine, EngineConfig, Lsn};

mod in_process;
use in_process::{block_on, temp_dir};

fn config(dir: &Path) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    config.shards = 1;
    config.log.segment_bytes = 4 << 20;
    // Every clean shutdown leaves a checkpoint.
    config.checkpoint_at_close_min_bytes = 1;
    config
}

fn send(engine: &Engine, chat: ChatId, sender: UserId, indexes: std::ops::RangeInclusive<u64>) {
    for index in indexes {
        let message = NewMessage { random_id: RandomId(index), text: format!("message {index}"), reply_to: None };
        block_on(engine.messenger().send(chat, sender, message)).expect("send");
    }
}

/// The chat's texts, oldest first.
fn texts(engine: &Engine, chat: ChatId, reader: UserId) -> Vec<String> {
    let page = HistoryPage { offset_id: MessageId(0), limit: 100, min_id: MessageId(0), max_id: MessageId(0) };
    let history = block_on(engine.messenger().get_history(chat, reader, page)).expect("history");
    history.into_iter().rev().map(|message| message.text).collect()
}

fn checkpoint_lsn(engine: &Engine) -> Lsn {
    engine.open_reports()[0].checkpoint.as_ref().expect("opened from a checkpoint").0.lsn
}

#[test]
fn a_checkpoint_that_fails_its_checksum_is_dropped_after_being_restored() {
    let dir = temp_dir("damaged-messaging-checkpoint");
    // The older checkpoint: messages 1 to 20.
    let engine = Engine::open(config(&dir)).expect("open");
    let messenger = engine.messenger();
    let alice = block_on(messenger.sign_up("+15550000001", "Alice", "")).expect("sign up");
    let bob = block_on(messenger.sign_up("+15550000002", "Bob", "")).expect("sign up");
    let chat = block_on(messenger.open_private(alice, bob)).expect("open private");
    send(&engine, chat, alice, 1..=20);
    engine.shutdown().expect("shutdown");
    drop(engine);
    // The newer: messages 1 to 40.
    let engine = Engine::open(config(&dir)).expect("reopen");
    let older = checkpoint_lsn(&engine);
    send(&engine, chat, alice, 21..=40);
    engine.shutdown().expect("shutdown");
    drop(engine);

    let checkpoints = dir.join("shard-0").join("checkpoints");
    let mut files: Vec<_> =
        std::fs::read_dir(&checkpoints).expect("checkpoints").map(|e| e.expect("entry").path()).collect();
    files.sort();
    let newer_path = files.last().expect("a checkpoint").clone();
    let mut bytes = std::fs::read(&newer_path).expect("read the newer checkpoint");
    let at =
        bytes.windows(10).position(|window| window == b"message 33").expect("the newer checkpoint holds message 33");
    assert_eq!(bytes.windows(10).filter(|window| *window == b"message 33").count(), 1, "one copy of the text");
    bytes[at + 1] = b'a';
    std::fs::write(&newer_path, &bytes).expect("damage the newer checkpoint");

    let engine = Engine::open(config(&dir)).expect("opens despite the damaged checkpoint");
    assert_eq!(checkpoint_lsn(&engine), older, "restored from the older checkpoint");
    assert_eq!(engine.open_reports()[0].scan.records, 40, "and the 20 sends after it replayed, two records each");
    let expected: Vec<String> = (1..=40).map(|index| format!("message {index}")).collect();
    assert_eq!(texts(&engine, chat, bob), expected, "the damaged text must not come back");
    engine.shutdown().expect("shutdown");
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}
