//! Shared queues: `proxy_register_shared_queue`, `proxy_resolve_shared_queue`, `proxy_enqueue_shared_queue`,
//! `proxy_dequeue_shared_queue`. The VM that registered a queue last gets `proxy_on_queue_ready`.

use std::sync::Arc;

use wasmtime::{Caller, Linker};

use super::ENV;
use super::memory::HostCall;
use super::status::{HostResult, Status, ret};
use crate::shared::{MAX_QUEUES, QueueError};
use crate::state::HostState;
use crate::trace::link;

/// Links the queue import `name`; `Ok(false)` when it is not one of this area's.
pub(crate) fn add_to_linker(
    linker: &mut Linker<HostState>,
    name: &'static str,
) -> wasmtime::Result<bool> {
    match name {
        "proxy_register_shared_queue" => link(linker, ENV, name, proxy_register_shared_queue)?,
        "proxy_resolve_shared_queue" => link(linker, ENV, name, proxy_resolve_shared_queue)?,
        "proxy_enqueue_shared_queue" => link(linker, ENV, name, proxy_enqueue_shared_queue)?,
        "proxy_dequeue_shared_queue" => link(linker, ENV, name, proxy_dequeue_shared_queue)?,
        _ => return Ok(false),
    };
    Ok(true)
}

/// Registers (or re-opens) a queue of this plugin's VM id; this VM gets its notifications from now on.
fn proxy_register_shared_queue(
    caller: &mut Caller<'_, HostState>,
    name_ptr: u32,
    name_len: u32,
    return_id: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_register_shared_queue");
    call.check_slot(return_id, 4, "return_id")?;
    let id = call.with_bytes(name_ptr, name_len, "name", |name, state| {
        let inbox = Arc::clone(&state.queues);
        state
            .plugin
            .shared
            .register_queue(&state.plugin.settings.vm_id, name, &inbox)
    })?;
    let id =
        id.ok_or_else(|| call.trap(format!("the host keeps at most {MAX_QUEUES} shared queues")))?;
    call.write_u32(return_id, id, "return_id")?;
    ret(Status::Ok)
}

/// Finds a queue by VM id and name, or NOT_FOUND.
fn proxy_resolve_shared_queue(
    caller: &mut Caller<'_, HostState>,
    vm_id_ptr: u32,
    vm_id_len: u32,
    name_ptr: u32,
    name_len: u32,
    return_id: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_resolve_shared_queue");
    let found = call.with_two(
        (vm_id_ptr, vm_id_len, "vm id"),
        (name_ptr, name_len, "name"),
        |vm_id, name, state| state.plugin.shared.resolve_queue(vm_id, name),
    )?;
    let Some(id) = found else {
        return ret(Status::NotFound);
    };
    call.write_u32(return_id, id, "return_id")?;
    ret(Status::Ok)
}

fn proxy_enqueue_shared_queue(
    caller: &mut Caller<'_, HostState>,
    queue_id: u32,
    value_ptr: u32,
    value_len: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_enqueue_shared_queue");
    let outcome = call.with_bytes(value_ptr, value_len, "value", |value, state| {
        state.plugin.shared.enqueue(queue_id, value)
    })?;
    match outcome {
        Ok(()) => ret(Status::Ok),
        Err(QueueError::NotFound | QueueError::Empty) => ret(Status::NotFound),
        Err(QueueError::LimitExceeded) => {
            Err(call.trap("the queued item would exceed the host's shared byte limit"))
        }
    }
}

fn proxy_dequeue_shared_queue(
    caller: &mut Caller<'_, HostState>,
    queue_id: u32,
    return_data: u32,
    return_size: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_dequeue_shared_queue");
    call.check_slot(return_data, 4, "return_data")?;
    call.check_slot(return_size, 4, "return_size")?;
    match call.state_ref().plugin.shared.dequeue(queue_id) {
        Ok(item) => {
            call.return_bytes(return_data, return_size, &item)?;
            ret(Status::Ok)
        }
        Err(QueueError::Empty) => ret(Status::Empty),
        Err(QueueError::NotFound | QueueError::LimitExceeded) => ret(Status::NotFound),
    }
}
