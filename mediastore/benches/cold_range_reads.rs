//! Cold-cache downloads from real segment files: 1 MiB ranges read through `begin_read` and
//! `PendingRead::run` (O_DIRECT DMA reads on a glommio executor, every chunk verified), with
//! 1, 4 or 16 reads in flight, as the shard's driver runs them. Four files of 128 MiB, read a
//! window of each in turn (four clients each downloading a file), against a 32 MiB chunk cache:
//! every range misses except the chunk it shares with the window before.
//!
//! `taskset -c 1 cargo bench -p ferrogram-mediastore --bench cold_range_reads`. After the
//! criterion groups it prints, per depth, one longer pass: MB/s and the executor thread's CPU
//! time per GiB read (from `/proc/thread-self/schedstat`), so a reader can tell a disk-bound
//! figure from a CPU-bound one. The data set lives under the target directory (O_DIRECT needs
//! a real file system, not tmpfs) and is removed at the end.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ferrogram_mediastore::*;

// The tests' helpers: `pseudo_random` (incompressible, so every chunk is new).
#[path = "../tests/support/mod.rs"]
mod support;
use support::pseudo_random;

const MIB: usize = 1 << 20;
const FILES: usize = 4;
const FILE_BYTES: usize = 128 * MIB;
const CACHE_BYTES: u64 = 32 * MIB as u64;
const RANGES_PER_ITERATION: usize = 16;
const DEPTHS: [usize; 3] = [1, 4, 16];
/// The longer pass after criterion's, per depth.
const SUMMARY_RANGES: usize = 1024;

type Shard = MediaShard<DmaSegments, MemoryJournal>;

struct Fixture {
    executor: glommio::LocalExecutor,
    dir: PathBuf,
    journal: MemoryJournal,
    files: Vec<FinishedFile>,
    shard: Rc<RefCell<Option<Shard>>>,
    /// The next range to read (cycles over every window of every file).
    cursor: Rc<RefCell<usize>>,
}

fn config(reads_in_flight_max: usize) -> MediaConfig {
    let mut config = MediaConfig::new(0xBE7C);
    config.cache_bytes_max = CACHE_BYTES;
    config.reads_in_flight_max = reads_in_flight_max;
    config
}

impl Fixture {
    fn new() -> Fixture {
        let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).make().expect("executor");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cold-range-reads-{}", std::process::id()));
        let journal = MemoryJournal::new();
        let files = executor.run(upload_all(dir.clone(), journal.clone()));
        Fixture { executor, dir, journal, files, shard: Rc::new(RefCell::new(None)), cursor: Rc::new(RefCell::new(0)) }
    }

    /// Reopens the shard with room for `depth` reads in flight (and a cold cache).
    fn reopen(&self, depth: usize) {
        let (dir, journal, slot) = (self.dir.clone(), self.journal.clone(), self.shard.clone());
        self.executor.run(async move {
            let open = slot.borrow_mut().take();
            if let Some(shard) = open {
                shard.into_parts().0.close().await.expect("close");
            }
            let io = DmaSegments::open(&dir).await.expect("segments");
            let recovery = journal.recovery().expect("recovery");
            let shard = MediaShard::open(config(depth), io, journal, recovery).await.expect("open");
            *slot.borrow_mut() = Some(shard);
        });
    }

    /// Reads `ranges` ranges with up to `depth` in flight; returns the time taken.
    fn read(&self, ranges: usize, depth: usize) -> Duration {
        let (slot, cursor, files) = (self.shard.clone(), self.cursor.clone(), self.files.clone());
        self.executor.run(async move {
            let taken = slot.borrow_mut().take();
            let mut shard = taken.expect("open shard");
            let windows = FILE_BYTES / MIB;
            let started = Instant::now();
            let mut running = VecDeque::with_capacity(depth + 1);
            for _ in 0..ranges {
                let next = {
                    let mut cursor = cursor.borrow_mut();
                    *cursor += 1;
                    *cursor
                };
                let file = &files[next % FILES];
                let offset = ((next / FILES) % windows * MIB) as u64;
                // Waits for a slot when `depth` reads are in flight, as the driver does.
                let read = shard.begin_read(file.file, file.access_hash, offset, MIB as u64).await.expect("plan");
                running.push_back(glommio::spawn_local(read.run()));
                while running.len() > depth {
                    let bytes = running.pop_front().expect("a read").await.expect("read");
                    assert_eq!(bytes.len(), MIB);
                }
            }
            for task in running {
                assert_eq!(task.await.expect("read").len(), MIB);
            }
            let elapsed = started.elapsed();
            *slot.borrow_mut() = Some(shard);
            elapsed
        })
    }

    /// CPU time of the executor's thread so far (it runs on the calling thread).
    fn thread_cpu_ns() -> u64 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|line| line.split_whitespace().next().and_then(|ns| ns.parse().ok()))
            .unwrap_or(0)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let slot = self.shard.clone();
        self.executor.run(async move {
            let open = slot.borrow_mut().take();
            if let Some(shard) = open {
                let _ = shard.into_parts().0.close().await;
            }
        });
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn upload_all(dir: PathBuf, journal: MemoryJournal) -> Vec<FinishedFile> {
    let io = DmaSegments::open(&dir).await.expect("segments");
    let mut shard = MediaShard::open(config(1), io, journal, Recovery::default()).await.expect("open");
    let mut files = Vec::new();
    for index in 0..FILES {
        let content = pseudo_random(FILE_BYTES, index as u64 + 1);
        let request =
            StartUpload { owner: UploaderId(1), client_upload_id: None, total_bytes: None, vshard: VShard::default() };
        let upload = shard.start(request, TimestampMs(0)).expect("start");
        for (part, bytes) in content.chunks(512 << 10).enumerate() {
            shard.put_part(upload, part as u32, bytes, TimestampMs(0)).await.expect("part");
        }
        let finish = FinishUpload {
            parts: content.len().div_ceil(512 << 10) as u32,
            total_bytes: Some(content.len() as u64),
            name: format!("file-{index}"),
            mime_type: "application/octet-stream".into(),
        };
        let file = shard.finish(upload, finish, TimestampMs(0)).await.expect("finish");
        shard.take_reference(file.file, file.access_hash).await.expect("reference");
        // Checked once here, byte for byte, so the timed loop only checks lengths.
        let window = shard.read(file.file, file.access_hash, 5 * MIB as u64, MIB as u64).await.expect("read");
        assert!(window == content[5 * MIB..6 * MIB]);
        files.push(file);
    }
    shard.into_parts().0.close().await.expect("close");
    files
}

fn cold_range_reads(c: &mut Criterion) {
    let fixture = Fixture::new();
    let mut group = c.benchmark_group("cold_range_reads_1MiB");
    group.throughput(Throughput::Bytes((RANGES_PER_ITERATION * MIB) as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    for depth in DEPTHS {
        fixture.reopen(depth);
        group.bench_function(format!("in_flight_{depth}"), |b| {
            b.iter_custom(|iterations| {
                (0..iterations).map(|_| fixture.read(RANGES_PER_ITERATION, depth)).sum::<Duration>()
            })
        });
    }
    group.finish();

    println!("\nlonger pass, {SUMMARY_RANGES} ranges of 1 MiB per depth:");
    for depth in DEPTHS {
        fixture.reopen(depth);
        let cpu_before = Fixture::thread_cpu_ns();
        let elapsed = fixture.read(SUMMARY_RANGES, depth);
        let cpu_ns = Fixture::thread_cpu_ns() - cpu_before;
        let bytes = (SUMMARY_RANGES * MIB) as f64;
        println!(
            "  in flight {depth:>2}: {:>7.1} MB/s, executor thread CPU {:.3} s per GiB ({:.0}% busy)",
            bytes / elapsed.as_secs_f64() / 1e6,
            cpu_ns as f64 / 1e9 / (bytes / (1u64 << 30) as f64),
            100.0 * cpu_ns as f64 / elapsed.as_nanos() as f64,
        );
    }
}

criterion_group!(benches, cold_range_reads);
criterion_main!(benches);
