//! In-process messaging benchmarks behind `ferrogram bench-messaging`: private-chat sends,
//! group sends with every member online, a channel post reaching every online subscriber,
//! history pages, and restart time after many messages. Everything goes through the public
//! embedding API (`Messenger`) from threads outside the shards, the way a host calls it; the
//! sessions' live streams are drained on their own threads.
//!
//! The load thread runs many API futures at once on a small waker-driven executor
//! ([`Pool`]). Closed loop keeps `in_flight` requests outstanding and measures from the
//! moment each was issued; open loop issues at a fixed rate and measures from each request's
//! intended send time, so a stall shows in the percentiles (DESIGN §9).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use engine::messaging::{
    Author, ChatId, HistoryPage, LiveEvent, MessageId, MessagingCore, MessagingError, MessagingResult, Messenger,
    NewMessage, Origin, RandomId, Request, Response, SendRequest, SessionEvents, UnixMs, Update, UserId,
};
use engine::vshards::VShardTable;
use engine::wal::driver::LogStats;
use engine::wal::AppendError;
use engine::{Durability, Engine, EngineConfig, Lsn, RecordKind, ShardId, VShard};
use futures_lite::future::block_on;
use hdrhistogram::Histogram;

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Private-chat sends between random pairs of users, every user online.
    Dm,
    /// Sends from random members of one group, every member online.
    Group,
    /// One admin posting to a channel whose subscribers are all online.
    Channel,
    /// History pages from random offsets of one chat.
    History,
    /// Write many messages, stop, and time `Engine::open` until the messenger answers.
    Restart,
}

/// How the drain threads read the sessions' streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DrainMode {
    /// A task per session waits on `next()`; the shard's delivery wakes it (what a host
    /// reading sessions asynchronously does). The drain thread sleeps while idle.
    Wake,
    /// Sweep every session with `try_next()` without registering wakers: the shard never
    /// wakes the drain, and an event is stamped when a sweep reaches it. Spins a CPU.
    Poll,
}

/// Which part of the restart scenario this process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RestartPhase {
    /// Write in a child process, then open here.
    Both,
    /// Write the messages and stop (cleanly, or with `--unclean` by exiting without shutdown).
    Write,
    /// Open an existing data directory written by the write phase.
    Open,
}

#[derive(Clone, Debug)]
pub struct BenchParams {
    pub scenario: Scenario,
    pub duration: Duration,
    /// Open loop: requests per second, over all shards.
    pub rate: Option<u64>,
    /// Closed loop: requests outstanding (per scenario default when `None`).
    pub in_flight: Option<usize>,
    pub users: usize,
    /// Private chats (random pairs of users) the dm and restart scenarios send into.
    pub chats: usize,
    pub members: usize,
    pub subscribers: usize,
    pub posts: usize,
    pub post_interval: Duration,
    /// Messages in the history scenario's chat.
    pub messages: usize,
    pub page: usize,
    /// History: sends per second into another chat on the same shards while pages are read.
    pub background_rate: Option<u64>,
    /// History: pages read directly from a messaging core, without shards or threads.
    pub core_reads: usize,
    pub restart_messages: u64,
    pub restart_phase: RestartPhase,
    pub unclean: bool,
    pub drop_caches: bool,
    pub text_bytes: usize,
    pub seed: u64,
    pub load_cpu: Option<usize>,
    pub drain_cpu: Option<usize>,
    pub drain_threads: usize,
    pub drain_mode: DrainMode,
    /// dm, group: each send goes through the sender's own session (`Author::session`), which
    /// then gets no live copy of it.
    pub through_session: bool,
}

/// Runs `params.scenario` against an engine opened with `config`, printing its figures.
pub fn run(config: EngineConfig, params: BenchParams) -> anyhow::Result<()> {
    if config.log.durability == Durability::None {
        eprintln!("warning: durability none: nothing is fsynced; figures are not durable ones");
    }
    let keep_data = params.scenario == Scenario::Restart && params.restart_phase == RestartPhase::Open;
    if !keep_data {
        fresh_data_dir(&config.data_dir)?;
    }
    if params.scenario == Scenario::Restart && params.restart_phase == RestartPhase::Both {
        // The writer is another process, so an unclean stop can be a real exit without shutdown.
        run_restart_writer()?;
    }
    let thread = std::thread::Builder::new()
        .name("bench-load".into())
        .spawn(move || -> anyhow::Result<()> {
            match params.scenario {
                Scenario::Dm => dm(&config, &params),
                Scenario::Group => group(&config, &params),
                Scenario::Channel => channel(&config, &params),
                Scenario::History => history(&config, &params),
                Scenario::Restart => match params.restart_phase {
                    RestartPhase::Write => restart_write(&config, &params),
                    RestartPhase::Both | RestartPhase::Open => restart_open(&config, &params),
                },
            }
        })
        .context("starting the load thread")?;
    thread.join().map_err(|_| anyhow!("the load thread panicked"))?
}

/// Requests outstanding during setup steps (sign-ups, chats, sessions).
const SETUP_IN_FLIGHT: usize = 1024;
/// Longest a setup step may take before the benchmark gives up.
const SETUP_TIMEOUT: Duration = Duration::from_secs(600);
/// After the load stops: longest to wait for outstanding requests and for deliveries.
const COMPLETION_TIMEOUT: Duration = Duration::from_secs(30);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Open loop: most requests outstanding before issuing waits (latency still counts from the
/// intended send time, so a stalled engine still shows).
const OPEN_LOOP_IN_FLIGHT_MAX: usize = 1 << 20;
/// Deliveries kept with their times; beyond this they are only counted.
const DELIVERIES_RECORDED_MAX: usize = 64 << 20;
const DELIVERY_CHUNK: usize = 1 << 16;
/// Histogram range: 1 ns to 60 s, 3 significant digits.
const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Closed-loop defaults per scenario.
const SENDS_IN_FLIGHT_DEFAULT: usize = 4096;
const READS_IN_FLIGHT_DEFAULT: usize = 1;

// Scenarios.

fn dm(config: &EngineConfig, params: &BenchParams) -> anyhow::Result<()> {
    let engine = open_engine(config, params)?;
    let messenger = engine.messenger();
    let clock = Clock::new();
    let mut pool = Pool::new();
    let mut rng = Rng(params.seed);
    let users = sign_up_users(&mut pool, &messenger, params.users)?;
    let targets = open_private_chats(&mut pool, &messenger, &users, params.chats, &mut rng)?;
    let sessions = connect_sessions(&mut pool, &engine, &users)?;
    let author = authors(&sessions, params);
    let drains = Drains::start(sessions, clock, params)?;
    let home = |user: UserId| engine.shard_of(user.vshard());
    let before = Snapshot::take(&engine)?;
    let load = run_sends(&mut pool, &messenger, clock, params, SENDS_IN_FLIGHT_DEFAULT, &mut rng, |rng| {
        let target = &targets[rng.below(targets.len() as u64) as usize];
        let sender = target.members[(rng.next() & 1) as usize];
        let class = usize::from(home(sender) != engine.shard_of(target.chat.vshard()));
        (target.chat, author(sender), class)
    });
    // The recipient's session, and the sender's unless the send went through it.
    let wanted = load.acked * if params.through_session { 1 } else { 2 };
    // Taken before the drain threads end, so their CPU time is still readable.
    let after = Snapshot::take(&engine)?;
    let deliveries = drains.finish(wanted, &clock)?;
    engine.shutdown().context("shutting down")?;

    println!(
        "scenario dm: {} users, {} private chats (random pairs), {} shards, {}",
        users.len(),
        targets.len(),
        engine.shard_count(),
        describe_durability(config)
    );
    print_load(&load, params, "sends");
    print_cpu(&before, &after);
    print_log(&before, &after, load.acked, "send");
    // What the design predicts: a chat record, and one box record on each shard that holds
    // one of the two members (both boxes in one record when they share a shard).
    let members_of: HashMap<ChatId, [UserId; 2]> = targets.iter().map(|target| (target.chat, target.members)).collect();
    let mut predicted = 0u64;
    for (chat, sends) in &load.sends_by_chat {
        let Some(members) = members_of.get(chat) else { continue };
        let box_records = if home(members[0]) == home(members[1]) { 1 } else { 2 };
        predicted += sends * (1 + box_records);
    }
    println!(
        "WAL records per send predicted from the design (chat record + one box record per shard holding a member): {:.3}",
        predicted as f64 / load.acked.max(1) as f64
    );
    let mut local = new_histogram();
    let mut cross = new_histogram();
    let mut own = new_histogram();
    let mut unmatched = 0u64;
    for delivery in deliveries.deliveries() {
        let Some(sent_ns) = load.sent_ns(delivery.chat, delivery.id) else {
            unmatched += 1;
            continue;
        };
        let latency_ns = delivery.received_ns.saturating_sub(sent_ns).max(1);
        if delivery.own {
            record(&mut own, latency_ns);
            continue;
        }
        let recipient =
            members_of.get(&delivery.chat).map(|members| members[usize::from(members[0] == delivery.sender)]);
        let cross_shard = recipient.is_some_and(|user| home(user) != engine.shard_of(delivery.chat.vshard()));
        record(if cross_shard { &mut cross } else { &mut local }, latency_ns);
    }
    print_drains(&deliveries, params, wanted, unmatched);
    let mut all = local.clone();
    let _ = all.add(&cross);
    println!("send -> delivery to the recipient's session: {} deliveries, {}", all.len(), percentiles_us(&all));
    if engine.shard_count() > 1 {
        println!("  recipient's box on the chat's shard:  {} deliveries, {}", local.len(), percentiles_us(&local));
        println!("  recipient's box on another shard:     {} deliveries, {}", cross.len(), percentiles_us(&cross));
    }
    println!("send -> delivery to the sender's own session: {} deliveries, {}", own.len(), percentiles_us(&own));
    Ok(())
}

fn group(config: &EngineConfig, params: &BenchParams) -> anyhow::Result<()> {
    if params.members < 2 {
        bail!("a group needs at least 2 members");
    }
    let engine = open_engine(config, params)?;
    let messenger = engine.messenger();
    let clock = Clock::new();
    let mut pool = Pool::new();
    let mut rng = Rng(params.seed);
    let users = sign_up_users(&mut pool, &messenger, params.members)?;
    let creator = users[0];
    let initial = (users.len() - 1).min(engine::messaging::limits::CREATE_MEMBERS_MAX);
    let chat =
        block_on(messenger.create_group(creator, "bench group", &users[1..=initial])).context("creating the group")?;
    let rest = users[initial + 1..].to_vec();
    run_all(&mut pool, "join group", rest.len(), SETUP_IN_FLIGHT, |index| {
        let messenger = messenger.clone();
        let user = rest[index];
        async move { messenger.join(chat, user).await }
    })?;
    let sessions = connect_sessions(&mut pool, &engine, &users)?;
    let author = authors(&sessions, params);
    let drains = Drains::start(sessions, clock, params)?;
    let chat_shard = engine.shard_of(chat.vshard());
    let before = Snapshot::take(&engine)?;
    let load = run_sends(&mut pool, &messenger, clock, params, SENDS_IN_FLIGHT_DEFAULT, &mut rng, |rng| {
        let sender = users[rng.below(users.len() as u64) as usize];
        (chat, author(sender), usize::from(engine.shard_of(sender.vshard()) != chat_shard))
    });
    let wanted = load.acked * (users.len() as u64 - u64::from(params.through_session));
    // Taken before the drain threads end, so their CPU time is still readable.
    let after = Snapshot::take(&engine)?;
    let deliveries = drains.finish(wanted, &clock)?;
    engine.shutdown().context("shutting down")?;

    println!(
        "scenario group: {} members, all online (one session each, on the member's shard), chat on shard {}, {} shards, {}",
        users.len(),
        chat_shard.0,
        engine.shard_count(),
        describe_durability(config)
    );
    print_load(&load, params, "sends");
    print_cpu(&before, &after);
    print_log(&before, &after, load.acked, "send");
    print_drains(&deliveries, params, wanted, 0);
    print_broadcast(&load, &deliveries, users.len() as u64, "member");
    Ok(())
}

fn channel(config: &EngineConfig, params: &BenchParams) -> anyhow::Result<()> {
    let engine = open_engine(config, params)?;
    let messenger = engine.messenger();
    let clock = Clock::new();
    let mut pool = Pool::new();
    let users = sign_up_users(&mut pool, &messenger, params.subscribers + 1)?;
    let admin = users[0];
    let subscribers = users[1..].to_vec();
    let chat = block_on(messenger.create_channel(admin, "bench channel")).context("creating the channel")?;
    let started = Instant::now();
    run_all(&mut pool, "join channel", subscribers.len(), SETUP_IN_FLIGHT, |index| {
        let messenger = messenger.clone();
        let user = subscribers[index];
        async move { messenger.join(chat, user).await }
    })?;
    eprintln!("{} subscribers joined in {:.1} s", subscribers.len(), started.elapsed().as_secs_f64());
    let sessions = connect_sessions(&mut pool, &engine, &subscribers)?;
    let session_ids: Vec<_> = sessions.iter().map(|(_, connected)| connected.0).collect();
    let started = Instant::now();
    run_all(&mut pool, "subscribe", session_ids.len(), SETUP_IN_FLIGHT, |index| {
        let messenger = messenger.clone();
        let session = session_ids[index];
        async move { messenger.subscribe_chat(session, chat).await }
    })?;
    eprintln!("{} sessions subscribed in {:.1} s", session_ids.len(), started.elapsed().as_secs_f64());
    let drains = Drains::start(sessions, clock, params)?;
    let before = Snapshot::take(&engine)?;

    // One post every `post_interval`, each measured from its intended time.
    let state = Rc::new(RefCell::new(LoadState::new()));
    let start_ns = clock.now_ns();
    let interval_ns = params.post_interval.as_nanos() as u64;
    let text = text_of(params.text_bytes);
    let mut next = 0usize;
    while next < params.posts || pool.in_flight() > 0 {
        let now_ns = clock.now_ns();
        while next < params.posts && start_ns + next as u64 * interval_ns <= now_ns {
            let intended_ns = start_ns + next as u64 * interval_ns;
            let message = NewMessage { random_id: RandomId(next as u64 + 1), text: text.clone(), reply_to: None };
            spawn_send(&mut pool, &state, clock, messenger.send(chat, admin, message), intended_ns, 0, chat);
            next += 1;
        }
        pool.poll_woken();
        if clock.now_ns() > start_ns + next as u64 * interval_ns + COMPLETION_TIMEOUT.as_nanos() as u64 {
            bail!("channel posts did not complete within {COMPLETION_TIMEOUT:?}");
        }
        let until_next = (start_ns + next as u64 * interval_ns).saturating_sub(clock.now_ns());
        pool.park(Duration::from_nanos(until_next.clamp(10_000, 1_000_000)));
    }
    let load = state.borrow_mut().finish(start_ns, clock.now_ns());
    let wanted = load.acked * subscribers.len() as u64;
    // Taken before the drain threads end, so their CPU time is still readable.
    let after = Snapshot::take(&engine)?;
    let deliveries = drains.finish(wanted, &clock)?;
    engine.shutdown().context("shutting down")?;

    println!(
        "scenario channel: {} subscribers, all online and subscribed (sessions on each subscriber's shard), {} posts one every {} ms, chat on shard {}, {} shards, {}",
        subscribers.len(),
        params.posts,
        params.post_interval.as_millis(),
        engine.shard_of(chat.vshard()).0,
        engine.shard_count(),
        describe_durability(config)
    );
    println!("post -> admin's ack: {} acked, {}", load.acked, percentiles_us(&load.latency_all()));
    print_cpu(&before, &after);
    print_log(&before, &after, load.acked, "post");
    print_drains(&deliveries, params, wanted, 0);
    print_broadcast(&load, &deliveries, subscribers.len() as u64, "subscriber");
    Ok(())
}

fn history(config: &EngineConfig, params: &BenchParams) -> anyhow::Result<()> {
    if params.page == 0 || params.page > params.messages {
        bail!("--page must be between 1 and --messages");
    }
    let engine = open_engine(config, params)?;
    let messenger = engine.messenger();
    let clock = Clock::new();
    let mut pool = Pool::new();
    let mut rng = Rng(params.seed);
    let users = sign_up_users(&mut pool, &messenger, 4)?;
    let chat = block_on(messenger.open_private(users[0], users[1])).context("opening the chat")?;
    let background_chat = block_on(messenger.open_private(users[2], users[3])).context("opening the chat")?;
    let text = text_of(params.text_bytes);
    let started = Instant::now();
    run_all(&mut pool, "fill history", params.messages, SETUP_IN_FLIGHT, |index| {
        let message = NewMessage { random_id: RandomId(index as u64 + 1), text: text.clone(), reply_to: None };
        messenger.send(chat, users[0], message)
    })?;
    eprintln!("wrote {} messages in {:.1} s", params.messages, started.elapsed().as_secs_f64());

    let reader = users[1];
    let page = params.page;
    let top = params.messages as u64;
    let reads = Rc::new(RefCell::new(LoadState::new()));
    let background = Rc::new(RefCell::new(LoadState::new()));
    let short_pages = Rc::new(Cell::new(0u64));
    let in_flight = params.in_flight.unwrap_or(READS_IN_FLIGHT_DEFAULT);
    let before = Snapshot::take(&engine)?;
    let start_ns = clock.now_ns();
    let end_ns = start_ns + params.duration.as_nanos() as u64;
    let (mut issued, mut background_issued) = (0u64, 0u64);
    while clock.now_ns() < end_ns {
        let now_ns = clock.now_ns();
        let due = match params.rate {
            Some(rate) => ((now_ns - start_ns) as u128 * rate as u128 / 1_000_000_000) as u64,
            None => u64::MAX,
        };
        while issued < due
            && reads_in_flight(&reads) < if params.rate.is_some() { OPEN_LOOP_IN_FLIGHT_MAX } else { in_flight }
        {
            let intended_ns = match params.rate {
                Some(rate) => start_ns + (issued as u128 * 1_000_000_000 / rate as u128) as u64,
                None => clock.now_ns(),
            };
            // Full pages only: the offset leaves at least `page` messages below it.
            let offset_id = MessageId(page as u64 + 1 + rng.below(top - page as u64 + 1));
            let request = HistoryPage { offset_id, limit: page, ..HistoryPage::default() };
            let future = messenger.get_history(chat, reader, request);
            let (state, short_pages) = (reads.clone(), short_pages.clone());
            state.borrow_mut().in_flight += 1;
            pool.spawn(async move {
                let result = future.await;
                let done_ns = clock.now_ns();
                let mut state = state.borrow_mut();
                state.in_flight -= 1;
                match result {
                    Ok(messages) => {
                        if messages.len() != page {
                            short_pages.set(short_pages.get() + 1);
                        }
                        state.completed(0, intended_ns, done_ns);
                    }
                    Err(error) => state.failed(error),
                }
            });
            issued += 1;
        }
        if let Some(rate) = params.background_rate {
            let due = ((now_ns - start_ns) as u128 * rate as u128 / 1_000_000_000) as u64;
            while background_issued < due {
                let intended_ns = start_ns + (background_issued as u128 * 1_000_000_000 / rate as u128) as u64;
                let random_id = RandomId(background_issued + 1);
                let message = NewMessage { random_id, text: text.clone(), reply_to: None };
                let future = messenger.send(background_chat, users[2], message);
                spawn_send(&mut pool, &background, clock, future, intended_ns, 0, background_chat);
                background_issued += 1;
            }
        }
        pool.poll_woken();
        pool.park(Duration::from_micros(if params.rate.is_some() || params.background_rate.is_some() {
            20
        } else {
            200
        }));
    }
    wait_for_pool(&mut pool)?;
    let done_ns = clock.now_ns();
    let reads = reads.borrow_mut().finish(start_ns, done_ns);
    let background = background.borrow_mut().finish(start_ns, done_ns);
    let after = Snapshot::take(&engine)?;
    engine.shutdown().context("shutting down")?;

    println!(
        "scenario history: one private chat of {} messages of {} bytes, pages of {} from random offsets (full pages only), {} shards, {}",
        params.messages,
        params.text_bytes,
        page,
        engine.shard_count(),
        describe_durability(config)
    );
    println!(
        "through the Messenger API from the load thread (includes the cross-thread hop both ways): {}",
        match params.rate {
            Some(rate) => format!("open loop at {rate} pages/s"),
            None => format!("closed loop, {in_flight} in flight"),
        }
    );
    println!(
        "pages: {} in {:.2} s = {:.0} pages/s, {} short pages, {} failed{}",
        reads.acked,
        reads.elapsed_s(),
        reads.acked as f64 / reads.elapsed_s(),
        short_pages.get(),
        reads.failed_overloaded + reads.failed_other,
        reads.first_error.as_ref().map_or(String::new(), |error| format!(" (first: {error})"))
    );
    println!("page latency: {}", percentiles_us(&reads.latency_all()));
    if params.background_rate.is_some() {
        println!(
            "background sends into another chat: {} acked at {:.0}/s, ack {}",
            background.acked,
            background.acked as f64 / background.elapsed_s(),
            percentiles_us(&background.latency_all())
        );
    }
    print_cpu(&before, &after);
    if params.core_reads > 0 {
        let core = history_in_core(params)?;
        println!(
            "in the messaging core alone (one thread, no shard, no queue; handle(GetHistory) + take_effects, {} pages): {}",
            core.len(),
            percentiles_us(&core)
        );
    }
    Ok(())
}

fn restart_write(config: &EngineConfig, params: &BenchParams) -> anyhow::Result<()> {
    let engine = open_engine(config, params)?;
    let messenger = engine.messenger();
    let clock = Clock::new();
    let mut pool = Pool::new();
    let mut rng = Rng(params.seed);
    let users = sign_up_users(&mut pool, &messenger, params.users)?;
    let targets = open_private_chats(&mut pool, &messenger, &users, params.chats, &mut rng)?;
    let before = Snapshot::take(&engine)?;
    let state = Rc::new(RefCell::new(LoadState::new()));
    let text = text_of(params.text_bytes);
    let in_flight = params.in_flight.unwrap_or(SENDS_IN_FLIGHT_DEFAULT);
    let start_ns = clock.now_ns();
    let mut issued = 0u64;
    let mut reported = 0u64;
    let mut per_second: Vec<u64> = Vec::new();
    // Sends refused with Overloaded are issued again: the count is of messages written.
    while state.borrow().acked < params.restart_messages {
        if let Some(error) = &state.borrow().first_error {
            bail!("a send failed: {error}");
        }
        while pool.in_flight() < in_flight && state.borrow().acked + (pool.in_flight() as u64) < params.restart_messages
        {
            let target = &targets[rng.below(targets.len() as u64) as usize];
            let sender = target.members[(rng.next() & 1) as usize];
            issued += 1;
            let message = NewMessage { random_id: RandomId(issued), text: text.clone(), reply_to: None };
            let future = messenger.send(target.chat, sender, message);
            spawn_send(&mut pool, &state, clock, future, clock.now_ns(), 0, target.chat);
        }
        pool.poll_woken();
        pool.park(Duration::from_micros(500));
        let acked = state.borrow().acked;
        let second = ((clock.now_ns() - start_ns) / 1_000_000_000) as usize;
        while per_second.len() <= second {
            per_second.push(acked);
        }
        if acked >= reported + 1_000_000 {
            reported = acked / 1_000_000 * 1_000_000;
            eprintln!("{reported} messages in {:.1} s", (clock.now_ns() - start_ns) as f64 / 1e9);
        }
    }
    wait_for_pool(&mut pool)?;
    let load = state.borrow_mut().finish(start_ns, clock.now_ns());
    let after = Snapshot::take(&engine)?;
    println!(
        "restart, write phase: {} users, {} private chats, {} messages of {} bytes sent in {:.1} s ({:.0}/s, closed loop, {} in flight), {} shards, {}",
        users.len(),
        targets.len(),
        load.acked,
        params.text_bytes,
        load.elapsed_s(),
        load.acked as f64 / load.elapsed_s(),
        in_flight,
        engine.shard_count(),
        describe_durability(config)
    );
    println!("send ack while writing: {}", percentiles_us(&load.latency_all()));
    let rates: Vec<String> = per_second.windows(2).map(|pair| format!("{}", pair[1] - pair[0])).collect();
    println!("acked per second: {}", rates.join(" "));
    print_log(&before, &after, load.acked, "send");
    print_cpu(&before, &after);
    print_data_dir(&config.data_dir, engine.shard_count());
    if params.unclean {
        println!("stopping without shutdown (process exit; acknowledged sends are durable under sync)");
        std::process::exit(0);
    }
    let started = Instant::now();
    engine.shutdown().context("shutting down")?;
    println!("clean shutdown took {:.0} ms", started.elapsed().as_secs_f64() * 1e3);
    Ok(())
}

fn restart_open(config: &EngineConfig, params: &BenchParams) -> anyhow::Result<()> {
    if params.drop_caches {
        drop_page_cache()?;
    }
    let rss_before = resident_bytes();
    let started = Instant::now();
    let engine = open_engine(config, params)?;
    let opened = started.elapsed();
    let messenger = engine.messenger();
    let user = block_on(messenger.lookup_phone(&phone_of(0)))
        .context("first request after open")?
        .ok_or_else(|| anyhow!("user 0 is not in the recovered data"))?;
    let answered = started.elapsed();
    let dialogs = block_on(messenger.get_dialogs(user, None, 1)).context("dialogs")?;
    let top = match dialogs.first() {
        Some(dialog) => {
            let page = HistoryPage { limit: 1, ..HistoryPage::default() };
            let history = block_on(messenger.get_history(dialog.chat, user, page))?;
            history.first().map(|message| (dialog.chat, message.id))
        }
        None => None,
    };
    println!(
        "restart, open phase{}: Engine::open returned after {:.0} ms; first messenger answer (lookup_phone) after {:.0} ms",
        if params.drop_caches { " (page cache dropped first)" } else { "" },
        opened.as_secs_f64() * 1e3,
        answered.as_secs_f64() * 1e3,
    );
    for (shard, report) in engine.open_reports().iter().enumerate() {
        println!(
            "shard {shard}: checkpoint {}, replayed {} records ({} bytes of log) in {:.0} ms (the log's own recovery time: checkpoint read, verified and restored {:.0} ms, log replayed {:.0} ms), next LSN {}",
            report.checkpoint.as_ref().map_or("none".to_string(), |(ticket, _)| format!("at LSN {}", ticket.lsn)),
            report.scan.records,
            report.scan.bytes,
            report.recovery_time.as_secs_f64() * 1e3,
            report.restore_time.as_secs_f64() * 1e3,
            report.replay_time.as_secs_f64() * 1e3,
            report.scan.next_lsn,
        );
    }
    if let Some((chat, id)) = top {
        println!("check: user 0's newest dialog is chat {chat}, its top message is {id}");
    }
    println!(
        "resident memory after open: {:.2} GB (was {:.2} GB before open)",
        resident_bytes() as f64 / 1e9,
        rss_before as f64 / 1e9
    );
    print_data_dir(&config.data_dir, engine.shard_count());
    // A clean shutdown checkpoints what was replayed (if there was enough), so the next open
    // of this directory only restores.
    let started = Instant::now();
    engine.shutdown().context("shutting down")?;
    println!("clean shutdown took {:.0} ms", started.elapsed().as_secs_f64() * 1e3);
    Ok(())
}

// The load: sends at a rate or with a window in flight.

/// A private chat and its two members.
struct Target {
    chat: ChatId,
    members: [UserId; 2],
}

/// What a run of requests measured.
struct LoadResult {
    mode: String,
    issued: u64,
    acked: u64,
    failed_overloaded: u64,
    failed_other: u64,
    first_error: Option<String>,
    /// Issue (or intended) → ack, per class (0: sender's box on the chat's shard, 1: not).
    latency_ns: [Histogram<u64>; 2],
    start_ns: u64,
    last_ack_ns: u64,
    /// Per chat, by message id - 1: when the message was issued (or intended), 0 if unknown.
    sent_ns: HashMap<ChatId, Vec<u64>>,
    sends_by_chat: HashMap<ChatId, u64>,
    /// Acks in each second of the run (the last entry: the rest, until the last ack).
    acked_per_second: Vec<u64>,
}

impl LoadResult {
    fn latency_all(&self) -> Histogram<u64> {
        let mut all = self.latency_ns[0].clone();
        let _ = all.add(&self.latency_ns[1]);
        all
    }

    fn elapsed_s(&self) -> f64 {
        (self.last_ack_ns.saturating_sub(self.start_ns)).max(1) as f64 / 1e9
    }

    fn sent_ns(&self, chat: ChatId, id: MessageId) -> Option<u64> {
        let times = self.sent_ns.get(&chat)?;
        times.get((id.0 as usize).checked_sub(1)?).copied().filter(|&ns| ns != 0)
    }
}

/// The load thread's running tally, shared by its request futures.
struct LoadState {
    in_flight: usize,
    issued: u64,
    acked: u64,
    failed_overloaded: u64,
    failed_other: u64,
    first_error: Option<String>,
    latency_ns: [Histogram<u64>; 2],
    last_ack_ns: u64,
    sent_ns: HashMap<ChatId, Vec<u64>>,
    sends_by_chat: HashMap<ChatId, u64>,
}

impl LoadState {
    fn new() -> LoadState {
        LoadState {
            in_flight: 0,
            issued: 0,
            acked: 0,
            failed_overloaded: 0,
            failed_other: 0,
            first_error: None,
            latency_ns: [new_histogram(), new_histogram()],
            last_ack_ns: 0,
            sent_ns: HashMap::new(),
            sends_by_chat: HashMap::new(),
        }
    }

    fn completed(&mut self, class: usize, intended_ns: u64, done_ns: u64) {
        record(&mut self.latency_ns[class], done_ns.saturating_sub(intended_ns).max(1));
        self.acked += 1;
        self.last_ack_ns = self.last_ack_ns.max(done_ns);
    }

    fn failed(&mut self, error: MessagingError) {
        if error == MessagingError::Overloaded {
            self.failed_overloaded += 1;
        } else {
            self.failed_other += 1;
            self.first_error.get_or_insert(error.to_string());
        }
    }

    fn finish(&mut self, start_ns: u64, now_ns: u64) -> LoadResult {
        LoadResult {
            mode: String::new(),
            issued: self.issued,
            acked: self.acked,
            failed_overloaded: self.failed_overloaded,
            failed_other: self.failed_other,
            first_error: self.first_error.take(),
            latency_ns: std::mem::replace(&mut self.latency_ns, [new_histogram(), new_histogram()]),
            start_ns,
            last_ack_ns: if self.last_ack_ns == 0 { now_ns } else { self.last_ack_ns },
            sent_ns: std::mem::take(&mut self.sent_ns),
            sends_by_chat: std::mem::take(&mut self.sends_by_chat),
            acked_per_second: Vec::new(),
        }
    }
}

fn reads_in_flight(state: &Rc<RefCell<LoadState>>) -> usize {
    state.borrow().in_flight
}

/// Issues sends chosen by `choose` (chat, sender, latency class) for `params.duration`, at
/// `params.rate` or with a window in flight, then waits for the outstanding ones.
fn run_sends(
    pool: &mut Pool,
    messenger: &Messenger,
    clock: Clock,
    params: &BenchParams,
    in_flight_default: usize,
    rng: &mut Rng,
    mut choose: impl FnMut(&mut Rng) -> (ChatId, Author, usize),
) -> LoadResult {
    let in_flight = match params.rate {
        Some(_) => OPEN_LOOP_IN_FLIGHT_MAX,
        None => params.in_flight.unwrap_or(in_flight_default),
    };
    let state = Rc::new(RefCell::new(LoadState::new()));
    let text = text_of(params.text_bytes);
    let start_ns = clock.now_ns();
    let end_ns = start_ns + params.duration.as_nanos() as u64;
    let mut issued = 0u64;
    // Acks counted at each whole second: a shard that stops answering shows as a zero.
    let mut acked_at_seconds: Vec<u64> = vec![0];
    loop {
        let now_ns = clock.now_ns();
        if now_ns >= end_ns {
            break;
        }
        while start_ns + acked_at_seconds.len() as u64 * 1_000_000_000 <= now_ns {
            acked_at_seconds.push(state.borrow().acked);
        }
        let due = match params.rate {
            Some(rate) => ((now_ns - start_ns) as u128 * rate as u128 / 1_000_000_000) as u64,
            None => u64::MAX,
        };
        while issued < due && pool.in_flight() < in_flight {
            let intended_ns = match params.rate {
                Some(rate) => start_ns + (issued as u128 * 1_000_000_000 / rate as u128) as u64,
                None => clock.now_ns(),
            };
            let (chat, sender, class) = choose(rng);
            let message = NewMessage { random_id: RandomId(issued + 1), text: text.clone(), reply_to: None };
            spawn_send(pool, &state, clock, messenger.send(chat, sender, message), intended_ns, class, chat);
            issued += 1;
        }
        pool.poll_woken();
        pool.park(Duration::from_micros(if params.rate.is_some() { 20 } else { 500 }));
    }
    let stopped_ns = clock.now_ns();
    let drained = wait_for_pool(pool);
    let mut result = state.borrow_mut().finish(start_ns, clock.now_ns());
    acked_at_seconds.push(result.acked);
    result.acked_per_second = acked_at_seconds.windows(2).map(|pair| pair[1] - pair[0]).collect();
    result.issued = issued;
    result.mode = match params.rate {
        Some(rate) => format!("open loop at {rate}/s (latency from each intended send time)"),
        None => format!("closed loop, {in_flight} in flight (latency from issue)"),
    };
    if let Err(error) = drained {
        result
            .first_error
            .get_or_insert(format!("{error} (load stopped after {:.1} s)", (stopped_ns - start_ns) as f64 / 1e9));
    }
    result
}

/// Issues one send; its completion lands in `state`.
fn spawn_send(
    pool: &mut Pool,
    state: &Rc<RefCell<LoadState>>,
    clock: Clock,
    future: impl Future<Output = MessagingResult<engine::messaging::SendAck>> + 'static,
    intended_ns: u64,
    class: usize,
    chat: ChatId,
) {
    {
        let mut state = state.borrow_mut();
        state.issued += 1;
        *state.sends_by_chat.entry(chat).or_default() += 1;
    }
    let state = state.clone();
    pool.spawn(async move {
        let result = future.await;
        let done_ns = clock.now_ns();
        let mut state = state.borrow_mut();
        match result {
            Ok(ack) => {
                state.completed(class, intended_ns, done_ns);
                let times = state.sent_ns.entry(ack.chat).or_default();
                let index = ack.id.0 as usize - 1;
                if times.len() <= index {
                    times.resize(index + 1, 0);
                }
                times[index] = intended_ns;
            }
            Err(error) => {
                *state.sends_by_chat.entry(chat).or_default() -= 1;
                state.failed(error);
            }
        }
    });
}

fn wait_for_pool(pool: &mut Pool) -> anyhow::Result<()> {
    let deadline = Instant::now() + COMPLETION_TIMEOUT;
    while pool.in_flight() > 0 {
        if Instant::now() > deadline {
            bail!("{} requests still outstanding {COMPLETION_TIMEOUT:?} after the load stopped", pool.in_flight());
        }
        pool.poll_woken();
        pool.park(Duration::from_millis(1));
    }
    Ok(())
}

// Setup.

fn phone_of(index: usize) -> String {
    format!("+1555{index:07}")
}

fn text_of(bytes: usize) -> String {
    "m".repeat(bytes.max(1))
}

fn sign_up_users(pool: &mut Pool, messenger: &Messenger, count: usize) -> anyhow::Result<Vec<UserId>> {
    let started = Instant::now();
    let users = run_all(pool, "sign up", count, SETUP_IN_FLIGHT, |index| {
        let messenger = messenger.clone();
        async move { messenger.sign_up(&phone_of(index), "Bench", &index.to_string()).await }
    })?;
    eprintln!("signed up {count} users in {:.1} s", started.elapsed().as_secs_f64());
    Ok(users)
}

/// `count` private chats between distinct random pairs of `users`.
fn open_private_chats(
    pool: &mut Pool,
    messenger: &Messenger,
    users: &[UserId],
    count: usize,
    rng: &mut Rng,
) -> anyhow::Result<Vec<Target>> {
    if users.len() < 2 {
        bail!("private chats need at least 2 users");
    }
    let possible = users.len() as u64 * (users.len() as u64 - 1) / 2;
    if count as u64 > possible {
        bail!("{count} private chats need more than {} users", users.len());
    }
    let mut pairs = std::collections::HashSet::new();
    let mut chosen = Vec::with_capacity(count);
    while chosen.len() < count {
        let a = users[rng.below(users.len() as u64) as usize];
        let b = users[rng.below(users.len() as u64) as usize];
        if a != b && pairs.insert((a.min(b), a.max(b))) {
            chosen.push([a, b]);
        }
    }
    let started = Instant::now();
    let chats = run_all(pool, "open private chats", count, SETUP_IN_FLIGHT, |index| {
        let messenger = messenger.clone();
        let [user, peer] = chosen[index];
        async move { messenger.open_private(user, peer).await }
    })?;
    eprintln!("opened {count} private chats in {:.1} s", started.elapsed().as_secs_f64());
    Ok(chats.into_iter().zip(chosen).map(|(chat, members)| Target { chat, members }).collect())
}

/// One session per user, held on the user's own shard.
/// Who sends as `user`: through the user's own session when `--through-session` says so.
fn authors(
    sessions: &[(UserId, (engine::messaging::SessionId, SessionEvents))],
    params: &BenchParams,
) -> impl Fn(UserId) -> Author {
    let session_of: HashMap<UserId, engine::messaging::SessionId> =
        sessions.iter().map(|(user, (session, _))| (*user, *session)).collect();
    let through = params.through_session;
    move |user| Author { user, session: if through { session_of.get(&user).copied() } else { None } }
}

fn connect_sessions(
    pool: &mut Pool,
    engine: &Engine,
    users: &[UserId],
) -> anyhow::Result<Vec<(UserId, (engine::messaging::SessionId, SessionEvents))>> {
    let messenger = engine.messenger();
    let started = Instant::now();
    let connected = run_all(pool, "connect sessions", users.len(), SETUP_IN_FLIGHT, |index| {
        let messenger = messenger.clone();
        let user = users[index];
        let shard = engine.shard_of(user.vshard());
        async move { messenger.connect(user, shard).await }
    })?;
    eprintln!("connected {} sessions in {:.1} s", users.len(), started.elapsed().as_secs_f64());
    Ok(users
        .iter()
        .copied()
        .zip(connected.into_iter().map(|connected| (connected.session, connected.events)))
        .collect())
}

/// Runs `count` operations, at most `in_flight` at a time, and returns their answers in
/// order. Operations refused with `Overloaded` are issued again; any other error stops.
fn run_all<T: 'static, F>(
    pool: &mut Pool,
    what: &str,
    count: usize,
    in_flight: usize,
    mut make: impl FnMut(usize) -> F,
) -> anyhow::Result<Vec<T>>
where
    F: Future<Output = MessagingResult<T>> + 'static,
{
    let answers: Rc<RefCell<Vec<Option<MessagingResult<T>>>>> =
        Rc::new(RefCell::new((0..count).map(|_| None).collect()));
    let retry: Rc<RefCell<Vec<usize>>> = Rc::new(RefCell::new(Vec::new()));
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let mut next = 0;
    let done = Rc::new(Cell::new(0usize));
    while done.get() < count {
        loop {
            if pool.in_flight() >= in_flight {
                break;
            }
            let index = match retry.borrow_mut().pop() {
                Some(index) => index,
                None if next < count => {
                    next += 1;
                    next - 1
                }
                None => break,
            };
            let future = make(index);
            let (answers, retry, done) = (answers.clone(), retry.clone(), done.clone());
            pool.spawn(async move {
                match future.await {
                    Err(MessagingError::Overloaded) => retry.borrow_mut().push(index),
                    answer => {
                        answers.borrow_mut()[index] = Some(answer);
                        done.set(done.get() + 1);
                    }
                }
            });
        }
        pool.poll_woken();
        if Instant::now() > deadline {
            bail!("{what}: {} of {count} done after {SETUP_TIMEOUT:?}", done.get());
        }
        pool.park(Duration::from_micros(500));
    }
    let answers = std::mem::take(&mut *answers.borrow_mut());
    answers
        .into_iter()
        .map(|answer| match answer {
            Some(Ok(value)) => Ok(value),
            Some(Err(error)) => Err(anyhow!("{what}: {error}")),
            None => Err(anyhow!("{what}: an operation never answered")),
        })
        .collect()
}

// Draining the sessions' live streams.

/// A live `NewMessage` seen on a session.
#[derive(Clone, Copy, Debug)]
struct Delivery {
    chat: ChatId,
    id: MessageId,
    sender: UserId,
    received_ns: u64,
    /// The session is the sender's own.
    own: bool,
}

#[derive(Debug, Default)]
struct DrainResult {
    /// In chunks of `DELIVERY_CHUNK` that never move once allocated: one vector doubling to
    /// hundreds of MB would stall the drain for its copy and page faults, and the stall would
    /// show as delivery latency.
    chunks: Vec<Vec<Delivery>>,
    recorded: usize,
    /// Deliveries past `DELIVERIES_RECORDED_MAX`, counted only.
    unrecorded: u64,
    resyncs: u64,
    other_events: u64,
    sessions: usize,
}

impl DrainResult {
    fn observe(&mut self, user: UserId, event: LiveEvent, received_ns: u64, limit: usize) -> bool {
        let update = match &event {
            LiveEvent::Box { update: sequenced, .. } => &sequenced.update,
            LiveEvent::Chat { update, .. } => &update.update,
            LiveEvent::Resync => {
                self.resyncs += 1;
                return false;
            }
            LiveEvent::Typing { .. } | LiveEvent::Presence { .. } | LiveEvent::Revoked => {
                self.other_events += 1;
                return false;
            }
        };
        let Update::NewMessage { chat, id, sender, .. } = *update else {
            self.other_events += 1;
            return false;
        };
        if self.recorded < limit {
            if self.chunks.last().is_none_or(|chunk| chunk.len() == DELIVERY_CHUNK) {
                self.chunks.push(Vec::with_capacity(DELIVERY_CHUNK));
            }
            if let Some(chunk) = self.chunks.last_mut() {
                chunk.push(Delivery { chat, id, sender, received_ns, own: sender == user });
            }
            self.recorded += 1;
        } else {
            self.unrecorded += 1;
        }
        true
    }

    fn deliveries(&self) -> impl Iterator<Item = &Delivery> {
        self.chunks.iter().flatten()
    }
}

/// Threads that wait on every session's stream and time each `NewMessage` that arrives.
struct Drains {
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<DrainResult>>,
}

impl Drains {
    fn start(
        sessions: Vec<(UserId, (engine::messaging::SessionId, SessionEvents))>,
        clock: Clock,
        params: &BenchParams,
    ) -> anyhow::Result<Drains> {
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let threads_wanted = params.drain_threads.max(1);
        let mut parts: Vec<Vec<(UserId, SessionEvents)>> = (0..threads_wanted).map(|_| Vec::new()).collect();
        for (index, (user, (_, events))) in sessions.into_iter().enumerate() {
            parts[index % threads_wanted].push((user, events));
        }
        let mut threads = Vec::new();
        for (index, part) in parts.into_iter().enumerate() {
            let (stop, received) = (stop.clone(), received.clone());
            let cpu = params.drain_cpu;
            let mode = params.drain_mode;
            let limit = DELIVERIES_RECORDED_MAX / threads_wanted;
            let thread = std::thread::Builder::new()
                .name(format!("bench-drain-{index}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        if let Err(error) = pin_current_thread(cpu) {
                            eprintln!("warning: {error}");
                        }
                    }
                    match mode {
                        DrainMode::Wake => drain(part, clock, &stop, &received, limit),
                        DrainMode::Poll => drain_polling(part, clock, &stop, &received, limit),
                    }
                })
                .context("starting a drain thread")?;
            threads.push(thread);
        }
        Ok(Drains { stop, received, threads })
    }

    /// Waits until `wanted` deliveries arrived (or `DELIVERY_TIMEOUT` passed without
    /// progress), then stops the threads and merges what they saw.
    fn finish(self, wanted: u64, clock: &Clock) -> anyhow::Result<DrainResult> {
        let mut last = self.received.load(Ordering::Relaxed);
        let mut progress_ns = clock.now_ns();
        while self.received.load(Ordering::Relaxed) < wanted {
            let now = self.received.load(Ordering::Relaxed);
            if now != last {
                last = now;
                progress_ns = clock.now_ns();
            } else if clock.now_ns() - progress_ns > DELIVERY_TIMEOUT.as_nanos() as u64 {
                eprintln!("warning: {now} of {wanted} deliveries arrived; stopped waiting after {DELIVERY_TIMEOUT:?} without progress");
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.stop.store(true, Ordering::Release);
        let mut merged = DrainResult::default();
        for thread in self.threads {
            let part = thread.join().map_err(|_| anyhow!("a drain thread panicked"))?;
            merged.chunks.extend(part.chunks);
            merged.recorded += part.recorded;
            merged.unrecorded += part.unrecorded;
            merged.resyncs += part.resyncs;
            merged.other_events += part.other_events;
            merged.sessions += part.sessions;
        }
        Ok(merged)
    }
}

/// One task per session, each waiting on `events.next()`: the shard's delivery wakes it, and
/// the event is stamped when the task runs. The thread sleeps while nothing arrives.
fn drain(
    sessions: Vec<(UserId, SessionEvents)>,
    clock: Clock,
    stop: &AtomicBool,
    received: &AtomicU64,
    limit: usize,
) -> DrainResult {
    let result = Rc::new(RefCell::new(DrainResult { sessions: sessions.len(), ..DrainResult::default() }));
    let found = Rc::new(Cell::new(0u64));
    let mut pool = Pool::new();
    for (user, mut events) in sessions {
        let (result, found) = (result.clone(), found.clone());
        pool.spawn(async move {
            while let Some(event) = events.next().await {
                let received_ns = clock.now_ns();
                if result.borrow_mut().observe(user, event, received_ns, limit) {
                    found.set(found.get() + 1);
                }
            }
        });
    }
    while !stop.load(Ordering::Acquire) {
        pool.poll_woken();
        received.fetch_add(found.replace(0), Ordering::Relaxed);
        pool.park(Duration::from_millis(1));
    }
    drop(pool);
    let result = std::mem::take(&mut *result.borrow_mut());
    result
}

/// Sweeps every session's stream until stopped; yields the CPU after a sweep that found nothing.
fn drain_polling(
    sessions: Vec<(UserId, SessionEvents)>,
    clock: Clock,
    stop: &AtomicBool,
    received: &AtomicU64,
    limit: usize,
) -> DrainResult {
    let mut result = DrainResult { sessions: sessions.len(), ..DrainResult::default() };
    // A session dropped for overflowing ends its stream with Resync; it is not polled again.
    let mut sessions: Vec<(UserId, SessionEvents, bool)> =
        sessions.into_iter().map(|(user, events)| (user, events, true)).collect();
    while !stop.load(Ordering::Acquire) {
        let mut found = 0u64;
        for (user, events, alive) in sessions.iter_mut().filter(|(_, _, alive)| *alive) {
            while let Some(event) = events.try_next() {
                if matches!(event, LiveEvent::Resync) {
                    *alive = false;
                }
                if result.observe(*user, event, clock.now_ns(), limit) {
                    found += 1;
                }
            }
        }
        if found > 0 {
            received.fetch_add(found, Ordering::Relaxed);
        } else {
            std::thread::yield_now();
        }
    }
    result
}

// Figures.

fn print_load(load: &LoadResult, params: &BenchParams, what: &str) {
    println!("load: {}, {:.1} s", load.mode, params.duration.as_secs_f64());
    println!(
        "{what}: {} issued, {} acked, {} overloaded, {} failed{}; {:.0} acked/s (first issue to last ack, {:.2} s)",
        load.issued,
        load.acked,
        load.failed_overloaded,
        load.failed_other,
        load.first_error.as_ref().map_or(String::new(), |error| format!(" (first: {error})")),
        load.acked as f64 / load.elapsed_s(),
        load.elapsed_s(),
    );
    println!("send -> ack: {}", percentiles_us(&load.latency_all()));
    let per_second: Vec<String> = load.acked_per_second.iter().map(u64::to_string).collect();
    println!("acked in each second: {}", per_second.join(" "));
    if !load.latency_ns[1].is_empty() {
        println!(
            "  sender's box on the chat's shard: {} sends, {}",
            load.latency_ns[0].len(),
            percentiles_us(&load.latency_ns[0])
        );
        println!(
            "  sender's box on another shard:    {} sends, {}",
            load.latency_ns[1].len(),
            percentiles_us(&load.latency_ns[1])
        );
    }
}

fn print_log(before: &Snapshot, after: &Snapshot, operations: u64, what: &str) {
    let mut records = 0;
    for ((shard, lsn_before, stats_before), (_, lsn_after, stats_after)) in before.logs.iter().zip(&after.logs) {
        let shard_records = lsn_after.0 - lsn_before.0;
        let batches = stats_after.batches - stats_before.batches;
        let syncs = stats_after.syncs - stats_before.syncs;
        let sync_us = stats_after.sync_time_us - stats_before.sync_time_us;
        records += shard_records;
        println!(
            "shard {}: {} WAL records, {} batches ({:.0} records/batch, {:.1} KiB/batch), {} fdatasyncs (mean {:.0} us, max since open {} us)",
            shard.0,
            shard_records,
            batches,
            shard_records as f64 / batches.max(1) as f64,
            (stats_after.batch_bytes - stats_before.batch_bytes) as f64 / batches.max(1) as f64 / 1024.0,
            syncs,
            sync_us as f64 / syncs.max(1) as f64,
            stats_after.sync_time_us_max,
        );
    }
    println!(
        "WAL records per {what}, counted (LSNs appended on every shard during the run / acked): {:.3}",
        records as f64 / operations.max(1) as f64
    );
}

fn print_cpu(before: &Snapshot, after: &Snapshot) {
    let wall = after.taken.duration_since(before.taken).as_secs_f64();
    let mut lines = Vec::new();
    for (name, cpu_after) in &after.cpu {
        let cpu_before = before.cpu.iter().find(|(other, _)| other == name).map_or(0.0, |(_, cpu)| *cpu);
        let used = (cpu_after - cpu_before) / wall;
        if used >= 0.01 {
            lines.push(format!("{name} {:.0}%", used * 100.0));
        }
    }
    println!("CPU use over {wall:.1} s (user + system, from /proc): {}", lines.join(", "));
}

fn print_drains(drains: &DrainResult, params: &BenchParams, wanted: u64, unmatched: u64) {
    let got = drains.recorded as u64 + drains.unrecorded;
    println!(
        "deliveries: {got} of {wanted} expected on {} sessions ({} drain thread(s), {:?} mode); {} unrecorded beyond the cap, {} without a matching ack, {} resyncs (session queues overflowed), {} other events",
        drains.sessions, params.drain_threads, params.drain_mode, drains.unrecorded, unmatched, drains.resyncs, drains.other_events,
    );
}

/// Per message: time to its first and last recipient, over messages every recipient got.
fn print_broadcast(load: &LoadResult, drains: &DrainResult, recipients: u64, who: &str) {
    let mut per_message: HashMap<(ChatId, MessageId), (u64, u64, u64)> = HashMap::new();
    let mut each = new_histogram();
    for delivery in drains.deliveries() {
        let Some(sent_ns) = load.sent_ns(delivery.chat, delivery.id) else { continue };
        let latency_ns = delivery.received_ns.saturating_sub(sent_ns).max(1);
        record(&mut each, latency_ns);
        let entry = per_message.entry((delivery.chat, delivery.id)).or_insert((0, u64::MAX, 0));
        entry.0 += 1;
        entry.1 = entry.1.min(latency_ns);
        entry.2 = entry.2.max(latency_ns);
    }
    let mut first = new_histogram();
    let mut last = new_histogram();
    let mut incomplete = 0;
    for &(count, first_ns, last_ns) in per_message.values() {
        if count < recipients {
            incomplete += 1;
            continue;
        }
        record(&mut first, first_ns);
        record(&mut last, last_ns);
    }
    println!("send -> delivery, every {who} session: {} deliveries, {}", each.len(), percentiles_us(&each));
    println!("send -> first {who} has it: {} messages, {}", first.len(), percentiles_us(&first));
    println!(
        "send -> LAST {who} has it: {} messages, {}; {} messages did not reach all {} {who}s",
        last.len(),
        percentiles_us(&last),
        incomplete,
        recipients
    );
}

fn print_data_dir(data_dir: &Path, shards: usize) {
    for shard in 0..shards {
        let dir = data_dir.join(format!("shard-{shard}"));
        let checkpoints: Vec<(String, u64)> = list_files(&dir.join("checkpoints"));
        let wal_bytes: u64 = list_files(&dir.join("wal")).iter().map(|(_, bytes)| bytes).sum();
        let described: Vec<String> =
            checkpoints.iter().map(|(name, bytes)| format!("{name} {:.1} MB", *bytes as f64 / 1e6)).collect();
        println!(
            "shard {shard} on disk: WAL segments {:.2} GB; checkpoints: {}",
            wal_bytes as f64 / 1e9,
            if described.is_empty() { "none".to_string() } else { described.join(", ") }
        );
    }
}

fn list_files(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .filter_map(|entry| Some((entry.file_name().into_string().ok()?, entry.metadata().ok()?.len())))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn describe_durability(config: &EngineConfig) -> String {
    format!(
        "durability {:?}, shards pinned to CPUs {:?}",
        config.log.durability,
        config.cpus.clone().unwrap_or_default()
    )
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds")
}

fn record(histogram: &mut Histogram<u64>, value_ns: u64) {
    let _ = histogram.record(value_ns.clamp(1, LATENCY_NS_MAX));
}

fn percentiles_us(histogram: &Histogram<u64>) -> String {
    if histogram.is_empty() {
        return "no samples".into();
    }
    let at = |quantile: f64| histogram.value_at_quantile(quantile) as f64 / 1e3;
    format!(
        "us p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        histogram.max() as f64 / 1e3
    )
}

// The in-core history measurement.

/// Pages read straight from a `MessagingCore` on this thread: the core's own cost of a
/// history page, without the queue, the shard's wake-up or the reply's trip back.
fn history_in_core(params: &BenchParams) -> anyhow::Result<Histogram<u64>> {
    struct CountingJournal(u64);
    impl engine::messaging::Journal for CountingJournal {
        fn append_all(&mut self, records: &[(RecordKind, VShard, &[u8])]) -> Result<Lsn, AppendError> {
            let first = Lsn(self.0);
            self.0 += records.len() as u64;
            Ok(first)
        }
    }
    let mut core = MessagingCore::new(ShardId(0), Arc::new(VShardTable::round_robin(1)));
    core.resume(0, Lsn::ZERO);
    let mut journal = CountingJournal(1);
    let mut next_request = 0u64;
    let mut step =
        |core: &mut MessagingCore, journal: &mut CountingJournal, request: Request| -> MessagingResult<Response> {
            next_request += 1;
            let origin = Origin { shard: ShardId(0), request: next_request };
            core.handle(origin, request, now_ms(), journal);
            let last = Lsn(journal.0 - 1);
            core.advance(last, last, journal);
            let effects = core.take_effects();
            effects
                .replies
                .into_iter()
                .find(|(reply_origin, _)| *reply_origin == origin)
                .map(|(_, result)| result)
                .unwrap_or(Err(MessagingError::Unavailable))
        };
    let mut users = Vec::new();
    for index in 0..2 {
        let request = Request::SignUp { phone: phone_of(index), first_name: "Bench".into(), last_name: String::new() };
        match step(&mut core, &mut journal, request)? {
            Response::User(user) => users.push(user),
            other => bail!("unexpected answer to sign-up: {other:?}"),
        }
    }
    let chat = match step(&mut core, &mut journal, Request::OpenPrivate { user: users[0], peer: users[1] })? {
        Response::Chat(chat) => chat,
        other => bail!("unexpected answer to open_private: {other:?}"),
    };
    let text = text_of(params.text_bytes);
    for index in 0..params.messages as u64 {
        let send = SendRequest {
            chat,
            sender: users[0],
            session: None,
            random_id: RandomId(index + 1),
            text: text.clone(),
            reply_to: None,
            forwarded_from: None,
            media: None,
        };
        step(&mut core, &mut journal, Request::Send(send))?;
    }
    let mut rng = Rng(params.seed);
    let mut latency_ns = new_histogram();
    let top = params.messages as u64;
    let page = params.page;
    for _ in 0..params.core_reads {
        let offset_id = MessageId(page as u64 + 1 + rng.below(top - page as u64 + 1));
        next_request += 1;
        let origin = Origin { shard: ShardId(0), request: next_request };
        let request = Request::GetHistory {
            chat,
            user: users[1],
            page: HistoryPage { offset_id, limit: page, ..HistoryPage::default() },
        };
        let started = Instant::now();
        core.handle(origin, request, now_ms(), &mut journal);
        let effects = core.take_effects();
        let elapsed_ns = started.elapsed().as_nanos() as u64;
        // Dropped outside the timing: in the engine the host thread frees the answer.
        match effects.replies.first() {
            Some((_, Ok(Response::Messages(messages)))) if messages.len() == page => {}
            other => bail!("unexpected history answer in the core: {other:?}"),
        }
        drop(effects);
        record(&mut latency_ns, elapsed_ns);
    }
    Ok(latency_ns)
}

fn now_ms() -> UnixMs {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    UnixMs(since_epoch.as_millis() as u64)
}

/// Opens the engine, then pins the load thread. Not before: `Engine::open` pins shards only
/// to CPUs the calling thread may run on.
fn open_engine(config: &EngineConfig, params: &BenchParams) -> anyhow::Result<Engine> {
    let engine = Engine::open(config.clone()).context("opening the engine")?;
    if let Some(cpu) = params.load_cpu {
        pin_current_thread(cpu)?;
    }
    Ok(engine)
}

// Restart helpers.

/// Runs the write phase as a child process of this binary with the same arguments.
fn run_restart_writer() -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding this program")?;
    let mut args: Vec<String> = Vec::new();
    let mut skip = false;
    for arg in std::env::args().skip(1) {
        if skip {
            skip = false;
            continue;
        }
        if arg == "--restart-phase" {
            skip = true;
            continue;
        }
        if arg.starts_with("--restart-phase=") {
            continue;
        }
        args.push(arg);
    }
    args.extend(["--restart-phase".into(), "write".into()]);
    let status = std::process::Command::new(exe).args(&args).status().context("running the write phase")?;
    if !status.success() {
        bail!("the write phase failed: {status}");
    }
    Ok(())
}

fn drop_page_cache() -> anyhow::Result<()> {
    // SAFETY: sync takes no arguments and only flushes dirty pages.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").context("dropping the page cache (needs root)")
}

fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Removes a previous run's data directory (only one that looks like an engine's).
fn fresh_data_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("reading {}", dir.display())),
        Ok(mut entries) => {
            let empty = entries.next().is_none();
            let engine_dir = dir.join("LOCK").exists() || dir.join(engine::vshards::TABLE_FILE).exists();
            if !empty && !engine_dir {
                bail!("{} is not empty and is not an engine data directory; refusing to delete it", dir.display());
            }
            std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

// Log and CPU snapshots.

struct Snapshot {
    taken: Instant,
    logs: Vec<(ShardId, Lsn, LogStats)>,
    /// CPU seconds per thread name.
    cpu: Vec<(String, f64)>,
}

impl Snapshot {
    fn take(engine: &Engine) -> anyhow::Result<Snapshot> {
        let (sender, receiver) = std::sync::mpsc::channel();
        engine.run_on_every_shard(move |context: Rc<engine::shard::ShardContext>| {
            let sender = sender.clone();
            async move {
                let _ = sender.send((context.id, context.log.next_lsn(), context.log.stats()));
            }
        })?;
        let mut logs = Vec::new();
        for _ in 0..engine.shard_count() {
            logs.push(receiver.recv_timeout(Duration::from_secs(10)).context("a shard did not report its log")?);
        }
        logs.sort_by_key(|(shard, _, _)| *shard);
        Ok(Snapshot { taken: Instant::now(), logs, cpu: thread_cpu_seconds() })
    }
}

/// CPU seconds (user + system) of each thread of this process, summed by thread name.
fn thread_cpu_seconds() -> Vec<(String, f64)> {
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut by_name: Vec<(String, f64)> = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return by_name };
    for task in tasks.filter_map(|task| task.ok()) {
        let path: PathBuf = task.path();
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else { continue };
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default().trim().to_string();
        // Fields after the parenthesised name: state is the first, utime the 12th, stime the 13th.
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |index: usize| fields.get(index).and_then(|field| field.parse::<f64>().ok()).unwrap_or(0.0);
        let seconds = (ticks(11) + ticks(12)) / ticks_per_second;
        match by_name.iter_mut().find(|(other, _)| *other == name) {
            Some((_, total)) => *total += seconds,
            None => by_name.push((name, seconds)),
        }
    }
    by_name.sort_by(|a, b| a.0.cmp(&b.0));
    by_name
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: cpu_set_t is plain data; an all-zero set is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        bail!("CPU {cpu} is out of range");
    }
    // SAFETY: `cpu` is below CPU_SETSIZE, checked above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; the set is initialised and its size is passed.
    let status = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if status != 0 {
        bail!("pinning a thread to CPU {cpu}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

// A clock shared by threads, and a small random number generator.

/// Nanoseconds since one instant, comparable across threads.
#[derive(Clone, Copy, Debug)]
struct Clock {
    epoch: Instant,
}

impl Clock {
    fn new() -> Clock {
        Clock { epoch: Instant::now() }
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

/// splitmix64: enough for choosing pairs and offsets, and the same for the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

// The load thread's executor.

type Task = Pin<Box<dyn Future<Output = ()>>>;

/// Runs many `'static` futures on the current thread. A task is polled when spawned and then
/// only when its waker fires (from a shard's thread, when its answer arrives): one waker per
/// slot, which pushes the slot onto a shared list and unparks this thread.
struct Pool {
    tasks: Vec<Option<Task>>,
    wakers: Vec<Waker>,
    free: Vec<usize>,
    woken: Arc<Woken>,
    polling: Vec<usize>,
    running: usize,
}

struct Woken {
    slots: Mutex<Vec<usize>>,
    thread: std::thread::Thread,
}

struct SlotWaker {
    slot: usize,
    woken: Arc<Woken>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.slots.lock().unwrap_or_else(|poison| poison.into_inner()).push(self.slot);
        self.woken.thread.unpark();
    }
}

impl Pool {
    fn new() -> Pool {
        let woken = Arc::new(Woken { slots: Mutex::new(Vec::new()), thread: std::thread::current() });
        Pool { tasks: Vec::new(), wakers: Vec::new(), free: Vec::new(), woken, polling: Vec::new(), running: 0 }
    }

    fn in_flight(&self) -> usize {
        self.running
    }

    fn spawn(&mut self, future: impl Future<Output = ()> + 'static) {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = self.tasks.len();
                self.tasks.push(None);
                self.wakers.push(Waker::from(Arc::new(SlotWaker { slot, woken: self.woken.clone() })));
                slot
            }
        };
        let mut task: Task = Box::pin(future);
        // A slot's waker may still fire for its previous task: the new one is then polled
        // once for nothing, which futures allow.
        if task.as_mut().poll(&mut Context::from_waker(&self.wakers[slot])).is_ready() {
            self.free.push(slot);
        } else {
            self.tasks[slot] = Some(task);
            self.running += 1;
        }
    }

    /// Polls every task woken since the last call.
    fn poll_woken(&mut self) {
        let mut polling = std::mem::take(&mut self.polling);
        std::mem::swap(&mut polling, &mut *self.woken.slots.lock().unwrap_or_else(|poison| poison.into_inner()));
        for &slot in &polling {
            let Some(task) = self.tasks[slot].as_mut() else { continue };
            if task.as_mut().poll(&mut Context::from_waker(&self.wakers[slot])).is_ready() {
                self.tasks[slot] = None;
                self.free.push(slot);
                self.running -= 1;
            }
        }
        polling.clear();
        self.polling = polling;
    }

    /// Sleeps until a task is woken or `timeout` passes.
    fn park(&self, timeout: Duration) {
        let idle = self.woken.slots.lock().unwrap_or_else(|poison| poison.into_inner()).is_empty();
        if idle {
            std::thread::park_timeout(timeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the pool runs tasks woken from another thread to completion and frees their slots.
    #[test]
    fn pool_runs_tasks_woken_elsewhere() {
        let mut pool = Pool::new();
        let done = Rc::new(Cell::new(0));
        for _ in 0..100 {
            let (sender, receiver) = flume::bounded::<u32>(1);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(5));
                let _ = sender.send(7);
            });
            let done = done.clone();
            pool.spawn(async move {
                if receiver.recv_async().await == Ok(7) {
                    done.set(done.get() + 1);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.in_flight() > 0 && Instant::now() < deadline {
            pool.poll_woken();
            pool.park(Duration::from_millis(1));
        }
        assert_eq!(done.get(), 100);
        assert_eq!(pool.in_flight(), 0);
    }

    /// Proves the generator gives the same sequence for the same seed and stays in bounds.
    #[test]
    fn rng_is_deterministic_and_bounded() {
        let (mut a, mut b) = (Rng(7), Rng(7));
        for _ in 0..1000 {
            let value = a.below(10);
            assert_eq!(value, b.below(10));
            assert!(value < 10);
        }
    }
}
