//! The push dispatcher's configuration, its limits (every queue, table, retry and timeout is
//! bounded) and the providers' settings.

use std::time::Duration;

use super::PushError;

/// Characters of a message text kept for a preview (and of a sender name), so a payload stays
/// well within APNs' and FCM's 4 KiB.
pub const PREVIEW_CHARS_MAX: usize = 256;
pub const SENDER_NAME_CHARS_MAX: usize = 64;
/// Devices of one user a push goes to (the host limits registrations; this bounds the rest).
pub const DEVICES_PER_PUSH_MAX: usize = 64;
/// Bytes of a device token; anything longer is reported invalid rather than sent.
pub const DEVICE_TOKEN_BYTES_MAX: usize = 4096;
/// Chat-level jobs being expanded at once (each holds one blocking worker thread).
pub const EXPANSIONS_IN_PROGRESS_MAX: usize = 2;
/// Recipients an expansion may have handed over and the dispatcher not yet taken.
pub const EXPANSION_QUEUE_MAX: usize = 1024;
/// Inputs taken from the channel per turn of the dispatcher's loop, so finished requests and
/// timers are not starved by a flood of jobs.
pub const INTAKE_PER_TURN_MAX: usize = 4096;
/// Reports the dispatcher holds when the host is slow to take them; past this it stops taking
/// new jobs until the host catches up.
pub const REPORTS_HELD_MAX: usize = 65_536;
/// Ids of finished jobs remembered, so a job fed again before the host applied its report is
/// recognised; and read marks remembered, so a job for a message already read is dropped.
pub const FINISHED_JOBS_REMEMBERED_MAX: usize = 262_144;
pub const READ_MARKS_REMEMBERED_MAX: usize = 65_536;
/// Bytes of a provider's answer read (error bodies are small JSON documents).
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024;
/// How long the dispatcher waits before offering reports again to a full reports channel.
pub const REPORTS_RETRY_INTERVAL: Duration = Duration::from_millis(10);
/// How long shutdown waits for blocking expansion threads before leaving them behind.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// APNs provider tokens are refreshed after this: Apple refuses one older than an hour, and
/// one renewed more often than every 20 minutes (`TooManyProviderTokenUpdates`).
pub const APNS_TOKEN_REFRESH_AFTER: Duration = Duration::from_secs(45 * 60);

/// Hard ceilings for the configurable values, checked by [`PushConfig::validate`].
pub const COALESCING_WINDOW_MAX: Duration = Duration::from_secs(60);
pub const ATTEMPTS_MAX: u32 = 32;
pub const RETRY_DELAY_MAX: Duration = Duration::from_secs(3600);
pub const REQUESTS_IN_FLIGHT_MAX: usize = 4096;
pub const QUEUE_MAX: usize = 1 << 20;
pub const PENDING_PUSHES_MAX: usize = 1 << 22;
pub const JOBS_LIVE_MAX: usize = 1 << 24;
pub const EXPIRATION_MAX: Duration = Duration::from_secs(28 * 24 * 3600);

const _: () = assert!(EXPANSION_QUEUE_MAX <= INTAKE_PER_TURN_MAX);
const _: () = assert!(DEVICES_PER_PUSH_MAX <= u16::MAX as usize);
const _: () = assert!(FINISHED_JOBS_REMEMBERED_MAX >= REPORTS_HELD_MAX);
const _: () = assert!(APNS_TOKEN_REFRESH_AFTER.as_secs() > 20 * 60 && APNS_TOKEN_REFRESH_AFTER.as_secs() < 60 * 60);

/// Everything the dispatcher needs. [`PushConfig::default`] has sensible bounds and no provider.
#[derive(Clone, Debug)]
pub struct PushConfig {
    /// Messages of one (user, chat) arriving within this window of the first one become one
    /// push carrying their count and the latest preview. The first message of a quiet chat is
    /// therefore pushed one window late.
    pub coalescing_window: Duration,
    /// Attempts per push and device (and per chat-level expansion) before dead-lettering.
    pub attempts_max: u32,
    /// Exponential backoff between attempts: the first retry waits about `retry_delay_min`,
    /// each next one twice as long, never more than `retry_delay_max`; half of each delay is
    /// random (jitter), so retries of many pushes spread out.
    pub retry_delay_min: Duration,
    pub retry_delay_max: Duration,
    /// Whole request (connect, send, answer) and connect timeouts.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Requests to providers in flight at once (HTTP/2 streams or HTTP/1.1 connections).
    pub requests_in_flight_max: usize,
    /// Capacity of the input channel from the shards and of the reports channel back.
    pub input_queue_max: usize,
    pub reports_queue_max: usize,
    /// (user, chat) pairs with a push collecting, waiting or being delivered. At the limit the
    /// dispatcher stops taking input (the shards' `try_send` then fails and the jobs wait in
    /// their outboxes).
    pub pending_pushes_max: usize,
    /// Jobs accepted and not yet finished.
    pub jobs_live_max: usize,
    /// How long a provider should keep trying to reach a device (APNs `apns-expiration`, FCM
    /// `ttl`).
    pub expiration: Duration,
    /// Use `HTTP_PROXY`/`HTTPS_PROXY` from the environment (tests turn it off).
    pub proxy_from_environment: bool,
    pub apns: Option<ApnsConfig>,
    pub fcm: Option<FcmConfig>,
    /// The relay: pushes to `webpush` and `webhook` devices, and to `apns`/`fcm` devices when
    /// that provider is not configured.
    pub webhook: Option<WebhookConfig>,
}

impl Default for PushConfig {
    fn default() -> PushConfig {
        PushConfig {
            coalescing_window: Duration::from_secs(2),
            attempts_max: 8,
            retry_delay_min: Duration::from_secs(1),
            retry_delay_max: Duration::from_secs(300),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            requests_in_flight_max: 256,
            input_queue_max: 65_536,
            reports_queue_max: 65_536,
            pending_pushes_max: 1_000_000,
            jobs_live_max: 4_000_000,
            expiration: Duration::from_secs(24 * 3600),
            proxy_from_environment: true,
            apns: None,
            fcm: None,
            webhook: None,
        }
    }
}

/// Apple Push Notification service.
#[derive(Clone, Debug)]
pub struct ApnsConfig {
    /// Base URLs (scheme, host, port) for production and development (`app_sandbox`) apps:
    /// `https://api.push.apple.com` and `https://api.sandbox.push.apple.com`. An `http://`
    /// URL (tests) is spoken to as cleartext HTTP/2 with prior knowledge (h2c).
    pub endpoint_production: String,
    pub endpoint_sandbox: String,
    /// `apns-topic`: the app's bundle id.
    pub topic: String,
    pub auth: ApnsAuth,
    pub transport: ApnsTransport,
}

impl ApnsConfig {
    /// Apple's endpoints for `topic`, signing provider tokens with `auth`.
    pub fn apple(topic: String, auth: ApnsAuth) -> ApnsConfig {
        ApnsConfig {
            endpoint_production: "https://api.push.apple.com".into(),
            endpoint_sandbox: "https://api.sandbox.push.apple.com".into(),
            topic,
            auth,
            transport: ApnsTransport::Http2,
        }
    }
}

/// How the APNs provider authenticates.
#[derive(Clone)]
pub enum ApnsAuth {
    /// Token-based authentication: the dispatcher signs an ES256 JWT (`kid` = `key_id`,
    /// `iss` = `team_id`) with the `.p8` key Apple issued (PKCS#8 PEM) and renews it every
    /// `APNS_TOKEN_REFRESH_AFTER`.
    SigningKey { team_id: String, key_id: String, private_key_pem: String },
    /// A provider token made elsewhere; the host renews it with
    /// `PushDispatcher::set_apns_provider_token` before it expires (an hour).
    ProviderToken(String),
}

impl std::fmt::Debug for ApnsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApnsAuth::SigningKey { team_id, key_id, .. } => {
                f.debug_struct("SigningKey").field("team_id", team_id).field("key_id", key_id).finish_non_exhaustive()
            }
            ApnsAuth::ProviderToken(_) => f.write_str("ProviderToken(..)"),
        }
    }
}

/// The HTTP version spoken to APNs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApnsTransport {
    /// HTTP/2 only, as Apple requires: negotiated by ALPN over TLS, or with prior knowledge
    /// (h2c) for an `http://` endpoint.
    Http2,
    /// HTTP/1.1: Apple refuses it; for tests against a plain HTTP/1.1 receiver only.
    Http1ForTests,
}

/// Firebase Cloud Messaging, HTTP v1 API.
#[derive(Clone)]
pub struct FcmConfig {
    /// Base URL: `https://fcm.googleapis.com`.
    pub endpoint: String,
    pub project_id: String,
    /// An OAuth 2.0 access token for the project's service account (scope
    /// `https://www.googleapis.com/auth/firebase.messaging`). Tokens last an hour: the host
    /// renews it with `PushDispatcher::set_fcm_access_token`.
    pub access_token: String,
}

impl std::fmt::Debug for FcmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmConfig")
            .field("endpoint", &self.endpoint)
            .field("project_id", &self.project_id)
            .finish_non_exhaustive()
    }
}

/// The push relay: gets every push as signed JSON.
#[derive(Clone)]
pub struct WebhookConfig {
    pub url: String,
    /// The key of the `X-Ferrogram-Signature: sha256=<hex HMAC-SHA256 of the body>` header.
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig").field("url", &self.url).finish_non_exhaustive()
    }
}

impl PushConfig {
    /// Checks every value against its ceiling and every URL for an `http`/`https` scheme.
    pub fn validate(&self) -> Result<(), PushError> {
        let check = |ok: bool, what: &str| if ok { Ok(()) } else { Err(PushError::Config(what.to_owned())) };
        check(self.coalescing_window <= COALESCING_WINDOW_MAX, "coalescing_window is over a minute")?;
        check((1..=ATTEMPTS_MAX).contains(&self.attempts_max), "attempts_max must be 1..=32")?;
        check(!self.retry_delay_min.is_zero(), "retry_delay_min must not be zero")?;
        check(self.retry_delay_min <= self.retry_delay_max, "retry_delay_min is over retry_delay_max")?;
        check(self.retry_delay_max <= RETRY_DELAY_MAX, "retry_delay_max is over an hour")?;
        check(!self.request_timeout.is_zero() && !self.connect_timeout.is_zero(), "timeouts must not be zero")?;
        check(
            (1..=REQUESTS_IN_FLIGHT_MAX).contains(&self.requests_in_flight_max),
            "requests_in_flight_max must be 1..=4096",
        )?;
        check((1..=QUEUE_MAX).contains(&self.input_queue_max), "input_queue_max must be 1..=2^20")?;
        check((1..=QUEUE_MAX).contains(&self.reports_queue_max), "reports_queue_max must be 1..=2^20")?;
        check((1..=PENDING_PUSHES_MAX).contains(&self.pending_pushes_max), "pending_pushes_max must be 1..=2^22")?;
        check((1..=JOBS_LIVE_MAX).contains(&self.jobs_live_max), "jobs_live_max must be 1..=2^24")?;
        check(self.expiration <= EXPIRATION_MAX, "expiration is over 28 days")?;
        if let Some(apns) = &self.apns {
            check_url(&apns.endpoint_production, "apns.endpoint_production")?;
            check_url(&apns.endpoint_sandbox, "apns.endpoint_sandbox")?;
            check(!apns.topic.is_empty(), "apns.topic is empty")?;
        }
        if let Some(fcm) = &self.fcm {
            check_url(&fcm.endpoint, "fcm.endpoint")?;
            let project_ok = !fcm.project_id.is_empty()
                && fcm.project_id.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-');
            check(project_ok, "fcm.project_id must be letters, digits and dashes")?;
        }
        if let Some(webhook) = &self.webhook {
            check_url(&webhook.url, "webhook.url")?;
            check(!webhook.secret.is_empty(), "webhook.secret is empty")?;
        }
        Ok(())
    }
}

fn check_url(url: &str, what: &str) -> Result<(), PushError> {
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => Ok(()),
        _ => Err(PushError::Config(format!("{what} is not an http(s) URL: {url}"))),
    }
}
