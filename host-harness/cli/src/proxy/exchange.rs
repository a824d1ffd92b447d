//! One request through the filter and the upstream, in Envoy's callback order, streaming both ways.
//!
//! Request headers go through `on_request_headers` (a pause waits for the filter to resume or answer); the
//! request body is pumped chunk by chunk through `on_request_body` into the upstream request while the
//! upstream is already being called; response headers go through `on_response_headers`; the response body
//! runs through `on_response_body` inside the client body's `poll_frame`, so every upstream chunk (an SSE
//! event, say) is forwarded the moment it arrives. The [`Exchange`] guard travels with the response body and
//! on drop closes the filter stream (`on_done`, `on_log`), frees the concurrency slot, counts and logs.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use super::config::Target;
use super::driver::{FilterDriver, FilterFault, StreamSlot};
use super::failure::{ClientFault, Failure};
use super::forwarding;
use super::http1::client::{ResponseBody, ResponseBodyError};
use super::http1::head::HeadError;
use super::http1::{BodyError, RequestBody};
use super::identity::{self, Caller, ConnectionIdentity, IdentityRefusal};
use super::limit::Slot;
use super::upstream::{self, BoxError, UpstreamBody};
use super::worker::Worker;
use host_harness::headers::Headers;
use host_harness::stream::{Action, StreamEvent, StreamId, StreamInfo, StreamState};

/// Frames buffered between the request body pump and the upstream connection.
const REQUEST_BODY_CHANNEL: usize = 4;

/// The client side of one connection, as the filter's properties and the logs see it.
#[derive(Debug)]
pub struct ConnectionInfo {
    /// The client's IP as text, for `x-forwarded-for`.
    pub client_ip: String,
    /// The client's address as text, for the filter's `source.address`.
    pub client_address: String,
    /// The proxy's address as text, for the filter's `destination.address`.
    pub local_address: String,
    /// Per-worker connection number.
    pub id: u64,
    /// The peer as the identity step sees it, with the connection's cached WhoIs answer.
    pub identity: ConnectionIdentity,
}

/// Everything a request owns until its response is sent or abandoned; dropping it ends the request.
pub struct Exchange {
    worker: Rc<Worker>,
    request_id: String,
    method: Method,
    path: String,
    started: Instant,
    status: Option<StatusCode>,
    upstream_latency: Option<Duration>,
    stream: Option<(StreamId, Rc<StreamSlot>)>,
    slot: Option<Slot>,
    aborted: Option<String>,
    /// The resolved caller, for the access log's `caller` field.
    caller: Option<Rc<Caller>>,
    /// The request came with a body (not yet known to be empty).
    has_body: bool,
    /// How the client's upload is going, once the body pump runs.
    upload: Option<Rc<Upload>>,
    /// The body pump: it must not outlive the request, or a stalled client would keep its connection.
    pump: Option<tokio::task::AbortHandle>,
}

/// What the request body pump tells the exchange about the client's upload.
#[derive(Debug, Default)]
struct Upload {
    /// The client's body has been read to its end.
    done: Cell<bool>,
    /// The client broke the body off, sent it malformed, or stalled.
    fault: Cell<Option<ClientFault>>,
}

impl Exchange {
    fn begin(worker: &Rc<Worker>, request_id: String, method: Method, path: String) -> Self {
        worker.shared.metrics.request_started();
        Self {
            worker: Rc::clone(worker),
            request_id,
            method,
            path,
            started: Instant::now(),
            status: None,
            upstream_latency: None,
            stream: None,
            slot: None,
            aborted: None,
            caller: None,
            has_body: false,
            upload: None,
            pump: None,
        }
    }

    /// Whether the client's body is still being read: a response now leaves it unread, so the connection
    /// must close after the response.
    fn upload_unfinished(&self) -> bool {
        match &self.upload {
            Some(upload) => !upload.done.get(),
            // Refused before its body was read.
            None => self.has_body,
        }
    }
}

/// Why a request still open when the drain timeout passed was logged as aborted.
const DRAIN_CUT: &str = "the drain timeout passed before the response ended";

impl Drop for Exchange {
    fn drop(&mut self) {
        if let Some(pump) = self.pump.take() {
            pump.abort();
        }
        if let Some((stream, _)) = self.stream.take() {
            self.worker.driver.close(stream);
        }
        self.slot.take();
        if self.aborted.is_none()
            && self.status.is_none()
            && self.worker.shared.closing.load(Ordering::Acquire)
        {
            self.aborted = Some(DRAIN_CUT.to_owned());
        }
        let metrics = &self.worker.shared.metrics;
        metrics.request_finished();
        // 499: the client went away before a response was chosen (nginx's convention).
        let status = self.status.map_or(499, |status| status.as_u16());
        metrics.count_response(status);
        let duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let upstream_ms = self
            .upstream_latency
            .map(|latency| latency.as_secs_f64() * 1000.0);
        let caller = self.caller.as_deref().map(|caller| caller.id.as_str());
        match &self.aborted {
            None => tracing::info!(
                target: "access",
                request_id = %self.request_id,
                method = %self.method,
                path = %self.path,
                status,
                duration_ms,
                upstream_ms,
                caller,
                "request"
            ),
            Some(reason) => tracing::warn!(
                target: "access",
                request_id = %self.request_id,
                method = %self.method,
                path = %self.path,
                status,
                duration_ms,
                upstream_ms,
                caller,
                aborted = %reason,
                "request aborted"
            ),
        }
    }
}

/// Entry point for every proxied request on a worker.
pub async fn handle(
    request: Request<RequestBody>,
    worker: Rc<Worker>,
    connection: Rc<ConnectionInfo>,
) -> Response<ProxyBody> {
    let request_id = worker.next_request_id();
    let path = request.uri().path().to_owned();
    let mut exchange = Exchange::begin(&worker, request_id, request.method().clone(), path);
    exchange.has_body = !request.body().is_end_stream();
    let mut response = match proxy(request, &worker, &connection, &mut exchange).await {
        Ok(response) => response,
        Err(failure) => {
            record_failure(&worker, &failure);
            failure
                .to_response(&exchange.request_id, worker.shared.config.error_shape)
                .map(ProxyBody::full)
        }
    };
    if exchange.upload_unfinished() {
        // Answered before the client's body ended (a timeout, or an upstream that did not read it): the
        // rest is never read, so the connection cannot carry another request. Say so, and close it.
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    exchange.status = Some(response.status());
    response.map(|body| body.with_exchange(exchange))
}

/// The answer to a request head the connection could not read: the proxy's error, counted as a client
/// error and logged with a request id like any request.
pub fn refuse_head(worker: &Rc<Worker>, error: HeadError) -> Response<ProxyBody> {
    let request_id = worker.next_request_id();
    let failure = Failure::Head(error);
    record_failure(worker, &failure);
    let response = failure
        .to_response(&request_id, worker.shared.config.error_shape)
        .map(ProxyBody::full);
    tracing::info!(
        target: "access",
        request_id = %request_id,
        status = response.status().as_u16(),
        error = %error,
        "request head refused"
    );
    response
}

fn record_failure(worker: &Worker, failure: &Failure) {
    let metrics = &worker.shared.metrics;
    match failure {
        Failure::Overloaded => metrics.count_overload(),
        Failure::ConnectTimeout(_) | Failure::ResponseTimeout(_) => {
            metrics.count_upstream_timeout()
        }
        Failure::Unreachable(_) | Failure::UpstreamBroken(_) => {
            metrics.count_upstream_unreachable()
        }
        Failure::FilterFailed => metrics.count_filter_failure(),
        Failure::Client(_) | Failure::Head(_) => metrics.count_client_error(),
        Failure::Identity(IdentityRefusal::Unavailable(_)) => metrics.count_identity_unavailable(),
        Failure::Identity(IdentityRefusal::Unknown) => metrics.count_identity_unknown(),
        Failure::BadRequest(_)
        | Failure::MethodNotAllowed(_)
        | Failure::FilterInvalid(_)
        | Failure::Reset => {}
    }
}

fn filter_failed(fault: &FilterFault) -> Failure {
    tracing::error!(error = %fault, "filter failed");
    Failure::FilterFailed
}

async fn proxy(
    request: Request<RequestBody>,
    worker: &Rc<Worker>,
    connection: &ConnectionInfo,
    exchange: &mut Exchange,
) -> Result<Response<ProxyBody>, Failure> {
    let shared = &worker.shared;
    exchange.slot = Some(
        shared
            .limiter
            .admit()
            .await
            .map_err(|_| Failure::Overloaded)?,
    );

    let (mut parts, client_body) = request.into_parts();
    // Before anything reads the headers: no client-sent identity header survives this.
    let caller = identity::resolve(
        &shared.config.identity,
        &connection.identity,
        &mut parts.headers,
    )
    .await
    .map_err(Failure::Identity)?;
    exchange.caller.clone_from(&caller);
    if parts.method == Method::CONNECT {
        return Err(Failure::BadRequest("CONNECT is not supported"));
    }
    // An upstream that echoes TRACE would hand the injected credential back to the client.
    if parts.method == Method::TRACE {
        return Err(Failure::MethodNotAllowed("TRACE"));
    }
    // RFC 9112 §3.2: a request with more than one Host is invalid; which one would the filter see?
    if parts
        .headers
        .get_all(http::header::HOST)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(Failure::BadRequest("more than one Host header"));
    }
    // `OPTIONS *` and other non-path targets have no upstream path to go to.
    if !parts.uri.path().starts_with('/') {
        return Err(Failure::BadRequest(
            "the request target must be a path starting with /",
        ));
    }
    let authority = forwarding::request_authority(&parts)
        .ok_or(Failure::BadRequest("missing or invalid Host header"))?;
    let client_ip = shared
        .config
        .forward_client_address
        .then_some(connection.client_ip.as_str());
    let fields = forwarding::request_fields(&parts, &authority, client_ip, &exchange.request_id);
    drop(parts);

    let driver = &worker.driver;
    let (stream, slot) = driver
        .open(stream_info(connection, caller.as_deref()))
        .map_err(|fault| filter_failed(&fault))?;
    exchange.stream = Some((stream, Rc::clone(&slot)));

    let request_ends_here = client_body.is_end_stream();
    let request_timeout = shared.config.request_timeout;
    // One deadline for the filter holding the request and the upstream's answer together.
    let deadline = tokio::time::Instant::now() + request_timeout;
    let action = driver
        .call(|vm| Ok(vm.request_headers(stream, fields, request_ends_here)?))
        .map_err(|fault| filter_failed(&fault))?;
    if let Some(end) = driver.ending(stream) {
        return answer(driver, Ok(end));
    }
    if action == Action::Pause {
        match tokio::time::timeout_at(deadline, slot.request_resumed()).await {
            Err(_) => return Err(Failure::ResponseTimeout(request_timeout)),
            Ok(Ok(StreamEvent::RequestResumed(_))) => {}
            Ok(end) => return answer(driver, end),
        }
    }

    let body = if request_ends_here {
        UpstreamBody::Empty
    } else {
        let (sender, receiver) = mpsc::channel(REQUEST_BODY_CHANNEL);
        let upload = Rc::new(Upload::default());
        let pump = tokio::task::spawn_local(pump_request_body(
            Rc::clone(worker),
            stream,
            Rc::clone(&slot),
            client_body,
            sender,
            Rc::clone(&upload),
        ));
        exchange.upload = Some(upload);
        exchange.pump = Some(pump.abort_handle());
        UpstreamBody::Stream(receiver)
    };
    let mut upstream_request = Request::new(body);
    let target = &shared.config.upstream;
    driver
        .call(|vm| {
            let fields = vm
                .stream_state(stream)
                .map(StreamState::request_headers)
                .ok_or_else(|| FilterFault("request headers vanished".to_owned()))?;
            let built = build_upstream_request(
                fields,
                &authority,
                target,
                &worker.upstream_host,
                &mut upstream_request,
            );
            identity::forward(
                &shared.config.identity,
                caller.as_deref(),
                upstream_request.headers_mut(),
            );
            Ok(built)
        })
        .map_err(|fault| filter_failed(&fault))??;

    let sent = Instant::now();
    let upstream_response = tokio::select! {
        biased;
        end = slot.ended() => return answer(driver, end),
        result = tokio::time::timeout_at(deadline, driver.client().request(upstream_request)) => result,
    };
    let latency = sent.elapsed();
    exchange.upstream_latency = Some(latency);
    // The upstream request fails when the client's body does: that is the client's fault, not the
    // upstream's, and must not fire the upstream alerts.
    let client_fault = exchange
        .upload
        .as_ref()
        .and_then(|upload| upload.fault.get());
    let upstream_response = match (upstream_response, client_fault) {
        (Err(_) | Ok(Err(_)), Some(fault)) => return Err(Failure::Client(fault)),
        (Err(_), None) => return Err(Failure::ResponseTimeout(request_timeout)),
        (Ok(Err(error)), None) => {
            return Err(upstream::classify(&error, shared.config.connect_timeout));
        }
        (Ok(Ok(response)), _) => response,
    };
    // hyper hands a 101 over as a response; nobody asked for an upgrade (the proxy sends no Upgrade).
    if upstream_response.status() == StatusCode::SWITCHING_PROTOCOLS {
        return Err(Failure::UpstreamBroken(
            "the upstream switched protocols on a request without Upgrade".to_owned(),
        ));
    }
    // Only answers: a timeout or a refused connection says nothing about how fast the upstream is.
    shared.metrics.observe_upstream_latency(latency);

    let (parts, mut upstream_body) = upstream_response.into_parts();
    // A body that fails at once (a chunk size that overflows) is a failed upstream, not a response cut
    // before its first byte.
    let first_frame = match first_frame_if_ready(&mut upstream_body).await {
        Ok(frame) => frame,
        Err(err) => {
            return Err(Failure::UpstreamBroken(format!(
                "the response body is malformed: {err}"
            )));
        }
    };
    let fields = forwarding::response_fields(parts.status, &parts.headers);
    drop(parts);
    let response_ends_here = first_frame.is_none() && upstream_body.is_end_stream();
    let action = driver
        .call(|vm| Ok(vm.response_headers(stream, fields, response_ends_here)?))
        .map_err(|fault| filter_failed(&fault))?;
    if let Some(end) = driver.ending(stream) {
        return answer(driver, Ok(end));
    }
    if action == Action::Pause {
        match tokio::time::timeout(shared.config.idle_timeout, slot.response_resumed()).await {
            Err(_) => return Err(Failure::ResponseTimeout(shared.config.idle_timeout)),
            Ok(Ok(StreamEvent::ResponseResumed(_))) => {}
            Ok(end) => return answer(driver, end),
        }
    }
    let body = if response_ends_here {
        ProxyBody::empty()
    } else {
        ProxyBody::upstream(upstream_body, first_frame, shared.config.idle_timeout)
    };
    let mut response = Response::new(body);
    driver
        .call(|vm| {
            let fields = vm
                .stream_state(stream)
                .map(StreamState::response_headers)
                .ok_or_else(|| FilterFault("response headers vanished".to_owned()))?;
            Ok(build_client_response(fields, &mut response))
        })
        .map_err(|fault| filter_failed(&fault))??;
    Ok(response)
}

/// Fills in the upstream request from the request headers as the filter left them.
fn build_upstream_request(
    fields: &Headers,
    original_authority: &str,
    target: &Target,
    upstream_host: &HeaderValue,
    request: &mut Request<UpstreamBody>,
) -> Result<(), Failure> {
    let head = forwarding::upstream_head(fields, original_authority)
        .map_err(|err| Failure::FilterInvalid(err.to_string()))?;
    *request.uri_mut() = target.uri_for(&head.path).map_err(|_| {
        Failure::FilterInvalid("the request path is not a valid URI path".to_owned())
    })?;
    *request.method_mut() = head.method;
    forwarding::fill_header_map(fields, request.headers_mut())
        .map_err(|err| Failure::FilterInvalid(err.to_string()))?;
    let host = head
        .rewritten_authority
        .unwrap_or_else(|| upstream_host.clone());
    request.headers_mut().insert(http::header::HOST, host);
    Ok(())
}

/// Fills in the client response from the response headers as the filter left them.
fn build_client_response(
    fields: &Headers,
    response: &mut Response<ProxyBody>,
) -> Result<(), Failure> {
    *response.status_mut() = forwarding::response_status(fields)
        .map_err(|err| Failure::FilterInvalid(err.to_string()))?;
    forwarding::fill_header_map(fields, response.headers_mut())
        .map_err(|err| Failure::FilterInvalid(err.to_string()))
}

/// The filter's properties for a request: the connection's addresses and id, and the caller's
/// `caller.*` properties when the identity step resolved one.
fn stream_info(connection: &ConnectionInfo, caller: Option<&Caller>) -> StreamInfo {
    let mut info = StreamInfo::new()
        .source_address(connection.client_address.as_str())
        .destination_address(connection.local_address.as_str())
        .protocol("HTTP/1.1")
        .connection_id(connection.id);
    if let Some(caller) = caller {
        for (path, value) in caller.properties() {
            info = info.property(path, value);
        }
    }
    info
}

/// The answer to a stream that ended before its response started. The filter's own local response goes
/// to the client as it is: its status, headers and body, nothing from the upstream. A stream its VM
/// failed on (the failure policy's local response), reset, or the proxy failed on gets the proxy's own
/// error instead.
fn answer(
    driver: &FilterDriver,
    end: Result<StreamEvent, FilterFault>,
) -> Result<Response<ProxyBody>, Failure> {
    let stream = match end {
        Ok(StreamEvent::LocalResponse(stream)) => stream,
        Ok(_) => return Err(Failure::Reset),
        // The pump logged the fault when it noted it.
        Err(_) => return Err(Failure::FilterFailed),
    };
    let Some(local) = driver.local_response(stream) else {
        return Err(Failure::Reset);
    };
    if local.is_from_failure_policy() {
        return Err(Failure::FilterFailed);
    }
    let status = u16::try_from(local.status)
        .ok()
        .and_then(|status| StatusCode::from_u16(status).ok())
        .filter(|status| !status.is_informational())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(ProxyBody::full(Bytes::from(local.body)));
    *response.status_mut() = status;
    if let Err(err) = forwarding::fill_header_map(&local.headers, response.headers_mut()) {
        tracing::warn!(error = %err, "dropped invalid headers from a filter local response");
        response.headers_mut().clear();
    }
    // Framing follows the body as the filter left it, whatever its headers say.
    response.headers_mut().remove(http::header::CONTENT_LENGTH);
    Ok(response)
}

/// The upstream body's first frame when it arrived with the response headers, without waiting for the
/// network. `Ok(None)` when nothing is there yet (or the body is empty).
///
/// # Errors
/// The body failed in what arrived with the headers.
async fn first_frame_if_ready(
    body: &mut ResponseBody,
) -> Result<Option<Frame<Bytes>>, ResponseBodyError> {
    if body.is_end_stream() {
        return Ok(None);
    }
    let polled = std::future::poll_fn(|cx| {
        Poll::Ready(match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(frame) => Some(frame),
            Poll::Pending => None,
        })
    })
    .await;
    match polled {
        Some(Some(Ok(frame))) => Ok(Some(frame)),
        Some(Some(Err(err))) => Err(err),
        Some(None) | None => Ok(None),
    }
}

/// What a failed read of the client's body says about the client: closed early (or reset), or sent
/// framing that is not HTTP.
fn client_fault(err: &BodyError) -> ClientFault {
    match err {
        BodyError::Gone => ClientFault::Gone,
        BodyError::Malformed(_) => ClientFault::Malformed,
    }
}

/// Moves the client's request body through the filter into the upstream request, chunk by chunk. The
/// client may stay silent for at most `request_body_timeout` between chunks; a stall, a malformed body or
/// a client that leaves is noted in `upload` before the upstream request is failed, so the request is
/// answered as the client's fault.
async fn pump_request_body(
    worker: Rc<Worker>,
    stream: StreamId,
    slot: Rc<StreamSlot>,
    mut client_body: RequestBody,
    sender: mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
    upload: Rc<Upload>,
) {
    let driver = &worker.driver;
    let body_timeout = worker.shared.config.request_body_timeout;
    let mut holding = false;
    loop {
        let next = match tokio::time::timeout(body_timeout, client_body.frame()).await {
            Ok(next) => next,
            Err(_) => {
                upload.fault.set(Some(ClientFault::Stalled));
                let _ = sender.send(Err("the request body stalled".into())).await;
                return;
            }
        };
        if slot.is_closed() {
            return;
        }
        let (frame, ends) = match next {
            Some(Ok(frame)) => (frame, client_body.is_end_stream()),
            Some(Err(err)) => {
                upload.fault.set(Some(client_fault(&err)));
                let _ = sender.send(Err(Box::new(err))).await;
                return;
            }
            // The body ended without a frame marked as the last (chunked encoding): tell the filter with an
            // empty last chunk.
            None => (Frame::data(Bytes::new()), true),
        };
        if ends || frame.is_trailers() {
            upload.done.set(true);
        }
        let (data, trailers) = match frame.into_data() {
            Ok(data) => (Some(data), None),
            Err(frame) => (None, frame.into_trailers().ok()),
        };
        if let Some(data) = data {
            let chunk = match driver.call(|vm| Ok(vm.request_body(stream, &data, ends)?)) {
                Ok(chunk) => chunk,
                Err(fault) => return abort_pump(&slot, &sender, fault).await,
            };
            if let Some(end) = driver.ending(stream) {
                return end_pump(&slot, &sender, Ok(end)).await;
            }
            // Paused, the filter holds the body: only bytes it released earlier go on now.
            holding = chunk.action == Action::Pause;
            let forward = Bytes::from(chunk.forward);
            if !forward.is_empty() && sender.send(Ok(Frame::data(forward))).await.is_err() {
                return;
            }
            if ends {
                if holding {
                    flush_after_resume(driver, stream, &slot, &sender).await;
                }
                return;
            }
            continue;
        }
        let Some(trailer_map) = trailers else {
            continue;
        };
        let action = match driver
            .call(|vm| Ok(vm.request_trailers(stream, forwarding::trailer_fields(&trailer_map))?))
        {
            Ok(action) => action,
            Err(fault) => return abort_pump(&slot, &sender, fault).await,
        };
        if let Some(end) = driver.ending(stream) {
            return end_pump(&slot, &sender, Ok(end)).await;
        }
        match action {
            Action::Continue => {
                if holding && !send_held(driver, stream, &slot, &sender).await {
                    return;
                }
            }
            Action::Pause => {
                if !flush_after_resume(driver, stream, &slot, &sender).await {
                    return;
                }
            }
        }
        let trailers = driver.call(|vm| {
            let mut map = HeaderMap::new();
            if let Some(fields) = vm.stream_state(stream).map(StreamState::request_trailers) {
                forwarding::fill_header_map(fields, &mut map)
                    .map_err(|err| FilterFault(err.to_string()))?;
            }
            Ok(map)
        });
        let _ = match trailers {
            Ok(map) => sender.send(Ok(Frame::trailers(map))).await,
            Err(fault) => sender.send(Err(Box::new(fault))).await,
        };
        return;
    }
}

/// Waits for the filter to resume the request, then forwards what it held. False when the stream ended.
async fn flush_after_resume(
    driver: &Rc<FilterDriver>,
    stream: StreamId,
    slot: &StreamSlot,
    sender: &mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
) -> bool {
    match slot.request_resumed().await {
        Ok(StreamEvent::RequestResumed(_)) => send_held(driver, stream, slot, sender).await,
        end @ (Ok(StreamEvent::LocalResponse(_)) | Err(_)) => {
            end_pump(slot, sender, end).await;
            false
        }
        Ok(_) => false,
    }
}

async fn send_held(
    driver: &Rc<FilterDriver>,
    stream: StreamId,
    slot: &StreamSlot,
    sender: &mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
) -> bool {
    match driver.call(|vm| Ok(Bytes::from(vm.drain_request_body(stream)))) {
        Ok(bytes) => bytes.is_empty() || sender.send(Ok(Frame::data(bytes))).await.is_ok(),
        Err(fault) => {
            abort_pump(slot, sender, fault).await;
            false
        }
    }
}

async fn abort_pump(
    slot: &StreamSlot,
    sender: &mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
    fault: FilterFault,
) {
    tracing::error!(error = %fault, "filter failed on the request body");
    end_pump(slot, sender, Err(fault)).await;
}

/// Hands the stream's end to the waiting exchange and cancels the upstream request.
async fn end_pump(
    slot: &StreamSlot,
    sender: &mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
    end: Result<StreamEvent, FilterFault>,
) {
    slot.note(end);
    let _ = sender
        .send(Err("request answered by the filter".into()))
        .await;
}

/// A response body sent to the client.
pub struct ProxyBody {
    kind: BodyKind,
    exchange: Option<Exchange>,
}

enum BodyKind {
    Done,
    /// The filter failed mid-body: the error follows once what was sent is flushed.
    Failing(String),
    Full(Option<Bytes>),
    Upstream(Box<UpstreamStream>),
}

/// The upstream's body on its way through `on_response_body`.
struct UpstreamStream {
    incoming: ResponseBody,
    /// The first frame, read before the response headers went to the filter.
    first: Option<Frame<Bytes>>,
    /// Started the first time the stream has to wait, so responses that never wait need no timer.
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    idle_timeout: Duration,
    /// The filter has seen the last chunk (or the trailers).
    end_sent: bool,
    /// The filter holds data it has not released yet.
    holding: bool,
    /// Waiting for the filter to resume the response.
    waiting_resume: bool,
    /// Trailers to send after the held data.
    pending_trailers: Option<HeaderMap>,
}

impl ProxyBody {
    /// A body known in full.
    pub fn full(bytes: Bytes) -> Self {
        Self {
            kind: if bytes.is_empty() {
                BodyKind::Done
            } else {
                BodyKind::Full(Some(bytes))
            },
            exchange: None,
        }
    }

    /// No body.
    pub fn empty() -> Self {
        Self {
            kind: BodyKind::Done,
            exchange: None,
        }
    }

    fn upstream(
        incoming: ResponseBody,
        first: Option<Frame<Bytes>>,
        idle_timeout: Duration,
    ) -> Self {
        let idle = None;
        let stream = UpstreamStream {
            incoming,
            first,
            idle,
            idle_timeout,
            end_sent: false,
            holding: false,
            waiting_resume: false,
            pending_trailers: None,
        };
        Self {
            kind: BodyKind::Upstream(Box::new(stream)),
            exchange: None,
        }
    }

    fn with_exchange(mut self, exchange: Exchange) -> Self {
        self.exchange = Some(exchange);
        self
    }

    /// Ends the body with an error at the next poll, after what was sent before is on the wire: as
    /// Envoy, a client cut off mid-response still gets the headers and the body sent so far.
    fn abort_after_flush(
        &mut self,
        reason: String,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(exchange) = self.exchange.as_mut() {
            exchange.aborted = Some(reason.clone());
        }
        self.kind = BodyKind::Failing(reason);
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn abort(&mut self, reason: String) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.kind = BodyKind::Done;
        if let Some(exchange) = self.exchange.as_mut() {
            exchange.aborted = Some(reason.clone());
        }
        Poll::Ready(Some(Err(reason.into())))
    }
}

/// What the response stream should do after one step.
enum Step {
    Emit(Frame<Bytes>),
    Again,
    End,
    Pending,
    Abort(String),
    /// An abort because the filter failed: counted as a filter failure too.
    FilterFailed(String),
}

impl Step {
    /// Emits a data frame, or moves on when there is nothing to send.
    fn data(bytes: Bytes) -> Self {
        if bytes.is_empty() {
            Step::Again
        } else {
            Step::Emit(Frame::data(bytes))
        }
    }
}

impl UpstreamStream {
    /// The filter has seen the end and released everything: nothing is left to send.
    fn finished(&self) -> bool {
        self.end_sent && !self.holding && !self.waiting_resume && self.pending_trailers.is_none()
    }

    /// Polls the idle timer, starting it on the first wait.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let timeout = self.idle_timeout;
        let idle = self
            .idle
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        idle.as_mut().poll(cx).is_ready()
    }

    fn step(&mut self, exchange: &mut Exchange, cx: &mut Context<'_>) -> Step {
        let Some((stream, slot)) = exchange.stream.as_ref() else {
            return Step::Abort("response stream without a filter stream".to_owned());
        };
        let (stream, slot) = (*stream, Rc::clone(slot));
        let driver = Rc::clone(&exchange.worker.driver);

        if slot.is_closed() {
            return Step::Abort("the filter reset the stream".to_owned());
        }
        if self.waiting_resume {
            return match slot.poll_response_resumed(cx) {
                Poll::Pending => {
                    if self.idle_expired(cx) {
                        return Step::Abort(
                            "the filter held the response past the idle timeout".to_owned(),
                        );
                    }
                    Step::Pending
                }
                Poll::Ready(Ok(StreamEvent::ResponseResumed(_))) => {
                    self.waiting_resume = false;
                    self.holding = false;
                    take_held_response(&driver, stream)
                }
                Poll::Ready(_) => Step::Abort("the filter reset the response".to_owned()),
            };
        }
        if let Some(trailers) = self.pending_trailers.take() {
            return Step::Emit(Frame::trailers(trailers));
        }
        if self.end_sent && !self.holding {
            return Step::End;
        }

        let polled = match self.first.take() {
            Some(frame) => Poll::Ready(Some(Ok(frame))),
            None => Pin::new(&mut self.incoming).poll_frame(cx),
        };
        let frame = match polled {
            Poll::Pending => {
                if self.idle_expired(cx) {
                    return Step::Abort(format!(
                        "upstream sent nothing for {}ms",
                        self.idle_timeout.as_millis()
                    ));
                }
                return Step::Pending;
            }
            Poll::Ready(Some(Err(err))) => {
                return Step::Abort(format!("upstream body failed: {err}"));
            }
            Poll::Ready(None) if self.end_sent => return Step::End,
            // The body ended without a frame marked as the last (chunked encoding): tell the filter with an
            // empty last chunk.
            Poll::Ready(None) => (Frame::data(Bytes::new()), true),
            Poll::Ready(Some(Ok(frame))) => (frame, self.incoming.is_end_stream()),
        };
        let (frame, ends) = frame;
        if let Some(idle) = self.idle.as_mut() {
            idle.as_mut()
                .reset(tokio::time::Instant::now() + self.idle_timeout);
        }
        match frame.into_data() {
            Ok(data) => {
                self.end_sent |= ends;
                let chunk = match driver.call(|vm| Ok(vm.response_body(stream, &data, ends)?)) {
                    Ok(chunk) => chunk,
                    Err(fault) => return Step::FilterFailed(format!("filter failed: {fault}")),
                };
                if let Some(end) = driver.ending(stream) {
                    return late_end(&driver, end);
                }
                // Paused, the filter holds the body: only bytes it released earlier go on now.
                self.holding = chunk.action == Action::Pause;
                self.waiting_resume = self.holding && ends;
                Step::data(Bytes::from(chunk.forward))
            }
            Err(frame) => {
                let Ok(trailer_map) = frame.into_trailers() else {
                    return Step::Again;
                };
                self.end_sent = true;
                let outcome = driver.call(|vm| {
                    let action =
                        vm.response_trailers(stream, forwarding::trailer_fields(&trailer_map))?;
                    let mut map = HeaderMap::new();
                    if let Some(fields) =
                        vm.stream_state(stream).map(StreamState::response_trailers)
                    {
                        forwarding::fill_header_map(fields, &mut map)
                            .map_err(|err| FilterFault(format!("invalid trailers: {err}")))?;
                    }
                    Ok((action, map))
                });
                let (action, map) = match outcome {
                    Ok(outcome) => outcome,
                    Err(fault) => return Step::FilterFailed(format!("filter failed: {fault}")),
                };
                if let Some(end) = driver.ending(stream) {
                    return late_end(&driver, end);
                }
                match action {
                    Action::Continue if self.holding => {
                        self.holding = false;
                        self.pending_trailers = Some(map);
                        take_held_response(&driver, stream)
                    }
                    Action::Continue => Step::Emit(Frame::trailers(map)),
                    Action::Pause => {
                        self.pending_trailers = Some(map);
                        self.waiting_resume = true;
                        Step::Again
                    }
                }
            }
        }
    }
}

/// The response body bytes the filter released when it resumed the response.
fn take_held_response(driver: &Rc<FilterDriver>, stream: StreamId) -> Step {
    match driver.call(|vm| Ok(Bytes::from(vm.drain_response_body(stream)))) {
        Ok(bytes) => Step::data(bytes),
        Err(fault) => Step::FilterFailed(format!("filter failed: {fault}")),
    }
}

/// How a response that already started ends when the filter answers, fails or resets it.
fn late_end(driver: &FilterDriver, end: StreamEvent) -> Step {
    match end {
        StreamEvent::LocalResponse(stream) => match driver.local_response(stream) {
            Some(local) if local.is_from_failure_policy() => {
                Step::FilterFailed("filter failed: the VM trapped".to_owned())
            }
            _ => Step::Abort("the filter answered after the response had started".to_owned()),
        },
        _ => Step::Abort("the filter reset the response".to_owned()),
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // Dropped before its end: the client went away (or its connection was closed) mid-response.
        if matches!(self.kind, BodyKind::Upstream(_))
            && let Some(exchange) = self.exchange.as_mut()
            && exchange.aborted.is_none()
        {
            let reason = if exchange.worker.shared.closing.load(Ordering::Acquire) {
                DRAIN_CUT
            } else {
                "the client connection closed before the response ended"
            };
            exchange.aborted = Some(reason.to_owned());
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let step = match &mut this.kind {
                BodyKind::Done => return Poll::Ready(None),
                BodyKind::Failing(reason) => {
                    let reason = std::mem::take(reason);
                    return this.abort(reason);
                }
                BodyKind::Full(bytes) => {
                    let frame = bytes.take().map(|bytes| Ok(Frame::data(bytes)));
                    this.kind = BodyKind::Done;
                    return Poll::Ready(frame);
                }
                BodyKind::Upstream(upstream) => match this.exchange.as_mut() {
                    Some(exchange) => upstream.step(exchange, cx),
                    None => Step::Abort("response stream without its exchange".to_owned()),
                },
            };
            match step {
                Step::Emit(frame) => {
                    // A writer may stop polling once a sized body is written: mark the end now, or the drop
                    // would read as a client that went away.
                    if let BodyKind::Upstream(upstream) = &this.kind
                        && upstream.finished()
                    {
                        this.kind = BodyKind::Done;
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Step::Again => {}
                Step::End => {
                    this.kind = BodyKind::Done;
                    return Poll::Ready(None);
                }
                Step::Pending => return Poll::Pending,
                Step::Abort(reason) => return this.abort_after_flush(reason, cx),
                Step::FilterFailed(reason) => {
                    if let Some(exchange) = this.exchange.as_ref() {
                        exchange.worker.shared.metrics.count_filter_failure();
                    }
                    return this.abort_after_flush(reason, cx);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Done => true,
            BodyKind::Full(bytes) => bytes.is_none(),
            BodyKind::Upstream(_) | BodyKind::Failing(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Done => SizeHint::with_exact(0),
            BodyKind::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |bytes| bytes.len() as u64))
            }
            // The filter may change the body's length: never promise the upstream's.
            BodyKind::Upstream(_) | BodyKind::Failing(_) => SizeHint::default(),
        }
    }
}
