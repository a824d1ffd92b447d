//! The proxy's HTTP/1.1 server side: one client connection, request after request.
//!
//! It exists for memory: a connection holds no buffer while it waits between requests (it waits for the
//! socket to become readable, then reads), grows its read buffer only as far as the request head needs, up
//! to the head limit, and writes each response straight to the socket (head and first chunk in one
//! vectored write), so an idle keep-alive connection costs its task and socket, not kilobytes of buffers.
//!
//! What it does, in RFC 9112 terms: request heads within a byte and a line limit and a time limit; bodies
//! by `Content-Length` or chunked (with trailers), refusing the framings used to smuggle requests;
//! `Expect: 100-continue`; keep-alive and pipelining; responses by `Content-Length`, chunked (trailers only
//! to a client that sent `TE: trailers`), or connection close for HTTP/1.0 clients. A client that closes
//! its connection while its response is pending or streaming ends the request (the response future and
//! body are dropped). A response sent before the request body was read closes the connection after
//! reading and discarding a bounded amount of the rest, so the client sees the response, not a reset.

pub mod client;
pub mod decode;
pub mod head;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use self::decode::{DecodeError, Decoded, Decoder};
use self::head::{Framing, HeadError, RequestHead, ResponseFraming, ResponseShape};
use super::worker::Phase;

/// A connection's first read buffer; doubled as a request head needs, up to the head limit.
const FIRST_READ_BYTES: usize = 4096;

/// The read buffer while a request body streams in.
const BODY_READ_BYTES: usize = 16 * 1024;

/// Most of an unread request body read and dropped before a connection closes, so the client reads the
/// response instead of a reset.
const LINGER_BYTES: usize = 256 * 1024;

/// Longest the connection keeps reading an unread body before it closes.
const LINGER_TIME: Duration = Duration::from_secs(2);

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Limits of the server side.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Largest request head (request line and headers), and largest trailer section.
    pub max_head_bytes: usize,
    /// Longest a client may take to send a request head, counted from the end of the previous response
    /// (or the connection's start): also the keep-alive idle limit.
    pub head_timeout: Duration,
    /// Longest a write may wait for a client that accepts no data.
    pub send_timeout: Duration,
}

/// Why reading a request body failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The body's framing is not valid HTTP.
    #[error("the request body is malformed: {0}")]
    Malformed(DecodeError),
    /// The client closed (or reset) the connection before the body ended.
    #[error("the client closed the connection before the request body ended")]
    Gone,
}

/// Bytes read from the client and not yet used.
#[derive(Debug, Default)]
struct Unread {
    bytes: Vec<u8>,
    /// Where the unused bytes start.
    start: usize,
    /// How far the head scan has looked (relative to `start`).
    scanned: usize,
    /// The client has closed its side.
    eof: bool,
}

impl Unread {
    fn pending(&self) -> &[u8] {
        self.bytes.get(self.start..).unwrap_or_default()
    }

    fn consume(&mut self, count: usize) {
        self.start = (self.start + count).min(self.bytes.len());
        self.scanned = self.scanned.saturating_sub(count);
        if self.start == self.bytes.len() {
            self.bytes.clear();
            self.start = 0;
            self.scanned = 0;
        }
    }

    /// Between requests: the buffer goes back to the allocator unless pipelined bytes wait in it.
    fn release(&mut self) {
        if self.start > 0 {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        if self.bytes.is_empty() {
            self.bytes = Vec::new();
        } else {
            self.bytes.shrink_to_fit();
        }
    }

    /// Frees the buffer when nothing waits in it: a request whose head and body are read keeps no
    /// buffer while its response streams (an event stream may last minutes).
    fn release_if_empty(&mut self) {
        if self.pending().is_empty() {
            self.bytes = Vec::new();
            self.start = 0;
            self.scanned = 0;
        }
    }

    /// Reads what the socket holds into the buffer, growing it by doubling to at most `limit` bytes.
    /// `Ok(0)`: the client closed its side.
    fn read_from(&mut self, stream: &TcpStream, limit: usize) -> io::Result<usize> {
        if self.start > 0 && self.bytes.len() == self.bytes.capacity() {
            self.bytes.drain(..self.start);
            self.start = 0;
        }
        if self.bytes.len() == self.bytes.capacity() {
            let grown = match self.bytes.capacity() {
                0 => FIRST_READ_BYTES,
                capacity => capacity.saturating_mul(2),
            };
            let target = grown.min(limit);
            if target <= self.bytes.len() {
                // Callers stop before the limit (a head or trailers too large is refused first).
                return Err(io::Error::other("the read buffer is full"));
            }
            self.bytes.reserve_exact(target - self.bytes.len());
        }
        let read = stream.try_read_buf(&mut self.bytes)?;
        if read == 0 {
            self.eof = true;
        }
        Ok(read)
    }
}

/// One client connection, shared by the connection task and the request body it hands out.
struct Connection {
    stream: TcpStream,
    settings: Settings,
    unread: RefCell<Unread>,
    /// The current request's body.
    decoder: RefCell<Decoder>,
    /// The client waits for `100 Continue` before its body.
    continue_wanted: Cell<bool>,
    /// The response head has been written (a `100` would come too late).
    response_started: Cell<bool>,
    /// Bytes of a `100 Continue` the socket did not take at once; they go before the response head.
    continue_left: RefCell<Vec<u8>>,
    /// The connection task, woken when the request body ends so it starts watching for the client
    /// leaving.
    task: RefCell<Option<Waker>>,
    /// The client has sent more (a pipelined request) while this one is answered: an end of stream
    /// after it is no longer the client leaving, so the watch stops.
    pipelined: Cell<bool>,
}

impl Connection {
    fn body_done(&self) -> bool {
        self.decoder.borrow().is_done()
    }

    /// Whether the client has sent bytes not read yet, asked of the socket itself (the runtime's readiness
    /// may not have seen them yet).
    fn has_waiting_bytes(&self) -> bool {
        let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        matches!(socket2::SockRef::from(&self.stream).peek(&mut probe), Ok(read) if read > 0)
    }

    fn wake_task(&self) {
        if let Some(waker) = self.task.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Ready when the client has closed or reset the connection while its request is being answered.
    /// Watches only once the request body is read and no pipelined bytes are waiting (then an end of
    /// stream can only mean the client left).
    fn poll_client_left(&self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if !self.body_done()
                || !self.unread.borrow().pending().is_empty()
                || self.pipelined.get()
            {
                *self.task.borrow_mut() = Some(cx.waker().clone());
                return Poll::Pending;
            }
            match self.stream.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(())) => {}
            }
            // Peeked, not read: no buffer is allocated for a client that only waits for its response.
            let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
            let peeked = self.stream.try_io(tokio::io::Interest::READABLE, || {
                socket2::SockRef::from(&self.stream).peek(&mut probe)
            });
            match peeked {
                Ok(0) => return Poll::Ready(()),
                Ok(_) => self.pipelined.set(true),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return Poll::Ready(()),
            }
        }
    }

    async fn client_left(&self) {
        std::future::poll_fn(|cx| self.poll_client_left(cx)).await;
    }

    /// Writes every byte of `slices`, waiting at most the send timeout each time the socket is full.
    async fn write_all(&self, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
        // Empty slices (no head before a frame, say) would read as a write of nothing.
        while slices.iter().any(|slice| !slice.is_empty()) {
            match self.stream.try_write_vectored(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => IoSlice::advance_slices(&mut slices, written),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    let timeout = self.settings.send_timeout;
                    match tokio::time::timeout(timeout, self.stream.writable()).await {
                        Ok(ready) => ready?,
                        Err(_) => {
                            return Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                format!(
                                    "the client accepted no response data for {}ms",
                                    timeout.as_millis()
                                ),
                            ));
                        }
                    }
                }
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    /// Sends `100 Continue` without waiting; what the socket does not take goes before the response.
    fn send_continue(&self) {
        let written = self.stream.try_write(CONTINUE).unwrap_or_default();
        if let Some(left) = CONTINUE.get(written..)
            && !left.is_empty()
        {
            self.continue_left.borrow_mut().extend_from_slice(left);
        }
    }

    /// Closes the connection; when the client may still be sending (an unread body, pipelined bytes),
    /// first ends the proxy's side and reads a bounded amount, so the client gets the response rather
    /// than a reset.
    async fn close(&self) {
        // Bytes the client sent that were never read (in the buffer or still in the socket) would make
        // the close a reset, which can destroy the response before the client reads it.
        let unread = !self.body_done()
            || !self.unread.borrow().pending().is_empty()
            || self.has_waiting_bytes();
        if !unread || self.unread.borrow().eof {
            return;
        }
        if socket2::SockRef::from(&self.stream)
            .shutdown(std::net::Shutdown::Write)
            .is_err()
        {
            return;
        }
        let mut discarded = 0;
        // On the heap: a buffer in this future would be part of every connection's task, idle or not.
        let mut sink = vec![0u8; 4096];
        let linger = async {
            while discarded < LINGER_BYTES {
                if self.stream.readable().await.is_err() {
                    return;
                }
                match self.stream.try_read(&mut sink) {
                    Ok(0) => return,
                    Ok(read) => discarded += read,
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, linger).await;
    }
}

/// A request's body as it arrives on the client connection.
pub struct RequestBody {
    connection: Rc<Connection>,
    /// The body ended or failed: nothing more to read.
    finished: bool,
}

impl RequestBody {
    fn fail(&mut self, error: BodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.finished = true;
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        let connection = Rc::clone(&this.connection);
        if connection.continue_wanted.take() && !connection.response_started.get() {
            connection.send_continue();
        }
        loop {
            let mut unread = connection.unread.borrow_mut();
            let step = connection.decoder.borrow_mut().step(unread.pending());
            let (consumed, decoded) = match step {
                Ok(step) => step,
                Err(error) => {
                    drop(unread);
                    return this.fail(BodyError::Malformed(error));
                }
            };
            let frame = match decoded {
                Decoded::Data(length) => {
                    let data = unread
                        .pending()
                        .get(consumed - length..consumed)
                        .map(Bytes::copy_from_slice)
                        .unwrap_or_default();
                    Some(Frame::data(data))
                }
                Decoded::Trailers(trailers) => Some(Frame::trailers(trailers)),
                Decoded::End => None,
                Decoded::NeedMore => {
                    unread.consume(consumed);
                    if unread.eof {
                        drop(unread);
                        return this.fail(BodyError::Gone);
                    }
                    drop(unread);
                    match connection.stream.poll_read_ready(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(_)) => return this.fail(BodyError::Gone),
                        Poll::Ready(Ok(())) => {}
                    }
                    // Room for the largest trailer section the decoder accepts, grown by doubling.
                    let limit = BODY_READ_BYTES.max(2 * connection.settings.max_head_bytes);
                    match connection
                        .unread
                        .borrow_mut()
                        .read_from(&connection.stream, limit)
                    {
                        Ok(_) => {}
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return this.fail(BodyError::Gone),
                    }
                    continue;
                }
            };
            unread.consume(consumed);
            let done = connection.body_done();
            if done {
                unread.release_if_empty();
            }
            drop(unread);
            if done {
                connection.wake_task();
            }
            return match frame {
                Some(frame) => Poll::Ready(Some(Ok(frame))),
                None => {
                    this.finished = true;
                    Poll::Ready(None)
                }
            };
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished || self.connection.body_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.connection.decoder.borrow().remaining() {
            Some(left) => SizeHint::with_exact(left),
            None => SizeHint::default(),
        }
    }
}

/// What happens to a connection after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    /// Read the next request.
    Next,
    /// Close (gracefully: the response was sent in full).
    Close,
    /// Drop the connection at once (the client left, the proxy is closing, or a write failed).
    Drop,
}

/// Serves one client connection until it closes: `service` answers each request, `refuse` a request head
/// that cannot be read (its response is sent and the connection closed). `phase` drains the connection
/// (no further request after the current one) or closes it.
pub async fn serve<S, F, R, B>(
    stream: TcpStream,
    settings: Settings,
    mut service: S,
    mut refuse: R,
    mut phase: watch::Receiver<Phase>,
) where
    S: FnMut(Request<RequestBody>) -> F,
    F: Future<Output = Response<B>>,
    R: FnMut(HeadError) -> Response<B>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let connection = Rc::new(Connection {
        stream,
        settings,
        unread: RefCell::default(),
        decoder: RefCell::new(Decoder::new(Framing::Empty, settings.max_head_bytes)),
        continue_wanted: Cell::new(false),
        response_started: Cell::new(false),
        continue_left: RefCell::default(),
        task: RefCell::new(None),
        pipelined: Cell::new(false),
    });
    loop {
        // Answering is boxed, once per request: the task's own future, which an idle connection keeps,
        // then holds only what waiting for the next head needs.
        let after = match read_head(&connection, &mut phase).await {
            Ok(Some(head)) => boxed(answer(&connection, head, &mut service, &mut phase)).await,
            Ok(None) => return,
            Err(error) => {
                let response = refuse(error);
                let shape = ResponseShape {
                    head_request: false,
                    http10: false,
                    body_length: None,
                    keep_alive: false,
                };
                // The head was not read: nothing after it can be trusted to be a body or a request.
                *connection.decoder.borrow_mut() = Decoder::new(Framing::Chunked, 0);
                boxed(write_response(
                    &connection,
                    response,
                    shape,
                    false,
                    &mut phase,
                ))
                .await;
                After::Close
            }
        };
        match after {
            After::Next => connection.unread.borrow_mut().release(),
            After::Close => return connection.close().await,
            // A reset, not a plain close: a response cut short by closing (an HTTP/1.0 client's body
            // delimited by the close) would otherwise look complete.
            After::Drop => {
                let _ = socket2::SockRef::from(&connection.stream).set_linger(Some(Duration::ZERO));
                return;
            }
        }
    }
}

/// Moves a future to the heap in a plain function, so the caller's own future never holds it (an
/// `async fn` may keep a temporary passed to `Box::pin` in its state).
fn boxed<'a, T>(future: impl Future<Output = T> + 'a) -> Pin<Box<dyn Future<Output = T> + 'a>> {
    Box::pin(future)
}

/// Reads the next request head. `Ok(None)`: the connection ends here (the client closed it, sent
/// nothing in time, or the proxy is draining and no request has started).
async fn read_head(
    connection: &Connection,
    phase: &mut watch::Receiver<Phase>,
) -> Result<Option<RequestHead>, HeadError> {
    let settings = connection.settings;
    let deadline = tokio::time::Instant::now() + settings.head_timeout;
    loop {
        let idle = {
            let mut unread = connection.unread.borrow_mut();
            // Empty lines before a request line are ignored (RFC 9112 §2.2); dropped here, once each, so
            // they cannot make every read reparse what came before.
            let blank = unread
                .pending()
                .iter()
                .take_while(|byte| matches!(byte, b'\r' | b'\n'))
                .count();
            unread.consume(blank);
            let pending = unread.pending();
            if head::head_may_end(pending, unread.scanned)
                && let Some((head, length)) = head::parse_request_head(pending)?
            {
                unread.consume(length);
                if head.framing == Framing::Empty {
                    unread.release_if_empty();
                }
                return Ok(Some(head));
            }
            let length = pending.len();
            if length >= settings.max_head_bytes {
                return Err(HeadError::TooLarge);
            }
            unread.scanned = length;
            if unread.eof {
                return Ok(None);
            }
            length == 0
        };
        // Draining: a connection with no request started closes, unless a request already waits in the
        // socket (sent before the drain, not yet read): that one is answered, then the connection closes.
        if idle && *phase.borrow() != Phase::Running && !connection.has_waiting_bytes() {
            return Ok(None);
        }
        tokio::select! {
            biased;
            ready = connection.stream.readable() => {
                if ready.is_err() {
                    return Ok(None);
                }
                let limit = settings.max_head_bytes;
                match connection.unread.borrow_mut().read_from(&connection.stream, limit) {
                    Ok(_) => {}
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return Ok(None),
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                tracing::debug!("no complete request head in time; closing the connection");
                return Ok(None);
            }
            changed = phase.changed(), if idle => {
                if changed.is_err() {
                    return Ok(None);
                }
            }
        }
    }
}

/// Answers one request; says what happens to the connection next.
async fn answer<S, F, B>(
    connection: &Rc<Connection>,
    head: RequestHead,
    service: &mut S,
    phase: &mut watch::Receiver<Phase>,
) -> After
where
    S: FnMut(Request<RequestBody>) -> F,
    F: Future<Output = Response<B>>,
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let RequestHead {
        parts,
        framing,
        keep_alive,
        expects_continue,
        accepts_trailers,
    } = head;
    let head_request = parts.method == Method::HEAD;
    let http10 = parts.version == Version::HTTP_10;
    *connection.decoder.borrow_mut() = Decoder::new(framing, connection.settings.max_head_bytes);
    connection
        .continue_wanted
        .set(expects_continue && framing != Framing::Empty);
    connection.response_started.set(false);
    connection.pipelined.set(false);
    let body = RequestBody {
        connection: Rc::clone(connection),
        finished: framing == Framing::Empty,
    };
    // Boxed: the connection's own future stays small while it waits for the next request.
    let mut pending = Box::pin(service(Request::from_parts(parts, body)));
    let mut draining = false;
    let mut watching = true;
    let response = loop {
        tokio::select! {
            biased;
            response = &mut pending => break response,
            () = connection.client_left() => return After::Drop,
            changed = phase.changed(), if watching => match changed.map(|()| *phase.borrow()) {
                Ok(Phase::Closing) => return After::Drop,
                Ok(Phase::Draining) => draining = true,
                Ok(Phase::Running) => {}
                Err(_) => watching = false,
            },
        }
    };
    drop(pending);
    let keep_alive = keep_alive && !draining && *phase.borrow() == Phase::Running;
    let shape = ResponseShape {
        head_request,
        http10,
        body_length: None,
        keep_alive,
    };
    match write_response(connection, response, shape, accepts_trailers, phase).await {
        After::Next if connection.body_done() && *phase.borrow() == Phase::Running => After::Next,
        After::Next => After::Close,
        after => after,
    }
}

/// Writes a response: its head (with the first body frame when one is ready at once), then its body frame
/// by frame, each the moment it is ready.
async fn write_response<B>(
    connection: &Connection,
    response: Response<B>,
    mut shape: ResponseShape,
    accepts_trailers: bool,
    phase: &mut watch::Receiver<Phase>,
) -> After
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    connection.response_started.set(true);
    let (parts, mut body) = response.into_parts();
    // A body not read to its end leaves bytes that are not a request: the connection cannot carry another.
    if head::has_token(&parts.headers, &http::header::CONNECTION, "close")
        || !connection.body_done()
    {
        shape.keep_alive = false;
    }
    // A frame ready now goes out with the head; a body that ends with it gets a Content-Length.
    let mut first = None;
    let mut ended = body.is_end_stream();
    shape.body_length = body.size_hint().exact();
    if shape.body_length.is_none() && !ended {
        match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
            Poll::Ready(Some(Ok(frame))) => first = Some(frame),
            Poll::Ready(Some(Err(err))) => {
                tracing::debug!(error = %err, "response body failed before its head was sent");
                return After::Drop;
            }
            Poll::Ready(None) => ended = true,
            Poll::Pending => {}
        }
        if first.is_some() && body.is_end_stream() {
            ended = true;
        }
        if ended {
            let length = first
                .as_ref()
                .and_then(Frame::data_ref)
                .map_or(0, |data| data.len() as u64);
            if first.as_ref().is_none_or(Frame::is_data) {
                shape.body_length = Some(length);
            }
        }
    }
    let mut out = std::mem::take(&mut *connection.continue_left.borrow_mut());
    out.reserve(head::head_size_estimate(&parts.headers));
    let framing =
        head::write_response_head(&mut out, parts.status, &parts.headers, shape, &http_date());
    drop(parts);
    if framing == ResponseFraming::Bodiless {
        drop(body);
        let written = connection.write_all(&mut [IoSlice::new(&out)]).await;
        return finish(written.map(|()| true), shape);
    }
    let mut writer = BodyWriter {
        framing,
        left: match framing {
            ResponseFraming::Length(length) => length,
            _ => u64::MAX,
        },
        overflowed: false,
        trailers: None,
        accepts_trailers,
    };
    let sent = match first {
        Some(frame) => writer.frame(connection, Some(out), frame).await,
        None => connection.write_all(&mut [IoSlice::new(&out)]).await,
    };
    if sent.is_err() {
        return After::Drop;
    }
    if !ended {
        let mut watching = true;
        loop {
            let next = tokio::select! {
                biased;
                next = body.frame() => next,
                () = connection.client_left() => return After::Drop,
                changed = phase.changed(), if watching => {
                    match changed.map(|()| *phase.borrow()) {
                        Ok(Phase::Closing) => return After::Drop,
                        Ok(_) => {}
                        Err(_) => watching = false,
                    }
                    continue;
                }
            };
            match next {
                Some(Ok(frame)) => {
                    if writer.frame(connection, None, frame).await.is_err() {
                        return After::Drop;
                    }
                }
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "response body failed; closing the connection");
                    return After::Drop;
                }
                None => break,
            }
        }
    }
    drop(body);
    finish(writer.end(connection).await, shape)
}

fn finish(written: io::Result<bool>, shape: ResponseShape) -> After {
    match written {
        Ok(true) if shape.keep_alive => After::Next,
        Ok(_) => After::Close,
        Err(_) => After::Drop,
    }
}

/// Frames response body data for the wire.
struct BodyWriter {
    framing: ResponseFraming,
    /// Bytes a `Content-Length` body still owes.
    left: u64,
    /// The body went on past its `Content-Length`: the excess was dropped, and the connection closes.
    overflowed: bool,
    /// Trailers to send after the last chunk.
    trailers: Option<HeaderMap>,
    accepts_trailers: bool,
}

impl BodyWriter {
    /// Writes one frame, after `head` when given.
    async fn frame(
        &mut self,
        connection: &Connection,
        head: Option<Vec<u8>>,
        frame: Frame<Bytes>,
    ) -> io::Result<()> {
        let head = head.unwrap_or_default();
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers()
                    && self.accepts_trailers
                    && self.framing == ResponseFraming::Chunked
                {
                    self.trailers = Some(trailers);
                }
                return connection.write_all(&mut [IoSlice::new(&head)]).await;
            }
        };
        match self.framing {
            ResponseFraming::Chunked if !data.is_empty() => {
                let (size, length) = head::chunk_size_line(data.len());
                connection
                    .write_all(&mut [
                        IoSlice::new(&head),
                        IoSlice::new(size.get(..length).unwrap_or_default()),
                        IoSlice::new(&data),
                        IoSlice::new(b"\r\n"),
                    ])
                    .await
            }
            ResponseFraming::Length(_) => {
                // A body longer than it said: the excess is never sent (the client would read it as the
                // next response), and the connection closes at the end.
                let take = usize::try_from(self.left)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.left -= take as u64;
                self.overflowed |= take < data.len();
                let data = data.get(..take).unwrap_or_default();
                connection
                    .write_all(&mut [IoSlice::new(&head), IoSlice::new(data)])
                    .await
            }
            ResponseFraming::Close => {
                connection
                    .write_all(&mut [IoSlice::new(&head), IoSlice::new(&data)])
                    .await
            }
            ResponseFraming::Chunked | ResponseFraming::Bodiless => {
                connection.write_all(&mut [IoSlice::new(&head)]).await
            }
        }
    }

    /// Ends the body; `Ok(true)` when it was delimited in full, so the connection can carry another.
    async fn end(&mut self, connection: &Connection) -> io::Result<bool> {
        match self.framing {
            ResponseFraming::Chunked => {
                let mut last = b"0\r\n".to_vec();
                if let Some(trailers) = self.trailers.take() {
                    head::write_trailers(&mut last, &trailers);
                }
                last.extend_from_slice(b"\r\n");
                connection.write_all(&mut [IoSlice::new(&last)]).await?;
                Ok(true)
            }
            ResponseFraming::Length(_) => Ok(self.left == 0 && !self.overflowed),
            ResponseFraming::Close => Ok(false),
            ResponseFraming::Bodiless => Ok(true),
        }
    }
}

thread_local! {
    /// The `Date` header's text for the current second: formatted once a second per worker.
    static DATE: Cell<(u64, [u8; 29])> = const { Cell::new((u64::MAX, [0; 29])) };
}

/// The current time as an HTTP date (`Thu, 03 Dec 2026 10:00:00 GMT`).
fn http_date() -> [u8; 29] {
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    DATE.with(|cache| {
        let (cached, text) = cache.get();
        if cached == second {
            return text;
        }
        let mut text = [b' '; 29];
        let formatted = httpdate::fmt_http_date(now);
        let length = formatted.len().min(29);
        if let (Some(into), Some(from)) =
            (text.get_mut(..length), formatted.as_bytes().get(..length))
        {
            into.copy_from_slice(from);
        }
        cache.set((second, text));
        text
    })
}

#[cfg(test)]
mod tests;
