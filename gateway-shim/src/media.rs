//! Uploads and downloads over the wire (DESIGN §7), onto `Engine::media()` as the
//! connection's user: the upload lives on the user's vshard and is owned by the user's id;
//! sizes, part numbers and download ranges are checked here before the engine sees them; the
//! store's answers become typed protocol errors; and a download holds its share of the
//! connection's download budget until its answer leaves the queue.
//!
//! Who may read a file (DESIGN §7, issue 6): a client reads a file only through a message it
//! can see. `GetFile` and `GetFileInfo` name a media message; the messenger answers that
//! message's media only to a member who can see it (`Messenger::message_media`: not deleted,
//! not hidden for them), and the file id and access hash come from the message, never from
//! the client. Sending a file (`SendMedia`, in `dispatch.rs`) checks the access hash the
//! client presents; a wrong one and a missing file get the same answer there too.

use std::convert::Infallible;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

use engine::media::store::VShard as MediaVShard;
use engine::media::{
    AccessHash, FileId, FinishError, FinishUpload, MediaError, MediaUpload, PartAccepted, PutPartError, ReadError,
    StartError, StartUpload, StorageError, UploadId, UploaderId,
};
use engine::messaging::UserId;
use ferrogram_net::limits::{
    download_range_error, FILE_BYTES_MAX, FILE_NAME_BYTES_MAX, MIME_TYPE_BYTES_MAX, UPLOAD_PARTS_MAX,
    UPLOAD_PART_BYTES_MAX,
};
use ferrogram_net::{ErrorBody, ErrorCode, FileInfo, FileRef, Request, Response};

use crate::convert::{chat_id, message_id};
use glommio::sync::StaticPermit;

use crate::connection::Connection;
use crate::dispatch::{invalid, Answer};

/// How long a client should wait before sending a request the media store was too busy for.
const BUSY_RETRY_AFTER_S: u32 = 1;
/// The same, when the shard has as many uploads open as it allows (they end or expire slowly).
const UPLOADS_FULL_RETRY_AFTER_S: u32 = 5;

/// Handles one media request as `me`; the permit, for a download, stays reserved until the
/// answer leaves the connection's queue.
pub(crate) async fn handle(
    connection: &Rc<Connection>,
    me: UserId,
    request: Request,
) -> (Answer, Option<StaticPermit>) {
    let media = &connection.shard.gateway.media;
    let metrics = connection.shard.metrics();
    let answer = match request {
        Request::UploadStart { client_upload_id, total_bytes } => {
            if let Some(total) = total_bytes.filter(|&total| total > FILE_BYTES_MAX) {
                return (Err(file_too_large(total, FILE_BYTES_MAX)), None);
            }
            let start = StartUpload {
                owner: UploaderId(me.0),
                client_upload_id: (client_upload_id != 0).then_some(client_upload_id),
                total_bytes,
                vshard: vshard_of(me),
            };
            media
                .start_upload(start)
                .await
                .map(|upload| Response::UploadStarted { upload_id: ferrogram_net::UploadId(upload.id.raw()) })
                .map_err(|error| media_error(error, start_error))
        }
        Request::UploadPart { upload_id, part, bytes } => {
            if let Err(error) = check_part(part, bytes.len()) {
                return (Err(error), None);
            }
            let length = bytes.len() as u64;
            match media.put_part(upload_of(me, upload_id), part, bytes).await {
                Ok(PartAccepted::Stored) => {
                    metrics.media_part_bytes.fetch_add(length, Relaxed);
                    Ok(Response::PartStored { duplicate: false })
                }
                Ok(PartAccepted::Duplicate) => Ok(Response::PartStored { duplicate: true }),
                Err(error) => Err(media_error(error, part_error)),
            }
        }
        Request::UploadFinish { parts, upload_id, total_bytes, name, mime_type } => {
            if let Err(error) = check_finish(parts, &name, &mime_type) {
                return (Err(error), None);
            }
            let finish = FinishUpload { parts, total_bytes, name, mime_type };
            media
                .finish_upload(upload_of(me, upload_id), finish)
                .await
                .map(|finished| Response::UploadFinished {
                    file: FileRef {
                        id: ferrogram_net::FileId(finished.file.raw()),
                        access_hash: finished.access_hash.get(),
                    },
                    size: finished.size,
                })
                .map_err(|error| media_error(error, finish_error))
        }
        Request::UploadCancel { upload_id } => media
            .cancel_upload(upload_of(me, upload_id))
            .await
            .map(|_existed| Response::Done)
            .map_err(|error| media_error(error, |never: Infallible| match never {})),
        Request::GetFile { chat, message, offset, limit } => {
            if let Some(error) = download_range_error(offset, limit) {
                return (Err(invalid(&error)), None);
            }
            // The message first: a reader who may not see it holds no download budget.
            let (file, access_hash) = match file_of_message(connection, me, chat, message).await {
                Ok(file) => file,
                Err(error) => return (Err(error), None),
            };
            let Some(held) = connection.reserve_download(u64::from(limit)).await else {
                return (Err(busy("this connection's earlier downloads are still being sent")), None);
            };
            return match media.read(file, access_hash, offset, u64::from(limit)).await {
                Ok(bytes) => {
                    metrics.media_download_bytes.fetch_add(bytes.len() as u64, Relaxed);
                    (Ok(Response::FileBytes { bytes }), Some(held))
                }
                Err(error) => (Err(media_error(error, read_error)), None),
            };
        }
        Request::GetFileInfo { chat, message } => {
            let (file, access_hash) = match file_of_message(connection, me, chat, message).await {
                Ok(file) => file,
                Err(error) => return (Err(error), None),
            };
            media
                .file_info(file, access_hash)
                .await
                .map(|info| {
                    Response::FileInfo(FileInfo { size: info.size, name: info.name, mime_type: info.mime_type })
                })
                .map_err(|error| media_error(error, read_error))
        }
        other => unreachable!("not a media request: {other:?}"),
    };
    (answer, None)
}

/// The vshard a user's uploads (and so their files) live on: the user's own.
fn vshard_of(user: UserId) -> MediaVShard {
    engine::VShard::of(user.0).into()
}

fn upload_of(user: UserId, upload: ferrogram_net::UploadId) -> MediaUpload {
    MediaUpload { vshard: vshard_of(user), id: UploadId::from_raw(upload.0) }
}

/// The file of media message `message` of `chat`, if `me` can see the message: the rule that
/// a file is read only through a message its reader can see. Not a member, no such message
/// (or deleted, or hidden for `me`), no media: each its own typed error (`convert::error`).
async fn file_of_message(
    connection: &Connection,
    me: UserId,
    chat: ferrogram_net::ChatId,
    message: ferrogram_net::MessageId,
) -> Result<(FileId, AccessHash), ErrorBody> {
    let messenger = &connection.shard.gateway.messenger;
    match messenger.message_media(chat_id(chat), me, message_id(message)).await {
        Ok(media) => Ok((FileId::from_raw(media.file), AccessHash::new(media.access_hash))),
        Err(error) => Err(crate::dispatch::engine_error(error)),
    }
}

/// The edge's checks of a part: present, within a part's size, numbered below the limit.
/// Whether its size fits the upload's other parts is the store's to judge.
fn check_part(part: u32, bytes: usize) -> Result<(), ErrorBody> {
    if bytes == 0 {
        return Err(invalid(&format!("part {part} is empty")));
    }
    if bytes > UPLOAD_PART_BYTES_MAX {
        return Err(too_large(format!("part {part} has {bytes} bytes; a part holds at most {UPLOAD_PART_BYTES_MAX}")));
    }
    if part >= UPLOAD_PARTS_MAX {
        return Err(too_large(format!("part number {part} is past the last allowed, {}", UPLOAD_PARTS_MAX - 1)));
    }
    Ok(())
}

fn check_finish(parts: u32, name: &str, mime_type: &str) -> Result<(), ErrorBody> {
    if parts > UPLOAD_PARTS_MAX {
        return Err(too_large(format!("{parts} parts; a file has at most {UPLOAD_PARTS_MAX}")));
    }
    if name.len() > FILE_NAME_BYTES_MAX {
        return Err(too_large(format!("the file name has {} bytes; at most {FILE_NAME_BYTES_MAX}", name.len())));
    }
    if mime_type.len() > MIME_TYPE_BYTES_MAX {
        return Err(too_large(format!("the MIME type has {} bytes; at most {MIME_TYPE_BYTES_MAX}", mime_type.len())));
    }
    Ok(())
}

// The store's answers as protocol errors.

fn media_error<E>(error: MediaError<E>, store: impl FnOnce(E) -> ErrorBody) -> ErrorBody {
    match error {
        MediaError::Overloaded => busy("the media store is busy"),
        MediaError::Unavailable => ErrorBody::new(ErrorCode::Unavailable, "the media store is not running"),
        MediaError::Store(error) => store(error),
        _ => internal("an unknown kind of media error"),
    }
}

fn start_error(error: StartError) -> ErrorBody {
    match error {
        StartError::TooLarge { bytes, max } => file_too_large(bytes, max),
        StartError::TooManyUploads { .. } => ErrorBody {
            code: ErrorCode::Overloaded,
            message: error.to_string(),
            retry_after_s: UPLOADS_FULL_RETRY_AFTER_S,
        },
        StartError::Storage(error) => storage(&error),
        other => internal(&other.to_string()),
    }
}

fn part_error(error: PutPartError) -> ErrorBody {
    let message = error.to_string();
    match error {
        PutPartError::UnknownUpload => ErrorBody::new(ErrorCode::NotFound, message),
        PutPartError::EmptyPart { .. }
        | PutPartError::InvalidPartSize { .. }
        | PutPartError::PartSizeMismatch { .. }
        | PutPartError::PartBeyondLast { .. }
        | PutPartError::BeyondTotal { .. } => ErrorBody::new(ErrorCode::InvalidArgument, message),
        PutPartError::PartTooLarge { .. } | PutPartError::TooManyParts { .. } | PutPartError::TooLarge { .. } => {
            ErrorBody::new(ErrorCode::TooLarge, message)
        }
        PutPartError::PartConflict { .. } => ErrorBody::new(ErrorCode::Conflict, message),
        // Parts far ahead of the ones the upload needs next wait in memory within a bound;
        // sending the earlier parts first, or this one again later, gets through.
        PutPartError::StagingFull { .. } => {
            ErrorBody { code: ErrorCode::Overloaded, message, retry_after_s: BUSY_RETRY_AFTER_S }
        }
        PutPartError::Storage(error) => storage(&error),
        other => internal(&other.to_string()),
    }
}

fn finish_error(error: FinishError) -> ErrorBody {
    let message = error.to_string();
    match error {
        FinishError::UnknownUpload => ErrorBody::new(ErrorCode::NotFound, message),
        FinishError::MissingParts { count, listed } => {
            ErrorBody::new(ErrorCode::FilePartsMissing, missing(count, &listed))
        }
        FinishError::UnexpectedPart { .. } | FinishError::SizeMismatch { .. } => {
            ErrorBody::new(ErrorCode::InvalidArgument, message)
        }
        FinishError::TooManyParts { .. }
        | FinishError::TooLarge { .. }
        | FinishError::NameTooLong { .. }
        | FinishError::MimeTypeTooLong { .. } => ErrorBody::new(ErrorCode::TooLarge, message),
        FinishError::Part(error) => part_error(error),
        FinishError::Storage(error) => storage(&error),
        other => internal(&other.to_string()),
    }
}

fn read_error(error: ReadError) -> ErrorBody {
    match error {
        // One answer for both: a reader without the right access hash must not learn whether
        // the file exists.
        // A message holds a reference on its file, so this is rare: a file lost to a store
        // that was repaired, say. Either way a reader learns no more than "not available".
        ReadError::NotFound(_) | ReadError::AccessDenied(_) => {
            ErrorBody::new(ErrorCode::NotFound, "the message's file is not available")
        }
        ReadError::MisalignedOffset { .. } | ReadError::InvalidLimit { .. } | ReadError::CrossesBoundary { .. } => {
            ErrorBody::new(ErrorCode::InvalidArgument, error.to_string())
        }
        ReadError::Storage(error) => storage(&error),
        other => internal(&other.to_string()),
    }
}

/// `FILE_PARTS_MISSING`'s message: how many, and the first ones by number.
fn missing(count: u32, listed: &[u32]) -> String {
    let numbers: Vec<String> = listed.iter().map(u32::to_string).collect();
    let more = if (listed.len() as u32) < count { ", …" } else { "" };
    match count {
        1 => format!("1 part is missing: {}", numbers.join(", ")),
        _ => format!("{count} parts are missing: {}{more}", numbers.join(", ")),
    }
}

fn file_too_large(bytes: u64, max: u64) -> ErrorBody {
    too_large(format!("a file of {bytes} bytes is larger than the maximum of {max}"))
}

fn too_large(message: String) -> ErrorBody {
    ErrorBody::new(ErrorCode::TooLarge, message)
}

fn busy(message: &str) -> ErrorBody {
    ErrorBody { code: ErrorCode::Overloaded, message: message.into(), retry_after_s: BUSY_RETRY_AFTER_S }
}

/// A storage failure: the shard's media store stops until restarted, so it is logged here;
/// the client learns only that it was the server's fault.
fn storage(error: &StorageError) -> ErrorBody {
    tracing::error!(%error, "media storage error answering a request");
    ErrorBody::new(ErrorCode::Internal, "the media store failed; details are in the server log")
}

fn internal(detail: &str) -> ErrorBody {
    tracing::error!(%detail, "unexpected media error answering a request");
    ErrorBody::new(ErrorCode::Internal, "unexpected media error; details are in the server log")
}

#[cfg(test)]
mod tests {
    use super::*;

    // Missing parts are counted and named; a wrong access hash reads exactly like a missing
    // file; parts and finishes are checked at the edge.
    #[test]
    fn store_errors_become_protocol_errors() {
        let error = finish_error(FinishError::MissingParts { count: 40, listed: (0..32).collect() });
        assert_eq!(error.code, ErrorCode::FilePartsMissing);
        assert!(error.message.starts_with("40 parts are missing: 0, 1, 2"), "{}", error.message);
        assert!(error.message.ends_with("31, …"), "{}", error.message);
        let one = finish_error(FinishError::MissingParts { count: 1, listed: vec![7] });
        assert_eq!(one.message, "1 part is missing: 7");

        let file = FileId::from_raw(4097);
        assert_eq!(read_error(ReadError::NotFound(file)), read_error(ReadError::AccessDenied(file)));
        assert_eq!(read_error(ReadError::AccessDenied(file)).code, ErrorCode::NotFound);
        assert_eq!(read_error(ReadError::MisalignedOffset { offset: 3 }).code, ErrorCode::InvalidArgument);

        let staging = part_error(PutPartError::StagingFull { held: 1, max: 1 });
        assert_eq!((staging.code, staging.retry_after_s), (ErrorCode::Overloaded, 1));
        assert_eq!(part_error(PutPartError::PartConflict { part: 2 }).code, ErrorCode::Conflict);
        assert_eq!(media_error(MediaError::<ReadError>::Overloaded, read_error).code, ErrorCode::Overloaded);

        assert_eq!(check_part(0, 0).unwrap_err().code, ErrorCode::InvalidArgument);
        assert_eq!(check_part(0, UPLOAD_PART_BYTES_MAX + 1).unwrap_err().code, ErrorCode::TooLarge);
        assert_eq!(check_part(UPLOAD_PARTS_MAX, 1).unwrap_err().code, ErrorCode::TooLarge);
        assert!(check_part(UPLOAD_PARTS_MAX - 1, UPLOAD_PART_BYTES_MAX).is_ok());
        assert_eq!(check_finish(0, &"n".repeat(FILE_NAME_BYTES_MAX + 1), "").unwrap_err().code, ErrorCode::TooLarge);
        assert_eq!(check_finish(0, "", &"m".repeat(MIME_TYPE_BYTES_MAX + 1)).unwrap_err().code, ErrorCode::TooLarge);
        assert!(check_finish(UPLOAD_PARTS_MAX, "a.bin", "application/octet-stream").is_ok());
        assert_eq!(vshard_of(UserId(5 << 12 | 77)).get(), 77);
    }
}
