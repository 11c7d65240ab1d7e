//! End to end against a real redis-server: a one-second dm run at 300 sends/s through the
//! Redis adapter has every send acknowledged and every message delivered to the other member,
//! and history pages read back through the adapter hold the messages sent. Proves the function
//! library loads, the pipelined command connections match replies to requests, and Pub/Sub
//! deliveries carry the stamp loadgen measures from.
//!
//! redis-server (7 or later) must be on PATH; without it the test says so and passes without
//! running (CI installs nothing for it).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferrogram_loadgen::options::{RunOptions, Scenario};
use ferrogram_loadgen::run::run;
use ferrogram_loadgen::runtime::Runtime;
use ferrogram_loadgen::target::redis::RedisTarget;
use ferrogram_loadgen::target::{ChatSpec, MessageId, Target, UserSpec};

/// A redis-server child on a free loopback port with its own directory, AOF on with
/// `appendfsync always` (the durable tier); killed when dropped.
struct Redis {
    child: Child,
    address: SocketAddr,
    directory: PathBuf,
}

impl Redis {
    fn start() -> Option<Redis> {
        let found = Command::new("redis-server").arg("--version").stdout(Stdio::null()).status();
        if !found.is_ok_and(|status| status.success()) {
            eprintln!("redis-server is not on PATH: skipping the Redis end-to-end test (apt-get install redis-server)");
            return None;
        }
        let port =
            TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a free port").port();
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_nanos());
        let directory =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("loadgen-redis-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&directory).expect("a test directory");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "yes"])
            .args(["--appendfsync", "always", "--daemonize", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(&directory)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server starts");
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let redis = Redis { child, address, directory };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(address).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen on {address} within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(redis)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

#[test]
fn a_dm_run_through_redis_is_acknowledged_delivered_and_readable() {
    let Some(redis) = Redis::start() else { return };
    let started = Instant::now();
    let runtime = Runtime::new(2).expect("threads start");
    let target = Arc::new(
        runtime.block_on(RedisTarget::connect(redis.address, 20, runtime.handle().spawner())).expect("connects"),
    );

    let options = RunOptions {
        users: 20,
        online_users: 20,
        dm_chats: 10,
        rate_per_second: 300.0,
        duration: Duration::from_secs(1),
        drain: Duration::from_secs(5),
        ..RunOptions::small(Scenario::Dm)
    };
    let report = run(&runtime, target.clone(), "redis", &options).expect("the run works");
    let ack = report.measures["send_ack"];
    assert_eq!(ack.count, 300, "{}", report.text());
    assert_eq!(report.load.failed, 0, "{}", report.text());
    assert!(report.errors_by_code.is_empty(), "{}", report.text());
    assert_eq!(
        (report.deliveries.expected, report.deliveries.received, report.deliveries.missing),
        (300, 300, 0),
        "{}",
        report.text()
    );
    assert_eq!(report.deliveries.unexpected, 0, "{}", report.text());
    assert_eq!(report.measures["delivery"].count, 300);

    // History through the adapter: a fresh pair, 30 messages, then pages below offsets. The
    // run's users already exist, so provisioning them again answers the same ids.
    let history = runtime.block_on(async {
        let alice = UserSpec { phone: options.phone(0), first_name: "alice".into(), push_device: false };
        let bob = UserSpec { phone: "+19998880001".into(), first_name: "bob".into(), push_device: false };
        let alice = target.provision(&alice, true).await.expect("alice").online.expect("online").0;
        let bob = target.provision(&bob, false).await.expect("bob").user;
        let chat = target.create_chat(&alice, &ChatSpec::Private { peer: bob }).await.expect("a chat");
        let again = target.create_chat(&alice, &ChatSpec::Private { peer: bob }).await.expect("the same chat");
        assert_eq!(chat, again, "a pair has one private chat");
        let messages: Vec<(u64, String)> = (0..30).map(|index| (1_000 + index, format!("m{index}"))).collect();
        let acks = target.send_batch(&alice, chat, messages).await;
        let ids: Vec<u64> = acks.into_iter().map(|ack| ack.expect("acknowledged").id.0).collect();
        assert_eq!(ids, (1..=30).collect::<Vec<_>>(), "dense ids from 1");
        let duplicate = target.send(&alice, chat, 1_000, "m0".into()).await.expect("answered");
        assert!(duplicate.duplicate && duplicate.id == MessageId(1), "a repeated random_id is answered, not stored");
        let pages = (
            target.history(&alice, chat, MessageId(0), 20).await.expect("newest page"),
            target.history(&alice, chat, MessageId(11), 20).await.expect("a page below 11"),
            target.history(&alice, chat, MessageId(1), 20).await.expect("nothing below 1"),
        );
        let eve = UserSpec { phone: "+19998880002".into(), first_name: "eve".into(), push_device: false };
        let stranger = target.provision(&eve, true).await.expect("eve").online.expect("online").0;
        let refused = target.history(&stranger, chat, MessageId(0), 20).await.expect_err("not a member");
        target.disconnect(&alice);
        target.disconnect(&stranger);
        (pages, refused.code)
    });
    assert_eq!(history, ((20, 10, 0), "PERMISSION_DENIED"));
    assert!(started.elapsed() < Duration::from_secs(30), "bounded in time");
}
