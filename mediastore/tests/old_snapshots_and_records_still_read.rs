// Proves what the store wrote before holders existed still reads: `data/snapshot_v1.bin` is a
// version 1 checkpoint snapshot and `data/records_v1.bin` the journal records that built it
// (length-prefixed), both written by the code before this change. The old snapshot restores
// (converted, with no holders), the old records decode with their old meaning, and replaying
// them from nothing gives the state the old snapshot holds; holders then work on those files.

use ferrogram_mediastore::state::MediaState;
use ferrogram_mediastore::*;

const SNAPSHOT_V1: &[u8] = include_bytes!("data/snapshot_v1.bin");
const RECORDS_V1: &[u8] = include_bytes!("data/records_v1.bin");

fn records_v1() -> Vec<MediaRecord> {
    let mut records = Vec::new();
    let mut rest = RECORDS_V1;
    while !rest.is_empty() {
        let length = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        records.push(MediaRecord::decode(&rest[4..4 + length]).expect("an old record decodes"));
        rest = &rest[4 + length..];
    }
    records
}

#[test]
fn version_1_snapshot_and_old_records_restore() {
    let snapshot = MediaSnapshot::decode(SNAPSHOT_V1).expect("a version 1 snapshot decodes");
    assert_eq!(snapshot.version, records::SNAPSHOT_VERSION);
    let restored = MediaState::restore(&snapshot).expect("restores");
    let (a, b) = (FileId::from_raw(4103), FileId::from_raw(8199));
    let file_a = restored.file(a).expect("file a");
    assert_eq!((file_a.meta.size, file_a.references, file_a.uploader_expires_at), (307_200, 1, None));
    assert!(file_a.holders.is_empty());
    let file_b = restored.file(b).expect("file b");
    assert_eq!((file_b.meta.size, file_b.references), (204_800, 0));
    assert_eq!(file_b.uploader_expires_at, Some(TimestampMs(86_400_006)));
    assert_eq!(restored.file_count(), 2);

    let records = records_v1();
    assert!(records.iter().any(|record| matches!(record, MediaRecord::ReferenceTaken { .. })));
    assert!(records.iter().any(|record| matches!(record, MediaRecord::ReferenceReleased { .. })));
    let mut replayed = MediaState::default();
    for record in &records {
        replayed.apply(record).expect("an old record applies");
    }
    replayed.discard_pending();
    assert_eq!(replayed.snapshot(), restored.snapshot(), "old records and old snapshot disagree");

    // Holders on a restored file: the old anonymous reference and a holder count together.
    let mut state = restored;
    let holder = Holder { chat: 1, sender: 2, random_id: 3 };
    state.apply(&MediaRecord::HolderTaken { file: b, holder, at: TimestampMs(100) }).expect("take");
    state.apply(&MediaRecord::HolderTaken { file: a, holder, at: TimestampMs(100) }).expect("take");
    assert_eq!(state.file(a).expect("a").message_references(), 2);
    let again = MediaSnapshot::decode(&state.snapshot().encode().expect("encode")).expect("decode");
    assert_eq!(MediaState::restore(&again).expect("restores").snapshot(), state.snapshot());
}
