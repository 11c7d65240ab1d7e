// Proves files of every awkward size (0 and 1 byte, exact part multiples, one byte over, a
// few MiB) come back byte for byte, through whole-window reads and small aligned ranges, and
// that the manifest's size and keyed content hash describe the bytes uploaded.

mod support;

use ferrogram_mediastore::ChunkHasher;
use support::*;

#[test]
fn every_size_round_trips() {
    let (mut shard, _disk, _journal) = fresh(config());
    let part = 512 * KIB;
    let cases: Vec<(usize, usize)> = vec![
        (0, part),
        (1, part),
        (1, KIB),
        (4095, 4 * KIB),
        (4096, 4 * KIB),
        (4097, 4 * KIB),
        (part, part),
        (3 * part, part),
        (3 * part + 1, part),
        (2 * MIB + 12_345, 64 * KIB),
        (5 * MIB - 1, part),
    ];
    for (index, (size, part_bytes)) in cases.into_iter().enumerate() {
        let bytes = pseudo_random(size, index as u64 + 1);
        let file = upload(&mut shard, &bytes, part_bytes, 1_000);
        assert_eq!(file.size, size as u64);
        assert_eq!(file.content_hash, ChunkHasher::keyed(config().hash_seed).whole_file_hash(&bytes), "size {size}");
        let back = download(&mut shard, &file);
        assert!(back == bytes, "size {size} in parts of {part_bytes} did not round-trip");
        // Small aligned ranges inside the file, including ones that straddle chunk ends.
        for offset in (0..size as u64).step_by(200 * KIB).map(|offset| offset / 4096 * 4096) {
            let limit = 8 * KIB as u64;
            let window_end = (offset / MIB as u64 + 1) * MIB as u64;
            let limit = limit.min(window_end - offset);
            let range = block_on(shard.read(file.file, file.access_hash, offset, limit)).expect("ranged read");
            let end = (offset + limit).min(size as u64) as usize;
            assert!(range == bytes[offset as usize..end], "size {size} range at {offset}");
        }
        let past_end = (size as u64).next_multiple_of(4096);
        let empty = block_on(shard.read(file.file, file.access_hash, past_end, 4096)).expect("read past the end");
        assert!(empty.is_empty(), "a read past the end returns nothing");
    }
}
