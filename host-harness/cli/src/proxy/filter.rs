//! The filter as the proxy drives it: one VM per worker, one stream per request, callbacks in Envoy's order.
//!
//! The proxy talks to the filter only through [`WorkerFilter`] (per worker, single-threaded) and
//! [`FilterFactory`] (shared, creates a worker's filter on that worker's thread). The proxy-wasm VM from
//! the harness library sits behind these traits in `wasm_filter.rs`; keeping the seam this small lets the
//! request pipeline be read without any ABI detail.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::identity::Caller;
use host_harness::headers::Headers;

/// Identifies one request's stream inside a worker's VM.
pub type StreamId = u32;

/// Which half of the exchange a stream event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to upstream.
    Request,
    /// Upstream to client.
    Response,
}

/// One of the four header maps of a stream, as the filter left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderPart {
    /// Request headers (pseudo-headers first).
    RequestHeaders,
    /// Request trailers.
    RequestTrailers,
    /// Response headers (`:status` first).
    ResponseHeaders,
    /// Response trailers.
    ResponseTrailers,
}

/// What a header or trailer callback decided.
#[derive(Debug)]
pub enum Verdict {
    /// Go on with the headers as the filter left them.
    Continue,
    /// Hold the stream until the filter resumes it or answers it.
    Pause,
    /// Answer the client with this response instead.
    Respond(LocalReply),
}

/// What a body callback decided.
#[derive(Debug)]
pub enum BodyVerdict {
    /// Forward these bytes: everything the filter released so far, as it left them (may be empty).
    Forward(Bytes),
    /// The filter holds the body: keep reading, forward only these bytes released earlier (often empty).
    Hold(Bytes),
    /// Answer the client with this response instead.
    Respond(LocalReply),
}

/// A response the filter produced itself (`proxy_send_local_response`), or the end the host made of
/// a stream whose filter failed or reset it.
#[derive(Debug, Clone)]
pub struct LocalReply {
    /// Who ended the stream; only [`ReplyOrigin::Filter`] replies are sent as they are.
    pub origin: ReplyOrigin,
    /// HTTP status code.
    pub status: u16,
    /// Extra response headers.
    pub headers: Headers,
    /// Response body.
    pub body: Bytes,
}

/// Why a stream ended without the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyOrigin {
    /// The filter's own local response.
    Filter,
    /// The filter failed and the failure policy ended the stream: the proxy answers
    /// `503 request filter unavailable` and counts a filter failure.
    FilterFailed,
    /// The filter reset the stream: the proxy answers `500`.
    Reset,
}

impl LocalReply {
    /// The end of a stream whose filter failed.
    pub fn filter_failed() -> Self {
        Self::ended(ReplyOrigin::FilterFailed, 503)
    }

    /// The end of a stream the filter reset.
    pub fn reset() -> Self {
        Self::ended(ReplyOrigin::Reset, 500)
    }

    fn ended(origin: ReplyOrigin, status: u16) -> Self {
        Self {
            origin,
            status,
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }
}

/// A request the filter wants sent to a named cluster (`proxy_http_call`).
#[derive(Debug)]
pub struct OutgoingCall {
    /// The token the filter's response callback is keyed by.
    pub token: u32,
    /// Cluster name, resolved through the proxy's `clusters`.
    pub cluster: String,
    /// Request headers, pseudo-headers included.
    pub headers: Headers,
    /// Request body.
    pub body: Bytes,
    /// The filter's timeout for the whole call, if it gave one.
    pub timeout: Option<Duration>,
}

/// How an outgoing call ended, handed back to the filter.
#[derive(Debug)]
pub enum CallOutcome {
    /// The cluster answered.
    Response {
        /// Response headers, `:status` first.
        headers: Headers,
        /// The whole response body.
        body: Bytes,
        /// Response trailers.
        trailers: Headers,
    },
    /// The call could not be made or broke off.
    Failed(String),
    /// The call ran past its timeout.
    TimedOut,
}

/// Something the filter did outside the callback of the stream it concerns.
#[derive(Debug)]
pub enum FilterEvent {
    /// The filter started an outgoing call.
    HttpCall(OutgoingCall),
    /// The filter resumed a paused stream (`proxy_continue_stream`).
    Resume {
        /// The stream.
        stream: StreamId,
        /// The half that was paused.
        direction: Direction,
    },
    /// The filter answered a paused stream (`proxy_send_local_response`), or its VM failed closed.
    Reply {
        /// The stream.
        stream: StreamId,
        /// The response to send.
        reply: LocalReply,
    },
    /// The filter reset a stream (`proxy_close_stream`), or its VM failed after the response started.
    Close {
        /// The stream.
        stream: StreamId,
    },
}

/// Facts about a request the filter can read as properties; the addresses are formatted once per
/// connection, not per request.
#[derive(Debug, Clone, Copy)]
pub struct StreamInfo<'a> {
    /// The client's address as "ip:port".
    pub client_address: &'a str,
    /// The proxy address the client connected to, as "ip:port".
    pub local_address: &'a str,
    /// Per-worker connection number.
    pub connection_id: u64,
    /// The resolved caller, set as the `caller.*` properties; `None` sets none.
    pub caller: Option<&'a Caller>,
}

/// A failure the request cannot recover from: the filter could not be created or refused a step.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct FilterFault(pub String);

/// One worker's filter VM. Every method runs Wasm synchronously; the caller never holds it across an await.
///
/// A trap inside the filter is not an error here: the VM applies its failure policy and the stream gets a
/// local reply (503) or a reset, like any other filter decision.
pub trait WorkerFilter {
    /// Creates the stream context for a new request.
    ///
    /// # Errors
    /// The VM is shut down.
    fn open_stream(&mut self, info: &StreamInfo) -> Result<StreamId, FilterFault>;

    /// Runs `on_request_headers`; read the result with [`WorkerFilter::headers`].
    ///
    /// # Errors
    /// The stream is unknown or the step is out of order.
    fn request_headers(
        &mut self,
        stream: StreamId,
        headers: Headers,
        end_of_stream: bool,
    ) -> Result<Verdict, FilterFault>;

    /// Runs `on_request_body` with one more chunk.
    ///
    /// # Errors
    /// The stream is unknown or the step is out of order.
    fn request_body(
        &mut self,
        stream: StreamId,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<BodyVerdict, FilterFault>;

    /// Runs `on_request_trailers`.
    ///
    /// # Errors
    /// The stream is unknown or the step is out of order.
    fn request_trailers(
        &mut self,
        stream: StreamId,
        trailers: Headers,
    ) -> Result<Verdict, FilterFault>;

    /// Runs `on_response_headers` (`:status` first).
    ///
    /// # Errors
    /// The stream is unknown or the step is out of order.
    fn response_headers(
        &mut self,
        stream: StreamId,
        headers: Headers,
        end_of_stream: bool,
    ) -> Result<Verdict, FilterFault>;

    /// Runs `on_response_body` with one more chunk.
    ///
    /// # Errors
    /// The stream is unknown or the step is out of order.
    fn response_body(
        &mut self,
        stream: StreamId,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<BodyVerdict, FilterFault>;

    /// Runs `on_response_trailers`.
    ///
    /// # Errors
    /// The stream is unknown or the step is out of order.
    fn response_trailers(
        &mut self,
        stream: StreamId,
        trailers: Headers,
    ) -> Result<Verdict, FilterFault>;

    /// A header map of the stream as the filter left it.
    fn headers(&self, stream: StreamId, part: HeaderPart) -> Option<&Headers>;

    /// Takes the body bytes the filter released after resuming a stream whose body it held.
    fn take_body(&mut self, stream: StreamId, direction: Direction) -> Bytes;

    /// Ends the stream: `on_done`, `on_log`, `on_delete`. Safe to call once per opened stream.
    fn close_stream(&mut self, stream: StreamId);

    /// Moves the events produced since the last call into `into`.
    fn take_events(&mut self, into: &mut Vec<FilterEvent>);

    /// Hands an outgoing call's result to the filter (`on_http_call_response`). A call the VM already gave
    /// up on (timed out) is ignored.
    fn complete_call(&mut self, token: u32, outcome: CallOutcome);

    /// When the VM next has a timer due (tick, http call timeout, queue notification).
    fn next_deadline(&self) -> Option<SystemTime>;

    /// Fires the timers due by now.
    fn run_timers(&mut self);

    /// Called from any thread when another VM makes work for this one; the worker then runs its timers.
    fn set_waker(&mut self, waker: Arc<dyn Fn() + Send + Sync>);
}

/// One metric the filter defined, read at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterMetric {
    /// The name the filter gave it.
    pub name: String,
    /// Its kind and current value.
    pub value: FilterMetricValue,
}

/// A filter metric's kind and value.
#[derive(Debug, Clone, PartialEq)]
pub enum FilterMetricValue {
    /// Only ever increases.
    Counter(u64),
    /// Goes up and down.
    Gauge(i64),
    /// A distribution of samples.
    Histogram {
        /// `(upper bound, samples in this bucket)`, bounds ascending, the last one `+Inf`.
        buckets: Vec<(f64, u64)>,
        /// Number of samples.
        count: u64,
        /// Sum of the samples.
        sum: f64,
    },
}

/// Creates worker filters and reads the metrics they share; lives as long as the proxy.
pub trait FilterFactory: Send + Sync + fmt::Debug {
    /// Builds and configures a VM for worker `worker`, on that worker's thread.
    ///
    /// # Errors
    /// The module failed to instantiate or the filter rejected its configuration.
    fn create(&self, worker: usize) -> Result<Box<dyn WorkerFilter>, FilterFault>;

    /// The metrics the filter defined, across all VMs.
    fn metrics(&self) -> Vec<FilterMetric>;
}
