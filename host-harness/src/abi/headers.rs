//! Header maps: `proxy_get_header_map_size`, `proxy_get_header_map_pairs`, `proxy_set_header_map_pairs`,
//! `proxy_get_header_map_value`, `proxy_add_header_map_value`, `proxy_replace_header_map_value`,
//! `proxy_remove_header_map_value`.
//!
//! Stream maps exist only in a stream context; http-call response maps only during
//! `proxy_on_http_call_response`. Reaching for a map outside its phase traps with a message naming where
//! it is available. gRPC metadata maps are always empty: this host makes no gRPC calls. Maps the guest sends
//! are held to the plugin's field and byte limits.

use wasmtime::{Caller, Linker};

use super::ENV;
use super::codec::{decode_map, encode_map, encoded_map_len};
use super::memory::HostCall;
use super::status::{HostResult, Status, ret};
use crate::headers::Headers;
use crate::state::HostState;

/// Links the header-area import `name`; `Ok(false)` when it is not one of this area's.
pub(crate) fn add_to_linker(
    linker: &mut Linker<HostState>,
    name: &'static str,
) -> wasmtime::Result<bool> {
    match name {
        "proxy_get_header_map_size" => linker.func_wrap(ENV, name, proxy_get_header_map_size)?,
        "proxy_get_header_map_pairs" => linker.func_wrap(ENV, name, proxy_get_header_map_pairs)?,
        "proxy_set_header_map_pairs" => linker.func_wrap(ENV, name, proxy_set_header_map_pairs)?,
        "proxy_get_header_map_value" => linker.func_wrap(ENV, name, proxy_get_header_map_value)?,
        "proxy_add_header_map_value" => linker.func_wrap(ENV, name, proxy_add_header_map_value)?,
        "proxy_replace_header_map_value" => {
            linker.func_wrap(ENV, name, proxy_replace_header_map_value)?
        }
        "proxy_remove_header_map_value" => {
            linker.func_wrap(ENV, name, proxy_remove_header_map_value)?
        }
        _ => return Ok(false),
    };
    Ok(true)
}

/// The map types of the ABI, with where each is available.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MapType {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
    GrpcMetadata,
    HttpCallResponseHeaders,
    HttpCallResponseTrailers,
}

impl MapType {
    fn from_abi(value: u32) -> Option<Self> {
        Some(match value {
            0 => MapType::RequestHeaders,
            1 => MapType::RequestTrailers,
            2 => MapType::ResponseHeaders,
            3 => MapType::ResponseTrailers,
            4 | 5 => MapType::GrpcMetadata,
            6 => MapType::HttpCallResponseHeaders,
            7 => MapType::HttpCallResponseTrailers,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            MapType::RequestHeaders => "HTTP_REQUEST_HEADERS",
            MapType::RequestTrailers => "HTTP_REQUEST_TRAILERS",
            MapType::ResponseHeaders => "HTTP_RESPONSE_HEADERS",
            MapType::ResponseTrailers => "HTTP_RESPONSE_TRAILERS",
            MapType::GrpcMetadata => "GRPC_CALL_METADATA",
            MapType::HttpCallResponseHeaders => "HTTP_CALL_RESPONSE_HEADERS",
            MapType::HttpCallResponseTrailers => "HTTP_CALL_RESPONSE_TRAILERS",
        }
    }

    fn allowed(self) -> &'static str {
        match self {
            MapType::HttpCallResponseHeaders | MapType::HttpCallResponseTrailers => {
                "during proxy_on_http_call_response"
            }
            _ => {
                "in a stream context (HTTP stream callbacks, or after proxy_set_effective_context to a stream)"
            }
        }
    }
}

/// The map `map` in the effective context, or `None` when it does not exist there. gRPC metadata is
/// served from `empty`, which stays empty.
fn resolve<'s>(
    state: &'s mut HostState,
    map: MapType,
    empty: &'s mut Headers,
) -> Option<&'s mut Headers> {
    match map {
        MapType::HttpCallResponseHeaders => state
            .http
            .delivering
            .as_mut()
            .map(|response| &mut response.headers),
        MapType::HttpCallResponseTrailers => state
            .http
            .delivering
            .as_mut()
            .map(|response| &mut response.trailers),
        MapType::GrpcMetadata => Some(empty),
        MapType::RequestHeaders => state
            .contexts
            .effective_stream()
            .map(|stream| &mut stream.request.headers),
        MapType::RequestTrailers => state
            .contexts
            .effective_stream()
            .map(|stream| &mut stream.request.trailers),
        MapType::ResponseHeaders => state
            .contexts
            .effective_stream()
            .map(|stream| &mut stream.response.headers),
        MapType::ResponseTrailers => state
            .contexts
            .effective_stream()
            .map(|stream| &mut stream.response.trailers),
    }
}

/// Applies `f` to the map, trapping when the map does not exist in this phase.
fn with_map<R>(
    call: &mut HostCall<'_, '_>,
    map: MapType,
    f: impl FnOnce(&mut Headers, &mut Vec<u8>) -> R,
) -> wasmtime::Result<R> {
    let mut empty = Headers::new();
    let state = call.state();
    let mut scratch = std::mem::take(&mut state.scratch);
    let result = resolve(state, map, &mut empty).map(|headers| f(headers, &mut scratch));
    call.state().scratch = scratch;
    result.ok_or_else(|| call.phase_trap(map.name(), map.allowed()))
}

/// Checks a map the guest is about to leave behind against the plugin's limits.
fn check_limits(call: &HostCall<'_, '_>, fields: usize, bytes: usize) -> wasmtime::Result<()> {
    let limits = &call.state_ref().plugin.limits;
    if fields > limits.max_header_fields {
        return Err(call.trap(format!(
            "the map would hold {fields} fields; the host accepts at most {}",
            limits.max_header_fields
        )));
    }
    if bytes > limits.max_header_map_bytes {
        return Err(call.trap(format!(
            "the map would take {bytes} bytes; the host accepts at most {}",
            limits.max_header_map_bytes
        )));
    }
    Ok(())
}

fn proxy_get_header_map_size(
    mut caller: Caller<'_, HostState>,
    map_type: u32,
    return_size: u32,
) -> HostResult {
    let mut call = HostCall::new(&mut caller, "proxy_get_header_map_size");
    let Some(map) = MapType::from_abi(map_type) else {
        return ret(Status::BadArgument);
    };
    let size = with_map(&mut call, map, |headers, _| {
        encoded_map_len(headers.fields())
    })?;
    let size = u32::try_from(size)
        .map_err(|_| call.trap("map is larger than a 32-bit guest can address"))?;
    call.write_u32(return_size, size, "return_size")?;
    ret(Status::Ok)
}

/// Returns the whole map, serialized; an empty map as zero bytes.
fn proxy_get_header_map_pairs(
    mut caller: Caller<'_, HostState>,
    map_type: u32,
    return_data: u32,
    return_size: u32,
) -> HostResult {
    let mut call = HostCall::new(&mut caller, "proxy_get_header_map_pairs");
    let Some(map) = MapType::from_abi(map_type) else {
        return ret(Status::BadArgument);
    };
    with_map(&mut call, map, |headers, scratch| {
        encode_map(headers.fields(), scratch)
    })?;
    call.return_scratch(return_data, return_size)?;
    ret(Status::Ok)
}

/// Replaces the whole map with the serialized one the guest sent.
fn proxy_set_header_map_pairs(
    mut caller: Caller<'_, HostState>,
    map_type: u32,
    data_ptr: u32,
    data_len: u32,
) -> HostResult {
    let mut call = HostCall::new(&mut caller, "proxy_set_header_map_pairs");
    let Some(map) = MapType::from_abi(map_type) else {
        return ret(Status::BadArgument);
    };
    let max_fields = call.state_ref().plugin.limits.max_header_fields;
    let decoded = call.with_bytes(data_ptr, data_len, "map", |bytes, _| {
        decode_map(bytes, max_fields)
    })?;
    let fields = decoded.map_err(|error| call.trap(error))?;
    check_limits(&call, fields.len(), encoded_map_len(&fields))?;
    with_map(&mut call, map, |headers, _| {
        *headers = Headers::from_fields(fields)
    })?;
    ret(Status::Ok)
}

/// Returns the first value of a key (case-insensitive), or NOT_FOUND.
fn proxy_get_header_map_value(
    mut caller: Caller<'_, HostState>,
    map_type: u32,
    key_ptr: u32,
    key_len: u32,
    return_data: u32,
    return_size: u32,
) -> HostResult {
    let mut call = HostCall::new(&mut caller, "proxy_get_header_map_value");
    let Some(map) = MapType::from_abi(map_type) else {
        return ret(Status::BadArgument);
    };
    let key = call.read(key_ptr, key_len, "key")?;
    let value = with_map(&mut call, map, |headers, scratch| {
        headers.get(&key).map(|value| {
            scratch.clear();
            scratch.extend_from_slice(value);
        })
    })?;
    if value.is_none() {
        return ret(Status::NotFound);
    }
    call.return_scratch(return_data, return_size)?;
    ret(Status::Ok)
}

/// Shared by add and replace: reads key and value, checks limits, applies `update`.
fn update_value(
    call: &mut HostCall<'_, '_>,
    map_type: u32,
    key: (u32, u32),
    value: (u32, u32),
    update: fn(&mut Headers, &[u8], &[u8]),
) -> HostResult {
    let Some(map) = MapType::from_abi(map_type) else {
        return ret(Status::BadArgument);
    };
    let (key, value) = call.with_two(
        (key.0, key.1, "key"),
        (value.0, value.1, "value"),
        |key, value, _| (key.to_vec(), value.to_vec()),
    )?;
    let (fields, bytes) = with_map(call, map, |headers, _| {
        update(headers, &key, &value);
        (headers.len(), encoded_map_len(headers.fields()))
    })?;
    check_limits(call, fields, bytes)?;
    ret(Status::Ok)
}

fn proxy_add_header_map_value(
    mut caller: Caller<'_, HostState>,
    map_type: u32,
    key_ptr: u32,
    key_len: u32,
    value_ptr: u32,
    value_len: u32,
) -> HostResult {
    let mut call = HostCall::new(&mut caller, "proxy_add_header_map_value");
    update_value(
        &mut call,
        map_type,
        (key_ptr, key_len),
        (value_ptr, value_len),
        |headers, key, value| headers.add(key, value),
    )
}

fn proxy_replace_header_map_value(
    mut caller: Caller<'_, HostState>,
    map_type: u32,
    key_ptr: u32,
    key_len: u32,
    value_ptr: u32,
    value_len: u32,
) -> HostResult {
    let mut call = HostCall::new(&mut caller, "proxy_replace_header_map_value");
    update_value(
        &mut call,
        map_type,
        (key_ptr, key_len),
        (value_ptr, value_len),
        |headers, key, value| headers.replace(key, value),
    )
}

/// Removes every value of a key; removing an absent key is OK.
fn proxy_remove_header_map_value(
    mut caller: Caller<'_, HostState>,
    map_type: u32,
    key_ptr: u32,
    key_len: u32,
) -> HostResult {
    let mut call = HostCall::new(&mut caller, "proxy_remove_header_map_value");
    let Some(map) = MapType::from_abi(map_type) else {
        return ret(Status::BadArgument);
    };
    let key = call.read(key_ptr, key_len, "key")?;
    with_map(&mut call, map, |headers, _| headers.remove(&key))?;
    ret(Status::Ok)
}
