//! Keeps `docs/PROTOCOL.md` true. Every byte-level claim the document makes for clients in
//! other languages (frame dumps, archive sizes and field offsets, the string, vector, option
//! and enum encodings, the validation rules) is checked here against `ferrogram_net::codec`
//! and rkyv. The example frames are pasted here from the document and must also appear in it
//! verbatim; the frame type, error code and §8 layout tables are read from the document itself.
//! When the protocol changes, these tests fail until the document says the same.

use std::collections::BTreeMap;
use std::mem::{align_of, offset_of, size_of};

use ferrogram_net::codec;
use ferrogram_net::frame::{FrameHeader, FrameType, PING_BYTES_MAX};
use ferrogram_net::limits::{
    CLIENT_NAME_MAX, DEVICE_TOKEN_BYTES_MAX, DIALOGS_PAGE_MAX, DIFFERENCE_LIMIT_MAX, DOWNLOAD_ALIGN_BYTES,
    DOWNLOAD_LIMIT_BYTES_MAX, DOWNLOAD_WINDOW_BYTES, FILE_BYTES_MAX, FILE_NAME_BYTES_MAX, FRAME_HEADER_BYTES,
    FRAME_MAX, HISTORY_PAGE_MAX, IDS_PER_REQUEST_MAX, MEDIA_CAPTION_MAX, MESSAGE_TEXT_MAX, MIME_TYPE_BYTES_MAX,
    PROTOCOL_VERSION, REQ_ID_BYTES, TOKEN_BYTES, UPLOAD_PARTS_MAX, UPLOAD_PART_BYTES_MAX, UPLOAD_PART_BYTES_UNIT,
};
use ferrogram_net::*;
use rkyv::rancor;

/// The document this file keeps true.
const DOCUMENT: &str = include_str!("../../docs/PROTOCOL.md");

// The example frames of docs/PROTOCOL.md §9, byte for byte; each test also finds its constant
// in the document.

/// §9.1: `Hello { protocol_version: 1, client: "py" }`.
const HELLO_FRAME: &str = "
    0d 00 00 00 01 01 00 00 00 70 79 ff ff ff ff ff
    ff
";

/// §9.2: `Request::GetState` with `req_id` 7.
const GET_STATE_FRAME: &str = "
    39 00 00 00 03 07 00 00 00 00 00 00 00 21 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00
";

/// §9.3: `Request::SendMessage` with `req_id` 8.
const SEND_MESSAGE_FRAME: &str = "
    49 00 00 00 03 08 00 00 00 00 00 00 00 68 65 6c
    6c 6f 2c 20 66 65 72 72 6f 67 72 61 6d 18 00 00
    00 00 00 00 00 05 70 00 00 00 00 00 00 88 77 66
    55 44 33 22 11 90 00 00 00 d8 ff ff ff 01 00 00
    00 00 00 00 00 03 00 00 00 00 00 00 00
";

/// §9.4: the answer to §9.3, `Outcome::Ok(Response::Sent(..))` with `req_id` 8.
const SENT_RESPONSE_FRAME: &str = "
    79 00 00 00 04 08 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 0b 00 00 00 00 00 00 00 05 70 00
    00 00 00 00 00 04 00 00 00 00 00 00 00 00 68 e5
    cf 8b 01 00 00 09 00 00 00 00 00 00 00 01 00 00
    00 00 00 00 00 15 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00
";

/// §9.5: `Outcome::Err(FLOOD_WAIT, retry in 7 s)` with `req_id` 9.
const FLOOD_WAIT_RESPONSE_FRAME: &str = "
    99 00 00 00 04 09 00 00 00 00 00 00 00 74 6f 6f
    20 6d 61 6e 79 20 72 65 71 75 65 73 74 73 3a 20
    72 65 74 72 79 20 69 6e 20 37 20 73 00 01 00 00
    00 01 00 00 00 9f 00 00 00 d8 ff ff ff 07 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00
";

/// §9.6: `Request::RegisterDevice` with `req_id` 10.
const REGISTER_DEVICE_FRAME: &str = "
    51 00 00 00 03 0a 00 00 00 00 00 00 00 66 63 6d
    2d 72 65 67 69 73 74 72 61 74 69 6f 6e 2d 74 6f
    6b 65 6e 00 00 28 01 00 00 96 00 00 00 e4 ff ff
    ff 00 01 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00
";

/// §9.7: `Outcome::Ok(Response::NotifySettings(..))` with `req_id` 11.
const NOTIFY_SETTINGS_RESPONSE_FRAME: &str = "
    79 00 00 00 04 0b 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 16 00 00 00 00 00 00 00 80 56 1c
    d0 8b 01 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00
";

/// §9.8: `Request::UploadPart` with `req_id` 12.
const UPLOAD_PART_FRAME: &str = "
    49 00 00 00 03 0c 00 00 00 00 00 00 00 30 31 32
    33 34 35 36 37 38 39 61 62 63 64 65 66 2e 00 00
    00 00 00 00 00 ef cd ab 89 67 45 23 01 02 00 00
    00 dc ff ff ff 10 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00
";

/// §9.9: `Outcome::Ok(Response::FileBytes { .. })` with `req_id` 13.
const FILE_BYTES_RESPONSE_FRAME: &str = "
    89 00 00 00 04 0d 00 00 00 00 00 00 00 68 65 6c
    6c 6f 2c 20 66 69 6c 65 21 00 00 00 00 00 00 00
    00 00 00 00 00 1a 00 00 00 e4 ff ff ff 0c 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00
";

/// §9.10: `Request::SendMedia` with `req_id` 14.
const SEND_MEDIA_FRAME: &str = "
    89 00 00 00 03 0e 00 00 00 00 00 00 00 61 20 63
    61 74 20 69 6e 20 61 20 62 6f 78 00 00 05 70 00
    00 00 00 00 00 89 77 66 55 44 33 22 11 b4 54 00
    00 00 00 00 00 10 32 54 76 98 ba dc fe 00 00 00
    00 8e 00 00 00 cc ff ff ff 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 33 00 00
    00 bc ff ff ff 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00
";

/// §9.11: `Request::GetFile` with `req_id` 15.
const GET_FILE_FRAME: &str = "
    39 00 00 00 03 0f 00 00 00 00 00 00 00 31 00 00
    00 00 00 00 00 05 70 00 00 00 00 00 00 0c 00 00
    00 00 00 00 00 00 00 10 00 00 00 00 00 00 00 10
    00 00 00 00 00 00 00 00 00 00 00 00 00
";

/// §9.12: `Outcome::Ok(Response::Messages(..))` with one media message, `req_id` 16.
const MEDIA_MESSAGES_RESPONSE_FRAME: &str = "
    49 01 00 00 04 10 00 00 00 00 00 00 00 61 20 63
    61 74 20 69 6e 20 61 20 62 6f 78 69 6d 61 67 65
    2f 6a 70 65 67 0c 00 00 00 00 00 00 00 05 70 00
    00 00 00 00 00 03 30 00 00 00 00 00 00 00 68 e5
    cf 8b 01 00 00 89 77 66 55 44 33 22 11 8e 00 00
    00 c0 ff ff ff 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 01 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 b4 54 00 00 00 00 00 00 10 32 54
    76 98 ba dc fe 55 bc 00 00 00 00 00 00 63 61 74
    2e 6a 70 67 ff 8a 00 00 00 46 ff ff ff 00 00 00
    00 00 00 00 00 0d 00 00 00 3c ff ff ff 01 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
    00 00 00 00 00 00 00 00 00 00 00 00 00
";

/// The file of the media examples, §9.10 and §9.12.
const EXAMPLE_FILE: FileRef = FileRef { id: FileId(0x54b4), access_hash: 0xfedc_ba98_7654_3210 };

fn send_media_example() -> Request {
    Request::SendMedia(Box::new(NewMediaMessage {
        chat: ChatId(0x7005),
        random_id: 0x1122_3344_5566_7789,
        file: EXAMPLE_FILE,
        kind: MediaKind::Photo,
        caption: "a cat in a box".into(),
        reply_to: None,
    }))
}

fn media_message_example() -> Message {
    Message {
        id: MessageId(12),
        chat: ChatId(0x7005),
        sender: UserId(0x3003),
        date: UnixMs(1_700_000_000_000),
        random_id: 0x1122_3344_5566_7789,
        text: "a cat in a box".into(),
        reply_to: None,
        forwarded_from: None,
        edit_date: None,
        deleted: false,
        media: Some(MessageMedia {
            kind: MediaKind::Photo,
            file: EXAMPLE_FILE,
            size: 48_213,
            name: "cat.jpg".into(),
            mime_type: "image/jpeg".into(),
        }),
    }
}

fn send_message_example() -> Request {
    Request::SendMessage {
        chat: ChatId(0x7005),
        random_id: 0x1122_3344_5566_7788,
        text: "hello, ferrogram".into(),
        reply_to: Some(MessageId(3)),
    }
}

fn sent_example() -> Outcome {
    Outcome::Ok(Response::Sent(SentMessage {
        chat: ChatId(0x7005),
        id: MessageId(4),
        date: UnixMs(1_700_000_000_000),
        chat_pts: Pts(9),
        sender_pts: Some(Pts(21)),
        duplicate: false,
    }))
}

// The example frames.

// The document's Hello frame is exactly what the codec writes, and the server's decoder reads
// it back.
#[test]
fn hello_frame_matches_the_document() {
    let hello = Hello { protocol_version: 1, client: "py".into() };
    let mut frame = Vec::new();
    codec::encode_hello(&mut frame, &hello).unwrap();
    assert_eq!(hex(&frame), hex(&from_hex(HELLO_FRAME)));
    assert_shown_in_document(HELLO_FRAME);
    let (frame_type, body) = split_frame(&frame);
    assert_eq!(frame_type, FrameType::Hello);
    assert_eq!(codec::decode_hello(body).unwrap(), hello);
}

// The document's GetState frame is exactly what the codec writes: req_id, then a 48-byte
// archive that is only the root, tag 33 followed by zero padding.
#[test]
fn get_state_frame_matches_the_document() {
    let mut frame = Vec::new();
    codec::encode_request(&mut frame, 7, &Request::GetState).unwrap();
    assert_eq!(hex(&frame), hex(&from_hex(GET_STATE_FRAME)));
    assert_shown_in_document(GET_STATE_FRAME);
    let (frame_type, body) = split_frame(&frame);
    assert_eq!(frame_type, FrameType::Request);
    let (req_id, request) = codec::decode_request(body).unwrap();
    assert_eq!((req_id, request.unwrap()), (7, Request::GetState));
}

// The document's SendMessage frame is exactly what the codec writes, with the out-of-line text
// before the root.
#[test]
fn send_message_frame_matches_the_document() {
    let mut frame = Vec::new();
    codec::encode_request(&mut frame, 8, &send_message_example()).unwrap();
    assert_eq!(hex(&frame), hex(&from_hex(SEND_MESSAGE_FRAME)));
    assert_shown_in_document(SEND_MESSAGE_FRAME);
    let (req_id, request) = codec::decode_request(split_frame(&frame).1).unwrap();
    assert_eq!((req_id, request.unwrap()), (8, send_message_example()));
}

// The document's Sent response is exactly what the codec writes and what a client decodes.
#[test]
fn sent_response_frame_matches_the_document() {
    let mut frame = Vec::new();
    codec::encode_response(&mut frame, 8, &sent_example()).unwrap();
    assert_eq!(hex(&frame), hex(&from_hex(SENT_RESPONSE_FRAME)));
    assert_shown_in_document(SENT_RESPONSE_FRAME);
    let (frame_type, body) = split_frame(&frame);
    assert_eq!(frame_type, FrameType::Response);
    assert_eq!(codec::decode_response(body).unwrap(), (8, sent_example()));
}

// The document's FLOOD_WAIT response is exactly what the codec writes: the error code's tag is
// its numeric value and the message is an out-of-line string.
#[test]
fn flood_wait_response_frame_matches_the_document() {
    let outcome = Outcome::Err(ErrorBody::flood_wait(7));
    let mut frame = Vec::new();
    codec::encode_response(&mut frame, 9, &outcome).unwrap();
    assert_eq!(hex(&frame), hex(&from_hex(FLOOD_WAIT_RESPONSE_FRAME)));
    assert_shown_in_document(FLOOD_WAIT_RESPONSE_FRAME);
    assert_eq!(codec::decode_response(split_frame(&frame).1).unwrap(), (9, outcome));
}

// The document's RegisterDevice frame is exactly what the codec writes: the token's bytes
// out of line, then the root with the DeviceKind byte right behind the tag.
#[test]
fn register_device_frame_matches_the_document() {
    let request = Request::RegisterDevice {
        kind: DeviceKind::Fcm,
        token: "fcm-registration-token".into(),
        app_sandbox: false,
        no_muted: true,
    };
    let mut frame = Vec::new();
    codec::encode_request(&mut frame, 10, &request).unwrap();
    assert_eq!(hex(&frame), hex(&from_hex(REGISTER_DEVICE_FRAME)));
    assert_shown_in_document(REGISTER_DEVICE_FRAME);
    let (req_id, decoded) = codec::decode_request(split_frame(&frame).1).unwrap();
    assert_eq!((req_id, decoded.unwrap()), (10, request));
}

// The document's NotifySettings answer is exactly what the codec writes and what a client
// decodes.
#[test]
fn notify_settings_response_frame_matches_the_document() {
    let outcome = Outcome::Ok(Response::NotifySettings(NotifySettings {
        mute_until: UnixMs(1_700_003_600_000),
        show_previews: false,
    }));
    let mut frame = Vec::new();
    codec::encode_response(&mut frame, 11, &outcome).unwrap();
    assert_eq!(hex(&frame), hex(&from_hex(NOTIFY_SETTINGS_RESPONSE_FRAME)));
    assert_shown_in_document(NOTIFY_SETTINGS_RESPONSE_FRAME);
    assert_eq!(codec::decode_response(split_frame(&frame).1).unwrap(), (11, outcome));
}

// The document's UploadPart frame is exactly what the codec writes: the part's bytes out of
// line before the root, the upload id, the part number and the vector field.
#[test]
fn upload_part_frame_matches_the_document() {
    let request = Request::UploadPart {
        upload_id: UploadId(0x0123_4567_89ab_cdef),
        part: 2,
        bytes: b"0123456789abcdef".to_vec(),
    };
    let mut frame = Vec::new();
    codec::encode_request(&mut frame, 12, &request).unwrap();
    assert_eq!(hex(&frame), hex(&from_hex(UPLOAD_PART_FRAME)));
    assert_shown_in_document(UPLOAD_PART_FRAME);
    let (req_id, decoded) = codec::decode_request(split_frame(&frame).1).unwrap();
    assert_eq!((req_id, decoded.unwrap()), (12, request));
}

// The document's FileBytes answer is exactly what the codec writes and what a client decodes.
#[test]
fn file_bytes_response_frame_matches_the_document() {
    let outcome = Outcome::Ok(Response::FileBytes { bytes: b"hello, file!".to_vec() });
    let mut frame = Vec::new();
    codec::encode_response(&mut frame, 13, &outcome).unwrap();
    assert_eq!(hex(&frame), hex(&from_hex(FILE_BYTES_RESPONSE_FRAME)));
    assert_shown_in_document(FILE_BYTES_RESPONSE_FRAME);
    assert_eq!(codec::decode_response(split_frame(&frame).1).unwrap(), (13, outcome));
}

// The document's SendMedia frame is exactly what the codec writes: the caption's bytes, then
// the boxed NewMediaMessage, then the 48-byte root whose box points back at it.
#[test]
fn send_media_frame_matches_the_document() {
    let mut frame = Vec::new();
    codec::encode_request(&mut frame, 14, &send_media_example()).unwrap();
    assert_eq!(hex(&frame), hex(&from_hex(SEND_MEDIA_FRAME)));
    assert_shown_in_document(SEND_MEDIA_FRAME);
    let (req_id, decoded) = codec::decode_request(split_frame(&frame).1).unwrap();
    assert_eq!((req_id, decoded.unwrap()), (14, send_media_example()));
}

// The document's GetFile frame is exactly what the codec writes: a file is named by its chat
// and message, nothing out of line.
#[test]
fn get_file_frame_matches_the_document() {
    let request = Request::GetFile { chat: ChatId(0x7005), message: MessageId(12), offset: 1 << 20, limit: 1 << 20 };
    let mut frame = Vec::new();
    codec::encode_request(&mut frame, 15, &request).unwrap();
    assert_eq!(hex(&frame), hex(&from_hex(GET_FILE_FRAME)));
    assert_shown_in_document(GET_FILE_FRAME);
    let (req_id, decoded) = codec::decode_request(split_frame(&frame).1).unwrap();
    assert_eq!((req_id, decoded.unwrap()), (15, request));
}

// The document's Messages answer with a media message is exactly what the codec writes and
// what a client decodes.
#[test]
fn media_messages_response_frame_matches_the_document() {
    let outcome = Outcome::Ok(Response::Messages(vec![media_message_example()]));
    let mut frame = Vec::new();
    codec::encode_response(&mut frame, 16, &outcome).unwrap();
    assert_eq!(hex(&frame), hex(&from_hex(MEDIA_MESSAGES_RESPONSE_FRAME)));
    assert_shown_in_document(MEDIA_MESSAGES_RESPONSE_FRAME);
    assert_eq!(codec::decode_response(split_frame(&frame).1).unwrap(), (16, outcome));
}

// Framing constants.

// The frame type numbers, size limits and constants of §2, §3 and §10 are the code's.
#[test]
fn framing_constants_match_the_document() {
    let types = [
        (FrameType::Hello, 1),
        (FrameType::Welcome, 2),
        (FrameType::Request, 3),
        (FrameType::Response, 4),
        (FrameType::Updates, 5),
        (FrameType::Error, 6),
        (FrameType::Ping, 7),
        (FrameType::Pong, 8),
    ];
    for (frame_type, byte) in types {
        assert!(DOCUMENT.contains(&format!("\n| {byte} | `{frame_type:?}` |")), "§2 row of {frame_type:?}");
        assert_eq!(frame_type as u8, byte);
        assert_eq!(FrameType::from_byte(byte), Some(frame_type));
    }
    assert_eq!(FrameType::from_byte(0), None);
    assert_eq!(FrameType::from_byte(9), None);
    assert_eq!(FRAME_HEADER_BYTES, 5);
    assert_eq!(FRAME_MAX, 1_052_672);
    assert_eq!(REQ_ID_BYTES, 8);
    assert_eq!(PING_BYTES_MAX, 64);
    assert_eq!(PROTOCOL_VERSION, 1);
    assert_eq!(CLIENT_NAME_MAX, 128);
    assert_eq!(TOKEN_BYTES, 40);
    assert_eq!(DEVICE_TOKEN_BYTES_MAX, 4096);
    assert!(DOCUMENT.contains("| push device token | 1 to 4096 bytes |"), "§10 row of the device token");
    assert_eq!((UPLOAD_PART_BYTES_MAX, UPLOAD_PART_BYTES_UNIT, UPLOAD_PARTS_MAX), (524_288, 1024, 4096));
    assert_eq!(FILE_BYTES_MAX, 2 << 30);
    assert_eq!((FILE_NAME_BYTES_MAX, MIME_TYPE_BYTES_MAX), (255, 127));
    assert_eq!(MEDIA_CAPTION_MAX, 1024);
    assert_eq!((DOWNLOAD_ALIGN_BYTES, DOWNLOAD_LIMIT_BYTES_MAX, DOWNLOAD_WINDOW_BYTES), (4096, 1 << 20, 1 << 20));
    for row in [
        "| upload part | 1 byte to 512 KiB (524 288 bytes); every part but the last the same size, a multiple of 1 KiB that divides 512 KiB |",
        "| parts per upload | 4096 (part numbers 0 to 4095) |",
        "| file size | at most 2 GiB (2 147 483 648 bytes; a server may be configured lower) |",
        "| file name / MIME type | 255 / 127 bytes |",
        "| download range | offset and limit multiples of 4096, limit at most 1 MiB, inside one 1 MiB window |",
        "| media caption | 0 to 1024 characters |",
    ] {
        assert!(DOCUMENT.contains(row), "§10 row: {row}");
    }
    assert_eq!(
        (MESSAGE_TEXT_MAX, HISTORY_PAGE_MAX, DIFFERENCE_LIMIT_MAX, DIALOGS_PAGE_MAX, IDS_PER_REQUEST_MAX),
        (4096, 100, 1000, 100, 100)
    );

    // The length counts the type byte: the largest acceptable length is FRAME_MAX itself.
    let mut header = [0; FRAME_HEADER_BYTES];
    header[..4].copy_from_slice(&(FRAME_MAX as u32).to_le_bytes());
    header[4] = 3;
    assert_eq!(FrameHeader::parse(header, FRAME_MAX).unwrap().body_bytes, FRAME_MAX - 1);
    header[..4].copy_from_slice(&(FRAME_MAX as u32 + 1).to_le_bytes());
    assert!(FrameHeader::parse(header, FRAME_MAX).is_err());

    // A ping's payload is raw bytes, not an archive.
    let mut ping = Vec::new();
    codec::encode_ping(&mut ping, FrameType::Ping, b"abc").unwrap();
    assert_eq!(ping, [4, 0, 0, 0, 7, b'a', b'b', b'c']);
    assert!(codec::encode_ping(&mut Vec::new(), FrameType::Ping, &[0; 65]).is_err());
}

// The error code table of §6.1: each code's wire tag is its numeric value, and its name is the
// one the document lists.
#[test]
fn error_codes_match_the_document() {
    let table = [
        (1, "FLOOD_WAIT"),
        (2, "AUTH_REQUIRED"),
        (3, "AUTH_INVALID"),
        (4, "PERMISSION_DENIED"),
        (5, "NOT_FOUND"),
        (6, "INVALID_ARGUMENT"),
        (7, "TOO_LARGE"),
        (8, "OVERLOADED"),
        (9, "INTERNAL"),
        (10, "PHONE_CODE_INVALID"),
        (11, "CONFLICT"),
        (12, "DIFFERENCE_TOO_LONG"),
        (13, "MALFORMED"),
        (14, "UNSUPPORTED_VERSION"),
        (15, "UNAVAILABLE"),
        (16, "FILE_PARTS_MISSING"),
    ];
    assert_eq!(ErrorCode::ALL.len(), table.len());
    for (code, (value, name)) in ErrorCode::ALL.into_iter().zip(table) {
        assert_eq!(code as u16, value);
        assert_eq!(code.name(), name);
        assert!(DOCUMENT.contains(&format!("\n| {value} | `{name}` |")), "§6.1 row of {name}");
        let archive = rkyv::to_bytes::<rancor::Error>(&ErrorBody::new(code, "")).unwrap();
        // ErrorBody is 16 bytes with the code at offset 0; an empty message adds nothing.
        assert_eq!(archive.len(), 16);
        assert_eq!(u16::from(archive[0]), value, "{name} is archived as its number");
    }
}

// Sizes and offsets.

// The primitive, string, vector and option encodings of §7.2 to §7.5 have the sizes and
// alignments the document gives.
#[test]
fn primitive_layouts_match_the_document() {
    fn layout<T>() -> (usize, usize) {
        (size_of::<T>(), align_of::<T>())
    }
    assert_eq!(layout::<rkyv::Archived<u8>>(), (1, 1));
    assert_eq!(layout::<rkyv::Archived<bool>>(), (1, 1));
    assert_eq!(layout::<rkyv::Archived<u32>>(), (4, 4));
    assert_eq!(layout::<rkyv::Archived<u64>>(), (8, 8));
    assert_eq!(layout::<rkyv::Archived<UserId>>(), (8, 8));
    assert_eq!(layout::<rkyv::Archived<ChatId>>(), (8, 8));
    assert_eq!(layout::<rkyv::Archived<MessageId>>(), (8, 8));
    assert_eq!(layout::<rkyv::Archived<Pts>>(), (8, 8));
    assert_eq!(layout::<rkyv::Archived<AuthorizationId>>(), (8, 8));
    assert_eq!(layout::<rkyv::Archived<UnixMs>>(), (8, 8));
    assert_eq!(layout::<rkyv::Archived<String>>(), (8, 4));
    assert_eq!(layout::<rkyv::Archived<Vec<u8>>>(), (8, 4));
    assert_eq!(layout::<rkyv::Archived<Vec<Message>>>(), (8, 4));
    // Option<T>: a u8 tag, then T at T's alignment, the whole rounded up to it.
    assert_eq!(layout::<rkyv::Archived<Option<String>>>(), (12, 4));
    assert_eq!(layout::<rkyv::Archived<Option<MessageId>>>(), (16, 8));
    assert_eq!(layout::<rkyv::Archived<Option<DialogsOffset>>>(), (24, 8));
    assert_eq!(layout::<rkyv::Archived<Option<ForwardedFrom>>>(), (40, 8));
    assert_eq!(layout::<rkyv::Archived<Option<Message>>>(), (192, 8));
    assert_eq!(layout::<rkyv::Archived<Option<User>>>(), (56, 8));
    assert_eq!(layout::<rkyv::Archived<Option<MessageMedia>>>(), (56, 8));
    // Box<T>: one relative offset, the object out of line.
    assert_eq!(layout::<rkyv::Archived<Box<NewMediaMessage>>>(), (4, 4));
    for (name, size) in [("ForwardedFrom", 40), ("User", 56), ("MessageMedia", 56), ("Message", 192)] {
        assert!(DOCUMENT.contains(&format!("| `{name}` | {size} | 8 | 8 |")), "§7.5 row of Option<{name}>");
    }
    assert!(DOCUMENT.contains("`Box<T>` (size 4, align 4)"), "§7.4 names the box's layout");
}

/// An archived type's size, alignment and field offsets, as measured or as the document says.
#[derive(Debug, PartialEq, Eq)]
struct StructLayout {
    size: usize,
    align: usize,
    fields: Vec<(String, usize)>,
}

/// One enum variant's tag and field offsets; a tuple variant's one field is named "0".
#[derive(Debug, PartialEq, Eq)]
struct VariantLayout {
    tag: u8,
    fields: Vec<(String, usize)>,
}

macro_rules! struct_layout {
    ($archived:ident { $($field:ident),* }) => {
        (
            stringify!($archived).trim_start_matches("Archived").to_owned(),
            StructLayout {
                size: size_of::<$archived>(),
                align: align_of::<$archived>(),
                fields: vec![$((stringify!($field).to_owned(), offset_of!($archived, $field))),*],
            },
        )
    };
}

// Every struct of the §8.1 table has the size, alignment and field offsets the table gives, and
// the table lists every struct.
#[test]
fn struct_layouts_match_the_document() {
    let measured: BTreeMap<String, StructLayout> = [
        struct_layout!(ArchivedHello { protocol_version, client }),
        struct_layout!(ArchivedWelcome { version, server_time, limits }),
        struct_layout!(ArchivedLimits {
            frame_max,
            message_text_max,
            history_page_max,
            difference_limit_max,
            dialogs_page_max,
            ids_per_request_max,
            requests_in_flight_max
        }),
        struct_layout!(ArchivedUser { id, phone, first_name, last_name, username }),
        struct_layout!(ArchivedAuthorization { id, device, created, current }),
        struct_layout!(ArchivedChat {
            id,
            kind,
            title,
            members,
            pts,
            top_message,
            pinned,
            fanout_on_read,
            epoch,
            peer
        }),
        struct_layout!(ArchivedMember { user, role }),
        struct_layout!(ArchivedSentMessage { chat, id, date, chat_pts, sender_pts, duplicate }),
        struct_layout!(ArchivedForwardedFrom { chat, message, sender, date }),
        struct_layout!(ArchivedMessage {
            id,
            chat,
            sender,
            date,
            random_id,
            text,
            reply_to,
            forwarded_from,
            edit_date,
            deleted,
            media
        }),
        struct_layout!(ArchivedBoxState { pts, date, unread, epoch }),
        struct_layout!(ArchivedSequenced { pts, date, update }),
        struct_layout!(ArchivedDifference { updates, messages, state, slice }),
        struct_layout!(ArchivedChatDifference { updates, messages, pts, epoch, slice }),
        struct_layout!(ArchivedDialog {
            chat,
            top_message,
            top_date,
            read_inbox_max,
            read_outbox_max,
            unread,
            fanout_on_read
        }),
        struct_layout!(ArchivedDialogsOffset { date, chat }),
        struct_layout!(ArchivedUpdates { events }),
        struct_layout!(ArchivedErrorBody { code, message, retry_after_s }),
        struct_layout!(ArchivedPushDevice { kind, token, app_sandbox, no_muted }),
        struct_layout!(ArchivedNotifySettings { mute_until, show_previews }),
        struct_layout!(ArchivedFileRef { id, access_hash }),
        struct_layout!(ArchivedFileInfo { size, name, mime_type }),
        struct_layout!(ArchivedMessageMedia { kind, file, size, name, mime_type }),
        struct_layout!(ArchivedNewMediaMessage { chat, random_id, file, kind, caption, reply_to }),
    ]
    .into_iter()
    .collect();
    let documented = document_layouts().structs;
    for (name, layout) in &measured {
        assert_eq!(Some(layout), documented.get(name), "§8.1 row of {name}");
    }
    assert_eq!(measured.keys().collect::<Vec<_>>(), documented.keys().collect::<Vec<_>>());
}

/// The offset of `field` inside `root`, both borrowed from one archive.
fn offset_in<R, F>(root: &R, field: &F) -> usize {
    (field as *const F).cast::<u8>() as usize - (root as *const R).cast::<u8>() as usize
}

/// Archives a sample of one variant and measures its tag and field offsets in the archive.
macro_rules! variant_layout {
    ($enum:ident, $archived:ident, $variant:ident()) => {{
        let bytes = rkyv::to_bytes::<rancor::Error>(&$enum::$variant(sample())).unwrap();
        let root = rkyv::access::<$archived, rancor::Error>(&bytes).unwrap();
        let $archived::$variant(inner) = root else { panic!("{} archived as another variant", stringify!($variant)) };
        let tag = bytes[bytes.len() - size_of::<$archived>()];
        let layout = VariantLayout { tag, fields: vec![("0".to_owned(), offset_in(root, inner))] };
        ((stringify!($enum).to_owned(), stringify!($variant).to_owned()), layout)
    }};
    ($enum:ident, $archived:ident, $variant:ident { $($field:ident),* }) => {{
        let bytes = rkyv::to_bytes::<rancor::Error>(&$enum::$variant { $($field: sample()),* }).unwrap();
        let root = rkyv::access::<$archived, rancor::Error>(&bytes).unwrap();
        let $archived::$variant { $($field),* } = root else {
            panic!("{} archived as another variant", stringify!($variant))
        };
        let tag = bytes[bytes.len() - size_of::<$archived>()];
        let layout = VariantLayout { tag, fields: vec![$((stringify!($field).to_owned(), offset_in(root, $field))),*] };
        ((stringify!($enum).to_owned(), stringify!($variant).to_owned()), layout)
    }};
}

// Every variant of the enum tables of §8.2 to §8.6 has the tag and field offsets the tables
// give, the tables list every variant, and each enum has the size and alignment its heading
// gives.
#[test]
fn enum_layouts_match_the_document() {
    let measured: BTreeMap<(String, String), VariantLayout> = [
        variant_layout!(MemberChange, ArchivedMemberChange, Joined {}),
        variant_layout!(MemberChange, ArchivedMemberChange, Added { by }),
        variant_layout!(MemberChange, ArchivedMemberChange, Left {}),
        variant_layout!(MemberChange, ArchivedMemberChange, Removed { by }),
        variant_layout!(MemberChange, ArchivedMemberChange, Promoted { by }),
        variant_layout!(Update, ArchivedUpdate, NewMessage { chat, id, sender, date }),
        variant_layout!(Update, ArchivedUpdate, EditMessage { chat, id, edit_date }),
        variant_layout!(Update, ArchivedUpdate, DeleteMessages { chat, ids }),
        variant_layout!(Update, ArchivedUpdate, ReadInbox { chat, max_id, unread }),
        variant_layout!(Update, ArchivedUpdate, ReadOutbox { chat, max_id }),
        variant_layout!(Update, ArchivedUpdate, PinMessage { chat, id }),
        variant_layout!(Update, ArchivedUpdate, ChatMember { chat, user, change, fanout_on_read }),
        variant_layout!(Update, ArchivedUpdate, ChatSyncMode { chat, fanout_on_read }),
        variant_layout!(LiveEvent, ArchivedLiveEvent, Box { update, message }),
        variant_layout!(LiveEvent, ArchivedLiveEvent, Chat { chat, update, message }),
        variant_layout!(LiveEvent, ArchivedLiveEvent, Typing { chat, user }),
        variant_layout!(LiveEvent, ArchivedLiveEvent, Resync {}),
        variant_layout!(LiveEvent, ArchivedLiveEvent, Revoked {}),
        variant_layout!(LiveEvent, ArchivedLiveEvent, Presence { user, online, last_seen }),
        variant_layout!(Request, ArchivedRequest, SendCode { phone }),
        variant_layout!(Request, ArchivedRequest, SignIn { phone, code }),
        variant_layout!(Request, ArchivedRequest, SignUp { phone, code, first_name, last_name }),
        variant_layout!(Request, ArchivedRequest, Authenticate { token }),
        variant_layout!(Request, ArchivedRequest, LogOut {}),
        variant_layout!(Request, ArchivedRequest, GetAuthorizations {}),
        variant_layout!(Request, ArchivedRequest, RevokeAuthorization { id }),
        variant_layout!(Request, ArchivedRequest, GetSelf {}),
        variant_layout!(Request, ArchivedRequest, GetUsers { ids }),
        variant_layout!(Request, ArchivedRequest, SetName { first_name, last_name }),
        variant_layout!(Request, ArchivedRequest, SetUsername { username }),
        variant_layout!(Request, ArchivedRequest, ResolveUsername { username }),
        variant_layout!(Request, ArchivedRequest, ResolvePhone { phone }),
        variant_layout!(Request, ArchivedRequest, SetBlocked { peer, blocked }),
        variant_layout!(Request, ArchivedRequest, OpenPrivate { peer }),
        variant_layout!(Request, ArchivedRequest, CreateGroup { title, members }),
        variant_layout!(Request, ArchivedRequest, CreateChannel { title }),
        variant_layout!(Request, ArchivedRequest, JoinChat { chat }),
        variant_layout!(Request, ArchivedRequest, LeaveChat { chat }),
        variant_layout!(Request, ArchivedRequest, AddMember { chat, user }),
        variant_layout!(Request, ArchivedRequest, RemoveMember { chat, user }),
        variant_layout!(Request, ArchivedRequest, PromoteMember { chat, user }),
        variant_layout!(Request, ArchivedRequest, GetChat { chat }),
        variant_layout!(Request, ArchivedRequest, GetMembers { chat, after, limit }),
        variant_layout!(Request, ArchivedRequest, SendMessage { chat, random_id, text, reply_to }),
        variant_layout!(Request, ArchivedRequest, ForwardMessages { from_chat, ids, to_chat, random_id }),
        variant_layout!(Request, ArchivedRequest, EditMessage { chat, id, text }),
        variant_layout!(Request, ArchivedRequest, DeleteMessages { chat, ids, for_everyone }),
        variant_layout!(Request, ArchivedRequest, PinMessage { chat, id }),
        variant_layout!(Request, ArchivedRequest, GetHistory { chat, offset_id, limit, min_id, max_id }),
        variant_layout!(Request, ArchivedRequest, GetMessages { chat, ids }),
        variant_layout!(Request, ArchivedRequest, ReadHistory { chat, max_id }),
        variant_layout!(Request, ArchivedRequest, SetTyping { chat }),
        variant_layout!(Request, ArchivedRequest, GetState {}),
        variant_layout!(Request, ArchivedRequest, GetDifference { pts, limit }),
        variant_layout!(Request, ArchivedRequest, GetChatDifference { chat, pts, limit }),
        variant_layout!(Request, ArchivedRequest, GetDialogs { offset, limit }),
        variant_layout!(Request, ArchivedRequest, SubscribeChat { chat }),
        variant_layout!(Request, ArchivedRequest, UnsubscribeChat { chat }),
        variant_layout!(Request, ArchivedRequest, GetPresence { user }),
        variant_layout!(Request, ArchivedRequest, RegisterDevice { kind, token, app_sandbox, no_muted }),
        variant_layout!(Request, ArchivedRequest, UnregisterDevice { kind, token }),
        variant_layout!(Request, ArchivedRequest, ListDevices {}),
        variant_layout!(Request, ArchivedRequest, SetNotifySettings { chat, mute_until, show_previews }),
        variant_layout!(Request, ArchivedRequest, GetNotifySettings { chat }),
        variant_layout!(Request, ArchivedRequest, UploadStart { client_upload_id, total_bytes }),
        variant_layout!(Request, ArchivedRequest, UploadPart { upload_id, part, bytes }),
        variant_layout!(Request, ArchivedRequest, UploadFinish { parts, upload_id, total_bytes, name, mime_type }),
        variant_layout!(Request, ArchivedRequest, UploadCancel { upload_id }),
        variant_layout!(Request, ArchivedRequest, GetFile { chat, message, offset, limit }),
        variant_layout!(Request, ArchivedRequest, GetFileInfo { chat, message }),
        variant_layout!(Request, ArchivedRequest, SendMedia()),
        variant_layout!(Outcome, ArchivedOutcome, Ok()),
        variant_layout!(Outcome, ArchivedOutcome, Err()),
        variant_layout!(Response, ArchivedResponse, Done {}),
        variant_layout!(Response, ArchivedResponse, CodeSent { code_length, timeout_s }),
        variant_layout!(Response, ArchivedResponse, SignUpRequired {}),
        variant_layout!(Response, ArchivedResponse, Authorized { user, token, authorization, state }),
        variant_layout!(Response, ArchivedResponse, Authorizations()),
        variant_layout!(Response, ArchivedResponse, User()),
        variant_layout!(Response, ArchivedResponse, Users()),
        variant_layout!(Response, ArchivedResponse, MaybeUser()),
        variant_layout!(Response, ArchivedResponse, ChatId()),
        variant_layout!(Response, ArchivedResponse, Chat()),
        variant_layout!(Response, ArchivedResponse, Members()),
        variant_layout!(Response, ArchivedResponse, Sent()),
        variant_layout!(Response, ArchivedResponse, SentMany()),
        variant_layout!(Response, ArchivedResponse, Messages()),
        variant_layout!(Response, ArchivedResponse, State()),
        variant_layout!(Response, ArchivedResponse, Difference()),
        variant_layout!(Response, ArchivedResponse, ChatDifference()),
        variant_layout!(Response, ArchivedResponse, Dialogs()),
        variant_layout!(Response, ArchivedResponse, Pts()),
        variant_layout!(Response, ArchivedResponse, Presence { online, last_seen }),
        variant_layout!(Response, ArchivedResponse, Devices()),
        variant_layout!(Response, ArchivedResponse, Unregistered { was_registered }),
        variant_layout!(Response, ArchivedResponse, NotifySettings()),
        variant_layout!(Response, ArchivedResponse, UploadStarted { upload_id }),
        variant_layout!(Response, ArchivedResponse, PartStored { duplicate }),
        variant_layout!(Response, ArchivedResponse, UploadFinished { file, size }),
        variant_layout!(Response, ArchivedResponse, FileBytes { bytes }),
        variant_layout!(Response, ArchivedResponse, FileInfo()),
    ]
    .into_iter()
    .collect();
    let document = document_layouts();
    for (name, layout) in &measured {
        assert_eq!(Some(layout), document.variants.get(name), "§8 row of {}::{}", name.0, name.1);
    }
    assert_eq!(measured.keys().collect::<Vec<_>>(), document.variants.keys().collect::<Vec<_>>());

    let sizes = [
        ("ChatKind", size_of::<ArchivedChatKind>(), align_of::<ArchivedChatKind>()),
        ("Role", size_of::<ArchivedRole>(), align_of::<ArchivedRole>()),
        ("DeviceKind", size_of::<ArchivedDeviceKind>(), align_of::<ArchivedDeviceKind>()),
        ("MediaKind", size_of::<ArchivedMediaKind>(), align_of::<ArchivedMediaKind>()),
        ("ErrorCode", size_of::<ArchivedErrorCode>(), align_of::<ArchivedErrorCode>()),
        ("MemberChange", size_of::<ArchivedMemberChange>(), align_of::<ArchivedMemberChange>()),
        ("Update", size_of::<ArchivedUpdate>(), align_of::<ArchivedUpdate>()),
        ("LiveEvent", size_of::<ArchivedLiveEvent>(), align_of::<ArchivedLiveEvent>()),
        ("Request", size_of::<ArchivedRequest>(), align_of::<ArchivedRequest>()),
        ("Outcome", size_of::<ArchivedOutcome>(), align_of::<ArchivedOutcome>()),
        ("Response", size_of::<ArchivedResponse>(), align_of::<ArchivedResponse>()),
    ];
    for (name, size, align) in sizes {
        assert_eq!(document.enum_sizes.get(name), Some(&(size, align)), "§8 heading of {name}");
    }
    assert_eq!(document.enum_sizes.len(), sizes.len());

    // The unit-only enums given inline in §8.2.
    for (kind, tag) in [(ChatKind::Private, 0), (ChatKind::Group, 1), (ChatKind::Channel, 2)] {
        assert_eq!(rkyv::to_bytes::<rancor::Error>(&kind).unwrap().as_slice(), [tag]);
    }
    for (role, tag) in [(Role::Member, 0), (Role::Admin, 1), (Role::Creator, 2)] {
        assert_eq!(rkyv::to_bytes::<rancor::Error>(&role).unwrap().as_slice(), [tag]);
    }
    let kinds = [(DeviceKind::Apns, 0), (DeviceKind::Fcm, 1), (DeviceKind::WebPush, 2), (DeviceKind::Webhook, 3)];
    for (kind, tag) in kinds {
        assert_eq!(rkyv::to_bytes::<rancor::Error>(&kind).unwrap().as_slice(), [tag]);
        assert!(DOCUMENT.contains(&format!("{tag} `{kind:?}`")), "§8.2 names DeviceKind {tag} {kind:?}");
    }
    for (kind, tag) in [(MediaKind::Photo, 0), (MediaKind::Document, 1)] {
        assert_eq!(rkyv::to_bytes::<rancor::Error>(&kind).unwrap().as_slice(), [tag]);
        assert!(DOCUMENT.contains(&format!("{tag} `{kind:?}`")), "§8.2 names MediaKind {tag} {kind:?}");
    }
}

// Reading the document.

/// The layouts §8 of docs/PROTOCOL.md gives.
struct DocumentLayouts {
    structs: BTreeMap<String, StructLayout>,
    variants: BTreeMap<(String, String), VariantLayout>,
    /// `(size, align)` of each enum, from the "`Name` (size N, align M)" phrases.
    enum_sizes: BTreeMap<String, (usize, usize)>,
}

/// Parses the tables of §8: the struct table (`| type | size | align | fields |`) and the
/// variant tables (`| tag | `Enum` variant | fields |`), whose field cells read
/// `` `name: type @offset`, ... `` (a tuple variant's field has no name).
fn document_layouts() -> DocumentLayouts {
    let section = DOCUMENT.split("\n## 8. ").nth(1).unwrap().split("\n## 9. ").next().unwrap();
    let mut layouts =
        DocumentLayouts { structs: BTreeMap::new(), variants: BTreeMap::new(), enum_sizes: BTreeMap::new() };
    let mut table_enum: Option<String> = None;
    for line in section.lines() {
        let mut rest = line;
        while let Some((before, after)) = rest.split_once(" (size ") {
            let name = before.rsplit('`').nth(1).unwrap();
            let (numbers, after) = after.split_once(')').unwrap();
            let (size, align) = numbers.split_once(", align ").unwrap();
            layouts.enum_sizes.insert(name.to_owned(), (size.parse().unwrap(), align.parse().unwrap()));
            rest = after;
        }
        let Some(row) = line.strip_prefix("| ").and_then(|row| row.strip_suffix(" |")) else { continue };
        let cells: Vec<&str> = row.split(" | ").collect();
        if cells[0].starts_with("---") {
            continue;
        }
        if cells[0] == "type" {
            table_enum = None;
        } else if cells[0] == "tag" {
            table_enum = Some(cells[1].trim_end_matches(" variant").trim_matches('`').to_owned());
        } else if let Some(name) = &table_enum {
            let variant = cells[1].trim_matches('`').to_owned();
            let layout = VariantLayout { tag: cells[0].parse().unwrap(), fields: document_fields(cells[2]) };
            layouts.variants.insert((name.clone(), variant), layout);
        } else {
            let layout = StructLayout {
                size: cells[1].parse().unwrap(),
                align: cells[2].parse().unwrap(),
                fields: document_fields(cells[3]),
            };
            layouts.structs.insert(cells[0].trim_matches('`').to_owned(), layout);
        }
    }
    // Sizes given for structs in prose are not enums.
    layouts.enum_sizes.retain(|name, _| !layouts.structs.contains_key(name));
    layouts
}

fn document_fields(cell: &str) -> Vec<(String, usize)> {
    if cell == "—" {
        return Vec::new();
    }
    cell.trim_matches('`')
        .split("`, `")
        .map(|field| {
            let (declaration, offset) = field.rsplit_once(" @").unwrap();
            let name = declaration.split_once(": ").map_or("0", |(name, _)| name);
            (name.to_owned(), offset.parse().unwrap())
        })
        .collect()
}

// Strings.

// Strings of at most 8 bytes are stored inline, padded with 0xff; longer ones are out of line
// with the length's two top bits of the first byte set to 0b10, exactly as §7.3 describes.
#[test]
fn strings_follow_the_documented_representation() {
    // Hello's client string sits at offset 4 of a 12-byte root.
    let field = |client: &str| -> Vec<u8> {
        let archive = rkyv::to_bytes::<rancor::Error>(&Hello { protocol_version: 1, client: client.into() }).unwrap();
        let root = archive.len() - 12;
        archive[root + 4..root + 12].to_vec()
    };
    assert_eq!(field(""), [0xff; 8]);
    assert_eq!(field("py"), [b'p', b'y', 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(field("12345678"), *b"12345678");
    assert_eq!(field("é"), [0xc3, 0xa9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);

    for length in [9, 63, 64, 65, 300, 4096 * 4] {
        let text = "x".repeat(length);
        let archive = rkyv::to_bytes::<rancor::Error>(&Hello { protocol_version: 1, client: text.clone() }).unwrap();
        let root = archive.len() - 12;
        let raw = u32::from_le_bytes(archive[root + 4..root + 8].try_into().unwrap());
        assert_eq!(raw, out_of_line_length(length as u32), "length {length}");
        assert_eq!(raw & 0xc0, 0x80);
        let offset = i32::from_le_bytes(archive[root + 8..root + 12].try_into().unwrap());
        // The offset counts from the string field itself, and the bytes come first in the archive.
        let start = (root as i64 + 4 + i64::from(offset)) as usize;
        assert_eq!(start, 0);
        assert_eq!(&archive[start..start + length], text.as_bytes());
        assert_eq!(read_string(&archive, root + 4), text);
    }
    // An Option<String> is a tag, then the string at offset 4 (SetUsername's field is at 4).
    let set_username = Request::SetUsername { username: Some("a_long_username".into()) };
    let archive = rkyv::to_bytes::<rancor::Error>(&set_username).unwrap();
    let root = archive.len() - 48;
    assert_eq!((archive[root], archive[root + 4]), (10, 1));
    assert_eq!(read_string(&archive, root + 4 + 4), "a_long_username");

    assert_eq!(out_of_line_length(9), 0x89);
    assert_eq!(out_of_line_length(64), 0x180);
    assert_eq!(out_of_line_length(300), 0x4ac);
}

// Building archives by hand.

// A SendMessage built byte by byte with the rules of §7 (the way a Python or Go client would)
// is accepted by the server's decoder, and is even byte-identical to what rkyv writes.
#[test]
fn a_hand_built_send_message_decodes() {
    let text = "hello from a foreign client";
    let mut archive = Vec::new();
    // Out-of-line data first, in field order: only the text needs any.
    let text_at = archive.len();
    archive.extend_from_slice(text.as_bytes());
    // Then the root, aligned to its alignment (8) and ending the archive.
    let root = reserve(&mut archive, 48, 8);
    archive[root] = 24; // Request::SendMessage
    put_u64(&mut archive, root + 8, 0x7005); // chat
    put_u64(&mut archive, root + 16, 99); // random_id
    put_string(&mut archive, root + 24, text, text_at); // text
    archive[root + 32] = 1; // reply_to: Some
    put_u64(&mut archive, root + 40, 12); // reply_to's MessageId, at the option's offset 8

    let mut frame = Vec::new();
    frame.extend_from_slice(&(1 + 8 + archive.len() as u32).to_le_bytes());
    frame.push(3);
    frame.extend_from_slice(&77u64.to_le_bytes());
    frame.extend_from_slice(&archive);

    let expected =
        Request::SendMessage { chat: ChatId(0x7005), random_id: 99, text: text.into(), reply_to: Some(MessageId(12)) };
    let (req_id, request) = codec::decode_request(split_frame(&frame).1).unwrap();
    assert_eq!((req_id, request.unwrap()), (77, expected.clone()));
    let mut encoded = Vec::new();
    codec::encode_request(&mut encoded, 77, &expected).unwrap();
    assert_eq!(hex(&frame), hex(&encoded));

    // The same with a short (inline) text and no reply: no out-of-line data at all.
    let mut archive = Vec::new();
    let root = reserve(&mut archive, 48, 8);
    archive[root] = 24;
    put_u64(&mut archive, root + 8, 0x7005);
    put_u64(&mut archive, root + 16, 100);
    put_string(&mut archive, root + 24, "hi", 0);
    let decoded = codec::decode_request(&[&5u64.to_le_bytes()[..], &archive].concat()).unwrap();
    let expected = Request::SendMessage { chat: ChatId(0x7005), random_id: 100, text: "hi".into(), reply_to: None };
    assert_eq!((decoded.0, decoded.1.unwrap()), (5, expected));
}

/// SendMedia built by hand with §7 and §8: the caption's bytes when long, the boxed
/// NewMediaMessage (64 bytes, aligned to 8), then the root with the box's offset. Answers the
/// archive and the root's offset.
fn hand_built_send_media(caption: &str, reply_to: Option<u64>) -> (Vec<u8>, usize) {
    let mut archive = Vec::new();
    let caption_at = archive.len();
    if caption.len() > 8 {
        archive.extend_from_slice(caption.as_bytes());
    }
    let media = reserve(&mut archive, 64, 8);
    put_u64(&mut archive, media, 0x7005); // chat
    put_u64(&mut archive, media + 8, 77); // random_id
    put_u64(&mut archive, media + 16, 0x54b4); // file.id
    put_u64(&mut archive, media + 24, 0xfedc_ba98_7654_3210); // file.access_hash
    archive[media + 32] = 1; // kind: Document
    put_string(&mut archive, media + 36, caption, caption_at);
    if let Some(reply_to) = reply_to {
        archive[media + 48] = 1;
        put_u64(&mut archive, media + 56, reply_to);
    }
    let root = reserve(&mut archive, 48, 8);
    archive[root] = 51; // Request::SendMedia
    put_u32(&mut archive, root + 4, (media as i64 - (root as i64 + 4)) as i32 as u32);
    (archive, root)
}

// A SendMedia built byte by byte (a boxed NewMediaMessage out of line) decodes, and is
// byte-identical to what rkyv writes, with a long caption and a reply and with neither.
#[test]
fn a_hand_built_send_media_decodes() {
    for (caption, reply_to) in [("the view from the office window", Some(9)), ("", None)] {
        let (archive, _) = hand_built_send_media(caption, reply_to);
        let expected = Request::SendMedia(Box::new(NewMediaMessage {
            chat: ChatId(0x7005),
            random_id: 77,
            file: EXAMPLE_FILE,
            kind: MediaKind::Document,
            caption: caption.into(),
            reply_to: reply_to.map(MessageId),
        }));
        assert_eq!(codec::decode_request(&with_req_id(1, &archive)).unwrap().1.unwrap(), expected);
        let rkyv_bytes = rkyv::to_bytes::<rancor::Error>(&expected).unwrap();
        assert_eq!(hex(&archive), hex(&rkyv_bytes), "caption {caption:?}");
    }
}

// Requests with vectors, several strings and an empty vector, built by hand, decode: the
// out-of-line data of the fields goes in field order, before the root.
#[test]
fn hand_built_requests_with_vectors_decode() {
    // Authenticate { token: 40 bytes }.
    let token: Vec<u8> = (0..40).collect();
    let mut archive = Vec::new();
    let token_at = archive.len();
    archive.extend_from_slice(&token);
    let root = reserve(&mut archive, 48, 8);
    archive[root] = 3;
    put_vec(&mut archive, root + 4, token_at, token.len());
    assert_eq!(codec::decode_request(&with_req_id(1, &archive)).unwrap().1.unwrap(), Request::Authenticate { token });

    // CreateGroup { title: 11 bytes, members: [UserId; 2] }: the title's bytes, then the
    // member array aligned to 8, then the root.
    let mut archive = Vec::new();
    let title_at = archive.len();
    archive.extend_from_slice(b"book club 7");
    let members_at = reserve(&mut archive, 16, 8);
    put_u64(&mut archive, members_at, 0x1001);
    put_u64(&mut archive, members_at + 8, 0x2002);
    let root = reserve(&mut archive, 48, 8);
    archive[root] = 15;
    put_string(&mut archive, root + 4, "book club 7", title_at);
    put_vec(&mut archive, root + 12, members_at, 2);
    let expected = Request::CreateGroup { title: "book club 7".into(), members: vec![UserId(0x1001), UserId(0x2002)] };
    assert_eq!(codec::decode_request(&with_req_id(2, &archive)).unwrap().1.unwrap(), expected);
    let rkyv_bytes = rkyv::to_bytes::<rancor::Error>(&expected).unwrap();
    assert_eq!(hex(&archive), hex(&rkyv_bytes));

    // An empty vector points at the (aligned) place its elements would start.
    let mut archive = Vec::new();
    let root = reserve(&mut archive, 48, 8);
    archive[root] = 8;
    put_vec(&mut archive, root + 4, root, 0);
    assert_eq!(codec::decode_request(&with_req_id(3, &archive)).unwrap().1.unwrap(), Request::GetUsers { ids: vec![] });

    // SignUp with four strings: two long ones out of line, in field order, and two inline.
    let (phone, code, first, last) = ("+15550001234", "12345", "Alexandra", "B");
    let mut archive = Vec::new();
    let phone_at = archive.len();
    archive.extend_from_slice(phone.as_bytes());
    let first_at = archive.len();
    archive.extend_from_slice(first.as_bytes());
    let root = reserve(&mut archive, 48, 8);
    archive[root] = 2;
    put_string(&mut archive, root + 4, phone, phone_at);
    put_string(&mut archive, root + 12, code, 0);
    put_string(&mut archive, root + 20, first, first_at);
    put_string(&mut archive, root + 28, last, 0);
    let expected =
        Request::SignUp { phone: phone.into(), code: code.into(), first_name: first.into(), last_name: last.into() };
    assert_eq!(codec::decode_request(&with_req_id(4, &archive)).unwrap().1.unwrap(), expected);

    // GetDialogs with Some(offset): the option's payload sits at offset 8 of the option.
    let mut archive = Vec::new();
    let root = reserve(&mut archive, 48, 8);
    archive[root] = 36;
    archive[root + 8] = 1;
    put_u64(&mut archive, root + 16, 1_700_000_000_000);
    put_u64(&mut archive, root + 24, 0x7005);
    put_u32(&mut archive, root + 32, 50);
    let expected = Request::GetDialogs {
        offset: Some(DialogsOffset { date: UnixMs(1_700_000_000_000), chat: ChatId(0x7005) }),
        limit: 50,
    };
    assert_eq!(codec::decode_request(&with_req_id(5, &archive)).unwrap().1.unwrap(), expected);
}

// A client building the push requests byte by byte with §7 and §8 (a long and a short token,
// a DeviceKind byte, a mute date) is understood, and reads the device list the server sends
// with only the §8 offsets: 16-byte `PushDevice`s with their tokens out of line or inline.
#[test]
fn a_foreign_client_registers_devices_and_reads_them_back() {
    // RegisterDevice { kind: WebPush, token: 40 bytes, app_sandbox: true, no_muted: false }.
    let token = "https://push.example/subscription/abc123";
    let mut archive = Vec::new();
    let token_at = archive.len();
    archive.extend_from_slice(token.as_bytes());
    let root = reserve(&mut archive, 48, 8);
    archive[root] = 40;
    archive[root + 1] = 2;
    put_string(&mut archive, root + 4, token, token_at);
    archive[root + 12] = 1;
    let expected =
        Request::RegisterDevice { kind: DeviceKind::WebPush, token: token.into(), app_sandbox: true, no_muted: false };
    assert_eq!(codec::decode_request(&with_req_id(1, &archive)).unwrap().1.unwrap(), expected);

    // UnregisterDevice { kind: Apns, token: "beef" }: an inline token, nothing out of line.
    let mut archive = Vec::new();
    let root = reserve(&mut archive, 48, 8);
    archive[root] = 41;
    archive[root + 1] = 0;
    put_string(&mut archive, root + 4, "beef", 0);
    let expected = Request::UnregisterDevice { kind: DeviceKind::Apns, token: "beef".into() };
    assert_eq!(codec::decode_request(&with_req_id(2, &archive)).unwrap().1.unwrap(), expected);

    // SetNotifySettings { chat, mute_until: for ever, show_previews: false }.
    let mut archive = Vec::new();
    let root = reserve(&mut archive, 48, 8);
    archive[root] = 43;
    put_u64(&mut archive, root + 8, 0x7005);
    put_u64(&mut archive, root + 16, u64::MAX);
    archive[root + 24] = 0;
    let expected = Request::SetNotifySettings {
        chat: ChatId(0x7005),
        mute_until: NotifySettings::MUTED_FOREVER,
        show_previews: false,
    };
    assert_eq!(codec::decode_request(&with_req_id(3, &archive)).unwrap().1.unwrap(), expected);

    // The server's Devices answer, read with the offsets of §8 only.
    let devices = vec![
        PushDevice { kind: DeviceKind::Fcm, token: "a registration token".into(), app_sandbox: false, no_muted: true },
        PushDevice { kind: DeviceKind::Webhook, token: "relay-1".into(), app_sandbox: true, no_muted: false },
    ];
    let mut frame = Vec::new();
    codec::encode_response(&mut frame, 12, &Outcome::Ok(Response::Devices(devices.clone()))).unwrap();
    let archive = &split_frame(&frame).1[8..];
    let response = archive.len() - 112 + 8;
    assert_eq!(archive[response], 20, "Response::Devices");
    let (elements, count) = read_vec(archive, response + 4);
    assert_eq!(count, devices.len());
    for (index, device) in devices.iter().enumerate() {
        let at = elements + index * 16;
        assert_eq!(archive[at], device.kind as u8);
        assert_eq!(read_string(archive, at + 4), device.token);
        assert_eq!((archive[at + 12], archive[at + 13]), (u8::from(device.app_sandbox), u8::from(device.no_muted)));
    }

    // And the Unregistered answer: one bool right behind the tag.
    let mut frame = Vec::new();
    codec::encode_response(&mut frame, 13, &Outcome::Ok(Response::Unregistered { was_registered: true })).unwrap();
    let archive = &split_frame(&frame).1[8..];
    let response = archive.len() - 112 + 8;
    assert_eq!((archive[response], archive[response + 1]), (21, 1));
}

// A client uploading and downloading by hand with §7 and §8: an UploadPart whose bytes are a
// `Vec<u8>` out of line, an UploadFinish with its fields in the documented (not declared)
// order, a GetFile; and the UploadFinished and FileBytes answers read with §8 offsets only.
#[test]
fn a_foreign_client_uploads_and_downloads() {
    // UploadPart { upload_id, part: 7, bytes: 1000 bytes }.
    let bytes: Vec<u8> = (0..1000u32).map(|index| (index * 13) as u8).collect();
    let mut archive = Vec::new();
    let bytes_at = archive.len();
    archive.extend_from_slice(&bytes);
    let root = reserve(&mut archive, 48, 8);
    archive[root] = 46;
    put_u64(&mut archive, root + 8, 0xdead_beef);
    put_u32(&mut archive, root + 16, 7);
    put_vec(&mut archive, root + 20, bytes_at, bytes.len());
    let expected = Request::UploadPart { upload_id: UploadId(0xdead_beef), part: 7, bytes: bytes.clone() };
    assert_eq!(codec::decode_request(&with_req_id(1, &archive)).unwrap().1.unwrap(), expected);

    // UploadFinish { parts: 3, upload_id, total_bytes: Some(1_049_576), name: "holiday-photo.jpg",
    // mime_type: "image/jpeg" }: the two long strings out of line, in field order.
    let (name, mime_type) = ("holiday-photo.jpg", "image/jpeg");
    let mut archive = Vec::new();
    let name_at = archive.len();
    archive.extend_from_slice(name.as_bytes());
    let mime_at = archive.len();
    archive.extend_from_slice(mime_type.as_bytes());
    let root = reserve(&mut archive, 48, 8);
    archive[root] = 47;
    put_u32(&mut archive, root + 4, 3);
    put_u64(&mut archive, root + 8, 0xdead_beef);
    archive[root + 16] = 1;
    put_u64(&mut archive, root + 24, 1_049_576);
    put_string(&mut archive, root + 32, name, name_at);
    put_string(&mut archive, root + 40, mime_type, mime_at);
    let expected = Request::UploadFinish {
        parts: 3,
        upload_id: UploadId(0xdead_beef),
        total_bytes: Some(1_049_576),
        name: name.into(),
        mime_type: mime_type.into(),
    };
    assert_eq!(codec::decode_request(&with_req_id(2, &archive)).unwrap().1.unwrap(), expected);

    // GetFile { chat, message, offset: 1 MiB, limit: 64 KiB }: the file of a media message.
    let mut archive = Vec::new();
    let root = reserve(&mut archive, 48, 8);
    archive[root] = 49;
    put_u64(&mut archive, root + 8, 0x7005);
    put_u64(&mut archive, root + 16, 12);
    put_u64(&mut archive, root + 24, 1 << 20);
    put_u32(&mut archive, root + 32, 64 << 10);
    let expected = Request::GetFile { chat: ChatId(0x7005), message: MessageId(12), offset: 1 << 20, limit: 64 << 10 };
    assert_eq!(codec::decode_request(&with_req_id(3, &archive)).unwrap().1.unwrap(), expected);
    // GetFileInfo { chat, message }.
    let mut archive = Vec::new();
    let root = reserve(&mut archive, 48, 8);
    archive[root] = 50;
    put_u64(&mut archive, root + 8, 0x7005);
    put_u64(&mut archive, root + 16, 12);
    let expected = Request::GetFileInfo { chat: ChatId(0x7005), message: MessageId(12) };
    assert_eq!(codec::decode_request(&with_req_id(3, &archive)).unwrap().1.unwrap(), expected);
    let file = FileRef { id: FileId(0x54b4), access_hash: 0xfedc_ba98_7654_3210 };

    // The answers, read with §8 offsets only.
    let mut frame = Vec::new();
    let finished = Outcome::Ok(Response::UploadFinished { file, size: 1_049_576 });
    codec::encode_response(&mut frame, 4, &finished).unwrap();
    let archive = &split_frame(&frame).1[8..];
    let response = archive.len() - 112 + 8;
    assert_eq!(archive[response], 25, "Response::UploadFinished");
    assert_eq!(read_u64(archive, response + 8), 0x54b4);
    assert_eq!(read_u64(archive, response + 16), 0xfedc_ba98_7654_3210);
    assert_eq!(read_u64(archive, response + 24), 1_049_576);

    let mut frame = Vec::new();
    codec::encode_response(&mut frame, 5, &Outcome::Ok(Response::FileBytes { bytes: bytes.clone() })).unwrap();
    let archive = &split_frame(&frame).1[8..];
    let response = archive.len() - 112 + 8;
    assert_eq!(archive[response], 26, "Response::FileBytes");
    let (start, count) = read_vec(archive, response + 4);
    assert_eq!(&archive[start..start + count], bytes.as_slice());

    let mut frame = Vec::new();
    let info = FileInfo { size: 1_049_576, name: name.into(), mime_type: mime_type.into() };
    codec::encode_response(&mut frame, 6, &Outcome::Ok(Response::FileInfo(info))).unwrap();
    let archive = &split_frame(&frame).1[8..];
    let response = archive.len() - 112 + 8;
    assert_eq!(archive[response], 27, "Response::FileInfo");
    assert_eq!(read_u64(archive, response + 8), 1_049_576);
    assert_eq!(
        (read_string(archive, response + 16), read_string(archive, response + 24)),
        (name.into(), mime_type.into())
    );
}

// A client reading a response with only the offsets of §8 finds every field: a vector of
// messages with long and short texts, present and absent options, and a nested struct.
#[test]
fn a_foreign_reader_decodes_a_messages_response() {
    let messages = vec![
        Message {
            id: MessageId(41),
            chat: ChatId(0x7005),
            sender: UserId(0x3003),
            date: UnixMs(1_700_000_000_001),
            random_id: 5,
            text: "a text longer than eight bytes".into(),
            reply_to: Some(MessageId(40)),
            forwarded_from: Some(ForwardedFrom {
                chat: ChatId(0x8006),
                message: MessageId(2),
                sender: UserId(0x4004),
                date: UnixMs(1_600_000_000_000),
            }),
            edit_date: None,
            deleted: false,
            media: None,
        },
        Message {
            id: MessageId(42),
            chat: ChatId(0x7005),
            sender: UserId(0x3003),
            date: UnixMs(1_700_000_000_002),
            random_id: 6,
            text: "short".into(),
            reply_to: None,
            forwarded_from: None,
            edit_date: Some(UnixMs(1_700_000_000_003)),
            deleted: true,
            media: None,
        },
        Message {
            media: Some(MessageMedia {
                kind: MediaKind::Document,
                file: FileRef { id: FileId(0x54b4), access_hash: 0x0123_4567_89ab_cdef },
                size: 3 << 20,
                name: "the quarterly report.pdf".into(),
                mime_type: "application/pdf".into(),
            }),
            ..media_message_example()
        },
    ];
    let mut frame = Vec::new();
    codec::encode_response(&mut frame, 11, &Outcome::Ok(Response::Messages(messages.clone()))).unwrap();
    let body = split_frame(&frame).1;
    assert_eq!(read_u64(body, 0), 11, "req_id");
    // A client copies the archive out of the frame; no alignment is needed to read it.
    let archive = &body[8..];
    let root = archive.len() - 112; // Outcome
    assert_eq!(archive[root], 0, "Outcome::Ok");
    let response = root + 8;
    assert_eq!(archive[response], 13, "Response::Messages");
    let (elements, count) = read_vec(archive, response + 4);
    assert_eq!(count, 3);
    for (index, message) in messages.iter().enumerate() {
        let at = elements + index * 184;
        assert_eq!(read_u64(archive, at), message.id.0);
        assert_eq!(read_u64(archive, at + 8), message.chat.0);
        assert_eq!(read_u64(archive, at + 16), message.sender.0);
        assert_eq!(read_u64(archive, at + 24), message.date.0);
        assert_eq!(read_u64(archive, at + 32), message.random_id);
        assert_eq!(read_string(archive, at + 40), message.text);
        assert_eq!(read_option_u64(archive, at + 48), message.reply_to.map(|id| id.0));
        match message.forwarded_from {
            None => assert_eq!(archive[at + 64], 0),
            Some(from) => {
                assert_eq!(archive[at + 64], 1);
                let from_at = at + 64 + 8;
                let read = [0, 8, 16, 24].map(|offset| read_u64(archive, from_at + offset));
                assert_eq!(read, [from.chat.0, from.message.0, from.sender.0, from.date.0]);
            }
        }
        assert_eq!(read_option_u64(archive, at + 104), message.edit_date.map(|date| date.0));
        assert_eq!(archive[at + 120], u8::from(message.deleted));
        match &message.media {
            None => assert_eq!(archive[at + 128], 0),
            Some(media) => {
                assert_eq!(archive[at + 128], 1);
                let media_at = at + 128 + 8;
                assert_eq!(archive[media_at], media.kind as u8);
                assert_eq!(read_u64(archive, media_at + 8), media.file.id.0);
                assert_eq!(read_u64(archive, media_at + 16), media.file.access_hash);
                assert_eq!(read_u64(archive, media_at + 24), media.size);
                assert_eq!(read_string(archive, media_at + 32), media.name);
                assert_eq!(read_string(archive, media_at + 40), media.mime_type);
            }
        }
    }
}

// A client reading an Updates frame with the offsets of §8 finds a box update with its
// message, a typing event and a resync.
#[test]
fn a_foreign_reader_decodes_updates() {
    let message = Message {
        id: MessageId(7),
        chat: ChatId(0x7005),
        sender: UserId(0x3003),
        date: UnixMs(1_700_000_000_000),
        random_id: 1,
        text: "new message text".into(),
        reply_to: None,
        forwarded_from: None,
        edit_date: None,
        deleted: false,
        media: media_message_example().media,
    };
    let updates = Updates {
        events: vec![
            LiveEvent::Box {
                update: Sequenced {
                    pts: Pts(501),
                    date: message.date,
                    update: Update::NewMessage {
                        chat: message.chat,
                        id: message.id,
                        sender: message.sender,
                        date: message.date,
                    },
                },
                message: Some(message.clone()),
            },
            LiveEvent::Typing { chat: ChatId(0x7005), user: UserId(0x3003) },
            LiveEvent::Resync,
        ],
    };
    let mut frame = Vec::new();
    codec::encode_updates(&mut frame, &updates).unwrap();
    let (frame_type, archive) = split_frame(&frame);
    assert_eq!(frame_type, FrameType::Updates);
    let root = archive.len() - 8;
    let (events, count) = read_vec(archive, root);
    assert_eq!(count, 3);
    // Event 0: LiveEvent::Box; Sequenced at 8 (pts, date, Update at 16); Option<Message> at 72.
    let event = events;
    assert_eq!(archive[event], 0);
    assert_eq!(read_u64(archive, event + 8), 501);
    let update = event + 8 + 16;
    assert_eq!(archive[update], 0, "Update::NewMessage");
    assert_eq!(read_u64(archive, update + 8), 0x7005);
    assert_eq!(read_u64(archive, update + 16), 7);
    assert_eq!(archive[event + 72], 1, "the message body is present");
    assert_eq!(read_string(archive, event + 72 + 8 + 40), "new message text");
    // A live new message carries its media: the option at message + 128, the MessageMedia 8
    // bytes further.
    let media = event + 72 + 8 + 128;
    assert_eq!(archive[media], 1, "the media is present");
    assert_eq!(read_u64(archive, media + 8 + 8), EXAMPLE_FILE.id.0);
    assert_eq!(read_string(archive, media + 8 + 32), "cat.jpg");
    // Event 1: LiveEvent::Typing { chat @8, user @16 }, one LiveEvent (272 bytes) later.
    let event = events + 272;
    assert_eq!(archive[event], 2);
    assert_eq!((read_u64(archive, event + 8), read_u64(archive, event + 16)), (0x7005, 0x3003));
    // Event 2: LiveEvent::Resync, a bare tag.
    assert_eq!(archive[events + 2 * 272], 3);
}

// What validation refuses.

// The placement rules of §7.8 are real: each hand-built archive below breaks one rule and is
// refused by the server's decoder, while the same archive with the rule kept decodes.
#[test]
fn archives_breaking_the_documented_rules_are_refused() {
    let refused = |archive: &[u8]| codec::decode_request(&with_req_id(1, archive)).unwrap().1.is_err();

    // Out-of-line data must come in field order: SignIn's phone bytes before its code bytes.
    let (phone, code) = ("+15550001234", "123456789");
    let sign_in = |phone_first: bool| {
        let mut archive = Vec::new();
        let (first, second) = if phone_first { (phone, code) } else { (code, phone) };
        let first_at = archive.len();
        archive.extend_from_slice(first.as_bytes());
        let second_at = archive.len();
        archive.extend_from_slice(second.as_bytes());
        let (phone_at, code_at) = if phone_first { (first_at, second_at) } else { (second_at, first_at) };
        let root = reserve(&mut archive, 48, 8);
        archive[root] = 1;
        put_string(&mut archive, root + 4, phone, phone_at);
        put_string(&mut archive, root + 12, code, code_at);
        archive
    };
    assert!(!refused(&sign_in(true)));
    assert!(refused(&sign_in(false)), "out-of-line data out of field order");

    // Two fields may not share out-of-line bytes.
    let mut shared = Vec::new();
    shared.extend_from_slice(b"123456789");
    let root = reserve(&mut shared, 48, 8);
    shared[root] = 1;
    put_string(&mut shared, root + 4, "123456789", 0);
    put_string(&mut shared, root + 12, "123456789", 0);
    assert!(refused(&shared), "shared out-of-line bytes");

    // A bool is 0 or 1.
    let set_blocked = |blocked: u8| {
        let mut archive = Vec::new();
        let root = reserve(&mut archive, 48, 8);
        archive[root] = 13;
        put_u64(&mut archive, root + 8, 0x1001);
        archive[root + 16] = blocked;
        archive
    };
    assert!(!refused(&set_blocked(1)));
    assert!(refused(&set_blocked(2)), "bool of 2");

    // A tag past the last variant: 50 is GetFileInfo, 51 SendMedia, 52 is nothing.
    let mut archive = Vec::new();
    let root = reserve(&mut archive, 48, 8);
    archive[root] = 50;
    put_u64(&mut archive, root + 8, 0x7005);
    assert!(!refused(&archive));
    archive[root] = 52;
    assert!(refused(&archive), "Request tag 52");

    // A box must point at an object inside the archive and before its holder: SendMedia's box
    // pointing at itself (offset 0) or past the archive's end is refused.
    let (mut archive, root) = hand_built_send_media("hi", None);
    assert!(!refused(&archive));
    put_u32(&mut archive, root + 4, 0);
    assert!(refused(&archive), "a box pointing into its holder");
    put_u32(&mut archive, root + 4, 64);
    assert!(refused(&archive), "a box pointing past the archive");

    // A DeviceKind past Webhook (3).
    let register_device = |kind: u8| {
        let mut archive = Vec::new();
        let root = reserve(&mut archive, 48, 8);
        archive[root] = 40;
        archive[root + 1] = kind;
        put_string(&mut archive, root + 4, "abcd", 0);
        archive
    };
    assert!(!refused(&register_device(3)));
    assert!(refused(&register_device(4)), "DeviceKind tag 4");

    // An out-of-line string must be longer than 8 bytes.
    let mut archive = Vec::new();
    archive.extend_from_slice(b"+1555");
    let root = reserve(&mut archive, 48, 8);
    archive[root] = 0;
    put_u32(&mut archive, root + 4, out_of_line_length(5));
    put_u32(&mut archive, root + 8, (-(root as i32 + 4)) as u32);
    assert!(refused(&archive), "a 5-byte string out of line");

    // Strings are UTF-8.
    let mut archive = Vec::new();
    let root = reserve(&mut archive, 48, 8);
    archive[root] = 0;
    archive[root + 4..root + 12].copy_from_slice(&[b'+', 0xc3, 0x28, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert!(refused(&archive), "invalid UTF-8");

    // The root ends the archive and is aligned relative to the archive's start: GetState's
    // 48-byte root behind 4 bytes of padding starts at 4, which is not a multiple of 8.
    let mut archive = vec![0; 4];
    let root = archive.len();
    archive.resize(root + 48, 0);
    archive[root] = 33;
    assert!(refused(&archive), "root not 8-aligned");
    let mut archive = vec![0; 8];
    let root = archive.len();
    archive.resize(root + 48, 0);
    archive[root] = 33;
    assert!(!refused(&archive), "leading unused bytes are allowed");

    // Padding is not validated: SendMessage with 0xaa in every padding byte still decodes.
    let mut archive = Vec::new();
    let root = reserve(&mut archive, 48, 8);
    archive[root..root + 48].fill(0xaa);
    archive[root] = 24;
    put_u64(&mut archive, root + 8, 0x7005);
    put_u64(&mut archive, root + 16, 1);
    put_string(&mut archive, root + 24, "hi", 0);
    archive[root + 32] = 0; // reply_to: None, its value bytes left as padding
    let expected = Request::SendMessage { chat: ChatId(0x7005), random_id: 1, text: "hi".into(), reply_to: None };
    assert_eq!(codec::decode_request(&with_req_id(1, &archive)).unwrap().1.unwrap(), expected);
}

// Helpers: a client's view of the archive, written from the document's rules only.

/// Appends zeros up to `align`, then `size` zero bytes for an object; answers its offset.
fn reserve(archive: &mut Vec<u8>, size: usize, align: usize) -> usize {
    while !archive.len().is_multiple_of(align) {
        archive.push(0);
    }
    let at = archive.len();
    archive.resize(at + size, 0);
    at
}

fn put_u32(archive: &mut [u8], at: usize, value: u32) {
    archive[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u64(archive: &mut [u8], at: usize, value: u64) {
    archive[at..at + 8].copy_from_slice(&value.to_le_bytes());
}

/// §7.3: the encoded length of an out-of-line string.
fn out_of_line_length(length: u32) -> u32 {
    (length & 0x3f) | 0x80 | ((length & !0x3f) << 2)
}

/// Writes the 8-byte string field at `at`: inline when at most 8 bytes, else pointing at the
/// bytes already written at `bytes_at`.
fn put_string(archive: &mut [u8], at: usize, value: &str, bytes_at: usize) {
    if value.len() <= 8 {
        archive[at..at + 8].fill(0xff);
        archive[at..at + value.len()].copy_from_slice(value.as_bytes());
    } else {
        put_u32(archive, at, out_of_line_length(value.len() as u32));
        put_u32(archive, at + 4, (bytes_at as i64 - at as i64) as i32 as u32);
    }
}

/// Writes the 8-byte vector field at `at`: the offset from the field to the elements, then
/// the count.
fn put_vec(archive: &mut [u8], at: usize, elements_at: usize, count: usize) {
    put_u32(archive, at, (elements_at as i64 - at as i64) as i32 as u32);
    put_u32(archive, at + 4, count as u32);
}

fn read_u32(archive: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(archive[at..at + 4].try_into().unwrap())
}

fn read_u64(archive: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(archive[at..at + 8].try_into().unwrap())
}

/// An `Option<u64 newtype>`: tag at 0, value at 8.
fn read_option_u64(archive: &[u8], at: usize) -> Option<u64> {
    (archive[at] == 1).then(|| read_u64(archive, at + 8))
}

fn read_string(archive: &[u8], at: usize) -> String {
    let bytes = if archive[at] & 0xc0 != 0x80 {
        let inline = &archive[at..at + 8];
        &inline[..inline.iter().position(|&byte| byte == 0xff).unwrap_or(8)]
    } else {
        let raw = read_u32(archive, at);
        let length = ((raw & 0x3f) | ((raw & !0xff) >> 2)) as usize;
        let start = (at as i64 + i64::from(read_u32(archive, at + 4) as i32)) as usize;
        &archive[start..start + length]
    };
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// A vector field: where its elements start, and how many there are.
fn read_vec(archive: &[u8], at: usize) -> (usize, usize) {
    let start = (at as i64 + i64::from(read_u32(archive, at) as i32)) as usize;
    (start, read_u32(archive, at + 4) as usize)
}

fn with_req_id(req_id: u64, archive: &[u8]) -> Vec<u8> {
    [&req_id.to_le_bytes()[..], archive].concat()
}

/// A frame's type and body, checking the length prefix covers the frame exactly.
fn split_frame(frame: &[u8]) -> (FrameType, &[u8]) {
    let header = FrameHeader::parse(frame[..FRAME_HEADER_BYTES].try_into().unwrap(), FRAME_MAX).unwrap();
    assert_eq!(frame.len(), FRAME_HEADER_BYTES + header.body_bytes);
    (header.frame_type.unwrap(), &frame[FRAME_HEADER_BYTES..])
}

/// Asserts that the document shows `frame` (hex, 16 bytes a line) as a code block of its own.
fn assert_shown_in_document(frame: &str) {
    let block = format!("```\n{}\n```", hex(&from_hex(frame)));
    assert!(DOCUMENT.contains(&block), "docs/PROTOCOL.md does not show the frame\n{block}");
}

fn from_hex(text: &str) -> Vec<u8> {
    text.split_whitespace().map(|byte| u8::from_str_radix(byte, 16).unwrap()).collect()
}

/// Bytes as the document prints them: 16 per line.
fn hex(bytes: &[u8]) -> String {
    let lines: Vec<String> = bytes
        .chunks(16)
        .map(|line| line.iter().map(|byte| format!("{byte:02x}")).collect::<Vec<_>>().join(" "))
        .collect();
    lines.join("\n")
}

// Sample values, to archive one of every variant.

trait Sample {
    fn sample() -> Self;
}

fn sample<T: Sample>() -> T {
    T::sample()
}

macro_rules! sample_as {
    ($($type:ty => $value:expr),* $(,)?) => {
        $(impl Sample for $type {
            fn sample() -> Self {
                $value
            }
        })*
    };
}

sample_as! {
    u8 => 1,
    u32 => 1,
    u64 => 1,
    bool => true,
    String => "a sample string".into(),
    UserId => UserId(1),
    ChatId => ChatId(1),
    MessageId => MessageId(1),
    Pts => Pts(1),
    AuthorizationId => AuthorizationId(1),
    UnixMs => UnixMs(1),
    ErrorCode => ErrorCode::Internal,
    ChatKind => ChatKind::Group,
    MemberChange => MemberChange::Added { by: UserId(2) },
    Update => Update::ReadOutbox { chat: ChatId(1), max_id: MessageId(1) },
    Response => Response::Pts(Pts(1)),
    User => User { id: sample(), phone: sample(), first_name: sample(), last_name: sample(), username: sample() },
    BoxState => BoxState { pts: sample(), date: sample(), unread: sample(), epoch: sample() },
    Sequenced => Sequenced { pts: sample(), date: sample(), update: sample() },
    ErrorBody => ErrorBody::new(ErrorCode::Internal, "sample"),
    SentMessage => SentMessage {
        chat: sample(),
        id: sample(),
        date: sample(),
        chat_pts: sample(),
        sender_pts: sample(),
        duplicate: sample(),
    },
    Chat => Chat {
        id: sample(),
        kind: sample(),
        title: sample(),
        members: sample(),
        pts: sample(),
        top_message: sample(),
        pinned: sample(),
        fanout_on_read: sample(),
        epoch: sample(),
        peer: sample(),
    },
    Difference => Difference { updates: sample(), messages: sample(), state: sample(), slice: sample() },
    ChatDifference =>
        ChatDifference { updates: sample(), messages: sample(), pts: sample(), epoch: sample(), slice: sample() },
    DeviceKind => DeviceKind::WebPush,
    NotifySettings => NotifySettings { mute_until: sample(), show_previews: sample() },
    UploadId => UploadId(1),
    FileId => FileId(1),
    FileRef => FileRef { id: sample(), access_hash: sample() },
    FileInfo => FileInfo { size: sample(), name: sample(), mime_type: sample() },
    MediaKind => MediaKind::Document,
    NewMediaMessage => NewMediaMessage {
        chat: sample(),
        random_id: sample(),
        file: sample(),
        kind: sample(),
        caption: sample(),
        reply_to: sample(),
    },
}

impl<T: Sample> Sample for Box<T> {
    fn sample() -> Self {
        Box::new(T::sample())
    }
}

impl<T> Sample for Vec<T> {
    fn sample() -> Self {
        Vec::new()
    }
}

impl<T> Sample for Option<T> {
    fn sample() -> Self {
        None
    }
}
