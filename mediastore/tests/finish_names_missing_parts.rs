// Proves `finish` refuses an incomplete upload with an error naming the missing parts (and
// their exact count), keeps the upload open, and succeeds once the parts arrive; and refuses
// a part count or size that disagrees with what was stored.

mod support;

use ferrogram_mediastore::{FinishError, FinishUpload, TimestampMs};
use support::*;

#[test]
fn missing_parts_are_named_and_can_be_sent_later() {
    let (mut shard, _disk, _journal) = fresh(config());
    let part_bytes = 16 * KIB;
    let bytes = pseudo_random(50 * part_bytes, 5);
    let pieces = parts(&bytes, part_bytes);
    let id = start(&mut shard, 1, 0);
    let missing = [3u32, 17, 18, 49];
    for (index, piece) in pieces.iter().enumerate() {
        if !missing.contains(&(index as u32)) {
            block_on(shard.put_part(id, index as u32, piece, TimestampMs(0))).expect("part");
        }
    }
    match block_on(shard.finish(id, finish_request(&bytes, part_bytes), TimestampMs(0))) {
        Err(FinishError::MissingParts { count, listed }) => {
            assert_eq!((count, listed), (4, missing.to_vec()));
        }
        other => panic!("expected MissingParts, got {other:?}"),
    }
    let message = block_on(shard.finish(id, finish_request(&bytes, part_bytes), TimestampMs(0)))
        .expect_err("still missing")
        .to_string();
    assert!(message.contains("[3, 17, 18, 49]"), "{message}");
    for index in missing {
        block_on(shard.put_part(id, index, pieces[index as usize], TimestampMs(0))).expect("late part");
    }
    let wrong_count = FinishUpload { parts: 49, total_bytes: None, ..FinishUpload::default() };
    assert!(matches!(
        block_on(shard.finish(id, wrong_count, TimestampMs(0))),
        Err(FinishError::UnexpectedPart { part: 49, expected: 49 })
    ));
    let wrong_size = FinishUpload { parts: 50, total_bytes: Some(bytes.len() as u64 + 1), ..FinishUpload::default() };
    assert!(matches!(block_on(shard.finish(id, wrong_size, TimestampMs(0))), Err(FinishError::SizeMismatch { .. })));
    let file = block_on(shard.finish(id, finish_request(&bytes, part_bytes), TimestampMs(0))).expect("complete now");
    assert!(download(&mut shard, &file) == bytes);
    assert!(matches!(
        block_on(shard.finish(id, finish_request(&bytes, part_bytes), TimestampMs(0))),
        Err(FinishError::UnknownUpload)
    ));
}
