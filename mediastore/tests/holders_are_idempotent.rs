// Proves keyed references ("holders") are idempotent: taking a holder twice journals one
// record and counts one reference, releasing it twice frees once (the second release is a
// harmless `false`), a second holder keeps the file readable byte for byte when the first is
// released, and the file goes with its last holder once the first holder took over the
// uploader's reference.

mod support;

use ferrogram_mediastore::*;
use support::*;

fn holder(random_id: u64) -> Holder {
    Holder { chat: 77, sender: 5, random_id }
}

#[test]
fn taking_twice_journals_once_and_counts_once() {
    let (mut shard, _disk, journal) = fresh(config());
    let bytes = pseudo_random(300 * KIB, 1);
    let file = upload(&mut shard, &bytes, 128 * KIB, 0);
    let records = journal.record_count();
    let first = block_on(shard.take_holder(file.file, file.access_hash, holder(1), TimestampMs(10))).expect("take");
    assert_eq!(journal.record_count(), records + 1);
    assert_eq!((first.references, first.uploader_reference_held), (1, false), "the holder took the uploader's place");
    assert_eq!((first.file, first.size, first.name.as_str()), (file.file, bytes.len() as u64, "file.bin"));
    let again = block_on(shard.take_holder(file.file, file.access_hash, holder(1), TimestampMs(20))).expect("retry");
    assert_eq!(journal.record_count(), records + 1, "a retried take journals nothing");
    assert_eq!(again, first);
    assert_eq!(shard.state().file(file.file).expect("live").holders[&holder(1)].taken_at, TimestampMs(10));
    let wrong = AccessHash::new(file.access_hash.get() ^ 1);
    assert!(matches!(
        block_on(shard.take_holder(file.file, wrong, holder(1), TimestampMs(20))),
        Err(ReferenceError::AccessDenied(_))
    ));
    let missing = FileId::new(999, file.file.vshard());
    assert!(matches!(
        block_on(shard.take_holder(missing, file.access_hash, holder(1), TimestampMs(20))),
        Err(ReferenceError::NotFound(_))
    ));
    assert_eq!(journal.record_count(), records + 1);
}

#[test]
fn releasing_twice_frees_once_and_the_last_holder_deletes() {
    let (mut shard, _disk, journal) = fresh(config());
    let file = upload(&mut shard, &pseudo_random(300 * KIB, 2), 128 * KIB, 0);
    block_on(shard.take_holder(file.file, file.access_hash, holder(1), TimestampMs(10))).expect("take");
    assert!(!block_on(shard.release_holder(file.file, holder(2), TimestampMs(11))).expect("release"), "not held");
    let records = journal.record_count();
    assert!(block_on(shard.release_holder(file.file, holder(1), TimestampMs(12))).expect("release"));
    assert_eq!(journal.record_count(), records + 1);
    // The holder had taken over the uploader reference: nothing holds the file now.
    assert!(matches!(shard.file_info(file.file, file.access_hash), Err(ReadError::NotFound(_))));
    assert_eq!(shard.stats().chunks, 0, "the file's chunks are unreferenced");
    assert!(!block_on(shard.release_holder(file.file, holder(1), TimestampMs(13))).expect("second release"));
    assert!(!block_on(shard.confirm_holder(file.file, holder(1))).expect("confirm"));
    assert_eq!(journal.record_count(), records + 1, "a repeated release journals nothing");
}

#[test]
fn another_holder_keeps_the_file_whole() {
    let (mut shard, _disk, journal) = fresh(config());
    let bytes = pseudo_random(2 * MIB + 4321, 3);
    let file = upload(&mut shard, &bytes, 512 * KIB, 0);
    block_on(shard.take_holder(file.file, file.access_hash, holder(1), TimestampMs(10))).expect("take");
    let second = block_on(shard.take_holder(file.file, file.access_hash, holder(2), TimestampMs(11))).expect("take");
    assert_eq!(second.references, 2);
    assert!(block_on(shard.confirm_holder(file.file, holder(2))).expect("confirm"));
    let records = journal.record_count();
    assert!(block_on(shard.confirm_holder(file.file, holder(2))).expect("confirm again"));
    assert_eq!(journal.record_count(), records, "a repeated confirmation journals nothing");
    assert!(block_on(shard.release_holder(file.file, holder(1), TimestampMs(12))).expect("release"));
    assert!(!block_on(shard.release_holder(file.file, holder(1), TimestampMs(12))).expect("release again"));
    assert_eq!(shard.file_info(file.file, file.access_hash).expect("still there").references, 1);
    // Past the grace period and compacted: the remaining holder's bytes must all be there.
    block_on(shard.compact(TimestampMs(12 + shard.config().grace_period_ms))).expect("compact");
    let sweep = block_on(shard.sweep(TimestampMs(13 + shard.config().grace_period_ms))).expect("sweep");
    assert_eq!((sweep.refcounts_repaired, sweep.chunks_missing), (0, 0));
    assert!(download(&mut shard, &file) == bytes, "the file changed after one of two holders went");
    // An anonymous reference and a holder count together and keep the file independently.
    block_on(shard.take_reference(file.file, file.access_hash)).expect("anonymous");
    assert_eq!(shard.file_info(file.file, file.access_hash).expect("there").references, 2);
    assert!(block_on(shard.release_holder(file.file, holder(2), TimestampMs(14))).expect("release"));
    assert!(download(&mut shard, &file) == bytes, "the anonymous reference keeps the file");
    block_on(shard.release_reference(file.file, TimestampMs(15))).expect("release anonymous");
    assert!(matches!(shard.file_info(file.file, file.access_hash), Err(ReadError::NotFound(_))));
}
