//! `ferrogram-loadgen verify`: checks, through the normal client API, that every message an
//! acks file records as acknowledged is in its chat's history exactly once with its
//! random_id and sender, and in every member's updates exactly once and in order: the box of
//! each member for chats fanned out on write (`GetDifference` from pts 0; the sender's box
//! gets its own message too), the chat's own sequence for channels (`GetChatDifference` from
//! pts 0, read by one member: the sequence is the chat's, the same for every subscriber).
//! It is how a crash test proves nothing acknowledged was lost or applied twice.
//!
//! The checks are written against [`VerifyApi`], so they are tested on an in-memory fake; the
//! real one ([`FerrogramVerifyApi`]) logs in as each user with the `fixed:` code.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

use ferrogram_net::client::{connect_blocking_timeout, BlockingClient, ClientError, SignInOutcome};
use ferrogram_net::{ChatKind, ErrorCode, Pts, Update};

use crate::acks::{AckFile, AckRecord};
use crate::limits::{
    CONNECT_TIMEOUT, VERIFY_CALL_TIMEOUT, VERIFY_DIFFERENCE_PAGE, VERIFY_HISTORY_PAGE, VERIFY_PROBLEMS_LISTED_MAX,
};
use crate::stats::lock;
use crate::target::{ChatId, MessageId, UserId};

/// A user to read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reader<'a> {
    pub user: UserId,
    pub phone: &'a str,
}

/// One message as history shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub id: MessageId,
    pub random_id: u64,
    pub sender: UserId,
}

/// What verify reads from a server.
pub trait VerifyApi: Sync {
    /// Every message of `chat` that `reader` can see, in any order.
    fn history(&self, reader: Reader<'_>, chat: ChatId) -> Result<Vec<Seen>, ApiError>;
    /// The new-message entries of the reader's box from its start, in pts order; `None` when
    /// the box no longer holds its first entries (it keeps a bounded history).
    fn box_messages(&self, reader: Reader<'_>) -> Result<Option<Vec<(ChatId, MessageId)>>, ApiError>;
    /// The new-message entries of a chat fanned out on read, from its start, in pts order;
    /// `None` when the chat no longer holds its first entries.
    fn chat_messages(&self, reader: Reader<'_>, chat: ChatId) -> Result<Option<Vec<MessageId>>, ApiError>;
}

/// A read that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    #[error("as user {user}: {source}")]
    Client {
        user: UserId,
        #[source]
        source: ClientError,
    },
    #[error("as user {user}: the phone {phone} has no account (was the acks file made against this server?)")]
    NoAccount { user: UserId, phone: String },
    #[error("as user {user}: logged in as {actual} instead")]
    WrongUser { user: UserId, actual: UserId },
}

/// Something wrong with an acknowledged message.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Problem {
    /// The message is not in its chat's history.
    MissingFromHistory { chat: ChatId, id: MessageId, random_id: u64 },
    /// History has the id with another random_id or sender.
    Mismatch { chat: ChatId, id: MessageId, random_id: u64, found_random_id: u64, found_sender: UserId },
    /// History holds the random_id more than once: a send was applied twice.
    DuplicateInHistory { chat: ChatId, random_id: u64, ids: Vec<MessageId> },
    /// Two acknowledgements of one random_id in one chat named different messages.
    AckedAsTwoMessages { chat: ChatId, random_id: u64, ids: Vec<MessageId> },
    /// A member's updates (`user`, or the chat's own sequence when `None`) lack the message.
    MissingFromUpdates { user: Option<UserId>, chat: ChatId, id: MessageId },
    /// A member's updates hold it more than once.
    DuplicateInUpdates { user: Option<UserId>, chat: ChatId, id: MessageId, times: usize },
    /// A member's updates hold it after a later message of the same chat.
    OutOfOrder { user: Option<UserId>, chat: ChatId, id: MessageId, after: MessageId },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whose = |user: &Option<UserId>| match user {
            Some(user) => format!("the updates of user {user}"),
            None => "the chat's update sequence".to_owned(),
        };
        match self {
            Problem::MissingFromHistory { chat, id, random_id } => {
                write!(f, "MISSING: chat {chat} message {id} (random_id {random_id}) is not in the history")
            }
            Problem::Mismatch { chat, id, random_id, found_random_id, found_sender } => write!(
                f,
                "MISMATCH: chat {chat} message {id} was acknowledged for random_id {random_id}, history has \
                 random_id {found_random_id} from user {found_sender}"
            ),
            Problem::DuplicateInHistory { chat, random_id, ids } => {
                write!(f, "DUPLICATE: chat {chat} holds random_id {random_id} as messages {ids:?}")
            }
            Problem::AckedAsTwoMessages { chat, random_id, ids } => {
                write!(f, "DUPLICATE: random_id {random_id} in chat {chat} was acknowledged as messages {ids:?}")
            }
            Problem::MissingFromUpdates { user, chat, id } => {
                write!(f, "MISSING: chat {chat} message {id} is not in {}", whose(user))
            }
            Problem::DuplicateInUpdates { user, chat, id, times } => {
                write!(f, "DUPLICATE: chat {chat} message {id} is {times} times in {}", whose(user))
            }
            Problem::OutOfOrder { user, chat, id, after } => {
                write!(f, "ORDER: chat {chat} message {id} comes after message {after} in {}", whose(user))
            }
        }
    }
}

/// What verify found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Distinct acknowledged messages checked.
    pub messages: usize,
    pub chats: usize,
    pub histories_read: usize,
    pub boxes_read: usize,
    pub sequences_read: usize,
    pub problems: Vec<Problem>,
    /// What could not be checked because the server no longer holds it.
    pub unverifiable: Vec<String>,
}

impl VerifyReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty() && self.unverifiable.is_empty()
    }

    /// The process exit code: 0 all present exactly once, 1 problems, 3 only unverifiable.
    pub fn exit_code(&self) -> i32 {
        if !self.problems.is_empty() {
            1
        } else if !self.unverifiable.is_empty() {
            3
        } else {
            0
        }
    }

    pub fn text(&self) -> String {
        let mut out = format!(
            "verify: {} acknowledged messages in {} chats; read {} histories, {} update boxes, {} chat sequences\n",
            self.messages, self.chats, self.histories_read, self.boxes_read, self.sequences_read
        );
        let count = |kind: &str| self.problems.iter().filter(|problem| problem.to_string().starts_with(kind)).count();
        out.push_str(&format!(
            "problems: {} ({} missing, {} duplicate, {} mismatched, {} out of order)\n",
            self.problems.len(),
            count("MISSING"),
            count("DUPLICATE"),
            count("MISMATCH"),
            count("ORDER")
        ));
        for problem in self.problems.iter().take(VERIFY_PROBLEMS_LISTED_MAX) {
            out.push_str(&format!("  {problem}\n"));
        }
        if self.problems.len() > VERIFY_PROBLEMS_LISTED_MAX {
            out.push_str(&format!("  ... and {} more\n", self.problems.len() - VERIFY_PROBLEMS_LISTED_MAX));
        }
        for note in &self.unverifiable {
            out.push_str(&format!("UNVERIFIABLE: {note}\n"));
        }
        out.push_str(match self.exit_code() {
            0 => "OK: every acknowledged message is present exactly once, in order\n",
            1 => "FAILED: acknowledged messages are missing, duplicated or out of order\n",
            _ => "INCOMPLETE: no problem found, but not everything could be checked\n",
        });
        out
    }
}

/// Checks every acknowledgement of `file` through `api`, reading with `threads` threads.
pub fn check(file: &AckFile, api: &dyn VerifyApi, threads: usize) -> Result<VerifyReport, ApiError> {
    let mut report = VerifyReport::default();

    // Distinct acknowledgements per chat: (id → random_id, sender); one random_id acknowledged
    // as two messages is already a duplicate.
    let mut acked: BTreeMap<ChatId, BTreeMap<MessageId, AckRecord>> = BTreeMap::new();
    let mut by_random_id: HashMap<(ChatId, u64), BTreeSet<MessageId>> = HashMap::new();
    for ack in &file.acks {
        acked.entry(ack.chat).or_default().insert(ack.id, *ack);
        by_random_id.entry((ack.chat, ack.random_id)).or_default().insert(ack.id);
    }
    for ((chat, random_id), ids) in &by_random_id {
        if ids.len() > 1 {
            let ids = ids.iter().copied().collect();
            report.problems.push(Problem::AckedAsTwoMessages { chat: *chat, random_id: *random_id, ids });
        }
    }
    report.messages = acked.values().map(BTreeMap::len).sum();
    report.chats = acked.len();

    // The reads: each chat's history (and a channel's sequence) by its first member, and the
    // box of every member of a chat fanned out on write.
    let mut work: Vec<Work> = Vec::new();
    let mut box_users: BTreeSet<UserId> = BTreeSet::new();
    for chat in acked.keys() {
        let record = &file.chats[chat];
        let reader = record.members[0];
        work.push(Work::History { chat: *chat, reader });
        if record.kind == ChatKind::Channel {
            work.push(Work::Sequence { chat: *chat, reader });
        } else {
            box_users.extend(record.members.iter().copied());
        }
    }
    work.extend(box_users.into_iter().map(|user| Work::Box { user }));

    // One user's reads run one after another: a login code is per phone, so two logins of
    // one user at once would overwrite each other's code.
    let mut by_reader: BTreeMap<UserId, Vec<Work>> = BTreeMap::new();
    for item in &work {
        by_reader.entry(item.reader()).or_default().push(*item);
    }
    let by_reader: Vec<(UserId, Vec<Work>)> = by_reader.into_iter().collect();
    let results: Mutex<Vec<(Work, Read)>> = Mutex::new(Vec::with_capacity(work.len()));
    let failure: Mutex<Option<ApiError>> = Mutex::new(None);
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, by_reader.len().max(1)) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Relaxed);
                if index >= by_reader.len() || lock(&failure).is_some() {
                    return;
                }
                let (user, items) = &by_reader[index];
                let reader = Reader { user: *user, phone: &file.users[user] };
                for &item in items {
                    let read = match item {
                        Work::History { chat, .. } => api.history(reader, chat).map(Read::History),
                        Work::Box { .. } => api.box_messages(reader).map(Read::Box),
                        Work::Sequence { chat, .. } => api.chat_messages(reader, chat).map(Read::Sequence),
                    };
                    match read {
                        Ok(read) => lock(&results).push((item, read)),
                        Err(error) => {
                            lock(&failure).get_or_insert(error);
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(error) = failure.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner) {
        return Err(error);
    }
    let mut results = results.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    results.sort_by_key(|(work, _)| *work);

    for (item, read) in results {
        match (item, read) {
            (Work::History { chat, .. }, Read::History(seen)) => {
                report.histories_read += 1;
                check_history(chat, &acked[&chat], &seen, &mut report.problems);
            }
            (Work::Box { user }, Read::Box(None)) => {
                report.unverifiable.push(format!(
                    "the update box of user {user} no longer starts at pts 1 (the server keeps a bounded box \
                     history): its updates were not checked"
                ));
            }
            (Work::Box { user }, Read::Box(Some(entries))) => {
                report.boxes_read += 1;
                let mine: BTreeSet<ChatId> = acked
                    .keys()
                    .copied()
                    .filter(|chat| {
                        let record = &file.chats[chat];
                        record.kind != ChatKind::Channel && record.members.contains(&user)
                    })
                    .collect();
                for chat in mine {
                    let ids: Vec<MessageId> =
                        entries.iter().filter(|(entry_chat, _)| *entry_chat == chat).map(|(_, id)| *id).collect();
                    check_updates(Some(user), chat, &acked[&chat], &ids, &mut report.problems);
                }
            }
            (Work::Sequence { chat, .. }, Read::Sequence(None)) => {
                report.unverifiable.push(format!(
                    "channel {chat} no longer holds its sequence from pts 1: its updates were not checked"
                ));
            }
            (Work::Sequence { chat, .. }, Read::Sequence(Some(ids))) => {
                report.sequences_read += 1;
                check_updates(None, chat, &acked[&chat], &ids, &mut report.problems);
            }
            (item, _) => unreachable!("each read answers its own kind of work: {item:?}"),
        }
    }
    report.problems.sort();
    Ok(report)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Work {
    History { chat: ChatId, reader: UserId },
    Sequence { chat: ChatId, reader: UserId },
    Box { user: UserId },
}

impl Work {
    fn reader(&self) -> UserId {
        match *self {
            Work::History { reader, .. } | Work::Sequence { reader, .. } => reader,
            Work::Box { user } => user,
        }
    }
}

enum Read {
    History(Vec<Seen>),
    Box(Option<Vec<(ChatId, MessageId)>>),
    Sequence(Option<Vec<MessageId>>),
}

fn check_history(chat: ChatId, acked: &BTreeMap<MessageId, AckRecord>, seen: &[Seen], problems: &mut Vec<Problem>) {
    let by_id: HashMap<MessageId, Seen> = seen.iter().map(|message| (message.id, *message)).collect();
    let mut by_random_id: HashMap<u64, Vec<MessageId>> = HashMap::new();
    for message in seen {
        by_random_id.entry(message.random_id).or_default().push(message.id);
    }
    for ack in acked.values() {
        match by_id.get(&ack.id) {
            None => problems.push(Problem::MissingFromHistory { chat, id: ack.id, random_id: ack.random_id }),
            Some(found) if found.random_id != ack.random_id || found.sender != ack.sender => {
                problems.push(Problem::Mismatch {
                    chat,
                    id: ack.id,
                    random_id: ack.random_id,
                    found_random_id: found.random_id,
                    found_sender: found.sender,
                })
            }
            Some(_) => {}
        }
        if let Some(ids) = by_random_id.get(&ack.random_id).filter(|ids| ids.len() > 1) {
            let mut ids = ids.clone();
            ids.sort();
            let problem = Problem::DuplicateInHistory { chat, random_id: ack.random_id, ids };
            if !problems.contains(&problem) {
                problems.push(problem);
            }
        }
    }
}

/// `ids`: the chat's new-message entries in one member's updates, in order.
fn check_updates(
    user: Option<UserId>,
    chat: ChatId,
    acked: &BTreeMap<MessageId, AckRecord>,
    ids: &[MessageId],
    problems: &mut Vec<Problem>,
) {
    let mut times: HashMap<MessageId, usize> = HashMap::new();
    let mut newest: Option<MessageId> = None;
    for &id in ids.iter().filter(|id| acked.contains_key(id)) {
        *times.entry(id).or_default() += 1;
        match newest {
            Some(after) if id < after => problems.push(Problem::OutOfOrder { user, chat, id, after }),
            _ => newest = Some(id),
        }
    }
    for &id in acked.keys() {
        match times.get(&id).copied().unwrap_or(0) {
            0 => problems.push(Problem::MissingFromUpdates { user, chat, id }),
            1 => {}
            times => problems.push(Problem::DuplicateInUpdates { user, chat, id, times }),
        }
    }
}

/// Reads a running `ferrogram serve`, logging in as each user with the `fixed:` code (and
/// logging out again after each read).
#[derive(Debug)]
pub struct FerrogramVerifyApi {
    address: SocketAddr,
    code: String,
}

impl FerrogramVerifyApi {
    pub fn new(address: SocketAddr, code: String) -> FerrogramVerifyApi {
        FerrogramVerifyApi { address, code }
    }

    /// Runs `read` on a connection logged in as `reader`.
    fn as_user<T>(
        &self,
        reader: Reader<'_>,
        read: impl FnOnce(&BlockingClient) -> Result<T, ClientError>,
    ) -> Result<T, ApiError> {
        let failed = |source| ApiError::Client { user: reader.user, source };
        let client = connect_blocking_timeout(self.address, "ferrogram-loadgen verify", CONNECT_TIMEOUT)
            .map_err(failed)?
            .with_call_timeout(VERIFY_CALL_TIMEOUT);
        client.send_code(reader.phone).map_err(failed)?;
        let authorized = match client.sign_in(reader.phone, &self.code).map_err(failed)? {
            SignInOutcome::Authorized(authorized) => authorized,
            SignInOutcome::SignUpRequired => {
                return Err(ApiError::NoAccount { user: reader.user, phone: reader.phone.to_owned() })
            }
        };
        if authorized.user.id != reader.user {
            return Err(ApiError::WrongUser { user: reader.user, actual: authorized.user.id });
        }
        let result = read(&client).map_err(failed);
        // Logging out keeps the user's logins under the server's bound; a failure here does
        // not change what was read.
        let _ = client.log_out();
        let _ = client.close();
        result
    }
}

impl VerifyApi for FerrogramVerifyApi {
    fn history(&self, reader: Reader<'_>, chat: ChatId) -> Result<Vec<Seen>, ApiError> {
        self.as_user(reader, |client| {
            let mut seen = Vec::new();
            let mut offset = MessageId(0);
            loop {
                let page = client.get_history(chat, offset, VERIFY_HISTORY_PAGE)?;
                let Some(oldest) = page.last().map(|message| message.id) else { break };
                seen.extend(page.iter().map(|message| Seen {
                    id: message.id,
                    random_id: message.random_id,
                    sender: message.sender,
                }));
                if oldest.0 <= 1 {
                    break;
                }
                offset = oldest;
            }
            Ok(seen)
        })
    }

    fn box_messages(&self, reader: Reader<'_>) -> Result<Option<Vec<(ChatId, MessageId)>>, ApiError> {
        self.as_user(reader, |client| {
            let mut entries = Vec::new();
            let mut pts = Pts(0);
            loop {
                let difference = match client.get_difference(pts, VERIFY_DIFFERENCE_PAGE) {
                    Ok(difference) => difference,
                    Err(error) if error.code() == Some(ErrorCode::DifferenceTooLong) => return Ok(None),
                    Err(error) => return Err(error),
                };
                for sequenced in &difference.updates {
                    if let Update::NewMessage { chat, id, .. } = sequenced.update {
                        entries.push((chat, id));
                    }
                }
                if !difference.slice || difference.state.pts <= pts {
                    break;
                }
                pts = difference.state.pts;
            }
            Ok(Some(entries))
        })
    }

    fn chat_messages(&self, reader: Reader<'_>, chat: ChatId) -> Result<Option<Vec<MessageId>>, ApiError> {
        self.as_user(reader, |client| {
            let mut ids = Vec::new();
            let mut pts = Pts(0);
            loop {
                let difference = match client.get_chat_difference(chat, pts, VERIFY_DIFFERENCE_PAGE) {
                    Ok(difference) => difference,
                    Err(error) if error.code() == Some(ErrorCode::DifferenceTooLong) => return Ok(None),
                    Err(error) => return Err(error),
                };
                for sequenced in &difference.updates {
                    if let Update::NewMessage { id, .. } = sequenced.update {
                        ids.push(id);
                    }
                }
                if !difference.slice || difference.pts <= pts {
                    break;
                }
                pts = difference.pts;
            }
            Ok(Some(ids))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acks::ChatRecord;

    /// An in-memory server: histories, boxes and channel sequences as the test writes them.
    #[derive(Default)]
    struct FakeApi {
        histories: HashMap<ChatId, Vec<Seen>>,
        boxes: HashMap<UserId, Option<Vec<(ChatId, MessageId)>>>,
        sequences: HashMap<ChatId, Vec<MessageId>>,
    }

    impl VerifyApi for FakeApi {
        fn history(&self, _reader: Reader<'_>, chat: ChatId) -> Result<Vec<Seen>, ApiError> {
            Ok(self.histories.get(&chat).cloned().unwrap_or_default())
        }
        fn box_messages(&self, reader: Reader<'_>) -> Result<Option<Vec<(ChatId, MessageId)>>, ApiError> {
            Ok(self.boxes.get(&reader.user).cloned().unwrap_or(Some(Vec::new())))
        }
        fn chat_messages(&self, _reader: Reader<'_>, chat: ChatId) -> Result<Option<Vec<MessageId>>, ApiError> {
            Ok(Some(self.sequences.get(&chat).cloned().unwrap_or_default()))
        }
    }

    const ALICE: UserId = UserId(1);
    const BOB: UserId = UserId(2);
    const DM: ChatId = ChatId(10);
    const CHANNEL: ChatId = ChatId(20);

    /// Three messages in a private chat of Alice and Bob, two posts in a channel; the fake
    /// server holds all of them exactly once.
    fn world() -> (AckFile, FakeApi) {
        let mut file = AckFile::default();
        file.users.insert(ALICE, "+19990000001".into());
        file.users.insert(BOB, "+19990000002".into());
        file.chats.insert(DM, ChatRecord { kind: ChatKind::Private, members: vec![ALICE, BOB] });
        file.chats.insert(CHANNEL, ChatRecord { kind: ChatKind::Channel, members: vec![ALICE, BOB] });
        let mut api = FakeApi::default();
        for id in 1..=3u64 {
            let sender = if id == 2 { BOB } else { ALICE };
            file.acks.push(AckRecord { chat: DM, id: MessageId(id), random_id: 100 + id, sender });
            api.histories.entry(DM).or_default().push(Seen { id: MessageId(id), random_id: 100 + id, sender });
        }
        let dm_box: Vec<(ChatId, MessageId)> = (1..=3).map(|id| (DM, MessageId(id))).collect();
        api.boxes.insert(ALICE, Some(dm_box.clone()));
        api.boxes.insert(BOB, Some(dm_box));
        for id in 1..=2u64 {
            file.acks.push(AckRecord { chat: CHANNEL, id: MessageId(id), random_id: 200 + id, sender: ALICE });
            api.histories.entry(CHANNEL).or_default().push(Seen {
                id: MessageId(id),
                random_id: 200 + id,
                sender: ALICE,
            });
            api.sequences.entry(CHANNEL).or_default().push(MessageId(id));
        }
        (file, api)
    }

    // Everything acknowledged is there exactly once: verify passes and reads each history,
    // each member's box and the channel's sequence.
    #[test]
    fn a_complete_server_passes() {
        let (file, api) = world();
        let report = check(&file, &api, 4).expect("reads");
        assert_eq!(report.problems, vec![]);
        assert_eq!((report.messages, report.histories_read, report.boxes_read, report.sequences_read), (5, 2, 2, 1));
        assert_eq!(report.exit_code(), 0);
        assert!(report.text().contains("OK:"));
    }

    // A message lost from history and from Bob's box, and a channel post lost from the
    // sequence, are each reported as missing where they are missing, and verify fails.
    #[test]
    fn a_missing_message_is_caught() {
        let (file, mut api) = world();
        api.histories.get_mut(&DM).unwrap().retain(|seen| seen.id != MessageId(2));
        api.boxes.insert(BOB, Some(vec![(DM, MessageId(1)), (DM, MessageId(3))]));
        api.sequences.get_mut(&CHANNEL).unwrap().pop();
        let report = check(&file, &api, 2).expect("reads");
        assert_eq!(
            report.problems,
            vec![
                Problem::MissingFromHistory { chat: DM, id: MessageId(2), random_id: 102 },
                Problem::MissingFromUpdates { user: None, chat: CHANNEL, id: MessageId(2) },
                Problem::MissingFromUpdates { user: Some(BOB), chat: DM, id: MessageId(2) },
            ]
        );
        assert_eq!(report.exit_code(), 1);
        assert!(report.text().contains("3 missing"), "{}", report.text());
    }

    // A send applied twice (its random_id under two message ids), an update delivered twice
    // into a box, and a box whose updates come out of order are each caught.
    #[test]
    fn a_duplicated_message_is_caught() {
        let (file, mut api) = world();
        api.histories.get_mut(&DM).unwrap().push(Seen { id: MessageId(4), random_id: 103, sender: ALICE });
        api.boxes
            .insert(ALICE, Some(vec![(DM, MessageId(1)), (DM, MessageId(2)), (DM, MessageId(2)), (DM, MessageId(3))]));
        api.boxes.insert(BOB, Some(vec![(DM, MessageId(2)), (DM, MessageId(1)), (DM, MessageId(3))]));
        let report = check(&file, &api, 3).expect("reads");
        assert_eq!(
            report.problems,
            vec![
                Problem::DuplicateInHistory { chat: DM, random_id: 103, ids: vec![MessageId(3), MessageId(4)] },
                Problem::DuplicateInUpdates { user: Some(ALICE), chat: DM, id: MessageId(2), times: 2 },
                Problem::OutOfOrder { user: Some(BOB), chat: DM, id: MessageId(1), after: MessageId(2) },
            ]
        );
        assert_eq!(report.exit_code(), 1);
        assert!(report.text().contains("2 duplicate"), "{}", report.text());
    }

    // A message acknowledged twice under different ids (the server's idempotency broken
    // across a retry) and a history entry with another random_id are reported too; a box
    // that no longer starts at pts 1 makes the result incomplete, not a pass.
    #[test]
    fn mismatches_and_unverifiable_boxes_are_reported() {
        let (mut file, mut api) = world();
        file.acks.push(AckRecord { chat: DM, id: MessageId(4), random_id: 101, sender: ALICE });
        api.histories.get_mut(&DM).unwrap().push(Seen { id: MessageId(4), random_id: 999, sender: ALICE });
        let report = check(&file, &api, 1).expect("reads");
        assert!(report.problems.contains(&Problem::AckedAsTwoMessages {
            chat: DM,
            random_id: 101,
            ids: vec![MessageId(1), MessageId(4)]
        }));
        assert!(report.problems.iter().any(|problem| matches!(problem, Problem::Mismatch { id: MessageId(4), .. })));

        let (file, mut api) = world();
        api.boxes.insert(BOB, None);
        let report = check(&file, &api, 1).expect("reads");
        assert!(report.problems.is_empty());
        assert_eq!(report.exit_code(), 3);
        assert!(report.text().contains("UNVERIFIABLE"));
    }
}
