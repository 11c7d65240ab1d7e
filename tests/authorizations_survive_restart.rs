//! Proves login authorizations are durable on real shards and files: after a restart a live
//! authorization still checks with its secret hash, a revoked one never does again, and ids are
//! not given out twice — whether the engine recovers them from the log alone or from a
//! checkpoint and the log written after it.

use std::path::Path;

use ferrogram::engine::messaging::{AuthorizationId, MessagingError, Messenger, UserId, SECRET_HASH_BYTES};
use ferrogram::engine::{Engine, EngineConfig, EngineError, Lsn, ShardId};

mod in_process;
use in_process::{block_on, temp_dir};

fn open(dir: &Path) -> Engine {
    let mut config = EngineConfig::new(dir);
    config.shards = 2;
    config.log.segment_bytes = 4 << 20;
    Engine::open(config).expect("engine opens")
}

/// A secret hash as the gateway would store it (here simply a recognizable pattern).
fn secret(seed: u8) -> [u8; SECRET_HASH_BYTES] {
    let mut hash = [seed; SECRET_HASH_BYTES];
    hash[0] = 0x5a;
    hash
}

fn create(messenger: &Messenger, user: UserId, seed: u8, device: &str) -> AuthorizationId {
    block_on(messenger.create_authorization(user, secret(seed), device)).expect("create authorization")
}

fn check(messenger: &Messenger, id: AuthorizationId, seed: u8) -> Result<UserId, MessagingError> {
    block_on(messenger.check_authorization(id, secret(seed)))
}

fn listed(messenger: &Messenger, user: UserId) -> Vec<AuthorizationId> {
    block_on(messenger.list_authorizations(user)).expect("list").into_iter().map(|info| info.id).collect()
}

/// Checkpoints `shard` as it is now. The engine takes a checkpoint only of a shard's newest
/// LSN; a stale one is refused with the newest, which the second attempt then covers.
fn checkpoint(engine: &Engine, shard: ShardId) -> Lsn {
    let newest = match block_on(engine.checkpoint(shard, Vec::new(), Lsn(0))) {
        Err(EngineError::StaleCheckpoint { newest, .. }) => newest,
        other => panic!("a checkpoint of LSN 0 after writes must be refused as stale, got {other:?}"),
    };
    block_on(engine.checkpoint(shard, Vec::new(), newest)).expect("checkpoint").lsn
}

// Proves a clean restart that replays the log keeps a live authorization checking and a
// revoked one refused, and does not give out a revoked authorization's id again.
#[test]
fn revocations_survive_a_restart() {
    let dir = temp_dir("authorizations-restart");
    let engine = open(&dir);
    let messenger = engine.messenger();
    let alice = block_on(messenger.sign_up("+15550001001", "Alice", "")).expect("sign up");
    let phone = create(&messenger, alice, 1, "phone");
    let laptop = create(&messenger, alice, 2, "laptop");
    assert_eq!(check(&messenger, laptop, 2), Ok(alice));
    block_on(messenger.revoke_authorization(alice, laptop)).expect("revoke");
    assert_eq!(check(&messenger, laptop, 2), Err(MessagingError::Unauthorized));
    engine.shutdown().expect("shutdown");
    drop(engine);

    let engine = open(&dir);
    let messenger = engine.messenger();
    assert_eq!(check(&messenger, phone, 1), Ok(alice), "the live authorization checks after a restart");
    assert_eq!(check(&messenger, phone, 2), Err(MessagingError::Unauthorized), "with its own secret only");
    assert_eq!(check(&messenger, laptop, 2), Err(MessagingError::Unauthorized), "the revoked one stays revoked");
    assert_eq!(listed(&messenger, alice), [phone]);
    let tablet = create(&messenger, alice, 3, "tablet");
    assert!(tablet > laptop, "{tablet} is not the revoked {laptop} given out again");
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

// Proves authorizations are part of a checkpoint: after reopening from an explicit checkpoint
// (so the records before it are not replayed) and the records after it, those created before
// the checkpoint still check, and revocations on either side of it hold.
#[test]
fn authorizations_survive_a_checkpoint_and_the_log_after_it() {
    let dir = temp_dir("authorizations-checkpoint");
    let engine = open(&dir);
    let messenger = engine.messenger();
    let alice = block_on(messenger.sign_up("+15550002001", "Alice", "")).expect("sign up");
    let bob = block_on(messenger.sign_up("+15550002002", "Bob", "")).expect("sign up");
    let kept = create(&messenger, alice, 1, "kept through the checkpoint");
    let revoked_before = create(&messenger, alice, 2, "revoked before the checkpoint");
    let revoked_after = create(&messenger, alice, 3, "revoked after the checkpoint");
    let bobs = create(&messenger, bob, 4, "bob's");
    block_on(messenger.revoke_authorization(alice, revoked_before)).expect("revoke");

    let shard = engine.shard_of(alice.vshard());
    let covered = checkpoint(&engine, shard);
    let created_after = create(&messenger, alice, 5, "created after the checkpoint");
    block_on(messenger.revoke_authorization(alice, revoked_after)).expect("revoke");
    engine.shutdown().expect("shutdown");
    drop(engine);

    let engine = open(&dir);
    let messenger = engine.messenger();
    let (ticket, _) = engine.open_reports()[shard.index()].checkpoint.clone().expect("reopened from a checkpoint");
    assert_eq!(ticket.lsn, covered, "the shard restored the checkpoint taken above");
    assert_eq!(check(&messenger, kept, 1), Ok(alice), "restored from the checkpoint");
    assert_eq!(check(&messenger, bobs, 4), Ok(bob));
    assert_eq!(check(&messenger, created_after, 5), Ok(alice), "replayed from the log after it");
    for (id, seed) in [(revoked_before, 2), (revoked_after, 3)] {
        assert_eq!(check(&messenger, id, seed), Err(MessagingError::Unauthorized), "{id} stays revoked");
    }
    assert_eq!(listed(&messenger, alice), [kept, created_after]);
    let next = create(&messenger, alice, 6, "next");
    assert!(next > created_after && next > revoked_after, "{next} was not given out before");
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
