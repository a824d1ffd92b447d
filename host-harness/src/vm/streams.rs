//! Driving HTTP streams: creation, the header, body and trailer steps, and finishing.

use super::failure::apply_failure_policy;
use super::{Pick, Vm, len_u32};
use crate::error::{GuestTrap, HarnessError};
use crate::headers::Headers;
use crate::stream::{Action, BodyChunk, Direction, Stream, StreamId, StreamInfo, StreamState};

/// Which direction of a stream a step works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Request,
    Response,
}

/// Which step of a direction is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Headers,
    Body,
    Trailers,
}

fn direction(stream: &mut StreamState, side: Side) -> &mut Direction {
    match side {
        Side::Request => &mut stream.request,
        Side::Response => &mut stream.response,
    }
}

/// The error for a step that comes out of order on `dir`, if it does.
fn order_error(dir: &Direction, id: StreamId, side: Side, phase: Phase) -> Option<HarnessError> {
    let reason = match phase {
        Phase::Headers if dir.headers_seen => "came twice",
        Phase::Body | Phase::Trailers if !dir.headers_seen => "came before the headers",
        Phase::Body | Phase::Trailers if dir.end_seen => "came after the end of stream",
        _ => return None,
    };
    let step = match (side, phase) {
        (Side::Request, Phase::Headers) => "request headers",
        (Side::Request, Phase::Body) => "request body",
        (Side::Request, Phase::Trailers) => "request trailers",
        (Side::Response, Phase::Headers) => "response headers",
        (Side::Response, Phase::Body) => "response body",
        (Side::Response, Phase::Trailers) => "response trailers",
    };
    Some(HarnessError::StreamOrder {
        id: id.0,
        step,
        reason,
    })
}

impl Vm {
    /// Creates a stream (its context) and returns a handle for driving it in a test.
    ///
    /// # Errors
    /// See [`Vm::create_stream`].
    pub fn stream(&mut self) -> Result<Stream<'_>, HarnessError> {
        self.stream_with(StreamInfo::default())
    }

    /// Creates a stream with connection details and returns a handle for driving it in a test.
    ///
    /// # Errors
    /// See [`Vm::create_stream`].
    pub fn stream_with(&mut self, info: StreamInfo) -> Result<Stream<'_>, HarnessError> {
        let id = self.create_stream(info)?;
        Ok(Stream::new(self, id))
    }

    /// A test handle for an existing stream.
    pub fn stream_handle(&mut self, id: StreamId) -> Stream<'_> {
        Stream::new(self, id)
    }

    /// Creates a stream: a new context, announced with `proxy_on_context_create`. On a failed VM the
    /// stream gets the failure policy at once (after a reload attempt under `FailReload`).
    ///
    /// # Errors
    /// [`HarnessError::VmShutDown`] after [`Vm::shutdown`].
    pub fn create_stream(&mut self, info: StreamInfo) -> Result<StreamId, HarnessError> {
        if self.is_shut_down() {
            return Err(HarnessError::VmShutDown);
        }
        self.maybe_reload();
        let id = self.alloc_context_id();
        let now = self.now_nanos();
        let Some(instance) = self.live.as_mut() else {
            let mut stream = StreamState::new(id, info, now);
            apply_failure_policy(self.plugin.failure_policy(), &mut stream);
            self.detached.insert(id, stream);
            return Ok(StreamId(id));
        };
        // Built in its slot: a stream's state is large, and each move of it is a copy.
        instance
            .store
            .data_mut()
            .contexts
            .streams
            .entry(id)
            .insert_entry(StreamState::new(id, info, now));
        let create: Pick<_, _> = |callbacks| callbacks.on_context_create.as_ref();
        let root = instance.root_id;
        if let Err(trap) = instance.invoke(
            &self.plugin,
            &self.log,
            "proxy_on_context_create",
            id,
            create,
            (id, root),
        ) {
            self.fail(trap, Some(id));
        }
        Ok(StreamId(id))
    }

    /// Runs `proxy_on_request_headers`. Afterwards the stream's request headers are what goes upstream
    /// (once the action is Continue, or the stream is resumed).
    ///
    /// # Errors
    /// [`HarnessError::UnknownStream`]; [`HarnessError::StreamOrder`] when request headers came already.
    pub fn request_headers(
        &mut self,
        id: StreamId,
        headers: Headers,
        end_of_stream: bool,
    ) -> Result<Action, HarnessError> {
        self.headers_step(Side::Request, id, headers, end_of_stream)
    }

    /// Runs `proxy_on_request_body` for one chunk; returns what to forward upstream now.
    ///
    /// # Errors
    /// [`HarnessError::UnknownStream`]; [`HarnessError::StreamOrder`] before headers or after the end.
    pub fn request_body(
        &mut self,
        id: StreamId,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<BodyChunk, HarnessError> {
        self.body_step(Side::Request, id, chunk, end_of_stream)
    }

    /// Runs `proxy_on_request_trailers`.
    ///
    /// # Errors
    /// [`HarnessError::UnknownStream`]; [`HarnessError::StreamOrder`] before headers or when repeated.
    pub fn request_trailers(
        &mut self,
        id: StreamId,
        trailers: Headers,
    ) -> Result<Action, HarnessError> {
        self.trailers_step(Side::Request, id, trailers)
    }

    /// Runs `proxy_on_response_headers`. Afterwards the stream's response headers are what goes downstream.
    ///
    /// # Errors
    /// [`HarnessError::UnknownStream`]; [`HarnessError::StreamOrder`] when response headers came already.
    pub fn response_headers(
        &mut self,
        id: StreamId,
        headers: Headers,
        end_of_stream: bool,
    ) -> Result<Action, HarnessError> {
        self.headers_step(Side::Response, id, headers, end_of_stream)
    }

    /// Runs `proxy_on_response_body` for one chunk; returns what to forward downstream now.
    ///
    /// # Errors
    /// [`HarnessError::UnknownStream`]; [`HarnessError::StreamOrder`] before headers or after the end.
    pub fn response_body(
        &mut self,
        id: StreamId,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<BodyChunk, HarnessError> {
        self.body_step(Side::Response, id, chunk, end_of_stream)
    }

    /// Runs `proxy_on_response_trailers`.
    ///
    /// # Errors
    /// [`HarnessError::UnknownStream`]; [`HarnessError::StreamOrder`] before headers or when repeated.
    pub fn response_trailers(
        &mut self,
        id: StreamId,
        trailers: Headers,
    ) -> Result<Action, HarnessError> {
        self.trailers_step(Side::Response, id, trailers)
    }

    /// Request body bytes released for forwarding and not taken yet (after a resume event).
    pub fn drain_request_body(&mut self, id: StreamId) -> Vec<u8> {
        self.stream_state_mut(id)
            .map(|stream| std::mem::take(&mut stream.request.released))
            .unwrap_or_default()
    }

    /// Response body bytes released for forwarding and not taken yet (after a resume event).
    pub fn drain_response_body(&mut self, id: StreamId) -> Vec<u8> {
        self.stream_state_mut(id)
            .map(|stream| std::mem::take(&mut stream.response.released))
            .unwrap_or_default()
    }

    /// Checks a step may run; `Ok(None)` when the stream is live, `Ok(Some(..))` with the policy outcome
    /// when the stream belongs to a failed instance.
    fn step_target(&mut self, id: StreamId) -> Result<Option<bool>, HarnessError> {
        if let Some(stream) = self.detached.get(&id.0) {
            return Ok(Some(stream.bypassed));
        }
        let live = self
            .live
            .as_ref()
            .is_some_and(|instance| instance.store.data().contexts.streams.contains_key(&id.0));
        if live {
            Ok(None)
        } else {
            Err(HarnessError::UnknownStream(id.0))
        }
    }

    fn check_order(&mut self, id: StreamId, side: Side, phase: Phase) -> Result<(), HarnessError> {
        let Some(stream) = self.stream_state_mut(id) else {
            return Err(HarnessError::UnknownStream(id.0));
        };
        order_error(direction(stream, side), id, side, phase).map_or(Ok(()), Err)
    }

    fn headers_step(
        &mut self,
        side: Side,
        id: StreamId,
        headers: Headers,
        end_of_stream: bool,
    ) -> Result<Action, HarnessError> {
        self.fields_step(side, id, Phase::Headers, headers, end_of_stream)
    }

    fn trailers_step(
        &mut self,
        side: Side,
        id: StreamId,
        trailers: Headers,
    ) -> Result<Action, HarnessError> {
        self.fields_step(side, id, Phase::Trailers, trailers, true)
    }

    /// A headers or trailers step: store the fields, then run the callback unless the stream is already
    /// settled (failed VM, local response, reset).
    fn fields_step(
        &mut self,
        side: Side,
        id: StreamId,
        phase: Phase,
        fields: Headers,
        end_of_stream: bool,
    ) -> Result<Action, HarnessError> {
        let count = len_u32(fields.len());
        // One lookup serves the whole step: a stream is either live or detached (left by a failed
        // instance, whose streams get the failure policy), never both.
        let live = self
            .live
            .as_mut()
            .and_then(|instance| instance.store.data_mut().contexts.streams.get_mut(&id.0));
        let (stream, target) = match live {
            Some(stream) => (stream, None),
            None => {
                let Some(stream) = self.detached.get_mut(&id.0) else {
                    return Err(HarnessError::UnknownStream(id.0));
                };
                let bypassed = stream.bypassed;
                (stream, Some(bypassed))
            }
        };
        let dir = direction(stream, side);
        if let Some(error) = order_error(dir, id, side, phase) {
            return Err(error);
        }
        if phase == Phase::Headers {
            dir.headers = fields;
            dir.headers_seen = true;
            dir.headers_open = true;
        } else {
            dir.trailers = fields;
            dir.trailers_seen = true;
            dir.trailers_open = true;
        }
        dir.end_seen = end_of_stream;
        let terminated = stream.is_terminated();
        if let Some(bypassed) = target {
            return Ok(if bypassed {
                Action::Continue
            } else {
                Action::Pause
            });
        }
        if terminated {
            return Ok(Action::Pause);
        }
        let Some(instance) = self.live.as_mut() else {
            return Err(HarnessError::UnknownStream(id.0));
        };
        let eos = u32::from(end_of_stream);
        let result = match (side, phase) {
            (Side::Request, Phase::Headers) => {
                let func: Pick<_, _> = |callbacks| callbacks.on_request_headers.as_ref();
                instance.invoke(
                    &self.plugin,
                    &self.log,
                    "proxy_on_request_headers",
                    id.0,
                    func,
                    (id.0, count, eos),
                )
            }
            (Side::Response, Phase::Headers) => {
                let func: Pick<_, _> = |callbacks| callbacks.on_response_headers.as_ref();
                instance.invoke(
                    &self.plugin,
                    &self.log,
                    "proxy_on_response_headers",
                    id.0,
                    func,
                    (id.0, count, eos),
                )
            }
            (Side::Request, _) => {
                let func: Pick<_, _> = |callbacks| callbacks.on_request_trailers.as_ref();
                instance.invoke(
                    &self.plugin,
                    &self.log,
                    "proxy_on_request_trailers",
                    id.0,
                    func,
                    (id.0, count),
                )
            }
            (Side::Response, _) => {
                let func: Pick<_, _> = |callbacks| callbacks.on_response_trailers.as_ref();
                instance.invoke(
                    &self.plugin,
                    &self.log,
                    "proxy_on_response_trailers",
                    id.0,
                    func,
                    (id.0, count),
                )
            }
        };
        self.after_step(id, side, phase, result)
    }

    fn body_step(
        &mut self,
        side: Side,
        id: StreamId,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<BodyChunk, HarnessError> {
        self.step_target(id)?;
        self.check_order(id, side, Phase::Body)?;
        let Some(stream) = self.stream_state_mut(id) else {
            return Err(HarnessError::UnknownStream(id.0));
        };
        let dir = direction(stream, side);
        dir.body.extend_from_slice(chunk);
        dir.end_seen = end_of_stream;
        // At the end of a stream without trailers, the filter may add some (Envoy creates the map then).
        dir.trailers_open = end_of_stream && !dir.trailers_seen;
        let size = len_u32(dir.body.len());
        let action = if let Some(bypassed) = self.step_target(id)? {
            if bypassed {
                if let Some(stream) = self.stream_state_mut(id) {
                    direction(stream, side).resume();
                }
                Action::Continue
            } else {
                Action::Pause
            }
        } else if self
            .stream_state(id)
            .is_some_and(StreamState::is_terminated)
        {
            Action::Pause
        } else {
            let Some(instance) = self.live.as_mut() else {
                return Err(HarnessError::UnknownStream(id.0));
            };
            let (name, func): (&str, Pick<_, _>) = match side {
                Side::Request => ("proxy_on_request_body", |callbacks| {
                    callbacks.on_request_body.as_ref()
                }),
                Side::Response => ("proxy_on_response_body", |callbacks| {
                    callbacks.on_response_body.as_ref()
                }),
            };
            let result = instance.invoke(
                &self.plugin,
                &self.log,
                name,
                id.0,
                func,
                (id.0, size, u32::from(end_of_stream)),
            );
            self.after_step(id, side, Phase::Body, result)?
        };
        let forward = match side {
            Side::Request => self.drain_request_body(id),
            Side::Response => self.drain_response_body(id),
        };
        Ok(BodyChunk { action, forward })
    }

    /// Records what a stream callback returned, or fails the VM when it trapped.
    fn after_step(
        &mut self,
        id: StreamId,
        side: Side,
        phase: Phase,
        result: Result<Option<u32>, GuestTrap>,
    ) -> Result<Action, HarnessError> {
        let action = match result {
            Ok(value) => value.map_or(Action::Continue, Action::from_abi),
            Err(trap) => {
                self.fail(trap, Some(id.0));
                let bypassed = self
                    .detached
                    .get(&id.0)
                    .is_some_and(|stream| stream.bypassed);
                return Ok(if bypassed {
                    Action::Continue
                } else {
                    Action::Pause
                });
            }
        };
        let Some(stream) = self.stream_state_mut(id) else {
            return Ok(action);
        };
        if stream.is_terminated() {
            self.settle();
            return Ok(Action::Pause);
        }
        let dir = direction(stream, side);
        if action == Action::Continue {
            // Envoy lets go of what it handed the filter once the filter continues.
            match phase {
                Phase::Headers => {
                    dir.headers_open = false;
                    dir.headers_released = true;
                }
                Phase::Body | Phase::Trailers => dir.trailers_open = false,
            }
        }
        match (phase, action) {
            (Phase::Headers, Action::Pause) => {
                dir.paused = true;
                dir.headers_held = true;
            }
            (Phase::Headers, Action::Continue) => {}
            (Phase::Body | Phase::Trailers, Action::Continue) => {
                if !dir.headers_held {
                    dir.resume();
                }
            }
            (Phase::Body | Phase::Trailers, Action::Pause) => dir.paused = true,
        }
        self.settle();
        Ok(action)
    }

    /// Ends a stream as Envoy does: `proxy_on_log` (the stream's access log), then `proxy_on_done`, then
    /// `proxy_on_delete`, unless the plugin defers with `false` from `proxy_on_done` until it calls
    /// `proxy_done`.
    ///
    /// # Errors
    /// [`HarnessError::UnknownStream`].
    pub fn finish_stream(&mut self, id: StreamId) -> Result<(), HarnessError> {
        // Streams of a failed instance are rare: most finishes find the detached set empty.
        if !self.detached.is_empty() && self.detached.remove(&id.0).is_some() {
            return Ok(());
        }
        let Some(instance) = self.live.as_mut() else {
            return Err(HarnessError::UnknownStream(id.0));
        };
        match instance.store.data_mut().contexts.streams.get_mut(&id.0) {
            Some(stream) => stream.logging = true,
            None => return Err(HarnessError::UnknownStream(id.0)),
        }
        let on_log: Pick<_, _> = |callbacks| callbacks.on_log.as_ref();
        let logged = instance.invoke(&self.plugin, &self.log, "proxy_on_log", id.0, on_log, id.0);
        let done = match logged {
            Err(trap) => Err(trap),
            Ok(_) => {
                let on_done: Pick<_, _> = |callbacks| callbacks.on_done.as_ref();
                instance.invoke(
                    &self.plugin,
                    &self.log,
                    "proxy_on_done",
                    id.0,
                    on_done,
                    id.0,
                )
            }
        };
        match done {
            Err(trap) => {
                self.fail(trap, Some(id.0));
                self.detached.remove(&id.0);
            }
            Ok(Some(0)) => {
                if let Some(stream) = self.stream_state_mut(id) {
                    stream.awaiting_done = true;
                }
                self.settle();
            }
            Ok(_) => self.finish_context(id.0),
        }
        Ok(())
    }

    /// `proxy_on_delete` for a stream whose `proxy_on_log` and `proxy_on_done` ran, then forgets it.
    pub(super) fn finish_context(&mut self, id: u32) {
        if let Some(instance) = self.live.as_mut() {
            let on_delete: Pick<_, _> = |callbacks| callbacks.on_delete.as_ref();
            if let Err(trap) = instance.invoke(
                &self.plugin,
                &self.log,
                "proxy_on_delete",
                id,
                on_delete,
                id,
            ) {
                self.fail(trap, Some(id));
            }
        }
        if let Some(instance) = self.live.as_mut() {
            instance.store.data_mut().contexts.streams.remove(&id);
        }
        if !self.detached.is_empty() {
            self.detached.remove(&id);
        }
    }

    /// Runs the response callbacks for the local responses sent since the last step, as Envoy sends a
    /// local response through its encoder filters: `proxy_on_response_headers` with its headers, then
    /// `proxy_on_response_body` with its body. What the filter leaves is the response.
    fn encode_local_responses(&mut self) {
        loop {
            let Some(instance) = self.live.as_mut() else {
                return;
            };
            let Some(id) = instance.store.data_mut().local_encodes.pop() else {
                return;
            };
            self.encode_local_response(StreamId(id));
        }
    }

    fn encode_local_response(&mut self, id: StreamId) {
        let Some(stream) = self.stream_state_mut(id) else {
            return;
        };
        let Some(local) = stream.local_response.as_mut() else {
            return;
        };
        let body = std::mem::take(&mut local.body);
        let fields = len_u32(stream.response.headers.len());
        let ends_with_headers = body.is_empty();
        stream.response.headers_open = true;
        stream.response.body.clear();
        stream.response.released.clear();
        let Some(instance) = self.live.as_mut() else {
            return;
        };
        let headers: Pick<_, _> = |callbacks| callbacks.on_response_headers.as_ref();
        let params = (id.0, fields, u32::from(ends_with_headers));
        let mut result = instance
            .invoke(
                &self.plugin,
                &self.log,
                "proxy_on_response_headers",
                id.0,
                headers,
                params,
            )
            .map(drop);
        if result.is_ok() && !ends_with_headers {
            let size = len_u32(body.len());
            if let Some(stream) = self.stream_state_mut(id) {
                stream.response.headers_open = false;
                stream.response.body = body;
            }
            if let Some(instance) = self.live.as_mut() {
                let on_body: Pick<_, _> = |callbacks| callbacks.on_response_body.as_ref();
                result = instance
                    .invoke(
                        &self.plugin,
                        &self.log,
                        "proxy_on_response_body",
                        id.0,
                        on_body,
                        (id.0, size, 1),
                    )
                    .map(drop);
            }
        }
        if let Err(trap) = result {
            // The local response never made it through: the trap answers the stream instead (Envoy's 503).
            if let Some(stream) = self.stream_state_mut(id) {
                stream.local_response = None;
            }
            self.fail(trap, Some(id.0));
            return;
        }
        let Some(stream) = self.stream_state_mut(id) else {
            return;
        };
        stream.response.headers_open = false;
        let mut body = std::mem::take(&mut stream.response.released);
        body.append(&mut stream.response.body);
        let mut headers = Headers::new();
        let mut status = None;
        for (name, value) in stream.response.headers.iter() {
            if name == b":status" {
                status = std::str::from_utf8(value)
                    .ok()
                    .and_then(|text| text.parse().ok());
            } else if !name.starts_with(b":") {
                headers.add(name, value);
            }
        }
        if headers.contains("content-length") {
            headers.replace("content-length", body.len().to_string());
        }
        if let Some(local) = stream.local_response.as_mut() {
            local.status = status.unwrap_or(local.status);
            local.headers = headers;
            local.body = body;
        }
    }

    /// Finishes what the last callback left: local responses to pass through the response callbacks,
    /// and contexts whose plugin called `proxy_done` after deferring in `proxy_on_done`.
    pub(super) fn settle(&mut self) {
        self.encode_local_responses();
        loop {
            let Some(instance) = self.live.as_mut() else {
                return;
            };
            let contexts = &mut instance.store.data_mut().contexts;
            let root_ready = contexts.root_awaiting_done && contexts.root_done_signalled;
            // Most steps end with nothing to finish; only a `proxy_done` makes the scan worth it.
            if !contexts.done_signalled && !root_ready {
                return;
            }
            contexts.done_signalled = false;
            let ready: Vec<u32> = contexts
                .streams
                .values()
                .filter(|stream| stream.done_signalled)
                .map(|stream| stream.id)
                .collect();
            if ready.is_empty() && !root_ready {
                return;
            }
            for id in ready {
                if let Some(stream) = self.stream_state_mut(StreamId(id)) {
                    stream.done_signalled = false;
                    stream.awaiting_done = false;
                }
                self.finish_context(id);
            }
            if root_ready {
                self.delete_root();
            }
        }
    }
}
