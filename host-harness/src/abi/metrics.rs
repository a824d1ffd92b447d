//! Metrics: `proxy_define_metric`, `proxy_record_metric`, `proxy_increment_metric`, `proxy_get_metric`.
//! The registry is the plugin's, shared by all its VMs (see `crate::metrics` for the semantics).

use wasmtime::{Caller, Linker};

use super::ENV;
use super::memory::HostCall;
use super::status::{HostResult, Status, ret};
use crate::metrics::{MAX_METRICS, MetricError, MetricKind};
use crate::state::HostState;
use crate::trace::link;

/// Links the metrics import `name`; `Ok(false)` when it is not one of this area's.
pub(crate) fn add_to_linker(
    linker: &mut Linker<HostState>,
    name: &'static str,
) -> wasmtime::Result<bool> {
    match name {
        "proxy_define_metric" => link(linker, ENV, name, proxy_define_metric)?,
        "proxy_record_metric" => link(linker, ENV, name, proxy_record_metric)?,
        "proxy_increment_metric" => link(linker, ENV, name, proxy_increment_metric)?,
        "proxy_get_metric" => link(linker, ENV, name, proxy_get_metric)?,
        _ => return Ok(false),
    };
    Ok(true)
}

fn status_of(result: Result<(), MetricError>) -> HostResult {
    match result {
        Ok(()) => ret(Status::Ok),
        Err(MetricError::NotFound) => ret(Status::NotFound),
        Err(MetricError::BadArgument) => ret(Status::BadArgument),
    }
}

fn proxy_define_metric(
    caller: &mut Caller<'_, HostState>,
    metric_type: u32,
    name_ptr: u32,
    name_len: u32,
    return_id: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_define_metric");
    let Some(kind) = MetricKind::from_abi(metric_type) else {
        return ret(Status::BadArgument);
    };
    call.check_slot(return_id, 4, "return_id")?;
    let id = call.with_bytes(name_ptr, name_len, "name", |name, state| {
        state
            .plugin
            .metrics
            .define(kind, &String::from_utf8_lossy(name))
    })?;
    let id = id.ok_or_else(|| {
        call.trap(format!(
            "the host keeps at most {MAX_METRICS} metrics per plugin"
        ))
    })?;
    call.write_u32(return_id, id, "return_id")?;
    ret(Status::Ok)
}

/// Records `value`: counters add it, gauges take it, histograms sample it.
fn proxy_record_metric(
    caller: &mut Caller<'_, HostState>,
    metric_id: u32,
    value: u64,
) -> HostResult {
    let call = HostCall::new(caller, "proxy_record_metric");
    match call.state_ref().plugin.metrics.record(metric_id, value) {
        // Recording applies to every kind, so the only failure is an unknown id.
        Err(_) => ret(Status::NotFound),
        Ok(()) => ret(Status::Ok),
    }
}

fn proxy_increment_metric(
    caller: &mut Caller<'_, HostState>,
    metric_id: u32,
    delta: i64,
) -> HostResult {
    let call = HostCall::new(caller, "proxy_increment_metric");
    status_of(call.state_ref().plugin.metrics.increment(metric_id, delta))
}

fn proxy_get_metric(
    caller: &mut Caller<'_, HostState>,
    metric_id: u32,
    return_value: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_get_metric");
    match call.state_ref().plugin.metrics.value(metric_id) {
        Ok(value) => {
            call.write_u64(return_value, value, "return_value")?;
            ret(Status::Ok)
        }
        Err(error) => status_of(Err(error)),
    }
}
