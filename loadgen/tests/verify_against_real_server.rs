//! End to end against a real `ferrogram serve`: a mixed run (private chats, groups, a
//! channel, history pages) records its acknowledgements, `verify` finds every one of them in
//! history and in every member's updates exactly once, and it reports an acknowledgement the
//! server never stored as missing. The server runs with `loadgen/bench-server.toml`, so the
//! test also proves that file is accepted.
//!
//! The server binary is the workspace's `target/debug/ferrogram` (built by `cargo test
//! --workspace` for the root package's own tests). When it is missing the test says so and
//! passes without running: a package's tests cannot build another package's binary.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod server_support;

use ferrogram_loadgen::acks::AckFile;
use ferrogram_loadgen::options::{Mix, RunOptions, Scenario};
use ferrogram_loadgen::run::run;
use ferrogram_loadgen::runtime::Runtime;
use ferrogram_loadgen::target::ferrogram::FerrogramTarget;
use ferrogram_loadgen::verify::{self, FerrogramVerifyApi, Problem};
use server_support::{server_binary, Server, CODE};

// A short mixed run against the real server: every acknowledged message is found exactly
// once in history and in every member's updates; one invented acknowledgement is reported
// missing from history and from both members' updates, and verify fails.
#[test]
fn verify_finds_every_acknowledged_message_and_catches_a_missing_one() {
    let Some(binary) = server_binary() else { return };
    let started = Instant::now();
    let server = Server::start(&binary, "e2e", "", &[], |_| Vec::new());
    let acks_path = server.directory.join("acks.txt");
    let options = RunOptions {
        mix: Mix { dm: 4, group: 3, channel: 1, history: 2, media: 0 },
        users: 8,
        online_users: 6,
        dm_chats: 3,
        group_chats: 2,
        group_size: 4,
        channels: 1,
        posters: 1,
        subscribers: 3,
        history_chats: 1,
        prefill: 30,
        page: 10,
        rate_per_second: 60.0,
        warmup: Duration::from_millis(300),
        duration: Duration::from_secs(1),
        drain: Duration::from_secs(10),
        record_acks: Some(acks_path.clone()),
        ..RunOptions::small(Scenario::Mixed)
    };
    let runtime = Runtime::new(2).expect("threads start");
    let target = FerrogramTarget::new(server.address, CODE.into(), runtime.handle().spawner());
    let report = run(&runtime, Arc::new(target), &server.address.to_string(), &options).expect("the run works");
    drop(runtime);
    assert!(report.errors_by_code.is_empty(), "{}", report.text());
    assert!(report.measures["send_ack"].count > 0 && report.measures["history_page"].count > 0, "{}", report.text());
    assert!(report.deliveries.expected > 0, "{}", report.text());
    assert_eq!(report.deliveries.missing, 0, "{}", report.text());
    assert_eq!(report.deliveries.unexpected, 0, "{}", report.text());

    let file = AckFile::read(&acks_path).expect("the acks file parses");
    assert!(file.acks.len() >= 30 + 60, "pre-fill and load were recorded: {}", file.acks.len());
    let api = FerrogramVerifyApi::new(server.address, CODE.into());
    let verified = verify::check(&file, &api, 4).expect("verify reads the server");
    assert!(verified.passed(), "{}", verified.text());
    assert_eq!(verified.messages, file.acks.len());
    assert!(verified.boxes_read >= 6 && verified.sequences_read == 1, "{}", verified.text());

    // An acknowledgement the server never gave, in the first private chat.
    let mut forged = file.clone();
    let (&chat, record) = forged
        .chats
        .iter()
        .find(|(_, record)| record.kind == ferrogram_net::ChatKind::Private)
        .expect("a private chat");
    let members = record.members.clone();
    forged.acks.push(ferrogram_loadgen::acks::AckRecord {
        chat,
        id: ferrogram_net::MessageId(1_000_000),
        random_id: 42,
        sender: members[0],
    });
    let verified = verify::check(&forged, &api, 4).expect("verify reads the server");
    assert_eq!(verified.exit_code(), 1, "{}", verified.text());
    let missing_id = ferrogram_net::MessageId(1_000_000);
    assert!(verified.problems.contains(&Problem::MissingFromHistory { chat, id: missing_id, random_id: 42 }));
    for member in members {
        let problem = Problem::MissingFromUpdates { user: Some(member), chat, id: missing_id };
        assert!(verified.problems.contains(&problem), "{}", verified.text());
    }
    assert_eq!(verified.problems.len(), 3, "{}", verified.text());
    assert!(started.elapsed() < Duration::from_secs(120), "bounded in time");
}
