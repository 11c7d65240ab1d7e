//! Login tokens: the authorization id (which carries the user's vshard, so the token routes
//! itself) followed by 32 random secret bytes. Only a SHA-256 hash of the secret is stored;
//! the engine compares hashes in constant time.

use engine::messaging::AuthorizationId;
use ferrogram_net::limits::{TOKEN_BYTES, TOKEN_SECRET_BYTES};
use sha2::{Digest, Sha256};

/// A token as the client holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub authorization: AuthorizationId,
    secret: [u8; TOKEN_SECRET_BYTES],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Token").field("authorization", &self.authorization).finish_non_exhaustive()
    }
}

/// A fresh secret and the hash to store for it.
pub fn new_secret() -> Result<([u8; TOKEN_SECRET_BYTES], [u8; 32]), getrandom::Error> {
    let mut secret = [0; TOKEN_SECRET_BYTES];
    getrandom::fill(&mut secret)?;
    Ok((secret, hash_secret(&secret)))
}

pub fn hash_secret(secret: &[u8; TOKEN_SECRET_BYTES]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

impl Token {
    pub fn new(authorization: AuthorizationId, secret: [u8; TOKEN_SECRET_BYTES]) -> Token {
        Token { authorization, secret }
    }

    /// Parses the bytes a client sent; `None` if they cannot be a token.
    pub fn parse(bytes: &[u8]) -> Option<Token> {
        if bytes.len() != TOKEN_BYTES {
            return None;
        }
        let (id, secret) = bytes.split_at(8);
        Some(Token {
            authorization: AuthorizationId(u64::from_le_bytes(id.try_into().ok()?)),
            secret: secret.try_into().ok()?,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(TOKEN_BYTES);
        bytes.extend_from_slice(&self.authorization.0.to_le_bytes());
        bytes.extend_from_slice(&self.secret);
        bytes
    }

    pub fn secret_hash(&self) -> [u8; 32] {
        hash_secret(&self.secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A token round-trips through its bytes, other lengths are refused, and different secrets
    // hash differently.
    #[test]
    fn tokens_round_trip() {
        let (secret, hash) = new_secret().unwrap();
        let token = Token::new(AuthorizationId(77 << 12 | 3), secret);
        let parsed = Token::parse(&token.to_bytes()).unwrap();
        assert_eq!(parsed, token);
        assert_eq!(parsed.secret_hash(), hash);
        assert!(Token::parse(&token.to_bytes()[..39]).is_none());
        assert!(Token::parse(&[0; 41]).is_none());
        let (other, _) = new_secret().unwrap();
        assert_ne!(hash_secret(&other), hash);
        assert!(!format!("{token:?}").contains(&format!("{:?}", secret[0..4].to_vec())));
    }
}
