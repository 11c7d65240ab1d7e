//! `--push-devices` on the in-process fake target: every provisioned user, online or offline,
//! registers exactly the device its id names, and the run counts the offline members its
//! acknowledged sends reached exactly as the target saw them (what a server with push on
//! queues jobs for). Without the option nobody registers a device.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use ferrogram_loadgen::options::{RunOptions, Scenario};
use ferrogram_loadgen::run::run;
use ferrogram_loadgen::runtime::Runtime;
use ferrogram_loadgen::target::fake::{FakeBehaviour, FakeTarget};
use ferrogram_loadgen::target::{push_device_token, UserId};

/// 500 sends a second for 1 s into 10 private chats among 20 users, half of them offline.
fn options(push_devices: bool) -> RunOptions {
    RunOptions {
        users: 20,
        online_users: 10,
        dm_chats: 10,
        rate_per_second: 500.0,
        warmup: Duration::from_millis(200),
        duration: Duration::from_secs(1),
        drain: Duration::from_secs(5),
        push_devices,
        ..RunOptions::small(Scenario::Dm)
    }
}

#[test]
fn every_user_registers_its_device_and_offline_recipients_are_counted() {
    let runtime = Runtime::new(2).expect("threads start");
    let target = Arc::new(FakeTarget::new(FakeBehaviour::default()));
    let report = run(&runtime, target.clone(), "fake", &options(true)).expect("the run works");

    // The fake numbers users from 1 in the order it first sees them.
    for user in (1..=20).map(UserId) {
        assert_eq!(target.push_device(user), Some(push_device_token(user)), "user {user:?}");
    }
    assert_eq!(target.push_device(UserId(21)), None);
    assert_eq!(report.setup.push_devices, 20);
    let due = target.pushes_due.load(Relaxed);
    assert!(due > 0, "with seed 1 some chat has an offline member: {}", report.text());
    assert_eq!(report.offline_recipient_messages, due, "{}", report.text());
    assert!(report.text().contains("20 users registered a push device"), "{}", report.text());
}

#[test]
fn without_the_option_nobody_registers_a_device() {
    let runtime = Runtime::new(2).expect("threads start");
    let target = Arc::new(FakeTarget::new(FakeBehaviour::default()));
    let report = run(&runtime, target.clone(), "fake", &options(false)).expect("the run works");
    assert!((1..=20).map(UserId).all(|user| target.push_device(user).is_none()));
    assert_eq!((report.setup.push_devices, target.pushes_due.load(Relaxed)), (0, 0));
}
