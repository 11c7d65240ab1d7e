//! The `ferrogram-loadgen` binary: runs a load against a target, verifies an acks file, or
//! receives pushes (`push-sink`).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;

use ferrogram_loadgen::acks::AckFile;
use ferrogram_loadgen::cli::{Cli, Command, PushSinkArgs, RunArgs, TargetKind, VerifyArgs};
use ferrogram_loadgen::limits::{PROVISION_CONCURRENCY_MAX, SINK_CONNECTIONS_MAX, SPARE_FILE_DESCRIPTORS};
use ferrogram_loadgen::runtime::Runtime;
use ferrogram_loadgen::sink::meter::Meter;
use ferrogram_loadgen::sink::PushSink;
use ferrogram_loadgen::target::ferrogram::FerrogramTarget;
use ferrogram_loadgen::target::redis::{RedisTarget, COMMAND_CONNECTIONS_MAX};
use ferrogram_loadgen::verify::{self, FerrogramVerifyApi};
use ferrogram_loadgen::{run, svg, system};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Verify(args)) => verify_command(&args),
        Some(Command::Run(args)) => run_command(&args),
        Some(Command::PushSink(args)) => push_sink_command(&args),
        None => run_command(&cli.run),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ferrogram-loadgen: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_command(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let options = args.resolve().map_err(anyhow::Error::msg)?;
    // Pin first: every thread started later (executor, reactor) inherits the affinity.
    if let Some(cpus) = &args.cpus {
        system::pin_current_thread(cpus).context("cannot pin loadgen's threads")?;
    }
    let redis_command_connections =
        args.redis_command_connections.unwrap_or(options.online_users).clamp(1, COMMAND_CONNECTIONS_MAX);
    // Redis sessions hold a Pub/Sub connection each besides the shared command connections.
    let session_connections = match args.target {
        TargetKind::Ferrogram => options.online_users,
        TargetKind::Redis => options.online_users + redis_command_connections,
    };
    let connections = (session_connections + options.provision_concurrency.min(PROVISION_CONCURRENCY_MAX)) as u64;
    system::raise_file_limit(connections, SPARE_FILE_DESCRIPTORS)?;
    let threads = args.threads.unwrap_or_else(|| ferrogram_loadgen::runtime::default_threads(system::allowed_cpus()));
    let runtime = Runtime::new(threads).context("cannot start the executor threads")?;
    let report = match args.target {
        TargetKind::Ferrogram => {
            let target = FerrogramTarget::new(args.server, args.code.clone(), runtime.handle().spawner());
            run::run(&runtime, Arc::new(target), &args.server.to_string(), &options)?
        }
        TargetKind::Redis => {
            let connecting = RedisTarget::connect(args.server, redis_command_connections, runtime.handle().spawner());
            let target =
                runtime.block_on(connecting).with_context(|| format!("cannot use Redis at {}", args.server))?;
            run::run(&runtime, Arc::new(target), &args.server.to_string(), &options)?
        }
    };
    print!("{}", report.text());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        let title = format!(
            "{} {:?} at {:.0}/s offered, {:.0}/s achieved{}",
            report.target,
            options.scenario,
            report.load.offered_rate_per_s,
            report.load.achieved_rate_per_s,
            if report.loadgen_bottleneck { " (LOADGEN WAS THE BOTTLENECK)" } else { "" }
        );
        let lines: Vec<(&str, &hdrhistogram::Histogram<u64>)> =
            report.histograms.iter().map(|(measure, histogram)| (measure.name(), histogram)).collect();
        std::fs::write(path, svg::plot(&title, &lines)).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if report.ack_write_errors > 0 {
        anyhow::bail!("{} acknowledgements could not be written to the acks file", report.ack_write_errors);
    }
    Ok(ExitCode::SUCCESS)
}

fn verify_command(args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    args.check().map_err(anyhow::Error::msg)?;
    let file = AckFile::read(&args.acks)?;
    system::raise_file_limit(args.threads as u64 * 2, SPARE_FILE_DESCRIPTORS)?;
    let api = FerrogramVerifyApi::new(args.server, args.code.clone());
    let report = verify::check(&file, &api, args.threads)?;
    print!("{}", report.text());
    Ok(ExitCode::from(report.exit_code() as u8))
}

/// Listens, prints the rate once a second, and stops after `--seconds` or at SIGTERM/SIGINT
/// with the totals (and `--json`).
fn push_sink_command(args: &PushSinkArgs) -> anyhow::Result<ExitCode> {
    args.check().map_err(anyhow::Error::msg)?;
    if let Some(cpus) = &args.cpus {
        system::pin_current_thread(cpus).context("cannot pin the sink's threads")?;
    }
    system::raise_file_limit(SINK_CONNECTIONS_MAX as u64, SPARE_FILE_DESCRIPTORS)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone()).context("cannot install the signal handlers")?;
    }
    let threads = args.threads.unwrap_or_else(|| ferrogram_loadgen::runtime::default_threads(system::allowed_cpus()));
    let runtime = Runtime::new(threads).context("cannot start the executor threads")?;
    let sink = PushSink::bind(args.listen).with_context(|| format!("cannot listen on {}", args.listen))?;
    let listen = sink.local_addr()?.to_string();
    let counters = sink.counters();
    let handle = runtime.handle();
    runtime.handle().spawn(sink.serve(handle)).detach();
    println!("push-sink listening on {listen}");

    let started = Instant::now();
    let deadline = args.seconds.map(|seconds| started + Duration::from_secs_f64(seconds));
    let mut meter = Meter::default();
    runtime.block_on(async {
        let mut next_tick = started + Duration::from_secs(1);
        loop {
            let now = Instant::now();
            if stop.load(Ordering::Relaxed) || deadline.is_some_and(|deadline| now >= deadline) {
                break;
            }
            if now >= next_tick {
                println!("{}", meter.tick(counters.totals()));
                next_tick += Duration::from_secs(1);
                continue;
            }
            // Short naps, so a signal ends the sink within 100 ms.
            let mut wake = next_tick.min(now + Duration::from_millis(100));
            if let Some(deadline) = deadline {
                wake = wake.min(deadline);
            }
            ferrogram_loadgen::reactor::sleep_until(wake).await;
        }
    });
    let report = meter.report(listen, started.elapsed().as_secs_f64(), counters.totals());
    print!("{}", report.text());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
