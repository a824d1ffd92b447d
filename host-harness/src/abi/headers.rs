//! Header maps: `proxy_get_header_map_size`, `proxy_get_header_map_pairs`, `proxy_set_header_map_pairs`,
//! `proxy_get_header_map_value`, `proxy_add_header_map_value`, `proxy_replace_header_map_value`,
//! `proxy_remove_header_map_value`.
//!
//! A map is reachable only where Envoy lets a filter reach it: stream headers from their callback until it
//! returns Continue (a pause keeps them reachable), trailers during their callback (and a body callback at
//! the end of the stream, to add them), every header map but the request trailers read-only in
//! `proxy_on_log`, http-call response maps during `proxy_on_http_call_response`. Elsewhere, as in Envoy,
//! the call is BAD_ARGUMENT (the Rust SDK panics on it, as it does in Envoy); in `proxy_on_log` a missing
//! map reads as empty and a value in it as NOT_FOUND. gRPC metadata maps are always empty: this host
//! makes no gRPC calls. Maps the guest leaves behind are held to the plugin's field and byte limits.

use wasmtime::{Caller, Linker};

use super::ENV;
use super::codec::{decode_map, encode_map, encoded_map_len};
use super::memory::HostCall;
use super::status::{HostResult, Status, ret};
use crate::headers::Headers;
use crate::state::HostState;
use crate::trace::{enum_arg, link};

/// Links the header-area import `name`; `Ok(false)` when it is not one of this area's.
pub(crate) fn add_to_linker(
    linker: &mut Linker<HostState>,
    name: &'static str,
) -> wasmtime::Result<bool> {
    match name {
        "proxy_get_header_map_size" => link(linker, ENV, name, proxy_get_header_map_size)?,
        "proxy_get_header_map_pairs" => link(linker, ENV, name, proxy_get_header_map_pairs)?,
        "proxy_set_header_map_pairs" => link(linker, ENV, name, proxy_set_header_map_pairs)?,
        "proxy_get_header_map_value" => link(linker, ENV, name, proxy_get_header_map_value)?,
        "proxy_add_header_map_value" => link(linker, ENV, name, proxy_add_header_map_value)?,
        "proxy_replace_header_map_value" => {
            link(linker, ENV, name, proxy_replace_header_map_value)?
        }
        "proxy_remove_header_map_value" => link(linker, ENV, name, proxy_remove_header_map_value)?,
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

/// The ABI's map types by value, as the host-call trace names them.
const MAP_NAMES: [&str; 8] = [
    "request_headers",
    "request_trailers",
    "response_headers",
    "response_trailers",
    "grpc_receive_initial_metadata",
    "grpc_receive_trailing_metadata",
    "http_call_response_headers",
    "http_call_response_trailers",
];

impl MapType {
    /// The map type `value` names, recorded as the call's `map` argument.
    fn of_call(call: &mut HostCall<'_, '_>, value: u32) -> Option<Self> {
        call.trace_arg(|| enum_arg("map", value, &MAP_NAMES));
        Self::from_abi(value)
    }

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
}

/// Why a map cannot be reached from here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unreachable {
    /// Not available in this callback: BAD_ARGUMENT, as in Envoy.
    Elsewhere,
    /// Not available in `proxy_on_log`, where a read sees an empty map.
    InLog,
}

/// The map `map` in the effective context, for reading or (with `write`) changing it; gRPC metadata is
/// the caller's to serve.
fn resolve(state: &mut HostState, map: MapType, write: bool) -> Result<&mut Headers, Unreachable> {
    let delivering = &mut state.http.delivering;
    match map {
        MapType::HttpCallResponseHeaders => {
            return delivering
                .as_mut()
                .map(|r| &mut r.headers)
                .ok_or(Unreachable::Elsewhere);
        }
        MapType::HttpCallResponseTrailers => {
            return delivering
                .as_mut()
                .map(|r| &mut r.trailers)
                .ok_or(Unreachable::Elsewhere);
        }
        _ => {}
    }
    let stream = state
        .contexts
        .effective_stream()
        .ok_or(Unreachable::Elsewhere)?;
    let readable_in_log = stream.logging && !write;
    let refused = if stream.logging {
        Unreachable::InLog
    } else {
        Unreachable::Elsewhere
    };
    let (direction, is_headers) = match map {
        MapType::RequestHeaders => (&mut stream.request, true),
        MapType::RequestTrailers => (&mut stream.request, false),
        MapType::ResponseHeaders => (&mut stream.response, true),
        _ => (&mut stream.response, false),
    };
    match (is_headers, map) {
        (true, _) if direction.headers_open || readable_in_log => Ok(&mut direction.headers),
        (false, MapType::ResponseTrailers) if direction.trailers_open || readable_in_log => {
            Ok(&mut direction.trailers)
        }
        (false, _) if direction.trailers_open => Ok(&mut direction.trailers),
        _ => Err(refused),
    }
}

/// Applies `f` to the map in `state`; `Err` with the reason when it cannot be reached from here.
fn with_map_in<R>(
    state: &mut HostState,
    map: MapType,
    write: bool,
    f: impl FnOnce(&mut Headers) -> R,
) -> Result<R, Unreachable> {
    if map == MapType::GrpcMetadata {
        // gRPC metadata reads as this map, which is dropped with whatever was written to it.
        return Ok(f(&mut Headers::new()));
    }
    resolve(state, map, write).map(f)
}

/// Applies `f` to the map; `Err` with the reason when it cannot be reached from here.
fn with_map<R>(
    call: &mut HostCall<'_, '_>,
    map: MapType,
    write: bool,
    f: impl FnOnce(&mut Headers) -> R,
) -> Result<R, Unreachable> {
    with_map_in(call.state(), map, write, f)
}

/// Copies `source` into the guest's block, which was sized for it before the guest allocated; `None` when
/// the guest changed the map from its allocator so the sizes no longer match.
fn fill(target: &mut [u8], source: &[u8]) -> Option<()> {
    (target.len() == source.len()).then(|| target.copy_from_slice(source))
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

/// The map a read call names and its encoded length (zero in `proxy_on_log`, where reads see an empty
/// map); `None` when the type is unknown or the map is not available here (BAD_ARGUMENT).
fn readable_map_len(call: &mut HostCall<'_, '_>, map_type: u32) -> Option<(MapType, usize)> {
    let map = MapType::of_call(call, map_type)?;
    match with_map(call, map, false, |headers| encoded_map_len(headers)) {
        Ok(len) => Some((map, len)),
        Err(Unreachable::InLog) => Some((map, 0)),
        Err(Unreachable::Elsewhere) => None,
    }
}

fn proxy_get_header_map_size(
    caller: &mut Caller<'_, HostState>,
    map_type: u32,
    return_size: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_get_header_map_size");
    let Some((_, size)) = readable_map_len(&mut call, map_type) else {
        return ret(Status::BadArgument);
    };
    let size = u32::try_from(size)
        .map_err(|_| call.trap("map is larger than a 32-bit guest can address"))?;
    call.write_u32(return_size, size, "return_size")?;
    ret(Status::Ok)
}

/// Returns the whole map, serialized straight into the guest's block; an empty map as zero bytes.
fn proxy_get_header_map_pairs(
    caller: &mut Caller<'_, HostState>,
    map_type: u32,
    return_data: u32,
    return_size: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_get_header_map_pairs");
    let Some((map, len)) = readable_map_len(&mut call, map_type) else {
        return ret(Status::BadArgument);
    };
    call.return_with(return_data, return_size, len, |state, target| {
        with_map_in(state, map, false, |headers| encode_map(headers, target))
            .ok()
            .flatten()
    })?;
    ret(Status::Ok)
}

/// Replaces the whole map with the serialized one the guest sent.
fn proxy_set_header_map_pairs(
    caller: &mut Caller<'_, HostState>,
    map_type: u32,
    data_ptr: u32,
    data_len: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_set_header_map_pairs");
    let Some(map) = MapType::of_call(&mut call, map_type) else {
        return ret(Status::BadArgument);
    };
    let max_fields = call.state_ref().plugin.limits.max_header_fields;
    let decoded = call.with_bytes(data_ptr, data_len, "pairs", |bytes, _| {
        decode_map(bytes, max_fields)
    })?;
    let decoded = decoded.map_err(|error| call.trap(error))?;
    check_limits(&call, decoded.len(), encoded_map_len(&decoded))?;
    match with_map(&mut call, map, true, |headers| *headers = decoded) {
        Ok(()) => ret(Status::Ok),
        Err(_) => ret(Status::BadArgument),
    }
}

/// Returns the first value of a key (case-insensitive), or NOT_FOUND.
fn proxy_get_header_map_value(
    caller: &mut Caller<'_, HostState>,
    map_type: u32,
    key_ptr: u32,
    key_len: u32,
    return_data: u32,
    return_size: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_get_header_map_value");
    let Some(map) = MapType::of_call(&mut call, map_type) else {
        return ret(Status::BadArgument);
    };
    let found = call.with_bytes(key_ptr, key_len, "key", |key, state| {
        with_map_in(state, map, false, |headers| {
            let index = headers.position(key)?;
            Some((index, headers.field(index)?.1.len()))
        })
    })?;
    let (index, len) = match found {
        Ok(Some(found)) => found,
        Ok(None) | Err(Unreachable::InLog) => return ret(Status::NotFound),
        Err(Unreachable::Elsewhere) => return ret(Status::BadArgument),
    };
    call.return_with(return_data, return_size, len, |state, target| {
        with_map_in(state, map, false, |headers| {
            headers
                .field(index)
                .and_then(|(_, value)| fill(target, value))
        })
        .ok()
        .flatten()
    })?;
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
    let Some(map) = MapType::of_call(call, map_type) else {
        return ret(Status::BadArgument);
    };
    let updated = call.with_two(
        (key.0, key.1, "key"),
        (value.0, value.1, "value"),
        |key, value, state| {
            with_map_in(state, map, true, |headers| {
                update(headers, key, value);
                (headers.len(), encoded_map_len(headers))
            })
        },
    )?;
    let Ok((fields, bytes)) = updated else {
        return ret(Status::BadArgument);
    };
    check_limits(call, fields, bytes)?;
    ret(Status::Ok)
}

fn proxy_add_header_map_value(
    caller: &mut Caller<'_, HostState>,
    map_type: u32,
    key_ptr: u32,
    key_len: u32,
    value_ptr: u32,
    value_len: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_add_header_map_value");
    update_value(
        &mut call,
        map_type,
        (key_ptr, key_len),
        (value_ptr, value_len),
        |headers, key, value| headers.add(key, value),
    )
}

/// Sets one value for the name, at the end of the map, as Envoy does.
fn proxy_replace_header_map_value(
    caller: &mut Caller<'_, HostState>,
    map_type: u32,
    key_ptr: u32,
    key_len: u32,
    value_ptr: u32,
    value_len: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_replace_header_map_value");
    update_value(
        &mut call,
        map_type,
        (key_ptr, key_len),
        (value_ptr, value_len),
        // Envoy replaces by removing every value and appending the new one: the header moves to the end.
        |headers, key, value| {
            headers.remove(key);
            headers.add(key, value);
        },
    )
}

/// Removes every value of a key; removing an absent key is OK.
fn proxy_remove_header_map_value(
    caller: &mut Caller<'_, HostState>,
    map_type: u32,
    key_ptr: u32,
    key_len: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_remove_header_map_value");
    let Some(map) = MapType::of_call(&mut call, map_type) else {
        return ret(Status::BadArgument);
    };
    let removed = call.with_bytes(key_ptr, key_len, "key", |key, state| {
        with_map_in(state, map, true, |headers| headers.remove(key))
    })?;
    match removed {
        Ok(()) => ret(Status::Ok),
        Err(_) => ret(Status::BadArgument),
    }
}
