//! The upstream side: a pooled keep-alive HTTP/1.1 client (plain or TLS with the webpki roots), the
//! request body it sends, and how its errors map onto proxy failures.
//!
//! Each worker owns one client, so pooled connections stay on the worker that made them, as in Envoy.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::mpsc;

use super::failure::Failure;

/// Errors carried through body streams.
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The client every worker sends upstream requests and filter http calls through.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, UpstreamBody>;

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why the upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TLS configuration was refused by rustls.
    #[error("tls setup failed: {0}")]
    Tls(#[from] rustls::Error),
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
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .set_host(false)
        .build(https))
}

/// Maps a client error to the failure the client sees: timeouts 504, everything else 502.
pub fn classify(error: &hyper_util::client::legacy::Error, connect_timeout: Duration) -> Failure {
    let cause = root_cause(error);
    if error.is_connect() {
        if has_io_kind(error, std::io::ErrorKind::TimedOut) {
            return Failure::ConnectTimeout(connect_timeout);
        }
        return Failure::Unreachable(cause);
    }
    Failure::UpstreamBroken(cause)
}

/// One line saying what went wrong with an upstream call, for logs and filter http call failures.
pub fn describe(error: &hyper_util::client::legacy::Error) -> String {
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
