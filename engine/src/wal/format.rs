//! The on-disk format of WAL batches and records (DESIGN §4), as pure encode and decode
//! functions over byte slices. Everything is little-endian and versioned.
//!
//! ```text
//! batch  = header (64 bytes) · record* · zero padding to the next 4 KiB block
//! header = magic u32 · version u16 · reserved u16 · record_count u32 · body_bytes u32
//!          · segment u64 · first_lsn u64 · body_checksum u64 · durable_lsn u64
//!          · reserved [u8; 8] · header_checksum u64
//! record = kind u16 · vshard u16 · payload_bytes u32 · lsn u64 · checksum u64
//!          · payload · zero padding to 8 bytes
//! ```
//!
//! Checksums are xxh3-64 seeded with [`segment_seed`]: a mix of the segment's number (its
//! epoch) and the log's secret salt. A batch left over in a recycled segment carries the old
//! number and never verifies, and bytes a user placed in a payload cannot be shaped into a
//! batch header that verifies, because the salt never leaves the server.
//!
//! `durable_lsn` is the log's durable watermark when the batch was sealed. Recovery uses it
//! to tell a torn tail from corruption: a valid batch after a broken one proves the broken
//! one was acknowledged only if its `durable_lsn` reaches past the break.

use xxhash_rust::xxh3::{xxh3_64_with_seed, Xxh3};

use crate::ids::{Lsn, RecordKind, SegmentId, VShard};

pub const BLOCK_BYTES: usize = 4096;
pub const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"FGWB");
pub const FORMAT_VERSION: u16 = 1;
pub const BATCH_HEADER_BYTES: usize = 64;
pub const RECORD_HEADER_BYTES: usize = 24;
/// Record payloads start 8-byte aligned, as rkyv archives require (NOTES-runtime).
pub const RECORD_ALIGN: usize = 8;

const _: () = assert!(BATCH_HEADER_BYTES.is_multiple_of(RECORD_ALIGN));
const _: () = assert!(RECORD_HEADER_BYTES.is_multiple_of(RECORD_ALIGN));
const _: () = assert!(BLOCK_BYTES.is_multiple_of(RECORD_ALIGN));

/// The checksum seed of a segment: its epoch mixed with the log's salt.
pub fn segment_seed(salt: u64, segment: SegmentId) -> u64 {
    xxh3_64_with_seed(&segment.0.to_le_bytes(), salt)
}

pub fn align_up(value: usize, align: usize) -> usize {
    debug_assert!(align.is_power_of_two());
    (value + align - 1) & !(align - 1)
}

/// Bytes a record takes inside a batch body, padding included.
pub fn record_span(payload_bytes: usize) -> usize {
    align_up(RECORD_HEADER_BYTES + payload_bytes, RECORD_ALIGN)
}

/// Bytes a batch takes on disk: header and body rounded up to whole blocks.
pub fn batch_span(body_bytes: usize) -> usize {
    align_up(BATCH_HEADER_BYTES + body_bytes, BLOCK_BYTES)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    pub record_count: u32,
    pub body_bytes: u32,
    pub segment: SegmentId,
    pub first_lsn: Lsn,
    pub body_checksum: u64,
    pub durable_lsn: Lsn,
}

impl BatchHeader {
    /// The batch's last LSN; `first_lsn - 1` for an empty batch (never written).
    pub fn last_lsn(&self) -> Lsn {
        Lsn(self.first_lsn.0 + self.record_count as u64 - 1)
    }

    pub fn span(&self) -> usize {
        batch_span(self.body_bytes as usize)
    }

    /// Writes the header, with its checksum, into the first 64 bytes of `out`.
    pub fn encode(&self, seed: u64, out: &mut [u8]) {
        let out = &mut out[..BATCH_HEADER_BYTES];
        out.fill(0);
        out[0..4].copy_from_slice(&BATCH_MAGIC.to_le_bytes());
        out[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        out[8..12].copy_from_slice(&self.record_count.to_le_bytes());
        out[12..16].copy_from_slice(&self.body_bytes.to_le_bytes());
        out[16..24].copy_from_slice(&self.segment.0.to_le_bytes());
        out[24..32].copy_from_slice(&self.first_lsn.0.to_le_bytes());
        out[32..40].copy_from_slice(&self.body_checksum.to_le_bytes());
        out[40..48].copy_from_slice(&self.durable_lsn.0.to_le_bytes());
        let checksum = xxh3_64_with_seed(&out[..56], seed);
        out[56..64].copy_from_slice(&checksum.to_le_bytes());
    }

    /// Reads and verifies a header written into segment `segment`. Fails for anything that
    /// is not a header we wrote into that segment: zeroes, stale bytes, torn or flipped bits.
    pub fn decode(bytes: &[u8], seed: u64, segment: SegmentId) -> Result<BatchHeader, FormatError> {
        let bytes = bytes.get(..BATCH_HEADER_BYTES).ok_or(FormatError::Truncated)?;
        if read_u32(bytes, 0) != BATCH_MAGIC {
            return Err(FormatError::BadMagic);
        }
        if read_u64(bytes, 56) != xxh3_64_with_seed(&bytes[..56], seed) {
            return Err(FormatError::HeaderChecksum);
        }
        let version = read_u16(bytes, 4);
        if version != FORMAT_VERSION {
            return Err(FormatError::UnknownVersion(version));
        }
        let header = BatchHeader {
            record_count: read_u32(bytes, 8),
            body_bytes: read_u32(bytes, 12),
            segment: SegmentId(read_u64(bytes, 16)),
            first_lsn: Lsn(read_u64(bytes, 24)),
            body_checksum: read_u64(bytes, 32),
            durable_lsn: Lsn(read_u64(bytes, 40)),
        };
        if header.segment != segment {
            return Err(FormatError::WrongSegment);
        }
        if header.record_count == 0 || header.first_lsn == Lsn::ZERO {
            return Err(FormatError::Malformed("empty batch or LSN zero"));
        }
        Ok(header)
    }
}

/// A record as read back from a verified batch. `payload` borrows the batch bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: RecordKind,
    pub vshard: VShard,
    pub lsn: Lsn,
    pub payload: &'a [u8],
}

/// Encodes one record (header, payload, padding) at the start of `out` and returns the bytes
/// used. `out` must hold `record_span(payload.len())` bytes.
pub fn encode_record(out: &mut [u8], seed: u64, kind: RecordKind, vshard: VShard, lsn: Lsn, payload: &[u8]) -> usize {
    let span = record_span(payload.len());
    let out = &mut out[..span];
    let payload_bytes = u32::try_from(payload.len()).expect("record payload checked by caller");
    out[0..2].copy_from_slice(&kind.0.to_le_bytes());
    out[2..4].copy_from_slice(&vshard.index().to_le_bytes());
    out[4..8].copy_from_slice(&payload_bytes.to_le_bytes());
    out[8..16].copy_from_slice(&lsn.0.to_le_bytes());
    let payload_end = RECORD_HEADER_BYTES + payload.len();
    out[RECORD_HEADER_BYTES..payload_end].copy_from_slice(payload);
    out[payload_end..].fill(0);
    let checksum = record_checksum(seed, &out[..16], payload);
    out[16..24].copy_from_slice(&checksum.to_le_bytes());
    span
}

/// Decodes and verifies the record at the start of `bytes`; returns it and its span.
pub fn decode_record(bytes: &[u8], seed: u64) -> Result<(Record<'_>, usize), FormatError> {
    let header = bytes.get(..RECORD_HEADER_BYTES).ok_or(FormatError::Truncated)?;
    let payload_bytes = read_u32(header, 4) as usize;
    let span = record_span(payload_bytes);
    if span > bytes.len() {
        return Err(FormatError::Truncated);
    }
    let payload = &bytes[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + payload_bytes];
    if read_u64(header, 16) != record_checksum(seed, &header[..16], payload) {
        return Err(FormatError::RecordChecksum);
    }
    let vshard = VShard::new(read_u16(header, 2)).ok_or(FormatError::Malformed("vshard out of range"))?;
    let record = Record { kind: RecordKind(read_u16(header, 0)), vshard, lsn: Lsn(read_u64(header, 8)), payload };
    Ok((record, span))
}

/// Checksum of a batch body.
pub fn body_checksum(seed: u64, body: &[u8]) -> u64 {
    xxh3_64_with_seed(body, seed)
}

fn record_checksum(seed: u64, header_fields: &[u8], payload: &[u8]) -> u64 {
    let mut hasher = Xxh3::with_seed(seed);
    hasher.update(header_fields);
    hasher.update(payload);
    hasher.digest()
}

/// Why bytes are not a valid batch or record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("truncated")]
    Truncated,
    #[error("no batch magic")]
    BadMagic,
    #[error("batch header checksum mismatch")]
    HeaderChecksum,
    #[error("unknown format version {0}")]
    UnknownVersion(u16),
    #[error("batch belongs to another segment")]
    WrongSegment,
    #[error("batch body checksum mismatch")]
    BodyChecksum,
    #[error("record checksum mismatch")]
    RecordChecksum,
    #[error("records do not match their batch header")]
    RecordMismatch,
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

/// A verified batch read from `bytes` (which start at the batch header): its header and the
/// body bytes. Records are decoded lazily with [`BatchRecords`].
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    pub header: BatchHeader,
    pub body: &'a [u8],
    seed: u64,
}

impl<'a> Batch<'a> {
    /// Verifies header and body checksums. Record checksums are verified as records are read.
    pub fn decode(bytes: &'a [u8], seed: u64, segment: SegmentId) -> Result<Batch<'a>, FormatError> {
        let header = BatchHeader::decode(bytes, seed, segment)?;
        let body_end = BATCH_HEADER_BYTES + header.body_bytes as usize;
        let body = bytes.get(BATCH_HEADER_BYTES..body_end).ok_or(FormatError::Truncated)?;
        if body_checksum(seed, body) != header.body_checksum {
            return Err(FormatError::BodyChecksum);
        }
        Ok(Batch { header, body, seed })
    }

    /// The batch's records in order, each verified; fails if they do not add up to exactly
    /// the header's count and dense LSNs.
    pub fn records(&self) -> BatchRecords<'a> {
        BatchRecords {
            body: self.body,
            offset: 0,
            next_lsn: self.header.first_lsn,
            left: self.header.record_count,
            seed: self.seed,
        }
    }
}

/// Iterator over a batch's records; yields `(offset within body, record)`.
#[derive(Debug)]
pub struct BatchRecords<'a> {
    body: &'a [u8],
    offset: usize,
    next_lsn: Lsn,
    left: u32,
    seed: u64,
}

impl<'a> Iterator for BatchRecords<'a> {
    type Item = Result<(usize, Record<'a>), FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            if self.offset == self.body.len() {
                return None;
            }
            self.offset = self.body.len();
            return Some(Err(FormatError::RecordMismatch));
        }
        let offset = self.offset;
        let result = decode_record(&self.body[offset..], self.seed).and_then(|(record, span)| {
            if record.lsn != self.next_lsn {
                return Err(FormatError::RecordMismatch);
            }
            Ok((record, span))
        });
        match result {
            Ok((record, span)) => {
                self.offset += span;
                self.next_lsn = self.next_lsn.next();
                self.left -= 1;
                Some(Ok((offset, record)))
            }
            Err(error) => {
                self.left = 0;
                self.offset = self.body.len();
                Some(Err(error))
            }
        }
    }
}

fn read_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: u64 = 0xC0FFEE;
    const SEGMENT: SegmentId = SegmentId(7);

    /// A sealed batch as the writer builds it, and its body length.
    fn batch(payloads: &[&[u8]], first_lsn: u64) -> (Vec<u8>, usize) {
        let seed = segment_seed(SALT, SEGMENT);
        let body_bytes: usize = payloads.iter().map(|payload| record_span(payload.len())).sum();
        let mut out = vec![0u8; batch_span(body_bytes)];
        let mut at = BATCH_HEADER_BYTES;
        for (index, payload) in payloads.iter().enumerate() {
            let lsn = Lsn(first_lsn + index as u64);
            at += encode_record(&mut out[at..], seed, RecordKind(index as u16), VShard::of(lsn.0 * 31), lsn, payload);
        }
        let header = BatchHeader {
            record_count: payloads.len() as u32,
            body_bytes: body_bytes as u32,
            segment: SEGMENT,
            first_lsn: Lsn(first_lsn),
            body_checksum: body_checksum(seed, &out[BATCH_HEADER_BYTES..BATCH_HEADER_BYTES + body_bytes]),
            durable_lsn: Lsn(first_lsn - 1),
        };
        header.encode(seed, &mut out);
        (out, body_bytes)
    }

    /// Decodes a batch fully (header, body, every record) or says why not.
    fn decode_all(bytes: &[u8], seed: u64, segment: SegmentId) -> Result<Vec<(Lsn, Vec<u8>)>, FormatError> {
        let batch = Batch::decode(bytes, seed, segment)?;
        batch.records().map(|item| item.map(|(_, record)| (record.lsn, record.payload.to_vec()))).collect()
    }

    /// Proves a record round-trips for every payload length around the alignment boundaries,
    /// and that its span is what `record_span` promises.
    #[test]
    fn record_round_trip() {
        let seed = segment_seed(SALT, SEGMENT);
        for length in 0..=40 {
            let payload: Vec<u8> = (0..length as u8).collect();
            let mut out = vec![0xFFu8; record_span(length)];
            let span = encode_record(&mut out, seed, RecordKind(9), VShard::of(4095), Lsn(12), &payload);
            assert_eq!(span, record_span(length));
            let (record, decoded_span) = decode_record(&out, seed).expect("valid record");
            assert_eq!(decoded_span, span);
            assert_eq!((record.kind, record.vshard, record.lsn), (RecordKind(9), VShard::of(4095), Lsn(12)));
            assert_eq!(record.payload, &payload[..]);
            assert!(out[RECORD_HEADER_BYTES + length..].iter().all(|&byte| byte == 0), "padding is zeroed");
            assert_eq!(decode_record(&out, seed ^ 1), Err(FormatError::RecordChecksum), "another seed must not verify");
            assert_eq!(decode_record(&out[..span - 1], seed), Err(FormatError::Truncated));
        }
    }

    /// Proves a batch round-trips: header fields, and every record in order with dense LSNs.
    #[test]
    fn batch_round_trip() {
        let payloads: [&[u8]; 4] = [b"", b"a", &[5u8; 3000], &[6u8; 1500]];
        let (bytes, body_bytes) = batch(&payloads, 100);
        assert_eq!(bytes.len(), 2 * BLOCK_BYTES);
        let decoded = Batch::decode(&bytes, segment_seed(SALT, SEGMENT), SEGMENT).expect("valid batch");
        assert_eq!(decoded.header.record_count, 4);
        assert_eq!(decoded.header.body_bytes as usize, body_bytes);
        assert_eq!((decoded.header.first_lsn, decoded.header.last_lsn()), (Lsn(100), Lsn(103)));
        assert_eq!(decoded.header.durable_lsn, Lsn(99));
        assert_eq!(decoded.header.span(), bytes.len());
        let records = decode_all(&bytes, segment_seed(SALT, SEGMENT), SEGMENT).expect("valid records");
        let expected: Vec<(Lsn, Vec<u8>)> =
            payloads.iter().enumerate().map(|(index, payload)| (Lsn(100 + index as u64), payload.to_vec())).collect();
        assert_eq!(records, expected);
    }

    /// Proves every single-bit flip in a batch's header or body is rejected, and that flips in
    /// the zero padding after the body (which no reader looks at) change nothing.
    #[test]
    fn every_single_bit_flip_is_rejected() {
        let (bytes, body_bytes) = batch(&[b"first", &[1u8; 300], b"third"], 40);
        let seed = segment_seed(SALT, SEGMENT);
        let original = decode_all(&bytes, seed, SEGMENT).expect("valid batch");
        for bit in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            let result = decode_all(&damaged, seed, SEGMENT);
            if bit / 8 < BATCH_HEADER_BYTES + body_bytes {
                assert!(result.is_err(), "flipping bit {bit} (byte {}) was accepted", bit / 8);
            } else {
                assert_eq!(result.as_ref(), Ok(&original), "bit {bit} in the padding changed the records");
            }
        }
    }

    /// Proves a batch read as another segment, or under another log's salt, is rejected: the
    /// two properties that keep recycled segments' leftovers and foreign bytes out of the log.
    #[test]
    fn wrong_segment_or_salt_is_rejected() {
        let (bytes, _) = batch(&[b"record"], 1);
        let other = SegmentId(8);
        assert_eq!(decode_all(&bytes, segment_seed(SALT, other), other).map(|_| ()), Err(FormatError::HeaderChecksum));
        assert_eq!(
            decode_all(&bytes, segment_seed(SALT, SEGMENT), other).map(|_| ()),
            Err(FormatError::WrongSegment),
            "even with the right seed, the header's segment must match"
        );
        assert_eq!(
            decode_all(&bytes, segment_seed(SALT + 1, SEGMENT), SEGMENT).map(|_| ()),
            Err(FormatError::HeaderChecksum)
        );
        assert_ne!(segment_seed(SALT, SEGMENT), segment_seed(SALT, other));
        assert_eq!(
            decode_all(&[0u8; BLOCK_BYTES], segment_seed(SALT, SEGMENT), SEGMENT).map(|_| ()),
            Err(FormatError::BadMagic)
        );
    }

    /// Proves every record payload in a batch starts 8-byte aligned relative to the block, for
    /// any mix of payload lengths, so rkyv can read archives in place.
    #[test]
    fn payloads_are_eight_byte_aligned() {
        let lengths = [0usize, 1, 7, 8, 9, 15, 16, 17, 100, 1001];
        let payloads: Vec<Vec<u8>> = lengths.iter().map(|&length| vec![0xAB; length]).collect();
        let references: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let (bytes, _) = batch(&references, 1);
        let decoded = Batch::decode(&bytes, segment_seed(SALT, SEGMENT), SEGMENT).expect("valid batch");
        for item in decoded.records() {
            let (body_offset, record) = item.expect("valid record");
            let payload_offset = BATCH_HEADER_BYTES + body_offset + RECORD_HEADER_BYTES;
            assert_eq!(payload_offset % RECORD_ALIGN, 0, "payload of LSN {} at {payload_offset}", record.lsn);
            assert_eq!(record.payload.as_ptr() as usize - bytes.as_ptr() as usize, payload_offset);
        }
    }
}
