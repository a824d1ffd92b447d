//! gRPC: `proxy_grpc_call`, `proxy_grpc_stream`, `proxy_grpc_send`, `proxy_grpc_cancel`, `proxy_grpc_close`.
//!
//! This host has no gRPC transport. Calls get the spec's answers within what the SDK accepts: an unknown
//! cluster is PARSE_FAILURE, a known one INTERNAL_FAILURE (the host failed to start the call); no gRPC call
//! or stream ever exists, so send, cancel and close are NOT_FOUND. Arguments are still bounds-checked.

use wasmtime::{Caller, Linker};

use super::ENV;
use super::memory::HostCall;
use super::status::{HostResult, Status, ret};
use crate::state::HostState;
use crate::trace::link;

/// Links the gRPC import `name`; `Ok(false)` when it is not one of this area's.
pub(crate) fn add_to_linker(
    linker: &mut Linker<HostState>,
    name: &'static str,
) -> wasmtime::Result<bool> {
    match name {
        "proxy_grpc_call" => link(linker, ENV, name, proxy_grpc_call)?,
        "proxy_grpc_stream" => link(linker, ENV, name, proxy_grpc_stream)?,
        "proxy_grpc_send" => link(linker, ENV, name, proxy_grpc_send)?,
        "proxy_grpc_cancel" => link(linker, ENV, name, proxy_grpc_cancel)?,
        "proxy_grpc_close" => link(linker, ENV, name, proxy_grpc_close)?,
        _ => return Ok(false),
    };
    Ok(true)
}

/// The status for starting a call or stream on `upstream`.
fn refuse_start(
    call: &mut HostCall<'_, '_>,
    upstream: (u32, u32),
    arguments: &[(u32, u32, &'static str)],
) -> HostResult {
    let upstream = call.read(upstream.0, upstream.1, "upstream name")?;
    for (ptr, len, what) in arguments {
        call.with_bytes(*ptr, *len, what, |_, _| ())?;
    }
    let known = call
        .state_ref()
        .plugin
        .clusters
        .contains_key(String::from_utf8_lossy(&upstream).as_ref());
    ret(if known {
        Status::InternalFailure
    } else {
        Status::ParseFailure
    })
}

#[allow(clippy::too_many_arguments)]
fn proxy_grpc_call(
    caller: &mut Caller<'_, HostState>,
    upstream_ptr: u32,
    upstream_len: u32,
    service_ptr: u32,
    service_len: u32,
    method_ptr: u32,
    method_len: u32,
    metadata_ptr: u32,
    metadata_len: u32,
    message_ptr: u32,
    message_len: u32,
    _timeout_ms: u32,
    return_token: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_grpc_call");
    call.check_slot(return_token, 4, "return_token")?;
    let arguments = [
        (service_ptr, service_len, "service name"),
        (method_ptr, method_len, "method name"),
        (metadata_ptr, metadata_len, "initial metadata"),
        (message_ptr, message_len, "message"),
    ];
    refuse_start(&mut call, (upstream_ptr, upstream_len), &arguments)
}

#[allow(clippy::too_many_arguments)]
fn proxy_grpc_stream(
    caller: &mut Caller<'_, HostState>,
    upstream_ptr: u32,
    upstream_len: u32,
    service_ptr: u32,
    service_len: u32,
    method_ptr: u32,
    method_len: u32,
    metadata_ptr: u32,
    metadata_len: u32,
    return_token: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_grpc_stream");
    call.check_slot(return_token, 4, "return_token")?;
    let arguments = [
        (service_ptr, service_len, "service name"),
        (method_ptr, method_len, "method name"),
        (metadata_ptr, metadata_len, "initial metadata"),
    ];
    refuse_start(&mut call, (upstream_ptr, upstream_len), &arguments)
}

fn proxy_grpc_send(
    caller: &mut Caller<'_, HostState>,
    _token: u32,
    message_ptr: u32,
    message_len: u32,
    _end_stream: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_grpc_send");
    call.with_bytes(message_ptr, message_len, "message", |_, _| ())?;
    ret(Status::NotFound)
}

fn proxy_grpc_cancel(_caller: &mut Caller<'_, HostState>, _token: u32) -> HostResult {
    ret(Status::NotFound)
}

fn proxy_grpc_close(_caller: &mut Caller<'_, HostState>, _token: u32) -> HostResult {
    ret(Status::NotFound)
}
