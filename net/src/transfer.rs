//! Whole files over the wire, on the blocking client: [`BlockingClient::upload_file`] cuts a
//! file into parts and [`BlockingClient::download_file`] reads one back in 1 MiB ranges. Both
//! keep a window of requests in flight on the one connection (answers are taken oldest first),
//! send a request again when the server answers `OVERLOADED` or `FLOOD_WAIT`, after the delay
//! it asks for and a bounded number of times, and report progress after every part or range.
//!
//! An upload answers the file's [`FileRef`], which `send_media` puts in a message; a download
//! names that message (chat and message id), since a file is read only through a message its
//! reader can see.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::Duration;

use async_io::Timer;

use crate::client::{unexpected, within, BlockingClient, Client, ClientError, Submitted, UploadedFile};
use crate::limits::{is_full_part_size, DOWNLOAD_LIMIT_BYTES_MAX, FILE_BYTES_MAX, UPLOAD_PARTS_MAX};
use crate::protocol::{ChatId, ErrorCode, FileInfo, MessageId, Request, Response, UploadId};

/// The part size of an upload unless told otherwise: the largest the protocol allows.
pub const PART_BYTES_DEFAULT: usize = crate::limits::UPLOAD_PART_BYTES_MAX;
/// Parts sent ahead of the oldest unanswered one. The server stores an upload's parts one
/// at a time; a few in flight keep it busy while answers travel back.
pub const PARTS_IN_FLIGHT_DEFAULT: usize = 4;
/// Ranges of 1 MiB asked for ahead of the oldest unanswered one. The server holds at most
/// 2 MiB of one connection's file bytes queued and lets further reads wait, so a larger
/// window only waits there.
pub const RANGES_IN_FLIGHT_DEFAULT: usize = 4;
/// The largest window either transfer accepts.
pub const IN_FLIGHT_MAX: usize = 64;
/// How many times one request is sent again after `OVERLOADED` or `FLOOD_WAIT`.
pub const RETRIES_MAX: u32 = 8;
/// The longest wait before a retry, whatever the server asks: a transfer should fail rather
/// than stall for minutes.
pub const RETRY_WAIT_MAX: Duration = Duration::from_secs(30);
/// The wait before a retry when the server names none.
pub const RETRY_WAIT_DEFAULT: Duration = Duration::from_secs(1);

/// How far a transfer has come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Bytes the server has stored (upload) or the writer has taken (download).
    pub bytes_done: u64,
    /// The file's size, when known (always for a download).
    pub bytes_total: Option<u64>,
}

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The connection or the server refused (after the retries, for `OVERLOADED`).
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("reading the file to upload failed: {0}")]
    Read(io::Error),
    #[error("writing the downloaded file failed: {0}")]
    Write(io::Error),
    #[error("a part of {0} bytes is not allowed: use a multiple of 1 KiB that divides 512 KiB")]
    PartSize(usize),
    #[error("the file is larger than the {max} bytes an upload may have")]
    TooLarge { max: u64 },
    #[error("{read} bytes were read, not the {announced} announced")]
    SizeChanged { announced: u64, read: u64 },
    #[error("the server answered {received} bytes at offset {offset} where {expected} were due")]
    WrongLength { offset: u64, expected: u64, received: u64 },
}

/// How to upload a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadOptions {
    /// Stored with the file, shown to its readers (at most 255 bytes).
    pub name: String,
    /// At most 127 bytes; empty is allowed.
    pub mime_type: String,
    /// Every part but the last has this many bytes: a multiple of 1 KiB dividing 512 KiB.
    pub part_bytes: usize,
    pub parts_in_flight: usize,
    /// Makes a retried `UploadStart` answer the same upload; 0 opens a new one every time.
    pub client_upload_id: u64,
}

impl Default for UploadOptions {
    fn default() -> UploadOptions {
        UploadOptions {
            name: String::new(),
            mime_type: String::new(),
            part_bytes: PART_BYTES_DEFAULT,
            parts_in_flight: PARTS_IN_FLIGHT_DEFAULT,
            client_upload_id: 0,
        }
    }
}

/// How to download a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DownloadOptions {
    pub ranges_in_flight: usize,
}

impl Default for DownloadOptions {
    fn default() -> DownloadOptions {
        DownloadOptions { ranges_in_flight: RANGES_IN_FLIGHT_DEFAULT }
    }
}

impl BlockingClient {
    /// Uploads everything `reader` yields as one file and answers its reference. With
    /// `total_bytes` the server refuses a file over its maximum at once, and the upload fails
    /// if the reader yields another size. On failure the upload is cancelled (best effort).
    pub fn upload_file(
        &self,
        mut reader: impl Read,
        total_bytes: Option<u64>,
        options: &UploadOptions,
        mut progress: impl FnMut(Progress),
    ) -> Result<UploadedFile, TransferError> {
        if !is_full_part_size(options.part_bytes) {
            return Err(TransferError::PartSize(options.part_bytes));
        }
        if total_bytes.is_some_and(|total| total > FILE_BYTES_MAX) {
            return Err(TransferError::TooLarge { max: FILE_BYTES_MAX });
        }
        let transfer = Transfer { client: self.client(), timeout: self.call_timeout() };
        async_io::block_on(transfer.upload(&mut reader, total_bytes, options, &mut progress))
    }

    /// Downloads the whole file of media message `message` of `chat` into `writer` and answers
    /// its description.
    pub fn download_file(
        &self,
        chat: ChatId,
        message: MessageId,
        options: &DownloadOptions,
        mut writer: impl Write,
        mut progress: impl FnMut(Progress),
    ) -> Result<FileInfo, TransferError> {
        let transfer = Transfer { client: self.client(), timeout: self.call_timeout() };
        async_io::block_on(transfer.download(chat, message, options, &mut writer, &mut progress))
    }
}

// Helpers.

/// A transfer's connection and the time each answer may take.
struct Transfer<'a> {
    client: &'a Client,
    timeout: Duration,
}

/// One request in flight, kept so that it can be sent again.
struct InFlight {
    request: Request,
    submitted: Submitted,
}

impl Transfer<'_> {
    async fn upload(
        &self,
        reader: &mut dyn Read,
        total_bytes: Option<u64>,
        options: &UploadOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<UploadedFile, TransferError> {
        let start = Request::UploadStart { client_upload_id: options.client_upload_id, total_bytes };
        let upload_id = match self.call(start).await? {
            Response::UploadStarted { upload_id } => upload_id,
            other => return Err(unexpected("UploadStarted", other).into()),
        };
        let result = self.upload_parts(upload_id, reader, total_bytes, options, progress).await;
        if result.is_err() && !self.client.is_closed() {
            // Gives the server its staging space back now rather than when the upload expires.
            let _ = within(self.timeout, self.client.call(Request::UploadCancel { upload_id })).await;
        }
        result
    }

    async fn upload_parts(
        &self,
        upload_id: UploadId,
        reader: &mut dyn Read,
        total_bytes: Option<u64>,
        options: &UploadOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<UploadedFile, TransferError> {
        let in_flight = options.parts_in_flight.clamp(1, IN_FLIGHT_MAX);
        let mut window: VecDeque<InFlight> = VecDeque::with_capacity(in_flight);
        let (mut parts, mut stored, mut read) = (0u32, 0u64, 0u64);
        let mut ended = false;
        progress(Progress { bytes_done: 0, bytes_total: total_bytes });
        loop {
            while !ended && window.len() < in_flight {
                let bytes = read_part(reader, options.part_bytes).map_err(TransferError::Read)?;
                ended = bytes.len() < options.part_bytes;
                if bytes.is_empty() {
                    break;
                }
                if parts >= UPLOAD_PARTS_MAX {
                    return Err(TransferError::TooLarge { max: FILE_BYTES_MAX });
                }
                read += bytes.len() as u64;
                if total_bytes.is_some_and(|total| read > total) {
                    return Err(TransferError::SizeChanged { announced: total_bytes.unwrap_or(0), read });
                }
                window.push_back(self.submit(Request::UploadPart { upload_id, part: parts, bytes }).await?);
                parts += 1;
            }
            let Some(oldest) = window.pop_front() else { break };
            let Request::UploadPart { bytes, .. } = &oldest.request else { unreachable!("the window holds parts") };
            let length = bytes.len() as u64;
            match self.answer(oldest).await? {
                Response::PartStored { .. } => stored += length,
                other => return Err(unexpected("PartStored", other).into()),
            }
            progress(Progress { bytes_done: stored, bytes_total: total_bytes });
        }
        if let Some(announced) = total_bytes.filter(|&total| total != read) {
            return Err(TransferError::SizeChanged { announced, read });
        }
        let finish = Request::UploadFinish {
            parts,
            upload_id,
            total_bytes: Some(read),
            name: options.name.clone(),
            mime_type: options.mime_type.clone(),
        };
        match self.call(finish).await? {
            Response::UploadFinished { file, size } => Ok(UploadedFile { file, size }),
            other => Err(unexpected("UploadFinished", other).into()),
        }
    }

    async fn download(
        &self,
        chat: ChatId,
        message: MessageId,
        options: &DownloadOptions,
        writer: &mut dyn Write,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<FileInfo, TransferError> {
        let info = match self.call(Request::GetFileInfo { chat, message }).await? {
            Response::FileInfo(info) => info,
            other => return Err(unexpected("FileInfo", other).into()),
        };
        let range = u64::from(DOWNLOAD_LIMIT_BYTES_MAX);
        let in_flight = options.ranges_in_flight.clamp(1, IN_FLIGHT_MAX);
        let mut window: VecDeque<InFlight> = VecDeque::with_capacity(in_flight);
        let (mut next, mut written) = (0u64, 0u64);
        progress(Progress { bytes_done: 0, bytes_total: Some(info.size) });
        loop {
            while next < info.size && window.len() < in_flight {
                let request = Request::GetFile { chat, message, offset: next, limit: DOWNLOAD_LIMIT_BYTES_MAX };
                window.push_back(self.submit(request).await?);
                next += range;
            }
            let Some(oldest) = window.pop_front() else { break };
            let Request::GetFile { offset, .. } = oldest.request else { unreachable!("the window holds ranges") };
            let bytes = match self.answer(oldest).await? {
                Response::FileBytes { bytes } => bytes,
                other => return Err(unexpected("FileBytes", other).into()),
            };
            let expected = (info.size - offset).min(range);
            if bytes.len() as u64 != expected {
                return Err(TransferError::WrongLength { offset, expected, received: bytes.len() as u64 });
            }
            writer.write_all(&bytes).map_err(TransferError::Write)?;
            written += expected;
            progress(Progress { bytes_done: written, bytes_total: Some(info.size) });
        }
        writer.flush().map_err(TransferError::Write)?;
        Ok(info)
    }

    /// One request, waiting for its answer (with the retries of `answer`).
    async fn call(&self, request: Request) -> Result<Response, ClientError> {
        let in_flight = self.submit(request).await?;
        self.answer(in_flight).await
    }

    async fn submit(&self, request: Request) -> Result<InFlight, ClientError> {
        let submitted = self.client.submit(&request).await?;
        Ok(InFlight { request, submitted })
    }

    /// The answer to a request in flight, sending it again (at most `RETRIES_MAX` times) while
    /// the server answers `OVERLOADED` or `FLOOD_WAIT`.
    async fn answer(&self, mut in_flight: InFlight) -> Result<Response, ClientError> {
        let mut retries = 0;
        loop {
            let answer = within(self.timeout, in_flight.submitted.answer()).await.unwrap_or(Err(ClientError::Timeout));
            match answer {
                Err(error) if retryable(&error) && retries < RETRIES_MAX => {
                    retries += 1;
                    Timer::after(retry_wait(&error)).await;
                    in_flight.submitted = self.client.submit(&in_flight.request).await?;
                }
                answer => return answer,
            }
        }
    }
}

/// Whether the server asked for the request to be sent again later.
fn retryable(error: &ClientError) -> bool {
    matches!(error.code(), Some(ErrorCode::Overloaded | ErrorCode::FloodWait))
}

/// How long to wait before sending a refused request again.
pub fn retry_wait(error: &ClientError) -> Duration {
    error.retry_after().unwrap_or(RETRY_WAIT_DEFAULT).min(RETRY_WAIT_MAX)
}

/// Reads up to `part_bytes` from `reader`: a shorter part only at the end of the input.
fn read_part(reader: &mut dyn Read, part_bytes: usize) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0; part_bytes];
    let mut filled = 0;
    while filled < part_bytes {
        match reader.read(&mut bytes[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    bytes.truncate(filled);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ErrorBody;

    /// A reader that hands out at most `step` bytes a call, as pipes and sockets do.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let take = self.bytes.len().min(out.len()).min(self.step);
            out[..take].copy_from_slice(&self.bytes[..take]);
            self.bytes = &self.bytes[take..];
            Ok(take)
        }
    }

    // Parts are whole even from a reader that returns a few bytes a call; only the last part
    // is short, and the end of the input gives an empty part.
    #[test]
    fn parts_are_whole_from_any_reader() {
        let data: Vec<u8> = (0..10_000u32).map(|index| index as u8).collect();
        let mut reader = Trickle { bytes: &data, step: 333 };
        let first = read_part(&mut reader, 4096).unwrap();
        let second = read_part(&mut reader, 4096).unwrap();
        let third = read_part(&mut reader, 4096).unwrap();
        assert_eq!((first.len(), second.len(), third.len()), (4096, 4096, 10_000 - 8192));
        assert_eq!([first, second, third].concat(), data);
        assert!(read_part(&mut reader, 4096).unwrap().is_empty());
    }

    // OVERLOADED and FLOOD_WAIT are retried after the server's delay, bounded by the maximum;
    // other errors are not retried.
    #[test]
    fn retries_follow_the_server() {
        let overloaded =
            ClientError::Server(ErrorBody { code: ErrorCode::Overloaded, message: "busy".into(), retry_after_s: 2 });
        assert!(retryable(&overloaded));
        assert_eq!(retry_wait(&overloaded), Duration::from_secs(2));
        let flood = ClientError::Server(ErrorBody::flood_wait(3600));
        assert!(retryable(&flood));
        assert_eq!(retry_wait(&flood), RETRY_WAIT_MAX);
        let missing = ClientError::Server(ErrorBody::new(ErrorCode::FilePartsMissing, "1 part is missing: 3"));
        assert!(!retryable(&missing));
        assert!(!retryable(&ClientError::Closed));
    }
}
