//! Bytes built up in chunks, for checkpoints of gigabytes: appending never moves what is
//! already there (a growing `Vec` copies all it holds each time it doubles, in one step of
//! the shard), whole buffers are joined by moving them, not copying, and the chunks already
//! filled can be taken out (to be written) while the rest is still being built.
//!
//! Chunks are reused. Memory a process touches for the first time costs the kernel a page
//! clear, and on the VMs measured (`docs/BENCHMARKS.md`) about 2 s per GB: while a shard
//! archived a checkpoint of 855 MB into fresh chunks, 66% of its time went to clearing pages,
//! and acknowledgements fell to a tenth for seconds. So a thread keeps the chunks of the
//! `ChunkedBytes` it drops, up to `SPARE_CHUNKS_MAX`, for the next ones it builds. A
//! checkpoint is streamed to its file a chunk at a time (`wal::checkpoint_file`), so it
//! needs two chunks at once, not as many as it has bytes.

use std::cell::RefCell;

/// How large each chunk grows before the next is begun.
pub const CHUNK_BYTES: usize = 8 << 20;

/// How many spare chunks a thread keeps at most: a streamed checkpoint uses two at a time, and
/// a state built whole (a host's own checkpoint request) gives back what it used beyond these.
pub const SPARE_CHUNKS_MAX: usize = 4;

thread_local! {
    /// Empty chunks of `CHUNK_BYTES` capacity, from the `ChunkedBytes` this thread dropped.
    static SPARE_CHUNKS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty chunk: a spare one when this thread has one, else a new allocation.
fn new_chunk() -> Vec<u8> {
    SPARE_CHUNKS.with(|spare| spare.borrow_mut().pop()).unwrap_or_else(|| Vec::with_capacity(CHUNK_BYTES))
}

/// Keeps the full-size chunks of a dropped `ChunkedBytes` as this thread's spares, up to
/// `SPARE_CHUNKS_MAX`.
fn keep_spares(chunks: Vec<Vec<u8>>) {
    let mut full: Vec<Vec<u8>> = chunks.into_iter().filter(|chunk| chunk.capacity() == CHUNK_BYTES).collect();
    if full.is_empty() {
        return;
    }
    full.iter_mut().for_each(Vec::clear);
    // A thread being torn down has no spares left to keep: the chunks are simply freed.
    let _ = SPARE_CHUNKS.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        spare.append(&mut full);
        spare.truncate(SPARE_CHUNKS_MAX);
    });
}

/// How many spare chunks this thread holds.
pub fn spare_chunks() -> usize {
    SPARE_CHUNKS.with(|spare| spare.borrow().len())
}

/// A byte string held as a sequence of chunks; its bytes are the chunks' in order, after
/// those already taken out with [`ChunkedBytes::take_filled`].
#[derive(Debug, Default)]
pub struct ChunkedBytes {
    chunks: Vec<Vec<u8>>,
    /// Bytes appended in all, those taken out included: where the next byte lies.
    len: usize,
    /// Bytes taken out: where the first held byte lies.
    taken: usize,
    /// Whether the last chunk may be appended to (it was begun here, not handed in).
    growable: bool,
}

impl ChunkedBytes {
    pub fn new() -> ChunkedBytes {
        ChunkedBytes::default()
    }

    /// How many bytes were appended, those taken out included.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many bytes are held: appended and not taken out.
    pub fn held(&self) -> usize {
        self.len - self.taken
    }

    /// Takes out the chunks no longer appended to, every held one but a last one still being
    /// filled, in order; this keeps counting its length from its first byte.
    pub fn take_filled(&mut self) -> ChunkedBytes {
        let keep = usize::from(self.growable && self.chunks.last().is_some_and(|last| last.len() < CHUNK_BYTES));
        let chunks: Vec<Vec<u8>> = self.chunks.drain(..self.chunks.len() - keep).collect();
        let bytes: usize = chunks.iter().map(Vec::len).sum();
        self.taken += bytes;
        self.growable &= keep == 1;
        ChunkedBytes { chunks, len: bytes, taken: 0, growable: false }
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

    /// Appends all `other` holds by moving its chunks.
    pub fn append(&mut self, mut other: ChunkedBytes) {
        self.len += other.held();
        self.chunks.extend(std::mem::take(&mut other.chunks).into_iter().filter(|chunk| !chunk.is_empty()));
        self.growable = other.growable;
    }

    /// The chunks held, in order; their concatenation is the bytes held.
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> {
        self.chunks.iter().map(Vec::as_slice)
    }

    /// The bytes held as one contiguous vector (a copy: for small states and tests).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.held());
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

    fn filled(chunks: usize) -> ChunkedBytes {
        let mut chunked = ChunkedBytes::new();
        chunked.extend_from_slice(&vec![7u8; CHUNK_BYTES * chunks]);
        chunked
    }

    #[test]
    fn chunks_of_a_dropped_state_are_reused_up_to_the_most_kept() {
        let addresses = |chunked: &ChunkedBytes| {
            let mut addresses: Vec<usize> = chunked.chunks().map(|chunk| chunk.as_ptr() as usize).collect();
            addresses.sort_unstable();
            addresses
        };
        let first = filled(3);
        let before = addresses(&first);
        drop(first);
        assert_eq!(spare_chunks(), 3);
        let second = filled(3);
        assert_eq!(addresses(&second), before, "the same memory, not new");
        assert_eq!(spare_chunks(), 0);
        assert!(second.chunks().all(|chunk| chunk == vec![7u8; CHUNK_BYTES].as_slice()), "reused chunks start empty");
        drop(second);
        // A state of moved-in vectors only leaves them as they are.
        drop(ChunkedBytes::from(vec![1u8; 100]));
        assert_eq!(spare_chunks(), 3);
        // A large state gives back what it used beyond the most kept.
        drop(filled(SPARE_CHUNKS_MAX + 2));
        assert_eq!(spare_chunks(), SPARE_CHUNKS_MAX);
        // Chunks moved into another state return when that one is dropped.
        let mut composed = ChunkedBytes::from(b"head".to_vec());
        composed.append(filled(2));
        assert_eq!(spare_chunks(), SPARE_CHUNKS_MAX - 2);
        drop(composed);
        assert_eq!(spare_chunks(), SPARE_CHUNKS_MAX);
    }

    #[test]
    fn filled_chunks_are_taken_out_in_order_while_the_length_counts_on() {
        let bytes: Vec<u8> = (0..CHUNK_BYTES * 2 + CHUNK_BYTES / 2).map(|at| (at % 251) as u8).collect();
        let mut chunked = ChunkedBytes::new();
        let mut out = Vec::new();
        for piece in bytes.chunks(CHUNK_BYTES / 3 + 5) {
            chunked.extend_from_slice(piece);
            chunked.pad_to(16);
            out.extend(chunked.take_filled().chunks().flatten());
            // Held bytes are only ever the chunk being filled.
            assert!(chunked.held() < CHUNK_BYTES, "held {}", chunked.held());
        }
        let mut expected = Vec::new();
        for piece in bytes.chunks(CHUNK_BYTES / 3 + 5) {
            expected.extend_from_slice(piece);
            expected.resize(expected.len().next_multiple_of(16), 0);
        }
        assert_eq!(chunked.len(), expected.len(), "the length counts the bytes taken out");
        assert_eq!(chunked.len(), out.len() + chunked.held());
        out.extend_from_slice(&chunked.to_vec());
        assert_eq!(out, expected);
        // A moved-in vector is never appended to: it and the chunk before it are taken.
        let held = chunked.held();
        chunked.push_vec(b"moved".to_vec());
        let taken = chunked.take_filled();
        assert_eq!(taken.to_vec(), [&expected[expected.len() - held..], b"moved".as_slice()].concat());
        assert_eq!(chunked.held(), 0);
        assert_eq!(chunked.len(), expected.len() + 5);
    }
}
