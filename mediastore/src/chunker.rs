//! Content-defined chunking (FastCDC, the `fastcdc` crate's 2020 algorithm) over a file that
//! arrives as a stream of parts. The cut points are exactly those of chunking the whole file
//! at once: a chunk is handed out only when no byte after the buffer can move its end, so
//! shifted or partly edited files share chunks however their parts were cut.

use fastcdc::v2020::FastCDC;

use crate::limits::{CHUNK_BYTES_AVERAGE, CHUNK_BYTES_MAX, CHUNK_BYTES_MIN};

/// The bytes of a file's contiguous prefix that are not yet cut into final chunks.
#[derive(Debug, Default)]
pub struct StreamChunker {
    buffer: Vec<u8>,
}

impl StreamChunker {
    pub fn new() -> StreamChunker {
        StreamChunker::default()
    }

    /// Appends the next bytes of the file.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The lengths of the chunks at the front of the buffer that are final: every chunk when
    /// `at_end` (the file ends with the buffer), otherwise those whose end later bytes cannot
    /// change. FastCDC looks at most `CHUNK_BYTES_MAX` bytes past a chunk's start and returns
    /// the first cut point it finds, so a cut before the buffer's end, or a cut forced at the
    /// maximum size, is the cut the whole file would get.
    pub fn ready_chunks(&self, at_end: bool) -> Vec<usize> {
        let mut lengths = Vec::new();
        let chunker = FastCDC::new(
            &self.buffer,
            CHUNK_BYTES_MIN as usize,
            CHUNK_BYTES_AVERAGE as usize,
            CHUNK_BYTES_MAX as usize,
        );
        for chunk in chunker {
            let end = chunk.offset + chunk.length;
            if at_end || end < self.buffer.len() || chunk.length == CHUNK_BYTES_MAX as usize {
                lengths.push(chunk.length);
            } else {
                break;
            }
        }
        lengths
    }

    /// The buffered bytes; the chunks of [`StreamChunker::ready_chunks`] start at index 0.
    pub fn buffered(&self) -> &[u8] {
        &self.buffer
    }

    /// Drops `bytes` from the front once their chunks are stored.
    pub fn consume(&mut self, bytes: usize) {
        self.buffer.drain(..bytes);
    }

    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len()
    }
}

/// The chunk lengths of a whole file at once (for tests and tools).
pub fn chunk_lengths(bytes: &[u8]) -> Vec<usize> {
    FastCDC::new(bytes, CHUNK_BYTES_MIN as usize, CHUNK_BYTES_AVERAGE as usize, CHUNK_BYTES_MAX as usize)
        .map(|chunk| chunk.length)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(bytes: usize, mut state: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes + 8);
        while out.len() < bytes {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        out.truncate(bytes);
        out
    }

    /// Proves streaming the file in parts of any size gives exactly the chunks of chunking the
    /// whole file at once, including runs of zeroes that force maximum-size chunks.
    #[test]
    fn streaming_cuts_match_whole_file_cuts() {
        let mut file = pseudo_random(3 << 20, 7);
        file[1 << 20..(1 << 20) + (700 << 10)].fill(0);
        let whole = chunk_lengths(&file);
        for part_bytes in [1 << 10, 4 << 10, 63 << 10, 512 << 10, 300_001] {
            let mut chunker = StreamChunker::new();
            let mut streamed = Vec::new();
            for part in file.chunks(part_bytes) {
                chunker.push(part);
                let ready = chunker.ready_chunks(false);
                chunker.consume(ready.iter().sum());
                streamed.extend(ready);
            }
            let ready = chunker.ready_chunks(true);
            chunker.consume(ready.iter().sum());
            streamed.extend(ready);
            assert_eq!(streamed, whole, "parts of {part_bytes} bytes");
            assert_eq!(chunker.buffered_bytes(), 0);
        }
        assert!(whole.iter().all(|&length| length <= CHUNK_BYTES_MAX as usize));
        assert!(whole.contains(&(CHUNK_BYTES_MAX as usize)), "the zero run forces maximum-size chunks");
    }

    /// Proves the chunk sizes land near the configured average on random data.
    #[test]
    fn chunk_sizes_are_near_the_average() {
        let file = pseudo_random(16 << 20, 11);
        let lengths = chunk_lengths(&file);
        let average = file.len() / lengths.len();
        assert!((40 << 10..=100 << 10).contains(&average), "average chunk {average} bytes");
        assert!(lengths[..lengths.len() - 1].iter().all(|&length| length >= CHUNK_BYTES_MIN as usize));
    }
}
