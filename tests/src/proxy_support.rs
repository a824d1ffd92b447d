//! The standalone proxy under test: `host_harness_cli::proxy::run` with the real `filter.wasm`, its listeners
//! bound on `127.0.0.1:0`, on its own thread and runtime, stopped (and drained) when dropped.
//!
//! ```no_run
//! # use integration_tests::{proxy_support::proxy, upstream::Upstream};
//! let upstream = Upstream::echo()?;
//! let proxy = proxy().upstream(&upstream.url("")).token("sk-ant-oat01-test").start()?;
//! // ... send requests to proxy.addr() ...
//! # anyhow::Ok(())
//! ```
//!
//! [`serve_process`] starts the real binary instead, for tests that read its log lines.
//!
//! The host environment never reaches the proxy under test: a developer's real token cannot leak into a
//! test, and a test's token is always the one it set.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use host_harness_cli::proxy::{Listeners, Overrides, ProxyConfig, ProxyError};
use tokio::sync::oneshot;

use crate::client::{self, HttpRequest, HttpResponse};

/// How long start-up (module compilation and every worker's VM) may take.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Describes a proxy to start; see [`proxy`].
#[derive(Debug, Clone)]
pub struct ProxyBuilder {
    toml: String,
    overrides: Overrides,
    plugin_config: Option<String>,
}

/// A proxy with two workers, the workspace's filter, and the embedded default plugin configuration.
pub fn proxy() -> ProxyBuilder {
    ProxyBuilder {
        toml: String::new(),
        overrides: Overrides {
            filter: Some(PathBuf::from(env!("FILTER_WASM"))),
            workers: Some(2),
            ..Overrides::default()
        },
        plugin_config: None,
    }
}

impl ProxyBuilder {
    /// The upstream base URL (`http://127.0.0.1:PORT`).
    pub fn upstream(mut self, url: &str) -> Self {
        self.overrides.upstream = Some(url.trim_end_matches('/').to_owned());
        self
    }

    /// Sets `ANTHROPIC_OAUTH_TOKEN` in the VM environment (what the default configuration reads).
    pub fn token(self, token: &str) -> Self {
        self.env("ANTHROPIC_OAUTH_TOKEN", token)
    }

    /// Sets a variable in the VM environment.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.overrides.env.push(format!("{key}={value}"));
        self
    }

    /// A named cluster for the filter's http calls.
    pub fn cluster(mut self, name: &str, url: &str) -> Self {
        self.overrides.clusters.push(format!("{name}={url}"));
        self
    }

    /// Another filter module instead of the workspace's filter (e.g. the probe filter).
    pub fn filter(mut self, path: &str) -> Self {
        self.overrides.filter = Some(PathBuf::from(path));
        self
    }

    /// The plugin configuration (JSON) instead of the embedded default.
    pub fn plugin_config(mut self, json: &str) -> Self {
        self.plugin_config = Some(json.to_owned());
        self
    }

    /// Adds lines to the TOML configuration file (e.g. `"request_timeout = \"300ms\""`).
    pub fn config(mut self, toml: &str) -> Self {
        self.toml.push_str(toml);
        self.toml.push('\n');
        self
    }

    /// Persists the filter's token state in `path` (`state_file` in the TOML configuration).
    pub fn state_file(self, path: &Path) -> Self {
        self.config(&format!("state_file = {:?}", path.display().to_string()))
    }

    /// Number of workers.
    pub fn workers(mut self, workers: usize) -> Self {
        self.overrides.workers = Some(workers);
        self
    }

    /// Binds the listeners, starts the proxy and waits until every worker's filter is configured.
    ///
    /// # Errors
    /// The configuration is refused, the proxy fails to start, or it does not come up in time.
    pub fn start(self) -> anyhow::Result<RunningProxy> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let mut overrides = self.overrides;
        if let Some(json) = &self.plugin_config {
            let path = dir.path().join("plugin.json");
            std::fs::write(&path, json).context("writing the plugin configuration")?;
            overrides.plugin_config = Some(path);
        }
        let config = ProxyConfig::from_toml(
            Path::new("proxy.toml"),
            &self.toml,
            dir.path(),
            &overrides,
            |_| None,
        )?;
        let proxy_listener =
            TcpListener::bind("127.0.0.1:0").context("binding the proxy listener")?;
        let admin_listener =
            TcpListener::bind("127.0.0.1:0").context("binding the admin listener")?;
        let addr = proxy_listener.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;
        let listeners = Listeners {
            proxy: proxy_listener,
            admin: admin_listener,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("proxy-under-test".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|err| ProxyError::Filter(err.to_string()))?;
                runtime.block_on(host_harness_cli::proxy::run(listeners, config, async {
                    let _ = stopped.await;
                }))
            })?;
        let mut running = RunningProxy {
            addr,
            admin_addr,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        };
        running.wait_configured()?;
        Ok(running)
    }
}

/// A proxy running in this process.
#[derive(Debug)]
pub struct RunningProxy {
    addr: SocketAddr,
    admin_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), ProxyError>>>,
    _dir: tempfile::TempDir,
}

impl RunningProxy {
    /// The proxy listener.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Sends one request through the proxy.
    ///
    /// # Errors
    /// Connection failure, protocol error or timeout.
    pub fn send(&self, request: HttpRequest) -> anyhow::Result<HttpResponse> {
        client::send(self.addr, request, Duration::from_secs(20))
    }

    /// `GET path` on the admin listener.
    ///
    /// # Errors
    /// Connection failure, protocol error or timeout.
    pub fn admin(&self, path: &str) -> anyhow::Result<HttpResponse> {
        client::send(
            self.admin_addr,
            HttpRequest::get(path),
            Duration::from_secs(10),
        )
    }

    /// The value of one unlabelled sample in `/metrics`, e.g. `proxy_in_flight_requests`.
    ///
    /// # Errors
    /// The scrape fails or the sample is missing.
    pub fn metric(&self, sample: &str) -> anyhow::Result<f64> {
        let text = self.admin("/metrics")?.body_text();
        metric_value(&text, sample).with_context(|| format!("no sample {sample} in:\n{text}"))
    }

    fn wait_configured(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.thread.as_ref().is_some_and(JoinHandle::is_finished) {
                let outcome = self.thread.take().map(JoinHandle::join);
                return match outcome {
                    Some(Ok(Err(err))) => {
                        Err(anyhow::Error::new(err).context("the proxy failed to start"))
                    }
                    _ => Err(anyhow::anyhow!("the proxy stopped during start-up")),
                };
            }
            if let Ok(response) = self.admin("/readyz")
                && !response.body_text().contains("not configured")
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the proxy did not come up within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Asks the proxy to shut down (as SIGTERM does) without waiting.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts the proxy down and waits until it has drained and returned.
    ///
    /// # Errors
    /// The proxy returned an error or its thread panicked.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.begin_shutdown();
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result.context("the proxy returned an error"),
            Some(Err(_)) => Err(anyhow::anyhow!("the proxy thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.begin_shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The value of an unlabelled (or fully labelled, e.g. `x{a="b"}`) sample in a Prometheus exposition.
pub fn metric_value(exposition: &str, sample: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(sample)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// A loopback address nothing listens on: bound, then released.
///
/// # Errors
/// Binding fails.
pub fn closed_port_url() -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(format!("http://{addr}"))
}

/// `host-harness serve` as a child process, for tests that read what an operator sees: its JSON log
/// lines (the filter's among them) on stdout. Killed on drop.
///
/// The binary is `target/<profile>/host-harness` next to the test binary (`make test` builds it; so
/// does `cargo build -p host-harness-cli`).
#[derive(Debug)]
pub struct ServeProcess {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
    addr: SocketAddr,
    admin_addr: SocketAddr,
    _dir: tempfile::TempDir,
}

/// What to start `serve` with; see [`serve_process`].
#[derive(Debug, Clone, Default)]
pub struct ServeProcessBuilder {
    args: Vec<String>,
    plugin_config: Option<String>,
}

/// A `serve` child on `127.0.0.1:0` (proxy and admin) with two workers and the workspace's filter.
pub fn serve_process() -> ServeProcessBuilder {
    ServeProcessBuilder::default().args(&[
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--filter",
        env!("FILTER_WASM"),
    ])
}

impl ServeProcessBuilder {
    /// More command-line arguments.
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|arg| (*arg).to_owned()));
        self
    }

    /// The plugin configuration (JSON), written to a file for `--plugin-config`.
    pub fn plugin_config(mut self, json: &str) -> Self {
        self.plugin_config = Some(json.to_owned());
        self
    }

    /// Starts the process and waits for its `proxy ready` line.
    ///
    /// # Errors
    /// The binary is missing, the process cannot start, or it is not ready within a minute.
    pub fn start(self) -> anyhow::Result<ServeProcess> {
        let exe = std::env::current_exe()?;
        let binary = exe
            .parent()
            .and_then(Path::parent)
            .map(|profile| profile.join("host-harness"))
            .context("locating the host-harness binary")?;
        anyhow::ensure!(
            binary.exists(),
            "{} is missing: build it with `cargo build -p host-harness-cli` (make test does)",
            binary.display()
        );
        let dir = tempfile::tempdir()?;
        let mut command = std::process::Command::new(binary);
        command
            .arg("serve")
            .args(&self.args)
            .env_remove("RUST_LOG")
            .env_remove("ANTHROPIC_OAUTH_TOKEN")
            .env_remove("ANTHROPIC_API_KEY");
        if let Some(json) = &self.plugin_config {
            let path = dir.path().join("plugin.json");
            std::fs::write(&path, json)?;
            command.arg("--plugin-config").arg(path);
        }
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .context("starting host-harness serve")?;
        let stdout = child.stdout.take().context("the child's stdout")?;
        let (sender, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut process = ServeProcess {
            child,
            lines,
            seen: Vec::new(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            _dir: dir,
        };
        let ready = process.wait_for_lines(1, START_TIMEOUT, |record| {
            record["message"] == "proxy ready"
        })?;
        let address = |field: &str| -> anyhow::Result<SocketAddr> {
            ready[0][field]
                .as_str()
                .and_then(|text| text.parse().ok())
                .with_context(|| format!("no {field} in the ready line {}", ready[0]))
        };
        process.addr = address("listen")?;
        process.admin_addr = address("admin_listen")?;
        Ok(process)
    }
}

impl ServeProcess {
    /// The proxy listener.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Sends one request through the proxy.
    ///
    /// # Errors
    /// Connection failure, protocol error or timeout.
    pub fn send(&self, request: HttpRequest) -> anyhow::Result<HttpResponse> {
        client::send(self.addr, request, Duration::from_secs(20))
    }

    /// The `/metrics` exposition.
    ///
    /// # Errors
    /// The scrape fails.
    pub fn metrics(&self) -> anyhow::Result<String> {
        let response = client::send(
            self.admin_addr,
            HttpRequest::get("/metrics"),
            Duration::from_secs(10),
        )?;
        Ok(response.body_text())
    }

    /// Waits until `count` JSON log lines satisfy `matches` (counting every line logged since start),
    /// and returns them.
    ///
    /// # Errors
    /// When `timeout` passes first; the message lists what was logged.
    pub fn wait_for_lines(
        &mut self,
        count: usize,
        timeout: Duration,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<Vec<serde_json::Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<serde_json::Value> = self
                .seen
                .iter()
                .filter_map(|line| serde_json::from_str(line).ok())
                .filter(|record| matches(record))
                .collect();
            if found.len() >= count {
                return Ok(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => anyhow::bail!(
                    "{} of {count} expected log lines within {timeout:?}; logged:\n{}",
                    found.len(),
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Every line logged so far.
    pub fn logged(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the sample of `name` whose labels are exactly `labels`, in any order, in a Prometheus
/// exposition (`serve`'s `/metrics` or Envoy's `/stats/prometheus`). Label values must not hold `"`.
pub fn labelled_value(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Vec<(&str, &str)> = labels.to_vec();
    wanted.sort_unstable();
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (set, value) = match rest.strip_prefix('{') {
            Some(inside) => inside.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        let mut found: Vec<(&str, &str)> = set
            .split("\",")
            .filter(|pair| !pair.is_empty())
            .filter_map(|pair| {
                let (key, value) = pair.split_once("=\"")?;
                Some((key, value.trim_end_matches('"')))
            })
            .collect();
        found.sort_unstable();
        (found == wanted).then(|| value.trim().parse().ok())?
    })
}
