//! Proves rkyv-archived records come back from the real log readable in place: at replay
//! (straight out of the recovery mmap, no copy) every payload is aligned for rkyv and
//! validates to the value that was appended.

use std::sync::{Arc, Mutex};

use ferrogram::engine::engine::ReplayHook;
use ferrogram::engine::wal::archive::{access, to_payload};
use ferrogram::engine::{Engine, EngineConfig, RecordKind, VShard};

const KIND: RecordKind = RecordKind(11);

#[derive(rkyv::Archive, rkyv::Serialize, Debug, PartialEq)]
struct Event {
    sequence: u64,
    text: String,
}

/// Proves archived records validate in place, unchanged, when replayed from the log.
#[test]
fn archived_records_replay_in_place() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ferrogram-rkyv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let engine = Engine::open(EngineConfig::new(&dir)).expect("open");
    for sequence in 0..300u64 {
        // Text lengths vary so payloads end at every residue modulo 8.
        let event = Event { sequence, text: "x".repeat(sequence as usize % 37) };
        let payload = to_payload(&event).expect("archive").to_vec();
        futures_lite::future::block_on(engine.append(VShard::of(sequence), KIND, payload)).expect("append");
    }
    engine.shutdown().expect("shutdown");

    let seen: Arc<Mutex<Vec<(u64, usize)>>> = Arc::default();
    let hook: ReplayHook = {
        let seen = seen.clone();
        Arc::new(move |_, _, record| {
            let event = access::<ArchivedEvent>(record.payload).expect("payload aligned and valid in place");
            seen.lock().expect("lock").push((event.sequence.to_native(), event.text.len()));
        })
    };
    let engine = Engine::open_with_replay(EngineConfig::new(&dir), Some(hook)).expect("reopen");
    engine.shutdown().expect("shutdown");
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen, (0..300u64).map(|sequence| (sequence, sequence as usize % 37)).collect::<Vec<_>>());
    let _ = std::fs::remove_dir_all(&dir);
}
