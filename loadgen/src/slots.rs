//! A counting semaphore for async tasks: a bounded channel pre-filled with tokens. Taking a
//! slot waits for a token; dropping the slot gives it back. Used for the in-flight bounds of
//! `limits` (per connection and over the whole run).

use std::fmt;

/// `capacity` slots to share.
#[derive(Clone)]
pub struct Slots {
    give: flume::Sender<()>,
    take: flume::Receiver<()>,
    capacity: usize,
}

impl fmt::Debug for Slots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slots").field("capacity", &self.capacity).field("free", &self.take.len()).finish()
    }
}

/// A held slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    give: flume::Sender<()>,
}

impl Slots {
    pub fn new(capacity: usize) -> Slots {
        assert!(capacity > 0, "at least one slot");
        let (give, take) = flume::bounded(capacity);
        for _ in 0..capacity {
            // The channel holds exactly `capacity` tokens: this cannot fail.
            let _ = give.try_send(());
        }
        Slots { give, take, capacity }
    }

    /// Waits for a free slot.
    pub async fn take(&self) -> Slot {
        // Both ends live in `self`, so the channel never disconnects while we wait.
        let _ = self.take.recv_async().await;
        Slot { give: self.give.clone() }
    }

    /// A free slot if there is one now.
    pub fn try_take(&self) -> Option<Slot> {
        self.take.try_recv().ok().map(|()| Slot { give: self.give.clone() })
    }

    pub fn free(&self) -> usize {
        self.take.len()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // At most `capacity` tokens exist, so there is always room for this one.
        let _ = self.give.try_send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_returned_on_drop() {
        let slots = Slots::new(2);
        let first = slots.try_take().expect("a free slot");
        let second = crate::reactor::block_on(slots.take());
        assert!(slots.try_take().is_none(), "both are taken");
        drop(first);
        assert_eq!(slots.free(), 1);
        drop(second);
        assert_eq!(slots.free(), slots.capacity());
    }
}
