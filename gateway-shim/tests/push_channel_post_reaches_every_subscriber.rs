// One chat-level job for a channel with 10,000 offline subscribers is expanded through the
// host's directory and reaches each subscriber's device exactly once — even though the
// directory fails half-way and the expansion resumes — and the job is reported once.

mod push_support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use engine::messaging::{ChatId, MessageId, UnixMs, UserId};
use ferrogram_gateway_shim::push::{
    ChatPost, DeviceKind, DirectoryError, NotificationSettings, PushDirectory, PushDispatcher, PushJob, PushJobKind,
    PushReport, Recipient,
};
use push_support::*;

const SUBSCRIBERS: u64 = 10_000;

/// A channel whose members are users 1..=SUBSCRIBERS; the first listing breaks off after
/// half of them.
struct Channel {
    failed_once: AtomicBool,
}

impl PushDirectory for Channel {
    fn members_to_notify<'a>(
        &'a self,
        post: &ChatPost,
        after: Option<UserId>,
    ) -> Box<dyn Iterator<Item = Result<Recipient, DirectoryError>> + Send + 'a> {
        assert_eq!(post.chat, ChatId(77));
        let first = after.map_or(1, |user| user.0 + 1);
        Box::new((first..=SUBSCRIBERS).map(move |user| {
            if user == SUBSCRIBERS / 2 && !self.failed_once.swap(true, Relaxed) {
                return Err(DirectoryError { source: "the member listing broke off".into() });
            }
            Ok(Recipient {
                user: UserId(user),
                devices: vec![device(DeviceKind::Webhook, &format!("token-{user}"))],
                settings: NotificationSettings::DEFAULT,
                unread_badge: (user % 100) as u32,
            })
        }))
    }
}

#[test]
fn a_channel_post_reaches_each_subscriber_once() {
    let receiver = Receiver::start(always_ok());
    let directory = Arc::new(Channel { failed_once: AtomicBool::new(false) });
    let dispatcher = PushDispatcher::start(config(&receiver.url("/relay")), directory).unwrap();
    let post = ChatPost {
        chat: ChatId(77),
        message: MessageId(5),
        sender: UserId(0),
        sender_name: "News".into(),
        text_preview: "a post".into(),
        date: UnixMs(1),
    };
    dispatcher.sender().try_send_job(PushJob { id: job_id(1), kind: PushJobKind::ChatPost(post) }).unwrap();
    let done = reports(&dispatcher.reports(), 1, Duration::from_secs(120));
    assert_eq!(done, vec![PushReport::Completed { job: job_id(1) }]);

    let mut per_token: HashMap<String, (usize, u64)> = HashMap::new();
    for request in receiver.requests() {
        let json = request.json();
        let entry = per_token.entry(json["token"].as_str().unwrap().to_owned()).or_default();
        entry.0 += 1;
        entry.1 = json["badge"].as_u64().unwrap();
    }
    assert_eq!(per_token.len() as u64, SUBSCRIBERS);
    for user in 1..=SUBSCRIBERS {
        assert_eq!(per_token.get(&format!("token-{user}")), Some(&(1, user % 100)), "user {user}");
    }
    assert_eq!(dispatcher.metrics().expansions_failed.load(Relaxed), 1);
    assert!(dispatcher.reports().recv_timeout(Duration::from_millis(300)).is_err(), "reported once");
}
