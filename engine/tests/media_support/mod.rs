// Shared helpers of the engine's media tests: temporary data directories, deterministic
// content, engines with small media segments, and whole-file upload and download through
// `Engine::media()`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ferrogram_engine::media::store::VShard as MediaVShard;
use ferrogram_engine::media::{
    FileId, FinishUpload, FinishedFile, Media, MediaError, MediaUpload, PutPartError, StartUpload, UploaderId,
};
use ferrogram_engine::{Engine, EngineConfig};

pub const KIB: usize = 1 << 10;
pub const MIB: usize = 1 << 20;

pub fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    futures_lite::future::block_on(future)
}

pub fn temp_dir(name: &str) -> PathBuf {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Settings for media tests: small log segments and media segments, so rolls happen.
pub fn config(dir: &Path, shards: usize) -> EngineConfig {
    let mut config = EngineConfig::new(dir);
    config.shards = shards;
    config.log.segment_bytes = 8 << 20;
    config.media.store.segment_bytes_max = 4 * MIB as u64;
    config.media.store.cache_bytes_max = 2 * MIB as u64;
    config
}

/// Deterministic pseudo-random bytes (SplitMix64), so a test can regenerate any file's content.
pub fn pseudo_random(bytes: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes + 8);
    let mut state = seed;
    while out.len() < bytes {
        out.extend_from_slice(&splitmix(&mut state).to_le_bytes());
    }
    out.truncate(bytes);
    out
}

pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn vshard(index: u16) -> MediaVShard {
    MediaVShard::new(index).expect("vshard in range")
}

/// The parts of `bytes` in an order that is a function of `seed` (never plain ascending for
/// more than two parts), with part 0 sent twice (a retried part).
pub fn part_order(count: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    let mut state = seed;
    for index in (1..count).rev() {
        order.swap(index, (splitmix(&mut state) % (index as u64 + 1)) as usize);
    }
    if count > 2 && order.windows(2).all(|pair| pair[0] < pair[1]) {
        order.reverse();
    }
    if count > 0 {
        order.push(0);
    }
    order
}

pub fn start(media: &Media, owner: u64, on: MediaVShard, total: usize) -> MediaUpload {
    let request =
        StartUpload { owner: UploaderId(owner), client_upload_id: None, total_bytes: Some(total as u64), vshard: on };
    block_on(media.start_upload(request)).expect("start upload")
}

pub fn finish_request(bytes: usize, part_bytes: usize) -> FinishUpload {
    FinishUpload {
        parts: bytes.div_ceil(part_bytes) as u32,
        total_bytes: Some(bytes as u64),
        name: "file.bin".into(),
        mime_type: "application/octet-stream".into(),
    }
}

/// Sends one part, waiting out `Overloaded` answers (for at most 30 seconds).
pub fn put_part(media: &Media, upload: MediaUpload, part: u32, bytes: &[u8]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        assert!(std::time::Instant::now() < deadline, "part {part} was refused for 30 seconds");
        match block_on(media.put_part(upload, part, bytes.to_vec())) {
            Ok(_) => return,
            Err(MediaError::Overloaded) => std::thread::sleep(std::time::Duration::from_millis(1)),
            Err(MediaError::Store(PutPartError::StagingFull { .. })) => {
                std::thread::sleep(std::time::Duration::from_millis(1))
            }
            Err(error) => panic!("part {part}: {error}"),
        }
    }
}

/// Uploads `bytes` on vshard `on` in parts of `part_bytes`, out of order, and finishes.
pub fn upload(media: &Media, owner: u64, on: MediaVShard, bytes: &[u8], part_bytes: usize, seed: u64) -> FinishedFile {
    let upload = start(media, owner, on, bytes.len());
    let parts: Vec<&[u8]> = bytes.chunks(part_bytes).collect();
    for part in part_order(parts.len(), seed) {
        put_part(media, upload, part as u32, parts[part]);
    }
    block_on(media.finish_upload(upload, finish_request(bytes.len(), part_bytes))).expect("finish")
}

/// Reads a whole file in 1 MiB windows.
pub fn download(media: &Media, file: &FinishedFile) -> Vec<u8> {
    download_file(media, file.file, file.access_hash, file.size)
}

pub fn download_file(
    media: &Media,
    file: FileId,
    access_hash: ferrogram_engine::media::AccessHash,
    size: u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(size as usize);
    while (out.len() as u64) < size {
        let bytes = block_on(media.read(file, access_hash, out.len() as u64, MIB as u64)).expect("read");
        assert!(!bytes.is_empty(), "a read inside the file returned nothing");
        out.extend_from_slice(&bytes);
    }
    let past_end = block_on(media.read(file, access_hash, size.next_multiple_of(MIB as u64), 4096)).expect("read");
    assert!(past_end.is_empty(), "a read past the end returned bytes");
    out
}

pub fn open(config: EngineConfig) -> Engine {
    Engine::open(config).expect("engine opens")
}
