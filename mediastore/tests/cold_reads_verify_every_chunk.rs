// Proves that a cold read, which fetches the adjacent chunks of a download range in one disk
// read, still verifies every chunk on its own: after a reopen (cold cache), a file reads back
// byte for byte in 1 MiB ranges; with one byte of one chunk's payload flipped on disk (a chunk
// in the middle of a range, so inside a span), the ranges that do not touch it still read
// byte for byte and the one that does fails as corrupt instead of returning wrong bytes.

mod support;

use std::os::unix::fs::FileExt;
use std::path::Path;

use ferrogram_mediastore::limits::FRAME_HEADER_BYTES;
use ferrogram_mediastore::segment::scan::scan_directory;
use ferrogram_mediastore::segment::std_files::segment_file_name;
use ferrogram_mediastore::*;
use futures_lite::future::block_on;
use support::{pseudo_random, temp_dir, KIB, MIB};

#[test]
fn cold_range_reads_verify_each_chunk() {
    let dir = temp_dir("mediastore-cold-reads");
    let journal = MemoryJournal::new();
    let content = pseudo_random(3 * MIB + 5_000, 11);
    let mut shard = open(&dir, &journal, Recovery::default());
    let file = block_on(upload(&mut shard, &content));
    drop(shard);

    let mut shard = open(&dir, &journal, journal.recovery().expect("recovery"));
    assert_eq!(shard.stats().cache_bytes, 0, "the reopened cache is cold");
    assert!(download(&mut shard, &file).into_iter().flatten().flatten().collect::<Vec<u8>>() == content);
    drop(shard);

    // The chunk holding the file's byte at 1.5 MiB: in the middle of the second range.
    let target = (3 * MIB / 2) as u64;
    let scans = scan_directory(&dir).expect("scan");
    let (segment, frame) = scans
        .iter()
        .flat_map(|(segment, scan)| scan.frames.iter().map(move |frame| (*segment, frame)))
        .scan(0u64, |start, (segment, frame)| {
            let chunk_start = *start;
            *start += u64::from(frame.length);
            Some((segment, frame, chunk_start))
        })
        .find(|(_, frame, chunk_start)| (*chunk_start..chunk_start + u64::from(frame.length)).contains(&target))
        .map(|(segment, frame, _)| (segment, *frame))
        .expect("a chunk covers the byte");
    assert!(frame.length as usize >= 16 * KIB);
    flip_byte(&dir.join(segment_file_name(segment)), frame.offset + u64::from(FRAME_HEADER_BYTES) + 100);

    let mut shard = open(&dir, &journal, journal.recovery().expect("recovery"));
    let ranges = download(&mut shard, &file);
    assert!(ranges[0].as_ref().is_some_and(|bytes| bytes[..] == content[..MIB]), "the first range is intact");
    assert!(ranges[1].is_none(), "the range with the damaged chunk fails");
    assert!(ranges[3].as_ref().is_some_and(|bytes| bytes[..] == content[3 * MIB..]), "the last range is intact");
    let _ = std::fs::remove_dir_all(dir);
}

fn open(dir: &Path, journal: &MemoryJournal, recovery: Recovery) -> MediaShard<StdSegments, MemoryJournal> {
    let mut config = MediaConfig::new(0xC01D);
    config.segment_bytes_max = 64 * MIB as u64;
    config.cache_bytes_max = 4 * MIB as u64;
    let io = StdSegments::open(dir).expect("segments");
    block_on(MediaShard::open(config, io, journal.clone(), recovery)).expect("open")
}

async fn upload(shard: &mut MediaShard<StdSegments, MemoryJournal>, bytes: &[u8]) -> FinishedFile {
    let request =
        StartUpload { owner: UploaderId(1), client_upload_id: None, total_bytes: None, vshard: VShard::default() };
    let id = shard.start(request, TimestampMs(0)).expect("start");
    for (index, part) in bytes.chunks(512 * KIB).enumerate() {
        shard.put_part(id, index as u32, part, TimestampMs(0)).await.expect("part");
    }
    let parts = bytes.len().div_ceil(512 * KIB) as u32;
    let request = FinishUpload { parts, total_bytes: Some(bytes.len() as u64), name: "f".into(), mime_type: "".into() };
    let file = shard.finish(id, request, TimestampMs(0)).await.expect("finish");
    shard.take_reference(file.file, file.access_hash).await.expect("a message's reference");
    file
}

/// Each 1 MiB range of the file: its bytes, or `None` if the read failed as corrupt.
fn download(shard: &mut MediaShard<StdSegments, MemoryJournal>, file: &FinishedFile) -> Vec<Option<Vec<u8>>> {
    (0..file.size.div_ceil(MIB as u64))
        .map(|range| match block_on(shard.read(file.file, file.access_hash, range * MIB as u64, MIB as u64)) {
            Ok(bytes) => Some(bytes),
            Err(ReadError::Storage(StorageError::Corrupt { .. })) => None,
            Err(error) => panic!("range {range}: {error}"),
        })
        .collect()
}

fn flip_byte(path: &Path, offset: u64) {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).expect("segment file");
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).expect("read the byte");
    file.write_all_at(&[byte[0] ^ 0x20], offset).expect("flip it");
}
