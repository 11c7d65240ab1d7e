//! Media messages hold their files (DESIGN §7), end to end through the engine: a send and a
//! forward each take a reference, deleting a message gives its reference back through the
//! release outbox (after a restart too), the file goes only with its last message, and a
//! reference whose message never came is found by the leak check and given back.

mod media_support;

use std::time::{Duration, Instant};

use ferrogram_engine::media::{AccessHash, FileId, Holder, ReadError};
use ferrogram_engine::messaging::{ChatId, MediaKind, MessagingError, Messenger, NewMediaMessage, RandomId, UserId};
use ferrogram_engine::{Engine, EngineConfig};
use media_support::*;

fn engine_config(dir: &std::path::Path) -> EngineConfig {
    let mut config = config(dir, 2);
    config.media.holder_check_every_ms = 200;
    config.media.holder_grace_ms = 300;
    config
}

fn user(messenger: &Messenger, phone: &str) -> UserId {
    block_on(messenger.sign_up(phone, "U", "")).expect("sign up")
}

fn send(messenger: &Messenger, chat: ChatId, sender: UserId, random_id: u64, file: &FileRef) -> MessagingResultId {
    let message = NewMediaMessage {
        random_id: RandomId(random_id),
        caption: format!("caption {random_id}"),
        reply_to: None,
        kind: MediaKind::Document,
        file: file.0.raw(),
        access_hash: file.1.get(),
    };
    block_on(messenger.send_media(chat, sender, message)).map(|ack| ack.id)
}

type FileRef = (FileId, AccessHash, u64);
type MessagingResultId = Result<ferrogram_engine::messaging::MessageId, MessagingError>;

/// Message references on a file (anonymous and keyed), or `None` once the file is gone.
fn references(engine: &Engine, file: &FileRef) -> Option<u64> {
    match block_on(engine.media().file_info(file.0, file.1)) {
        Ok(info) => Some(info.references),
        Err(ferrogram_engine::media::MediaError::Store(ReadError::NotFound(_))) => None,
        Err(error) => panic!("file info: {error}"),
    }
}

/// Waits (at most 10 s) until `references` says `want`.
fn wait_references(engine: &Engine, file: &FileRef, want: Option<u64>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = references(engine, file);
        if now == want {
            return;
        }
        assert!(Instant::now() < deadline, "references stayed {now:?}, waited for {want:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn upload_file(engine: &Engine, seed: u64) -> (FileRef, Vec<u8>) {
    let bytes = pseudo_random(300 * KIB + 17, seed);
    let finished = upload(&engine.media(), 1, vshard(seed as u16 % 4096), &bytes, 64 * KIB, seed);
    ((finished.file, finished.access_hash, finished.size), bytes)
}

#[test]
fn media_messages_hold_their_files_until_the_last_one_goes() {
    let dir = temp_dir("media-messages");
    let engine = open(engine_config(&dir));
    let messenger = engine.messenger();
    let (alice, bob, carol) =
        (user(&messenger, "+15550100001"), user(&messenger, "+15550100002"), user(&messenger, "+15550100003"));
    let private = block_on(messenger.open_private(alice, bob)).expect("private chat");
    let group = block_on(messenger.create_group(bob, "group", &[carol])).expect("group");
    let (file, bytes) = upload_file(&engine, 11);
    assert_eq!(references(&engine, &file), Some(0), "only the uploader's reference so far");

    let original = send(&messenger, private, alice, 1, &file).expect("media send");
    assert_eq!(send(&messenger, private, alice, 1, &file), Ok(original), "a retry is the same message");
    assert_eq!(references(&engine, &file), Some(1));
    let media = block_on(messenger.message_media(private, bob, original)).expect("bob sees it");
    assert_eq!((media.file, media.size, media.name.as_str()), (file.0.raw(), bytes.len() as u64, "file.bin"));
    assert_eq!(
        block_on(messenger.message_media(private, carol, original)),
        Err(MessagingError::NotMember(carol)),
        "a non-member cannot reach the file"
    );
    let wrong = (file.0, AccessHash::new(file.1.get() ^ 1), file.2);
    assert_eq!(send(&messenger, private, alice, 2, &wrong), Err(MessagingError::FileUnavailable));

    // A forward shares the file: one more reference, no bytes.
    let forwarded = block_on(messenger.forward(bob, private, &[original], group, RandomId(50))).expect("forward");
    assert_eq!(references(&engine, &file), Some(2));
    // Copies whose random_id would be 0 (the first, or one past the largest) are refused
    // before anything is taken or appended.
    for (random_id, ids) in [(0, vec![original]), (u64::MAX, vec![original, original])] {
        let refused = block_on(messenger.forward(bob, private, &ids, group, RandomId(random_id)));
        assert!(matches!(refused, Err(MessagingError::InvalidArgument(_))), "{refused:?}");
    }
    assert_eq!(references(&engine, &file), Some(2));
    let copy = block_on(messenger.message_media(group, carol, forwarded[0].id)).expect("carol sees the copy");
    assert_eq!((copy.file, copy.access_hash), (media.file, media.access_hash));

    // Deleting the original gives one reference back; the copy still reads byte for byte.
    block_on(messenger.delete(private, alice, &[original], true)).expect("delete");
    wait_references(&engine, &file, Some(1));
    let read =
        download_file(&engine.media(), FileId::from_raw(copy.file), AccessHash::new(copy.access_hash), copy.size);
    assert!(read == bytes, "the forwarded copy reads back byte for byte");

    // The last message going takes the file, even across a restart between the tombstone
    // and the release.
    block_on(messenger.delete(group, bob, &[forwarded[0].id], true)).expect("delete the copy");
    engine.shutdown().expect("shutdown");
    drop((messenger, engine));
    let engine = open(engine_config(&dir));
    wait_references(&engine, &file, None);
    engine.shutdown().expect("shutdown");
}

#[test]
fn a_reference_without_its_message_is_found_and_given_back() {
    let dir = temp_dir("media-leak");
    let engine = open(engine_config(&dir));
    let messenger = engine.messenger();
    let (alice, bob) = (user(&messenger, "+15550200001"), user(&messenger, "+15550200002"));
    let chat = block_on(messenger.open_private(alice, bob)).expect("private chat");
    let (file, _) = upload_file(&engine, 12);
    let (kept, _) = upload_file(&engine, 13);
    let message = send(&messenger, chat, alice, 1, &kept).expect("media send");

    // A send that took its reference and then died before its message was appended.
    let holder = Holder { chat: chat.0, sender: alice.0, random_id: 7 };
    block_on(engine.media().take_holder(file.0, file.1, holder)).expect("take");
    assert_eq!(references(&engine, &file), Some(1));
    // The leak check gives it back (the holder had taken over the uploader's reference, so
    // the file goes), and never touches the reference of a real message.
    wait_references(&engine, &file, None);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(references(&engine, &kept), Some(1), "a real message keeps its reference");
    assert!(block_on(messenger.message_media(chat, bob, message)).is_ok());
    // A late retry of the dead send finds the file gone rather than a freed file.
    assert_eq!(send(&messenger, chat, alice, 7, &file), Err(MessagingError::FileUnavailable));
    engine.shutdown().expect("shutdown");
}

/// A forward racing the deletion of its original either fails cleanly (the file already went)
/// or leaves a copy whose file reads back byte for byte; it never leaves a message pointing at
/// a freed file.
#[test]
fn a_forward_racing_the_deletion_of_its_original_never_loses_the_file() {
    let dir = temp_dir("media-forward-race");
    let engine = open(engine_config(&dir));
    let messenger = engine.messenger();
    let (alice, bob, carol) =
        (user(&messenger, "+15550300001"), user(&messenger, "+15550300002"), user(&messenger, "+15550300003"));
    let private = block_on(messenger.open_private(alice, bob)).expect("private chat");
    let group = block_on(messenger.create_group(bob, "group", &[carol])).expect("group");
    let (mut forwarded, mut refused) = (0, 0);
    for round in 0..24u64 {
        let (file, bytes) = upload_file(&engine, 100 + round);
        let original = send(&messenger, private, alice, 1000 + round, &file).expect("media send");
        // Half the rounds let the delete start first, half the forward.
        let (first, second) = (round % 2 == 0, round % 2 == 1);
        let deleter = {
            let messenger = messenger.clone();
            std::thread::spawn(move || {
                if !first {
                    std::thread::sleep(Duration::from_micros(200));
                }
                block_on(messenger.delete(private, alice, &[original], true)).expect("delete");
            })
        };
        if !second {
            std::thread::sleep(Duration::from_micros(200));
        }
        let result = block_on(messenger.forward(bob, private, &[original], group, RandomId(5000 + round)));
        deleter.join().expect("deleter");
        match result {
            Ok(acks) if acks.len() == 1 => {
                forwarded += 1;
                let copy = block_on(messenger.message_media(group, carol, acks[0].id)).expect("the copy is visible");
                // Once the original's reference is back, only the copy holds the file.
                wait_references(&engine, &file, Some(1));
                let read = download_file(
                    &engine.media(),
                    FileId::from_raw(copy.file),
                    AccessHash::new(copy.access_hash),
                    copy.size,
                );
                assert!(read == bytes, "round {round}: the forwarded copy reads back byte for byte");
            }
            // The original was gone before the forward read it, or its file was.
            Ok(acks) => {
                assert!(acks.is_empty(), "round {round}: {acks:?}");
                refused += 1;
                wait_references(&engine, &file, None);
            }
            Err(MessagingError::FileUnavailable) => {
                refused += 1;
                wait_references(&engine, &file, None);
            }
            Err(error) => panic!("round {round}: the forward failed with {error}"),
        }
    }
    println!("{forwarded} forwards kept their file, {refused} found it gone");
    assert_eq!(forwarded + refused, 24);
    engine.shutdown().expect("shutdown");
}

/// A retry of a media send whose message was deleted meanwhile answers the (deleted)
/// original, and the reference it took again is found by the leak check and given back,
/// rather than confirmed and kept forever.
#[test]
fn a_retry_after_the_delete_does_not_keep_the_file() {
    let dir = temp_dir("media-retry-after-delete");
    let engine = open(engine_config(&dir));
    let messenger = engine.messenger();
    let (alice, bob) = (user(&messenger, "+15550500001"), user(&messenger, "+15550500002"));
    let chat = block_on(messenger.open_private(alice, bob)).expect("private chat");
    let (file, _) = upload_file(&engine, 21);
    let original = send(&messenger, chat, alice, 1, &file).expect("media send");
    // A second message keeps the file alive, so the retry can take its reference again.
    let keeper = send(&messenger, chat, alice, 2, &file).expect("media send");
    block_on(messenger.delete(chat, alice, &[original], true)).expect("delete");
    wait_references(&engine, &file, Some(1));
    assert_eq!(send(&messenger, chat, alice, 1, &file), Ok(original), "the retry answers the original");
    assert_eq!(references(&engine, &file), Some(2), "the retry took the reference again");
    // The leak check finds no live message under the retry's key and gives it back.
    wait_references(&engine, &file, Some(1));
    block_on(messenger.delete(chat, alice, &[keeper], true)).expect("delete");
    wait_references(&engine, &file, None);
    engine.shutdown().expect("shutdown");
}
