//! Integration tests: the real `filter.wasm` and the probe filter, built from the current sources by
//! `build.rs`, run through the harness, the standalone proxy and real Envoy. One binary, a module per area.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod filter;
mod token_refresh;
