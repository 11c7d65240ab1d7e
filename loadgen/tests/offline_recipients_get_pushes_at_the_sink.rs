//! End to end against a real `ferrogram serve` with push on: a dm run with half the users
//! offline and `--push-devices` makes the server push every message to an offline member, to
//! the push sink, exactly once (the sink's sum of the documents' `count` fields equals the
//! offline members the acknowledged sends reached), folded into fewer requests by coalescing.
//!
//! The server binary is the workspace's `target/debug/ferrogram`, as in
//! `verify_against_real_server.rs`; when it is missing the test says so and passes without
//! running.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod server_support;

use ferrogram_loadgen::options::{RunOptions, Scenario};
use ferrogram_loadgen::run::run;
use ferrogram_loadgen::runtime::Runtime;
use ferrogram_loadgen::sink::PushSink;
use ferrogram_loadgen::target::ferrogram::FerrogramTarget;
use server_support::{server_binary, Server, CODE};

/// Short, so the test does not wait two seconds for the last window; long enough that
/// messages of one chat at 300/s over 10 chats do get folded together.
const COALESCING_WINDOW_MS: u64 = 200;

// 20 users, 10 online, 10 private chats at 300 sends/s for 1.2 s: every message to an offline
// member arrives at the sink once (counts add up exactly), in fewer requests than messages.
#[test]
fn every_message_to_an_offline_member_is_pushed_once() {
    let Some(binary) = server_binary() else { return };
    let started = Instant::now();
    let runtime = Runtime::new(2).expect("threads start");
    let sink = PushSink::bind("127.0.0.1:0".parse().expect("an address")).expect("the sink listens");
    let sink_address = sink.local_addr().expect("its address");
    let counters = sink.counters();
    let handle = runtime.handle();
    runtime.handle().spawn(sink.serve(handle)).detach();
    let webhook = format!("http://{sink_address}/push");
    let server = Server::start(
        &binary,
        "push",
        &format!("\n[push]\ncoalescing_window_ms = {COALESCING_WINDOW_MS}\n"),
        &[("secret", "test-secret\n")],
        |directory| {
            vec![
                "--push-webhook".into(),
                webhook.into(),
                "--push-webhook-secret-file".into(),
                directory.join("secret").into(),
            ]
        },
    );

    let options = RunOptions {
        users: 20,
        online_users: 10,
        dm_chats: 10,
        rate_per_second: 300.0,
        warmup: Duration::from_millis(200),
        duration: Duration::from_secs(1),
        drain: Duration::from_secs(10),
        push_devices: true,
        ..RunOptions::small(Scenario::Dm)
    };
    let target = FerrogramTarget::new(server.address, CODE.into(), runtime.handle().spawner());
    let report = run(&runtime, Arc::new(target), &server.address.to_string(), &options).expect("the run works");
    assert!(report.errors_by_code.is_empty(), "{}", report.text());
    assert_eq!(report.setup.push_devices, 20);
    let due = report.offline_recipient_messages;
    assert!(due > 50, "seed 1 puts offline members in several chats: {}", report.text());

    let deadline = Instant::now() + Duration::from_secs(30);
    while counters.totals().messages < due && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    // A little longer: anything pushed twice would arrive now.
    std::thread::sleep(Duration::from_millis(3 * COALESCING_WINDOW_MS));
    let totals = counters.totals();
    eprintln!("{due} messages to offline members; the sink saw {totals:?}");
    assert_eq!(totals.messages, due, "messages pushed vs messages to offline members; sink: {totals:?}");
    assert!(totals.requests > 0 && totals.requests < due, "coalesced into fewer pushes: {totals:?}");
    assert_eq!(totals.bad_requests, 0);
    assert!(started.elapsed() < Duration::from_secs(120), "bounded in time");
}
