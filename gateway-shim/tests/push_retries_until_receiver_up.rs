// With the relay down a push is retried with backoff, and once the relay is up it is
// delivered exactly once, never twice; a relay that answers 503 is retried the same way.

mod push_support;

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use ferrogram_gateway_shim::push::{NoDirectory, PushDispatcher, PushReport};
use push_support::*;

#[test]
fn delivered_once_after_the_relay_comes_up() {
    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = free.local_addr().unwrap();
    drop(free);
    let dispatcher = PushDispatcher::start(config(&format!("http://{address}/relay")), Arc::new(NoDirectory)).unwrap();
    dispatcher.sender().try_send_job(message_job(1, 10, 20, 1, 1)).unwrap();
    let metrics = dispatcher.metrics();
    wait_until(Duration::from_secs(10), "three failed attempts", || metrics.pushes_failed.load(Relaxed) >= 3);
    assert!(dispatcher.reports().try_recv().is_err(), "nothing is finished while the relay is down");

    let receiver = Receiver::on(TcpListener::bind(address).unwrap(), always_ok());
    let done = reports(&dispatcher.reports(), 1, Duration::from_secs(10));
    assert_eq!(done, vec![PushReport::Completed { job: job_id(1) }]);
    // Well past the longest retry delay: still one delivery.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(receiver.count(), 1);
    assert_eq!(metrics.pushes_sent.load(Relaxed), 1);
    assert!(dispatcher.reports().try_recv().is_err());
}

#[test]
fn service_unavailable_is_retried() {
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = answered.clone();
    let receiver = Receiver::start(Arc::new(move |_| {
        if counter.fetch_add(1, Relaxed) < 2 {
            (503, "{}".into())
        } else {
            (200, "{}".into())
        }
    }));
    let dispatcher = PushDispatcher::start(config(&receiver.url("/relay")), Arc::new(NoDirectory)).unwrap();
    dispatcher.sender().try_send_job(message_job(1, 10, 20, 1, 1)).unwrap();
    let done = reports(&dispatcher.reports(), 1, Duration::from_secs(10));
    assert_eq!(done, vec![PushReport::Completed { job: job_id(1) }]);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(receiver.count(), 3, "two refusals, then one delivery");
    assert_eq!(dispatcher.metrics().pushes_failed.load(Relaxed), 2);
}

#[test]
fn attempts_are_bounded_then_dead_lettered() {
    let receiver = Receiver::start(Arc::new(|_| (500, "{}".into())));
    let mut config = config(&receiver.url("/relay"));
    config.attempts_max = 3;
    let dispatcher = PushDispatcher::start(config, Arc::new(NoDirectory)).unwrap();
    dispatcher.sender().try_send_job(message_job(1, 10, 20, 1, 1)).unwrap();
    let done = reports(&dispatcher.reports(), 1, Duration::from_secs(10));
    assert_eq!(done, vec![PushReport::DeadLettered { job: job_id(1) }]);
    assert_eq!(receiver.count(), 3);
    assert_eq!(dispatcher.metrics().pushes_dead_lettered.load(Relaxed), 1);
}
