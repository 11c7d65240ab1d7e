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
