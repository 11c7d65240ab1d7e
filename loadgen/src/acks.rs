//! The acknowledged-messages file (`--record-acks`): everything `verify` needs to log in as
//! the users concerned and check each acknowledged message. Plain text, one record a line:
//!
//! ```text
//! # ferrogram-loadgen acks v1
//! user <user id> <phone>
//! chat <chat id> <private|group|channel> <member id>,<member id>,...
//! ack <chat id> <message id> <random_id> <sender id>
//! ```
//!
//! `user` and `chat` lines come first (written once setup is done); `ack` lines follow as
//! acknowledgements arrive, in no particular order. Every acknowledgement is written,
//! warm-up and pre-fill included.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use ferrogram_net::ChatKind;

use crate::stats::lock;
use crate::target::{ChatId, MessageId, UserId};

pub const HEADER: &str = "# ferrogram-loadgen acks v1";

/// A parsed acks file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AckFile {
    pub users: BTreeMap<UserId, String>,
    pub chats: BTreeMap<ChatId, ChatRecord>,
    pub acks: Vec<AckRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatRecord {
    pub kind: ChatKind,
    pub members: Vec<UserId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AckRecord {
    pub chat: ChatId,
    pub id: MessageId,
    pub random_id: u64,
    pub sender: UserId,
}

/// Why an acks file cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AckFileError {
    #[error("cannot read the acks file: {0}")]
    Io(#[from] std::io::Error),
    #[error("the acks file does not start with {HEADER:?}")]
    NotAnAcksFile,
    #[error("line {line} of the acks file: {problem}")]
    BadLine { line: usize, problem: String },
}

impl AckFile {
    pub fn read(path: &Path) -> Result<AckFile, AckFileError> {
        AckFile::parse(&std::fs::read_to_string(path)?)
    }

    pub fn parse(text: &str) -> Result<AckFile, AckFileError> {
        let mut lines = text.lines().enumerate();
        if lines.next().map(|(_, line)| line.trim()) != Some(HEADER) {
            return Err(AckFileError::NotAnAcksFile);
        }
        let mut file = AckFile::default();
        for (index, line) in lines {
            let bad = |problem: &str| AckFileError::BadLine { line: index + 1, problem: problem.to_owned() };
            let fields: Vec<&str> = line.split_whitespace().collect();
            let number = |field: usize| -> Result<u64, AckFileError> {
                fields.get(field).and_then(|text| text.parse().ok()).ok_or_else(|| bad("a number is missing or bad"))
            };
            match fields.first().copied() {
                None => {}
                Some(first) if first.starts_with('#') => {}
                Some("user") if fields.len() == 3 => {
                    file.users.insert(UserId(number(1)?), fields[2].to_owned());
                }
                Some("chat") if fields.len() == 4 => {
                    let kind = match fields[2] {
                        "private" => ChatKind::Private,
                        "group" => ChatKind::Group,
                        "channel" => ChatKind::Channel,
                        _ => return Err(bad("the chat kind is not private, group or channel")),
                    };
                    let members = fields[3]
                        .split(',')
                        .map(|id| id.parse().map(UserId).map_err(|_| bad("a member id is bad")))
                        .collect::<Result<Vec<_>, _>>()?;
                    file.chats.insert(ChatId(number(1)?), ChatRecord { kind, members });
                }
                Some("ack") if fields.len() == 5 => file.acks.push(AckRecord {
                    chat: ChatId(number(1)?),
                    id: MessageId(number(2)?),
                    random_id: number(3)?,
                    sender: UserId(number(4)?),
                }),
                Some(_) => return Err(bad("expected a user, chat or ack line")),
            }
        }
        for ack in &file.acks {
            let Some(chat) = file.chats.get(&ack.chat) else {
                return Err(AckFileError::BadLine { line: 0, problem: format!("chat {} has no chat line", ack.chat) });
            };
            if let Some(member) = chat.members.iter().find(|member| !file.users.contains_key(member)) {
                let problem = format!("member {member} of chat {} has no user line", ack.chat);
                return Err(AckFileError::BadLine { line: 0, problem });
            }
        }
        Ok(file)
    }
}

/// Writes an acks file while a run goes on.
#[derive(Debug)]
pub struct AckWriter {
    out: Mutex<BufWriter<File>>,
}

impl AckWriter {
    pub fn create(path: &Path) -> std::io::Result<AckWriter> {
        let mut out = BufWriter::new(File::create(path)?);
        writeln!(out, "{HEADER}")?;
        Ok(AckWriter { out: Mutex::new(out) })
    }

    pub fn user(&self, user: UserId, phone: &str) -> std::io::Result<()> {
        writeln!(lock(&self.out), "user {user} {phone}")
    }

    pub fn chat(&self, chat: ChatId, kind: ChatKind, members: &[UserId]) -> std::io::Result<()> {
        let kind = match kind {
            ChatKind::Private => "private",
            ChatKind::Group => "group",
            ChatKind::Channel => "channel",
        };
        let members: Vec<String> = members.iter().map(ToString::to_string).collect();
        writeln!(lock(&self.out), "chat {chat} {kind} {}", members.join(","))
    }

    pub fn ack(&self, record: AckRecord) -> std::io::Result<()> {
        writeln!(lock(&self.out), "ack {} {} {} {}", record.chat, record.id, record.random_id, record.sender)
    }

    pub fn flush(&self) -> std::io::Result<()> {
        let mut out = lock(&self.out);
        out.flush()?;
        out.get_ref().sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // What the writer writes, the parser reads back; lines that do not fit are refused with
    // their line number.
    #[test]
    fn acks_files_round_trip() {
        let path = std::env::temp_dir().join(format!("loadgen-acks-{}", std::process::id()));
        let writer = AckWriter::create(&path).expect("creates");
        writer.user(UserId(4097), "+19990000001").unwrap();
        writer.user(UserId(8193), "+19990000002").unwrap();
        writer.chat(ChatId(12289), ChatKind::Private, &[UserId(4097), UserId(8193)]).unwrap();
        let ack = AckRecord { chat: ChatId(12289), id: MessageId(1), random_id: 77, sender: UserId(4097) };
        writer.ack(ack).unwrap();
        writer.flush().unwrap();
        let file = AckFile::read(&path).expect("parses");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(file.users.len(), 2);
        assert_eq!(file.chats[&ChatId(12289)].members, vec![UserId(4097), UserId(8193)]);
        assert_eq!(file.acks, vec![ack]);

        assert!(matches!(AckFile::parse("user 1 +1"), Err(AckFileError::NotAnAcksFile)));
        let bad = format!("{HEADER}\nuser 1 +19990000001\nack 5 1 2\n");
        assert!(matches!(AckFile::parse(&bad), Err(AckFileError::BadLine { line: 3, .. })));
        let orphan = format!("{HEADER}\nack 5 1 2 1\n");
        assert!(matches!(AckFile::parse(&orphan), Err(AckFileError::BadLine { .. })));
    }
}
