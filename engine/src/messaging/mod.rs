//! The messaging model (DESIGN §3, §5): users, chats, messages, update boxes, fan-out, sync
//! and live delivery, as a sans-I/O core per shard (`core`) over the shard's WAL.

pub mod api;
pub mod chunked;
pub mod core;
pub mod driver;
pub mod limits;
pub mod media;
pub mod protocol;
pub mod push;
pub mod records;
pub mod state;
pub mod types;
pub(crate) mod upkeep;

pub use self::api::{Author, DialogsOffset, Messenger, NewMediaMessage, NewMessage};
pub use self::core::{Journal, MessagingCore};
pub use self::driver::{Connected, OfflineHook, PushHook, SessionEvents};
pub use self::media::{MediaReleases, PendingRelease};
pub use self::protocol::{Effects, HistoryPage, Origin, PeerMessage, Request, Response, SendRequest};
pub use self::push::{
    DeviceKind, NotifySettings, PendingPush, PushDevice, PushJob, PushRecipient, PushSource, PushTarget,
};
pub use self::types::*;
