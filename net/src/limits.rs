//! Every size and count the protocol bounds, in one place (DESIGN §10). The server announces
//! the ones a client must respect in `Welcome::limits`.

/// The protocol version this crate speaks. A `Hello` with another version is refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// The bytes of a frame header: `u32` length + `u8` frame type.
pub const FRAME_HEADER_BYTES: usize = 5;

/// The largest frame body (frame type byte + payload): 1 MiB of data + 4 KiB of header room.
pub const FRAME_MAX: usize = 1024 * 1024 + 4096;

/// The bytes of the `req_id` that opens every request and response body.
pub const REQ_ID_BYTES: usize = 8;

/// The longest `Hello::client` string.
pub const CLIENT_NAME_MAX: usize = 128;

/// The length of a login token: the authorization id (8 bytes) + its secret (32 bytes).
pub const TOKEN_BYTES: usize = 8 + TOKEN_SECRET_BYTES;
pub const TOKEN_SECRET_BYTES: usize = 32;

/// Message text and name limits, checked again by the engine.
pub const MESSAGE_TEXT_MAX: usize = 4096;
/// Characters of a media message's caption (its text); it may be empty.
pub const MEDIA_CAPTION_MAX: usize = 1024;
pub const HISTORY_PAGE_MAX: u32 = 100;
pub const DIFFERENCE_LIMIT_MAX: u32 = 1000;
pub const DIALOGS_PAGE_MAX: u32 = 100;
pub const IDS_PER_REQUEST_MAX: usize = 100;
pub const GROUP_MEMBERS_AT_CREATION_MAX: usize = 200;

/// The longest push device token (`RegisterDevice`, `UnregisterDevice`), in bytes; the
/// engine checks the same limit again. A Web Push subscription or a relay's token can be far
/// longer than an APNs or FCM token, hence the room.
pub const DEVICE_TOKEN_BYTES_MAX: usize = 4096;

/// Media (DESIGN §7, Telegram's rules). These are fixed by the protocol, not announced in
/// `Welcome`: the server's media store has the same bounds (the gateway asserts it).
///
/// An upload part holds at most this many bytes…
pub const UPLOAD_PART_BYTES_MAX: usize = 512 * 1024;
/// …and every part but the last is a multiple of this that divides `UPLOAD_PART_BYTES_MAX`
/// (1, 2, 4, …, 512 KiB).
pub const UPLOAD_PART_BYTES_UNIT: usize = 1024;
/// Part numbers are below this: a 2 GiB file in 512 KiB parts.
pub const UPLOAD_PARTS_MAX: u32 = 4096;
/// The largest file the protocol can carry (a server may be configured lower).
pub const FILE_BYTES_MAX: u64 = UPLOAD_PARTS_MAX as u64 * UPLOAD_PART_BYTES_MAX as u64;
/// A file's name and MIME type, in bytes.
pub const FILE_NAME_BYTES_MAX: usize = 255;
pub const MIME_TYPE_BYTES_MAX: usize = 127;
/// Downloads: offset and limit are multiples of `DOWNLOAD_ALIGN_BYTES`, the limit is at most
/// `DOWNLOAD_LIMIT_BYTES_MAX`, and a range never crosses a multiple of `DOWNLOAD_WINDOW_BYTES`.
pub const DOWNLOAD_ALIGN_BYTES: u64 = 4096;
pub const DOWNLOAD_LIMIT_BYTES_MAX: u32 = 1024 * 1024;
pub const DOWNLOAD_WINDOW_BYTES: u64 = 1024 * 1024;

/// Why a download range breaks the rules above, in words for an `INVALID_ARGUMENT`; `None`
/// when it keeps them.
pub fn download_range_error(offset: u64, limit: u32) -> Option<String> {
    if !offset.is_multiple_of(DOWNLOAD_ALIGN_BYTES) {
        return Some(format!("the offset {offset} is not a multiple of 4096"));
    }
    if limit == 0 || !u64::from(limit).is_multiple_of(DOWNLOAD_ALIGN_BYTES) || limit > DOWNLOAD_LIMIT_BYTES_MAX {
        return Some(format!("the limit {limit} must be a multiple of 4096 from 4096 to 1048576"));
    }
    let last = offset.saturating_add(u64::from(limit) - 1);
    if offset / DOWNLOAD_WINDOW_BYTES != last / DOWNLOAD_WINDOW_BYTES {
        return Some(format!("the range of {limit} bytes at {offset} crosses a 1 MiB boundary"));
    }
    None
}

/// Whether `bytes` may be the size of an upload part that is not the last one.
pub fn is_full_part_size(bytes: usize) -> bool {
    bytes > 0
        && bytes <= UPLOAD_PART_BYTES_MAX
        && UPLOAD_PART_BYTES_MAX.is_multiple_of(bytes)
        && bytes.is_multiple_of(UPLOAD_PART_BYTES_UNIT)
}

const _: () = assert!(MESSAGE_TEXT_MAX * 4 + 4096 < FRAME_MAX, "a maximal message fits a frame");
const _: () = assert!(MEDIA_CAPTION_MAX <= MESSAGE_TEXT_MAX, "a caption is a message's text");
const _: () = assert!(
    MESSAGE_TEXT_MAX * 4 + FILE_NAME_BYTES_MAX + MIME_TYPE_BYTES_MAX + 4096 < FRAME_MAX,
    "a maximal media message fits a frame"
);
// A whole part or a whole download, with the archive around it (under 256 bytes) and the
// req_id, fits one frame.
const _: () = assert!(UPLOAD_PART_BYTES_MAX + 256 + REQ_ID_BYTES < FRAME_MAX);
const _: () = assert!(DOWNLOAD_LIMIT_BYTES_MAX as usize + 256 + REQ_ID_BYTES < FRAME_MAX);
const _: () = assert!(UPLOAD_PART_BYTES_MAX.is_multiple_of(UPLOAD_PART_BYTES_UNIT));
const _: () = assert!(DOWNLOAD_WINDOW_BYTES.is_multiple_of(DOWNLOAD_ALIGN_BYTES));
const _: () = assert!(DOWNLOAD_LIMIT_BYTES_MAX as u64 <= DOWNLOAD_WINDOW_BYTES);
const _: () = assert!(FILE_NAME_BYTES_MAX + MIME_TYPE_BYTES_MAX + 4096 < FRAME_MAX);
const _: () = assert!(FRAME_MAX <= u32::MAX as usize, "the length prefix is a u32");
const _: () = assert!(DEVICE_TOKEN_BYTES_MAX + 4096 < FRAME_MAX, "a maximal device token fits a frame");

#[cfg(test)]
mod tests {
    use super::*;

    // The download rules: aligned offsets and limits, at most 1 MiB, inside one 1 MiB window;
    // and the part sizes: exactly the multiples of 1 KiB that divide 512 KiB.
    #[test]
    fn download_ranges_and_part_sizes() {
        assert_eq!(download_range_error(0, 1 << 20), None);
        assert_eq!(download_range_error(512 << 10, 512 << 10), None);
        assert_eq!(download_range_error(u64::MAX - 4095, 4096), None);
        assert!(download_range_error(100, 4096).is_some_and(|error| error.contains("offset 100")));
        assert!(download_range_error(0, 1000).is_some_and(|error| error.contains("limit 1000")));
        assert!(download_range_error(0, 0).is_some());
        assert!(download_range_error(0, 2 << 20).is_some());
        assert!(download_range_error(4096, 1 << 20).is_some_and(|error| error.contains("boundary")));
        let sizes: Vec<usize> = (1..=UPLOAD_PART_BYTES_MAX).filter(|&bytes| is_full_part_size(bytes)).collect();
        assert_eq!(sizes, (0..10).map(|shift| 1024 << shift).collect::<Vec<_>>());
    }
}
