//! Push notifications through the real `ferrogram serve` with a webhook relay on loopback: a
//! message to an offline user whose relay is down stays a durable job across a `kill -9` and is
//! delivered once after the restart; reading the chat on a device cancels the push still being
//! collected; an online recipient gets none.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrogram_net::{DeviceKind, Request, Response, UserId};
use support::{free_port, Server};

/// The relay: records every POSTed JSON body and answers 200, keeping connections open.
struct Relay {
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Relay {
    fn on(address: SocketAddr) -> Relay {
        let listener = TcpListener::bind(address).expect("bind the relay");
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let recorded = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let recorded = recorded.clone();
                std::thread::spawn(move || serve(stream, recorded));
            }
        });
        Relay { bodies }
    }

    fn bodies(&self) -> Vec<serde_json::Value> {
        self.bodies.lock().expect("lock").clone()
    }
}

fn serve(stream: TcpStream, recorded: Arc<Mutex<Vec<serde_json::Value>>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => {
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
            }
        }
        let mut body = vec![0; length.min(1 << 20)];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if let Ok(json) = serde_json::from_slice(&body) {
            recorded.lock().expect("lock").push(json);
        }
        let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        if writer.write_all(answer).is_err() {
            return;
        }
    }
}

fn scrape(address: SocketAddr) -> String {
    let Ok(mut stream) = TcpStream::connect(address) else { return String::new() };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nhost: test\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
}

fn metric(address: SocketAddr, name: &str) -> u64 {
    scrape(address)
        .lines()
        .find(|line| line.starts_with(name) && line.as_bytes().get(name.len()) == Some(&b' '))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `user` has an online session, as another user sees it.
fn online(client: &ferrogram_net::client::BlockingClient, user: UserId) -> bool {
    match client.call(Request::GetPresence { user }) {
        Ok(Response::Presence { online, .. }) => online,
        other => panic!("presence: {other:?}"),
    }
}

#[test]
fn pushes_survive_a_kill_and_reading_cancels_them() {
    let relay_address = free_port();
    let metrics = free_port();
    let directory = std::env::temp_dir().join(format!("ferrogram-push-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("directory");
    let secret = directory.join("relay.secret");
    std::fs::write(&secret, "relay secret\n").expect("secret");
    let config = directory.join("ferrogram.toml");
    // A 3 s window: long enough for a reader to cancel a push that is still collecting.
    std::fs::write(
        &config,
        format!(
            "[push]\nwebhook_url = \"http://{relay_address}/relay\"\nwebhook_secret_file = \"{}\"\n\
             coalescing_window_ms = 3000\n",
            secret.display()
        ),
    )
    .expect("config");
    let config = config.display().to_string();
    let metrics_flag = metrics.to_string();
    let mut server = Server::start("push-e2e", &["--cores", "2", "--config", &config, "--metrics", &metrics_flag]);

    let (alice, _) = server.login("+15550000801", "Alice Sender");
    let (bob, bob_login) = server.login("+15550000802", "Bob Phone");
    let bob_id = bob_login.user.id;
    let chat = alice.open_private(bob_id).expect("private chat");
    bob.register_device(DeviceKind::Webhook, "bob-phone", false, false).expect("register");
    drop(bob);
    wait_until(Duration::from_secs(10), "Bob to go offline", || !online(&alice, bob_id));

    // The relay is down: the push fails and its job stays in Bob's outbox through a kill.
    let first = alice.send_message(chat, 1, "are you there?").expect("send").id;
    wait_until(Duration::from_secs(30), "a failed push attempt", || {
        metric(metrics, "ferrogram_push_failed_total") >= 1
    });
    server.kill();
    let relay = Relay::on(relay_address);
    server.spawn();
    wait_until(Duration::from_secs(30), "the push after the restart", || !relay.bodies().is_empty());
    wait_until(Duration::from_secs(30), "its job to leave the outbox", || {
        metric(metrics, "ferrogram_push_host_jobs_removed_total") >= 1
    });
    let bodies = relay.bodies();
    assert_eq!(bodies.len(), 1, "delivered once: {bodies:?}");
    assert_eq!(bodies[0]["token"], "bob-phone");
    assert_eq!(bodies[0]["message"], first.0.to_string());
    assert_eq!(bodies[0]["title"], "Alice Sender");
    assert_eq!(bodies[0]["badge"].as_u64(), Some(1));

    // Reading on a device while the next push is still collecting cancels it.
    let (alice, _) = server.login("+15550000801", "Alice Sender");
    let second = alice.send_message(chat, 2, "did you read this?").expect("send").id;
    let (bob, _) = server.login("+15550000802", "Bob Phone");
    bob.read_history(chat, second).expect("read");
    drop(bob);
    wait_until(Duration::from_secs(10), "Bob to go offline again", || !online(&alice, bob_id));
    wait_until(Duration::from_secs(30), "the cancelled push to be dropped", || {
        metric(metrics, "ferrogram_push_dropped_cancelled_total") >= 1
    });

    // While Bob is online nothing is queued; offline again, the next message is pushed.
    let (bob, _) = server.login("+15550000802", "Bob Phone");
    alice.send_message(chat, 3, "you are online now").expect("send");
    drop(bob);
    wait_until(Duration::from_secs(10), "Bob to go offline once more", || !online(&alice, bob_id));
    let last = alice.send_message(chat, 4, "and offline again").expect("send").id;
    wait_until(Duration::from_secs(30), "the last push", || relay.bodies().len() >= 2);
    wait_until(Duration::from_secs(30), "every job to leave the outboxes", || {
        metric(metrics, "ferrogram_push_host_jobs_removed_total") >= 3
    });
    let bodies = relay.bodies();
    let messages: Vec<&str> = bodies.iter().filter_map(|body| body["message"].as_str()).collect();
    let expected = [first.0.to_string(), last.0.to_string()];
    assert_eq!(messages, expected.iter().map(String::as_str).collect::<Vec<_>>(), "pushes: {bodies:?}");
    assert_eq!(bodies[1]["badge"].as_u64(), Some(2), "two unread after the read at message {}", second.0);

    assert!(server.terminate(), "a graceful stop");
    let _ = std::fs::remove_dir_all(&directory);
}
