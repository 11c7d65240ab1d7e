//! Proves, on real shards, that a session connected under a login authorization ends with
//! `LiveEvent::Revoked` when that authorization is revoked — after the updates already queued
//! for it — while the user's other sessions go on receiving updates.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrogram_engine::messaging::{LiveEvent, MessagingError, NewMessage, RandomId, UserId, SECRET_HASH_BYTES};
use ferrogram_engine::{Engine, EngineConfig, ShardId};

const WAIT: Duration = Duration::from_secs(5);

fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    futures_lite::future::block_on(future)
}

fn temp_dir(name: &str) -> PathBuf {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Proves revoking an authorization ends exactly the sessions connected under it, on another
/// shard than the user's too, with `Revoked` as their last event, and that it cannot connect
/// again.
#[test]
fn revoking_an_authorization_ends_its_live_sessions() {
    let dir = temp_dir("revoked-sessions");
    let mut config = EngineConfig::new(&dir);
    config.shards = 2;
    config.log.segment_bytes = 4 << 20;
    let engine = Engine::open(config).expect("engine opens");
    let messenger = engine.messenger();
    let alice = block_on(messenger.sign_up("+15550003001", "Alice", "")).expect("sign up");
    let bob = block_on(messenger.sign_up("+15550003002", "Bob", "")).expect("sign up");
    let phone = block_on(messenger.create_authorization(alice, [1; SECRET_HASH_BYTES], "phone")).expect("create");
    let laptop = block_on(messenger.create_authorization(alice, [2; SECRET_HASH_BYTES], "laptop")).expect("create");
    let bobs = block_on(messenger.create_authorization(bob, [3; SECRET_HASH_BYTES], "bob's")).expect("create");

    let home = engine.shard_of(alice.vshard());
    let away = ShardId((home.0 + 1) % 2);
    let mut on_phone = block_on(messenger.connect_authorized(alice, phone, away)).expect("connect");
    let mut on_laptop = block_on(messenger.connect_authorized(alice, laptop, home)).expect("connect");
    let refused = block_on(messenger.connect_authorized(alice, bobs, home)).map(|connected| connected.session);
    assert_eq!(refused, Err(MessagingError::Unauthorized), "another user's authorization does not connect");

    let chat = block_on(messenger.open_private(bob, alice)).expect("open");
    let send = |random_id: u64| {
        let message =
            NewMessage { random_id: RandomId(random_id), text: format!("message {random_id}"), reply_to: None };
        block_on(messenger.send(chat, bob, message)).expect("send")
    };
    send(1);
    block_on(messenger.revoke_authorization(alice, phone)).expect("revoke");
    send(2);

    // The revoked session: the update sent before the revocation, then `Revoked`, then nothing.
    assert!(matches!(on_phone.events.next_timeout(WAIT), Some(LiveEvent::Box { .. })), "the update queued before");
    assert_eq!(on_phone.events.next_timeout(WAIT), Some(LiveEvent::Revoked));
    assert_eq!(on_phone.events.next_timeout(WAIT), None, "the stream ended");
    // The other session sees both messages.
    for _ in 0..2 {
        assert!(matches!(on_laptop.events.next_timeout(WAIT), Some(LiveEvent::Box { .. })));
    }
    assert_eq!(
        block_on(messenger.check_authorization(phone, [1; SECRET_HASH_BYTES])),
        Err(MessagingError::Unauthorized)
    );
    let again = block_on(messenger.connect_authorized(alice, phone, away)).map(|connected| connected.session);
    assert_eq!(again, Err(MessagingError::Unauthorized), "a revoked authorization cannot connect again");
    assert_eq!(block_on(messenger.check_authorization(laptop, [2; SECRET_HASH_BYTES])), Ok(alice));
    let _: UserId = block_on(messenger.check_authorization(bobs, [3; SECRET_HASH_BYTES])).expect("bob's still checks");
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
