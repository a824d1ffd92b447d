//! Shared data: `proxy_get_shared_data` and `proxy_set_shared_data`, scoped by the plugin's VM id.

use wasmtime::{Caller, Linker};

use super::ENV;
use super::memory::HostCall;
use super::status::{HostResult, Status, ret};
use crate::shared::SharedDataError;
use crate::state::HostState;
use crate::trace::link;

/// Links the shared-data import `name`; `Ok(false)` when it is not one of this area's.
pub(crate) fn add_to_linker(
    linker: &mut Linker<HostState>,
    name: &'static str,
) -> wasmtime::Result<bool> {
    match name {
        "proxy_get_shared_data" => link(linker, ENV, name, proxy_get_shared_data)?,
        "proxy_set_shared_data" => link(linker, ENV, name, proxy_set_shared_data)?,
        _ => return Ok(false),
    };
    Ok(true)
}

/// Returns a key's value and cas, or NOT_FOUND.
fn proxy_get_shared_data(
    caller: &mut Caller<'_, HostState>,
    key_ptr: u32,
    key_len: u32,
    return_data: u32,
    return_size: u32,
    return_cas: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_get_shared_data");
    let key = call.read(key_ptr, key_len, "key")?;
    let found = {
        let state = call.state();
        let HostState {
            plugin, scratch, ..
        } = state;
        plugin
            .shared
            .with_value(&plugin.settings.vm_id, &key, |entry| {
                entry.map(|(value, cas)| {
                    scratch.clear();
                    scratch.extend_from_slice(value);
                    cas
                })
            })
    };
    let Some(cas) = found else {
        return ret(Status::NotFound);
    };
    call.check_slot(return_cas, 4, "return_cas")?;
    call.return_scratch(return_data, return_size)?;
    call.write_u32(return_cas, cas, "return_cas")?;
    ret(Status::Ok)
}

/// Sets a key; a non-zero cas must match the stored one (CAS_MISMATCH otherwise).
fn proxy_set_shared_data(
    caller: &mut Caller<'_, HostState>,
    key_ptr: u32,
    key_len: u32,
    value_ptr: u32,
    value_len: u32,
    cas: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_set_shared_data");
    let outcome = call.with_two(
        (key_ptr, key_len, "key"),
        (value_ptr, value_len, "value"),
        |key, value, state| {
            state
                .plugin
                .shared
                .set_from_guest(&state.plugin.settings.vm_id, key, value, cas)
        },
    )?;
    match outcome {
        Ok(_) => ret(Status::Ok),
        Err(SharedDataError::CasMismatch) => ret(Status::CasMismatch),
        Err(SharedDataError::LimitExceeded) => {
            Err(call.trap("shared data would exceed the host's byte limit"))
        }
    }
}
