//! What one push says, after coalescing and the preview rule: the same for every device of
//! the user; each provider renders it in its own format.

use std::borrow::Cow;
use std::sync::Arc;

use engine::messaging::{ChatId, MessageId, UnixMs, UserId};

use super::config::{PREVIEW_CHARS_MAX, SENDER_NAME_CHARS_MAX};

/// One push to one user about one chat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Notification {
    pub user: UserId,
    pub chat: ChatId,
    /// The newest message it covers.
    pub message: MessageId,
    /// Messages it covers (coalesced within the window).
    pub count: u32,
    /// The user's total unread count.
    pub badge: u32,
    pub date: UnixMs,
    /// Sender and text: present only when the user allows previews for the chat.
    pub preview: Option<Preview>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Preview {
    pub sender_name: Arc<str>,
    pub text: Arc<str>,
}

/// The body of a push without preview: it says that something arrived, nothing more.
pub(crate) const HIDDEN_BODY_ONE: &str = "New message";

impl Notification {
    /// The alert's title: the sender, when previews are allowed.
    pub fn title(&self) -> Option<&str> {
        self.preview.as_ref().map(|preview| &*preview.sender_name)
    }

    /// The alert's body: the latest text, or a count when previews are off.
    pub fn body(&self) -> Cow<'_, str> {
        match &self.preview {
            Some(preview) if !preview.text.is_empty() => Cow::Borrowed(&preview.text),
            _ if self.count > 1 => Cow::Owned(format!("{} new messages", self.count)),
            _ => Cow::Borrowed(HIDDEN_BODY_ONE),
        }
    }

    /// Groups a chat's pushes on the device, so a newer one replaces an older one (and a push
    /// sent again after a restart replaces, rather than doubles, the first).
    pub fn collapse_id(&self) -> String {
        format!("chat-{}", self.chat.0)
    }
}

/// `text` cut to at most `chars_max` characters, with an ellipsis when cut.
pub(crate) fn shorten(text: &str, chars_max: usize) -> String {
    match text.char_indices().nth(chars_max) {
        None => text.to_owned(),
        Some((cut, _)) => {
            let mut short = String::with_capacity(cut + 3);
            short.push_str(&text[..cut.min(text.len())]);
            short.pop();
            short.push('…');
            short
        }
    }
}

pub(crate) fn shorten_preview(text: &str) -> String {
    shorten(text, PREVIEW_CHARS_MAX)
}

pub(crate) fn shorten_sender(name: &str) -> String {
    shorten(name, SENDER_NAME_CHARS_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Previews are cut on character boundaries to the limit, ellipsis included.
    #[test]
    fn shorten_cuts_on_characters() {
        assert_eq!(shorten("hello", 5), "hello");
        assert_eq!(shorten("hello!", 5), "hell…");
        assert_eq!(shorten("привет мир", 4), "при…");
        assert_eq!(shorten("привет мир", 4).chars().count(), 4);
    }

    // Without previews the body names no text, only how many messages came.
    #[test]
    fn hidden_bodies_count_messages() {
        let mut notification = Notification {
            user: UserId(1),
            chat: ChatId(2),
            message: MessageId(3),
            count: 1,
            badge: 4,
            date: UnixMs(5),
            preview: None,
        };
        assert_eq!(notification.body(), "New message");
        assert_eq!(notification.title(), None);
        notification.count = 3;
        assert_eq!(notification.body(), "3 new messages");
        notification.preview = Some(Preview { sender_name: "Ann".into(), text: "hi".into() });
        assert_eq!(notification.body(), "hi");
        assert_eq!(notification.title(), Some("Ann"));
    }
}
