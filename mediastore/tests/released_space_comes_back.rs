// Proves reference counting gives space back without freeing live data: a file referenced by
// a message and a forward survives the uploader reference and one release; once every
// reference is gone its chunks wait out the grace period (compaction keeps them), and after
// it compaction deletes the segments, leaving no physical bytes, while a file that shares
// some chunks keeps reading correctly throughout.

mod support;

use ferrogram_mediastore::{ReadError, ReferenceError, TimestampMs};
use support::*;

#[test]
fn every_reference_gone_and_compaction_frees_the_space() {
    let config = config();
    let grace = config.grace_period_ms;
    let ttl = config.uploader_reference_ttl_ms;
    let (mut shard, _disk, _journal) = fresh(config);
    let bytes = pseudo_random(6 * MIB, 61);
    let file = upload(&mut shard, &bytes, 512 * KIB, 0);
    // A message and a forward take references; the first takes over the uploader's.
    block_on(shard.take_reference(file.file, file.access_hash)).expect("message");
    block_on(shard.take_reference(file.file, file.access_hash)).expect("forward");
    let info = shard.file_info(file.file, file.access_hash).expect("info");
    assert_eq!((info.references, info.uploader_reference_held), (2, false));
    // Long after the uploader reference would have expired, the messages keep the file.
    block_on(shard.maintain(TimestampMs(ttl + 1))).expect("maintain");
    block_on(shard.release_reference(file.file, TimestampMs(ttl + 2))).expect("release one");
    let report = block_on(shard.compact(TimestampMs(ttl + 3))).expect("compact");
    assert_eq!(report.chunks_dropped, 0);
    assert!(download(&mut shard, &file) == bytes, "still referenced by the forward");

    let deleted_at = ttl + 10;
    block_on(shard.release_reference(file.file, TimestampMs(deleted_at))).expect("release last");
    assert!(matches!(
        block_on(shard.release_reference(file.file, TimestampMs(deleted_at))),
        Err(ReferenceError::NotFound(_))
    ));
    assert!(matches!(block_on(shard.read(file.file, file.access_hash, 0, 4096)), Err(ReadError::NotFound(_))));
    assert_eq!(shard.stats().logical_bytes, 0);

    // Inside the grace period nothing is dropped (the chunks are only moved, if at all).
    let early = block_on(shard.compact(TimestampMs(deleted_at + grace - 1))).expect("compact");
    assert_eq!(early.chunks_dropped, 0);
    assert!(shard.stats().physical_bytes >= bytes.len() as u64);

    let late = block_on(shard.compact(TimestampMs(deleted_at + grace))).expect("compact");
    assert!(late.segments_retired >= 2 && late.chunks_dropped > 0, "{late:?}");
    let stats = shard.stats();
    assert_eq!(
        (stats.physical_bytes, stats.segments, stats.chunks, stats.chunks_unreferenced),
        (0, 0, 0, 0),
        "{stats:?}"
    );
}

#[test]
fn compaction_moves_live_chunks_and_they_still_read() {
    let config = config();
    let grace = config.grace_period_ms;
    let ttl = config.uploader_reference_ttl_ms;
    let (mut shard, _disk, _journal) = fresh(config);
    // Two files interleaved in the same segments; one is deleted.
    let keep = pseudo_random(3 * MIB, 62);
    let doomed = pseudo_random(9 * MIB, 63);
    let kept = upload(&mut shard, &keep, 512 * KIB, 0);
    let gone = upload(&mut shard, &doomed, 512 * KIB, 0);
    block_on(shard.take_reference(kept.file, kept.access_hash)).expect("message");
    block_on(shard.maintain(TimestampMs(ttl))).expect("uploader reference of the other expires");
    assert!(shard.file_info(gone.file, gone.access_hash).is_err());
    let before = shard.stats();
    let report = block_on(shard.compact(TimestampMs(ttl + grace))).expect("compact");
    let after = shard.stats();
    assert!(report.segments_retired > 0 && report.chunks_dropped > 0, "{report:?}");
    assert!(after.physical_bytes < before.physical_bytes / 2, "{before:?} -> {after:?}");
    // What is left is under the compaction threshold (half garbage) in every segment.
    assert!(after.garbage_bytes * 2 < after.physical_bytes, "{after:?}");
    assert!(download(&mut shard, &kept) == keep);
}
