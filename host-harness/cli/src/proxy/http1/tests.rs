//! The server side over real sockets on 127.0.0.1, with a small echo service on its own thread.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::mpsc as std_mpsc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::{mpsc, watch};

use super::head::HeadError;
use super::{RequestBody, Settings, serve};
use crate::proxy::worker::Phase;

const WAIT: Duration = Duration::from_secs(10);

/// A response body: known in full, or frames fed through a channel.
enum TestBody {
    Full(Option<Bytes>),
    Channel(mpsc::Receiver<Frame<Bytes>>),
    /// These data frames, one per poll.
    Frames(std::collections::VecDeque<Bytes>),
    /// One data frame, then a failure.
    Failing(Option<Bytes>),
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = &'static str;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            TestBody::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
            TestBody::Channel(receiver) => receiver.poll_recv(cx).map(|frame| frame.map(Ok)),
            TestBody::Failing(first) => Poll::Ready(Some(match first.take() {
                Some(data) => Ok(Frame::data(data)),
                None => Err("the body broke"),
            })),
            TestBody::Frames(frames) => {
                Poll::Ready(frames.pop_front().map(|data| Ok(Frame::data(data))))
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            TestBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            TestBody::Channel(_) | TestBody::Frames(_) | TestBody::Failing(_) => {
                SizeHint::default()
            }
        }
    }
}

/// What the test hears from the server thread.
enum Heard {
    /// A request's service future was dropped before it answered.
    Cancelled(String),
}

/// Answers `/echo` with the method, path and body it read (and the trailers' names), `/stream` with
/// a chunked body fed by `chunks`, `/hang` never, and `/early` without reading the body.
async fn service(
    request: Request<RequestBody>,
    heard: std_mpsc::Sender<Heard>,
    chunks: Rc<std::cell::RefCell<Option<mpsc::Receiver<Frame<Bytes>>>>>,
) -> Response<TestBody> {
    let path = request.uri().path().to_owned();
    struct Guard(Option<(std_mpsc::Sender<Heard>, String)>);
    impl Drop for Guard {
        fn drop(&mut self) {
            if let Some((heard, path)) = self.0.take() {
                let _ = heard.send(Heard::Cancelled(path));
            }
        }
    }
    let mut guard = Guard(Some((heard, path.clone())));
    let response = match path.as_str() {
        "/hang" => std::future::pending().await,
        "/early" => Response::new(TestBody::Full(Some(Bytes::from_static(b"early")))),
        "/broken" => Response::new(TestBody::Failing(Some(Bytes::from_static(b"part")))),
        // Says three bytes, then sends more: what follows must never reach the client.
        "/overlong" => {
            let frames = [
                "abc",
                "XX",
                "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged",
            ];
            let mut response = Response::new(TestBody::Frames(
                frames
                    .into_iter()
                    .map(|frame| Bytes::from_static(frame.as_bytes()))
                    .collect(),
            ));
            response
                .headers_mut()
                .insert("content-length", HeaderValue::from_static("3"));
            response
        }
        "/stream" => match chunks.borrow_mut().take() {
            Some(receiver) => Response::new(TestBody::Channel(receiver)),
            None => Response::new(TestBody::Full(None)),
        },
        _ => {
            let method = request.method().to_string();
            let collected = request.into_body().collect().await;
            let text = match collected {
                Ok(collected) => {
                    let names: Vec<String> = collected
                        .trailers()
                        .map(|map| map.keys().map(|name| name.to_string()).collect())
                        .unwrap_or_default();
                    let body = collected.to_bytes();
                    format!(
                        "{method} {path} {} [{}]",
                        String::from_utf8_lossy(&body),
                        names.join(",")
                    )
                }
                Err(err) => format!("body error: {err}"),
            };
            Response::new(TestBody::Full(Some(Bytes::from(text))))
        }
    };
    guard.0 = None;
    response
}

fn refuse(error: HeadError) -> Response<TestBody> {
    let status = match error {
        HeadError::TooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        HeadError::Malformed(_) => StatusCode::BAD_REQUEST,
        HeadError::UnsupportedTransferCoding => StatusCode::NOT_IMPLEMENTED,
    };
    let mut response = Response::new(TestBody::Full(Some(Bytes::from(error.to_string()))));
    *response.status_mut() = status;
    response
}

struct Server {
    addr: SocketAddr,
    heard: std_mpsc::Receiver<Heard>,
    phase: watch::Sender<Phase>,
    chunks: Option<mpsc::Sender<Frame<Bytes>>>,
}

fn settings() -> Settings {
    Settings {
        max_head_bytes: 8192,
        head_timeout: Duration::from_secs(30),
        send_timeout: Duration::from_secs(5),
    }
}

/// A server on its own thread, serving every connection it accepts.
fn start(settings: Settings) -> Server {
    let (heard_tx, heard) = std_mpsc::channel();
    let (phase, phase_rx) = watch::channel(Phase::Running);
    let (chunk_tx, chunk_rx) = mpsc::channel(8);
    let (addr_tx, addr_rx) = std_mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let chunks = Rc::new(std::cell::RefCell::new(Some(chunk_rx)));
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let heard = heard_tx.clone();
                let chunks = Rc::clone(&chunks);
                let phase = phase_rx.clone();
                tokio::task::spawn_local(serve(
                    stream,
                    settings,
                    move |request| service(request, heard.clone(), Rc::clone(&chunks)),
                    refuse,
                    phase,
                ));
            }
        });
    });
    Server {
        addr: addr_rx.recv_timeout(WAIT).unwrap(),
        heard,
        phase,
        chunks: Some(chunk_tx),
    }
}

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream
}

/// Reads until `count` responses (by their heads and `content-length` bodies) or the connection closes.
fn read_responses(stream: &mut TcpStream, count: usize) -> Vec<(String, String)> {
    let mut buffer = Vec::new();
    let mut responses = Vec::new();
    while responses.len() < count {
        let text = String::from_utf8_lossy(&buffer).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_owned();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .map(|value| value.parse::<usize>().unwrap());
            if let Some(length) = length
                && buffer.len() >= end + 4 + length
            {
                let body = String::from_utf8_lossy(&buffer[end + 4..end + 4 + length]).into_owned();
                buffer.drain(..end + 4 + length);
                responses.push((head, body));
                continue;
            }
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
        }
    }
    responses
}

fn read_to_close(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let _ = stream.read_to_end(&mut all);
    String::from_utf8_lossy(&all).into_owned()
}

#[test]
fn keep_alive_and_pipelined_requests_are_answered_in_order() {
    let server = start(settings());
    let mut client = connect(&server);
    client
        .write_all(b"POST /echo HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhelloGET /two HTTP/1.1\r\nhost: a\r\n\r\n")
        .unwrap();
    let responses = read_responses(&mut client, 2);
    assert_eq!(responses.len(), 2, "{responses:?}");
    assert!(
        responses[0].0.starts_with("HTTP/1.1 200 OK"),
        "{responses:?}"
    );
    assert_eq!(responses[0].1, "POST /echo hello []");
    assert_eq!(responses[1].1, "GET /two  []");
    assert!(responses[1].0.contains("\r\ndate: "), "{responses:?}");
    // The connection is still open for a third.
    client
        .write_all(b"GET /three HTTP/1.1\r\nhost: a\r\n\r\n")
        .unwrap();
    assert_eq!(read_responses(&mut client, 1)[0].1, "GET /three  []");
}

#[test]
fn a_chunked_body_with_trailers_arrives_after_100_continue() {
    let server = start(settings());
    let mut client = connect(&server);
    client
        .write_all(b"POST /echo HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\ntransfer-encoding: chunked\r\n\r\n")
        .unwrap();
    let mut interim = [0u8; 25];
    client.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    client
        .write_all(b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nx-sum: 9\r\n\r\n")
        .unwrap();
    let responses = read_responses(&mut client, 1);
    assert_eq!(responses[0].1, "POST /echo abcde [x-sum]");
}

#[test]
fn a_malformed_chunk_is_a_body_error_and_the_connection_closes() {
    let server = start(settings());
    let mut client = connect(&server);
    client
        .write_all(b"POST /echo HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n")
        .unwrap();
    let text = read_to_close(&mut client);
    assert!(
        text.contains("body error: the request body is malformed"),
        "{text}"
    );
    assert!(text.contains("connection: close"), "{text}");
}

#[test]
fn refused_heads_get_their_status_and_the_connection_closes() {
    let server = start(settings());
    for (request, status) in [
        (
            format!("GET / HTTP/1.1\r\nx-big: {}\r\n\r\n", "a".repeat(9000)),
            "431",
        ),
        ("GET / HTTP/1.1\r\nnot a header\r\n\r\n".to_owned(), "400"),
        (
            "POST / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n".to_owned(),
            "501",
        ),
        (
            "POST / HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n".to_owned(),
            "400",
        ),
    ] {
        let mut client = connect(&server);
        client.write_all(request.as_bytes()).unwrap();
        let text = read_to_close(&mut client);
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
        assert!(text.contains("connection: close"), "{text}");
    }
}

#[test]
fn a_client_that_leaves_while_its_response_is_pending_cancels_the_request() {
    let server = start(settings());
    let mut client = connect(&server);
    client
        .write_all(b"GET /hang HTTP/1.1\r\nhost: a\r\n\r\n")
        .unwrap();
    client.shutdown(std::net::Shutdown::Both).unwrap();
    drop(client);
    match server.heard.recv_timeout(WAIT) {
        Ok(Heard::Cancelled(path)) => assert_eq!(path, "/hang"),
        Err(err) => panic!("the request was not cancelled: {err}"),
    }
}

#[test]
fn a_streamed_response_is_chunked_and_sends_trailers_only_when_accepted() {
    let mut server = start(settings());
    let chunks = server.chunks.take().unwrap();
    let mut client = connect(&server);
    client
        .write_all(b"GET /stream HTTP/1.1\r\nhost: a\r\nte: trailers\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        client.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    // The first event reaches the client before the body ends.
    chunks
        .blocking_send(Frame::data(Bytes::from_static(b"data: 1\n\n")))
        .unwrap();
    let mut first = [0u8; 14];
    client.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"9\r\ndata: 1\n\n\r\n");
    let mut trailers = HeaderMap::new();
    trailers.insert("x-done", HeaderValue::from_static("yes"));
    chunks.blocking_send(Frame::trailers(trailers)).unwrap();
    drop(chunks);
    let mut rest = Vec::new();
    while !rest.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        client.read_exact(&mut byte).unwrap();
        rest.push(byte[0]);
    }
    assert_eq!(rest, b"0\r\nx-done: yes\r\n\r\n");
}

#[test]
fn an_answer_before_the_body_was_read_closes_after_the_client_reads_it() {
    let server = start(settings());
    let mut client = connect(&server);
    client
        .write_all(b"POST /early HTTP/1.1\r\nhost: a\r\ncontent-length: 100000\r\n\r\n")
        .unwrap();
    client.write_all(&[b'x'; 50_000]).unwrap();
    let text = read_to_close(&mut client);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.ends_with("early"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
}

#[test]
fn draining_closes_idle_connections_and_ends_busy_ones_after_their_response() {
    let server = start(settings());
    let mut idle = connect(&server);
    let mut busy = connect(&server);
    busy.write_all(b"POST /echo HTTP/1.1\r\nhost: a\r\ncontent-length: 4\r\n\r\nab")
        .unwrap();
    // The busy request was sent before the drain: read already or still waiting in the socket, it is
    // answered either way, then its connection closes.
    idle.write_all(b"GET /first HTTP/1.1\r\nhost: a\r\n\r\n")
        .unwrap();
    assert_eq!(read_responses(&mut idle, 1)[0].1, "GET /first  []");
    server.phase.send(Phase::Draining).unwrap();
    assert_eq!(read_to_close(&mut idle), "");
    busy.write_all(b"cd").unwrap();
    let text = read_to_close(&mut busy);
    assert!(text.contains("connection: close"), "{text}");
    assert!(text.ends_with("POST /echo abcd []"), "{text}");
}

#[test]
fn a_silent_connection_is_closed_after_the_head_timeout() {
    let server = start(Settings {
        head_timeout: Duration::from_millis(200),
        ..settings()
    });
    let mut client = connect(&server);
    client.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    assert_eq!(read_to_close(&mut client), "");
}

#[test]
fn a_body_longer_than_its_content_length_is_cut_and_the_connection_closed() {
    let server = start(settings());
    let mut client = connect(&server);
    client
        .write_all(
            b"GET /overlong HTTP/1.1\r\nhost: a\r\n\r\nGET /next HTTP/1.1\r\nhost: a\r\n\r\n",
        )
        .unwrap();
    let text = read_to_close(&mut client);
    assert!(text.ends_with("\r\n\r\nabc"), "{text}");
    assert!(!text.contains("forged"), "{text}");
}

#[test]
fn a_response_cut_short_is_reset_so_an_http10_client_cannot_take_it_for_complete() {
    let server = start(settings());
    let mut client = connect(&server);
    client.write_all(b"GET /broken HTTP/1.0\r\n\r\n").unwrap();
    let mut received = Vec::new();
    let ended = client.read_to_end(&mut received);
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert_eq!(
        ended.map_err(|err| err.kind()),
        Err(std::io::ErrorKind::ConnectionReset),
        "{text}"
    );
}
