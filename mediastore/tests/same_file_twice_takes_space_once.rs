// Proves deduplication: the same content uploaded by two users (in different part sizes)
// writes its chunks once — physical bytes do not grow, the chunk count stays, the dedup
// ratio is 2 — while each user gets its own file id and access hash, and both read back.

mod support;

use ferrogram_mediastore::TimestampMs;
use support::*;

#[test]
fn second_upload_writes_nothing_new() {
    let (mut shard, _disk, _journal) = fresh(config());
    let bytes = pseudo_random(3 * MIB + 333, 12);
    let first = upload(&mut shard, &bytes, 512 * KIB, 0);
    let after_first = shard.stats();
    let id = start(&mut shard, 2, 0);
    for (index, part) in parts(&bytes, 128 * KIB).into_iter().enumerate().rev() {
        block_on(shard.put_part(id, index as u32, part, TimestampMs(0))).expect("part");
    }
    let second = block_on(shard.finish(id, finish_request(&bytes, 128 * KIB), TimestampMs(0))).expect("finish");
    let after_second = shard.stats();
    assert_ne!(first.file, second.file);
    assert_ne!(first.access_hash, second.access_hash);
    assert_eq!(first.content_hash, second.content_hash);
    assert_eq!(after_second.physical_bytes, after_first.physical_bytes, "no new bytes written");
    assert_eq!(after_second.chunks, after_first.chunks);
    assert_eq!(after_second.stored_bytes, bytes.len() as u64);
    assert_eq!(after_second.logical_bytes, 2 * bytes.len() as u64);
    assert!((after_second.dedup_ratio - 2.0).abs() < 1e-9, "{after_second:?}");
    assert!(download(&mut shard, &first) == bytes && download(&mut shard, &second) == bytes);
}
