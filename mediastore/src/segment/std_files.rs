//! Segments as plain files through `std::fs`. Every call blocks the calling thread, so this is
//! for offline tools, tests and hosts without glommio — never on a shard's reactor, which uses
//! `dma::DmaSegments`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::{SegmentIo, SegmentReader};
use crate::ids::SegmentId;

const SEGMENT_PREFIX: &str = "chunks-";
const SEGMENT_SUFFIX: &str = ".seg";

/// The file name of a segment in its directory.
pub fn segment_file_name(segment: SegmentId) -> String {
    format!("{SEGMENT_PREFIX}{:016}{SEGMENT_SUFFIX}", segment.0)
}

/// The segment a file name belongs to, if it is a segment file.
pub fn parse_segment_file_name(name: &str) -> Option<SegmentId> {
    let digits = name.strip_prefix(SEGMENT_PREFIX)?.strip_suffix(SEGMENT_SUFFIX)?;
    digits.parse().ok().map(SegmentId)
}

/// Every segment file in `dir` and its length (blocking).
pub fn list_segment_files(dir: &Path) -> io::Result<Vec<(SegmentId, u64)>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(segment) = entry.file_name().to_str().and_then(parse_segment_file_name) {
            segments.push((segment, entry.metadata()?.len()));
        }
    }
    segments.sort();
    Ok(segments)
}

#[derive(Debug)]
pub struct StdSegments {
    dir: PathBuf,
    files: HashMap<SegmentId, Rc<File>>,
}

/// Reads one segment through its shared `File` (blocking, like the rest of this backend).
#[derive(Clone, Debug)]
pub struct StdSegmentReader {
    file: Rc<File>,
}

impl SegmentReader for StdSegmentReader {
    type Bytes = Vec<u8>;

    async fn read_at(&self, offset: u64, length: usize) -> io::Result<Vec<u8>> {
        let mut bytes = vec![0u8; length];
        self.file.read_exact_at(&mut bytes, offset)?;
        Ok(bytes)
    }
}

impl StdSegments {
    /// Segments in `dir`, which is created if missing.
    pub fn open(dir: &Path) -> io::Result<StdSegments> {
        std::fs::create_dir_all(dir)?;
        Ok(StdSegments { dir: dir.to_path_buf(), files: HashMap::new() })
    }

    fn path(&self, segment: SegmentId) -> PathBuf {
        self.dir.join(segment_file_name(segment))
    }

    fn file(&mut self, segment: SegmentId) -> io::Result<&Rc<File>> {
        if !self.files.contains_key(&segment) {
            let file = OpenOptions::new().read(true).write(true).open(self.path(segment))?;
            self.files.insert(segment, Rc::new(file));
        }
        Ok(&self.files[&segment])
    }
}

impl SegmentIo for StdSegments {
    type Reader = StdSegmentReader;

    fn list(&mut self) -> io::Result<Vec<(SegmentId, u64)>> {
        list_segment_files(&self.dir)
    }

    async fn create(&mut self, segment: SegmentId) -> io::Result<()> {
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(self.path(segment))?;
        File::open(&self.dir)?.sync_all()?;
        self.files.insert(segment, Rc::new(file));
        Ok(())
    }

    async fn write_at(&mut self, segment: SegmentId, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.file(segment)?.write_all_at(bytes, offset)
    }

    async fn sync(&mut self, segment: SegmentId) -> io::Result<()> {
        self.file(segment)?.sync_data()
    }

    async fn reader(&mut self, segment: SegmentId) -> io::Result<StdSegmentReader> {
        Ok(StdSegmentReader { file: self.file(segment)?.clone() })
    }

    async fn remove(&mut self, segment: SegmentId) -> io::Result<()> {
        self.files.remove(&segment);
        std::fs::remove_file(self.path(segment))?;
        File::open(&self.dir)?.sync_all()
    }
}
