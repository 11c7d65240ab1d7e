// Proves the on-disk segment backends: under a glommio executor, O_DIRECT writes and DMA
// reads (after the DMA-read probe workaround of NOTES-runtime) store files that a reopened
// shard — with a cold cache, so every chunk is read back from disk — serves byte for byte,
// and compaction deletes segment files; the std::fs backend does the same; and an offline
// memmap2 scan of the directory finds every indexed chunk intact at its recorded place.

mod support;

use std::path::Path;

use ferrogram_mediastore::segment::scan::scan_directory;
use ferrogram_mediastore::segment::std_files::list_segment_files;
use ferrogram_mediastore::*;
use support::{pseudo_random, temp_dir, KIB, MIB};

fn config() -> MediaConfig {
    let mut config = MediaConfig::new(0xD15C);
    config.segment_bytes_max = 4 * MIB as u64;
    config
}

async fn upload<S: SegmentIo>(shard: &mut MediaShard<S, MemoryJournal>, bytes: &[u8]) -> FinishedFile {
    let request =
        StartUpload { owner: UploaderId(1), client_upload_id: None, total_bytes: None, vshard: VShard::default() };
    let id = shard.start(request, TimestampMs(0)).expect("start");
    let part_bytes = 512 * KIB;
    for (index, part) in bytes.chunks(part_bytes).enumerate() {
        shard.put_part(id, index as u32, part, TimestampMs(0)).await.expect("part");
    }
    let request = FinishUpload {
        parts: bytes.len().div_ceil(part_bytes) as u32,
        total_bytes: Some(bytes.len() as u64),
        name: "f".into(),
        mime_type: "application/octet-stream".into(),
    };
    shard.finish(id, request, TimestampMs(0)).await.expect("finish")
}

async fn download<S: SegmentIo>(shard: &mut MediaShard<S, MemoryJournal>, file: &FinishedFile) -> Vec<u8> {
    let mut out = Vec::new();
    while (out.len() as u64) < file.size {
        let bytes = shard.read(file.file, file.access_hash, out.len() as u64, MIB as u64).await.expect("read");
        assert!(!bytes.is_empty());
        out.extend_from_slice(&bytes);
    }
    out
}

/// Every indexed chunk is found by an offline scan at its location, with its key.
fn check_offline<S: SegmentIo, J: Journal>(dir: &Path, shard: &MediaShard<S, J>) {
    let scans = scan_directory(dir).expect("scan");
    let mut found = std::collections::HashMap::new();
    for (segment, scan) in &scans {
        for frame in &scan.frames {
            found.insert((*segment, frame.offset), (frame.key, frame.length));
        }
    }
    let mut checked = 0;
    for (key, entry) in shard.state().chunks() {
        let location = entry.location;
        assert_eq!(found.get(&(location.segment, location.offset)), Some(&(*key, location.length)), "{key:?}");
        checked += 1;
    }
    assert!(checked > 10, "the scan checked {checked} chunks");
}

/// The scenario on any backend: two files (one deleted), reopen cold, read, compact, reopen.
async fn scenario<S: SegmentIo, F: std::future::Future<Output = S>>(dir: &Path, open_io: impl Fn() -> F) -> S {
    let journal = MemoryJournal::new();
    let kept = pseudo_random(5 * MIB + 3, 1);
    let doomed = pseudo_random(6 * MIB, 2);
    let mut shard =
        MediaShard::open(config(), open_io().await, journal.clone(), Recovery::default()).await.expect("open");
    let file = upload(&mut shard, &kept).await;
    shard.take_reference(file.file, file.access_hash).await.expect("message");
    let gone = upload(&mut shard, &doomed).await;
    shard.take_reference(gone.file, gone.access_hash).await.expect("message");
    drop(shard);

    let recovery = journal.recovery().expect("recovery");
    let mut shard = MediaShard::open(config(), open_io().await, journal.clone(), recovery).await.expect("reopen");
    assert_eq!(shard.stats().cache_bytes, 0, "the reopened cache is cold");
    assert!(download(&mut shard, &file).await == kept, "read back from disk");
    assert!(download(&mut shard, &gone).await == doomed);
    check_offline(dir, &shard);

    shard.release_reference(gone.file, TimestampMs(0)).await.expect("release");
    let files_before = list_segment_files(dir).expect("list").len();
    let report = shard.compact(TimestampMs(shard.config().grace_period_ms)).await.expect("compact");
    assert!(report.segments_retired > 0 && report.chunks_dropped > 0, "{report:?}");
    assert!(list_segment_files(dir).expect("list").len() < files_before, "segment files were deleted");
    let physical: u64 = list_segment_files(dir).expect("list").iter().map(|(_, bytes)| bytes).sum();
    assert_eq!(physical, shard.stats().physical_bytes);
    drop(shard);

    let recovery = journal.recovery().expect("recovery");
    let mut shard = MediaShard::open(config(), open_io().await, journal, recovery).await.expect("reopen");
    assert!(download(&mut shard, &file).await == kept, "read back after compaction");
    check_offline(dir, &shard);
    shard.into_parts().0
}

#[test]
fn dma_segments_under_glommio() {
    let dir = temp_dir("mediastore-dma");
    let inside = dir.clone();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || async move {
            let dir = inside;
            let io = scenario(&dir, || DmaSegments::open(&dir).map(|result| result.expect("DMA segments"))).await;
            io.close().await.expect("close");
        })
        .expect("executor")
        .join()
        .expect("scenario");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn std_segments() {
    let dir = temp_dir("mediastore-std");
    futures_lite::future::block_on(scenario(&dir, || {
        std::future::ready(StdSegments::open(&dir).expect("std segments"))
    }));
    let _ = std::fs::remove_dir_all(dir);
}

trait FutureMap: std::future::Future + Sized {
    fn map<T>(self, f: impl FnOnce(Self::Output) -> T) -> impl std::future::Future<Output = T> {
        async move { f(self.await) }
    }
}

impl<F: std::future::Future> FutureMap for F {}
