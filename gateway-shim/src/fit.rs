//! Keeping answers within a frame. Counts are limited by the protocol, but a message's text
//! may take up to 16 KiB (4096 characters of 4 bytes), and a media message adds its file's
//! name and MIME type, so a full page of long messages would not fit `FRAME_MAX`. Pages and differences are cut by bytes as well, and say so the way
//! they already say "more remains": a shorter page, or `slice`.

use ferrogram_net::limits::FRAME_MAX;
use ferrogram_net::{ChatDifference, Difference, LiveEvent, Message, Sequenced};

/// The bytes of payload an answer may carry, leaving room for the frame and archive framing.
pub const ANSWER_BYTES_MAX: usize = FRAME_MAX / 4 * 3;

/// A generous estimate of a message's archived size: its text, its file's name and MIME type,
/// plus every fixed field (184 bytes archived, `docs/PROTOCOL.md` §8.1) and alignment.
pub fn message_bytes(message: &Message) -> usize {
    let media = message.media.as_ref().map_or(0, |media| media.name.len() + media.mime_type.len());
    message.text.len() + media + 256
}

/// An estimate of an update's archived size (fixed fields, plus the ids of a deletion).
pub fn update_bytes(update: &Sequenced) -> usize {
    match &update.update {
        ferrogram_net::Update::DeleteMessages { ids, .. } => 64 + ids.len() * 8,
        _ => 96,
    }
}

pub fn event_bytes(event: &LiveEvent) -> usize {
    match event {
        LiveEvent::Box { update, message } | LiveEvent::Chat { update, message, .. } => {
            update_bytes(update) + message.as_ref().map_or(0, message_bytes) + 32
        }
        _ => 32,
    }
}

/// Keeps the first messages of a page that fit (at least one).
pub fn fit_messages(messages: &mut Vec<Message>) {
    let mut bytes = 0;
    let keep = messages
        .iter()
        .position(|message| {
            bytes += message_bytes(message);
            bytes > ANSWER_BYTES_MAX
        })
        .unwrap_or(messages.len());
    messages.truncate(keep.max(1).min(messages.len()));
}

/// Keeps the first updates of a difference that fit with the bodies they reference; the rest
/// is left for the next request. Returns the pts and date of the last update kept when the
/// difference was cut.
fn fit_updates(
    updates: &mut Vec<Sequenced>,
    messages: &mut Vec<Message>,
) -> Option<(ferrogram_net::Pts, ferrogram_net::UnixMs)> {
    let total: usize =
        updates.iter().map(update_bytes).sum::<usize>() + messages.iter().map(message_bytes).sum::<usize>();
    if total <= ANSWER_BYTES_MAX {
        return None;
    }
    let mut bytes = 0;
    let mut kept_bodies = std::collections::HashSet::new();
    let mut keep = 0;
    for update in updates.iter() {
        let mut cost = update_bytes(update);
        let body = referenced(update).and_then(|key| {
            messages.iter().find(|message| (message.chat, message.id) == key).filter(|_| !kept_bodies.contains(&key))
        });
        if let Some(message) = body {
            cost += message_bytes(message);
        }
        if keep > 0 && bytes + cost > ANSWER_BYTES_MAX {
            break;
        }
        bytes += cost;
        if let Some(message) = body {
            kept_bodies.insert((message.chat, message.id));
        }
        keep += 1;
    }
    updates.truncate(keep);
    messages.retain(|message| kept_bodies.contains(&(message.chat, message.id)));
    updates.last().map(|last| (last.pts, last.date))
}

fn referenced(update: &Sequenced) -> Option<(ferrogram_net::ChatId, ferrogram_net::MessageId)> {
    match &update.update {
        ferrogram_net::Update::NewMessage { chat, id, .. } | ferrogram_net::Update::EditMessage { chat, id, .. } => {
            Some((*chat, *id))
        }
        _ => None,
    }
}

/// Cuts a box difference to fit; a cut difference is a slice ending at its last update.
pub fn fit_difference(difference: &mut Difference) {
    if let Some((pts, date)) = fit_updates(&mut difference.updates, &mut difference.messages) {
        difference.slice = true;
        difference.state.pts = pts;
        difference.state.date = date;
    }
}

/// Cuts a chat difference to fit; a cut difference is a slice ending at its last update.
pub fn fit_chat_difference(difference: &mut ChatDifference) {
    if let Some((pts, _)) = fit_updates(&mut difference.updates, &mut difference.messages) {
        difference.slice = true;
        difference.pts = pts;
    }
}

/// Splits live events into groups that each fit one `Updates` frame, in order.
pub fn split_events(events: Vec<LiveEvent>) -> Vec<Vec<LiveEvent>> {
    let mut frames = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for event in events {
        let cost = event_bytes(&event);
        if !current.is_empty() && bytes + cost > ANSWER_BYTES_MAX {
            frames.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += cost;
        current.push(event);
    }
    if !current.is_empty() {
        frames.push(current);
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrogram_net::codec;
    use ferrogram_net::limits::{FILE_NAME_BYTES_MAX, MIME_TYPE_BYTES_MAX};
    use ferrogram_net::{
        BoxState, ChatId, FileId, FileRef, MediaKind, MessageId, MessageMedia, Pts, UnixMs, Update, UserId,
    };

    /// Larger than any message can be: a full text of 4-byte characters (more than a caption
    /// may hold) with a file whose name and MIME type are as long as allowed.
    fn long_message(id: u64) -> Message {
        Message {
            id: MessageId(id),
            chat: ChatId(1),
            sender: UserId(2),
            date: UnixMs(id),
            random_id: id,
            // 4096 characters of 4 bytes: the longest text the engine accepts.
            text: "𝄞".repeat(4096),
            reply_to: None,
            forwarded_from: None,
            edit_date: None,
            deleted: false,
            media: Some(MessageMedia {
                kind: MediaKind::Document,
                file: FileRef { id: FileId(id), access_hash: id },
                size: id,
                name: "n".repeat(FILE_NAME_BYTES_MAX),
                mime_type: "m".repeat(MIME_TYPE_BYTES_MAX),
            }),
        }
    }

    fn new_message(id: u64) -> Sequenced {
        Sequenced {
            pts: Pts(id),
            date: UnixMs(id),
            update: Update::NewMessage { chat: ChatId(1), id: MessageId(id), sender: UserId(2), date: UnixMs(id) },
        }
    }

    // A difference of 1000 maximal messages is cut into a slice that encodes within a frame,
    // and continuing from its end loses nothing.
    #[test]
    fn differences_of_long_messages_fit_a_frame() {
        let updates: Vec<Sequenced> = (1..=1000).map(new_message).collect();
        let messages: Vec<Message> = (1..=1000).map(long_message).collect();
        let state = BoxState { pts: Pts(1000), date: UnixMs(1000), unread: 0, epoch: 0 };
        let mut difference = Difference { updates, messages, state, slice: false };
        fit_difference(&mut difference);
        assert!(difference.slice);
        let kept = difference.updates.len();
        assert!(kept > 10 && kept < 1000, "kept {kept}");
        assert_eq!(difference.state.pts, Pts(kept as u64), "the slice ends at its last update");
        assert_eq!(difference.messages.len(), kept, "every kept update keeps its body");
        let outcome = ferrogram_net::Outcome::Ok(ferrogram_net::Response::Difference(difference));
        codec::encode_response(&mut Vec::new(), 1, &outcome).expect("fits a frame");
    }

    // A history page of 100 maximal messages is shortened to fit; live events are split into
    // frames that each encode.
    #[test]
    fn pages_and_update_frames_fit() {
        let mut page: Vec<Message> = (1..=100).map(long_message).collect();
        fit_messages(&mut page);
        assert!(page.len() < 100 && !page.is_empty());
        let outcome = ferrogram_net::Outcome::Ok(ferrogram_net::Response::Messages(page));
        codec::encode_response(&mut Vec::new(), 1, &outcome).expect("fits a frame");

        let events: Vec<LiveEvent> =
            (1..=256).map(|id| LiveEvent::Box { update: new_message(id), message: Some(long_message(id)) }).collect();
        let frames = split_events(events.clone());
        assert!(frames.len() > 1);
        assert_eq!(frames.concat(), events, "nothing lost or reordered");
        for events in frames {
            codec::encode_updates(&mut Vec::new(), &ferrogram_net::Updates { events }).expect("fits a frame");
        }
    }
}
