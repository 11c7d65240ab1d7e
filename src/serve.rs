//! `ferrogram serve`: the engine on a data directory with the gateway on every core.
//!
//! Settings come from flags, then environment variables (`FERROGRAM_*`), then a TOML file
//! (`--config`), then defaults, in that order of precedence. SIGTERM or SIGINT shut down
//! gracefully: stop accepting, finish in-flight writes, answer them, close, sync.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use engine::{Durability, Engine, EngineConfig};
use gateway::{CodeSender, GatewayConfig, GatewayHandle, GatewayLimits};

use ferrogram_gateway_shim as gateway;

/// Flags of `ferrogram serve`. Every one is optional so the config file can fill it in.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ServeArgs {
    /// A TOML file with the same settings (flags and environment variables win over it).
    #[arg(long, env = "FERROGRAM_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the data lives [default: ./data].
    #[arg(long, env = "FERROGRAM_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The address every core listens on [default: 127.0.0.1:7450].
    #[arg(long, env = "FERROGRAM_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Shards, one pinned core each [default: every CPU this process may use].
    #[arg(long, env = "FERROGRAM_CORES")]
    pub cores: Option<usize>,
    /// CPUs to pin the shards to, e.g. `1` or `0,1` [default: shard i on CPU i].
    #[arg(long, env = "FERROGRAM_CPUS", value_delimiter = ',')]
    pub cpus: Option<Vec<usize>>,
    /// sync | interval:<ms> | none [default: sync].
    #[arg(long, env = "FERROGRAM_DURABILITY")]
    pub durability: Option<Durability>,
    /// log | file:PATH | webhook:URL | fixed:CODE (development and benchmarks only, loopback
    /// only) [default: log].
    #[arg(long, env = "FERROGRAM_CODE_SENDER")]
    pub code_sender: Option<String>,
    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9450 [default: off].
    #[arg(long, env = "FERROGRAM_METRICS")]
    pub metrics: Option<SocketAddr>,
    /// Disconnect clients silent for this many seconds [default: 300].
    #[arg(long, env = "FERROGRAM_IDLE_TIMEOUT_S")]
    pub idle_timeout_s: Option<u64>,
    /// Open connections allowed from one IP address [default: 1000].
    #[arg(long, env = "FERROGRAM_CONNECTIONS_PER_IP_MAX")]
    pub connections_per_ip_max: Option<u32>,
    /// Truncate a log at its first corrupt batch instead of refusing to start.
    #[arg(long)]
    pub repair: bool,
}

/// The TOML file: the same settings, plus every gateway limit under `[limits]`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    cores: Option<usize>,
    cpus: Option<Vec<usize>>,
    durability: Option<String>,
    code_sender: Option<String>,
    metrics: Option<SocketAddr>,
    idle_timeout_s: Option<u64>,
    repair: Option<bool>,
    #[serde(default)]
    limits: FileLimits,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    connections_per_ip_max: Option<u32>,
    connections_per_shard_max: Option<usize>,
    request_bytes_per_shard_max: Option<u64>,
    outbound_bytes_per_shard_max: Option<u64>,
    requests_per_ip_per_second: Option<u32>,
    logins_per_ip_per_minute: Option<u32>,
    codes_per_phone_per_hour: Option<u32>,
    sends_per_session_per_second: Option<u32>,
    requests_per_session_per_second: Option<u32>,
}

/// Everything `serve` runs with, after layering flags, environment, file and defaults.
#[derive(Clone, Debug)]
pub struct ServeSettings {
    pub engine: EngineConfig,
    pub gateway: GatewayConfig,
    pub metrics: Option<SocketAddr>,
}

impl ServeArgs {
    pub fn settings(&self) -> anyhow::Result<ServeSettings> {
        let file = match &self.config {
            Some(path) => read_file_settings(path)?,
            None => FileSettings::default(),
        };
        let data_dir = self.data_dir.clone().or(file.data_dir).unwrap_or_else(|| PathBuf::from("./data"));
        let listen = self.listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7450)));
        let cores = match self.cores.or(file.cores) {
            Some(cores) => cores,
            None => std::thread::available_parallelism().map_or(1, |cores| cores.get()),
        };
        let durability = match (&self.durability, &file.durability) {
            (Some(durability), _) => *durability,
            (None, Some(text)) => text.parse().map_err(anyhow::Error::msg).context("durability in the config file")?,
            (None, None) => Durability::Sync,
        };
        let code_sender: CodeSender = self
            .code_sender
            .clone()
            .or(file.code_sender)
            .unwrap_or_else(|| "log".into())
            .parse()
            .map_err(anyhow::Error::msg)?;

        let mut engine = EngineConfig::new(data_dir);
        engine.shards = cores;
        engine.cpus = self.cpus.clone().or(file.cpus);
        engine.log.durability = durability;
        engine.repair = self.repair || file.repair.unwrap_or(false);

        let mut limits = GatewayLimits::default();
        let l = file.limits;
        macro_rules! layer {
            ($($field:ident),*) => { $( if let Some(value) = l.$field { limits.$field = value; } )* };
        }
        layer!(
            connections_per_ip_max,
            connections_per_shard_max,
            request_bytes_per_shard_max,
            outbound_bytes_per_shard_max,
            requests_per_ip_per_second,
            logins_per_ip_per_minute,
            codes_per_phone_per_hour,
            sends_per_session_per_second,
            requests_per_session_per_second
        );
        if let Some(value) = self.connections_per_ip_max {
            limits.connections_per_ip_max = value;
        }
        let mut gateway = GatewayConfig::new(listen, code_sender);
        gateway.limits = limits;
        gateway.idle_timeout = Duration::from_secs(self.idle_timeout_s.or(file.idle_timeout_s).unwrap_or(300));
        gateway.validate()?;
        Ok(ServeSettings { engine, gateway, metrics: self.metrics.or(file.metrics) })
    }
}

fn read_file_settings(path: &Path) -> anyhow::Result<FileSettings> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// Runs the server until SIGTERM or SIGINT, then shuts down gracefully.
pub fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .context("cannot install the signal handlers")?;
    let data_dir = settings.engine.data_dir.clone();
    raise_open_files_limit();
    let engine = Engine::open(settings.engine.clone())
        .with_context(|| format!("cannot open the engine on {}", data_dir.display()))?;
    for report in engine.open_reports() {
        tracing::info!(?report, "shard recovered");
    }
    let handle = match GatewayHandle::start(engine.clone(), settings.gateway.clone()) {
        Ok(handle) => handle,
        Err(error) => {
            let _ = engine.shutdown();
            bail!(error);
        }
    };
    if let Some(address) = settings.metrics {
        let bound = gateway::metrics::serve(handle.metrics(), address)
            .with_context(|| format!("cannot serve metrics on {address}"))?;
        tracing::info!(%bound, "metrics");
    }
    // One line on standard output, for scripts and tests that wait for the server.
    println!(
        "ferrogram listening on {} (data in {}, {} shards)",
        handle.local_addr(),
        data_dir.display(),
        engine.shard_count()
    );
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "shutting down");
    }
    handle.shutdown().context("shutdown failed")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Raises the soft limit on open files to the hard limit and says what it allows: each
/// client connection takes two descriptors (its socket, and the duplicate its writer uses),
/// and the WAL and media segments take a few per shard.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    let raised = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return;
        }
        if limit.rlim_cur < limit.rlim_max {
            let wanted = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                limit = wanted;
            }
        }
        limit.rlim_cur
    };
    let connections = raised.saturating_sub(256) / 2;
    if raised < 4096 {
        tracing::warn!(
            open_files = raised,
            connections,
            "a low open-files limit caps client connections; raise `ulimit -n`"
        );
    } else {
        tracing::info!(open_files = raised, connections, "open-files limit");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Flags win over the config file, the file over defaults, and unknown keys are refused.
    #[test]
    fn settings_layer_flags_file_defaults() {
        let directory = std::env::temp_dir().join(format!("ferrogram-serve-config-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("ferrogram.toml");
        std::fs::write(
            &path,
            "data_dir = \"/srv/ferrogram\"\nlisten = \"127.0.0.1:9000\"\ncores = 3\ndurability = \"interval:50\"\n\
             [limits]\nconnections_per_ip_max = 7\n",
        )
        .unwrap();
        let args = ServeArgs { config: Some(path.clone()), cores: Some(1), ..Default::default() };
        let settings = args.settings().unwrap();
        assert_eq!(settings.engine.data_dir, PathBuf::from("/srv/ferrogram"));
        assert_eq!(settings.engine.shards, 1, "the flag wins");
        assert_eq!(settings.engine.log.durability, Durability::Interval { interval_ms: 50 });
        assert_eq!(settings.gateway.listen.port(), 9000);
        assert_eq!(settings.gateway.limits.connections_per_ip_max, 7);
        assert_eq!(settings.gateway.limits.logins_per_ip_per_minute, GatewayLimits::default().logins_per_ip_per_minute);

        std::fs::write(&path, "data_dri = \"typo\"\n").unwrap();
        assert!(args.settings().is_err(), "an unknown key is refused");

        let defaults = ServeArgs::default().settings().unwrap();
        assert_eq!(defaults.engine.data_dir, PathBuf::from("./data"));
        assert_eq!(defaults.gateway.listen, SocketAddr::from(([127, 0, 0, 1], 7450)));

        let fixed_public = ServeArgs {
            listen: Some("0.0.0.0:7450".parse().unwrap()),
            code_sender: Some("fixed:12345".into()),
            ..Default::default()
        };
        assert!(fixed_public.settings().is_err(), "a fixed code is refused off loopback");
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
