//! APNs provider tokens: an ES256-signed JWT (`{"alg":"ES256","kid":KEY_ID}` and
//! `{"iss":TEAM_ID,"iat":SECONDS}`) made with the `.p8` key Apple issues, renewed every
//! `APNS_TOKEN_REFRESH_AFTER`; or a token made elsewhere and renewed by the host.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey as _;

use super::Credentials;
use crate::push::config::{ApnsAuth, APNS_TOKEN_REFRESH_AFTER};
use crate::push::PushError;

pub(crate) enum ProviderTokens {
    Signed { key: Box<SigningKey>, team_id: String, key_id: String, current: Mutex<Option<(Arc<str>, Instant)>> },
    Given(Arc<Credentials>),
}

impl ProviderTokens {
    pub fn new(auth: &ApnsAuth, credentials: Arc<Credentials>) -> Result<ProviderTokens, PushError> {
        match auth {
            ApnsAuth::SigningKey { team_id, key_id, private_key_pem } => {
                let key = SigningKey::from_pkcs8_pem(private_key_pem).map_err(|error| {
                    PushError::Config(format!("the APNs signing key is not a P-256 PKCS#8 key: {error}"))
                })?;
                Ok(ProviderTokens::Signed {
                    key: Box::new(key),
                    team_id: team_id.clone(),
                    key_id: key_id.clone(),
                    current: Mutex::new(None),
                })
            }
            ApnsAuth::ProviderToken(token) => {
                Credentials::write(&credentials.apns_provider_token, token.clone());
                Ok(ProviderTokens::Given(credentials))
            }
        }
    }

    /// The token to send now.
    pub fn current(&self, now_unix_ms: u64) -> Arc<str> {
        match self {
            ProviderTokens::Given(credentials) => Credentials::read(&credentials.apns_provider_token),
            ProviderTokens::Signed { key, team_id, key_id, current } => {
                let mut current = current.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                if let Some((token, made)) = current.as_ref() {
                    if made.elapsed() < APNS_TOKEN_REFRESH_AFTER {
                        return token.clone();
                    }
                }
                let token: Arc<str> = sign(key, team_id, key_id, now_unix_ms / 1000).into();
                *current = Some((token.clone(), Instant::now()));
                token
            }
        }
    }

    /// APNs said the token expired: make a new one for the next request.
    pub fn expired(&self) {
        if let ProviderTokens::Signed { current, .. } = self {
            *current.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
        }
    }
}

/// The compact JWS `header.claims.signature`, base64url without padding; the signature is
/// ECDSA P-256 over SHA-256 as the 64-byte `r || s` (RFC 7518 §3.4).
pub(crate) fn sign(key: &SigningKey, team_id: &str, key_id: &str, issued_at_s: u64) -> String {
    let header = serde_json::json!({ "alg": "ES256", "kid": key_id }).to_string();
    let claims = serde_json::json!({ "iss": team_id, "iat": issued_at_s }).to_string();
    let mut token = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let signature: Signature = key.sign(token.as_bytes());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
    token
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier as _;
    use p256::ecdsa::VerifyingKey;
    use p256::pkcs8::{EncodePrivateKey as _, LineEnding};

    // A provider token is a JWT with Apple's header and claims whose ES256 signature verifies
    // with the key's public half; it is reused until it is due for renewal or reported expired.
    #[test]
    fn provider_tokens_are_signed_jwts() {
        let key = SigningKey::from_slice(&[7; 32]).unwrap();
        let pem = key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string();
        let auth =
            ApnsAuth::SigningKey { team_id: "TEAM123456".into(), key_id: "KEY1234567".into(), private_key_pem: pem };
        let tokens = ProviderTokens::new(&auth, Arc::default()).unwrap();
        let token = tokens.current(1_700_000_000_123);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "ES256", "kid": "KEY1234567"}));
        assert_eq!(claims, serde_json::json!({"iss": "TEAM123456", "iat": 1_700_000_000u64}));
        let signature = Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
        let signed = format!("{}.{}", parts[0], parts[1]);
        VerifyingKey::from(&key).verify(signed.as_bytes(), &signature).unwrap();
        assert_eq!(tokens.current(1_700_000_100_000), token, "reused while fresh");
        tokens.expired();
        assert_ne!(tokens.current(1_700_000_100_000), token, "renewed once reported expired");
    }
}
