// Measures pushes per second from the dispatcher to a local relay (one device per push, the
// default 256 requests in flight, HTTP/1.1 keep-alive) and checks each push arrived exactly
// once. Prints the figure; run it with
// `cargo test --release -p ferrogram-gateway-shim --test push_throughput -- --nocapture`.

mod push_support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrogram_gateway_shim::push::{NoDirectory, PushDispatcher, PushReport};
use push_support::*;

const PUSHES: u64 = 20_000;

#[test]
fn pushes_per_second_to_a_local_relay() {
    let receiver = Receiver::start(always_ok());
    let mut config = config(&receiver.url("/relay"));
    config.coalescing_window = Duration::from_millis(1);
    let dispatcher = PushDispatcher::start(config, Arc::new(NoDirectory)).unwrap();
    let sender = dispatcher.sender();
    let started = Instant::now();
    for sequence in 1..=PUSHES {
        sender.try_send_job(message_job(sequence, sequence, 1, 1, 1)).unwrap();
    }
    let done = reports(&dispatcher.reports(), PUSHES as usize, Duration::from_secs(240));
    let elapsed = started.elapsed();
    assert!(done.iter().all(|report| matches!(report, PushReport::Completed { .. })));
    let tokens: HashSet<String> =
        receiver.requests().iter().map(|request| request.json()["token"].as_str().unwrap().to_owned()).collect();
    assert_eq!(receiver.count() as u64, PUSHES);
    assert_eq!(tokens.len() as u64, PUSHES);
    println!(
        "push throughput: {PUSHES} pushes in {:.2} s = {:.0} pushes/s (relay on 127.0.0.1, HTTP/1.1, 256 in flight)",
        elapsed.as_secs_f64(),
        PUSHES as f64 / elapsed.as_secs_f64()
    );
}
