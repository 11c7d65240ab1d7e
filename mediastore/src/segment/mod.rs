//! Chunk segments: append-only files of chunk frames, one set per shard. `SegmentIo` is the
//! file I/O a shard needs, with a glommio implementation (`dma`: O_DIRECT writes and DMA
//! reads on the shard's io_uring), a `std::fs` one for tools and tests (`std_files`), and an
//! in-memory one that loses unsynced writes at a simulated crash (`memory`). `SegmentStore`
//! is the writer and reader above it; `scan` reads whole segments through `memmap2` for
//! offline checks.
//!
//! Rules (DESIGN §4): a write starts on a fresh 4 KiB block and is padded to whole blocks, so
//! a written block is never rewritten; segments are synced before any journal record names
//! their chunks; after a restart writing always starts in a new segment.
//!
//! Reads go through a [`SegmentReader`]: a handle on one segment that reads without the
//! store's exclusive borrow (so downloads run beside each other and beside writes) and keeps
//! the segment readable after compaction removed it, as an open file stays readable after
//! it is unlinked.

pub mod dma;
pub mod frame;
pub mod memory;
pub mod scan;
pub mod std_files;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::io;
use std::ops::Deref;
use std::rc::Rc;

use crate::error::StorageError;
use crate::ids::{ChunkKey, ChunkLocation, SegmentId};
use crate::limits::{BLOCK_BYTES, FRAME_HEADER_BYTES, SEGMENT_WRITE_BUFFER_BYTES};

/// The file operations of a shard's segments. Futures are shard-local (not `Send`).
pub trait SegmentIo {
    /// A read handle on one segment (see [`SegmentReader`]).
    type Reader: SegmentReader;

    /// Existing segments and their lengths in bytes. Called once while the shard opens, when
    /// blocking is allowed.
    fn list(&mut self) -> io::Result<Vec<(SegmentId, u64)>>;

    /// Creates an empty segment whose directory entry is durable.
    fn create(&mut self, segment: SegmentId) -> impl Future<Output = io::Result<()>>;

    /// Writes `bytes` at `offset`; both are multiples of `BLOCK_BYTES`.
    fn write_at(&mut self, segment: SegmentId, offset: u64, bytes: &[u8]) -> impl Future<Output = io::Result<()>>;

    /// Makes every completed write to `segment` durable (fdatasync).
    fn sync(&mut self, segment: SegmentId) -> impl Future<Output = io::Result<()>>;

    /// A read handle on an existing segment. It keeps reading the segment's bytes after
    /// `remove` deleted it (an open file whose name is gone), so a read planned before a
    /// compaction still finds the chunks where it was told they are.
    fn reader(&mut self, segment: SegmentId) -> impl Future<Output = io::Result<Self::Reader>>;

    /// Deletes a segment. Readers already handed out keep reading it.
    fn remove(&mut self, segment: SegmentId) -> impl Future<Output = io::Result<()>>;
}

/// Reads one segment, shared by every read in flight on it (cloning is cheap). Shard-local.
pub trait SegmentReader: Clone + 'static {
    /// The bytes a read returns, where they landed (a DMA buffer, a vector): verified and
    /// copied out from there, not copied first.
    type Bytes: Deref<Target = [u8]>;

    /// Reads exactly `length` bytes at `offset` (any alignment).
    fn read_at(&self, offset: u64, length: usize) -> impl Future<Output = io::Result<Self::Bytes>>;
}

/// The writer and reader of a shard's segments over a [`SegmentIo`].
#[derive(Debug)]
pub struct SegmentStore<S> {
    io: S,
    segment_bytes_max: u64,
    /// Length of every segment file (what is written, padding included).
    sizes: BTreeMap<SegmentId, u64>,
    /// The segment appends go to; created on its first write.
    open: SegmentId,
    /// Frames not yet written, starting at `sizes[open]`.
    buffer: Vec<u8>,
    unsynced: BTreeSet<SegmentId>,
}

impl<S: SegmentIo> SegmentStore<S> {
    /// Takes the existing segments; appends go to a new segment numbered after all of them and
    /// after `highest_known`.
    pub fn new(
        io: S,
        segment_bytes_max: u64,
        existing: Vec<(SegmentId, u64)>,
        highest_known: Option<SegmentId>,
    ) -> Self {
        let sizes: BTreeMap<SegmentId, u64> = existing.into_iter().collect();
        let highest = sizes.keys().next_back().copied().max(highest_known).map_or(0, |segment| segment.0);
        SegmentStore {
            io,
            segment_bytes_max,
            sizes,
            open: SegmentId(highest + 1),
            buffer: Vec::with_capacity(SEGMENT_WRITE_BUFFER_BYTES),
            unsynced: BTreeSet::new(),
        }
    }

    /// Appends a chunk's frame and returns where it will be. The frame is buffered; it is
    /// written when the buffer fills or at the next `sync`.
    pub async fn append(&mut self, key: ChunkKey, payload: &[u8]) -> Result<ChunkLocation, StorageError> {
        let frame_bytes = u64::from(FRAME_HEADER_BYTES) + payload.len() as u64;
        let written = self.sizes.get(&self.open).copied().unwrap_or(0);
        if written + self.buffer.len() as u64 + frame_bytes > self.segment_bytes_max {
            self.roll().await?;
        }
        if self.buffer.len() as u64 + frame_bytes > SEGMENT_WRITE_BUFFER_BYTES as u64 {
            self.flush().await?;
        }
        let written = self.sizes.get(&self.open).copied().unwrap_or(0);
        let offset = written + self.buffer.len() as u64;
        frame::encode_frame(&mut self.buffer, self.open, key, payload);
        Ok(ChunkLocation { segment: self.open, offset, length: payload.len() as u32 })
    }

    /// Writes the buffered frames, padded to whole blocks.
    pub async fn flush(&mut self) -> Result<(), StorageError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let segment = self.open;
        let offset = match self.sizes.get(&segment) {
            Some(&size) => size,
            None => {
                self.io
                    .create(segment)
                    .await
                    .map_err(|source| StorageError::Io { context: "creating a segment", source })?;
                self.sizes.insert(segment, 0);
                0
            }
        };
        assert!(offset.is_multiple_of(BLOCK_BYTES), "segment writes start on a fresh block");
        let padded = self.buffer.len().next_multiple_of(BLOCK_BYTES as usize);
        self.buffer.resize(padded, 0);
        self.io
            .write_at(segment, offset, &self.buffer)
            .await
            .map_err(|source| StorageError::Io { context: "writing a segment", source })?;
        self.sizes.insert(segment, offset + padded as u64);
        self.unsynced.insert(segment);
        self.buffer.clear();
        Ok(())
    }

    /// Writes what is buffered and makes every written chunk durable.
    pub async fn sync(&mut self) -> Result<(), StorageError> {
        self.flush().await?;
        while let Some(segment) = self.unsynced.pop_first() {
            self.io.sync(segment).await.map_err(|source| StorageError::Io { context: "syncing a segment", source })?;
        }
        Ok(())
    }

    /// Seals the open segment: later appends go to a new one.
    pub async fn roll(&mut self) -> Result<(), StorageError> {
        self.flush().await?;
        if self.sizes.contains_key(&self.open) {
            self.open = SegmentId(self.open.0 + 1);
        }
        Ok(())
    }

    /// Reads a chunk's frame, verifies it and returns the payload.
    pub async fn read(&mut self, key: ChunkKey, location: ChunkLocation) -> Result<Rc<[u8]>, StorageError> {
        if let Some(frame) = self.buffered_frame(location)? {
            return Ok(Rc::from(frame_payload(frame, location.offset, key, location)?));
        }
        if location.offset + location.frame_bytes() > self.written_bytes(location.segment) {
            return Err(StorageError::ChunkMissing { key });
        }
        let reader = self.reader(location.segment).await?;
        let frame = reader
            .read_at(location.offset, location.frame_bytes() as usize)
            .await
            .map_err(|source| StorageError::Io { context: "reading a segment", source })?;
        Ok(Rc::from(frame_payload(&frame, location.offset, key, location)?))
    }

    /// The frame at `location` if it is still in the write buffer (appended, not yet
    /// written); `None` if it lies in the written part of its segment.
    pub fn buffered_frame(&self, location: ChunkLocation) -> Result<Option<&[u8]>, StorageError> {
        let written = self.sizes.get(&location.segment).copied().unwrap_or(0);
        if location.segment != self.open || location.offset < written {
            return Ok(None);
        }
        let start = (location.offset - written) as usize;
        let frame = self.buffer.get(start..start + location.frame_bytes() as usize).ok_or(StorageError::Corrupt {
            segment: location.segment,
            offset: location.offset,
            reason: "location past the written end",
        })?;
        Ok(Some(frame))
    }

    /// A reader of `segment` (see [`SegmentIo::reader`]).
    pub async fn reader(&mut self, segment: SegmentId) -> Result<S::Reader, StorageError> {
        self.io
            .reader(segment)
            .await
            .map_err(|source| StorageError::Io { context: "opening a segment to read", source })
    }

    /// Bytes written to `segment` (what a read may cover; the open segment's buffered frames
    /// come after).
    pub fn written_bytes(&self, segment: SegmentId) -> u64 {
        self.sizes.get(&segment).copied().unwrap_or(0)
    }

    /// Deletes a segment that is no longer needed.
    pub async fn remove(&mut self, segment: SegmentId) -> Result<(), StorageError> {
        assert_ne!(segment, self.open, "the open segment is never removed");
        self.unsynced.remove(&segment);
        if self.sizes.remove(&segment).is_some() {
            self.io
                .remove(segment)
                .await
                .map_err(|source| StorageError::Io { context: "removing a segment", source })?;
        }
        Ok(())
    }

    /// The segment appends go to.
    pub fn open_segment(&self) -> SegmentId {
        self.open
    }

    /// Bytes the open segment holds or will hold once its buffer is written.
    pub fn open_segment_bytes(&self) -> u64 {
        self.sizes.get(&self.open).copied().unwrap_or(0) + self.buffer.len() as u64
    }

    /// Every segment file and its length.
    pub fn sizes(&self) -> &BTreeMap<SegmentId, u64> {
        &self.sizes
    }

    /// Bytes the segment files take.
    pub fn physical_bytes(&self) -> u64 {
        self.sizes.values().sum()
    }

    pub fn io(&mut self) -> &mut S {
        &mut self.io
    }

    /// Gives back the I/O; buffered frames not yet written are dropped (they belong to
    /// uploads that never finished, or `sync` would have written them).
    pub fn into_io(self) -> S {
        self.io
    }
}

/// The verified payload of the frame at `location`, inside `span` (bytes of `location`'s
/// segment read from `span_offset`): the frame must hold `key`, intact, written for that
/// segment, with the length the index records.
pub fn frame_payload(
    span: &[u8],
    span_offset: u64,
    key: ChunkKey,
    location: ChunkLocation,
) -> Result<&[u8], StorageError> {
    let corrupt = |reason| StorageError::Corrupt { segment: location.segment, offset: location.offset, reason };
    let start = location.offset.checked_sub(span_offset).ok_or_else(|| corrupt("frame before the span"))? as usize;
    let frame =
        span.get(start..start + location.frame_bytes() as usize).ok_or_else(|| corrupt("frame past the span"))?;
    let payload = frame::verify_frame(frame, location.segment, key).map_err(corrupt)?;
    if payload.len() != location.length as usize {
        return Err(corrupt("frame length differs from the index"));
    }
    Ok(payload)
}
