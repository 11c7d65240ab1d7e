// Proves checkpoints: a shard reopened from a snapshot plus the records after it has exactly
// the state of the shard that wrote them (equal snapshots), and serves the same bytes; a
// snapshot and records survive encoding with validation.

mod support;

use ferrogram_mediastore::*;
use support::*;

#[test]
fn snapshot_plus_records_equals_the_live_state() {
    let (mut shard, disk, journal) = fresh(config());
    let one = pseudo_random(3 * MIB, 101);
    let a = upload(&mut shard, &one, 512 * KIB, 0);
    block_on(shard.take_reference(a.file, a.access_hash)).expect("message");
    journal.checkpoint(&shard.snapshot()).expect("checkpoint");
    let records_at_checkpoint = journal.record_count();
    let two = pseudo_random(MIB + 5, 102);
    let b = upload(&mut shard, &two, 256 * KIB, 10);
    block_on(shard.release_reference(a.file, TimestampMs(20))).expect("release");
    block_on(shard.compact(TimestampMs(20 + shard.config().grace_period_ms))).expect("compact");
    let live = shard.snapshot();
    assert!(journal.record_count() > records_at_checkpoint);
    drop(shard);

    let recovery = journal.recovery().expect("decode");
    assert!(recovery.snapshot.is_some());
    assert_eq!(recovery.records.len(), journal.record_count() - records_at_checkpoint);
    let mut reopened = open(config(), &disk, &journal);
    assert_eq!(reopened.snapshot(), live);
    assert!(download(&mut reopened, &b) == two);
    assert!(matches!(reopened.file_info(a.file, a.access_hash), Err(ReadError::NotFound(_))));
    let bytes = live.encode().expect("encode");
    assert_eq!(MediaSnapshot::decode(&bytes).expect("decode"), live);
}
