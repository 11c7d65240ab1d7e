//! Bytes built up in chunks, for checkpoints of gigabytes: appending never moves what is
//! already there (a growing `Vec` copies all it holds each time it doubles, in one step of
//! the shard), and whole buffers are joined by moving them, not copying.

/// How large each chunk grows before the next is begun.
pub const CHUNK_BYTES: usize = 8 << 20;

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
                    self.chunks.push(Vec::with_capacity(CHUNK_BYTES));
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
    pub fn append(&mut self, other: ChunkedBytes) {
        self.len += other.len;
        self.chunks.extend(other.chunks.into_iter().filter(|chunk| !chunk.is_empty()));
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
