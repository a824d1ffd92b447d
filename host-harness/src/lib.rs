//! A proxy-wasm ABI v0.2.1 host on wasmtime.
//!
//! It runs a filter's real `.wasm` the way Envoy would: compiled once per [`Plugin`], one [`Vm`] per worker,
//! many interleaved HTTP streams per VM, a root context with ticks, http calls, shared data, queues and
//! metrics, and Envoy's failure policies when a guest traps. Tests drive it on a [`ManualClock`]; the
//! standalone proxy (`host-harness serve`) drives it on the system clock and performs http calls itself.
//!
//! ```no_run
//! use std::time::Duration;
//! use host_harness::{Action, HttpCallResponse, ManualClock, MockCluster, Plugin};
//!
//! # fn main() -> Result<(), host_harness::HarnessError> {
//! let clock = ManualClock::new();
//! let plugin = Plugin::builder()
//!     .module_file("target/wasm/wasm32-wasip1/wasm-release/filter.wasm")
//!     .plugin_config(r#"{"credential": {"source": {"env": "ANTHROPIC_OAUTH_TOKEN"}}, "preset": "anthropic"}"#)
//!     .env("ANTHROPIC_OAUTH_TOKEN", "sk-ant-oat01-example")
//!     .cluster("auth", MockCluster::responding(HttpCallResponse::new(200).body("token")))
//!     .clock(clock.clone())
//!     .build()?;
//! let mut vm = plugin.start_vm()?;
//! let mut stream = vm.stream()?;
//! let action = stream.request_headers([(":method", "GET"), (":path", "/v1/messages"), (":authority", "ai")], true)?;
//! assert_eq!(action, Action::Continue);
//! assert!(stream.upstream_request_headers()?.get("authorization").is_some());
//! stream.finish()?;
//! vm.advance(Duration::from_secs(60))?;
//! for metric in plugin.metrics() {
//!     println!("{} = {:?}", metric.name, metric.value);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Layout:
//! - [`plugin`]: [`PluginBuilder`] / [`Plugin`]: engine, compilation, cache, export checks, limits, policies
//! - [`vm`]: [`Vm`]: instantiation, start-up, callbacks, streams, timers, failure handling
//! - [`stream`]: stream ids, state, actions, local responses, the [`Stream`] test handle
//! - [`group`]: [`VmGroup`], VMs advanced together on one manual clock
//! - [`headers`]: the [`Headers`] multi-map
//! - [`http_call`]: http-call requests, responses, mock and embedder clusters
//! - [`clock`]: [`Clock`] and [`ManualClock`]
//! - [`logs`]: captured guest logs and stdio
//! - [`metrics`]: the plugin's metrics registry
//! - [`shared`]: shared data and queues, scoped by VM id
//! - [`abi`]: the import table and the host functions, one file per ABI area
//! - [`error`]: [`HarnessError`] and [`GuestTrap`]
//! - `state`, `wasi`, `compile`: a VM's store data, its WASI, and engines/modules shared by the process
//!
//! The `host-harness` binary (validate, dry-run, the standalone proxy `serve`, wasi-run) is the separate
//! package `host-harness-cli` in `host-harness/cli/`.
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
pub use vm::Vm;
