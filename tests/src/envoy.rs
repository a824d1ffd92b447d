//! Real Envoy on 127.0.0.1 with a Wasm filter, for end-to-end and differential tests.
//!
//! The bootstrap comes from `tests/envoy/bootstrap.yaml`: every port is 0, and the fixture reads the bound
//! admin address from `--admin-address-path` and the listener port from the admin API, so parallel tests
//! never race for ports. Envoy logs to a file in a private temporary directory; [`Envoy::wasm_logs`] picks
//! out the plugin's log lines. Dropping the [`Envoy`] kills the process and waits for it (no orphans);
//! if the test is panicking, the tail of Envoy's log is printed first. Should the test process die without
//! dropping it, Envoy's parent-death signal ends it too (see `envoy_command`).
//!
//! The binary comes from `ENVOY_BIN` (`make test` installs Envoy and sets it). See [`binary`] for what
//! happens when it is unset.
//!
//! ```no_run
//! # use integration_tests::{envoy::{self, Envoy}, upstream::Upstream};
//! # fn main() -> anyhow::Result<()> {
//! let Some(binary) = envoy::binary()? else { return Ok(()) };
//! let upstream = Upstream::echo()?;
//! let proxy = Envoy::builder(binary, env!("PROBE_WASM"))
//!     .plugin_configuration(r#"{"on_request_headers": [{"op": "add_header", "map": "request_headers", "name": "x-a", "value": "1"}]}"#)
//!     .cluster("upstream", upstream.addr())
//!     .start()?;
//! println!("{}", proxy.url("/"));
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::client::{self, HttpRequest};

/// The bootstrap template; placeholders `{{NAME}}` take JSON values.
const BOOTSTRAP_TEMPLATE: &str = include_str!("../envoy/bootstrap.yaml");

/// How often start-up and log waits look again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Timeout of one admin API request.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The Envoy binary to test against, from `ENVOY_BIN`.
///
/// When `ENVOY_BIN` is unset, prints `skipped: ENVOY_BIN not set (make test installs Envoy)` and returns
/// `Ok(None)`: the caller returns early. Under CI (`CI` set) a missing Envoy is an error instead, so a
/// broken install can never turn the Envoy tests into silent passes.
///
/// # Errors
/// `ENVOY_BIN` unset while `CI` is set, or set to a path that is not a file.
pub fn binary() -> anyhow::Result<Option<PathBuf>> {
    match std::env::var_os("ENVOY_BIN").filter(|value| !value.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                bail!(
                    "ENVOY_BIN={} is not a file (make test installs Envoy with scripts/install-envoy.sh)",
                    path.display()
                );
            }
            Ok(Some(path))
        }
        None if std::env::var_os("CI").is_some() => {
            bail!(
                "ENVOY_BIN not set while CI is set: the Envoy tests must run in CI (make test installs Envoy)"
            )
        }
        None => {
            println!("skipped: ENVOY_BIN not set (make test installs Envoy)");
            Ok(None)
        }
    }
}

/// Envoy's Wasm failure policies (`PluginConfig.failure_policy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Requests fail with 503 after the VM failed (Envoy's default).
    #[default]
    FailClosed,
    /// Requests skip the plugin after the VM failed.
    FailOpen,
    /// A new VM is created after the VM failed, with backoff.
    FailReload,
}

impl FailurePolicy {
    fn as_proto(self) -> &'static str {
        match self {
            Self::FailClosed => "FAIL_CLOSED",
            Self::FailOpen => "FAIL_OPEN",
            Self::FailReload => "FAIL_RELOAD",
        }
    }
}

/// An upstream cluster: a name the route or `proxy_http_call` uses, and one loopback endpoint.
#[derive(Clone, Debug)]
struct Cluster {
    name: String,
    addr: SocketAddr,
}

/// Builds and starts an [`Envoy`].
#[derive(Clone, Debug)]
pub struct EnvoyBuilder {
    binary: PathBuf,
    wasm: PathBuf,
    plugin_name: String,
    root_id: String,
    vm_id: String,
    plugin_configuration: String,
    vm_configuration: String,
    environment: BTreeMap<String, String>,
    failure_policy: FailurePolicy,
    concurrency: u32,
    clusters: Vec<Cluster>,
    route_cluster: Option<String>,
    route_timeout: Duration,
    log_level: String,
    wasm_log_level: String,
    startup_timeout: Duration,
}

impl EnvoyBuilder {
    /// Sets the plugin configuration, passed verbatim as a `google.protobuf.StringValue`.
    pub fn plugin_configuration(mut self, configuration: impl Into<String>) -> Self {
        self.plugin_configuration = configuration.into();
        self
    }

    /// Sets the VM configuration (`vm_config.configuration`, a StringValue).
    pub fn vm_configuration(mut self, configuration: impl Into<String>) -> Self {
        self.vm_configuration = configuration.into();
        self
    }

    /// Adds one `vm_config.environment_variables.key_values` entry (read by the guest through WASI).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.environment.insert(name.to_owned(), value.to_owned());
        self
    }

    /// Sets the failure policy (default fail closed).
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = policy;
        self
    }

    /// Sets `--concurrency` (worker threads, hence VMs besides the main thread's; default 1).
    pub fn concurrency(mut self, workers: u32) -> Self {
        self.concurrency = workers;
        self
    }

    /// Adds a cluster `name` with the single endpoint `addr`; the first cluster added receives the route
    /// unless [`EnvoyBuilder::route_to`] says otherwise.
    pub fn cluster(mut self, name: &str, addr: SocketAddr) -> Self {
        self.clusters.push(Cluster {
            name: name.to_owned(),
            addr,
        });
        self
    }

    /// Routes every request to cluster `name`.
    pub fn route_to(mut self, name: &str) -> Self {
        self.route_cluster = Some(name.to_owned());
        self
    }

    /// Sets the route timeout (default 15 s).
    pub fn route_timeout(mut self, timeout: Duration) -> Self {
        self.route_timeout = timeout;
        self
    }

    /// Sets the plugin name (default `probe`); Envoy reports it as property `plugin_name`.
    pub fn plugin_name(mut self, name: &str) -> Self {
        self.plugin_name = name.to_owned();
        self
    }

    /// Sets the root id (default empty).
    pub fn root_id(mut self, root_id: &str) -> Self {
        self.root_id = root_id.to_owned();
        self
    }

    /// Sets the VM id (default `probe-vm`); shared data and queues are scoped by it.
    pub fn vm_id(mut self, vm_id: &str) -> Self {
        self.vm_id = vm_id.to_owned();
        self
    }

    /// Sets the level of the `wasm` log component (default `trace`, so every plugin log line is kept).
    pub fn wasm_log_level(mut self, level: &str) -> Self {
        self.wasm_log_level = level.to_owned();
        self
    }

    /// Sets Envoy's overall log level (default `info`).
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.to_owned();
        self
    }

    /// Sets how long start-up may take before it is an error (default 30 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// The bootstrap YAML this builder produces.
    ///
    /// # Errors
    /// No cluster configured, a route to an unknown cluster, or a placeholder left unfilled.
    pub fn bootstrap(&self) -> anyhow::Result<String> {
        let Some(first) = self.clusters.first() else {
            bail!("envoy fixture: no cluster configured; add one with .cluster(name, addr)");
        };
        let route_cluster = self
            .route_cluster
            .clone()
            .unwrap_or_else(|| first.name.clone());
        if !self
            .clusters
            .iter()
            .any(|cluster| cluster.name == route_cluster)
        {
            bail!("envoy fixture: route_to({route_cluster:?}) names no configured cluster");
        }
        let clusters: Vec<serde_json::Value> = self.clusters.iter().map(cluster_json).collect();
        let values = [
            ("ROUTE_CLUSTER", serde_json::json!(route_cluster)),
            (
                "ROUTE_TIMEOUT",
                serde_json::json!(duration_json(self.route_timeout)),
            ),
            ("PLUGIN_NAME", serde_json::json!(self.plugin_name)),
            ("ROOT_ID", serde_json::json!(self.root_id)),
            (
                "FAILURE_POLICY",
                serde_json::json!(self.failure_policy.as_proto()),
            ),
            (
                "PLUGIN_CONFIGURATION",
                serde_json::json!(self.plugin_configuration),
            ),
            ("VM_ID", serde_json::json!(self.vm_id)),
            ("VM_CONFIGURATION", serde_json::json!(self.vm_configuration)),
            ("ENVIRONMENT_VARIABLES", serde_json::json!(self.environment)),
            (
                "WASM_PATH",
                serde_json::json!(self.wasm.display().to_string()),
            ),
            ("CLUSTERS", serde_json::Value::Array(clusters)),
        ];
        let mut bootstrap = BOOTSTRAP_TEMPLATE.to_owned();
        for (name, value) in values {
            bootstrap = bootstrap.replace(&format!("{{{{{name}}}}}"), &value.to_string());
        }
        if let Some(unfilled) = bootstrap
            .lines()
            .find(|line| !line.trim_start().starts_with('#') && line.contains("{{"))
        {
            bail!("envoy fixture: bootstrap template has an unfilled placeholder: {unfilled:?}");
        }
        Ok(bootstrap)
    }

    /// Writes the bootstrap, starts Envoy and waits until it is ready (admin `/ready` is `LIVE` and the
    /// listener is bound).
    ///
    /// # Errors
    /// A missing `.wasm`, a bad bootstrap, Envoy exiting during start-up (the error quotes its log), or
    /// start-up exceeding the timeout.
    pub fn start(self) -> anyhow::Result<Envoy> {
        if !self.wasm.is_file() {
            bail!(
                "envoy fixture: wasm module {} does not exist",
                self.wasm.display()
            );
        }
        let bootstrap = self.bootstrap()?;
        let dir = tempfile::Builder::new()
            .prefix("envoy-test-")
            .tempdir()
            .context("creating Envoy's temporary directory")?;
        let config_path = dir.path().join("bootstrap.yaml");
        let admin_path = dir.path().join("admin-address");
        let log_path = dir.path().join("envoy.log");
        std::fs::write(&config_path, bootstrap).context("writing the Envoy bootstrap")?;
        let log_file = std::fs::File::create(&log_path).context("creating Envoy's log file")?;
        let child = envoy_command(&self.binary)
            .arg("--config-path")
            .arg(&config_path)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args([
                "--disable-hot-restart",
                "--concurrency",
                &self.concurrency.to_string(),
            ])
            .args(["--log-level", &self.log_level])
            .args([
                "--component-log-level",
                &format!("wasm:{}", self.wasm_log_level),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let mut envoy = Envoy {
            child,
            dir,
            log_path,
            admin: None,
            listener: None,
        };
        let deadline = Instant::now() + self.startup_timeout;
        let admin = envoy.wait_for_admin(&admin_path, deadline)?;
        envoy.admin = Some(admin);
        envoy.wait_until_live(deadline)?;
        envoy.listener = Some(envoy.read_listener_addr()?);
        Ok(envoy)
    }
}

/// Where util-linux keeps `setpriv` (an essential package on Debian-based machines).
const SETPRIV: &str = "/usr/bin/setpriv";

/// The command that runs Envoy. With `setpriv` available, Envoy gets SIGKILL as its parent-death signal,
/// so a test process that is itself killed (a timeout, ^C) leaves no Envoy behind; `setpriv` execs Envoy,
/// so the child's pid is Envoy's. Linux sends that signal when the spawning *thread* exits: start and drop
/// an [`Envoy`] on the same thread (as a test does).
fn envoy_command(binary: &Path) -> Command {
    if Path::new(SETPRIV).is_file() {
        let mut command = Command::new(SETPRIV);
        command.args(["--pdeathsig", "KILL", "--"]).arg(binary);
        command
    } else {
        Command::new(binary)
    }
}

fn cluster_json(cluster: &Cluster) -> serde_json::Value {
    serde_json::json!({
        "name": cluster.name,
        "type": "STATIC",
        "connect_timeout": "2s",
        "load_assignment": {
            "cluster_name": cluster.name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": cluster.addr.ip().to_string(),
                "port_value": cluster.addr.port(),
            }}}}]}],
        },
    })
}

/// A protobuf JSON duration, e.g. `"1.500s"`.
fn duration_json(duration: Duration) -> String {
    format!("{}.{:03}s", duration.as_secs(), duration.subsec_millis())
}

/// One line the plugin logged through `proxy_log`, as Envoy wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WasmLogLine {
    /// Envoy's level name: trace, debug, info, warning, error, critical.
    pub level: String,
    /// The message the plugin passed.
    pub message: String,
}

/// A running Envoy; dropping it kills the process.
pub struct Envoy {
    child: Child,
    dir: tempfile::TempDir,
    log_path: PathBuf,
    admin: Option<SocketAddr>,
    listener: Option<SocketAddr>,
}

impl fmt::Debug for Envoy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envoy")
            .field("pid", &self.child.id())
            .field("admin", &self.admin)
            .field("listener", &self.listener)
            .finish()
    }
}

impl Envoy {
    /// A builder for Envoy at `binary` running the module at `wasm`, with an empty plugin configuration.
    pub fn builder(binary: impl Into<PathBuf>, wasm: impl AsRef<Path>) -> EnvoyBuilder {
        EnvoyBuilder {
            binary: binary.into(),
            wasm: wasm.as_ref().to_path_buf(),
            plugin_name: "probe".to_owned(),
            root_id: String::new(),
            vm_id: "probe-vm".to_owned(),
            plugin_configuration: String::new(),
            vm_configuration: String::new(),
            environment: BTreeMap::new(),
            failure_policy: FailurePolicy::default(),
            concurrency: 1,
            clusters: Vec::new(),
            route_cluster: None,
            route_timeout: Duration::from_secs(15),
            log_level: "info".to_owned(),
            wasm_log_level: "trace".to_owned(),
            startup_timeout: Duration::from_secs(30),
        }
    }

    /// The HTTP listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.listener
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The admin API's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// `http://<listener><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// The directory holding the bootstrap and the log (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// GETs an admin API path (e.g. `/stats?filter=wasmcustom`) and returns the body.
    ///
    /// # Errors
    /// Connection failure, timeout, or a status other than 200.
    pub fn admin_get(&self, path_and_query: &str) -> anyhow::Result<String> {
        let response = client::send(
            self.admin_addr(),
            HttpRequest::get(path_and_query),
            ADMIN_TIMEOUT,
        )?;
        if response.status != 200 {
            bail!(
                "envoy admin {path_and_query}: status {}: {}",
                response.status,
                response.body_text()
            );
        }
        Ok(response.body_text())
    }

    /// Every stat whose name contains `filter` (a regex for Envoy), as name → value text.
    ///
    /// # Errors
    /// As [`Envoy::admin_get`].
    pub fn stats(&self, filter: &str) -> anyhow::Result<BTreeMap<String, String>> {
        let body = self.admin_get(&format!("/stats?filter={filter}"))?;
        Ok(body
            .lines()
            .filter_map(|line| line.split_once(": "))
            .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
            .collect())
    }

    /// The plugin's custom metrics (`wasmcustom.*`), keyed without the prefix; counters and gauges as
    /// integers (histograms, which have no single value, are left out).
    ///
    /// # Errors
    /// As [`Envoy::admin_get`].
    pub fn custom_metrics(&self) -> anyhow::Result<BTreeMap<String, i64>> {
        Ok(self
            .stats("wasmcustom")?
            .into_iter()
            .filter_map(|(name, value)| {
                Some((
                    name.strip_prefix("wasmcustom.")?.to_owned(),
                    value.parse().ok()?,
                ))
            })
            .collect())
    }

    /// Envoy's whole log so far.
    ///
    /// # Errors
    /// When the log file cannot be read.
    pub fn log(&self) -> anyhow::Result<String> {
        std::fs::read_to_string(&self.log_path)
            .with_context(|| format!("reading {}", self.log_path.display()))
    }

    /// The plugin's log lines so far, in order.
    ///
    /// # Errors
    /// When the log file cannot be read.
    pub fn wasm_logs(&self) -> anyhow::Result<Vec<WasmLogLine>> {
        let file = std::fs::File::open(&self.log_path)
            .with_context(|| format!("reading {}", self.log_path.display()))?;
        Ok(BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| parse_wasm_log_line(&line))
            .collect())
    }

    /// Waits until the plugin has logged at least `count` messages satisfying `matches`, and returns them.
    ///
    /// # Errors
    /// When `timeout` passes first (the error lists what was logged), or the log cannot be read.
    pub fn wait_for_wasm_logs(
        &self,
        count: usize,
        timeout: Duration,
        matches: impl Fn(&WasmLogLine) -> bool,
    ) -> anyhow::Result<Vec<WasmLogLine>> {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<WasmLogLine> = self
                .wasm_logs()?
                .into_iter()
                .filter(|line| matches(line))
                .collect();
            if found.len() >= count {
                return Ok(found);
            }
            if Instant::now() >= deadline {
                bail!(
                    "envoy: {} of {count} expected plugin log lines within {timeout:?}; matching so far: {found:?}",
                    found.len()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The last `lines` lines of Envoy's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log().unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all.get(all.len().saturating_sub(lines)..)
            .unwrap_or_default()
            .join("\n")
    }

    fn wait_for_admin(
        &mut self,
        admin_path: &Path,
        deadline: Instant,
    ) -> anyhow::Result<SocketAddr> {
        loop {
            if let Ok(text) = std::fs::read_to_string(admin_path)
                && let Ok(addr) = text.trim().parse::<SocketAddr>()
            {
                return Ok(addr);
            }
            self.check_running("before its admin API came up")?;
            if Instant::now() >= deadline {
                bail!(
                    "envoy: admin API not up in time; log tail:\n{}",
                    self.log_tail(30)
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn wait_until_live(&mut self, deadline: Instant) -> anyhow::Result<()> {
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let probe = client::send(
                self.admin_addr(),
                HttpRequest::get("/ready"),
                remaining.min(ADMIN_TIMEOUT),
            );
            if probe.is_ok_and(|response| response.status == 200) {
                return Ok(());
            }
            self.check_running("before it became ready")?;
            if Instant::now() >= deadline {
                bail!("envoy: not LIVE in time; log tail:\n{}", self.log_tail(30));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn read_listener_addr(&self) -> anyhow::Result<SocketAddr> {
        let body = self.admin_get("/listeners?format=json")?;
        let listeners: serde_json::Value =
            serde_json::from_str(&body).context("parsing /listeners")?;
        let socket = &listeners["listener_statuses"][0]["local_address"]["socket_address"];
        let (Some(address), Some(port)) =
            (socket["address"].as_str(), socket["port_value"].as_u64())
        else {
            bail!("envoy: /listeners has no bound listener address: {body}");
        };
        let port = u16::try_from(port).context("listener port out of range")?;
        format!("{address}:{port}")
            .parse()
            .with_context(|| format!("envoy listener address {address}:{port}"))
    }

    fn check_running(&mut self, when: &str) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait().context("polling the Envoy process")? {
            bail!(
                "envoy exited {when} ({status}); log tail:\n{}",
                self.log_tail(40)
            );
        }
        Ok(())
    }

    /// Kills Envoy now and waits for it to exit; also done on drop.
    pub fn stop(&mut self) {
        // Killing an already-exited child fails harmlessly; wait reaps it either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the Envoy process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- envoy log tail ({}) ---\n{}\n--- end of envoy log ---",
                self.log_path.display(),
                self.log_tail(60)
            );
        }
        self.stop();
    }
}

/// Parses Envoy's line for a plugin log call:
/// `[<time>][<thread>][<level>][wasm] [<source>] wasm log <plugin> <vm_id>: <message>`.
pub fn parse_wasm_log_line(line: &str) -> Option<WasmLogLine> {
    let (prefix, rest) = line.split_once("][wasm] ")?;
    let level = prefix.rsplit_once("][")?.1.to_owned();
    let (_, after_marker) = rest.split_once(" wasm log ")?;
    let (_, message) = after_marker.split_once(": ")?;
    Some(WasmLogLine {
        level,
        message: message.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn plugin_log_lines_are_parsed_with_level_and_message() {
        let line = "[2026-11-21 22:06:58.746][17278][info][wasm] [source/extensions/common/wasm/context.cc:1151] wasm log probe probe-vm: probe http on_request_headers#1 get_header: ok \"/x\"";
        assert_eq!(
            parse_wasm_log_line(line),
            Some(WasmLogLine {
                level: "info".into(),
                message: "probe http on_request_headers#1 get_header: ok \"/x\"".into()
            })
        );
        let root_line = "[2026-11-21 22:06:56.601][17272][warning][wasm] [source/extensions/common/wasm/context.cc:1151] wasm log probe-vm: a: b";
        assert_eq!(
            parse_wasm_log_line(root_line),
            Some(WasmLogLine {
                level: "warning".into(),
                message: "a: b".into()
            })
        );
        assert_eq!(
            parse_wasm_log_line("[2026][1][info][main] [x] starting"),
            None
        );
    }

    #[test]
    fn bootstrap_fills_every_placeholder_with_json() {
        let builder = Envoy::builder("/bin/envoy", "/tmp/probe.wasm")
            .plugin_configuration("{\"a\": \"b\\n\"}")
            .env("TOKEN_FILE", "/x")
            .cluster("upstream", "127.0.0.1:9".parse().unwrap())
            .cluster("side", "127.0.0.1:10".parse().unwrap())
            .route_timeout(Duration::from_millis(1500));
        let yaml = builder.bootstrap().unwrap();
        assert!(
            yaml.lines()
                .filter(|line| !line.trim_start().starts_with('#'))
                .all(|line| !line.contains("{{")),
            "{yaml}"
        );
        assert!(yaml.contains(r#"value: "{\"a\": \"b\\n\"}""#), "{yaml}");
        assert!(yaml.contains(r#"timeout: "1.500s""#), "{yaml}");
        assert!(
            yaml.contains(r#"key_values: {"TOKEN_FILE":"/x"}"#),
            "{yaml}"
        );
        assert!(yaml.contains(r#"cluster: "upstream""#), "{yaml}");
    }

    #[test]
    fn bootstrap_without_clusters_or_with_a_bad_route_is_an_error() {
        let err = Envoy::builder("/bin/envoy", "/tmp/probe.wasm")
            .bootstrap()
            .unwrap_err()
            .to_string();
        assert!(err.contains("no cluster"), "{err}");
        let err = Envoy::builder("/bin/envoy", "/tmp/probe.wasm")
            .cluster("upstream", "127.0.0.1:9".parse().unwrap())
            .route_to("missing")
            .bootstrap()
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing"), "{err}");
    }
}
