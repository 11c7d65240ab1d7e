//! `ferrogram serve`: the engine on a data directory with the gateway on every core.
//!
//! Settings come from flags, then environment variables (`FERROGRAM_*`), then a TOML file
//! (`--config`), then defaults, in that order of precedence. SIGTERM or SIGINT shut down
//! gracefully: stop accepting, finish in-flight writes, answer them, close, sync.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use engine::{Durability, Engine, EngineConfig, EngineHooks};
use gateway::push::{ApnsAuth, ApnsConfig, FcmConfig, PushConfig, WebhookConfig};
use gateway::push_host::{push_intake, PushHost};
use gateway::{CodeSender, ConnectionCapacity, GatewayConfig, GatewayHandle, GatewayLimits, OpenFiles};

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
    /// Push notifications through a relay: POST a signed JSON payload per push to this URL
    /// (needs --push-webhook-secret-file) [default: off]. APNs and FCM are set in the config
    /// file's [push] table.
    #[arg(long, env = "FERROGRAM_PUSH_WEBHOOK")]
    pub push_webhook: Option<String>,
    /// A file holding the secret the relay checks the HMAC-SHA256 signature with.
    #[arg(long, env = "FERROGRAM_PUSH_WEBHOOK_SECRET_FILE")]
    pub push_webhook_secret_file: Option<PathBuf>,
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
    #[serde(default)]
    push: FilePush,
}

/// The config file's `[push]` table. Push is on when at least one provider is configured.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePush {
    webhook_url: Option<String>,
    webhook_secret_file: Option<PathBuf>,
    coalescing_window_ms: Option<u64>,
    attempts_max: Option<u32>,
    fcm_endpoint: Option<String>,
    fcm_project_id: Option<String>,
    fcm_access_token_file: Option<PathBuf>,
    apns_topic: Option<String>,
    apns_team_id: Option<String>,
    apns_key_id: Option<String>,
    apns_key_file: Option<PathBuf>,
    apns_endpoint: Option<String>,
    apns_sandbox_endpoint: Option<String>,
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
    media_requests_per_session_per_second: Option<u32>,
}

/// Everything `serve` runs with, after layering flags, environment, file and defaults.
#[derive(Clone, Debug)]
pub struct ServeSettings {
    pub engine: EngineConfig,
    pub gateway: GatewayConfig,
    pub metrics: Option<SocketAddr>,
    /// The push dispatcher's configuration; `None` when no provider is configured.
    pub push: Option<PushConfig>,
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
            requests_per_session_per_second,
            media_requests_per_session_per_second
        );
        if let Some(value) = self.connections_per_ip_max {
            limits.connections_per_ip_max = value;
        }
        let mut gateway = GatewayConfig::new(listen, code_sender);
        gateway.limits = limits;
        gateway.idle_timeout = Duration::from_secs(self.idle_timeout_s.or(file.idle_timeout_s).unwrap_or(300));
        gateway.validate()?;
        let push = self.push_settings(file.push)?;
        Ok(ServeSettings { engine, gateway, metrics: self.metrics.or(file.metrics), push })
    }

    fn push_settings(&self, file: FilePush) -> anyhow::Result<Option<PushConfig>> {
        let read = |path: &Path, what: &str| {
            std::fs::read_to_string(path)
                .map(|text| text.trim().to_owned())
                .with_context(|| format!("cannot read the {what} file {}", path.display()))
        };
        let mut config = PushConfig::default();
        if let Some(url) = self.push_webhook.clone().or(file.webhook_url) {
            let Some(path) = self.push_webhook_secret_file.clone().or(file.webhook_secret_file) else {
                bail!("the push webhook needs a secret file (--push-webhook-secret-file)");
            };
            config.webhook = Some(WebhookConfig { url, secret: read(&path, "push webhook secret")?.into_bytes() });
        }
        if let Some(project_id) = file.fcm_project_id {
            let Some(path) = file.fcm_access_token_file else {
                bail!("[push] fcm_project_id needs fcm_access_token_file")
            };
            config.fcm = Some(FcmConfig {
                endpoint: file.fcm_endpoint.unwrap_or_else(|| "https://fcm.googleapis.com".into()),
                project_id,
                access_token: read(&path, "FCM access token")?,
            });
        }
        if let Some(topic) = file.apns_topic {
            let (Some(team_id), Some(key_id), Some(path)) = (file.apns_team_id, file.apns_key_id, file.apns_key_file)
            else {
                bail!("[push] apns_topic needs apns_team_id, apns_key_id and apns_key_file");
            };
            let auth = ApnsAuth::SigningKey { team_id, key_id, private_key_pem: read(&path, "APNs key")? };
            let mut apns = ApnsConfig::apple(topic, auth);
            if let Some(endpoint) = file.apns_endpoint {
                apns.endpoint_production = endpoint;
            }
            if let Some(endpoint) = file.apns_sandbox_endpoint {
                apns.endpoint_sandbox = endpoint;
            }
            config.apns = Some(apns);
        }
        if config.webhook.is_none() && config.fcm.is_none() && config.apns.is_none() {
            return Ok(None);
        }
        if let Some(window) = file.coalescing_window_ms {
            config.coalescing_window = Duration::from_millis(window);
        }
        if let Some(attempts) = file.attempts_max {
            config.attempts_max = attempts;
        }
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(Some(config))
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
    // Before the engine opens, so its files and every connection count against the raised limit.
    if let Err(error) = OpenFiles::raise() {
        tracing::warn!(%error, "cannot raise the open-files limit");
    }
    // The push hook goes in before the engine opens: jobs made durable from the first request
    // on reach the dispatcher; those left from an earlier run are found by its first sweep.
    let (push_hook, push_intake) = push_intake();
    let hooks = EngineHooks { push: settings.push.is_some().then_some(push_hook), ..EngineHooks::default() };
    let engine = Engine::open_with_hooks(settings.engine.clone(), hooks)
        .with_context(|| format!("cannot open the engine on {}", data_dir.display()))?;
    for report in engine.open_reports() {
        tracing::info!(?report, "shard recovered");
    }
    let push = match settings.push.clone().map(|config| PushHost::start(engine.messenger(), push_intake, config)) {
        None => None,
        Some(Ok(host)) => Some(host),
        Some(Err(error)) => {
            let _ = engine.shutdown();
            bail!(error);
        }
    };
    let push_sender = push.as_ref().map(PushHost::sender);
    let handle = match GatewayHandle::start_with_push(engine.clone(), settings.gateway.clone(), push_sender) {
        Ok(handle) => handle,
        Err(error) => {
            drop(push);
            let _ = engine.shutdown();
            bail!(error);
        }
    };
    if let Some(address) = settings.metrics {
        let extra = push.as_ref().map(|host| (host.dispatcher_metrics(), host.metrics()));
        let bound = gateway::metrics::serve_with_push(handle.metrics(), extra, address)
            .with_context(|| format!("cannot serve metrics on {address}"))?;
        tracing::info!(%bound, "metrics");
    }
    if push.is_some() {
        tracing::info!("push notifications on");
    }
    if let Some(capacity) = handle.connection_capacity() {
        report_connection_capacity(&capacity);
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
    // Push first: it writes back the jobs it finished while the engine still runs.
    if let Some(push) = push {
        push.shutdown();
    }
    handle.shutdown().context("shutdown failed")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Connections a server is expected to hold at least (issue 5's goal): an open-files limit
/// that allows fewer, and fewer than the configuration's cap, is worth a warning.
const CONNECTIONS_EXPECTED_MIN: u64 = 10_000;

/// Says how many client connections the open-files limit allows (a connection holds one
/// descriptor; the engine's files and the listeners were open when it was read): past that,
/// the gateway refuses connections with `OVERLOADED`. Warns when that is low.
fn report_connection_capacity(capacity: &ConnectionCapacity) {
    let ConnectionCapacity { open_files, by_open_files, configured } = *capacity;
    if by_open_files < configured.min(CONNECTIONS_EXPECTED_MIN) {
        tracing::warn!(
            open_files_limit = open_files.limit,
            open_files_hard_limit = open_files.limit_hard,
            descriptors_in_use = open_files.in_use,
            connections_max = by_open_files,
            connections_configured = configured,
            "a low open-files limit caps client connections; raise the hard limit (`ulimit -Hn`, \
             LimitNOFILE=) to serve more"
        );
    } else {
        tracing::info!(
            open_files_limit = open_files.limit,
            descriptors_in_use = open_files.in_use,
            connections_max = by_open_files,
            connections_configured = configured,
            "open files: one descriptor per client connection"
        );
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
