//! A plugin: one compiled module plus its configuration, from which VMs are started.
//!
//! Everything expensive happens once, in [`PluginBuilder::build`]: the engine is configured, the module
//! compiled (or fetched from the on-disk cache), its exports checked, the linker filled from the import
//! table and turned into an `InstancePre`. Starting a VM then only instantiates; driving a stream does no
//! compilation or linker work at all. A [`Plugin`] is a cheap handle (`Arc`) that is `Send + Sync`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use wasmtime::{Engine, ExternType, FuncType, InstancePre, Linker, Module, ValType};

use crate::abi;
use crate::clock::Clock;
use crate::compile::EPOCH_TICK;
use crate::error::HarnessError;
use crate::http_call::{ClusterBackend, FailedCalls};
use crate::logs::LogLevel;
use crate::metrics::{MetricSnapshot, MetricValue, MetricsRegistry};
use crate::shared::SharedRegistry;
use crate::state::HostState;
use crate::vm::Vm;

/// A function the guest can call with `proxy_call_foreign_function`: arguments in, results or an error out.
pub type ForeignFunction = Arc<dyn Fn(&[u8]) -> Result<Vec<u8>, String> + Send + Sync>;

/// What a trap in one VM means for the streams it serves, as Envoy's `failure_policy` defines it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Streams of a failed VM are answered with 503 (reset once their response has started). Envoy's default.
    #[default]
    FailClosed,
    /// The filter is skipped: streams of a failed VM pass through unchanged.
    FailOpen,
    /// A fresh VM replaces the failed one when a stream arrives after a backoff; until then, fail closed.
    FailReload,
}

/// Backoff between reload attempts under [`FailurePolicy::FailReload`]: doubling from `initial` up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReloadBackoff {
    /// Wait after the first failure.
    pub initial: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Default for ReloadBackoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }
}

impl ReloadBackoff {
    /// The wait after `failures` consecutive failures (1 for the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        self.initial
            .saturating_mul(1u32 << doublings.min(31))
            .min(self.max)
    }
}

/// Resource limits for each VM; exceeding one traps the offending callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest linear memory a guest may grow to.
    pub memory_bytes: usize,
    /// Longest a single callback may run before it is interrupted.
    pub callback_deadline: Duration,
    /// Largest single buffer a host call reads from or hands to the guest.
    pub max_guest_buffer_bytes: usize,
    /// Most fields a header map from the guest may hold.
    pub max_header_fields: usize,
    /// Largest serialized header map the guest may leave behind.
    pub max_header_map_bytes: usize,
    /// Log records kept per VM (the oldest go first).
    pub log_records: usize,
    /// Http calls a VM may have waiting at once; beyond, `proxy_http_call` answers INTERNAL_FAILURE.
    pub max_http_calls_in_flight: usize,
    /// Properties the guest may set per context.
    pub max_guest_properties: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 256 * 1024 * 1024,
            callback_deadline: Duration::from_secs(2),
            max_guest_buffer_bytes: 64 * 1024 * 1024,
            max_header_fields: 1024,
            max_header_map_bytes: 1024 * 1024,
            log_records: 2048,
            max_http_calls_in_flight: 1024,
            max_guest_properties: 256,
        }
    }
}

/// The plugin-level settings host calls read.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) plugin_name: String,
    pub(crate) root_id: String,
    pub(crate) vm_id: String,
    pub(crate) vm_config: Vec<u8>,
    pub(crate) plugin_config: Vec<u8>,
    pub(crate) log_level: LogLevel,
    pub(crate) properties: Vec<(Vec<u8>, Vec<u8>)>,
    pub(crate) env: Vec<(String, String)>,
}

/// Which optional exports the module has, checked once at build.
#[derive(Debug, Default)]
pub(crate) struct ExportInfo {
    pub(crate) allocator: Option<&'static str>,
    pub(crate) has_initialize: bool,
    pub(crate) has_main: bool,
    pub(crate) callbacks: Vec<&'static str>,
}

/// What every VM of a plugin shares.
pub(crate) struct PluginShared {
    pub(crate) engine: Engine,
    pub(crate) instance_pre: InstancePre<HostState>,
    pub(crate) settings: Settings,
    pub(crate) limits: Limits,
    pub(crate) clock: Clock,
    pub(crate) clusters: HashMap<String, ClusterBackend>,
    pub(crate) foreign_functions: HashMap<String, ForeignFunction>,
    pub(crate) metrics: MetricsRegistry,
    pub(crate) shared: SharedRegistry,
    pub(crate) failure_policy: FailurePolicy,
    pub(crate) reload_backoff: ReloadBackoff,
    pub(crate) failed_calls: FailedCalls,
    pub(crate) exports: ExportInfo,
    pub(crate) inherit_stdio: bool,
    /// Whether the plugin's VMs start with the host-call trace on.
    pub(crate) trace_host_calls: bool,
    pub(crate) next_vm_index: AtomicUsize,
    /// The callback deadline in epoch ticks, worked out once: every callback sets it.
    deadline_ticks: u64,
}

/// A compiled, configured plugin; start VMs from it. Cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct Plugin {
    pub(crate) shared: Arc<PluginShared>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let settings = &self.shared.settings;
        f.debug_struct("Plugin")
            .field("name", &settings.plugin_name)
            .field("root_id", &settings.root_id)
            .field("vm_id", &settings.vm_id)
            .field("failure_policy", &self.shared.failure_policy)
            .finish_non_exhaustive()
    }
}

impl Plugin {
    /// Starts describing a plugin.
    pub fn builder() -> PluginBuilder {
        PluginBuilder::default()
    }

    /// Starts a VM: instantiates the module and runs `_initialize`, `proxy_on_context_create`,
    /// `proxy_on_vm_start` and `proxy_on_configure`.
    ///
    /// # Errors
    /// [`HarnessError::ConfigureRejected`] / [`HarnessError::VmStartRejected`] when the plugin refuses its
    /// configuration (with what it logged), [`HarnessError::Trap`] when start-up traps,
    /// [`HarnessError::Instantiate`] when instantiation fails.
    pub fn start_vm(&self) -> Result<Vm, HarnessError> {
        Vm::start(self.clone())
    }

    /// The plugin's name (`plugin_name` property).
    pub fn name(&self) -> &str {
        &self.shared.settings.plugin_name
    }

    /// The plugin's root id (`plugin_root_id` property).
    pub fn root_id(&self) -> &str {
        &self.shared.settings.root_id
    }

    /// The VM id that scopes shared data and queues.
    pub fn vm_id(&self) -> &str {
        &self.shared.settings.vm_id
    }

    /// The clock the plugin's VMs read.
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// The failure policy.
    pub fn failure_policy(&self) -> FailurePolicy {
        self.shared.failure_policy
    }

    /// Every metric the plugin's VMs defined, with its current value.
    pub fn metrics(&self) -> Vec<MetricSnapshot> {
        self.shared.metrics.snapshot()
    }

    /// The current value of the metric `name`.
    pub fn metric(&self, name: &str) -> Option<MetricValue> {
        self.shared.metrics.get(name)
    }

    /// The metrics registry, shared by the plugin's VMs.
    pub fn metrics_registry(&self) -> &MetricsRegistry {
        &self.shared.metrics
    }

    /// The shared-data and queue registry the plugin's VMs use.
    pub fn shared_registry(&self) -> &SharedRegistry {
        &self.shared.shared
    }

    /// The value and cas of a shared-data key as the plugin's VMs see it.
    pub fn shared_data(&self, key: impl AsRef<[u8]>) -> Option<(Vec<u8>, u32)> {
        self.shared
            .shared
            .get(&self.shared.settings.vm_id, key.as_ref())
    }

    /// The `proxy_on_*` callbacks the module exports.
    pub fn exported_callbacks(&self) -> &[&'static str] {
        &self.shared.exports.callbacks
    }
}

/// Where the module comes from.
#[derive(Clone, Debug)]
enum ModuleSource {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// Describes a plugin; [`PluginBuilder::build`] compiles it.
#[derive(Clone, Default)]
pub struct PluginBuilder {
    module: Option<ModuleSource>,
    plugin_config: Vec<u8>,
    vm_config: Vec<u8>,
    env: Vec<(String, String)>,
    host_env_keys: Vec<String>,
    name: Option<String>,
    root_id: Option<String>,
    vm_id: Option<String>,
    clock: Clock,
    log_level: Option<LogLevel>,
    clusters: HashMap<String, ClusterBackend>,
    foreign_functions: HashMap<String, ForeignFunction>,
    properties: Vec<(Vec<u8>, Vec<u8>)>,
    limits: Limits,
    failure_policy: FailurePolicy,
    reload_backoff: ReloadBackoff,
    failed_calls: FailedCalls,
    shared: Option<SharedRegistry>,
    cache_dir: Option<PathBuf>,
    inherit_stdio: bool,
    trace_host_calls: bool,
}

impl PluginBuilder {
    /// The module, from a `.wasm` (or `.wat`) file.
    pub fn module_file(mut self, path: impl AsRef<Path>) -> Self {
        self.module = Some(ModuleSource::File(path.as_ref().to_path_buf()));
        self
    }

    /// The module, from bytes (binary wasm, or WAT text).
    pub fn module_bytes(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.module = Some(ModuleSource::Bytes(bytes.into()));
        self
    }

    /// The plugin configuration (`PLUGIN_CONFIGURATION` buffer), passed verbatim.
    pub fn plugin_config(mut self, config: impl AsRef<[u8]>) -> Self {
        self.plugin_config = config.as_ref().to_vec();
        self
    }

    /// The VM configuration (`VM_CONFIGURATION` buffer), passed verbatim.
    pub fn vm_config(mut self, config: impl AsRef<[u8]>) -> Self {
        self.vm_config = config.as_ref().to_vec();
        self
    }

    /// An environment variable the guest sees (Envoy's `environment_variables.key_values`).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Host environment variables passed through by name (Envoy's `environment_variables.host_env_keys`);
    /// read when the plugin is built, absent ones skipped.
    pub fn host_env_keys<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.host_env_keys.extend(keys.into_iter().map(Into::into));
        self
    }

    /// The plugin's name (default `"plugin"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The root id (default empty, as in Envoy).
    pub fn root_id(mut self, root_id: impl Into<String>) -> Self {
        self.root_id = Some(root_id.into());
        self
    }

    /// The VM id scoping shared data and queues (default empty, as in Envoy).
    pub fn vm_id(mut self, vm_id: impl Into<String>) -> Self {
        self.vm_id = Some(vm_id.into());
        self
    }

    /// The clock VMs read (default the system clock).
    pub fn clock(mut self, clock: impl Into<Clock>) -> Self {
        self.clock = clock.into();
        self
    }

    /// The log level reported to the guest; records below it are dropped (default `Trace`: keep all).
    pub fn log_level(mut self, level: LogLevel) -> Self {
        self.log_level = Some(level);
        self
    }

    /// Registers a cluster for `proxy_http_call`.
    pub fn cluster(mut self, name: impl Into<String>, backend: impl Into<ClusterBackend>) -> Self {
        self.clusters.insert(name.into(), backend.into());
        self
    }

    /// Registers a cluster whose calls the embedder performs.
    pub fn embedder_cluster(self, name: impl Into<String>) -> Self {
        self.cluster(name, ClusterBackend::Embedder)
    }

    /// Registers a foreign function the guest can call by name.
    pub fn foreign_function(
        mut self,
        name: impl Into<String>,
        function: impl Fn(&[u8]) -> Result<Vec<u8>, String> + Send + Sync + 'static,
    ) -> Self {
        self.foreign_functions
            .insert(name.into(), Arc::new(function));
        self
    }

    /// A property every context can read, at a dotted path (`"node.id"`), with its encoded value.
    pub fn property(mut self, dotted_path: &str, value: impl Into<Vec<u8>>) -> Self {
        self.properties
            .push((dotted_path.replace('.', "\0").into_bytes(), value.into()));
        self
    }

    /// All resource limits at once.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The largest linear memory a VM may grow to.
    pub fn memory_limit(mut self, bytes: usize) -> Self {
        self.limits.memory_bytes = bytes;
        self
    }

    /// The longest a callback may run before it is interrupted and reported as a trap.
    pub fn callback_deadline(mut self, deadline: Duration) -> Self {
        self.limits.callback_deadline = deadline;
        self
    }

    /// What a trap means for the VM's streams (default [`FailurePolicy::FailClosed`]).
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = policy;
        self
    }

    /// The backoff between reloads under [`FailurePolicy::FailReload`].
    pub fn reload_backoff(mut self, backoff: ReloadBackoff) -> Self {
        self.reload_backoff = backoff;
        self
    }

    /// How timed-out and unreachable http calls reach the guest (default [`FailedCalls::Empty`]).
    pub fn failed_calls(mut self, style: FailedCalls) -> Self {
        self.failed_calls = style;
        self
    }

    /// Shares shared data and queues with other plugins holding the same registry (as one Envoy process).
    pub fn shared_registry(mut self, registry: SharedRegistry) -> Self {
        self.shared = Some(registry);
        self
    }

    /// Caches compiled modules in `dir`, keyed by module hash and engine settings.
    ///
    /// Only with the crate's `cache` feature (wasmtime's on-disk cache, which brings a TOML parser into
    /// the dependency tree). Within one process compiled modules are reused without it.
    #[cfg(feature = "cache")]
    pub fn cache_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cache_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Lets the guest write to the host's stdout/stderr instead of capturing its output as log records.
    pub fn inherit_guest_stdio(mut self, inherit: bool) -> Self {
        self.inherit_stdio = inherit;
        self
    }

    /// Records every host call the plugin's VMs make, for [`Vm::host_calls`](crate::Vm::host_calls): off
    /// by default, where it costs nothing; values and bodies are recorded by length only (see
    /// [`crate::trace`]). A VM can switch it with [`Vm::trace_host_calls`](crate::Vm::trace_host_calls).
    pub fn trace_host_calls(mut self, on: bool) -> Self {
        self.trace_host_calls = on;
        self
    }

    /// Compiles and checks the module.
    ///
    /// # Errors
    /// [`HarnessError::NoModule`], [`HarnessError::ReadModule`], [`HarnessError::Compile`],
    /// [`HarnessError::UnsupportedAbi`], [`HarnessError::MissingAbiMarker`], [`HarnessError::BadExport`],
    /// [`HarnessError::UnknownImport`], [`HarnessError::Config`], [`HarnessError::Engine`],
    /// [`HarnessError::Cache`].
    pub fn build(self) -> Result<Plugin, HarnessError> {
        self.check_limits()?;
        let bytes = match self.module.as_ref().ok_or(HarnessError::NoModule)? {
            ModuleSource::File(path) => {
                std::fs::read(path).map_err(|source| HarnessError::ReadModule {
                    path: path.clone(),
                    source,
                })?
            }
            ModuleSource::Bytes(bytes) => bytes.clone(),
        };
        let (engine, module) = crate::compile::compile(&bytes, self.cache_dir.as_deref())?;
        let exports = check_exports(&module)?;
        check_imports(&module)?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        crate::wasi::add_to_linker(&mut linker)
            .map_err(|error| HarnessError::Engine(format!("linking WASI: {error}")))?;
        abi::add_to_linker(&mut linker).map_err(|error| {
            HarnessError::Engine(format!("linking the proxy-wasm ABI: {error}"))
        })?;
        let instance_pre = linker
            .instantiate_pre(&module)
            .map_err(|error| HarnessError::Instantiate(format!("{error:#}")))?;

        let mut env = self.env;
        for key in &self.host_env_keys {
            if let Ok(value) = std::env::var(key) {
                env.push((key.clone(), value));
            }
        }
        let settings = Settings {
            plugin_name: self.name.unwrap_or_else(|| "plugin".to_owned()),
            root_id: self.root_id.unwrap_or_default(),
            vm_id: self.vm_id.unwrap_or_default(),
            vm_config: self.vm_config,
            plugin_config: self.plugin_config,
            log_level: self.log_level.unwrap_or(LogLevel::Trace),
            properties: self.properties,
            env,
        };
        let shared = PluginShared {
            engine,
            instance_pre,
            settings,
            limits: self.limits,
            clock: self.clock,
            clusters: self.clusters,
            foreign_functions: self.foreign_functions,
            metrics: MetricsRegistry::new(),
            shared: self.shared.unwrap_or_default(),
            failure_policy: self.failure_policy,
            reload_backoff: self.reload_backoff,
            failed_calls: self.failed_calls,
            exports,
            inherit_stdio: self.inherit_stdio,
            trace_host_calls: self.trace_host_calls,
            next_vm_index: AtomicUsize::new(0),
            deadline_ticks: deadline_ticks(self.limits.callback_deadline),
        };
        Ok(Plugin {
            shared: Arc::new(shared),
        })
    }

    fn check_limits(&self) -> Result<(), HarnessError> {
        let limits = &self.limits;
        let invalid = |setting: &'static str, reason: &str| {
            Err(HarnessError::Config {
                setting,
                reason: reason.to_owned(),
            })
        };
        if limits.callback_deadline.is_zero() {
            return invalid("callback_deadline", "must be longer than zero");
        }
        if limits.memory_bytes < 64 * 1024 {
            return invalid("memory_limit", "must allow at least one 64 KiB wasm page");
        }
        if limits.max_guest_buffer_bytes == 0
            || limits.max_header_fields == 0
            || limits.max_header_map_bytes == 0
        {
            return invalid("limits", "buffer and header limits must be above zero");
        }
        if self.reload_backoff.initial.is_zero()
            || self.reload_backoff.max < self.reload_backoff.initial
        {
            return invalid(
                "reload_backoff",
                "initial must be above zero and no longer than max",
            );
        }
        Ok(())
    }
}

impl PluginShared {
    /// A fresh index for a VM of this plugin, used in log labels.
    pub(crate) fn next_vm_index(&self) -> usize {
        self.next_vm_index.fetch_add(1, Ordering::Relaxed)
    }

    /// The callback deadline in epoch ticks.
    pub(crate) fn deadline_ticks(&self) -> u64 {
        self.deadline_ticks
    }
}

/// `deadline` in epoch ticks, rounded up, at least one.
fn deadline_ticks(deadline: Duration) -> u64 {
    let ticks = deadline.as_nanos().div_ceil(EPOCH_TICK.as_nanos());
    u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
}

/// A callback's expected signature: parameter count and result count, all `i32`.
struct Signature {
    name: &'static str,
    params: usize,
    results: usize,
}

const fn sig(name: &'static str, params: usize, results: usize) -> Signature {
    Signature {
        name,
        params,
        results,
    }
}

/// Every export this host calls, with its signature.
const CALLED_EXPORTS: [Signature; 22] = [
    sig("_initialize", 0, 0),
    sig("_start", 0, 0),
    sig("main", 2, 1),
    sig("proxy_on_memory_allocate", 1, 1),
    sig("malloc", 1, 1),
    sig("proxy_on_context_create", 2, 0),
    sig("proxy_on_vm_start", 2, 1),
    sig("proxy_on_configure", 2, 1),
    sig("proxy_on_tick", 1, 0),
    sig("proxy_on_queue_ready", 2, 0),
    sig("proxy_on_request_headers", 3, 1),
    sig("proxy_on_request_body", 3, 1),
    sig("proxy_on_request_trailers", 2, 1),
    sig("proxy_on_response_headers", 3, 1),
    sig("proxy_on_response_body", 3, 1),
    sig("proxy_on_response_trailers", 2, 1),
    sig("proxy_on_http_call_response", 5, 0),
    sig("proxy_on_done", 1, 1),
    sig("proxy_on_log", 1, 0),
    sig("proxy_on_delete", 1, 0),
    sig("proxy_on_foreign_function", 3, 0),
    sig("proxy_on_new_connection", 1, 1),
];

fn all_i32<'a>(mut types: impl Iterator<Item = ValType> + 'a) -> bool {
    types.all(|ty| matches!(ty, ValType::I32))
}

fn describe(ty: &FuncType) -> String {
    let params: Vec<String> = ty.params().map(|p| p.to_string()).collect();
    let results: Vec<String> = ty.results().map(|r| r.to_string()).collect();
    format!("({}) -> ({})", params.join(", "), results.join(", "))
}

fn check_exports(module: &Module) -> Result<ExportInfo, HarnessError> {
    let mut info = ExportInfo::default();
    let mut has_memory = false;
    // The ABI marker is checked first: a module built for another ABI version has other callback
    // signatures, and the version it declares is the one line its author needs.
    let abi_markers: Vec<String> = module
        .exports()
        .filter_map(|export| export.name().strip_prefix("proxy_abi_version_"))
        .map(|version| version.replace('_', "."))
        .collect();
    if !abi_markers
        .iter()
        .any(|version| version == "0.2.1" || version == "0.2.0")
    {
        return Err(match abi_markers.into_iter().next() {
            Some(other) => HarnessError::UnsupportedAbi(other),
            None => HarnessError::MissingAbiMarker,
        });
    }
    for export in module.exports() {
        let name = export.name();
        match export.ty() {
            ExternType::Memory(_) if name == "memory" => has_memory = true,
            ExternType::Func(ty) => {
                let Some(expected) = CALLED_EXPORTS
                    .iter()
                    .find(|signature| signature.name == name)
                else {
                    continue;
                };
                let matches = ty.params().len() == expected.params
                    && ty.results().len() == expected.results
                    && all_i32(ty.params())
                    && all_i32(ty.results());
                if !matches {
                    let wanted = format!(
                        "{} i32 parameter(s) and {} i32 result(s)",
                        expected.params, expected.results
                    );
                    return Err(HarnessError::BadExport {
                        name: name.to_owned(),
                        problem: format!(
                            "has type {} but this host calls it with {wanted}",
                            describe(&ty)
                        ),
                    });
                }
                match expected.name {
                    "_initialize" => info.has_initialize = true,
                    "_start" => {}
                    "main" => info.has_main = true,
                    "proxy_on_memory_allocate" => info.allocator = Some(expected.name),
                    "malloc" => {
                        info.allocator.get_or_insert(expected.name);
                    }
                    callback => info.callbacks.push(callback),
                }
            }
            _ => {}
        }
    }
    if !has_memory {
        return Err(HarnessError::BadExport {
            name: "memory".into(),
            problem: "missing: the module must export its linear memory".into(),
        });
    }
    if info.allocator.is_none() {
        return Err(HarnessError::BadExport {
            name: "proxy_on_memory_allocate".into(),
            problem: "missing (and no malloc either): the host cannot hand data to the module"
                .into(),
        });
    }
    Ok(info)
}

fn check_imports(module: &Module) -> Result<(), HarnessError> {
    for import in module.imports() {
        let known = match import.module() {
            abi::ENV => abi::host_import(import.name()).is_some(),
            crate::wasi::WASI | crate::wasi::WASI_UNSTABLE => crate::wasi::provides(import.name()),
            _ => false,
        };
        if !known {
            return Err(HarnessError::UnknownImport {
                module: import.module().to_owned(),
                name: import.name().to_owned(),
            });
        }
    }
    Ok(())
}
