// An offline recipient gets one push per coalescing window, carrying how many messages it
// covers, the latest preview and the latest unread badge; with previews off the payload holds
// neither the text nor the sender.

mod push_support;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use ferrogram_gateway_shim::push::{NoDirectory, PushDispatcher, PushJobKind, PushReport};
use push_support::*;

#[test]
fn one_push_per_window_with_count_and_badge() {
    let receiver = Receiver::start(always_ok());
    let dispatcher = PushDispatcher::start(config(&receiver.url("/relay")), Arc::new(NoDirectory)).unwrap();
    let (sender, reported) = (dispatcher.sender(), dispatcher.reports());

    for (sequence, badge) in [(1, 1), (2, 2), (3, 3)] {
        sender.try_send_job(message_job(sequence, 10, 20, sequence, badge)).unwrap();
    }
    let mut done = reports(&reported, 3, Duration::from_secs(10));
    done.sort_by_key(|report| format!("{report:?}"));
    assert_eq!(done, (1..=3).map(|n| PushReport::Completed { job: job_id(n) }).collect::<Vec<_>>());
    assert_eq!(receiver.count(), 1, "three messages in one window make one push");
    let first = receiver.requests()[0].json();
    assert_eq!((first["count"].as_u64(), first["badge"].as_u64()), (Some(3), Some(3)));
    assert_eq!(first["text"], "message 3");
    assert_eq!(first["title"], "Ann");
    assert_eq!(first["message"], "3");

    // The next window makes the next push.
    sender.try_send_job(message_job(4, 10, 20, 4, 4)).unwrap();
    sender.try_send_job(message_job(5, 10, 20, 5, 5)).unwrap();
    reports(&reported, 2, Duration::from_secs(10));
    assert_eq!(receiver.count(), 2);
    let second = receiver.requests()[1].json();
    assert_eq!((second["count"].as_u64(), second["badge"].as_u64()), (Some(2), Some(5)));
    let metrics = dispatcher.metrics();
    assert_eq!(metrics.pushes_sent.load(Relaxed), 2);
    assert_eq!(metrics.messages_coalesced.load(Relaxed), 3);
}

#[test]
fn previews_off_carry_no_text() {
    let receiver = Receiver::start(always_ok());
    let dispatcher = PushDispatcher::start(config(&receiver.url("/relay")), Arc::new(NoDirectory)).unwrap();
    let mut job = message_job(1, 10, 20, 1, 7);
    if let PushJobKind::Message(push) = &mut job.kind {
        push.text_preview = "the secret plans".into();
        push.settings.show_previews = false;
    }
    dispatcher.sender().try_send_job(job).unwrap();
    reports(&dispatcher.reports(), 1, Duration::from_secs(10));
    let request = &receiver.requests()[0];
    let body = String::from_utf8(request.body.clone()).unwrap();
    assert!(!body.contains("secret plans") && !body.contains("Ann"), "{body}");
    let json = request.json();
    assert_eq!(json["body"], "New message");
    assert!(json.get("text").is_none() && json.get("title").is_none());
    assert_eq!(json["badge"], 7);
}
