//! One worker's filter, driven: serialised callbacks, stream wake-ups, outgoing calls, timers.
//!
//! The VM runs synchronously inside each callback and is never borrowed across an await. Whatever the filter
//! did besides answering the callback (resume or answer a paused stream, start an http call) comes back as
//! events, which the driver routes right after the callback returns: stream events to that stream's
//! [`StreamSlot`], http calls to a task that sends them through the worker's upstream client.

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
use super::filter::{
    CallOutcome, Direction, FilterEvent, FilterFault, LocalReply, OutgoingCall, StreamId,
    StreamInfo, WorkerFilter,
};
use super::headers;
use super::in_flight::{InFlight, InFlightGuard};
use super::upstream::{UpstreamBody, UpstreamClient};

/// Largest response body an outgoing filter call may return.
const MAX_CALL_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Limit for an outgoing call the filter gave no timeout, so no call task lives forever.
const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the timer loop sleeps when the VM has no timer due.
const IDLE_TIMER_WAIT: Duration = Duration::from_secs(1);

/// Where the driver tells a request what the filter did to its stream.
#[derive(Debug, Default)]
pub struct StreamSlot {
    request_resumes: Cell<u32>,
    response_resumes: Cell<u32>,
    reply: RefCell<Option<LocalReply>>,
    closed: Cell<bool>,
    wakers: RefCell<Vec<Waker>>,
}

/// What a request waiting on its stream learns.
#[derive(Debug)]
pub enum StreamSignal {
    /// The filter resumed the half that was waited on.
    Resumed,
    /// The filter answered the stream.
    Reply(LocalReply),
    /// The stream is gone: reset by the filter, or its VM failed.
    Closed,
}

impl StreamSlot {
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

    fn resume(&self, direction: Direction) {
        let counter = match direction {
            Direction::Request => &self.request_resumes,
            Direction::Response => &self.response_resumes,
        };
        counter.set(counter.get().saturating_add(1));
        self.wake_all();
    }

    /// Answers the stream with a local reply and wakes everyone waiting on it.
    pub fn answer(&self, reply: LocalReply) {
        *self.reply.borrow_mut() = Some(reply);
        self.wake_all();
    }

    /// Marks the stream gone and wakes everyone waiting on it.
    pub fn close(&self) {
        self.closed.set(true);
        self.wake_all();
    }

    /// Whether the stream is gone.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Takes a pending local reply, if the filter sent one.
    pub fn take_reply(&self) -> Option<LocalReply> {
        self.reply.borrow_mut().take()
    }

    /// Ready when the filter resumes `direction`, answers the stream, or the stream closes.
    pub fn poll_resume(&self, direction: Direction, cx: &Context<'_>) -> Poll<StreamSignal> {
        if let Some(reply) = self.take_reply() {
            return Poll::Ready(StreamSignal::Reply(reply));
        }
        if self.closed.get() {
            return Poll::Ready(StreamSignal::Closed);
        }
        let counter = match direction {
            Direction::Request => &self.request_resumes,
            Direction::Response => &self.response_resumes,
        };
        if counter.get() > 0 {
            counter.set(counter.get() - 1);
            return Poll::Ready(StreamSignal::Resumed);
        }
        self.register(cx);
        Poll::Pending
    }

    /// Ready when the filter answers the stream or the stream closes (resumes are left alone).
    pub fn poll_interrupt(&self, cx: &Context<'_>) -> Poll<StreamSignal> {
        if let Some(reply) = self.take_reply() {
            return Poll::Ready(StreamSignal::Reply(reply));
        }
        if self.closed.get() {
            return Poll::Ready(StreamSignal::Closed);
        }
        self.register(cx);
        Poll::Pending
    }

    /// Waits for [`StreamSlot::poll_resume`].
    pub async fn resumed(&self, direction: Direction) -> StreamSignal {
        std::future::poll_fn(|cx| self.poll_resume(direction, cx)).await
    }

    /// Waits for [`StreamSlot::poll_interrupt`].
    pub async fn interrupted(&self) -> StreamSignal {
        std::future::poll_fn(|cx| self.poll_interrupt(cx)).await
    }
}

/// One worker's filter and everything routed to and from it.
pub struct FilterDriver {
    worker: usize,
    filter: RefCell<Box<dyn WorkerFilter>>,
    slots: RefCell<HashMap<StreamId, Rc<StreamSlot>>>,
    events: RefCell<Vec<FilterEvent>>,
    client: UpstreamClient,
    clusters: Arc<BTreeMap<String, Target>>,
    /// When the timer loop plans to wake next; a callback that sets an earlier timer wakes it sooner.
    timer_planned: Cell<Option<SystemTime>>,
    timers_changed: Arc<Notify>,
    /// The filter's http calls not answered yet; a draining worker waits for them.
    calls: Rc<InFlight>,
}

impl FilterDriver {
    /// Wraps a freshly created worker filter.
    pub fn new(
        worker: usize,
        mut filter: Box<dyn WorkerFilter>,
        client: UpstreamClient,
        clusters: Arc<BTreeMap<String, Target>>,
    ) -> Rc<Self> {
        let timers_changed = Arc::new(Notify::new());
        let waker_notify = Arc::clone(&timers_changed);
        filter.set_waker(Arc::new(move || waker_notify.notify_one()));
        Rc::new(Self {
            worker,
            filter: RefCell::new(filter),
            slots: RefCell::new(HashMap::new()),
            events: RefCell::new(Vec::new()),
            client,
            clusters,
            timer_planned: Cell::new(None),
            timers_changed,
            calls: Rc::default(),
        })
    }

    /// Runs filter code, then routes what the filter did meanwhile (stream events, http calls).
    ///
    /// # Errors
    /// Whatever the callback returns, or a fault when the VM is already in use (a re-entrant call, which
    /// would be a bug in the proxy).
    pub fn call<R>(
        self: &Rc<Self>,
        callback: impl FnOnce(&mut dyn WorkerFilter) -> Result<R, FilterFault>,
    ) -> Result<R, FilterFault> {
        let (result, next_timer) = {
            let mut filter = self
                .filter
                .try_borrow_mut()
                .map_err(|_| FilterFault("filter vm is busy".to_owned()))?;
            let result = callback(filter.as_mut());
            filter.take_events(&mut self.events.borrow_mut());
            (result, filter.next_deadline())
        };
        if let Some(next) = next_timer
            && self
                .timer_planned
                .get()
                .is_none_or(|planned| next < planned)
        {
            self.timers_changed.notify_one();
        }
        self.route_events();
        result
    }

    fn route_events(self: &Rc<Self>) {
        let events = std::mem::take(&mut *self.events.borrow_mut());
        for event in events {
            match event {
                FilterEvent::HttpCall(call) => {
                    let in_flight = self.calls.enter();
                    tokio::task::spawn_local(Rc::clone(self).run_call(call, in_flight));
                }
                FilterEvent::Resume { stream, direction } => {
                    if let Some(slot) = self.slot(stream) {
                        slot.resume(direction);
                    }
                }
                FilterEvent::Reply { stream, reply } => {
                    if let Some(slot) = self.slot(stream) {
                        slot.answer(reply);
                    }
                }
                FilterEvent::Close { stream } => {
                    if let Some(slot) = self.slot(stream) {
                        slot.close();
                    }
                }
            }
        }
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
        info: &StreamInfo,
    ) -> Result<(StreamId, Rc<StreamSlot>), FilterFault> {
        let stream = self.call(|filter| filter.open_stream(info))?;
        let slot = Rc::new(StreamSlot::default());
        self.slots.borrow_mut().insert(stream, Rc::clone(&slot));
        Ok((stream, slot))
    }

    /// Ends a stream in the VM (`on_done`, `on_log`, `on_delete`) and forgets its slot.
    pub fn close(self: &Rc<Self>, stream: StreamId) {
        if let Some(slot) = self.slots.borrow_mut().remove(&stream) {
            slot.close();
        }
        if let Err(fault) = self.call(|filter| {
            filter.close_stream(stream);
            Ok(())
        }) {
            tracing::warn!(worker = self.worker, error = %fault, "closing a filter stream failed");
        }
    }

    /// Sends one outgoing call and hands the result to the filter.
    async fn run_call(self: Rc<Self>, call: OutgoingCall, _in_flight: InFlightGuard) {
        let token = call.token;
        let limit = call.timeout.unwrap_or(DEFAULT_CALL_TIMEOUT);
        let outcome = match tokio::time::timeout(limit, self.send_call(call)).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(reason)) => {
                tracing::warn!(worker = self.worker, token, reason = %reason, "filter http call failed");
                CallOutcome::Failed(reason)
            }
            Err(_) => CallOutcome::TimedOut,
        };
        let _ = self.call(|filter| {
            filter.complete_call(token, outcome);
            Ok(())
        });
    }

    /// The filter's http calls still waiting for an answer (a token refresh, say).
    pub fn calls(&self) -> &InFlight {
        &self.calls
    }

    async fn send_call(&self, call: OutgoingCall) -> Result<CallOutcome, String> {
        let target = self
            .clusters
            .get(&call.cluster)
            .ok_or_else(|| format!("unknown cluster {:?}", call.cluster))?;
        let head = headers::upstream_head(&call.headers, "").map_err(|err| err.to_string())?;
        let uri = target.uri_for(&head.path).map_err(|err| err.to_string())?;
        let body = if call.body.is_empty() {
            UpstreamBody::Empty
        } else {
            UpstreamBody::Full(Some(call.body))
        };
        let mut request = http::Request::new(body);
        *request.method_mut() = head.method;
        *request.uri_mut() = uri;
        headers::fill_header_map(&call.headers, request.headers_mut())
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
            .map(headers::trailer_fields)
            .unwrap_or_default();
        let body: Bytes = collected.to_bytes();
        Ok(CallOutcome::Response {
            headers: headers::response_fields(parts.status, &parts.headers),
            body,
            trailers,
        })
    }

    /// Fires the VM's timers (ticks, http call timeouts, queue notifications) by the system clock until
    /// the worker stops.
    pub async fn run_timers(self: Rc<Self>) {
        loop {
            let next = self
                .filter
                .try_borrow()
                .ok()
                .and_then(|filter| filter.next_deadline());
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
            let _ = self.call(|filter| {
                filter.run_timers();
                Ok(())
            });
        }
    }

    /// The worker's upstream client.
    pub fn client(&self) -> &UpstreamClient {
        &self.client
    }
}
