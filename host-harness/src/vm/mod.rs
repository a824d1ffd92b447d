//! A VM: one instance of a plugin's module, with its root context and the HTTP streams it serves.
//!
//! A `Vm` is `Send` and meant to stay on one thread, as Envoy keeps one VM per worker: the embedder creates
//! streams, feeds them step by step (interleaving many streams is fine), runs due timers, and hands back the
//! responses of http calls it performed. Callbacks run to completion before a method returns; nothing is
//! delivered re-entrantly. A trap fails the VM: its streams get the plugin's failure policy, and under
//! `FailReload` a fresh instance replaces it after a backoff. Guest code never unwinds into the host.
//!
//! Layout: this file holds the instance (start-up, invoking callbacks, classifying traps) and the VM's
//! accessors and shutdown; `streams` drives HTTP streams, `timers` fires ticks and delivers http-call
//! outcomes, `failure` applies the failure policy and reloads.

mod failure;
mod streams;
mod timers;

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Store, StoreLimitsBuilder, Trap, TypedFunc, WasmParams, WasmResults};

use crate::error::{GuestTrap, HarnessError, HostCallTrap, TrapCause};
use crate::logs::{LogCapture, LogLevel, LogRecord, LogSource};
use crate::plugin::Plugin;
use crate::shared::QueueInbox;
use crate::state::{Contexts, GuestExports, GuestLimits, HostState, HttpCalls, IdMap, TickTimer};
use crate::stream::{StreamEvent, StreamId, StreamState};
use crate::trace::{HostCallRecord, TraceBuffer, Tracer};

/// Timer rounds one `advance` runs at most: a plugin that keeps making work for itself at the same instant
/// (a queue it refills from `proxy_on_queue_ready`, say) would otherwise never let virtual time move on.
pub(crate) const MAX_TIMER_ROUNDS: usize = 1_000_000;

/// The status Envoy answers with when a failed VM fails a stream closed.
const FAIL_CLOSED_STATUS: u32 = 503;

/// The details of the local response the failure policy sends for a failed VM, as Envoy names it.
pub(crate) const FAIL_STREAM_DETAILS: &str = "wasm_fail_stream";

/// `proxy_on_http_call_response(root_id, token, headers, body_size, trailers)`.
type HttpCallResponseParams = (u32, u32, u32, u32, u32);

/// The guest's callbacks, resolved once per instance; absent ones are `None` and get the spec's default.
struct Callbacks {
    initialize: Option<TypedFunc<(), ()>>,
    /// `_start`, run instead of `_initialize` when a module has only it (a WASI command).
    start: Option<TypedFunc<(), ()>>,
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

/// One instance of a plugin, hosting a root context and any number of concurrent streams.
pub struct Vm {
    plugin: Plugin,
    label: String,
    log: LogCapture,
    queues: Arc<QueueInbox>,
    next_context_id: u32,
    live: Option<Instance>,
    /// Streams of a failed instance, kept so the embedder can finish them under the failure policy.
    detached: IdMap<StreamState>,
    failure: Option<GuestTrap>,
    consecutive_failures: u32,
    total_failures: u32,
    reload_at: Option<u64>,
    /// Events raised by the host itself (failure policy), merged with the instance's on take.
    events: Vec<StreamEvent>,
    shut_down: bool,
    /// The host calls of every instance this VM has had, when traced.
    trace: TraceBuffer,
    /// Whether new instances trace host calls (the live one is switched with it).
    trace_enabled: bool,
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
    if let Some(exit) = error.downcast_ref::<crate::wasi::GuestExit>() {
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
            detached: IdMap::default(),
            failure: None,
            consecutive_failures: 0,
            total_failures: 0,
            reload_at: None,
            events: Vec::new(),
            shut_down: false,
            trace: TraceBuffer::default(),
            trace_enabled: false,
        };
        vm.trace_enabled = vm.plugin.shared.trace_host_calls;
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
            wasi: crate::wasi::WasiState::new(),
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
            local_encodes: Vec::new(),
            scratch: Vec::new(),
            trace: Tracer::new(self.trace_enabled, self.trace.clone()),
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
            start: typed(&instance, &mut store, "_start"),
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
        if shared.exports.has_initialize {
            let initialize: Pick<_, _> = |callbacks| callbacks.initialize.as_ref();
            instance.invoke(&plugin, &log, "_initialize", root_id, initialize, ())?;
            let main: Pick<_, _> = |callbacks| callbacks.main.as_ref();
            instance.invoke(&plugin, &log, "main", root_id, main, (0, 0))?;
        } else {
            // A module built as a WASI command (TinyGo's default, for one) sets itself up in `_start`;
            // Envoy runs it when there is no `_initialize`.
            let start: Pick<_, _> = |callbacks| callbacks.start.as_ref();
            instance.invoke(&plugin, &log, "_start", root_id, start, ())?;
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

    /// Turns the host-call trace on or off for this VM (and any instance that replaces this one); the
    /// plugin's [`PluginBuilder::trace_host_calls`](crate::PluginBuilder::trace_host_calls) sets where it
    /// starts. Records already taken stay as they are.
    pub fn trace_host_calls(&mut self, on: bool) {
        self.trace_enabled = on;
        if let Some(instance) = self.live.as_mut() {
            instance.store.data_mut().trace.enabled = on;
        }
    }

    /// The host calls the guest made since the last [`Vm::take_host_calls`], oldest first (see
    /// [`crate::trace`]); empty unless tracing is on.
    pub fn host_calls(&self) -> Vec<HostCallRecord> {
        self.trace.snapshot()
    }

    /// The host calls the guest made since the last take, removing them and resetting
    /// [`Vm::dropped_host_calls`].
    pub fn take_host_calls(&mut self) -> Vec<HostCallRecord> {
        self.trace.take()
    }

    /// How many host calls since the last take were not recorded because the trace held
    /// [`MAX_RECORDS`](crate::trace::MAX_RECORDS) already.
    pub fn dropped_host_calls(&self) -> u64 {
        self.trace.dropped()
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
}
