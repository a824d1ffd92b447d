//! `host-harness serve`: flags, JSON logs, signals, exit codes.
//!
//! Exit codes: 0 after a clean shutdown (drain included), 2 for a configuration the proxy cannot use
//! (printed as one line on stderr), 1 when the proxy fails while starting or running.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

use super::config::{Overrides, ProxyConfig};
use super::identity::IdentityOverrides;
use super::{Listeners, ProxyError};

/// Flags of `host-harness serve`; each overrides the matching field of the configuration file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Proxy listen address [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Admin listen address for /healthz, /readyz, /metrics [default: 127.0.0.1:9901].
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// Upstream base URL, http or https [default: https://api.anthropic.com].
    #[arg(long, value_name = "URL")]
    pub upstream: Option<String>,
    /// The proxy-wasm filter module [default: the workspace's release build of the filter].
    #[arg(long, value_name = "PATH")]
    pub filter: Option<PathBuf>,
    /// Plugin configuration file, handed to the filter verbatim [default: the Anthropic preset].
    #[arg(long, value_name = "FILE")]
    pub plugin_config: Option<PathBuf>,
    /// The root id, as Envoy's `root_id` (SDKs such as AssemblyScript's pick their root context by it) [default: empty].
    #[arg(long, value_name = "ID")]
    pub root_id: Option<String>,
    /// The VM id, as Envoy's `vm_config.vm_id`; scopes shared data and queues [default: empty].
    #[arg(long, value_name = "ID")]
    pub vm_id: Option<String>,
    /// VM configuration file, handed to `on_vm_start` verbatim [default: none].
    #[arg(long, value_name = "FILE")]
    pub vm_config: Option<PathBuf>,
    /// Environment variable for the filter VM (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Named upstream the filter may call with dispatch_http_call (repeatable).
    #[arg(long = "cluster", value_name = "NAME=URL")]
    pub clusters: Vec<String>,
    /// Host environment variable passed through to the VM (repeatable) [default: ANTHROPIC_OAUTH_TOKEN].
    #[arg(long = "host-env", value_name = "KEY")]
    pub host_env: Vec<String>,
    /// Worker threads, each with its own VM [default: available parallelism].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Requests processed at once [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_concurrency: Option<usize>,
    /// Client connections open at once; more are closed on accept [default: derived from memory].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Requests allowed to wait for a slot before 503 [default: 1024].
    #[arg(long, value_name = "N")]
    pub queue: Option<usize>,
    /// Upstream connect timeout, e.g. 5s or 500ms [default: 5s].
    #[arg(long, value_name = "DURATION")]
    pub connect_timeout: Option<String>,
    /// Time allowed until the upstream's response headers [default: 600s].
    #[arg(long, value_name = "DURATION")]
    pub request_timeout: Option<String>,
    /// Time in-flight requests get after SIGTERM/SIGINT [default: 600s].
    #[arg(long, value_name = "DURATION")]
    pub drain_timeout: Option<String>,
    /// Where a rotated refresh token is persisted.
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<PathBuf>,
    /// Where the caller identity comes from: none, whois or trusted_proxy [default: none].
    #[arg(long, value_name = "MODE")]
    pub identity: Option<String>,
    /// tailscaled's LocalAPI socket for --identity whois [default: /var/run/tailscale/tailscaled.sock].
    #[arg(long, value_name = "PATH")]
    pub whois_socket: Option<PathBuf>,
    /// A front proxy allowed to set the identity headers, for --identity trusted_proxy (repeatable).
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    pub trusted_proxies: Vec<String>,
    /// Log filter (tracing directives, e.g. `info` or `warn,access=off`); RUST_LOG overrides it.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    pub log_level: String,
}

impl ServeArgs {
    /// The flags that override configuration file fields.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            admin_listen: self.admin_listen.clone(),
            upstream: self.upstream.clone(),
            filter: self.filter.clone(),
            plugin_config: self.plugin_config.clone(),
            root_id: self.root_id.clone(),
            vm_id: self.vm_id.clone(),
            vm_config: self.vm_config.clone(),
            workers: self.workers,
            max_concurrency: self.max_concurrency,
            max_connections: self.max_connections,
            queue: self.queue,
            connect_timeout: self.connect_timeout.clone(),
            request_timeout: self.request_timeout.clone(),
            drain_timeout: self.drain_timeout.clone(),
            host_env_keys: self.host_env.clone(),
            state_file: self.state_file.clone(),
            env: self.env.clone(),
            clusters: self.clusters.clone(),
            identity: IdentityOverrides {
                mode: self.identity.clone(),
                whois_socket: self.whois_socket.clone(),
                trusted_proxies: self.trusted_proxies.clone(),
            },
        }
    }

    /// Loads the configuration file (if any) and applies these flags over it.
    ///
    /// # Errors
    /// The first unusable value, naming the field or flag.
    pub fn load_config(&self) -> Result<ProxyConfig, super::ConfigError> {
        ProxyConfig::load(self.config.as_deref(), &self.overrides(), |key| {
            std::env::var(key).ok()
        })
    }
}

/// Runs `serve` to completion: JSON logs on stdout, the proxy until SIGTERM/SIGINT, then drain.
pub fn serve_main(args: ServeArgs) -> ExitCode {
    // Log lines go through a writer thread, so a request never waits on a write to stdout; the guard
    // flushes what is queued when `serve` returns.
    let (writer, _flush_on_exit) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("proxy-log-writer")
        .finish(std::io::stdout());
    init_logging(&args.log_level, writer);
    let config = match args.load_config() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("host-harness serve: {err}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("host-harness serve: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = shutdown_signal();
        let listeners = Listeners::bind(&config)?;
        super::run(listeners, config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err @ (ProxyError::Config(_) | ProxyError::Filter(_) | ProxyError::StateFile(_))) => {
            eprintln!("host-harness serve: {err}");
            ExitCode::from(2)
        }
        Err(err) => {
            eprintln!("host-harness serve: {err}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(default_filter: &str, writer: tracing_appender::non_blocking::NonBlocking) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(writer)
        .try_init();
}

/// Resolves on the first SIGTERM or SIGINT. The handlers are installed when this is called (inside a
/// runtime), so a signal that arrives while the proxy is still starting is not lost.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (terminate, interrupt) {
                (Ok(mut terminate), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = terminate.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
                        _ = interrupt.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
