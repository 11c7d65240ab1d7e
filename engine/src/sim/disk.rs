//! An in-memory disk for the simulator: named files whose writes stay volatile until synced,
//! a crash that keeps, loses or tears each volatile write the way a real disk may, and
//! injected faults (failed writes and fsyncs, an fsync that lies, a full disk, flipped bits).
//!
//! Namespace operations (create, rename, delete) and the whole-file writes used for the meta
//! and checkpoint files are durable as soon as they return: the real driver makes them so with
//! a temporary file, `fsync`, `rename` and a directory `fsync`, which either happen or not.

use std::collections::BTreeMap;

use crate::sim::rng::SimRng;
use crate::wal::core::IoFailure;
use crate::wal::format::BLOCK_BYTES;

/// The unit in which a torn block may be partly written.
pub const SECTOR_BYTES: usize = 512;

/// The operations faults can be injected into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    Write,
    Sync,
    Prepare,
}

impl OpKind {
    fn index(self) -> usize {
        match self {
            OpKind::Write => 0,
            OpKind::Sync => 1,
            OpKind::Prepare => 2,
        }
    }
}

/// What a crash does to the writes that were never synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Each volatile write independently survives whole, is lost, or is torn: a random subset
    /// of its blocks survives, and maybe one more block is partly written.
    Random,
    /// Every volatile write is lost.
    LoseAll,
    /// Every volatile write survives.
    KeepAll,
    /// Every volatile write keeps its first block only.
    KeepFirstBlock,
}

/// What an injected fault does when its operation comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// The operation returns an error.
    Fail,
    /// A sync returns success without persisting anything (a lying disk cache).
    Lie,
}

#[derive(Clone)]
struct VolatileWrite {
    offset: u64,
    bytes: Vec<u8>,
}

#[derive(Clone, Default)]
struct SimFile {
    durable: Vec<u8>,
    /// Writes not yet synced, oldest first; a read sees them applied in order.
    volatile: Vec<VolatileWrite>,
}

/// Sizes only: a failing test's message must not carry megabytes of file contents.
impl std::fmt::Debug for SimFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let volatile: Vec<(u64, usize)> = self.volatile.iter().map(|write| (write.offset, write.bytes.len())).collect();
        f.debug_struct("SimFile").field("durable_bytes", &self.durable.len()).field("volatile", &volatile).finish()
    }
}

impl SimFile {
    /// The bytes a read returns: the durable ones with every volatile write applied.
    fn current(&self) -> Vec<u8> {
        let mut bytes = self.durable.clone();
        for write in &self.volatile {
            apply(&mut bytes, write.offset, &write.bytes);
        }
        bytes
    }

    fn length(&self) -> u64 {
        let volatile_end = self.volatile.iter().map(|write| write.offset + write.bytes.len() as u64).max().unwrap_or(0);
        (self.durable.len() as u64).max(volatile_end)
    }

    fn sync(&mut self) {
        self.sync_first(self.volatile.len());
    }

    /// Makes the oldest `count` volatile writes durable, leaving later ones volatile.
    fn sync_first(&mut self, count: usize) {
        let count = count.min(self.volatile.len());
        for write in self.volatile.drain(..count) {
            apply(&mut self.durable, write.offset, &write.bytes);
        }
    }
}

/// A deterministic in-memory disk. See the module documentation.
#[derive(Clone, Debug)]
pub struct SimDisk {
    files: BTreeMap<String, SimFile>,
    capacity_bytes: Option<u64>,
    /// Operations of each [`OpKind`] performed so far.
    operations: [u64; 3],
    /// Armed faults: the kind, the operation count at which it fires, and what it does.
    faults: Vec<(OpKind, u64, Fault)>,
    rng: SimRng,
}

impl SimDisk {
    /// An empty disk. `seed` drives everything the disk decides by itself: the log salt it
    /// hands out and how much of a failed write reached the cache.
    pub fn new(seed: u64) -> SimDisk {
        SimDisk {
            files: BTreeMap::new(),
            capacity_bytes: None,
            operations: [0; 3],
            faults: Vec::new(),
            rng: SimRng::new(seed),
        }
    }

    /// A random number from the disk's own generator (a real driver reads `getrandom`).
    pub fn random_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    pub fn exists(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }

    /// Names of all files, sorted.
    pub fn file_names(&self) -> Vec<String> {
        self.files.keys().cloned().collect()
    }

    /// The bytes that survive any crash.
    pub fn durable_bytes(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(|file| file.durable.as_slice())
    }

    /// The bytes a read returns now: durable bytes with the volatile writes applied.
    pub fn current_bytes(&self, name: &str) -> Option<Vec<u8>> {
        self.files.get(name).map(SimFile::current)
    }

    /// Reads `bytes` bytes at `offset` as the operating system would return them.
    pub fn read(&self, name: &str, offset: u64, bytes: usize) -> Result<Vec<u8>, IoFailure> {
        let file = self.files.get(name).ok_or_else(|| IoFailure::Other(format!("{name}: no such file")))?;
        let start =
            usize::try_from(offset).map_err(|_| IoFailure::Other(format!("{name}: offset {offset} too large")))?;
        let mut out = vec![0u8; bytes];
        let durable_end = file.durable.len().min(start + bytes);
        if start < durable_end {
            out[..durable_end - start].copy_from_slice(&file.durable[start..durable_end]);
        }
        for write in &file.volatile {
            let write_start = write.offset as usize;
            let write_end = write_start + write.bytes.len();
            let from = start.max(write_start);
            let to = (start + bytes).min(write_end);
            if from < to {
                out[from - start..to - start].copy_from_slice(&write.bytes[from - write_start..to - write_start]);
            }
        }
        Ok(out)
    }

    /// Writes not yet synced in a file: what a sync issued now is sure to cover.
    pub fn volatile_writes(&self, name: &str) -> usize {
        self.files.get(name).map_or(0, |file| file.volatile.len())
    }

    /// Bytes all files take.
    pub fn used_bytes(&self) -> u64 {
        self.files.values().map(SimFile::length).sum()
    }

    /// Once set, creating a file that would take the disk past `capacity` bytes fails with
    /// [`IoFailure::NoSpace`]. `None` removes the limit.
    pub fn set_capacity_bytes(&mut self, capacity: Option<u64>) {
        self.capacity_bytes = capacity;
    }

    /// Makes the `n`th operation of `kind` from now on (1 = the next one) return an error. A
    /// failed write may still leave some of its leading blocks in the cache, as a real one may.
    pub fn fail_nth_op(&mut self, n: u64, kind: OpKind) {
        assert!(n >= 1, "operations are counted from 1");
        self.faults.push((kind, self.operations[kind.index()] + n, Fault::Fail));
    }

    /// Makes the `n`th sync from now on report success without persisting anything.
    pub fn lie_on_nth_sync(&mut self, n: u64) {
        assert!(n >= 1, "operations are counted from 1");
        self.faults.push((OpKind::Sync, self.operations[OpKind::Sync.index()] + n, Fault::Lie));
    }

    /// Writes `bytes` at `offset`; they stay volatile until the file is synced.
    pub fn write(&mut self, name: &str, offset: u64, bytes: &[u8]) -> Result<(), IoFailure> {
        let fault = self.count(OpKind::Write);
        let file = self.files.get_mut(name).ok_or_else(|| IoFailure::Other(format!("{name}: no such file")))?;
        if fault == Some(Fault::Fail) {
            // Some leading blocks of a failed write may have reached the cache anyway.
            let blocks = bytes.len().div_ceil(BLOCK_BYTES);
            let kept = (self.rng.below(blocks as u64 + 1) as usize * BLOCK_BYTES).min(bytes.len());
            if kept > 0 {
                file.volatile.push(VolatileWrite { offset, bytes: bytes[..kept].to_vec() });
            }
            return Err(IoFailure::Other(format!("{name}: injected write failure at offset {offset}")));
        }
        file.volatile.push(VolatileWrite { offset, bytes: bytes.to_vec() });
        Ok(())
    }

    /// `fdatasync`: makes the file's writes durable. A failed sync leaves them volatile (and the
    /// caller must not retry as if nothing happened).
    pub fn sync(&mut self, name: &str) -> Result<(), IoFailure> {
        let count = self.volatile_writes(name);
        self.sync_writes(name, count)
    }

    /// An `fdatasync` that was issued when `count` writes were volatile: it makes those durable
    /// and nothing written after it was issued, the least a real one guarantees.
    pub fn sync_writes(&mut self, name: &str, count: usize) -> Result<(), IoFailure> {
        let fault = self.count(OpKind::Sync);
        let file = self.files.get_mut(name).ok_or_else(|| IoFailure::Other(format!("{name}: no such file")))?;
        match fault {
            Some(Fault::Fail) => Err(IoFailure::Other(format!("{name}: injected fsync failure"))),
            Some(Fault::Lie) => Ok(()),
            None => {
                file.sync_first(count);
                Ok(())
            }
        }
    }

    /// Makes `name` exist with `file_bytes` bytes, durably: by renaming `reuse` (keeping its old
    /// bytes), or by creating a zero-filled file, which needs the space.
    pub fn prepare(&mut self, name: &str, file_bytes: u64, reuse: Option<&str>) -> Result<(), IoFailure> {
        let fault = self.count(OpKind::Prepare);
        if fault.is_some() {
            return Err(IoFailure::Other(format!("{name}: injected prepare failure")));
        }
        if self.files.contains_key(name) {
            return Err(IoFailure::Other(format!("{name}: already exists")));
        }
        match reuse {
            Some(old) => {
                let file = self.files.remove(old).ok_or_else(|| IoFailure::Other(format!("{old}: no such file")))?;
                self.files.insert(name.to_string(), file);
            }
            None => {
                if self.capacity_bytes.is_some_and(|capacity| self.used_bytes() + file_bytes > capacity) {
                    return Err(IoFailure::NoSpace);
                }
                let length = usize::try_from(file_bytes).map_err(|_| IoFailure::NoSpace)?;
                self.files.insert(name.to_string(), SimFile { durable: vec![0u8; length], volatile: Vec::new() });
            }
        }
        Ok(())
    }

    /// Replaces the whole file durably and atomically (temporary file, fsync, rename, directory
    /// fsync). Used for the meta and checkpoint files; not subject to faults or capacity.
    pub fn write_file_durable(&mut self, name: &str, bytes: &[u8]) {
        self.files.insert(name.to_string(), SimFile { durable: bytes.to_vec(), volatile: Vec::new() });
    }

    /// Writes in place and syncs the file, as a repair does.
    pub fn write_durable(&mut self, name: &str, offset: u64, bytes: &[u8]) -> Result<(), IoFailure> {
        let file = self.files.get_mut(name).ok_or_else(|| IoFailure::Other(format!("{name}: no such file")))?;
        file.sync();
        apply(&mut file.durable, offset, bytes);
        Ok(())
    }

    /// Deletes a file durably; false if there was none.
    pub fn delete(&mut self, name: &str) -> bool {
        self.files.remove(name).is_some()
    }

    /// Flips one bit of the file's durable bytes (bit rot, a misdirected write).
    pub fn flip_bit(&mut self, name: &str, offset: u64, bit: u8) {
        let file = self.files.get_mut(name).unwrap_or_else(|| panic!("flip_bit: {name} does not exist"));
        let at = offset as usize;
        assert!(
            at < file.durable.len(),
            "flip_bit: offset {offset} beyond the {} durable bytes of {name}",
            file.durable.len()
        );
        file.durable[at] ^= 1 << (bit % 8);
    }

    /// Power loss: every volatile write independently survives, is lost, or is torn.
    pub fn crash(&mut self, rng: &mut SimRng) {
        self.crash_with(CrashMode::Random, rng);
    }

    /// Power loss with a chosen fate for the volatile writes.
    pub fn crash_with(&mut self, mode: CrashMode, rng: &mut SimRng) {
        for file in self.files.values_mut() {
            for write in std::mem::take(&mut file.volatile) {
                let fate = match mode {
                    CrashMode::Random => match rng.below(3) {
                        0 => CrashMode::KeepAll,
                        1 => CrashMode::LoseAll,
                        _ => CrashMode::Random,
                    },
                    other => other,
                };
                match fate {
                    CrashMode::KeepAll => apply(&mut file.durable, write.offset, &write.bytes),
                    CrashMode::LoseAll => {}
                    CrashMode::KeepFirstBlock => {
                        let first = block_ranges(write.offset, write.bytes.len()).next().unwrap_or(0..0);
                        apply(&mut file.durable, write.offset, &write.bytes[first]);
                    }
                    CrashMode::Random => tear(&mut file.durable, &write, rng),
                }
            }
        }
    }

    /// Counts an operation of `kind` and returns the fault armed for it, if any.
    fn count(&mut self, kind: OpKind) -> Option<Fault> {
        self.operations[kind.index()] += 1;
        let now = self.operations[kind.index()];
        let position = self.faults.iter().position(|&(fault_kind, at, _)| fault_kind == kind && at == now)?;
        Some(self.faults.swap_remove(position).2)
    }
}

/// A torn write: each block survives with even odds, and one lost block may be partly written
/// (a prefix of whole sectors, or of bytes on a device without atomic sectors).
fn tear(durable: &mut Vec<u8>, write: &VolatileWrite, rng: &mut SimRng) {
    let mut lost = Vec::new();
    for range in block_ranges(write.offset, write.bytes.len()) {
        if rng.chance(1, 2) {
            apply(durable, write.offset + range.start as u64, &write.bytes[range]);
        } else {
            lost.push(range);
        }
    }
    if !lost.is_empty() && rng.chance(1, 2) {
        let range = lost[rng.index(lost.len())].clone();
        let length = range.len();
        let prefix = if rng.chance(1, 2) {
            (rng.below((length / SECTOR_BYTES) as u64 + 1) as usize * SECTOR_BYTES).min(length)
        } else {
            rng.below(length as u64 + 1) as usize
        };
        apply(durable, write.offset + range.start as u64, &write.bytes[range.start..range.start + prefix]);
    }
}

/// The pieces of a write of `length` bytes at `offset` that fall in distinct disk blocks, as
/// ranges of the write's bytes.
fn block_ranges(offset: u64, length: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let mut start = 0usize;
    std::iter::from_fn(move || {
        if start >= length {
            return None;
        }
        let absolute = offset as usize + start;
        let block_end = (absolute / BLOCK_BYTES + 1) * BLOCK_BYTES;
        let end = (block_end - offset as usize).min(length);
        let range = start..end;
        start = end;
        Some(range)
    })
}

fn apply(bytes: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = offset as usize;
    let end = start + data.len();
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[start..end].copy_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_with_file() -> SimDisk {
        let mut disk = SimDisk::new(1);
        disk.prepare("file", 4 * BLOCK_BYTES as u64, None).expect("an unlimited disk has room");
        disk
    }

    /// Proves writes are visible at once but survive a crash only once synced.
    #[test]
    fn writes_are_volatile_until_synced() {
        let mut disk = disk_with_file();
        let mut rng = SimRng::new(2);
        disk.write("file", 0, &[7u8; BLOCK_BYTES]).expect("write");
        assert_eq!(disk.read("file", 0, 4).expect("read"), vec![7u8; 4]);
        assert_eq!(disk.durable_bytes("file").expect("exists")[0], 0);
        disk.sync("file").expect("sync");
        disk.write("file", BLOCK_BYTES as u64, &[9u8; BLOCK_BYTES]).expect("write");
        disk.crash_with(CrashMode::LoseAll, &mut rng);
        let bytes = disk.current_bytes("file").expect("exists");
        assert_eq!(bytes[0], 7, "the synced write survives");
        assert_eq!(bytes[BLOCK_BYTES], 0, "the unsynced write is lost");
    }

    /// Proves a random crash produces every fate: whole, lost, and torn writes with some blocks
    /// kept and others not.
    #[test]
    fn random_crash_keeps_loses_and_tears() {
        let (mut whole, mut lost, mut torn) = (0, 0, 0);
        for seed in 0..200 {
            let mut disk = disk_with_file();
            let mut rng = SimRng::new(seed);
            disk.write("file", 0, &[0xAB; 4 * BLOCK_BYTES]).expect("write");
            disk.crash(&mut rng);
            let bytes = disk.current_bytes("file").expect("exists");
            let kept = bytes.iter().filter(|&&byte| byte == 0xAB).count();
            match kept {
                0 => lost += 1,
                n if n == 4 * BLOCK_BYTES => whole += 1,
                _ => torn += 1,
            }
        }
        assert!(whole > 0 && lost > 0 && torn > 0, "whole {whole}, lost {lost}, torn {torn}");
    }

    /// Proves injected faults fire on exactly the chosen operation, and that a full disk
    /// refuses new files but not renames.
    #[test]
    fn faults_fire_on_the_chosen_operation() {
        let mut disk = disk_with_file();
        disk.fail_nth_op(2, OpKind::Sync);
        assert!(disk.sync("file").is_ok());
        assert!(disk.sync("file").is_err());
        assert!(disk.sync("file").is_ok());
        disk.lie_on_nth_sync(1);
        disk.write("file", 0, &[1u8; 8]).expect("write");
        disk.sync("file").expect("a lying sync reports success");
        assert_eq!(disk.volatile_writes("file"), 1, "a lying sync persists nothing");
        disk.set_capacity_bytes(Some(disk.used_bytes() + 100));
        assert_eq!(disk.prepare("other", 4096, None), Err(IoFailure::NoSpace));
        assert_eq!(disk.prepare("renamed", 4096, Some("file")), Ok(()));
        assert!(!disk.exists("file") && disk.exists("renamed"));
    }
}
