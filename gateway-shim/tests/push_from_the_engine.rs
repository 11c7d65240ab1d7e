// Push end to end inside one process: the engine's durable outboxes, the feeder and the
// dispatcher of `push_host`, and a local relay receiver. A message to an offline user with a
// device becomes one signed push with the right badge; previews off hide the text; muted chats
// and online users get none; a channel post makes one job that reaches each offline subscriber
// once; a job the relay could not take before a stop is delivered after the restart.

mod push_support;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine::messaging::{
    ChatId, DeviceKind, Messenger, NewMessage, NotifySettings, PushDevice, RandomId, UnixMs, UserId,
};
use engine::{Durability, Engine, EngineConfig, EngineHooks, ShardId};
use ferrogram_gateway_shim::push_host::{push_intake, PushHost};
use futures_lite::future::block_on;
use push_support::*;

fn temp_dir(name: &str) -> PathBuf {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The engine with its push hook, and the push host feeding `relay`.
fn start(dir: &Path, durability: Durability, relay: &str) -> (Engine, PushHost) {
    let mut config = EngineConfig::new(dir);
    config.shards = 2;
    config.log.durability = durability;
    let (hook, intake) = push_intake();
    let engine = Engine::open_with_hooks(config, EngineHooks { push: Some(hook), ..EngineHooks::default() })
        .expect("the engine opens");
    let host = PushHost::start(engine.messenger(), intake, push_support::config(relay)).expect("push starts");
    (engine, host)
}

fn sign_up(messenger: &Messenger, index: usize) -> UserId {
    block_on(messenger.sign_up(&format!("+1555100{index:04}"), &format!("User{index}"), "")).expect("sign up")
}

fn webhook_device(token: &str) -> PushDevice {
    PushDevice { kind: DeviceKind::Webhook, token: token.into(), app_sandbox: false, no_muted: false }
}

fn send(messenger: &Messenger, chat: ChatId, sender: UserId, random_id: u64, text: &str) -> u64 {
    let message = NewMessage { random_id: RandomId(random_id), text: text.into(), reply_to: None };
    block_on(messenger.send(chat, sender, message)).expect("send").id.0
}

/// Jobs left in every shard's outbox.
fn outbox_len(engine: &Engine) -> usize {
    let messenger = engine.messenger();
    (0..engine.shard_count())
        .map(|index| block_on(messenger.pending_pushes(ShardId(index as u16), 0, 1000)).expect("pending").len())
        .sum()
}

/// Proves a private message to an offline user with a device is pushed once with the badge,
/// sender and text; previews off leave the text out; a muted chat and an online recipient get
/// no push; and every finished job leaves the outbox.
#[test]
fn offline_users_are_pushed_through_the_engine() {
    let receiver = Receiver::start(always_ok());
    let dir = temp_dir("push-engine-private");
    let (engine, host) = start(&dir, Durability::Sync, &receiver.url("/relay"));
    let messenger = engine.messenger();
    let (ann, bob) = (sign_up(&messenger, 1), sign_up(&messenger, 2));
    let chat = block_on(messenger.open_private(ann, bob)).expect("private chat");
    block_on(messenger.register_device(bob, webhook_device("bob-phone"))).expect("register");

    let first = send(&messenger, chat, ann, 1, "lunch?");
    wait_until(Duration::from_secs(20), "the first push", || receiver.count() == 1);
    let push = receiver.requests()[0].json();
    assert_eq!(push["token"], "bob-phone");
    assert_eq!(push["message"], first.to_string());
    assert_eq!((push["badge"].as_u64(), push["count"].as_u64()), (Some(1), Some(1)));
    assert_eq!((push["title"].as_str(), push["text"].as_str()), (Some("User1"), Some("lunch?")));
    wait_until(Duration::from_secs(20), "the finished job to leave the outbox", || outbox_len(&engine) == 0);

    // Previews off: no sender, no text.
    let hidden = NotifySettings { mute_until: UnixMs(0), show_previews: false };
    block_on(messenger.set_notify_settings(bob, chat, hidden)).expect("settings");
    send(&messenger, chat, ann, 2, "the secret plan");
    wait_until(Duration::from_secs(20), "the second push", || receiver.count() == 2);
    let push = receiver.requests()[1].json();
    assert_eq!(push["badge"].as_u64(), Some(2), "two unread messages");
    assert!(push.get("text").is_none() && push.get("title").is_none(), "previews are off: {push}");
    assert!(!push.to_string().contains("secret plan"));

    // Muted: no job at all. Online: none either. The next push is for the message after both.
    let muted = NotifySettings { mute_until: UnixMs(u64::MAX), show_previews: true };
    block_on(messenger.set_notify_settings(bob, chat, muted)).expect("mute");
    send(&messenger, chat, ann, 3, "while muted");
    block_on(messenger.set_notify_settings(bob, chat, NotifySettings::DEFAULT)).expect("unmute");
    let online = block_on(messenger.connect(bob, ShardId(0))).expect("bob comes online");
    send(&messenger, chat, ann, 4, "while online");
    block_on(messenger.disconnect(online.session)).expect("bob goes offline");
    let last = send(&messenger, chat, ann, 5, "back offline");
    wait_until(Duration::from_secs(20), "the third push", || receiver.count() >= 3);
    wait_until(Duration::from_secs(20), "the outbox to empty", || outbox_len(&engine) == 0);
    let requests = receiver.requests();
    assert_eq!(requests.len(), 3, "no push for the muted or online messages");
    assert_eq!(requests[2].json()["message"], last.to_string());
    assert_eq!(requests[2].json()["badge"].as_u64(), Some(5));

    host.shutdown();
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Proves a post to a channel with 10,000 offline subscribers queues one job and pushes each
/// subscriber once, and the job leaves the outbox when done.
#[test]
fn a_channel_post_reaches_each_offline_subscriber_once() {
    const SUBSCRIBERS: usize = 10_000;
    let receiver = Receiver::start(always_ok());
    let dir = temp_dir("push-engine-channel");
    // The setup is 30,000 writes; group commit every 2 ms keeps it quick.
    let (engine, host) = start(&dir, Durability::Interval { interval_ms: 2 }, &receiver.url("/relay"));
    let messenger = engine.messenger();
    let admin = sign_up(&messenger, 0);
    let channel = block_on(messenger.create_channel(admin, "News")).expect("channel");
    for index in 1..=SUBSCRIBERS {
        let user = sign_up(&messenger, index);
        block_on(messenger.join(channel, user)).expect("join");
        block_on(messenger.register_device(user, webhook_device(&format!("device-{user}")))).expect("register");
    }
    block_on(messenger.register_device(admin, webhook_device("admin-device"))).expect("register");

    send(&messenger, channel, admin, 1, "breaking news");
    wait_until(Duration::from_secs(300), "a push per subscriber", || receiver.count() >= SUBSCRIBERS);
    wait_until(Duration::from_secs(60), "the outbox to empty", || outbox_len(&engine) == 0);
    let metrics = host.dispatcher_metrics().expect("dispatcher metrics");
    assert_eq!(metrics.jobs_accepted.load(Ordering::Relaxed), 1, "one job for the whole channel");

    let mut per_token: HashMap<String, usize> = HashMap::new();
    for request in receiver.requests() {
        let json = request.json();
        assert_eq!(json["title"], "News");
        assert_eq!(json["text"], "breaking news");
        *per_token.entry(json["token"].as_str().expect("token").to_owned()).or_default() += 1;
    }
    assert_eq!(per_token.len(), SUBSCRIBERS, "every subscriber");
    assert!(per_token.values().all(|&count| count == 1), "each once");
    assert!(!per_token.contains_key("admin-device"), "the poster is not notified");

    host.shutdown();
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Proves a job the relay could not take before the server stopped stays in the outbox and
/// is delivered once after the restart.
#[test]
fn a_job_left_by_a_stopped_server_is_delivered_after_restart() {
    let free = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let address = free.local_addr().expect("address");
    drop(free);
    let relay = format!("http://{address}/relay");
    let dir = temp_dir("push-engine-restart");

    let (engine, host) = start(&dir, Durability::Sync, &relay);
    let messenger = engine.messenger();
    let (ann, bob) = (sign_up(&messenger, 1), sign_up(&messenger, 2));
    let chat = block_on(messenger.open_private(ann, bob)).expect("private chat");
    block_on(messenger.register_device(bob, webhook_device("bob-phone"))).expect("register");
    let message = send(&messenger, chat, ann, 1, "are you there?");
    let metrics = host.dispatcher_metrics().expect("metrics");
    wait_until(Duration::from_secs(20), "a failed attempt", || metrics.pushes_failed.load(Ordering::Relaxed) >= 1);
    host.shutdown();
    assert_eq!(outbox_len(&engine), 1, "the undelivered job is still in the outbox");
    engine.shutdown().expect("shutdown");

    let receiver = Receiver::on(TcpListener::bind(address).expect("rebind"), always_ok());
    let (engine, host) = start(&dir, Durability::Sync, &relay);
    wait_until(Duration::from_secs(20), "the push after the restart", || receiver.count() >= 1);
    wait_until(Duration::from_secs(20), "the outbox to empty", || outbox_len(&engine) == 0);
    assert_eq!(receiver.count(), 1, "delivered once");
    assert_eq!(receiver.requests()[0].json()["message"], message.to_string());

    host.shutdown();
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Proves a device whose token the relay reports gone (410) is unregistered in the engine,
/// while the user's other device keeps its registration and gets the push.
#[test]
fn a_token_reported_gone_is_unregistered() {
    let receiver = Receiver::start(std::sync::Arc::new(|request: &Request| {
        if request.json()["token"] == "old-phone" {
            (410, r#"{"reason":"Unregistered"}"#.into())
        } else {
            (200, "{}".into())
        }
    }));
    let dir = temp_dir("push-engine-gone");
    let (engine, host) = start(&dir, Durability::Sync, &receiver.url("/relay"));
    let messenger = engine.messenger();
    let (ann, bob) = (sign_up(&messenger, 1), sign_up(&messenger, 2));
    let chat = block_on(messenger.open_private(ann, bob)).expect("private chat");
    for token in ["old-phone", "new-phone"] {
        block_on(messenger.register_device(bob, webhook_device(token))).expect("register");
    }
    send(&messenger, chat, ann, 1, "ping");
    wait_until(Duration::from_secs(20), "the dead device to be removed", || {
        block_on(messenger.list_devices(bob)).expect("devices") == vec![webhook_device("new-phone")]
    });
    wait_until(Duration::from_secs(20), "the outbox to empty", || outbox_len(&engine) == 0);
    let tokens: Vec<String> =
        receiver.requests().iter().map(|r| r.json()["token"].as_str().unwrap().to_owned()).collect();
    assert!(tokens.contains(&"new-phone".to_owned()), "the live device got its push: {tokens:?}");
    assert_eq!(host.metrics().devices_removed.load(Ordering::Relaxed), 1);

    host.shutdown();
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Proves jobs the dispatcher refused for a full input channel are fed again by the next
/// sweep and each is delivered exactly once: 40 jobs wait in the outboxes (queued while no
/// dispatcher ran), then the start-up sweep meets an input channel with room for two.
#[test]
fn jobs_refused_by_a_full_dispatcher_are_delivered_once() {
    const RECIPIENTS: usize = 40;
    let receiver = Receiver::start(always_ok());
    let dir = temp_dir("push-engine-full");
    let open = || {
        let mut config = EngineConfig::new(&dir);
        config.shards = 2;
        let (hook, intake) = push_intake();
        let engine = Engine::open_with_hooks(config, EngineHooks { push: Some(hook), ..EngineHooks::default() })
            .expect("the engine opens");
        (engine, intake)
    };
    // No dispatcher: the jobs stay in the outboxes (the hook's channel has no reader).
    let (engine, intake) = open();
    drop(intake);
    let messenger = engine.messenger();
    let ann = sign_up(&messenger, 0);
    for index in 1..=RECIPIENTS {
        let user = sign_up(&messenger, index);
        block_on(messenger.register_device(user, webhook_device(&format!("device-{index}")))).expect("register");
        let chat = block_on(messenger.open_private(ann, user)).expect("chat");
        send(&messenger, chat, ann, index as u64, "hello");
    }
    wait_until(Duration::from_secs(30), "every job in an outbox", || outbox_len(&engine) == RECIPIENTS);
    engine.shutdown().expect("shutdown");

    let (engine, intake) = open();
    let push = ferrogram_gateway_shim::push::PushConfig {
        input_queue_max: 2,
        ..push_support::config(&receiver.url("/relay"))
    };
    let host = PushHost::start(engine.messenger(), intake, push).expect("push starts");
    wait_until(Duration::from_secs(60), "a push per recipient", || receiver.count() >= RECIPIENTS);
    wait_until(Duration::from_secs(30), "the outbox to empty", || outbox_len(&engine) == 0);
    let metrics = host.dispatcher_metrics().expect("metrics");
    assert!(metrics.input_full.load(Ordering::Relaxed) > 0, "the full channel was hit");
    let mut tokens: Vec<String> =
        receiver.requests().iter().map(|r| r.json()["token"].as_str().unwrap().to_owned()).collect();
    tokens.sort();
    tokens.dedup();
    assert_eq!((tokens.len(), receiver.count()), (RECIPIENTS, RECIPIENTS), "each once");

    host.shutdown();
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
