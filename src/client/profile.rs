//! Saved logins ("profiles"): the server, login token, user id and phone of one account, one
//! small TOML file per profile under `$FERROGRAM_HOME/profiles/` (else
//! `$HOME/.config/ferrogram/profiles/`), readable only by its owner since the token is a
//! credential.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The longest profile name; names become file names.
pub const PROFILE_NAME_BYTES_MAX: usize = 64;
/// A profile file larger than this is not one of ours.
pub const PROFILE_FILE_BYTES_MAX: u64 = 64 * 1024;

/// One saved login. Every field is optional so that a profile can hold just a server before
/// the first login, and keep the server and phone after a logout.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The login token in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// The account's name at login, for messages like "logged in as".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl fmt::Debug for Profile {
    // The token stays out of logs and panic messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("user", &self.user)
            .field("phone", &self.phone)
            .field("name", &self.name)
            .finish()
    }
}

impl Profile {
    /// The token's bytes, if the profile is logged in.
    pub fn token_bytes(&self) -> anyhow::Result<Option<Vec<u8>>> {
        self.token.as_deref().map(decode_hex).transpose().context("the profile's token is not hex")
    }

    pub fn set_token(&mut self, token: &[u8]) {
        self.token = Some(encode_hex(token));
    }
}

/// Where profiles live: `$FERROGRAM_HOME/profiles`, else `$HOME/.config/ferrogram/profiles`.
pub fn profiles_directory() -> anyhow::Result<PathBuf> {
    if let Some(home) = std::env::var_os("FERROGRAM_HOME").filter(|home| !home.is_empty()) {
        return Ok(PathBuf::from(home).join("profiles"));
    }
    match std::env::var_os("HOME").filter(|home| !home.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".config").join("ferrogram").join("profiles")),
        None => bail!("set FERROGRAM_HOME or HOME to say where profiles are kept"),
    }
}

/// The file of profile `name` in `directory`. Names are letters, digits, `-` and `_`, so a
/// name can never reach outside the directory.
pub fn profile_path(directory: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let valid = !name.is_empty()
        && name.len() <= PROFILE_NAME_BYTES_MAX
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if !valid {
        bail!("profile name `{name}`: use letters, digits, `-` and `_`, at most {PROFILE_NAME_BYTES_MAX} bytes");
    }
    Ok(directory.join(name))
}

/// Reads profile `name`; `None` if it was never saved.
pub fn load(directory: &Path, name: &str) -> anyhow::Result<Option<Profile>> {
    let path = profile_path(directory, name)?;
    let metadata = match fs::metadata(&path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    };
    if metadata.len() > PROFILE_FILE_BYTES_MAX {
        bail!("{} is {} bytes, too large for a profile", path.display(), metadata.len());
    }
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let profile = toml::from_str(&text).with_context(|| format!("{} is not a valid profile", path.display()))?;
    Ok(Some(profile))
}

/// Writes profile `name` atomically: a temporary file, readable only by its owner, is
/// synced and renamed over the old one, so a crash leaves the old profile or the new one,
/// never half of either.
pub fn save(directory: &Path, name: &str, profile: &Profile) -> anyhow::Result<()> {
    let path = profile_path(directory, name)?;
    fs::create_dir_all(directory).with_context(|| format!("creating {}", directory.display()))?;
    // The directory lists which accounts exist; keep it private as well.
    fs::set_permissions(directory, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("restricting {}", directory.display()))?;
    let text = toml::to_string(profile).context("encoding the profile")?;
    let temporary = directory.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temporary)?;
        // `mode` applies only to a file this call creates; a leftover temporary keeps its
        // own, so set it again.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temporary, &path)?;
        // The rename is durable once the directory is synced.
        fs::File::open(directory)?.sync_all()
    })();
    if let Err(error) = written {
        let _ = fs::remove_file(&temporary);
        return Err(error).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

pub fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 0x0f)] as char);
    }
    text
}

pub fn decode_hex(text: &str) -> anyhow::Result<Vec<u8>> {
    let pairs = text.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        bail!("hex of odd length {}", text.len());
    }
    let digit = |byte: u8| match byte {
        b'0'..=b'9' => Ok(byte - b'0'),
        b'a'..=b'f' => Ok(byte - b'a' + 10),
        b'A'..=b'F' => Ok(byte - b'A' + 10),
        _ => bail!("`{}` is not a hex digit", byte as char),
    };
    pairs.map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary directory, removed on drop.
    struct TemporaryDirectory(PathBuf);

    impl TemporaryDirectory {
        fn new(label: &str) -> TemporaryDirectory {
            let unique = format!("ferrogram-{label}-{}-{:?}", std::process::id(), std::time::Instant::now());
            let path = std::env::temp_dir().join(unique.replace(|c: char| !c.is_ascii_alphanumeric(), "-"));
            fs::create_dir_all(&path).expect("creates a temporary directory");
            TemporaryDirectory(path)
        }
    }

    impl Drop for TemporaryDirectory {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    // A saved profile loads back equal, is readable only by its owner, replaces the previous
    // one whole, and leaves no temporary file behind; a profile never saved loads as None.
    #[test]
    fn profiles_round_trip_privately() {
        let home = TemporaryDirectory::new("profiles");
        let directory = home.0.join("profiles");
        assert_eq!(load(&directory, "default").expect("loads"), None);

        let mut profile = Profile {
            server: Some("127.0.0.1:7450".into()),
            user: Some(4097),
            phone: Some("+15550001111".into()),
            name: Some("Ada \"the first\" Lovelace".into()),
            ..Profile::default()
        };
        profile.set_token(&[0, 1, 0xab, 0xff, 0x10]);
        save(&directory, "default", &profile).expect("saves");
        let loaded = load(&directory, "default").expect("loads").expect("exists");
        assert_eq!(loaded, profile);
        assert_eq!(loaded.token_bytes().expect("hex"), Some(vec![0, 1, 0xab, 0xff, 0x10]));

        let path = profile_path(&directory, "default").expect("a valid name");
        let mode = fs::metadata(&path).expect("exists").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the token is readable by its owner only");

        let logged_out = Profile { token: None, ..profile };
        save(&directory, "default", &logged_out).expect("saves again");
        assert_eq!(load(&directory, "default").expect("loads"), Some(logged_out));
        let names: Vec<_> =
            fs::read_dir(&directory).expect("lists").map(|entry| entry.expect("entry").file_name()).collect();
        assert_eq!(names, vec!["default"], "no temporary file is left");
    }

    // Profile names cannot reach outside the profiles directory.
    #[test]
    fn profile_names_stay_inside_the_directory() {
        let directory = Path::new("/profiles");
        assert_eq!(profile_path(directory, "work-2").expect("valid"), Path::new("/profiles/work-2"));
        for name in ["", "..", "../x", "a/b", ".hidden", "x".repeat(PROFILE_NAME_BYTES_MAX + 1).as_str()] {
            assert!(profile_path(directory, name).is_err(), "{name:?} is refused");
        }
    }

    // Hex round-trips any bytes and refuses text that is not hex.
    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_hex(&encode_hex(&bytes)).expect("decodes"), bytes);
        assert_eq!(decode_hex("ABcd").expect("either case"), vec![0xab, 0xcd]);
        assert!(decode_hex("abc").is_err());
        assert!(decode_hex("zz").is_err());
    }
}
