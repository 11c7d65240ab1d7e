//! Apple Push Notification service: `POST /3/device/<token>` over HTTP/2 with the `apns-*`
//! headers, a bearer provider token and an `aps` JSON payload (Apple's "Sending notification
//! requests to APNs").

use std::sync::Arc;
use std::time::Duration;

use super::apns_token::ProviderTokens;
use super::{classify_common, id_string, is_hex_token, Answer, Credentials, HttpRequest};
use crate::push::config::ApnsConfig;
use crate::push::core::Outcome;
use crate::push::job::Device;
use crate::push::notification::Notification;
use crate::push::PushError;

pub(crate) struct Apns {
    endpoint_production: String,
    endpoint_sandbox: String,
    topic: String,
    expiration: Duration,
    tokens: ProviderTokens,
}

impl Apns {
    pub fn new(config: &ApnsConfig, expiration: Duration, credentials: Arc<Credentials>) -> Result<Apns, PushError> {
        Ok(Apns {
            endpoint_production: config.endpoint_production.trim_end_matches('/').to_owned(),
            endpoint_sandbox: config.endpoint_sandbox.trim_end_matches('/').to_owned(),
            topic: config.topic.clone(),
            expiration,
            tokens: ProviderTokens::new(&config.auth, credentials)?,
        })
    }

    /// The request for one device. A token that is not hexadecimal can never be valid (and
    /// must not reach the URL path): it is reported invalid without a request.
    pub fn request(
        &self,
        device: &Device,
        notification: &Notification,
        now_unix_ms: u64,
    ) -> Result<HttpRequest, Outcome> {
        if !is_hex_token(device) {
            return Err(Outcome::InvalidToken);
        }
        let endpoint = if device.app_sandbox { &self.endpoint_sandbox } else { &self.endpoint_production };
        let expiration_s = now_unix_ms / 1000 + self.expiration.as_secs();
        let headers = vec![
            ("authorization", format!("bearer {}", self.tokens.current(now_unix_ms))),
            ("apns-topic", self.topic.clone()),
            ("apns-push-type", "alert".to_owned()),
            ("apns-priority", "10".to_owned()),
            ("apns-expiration", expiration_s.to_string()),
            ("apns-collapse-id", notification.collapse_id()),
            ("content-type", "application/json".to_owned()),
        ];
        Ok(HttpRequest { url: format!("{endpoint}/3/device/{}", device.token), headers, body: payload(notification) })
    }

    /// 410 `Unregistered`, and 400 `BadDeviceToken` or `DeviceTokenNotForTopic`, mean the token
    /// is gone; 403 `ExpiredProviderToken`/`InvalidProviderToken` renews the provider token and
    /// retries; other refusals are final.
    pub fn classify(&self, answer: &Answer) -> Outcome {
        if let Some(outcome) = classify_common(answer) {
            return outcome;
        }
        let reason = serde_json::from_slice::<serde_json::Value>(&answer.body)
            .ok()
            .and_then(|body| body.get("reason").and_then(|reason| reason.as_str()).map(str::to_owned))
            .unwrap_or_default();
        match (answer.status, reason.as_str()) {
            (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic") => Outcome::InvalidToken,
            (403, "ExpiredProviderToken" | "InvalidProviderToken") => {
                self.tokens.expired();
                Outcome::Retry { after: None }
            }
            _ => {
                tracing::warn!(status = answer.status, reason, "APNs refused a push");
                Outcome::Refused
            }
        }
    }
}

/// `{"aps":{"alert":{"title","body"},"badge","sound","thread-id"},"chat","message","count"}`;
/// without preview the alert has only the generic body.
pub(crate) fn payload(notification: &Notification) -> Vec<u8> {
    let mut alert = serde_json::Map::new();
    if let Some(title) = notification.title() {
        alert.insert("title".into(), title.into());
    }
    alert.insert("body".into(), notification.body().into_owned().into());
    serde_json::json!({
        "aps": {
            "alert": alert,
            "badge": notification.badge,
            "sound": "default",
            "thread-id": notification.collapse_id(),
        },
        "chat": id_string(notification.chat.0),
        "message": id_string(notification.message.0),
        "count": notification.count,
    })
    .to_string()
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::config::ApnsAuth;
    use crate::push::job::DeviceKind;
    use crate::push::notification::Preview;
    use engine::messaging::{ChatId, MessageId, UnixMs, UserId};

    fn apns() -> Apns {
        let config = ApnsConfig {
            endpoint_production: "https://api.push.apple.com/".into(),
            endpoint_sandbox: "https://api.sandbox.push.apple.com".into(),
            topic: "org.example.app".into(),
            auth: ApnsAuth::ProviderToken("TOKEN".into()),
            transport: crate::push::config::ApnsTransport::Http2,
        };
        Apns::new(&config, Duration::from_secs(3600), Arc::default()).unwrap()
    }

    fn notification(preview: bool) -> Notification {
        Notification {
            user: UserId(1),
            chat: ChatId(42),
            message: MessageId(7),
            count: 2,
            badge: 5,
            date: UnixMs(0),
            preview: preview.then(|| Preview { sender_name: "Ann".into(), text: "hi \"there\"".into() }),
        }
    }

    fn device(token: &str, sandbox: bool) -> Device {
        Device { kind: DeviceKind::Apns, token: token.into(), app_sandbox: sandbox, no_muted: false }
    }

    // The request goes to the sandbox or production host with Apple's headers, and the body
    // carries the text only when previews are on.
    #[test]
    fn requests_follow_apples_format() {
        let apns = apns();
        let request = apns.request(&device("abcdef01", true), &notification(false), 1_000_000).unwrap();
        assert_eq!(request.url, "https://api.sandbox.push.apple.com/3/device/abcdef01");
        let header = |name: &str| request.headers.iter().find(|(key, _)| *key == name).map(|(_, value)| value.as_str());
        assert_eq!(header("authorization"), Some("bearer TOKEN"));
        assert_eq!(header("apns-expiration"), Some("4600"));
        assert_eq!(header("apns-push-type"), Some("alert"));
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["aps"]["alert"], serde_json::json!({"body": "2 new messages"}));
        assert_eq!(body["aps"]["badge"], 5);
        let request = apns.request(&device("abcdef01", false), &notification(true), 1_000_000).unwrap();
        assert_eq!(request.url, "https://api.push.apple.com/3/device/abcdef01");
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["aps"]["alert"], serde_json::json!({"title": "Ann", "body": "hi \"there\""}));
        assert_eq!(apns.request(&device("../../x", false), &notification(true), 0), Err(Outcome::InvalidToken));
    }

    // Apple's answers map to delivered, invalid token, retry and refusal.
    #[test]
    fn answers_are_classified() {
        let apns = apns();
        let answer = |status, reason: &str| Answer {
            status,
            retry_after: None,
            body: format!("{{\"reason\":\"{reason}\"}}").into_bytes(),
        };
        assert_eq!(apns.classify(&answer(200, "")), Outcome::Delivered);
        assert_eq!(apns.classify(&answer(410, "Unregistered")), Outcome::InvalidToken);
        assert_eq!(apns.classify(&answer(400, "BadDeviceToken")), Outcome::InvalidToken);
        assert_eq!(apns.classify(&answer(400, "PayloadEmpty")), Outcome::Refused);
        assert_eq!(apns.classify(&answer(403, "ExpiredProviderToken")), Outcome::Retry { after: None });
        assert_eq!(apns.classify(&answer(429, "TooManyRequests")), Outcome::Retry { after: None });
        assert_eq!(apns.classify(&answer(503, "ServiceUnavailable")), Outcome::Retry { after: None });
    }
}
