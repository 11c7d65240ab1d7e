//! A run's settings once the command line is checked: what to set up, what load to offer,
//! where to write results. Plain data, so the planner and tests can build them directly.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// What the load consists of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Sends into random private chats between pairs of users.
    Dm,
    /// Sends into groups of `--group-size` members, each from a random online member.
    Group,
    /// Posts by one or a few admins to channels followed by `--subscribers` online users.
    Channel,
    /// Pages of `--page` messages from chats pre-filled with `--prefill` messages.
    History,
    /// Files of `--media-bytes` uploaded and sent as media messages into private chats; the
    /// online recipient downloads each one (or `--media-download-fraction` of them) and checks
    /// every byte. Ferrogram only.
    Media,
    /// A weighted mix of the above (`--mix`).
    Mixed,
}

/// The kinds of operation, each drawn from its own pool of chats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    Dm,
    Group,
    Channel,
    History,
    /// Private chats that carry media messages.
    Media,
}

impl Pool {
    pub const ALL: [Pool; 5] = [Pool::Dm, Pool::Group, Pool::Channel, Pool::History, Pool::Media];

    pub fn name(self) -> &'static str {
        match self {
            Pool::Dm => "dm",
            Pool::Group => "group",
            Pool::Channel => "channel",
            Pool::History => "history",
            Pool::Media => "media",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Relative weights of the pools in a mixed run, e.g. `dm=50,group=30,history=20`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Mix {
    pub dm: u32,
    pub group: u32,
    pub channel: u32,
    pub history: u32,
    pub media: u32,
}

impl Mix {
    /// The weights of one scenario: all on its pool, or the given mix.
    pub fn for_scenario(scenario: Scenario, mixed: Mix) -> Mix {
        let only = |pool| Mix {
            dm: u32::from(pool == Pool::Dm),
            group: u32::from(pool == Pool::Group),
            channel: u32::from(pool == Pool::Channel),
            history: u32::from(pool == Pool::History),
            media: u32::from(pool == Pool::Media),
        };
        match scenario {
            Scenario::Dm => only(Pool::Dm),
            Scenario::Group => only(Pool::Group),
            Scenario::Channel => only(Pool::Channel),
            Scenario::History => only(Pool::History),
            Scenario::Media => only(Pool::Media),
            Scenario::Mixed => mixed,
        }
    }

    pub fn weight(&self, pool: Pool) -> u32 {
        match pool {
            Pool::Dm => self.dm,
            Pool::Group => self.group,
            Pool::Channel => self.channel,
            Pool::History => self.history,
            Pool::Media => self.media,
        }
    }

    pub fn total(&self) -> u32 {
        Pool::ALL.iter().map(|&pool| self.weight(pool)).sum()
    }
}

impl Default for Mix {
    fn default() -> Mix {
        Mix { dm: 50, group: 30, channel: 0, history: 20, media: 0 }
    }
}

impl FromStr for Mix {
    type Err = String;

    fn from_str(text: &str) -> Result<Mix, String> {
        let mut mix = Mix { dm: 0, group: 0, channel: 0, history: 0, media: 0 };
        for part in text.split(',').filter(|part| !part.trim().is_empty()) {
            let (name, weight) = part.split_once('=').ok_or_else(|| format!("expected name=weight, got {part:?}"))?;
            let weight: u32 = weight.trim().parse().map_err(|_| format!("bad weight in {part:?}"))?;
            match name.trim() {
                "dm" => mix.dm = weight,
                "group" => mix.group = weight,
                "channel" => mix.channel = weight,
                "history" => mix.history = weight,
                "media" => mix.media = weight,
                other => return Err(format!("unknown kind {other:?}: expected dm, group, channel, history or media")),
            }
        }
        if mix.total() == 0 {
            return Err("the mix needs at least one positive weight".into());
        }
        Ok(mix)
    }
}

/// Everything one run needs, checked.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RunOptions {
    pub scenario: Scenario,
    pub mix: Mix,
    /// Users to provision, and how many of them are online (one connection each).
    pub users: usize,
    pub online_users: usize,
    /// Chats per pool in use (zero for pools the scenario does not use).
    pub dm_chats: usize,
    pub group_chats: usize,
    pub group_size: usize,
    pub channels: usize,
    pub posters: usize,
    pub subscribers: usize,
    pub history_chats: usize,
    pub prefill: usize,
    pub page: u32,
    pub message_bytes: usize,
    /// Private chats carrying media messages, and what each media operation moves.
    pub media_chats: usize,
    pub media: MediaOptions,
    pub rate_per_second: f64,
    #[serde(serialize_with = "seconds")]
    pub warmup: Duration,
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
    #[serde(serialize_with = "seconds")]
    pub drain: Duration,
    pub in_flight_max: usize,
    pub provision_concurrency: usize,
    pub seed: u64,
    /// Phones are `phone_prefix` followed by the zero-padded index from `phone_start`.
    pub phone_prefix: String,
    pub phone_start: u64,
    /// When set, the server's resident memory is sampled around provisioning (its pid).
    pub server_pid: Option<u32>,
    pub record_acks: Option<PathBuf>,
    /// Every user registers one `webhook` push device while provisioned.
    pub push_devices: bool,
}

impl RunOptions {
    /// A small dm run, the base for tests and for building options by hand.
    pub fn small(scenario: Scenario) -> RunOptions {
        RunOptions {
            scenario,
            mix: Mix::for_scenario(scenario, Mix::default()),
            users: 10,
            online_users: 10,
            dm_chats: 0,
            group_chats: 0,
            group_size: 5,
            channels: 0,
            posters: 1,
            subscribers: 0,
            history_chats: 0,
            prefill: 0,
            page: 20,
            message_bytes: 64,
            media_chats: 0,
            media: MediaOptions::default(),
            rate_per_second: 100.0,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            drain: Duration::from_secs(5),
            in_flight_max: crate::limits::IN_FLIGHT_DEFAULT,
            provision_concurrency: 16,
            seed: 1,
            phone_prefix: "+1999".into(),
            phone_start: 0,
            server_pid: None,
            record_acks: None,
            push_devices: false,
        }
    }

    /// The phone of user `index`.
    pub fn phone(&self, index: usize) -> String {
        format!("{}{:07}", self.phone_prefix, self.phone_start + index as u64)
    }

    /// Operations of the whole schedule (warm-up included).
    pub fn operations(&self) -> u64 {
        ((self.warmup + self.duration).as_secs_f64() * self.rate_per_second).floor() as u64
    }
}

/// What each operation of the media scenario moves.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct MediaOptions {
    /// Bytes of each file.
    pub file_bytes: u64,
    /// Bytes of every upload part but the last: a multiple of 1 KiB dividing 512 KiB.
    pub part_bytes: usize,
    /// Share of the operations that upload a file of the duplicate pool (content the server
    /// already holds after the pool file's first upload) instead of a new one.
    pub duplicate_fraction: f64,
    /// Files in the duplicate pool.
    pub pool_files: usize,
    /// Share of the media messages the online recipient downloads.
    pub download_fraction: f64,
    /// Parts (upload) and 1 MiB ranges (download) one transfer keeps in flight.
    pub parts_in_flight: usize,
    pub ranges_in_flight: usize,
}

impl Default for MediaOptions {
    fn default() -> MediaOptions {
        MediaOptions {
            file_bytes: crate::limits::MEDIA_FILE_BYTES_DEFAULT,
            part_bytes: ferrogram_net::limits::UPLOAD_PART_BYTES_MAX,
            duplicate_fraction: 0.25,
            pool_files: crate::limits::MEDIA_POOL_FILES_DEFAULT,
            download_fraction: 1.0,
            parts_in_flight: crate::limits::MEDIA_WINDOW_DEFAULT,
            ranges_in_flight: crate::limits::MEDIA_WINDOW_DEFAULT,
        }
    }
}

fn seconds<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_scenarios_pick_their_pool() {
        let mix: Mix = "dm=2, history=1".parse().expect("a valid mix");
        assert_eq!(mix, Mix { dm: 2, group: 0, channel: 0, history: 1, media: 0 });
        let media: Mix = "media=3,dm=1".parse().expect("a valid mix");
        assert_eq!((media.media, media.dm, media.total()), (3, 1, 4));
        assert_eq!(Mix::for_scenario(Scenario::Media, mix).weight(Pool::Media), 1);
        assert!("dm=0".parse::<Mix>().is_err());
        assert!("dms=1".parse::<Mix>().is_err());
        assert!("dm".parse::<Mix>().is_err());
        let only_group = Mix::for_scenario(Scenario::Group, mix);
        assert_eq!((only_group.weight(Pool::Group), only_group.total()), (1, 1));
        assert_eq!(Mix::for_scenario(Scenario::Mixed, mix), mix);
    }

    #[test]
    fn phones_are_e164_and_distinct() {
        let options = RunOptions { phone_start: 42, ..RunOptions::small(Scenario::Dm) };
        assert_eq!(options.phone(0), "+19990000042");
        assert_ne!(options.phone(1), options.phone(2));
    }
}
