// Proves the bounds on downloads in flight: over real segment files (DMA under glommio), 48
// cold reads begun back to back all complete byte for byte, and the shard never had more in
// flight than the bound: with at most 2 reads, it had 2 at times (so planning waited); with
// room for a dozen reads but only 3 MiB, the bytes held stayed under 3 MiB and stopped reads
// before their count did. Every slot came back. Also that a planned read dropped without
// running gives its slot back, and that a read of cached chunks takes no slot.

mod support;

use ferrogram_mediastore::limits::READ_BYTES_TYPICAL_MAX;
use ferrogram_mediastore::*;
use support::{
    block_on, config, expected, fresh, on_glommio, open, pseudo_random, temp_dir, upload, upload_interleaved, MIB,
};

#[test]
fn more_reads_than_the_count_bound_all_complete_within_it() {
    let figures = reads_under_bound(2, 2 * READ_BYTES_TYPICAL_MAX);
    assert_eq!(figures.reads_peak, 2, "the bound was reached and held: {figures:?}");
    assert!(figures.bytes_peak <= 2 * READ_BYTES_TYPICAL_MAX, "{figures:?}");
}

#[test]
fn more_reads_than_the_byte_bound_all_complete_within_it() {
    let figures = reads_under_bound(12, READ_BYTES_TYPICAL_MAX);
    assert!(figures.bytes_peak <= READ_BYTES_TYPICAL_MAX, "{figures:?}");
    assert!(figures.reads_peak < 12, "the bytes bound before the count: {figures:?}");
}

/// 48 cold 1 MiB reads of two interleaved files begun back to back under the given bounds;
/// checks every answer and that every slot came back; returns the peaks.
fn reads_under_bound(reads_max: usize, bytes_max: u64) -> ReadsInFlight {
    let dir = temp_dir("mediastore-reads-bounded");
    let inside = dir.clone();
    let (sender, receiver) = std::sync::mpsc::channel();
    on_glommio(move || async move {
        let dir = inside;
        let mut config = MediaConfig::new(0xB0B0);
        config.segment_bytes_max = 4 * MIB as u64;
        config.cache_bytes_max = MIB as u64;
        config.reads_in_flight_max = reads_max;
        config.read_bytes_in_flight_max = bytes_max;
        let journal = MemoryJournal::new();
        let contents = vec![pseudo_random(6 * MIB, 31), pseudo_random(6 * MIB + 4096, 32)];
        let io = DmaSegments::open(&dir).await.expect("segments");
        let mut shard = MediaShard::open(config.clone(), io, journal.clone(), Recovery::default()).await.expect("open");
        let files = upload_interleaved(&mut shard, &contents).await;
        shard.into_parts().0.close().await.expect("close");
        let io = DmaSegments::open(&dir).await.expect("segments");
        let recovery = journal.recovery().expect("recovery");
        let mut shard = MediaShard::open(config, io, journal, recovery).await.expect("reopen");

        let mut tasks = Vec::new();
        for round in 0..4 {
            for (index, file) in files.iter().enumerate() {
                for window in 0..6u64 {
                    let offset = window * MIB as u64;
                    let read = shard.begin_read(file.file, file.access_hash, offset, MIB as u64).await.expect("plan");
                    let figures = shard.reads_in_flight();
                    assert!(figures.reads <= reads_max && figures.bytes <= bytes_max, "round {round}: {figures:?}");
                    tasks.push(((index, offset), glommio::spawn_local(read.run())));
                }
            }
        }
        assert_eq!(tasks.len(), 48);
        for ((index, offset), task) in tasks {
            let bytes = task.await.unwrap_or_else(|error| panic!("file {index} at {offset}: {error}"));
            assert!(bytes == expected(&contents[index], offset, MIB as u64), "file {index} at {offset}");
        }
        let figures = shard.reads_in_flight();
        assert_eq!((figures.reads, figures.bytes), (0, 0), "every slot came back");
        sender.send(figures).expect("send the figures");
        shard.into_parts().0.close().await.expect("close");
    });
    let _ = std::fs::remove_dir_all(dir);
    receiver.recv().expect("figures")
}

#[test]
fn dropped_and_cached_reads_hold_no_slot() {
    let mut config = config();
    config.reads_in_flight_max = 2;
    let (mut shard, disk, journal) = fresh(config.clone());
    let content = pseudo_random(2 * MIB, 5);
    let file = upload(&mut shard, &content, 512 * 1024, 0);
    block_on(shard.take_reference(file.file, file.access_hash)).expect("reference");
    drop(shard);
    let mut shard = open(config, &disk, &journal);

    let pending = block_on(shard.begin_read(file.file, file.access_hash, 0, MIB as u64)).expect("plan");
    assert_eq!(shard.reads_in_flight().reads, 1);
    drop(pending);
    assert_eq!(shard.reads_in_flight().reads, 0, "a dropped read gave its slot back");

    // Once its chunks are cached, a read of them needs no slot.
    let bytes = block_on(shard.read(file.file, file.access_hash, MIB as u64, 64 * 1024)).expect("read");
    assert!(bytes == content[MIB..MIB + 64 * 1024]);
    let holding = block_on(shard.begin_read(file.file, file.access_hash, 0, MIB as u64)).expect("plan");
    let cached = block_on(shard.begin_read(file.file, file.access_hash, MIB as u64, 64 * 1024)).expect("cached");
    assert!(!cached.needs_disk());
    assert_eq!(shard.reads_in_flight().reads, 1, "only the read with disk reads holds a slot");
    assert!(block_on(cached.run()).expect("cached read") == content[MIB..MIB + 64 * 1024]);
    assert!(block_on(holding.run()).expect("read") == content[..MIB]);
    assert_eq!(shard.reads_in_flight().reads, 0);
}
