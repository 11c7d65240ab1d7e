//! Recovery: finding the end of a shard's log and replaying it, as a pure function over the
//! segments' bytes (the glommio driver maps them with `memmap2`, the simulator hands in its
//! in-memory images).
//!
//! The scan follows batches from the replay position while each one verifies (checksums,
//! segment epoch, dense LSNs). Where the chain breaks it looks for the next segment whose first
//! batch continues the LSNs (the writer moves to a fresh segment after every recovery, so a
//! torn tail is left behind, never overwritten). When nothing continues, the break is the end
//! of the log, and what lies beyond it is judged:
//! - a valid batch whose `durable_lsn` reaches the break proves the broken batch had been
//!   acknowledged: that is corruption, and the log refuses to open, naming file and offset;
//! - anything else beyond (zeroes, bytes of a recycled segment's earlier life, batches written
//!   but never synced) is a torn tail and is dropped whole.

use crate::ids::{Lsn, SegmentId};
use crate::wal::core::{CheckpointTicket, LogPosition, RecordPosition};
use crate::wal::format::{segment_seed, Batch, FormatError, Record, BATCH_HEADER_BYTES, BATCH_MAGIC, BLOCK_BYTES};

/// One segment's bytes as found on disk.
#[derive(Clone, Copy, Debug)]
pub struct SegmentImage<'a> {
    pub segment: SegmentId,
    pub bytes: &'a [u8],
}

/// Where replay starts: a checkpoint's position, skipping records at or below `after_lsn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayFrom {
    pub position: LogPosition,
    pub after_lsn: Lsn,
}

impl ReplayFrom {
    /// Replay of a log without a checkpoint: from its first segment.
    pub fn start(first_segment: SegmentId) -> ReplayFrom {
        ReplayFrom { position: LogPosition { segment: first_segment, offset: 0 }, after_lsn: Lsn::ZERO }
    }

    /// Where replay starts: after the newest checkpoint if there is one, else at the first of
    /// `segments` (sorted), or at segment 1 for an empty log.
    pub fn after(checkpoint: Option<&CheckpointTicket>, segments: &[SegmentId]) -> ReplayFrom {
        match checkpoint {
            Some(ticket) => ReplayFrom { position: ticket.replay_from, after_lsn: ticket.lsn },
            None => ReplayFrom::start(segments.first().copied().unwrap_or(SegmentId(1))),
        }
    }
}

/// What the scan found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanOutcome {
    /// The LSN the next append gets.
    pub next_lsn: Lsn,
    /// Where the last valid batch ends.
    pub end: LogPosition,
    /// Records replayed (above `after_lsn`), batches read and their bytes.
    pub records: u64,
    pub batches: u64,
    pub bytes: u64,
    /// Whether something was dropped beyond the end (a torn or unsynced tail).
    pub torn_tail: bool,
}

/// Acknowledged data is damaged: a batch that fails to verify is followed by batches that
/// prove it had been made durable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "corrupt write-ahead log: segment {segment} at offset {offset} ({reason}); a later batch at segment {evidence_segment} offset {evidence_offset} shows it had been acknowledged"
)]
pub struct Corruption {
    pub segment: SegmentId,
    pub offset: u64,
    pub reason: String,
    pub evidence_segment: SegmentId,
    pub evidence_offset: u64,
}

/// Scans `images` (sorted by segment) from `from`, calling `visit` for every record above
/// `from.after_lsn`, in LSN order.
pub fn scan(
    salt: u64,
    images: &[SegmentImage<'_>],
    from: ReplayFrom,
    mut visit: impl FnMut(RecordPosition, Record<'_>),
) -> Result<ScanOutcome, Corruption> {
    assert!(images.windows(2).all(|pair| pair[0].segment < pair[1].segment), "segments must be sorted");
    let mut outcome = ScanOutcome {
        next_lsn: from.after_lsn.next(),
        end: from.position,
        records: 0,
        batches: 0,
        bytes: 0,
        torn_tail: false,
    };
    let mut first_batch = true;
    let mut verified: Vec<(usize, Record<'_>)> = Vec::new();
    let Some(mut index) = images.iter().position(|image| image.segment >= from.position.segment) else {
        return Ok(outcome);
    };
    let mut offset = if images[index].segment == from.position.segment { from.position.offset } else { 0 };
    if images[index].segment != from.position.segment {
        // The replay segment was never created (the checkpoint was taken just before a roll):
        // the log may only continue at the start of a later segment.
        match find_continuation(salt, images, index, outcome.next_lsn, true) {
            Some(found) => index = found,
            None => return judge_tail(salt, images, index, 0, outcome, "replay segment missing".into()),
        }
    }
    loop {
        let image = images[index];
        let seed = segment_seed(salt, image.segment);
        let attempt = Batch::decode(image.bytes.get(offset as usize..).unwrap_or(&[]), seed, image.segment)
            .and_then(|batch| check_lsn(&batch, outcome.next_lsn, first_batch).map(|()| batch));
        match attempt {
            Ok(batch) => {
                // Every record is verified before any is replayed: a batch is replayed whole
                // or not at all, so a repair that cuts at this batch never leaves the layers
                // above holding records the log no longer has.
                verified.clear();
                for item in batch.records() {
                    match item {
                        Ok(item) => verified.push(item),
                        // Checksums passed but records do not add up: the writer never does
                        // this, so the bytes were damaged in a way that kept the checksum.
                        Err(error) => return Err(corrupt_here(image.segment, offset, error)),
                    }
                }
                for &(body_offset, record) in &verified {
                    if record.lsn <= from.after_lsn {
                        continue;
                    }
                    let position = RecordPosition {
                        segment: image.segment,
                        offset: (offset as usize + BATCH_HEADER_BYTES + body_offset) as u32,
                        bytes: crate::wal::format::record_span(record.payload.len()) as u32,
                    };
                    visit(position, record);
                    outcome.records += 1;
                }
                first_batch = false;
                let span = batch.header.span() as u64;
                outcome.next_lsn = outcome.next_lsn.max(batch.header.last_lsn().next());
                offset += span;
                outcome.batches += 1;
                outcome.bytes += span;
                outcome.end = LogPosition { segment: image.segment, offset };
            }
            Err(error) => {
                let reason = error.to_string();
                match find_continuation(salt, images, index + 1, outcome.next_lsn, first_batch) {
                    Some(next) => {
                        // Everything skipped must be abandoned tail, not acknowledged data.
                        if let Some(evidence) = find_evidence(salt, images, index, offset, next, outcome.next_lsn) {
                            return Err(corruption(image.segment, offset, reason, evidence));
                        }
                        if has_data(images, index, offset, next) {
                            outcome.torn_tail = true;
                        }
                        index = next;
                        offset = 0;
                    }
                    None => return judge_tail(salt, images, index, offset, outcome, reason),
                }
            }
        }
    }
}

fn check_lsn(batch: &Batch<'_>, expected: Lsn, first_batch: bool) -> Result<(), FormatError> {
    let header = &batch.header;
    let continues = if first_batch {
        header.first_lsn <= expected && header.last_lsn().next() >= expected
    } else {
        header.first_lsn == expected
    };
    if continues {
        Ok(())
    } else {
        Err(FormatError::Malformed("batch does not continue the LSN sequence"))
    }
}

/// The first segment from `first_candidate` on whose first batch continues the LSNs at `expected`.
fn find_continuation(
    salt: u64,
    images: &[SegmentImage<'_>],
    first_candidate: usize,
    expected: Lsn,
    first_batch: bool,
) -> Option<usize> {
    (first_candidate..images.len()).find(|&candidate| {
        let image = images[candidate];
        Batch::decode(image.bytes, segment_seed(salt, image.segment), image.segment)
            .is_ok_and(|batch| check_lsn(&batch, expected, first_batch).is_ok() && batch.records().all(|r| r.is_ok()))
    })
}

/// The break at (`index`, `offset`) is the end of the log: corruption if anything beyond it
/// proves acknowledged data was lost, else a clean end or a dropped torn tail.
fn judge_tail(
    salt: u64,
    images: &[SegmentImage<'_>],
    index: usize,
    offset: u64,
    mut outcome: ScanOutcome,
    reason: String,
) -> Result<ScanOutcome, Corruption> {
    if let Some(evidence) = find_evidence(salt, images, index, offset, images.len(), outcome.next_lsn) {
        return Err(corruption(images[index].segment, offset, reason, evidence));
    }
    outcome.torn_tail |= has_data(images, index, offset, images.len());
    Ok(outcome)
}

/// A valid batch between (`index`, `offset`) and the start of segment `until` whose durable
/// watermark reaches `expected`: proof that the batch at the break had been acknowledged.
fn find_evidence(
    salt: u64,
    images: &[SegmentImage<'_>],
    index: usize,
    offset: u64,
    until: usize,
    expected: Lsn,
) -> Option<LogPosition> {
    for (i, image) in images.iter().enumerate().take(until).skip(index) {
        let seed = segment_seed(salt, image.segment);
        let start = if i == index { offset as usize } else { 0 };
        let mut block = start;
        while block + BATCH_HEADER_BYTES <= image.bytes.len() {
            let bytes = &image.bytes[block..];
            if bytes[..4] == BATCH_MAGIC.to_le_bytes() {
                if let Ok(batch) = Batch::decode(bytes, seed, image.segment) {
                    if batch.header.durable_lsn >= expected {
                        return Some(LogPosition { segment: image.segment, offset: block as u64 });
                    }
                }
            }
            block += BLOCK_BYTES;
        }
    }
    None
}

/// Whether any byte between the break and segment `until` is non-zero (a tail was dropped).
fn has_data(images: &[SegmentImage<'_>], index: usize, offset: u64, until: usize) -> bool {
    images.iter().enumerate().take(until).skip(index).any(|(i, image)| {
        let start = if i == index { offset as usize } else { 0 };
        image.bytes.get(start..).is_some_and(|rest| rest.iter().any(|&byte| byte != 0))
    })
}

fn corrupt_here(segment: SegmentId, offset: u64, error: FormatError) -> Corruption {
    Corruption { segment, offset, reason: error.to_string(), evidence_segment: segment, evidence_offset: offset }
}

fn corruption(segment: SegmentId, offset: u64, reason: String, evidence: LogPosition) -> Corruption {
    Corruption { segment, offset, reason, evidence_segment: evidence.segment, evidence_offset: evidence.offset }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{RecordKind, VShard};
    use crate::wal::format::{batch_span, body_checksum, encode_record, record_span, BatchHeader};

    const SALT: u64 = 0x5EED;
    const SEGMENT_BYTES: usize = 16 * BLOCK_BYTES;

    /// A segment image written by hand: batches appended at block-aligned offsets.
    struct SegmentBuilder {
        segment: SegmentId,
        bytes: Vec<u8>,
        offset: usize,
    }

    impl SegmentBuilder {
        fn new(segment: u64) -> SegmentBuilder {
            SegmentBuilder { segment: SegmentId(segment), bytes: vec![0u8; SEGMENT_BYTES], offset: 0 }
        }

        /// Appends a batch of records with LSNs from `first_lsn`, as the writer seals it with
        /// durable watermark `durable_lsn`. Returns the batch's offset.
        fn batch(&mut self, first_lsn: u64, durable_lsn: u64, payloads: &[&[u8]]) -> u64 {
            self.batch_for(self.segment, first_lsn, durable_lsn, payloads)
        }

        /// Like `batch`, but encoded for segment `written_for`: bytes left by a segment's
        /// earlier life.
        fn batch_for(&mut self, written_for: SegmentId, first_lsn: u64, durable_lsn: u64, payloads: &[&[u8]]) -> u64 {
            let encoded = encode_batch(written_for, first_lsn, durable_lsn, payloads);
            let at = self.offset;
            self.bytes[at..at + encoded.len()].copy_from_slice(&encoded);
            self.offset += encoded.len();
            at as u64
        }

        fn image(&self) -> SegmentImage<'_> {
            SegmentImage { segment: self.segment, bytes: &self.bytes }
        }
    }

    fn encode_batch(segment: SegmentId, first_lsn: u64, durable_lsn: u64, payloads: &[&[u8]]) -> Vec<u8> {
        let seed = segment_seed(SALT, segment);
        let body_bytes: usize = payloads.iter().map(|payload| record_span(payload.len())).sum();
        let mut out = vec![0u8; batch_span(body_bytes)];
        let mut at = BATCH_HEADER_BYTES;
        for (index, payload) in payloads.iter().enumerate() {
            let lsn = Lsn(first_lsn + index as u64);
            at += encode_record(&mut out[at..], seed, RecordKind(7), VShard::of(lsn.0), lsn, payload);
        }
        let header = BatchHeader {
            record_count: payloads.len() as u32,
            body_bytes: body_bytes as u32,
            segment,
            first_lsn: Lsn(first_lsn),
            body_checksum: body_checksum(seed, &out[BATCH_HEADER_BYTES..BATCH_HEADER_BYTES + body_bytes]),
            durable_lsn: Lsn(durable_lsn),
        };
        header.encode(seed, &mut out);
        out
    }

    /// The (LSN, payload) of every record a scan visited.
    type Visited = Vec<(u64, Vec<u8>)>;

    /// Runs a scan and returns its outcome with the records it visited.
    fn run(images: &[SegmentImage<'_>], from: ReplayFrom) -> Result<(ScanOutcome, Visited), Corruption> {
        let mut seen = Vec::new();
        let outcome = scan(SALT, images, from, |position, record| {
            assert_eq!(position.bytes as usize, record_span(record.payload.len()));
            seen.push((record.lsn.0, record.payload.to_vec()));
        })?;
        Ok((outcome, seen))
    }

    fn lsns(seen: &[(u64, Vec<u8>)]) -> Vec<u64> {
        seen.iter().map(|(lsn, _)| *lsn).collect()
    }

    /// Proves a cleanly ended log replays every record once, in order, and reports no tail.
    #[test]
    fn clean_end_replays_every_record() {
        let mut one = SegmentBuilder::new(1);
        one.batch(1, 0, &[b"a", b"bb"]);
        one.batch(3, 2, &[&[3u8; 5000]]);
        one.batch(4, 3, &[b"", b"dddd", b"e"]);
        let (outcome, seen) = run(&[one.image()], ReplayFrom::start(SegmentId(1))).expect("clean log");
        assert_eq!(lsns(&seen), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(seen[1].1, b"bb");
        assert_eq!(seen[2].1, vec![3u8; 5000]);
        assert_eq!(outcome.next_lsn, Lsn(7));
        assert_eq!(outcome.end, LogPosition { segment: SegmentId(1), offset: one.offset as u64 });
        assert_eq!((outcome.records, outcome.batches), (6, 3));
        assert!(!outcome.torn_tail);
    }

    /// Proves a newest batch torn by a crash is dropped whole, even though its first record's
    /// bytes are intact, and the log ends before it.
    #[test]
    fn torn_newest_batch_is_dropped_whole() {
        let mut one = SegmentBuilder::new(1);
        one.batch(1, 0, &[b"kept"]);
        let torn_at = one.batch(2, 1, &[&[2u8; 1000], &[3u8; 5000]]) as usize;
        // The second block of the batch never reached the disk.
        one.bytes[torn_at + BLOCK_BYTES..torn_at + 2 * BLOCK_BYTES].fill(0);
        let seed = segment_seed(SALT, SegmentId(1));
        let (intact, _) = crate::wal::format::decode_record(&one.bytes[torn_at + BATCH_HEADER_BYTES..], seed)
            .expect("the torn batch's first record is intact on disk");
        assert_eq!(intact.lsn, Lsn(2));
        let (outcome, seen) =
            run(&[one.image()], ReplayFrom::start(SegmentId(1))).expect("a torn tail is not corruption");
        assert_eq!(lsns(&seen), vec![1]);
        assert_eq!(outcome.next_lsn, Lsn(2));
        assert_eq!(outcome.end.offset, torn_at as u64);
        assert!(outcome.torn_tail);
    }

    /// Proves a damaged batch followed by a batch whose durable watermark covers it is refused
    /// as corruption naming the damaged batch and the evidence, while the same damage with a
    /// watermark below it is only a torn tail (the later batch was never acknowledged).
    #[test]
    fn mid_log_corruption_is_refused_with_its_position() {
        for (durable_lsn, corrupt) in [(2, true), (1, false)] {
            let mut one = SegmentBuilder::new(1);
            one.batch(1, 0, &[b"one"]);
            let bad = one.batch(2, 1, &[b"two"]);
            let evidence = one.batch(3, durable_lsn, &[b"three"]);
            one.bytes[bad as usize + BATCH_HEADER_BYTES + 24] ^= 0x10;
            let result = run(&[one.image()], ReplayFrom::start(SegmentId(1)));
            if corrupt {
                let corruption = result.expect_err("acknowledged data was damaged");
                assert_eq!((corruption.segment, corruption.offset), (SegmentId(1), bad));
                assert_eq!((corruption.evidence_segment, corruption.evidence_offset), (SegmentId(1), evidence));
                let message = corruption.to_string();
                assert!(
                    message.contains(&SegmentId(1).to_string()) && message.contains(&format!("offset {bad}")),
                    "{message}"
                );
            } else {
                let (outcome, seen) = result.expect("an unacknowledged tail is not corruption");
                assert_eq!(lsns(&seen), vec![1]);
                assert!(outcome.torn_tail);
            }
        }
    }

    /// Proves corruption is also found when the evidence lies in a later segment.
    #[test]
    fn corruption_with_evidence_in_a_later_segment_is_refused() {
        let mut one = SegmentBuilder::new(1);
        one.batch(1, 0, &[b"one"]);
        let bad = one.batch(2, 1, &[b"two"]);
        let mut two = SegmentBuilder::new(2);
        two.batch(3, 2, &[b"three"]);
        one.bytes[bad as usize] ^= 0x01;
        let corruption = run(&[one.image(), two.image()], ReplayFrom::start(SegmentId(1))).expect_err("corrupt");
        assert_eq!((corruption.segment, corruption.offset), (SegmentId(1), bad));
        assert_eq!((corruption.evidence_segment, corruption.evidence_offset), (SegmentId(2), 0));
    }

    /// Proves bytes from a recycled segment's earlier life are never accepted, even when their
    /// LSNs would continue the log and their watermark claims durability: they were sealed with
    /// the old segment number, so they neither extend the log nor count as evidence.
    #[test]
    fn stale_batch_from_a_recycled_segment_is_never_accepted() {
        let mut five = SegmentBuilder::new(5);
        five.batch(10, 9, &[b"ten"]);
        // Left over from when this file was segment 2: continues at LSN 11 and claims 11 durable.
        five.batch_for(SegmentId(2), 11, 11, &[b"stale eleven"]);
        // A later segment whose first batch is stale too, continuing at 11.
        let mut six = SegmentBuilder::new(6);
        six.batch_for(SegmentId(3), 11, 11, &[b"stale again"]);
        let from = ReplayFrom { position: LogPosition { segment: SegmentId(5), offset: 0 }, after_lsn: Lsn(9) };
        let (outcome, seen) = run(&[five.image(), six.image()], from).expect("stale bytes are a tail, not corruption");
        assert_eq!(lsns(&seen), vec![10]);
        assert_eq!(outcome.next_lsn, Lsn(11));
        assert_eq!(outcome.end, LogPosition { segment: SegmentId(5), offset: BLOCK_BYTES as u64 });
        assert!(outcome.torn_tail);
    }

    /// Proves the log continues into a later segment: at a roll, and after a torn tail that an
    /// earlier recovery left behind, skipping a prepared segment that was never written.
    #[test]
    fn continues_into_a_later_segment() {
        let mut one = SegmentBuilder::new(1);
        one.batch(1, 0, &[b"one"]);
        one.batch(2, 1, &[b"two"]);
        let mut two = SegmentBuilder::new(2);
        two.batch(3, 2, &[b"three"]);
        let torn_at = two.batch(4, 3, &[&[4u8; 6000]]) as usize;
        two.bytes[torn_at + BLOCK_BYTES..torn_at + 2 * BLOCK_BYTES].fill(0);
        let three = SegmentBuilder::new(3); // prepared, never written
        let mut four = SegmentBuilder::new(4); // the writer's fresh segment after recovery
        four.batch(4, 3, &[b"four again"]);
        four.batch(5, 4, &[b"five"]);
        let images = [one.image(), two.image(), three.image(), four.image()];
        let (outcome, seen) = run(&images, ReplayFrom::start(SegmentId(1))).expect("valid log");
        assert_eq!(lsns(&seen), vec![1, 2, 3, 4, 5]);
        assert_eq!(seen[3].1, b"four again");
        assert_eq!(outcome.next_lsn, Lsn(6));
        assert_eq!(outcome.end, LogPosition { segment: SegmentId(4), offset: 2 * BLOCK_BYTES as u64 });
        assert!(outcome.torn_tail, "the torn batch in segment 2 was dropped");
    }

    /// Proves replay from a checkpoint skips records at or below its LSN, even inside the
    /// batch replay starts at.
    #[test]
    fn replay_from_checkpoint_skips_captured_records() {
        let mut one = SegmentBuilder::new(1);
        one.batch(1, 0, &[b"one"]);
        let replay_at = one.batch(2, 1, &[b"two", b"three", b"four"]);
        one.batch(5, 4, &[b"five"]);
        let from = ReplayFrom { position: LogPosition { segment: SegmentId(1), offset: replay_at }, after_lsn: Lsn(3) };
        let (outcome, seen) = run(&[one.image()], from).expect("valid log");
        assert_eq!(lsns(&seen), vec![4, 5]);
        assert_eq!(outcome.next_lsn, Lsn(6));
    }

    /// Proves replay from a position in a segment that is not on disk continues in the next
    /// segment that is, when that segment's first batch continues the log.
    #[test]
    fn replay_from_a_missing_segment_continues_in_the_next() {
        let mut three = SegmentBuilder::new(3);
        three.batch(8, 7, &[b"eight"]);
        let from = ReplayFrom { position: LogPosition { segment: SegmentId(2), offset: 0 }, after_lsn: Lsn(7) };
        let (outcome, seen) = run(&[three.image()], from).expect("valid log");
        assert_eq!(lsns(&seen), vec![8]);
        assert_eq!(outcome.next_lsn, Lsn(9));
    }
}
