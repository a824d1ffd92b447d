//! The upstream side's HTTP/1.1: one request on one connection, and the response body that reads the
//! rest of that connection and hands it back for reuse when the response ended cleanly.
//!
//! Like the server side it exists for memory: no connection task, no channel between a task and the
//! request, and a read buffer only while bytes wait in it, so an event stream in flight costs its socket
//! (and TLS state), not tens of kilobytes of buffers.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::decode::{DecodeError, Decoded, Decoder};
use super::head::{self, Framing, MAX_HEADERS, parse_length};

/// Largest upstream response head.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// One read from the upstream at most.
const READ_BYTES: usize = 16 * 1024;

/// A byte stream to the upstream: TCP, or TLS over TCP.
pub trait Transport: AsyncRead + AsyncWrite + Unpin {}

impl<T: AsyncRead + AsyncWrite + Unpin> Transport for T {}

/// Why a request on an upstream connection got no (complete) response.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Reading or writing failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The upstream closed the connection before a complete response head.
    #[error("connection closed before message completed")]
    Closed,
    /// The response head is not HTTP/1.x or frames its body in a way that cannot be read.
    #[error("invalid response: {0}")]
    Malformed(&'static str),
    /// The request body failed while it was being sent (the client's upload broke).
    #[error("the request body failed: {0}")]
    RequestBody(String),
}

/// How a response body is delimited.
#[derive(Debug)]
enum Delimit {
    /// By `Content-Length` or chunked framing.
    Framed(Decoder),
    /// By the upstream closing the connection.
    Close,
}

/// An open connection to the upstream, between requests or during one.
pub struct ClientConnection {
    io: Pin<Box<dyn Transport>>,
    unread: Vec<u8>,
}

impl std::fmt::Debug for ClientConnection {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ClientConnection")
            .field("unread", &self.unread.len())
            .finish_non_exhaustive()
    }
}

impl ClientConnection {
    /// A connection over `io`.
    pub fn new(io: impl Transport + 'static) -> Self {
        Self {
            io: Box::pin(io),
            unread: Vec::new(),
        }
    }

    /// Whether a pooled connection can carry a request: nothing arrived on it since its last response
    /// (neither the upstream closing it nor stray bytes). Checked without waiting.
    pub fn is_reusable(&mut self) -> bool {
        if !self.unread.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        matches!(self.io.as_mut().poll_read(&mut cx, &mut buf), Poll::Pending)
    }

    /// Reads what the upstream sends next into the buffer; `Ok(0)` when it closed the connection.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut chunk = [0u8; READ_BYTES];
        let mut buf = ReadBuf::new(&mut chunk);
        match self.io.as_mut().poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                let filled = buf.filled();
                self.unread.extend_from_slice(filled);
                Poll::Ready(Ok(filled.len()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn consume(&mut self, count: usize) {
        if count >= self.unread.len() {
            // Emptied: the buffer goes back, so a connection waiting on a stream holds none.
            self.unread = Vec::new();
        } else {
            self.unread.drain(..count);
        }
    }

    async fn write_all(&mut self, slices: &mut [IoSlice<'_>]) -> io::Result<()> {
        let mut slices = slices;
        while slices.iter().any(|slice| !slice.is_empty()) {
            let written = self.io.write_vectored(slices).await?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            IoSlice::advance_slices(&mut slices, written);
        }
        Ok(())
    }
}

/// The request body the upstream gets.
pub trait RequestSource: Body<Data = Bytes> + Unpin {}

impl<B: Body<Data = Bytes> + Unpin> RequestSource for B {}

/// Sends `request` (its URI in origin form, its `Host` set) on `connection` and reads the response head.
/// The request body is sent while the response is awaited; a response that comes before the body was
/// sent in full ends the sending (the connection is then not reused).
///
/// # Errors
/// The connection failed, the upstream closed it, or sent a response that is not HTTP/1.x.
pub async fn send<B>(
    mut connection: ClientConnection,
    request: Request<B>,
) -> Result<Response<ResponseBody>, ExchangeError>
where
    B: RequestSource,
    B::Error: std::fmt::Display,
{
    let (parts, mut body) = request.into_parts();
    let head_request = parts.method == Method::HEAD;
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.push(b' ');
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", |target| target.as_str());
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        if *name == header::TRANSFER_ENCODING || *name == header::CONTENT_LENGTH {
            continue;
        }
        field(&mut head, name, value);
    }
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_length);
    let ended = body.is_end_stream();
    let exact = body.size_hint().exact();
    let chunked = !ended && declared.is_none() && exact.is_none();
    match (declared.or(exact), ended) {
        (Some(length), _) if length > 0 || method_has_body(&parts.method) => {
            head.extend_from_slice(b"content-length: ");
            head.extend_from_slice(length.to_string().as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        _ if chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    head.extend_from_slice(b"\r\n");
    drop(parts);
    connection.write_all(&mut [IoSlice::new(&head)]).await?;
    drop(head);

    // Send the body while watching for the response head.
    let mut sending = !ended;
    let mut sent_all = ended;
    loop {
        if let Some(response) = parse_response_head(&mut connection, head_request)? {
            let (response_head, delimit) = response;
            let reusable = sent_all && response_head.reusable;
            return Ok(Response::from_parts(
                response_head.parts,
                ResponseBody::new(connection, delimit, reusable),
            ));
        }
        if connection.unread.len() >= MAX_RESPONSE_HEAD {
            return Err(ExchangeError::Malformed("the response head is too large"));
        }
        let step = std::future::poll_fn(|cx| {
            if let Poll::Ready(read) = connection.poll_fill(cx) {
                return Poll::Ready(Step::Read(read));
            }
            if sending {
                return Pin::new(&mut body).poll_frame(cx).map(Step::Frame);
            }
            Poll::Pending
        })
        .await;
        match step {
            Step::Read(Ok(0)) => return Err(ExchangeError::Closed),
            Step::Read(Ok(_)) => {}
            Step::Read(Err(err)) => return Err(ExchangeError::Io(err)),
            Step::Frame(Some(Ok(frame))) => {
                if send_frame(&mut connection, frame, chunked).await? {
                    sending = false;
                    sent_all = true;
                }
            }
            Step::Frame(Some(Err(err))) => {
                return Err(ExchangeError::RequestBody(err.to_string()));
            }
            Step::Frame(None) => {
                sending = false;
                sent_all = true;
                if chunked {
                    connection
                        .write_all(&mut [IoSlice::new(b"0\r\n\r\n")])
                        .await?;
                }
            }
        }
    }
}

/// What waiting on the connection and the request body produced.
enum Step<E> {
    Read(io::Result<usize>),
    Frame(Option<Result<Frame<Bytes>, E>>),
}

fn method_has_body(method: &Method) -> bool {
    *method == Method::POST || *method == Method::PUT || *method == Method::PATCH
}

/// Sends one request body frame; `Ok(true)` when it ended the body (trailers, which close chunked
/// framing themselves).
async fn send_frame(
    connection: &mut ClientConnection,
    frame: Frame<Bytes>,
    chunked: bool,
) -> io::Result<bool> {
    match frame.into_data() {
        Ok(data) if data.is_empty() => Ok(false),
        Ok(data) if chunked => {
            let (size, length) = head::chunk_size_line(data.len());
            connection
                .write_all(&mut [
                    IoSlice::new(size.get(..length).unwrap_or_default()),
                    IoSlice::new(&data),
                    IoSlice::new(b"\r\n"),
                ])
                .await
                .map(|()| false)
        }
        Ok(data) => connection
            .write_all(&mut [IoSlice::new(&data)])
            .await
            .map(|()| false),
        Err(frame) => match frame.into_trailers() {
            Ok(trailers) if chunked => {
                let mut last = b"0\r\n".to_vec();
                for (name, value) in &trailers {
                    field(&mut last, name, value);
                }
                last.extend_from_slice(b"\r\n");
                connection.write_all(&mut [IoSlice::new(&last)]).await?;
                Ok(true)
            }
            _ => Ok(false),
        },
    }
}

fn field(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    head::field(out, name.as_str().as_bytes(), value.as_bytes());
}

/// A parsed response head and whether its connection may carry another request afterwards.
struct ResponseHead {
    parts: http::response::Parts,
    reusable: bool,
}

/// Parses a complete response head from the buffer, skipping interim `1xx` responses (but not `101`).
fn parse_response_head(
    connection: &mut ClientConnection,
    head_request: bool,
) -> Result<Option<(ResponseHead, Delimit)>, ExchangeError> {
    loop {
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut fields);
        let length = match response.parse(&connection.unread) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => {
                return Err(ExchangeError::Malformed(
                    "the response head is not HTTP/1.x",
                ));
            }
        };
        let code = response.code.unwrap_or(0);
        let status = StatusCode::from_u16(code)
            .map_err(|_| ExchangeError::Malformed("invalid status code"))?;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            connection.consume(length);
            continue;
        }
        let version = head::version(response.version);
        let headers = head::header_map(response.headers).map_err(ExchangeError::Malformed)?;
        connection.consume(length);
        let keep_alive = head::keep_alive(version, &headers);
        let framed_twice = super::super::forwarding::framed_twice(&headers);
        let (delimit, delimited) = response_delimit(status, &headers, head_request)?;
        let (mut parts, ()) = Response::new(()).into_parts();
        parts.status = status;
        parts.version = version;
        parts.headers = headers;
        let reusable =
            keep_alive && delimited && !framed_twice && status != StatusCode::SWITCHING_PROTOCOLS;
        return Ok(Some((ResponseHead { parts, reusable }, delimit)));
    }
}

/// How a response body is delimited (RFC 9112 §6.3), and whether that leaves the connection usable.
fn response_delimit(
    status: StatusCode,
    headers: &HeaderMap,
    head_request: bool,
) -> Result<(Delimit, bool), ExchangeError> {
    let empty = || Delimit::Framed(Decoder::new(Framing::Empty, 0));
    if head_request
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || status == StatusCode::SWITCHING_PROTOCOLS
    {
        return Ok((empty(), true));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let chunked_last = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|value| value.to_str().ok())
            .and_then(|text| text.rsplit(',').next())
            .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"));
        return Ok(if chunked_last {
            (
                Delimit::Framed(Decoder::new(Framing::Chunked, MAX_RESPONSE_HEAD)),
                true,
            )
        } else {
            (Delimit::Close, false)
        });
    }
    let length = head::content_length(headers).map_err(ExchangeError::Malformed)?;
    Ok(match length {
        Some(0) => (empty(), true),
        Some(length) => (
            Delimit::Framed(Decoder::new(Framing::Length(length), 0)),
            true,
        ),
        None => (Delimit::Close, false),
    })
}

/// Where a connection goes when its response ended cleanly.
pub type CheckIn = Box<dyn FnOnce(ClientConnection)>;

/// An upstream response's body, read straight from its connection.
pub struct ResponseBody {
    connection: Option<ClientConnection>,
    delimit: Delimit,
    reusable: bool,
    check_in: Option<CheckIn>,
    done: bool,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ResponseBody")
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// Why a response body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum ResponseBodyError {
    /// Its framing is invalid.
    #[error("{0}")]
    Malformed(DecodeError),
    /// The upstream closed the connection before the body ended.
    #[error("connection closed before the response body ended")]
    Closed,
    /// Reading failed.
    #[error("{0}")]
    Io(io::Error),
}

impl ResponseBody {
    fn new(connection: ClientConnection, delimit: Delimit, reusable: bool) -> Self {
        let done = matches!(&delimit, Delimit::Framed(decoder) if decoder.is_done());
        let mut body = Self {
            connection: Some(connection),
            delimit,
            reusable,
            check_in: None,
            done,
        };
        if done {
            body.finish();
        }
        body
    }

    /// Gives the connection to `check_in` once the body ended cleanly (at once if it already has).
    pub fn on_reusable(&mut self, check_in: CheckIn) {
        if self.done {
            if self.reusable
                && let Some(connection) = self.connection.take()
            {
                check_in(connection);
            }
            return;
        }
        self.check_in = Some(check_in);
    }

    fn finish(&mut self) {
        self.done = true;
        if self.reusable
            && let (Some(check_in), Some(connection)) =
                (self.check_in.take(), self.connection.take())
        {
            check_in(connection);
        }
    }

    fn fail(
        &mut self,
        error: ResponseBodyError,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        self.done = true;
        self.connection = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = ResponseBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let Some(connection) = this.connection.as_mut() else {
                return Poll::Ready(None);
            };
            let decoded = match &mut this.delimit {
                Delimit::Framed(decoder) => match decoder.step(&connection.unread) {
                    Ok(step) => Some(step),
                    Err(err) => return this.fail(ResponseBodyError::Malformed(err)),
                },
                Delimit::Close if connection.unread.is_empty() => None,
                Delimit::Close => {
                    let data = Bytes::from(std::mem::take(&mut connection.unread));
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
            };
            match decoded {
                Some((consumed, Decoded::Data(length))) => {
                    let data = connection
                        .unread
                        .get(consumed - length..consumed)
                        .map(Bytes::copy_from_slice)
                        .unwrap_or_default();
                    connection.consume(consumed);
                    if matches!(&this.delimit, Delimit::Framed(decoder) if decoder.is_done()) {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some((consumed, Decoded::Trailers(trailers))) => {
                    connection.consume(consumed);
                    this.finish();
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Some((consumed, Decoded::End)) => {
                    connection.consume(consumed);
                    this.finish();
                    return Poll::Ready(None);
                }
                Some((consumed, Decoded::NeedMore)) => connection.consume(consumed),
                None => {}
            }
            match connection.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    if matches!(this.delimit, Delimit::Close) {
                        this.done = true;
                        this.connection = None;
                        return Poll::Ready(None);
                    }
                    return this.fail(ResponseBodyError::Closed);
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(err)) => return this.fail(ResponseBodyError::Io(err)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        match &self.delimit {
            Delimit::Framed(decoder) => match decoder.remaining() {
                Some(left) => SizeHint::with_exact(left),
                None => SizeHint::default(),
            },
            Delimit::Close => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Duration;

    use http_body_util::{BodyExt, Full};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    /// Sends `request` on one end of an in-memory pipe whose other end answers `answer` once the request
    /// head arrived; the response, whether the connection came back for reuse, and what was sent.
    async fn exchange(
        request: Request<Full<Bytes>>,
        answer: &'static [u8],
    ) -> (
        Result<(StatusCode, HeaderMap, Vec<u8>), String>,
        bool,
        Vec<u8>,
    ) {
        let (near, mut far) = tokio::io::duplex(1 << 16);
        let server = async move {
            let mut received = Vec::new();
            let mut chunk = [0u8; 4096];
            while !received.windows(4).any(|window| window == b"\r\n\r\n") {
                let read = far.read(&mut chunk).await.unwrap();
                if read == 0 {
                    break;
                }
                received.extend_from_slice(&chunk[..read]);
            }
            far.write_all(answer).await.unwrap();
            far.shutdown().await.unwrap();
            // Whatever else the client sends (its body) until it is done.
            let mut rest = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_millis(200), far.read_to_end(&mut rest)).await;
            received.extend_from_slice(&rest);
            (received, far)
        };
        let reused = Rc::new(Cell::new(false));
        let flag = Rc::clone(&reused);
        let client = async move {
            let mut response = send(ClientConnection::new(near), request)
                .await
                .map_err(|err| err.to_string())?;
            response
                .body_mut()
                .on_reusable(Box::new(move |_| flag.set(true)));
            let (parts, body) = response.into_parts();
            let collected = body.collect().await.map_err(|err| err.to_string())?;
            let trailers = collected.trailers().cloned().unwrap_or_default();
            let mut headers = parts.headers;
            headers.extend(trailers);
            Ok((parts.status, headers, collected.to_bytes().to_vec()))
        };
        let (result, (received, _far)): (_, (Vec<u8>, DuplexStream)) = tokio::join!(client, server);
        (result, reused.get(), received)
    }

    fn get() -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = "/v1/models".parse().unwrap();
        request
            .headers_mut()
            .insert("host", HeaderValue::from_static("up"));
        request
    }

    #[tokio::test]
    async fn interim_responses_are_skipped_and_a_sized_body_returns_the_connection() {
        let (result, reused, sent) = exchange(
            get(),
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
        )
        .await;
        let (status, _, body) = result.unwrap();
        assert_eq!(
            (status, body.as_slice()),
            (StatusCode::OK, b"hello".as_slice())
        );
        assert!(reused);
        assert_eq!(sent, b"GET /v1/models HTTP/1.1\r\nhost: up\r\n\r\n");
    }

    #[tokio::test]
    async fn a_body_held_in_full_goes_with_its_length() {
        let mut request = get();
        *request.method_mut() = Method::POST;
        *request.body_mut() = Full::new(Bytes::from_static(b"{}"));
        let (_, _, sent) = exchange(request, b"HTTP/1.1 204 No Content\r\n\r\n").await;
        let sent = String::from_utf8(sent).unwrap();
        assert!(sent.contains("content-length: 2\r\n"), "{sent}");
        assert!(sent.ends_with("\r\n\r\n{}"), "{sent}");
    }

    #[tokio::test]
    async fn a_chunked_body_with_trailers_is_read_and_framing_twice_forbids_reuse() {
        let (result, reused, _) = exchange(
            get(),
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nx-sum: 1\r\n\r\n",
        )
        .await;
        let (_, headers, body) = result.unwrap();
        assert_eq!(body, b"ok");
        assert_eq!(headers["x-sum"], "1");
        assert!(reused);
        let (result, reused, _) = exchange(
            get(),
            b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(result.unwrap().2, b"ok");
        assert!(
            !reused,
            "a response framed twice must not leave its connection reusable"
        );
    }

    #[tokio::test]
    async fn a_close_delimited_body_is_read_to_the_end_of_the_connection() {
        let (result, reused, _) = exchange(get(), b"HTTP/1.1 200 OK\r\n\r\nall of it").await;
        assert_eq!(result.unwrap().2, b"all of it");
        assert!(!reused);
    }

    #[tokio::test]
    async fn broken_responses_are_errors() {
        let (result, _, _) = exchange(get(), b"HTTP/1.1 200 OK\r\ncontent-le").await;
        assert_eq!(
            result.unwrap_err(),
            "connection closed before message completed"
        );
        let (result, _, _) = exchange(get(), b"SSH-2.0-OpenSSH\r\n\r\n").await;
        assert!(result.unwrap_err().starts_with("invalid response"));
        let (result, _, _) = exchange(
            get(),
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
        )
        .await;
        assert_eq!(result.unwrap_err(), "invalid chunk size line");
        let (result, _, _) =
            exchange(get(), b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort").await;
        assert_eq!(
            result.unwrap_err(),
            "connection closed before the response body ended"
        );
    }
}
