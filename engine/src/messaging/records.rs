//! The messaging layer's WAL records. Every change to messaging state is one of these events,
//! appended before it is applied; replay applies the same events in the same order with the
//! same code (`State::apply`), so the state after recovery is the state that was acknowledged.

use rkyv::rancor;

use crate::ids::RecordKind;
use crate::messaging::push::{DeviceKind, NotifySettings, PushDevice, PushJob};
use crate::messaging::types::{
    AuthorizationId, ChatId, ChatKind, MemberChange, Message, MessageId, MessageMedia, Pts, UnixMs, Update, UserId,
    SECRET_HASH_BYTES,
};

/// The record kind of every messaging event. Records of other kinds in the same log belong to
/// the host and are left alone.
pub const EVENT_KIND: RecordKind = RecordKind(0x4d47); // "MG"

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Event {
    UserCreated {
        user: UserId,
        phone: String,
        first_name: String,
        last_name: String,
        date: UnixMs,
    },
    NameSet {
        user: UserId,
        first_name: String,
        last_name: String,
    },
    /// The username index entry, on the username's own vshard.
    UsernameClaimed {
        username: String,
        user: UserId,
    },
    UsernameReleased {
        username: String,
        user: UserId,
    },
    /// The profile's username, on the user's vshard.
    UsernameSet {
        user: UserId,
        username: Option<String>,
    },
    /// A block between two users, kept on their pair's vshard beside their private chat.
    PairBlocked {
        by: UserId,
        peer: UserId,
        blocked: bool,
    },
    ChatCreated {
        chat: ChatId,
        kind: ChatKind,
        creator: UserId,
        title: String,
        members: Vec<UserId>,
        date: UnixMs,
    },
    /// An event of a chat's log, numbered by the chat's pts.
    Chat {
        chat: ChatId,
        pts: Pts,
        date: UnixMs,
        change: ChatChange,
    },
    /// Updates appended to the boxes of `users` (each with its new box pts), all caused by the
    /// chat event (chat, chat_pts). A box ignores a chat pts it has already applied.
    BoxAppended {
        chat: ChatId,
        chat_pts: Pts,
        date: UnixMs,
        update: Update,
        users: Vec<(UserId, Pts)>,
    },
    /// A login authorization of `user`, on the user's vshard. Only the secret's hash is kept.
    AuthorizationCreated {
        id: AuthorizationId,
        user: UserId,
        secret_hash: [u8; SECRET_HASH_BYTES],
        device: String,
        date: UnixMs,
    },
    /// The authorization is gone for good: its token no longer checks, its id is not reused.
    AuthorizationRevoked {
        id: AuthorizationId,
        user: UserId,
    },
    // Push (DESIGN §8). New variants go last: a variant's place is its tag in older logs.
    /// On the user's vshard; the same kind and token replace an earlier registration.
    DeviceRegistered {
        user: UserId,
        device: PushDevice,
    },
    DeviceUnregistered {
        user: UserId,
        kind: DeviceKind,
        token: String,
    },
    /// On the user's vshard; default settings remove the entry.
    NotifySettingsSet {
        user: UserId,
        chat: ChatId,
        settings: NotifySettings,
    },
    /// Jobs for this shard's push outbox, appended in the same batch as what caused them (a
    /// box update, or a post to a chat fanned out on read).
    PushQueued {
        jobs: Vec<PushJob>,
    },
    /// The host finished these jobs of this shard's outbox (delivered, dropped by the rules,
    /// or dead-lettered).
    PushesDone {
        sequences: Vec<u64>,
    },
    // Media messages (DESIGN §7).
    /// The host gave back these media references of this shard's release outbox (queued when
    /// a media message's tombstone was applied).
    MediaReleasesDone {
        sequences: Vec<u64>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum ChatChange {
    NewMessage(Message),
    Edit {
        id: MessageId,
        text: String,
    },
    Delete {
        ids: Vec<MessageId>,
    },
    DeleteForMe {
        user: UserId,
        ids: Vec<MessageId>,
    },
    Pin {
        id: Option<MessageId>,
    },
    Member {
        user: UserId,
        change: MemberChange,
    },
    Read {
        user: UserId,
        max_id: MessageId,
    },
    SyncMode {
        fanout_on_read: bool,
    },
    // New variants go last: a variant's place is its tag in older logs. Boxed, so the archived
    // change (and every `Event::Chat` before it) keeps its size.
    /// A message with a photo or document (`Message::media` is not in `Message`'s archive).
    NewMediaMessage {
        message: Box<Message>,
        media: Box<MessageMedia>,
    },
}

impl ChatChange {
    /// The change that appends `message`, keeping its media.
    pub fn new_message(mut message: Message) -> ChatChange {
        match message.media.take() {
            Some(media) => ChatChange::NewMediaMessage { message: Box::new(message), media },
            None => ChatChange::NewMessage(message),
        }
    }

    /// The message this change appends and its media, if it appends one.
    pub fn posted(&self) -> Option<(&Message, Option<&MessageMedia>)> {
        match self {
            ChatChange::NewMessage(message) => Some((message, None)),
            ChatChange::NewMediaMessage { message, media } => Some((message, Some(media))),
            _ => None,
        }
    }

    /// The appended message, whole (media included).
    pub fn posted_message(&self) -> Option<Message> {
        let (message, media) = self.posted()?;
        Some(Message { media: media.cloned().map(Box::new), ..message.clone() })
    }
}

/// Why a record's payload could not be read as an event.
#[derive(Debug, thiserror::Error)]
#[error("a messaging record does not decode: {0}")]
pub struct DecodeError(rancor::Error);

pub fn encode(event: &Event) -> Vec<u8> {
    match rkyv::to_bytes::<rancor::Error>(event) {
        Ok(bytes) => bytes.into_vec(),
        // Serializing plain owned data into a growable buffer has no failure mode but memory.
        Err(error) => panic!("archiving a messaging event failed: {error}"),
    }
}

/// Decodes and validates a record payload (validation also catches a record written by
/// another version of this layer).
pub fn decode(payload: &[u8]) -> Result<Event, DecodeError> {
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    rkyv::from_bytes::<Event, rancor::Error>(&aligned).map_err(DecodeError)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messaging::types::{DeletedMessages, ForwardedFrom, RandomId};

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len() / 2).map(|index| u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).expect("hex")).collect()
    }

    /// Message 3 of chat 7 << 12, by user 5, a reply to message 1.
    fn message(text: &str) -> Message {
        Message {
            id: MessageId(3),
            chat: ChatId(7 << 12),
            sender: UserId(5),
            date: UnixMs(1000),
            random_id: RandomId(99),
            text: text.into(),
            reply_to: Some(MessageId(1)),
            forwarded_from: None,
            edit_date: None,
            deleted: false,
            media: None,
        }
    }

    /// Proves events round-trip through their record payloads and a damaged payload is refused.
    #[test]
    fn events_round_trip() {
        let event = Event::Chat {
            chat: ChatId(7 << 12),
            pts: Pts(3),
            date: UnixMs(1000),
            change: ChatChange::NewMessage(message("hello")),
        };
        let bytes = encode(&event);
        assert_eq!(decode(&bytes).expect("decodes"), event);
        assert!(decode(&bytes[..bytes.len() - 4]).is_err(), "a truncated payload is refused");
    }

    /// Proves boxing `Message::forwarded_from` in memory left its record layout alone: the
    /// bytes below were written by the build before (commit c54dc26), where the field was held
    /// inline; the same event encodes to them now and they decode to it.
    #[test]
    fn a_forwarded_message_keeps_the_record_layout_of_before() {
        const BEFORE: &str = "666f7277617264656400000000000000070000000000000000700000000000000300000000000000\
            e8030000000000000000000000000000030000000000000000700000000000000500000000000000\
            e803000000000000630000000000000089000000a0ffffff01000000000000000100000000000000\
            010000000000000000900000000000002900000000000000060000000000000084030000000000000\
            100000000000000e9030000000000000000000000000000";
        let before = hex(BEFORE);
        let from =
            ForwardedFrom { chat: ChatId(9 << 12), message: MessageId(41), sender: UserId(6), date: UnixMs(900) };
        let event = Event::Chat {
            chat: ChatId(7 << 12),
            pts: Pts(3),
            date: UnixMs(1000),
            change: ChatChange::NewMessage(Message {
                forwarded_from: Some(Box::new(from)),
                edit_date: Some(UnixMs(1001)),
                ..message("forwarded")
            }),
        };
        assert_eq!(encode(&event), before, "the layout changed");
        assert_eq!(decode(&before).expect("decodes"), event);
    }

    /// Proves boxing the body of `Update::DeleteMessagesForEveryone` in memory left its layout
    /// alone, in records as in box and chat log entries of checkpoints: the bytes below were
    /// written by the build before (commit 1245659), where `ids` and `senders` were fields of
    /// the variant.
    #[test]
    fn a_delete_for_everyone_keeps_the_record_layout_of_before() {
        const BEFORE: &str = "02000000000000000300000000000000050000000000000006000000000000000500000000000000\
            1e0000000000000006000000000000001f0000000000000008000000000000000070000000000000\
            0c00000000000000d0070000000000000800000000000000007000000000000090ffffff02000000\
            98ffffff020000000000000000000000000000000000000090ffffff020000000000000000000000\
            00000000000000000000000000000000000000000000000000000000000000000000000000000000\
            0000000000000000000000000000000000000000000000000000000000000000";
        let deleted = DeletedMessages { ids: vec![MessageId(2), MessageId(3)], senders: vec![UserId(5), UserId(6)] };
        let event = Event::BoxAppended {
            chat: ChatId(7 << 12),
            chat_pts: Pts(12),
            date: UnixMs(2000),
            update: Update::DeleteMessagesForEveryone { chat: ChatId(7 << 12), deleted: Box::new(deleted) },
            users: vec![(UserId(5), Pts(30)), (UserId(6), Pts(31))],
        };
        assert_eq!(encode(&event), hex(BEFORE), "the layout changed");
        assert_eq!(decode(&hex(BEFORE)).expect("decodes"), event);
    }

    /// Proves a media message keeps its media through the log.
    #[test]
    fn media_messages_round_trip_and_old_layout_holds() {
        let message = Message {
            id: MessageId(4),
            chat: ChatId(7 << 12),
            sender: UserId(5),
            date: UnixMs(1000),
            random_id: RandomId(99),
            text: "caption".into(),
            reply_to: None,
            forwarded_from: None,
            edit_date: None,
            deleted: false,
            media: Some(Box::new(MessageMedia {
                kind: crate::messaging::types::MediaKind::Photo,
                file: 0xF00 << 12 | 3,
                access_hash: 0xDEAD_BEEF,
                size: 12345,
                name: "cat.jpg".into(),
                mime_type: "image/jpeg".into(),
            })),
        };
        let change = ChatChange::new_message(message.clone());
        assert!(matches!(change, ChatChange::NewMediaMessage { .. }));
        let event = Event::Chat { chat: message.chat, pts: Pts(4), date: UnixMs(1000), change };
        let decoded = decode(&encode(&event)).expect("decodes");
        let Event::Chat { change: ChatChange::NewMediaMessage { message: got, media }, .. } = decoded else {
            panic!("wrong variant: {decoded:?}")
        };
        assert_eq!(Some(media), message.media);
        assert_eq!(got.text, "caption");
    }

    /// Proves authorization events round-trip, and a payload whose device text is not UTF-8
    /// or that is cut short is refused rather than applied.
    #[test]
    fn authorization_events_round_trip_and_refuse_damage() {
        let created = Event::AuthorizationCreated {
            id: AuthorizationId(9 << 12 | 5),
            user: UserId(3 << 12 | 5),
            secret_hash: [0xa5; SECRET_HASH_BYTES],
            device: "phone, version 1.0".into(),
            date: UnixMs(1000),
        };
        let revoked = Event::AuthorizationRevoked { id: AuthorizationId(9 << 12 | 5), user: UserId(3 << 12 | 5) };
        for event in [&created, &revoked] {
            let bytes = encode(event);
            assert_eq!(&decode(&bytes).expect("decodes"), event);
            assert!(decode(&bytes[..bytes.len() - 4]).is_err(), "a truncated payload is refused");
        }
        let mut bytes = encode(&created);
        let at = bytes.windows(5).position(|w| w == b"phone").expect("the device text is in the payload");
        bytes[at] = 0xff;
        assert!(decode(&bytes).is_err(), "a device text that is not UTF-8 is refused");
    }

    /// Records written by the version before media messages (bytes captured from it) still
    /// decode to the same events: `Message::media` is outside the archive and the new variants
    /// did not change the archived size of a chat change or an event.
    #[test]
    fn records_of_the_version_before_media_still_decode() {
        let hex = |text: &str| -> Vec<u8> {
            (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
        };
        let message = Event::Chat {
            chat: ChatId(7 << 12),
            pts: Pts(3),
            date: UnixMs(1000),
            change: ChatChange::NewMessage(Message {
                id: MessageId(3),
                chat: ChatId(7 << 12),
                sender: UserId(5),
                date: UnixMs(1000),
                random_id: RandomId(99),
                text: "hello, a text longer than eight bytes".into(),
                reply_to: Some(MessageId(1)),
                forwarded_from: None,
                edit_date: None,
                deleted: false,
                media: None,
            }),
        };
        let old_message = hex("68656c6c6f2c20612074657874206c6f6e676572207468616e206569676874206279746573000000070000000000000000700000000000000300000000000000e8030000000000000000000000000000030000000000000000700000000000000500000000000000e8030000000000006300000000000000a500000088ffffff0100000000000000010000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000");
        assert_eq!(decode(&old_message).expect("an old record decodes"), message);
        assert_eq!(encode(&message), old_message, "the layout of a plain message did not move");
        let old_done = hex("010000000000000002000000000000000f000000ecffffff02000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000");
        assert_eq!(decode(&old_done).expect("an old record decodes"), Event::PushesDone { sequences: vec![1, 2] });
    }
}
