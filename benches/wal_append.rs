//! Criterion benchmarks of the write-ahead log: encoding a 128-byte record (pure CPU), and
//! durable (`sync`) appends of 128-byte records on one shard, closed loop with a window of
//! 16,384 appends in flight, measured from the first append to the last acknowledgement.
//!
//! Run with `cargo bench --bench wal_append`; set FERROGRAM_BENCH_DIR to put the data
//! directory on a particular disk (default: under the target directory).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ferrogram::engine::wal::format::{encode_record, record_span};
use ferrogram::engine::{Engine, EngineConfig, Lsn, RecordKind, VShard};

const RECORD_BYTES: usize = 128;
const RECORDS_PER_ITERATION: u64 = 200_000;
const IN_FLIGHT: u64 = 16_384;

fn encode(c: &mut Criterion) {
    let payload = [7u8; RECORD_BYTES];
    let mut out = vec![0u8; record_span(RECORD_BYTES)];
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_128B", |b| {
        b.iter(|| encode_record(&mut out, 42, RecordKind(1), VShard::of(3), Lsn(9), std::hint::black_box(&payload)))
    });
    group.finish();
}

fn durable_appends(c: &mut Criterion) {
    let base = std::env::var_os("FERROGRAM_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data"));
    let dir = base.join(format!("wal-append-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let engine = Engine::open(EngineConfig::new(&dir)).expect("open the engine");
    let mut group = c.benchmark_group("wal");
    group.throughput(Throughput::Elements(RECORDS_PER_ITERATION));
    group.sample_size(10).measurement_time(Duration::from_secs(10));
    group.bench_function("sync_append_128B_one_shard", |b| {
        b.iter_batched(|| (), |()| run_window(&engine), BatchSize::PerIteration)
    });
    group.finish();
    engine.shutdown().expect("shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Appends `RECORDS_PER_ITERATION` records on shard 0, keeping `IN_FLIGHT` unacknowledged,
/// and returns when the last is acknowledged.
fn run_window(engine: &Engine) -> Duration {
    let (sender, done) = std::sync::mpsc::channel();
    engine
        .run_on_every_shard(move |context| {
            let sender = sender.clone();
            async move {
                let started = Instant::now();
                let sent = Rc::new(Cell::new(0u64));
                let payload = Rc::new([5u8; RECORD_BYTES]);
                fn send(
                    log: &ferrogram::engine::wal::driver::ShardLog,
                    sent: &Rc<Cell<u64>>,
                    payload: &Rc<[u8; RECORD_BYTES]>,
                ) {
                    if sent.get() >= RECORDS_PER_ITERATION {
                        return;
                    }
                    let Ok(appended) = log.append(RecordKind(1), VShard::of(0), &payload[..]) else { return };
                    sent.set(sent.get() + 1);
                    let (next_log, next_sent, next_payload) = (log.clone(), sent.clone(), payload.clone());
                    log.on_acked(appended.lsn, Box::new(move |_| send(&next_log, &next_sent, &next_payload)));
                }
                for _ in 0..IN_FLIGHT {
                    send(&context.log, &sent, &payload);
                }
                while sent.get() < RECORDS_PER_ITERATION {
                    glommio::timer::sleep(Duration::from_micros(100)).await;
                    send(&context.log, &sent, &payload);
                }
                let last = Lsn(context.log.next_lsn().0 - 1);
                context.log.acked(last).await.expect("acknowledged");
                let _ = sender.send(started.elapsed());
            }
        })
        .expect("start the load");
    done.recv().expect("the shard reports")
}

criterion_group!(benches, encode, durable_appends);
criterion_main!(benches);
