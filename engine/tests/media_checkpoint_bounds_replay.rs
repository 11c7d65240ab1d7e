// Proves the media state is part of the shard's checkpoints, so restart replays only what
// came after: a checkpoint taken through the engine, then more uploads, then a reopen restores
// the checkpoint's media section and replays exactly the media records written after it (the
// open report counts them), and every file reads back byte for byte. A shard that stores only
// media still checkpoints on its own (media records count toward the checkpoint interval).

mod media_support;

use ferrogram_engine::{Lsn, RecordKind, ShardId, VShard};
use media_support::*;

/// A record of a kind neither messaging nor media reads, to learn the shard's newest LSN.
const MARKER: RecordKind = RecordKind(0xF00D);

#[test]
fn reopen_restores_the_checkpoint_and_replays_the_rest() {
    let dir = temp_dir("media-checkpoint");
    let settings = config(&dir, 1);
    let engine = open(settings.clone());
    let media = engine.media();
    let mut files = Vec::new();
    for index in 0..5u64 {
        let bytes = pseudo_random(200 * KIB + index as usize * 77_777, 10 + index);
        files.push((upload(&media, 1, vshard(3), &bytes, 64 * KIB, index), bytes));
    }
    // The media store is idle and nothing expires: the marker is the newest record.
    let marker = block_on(engine.append(VShard::of(0), MARKER, b"marker".to_vec())).expect("append");
    let ticket = block_on(engine.checkpoint(ShardId(0), b"host state".to_vec(), marker.first_lsn)).expect("checkpoint");
    assert_eq!(ticket.lsn, marker.first_lsn);
    let after = 3;
    for index in 0..after {
        let bytes = pseudo_random(300 * KIB + index as usize, 20 + index);
        files.push((upload(&media, 1, vshard(3), &bytes, 128 * KIB, index), bytes));
    }
    engine.shutdown().expect("shutdown");
    drop(engine);

    let engine = open(settings.clone());
    let media = engine.media();
    let (log_report, media_report) = (&engine.open_reports()[0], &media.open_reports()[0]);
    let (used, host) = log_report.checkpoint.as_ref().expect("the checkpoint was used");
    assert_eq!((used.lsn, host.as_slice()), (ticket.lsn, b"host state".as_slice()));
    let covers = media_report.checkpoint_covers.expect("the checkpoint has a media section");
    assert!(covers < ticket.lsn && covers > Lsn(0), "{media_report:?}");
    // Each file after it is one chunk-list record and one finish record; nothing else.
    assert_eq!(media_report.records_replayed, 2 * after as usize, "{media_report:?}");
    assert_eq!(media_report.records_skipped, 0, "{media_report:?}");
    assert_eq!(media_report.files, files.len() as u64);
    for (file, bytes) in &files {
        assert!(download(&media, file) == *bytes, "{} did not survive", file.file);
    }
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn media_alone_triggers_checkpoints() {
    let dir = temp_dir("media-auto-checkpoint");
    let mut settings = config(&dir, 1);
    settings.checkpoint_every_bytes = 2 * KIB as u64;
    let engine = open(settings.clone());
    let media = engine.media();
    let mut files = Vec::new();
    for index in 0..24u64 {
        let bytes = pseudo_random(150 * KIB + index as usize * 1000, 40 + index);
        files.push((upload(&media, 1, vshard(5), &bytes, 64 * KIB, index), bytes));
    }
    engine.shutdown().expect("shutdown");
    drop(engine);

    let engine = open(settings);
    let media = engine.media();
    assert!(engine.open_reports()[0].checkpoint.is_some(), "no automatic checkpoint was taken");
    let report = &media.open_reports()[0];
    assert!(report.checkpoint_covers.is_some(), "{report:?}");
    assert!(report.records_replayed < 2 * files.len(), "replay was not bounded by the checkpoint: {report:?}");
    assert_eq!(report.files, files.len() as u64);
    for (file, bytes) in &files {
        assert!(download(&media, file) == *bytes, "{} did not survive", file.file);
    }
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
