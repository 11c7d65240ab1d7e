//! The command line (clap): `ferrogram-loadgen [run] OPTIONS` runs a load,
//! `ferrogram-loadgen verify OPTIONS` checks an acks file, `ferrogram-loadgen push-sink
//! OPTIONS` receives pushes. Options are checked here and turned into [`RunOptions`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ferrogram_net::limits::{is_full_part_size, UPLOAD_PARTS_MAX, UPLOAD_PART_BYTES_MAX};

use crate::limits::{
    DURATION_S_MAX, FOLLOWED_CHATS_MAX, GROUP_SIZE_MAX, IN_FLIGHT_DEFAULT, IN_FLIGHT_MAX, MEDIA_FILE_BYTES_DEFAULT,
    MEDIA_FILE_BYTES_MAX, MEDIA_POOL_FILES_DEFAULT, MEDIA_POOL_FILES_MAX, MEDIA_WINDOW_DEFAULT, MEDIA_WINDOW_MAX,
    MESSAGE_BYTES_MAX, PREFILL_MAX, PROVISION_CONCURRENCY_DEFAULT, PROVISION_CONCURRENCY_MAX, RATE_PER_SECOND_MAX,
    USERS_MAX, VERIFY_THREADS_DEFAULT, VERIFY_THREADS_MAX,
};
use crate::options::{MediaOptions, Mix, RunOptions, Scenario};

#[derive(Debug, clap::Parser)]
#[command(
    name = "ferrogram-loadgen",
    version,
    about = "Open-loop load generator for ferrogram: fixed arrival rates, latency from the intended send time",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Runs a load (also what happens without a subcommand).
    Run(Box<RunArgs>),
    /// Checks that every message of an acks file is in history and in every member's updates,
    /// exactly once, in order. Exit code 0: all there; 1: missing, duplicate or out of order;
    /// 3: nothing wrong found, but the server no longer holds some updates to check.
    Verify(VerifyArgs),
    /// Receives pushes as a local relay would: answers `200 {}` to every HTTP/1.1 POST
    /// (keep-alive), prints requests/s once a second and the totals at the end. Start
    /// `ferrogram serve --push-webhook http://ADDR/push` against it.
    PushSink(PushSinkArgs),
}

/// Which system to drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetKind {
    /// A running `ferrogram serve` (start it with `--config loadgen/bench-server.toml`).
    Ferrogram,
    /// A running redis-server, 7 or later (streams, Pub/Sub, one function call per send; see
    /// `benches/compare.sh` for how to start it). `--code` is not used. No media scenario.
    Redis,
}

#[derive(Clone, Debug, clap::Args)]
pub struct RunArgs {
    /// The system under load.
    #[arg(long, value_enum, default_value = "ferrogram")]
    pub target: TargetKind,
    /// Its address.
    #[arg(long, default_value = "127.0.0.1:7450")]
    pub server: SocketAddr,
    /// Redis only: connections carrying sends and history reads, shared by the online users
    /// [default: one per online user, as ferrogram gets]; each online user also holds its
    /// own Pub/Sub connection.
    #[arg(long)]
    pub redis_command_connections: Option<usize>,
    /// The login code the server's `fixed:CODE` code sender accepts.
    #[arg(long, default_value = "12345")]
    pub code: String,
    #[arg(long, value_enum, default_value = "dm")]
    pub scenario: Scenario,
    /// Users to provision (the channel scenario uses posters + subscribers instead).
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    /// Share of the users online, each with its own authorized connection.
    #[arg(long, default_value_t = 1.0)]
    pub online: f64,
    /// Online users (= connections: the protocol carries one login per connection); overrides
    /// --online.
    #[arg(long)]
    pub connections: Option<usize>,
    /// Chats per pool [default: dm and media users/2, group users/group-size, channel 1,
    /// history 10].
    #[arg(long)]
    pub chats: Option<usize>,
    #[arg(long, default_value_t = 50)]
    pub group_size: usize,
    /// Online users following each channel (each its own user and connection).
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: usize,
    /// Admins posting to each channel.
    #[arg(long, default_value_t = 1)]
    pub posters: usize,
    /// Messages per history page (at most 100).
    #[arg(long, default_value_t = 50)]
    pub page: u32,
    /// Messages sent into each history chat before the load.
    #[arg(long, default_value_t = 1000)]
    pub prefill: usize,
    /// Weights of the mixed scenario, e.g. dm=50,group=30,channel=0,history=20,media=0.
    #[arg(long, default_value = "dm=50,group=30,history=20")]
    pub mix: Mix,
    /// Bytes of each message text (a timestamp padded to this size).
    #[arg(long, default_value_t = 64)]
    pub message_bytes: usize,
    /// Media: bytes of each file uploaded and sent.
    #[arg(long, default_value_t = MEDIA_FILE_BYTES_DEFAULT)]
    pub media_bytes: u64,
    /// Media: bytes of every upload part but the last (a multiple of 1 KiB dividing 512 KiB).
    #[arg(long, default_value_t = UPLOAD_PART_BYTES_MAX)]
    pub part_bytes: usize,
    /// Media: share of the files drawn from a small pool of repeated files (`--media-pool`),
    /// so the server's deduplication is exercised; the rest are new content.
    #[arg(long, default_value_t = 0.25)]
    pub media_dup_fraction: f64,
    /// Media: files in the pool of repeated files.
    #[arg(long, default_value_t = MEDIA_POOL_FILES_DEFAULT)]
    pub media_pool: usize,
    /// Media: share of the media messages the online recipient downloads (whole, every byte
    /// checked).
    #[arg(long, default_value_t = 1.0)]
    pub media_download_fraction: f64,
    /// Media: upload parts each upload keeps in flight.
    #[arg(long, default_value_t = MEDIA_WINDOW_DEFAULT)]
    pub media_parts_in_flight: usize,
    /// Media: 1 MiB ranges each download keeps in flight.
    #[arg(long, default_value_t = MEDIA_WINDOW_DEFAULT)]
    pub media_ranges_in_flight: usize,
    /// Operations per second, offered whatever the latency.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    /// Seconds of load before measuring (not in the figures).
    #[arg(long, default_value_t = 2.0)]
    pub warmup_s: f64,
    /// Seconds after the load for answers and deliveries; then everything still missing is
    /// counted as missing and the run ends.
    #[arg(long, default_value_t = 10.0)]
    pub drain_s: f64,
    /// Operations in flight at most, over all connections.
    #[arg(long, default_value_t = IN_FLIGHT_DEFAULT)]
    pub in_flight_max: usize,
    /// Users provisioned (and chats created) at once.
    #[arg(long, default_value_t = PROVISION_CONCURRENCY_DEFAULT)]
    pub provision_concurrency: usize,
    /// Executor threads [default: one per CPU loadgen may use].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Pin loadgen's threads to these CPUs, e.g. `1` or `2,3` [default: not pinned].
    #[arg(long, value_delimiter = ',')]
    pub cpus: Option<Vec<usize>>,
    /// Seed of the plan (which users, chats and senders).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Phones are this prefix and a 7-digit number.
    #[arg(long, default_value = "+1999")]
    pub phone_prefix: String,
    /// The first user's number (use another range to get fresh users on the same server).
    #[arg(long, default_value_t = 0)]
    pub phone_start: u64,
    /// The server's process id: its resident memory is sampled around provisioning and the
    /// cost per connection reported.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Writes the report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Writes a latency-percentile plot.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Writes every acknowledged (chat, message id, random_id) for `verify`.
    #[arg(long)]
    pub record_acks: Option<PathBuf>,
    /// Every provisioned user, online or not, registers one `webhook` push device (token
    /// `loadgen-<user id>`) before the load, so messages to offline users cause pushes when the
    /// server runs with push on (`--push-webhook`). Ferrogram only.
    #[arg(long)]
    pub push_devices: bool,
}

#[derive(Clone, Debug, clap::Args)]
pub struct PushSinkArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:7460")]
    pub listen: SocketAddr,
    /// Stop after this many seconds [default: at SIGTERM or SIGINT].
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Writes the totals and the per-second rates as JSON at the end.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Executor threads [default: one per CPU the sink may use].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Pin the sink's threads to these CPUs, e.g. `1` [default: not pinned].
    #[arg(long, value_delimiter = ',')]
    pub cpus: Option<Vec<usize>>,
}

impl PushSinkArgs {
    pub fn check(&self) -> Result<(), String> {
        if let Some(seconds) = self.seconds {
            if !(seconds.is_finite() && seconds > 0.0 && seconds <= DURATION_S_MAX) {
                return Err(format!("--seconds must be above 0 and at most {DURATION_S_MAX}"));
            }
        }
        if self.threads == Some(0) {
            return Err("--threads must be at least 1".into());
        }
        Ok(())
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct VerifyArgs {
    /// The file `--record-acks` wrote.
    #[arg(long)]
    pub acks: PathBuf,
    #[arg(long, default_value = "127.0.0.1:7450")]
    pub server: SocketAddr,
    #[arg(long, default_value = "12345")]
    pub code: String,
    /// Users read at once.
    #[arg(long, default_value_t = VERIFY_THREADS_DEFAULT)]
    pub threads: usize,
}

impl VerifyArgs {
    pub fn check(&self) -> Result<(), String> {
        if !(1..=VERIFY_THREADS_MAX).contains(&self.threads) {
            return Err(format!("--threads must be 1 to {VERIFY_THREADS_MAX}"));
        }
        Ok(())
    }
}

impl RunArgs {
    /// The checked options of a run.
    pub fn resolve(&self) -> Result<RunOptions, String> {
        let seconds = |name: &str, value: f64, min: f64| -> Result<Duration, String> {
            if !(value.is_finite() && value >= min && value <= DURATION_S_MAX) {
                return Err(format!("--{name} must be between {min} and {DURATION_S_MAX} seconds"));
            }
            Ok(Duration::from_secs_f64(value))
        };
        let duration = seconds("duration-s", self.duration_s, 0.1)?;
        let warmup = seconds("warmup-s", self.warmup_s, 0.0)?;
        let drain = seconds("drain-s", self.drain_s, 0.0)?;
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= RATE_PER_SECOND_MAX) {
            return Err(format!("--rate must be above 0 and at most {RATE_PER_SECOND_MAX}"));
        }
        if !(1..=MESSAGE_BYTES_MAX).contains(&self.message_bytes) {
            return Err(format!("--message-bytes must be 1 to {MESSAGE_BYTES_MAX}"));
        }
        if !(1..=ferrogram_net::limits::HISTORY_PAGE_MAX).contains(&self.page) {
            return Err(format!("--page must be 1 to {}", ferrogram_net::limits::HISTORY_PAGE_MAX));
        }
        if !(2..=GROUP_SIZE_MAX).contains(&self.group_size) {
            return Err(format!("--group-size must be 2 to {GROUP_SIZE_MAX}"));
        }
        if self.posters == 0 {
            return Err("--posters must be at least 1".into());
        }
        if self.prefill > PREFILL_MAX {
            return Err(format!("--prefill must be at most {PREFILL_MAX}"));
        }
        if !(1..=IN_FLIGHT_MAX).contains(&self.in_flight_max) {
            return Err(format!("--in-flight-max must be 1 to {IN_FLIGHT_MAX}"));
        }
        if !(1..=PROVISION_CONCURRENCY_MAX).contains(&self.provision_concurrency) {
            return Err(format!("--provision-concurrency must be 1 to {PROVISION_CONCURRENCY_MAX}"));
        }
        if !(0.0..=1.0).contains(&self.online) {
            return Err("--online must be between 0 and 1".into());
        }
        if self.threads == Some(0) {
            return Err("--threads must be at least 1".into());
        }
        if self.push_devices && self.target != TargetKind::Ferrogram {
            return Err("--push-devices needs --target ferrogram (push devices are ferrogram's)".into());
        }
        let media = self.media_options()?;

        let channel_only = self.scenario == Scenario::Channel;
        let users = if channel_only { self.posters + self.subscribers } else { self.users };
        if users == 0 || users > USERS_MAX {
            return Err(format!("there must be 1 to {USERS_MAX} users"));
        }
        let online_users = if channel_only {
            users
        } else {
            match self.connections {
                Some(connections) if connections > users => {
                    return Err(format!("--connections {connections} is more than the {users} users"));
                }
                Some(connections) => connections,
                None => (users as f64 * self.online).round() as usize,
            }
        };
        let mix = Mix::for_scenario(self.scenario, self.mix);
        if mix.media > 0 && self.target != TargetKind::Ferrogram {
            return Err(
                "the media scenario needs --target ferrogram: the Redis adapter has no files or media messages".into(),
            );
        }
        let pool_chats = |weight: u32, default: usize| if weight == 0 { 0 } else { self.chats.unwrap_or(default) };
        let channels = pool_chats(mix.channel, 1);
        if channels > FOLLOWED_CHATS_MAX {
            return Err(format!("each subscriber can follow at most {FOLLOWED_CHATS_MAX} channels"));
        }
        let subscribers = if channel_only { self.subscribers } else { self.subscribers.min(online_users) };
        let options = RunOptions {
            scenario: self.scenario,
            mix,
            users,
            online_users,
            dm_chats: pool_chats(mix.dm, (users / 2).max(1)),
            group_chats: pool_chats(mix.group, (users / self.group_size).max(1)),
            group_size: self.group_size,
            channels,
            posters: self.posters,
            subscribers,
            history_chats: pool_chats(mix.history, 10),
            prefill: if mix.history == 0 { 0 } else { self.prefill },
            page: self.page,
            message_bytes: self.message_bytes,
            media_chats: pool_chats(mix.media, (users / 2).max(1)),
            media,
            rate_per_second: self.rate,
            warmup,
            duration,
            drain,
            in_flight_max: self.in_flight_max,
            provision_concurrency: self.provision_concurrency,
            seed: self.seed,
            phone_prefix: self.phone_prefix.clone(),
            phone_start: self.phone_start,
            server_pid: self.server_pid,
            record_acks: self.record_acks.clone(),
            push_devices: self.push_devices,
        };
        check_phones(&options)?;
        Ok(options)
    }
}

impl RunArgs {
    /// The checked media options.
    fn media_options(&self) -> Result<MediaOptions, String> {
        if !(1..=MEDIA_FILE_BYTES_MAX).contains(&self.media_bytes) {
            return Err(format!("--media-bytes must be 1 to {MEDIA_FILE_BYTES_MAX}"));
        }
        if !is_full_part_size(self.part_bytes) {
            return Err(format!(
                "--part-bytes must be a multiple of 1024 that divides {UPLOAD_PART_BYTES_MAX} (1024, 2048, ..., 524288)"
            ));
        }
        if self.media_bytes.div_ceil(self.part_bytes as u64) > u64::from(UPLOAD_PARTS_MAX) {
            return Err(format!(
                "a file has at most {UPLOAD_PARTS_MAX} parts: raise --part-bytes or lower --media-bytes"
            ));
        }
        for (name, share) in [
            ("--media-dup-fraction", self.media_dup_fraction),
            ("--media-download-fraction", self.media_download_fraction),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return Err(format!("{name} must be between 0 and 1"));
            }
        }
        if self.media_pool > MEDIA_POOL_FILES_MAX || (self.media_pool == 0 && self.media_dup_fraction > 0.0) {
            return Err(format!(
                "--media-pool must be 1 to {MEDIA_POOL_FILES_MAX} (0 only with --media-dup-fraction 0)"
            ));
        }
        for (name, window) in [
            ("--media-parts-in-flight", self.media_parts_in_flight),
            ("--media-ranges-in-flight", self.media_ranges_in_flight),
        ] {
            if !(1..=MEDIA_WINDOW_MAX).contains(&window) {
                return Err(format!("{name} must be 1 to {MEDIA_WINDOW_MAX}"));
            }
        }
        Ok(MediaOptions {
            file_bytes: self.media_bytes,
            part_bytes: self.part_bytes,
            duplicate_fraction: self.media_dup_fraction,
            pool_files: self.media_pool,
            download_fraction: self.media_download_fraction,
            parts_in_flight: self.media_parts_in_flight,
            ranges_in_flight: self.media_ranges_in_flight,
        })
    }
}

/// Every phone must be E.164 (`+` and 8 to 15 digits, the first not 0), as the server checks.
fn check_phones(options: &RunOptions) -> Result<(), String> {
    for phone in [options.phone(0), options.phone(options.users - 1)] {
        let digits = phone.strip_prefix('+').unwrap_or("");
        let valid = (8..=15).contains(&digits.len())
            && digits.bytes().all(|byte| byte.is_ascii_digit())
            && !digits.starts_with('0');
        if !valid {
            return Err(format!(
                "phone {phone} (from --phone-prefix {} and --phone-start {}) is not + and 8 to 15 digits",
                options.phone_prefix, options.phone_start
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(arguments: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("ferrogram-loadgen").chain(arguments.iter().copied())).expect("parses")
    }

    // Without a subcommand the options describe a run; defaults give a dm run of 1,000 online
    // users in 500 chats. The channel scenario's users follow its posters and subscribers.
    #[test]
    fn the_command_line_resolves_to_checked_options() {
        let cli = parse(&["--rate", "500", "--duration-s", "3"]);
        assert!(cli.command.is_none());
        let options = cli.run.resolve().expect("valid");
        assert_eq!((options.users, options.online_users, options.dm_chats), (1000, 1000, 500));
        assert_eq!((options.group_chats, options.history_chats, options.prefill), (0, 0, 0));
        assert_eq!(options.duration, Duration::from_secs(3));

        let channel = parse(&["run", "--scenario", "channel", "--subscribers", "300", "--posters", "2"]);
        let Some(Command::Run(args)) = channel.command else { panic!("a run") };
        let options = args.resolve().expect("valid");
        assert_eq!((options.users, options.online_users, options.channels, options.subscribers), (302, 302, 1, 300));

        let mixed = parse(&["--scenario", "mixed", "--users", "100", "--connections", "40", "--chats", "5"]);
        let options = mixed.run.resolve().expect("valid");
        assert_eq!((options.online_users, options.dm_chats, options.group_chats, options.history_chats), (40, 5, 5, 5));
        assert_eq!(options.channels, 0, "the default mix has no channel");

        let verify = parse(&["verify", "--acks", "a.txt", "--code", "54321"]);
        let Some(Command::Verify(args)) = verify.command else { panic!("a verify") };
        assert_eq!((args.code.as_str(), args.threads), ("54321", VERIFY_THREADS_DEFAULT));
    }

    // `--push-devices` is off unless given, works with the run subcommand and without, and is
    // refused against Redis, which has no push devices.
    #[test]
    fn push_devices_parse_and_need_ferrogram() {
        assert!(!parse(&[]).run.resolve().expect("valid").push_devices);
        let options = parse(&["--push-devices", "--online", "0.5"]).run.resolve().expect("valid");
        assert!(options.push_devices);
        assert_eq!((options.users, options.online_users), (1000, 500));
        let Some(Command::Run(args)) = parse(&["run", "--push-devices"]).command else { panic!("a run") };
        assert!(args.resolve().expect("valid").push_devices);
        let refused = parse(&["--target", "redis", "--push-devices"]).run.resolve().expect_err("refused");
        assert!(refused.contains("--push-devices"), "{refused}");
    }

    // The push sink's options: defaults, a bounded duration, pinning.
    #[test]
    fn push_sink_options_parse_and_are_checked() {
        let Some(Command::PushSink(args)) = parse(&["push-sink"]).command else { panic!("a push-sink") };
        assert_eq!(
            (args.listen, args.seconds, args.threads),
            ("127.0.0.1:7460".parse().expect("an address"), None, None)
        );
        assert!(args.check().is_ok());
        let arguments = ["push-sink", "--listen", "127.0.0.1:0", "--seconds", "30", "--cpus", "1", "--json", "s.json"];
        let Some(Command::PushSink(args)) = parse(&arguments).command else { panic!("a push-sink") };
        assert_eq!((args.seconds, args.cpus.clone()), (Some(30.0), Some(vec![1])));
        assert!(args.check().is_ok());
        let Some(Command::PushSink(args)) = parse(&["push-sink", "--seconds", "0"]).command else { panic!("parsed") };
        assert!(args.check().expect_err("refused").contains("--seconds"));
    }

    // The media scenario plans private chats like dm and takes its file options; Redis is
    // refused with the reason, in the media scenario and in a mix that includes media.
    #[test]
    fn media_options_parse_and_need_ferrogram() {
        let arguments = ["--scenario", "media", "--users", "20", "--media-bytes", "1048577", "--part-bytes", "65536"];
        let options = parse(&arguments).run.resolve().expect("valid");
        assert_eq!((options.media_chats, options.dm_chats), (10, 0));
        assert_eq!((options.media.file_bytes, options.media.part_bytes), (1_048_577, 65_536));
        assert_eq!(options.media.duplicate_fraction, 0.25);
        assert_eq!(options.media.download_fraction, 1.0);
        let options = parse(&["--scenario", "mixed", "--mix", "dm=1,media=1", "--users", "20"]).run.resolve();
        assert_eq!(options.expect("valid").media_chats, 10);
        for arguments in [
            &["--target", "redis", "--scenario", "media"][..],
            &["--target", "redis", "--mix", "media=1", "--scenario", "mixed"],
        ] {
            let refused = parse(arguments).run.resolve().expect_err("refused");
            assert!(refused.contains("needs --target ferrogram"), "{refused}");
        }
        let refused = |arguments: &[&str]| parse(arguments).run.resolve().expect_err("refused");
        assert!(refused(&["--scenario", "media", "--part-bytes", "1000"]).contains("--part-bytes"));
        assert!(refused(&["--scenario", "media", "--media-bytes", "0"]).contains("--media-bytes"));
        assert!(refused(&["--scenario", "media", "--media-bytes", "8388608", "--part-bytes", "1024"]).contains("parts"));
        assert!(refused(&["--media-dup-fraction", "1.5"]).contains("--media-dup-fraction"));
        assert!(refused(&["--media-download-fraction=-0.1"]).contains("--media-download-fraction"));
        assert!(refused(&["--media-pool", "0"]).contains("--media-pool"));
        assert!(refused(&["--media-ranges-in-flight", "9"]).contains("--media-ranges-in-flight"));
        assert!(parse(&["--media-pool", "0", "--media-dup-fraction", "0"]).run.resolve().is_ok());
    }

    #[test]
    fn bad_options_are_refused_with_the_reason() {
        let refused = |arguments: &[&str]| parse(arguments).run.resolve().expect_err("refused");
        assert!(refused(&["--rate", "0"]).contains("--rate"));
        assert!(refused(&["--connections", "2000"]).contains("--connections"));
        assert!(refused(&["--page", "101"]).contains("--page"));
        assert!(refused(&["--phone-prefix", "+0"]).contains("phone"));
        assert!(refused(&["--message-bytes", "5000"]).contains("--message-bytes"));
        assert!(Cli::try_parse_from(["ferrogram-loadgen", "--mix", "dm=x"]).is_err());
    }
}
