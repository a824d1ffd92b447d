//! A proxy-wasm ABI v0.2.1 host on wasmtime, for testing proxy-wasm filters.
//!
//! It runs a filter's real `.wasm` the way Envoy would: compiled once per [`Plugin`], one [`Vm`] per worker,
//! many interleaved HTTP streams per VM, a root context with ticks, http calls, shared data, queues and
//! metrics, and Envoy's failure policies when a guest traps. Tests drive it on a [`ManualClock`], so they
//! never sleep; an embedder (the standalone proxy of the `host-harness-cli` package) drives it on the system
//! clock and performs http calls itself. Modules from the Rust SDK, Go (`wasip1`) and AssemblyScript run as
//! in Envoy; the host serves WASI preview 1 itself and needs no async runtime.
//!
//! A test of a third-party filter, built for `wasm32-wasip1` before the tests run (this one reads an API
//! key from its environment, puts it on every request, logs and counts what it did, and refreshes a token
//! from a cluster on a timer):
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use host_harness::{
//!     Action, HarnessError, HttpCallResponse, LogLevel, ManualClock, MetricValue, MockCluster, Plugin,
//! };
//!
//! #[test]
//! fn the_filter_sets_the_key_logs_and_counts_the_request() -> Result<(), HarnessError> {
//!     let clock = ManualClock::new();
//!     let plugin = Plugin::builder()
//!         .module_file("target/wasm32-wasip1/release/api_key_filter.wasm")
//!         .plugin_config(r#"{"header": "x-api-key", "env": "API_KEY"}"#)
//!         .env("API_KEY", "sk-example")
//!         // Every http call to this cluster is answered at once, without a network.
//!         .cluster("auth", MockCluster::responding(HttpCallResponse::new(200).body("token")))
//!         .clock(clock.clone())
//!         .build()?;
//!     let mut vm = plugin.start_vm()?;
//!
//!     let mut stream = vm.stream()?;
//!     let action = stream.request_headers(
//!         [(":method", "POST"), (":path", "/v1/messages"), (":authority", "api.example.com")],
//!         false,
//!     )?;
//!     assert_eq!(action, Action::Continue);
//!     stream.request_body(br#"{"model": "m"}"#, true)?;
//!     let upstream = stream.upstream_request_headers()?;
//!     assert_eq!(upstream.get_str("x-api-key"), Some("sk-example"));
//!     stream.response_headers([(":status", "200")], true)?;
//!     stream.finish()?;
//!
//!     // Ticks and http-call timeouts fire as virtual time passes.
//!     vm.advance(Duration::from_secs(60))?;
//!
//!     let logs = vm.take_logs();
//!     assert!(
//!         logs.iter().any(|record| record.level == LogLevel::Info && record.message.contains("x-api-key")),
//!         "{logs:?}"
//!     );
//!     assert_eq!(plugin.metric("api_key_filter_requests"), Some(MetricValue::Counter(1)));
//!     Ok(())
//! }
//! # fn main() {}
//! ```
//!
//! To see exactly how a filter talks to its host, turn on the host-call trace: every proxy-wasm and WASI
//! call a VM's guest makes, in order, with its decoded arguments and the status it got (or its trap).
//! Values, bodies and messages appear as their length only, so a credential passing through the filter
//! never lands in test output; the trace is off by default and costs nothing then (see [`trace`]):
//!
//! ```no_run
//! # use host_harness::{HarnessError, Plugin};
//! # fn main() -> Result<(), HarnessError> {
//! let plugin = Plugin::builder()
//!     .module_file("target/wasm32-wasip1/release/api_key_filter.wasm")
//!     .trace_host_calls(true)
//!     .build()?;
//! let mut vm = plugin.start_vm()?;
//! vm.stream()?
//!     .request_headers([(":method", "GET"), (":path", "/"), (":authority", "api.example.com")], true)?;
//! let calls: Vec<String> = vm.take_host_calls().iter().map(ToString::to_string).collect();
//! // For example: proxy_get_header_map_value(map=request_headers, key="authorization") -> NotFound
//! assert!(calls.iter().any(|call| call.starts_with("proxy_replace_header_map_value(")), "{calls:#?}");
//! # Ok(())
//! # }
//! ```
//!
//! Layout:
//! - [`plugin`]: [`PluginBuilder`] / [`Plugin`]: engine, compilation, export checks, limits, policies
//! - [`vm`]: [`Vm`]: instantiation, start-up, callbacks, streams, timers, failure handling
//! - [`stream`]: stream ids, state, actions, local responses, the [`Stream`] test handle
//! - [`group`]: [`VmGroup`], VMs advanced together on one manual clock
//! - [`headers`]: the [`Headers`] multi-map
//! - [`http_call`]: http-call requests, responses, mock and embedder clusters
//! - [`clock`]: [`Clock`] and [`ManualClock`]
//! - [`logs`]: captured guest logs and stdio
//! - [`trace`]: the host-call trace ([`HostCallRecord`])
//! - [`metrics`]: the plugin's metrics registry
//! - [`shared`]: shared data and queues, scoped by VM id
//! - [`abi`]: the import table and the host functions, one file per ABI area; `abi::memory` is the one
//!   place guest memory is read and written
//! - [`error`]: [`HarnessError`] and [`GuestTrap`]
//! - `state`: a VM's store data; `wasi`: WASI preview 1 served by the host (environment, clocks, random,
//!   captured stdio, no files); `compile`: engines and compiled modules shared by the process
//!
//! Features: `cache` turns on wasmtime's on-disk cache of compiled modules
//! ([`PluginBuilder::cache_dir`](plugin::PluginBuilder)); off by default, as it adds a TOML parser to the
//! dependency tree, and one process reuses compiled modules without it.
//!
//! The `host-harness` binary (`validate`, `dry-run`, the standalone proxy `serve`, `wasi-run`) is the
//! separate package `host-harness-cli`, in `host-harness/cli/`.
#![forbid(unsafe_code)]

pub mod abi;
pub mod clock;
mod compile;
pub mod error;
pub mod group;
pub mod headers;
pub mod http_call;
pub mod logs;
pub mod metrics;
pub mod plugin;
pub mod shared;
mod state;
pub mod stream;
pub mod trace;
pub mod vm;
mod wasi;

pub use clock::{Clock, ManualClock};
pub use error::{GuestTrap, HarnessError, TrapCause};
pub use group::VmGroup;
pub use headers::Headers;
pub use http_call::{
    ClusterBackend, FailedCalls, HttpCallFailure, HttpCallRequest, HttpCallResponse, MockCluster,
    MockReply, PendingHttpCall,
};
pub use logs::{LogLevel, LogRecord, LogSource};
pub use metrics::{MetricKind, MetricSnapshot, MetricValue};
pub use plugin::{FailurePolicy, Limits, Plugin, PluginBuilder, ReloadBackoff};
pub use shared::SharedRegistry;
pub use stream::{
    Action, BodyChunk, LocalResponse, Stream, StreamEvent, StreamId, StreamInfo, StreamState,
};
pub use trace::{HostCallArg, HostCallRecord, HostCallStatus};
pub use vm::Vm;
