//! Context lifecycle: `proxy_done` and `proxy_set_effective_context`.

use wasmtime::{Caller, Linker};

use super::ENV;
use super::memory::HostCall;
use super::status::{HostResult, Status, ret};
use crate::state::HostState;
use crate::trace::{link, number_arg};

/// Links the context-area import `name`; `Ok(false)` when it is not one of this area's.
pub(crate) fn add_to_linker(
    linker: &mut Linker<HostState>,
    name: &'static str,
) -> wasmtime::Result<bool> {
    match name {
        "proxy_done" => link(linker, ENV, name, proxy_done)?,
        "proxy_set_effective_context" => link(linker, ENV, name, proxy_set_effective_context)?,
        _ => return Ok(false),
    };
    Ok(true)
}

/// Marks the effective context as finished after its `proxy_on_done` returned false; the host then runs
/// `proxy_on_log` and `proxy_on_delete` once the current callback returns. Envoy answers NOT_FOUND when the
/// context was not waiting, which the SDK cannot take; this host answers OK and changes nothing.
fn proxy_done(caller: &mut Caller<'_, HostState>) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_done");
    let contexts = &mut call.state().contexts;
    let effective = contexts.effective;
    if effective == contexts.root_id {
        if contexts.root_awaiting_done {
            contexts.root_done_signalled = true;
        }
    } else if let Some(stream) = contexts.streams.get_mut(&effective)
        && stream.awaiting_done
    {
        stream.done_signalled = true;
        contexts.done_signalled = true;
    }
    ret(Status::Ok)
}

/// Makes host calls act for another live context (the SDK does this before an http-call response).
fn proxy_set_effective_context(caller: &mut Caller<'_, HostState>, context_id: u32) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_set_effective_context");
    call.trace_arg(|| number_arg("context_id", context_id));
    let contexts = &mut call.state().contexts;
    if !contexts.exists(context_id) {
        return ret(Status::BadArgument);
    }
    contexts.effective = context_id;
    ret(Status::Ok)
}
