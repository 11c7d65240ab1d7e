//! The media scenario end to end against a real `ferrogram serve`: files are uploaded in
//! parts (the last one short), sent as media messages into private chats, and downloaded by
//! their online recipients in 1 MiB ranges when the live update arrives; every byte is checked
//! against the content the caption names, and the run sees no error, no missing download and
//! no missing delivery. Half the files repeat a small pool, so the server deduplicates some.
//!
//! The server binary is the workspace's `target/debug/ferrogram` (built by `cargo test
//! --workspace` for the root package's own tests). When it is missing the test says so and
//! passes without running: a package's tests cannot build another package's binary.

use std::sync::Arc;
use std::time::{Duration, Instant};

mod server_support;

use ferrogram_loadgen::acks::AckFile;
use ferrogram_loadgen::options::{MediaOptions, RunOptions, Scenario};
use ferrogram_loadgen::run::run;
use ferrogram_loadgen::runtime::Runtime;
use ferrogram_loadgen::target::ferrogram::FerrogramTarget;
use ferrogram_loadgen::verify::{self, FerrogramVerifyApi};
use server_support::{server_binary, Server, CODE};

// A short media run: every media message is acknowledged, delivered, downloaded whole
// (files of two ranges) and checked byte for byte; both transfer rates are positive; and
// every acknowledged media message is in its chat's history and both members' updates.
#[test]
fn media_messages_are_uploaded_downloaded_and_checked() {
    let Some(binary) = server_binary() else { return };
    let started = Instant::now();
    let server = Server::start(&binary, "media", "", &[], |_| Vec::new());
    let acks_path = server.directory.join("acks.txt");
    let options = RunOptions {
        users: 6,
        online_users: 6,
        media_chats: 3,
        media: MediaOptions {
            // Five parts of 256 KiB, the last short; two ranges of 1 MiB, the second short.
            file_bytes: 1_300_000,
            part_bytes: 256 * 1024,
            duplicate_fraction: 0.5,
            pool_files: 2,
            ..MediaOptions::default()
        },
        rate_per_second: 10.0,
        warmup: Duration::from_millis(300),
        duration: Duration::from_millis(1500),
        drain: Duration::from_secs(20),
        record_acks: Some(acks_path.clone()),
        ..RunOptions::small(Scenario::Media)
    };
    let runtime = Runtime::new(2).expect("threads start");
    let target = FerrogramTarget::new(server.address, CODE.into(), runtime.handle().spawner());
    let report = run(&runtime, Arc::new(target), &server.address.to_string(), &options).expect("the run works");
    drop(runtime);
    let text = report.text();
    let media = report.media.expect("media figures");
    assert!(report.errors_by_code.is_empty(), "{text}");
    assert!(media.sends >= 10, "{text}");
    assert_eq!(report.measures["media_send"].count, media.sends, "{text}");
    assert_eq!(media.downloads_expected, media.sends, "every recipient is online: {text}");
    assert_eq!(media.downloads_verified, media.downloads_expected, "{text}");
    assert_eq!(report.measures["media_download"].count, media.downloads_verified, "{text}");
    assert_eq!((media.downloads_corrupt, media.downloads_failed, media.downloads_missing), (0, 0, 0), "{text}");
    assert!(media.duplicate_sends > 0 && media.duplicate_sends < media.sends, "{text}");
    assert!(media.upload_mb_per_s > 0.0 && media.download_mb_per_s > 0.0, "{text}");
    assert_eq!((report.deliveries.expected, report.deliveries.missing), (media.sends, 0), "{text}");

    let file = AckFile::read(&acks_path).expect("the acks file parses");
    let api = FerrogramVerifyApi::new(server.address, CODE.into());
    let verified = verify::check(&file, &api, 4).expect("verify reads the server");
    assert!(verified.passed(), "{}", verified.text());
    assert!(started.elapsed() < Duration::from_secs(120), "bounded in time");
}
