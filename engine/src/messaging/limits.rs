//! Every size and count of the messaging model has a limit, kept here together (DESIGN §10).

/// Characters of a message's text.
pub const TEXT_CHARS_MAX: usize = 4096;
/// Characters of a media message's caption, and of the file name and MIME type it shows.
pub const CAPTION_CHARS_MAX: usize = 1024;
pub const FILE_NAME_CHARS_MAX: usize = 255;
pub const MIME_TYPE_CHARS_MAX: usize = 127;
/// Media references in one `pending_media_releases` page, `media_releases_done` call or
/// `check_media_holders` call.
pub const MEDIA_PAGE_MAX: usize = 1000;
/// How long a media key the leak sweep found no message for is refused to media sends: far
/// longer than any send spends between taking its reference and reaching the chat's shard.
pub const HOLDER_REFUSAL_MS: u64 = 3600 * 1000;
/// Characters of a first or last name, or a chat title.
pub const NAME_CHARS_MAX: usize = 64;
pub const TITLE_CHARS_MAX: usize = 128;
/// Usernames: 5 to 32 of `[a-z0-9_]`, starting with a letter (compared lower-case).
pub const USERNAME_CHARS_MIN: usize = 5;
pub const USERNAME_CHARS_MAX: usize = 32;
/// Digits of an E.164 phone number (after the `+`).
pub const PHONE_DIGITS_MIN: usize = 7;
pub const PHONE_DIGITS_MAX: usize = 15;
/// Messages in one history page, ids in one `get_messages` or delete.
pub const HISTORY_PAGE_MAX: usize = 100;
pub const MESSAGE_IDS_MAX: usize = 100;
/// Chats up to this many members are fanned out on write into every member's box; above it
/// (and for channels) members sync the chat with `get_chat_difference`.
pub const FANOUT_MAX: usize = 1000;
/// A chat fanned out on read goes back to fan-out on write only under this many members, so
/// a chat at the boundary does not flip mode on every join and leave.
pub const FANOUT_BACK_UNDER: usize = FANOUT_MAX * 9 / 10;
/// Members in one `get_members` page.
pub const MEMBERS_PAGE_MAX: usize = 10_000;
/// Members given when a chat is created.
pub const CREATE_MEMBERS_MAX: usize = 200;
/// Updates a user's box keeps; older pts answer `DifferenceTooLong`.
pub const BOX_HISTORY_MAX: usize = 10_000;
/// Updates a chat's log keeps for `get_chat_difference`.
pub const CHAT_LOG_HISTORY_MAX: usize = 10_000;
/// Box and chat log entries older than this are dropped too.
pub const HISTORY_AGE_MS_MAX: u64 = 7 * 24 * 3600 * 1000;
/// Updates in one page of `get_difference` or `get_chat_difference`.
pub const DIFFERENCE_LIMIT_MAX: usize = 1000;
/// How long a random_id is remembered per (chat, sender), and how many are remembered per shard.
pub const IDEMPOTENCY_WINDOW_MS: u64 = 24 * 3600 * 1000;
pub const IDEMPOTENCY_ENTRIES_MAX: usize = 4_000_000;
/// How many random_ids a chat event forgets at most: one a send adds, and the rest to catch
/// up on what a checkpoint held back (it pauses expiry) without one long step.
pub const IDEMPOTENCY_FORGET_PER_EVENT: usize = 16;
/// Events a session's queue holds before the session is dropped and told to resync.
pub const SESSION_QUEUE_MAX: usize = 4096;
/// A session queue that once held this many events keeps that storage (flume never gives it
/// back): once the session has read them all, its next event moves it to a fresh queue.
pub const SESSION_QUEUE_SHRINK_EVENTS: usize = 256;
/// Online sessions per user.
pub const SESSIONS_PER_USER_MAX: usize = 64;
/// Sessions watching one user's presence; past this the oldest watcher is dropped.
pub const PRESENCE_WATCHERS_PER_USER_MAX: usize = 1024;
/// Login authorizations a user holds at once (revoked ones do not count), and characters of
/// an authorization's device description.
pub const AUTHORIZATIONS_PER_USER_MAX: usize = 64;
pub const AUTHORIZATION_DEVICE_MAX: usize = 128;
/// Push devices a user registers (past this the oldest goes), and bytes of a device token
/// (APNs tokens are 64 hex digits, FCM's about 160 characters, a Web Push subscription's JSON
/// a few hundred bytes).
pub const DEVICES_PER_USER_MAX: usize = 16;
pub const DEVICE_TOKEN_BYTES_MAX: usize = 4096;
/// Chats a user keeps non-default notification settings for.
pub const NOTIFY_SETTINGS_PER_USER_MAX: usize = 10_000;
/// Characters of message text a push job keeps for its preview.
pub const PUSH_PREVIEW_CHARS_MAX: usize = 256;
/// Jobs in one `pending_pushes` page or one `pushes_done` call, and users in one
/// `push_recipients` call.
pub const PUSH_PAGE_MAX: usize = 1000;
/// Chats in one dialogs page.
pub const DIALOGS_PAGE_MAX: usize = 100;
/// WAL bytes a shard writes between automatic checkpoints of its messaging state.
pub const CHECKPOINT_EVERY_BYTES: u64 = 256 << 20;
/// A clean shutdown takes one more checkpoint when at least this much was written since the
/// last one began (`EngineConfig::checkpoint_at_close_min_bytes`).
pub const CHECKPOINT_AT_CLOSE_MIN_BYTES: u64 = 16 << 20;
/// Users and chats an automatic checkpoint archives before it lets other work run.
pub const CHECKPOINT_PIECES_PER_STEP: usize = 64;
/// Bytes an automatic checkpoint archives in one step at most (past one piece): a step of 64
/// chats of 500 messages each took up to 42 ms.
pub const CHECKPOINT_STEP_BYTES: usize = 1 << 20;
/// The shares of a shard's checkpoint task queue against the default queue's 1,000: a busy
/// shard gives an automatic checkpoint about a fifth of its time (an idle one all of it).
/// Taking turns with the requests in the default queue, archiving got most of it: 1.5 GB
/// took ~1.5 s of a saturated shard, with acknowledgements down to a tenth meanwhile.
pub const CHECKPOINT_SHARES: usize = 250;

const _: () = assert!(FANOUT_BACK_UNDER < FANOUT_MAX);
const _: () = assert!(CREATE_MEMBERS_MAX <= FANOUT_MAX);
const _: () = assert!(HISTORY_PAGE_MAX <= MESSAGE_IDS_MAX * 10);
const _: () = assert!(DIFFERENCE_LIMIT_MAX <= BOX_HISTORY_MAX);
// Every authorization may have an online session at once.
const _: () = assert!(AUTHORIZATIONS_PER_USER_MAX <= SESSIONS_PER_USER_MAX);
