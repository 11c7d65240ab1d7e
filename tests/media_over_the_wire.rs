//! Uploads and downloads over the wire, against the real `ferrogram serve`: files of awkward
//! sizes (empty, one byte, exact part multiples, one byte over, a few MiB) come back byte for
//! byte, whole and by range, through connections on either shard; parts sent out of order and
//! again are accepted; a finish with parts missing names them, and the upload finishes once
//! they come; an announced size over the maximum, an oversized part, a misaligned range and a
//! wrong access hash are refused with typed errors (the last exactly like a file that does not
//! exist); many ranges in flight wait on the server rather than closing the connection. On one
//! shard, the same file uploaded by two users takes its space once (the metrics and `ferrogram
//! admin stats` say so), and a SIGKILL right after the finish loses nothing: both files still
//! download byte for byte after a restart, through the command-line client too.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use ferrogram_net::client::{BlockingClient, UploadedFile};
use ferrogram_net::codec;
use ferrogram_net::frame::FrameType;
use ferrogram_net::limits::FILE_BYTES_MAX;
use ferrogram_net::limits::PROTOCOL_VERSION;
use ferrogram_net::transfer::{DownloadOptions, UploadOptions};
use ferrogram_net::{ClientError, ErrorCode, FileId, FileRef, Hello, Outcome, Request, Response, UploadId};
use support::{cli, cli_login, cli_ok, free_port, Server};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

// Round trips of every awkward size, both through the library's whole-file transfers and part
// by part, out of order and with a part sent twice; then every refusal, on a server of two
// shards (so downloads also cross from the connection's shard to the file's).
#[test]
fn files_round_trip_and_refusals_are_typed() {
    let server = Server::start("media-wire", &["--cores", "2", "--durability", "sync"]);
    let (alice, alice_login) = server.login("+15550006001", "Alice Media");
    let (bob, _) = server.login("+15550006002", "Bob Media");

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
        // Bob reads it with the reference alone (there are no media messages yet to gate it).
        let info = bob.get_file_info(uploaded.file).expect("info");
        assert_eq!((info.size, info.name.as_str()), (size as u64, options.name.as_str()));
        assert!(download(&bob, uploaded.file, 4) == content, "size {size} did not round-trip");
        files.push((uploaded, content));
    }

    // A range inside the file, and one past its end.
    let (big, content) = &files[5];
    let range = alice.get_file(big.file, 1 << 20, 8 * KIB as u32).expect("a range");
    assert!(range == content[MIB..MIB + 8 * KIB]);
    let past = alice.get_file(big.file, 8 << 20, 4096).expect("past the end");
    assert!(past.is_empty());

    // Part by part: out of order, part 0 sent twice, across two connections of the same user.
    let content = pseudo_random(2 * MIB + 100, 77);
    let parts: Vec<&[u8]> = content.chunks(256 * KIB).collect();
    let upload = alice.upload_start(42, Some(content.len() as u64)).expect("start");
    assert_eq!(alice.upload_start(42, Some(content.len() as u64)).expect("start again"), upload, "a retried start");
    for part in [8, 3, 0, 5, 1, 7, 2, 6, 4] {
        assert!(!alice.upload_part(upload, part, parts[part as usize].to_vec()).expect("part"), "part {part}");
    }
    assert!(alice.upload_part(upload, 0, parts[0].to_vec()).expect("a retried part"), "a retry is a duplicate");
    let conflict = alice.upload_part(upload, 3, vec![0; 256 * KIB]).expect_err("other bytes for a stored part");
    assert_eq!(conflict.code(), Some(ErrorCode::Conflict));
    let finished = alice.upload_finish(upload, 9, None, "shuffled.bin", "").expect("finish");
    assert!(download(&bob, finished.file, 1) == content);

    // Missing parts are named; the upload stays open, and finishes once they arrive.
    let content = pseudo_random(5 * 64 * KIB, 78);
    let parts: Vec<&[u8]> = content.chunks(64 * KIB).collect();
    let upload = bob.upload_start(0, None).expect("start");
    for part in [0, 2, 4] {
        bob.upload_part(upload, part, parts[part as usize].to_vec()).expect("part");
    }
    let missing = bob.upload_finish(upload, 5, None, "gappy.bin", "").expect_err("parts missing");
    assert_eq!(missing.code(), Some(ErrorCode::FilePartsMissing));
    assert_eq!(missing.error_body().map(|body| body.message.as_str()), Some("2 parts are missing: 1, 3"));
    for part in [3, 1] {
        bob.upload_part(upload, part, parts[part as usize].to_vec()).expect("the missing part");
    }
    let finished = bob.upload_finish(upload, 5, Some(content.len() as u64), "gappy.bin", "").expect("finish");
    assert!(download(&alice, finished.file, 2) == content);

    // Sizes: an announced total over the maximum, a part over 512 KiB, a part number past the
    // last; and a cancelled upload takes no more parts.
    let refused = |result: Result<UploadId, ClientError>| result.expect_err("refused").code();
    assert_eq!(refused(alice.upload_start(0, Some(FILE_BYTES_MAX + 1))), Some(ErrorCode::TooLarge));
    let upload = alice.upload_start(0, None).expect("start");
    let oversized = alice.upload_part(upload, 0, vec![1; 512 * KIB + 1]).expect_err("oversized part");
    assert_eq!(oversized.code(), Some(ErrorCode::TooLarge));
    assert_eq!(
        alice.upload_part(upload, 4096, vec![1; 1024]).expect_err("part 4096").code(),
        Some(ErrorCode::TooLarge)
    );
    assert_eq!(alice.upload_part(upload, 0, Vec::new()).expect_err("empty").code(), Some(ErrorCode::InvalidArgument));
    alice.upload_cancel(upload).expect("cancel");
    let gone = alice.upload_part(upload, 0, vec![1; 1024]).expect_err("a part after cancel");
    assert_eq!(gone.code(), Some(ErrorCode::NotFound));

    // Download ranges: misaligned offset, bad limit, a range crossing a 1 MiB boundary.
    let (file, _) = &files[6];
    let range_error = |offset: u64, limit: u32| {
        let error = alice.get_file(file.file, offset, limit).expect_err("refused range");
        assert_eq!(error.code(), Some(ErrorCode::InvalidArgument), "{error}");
        error.to_string()
    };
    assert!(range_error(100, 4096).contains("offset 100"));
    assert!(range_error(0, 1000).contains("limit 1000"));
    assert!(range_error(0, 2 << 20).contains("limit"));
    assert!(range_error(4096, 1 << 20).contains("crosses a 1 MiB boundary"));

    // A wrong access hash reads exactly like a file that does not exist.
    let wrong = FileRef { id: file.file.id, access_hash: file.file.access_hash ^ 1 };
    let absent = FileRef { id: FileId(file.file.id.0 + (1 << 40)), access_hash: file.file.access_hash };
    let wrong_error = bob.get_file(wrong, 0, 4096).expect_err("wrong hash");
    let absent_error = bob.get_file(absent, 0, 4096).expect_err("no such file");
    assert_eq!(wrong_error.code(), Some(ErrorCode::NotFound));
    assert_eq!(wrong_error.error_body(), absent_error.error_body(), "the two answers are the same");
    assert_eq!(bob.get_file_info(wrong).expect_err("info").error_body(), absent_error.error_body());
    assert!(!alice.is_closed() && !bob.is_closed(), "refusals leave the connections open");

    // Far more ranges in flight than the connection's queue holds: they wait on the server,
    // the connection stays open, and the file arrives whole; even from a client that asks for
    // 16 MiB at once and reads nothing for a while.
    let (file, content) = &files[6];
    assert!(download(&alice, file.file, 32) == *content);
    assert!(!alice.is_closed());
    let content = pseudo_random(16 * MIB, 80);
    let options = UploadOptions { name: "sixteen.bin".into(), ..UploadOptions::default() };
    let big = alice.upload_file(content.as_slice(), None, &options, |_| {}).expect("upload");
    let ranges = download_without_reading(&server, &alice_login.token, big.file, 16);
    assert!(ranges.concat() == content, "every range came, in full, on the same connection");

    // Without a login, media requests need one.
    let anonymous = server.connect();
    assert_eq!(anonymous.upload_start(0, None).expect_err("anonymous").code(), Some(ErrorCode::AuthRequired));
}

// On one shard: Alice and Bob upload the same bytes; the second upload adds a file and its
// logical size but no stored bytes. A SIGKILL right after Bob's finish, then a restart: both
// files download byte for byte, Carol's upload and download through the command-line client
// work, and `ferrogram admin stats` reports the dedup.
#[test]
fn same_file_is_stored_once_and_survives_kill() {
    let metrics = free_port();
    let mut server =
        Server::start("media-dedup", &["--cores", "1", "--durability", "sync", "--metrics", &metrics.to_string()]);
    let (alice, _) = server.login("+15550006101", "Alice Dedup");
    let (bob, _) = server.login("+15550006102", "Bob Dedup");
    let content = pseudo_random(3 * MIB + 4321, 99);

    let first = upload(&alice, &content);
    let after_first = wait_for_media(metrics, |figures| figures.files == 1);
    assert_eq!(after_first.logical_bytes, content.len() as u64);
    assert!(after_first.stored_bytes >= content.len() as u64, "{after_first:?}");

    let second = upload(&bob, &content);
    assert_ne!(first.file, second.file, "two uploads are two files");
    server.kill();
    server.spawn();

    let after_second = wait_for_media(metrics, |figures| figures.files == 2);
    assert_eq!(after_second.logical_bytes, 2 * content.len() as u64);
    assert_eq!(after_second.stored_bytes, after_first.stored_bytes, "the second copy stored nothing new");
    assert_eq!(after_second.chunks, after_first.chunks);
    assert!(after_second.physical_bytes < after_first.physical_bytes + content.len() as u64 / 2, "{after_second:?}");

    let (reader, _) = server.login("+15550006104", "Dave Reader");
    for file in [first, second] {
        assert!(download(&reader, file.file, 4) == content, "{:?} changed across the kill", file.file);
    }

    // The command-line client, with a small part size and a file on disk.
    let home = server.directory.join("cli-home");
    let original = server.directory.join("original.bin");
    let copy = server.directory.join("copy.bin");
    std::fs::write(&original, pseudo_random(MIB + 17, 5)).expect("write the file");
    cli_login(&server, &home, "+15550006103", "Carol Cli");
    let upload_args = ["upload", original.to_str().expect("UTF-8 path"), "--part-kib", "64", "--mime", "text/x"];
    let output = cli_ok(&server, &home, &upload_args);
    let reference = output.trim();
    assert!(reference.starts_with("file:") && !reference.contains('\n'), "one pasteable line: {output}");
    let download_args = ["download", reference, "-o", copy.to_str().expect("UTF-8 path")];
    let output = cli(&server, &home, &download_args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stderr).contains("MB/s"), "a summary with the rate");
    assert!(std::fs::read(&copy).expect("the copy") == std::fs::read(&original).expect("the original"));
    let again = cli(&server, &home, &download_args);
    assert!(!again.status.success(), "an existing file is not replaced without --force");
    let peer_form = cli(&server, &home, &["upload", "@alice", original.to_str().expect("UTF-8 path")]);
    assert!(String::from_utf8_lossy(&peer_form.stderr).contains("media messages"));

    let stats = Command::new(env!("CARGO_BIN_EXE_ferrogram"))
        .args(["admin", "stats", "--metrics", &metrics.to_string()])
        .output()
        .expect("run admin stats");
    assert!(stats.status.success(), "{}", String::from_utf8_lossy(&stats.stderr));
    let table = String::from_utf8_lossy(&stats.stdout);
    assert!(table.lines().any(|line| line.starts_with("all")), "{table}");
    assert!(table.contains("dedup"), "{table}");
}

/// Uploads with the library's defaults.
fn upload(client: &BlockingClient, content: &[u8]) -> UploadedFile {
    let options = UploadOptions { name: "same.bin".into(), ..UploadOptions::default() };
    client.upload_file(content, Some(content.len() as u64), &options, |_| {}).expect("upload")
}

/// Downloads a whole file with `in_flight` ranges in flight.
fn download(client: &BlockingClient, file: FileRef, in_flight: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let options = DownloadOptions { ranges_in_flight: in_flight };
    let mut last = 0;
    client
        .download_file(file, &options, &mut out, |progress| {
            assert!(progress.bytes_done >= last, "progress only grows");
            last = progress.bytes_done;
        })
        .expect("download");
    out
}

/// On a raw connection authorized with `token`: asks for the first `ranges` MiB of `file` at
/// once, reads nothing for a second (a client that is slow to read), then reads the answers.
/// A server that queued them all would pass the connection's 4 MiB queue and close it.
fn download_without_reading(server: &Server, token: &[u8], file: FileRef, ranges: u64) -> Vec<Vec<u8>> {
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
        let request = Request::GetFile { file, offset: range * MIB as u64, limit: MIB as u32 };
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

/// Deterministic pseudo-random bytes (SplitMix64): chunks of different files never match.
fn pseudo_random(bytes: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 8);
    let mut state = seed;
    while out.len() < bytes {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(bytes);
    out
}

/// The media figures the metrics give, summed over shards.
#[derive(Debug, Default)]
struct MediaFigures {
    files: u64,
    logical_bytes: u64,
    stored_bytes: u64,
    chunks: u64,
    physical_bytes: u64,
}

/// Scrapes until `ready` holds (the server samples its shards once a second), at most 20 s.
fn wait_for_media(address: SocketAddr, ready: impl Fn(&MediaFigures) -> bool) -> MediaFigures {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(address);
        let sum = |name: &str| -> u64 {
            let prefix = format!("ferrogram_media_{name}{{");
            text.lines()
                .filter(|line| line.starts_with(&prefix))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
                .sum()
        };
        let figures = MediaFigures {
            files: sum("files"),
            logical_bytes: sum("logical_bytes"),
            stored_bytes: sum("stored_bytes"),
            chunks: sum("chunks"),
            physical_bytes: sum("physical_bytes"),
        };
        if ready(&figures) {
            return figures;
        }
        assert!(Instant::now() < deadline, "the metrics never showed it: {figures:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn scrape(address: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    // Right after a restart the metrics listener may not be up yet.
    let mut stream = loop {
        match std::net::TcpStream::connect(address) {
            Ok(stream) => break stream,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(error) => panic!("cannot reach the metrics at {address}: {error}"),
        }
    };
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nhost: test\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    response
}
