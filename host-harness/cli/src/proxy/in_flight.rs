//! A count of work in progress on one worker (open connections, filter http calls) that a draining
//! worker can wait on until nothing is left.

use std::cell::Cell;
use std::rc::Rc;

use tokio::sync::Notify;

/// Work in progress on one thread, and a way to wait until none is left.
#[derive(Debug, Default)]
pub struct InFlight {
    count: Cell<usize>,
    none_left: Notify,
}

impl InFlight {
    /// Counts one more piece of work until the returned guard is dropped, however its task ends.
    pub fn enter(self: &Rc<Self>) -> InFlightGuard {
        self.count.set(self.count.get() + 1);
        InFlightGuard(Rc::clone(self))
    }

    /// How many are in progress now.
    pub fn count(&self) -> usize {
        self.count.get()
    }

    /// Resolves the next time the count drops to zero.
    pub async fn none_left(&self) {
        self.none_left.notified().await;
    }
}

/// One piece of counted work; dropping it ends it.
#[derive(Debug)]
pub struct InFlightGuard(Rc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let left = self.0.count.get().saturating_sub(1);
        self.0.count.set(left);
        if left == 0 {
            self.0.none_left.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::proxy::poll_once;

    #[tokio::test]
    async fn the_last_guard_dropped_wakes_the_waiter() {
        let work = Rc::new(InFlight::default());
        let first = work.enter();
        let second = work.enter();
        assert_eq!(work.count(), 2);
        let waiter = work.none_left();
        tokio::pin!(waiter);
        drop(first);
        assert!(poll_once(waiter.as_mut()).await.is_none());
        drop(second);
        assert_eq!(work.count(), 0);
        assert!(poll_once(waiter.as_mut()).await.is_some());
    }
}
