//! Media messages' side of the reference counting of DESIGN §7, on the chat's shard.
//!
//! A media message holds a reference on its file, keyed by the message's idempotency key
//! (chat, sender, random_id) and taken on the file's shard before the message is appended
//! (`Messenger::send_media`). When the message is deleted for everyone, applying the
//! tombstone queues the reference's release here, in the same record; the engine's media
//! upkeep gives it back on the file's shard and then records `MediaReleasesDone`. The outbox
//! is durable (replayed, and in checkpoints), so a release is never forgotten, and a release
//! delivered twice is harmless because the media store releases by key.

use std::collections::BTreeMap;

use crate::messaging::types::{ChatId, RandomId, UserId};

/// A reference to give back: `file` (the media store's raw id), held by the message of
/// `chat` that `sender` sent with `random_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct PendingRelease {
    pub sequence: u64,
    pub file: u64,
    pub chat: ChatId,
    pub sender: UserId,
    pub random_id: RandomId,
}

/// A shard's outbox of media references to give back.
#[derive(Clone, Debug, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct MediaReleases {
    /// The highest sequence given out (sequences never repeat, even across restarts).
    pub sequence: u64,
    pub pending: BTreeMap<u64, PendingRelease>,
}

impl MediaReleases {
    pub(crate) fn queue(&mut self, file: u64, chat: ChatId, sender: UserId, random_id: RandomId) {
        self.sequence += 1;
        let sequence = self.sequence;
        self.pending.insert(sequence, PendingRelease { sequence, file, chat, sender, random_id });
    }

    /// Whether a release of the reference keyed (`chat`, `sender`, `random_id`) is queued.
    /// The outbox is read whole: it holds only what the upkeep has not given back yet.
    pub(crate) fn is_queued(&self, chat: ChatId, sender: UserId, random_id: RandomId) -> bool {
        self.pending
            .values()
            .any(|release| (release.chat, release.sender, release.random_id) == (chat, sender, random_id))
    }

    pub(crate) fn finish(&mut self, sequences: &[u64]) {
        for sequence in sequences {
            self.pending.remove(sequence);
        }
    }
}
