//! SIGTERM stops the server gracefully: requests in flight are answered, the process exits 0,
//! and a restart on the same data directory has every acknowledged message.

mod support;

use ferrogram_net::{MessageId, Request, Response};
use support::Server;

// Sends a burst of messages, signals SIGTERM while they may still be in flight, and checks the
// exit status and that every message the client saw acknowledged is there after a restart.
#[test]
fn sigterm_answers_in_flight_requests_and_exits_cleanly() {
    let mut server = Server::start("graceful", &["--cores", "2"]);
    let (alice, alice_login) = server.login("+15550000901", "Alice Shutdown");
    let (_bob, bob_login) = server.login("+15550000902", "Bob Shutdown");
    let chat = alice.open_private(bob_login.user.id).expect("open");

    let client = alice.client().clone();
    let burst = std::thread::spawn(move || {
        let requests: Vec<Request> = (1..=150)
            .map(|i| Request::SendMessage { chat, random_id: i, text: format!("message {i}"), reply_to: None })
            .collect();
        futures_lite::future::block_on(client.call_many(requests))
    });
    std::thread::sleep(std::time::Duration::from_millis(5));
    assert!(server.terminate(), "the server exits 0 after SIGTERM");
    let answers = burst.join().expect("the burst thread");
    let acknowledged: Vec<u64> = answers
        .iter()
        .filter_map(|answer| match answer {
            Ok(Response::Sent(sent)) => Some(sent.id.0),
            _ => None,
        })
        .collect();

    server.spawn();
    let (client, response) = server.reconnect(&alice_login.token);
    assert!(matches!(response, Response::Authorized { .. }), "the token survives a restart");
    let mut ids = Vec::new();
    let mut offset = MessageId(0);
    loop {
        let page = client.get_history(chat, offset, 100).expect("history");
        let Some(last) = page.last() else { break };
        offset = last.id;
        ids.extend(page.iter().map(|message| message.id.0));
    }
    for id in &acknowledged {
        assert!(ids.contains(id), "acknowledged message {id} is in the history after a graceful restart");
    }
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len(), "no message twice");
}
