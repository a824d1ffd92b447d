//! Worker threads: each has its own single-threaded runtime, its own filter VM and upstream pool, and
//! accepts connections from the shared listener. A connection and all its requests stay on one worker.
//!
//! Draining: on shutdown a worker stops accepting, asks every open connection to finish its current
//! request and close (idle keep-alive connections close at once), and returns when none is left. If the
//! drain timeout passes first, the proxy moves to the closing phase and the worker drops what is left.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use http::HeaderValue;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use host_harness::plugin::Plugin;

use super::config::ProxyConfig;
use super::connections::{ConnectionGate, ConnectionPass};
use super::driver::{FilterDriver, FilterFault};
use super::exchange::{self, ConnectionInfo};
use super::http1;
use super::identity::ConnectionIdentity;
use super::in_flight::InFlight;
use super::limit::Limiter;
use super::prometheus::ProxyMetrics;
use super::upstream;

/// Time allowed to read a request head before the connection is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the proxy is in its life; workers watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Accepting and serving.
    Running,
    /// No new connections; open ones finish their requests.
    Draining,
    /// The drain timeout passed: drop everything left.
    Closing,
}

/// The proxy as every worker and the admin listener see it: configuration, limits, metrics, the compiled
/// filter and the life-cycle flags.
#[derive(Debug)]
pub struct ProxyState {
    /// The resolved configuration.
    pub config: ProxyConfig,
    /// The concurrency limit.
    pub limiter: Limiter,
    /// The proxy's metrics.
    pub metrics: ProxyMetrics,
    /// The cap on open client connections, shared by every worker.
    pub connections: Arc<ConnectionGate>,
    /// The compiled filter: every worker starts its VM from it, and its metrics are every VM's.
    pub plugin: Plugin,
    /// Every worker has its filter configured.
    pub configured: AtomicBool,
    /// Shutdown started.
    pub draining: AtomicBool,
    /// The drain timeout passed: what is still open is being dropped.
    pub closing: AtomicBool,
    /// Prefix of this process's request ids.
    pub request_id_prefix: String,
}

/// One worker's state, owned by its thread.
pub struct Worker {
    /// Worker number, from 0.
    pub index: usize,
    /// State shared with the other workers.
    pub shared: Arc<ProxyState>,
    /// The worker's filter VM.
    pub driver: Rc<FilterDriver>,
    /// The upstream `Host` header used unless the filter rewrites `:authority`.
    pub upstream_host: HeaderValue,
    /// `{process prefix}-{worker}-`: the part of every request id that never changes on this worker.
    request_id_stem: String,
    requests: Cell<u64>,
    connections: Cell<u64>,
    open_connections: Rc<InFlight>,
}

impl Worker {
    /// A request id unique within this process: prefix, worker, sequence.
    pub fn next_request_id(&self) -> String {
        let sequence = self.requests.get().wrapping_add(1);
        self.requests.set(sequence);
        request_id(&self.request_id_stem, sequence)
    }
}

/// `stem` followed by `sequence` in decimal; written by hand because it runs on every request and
/// `format!` costs several times as much.
fn request_id(stem: &str, sequence: u64) -> String {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    let mut rest = sequence;
    while start > 0 {
        start -= 1;
        if let Some(digit) = digits.get_mut(start) {
            *digit = b'0' + (rest % 10) as u8;
        }
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let mut id = String::with_capacity(stem.len() + digits.len() - start);
    id.push_str(stem);
    id.extend(digits.iter().skip(start).map(|&digit| char::from(digit)));
    id
}

/// What a worker reports once its VM is ready (or could not be made).
pub type Started = Result<(), FilterFault>;

/// Runs worker `index` on the current thread until it has drained; reports start-up on `started`.
pub fn run_worker(
    index: usize,
    listener: std::net::TcpListener,
    shared: Arc<ProxyState>,
    phase: watch::Receiver<Phase>,
    started: std::sync::mpsc::Sender<Started>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            let _ = started.send(Err(FilterFault(format!(
                "worker {index}: cannot start its runtime: {err}"
            ))));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, serve(index, listener, shared, phase, started));
}

async fn serve(
    index: usize,
    listener: std::net::TcpListener,
    shared: Arc<ProxyState>,
    mut phase: watch::Receiver<Phase>,
    started: std::sync::mpsc::Sender<Started>,
) {
    let setup = || -> Result<(Rc<Worker>, TcpListener), FilterFault> {
        let listener = TcpListener::from_std(listener).map_err(|err| {
            FilterFault(format!("worker {index}: cannot use the listener: {err}"))
        })?;
        let client = upstream::build_client(shared.config.connect_timeout)
            .map_err(|err| FilterFault(err.to_string()))?;
        let vm = shared.plugin.start_vm()?;
        let clusters = Arc::new(shared.config.clusters.clone());
        let driver = FilterDriver::new(index, vm, client, clusters);
        let upstream_host = HeaderValue::from_str(shared.config.upstream.authority.as_str())
            .map_err(|err| FilterFault(err.to_string()))?;
        let worker = Rc::new(Worker {
            index,
            shared: Arc::clone(&shared),
            driver,
            upstream_host,
            request_id_stem: format!("{}-{index}-", shared.request_id_prefix),
            requests: Cell::new(0),
            connections: Cell::new(0),
            open_connections: Rc::default(),
        });
        Ok((worker, listener))
    };
    let (worker, listener) = match setup() {
        Ok(ready) => {
            let _ = started.send(Ok(()));
            ready
        }
        Err(fault) => {
            let _ = started.send(Err(fault));
            return;
        }
    };
    let timers = tokio::task::spawn_local(Rc::clone(&worker.driver).run_timers());

    // The read buffer holds at most one request head: a connection sending a partial head costs its
    // size, not more.
    let http = http1::Settings {
        max_head_bytes: shared.config.max_request_header_bytes,
        head_timeout: HEADER_READ_TIMEOUT,
        send_timeout: shared.config.idle_timeout,
    };

    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, client)) => match shared.connections.admit() {
                    Some(pass) => {
                        tokio::task::spawn_local(serve_connection(Rc::clone(&worker), http, stream, client, phase.clone(), pass));
                    }
                    // Closed at once: a client holding connections open cannot take the memory of more.
                    None => {
                        shared.metrics.count_connection_rejected();
                        drop(stream);
                    }
                },
                Err(err) => {
                    // Out of file descriptors and similar: back off briefly instead of spinning.
                    tracing::warn!(worker = index, error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            changed = phase.changed() => {
                if changed.is_err() || *phase.borrow() != Phase::Running {
                    break;
                }
            }
        }
    }
    drop(listener);

    // Draining: wait for open connections to finish, and for the filter's http calls (a token refresh
    // whose rotated refresh token must reach the state file), unless the proxy moves on to closing.
    loop {
        let idle = worker.open_connections.count() == 0 && worker.driver.calls().count() == 0;
        if idle || *phase.borrow() == Phase::Closing {
            break;
        }
        tokio::select! {
            () = worker.open_connections.none_left() => {}
            () = worker.driver.calls().none_left() => {}
            changed = phase.changed() => if changed.is_err() { break },
        }
    }
    timers.abort();
    let left = worker.open_connections.count();
    if left > 0 {
        tracing::warn!(
            worker = index,
            connections = left,
            "drain timeout passed; closing connections still open"
        );
    }
}

async fn serve_connection(
    worker: Rc<Worker>,
    http: http1::Settings,
    stream: TcpStream,
    client: SocketAddr,
    phase: watch::Receiver<Phase>,
    _pass: ConnectionPass,
) {
    // Counted whichever way the connection task ends.
    let _open = worker.open_connections.enter();
    let _gauge = OpenConnection::new(&worker.shared.metrics);
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(client);
    let id = worker.connections.get().wrapping_add(1);
    worker.connections.set(id);
    // Formatted once per connection: every request on it hands these to the filter.
    let connection = Rc::new(ConnectionInfo {
        client_ip: client.ip().to_string(),
        client_address: client.to_string(),
        local_address: local.to_string(),
        id,
        identity: ConnectionIdentity::new(&worker.shared.config.identity, client),
    });
    let service = |request| exchange::handle(request, Rc::clone(&worker), Rc::clone(&connection));
    let refuse = |error| exchange::refuse_head(&worker, error);
    http1::serve(stream, http, service, refuse, phase).await;
}

/// Keeps `proxy_open_connections` counting this connection until its task ends.
struct OpenConnection<'a>(&'a ProxyMetrics);

impl<'a> OpenConnection<'a> {
    fn new(metrics: &'a ProxyMetrics) -> Self {
        metrics.connection_opened();
        Self(metrics)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

#[cfg(test)]
mod tests {
    use super::request_id;

    #[test]
    fn request_ids_are_the_stem_and_the_sequence_in_decimal() {
        assert_eq!(request_id("p-0-", 0), "p-0-0");
        assert_eq!(request_id("p-0-", 7), "p-0-7");
        assert_eq!(request_id("p-1-", 10), "p-1-10");
        assert_eq!(request_id("", 9_876_543_210), "9876543210");
        assert_eq!(request_id("x-", u64::MAX), format!("x-{}", u64::MAX));
    }
}
