//! The gateway shim (DESIGN §8): phone login, authorizations, rate limits and the routing of
//! client requests (messaging and media) and live updates between the wire protocol (`net`)
//! and the engine. It runs
//! on the engine's own shards: one listener per core (SO_REUSEPORT), each connection served
//! on the core that accepted it.

mod connection;
mod convert;
mod dispatch;
mod fit;
mod media;
mod shard;
mod updates;
mod webhook;

pub mod config;
pub mod login;
pub mod metrics;
pub mod open_files;
pub mod push;
pub mod push_host;
pub mod rate;
pub mod token;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use engine::messaging::Messenger;
use engine::Engine;

pub use config::{GatewayConfig, GatewayLimits};
pub use login::CodeSender;
pub use metrics::Metrics;
pub use open_files::OpenFiles;

/// Why the gateway could not start or stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("the operating system has no randomness to offer")]
    Random,
    #[error("cannot listen: {0}")]
    Listen(String),
    #[error("the engine failed: {0}")]
    Engine(#[from] engine::EngineError),
}

/// What every shard's part of the gateway shares: configuration, login codes, rate limits,
/// metrics and the engine handle.
pub(crate) struct Gateway {
    pub config: GatewayConfig,
    pub messenger: Messenger,
    pub media: engine::media::Media,
    pub codes: login::LoginCodes,
    pub rates: rate::RateLimits,
    pub metrics: Arc<Metrics>,
    /// The push dispatcher's input, for cancels when a chat is read (none without push).
    pub push: Option<push::PushSender>,
    stopping: AtomicBool,
    /// Connections each shard holds at most: `connections_per_shard_max`, lowered to its share
    /// of what the open-files limit allows, so a shard refuses a connection with an answer
    /// rather than failing to accept it.
    connections_per_shard_cap: AtomicUsize,
}

impl Gateway {
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    pub fn connections_per_shard_cap(&self) -> usize {
        self.connections_per_shard_cap.load(Ordering::Relaxed)
    }
}

/// How many client connections the gateway can hold, as read once its shards listen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionCapacity {
    pub open_files: OpenFiles,
    /// Connections the open-files limit leaves room for, over all shards.
    pub by_open_files: u64,
    /// `connections_per_shard_max` times the shards.
    pub configured: u64,
}

/// Binds a socket with SO_REUSEPORT to `address` (port 0: any free port) without listening.
fn reserve_port(address: SocketAddr) -> std::io::Result<(socket2::Socket, SocketAddr)> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(address), socket2::Type::STREAM, None)?;
    socket.set_reuse_port(true)?;
    socket.bind(&address.into())?;
    let bound = socket.local_addr()?.as_socket().ok_or_else(|| std::io::Error::other("not an IP address"))?;
    Ok((socket, bound))
}

/// A running gateway.
pub struct GatewayHandle {
    gateway: Arc<Gateway>,
    engine: Engine,
    listen: SocketAddr,
    capacity: Option<ConnectionCapacity>,
}

impl std::fmt::Debug for GatewayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayHandle").field("listen", &self.listen).finish_non_exhaustive()
    }
}

impl GatewayHandle {
    /// Starts listening on every shard of `engine`. Port 0 picks a free port.
    pub fn start(engine: Engine, config: GatewayConfig) -> Result<GatewayHandle, GatewayError> {
        GatewayHandle::start_with_push(engine, config, None)
    }

    /// As [`GatewayHandle::start`], telling `push` (see [`push_host::PushHost::sender`]) when
    /// a user reads a chat, so its pending pushes are dropped.
    pub fn start_with_push(
        engine: Engine,
        mut config: GatewayConfig,
        push: Option<push::PushSender>,
    ) -> Result<GatewayHandle, GatewayError> {
        config.validate()?;
        // Every shard must bind the same port: for port 0, pick one now and keep it reserved
        // (bound, not listening, SO_REUSEPORT like the shards' sockets) until they have bound
        // it, so no other process can be handed the same port in between.
        let _reservation = if config.listen.port() == 0 {
            let (reservation, bound) =
                reserve_port(config.listen).map_err(|error| GatewayError::Listen(error.to_string()))?;
            config.listen = bound;
            Some(reservation)
        } else {
            None
        };
        if matches!(config.code_sender, CodeSender::Fixed(_)) {
            tracing::warn!(
                "the fixed: code sender is on: every login accepts one code; development and benchmarks only"
            );
        }
        let metrics = Arc::new(Metrics::new(engine.shard_count(), matches!(config.code_sender, CodeSender::Fixed(_))));
        let gateway = Arc::new(Gateway {
            codes: login::LoginCodes::new(config.code_sender.clone())?,
            rates: rate::RateLimits::new(&config.limits),
            messenger: engine.messenger(),
            media: engine.media(),
            metrics,
            push,
            stopping: AtomicBool::new(false),
            connections_per_shard_cap: AtomicUsize::new(config.limits.connections_per_shard_max),
            config,
        });
        let (bound, results) = flume::unbounded();
        let service_gateway = gateway.clone();
        engine.run_on_every_shard(move |context| shard::listen(service_gateway.clone(), context, bound.clone()))?;
        for _ in 0..engine.shard_count() {
            match results.recv_timeout(Duration::from_secs(30)) {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(GatewayError::Listen(error)),
                Err(_) => return Err(GatewayError::Listen("a shard did not start its listener".into())),
            }
        }
        let listen = gateway.config.listen;
        tracing::info!(%listen, shards = engine.shard_count(), "listening");
        // Read now, with the engine's files and the listeners open: what is left is for clients.
        let capacity = match OpenFiles::read() {
            Ok(open_files) => {
                let shards = engine.shard_count().max(1);
                let by_open_files = open_files.connections_max();
                let configured = gateway.config.limits.connections_per_shard_max;
                let share = usize::try_from(by_open_files / shards as u64).unwrap_or(usize::MAX);
                gateway.connections_per_shard_cap.store(configured.min(share), Ordering::Relaxed);
                Some(ConnectionCapacity {
                    open_files,
                    by_open_files,
                    configured: (configured as u64).saturating_mul(shards as u64),
                })
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read the open-files limit; connections are capped by the configuration only");
                None
            }
        };
        Ok(GatewayHandle { gateway, engine, listen, capacity })
    }

    /// What the open-files limit and the configuration allow, read at start (`None` if the
    /// limit could not be read).
    pub fn connection_capacity(&self) -> Option<ConnectionCapacity> {
        self.capacity
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.listen
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        self.gateway.metrics.clone()
    }

    /// Graceful shutdown: stop accepting, let in-flight requests finish and their answers go
    /// out, close every connection, then stop the engine (which makes every append durable).
    pub fn shutdown(self) -> Result<(), GatewayError> {
        self.gateway.stopping.store(true, Ordering::Relaxed);
        let (done, finished) = flume::unbounded();
        self.engine.run_on_every_shard(move |_| {
            let done = done.clone();
            async move {
                shard::stop().await;
                let _ = done.send(());
            }
        })?;
        for _ in 0..self.engine.shard_count() {
            // Each shard bounds its own drain; this only guards against a stuck shard.
            if finished.recv_timeout(config::SHUTDOWN_DRAIN_TIMEOUT + Duration::from_secs(5)).is_err() {
                tracing::warn!("a shard did not finish closing its connections in time");
                break;
            }
        }
        self.engine.shutdown()?;
        Ok(())
    }
}
