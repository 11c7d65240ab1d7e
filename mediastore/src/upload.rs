//! An upload session, sans-I/O: Telegram's part rules, idempotent retries, and the staging of
//! parts until they can be folded into the file's contiguous prefix.
//!
//! Staging is in memory and bounded (per upload and per shard, `MediaConfig`): a part is
//! folded — chunked, hashed and its new chunks appended to a segment — as soon as every part
//! before it has been folded and the part after it has arrived (which proves it is not the
//! shorter last part). So a client sending parts in order, a few in flight, keeps at most a
//! couple of parts and the chunker's carry (< 256 KiB) in memory, and each byte is written
//! once: there is no staging file to write and read back. Parts that arrive far ahead of the
//! prefix wait in memory within the bounds; past them the part is refused with `StagingFull`
//! (the client retries later), except the parts needed for progress.

use std::collections::BTreeMap;

use xxhash_rust::xxh3::Xxh3;

use crate::chunker::StreamChunker;
use crate::error::{FinishError, PutPartError};
use crate::hash::part_digest;
use crate::ids::{ChunkKey, TimestampMs, UploadId, UploaderId, VShard};
use crate::limits::{MISSING_PARTS_LISTED_MAX, PART_BYTES_MAX, PART_BYTES_UNIT, UPLOAD_PARTS_MAX};

/// Whether `bytes` may be the size of a part that is not the last.
pub fn is_valid_part_size(bytes: usize) -> bool {
    bytes > 0
        && bytes <= PART_BYTES_MAX as usize
        && (PART_BYTES_MAX as usize).is_multiple_of(bytes)
        && bytes.is_multiple_of(PART_BYTES_UNIT as usize)
}

/// Whether a stored part was new or a retry of one already held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartAccepted {
    Stored,
    Duplicate,
}

/// One upload in progress.
pub struct Upload {
    pub id: UploadId,
    pub owner: UploaderId,
    pub client_upload_id: Option<u64>,
    pub vshard: VShard,
    pub total_bytes: Option<u64>,
    pub last_activity: TimestampMs,
    /// The size of every part but the last, once two parts prove it.
    part_bytes: Option<u32>,
    /// The last part, once a shorter part shows which it is.
    last_part: Option<u32>,
    /// Parts received and not yet folded.
    staged: BTreeMap<u32, Vec<u8>>,
    staged_bytes: u64,
    /// Digests of the parts folded so far (part `i` at index `i`), to judge retries.
    folded: Vec<u64>,
    pub chunker: StreamChunker,
    pub content_hash: Xxh3,
    pub bytes_folded: u64,
    /// The file's chunks so far, in order; each holds a pin in the shard.
    pub chunks: Vec<(ChunkKey, u32)>,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Upload")
            .field("id", &self.id)
            .field("folded_parts", &self.folded.len())
            .field("staged_parts", &self.staged.len())
            .field("bytes_folded", &self.bytes_folded)
            .field("held_bytes", &self.held_bytes())
            .finish_non_exhaustive()
    }
}

impl Upload {
    pub fn new(
        id: UploadId,
        owner: UploaderId,
        client_upload_id: Option<u64>,
        vshard: VShard,
        total_bytes: Option<u64>,
        content_hash: Xxh3,
        now: TimestampMs,
    ) -> Upload {
        Upload {
            id,
            owner,
            client_upload_id,
            vshard,
            total_bytes,
            last_activity: now,
            part_bytes: None,
            last_part: None,
            staged: BTreeMap::new(),
            staged_bytes: 0,
            folded: Vec::new(),
            chunker: StreamChunker::new(),
            content_hash,
            bytes_folded: 0,
            chunks: Vec::new(),
        }
    }

    /// Bytes this upload holds in memory.
    pub fn held_bytes(&self) -> u64 {
        self.staged_bytes + self.chunker.buffered_bytes() as u64
    }

    /// Whether `part` is one the upload needs next to make progress; such parts are admitted
    /// even when staging is full, so a client sending in order can never be stuck.
    pub fn is_next(&self, part: u32) -> bool {
        (part as usize) < self.folded.len() + 2
    }

    /// Checks a part against the rules and the parts already held, and stages it.
    pub fn accept_part(&mut self, part: u32, bytes: &[u8], file_bytes_max: u64) -> Result<PartAccepted, PutPartError> {
        let length = bytes.len();
        if length == 0 {
            return Err(PutPartError::EmptyPart { part });
        }
        if length > PART_BYTES_MAX as usize {
            return Err(PutPartError::PartTooLarge { part, bytes: length, max: PART_BYTES_MAX });
        }
        if part >= UPLOAD_PARTS_MAX {
            return Err(PutPartError::TooManyParts { part, max: UPLOAD_PARTS_MAX });
        }
        // A retry: the same bytes are fine, different bytes are refused.
        if let Some(&digest) = self.folded.get(part as usize) {
            let same_length = self.part_length(part) == Some(length);
            return if same_length && digest == part_digest(bytes) {
                Ok(PartAccepted::Duplicate)
            } else {
                Err(PutPartError::PartConflict { part })
            };
        }
        if let Some(held) = self.staged.get(&part) {
            return if held.as_slice() == bytes {
                Ok(PartAccepted::Duplicate)
            } else {
                Err(PutPartError::PartConflict { part })
            };
        }
        let (part_bytes, last_part) = self.judge_shape(part, length)?;
        // Every part before this one is at least `part_bytes` long (or this one's length while
        // the part size is unknown, since no part is longer than a full part).
        let lower_bound = u64::from(part) * u64::from(part_bytes.unwrap_or(length as u32)) + length as u64;
        if lower_bound > file_bytes_max {
            return Err(PutPartError::TooLarge { bytes: lower_bound, max: file_bytes_max });
        }
        if let Some(total) = self.total_bytes {
            if lower_bound > total {
                return Err(PutPartError::BeyondTotal { bytes: lower_bound, total });
            }
        }
        self.part_bytes = part_bytes;
        self.last_part = last_part;
        self.staged.insert(part, bytes.to_vec());
        self.staged_bytes += length as u64;
        Ok(PartAccepted::Stored)
    }

    /// The part size and last part after accepting `part` of `length` bytes, or why not.
    fn judge_shape(&self, part: u32, length: usize) -> Result<(Option<u32>, Option<u32>), PutPartError> {
        let highest_held =
            self.staged.keys().next_back().copied().or(self.folded.len().checked_sub(1).map(|i| i as u32));
        match self.part_bytes {
            Some(part_bytes) => {
                let expected = part_bytes;
                if length > part_bytes as usize {
                    return Err(PutPartError::PartSizeMismatch { part, bytes: length, expected });
                }
                if let Some(last) = self.last_part {
                    if part > last {
                        return Err(PutPartError::PartBeyondLast { part, last });
                    }
                }
                if length == part_bytes as usize {
                    return Ok((Some(part_bytes), self.last_part));
                }
                // Shorter: this must be the last part.
                if self.last_part.is_some_and(|last| last != part) || highest_held.is_some_and(|highest| highest > part)
                {
                    return Err(PutPartError::PartSizeMismatch { part, bytes: length, expected });
                }
                Ok((Some(part_bytes), Some(part)))
            }
            None => {
                // The part size is known once two parts are held, so at most one is held now.
                let Some((&other, other_bytes)) = self.staged.iter().next() else {
                    return Ok((None, None));
                };
                let ((low, low_length), (high, high_length)) = if other < part {
                    ((other, other_bytes.len()), (part, length))
                } else {
                    ((part, length), (other, other_bytes.len()))
                };
                if !is_valid_part_size(low_length) {
                    return Err(PutPartError::InvalidPartSize { part: low, bytes: low_length });
                }
                let part_bytes = low_length as u32;
                if high_length > low_length {
                    return Err(PutPartError::PartSizeMismatch {
                        part: high,
                        bytes: high_length,
                        expected: part_bytes,
                    });
                }
                Ok((Some(part_bytes), (high_length < low_length).then_some(high)))
            }
        }
    }

    /// The length of a folded part: only full parts are folded before `finish`, and the
    /// session is gone after it.
    fn part_length(&self, _part: u32) -> Option<usize> {
        self.part_bytes.map(|bytes| bytes as usize)
    }

    /// Takes the next part that can be folded now: every earlier part is folded and the
    /// following part is held (so this one is a full part, not the last).
    pub fn take_foldable(&mut self) -> Option<Vec<u8>> {
        let next = self.folded.len() as u32;
        if !self.staged.contains_key(&(next + 1)) {
            return None;
        }
        self.take_part(next)
    }

    fn take_part(&mut self, part: u32) -> Option<Vec<u8>> {
        let bytes = self.staged.remove(&part)?;
        self.staged_bytes -= bytes.len() as u64;
        Some(bytes)
    }

    /// Folds a part taken with `take_foldable` or `take_remaining` into the file.
    pub fn fold(&mut self, bytes: &[u8]) {
        self.folded.push(part_digest(bytes));
        self.content_hash.update(bytes);
        self.chunker.push(bytes);
        self.bytes_folded += bytes.len() as u64;
    }

    /// Checks that the file is complete as announced, or says what is wrong.
    pub fn check_complete(
        &self,
        parts: u32,
        total_bytes: Option<u64>,
        file_bytes_max: u64,
    ) -> Result<u64, FinishError> {
        if parts > UPLOAD_PARTS_MAX {
            return Err(FinishError::TooManyParts { expected: parts, max: UPLOAD_PARTS_MAX });
        }
        if let Some((&part, _)) = self.staged.range(parts..).next() {
            return Err(FinishError::UnexpectedPart { part, expected: parts });
        }
        let missing: Vec<u32> =
            (self.folded.len() as u32..parts).filter(|part| !self.staged.contains_key(part)).collect();
        if !missing.is_empty() {
            return Err(FinishError::MissingParts {
                count: missing.len() as u32,
                listed: missing.into_iter().take(MISSING_PARTS_LISTED_MAX).collect(),
            });
        }
        if self.folded.len() as u32 > parts {
            return Err(FinishError::UnexpectedPart { part: parts, expected: parts });
        }
        let size = match parts {
            0 => 0,
            _ => {
                let Some(last) = self.staged.get(&(parts - 1)) else {
                    return Err(FinishError::MissingParts { count: 1, listed: vec![parts - 1] });
                };
                let full = u64::from(self.part_bytes.unwrap_or(0));
                u64::from(parts - 1) * full + last.len() as u64
            }
        };
        if size > file_bytes_max {
            return Err(FinishError::TooLarge { bytes: size, max: file_bytes_max });
        }
        for expected in [total_bytes, self.total_bytes].into_iter().flatten() {
            if expected != size {
                return Err(FinishError::SizeMismatch { expected, actual: size });
            }
        }
        Ok(size)
    }

    /// Takes the staged parts in order, once `check_complete` passed.
    pub fn take_remaining(&mut self) -> Vec<Vec<u8>> {
        let parts: Vec<u32> = self.staged.keys().copied().collect();
        parts.into_iter().filter_map(|part| self.take_part(part)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload() -> Upload {
        Upload::new(UploadId::from_raw(1), UploaderId(1), None, VShard::default(), None, Xxh3::new(), TimestampMs(0))
    }

    /// Proves the valid part sizes are exactly the multiples of 1 KiB that divide 512 KiB.
    #[test]
    fn valid_part_sizes() {
        let valid: Vec<usize> = (1..=512 << 10).filter(|&bytes| is_valid_part_size(bytes)).collect();
        assert_eq!(valid, (0..10).map(|shift| 1024 << shift).collect::<Vec<_>>());
    }

    /// Proves the shape rules: a part larger than the established size, a short part that is
    /// not last, and a part after the last are refused; the last part may be any length.
    #[test]
    fn shape_rules() {
        let mut upload = upload();
        let max = 1 << 30;
        assert_eq!(upload.accept_part(2, &[1; 1000], max).expect("a short part alone"), PartAccepted::Stored);
        assert!(matches!(
            upload.accept_part(0, &[1; 3000], max),
            Err(PutPartError::InvalidPartSize { part: 0, bytes: 3000 })
        ));
        upload.accept_part(0, &[1; 4096], max).expect("full part");
        assert_eq!(upload.last_part, Some(2));
        assert!(matches!(
            upload.accept_part(3, &[1; 4096], max),
            Err(PutPartError::PartBeyondLast { part: 3, last: 2 })
        ));
        assert!(matches!(upload.accept_part(1, &[1; 8192], max), Err(PutPartError::PartSizeMismatch { .. })));
        assert!(matches!(upload.accept_part(1, &[1; 100], max), Err(PutPartError::PartSizeMismatch { .. })));
        upload.accept_part(1, &[1; 4096], max).expect("middle part");
        assert_eq!(upload.check_complete(3, Some(4096 * 2 + 1000), max).expect("complete"), 4096 * 2 + 1000);
        assert!(matches!(upload.check_complete(4, None, max), Err(FinishError::MissingParts { count: 1, .. })));
        assert!(matches!(upload.check_complete(2, None, max), Err(FinishError::UnexpectedPart { part: 2, .. })));
    }
}
