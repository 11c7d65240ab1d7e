// Proves uploads through `Engine::media()` on real shards and files: parts sent out of order
// (and retried) finish into files that read back byte for byte from the shard their vshard
// routes to; the same content uploaded twice takes its space once; a wrong access hash and a
// misaligned range are refused; the in-flight part budget answers `Overloaded` and comes back;
// and after a clean restart every finished file reads back from disk (cold cache) while an
// unfinished upload is gone.

mod media_support;

use std::collections::BTreeMap;

use ferrogram_engine::media::{MediaError, PutPartError, ReadError};
use ferrogram_engine::ShardId;
use media_support::*;

#[test]
fn files_round_trip_dedup_and_survive_restart() {
    let dir = temp_dir("media-round-trip");
    let mut settings = config(&dir, 2);
    settings.media.inflight_part_bytes_max = MIB as u64;
    let engine = open(settings.clone());
    let media = engine.media();

    // Awkward sizes over several vshards (so both shards hold files), parts out of order.
    let cases: Vec<(usize, usize)> = vec![
        (0, 512 * KIB),
        (1, 512 * KIB),
        (4096, 4 * KIB),
        (512 * KIB, 512 * KIB),
        (512 * KIB + 1, 128 * KIB),
        (3 * MIB + 7, 512 * KIB),
        (2 * MIB + 12_345, 64 * KIB),
    ];
    let mut files = Vec::new();
    let mut per_shard: BTreeMap<ShardId, u64> = BTreeMap::new();
    for (index, (size, part_bytes)) in cases.iter().copied().enumerate() {
        let on = vshard(100 + index as u16);
        let bytes = pseudo_random(size, index as u64 + 1);
        let file = upload(&media, 1, on, &bytes, part_bytes, index as u64);
        assert_eq!(file.file.vshard(), on, "the file id carries its upload's vshard");
        assert_eq!(file.size, size as u64);
        assert!(download(&media, &file) == bytes, "size {size} did not round-trip");
        *per_shard.entry(engine.shard_of(ferrogram_engine::VShard::of(u64::from(on.get())))).or_default() += 1;
        files.push((file, bytes));
    }
    assert_eq!(per_shard.len(), 2, "files landed on both shards: {per_shard:?}");
    let stats = block_on(media.stats()).expect("stats");
    for (shard, count) in &per_shard {
        assert_eq!(stats.shards[shard.index()].files, *count, "shard {shard} holds the files routed to it");
    }

    // The same content again, by another uploader on the same vshard: no new chunk is stored.
    let (original, content) = files.last().cloned().expect("a file");
    let shard = engine.shard_of(ferrogram_engine::VShard::of(u64::from(original.file.vshard().get())));
    let before = block_on(media.stats()).expect("stats").shards[shard.index()].clone();
    let again = upload(&media, 2, original.file.vshard(), &content, 512 * KIB, 99);
    assert_ne!(again.file, original.file);
    assert_eq!(again.content_hash, original.content_hash);
    let after = block_on(media.stats()).expect("stats").shards[shard.index()].clone();
    assert_eq!((after.files, after.stored_bytes, after.chunks), (before.files + 1, before.stored_bytes, before.chunks));
    assert_eq!(after.logical_bytes, before.logical_bytes + content.len() as u64);
    assert!(after.dedup_ratio > before.dedup_ratio, "{} then {}", before.dedup_ratio, after.dedup_ratio);
    assert!(download(&media, &again) == content);
    files.push((again, content));

    // Refusals: a wrong access hash, a misaligned range, an oversized part.
    let (file, _) = &files[3];
    let wrong = ferrogram_engine::media::AccessHash::new(file.access_hash.get() ^ 1);
    assert!(matches!(
        block_on(media.read(file.file, wrong, 0, 4096)),
        Err(MediaError::Store(ReadError::AccessDenied(_)))
    ));
    assert!(matches!(
        block_on(media.read(file.file, file.access_hash, 100, 4096)),
        Err(MediaError::Store(ReadError::MisalignedOffset { .. }))
    ));
    let pending = start(&media, 3, vshard(7), 4 * MIB);
    assert!(matches!(
        block_on(media.put_part(pending, 0, vec![0; 512 * KIB + 1])),
        Err(MediaError::Store(PutPartError::PartTooLarge { .. }))
    ));

    // The in-flight budget (1 MiB here): parts fired without waiting overrun it at once.
    let parts: Vec<Vec<u8>> = (0..32).map(|part| pseudo_random(512 * KIB, 1000 + part)).collect();
    // Copied first, so the submissions themselves take microseconds.
    let copies = parts.clone();
    let answers: Vec<_> =
        copies.into_iter().enumerate().map(|(part, bytes)| media.put_part(pending, part as u32, bytes)).collect();
    let outcomes: Vec<_> = answers.into_iter().map(block_on).collect();
    let overloaded = outcomes.iter().filter(|outcome| matches!(outcome, Err(MediaError::Overloaded))).count();
    assert!(overloaded > 0, "32 parts of 512 KiB in flight never passed a 1 MiB budget");
    assert!(outcomes.iter().all(|outcome| matches!(outcome, Ok(_) | Err(MediaError::Overloaded))), "{outcomes:?}");
    // Every reservation came back: two parts filling the whole budget are taken together.
    assert!(block_on(media.cancel_upload(pending)).expect("cancel"));
    let unfinished = start(&media, 4, vshard(8), 2 * MIB);
    let second = media.put_part(unfinished, 1, parts[1].clone());
    let first = media.put_part(unfinished, 0, parts[0].clone());
    block_on(second).expect("the budget is free again");
    block_on(first).expect("the budget is free again");

    engine.shutdown().expect("shutdown");
    drop(engine);

    let engine = open(settings);
    let media = engine.media();
    let reports = media.open_reports();
    assert_eq!(reports.iter().map(|report| report.files).sum::<u64>(), files.len() as u64, "{reports:?}");
    let stats = block_on(media.stats()).expect("stats");
    assert_eq!(stats.total.cache_bytes, 0, "the reopened caches are cold: reads come from disk");
    for (file, bytes) in &files {
        assert!(download(&media, file) == *bytes, "{} did not survive the restart", file.file);
    }
    // An unfinished upload lives in memory only: it ends with the process.
    assert!(matches!(
        block_on(media.put_part(unfinished, 2, parts[2].clone())),
        Err(MediaError::Store(PutPartError::UnknownUpload))
    ));
    let sweeps = block_on(media.sweep()).expect("sweep");
    assert!(sweeps.iter().all(|sweep| sweep.chunks_missing == 0 && sweep.refcounts_repaired == 0), "{sweeps:?}");
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
