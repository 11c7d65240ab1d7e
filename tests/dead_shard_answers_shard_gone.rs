//! Proves a shard that dies (a panic on its thread) makes the handle answer `ShardGone`
//! instead of leaving callers waiting forever, while the other shard keeps serving.

use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use ferrogram::engine::shard::ShardContext;
use ferrogram::engine::{Engine, EngineConfig, EngineError, RecordKind, ShardId, VShard, VSHARD_COUNT};

/// Proves requests to a shard whose thread panicked are answered `ShardGone`, within a bound.
#[test]
fn requests_to_a_dead_shard_fail_instead_of_hanging() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ferrogram-dead-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = EngineConfig::new(&dir);
    config.shards = 2;
    config.log.segment_bytes = 4 << 20;
    let engine = Engine::open(config).expect("open");
    let vshard_of = |shard: ShardId| {
        (0..VSHARD_COUNT as u64).map(VShard::of).find(|&vshard| engine.shard_of(vshard) == shard).expect("owned")
    };
    let (dead, alive) = (vshard_of(ShardId(0)), vshard_of(ShardId(1)));
    // A host service that panics on shard 0 takes its thread down.
    engine
        .run_on_every_shard(|context: Rc<ShardContext>| async move {
            if context.id == ShardId(0) {
                panic!("deliberate panic on shard 0 (dead_shard_answers_shard_gone)");
            }
        })
        .expect("start the services");
    let (sender, results) = mpsc::channel();
    let handle = engine.clone();
    std::thread::spawn(move || {
        // Appends queued before the panic may still be served; keep asking (bounded) until the
        // shard is gone. Each answer must come: a hang fails the timeout below.
        let mut to_dead = Ok(None);
        for _ in 0..500 {
            match futures_lite::future::block_on(handle.append(dead, RecordKind(1), b"maybe".to_vec())) {
                Ok(ack) => to_dead = Ok(Some(ack)),
                Err(error) => {
                    to_dead = Err(error);
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let to_alive = futures_lite::future::block_on(handle.append(alive, RecordKind(1), b"kept".to_vec()));
        let _ = sender.send((to_dead, to_alive));
    });
    let (to_dead, to_alive) = results.recv_timeout(Duration::from_secs(30)).expect("both requests must be answered");
    assert!(matches!(to_dead, Err(EngineError::ShardGone)), "the dead shard answers ShardGone: {to_dead:?}");
    assert_eq!(to_alive.expect("the other shard still serves").shard, ShardId(1));
    let _ = engine.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
