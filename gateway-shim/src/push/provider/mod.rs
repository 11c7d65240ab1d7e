//! The providers: each turns a [`Notification`] for one device into its documented HTTP
//! request and classifies the answer into an [`Outcome`]; this file routes devices to
//! providers and performs the requests with `reqwest`.
//!
//! Building requests and classifying answers are plain functions (no I/O), so their formats
//! are unit-tested here and checked against a real receiver in `tests/push_provider_formats.rs`.

pub(crate) mod apns;
mod apns_token;
pub(crate) mod fcm;
pub(crate) mod webhook;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::config::{PushConfig, DEVICE_TOKEN_BYTES_MAX, RESPONSE_BYTES_MAX};
use super::core::{Outcome, Routable, SendOrder};
use super::job::{Device, DeviceKind};
use super::notification::Notification;
use super::PushError;

/// One request, as a provider builds it: always a POST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HttpRequest {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// A provider's answer, cut to `RESPONSE_BYTES_MAX`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

/// Credentials the host may renew while the dispatcher runs.
#[derive(Debug, Default)]
pub(crate) struct Credentials {
    pub apns_provider_token: RwLock<Arc<str>>,
    pub fcm_access_token: RwLock<Arc<str>>,
}

impl Credentials {
    pub fn read(slot: &RwLock<Arc<str>>) -> Arc<str> {
        // A writer that panicked left a whole `Arc` behind: the value is still usable.
        match slot.read() {
            Ok(value) => value.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn write(slot: &RwLock<Arc<str>>, value: String) {
        match slot.write() {
            Ok(mut guard) => *guard = value.into(),
            Err(poisoned) => *poisoned.into_inner() = value.into(),
        }
    }
}

/// Every configured provider and the HTTP clients they use.
pub(crate) struct Providers {
    apns: Option<(apns::Apns, reqwest::Client)>,
    fcm: Option<fcm::Fcm>,
    webhook: Option<webhook::Webhook>,
    /// HTTP/2 or HTTP/1.1 as the server offers: FCM and the relay.
    client: reqwest::Client,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers")
            .field("apns", &self.apns.is_some())
            .field("fcm", &self.fcm.is_some())
            .field("webhook", &self.webhook.is_some())
            .finish()
    }
}

/// Which HTTP versions a client may speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Versions {
    Http2Only,
    Http1Only,
    Either,
}

impl Providers {
    pub fn new(config: &PushConfig, credentials: Arc<Credentials>) -> Result<Providers, PushError> {
        let apns = match &config.apns {
            None => None,
            Some(apns_config) => {
                let versions = match apns_config.transport {
                    super::config::ApnsTransport::Http2 => Versions::Http2Only,
                    super::config::ApnsTransport::Http1ForTests => Versions::Http1Only,
                };
                let provider = apns::Apns::new(apns_config, config.expiration, credentials.clone())?;
                Some((provider, client(config, versions)?))
            }
        };
        Ok(Providers {
            apns,
            fcm: config.fcm.as_ref().map(|fcm_config| fcm::Fcm::new(fcm_config, config.expiration, credentials)),
            webhook: config.webhook.as_ref().map(webhook::Webhook::new),
            client: client(config, Versions::Either)?,
        })
    }

    pub fn routable(&self) -> Routable {
        Routable { apns: self.apns.is_some(), fcm: self.fcm.is_some(), relay: self.webhook.is_some() }
    }

    /// Performs one push to one device; never fails, only classifies.
    pub async fn send(&self, order: &SendOrder, now_unix_ms: u64) -> Outcome {
        let outcome = self.attempt(order, now_unix_ms).await;
        if outcome != Outcome::Delivered {
            tracing::debug!(attempt = order.attempt, kind = order.device.kind.name(), ?outcome, "push not delivered");
        }
        outcome
    }

    async fn attempt(&self, order: &SendOrder, now_unix_ms: u64) -> Outcome {
        let device = &order.device;
        if device.token.is_empty() || device.token.len() > DEVICE_TOKEN_BYTES_MAX {
            return Outcome::InvalidToken;
        }
        let notification: &Notification = &order.notification;
        match (device.kind, &self.apns, &self.fcm) {
            (DeviceKind::Apns, Some((apns, client)), _) => {
                let request = match apns.request(device, notification, now_unix_ms) {
                    Ok(request) => request,
                    Err(outcome) => return outcome,
                };
                match execute(client, request).await {
                    Ok(answer) => apns.classify(&answer),
                    Err(outcome) => outcome,
                }
            }
            (DeviceKind::Fcm, _, Some(fcm)) => match execute(&self.client, fcm.request(device, notification)).await {
                Ok(answer) => fcm::classify(&answer),
                Err(outcome) => outcome,
            },
            _ => match &self.webhook {
                Some(webhook) => {
                    match execute(&self.client, webhook.request(device, notification, now_unix_ms)).await {
                        Ok(answer) => webhook::classify(&answer),
                        Err(outcome) => outcome,
                    }
                }
                // The core drops devices no provider serves before they get here.
                None => Outcome::Refused,
            },
        }
    }
}

/// Sends `request` and reads the answer. A request that never got an answer (no connection,
/// timeout, reset) is worth retrying.
async fn execute(client: &reqwest::Client, request: HttpRequest) -> Result<Answer, Outcome> {
    let mut builder = client.post(&request.url);
    for (name, value) in request.headers {
        builder = builder.header(name, value);
    }
    let mut response = match builder.body(request.body).send().await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(%error, "push request failed");
            return Err(Outcome::Retry { after: None });
        }
    };
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut body = Vec::new();
    // An answer whose body breaks off is judged by its status.
    while let Ok(Some(chunk)) = response.chunk().await {
        if body.len() + chunk.len() > RESPONSE_BYTES_MAX {
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Answer { status, retry_after, body })
}

/// What every provider does with statuses that mean the same everywhere: success, overload and
/// server trouble. `None` for the provider to decide.
pub(crate) fn classify_common(answer: &Answer) -> Option<Outcome> {
    match answer.status {
        200..=299 => Some(Outcome::Delivered),
        408 | 425 | 429 | 500..=599 => Some(Outcome::Retry { after: answer.retry_after }),
        _ => None,
    }
}

/// An HTTP client with TLS by rustls (ring) and the Mozilla roots, bounded in time and pool.
fn client(config: &PushConfig, versions: Versions) -> Result<reqwest::Client, PushError> {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|error| PushError::Client(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = match versions {
        Versions::Http2Only => vec![b"h2".to_vec()],
        Versions::Http1Only => vec![b"http/1.1".to_vec()],
        Versions::Either => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    };
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(config.request_timeout)
        .connect_timeout(config.connect_timeout)
        .pool_max_idle_per_host(config.requests_in_flight_max)
        .user_agent(concat!("ferrogram-push/", env!("CARGO_PKG_VERSION")));
    builder = match versions {
        Versions::Http2Only => builder
            .http2_prior_knowledge()
            .http2_keep_alive_interval(Some(Duration::from_secs(60)))
            .http2_keep_alive_while_idle(true),
        Versions::Http1Only => builder.http1_only(),
        Versions::Either => builder,
    };
    if !config.proxy_from_environment {
        builder = builder.no_proxy();
    }
    builder.build().map_err(|error| PushError::Client(error.to_string()))
}

/// The JSON string of a decimal id: ids are 64-bit, beyond what JavaScript numbers hold.
pub(crate) fn id_string(id: u64) -> String {
    id.to_string()
}

/// Whether `device` may be put into a URL path as it is (APNs tokens are hexadecimal).
pub(crate) fn is_hex_token(device: &Device) -> bool {
    device.token.bytes().all(|byte| byte.is_ascii_hexdigit())
}
