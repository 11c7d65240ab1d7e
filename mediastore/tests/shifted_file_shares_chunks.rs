// Proves content-defined chunking survives shifts: a file with bytes inserted at its start
// (and one edited in the middle) shares at least 90% of its chunks with the original, and
// the store writes only the few chunks that differ.

mod support;

use std::collections::HashSet;

use ferrogram_mediastore::ChunkKey;
use support::*;

fn chunk_keys(shard: &TestShard, file: &ferrogram_mediastore::FinishedFile) -> Vec<ChunkKey> {
    shard.state().file(file.file).expect("file").chunks.clone()
}

#[test]
fn insertion_at_start_shares_chunks() {
    let (mut shard, _disk, _journal) = fresh(config());
    let original = pseudo_random(8 * MIB, 21);
    let mut shifted = pseudo_random(1234, 22);
    shifted.extend_from_slice(&original);
    let mut edited = original.clone();
    edited[4 * MIB..4 * MIB + 100].fill(0xEE);

    let first = upload(&mut shard, &original, 512 * KIB, 0);
    let physical_before = shard.stats().physical_bytes;
    let second = upload(&mut shard, &shifted, 512 * KIB, 0);
    let third = upload(&mut shard, &edited, 512 * KIB, 0);

    let original_keys: HashSet<ChunkKey> = chunk_keys(&shard, &first).into_iter().collect();
    for (name, file, bytes) in [("shifted", &second, &shifted), ("edited", &third, &edited)] {
        let keys = chunk_keys(&shard, file);
        let shared = keys.iter().filter(|key| original_keys.contains(key)).count();
        let fraction = shared as f64 / keys.len() as f64;
        println!("{name}: {shared} of {} chunks shared ({:.1}%)", keys.len(), fraction * 100.0);
        assert!(fraction >= 0.9, "{name} shares only {:.1}% of its chunks", fraction * 100.0);
        assert!(download(&mut shard, file) == *bytes);
    }
    let written = shard.stats().physical_bytes - physical_before;
    assert!(written < MIB as u64, "two near-duplicates wrote {written} bytes");
}
