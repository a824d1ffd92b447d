//! Logging: `proxy_log` and `proxy_get_log_level`.

use wasmtime::{Caller, Linker};

use super::ENV;
use super::memory::HostCall;
use super::status::{HostResult, Status, ret};
use crate::logs::{LogLevel, LogSource};
use crate::state::HostState;
use crate::trace::{enum_arg, link};

/// Links the log-area import `name`; `Ok(false)` when it is not one of this area's.
pub(crate) fn add_to_linker(
    linker: &mut Linker<HostState>,
    name: &'static str,
) -> wasmtime::Result<bool> {
    match name {
        "proxy_log" => link(linker, ENV, name, proxy_log)?,
        "proxy_get_log_level" => link(linker, ENV, name, proxy_get_log_level)?,
        _ => return Ok(false),
    };
    Ok(true)
}

/// Captures a message at `level`; messages below the plugin's log level are dropped, as Envoy drops them.
fn proxy_log(
    caller: &mut Caller<'_, HostState>,
    level: u32,
    message_ptr: u32,
    message_len: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_log");
    call.trace_arg(|| {
        enum_arg(
            "level",
            level,
            &["trace", "debug", "info", "warn", "error", "critical"],
        )
    });
    let Some(level) = LogLevel::from_abi(level) else {
        return ret(Status::BadArgument);
    };
    call.with_bytes(message_ptr, message_len, "message", |message, state| {
        if level >= state.plugin.settings.log_level {
            state.log.push_text(level, message, LogSource::ProxyLog);
        }
    })?;
    ret(Status::Ok)
}

/// Reports the plugin's log level.
fn proxy_get_log_level(caller: &mut Caller<'_, HostState>, return_level: u32) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_get_log_level");
    let level = call.state_ref().plugin.settings.log_level.to_abi();
    call.write_u32(return_level, level, "return_level")?;
    ret(Status::Ok)
}
