//! The media scenario's accounting through whole runs on the in-process fake target: every
//! media message is uploaded, sent, downloaded by its recipient and checked byte for byte;
//! a download whose bytes differ from what was uploaded is counted as an error
//! (`CONTENT_MISMATCH`, the server's), never as a checked download.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrogram_loadgen::options::{MediaOptions, RunOptions, Scenario};
use ferrogram_loadgen::report::Report;
use ferrogram_loadgen::run::run;
use ferrogram_loadgen::runtime::Runtime;
use ferrogram_loadgen::target::fake::{FakeBehaviour, FakeTarget};
use ferrogram_loadgen::target::CONTENT_MISMATCH;

/// 200 media sends a second for 1 s into 5 private chats of 10 online users: files of
/// 100,000 bytes in parts of 16 KiB (the last part short), half of them from a pool of 3.
fn options() -> RunOptions {
    RunOptions {
        users: 10,
        online_users: 10,
        media_chats: 5,
        media: MediaOptions {
            file_bytes: 100_000,
            part_bytes: 16 * 1024,
            duplicate_fraction: 0.5,
            pool_files: 3,
            ..MediaOptions::default()
        },
        rate_per_second: 200.0,
        warmup: Duration::ZERO,
        duration: Duration::from_secs(1),
        drain: Duration::from_secs(5),
        ..RunOptions::small(Scenario::Media)
    }
}

fn run_fake(target: &Arc<FakeTarget>, options: &RunOptions) -> Report {
    let runtime = Runtime::new(2).expect("threads start");
    let started = Instant::now();
    let report = run(&runtime, target.clone(), "fake", options).expect("the run works");
    assert!(started.elapsed() < Duration::from_secs(20), "the run is bounded in time");
    report
}

// Without faults every media message is acknowledged, delivered, downloaded and checked
// whole; about half came from the pool; the rates count the bytes moved.
#[test]
fn every_media_message_is_downloaded_and_checked() {
    let target =
        Arc::new(FakeTarget::new(FakeBehaviour { answer_delay: Duration::from_millis(1), ..Default::default() }));
    let report = run_fake(&target, &options());
    let text = report.text();
    let media = report.media.expect("media figures");
    assert!(report.errors_by_code.is_empty(), "{text}");
    assert_eq!(report.measures["media_send"].count, 200, "{text}");
    assert_eq!(report.measures["media_upload"].count, 200, "{text}");
    assert_eq!(report.measures["media_download"].count, 200, "{text}");
    assert_eq!(report.measures["delivery"].count, 200, "the caption carries the stamp: {text}");
    assert_eq!((media.sends, media.downloads_expected, media.downloads_verified), (200, 200, 200), "{text}");
    assert_eq!((media.downloads_corrupt, media.downloads_failed, media.downloads_missing), (0, 0, 0), "{text}");
    assert!((60..=140).contains(&media.duplicate_sends), "{text}");
    assert!(media.upload_mb_per_s > 0.0 && media.download_mb_per_s > 0.0, "{text}");
    assert_eq!(target.downloads.load(Relaxed), 200);
}

// Every fourth download has one byte flipped: each of those is a CONTENT_MISMATCH error and a
// corrupt download, the others are checked whole, and nothing goes missing.
#[test]
fn a_corrupted_download_is_counted_as_an_error() {
    let behaviour = FakeBehaviour {
        answer_delay: Duration::from_millis(1),
        corrupt_every_nth_download: Some(4),
        ..Default::default()
    };
    let target = Arc::new(FakeTarget::new(behaviour));
    let report = run_fake(&target, &options());
    let text = report.text();
    let media = report.media.expect("media figures");
    let corrupted = target.corrupted_downloads.load(Relaxed);
    assert_eq!(corrupted, 50, "{text}");
    assert_eq!(media.downloads_corrupt, corrupted, "{text}");
    assert_eq!(media.downloads_verified, 200 - corrupted, "{text}");
    assert_eq!(report.measures["media_download"].count, 200 - corrupted, "{text}");
    let errors = report.errors_by_code.get(CONTENT_MISMATCH).expect("mismatches are errors");
    assert_eq!((errors.count, errors.from_server), (corrupted, true), "{text}");
    assert!(text.contains("CONTENT_MISMATCH 50 (server)"), "{text}");
    assert_eq!(media.downloads_missing, 0, "{text}");
}

// With a download fraction of zero nobody downloads, and no download is expected.
#[test]
fn the_download_fraction_chooses_what_is_downloaded() {
    let target = Arc::new(FakeTarget::new(FakeBehaviour::default()));
    let mut options = options();
    options.media.download_fraction = 0.0;
    let report = run_fake(&target, &options);
    let media = report.media.expect("media figures");
    assert_eq!((media.sends, media.downloads_expected, media.downloads_verified), (200, 0, 0), "{}", report.text());
    assert_eq!(target.downloads.load(Relaxed), 0);
}
