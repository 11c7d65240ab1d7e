//! rkyv payloads for log records. The log stores opaque bytes; the layers above archive their
//! records with rkyv, and read them back in place: every payload starts 8-byte aligned inside
//! its batch (and batches are block aligned in DMA buffers and in the recovery `mmap`), which
//! rkyv requires (NOTES-runtime).
//!
//! Validation is not a checksum and a checksum is not validation: records we wrote and whose
//! checksum verified may be read with [`access_trusted`]; bytes from anywhere else go through
//! [`access`].

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Portable, Serialize};

/// Why a payload could not be archived or accessed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    #[error("payload at address {address:#x} is not aligned to {align} bytes")]
    Misaligned { address: usize, align: usize },
    /// rkyv's own error; in release builds it carries no detail.
    #[error("rkyv: {0}")]
    Rkyv(rancor::Error),
}

/// Archives `value` into a new aligned payload.
pub fn to_payload<T>(value: &T) -> Result<AlignedVec, ArchiveError>
where
    T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    rkyv::to_bytes::<rancor::Error>(value).map_err(ArchiveError::Rkyv)
}

/// Validates `payload` as an archived `T` and returns a reference into it.
pub fn access<T>(payload: &[u8]) -> Result<&T, ArchiveError>
where
    T: Portable + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    check_alignment::<T>(payload)?;
    rkyv::access::<T, rancor::Error>(payload).map_err(ArchiveError::Rkyv)
}

/// Reads `payload` as an archived `T` without validating it.
///
/// # Safety
/// `payload` must be exactly the bytes this program archived as a `T` (with the same type
/// definition), as guaranteed for a record whose checksum verified and that was written by
/// this version of the layer that owns the record kind.
pub unsafe fn access_trusted<T: Portable>(payload: &[u8]) -> &T {
    assert!(check_alignment::<T>(payload).is_ok(), "trusted payloads are aligned by construction");
    // SAFETY: the caller guarantees the bytes are a valid archived `T`.
    unsafe { rkyv::access_unchecked::<T>(payload) }
}

fn check_alignment<T>(payload: &[u8]) -> Result<(), ArchiveError> {
    let align = std::mem::align_of::<T>().max(crate::wal::format::RECORD_ALIGN);
    let address = payload.as_ptr() as usize;
    if !address.is_multiple_of(align) {
        return Err(ArchiveError::Misaligned { address, align });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(rkyv::Archive, rkyv::Serialize, Debug, PartialEq)]
    struct Sample {
        id: u64,
        text: String,
        tags: Vec<u32>,
    }

    fn sample() -> Sample {
        Sample { id: 42, text: "hello, log".into(), tags: vec![1, 2, 3] }
    }

    /// Proves a payload round-trips through validated and trusted access, and that a
    /// misaligned slice is refused rather than read.
    #[test]
    fn round_trip_and_alignment() {
        let payload = to_payload(&sample()).expect("archive");
        let archived = access::<ArchivedSample>(&payload).expect("validated access");
        assert_eq!((archived.id.to_native(), archived.text.as_str(), archived.tags.len()), (42, "hello, log", 3));
        // SAFETY: `payload` was archived from a `Sample` just above.
        let trusted = unsafe { access_trusted::<ArchivedSample>(&payload) };
        assert_eq!(trusted.tags[2].to_native(), 3);
        let mut shifted = AlignedVec::<16>::new();
        shifted.extend_from_slice(&[0u8; 1]);
        shifted.extend_from_slice(&payload);
        assert!(matches!(access::<ArchivedSample>(&shifted[1..]), Err(ArchiveError::Misaligned { .. })));
    }

    /// Proves validated access never panics on damaged bytes: every single-byte corruption
    /// either fails validation or yields a value (validation is not a checksum).
    #[test]
    fn damaged_payloads_do_not_panic() {
        let payload = to_payload(&sample()).expect("archive");
        let mut rejected = 0;
        for index in 0..payload.len() {
            let mut damaged = AlignedVec::<16>::new();
            damaged.extend_from_slice(&payload);
            damaged[index] ^= 0xFF;
            if access::<ArchivedSample>(&damaged).is_err() {
                rejected += 1;
            }
        }
        assert!(rejected > 0, "some corruptions must fail validation");
    }
}
