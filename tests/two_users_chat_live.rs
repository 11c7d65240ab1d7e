//! Two people log in with codes from the `file:` sender, talk in a private chat and see each
//! other's messages live, in order; groups and channels deliver to every member the same way.

mod support;

use std::time::Duration;

use ferrogram_net::client::{BlockingClient, ClientError};
use ferrogram_net::{ChatId, ErrorCode, LiveEvent, MessageId, Update};
use support::{cli_command, cli_login, collect_updates, Server};

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

/// Collects a client's live events until `done`, and a little longer, so that an event that
/// should not come has had its chance to.
fn collect_and_linger(client: &BlockingClient, done: impl FnMut(&[LiveEvent]) -> bool) -> Vec<LiveEvent> {
    let mut events = collect_updates(client, Duration::from_secs(10), done);
    events.extend(collect_updates(client, Duration::from_millis(300), |_| false));
    events
}

/// Checks one member's box as its client saw it: the pts of its live box events and of its
/// own sends' answers (`sender_pts`, given instead of a live copy) are never the same and
/// together leave no gap.
fn check_box_pts(name: &str, events: &[LiveEvent], own: &[u64]) {
    let live: Vec<u64> = events
        .iter()
        .filter_map(|event| match event {
            LiveEvent::Box { update, .. } => Some(update.pts.0),
            _ => None,
        })
        .collect();
    let twice: Vec<&u64> = live.iter().filter(|pts| own.contains(pts)).collect();
    assert!(twice.is_empty(), "{name} was sent its own sends live too, at pts {twice:?}");
    let mut all: Vec<u64> = live.iter().chain(own).copied().collect();
    all.sort_unstable();
    assert!(all.windows(2).all(|pair| pair[1] == pair[0] + 1), "{name}'s box has gaps: {all:?}");
}

// Alice and Bob sign up, open one private chat from both sides (the same chat), alternate
// messages, and each sees the other's messages live, with their bodies, in the order they
// were sent; their own come back as answers carrying their box pts, not as updates. The
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
    let mut own_pts = [Vec::new(), Vec::new()];
    for round in 0..10u64 {
        for (index, (name, client, base)) in [("alice", &alice, 1000), ("bob", &bob, 2000)].into_iter().enumerate() {
            let text = format!("{name} #{round}");
            let ack = client.send_message(chat, base + round, &text).expect("send");
            own_pts[index].push(ack.sender_pts.expect("the answer carries the sender's box pts").0);
            sent.push(text);
        }
    }
    for (index, (name, client)) in [("alice", &alice), ("bob", &bob)].into_iter().enumerate() {
        let theirs: Vec<String> = sent.iter().filter(|text| !text.starts_with(name)).cloned().collect();
        let events = collect_and_linger(client, |events| box_texts(events, chat).len() >= theirs.len());
        assert_eq!(box_texts(&events, chat), theirs, "{name} sees the other's messages live, in order");
        check_box_pts(name, &events, &own_pts[index]);
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
    let mut own_pts = vec![Vec::new(); members.len()];
    for round in 0..3u64 {
        for (index, (client, _)) in members.iter().enumerate() {
            let text = format!("member {index} round {round}");
            let ack = client.send_message(group, 1 + round * 10 + index as u64, &text).expect("send to the group");
            own_pts[index].push(ack.sender_pts.expect("the answer carries the sender's box pts").0);
            sent.push((index, text));
        }
    }
    for (index, (client, _)) in members.iter().enumerate() {
        let theirs: Vec<String> =
            sent.iter().filter(|(from, _)| *from != index).map(|(_, text)| text.clone()).collect();
        let events = collect_and_linger(client, |events| box_texts(events, group).len() >= theirs.len());
        assert_eq!(box_texts(&events, group), theirs, "member {index} sees the others' messages in order");
        check_box_pts(&format!("member {index}"), &events, &own_pts[index]);
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

// The terminal client shows a line it sent the way the others see it (sender and time). The
// server answers the send instead of streaming it back (PROTOCOL §5.2), so the client prints it
// from the answer; the peer's client shows it as it arrives.
#[test]
fn the_terminal_chat_shows_its_own_lines() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;

    let server = Server::start("cli-chat", &["--cores", "1"]);
    let alice_home = server.directory.join("alice-home");
    let bob_home = server.directory.join("bob-home");
    cli_login(&server, &alice_home, "+15550000401", "Alice Terminal");
    cli_login(&server, &bob_home, "+15550000402", "Bob Terminal");
    let mut chat = cli_command(&server, &alice_home, &["chat", "+15550000402"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferrogram chat");
    let mut stdin = chat.stdin.take().expect("stdin");
    writeln!(stdin, "hello from the terminal").expect("type a line");
    writeln!(stdin, "/quit").expect("type /quit");
    drop(stdin);
    let output = chat.wait_with_output().expect("ferrogram chat ends");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "chat failed: {}", String::from_utf8_lossy(&output.stderr));
    let own: Vec<&str> = stdout.lines().filter(|line| line.contains("hello from the terminal")).collect();
    assert_eq!(own.len(), 1, "the sent line shows once: {stdout}");
    assert!(own[0].contains("Alice"), "with its sender's name: {}", own[0]);

    let history = BufReader::new(
        cli_command(&server, &bob_home, &["history", "+15550000401"])
            .stdin(Stdio::null())
            .output()
            .expect("run ferrogram history")
            .stdout
            .as_slice(),
    )
    .lines()
    .map(|line| line.expect("UTF-8"))
    .find(|line| line.contains("hello from the terminal"))
    .expect("the peer has the message");
    assert_eq!(history.trim_start(), own[0].trim_start(), "both sides show the same line");
}
