//! Newtypes for the numbers the engine passes around, so a log sequence number is never
//! mistaken for a shard index or a virtual shard.

use std::fmt;

/// How many virtual shards the key space is cut into (DESIGN §2). Ids carry their vshard in
/// the low 12 bits, so routing an id is a mask.
pub const VSHARD_COUNT: usize = 4096;
const _: () = assert!(VSHARD_COUNT.is_power_of_two());
const _: () = assert!(VSHARD_COUNT <= u16::MAX as usize);

/// A log sequence number: dense per shard, starting at 1. `Lsn::ZERO` means "nothing yet".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);
    pub const FIRST: Lsn = Lsn(1);

    pub fn next(self) -> Lsn {
        Lsn(self.0 + 1)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One of the 4096 virtual shards. Always `< VSHARD_COUNT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VShard(u16);

impl VShard {
    /// The vshard of a raw number, reduced modulo the vshard count.
    pub fn of(value: u64) -> VShard {
        VShard((value % VSHARD_COUNT as u64) as u16)
    }

    /// A vshard from its index; `None` when out of range (such a value can only come from
    /// corrupt or hostile input).
    pub fn new(index: u16) -> Option<VShard> {
        ((index as usize) < VSHARD_COUNT).then_some(VShard(index))
    }

    pub fn index(self) -> u16 {
        self.0
    }
}

impl fmt::Display for VShard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// A shard: one glommio executor pinned to one core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u16);

impl ShardId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard-{}", self.0)
    }
}

/// A WAL segment's number, which is also its epoch: every batch and record written into the
/// segment is checksummed with a seed derived from it, so bytes left over from the segment's
/// previous life (it was recycled under a new number) never verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId(pub u64);

impl SegmentId {
    pub fn next(self) -> SegmentId {
        SegmentId(self.0 + 1)
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:020}", self.0)
    }
}

/// What a record means to the layer that wrote it. The log does not interpret it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordKind(pub u16);
