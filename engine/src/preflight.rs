//! Start-up checks (DESIGN §2): each failure is one clear message that says how to fix it,
//! instead of an obscure error from deep inside glommio later.

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Locked memory glommio needs per executor for its io_uring rings (NOTES-runtime).
pub const LOCKED_MEMORY_BYTES_MIN: u64 = 512 << 10;
const DMA_PROBE_FILE: &str = ".dma-probe";
const DMA_PROBE_BYTES: usize = 4096;

/// A start-up check that failed, with its fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PreflightError {
    #[error("io_uring is not usable here ({0}). Fix: run on Linux 5.8 or newer with io_uring enabled (sysctl kernel.io_uring_disabled=0) and, in a container, a seccomp profile that allows io_uring_setup/io_uring_enter/io_uring_register")]
    IoUring(io::Error),
    #[error("the locked-memory limit is {limit_bytes} bytes; each shard needs at least {LOCKED_MEMORY_BYTES_MIN}. Fix: raise it with `ulimit -l unlimited` (or LimitMEMLOCK=infinity in the systemd unit)")]
    LockedMemory { limit_bytes: u64 },
    #[error("the data directory {path} does not support O_DIRECT ({source}); tmpfs and some network filesystems do not. Fix: put --data-dir on ext4 or xfs")]
    DirectIo { path: PathBuf, source: io::Error },
    #[error("cannot use the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: io::Error },
    #[error("DMA reads fail in {path} ({source}); the device may reject polled I/O. Fix: check /sys/block/*/queue/io_poll and report this with the kernel version")]
    DmaRead { path: PathBuf, source: io::Error },
}

/// The checks that need no executor: io_uring, locked memory, O_DIRECT in `data_dir`.
pub fn check_host(data_dir: &Path) -> Result<(), PreflightError> {
    check_io_uring()?;
    check_locked_memory()?;
    raise_open_file_limit();
    check_direct_io(data_dir)
}

/// Every segment of a log stays open; raise the soft limit on open files to the hard one so
/// a long log does not run into the default 1024.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read or write the one struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

fn check_io_uring() -> Result<(), PreflightError> {
    // struct io_uring_params, zeroed.
    let mut parameters = [0u8; 120];
    // SAFETY: io_uring_setup reads and writes only the parameter block it is given, which is
    // at least as large as the kernel's struct io_uring_params.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, parameters.as_mut_ptr()) };
    if fd < 0 {
        return Err(PreflightError::IoUring(io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by io_uring_setup and is owned by nobody else.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

fn check_locked_memory() -> Result<(), PreflightError> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return Ok(()); // cannot tell; glommio will report it if it matters
    }
    if limit.rlim_cur != libc::RLIM_INFINITY && limit.rlim_cur < LOCKED_MEMORY_BYTES_MIN {
        return Err(PreflightError::LockedMemory { limit_bytes: limit.rlim_cur });
    }
    Ok(())
}

fn check_direct_io(data_dir: &Path) -> Result<(), PreflightError> {
    std::fs::create_dir_all(data_dir)
        .map_err(|source| PreflightError::DataDir { path: data_dir.to_path_buf(), source })?;
    let path = data_dir.join(".direct-io-probe");
    let result = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path);
    let _ = std::fs::remove_file(&path);
    result.map(drop).map_err(|source| PreflightError::DirectIo { path: data_dir.to_path_buf(), source })
}

/// The DMA-read workaround of NOTES-runtime: glommio probes the device for polled I/O on the
/// first DMA open of each executor, and an empty file makes the probe wrongly succeed, after
/// which every read fails with EOPNOTSUPP. Opening a file that already holds a block first
/// gets the real answer. Must run on each executor before it opens any other DMA file; also
/// reads the block back, so a regression shows here and not on the first real read.
pub async fn probe_dma_reads(dir: &Path) -> Result<(), PreflightError> {
    let path = dir.join(DMA_PROBE_FILE);
    let error = |source: io::Error| PreflightError::DmaRead { path: path.clone(), source };
    let holds_a_block = std::fs::metadata(&path).is_ok_and(|metadata| metadata.len() >= DMA_PROBE_BYTES as u64);
    if !holds_a_block {
        std::fs::create_dir_all(dir).map_err(error)?;
        let file = std::fs::File::create(&path).map_err(error)?;
        use std::io::Write;
        (&file).write_all(&[0xA5; DMA_PROBE_BYTES]).map_err(error)?;
        file.sync_all().map_err(error)?;
    }
    let file = glommio::io::DmaFile::open(&path).await.map_err(|e| error(e.into()))?;
    let read = file.read_at_aligned(0, DMA_PROBE_BYTES).await.map_err(|e| error(e.into()));
    let _ = file.close().await;
    let bytes = read?;
    if bytes.len() != DMA_PROBE_BYTES || bytes.iter().any(|&byte| byte != 0xA5) {
        return Err(error(io::Error::new(io::ErrorKind::InvalidData, "probe block read back wrong")));
    }
    Ok(())
}
