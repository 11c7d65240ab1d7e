// Proves parts may arrive in any order (reversed, shuffled, interleaved across uploads), a
// retried part with the same bytes is accepted as a duplicate whether it is still staged or
// already folded into the file, and a retry with different bytes is refused with a typed
// error, without disturbing the upload.

mod support;

use ferrogram_mediastore::{PartAccepted, PutPartError, TimestampMs};
use support::*;

fn shuffled(count: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    let mut state = seed;
    for index in (1..count).rev() {
        let other = (splitmix(&mut state) % (index as u64 + 1)) as usize;
        order.swap(index, other);
    }
    order
}

#[test]
fn reversed_and_shuffled_parts_round_trip() {
    let (mut shard, _disk, _journal) = fresh(config());
    let part_bytes = 64 * KIB;
    let bytes = pseudo_random(40 * part_bytes + 777, 3);
    let pieces = parts(&bytes, part_bytes);
    let orders = [(0..pieces.len()).rev().collect::<Vec<_>>(), shuffled(pieces.len(), 9)];
    for order in orders {
        let id = start(&mut shard, 2, 0);
        for index in order {
            block_on(shard.put_part(id, index as u32, pieces[index], TimestampMs(0))).expect("part");
        }
        let file = block_on(shard.finish(id, finish_request(&bytes, part_bytes), TimestampMs(0))).expect("finish");
        assert!(download(&mut shard, &file) == bytes);
    }
}

#[test]
fn interleaved_uploads_do_not_mix() {
    let (mut shard, _disk, _journal) = fresh(config());
    let part_bytes = 128 * KIB;
    let files: Vec<Vec<u8>> = (0..3).map(|seed| pseudo_random(2 * MIB + seed * 1000, seed as u64 + 20)).collect();
    let ids: Vec<_> = (0..3).map(|owner| start(&mut shard, owner, 0)).collect();
    let most = files.iter().map(|file| file.len().div_ceil(part_bytes)).max().expect("files");
    for index in 0..most {
        for (file, id) in files.iter().zip(&ids) {
            if let Some(part) = parts(file, part_bytes).get(index) {
                block_on(shard.put_part(*id, index as u32, part, TimestampMs(0))).expect("part");
            }
        }
    }
    for (file, id) in files.iter().zip(&ids) {
        let finished = block_on(shard.finish(*id, finish_request(file, part_bytes), TimestampMs(0))).expect("finish");
        assert!(download(&mut shard, &finished) == *file);
    }
}

#[test]
fn retries_are_idempotent_and_conflicts_refused() {
    let (mut shard, _disk, _journal) = fresh(config());
    let part_bytes = 32 * KIB;
    let bytes = pseudo_random(10 * part_bytes + 5, 4);
    let pieces = parts(&bytes, part_bytes);
    let id = start(&mut shard, 3, 0);
    let put = |shard: &mut TestShard, index: usize, part: &[u8]| {
        block_on(shard.put_part(id, index as u32, part, TimestampMs(0)))
    };
    // Parts 0..4 arrive in order, so 0..3 are folded into the file; part 8 waits staged.
    for (index, piece) in pieces.iter().enumerate().take(5) {
        assert_eq!(put(&mut shard, index, piece).expect("part"), PartAccepted::Stored);
    }
    assert_eq!(put(&mut shard, 8, pieces[8]).expect("part"), PartAccepted::Stored);
    // Same bytes again: folded, staged-next and staged-ahead parts are all duplicates.
    for index in [0, 2, 4, 8] {
        assert_eq!(put(&mut shard, index, pieces[index]).expect("retry"), PartAccepted::Duplicate, "part {index}");
    }
    // Different bytes for any part already held are refused.
    let mut other = pieces[1].to_vec();
    other[100] ^= 1;
    for index in [1, 4, 8] {
        assert!(
            matches!(put(&mut shard, index, &other), Err(PutPartError::PartConflict { part }) if part == index as u32),
            "part {index}"
        );
    }
    for index in (5..pieces.len()).filter(|&index| index != 8) {
        put(&mut shard, index, pieces[index]).expect("part");
    }
    let file = block_on(shard.finish(id, finish_request(&bytes, part_bytes), TimestampMs(0))).expect("finish");
    assert!(download(&mut shard, &file) == bytes, "conflicting retries changed nothing");
}
