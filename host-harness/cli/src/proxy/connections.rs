//! The cap on open client connections: its default, derived from the memory the process may use, and the
//! gate every accepted connection passes.
//!
//! A connection costs memory before it sends a request: at worst its read buffer full of a partial request
//! head (`max_request_header_bytes`) plus the task and socket state around it. Without a cap, a client that
//! opens connections and sends half a head each can grow the process past its memory limit; with one,
//! the worst case is the cap times that cost.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Memory per connection besides its read buffer: the connection task and socket state (about 2 KiB
/// idle, measured with `make bench`), the request in progress, and the allocator's slack.
const CONNECTION_OVERHEAD_BYTES: u64 = 16 * 1024;

/// The default cap never goes below this: a small container still serves a team.
pub const MIN_DEFAULT_CONNECTIONS: usize = 256;

/// The default cap never goes above this: past it, file descriptors and the concurrency limit bind first.
pub const MAX_DEFAULT_CONNECTIONS: usize = 65_536;

/// Memory assumed when no limit can be read (no cgroup limit, no `/proc/meminfo`).
const FALLBACK_MEMORY_BYTES: u64 = 256 * 1024 * 1024;

/// The default connection cap: half of `memory` (the rest is the VMs, the upstream pool and responses in
/// flight) divided by the worst-case cost of one connection (a read buffer full of a partial head, which
/// never grows past the head limit, and its state), within
/// [`MIN_DEFAULT_CONNECTIONS`]..=[`MAX_DEFAULT_CONNECTIONS`].
pub fn default_max_connections(memory: Option<u64>, max_request_header_bytes: usize) -> usize {
    let memory = memory.unwrap_or(FALLBACK_MEMORY_BYTES);
    let per_connection =
        (max_request_header_bytes as u64).saturating_add(CONNECTION_OVERHEAD_BYTES);
    let cap = (memory / 2) / per_connection.max(1);
    usize::try_from(cap)
        .unwrap_or(MAX_DEFAULT_CONNECTIONS)
        .clamp(MIN_DEFAULT_CONNECTIONS, MAX_DEFAULT_CONNECTIONS)
}

/// The memory this process may use: the cgroup's limit (v2, then v1) when one is set, otherwise the
/// machine's memory; `None` when neither can be read.
pub fn memory_limit() -> Option<u64> {
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .into_iter()
    .filter_map(|path| std::fs::read_to_string(path).ok())
    // v2 writes `max` when unlimited; v1 a number near i64::MAX.
    .filter_map(|text| text.trim().parse::<u64>().ok())
    .find(|limit| *limit < (1 << 60));
    cgroup.or_else(|| {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        kib.checked_mul(1024)
    })
}

/// Counts open client connections against the cap, across all workers.
#[derive(Debug)]
pub struct ConnectionGate {
    cap: usize,
    open: AtomicUsize,
}

/// One admitted connection; dropping it frees its place. It travels with the connection's task.
#[derive(Debug)]
pub struct ConnectionPass {
    gate: Arc<ConnectionGate>,
}

impl ConnectionGate {
    /// A gate admitting at most `cap` connections at once.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            open: AtomicUsize::new(0),
        }
    }

    /// Admits one more connection, or `None` when `cap` are open.
    pub fn admit(self: &Arc<Self>) -> Option<ConnectionPass> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.cap).then_some(open + 1)
            })
            .ok()
            .map(|_| ConnectionPass {
                gate: Arc::clone(self),
            })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

impl Drop for ConnectionPass {
    fn drop(&mut self) {
        self.gate.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn the_default_follows_memory_within_its_bounds() {
        // A 256 MiB pod with the default 64 KiB head limit: 128 MiB / 80 KiB.
        assert_eq!(default_max_connections(Some(256 << 20), 64 * 1024), 1638);
        assert_eq!(
            default_max_connections(Some(1 << 20), 64 * 1024),
            MIN_DEFAULT_CONNECTIONS
        );
        assert_eq!(
            default_max_connections(Some(1 << 50), 8192),
            MAX_DEFAULT_CONNECTIONS
        );
        assert_eq!(default_max_connections(None, 64 * 1024), 1638);
    }

    #[test]
    fn the_gate_admits_up_to_its_cap_and_frees_on_drop() {
        let gate = Arc::new(ConnectionGate::new(2));
        let first = gate.admit().unwrap();
        let _second = gate.admit().unwrap();
        assert!(gate.admit().is_none());
        assert_eq!(gate.open(), 2);
        drop(first);
        assert!(gate.admit().is_some());
    }
}
