//! Segments in memory, for tests: a simulated crash (`crash`) loses every write not yet
//! synced, and the newest unsynced write may be torn, as on a real disk. Cloning gives another
//! handle on the same "disk", so a test keeps it across a shard it drops. A reader keeps its
//! segment's bytes after the segment is removed, as an open file outlives its name.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

use super::{SegmentIo, SegmentReader};
use crate::ids::SegmentId;

#[derive(Clone, Debug, Default)]
pub struct MemorySegments {
    inner: Rc<RefCell<BTreeMap<SegmentId, Rc<RefCell<MemorySegment>>>>>,
}

/// Reads one in-memory segment, removed or not.
#[derive(Clone, Debug)]
pub struct MemorySegmentReader {
    segment: Rc<RefCell<MemorySegment>>,
}

impl SegmentReader for MemorySegmentReader {
    type Bytes = Vec<u8>;

    async fn read_at(&self, offset: u64, length: usize) -> io::Result<Vec<u8>> {
        let offset = offset as usize;
        self.segment
            .borrow()
            .bytes
            .get(offset..offset + length)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
    }
}

#[derive(Debug, Default)]
struct MemorySegment {
    bytes: Vec<u8>,
    synced_bytes: usize,
    /// Whether the directory entry survives a crash (it is made durable by `create`).
    durable: bool,
}

impl MemorySegments {
    pub fn new() -> MemorySegments {
        MemorySegments::default()
    }

    /// Loses unsynced writes. With `keep_torn_bytes`, that many bytes of the first unsynced
    /// block survive (a torn write) instead of none.
    pub fn crash(&self, keep_torn_bytes: usize) {
        let mut segments = self.inner.borrow_mut();
        segments.retain(|_, segment| segment.borrow().durable);
        for segment in segments.values() {
            let mut segment = segment.borrow_mut();
            let keep = (segment.synced_bytes + keep_torn_bytes).min(segment.bytes.len());
            segment.bytes.truncate(keep);
            segment.synced_bytes = keep;
        }
    }

    /// A copy of a segment's bytes (for checks).
    pub fn contents(&self, segment: SegmentId) -> Option<Vec<u8>> {
        self.inner.borrow().get(&segment).map(|segment| segment.borrow().bytes.clone())
    }

    pub fn segment_count(&self) -> usize {
        self.inner.borrow().len()
    }

    /// Total bytes of all segments.
    pub fn total_bytes(&self) -> u64 {
        self.inner.borrow().values().map(|segment| segment.borrow().bytes.len() as u64).sum()
    }
}

impl MemorySegments {
    fn segment(&self, segment: SegmentId) -> io::Result<Rc<RefCell<MemorySegment>>> {
        self.inner.borrow().get(&segment).cloned().ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
}

impl SegmentIo for MemorySegments {
    type Reader = MemorySegmentReader;

    fn list(&mut self) -> io::Result<Vec<(SegmentId, u64)>> {
        Ok(self.inner.borrow().iter().map(|(id, segment)| (*id, segment.borrow().bytes.len() as u64)).collect())
    }

    async fn create(&mut self, segment: SegmentId) -> io::Result<()> {
        let mut segments = self.inner.borrow_mut();
        if segments.contains_key(&segment) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{segment} exists")));
        }
        segments.insert(segment, Rc::new(RefCell::new(MemorySegment { durable: true, ..MemorySegment::default() })));
        Ok(())
    }

    async fn write_at(&mut self, segment: SegmentId, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let file = self.segment(segment)?;
        let mut file = file.borrow_mut();
        let offset = offset as usize;
        if file.bytes.len() < offset + bytes.len() {
            file.bytes.resize(offset + bytes.len(), 0);
        }
        file.bytes[offset..offset + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }

    async fn sync(&mut self, segment: SegmentId) -> io::Result<()> {
        let file = self.segment(segment)?;
        let mut file = file.borrow_mut();
        file.synced_bytes = file.bytes.len();
        Ok(())
    }

    async fn reader(&mut self, segment: SegmentId) -> io::Result<MemorySegmentReader> {
        Ok(MemorySegmentReader { segment: self.segment(segment)? })
    }

    async fn remove(&mut self, segment: SegmentId) -> io::Result<()> {
        self.inner.borrow_mut().remove(&segment);
        Ok(())
    }
}
