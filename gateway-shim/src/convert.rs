//! Conversions between the engine's types and the wire's. `net` knows nothing of the engine,
//! so the gateway is where the two meet; every conversion is a plain field copy.

use engine::messaging as model;
use engine::messaging::MessagingError;
use ferrogram_net as wire;
use wire::{ErrorBody, ErrorCode};

pub fn user_id(id: wire::UserId) -> model::UserId {
    model::UserId(id.0)
}

pub fn chat_id(id: wire::ChatId) -> model::ChatId {
    model::ChatId(id.0)
}

pub fn message_id(id: wire::MessageId) -> model::MessageId {
    model::MessageId(id.0)
}

pub fn message_ids(ids: &[wire::MessageId]) -> Vec<model::MessageId> {
    ids.iter().copied().map(message_id).collect()
}

pub fn pts(pts: wire::Pts) -> model::Pts {
    model::Pts(pts.0)
}

fn unix_ms(date: model::UnixMs) -> wire::UnixMs {
    wire::UnixMs(date.0)
}

/// A profile as `viewer` may see it: the phone number only on the viewer's own profile.
pub fn user(profile: model::UserProfile, viewer: model::UserId) -> wire::User {
    wire::User {
        id: wire::UserId(profile.id.0),
        phone: if profile.id == viewer { profile.phone } else { String::new() },
        first_name: profile.first_name,
        last_name: profile.last_name,
        username: profile.username,
    }
}

pub fn chat(info: model::ChatInfo, viewer: model::UserId) -> wire::Chat {
    wire::Chat {
        id: wire::ChatId(info.id.0),
        kind: match info.kind {
            model::ChatKind::Private => wire::ChatKind::Private,
            model::ChatKind::Group => wire::ChatKind::Group,
            model::ChatKind::Channel => wire::ChatKind::Channel,
        },
        title: info.title,
        members: u32::try_from(info.members).unwrap_or(u32::MAX),
        pts: wire::Pts(info.pts.0),
        top_message: wire::MessageId(info.top_message.0),
        pinned: info.pinned.map(|id| wire::MessageId(id.0)),
        fanout_on_read: info.fanout_on_read,
        epoch: info.epoch,
        peer: info.private_pair.map(|(a, b)| wire::UserId(if a == viewer { b.0 } else { a.0 })),
    }
}

pub fn role(role: model::Role) -> wire::Role {
    match role {
        model::Role::Member => wire::Role::Member,
        model::Role::Admin => wire::Role::Admin,
        model::Role::Creator => wire::Role::Creator,
    }
}

pub fn sent(ack: model::SendAck) -> wire::SentMessage {
    wire::SentMessage {
        chat: wire::ChatId(ack.chat.0),
        id: wire::MessageId(ack.id.0),
        date: unix_ms(ack.date),
        chat_pts: wire::Pts(ack.chat_pts.0),
        sender_pts: ack.sender_pts.map(|pts| wire::Pts(pts.0)),
        duplicate: ack.duplicate,
    }
}

pub fn message(message: &model::Message) -> wire::Message {
    wire::Message {
        id: wire::MessageId(message.id.0),
        chat: wire::ChatId(message.chat.0),
        sender: wire::UserId(message.sender.0),
        date: unix_ms(message.date),
        random_id: message.random_id.0,
        text: message.text.clone(),
        reply_to: message.reply_to.map(|id| wire::MessageId(id.0)),
        forwarded_from: message.forwarded_from.as_deref().map(|from| wire::ForwardedFrom {
            chat: wire::ChatId(from.chat.0),
            message: wire::MessageId(from.message.0),
            sender: wire::UserId(from.sender.0),
            date: unix_ms(from.date),
        }),
        edit_date: message.edit_date.map(unix_ms),
        deleted: message.deleted,
        // A tombstone shows nothing of what it was, its file included.
        media: message.media.as_deref().filter(|_| !message.deleted).map(message_media),
    }
}

/// A media message's file as its readers see it. The reference goes along: whoever can see
/// the message may send the same file on (`SendMedia`), as Telegram hands out documents.
fn message_media(media: &model::MessageMedia) -> wire::MessageMedia {
    wire::MessageMedia {
        kind: match media.kind {
            model::MediaKind::Photo => wire::MediaKind::Photo,
            model::MediaKind::Document => wire::MediaKind::Document,
        },
        file: wire::FileRef { id: wire::FileId(media.file), access_hash: media.access_hash },
        size: media.size,
        name: media.name.clone(),
        mime_type: media.mime_type.clone(),
    }
}

pub fn media_kind(kind: wire::MediaKind) -> model::MediaKind {
    match kind {
        wire::MediaKind::Photo => model::MediaKind::Photo,
        wire::MediaKind::Document => model::MediaKind::Document,
    }
}

pub fn box_state(state: model::BoxState) -> wire::BoxState {
    wire::BoxState { pts: wire::Pts(state.pts.0), date: unix_ms(state.date), unread: state.unread, epoch: state.epoch }
}

fn member_change(change: model::MemberChange) -> wire::MemberChange {
    match change {
        model::MemberChange::Joined => wire::MemberChange::Joined,
        model::MemberChange::Added { by } => wire::MemberChange::Added { by: wire::UserId(by.0) },
        model::MemberChange::Left => wire::MemberChange::Left,
        model::MemberChange::Removed { by } => wire::MemberChange::Removed { by: wire::UserId(by.0) },
        model::MemberChange::Promoted { by } => wire::MemberChange::Promoted { by: wire::UserId(by.0) },
    }
}

pub fn update(update: &model::Update) -> wire::Update {
    use model::Update as U;
    let chat = |chat: &model::ChatId| wire::ChatId(chat.0);
    // Clients are told the same of both kinds of delete: these messages are gone for them.
    let wire_delete = |c: &model::ChatId, ids: &[model::MessageId]| wire::Update::DeleteMessages {
        chat: chat(c),
        ids: ids.iter().map(|id| wire::MessageId(id.0)).collect(),
    };
    match update {
        U::NewMessage { chat: c, id, sender, date } => wire::Update::NewMessage {
            chat: chat(c),
            id: wire::MessageId(id.0),
            sender: wire::UserId(sender.0),
            date: unix_ms(*date),
        },
        U::EditMessage { chat: c, id, edit_date } => {
            wire::Update::EditMessage { chat: chat(c), id: wire::MessageId(id.0), edit_date: unix_ms(*edit_date) }
        }
        U::DeleteMessages { chat: c, ids } => wire_delete(c, ids),
        U::DeleteMessagesForEveryone { chat: c, deleted } => wire_delete(c, &deleted.ids),
        U::ReadInbox { chat: c, max_id, unread } => {
            wire::Update::ReadInbox { chat: chat(c), max_id: wire::MessageId(max_id.0), unread: *unread }
        }
        U::ReadOutbox { chat: c, max_id } => {
            wire::Update::ReadOutbox { chat: chat(c), max_id: wire::MessageId(max_id.0) }
        }
        U::PinMessage { chat: c, id } => {
            wire::Update::PinMessage { chat: chat(c), id: id.map(|id| wire::MessageId(id.0)) }
        }
        U::ChatMember { chat: c, user, change, fanout_on_read } => wire::Update::ChatMember {
            chat: chat(c),
            user: wire::UserId(user.0),
            change: member_change(*change),
            fanout_on_read: *fanout_on_read,
        },
        U::ChatSyncMode { chat: c, fanout_on_read } => {
            wire::Update::ChatSyncMode { chat: chat(c), fanout_on_read: *fanout_on_read }
        }
    }
}

pub fn sequenced(sequenced: &model::Sequenced) -> wire::Sequenced {
    wire::Sequenced {
        pts: wire::Pts(sequenced.pts.0),
        date: unix_ms(sequenced.date),
        update: update(&sequenced.update),
    }
}

pub fn difference(difference: model::Difference) -> wire::Difference {
    wire::Difference {
        updates: difference.updates.iter().map(sequenced).collect(),
        messages: difference.messages.iter().map(message).collect(),
        state: box_state(difference.state),
        slice: difference.slice,
    }
}

pub fn chat_difference(difference: model::ChatDifference) -> wire::ChatDifference {
    wire::ChatDifference {
        updates: difference.updates.iter().map(sequenced).collect(),
        messages: difference.messages.iter().map(message).collect(),
        pts: wire::Pts(difference.pts.0),
        epoch: difference.epoch,
        slice: difference.slice,
    }
}

pub fn dialog(dialog: &model::Dialog) -> wire::Dialog {
    wire::Dialog {
        chat: wire::ChatId(dialog.chat.0),
        top_message: wire::MessageId(dialog.top_message.0),
        top_date: unix_ms(dialog.top_date),
        read_inbox_max: wire::MessageId(dialog.read_inbox_max.0),
        read_outbox_max: wire::MessageId(dialog.read_outbox_max.0),
        unread: dialog.unread,
        fanout_on_read: dialog.fanout_on_read,
    }
}

pub fn device_kind(kind: wire::DeviceKind) -> model::DeviceKind {
    match kind {
        wire::DeviceKind::Apns => model::DeviceKind::Apns,
        wire::DeviceKind::Fcm => model::DeviceKind::Fcm,
        wire::DeviceKind::WebPush => model::DeviceKind::WebPush,
        wire::DeviceKind::Webhook => model::DeviceKind::Webhook,
    }
}

pub fn push_device(device: model::PushDevice) -> wire::PushDevice {
    wire::PushDevice {
        kind: match device.kind {
            model::DeviceKind::Apns => wire::DeviceKind::Apns,
            model::DeviceKind::Fcm => wire::DeviceKind::Fcm,
            model::DeviceKind::WebPush => wire::DeviceKind::WebPush,
            model::DeviceKind::Webhook => wire::DeviceKind::Webhook,
        },
        token: device.token,
        app_sandbox: device.app_sandbox,
        no_muted: device.no_muted,
    }
}

pub fn notify_settings(settings: model::NotifySettings) -> wire::NotifySettings {
    wire::NotifySettings { mute_until: unix_ms(settings.mute_until), show_previews: settings.show_previews }
}

/// The wire error for an engine refusal. Storage failures are logged by the caller and
/// reach the client as `INTERNAL` without their details.
pub fn error(error: &MessagingError) -> ErrorBody {
    use MessagingError as E;
    let code = match error {
        E::InvalidArgument(_) | E::NoMedia(..) => ErrorCode::InvalidArgument,
        E::TooLong { .. } => ErrorCode::TooLarge,
        E::UnknownUser(_) | E::UnknownChat(_) | E::UnknownMessage(..) => ErrorCode::NotFound,
        // Never uploaded, expired, deleted, or a wrong access hash: one answer for all, so a
        // client cannot probe for files (docs/PROTOCOL.md §4.4).
        E::FileUnavailable => ErrorCode::NotFound,
        E::PhoneTaken(_) | E::UsernameTaken | E::RandomIdReused => ErrorCode::Conflict,
        E::NotMember(_) | E::NotAdmin | E::Blocked | E::NotSender => ErrorCode::PermissionDenied,
        E::DifferenceTooLong(_) => ErrorCode::DifferenceTooLong,
        E::Overloaded => ErrorCode::Overloaded,
        E::Unavailable => ErrorCode::Unavailable,
        E::Storage(_) => return ErrorBody::new(ErrorCode::Internal, "internal error"),
        _ => return error_of_newer_variant(error),
    };
    let mut body = ErrorBody::new(code, error.to_string());
    if code == ErrorCode::Overloaded {
        body.retry_after_s = 1;
    }
    body
}

fn error_of_newer_variant(error: &MessagingError) -> ErrorBody {
    match error {
        MessagingError::Unauthorized => ErrorBody::new(ErrorCode::AuthInvalid, "the token is not valid"),
        MessagingError::TooManyAuthorizations => ErrorBody::new(ErrorCode::Conflict, error.to_string()),
        _ => ErrorBody::new(ErrorCode::Internal, error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo_message(deleted: bool) -> model::Message {
        model::Message {
            id: model::MessageId(3),
            chat: model::ChatId(7 << 12 | 5),
            sender: model::UserId(9 << 12 | 5),
            date: model::UnixMs(1_700_000_000_000),
            random_id: model::RandomId(11),
            text: if deleted { String::new() } else { "a caption".into() },
            reply_to: None,
            forwarded_from: None,
            edit_date: None,
            deleted,
            media: Some(Box::new(model::MessageMedia {
                kind: model::MediaKind::Photo,
                file: 4 << 12 | 5,
                access_hash: 0xfeed,
                size: 1234,
                name: "cat.jpg".into(),
                mime_type: "image/jpeg".into(),
            })),
        }
    }

    // A media message reaches the wire with its file's reference and description; a tombstone
    // shows no file even if the engine still knew one.
    #[test]
    fn media_messages_carry_their_file() {
        let media = message(&photo_message(false)).media.expect("media");
        assert_eq!(media.kind, wire::MediaKind::Photo);
        assert_eq!(media.file, wire::FileRef { id: wire::FileId(4 << 12 | 5), access_hash: 0xfeed });
        assert_eq!((media.size, media.name.as_str(), media.mime_type.as_str()), (1234, "cat.jpg", "image/jpeg"));
        assert_eq!(message(&photo_message(true)).media, None);
        assert_eq!(media_kind(wire::MediaKind::Document), model::MediaKind::Document);
    }

    // A file that is not available reads as not found (one answer for a wrong access hash and
    // a missing file); a message without media is a bad argument.
    #[test]
    fn media_errors_are_typed() {
        assert_eq!(error(&MessagingError::FileUnavailable).code, ErrorCode::NotFound);
        let no_media = error(&MessagingError::NoMedia(model::ChatId(1), model::MessageId(2)));
        assert_eq!(no_media.code, ErrorCode::InvalidArgument);
        assert!(no_media.message.contains("no media"), "{}", no_media.message);
    }
}
