//! The layout of a shard's checkpoint state: the host's bytes, the messaging snapshot and the
//! media section, and the media section itself.
//!
//! ```text
//! version 3 = magic "FGSC" · version u16 (3) · sections u16 (3) · host_bytes u64 · zeros [u8; 16]
//!             · host · zeros to a multiple of 16 · messaging · media
//!             · messaging_bytes u64 · media_bytes u64
//! version 2 = magic "FGSC" · version u16 (2) · sections u16 (3)
//!             · host_bytes u64 · messaging_bytes u64 · media_bytes u64
//!             · host · messaging · media
//! media     = covers_lsn u64 · MediaSnapshot (rkyv, validated when read)
//! legacy    = host_bytes u64 · host · messaging          (before media; no media section)
//! ```
//!
//! Version 3 is written; 2 and legacy are still read. Version 3 puts the lengths of the
//! messaging and media sections after them because the state is written to its file as it
//! is archived (`wal::checkpoint_file`), before those lengths are known. Its messaging
//! section starts at a multiple of 16 bytes from the state's start, which is where the
//! messaging snapshot's pieces are aligned (`messaging::core`), so they are read where they
//! lie instead of copied.
//!
//! A legacy state starts with its host length, which is at most the state's own length; the
//! magic read as that length is about 8 × 10^14 bytes, so the layouts never mix up.
//! A legacy checkpoint restores with an empty media state and every media record after it
//! replayed — there are none before it, since it was written before media existed.
//!
//! `covers_lsn` is the newest media record the snapshot holds. The snapshot is taken when the
//! media store is between operations, in the ticket's step or after it, so it holds every media
//! record at or below the ticket's LSN (those the log may release once the checkpoint is
//! written) and perhaps a few after it; replay skips the media records at or below
//! `covers_lsn`, which the snapshot already holds, and applies the rest.

use ferrogram_mediastore::{JournalError, MediaSnapshot, RecordError};

use crate::ids::Lsn;
use crate::wal::ChunkedBytes;

const MAGIC: &[u8; 4] = b"FGSC";
const VERSION: u16 = 3;
const SECTIONS: u16 = 3;
/// The header of versions 2 and 3 alike.
const HEADER_BYTES: usize = 4 + 2 + 2 + 8 * SECTIONS as usize;
const TRAILER_BYTES: usize = 16;
/// The alignment of the messaging section.
const MESSAGING_ALIGN: usize = 16;

/// The sections of a shard checkpoint's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardCheckpoint<'a> {
    pub host: &'a [u8],
    pub messaging: &'a [u8],
    /// `None` for a legacy checkpoint, written before media existed.
    pub media: Option<&'a [u8]>,
}

/// Why checkpoint state does not split into its sections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    #[error("the checkpoint state is shorter than its header says")]
    Truncated,
    #[error("the checkpoint state's section lengths do not add up to its length")]
    Lengths,
    #[error("checkpoint state version {found} with {sections} sections is not one this engine reads")]
    Version { found: u16, sections: u16 },
}

/// The bytes of a state before its messaging section: the header and the host's bytes.
pub fn head(host: &[u8]) -> Vec<u8> {
    let mut head = Vec::with_capacity(HEADER_BYTES + host.len() + MESSAGING_ALIGN);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&SECTIONS.to_le_bytes());
    head.extend_from_slice(&(host.len() as u64).to_le_bytes());
    head.resize(HEADER_BYTES, 0);
    head.extend_from_slice(host);
    head.resize(head.len().next_multiple_of(MESSAGING_ALIGN), 0);
    head
}

/// The bytes that end a state, after its media section.
pub fn trailer(messaging_bytes: usize, media_bytes: usize) -> [u8; TRAILER_BYTES] {
    let mut trailer = [0u8; TRAILER_BYTES];
    trailer[..8].copy_from_slice(&(messaging_bytes as u64).to_le_bytes());
    trailer[8..].copy_from_slice(&(media_bytes as u64).to_le_bytes());
    trailer
}

/// Lays out a whole state at once, for a state produced in one step. The messaging section
/// is moved in, not copied: it may be gigabytes. It must hold all its bytes (none taken out
/// with `take_filled`), since its length goes in the trailer.
pub fn compose(host: &[u8], messaging: ChunkedBytes, media: Vec<u8>) -> ChunkedBytes {
    debug_assert_eq!(messaging.len(), messaging.held(), "a messaging section with bytes taken out");
    let trailer = trailer(messaging.len(), media.len());
    let mut bytes = ChunkedBytes::from(head(host));
    bytes.append(messaging);
    bytes.push_vec(media);
    bytes.push_vec(trailer.to_vec());
    bytes
}

/// Splits checkpoint state of any layout into its sections.
pub fn split(bytes: &[u8]) -> Result<ShardCheckpoint<'_>, LayoutError> {
    if bytes.get(..4) != Some(MAGIC.as_slice()) {
        let (host, messaging) = crate::messaging::driver::split(bytes).ok_or(LayoutError::Truncated)?;
        return Ok(ShardCheckpoint { host, messaging, media: None });
    }
    let header = bytes.get(..HEADER_BYTES).ok_or(LayoutError::Truncated)?;
    let u16_at = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]);
    let u64_in = |bytes: &[u8], at: usize| {
        let raw = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
        usize::try_from(raw).map_err(|_| LayoutError::Truncated)
    };
    let (found, sections) = (u16_at(4), u16_at(6));
    let (host_bytes, messaging_bytes, media_bytes, sections_start, sections_end) = match (found, sections) {
        (2, SECTIONS) => (u64_in(header, 8)?, u64_in(header, 16)?, u64_in(header, 24)?, HEADER_BYTES, bytes.len()),
        (VERSION, SECTIONS) => {
            let trailer_at = bytes.len().checked_sub(TRAILER_BYTES).filter(|&at| at >= HEADER_BYTES);
            let trailer = &bytes[trailer_at.ok_or(LayoutError::Truncated)?..];
            (u64_in(header, 8)?, u64_in(trailer, 0)?, u64_in(trailer, 8)?, HEADER_BYTES, bytes.len() - TRAILER_BYTES)
        }
        _ => return Err(LayoutError::Version { found, sections }),
    };
    let mut rest = &bytes[sections_start..sections_end];
    let mut take = |length: usize| {
        if rest.len() < length {
            return Err(LayoutError::Truncated);
        }
        let (section, tail) = rest.split_at(length);
        rest = tail;
        Ok(section)
    };
    let host = take(host_bytes)?;
    if found == VERSION {
        take(host_bytes.next_multiple_of(MESSAGING_ALIGN) - host_bytes)?;
    }
    let messaging = take(messaging_bytes)?;
    let media = take(media_bytes)?;
    if found == VERSION && !rest.is_empty() {
        return Err(LayoutError::Lengths);
    }
    Ok(ShardCheckpoint { host, messaging, media: Some(media) })
}

/// The media section: the newest media record the snapshot holds, then the snapshot.
pub fn encode_media_section(covers: Lsn, snapshot: &MediaSnapshot) -> Result<Vec<u8>, JournalError> {
    let archived = snapshot.encode()?;
    let mut bytes = Vec::with_capacity(8 + archived.len());
    bytes.extend_from_slice(&covers.0.to_le_bytes());
    bytes.extend_from_slice(&archived);
    Ok(bytes)
}

/// Reads a media section back, validating the snapshot (it is copied to aligned memory).
pub fn decode_media_section(bytes: &[u8]) -> Result<(Lsn, MediaSnapshot), RecordError> {
    let covers = bytes.get(..8).and_then(|raw| raw.try_into().ok()).map(u64::from_le_bytes);
    let covers = covers.ok_or(RecordError::Invalid)?;
    Ok((Lsn(covers), MediaSnapshot::decode(&bytes[8..])?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the version 3 layout round-trips with its messaging section aligned whatever
    /// the host's length, a version 2 and a legacy state still split (the legacy one with no
    /// media section), and truncated, padded or unknown states are refused.
    #[test]
    fn sections_round_trip_and_older_layouts_still_read() {
        for host_bytes in [0, 1, 15, 16, 17, 100] {
            let host = vec![b'h'; host_bytes];
            let messaging = ChunkedBytes::from(b"messaging snapshot".to_vec());
            let bytes = compose(&host, messaging, b"media".to_vec()).to_vec();
            let sections = split(&bytes).expect("splits");
            assert_eq!(
                sections,
                ShardCheckpoint { host: &host, messaging: b"messaging snapshot", media: Some(b"media") }
            );
            let messaging_at = sections.messaging.as_ptr() as usize - bytes.as_ptr() as usize;
            assert_eq!(messaging_at % MESSAGING_ALIGN, 0, "host of {host_bytes}");
            for cut in 0..bytes.len() {
                assert!(split(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            let mut longer = bytes.clone();
            longer.insert(bytes.len() - TRAILER_BYTES, 0);
            assert_eq!(split(&longer), Err(LayoutError::Lengths));
        }
        let bytes = compose(b"host", ChunkedBytes::new(), Vec::new()).to_vec();
        let mut other_version = bytes.clone();
        other_version[4] = 4;
        assert_eq!(split(&other_version), Err(LayoutError::Version { found: 4, sections: 3 }));

        let mut version_2 = b"FGSC".to_vec();
        version_2.extend_from_slice(&2u16.to_le_bytes());
        version_2.extend_from_slice(&3u16.to_le_bytes());
        for length in [4u64, 9, 5] {
            version_2.extend_from_slice(&length.to_le_bytes());
        }
        version_2.extend_from_slice(b"hostmessagingmedia");
        let sections = split(&version_2).expect("version 2 splits");
        assert_eq!(sections, ShardCheckpoint { host: b"host", messaging: b"messaging", media: Some(b"media") });
        assert_eq!(split(&version_2[..version_2.len() - 1]), Err(LayoutError::Truncated));

        let mut legacy = (4u64).to_le_bytes().to_vec();
        legacy.extend_from_slice(b"hostFGMSNAP3...");
        let sections = split(&legacy).expect("legacy splits");
        assert_eq!(sections, ShardCheckpoint { host: b"host", messaging: b"FGMSNAP3...", media: None });
    }

    /// Proves the media section round-trips and a damaged one is refused.
    #[test]
    fn media_section_round_trips() {
        let snapshot = MediaSnapshot { version: ferrogram_mediastore::records::SNAPSHOT_VERSION, ..Default::default() };
        let bytes = encode_media_section(Lsn(77), &snapshot).expect("encode");
        assert_eq!(decode_media_section(&bytes).expect("decode"), (Lsn(77), snapshot));
        assert!(decode_media_section(&bytes[..6]).is_err());
        assert!(decode_media_section(&bytes[..bytes.len() - 4]).is_err());
    }
}
