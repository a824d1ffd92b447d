//! The probe's configuration: which host calls to make in which callback.
//!
//! The plugin configuration (and, for `on_vm_start`, the VM configuration) is one JSON object whose keys
//! are callback names and whose values are lists of operations, each one host call:
//!
//! ```json
//! {"on_request_headers": [
//!     {"op": "get_header", "map": "request_headers", "name": ":path"},
//!     {"op": "http_call", "cluster": "side", "headers": [[":method", "GET"], [":path", "/"], [":authority", "side"]]},
//!     {"op": "pause"}
//!  ],
//!  "on_http_call_response": [{"op": "emit_results", "map": "request_headers"}, {"op": "resume_request"}]}
//! ```
//!
//! Every field is checked when the configuration is parsed, so a typo fails `on_configure` with a message
//! naming it instead of silently probing nothing.

use serde::Deserialize;

/// Operations to run, per callback.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Run by the root context on `proxy_on_vm_start`; read from the VM configuration.
    #[serde(default)]
    pub on_vm_start: Vec<Step>,
    /// Run by the root context on `proxy_on_configure`.
    #[serde(default)]
    pub on_configure: Vec<Step>,
    /// Run by the root context on every `proxy_on_tick`.
    #[serde(default)]
    pub on_tick: Vec<Step>,
    /// Run by the root context on `proxy_on_queue_ready`.
    #[serde(default)]
    pub on_queue_ready: Vec<Step>,
    /// Run by whichever context dispatched the call, on `proxy_on_http_call_response`.
    #[serde(default)]
    pub on_http_call_response: Vec<Step>,
    /// Run by each HTTP context on `proxy_on_request_headers`.
    #[serde(default)]
    pub on_request_headers: Vec<Step>,
    /// Run by each HTTP context on `proxy_on_request_body`.
    #[serde(default)]
    pub on_request_body: Vec<Step>,
    /// Run by each HTTP context on `proxy_on_response_headers`.
    #[serde(default)]
    pub on_response_headers: Vec<Step>,
    /// Run by each HTTP context on `proxy_on_response_body`.
    #[serde(default)]
    pub on_response_body: Vec<Step>,
    /// Run by each HTTP context on `proxy_on_log`.
    #[serde(default)]
    pub on_log: Vec<Step>,
    /// Run by each HTTP context on `proxy_on_done` (which then returns true).
    #[serde(default)]
    pub on_done: Vec<Step>,
}

impl Plan {
    /// Parses a configuration; empty input is an empty plan.
    ///
    /// # Errors
    /// The JSON error, which names the offending field or operation and its position.
    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        serde_json::from_slice(bytes)
    }
}

/// One operation and when to run it.
#[derive(Debug, Deserialize, PartialEq)]
pub struct Step {
    /// Run only on this invocation (1-based) of the callback in this context; every time when absent.
    #[serde(default)]
    pub when: Option<u32>,
    /// The host call to make.
    #[serde(flatten)]
    pub op: Op,
}

/// One host call with its arguments; results are named like the call.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// Renders the arguments the callback received (sizes, end_of_stream, queue id).
    CallbackArgs,
    /// `proxy_log`.
    Log {
        /// Log level name: trace, debug, info, warn, error, critical.
        level: Level,
        /// The message.
        message: String,
    },
    /// `proxy_get_log_level`.
    GetLogLevel,
    /// `proxy_get_current_time_nanoseconds`; renders only whether the time is after 2020.
    GetCurrentTime,
    /// `proxy_set_tick_period_milliseconds`.
    SetTickPeriod {
        /// Period in milliseconds; 0 stops ticks.
        ms: u32,
    },
    /// `proxy_get_header_map_value`.
    GetHeader {
        /// Which map.
        map: Map,
        /// Header name.
        name: String,
    },
    /// `proxy_get_header_map_value` made directly: every status renders, including ones the SDK's
    /// wrapper would panic on (Envoy: BAD_ARGUMENT for a map not available in this callback).
    GetHeaderRaw {
        /// Which map.
        map: Map,
        /// Header name.
        name: String,
    },
    /// `proxy_get_header_map_pairs`, optionally only names starting with `prefix`.
    GetHeaders {
        /// Which map.
        map: Map,
        /// Keep only names with this prefix.
        #[serde(default)]
        prefix: Option<String>,
    },
    /// `proxy_set_header_map_pairs`.
    SetHeaders {
        /// Which map.
        map: Map,
        /// The complete new map.
        headers: Vec<(String, String)>,
    },
    /// `proxy_add_header_map_value`.
    AddHeader {
        /// Which map.
        map: Map,
        /// Header name.
        name: String,
        /// Value to add.
        value: String,
    },
    /// `proxy_replace_header_map_value`.
    ReplaceHeader {
        /// Which map.
        map: Map,
        /// Header name.
        name: String,
        /// New value.
        value: String,
    },
    /// `proxy_remove_header_map_value`.
    RemoveHeader {
        /// Which map.
        map: Map,
        /// Header name.
        name: String,
    },
    /// `proxy_get_buffer_bytes`.
    GetBuffer {
        /// Which buffer.
        buffer: Buffer,
        /// First byte.
        #[serde(default)]
        start: usize,
        /// Most bytes to read.
        #[serde(default = "whole_buffer")]
        size: usize,
    },
    /// `proxy_set_buffer_bytes`, made directly so every status the host returns is rendered.
    SetBuffer {
        /// Which buffer.
        buffer: Buffer,
        /// Where the replaced range starts.
        start: usize,
        /// How many bytes are replaced.
        size: usize,
        /// The new bytes.
        data: String,
    },
    /// `proxy_get_property`.
    GetProperty {
        /// Path segments, e.g. `["request", "path"]`.
        path: Vec<String>,
        /// How to render the value.
        #[serde(default)]
        render: Render,
    },
    /// `proxy_set_property`.
    SetProperty {
        /// Path segments.
        path: Vec<String>,
        /// New value.
        value: String,
    },
    /// `proxy_get_shared_data`; the cas is remembered per key for `set_shared_data` with `cas: "last"`.
    GetSharedData {
        /// Key.
        key: String,
        /// Render the raw cas too (hosts number cas differently).
        #[serde(default)]
        show_cas: bool,
    },
    /// `proxy_set_shared_data`.
    SetSharedData {
        /// Key.
        key: String,
        /// Value.
        value: String,
        /// Compare-and-swap version.
        #[serde(default)]
        cas: Cas,
    },
    /// `proxy_register_shared_queue`; the id is remembered by name.
    RegisterQueue {
        /// Queue name.
        name: String,
    },
    /// `proxy_resolve_shared_queue`; the id is remembered by name.
    ResolveQueue {
        /// VM id the queue belongs to.
        vm_id: String,
        /// Queue name.
        name: String,
    },
    /// `proxy_enqueue_shared_queue`.
    Enqueue {
        /// Queue, by remembered name or raw id.
        queue: QueueRef,
        /// Value.
        value: String,
    },
    /// `proxy_dequeue_shared_queue`.
    Dequeue {
        /// Queue, by remembered name or raw id.
        queue: QueueRef,
    },
    /// `proxy_define_metric`; the id is remembered by name.
    DefineMetric {
        /// counter, gauge or histogram.
        kind: MetricKind,
        /// Metric name.
        name: String,
    },
    /// `proxy_increment_metric`.
    IncrementMetric {
        /// Metric, by remembered name or raw id.
        metric: MetricRef,
        /// Offset, may be negative.
        by: i64,
    },
    /// `proxy_record_metric`.
    RecordMetric {
        /// Metric, by remembered name or raw id.
        metric: MetricRef,
        /// Value.
        value: u64,
    },
    /// `proxy_get_metric`.
    GetMetric {
        /// Metric, by remembered name or raw id.
        metric: MetricRef,
    },
    /// `proxy_http_call`; the response runs `on_http_call_response` in this context.
    HttpCall {
        /// Cluster (upstream) name.
        cluster: String,
        /// Request headers, pseudo-headers included.
        headers: Vec<(String, String)>,
        /// Request body.
        #[serde(default)]
        body: Option<String>,
        /// Request trailers.
        #[serde(default)]
        trailers: Vec<(String, String)>,
        /// Timeout in milliseconds.
        #[serde(default = "default_timeout_ms")]
        timeout_ms: u64,
    },
    /// `proxy_send_local_response`.
    SendLocalResponse {
        /// Status code.
        status: u32,
        /// Extra response headers.
        #[serde(default)]
        headers: Vec<(String, String)>,
        /// Body; ignored when `results_body` is set.
        #[serde(default)]
        body: Option<String>,
        /// Use this context's results so far, one per line, as the body.
        #[serde(default)]
        results_body: bool,
    },
    /// `proxy_continue_stream(HttpRequest)`.
    ResumeRequest,
    /// `proxy_continue_stream(HttpResponse)`.
    ResumeResponse,
    /// `proxy_close_stream(HttpRequest)`: resets the stream.
    ResetRequest,
    /// `proxy_call_foreign_function`.
    CallForeignFunction {
        /// Function name.
        name: String,
        /// Argument bytes.
        #[serde(default)]
        argument: String,
    },
    /// Reads an environment variable through WASI `environ_get` (Envoy: `vm_config.environment_variables`).
    GetEnv {
        /// Variable name.
        name: String,
    },
    /// Adds one header per result so far, `x-probe-<n>` (root results: `x-probe-root-<n>`), to `map`.
    EmitResults {
        /// Which map receives the headers.
        map: Map,
        /// Whose results: this context's (default) or the root context's.
        #[serde(default)]
        journal: Journal,
    },
    /// Makes an HTTP callback return Pause (only before end of stream when `until_end_of_stream`).
    Pause {
        /// Pause only while the body is incomplete, so the host buffers it.
        #[serde(default)]
        until_end_of_stream: bool,
    },
    /// Makes `on_vm_start` / `on_configure` return false.
    Reject,
    /// Traps the VM (`unreachable`), for failure-policy tests.
    Trap,
}

fn whole_buffer() -> usize {
    usize::MAX
}

fn default_timeout_ms() -> u64 {
    5_000
}

/// Log levels by name.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Trace.
    Trace,
    /// Debug.
    Debug,
    /// Info.
    Info,
    /// Warn.
    Warn,
    /// Error.
    Error,
    /// Critical.
    Critical,
}

/// Header maps by name.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Map {
    /// Request headers.
    RequestHeaders,
    /// Request trailers.
    RequestTrailers,
    /// Response headers.
    ResponseHeaders,
    /// Response trailers.
    ResponseTrailers,
    /// Headers of an http call's response.
    HttpCallResponseHeaders,
    /// Trailers of an http call's response.
    HttpCallResponseTrailers,
}

/// Buffers by name.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Buffer {
    /// Request body.
    RequestBody,
    /// Response body.
    ResponseBody,
    /// Body of an http call's response.
    HttpCallResponseBody,
    /// VM configuration.
    VmConfiguration,
    /// Plugin configuration.
    PluginConfiguration,
}

/// How a property value is rendered.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Render {
    /// Text when printable, hex otherwise.
    #[default]
    Auto,
    /// Only the length (for values that differ per host or per run).
    Length,
    /// An 8-byte little-endian integer.
    U64,
}

/// The cas given to `set_shared_data`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Cas {
    /// Unconditional write (cas 0).
    #[default]
    None,
    /// This raw cas value.
    Value(u32),
    /// A symbolic cas.
    Named(NamedCas),
}

/// Symbolic cas values, resolved from the last `get_shared_data` of the same key in this VM.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum NamedCas {
    /// The cas the last read returned.
    Last,
    /// The last read's cas plus one: a version nobody holds.
    Stale,
}

/// A queue by remembered name or raw id.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum QueueRef {
    /// Raw queue id.
    Id(u32),
    /// Name given to `register_queue` or `resolve_queue`.
    Name(String),
}

/// A metric by remembered name or raw id.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum MetricRef {
    /// Raw metric id.
    Id(u32),
    /// Name given to `define_metric`.
    Name(String),
}

/// Metric kinds.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Counter.
    Counter,
    /// Gauge.
    Gauge,
    /// Histogram.
    Histogram,
}

/// Whose results `emit_results` reports.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Journal {
    /// The calling context's.
    #[default]
    Own,
    /// The root context's (same VM).
    Root,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn empty_configuration_is_an_empty_plan() {
        assert_eq!(Plan::parse(b"").unwrap(), Plan::default());
        assert_eq!(Plan::parse(b"  \n").unwrap(), Plan::default());
    }

    #[test]
    fn operations_parse_with_defaults_and_when() {
        let plan = Plan::parse(
            br#"{"on_tick": [{"op": "set_tick_period", "ms": 0, "when": 3}],
                 "on_request_headers": [{"op": "get_buffer", "buffer": "request_body"},
                                        {"op": "set_shared_data", "key": "k", "value": "v", "cas": "last"},
                                        {"op": "enqueue", "queue": "q", "value": "x"},
                                        {"op": "increment_metric", "metric": 7, "by": -1}]}"#,
        )
        .unwrap();
        assert_eq!(
            plan.on_tick,
            vec![Step {
                when: Some(3),
                op: Op::SetTickPeriod { ms: 0 }
            }]
        );
        assert_eq!(
            plan.on_request_headers[0].op,
            Op::GetBuffer {
                buffer: Buffer::RequestBody,
                start: 0,
                size: usize::MAX
            }
        );
        assert_eq!(
            plan.on_request_headers[1].op,
            Op::SetSharedData {
                key: "k".into(),
                value: "v".into(),
                cas: Cas::Named(NamedCas::Last)
            }
        );
        assert_eq!(
            plan.on_request_headers[2].op,
            Op::Enqueue {
                queue: QueueRef::Name("q".into()),
                value: "x".into()
            }
        );
        assert_eq!(
            plan.on_request_headers[3].op,
            Op::IncrementMetric {
                metric: MetricRef::Id(7),
                by: -1
            }
        );
    }

    #[test]
    fn unknown_operation_or_field_is_rejected_by_name() {
        let err = Plan::parse(br#"{"on_tick": [{"op": "launch_rocket"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("launch_rocket"), "{err}");
        let err = Plan::parse(br#"{"on_tik": []}"#).unwrap_err().to_string();
        assert!(err.contains("on_tik"), "{err}");
        let err = Plan::parse(br#"{"on_log": [{"op": "get_header", "map": "request_headers", "name": "a", "nmae": "b"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nmae"), "{err}");
    }
}
