//! Segments in memory, for tests: a simulated crash (`crash`) loses every write not yet
//! synced, and the newest unsynced write may be torn, as on a real disk. Cloning gives another
//! handle on the same "disk", so a test keeps it across a shard it drops.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

use super::SegmentIo;
use crate::ids::SegmentId;

#[derive(Clone, Debug, Default)]
pub struct MemorySegments {
    inner: Rc<RefCell<BTreeMap<SegmentId, MemorySegment>>>,
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
        segments.retain(|_, segment| segment.durable);
        for segment in segments.values_mut() {
            let keep = (segment.synced_bytes + keep_torn_bytes).min(segment.bytes.len());
            segment.bytes.truncate(keep);
            segment.synced_bytes = keep;
        }
    }

    /// A copy of a segment's bytes (for checks).
    pub fn contents(&self, segment: SegmentId) -> Option<Vec<u8>> {
        self.inner.borrow().get(&segment).map(|segment| segment.bytes.clone())
    }

    pub fn segment_count(&self) -> usize {
        self.inner.borrow().len()
    }

    /// Total bytes of all segments.
    pub fn total_bytes(&self) -> u64 {
        self.inner.borrow().values().map(|segment| segment.bytes.len() as u64).sum()
    }
}

impl SegmentIo for MemorySegments {
    fn list(&mut self) -> io::Result<Vec<(SegmentId, u64)>> {
        Ok(self.inner.borrow().iter().map(|(id, segment)| (*id, segment.bytes.len() as u64)).collect())
    }

    async fn create(&mut self, segment: SegmentId) -> io::Result<()> {
        let mut segments = self.inner.borrow_mut();
        if segments.contains_key(&segment) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{segment} exists")));
        }
        segments.insert(segment, MemorySegment { durable: true, ..MemorySegment::default() });
        Ok(())
    }

    async fn write_at(&mut self, segment: SegmentId, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut segments = self.inner.borrow_mut();
        let file = segments.get_mut(&segment).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let offset = offset as usize;
        if file.bytes.len() < offset + bytes.len() {
            file.bytes.resize(offset + bytes.len(), 0);
        }
        file.bytes[offset..offset + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }

    async fn sync(&mut self, segment: SegmentId) -> io::Result<()> {
        let mut segments = self.inner.borrow_mut();
        let file = segments.get_mut(&segment).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        file.synced_bytes = file.bytes.len();
        Ok(())
    }

    async fn read_at(&mut self, segment: SegmentId, offset: u64, length: usize) -> io::Result<Vec<u8>> {
        let segments = self.inner.borrow();
        let file = segments.get(&segment).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let offset = offset as usize;
        file.bytes
            .get(offset..offset + length)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
    }

    async fn remove(&mut self, segment: SegmentId) -> io::Result<()> {
        self.inner.borrow_mut().remove(&segment);
        Ok(())
    }
}
