//! The push relay: every push as one JSON document POSTed to the configured URL, signed with
//! `X-Ferrogram-Signature: sha256=<hex HMAC-SHA256 of the body>`. The body carries `sent_at`
//! (Unix ms) under the signature, so a relay can refuse replays of old requests.
//!
//! ```json
//! {"kind":"webpush","token":"…","app_sandbox":false,"user":"1","chat":"2","message":"3",
//!  "count":1,"badge":4,"title":"Ann","body":"hi","text":"hi","date":…,"sent_at":…,
//!  "collapse_id":"chat-2"}
//! ```
//! `title` and `text` are present only when the user allows previews; `body` is then the text,
//! otherwise a generic "New message" / "N new messages".

use std::fmt::Write as _;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{classify_common, id_string, Answer, HttpRequest};
use crate::push::config::WebhookConfig;
use crate::push::core::Outcome;
use crate::push::job::Device;
use crate::push::notification::Notification;

/// The signature header's name.
pub const SIGNATURE_HEADER: &str = "x-ferrogram-signature";

pub(crate) struct Webhook {
    url: String,
    secret: Vec<u8>,
}

impl Webhook {
    pub fn new(config: &WebhookConfig) -> Webhook {
        Webhook { url: config.url.clone(), secret: config.secret.clone() }
    }

    pub fn request(&self, device: &Device, notification: &Notification, now_unix_ms: u64) -> HttpRequest {
        let body = payload(device, notification, now_unix_ms);
        let headers = vec![
            ("content-type", "application/json".to_owned()),
            (SIGNATURE_HEADER, format!("sha256={}", signature_hex(&self.secret, &body))),
        ];
        HttpRequest { url: self.url.clone(), headers, body }
    }
}

pub(crate) fn payload(device: &Device, notification: &Notification, now_unix_ms: u64) -> Vec<u8> {
    let mut document = serde_json::json!({
        "kind": device.kind.name(),
        "token": device.token,
        "app_sandbox": device.app_sandbox,
        "user": id_string(notification.user.0),
        "chat": id_string(notification.chat.0),
        "message": id_string(notification.message.0),
        "count": notification.count,
        "badge": notification.badge,
        "body": notification.body(),
        "date": notification.date.0,
        "sent_at": now_unix_ms,
        "collapse_id": notification.collapse_id(),
    });
    if let (Some(preview), Some(fields)) = (&notification.preview, document.as_object_mut()) {
        fields.insert("title".into(), serde_json::Value::from(&*preview.sender_name));
        fields.insert("text".into(), serde_json::Value::from(&*preview.text));
    }
    document.to_string().into_bytes()
}

/// Lowercase hex of HMAC-SHA256(secret, body).
pub fn signature_hex(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// 410 Gone means the relay knows the token is dead; other refusals (4xx) are final.
pub(crate) fn classify(answer: &Answer) -> Outcome {
    match classify_common(answer) {
        Some(outcome) => outcome,
        None if answer.status == 410 => Outcome::InvalidToken,
        None => {
            tracing::warn!(status = answer.status, "the push relay refused a push");
            Outcome::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The signature is RFC 4231's HMAC-SHA256 (test case 2), in lowercase hex.
    #[test]
    fn signatures_match_the_rfc_vector() {
        assert_eq!(
            signature_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
