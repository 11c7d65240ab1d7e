// Proves a hash hit is never trusted without comparing bytes: with the test hook that keeps
// only 4 bits of each chunk hash, nearly every chunk collides with another, yet every file
// reads back byte for byte, colliding chunks get distinct keys, identical content is still
// shared, and the answer is the same after a reopen.

mod support;

use ferrogram_mediastore::MediaConfig;
use support::*;

fn weak_config() -> MediaConfig {
    let mut config = config();
    config.weak_hash_bits_for_tests = Some(4);
    config
}

#[test]
fn collisions_never_mix_users_bytes() {
    let (mut shard, disk, journal) = fresh(weak_config());
    let files: Vec<Vec<u8>> = (0..6).map(|seed| pseudo_random(MIB + seed * 4099, 40 + seed as u64)).collect();
    let finished: Vec<_> = files.iter().map(|bytes| upload(&mut shard, bytes, 256 * KIB, 0)).collect();
    let physical = shard.stats().physical_bytes;
    let again = upload(&mut shard, &files[2], 512 * KIB, 0);
    assert_eq!(shard.stats().physical_bytes, physical, "identical content is still shared");

    let keys: Vec<_> = shard.state().chunks().map(|(key, _)| *key).collect();
    assert!(keys.iter().all(|key| key.hash < 16));
    assert!(keys.iter().any(|key| key.collision >= 3), "the weak hash forced collision chains");
    for (bytes, file) in files.iter().zip(&finished) {
        assert!(download(&mut shard, file) == *bytes);
    }
    assert!(download(&mut shard, &again) == files[2]);

    drop(shard);
    let mut reopened = open(weak_config(), &disk, &journal);
    for (bytes, file) in files.iter().zip(&finished) {
        assert!(download(&mut reopened, file) == *bytes, "after reopen");
    }
}
