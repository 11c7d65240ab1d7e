//! Every limit of the media store in one place, with `const` assertions relating them
//! (DESIGN §7, §10). Defaults that an operator may change live in [`crate::MediaConfig`] and
//! are checked against the hard bounds here when a shard opens.

/// One KiB, the unit of upload part sizes.
pub const KIB: u64 = 1 << 10;
/// One MiB.
pub const MIB: u64 = 1 << 20;
/// One GiB.
pub const GIB: u64 = 1 << 30;

/// The largest upload part (Telegram's rule).
pub const PART_BYTES_MAX: u32 = 512 << 10;
/// Every part but the last is a multiple of this that divides [`PART_BYTES_MAX`].
pub const PART_BYTES_UNIT: u32 = 1 << 10;
/// The most parts one upload may have: a 2 GiB file in 512 KiB parts, as Telegram allows.
pub const UPLOAD_PARTS_MAX: u32 = 4096;
/// The default and the largest allowed maximum file size.
pub const FILE_BYTES_MAX_DEFAULT: u64 = 2 * GIB;
pub const FILE_BYTES_MAX_LIMIT: u64 = UPLOAD_PARTS_MAX as u64 * PART_BYTES_MAX as u64;

/// FastCDC sizes (DESIGN §7: about 16/64/256 KiB).
pub const CHUNK_BYTES_MIN: u32 = 16 << 10;
pub const CHUNK_BYTES_AVERAGE: u32 = 64 << 10;
pub const CHUNK_BYTES_MAX: u32 = 256 << 10;

/// Downloads (Telegram's rules): offset and limit are multiples of this…
pub const DOWNLOAD_ALIGN_BYTES: u64 = 4 << 10;
/// …the limit is at most this…
pub const DOWNLOAD_LIMIT_BYTES_MAX: u64 = MIB;
/// …and a request never crosses a multiple of this.
pub const DOWNLOAD_WINDOW_BYTES: u64 = MIB;

/// The block every segment write starts on and is padded to (O_DIRECT, DESIGN §4).
pub const BLOCK_BYTES: u64 = 4096;
/// The bytes in front of every chunk in a segment (see `segment::frame`).
pub const FRAME_HEADER_BYTES: u32 = 64;
/// Chunks are gathered in a buffer of this size before one aligned write.
pub const SEGMENT_WRITE_BUFFER_BYTES: usize = MIB as usize;
/// Bounds on the configurable segment size.
pub const SEGMENT_BYTES_DEFAULT: u64 = 256 * MIB;
pub const SEGMENT_BYTES_MIN: u64 = 4 * MIB;
pub const SEGMENT_BYTES_MAX: u64 = 4 * GIB;

/// The most bytes one read of several adjacent chunk frames covers (a download range of
/// 1 MiB touches at most 1 MiB plus two partial chunks).
pub const READ_SPAN_BYTES_MAX: u64 = 2 * MIB;

/// Downloads a shard reads from disk at once: the default and the largest allowed bound on
/// their number, and the default bound on the bytes they hold (their disk reads and their
/// answers). A client keeps a few ranges in flight; many clients together must not exhaust
/// memory, so past the bound a read waits for one to finish.
pub const READS_IN_FLIGHT_MAX_DEFAULT: usize = 16;
pub const READS_IN_FLIGHT_LIMIT: usize = 1024;
pub const READ_BYTES_IN_FLIGHT_MAX_DEFAULT: u64 = 64 * MIB;
/// What one read of a whole download range holds, at most in the usual case: one span read
/// and the answer. (A range whose chunks lie in many places holds a little more; a read is
/// always let through when no other is in flight, so any read can proceed.)
pub const READ_BYTES_TYPICAL_MAX: u64 = READ_SPAN_BYTES_MAX + DOWNLOAD_LIMIT_BYTES_MAX;

/// The most chunks one journal record names, so a record of a 2 GiB file of minimum-size
/// chunks still fits a WAL batch (DESIGN §10: a batch is at most 1 MiB).
pub const RECORD_CHUNKS_MAX: usize = 4096;
/// An upper bound on the archived size of one chunk entry in a record (key, length,
/// optional location, rkyv overhead).
pub const RECORD_CHUNK_ENTRY_BYTES_MAX: usize = 128;
/// The WAL batch bound a record must fit in.
pub const JOURNAL_RECORD_BYTES_MAX: usize = MIB as usize;

/// How many different chunks may share one content hash before the store gives up. With the
/// keyed 128-bit hash this is never reached; with the weak test hash it bounds the chains.
pub const COLLISIONS_MAX: u32 = 1024;

/// File names and MIME types carried in manifests.
pub const FILE_NAME_BYTES_MAX: usize = 255;
pub const MIME_TYPE_BYTES_MAX: usize = 127;

/// How many missing part numbers an error lists (the count is always exact).
pub const MISSING_PARTS_LISTED_MAX: usize = 32;

/// Bounds on the configurable upload limits per shard.
pub const UPLOADS_MAX_DEFAULT: usize = 4096;
pub const UPLOADS_MAX_LIMIT: usize = 1 << 20;
pub const STAGING_BYTES_DEFAULT: u64 = 256 * MIB;
pub const UPLOAD_STAGING_BYTES_DEFAULT: u64 = 16 * MIB;
pub const CACHE_BYTES_DEFAULT: u64 = 256 * MIB;

/// Time defaults, in milliseconds.
pub const UPLOAD_IDLE_TIMEOUT_MS_DEFAULT: u64 = 60 * 60 * 1000;
pub const UPLOADER_REFERENCE_TTL_MS_DEFAULT: u64 = 24 * 60 * 60 * 1000;
pub const GRACE_PERIOD_MS_DEFAULT: u64 = 10 * 60 * 1000;

/// Uploader references one `maintain` call expires (the rest wait for the next call), so one
/// call appends a bounded number of records.
pub const EXPIRIES_PER_CALL_MAX: usize = 4096;

/// Compaction rewrites a segment whose live fraction falls under this (per mille), and moves
/// at most this many bytes of live chunks per call so one call never stalls a shard for long.
pub const COMPACTION_LIVE_PER_MILLE_DEFAULT: u32 = 500;
pub const COMPACTION_BYTES_PER_CALL_DEFAULT: u64 = 64 * MIB;

// Part sizes: the unit divides the largest part, and the largest file is whole parts.
const _: () = assert!(PART_BYTES_MAX.is_power_of_two() && PART_BYTES_UNIT.is_power_of_two());
const _: () = assert!(PART_BYTES_MAX.is_multiple_of(PART_BYTES_UNIT));
const _: () = assert!(FILE_BYTES_MAX_DEFAULT <= FILE_BYTES_MAX_LIMIT);
// Chunk sizes: ordered, even (fastcdc v2020 scans two bytes at a time) and inside the bounds
// the fastcdc crate accepts.
const _: () = assert!(CHUNK_BYTES_MIN < CHUNK_BYTES_AVERAGE && CHUNK_BYTES_AVERAGE < CHUNK_BYTES_MAX);
const _: () = assert!(
    CHUNK_BYTES_MIN.is_multiple_of(2) && CHUNK_BYTES_AVERAGE.is_multiple_of(2) && CHUNK_BYTES_MAX.is_multiple_of(2)
);
const _: () = assert!(CHUNK_BYTES_MIN as usize >= fastcdc::v2020::MINIMUM_MIN);
const _: () = assert!(CHUNK_BYTES_MIN as usize <= fastcdc::v2020::MINIMUM_MAX);
const _: () = assert!(CHUNK_BYTES_AVERAGE as usize >= fastcdc::v2020::AVERAGE_MIN);
const _: () = assert!(CHUNK_BYTES_AVERAGE as usize <= fastcdc::v2020::AVERAGE_MAX);
const _: () = assert!(CHUNK_BYTES_MAX as usize >= fastcdc::v2020::MAXIMUM_MIN);
const _: () = assert!(CHUNK_BYTES_MAX as usize <= fastcdc::v2020::MAXIMUM_MAX);
// A whole frame (header and the largest chunk) fits the write buffer, and the buffer fits
// the smallest segment; writes stay block aligned.
const _: () = assert!(FRAME_HEADER_BYTES as usize + CHUNK_BYTES_MAX as usize <= SEGMENT_WRITE_BUFFER_BYTES);
const _: () = assert!(SEGMENT_WRITE_BUFFER_BYTES as u64 <= SEGMENT_BYTES_MIN);
const _: () = assert!((SEGMENT_WRITE_BUFFER_BYTES as u64).is_multiple_of(BLOCK_BYTES));
const _: () =
    assert!(SEGMENT_BYTES_MIN.is_multiple_of(BLOCK_BYTES) && SEGMENT_BYTES_DEFAULT.is_multiple_of(BLOCK_BYTES));
const _: () = assert!(SEGMENT_BYTES_MIN <= SEGMENT_BYTES_DEFAULT && SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_MAX);
// Downloads: an aligned request of the largest limit fits one window exactly, and one span
// read covers a whole request with a maximal chunk at each end.
const _: () =
    assert!(READ_SPAN_BYTES_MAX >= DOWNLOAD_LIMIT_BYTES_MAX + 2 * (CHUNK_BYTES_MAX as u64 + FRAME_HEADER_BYTES as u64));
const _: () = assert!(DOWNLOAD_LIMIT_BYTES_MAX <= DOWNLOAD_WINDOW_BYTES);
// A read of a whole range fits the default byte budget; the count is the bound that usually
// binds, the bytes the one that stops ranges scattered over many places.
const _: () = assert!(READ_BYTES_IN_FLIGHT_MAX_DEFAULT >= READ_BYTES_TYPICAL_MAX);
const _: () = assert!(1 <= READS_IN_FLIGHT_MAX_DEFAULT && READS_IN_FLIGHT_MAX_DEFAULT <= READS_IN_FLIGHT_LIMIT);
const _: () = assert!(DOWNLOAD_WINDOW_BYTES.is_multiple_of(DOWNLOAD_ALIGN_BYTES));
// A record of the most chunks fits one WAL batch with room for the rest of the record.
const _: () = assert!(RECORD_CHUNKS_MAX * RECORD_CHUNK_ENTRY_BYTES_MAX + 4096 <= JOURNAL_RECORD_BYTES_MAX);
// One upload's staging window holds at least a part beyond the prefix and the chunker's
// carry, or a client sending parts in order could be refused.
const _: () = assert!(UPLOAD_STAGING_BYTES_DEFAULT >= 2 * PART_BYTES_MAX as u64 + CHUNK_BYTES_MAX as u64);
const _: () = assert!(UPLOAD_STAGING_BYTES_DEFAULT <= STAGING_BYTES_DEFAULT);
const _: () = assert!(UPLOADS_MAX_DEFAULT <= UPLOADS_MAX_LIMIT);
const _: () = assert!(MISSING_PARTS_LISTED_MAX <= UPLOAD_PARTS_MAX as usize);
