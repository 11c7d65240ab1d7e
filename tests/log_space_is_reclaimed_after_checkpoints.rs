//! Proves a server's log does not grow without bound: once a checkpoint of the messaging
//! state covers old segments they are reused, the number of segment files stays small while
//! many times their size is written, and a restart still finds every message.

use std::path::Path;
use std::time::{Duration, Instant};

use ferrogram::engine::messaging::{HistoryPage, MessageId, NewMessage, RandomId};
use ferrogram::engine::{Engine, EngineConfig};

mod in_process;
use in_process::{block_on, temp_dir};

const SEGMENT_BYTES: u64 = 2 << 20;

fn open(dir: &Path, retain_log: bool) -> Engine {
    let mut config = EngineConfig::new(dir);
    config.shards = 1;
    config.log.segment_bytes = SEGMENT_BYTES;
    config.log.batch_bytes_max = 256 << 10;
    config.checkpoint_every_bytes = 1 << 20;
    config.retain_log = retain_log;
    Engine::open(config).expect("engine opens")
}

/// The number of segment files of shard 0 and the highest segment number among them. A
/// reused segment is renamed to the next number, so numbers run ahead of files.
fn segments(dir: &Path) -> (u64, u64) {
    let Ok(entries) = std::fs::read_dir(dir.join("shard-0").join("wal")) else { return (0, 0) };
    let numbers: Vec<u64> =
        entries.filter_map(|entry| entry.ok()?.file_name().to_str()?.strip_suffix(".seg")?.parse().ok()).collect();
    (numbers.len() as u64, numbers.iter().copied().max().unwrap_or(0))
}

/// Writes about `bytes` of messages into one private chat; returns how many were sent.
fn fill(engine: &Engine, bytes: usize, first_random_id: u64) -> u64 {
    let messenger = engine.messenger();
    let alice = block_on(messenger.lookup_phone("+15550002001")).expect("lookup").expect("alice");
    let bob = block_on(messenger.lookup_phone("+15550002002")).expect("lookup").expect("bob");
    let chat = block_on(messenger.open_private(alice, bob)).expect("open");
    let text = "x".repeat(1000);
    let count = (bytes / 1000) as u64;
    // Pipelined in windows, so the test writes its megabytes quickly.
    for window in (0..count).collect::<Vec<_>>().chunks(256) {
        let sends: Vec<_> = window
            .iter()
            .map(|index| {
                let message =
                    NewMessage { random_id: RandomId(first_random_id + index), text: text.clone(), reply_to: None };
                messenger.send(chat, alice, message)
            })
            .collect();
        for send in sends {
            block_on(send).expect("send");
        }
    }
    count
}

// With reuse on, segments covered by checkpoints are renamed for reuse, so segment numbers run
// well ahead of the files on disk; with `retain_log` every segment stays; and after a restart
// every message is readable.
#[test]
fn segments_are_reused_once_checkpoints_cover_them() {
    let dir = temp_dir("log-reclaim");
    let engine = open(&dir, false);
    let messenger = engine.messenger();
    block_on(messenger.sign_up("+15550002001", "Alice", "")).expect("sign up");
    block_on(messenger.sign_up("+15550002002", "Bob", "")).expect("sign up");
    let written = 8 * SEGMENT_BYTES as usize;
    let sent = fill(&engine, written, 1);
    // Checkpoints and segment preparation run in the background: give them a moment.
    let deadline = Instant::now() + Duration::from_secs(20);
    while segments(&dir).1 < segments(&dir).0 + 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (files, highest) = segments(&dir);
    assert!(highest >= files + 3, "{files} segment files, the newest numbered {highest}: old segments were not reused");
    engine.shutdown().expect("shutdown");

    let engine = open(&dir, false);
    let messenger = engine.messenger();
    let alice = block_on(messenger.lookup_phone("+15550002001")).expect("lookup").expect("alice");
    let bob = block_on(messenger.lookup_phone("+15550002002")).expect("lookup").expect("bob");
    let chat = block_on(messenger.open_private(alice, bob)).expect("open");
    let mut offset = MessageId(0);
    let mut seen = 0;
    loop {
        let page = HistoryPage { offset_id: offset, limit: 100, min_id: MessageId(0), max_id: MessageId(0) };
        let messages = block_on(messenger.get_history(chat, alice, page)).expect("history");
        let Some(last) = messages.last() else { break };
        offset = last.id;
        seen += messages.len() as u64;
    }
    assert_eq!(seen, sent, "every message is back after the restart");
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);

    // The same load with the log retained keeps a segment file per segment written.
    let dir = temp_dir("log-retained");
    let engine = open(&dir, true);
    let messenger = engine.messenger();
    block_on(messenger.sign_up("+15550002001", "Alice", "")).expect("sign up");
    block_on(messenger.sign_up("+15550002002", "Bob", "")).expect("sign up");
    fill(&engine, written, 1);
    let (files, highest) = segments(&dir);
    assert_eq!(files, highest, "with the log retained every segment written stays");
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
