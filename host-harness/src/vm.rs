//! A VM: one instance of a plugin's module, with its root context and the HTTP streams it serves.
//!
//! A `Vm` is `Send` and meant to stay on one thread, as Envoy keeps one VM per worker: the embedder creates
//! streams, feeds them step by step (interleaving many streams is fine), runs due timers, and hands back the
//! responses of http calls it performed. Callbacks run to completion before a method returns; nothing is
//! delivered re-entrantly. A trap fails the VM: its streams get the plugin's failure policy, and under
//! `FailReload` a fresh instance replaces it after a backoff. Guest code never unwinds into the host.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::{Store, StoreLimitsBuilder, Trap, TypedFunc, WasmParams, WasmResults};

use crate::clock::duration_nanos;
use crate::error::{GuestTrap, HarnessError, HostCallTrap, TrapCause};
use crate::headers::Headers;
use crate::http_call::{HttpCallFailure, HttpCallResponse, PendingHttpCall};
use crate::logs::{LogCapture, LogLevel, LogRecord, LogSource};
use crate::plugin::{FailurePolicy, Plugin};
use crate::shared::QueueInbox;
use crate::state::{
    Contexts, DeliveredResponse, GuestExports, GuestLimits, HostState, HttpCalls, TickTimer,
};
use crate::stream::{
    Action, BodyChunk, LocalResponse, Stream, StreamEvent, StreamId, StreamInfo, StreamState,
};

/// Timer rounds one `advance` runs at most: a plugin that keeps making work for itself at the same instant
/// (a queue it refills from `proxy_on_queue_ready`, say) would otherwise never let virtual time move on.
pub(crate) const MAX_TIMER_ROUNDS: usize = 1_000_000;

/// The status Envoy answers with when a failed VM fails a stream closed.
const FAIL_CLOSED_STATUS: u32 = 503;

/// `proxy_on_http_call_response(root_id, token, headers, body_size, trailers)`.
type HttpCallResponseParams = (u32, u32, u32, u32, u32);

/// The guest's callbacks, resolved once per instance; absent ones are `None` and get the spec's default.
struct Callbacks {
    initialize: Option<TypedFunc<(), ()>>,
    main: Option<TypedFunc<(u32, u32), u32>>,
    on_context_create: Option<TypedFunc<(u32, u32), ()>>,
    on_vm_start: Option<TypedFunc<(u32, u32), u32>>,
    on_configure: Option<TypedFunc<(u32, u32), u32>>,
    on_tick: Option<TypedFunc<u32, ()>>,
    on_queue_ready: Option<TypedFunc<(u32, u32), ()>>,
    on_request_headers: Option<TypedFunc<(u32, u32, u32), u32>>,
    on_request_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    on_request_trailers: Option<TypedFunc<(u32, u32), u32>>,
    on_response_headers: Option<TypedFunc<(u32, u32, u32), u32>>,
    on_response_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    on_response_trailers: Option<TypedFunc<(u32, u32), u32>>,
    on_http_call_response: Option<TypedFunc<HttpCallResponseParams, ()>>,
    on_done: Option<TypedFunc<u32, u32>>,
    on_log: Option<TypedFunc<u32, ()>>,
    on_delete: Option<TypedFunc<u32, ()>>,
}

/// Picks one callback out of an instance's callbacks.
type Pick<P, R> = fn(&Callbacks) -> Option<&TypedFunc<P, R>>;

/// A running instance: the store and the callbacks resolved in it.
struct Instance {
    store: Store<HostState>,
    callbacks: Callbacks,
    root_id: u32,
}

/// Which direction of a stream a step works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Request,
    Response,
}

/// One instance of a plugin, hosting a root context and any number of concurrent streams.
pub struct Vm {
    plugin: Plugin,
    label: String,
    log: LogCapture,
    queues: Arc<QueueInbox>,
    next_context_id: u32,
    live: Option<Instance>,
    /// Streams of a failed instance, kept so the embedder can finish them under the failure policy.
    detached: HashMap<u32, StreamState>,
    failure: Option<GuestTrap>,
    consecutive_failures: u32,
    total_failures: u32,
    reload_at: Option<u64>,
    /// Events raised by the host itself (failure policy), merged with the instance's on take.
    events: Vec<StreamEvent>,
    shut_down: bool,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("label", &self.label)
            .field("failed", &self.failure.is_some())
            .field("streams", &self.stream_ids().len())
            .finish_non_exhaustive()
    }
}

/// Turns a wasmtime error from a callback into a [`GuestTrap`].
fn classify(
    error: &wasmtime::Error,
    callback: &'static str,
    refused_growth: Option<(usize, usize)>,
    deadline: Duration,
) -> (TrapCause, String) {
    if let Some(host) = error.downcast_ref::<HostCallTrap>() {
        return (TrapCause::HostCall { call: host.call }, host.to_string());
    }
    if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return (
            TrapCause::Exit(exit.0),
            format!("the guest called proc_exit({})", exit.0),
        );
    }
    if let Some(Trap::Interrupt) = error.downcast_ref::<Trap>() {
        return (
            TrapCause::Deadline,
            format!("{callback} ran past its deadline of {deadline:?} and was interrupted"),
        );
    }
    if let Some((desired, limit)) = refused_growth {
        return (
            TrapCause::MemoryLimit,
            format!(
                "the guest asked for {desired} bytes of linear memory, past the limit of {limit} bytes"
            ),
        );
    }
    let message = match error.downcast_ref::<Trap>() {
        // wasmtime prefixes every trap with "wasm trap: "; the callback name already says it is one.
        Some(trap) => trap
            .to_string()
            .trim_start_matches("wasm trap: ")
            .to_owned(),
        None => format!("{error}"),
    };
    (TrapCause::Guest, message)
}

impl Instance {
    /// Runs one callback with the context frame set, translating a trap into a [`GuestTrap`].
    fn invoke<P: WasmParams, R: WasmResults>(
        &mut self,
        plugin: &Plugin,
        log: &LogCapture,
        callback: &'static str,
        context_id: u32,
        pick: Pick<P, R>,
        params: P,
    ) -> Result<Option<R>, GuestTrap> {
        // Borrowed, not cloned: cloning a typed function touches atomics shared by every VM of the engine.
        let Some(func) = pick(&self.callbacks) else {
            return Ok(None);
        };
        let mark = log.mark();
        {
            let state = self.store.data_mut();
            state.contexts.callback = callback;
            state.contexts.callback_context = context_id;
            state.contexts.effective = context_id;
            state.limits.refused_growth = None;
        }
        self.store
            .set_epoch_deadline(plugin.shared.deadline_ticks());
        let result = func.call(&mut self.store, params);
        let state = self.store.data_mut();
        state.contexts.callback = "none";
        state.contexts.callback_context = self.root_id;
        state.contexts.effective = self.root_id;
        match result {
            Ok(value) => Ok(Some(value)),
            Err(error) => {
                let refused = state
                    .limits
                    .refused_growth
                    .map(|desired| (desired, state.limits.memory_limit));
                let (cause, mut message) = classify(
                    &error,
                    callback,
                    refused,
                    plugin.shared.limits.callback_deadline,
                );
                log.flush_partial_lines();
                let stderr: Vec<String> = log
                    .since(mark)
                    .into_iter()
                    .filter(|record| {
                        record.source == LogSource::Stderr && !record.message.trim().is_empty()
                    })
                    .map(|record| record.message)
                    .collect();
                if !stderr.is_empty() {
                    let tail = stderr.len().saturating_sub(3);
                    message = format!(
                        "{message} (guest stderr: {})",
                        stderr.get(tail..).unwrap_or_default().join(" | ")
                    );
                }
                Err(GuestTrap {
                    callback,
                    context_id,
                    cause,
                    message,
                })
            }
        }
    }
}

impl Vm {
    /// Instantiates and starts a VM of `plugin`.
    pub(crate) fn start(plugin: Plugin) -> Result<Self, HarnessError> {
        let index = plugin.shared.next_vm_index();
        let label = format!("{}#{index}", plugin.name());
        let log = LogCapture::new(plugin.shared.limits.log_records, &label);
        let mut vm = Vm {
            plugin,
            label,
            log,
            queues: Arc::new(QueueInbox::default()),
            next_context_id: 1,
            live: None,
            detached: HashMap::new(),
            failure: None,
            consecutive_failures: 0,
            total_failures: 0,
            reload_at: None,
            events: Vec::new(),
            shut_down: false,
        };
        let instance = vm.instantiate()?;
        vm.live = Some(instance);
        Ok(vm)
    }

    fn alloc_context_id(&mut self) -> u32 {
        let id = self.next_context_id;
        self.next_context_id = self.next_context_id.checked_add(1).unwrap_or(1);
        id
    }

    fn now_nanos(&self) -> u64 {
        self.plugin.shared.clock.now_nanos()
    }

    /// A new instance with its start-up sequence run.
    fn instantiate(&mut self) -> Result<Instance, HarnessError> {
        let shared = Arc::clone(&self.plugin.shared);
        let root_id = self.alloc_context_id();
        let limits = GuestLimits {
            limits: StoreLimitsBuilder::new()
                .memory_size(shared.limits.memory_bytes)
                .instances(2)
                .build(),
            memory_limit: shared.limits.memory_bytes,
            refused_growth: None,
        };
        let state = HostState {
            wasi: crate::wasi::context_for(&shared),
            limits,
            plugin: Arc::clone(&shared),
            guest: GuestExports::default(),
            contexts: Contexts::new(root_id),
            log: self.log.clone(),
            ticks: TickTimer::default(),
            http: HttpCalls::default(),
            queues: Arc::clone(&self.queues),
            root_properties: Vec::new(),
            events: Vec::new(),
            scratch: Vec::new(),
        };
        let mut store = Store::new(&shared.engine, state);
        store.limiter(|state| &mut state.limits);
        store.set_epoch_deadline(shared.deadline_ticks());
        let instance = shared
            .instance_pre
            .instantiate(&mut store)
            .map_err(|error| HarnessError::Instantiate(format!("{error:#}")))?;

        let memory = instance.get_memory(&mut store, "memory");
        let allocate = shared
            .exports
            .allocator
            .and_then(|name| instance.get_typed_func::<u32, u32>(&mut store, name).ok());
        store.data_mut().guest = GuestExports { memory, allocate };
        let callbacks = Callbacks {
            initialize: typed(&instance, &mut store, "_initialize"),
            main: typed(&instance, &mut store, "main"),
            on_context_create: typed(&instance, &mut store, "proxy_on_context_create"),
            on_vm_start: typed(&instance, &mut store, "proxy_on_vm_start"),
            on_configure: typed(&instance, &mut store, "proxy_on_configure"),
            on_tick: typed(&instance, &mut store, "proxy_on_tick"),
            on_queue_ready: typed(&instance, &mut store, "proxy_on_queue_ready"),
            on_request_headers: typed(&instance, &mut store, "proxy_on_request_headers"),
            on_request_body: typed(&instance, &mut store, "proxy_on_request_body"),
            on_request_trailers: typed(&instance, &mut store, "proxy_on_request_trailers"),
            on_response_headers: typed(&instance, &mut store, "proxy_on_response_headers"),
            on_response_body: typed(&instance, &mut store, "proxy_on_response_body"),
            on_response_trailers: typed(&instance, &mut store, "proxy_on_response_trailers"),
            on_http_call_response: typed(&instance, &mut store, "proxy_on_http_call_response"),
            on_done: typed(&instance, &mut store, "proxy_on_done"),
            on_log: typed(&instance, &mut store, "proxy_on_log"),
            on_delete: typed(&instance, &mut store, "proxy_on_delete"),
        };

        let mut instance = Instance {
            store,
            callbacks,
            root_id,
        };
        let plugin = self.plugin.clone();
        let log = self.log.clone();
        let startup_mark = log.mark();
        let initialize: Pick<_, _> = |callbacks| callbacks.initialize.as_ref();
        instance.invoke(&plugin, &log, "_initialize", root_id, initialize, ())?;
        if shared.exports.has_initialize {
            let main: Pick<_, _> = |callbacks| callbacks.main.as_ref();
            instance.invoke(&plugin, &log, "main", root_id, main, (0, 0))?;
        }
        let create: Pick<_, _> = |callbacks| callbacks.on_context_create.as_ref();
        instance.invoke(
            &plugin,
            &log,
            "proxy_on_context_create",
            root_id,
            create,
            (root_id, 0),
        )?;
        let vm_config_len = len_u32(shared.settings.vm_config.len());
        let vm_start: Pick<_, _> = |callbacks| callbacks.on_vm_start.as_ref();
        if instance.invoke(
            &plugin,
            &log,
            "proxy_on_vm_start",
            root_id,
            vm_start,
            (root_id, vm_config_len),
        )? == Some(0)
        {
            return Err(HarnessError::VmStartRejected {
                logs: log.since(startup_mark),
            });
        }
        let plugin_config_len = len_u32(shared.settings.plugin_config.len());
        let configure: Pick<_, _> = |callbacks| callbacks.on_configure.as_ref();
        if instance.invoke(
            &plugin,
            &log,
            "proxy_on_configure",
            root_id,
            configure,
            (root_id, plugin_config_len),
        )? == Some(0)
        {
            return Err(HarnessError::ConfigureRejected {
                logs: log.since(startup_mark),
            });
        }
        Ok(instance)
    }
}

fn typed<P: WasmParams, R: WasmResults>(
    instance: &wasmtime::Instance,
    store: &mut Store<HostState>,
    name: &str,
) -> Option<TypedFunc<P, R>> {
    instance.get_typed_func::<P, R>(&mut *store, name).ok()
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Applies the failure policy to a stream of a failed VM; returns the event the embedder must see.
fn apply_failure_policy(policy: FailurePolicy, stream: &mut StreamState) -> Option<StreamEvent> {
    if stream.is_terminated() || stream.bypassed {
        return None;
    }
    let id = StreamId(stream.id);
    match policy {
        FailurePolicy::FailOpen => {
            stream.bypassed = true;
            let request_was_held = stream.request.paused;
            let response_was_held = stream.response.paused;
            stream.request.resume();
            stream.response.resume();
            if request_was_held {
                Some(StreamEvent::RequestResumed(id))
            } else if response_was_held {
                Some(StreamEvent::ResponseResumed(id))
            } else {
                None
            }
        }
        FailurePolicy::FailClosed | FailurePolicy::FailReload => {
            if stream.response.headers_released {
                stream.reset = true;
                return Some(StreamEvent::Reset(id));
            }
            stream.local_response = Some(LocalResponse {
                status: FAIL_CLOSED_STATUS,
                headers: Headers::new(),
                body: Vec::new(),
                details: "wasm_fail_stream".to_owned(),
                grpc_status: None,
            });
            stream.request.paused = false;
            stream.response.paused = false;
            Some(StreamEvent::LocalResponse(id))
        }
    }
}

fn direction(stream: &mut StreamState, side: Side) -> &mut crate::stream::Direction {
    match side {
        Side::Request => &mut stream.request,
        Side::Response => &mut stream.response,
    }
}

/// Which step of a direction is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Headers,
    Body,
    Trailers,
}

impl Vm {
    /// The plugin this VM belongs to.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    /// The VM's label in logs: plugin name and VM index.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The log records captured so far (the newest, up to the plugin's limit).
    pub fn logs(&self) -> Vec<LogRecord> {
        self.log.snapshot()
    }

    /// The log records captured so far, removing them.
    pub fn take_logs(&mut self) -> Vec<LogRecord> {
        self.log.take()
    }

    /// How many records were dropped because the buffer was full.
    pub fn dropped_log_records(&self) -> u64 {
        self.log.dropped()
    }

    /// Whether the VM is failed (a trap ended its instance and no reload replaced it yet).
    pub fn is_failed(&self) -> bool {
        self.failure.is_some()
    }

    /// The trap that failed the current instance, if it is failed.
    pub fn failure(&self) -> Option<&GuestTrap> {
        self.failure.as_ref()
    }

    /// How many times an instance of this VM failed (traps and failed reloads).
    pub fn failure_count(&self) -> u32 {
        self.total_failures
    }

    /// The streams the VM holds, live or left from a failed instance.
    pub fn stream_ids(&self) -> Vec<StreamId> {
        let live = self
            .live
            .iter()
            .flat_map(|instance| instance.store.data().contexts.streams.keys());
        let mut ids: Vec<StreamId> = live
            .chain(self.detached.keys())
            .map(|id| StreamId(*id))
            .collect();
        ids.sort_unstable();
        ids
    }

    /// A stream's state.
    pub fn stream_state(&self, id: StreamId) -> Option<&StreamState> {
        self.live
            .as_ref()
            .and_then(|instance| instance.store.data().contexts.streams.get(&id.0))
            .or_else(|| self.detached.get(&id.0))
    }

    fn stream_state_mut(&mut self, id: StreamId) -> Option<&mut StreamState> {
        match self
            .live
            .as_mut()
            .and_then(|instance| instance.store.data_mut().contexts.streams.get_mut(&id.0))
        {
            Some(stream) => Some(stream),
            None => self.detached.get_mut(&id.0),
        }
    }

    /// Changes to streams made outside their own steps (resumed, answered, reset), oldest first.
    pub fn take_stream_events(&mut self) -> Vec<StreamEvent> {
        let mut events = std::mem::take(&mut self.events);
        if let Some(instance) = self.live.as_mut() {
            events.append(&mut instance.store.data_mut().events);
        }
        events
    }

    /// A function called (from any thread) when another VM makes work for this one (a queue item for a
    /// queue it registered); the embedder then calls [`Vm::run_timers`] on the VM's own thread.
    pub fn set_waker(&self, waker: Option<Arc<dyn Fn() + Send + Sync>>) {
        self.queues.set_waker(waker);
    }

    pub(crate) fn host_log(&self, level: LogLevel, message: String) {
        self.log.push(level, message, LogSource::Host);
    }

    /// Ends the current instance after a trap and applies the failure policy to its streams.
    fn fail(&mut self, trap: GuestTrap, current_stream: Option<u32>) {
        self.host_log(LogLevel::Critical, format!("host: VM failed: {trap}"));
        let Some(instance) = self.live.take() else {
            return;
        };
        let mut state = instance.store.into_data();
        self.events.append(&mut state.events);
        let policy = self.plugin.failure_policy();
        for (id, mut stream) in state.contexts.streams.drain() {
            // Envoy answers the stream whose callback trapped with 503 even under fail-open; only the
            // others skip the filter.
            let stream_policy = if current_stream == Some(id) {
                FailurePolicy::FailClosed
            } else {
                policy
            };
            let event = apply_failure_policy(stream_policy, &mut stream);
            if let Some(event) = event
                && current_stream != Some(id)
            {
                self.events.push(event);
            }
            self.detached.insert(id, stream);
        }
        self.failure = Some(trap);
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.total_failures = self.total_failures.saturating_add(1);
        if policy == FailurePolicy::FailReload {
            let delay = self
                .plugin
                .shared
                .reload_backoff
                .delay(self.consecutive_failures);
            self.reload_at = Some(self.now_nanos().saturating_add(duration_nanos(delay)));
        }
    }

    /// Under `FailReload`, replaces a failed instance once its backoff has passed.
    fn maybe_reload(&mut self) {
        if self.live.is_some() || self.plugin.failure_policy() != FailurePolicy::FailReload {
            return;
        }
        let Some(at) = self.reload_at else { return };
        let now = self.now_nanos();
        if now < at {
            return;
        }
        match self.instantiate() {
            Ok(instance) => {
                self.live = Some(instance);
                self.failure = None;
                self.consecutive_failures = 0;
                self.reload_at = None;
                self.host_log(
                    LogLevel::Info,
                    "host: VM reloaded after a failure".to_owned(),
                );
            }
            Err(error) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.total_failures = self.total_failures.saturating_add(1);
                let delay = self
                    .plugin
                    .shared
                    .reload_backoff
                    .delay(self.consecutive_failures);
                self.reload_at = Some(now.saturating_add(duration_nanos(delay)));
                self.host_log(
                    LogLevel::Error,
                    format!("host: reloading the VM failed: {error}"),
                );
            }
        }
    }

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
        let mut stream = StreamState::new(id, info, now);
        let Some(instance) = self.live.as_mut() else {
            apply_failure_policy(self.plugin.failure_policy(), &mut stream);
            self.detached.insert(id, stream);
            return Ok(StreamId(id));
        };
        instance
            .store
            .data_mut()
            .contexts
            .streams
            .insert(id, stream);
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
        let stream = self
            .stream_state_mut(id)
            .ok_or(HarnessError::UnknownStream(id.0))?;
        let dir = direction(stream, side);
        let step = match (side, phase) {
            (Side::Request, Phase::Headers) => "request headers",
            (Side::Request, Phase::Body) => "request body",
            (Side::Request, Phase::Trailers) => "request trailers",
            (Side::Response, Phase::Headers) => "response headers",
            (Side::Response, Phase::Body) => "response body",
            (Side::Response, Phase::Trailers) => "response trailers",
        };
        let reason = match phase {
            Phase::Headers if dir.headers_seen => Some("came twice"),
            Phase::Body | Phase::Trailers if !dir.headers_seen => Some("came before the headers"),
            Phase::Body | Phase::Trailers if dir.end_seen => Some("came after the end of stream"),
            _ => None,
        };
        match reason {
            Some(reason) => Err(HarnessError::StreamOrder {
                id: id.0,
                step,
                reason,
            }),
            None => Ok(()),
        }
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
        self.step_target(id)?;
        self.check_order(id, side, phase)?;
        let count = len_u32(fields.len());
        let Some(stream) = self.stream_state_mut(id) else {
            return Err(HarnessError::UnknownStream(id.0));
        };
        let dir = direction(stream, side);
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
        if let Some(bypassed) = self.step_target(id)? {
            return Ok(if bypassed {
                Action::Continue
            } else {
                Action::Pause
            });
        }
        if self
            .stream_state(id)
            .is_some_and(StreamState::is_terminated)
        {
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

    /// Ends a stream: `proxy_on_done`, then (unless the plugin defers with `false` until it calls
    /// `proxy_done`) `proxy_on_log` and `proxy_on_delete`.
    ///
    /// # Errors
    /// [`HarnessError::UnknownStream`].
    pub fn finish_stream(&mut self, id: StreamId) -> Result<(), HarnessError> {
        if self.detached.remove(&id.0).is_some() {
            return Ok(());
        }
        let Some(instance) = self.live.as_mut() else {
            return Err(HarnessError::UnknownStream(id.0));
        };
        if !instance.store.data().contexts.streams.contains_key(&id.0) {
            return Err(HarnessError::UnknownStream(id.0));
        }
        let on_done: Pick<_, _> = |callbacks| callbacks.on_done.as_ref();
        match instance.invoke(
            &self.plugin,
            &self.log,
            "proxy_on_done",
            id.0,
            on_done,
            id.0,
        ) {
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

    /// `proxy_on_log` then `proxy_on_delete` for a stream, then forgets it.
    fn finish_context(&mut self, id: u32) {
        for (name, is_log) in [("proxy_on_log", true), ("proxy_on_delete", false)] {
            if let Some(stream) = self.stream_state_mut(StreamId(id)) {
                stream.logging = is_log;
            }
            let Some(instance) = self.live.as_mut() else {
                break;
            };
            let func: Pick<_, _> = if is_log {
                |callbacks| callbacks.on_log.as_ref()
            } else {
                |callbacks| callbacks.on_delete.as_ref()
            };
            if let Err(trap) = instance.invoke(&self.plugin, &self.log, name, id, func, id) {
                self.fail(trap, Some(id));
                break;
            }
        }
        if let Some(instance) = self.live.as_mut() {
            instance.store.data_mut().contexts.streams.remove(&id);
        }
        self.detached.remove(&id);
    }

    /// Finishes contexts whose plugin called `proxy_done` after deferring in `proxy_on_done`.
    fn settle(&mut self) {
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

    /// Whether [`Vm::shutdown`] has completed.
    pub fn is_shut_down(&self) -> bool {
        self.shut_down
    }

    fn delete_root(&mut self) {
        self.shut_down = true;
        let Some(mut instance) = self.live.take() else {
            return;
        };
        let root = instance.root_id;
        let on_delete: Pick<_, _> = |callbacks| callbacks.on_delete.as_ref();
        if let Err(trap) = instance.invoke(
            &self.plugin,
            &self.log,
            "proxy_on_delete",
            root,
            on_delete,
            root,
        ) {
            self.host_log(LogLevel::Error, format!("host: shutting down: {trap}"));
        }
        for stream in instance.store.data_mut().contexts.streams.values_mut() {
            stream.reset = true;
        }
    }

    /// Shuts the VM down: `proxy_on_done` for the root context, then `proxy_on_delete` (at once, or when the
    /// plugin calls `proxy_done` if it deferred). Returns whether the VM is fully shut down.
    ///
    /// # Errors
    /// [`HarnessError::VmShutDown`] when already shut down.
    pub fn shutdown(&mut self) -> Result<bool, HarnessError> {
        if self.shut_down {
            return Err(HarnessError::VmShutDown);
        }
        let Some(instance) = self.live.as_mut() else {
            // A failed VM has no guest left to tell; it is simply gone.
            self.shut_down = true;
            self.reload_at = None;
            self.detached.clear();
            return Ok(true);
        };
        let root = instance.root_id;
        let on_done: Pick<_, _> = |callbacks| callbacks.on_done.as_ref();
        match instance.invoke(
            &self.plugin,
            &self.log,
            "proxy_on_done",
            root,
            on_done,
            root,
        ) {
            Ok(Some(0)) => {
                instance.store.data_mut().contexts.root_awaiting_done = true;
                self.settle();
            }
            Ok(_) => self.delete_root(),
            Err(trap) => {
                self.host_log(LogLevel::Error, format!("host: shutting down: {trap}"));
                self.live = None;
                self.shut_down = true;
            }
        }
        Ok(self.shut_down)
    }

    /// The tick period the plugin set, if ticks are on.
    pub fn tick_period(&self) -> Option<Duration> {
        let period = self.live.as_ref()?.store.data().ticks.period_nanos;
        (period > 0).then(|| Duration::from_nanos(period))
    }

    /// When the next timer (tick, http-call response or timeout, queue notification) is due, in nanoseconds
    /// since the epoch on the plugin's clock.
    pub fn next_due_nanos(&self) -> Option<u64> {
        let state = self.live.as_ref()?.store.data();
        let calls = state
            .http
            .in_flight
            .values()
            .filter_map(|call| call.next_due());
        let queued = self.queues.has_ready().then(|| self.now_nanos());
        state
            .ticks
            .next_due
            .into_iter()
            .chain(calls)
            .chain(queued)
            .min()
    }

    /// When the next timer is due, for an embedder on the system clock that sleeps until then.
    pub fn next_deadline(&self) -> Option<SystemTime> {
        self.next_due_nanos()
            .map(|nanos| UNIX_EPOCH + Duration::from_nanos(nanos))
    }

    /// Fires everything due by the plugin clock's "now": ticks, mock http-call outcomes, timeouts, queue
    /// notifications. Traps fail the VM as usual.
    pub fn run_timers(&mut self) {
        let now = self.now_nanos();
        self.fire_due(now);
    }

    /// Moves the manual clock forward by `by`, firing every timer that falls due on the way at its own
    /// time, in order.
    ///
    /// # Errors
    /// [`HarnessError::NotManualClock`] when the plugin runs on the system clock.
    pub fn advance(&mut self, by: Duration) -> Result<(), HarnessError> {
        let manual = self
            .plugin
            .clock()
            .as_manual()
            .cloned()
            .ok_or(HarnessError::NotManualClock("Vm::advance"))?;
        let target = manual.now_nanos().saturating_add(duration_nanos(by));
        let mut rounds = 0usize;
        while let Some(due) = self.next_due_nanos().filter(|due| *due <= target) {
            manual.set_nanos(due);
            if !self.fire_due(manual.now_nanos()) {
                break;
            }
            rounds += 1;
            if rounds >= MAX_TIMER_ROUNDS {
                self.host_log(
                    LogLevel::Warn,
                    format!("host: stopped advancing after {rounds} timer rounds"),
                );
                break;
            }
        }
        manual.set_nanos(target);
        self.fire_due(target);
        Ok(())
    }

    /// Fires what is due at `now`; returns whether anything fired.
    pub(crate) fn fire_due(&mut self, now: u64) -> bool {
        let mut fired = false;
        for queue_id in self.queues.take_ready() {
            let Some(instance) = self.live.as_mut() else {
                break;
            };
            let root = instance.root_id;
            let func: Pick<_, _> = |callbacks| callbacks.on_queue_ready.as_ref();
            fired = true;
            if let Err(trap) = instance.invoke(
                &self.plugin,
                &self.log,
                "proxy_on_queue_ready",
                root,
                func,
                (root, queue_id),
            ) {
                self.fail(trap, None);
            }
            self.settle();
        }
        loop {
            let Some(instance) = self.live.as_mut() else {
                return fired;
            };
            let state = instance.store.data();
            let tick = state.ticks.next_due.filter(|due| *due <= now);
            let call = state
                .http
                .in_flight
                .iter()
                .filter_map(|(token, call)| {
                    call.next_due()
                        .filter(|due| *due <= now)
                        .map(|due| (due, *token))
                })
                .min();
            match (tick, call) {
                (None, None) => return fired,
                (Some(tick_due), Some((call_due, token))) if call_due < tick_due => {
                    self.fire_call(token)
                }
                (Some(tick_due), _) => self.fire_tick(tick_due, now),
                (None, Some((_, token))) => self.fire_call(token),
            }
            fired = true;
        }
    }

    fn fire_tick(&mut self, due: u64, now: u64) {
        let Some(instance) = self.live.as_mut() else {
            return;
        };
        let ticks = &mut instance.store.data_mut().ticks;
        let next = due.saturating_add(ticks.period_nanos);
        ticks.next_due = Some(if next > now {
            next
        } else {
            now.saturating_add(ticks.period_nanos)
        });
        let root = instance.root_id;
        let func: Pick<_, _> = |callbacks| callbacks.on_tick.as_ref();
        if let Err(trap) =
            instance.invoke(&self.plugin, &self.log, "proxy_on_tick", root, func, root)
        {
            self.fail(trap, None);
        }
        self.settle();
    }

    fn fire_call(&mut self, token: u32) {
        let Some(instance) = self.live.as_mut() else {
            return;
        };
        let http = &mut instance.store.data_mut().http;
        let Some(call) = http.in_flight.remove(&token) else {
            return;
        };
        http.for_embedder.retain(|pending| pending.token != token);
        let outcome = match call.mock_outcome {
            Some((due, outcome)) if call.deadline.is_none_or(|deadline| due <= deadline) => outcome,
            _ => Err(HttpCallFailure::Timeout),
        };
        self.deliver(token, outcome);
    }

    fn deliver(&mut self, token: u32, outcome: Result<HttpCallResponse, HttpCallFailure>) {
        let Some(instance) = self.live.as_mut() else {
            return;
        };
        let delivered = DeliveredResponse::from_outcome(outcome, self.plugin.shared.failed_calls);
        let counts = (
            len_u32(delivered.headers.len()),
            len_u32(delivered.body.len()),
            len_u32(delivered.trailers.len()),
        );
        instance.store.data_mut().http.delivering = Some(delivered);
        let root = instance.root_id;
        let func: Pick<_, _> = |callbacks| callbacks.on_http_call_response.as_ref();
        let result = instance.invoke(
            &self.plugin,
            &self.log,
            "proxy_on_http_call_response",
            root,
            func,
            (root, token, counts.0, counts.1, counts.2),
        );
        instance.store.data_mut().http.delivering = None;
        if let Err(trap) = result {
            self.fail(trap, None);
        }
        self.settle();
    }

    /// Http calls to embedder clusters dispatched since the last take; perform each and hand the outcome
    /// back with [`Vm::deliver_http_call_response`].
    pub fn take_pending_http_calls(&mut self) -> Vec<PendingHttpCall> {
        self.live
            .as_mut()
            .map(|instance| std::mem::take(&mut instance.store.data_mut().http.for_embedder))
            .unwrap_or_default()
    }

    /// How many http calls wait for an outcome.
    pub fn http_calls_in_flight(&self) -> usize {
        self.live
            .as_ref()
            .map_or(0, |instance| instance.store.data().http.in_flight.len())
    }

    /// Delivers the outcome of an http call to `proxy_on_http_call_response` (a failure arrives as a
    /// response without headers, as in Envoy).
    ///
    /// # Errors
    /// [`HarnessError::UnknownHttpCall`] when no call with this token waits (unknown, timed out, or the VM
    /// failed since).
    pub fn deliver_http_call_response(
        &mut self,
        token: u32,
        outcome: Result<HttpCallResponse, HttpCallFailure>,
    ) -> Result<(), HarnessError> {
        let Some(instance) = self.live.as_mut() else {
            return Err(HarnessError::UnknownHttpCall(token));
        };
        let http = &mut instance.store.data_mut().http;
        if http.in_flight.remove(&token).is_none() {
            return Err(HarnessError::UnknownHttpCall(token));
        }
        http.for_embedder.retain(|pending| pending.token != token);
        self.deliver(token, outcome);
        Ok(())
    }
}
