// Proves the leak check's listing: `unconfirmed_holders` gives the holders not yet confirmed
// that were taken at or before the given time, in file then holder order, at most `limit` of
// them, and leaves out confirmed and released ones.

mod support;

use ferrogram_mediastore::*;
use support::*;

fn holder(chat: u64, random_id: u64) -> Holder {
    Holder { chat, sender: 1, random_id }
}

#[test]
fn unconfirmed_holders_filter_sort_and_limit() {
    let (mut shard, _disk, _journal) = fresh(config());
    let a = upload(&mut shard, &pseudo_random(100 * KIB, 21), 128 * KIB, 0);
    let b = upload(&mut shard, &pseudo_random(100 * KIB, 22), 128 * KIB, 0);
    assert!(a.file < b.file);
    let take = |shard: &mut TestShard, file: &FinishedFile, holder: Holder, at: u64| {
        block_on(shard.take_holder(file.file, file.access_hash, holder, TimestampMs(at))).expect("take");
    };
    // Taken out of order, so the listing's order is its own doing.
    take(&mut shard, &b, holder(1, 1), 10);
    take(&mut shard, &a, holder(2, 1), 20);
    take(&mut shard, &a, holder(1, 9), 30);
    take(&mut shard, &a, holder(1, 5), 10);
    take(&mut shard, &b, holder(3, 3), 40);
    take(&mut shard, &b, holder(1, 0), 15);
    block_on(shard.confirm_holder(a.file, holder(1, 5))).expect("confirm");
    block_on(shard.release_holder(b.file, holder(1, 0), TimestampMs(16))).expect("release");

    let listed = shard.unconfirmed_holders(TimestampMs(30), 100);
    assert_eq!(listed, vec![(a.file, holder(1, 9)), (a.file, holder(2, 1)), (b.file, holder(1, 1))]);
    assert_eq!(shard.unconfirmed_holders(TimestampMs(20), 100), vec![(a.file, holder(2, 1)), (b.file, holder(1, 1))]);
    assert_eq!(shard.unconfirmed_holders(TimestampMs(30), 2), listed[..2].to_vec());
    assert_eq!(shard.unconfirmed_holders(TimestampMs(30), 1), listed[..1].to_vec());
    assert!(shard.unconfirmed_holders(TimestampMs(30), 0).is_empty());
    assert!(shard.unconfirmed_holders(TimestampMs(9), 100).is_empty());
    assert_eq!(shard.unconfirmed_holders(TimestampMs(u64::MAX), 100).len(), 4);
}

#[test]
fn a_limited_listing_is_the_start_of_the_full_one() {
    // Over many files (kept in a hash map), so "the first `limit` met" would differ from "the
    // first `limit` in order" for some limit unless the map's order happened to be sorted.
    let (mut shard, _disk, _journal) = fresh(config());
    for index in 0..8u64 {
        let file = upload(&mut shard, &pseudo_random(20 * KIB, 30 + index), 128 * KIB, 0);
        for random_id in [index + 1, 100 - index] {
            let holder = holder(index % 3, random_id);
            block_on(shard.take_holder(file.file, file.access_hash, holder, TimestampMs(index))).expect("take");
        }
    }
    let everything = shard.unconfirmed_holders(TimestampMs(100), usize::MAX);
    assert_eq!(everything.len(), 16);
    assert!(everything.windows(2).all(|pair| pair[0] < pair[1]), "{everything:?}");
    for limit in 0..=everything.len() {
        assert_eq!(shard.unconfirmed_holders(TimestampMs(100), limit), everything[..limit], "limit {limit}");
    }
}
