//! The layout of a shard's checkpoint state: the host's bytes, the messaging snapshot and the
//! media section, and the media section itself.
//!
//! ```text
//! version 2 = magic "FGSC" · version u16 (2) · sections u16 (3)
//!             · host_bytes u64 · messaging_bytes u64 · media_bytes u64
//!             · host · messaging · media
//! media     = covers_lsn u64 · MediaSnapshot (rkyv, validated when read)
//! legacy    = host_bytes u64 · host · messaging          (before media; no media section)
//! ```
//!
//! A legacy state starts with its host length, which is at most the state's own length; the
//! version 2 magic read as that length is about 8 × 10^14 bytes, so the two never mix up.
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
const VERSION: u16 = 2;
const SECTIONS: u16 = 3;
const HEADER_BYTES: usize = 4 + 2 + 2 + 8 * SECTIONS as usize;

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
    #[error("checkpoint state version {found} with {sections} sections is not one this engine reads")]
    Version { found: u16, sections: u16 },
}

/// Lays out a version 2 checkpoint state.
/// The messaging and media sections are moved in, not copied: the messaging one may be
/// gigabytes.
pub fn compose(host: &[u8], messaging: ChunkedBytes, media: Vec<u8>) -> ChunkedBytes {
    let mut head = Vec::with_capacity(HEADER_BYTES + host.len());
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&VERSION.to_le_bytes());
    head.extend_from_slice(&SECTIONS.to_le_bytes());
    for length in [host.len(), messaging.len(), media.len()] {
        head.extend_from_slice(&(length as u64).to_le_bytes());
    }
    head.extend_from_slice(host);
    let mut bytes = ChunkedBytes::from(head);
    bytes.append(messaging);
    bytes.push_vec(media);
    bytes
}

/// Splits checkpoint state of either layout into its sections.
pub fn split(bytes: &[u8]) -> Result<ShardCheckpoint<'_>, LayoutError> {
    if bytes.get(..4) != Some(MAGIC.as_slice()) {
        let (host, messaging) = crate::messaging::driver::split(bytes).ok_or(LayoutError::Truncated)?;
        return Ok(ShardCheckpoint { host, messaging, media: None });
    }
    let header = bytes.get(..HEADER_BYTES).ok_or(LayoutError::Truncated)?;
    let u16_at = |at: usize| u16::from_le_bytes([header[at], header[at + 1]]);
    let (found, sections) = (u16_at(4), u16_at(6));
    if found != VERSION || sections != SECTIONS {
        return Err(LayoutError::Version { found, sections });
    }
    let mut lengths = [0usize; SECTIONS as usize];
    for (index, length) in lengths.iter_mut().enumerate() {
        let at = 8 + 8 * index;
        let raw = u64::from_le_bytes(header[at..at + 8].try_into().map_err(|_| LayoutError::Truncated)?);
        *length = usize::try_from(raw).map_err(|_| LayoutError::Truncated)?;
    }
    let mut rest = &bytes[HEADER_BYTES..];
    let mut take = |length: usize| {
        if rest.len() < length {
            return Err(LayoutError::Truncated);
        }
        let (section, tail) = rest.split_at(length);
        rest = tail;
        Ok(section)
    };
    let host = take(lengths[0])?;
    let messaging = take(lengths[1])?;
    let media = take(lengths[2])?;
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

    /// Proves the version 2 layout round-trips, a legacy state still splits (with no media
    /// section), and truncated or unknown states are refused.
    #[test]
    fn sections_round_trip_and_legacy_still_reads() {
        let messaging = ChunkedBytes::from(b"messaging snapshot".to_vec());
        let bytes = compose(b"host", messaging, b"media".to_vec()).to_vec();
        let sections = split(&bytes).expect("splits");
        assert_eq!(
            sections,
            ShardCheckpoint { host: b"host", messaging: b"messaging snapshot", media: Some(b"media") }
        );
        for cut in 0..bytes.len() {
            assert!(split(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut other_version = bytes.clone();
        other_version[4] = 3;
        assert_eq!(split(&other_version), Err(LayoutError::Version { found: 3, sections: 3 }));

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
