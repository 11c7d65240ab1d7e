//! Latency accounting end to end through a whole run on the in-process fake target: a stall,
//! whether of the server or of loadgen's own thread, shows up in the percentiles of every
//! operation that had to wait for it, and lost deliveries show up as missing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrogram_loadgen::options::{Mix, RunOptions, Scenario};
use ferrogram_loadgen::report::Report;
use ferrogram_loadgen::run::run;
use ferrogram_loadgen::runtime::Runtime;
use ferrogram_loadgen::target::fake::{FakeBehaviour, FakeTarget};

/// 1,000 sends a second for 2 s into 5 private chats of 10 online users.
fn options() -> RunOptions {
    RunOptions {
        users: 10,
        online_users: 10,
        dm_chats: 5,
        rate_per_second: 1000.0,
        warmup: Duration::ZERO,
        duration: Duration::from_secs(2),
        drain: Duration::from_secs(5),
        ..RunOptions::small(Scenario::Dm)
    }
}

fn run_fake(behaviour: FakeBehaviour, options: &RunOptions, threads: usize) -> Report {
    let runtime = Runtime::new(threads).expect("threads start");
    let started = Instant::now();
    let report = run(&runtime, Arc::new(FakeTarget::new(behaviour)), "fake", options).expect("the run works");
    assert!(started.elapsed() < Duration::from_secs(20), "the run is bounded in time");
    report
}

// Without faults every send is acknowledged and delivered, the tail is short, and loadgen
// kept up: the baseline the stall tests are compared with.
#[test]
fn a_steady_target_has_a_short_tail() {
    let report =
        run_fake(FakeBehaviour { answer_delay: Duration::from_millis(1), ..Default::default() }, &options(), 2);
    let ack = report.measures["send_ack"];
    assert_eq!(ack.count, 2000, "{}", report.text());
    // Loose on purpose: a busy CI machine adds its own milliseconds; the stalls below are 200.
    assert!(ack.p99_ms < 100.0, "{}", report.text());
    assert_eq!((report.deliveries.expected, report.deliveries.received, report.deliveries.missing), (2000, 2000, 0));
    assert_eq!(report.measures["delivery"].count, 2000);
    assert!(report.errors_by_code.is_empty());
    assert!((report.load.achieved_rate_per_s - 1000.0).abs() < 100.0, "{}", report.text());
}

// The server stops answering for 200 ms once, about half a second into the run. A closed-loop
// tool would count one slow request; here the ~200 sends due during the stall each wait
// until its end, so p99 and max carry the stall while the median does not.
#[test]
fn a_server_stall_shows_in_p99_and_max() {
    let stall_at = Instant::now() + Duration::from_millis(600);
    let behaviour = FakeBehaviour {
        answer_delay: Duration::from_millis(1),
        server_stall: Some((stall_at, Duration::from_millis(200))),
        ..Default::default()
    };
    let report = run_fake(behaviour, &options(), 2);
    let ack = report.measures["send_ack"];
    assert_eq!(ack.count, 2000, "{}", report.text());
    assert!(ack.max_ms >= 190.0, "{}", report.text());
    assert!(ack.p99_ms >= 150.0, "{}", report.text());
    assert!(ack.p50_ms < 20.0, "{}", report.text());
    assert!(report.measures["delivery"].p99_ms >= 150.0, "deliveries waited too: {}", report.text());

    // The timeline places the stall: a 2 s window in 20 steps of 100 ms, the slowest ack in
    // the steps of the stall (about 0.6 s in, setup takes a little of that), the last second
    // untouched.
    let timeline = &report.send_ack_max_ms_by_100ms;
    assert_eq!(timeline.len(), 20);
    let worst = (0..timeline.len()).max_by(|&a, &b| timeline[a].total_cmp(&timeline[b])).expect("steps");
    assert!(timeline[worst] >= 150.0 && (2..=8).contains(&worst), "{timeline:?}");
    assert!(timeline[10..].iter().all(|&slowest| slowest < 100.0), "{timeline:?}");
}

// Loadgen's only executor thread is blocked for 200 ms (as a pause of loadgen itself would).
// Nothing can be sent meanwhile; afterwards the overdue sends go out in one burst, and
// because each is measured from its intended time the burst does not hide the wait: the
// stall is in p99 and max, and in loadgen's own issue lag.
#[test]
fn a_loadgen_stall_is_not_hidden_by_the_catch_up_burst() {
    let behaviour = FakeBehaviour {
        answer_delay: Duration::from_millis(1),
        thread_stall: Some((Instant::now() + Duration::from_millis(600), Duration::from_millis(200))),
        ..Default::default()
    };
    let report = run_fake(behaviour, &options(), 1);
    let ack = report.measures["send_ack"];
    assert_eq!(ack.count, 2000, "every send was still made: {}", report.text());
    assert!(ack.p99_ms >= 150.0 && ack.max_ms >= 190.0, "{}", report.text());
    let lag = report.measures["issue_lag"];
    assert!(lag.max_ms >= 150.0, "the lateness is loadgen's own: {}", report.text());
}

// Every seventh delivery is lost by the target: the run reports exactly those as missing,
// and in a group every online member's delivery is counted.
#[test]
fn lost_deliveries_are_counted_as_missing() {
    let behaviour = FakeBehaviour { lose_every_nth_delivery: Some(7), ..Default::default() };
    let options = RunOptions {
        mix: Mix::for_scenario(Scenario::Group, Mix::default()),
        scenario: Scenario::Group,
        dm_chats: 0,
        group_chats: 2,
        group_size: 5,
        rate_per_second: 200.0,
        duration: Duration::from_secs(1),
        drain: Duration::from_millis(500),
        ..options()
    };
    let report = run_fake(behaviour, &options, 2);
    let deliveries = report.deliveries;
    assert_eq!(deliveries.expected, 200 * 4, "four other members of each group are online");
    assert!(deliveries.missing > 0, "{}", report.text());
    assert_eq!(deliveries.expected, deliveries.received + deliveries.missing);
    // The fake counts every member's delivery, the sender's own included (as ferrogram's box
    // fan-out does): one in seven of those five is dropped.
    assert!((deliveries.missing as f64 - 1000.0 / 7.0 * 0.8).abs() < 40.0, "{}", report.text());
    assert!(report.measures["delivery_all"].count < 200, "messages with a lost delivery never complete");
}

// The target stops answering for good half-way through. The run still ends on time: at the
// drain deadline the sessions are closed and every send still waiting counts as timed out,
// none is left uncounted, and deliveries of unanswered sends are not counted as missing.
#[test]
fn a_target_that_never_answers_ends_in_timeouts_at_the_deadline() {
    let behaviour = FakeBehaviour {
        server_stall: Some((Instant::now() + Duration::from_millis(600), Duration::from_secs(3600))),
        ..Default::default()
    };
    let options = RunOptions { drain: Duration::from_millis(500), ..options() };
    let started = Instant::now();
    let report = run_fake(behaviour, &options, 2);
    assert!(started.elapsed() < Duration::from_secs(8), "duration + drain + closing, not the stall");
    let timed_out = report.errors_by_code.get("TIMEOUT").map_or(0, |count| count.count);
    assert!(timed_out > 1000, "{}", report.text());
    assert_eq!(report.load.succeeded + report.load.failed, report.load.issued, "{}", report.text());
    assert_eq!(report.deliveries.missing, 0, "{}", report.text());
    assert!(!report.errors_by_code["TIMEOUT"].from_server);
}
