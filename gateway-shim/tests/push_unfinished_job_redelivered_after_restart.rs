// A job whose push could not be delivered before the dispatcher stopped is never reported, so
// it stays in the host's outbox; fed to a new dispatcher after the restart, it is delivered
// and completed.

mod push_support;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use ferrogram_gateway_shim::push::{NoDirectory, PushDispatcher, PushReport};
use push_support::*;

#[test]
fn unfinished_jobs_are_delivered_after_a_restart() {
    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = free.local_addr().unwrap();
    drop(free);
    let url = format!("http://{address}/relay");

    let first = PushDispatcher::start(config(&url), Arc::new(NoDirectory)).unwrap();
    let reported = first.reports();
    first.sender().try_send_job(message_job(1, 10, 20, 1, 1)).unwrap();
    let metrics = first.metrics();
    wait_until(Duration::from_secs(10), "a failed attempt", || {
        metrics.pushes_failed.load(std::sync::atomic::Ordering::Relaxed) >= 1
    });
    first.shutdown();
    assert!(reported.try_recv().is_err(), "a stopped dispatcher reports nothing it did not finish");

    let receiver = Receiver::on(TcpListener::bind(address).unwrap(), always_ok());
    let second = PushDispatcher::start(config(&url), Arc::new(NoDirectory)).unwrap();
    second.sender().try_send_job(message_job(1, 10, 20, 1, 1)).unwrap();
    let done = reports(&second.reports(), 1, Duration::from_secs(10));
    assert_eq!(done, vec![PushReport::Completed { job: job_id(1) }]);
    assert_eq!(receiver.count(), 1);
}
