//! Media messages end to end, against the real `ferrogram serve` on two shards: a client reads
//! a file only through a message it can see. A member of the chat downloads a sent file byte
//! for byte and sees it in live updates and history; a non-member cannot, nor can a member who
//! deleted the message for themselves. A forwarded file is read by the recipient through the
//! copy while the bytes stay stored once; deleting the original for everyone leaves the copy
//! readable, and deleting the copy too frees the file. A retried `SendMedia` answers the same
//! message. The command-line client's `upload <peer> <path> --caption` and `download <peer>
//! <id> -o` round-trip a file.

mod support;

use std::time::Duration;

use ferrogram_net::{ErrorCode, LiveEvent, MediaKind, MessageId};
use support::{
    cli, cli_login, cli_ok, collect_updates, download_message, free_port, next_random_id, pseudo_random, send_file,
    upload, wait_for_media, Server,
};

const MIB: usize = 1 << 20;

// (1) to (3): who can read a file, through which message, and how long its bytes live.
#[test]
fn files_are_read_through_messages_their_readers_can_see() {
    let metrics = free_port();
    let server =
        Server::start("media-messages", &["--cores", "2", "--durability", "sync", "--metrics", &metrics.to_string()]);
    let (alice, _) = server.login("+15550007001", "Alice Sender");
    let (bob, bob_login) = server.login("+15550007002", "Bob Member");
    let (dave, _) = server.login("+15550007004", "Dave Outsider");
    let (eve, eve_login) = server.login("+15550007005", "Eve Recipient");
    let group = alice.create_group("photos", &[bob_login.user.id]).expect("group");
    let private = alice.open_private(eve_login.user.id).expect("private chat with eve");
    let baseline = wait_for_media(metrics, |_| true);

    // (1) A member downloads the file byte for byte, and sees it arrive live and in history.
    let content = pseudo_random(2 * MIB + 333, 1);
    let file = upload(&alice, &content, "holiday.jpg").file;
    let sent = alice.send_media(group, next_random_id(), file, MediaKind::Photo, "the beach").expect("send media");
    let live =
        collect_updates(&bob, Duration::from_secs(10), |events| events.iter().any(|event| carries(event, sent.id)));
    let live = live.iter().find_map(|event| match event {
        LiveEvent::Box { message: Some(message), .. } if message.id == sent.id => Some(message.clone()),
        _ => None,
    });
    let live = live.expect("the new message arrived live with its body");
    let media = live.media.expect("the live body carries the media");
    assert_eq!((media.kind, media.size, media.name.as_str()), (MediaKind::Photo, content.len() as u64, "holiday.jpg"));
    assert_eq!(live.text, "the beach", "the caption is the message's text");
    let history = bob.get_history(group, MessageId(0), 10).expect("history");
    assert_eq!(history.iter().find(|message| message.id == sent.id).and_then(|m| m.media.clone()), Some(media));
    assert!(download_message(&bob, group, sent.id, 4).expect("a member downloads") == content);
    let stored = wait_for_media(metrics, |figures| figures.files == baseline.files + 1);

    // A non-member cannot read it, whether by file info or by range.
    let refused = dave.get_file(group, sent.id, 0, 4096).expect_err("not a member");
    assert_eq!(refused.code(), Some(ErrorCode::PermissionDenied), "{refused}");
    let refused = download_message(&dave, group, sent.id, 1).expect_err("not a member");
    assert!(refused.to_string().contains("PERMISSION_DENIED"), "{refused}");

    // A member who deleted it for themselves no longer reaches the file through it; the others
    // still do.
    bob.call(ferrogram_net::Request::DeleteMessages { chat: group, ids: vec![sent.id], for_everyone: false })
        .expect("delete for me");
    let hidden = bob.get_file_info(group, sent.id).expect_err("deleted for bob");
    assert_eq!(hidden.code(), Some(ErrorCode::NotFound), "{hidden}");
    assert_eq!(bob.get_file(group, sent.id, 0, 4096).expect_err("deleted for bob").code(), Some(ErrorCode::NotFound));
    assert!(download_message(&alice, group, sent.id, 2).expect("alice still reads it") == content);

    // (2) Forwarded to Alice's private chat with Eve, who is not in the group: Eve reads the
    // file through the copy, not through the original, and no byte is stored twice.
    let forwarded = alice
        .call(ferrogram_net::Request::ForwardMessages {
            from_chat: group,
            ids: vec![sent.id],
            to_chat: private,
            random_id: next_random_id(),
        })
        .expect("forward");
    let ferrogram_net::Response::SentMany(copies) = forwarded else { panic!("expected SentMany, got {forwarded:?}") };
    let copy = copies[0].id;
    let shown = eve.get_messages(private, &[copy]).expect("the copy").pop().expect("visible to eve");
    assert!(shown.forwarded_from.is_some(), "a forwarded copy");
    assert_eq!(shown.media.expect("the copy carries the media").file, file, "the same file, not a new one");
    assert!(download_message(&eve, private, copy, 4).expect("the recipient downloads") == content);
    let outsider = eve.get_file(group, sent.id, 0, 4096).expect_err("eve is not in the group");
    assert_eq!(outsider.code(), Some(ErrorCode::PermissionDenied));
    // Scrapes come once a second: wait out one more sample before comparing.
    std::thread::sleep(Duration::from_millis(1200));
    let after_forward = wait_for_media(metrics, |_| true);
    let content_figures =
        |figures: &support::MediaFigures| (figures.files, figures.logical_bytes, figures.stored_bytes, figures.chunks);
    assert_eq!(content_figures(&after_forward), content_figures(&stored), "a forward stores nothing");

    // (3) Deleting the original for everyone gives its reference back; the copy keeps the file.
    // A second file, sent and deleted for everyone right after, shows when the releases have
    // been applied (they are given back in order): its file disappears from the metrics.
    let marker = upload(&alice, &pseudo_random(100_000, 2), "marker.bin").file;
    let marker_message = send_file(&alice, group, marker, "marker");
    wait_for_media(metrics, |figures| figures.files == stored.files + 1);
    let delete = |ids: Vec<MessageId>, chat| {
        alice
            .call(ferrogram_net::Request::DeleteMessages { chat, ids, for_everyone: true })
            .expect("delete for everyone")
    };
    delete(vec![sent.id, marker_message], group);
    let released = wait_for_media(metrics, |figures| figures.files == stored.files);
    assert_eq!(released.logical_bytes, stored.logical_bytes, "the forwarded copy keeps its file");
    let gone = alice.get_file_info(group, sent.id).expect_err("the original is deleted");
    assert_eq!(gone.code(), Some(ErrorCode::NotFound), "{gone}");
    assert!(download_message(&eve, private, copy, 4).expect("the copy still downloads") == content);

    // And deleting the copy as well frees the file: the copy was what held it.
    delete(vec![copy], private);
    wait_for_media(metrics, |figures| figures.files == baseline.files);
    let sent_again = alice.send_media(private, next_random_id(), file, MediaKind::Photo, "").expect_err("freed");
    assert_eq!(sent_again.code(), Some(ErrorCode::NotFound), "{sent_again}");
}

// (4) A retried SendMedia, with the same random_id, answers the message the first one sent
// (marked duplicate) and sends nothing more; the same random_id for another file is refused.
#[test]
fn retried_send_media_is_one_message() {
    let server = Server::start("media-retry", &["--cores", "2", "--durability", "sync"]);
    let (alice, _) = server.login("+15550007101", "Alice Retry");
    let (bob, bob_login) = server.login("+15550007102", "Bob Retry");
    let chat = alice.open_private(bob_login.user.id).expect("private chat");
    let content = pseudo_random(700_000, 3);
    let file = upload(&alice, &content, "report.pdf").file;
    let random_id = next_random_id();

    let first = alice.send_media(chat, random_id, file, MediaKind::Document, "v1").expect("send");
    let retry = alice.send_media(chat, random_id, file, MediaKind::Document, "v1").expect("retry");
    assert!(!first.duplicate && retry.duplicate, "{first:?} then {retry:?}");
    assert_eq!((retry.chat, retry.id), (first.chat, first.id), "the retry answers the same message");
    let history = bob.get_history(chat, MessageId(0), 10).expect("history");
    assert_eq!(history.iter().filter(|message| message.media.is_some()).count(), 1, "one message: {history:?}");
    assert!(download_message(&bob, chat, first.id, 2).expect("download") == content);

    let other = upload(&alice, &pseudo_random(10, 4), "other.bin").file;
    let reused = alice.send_media(chat, random_id, other, MediaKind::Document, "v1").expect_err("reused random_id");
    assert_eq!(reused.code(), Some(ErrorCode::Conflict), "{reused}");

    // The edge's checks: random_id 0, a caption over 1024 characters.
    let zero = alice.send_media(chat, 0, file, MediaKind::Document, "").expect_err("random_id 0");
    assert_eq!(zero.code(), Some(ErrorCode::InvalidArgument));
    let long = alice.send_media(chat, next_random_id(), file, MediaKind::Document, &"é".repeat(1025));
    assert_eq!(long.expect_err("long caption").code(), Some(ErrorCode::TooLarge));
    assert!(alice.send_media(chat, next_random_id(), file, MediaKind::Document, &"é".repeat(1024)).is_ok());
}

// (5) The command-line client sends a file with a caption and reads it back by message id,
// byte for byte; the recipient sees it in the history and downloads it under its own name.
#[test]
fn cli_upload_and_download_round_trip() {
    let server = Server::start("media-cli", &["--cores", "1", "--durability", "sync"]);
    let alice_home = server.directory.join("alice-home");
    let bob_home = server.directory.join("bob-home");
    cli_login(&server, &alice_home, "+15550007201", "Alice Cli");
    cli_login(&server, &bob_home, "+15550007202", "Bob Cli");
    let original = server.directory.join("cat.jpg");
    std::fs::write(&original, pseudo_random(3 * MIB + 5, 5)).expect("write the file");

    let path = original.to_str().expect("UTF-8 path");
    let output = cli_ok(&server, &alice_home, &["upload", "+15550007202", path, "--caption", "our cat"]);
    let id = output.trim().to_owned();
    assert!(id.parse::<u64>().is_ok(), "the message id on one line: {output}");

    let copy = server.directory.join("copy.jpg");
    let copy_path = copy.to_str().expect("UTF-8 path");
    cli_ok(&server, &alice_home, &["download", "+15550007202", &id, "-o", copy_path]);
    assert!(std::fs::read(&copy).expect("the copy") == std::fs::read(&original).expect("the original"));

    let history = cli_ok(&server, &bob_home, &["history", "+15550007201"]);
    assert!(history.contains("[photo cat.jpg, 3.00 MiB] our cat"), "{history}");
    let bob_copy = server.directory.join("bob-copy.jpg");
    cli_ok(&server, &bob_home, &["download", "+15550007201", &id, "-o", bob_copy.to_str().expect("UTF-8 path")]);
    assert!(std::fs::read(&bob_copy).expect("bob's copy") == std::fs::read(&original).expect("the original"));

    // A message that is not Bob's to see, or has no file, is refused with the server's reason.
    let outsider_home = server.directory.join("carol-home");
    cli_login(&server, &outsider_home, "+15550007203", "Carol Cli");
    let chat_of_alice_and_bob = cli_ok(&server, &alice_home, &["dialogs"]);
    let chat = chat_of_alice_and_bob.split("chat:").nth(1).expect("a dialog").trim().to_owned();
    let refused = cli(&server, &outsider_home, &["download", &format!("chat:{chat}"), &id, "-o", "/dev/null"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("PERMISSION_DENIED"), "{refused:?}");
}

/// Whether `event` is the live new message `id`.
fn carries(event: &LiveEvent, id: MessageId) -> bool {
    matches!(event, LiveEvent::Box { message: Some(message), .. } if message.id == id)
}
