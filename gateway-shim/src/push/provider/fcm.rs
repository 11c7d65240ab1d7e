//! Firebase Cloud Messaging, HTTP v1 API: `POST /v1/projects/<project>/messages:send` with a
//! bearer access token and `{"message":{"token","notification","data","android","apns"}}`.

use std::sync::Arc;
use std::time::Duration;

use super::{classify_common, id_string, Answer, Credentials, HttpRequest};
use crate::push::config::FcmConfig;
use crate::push::core::Outcome;
use crate::push::job::Device;
use crate::push::notification::Notification;

pub(crate) struct Fcm {
    url: String,
    expiration: Duration,
    credentials: Arc<Credentials>,
}

impl Fcm {
    pub fn new(config: &FcmConfig, expiration: Duration, credentials: Arc<Credentials>) -> Fcm {
        Credentials::write(&credentials.fcm_access_token, config.access_token.clone());
        let endpoint = config.endpoint.trim_end_matches('/');
        Fcm { url: format!("{endpoint}/v1/projects/{}/messages:send", config.project_id), expiration, credentials }
    }

    pub fn request(&self, device: &Device, notification: &Notification) -> HttpRequest {
        let token = Credentials::read(&self.credentials.fcm_access_token);
        let headers = vec![
            ("authorization", format!("Bearer {token}")),
            ("content-type", "application/json; charset=UTF-8".to_owned()),
        ];
        HttpRequest { url: self.url.clone(), headers, body: payload(device, notification, self.expiration) }
    }
}

/// The v1 `Message`: a notification (title only with previews), string-valued data for the
/// app, Android's collapse key, tag and badge count, and the APNs overrides for iOS apps that
/// use FCM.
pub(crate) fn payload(device: &Device, notification: &Notification, expiration: Duration) -> Vec<u8> {
    let collapse = notification.collapse_id();
    let mut shown = serde_json::Map::new();
    if let Some(title) = notification.title() {
        shown.insert("title".into(), title.into());
    }
    shown.insert("body".into(), notification.body().into_owned().into());
    serde_json::json!({
        "message": {
            "token": device.token,
            "notification": shown,
            "data": {
                "chat": id_string(notification.chat.0),
                "message": id_string(notification.message.0),
                "count": notification.count.to_string(),
                "badge": notification.badge.to_string(),
                "date": notification.date.0.to_string(),
            },
            "android": {
                "priority": "high",
                "ttl": format!("{}s", expiration.as_secs()),
                "collapse_key": collapse,
                "notification": { "tag": collapse, "notification_count": notification.badge },
            },
            "apns": {
                "headers": { "apns-priority": "10", "apns-collapse-id": collapse },
                "payload": { "aps": { "badge": notification.badge, "sound": "default", "thread-id": collapse } },
            },
        }
    })
    .to_string()
    .into_bytes()
}

/// FCM's errors: `UNREGISTERED` (404) and `SENDER_ID_MISMATCH` mean the token is gone;
/// `UNAUTHENTICATED` (401, an access token past its hour) is retried while the host renews it;
/// `INVALID_ARGUMENT` and the rest are final.
pub(crate) fn classify(answer: &Answer) -> Outcome {
    if let Some(outcome) = classify_common(answer) {
        return outcome;
    }
    let body = serde_json::from_slice::<serde_json::Value>(&answer.body).unwrap_or_default();
    let error_code = body["error"]["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|detail| detail["errorCode"].as_str())
        .or_else(|| body["error"]["status"].as_str())
        .unwrap_or_default();
    match (answer.status, error_code) {
        (404, _) | (_, "UNREGISTERED" | "SENDER_ID_MISMATCH") => Outcome::InvalidToken,
        (401, _) | (_, "UNAUTHENTICATED") => Outcome::Retry { after: answer.retry_after },
        _ => {
            tracing::warn!(status = answer.status, error_code, "FCM refused a push");
            Outcome::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // FCM's documented error bodies map to invalid token, retry and refusal.
    #[test]
    fn answers_are_classified() {
        let answer = |status: u16, code: &str| Answer {
            status,
            retry_after: Some(Duration::from_secs(3)),
            body: serde_json::json!({"error": {"code": status, "status": "X", "details": [
                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}
            ]}})
            .to_string()
            .into_bytes(),
        };
        assert_eq!(classify(&answer(200, "")), Outcome::Delivered);
        assert_eq!(classify(&answer(404, "UNREGISTERED")), Outcome::InvalidToken);
        assert_eq!(classify(&answer(403, "SENDER_ID_MISMATCH")), Outcome::InvalidToken);
        assert_eq!(classify(&answer(400, "INVALID_ARGUMENT")), Outcome::Refused);
        assert_eq!(classify(&answer(401, "UNAUTHENTICATED")), Outcome::Retry { after: Some(Duration::from_secs(3)) });
        assert_eq!(classify(&answer(429, "QUOTA_EXCEEDED")), Outcome::Retry { after: Some(Duration::from_secs(3)) });
    }
}
