//! Files from the command line: `upload <path>` stores a file and prints its reference,
//! `download <file-ref>` reads one back, both with a progress bar on standard error and a
//! summary of the time and rate at the end.
//!
//! Until the server has media messages a file is named by its reference, `file:ID:HASH`
//! (the id in decimal, the access hash in 16 hex digits), which only its uploader is given:
//! paste it to whoever should read the file. The forms `upload <peer> <path>` and
//! `download <peer> <message id>` are reserved for when files travel in messages.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use anyhow::{bail, Context};
use ferrogram_net::limits::{FILE_NAME_BYTES_MAX, MIME_TYPE_BYTES_MAX};
use ferrogram_net::transfer::{DownloadOptions, UploadOptions};
use ferrogram_net::{FileId, FileRef};

use super::progress::ProgressBar;
use super::{Common, Session};

/// A file reference as the command line writes it: `file:ID:HASH`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FileRefArgument(pub FileRef);

/// The hex digits of an access hash.
const ACCESS_HASH_DIGITS: usize = 16;

/// Why a file reference was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FileRefError {
    #[error("`{0}`: expected file:ID:HASH, as `ferrogram upload` prints it")]
    Form(String),
    #[error("`{0}`: the ID is a decimal number")]
    Id(String),
    #[error("`{0}`: the access hash is {ACCESS_HASH_DIGITS} hex digits")]
    AccessHash(String),
}

impl FromStr for FileRefArgument {
    type Err = FileRefError;

    fn from_str(text: &str) -> Result<FileRefArgument, FileRefError> {
        let Some((id, hash)) = text.strip_prefix("file:").and_then(|rest| rest.split_once(':')) else {
            return Err(FileRefError::Form(text.to_owned()));
        };
        let digits = !id.is_empty() && id.bytes().all(|byte| byte.is_ascii_digit());
        let id: u64 = id.parse().ok().filter(|_| digits).ok_or_else(|| FileRefError::Id(text.to_owned()))?;
        let hex = hash.len() == ACCESS_HASH_DIGITS && hash.bytes().all(|byte| byte.is_ascii_hexdigit());
        let access_hash = u64::from_str_radix(hash, 16)
            .ok()
            .filter(|_| hex)
            .ok_or_else(|| FileRefError::AccessHash(text.to_owned()))?;
        Ok(FileRefArgument(FileRef { id: FileId(id), access_hash }))
    }
}

impl fmt::Display for FileRefArgument {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "file:{}:{:016x}", self.0.id.0, self.0.access_hash)
    }
}

impl fmt::Debug for FileRefArgument {
    // The access hash is a secret: it stays out of debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "file:{}:<redacted>", self.0.id.0)
    }
}

/// What `upload` was asked to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UploadTarget {
    /// `upload <path>`: store the file, print its reference.
    File(PathBuf),
}

/// What `download` was asked to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownloadSource {
    /// `download <file-ref>`.
    File(FileRefArgument),
}

/// The positional arguments of `upload`: a path, or (later) a peer and a path.
pub fn upload_target(arguments: &[String]) -> anyhow::Result<UploadTarget> {
    match arguments {
        [path] => Ok(UploadTarget::File(PathBuf::from(path))),
        [peer, _path] => bail!(
            "`upload {peer} <path>` sends a file as a message, which needs media messages: this server does \
             not have them yet. Run `ferrogram upload <path>` and give the reference it prints instead."
        ),
        _ => bail!("expected `upload <path>`"),
    }
}

/// The positional arguments of `download`: a file reference, or (later) a peer and a message id.
pub fn download_source(arguments: &[String]) -> anyhow::Result<DownloadSource> {
    match arguments {
        [file] => Ok(DownloadSource::File(file.parse()?)),
        [peer, _message] => bail!(
            "`download {peer} <message id>` reads a file from a message, which needs media messages: this server \
             does not have them yet. Ask the uploader for the file's reference (file:ID:HASH)."
        ),
        _ => bail!("expected `download <file-ref>`"),
    }
}

/// How `upload` sends.
#[derive(Clone, Debug)]
pub struct UploadArguments {
    pub name: Option<String>,
    pub mime: Option<String>,
    pub part_kib: usize,
    pub parts_in_flight: usize,
}

/// `upload <path>`: stores the file and prints its reference on one line of standard output.
pub fn upload(common: &Common, target: &UploadTarget, arguments: &UploadArguments) -> anyhow::Result<()> {
    let UploadTarget::File(path) = target;
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata().with_context(|| format!("cannot read {}", path.display()))?.len();
    let name = match &arguments.name {
        Some(name) => name.clone(),
        None => path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    if name.len() > FILE_NAME_BYTES_MAX {
        bail!("the file name has {} bytes; at most {FILE_NAME_BYTES_MAX} (use --name)", name.len());
    }
    let mime_type = arguments.mime.clone().unwrap_or_default();
    if mime_type.len() > MIME_TYPE_BYTES_MAX {
        bail!("the MIME type has {} bytes; at most {MIME_TYPE_BYTES_MAX}", mime_type.len());
    }
    let options = UploadOptions {
        name,
        mime_type,
        part_bytes: arguments.part_kib.saturating_mul(1024),
        parts_in_flight: arguments.parts_in_flight,
        // A random id makes a retried start answer the same upload.
        client_upload_id: super::random_id()?,
    };
    let session = Session::open(common)?;
    let started = Instant::now();
    let mut bar = ProgressBar::new(std::io::stderr(), std::io::stderr().is_terminal(), "uploaded", started);
    let uploaded = session
        .client
        .upload_file(file, Some(size), &options, |progress| {
            bar.update(Instant::now(), progress.bytes_done, progress.bytes_total);
        })
        .with_context(|| format!("uploading {}", path.display()))?;
    bar.finish(Instant::now(), uploaded.size);
    println!("{}", FileRefArgument(uploaded.file));
    Ok(())
}

/// `download <file-ref>`: writes the file to `output` (default: its stored name in the current
/// directory; `-` is standard output).
pub fn download(
    common: &Common,
    source: &DownloadSource,
    output: Option<&Path>,
    force: bool,
    ranges_in_flight: usize,
) -> anyhow::Result<()> {
    let DownloadSource::File(FileRefArgument(file)) = *source;
    let session = Session::open(common)?;
    let client = &session.client;
    let info = client.get_file_info(file).context("looking the file up")?;
    let options = DownloadOptions { ranges_in_flight };
    let started = Instant::now();
    let mut bar = ProgressBar::new(std::io::stderr(), std::io::stderr().is_terminal(), "downloaded", started);
    let mut progress = |progress: ferrogram_net::transfer::Progress| {
        bar.update(Instant::now(), progress.bytes_done, progress.bytes_total);
    };
    let path = match output {
        Some(path) if path == Path::new("-") => {
            let stdout = std::io::stdout().lock();
            client.download_file(file, &options, stdout, &mut progress).context("downloading")?;
            bar.finish(Instant::now(), info.size);
            return Ok(());
        }
        Some(path) => path.to_path_buf(),
        None => PathBuf::from(default_file_name(&info.name, file.id)),
    };
    let (writer, created) = open_output(&path, force)?;
    let result =
        client.download_file(file, &options, std::io::BufWriter::with_capacity(1 << 20, writer), &mut progress);
    if let Err(error) = result {
        if created {
            // A partial file must not pass for the download.
            let _ = std::fs::remove_file(&path);
        }
        return Err(error).context("downloading");
    }
    bar.finish(Instant::now(), info.size);
    eprintln!("saved as {}", path.display());
    Ok(())
}

/// Opens the output, refusing to replace a regular file without `force`; says whether it
/// created the file (so a failed download can remove it). Devices such as `/dev/null` are
/// written as they are.
fn open_output(path: &Path, force: bool) -> anyhow::Result<(File, bool)> {
    let existing = std::fs::metadata(path).ok();
    if existing.as_ref().is_some_and(|metadata| metadata.is_file()) && !force {
        bail!("{} exists; use --force to replace it, or -o to write elsewhere", path.display());
    }
    let mut options = OpenOptions::new();
    options.write(true);
    match &existing {
        Some(metadata) if metadata.is_file() => options.truncate(true),
        Some(_) => &mut options,
        None => options.create_new(true),
    };
    let file = options.open(path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok((file, existing.is_none()))
}

/// The stored name if it is a plain file name (no directories, nothing hidden behind control
/// characters), else `file-ID`: a name chosen by the uploader must not choose the directory.
fn default_file_name(stored: &str, id: FileId) -> String {
    let plain = !stored.is_empty()
        && stored != "."
        && stored != ".."
        && !stored.contains(['/', '\\'])
        && !stored.chars().any(char::is_control);
    if plain {
        stored.to_owned()
    } else {
        format!("file-{}", id.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A reference round-trips through its text; anything else is refused with a reason.
    #[test]
    fn file_refs_parse() {
        let reference = FileRefArgument(FileRef { id: FileId(4097), access_hash: 0x00ab_cdef_0123_4567 });
        let text = reference.to_string();
        assert_eq!(text, "file:4097:00abcdef01234567");
        assert_eq!(text.parse::<FileRefArgument>(), Ok(reference));
        assert_eq!("file:1:FFFFFFFFFFFFFFFF".parse::<FileRefArgument>().map(|file| file.0.access_hash), Ok(u64::MAX));
        assert!(!format!("{reference:?}").contains("abcdef"), "Debug keeps the hash out");

        let refused = |text: &str| text.parse::<FileRefArgument>().unwrap_err();
        assert!(matches!(refused("4097:00abcdef01234567"), FileRefError::Form(_)));
        assert!(matches!(refused("file:4097"), FileRefError::Form(_)));
        assert!(matches!(refused("file::00abcdef01234567"), FileRefError::Id(_)));
        assert!(matches!(refused("file:+1:00abcdef01234567"), FileRefError::Id(_)));
        assert!(matches!(refused("file:99999999999999999999:00abcdef01234567"), FileRefError::Id(_)));
        assert!(matches!(refused("file:1:abc"), FileRefError::AccessHash(_)));
        assert!(matches!(refused("file:1:00abcdef0123456g"), FileRefError::AccessHash(_)));
        assert!(matches!(refused("file:1:+0abcdef01234567"), FileRefError::AccessHash(_)));
        assert!(matches!(refused("file:1:00abcdef012345678"), FileRefError::AccessHash(_)));
    }

    // The positional forms: one argument is today's; two are the peer forms, refused with a
    // message saying why.
    #[test]
    fn positional_forms() {
        let args = |list: &[&str]| list.iter().map(|text| text.to_string()).collect::<Vec<_>>();
        assert_eq!(upload_target(&args(&["a.bin"])).unwrap(), UploadTarget::File("a.bin".into()));
        let peer = upload_target(&args(&["@alice", "a.bin"])).unwrap_err().to_string();
        assert!(peer.contains("media messages"), "{peer}");
        let reference = "file:4097:00abcdef01234567";
        assert_eq!(download_source(&args(&[reference])).unwrap(), DownloadSource::File(reference.parse().unwrap()));
        assert!(download_source(&args(&["file:4097"])).is_err());
        assert!(download_source(&args(&["@alice", "12"])).unwrap_err().to_string().contains("media messages"));
    }

    // A stored name becomes the output only when it cannot reach another directory.
    #[test]
    fn default_names_stay_here() {
        assert_eq!(default_file_name("photo.jpg", FileId(9)), "photo.jpg");
        assert_eq!(default_file_name("../etc/passwd", FileId(9)), "file-9");
        assert_eq!(default_file_name("/etc/passwd", FileId(9)), "file-9");
        assert_eq!(default_file_name("..", FileId(9)), "file-9");
        assert_eq!(default_file_name("", FileId(9)), "file-9");
        assert_eq!(default_file_name("a\nb", FileId(9)), "file-9");
    }
}
