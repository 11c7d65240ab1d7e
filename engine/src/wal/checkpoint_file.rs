//! A checkpoint file written while its state is still being produced.
//!
//! At 10 M messages a shard's state archives to about 1.9 GB. Built whole before being
//! written, it was a second copy of the state in memory, and every checkpoint larger than the
//! last touched fresh memory (on the VMs measured, 2 s per GB of page clearing on the shard's
//! core). A [`CheckpointSink`] instead copies the state's bytes into the file's write buffers
//! as they come, `in_flight` writes at a time, so the producer waits for the disk when it
//! runs ahead and the memory a checkpoint needs no longer grows with the state. (Writes are
//! many at a time because one at a time a checkpoint of a gigabyte took 5–7 s to write while
//! the shard was busy, about 200 MB/s of a disk that writes 2 GB/s: each write waited for the
//! disk and then for the checkpoint queue's next turn on the core.)
//!
//! The header, which holds the state's length and checksum, is known only at the end. Its
//! place is left zeroed in the first block, and the first block is written again with it
//! once the rest is written. The file has a temporary name until the log renames it
//! (`ShardLog::checkpoint_with`), after the sink is finished and synced and the ticket's LSN
//! is durable, so a crash leaves the previous checkpoints and perhaps a temporary file that
//! the next open removes, never a half-written checkpoint under a checkpoint's name.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions};
use xxhash_rust::xxh3::Xxh3;

use crate::config::{CHECKPOINT_SYNC_EVERY_BYTES, PREWRITE_CHUNK_BYTES};
use crate::wal::checkpoint::{encode_header, CHECKPOINT_HEADER_BYTES};
use crate::wal::chunked::ChunkedBytes;
use crate::wal::core::{block_aligned, CheckpointTicket};
use crate::wal::driver::CheckpointError;
use crate::wal::format::BLOCK_BYTES;

type Write = glommio::Task<(glommio::Result<usize, ()>, usize)>;

/// Where a checkpoint's state goes as it is produced: its file, under a temporary name.
pub struct CheckpointSink {
    /// The checkpoint's own name, for errors; the file is written under `temporary`.
    path: PathBuf,
    file: Rc<DmaFile>,
    salt: u64,
    /// Checksum and length of the state written so far.
    hasher: Xxh3,
    state_bytes: u64,
    /// The write buffer being filled, how much of it is, and the file offset it goes to.
    buffer: DmaBuffer,
    filled: usize,
    offset: u64,
    /// The file's first block as first written, its header still zeros.
    first_block: Option<Box<[u8]>>,
    writes: VecDeque<Write>,
    in_flight: usize,
    /// Bytes written since the file was last synced.
    unsynced: usize,
}

impl CheckpointSink {
    /// Creates `temporary`, empty, to become checkpoint `path`.
    pub(crate) async fn create(
        path: &Path,
        temporary: &Path,
        salt: u64,
        in_flight: usize,
    ) -> Result<CheckpointSink, CheckpointError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .dma_open(temporary)
            .await
            .map_err(|error| CheckpointError::Io { path: path.to_path_buf(), source: error.into() })?;
        let mut buffer = glommio::allocate_dma_buffer(PREWRITE_CHUNK_BYTES);
        buffer.as_bytes_mut()[..CHECKPOINT_HEADER_BYTES].fill(0);
        Ok(CheckpointSink {
            path: path.to_path_buf(),
            file: Rc::new(file),
            salt,
            hasher: Xxh3::with_seed(salt),
            state_bytes: 0,
            buffer,
            filled: CHECKPOINT_HEADER_BYTES,
            offset: 0,
            first_block: None,
            writes: VecDeque::with_capacity(in_flight.max(1)),
            in_flight: in_flight.max(1),
            unsynced: 0,
        })
    }

    /// How many bytes of state were written so far.
    pub fn state_bytes(&self) -> u64 {
        self.state_bytes
    }

    /// Appends `bytes` to the state. Waits while `in_flight` writes are pending.
    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), CheckpointError> {
        self.hasher.update(bytes);
        self.state_bytes += bytes.len() as u64;
        let mut rest = bytes;
        while !rest.is_empty() {
            let take = rest.len().min(self.buffer.len() - self.filled);
            self.buffer.as_bytes_mut()[self.filled..self.filled + take].copy_from_slice(&rest[..take]);
            self.filled += take;
            rest = &rest[take..];
            if self.filled == self.buffer.len() {
                self.flush().await.map_err(|source| self.error(source))?;
                glommio::yield_if_needed().await;
            }
        }
        Ok(())
    }

    /// Appends the bytes `bytes` holds; its chunks are free again once it is dropped.
    pub async fn write_chunks(&mut self, bytes: &ChunkedBytes) -> Result<(), CheckpointError> {
        for chunk in bytes.chunks() {
            self.write(chunk).await?;
        }
        Ok(())
    }

    /// Writes out what is buffered and the header for `ticket`, and syncs the file. It is
    /// then complete under its temporary name; the caller renames it.
    pub(crate) async fn finish(mut self, ticket: CheckpointTicket) -> Result<Rc<DmaFile>, CheckpointError> {
        let result = async {
            self.flush().await?;
            self.drain().await?;
            let header = encode_header(ticket, self.state_bytes, self.hasher.digest(), self.salt);
            let mut first = glommio::allocate_dma_buffer(BLOCK_BYTES);
            let written = self.first_block.as_deref().expect("a flush always writes the first block");
            first.as_bytes_mut().copy_from_slice(written);
            first.as_bytes_mut()[..CHECKPOINT_HEADER_BYTES].copy_from_slice(&header);
            self.writes.push_back(write_at(&self.file, first, 0));
            self.drain().await?;
            self.file.fdatasync().await.map_err(io::Error::from)
        }
        .await;
        result.map_err(|source| self.error(source))?;
        Ok(self.file)
    }

    /// Writes the buffer (zero-padded to a whole block) and begins a new one; syncs every
    /// `CHECKPOINT_SYNC_EVERY_BYTES`.
    async fn flush(&mut self) -> io::Result<()> {
        if self.filled == 0 {
            return Ok(());
        }
        let length = block_aligned(self.filled);
        let mut buffer = std::mem::replace(&mut self.buffer, glommio::allocate_dma_buffer(PREWRITE_CHUNK_BYTES));
        buffer.as_bytes_mut()[self.filled..length].fill(0);
        buffer.trim_to_size(length);
        if self.offset == 0 {
            self.first_block = Some(buffer.as_bytes()[..BLOCK_BYTES].into());
        }
        if self.writes.len() == self.in_flight {
            if let Some(oldest) = self.writes.pop_front() {
                check_written(oldest).await?;
            }
        }
        self.writes.push_back(write_at(&self.file, buffer, self.offset));
        self.offset += length as u64;
        self.filled = 0;
        self.unsynced += length;
        if self.unsynced >= CHECKPOINT_SYNC_EVERY_BYTES {
            // Sync as it grows: one fdatasync of a whole large file commits all its block
            // allocations at once, and the log's own fdatasync waits behind that commit.
            self.drain().await?;
            self.file.fdatasync().await?;
            self.unsynced = 0;
        }
        Ok(())
    }

    /// Waits for every pending write.
    async fn drain(&mut self) -> io::Result<()> {
        while let Some(write) = self.writes.pop_front() {
            check_written(write).await?;
        }
        Ok(())
    }

    fn error(&self, source: io::Error) -> CheckpointError {
        CheckpointError::Io { path: self.path.clone(), source }
    }
}

impl std::fmt::Debug for CheckpointSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSink")
            .field("path", &self.path)
            .field("state_bytes", &self.state_bytes)
            .field("offset", &self.offset)
            .field("writes", &self.writes.len())
            .finish_non_exhaustive()
    }
}

/// Begins writing `buffer` at `at`, in the current task queue (the checkpoints' own).
fn write_at(file: &Rc<DmaFile>, buffer: DmaBuffer, at: u64) -> Write {
    let file = file.clone();
    let length = buffer.len();
    glommio::spawn_local(async move { (file.write_at(buffer, at).await, length) })
}

/// Waits for a checkpoint write and refuses a short one.
async fn check_written(write: Write) -> io::Result<()> {
    let (written, length) = write.await;
    if written.map_err(io::Error::from)? != length {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "a checkpoint write was short"));
    }
    Ok(())
}
