//! The push outbox of the messaging core (DESIGN §8), on three simulated shards: which new
//! messages queue a job, that jobs and devices survive crashes and checkpoints, that finished
//! jobs stay finished, and that a channel post queues one job whatever its audience.

use ferrogram_engine::ids::ShardId;
use ferrogram_engine::messaging::limits::{DEVICES_PER_USER_MAX, DEVICE_TOKEN_BYTES_MAX};
use ferrogram_engine::messaging::{
    ChatId, ChatKind, DeviceKind, MessagingError, NotifySettings, PendingPush, PushDevice, PushTarget, RandomId,
    Request, Response, SendRequest, UnixMs, UserId,
};
use ferrogram_engine::sim::messaging::{CrashKind, MessagingSim};
use ferrogram_engine::{Durability, LogConfig};

const SHARDS: usize = 3;

fn sim(seed: u64) -> MessagingSim {
    let config = LogConfig {
        durability: Durability::Sync,
        segment_bytes: 256 << 10,
        batch_bytes_max: 32 << 10,
        ..LogConfig::default()
    };
    let mut sim = MessagingSim::new(seed, SHARDS, config);
    sim.enable_push();
    sim
}

fn users(sim: &mut MessagingSim, count: usize) -> Vec<UserId> {
    (0..count)
        .map(|index| {
            let phone = format!("+1555000{index:04}");
            let request = Request::SignUp { phone, first_name: format!("User {index}"), last_name: String::new() };
            match sim.call(request) {
                Ok(Response::User(user)) => user,
                other => panic!("sign up {index}: {other:?}"),
            }
        })
        .collect()
}

fn create(sim: &mut MessagingSim, kind: ChatKind, creator: UserId, members: &[UserId]) -> ChatId {
    let request = Request::CreateChat { kind, creator, title: "Family".into(), members: members.to_vec() };
    match sim.call(request) {
        Ok(Response::Chat(chat)) => chat,
        other => panic!("create {kind:?}: {other:?}"),
    }
}

fn send(sim: &mut MessagingSim, chat: ChatId, sender: UserId, random_id: u64, text: &str) {
    let request = Request::Send(SendRequest {
        chat,
        sender,
        session: None,
        random_id: RandomId(random_id),
        text: text.into(),
        reply_to: None,
        forwarded_from: None,
        media: None,
    });
    assert!(matches!(sim.call(request), Ok(Response::Sent(_))), "send {text:?}");
    sim.run_until_quiet().expect("the shards settle");
}

fn device(token: &str) -> PushDevice {
    PushDevice { kind: DeviceKind::Fcm, token: token.into(), app_sandbox: false, no_muted: false }
}

fn register(sim: &mut MessagingSim, user: UserId, token: &str) {
    assert_eq!(sim.call(Request::RegisterDevice { user, device: device(token) }), Ok(Response::Done));
}

/// Every job in every shard's outbox, by asking each shard.
fn outbox(sim: &mut MessagingSim) -> Vec<PendingPush> {
    let mut all = Vec::new();
    for index in 0..SHARDS {
        let shard = ShardId(index as u16);
        let id = sim.submit_to(shard, shard, Request::PendingPushes { after: 0, limit: 1000 });
        match sim.run_until_reply(id) {
            Some(Ok(Response::PendingPushes(pending))) => all.extend(pending),
            other => panic!("pending pushes of {shard}: {other:?}"),
        }
    }
    all
}

fn finish(sim: &mut MessagingSim, shard: ShardId, sequences: Vec<u64>) {
    let id = sim.submit_to(shard, shard, Request::PushesDone { sequences });
    assert_eq!(sim.run_until_reply(id), Some(Ok(Response::Done)));
}

/// Proves a new message queues a job exactly for the members who have a device, are offline,
/// did not send it and have not muted the chat; and the job carries the preview, the chat's
/// title and the recipient's devices and badge.
#[test]
fn jobs_go_to_offline_unmuted_members_with_devices() {
    let mut sim = sim(1);
    let u = users(&mut sim, 6);
    // u0 sends; u1 offline with a device; u2 online with a device; u3 has no device;
    // u4 muted the chat; u5 muted it until a time already past.
    let chat = create(&mut sim, ChatKind::Group, u[0], &u[1..]);
    for &user in &[u[0], u[1], u[2], u[4], u[5]] {
        register(&mut sim, user, &format!("token-{user}"));
    }
    let session = sim.new_session(ShardId(1));
    assert!(matches!(sim.call(Request::Connect { user: u[2], session }), Ok(Response::State(_))));
    let forever = NotifySettings { mute_until: UnixMs(u64::MAX), show_previews: true };
    let past = NotifySettings { mute_until: UnixMs(1), show_previews: false };
    for (user, settings) in [(u[4], forever), (u[5], past)] {
        assert_eq!(sim.call(Request::SetNotifySettings { user, chat, settings }), Ok(Response::Done));
    }
    sim.take_pushes();

    send(&mut sim, chat, u[0], 1, "dinner at eight");
    let handed = sim.take_pushes();
    let mut notified: Vec<UserId> = handed
        .iter()
        .map(|pending| match pending.job.target {
            PushTarget::User(user) => user,
            PushTarget::ChatMembers => panic!("a group is fanned out on write: {pending:?}"),
        })
        .collect();
    notified.sort();
    let mut expected = vec![u[1], u[5]];
    expected.sort();
    assert_eq!(notified, expected, "jobs handed to the host");
    for pending in &handed {
        assert_eq!(pending.shard, sim.table().owner(pending.job.vshard()), "a job lives on its user's shard");
        assert_eq!((pending.job.preview.as_str(), pending.job.chat_title.as_str()), ("dinner at eight", "Family"));
        assert_eq!(pending.job.sender, u[0]);
        let recipient = pending.recipient.as_ref().expect("the user's shard knows the recipient");
        assert_eq!(recipient.devices, vec![device(&format!("token-{}", recipient.user))]);
        assert_eq!(recipient.unread_badge, 1, "one unread message in the box");
    }
    assert_eq!(
        handed
            .iter()
            .find(|p| p.recipient.as_ref().unwrap().user == u[5])
            .unwrap()
            .recipient
            .as_ref()
            .unwrap()
            .settings,
        past
    );
    assert_eq!(outbox(&mut sim).len(), 2, "the outbox holds what was handed over");
}

/// Proves a private chat's job has no title (the host names the sender), and that sending
/// to yourself in a private chat with someone online queues nothing.
#[test]
fn private_chats_queue_jobs_without_a_title() {
    let mut sim = sim(2);
    let u = users(&mut sim, 2);
    register(&mut sim, u[1], "phone");
    let chat = match sim.call(Request::OpenPrivate { user: u[0], peer: u[1] }) {
        Ok(Response::Chat(chat)) => chat,
        other => panic!("open private: {other:?}"),
    };
    send(&mut sim, chat, u[0], 1, "hi");
    let handed = sim.take_pushes();
    assert_eq!(handed.len(), 1);
    assert_eq!(handed[0].job.chat_title, "");
    assert_eq!(handed[0].job.chat_kind, ChatKind::Private);
    send(&mut sim, chat, u[1], 2, "hello back");
    assert!(sim.take_pushes().is_empty(), "u0 has no device");
}

/// Proves jobs survive a crash (with and without a checkpoint in between), a finished job
/// stays finished after a crash, and finishing one twice is harmless.
#[test]
fn jobs_survive_crashes_until_finished() {
    for checkpoint in [false, true] {
        let mut sim = sim(3 + checkpoint as u64);
        let u = users(&mut sim, 4);
        let chat = create(&mut sim, ChatKind::Group, u[0], &u[1..]);
        for &user in &u[1..] {
            register(&mut sim, user, "device");
        }
        for n in 0..5 {
            send(&mut sim, chat, u[0], n + 1, &format!("message {n}"));
        }
        let before = outbox(&mut sim);
        assert_eq!(before.len(), 15, "five messages for three offline members");
        if checkpoint {
            for index in 0..SHARDS {
                sim.checkpoint(ShardId(index as u16)).expect("checkpoint");
            }
        }
        sim.crash(CrashKind::ProcessKill).expect("recover");
        assert_eq!(outbox(&mut sim), before, "checkpoint {checkpoint}: the outbox after recovery");

        // Finish the first job of each shard (twice), crash, and they stay finished.
        let mut finished = Vec::new();
        for index in 0..SHARDS {
            let shard = ShardId(index as u16);
            if let Some(first) = before.iter().find(|p| p.shard == shard) {
                finish(&mut sim, shard, vec![first.job.sequence]);
                finish(&mut sim, shard, vec![first.job.sequence, first.job.sequence]);
                finished.push((shard, first.job.sequence));
            }
        }
        sim.crash(CrashKind::ProcessKill).expect("recover");
        let after = outbox(&mut sim);
        assert_eq!(after.len(), before.len() - finished.len());
        assert!(after.iter().all(|p| !finished.contains(&(p.shard, p.job.sequence))));

        // New jobs after recovery get new sequences: none reused.
        sim.take_pushes();
        send(&mut sim, chat, u[0], 100, "after the crash");
        let new = sim.take_pushes();
        assert_eq!(new.len(), 3);
        for pending in &new {
            assert!(
                before.iter().filter(|p| p.shard == pending.shard).all(|p| p.job.sequence < pending.job.sequence),
                "sequence {} of {} was given out before",
                pending.job.sequence,
                pending.shard
            );
        }
    }
}

/// Proves a channel post queues one chat-level job on the channel's shard, not one per
/// subscriber, and the members page finds exactly the offline subscribers with devices.
#[test]
fn a_channel_post_queues_one_job_and_the_directory_finds_its_audience() {
    let mut sim = sim(5);
    let u = users(&mut sim, 12);
    let channel = create(&mut sim, ChatKind::Channel, u[0], &[]);
    for &user in &u[1..] {
        assert_eq!(sim.call(Request::Join { chat: channel, user }), Ok(Response::Done));
    }
    for &user in &u[1..10] {
        register(&mut sim, user, "device");
    }
    // u9 is online; u10 and u11 have no device.
    let session = sim.new_session(ShardId(0));
    assert!(matches!(sim.call(Request::Connect { user: u[9], session }), Ok(Response::State(_))));
    sim.run_until_quiet().expect("settle");
    sim.take_pushes();

    send(&mut sim, channel, u[0], 1, "news");
    let handed = sim.take_pushes();
    assert_eq!(handed.len(), 1, "one job for the whole channel: {handed:?}");
    assert_eq!(handed[0].job.target, PushTarget::ChatMembers);
    assert_eq!(handed[0].shard, sim.table().owner(channel.vshard()));

    // Walk the members two at a time, as the host's directory does.
    let mut after = None;
    let mut found = Vec::new();
    loop {
        let page = match sim.call(Request::MembersPage { chat: channel, after, limit: 2 }) {
            Ok(Response::Members(members)) => members,
            other => panic!("members page: {other:?}"),
        };
        let Some(&(last, _)) = page.last() else { break };
        after = Some(last);
        let mut by_shard: std::collections::BTreeMap<ShardId, Vec<UserId>> = Default::default();
        for (user, _) in page.into_iter().filter(|(user, _)| *user != u[0]) {
            by_shard.entry(sim.table().owner(user.vshard())).or_default().push(user);
        }
        for (_, users) in by_shard {
            match sim.call(Request::PushRecipients { chat: channel, users }) {
                Ok(Response::PushRecipients(recipients)) => found.extend(recipients.into_iter().map(|r| r.user)),
                other => panic!("push recipients: {other:?}"),
            }
        }
    }
    found.sort();
    let mut expected = u[1..9].to_vec();
    expected.sort();
    assert_eq!(found, expected);
}

/// Proves devices and settings survive a checkpoint and a crash, re-registering replaces,
/// the oldest device goes past the limit, and bad tokens and settings for strangers' chats
/// are refused.
#[test]
fn devices_and_settings_are_durable_and_checked() {
    let mut sim = sim(6);
    let u = users(&mut sim, 2);
    let chat = create(&mut sim, ChatKind::Group, u[0], &[]);
    register(&mut sim, u[0], "a");
    let sandbox = PushDevice { app_sandbox: true, ..device("a") };
    assert_eq!(sim.call(Request::RegisterDevice { user: u[0], device: sandbox.clone() }), Ok(Response::Done));
    let muted = NotifySettings { mute_until: UnixMs(u64::MAX), show_previews: false };
    assert_eq!(sim.call(Request::SetNotifySettings { user: u[0], chat, settings: muted }), Ok(Response::Done));
    for index in 0..SHARDS {
        sim.checkpoint(ShardId(index as u16)).expect("checkpoint");
    }
    register(&mut sim, u[0], "b");
    sim.crash(CrashKind::PowerLoss).expect("recover");
    assert_eq!(sim.call(Request::ListDevices { user: u[0] }), Ok(Response::Devices(vec![sandbox, device("b")])));
    assert_eq!(sim.call(Request::GetNotifySettings { user: u[0], chat }), Ok(Response::NotifySettings(muted)));
    assert_eq!(
        sim.call(Request::GetNotifySettings { user: u[1], chat }),
        Ok(Response::NotifySettings(NotifySettings::DEFAULT))
    );

    for n in 0..DEVICES_PER_USER_MAX {
        register(&mut sim, u[1], &format!("t{n}"));
    }
    register(&mut sim, u[1], "newest");
    let Ok(Response::Devices(devices)) = sim.call(Request::ListDevices { user: u[1] }) else { panic!("list") };
    assert_eq!(devices.len(), DEVICES_PER_USER_MAX);
    assert_eq!(devices.first().map(|d| d.token.as_str()), Some("t1"));
    let unregister = |token: &str| Request::UnregisterDevice { user: u[1], kind: DeviceKind::Fcm, token: token.into() };
    assert_eq!(sim.call(unregister("t1")), Ok(Response::Unregistered(true)));
    assert_eq!(sim.call(unregister("t1")), Ok(Response::Unregistered(false)));

    let long = "x".repeat(DEVICE_TOKEN_BYTES_MAX + 1);
    assert!(matches!(
        sim.call(Request::RegisterDevice { user: u[1], device: device(&long) }),
        Err(MessagingError::TooLong { .. })
    ));
    assert!(matches!(
        sim.call(Request::RegisterDevice { user: u[1], device: device("") }),
        Err(MessagingError::InvalidArgument(_))
    ));
}
