//! A shard thread's lifeline: marked dead when the thread ends, however it ends (a panic
//! included, where glommio drops no task and so no reply channel). Every request races its
//! answer against it, so a dead shard answers `ShardGone` instead of hanging its callers.
//!
//! Waiting is O(1) per request: a waiter takes a slot and gives it back when dropped. (A
//! flume channel per shard did the same job, but each dropped waiter cost a scan of all the
//! others: with 4,096 requests in flight that scan was half of the caller's CPU.)

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

#[derive(Debug, Default)]
pub(crate) struct Lifeline {
    dead: AtomicBool,
    waiters: Mutex<Waiters>,
}

#[derive(Debug, Default)]
struct Waiters {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Lifeline {
    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Marks the shard dead and wakes everyone waiting on it.
    pub(crate) fn kill(&self) {
        self.dead.store(true, Ordering::Release);
        let wakers: Vec<Waker> = self.lock().slots.iter_mut().filter_map(Option::take).collect();
        for waker in wakers {
            waker.wake();
        }
    }

    /// Resolves once the shard is dead.
    pub(crate) fn gone(self: &Arc<Lifeline>) -> Gone {
        Gone { lifeline: self.clone(), slot: None }
    }

    fn lock(&self) -> MutexGuard<'_, Waiters> {
        // A waiter list is valid whatever panicked while holding it.
        self.waiters.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

/// See [`Lifeline::gone`].
#[derive(Debug)]
pub(crate) struct Gone {
    lifeline: Arc<Lifeline>,
    slot: Option<usize>,
}

impl Future for Gone {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<()> {
        if self.lifeline.is_dead() {
            return Poll::Ready(());
        }
        let lifeline = self.lifeline.clone();
        let mut waiters = lifeline.lock();
        let slot = match self.slot {
            Some(slot) => slot,
            None => {
                let slot = waiters.free.pop().unwrap_or_else(|| {
                    waiters.slots.push(None);
                    waiters.slots.len() - 1
                });
                self.slot = Some(slot);
                slot
            }
        };
        waiters.slots[slot] = Some(context.waker().clone());
        drop(waiters);
        // Killed between the first check and the registration: do not miss it.
        if lifeline.is_dead() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

impl Drop for Gone {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            let mut waiters = self.lifeline.lock();
            waiters.slots[slot] = None;
            waiters.free.push(slot);
        }
    }
}

/// Held by a shard's thread; kills the lifeline when the thread ends.
pub(crate) struct LifelineGuard(pub(crate) Arc<Lifeline>);

impl Drop for LifelineGuard {
    fn drop(&mut self) {
        self.0.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a waiter resolves when the lifeline is killed, and slots are reused.
    #[test]
    fn waiters_wake_on_kill_and_slots_are_reused() {
        let lifeline = Arc::new(Lifeline::default());
        let waker = futures_lite::future::block_on(futures_lite::future::poll_fn(|cx| Poll::Ready(cx.waker().clone())));
        let mut context = Context::from_waker(&waker);
        let mut first = Box::pin(lifeline.gone());
        assert!(first.as_mut().poll(&mut context).is_pending());
        drop(first);
        let mut second = Box::pin(lifeline.gone());
        assert!(second.as_mut().poll(&mut context).is_pending());
        assert_eq!(lifeline.lock().slots.len(), 1, "a dropped waiter's slot is reused");
        drop(LifelineGuard(lifeline.clone()));
        assert!(second.as_mut().poll(&mut context).is_ready(), "a killed lifeline releases its waiters");
    }
}
