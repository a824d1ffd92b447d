//! Proxy configuration: the TOML file, command-line overrides, defaults and validation.
//!
//! Loading turns every bad value into a [`ConfigError`] that names the field (or flag) and the value, so
//! `serve` can exit with one clear line before binding anything. Values that may carry credentials (the
//! VM environment, the plugin configuration) are kept out of `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use serde::Deserialize;

use super::identity::{IdentityConfig, IdentityFile, IdentityOverrides};
use super::product::{
    DEFAULT_PLUGIN_NAME, DEFAULT_UPSTREAM, DefaultCredential, ErrorShape, KeyTemplate,
    ReadinessGate,
};

/// Cluster name under which the main upstream is also reachable for `dispatch_http_call`.
pub const UPSTREAM_CLUSTER: &str = "upstream";

/// The workspace's release build of the filter, used when no filter path is configured.
pub fn default_filter_path() -> PathBuf {
    // This crate sits at `host-harness/cli/` in the workspace.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap_or_else(|| Path::new("."))
        .join("target/wasm/filter.wasm")
}

/// A configuration value that must never be printed (tokens, passwords in the VM environment).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value that must stay out of logs and `Debug` output.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for handing to the VM.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// An HTTP or HTTPS origin requests are sent to: the main upstream or a named cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// Host and optional port; becomes the upstream `Host` header.
    pub authority: Authority,
    /// Path prefix put in front of every request path; empty when the URL has no path.
    pub base_path: String,
}

impl Target {
    /// Whether connections to this target use TLS.
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// The absolute URI for a request path (`path_and_query` starts with `/`).
    ///
    /// # Errors
    /// Fails when the joined path is not a valid URI path.
    pub fn uri_for(&self, path_and_query: &str) -> Result<http::Uri, http::Error> {
        let builder = http::Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone());
        if self.base_path.is_empty() {
            builder.path_and_query(path_and_query).build()
        } else {
            let joined = PathAndQuery::try_from(format!("{}{}", self.base_path, path_and_query))?;
            builder.path_and_query(joined).build()
        }
    }
}

impl FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let uri: http::Uri = text.parse().map_err(|err| format!("not a URL: {err}"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::HTTP,
            Some("https") => Scheme::HTTPS,
            Some(other) => {
                return Err(format!(
                    "scheme {other:?} is not supported (use http or https)"
                ));
            }
            None => return Err("missing scheme (use http:// or https://)".to_owned()),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| "missing host".to_owned())?;
        if authority.as_str().contains('@') {
            return Err("user information in the URL is not supported".to_owned());
        }
        if authority.host().is_empty() {
            return Err("missing host".to_owned());
        }
        if uri.query().is_some() {
            return Err("a query string is not supported".to_owned());
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        Ok(Self {
            scheme,
            authority,
            base_path,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Everything `serve` needs, resolved: defaults applied, flags over file, paths absolute or cwd-relative.
#[derive(Clone)]
pub struct ProxyConfig {
    /// Address the proxy listener binds.
    pub listen: SocketAddr,
    /// Address the admin listener (`/healthz`, `/readyz`, `/metrics`) binds.
    pub admin_listen: SocketAddr,
    /// Where proxied requests go.
    pub upstream: Target,
    /// The proxy-wasm module run on every request.
    pub filter: PathBuf,
    /// Plugin configuration bytes handed to `on_configure` verbatim.
    pub plugin_config: Vec<u8>,
    /// The root id (`plugin_root_id`; SDKs such as AssemblyScript's pick their root context by it).
    pub root_id: String,
    /// The plugin name (`plugin_name`), as Envoy's `config.name`.
    pub plugin_name: String,
    /// The VM id, which scopes shared data and queues (Envoy's `vm_config.vm_id`).
    pub vm_id: String,
    /// VM configuration bytes handed to `on_vm_start` verbatim (Envoy's `vm_config.configuration`).
    pub vm_config: Vec<u8>,
    /// The embedded default's credential, when no plugin configuration was given.
    pub default_credential: Option<DefaultCredential>,
    /// The credentials the embedded default can use, in the order they are tried.
    pub default_credentials: Vec<DefaultCredential>,
    /// Worker threads, each with its own VM and event loop.
    pub workers: NonZeroUsize,
    /// Requests processed at once across all workers.
    pub max_concurrency: NonZeroUsize,
    /// Requests allowed to wait for a free slot before new ones get 503.
    pub queue: usize,
    /// How long a queued request waits for a slot before it gets 503.
    pub queue_timeout: Duration,
    /// Limit on establishing an upstream TCP connection (a TLS handshake counts against `request_timeout`).
    pub connect_timeout: Duration,
    /// One deadline from the filter receiving the request headers to the upstream's response headers.
    pub request_timeout: Duration,
    /// Longest silence allowed inside a streaming upstream response body.
    pub idle_timeout: Duration,
    /// How long in-flight requests may run after SIGTERM/SIGINT before connections are closed.
    pub drain_timeout: Duration,
    /// Largest request head (request line and headers) accepted; larger ones get 431.
    pub max_request_header_bytes: usize,
    /// Client connections open at once across all workers; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Longest silence while reading a request body; exceeded → `408` and the connection closed.
    pub request_body_timeout: Duration,
    /// Send the client's address upstream in `x-forwarded-for` (off: the upstream learns no address).
    pub forward_client_address: bool,
    /// Host environment variables copied into the VM environment when set.
    pub host_env_keys: Vec<String>,
    /// The VM environment: explicit `[env]`/`--env` entries over the passed-through host variables.
    pub vm_env: BTreeMap<String, Secret>,
    /// Named upstreams the filter may call with `dispatch_http_call`, `upstream` included.
    pub clusters: BTreeMap<String, Target>,
    /// Where a rotated refresh token is persisted, when configured.
    pub state_file: Option<PathBuf>,
    /// The shared-data key whose value the state file keeps.
    pub state_key: KeyTemplate,
    /// The filter metric readiness waits on.
    pub readiness: ReadinessGate,
    /// The shape of the proxy's own error bodies.
    pub error_shape: ErrorShape,
    /// Where the caller identity comes from, and the identity headers removed from every request.
    pub identity: IdentityConfig,
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("listen", &self.listen)
            .field("admin_listen", &self.admin_listen)
            .field("upstream", &self.upstream)
            .field("filter", &self.filter)
            .field(
                "plugin_config",
                &format_args!("<{} bytes>", self.plugin_config.len()),
            )
            .field("root_id", &self.root_id)
            .field("plugin_name", &self.plugin_name)
            .field("vm_id", &self.vm_id)
            .field(
                "vm_config",
                &format_args!("<{} bytes>", self.vm_config.len()),
            )
            .field("default_credential", &self.default_credential)
            .field("default_credentials", &self.default_credentials)
            .field("workers", &self.workers)
            .field("max_concurrency", &self.max_concurrency)
            .field("queue", &self.queue)
            .field("queue_timeout", &self.queue_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("drain_timeout", &self.drain_timeout)
            .field("max_request_header_bytes", &self.max_request_header_bytes)
            .field("max_connections", &self.max_connections)
            .field("request_body_timeout", &self.request_body_timeout)
            .field("forward_client_address", &self.forward_client_address)
            .field("host_env_keys", &self.host_env_keys)
            .field("vm_env", &self.vm_env)
            .field("clusters", &self.clusters)
            .field("state_file", &self.state_file)
            .field("state_key", &self.state_key)
            .field("readiness", &self.readiness)
            .field("error_shape", &self.error_shape)
            .field("identity", &self.identity)
            .finish()
    }
}

/// Why the configuration cannot be used; each message names the file, field or flag at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        /// The file named by `--config`.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML or has an unknown or mistyped field.
    #[error("config file {path}, line {line}: {message}")]
    ParseFile {
        /// The file named by `--config`.
        path: PathBuf,
        /// 1-based line of the offending text.
        line: usize,
        /// The parser's explanation, on one line.
        message: String,
    },
    /// A field or flag has a value that cannot be used.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidValue {
        /// The TOML field or command-line flag.
        field: String,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The plugin configuration file could not be read.
    #[error("cannot read plugin_config {path}: {source}")]
    ReadPluginConfig {
        /// The configured plugin configuration path.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The VM configuration file could not be read.
    #[error("cannot read vm_config {path}: {source}")]
    ReadVmConfig {
        /// The configured VM configuration path.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The filter module does not exist.
    #[error("filter {path} not found{hint}")]
    FilterMissing {
        /// The configured or default filter path.
        path: PathBuf,
        /// How to produce it, when the default path is used.
        hint: &'static str,
    },
}

impl ConfigError {
    pub(crate) fn invalid(
        field: &str,
        value: impl fmt::Display,
        reason: impl fmt::Display,
    ) -> Self {
        Self::InvalidValue {
            field: field.to_owned(),
            value: value.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// A duration written as `"250ms"`, `"5s"`, `"2m"`, `"1h"` or a number of seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum DurationText {
    Seconds(f64),
    Text(String),
}

/// Parses a duration in the workspace's one grammar (the `durations` crate: `250ms`, `5s`, `1.5s`, `2m`,
/// `1h` or a bare number of seconds) and applies the proxy's bound of a day.
///
/// # Errors
/// Returns a reason naming the grammar, or the bound, when the text breaks either.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    within_a_day(durations::parse(text).map_err(|err| err.to_string())?)
}

/// Longest duration any setting takes: a day. Far longer ones are typos, and would overflow deadlines.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

fn within_a_day(duration: Duration) -> Result<Duration, String> {
    if duration > MAX_DURATION {
        return Err("must be at most 24h".to_owned());
    }
    Ok(duration)
}

/// A TOML number of seconds, read as the grammar reads a bare number: `f64`'s `Display` writes every
/// finite value in plain decimal (never an exponent), so `1.5` and `1e12` both reach the one parser.
fn seconds_duration(seconds: f64) -> Result<Duration, String> {
    within_a_day(durations::parse_seconds(&seconds.to_string()).map_err(|err| err.to_string())?)
}

impl DurationText {
    pub(crate) fn resolve(&self, field: &str) -> Result<Duration, ConfigError> {
        match self {
            Self::Seconds(seconds) => {
                seconds_duration(*seconds).map_err(|err| ConfigError::invalid(field, seconds, err))
            }
            Self::Text(text) => {
                parse_duration(text).map_err(|reason| ConfigError::invalid(field, text, reason))
            }
        }
    }
}

/// The TOML configuration file as written: every field optional, unknown fields rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    admin_listen: Option<String>,
    upstream: Option<String>,
    filter: Option<PathBuf>,
    plugin_config: Option<PathBuf>,
    root_id: Option<String>,
    plugin_name: Option<String>,
    vm_id: Option<String>,
    vm_config: Option<PathBuf>,
    workers: Option<usize>,
    max_concurrency: Option<usize>,
    queue: Option<usize>,
    queue_timeout: Option<DurationText>,
    connect_timeout: Option<DurationText>,
    request_timeout: Option<DurationText>,
    idle_timeout: Option<DurationText>,
    drain_timeout: Option<DurationText>,
    max_request_header_bytes: Option<usize>,
    max_connections: Option<usize>,
    request_body_timeout: Option<DurationText>,
    forward_client_address: Option<bool>,
    host_env_keys: Option<Vec<String>>,
    state_file: Option<PathBuf>,
    default_credentials: Option<Vec<DefaultCredentialSection>>,
    state: Option<StateSection>,
    readiness: Option<ReadinessSection>,
    errors: Option<ErrorsSection>,
    identity: Option<IdentityFile>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    clusters: BTreeMap<String, String>,
}

/// `[[default_credentials]]`: one credential the embedded default plugin configuration can use.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DefaultCredentialSection {
    env: String,
    header: String,
    configuration: String,
}

/// `[state]`: what the state file keeps.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateSection {
    shared_data_key: Option<String>,
}

/// `[readiness]`: the filter metric `/readyz` waits on.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadinessSection {
    metric: Option<String>,
    minimum: Option<u64>,
    unavailable_reason: Option<String>,
    unreported_reason: Option<String>,
}

/// `[errors]`: the proxy's own error bodies.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorsSection {
    shape: Option<ErrorShape>,
}

/// Command-line values that override the file; `None` and empty lists leave the file's value.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<String>,
    /// `--admin-listen`.
    pub admin_listen: Option<String>,
    /// `--upstream`.
    pub upstream: Option<String>,
    /// `--filter`.
    pub filter: Option<PathBuf>,
    /// `--plugin-config`.
    pub plugin_config: Option<PathBuf>,
    /// `--root-id`.
    pub root_id: Option<String>,
    /// `--vm-id`.
    pub vm_id: Option<String>,
    /// `--vm-config`.
    pub vm_config: Option<PathBuf>,
    /// `--workers`.
    pub workers: Option<usize>,
    /// `--max-concurrency`.
    pub max_concurrency: Option<usize>,
    /// `--queue`.
    pub queue: Option<usize>,
    /// `--max-connections`.
    pub max_connections: Option<usize>,
    /// `--connect-timeout`.
    pub connect_timeout: Option<String>,
    /// `--request-timeout`.
    pub request_timeout: Option<String>,
    /// `--drain-timeout`.
    pub drain_timeout: Option<String>,
    /// `--host-env KEY`, repeatable; replaces the file's `host_env_keys` when given.
    pub host_env_keys: Vec<String>,
    /// `--state-file`.
    pub state_file: Option<PathBuf>,
    /// `--env K=V`, repeatable; added over the file's `[env]`.
    pub env: Vec<String>,
    /// `--cluster NAME=URL`, repeatable; added over the file's `[clusters]`.
    pub clusters: Vec<String>,
    /// `--identity`, `--whois-socket`, `--trusted-proxy`.
    pub identity: IdentityOverrides,
}

/// Defaults for the numeric limits.
const DEFAULT_MAX_CONCURRENCY: usize = 1024;
const DEFAULT_QUEUE: usize = 1024;
const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// As long as `request_timeout`: a rollout lets a model response that has started stream to its end.
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(600);
/// nginx's `client_body_timeout` is 60 s; a client that sends nothing for half that is stalled.
const DEFAULT_REQUEST_BODY_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MAX_REQUEST_HEADER_BYTES: usize = 64 * 1024;
/// Below this, ordinary heads (long cookies, user agents, beta lists) would be refused.
const MIN_REQUEST_HEADER_BYTES: usize = 8192;

impl ProxyConfig {
    /// Loads the file (when given), applies the overrides and defaults, and checks every value.
    ///
    /// `host_env` looks up host environment variables (for `host_env_keys`); `serve` passes
    /// `std::env::var`, tests pass a map.
    ///
    /// # Errors
    /// Returns the first problem found, naming the field or flag.
    pub fn load(
        file: Option<&Path>,
        overrides: &Overrides,
        host_env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let (parsed, base_dir) = match file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
                        path: path.to_owned(),
                        source,
                    })?;
                let parsed = parse_file(path, &text)?;
                (
                    parsed,
                    path.parent().map(Path::to_owned).unwrap_or_default(),
                )
            }
            None => (FileConfig::default(), PathBuf::new()),
        };
        Self::resolve(parsed, &base_dir, overrides, host_env)
    }

    /// Parses the configuration from TOML text, for callers that already hold it.
    ///
    /// Relative paths in the text are taken relative to `base_dir`.
    ///
    /// # Errors
    /// As [`ProxyConfig::load`]; `origin` names the text in parse errors.
    pub fn from_toml(
        origin: &Path,
        text: &str,
        base_dir: &Path,
        overrides: &Overrides,
        host_env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let parsed = parse_file(origin, text)?;
        Self::resolve(parsed, base_dir, overrides, host_env)
    }

    fn resolve(
        file: FileConfig,
        base_dir: &Path,
        overrides: &Overrides,
        host_env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let listen = pick_address(
            "listen",
            "--listen",
            overrides.listen.as_deref(),
            file.listen.as_deref(),
            "127.0.0.1:8080",
        )?;
        let admin_listen = pick_address(
            "admin_listen",
            "--admin-listen",
            overrides.admin_listen.as_deref(),
            file.admin_listen.as_deref(),
            "127.0.0.1:9901",
        )?;

        let (upstream_field, upstream_text) = match (&overrides.upstream, &file.upstream) {
            (Some(flag), _) => ("--upstream", flag.as_str()),
            (None, Some(field)) => ("upstream", field.as_str()),
            (None, None) => ("upstream", DEFAULT_UPSTREAM),
        };
        let upstream = parse_target(upstream_field, upstream_text, upstream_text)?;

        let (filter, filter_is_default) = match (&overrides.filter, &file.filter) {
            (Some(flag), _) => (flag.clone(), false),
            (None, Some(field)) => (base_dir.join(field), false),
            (None, None) => (default_filter_path(), true),
        };
        if !filter.is_file() {
            let hint = if filter_is_default {
                " (build it with `make filter`, or pass --filter)"
            } else {
                ""
            };
            return Err(ConfigError::FilterMissing { path: filter, hint });
        }

        let plugin_config_path = match (&overrides.plugin_config, &file.plugin_config) {
            (Some(flag), _) => Some(flag.clone()),
            (None, Some(field)) => Some(base_dir.join(field)),
            (None, None) => None,
        };
        let plugin_config = match plugin_config_path {
            Some(path) => Some(
                std::fs::read(&path)
                    .map_err(|source| ConfigError::ReadPluginConfig { path, source })?,
            ),
            None => None,
        };
        let root_id = overrides
            .root_id
            .clone()
            .or(file.root_id)
            .unwrap_or_default();
        let plugin_name = file
            .plugin_name
            .unwrap_or_else(|| DEFAULT_PLUGIN_NAME.to_owned());
        let vm_id = overrides.vm_id.clone().or(file.vm_id).unwrap_or_default();
        let vm_config = match (&overrides.vm_config, &file.vm_config) {
            (Some(flag), _) => Some(flag.clone()),
            (None, Some(field)) => Some(base_dir.join(field)),
            (None, None) => None,
        };
        let vm_config = match vm_config {
            Some(path) => {
                std::fs::read(&path).map_err(|source| ConfigError::ReadVmConfig { path, source })?
            }
            None => Vec::new(),
        };

        let workers_value = overrides
            .workers
            .or(file.workers)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, NonZeroUsize::get));
        let workers = NonZeroUsize::new(workers_value).ok_or_else(|| {
            ConfigError::invalid(
                field_name(overrides.workers, "workers", "--workers"),
                0,
                "must be at least 1",
            )
        })?;
        let concurrency_value = overrides
            .max_concurrency
            .or(file.max_concurrency)
            .unwrap_or(DEFAULT_MAX_CONCURRENCY);
        let max_concurrency = NonZeroUsize::new(concurrency_value).ok_or_else(|| {
            ConfigError::invalid(
                field_name(
                    overrides.max_concurrency,
                    "max_concurrency",
                    "--max-concurrency",
                ),
                0,
                "must be at least 1",
            )
        })?;
        let queue = overrides.queue.or(file.queue).unwrap_or(DEFAULT_QUEUE);

        let queue_timeout = pick_duration(
            "queue_timeout",
            None,
            None,
            file.queue_timeout.as_ref(),
            DEFAULT_QUEUE_TIMEOUT,
        )?;
        let connect_timeout = pick_duration(
            "connect_timeout",
            Some("--connect-timeout"),
            overrides.connect_timeout.as_deref(),
            file.connect_timeout.as_ref(),
            DEFAULT_CONNECT_TIMEOUT,
        )?;
        let request_timeout = pick_duration(
            "request_timeout",
            Some("--request-timeout"),
            overrides.request_timeout.as_deref(),
            file.request_timeout.as_ref(),
            DEFAULT_REQUEST_TIMEOUT,
        )?;
        let idle_timeout = pick_duration(
            "idle_timeout",
            None,
            None,
            file.idle_timeout.as_ref(),
            DEFAULT_IDLE_TIMEOUT,
        )?;
        let drain_timeout = pick_duration(
            "drain_timeout",
            Some("--drain-timeout"),
            overrides.drain_timeout.as_deref(),
            file.drain_timeout.as_ref(),
            DEFAULT_DRAIN_TIMEOUT,
        )?;
        for (name, value) in [
            ("connect_timeout", connect_timeout),
            ("request_timeout", request_timeout),
            ("idle_timeout", idle_timeout),
            ("queue_timeout", queue_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::invalid(name, "0", "must be greater than zero"));
            }
        }

        let max_request_header_bytes = file
            .max_request_header_bytes
            .unwrap_or(DEFAULT_MAX_REQUEST_HEADER_BYTES);
        if max_request_header_bytes < MIN_REQUEST_HEADER_BYTES {
            return Err(ConfigError::invalid(
                "max_request_header_bytes",
                max_request_header_bytes,
                format!("must be at least {MIN_REQUEST_HEADER_BYTES}"),
            ));
        }
        let max_connections = match overrides.max_connections.or(file.max_connections) {
            Some(0) => {
                return Err(ConfigError::invalid(
                    field_name(
                        overrides.max_connections,
                        "max_connections",
                        "--max-connections",
                    ),
                    0,
                    "must be at least 1",
                ));
            }
            Some(cap) => cap,
            None => super::connections::default_max_connections(
                super::connections::memory_limit(),
                max_request_header_bytes,
            ),
        };
        let request_body_timeout = pick_duration(
            "request_body_timeout",
            None,
            None,
            file.request_body_timeout.as_ref(),
            DEFAULT_REQUEST_BODY_TIMEOUT,
        )?;
        if request_body_timeout.is_zero() {
            return Err(ConfigError::invalid(
                "request_body_timeout",
                "0",
                "must be greater than zero",
            ));
        }
        let forward_client_address = file.forward_client_address.unwrap_or(false);

        let default_credentials = match file.default_credentials {
            Some(sections) => {
                let mut candidates = Vec::with_capacity(sections.len());
                for section in sections {
                    check_env_key("default_credentials.env", &section.env)?;
                    candidates.push(DefaultCredential {
                        env_var: section.env,
                        header: section.header,
                        plugin_config: section.configuration,
                    });
                }
                candidates
            }
            None => DefaultCredential::anthropic(),
        };
        // The embedded default's variables, so its credential reaches the VM without more settings.
        let host_env_keys = if !overrides.host_env_keys.is_empty() {
            overrides.host_env_keys.clone()
        } else {
            file.host_env_keys.unwrap_or_else(|| {
                default_credentials
                    .iter()
                    .map(|candidate| candidate.env_var.clone())
                    .collect()
            })
        };
        for key in &host_env_keys {
            check_env_key("host_env_keys", key)?;
        }
        let mut vm_env = BTreeMap::new();
        for key in &host_env_keys {
            if let Some(value) = host_env(key) {
                vm_env.insert(key.clone(), Secret::new(value));
            }
        }
        for (key, value) in file.env {
            check_env_key("env", &key)?;
            vm_env.insert(key, Secret::new(value));
        }
        for entry in &overrides.env {
            let (key, value) = split_pair("--env", entry, "K=V", false)?;
            check_env_key("--env", key)?;
            vm_env.insert(key.to_owned(), Secret::new(value));
        }

        // Without a plugin configuration the embedded default takes whichever credential the VM gets.
        // Without candidates (`default_credentials = []`) the filter gets an empty configuration.
        let (plugin_config, default_credential) = match plugin_config {
            Some(bytes) => (bytes, None),
            None => match DefaultCredential::choose(&default_credentials, &vm_env) {
                Some(credential) => (
                    credential.plugin_config.as_bytes().to_vec(),
                    Some(credential.clone()),
                ),
                None => (Vec::new(), None),
            },
        };

        let mut clusters = BTreeMap::new();
        clusters.insert(UPSTREAM_CLUSTER.to_owned(), upstream.clone());
        for (name, url) in &file.clusters {
            let target = parse_target(&format!("clusters.{name}"), url, url)?;
            clusters.insert(name.clone(), target);
        }
        for entry in &overrides.clusters {
            let (name, url) = split_pair("--cluster", entry, "NAME=URL", true)?;
            if name.is_empty() {
                return Err(ConfigError::invalid(
                    "--cluster",
                    without_user_info(entry),
                    "the cluster name is empty",
                ));
            }
            let target = parse_target("--cluster", entry, url)?;
            clusters.insert(name.to_owned(), target);
        }

        let state_file = match (&overrides.state_file, &file.state_file) {
            (Some(flag), _) => Some(flag.clone()),
            (None, Some(field)) => Some(base_dir.join(field)),
            (None, None) => None,
        };
        let state_key = match file.state.and_then(|state| state.shared_data_key) {
            Some(text) => KeyTemplate::parse(&text)
                .map_err(|err| ConfigError::invalid("state.shared_data_key", &text, err))?,
            None => KeyTemplate::default(),
        };
        let readiness = readiness_gate(file.readiness.unwrap_or_default());
        let error_shape = file
            .errors
            .and_then(|errors| errors.shape)
            .unwrap_or_default();
        let identity = IdentityConfig::resolve(file.identity, &overrides.identity, base_dir)?;

        Ok(Self {
            listen,
            admin_listen,
            upstream,
            filter,
            plugin_config,
            root_id,
            plugin_name,
            vm_id,
            vm_config,
            default_credential,
            default_credentials,
            workers,
            max_concurrency,
            queue,
            queue_timeout,
            connect_timeout,
            request_timeout,
            idle_timeout,
            drain_timeout,
            max_request_header_bytes,
            max_connections,
            request_body_timeout,
            forward_client_address,
            host_env_keys,
            vm_env,
            clusters,
            state_file,
            state_key,
            readiness,
            error_shape,
            identity,
        })
    }
}

/// `[readiness]` over the defaults; an empty `metric` gates on no metric.
fn readiness_gate(section: ReadinessSection) -> ReadinessGate {
    let defaults = ReadinessGate::default();
    ReadinessGate {
        metric: match section.metric {
            Some(metric) if metric.is_empty() => None,
            Some(metric) => Some(metric),
            None => defaults.metric,
        },
        minimum: section.minimum.unwrap_or(defaults.minimum),
        unavailable_reason: section
            .unavailable_reason
            .unwrap_or(defaults.unavailable_reason),
        unreported_reason: section
            .unreported_reason
            .unwrap_or(defaults.unreported_reason),
    }
}

fn parse_file(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|err| {
        let line = err.span().map_or(1, |span| {
            text.get(..span.start)
                .map_or(1, |before| before.lines().count().max(1))
        });
        let line = match err.span() {
            Some(span)
                if text
                    .get(..span.start)
                    .is_some_and(|before| before.ends_with('\n')) =>
            {
                line + 1
            }
            _ => line,
        };
        ConfigError::ParseFile {
            path: path.to_owned(),
            line,
            message: err.message().replace('\n', " "),
        }
    })
}

fn field_name(flag_value: Option<usize>, field: &'static str, flag: &'static str) -> &'static str {
    if flag_value.is_some() { flag } else { field }
}

fn pick_address(
    field: &str,
    flag: &str,
    from_flag: Option<&str>,
    from_file: Option<&str>,
    default: &str,
) -> Result<SocketAddr, ConfigError> {
    let (name, text) = match (from_flag, from_file) {
        (Some(value), _) => (flag, value),
        (None, Some(value)) => (field, value),
        (None, None) => (field, default),
    };
    text.parse()
        .map_err(|_| ConfigError::invalid(name, text, "expected IP:PORT, e.g. 127.0.0.1:8080"))
}

/// Parses the URL `url` of setting `field`; an error quotes `written` (the setting as given) without
/// the URL's user information.
fn parse_target(field: &str, written: &str, url: &str) -> Result<Target, ConfigError> {
    url.parse()
        .map_err(|reason| ConfigError::invalid(field, without_user_info(written), reason))
}

/// `text` with the user information of a URL in it (`scheme://user:password@host`) replaced, so an
/// error that quotes the URL never prints a password.
fn without_user_info(text: &str) -> std::borrow::Cow<'_, str> {
    let Some(scheme_end) = text.find("://") else {
        // Without a scheme the user information starts the text (`user:password@host`).
        return match text.rfind('@') {
            Some(at) => format!("[REDACTED]{}", text.get(at..).unwrap_or_default()).into(),
            None => text.into(),
        };
    };
    let (head, rest) = text.split_at(scheme_end + 3);
    // Up to the last `@` anywhere: a password may hold a `/` too, and hiding a bit of path is harmless.
    match rest.rfind('@') {
        Some(at) => format!("{head}[REDACTED]{}", rest.get(at..).unwrap_or_default()).into(),
        None => text.into(),
    }
}

fn pick_duration(
    field: &str,
    flag: Option<&str>,
    from_flag: Option<&str>,
    from_file: Option<&DurationText>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match (from_flag, from_file) {
        (Some(text), _) => parse_duration(text)
            .map_err(|reason| ConfigError::invalid(flag.unwrap_or(field), text, reason)),
        (None, Some(value)) => value.resolve(field),
        (None, None) => Ok(default),
    }
}

/// Splits `NAME=VALUE`. Without a `=` the entry is quoted only when `quotable` (a URL, shown without its
/// user information); an `--env` entry without `=` may be nothing but the value, so it is never shown.
fn split_pair<'a>(
    flag: &str,
    entry: &'a str,
    shape: &str,
    quotable: bool,
) -> Result<(&'a str, &'a str), ConfigError> {
    entry.split_once('=').ok_or_else(|| {
        let shown = if quotable {
            without_user_info(entry).into_owned()
        } else {
            "[REDACTED]".to_owned()
        };
        ConfigError::invalid(flag, shown, format!("expected {shape}"))
    })
}

/// Shows the key of a `K=V` entry but never its value, which may be a credential.
fn redact_value(entry: &str) -> String {
    match entry.split_once('=') {
        Some((key, _)) => format!("{key}=[REDACTED]"),
        None => entry.to_owned(),
    }
}

fn check_env_key(field: &str, key: &str) -> Result<(), ConfigError> {
    if key.is_empty() || key.contains('=') || key.contains('\0') {
        // `KEY=value` given where a name belongs: the part after `=` may be a credential.
        return Err(ConfigError::invalid(
            field,
            redact_value(key),
            "not a valid environment variable name",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// The shipped candidates: the API key first, the OAuth token second.
    fn api_key() -> DefaultCredential {
        DefaultCredential::anthropic().remove(0)
    }

    fn oauth_token() -> DefaultCredential {
        DefaultCredential::anthropic().remove(1)
    }

    /// Any existing file stands in for the module: loading only checks that it is there.
    fn with_filter() -> Overrides {
        Overrides {
            filter: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")),
            ..Overrides::default()
        }
    }

    fn load_text(text: &str, overrides: &Overrides) -> Result<ProxyConfig, ConfigError> {
        ProxyConfig::from_toml(
            Path::new("proxy.toml"),
            text,
            Path::new("."),
            overrides,
            |key| (key == "ANTHROPIC_OAUTH_TOKEN").then(|| "host-token".to_owned()),
        )
    }

    #[test]
    fn product_settings_default_to_the_credential_filter_and_can_be_set() {
        let defaults = load_text("", &with_filter()).unwrap();
        assert_eq!(defaults.plugin_name, "credential-filter");
        assert_eq!(defaults.readiness, ReadinessGate::default());
        assert_eq!(defaults.error_shape, ErrorShape::Anthropic);
        assert_eq!(defaults.state_key, KeyTemplate::default());

        let set = load_text(
            "plugin_name = \"gateway\"\n\
             [state]\nshared_data_key = \"tokens.{/id}\"\n\
             [readiness]\nmetric = \"\"\n\
             [errors]\nshape = \"problem\"\n",
            &with_filter(),
        )
        .unwrap();
        assert_eq!(set.plugin_name, "gateway");
        assert_eq!(set.readiness.metric, None);
        assert_eq!(set.error_shape, ErrorShape::Problem);
        assert_eq!(
            set.state_key.resolve(br#"{"id":"a"}"#).as_deref(),
            Some("tokens.a")
        );
    }

    #[test]
    fn default_credentials_can_be_replaced() {
        let config = load_text(
            "[[default_credentials]]\n\
             env = \"GATEWAY_KEY\"\n\
             header = \"api-key\"\n\
             configuration = \"{}\"\n",
            &with_filter(),
        )
        .unwrap();
        assert_eq!(config.host_env_keys, ["GATEWAY_KEY"]);
        assert_eq!(config.plugin_config, b"{}");
        assert_eq!(
            config.default_credential.map(|c| c.to_string()).as_deref(),
            Some("GATEWAY_KEY as api-key")
        );
        let none = load_text("default_credentials = []\n", &with_filter()).unwrap();
        assert_eq!(none.default_credential, None);
        assert!(none.plugin_config.is_empty());
    }

    #[test]
    fn product_setting_errors_name_the_key() {
        for (text, named) in [
            ("[readiness]\nmetrics = \"m\"\n", "metrics"),
            ("[state]\nkey = \"k\"\n", "key"),
            ("[errors]\nshape = \"xml\"\n", "xml"),
            ("[[default_credentials]]\nenv = \"K\"\n", "header"),
            (
                "[state]\nshared_data_key = \"a{b}\"\n",
                "state.shared_data_key",
            ),
        ] {
            let error = load_text(text, &with_filter()).unwrap_err().to_string();
            assert!(error.contains(named), "{text}: {error}");
        }
    }

    #[test]
    fn defaults_apply_without_a_file() {
        let config = load_text("", &with_filter()).unwrap();
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(config.admin_listen, "127.0.0.1:9901".parse().unwrap());
        assert_eq!(config.upstream.to_string(), "https://api.anthropic.com");
        // Only the OAuth token is in the host environment, so the default uses it.
        assert_eq!(config.default_credential, Some(oauth_token()));
        assert_eq!(config.plugin_config, oauth_token().plugin_config.as_bytes());
        assert_eq!(
            config.host_env_keys,
            ["ANTHROPIC_API_KEY", "ANTHROPIC_OAUTH_TOKEN"]
        );
        assert_eq!(config.drain_timeout, Duration::from_secs(600));
        assert_eq!(config.request_body_timeout, Duration::from_secs(30));
        assert!(!config.forward_client_address);
        assert!(config.max_connections >= super::super::connections::MIN_DEFAULT_CONNECTIONS);
        assert_eq!(
            config
                .vm_env
                .get("ANTHROPIC_OAUTH_TOKEN")
                .map(Secret::expose),
            Some("host-token")
        );
        assert!(config.clusters.contains_key(UPSTREAM_CLUSTER));
    }

    fn default_credential_with(host: &[(&str, &str)]) -> ProxyConfig {
        ProxyConfig::from_toml(
            Path::new("proxy.toml"),
            "",
            Path::new("."),
            &with_filter(),
            |key| {
                host.iter()
                    .find(|(name, _)| *name == key)
                    .map(|(_, value)| (*value).to_owned())
            },
        )
        .unwrap()
    }

    #[test]
    fn the_default_prefers_the_api_key_and_falls_back_to_the_oauth_token() {
        let both = default_credential_with(&[
            ("ANTHROPIC_API_KEY", "sk-ant-api03-x"),
            ("ANTHROPIC_OAUTH_TOKEN", "sk-ant-oat01-y"),
        ]);
        assert_eq!(both.default_credential, Some(api_key()));
        assert_eq!(both.plugin_config, api_key().plugin_config.as_bytes());
        let oauth = default_credential_with(&[("ANTHROPIC_OAUTH_TOKEN", "sk-ant-oat01-y")]);
        assert_eq!(oauth.default_credential, Some(oauth_token()));
        // A blank API key does not count as set.
        let blank_key = default_credential_with(&[
            ("ANTHROPIC_API_KEY", " \n"),
            ("ANTHROPIC_OAUTH_TOKEN", "sk-ant-oat01-y"),
        ]);
        assert_eq!(blank_key.default_credential, Some(oauth_token()));
        // Neither: the API key, the path the provider's terms allow for sharing, is what is asked for.
        let neither = default_credential_with(&[]);
        assert_eq!(neither.default_credential, Some(api_key()));
        assert_eq!(api_key().to_string(), "ANTHROPIC_API_KEY as x-api-key");
    }

    #[test]
    fn a_configured_plugin_configuration_has_no_default_credential() {
        let plugin = std::env::temp_dir().join(format!(
            "host-harness-config-test-{}-plugin.json",
            std::process::id()
        ));
        std::fs::write(&plugin, b"{}").unwrap();
        let overrides = Overrides {
            plugin_config: Some(plugin),
            ..with_filter()
        };
        let config = load_text("", &overrides).unwrap();
        let _ = std::fs::remove_file(overrides.plugin_config.as_deref().unwrap());
        assert_eq!(config.default_credential, None);
        assert_eq!(config.plugin_config, b"{}");
    }

    #[test]
    fn flags_override_the_file() {
        let overrides = Overrides {
            listen: Some("127.0.0.1:7000".into()),
            upstream: Some("http://127.0.0.1:9000/base/".into()),
            drain_timeout: Some("250ms".into()),
            env: vec!["A=flag".into()],
            clusters: vec!["auth=http://127.0.0.1:9100".into()],
            ..with_filter()
        };
        let text = "listen = \"127.0.0.1:6000\"\nupstream = \"https://example.com\"\ndrain_timeout = 3\n[env]\nA = \"file\"\nB = \"file\"\n[clusters]\nauth = \"https://auth.example.com\"\n";
        let config = load_text(text, &overrides).unwrap();
        assert_eq!(config.listen.port(), 7000);
        assert_eq!(config.upstream.authority.as_str(), "127.0.0.1:9000");
        assert_eq!(config.upstream.base_path, "/base");
        assert_eq!(config.drain_timeout, Duration::from_millis(250));
        assert_eq!(config.vm_env.get("A").map(Secret::expose), Some("flag"));
        assert_eq!(config.vm_env.get("B").map(Secret::expose), Some("file"));
        assert_eq!(
            config
                .clusters
                .get("auth")
                .map(ToString::to_string)
                .as_deref(),
            Some("http://127.0.0.1:9100")
        );
    }

    #[test]
    fn unknown_field_names_the_line() {
        let err = load_text(
            "listen = \"127.0.0.1:1\"\nlisten_port = 3\n",
            &with_filter(),
        )
        .unwrap_err();
        let line = err.to_string();
        assert!(
            line.contains("line 2") && line.contains("listen_port"),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn bad_address_names_the_flag() {
        let overrides = Overrides {
            admin_listen: Some("localhost".into()),
            ..with_filter()
        };
        let err = load_text("", &overrides).unwrap_err().to_string();
        assert!(
            err.contains("--admin-listen") && err.contains("localhost"),
            "{err}"
        );
    }

    #[test]
    fn bad_upstream_scheme_is_rejected() {
        let err = load_text("upstream = \"ftp://example.com\"", &with_filter())
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstream") && err.contains("ftp"), "{err}");
    }

    #[test]
    fn missing_filter_is_reported() {
        let overrides = Overrides {
            filter: Some("/nonexistent/filter.wasm".into()),
            ..Overrides::default()
        };
        let err = load_text("", &overrides).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/filter.wasm"), "{err}");
    }

    #[test]
    fn env_values_never_reach_debug_or_errors() {
        let overrides = Overrides {
            env: vec!["TOKEN=sk-secret-value".into(), "broken".into()],
            ..with_filter()
        };
        let err = load_text("", &overrides).unwrap_err().to_string();
        assert!(!err.contains("sk-secret-value"));
        let overrides = Overrides {
            env: vec!["TOKEN=sk-secret-value".into()],
            ..with_filter()
        };
        let config = load_text("", &overrides).unwrap();
        assert!(!format!("{config:?}").contains("sk-secret-value"));
        assert!(!format!("{config:?}").contains("host-token"));
    }

    #[test]
    fn a_url_with_a_password_is_refused_without_printing_it() {
        let overrides = Overrides {
            upstream: Some("https://user:hunter2@api.example.com/v1".into()),
            clusters: vec!["auth=http://id:hunter2@127.0.0.1:9/".into()],
            ..with_filter()
        };
        let err = load_text("", &overrides).unwrap_err().to_string();
        assert!(
            err.contains("https://[REDACTED]@api.example.com/v1"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
        let overrides = Overrides {
            clusters: vec!["auth=http://id:hunter2@127.0.0.1:9/".into()],
            ..with_filter()
        };
        let err = load_text("", &overrides).unwrap_err().to_string();
        assert!(err.contains("auth=http://[REDACTED]@127.0.0.1:9/"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert_eq!(
            without_user_info("http://u:a/b@host/"),
            "http://[REDACTED]@host/"
        );
        let overrides = Overrides {
            clusters: vec![
                "=http://id:hunter2@127.0.0.1:9/".into(),
                "http://id:hunter2@h".into(),
            ],
            ..with_filter()
        };
        let err = load_text("", &overrides).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        let err = load_text(
            "[clusters]\nauth = \"ftp://id:hunter2@h\"\n",
            &with_filter(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("clusters.auth") && !err.contains("hunter2"),
            "{err}"
        );
        assert_eq!(without_user_info("no url"), "no url");
        assert_eq!(without_user_info("user:pw@host"), "[REDACTED]@host");
    }

    #[test]
    fn durations_over_a_day_are_refused() {
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("25h").unwrap_err(), "must be at most 24h");
        assert!(parse_duration("1e19").is_err());
        let err = load_text("idle_timeout = 1e12\n", &with_filter())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("idle_timeout") && err.contains("at most 24h"),
            "{err}"
        );
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("1.0005s").is_err());
        let err = load_text("idle_timeout = -1\n", &with_filter())
            .unwrap_err()
            .to_string();
        assert!(err.contains("idle_timeout"), "{err}");
        let err = load_text("idle_timeout = 0.0001\n", &with_filter())
            .unwrap_err()
            .to_string();
        assert!(err.contains("whole number of milliseconds"), "{err}");
    }

    #[test]
    fn zero_workers_is_rejected() {
        let err = load_text("workers = 0", &with_filter())
            .unwrap_err()
            .to_string();
        assert!(err.contains("workers"), "{err}");
    }

    #[test]
    fn target_joins_base_path() {
        let target: Target = "http://127.0.0.1:1/v1/".parse().unwrap();
        assert_eq!(
            target.uri_for("/messages?x=1").unwrap().to_string(),
            "http://127.0.0.1:1/v1/messages?x=1"
        );
        assert!("http://user:pw@example.com".parse::<Target>().is_err());
    }
}
