//! The vendored glommio's executor (vendor/glommio/PATCHES.md) keeps making progress when it
//! is preempted before any task queue ran: unpatched, it parked with the queue still runnable
//! and slept until an unrelated event, which with nothing else going on is never.

use std::sync::mpsc;
use std::time::Duration;

#[test]
fn an_executor_preempted_at_once_still_runs_its_tasks() {
    let (done, finished) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        // A preempt timer that has always fired by the time the executor looks: every turn
        // begins preempted.
        let executor =
            glommio::LocalExecutorBuilder::default().preempt_timer(Duration::from_nanos(1)).make().expect("executor");
        for _ in 0..1_000 {
            executor.run(async {});
        }
        let ran = executor.run(async {
            let mut count = 0;
            for _ in 0..1_000 {
                glommio::spawn_local(async {}).await;
                count += 1;
            }
            count
        });
        let _ = done.send(ran);
    });
    let ran = finished.recv_timeout(Duration::from_secs(60)).expect("the executor stopped making progress");
    assert_eq!(ran, 1_000);
    worker.join().expect("worker");
}

/// A timer still fires when the executor goes to sleep just after its preemption timer fired:
/// the patched reactor keeps a pending preemption timer instead of re-arming it, and must not
/// count on one that has already gone off to wake it for a user's timer.
#[test]
fn timers_fire_on_an_executor_that_sleeps_right_after_a_preemption() {
    const ROUNDS: u64 = 3_000;
    let (done, finished) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let executor =
            glommio::LocalExecutorBuilder::default().preempt_timer(Duration::from_millis(1)).make().expect("executor");
        let slept = executor.run(async {
            let mut slept = 0;
            for round in 0..ROUNDS {
                // Busy for about the length of the preemption slice, then idle on a timer:
                // the slice's timer goes off around the moment the executor parks.
                let until = std::time::Instant::now() + Duration::from_micros(400 + (round * 13) % 700);
                while std::time::Instant::now() < until {
                    std::hint::spin_loop();
                }
                glommio::timer::sleep(Duration::from_micros(500)).await;
                slept += 1;
            }
            slept
        });
        let _ = done.send(slept);
    });
    let slept = finished.recv_timeout(Duration::from_secs(60)).expect("a timer never fired");
    assert_eq!(slept, ROUNDS);
    worker.join().expect("worker");
}
