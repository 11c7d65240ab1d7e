// Proves a read's own I/O error fails the shard like any storage error, even though the read
// ran outside the shard's borrow: with the segment file cut short under a planned read, that
// read answers the I/O error, a read planned earlier from the cache answers that the shard
// failed instead of its bytes, and every later read is refused until the shard is reopened.

mod support;

use std::path::Path;

use ferrogram_mediastore::segment::std_files::list_segment_files;
use ferrogram_mediastore::*;
use support::{block_on, pseudo_random, temp_dir, upload_interleaved, MIB};

fn open(dir: &Path, journal: &MemoryJournal) -> MediaShard<StdSegments, MemoryJournal> {
    let mut config = MediaConfig::new(0xFA11);
    config.segment_bytes_max = 64 * MIB as u64;
    config.cache_bytes_max = 4 * MIB as u64;
    let recovery = journal.recovery().expect("recovery");
    block_on(MediaShard::open(config, StdSegments::open(dir).expect("segments"), journal.clone(), recovery))
        .expect("open")
}

#[test]
fn a_failed_read_fails_the_shard_and_later_reads_are_refused() {
    let dir = temp_dir("mediastore-failed-reads");
    let journal = MemoryJournal::new();
    let content = pseudo_random(3 * MIB, 41);
    let mut shard = open(&dir, &journal);
    let file = block_on(upload_interleaved(&mut shard, std::slice::from_ref(&content))).remove(0);
    drop(shard);

    let mut shard = open(&dir, &journal);
    let range = |index: u64| (index * MIB as u64, MIB as u64);
    let (offset, limit) = range(2);
    assert!(block_on(shard.read(file.file, file.access_hash, offset, limit)).expect("read") == content[2 * MIB..]);
    let cached = block_on(shard.begin_read(file.file, file.access_hash, offset, limit)).expect("plan");
    assert!(!cached.needs_disk());
    let (offset, limit) = range(0);
    let cold = block_on(shard.begin_read(file.file, file.access_hash, offset, limit)).expect("plan");
    assert!(cold.needs_disk());

    for (segment, _) in list_segment_files(&dir).expect("list") {
        let path = dir.join(segment::std_files::segment_file_name(segment));
        std::fs::OpenOptions::new().write(true).open(path).expect("segment").set_len(0).expect("cut short");
    }
    assert!(matches!(block_on(cold.run()), Err(ReadError::Storage(StorageError::Io { .. }))));
    assert!(matches!(block_on(cached.run()), Err(ReadError::Storage(StorageError::PreviouslyFailed))));
    let (offset, limit) = range(2);
    assert!(matches!(
        block_on(shard.read(file.file, file.access_hash, offset, limit)),
        Err(ReadError::Storage(StorageError::PreviouslyFailed))
    ));
    drop(shard);
    let _ = std::fs::remove_dir_all(dir);
}
