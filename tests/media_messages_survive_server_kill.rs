//! Media messages through `kill -9`: a client uploads files, sends each as a media message and
//! deletes every other one for everyone, while the server is killed at an arbitrary moment.
//! After the restart every acknowledged message that was not deleted downloads byte for byte,
//! every acknowledged delete holds, a retry of the send in flight is one message, and the
//! files of deleted messages are given back (the release outbox survived the kill).

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrogram_net::{ChatId, FileRef, MediaKind, MessageId, Request, Response};
use support::{download_message, free_port, pseudo_random, wait_for_media, Server};

const FILE_BYTES: usize = 96 * 1024;

/// What the client was told, in order.
#[derive(Default)]
struct Log {
    /// Files whose upload was acknowledged: (seed, reference).
    uploaded: Vec<(u64, FileRef)>,
    /// Sends acknowledged: (seed, random_id, message).
    sent: Vec<(u64, u64, MessageId)>,
    /// The send that was in flight when the connection broke: (seed, random_id, file).
    in_flight: Option<(u64, u64, FileRef)>,
    deleted: Vec<MessageId>,
}

fn content(seed: u64) -> Vec<u8> {
    pseudo_random(FILE_BYTES + seed as usize, 0xF11E_0000 + seed)
}

fn run_until_killed(client: ferrogram_net::BlockingClient, chat: ChatId, log: Arc<Mutex<Log>>) {
    for seed in 0..10_000u64 {
        let options = ferrogram_net::transfer::UploadOptions { name: format!("f{seed}"), ..Default::default() };
        let bytes = content(seed);
        let Ok(file) = client.upload_file(&bytes[..], Some(bytes.len() as u64), &options, |_| {}) else { return };
        log.lock().expect("log").uploaded.push((seed, file.file));
        let random_id = 1_000 + seed;
        log.lock().expect("log").in_flight = Some((seed, random_id, file.file));
        let Ok(sent) = client.send_media(chat, random_id, file.file, MediaKind::Document, "") else { return };
        {
            let mut log = log.lock().expect("log");
            log.in_flight = None;
            log.sent.push((seed, random_id, sent.id));
        }
        if seed % 2 == 1 {
            let delete = Request::DeleteMessages { chat, ids: vec![sent.id], for_everyone: true };
            if client.call(delete).is_err() {
                return;
            }
            log.lock().expect("log").deleted.push(sent.id);
        }
    }
}

#[test]
fn acknowledged_media_messages_survive_server_kill() {
    let metrics = free_port();
    let mut server = Server::start("media-kill", &["--cores", "2", "--metrics", &metrics.to_string()]);
    let (alice, _) = server.login("+15550400001", "Alice");
    let (_, bob_login) = server.login("+15550400002", "Bob");
    let chat = alice.open_private(bob_login.user.id).expect("private chat");
    let log = Arc::new(Mutex::new(Log::default()));
    let worker = {
        let log = log.clone();
        std::thread::spawn(move || run_until_killed(alice, chat, log))
    };
    // Kill once some messages are acknowledged, at a moment the test does not choose.
    let deadline = Instant::now() + Duration::from_secs(60);
    while log.lock().expect("log").sent.len() < 12 {
        assert!(Instant::now() < deadline, "no sends acknowledged within 60 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(u64::from(std::process::id() % 97)));
    server.kill();
    worker.join().expect("worker");
    let log = Arc::try_unwrap(log).ok().expect("one owner").into_inner().expect("log");

    server.spawn();
    let (alice, _) = server.login("+15550400001", "Alice");
    let (bob, _) = server.login("+15550400002", "Bob");
    let mut messages: Vec<(u64, MessageId)> = log.sent.iter().map(|&(seed, _, id)| (seed, id)).collect();
    // The send in flight: its retry is one message, whether or not the original was appended.
    if let Some((seed, random_id, file)) = log.in_flight {
        match alice.send_media(chat, random_id, file, MediaKind::Document, "") {
            Ok(sent) => messages.push((seed, sent.id)),
            // Its upload finished but the file's reference could not be taken: only when the
            // file is gone, which a file just uploaded is not.
            Err(error) => panic!("the retry of the send in flight failed: {error}"),
        }
    }
    let ids: Vec<MessageId> = messages.iter().map(|&(_, id)| id).collect();
    let mut states = Vec::new();
    for page in ids.chunks(100) {
        let Ok(Response::Messages(found)) = bob.call(Request::GetMessages { chat, ids: page.to_vec() }) else {
            panic!("get messages")
        };
        states.extend(found);
    }
    let mut live_files = 0;
    for &(seed, id) in &messages {
        let deleted_acked = log.deleted.contains(&id);
        match states.iter().find(|message| message.id == id) {
            Some(message) if !message.deleted => {
                assert!(!deleted_acked, "message {id:?} was deleted (acknowledged) but is back");
                assert!(message.media.is_some(), "message {id:?} lost its media");
                let bytes = download_message(&bob, chat, id, 4).expect("download");
                assert!(bytes == content(seed), "message {id:?} downloads byte for byte");
                live_files += 1;
            }
            // Deleted (acknowledged, or the delete in flight was appended), or hidden.
            _ => {
                assert!(
                    deleted_acked || seed % 2 == 1,
                    "acknowledged message {id:?} (seed {seed}) is missing after the restart"
                );
                assert!(download_message(&bob, chat, id, 1).is_err(), "a deleted message's file is not readable");
            }
        }
    }
    // Uploaded but never sent: the file waits for a message under its uploader reference.
    let sent_seeds: Vec<u64> = messages.iter().map(|&(seed, _)| seed).collect();
    let unsent = log.uploaded.iter().filter(|(seed, _)| !sent_seeds.contains(seed)).count() as u64;
    // The files of deleted messages go back (through the release outbox, replayed after the
    // kill); an upload finished but not acknowledged at the kill may add one more file.
    let expected = live_files + unsent;
    let figures = wait_for_media(metrics, |figures| figures.files >= expected && figures.files <= expected + 1);
    println!(
        "{} sent, {} deleted, {live_files} live, {unsent} unsent; files {} after the restart",
        messages.len(),
        log.deleted.len(),
        figures.files
    );
}
