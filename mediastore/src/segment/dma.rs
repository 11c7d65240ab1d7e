//! Segments through glommio: O_DIRECT `DmaFile` writes of whole, padded blocks and DMA reads,
//! all on the shard's io_uring, so nothing blocks the reactor once the shard serves. Must be
//! used inside a glommio executor. Files are shared (`Rc<DmaFile>`) with the readers of
//! downloads in flight: removing a segment unlinks its file, and the descriptor closes when
//! the last reader is done with it.
//!
//! glommio decides on the first DMA open of an executor whether the device takes polled I/O,
//! and an empty file fools that probe into a wrong "yes" after which every DMA read fails
//! with EOPNOTSUPP (NOTES-runtime). [`DmaSegments::open`] therefore opens a file that already
//! holds a block first ([`probe_dma_reads`]); the engine's shard start-up does the same before
//! it opens anything, so doing it again here is harmless.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{Directory, DmaFile, OpenOptions, ReadResult};

use super::std_files::{list_segment_files, segment_file_name};
use super::{SegmentIo, SegmentReader};
use crate::ids::SegmentId;

const DMA_PROBE_FILE: &str = ".media-dma-probe";
const DMA_PROBE_BYTES: usize = 4096;

#[derive(Debug)]
pub struct DmaSegments {
    dir: PathBuf,
    files: HashMap<SegmentId, Rc<DmaFile>>,
}

/// Reads one segment through its shared `DmaFile`.
#[derive(Clone, Debug)]
pub struct DmaSegmentReader {
    file: Rc<DmaFile>,
}

impl SegmentReader for DmaSegmentReader {
    type Bytes = ReadResult;

    async fn read_at(&self, offset: u64, length: usize) -> io::Result<ReadResult> {
        let read = self.file.read_at(offset, length).await?;
        if read.len() != length {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "segment shorter than the read"));
        }
        Ok(read)
    }
}

impl DmaSegments {
    /// Segments in `dir` (created if missing). Runs the DMA-read probe first; call it before
    /// this executor opens any other DMA file, or make sure the host already probed.
    pub async fn open(dir: &Path) -> io::Result<DmaSegments> {
        std::fs::create_dir_all(dir)?;
        // glommio's `Directory::open` fails a relative path with EBADF (the directory sync
        // after a new segment would stop the store), so the store keeps an absolute one.
        let dir = std::path::absolute(dir)?;
        probe_dma_reads(&dir).await?;
        Ok(DmaSegments { dir, files: HashMap::new() })
    }

    fn path(&self, segment: SegmentId) -> PathBuf {
        self.dir.join(segment_file_name(segment))
    }

    async fn file(&mut self, segment: SegmentId) -> io::Result<&Rc<DmaFile>> {
        if !self.files.contains_key(&segment) {
            let file = OpenOptions::new().read(true).write(true).dma_open(self.path(segment)).await?;
            self.files.insert(segment, Rc::new(file));
        }
        Ok(&self.files[&segment])
    }

    async fn sync_directory(&self) -> io::Result<()> {
        let directory = Directory::open(&self.dir).await?;
        let synced = directory.sync().await;
        let _ = directory.close().await;
        Ok(synced?)
    }

    /// Closes every open file no reader holds (dropping them also works, but closing reports
    /// errors); a file a reader still holds closes when the reader drops it.
    pub async fn close(mut self) -> io::Result<()> {
        for (_, file) in self.files.drain() {
            file.close_rc().await?;
        }
        Ok(())
    }
}

impl SegmentIo for DmaSegments {
    type Reader = DmaSegmentReader;

    fn list(&mut self) -> io::Result<Vec<(SegmentId, u64)>> {
        list_segment_files(&self.dir)
    }

    async fn create(&mut self, segment: SegmentId) -> io::Result<()> {
        // Opened for reading and writing: `DmaFile::create` is write-only, and reading through
        // a write-only handle fails with EBADF (NOTES-runtime).
        let file = OpenOptions::new().read(true).write(true).create_new(true).dma_open(self.path(segment)).await?;
        self.files.insert(segment, Rc::new(file));
        self.sync_directory().await
    }

    async fn write_at(&mut self, segment: SegmentId, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let file = self.file(segment).await?;
        let mut written = 0usize;
        while written < bytes.len() {
            let remaining = &bytes[written..];
            let mut buffer = file.alloc_dma_buffer(remaining.len());
            buffer.as_bytes_mut().copy_from_slice(remaining);
            let count = file.write_at(buffer, offset + written as u64).await?;
            if count == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "DMA write wrote nothing"));
            }
            written += count;
        }
        Ok(())
    }

    async fn sync(&mut self, segment: SegmentId) -> io::Result<()> {
        Ok(self.file(segment).await?.fdatasync().await?)
    }

    async fn reader(&mut self, segment: SegmentId) -> io::Result<DmaSegmentReader> {
        Ok(DmaSegmentReader { file: self.file(segment).await?.clone() })
    }

    async fn remove(&mut self, segment: SegmentId) -> io::Result<()> {
        if let Some(file) = self.files.remove(&segment) {
            // Readers of downloads in flight keep the descriptor, and so the unlinked file.
            file.close_rc().await?;
        }
        glommio::io::remove(self.path(segment)).await?;
        self.sync_directory().await
    }
}

/// The DMA-read workaround of NOTES-runtime: opens (creating it with `std::fs` if needed) a
/// file holding one block of known bytes and reads it back through `DmaFile`, so glommio's
/// polled-I/O probe sees a real read. Run on each executor before any other DMA open.
pub async fn probe_dma_reads(dir: &Path) -> io::Result<()> {
    let path = dir.join(DMA_PROBE_FILE);
    let holds_a_block = std::fs::metadata(&path).is_ok_and(|metadata| metadata.len() >= DMA_PROBE_BYTES as u64);
    if !holds_a_block {
        use std::io::Write;
        let mut file = std::fs::File::create(&path)?;
        file.write_all(&[0xA5; DMA_PROBE_BYTES])?;
        file.sync_all()?;
    }
    let file = DmaFile::open(&path).await?;
    let read = file.read_at_aligned(0, DMA_PROBE_BYTES).await;
    let _ = file.close().await;
    let bytes = read?;
    if bytes.len() != DMA_PROBE_BYTES || bytes.iter().any(|&byte| byte != 0xA5) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "DMA probe block read back wrong"));
    }
    Ok(())
}
