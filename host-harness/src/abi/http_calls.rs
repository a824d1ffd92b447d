//! Http calls: `proxy_http_call`, and `proxy_get_status` which reports on the call being answered.
//!
//! As in Envoy, a call needs a known cluster and `:method`, `:path` and `:authority` headers, or it is
//! BAD_ARGUMENT; Envoy checks only that each is present, so an empty value (the Go SDK's examples send an
//! empty `:authority`) is accepted. Its response goes to the root context's `proxy_on_http_call_response` (the SDK routes it on
//! to the context that dispatched it); the host delivers it later, never inside the dispatching callback.

use std::time::Duration;

use wasmtime::{Caller, Linker};

use super::ENV;
use super::codec::decode_map;
use super::memory::HostCall;
use super::status::{HostResult, Status, ret};
use crate::clock::duration_nanos;
use crate::http_call::{ClusterBackend, HttpCallRequest, MockReply, PendingHttpCall};
use crate::state::{HostState, InFlightCall};
use crate::trace::link;

/// Links the http-call import `name`; `Ok(false)` when it is not one of this area's.
pub(crate) fn add_to_linker(
    linker: &mut Linker<HostState>,
    name: &'static str,
) -> wasmtime::Result<bool> {
    match name {
        "proxy_http_call" => link(linker, ENV, name, proxy_http_call)?,
        "proxy_get_status" => link(linker, ENV, name, proxy_get_status)?,
        _ => return Ok(false),
    };
    Ok(true)
}

/// The pseudo-headers Envoy requires on every http call.
const REQUIRED_PSEUDO_HEADERS: [&str; 3] = [":method", ":path", ":authority"];

#[allow(clippy::too_many_arguments)]
fn proxy_http_call(
    caller: &mut Caller<'_, HostState>,
    upstream_ptr: u32,
    upstream_len: u32,
    headers_ptr: u32,
    headers_len: u32,
    body_ptr: u32,
    body_len: u32,
    trailers_ptr: u32,
    trailers_len: u32,
    timeout_ms: u32,
    return_token: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_http_call");
    let upstream = call.read(upstream_ptr, upstream_len, "upstream name")?;
    let max_fields = call.state_ref().plugin.limits.max_header_fields;
    let headers = call.with_bytes(headers_ptr, headers_len, "headers", |bytes, _| {
        decode_map(bytes, max_fields)
    })?;
    let headers = headers.map_err(|error| call.trap(error))?;
    let trailers = call.with_bytes(trailers_ptr, trailers_len, "trailers", |bytes, _| {
        decode_map(bytes, max_fields)
    })?;
    let trailers = trailers.map_err(|error| call.trap(error))?;
    let body = call.read(body_ptr, body_len, "body")?;
    // Checked before the call starts, so a bad token pointer cannot leave a call nobody can answer.
    call.check_slot(return_token, 4, "return_token")?;

    let cluster = String::from_utf8_lossy(&upstream).into_owned();
    let Some(backend) = call.state_ref().plugin.clusters.get(&cluster).cloned() else {
        return ret(Status::BadArgument);
    };
    if REQUIRED_PSEUDO_HEADERS
        .iter()
        .any(|name| headers.get(name).is_none())
    {
        return ret(Status::BadArgument);
    }
    let timeout = (timeout_ms > 0).then(|| Duration::from_millis(u64::from(timeout_ms)));
    let request = HttpCallRequest {
        cluster,
        headers,
        body,
        trailers,
        timeout,
    };

    let state = call.state();
    if state.http.in_flight.len() >= state.plugin.limits.max_http_calls_in_flight {
        // The host cannot take another call: the spec's "failed to send", which the SDK accepts.
        return ret(Status::InternalFailure);
    }
    let now = state.plugin.clock.now_nanos();
    let token = state.http.next_token();
    let deadline = timeout.map(|timeout| now.saturating_add(duration_nanos(timeout)));
    let mock_outcome = match backend {
        ClusterBackend::Mock(mock) => match mock.answer(&request) {
            MockReply::Respond { response, after } => {
                Some((now.saturating_add(duration_nanos(after)), Ok(response)))
            }
            MockReply::Fail { failure, after } => {
                Some((now.saturating_add(duration_nanos(after)), Err(failure)))
            }
            MockReply::Never => None,
        },
        ClusterBackend::Embedder => {
            state
                .http
                .for_embedder
                .push(PendingHttpCall { token, request });
            None
        }
    };
    state.http.in_flight.insert(
        token,
        InFlightCall {
            deadline,
            mock_outcome,
        },
    );
    call.write_u32(return_token, token, "return_token")?;
    ret(Status::Ok)
}

/// Reports the status of the call being answered as Envoy does: 0 and no message for a response,
/// BROKEN_CONNECTION (11) and the failure ("reset", "timeout", ...) for a call delivered without headers;
/// outside `proxy_on_http_call_response`, 0 and no message.
fn proxy_get_status(
    caller: &mut Caller<'_, HostState>,
    return_code: u32,
    return_message_data: u32,
    return_message_size: u32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_get_status");
    let (code, message) = match &call.state_ref().http.delivering {
        Some(response) => (response.status_code, response.status_message.clone()),
        None => (0, String::new()),
    };
    call.write_u32(return_code, code, "return_code")?;
    call.return_bytes(return_message_data, return_message_size, message.as_bytes())?;
    ret(Status::Ok)
}
