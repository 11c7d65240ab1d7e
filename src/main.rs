//! The `ferrogram` binary: `serve` (the server), the command-line client (`login`, `chat`,
//! `send`, ...), `stress` (durable appends on every shard, with figures), `bench-messaging`
//! (messaging benchmarks through the embedding API), `admin check` (verify a data
//! directory's logs offline), `admin stats` (a running server's media storage figures) and
//! `admin first-touch` (what fresh memory costs on this machine).

mod admin;
mod client;
mod first_touch;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use engine::{Durability, EngineConfig, ShardId};
use ferrogram::messaging_bench::{self, BenchParams, DrainMode, RestartPhase, Scenario};
use ferrogram::stress::{self, StressParams};
use hdrhistogram::Histogram;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "ferrogram", version, about = "ferrogram: the storage and delivery engine of a cloud messenger")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: the engine on --data-dir with the gateway listening on every core.
    Serve(ferrogram::serve::ServeArgs),
    #[command(flatten)]
    Client(client::ClientCommand),
    /// Start the engine on a data directory and append records as fast as they are
    /// acknowledged (or at --rate), then print throughput and latency.
    Stress(StressArgs),
    /// In-process messaging benchmarks through the Messenger API: private-chat sends, group
    /// sends, a channel post to every online subscriber, history pages, restart time.
    BenchMessaging(BenchMessagingArgs),
    /// Operators' tools: `check` a data directory offline, `stats` of a running server,
    /// `first-touch` cost of fresh memory on this machine.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(clap::Args)]
struct StressArgs {
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Shards (one pinned executor each).
    #[arg(long, default_value_t = 1)]
    cores: usize,
    /// CPUs to pin the shards to, e.g. `0` or `0,1`; default: shard i on CPU i.
    #[arg(long, value_delimiter = ',')]
    cpus: Option<Vec<usize>>,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    #[arg(long, default_value_t = 128)]
    record_bytes: usize,
    /// Closed loop: appends in flight per shard.
    #[arg(long, default_value_t = 16_384)]
    in_flight: usize,
    /// Open loop: records per second per shard.
    #[arg(long)]
    rate: Option<u64>,
    /// sync | interval:<ms> | none
    #[arg(long, default_value = "sync")]
    durability: Durability,
    #[arg(long, default_value_t = 64)]
    segment_mib: u64,
    /// Segments prepared ahead of the one being written.
    #[arg(long, default_value_t = 1)]
    spare_segments: usize,
    /// Truncate the log at a corrupt batch instead of refusing to start.
    #[arg(long)]
    repair: bool,
    /// Print `acked <shard> <lsn>` lines as acknowledgements happen (crash tests read them).
    #[arg(long)]
    report_acks: bool,
}

#[derive(clap::Args)]
struct BenchMessagingArgs {
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Emptied first (unless `--scenario restart --restart-phase open`).
    #[arg(long, default_value = "./bench-data")]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// CPUs to pin the shards to, e.g. `0` or `0,1`; default: shard i on CPU i.
    #[arg(long, value_delimiter = ',')]
    cpus: Option<Vec<usize>>,
    /// CPU to pin the load thread to (default: not pinned).
    #[arg(long)]
    load_cpu: Option<usize>,
    /// CPU to pin the threads draining the sessions' live streams to (default: the load thread's).
    #[arg(long)]
    drain_cpu: Option<usize>,
    #[arg(long, default_value_t = 1)]
    drain_threads: usize,
    /// wake: a task per session woken by each delivery; poll: sweep every stream, no wakers.
    #[arg(long, value_enum, default_value = "wake")]
    drain_mode: DrainMode,
    /// dm, group: send through the sender's own session, as the gateway does; that session then
    /// gets no live copy of the send (its answer carries the pts): one delivery fewer per send.
    #[arg(long)]
    through_session: bool,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Open loop: requests per second (over all shards); latency from intended send times.
    #[arg(long)]
    rate: Option<u64>,
    /// Closed loop: requests outstanding (default 4096 for sends, 1 for history pages).
    #[arg(long)]
    in_flight: Option<usize>,
    /// sync | interval:<ms> | none
    #[arg(long, default_value = "sync")]
    durability: Durability,
    #[arg(long, default_value_t = 64)]
    segment_mib: u64,
    /// dm, restart: users signed up.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    /// dm, restart: private chats between distinct random pairs of users.
    #[arg(long, default_value_t = 10_000)]
    chats: usize,
    /// group: members, all online.
    #[arg(long, default_value_t = 200)]
    members: usize,
    /// channel: subscribers, all online and subscribed.
    #[arg(long, default_value_t = 50_000)]
    subscribers: usize,
    /// channel: posts by the admin.
    #[arg(long, default_value_t = 100)]
    posts: usize,
    #[arg(long, default_value_t = 100)]
    post_interval_ms: u64,
    /// history: messages in the chat.
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// history: messages per page.
    #[arg(long, default_value_t = 50)]
    page: usize,
    /// history: sends per second into another chat while pages are read.
    #[arg(long)]
    background_rate: Option<u64>,
    /// history: pages also read straight from a messaging core on one thread (0: skip).
    #[arg(long, default_value_t = 100_000)]
    core_reads: usize,
    /// restart: messages written before the restart.
    #[arg(long, default_value_t = 10_000_000)]
    restart_messages: u64,
    #[arg(long, value_enum, default_value = "both")]
    restart_phase: RestartPhase,
    /// restart: stop the writer by exiting without shutdown.
    #[arg(long)]
    unclean: bool,
    /// restart: drop the page cache before opening (needs root).
    #[arg(long)]
    drop_caches: bool,
    #[arg(long, default_value_t = 64)]
    text_bytes: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Verify every shard's log (checksums, LSN continuity, torn tail vs corruption), offline:
    /// the engine must not be running on the data directory.
    Check {
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Media storage of a running server, per shard and in total: files, logical and stored
    /// bytes, dedup ratio, chunks, segment bytes and garbage. Reads the server's Prometheus
    /// metrics (`serve --metrics ADDR`), which it samples from every shard once a second.
    Stats {
        /// The address the server serves its metrics on.
        #[arg(long, value_name = "ADDR")]
        metrics: std::net::SocketAddr,
    },
    /// How long this machine takes to hand a process fresh memory: memory left free a while
    /// against memory freed a moment before. A virtual machine whose host takes back free
    /// memory shows the first many times slower, and every restart pays it.
    FirstTouch {
        /// GiB to touch in each of the two rounds.
        #[arg(long, default_value_t = 4)]
        gib: usize,
        /// Seconds to leave memory free before the first round.
        #[arg(long, default_value_t = 20)]
        settle_secs: u64,
        /// CPU to pin the probe to.
        #[arg(long)]
        cpu: Option<usize>,
    },
}

/// Structured logs on standard error; `RUST_LOG` filters them (default: info).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Serve(args) => ferrogram::serve::serve(&args),
        Command::Client(command) => {
            if let Err(error) = client::run(command) {
                eprintln!("error: {error:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Stress(args) => stress_command(args),
        Command::BenchMessaging(args) => bench_messaging_command(args),
        Command::Admin(AdminCommand::Check { data_dir }) => check_command(&data_dir),
        Command::Admin(AdminCommand::Stats { metrics }) => admin::stats(metrics),
        Command::Admin(AdminCommand::FirstTouch { gib, settle_secs, cpu }) => {
            first_touch::run(gib, Duration::from_secs(settle_secs), cpu)
        }
    }
}

fn stress_command(args: StressArgs) -> anyhow::Result<()> {
    if args.durability == Durability::None {
        eprintln!("warning: durability none: nothing is fsynced; a crash can lose any acknowledged record");
    }
    let mut config = EngineConfig::new(&args.data_dir);
    config.shards = args.cores;
    config.cpus = args.cpus.clone();
    config.repair = args.repair;
    config.log.durability = args.durability;
    config.log.segment_bytes = args.segment_mib << 20;
    config.log.spare_segments = args.spare_segments;
    let engine = engine::Engine::open(config).context("opening the engine")?;
    for (shard, report) in engine.open_reports().iter().enumerate() {
        eprintln!(
            "shard {shard}: recovered {} records ({} bytes of log) in {:.1} ms (checkpoint restored in {:.1}, log replayed in {:.1}), next LSN {}, generation {}{}{}",
            report.scan.records,
            report.scan.bytes,
            report.recovery_time.as_secs_f64() * 1e3,
            report.restore_time.as_secs_f64() * 1e3,
            report.replay_time.as_secs_f64() * 1e3,
            report.scan.next_lsn,
            report.generation,
            if report.scan.torn_tail { ", dropped a torn tail" } else { "" },
            if report.lost_acknowledged { ", acknowledged records may have been lost" } else { "" },
        );
    }
    let params = StressParams {
        duration: Duration::from_secs_f64(args.seconds),
        record_bytes: args.record_bytes,
        in_flight: args.in_flight,
        rate_per_shard: args.rate,
        report_acks: args.report_acks,
    };
    let results = stress::run(&engine, params).context("running the workload")?;
    engine.shutdown().context("shutting down")?;
    print_results(&args, &results);
    if let Some(error) = results.iter().find_map(|result| result.error.as_ref()) {
        bail!("the workload stopped: {error}");
    }
    Ok(())
}

fn bench_messaging_command(args: BenchMessagingArgs) -> anyhow::Result<()> {
    let mut config = EngineConfig::new(&args.data_dir);
    config.shards = args.shards;
    config.cpus = args.cpus.clone();
    config.log.durability = args.durability;
    config.log.segment_bytes = args.segment_mib << 20;
    let params = BenchParams {
        scenario: args.scenario,
        duration: Duration::from_secs_f64(args.seconds),
        rate: args.rate,
        in_flight: args.in_flight,
        users: args.users,
        chats: args.chats,
        members: args.members,
        subscribers: args.subscribers,
        posts: args.posts,
        post_interval: Duration::from_millis(args.post_interval_ms),
        messages: args.messages,
        page: args.page,
        background_rate: args.background_rate,
        core_reads: args.core_reads,
        restart_messages: args.restart_messages,
        restart_phase: args.restart_phase,
        unclean: args.unclean,
        drop_caches: args.drop_caches,
        text_bytes: args.text_bytes,
        seed: args.seed,
        load_cpu: args.load_cpu,
        drain_cpu: args.drain_cpu,
        drain_threads: args.drain_threads,
        drain_mode: args.drain_mode,
        through_session: args.through_session,
    };
    messaging_bench::run(config, params)
}

fn print_results(args: &StressArgs, results: &[stress::ShardResult]) {
    let mut latency: Histogram<u64> = Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
    let mut records = 0;
    let mut seconds: f64 = 0.0;
    for result in results {
        let _ = latency.add(&result.latency_ns);
        records += result.records;
        seconds = seconds.max(result.elapsed.as_secs_f64());
        let log = result.log;
        println!(
            "shard {}: {} records, {} batches ({:.0} records/batch), {} fdatasyncs (mean {:.0} us, max {} us)",
            result.shard.0,
            result.records,
            log.batches,
            result.records as f64 / log.batches.max(1) as f64,
            log.syncs,
            log.sync_time_us as f64 / log.syncs.max(1) as f64,
            log.sync_time_us_max,
        );
    }
    let mode = match args.rate {
        Some(rate) => format!("open loop at {rate} records/s per shard"),
        None => format!("closed loop, {} in flight per shard", args.in_flight),
    };
    println!(
        "{} shards, {:?}, {} B records, {mode}: {:.0} records/s, {:.1} MB/s of payload",
        results.len(),
        args.durability,
        args.record_bytes,
        records as f64 / seconds,
        records as f64 * args.record_bytes as f64 / seconds / 1e6,
    );
    println!(
        "ack latency us: p50 {:.0}  p90 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}",
        latency.value_at_quantile(0.5) as f64 / 1e3,
        latency.value_at_quantile(0.9) as f64 / 1e3,
        latency.value_at_quantile(0.99) as f64 / 1e3,
        latency.value_at_quantile(0.999) as f64 / 1e3,
        latency.max() as f64 / 1e3,
    );
}

fn check_command(data_dir: &std::path::Path) -> anyhow::Result<()> {
    let mut shards: Vec<(usize, PathBuf)> = std::fs::read_dir(data_dir)
        .with_context(|| format!("reading {}", data_dir.display()))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            Some((name.strip_prefix("shard-")?.parse().ok()?, entry.path()))
        })
        .collect();
    shards.sort();
    let _lock = engine::engine::lock_data_dir(data_dir, engine::engine::DataDirLock::Shared)
        .context("an engine is running on this data directory; stop it first")?;
    if shards.is_empty() {
        bail!("{} holds no shard directories", data_dir.display());
    }
    let mut failed = false;
    for (index, dir) in shards {
        let mut stress_records = 0u64;
        let mut stress_mismatches = 0u64;
        let result = engine::wal::driver::scan_offline(&dir, |_, record| {
            if record.kind == stress::STRESS_KIND {
                stress_records += 1;
                if !stress::payload_matches(ShardId(index as u16), record.lsn, record.payload) {
                    stress_mismatches += 1;
                }
            }
        });
        match result {
            Ok((scan, checkpoint)) => {
                println!(
                    "shard {index}: ok: {} records after {}, next LSN {}, {} batches, {} bytes{}",
                    scan.records,
                    checkpoint.map_or("the log start".to_string(), |ticket| format!("checkpoint {}", ticket.lsn)),
                    scan.next_lsn,
                    scan.batches,
                    scan.bytes,
                    if scan.torn_tail { ", torn tail present (dropped at next open)" } else { "" },
                );
                if stress_mismatches > 0 {
                    println!(
                        "shard {index}: {stress_mismatches} of {stress_records} stress records have wrong payloads"
                    );
                    failed = true;
                }
            }
            Err(error) => {
                println!("shard {index}: {error}");
                failed = true;
            }
        }
    }
    if failed {
        bail!("the data directory has errors");
    }
    Ok(())
}
