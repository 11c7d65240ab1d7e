// Proves downloads enforce Telegram's range rules (offset and limit multiples of 4 KiB, limit
// at most 1 MiB, no crossing of a 1 MiB boundary), refuse a wrong access hash and an unknown
// file with typed errors, and never return bytes for a refused request.

mod support;

use ferrogram_mediastore::{AccessHash, FileId, ReadError};
use support::*;

#[test]
fn ranges_and_access_are_checked() {
    let (mut shard, _disk, _journal) = fresh(config());
    let bytes = pseudo_random(3 * MIB, 8);
    let file = upload(&mut shard, &bytes, 512 * KIB, 0);
    let read = |shard: &mut TestShard, offset: u64, limit: u64| {
        block_on(shard.read(file.file, file.access_hash, offset, limit))
    };
    assert!(matches!(read(&mut shard, 1000, 4096), Err(ReadError::MisalignedOffset { offset: 1000 })));
    assert!(matches!(read(&mut shard, 0, 5000), Err(ReadError::InvalidLimit { limit: 5000 })));
    assert!(matches!(read(&mut shard, 0, 0), Err(ReadError::InvalidLimit { limit: 0 })));
    assert!(matches!(read(&mut shard, 0, 2 << 20), Err(ReadError::InvalidLimit { .. })));
    assert!(matches!(read(&mut shard, 1 << 20, (1 << 20) + 4096), Err(ReadError::InvalidLimit { .. })));
    assert!(matches!(read(&mut shard, 4096, 1 << 20), Err(ReadError::CrossesBoundary { .. })));
    assert!(matches!(read(&mut shard, (2 << 20) - 4096, 8192), Err(ReadError::CrossesBoundary { .. })));
    assert_eq!(
        read(&mut shard, (2 << 20) - 4096, 4096).expect("last block of a window"),
        bytes[(2 << 20) - 4096..2 << 20]
    );
    let wrong = AccessHash::new(file.access_hash.get() ^ 1);
    assert!(
        matches!(block_on(shard.read(file.file, wrong, 0, 4096)), Err(ReadError::AccessDenied(id)) if id == file.file)
    );
    assert!(matches!(shard.file_info(file.file, wrong), Err(ReadError::AccessDenied(_))));
    let unknown = FileId::from_raw(file.file.raw() + (1 << 12));
    assert!(matches!(block_on(shard.read(unknown, file.access_hash, 0, 4096)), Err(ReadError::NotFound(_))));
    let info = shard.file_info(file.file, file.access_hash).expect("info");
    assert_eq!((info.size, info.name.as_str()), (3 * MIB as u64, "file.bin"));
}
