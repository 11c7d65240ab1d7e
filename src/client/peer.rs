//! Naming a peer on the command line: `@username`, `+phone` or `chat:ID`, and turning the name
//! into a chat or a user with the server's help.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context};
use ferrogram_net::{BlockingClient, ChatId, User};

/// The longest username the client accepts before asking the server (which checks again).
pub const USERNAME_BYTES_MAX: usize = 32;
/// E.164: a `+` then 8 to 15 digits (the protocol's rule for phones).
pub const PHONE_DIGITS_MIN: usize = 8;
pub const PHONE_DIGITS_MAX: usize = 15;

/// Whom a command talks to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// `@username`, without the `@`.
    Username(String),
    /// `+phone`, with the `+`.
    Phone(String),
    /// `chat:ID`: a private, group or channel chat by id.
    Chat(ChatId),
}

/// A chat named directly: `chat:ID` (or a bare ID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChatArgument(pub ChatId);

/// Why a peer name was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    #[error("`{0}`: expected @username, +phone or chat:ID")]
    Unknown(String),
    #[error("`{0}`: a username is letters, digits and `_`, at most {USERNAME_BYTES_MAX} bytes")]
    Username(String),
    #[error("`{0}`: a phone is `+` and {PHONE_DIGITS_MIN} to {PHONE_DIGITS_MAX} digits")]
    Phone(String),
    #[error("`{0}`: expected chat:ID with a numeric ID")]
    Chat(String),
}

impl FromStr for Peer {
    type Err = PeerError;

    fn from_str(text: &str) -> Result<Peer, PeerError> {
        if let Some(username) = text.strip_prefix('@') {
            let valid = !username.is_empty()
                && username.len() <= USERNAME_BYTES_MAX
                && username.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
            return if valid { Ok(Peer::Username(username.to_owned())) } else { Err(PeerError::Username(text.into())) };
        }
        if text.starts_with('+') {
            return parse_phone(text).map(Peer::Phone);
        }
        if let Some(id) = text.strip_prefix("chat:") {
            return id.parse().map(|id| Peer::Chat(ChatId(id))).map_err(|_| PeerError::Chat(text.into()));
        }
        Err(PeerError::Unknown(text.into()))
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Username(username) => write!(f, "@{username}"),
            Peer::Phone(phone) => write!(f, "{phone}"),
            Peer::Chat(chat) => write!(f, "chat:{chat}"),
        }
    }
}

impl FromStr for ChatArgument {
    type Err = PeerError;

    fn from_str(text: &str) -> Result<ChatArgument, PeerError> {
        let id = text.strip_prefix("chat:").unwrap_or(text);
        id.parse().map(|id| ChatArgument(ChatId(id))).map_err(|_| PeerError::Chat(text.into()))
    }
}

/// Checks a phone number in E.164 form, `+` included.
pub fn parse_phone(text: &str) -> Result<String, PeerError> {
    let digits = text.strip_prefix('+').unwrap_or("");
    let valid = (PHONE_DIGITS_MIN..=PHONE_DIGITS_MAX).contains(&digits.len())
        && digits.bytes().all(|byte| byte.is_ascii_digit());
    if valid {
        Ok(text.to_owned())
    } else {
        Err(PeerError::Phone(text.into()))
    }
}

/// The chat a peer names: a user's private chat (opened on first use) or the chat itself.
pub fn resolve_chat(client: &BlockingClient, peer: &Peer) -> anyhow::Result<ChatId> {
    match peer {
        Peer::Chat(chat) => Ok(*chat),
        Peer::Username(_) | Peer::Phone(_) => {
            let user = resolve_user(client, peer)?;
            Ok(client.open_private(user.id)?)
        }
    }
}

/// The user a peer names; a chat is refused, since it is not a person.
pub fn resolve_user(client: &BlockingClient, peer: &Peer) -> anyhow::Result<User> {
    let found = match peer {
        Peer::Username(username) => client.resolve_username(username)?,
        Peer::Phone(phone) => client.resolve_phone(phone)?,
        Peer::Chat(_) => bail!("{peer} is a chat; name a user as @username or +phone"),
    };
    found.with_context(|| format!("no user {peer}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Each of the three peer forms parses to what it names, and near misses are refused with
    // the form they got wrong rather than guessed at.
    #[test]
    fn peers_parse_in_three_forms() {
        assert_eq!("@alice_42".parse(), Ok(Peer::Username("alice_42".into())));
        assert_eq!("+4915112345678".parse(), Ok(Peer::Phone("+4915112345678".into())));
        assert_eq!("chat:81925".parse(), Ok(Peer::Chat(ChatId(81925))));

        assert_eq!("@".parse::<Peer>(), Err(PeerError::Username("@".into())));
        assert_eq!("@al ice".parse::<Peer>(), Err(PeerError::Username("@al ice".into())));
        assert_eq!("+1234".parse::<Peer>(), Err(PeerError::Phone("+1234".into())));
        assert_eq!("+49151x2345678".parse::<Peer>(), Err(PeerError::Phone("+49151x2345678".into())));
        assert_eq!("chat:-1".parse::<Peer>(), Err(PeerError::Chat("chat:-1".into())));
        assert_eq!("alice".parse::<Peer>(), Err(PeerError::Unknown("alice".into())));

        for text in ["@alice_42", "+4915112345678", "chat:81925"] {
            assert_eq!(text.parse::<Peer>().map(|peer| peer.to_string()), Ok(text.to_owned()), "round trip");
        }
    }

    // A chat argument takes `chat:ID` or a bare ID, and nothing that is not a number.
    #[test]
    fn chat_arguments_are_ids() {
        assert_eq!("chat:7".parse(), Ok(ChatArgument(ChatId(7))));
        assert_eq!("7".parse(), Ok(ChatArgument(ChatId(7))));
        assert!("@alice".parse::<ChatArgument>().is_err());
        assert!("chat:".parse::<ChatArgument>().is_err());
    }
}
