// Proves expiry: an upload idle past its timeout is dropped with its staging space (a part
// that keeps arriving keeps it alive), and a finished file no message takes within the
// uploader reference's lifetime is deleted, while one a message took stays.

mod support;

use ferrogram_mediastore::*;
use support::*;

#[test]
fn idle_uploads_and_untaken_files_expire() {
    let config = config();
    let idle = config.upload_idle_timeout_ms;
    let ttl = config.uploader_reference_ttl_ms;
    let (mut shard, _disk, _journal) = fresh(config);
    let active = start(&mut shard, 1, 0);
    let stale = start(&mut shard, 2, 0);
    let part = pseudo_random(64 * KIB, 91);
    block_on(shard.put_part(stale, 0, &part, TimestampMs(0))).expect("part");
    block_on(shard.put_part(active, 0, &part, TimestampMs(0))).expect("part");
    block_on(shard.put_part(active, 1, &part, TimestampMs(idle - 1))).expect("a part keeps it alive");
    let report = block_on(shard.maintain(TimestampMs(idle))).expect("maintain");
    assert_eq!(report.uploads_expired, 1);
    assert!(matches!(block_on(shard.put_part(stale, 1, &part, TimestampMs(idle))), Err(PutPartError::UnknownUpload)));
    block_on(shard.put_part(active, 2, &part[..100], TimestampMs(idle))).expect("still open");
    let request = FinishUpload { parts: 3, total_bytes: None, name: "a".into(), mime_type: "b".into() };
    let taken = block_on(shard.finish(active, request, TimestampMs(idle))).expect("finish");
    let untaken = upload(&mut shard, &pseudo_random(100 * KIB, 92), 512 * KIB, idle);
    block_on(shard.take_reference(taken.file, taken.access_hash)).expect("message");

    let report = block_on(shard.maintain(TimestampMs(idle + ttl - 1))).expect("maintain");
    assert_eq!(report.uploader_references_expired, 0);
    let report = block_on(shard.maintain(TimestampMs(idle + ttl))).expect("maintain");
    assert_eq!(report.uploader_references_expired, 1);
    assert!(matches!(shard.file_info(untaken.file, untaken.access_hash), Err(ReadError::NotFound(_))));
    assert_eq!(shard.file_info(taken.file, taken.access_hash).expect("kept").references, 1);
    assert_eq!(shard.stats().staging_bytes, 0);
}
