// Proves holders are durable state: after a crash, replaying the journal gives back exactly
// the holders whose records were made durable (with when they were taken and whether they
// were confirmed), including one whose acknowledgement was lost after the sync and none whose
// record was lost before it; and a checkpoint snapshot holding holders, plus the records after
// it, rebuilds the same state.

mod support;

use std::collections::BTreeMap;

use ferrogram_mediastore::*;
use support::*;

fn holder(random_id: u64) -> Holder {
    Holder { chat: 8, sender: 9, random_id }
}

fn holders(shard: &TestShard, file: FileId) -> BTreeMap<Holder, HolderEntry> {
    shard.state().file(file).expect("live").holders.clone()
}

#[test]
fn replay_after_a_crash_reproduces_holders() {
    let (mut shard, disk, journal) = fresh(config());
    let file = upload(&mut shard, &pseudo_random(600 * KIB, 11), 256 * KIB, 0);
    block_on(shard.take_holder(file.file, file.access_hash, holder(1), TimestampMs(10))).expect("take");
    block_on(shard.take_holder(file.file, file.access_hash, holder(2), TimestampMs(20))).expect("take");
    block_on(shard.take_holder(file.file, file.access_hash, holder(3), TimestampMs(25))).expect("take");
    block_on(shard.confirm_holder(file.file, holder(1))).expect("confirm");
    block_on(shard.release_holder(file.file, holder(3), TimestampMs(26))).expect("release");
    let durable = holders(&shard, file.file);

    // Lost before the sync: the take never happened.
    journal.inject(JournalFault::FailBeforeSync);
    let lost = block_on(shard.take_holder(file.file, file.access_hash, holder(4), TimestampMs(30)));
    assert!(matches!(lost, Err(ReferenceError::Storage(_))), "{lost:?}");
    assert!(matches!(
        block_on(shard.release_holder(file.file, holder(1), TimestampMs(31))),
        Err(StorageError::PreviouslyFailed)
    ));
    drop(shard);
    journal.crash();
    let mut shard = open(config(), &disk, &journal);
    assert_eq!(holders(&shard, file.file), durable);
    assert_eq!(durable[&holder(1)], HolderEntry { taken_at: TimestampMs(10), confirmed: true });
    assert_eq!(durable[&holder(2)], HolderEntry { taken_at: TimestampMs(20), confirmed: false });
    assert_eq!(shard.file_info(file.file, file.access_hash).expect("live").references, 2);

    // Synced, then the acknowledgement was lost: the take happened, and a retry is a no-op.
    journal.inject(JournalFault::FailAfterSync);
    assert!(block_on(shard.take_holder(file.file, file.access_hash, holder(5), TimestampMs(40))).is_err());
    drop(shard);
    journal.crash();
    let mut shard = open(config(), &disk, &journal);
    let records = journal.record_count();
    let info = block_on(shard.take_holder(file.file, file.access_hash, holder(5), TimestampMs(41))).expect("retry");
    assert_eq!((info.references, journal.record_count()), (3, records));
    assert_eq!(holders(&shard, file.file)[&holder(5)].taken_at, TimestampMs(40));
}

#[test]
fn checkpoint_with_holders_round_trips() {
    let (mut shard, disk, journal) = fresh(config());
    let bytes = pseudo_random(MIB + 99, 12);
    let file = upload(&mut shard, &bytes, 512 * KIB, 0);
    let other = upload(&mut shard, &pseudo_random(200 * KIB, 13), 128 * KIB, 0);
    block_on(shard.take_holder(file.file, file.access_hash, holder(1), TimestampMs(10))).expect("take");
    block_on(shard.take_holder(file.file, file.access_hash, holder(2), TimestampMs(11))).expect("take");
    block_on(shard.take_holder(other.file, other.access_hash, holder(1), TimestampMs(12))).expect("take");
    block_on(shard.confirm_holder(file.file, holder(2))).expect("confirm");
    let snapshot = shard.snapshot();
    assert_eq!(snapshot.version, records::SNAPSHOT_VERSION);
    let listed: Vec<_> = snapshot.files.iter().map(|file| file.holders.clone()).collect();
    assert_eq!(
        listed,
        vec![
            vec![(holder(1), TimestampMs(10), false), (holder(2), TimestampMs(11), true)],
            vec![(holder(1), TimestampMs(12), false)],
        ]
    );
    assert_eq!(MediaSnapshot::decode(&snapshot.encode().expect("encode")).expect("decode"), snapshot);
    journal.checkpoint(&snapshot).expect("checkpoint");

    // Records after the checkpoint change holders on top of it.
    block_on(shard.release_holder(other.file, holder(1), TimestampMs(20))).expect("release");
    block_on(shard.take_holder(file.file, file.access_hash, holder(3), TimestampMs(21))).expect("take");
    block_on(shard.confirm_holder(file.file, holder(1))).expect("confirm");
    let live = shard.snapshot();
    drop(shard);
    let mut reopened = open(config(), &disk, &journal);
    assert_eq!(reopened.snapshot(), live);
    assert_eq!(holders(&reopened, file.file).len(), 3);
    assert!(matches!(reopened.file_info(other.file, other.access_hash), Err(ReadError::NotFound(_))));
    assert!(download(&mut reopened, &file) == bytes);
}
