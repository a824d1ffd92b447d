//! Clocks and timers: `proxy_get_current_time_nanoseconds` and `proxy_set_tick_period_milliseconds`.

use wasmtime::{Caller, Linker};

use super::ENV;
use super::memory::HostCall;
use super::status::{HostResult, Status, ret};
use crate::state::HostState;
use crate::trace::{link, number_arg};

/// Links the time-area import `name`; `Ok(false)` when it is not one of this area's.
pub(crate) fn add_to_linker(
    linker: &mut Linker<HostState>,
    name: &'static str,
) -> wasmtime::Result<bool> {
    match name {
        "proxy_get_current_time_nanoseconds" => {
            link(linker, ENV, name, proxy_get_current_time_nanoseconds)?
        }
        "proxy_set_tick_period_milliseconds" => {
            link(linker, ENV, name, proxy_set_tick_period_milliseconds)?
        }
        _ => return Ok(false),
    };
    Ok(true)
}

/// Reports the plugin clock's time in nanoseconds since the Unix epoch.
fn proxy_get_current_time_nanoseconds(
    caller: &mut Caller<'_, HostState>,
    return_time: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_get_current_time_nanoseconds");
    let now = call.state_ref().plugin.clock.now_nanos();
    call.write_u64(return_time, now, "return_time")?;
    ret(Status::Ok)
}

/// Sets the VM's tick period; the first tick comes one period from now, 0 stops the ticks.
fn proxy_set_tick_period_milliseconds(
    caller: &mut Caller<'_, HostState>,
    period_ms: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_set_tick_period_milliseconds");
    call.trace_arg(|| number_arg("period_ms", period_ms));
    let state = call.state();
    let period_nanos = u64::from(period_ms).saturating_mul(1_000_000);
    state.ticks.period_nanos = period_nanos;
    state.ticks.next_due =
        (period_nanos > 0).then(|| state.plugin.clock.now_nanos().saturating_add(period_nanos));
    ret(Status::Ok)
}
