//! Buffers: `proxy_get_buffer_bytes`, `proxy_set_buffer_bytes`, `proxy_get_buffer_status`.
//!
//! Bodies are the stream's held bytes (the current chunk plus what the filter buffered by pausing).
//! Configuration buffers and an http-call response body are read-only. TCP data, gRPC messages and foreign
//! function arguments never exist in this host, so asking for them is NOT_FOUND, as it is in Envoy whenever
//! a buffer is not available.

use wasmtime::{Caller, Linker};

use super::ENV;
use super::memory::HostCall;
use super::status::{HostResult, Status, ret};
use crate::state::HostState;
use crate::trace::{enum_arg, link};

/// Links the buffer-area import `name`; `Ok(false)` when it is not one of this area's.
pub(crate) fn add_to_linker(
    linker: &mut Linker<HostState>,
    name: &'static str,
) -> wasmtime::Result<bool> {
    match name {
        "proxy_get_buffer_bytes" => link(linker, ENV, name, proxy_get_buffer_bytes)?,
        "proxy_set_buffer_bytes" => link(linker, ENV, name, proxy_set_buffer_bytes)?,
        "proxy_get_buffer_status" => link(linker, ENV, name, proxy_get_buffer_status)?,
        _ => return Ok(false),
    };
    Ok(true)
}

/// The buffer types of the ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BufferType {
    RequestBody,
    ResponseBody,
    HttpCallResponseBody,
    VmConfiguration,
    PluginConfiguration,
    /// Downstream/upstream data, gRPC messages, foreign-function arguments: never present here.
    Absent,
}

/// The ABI's buffer types by value, as the host-call trace names them.
const BUFFER_NAMES: [&str; 9] = [
    "request_body",
    "response_body",
    "downstream_data",
    "upstream_data",
    "http_call_response_body",
    "grpc_receive_buffer",
    "vm_configuration",
    "plugin_configuration",
    "call_data",
];

impl BufferType {
    /// The buffer type `value` names, recorded as the call's `buffer` argument.
    fn of_call(call: &mut HostCall<'_, '_>, value: u32) -> Option<Self> {
        call.trace_arg(|| enum_arg("buffer", value, &BUFFER_NAMES));
        Self::from_abi(value)
    }

    fn from_abi(value: u32) -> Option<Self> {
        Some(match value {
            0 => BufferType::RequestBody,
            1 => BufferType::ResponseBody,
            4 => BufferType::HttpCallResponseBody,
            6 => BufferType::VmConfiguration,
            7 => BufferType::PluginConfiguration,
            2 | 3 | 5 | 8 => BufferType::Absent,
            _ => return None,
        })
    }
}

/// The bytes of a buffer as the guest may read them, or `None` when the buffer is not available.
fn readable(state: &HostState, buffer: BufferType) -> Option<&[u8]> {
    let stream = || state.contexts.streams.get(&state.contexts.effective);
    match buffer {
        BufferType::RequestBody => stream().map(|stream| stream.request.body.as_slice()),
        BufferType::ResponseBody => stream().map(|stream| stream.response.body.as_slice()),
        BufferType::HttpCallResponseBody => state
            .http
            .delivering
            .as_ref()
            .map(|response| response.body.as_slice()),
        BufferType::VmConfiguration => Some(state.plugin.settings.vm_config.as_slice()),
        BufferType::PluginConfiguration => Some(state.plugin.settings.plugin_config.as_slice()),
        BufferType::Absent => None,
    }
}

/// Returns up to `max_size` bytes from `start`. A range past the end is cut to what exists, and a start past
/// the end returns nothing: Envoy answers BAD_ARGUMENT for an overflowing range, which the SDK cannot take.
fn proxy_get_buffer_bytes(
    caller: &mut Caller<'_, HostState>,
    buffer_type: u32,
    start: u32,
    max_size: u32,
    return_data: u32,
    return_size: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_get_buffer_bytes");
    let Some(buffer) = BufferType::of_call(&mut call, buffer_type) else {
        return ret(Status::BadArgument);
    };
    let Some(available) = readable(call.state_ref(), buffer).map(<[u8]>::len) else {
        return ret(Status::NotFound);
    };
    let start = usize::try_from(start).unwrap_or(usize::MAX).min(available);
    let len = usize::try_from(max_size)
        .unwrap_or(usize::MAX)
        .min(available - start);
    call.return_with(return_data, return_size, len, |state, target| {
        // Looked up again after the guest allocated: its allocator may have changed the buffer meanwhile.
        let source = readable(state, buffer).and_then(|bytes| bytes.get(start..start + len))?;
        target.copy_from_slice(source);
        Some(())
    })?;
    ret(Status::Ok)
}

/// Envoy's semantics: `start` 0 replaces the first `size` bytes with the data (so the body may grow or
/// shrink), a start at or past the end appends, any other start is BAD_ARGUMENT. Read-only buffers are
/// BAD_ARGUMENT, absent ones NOT_FOUND. The body of the other direction is BAD_ARGUMENT from a request or
/// response callback: Envoy holds no buffer of it there (its `copyFrom` on an empty buffer refuses), so a
/// write that could only be lost is refused instead.
fn proxy_set_buffer_bytes(
    caller: &mut Caller<'_, HostState>,
    buffer_type: u32,
    start: u32,
    size: u32,
    data_ptr: u32,
    data_len: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_set_buffer_bytes");
    let Some(buffer) = BufferType::of_call(&mut call, buffer_type) else {
        return ret(Status::BadArgument);
    };
    let status = call.with_bytes(data_ptr, data_len, "data", |data, state| {
        if other_direction(state.contexts.callback, buffer) {
            return Status::BadArgument;
        }
        let body = match buffer {
            BufferType::RequestBody => state
                .contexts
                .effective_stream()
                .map(|stream| &mut stream.request.body),
            BufferType::ResponseBody => state
                .contexts
                .effective_stream()
                .map(|stream| &mut stream.response.body),
            BufferType::HttpCallResponseBody if state.http.delivering.is_none() => None,
            BufferType::HttpCallResponseBody
            | BufferType::VmConfiguration
            | BufferType::PluginConfiguration => {
                return Status::BadArgument;
            }
            BufferType::Absent => None,
        };
        let Some(body) = body else {
            return Status::NotFound;
        };
        let start = usize::try_from(start).unwrap_or(usize::MAX);
        if start == 0 {
            let replaced = usize::try_from(size).unwrap_or(usize::MAX).min(body.len());
            body.splice(..replaced, data.iter().copied());
            Status::Ok
        } else if start >= body.len() {
            body.extend_from_slice(data);
            Status::Ok
        } else {
            Status::BadArgument
        }
    })?;
    ret(status)
}

/// Whether `buffer` is the body of the direction the running stream callback does not process.
fn other_direction(callback: &str, buffer: BufferType) -> bool {
    const REQUEST: [&str; 3] = [
        "proxy_on_request_headers",
        "proxy_on_request_body",
        "proxy_on_request_trailers",
    ];
    const RESPONSE: [&str; 3] = [
        "proxy_on_response_headers",
        "proxy_on_response_body",
        "proxy_on_response_trailers",
    ];
    match buffer {
        BufferType::RequestBody => RESPONSE.contains(&callback),
        BufferType::ResponseBody => REQUEST.contains(&callback),
        _ => false,
    }
}

/// Reports a buffer's size (and flags, always 0).
fn proxy_get_buffer_status(
    caller: &mut Caller<'_, HostState>,
    buffer_type: u32,
    return_size: u32,
    return_flags: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_get_buffer_status");
    let Some(buffer) = BufferType::of_call(&mut call, buffer_type) else {
        return ret(Status::BadArgument);
    };
    let Some(len) = readable(call.state_ref(), buffer).map(<[u8]>::len) else {
        return ret(Status::NotFound);
    };
    let len = u32::try_from(len)
        .map_err(|_| call.trap("buffer is larger than a 32-bit guest can address"))?;
    call.write_u32(return_size, len, "return_size")?;
    call.write_u32(return_flags, 0, "return_flags")?;
    ret(Status::Ok)
}
