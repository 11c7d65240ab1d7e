//! Several shards' logs, each on its own [`SimDisk`], stepped in a seeded random interleaving
//! under one simulated clock, each crashing on its own.

use crate::config::LogConfig;
use crate::sim::disk::{CrashMode, SimDisk};
use crate::sim::log::{OpenFailure, Recovered, SimLog};
use crate::sim::rng::SimRng;

/// Most milliseconds the clock moves per tick.
const TICK_MS_MAX: u64 = 2;

/// A simulated multi-shard engine's logs. See the module documentation.
#[derive(Debug)]
pub struct SimCluster {
    config: LogConfig,
    rng: SimRng,
    now_ms: u64,
    /// `None` only while a shard is between crash and reopen.
    shards: Vec<Option<SimLog>>,
}

impl SimCluster {
    /// Opens `shard_count` logs on fresh disks. Everything after follows from `seed`.
    pub fn open(seed: u64, shard_count: usize, config: LogConfig) -> Result<SimCluster, Box<OpenFailure>> {
        let mut rng = SimRng::new(seed);
        let mut shards = Vec::with_capacity(shard_count);
        for _ in 0..shard_count {
            let disk = SimDisk::new(rng.next_u64());
            let (log, _) = SimLog::open(disk, config.clone(), false)?;
            shards.push(Some(log));
        }
        Ok(SimCluster { config, rng, now_ms: 0, shards })
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    pub fn rng(&mut self) -> &mut SimRng {
        &mut self.rng
    }

    pub fn log(&mut self, shard: usize) -> &mut SimLog {
        self.shards[shard].as_mut().expect("a shard is open between operations")
    }

    /// A shard's log together with the cluster's random generator.
    pub fn log_and_rng(&mut self, shard: usize) -> (&mut SimLog, &mut SimRng) {
        (self.shards[shard].as_mut().expect("a shard is open between operations"), &mut self.rng)
    }

    /// Moves the clock forward a little on every shard and completes one request on a random
    /// shard. False when that shard had nothing to do.
    pub fn tick(&mut self) -> bool {
        let elapsed = self.rng.below(TICK_MS_MAX + 1);
        self.now_ms += elapsed;
        for log in self.shards.iter_mut().flatten() {
            log.advance_time(elapsed);
        }
        let shard = self.rng.index(self.shards.len());
        let (log, rng) = self.log_and_rng(shard);
        log.step(rng)
    }

    /// Power loss on one shard's machine, then recovery.
    pub fn crash(&mut self, shard: usize, mode: CrashMode) -> Result<Recovered, Box<OpenFailure>> {
        let log = self.shards[shard].take().expect("a shard is open between operations");
        let disk = log.crash_with(mode, &mut self.rng);
        self.reopen(shard, disk)
    }

    /// The shard's process dies and restarts; its machine keeps the page cache.
    pub fn kill(&mut self, shard: usize) -> Result<Recovered, Box<OpenFailure>> {
        let log = self.shards[shard].take().expect("a shard is open between operations");
        let disk = log.kill(&mut self.rng);
        self.reopen(shard, disk)
    }

    fn reopen(&mut self, shard: usize, disk: SimDisk) -> Result<Recovered, Box<OpenFailure>> {
        let (mut log, recovered) = SimLog::open(disk, self.config.clone(), false)?;
        log.advance_time(self.now_ms);
        self.shards[shard] = Some(log);
        Ok(recovered)
    }
}
