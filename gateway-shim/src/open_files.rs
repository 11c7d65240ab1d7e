//! How many client connections the process's open-files limit leaves room for. A connection
//! holds one descriptor, its socket (the reader and writer share it); the data files, the
//! listeners and the executors' rings hold the rest.

use std::io;

/// Descriptors kept free for what opens after start: WAL segments and checkpoints, media
/// segments, the push host's and the metrics endpoint's connections, and sockets accepted only
/// to be refused. A quarter of the limit when that is less, so a small limit still leaves
/// most of itself to clients.
pub const OPEN_FILES_HEADROOM: u64 = 1024;

/// The process's open-files limit and the descriptors open at the time it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft `RLIMIT_NOFILE`.
    pub limit: u64,
    /// The hard limit: what the soft one can be raised to.
    pub limit_hard: u64,
    pub in_use: u64,
}

impl OpenFiles {
    /// Raises the soft limit to the hard limit (when lower), then reads both and counts the
    /// descriptors open now.
    pub fn raise() -> io::Result<OpenFiles> {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return Err(io::Error::last_os_error());
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        OpenFiles::read()
    }

    /// Reads the limits and counts the descriptors open now (`/proc/self/fd`).
    pub fn read() -> io::Result<OpenFiles> {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit only writes the struct passed to it.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // The directory's own descriptor, open while it is listed, is counted too: one spare.
        let in_use = std::fs::read_dir("/proc/self/fd")?.count() as u64;
        Ok(OpenFiles { limit: limit.rlim_cur, limit_hard: limit.rlim_max, in_use })
    }

    /// Client connections the limit leaves room for, after the descriptors open now and
    /// the headroom ([`OPEN_FILES_HEADROOM`], or a quarter of a smaller limit).
    pub fn connections_max(&self) -> u64 {
        let headroom = OPEN_FILES_HEADROOM.min(self.limit / 4);
        self.limit.saturating_sub(self.in_use.saturating_add(headroom))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The count sees the descriptors this process holds, and the connections allowed are what
    // the limit leaves after them and the headroom.
    #[test]
    fn counts_open_descriptors() {
        let files: Vec<std::fs::File> = (0..8).map(|_| std::fs::File::open("/proc/self/status").unwrap()).collect();
        let after = OpenFiles::read().unwrap();
        assert!(after.in_use >= 8, "{after:?}");
        drop(files);
        assert!(after.limit <= after.limit_hard);
        let figures = OpenFiles { limit: 20_000, limit_hard: 20_000, in_use: 15 };
        assert_eq!(figures.connections_max(), 20_000 - 15 - OPEN_FILES_HEADROOM);
        let small = OpenFiles { limit: 1024, limit_hard: 1024, in_use: 40 };
        assert_eq!(small.connections_max(), 1024 - 40 - 256);
        let exhausted = OpenFiles { limit: 64, limit_hard: 64, in_use: 60 };
        assert_eq!(exhausted.connections_max(), 0);
    }
}
