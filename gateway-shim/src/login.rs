//! Phone login (DESIGN §8): codes from a CSPRNG, stored hashed with an expiry and an attempt
//! limit, handed to a [`CodeSender`].
//!
//! Pending codes live in one map behind a mutex shared by all cores. Login is rare next to
//! messaging (a handful per user per month), so this is off every hot path; it is not durable
//! either: a restart forgets pending codes and the user asks for a new one, as with any SMS.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::config::{LOGIN_CODES_PENDING_MAX, LOGIN_CODE_ATTEMPTS_MAX, LOGIN_CODE_DIGITS, LOGIN_CODE_LIFETIME};

/// Where login codes go.
#[derive(Clone, PartialEq, Eq)]
pub enum CodeSender {
    /// The server log (development).
    Log,
    /// Appended to a file as `phone code` lines (development and tests).
    File(PathBuf),
    /// POSTed as JSON `{"phone": ..., "code": ...}` to an SMS relay.
    Webhook(String),
    /// Every login accepts this code and none is sent. Development and benchmarks only: the
    /// gateway refuses it unless it listens on loopback, and warns about it.
    Fixed(String),
}

impl fmt::Debug for CodeSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodeSender::Log => write!(f, "log"),
            CodeSender::File(path) => write!(f, "file:{}", path.display()),
            CodeSender::Webhook(url) => write!(f, "webhook:{url}"),
            CodeSender::Fixed(_) => write!(f, "fixed:<code>"),
        }
    }
}

impl FromStr for CodeSender {
    type Err = String;

    fn from_str(text: &str) -> Result<CodeSender, String> {
        if text == "log" {
            return Ok(CodeSender::Log);
        }
        if let Some(path) = text.strip_prefix("file:").filter(|path| !path.is_empty()) {
            return Ok(CodeSender::File(path.into()));
        }
        if let Some(url) = text.strip_prefix("webhook:") {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("webhook URL {url:?} must start with http:// or https://"));
            }
            return Ok(CodeSender::Webhook(url.into()));
        }
        if let Some(code) = text.strip_prefix("fixed:") {
            if !(4..=8).contains(&code.len()) || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err("a fixed code is 4 to 8 digits".into());
            }
            return Ok(CodeSender::Fixed(code.into()));
        }
        Err(format!("unknown code sender {text:?}: expected log, file:PATH, webhook:URL or fixed:CODE"))
    }
}

/// Why a login code was refused. One answer for wrong, expired and unknown, so a guesser
/// learns nothing but "no".
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodeError {
    #[error("the code is wrong or expired")]
    Invalid,
    #[error("too many wrong codes: ask for a new one")]
    AttemptsExhausted,
    #[error("too many logins are pending; retry later")]
    Busy,
    #[error("sending the code failed: {0}")]
    SendFailed(&'static str),
}

struct PendingCode {
    hash: [u8; 32],
    expires: Instant,
    attempts_left: u32,
    /// `SignIn` accepted the code for a phone with no account: `SignUp` may use it once more.
    verified: bool,
}

/// The pending login codes of every phone.
pub struct LoginCodes {
    sender: CodeSender,
    /// Mixed into every code hash so a memory dump does not reveal codes by table lookup.
    salt: [u8; 16],
    pending: Mutex<HashMap<String, PendingCode>>,
    webhook: Option<crate::webhook::WebhookSender>,
}

impl fmt::Debug for LoginCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginCodes").field("sender", &self.sender).finish_non_exhaustive()
    }
}

impl LoginCodes {
    pub fn new(sender: CodeSender) -> Result<LoginCodes, crate::GatewayError> {
        let mut salt = [0; 16];
        getrandom::fill(&mut salt).map_err(|_| crate::GatewayError::Random)?;
        let webhook = match &sender {
            CodeSender::Webhook(url) => Some(crate::webhook::WebhookSender::start(url.clone())),
            _ => None,
        };
        Ok(LoginCodes { sender, salt, pending: Mutex::new(HashMap::new()), webhook })
    }

    pub fn sender(&self) -> &CodeSender {
        &self.sender
    }

    /// Makes a new code for `phone` (replacing any pending one) and sends it.
    pub fn issue(&self, phone: &str) -> Result<(), CodeError> {
        let code = match &self.sender {
            CodeSender::Fixed(code) => code.clone(),
            _ => random_code().ok_or(CodeError::SendFailed("no randomness"))?,
        };
        let now = Instant::now();
        {
            let mut pending = self.lock();
            if pending.len() >= LOGIN_CODES_PENDING_MAX {
                pending.retain(|_, code| code.expires > now);
                if pending.len() >= LOGIN_CODES_PENDING_MAX {
                    return Err(CodeError::Busy);
                }
            }
            let entry = PendingCode {
                hash: self.hash(phone, &code),
                expires: now + LOGIN_CODE_LIFETIME,
                attempts_left: LOGIN_CODE_ATTEMPTS_MAX,
                verified: false,
            };
            pending.insert(phone.to_owned(), entry);
        }
        self.deliver(phone, &code)
    }

    /// Checks `code` for `phone`; every wrong try uses up an attempt. With `for_sign_up` only a
    /// code `SignIn` already accepted passes.
    pub fn check(&self, phone: &str, code: &str, for_sign_up: bool) -> Result<(), CodeError> {
        let hash = self.hash(phone, code);
        let mut pending = self.lock();
        let Some(entry) = pending.get_mut(phone) else {
            return Err(CodeError::Invalid);
        };
        if entry.expires <= Instant::now() {
            pending.remove(phone);
            return Err(CodeError::Invalid);
        }
        if !constant_time_equal(&entry.hash, &hash) || (for_sign_up && !entry.verified) {
            entry.attempts_left = entry.attempts_left.saturating_sub(1);
            if entry.attempts_left == 0 {
                pending.remove(phone);
                return Err(CodeError::AttemptsExhausted);
            }
            return Err(CodeError::Invalid);
        }
        Ok(())
    }

    /// `SignIn` accepted the code of a phone with no account yet.
    pub fn mark_verified(&self, phone: &str) {
        if let Some(entry) = self.lock().get_mut(phone) {
            entry.verified = true;
        }
    }

    /// The login finished: the code cannot be used again.
    pub fn consume(&self, phone: &str) {
        self.lock().remove(phone);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PendingCode>> {
        // A panic while holding this lock cannot leave the map half-updated (each critical
        // section is one insert or remove), so a poisoned lock is still consistent.
        self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn hash(&self, phone: &str, code: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.salt);
        hasher.update(phone.as_bytes());
        hasher.update([0]);
        hasher.update(code.as_bytes());
        hasher.finalize().into()
    }

    fn deliver(&self, phone: &str, code: &str) -> Result<(), CodeError> {
        match &self.sender {
            CodeSender::Log => {
                tracing::info!(phone, code, "login code");
                Ok(())
            }
            CodeSender::File(path) => {
                let line = format!("{phone} {code}\n");
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .and_then(|mut file| file.write_all(line.as_bytes()))
                    .map_err(|error| {
                        tracing::error!(path = %path.display(), %error, "cannot append a login code");
                        CodeError::SendFailed("the code file is not writable")
                    })
            }
            CodeSender::Webhook(_) => match &self.webhook {
                Some(webhook) => webhook.send(phone, code).map_err(|_| CodeError::Busy),
                None => Err(CodeError::SendFailed("the webhook sender is not running")),
            },
            CodeSender::Fixed(_) => Ok(()),
        }
    }
}

/// A code of `LOGIN_CODE_DIGITS` digits from the operating system's CSPRNG, without modulo
/// bias (rejection sampling).
fn random_code() -> Option<String> {
    let modulus = 10u32.pow(LOGIN_CODE_DIGITS as u32);
    let limit = u32::MAX - u32::MAX % modulus;
    loop {
        let mut bytes = [0; 4];
        getrandom::fill(&mut bytes).ok()?;
        let value = u32::from_le_bytes(bytes);
        if value < limit {
            return Some(format!("{:0width$}", value % modulus, width = LOGIN_CODE_DIGITS));
        }
    }
}

pub fn constant_time_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |difference, (x, y)| difference | (x ^ y)) == 0
}

/// Whether `phone` is E.164: `+` and 8 to 15 digits, the first not 0.
pub fn valid_phone(phone: &str) -> bool {
    let Some(digits) = phone.strip_prefix('+') else { return false };
    (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes_in(file: &std::path::Path) -> Vec<(String, String)> {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split_once(' ').map(|(p, c)| (p.to_owned(), c.to_owned())))
            .collect()
    }

    // A code written by the file sender logs in once; wrong codes use up attempts until the
    // code is gone, and a code for one phone does not work for another.
    #[test]
    fn codes_are_checked_and_limited() {
        let directory = std::env::temp_dir().join(format!("ferrogram-login-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let file = directory.join("codes");
        let codes = LoginCodes::new(CodeSender::File(file.clone())).unwrap();
        codes.issue("+15550001").unwrap();
        let (phone, code) = codes_in(&file).pop().unwrap();
        assert_eq!(phone, "+15550001");
        assert_eq!(code.len(), LOGIN_CODE_DIGITS);
        assert_eq!(codes.check("+15550002", &code, false), Err(CodeError::Invalid));
        assert_eq!(codes.check("+15550001", &code, true), Err(CodeError::Invalid), "sign-up needs sign-in first");
        codes.check("+15550001", &code, false).unwrap();
        codes.consume("+15550001");
        assert_eq!(codes.check("+15550001", &code, false), Err(CodeError::Invalid), "a code works once");

        codes.issue("+15550001").unwrap();
        let (_, code) = codes_in(&file).pop().unwrap();
        let wrong = if code == "00000" { "11111" } else { "00000" };
        for _ in 1..LOGIN_CODE_ATTEMPTS_MAX {
            assert_eq!(codes.check("+15550001", wrong, false), Err(CodeError::Invalid));
        }
        assert_eq!(codes.check("+15550001", wrong, false), Err(CodeError::AttemptsExhausted));
        assert_eq!(codes.check("+15550001", &code, false), Err(CodeError::Invalid), "the right code is gone too");
        std::fs::remove_dir_all(&directory).unwrap();
    }

    // Code senders parse from their command-line form, and bad forms are refused.
    #[test]
    fn code_senders_parse() {
        assert_eq!("log".parse::<CodeSender>(), Ok(CodeSender::Log));
        assert_eq!("file:/tmp/x".parse::<CodeSender>(), Ok(CodeSender::File("/tmp/x".into())));
        assert_eq!("fixed:12345".parse::<CodeSender>(), Ok(CodeSender::Fixed("12345".into())));
        assert!("fixed:12a45".parse::<CodeSender>().is_err());
        assert!("webhook:ftp://x".parse::<CodeSender>().is_err());
        assert!("sms".parse::<CodeSender>().is_err());
        assert!(valid_phone("+15551234567"));
        assert!(!valid_phone("15551234567") && !valid_phone("+1555") && !valid_phone("+0123456789"));
    }

    // Random codes have the right width and are not all the same.
    #[test]
    fn random_codes_vary() {
        let codes: std::collections::HashSet<String> = (0..50).map(|_| random_code().unwrap()).collect();
        assert!(codes.iter().all(|code| code.len() == LOGIN_CODE_DIGITS));
        assert!(codes.len() > 40);
    }
}
