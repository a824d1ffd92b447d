//! Host tests: small inline WAT modules drive each host call and each lifecycle path of the harness.
//!
//! Layout:
//! - `support`: the WAT scaffold (memory, allocator, ABI marker) and plugin helpers
//! - `lifecycle`: start-up, configuration, stream callbacks and their order
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod lifecycle;
mod support;
