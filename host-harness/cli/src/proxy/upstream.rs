//! The upstream side: a pooled keep-alive HTTP/1.1 client (plain or TLS with the webpki roots), the
//! request body it sends, and how its errors map onto proxy failures.
//!
//! Each worker owns one client, so pooled connections stay on the worker that made them, as in Envoy.

use std::cell::RefCell;
use std::error::Error as StdError;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tower_service::Service;

use super::failure::Failure;
use super::http1::client::{self, ClientConnection, ExchangeError, ResponseBody};

/// Errors carried through body streams.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Pooled connections kept per worker; more concurrent requests than this still work, the extra
/// connections just close after their response.
const POOL_MAX_CONNECTIONS: usize = 512;

/// Why the upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TLS configuration was refused by rustls.
    #[error("tls setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// Why an upstream request got no response.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The request's URI has no scheme or authority to connect to.
    #[error("the upstream URI {0} is not absolute")]
    NotAbsolute(Uri),
    /// No connection could be made (refused, unresolvable, timed out, TLS handshake failed).
    #[error("cannot connect to the upstream")]
    Connect(#[source] BoxError),
    /// The connection broke before the response headers arrived.
    #[error("upstream request failed")]
    Request(#[from] ExchangeError),
}

/// Scheme and authority: which pooled connections can carry a request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: Scheme,
    authority: Authority,
}

/// An idle keep-alive connection in the pool.
struct Pooled {
    origin: Origin,
    connection: ClientConnection,
    last_used: Instant,
}

/// One worker's upstream client: keep-alive HTTP/1.1 connections (plain or TLS with the webpki roots)
/// pooled per origin. The worker is single-threaded, so the pool is a plain list without locks, and a
/// connection is reused as soon as its previous response has been read to the end.
pub struct UpstreamClient {
    connector: HttpsConnector<HttpConnector>,
    /// Shared with response bodies, which put their connection back when they end cleanly.
    pool: Rc<RefCell<Vec<Pooled>>>,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("UpstreamClient")
            .field("pooled", &self.pool.borrow().len())
            .finish_non_exhaustive()
    }
}

/// Builds one worker's client: TCP connect timeout, keep-alive pool, TLS via rustls with webpki roots.
///
/// # Errors
/// rustls refused the protocol configuration.
pub fn build_client(connect_timeout: Duration) -> Result<UpstreamClient, ClientError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(UpstreamClient {
        connector,
        pool: Rc::default(),
    })
}

impl UpstreamClient {
    /// Sends `request` (absolute URI; its `Host` header as the caller set it) on a pooled connection to
    /// its origin, or a new one, and returns the response once its headers arrived.
    ///
    /// A pooled connection that the upstream closed before taking the request (an idle keep-alive race)
    /// is retried once on a fresh connection; the request was never sent, so that is always safe.
    ///
    /// # Errors
    /// The URI is not absolute, no connection could be made, or the connection failed before the
    /// response headers.
    pub async fn request(
        &self,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<ResponseBody>, UpstreamError> {
        let uri = request.uri().clone();
        let origin = match (uri.scheme(), uri.authority()) {
            (Some(scheme), Some(authority)) => Origin {
                scheme: scheme.clone(),
                authority: authority.clone(),
            },
            _ => return Err(UpstreamError::NotAbsolute(uri)),
        };
        // HTTP/1.1 to an origin server: the request target is the path, in origin form.
        *request.uri_mut() = Uri::from(
            uri.path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        if let Some(connection) = self.checkout(&origin) {
            // A body held in full can be sent again: a pooled connection the upstream closed just as it
            // was taken is then replaced by a fresh one (a streamed body cannot be replayed).
            let replay = request.body().replayable().map(|body| {
                let mut copy = Request::new(body);
                *copy.method_mut() = request.method().clone();
                *copy.uri_mut() = request.uri().clone();
                *copy.headers_mut() = request.headers().clone();
                copy
            });
            match client::send(connection, request).await {
                Ok(response) => return Ok(self.track(origin, response)),
                Err(error) => match (replay, &error) {
                    (Some(again), ExchangeError::Closed | ExchangeError::Io(_)) => request = again,
                    _ => return Err(UpstreamError::Request(error)),
                },
            }
        }
        let connection = self.connect(&uri).await?;
        let response = client::send(connection, request).await?;
        Ok(self.track(origin, response))
    }

    /// Arranges for the response's connection to come back to the pool when its body ends cleanly.
    fn track(
        &self,
        origin: Origin,
        mut response: Response<ResponseBody>,
    ) -> Response<ResponseBody> {
        let pool = Rc::downgrade(&self.pool);
        response.body_mut().on_reusable(Box::new(move |connection| {
            if let Some(pool) = pool.upgrade() {
                let mut pool = pool.borrow_mut();
                if pool.len() < POOL_MAX_CONNECTIONS {
                    pool.push(Pooled {
                        origin,
                        connection,
                        last_used: Instant::now(),
                    });
                }
            }
        }));
        response
    }

    /// Takes an idle connection to `origin` out of the pool, dropping closed and long-idle ones on the way.
    fn checkout(&self, origin: &Origin) -> Option<ClientConnection> {
        let mut pool = self.pool.borrow_mut();
        let now = Instant::now();
        let mut index = pool.len();
        while index > 0 {
            index -= 1;
            let Some(entry) = pool.get_mut(index) else {
                break;
            };
            if now.duration_since(entry.last_used) > POOL_IDLE_TIMEOUT
                || !entry.connection.is_reusable()
            {
                pool.swap_remove(index);
                continue;
            }
            if &entry.origin != origin {
                continue;
            }
            return Some(pool.swap_remove(index).connection);
        }
        None
    }

    /// Opens a connection (TCP, then TLS for https).
    async fn connect(&self, uri: &Uri) -> Result<ClientConnection, UpstreamError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(UpstreamError::Connect)?;
        let io = connector
            .call(uri.clone())
            .await
            .map_err(UpstreamError::Connect)?;
        Ok(ClientConnection::new(TokioIo::new(io)))
    }
}

/// Maps a client error to the failure the client sees: timeouts 504, everything else 502.
pub fn classify(error: &UpstreamError, connect_timeout: Duration) -> Failure {
    let cause = root_cause(error);
    match error {
        UpstreamError::Connect(inner) => {
            if has_io_kind(inner.as_ref(), std::io::ErrorKind::TimedOut) {
                Failure::ConnectTimeout(connect_timeout)
            } else {
                Failure::Unreachable(cause)
            }
        }
        UpstreamError::NotAbsolute(_) | UpstreamError::Request(_) => Failure::UpstreamBroken(cause),
    }
}

/// One line saying what went wrong with an upstream call, for logs and filter http call failures.
pub fn describe(error: &UpstreamError) -> String {
    root_cause(error)
}

fn has_io_kind(error: &(dyn StdError + 'static), kind: std::io::ErrorKind) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == kind
        {
            return true;
        }
        current = err.source();
    }
    false
}

/// The innermost error's message: the one that says what actually happened ("connection refused").
fn root_cause(error: &(dyn StdError + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// A request body sent upstream: nothing, a complete buffer, or frames streamed from the request pipeline.
#[derive(Debug)]
pub enum UpstreamBody {
    /// No body.
    Empty,
    /// A body known in full (filter http calls).
    Full(Option<Bytes>),
    /// Frames produced as the client's body arrives and passes through the filter.
    Stream(mpsc::Receiver<Result<Frame<Bytes>, BoxError>>),
}

impl UpstreamBody {
    /// A copy of a body held in full (to send again); `None` for a stream.
    fn replayable(&self) -> Option<Self> {
        match self {
            Self::Empty => Some(Self::Empty),
            Self::Full(data) => Some(Self::Full(data.clone())),
            Self::Stream(_) => None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Empty => Poll::Ready(None),
            Self::Full(data) => Poll::Ready(data.take().map(|bytes| Ok(Frame::data(bytes)))),
            Self::Stream(receiver) => receiver.poll_recv(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Empty => true,
            Self::Full(data) => data.is_none(),
            Self::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Empty => SizeHint::with_exact(0),
            Self::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |bytes| bytes.len() as u64))
            }
            Self::Stream(_) => SizeHint::default(),
        }
    }
}
