// Proves every upload limit answers with its typed error: a file over the configured maximum
// (announced at start, implied by a part's position, or found at finish), parts that are too
// large, empty or of a size that cannot be a full part, too many parts, a full staging area
// (while the parts needed for progress are still admitted), and too many open uploads.

mod support;

use ferrogram_mediastore::*;
use support::*;

fn small_config() -> MediaConfig {
    let mut config = config();
    config.file_bytes_max = 3 * MIB as u64;
    config.upload_staging_bytes_max = 2 * MIB as u64;
    config.staging_bytes_max = 3 * MIB as u64;
    config.uploads_max = 4;
    config
}

#[test]
fn too_large_is_refused_everywhere() {
    let (mut shard, _disk, _journal) = fresh(small_config());
    let start_request = |total| StartUpload {
        owner: UploaderId(1),
        client_upload_id: None,
        total_bytes: Some(total),
        vshard: VShard::default(),
    };
    assert!(matches!(
        shard.start(start_request(3 * MIB as u64 + 1), TimestampMs(0)),
        Err(StartError::TooLarge { bytes, max }) if bytes == 3 * MIB as u64 + 1 && max == 3 * MIB as u64
    ));
    let id = start(&mut shard, 1, 0);
    let part = pseudo_random(512 * KIB, 1);
    // Part 6 of 512 KiB would end at 3.5 MiB.
    assert!(matches!(
        block_on(shard.put_part(id, 6, &part, TimestampMs(0))),
        Err(PutPartError::TooLarge { max, .. }) if max == 3 * MIB as u64
    ));
    // Exactly the maximum is fine.
    let bytes = pseudo_random(3 * MIB, 2);
    let file = upload(&mut shard, &bytes, 512 * KIB, 0);
    assert_eq!(file.size, 3 * MIB as u64);
    // A part beyond what `start` announced.
    let announced = shard.start(start_request(MIB as u64), TimestampMs(0)).expect("start");
    assert!(matches!(
        block_on(shard.put_part(announced, 2, &part, TimestampMs(0))),
        Err(PutPartError::BeyondTotal { .. })
    ));
}

#[test]
fn part_shapes_are_checked() {
    let (mut shard, _disk, _journal) = fresh(small_config());
    let id = start(&mut shard, 1, 0);
    let put =
        |shard: &mut TestShard, index: u32, bytes: &[u8]| block_on(shard.put_part(id, index, bytes, TimestampMs(0)));
    assert!(matches!(put(&mut shard, 0, &[]), Err(PutPartError::EmptyPart { part: 0 })));
    assert!(matches!(put(&mut shard, 0, &vec![0; 512 * KIB + 1]), Err(PutPartError::PartTooLarge { .. })));
    assert!(matches!(put(&mut shard, 4096, &[1; 1024]), Err(PutPartError::TooManyParts { part: 4096, max: 4096 })));
    put(&mut shard, 1, &[1; 3000]).expect("a lone part may be a short last part");
    assert!(matches!(put(&mut shard, 0, &[1; 3000]), Err(PutPartError::InvalidPartSize { part: 0, bytes: 3000 })));
    put(&mut shard, 0, &[1; 4096]).expect("a full part");
    assert!(matches!(put(&mut shard, 2, &[1; 4096]), Err(PutPartError::PartBeyondLast { part: 2, last: 1 })));
}

#[test]
fn staging_is_bounded_but_progress_is_not_blocked() {
    let mut config = small_config();
    config.file_bytes_max = 8 * MIB as u64;
    let (mut shard, _disk, _journal) = fresh(config);
    let id = start(&mut shard, 1, 0);
    let part = pseudo_random(512 * KIB, 3);
    // Parts far ahead of the prefix fill the upload's 2 MiB window…
    for index in 2..6 {
        block_on(shard.put_part(id, index, &part, TimestampMs(0))).expect("within the window");
    }
    assert!(matches!(
        block_on(shard.put_part(id, 6, &part, TimestampMs(0))),
        Err(PutPartError::StagingFull { max, .. }) if max == 2 * MIB as u64
    ));
    // …but the parts the upload needs next are always admitted, and folding frees the window.
    block_on(shard.put_part(id, 0, &part, TimestampMs(0))).expect("next part");
    block_on(shard.put_part(id, 1, &part, TimestampMs(0))).expect("next part");
    assert!(shard.stats().staging_bytes < 2 * MIB as u64);
    // Parts 0..4 are folded now; part 7 is ahead of the prefix again and fits the window.
    block_on(shard.put_part(id, 7, &part, TimestampMs(0))).expect("room again");
}

#[test]
fn open_uploads_are_bounded() {
    let (mut shard, _disk, _journal) = fresh(small_config());
    for owner in 0..4 {
        start(&mut shard, owner, 0);
    }
    let request =
        StartUpload { owner: UploaderId(9), client_upload_id: None, total_bytes: None, vshard: VShard::default() };
    assert!(matches!(shard.start(request, TimestampMs(0)), Err(StartError::TooManyUploads { max: 4 })));
}

#[test]
fn a_retried_start_returns_the_same_upload() {
    let (mut shard, _disk, _journal) = fresh(small_config());
    let request = |owner| StartUpload {
        owner: UploaderId(owner),
        client_upload_id: Some(77),
        total_bytes: None,
        vshard: VShard::default(),
    };
    let first = shard.start(request(1), TimestampMs(0)).expect("start");
    assert_eq!(shard.start(request(1), TimestampMs(0)).expect("retry"), first);
    assert_ne!(shard.start(request(2), TimestampMs(0)).expect("another owner"), first);
}
