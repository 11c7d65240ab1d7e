//! Proves the embedding API end to end on real files: appends routed by vshard to their
//! shard, read back with DMA reads (the glommio probe workaround of NOTES-runtime is what
//! makes those reads work), a checkpoint that bounds replay on reopen, and a data directory
//! that refuses to open with a different shard count.

use std::path::Path;
use std::sync::{Arc, Mutex};

use ferrogram::engine::engine::ReplayHook;
use ferrogram::engine::{Engine, EngineConfig, EngineError, Lsn, RecordKind, ShardId, VShard};

mod in_process;
use in_process::{block_on, temp_dir};

const KIND: RecordKind = RecordKind(7);

/// A record seen by the replay hook: its shard, LSN and payload.
type Replayed = (ShardId, Lsn, Vec<u8>);

fn config(dir: &Path, shards: usize) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    config.shards = shards;
    config.log.segment_bytes = 4 << 20;
    config
}

/// Proves appends read back, a checkpoint bounds replay, locks and shard counts are enforced.
#[test]
fn appends_read_back_checkpoint_and_reopen() {
    let dir = temp_dir("reopen");
    let engine = Engine::open(config(&dir, 2)).expect("open");
    let mut written = Vec::new();
    for index in 0..200u64 {
        let vshard = VShard::of(index * 7);
        let payload = format!("record {index} on {vshard}").into_bytes();
        let ack = block_on(engine.append(vshard, KIND, payload.clone())).expect("append");
        assert_eq!(ack.shard, engine.shard_of(vshard));
        written.push((ack.shard, ack.first_lsn, ack.positions[0], payload));
    }
    for (shard, lsn, position, payload) in &written {
        let record = block_on(engine.read(*shard, *position)).expect("read back");
        assert_eq!((record.lsn, &record.payload, record.kind), (*lsn, payload, KIND));
    }
    // Checkpoint shard 0 halfway: replay must start after it. A state that misses the newest
    // record is refused: replay would skip that record.
    let newest =
        written.iter().filter(|(shard, ..)| *shard == ShardId(0)).map(|(_, lsn, ..)| *lsn).max().expect("some");
    match block_on(engine.checkpoint(ShardId(0), b"stale".to_vec(), Lsn(newest.0 - 1))) {
        Err(EngineError::StaleCheckpoint { covers, newest: at }) => assert_eq!((covers.next(), at), (newest, newest)),
        other => panic!("a checkpoint that misses a record must be refused, got {other:?}"),
    }
    let ticket = block_on(engine.checkpoint(ShardId(0), b"state of shard 0".to_vec(), newest)).expect("checkpoint");
    let after = block_on(engine.append_all(
        ShardId(0),
        vec![
            (KIND, VShard::of(0), b"after checkpoint a".to_vec()),
            (KIND, VShard::of(2), b"after checkpoint b".to_vec()),
        ],
    ))
    .expect("append after checkpoint");
    assert_eq!(after.first_lsn, ticket.lsn.next(), "a request's records take dense LSNs right after the checkpoint");
    // A second engine on the same directory is refused while the first runs.
    match Engine::open(config(&dir, 2)) {
        Err(EngineError::Locked(locked)) => assert_eq!(locked, dir),
        other => panic!("a second engine on a locked data directory must be refused, got {other:?}"),
    }
    engine.shutdown().expect("shutdown");
    drop(engine);

    let replayed: Arc<Mutex<Vec<Replayed>>> = Arc::default();
    let hook: ReplayHook = {
        let replayed = replayed.clone();
        Arc::new(move |shard, _, record| {
            replayed.lock().expect("lock").push((shard, record.lsn, record.payload.to_vec()));
        })
    };
    let engine = Engine::open_with_replay(config(&dir, 2), Some(hook)).expect("reopen");
    let reports = engine.open_reports();
    let (checkpoint, state) = reports[0].checkpoint.clone().expect("shard 0 reopened from its checkpoint");
    assert_eq!((checkpoint, state.as_slice()), (ticket, &b"state of shard 0"[..]));
    let replayed = replayed.lock().expect("lock").clone();
    let shard0: Vec<_> = replayed.iter().filter(|(shard, _, _)| *shard == ShardId(0)).collect();
    assert_eq!(shard0.len(), 2, "only the records after the checkpoint are replayed on shard 0");
    assert_eq!(shard0[0].2, b"after checkpoint a");
    let shard1 = written.iter().filter(|(shard, ..)| *shard == ShardId(1)).count();
    assert_eq!(replayed.len() - 2, shard1, "shard 1 has no checkpoint and replays everything");
    // Records from before the restart are still readable through DMA reads.
    for (shard, lsn, position, payload) in written.iter().take(20) {
        let record = block_on(engine.read(*shard, *position)).expect("read after reopen");
        assert_eq!((record.lsn, &record.payload), (*lsn, payload));
    }
    // And appends continue with the next LSN.
    let next = block_on(engine.append(VShard::of(1), KIND, b"after reopen".to_vec())).expect("append after reopen");
    assert_eq!(next.first_lsn, reports[1].scan.next_lsn);
    engine.shutdown().expect("shutdown");
    drop(engine);

    match Engine::open(config(&dir, 1)) {
        Err(EngineError::VShardTable(error)) => assert!(error.to_string().contains("created with 2 shards"), "{error}"),
        other => panic!("opening with another shard count must be refused, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Proves a checkpoint whose state no longer verifies is passed over for the one before it,
/// replay then starting after that older one, and that a file whose header is cut short is
/// ignored: only the newest checkpoint is read whole, so these checks are what keep a damaged
/// one from being used.
#[test]
fn a_damaged_newest_checkpoint_falls_back_to_the_one_before() {
    let dir = temp_dir("damaged-checkpoint");
    let engine = Engine::open(config(&dir, 1)).expect("open");
    let append = |count: u32, engine: &Engine| {
        let mut last = Lsn(0);
        for index in 0..count {
            last =
                block_on(engine.append(VShard::of(0), KIND, index.to_le_bytes().to_vec())).expect("append").first_lsn;
        }
        last
    };
    let older_at = append(10, &engine);
    let older = block_on(engine.checkpoint(ShardId(0), b"older".to_vec(), older_at)).expect("older checkpoint");
    let newer_at = append(10, &engine);
    let newer = block_on(engine.checkpoint(ShardId(0), b"newer".to_vec(), newer_at)).expect("newer checkpoint");
    append(5, &engine);
    engine.shutdown().expect("shutdown");
    drop(engine);

    let checkpoints = dir.join("shard-0").join("checkpoints");
    let path_of = |lsn: Lsn| checkpoints.join(format!("checkpoint-{:020}.ckpt", lsn.0));
    // One bit of the newer checkpoint's state: the first byte of the host's part, after the
    // file's header of 64 bytes and the state's own of 32 (the file is padded past the state).
    let newer_path = path_of(newer.lsn);
    let mut bytes = std::fs::read(&newer_path).expect("the newer checkpoint is on disk");
    assert_eq!(&bytes[96..101], b"newer", "the layout this test assumes");
    bytes[96] ^= 0x01;
    std::fs::write(&newer_path, &bytes).expect("damage");
    // And a file named as a later checkpoint that holds half a header.
    std::fs::write(path_of(Lsn(newer.lsn.0 + 3)), &bytes[..32]).expect("cut short");

    let replayed: Arc<Mutex<Vec<Lsn>>> = Arc::default();
    let hook: ReplayHook = {
        let replayed = replayed.clone();
        Arc::new(move |_, _, record| replayed.lock().expect("lock").push(record.lsn))
    };
    let engine = Engine::open_with_replay(config(&dir, 1), Some(hook)).expect("reopen");
    let (ticket, state) = engine.open_reports()[0].checkpoint.clone().expect("reopened from a checkpoint");
    assert_eq!((ticket, state.as_slice()), (older, &b"older"[..]), "the damaged newer checkpoint was used");
    let replayed = replayed.lock().expect("lock").clone();
    let expected: Vec<Lsn> = (older.lsn.0 + 1..older.lsn.0 + 16).map(Lsn).collect();
    assert_eq!(replayed, expected, "replay must resume right after the older checkpoint");
    engine.shutdown().expect("shutdown");
    drop(engine);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Proves a full shard queue answers `Overloaded` at once and a dropped future still appends.
#[test]
fn full_queue_answers_overloaded_and_dropped_futures_still_append() {
    let dir = temp_dir("overload");
    let mut config = config(&dir, 1);
    config.shard_queue_depth = 4;
    let engine = Engine::open(config).expect("open");
    // Queue far more than the queue holds without awaiting: some must be refused at once.
    let futures: Vec<_> =
        (0..10_000u32).map(|i| engine.append(VShard::of(0), KIND, i.to_le_bytes().to_vec())).collect();
    let results: Vec<_> = futures.into_iter().map(block_on).collect();
    let overloaded = results.iter().filter(|result| matches!(result, Err(EngineError::Overloaded))).count();
    let accepted = results.iter().filter(|result| result.is_ok()).count();
    assert!(overloaded > 0, "a queue of 4 must overflow under 10,000 unawaited requests");
    assert_eq!(
        overloaded + accepted,
        results.len(),
        "only Overloaded may fail: {:?}",
        results.iter().find(|r| r.is_err())
    );
    // A request whose future is dropped unpolled is still performed.
    drop(engine.append(VShard::of(0), KIND, b"dropped".to_vec()));
    engine.shutdown().expect("shutdown");
    let mut last = Vec::new();
    ferrogram::engine::wal::driver::scan_offline(&dir.join("shard-0"), |_, record| last = record.payload.to_vec())
        .expect("scan");
    assert_eq!(last, b"dropped");
    let _ = std::fs::remove_dir_all(&dir);
}
