//! Under `interval` durability a sender's acknowledgement may precede the fdatasync (DESIGN
//! §4). The shard's watermark task used to wait only for the durable watermark once a fan-out
//! waited for it, so every other send's reply sat until the next interval sync. With an
//! interval of an hour, each send must still be answered at once, and a clean shutdown, which
//! waits for everything to be durable, syncs at once instead of waiting for the interval.

mod media_support;

use std::sync::mpsc;
use std::time::Duration;

use ferrogram_engine::messaging::{NewMessage, RandomId};
use ferrogram_engine::{Durability, Engine};
use media_support::*;

#[test]
fn sends_are_acknowledged_without_waiting_for_the_interval_sync() {
    let dir = temp_dir("interval-acks");
    let mut config = config(&dir, 1);
    config.log.durability = Durability::Interval { interval_ms: 3_600_000 };
    let engine = Engine::open(config).expect("engine opens");
    let messenger = engine.messenger();
    let alice = block_on(messenger.sign_up("+15550700001", "Alice", "")).expect("sign up");
    let bob = block_on(messenger.sign_up("+15550700002", "Bob", "")).expect("sign up");
    let chat = block_on(messenger.open_private(alice, bob)).expect("private chat");
    for random_id in 1..=10u64 {
        let (answered, answer) = mpsc::channel();
        let send = messenger.send(
            chat,
            alice,
            NewMessage { random_id: RandomId(random_id), text: "hi".into(), reply_to: None },
        );
        std::thread::spawn(move || {
            let _ = answered.send(block_on(send));
        });
        // An hour's interval: a reply held for the sync would not come for an hour.
        let ack = answer.recv_timeout(Duration::from_secs(30)).expect("the send is answered before the sync");
        assert_eq!(ack.expect("sent").id.0, random_id, "message ids are dense");
    }
    engine.shutdown().expect("shutdown");
}
