// Proves, through `Engine::media()` on a real shard, that downloads served at once stay right
// and bounded: many ranges of several files asked for all at once, with a cold cache smaller
// than a file and room for only 2 reads in flight, all answer byte for byte while the shard
// never has more than 2 in flight; and ranges read over and over by several threads while the
// shard compacts away the segments they lie in (moving the chunks of the file they read, and
// deleting the segment files) answer byte for byte throughout, after which the deleted file is
// not found.

mod media_support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use std::collections::BTreeSet;
use std::path::Path;

use ferrogram_engine::media::config::MEDIA_DIR;
use ferrogram_engine::media::store::segment::std_files::list_segment_files;
use ferrogram_engine::media::{FinishedFile, Media, MediaError, ReadError};
use media_support::*;

/// Uploads `contents` on one vshard at once, a part of each in turn, so their chunks interleave
/// in the segments; gives each file a message's reference.
fn upload_interleaved(media: &Media, contents: &[Vec<u8>]) -> Vec<FinishedFile> {
    let part_bytes = 512 * KIB;
    let uploads: Vec<_> = contents
        .iter()
        .enumerate()
        .map(|(index, bytes)| start(media, index as u64 + 1, vshard(9), bytes.len()))
        .collect();
    let most_parts = contents.iter().map(|bytes| bytes.len().div_ceil(part_bytes)).max().unwrap_or(0);
    for part in 0..most_parts {
        for (bytes, upload) in contents.iter().zip(&uploads) {
            if let Some(piece) = bytes.chunks(part_bytes).nth(part) {
                put_part(media, *upload, part as u32, piece);
            }
        }
    }
    contents
        .iter()
        .zip(&uploads)
        .map(|(bytes, upload)| {
            let file = block_on(media.finish_upload(*upload, finish_request(bytes.len(), part_bytes))).expect("finish");
            block_on(media.take_reference(file.file, file.access_hash)).expect("a message's reference");
            file
        })
        .collect()
}

fn segment_files(dir: &Path) -> BTreeSet<u64> {
    let media = dir.join("shard-0").join(MEDIA_DIR);
    list_segment_files(&media).expect("list").into_iter().map(|(segment, _)| segment.0).collect()
}

fn window(content: &[u8], offset: u64) -> &[u8] {
    &content[offset as usize..(offset as usize + MIB).min(content.len())]
}

#[test]
fn many_ranges_at_once_are_exact_and_bounded() {
    let dir = temp_dir("media-reads-at-once");
    let mut settings = config(&dir, 1);
    settings.media.store.cache_bytes_max = MIB as u64;
    settings.media.store.reads_in_flight_max = 2;
    let contents = vec![pseudo_random(5 * MIB + 999, 51), pseudo_random(4 * MIB, 52), pseudo_random(6 * MIB, 53)];
    let engine = open(settings.clone());
    let files = upload_interleaved(&engine.media(), &contents);
    engine.shutdown().expect("shutdown");
    drop(engine);

    let engine = open(settings);
    let media = engine.media();
    assert_eq!(block_on(media.stats()).expect("stats").total.cache_bytes, 0, "cold");
    // Every window of every file, twice, all asked for before any answer is awaited: each
    // request is queued on the shard when it is made.
    let mut asked = Vec::new();
    for _ in 0..2 {
        for (index, file) in files.iter().enumerate() {
            for offset in (0..file.size).step_by(MIB) {
                asked.push((index, offset, media.read(file.file, file.access_hash, offset, MIB as u64)));
            }
        }
    }
    assert!(asked.len() > 20);
    for (index, offset, answer) in asked {
        let bytes = block_on(answer).unwrap_or_else(|error| panic!("file {index} at {offset}: {error}"));
        assert!(bytes == window(&contents[index], offset), "file {index} at {offset}: wrong bytes");
    }
    let stats = block_on(media.stats()).expect("stats").total;
    assert_eq!((stats.reads_in_flight, stats.read_bytes_in_flight), (0, 0), "every slot came back");
    assert!((1..=2).contains(&stats.reads_in_flight_peak), "the bound held: {stats:?}");
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ranges_read_during_compaction_stay_exact() {
    let dir = temp_dir("media-reads-compaction");
    let mut settings = config(&dir, 1);
    settings.media.store.cache_bytes_max = MIB as u64;
    settings.media.store.grace_period_ms = 0;
    settings.media.store.compaction_live_per_mille = 900;
    let engine = open(settings);
    let media = engine.media();
    let kept_bytes = Arc::new(pseudo_random(6 * MIB + 4096, 61));
    let files = upload_interleaved(&media, &[kept_bytes.to_vec(), pseudo_random(6 * MIB, 62)]);
    let (kept, gone) = (files[0].clone(), files[1].clone());
    let segments_before = segment_files(&dir);

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..4)
        .map(|reader| {
            let (media, kept_bytes, stop, reads) = (media.clone(), kept_bytes.clone(), stop.clone(), reads.clone());
            let kept = kept.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    // A few ranges in flight per reader, as a client keeps a window of them.
                    let offsets: Vec<u64> = (0..kept.size).step_by(MIB).collect();
                    let asked: Vec<_> = offsets
                        .iter()
                        .map(|&offset| (offset, media.read(kept.file, kept.access_hash, offset, MIB as u64)))
                        .collect();
                    for (offset, answer) in asked {
                        match block_on(answer) {
                            Ok(bytes) => assert!(bytes == window(&kept_bytes, offset), "reader {reader} at {offset}"),
                            Err(MediaError::Overloaded) => {}
                            Err(error) => panic!("reader {reader} at {offset}: {error}"),
                        }
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    std::thread::sleep(std::time::Duration::from_millis(50));
    block_on(media.release_reference(gone.file)).expect("release");
    let reports = block_on(media.compact()).expect("compact");
    let during = reads.load(Ordering::Relaxed);
    std::thread::sleep(std::time::Duration::from_millis(50));
    stop.store(true, Ordering::Release);
    for reader in readers {
        reader.join().expect("a reader saw wrong bytes or an error");
    }
    assert!(reports[0].segments_retired > 0 && reports[0].chunks_moved > 0, "{reports:?}");
    assert!(during > 0 && reads.load(Ordering::Relaxed) > during, "reads ran before, during and after");
    let segments_after = segment_files(&dir);
    assert!(
        !segments_before.is_empty() && segments_before.is_disjoint(&segments_after),
        "the segments the reads started on were deleted: {segments_before:?}, then {segments_after:?}"
    );
    assert!(download(&media, &kept) == *kept_bytes);
    assert!(matches!(
        block_on(media.read(gone.file, gone.access_hash, 0, 4096)),
        Err(MediaError::Store(ReadError::NotFound(_)))
    ));
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
