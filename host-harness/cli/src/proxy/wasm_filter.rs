//! The proxy's filter seam implemented with the harness's proxy-wasm VM: one [`Plugin`] compiled once,
//! one [`Vm`] per worker, clusters served by the proxy (the harness's embedder backend), system clock.
//!
//! The VM applies the failure policy itself (fail closed, then reload after a backoff, as Envoy's
//! `FAIL_RELOAD`): a trapped filter turns into a 503 local reply for its streams, which reaches the proxy
//! like any local reply. Guest log records are forwarded to the proxy's logs under the target `filter`.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use super::config::ProxyConfig;
use super::filter::{
    BodyVerdict, CallOutcome, Direction, FilterEvent, FilterFactory, FilterFault, FilterMetric,
    FilterMetricValue, HeaderPart, LocalReply, OutgoingCall, ReplyOrigin, StreamId, StreamInfo,
    Verdict, WorkerFilter,
};
use host_harness::headers::Headers;
use host_harness::http_call::{HttpCallFailure, HttpCallResponse};
use host_harness::logs::{LogLevel, LogRecord};
use host_harness::metrics::{HISTOGRAM_BUCKET_BOUNDS, MetricValue};
use host_harness::plugin::{FailurePolicy, Plugin};
use host_harness::stream::{Action, BodyChunk, LocalResponse, StreamEvent, StreamState};
use host_harness::vm::Vm;
use host_harness::{HarnessError, stream};

/// Compiles the filter once and starts a VM per worker.
#[derive(Debug, Clone)]
pub struct WasmFilterFactory {
    plugin: Plugin,
}

impl WasmFilterFactory {
    /// Compiles the configured module with the plugin configuration, VM environment and clusters.
    ///
    /// # Errors
    /// The module cannot be read, does not compile, or is not a proxy-wasm module this host runs.
    pub fn load(config: &ProxyConfig) -> Result<Self, HarnessError> {
        let mut builder = Plugin::builder()
            .module_file(&config.filter)
            .plugin_config(&config.plugin_config)
            .root_id(config.root_id.clone())
            .vm_id(config.vm_id.clone())
            .vm_config(&config.vm_config)
            .name("credential-filter")
            .log_level(guest_log_level())
            .failure_policy(FailurePolicy::FailReload);
        for (key, value) in &config.vm_env {
            builder = builder.env(key.clone(), value.expose());
        }
        for cluster in config.clusters.keys() {
            builder = builder.embedder_cluster(cluster.clone());
        }
        Ok(Self {
            plugin: builder.build()?,
        })
    }

    /// The compiled plugin.
    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }
}

impl FilterFactory for WasmFilterFactory {
    fn create(&self, worker: usize) -> Result<Box<dyn WorkerFilter>, FilterFault> {
        let vm = self
            .plugin
            .start_vm()
            .map_err(|err| FilterFault(err.to_string()))?;
        let mut filter = WasmWorkerFilter { vm, worker };
        filter.forward_logs();
        Ok(Box::new(filter))
    }

    fn metrics(&self) -> Vec<FilterMetric> {
        self.plugin
            .metrics()
            .into_iter()
            .map(|snapshot| FilterMetric {
                name: snapshot.name,
                value: metric_value(snapshot.value),
            })
            .collect()
    }
}

/// The level reported to the guest: what the proxy's logs would show, so a filter never formats debug
/// lines that are then thrown away (that costs more than the rest of a request). Errors are always kept:
/// they carry the filter's own reason when it rejects its configuration.
fn guest_log_level() -> LogLevel {
    use tracing::level_filters::LevelFilter;
    match LevelFilter::current() {
        LevelFilter::TRACE => LogLevel::Trace,
        LevelFilter::DEBUG => LogLevel::Debug,
        LevelFilter::INFO => LogLevel::Info,
        LevelFilter::WARN => LogLevel::Warn,
        _ => LogLevel::Error,
    }
}

fn metric_value(value: MetricValue) -> FilterMetricValue {
    match value {
        MetricValue::Counter(total) => FilterMetricValue::Counter(total),
        MetricValue::Gauge(level) => {
            FilterMetricValue::Gauge(i64::try_from(level).unwrap_or(i64::MAX))
        }
        MetricValue::Histogram(histogram) => {
            let bounds = HISTOGRAM_BUCKET_BOUNDS
                .iter()
                .copied()
                .chain(std::iter::once(f64::INFINITY));
            let buckets = bounds.zip(histogram.buckets.iter().copied()).collect();
            FilterMetricValue::Histogram {
                buckets,
                count: histogram.count,
                sum: histogram.sum as f64,
            }
        }
    }
}

/// One worker's VM.
struct WasmWorkerFilter {
    vm: Vm,
    worker: usize,
}

impl WasmWorkerFilter {
    fn state(&self, stream: StreamId) -> Option<&StreamState> {
        self.vm.stream_state(stream::StreamId(stream))
    }

    /// What the stream's state says after a step, over what the callback returned: a local response or a
    /// reset made during the step (by the filter, or by the failure policy after a trap) wins.
    fn settle(&self, stream: StreamId, action: Action) -> Result<Verdict, FilterFault> {
        if let Some(state) = self.state(stream) {
            if let Some(response) = state.local_response() {
                return Ok(Verdict::Respond(local_reply(response)));
            }
            if state.is_reset() {
                return Ok(Verdict::Respond(LocalReply::reset()));
            }
        }
        Ok(match action {
            Action::Continue => Verdict::Continue,
            Action::Pause => Verdict::Pause,
        })
    }

    fn settle_body(&self, stream: StreamId, chunk: BodyChunk) -> Result<BodyVerdict, FilterFault> {
        let forward = Bytes::from(chunk.forward);
        Ok(match self.settle(stream, chunk.action)? {
            Verdict::Respond(reply) => BodyVerdict::Respond(reply),
            Verdict::Continue => BodyVerdict::Forward(forward),
            Verdict::Pause => BodyVerdict::Hold(forward),
        })
    }

    fn forward_logs(&mut self) {
        for record in self.vm.take_logs() {
            emit_log(self.worker, &record);
        }
    }
}

fn fault(error: HarnessError) -> FilterFault {
    FilterFault(error.to_string())
}

/// The filter's local response, or the failure policy's (which the proxy answers with its own error).
fn local_reply(response: &LocalResponse) -> LocalReply {
    if response.is_from_failure_policy() {
        return LocalReply::filter_failed();
    }
    LocalReply {
        origin: ReplyOrigin::Filter,
        status: u16::try_from(response.status).unwrap_or(500),
        headers: response.headers.clone(),
        body: Bytes::copy_from_slice(&response.body),
    }
}

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

impl WorkerFilter for WasmWorkerFilter {
    fn open_stream(&mut self, info: &StreamInfo) -> Result<StreamId, FilterFault> {
        let mut details = stream::StreamInfo::new()
            .source_address(info.client_address)
            .destination_address(info.local_address)
            .protocol("HTTP/1.1")
            .connection_id(info.connection_id);
        if let Some(caller) = info.caller {
            for (path, value) in caller.properties() {
                details = details.property(path, value);
            }
        }
        self.vm.create_stream(details).map(|id| id.0).map_err(fault)
    }

    fn request_headers(
        &mut self,
        stream: StreamId,
        headers: Headers,
        end_of_stream: bool,
    ) -> Result<Verdict, FilterFault> {
        let action = self
            .vm
            .request_headers(stream::StreamId(stream), headers, end_of_stream)
            .map_err(fault)?;
        self.settle(stream, action)
    }

    fn request_body(
        &mut self,
        stream: StreamId,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<BodyVerdict, FilterFault> {
        let chunk = self
            .vm
            .request_body(stream::StreamId(stream), chunk, end_of_stream)
            .map_err(fault)?;
        self.settle_body(stream, chunk)
    }

    fn request_trailers(
        &mut self,
        stream: StreamId,
        trailers: Headers,
    ) -> Result<Verdict, FilterFault> {
        let action = self
            .vm
            .request_trailers(stream::StreamId(stream), trailers)
            .map_err(fault)?;
        self.settle(stream, action)
    }

    fn response_headers(
        &mut self,
        stream: StreamId,
        headers: Headers,
        end_of_stream: bool,
    ) -> Result<Verdict, FilterFault> {
        let action = self
            .vm
            .response_headers(stream::StreamId(stream), headers, end_of_stream)
            .map_err(fault)?;
        self.settle(stream, action)
    }

    fn response_body(
        &mut self,
        stream: StreamId,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<BodyVerdict, FilterFault> {
        let chunk = self
            .vm
            .response_body(stream::StreamId(stream), chunk, end_of_stream)
            .map_err(fault)?;
        self.settle_body(stream, chunk)
    }

    fn response_trailers(
        &mut self,
        stream: StreamId,
        trailers: Headers,
    ) -> Result<Verdict, FilterFault> {
        let action = self
            .vm
            .response_trailers(stream::StreamId(stream), trailers)
            .map_err(fault)?;
        self.settle(stream, action)
    }

    fn headers(&self, stream: StreamId, part: HeaderPart) -> Option<&Headers> {
        let state = self.state(stream)?;
        Some(match part {
            HeaderPart::RequestHeaders => state.request_headers(),
            HeaderPart::RequestTrailers => state.request_trailers(),
            HeaderPart::ResponseHeaders => state.response_headers(),
            HeaderPart::ResponseTrailers => state.response_trailers(),
        })
    }

    fn take_body(&mut self, stream: StreamId, direction: Direction) -> Bytes {
        let id = stream::StreamId(stream);
        Bytes::from(match direction {
            Direction::Request => self.vm.drain_request_body(id),
            Direction::Response => self.vm.drain_response_body(id),
        })
    }

    fn close_stream(&mut self, stream: StreamId) {
        if let Err(err) = self.vm.finish_stream(stream::StreamId(stream)) {
            tracing::debug!(worker = self.worker, stream, error = %err, "finishing a filter stream");
        }
    }

    fn take_events(&mut self, into: &mut Vec<FilterEvent>) {
        for event in self.vm.take_stream_events() {
            let translated = match event {
                StreamEvent::RequestResumed(id) => FilterEvent::Resume {
                    stream: id.0,
                    direction: Direction::Request,
                },
                StreamEvent::ResponseResumed(id) => FilterEvent::Resume {
                    stream: id.0,
                    direction: Direction::Response,
                },
                StreamEvent::Reset(id) => FilterEvent::Close { stream: id.0 },
                StreamEvent::LocalResponse(id) => match self
                    .vm
                    .stream_state(id)
                    .and_then(StreamState::local_response)
                {
                    Some(response) => FilterEvent::Reply {
                        stream: id.0,
                        reply: local_reply(response),
                    },
                    None => continue,
                },
            };
            into.push(translated);
        }
        for pending in self.vm.take_pending_http_calls() {
            let request = pending.request;
            into.push(FilterEvent::HttpCall(OutgoingCall {
                token: pending.token,
                cluster: request.cluster,
                headers: request.headers,
                body: Bytes::from(request.body),
                timeout: request.timeout,
            }));
        }
        self.forward_logs();
    }

    fn complete_call(&mut self, token: u32, outcome: CallOutcome) {
        let outcome = match outcome {
            CallOutcome::Response {
                headers,
                body,
                trailers,
            } => Ok(HttpCallResponse {
                headers,
                body: body.to_vec(),
                trailers,
            }),
            CallOutcome::Failed(reason) => Err(HttpCallFailure::Failed(reason)),
            CallOutcome::TimedOut => Err(HttpCallFailure::Timeout),
        };
        if let Err(err) = self.vm.deliver_http_call_response(token, outcome) {
            // The VM gave up on the call first (its own timeout) or was replaced; nothing waits any more.
            tracing::debug!(worker = self.worker, token, error = %err, "late http call response dropped");
        }
    }

    fn next_deadline(&self) -> Option<SystemTime> {
        self.vm.next_deadline()
    }

    fn run_timers(&mut self) {
        self.vm.run_timers();
    }

    fn set_waker(&mut self, waker: Arc<dyn Fn() + Send + Sync>) {
        self.vm.set_waker(Some(waker));
    }
}
