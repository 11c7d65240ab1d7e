//! [`Chunked`]: a double-ended sequence kept in chunks of at most [`CHUNK`] elements, for the
//! vectors that grow with every message: a chat's messages and log, a box's entries.
//!
//! Why not a `Vec` or `VecDeque`: those grow by doubling, and each doubling copies the whole
//! vector into a buffer twice as large and leaves the old one to the allocator. A chat of a
//! million messages copied 120 MB to take one more. After a crash at 10 M messages the
//! replay of 687,834 sends grew resident memory by 1.28 GB, most of it, by estimate, chats and
//! boxes moving to buffers twice as large; a virtual machine's host may have to fault in
//! every page of that (`docs/BENCHMARKS.md`, "Memory the host took back"). Here only the newest chunk grows, by
//! doubling up to [`CHUNK`] elements, so a small chat costs what a small `Vec` does; past
//! that a full chunk is followed by a new one and nothing is ever copied. Popping from the
//! front (history bounded by count and age) frees whole chunks.
//!
//! The oldest and the newest chunk are kept inline (`head` and `tail`), so appending, looking
//! at the front, and every access while the sequence is small, cost what they cost in a plain
//! `VecDeque`: no chunk list to go through.
//!
//! Invariants: `tail` holds at most [`CHUNK`] elements and is empty only when the whole
//! sequence is; `head` is empty only when `middle` is; every chunk of `middle` holds exactly
//! [`CHUNK`] elements. Element `i` is then found by arithmetic.

use std::collections::VecDeque;
use std::ops::{Index, IndexMut, RangeBounds};

/// Elements per full chunk (a power of two, so an index splits with a shift and a mask).
/// At the largest element kept here (a message, 120 bytes) a chunk is 60 KiB.
pub const CHUNK: usize = 512;

/// A double-ended sequence in chunks; see the module.
#[derive(Clone)]
pub struct Chunked<T> {
    /// The oldest chunk, once there are two; it may have lost elements at its front.
    head: VecDeque<T>,
    /// The full chunks between `head` and `tail`, oldest first.
    middle: VecDeque<VecDeque<T>>,
    /// The newest elements; all of them while there are at most [`CHUNK`].
    tail: VecDeque<T>,
    len: usize,
}

impl<T> Chunked<T> {
    pub const fn new() -> Self {
        Chunked { head: VecDeque::new(), middle: VecDeque::new(), tail: VecDeque::new(), len: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `value` at the back.
    pub fn push_back(&mut self, value: T) {
        if self.tail.len() == CHUNK {
            // The tail is full: it becomes the head or joins the middle as it is, and a new one
            // starts at its whole size, since a sequence this long is known to grow.
            let full = std::mem::replace(&mut self.tail, VecDeque::with_capacity(CHUNK));
            if self.head.is_empty() {
                self.head = full;
            } else {
                self.middle.push_back(full);
            }
        } else if self.tail.len() == self.tail.capacity() {
            // Doubling, but never past a chunk.
            let wanted = (self.tail.len() * 2).clamp(4, CHUNK);
            self.tail.reserve_exact(wanted - self.tail.len());
        }
        self.tail.push_back(value);
        self.len += 1;
    }

    /// Removes and returns the front element.
    pub fn pop_front(&mut self) -> Option<T> {
        let value = if self.head.is_empty() { self.tail.pop_front() } else { self.head.pop_front() }?;
        if self.head.is_empty() {
            self.head = self.middle.pop_front().unwrap_or_default();
        }
        self.len -= 1;
        Some(value)
    }

    /// Drops the `count` front elements (all of them if there are fewer).
    pub fn drop_front(&mut self, count: usize) {
        let mut left = count.min(self.len);
        self.len -= left;
        while left > 0 {
            if self.head.is_empty() {
                self.tail.drain(..left);
                return;
            }
            if self.head.len() > left {
                self.head.drain(..left);
                return;
            }
            left -= self.head.len();
            self.head = self.middle.pop_front().unwrap_or_default();
        }
    }

    /// Keeps the first `len` elements and drops the rest.
    pub fn truncate(&mut self, len: usize) {
        while self.len > len {
            let excess = self.len - len;
            if self.tail.len() > excess {
                self.tail.truncate(self.tail.len() - excess);
                self.len = len;
            } else {
                self.len -= self.tail.len();
                // The chunk before the tail, if any, becomes the tail again.
                self.tail = self.middle.pop_back().unwrap_or_else(|| std::mem::take(&mut self.head));
            }
        }
    }

    /// Where element `index` (below `len`) is.
    fn locate(&self, index: usize) -> Place {
        let Some(past_head) = index.checked_sub(self.head.len()) else { return Place::Head(index) };
        let in_middle = self.middle.len() * CHUNK;
        if past_head < in_middle {
            Place::Middle(past_head / CHUNK, past_head % CHUNK)
        } else {
            Place::Tail(past_head - in_middle)
        }
    }

    pub fn get(&self, index: usize) -> Option<&T> {
        if index >= self.len {
            return None;
        }
        match self.locate(index) {
            Place::Head(offset) => self.head.get(offset),
            Place::Middle(chunk, offset) => self.middle[chunk].get(offset),
            Place::Tail(offset) => self.tail.get(offset),
        }
    }

    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        if index >= self.len {
            return None;
        }
        match self.locate(index) {
            Place::Head(offset) => self.head.get_mut(offset),
            Place::Middle(chunk, offset) => self.middle[chunk].get_mut(offset),
            Place::Tail(offset) => self.tail.get_mut(offset),
        }
    }

    pub fn front(&self) -> Option<&T> {
        self.head.front().or_else(|| self.tail.front())
    }

    pub fn back(&self) -> Option<&T> {
        self.tail.back()
    }

    /// Every element, front to back.
    pub fn iter(&self) -> Iter<'_, T> {
        self.range(..)
    }

    /// The elements in `range` of indices, front to back; reversible. Panics, as slicing does,
    /// when the range reaches past the end.
    pub fn range(&self, range: impl RangeBounds<usize>) -> Iter<'_, T> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(&start) => start,
            Bound::Excluded(&start) => start + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&end) => end + 1,
            Bound::Excluded(&end) => end,
            Bound::Unbounded => self.len,
        };
        assert!(start <= end && end <= self.len, "range {start}..{end} out of a sequence of {}", self.len);
        Iter { chunked: self, front: start, back: end }
    }
}

/// Where an element of a [`Chunked`] is: an offset in the head or the tail, or a chunk of the
/// middle and an offset in it.
enum Place {
    Head(usize),
    Middle(usize, usize),
    Tail(usize),
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked::new()
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Chunked<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Equal when the elements are, however they are chunked.
impl<T: PartialEq> PartialEq for Chunked<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().eq(other.iter())
    }
}

impl<T: Eq> Eq for Chunked<T> {}

impl<T> Index<usize> for Chunked<T> {
    type Output = T;

    fn index(&self, index: usize) -> &T {
        match self.get(index) {
            Some(value) => value,
            None => panic!("index {index} out of a sequence of {}", self.len),
        }
    }
}

impl<T> IndexMut<usize> for Chunked<T> {
    fn index_mut(&mut self, index: usize) -> &mut T {
        let len = self.len;
        match self.get_mut(index) {
            Some(value) => value,
            None => panic!("index {index} out of a sequence of {len}"),
        }
    }
}

impl<T> Extend<T> for Chunked<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, values: I) {
        for value in values {
            self.push_back(value);
        }
    }
}

impl<T> FromIterator<T> for Chunked<T> {
    fn from_iter<I: IntoIterator<Item = T>>(values: I) -> Self {
        let mut chunked = Chunked::new();
        chunked.extend(values);
        chunked
    }
}

impl<'a, T> IntoIterator for &'a Chunked<T> {
    type Item = &'a T;
    type IntoIter = Iter<'a, T>;

    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

/// An iterator over a range of a [`Chunked`], by index: `nth` and `skip` cost nothing.
#[derive(Clone, Debug)]
pub struct Iter<'a, T> {
    chunked: &'a Chunked<T>,
    front: usize,
    back: usize,
}

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = &'a T;

    fn next(&mut self) -> Option<&'a T> {
        if self.front == self.back {
            return None;
        }
        let value = self.chunked.get(self.front);
        self.front += 1;
        value
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.back - self.front, Some(self.back - self.front))
    }

    fn nth(&mut self, n: usize) -> Option<&'a T> {
        self.front = self.front.saturating_add(n).min(self.back);
        self.next()
    }
}

impl<T> DoubleEndedIterator for Iter<'_, T> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.front == self.back {
            return None;
        }
        self.back -= 1;
        self.chunked.get(self.back)
    }
}

impl<T> ExactSizeIterator for Iter<'_, T> {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Chunked` and a `VecDeque` given the same operations hold the same elements, across
    /// chunk boundaries, with pops and truncations between.
    #[test]
    fn it_behaves_as_a_deque() {
        let mut chunked = Chunked::new();
        let mut model = VecDeque::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for step in 0..20_000u64 {
            // About 0.9 pushes a step against about 0.8 elements dropped: the sequence grows
            // slowly across chunks while its front is dropped across them too.
            match next() % 32 {
                0 => {
                    let count = (next() % 48) as usize;
                    chunked.drop_front(count);
                    model.drain(..count.min(model.len()));
                }
                1 => assert_eq!(chunked.pop_front(), model.pop_front()),
                2 if step % 7 == 0 => {
                    let len = model.len().saturating_sub((next() % 48) as usize);
                    chunked.truncate(len);
                    model.truncate(len);
                }
                _ => {
                    chunked.push_back(step);
                    model.push_back(step);
                }
            }
            assert_eq!(chunked.len(), model.len());
            assert_eq!(chunked.front(), model.front());
            assert_eq!(chunked.back(), model.back());
            if step % 97 == 0 {
                assert!(chunked.iter().eq(model.iter()));
                assert!(chunked.iter().rev().eq(model.iter().rev()));
                for index in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, model.len() / 2, model.len().saturating_sub(1)] {
                    assert_eq!(chunked.get(index), model.get(index), "index {index}");
                }
                let from = (next() as usize) % (model.len() + 1);
                assert!(chunked.range(from..).eq(model.range(from..)));
                assert!(chunked.iter().skip(from).eq(model.iter().skip(from)));
                assert!(chunked.range(..from).rev().eq(model.range(..from).rev()));
            }
        }
        assert!(chunked.len() > CHUNK, "the walk must have crossed chunks: {}", chunked.len());
    }

    #[test]
    fn only_the_newest_chunk_grows_and_full_chunks_are_never_copied() {
        let mut chunked = Chunked::new();
        chunked.push_back(0u32);
        assert_eq!(chunked.tail.capacity(), 4, "a small sequence starts small");
        for value in 1..(3 * CHUNK as u32 + 5) {
            chunked.push_back(value);
        }
        assert_eq!((chunked.head.len(), chunked.middle.len(), chunked.tail.len()), (CHUNK, 2, 5));
        let first = chunked.middle[0].as_slices().0.as_ptr();
        for value in 0..CHUNK as u32 {
            chunked.push_back(value);
        }
        assert_eq!(chunked.middle[0].as_slices().0.as_ptr(), first, "a full chunk stays where it is");
        let chunks = || chunked.middle.iter().chain([&chunked.head, &chunked.tail]);
        assert!(chunks().all(|chunk| chunk.capacity() <= CHUNK.next_power_of_two()));
        chunked.drop_front(CHUNK + 3);
        assert_eq!(chunked.front(), Some(&(CHUNK as u32 + 3)));
        assert_eq!((chunked.head.len(), chunked.middle.len()), (CHUNK - 3, 2), "the first chunk went whole");
        assert_eq!(chunked[chunked.len() - 1], CHUNK as u32 - 1);
        chunked.truncate(2 * CHUNK);
        assert_eq!(chunked.back(), Some(&(3 * CHUNK as u32 + 2)));
        assert!(!chunked.tail.is_empty(), "a tail emptied by truncation takes the chunk before it");
        chunked.truncate(0);
        assert!(chunked.is_empty() && chunked.head.is_empty() && chunked.middle.is_empty());
        assert!(chunked.front().is_none());
    }

    #[test]
    fn equality_ignores_how_elements_are_chunked() {
        let mut popped: Chunked<u32> = (0..CHUNK as u32 + 10).collect();
        popped.drop_front(10);
        let fresh: Chunked<u32> = (10..CHUNK as u32 + 10).collect();
        assert_ne!(popped.head.len(), fresh.head.len());
        assert_eq!(popped, fresh);
        assert_ne!(popped, (10..CHUNK as u32 + 9).collect::<Chunked<u32>>());
    }
}
