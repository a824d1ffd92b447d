//! HTTP streams: what the embedder knows about each, what the filter did to it, and a test-friendly handle.
//!
//! A VM hosts many streams at once, interleaved, as a proxy worker does; each is named by a [`StreamId`] and
//! driven through `Vm` methods. [`Stream`] wraps one id and a `&mut Vm` for tests that drive one stream at a
//! time and read like the exchange they model.

use crate::error::HarnessError;
use crate::headers::Headers;
use crate::vm::Vm;

/// Identifies a stream within its VM (it is the stream's proxy-wasm context id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u32);

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a filter callback returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Go on: pass what was processed to the next hop.
    Continue,
    /// Hold the stream until the filter resumes it (or answers it with a local response).
    Pause,
}

impl Action {
    /// The action for a callback's return value: 0 continues, anything else stops, as Envoy reads it.
    pub(crate) fn from_abi(value: u32) -> Self {
        if value == 0 {
            Action::Continue
        } else {
            Action::Pause
        }
    }
}

/// A response the filter sent instead of (or in place of) the upstream's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalResponse {
    /// HTTP status code.
    pub status: u32,
    /// Response headers without `:status`: the filter's, `content-length`/`content-type` for a body, and what the response callbacks changed.
    pub headers: Headers,
    /// Body.
    pub body: Vec<u8>,
    /// The details string (Envoy's response code details), empty when none was given.
    pub details: String,
    /// The gRPC status, when the filter gave one (the SDK passes -1 for none).
    pub grpc_status: Option<i32>,
}

impl LocalResponse {
    /// Whether the failure policy sent it for a failed VM (Envoy's `wasm_fail_stream`), rather than
    /// the filter.
    pub fn is_from_failure_policy(&self) -> bool {
        self.details == crate::vm::FAIL_STREAM_DETAILS
    }
}

/// What the embedder knows about a stream's connection, readable by the filter as properties.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamInfo {
    /// The client's address as "ip:port" (`source.address`).
    pub source_address: Option<String>,
    /// The address the client connected to, as "ip:port" (`destination.address`).
    pub destination_address: Option<String>,
    /// The downstream protocol, such as "HTTP/1.1" (`request.protocol`).
    pub protocol: Option<String>,
    /// The downstream connection's id (`connection.id`).
    pub connection_id: Option<u64>,
    /// Further properties by path (segments joined by NUL), with their encoded values.
    pub properties: Vec<(Vec<u8>, Vec<u8>)>,
}

impl StreamInfo {
    /// No connection details.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `source.address` ("ip:port").
    pub fn source_address(mut self, address: impl Into<String>) -> Self {
        self.source_address = Some(address.into());
        self
    }

    /// Sets `destination.address` ("ip:port").
    pub fn destination_address(mut self, address: impl Into<String>) -> Self {
        self.destination_address = Some(address.into());
        self
    }

    /// Sets `request.protocol` (for example "HTTP/1.1").
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocol = Some(protocol.into());
        self
    }

    /// Sets `connection.id`.
    pub fn connection_id(mut self, id: u64) -> Self {
        self.connection_id = Some(id);
        self
    }

    /// Adds a property at a dotted path (`"connection.mtls"`); segments themselves cannot contain dots.
    pub fn property(mut self, dotted_path: &str, value: impl Into<Vec<u8>>) -> Self {
        self.properties
            .push((dotted_path.replace('.', "\0").into_bytes(), value.into()));
        self
    }
}

/// One direction (request or response) of a stream.
#[derive(Clone, Debug, Default)]
pub(crate) struct Direction {
    pub(crate) headers: Headers,
    pub(crate) trailers: Headers,
    /// Body bytes the filter can see: the current chunk, plus earlier chunks while it holds them.
    pub(crate) body: Vec<u8>,
    /// Body bytes cleared for forwarding that the embedder has not taken yet.
    pub(crate) released: Vec<u8>,
    pub(crate) headers_seen: bool,
    pub(crate) end_seen: bool,
    pub(crate) trailers_seen: bool,
    /// The filter holds the stream (a callback returned Pause and nothing resumed it yet).
    pub(crate) paused: bool,
    /// The pause came from the headers callback, so later body callbacks cannot lift it by continuing.
    pub(crate) headers_held: bool,
    /// The headers went on to the next hop (their callback continued, or the filter resumed them).
    pub(crate) headers_released: bool,
    /// The filter may reach the headers now: from their callback until it returns Continue, or until it
    /// resumes the stream after pausing it (Envoy keeps its pointer to them that long).
    pub(crate) headers_open: bool,
    /// The filter may reach the trailers now: during their callback (or a body callback at the end of the
    /// stream, where trailers can be added) until it returns Continue.
    pub(crate) trailers_open: bool,
}

impl Direction {
    /// Clears the pause and releases what the filter held.
    pub(crate) fn resume(&mut self) {
        self.paused = false;
        self.headers_held = false;
        self.headers_released |= self.headers_seen;
        // Envoy lets go of the maps when the filter resumes the stream.
        self.headers_open = false;
        self.trailers_open = false;
        let held = std::mem::take(&mut self.body);
        self.released.extend_from_slice(&held);
    }
}

/// Everything the host holds for one stream; read it through `Vm::stream_state` or [`Stream::state`].
#[derive(Clone, Debug)]
pub struct StreamState {
    pub(crate) id: u32,
    pub(crate) info: StreamInfo,
    pub(crate) started_nanos: u64,
    pub(crate) request: Direction,
    pub(crate) response: Direction,
    pub(crate) local_response: Option<LocalResponse>,
    pub(crate) reset: bool,
    pub(crate) bypassed: bool,
    pub(crate) custom_properties: Vec<(Vec<u8>, Vec<u8>)>,
    pub(crate) awaiting_done: bool,
    pub(crate) done_signalled: bool,
    /// `proxy_on_log` is running: headers (not request trailers) are readable again, read-only.
    pub(crate) logging: bool,
}

impl StreamState {
    pub(crate) fn new(id: u32, info: StreamInfo, started_nanos: u64) -> Self {
        Self {
            id,
            info,
            started_nanos,
            request: Direction::default(),
            response: Direction::default(),
            local_response: None,
            reset: false,
            bypassed: false,
            custom_properties: Vec::new(),
            awaiting_done: false,
            done_signalled: false,
            logging: false,
        }
    }

    /// The stream's id.
    pub fn id(&self) -> StreamId {
        StreamId(self.id)
    }

    /// The connection details the embedder gave.
    pub fn info(&self) -> &StreamInfo {
        &self.info
    }

    /// Request headers as they stand: after the request-headers step, what goes upstream.
    pub fn request_headers(&self) -> &Headers {
        &self.request.headers
    }

    /// Request trailers as they stand.
    pub fn request_trailers(&self) -> &Headers {
        &self.request.trailers
    }

    /// Response headers as they stand: after the response-headers step, what goes downstream.
    pub fn response_headers(&self) -> &Headers {
        &self.response.headers
    }

    /// Response trailers as they stand.
    pub fn response_trailers(&self) -> &Headers {
        &self.response.trailers
    }

    /// The local response the filter sent, as its response callbacks left it, if any.
    pub fn local_response(&self) -> Option<&LocalResponse> {
        self.local_response.as_ref()
    }

    /// Whether the filter holds the request (paused and not resumed yet).
    pub fn is_request_paused(&self) -> bool {
        self.request.paused
    }

    /// Whether the filter holds the response.
    pub fn is_response_paused(&self) -> bool {
        self.response.paused
    }

    /// Whether the filter (or the failure policy) reset the stream.
    pub fn is_reset(&self) -> bool {
        self.reset
    }

    /// Whether the filter is skipped for this stream (fail-open after the VM failed).
    pub fn is_bypassed(&self) -> bool {
        self.bypassed
    }

    /// Request body bytes the filter holds (buffered while paused).
    pub fn held_request_body(&self) -> &[u8] {
        &self.request.body
    }

    /// Response body bytes the filter holds.
    pub fn held_response_body(&self) -> &[u8] {
        &self.response.body
    }

    /// Whether the stream is finished from the embedder's side: answered locally or reset.
    pub fn is_terminated(&self) -> bool {
        self.local_response.is_some() || self.reset
    }
}

/// What a body step hands back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyChunk {
    /// What the filter returned for this chunk.
    pub action: Action,
    /// Bytes to forward now (the chunk, possibly modified, plus anything released with it); empty while
    /// the filter holds the body.
    pub forward: Vec<u8>,
}

/// A change to a stream made outside that stream's own callbacks: from an http-call response, a tick,
/// a queue notification, or another stream. Collect them with `Vm::take_stream_events`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// The filter resumed the request (`proxy_continue_stream(HTTP_REQUEST)`).
    RequestResumed(StreamId),
    /// The filter resumed the response.
    ResponseResumed(StreamId),
    /// The filter answered the stream with a local response.
    LocalResponse(StreamId),
    /// The filter (or the failure policy) reset the stream.
    Reset(StreamId),
}

impl StreamEvent {
    /// The stream the event is about.
    pub fn stream(&self) -> StreamId {
        match *self {
            StreamEvent::RequestResumed(id)
            | StreamEvent::ResponseResumed(id)
            | StreamEvent::LocalResponse(id)
            | StreamEvent::Reset(id) => id,
        }
    }
}

/// One stream driven through its VM, for tests: `vm.stream()?.request_headers([...], true)?`.
pub struct Stream<'vm> {
    vm: &'vm mut Vm,
    id: StreamId,
}

impl<'vm> Stream<'vm> {
    pub(crate) fn new(vm: &'vm mut Vm, id: StreamId) -> Self {
        Self { vm, id }
    }

    /// The stream's id.
    pub fn id(&self) -> StreamId {
        self.id
    }

    /// The VM, for steps on other streams or timers in between.
    pub fn vm(&mut self) -> &mut Vm {
        self.vm
    }

    /// The stream's state.
    ///
    /// # Errors
    /// [`HarnessError::UnknownStream`] once the stream is finished.
    pub fn state(&self) -> Result<&StreamState, HarnessError> {
        // A `match` rather than `ok_or`: an error value built on every call and dropped costs a call.
        match self.vm.stream_state(self.id) {
            Some(state) => Ok(state),
            None => Err(HarnessError::UnknownStream(self.id.0)),
        }
    }

    /// Request headers as they stand (what goes upstream once the filter continues).
    ///
    /// # Errors
    /// [`HarnessError::UnknownStream`] once the stream is finished.
    pub fn upstream_request_headers(&self) -> Result<&Headers, HarnessError> {
        Ok(self.state()?.request_headers())
    }

    /// Response headers as they stand (what goes downstream once the filter continues).
    ///
    /// # Errors
    /// [`HarnessError::UnknownStream`] once the stream is finished.
    pub fn downstream_response_headers(&self) -> Result<&Headers, HarnessError> {
        Ok(self.state()?.response_headers())
    }

    /// The local response the filter sent, if any.
    pub fn local_response(&self) -> Option<&LocalResponse> {
        self.vm
            .stream_state(self.id)
            .and_then(StreamState::local_response)
    }

    /// Runs the request-headers step.
    ///
    /// # Errors
    /// See [`Vm::request_headers`].
    pub fn request_headers(
        &mut self,
        headers: impl Into<Headers>,
        end_of_stream: bool,
    ) -> Result<Action, HarnessError> {
        self.vm
            .request_headers(self.id, headers.into(), end_of_stream)
    }

    /// Runs the request-body step for one chunk.
    ///
    /// # Errors
    /// See [`Vm::request_body`].
    pub fn request_body(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<BodyChunk, HarnessError> {
        self.vm.request_body(self.id, chunk, end_of_stream)
    }

    /// Runs the request-trailers step.
    ///
    /// # Errors
    /// See [`Vm::request_trailers`].
    pub fn request_trailers(
        &mut self,
        trailers: impl Into<Headers>,
    ) -> Result<Action, HarnessError> {
        self.vm.request_trailers(self.id, trailers.into())
    }

    /// Runs the response-headers step.
    ///
    /// # Errors
    /// See [`Vm::response_headers`].
    pub fn response_headers(
        &mut self,
        headers: impl Into<Headers>,
        end_of_stream: bool,
    ) -> Result<Action, HarnessError> {
        self.vm
            .response_headers(self.id, headers.into(), end_of_stream)
    }

    /// Runs the response-body step for one chunk.
    ///
    /// # Errors
    /// See [`Vm::response_body`].
    pub fn response_body(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<BodyChunk, HarnessError> {
        self.vm.response_body(self.id, chunk, end_of_stream)
    }

    /// Runs the response-trailers step.
    ///
    /// # Errors
    /// See [`Vm::response_trailers`].
    pub fn response_trailers(
        &mut self,
        trailers: impl Into<Headers>,
    ) -> Result<Action, HarnessError> {
        self.vm.response_trailers(self.id, trailers.into())
    }

    /// Ends the stream: `proxy_on_done`, then `proxy_on_log` and `proxy_on_delete`.
    ///
    /// # Errors
    /// See [`Vm::finish_stream`].
    pub fn finish(self) -> Result<(), HarnessError> {
        self.vm.finish_stream(self.id)
    }
}
