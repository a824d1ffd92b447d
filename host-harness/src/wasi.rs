//! WASI preview 1 for proxy-wasm guests, through `wasmtime_wasi::p1`.
//!
//! Like Envoy, the guest sees only the environment the plugin configures (`environment_variables`, plus
//! `host_env_keys` copied from the host when the plugin is built), no arguments, no files, and clocks that
//! follow the plugin's clock. Its stdout and stderr become log records of the VM unless the plugin asks to
//! inherit the host's.

use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::clock::{Clock, WasiMonotonicClock, WasiWallClock};
use crate::logs::{LogCapture, LogSource};
use crate::plugin::PluginShared;

/// The WASI context of one VM instance.
pub(crate) fn context_for(plugin: &PluginShared, log: &LogCapture) -> WasiP1Ctx {
    let mut builder = WasiCtxBuilder::new();
    if plugin.inherit_stdio {
        builder.inherit_stdout().inherit_stderr();
    } else {
        builder.stdout(log.output_stream(LogSource::Stdout));
        builder.stderr(log.output_stream(LogSource::Stderr));
    }
    for (key, value) in &plugin.settings.env {
        builder.env(key, value);
    }
    builder.wall_clock(WasiWallClock(plugin.clock.clone()));
    if let Clock::Manual(manual) = &plugin.clock {
        builder.monotonic_clock(WasiMonotonicClock(manual.clone()));
    }
    builder.build_p1()
}
