//! Chunking throughput per core: FastCDC (16/64/256 KiB) with keyed xxh3-128 of every chunk,
//! the work `finish` does per byte, over 256 MiB of pseudo-random data; FastCDC alone and the
//! hash alone show where the time goes, and the streaming chunker (parts of 512 KiB, as
//! uploads arrive) shows what feeding it part by part costs. Run pinned to one CPU:
//! `taskset -c 1 cargo bench -p ferrogram-mediastore --bench chunking`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ferrogram_mediastore::chunker::StreamChunker;
use ferrogram_mediastore::limits::{CHUNK_BYTES_AVERAGE, CHUNK_BYTES_MAX, CHUNK_BYTES_MIN, PART_BYTES_MAX};
use ferrogram_mediastore::ChunkHasher;
use std::hint::black_box;
use std::time::Duration;

const DATA_BYTES: usize = 256 << 20;

fn pseudo_random(bytes: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes);
    let mut state = 0x5EED_u64;
    while out.len() < bytes {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out
}

fn chunking(c: &mut Criterion) {
    let data = pseudo_random(DATA_BYTES);
    let hasher = ChunkHasher::keyed(0x0123_4567_89AB_CDEF);
    let mut group = c.benchmark_group("chunking_256MiB");
    group.throughput(Throughput::Bytes(DATA_BYTES as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("fastcdc+xxh3_128_keyed", |b| {
        b.iter(|| {
            let mut fold = 0u128;
            let chunker = fastcdc::v2020::FastCDC::new(
                &data,
                CHUNK_BYTES_MIN as usize,
                CHUNK_BYTES_AVERAGE as usize,
                CHUNK_BYTES_MAX as usize,
            );
            for chunk in chunker {
                fold ^= hasher.hash(&data[chunk.offset..chunk.offset + chunk.length]);
            }
            black_box(fold)
        })
    });
    group.bench_function("fastcdc_only", |b| {
        b.iter(|| {
            let chunker = fastcdc::v2020::FastCDC::new(
                &data,
                CHUNK_BYTES_MIN as usize,
                CHUNK_BYTES_AVERAGE as usize,
                CHUNK_BYTES_MAX as usize,
            );
            black_box(chunker.count())
        })
    });
    group.bench_function("xxh3_128_keyed_only", |b| {
        b.iter(|| {
            black_box(data.chunks(CHUNK_BYTES_AVERAGE as usize).fold(0u128, |fold, chunk| fold ^ hasher.hash(chunk)))
        })
    });
    group.bench_function("streaming_parts+xxh3_128_keyed+whole_file_hash", |b| {
        b.iter(|| {
            let mut chunker = StreamChunker::new();
            let mut whole = hasher.whole_file();
            let mut fold = 0u128;
            let parts: Vec<&[u8]> = data.chunks(PART_BYTES_MAX as usize).collect();
            for (index, part) in parts.iter().enumerate() {
                whole.update(part);
                chunker.push(part);
                let ready = chunker.ready_chunks(index + 1 == parts.len());
                let mut offset = 0;
                for length in ready {
                    fold ^= hasher.hash(&chunker.buffered()[offset..offset + length]);
                    offset += length;
                }
                chunker.consume(offset);
            }
            black_box((fold, whole.digest128()))
        })
    });
    group.finish();
}

criterion_group!(benches, chunking);
criterion_main!(benches);
