//! Encoding messages into frames and decoding validated frame bodies back into messages.
//!
//! Decoding copies the archive into an aligned buffer (rkyv needs 8-byte alignment) and
//! validates it with bytecheck before deserializing, so a hostile payload yields a
//! [`DecodeError`], never a panic or an out-of-bounds read.

use rkyv::rancor;
use rkyv::util::AlignedVec;

use crate::frame::{put_header, FrameType, PING_BYTES_MAX};
use crate::limits::{FRAME_MAX, REQ_ID_BYTES};
use crate::protocol::{ErrorBody, Hello, Outcome, Request, Updates, Welcome};

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

macro_rules! archive_codec {
    ($encode:ident, $decode:ident, $type:ty, $what:literal) => {
        /// Serializes the value into the archive bytes of a frame body.
        fn $encode(value: &$type) -> AlignedVec {
            match rkyv::to_bytes::<rancor::Error>(value) {
                Ok(bytes) => bytes,
                // Serializing owned data into a growable buffer fails only on allocation.
                Err(error) => panic!(concat!("archiving a ", $what, " failed: {}"), error),
            }
        }

        /// Validates and deserializes an archive of this type.
        pub fn $decode(bytes: &[u8]) -> Result<$type, DecodeError> {
            let aligned = aligned_copy(bytes);
            rkyv::from_bytes::<$type, rancor::Error>(&aligned).map_err(|_| DecodeError::Invalid { what: $what })
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
    put_frame(out, FrameType::Hello, None, &archive_hello(hello), "hello")
}

pub fn encode_welcome(out: &mut Vec<u8>, welcome: &Welcome) -> Result<(), EncodeError> {
    put_frame(out, FrameType::Welcome, None, &archive_welcome(welcome), "welcome")
}

pub fn encode_request(out: &mut Vec<u8>, req_id: u64, request: &Request) -> Result<(), EncodeError> {
    put_frame(out, FrameType::Request, Some(req_id), &archive_request(request), "request")
}

pub fn encode_response(out: &mut Vec<u8>, req_id: u64, outcome: &Outcome) -> Result<(), EncodeError> {
    put_frame(out, FrameType::Response, Some(req_id), &archive_outcome(outcome), "response")
}

pub fn encode_updates(out: &mut Vec<u8>, updates: &Updates) -> Result<(), EncodeError> {
    put_frame(out, FrameType::Updates, None, &archive_updates(updates), "updates")
}

pub fn encode_error(out: &mut Vec<u8>, error: &ErrorBody) -> Result<(), EncodeError> {
    put_frame(out, FrameType::Error, None, &archive_error(error), "error")
}

/// A `Ping` or `Pong` frame carrying `payload` (at most 64 bytes).
pub fn encode_ping(out: &mut Vec<u8>, frame_type: FrameType, payload: &[u8]) -> Result<(), EncodeError> {
    assert!(matches!(frame_type, FrameType::Ping | FrameType::Pong), "encode_ping takes Ping or Pong");
    if payload.len() > PING_BYTES_MAX {
        return Err(EncodeError { what: "ping", bytes: payload.len(), limit: PING_BYTES_MAX });
    }
    put_frame(out, frame_type, None, payload, "ping")
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

fn put_frame(
    out: &mut Vec<u8>,
    frame_type: FrameType,
    req_id: Option<u64>,
    payload: &[u8],
    what: &'static str,
) -> Result<(), EncodeError> {
    let body_bytes = req_id.map_or(0, |_| REQ_ID_BYTES) + payload.len();
    // The frame length counts the type byte too.
    if body_bytes + 1 > FRAME_MAX {
        return Err(EncodeError { what, bytes: body_bytes + 1, limit: FRAME_MAX });
    }
    out.reserve(crate::limits::FRAME_HEADER_BYTES + body_bytes);
    put_header(out, frame_type, body_bytes);
    if let Some(req_id) = req_id {
        out.extend_from_slice(&req_id.to_le_bytes());
    }
    out.extend_from_slice(payload);
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

    // An oversized message is refused at encode time instead of producing an unreadable frame.
    #[test]
    fn oversized_messages_are_refused() {
        let request =
            Request::SendMessage { chat: ChatId(1), random_id: 1, text: "x".repeat(FRAME_MAX), reply_to: None };
        let error = encode_request(&mut Vec::new(), 1, &request).unwrap_err();
        assert!(error.bytes > FRAME_MAX);
    }
}
