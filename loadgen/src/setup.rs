//! Carrying a plan out on a target before the load: provisioning users through the normal
//! login (many at once), creating chats, following channels, pre-filling history chats.
//! Every step runs many operations concurrently and gives up on the first failure with an
//! error naming the step and the user or chat.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferrogram_net::ChatKind;

use crate::acks::{AckRecord, AckWriter};
use crate::limits::PREFILL_BATCH;
use crate::observer::{receive, Observer};
use crate::options::{Pool, RunOptions};
use crate::plan::Plan;
use crate::runtime::Handle;
use crate::stamp;
use crate::stats::lock;
use crate::system;
use crate::target::{ChatId, ChatSpec, Target, TargetError, UserId, UserSpec};

/// A plan carried out: ids and sessions by the plan's indexes.
pub struct World<T: Target> {
    pub plan: Plan,
    pub users: Vec<UserId>,
    /// The session of each online user.
    pub sessions: Vec<Option<T::Session>>,
    pub chats: Vec<ChatId>,
}

impl<T: Target> fmt::Debug for World<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("World").field("users", &self.users.len()).field("chats", &self.chats.len()).finish()
    }
}

impl<T: Target> World<T> {
    /// The session of an online user of the plan.
    pub fn session(&self, user: usize) -> &T::Session {
        self.sessions[user].as_ref().unwrap_or_else(|| panic!("user {user} of the plan is not online"))
    }
}

/// Figures of the setup, for the report.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SetupReport {
    pub users: usize,
    pub online_users: usize,
    pub chats: usize,
    pub follows: usize,
    pub prefill_messages: usize,
    /// Users that registered a push device (`--push-devices`).
    pub push_devices: usize,
    pub provision_s: f64,
    /// Logins (and sign-ups) per second while provisioning.
    pub provision_rate_per_s: f64,
    pub setup_s: f64,
    pub server_memory: Option<ServerMemory>,
}

/// The server's resident memory around provisioning (`--server-pid`): before, after every
/// user was signed up (and logged out again), after every online user connected, and after
/// chats were set up. The difference over the connecting step, per connection, is what one
/// authorized connection costs the server.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ServerMemory {
    pub before_kib: u64,
    pub after_sign_up_kib: u64,
    pub after_connect_kib: u64,
    pub after_setup_kib: u64,
    pub connections: usize,
    pub per_connection_bytes: f64,
}

/// A setup step that failed.
#[derive(Debug, thiserror::Error)]
#[error("{step} failed: {source}")]
#[non_exhaustive]
pub struct SetupError {
    pub step: String,
    #[source]
    pub source: TargetError,
}

/// Allocates the random_ids of one run: consecutive from a random base, so they are distinct
/// within the run and, with overwhelming likelihood, from earlier runs on the same server
/// (the server remembers random_ids for 24 hours).
#[derive(Debug)]
pub struct RandomIds {
    next: AtomicU64,
}

impl RandomIds {
    pub fn new() -> RandomIds {
        // Never 0 (refused by the server), and far from wrapping around within a run.
        RandomIds { next: AtomicU64::new(fastrand::u64(1 << 40..1 << 62)) }
    }

    pub fn next(&self) -> u64 {
        self.next.fetch_add(1, Relaxed)
    }
}

impl Default for RandomIds {
    fn default() -> RandomIds {
        RandomIds::new()
    }
}

/// Sets the plan up on `target`; receivers start on each online session right away.
pub async fn set_up<T: Target>(
    target: &Arc<T>,
    plan: Plan,
    options: &RunOptions,
    handle: &Handle,
    observer: &Arc<Observer>,
    acks: Option<&Arc<AckWriter>>,
    random_ids: &Arc<RandomIds>,
) -> Result<(World<T>, SetupReport), SetupError> {
    let started = Instant::now();
    let concurrency = options.provision_concurrency;
    let plan = Arc::new(plan);
    let users = plan.users.len();
    let mut report = SetupReport {
        users,
        online_users: plan.online_users,
        chats: plan.chats.len(),
        push_devices: if options.push_devices { users } else { 0 },
        ..SetupReport::default()
    };
    let memory_before = options.server_pid.and_then(system::resident_kib);

    // Users. With a server pid, everyone first signs up and logs out, then the online users
    // log in again, so the second step's memory is the connections' alone.
    let ids: Arc<Vec<Mutex<Option<UserId>>>> = Arc::new((0..users).map(|_| Mutex::new(None)).collect());
    let sessions: Arc<Vec<Mutex<Option<T::Session>>>> = Arc::new((0..users).map(|_| Mutex::new(None)).collect());
    let provision_started = Instant::now();
    let mut logins = 0;
    let mut memory_after_sign_up = None;
    if options.server_pid.is_some() {
        provision(target, &plan, handle, observer, &ids, &sessions, concurrency, false, options.push_devices).await?;
        logins += users;
        memory_after_sign_up = options.server_pid.and_then(system::resident_kib);
    }
    provision(target, &plan, handle, observer, &ids, &sessions, concurrency, true, options.push_devices).await?;
    logins += if options.server_pid.is_some() { plan.online_users } else { users };
    report.provision_s = provision_started.elapsed().as_secs_f64();
    report.provision_rate_per_s = logins as f64 / report.provision_s.max(1e-9);
    let memory_after_connect = options.server_pid.and_then(system::resident_kib);

    let ids: Vec<UserId> = ids.iter().map(|id| lock(id).expect("every user was provisioned")).collect();
    let sessions: Vec<Option<T::Session>> = sessions.iter().map(|session| lock(session).take()).collect();
    let world = Arc::new(World { plan: Arc::unwrap_or_clone(plan), users: ids, sessions, chats: Vec::new() });

    // Chats.
    let chat_ids: Arc<Vec<Mutex<Option<ChatId>>>> =
        Arc::new((0..world.plan.chats.len()).map(|_| Mutex::new(None)).collect());
    {
        let (target, world, chat_ids) = (target.clone(), world.clone(), chat_ids.clone());
        concurrently(handle, world.plan.chats.len(), concurrency, move |index| {
            let (target, world, chat_ids) = (target.clone(), world.clone(), chat_ids.clone());
            async move {
                let planned = &world.plan.chats[index];
                let users = |indexes: &[usize]| indexes.iter().map(|&user| world.users[user]).collect::<Vec<_>>();
                let spec = match planned.pool {
                    Pool::Dm | Pool::History | Pool::Media => {
                        ChatSpec::Private { peer: world.users[planned.members[1]] }
                    }
                    Pool::Group => ChatSpec::Group {
                        title: format!("loadgen group {index}"),
                        members: users(&planned.members[1..]),
                    },
                    Pool::Channel => {
                        ChatSpec::Channel { title: format!("loadgen channel {index}"), admins: users(&planned.admins) }
                    }
                };
                let id = target
                    .create_chat(world.session(planned.creator), &spec)
                    .await
                    .map_err(|source| SetupError { step: format!("creating chat {index} ({spec:?})"), source })?;
                *lock(&chat_ids[index]) = Some(id);
                Ok(())
            }
        })
        .await?;
    }
    let chats: Vec<ChatId> = chat_ids.iter().map(|id| lock(id).expect("every chat was created")).collect();
    let mut world = Arc::into_inner(world).expect("the setup tasks are done");
    world.chats = chats;
    let world = Arc::new(world);

    // Channel followers join and subscribe.
    let follows: Vec<(usize, usize)> = world
        .plan
        .chats
        .iter()
        .enumerate()
        .flat_map(|(chat, planned)| planned.followers.iter().map(move |&user| (chat, user)))
        .collect();
    report.follows = follows.len();
    {
        let (target, world, follows) = (target.clone(), world.clone(), Arc::new(follows));
        concurrently(handle, follows.len(), concurrency, move |index| {
            let (target, world, follows) = (target.clone(), world.clone(), follows.clone());
            async move {
                let (chat, user) = follows[index];
                target.follow(world.session(user), world.chats[chat]).await.map_err(|source| SetupError {
                    step: format!("user {} following channel {}", world.users[user], world.chats[chat]),
                    source,
                })
            }
        })
        .await?;
    }

    if let Some(acks) = acks {
        write_header(acks, &world).map_err(|error| SetupError {
            step: "writing the acks file".into(),
            source: TargetError::local(crate::target::IO, error.to_string()),
        })?;
    }

    // History chats are pre-filled by their creators, one batch per creator at a time.
    let mut by_creator: Vec<(usize, Vec<usize>)> = Vec::new();
    for &chat in &world.plan.pools[Pool::History.index()] {
        let creator = world.plan.chats[chat].creator;
        match by_creator.iter_mut().find(|(user, _)| *user == creator) {
            Some((_, chats)) => chats.push(chat),
            None => by_creator.push((creator, vec![chat])),
        }
    }
    report.prefill_messages = options.prefill * world.plan.pools[Pool::History.index()].len();
    if options.prefill > 0 {
        let prefill = options.prefill;
        let message_bytes = options.message_bytes;
        let (target, world, by_creator) = (target.clone(), world.clone(), Arc::new(by_creator));
        let (acks, random_ids) = (acks.cloned(), random_ids.clone());
        concurrently(handle, by_creator.len(), concurrency, move |index| {
            let (target, world, by_creator) = (target.clone(), world.clone(), by_creator.clone());
            let (acks, random_ids) = (acks.clone(), random_ids.clone());
            async move {
                let (creator, chats) = &by_creator[index];
                for &chat in chats {
                    let mut sent = 0;
                    while sent < prefill {
                        let batch: Vec<(u64, String)> = (sent..prefill.min(sent + PREFILL_BATCH))
                            .map(|_| (random_ids.next(), stamp::text(0, message_bytes)))
                            .collect();
                        let random: Vec<u64> = batch.iter().map(|(random_id, _)| *random_id).collect();
                        sent += batch.len();
                        let answers = target.send_batch(world.session(*creator), world.chats[chat], batch).await;
                        for (random_id, answer) in random.into_iter().zip(answers) {
                            let ack = answer.map_err(|source| SetupError {
                                step: format!("pre-filling chat {}", world.chats[chat]),
                                source,
                            })?;
                            if let Some(acks) = &acks {
                                let record =
                                    AckRecord { chat: ack.chat, id: ack.id, random_id, sender: world.users[*creator] };
                                acks.ack(record).map_err(|error| SetupError {
                                    step: "writing the acks file".into(),
                                    source: TargetError::local(crate::target::IO, error.to_string()),
                                })?;
                            }
                        }
                    }
                }
                Ok(())
            }
        })
        .await?;
    }

    let world = Arc::into_inner(world).expect("the setup tasks are done");
    report.setup_s = started.elapsed().as_secs_f64();
    if let (Some(before), Some(after_connect)) = (memory_before, memory_after_connect) {
        let after_sign_up = memory_after_sign_up.unwrap_or(before);
        let after_setup = options.server_pid.and_then(system::resident_kib).unwrap_or(after_connect);
        let connections = world.plan.online_users;
        report.server_memory = Some(ServerMemory {
            before_kib: before,
            after_sign_up_kib: after_sign_up,
            after_connect_kib: after_connect,
            after_setup_kib: after_setup,
            connections,
            per_connection_bytes: (after_connect as f64 - after_sign_up as f64) * 1024.0 / connections.max(1) as f64,
        });
    }
    Ok((world, report))
}

/// Provisions every user (`online`: keeping the online ones' sessions) or, when `online` is
/// false, signs everyone up and logs them out again. With `push_devices` each user registers
/// its push device when first provisioned.
#[allow(clippy::too_many_arguments)]
async fn provision<T: Target>(
    target: &Arc<T>,
    plan: &Arc<Plan>,
    handle: &Handle,
    observer: &Arc<Observer>,
    ids: &Arc<Vec<Mutex<Option<UserId>>>>,
    sessions: &Arc<Vec<Mutex<Option<T::Session>>>>,
    concurrency: usize,
    online: bool,
    push_devices: bool,
) -> Result<(), SetupError> {
    let count = plan.users.len();
    let (target, plan, ids, sessions, observer) =
        (target.clone(), plan.clone(), ids.clone(), sessions.clone(), observer.clone());
    let receivers = handle.clone();
    concurrently(handle, count, concurrency, move |index| {
        let (target, plan, ids, sessions, observer) =
            (target.clone(), plan.clone(), ids.clone(), sessions.clone(), observer.clone());
        let receivers = receivers.clone();
        async move {
            let planned = &plan.users[index];
            let keep = online && planned.online;
            if online && !keep && lock(&ids[index]).is_some() {
                // Signed up in the first pass and offline: nothing more to do.
                return Ok(());
            }
            // A device is registered once, by whichever pass provisions the user first.
            let push_device = push_devices && lock(&ids[index]).is_none();
            let spec = UserSpec { phone: planned.phone.clone(), first_name: format!("lg{index}"), push_device };
            let provisioned = target
                .provision(&spec, keep)
                .await
                .map_err(|source| SetupError { step: format!("provisioning user {index} ({})", spec.phone), source })?;
            *lock(&ids[index]) = Some(provisioned.user);
            if let Some((session, updates)) = provisioned.online {
                receivers.spawn(receive(observer, provisioned.user, updates)).detach();
                *lock(&sessions[index]) = Some(session);
            }
            Ok(())
        }
    })
    .await
}

/// Runs `work(0..count)` with at most `concurrency` at once on the runtime's threads; stops
/// starting new work after the first failure and returns it.
pub async fn concurrently<F, Fut>(handle: &Handle, count: usize, concurrency: usize, work: F) -> Result<(), SetupError>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), SetupError>> + Send + 'static,
{
    let work = Arc::new(work);
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..concurrency.clamp(1, count.max(1)))
        .map(|_| {
            let (work, next, failed) = (work.clone(), next.clone(), failed.clone());
            handle.spawn(async move {
                loop {
                    let index = next.fetch_add(1, Relaxed);
                    if index >= count || failed.load(Relaxed) {
                        return Ok(());
                    }
                    if let Err(error) = work(index).await {
                        failed.store(true, Relaxed);
                        return Err(error);
                    }
                }
            })
        })
        .collect();
    let mut first_error = None;
    for worker in workers {
        if let Err(error) = worker.await {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn write_header<T: Target>(acks: &AckWriter, world: &World<T>) -> std::io::Result<()> {
    for (index, planned) in world.plan.users.iter().enumerate() {
        acks.user(world.users[index], &planned.phone)?;
    }
    for (index, planned) in world.plan.chats.iter().enumerate() {
        let kind = match planned.pool {
            Pool::Dm | Pool::History | Pool::Media => ChatKind::Private,
            Pool::Group => ChatKind::Group,
            Pool::Channel => ChatKind::Channel,
        };
        let members: Vec<UserId> = planned.members.iter().map(|&user| world.users[user]).collect();
        acks.chat(world.chats[index], kind, &members)?;
    }
    acks.flush()
}
