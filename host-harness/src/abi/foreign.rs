//! Foreign functions: `proxy_call_foreign_function` runs a function the embedder registered by name.

use wasmtime::{Caller, Linker};

use super::ENV;
use super::memory::HostCall;
use super::status::{HostResult, Status, ret};
use crate::state::HostState;
use crate::trace::link;

/// Links the foreign-function import `name`; `Ok(false)` when it is not one of this area's.
pub(crate) fn add_to_linker(
    linker: &mut Linker<HostState>,
    name: &'static str,
) -> wasmtime::Result<bool> {
    match name {
        "proxy_call_foreign_function" => link(linker, ENV, name, proxy_call_foreign_function)?,
        _ => return Ok(false),
    };
    Ok(true)
}

/// NOT_FOUND for a name nobody registered; INTERNAL_FAILURE when the function reports an error.
fn proxy_call_foreign_function(
    caller: &mut Caller<'_, HostState>,
    name_ptr: u32,
    name_len: u32,
    arguments_ptr: u32,
    arguments_len: u32,
    return_data: u32,
    return_size: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_call_foreign_function");
    let outcome = call.with_two(
        (name_ptr, name_len, "function name"),
        (arguments_ptr, arguments_len, "arguments"),
        |name, arguments, state| {
            let name = String::from_utf8_lossy(name);
            state
                .plugin
                .foreign_functions
                .get(name.as_ref())
                .map(|function| function(arguments))
        },
    )?;
    match outcome {
        None => ret(Status::NotFound),
        Some(Err(_)) => ret(Status::InternalFailure),
        Some(Ok(results)) => {
            call.return_bytes(return_data, return_size, &results)?;
            ret(Status::Ok)
        }
    }
}
