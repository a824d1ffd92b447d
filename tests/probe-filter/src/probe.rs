//! Runs a callback's operations: each one host call, its result rendered, logged and kept in a journal.
//!
//! State that outlives one callback lives in [`Vm`], shared by the root context and the HTTP contexts it
//! creates (one VM is single-threaded): the plan, ids remembered by name (queues, metrics), the last cas
//! read per shared-data key, and the root context's journal. No borrow of it is held across a host call.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType};

use crate::outcome;
use crate::plan::{
    Buffer, Cas, Journal, Level, Map, MetricKind, MetricRef, NamedCas, Op, Plan, QueueRef, Render,
    Step,
};
use crate::raw;

/// Most journal lines kept per context; later results are still logged.
const JOURNAL_LIMIT: usize = 1_000;

/// Per-VM state shared by the root context and its HTTP contexts.
#[derive(Debug, Default)]
pub struct Vm {
    /// The plan from the plugin configuration (empty until `on_configure`).
    pub plan: RefCell<Rc<Plan>>,
    /// The root context's results, readable by HTTP contexts through `emit_results`.
    pub root_journal: RefCell<Vec<String>>,
    ids: RefCell<Ids>,
}

#[derive(Debug, Default)]
struct Ids {
    queues: HashMap<String, u32>,
    metrics: HashMap<String, u32>,
    last_cas: HashMap<String, Option<u32>>,
}

impl Vm {
    /// The current plan, cloned out of the cell so no borrow spans the callback.
    pub fn plan(&self) -> Rc<Plan> {
        Rc::clone(&self.plan.borrow())
    }

    fn queue_name(&self, id: u32) -> Option<String> {
        self.ids
            .borrow()
            .queues
            .iter()
            .find(|(_, known)| **known == id)
            .map(|(name, _)| name.clone())
    }
}

/// Which kind of context runs the operations (first word of every log line after `probe`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The root context.
    Root,
    /// An HTTP stream context.
    Http,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::Http => "http",
        }
    }
}

/// The arguments a callback received, for the `callback_args` operation.
#[derive(Clone, Copy, Debug)]
pub enum Args {
    /// `on_vm_start` / `on_configure`: size of the configuration.
    Configuration {
        /// Configuration size in bytes.
        size: usize,
    },
    /// `on_tick` / `on_log`: none.
    None,
    /// `on_queue_ready`.
    QueueReady {
        /// The queue that has data.
        queue_id: u32,
    },
    /// `on_request_headers` / `on_response_headers`.
    Headers {
        /// Number of headers.
        count: usize,
        /// Whether no body follows.
        end_of_stream: bool,
    },
    /// `on_request_body` / `on_response_body`.
    Body {
        /// Bytes buffered so far.
        size: usize,
        /// Whether this is the last chunk.
        end_of_stream: bool,
    },
    /// `on_http_call_response`.
    HttpCallResponse {
        /// Number of response headers (0: the call failed).
        headers: usize,
        /// Body size.
        body_size: usize,
        /// Number of trailers.
        trailers: usize,
    },
}

impl Args {
    fn end_of_stream(self) -> bool {
        match self {
            Self::Headers { end_of_stream, .. } | Self::Body { end_of_stream, .. } => end_of_stream,
            _ => true,
        }
    }
}

/// What the operations asked the callback to return.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Return Pause from an HTTP callback.
    pub pause: bool,
    /// Return false from `on_vm_start` / `on_configure`.
    pub reject: bool,
}

/// Counts invocations per callback in one context, for `when`.
#[derive(Debug, Default)]
pub struct Invocations(HashMap<&'static str, u32>);

impl Invocations {
    fn next(&mut self, callback: &'static str) -> u32 {
        let count = self.0.entry(callback).or_insert(0);
        *count = count.saturating_add(1);
        *count
    }
}

/// One callback invocation in one context.
pub struct Callback<'a> {
    /// Root or HTTP context.
    pub scope: Scope,
    /// Callback name, e.g. `on_request_headers`.
    pub name: &'static str,
    /// Its arguments.
    pub args: Args,
    /// The VM state.
    pub vm: &'a Vm,
    /// This context's journal.
    pub journal: &'a mut Vec<String>,
    /// This context's invocation counters.
    pub invocations: &'a mut Invocations,
}

impl Callback<'_> {
    /// Runs the steps that apply to this invocation and reports what the callback should return.
    pub fn run(self, steps: &[Step]) -> Effects {
        let Callback {
            scope,
            name,
            args,
            vm,
            journal,
            invocations,
        } = self;
        let invocation = invocations.next(name);
        let mut effects = Effects::default();
        for step in steps {
            if step.when.is_some_and(|when| when != invocation) {
                continue;
            }
            let result = match &step.op {
                Op::Pause {
                    until_end_of_stream,
                } => {
                    effects.pause |= !(*until_end_of_stream && args.end_of_stream());
                    continue;
                }
                Op::Reject => {
                    effects.reject = true;
                    continue;
                }
                Op::Trap => std::process::abort(),
                op => execute(op, scope, args, vm, journal),
            };
            let line = format!("{name}#{invocation} {}: {result}", op_name(&step.op));
            // Logging is itself a host call; its failure cannot be reported anywhere better than the journal.
            let _ = hostcalls::log(LogLevel::Info, &format!("probe {} {line}", scope.name()));
            if journal.len() < JOURNAL_LIMIT {
                journal.push(line);
            }
        }
        effects
    }
}

fn execute(op: &Op, scope: Scope, args: Args, vm: &Vm, journal: &[String]) -> String {
    match op {
        Op::CallbackArgs => render_args(args, vm),
        Op::Log { level, message } => outcome::unit(hostcalls::log(log_level(*level), message)),
        Op::GetLogLevel => match hostcalls::get_log_level() {
            Ok(level) => outcome::ok_with(&format!("{level:?}").to_ascii_lowercase()),
            Err(status) => outcome::status_name(status).to_owned(),
        },
        Op::GetCurrentTime => match hostcalls::get_current_time() {
            // 2020-01-01: hosts differ in the exact time, not in whether it is a plausible wall clock.
            Ok(time) => match time.duration_since(UNIX_EPOCH) {
                Ok(since) if since.as_secs() >= 1_577_836_800 => "ok after_2020".to_owned(),
                Ok(since) => outcome::ok_with(&format!("{}ns", since.as_nanos())),
                Err(_) => "ok before_1970".to_owned(),
            },
            Err(status) => outcome::status_name(status).to_owned(),
        },
        Op::SetTickPeriod { ms } => outcome::unit(hostcalls::set_tick_period(
            Duration::from_millis(u64::from(*ms)),
        )),
        Op::GetHeader { map, name } => match hostcalls::get_map_value_bytes(map_type(*map), name) {
            Ok(Some(value)) => outcome::ok_with(&outcome::bytes(&value)),
            Ok(None) => "not_found".to_owned(),
            Err(status) => outcome::status_name(status).to_owned(),
        },
        Op::GetHeaderRaw { map, name } => {
            match raw::get_header_map_value(map_type(*map) as u32, name) {
                (0, Some(value)) => outcome::ok_with(&outcome::bytes(&value)),
                (0, None) => "ok none".to_owned(),
                (status, _) => outcome::status_code_name(status).to_owned(),
            }
        }
        Op::GetHeaders { map, prefix } => match hostcalls::get_map_bytes(map_type(*map)) {
            Ok(pairs) => {
                let kept: Vec<(String, Vec<u8>)> = pairs
                    .into_iter()
                    .filter(|(name, _)| {
                        prefix
                            .as_deref()
                            .is_none_or(|prefix| name.starts_with(prefix))
                    })
                    .collect();
                outcome::ok_with(&outcome::pairs(&kept))
            }
            Err(status) => outcome::status_name(status).to_owned(),
        },
        Op::SetHeaders { map, headers } => {
            let pairs = headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_bytes()))
                .collect();
            outcome::unit(hostcalls::set_map_bytes(map_type(*map), pairs))
        }
        Op::AddHeader { map, name, value } => outcome::unit(hostcalls::add_map_value_bytes(
            map_type(*map),
            name,
            value.as_bytes(),
        )),
        Op::ReplaceHeader { map, name, value } => outcome::unit(hostcalls::set_map_value_bytes(
            map_type(*map),
            name,
            Some(value.as_bytes()),
        )),
        Op::RemoveHeader { map, name } => {
            outcome::unit(hostcalls::remove_map_value(map_type(*map), name))
        }
        Op::GetBuffer {
            buffer,
            start,
            size,
        } => match hostcalls::get_buffer(buffer_type(*buffer), *start, *size) {
            Ok(value) => outcome::ok_with(&outcome::optional_bytes(value.as_deref())),
            Err(status) => outcome::status_name(status).to_owned(),
        },
        Op::SetBuffer {
            buffer,
            start,
            size,
            data,
        } => outcome::status_code_name(raw::set_buffer_bytes(
            buffer_type(*buffer) as u32,
            *start,
            *size,
            data.as_bytes(),
        ))
        .to_owned(),
        Op::GetProperty { path, render } => {
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            match hostcalls::get_property(path) {
                Ok(Some(value)) => outcome::ok_with(&render_property(&value, *render)),
                // The SDK folds NOT_FOUND and "OK without data" into one; both mean no value.
                Ok(None) => "none".to_owned(),
                Err(status) => outcome::status_name(status).to_owned(),
            }
        }
        Op::SetProperty { path, value } => {
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            outcome::unit(hostcalls::set_property(path, Some(value.as_bytes())))
        }
        Op::GetSharedData { key, show_cas } => match hostcalls::get_shared_data(key) {
            Ok((None, None)) => "not_found".to_owned(),
            Ok((value, cas)) => {
                vm.ids.borrow_mut().last_cas.insert(key.clone(), cas);
                let rendered = outcome::optional_bytes(value.as_deref());
                match (show_cas, cas) {
                    (true, Some(cas)) => outcome::ok_with(&format!("{rendered} cas={cas}")),
                    (true, None) => outcome::ok_with(&format!("{rendered} cas=none")),
                    (false, _) => outcome::ok_with(&rendered),
                }
            }
            Err(status) => outcome::status_name(status).to_owned(),
        },
        Op::SetSharedData { key, value, cas } => {
            let last = vm.ids.borrow().last_cas.get(key).copied().flatten();
            let cas = match cas {
                Cas::None => None,
                Cas::Value(0) => None,
                Cas::Value(cas) => Some(*cas),
                Cas::Named(NamedCas::Last) => last,
                Cas::Named(NamedCas::Stale) => Some(last.map_or(1, |cas| cas.wrapping_add(1))),
            };
            outcome::unit(hostcalls::set_shared_data(key, Some(value.as_bytes()), cas))
        }
        Op::RegisterQueue { name } => match hostcalls::register_shared_queue(name) {
            Ok(id) => {
                vm.ids.borrow_mut().queues.insert(name.clone(), id);
                "ok".to_owned()
            }
            Err(status) => outcome::status_name(status).to_owned(),
        },
        Op::ResolveQueue { vm_id, name } => match hostcalls::resolve_shared_queue(vm_id, name) {
            Ok(Some(id)) => {
                let known = vm.ids.borrow_mut().queues.insert(name.clone(), id);
                match known {
                    Some(registered) if registered != id => "ok other_id".to_owned(),
                    _ => "ok".to_owned(),
                }
            }
            Ok(None) => "not_found".to_owned(),
            Err(status) => outcome::status_name(status).to_owned(),
        },
        Op::Enqueue { queue, value } => match queue_id(vm, queue) {
            Some(id) => outcome::unit(hostcalls::enqueue_shared_queue(id, Some(value.as_bytes()))),
            None => "probe_error unknown queue name".to_owned(),
        },
        Op::Dequeue { queue } => match queue_id(vm, queue) {
            Some(id) => match hostcalls::dequeue_shared_queue(id) {
                Ok(Some(value)) => outcome::ok_with(&outcome::bytes(&value)),
                // The SDK folds EMPTY and "OK without data" into one.
                Ok(None) => "empty".to_owned(),
                Err(status) => outcome::status_name(status).to_owned(),
            },
            None => "probe_error unknown queue name".to_owned(),
        },
        Op::DefineMetric { kind, name } => match hostcalls::define_metric(metric_type(*kind), name)
        {
            Ok(id) => {
                vm.ids.borrow_mut().metrics.insert(name.clone(), id);
                "ok".to_owned()
            }
            Err(status) => outcome::status_name(status).to_owned(),
        },
        Op::IncrementMetric { metric, by } => match metric_id(vm, metric) {
            Some(id) => outcome::unit(hostcalls::increment_metric(id, *by)),
            None => "probe_error unknown metric name".to_owned(),
        },
        Op::RecordMetric { metric, value } => match metric_id(vm, metric) {
            Some(id) => outcome::unit(hostcalls::record_metric(id, *value)),
            None => "probe_error unknown metric name".to_owned(),
        },
        Op::GetMetric { metric } => match metric_id(vm, metric) {
            Some(id) => match hostcalls::get_metric(id) {
                Ok(value) => outcome::ok_with(&value.to_string()),
                Err(status) => outcome::status_name(status).to_owned(),
            },
            None => "probe_error unknown metric name".to_owned(),
        },
        Op::HttpCall {
            cluster,
            headers,
            body,
            trailers,
            timeout_ms,
        } => {
            let headers = headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            let trailers = trailers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            let sent = hostcalls::dispatch_http_call(
                cluster,
                headers,
                body.as_deref().map(str::as_bytes),
                trailers,
                Duration::from_millis(*timeout_ms),
            );
            // Tokens are host-chosen numbers; only whether the call was accepted is comparable.
            match sent {
                Ok(_) => "ok".to_owned(),
                Err(status) => outcome::status_name(status).to_owned(),
            }
        }
        Op::SendLocalResponse {
            status,
            headers,
            body,
            results_body,
        } => {
            let headers = headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_str()))
                .collect();
            let body = if *results_body {
                Some(journal.join("\n"))
            } else {
                body.clone()
            };
            outcome::unit(hostcalls::send_http_response(
                *status,
                headers,
                body.as_deref().map(str::as_bytes),
            ))
        }
        Op::ResumeRequest => outcome::unit(hostcalls::resume_http_request()),
        Op::ResumeResponse => outcome::unit(hostcalls::resume_http_response()),
        Op::ResetRequest => outcome::unit(hostcalls::reset_http_request()),
        Op::CallForeignFunction { name, argument } => {
            match hostcalls::call_foreign_function(name, Some(argument.as_bytes())) {
                Ok(value) => outcome::ok_with(&outcome::optional_bytes(value.as_deref())),
                Err(status) => outcome::status_name(status).to_owned(),
            }
        }
        Op::GetEnv { name } => match std::env::var_os(name) {
            Some(value) => outcome::ok_with(&outcome::bytes(value.as_encoded_bytes())),
            None => "not_found".to_owned(),
        },
        Op::EmitResults {
            map,
            journal: whose,
        } => {
            let (lines, prefix) = match (whose, scope) {
                (Journal::Root, Scope::Http) => (vm.root_journal.borrow().clone(), "x-probe-root-"),
                (Journal::Root, Scope::Root) => (journal.to_vec(), "x-probe-root-"),
                (Journal::Own, _) => (journal.to_vec(), "x-probe-"),
            };
            emit(map_type(*map), prefix, &lines)
        }
        Op::Pause { .. } | Op::Reject | Op::Trap => "ok".to_owned(),
    }
}

fn emit(map: MapType, prefix: &str, lines: &[String]) -> String {
    for (index, line) in lines.iter().enumerate() {
        if let Err(status) = hostcalls::add_map_value(map, &format!("{prefix}{}", index + 1), line)
        {
            return outcome::status_name(status).to_owned();
        }
    }
    outcome::ok_with(&format!("count={}", lines.len()))
}

fn render_args(args: Args, vm: &Vm) -> String {
    let rendered = match args {
        Args::Configuration { size } => format!("size={size}"),
        Args::None => return "ok".to_owned(),
        Args::QueueReady { queue_id } => match vm.queue_name(queue_id) {
            Some(name) => format!("queue={}", outcome::bytes(name.as_bytes())),
            None => "queue=unknown".to_owned(),
        },
        Args::Headers {
            count,
            end_of_stream,
        } => format!("headers={count} end_of_stream={end_of_stream}"),
        Args::Body {
            size,
            end_of_stream,
        } => format!("body_size={size} end_of_stream={end_of_stream}"),
        Args::HttpCallResponse {
            headers,
            body_size,
            trailers,
        } => format!("headers={headers} body_size={body_size} trailers={trailers}"),
    };
    outcome::ok_with(&rendered)
}

fn render_property(value: &[u8], render: Render) -> String {
    match render {
        Render::Auto => outcome::bytes(value),
        Render::Length => format!("len={}", value.len()),
        Render::U64 => match <[u8; 8]>::try_from(value) {
            Ok(raw) => u64::from_le_bytes(raw).to_string(),
            Err(_) => format!("not_u64 len={}", value.len()),
        },
    }
}

fn queue_id(vm: &Vm, queue: &QueueRef) -> Option<u32> {
    match queue {
        QueueRef::Id(id) => Some(*id),
        QueueRef::Name(name) => vm.ids.borrow().queues.get(name).copied(),
    }
}

fn metric_id(vm: &Vm, metric: &MetricRef) -> Option<u32> {
    match metric {
        MetricRef::Id(id) => Some(*id),
        MetricRef::Name(name) => vm.ids.borrow().metrics.get(name).copied(),
    }
}

/// The operation's name as written in the configuration.
pub fn op_name(op: &Op) -> &'static str {
    match op {
        Op::CallbackArgs => "callback_args",
        Op::Log { .. } => "log",
        Op::GetLogLevel => "get_log_level",
        Op::GetCurrentTime => "get_current_time",
        Op::SetTickPeriod { .. } => "set_tick_period",
        Op::GetHeader { .. } => "get_header",
        Op::GetHeaderRaw { .. } => "get_header_raw",
        Op::GetHeaders { .. } => "get_headers",
        Op::SetHeaders { .. } => "set_headers",
        Op::AddHeader { .. } => "add_header",
        Op::ReplaceHeader { .. } => "replace_header",
        Op::RemoveHeader { .. } => "remove_header",
        Op::GetBuffer { .. } => "get_buffer",
        Op::SetBuffer { .. } => "set_buffer",
        Op::GetProperty { .. } => "get_property",
        Op::SetProperty { .. } => "set_property",
        Op::GetSharedData { .. } => "get_shared_data",
        Op::SetSharedData { .. } => "set_shared_data",
        Op::RegisterQueue { .. } => "register_queue",
        Op::ResolveQueue { .. } => "resolve_queue",
        Op::Enqueue { .. } => "enqueue",
        Op::Dequeue { .. } => "dequeue",
        Op::DefineMetric { .. } => "define_metric",
        Op::IncrementMetric { .. } => "increment_metric",
        Op::RecordMetric { .. } => "record_metric",
        Op::GetMetric { .. } => "get_metric",
        Op::HttpCall { .. } => "http_call",
        Op::SendLocalResponse { .. } => "send_local_response",
        Op::ResumeRequest => "resume_request",
        Op::ResumeResponse => "resume_response",
        Op::ResetRequest => "reset_request",
        Op::CallForeignFunction { .. } => "call_foreign_function",
        Op::GetEnv { .. } => "get_env",
        Op::EmitResults { .. } => "emit_results",
        Op::Pause { .. } => "pause",
        Op::Reject => "reject",
        Op::Trap => "trap",
    }
}

fn log_level(level: Level) -> LogLevel {
    match level {
        Level::Trace => LogLevel::Trace,
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
        Level::Critical => LogLevel::Critical,
    }
}

fn map_type(map: Map) -> MapType {
    match map {
        Map::RequestHeaders => MapType::HttpRequestHeaders,
        Map::RequestTrailers => MapType::HttpRequestTrailers,
        Map::ResponseHeaders => MapType::HttpResponseHeaders,
        Map::ResponseTrailers => MapType::HttpResponseTrailers,
        Map::HttpCallResponseHeaders => MapType::HttpCallResponseHeaders,
        Map::HttpCallResponseTrailers => MapType::HttpCallResponseTrailers,
    }
}

fn buffer_type(buffer: Buffer) -> BufferType {
    match buffer {
        Buffer::RequestBody => BufferType::HttpRequestBody,
        Buffer::ResponseBody => BufferType::HttpResponseBody,
        Buffer::HttpCallResponseBody => BufferType::HttpCallResponseBody,
        Buffer::VmConfiguration => BufferType::VmConfiguration,
        Buffer::PluginConfiguration => BufferType::PluginConfiguration,
    }
}

fn metric_type(kind: MetricKind) -> MetricType {
    match kind {
        MetricKind::Counter => MetricType::Counter,
        MetricKind::Gauge => MetricType::Gauge,
        MetricKind::Histogram => MetricType::Histogram,
    }
}

/// Reports a failure of the probe itself (bad configuration) as an error log line.
pub fn log_probe_error(message: &str) {
    let _ = hostcalls::log(LogLevel::Error, &format!("probe error: {message}"));
}
