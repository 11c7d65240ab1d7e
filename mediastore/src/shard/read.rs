//! Downloads that run beside each other: a read is planned under the shard's exclusive borrow
//! ([`MediaShard::begin_read`]: which chunks, which of them are cached, which spans of which
//! segments to read, with readers that keep those segments open) and then runs without it
//! ([`PendingRead::run`]: the disk reads, each chunk verified against its key, the cache
//! filled), so the disk reads of many ranges and files overlap while the shard's mutations
//! stay one at a time.
//!
//! Why a pending read stays correct while the shard changes under it:
//! - Compaction may move its chunks and delete their segment: its readers keep the old
//!   segment open (an unlinked file stays readable while open), and a frame, once written,
//!   is never rewritten, so the old place still holds the chunk.
//! - Its file may be deleted: it answers the bytes the file held when it was planned, which
//!   is what a read that ran a moment earlier would have answered.
//! - Every chunk is verified against its key and place before it is served or cached, so a
//!   wrong read is an error, never wrong bytes; and it caches nothing when the shard removed
//!   any chunk meanwhile (a dropped key may come to name other bytes, `cache.rs`).
//! - A shard that failed meanwhile answers `PreviouslyFailed`, and a read's own I/O error
//!   fails the shard, as any storage error does.
//!
//! Reads in flight are bounded in number and in bytes held (their span reads and answers):
//! past the bound `begin_read` waits for one to finish, except that a read may always start
//! when none is in flight.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};

use super::{check_download_range, MediaShard};
use crate::cache::ChunkCache;
use crate::error::{ReadError, StorageError};
use crate::ids::{AccessHash, ChunkKey, ChunkLocation, FileId, SegmentId};
use crate::journal::Journal;
use crate::limits::{BLOCK_BYTES, READ_SPAN_BYTES_MAX};
use crate::segment::{frame_payload, SegmentIo, SegmentReader};

/// A planned read of one range: run it (anywhere on the shard's executor, without the
/// shard) to get the bytes. Holds one of the shard's read slots while it has disk reads to
/// do; dropping it gives the slot back.
#[derive(Debug)]
pub struct PendingRead<R> {
    /// The range, already cut at the end of the file.
    offset: u64,
    end: u64,
    pieces: Vec<Piece>,
    spans: Vec<Span<R>>,
    cache: Rc<RefCell<ChunkCache>>,
    /// The cache's removal count when the read was planned.
    cache_removals: u64,
    failed: Rc<Cell<bool>>,
    slot: Option<ReadSlot>,
}

/// Reads in flight on a shard and their bytes, now and at their highest since it opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadsInFlight {
    pub reads: usize,
    pub bytes: u64,
    pub reads_peak: usize,
    pub bytes_peak: u64,
}

impl<S: SegmentIo, J: Journal> MediaShard<S, J> {
    /// Reads `limit` bytes at `offset` (fewer at the end of the file, none past it), under
    /// Telegram's rules: offset and limit multiples of 4 KiB, limit at most 1 MiB, and the
    /// range inside one 1 MiB window. The same as `begin_read` then `run`.
    pub async fn read(
        &mut self,
        file: FileId,
        access_hash: AccessHash,
        offset: u64,
        limit: u64,
    ) -> Result<Vec<u8>, ReadError> {
        self.begin_read(file, access_hash, offset, limit).await?.run().await
    }

    /// Plans a read of `limit` bytes at `offset` (the rules of [`MediaShard::read`]) from
    /// the state as it is now, and returns it to be run without the shard.
    ///
    /// It awaits only to open a segment no read has opened yet and, when reads in flight are
    /// at the bound (`reads_in_flight_max`, `read_bytes_in_flight_max`), for one of them to
    /// finish. So a caller that holds pending reads without running them must not begin
    /// more than the bound allows, or it waits forever.
    pub async fn begin_read(
        &mut self,
        file: FileId,
        access_hash: AccessHash,
        offset: u64,
        limit: u64,
    ) -> Result<PendingRead<S::Reader>, ReadError> {
        check_download_range(offset, limit)?;
        self.check_failed()?;
        let entry = self.authorized(file, access_hash)?;
        let end = (offset + limit).min(entry.meta.size).max(offset);
        let mut wanted = Vec::new();
        if offset < end {
            let first = entry.chunk_ends.partition_point(|&chunk_end| chunk_end <= offset);
            let mut chunk_start = if first == 0 { 0 } else { entry.chunk_ends[first - 1] };
            for index in first..entry.chunks.len() {
                if chunk_start >= end {
                    break;
                }
                wanted.push((entry.chunks[index], chunk_start));
                chunk_start = entry.chunk_ends[index];
            }
        }
        let (pieces, planned) = self.plan_pieces(&wanted)?;
        let mut spans = Vec::with_capacity(planned.len());
        for span in planned {
            let reader = self.segments.reader(span.segment).await;
            spans.push(Span { reader: self.storage(reader)?, offset: span.offset, length: span.length });
        }
        let mut read = PendingRead {
            offset,
            end,
            pieces,
            spans,
            cache_removals: self.cache.borrow().removals(),
            cache: self.cache.clone(),
            failed: self.failed.clone(),
            slot: None,
        };
        if read.needs_disk() {
            read.slot = Some(self.reads.take(read.held_bytes()).await);
        }
        Ok(read)
    }

    /// Reads in flight now and at their highest.
    pub fn reads_in_flight(&self) -> ReadsInFlight {
        self.reads.figures()
    }

    /// Waits until no read is in flight (before the segment files are closed).
    pub async fn reads_finished(&mut self) {
        self.reads.finished().await
    }

    /// Where each wanted chunk comes from: the cache, the write buffer (verified now), or a
    /// span to read, and the spans. Chunks lying one after another in one segment (at most a
    /// block of padding apart; a file's new chunks usually are) share a span: a range of a
    /// cold file costs one disk read, not one per chunk.
    fn plan_pieces(&mut self, wanted: &[(ChunkKey, u64)]) -> Result<(Vec<Piece>, Vec<SpanPlan>), StorageError> {
        let mut pieces = Vec::with_capacity(wanted.len());
        let mut spans: Vec<SpanPlan> = Vec::new();
        for &(key, chunk_start) in wanted {
            let cached = self.cache.borrow_mut().get(&key);
            if let Some(bytes) = cached {
                pieces.push(Piece { key, chunk_start, source: Source::Ready(bytes) });
                continue;
            }
            let location = self
                .state
                .chunk(&key)
                .map(|entry| entry.location)
                .or(self.provisional.get(&key).copied())
                .ok_or(StorageError::ChunkMissing { key })?;
            if let Some(frame) = self.segments.buffered_frame(location)? {
                let payload: Rc<[u8]> = Rc::from(frame_payload(frame, location.offset, key, location)?);
                self.cache.borrow_mut().insert(key, payload.clone());
                pieces.push(Piece { key, chunk_start, source: Source::Ready(payload) });
                continue;
            }
            let frame_end = location.offset + location.frame_bytes();
            if frame_end > self.segments.written_bytes(location.segment) {
                return Err(StorageError::ChunkMissing { key });
            }
            let joins = spans.last().is_some_and(|span| {
                let span_end = span.offset + span.length as u64;
                span.segment == location.segment
                    && location.offset >= span_end
                    && location.offset - span_end <= BLOCK_BYTES
                    && frame_end - span.offset <= READ_SPAN_BYTES_MAX
            });
            match spans.last_mut() {
                Some(span) if joins => span.length = (frame_end - span.offset) as usize,
                _ => spans.push(SpanPlan {
                    segment: location.segment,
                    offset: location.offset,
                    length: location.frame_bytes() as usize,
                }),
            }
            pieces.push(Piece { key, chunk_start, source: Source::Span { index: spans.len() - 1, location } });
        }
        Ok((pieces, spans))
    }
}

impl<R: SegmentReader> PendingRead<R> {
    /// Whether the read has disk reads to do (otherwise `run` is ready at once).
    pub fn needs_disk(&self) -> bool {
        !self.spans.is_empty()
    }

    /// Bytes the read will hold while it runs: its span reads and its answer.
    pub fn held_bytes(&self) -> u64 {
        self.spans.iter().map(|span| span.length as u64).sum::<u64>() + (self.end - self.offset)
    }

    /// Reads the spans (all at once), verifies every chunk against its key, caches what it
    /// read, and returns the range's bytes.
    pub async fn run(self) -> Result<Vec<u8>, ReadError> {
        let reads = join_all(self.spans.iter().map(|span| span.reader.read_at(span.offset, span.length))).await;
        let mut spans = Vec::with_capacity(reads.len());
        for read in reads {
            match read {
                Ok(bytes) => spans.push(bytes),
                Err(source) => {
                    // Like every storage I/O error, a failed read stops the shard.
                    self.failed.set(true);
                    return Err(StorageError::Io { context: "reading a segment", source }.into());
                }
            }
        }
        let mut out = Vec::with_capacity((self.end - self.offset) as usize);
        for piece in &self.pieces {
            let from = self.offset.saturating_sub(piece.chunk_start) as usize;
            let payload: &[u8] = match &piece.source {
                Source::Ready(bytes) => bytes,
                Source::Span { index, location } => {
                    let span = &spans[*index];
                    let payload = frame_payload(span, self.spans[*index].offset, piece.key, *location)?;
                    let mut cache = self.cache.borrow_mut();
                    if cache.removals() == self.cache_removals {
                        cache.insert(piece.key, Rc::from(payload));
                    }
                    payload
                }
            };
            let to = ((self.end - piece.chunk_start) as usize).min(payload.len());
            out.extend_from_slice(&payload[from..to]);
        }
        if self.failed.get() {
            return Err(StorageError::PreviouslyFailed.into());
        }
        assert_eq!(out.len() as u64, self.end - self.offset, "a read returned the wrong number of bytes");
        Ok(out)
    }
}

/// One chunk of a read and where its payload comes from.
#[derive(Debug)]
struct Piece {
    key: ChunkKey,
    /// Where the chunk starts in the file.
    chunk_start: u64,
    source: Source,
}

#[derive(Debug)]
enum Source {
    /// Verified already (cached, or copied out of the write buffer).
    Ready(Rc<[u8]>),
    /// The frame at `location`, inside span `index`.
    Span { index: usize, location: ChunkLocation },
}

/// Adjacent frames of one segment, to read in one go.
#[derive(Debug)]
struct SpanPlan {
    segment: SegmentId,
    offset: u64,
    length: usize,
}

/// A planned span with its reader.
#[derive(Debug)]
struct Span<R> {
    reader: R,
    offset: u64,
    length: usize,
}

/// The shard's bound on reads in flight, shared by the shard and its pending reads. Only
/// `begin_read` and `reads_finished` wait on it, and both hold the shard exclusively, so
/// there is at most one waiter.
pub(crate) struct ReadSlots {
    reads_max: usize,
    bytes_max: u64,
    figures: Cell<ReadsInFlight>,
    waiter: Cell<Option<Waker>>,
}

impl std::fmt::Debug for ReadSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadSlots")
            .field("reads_max", &self.reads_max)
            .field("bytes_max", &self.bytes_max)
            .field("figures", &self.figures.get())
            .finish_non_exhaustive()
    }
}

impl ReadSlots {
    pub(crate) fn new(reads_max: usize, bytes_max: u64) -> Rc<ReadSlots> {
        Rc::new(ReadSlots { reads_max, bytes_max, figures: Cell::default(), waiter: Cell::new(None) })
    }

    fn figures(&self) -> ReadsInFlight {
        self.figures.get()
    }

    fn admits(&self, bytes: u64) -> bool {
        let now = self.figures.get();
        now.reads == 0 || (now.reads < self.reads_max && now.bytes + bytes <= self.bytes_max)
    }

    /// Waits until a read holding `bytes` fits, and takes its slot.
    async fn take(self: &Rc<Self>, bytes: u64) -> ReadSlot {
        self.wait_until(|slots| slots.admits(bytes)).await;
        let mut figures = self.figures.get();
        figures.reads += 1;
        figures.bytes += bytes;
        figures.reads_peak = figures.reads_peak.max(figures.reads);
        figures.bytes_peak = figures.bytes_peak.max(figures.bytes);
        self.figures.set(figures);
        ReadSlot { slots: self.clone(), bytes }
    }

    async fn finished(&self) {
        self.wait_until(|slots| slots.figures.get().reads == 0).await
    }

    fn wait_until<'a>(&'a self, ready: impl Fn(&Self) -> bool + 'a) -> impl Future<Output = ()> + 'a {
        poll_fn(move |context| {
            if ready(self) {
                Poll::Ready(())
            } else {
                self.waiter.set(Some(context.waker().clone()));
                Poll::Pending
            }
        })
    }
}

/// A read's place among the reads in flight; given back when dropped.
#[derive(Debug)]
struct ReadSlot {
    slots: Rc<ReadSlots>,
    bytes: u64,
}

impl Drop for ReadSlot {
    fn drop(&mut self) {
        let mut figures = self.slots.figures.get();
        figures.reads -= 1;
        figures.bytes -= self.bytes;
        self.slots.figures.set(figures);
        if let Some(waker) = self.slots.waiter.take() {
            waker.wake();
        }
    }
}

/// Polls every future until all are done, so their reads are in flight together; the outputs
/// come back in order.
async fn join_all<F: Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    poll_fn(|context| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(context) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|output| output.expect("every future is done")).collect()
}
