//! Proves that a `kill -9` of the real `ferrogram serve` process (two cores, `--durability
//! sync`) while clients are sending loses nothing the server acknowledged: after a restart on
//! the same data directory every login token still works, every acknowledged message is in its
//! chat's history exactly once with its id, random_id and text, message ids are dense and
//! follow the order of the acknowledgements, every member's box holds every message of the
//! chat exactly once under dense pts, and a retried send is answered with the original message.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferrogram_net::client::{connect_blocking, BlockingClient};
use ferrogram_net::{ChatId, ClientError, ErrorCode, Message, MessageId, Pts, Request, Response, Update, UserId};
use support::Server;

const USERS: usize = 6;
/// Private chats between these users (indices into the users).
const PRIVATE_PAIRS: [(usize, usize); 5] = [(0, 1), (2, 3), (4, 5), (1, 4), (3, 0)];
/// The group: its creator first, then the members it is created with.
const GROUP: [usize; 4] = [1, 2, 3, 5];
/// Sequential senders per user, sharing the user's connection: up to this many of a user's
/// sends are in flight at once, at moments spread over time, so the kill finds some in flight.
const LANES: usize = 4;
/// Each user's lanes together stay below the gateway's 200 sends per authorization per
/// second, so a FLOOD_WAIT does not stall them for a whole second.
const SENDS_PER_SECOND: u64 = 150;
/// Messages of all rounds together. A user's box keeps its newest 10,000 updates, and a box
/// difference from pts 0 must still start at pts 1, so everything stays well below that.
const MESSAGES_BUDGET: u64 = 8000;
/// Sends one user makes in one round at most (the kill comes long before in practice).
const SENDS_PER_ROUND_MAX: u64 = 400;
/// Acknowledged sends each user retries after each restart (besides its newest one per chat).
const RETRIES_PER_USER: usize = 8;
/// How long the members' boxes may take to receive the fan-outs a restart re-sends.
const FANOUT_DEADLINE: Duration = Duration::from_secs(20);
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

struct TestUser {
    id: UserId,
    token: Vec<u8>,
    /// The box epoch at login: under `sync` a crash loses nothing acknowledged, so it stays.
    epoch: u64,
}

struct TestChat {
    id: ChatId,
    /// Indices into the users.
    members: Vec<usize>,
}

/// One send as the client made it.
#[derive(Clone, Debug)]
struct Attempt {
    chat: usize,
    user: usize,
    lane: usize,
    random_id: u64,
    text: String,
    /// The send's place in its lane: a lane sends only once its previous send was answered,
    /// so within a lane and a chat, ids must grow with it.
    order: u64,
}

/// An acknowledged send: what the server promised to keep.
#[derive(Clone, Debug)]
struct Ack {
    attempt: Attempt,
    id: MessageId,
    /// The sender's box pts of the message, when the answer gave one.
    sender_pts: Option<Pts>,
}

/// What one lane saw in one round.
#[derive(Default)]
struct SenderLog {
    acked: Vec<Ack>,
    /// Sent, but the connection died before the answer: may or may not have survived.
    in_doubt: Option<Attempt>,
    /// Refused by the server (FLOOD_WAIT, OVERLOADED): must never appear.
    refused: Vec<Attempt>,
    unexpected: Vec<String>,
    used_budget: bool,
}

/// Everything the client side knows, over all rounds.
#[derive(Default)]
struct Model {
    acked: Vec<Ack>,
    /// Every send ever made, by (chat, sender, random_id): its text.
    sent: HashMap<(usize, usize, u64), String>,
    refused: BTreeSet<(usize, usize, u64)>,
}

// Several kill rounds: clients send into private chats and a group over their own
// connections, the server is SIGKILLed at a random moment with sends in flight and restarted
// on the same data directory, and each time everything acknowledged so far is checked in
// history, in every member's box, and against retries with the same random_id.
#[test]
fn acknowledged_messages_survive_server_kill() {
    let started = Instant::now();
    let seed = std::env::var("FERROGRAM_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64));
    let rounds: u64 = std::env::var("FERROGRAM_KILL_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2).max(1);
    eprintln!("acknowledged_messages_survive_server_kill: seed {seed} (FERROGRAM_KILL_SEED), {rounds} rounds");
    let mut rng = seed.max(1);
    let sends_per_round = (MESSAGES_BUDGET / (rounds * USERS as u64)).min(SENDS_PER_ROUND_MAX);
    let kill_span_ms = (sends_per_round * 1000 / SENDS_PER_SECOND).saturating_sub(400).clamp(100, 1200);

    let mut server = Server::start("acked-survive-kill", &["--cores", "2", "--durability", "sync"]);
    let (users, chats) = setup(&server);
    let mut model = Model::default();

    for round in 0..rounds {
        // Traffic: each user's lanes send over one connection authorized with its token.
        let stop = Arc::new(AtomicBool::new(false));
        let mut lanes = Vec::new();
        for (user, test_user) in users.iter().enumerate() {
            let client = match authenticate(server.address, &test_user.token) {
                Ok((client, _)) => Arc::new(client),
                Err(error) => panic!("seed {seed} round {round}: user {user} cannot authenticate: {error}"),
            };
            let my_chats: Vec<(usize, ChatId)> = chats
                .iter()
                .enumerate()
                .filter(|(_, chat)| chat.members.contains(&user))
                .map(|(index, chat)| (index, chat.id))
                .collect();
            let traffic_started = Instant::now();
            for lane in 0..LANES {
                let (client, my_chats, stop) = (client.clone(), my_chats.clone(), stop.clone());
                let lane_seed = next(&mut rng);
                lanes.push(std::thread::spawn(move || {
                    let sender = Lane { user, lane, round, started: traffic_started, seed: lane_seed };
                    sender.send(&client, &my_chats, sends_per_round, &stop)
                }));
            }
        }
        // Between 300 and 1500 ms, but before the senders run out of sends (with many rounds).
        let kill_after = Duration::from_millis(300 + next(&mut rng) % kill_span_ms);
        std::thread::sleep(kill_after);
        server.kill();
        stop.store(true, Ordering::Relaxed);
        let mut in_doubt = Vec::new();
        let (mut acked_now, mut exhausted) = (0, 0);
        for (index, lane) in lanes.into_iter().enumerate() {
            let log = lane.join().expect("a sender thread panicked");
            assert!(
                log.unexpected.is_empty(),
                "seed {seed} round {round}: user {}'s lane {} saw unexpected answers: {:?}",
                index / LANES,
                index % LANES,
                log.unexpected
            );
            acked_now += log.acked.len();
            exhausted += usize::from(log.used_budget);
            for attempt in log.acked.iter().map(|ack| &ack.attempt).chain(&log.in_doubt).chain(&log.refused) {
                model.sent.insert((attempt.chat, attempt.user, attempt.random_id), attempt.text.clone());
            }
            model.refused.extend(log.refused.iter().map(|a| (a.chat, a.user, a.random_id)));
            model.acked.extend(log.acked);
            in_doubt.extend(log.in_doubt);
        }
        eprintln!(
            "round {round}: killed after {kill_after:?}: {acked_now} sends acknowledged, {} cut off unanswered, \
             {exhausted} of {} lanes had finished their sends",
            in_doubt.len(),
            USERS * LANES
        );
        assert!(acked_now > 0, "seed {seed} round {round}: nothing was acknowledged before the kill");

        server.spawn();
        let clients = reconnect_all(&server, &users, seed, round);
        let survived = retry_in_doubt(&clients, &chats, &mut model, in_doubt, round, seed);
        eprintln!("round {round}: restarted; {survived} of the unanswered sends had been stored");
        let tops = check_histories(&clients, &chats, &users, &model, seed, round);
        check_boxes(&clients, &chats, &users, &model, &tops, seed, round);
        check_retries(&clients, &chats, &model, &mut rng, seed, round);
        drop(clients);
    }
    eprintln!(
        "acknowledged_messages_survive_server_kill: {} acknowledged messages checked over {rounds} kills in {:?}",
        model.acked.len(),
        started.elapsed()
    );
}

/// Logs every user in and creates the chats; the logins' tokens are kept for later connections.
fn setup(server: &Server) -> (Vec<TestUser>, Vec<TestChat>) {
    let mut clients = Vec::new();
    let mut users = Vec::new();
    for index in 0..USERS {
        let (client, login) = server.login(&format!("+1555031{index:04}"), &format!("Killed User{index}"));
        users.push(TestUser { id: login.user.id, token: login.token.clone(), epoch: login.state.epoch });
        clients.push(client);
    }
    let mut chats = Vec::new();
    for (a, b) in PRIVATE_PAIRS {
        let id = clients[a].open_private(users[b].id).expect("open a private chat");
        chats.push(TestChat { id, members: vec![a, b] });
    }
    let members: Vec<UserId> = GROUP[1..].iter().map(|&user| users[user].id).collect();
    let id = clients[GROUP[0]].create_group("killed mid-sentence", &members).expect("create the group");
    chats.push(TestChat { id, members: GROUP.to_vec() });
    (users, chats)
}

/// A connection authorized with `token`; `Err` with the server's answer when it is refused.
fn authenticate(address: SocketAddr, token: &[u8]) -> Result<(BlockingClient, Response), String> {
    let client = connect_blocking(address, "e2e-kill-test").map_err(|e| format!("connect: {e}"))?;
    let client = client.with_call_timeout(CALL_TIMEOUT);
    match client.call(Request::Authenticate { token: token.to_vec() }) {
        Ok(response @ Response::Authorized { .. }) => Ok((client, response)),
        Ok(other) => Err(format!("answered {other:?}")),
        Err(error) => Err(format!("failed: {error}")),
    }
}

/// One of a user's sequential senders.
struct Lane {
    user: usize,
    lane: usize,
    round: u64,
    /// When the user's traffic started: its sends are paced from here.
    started: Instant,
    seed: u64,
}

impl Lane {
    /// Sends new messages one at a time, each when its turn in the user's pace comes, until
    /// the lane's share of `budget` is used, the server dies, or `stop`.
    fn send(&self, client: &BlockingClient, chats: &[(usize, ChatId)], budget: u64, stop: &AtomicBool) -> SenderLog {
        let (user, lane, round) = (self.user, self.lane, self.round);
        let mut log = SenderLog::default();
        let mut rng = self.seed.max(1);
        let lanes = LANES as u64;
        let mut sequence = 0u64;
        while sequence < budget / lanes && !stop.load(Ordering::Relaxed) {
            // The user's k-th send is due at k / SENDS_PER_SECOND; lane l makes sends l, l + LANES, ...
            let turn = sequence * lanes + lane as u64;
            let due = self.started + Duration::from_micros(turn * 1_000_000 / SENDS_PER_SECOND);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let (chat_index, chat) = chats[(next(&mut rng) % chats.len() as u64) as usize];
            let attempt = Attempt {
                chat: chat_index,
                user,
                lane,
                random_id: ((round + 1) << 40) | ((user as u64) << 32) | ((lane as u64) << 24) | sequence,
                text: format!("round {round}, user {user}, lane {lane}, message {sequence}: {:x}", next(&mut rng)),
                order: round * 1_000_000 + sequence,
            };
            sequence += 1;
            let request =
                Request::SendMessage { chat, random_id: attempt.random_id, text: attempt.text.clone(), reply_to: None };
            match client.call(request) {
                Ok(Response::Sent(sent)) if !sent.duplicate && sent.chat == chat => {
                    log.acked.push(Ack { attempt, id: sent.id, sender_pts: sent.sender_pts })
                }
                Ok(other) => log.unexpected.push(format!("a new send answered {other:?}")),
                Err(error) if matches!(error.code(), Some(ErrorCode::FloodWait | ErrorCode::Overloaded)) => {
                    log.refused.push(attempt)
                }
                Err(ClientError::Closed | ClientError::Io(_) | ClientError::Connection(_) | ClientError::Timeout) => {
                    log.in_doubt = Some(attempt);
                    return log;
                }
                Err(error) => log.unexpected.push(format!("a send failed: {error}")),
            }
        }
        log.used_budget = sequence >= budget / lanes;
        log
    }
}

/// One connection per user after the restart, each with the token from the first login.
fn reconnect_all(server: &Server, users: &[TestUser], seed: u64, round: u64) -> Vec<BlockingClient> {
    let mut clients = Vec::new();
    for (index, user) in users.iter().enumerate() {
        let (client, response) = authenticate(server.address, &user.token).unwrap_or_else(|error| {
            panic!("seed {seed} round {round}: user {index}'s token no longer works after the kill: {error}")
        });
        let Response::Authorized { user: who, state, .. } = response else { unreachable!("checked above") };
        assert_eq!(who.id, user.id, "seed {seed} round {round}: user {index}'s token names another user");
        assert_eq!(
            state.epoch, user.epoch,
            "seed {seed} round {round}: user {index}'s box epoch changed, so the server says acknowledged \
             updates may have been lost, which `sync` durability must never do"
        );
        clients.push(client);
    }
    clients
}

/// Retries every send that was in flight at the kill, as a client would: the same random_id
/// and text. Each is then acknowledged (as the surviving original or as a new message) and
/// joins the model. Returns how many had survived.
fn retry_in_doubt(
    clients: &[BlockingClient],
    chats: &[TestChat],
    model: &mut Model,
    in_doubt: Vec<Attempt>,
    round: u64,
    seed: u64,
) -> usize {
    let mut survived = 0;
    for mut attempt in in_doubt {
        let chat = chats[attempt.chat].id;
        let request =
            Request::SendMessage { chat, random_id: attempt.random_id, text: attempt.text.clone(), reply_to: None };
        let sent = match clients[attempt.user].call(request) {
            Ok(Response::Sent(sent)) => sent,
            other => panic!("seed {seed} round {round}: retrying a send that was in flight: {other:?}"),
        };
        assert_eq!(sent.chat, chat, "seed {seed} round {round}: a retry answered for another chat");
        if sent.duplicate {
            survived += 1;
        } else {
            // A new message now: it comes after everything acknowledged before the kill.
            attempt.order = round * 1_000_000 + 999_999;
        }
        model.acked.push(Ack { attempt, id: sent.id, sender_pts: sent.sender_pts.filter(|_| !sent.duplicate) });
    }
    survived
}

/// Each chat's whole history, oldest first, paged newest first 100 at a time as `member`.
fn full_history(client: &BlockingClient, chat: ChatId) -> Vec<Message> {
    let mut history = Vec::new();
    let mut offset = MessageId(0);
    loop {
        let page = client.get_history(chat, offset, 100).expect("history page");
        let Some(last) = page.last() else { break };
        offset = last.id;
        let short = page.len() < 100;
        history.extend(page);
        if short {
            break;
        }
    }
    history.reverse();
    history
}

/// Checks every chat's history against the model; returns each chat's newest message id.
fn check_histories(
    clients: &[BlockingClient],
    chats: &[TestChat],
    users: &[TestUser],
    model: &Model,
    seed: u64,
    round: u64,
) -> Vec<u64> {
    let context = format!("seed {seed} round {round}");
    let mut tops = Vec::new();
    for (index, chat) in chats.iter().enumerate() {
        let history = full_history(&clients[chat.members[0]], chat.id);
        let ids: Vec<u64> = history.iter().map(|m| m.id.0).collect();
        let dense: Vec<u64> = (1..=ids.len() as u64).collect();
        assert_eq!(ids, dense, "{context}: chat {index}'s message ids are not dense 1..=n");
        // Every message is one a client sent, with its text, and none is there twice.
        let mut seen = BTreeSet::new();
        for message in &history {
            assert_eq!(message.chat, chat.id, "{context}: chat {index}'s history holds a message of another chat");
            let sender = users.iter().position(|u| u.id == message.sender);
            let sender = sender.unwrap_or_else(|| panic!("{context}: message {} has an unknown sender", message.id));
            let key = (index, sender, message.random_id);
            assert!(seen.insert(key), "{context}: chat {index} holds random_id {:#x} twice", message.random_id);
            let sent = model.sent.get(&key);
            assert_eq!(
                sent,
                Some(&message.text),
                "{context}: message {} of chat {index} is not a send any client made",
                message.id
            );
            assert!(
                !model.refused.contains(&key),
                "{context}: a refused send is message {} of chat {index}",
                message.id
            );
        }
        tops.push(ids.len() as u64);
        // Every acknowledged send is the message its acknowledgement named.
        for ack in model.acked.iter().filter(|ack| ack.attempt.chat == index) {
            let message = history.get((ack.id.0 as usize).wrapping_sub(1));
            assert!(
                message.is_some_and(|m| m.random_id == ack.attempt.random_id
                    && m.text == ack.attempt.text
                    && m.sender == users[ack.attempt.user].id),
                "{context}: acknowledged message {} of chat {index} (random_id {:#x}, user {}) is missing or \
                 different: {message:?}",
                ack.id,
                ack.attempt.random_id,
                ack.attempt.user
            );
        }
        // A lane's ids follow the order of its acknowledgements.
        let mut per_lane: BTreeMap<(usize, usize), Vec<(u64, u64)>> = BTreeMap::new();
        for ack in model.acked.iter().filter(|ack| ack.attempt.chat == index) {
            per_lane.entry((ack.attempt.user, ack.attempt.lane)).or_default().push((ack.attempt.order, ack.id.0));
        }
        for ((user, lane), mut acks) in per_lane {
            acks.sort_unstable();
            for pair in acks.windows(2) {
                assert!(
                    pair[0].1 < pair[1].1,
                    "{context}: user {user}'s lane {lane} in chat {index}: message {} was sent after message {} \
                     was acknowledged, yet has a lower or equal id",
                    pair[1].1,
                    pair[0].1
                );
            }
        }
    }
    tops
}

/// Every member's box: pts dense from 1, and each message of each of its chats exactly once
/// (waiting for the fan-outs a restart re-sends); the pts an acknowledgement gave the sender
/// is that message.
fn check_boxes(
    clients: &[BlockingClient],
    chats: &[TestChat],
    users: &[TestUser],
    model: &Model,
    tops: &[u64],
    seed: u64,
    round: u64,
) {
    let deadline = Instant::now() + FANOUT_DEADLINE;
    for (user, client) in clients.iter().enumerate() {
        let context = format!("seed {seed} round {round}: user {user} ({})", users[user].id);
        loop {
            let mut messages: BTreeMap<(ChatId, MessageId), Pts> = BTreeMap::new();
            let mut pts = Pts(0);
            loop {
                let difference = match client.get_difference(pts, 1000) {
                    Ok(difference) => difference,
                    Err(error) => panic!("{context}: the box difference after pts {pts}: {error}"),
                };
                for update in &difference.updates {
                    assert_eq!(update.pts.0, pts.0 + 1, "{context}: the box pts are not dense");
                    pts = update.pts;
                    if let Update::NewMessage { chat, id, .. } = update.update {
                        let earlier = messages.insert((chat, id), pts);
                        assert!(
                            earlier.is_none(),
                            "{context}: message {chat}/{id} is in the box twice: {earlier:?}, {pts}"
                        );
                    }
                }
                assert_eq!(difference.state.pts, pts, "{context}: the difference ends where its updates end");
                if !difference.slice {
                    break;
                }
            }
            let mut missing = Vec::new();
            for (index, chat) in chats.iter().enumerate().filter(|(_, chat)| chat.members.contains(&user)) {
                missing.extend(
                    (1..=tops[index])
                        .map(MessageId)
                        .filter(|&id| !messages.contains_key(&(chat.id, id)))
                        .map(|id| (index, id.0)),
                );
            }
            for (chat, id) in messages.keys() {
                let known = chats.iter().position(|c| c.id == *chat).is_some_and(|index| id.0 <= tops[index]);
                assert!(known, "{context}: the box has message {chat}/{id}, which no history holds");
            }
            if missing.is_empty() {
                for ack in model.acked.iter().filter(|ack| ack.attempt.user == user) {
                    let Some(sender_pts) = ack.sender_pts else { continue };
                    let at = messages.get(&(chats[ack.attempt.chat].id, ack.id));
                    assert_eq!(
                        at,
                        Some(&sender_pts),
                        "{context}: the ack of message {} of chat {} gave the sender pts {sender_pts}",
                        ack.id,
                        ack.attempt.chat
                    );
                }
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{context}: after {FANOUT_DEADLINE:?} the box still lacks {} messages (chat index, id): {:?}",
                missing.len(),
                &missing[..missing.len().min(20)]
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Retries acknowledged sends with their random_id and text: each newest one per sender and
/// chat (the most likely to be caught by the kill) and a random sample of the rest. Each must
/// answer the original message, not make a new one.
fn check_retries(clients: &[BlockingClient], chats: &[TestChat], model: &Model, rng: &mut u64, seed: u64, round: u64) {
    let mut picked: BTreeMap<(usize, usize), &Ack> = BTreeMap::new();
    for ack in &model.acked {
        let key = (ack.attempt.user, ack.attempt.chat);
        if picked.get(&key).is_none_or(|newest| newest.id < ack.id) {
            picked.insert(key, ack);
        }
    }
    let mut retries: Vec<&Ack> = picked.into_values().collect();
    for user in 0..USERS {
        let own: Vec<&Ack> = model.acked.iter().filter(|ack| ack.attempt.user == user).collect();
        for _ in 0..RETRIES_PER_USER.min(own.len()) {
            retries.push(own[(next(rng) % own.len() as u64) as usize]);
        }
    }
    for ack in retries {
        let chat = chats[ack.attempt.chat].id;
        let request = Request::SendMessage {
            chat,
            random_id: ack.attempt.random_id,
            text: ack.attempt.text.clone(),
            reply_to: None,
        };
        match clients[ack.attempt.user].call(request) {
            Ok(Response::Sent(sent)) => assert!(
                sent.duplicate && sent.id == ack.id && sent.chat == chat,
                "seed {seed} round {round}: retrying acknowledged message {} of chat {} (random_id {:#x}) answered \
                 {sent:?}",
                ack.id,
                ack.attempt.chat,
                ack.attempt.random_id
            ),
            other => panic!("seed {seed} round {round}: retrying acknowledged message {}: {other:?}", ack.id),
        }
    }
}

/// xorshift64: the kill moments and the traffic follow from the printed seed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
