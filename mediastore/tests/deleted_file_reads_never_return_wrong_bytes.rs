// Proves a download of a file deleted while the read was pending answers the bytes the file
// held when the read was planned (or NotFound once the deletion is seen), never other bytes:
// even when, with a weak test hash, the deleted chunk's key is given to other content before
// the pending read finishes. That read must not put the old bytes into the cache under the
// key that now names the new ones, or the new file would read back wrong.

mod support;

use ferrogram_mediastore::*;
use support::{block_on, config, fresh, open, pseudo_random, upload, KIB};

#[test]
fn a_pending_read_of_a_deleted_file_never_serves_or_caches_wrong_bytes() {
    let mut config = config();
    // Four possible hashes: another chunk with the same hash is easy to find.
    config.weak_hash_bits_for_tests = Some(2);
    let hasher = ChunkHasher::from_config(&config);
    let (mut shard, disk, journal) = fresh(config.clone());

    // One chunk each (smaller than the smallest chunk), with the same weak hash.
    let old_bytes = pseudo_random(8 * KIB, 1);
    let new_bytes = (2..)
        .map(|seed| pseudo_random(8 * KIB, seed))
        .find(|bytes| hasher.hash(bytes) == hasher.hash(&old_bytes))
        .expect("a colliding chunk");
    let old = upload(&mut shard, &old_bytes, 4 * KIB, 0);
    block_on(shard.take_reference(old.file, old.access_hash)).expect("a message's reference");
    let old_key = shard.state().file(old.file).expect("old file").chunks[0];
    drop(shard);

    // Cold, so the read has a disk read to do.
    let mut shard = open(config, &disk, &journal);
    let pending = block_on(shard.begin_read(old.file, old.access_hash, 0, 8 * KIB as u64)).expect("planned");
    assert!(pending.needs_disk());

    // The file is deleted and, past the grace period, its chunk dropped and its segment retired.
    block_on(shard.release_reference(old.file, TimestampMs(0))).expect("release");
    let report = block_on(shard.compact(TimestampMs(shard.config().grace_period_ms))).expect("compact");
    assert_eq!((report.chunks_dropped, report.segments_retired), (1, 1), "{report:?}");
    assert!(matches!(block_on(shard.begin_read(old.file, old.access_hash, 0, 4096)), Err(ReadError::NotFound(_))));

    // Other content takes the freed key (and is cached as fresh media is).
    let new = upload(&mut shard, &new_bytes, 4 * KIB, 0);
    assert_eq!(shard.state().file(new.file).expect("new file").chunks[0], old_key, "the key was reused");

    let answered = block_on(pending.run()).expect("the pending read answers");
    assert!(answered == old_bytes, "the pending read answers the deleted file's own bytes");
    assert!(
        block_on(shard.read(new.file, new.access_hash, 0, 8 * KIB as u64)).expect("read") == new_bytes,
        "the new file reads its own bytes, not the ones the pending read fetched"
    );
}
