// Proves a checkpoint in the layout written before media existed ([u64 host length][host]
// [messaging snapshot], no media section) still opens: host and messaging state come back
// from it, the media state starts empty and every media record after it is replayed, so each
// file uploaded after that checkpoint reads back byte for byte.

mod media_support;

use ferrogram_engine::media::checkpoint;
use ferrogram_engine::wal::meta::{LogMeta, META_FILE};
use ferrogram_engine::{RecordKind, ShardId, VShard};
use media_support::*;

const MARKER: RecordKind = RecordKind(0xF00D);
const PHONE: &str = "+15550001234";

#[test]
fn legacy_checkpoint_restores_and_replays_all_media() {
    let dir = temp_dir("media-legacy-checkpoint");
    let settings = config(&dir, 1);
    let engine = open(settings.clone());
    let user = block_on(engine.messenger().sign_up(PHONE, "Ada", "")).expect("sign up");
    let marker = block_on(engine.append(VShard::of(0), MARKER, b"marker".to_vec())).expect("append");
    let ticket =
        block_on(engine.checkpoint(ShardId(0), b"legacy host".to_vec(), marker.first_lsn)).expect("checkpoint");
    let media = engine.media();
    let mut files = Vec::new();
    for index in 0..3u64 {
        let bytes = pseudo_random(700 * KIB + index as usize * 4099, 70 + index);
        files.push((upload(&media, 1, vshard(9), &bytes, 256 * KIB, index), bytes));
    }
    engine.shutdown().expect("shutdown");
    drop(engine);

    // Rewrite the checkpoint's state in the legacy layout, as an engine before media wrote it.
    let shard_dir = dir.join("shard-0");
    let salt = LogMeta::decode(&std::fs::read(shard_dir.join(META_FILE)).expect("meta")).expect("meta decodes").salt;
    let path = shard_dir.join("checkpoints").join(ferrogram_engine::wal::checkpoint::file_name(ticket.lsn));
    let bytes = std::fs::read(&path).expect("checkpoint file");
    let (read_ticket, state) = ferrogram_engine::wal::checkpoint::decode(&bytes, salt).expect("checkpoint decodes");
    assert_eq!(read_ticket, ticket);
    let sections = checkpoint::split(state).expect("version 2 state");
    assert!(sections.media.is_some(), "the engine writes a media section");
    let mut legacy = (sections.host.len() as u64).to_le_bytes().to_vec();
    legacy.extend_from_slice(sections.host);
    legacy.extend_from_slice(sections.messaging);
    assert_eq!(checkpoint::split(&legacy).expect("legacy splits").media, None);
    std::fs::write(&path, ferrogram_engine::wal::checkpoint::encode(ticket, &legacy, salt)).expect("rewrite");

    let engine = open(settings);
    let (used, host) = engine.open_reports()[0].checkpoint.as_ref().expect("the legacy checkpoint was used");
    assert_eq!((used.lsn, host.as_slice()), (ticket.lsn, b"legacy host".as_slice()));
    assert_eq!(block_on(engine.messenger().lookup_phone(PHONE)).expect("lookup"), Some(user));
    let media = engine.media();
    let report = &media.open_reports()[0];
    assert_eq!(report.checkpoint_covers, None, "{report:?}");
    assert_eq!(report.records_replayed, 2 * files.len(), "{report:?}");
    for (file, bytes) in &files {
        assert!(download(&media, file) == *bytes, "{} did not survive", file.file);
    }
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
