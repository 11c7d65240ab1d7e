//! The plan of a run, drawn from the seed before anything touches the network: which users
//! exist and are online, which chats exist with which members, who may send where, and who
//! should see each message live. Setup carries the plan out; the scheduler draws operations
//! from it.

use std::collections::HashSet;

use crate::options::{Pool, RunOptions};

/// What to set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Users by index; the first `online_users` are online.
    pub users: Vec<PlannedUser>,
    pub online_users: usize,
    pub chats: Vec<PlannedChat>,
    /// Chat indexes of each pool, by `Pool::index`.
    pub pools: [Vec<usize>; Pool::ALL.len()],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedUser {
    pub phone: String,
    pub online: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedChat {
    pub pool: Pool,
    /// Creates the chat (online); for history chats also the one who pre-fills and reads it.
    pub creator: usize,
    /// Every member, creator first (a channel's followers included).
    pub members: Vec<usize>,
    /// Online members that send (or, in history chats, read) during the load.
    pub senders: Vec<usize>,
    /// Online users that receive its messages live: online members, or a channel's
    /// followers.
    pub receivers: Vec<usize>,
    /// A channel's followers, who join and subscribe during setup.
    pub followers: Vec<usize>,
    /// Channel admins besides the creator.
    pub admins: Vec<usize>,
    /// Whether every sender is also among the receivers (then a message reaches one
    /// receiver fewer: the sender's own delivery is not counted).
    pub senders_receive: bool,
}

impl PlannedChat {
    /// Online users, other than the sender, that should see a message live.
    pub fn recipients(&self) -> u32 {
        (self.receivers.len() - usize::from(self.senders_receive)) as u32
    }
}

impl Plan {
    /// Members of `chat` who are offline (senders never are): with `--push-devices` and push
    /// on, each of them is due a push job for every message sent there.
    pub fn offline_members(&self, chat: usize) -> u32 {
        self.chats[chat].members.iter().filter(|&&member| !self.users[member].online).count() as u32
    }
}

/// Why a plan cannot be made from the options.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    #[error("{pool} chats need at least {needed} online users, there are {online}")]
    TooFewOnline { pool: &'static str, needed: usize, online: usize },
    #[error("{pool} chats need at least {needed} users, there are {users}")]
    TooFewUsers { pool: &'static str, needed: usize, users: usize },
    #[error("{chats} private chats need {chats} distinct pairs of users with one online, only {pairs} exist")]
    TooFewPairs { chats: usize, pairs: u128 },
}

impl Plan {
    pub fn new(options: &RunOptions) -> Result<Plan, PlanError> {
        let mut rng = fastrand::Rng::with_seed(options.seed);
        let users: Vec<PlannedUser> = (0..options.users)
            .map(|index| PlannedUser { phone: options.phone(index), online: index < options.online_users })
            .collect();
        let mut plan = Plan { users, online_users: options.online_users, chats: Vec::new(), pools: Default::default() };
        let online = options.online_users;
        let users = options.users;
        let mix = options.mix;

        if mix.weight(Pool::Dm) > 0 {
            plan.private_chats(Pool::Dm, options.dm_chats, &mut rng)?;
        }
        if mix.weight(Pool::History) > 0 {
            plan.private_chats(Pool::History, options.history_chats, &mut rng)?;
        }
        if mix.weight(Pool::Media) > 0 {
            plan.private_chats(Pool::Media, options.media_chats, &mut rng)?;
        }
        if mix.weight(Pool::Group) > 0 {
            if online == 0 {
                return Err(PlanError::TooFewOnline { pool: "group", needed: 1, online });
            }
            if users < options.group_size {
                return Err(PlanError::TooFewUsers { pool: "group", needed: options.group_size, users });
            }
            for _ in 0..options.group_chats {
                let creator = rng.usize(0..online);
                let mut members = vec![creator];
                let mut taken: HashSet<usize> = HashSet::from([creator]);
                while members.len() < options.group_size {
                    let member = rng.usize(0..users);
                    if taken.insert(member) {
                        members.push(member);
                    }
                }
                let senders: Vec<usize> = members.iter().copied().filter(|&m| m < online).collect();
                plan.push(PlannedChat {
                    pool: Pool::Group,
                    creator,
                    receivers: senders.clone(),
                    senders,
                    members,
                    followers: Vec::new(),
                    admins: Vec::new(),
                    senders_receive: true,
                });
            }
        }
        if mix.weight(Pool::Channel) > 0 {
            // Posters are the first online users, followers the online users after them.
            let needed = options.posters + 1;
            if online < needed {
                return Err(PlanError::TooFewOnline { pool: "channel", needed, online });
            }
            let followers: Vec<usize> = (options.posters..online).take(options.subscribers).collect();
            for channel in 0..options.channels {
                let creator = channel % options.posters;
                let admins: Vec<usize> = (0..options.posters).filter(|&poster| poster != creator).collect();
                let mut members = vec![creator];
                members.extend(&admins);
                members.extend(&followers);
                plan.push(PlannedChat {
                    pool: Pool::Channel,
                    creator,
                    members,
                    senders: (0..options.posters).collect(),
                    receivers: followers.clone(),
                    followers: followers.clone(),
                    admins,
                    senders_receive: false,
                });
            }
        }
        Ok(plan)
    }

    /// Private chats between distinct pairs, the first member online.
    fn private_chats(&mut self, pool: Pool, count: usize, rng: &mut fastrand::Rng) -> Result<(), PlanError> {
        let (online, users) = (self.online_users, self.users.len());
        if count == 0 {
            return Ok(());
        }
        if online == 0 || users < 2 {
            return Err(PlanError::TooFewOnline { pool: pool.name(), needed: 1, online });
        }
        // Pairs with at least one online member: online*(online-1)/2 + online*(users-online).
        let (o, u) = (online as u128, users as u128);
        let pairs = o * (o - 1) / 2 + o * (u - o);
        let mut taken: HashSet<(usize, usize)> =
            self.chats.iter().filter(|chat| chat.members.len() == 2 && chat.pool != Pool::Group).map(pair_of).collect();
        // The pools' private chats share the pairs (the server has one private chat per pair),
        // so the pairs taken by an earlier pool are not free for this one.
        if (count + taken.len()) as u128 > pairs {
            return Err(PlanError::TooFewPairs { chats: count + taken.len(), pairs });
        }
        let mut made = 0;
        while made < count {
            let first = rng.usize(0..online);
            let second = rng.usize(0..users);
            if first == second || !taken.insert((first.min(second), first.max(second))) {
                continue;
            }
            let members = vec![first, second];
            let senders: Vec<usize> = members.iter().copied().filter(|&m| m < online).collect();
            self.push(PlannedChat {
                pool,
                creator: first,
                receivers: senders.clone(),
                // A history chat is read by its creator, who pre-fills it.
                senders: if pool == Pool::History { vec![first] } else { senders },
                members,
                followers: Vec::new(),
                admins: Vec::new(),
                senders_receive: true,
            });
            made += 1;
        }
        Ok(())
    }

    fn push(&mut self, chat: PlannedChat) {
        self.pools[chat.pool.index()].push(self.chats.len());
        self.chats.push(chat);
    }
}

fn pair_of(chat: &PlannedChat) -> (usize, usize) {
    let (a, b) = (chat.members[0], chat.members[1]);
    (a.min(b), a.max(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::{Mix, Scenario};

    // Every private chat is a distinct pair with an online first member; groups have the
    // asked size with distinct members; a channel's followers are online and not posters.
    #[test]
    fn plans_respect_the_options() {
        let options = RunOptions {
            mix: Mix { dm: 1, group: 1, channel: 1, history: 1, media: 1 },
            users: 40,
            online_users: 30,
            dm_chats: 50,
            group_chats: 3,
            group_size: 10,
            channels: 2,
            posters: 2,
            subscribers: 20,
            history_chats: 4,
            media_chats: 6,
            ..RunOptions::small(Scenario::Mixed)
        };
        let plan = Plan::new(&options).expect("a plan");
        assert_eq!(plan.users.iter().filter(|user| user.online).count(), 30);
        let pairs: HashSet<(usize, usize)> =
            plan.pools[Pool::Dm.index()].iter().map(|&chat| pair_of(&plan.chats[chat])).collect();
        assert_eq!(pairs.len(), 50, "distinct pairs");
        let media: Vec<&PlannedChat> = plan.pools[Pool::Media.index()].iter().map(|&chat| &plan.chats[chat]).collect();
        assert_eq!(media.len(), 6);
        for chat in &media {
            assert!(!pairs.contains(&pair_of(chat)), "a media chat is not also a dm chat");
            assert_eq!(chat.recipients() as usize, chat.receivers.len() - 1);
        }
        for chat in &plan.chats {
            assert!(chat.creator < 30, "the creator is online");
            let distinct: HashSet<usize> = chat.members.iter().copied().collect();
            assert_eq!(distinct.len(), chat.members.len(), "no member twice");
            assert!(chat.senders.iter().all(|&sender| sender < 30));
        }
        let group = &plan.chats[plan.pools[Pool::Group.index()][0]];
        assert_eq!(group.members.len(), 10);
        assert_eq!(group.recipients() as usize, group.receivers.len() - 1);
        let channel = &plan.chats[plan.pools[Pool::Channel.index()][1]];
        assert_eq!((channel.creator, channel.admins.clone()), (1, vec![0]));
        assert_eq!(channel.followers, (2..22).collect::<Vec<_>>());
        assert_eq!(channel.recipients(), 20);
        assert_eq!(plan.pools[Pool::History.index()].len(), 4);
        assert_eq!(Plan::new(&options), Ok(plan), "the same seed gives the same plan");
    }

    #[test]
    fn impossible_plans_are_refused() {
        let options = RunOptions { users: 3, online_users: 1, dm_chats: 3, ..RunOptions::small(Scenario::Dm) };
        assert_eq!(Plan::new(&options), Err(PlanError::TooFewPairs { chats: 3, pairs: 2 }));
        let options = RunOptions { users: 3, group_chats: 1, group_size: 5, ..RunOptions::small(Scenario::Group) };
        assert!(matches!(Plan::new(&options), Err(PlanError::TooFewUsers { .. })));
    }
}
