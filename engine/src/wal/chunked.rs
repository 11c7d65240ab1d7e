//! Bytes built up in chunks, for checkpoints of gigabytes: appending never moves what is
//! already there (a growing `Vec` copies all it holds each time it doubles, in one step of
//! the shard), and whole buffers are joined by moving them, not copying.
//!
//! Chunks are reused. Memory a process touches for the first time costs the kernel a page
//! clear, and on the VMs measured (`docs/BENCHMARKS.md`) about 2 s per GB: while a shard
//! archived a checkpoint of 855 MB into fresh chunks, 66% of its time went to clearing pages,
//! and acknowledgements fell to a tenth for seconds. So a thread keeps the chunks of the last
//! `ChunkedBytes` it dropped (a shard: its last checkpoint) for the next ones it builds. A
//! shard's peak memory is unchanged (its state and one checkpoint); between checkpoints it
//! keeps that peak instead of giving the checkpoint's memory back.

use std::cell::RefCell;

/// How large each chunk grows before the next is begun.
pub const CHUNK_BYTES: usize = 8 << 20;

thread_local! {
    /// Empty chunks of `CHUNK_BYTES` capacity, from the last `ChunkedBytes` this thread dropped.
    static SPARE_CHUNKS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty chunk: a spare one when this thread has one, else a new allocation.
fn new_chunk() -> Vec<u8> {
    SPARE_CHUNKS.with(|spare| spare.borrow_mut().pop()).unwrap_or_else(|| Vec::with_capacity(CHUNK_BYTES))
}

/// Keeps the full-size chunks of a dropped `ChunkedBytes` as this thread's spares, as many
/// as it had: the spares follow the size of the last large state built, up or down.
fn keep_spares(chunks: Vec<Vec<u8>>) {
    let mut full: Vec<Vec<u8>> = chunks.into_iter().filter(|chunk| chunk.capacity() == CHUNK_BYTES).collect();
    if full.is_empty() {
        return;
    }
    let keep = full.len();
    full.iter_mut().for_each(Vec::clear);
    // A thread being torn down has no spares left to keep: the chunks are simply freed.
    let _ = SPARE_CHUNKS.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        spare.append(&mut full);
        spare.truncate(keep);
    });
}

/// How many spare chunks this thread holds.
pub fn spare_chunks() -> usize {
    SPARE_CHUNKS.with(|spare| spare.borrow().len())
}

/// A byte string held as a sequence of chunks; its bytes are the chunks' in order.
#[derive(Debug, Default)]
pub struct ChunkedBytes {
    chunks: Vec<Vec<u8>>,
    len: usize,
    /// Whether the last chunk may be appended to (it was begun here, not handed in).
    growable: bool,
}

impl ChunkedBytes {
    pub fn new() -> ChunkedBytes {
        ChunkedBytes::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a copy of `bytes`, filling the last chunk and beginning new ones as needed.
    pub fn extend_from_slice(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len();
        while !bytes.is_empty() {
            let last = match self.chunks.last_mut() {
                Some(last) if self.growable && last.len() < CHUNK_BYTES => last,
                _ => {
                    self.chunks.push(new_chunk());
                    self.growable = true;
                    self.chunks.last_mut().expect("just pushed")
                }
            };
            let take = bytes.len().min(CHUNK_BYTES - last.len());
            last.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
        }
    }

    /// Appends zeros up to the next multiple of `align`.
    pub fn pad_to(&mut self, align: usize) {
        const ZEROS: [u8; 64] = [0; 64];
        let mut missing = self.len.next_multiple_of(align) - self.len;
        while missing > 0 {
            let take = missing.min(ZEROS.len());
            self.extend_from_slice(&ZEROS[..take]);
            missing -= take;
        }
    }

    /// Appends `bytes` by moving it in as a chunk of its own.
    pub fn push_vec(&mut self, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        self.chunks.push(bytes);
        self.growable = false;
    }

    /// Appends all of `other` by moving its chunks.
    pub fn append(&mut self, mut other: ChunkedBytes) {
        self.len += other.len;
        self.chunks.extend(std::mem::take(&mut other.chunks).into_iter().filter(|chunk| !chunk.is_empty()));
        self.growable = other.growable;
    }

    /// The chunks, in order; their concatenation is the bytes.
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> {
        self.chunks.iter().map(Vec::as_slice)
    }

    /// The bytes as one contiguous vector (a copy: for small states and tests).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len);
        self.chunks().for_each(|chunk| out.extend_from_slice(chunk));
        out
    }
}

impl Drop for ChunkedBytes {
    fn drop(&mut self) {
        keep_spares(std::mem::take(&mut self.chunks));
    }
}

impl From<Vec<u8>> for ChunkedBytes {
    fn from(bytes: Vec<u8>) -> ChunkedBytes {
        let mut chunked = ChunkedBytes::new();
        chunked.push_vec(bytes);
        chunked
    }
}

/// Reads a sequence of byte slices as one stream, a buffer at a time.
#[derive(Debug)]
pub struct PartsReader<'a> {
    parts: Vec<&'a [u8]>,
    part: usize,
    offset: usize,
}

impl<'a> PartsReader<'a> {
    pub fn new(parts: Vec<&'a [u8]>) -> PartsReader<'a> {
        PartsReader { parts, part: 0, offset: 0 }
    }

    /// How many bytes the parts hold in all.
    pub fn total_len(&self) -> usize {
        self.parts.iter().map(|part| part.len()).sum()
    }

    /// Copies the next bytes into `into`; returns how many (fewer only at the end).
    pub fn read(&mut self, into: &mut [u8]) -> usize {
        let mut copied = 0;
        while copied < into.len() {
            let Some(part) = self.parts.get(self.part) else { break };
            let take = (part.len() - self.offset).min(into.len() - copied);
            into[copied..copied + take].copy_from_slice(&part[self.offset..self.offset + take]);
            copied += take;
            self.offset += take;
            if self.offset == part.len() {
                self.part += 1;
                self.offset = 0;
            }
        }
        copied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_across_chunks_in_order() {
        let mut chunked = ChunkedBytes::new();
        let mut expected = Vec::new();
        let piece: Vec<u8> = (0..=255u8).cycle().take(CHUNK_BYTES / 3 + 7).collect();
        for _ in 0..5 {
            chunked.extend_from_slice(&piece);
            expected.extend_from_slice(&piece);
            chunked.pad_to(16);
            expected.resize(expected.len().next_multiple_of(16), 0);
        }
        chunked.push_vec(b"moved in".to_vec());
        expected.extend_from_slice(b"moved in");
        // After a moved-in vector the next bytes begin a chunk of their own.
        chunked.extend_from_slice(b"after");
        expected.extend_from_slice(b"after");
        let mut other = ChunkedBytes::from(b"appended".to_vec());
        other.extend_from_slice(b" and more");
        chunked.append(other);
        expected.extend_from_slice(b"appended and more");

        assert_eq!(chunked.len(), expected.len());
        assert!(chunked.chunks().count() > 3, "several chunks");
        assert!(chunked.chunks().all(|chunk| chunk.len() <= CHUNK_BYTES));
        assert_eq!(chunked.to_vec(), expected);
    }

    #[test]
    fn chunks_of_a_dropped_state_are_reused_and_follow_its_size() {
        let fill = |chunks: usize| {
            let mut chunked = ChunkedBytes::new();
            chunked.extend_from_slice(&vec![7u8; CHUNK_BYTES * chunks]);
            chunked
        };
        let addresses = |chunked: &ChunkedBytes| {
            let mut addresses: Vec<usize> = chunked.chunks().map(|chunk| chunk.as_ptr() as usize).collect();
            addresses.sort_unstable();
            addresses
        };
        let first = fill(3);
        let before = addresses(&first);
        drop(first);
        assert_eq!(spare_chunks(), 3);
        let second = fill(3);
        assert_eq!(addresses(&second), before, "the same memory, not new");
        assert_eq!(spare_chunks(), 0);
        assert!(second.chunks().all(|chunk| chunk == vec![7u8; CHUNK_BYTES].as_slice()), "reused chunks start empty");
        drop(second);
        // A smaller state keeps fewer; a state of moved-in vectors only leaves them as they are.
        drop(fill(1));
        assert_eq!(spare_chunks(), 1);
        drop(ChunkedBytes::from(vec![1u8; 100]));
        assert_eq!(spare_chunks(), 1);
        // Chunks moved into another state return when that one is dropped.
        let mut composed = ChunkedBytes::from(b"head".to_vec());
        composed.append(fill(2));
        assert_eq!(spare_chunks(), 0);
        drop(composed);
        assert_eq!(spare_chunks(), 2);
    }

    #[test]
    fn a_reader_streams_the_parts_through_any_buffer_size() {
        let parts: Vec<Vec<u8>> = vec![b"head".to_vec(), Vec::new(), (0..100u8).collect(), b"tail".to_vec()];
        let expected: Vec<u8> = parts.concat();
        for size in [1, 3, 64, 4096] {
            let mut reader = PartsReader::new(parts.iter().map(Vec::as_slice).collect());
            assert_eq!(reader.total_len(), expected.len());
            let mut out = Vec::new();
            let mut buffer = vec![0u8; size];
            loop {
                let read = reader.read(&mut buffer);
                out.extend_from_slice(&buffer[..read]);
                if read < size {
                    break;
                }
            }
            assert_eq!(out, expected, "buffer of {size}");
        }
    }
}
