//! Files from the command line, as media messages: `upload <peer> <path>` stores a file and
//! sends it to the peer as a photo or document (printing the message id), and `download <peer>
//! <message id>` reads the file of a media message back. Both show a progress bar on standard
//! error and a summary of the time and rate at the end.
//!
//! A file is read only through a message its reader can see (docs/PROTOCOL.md §4.4), so a
//! download names a chat and a message, never a file.

use std::fs::{File, OpenOptions};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Instant;

use anyhow::{bail, Context};
use ferrogram_net::limits::{FILE_NAME_BYTES_MAX, MEDIA_CAPTION_MAX, MIME_TYPE_BYTES_MAX};
use ferrogram_net::transfer::{retry_wait, DownloadOptions, UploadOptions, RETRIES_MAX};
use ferrogram_net::{BlockingClient, ChatId, ClientError, ErrorCode, FileRef, MediaKind, MessageId, SentMessage};

use super::peer::{resolve_chat, Peer};
use super::progress::ProgressBar;
use super::{random_id, Common, Session};

/// The MIME type of a file whose extension the table below does not know.
pub const MIME_TYPE_DEFAULT: &str = "application/octet-stream";

/// File extensions (lower case) sent as photos unless told otherwise: the picture formats
/// clients show inline.
const PHOTO_EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "gif", "webp"];

/// MIME types by file extension (lower case): the common ones, no more. Anything else is sent
/// as `MIME_TYPE_DEFAULT`, or as `--mime` says.
const MIME_TYPES: [(&str, &str); 24] = [
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("png", "image/png"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("heic", "image/heic"),
    ("svg", "image/svg+xml"),
    ("mp4", "video/mp4"),
    ("webm", "video/webm"),
    ("mov", "video/quicktime"),
    ("mp3", "audio/mpeg"),
    ("ogg", "audio/ogg"),
    ("m4a", "audio/mp4"),
    ("wav", "audio/wav"),
    ("pdf", "application/pdf"),
    ("zip", "application/zip"),
    ("gz", "application/gzip"),
    ("tar", "application/x-tar"),
    ("json", "application/json"),
    ("txt", "text/plain"),
    ("md", "text/markdown"),
    ("csv", "text/csv"),
    ("html", "text/html"),
    ("doc", "application/msword"),
];

/// How `upload` sends.
#[derive(Clone, Debug)]
pub struct UploadArguments {
    /// The message's text; may be empty.
    pub caption: String,
    /// Send as a photo whatever the extension says.
    pub photo: bool,
    pub name: Option<String>,
    pub mime: Option<String>,
    pub part_kib: usize,
    pub parts_in_flight: usize,
}

/// How `download` writes.
#[derive(Clone, Debug)]
pub struct DownloadArguments {
    /// Where to write [default: the file's name from the message, in the current directory];
    /// `-` is standard output.
    pub output: Option<PathBuf>,
    /// Replace an existing file.
    pub force: bool,
    pub ranges_in_flight: usize,
}

/// `upload <peer> <path>`: stores the file, sends it to the peer as a media message, and
/// prints the message's id on one line of standard output.
pub fn upload(common: &Common, peer: &Peer, path: &Path, arguments: &UploadArguments) -> anyhow::Result<()> {
    // Everything that can be refused is checked before the upload, which may take long.
    let characters = arguments.caption.chars().count();
    if characters > MEDIA_CAPTION_MAX {
        bail!("the caption has {characters} characters; at most {MEDIA_CAPTION_MAX}");
    }
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata().with_context(|| format!("cannot read {}", path.display()))?.len();
    let name = match &arguments.name {
        Some(name) => name.clone(),
        None => path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    if name.len() > FILE_NAME_BYTES_MAX {
        bail!("the file name has {} bytes; at most {FILE_NAME_BYTES_MAX} (use --name)", name.len());
    }
    let mime_type = arguments.mime.clone().unwrap_or_else(|| mime_type_of(&name).to_owned());
    if mime_type.len() > MIME_TYPE_BYTES_MAX {
        bail!("the MIME type has {} bytes; at most {MIME_TYPE_BYTES_MAX}", mime_type.len());
    }
    let kind = if arguments.photo { MediaKind::Photo } else { kind_of(&name) };
    let options = UploadOptions {
        name,
        mime_type,
        part_bytes: arguments.part_kib.saturating_mul(1024),
        parts_in_flight: arguments.parts_in_flight,
        // A random id makes a retried start answer the same upload.
        client_upload_id: random_id()?,
    };
    let session = Session::open(common)?;
    let chat = resolve_chat(&session.client, peer)?;
    let started = Instant::now();
    let mut bar = ProgressBar::new(std::io::stderr(), std::io::stderr().is_terminal(), "uploaded", started);
    let uploaded = session
        .client
        .upload_file(file, Some(size), &options, |progress| {
            bar.update(Instant::now(), progress.bytes_done, progress.bytes_total);
        })
        .with_context(|| format!("uploading {}", path.display()))?;
    bar.finish(Instant::now(), uploaded.size);
    let sent = send_media(&session.client, chat, uploaded.file, kind, &arguments.caption)
        .with_context(|| format!("sending {} to {peer}", path.display()))?;
    println!("{}", sent.id);
    Ok(())
}

/// `download <peer> <message id>`: writes the file of that media message to the output.
pub fn download(common: &Common, peer: &Peer, message: MessageId, arguments: &DownloadArguments) -> anyhow::Result<()> {
    let session = Session::open(common)?;
    let client = &session.client;
    let chat = resolve_chat(client, peer)?;
    let info =
        client.get_file_info(chat, message).with_context(|| format!("looking up message {message} of {peer}"))?;
    let options = DownloadOptions { ranges_in_flight: arguments.ranges_in_flight };
    let started = Instant::now();
    let mut bar = ProgressBar::new(std::io::stderr(), std::io::stderr().is_terminal(), "downloaded", started);
    let mut progress = |progress: ferrogram_net::transfer::Progress| {
        bar.update(Instant::now(), progress.bytes_done, progress.bytes_total);
    };
    let path = match &arguments.output {
        Some(path) if path == Path::new("-") => {
            let stdout = std::io::stdout().lock();
            client.download_file(chat, message, &options, stdout, &mut progress).context("downloading")?;
            bar.finish(Instant::now(), info.size);
            return Ok(());
        }
        Some(path) => path.clone(),
        None => PathBuf::from(default_file_name(&info.name, message)),
    };
    let (writer, created) = open_output(&path, arguments.force)?;
    let writer = std::io::BufWriter::with_capacity(1 << 20, writer);
    let result = client.download_file(chat, message, &options, writer, &mut progress);
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

/// Sends the uploaded file, again with the same `random_id` while the server asks for a retry
/// (`OVERLOADED`, `FLOOD_WAIT`): the send is idempotent, and giving up would leave the upload
/// unsent.
fn send_media(
    client: &BlockingClient,
    chat: ChatId,
    file: FileRef,
    kind: MediaKind,
    caption: &str,
) -> anyhow::Result<SentMessage> {
    let random_id = random_id()?;
    let mut retries = 0;
    loop {
        match client.send_media(chat, random_id, file, kind, caption) {
            Err(error) if retries < RETRIES_MAX && asks_for_retry(&error) => {
                retries += 1;
                thread::sleep(retry_wait(&error));
            }
            result => return Ok(result?),
        }
    }
}

fn asks_for_retry(error: &ClientError) -> bool {
    matches!(error.code(), Some(ErrorCode::Overloaded | ErrorCode::FloodWait))
}

/// The lower-case extension of a file name, if it has one.
fn extension(name: &str) -> Option<String> {
    let (stem, extension) = name.rsplit_once('.')?;
    (!stem.is_empty() && !extension.is_empty()).then(|| extension.to_ascii_lowercase())
}

/// Photo for the picture formats clients show inline, document for everything else.
fn kind_of(name: &str) -> MediaKind {
    match extension(name) {
        Some(extension) if PHOTO_EXTENSIONS.contains(&extension.as_str()) => MediaKind::Photo,
        _ => MediaKind::Document,
    }
}

fn mime_type_of(name: &str) -> &'static str {
    extension(name)
        .and_then(|extension| MIME_TYPES.iter().find(|(known, _)| *known == extension))
        .map_or(MIME_TYPE_DEFAULT, |(_, mime_type)| mime_type)
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

/// The name the sender gave the file, made safe to create here: a name chosen by someone else
/// must not choose the directory, hide the file or reach the terminal. Path separators and
/// control characters become `_`, leading dots and spaces go; what is left empty becomes
/// `message-ID`.
fn default_file_name(stored: &str, message: MessageId) -> String {
    let replaced: String = stored
        .chars()
        .map(|character| if character == '/' || character == '\\' || character.is_control() { '_' } else { character })
        .collect();
    let name = replaced.trim_start_matches(['.', ' ']).trim_end();
    if name.is_empty() {
        format!("message-{message}")
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Pictures go as photos, the rest as documents; MIME types come from a small table, in any
    // case, with a default for the unknown and for names without an extension.
    #[test]
    fn kinds_and_mime_types_follow_the_extension() {
        for name in ["cat.jpg", "CAT.JPEG", "a.b.png", "x.gif", "y.WebP"] {
            assert_eq!(kind_of(name), MediaKind::Photo, "{name}");
        }
        for name in ["report.pdf", "jpg", ".jpg", "photo.jpg.zip", "noextension", "trailing."] {
            assert_eq!(kind_of(name), MediaKind::Document, "{name}");
        }
        assert_eq!(mime_type_of("CAT.JPG"), "image/jpeg");
        assert_eq!(mime_type_of("report.pdf"), "application/pdf");
        assert_eq!(mime_type_of("archive.tar.gz"), "application/gzip");
        assert_eq!(mime_type_of("data.bin"), MIME_TYPE_DEFAULT);
        assert_eq!(mime_type_of("README"), MIME_TYPE_DEFAULT);
        assert_eq!(mime_type_of(".png"), MIME_TYPE_DEFAULT, "a hidden file's name is not an extension");
        for (extension, mime_type) in MIME_TYPES {
            assert_eq!(extension, extension.to_ascii_lowercase());
            assert!(mime_type.len() <= MIME_TYPE_BYTES_MAX);
        }
        for extension in PHOTO_EXTENSIONS {
            assert!(mime_type_of(&format!("a.{extension}")).starts_with("image/"), "{extension}");
        }
    }

    // A stored name becomes the output only without separators, control characters or a
    // leading dot; an empty result falls back to the message id.
    #[test]
    fn default_names_stay_here() {
        let message = MessageId(9);
        assert_eq!(default_file_name("photo.jpg", message), "photo.jpg");
        assert_eq!(default_file_name("my holiday.jpg", message), "my holiday.jpg");
        assert_eq!(default_file_name("../etc/passwd", message), "_etc_passwd");
        assert_eq!(default_file_name("/etc/passwd", message), "_etc_passwd");
        assert_eq!(default_file_name("a\\b", message), "a_b");
        assert_eq!(default_file_name(".bashrc", message), "bashrc");
        assert_eq!(default_file_name("a\nb\u{1b}[31m", message), "a_b_[31m");
        for empty in ["", ".", "..", "  ", ". ."] {
            assert_eq!(default_file_name(empty, message), "message-9", "{empty:?}");
        }
    }
}
