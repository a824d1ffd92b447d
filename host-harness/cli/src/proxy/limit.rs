//! The concurrency limit: a fixed number of requests in progress, a bounded queue behind it.
//!
//! A request takes a slot for its whole life, streaming response included. When every slot is taken it may
//! wait in the queue for up to the queue timeout; when the queue is full too it is refused at once, so an
//! overload turns into quick 503s instead of growing latency and memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Shared by all workers.
#[derive(Debug)]
pub struct Limiter {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue: usize,
    queue_timeout: Duration,
}

/// Proof that a request holds a slot; the slot is freed when it is dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

/// The request cannot be admitted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded;

/// Releases a queue place however the wait ends, cancellation included.
struct QueuePlace<'a>(&'a AtomicUsize);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limiter {
    /// `max_concurrency` slots and room for `queue` waiting requests.
    pub fn new(max_concurrency: usize, queue: usize, queue_timeout: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_concurrency.min(Semaphore::MAX_PERMITS))),
            waiting: AtomicUsize::new(0),
            queue,
            queue_timeout,
        }
    }

    /// Takes a slot, waiting in the queue when all are busy.
    ///
    /// # Errors
    /// [`Overloaded`] when the queue is full or the wait exceeds the queue timeout.
    pub async fn admit(&self) -> Result<Slot, Overloaded> {
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(Slot { _permit: permit });
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Overloaded);
        }
        let _place = QueuePlace(&self.waiting);
        match tokio::time::timeout(self.queue_timeout, Arc::clone(&self.slots).acquire_owned())
            .await
        {
            Ok(Ok(permit)) => Ok(Slot { _permit: permit }),
            _ => Err(Overloaded),
        }
    }

    /// Requests waiting in the queue now.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::proxy::poll_once;

    #[tokio::test(start_paused = true)]
    async fn full_queue_refuses_at_once_and_queued_requests_time_out() {
        let limiter = Limiter::new(1, 1, Duration::from_secs(2));
        let held = limiter.admit().await.unwrap();
        let queued = limiter.admit();
        tokio::pin!(queued);
        assert!(poll_once(queued.as_mut()).await.is_none());
        assert_eq!(limiter.queued(), 1);
        assert_eq!(limiter.admit().await.unwrap_err(), Overloaded);
        // Paused time: the queued request times out when the clock passes the queue timeout.
        assert_eq!(queued.await.unwrap_err(), Overloaded);
        assert_eq!(limiter.queued(), 0);
        drop(held);
        assert!(limiter.admit().await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn queued_request_gets_the_freed_slot() {
        let limiter = Limiter::new(1, 4, Duration::from_secs(2));
        let held = limiter.admit().await.unwrap();
        let queued = limiter.admit();
        tokio::pin!(queued);
        assert!(poll_once(queued.as_mut()).await.is_none());
        drop(held);
        assert!(queued.await.is_ok());
    }
}
