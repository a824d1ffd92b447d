//! A loopback HTTP/1.1 upstream that records every request and answers by configurable replies.
//!
//! The server binds `127.0.0.1:0` synchronously (so its address is known and bind errors surface at once) and
//! serves on its own single-threaded runtime on a background thread, which makes it usable from sync and
//! async tests alike. Dropping the [`Upstream`] stops it: the accept loop ends and every open connection,
//! including ones held by [`Reply::Never`], is closed.
//!
//! ```no_run
//! # use integration_tests::upstream::{Reply, Upstream};
//! let upstream = Upstream::builder().route("/v1/messages", Reply::sse_numbered(3, std::time::Duration::from_millis(50))).start()?;
//! // ... send traffic through the proxy under test to upstream.addr() ...
//! let seen = upstream.wait_for_requests(1, std::time::Duration::from_secs(5))?;
//! assert_eq!(seen[0].header("authorization"), Some("Bearer at-1"));
//! # anyhow::Ok(())
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot, watch};

/// The body type every reply is converted into.
type ReplyBody = BoxBody<Bytes, Infallible>;

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Request method, e.g. `POST`.
    pub method: String,
    /// Path and query exactly as sent on the request line.
    pub path: String,
    /// Every header in arrival order; a name sent twice appears twice. Names are lower case.
    pub headers: Vec<(String, String)>,
    /// The complete request body.
    pub body: Vec<u8>,
    /// When the request (headers and body) had been fully read.
    pub received_at: Instant,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive), if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::header_list::first_value(&self.headers, name)
    }

    /// Every value of header `name` (case-insensitive), in arrival order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        crate::header_list::all_values(&self.headers, name)
    }

    /// The body as text, with invalid UTF-8 replaced.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The path without its query string.
    pub fn path_only(&self) -> &str {
        self.path
            .split_once('?')
            .map_or(self.path.as_str(), |(path, _)| path)
    }

    /// The body parsed as `application/x-www-form-urlencoded` pairs, in order.
    pub fn form(&self) -> Vec<(String, String)> {
        parse_form(&self.body)
    }

    /// The request as the JSON document [`Reply::EchoRequest`] answers with.
    pub fn to_echo_json(&self) -> serde_json::Value {
        let mut headers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, value) in &self.headers {
            headers
                .entry(name.as_str())
                .or_default()
                .push(value.as_str());
        }
        serde_json::json!({
            "method": self.method,
            "path": self.path,
            "headers": headers,
            "body": self.body_text(),
        })
    }
}

/// A complete, fixed response.
#[derive(Clone, Debug)]
pub struct FixedReply {
    /// HTTP status code.
    pub status: u16,
    /// Response headers in order; repeated names are sent as separate header lines.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
}

impl FixedReply {
    /// A response with `status`, no headers and an empty body.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A response with `status` and `value` as its JSON body.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self::new(status)
            .header("content-type", "application/json")
            .body(value.to_string())
    }

    /// Adds a header line.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

/// A `text/event-stream` response sent event by event.
#[derive(Clone, Debug)]
pub struct SseReply {
    /// Each event's full text, e.g. `"event: ping\ndata: {}\n\n"`; each is written and flushed on its own.
    pub events: Vec<String>,
    /// Pause before every event after the first, so a client can see events arrive while the stream is open.
    pub interval: Duration,
}

/// Computes a reply from the recorded request; for cases the other replies do not cover.
pub type ReplyFn = Arc<dyn Fn(&RecordedRequest) -> FixedReply + Send + Sync>;

/// How the upstream answers a request.
#[derive(Clone)]
pub enum Reply {
    /// 200 with a JSON body `{"method", "path", "headers": {name: [values]}, "body"}` describing the request.
    EchoRequest,
    /// A fixed response.
    Fixed(FixedReply),
    /// A server-sent-event stream.
    Sse(SseReply),
    /// Waits `delay` before answering with `then` (for client and proxy timeouts).
    Delayed {
        /// Time to wait before the response headers.
        delay: Duration,
        /// What to answer after the wait.
        then: Box<Reply>,
    },
    /// Reads the request and never answers, until the upstream is dropped.
    Never,
    /// An OAuth2-style token endpoint.
    Token(TokenEndpoint),
    /// A response computed from the request.
    Handler(ReplyFn),
}

impl Reply {
    /// A fixed response with a text body.
    pub fn text(status: u16, body: &str) -> Self {
        Self::Fixed(
            FixedReply::new(status)
                .header("content-type", "text/plain")
                .body(body),
        )
    }

    /// A fixed JSON response.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self::Fixed(FixedReply::json(status, value))
    }

    /// An SSE stream of `count` events `data: {"n":<i>}` (i from 1), `interval` apart.
    pub fn sse_numbered(count: usize, interval: Duration) -> Self {
        let events = (1..=count)
            .map(|n| format!("event: message\ndata: {{\"n\":{n}}}\n\n"))
            .collect();
        Self::Sse(SseReply { events, interval })
    }

    /// Answers with `then` after `delay`.
    pub fn delayed(delay: Duration, then: Reply) -> Self {
        Self::Delayed {
            delay,
            then: Box::new(then),
        }
    }

    /// A reply computed by `handler` from the recorded request.
    pub fn handler(
        handler: impl Fn(&RecordedRequest) -> FixedReply + Send + Sync + 'static,
    ) -> Self {
        Self::Handler(Arc::new(handler))
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EchoRequest => f.write_str("EchoRequest"),
            Self::Fixed(reply) => f.debug_tuple("Fixed").field(reply).finish(),
            Self::Sse(reply) => f.debug_tuple("Sse").field(reply).finish(),
            Self::Delayed { delay, then } => f
                .debug_struct("Delayed")
                .field("delay", delay)
                .field("then", then)
                .finish(),
            Self::Never => f.write_str("Never"),
            Self::Token(_) => f.write_str("Token"),
            Self::Handler(_) => f.write_str("Handler"),
        }
    }
}

/// What the token endpoint does with one request.
#[derive(Clone, Debug)]
pub enum TokenOutcome {
    /// Issue the next token pair.
    Issue,
    /// Answer with this status and an OAuth2 error body `{"error": error}`.
    Fail {
        /// HTTP status code.
        status: u16,
        /// The OAuth2 `error` value, e.g. `invalid_grant`.
        error: String,
    },
    /// Wait, then issue the next token pair (for refresh timeouts).
    IssueAfter(Duration),
}

/// An OAuth2-style token endpoint: answers form posts with
/// `{"access_token", "token_type", "expires_in", "refresh_token"}` and records every form it receives.
///
/// Tokens are numbered from 1 in issue order: [`TokenEndpoint::access_token`] and
/// [`TokenEndpoint::refresh_token`] give the values the n-th issue returns. Clones share state, so a test
/// keeps one handle while the upstream serves another, and can plan failures mid-test.
#[derive(Clone, Debug, Default)]
pub struct TokenEndpoint {
    state: Arc<Mutex<TokenState>>,
}

#[derive(Debug, Default)]
struct TokenState {
    expires_in: Option<u64>,
    omit_refresh_token: bool,
    plan: VecDeque<TokenOutcome>,
    issued: u32,
    forms: Vec<Vec<(String, String)>>,
}

impl TokenEndpoint {
    /// Lifetime reported when none is configured.
    pub const DEFAULT_EXPIRES_IN: u64 = 3600;

    /// An endpoint that issues tokens valid for [`Self::DEFAULT_EXPIRES_IN`] seconds.
    pub fn new() -> Self {
        Self::default()
    }

    /// The access token the `n`-th successful issue returns (1-based).
    pub fn access_token(n: u32) -> String {
        format!("at-{n}")
    }

    /// The refresh token the `n`-th successful issue returns (1-based).
    pub fn refresh_token(n: u32) -> String {
        format!("rt-{n}")
    }

    /// Sets the `expires_in` seconds reported with every token from now on.
    pub fn with_expires_in(self, seconds: u64) -> Self {
        self.lock().expires_in = Some(seconds);
        self
    }

    /// Leaves `refresh_token` out of responses (providers that do not rotate refresh tokens).
    pub fn without_refresh_token(self) -> Self {
        self.lock().omit_refresh_token = true;
        self
    }

    /// Plans the next `count` requests to fail with `status` and OAuth2 error `error`.
    pub fn fail_next(&self, count: usize, status: u16, error: &str) {
        let mut state = self.lock();
        for _ in 0..count {
            state.plan.push_back(TokenOutcome::Fail {
                status,
                error: error.to_owned(),
            });
        }
    }

    /// Appends one planned outcome; requests beyond the plan get [`TokenOutcome::Issue`].
    pub fn plan(&self, outcome: TokenOutcome) {
        self.lock().plan.push_back(outcome);
    }

    /// How many token pairs were issued so far.
    pub fn issued(&self) -> u32 {
        self.lock().issued
    }

    /// Every form body received, in order, as decoded pairs.
    pub fn forms(&self) -> Vec<Vec<(String, String)>> {
        self.lock().forms.clone()
    }

    fn lock(&self) -> MutexGuard<'_, TokenState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the form and decides the outcome; the wait of [`TokenOutcome::IssueAfter`] happens outside the lock.
    fn take_outcome(&self, request: &RecordedRequest) -> TokenOutcome {
        let mut state = self.lock();
        state.forms.push(request.form());
        state.plan.pop_front().unwrap_or(TokenOutcome::Issue)
    }

    fn issue(&self) -> FixedReply {
        let mut state = self.lock();
        state.issued += 1;
        let n = state.issued;
        let mut body = serde_json::json!({
            "access_token": Self::access_token(n),
            "token_type": "Bearer",
            "expires_in": state.expires_in.unwrap_or(Self::DEFAULT_EXPIRES_IN),
        });
        if !state.omit_refresh_token {
            body["refresh_token"] = serde_json::Value::String(Self::refresh_token(n));
        }
        FixedReply::json(200, &body).header("cache-control", "no-store")
    }
}

/// Builds an [`Upstream`]: replies per exact path, and a fallback for every other path.
#[derive(Debug)]
pub struct UpstreamBuilder {
    routes: HashMap<String, Reply>,
    fallback: Reply,
}

impl UpstreamBuilder {
    /// Answers requests whose path (query excluded) is exactly `path` with `reply`.
    pub fn route(mut self, path: &str, reply: Reply) -> Self {
        self.routes.insert(path.to_owned(), reply);
        self
    }

    /// Answers every unrouted path with `reply` (default: [`Reply::EchoRequest`]).
    pub fn fallback(mut self, reply: Reply) -> Self {
        self.fallback = reply;
        self
    }

    /// Binds `127.0.0.1:0` and starts serving on a background thread.
    ///
    /// # Errors
    /// When the socket cannot be bound or the runtime cannot be created.
    pub fn start(self) -> anyhow::Result<Upstream> {
        let listener =
            StdTcpListener::bind("127.0.0.1:0").context("binding the upstream on 127.0.0.1:0")?;
        listener
            .set_nonblocking(true)
            .context("making the upstream listener non-blocking")?;
        let addr = listener
            .local_addr()
            .context("reading the upstream's bound address")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("creating the upstream runtime")?;
        let (count_tx, count_rx) = watch::channel(0);
        let shared = Arc::new(Shared {
            routes: Mutex::new(Routes {
                by_path: self.routes,
                fallback: self.fallback,
            }),
            requests: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            count_tx,
            connections: AtomicUsize::new(0),
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let serving = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("upstream-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(accept_loop(listener, serving, stop_rx));
                // Dropping the runtime here cancels every connection task, held ones included.
                drop(runtime);
            })
            .context("spawning the upstream thread")?;
        Ok(Upstream {
            addr,
            shared,
            count_rx,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

struct Routes {
    by_path: HashMap<String, Reply>,
    fallback: Reply,
}

struct Shared {
    routes: Mutex<Routes>,
    requests: Mutex<Vec<RecordedRequest>>,
    arrived: Condvar,
    count_tx: watch::Sender<usize>,
    connections: AtomicUsize,
}

impl Shared {
    fn reply_for(&self, path: &str) -> Reply {
        let routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        routes.by_path.get(path).unwrap_or(&routes.fallback).clone()
    }

    fn record(&self, request: RecordedRequest) {
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        requests.push(request);
        let count = requests.len();
        drop(requests);
        self.arrived.notify_all();
        self.count_tx.send_replace(count);
    }
}

/// A running loopback upstream; dropping it stops the server and closes its connections.
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    count_rx: watch::Receiver<usize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// A builder with no routes and [`Reply::EchoRequest`] as fallback.
    pub fn builder() -> UpstreamBuilder {
        UpstreamBuilder {
            routes: HashMap::new(),
            fallback: Reply::EchoRequest,
        }
    }

    /// Starts an upstream that answers every request with [`Reply::EchoRequest`].
    ///
    /// # Errors
    /// As [`UpstreamBuilder::start`].
    pub fn echo() -> anyhow::Result<Self> {
        Self::builder().start()
    }

    /// The bound address (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Replaces (or adds) the reply for `path` while serving.
    pub fn set_route(&self, path: &str, reply: Reply) {
        self.shared
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_path
            .insert(path.to_owned(), reply);
    }

    /// Replaces the fallback reply while serving.
    pub fn set_fallback(&self, reply: Reply) {
        self.shared
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fallback = reply;
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many TCP connections were accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// How many requests were received so far.
    pub fn request_count(&self) -> usize {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Blocks until at least `count` requests have arrived, then returns all of them.
    ///
    /// # Errors
    /// When `timeout` passes first; the message says how many arrived.
    pub fn wait_for_requests(
        &self,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<RecordedRequest>> {
        let requests = self
            .shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (requests, _) = self
            .shared
            .arrived
            .wait_timeout_while(requests, timeout, |requests| requests.len() < count)
            .unwrap_or_else(PoisonError::into_inner);
        if requests.len() < count {
            anyhow::bail!(
                "upstream {}: {} of {count} expected requests arrived within {timeout:?}",
                self.addr,
                requests.len()
            );
        }
        Ok(requests.clone())
    }

    /// Async form of [`Upstream::wait_for_requests`]; needs a tokio runtime with time enabled.
    ///
    /// # Errors
    /// When `timeout` passes first.
    pub async fn wait_for_requests_async(
        &self,
        count: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<RecordedRequest>> {
        let mut counter = self.count_rx.clone();
        let waited =
            tokio::time::timeout(timeout, counter.wait_for(|arrived| *arrived >= count)).await;
        if !matches!(waited, Ok(Ok(_))) {
            anyhow::bail!(
                "upstream {}: {} of {count} expected requests arrived within {timeout:?}",
                self.addr,
                self.request_count()
            );
        }
        Ok(self.requests())
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The receiver is gone only if the accept loop already ended; nothing left to stop then.
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(
    listener: StdTcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| serve(Arc::clone(&shared), request));
                    // A client that hangs up mid-request is not a fixture failure; the test sees it client-side.
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        }
    }
}

async fn serve(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<ReplyBody>, hyper::Error> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await?.to_bytes().to_vec();
    let recorded = RecordedRequest {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), ToString::to_string),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        received_at: Instant::now(),
    };
    let reply = shared.reply_for(recorded.path_only());
    shared.record(recorded.clone());
    Ok(respond(reply, &recorded).await)
}

async fn respond(mut reply: Reply, request: &RecordedRequest) -> Response<ReplyBody> {
    loop {
        match reply {
            Reply::EchoRequest => {
                return fixed_response(FixedReply::json(200, &request.to_echo_json()));
            }
            Reply::Fixed(fixed) => return fixed_response(fixed),
            Reply::Handler(handler) => return fixed_response(handler(request)),
            Reply::Sse(sse) => return sse_response(sse),
            Reply::Delayed { delay, then } => {
                tokio::time::sleep(delay).await;
                reply = *then;
            }
            Reply::Never => std::future::pending::<()>().await,
            Reply::Token(endpoint) => match endpoint.take_outcome(request) {
                TokenOutcome::Issue => return fixed_response(endpoint.issue()),
                TokenOutcome::IssueAfter(delay) => {
                    tokio::time::sleep(delay).await;
                    return fixed_response(endpoint.issue());
                }
                TokenOutcome::Fail { status, error } => {
                    return fixed_response(FixedReply::json(
                        status,
                        &serde_json::json!({ "error": error }),
                    ));
                }
            },
        }
    }
}

fn fixed_response(fixed: FixedReply) -> Response<ReplyBody> {
    let mut response = Response::new(Full::new(Bytes::from(fixed.body)).boxed());
    *response.status_mut() = status_code(fixed.status);
    append_headers(&mut response, &fixed.headers);
    response
}

fn sse_response(sse: SseReply) -> Response<ReplyBody> {
    let (sender, receiver) = mpsc::channel(1);
    tokio::spawn(async move {
        for (index, event) in sse.events.into_iter().enumerate() {
            if index > 0 {
                tokio::time::sleep(sse.interval).await;
            }
            if sender.send(Bytes::from(event)).await.is_err() {
                return;
            }
        }
    });
    let mut response = Response::new(ChannelBody { receiver }.boxed());
    let headers = [
        ("content-type", "text/event-stream"),
        ("cache-control", "no-cache"),
    ]
    .map(|(name, value)| (name.to_owned(), value.to_owned()));
    append_headers(&mut response, &headers);
    response
}

fn status_code(status: u16) -> hyper::StatusCode {
    hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR)
}

fn append_headers(response: &mut Response<ReplyBody>, headers: &[(String, String)]) {
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            hyper::header::HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
}

/// A response body fed chunk by chunk from a channel, so each SSE event leaves as its own chunk.
struct ChannelBody {
    receiver: mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.receiver
            .poll_recv(cx)
            .map(|chunk| chunk.map(|data| Ok(Frame::data(data))))
    }
}

/// Decodes an `application/x-www-form-urlencoded` body; malformed escapes are kept literally.
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    body.split(|&byte| byte == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|&byte| byte == b'=') {
                Some(at) => {
                    let (name, with_equals) = pair.split_at(at);
                    (name, with_equals.get(1..).unwrap_or_default())
                }
                None => (pair, &[][..]),
            };
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

fn percent_decode(input: &[u8]) -> String {
    let mut out = Vec::with_capacity(input.len());
    let mut rest = input;
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        match byte {
            b'+' => out.push(b' '),
            b'%' => match tail
                .get(..2)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                Some(decoded) => {
                    out.push(decoded);
                    rest = tail.get(2..).unwrap_or_default();
                }
                None => out.push(b'%'),
            },
            other => out.push(other),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
