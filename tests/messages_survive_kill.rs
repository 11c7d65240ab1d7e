//! Proves that every message the messaging API acknowledged survives a SIGKILL at a random
//! moment: a child process sends into private chats and a group across two shards (taking
//! frequent automatic checkpoints) and prints each acknowledgement; after the kill the parent
//! reopens the data directory and checks that every acknowledged message is in its chat's
//! history, that message ids and every box's pts are dense, and that each member's box holds
//! each message of the chat exactly once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrogram::engine::messaging::{
    ChatId, HistoryPage, MessageId, MessagingError, Messenger, NewMessage, Pts, RandomId, Update, UserId,
};
use ferrogram::engine::{Engine, EngineConfig};

mod in_process;
use in_process::{block_on, temp_dir};

const SHARDS: usize = 2;
const USERS: usize = 12;
const SENDERS: usize = 8;
const SENDS_PER_SENDER: u64 = 300;
const CHILD_DIR: &str = "FERROGRAM_MESSAGING_CHILD_DIR";
const CHILD_ROUND: &str = "FERROGRAM_MESSAGING_CHILD_ROUND";

fn open(dir: &Path) -> Engine {
    let mut config = EngineConfig::new(dir);
    config.shards = SHARDS;
    config.log.segment_bytes = 8 << 20;
    // Checkpoints every few hundred sends, so kills also land around checkpoints.
    config.checkpoint_every_bytes = 64 << 10;
    Engine::open(config).expect("engine opens")
}

fn phone(index: usize) -> String {
    format!("+1555200{index:04}")
}

/// The users, the chats between them, and the group: created once, found again after.
fn setup(messenger: &Messenger) -> (Vec<UserId>, Vec<ChatId>) {
    let mut users = Vec::new();
    for index in 0..USERS {
        let user = match block_on(messenger.sign_up(&phone(index), "User", "")) {
            Ok(user) => user,
            Err(MessagingError::PhoneTaken(user)) => user,
            Err(error) => panic!("sign up: {error}"),
        };
        users.push(user);
    }
    let mut chats = Vec::new();
    for index in 0..USERS / 2 {
        chats.push(block_on(messenger.open_private(users[2 * index], users[2 * index + 1])).expect("open private"));
    }
    (users, chats)
}

/// Runs in the child process only (the parent starts this test binary with the env set).
#[test]
#[ignore = "run by messages_survive_sigkill in a child process"]
fn child_workload() {
    let Ok(dir) = std::env::var(CHILD_DIR) else { return };
    let round: u64 = std::env::var(CHILD_ROUND).ok().and_then(|r| r.parse().ok()).unwrap_or(0);
    let engine = open(Path::new(&dir));
    let messenger = engine.messenger();
    let (users, mut chats) = setup(&messenger);
    let group = match std::env::var("FERROGRAM_MESSAGING_GROUP").ok().and_then(|g| g.parse().ok()) {
        Some(group) => ChatId(group),
        None => block_on(messenger.create_group(users[0], "everyone", &users[1..])).expect("create group"),
    };
    chats.push(group);
    println!("ready {}", group.0);
    let threads: Vec<_> = (0..SENDERS)
        .map(|thread| {
            let messenger = messenger.clone();
            let users = users.clone();
            let chats = chats.clone();
            std::thread::spawn(move || {
                for sequence in 0..SENDS_PER_SENDER {
                    let chat_index = (thread + sequence as usize) % chats.len();
                    let chat = chats[chat_index];
                    let sender = if chat_index < USERS / 2 {
                        users[2 * chat_index + (sequence as usize % 2)]
                    } else {
                        users[(thread + sequence as usize) % USERS]
                    };
                    let random_id = RandomId(round * 1_000_000_000 + thread as u64 * 1_000_000 + sequence + 1);
                    let message =
                        NewMessage { random_id, text: format!("{} says {}", sender.0, random_id.0), reply_to: None };
                    match block_on(messenger.send(chat, sender, message)) {
                        Ok(ack) => println!("acked {} {} {} {}", chat.0, ack.id.0, random_id.0, sender.0),
                        Err(MessagingError::Overloaded) => std::thread::sleep(Duration::from_millis(1)),
                        Err(error) => panic!("send: {error}"),
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
    // Parked until killed: the parent kills at a random moment, maybe after all sends.
    std::thread::sleep(Duration::from_secs(60));
}

struct Acked {
    chat: ChatId,
    id: MessageId,
    random_id: RandomId,
    sender: UserId,
}

/// Proves acknowledged messages, dense ids and pts, and exactly-once box fan-out survive SIGKILL.
#[test]
fn messages_survive_sigkill() {
    let seed = std::env::var("FERROGRAM_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1));
    let rounds: u64 = std::env::var("FERROGRAM_KILL_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    eprintln!("messages_survive_kill: seed {seed} (set FERROGRAM_KILL_SEED to repeat), {rounds} rounds");
    let dir = temp_dir("messaging-kill");
    let mut rng = seed;
    let mut acked: Vec<Acked> = Vec::new();
    let mut group: Option<u64> = None;
    for round in 0..rounds {
        let mut command = Command::new(std::env::current_exe().expect("test binary"));
        command
            .args(["child_workload", "--exact", "--ignored", "--nocapture", "--test-threads", "1"])
            .env(CHILD_DIR, &dir)
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(group) = group {
            command.env("FERROGRAM_MESSAGING_GROUP", group.to_string());
        }
        let mut child = command.spawn().expect("spawn the child workload");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines_sender, lines) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines_sender.send(line);
            }
        });
        // Wait until the child is ready (recovered and set up), then kill it at random.
        let group_id: u64 = loop {
            let line = lines.recv_timeout(Duration::from_secs(60)).expect("the child gets ready");
            // The harness's "test child_workload ... " may share the line.
            if let Some(group) = line.split("ready ").nth(1).and_then(|g| g.trim().parse().ok()) {
                break group;
            }
        };
        assert!(group.is_none_or(|group| group == group_id), "seed {seed}: the group changed");
        group = Some(group_id);
        let kill_after = Duration::from_millis(50 + next(&mut rng) % 900);
        std::thread::sleep(kill_after);
        child.kill().expect("SIGKILL the child");
        let _ = child.wait();
        reader.join().expect("reader");
        let before = acked.len();
        for line in lines.try_iter() {
            let words: Vec<u64> = line.split_whitespace().skip(1).filter_map(|w| w.parse().ok()).collect();
            if line.starts_with("acked ") && words.len() == 4 {
                acked.push(Acked {
                    chat: ChatId(words[0]),
                    id: MessageId(words[1]),
                    random_id: RandomId(words[2]),
                    sender: UserId(words[3]),
                });
            }
        }
        eprintln!("round {round}: killed after {kill_after:?}, {} new acknowledged sends", acked.len() - before);
        verify(&dir, &acked, seed, round);
    }
    assert!(!acked.is_empty(), "seed {seed}: nothing was acknowledged; the test proved nothing");
    let _ = std::fs::remove_dir_all(&dir);
}

fn verify(dir: &Path, acked: &[Acked], seed: u64, round: u64) {
    let engine = open(dir);
    let messenger = engine.messenger();
    let (users, _) = setup(&messenger);
    // Every acknowledged message is there, as sent.
    let mut by_chat: BTreeMap<ChatId, Vec<&Acked>> = BTreeMap::new();
    for ack in acked {
        by_chat.entry(ack.chat).or_default().push(ack);
    }
    let mut tops: HashMap<ChatId, u64> = HashMap::new();
    for (&chat, sends) in &by_chat {
        let reader = sends[0].sender;
        let mut history = Vec::new();
        let mut offset = MessageId(0);
        loop {
            let page = HistoryPage { offset_id: offset, limit: 100, ..HistoryPage::default() };
            let messages = block_on(messenger.get_history(chat, reader, page)).expect("history");
            let Some(last) = messages.last() else { break };
            offset = last.id;
            history.extend(messages);
        }
        history.reverse();
        let ids: Vec<u64> = history.iter().map(|m| m.id.0).collect();
        let dense: Vec<u64> = (1..=ids.len() as u64).collect();
        assert_eq!(ids, dense, "seed {seed} round {round}: chat {chat} message ids are not dense");
        tops.insert(chat, ids.len() as u64);
        for send in sends {
            let message = history.get(send.id.0 as usize - 1);
            assert!(
                message.is_some_and(|m| m.random_id == send.random_id && m.sender == send.sender),
                "seed {seed} round {round}: acknowledged message {} of chat {chat} is missing or different",
                send.id
            );
        }
    }
    // Every box: dense pts, each message of its chats exactly once.
    for &user in &users {
        let mut pts = Pts(0);
        let mut seen: BTreeSet<(ChatId, MessageId)> = BTreeSet::new();
        loop {
            let difference = block_on(messenger.get_difference(user, pts, 1000)).expect("difference");
            for update in &difference.updates {
                assert_eq!(update.pts, pts.next(), "seed {seed} round {round}: user {user}'s pts are not dense");
                pts = update.pts;
                if let Update::NewMessage { chat, id, .. } = update.update {
                    assert!(seen.insert((chat, id)), "seed {seed} round {round}: {chat}/{id} twice in {user}'s box");
                }
            }
            if !difference.slice {
                break;
            }
        }
        for (chat, top) in &tops {
            let members =
                block_on(messenger.get_members(*chat, by_chat[chat][0].sender, None, usize::MAX)).expect("members");
            if members.iter().any(|(member, _)| *member == user) {
                for id in 1..=*top {
                    assert!(
                        seen.contains(&(*chat, MessageId(id))),
                        "seed {seed} round {round}: message {chat}/{id} never reached {user}'s box"
                    );
                }
            }
        }
    }
    engine.shutdown().expect("shutdown");
}

fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
