//! Encoding messages into frames and decoding validated frame bodies back into messages.
//!
//! Encoding archives a message straight into the frame being built (no intermediate archive
//! buffer to copy from), so a 1 MiB `FileBytes` answer costs one copy of its bytes.
//!
//! Decoding validates the archive with bytecheck before deserializing, so a hostile payload
//! yields a [`DecodeError`], never a panic or an out-of-bounds read. rkyv checks alignment
//! against real addresses; an archive that already sits at a multiple of [`ARCHIVE_ALIGN`]
//! (as one does at offset 8 of a frame body the allocator handed out) is validated where it
//! lies, and any other is first copied into an aligned buffer.

use std::mem::align_of;

use rkyv::api::high::to_bytes_in;
use rkyv::rancor;
use rkyv::ser::{Positional, Writer};
use rkyv::util::AlignedVec;

use crate::frame::{FrameType, PING_BYTES_MAX};
use crate::limits::{FRAME_HEADER_BYTES, FRAME_MAX, REQ_ID_BYTES};
use crate::protocol::{
    ArchivedErrorBody, ArchivedHello, ArchivedOutcome, ArchivedRequest, ArchivedUpdates, ArchivedWelcome, ErrorBody,
    Hello, Outcome, Request, Response, Updates, Welcome,
};

/// The largest alignment of anything archived on the wire (u64s; there is no u128). An
/// archive starting at a multiple of it is aligned for every object inside it.
pub const ARCHIVE_ALIGN: usize = 8;

const _: () = {
    assert!(align_of::<ArchivedHello>() <= ARCHIVE_ALIGN);
    assert!(align_of::<ArchivedWelcome>() <= ARCHIVE_ALIGN);
    assert!(align_of::<ArchivedRequest>() <= ARCHIVE_ALIGN);
    assert!(align_of::<ArchivedOutcome>() <= ARCHIVE_ALIGN);
    assert!(align_of::<ArchivedUpdates>() <= ARCHIVE_ALIGN);
    assert!(align_of::<ArchivedErrorBody>() <= ARCHIVE_ALIGN);
    // Vector elements sit out of line; the widest of them is a message or a live event.
    assert!(align_of::<crate::protocol::ArchivedMessage>() <= ARCHIVE_ALIGN);
    assert!(align_of::<crate::protocol::ArchivedLiveEvent>() <= ARCHIVE_ALIGN);
};

/// A message too large for one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the encoded {what} takes {bytes} bytes, more than a frame's {limit}")]
pub struct EncodeError {
    pub what: &'static str,
    pub bytes: usize,
    pub limit: usize,
}

/// A frame body that is not a valid message of the expected type.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("the {what} body is {bytes} bytes, too short for its req_id")]
    MissingReqId { what: &'static str, bytes: usize },
    #[error("the {what} payload is not a valid archive")]
    Invalid { what: &'static str },
    #[error("a ping of {bytes} bytes is longer than {PING_BYTES_MAX}")]
    PingTooLong { bytes: usize },
}

/// rkyv's writer over the end of a frame under construction: positions count from the
/// archive's first byte, which is what archive alignment is relative to.
struct FrameWriter<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
}

impl Positional for FrameWriter<'_> {
    fn pos(&self) -> usize {
        self.out.len() - self.start
    }
}

impl<E> Writer<E> for FrameWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.out.extend_from_slice(bytes);
        Ok(())
    }
}

macro_rules! archive_codec {
    ($encode:ident, $decode:ident, $type:ty, $what:literal) => {
        /// Archives the value at the end of `out`.
        fn $encode(out: &mut Vec<u8>, value: &$type) {
            let start = out.len();
            if let Err(error) = to_bytes_in::<_, rancor::Error>(value, FrameWriter { out, start }) {
                // Serializing owned data into a growable buffer fails only on allocation.
                panic!(concat!("archiving a ", $what, " failed: {}"), error);
            }
        }

        /// Validates and deserializes an archive of this type.
        pub fn $decode(bytes: &[u8]) -> Result<$type, DecodeError> {
            let decoded = if (bytes.as_ptr() as usize).is_multiple_of(ARCHIVE_ALIGN) {
                rkyv::from_bytes::<$type, rancor::Error>(bytes)
            } else {
                rkyv::from_bytes::<$type, rancor::Error>(&aligned_copy(bytes))
            };
            decoded.map_err(|_| DecodeError::Invalid { what: $what })
        }
    };
}

archive_codec!(archive_hello, decode_hello, Hello, "hello");
archive_codec!(archive_welcome, decode_welcome, Welcome, "welcome");
archive_codec!(archive_request, decode_request_payload, Request, "request");
archive_codec!(archive_outcome, decode_outcome_payload, Outcome, "response");
archive_codec!(archive_updates, decode_updates, Updates, "updates");
archive_codec!(archive_error, decode_error, ErrorBody, "error");

pub fn encode_hello(out: &mut Vec<u8>, hello: &Hello) -> Result<(), EncodeError> {
    put_frame(out, FrameType::Hello, None, "hello", 0, |out| archive_hello(out, hello))
}

pub fn encode_welcome(out: &mut Vec<u8>, welcome: &Welcome) -> Result<(), EncodeError> {
    put_frame(out, FrameType::Welcome, None, "welcome", 0, |out| archive_welcome(out, welcome))
}

pub fn encode_request(out: &mut Vec<u8>, req_id: u64, request: &Request) -> Result<(), EncodeError> {
    let bytes = match request {
        Request::UploadPart { bytes, .. } => bytes.len(),
        _ => 0,
    };
    put_frame(out, FrameType::Request, Some(req_id), "request", bytes, |out| archive_request(out, request))
}

pub fn encode_response(out: &mut Vec<u8>, req_id: u64, outcome: &Outcome) -> Result<(), EncodeError> {
    let bytes = match outcome {
        Outcome::Ok(Response::FileBytes { bytes }) => bytes.len(),
        _ => 0,
    };
    put_frame(out, FrameType::Response, Some(req_id), "response", bytes, |out| archive_outcome(out, outcome))
}

pub fn encode_updates(out: &mut Vec<u8>, updates: &Updates) -> Result<(), EncodeError> {
    put_frame(out, FrameType::Updates, None, "updates", 0, |out| archive_updates(out, updates))
}

pub fn encode_error(out: &mut Vec<u8>, error: &ErrorBody) -> Result<(), EncodeError> {
    put_frame(out, FrameType::Error, None, "error", 0, |out| archive_error(out, error))
}

/// A `Ping` or `Pong` frame carrying `payload` (at most 64 bytes).
pub fn encode_ping(out: &mut Vec<u8>, frame_type: FrameType, payload: &[u8]) -> Result<(), EncodeError> {
    assert!(matches!(frame_type, FrameType::Ping | FrameType::Pong), "encode_ping takes Ping or Pong");
    if payload.len() > PING_BYTES_MAX {
        return Err(EncodeError { what: "ping", bytes: payload.len(), limit: PING_BYTES_MAX });
    }
    put_frame(out, frame_type, None, "ping", payload.len(), |out| out.extend_from_slice(payload))
}

/// Splits a request or response body into its `req_id` and archive.
pub fn split_req_id<'a>(what: &'static str, body: &'a [u8]) -> Result<(u64, &'a [u8]), DecodeError> {
    if body.len() < REQ_ID_BYTES {
        return Err(DecodeError::MissingReqId { what, bytes: body.len() });
    }
    let (id, rest) = body.split_at(REQ_ID_BYTES);
    let mut req_id = [0; REQ_ID_BYTES];
    req_id.copy_from_slice(id);
    Ok((u64::from_le_bytes(req_id), rest))
}

/// Decodes a `Request` frame body: the `req_id`, and the request or why it is invalid (the
/// `req_id` survives a bad payload, so the error can answer the request).
pub fn decode_request(body: &[u8]) -> Result<(u64, Result<Request, DecodeError>), DecodeError> {
    let (req_id, archive) = split_req_id("request", body)?;
    Ok((req_id, decode_request_payload(archive)))
}

/// Decodes a `Response` frame body.
pub fn decode_response(body: &[u8]) -> Result<(u64, Outcome), DecodeError> {
    let (req_id, archive) = split_req_id("response", body)?;
    Ok((req_id, decode_outcome_payload(archive)?))
}

/// Appends a frame to `out`: the header, the `req_id` if any, then what `payload` writes.
/// `bulk_bytes` is the size of a large payload known in advance (part or file bytes), so the
/// frame is allocated once instead of grown by doubling. A frame over `FRAME_MAX` is taken
/// back out and refused.
fn put_frame(
    out: &mut Vec<u8>,
    frame_type: FrameType,
    req_id: Option<u64>,
    what: &'static str,
    bulk_bytes: usize,
    payload: impl FnOnce(&mut Vec<u8>),
) -> Result<(), EncodeError> {
    const ARCHIVE_OVERHEAD_BYTES: usize = 256;
    let frame_start = out.len();
    out.reserve(FRAME_HEADER_BYTES + REQ_ID_BYTES + bulk_bytes + ARCHIVE_OVERHEAD_BYTES);
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    if let Some(req_id) = req_id {
        out.extend_from_slice(&req_id.to_le_bytes());
    }
    payload(out);
    // The frame length counts the type byte and the body.
    let length = out.len() - frame_start - FRAME_HEADER_BYTES + 1;
    if length > FRAME_MAX {
        out.truncate(frame_start);
        return Err(EncodeError { what, bytes: length, limit: FRAME_MAX });
    }
    out[frame_start..frame_start + 4].copy_from_slice(&(length as u32).to_le_bytes());
    out[frame_start + 4] = frame_type as u8;
    Ok(())
}

fn aligned_copy(bytes: &[u8]) -> AlignedVec {
    let mut aligned = AlignedVec::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    aligned
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameHeader;
    use crate::protocol::*;

    fn body_of(frame: &[u8]) -> (FrameType, &[u8]) {
        let header = FrameHeader::parse(frame[..5].try_into().unwrap(), FRAME_MAX).unwrap();
        assert_eq!(frame.len(), 5 + header.body_bytes, "the length prefix covers the frame exactly");
        (header.frame_type.unwrap(), &frame[5..])
    }

    // Every frame kind round-trips through encode and decode.
    #[test]
    fn frames_round_trip() {
        let mut out = Vec::new();
        let request = Request::SendMessage {
            chat: ChatId(7 << 12 | 5),
            random_id: 42,
            text: "hello, world".into(),
            reply_to: Some(MessageId(3)),
        };
        encode_request(&mut out, 99, &request).unwrap();
        let (frame_type, body) = body_of(&out);
        assert_eq!(frame_type, FrameType::Request);
        let (req_id, decoded) = decode_request(body).unwrap();
        assert_eq!((req_id, decoded.unwrap()), (99, request));

        out.clear();
        let outcome = Outcome::Err(ErrorBody::flood_wait(7));
        encode_response(&mut out, 5, &outcome).unwrap();
        let (_, body) = body_of(&out);
        assert_eq!(decode_response(body).unwrap(), (5, outcome));

        out.clear();
        let hello = Hello { protocol_version: 1, client: "test".into() };
        encode_hello(&mut out, &hello).unwrap();
        assert_eq!(decode_hello(body_of(&out).1).unwrap(), hello);

        out.clear();
        let updates =
            Updates { events: vec![LiveEvent::Resync, LiveEvent::Typing { chat: ChatId(1), user: UserId(2) }] };
        encode_updates(&mut out, &updates).unwrap();
        assert_eq!(decode_updates(body_of(&out).1).unwrap(), updates);
    }

    // A damaged or foreign payload is refused with an error, and the req_id still comes back so
    // the server can answer the request.
    #[test]
    fn bad_payloads_are_refused_without_panicking() {
        let mut out = Vec::new();
        encode_request(&mut out, 7, &Request::GetState).unwrap();
        let body = out[5..].to_vec();
        let (req_id, decoded) = decode_request(&body[..body.len() - 1]).unwrap();
        assert_eq!(req_id, 7);
        assert!(decoded.is_err(), "a truncated archive is refused");
        assert!(matches!(decode_request(&body[..3]), Err(DecodeError::MissingReqId { .. })));

        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for length in 0..512 {
            let garbage: Vec<u8> = (0..length)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            // Any outcome but a panic is fine; most of these are errors.
            let _ = decode_request(&garbage);
            let _ = decode_updates(&garbage);
            let _ = decode_hello(&garbage);
        }
    }

    // An archive decodes wherever it lies: in place at an address aligned for it, through an
    // aligned copy at any other. Validation checks real addresses, so a wrong decision here
    // would refuse good archives at some offsets.
    #[test]
    fn archives_decode_at_any_address() {
        let request = Request::UploadPart { upload_id: UploadId(9), part: 3, bytes: vec![7; 5000] };
        let mut frame = Vec::new();
        encode_request(&mut frame, 1, &request).unwrap();
        let archive = &frame[crate::limits::FRAME_HEADER_BYTES + REQ_ID_BYTES..];
        let mut buffer = AlignedVec::<16>::with_capacity(archive.len() + 16);
        for offset in 0..16 {
            buffer.clear();
            buffer.extend_from_slice(&[0; 16][..offset]);
            buffer.extend_from_slice(archive);
            assert_eq!(decode_request_payload(&buffer[offset..]), Ok(request.clone()), "offset {offset}");
        }
    }

    // A frame is archived in place: its length prefix covers exactly the bytes written, and a
    // frame appended after others leaves them alone.
    #[test]
    fn frames_append_to_what_is_there() {
        let mut out = b"earlier".to_vec();
        let outcome = Outcome::Ok(Response::FileBytes { bytes: vec![1; 3000] });
        encode_response(&mut out, 4, &outcome).unwrap();
        assert_eq!(&out[..7], b"earlier");
        let (frame_type, body) = body_of(&out[7..]);
        assert_eq!(frame_type, FrameType::Response);
        assert_eq!(decode_response(body).unwrap(), (4, outcome));
    }

    // An oversized message is refused at encode time instead of producing an unreadable frame.
    #[test]
    fn oversized_messages_are_refused() {
        let request =
            Request::SendMessage { chat: ChatId(1), random_id: 1, text: "x".repeat(FRAME_MAX), reply_to: None };
        let mut out = b"kept".to_vec();
        let error = encode_request(&mut out, 1, &request).unwrap_err();
        assert!(error.bytes > FRAME_MAX);
        assert_eq!(out, b"kept", "the refused frame is taken back out");
    }
}
