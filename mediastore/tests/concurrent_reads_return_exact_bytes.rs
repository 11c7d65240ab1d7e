// Proves that downloads run at once return every byte right: over real segment files (DMA
// reads under glommio), with a cold cache far smaller than the files (so chunks are evicted
// while other reads fill it), ranges of four files whose chunks interleave on disk are planned
// one after another in a scrambled order and their disk reads run together as tasks; every
// range answers exactly the file's bytes, the reads did overlap (several in flight at once,
// never more than the bound), and every slot came back.

mod support;

use ferrogram_mediastore::*;
use support::{expected, on_glommio, pseudo_random, splitmix, temp_dir, upload_interleaved, KIB, MIB};

const READS_IN_FLIGHT_MAX: usize = 8;

fn config() -> MediaConfig {
    let mut config = MediaConfig::new(0xC0C0);
    config.segment_bytes_max = 4 * MIB as u64;
    config.cache_bytes_max = MIB as u64;
    config.reads_in_flight_max = READS_IN_FLIGHT_MAX;
    config
}

#[test]
fn concurrent_ranges_of_several_files_are_byte_exact() {
    let dir = temp_dir("mediastore-concurrent-reads");
    let inside = dir.clone();
    on_glommio(move || async move {
        let dir = inside;
        let journal = MemoryJournal::new();
        let contents = vec![
            pseudo_random(5 * MIB + 12_345, 1),
            pseudo_random(3 * MIB + 4 * KIB, 2),
            pseudo_random(7 * MIB, 3),
            pseudo_random(700 * KIB, 4),
        ];
        let io = DmaSegments::open(&dir).await.expect("segments");
        let mut shard = MediaShard::open(config(), io, journal.clone(), Recovery::default()).await.expect("open");
        let files = upload_interleaved(&mut shard, &contents).await;
        shard.into_parts().0.close().await.expect("close");

        let io = DmaSegments::open(&dir).await.expect("segments");
        let recovery = journal.recovery().expect("recovery");
        let mut shard = MediaShard::open(config(), io, journal, recovery).await.expect("reopen");
        assert_eq!(shard.stats().cache_bytes, 0, "the reopened cache is cold");

        // Every whole window of every file, twice (the second may find some chunks cached),
        // and ranges inside windows: ones that start and end inside chunks, and the last
        // 4 KiB of a window.
        let mut ranges: Vec<(usize, u64, u64)> = Vec::new();
        for (index, content) in contents.iter().enumerate() {
            let size = content.len() as u64;
            for window in (0..size).step_by(MIB) {
                ranges.push((index, window, MIB as u64));
                ranges.push((index, window, MIB as u64));
                ranges.push((index, window + 64 * KIB as u64, 128 * KIB as u64));
                ranges.push((index, window + MIB as u64 - 4 * KIB as u64, 4 * KIB as u64));
            }
        }
        let mut state = 7;
        for index in (1..ranges.len()).rev() {
            ranges.swap(index, (splitmix(&mut state) % (index as u64 + 1)) as usize);
        }

        let mut tasks = Vec::new();
        for &(index, offset, limit) in &ranges {
            let file = &files[index];
            let read = shard.begin_read(file.file, file.access_hash, offset, limit).await.expect("planned");
            tasks.push(glommio::spawn_local(async move { read.run().await }));
        }
        for (task, &(index, offset, limit)) in tasks.into_iter().zip(&ranges) {
            let bytes = task.await.unwrap_or_else(|error| panic!("file {index} at {offset}+{limit}: {error}"));
            assert!(
                bytes == expected(&contents[index], offset, limit),
                "file {index} at {offset}+{limit}: wrong bytes"
            );
        }

        let reads = shard.reads_in_flight();
        assert_eq!((reads.reads, reads.bytes), (0, 0), "every slot came back");
        assert!(
            reads.reads_peak > 1 && reads.reads_peak <= READS_IN_FLIGHT_MAX,
            "reads overlapped within the bound: {reads:?}"
        );
        assert!(shard.stats().cache_bytes <= MIB as u64);
        shard.into_parts().0.close().await.expect("close");
    });
    let _ = std::fs::remove_dir_all(dir);
}
