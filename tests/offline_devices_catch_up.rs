//! A user whose devices were offline while messages arrived gets exactly the missed updates
//! on reconnect, on each device; typing and presence reach online peers only.

mod support;

use std::time::Duration;

use ferrogram_net::{LiveEvent, MessageId, Request, Response, Update};
use support::{collect_updates, Server};

// Alice logs in on two devices, both go offline, Bob sends, edits and deletes; each device
// reconnects with its own token, asks for the difference from the pts it had, and gets
// exactly the missed updates, with dense pts and the bodies of the messages; asking again
// from the new pts gives nothing.
#[test]
fn each_device_gets_exactly_the_missed_updates() {
    let server = Server::start("offline-catch-up", &["--cores", "2"]);
    let (phone, device_a) = server.login("+15550000401", "Alice Away");
    let (tablet, device_b) = server.login("+15550000401", "Alice Away");
    assert_eq!(device_a.user.id, device_b.user.id);
    assert_ne!(device_a.authorization, device_b.authorization, "each device has its own authorization");
    let (bob, bob_login) = server.login("+15550000402", "Bob Busy");
    let chat = bob.open_private(device_a.user.id).expect("open the chat");
    bob.send_message(chat, 1, "before you left").expect("send");
    // Both devices see the first message live; remember the pts each applied.
    let mut last_pts = Vec::new();
    for device in [&phone, &tablet] {
        let events = collect_updates(device, Duration::from_secs(10), |events| !events.is_empty());
        let pts = events
            .iter()
            .filter_map(|event| match event {
                LiveEvent::Box { update, .. } => Some(update.pts),
                _ => None,
            })
            .max()
            .expect("a live update arrived");
        last_pts.push(pts);
    }
    drop(phone);
    drop(tablet);

    let texts = ["one", "two", "three", "four", "five"];
    for (index, text) in texts.iter().enumerate() {
        bob.send_message(chat, 10 + index as u64, text).expect("send while alice is away");
    }
    bob.call(Request::EditMessage { chat, id: MessageId(3), text: "two, edited".into() }).expect("edit");
    bob.call(Request::DeleteMessages { chat, ids: vec![MessageId(4)], for_everyone: true }).expect("delete");

    for (device, (token, pts)) in [device_a.token, device_b.token].iter().zip(&last_pts).enumerate() {
        let (client, response) = server.reconnect(token);
        let Response::Authorized { user, state, .. } = response else { panic!("device {device}: {response:?}") };
        assert_eq!(user.id, device_a.user.id);
        let difference = client.get_difference(*pts, 1000).expect("difference");
        assert!(!difference.slice);
        let mut expected_pts = pts.0;
        for update in &difference.updates {
            expected_pts += 1;
            assert_eq!(update.pts.0, expected_pts, "device {device}: pts are dense");
        }
        assert_eq!(difference.state.pts, state.pts, "the difference ends at the state the login reported");
        let kinds: Vec<String> = difference
            .updates
            .iter()
            .map(|update| match &update.update {
                Update::NewMessage { id, .. } => format!("new {}", id.0),
                Update::EditMessage { id, .. } => format!("edit {}", id.0),
                Update::DeleteMessages { ids, .. } => {
                    format!("delete {:?}", ids.iter().map(|id| id.0).collect::<Vec<_>>())
                }
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            ["new 2", "new 3", "new 4", "new 5", "new 6", "edit 3", "delete [4]"],
            "device {device} gets exactly the missed updates"
        );
        let bodies: Vec<(u64, String)> =
            difference.messages.iter().map(|message| (message.id.0, message.text.clone())).collect();
        assert!(bodies.contains(&(3, "two, edited".into())), "the edited body: {bodies:?}");
        assert!(bodies.contains(&(6, "five".into())));
        assert!(!bodies.iter().any(|(id, text)| *id == 4 && !text.is_empty()), "a deleted message shows no text");
        let again = client.get_difference(difference.state.pts, 1000).expect("difference again");
        assert!(again.updates.is_empty(), "nothing new after catching up");
    }
    let _ = bob_login;
}

// Typing reaches the online peer and is never stored; presence says online while a session is
// connected, and a peer who asked is told live when it goes offline (with a last-seen time)
// and comes back.
#[test]
fn typing_and_presence_reach_online_peers() {
    let server = Server::start("typing-presence", &["--cores", "2"]);
    let (alice, alice_login) = server.login("+15550000501", "Alice Typist");
    let (bob, bob_login) = server.login("+15550000502", "Bob Watcher");
    let chat = bob.open_private(alice_login.user.id).expect("open");
    let before = alice.get_state().expect("state");

    bob.set_typing(chat).expect("bob types");
    let events = collect_updates(&alice, Duration::from_secs(10), |events| {
        events.iter().any(|event| matches!(event, LiveEvent::Typing { .. }))
    });
    assert!(events.contains(&LiveEvent::Typing { chat, user: bob_login.user.id }), "alice sees bob typing: {events:?}");
    assert_eq!(alice.get_state().expect("state").pts, before.pts, "typing is not an update of the box");

    let presence = |client: &ferrogram_net::client::BlockingClient| match client
        .call(Request::GetPresence { user: alice_login.user.id })
        .expect("presence")
    {
        Response::Presence { online, last_seen } => (online, last_seen),
        other => panic!("expected Presence, got {other:?}"),
    };
    assert!(presence(&bob).0, "alice is online while connected");
    // Asking watches: bob is told live when alice goes offline and comes back.
    drop(alice);
    let is_presence = |event: &LiveEvent| matches!(event, LiveEvent::Presence { .. });
    let events = collect_updates(&bob, Duration::from_secs(10), |events| events.iter().any(is_presence));
    let offline = events.iter().find(|event| is_presence(event)).expect("bob is told alice went offline");
    let LiveEvent::Presence { user, online, last_seen } = offline else { unreachable!() };
    assert_eq!((*user, *online), (alice_login.user.id, false));
    assert!(last_seen.0 > 0, "a last-seen time once offline");
    assert_eq!(presence(&bob), (false, *last_seen), "asking agrees with what was pushed");

    let (_alice_again, _) = server.reconnect(&alice_login.token);
    let events = collect_updates(&bob, Duration::from_secs(10), |events| events.iter().any(is_presence));
    assert!(
        events.iter().any(
            |event| matches!(event, LiveEvent::Presence { user, online: true, .. } if *user == alice_login.user.id)
        ),
        "bob is told alice is back: {events:?}"
    );
}
