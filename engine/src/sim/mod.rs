//! A deterministic simulator for the write-ahead log: an in-memory disk that loses, keeps or
//! tears unsynced writes at a crash and takes injected faults, a driver that runs
//! [`LogCore`](crate::wal::LogCore) on it and recovers it exactly as the glommio driver does,
//! and a multi-shard scheduler. Everything follows from a seed, so a failing run replays.

pub mod cluster;
pub mod disk;
pub mod log;
pub mod messaging;
pub mod rng;

pub use self::cluster::SimCluster;
pub use self::disk::{CrashMode, OpKind, SimDisk};
pub use self::log::{
    segment_file_name, OpenError, OpenFailure, ReadError, Recovered, RecoveredCheckpoint, SimError, SimLog,
};
pub use self::rng::SimRng;
