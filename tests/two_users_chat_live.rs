//! Two people log in with codes from the `file:` sender, talk in a private chat and see each
//! other's messages live, in order; groups and channels deliver to every member the same way.

mod support;

use std::time::Duration;

use ferrogram_net::client::ClientError;
use ferrogram_net::{ChatId, ErrorCode, LiveEvent, MessageId, Update};
use support::{collect_updates, Server};

/// The texts of new messages of `chat` among live box events, in arrival order.
fn box_texts(events: &[LiveEvent], chat: ChatId) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            LiveEvent::Box { update, message: Some(message) } => match update.update {
                Update::NewMessage { chat: c, .. } if c == chat => Some(message.text.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn count_new_messages(events: &[LiveEvent]) -> usize {
    events
        .iter()
        .filter(|event| matches!(event, LiveEvent::Box { update, .. } if matches!(update.update, Update::NewMessage { .. })))
        .count()
}

// Alice and Bob sign up, open one private chat from both sides (the same chat), alternate
// messages, and each sees every message live, with its body, in the order it was sent; the
// history shows the same conversation.
#[test]
fn a_private_chat_is_live_and_in_order() {
    let server = Server::start("private-chat", &["--cores", "2"]);
    let (alice, alice_login) = server.login("+15550000101", "Alice Liddell");
    let (bob, bob_login) = server.login("+15550000102", "Bob Builder");
    assert_eq!(alice_login.user.first_name, "Alice");
    assert_eq!(alice_login.user.phone, "+15550000101", "your own profile shows your phone");
    assert_eq!(alice_login.token.len(), 40);

    let chat = alice.open_private(bob_login.user.id).expect("alice opens the chat");
    assert_eq!(bob.open_private(alice_login.user.id).expect("bob opens it"), chat, "one chat per pair");

    let mut sent = Vec::new();
    for round in 0..10u64 {
        let text = format!("alice #{round}");
        alice.send_message(chat, 1000 + round, &text).expect("alice sends");
        sent.push(text);
        let text = format!("bob #{round}");
        bob.send_message(chat, 2000 + round, &text).expect("bob sends");
        sent.push(text);
    }
    for (name, client) in [("alice", &alice), ("bob", &bob)] {
        let events = collect_updates(client, Duration::from_secs(10), |events| count_new_messages(events) >= 20);
        assert_eq!(box_texts(&events, chat), sent, "{name} sees every message live, in order");
    }

    let history = alice.get_history(chat, MessageId(0), 100).expect("history");
    let texts: Vec<String> = history.iter().rev().map(|message| message.text.clone()).collect();
    assert_eq!(texts, sent, "history is newest first and holds the same messages");
    let ids: Vec<u64> = history.iter().rev().map(|message| message.id.0).collect();
    assert_eq!(ids, (1..=20).collect::<Vec<u64>>(), "message ids are dense from 1");
}

// A group of four: every member's message reaches every member live, in order; a non-member
// cannot read or post.
#[test]
fn a_group_delivers_to_every_member() {
    let server = Server::start("group-chat", &["--cores", "2"]);
    let members: Vec<_> = (0..4).map(|i| server.login(&format!("+1555000020{i}"), &format!("Member {i}"))).collect();
    let (outsider, _) = server.login("+15550000299", "Out Sider");
    let ids: Vec<_> = members.iter().skip(1).map(|(_, login)| login.user.id).collect();
    let group = members[0].0.create_group("Four of us", &ids).expect("create group");
    assert_eq!(members[2].0.get_chat(group).expect("a member sees the group").members, 4);
    // Members come in pages, in user id order, each after the last one seen.
    let first = members[2].0.get_members(group, None, 3).expect("first page");
    let rest = members[2].0.get_members(group, first.last().map(|member| member.user), 3).expect("second page");
    let mut listed: Vec<_> = first.iter().chain(&rest).map(|member| member.user).collect();
    assert_eq!((first.len(), rest.len()), (3, 1), "a short page is the last");
    let mut everyone: Vec<_> = members.iter().map(|(_, login)| login.user.id).collect();
    everyone.sort();
    listed.dedup();
    assert_eq!(listed, everyone);
    let refused = members[2].0.get_members(group, None, 0).expect_err("a page of none is refused");
    assert_eq!(refused.code(), Some(ErrorCode::InvalidArgument));

    let mut sent = Vec::new();
    for round in 0..3u64 {
        for (index, (client, _)) in members.iter().enumerate() {
            let text = format!("member {index} round {round}");
            client.send_message(group, 1 + round * 10 + index as u64, &text).expect("send to the group");
            sent.push(text);
        }
    }
    for (index, (client, _)) in members.iter().enumerate() {
        let events =
            collect_updates(client, Duration::from_secs(10), |events| box_texts(events, group).len() >= sent.len());
        assert_eq!(box_texts(&events, group), sent, "member {index} sees the group's messages in order");
    }

    let refused = outsider.send_message(group, 1, "let me in").expect_err("an outsider cannot post");
    assert_eq!(refused.code(), Some(ErrorCode::PermissionDenied));
    let refused = outsider.get_history(group, MessageId(0), 10).expect_err("nor read");
    assert_eq!(refused.code(), Some(ErrorCode::PermissionDenied));
}

// A channel: subscribers who join and subscribe get each post live with its body; only the
// admin may post.
#[test]
fn a_channel_reaches_its_subscribers() {
    let server = Server::start("channel", &["--cores", "2"]);
    let (admin, _) = server.login("+15550000301", "Channel Admin");
    let channel = admin.create_channel("News").expect("create channel");
    let subscribers: Vec<_> =
        (0..3).map(|i| server.login(&format!("+1555000031{i}"), &format!("Reader {i}")).0).collect();
    for subscriber in &subscribers {
        subscriber.join_chat(channel).expect("join");
        subscriber.subscribe_chat(channel).expect("subscribe to live posts");
    }
    let posts: Vec<String> = (0..5).map(|i| format!("post {i}")).collect();
    for (index, post) in posts.iter().enumerate() {
        admin.send_message(channel, 1 + index as u64, post).expect("the admin posts");
    }
    for (index, subscriber) in subscribers.iter().enumerate() {
        let chat_posts = |events: &[LiveEvent]| -> Vec<String> {
            events
                .iter()
                .filter_map(|event| match event {
                    LiveEvent::Chat { chat, update, message: Some(message) }
                        if *chat == channel && matches!(update.update, Update::NewMessage { .. }) =>
                    {
                        Some(message.text.clone())
                    }
                    _ => None,
                })
                .collect()
        };
        let events =
            collect_updates(subscriber, Duration::from_secs(10), |events| chat_posts(events).len() >= posts.len());
        assert_eq!(chat_posts(&events), posts, "subscriber {index} gets every post live, in order");
    }
    let refused: ClientError = subscribers[0].send_message(channel, 99, "me too").expect_err("readers cannot post");
    assert_eq!(refused.code(), Some(ErrorCode::PermissionDenied));
}
