//! The gateway's configuration and its limits (DESIGN §8, §10), with the defaults a public
//! deployment would start from. `ferrogram serve` fills it from flags, a TOML file and the
//! environment.

use std::net::SocketAddr;
use std::time::Duration;

use crate::login::CodeSender;

/// How long a client has to send `Hello` after connecting.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a frame may take to arrive once its header has: a client announcing a large frame
/// and trickling it in holds its budget at most this long.
pub const FRAME_BODY_TIMEOUT: Duration = Duration::from_secs(15);
/// How often each shard closes connections past their read deadline: timeouts are enforced
/// to within this.
pub const DEADLINE_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How long a closing connection's last frames (an error, the answers of a graceful
/// shutdown) may take to drain to a client before its socket is shut anyway.
pub const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests one connection may have in flight; more are answered `OVERLOADED`.
pub const REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX: usize = 256;
/// Outbound bytes and frames queued for one connection before it counts as not reading and
/// is closed (it catches up later with `GetDifference`).
pub const OUTBOUND_BYTES_PER_CONNECTION_MAX: usize = 4 * 1024 * 1024;
pub const OUTBOUND_FRAMES_PER_CONNECTION_MAX: usize = 8192;
/// One socket write carries at most this many bytes of queued frames.
pub const WRITE_BATCH_BYTES_MAX: usize = 256 * 1024;
/// Members listed by one `GetMembers` answer (16 bytes each archived; well within a frame).
pub const MEMBERS_PER_ANSWER_MAX: usize = 10_000;
const _: () = assert!(MEMBERS_PER_ANSWER_MAX * 16 < ferrogram_net::limits::FRAME_MAX / 2);
/// Users one connection may watch the presence of (further `GetPresence` answers but does
/// not watch).
pub const WATCHED_USERS_PER_CONNECTION_MAX: usize = 1000;
/// Chats one connection may follow with `SubscribeChat`.
pub const SUBSCRIPTIONS_PER_CONNECTION_MAX: usize = 1000;
/// Live events packed into one `Updates` frame.
pub const UPDATES_PER_FRAME_MAX: usize = 256;
/// How long shutdown waits for in-flight requests before closing connections anyway.
pub const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Login codes: digits, lifetime, wrong attempts allowed, and how many may be pending.
pub const LOGIN_CODE_DIGITS: usize = 5;
pub const LOGIN_CODE_LIFETIME: Duration = Duration::from_secs(300);
pub const LOGIN_CODE_ATTEMPTS_MAX: u32 = 5;
pub const LOGIN_CODES_PENDING_MAX: usize = 1_000_000;
/// The longest device description stored with an authorization (the engine checks it too).
pub const DEVICE_DESCRIPTION_MAX: usize = 128;
/// File bytes of one connection's downloads (`GetFile` answers) read or queued at once; a
/// further `GetFile` waits for the writer to take one off the queue. This keeps a client
/// asking for many ranges from filling its outbound queue (which would close it as a slow
/// reader) and bounds what its downloads hold in memory.
pub const DOWNLOAD_BYTES_QUEUED_PER_CONNECTION_MAX: u64 = 2 * 1024 * 1024;
/// Buffers of large request bodies (upload parts) each shard keeps for reuse, and the
/// largest kept: reusing them saves a reallocation and fresh pages per part; the bound keeps
/// what an idle shard holds at 16 × 2 MiB.
pub const BODY_BUFFERS_PER_SHARD_MAX: usize = 16;
pub const BODY_BUFFER_BYTES_MAX: usize = 2 * 1024 * 1024;
/// How long a `GetFile` waits for room under that bound before answering `OVERLOADED`.
pub const DOWNLOAD_QUEUE_WAIT: Duration = Duration::from_secs(15);

// The wire, the engine and the push dispatcher agree on the longest device token, and a user's
// whole device list (`ListDevices`: 16 archived bytes per device plus its token) fits a frame.
const _: () = {
    use engine::messaging::limits::{DEVICES_PER_USER_MAX, DEVICE_TOKEN_BYTES_MAX};
    assert!(ferrogram_net::limits::DEVICE_TOKEN_BYTES_MAX == DEVICE_TOKEN_BYTES_MAX);
    assert!(crate::push::DEVICE_TOKEN_BYTES_MAX == DEVICE_TOKEN_BYTES_MAX);
    assert!(DEVICES_PER_USER_MAX * (DEVICE_TOKEN_BYTES_MAX + 16) < ferrogram_net::limits::FRAME_MAX / 2);
};
// The wire's media limits are the media store's (the protocol states them; the store enforces
// them again), and a connection's queued downloads leave room in its outbound queue.
const _: () = {
    use engine::media::store::limits as store;
    use ferrogram_net::limits as wire;
    assert!(wire::UPLOAD_PART_BYTES_MAX == store::PART_BYTES_MAX as usize);
    assert!(wire::UPLOAD_PART_BYTES_UNIT == store::PART_BYTES_UNIT as usize);
    assert!(wire::UPLOAD_PARTS_MAX == store::UPLOAD_PARTS_MAX);
    assert!(wire::FILE_BYTES_MAX == store::FILE_BYTES_MAX_LIMIT);
    assert!(wire::FILE_NAME_BYTES_MAX == store::FILE_NAME_BYTES_MAX);
    assert!(wire::MIME_TYPE_BYTES_MAX == store::MIME_TYPE_BYTES_MAX);
    assert!(wire::DOWNLOAD_ALIGN_BYTES == store::DOWNLOAD_ALIGN_BYTES);
    assert!(wire::DOWNLOAD_LIMIT_BYTES_MAX as u64 == store::DOWNLOAD_LIMIT_BYTES_MAX);
    assert!(wire::DOWNLOAD_WINDOW_BYTES == store::DOWNLOAD_WINDOW_BYTES);
    assert!(DOWNLOAD_BYTES_QUEUED_PER_CONNECTION_MAX >= wire::DOWNLOAD_LIMIT_BYTES_MAX as u64);
    assert!(DOWNLOAD_BYTES_QUEUED_PER_CONNECTION_MAX * 2 <= OUTBOUND_BYTES_PER_CONNECTION_MAX as u64);
};
const _: () = assert!(WRITE_BATCH_BYTES_MAX <= OUTBOUND_BYTES_PER_CONNECTION_MAX);
const _: () = assert!(BODY_BUFFER_BYTES_MAX >= ferrogram_net::limits::FRAME_MAX);
const _: () = assert!(ferrogram_net::limits::FRAME_MAX <= OUTBOUND_BYTES_PER_CONNECTION_MAX / 2);

/// Everything the gateway needs to serve.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Every shard listens on this address (SO_REUSEPORT splits connections between them).
    pub listen: SocketAddr,
    pub code_sender: CodeSender,
    pub limits: GatewayLimits,
    /// A client silent for this long is disconnected.
    pub idle_timeout: Duration,
}

/// Budgets and rate limits. Rates are per second unless named otherwise.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayLimits {
    /// Open connections from one IP address, over all cores.
    pub connections_per_ip_max: u32,
    /// Open connections per shard.
    pub connections_per_shard_max: usize,
    /// Bytes of request frames a shard holds while reading and handling them.
    pub request_bytes_per_shard_max: u64,
    /// Bytes of response and update frames a shard holds queued for its connections.
    pub outbound_bytes_per_shard_max: u64,
    /// Requests per second from one IP address, over all cores.
    pub requests_per_ip_per_second: u32,
    /// Login requests (send code, sign in, sign up, authenticate) from one IP, per minute.
    pub logins_per_ip_per_minute: u32,
    /// Login codes sent to one phone number, per hour.
    pub codes_per_phone_per_hour: u32,
    /// Writes (send, forward, edit, delete, pin, creating a group or channel) per
    /// authorization, per second.
    pub sends_per_session_per_second: u32,
    /// All other requests per authorization, per second.
    pub requests_per_session_per_second: u32,
    /// Media requests (upload parts, downloads, their start, finish and info) per
    /// authorization, per second. Their bytes are bounded by the request byte budget and the
    /// engine's in-flight part budget; this bounds how often a session can ask.
    pub media_requests_per_session_per_second: u32,
}

impl Default for GatewayLimits {
    fn default() -> GatewayLimits {
        GatewayLimits {
            connections_per_ip_max: 1000,
            connections_per_shard_max: 100_000,
            request_bytes_per_shard_max: 64 * 1024 * 1024,
            outbound_bytes_per_shard_max: 256 * 1024 * 1024,
            requests_per_ip_per_second: 20_000,
            logins_per_ip_per_minute: 120,
            codes_per_phone_per_hour: 10,
            sends_per_session_per_second: 200,
            requests_per_session_per_second: 1000,
            // 10,000 parts of 512 KiB is 5 GiB/s: far above what one session moves, far below
            // what would let a session flood a shard with tiny reads.
            media_requests_per_session_per_second: 10_000,
        }
    }
}

impl GatewayConfig {
    pub fn new(listen: SocketAddr, code_sender: CodeSender) -> GatewayConfig {
        GatewayConfig { listen, code_sender, limits: GatewayLimits::default(), idle_timeout: Duration::from_secs(300) }
    }

    /// Refuses settings that cannot work, and a fixed login code on a non-loopback address.
    pub fn validate(&self) -> Result<(), crate::GatewayError> {
        use crate::GatewayError::Config;
        if matches!(self.code_sender, CodeSender::Fixed(_)) && !self.listen.ip().is_loopback() {
            return Err(Config(format!(
                "the fixed: code sender accepts one code for every phone and is for development and \
                 benchmarks only: refusing it on the non-loopback address {}",
                self.listen
            )));
        }
        let limits = &self.limits;
        let positive = [
            ("connections_per_ip_max", u64::from(limits.connections_per_ip_max)),
            ("connections_per_shard_max", limits.connections_per_shard_max as u64),
            ("request_bytes_per_shard_max", limits.request_bytes_per_shard_max),
            ("requests_per_ip_per_second", u64::from(limits.requests_per_ip_per_second)),
            ("logins_per_ip_per_minute", u64::from(limits.logins_per_ip_per_minute)),
            ("codes_per_phone_per_hour", u64::from(limits.codes_per_phone_per_hour)),
            ("sends_per_session_per_second", u64::from(limits.sends_per_session_per_second)),
            ("requests_per_session_per_second", u64::from(limits.requests_per_session_per_second)),
            ("media_requests_per_session_per_second", u64::from(limits.media_requests_per_session_per_second)),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(Config(format!("{name} must be at least 1")));
        }
        if limits.request_bytes_per_shard_max < ferrogram_net::limits::FRAME_MAX as u64 {
            return Err(Config("request_bytes_per_shard_max must hold at least one maximal frame".into()));
        }
        if limits.outbound_bytes_per_shard_max < OUTBOUND_BYTES_PER_CONNECTION_MAX as u64 {
            return Err(Config("outbound_bytes_per_shard_max must hold at least one connection's queue".into()));
        }
        if self.idle_timeout < Duration::from_secs(1) {
            return Err(Config("idle_timeout must be at least one second".into()));
        }
        Ok(())
    }
}
