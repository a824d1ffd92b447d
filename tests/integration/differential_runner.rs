//! Runs one probe scenario through real Envoy and through the harness library, and reduces each run to
//! what is observable the same way on both: what the client got back, what the upstreams received, the
//! plugin's log lines, and its custom metrics.
//!
//! Both runs talk to real loopback servers. Envoy routes to the `upstream` cluster and makes http calls to
//! the `side` cluster itself. On the harness side this module plays the proxy: it sends the request headers
//! and body the filter let through to the same kind of upstream, feeds the real response back through the
//! response callbacks, and performs the filter's http calls (registered as embedder clusters) against the
//! side server, delivering the real responses.
//!
//! Only names starting `x-probe-` or `x-test-` (and `grpc-status` / `grpc-message`, what a local response
//! to a gRPC request becomes) count among headers: everything else (`date`, `server`, `x-request-id`,
//! `x-envoy-*`, ...) is the proxy's own business, not the filter's.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use host_harness::{
    Clock, FailedCalls, HttpCallFailure, HttpCallResponse, LogLevel, LogSource, ManualClock,
    MetricValue, Plugin, StreamId, StreamInfo, Vm,
};
use integration_tests::client::{self, HttpRequest, HttpResponse};
use integration_tests::envoy::{self, Envoy, FailurePolicy};
use integration_tests::upstream::{RecordedRequest, Reply, Upstream};
use serde::Serialize;

/// Bound on every network exchange of a scenario.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The `:authority` every scenario request carries, so both hosts see the same one.
pub const AUTHORITY: &str = "probe.test";

/// Envoy VMs that receive ticks with one worker: the main thread's and the worker's.
const TICKING_VMS: usize = 2;

/// The Envoy plugin name and VM id; the harness plugin gets the same.
const PLUGIN_NAME: &str = "probe";
const VM_ID: &str = "probe-vm";

/// Where `scripts/build-test-modules.sh` puts the third-party-style modules unless `TEST_MODULES_DIR`
/// says otherwise.
const DEFAULT_TEST_MODULES_DIR: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../build/test-modules");

/// A module built by `scripts/build-test-modules.sh` (`go_module.wasm`, `assemblyscript_module.wasm`).
/// `None` when it was not built and no Envoy is configured either (a plain `cargo test`); with
/// `ENVOY_BIN` set (as `make test` sets it) a missing module is an error, so the corpus cannot silently
/// drop out of the suite.
///
/// # Errors
/// The module is missing while `ENVOY_BIN` is set.
pub fn test_module(file: &str) -> anyhow::Result<Option<PathBuf>> {
    let dir = std::env::var_os("TEST_MODULES_DIR")
        .map_or_else(|| PathBuf::from(DEFAULT_TEST_MODULES_DIR), PathBuf::from);
    let path = dir.join(file);
    if path.is_file() {
        return Ok(Some(path));
    }
    if envoy::binary()?.is_some() {
        bail!(
            "{} is missing: run scripts/build-test-modules.sh (make test does)",
            path.display()
        );
    }
    eprintln!(
        "skipped: {} not built (scripts/build-test-modules.sh)",
        path.display()
    );
    Ok(None)
}

/// Which log lines are compared: the default drops the probe's root-context lines, which repeat once per
/// Envoy VM.
fn not_from_the_probe_root(message: &str) -> bool {
    !message.starts_with("probe root ")
}

/// One scenario: a module (the probe by default) and its configuration, the requests to send, and how
/// the loopback servers answer.
pub struct Scenario {
    /// The module both hosts run.
    pub module: PathBuf,
    /// The root id both hosts pass (empty by default, as in Envoy).
    pub root_id: String,
    /// Run the harness on the system clock instead of a manual one (for guests that sleep).
    pub system_clock: bool,
    /// Which plugin log lines count.
    pub log_filter: fn(&str) -> bool,
    /// The plugin configuration (the probe plan).
    pub plan: serde_json::Value,
    /// The VM configuration (its `on_vm_start` operations).
    pub vm_plan: Option<serde_json::Value>,
    /// Environment variables for the VM.
    pub env: Vec<(String, String)>,
    /// Requests, sent one after another.
    pub requests: Vec<HttpRequest>,
    /// How the routed upstream answers.
    pub upstream: Reply,
    /// How the http-call target answers.
    pub side: Reply,
    /// Point the `side` cluster at a port nothing listens on (connection refused).
    pub side_unreachable: bool,
    /// Failure policy on both hosts.
    pub failure_policy: FailurePolicy,
    /// Whether custom metrics are compared (not when root callbacks, which run once per Envoy VM, count).
    pub compare_metrics: bool,
    /// Something to wait for before the first request.
    pub settle: Settle,
}

/// What to wait for between start-up and the first request.
#[derive(Clone, Copy, Debug)]
pub enum Settle {
    /// Nothing.
    Nothing,
    /// Ticks: the plan stops its own ticks at tick `count` and, at that tick, calls the `witness` cluster
    /// (which never answers) with a timeout of two periods; a step in `on_http_call_response` logs its end.
    /// Envoy is waited on until every ticking VM's call has timed out: a later event on the same timers,
    /// so a tick that should not happen has happened by then. The harness clock moves `count + 2`
    /// periods, which fires the same timeout.
    Ticks {
        /// The tick period the plan sets.
        period: Duration,
        /// The tick at which the plan stops ticking.
        count: u32,
    },
}

impl Scenario {
    /// A scenario with `plan`, one `GET /probe` request, servers answering 200 with a fixed text (an echo
    /// would carry the proxy's own headers into the body), and nothing else.
    pub fn new(plan: serde_json::Value) -> Self {
        Self {
            module: PathBuf::from(env!("PROBE_WASM")),
            root_id: String::new(),
            system_clock: false,
            log_filter: not_from_the_probe_root,
            plan,
            vm_plan: None,
            env: Vec::new(),
            requests: vec![request("GET", "/probe")],
            upstream: Reply::text(200, "from upstream"),
            side: Reply::text(200, "from side"),
            side_unreachable: false,
            failure_policy: FailurePolicy::FailClosed,
            compare_metrics: true,
            settle: Settle::Nothing,
        }
    }

    /// A scenario for another module: `configuration` is its plugin configuration, verbatim when a JSON
    /// string, else as JSON text.
    pub fn module(module: &Path, configuration: serde_json::Value) -> Self {
        let mut scenario = Self::new(configuration);
        scenario.module = module.to_path_buf();
        scenario
    }

    /// Sets the root id on both hosts.
    pub fn root_id(mut self, root_id: &str) -> Self {
        self.root_id = root_id.to_owned();
        self
    }

    /// Runs the harness on the system clock (a guest that sleeps waits for real time, as in Envoy).
    pub fn system_clock(mut self) -> Self {
        self.system_clock = true;
        self
    }

    /// Compares only the plugin log lines `keep` accepts.
    pub fn logs_where(mut self, keep: fn(&str) -> bool) -> Self {
        self.log_filter = keep;
        self
    }

    /// The plugin configuration as both hosts receive it: a JSON string verbatim, anything else as JSON.
    fn configuration(&self) -> String {
        match &self.plan {
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        }
    }

    /// Replaces the requests.
    pub fn requests(mut self, requests: Vec<HttpRequest>) -> Self {
        self.requests = requests;
        self
    }

    /// Sets the routed upstream's reply.
    pub fn upstream(mut self, reply: Reply) -> Self {
        self.upstream = reply;
        self
    }

    /// Sets the http-call target's reply.
    pub fn side(mut self, reply: Reply) -> Self {
        self.side = reply;
        self
    }

    /// Points the `side` cluster at a closed port, so http calls to it are refused.
    pub fn side_unreachable(mut self) -> Self {
        self.side_unreachable = true;
        self
    }

    /// Sets the VM configuration.
    pub fn vm_plan(mut self, plan: serde_json::Value) -> Self {
        self.vm_plan = Some(plan);
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the failure policy.
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = policy;
        self
    }

    /// Leaves custom metrics out of the comparison.
    pub fn without_metrics(mut self) -> Self {
        self.compare_metrics = false;
        self
    }

    /// Waits for something before the first request.
    pub fn settle(mut self, settle: Settle) -> Self {
        self.settle = settle;
        self
    }

    /// Runs the scenario on both hosts and fails with a field-by-field report when they differ.
    /// Without `ENVOY_BIN` (outside CI) only the harness runs, so the plan is still exercised.
    ///
    /// # Errors
    /// A run that cannot be carried out, or observations that differ.
    pub fn assert_same(&self) -> anyhow::Result<Observation> {
        let harness = self.run_harness().context("harness run")?;
        let Some(binary) = envoy::binary()? else {
            return Ok(harness);
        };
        let envoy = self.run_envoy(binary, &harness).context("envoy run")?;
        if envoy != harness {
            bail!(
                "envoy and the harness differ:\n{}",
                describe_difference(&envoy, &harness)
            );
        }
        Ok(envoy)
    }

    /// Runs the scenario on the harness alone, for what cannot be compared line by line.
    ///
    /// # Errors
    /// A run that cannot be carried out.
    pub fn harness_only(&self) -> anyhow::Result<Observation> {
        self.run_harness().context("harness run")
    }

    fn run_envoy(&self, binary: PathBuf, harness: &Observation) -> anyhow::Result<Observation> {
        let servers = Servers::start(self)?;
        let mut builder = Envoy::builder(binary, &self.module)
            .plugin_name(PLUGIN_NAME)
            .root_id(&self.root_id)
            .vm_id(VM_ID)
            .plugin_configuration(self.configuration())
            .failure_policy(self.failure_policy)
            .cluster("upstream", servers.upstream.addr())
            .cluster("side", servers.side_addr)
            .cluster("witness", servers.witness.addr());
        if let Some(vm_plan) = &self.vm_plan {
            builder = builder.vm_configuration(vm_plan.to_string());
        }
        for (name, value) in &self.env {
            builder = builder.env(name, value);
        }
        let proxy = builder.start()?;
        if matches!(self.settle, Settle::Ticks { .. }) {
            // Ticks reach the main thread's VM and the worker's (the base VM gets none): wait for both
            // witnesses, the worker's being the VM that serves the requests.
            proxy.wait_for_wasm_logs(TICKING_VMS, TIMEOUT, |line| {
                line.message.starts_with("probe root ")
                    && line.message.contains("on_http_call_response#1 ")
            })?;
        }
        let mut exchanges = Vec::new();
        for request in &self.requests {
            exchanges.push(Exchange::from_response(client::send(
                proxy.addr(),
                request.clone(),
                TIMEOUT,
            )));
        }
        // on_log runs after the response went out; wait for as many lines as the harness logged, then
        // take whatever Envoy has (more or fewer lines show up in the comparison).
        let expected = harness.logs.len();
        let keep = self.log_filter;
        let _ =
            proxy.wait_for_wasm_logs(expected, Duration::from_secs(3), |line| keep(&line.message));
        let logs = proxy
            .wasm_logs()?
            .into_iter()
            .filter(|line| keep(&line.message))
            .map(|line| LogLine {
                level: line.level,
                message: line.message,
            })
            .collect();
        let metrics = if self.compare_metrics {
            proxy.custom_metrics()?
        } else {
            BTreeMap::new()
        };
        Ok(servers.observation(exchanges, logs, metrics))
    }

    fn run_harness(&self) -> anyhow::Result<Observation> {
        let servers = Servers::start(self)?;
        let clock = ManualClock::new();
        let mut builder = Plugin::builder()
            .module_file(&self.module)
            .name(PLUGIN_NAME)
            .root_id(self.root_id.clone())
            .vm_id(VM_ID)
            .plugin_config(self.configuration())
            .log_level(LogLevel::Trace)
            .failure_policy(harness_policy(self.failure_policy))
            .embedder_cluster("upstream")
            .embedder_cluster("side")
            .embedder_cluster("witness")
            // Envoy's router answers a timed-out or refused call itself (504 / 503); the harness can too.
            .failed_calls(FailedCalls::EnvoyReplies)
            .clock(if self.system_clock {
                Clock::System
            } else {
                Clock::Manual(clock.clone())
            });
        if let Some(vm_plan) = &self.vm_plan {
            builder = builder.vm_config(vm_plan.to_string());
        }
        for (name, value) in &self.env {
            builder = builder.env(name.clone(), value.clone());
        }
        let plugin = builder.build()?;
        let mut vm = plugin.start_vm()?;
        let clusters = Clusters {
            upstream: servers.upstream.addr(),
            side: servers.side_addr,
            witness: servers.witness.addr(),
        };
        if let Settle::Ticks { period, count } = self.settle {
            vm.advance(period * (count + 2))?;
            clusters.perform_http_calls(&mut vm)?;
        }
        vm.take_logs();
        let mut exchanges = Vec::new();
        let mut logs = Vec::new();
        for request in &self.requests {
            exchanges.push(clusters.exchange(&mut vm, request)?);
            // Envoy posts queue notifications to the owning VM's thread, so they run before the next
            // request arrives; the harness runs them when asked.
            vm.run_timers();
            clusters.perform_http_calls(&mut vm)?;
            // Envoy logs the guest's stdout and stderr lines like `proxy_log` messages (a panic message arrives
            // that way), so those count too; the host's own notes do not.
            logs.extend(
                vm.take_logs()
                    .into_iter()
                    .filter(|record| record.source != LogSource::Host)
                    .map(|record| LogLine {
                        level: envoy_level_name(record.level).to_owned(),
                        message: record.message,
                    }),
            );
        }
        logs.retain(|line| (self.log_filter)(&line.message));
        let metrics = if self.compare_metrics {
            plugin
                .metrics()
                .into_iter()
                .filter_map(|snapshot| match snapshot.value {
                    MetricValue::Counter(value) | MetricValue::Gauge(value) => {
                        Some((snapshot.name, i64::try_from(value).ok()?))
                    }
                    MetricValue::Histogram(_) => None,
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        Ok(servers.observation(exchanges, logs, metrics))
    }
}

/// The loopback servers of one run: the routed upstream, the http-call target, and the `witness` cluster
/// of [`Settle::Ticks`], which never answers (and is not compared: Envoy calls it once per ticking VM).
struct Servers {
    upstream: Upstream,
    side: Upstream,
    witness: Upstream,
    /// Where the `side` cluster points: the side server, or a closed port.
    side_addr: SocketAddr,
}

impl Servers {
    fn start(scenario: &Scenario) -> anyhow::Result<Self> {
        let side = Upstream::builder()
            .fallback(scenario.side.clone())
            .start()?;
        let side_addr = if scenario.side_unreachable {
            closed_port()?
        } else {
            side.addr()
        };
        Ok(Self {
            upstream: Upstream::builder()
                .fallback(scenario.upstream.clone())
                .start()?,
            side,
            side_addr,
            witness: Upstream::builder().fallback(Reply::Never).start()?,
        })
    }

    fn observation(
        &self,
        exchanges: Vec<Exchange>,
        logs: Vec<LogLine>,
        metrics: BTreeMap<String, i64>,
    ) -> Observation {
        let seen = |server: &Upstream| {
            server
                .requests()
                .iter()
                .map(SeenRequest::from_recorded)
                .collect()
        };
        // Calls a filter dispatches together travel on connections of their own, so the order they
        // reach the target in is not the host's to keep (Envoy's varies from run to run): they are
        // compared sorted.
        let mut side_requests: Vec<SeenRequest> = seen(&self.side);
        side_requests.sort();
        Observation {
            exchanges,
            upstream_requests: seen(&self.upstream),
            side_requests,
            logs,
            metrics,
        }
    }
}

/// An address on which nothing listens: a port the OS just handed out and that was closed again.
fn closed_port() -> anyhow::Result<SocketAddr> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("binding a throwaway port")?;
    Ok(listener.local_addr()?)
}

/// A scenario request: `method path` with `host: probe.test`.
pub fn request(method: &str, path: &str) -> HttpRequest {
    HttpRequest::new(method, path).header("host", AUTHORITY)
}

fn harness_policy(policy: FailurePolicy) -> host_harness::FailurePolicy {
    match policy {
        FailurePolicy::FailClosed => host_harness::FailurePolicy::FailClosed,
        FailurePolicy::FailOpen => host_harness::FailurePolicy::FailOpen,
        FailurePolicy::FailReload => host_harness::FailurePolicy::FailReload,
    }
}

/// Envoy's name for a proxy-wasm log level, as it appears in its log lines.
fn envoy_level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warning",
        LogLevel::Error => "error",
        LogLevel::Critical => "critical",
    }
}

/// Everything compared between the two hosts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Observation {
    /// What the client got for each request, in order.
    pub exchanges: Vec<Exchange>,
    /// What the routed upstream received.
    pub upstream_requests: Vec<SeenRequest>,
    /// What the http-call target received, sorted (see [`SeenRequest`]).
    pub side_requests: Vec<SeenRequest>,
    /// The plugin's log lines from HTTP contexts (root lines repeat once per Envoy VM), in order.
    pub logs: Vec<LogLine>,
    /// Custom metrics (counters and gauges), when the scenario compares them.
    pub metrics: BTreeMap<String, i64>,
}

impl Observation {
    /// The body the client saw for the first request (empty when no response arrived); `None` without requests.
    pub fn first_response_body(&self) -> Option<&str> {
        self.exchanges
            .first()
            .map(|exchange| exchange.body.as_str())
    }
}

/// One response as the client saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Exchange {
    /// Status code, or 0 when no response arrived.
    pub status: u16,
    /// The `x-probe-*` / `x-test-*` headers, sorted by name.
    pub headers: Vec<(String, String)>,
    /// The body as text.
    pub body: String,
}

impl Exchange {
    fn from_response(response: anyhow::Result<HttpResponse>) -> Self {
        match response {
            Ok(response) => Self {
                status: response.status,
                headers: probe_headers(&response.headers),
                body: response.body_text(),
            },
            Err(err) => Self {
                status: 0,
                headers: Vec::new(),
                body: format!("no response: {err:#}"),
            },
        }
    }
}

/// One request as a loopback server received it. Ordered field by field, so side requests can be put in
/// one order on both hosts.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SeenRequest {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The `x-probe-*` / `x-test-*` headers, sorted by name.
    pub headers: Vec<(String, String)>,
    /// Body as text.
    pub body: String,
}

impl SeenRequest {
    fn from_recorded(recorded: &RecordedRequest) -> Self {
        Self {
            method: recorded.method.clone(),
            path: recorded.path.clone(),
            headers: probe_headers(&recorded.headers),
            body: recorded.body_text(),
        }
    }
}

/// One plugin log line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Envoy's level name.
    pub level: String,
    /// The message.
    pub message: String,
}

/// The headers of a gRPC local reply, which the proxy makes from the filter's local response.
const GRPC_REPLY_HEADERS: [&str; 2] = ["grpc-status", "grpc-message"];

/// The headers that belong to the filter or the test, sorted by name (values keep their order).
fn probe_headers(headers: &[(String, String)]) -> Vec<(String, String)> {
    let mut kept: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.clone()))
        .filter(|(name, _)| {
            name.starts_with("x-probe-")
                || name.starts_with("x-test-")
                || GRPC_REPLY_HEADERS.contains(&name.as_str())
        })
        .collect();
    kept.sort_by_key(|(name, _)| natural_order(name));
    kept
}

/// `x-probe-10` after `x-probe-9`.
fn natural_order(name: &str) -> (String, u64) {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    let (stem, number) = name.split_at(name.len() - digits);
    (stem.to_owned(), number.parse().unwrap_or(0))
}

/// The loopback servers behind the harness's embedder clusters.
struct Clusters {
    upstream: SocketAddr,
    side: SocketAddr,
    witness: SocketAddr,
}

impl Clusters {
    fn addr(&self, cluster: &str) -> Option<SocketAddr> {
        match cluster {
            "upstream" => Some(self.upstream),
            "side" => Some(self.side),
            "witness" => Some(self.witness),
            _ => None,
        }
    }

    /// One request through the harness VM, the way Envoy would carry it.
    fn exchange(&self, vm: &mut Vm, request: &HttpRequest) -> anyhow::Result<Exchange> {
        // Envoy numbers connections itself; scenarios compare only the property's presence and size.
        let id = vm.create_stream(StreamInfo::new().protocol("HTTP/1.1").connection_id(1))?;
        let mut headers = vec![
            (":authority".to_owned(), AUTHORITY.to_owned()),
            (":path".to_owned(), request.path.clone()),
            (":method".to_owned(), request.method.clone()),
            (":scheme".to_owned(), "http".to_owned()),
        ];
        headers.extend(
            request
                .headers
                .iter()
                .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
                .map(|(name, value)| (name.to_ascii_lowercase(), value.clone())),
        );
        if !request.body.is_empty() {
            headers.push(("content-length".to_owned(), request.body.len().to_string()));
        }
        // Envoy's connection manager adds both before any filter runs; the id's value is never compared.
        headers.push(("x-forwarded-proto".to_owned(), "http".to_owned()));
        headers.push((
            "x-request-id".to_owned(),
            "00000000-0000-4000-8000-000000000000".to_owned(),
        ));
        vm.request_headers(id, headers.into(), request.body.is_empty())?;
        self.perform_http_calls(vm)?;
        let mut forward = Vec::new();
        if !request.body.is_empty() {
            forward = self.body(vm, id, Side::Request, &request.body)?;
        }
        forward.extend(vm.drain_request_body(id));
        let exchange = match answered(vm, id) {
            Some(exchange) => exchange,
            None if vm
                .stream_state(id)
                .is_some_and(|state| state.is_request_paused()) =>
            {
                Exchange {
                    status: 0,
                    headers: Vec::new(),
                    body: "no response: the request is still paused".to_owned(),
                }
            }
            None => self.forward_upstream(vm, id, forward)?,
        };
        vm.finish_stream(id)?;
        Ok(exchange)
    }

    fn forward_upstream(
        &self,
        vm: &mut Vm,
        id: StreamId,
        body: Vec<u8>,
    ) -> anyhow::Result<Exchange> {
        let state = vm.stream_state(id).context("stream vanished")?;
        let headers = state.request_headers().to_string_pairs();
        let upstream_request = pseudo_request(&headers, body)?;
        let response = client::send(self.upstream, upstream_request, TIMEOUT)?;
        let mut response_headers = vec![(":status".to_owned(), response.status.to_string())];
        response_headers.extend(response.headers.iter().cloned());
        vm.response_headers(id, response_headers.into(), response.body.is_empty())?;
        self.perform_http_calls(vm)?;
        let mut body = Vec::new();
        if !response.body.is_empty() {
            body = self.body(vm, id, Side::Response, &response.body)?;
        }
        body.extend(vm.drain_response_body(id));
        if let Some(exchange) = answered(vm, id) {
            return Ok(exchange);
        }
        let state = vm.stream_state(id).context("stream vanished")?;
        let headers = state.response_headers().to_string_pairs();
        let status = headers
            .iter()
            .find(|(name, _)| name == ":status")
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(0);
        Ok(Exchange {
            status,
            headers: probe_headers(&headers),
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// Runs a whole body through the body callbacks the way Envoy's HTTP/1 codec delivers a body with a
    /// content length: the bytes with end_of_stream false, then an empty chunk with end_of_stream true.
    fn body(&self, vm: &mut Vm, id: StreamId, side: Side, body: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut forward = Vec::new();
        for (chunk, end_of_stream) in [(body, false), (&[][..], true)] {
            if is_answered(vm, id) {
                break;
            }
            let step = match side {
                Side::Request => vm.request_body(id, chunk, end_of_stream)?,
                Side::Response => vm.response_body(id, chunk, end_of_stream)?,
            };
            forward.extend(step.forward);
            self.perform_http_calls(vm)?;
        }
        Ok(forward)
    }

    /// Performs every http call the VM queued for its embedder clusters, delivering real responses, until
    /// no call is left (a response callback may dispatch another).
    fn perform_http_calls(&self, vm: &mut Vm) -> anyhow::Result<()> {
        loop {
            let pending = vm.take_pending_http_calls();
            if pending.is_empty() {
                return Ok(());
            }
            for call in pending {
                let outcome = match self.addr(&call.request.cluster) {
                    Some(addr) => {
                        let headers = call.request.headers.to_string_pairs();
                        let timeout = call.request.timeout.unwrap_or(TIMEOUT).min(TIMEOUT);
                        match pseudo_request(&headers, call.request.body.clone())
                            .and_then(|request| client::send(addr, request, timeout))
                        {
                            Ok(response) => {
                                let mut delivered =
                                    HttpCallResponse::new(response.status).body(response.body);
                                for (name, value) in &response.headers {
                                    delivered = delivered.header(name, value);
                                }
                                Ok(delivered)
                            }
                            Err(err) => Err(call_failure(&err)),
                        }
                    }
                    None => Err(HttpCallFailure::Failed(format!(
                        "no cluster {}",
                        call.request.cluster
                    ))),
                };
                vm.deliver_http_call_response(call.token, outcome)?;
            }
        }
    }
}

/// Which direction a body travels.
#[derive(Clone, Copy)]
enum Side {
    Request,
    Response,
}

/// How a call the runner could not complete failed, in the harness's terms.
fn call_failure(err: &anyhow::Error) -> HttpCallFailure {
    let refused = |cause: &(dyn std::error::Error + 'static)| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    };
    if err
        .chain()
        .any(|cause| cause.is::<tokio::time::error::Elapsed>())
    {
        HttpCallFailure::Timeout
    } else if err.chain().any(refused) {
        HttpCallFailure::ConnectionFailure
    } else {
        HttpCallFailure::Failed(format!("{err:#}"))
    }
}

/// Turns pseudo-header form (`:method`, `:path`, `:authority`) into a request for the client.
fn pseudo_request(headers: &[(String, String)], body: Vec<u8>) -> anyhow::Result<HttpRequest> {
    let find = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let method = find(":method").context("no :method")?;
    let path = find(":path").context("no :path")?;
    let mut request = HttpRequest::new(&method, &path).body(body);
    if let Some(authority) = find(":authority") {
        request = request.header("host", &authority);
    }
    for (name, value) in headers.iter().filter(|(name, _)| {
        !name.starts_with(':') && name != "content-length" && name != "transfer-encoding"
    }) {
        request = request.header(name, value);
    }
    Ok(request)
}

fn is_answered(vm: &Vm, id: StreamId) -> bool {
    answered(vm, id).is_some()
}

/// The exchange when the filter (or the failure policy) answered or reset the stream itself.
fn answered(vm: &Vm, id: StreamId) -> Option<Exchange> {
    let state = vm.stream_state(id)?;
    if let Some(local) = state.local_response() {
        return Some(Exchange {
            status: u16::try_from(local.status).unwrap_or(0),
            headers: probe_headers(&local.headers.to_string_pairs()),
            body: String::from_utf8_lossy(&local.body).into_owned(),
        });
    }
    if state.is_reset() {
        return Some(Exchange {
            status: 0,
            headers: Vec::new(),
            body: "no response: reset".to_owned(),
        });
    }
    None
}

/// A readable account of how two observations differ, field by field.
fn describe_difference(envoy: &Observation, harness: &Observation) -> String {
    let envoy = serde_json::to_value(envoy).unwrap_or_default();
    let harness = serde_json::to_value(harness).unwrap_or_default();
    let mut out = String::new();
    for field in [
        "exchanges",
        "upstream_requests",
        "side_requests",
        "logs",
        "metrics",
    ] {
        if envoy[field] != harness[field] {
            let _ = writeln!(
                out,
                "{field}:\n  envoy:   {}\n  harness: {}",
                serde_json::to_string_pretty(&envoy[field])
                    .unwrap_or_default()
                    .replace('\n', "\n           "),
                serde_json::to_string_pretty(&harness[field])
                    .unwrap_or_default()
                    .replace('\n', "\n           "),
            );
        }
    }
    out
}
