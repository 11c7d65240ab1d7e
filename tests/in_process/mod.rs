//! Helpers of the tests that run the engine inside the test process, without a server
//! process: `block_on` for the engine's futures, and a data directory of their own.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Runs one of the engine's futures to completion on the test's thread.
pub fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    futures_lite::future::block_on(future)
}

/// A new directory named after `name`, the process and the time, under the target directory
/// rather than /tmp: a data directory needs O_DIRECT, which tmpfs lacks.
pub fn temp_dir(name: &str) -> PathBuf {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}
