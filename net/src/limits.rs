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
pub const HISTORY_PAGE_MAX: u32 = 100;
pub const DIFFERENCE_LIMIT_MAX: u32 = 1000;
pub const DIALOGS_PAGE_MAX: u32 = 100;
pub const IDS_PER_REQUEST_MAX: usize = 100;
pub const GROUP_MEMBERS_AT_CREATION_MAX: usize = 200;

/// The longest push device token (`RegisterDevice`, `UnregisterDevice`), in bytes; the
/// engine checks the same limit again. A Web Push subscription or a relay's token can be far
/// longer than an APNs or FCM token, hence the room.
pub const DEVICE_TOKEN_BYTES_MAX: usize = 4096;

const _: () = assert!(MESSAGE_TEXT_MAX * 4 + 4096 < FRAME_MAX, "a maximal message fits a frame");
const _: () = assert!(FRAME_MAX <= u32::MAX as usize, "the length prefix is a u32");
const _: () = assert!(DEVICE_TOKEN_BYTES_MAX + 4096 < FRAME_MAX, "a maximal device token fits a frame");
