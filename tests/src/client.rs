//! A small HTTP/1.1 test client that keeps what a test needs to assert on: status, every header value,
//! the body, and each body chunk with its arrival time (to show streaming is not buffered).
//!
//! [`send`] is blocking and runs on a fresh thread with its own runtime, so it works from sync and async
//! tests; [`send_async`] is for tests already on a tokio runtime. Both are bounded by a timeout.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// A request to send; build it with [`HttpRequest::get`] / [`HttpRequest::post`] and the chained setters.
#[derive(Clone, Debug)]
pub struct HttpRequest {
    /// Request method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers in order; a name given twice is sent twice. Without a `host` header, `host: <addr>` is sent.
    pub headers: Vec<(String, String)>,
    /// Request body (sent with `content-length`).
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// A request with any method.
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `GET` request.
    pub fn get(path: &str) -> Self {
        Self::new("GET", path)
    }

    /// A `POST` request.
    pub fn post(path: &str) -> Self {
        Self::new("POST", path)
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

/// One body chunk as it arrived.
#[derive(Clone, Debug)]
pub struct TimedChunk {
    /// When the chunk was read.
    pub at: Instant,
    /// The chunk's bytes.
    pub data: Vec<u8>,
}

/// A complete response.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Every header in order; names are lower case.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
    /// The body as it arrived, chunk by chunk.
    pub chunks: Vec<TimedChunk>,
    /// When the response headers arrived.
    pub headers_at: Instant,
    /// When the body ended.
    pub finished_at: Instant,
}

impl HttpResponse {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::header_list::first_value(&self.headers, name)
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        crate::header_list::all_values(&self.headers, name)
    }

    /// The body as text, with invalid UTF-8 replaced.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    ///
    /// # Errors
    /// When the body is not JSON; the message quotes it.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("response body is not JSON: {:?}", self.body_text()))
    }
}

/// Sends `request` to `addr` on a new connection and reads the whole response, within `timeout`.
///
/// # Errors
/// On connection failure, protocol error or timeout.
pub fn send(
    addr: SocketAddr,
    request: HttpRequest,
    timeout: Duration,
) -> anyhow::Result<HttpResponse> {
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("creating the client runtime")?;
                runtime.block_on(send_async(addr, request, timeout))
            })
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the client thread panicked")))
    })
}

/// Async form of [`send`]; needs a tokio runtime with I/O and time enabled.
///
/// # Errors
/// On connection failure, protocol error or timeout.
pub async fn send_async(
    addr: SocketAddr,
    request: HttpRequest,
    timeout: Duration,
) -> anyhow::Result<HttpResponse> {
    let described = format!("{} {} to {addr}", request.method, request.path);
    tokio::time::timeout(timeout, exchange(addr, request))
        .await
        .with_context(|| format!("{described}: no complete response within {timeout:?}"))?
        .with_context(|| described)
}

async fn exchange(addr: SocketAddr, request: HttpRequest) -> anyhow::Result<HttpResponse> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .context("connecting")?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .context("handshake")?;
    let driver = tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(request.method.as_str())
        .uri(request.path.as_str());
    if !request
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        builder = builder.header("host", addr.to_string());
    }
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let outgoing = builder
        .body(Full::new(Bytes::from(request.body)))
        .context("building the request")?;
    let response = sender
        .send_request(outgoing)
        .await
        .context("sending the request")?;
    let headers_at = Instant::now();
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut body = response.into_body();
    let mut chunks = Vec::new();
    let mut whole = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the response body")?;
        if let Ok(data) = frame.into_data() {
            whole.extend_from_slice(&data);
            chunks.push(TimedChunk {
                at: Instant::now(),
                data: data.to_vec(),
            });
        }
    }
    let finished_at = Instant::now();
    driver.abort();
    Ok(HttpResponse {
        status,
        headers,
        body: whole,
        chunks,
        headers_at,
        finished_at,
    })
}
