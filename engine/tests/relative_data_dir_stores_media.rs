//! An engine opened on a relative data directory (the README's `./data`) stores and reads
//! media: glommio refuses to open a directory by a relative path, which once stopped every
//! shard's media store at its first segment. One test in this binary: it changes the
//! process's working directory.

mod media_support;

use ferrogram_engine::{Engine, EngineConfig};
use media_support::*;

#[test]
fn a_relative_data_directory_stores_and_reads_media() {
    let base = temp_dir("relative-data-dir");
    std::env::set_current_dir(&base).expect("enter the test directory");
    let mut config = EngineConfig::new("data");
    config.media.store.segment_bytes_max = 4 * MIB as u64;
    let engine = Engine::open(config).expect("engine opens on a relative path");
    let bytes = pseudo_random(3 * MIB + 5, 41);
    let file = upload(&engine.media(), 1, vshard(7), &bytes, 512 * KIB, 41);
    assert!(download(&engine.media(), &file) == bytes, "the file reads back byte for byte");
    engine.shutdown().expect("shutdown");
    assert!(base.join("data").join("shard-0").join("media").is_dir(), "the store lives under ./data");
}
