//! Standalone reverse proxy that runs a proxy-wasm filter on every request (`host-harness serve`).
//!
//! The proxy works like an Envoy with one HTTP filter: N worker threads, each with its own single-threaded
//! runtime and its own VM of the filter, accept connections from one listener; each request runs the
//! filter's callbacks in Envoy's order and streams through a pooled keep-alive client to the upstream. An
//! admin listener answers `/healthz`, `/readyz` and `/metrics`. On shutdown the proxy stops accepting,
//! lets in-flight requests finish up to the drain timeout, and returns.
//!
//! The library entry is [`run`]: listeners bound by the caller (tests bind `127.0.0.1:0`), a resolved
//! [`ProxyConfig`], and a future that resolves when the proxy should shut down. The command line lives in
//! [`cli`]: [`cli::ServeArgs`] and [`cli::serve_main`].
//!
//! # Layout
//! - [`cli`]: `serve` flags, logging set-up, signals, exit codes.
//! - [`config`]: the TOML file, flag overrides, defaults and validation.
//! - [`filter_module`]: the filter module compiled once into the library's `Plugin`.
//! - [`driver`]: one worker's filter VM: serialised callbacks, stream wake-ups, filter http calls, ticks.
//! - [`exchange`]: one request through the filter and the upstream, streaming both ways.
//! - [`http1`]: HTTP/1.1 on both sides: the server clients talk to (no buffer held between requests)
//!   and the upstream client connection (no task or channel per connection), sharing the framing rules.
//! - [`forwarding`]: headers between HTTP messages and the filter: pseudo-headers, hop-by-hop removal,
//!   forwarding headers.
//! - [`identity`]: the caller identity (modes none, whois, trusted_proxy) and identity header removal.
//! - [`whois`]: tailscaled's LocalAPI WhoIs over its unix socket.
//! - [`upstream`]: the per-worker pool of upstream connections (plain or TLS) and upstream error mapping.
//! - [`worker`]: worker threads, accepting, connection draining.
//! - [`admin`]: health, readiness and metrics endpoints.
//! - [`prometheus`]: the Prometheus exposition of the proxy's metrics and the filter's.
//! - [`limit`]: the concurrency limit and its bounded queue.
//! - [`connections`]: the cap on open client connections and its memory-derived default.
//! - [`failure`]: the proxy's own error responses.
//! - [`product`]: the settings that fit the proxy to its filter and API (plugin name, state key,
//!   readiness metric, error shape), with the credential filter's values as defaults.
//! - [`state_file`]: the filter's OAuth2 token state kept in a file across restarts.

pub mod admin;
pub mod cli;
pub mod config;
pub mod connections;
pub mod driver;
pub mod exchange;
pub mod failure;
pub mod filter_module;
pub mod forwarding;
pub mod http1;
pub mod identity;
pub mod in_flight;
pub mod limit;
pub mod product;
pub mod prometheus;
pub mod state_file;
pub mod upstream;
pub mod whois;
pub mod worker;

/// Polls `future` once: `Some` with its output when it was ready (tests of the proxy's waiting parts).
#[cfg(test)]
pub(crate) async fn poll_once<F: std::future::Future + Unpin>(future: F) -> Option<F::Output> {
    let mut future = future;
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

use host_harness::plugin::Plugin;
use tokio::sync::{oneshot, watch};

pub use config::{ConfigError, Overrides, ProxyConfig};
pub use driver::FilterFault;

use worker::{Phase, ProxyState};

/// The two sockets the proxy serves, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// Proxied traffic.
    pub proxy: std::net::TcpListener,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub admin: std::net::TcpListener,
}

impl Listeners {
    /// Binds both listeners at the configured addresses.
    ///
    /// # Errors
    /// An address is in use or not available on this host; the error names it.
    pub fn bind(config: &ProxyConfig) -> Result<Self, ProxyError> {
        let bind = |address| {
            std::net::TcpListener::bind(address)
                .map_err(|source| ProxyError::Bind { address, source })
        };
        Ok(Self {
            proxy: bind(config.listen)?,
            admin: bind(config.admin_listen)?,
        })
    }
}

/// Where the listeners actually listen.
#[derive(Debug, Clone, Copy)]
struct BoundAddresses {
    proxy: std::net::SocketAddr,
    admin: std::net::SocketAddr,
}

/// Why the proxy could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: std::net::SocketAddr,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// A listener could not be prepared for use.
    #[error("cannot use the {which} listener: {source}")]
    Listener {
        /// `proxy` or `admin`.
        which: &'static str,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The filter could not be loaded or rejected its configuration.
    #[error("filter: {0}")]
    Filter(String),
    /// The token state file exists but cannot be used.
    #[error(transparent)]
    StateFile(#[from] state_file::StateFileError),
    /// A worker thread could not be started.
    #[error("cannot start worker {index}: {source}")]
    Worker {
        /// The worker's number.
        index: usize,
        /// What the operating system said.
        source: std::io::Error,
    },
}

/// Runs the proxy with the filter module named in `config` until `shutdown` resolves, then drains.
///
/// # Errors
/// The filter does not load or rejects its configuration, a listener is unusable, or a worker cannot start.
pub async fn run(
    listeners: Listeners,
    config: ProxyConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    let plugin = filter_module::load(&config).map_err(|err| ProxyError::Filter(err.to_string()))?;
    let state = match (
        &config.state_file,
        config.state_key.resolve(&config.plugin_config),
    ) {
        (Some(path), Some(key)) => {
            let mut file = state_file::StateFile::new(path, plugin.vm_id(), key);
            if file.load_into(plugin.shared_registry())? {
                tracing::info!(path = %path.display(), "token state restored from the state file");
            }
            Some(Arc::new(Mutex::new(file)))
        }
        (Some(path), None) => {
            tracing::info!(path = %path.display(), "state_file is set but the filter's configuration names no state to keep");
            None
        }
        (None, _) => None,
    };
    let persisting = state
        .as_ref()
        .map(|file| tokio::spawn(persist_state(Arc::clone(file), plugin.clone())));
    let result = serve(listeners, config, plugin.clone(), shutdown).await;
    if let Some(task) = persisting {
        task.abort();
    }
    if let Some(file) = state {
        persist_once(&file, &plugin);
    }
    result
}

/// How often the token state is checked for a rotation to write out.
const STATE_PERSIST_INTERVAL: Duration = Duration::from_secs(1);

/// Writes the filter's token state to its file whenever it changes, until aborted.
async fn persist_state(file: Arc<Mutex<state_file::StateFile>>, plugin: Plugin) {
    let mut interval = tokio::time::interval(STATE_PERSIST_INTERVAL);
    loop {
        interval.tick().await;
        persist_once(&file, &plugin);
    }
}

fn persist_once(file: &Mutex<state_file::StateFile>, plugin: &Plugin) {
    let mut file = file
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match file.persist_if_changed(plugin.shared_registry()) {
        Ok(true) => {
            tracing::info!(path = %file.path().display(), "token state written to the state file")
        }
        Ok(false) => {}
        Err(err) => tracing::error!(error = %err, "token state not persisted; retrying"),
    }
}

/// Serves with VMs of `plugin` until `shutdown` resolves, then drains.
async fn serve(
    listeners: Listeners,
    config: ProxyConfig,
    plugin: Plugin,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    listeners
        .proxy
        .set_nonblocking(true)
        .map_err(|source| ProxyError::Listener {
            which: "proxy",
            source,
        })?;
    listeners
        .admin
        .set_nonblocking(true)
        .map_err(|source| ProxyError::Listener {
            which: "admin",
            source,
        })?;
    let bound = BoundAddresses {
        proxy: listeners
            .proxy
            .local_addr()
            .map_err(|source| ProxyError::Listener {
                which: "proxy",
                source,
            })?,
        admin: listeners
            .admin
            .local_addr()
            .map_err(|source| ProxyError::Listener {
                which: "admin",
                source,
            })?,
    };
    let admin_listener = tokio::net::TcpListener::from_std(listeners.admin).map_err(|source| {
        ProxyError::Listener {
            which: "admin",
            source,
        }
    })?;

    let shared = Arc::new(ProxyState {
        limiter: limit::Limiter::new(
            config.max_concurrency.get(),
            config.queue,
            config.queue_timeout,
        ),
        metrics: prometheus::ProxyMetrics::new(filter_metrics(&plugin)),
        connections: Arc::new(connections::ConnectionGate::new(config.max_connections)),
        plugin,
        configured: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        closing: AtomicBool::new(false),
        request_id_prefix: request_id_prefix(),
        config,
    });
    let admin = tokio::spawn(admin::serve(admin_listener, Arc::clone(&shared)));
    let result = serve_workers(listeners.proxy, bound, &shared, shutdown).await;
    admin.abort();
    result
}

async fn serve_workers(
    proxy: std::net::TcpListener,
    bound: BoundAddresses,
    shared: &Arc<ProxyState>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProxyError> {
    let (phase_sender, phase) = watch::channel(Phase::Running);
    let (started_sender, started) = std::sync::mpsc::channel();
    let mut finished = Vec::new();
    let mut start_error = None;
    for index in 0..shared.config.workers.get() {
        let listener = match proxy.try_clone() {
            Ok(listener) => listener,
            Err(source) => {
                start_error = Some(ProxyError::Listener {
                    which: "proxy",
                    source,
                });
                break;
            }
        };
        let (done_sender, done) = oneshot::channel::<()>();
        let worker_shared = Arc::clone(shared);
        let worker_phase = phase.clone();
        let worker_started = started_sender.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("proxy-worker-{index}"))
            .spawn(move || {
                worker::run_worker(index, listener, worker_shared, worker_phase, worker_started);
                drop(done_sender);
            });
        match spawned {
            Ok(_) => finished.push(done),
            Err(source) => {
                start_error = Some(ProxyError::Worker { index, source });
                break;
            }
        }
    }
    drop(started_sender);
    drop(proxy);

    // Workers build their VMs in parallel; wait for every report (a blocking wait, off the runtime).
    let expected = finished.len();
    let reports =
        tokio::task::spawn_blocking(move || started.iter().take(expected).collect::<Vec<_>>())
            .await
            .unwrap_or_default();
    if start_error.is_none() {
        if reports.len() < expected {
            start_error = Some(ProxyError::Filter(
                "a worker stopped during start-up".to_owned(),
            ));
        } else if let Some(fault) = reports.into_iter().find_map(Result::err) {
            start_error = Some(ProxyError::Filter(fault.to_string()));
        }
    }
    if let Some(error) = start_error {
        let _ = phase_sender.send(Phase::Closing);
        for done in finished {
            let _ = done.await;
        }
        return Err(error);
    }
    shared.configured.store(true, Ordering::Release);
    // The bound addresses, not the configured ones: with port 0 this line is how a caller learns the port.
    // The embedded default's credential by variable and header, never its value.
    let credential = shared.config.default_credential.as_ref().map_or_else(
        || "from the plugin configuration".to_owned(),
        ToString::to_string,
    );
    tracing::info!(workers = expected, listen = %bound.proxy, admin_listen = %bound.admin, upstream = %shared.config.upstream, credential = %credential, "proxy ready");

    shutdown.await;
    shared.draining.store(true, Ordering::Release);
    tracing::info!(
        in_flight = shared.metrics.in_flight(),
        drain_timeout_ms = shared.config.drain_timeout.as_millis() as u64,
        "shutting down: draining"
    );
    let _ = phase_sender.send(Phase::Draining);
    let mut running: Vec<Option<oneshot::Receiver<()>>> = finished.into_iter().map(Some).collect();
    if tokio::time::timeout(shared.config.drain_timeout, wait_for_workers(&mut running))
        .await
        .is_err()
    {
        tracing::warn!(
            in_flight = shared.metrics.in_flight(),
            "drain timeout passed; closing the remaining connections"
        );
        shared.closing.store(true, Ordering::Release);
        let _ = phase_sender.send(Phase::Closing);
        wait_for_workers(&mut running).await;
    }
    tracing::info!("proxy stopped");
    Ok(())
}

/// Waits until every worker thread has finished; a worker seen finished is not waited for again, so the
/// wait can be cut short by a timeout and resumed.
async fn wait_for_workers(running: &mut [Option<oneshot::Receiver<()>>]) {
    for slot in running.iter_mut() {
        if let Some(done) = slot.as_mut() {
            let _ = done.await;
            *slot = None;
        }
    }
}

/// The filter's metrics as the exposition reads them at each scrape: every VM's, from the plugin.
fn filter_metrics(plugin: &Plugin) -> prometheus::MetricSource {
    let plugin = plugin.clone();
    Arc::new(move || plugin.metrics())
}

/// A prefix that makes request ids differ between processes: pid and start time, in hex.
fn request_id_prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    format!("{:x}{:05x}", std::process::id(), nanos & 0xf_ffff)
}
