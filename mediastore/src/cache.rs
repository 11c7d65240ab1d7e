//! The shard's chunk cache: whole chunks read from segments (or just written), least recently
//! used first out, bounded by bytes. Shard-local (`Rc`), so no locks.
//!
//! Reads in flight insert what they read when they finish, after the shard may have dropped
//! a chunk (compaction, an abandoned upload) whose key later names other bytes (a hash
//! collision gets the next free collision number). So every `remove` is counted, and a read
//! caches its chunks only if nothing was removed since it was planned ([`ChunkCache::removals`]).

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use crate::ids::ChunkKey;

/// A byte-bounded LRU of chunk payloads.
#[derive(Debug)]
pub struct ChunkCache {
    bytes_max: u64,
    bytes: u64,
    tick: u64,
    removals: u64,
    entries: HashMap<ChunkKey, (Rc<[u8]>, u64)>,
    /// Last-use tick → key; the first entry is the least recently used.
    order: BTreeMap<u64, ChunkKey>,
}

impl ChunkCache {
    pub fn new(bytes_max: u64) -> ChunkCache {
        ChunkCache { bytes_max, bytes: 0, tick: 0, removals: 0, entries: HashMap::new(), order: BTreeMap::new() }
    }

    pub fn get(&mut self, key: &ChunkKey) -> Option<Rc<[u8]>> {
        let (bytes, tick) = self.entries.get_mut(key)?;
        self.order.remove(tick);
        self.tick += 1;
        *tick = self.tick;
        self.order.insert(self.tick, *key);
        Some(bytes.clone())
    }

    /// Whether `key` is cached, without counting as a use.
    pub fn contains(&self, key: &ChunkKey) -> bool {
        self.entries.contains_key(key)
    }

    /// Caches `bytes` under `key`, evicting the least recently used entries to make room. A
    /// chunk larger than the whole cache is not kept.
    pub fn insert(&mut self, key: ChunkKey, bytes: Rc<[u8]>) {
        self.evict(&key);
        let size = bytes.len() as u64;
        if size > self.bytes_max {
            return;
        }
        while self.bytes + size > self.bytes_max {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            if let Some((evicted, _)) = self.entries.remove(&oldest) {
                self.bytes -= evicted.len() as u64;
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, key);
        self.entries.insert(key, (bytes, self.tick));
        self.bytes += size;
    }

    /// Forgets `key` because the shard no longer stores it (counted, cached or not).
    pub fn remove(&mut self, key: &ChunkKey) {
        self.removals += 1;
        self.evict(key);
    }

    /// How many keys were removed so far: a read planned when this was `n` may cache what it
    /// read only while it is still `n`.
    pub fn removals(&self) -> u64 {
        self.removals
    }

    fn evict(&mut self, key: &ChunkKey) {
        if let Some((bytes, tick)) = self.entries.remove(key) {
            self.order.remove(&tick);
            self.bytes -= bytes.len() as u64;
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> ChunkKey {
        ChunkKey { hash: u128::from(n), collision: 0 }
    }

    /// Proves the cache stays within its byte bound and evicts the least recently used chunk.
    #[test]
    fn evicts_least_recently_used_within_bytes() {
        let mut cache = ChunkCache::new(300);
        cache.insert(key(1), vec![1; 100].into());
        cache.insert(key(2), vec![2; 100].into());
        cache.insert(key(3), vec![3; 100].into());
        assert!(cache.get(&key(1)).is_some()); // 2 is now the least recently used
        cache.insert(key(4), vec![4; 100].into());
        assert!(cache.get(&key(2)).is_none());
        assert_eq!((cache.len(), cache.bytes()), (3, 300));
        cache.insert(key(5), vec![5; 301].into());
        assert!(cache.get(&key(5)).is_none(), "larger than the cache: not kept");
        assert_eq!(cache.bytes(), 300);
    }

    /// Proves removals are counted whether or not the key was cached, and that replacing or
    /// evicting an entry is not a removal.
    #[test]
    fn removals_are_counted() {
        let mut cache = ChunkCache::new(200);
        cache.insert(key(1), vec![1; 100].into());
        cache.insert(key(1), vec![1; 100].into());
        cache.insert(key(2), vec![2; 100].into());
        cache.insert(key(3), vec![3; 100].into());
        assert_eq!(cache.removals(), 0, "replacing and evicting are not removals");
        cache.remove(&key(3));
        cache.remove(&key(9));
        assert_eq!(cache.removals(), 2);
        assert!(cache.get(&key(3)).is_none());
    }
}
