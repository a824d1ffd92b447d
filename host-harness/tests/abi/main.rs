//! Host tests: small inline WAT modules drive each host call and each lifecycle path of the harness.
//!
//! Layout:
//! - `support`: the WAT scaffold (memory, allocator, ABI marker) and plugin helpers
//! - `lifecycle`: start-up, configuration, module checks, stream callbacks and their order
//! - `headers`: header-map encoding, operations, phases and limits
//! - `cache`: the on-disk module cache, thread-safety of the handles
//! - `buffers`: bodies, configurations and `proxy_set_buffer_bytes` semantics
//! - `hostile`: bad pointers, bad allocators, endless loops, memory limits, panics, exits
//! - `properties`: property paths, encodings and guest-set values
//! - `http_calls`: validation, mock clusters, the embedder backend, timeouts, pause and resume
//! - `shared`: shared data, queues and metrics across the VMs of a plugin
//! - `timers`: the manual clock, ticks, VM groups
//! - `policies`: fail-closed, fail-open, fail-reload
//! - `wasi`: environment, captured stdio, descriptor calls
//! - `statuses`: gRPC, foreign functions, stream control without a stream, the import table
//! - `trace`: the host-call trace
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod buffers;
mod cache;
mod headers;
mod hostile;
mod http_calls;
mod lifecycle;
mod policies;
mod properties;
mod shared;
mod statuses;
mod support;
mod timers;
mod trace;
mod wasi;
