//! Shared key-value data and shared queues: the state VMs exchange, scoped by VM id as in Envoy.
//!
//! One [`SharedRegistry`] plays the role of an Envoy process: data set by any VM of a `vm_id` is seen by every
//! VM of that `vm_id`, queues are found by `(vm_id, name)`. A plugin gets its own registry unless the builder
//! is given one to share. Compare-and-swap values come from one counter that starts at 1 and never yields 0,
//! because 0 means "unconditional" to `proxy_set_shared_data`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// Most queues one registry holds.
pub const MAX_QUEUES: usize = 1024;

/// Default cap on the bytes held by a registry (keys, values and queued items together).
pub const DEFAULT_SHARED_BYTES_LIMIT: usize = 64 * 1024 * 1024;

/// Shared data and queues for every VM that holds a clone; cheap to clone.
#[derive(Clone, Debug)]
pub struct SharedRegistry {
    inner: Arc<Mutex<SharedState>>,
}

#[derive(Debug)]
struct SharedState {
    next_cas: u32,
    data: HashMap<String, Entries>,
    queues: Vec<Queue>,
    queue_ids: HashMap<(String, Vec<u8>), u32>,
    used_bytes: usize,
    limit_bytes: usize,
}

/// One VM id's shared data: key to value and cas.
type Entries = HashMap<Vec<u8>, (Vec<u8>, u32)>;

#[derive(Debug)]
struct Queue {
    items: VecDeque<Vec<u8>>,
    owner: Arc<QueueInbox>,
}

/// Why a shared-data write was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SharedDataError {
    /// The caller's cas does not match the stored one.
    CasMismatch,
    /// The registry's byte limit would be exceeded.
    LimitExceeded,
}

/// Why a queue operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QueueError {
    /// No queue has this id.
    NotFound,
    /// The queue exists but holds nothing.
    Empty,
    /// The registry's byte limit would be exceeded.
    LimitExceeded,
}

/// Queue ids that became ready for one VM, and how to wake the thread that runs it.
#[derive(Default)]
pub(crate) struct QueueInbox {
    ready: Mutex<Vec<u32>>,
    waker: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

impl std::fmt::Debug for QueueInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueInbox").finish_non_exhaustive()
    }
}

impl QueueInbox {
    pub(crate) fn take_ready(&self) -> Vec<u32> {
        std::mem::take(
            &mut *self
                .ready
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    pub(crate) fn has_ready(&self) -> bool {
        !self
            .ready
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_empty()
    }

    pub(crate) fn set_waker(&self, waker: Option<Arc<dyn Fn() + Send + Sync>>) {
        *self
            .waker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = waker;
    }

    fn notify(&self, queue_id: u32) -> Option<Arc<dyn Fn() + Send + Sync>> {
        let mut ready = self
            .ready
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !ready.contains(&queue_id) {
            ready.push(queue_id);
        }
        drop(ready);
        self.waker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl Default for SharedRegistry {
    fn default() -> Self {
        Self::with_limit(DEFAULT_SHARED_BYTES_LIMIT)
    }
}

impl SharedRegistry {
    /// An empty registry with the default byte limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry holding at most `limit_bytes` of keys, values and queued items.
    pub fn with_limit(limit_bytes: usize) -> Self {
        let state = SharedState {
            next_cas: 1,
            data: HashMap::new(),
            queues: Vec::new(),
            queue_ids: HashMap::new(),
            used_bytes: 0,
            limit_bytes,
        };
        Self {
            inner: Arc::new(Mutex::new(state)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SharedState> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The value and cas of `key` for VMs of `vm_id`.
    pub fn get(&self, vm_id: &str, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        self.lock()
            .data
            .get(vm_id)
            .and_then(|map| map.get(key))
            .cloned()
    }

    /// Sets `key` for VMs of `vm_id` unconditionally (as a guest does with cas 0); returns the new cas.
    pub fn set(&self, vm_id: &str, key: &[u8], value: &[u8]) -> u32 {
        // An embedder seeding data is trusted; only guest writes are held to the byte limit.
        self.lock().set(vm_id, key, value, 0, false).unwrap_or(0)
    }

    pub(crate) fn with_value<R>(
        &self,
        vm_id: &str,
        key: &[u8],
        f: impl FnOnce(Option<(&[u8], u32)>) -> R,
    ) -> R {
        let state = self.lock();
        f(state
            .data
            .get(vm_id)
            .and_then(|map| map.get(key))
            .map(|(value, cas)| (value.as_slice(), *cas)))
    }

    pub(crate) fn set_from_guest(
        &self,
        vm_id: &str,
        key: &[u8],
        value: &[u8],
        cas: u32,
    ) -> Result<u32, SharedDataError> {
        self.lock().set(vm_id, key, value, cas, true)
    }

    /// Registers (or re-opens) the queue `name` of `vm_id`; the last VM to register it gets its notifications.
    /// `None` once the registry holds [`MAX_QUEUES`] queues.
    pub(crate) fn register_queue(
        &self,
        vm_id: &str,
        name: &[u8],
        owner: &Arc<QueueInbox>,
    ) -> Option<u32> {
        let mut state = self.lock();
        let key = (vm_id.to_owned(), name.to_vec());
        if let Some(&id) = state.queue_ids.get(&key) {
            if let Some(queue) = state.queue_mut(id) {
                queue.owner = Arc::clone(owner);
            }
            return Some(id);
        }
        if state.queues.len() >= MAX_QUEUES {
            return None;
        }
        state.queues.push(Queue {
            items: VecDeque::new(),
            owner: Arc::clone(owner),
        });
        let id = u32::try_from(state.queues.len()).unwrap_or(u32::MAX);
        state.queue_ids.insert(key, id);
        Some(id)
    }

    pub(crate) fn resolve_queue(&self, vm_id: &[u8], name: &[u8]) -> Option<u32> {
        let state = self.lock();
        let vm_id = String::from_utf8_lossy(vm_id).into_owned();
        state.queue_ids.get(&(vm_id, name.to_vec())).copied()
    }

    pub(crate) fn enqueue(&self, queue_id: u32, item: &[u8]) -> Result<(), QueueError> {
        let waker = {
            let mut state = self.lock();
            let new_used = state
                .used_bytes
                .checked_add(item.len())
                .filter(|used| *used <= state.limit_bytes);
            let queue = state.queue_mut(queue_id).ok_or(QueueError::NotFound)?;
            let Some(new_used) = new_used else {
                return Err(QueueError::LimitExceeded);
            };
            queue.items.push_back(item.to_vec());
            let waker = queue.owner.notify(queue_id);
            state.used_bytes = new_used;
            waker
        };
        // Woken outside the lock: the waker may well take it again.
        if let Some(waker) = waker {
            waker();
        }
        Ok(())
    }

    pub(crate) fn dequeue(&self, queue_id: u32) -> Result<Vec<u8>, QueueError> {
        let mut state = self.lock();
        let queue = state.queue_mut(queue_id).ok_or(QueueError::NotFound)?;
        let item = queue.items.pop_front().ok_or(QueueError::Empty)?;
        state.used_bytes = state.used_bytes.saturating_sub(item.len());
        Ok(item)
    }
}

impl SharedState {
    fn queue_mut(&mut self, id: u32) -> Option<&mut Queue> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        self.queues.get_mut(index)
    }

    fn next_cas(&mut self) -> u32 {
        let cas = self.next_cas;
        self.next_cas = match self.next_cas.wrapping_add(1) {
            0 => 1,
            next => next,
        };
        cas
    }

    fn set(
        &mut self,
        vm_id: &str,
        key: &[u8],
        value: &[u8],
        cas: u32,
        enforce_limit: bool,
    ) -> Result<u32, SharedDataError> {
        let old_size = self
            .data
            .get(vm_id)
            .and_then(|map| map.get(key))
            .map(|(old, _)| old.len() + key.len());
        if let Some((_, stored_cas)) = self.data.get(vm_id).and_then(|map| map.get(key))
            && cas != 0
            && cas != *stored_cas
        {
            return Err(SharedDataError::CasMismatch);
        }
        let new_used = self
            .used_bytes
            .saturating_sub(old_size.unwrap_or(0))
            .saturating_add(key.len() + value.len());
        if enforce_limit && new_used > self.limit_bytes {
            return Err(SharedDataError::LimitExceeded);
        }
        let new_cas = self.next_cas();
        self.data
            .entry(vm_id.to_owned())
            .or_default()
            .insert(key.to_vec(), (value.to_vec(), new_cas));
        self.used_bytes = new_used;
        Ok(new_cas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_starts_at_one_and_a_stale_cas_is_refused() {
        let registry = SharedRegistry::new();
        let first = registry.set_from_guest("vm", b"k", b"1", 0);
        assert_eq!(first, Ok(1));
        assert_eq!(registry.set_from_guest("vm", b"k", b"2", 1), Ok(2));
        assert_eq!(
            registry.set_from_guest("vm", b"k", b"3", 1),
            Err(SharedDataError::CasMismatch)
        );
        assert_eq!(registry.get("vm", b"k"), Some((b"2".to_vec(), 2)));
        assert_eq!(registry.get("other-vm", b"k"), None);
    }

    #[test]
    fn a_cas_for_an_absent_key_inserts_as_envoy_does() {
        let registry = SharedRegistry::new();
        assert!(registry.set_from_guest("vm", b"new", b"v", 42).is_ok());
    }

    #[test]
    fn queues_notify_their_last_registrant() {
        let registry = SharedRegistry::new();
        let first = Arc::new(QueueInbox::default());
        let second = Arc::new(QueueInbox::default());
        let id = registry.register_queue("vm", b"q", &first);
        assert_eq!(registry.register_queue("vm", b"q", &second), id);
        let id = id.unwrap_or(u32::MAX);
        assert_eq!(registry.resolve_queue(b"vm", b"q"), Some(id));
        assert_eq!(registry.enqueue(id, b"item"), Ok(()));
        assert!(!first.has_ready());
        assert_eq!(second.take_ready(), vec![id]);
        assert_eq!(registry.dequeue(id), Ok(b"item".to_vec()));
        assert_eq!(registry.dequeue(id), Err(QueueError::Empty));
        assert_eq!(registry.dequeue(id + 1), Err(QueueError::NotFound));
    }

    #[test]
    fn the_byte_limit_holds_for_guest_writes() {
        let registry = SharedRegistry::with_limit(8);
        assert_eq!(
            registry.set_from_guest("vm", b"key", b"too long a value", 0),
            Err(SharedDataError::LimitExceeded)
        );
        assert!(registry.set_from_guest("vm", b"k", b"short", 0).is_ok());
    }
}
