// A job fed twice — again while it is pending, and again after it finished, as a host
// re-feeding its outbox would — is pushed once and reported once.

mod push_support;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use ferrogram_gateway_shim::push::{NoDirectory, PushDispatcher, PushReport};
use push_support::*;

#[test]
fn a_job_fed_twice_is_delivered_once() {
    let receiver = Receiver::start(always_ok());
    let dispatcher = PushDispatcher::start(config(&receiver.url("/relay")), Arc::new(NoDirectory)).unwrap();
    let sender = dispatcher.sender();
    sender.try_send_job(message_job(1, 10, 20, 1, 1)).unwrap();
    sender.try_send_job(message_job(1, 10, 20, 1, 1)).unwrap();
    let done = reports(&dispatcher.reports(), 1, Duration::from_secs(10));
    assert_eq!(done, vec![PushReport::Completed { job: job_id(1) }]);

    sender.try_send_job(message_job(1, 10, 20, 1, 1)).unwrap();
    assert!(dispatcher.reports().recv_timeout(Duration::from_millis(1000)).is_err(), "reported once");
    assert_eq!(receiver.count(), 1);
    assert_eq!(receiver.requests()[0].json()["count"], 1);
    assert_eq!(dispatcher.metrics().jobs_duplicate.load(Relaxed), 2);
}
