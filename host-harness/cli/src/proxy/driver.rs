//! One worker's filter VM, driven: serialised callbacks, stream wake-ups, outgoing calls, timers.
//!
//! The worker owns one [`Vm`] of the library and runs every callback through [`FilterDriver::call`]; the
//! VM is never borrowed across an await. What the filter did besides answering the callback comes out of
//! the VM as the library's own records, which the driver routes right after the callback returns: each
//! [`StreamEvent`] to its stream's [`StreamSlot`], where the request waiting on it picks it up, and each
//! [`PendingHttpCall`] to a task that sends it through the worker's upstream client.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use tokio::sync::Notify;

use super::config::Target;
use super::forwarding;
use super::in_flight::{InFlight, InFlightGuard};
use super::upstream::{UpstreamBody, UpstreamClient};
use host_harness::HarnessError;
use host_harness::http_call::{
    HttpCallFailure, HttpCallRequest, HttpCallResponse, PendingHttpCall,
};
use host_harness::logs::{LogLevel, LogRecord};
use host_harness::stream::{LocalResponse, StreamEvent, StreamId, StreamInfo, StreamState};
use host_harness::vm::Vm;

/// Largest response body an outgoing filter call may return.
const MAX_CALL_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Limit for an outgoing call the filter gave no timeout, so no call task lives forever.
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the timer loop sleeps when the VM has no timer due.
const IDLE_TIMER_WAIT: Duration = Duration::from_secs(1);

/// A failure the request cannot recover from: the VM could not be started, refused a step (unknown
/// stream, out of order), or was already in use. A trap is not one: the VM's failure policy answers the
/// stream with a local response or resets it, like any other filter decision.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct FilterFault(pub String);

impl From<HarnessError> for FilterFault {
    fn from(error: HarnessError) -> Self {
        Self(error.to_string())
    }
}

/// Where the driver tells a request what the filter did to its stream.
#[derive(Debug)]
pub struct StreamSlot {
    stream: StreamId,
    request_resumes: Cell<u32>,
    response_resumes: Cell<u32>,
    /// The event that ended the stream (a local response or a reset), or the fault that did.
    ended: RefCell<Option<Result<StreamEvent, FilterFault>>>,
    /// The request is over and the stream finished in the VM.
    closed: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
}

impl StreamSlot {
    fn new(stream: StreamId) -> Self {
        Self {
            stream,
            request_resumes: Cell::new(0),
            response_resumes: Cell::new(0),
            ended: RefCell::new(None),
            closed: Cell::new(false),
            wakers: RefCell::new(Vec::new()),
        }
    }

    fn wake_all(&self) {
        for waker in self.wakers.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    fn register(&self, cx: &Context<'_>) {
        let mut wakers = self.wakers.borrow_mut();
        if !wakers.iter().any(|waker| waker.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
    }

    /// Records what happened to the stream and wakes everyone waiting on it. A resume counts once per
    /// event; the first end (local response, reset or fault) stays.
    pub fn note(&self, news: Result<StreamEvent, FilterFault>) {
        match news {
            Ok(StreamEvent::RequestResumed(_)) => bump(&self.request_resumes),
            Ok(StreamEvent::ResponseResumed(_)) => bump(&self.response_resumes),
            end => {
                let mut ended = self.ended.borrow_mut();
                if ended.is_none() {
                    *ended = Some(end);
                }
            }
        }
        self.wake_all();
    }

    fn close(&self) {
        self.closed.set(true);
        self.wake_all();
    }

    /// Whether the stream is gone: reset by the filter, or finished because its request is over.
    pub fn is_closed(&self) -> bool {
        self.closed.get() || matches!(*self.ended.borrow(), Some(Ok(StreamEvent::Reset(_))))
    }

    /// The end of the stream, if it has one; a stream closed without one reads as reset.
    fn end(&self) -> Option<Result<StreamEvent, FilterFault>> {
        if let Some(end) = self.ended.borrow().clone() {
            return Some(end);
        }
        self.closed
            .get()
            .then_some(Ok(StreamEvent::Reset(self.stream)))
    }

    /// Ready with the resume event when the filter resumes the request, or with the stream's end.
    pub fn poll_request_resumed(&self, cx: &Context<'_>) -> Poll<Result<StreamEvent, FilterFault>> {
        self.poll_resumed(&self.request_resumes, StreamEvent::RequestResumed, cx)
    }

    /// Ready with the resume event when the filter resumes the response, or with the stream's end.
    pub fn poll_response_resumed(
        &self,
        cx: &Context<'_>,
    ) -> Poll<Result<StreamEvent, FilterFault>> {
        self.poll_resumed(&self.response_resumes, StreamEvent::ResponseResumed, cx)
    }

    fn poll_resumed(
        &self,
        resumes: &Cell<u32>,
        resumed: fn(StreamId) -> StreamEvent,
        cx: &Context<'_>,
    ) -> Poll<Result<StreamEvent, FilterFault>> {
        if let Some(end) = self.end() {
            return Poll::Ready(end);
        }
        if resumes.get() > 0 {
            resumes.set(resumes.get() - 1);
            return Poll::Ready(Ok(resumed(self.stream)));
        }
        self.register(cx);
        Poll::Pending
    }

    /// Ready with the stream's end (resumes are left alone).
    pub fn poll_end(&self, cx: &Context<'_>) -> Poll<Result<StreamEvent, FilterFault>> {
        match self.end() {
            Some(end) => Poll::Ready(end),
            None => {
                self.register(cx);
                Poll::Pending
            }
        }
    }

    /// Waits for [`StreamSlot::poll_request_resumed`].
    pub async fn request_resumed(&self) -> Result<StreamEvent, FilterFault> {
        std::future::poll_fn(|cx| self.poll_request_resumed(cx)).await
    }

    /// Waits for [`StreamSlot::poll_response_resumed`].
    pub async fn response_resumed(&self) -> Result<StreamEvent, FilterFault> {
        std::future::poll_fn(|cx| self.poll_response_resumed(cx)).await
    }

    /// Waits for [`StreamSlot::poll_end`].
    pub async fn ended(&self) -> Result<StreamEvent, FilterFault> {
        std::future::poll_fn(|cx| self.poll_end(cx)).await
    }
}

fn bump(counter: &Cell<u32>) {
    counter.set(counter.get().saturating_add(1));
}

/// One worker's filter VM and everything routed to and from it.
pub struct FilterDriver {
    worker: usize,
    vm: RefCell<Vm>,
    slots: RefCell<HashMap<StreamId, Rc<StreamSlot>>>,
    client: UpstreamClient,
    clusters: Arc<BTreeMap<String, Target>>,
    /// When the timer loop plans to wake next; a callback that sets an earlier timer wakes it sooner.
    timer_planned: Cell<Option<SystemTime>>,
    timers_changed: Arc<Notify>,
    /// The filter's http calls not answered yet; a draining worker waits for them.
    calls: Rc<InFlight>,
}

impl FilterDriver {
    /// Wraps a worker's freshly started VM.
    pub fn new(
        worker: usize,
        vm: Vm,
        client: UpstreamClient,
        clusters: Arc<BTreeMap<String, Target>>,
    ) -> Rc<Self> {
        let timers_changed = Arc::new(Notify::new());
        let waker_notify = Arc::clone(&timers_changed);
        vm.set_waker(Some(Arc::new(move || waker_notify.notify_one())));
        let driver = Rc::new(Self {
            worker,
            vm: RefCell::new(vm),
            slots: RefCell::new(HashMap::new()),
            client,
            clusters,
            timer_planned: Cell::new(None),
            timers_changed,
            calls: Rc::default(),
        });
        // What the filter logged while it configured itself.
        let _ = driver.call(|_| Ok(()));
        driver
    }

    /// Runs filter code on the VM, then routes what the filter did meanwhile (stream events, http calls,
    /// log records).
    ///
    /// # Errors
    /// Whatever the callback returns, or a fault when the VM is already in use (a re-entrant call, which
    /// would be a bug in the proxy).
    pub fn call<R>(
        self: &Rc<Self>,
        callback: impl FnOnce(&mut Vm) -> Result<R, FilterFault>,
    ) -> Result<R, FilterFault> {
        let (result, events, calls, logs, next_timer) = {
            let mut vm = self
                .vm
                .try_borrow_mut()
                .map_err(|_| FilterFault("filter vm is busy".to_owned()))?;
            let result = callback(&mut vm);
            (
                result,
                vm.take_stream_events(),
                vm.take_pending_http_calls(),
                vm.take_logs(),
                vm.next_deadline(),
            )
        };
        if let Some(next) = next_timer
            && self
                .timer_planned
                .get()
                .is_none_or(|planned| next < planned)
        {
            self.timers_changed.notify_one();
        }
        for record in &logs {
            emit_log(self.worker, record);
        }
        for event in events {
            if let Some(slot) = self.slot(event.stream()) {
                slot.note(Ok(event));
            }
        }
        for call in calls {
            let in_flight = self.calls.enter();
            tokio::task::spawn_local(Rc::clone(self).run_call(call, in_flight));
        }
        result
    }

    fn slot(&self, stream: StreamId) -> Option<Rc<StreamSlot>> {
        self.slots.borrow().get(&stream).cloned()
    }

    /// Opens a stream and the slot its request waits on.
    ///
    /// # Errors
    /// The VM is shut down.
    pub fn open(
        self: &Rc<Self>,
        info: StreamInfo,
    ) -> Result<(StreamId, Rc<StreamSlot>), FilterFault> {
        let stream = self.call(|vm| Ok(vm.create_stream(info)?))?;
        let slot = Rc::new(StreamSlot::new(stream));
        self.slots.borrow_mut().insert(stream, Rc::clone(&slot));
        Ok((stream, slot))
    }

    /// How the step just run ended the stream, if it did: the filter (or the failure policy after a trap)
    /// answered it with a local response, or reset it.
    pub fn ending(&self, stream: StreamId) -> Option<StreamEvent> {
        let vm = self.vm.try_borrow().ok()?;
        let state = vm.stream_state(stream)?;
        if state.local_response().is_some() {
            Some(StreamEvent::LocalResponse(stream))
        } else if state.is_reset() {
            Some(StreamEvent::Reset(stream))
        } else {
            None
        }
    }

    /// The local response the filter (or its failure policy) answered the stream with.
    pub fn local_response(&self, stream: StreamId) -> Option<LocalResponse> {
        let vm = self.vm.try_borrow().ok()?;
        vm.stream_state(stream)
            .and_then(StreamState::local_response)
            .cloned()
    }

    /// Ends a stream in the VM (`on_done`, `on_log`, `on_delete`) and forgets its slot.
    pub fn close(self: &Rc<Self>, stream: StreamId) {
        if let Some(slot) = self.slots.borrow_mut().remove(&stream) {
            slot.close();
        }
        let worker = self.worker;
        if let Err(fault) = self.call(|vm| {
            if let Err(err) = vm.finish_stream(stream) {
                tracing::debug!(worker, %stream, error = %err, "finishing a filter stream");
            }
            Ok(())
        }) {
            tracing::warn!(worker, error = %fault, "closing a filter stream failed");
        }
    }

    /// Sends one outgoing call and hands the result to the filter (`on_http_call_response`).
    async fn run_call(self: Rc<Self>, call: PendingHttpCall, _in_flight: InFlightGuard) {
        let token = call.token;
        let limit = call.request.timeout.unwrap_or(DEFAULT_CALL_TIMEOUT);
        let outcome = match tokio::time::timeout(limit, self.send_call(call.request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(reason)) => {
                tracing::warn!(worker = self.worker, token, reason = %reason, "filter http call failed");
                Err(HttpCallFailure::Failed(reason))
            }
            Err(_) => Err(HttpCallFailure::Timeout),
        };
        let worker = self.worker;
        let _ = self.call(|vm| {
            if let Err(err) = vm.deliver_http_call_response(token, outcome) {
                // The VM gave up on the call first (its own timeout) or was replaced; nothing waits any more.
                tracing::debug!(worker, token, error = %err, "late http call response dropped");
            }
            Ok(())
        });
    }

    /// The filter's http calls still waiting for an answer (a token refresh, say).
    pub fn calls(&self) -> &InFlight {
        &self.calls
    }

    async fn send_call(&self, call: HttpCallRequest) -> Result<HttpCallResponse, String> {
        let target = self
            .clusters
            .get(&call.cluster)
            .ok_or_else(|| format!("unknown cluster {:?}", call.cluster))?;
        let head = forwarding::upstream_head(&call.headers, "").map_err(|err| err.to_string())?;
        let uri = target.uri_for(&head.path).map_err(|err| err.to_string())?;
        let body = if call.body.is_empty() {
            UpstreamBody::Empty
        } else {
            UpstreamBody::Full(Some(Bytes::from(call.body)))
        };
        let mut request = http::Request::new(body);
        *request.method_mut() = head.method;
        *request.uri_mut() = uri;
        forwarding::fill_header_map(&call.headers, request.headers_mut())
            .map_err(|err| err.to_string())?;
        // `:authority` names the service the filter meant; the connection goes to the cluster's address.
        let host = match head.rewritten_authority {
            Some(authority) => authority,
            None => http::HeaderValue::from_str(target.authority.as_str())
                .map_err(|err| err.to_string())?,
        };
        request.headers_mut().insert(http::header::HOST, host);
        let response = self
            .client
            .request(request)
            .await
            .map_err(|err| super::upstream::describe(&err))?;
        let (parts, body) = response.into_parts();
        let collected = Limited::new(body, MAX_CALL_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|err| err.to_string())?;
        let trailers = collected
            .trailers()
            .map(forwarding::trailer_fields)
            .unwrap_or_default();
        Ok(HttpCallResponse {
            headers: forwarding::response_fields(parts.status, &parts.headers),
            body: Vec::from(collected.to_bytes()),
            trailers,
        })
    }

    /// Fires the VM's timers (ticks, http call timeouts, queue notifications) by the system clock until
    /// the worker stops.
    pub async fn run_timers(self: Rc<Self>) {
        loop {
            let next = self.vm.try_borrow().ok().and_then(|vm| vm.next_deadline());
            self.timer_planned.set(next);
            let wait = match next {
                Some(due) => due
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO),
                None => IDLE_TIMER_WAIT,
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.timers_changed.notified() => {}
            }
            let _ = self.call(|vm| {
                vm.run_timers();
                Ok(())
            });
        }
    }

    /// The worker's upstream client.
    pub fn client(&self) -> &UpstreamClient {
        &self.client
    }
}

/// Forwards a guest log record to the proxy's logs under the target `filter`.
fn emit_log(worker: usize, record: &LogRecord) {
    let message = record.message.as_str();
    match record.level {
        LogLevel::Trace => tracing::trace!(target: "filter", worker, "{message}"),
        LogLevel::Debug => tracing::debug!(target: "filter", worker, "{message}"),
        LogLevel::Info => tracing::info!(target: "filter", worker, "{message}"),
        LogLevel::Warn => tracing::warn!(target: "filter", worker, "{message}"),
        LogLevel::Error | LogLevel::Critical => {
            tracing::error!(target: "filter", worker, "{message}")
        }
    }
}
