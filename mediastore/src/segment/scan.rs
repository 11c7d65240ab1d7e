//! Sequential scans of whole segments through `memmap2`, for offline checks and tools (never
//! on a serving reactor: a page fault there stalls the whole core, DESIGN §4). The judgement
//! is a pure function over bytes (`scan_frames`), so it is tested without files.

use std::fs::File;
use std::io;
use std::path::Path;

use super::frame::{decode_header, verify_frame};
use super::std_files::list_segment_files;
use crate::ids::{ChunkKey, SegmentId};
use crate::limits::{BLOCK_BYTES, FRAME_HEADER_BYTES};

/// One verified frame found by a scan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScannedFrame {
    pub offset: u64,
    pub key: ChunkKey,
    pub length: u32,
}

/// What a scan of one segment found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentScan {
    pub frames: Vec<ScannedFrame>,
    /// Where the verified frames end (the rest is padding or a torn tail).
    pub end: u64,
    /// Set when the scan stopped at bytes that are neither a frame nor padding.
    pub damage: Option<(u64, &'static str)>,
}

/// Walks the frames of one segment's bytes: frames back to back within a write, zero padding
/// to the next block between writes.
pub fn scan_frames(bytes: &[u8], segment: SegmentId) -> SegmentScan {
    let mut scan = SegmentScan::default();
    let mut offset = 0usize;
    while offset + FRAME_HEADER_BYTES as usize <= bytes.len() {
        let rest = &bytes[offset..];
        if rest[..4] == [0; 4] {
            // Padding: the next write starts on the next block.
            let next = (offset + 1).next_multiple_of(BLOCK_BYTES as usize);
            if rest[..(next - offset).min(rest.len())].iter().any(|&byte| byte != 0) {
                scan.damage = Some((offset as u64, "non-zero bytes in padding"));
                return scan;
            }
            offset = next;
            continue;
        }
        let header = match decode_header(rest, segment) {
            Ok(header) => header,
            Err(reason) => {
                scan.damage = Some((offset as u64, reason));
                return scan;
            }
        };
        if let Err(reason) = verify_frame(rest, segment, header.key) {
            scan.damage = Some((offset as u64, reason));
            return scan;
        }
        scan.frames.push(ScannedFrame { offset: offset as u64, key: header.key, length: header.length });
        offset += (FRAME_HEADER_BYTES + header.length) as usize;
        scan.end = offset as u64;
    }
    scan
}

/// Maps and scans one segment file.
pub fn scan_segment_file(path: &Path, segment: SegmentId) -> io::Result<SegmentScan> {
    let file = File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Ok(SegmentScan::default());
    }
    // SAFETY: the map is read-only and lives only for this scan; the store never rewrites a
    // written block and a scan is run on segments no writer is appending to (offline), so the
    // bytes do not change under the map.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    Ok(scan_frames(&map, segment))
}

/// Scans every segment in `dir`.
pub fn scan_directory(dir: &Path) -> io::Result<Vec<(SegmentId, SegmentScan)>> {
    let mut scans = Vec::new();
    for (segment, _) in list_segment_files(dir)? {
        let path = dir.join(super::std_files::segment_file_name(segment));
        scans.push((segment, scan_segment_file(&path, segment)?));
    }
    Ok(scans)
}

#[cfg(test)]
mod tests {
    use super::super::frame::encode_frame;
    use super::*;

    /// Proves a scan finds every frame across padded writes and stops at a torn frame.
    #[test]
    fn scan_walks_writes_and_stops_at_damage() {
        let segment = SegmentId(2);
        let mut bytes = Vec::new();
        let keys: Vec<ChunkKey> = (0..3).map(|n| ChunkKey { hash: n, collision: 0 }).collect();
        encode_frame(&mut bytes, segment, keys[0], &[1; 5000]);
        encode_frame(&mut bytes, segment, keys[1], &[2; 100]);
        bytes.resize(bytes.len().next_multiple_of(4096), 0);
        let second_write = bytes.len() as u64;
        encode_frame(&mut bytes, segment, keys[2], &[3; 7000]);
        bytes.resize(bytes.len().next_multiple_of(4096), 0);
        let scan = scan_frames(&bytes, segment);
        assert_eq!(scan.frames.iter().map(|frame| frame.key).collect::<Vec<_>>(), keys);
        assert_eq!(scan.frames[2].offset, second_write);
        assert_eq!(scan.damage, None);
        bytes[second_write as usize + 100] ^= 1;
        let torn = scan_frames(&bytes, segment);
        assert_eq!(torn.frames.len(), 2);
        assert_eq!(torn.damage.map(|(offset, _)| offset), Some(second_write));
    }
}
