//! Stream control: `proxy_continue_stream`, `proxy_close_stream`, `proxy_send_local_response`.
//!
//! A change made from outside the stream's own callbacks (an http-call response, a tick, another stream) is
//! also queued as a `StreamEvent`, since the embedder is not waiting on a return value for it then.

use wasmtime::{Caller, Linker};

use super::ENV;
use super::codec::decode_map;
use super::memory::HostCall;
use super::status::{HostResult, Status, ret};
use crate::headers::Headers;
use crate::logs::{LogLevel, LogSource};
use crate::state::HostState;
use crate::stream::{LocalResponse, StreamEvent, StreamId, StreamState};
use crate::trace::{enum_arg, link};

/// Links the stream-control import `name`; `Ok(false)` when it is not one of this area's.
pub(crate) fn add_to_linker(
    linker: &mut Linker<HostState>,
    name: &'static str,
) -> wasmtime::Result<bool> {
    match name {
        "proxy_continue_stream" => link(linker, ENV, name, proxy_continue_stream)?,
        "proxy_close_stream" => link(linker, ENV, name, proxy_close_stream)?,
        "proxy_send_local_response" => link(linker, ENV, name, proxy_send_local_response)?,
        _ => return Ok(false),
    };
    Ok(true)
}

/// The stream types of the ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamType {
    HttpRequest,
    HttpResponse,
    /// TCP downstream/upstream: this host runs HTTP filters only.
    Tcp,
}

impl StreamType {
    fn from_abi(value: u32) -> Option<Self> {
        match value {
            0 => Some(StreamType::HttpRequest),
            1 => Some(StreamType::HttpResponse),
            2 | 3 => Some(StreamType::Tcp),
            _ => None,
        }
    }
}

/// Notes a call that cannot act here: Envoy accepts these quietly, so the guest gets OK and the log says why.
fn note_no_effect(call: &mut HostCall<'_, '_>, why: &str) {
    let message = format!("host: {} has no effect {why}", call.name());
    call.state()
        .log
        .push(LogLevel::Warn, message, LogSource::Host);
}

/// Applies `change` to the effective stream for an HTTP stream type; TCP types and the root context have
/// nothing to act on (Envoy accepts both quietly, so the guest gets OK and the log says why).
fn control_stream(
    call: &mut HostCall<'_, '_>,
    stream_type: u32,
    change: fn(&mut StreamState, StreamType) -> Option<StreamEvent>,
) -> HostResult {
    call.trace_arg(|| {
        enum_arg(
            "stream",
            stream_type,
            &["http_request", "http_response", "downstream", "upstream"],
        )
    });
    let Some(stream_type) = StreamType::from_abi(stream_type) else {
        return ret(Status::BadArgument);
    };
    if stream_type == StreamType::Tcp {
        note_no_effect(call, "for TCP streams in an HTTP filter");
        return ret(Status::Ok);
    }
    let contexts = &mut call.state().contexts;
    let is_async = contexts.is_async_for(contexts.effective);
    let Some(stream) = contexts.effective_stream() else {
        note_no_effect(call, "in the root context");
        return ret(Status::Ok);
    };
    if let Some(event) = change(stream, stream_type)
        && is_async
    {
        call.state().events.push(event);
    }
    ret(Status::Ok)
}

/// Resumes a paused request or response, releasing the body the filter held.
fn proxy_continue_stream(caller: &mut Caller<'_, HostState>, stream_type: u32) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_continue_stream");
    control_stream(&mut call, stream_type, |stream, stream_type| {
        if stream.is_terminated() {
            return None;
        }
        let id = StreamId(stream.id);
        if stream_type == StreamType::HttpRequest {
            stream.request.resume();
            Some(StreamEvent::RequestResumed(id))
        } else {
            stream.response.resume();
            Some(StreamEvent::ResponseResumed(id))
        }
    })
}

/// Resets the stream (Envoy resets an HTTP stream for either direction).
fn proxy_close_stream(caller: &mut Caller<'_, HostState>, stream_type: u32) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_close_stream");
    control_stream(&mut call, stream_type, |stream, _| {
        if stream.reset {
            return None;
        }
        stream.reset = true;
        Some(StreamEvent::Reset(StreamId(stream.id)))
    })
}

/// Answers the stream with a local response, replacing the upstream's response if it has not gone
/// downstream yet (from `proxy_on_response_headers` included). Only the first one counts; once response
/// headers went downstream a local response is impossible and the stream is reset instead, as Envoy does.
/// Whether Envoy treats the request as gRPC: its `content-type` is `application/grpc`, or that followed
/// by `+` or `;`.
fn is_grpc_request(headers: &Headers) -> bool {
    headers.get("content-type").is_some_and(|value| {
        value
            .strip_prefix(b"application/grpc")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"+") || rest.starts_with(b";"))
    })
}

/// Envoy's gRPC status for an HTTP status (`Grpc::Utility::httpToGrpcStatus`).
fn grpc_status_for(http_status: u32) -> u32 {
    match http_status {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 | 502..=504 => 14,
        _ => 2,
    }
}

/// Turns a local response to a gRPC request into the trailers-only reply Envoy sends: HTTP 200,
/// `content-type: application/grpc`, `grpc-status` (the filter's, else mapped from the HTTP status) and
/// the body, percent-encoded, as `grpc-message`; no body. Returns the status and body to send.
fn as_grpc_reply(
    headers: &mut Headers,
    status_code: u32,
    body: &[u8],
    grpc_status: i32,
) -> (u32, Vec<u8>) {
    headers.replace("content-type", "application/grpc");
    if !headers.contains("grpc-status") {
        let status = u32::try_from(grpc_status).unwrap_or_else(|_| grpc_status_for(status_code));
        headers.replace("grpc-status", status.to_string());
    }
    if !body.is_empty() {
        let mut encoded = String::with_capacity(body.len());
        for &byte in body {
            if (b' '..=b'~').contains(&byte) && byte != b'%' {
                encoded.push(char::from(byte));
            } else {
                encoded.push_str(&format!("%{byte:02X}"));
            }
        }
        headers.replace("grpc-message", encoded);
    }
    headers.remove("content-length");
    (200, Vec::new())
}

#[allow(clippy::too_many_arguments)]
fn proxy_send_local_response(
    caller: &mut Caller<'_, HostState>,
    status_code: u32,
    details_ptr: u32,
    details_len: u32,
    body_ptr: u32,
    body_len: u32,
    headers_ptr: u32,
    headers_len: u32,
    grpc_status: i32,
) -> HostResult {
    let mut call = HostCall::new(caller, "proxy_send_local_response");
    let details = call.read(details_ptr, details_len, "status code details")?;
    let body = call.read(body_ptr, body_len, "body")?;
    let max_fields = call.state_ref().plugin.limits.max_header_fields;
    let decoded = call.with_bytes(headers_ptr, headers_len, "headers", |bytes, _| {
        decode_map(bytes, max_fields)
    })?;
    let headers = decoded.map_err(|error| call.trap(error))?;
    let contexts = &mut call.state().contexts;
    let is_async = contexts.is_async_for(contexts.effective);
    let Some(stream) = contexts.effective_stream() else {
        return Err(call.phase_trap("a local response", "in a stream context"));
    };
    if stream.is_terminated() {
        return ret(Status::Ok);
    }
    let id = StreamId(stream.id);
    // Sent before the response started, it still passes the response callbacks; one that replaces the
    // upstream's response headers from their own callback does not pass them again.
    let encode = !stream.response.headers_seen;
    let event = if stream.response.headers_released {
        stream.reset = true;
        StreamEvent::Reset(id)
    } else {
        // The local response is now the response: `proxy_on_log` reads its status, as in Envoy, which
        // also describes a body the way it sends it.
        let mut headers = headers;
        let mut status_code = status_code;
        let mut body = body;
        if is_grpc_request(&stream.request.headers) {
            (status_code, body) = as_grpc_reply(&mut headers, status_code, &body, grpc_status);
        } else if !body.is_empty() {
            headers.replace("content-length", body.len().to_string());
            if !headers.contains("content-type") {
                headers.add("content-type", "text/plain");
            }
        }
        let mut response_headers = Headers::new();
        response_headers.add(":status", status_code.to_string());
        for (name, value) in headers.iter() {
            response_headers.add(name, value);
        }
        stream.response.headers = response_headers;
        stream.local_response = Some(LocalResponse {
            status: status_code,
            headers,
            body,
            details: String::from_utf8_lossy(&details).into_owned(),
            grpc_status: (grpc_status >= 0).then_some(grpc_status),
        });
        stream.request.paused = false;
        stream.response.paused = false;
        StreamEvent::LocalResponse(id)
    };
    let answered = matches!(event, StreamEvent::LocalResponse(_));
    let state = call.state();
    if answered && encode {
        state.local_encodes.push(id.0);
    }
    if is_async {
        state.events.push(event);
    }
    ret(Status::Ok)
}
