//! Properties: `proxy_get_property` and `proxy_set_property`.
//!
//! Paths are NUL-separated segments, as the SDK serializes them. Values use Envoy's encodings: strings as
//! bytes, integers as 8-byte little-endian. Lookup order: properties the guest set (stream, then root), then
//! properties the embedder gave (stream, then plugin), then the values derived from the stream and plugin
//! listed in `specs/host-harness.md`. An unknown path is NOT_FOUND.

use wasmtime::{Caller, Linker};

use super::ENV;
use super::codec::split_path;
use super::memory::HostCall;
use super::status::{HostResult, Status, ret};
use crate::state::HostState;
use crate::stream::StreamState;
use crate::trace::link;

/// Links the property import `name`; `Ok(false)` when it is not one of this area's.
pub(crate) fn add_to_linker(
    linker: &mut Linker<HostState>,
    name: &'static str,
) -> wasmtime::Result<bool> {
    match name {
        "proxy_get_property" => link(linker, ENV, name, proxy_get_property)?,
        "proxy_set_property" => link(linker, ENV, name, proxy_set_property)?,
        _ => return Ok(false),
    };
    Ok(true)
}

/// A property's value as it is found: borrowed from the state, or an integer in Envoy's 8-byte encoding.
enum Value<'a> {
    Bytes(&'a [u8]),
    Int(u64),
}

impl Value<'_> {
    /// Replaces `out`'s contents with the encoded value.
    fn encode_into(&self, out: &mut Vec<u8>) {
        out.clear();
        match self {
            Value::Bytes(bytes) => out.extend_from_slice(bytes),
            Value::Int(value) => out.extend_from_slice(&value.to_le_bytes()),
        }
    }
}

fn find<'a>(entries: &'a [(Vec<u8>, Vec<u8>)], path: &[u8]) -> Option<Value<'a>> {
    entries
        .iter()
        .find(|(key, _)| key == path)
        .map(|(_, value)| Value::Bytes(value))
}

fn text(text: &str) -> Value<'_> {
    Value::Bytes(text.as_bytes())
}

fn port_of(address: &str) -> Option<Value<'_>> {
    address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u64>().ok())
        .map(Value::Int)
}

/// Values derived from the stream's headers and connection details.
fn stream_property<'a>(stream: &'a StreamState, segments: &[&[u8]]) -> Option<Value<'a>> {
    let request = &stream.request.headers;
    let header = |name: &str| request.get(name).map(Value::Bytes);
    let path = || request.get(":path").unwrap_or_default();
    match segments {
        [b"request", b"path"] => header(":path"),
        [b"request", b"url_path"] => Some(Value::Bytes(
            path()
                .split(|byte| *byte == b'?')
                .next()
                .unwrap_or_default(),
        )),
        [b"request", b"query"] => Some(Value::Bytes(
            path()
                .splitn(2, |byte| *byte == b'?')
                .nth(1)
                .unwrap_or_default(),
        )),
        [b"request", b"host"] => header(":authority"),
        [b"request", b"scheme"] => header(":scheme"),
        [b"request", b"method"] => header(":method"),
        [b"request", b"id"] => header("x-request-id"),
        [b"request", b"referer"] => header("referer"),
        [b"request", b"useragent"] => header("user-agent"),
        [b"request", b"headers", name] => request.get(name).map(Value::Bytes),
        [b"request", b"protocol"] => stream.info.protocol.as_deref().map(text),
        [b"request", b"time"] => Some(Value::Int(stream.started_nanos)),
        [b"response", b"code"] => {
            let status = stream.response.headers.get_str(":status")?;
            status.parse::<u64>().ok().map(Value::Int)
        }
        [b"response", b"headers", name] => stream.response.headers.get(name).map(Value::Bytes),
        [b"response", b"trailers", name] => stream.response.trailers.get(name).map(Value::Bytes),
        [b"source", b"address"] => stream.info.source_address.as_deref().map(text),
        [b"source", b"port"] => stream.info.source_address.as_deref().and_then(port_of),
        [b"destination", b"address"] => stream.info.destination_address.as_deref().map(text),
        [b"destination", b"port"] => stream.info.destination_address.as_deref().and_then(port_of),
        [b"connection", b"id"] => stream.info.connection_id.map(Value::Int),
        _ => None,
    }
}

/// The value at `path` in the effective context, if there is one.
fn lookup<'a>(state: &'a HostState, path: &[u8]) -> Option<Value<'a>> {
    let stream = state.contexts.streams.get(&state.contexts.effective);
    if let Some(value) = stream.and_then(|stream| find(&stream.custom_properties, path)) {
        return Some(value);
    }
    if let Some(value) = find(&state.root_properties, path) {
        return Some(value);
    }
    if let Some(value) = stream.and_then(|stream| find(&stream.info.properties, path)) {
        return Some(value);
    }
    let settings = &state.plugin.settings;
    if let Some(value) = find(&settings.properties, path) {
        return Some(value);
    }
    // A path of more segments than any derived property has names none of them.
    let segments = split_path(path)?;
    match segments.as_slice() {
        [b"plugin_name"] => Some(text(&settings.plugin_name)),
        [b"plugin_root_id"] => Some(text(&settings.root_id)),
        [b"plugin_vm_id"] => Some(text(&settings.vm_id)),
        segments => stream.and_then(|stream| stream_property(stream, segments)),
    }
}

fn proxy_get_property(
    caller: &mut Caller<'_, HostState>,
    path_ptr: u32,
    path_len: u32,
    return_data: u32,
    return_size: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_get_property");
    // The value is copied into the state's scratch buffer, so a read allocates nothing on the host.
    let found = call.with_bytes(path_ptr, path_len, "path", |path, state| {
        let mut out = std::mem::take(&mut state.scratch);
        let found = lookup(state, path).map(|value| value.encode_into(&mut out));
        state.scratch = out;
        found.is_some()
    })?;
    if !found {
        return ret(Status::NotFound);
    }
    call.return_scratch(return_data, return_size)?;
    ret(Status::Ok)
}

/// Stores a property for the effective context (the stream, or the VM's root context); later reads in
/// that context see it first, as in Envoy.
fn proxy_set_property(
    caller: &mut Caller<'_, HostState>,
    path_ptr: u32,
    path_len: u32,
    value_ptr: u32,
    value_len: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_set_property");
    let limit = call.state_ref().plugin.limits.max_guest_properties;
    let stored = call.with_two(
        (path_ptr, path_len, "path"),
        (value_ptr, value_len, "value"),
        |path, value, state| {
            let effective = state.contexts.effective;
            let entries = match state.contexts.streams.get_mut(&effective) {
                Some(stream) => &mut stream.custom_properties,
                None => &mut state.root_properties,
            };
            if let Some(entry) = entries.iter_mut().find(|(key, _)| key == path) {
                entry.1 = value.to_vec();
            } else if entries.len() >= limit {
                return false;
            } else {
                entries.push((path.to_vec(), value.to_vec()));
            }
            true
        },
    )?;
    if !stored {
        return Err(call.trap(format!(
            "the host keeps at most {limit} properties per context"
        )));
    }
    ret(Status::Ok)
}
