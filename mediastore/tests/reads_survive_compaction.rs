// Proves that a download planned before a compaction returns the right bytes although the
// compaction moved its chunks and deleted the segment files they were to be read from: the
// read holds those segments open. Checked three ways: over real files (DMA under glommio)
// with the reads run after the compaction finished and the files were gone from the
// directory; over real files with the reads running while the compaction runs; and over the
// in-memory segments. After it, the kept file reads right from its new place and the deleted
// one is not found.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use ferrogram_mediastore::segment::std_files::list_segment_files;
use ferrogram_mediastore::*;
use support::{block_on, expected, on_glommio, pseudo_random, temp_dir, upload_interleaved, MIB};

fn config() -> MediaConfig {
    let mut config = MediaConfig::new(0xC0FAC7);
    config.segment_bytes_max = 4 * MIB as u64;
    config.cache_bytes_max = MIB as u64;
    // The deleted file leaves its segments about half live: compact them all.
    config.compaction_live_per_mille = 900;
    // Every range of the kept file is planned before any runs.
    config.reads_in_flight_max = 64;
    config.read_bytes_in_flight_max = 256 * MIB as u64;
    config
}

/// When the planned reads run, relative to the compaction.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Timing {
    AfterCompaction,
    DuringCompaction,
}

/// Two files interleaved on disk; reopened cold; every range of `kept` planned; `gone`
/// released; compaction retires every segment; the planned reads answer `kept`'s bytes.
async fn scenario<S: SegmentIo + 'static>(
    mut shard: MediaShard<S, MemoryJournal>,
    reopen: impl AsyncFnOnce(MediaShard<S, MemoryJournal>) -> MediaShard<S, MemoryJournal>,
    segment_files: impl Fn() -> BTreeSet<SegmentId>,
    timing: Timing,
) -> MediaShard<S, MemoryJournal> {
    let kept_bytes = pseudo_random(6 * MIB + 777, 21);
    let gone_bytes = pseudo_random(6 * MIB, 22);
    let files = upload_interleaved(&mut shard, &[kept_bytes.clone(), gone_bytes]).await;
    let (kept, gone) = (files[0].clone(), files[1].clone());
    let mut shard = reopen(shard).await;
    assert_eq!(shard.stats().cache_bytes, 0, "the reopened cache is cold");
    let before = segment_files();

    let windows: Vec<u64> = (0..kept.size).step_by(MIB).collect();
    let mut planned = Vec::new();
    for &offset in &windows {
        let read = shard.begin_read(kept.file, kept.access_hash, offset, MIB as u64).await.expect("planned");
        assert!(read.needs_disk(), "a cold range reads the disk");
        planned.push(read);
    }
    let running: Vec<_> = match timing {
        Timing::AfterCompaction => Vec::new(),
        Timing::DuringCompaction => planned.drain(..).map(|read| glommio::spawn_local(read.run())).collect(),
    };

    shard.release_reference(gone.file, TimestampMs(0)).await.expect("release");
    let report = shard.compact(TimestampMs(shard.config().grace_period_ms)).await.expect("compact");
    assert!(report.chunks_moved > 0 && report.chunks_dropped > 0, "{report:?}");
    let after = segment_files();
    assert!(
        !before.is_empty() && before.is_disjoint(&after),
        "every segment the reads were planned on is deleted: {before:?} then {after:?}"
    );

    let mut answers = Vec::new();
    for read in planned {
        answers.push(read.run().await);
    }
    for task in running {
        answers.push(task.await);
    }
    for (answer, &offset) in answers.into_iter().zip(&windows) {
        let bytes = answer.unwrap_or_else(|error| panic!("range at {offset}: {error}"));
        assert!(bytes == expected(&kept_bytes, offset, MIB as u64), "range at {offset}: wrong bytes");
    }
    assert_eq!(shard.reads_in_flight().reads, 0);

    // Planned now, from the new places.
    for &offset in &windows {
        let bytes = shard.read(kept.file, kept.access_hash, offset, MIB as u64).await.expect("read after");
        assert!(bytes == expected(&kept_bytes, offset, MIB as u64), "range at {offset} after compaction");
    }
    assert!(matches!(shard.read(gone.file, gone.access_hash, 0, MIB as u64).await, Err(ReadError::NotFound(_))));
    shard
}

fn on_disk(dir: &Path) -> BTreeSet<SegmentId> {
    list_segment_files(dir).expect("list").into_iter().map(|(segment, _)| segment).collect()
}

fn dma(timing: Timing) {
    let dir = temp_dir("mediastore-reads-compaction");
    let inside = dir.clone();
    on_glommio(move || async move {
        let dir = inside;
        let journal = MemoryJournal::new();
        let io = DmaSegments::open(&dir).await.expect("segments");
        let shard = MediaShard::open(config(), io, journal.clone(), Recovery::default()).await.expect("open");
        let reopen = async |shard: MediaShard<DmaSegments, MemoryJournal>| {
            shard.into_parts().0.close().await.expect("close");
            let io = DmaSegments::open(&dir).await.expect("segments");
            let recovery = journal.recovery().expect("recovery");
            MediaShard::open(config(), io, journal.clone(), recovery).await.expect("reopen")
        };
        let shard = scenario(shard, reopen, || on_disk(&dir), timing).await;
        shard.into_parts().0.close().await.expect("close");
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn reads_planned_before_compaction_run_after_it_over_dma() {
    dma(Timing::AfterCompaction);
}

#[test]
fn reads_running_during_compaction_over_dma() {
    dma(Timing::DuringCompaction);
}

#[test]
fn reads_planned_before_compaction_run_after_it_in_memory() {
    let disk = MemorySegments::new();
    let journal = MemoryJournal::new();
    let shard = block_on(MediaShard::open(config(), disk.clone(), journal.clone(), Recovery::default())).expect("open");
    let reopen = async |shard: MediaShard<MemorySegments, MemoryJournal>| {
        drop(shard);
        let recovery = journal.recovery().expect("recovery");
        MediaShard::open(config(), disk.clone(), journal.clone(), recovery).await.expect("reopen")
    };
    let listed = disk.clone();
    let segment_files = move || {
        let mut io = listed.clone();
        io.list().expect("list").into_iter().map(|(segment, _)| segment).collect::<BTreeSet<_>>()
    };
    block_on(scenario(shard, reopen, segment_files, Timing::AfterCompaction));
}
