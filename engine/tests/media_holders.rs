// Proves keyed media references ("holders") through `Engine::media()` are durable and
// idempotent across restarts: a holder taken on an uploaded file, and one confirmed then
// released, come back from the shard's checkpoint and the media records after it, so the
// reopened shard still counts the one holder left (references == 1) and still lists it as
// unconfirmed; releasing it twice answers true then false, and the file is gone with it.

mod media_support;

use ferrogram_engine::media::{Holder, MediaError, ReadError};
use ferrogram_engine::{RecordKind, ShardId, VShard};
use media_support::*;

/// A record of a kind neither messaging nor media reads, to learn the shard's newest LSN.
const MARKER: RecordKind = RecordKind(0xF00D);
const HOUR_MS: u64 = 60 * 60 * 1000;

#[test]
fn holders_survive_restart_and_release_once() {
    let dir = temp_dir("media-holders");
    let settings = config(&dir, 1);
    let engine = open(settings.clone());
    let media = engine.media();
    let bytes = pseudo_random(300 * KIB + 17, 41);
    let file = upload(&media, 1, vshard(9), &bytes, 128 * KIB, 0);
    let holder = Holder { chat: 100, sender: 1, random_id: 0xABCD };
    let other = Holder { random_id: 0xABCE, ..holder };

    let info = block_on(media.take_holder(file.file, file.access_hash, holder)).expect("take");
    assert_eq!((info.file, info.size, info.references, info.uploader_reference_held), (file.file, file.size, 1, false));
    let again = block_on(media.take_holder(file.file, file.access_hash, holder)).expect("retried take");
    assert_eq!(again, info, "a retried take changes nothing");
    let wrong = ferrogram_engine::media::AccessHash::new(file.access_hash.get() ^ 1);
    assert!(matches!(
        block_on(media.take_holder(file.file, wrong, other)),
        Err(MediaError::Store(ferrogram_engine::media::ReferenceError::AccessDenied(_)))
    ));
    block_on(media.take_holder(file.file, file.access_hash, other)).expect("take another");
    assert!(block_on(media.confirm_holder(file.file, other)).expect("confirm"));
    assert_eq!(block_on(media.unconfirmed_holders(ShardId(0), 0, 10)).expect("list"), vec![(file.file, holder)]);
    assert!(block_on(media.unconfirmed_holders(ShardId(0), HOUR_MS, 10)).expect("list").is_empty(), "too recent");

    // A checkpoint holds both holders; the release after it is replayed on top.
    let marker = block_on(engine.append(VShard::of(0), MARKER, b"marker".to_vec())).expect("append");
    block_on(engine.checkpoint(ShardId(0), b"host".to_vec(), marker.first_lsn)).expect("checkpoint");
    assert!(block_on(media.release_holder(file.file, other)).expect("release the confirmed one"));
    engine.shutdown().expect("shutdown");
    drop(engine);

    let engine = open(settings.clone());
    let media = engine.media();
    let report = &media.open_reports()[0];
    assert!(report.checkpoint_covers.is_some() && report.records_replayed >= 1, "{report:?}");
    let reopened = block_on(media.file_info(file.file, file.access_hash)).expect("the file survived");
    assert_eq!((reopened.references, reopened.uploader_reference_held), (1, false));
    assert_eq!(block_on(media.unconfirmed_holders(ShardId(0), 0, 10)).expect("list"), vec![(file.file, holder)]);
    assert!(download(&media, &file) == bytes);
    assert!(!block_on(media.release_holder(file.file, other)).expect("released before the restart"));
    assert!(block_on(media.release_holder(file.file, holder)).expect("release"));
    assert!(!block_on(media.release_holder(file.file, holder)).expect("release again"));
    assert!(matches!(
        block_on(media.file_info(file.file, file.access_hash)),
        Err(MediaError::Store(ReadError::NotFound(_)))
    ));
    engine.shutdown().expect("shutdown");
    drop(engine);

    // The release is durable too: a late duplicate after another restart is still a no-op.
    let engine = open(settings);
    let media = engine.media();
    assert!(!block_on(media.release_holder(file.file, holder)).expect("release after restart"));
    assert!(block_on(media.unconfirmed_holders(ShardId(0), 0, 10)).expect("list").is_empty());
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}
