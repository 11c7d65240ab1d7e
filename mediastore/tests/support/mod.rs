// Shared helpers for the media store's tests: deterministic data, a shard over in-memory
// segments and journal, and whole-file upload and download.
#![allow(dead_code)]

use ferrogram_mediastore::*;
pub use futures_lite::future::block_on;

pub type TestShard = MediaShard<MemorySegments, MemoryJournal>;

pub const KIB: usize = 1 << 10;
pub const MIB: usize = 1 << 20;

/// A fresh directory under the target's temporary directory (not /tmp: segments use O_DIRECT,
/// which tmpfs lacks).
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").subsec_nanos();
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Deterministic pseudo-random bytes (SplitMix64).
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

/// Test settings: small segments so rolls and compaction happen with little data.
pub fn config() -> MediaConfig {
    let mut config = MediaConfig::new(0x5EC2_E75E_ED00_0001);
    config.segment_bytes_max = 4 * MIB as u64;
    config.cache_bytes_max = 2 * MIB as u64;
    config
}

/// Opens a shard over `disk` and `journal`, recovering from what the journal holds.
pub fn open(config: MediaConfig, disk: &MemorySegments, journal: &MemoryJournal) -> TestShard {
    let recovery = journal.recovery().expect("journal decodes");
    block_on(MediaShard::open(config, disk.clone(), journal.clone(), recovery)).expect("shard opens")
}

pub fn fresh(config: MediaConfig) -> (TestShard, MemorySegments, MemoryJournal) {
    let disk = MemorySegments::new();
    let journal = MemoryJournal::new();
    (open(config, &disk, &journal), disk, journal)
}

pub fn start(shard: &mut TestShard, owner: u64, now: u64) -> UploadId {
    let request = StartUpload {
        owner: UploaderId(owner),
        client_upload_id: None,
        total_bytes: None,
        vshard: VShard::new(7).expect("vshard"),
    };
    shard.start(request, TimestampMs(now)).expect("start")
}

pub fn parts(bytes: &[u8], part_bytes: usize) -> Vec<&[u8]> {
    bytes.chunks(part_bytes).collect()
}

pub fn finish_request(bytes: &[u8], part_bytes: usize) -> FinishUpload {
    FinishUpload {
        parts: bytes.len().div_ceil(part_bytes) as u32,
        total_bytes: Some(bytes.len() as u64),
        name: "file.bin".into(),
        mime_type: "application/octet-stream".into(),
    }
}

/// Uploads `bytes` in order in parts of `part_bytes` and finishes.
pub fn upload(shard: &mut TestShard, bytes: &[u8], part_bytes: usize, now: u64) -> FinishedFile {
    let id = start(shard, 1, now);
    for (index, part) in parts(bytes, part_bytes).into_iter().enumerate() {
        block_on(shard.put_part(id, index as u32, part, TimestampMs(now))).expect("part");
    }
    block_on(shard.finish(id, finish_request(bytes, part_bytes), TimestampMs(now))).expect("finish")
}

/// Downloads a whole file in 1 MiB windows.
pub fn download(shard: &mut TestShard, file: &FinishedFile) -> Vec<u8> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    loop {
        let bytes = block_on(shard.read(file.file, file.access_hash, offset, MIB as u64)).expect("read");
        if bytes.is_empty() {
            return out;
        }
        offset += bytes.len() as u64;
        out.extend_from_slice(&bytes);
        if bytes.len() < MIB {
            return out;
        }
    }
}

/// Uploads several files at once, a part of each in turn, so their chunks interleave in the
/// segments (a range of one file then spans several places), finishes them and gives each a
/// message's reference. Works over any segments (DMA ones inside a glommio executor).
pub async fn upload_interleaved<S: SegmentIo>(
    shard: &mut MediaShard<S, MemoryJournal>,
    contents: &[Vec<u8>],
) -> Vec<FinishedFile> {
    let part_bytes = 512 * KIB;
    let mut ids = Vec::new();
    for (index, _) in contents.iter().enumerate() {
        let request = StartUpload {
            owner: UploaderId(index as u64 + 1),
            client_upload_id: None,
            total_bytes: None,
            vshard: VShard::default(),
        };
        ids.push(shard.start(request, TimestampMs(0)).expect("start"));
    }
    let most_parts = contents.iter().map(|bytes| bytes.len().div_ceil(part_bytes)).max().unwrap_or(0);
    for part in 0..most_parts {
        for (bytes, id) in contents.iter().zip(&ids) {
            if let Some(piece) = bytes.chunks(part_bytes).nth(part) {
                shard.put_part(*id, part as u32, piece, TimestampMs(0)).await.expect("part");
            }
        }
    }
    let mut files = Vec::new();
    for (bytes, id) in contents.iter().zip(&ids) {
        let file = shard.finish(*id, finish_request(bytes, part_bytes), TimestampMs(0)).await.expect("finish");
        shard.take_reference(file.file, file.access_hash).await.expect("a message's reference");
        files.push(file);
    }
    files
}

/// The bytes a read of `limit` at `offset` must answer.
pub fn expected(content: &[u8], offset: u64, limit: u64) -> &[u8] {
    let start = (offset as usize).min(content.len());
    let end = ((offset + limit) as usize).min(content.len());
    &content[start..end]
}

/// Runs `scenario` on a glommio executor of its own (DMA segments need one) and waits.
pub fn on_glommio<F: std::future::Future<Output = ()> + 'static>(scenario: impl FnOnce() -> F + Send + 'static) {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(move || async move { scenario().await })
        .expect("executor")
        .join()
        .expect("scenario");
}
