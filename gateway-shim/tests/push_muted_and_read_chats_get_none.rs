// A muted chat gets no push, and a chat read before its window closed gets none either; both
// jobs still complete (so the host deletes them) while an ordinary chat beside them is pushed.

mod push_support;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine::messaging::{ChatId, MessageId, UnixMs, UserId};
use ferrogram_gateway_shim::push::{Cancel, NoDirectory, PushDispatcher, PushJobKind, PushReport};
use push_support::*;

#[test]
fn muted_and_read_chats_get_no_push() {
    let receiver = Receiver::start(always_ok());
    let dispatcher = PushDispatcher::start(config(&receiver.url("/relay")), Arc::new(NoDirectory)).unwrap();
    let sender = dispatcher.sender();
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;

    let mut muted = message_job(1, 10, 21, 1, 1);
    if let PushJobKind::Message(push) = &mut muted.kind {
        push.settings.mute_until = UnixMs(now_ms + 3_600_000);
    }
    sender.try_send_job(muted).unwrap();
    sender.try_send_job(message_job(2, 10, 22, 1, 2)).unwrap();
    sender.try_send_job(message_job(3, 10, 22, 2, 3)).unwrap();
    sender.try_cancel(Cancel { user: UserId(10), chat: ChatId(22), read_max_id: MessageId(2) }).unwrap();
    sender.try_send_job(message_job(4, 10, 23, 1, 4)).unwrap();

    let mut done = reports(&dispatcher.reports(), 4, Duration::from_secs(10));
    done.sort_by_key(|report| format!("{report:?}"));
    assert_eq!(done, (1..=4).map(|n| PushReport::Completed { job: job_id(n) }).collect::<Vec<_>>());
    // Two more windows: nothing else arrives.
    std::thread::sleep(Duration::from_millis(700));
    let requests = receiver.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].json()["chat"], "23");
    let metrics = dispatcher.metrics();
    assert_eq!(metrics.dropped_muted.load(Relaxed), 1);
    assert_eq!(metrics.dropped_cancelled.load(Relaxed), 2);
}
