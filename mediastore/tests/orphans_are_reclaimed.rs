// Proves leaks are found and their space comes back: chunks written by uploads that were
// abandoned (expired) or cut off by a crash are garbage that compaction reclaims, and a
// refcount that disagrees with the manifests (planted in a checkpoint) is repaired by the
// sweep — a refcount too high stops leaking once repaired, and one too low never lets
// compaction drop a chunk a live file still needs.

mod support;

use ferrogram_mediastore::*;
use support::*;

#[test]
fn abandoned_and_crashed_uploads_leave_nothing_behind() {
    let config = config();
    let idle = config.upload_idle_timeout_ms;
    let grace = config.grace_period_ms;
    let (mut shard, disk, journal) = fresh(config.clone());
    let kept = pseudo_random(MIB, 71);
    let file = upload(&mut shard, &kept, 512 * KIB, 0);
    block_on(shard.take_reference(file.file, file.access_hash)).expect("message");
    // An upload abandoned half way: its folded chunks are already in segments.
    let abandoned = pseudo_random(5 * MIB, 72);
    let id = start(&mut shard, 2, 0);
    for (index, part) in parts(&abandoned, 512 * KIB).into_iter().enumerate().take(8) {
        block_on(shard.put_part(id, index as u32, part, TimestampMs(0))).expect("part");
    }
    // Another upload that a crash will cut off, started later so it is not idle yet.
    let cut_off = start(&mut shard, 3, idle / 2);
    for (index, part) in parts(&pseudo_random(3 * MIB, 73), 512 * KIB).into_iter().enumerate().take(5) {
        block_on(shard.put_part(cut_off, index as u32, part, TimestampMs(idle / 2))).expect("part");
    }
    // A small file finishing syncs the shared segment, so the orphans are durable bytes.
    let small = upload(&mut shard, &pseudo_random(10 * KIB, 74), 512 * KIB, idle / 2);
    block_on(shard.take_reference(small.file, small.access_hash)).expect("message");

    let report = block_on(shard.maintain(TimestampMs(idle))).expect("maintain");
    assert_eq!(report.uploads_expired, 1);
    assert!(matches!(block_on(shard.put_part(id, 8, &[1; 1024], TimestampMs(idle))), Err(PutPartError::UnknownUpload)));
    let staging = shard.stats().staging_bytes;
    assert!(staging <= 2 * 512 * KIB as u64, "the abandoned upload's staging came back: {staging}");
    let garbage = shard.stats().garbage_bytes;
    assert!(garbage >= 5 * MIB as u64 / 2, "the abandoned upload's chunks are garbage: {garbage}");

    drop(shard);
    disk.crash(3000);
    journal.crash();
    let mut shard = open(config, &disk, &journal);
    assert!(matches!(
        block_on(shard.put_part(cut_off, 5, &[1; 1024], TimestampMs(idle))),
        Err(PutPartError::UnknownUpload)
    ));
    let sweep = block_on(shard.sweep(TimestampMs(idle))).expect("sweep");
    assert_eq!((sweep.refcounts_repaired, sweep.chunks_missing), (0, 0));
    assert!(sweep.garbage_bytes >= 4 * MIB as u64, "both uploads' chunks are garbage now: {sweep:?}");
    let report = block_on(shard.compact(TimestampMs(idle + grace))).expect("compact");
    assert!(report.segments_retired > 0, "{report:?}");
    let stats = shard.stats();
    assert!(stats.garbage_bytes * 2 < stats.physical_bytes, "{stats:?}");
    assert!(stats.physical_bytes < 2 * MIB as u64, "{stats:?}");
    assert!(download(&mut shard, &file) == kept);
    assert_eq!(download(&mut shard, &small).len(), 10 * KIB);
}

#[test]
fn sweep_repairs_refcounts_that_disagree_with_manifests() {
    let config = config();
    let grace = config.grace_period_ms;
    let (mut shard, disk, journal) = fresh(config.clone());
    let first = pseudo_random(2 * MIB, 81);
    let second = pseudo_random(2 * MIB, 82);
    let a = upload(&mut shard, &first, 512 * KIB, 0);
    let b = upload(&mut shard, &second, 512 * KIB, 0);
    block_on(shard.take_reference(a.file, a.access_hash)).expect("message");
    block_on(shard.take_reference(b.file, b.access_hash)).expect("message");

    // Plant leaks in a checkpoint: one of a's chunks counted too high, one of b's at zero.
    let mut snapshot = shard.snapshot();
    let high = shard.state().file(a.file).expect("a").chunks[0];
    let low = shard.state().file(b.file).expect("b").chunks[1];
    for chunk in &mut snapshot.chunks {
        if chunk.key == high {
            chunk.refcount += 5;
        }
        if chunk.key == low {
            chunk.refcount = 0;
            chunk.unreferenced_since = Some(TimestampMs(0));
        }
    }
    drop(shard);
    journal.checkpoint(&snapshot).expect("checkpoint");
    let mut shard = open(config, &disk, &journal);

    // Even before the sweep, compaction long past the grace period keeps the chunk a live
    // manifest names, whatever its refcount says.
    let report = block_on(shard.compact(TimestampMs(10 * grace))).expect("compact");
    assert_eq!(report.chunks_dropped, 0, "{report:?}");
    assert!(download(&mut shard, &b) == second);

    let sweep = block_on(shard.sweep(TimestampMs(10 * grace))).expect("sweep");
    assert_eq!((sweep.refcounts_repaired, sweep.chunks_missing), (2, 0), "{sweep:?}");
    assert_eq!(shard.state().chunk(&high).expect("indexed").refcount, 1);
    assert_eq!(shard.state().chunk(&low).expect("indexed").refcount, 1);
    let again = block_on(shard.sweep(TimestampMs(10 * grace))).expect("sweep");
    assert_eq!(again.refcounts_repaired, 0, "repairs are durable and complete");

    // With the counts right, deleting a frees all of its chunks.
    block_on(shard.release_reference(a.file, TimestampMs(10 * grace))).expect("release");
    let report = block_on(shard.compact(TimestampMs(12 * grace))).expect("compact");
    assert!(report.chunks_dropped >= shard.stats().chunks as usize / 2, "{report:?}");
    assert!(download(&mut shard, &b) == second);
    assert_eq!(shard.stats().chunks_unreferenced, 0);
}
