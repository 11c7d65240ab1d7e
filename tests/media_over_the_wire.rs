//! Uploads and downloads over the wire, against the real `ferrogram serve`, with every file
//! read back through a media message (a file is read only through a message its reader can
//! see): files of awkward sizes (empty, one byte, exact part multiples, one byte over, a few
//! MiB) come back byte for byte, whole and by range, through connections on either shard;
//! parts sent out of order and again are accepted; a finish with parts missing names them, and
//! the upload finishes once they come; an announced size over the maximum, an oversized part
//! and a misaligned range are refused with typed errors; a `SendMedia` with a wrong access
//! hash is refused exactly like one naming a file that does not exist, `GetFile` on a message
//! without media is a bad argument, and a non-member cannot read a message's file; many
//! ranges in flight wait on the server rather than closing the connection. On one shard, the
//! same file uploaded by two users takes its space once (the metrics and `ferrogram admin
//! stats` say so), and a SIGKILL right after an upload's finish loses nothing: the file can
//! still be sent after a restart and both files download byte for byte, through the
//! command-line client too.

mod support;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use ferrogram_net::codec;
use ferrogram_net::frame::FrameType;
use ferrogram_net::limits::FILE_BYTES_MAX;
use ferrogram_net::limits::PROTOCOL_VERSION;
use ferrogram_net::transfer::UploadOptions;
use ferrogram_net::{
    ChatId, ClientError, ErrorCode, FileId, FileRef, Hello, MediaKind, MessageId, Outcome, Request, Response, UploadId,
};
use support::{
    cli, cli_login, cli_ok, download_message, free_port, next_random_id, pseudo_random, send_file, upload,
    wait_for_media, Server,
};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

// Round trips of every awkward size, both through the library's whole-file transfers and part
// by part, out of order and with a part sent twice, each file sent to a private chat and read
// by the other side; then every refusal, on a server of two shards (so reads also cross from
// the connection's shard to the chat's and the file's).
#[test]
fn files_round_trip_and_refusals_are_typed() {
    let server = Server::start("media-wire", &["--cores", "2", "--durability", "sync"]);
    let (alice, alice_login) = server.login("+15550006001", "Alice Media");
    let (bob, _) = server.login("+15550006002", "Bob Media");
    let (carol, _) = server.login("+15550006003", "Carol Outsider");
    let chat = alice.open_private(bob.get_self().expect("bob").id).expect("private chat");

    let cases: [(usize, usize); 7] = [
        (0, 512 * KIB),
        (1, 512 * KIB),
        (4 * KIB, 4 * KIB),
        (MIB, 512 * KIB),
        (MIB + 1, 512 * KIB),
        (3 * MIB + 12_345, 128 * KIB),
        (5 * MIB + 7, 512 * KIB),
    ];
    let mut files = Vec::new();
    for (index, (size, part_bytes)) in cases.into_iter().enumerate() {
        let content = pseudo_random(size, index as u64 + 1);
        let options = UploadOptions {
            name: format!("case-{index}.bin"),
            mime_type: "application/octet-stream".into(),
            part_bytes,
            ..UploadOptions::default()
        };
        let uploaded = alice.upload_file(content.as_slice(), Some(size as u64), &options, |_| {}).expect("upload");
        assert_eq!(uploaded.size, size as u64);
        let message = send_file(&alice, chat, uploaded.file, &format!("case {index}"));
        // Bob reads it through the message: its description, then its bytes.
        let info = bob.get_file_info(chat, message).expect("info");
        assert_eq!((info.size, info.name.as_str()), (size as u64, options.name.as_str()));
        let shown = bob.get_messages(chat, &[message]).expect("the message").pop().expect("visible");
        let media = shown.media.expect("a media message");
        assert_eq!((media.size, media.kind, media.file), (size as u64, MediaKind::Document, uploaded.file));
        assert!(download_message(&bob, chat, message, 4).expect("download") == content, "size {size}");
        files.push((message, content));
    }

    // A range inside the file, and one past its end.
    let (big, content) = &files[5];
    let range = alice.get_file(chat, *big, 1 << 20, 8 * KIB as u32).expect("a range");
    assert!(range == content[MIB..MIB + 8 * KIB]);
    let past = alice.get_file(chat, *big, 8 << 20, 4096).expect("past the end");
    assert!(past.is_empty());

    // Part by part: out of order, part 0 sent twice.
    let content = pseudo_random(2 * MIB + 100, 77);
    let parts: Vec<&[u8]> = content.chunks(256 * KIB).collect();
    let upload_id = alice.upload_start(42, Some(content.len() as u64)).expect("start");
    assert_eq!(alice.upload_start(42, Some(content.len() as u64)).expect("start again"), upload_id, "a retried start");
    for part in [8, 3, 0, 5, 1, 7, 2, 6, 4] {
        assert!(!alice.upload_part(upload_id, part, parts[part as usize].to_vec()).expect("part"), "part {part}");
    }
    assert!(alice.upload_part(upload_id, 0, parts[0].to_vec()).expect("a retried part"), "a retry is a duplicate");
    let conflict = alice.upload_part(upload_id, 3, vec![0; 256 * KIB]).expect_err("other bytes for a stored part");
    assert_eq!(conflict.code(), Some(ErrorCode::Conflict));
    let finished = alice.upload_finish(upload_id, 9, None, "shuffled.bin", "").expect("finish");
    let message = send_file(&alice, chat, finished.file, "");
    assert!(download_message(&bob, chat, message, 1).expect("download") == content);

    // Missing parts are named; the upload stays open, and finishes once they arrive.
    let content = pseudo_random(5 * 64 * KIB, 78);
    let parts: Vec<&[u8]> = content.chunks(64 * KIB).collect();
    let upload_id = bob.upload_start(0, None).expect("start");
    for part in [0, 2, 4] {
        bob.upload_part(upload_id, part, parts[part as usize].to_vec()).expect("part");
    }
    let missing = bob.upload_finish(upload_id, 5, None, "gappy.bin", "").expect_err("parts missing");
    assert_eq!(missing.code(), Some(ErrorCode::FilePartsMissing));
    assert_eq!(missing.error_body().map(|body| body.message.as_str()), Some("2 parts are missing: 1, 3"));
    for part in [3, 1] {
        bob.upload_part(upload_id, part, parts[part as usize].to_vec()).expect("the missing part");
    }
    let finished = bob.upload_finish(upload_id, 5, Some(content.len() as u64), "gappy.bin", "").expect("finish");
    let message = send_file(&bob, chat, finished.file, "from bob");
    assert!(download_message(&alice, chat, message, 2).expect("download") == content);

    // Sizes: an announced total over the maximum, a part over 512 KiB, a part number past the
    // last; and a cancelled upload takes no more parts.
    let refused = |result: Result<UploadId, ClientError>| result.expect_err("refused").code();
    assert_eq!(refused(alice.upload_start(0, Some(FILE_BYTES_MAX + 1))), Some(ErrorCode::TooLarge));
    let upload_id = alice.upload_start(0, None).expect("start");
    let oversized = alice.upload_part(upload_id, 0, vec![1; 512 * KIB + 1]).expect_err("oversized part");
    assert_eq!(oversized.code(), Some(ErrorCode::TooLarge));
    assert_eq!(
        alice.upload_part(upload_id, 4096, vec![1; 1024]).expect_err("part 4096").code(),
        Some(ErrorCode::TooLarge)
    );
    assert_eq!(
        alice.upload_part(upload_id, 0, Vec::new()).expect_err("empty").code(),
        Some(ErrorCode::InvalidArgument)
    );
    alice.upload_cancel(upload_id).expect("cancel");
    let gone = alice.upload_part(upload_id, 0, vec![1; 1024]).expect_err("a part after cancel");
    assert_eq!(gone.code(), Some(ErrorCode::NotFound));

    // Download ranges: misaligned offset, bad limit, a range crossing a 1 MiB boundary.
    let (message, _) = files[6];
    let range_error = |offset: u64, limit: u32| {
        let error = alice.get_file(chat, message, offset, limit).expect_err("refused range");
        assert_eq!(error.code(), Some(ErrorCode::InvalidArgument), "{error}");
        error.to_string()
    };
    assert!(range_error(100, 4096).contains("offset 100"));
    assert!(range_error(0, 1000).contains("limit 1000"));
    assert!(range_error(0, 2 << 20).contains("limit"));
    assert!(range_error(4096, 1 << 20).contains("crosses a 1 MiB boundary"));

    // Sending a file with a wrong access hash reads exactly like sending one that does not
    // exist, and sends nothing.
    let file = upload(&alice, b"a file to name wrongly", "wrong.bin").file;
    let wrong = FileRef { id: file.id, access_hash: file.access_hash ^ 1 };
    let absent = FileRef { id: FileId(file.id.0 + (1 << 40)), access_hash: file.access_hash };
    let top_before = alice.get_history(chat, MessageId(0), 1).expect("history")[0].id;
    let send = |file: FileRef| alice.send_media(chat, next_random_id(), file, MediaKind::Photo, "");
    let wrong_error = send(wrong).expect_err("wrong hash");
    let absent_error = send(absent).expect_err("no such file");
    assert_eq!(wrong_error.code(), Some(ErrorCode::NotFound), "{wrong_error}");
    assert_eq!(wrong_error.error_body(), absent_error.error_body(), "the two answers are the same");
    assert_eq!(alice.get_history(chat, MessageId(0), 1).expect("history")[0].id, top_before, "nothing was sent");

    // A message without media has no file; a chat the reader is not in keeps its files to
    // itself, whatever the reader knows of its ids.
    let text = alice.send_message(chat, next_random_id(), "just text").expect("text message").id;
    let no_media = bob.get_file(chat, text, 0, 4096).expect_err("no media");
    assert_eq!(no_media.code(), Some(ErrorCode::InvalidArgument), "{no_media}");
    assert_eq!(bob.get_file_info(chat, text).expect_err("no media").code(), Some(ErrorCode::InvalidArgument));
    let outsider = carol.get_file(chat, message, 0, 4096).expect_err("not a member");
    assert_eq!(outsider.code(), Some(ErrorCode::PermissionDenied), "{outsider}");
    assert_eq!(carol.get_file_info(chat, message).expect_err("not a member").code(), Some(ErrorCode::PermissionDenied));
    let unknown = bob.get_file(chat, MessageId(10_000), 0, 4096).expect_err("no such message");
    assert_eq!(unknown.code(), Some(ErrorCode::NotFound), "{unknown}");
    assert!(!alice.is_closed() && !bob.is_closed() && !carol.is_closed(), "refusals leave the connections open");

    // Far more ranges in flight than the connection's queue holds: they wait on the server,
    // the connection stays open, and the file arrives whole; even from a client that asks for
    // 16 MiB at once and reads nothing for a while.
    let (message, content) = &files[6];
    assert!(download_message(&alice, chat, *message, 32).expect("download") == *content);
    assert!(!alice.is_closed());
    let content = pseudo_random(16 * MIB, 80);
    let big = upload(&alice, &content, "sixteen.bin");
    let message = send_file(&alice, chat, big.file, "sixteen");
    let ranges = download_without_reading(&server, &alice_login.token, chat, message, 16);
    assert!(ranges.concat() == content, "every range came, in full, on the same connection");

    // Without a login, media requests need one.
    let anonymous = server.connect();
    assert_eq!(anonymous.upload_start(0, None).expect_err("anonymous").code(), Some(ErrorCode::AuthRequired));
    assert_eq!(anonymous.get_file_info(chat, message).expect_err("anonymous").code(), Some(ErrorCode::AuthRequired));
}

// On one shard: Alice and Bob upload the same bytes; the second upload adds a file and its
// logical size but no stored bytes. A SIGKILL right after Bob's upload finishes, then a
// restart: Bob sends the file he uploaded before the kill, and a member of the group reads
// both messages' files byte for byte. Carol's upload and download through the command-line
// client work, and `ferrogram admin stats` reports the dedup.
#[test]
fn same_file_is_stored_once_and_survives_kill() {
    let metrics = free_port();
    let mut server =
        Server::start("media-dedup", &["--cores", "1", "--durability", "sync", "--metrics", &metrics.to_string()]);
    let (alice, _) = server.login("+15550006101", "Alice Dedup");
    let (bob, bob_login) = server.login("+15550006102", "Bob Dedup");
    let (dave, dave_login) = server.login("+15550006104", "Dave Reader");
    let members = [bob_login.user.id, dave_login.user.id];
    let group = alice.create_group("dedup club", &members).expect("group");
    let content = pseudo_random(3 * MIB + 4321, 99);

    let first = upload(&alice, &content, "same.bin");
    let first_message = send_file(&alice, group, first.file, "first copy");
    let after_first = wait_for_media(metrics, |figures| figures.files == 1);
    assert_eq!(after_first.logical_bytes, content.len() as u64);
    assert!(after_first.stored_bytes >= content.len() as u64, "{after_first:?}");

    let second = upload(&bob, &content, "same.bin");
    assert_ne!(first.file, second.file, "two uploads are two files");
    drop((alice, bob, dave));
    server.kill();
    server.spawn();

    let after_second = wait_for_media(metrics, |figures| figures.files == 2);
    assert_eq!(after_second.logical_bytes, 2 * content.len() as u64);
    assert_eq!(after_second.stored_bytes, after_first.stored_bytes, "the second copy stored nothing new");
    assert_eq!(after_second.chunks, after_first.chunks);
    assert!(after_second.physical_bytes < after_first.physical_bytes + content.len() as u64 / 2, "{after_second:?}");

    // The reference Bob's upload answered before the kill still sends the file.
    let (bob, _) = server.reconnect(&bob_login.token);
    let second_message = send_file(&bob, group, second.file, "second copy");
    let (dave, _) = server.reconnect(&dave_login.token);
    for message in [first_message, second_message] {
        assert!(download_message(&dave, group, message, 4).expect("download") == content, "message {message}");
    }

    // The command-line client: Carol sends a file to Alice (part size 64 KiB, the MIME type
    // given), reads it back by message id, and sees it in the chat's history.
    let home = server.directory.join("cli-home");
    let original = server.directory.join("original.bin");
    let copy = server.directory.join("copy.bin");
    std::fs::write(&original, pseudo_random(MIB + 17, 5)).expect("write the file");
    cli_login(&server, &home, "+15550006103", "Carol Cli");
    let path = original.to_str().expect("UTF-8 path");
    let upload_args = ["upload", "+15550006101", path, "--part-kib", "64", "--mime", "text/x", "--caption", "for you"];
    let output = cli_ok(&server, &home, &upload_args);
    let message = output.trim();
    assert!(message.parse::<u64>().is_ok(), "the message id on one line: {output}");
    let download_args = ["download", "+15550006101", message, "-o", copy.to_str().expect("UTF-8 path")];
    let output = cli(&server, &home, &download_args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("MB/s"), "a summary with the rate");
    assert!(std::fs::read(&copy).expect("the copy") == std::fs::read(&original).expect("the original"));
    let again = cli(&server, &home, &download_args);
    assert!(!again.status.success(), "an existing file is not replaced without --force");
    let forced = [&download_args[..], &["--force"]].concat();
    cli_ok(&server, &home, &forced);
    let history = cli_ok(&server, &home, &["history", "+15550006101"]);
    assert!(history.contains("[document original.bin, 1.00 MiB] for you"), "{history}");

    let stats = Command::new(env!("CARGO_BIN_EXE_ferrogram"))
        .args(["admin", "stats", "--metrics", &metrics.to_string()])
        .output()
        .expect("run admin stats");
    assert!(stats.status.success(), "{}", String::from_utf8_lossy(&stats.stderr));
    let table = String::from_utf8_lossy(&stats.stdout);
    assert!(table.lines().any(|line| line.starts_with("all")), "{table}");
    assert!(table.contains("dedup"), "{table}");
}

/// On a raw connection authorized with `token`: asks for the first `ranges` MiB of the file of
/// `message` at once, reads nothing for a second (a client that is slow to read), then reads
/// the answers. A server that queued them all would pass the connection's 4 MiB queue and
/// close it.
fn download_without_reading(
    server: &Server,
    token: &[u8],
    chat: ChatId,
    message: MessageId,
    ranges: u64,
) -> Vec<Vec<u8>> {
    let mut stream = std::net::TcpStream::connect(server.address).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut out = Vec::new();
    codec::encode_hello(&mut out, &Hello { protocol_version: PROTOCOL_VERSION, client: "slow-reader".into() })
        .expect("hello");
    codec::encode_request(&mut out, 1, &Request::Authenticate { token: token.to_vec() }).expect("authenticate");
    stream.write_all(&out).expect("send");
    // Requests run concurrently: the downloads go out once the login is answered.
    loop {
        if let Some((1, Outcome::Ok(Response::Authorized { .. }))) = read_response(&mut stream) {
            break;
        }
    }
    out.clear();
    for range in 0..ranges {
        let request = Request::GetFile { chat, message, offset: range * MIB as u64, limit: MIB as u32 };
        codec::encode_request(&mut out, 100 + range, &request).expect("get file");
    }
    stream.write_all(&out).expect("send");
    std::thread::sleep(Duration::from_secs(1));
    let mut answers = std::collections::BTreeMap::new();
    while answers.len() < ranges as usize {
        match read_response(&mut stream) {
            Some((req_id, Outcome::Ok(Response::FileBytes { bytes }))) => {
                answers.insert(req_id, bytes);
            }
            Some(other) => panic!("unexpected answer {other:?}"),
            None => {}
        }
    }
    answers.into_values().collect()
}

/// The next frame off a raw connection, decoded if it is a response (`None` for others).
fn read_response(stream: &mut std::net::TcpStream) -> Option<(u64, Outcome)> {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).expect("a frame: the connection was not closed");
    let length = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let mut body = vec![0; length - 1];
    stream.read_exact(&mut body).expect("the frame's body");
    (header[4] == FrameType::Response as u8).then(|| codec::decode_response(&body).expect("a response"))
}
