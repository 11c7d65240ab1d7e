//! Framing: `u32` little-endian length of what follows, a `u8` frame type, then the body.
//!
//! The length is checked against [`FRAME_MAX`] before anything is allocated for the body.
//! Request and response bodies start with the 8-byte little-endian `req_id`, then the rkyv
//! archive; the other bodies are an rkyv archive (or raw bytes for ping and pong).

use crate::limits::{FRAME_HEADER_BYTES, FRAME_MAX};

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Client → server, first frame: [`crate::Hello`].
    Hello = 1,
    /// Server → client answer to `Hello`: [`crate::Welcome`].
    Welcome = 2,
    /// Client → server: `req_id` + [`crate::Request`].
    Request = 3,
    /// Server → client: `req_id` + [`crate::Outcome`].
    Response = 4,
    /// Server → client, unsolicited: [`crate::Updates`].
    Updates = 5,
    /// Server → client, not tied to a request: [`crate::ErrorBody`]. When the stream can no
    /// longer be trusted the server closes the connection after it.
    Error = 6,
    /// Either side: up to 64 raw bytes, answered by a `Pong` carrying the same bytes.
    Ping = 7,
    Pong = 8,
}

/// The largest ping payload.
pub const PING_BYTES_MAX: usize = 64;

impl FrameType {
    pub fn from_byte(byte: u8) -> Option<FrameType> {
        Some(match byte {
            1 => FrameType::Hello,
            2 => FrameType::Welcome,
            3 => FrameType::Request,
            4 => FrameType::Response,
            5 => FrameType::Updates,
            6 => FrameType::Error,
            7 => FrameType::Ping,
            8 => FrameType::Pong,
            _ => return None,
        })
    }
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// `None` for a type this version does not know; the body can still be skipped.
    pub frame_type: Option<FrameType>,
    /// The raw type byte, for the error message.
    pub type_byte: u8,
    /// The body's length (after the type byte).
    pub body_bytes: usize,
}

/// Why a frame header was refused. Either way the stream cannot be trusted afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("frame of {length} bytes is larger than the limit of {limit}")]
    TooLarge { length: u64, limit: usize },
    #[error("frame length 0 has no frame type")]
    Empty,
}

impl FrameHeader {
    /// Parses a header, refusing a length over `limit` (at most [`FRAME_MAX`]) before the
    /// caller allocates anything for the body.
    pub fn parse(bytes: [u8; FRAME_HEADER_BYTES], limit: usize) -> Result<FrameHeader, FrameError> {
        let length = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let limit = limit.min(FRAME_MAX);
        if length == 0 {
            return Err(FrameError::Empty);
        }
        if length > limit {
            return Err(FrameError::TooLarge { length: length as u64, limit });
        }
        Ok(FrameHeader { frame_type: FrameType::from_byte(bytes[4]), type_byte: bytes[4], body_bytes: length - 1 })
    }
}

/// Appends a frame header for a body of `body_bytes` to `out`.
pub fn put_header(out: &mut Vec<u8>, frame_type: FrameType, body_bytes: usize) {
    assert!(body_bytes < FRAME_MAX, "a frame body of {body_bytes} bytes exceeds FRAME_MAX");
    out.extend_from_slice(&((body_bytes + 1) as u32).to_le_bytes());
    out.push(frame_type as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    // A header round-trips, and lengths of zero or over the limit are refused before any
    // allocation could happen.
    #[test]
    fn headers_are_checked_before_the_body() {
        let mut out = Vec::new();
        put_header(&mut out, FrameType::Request, 100);
        let header = FrameHeader::parse(out[..5].try_into().unwrap(), FRAME_MAX).unwrap();
        assert_eq!(header.frame_type, Some(FrameType::Request));
        assert_eq!(header.body_bytes, 100);

        let huge = [0xff, 0xff, 0xff, 0xff, 3];
        assert_eq!(
            FrameHeader::parse(huge, FRAME_MAX),
            Err(FrameError::TooLarge { length: u32::MAX as u64, limit: FRAME_MAX })
        );
        assert_eq!(FrameHeader::parse([0, 0, 0, 0, 3], FRAME_MAX), Err(FrameError::Empty));
        let small_budget = FrameHeader::parse([0, 1, 0, 0, 3], 100);
        assert!(matches!(small_budget, Err(FrameError::TooLarge { length: 256, limit: 100 })));

        let unknown = FrameHeader::parse([2, 0, 0, 0, 200], FRAME_MAX).unwrap();
        assert_eq!((unknown.frame_type, unknown.type_byte, unknown.body_bytes), (None, 200, 1));
    }
}
