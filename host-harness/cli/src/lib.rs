//! The `host-harness` binary's library: the standalone reverse proxy and the WASI command runner, built on
//! the [`host_harness`] proxy-wasm host.
//!
//! Layout:
//! - [`proxy`]: `host-harness serve`, a streaming reverse proxy that runs a proxy-wasm filter on every
//!   request (`run(listeners, config, shutdown)`; the binary's `serve` is `proxy::cli::serve_main`)
//! - [`wasi_command`]: `host-harness wasi-run`, runs WASI preview 1 command modules such as a filter's unit
//!   tests built for `wasm32-wasip1`
//! - `src/main.rs` and `src/cli/`: the binary, with `validate` and `dry-run`
#![forbid(unsafe_code)]

pub mod proxy;
pub mod wasi_command;
