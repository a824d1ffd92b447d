//! Request heads in, response heads out: the HTTP/1.1 message framing rules of RFC 9112 that decide how a
//! request body is delimited, whether the connection stays open, and how a response is framed.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};

/// Most header lines a request head may carry; beyond it the head is refused as too large.
pub const MAX_HEADERS: usize = 100;

/// How a request's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes (`Content-Length`, never 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A request head, and what the connection must know about its message.
#[derive(Debug)]
pub struct RequestHead {
    /// Method, target, version and headers.
    pub parts: http::request::Parts,
    /// How the body is delimited.
    pub framing: Framing,
    /// The client lets the connection carry another request after this one.
    pub keep_alive: bool,
    /// `Expect: 100-continue`: the client may wait for an interim `100` before sending its body.
    pub expects_continue: bool,
    /// `TE: trailers`: the client reads trailer fields after a chunked response.
    pub accepts_trailers: bool,
}

/// Why a request head was refused; each maps to one status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Longer than the head limit, or more than [`MAX_HEADERS`] lines: `431`.
    #[error("the request head is larger than the limit")]
    TooLarge,
    /// Not an HTTP/1.x request head: `400`.
    #[error("{0}")]
    Malformed(&'static str),
    /// A transfer coding other than `chunked`: `501` (RFC 9112 §6.1).
    #[error("transfer codings other than chunked are not supported")]
    UnsupportedTransferCoding,
}

/// Where a request head may end in `bytes`, looking only past `from` (minus the few bytes a terminator
/// split across two reads needs): a scan that never goes over the same bytes twice, so a client sending
/// its head one byte at a time costs linear time.
pub fn head_may_end(bytes: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(2);
    let tail = bytes.get(start..).unwrap_or_default();
    tail.windows(2).enumerate().any(|(index, pair)| match pair {
        [b'\n', b'\n'] => true,
        [b'\n', b'\r'] => tail.get(index + 2) == Some(&b'\n'),
        _ => false,
    })
}

/// Parses a complete request head at the start of `bytes`: `Ok(None)` when it is not complete yet,
/// otherwise the head and the number of bytes it took.
///
/// # Errors
/// The head is malformed, too large in lines, or frames its body in a way this server refuses.
pub fn parse_request_head(bytes: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut fields);
    let length = match request.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(httparse::Error::Version) => {
            return Err(HeadError::Malformed(
                "the request is not HTTP/1.0 or HTTP/1.1",
            ));
        }
        Err(_) => return Err(HeadError::Malformed("the request head is not valid HTTP")),
    };
    let method = request
        .method
        .and_then(|method| Method::from_bytes(method.as_bytes()).ok())
        .ok_or(HeadError::Malformed("invalid request method"))?;
    let uri = request
        .path
        .and_then(|target| Uri::try_from(target).ok())
        .ok_or(HeadError::Malformed("invalid request target"))?;
    let version = version(request.version);
    let headers = header_map(request.headers).map_err(HeadError::Malformed)?;
    let framing = request_framing(&headers, version)?;
    let keep_alive = keep_alive(version, &headers);
    let expects_continue = version == Version::HTTP_11
        && headers
            .get(header::EXPECT)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let accepts_trailers = has_token(&headers, &header::TE, "trailers");
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    let head = RequestHead {
        parts,
        framing,
        keep_alive,
        expects_continue,
        accepts_trailers,
    };
    Ok(Some((head, length)))
}

/// The version httparse read (`1.0` or `1.1`; it refuses any other).
pub fn version(minor: Option<u8>) -> Version {
    match minor {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    }
}

/// Header lines as httparse read them, as a map in their order (repeated names kept).
///
/// # Errors
/// A name or value `http` does not accept, named for the error message.
pub fn header_map(fields: &[httparse::Header<'_>]) -> Result<HeaderMap, &'static str> {
    let mut headers = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name =
            HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| "invalid header name")?;
        let value = HeaderValue::from_bytes(field.value).map_err(|_| "invalid header value")?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// The body framing of a request (RFC 9112 §6.3): `Transfer-Encoding` must end in `chunked` and must not
/// come with `Content-Length` (the pair is how requests are smuggled past a proxy), and every
/// `Content-Length` value must be the same number.
fn request_framing(headers: &HeaderMap, version: Version) -> Result<Framing, HeadError> {
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err(HeadError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if headers.contains_key(header::CONTENT_LENGTH) {
            return Err(HeadError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        let mut codings = 0usize;
        let mut last_chunked = false;
        for value in headers.get_all(header::TRANSFER_ENCODING) {
            let text = value
                .to_str()
                .map_err(|_| HeadError::Malformed("invalid Transfer-Encoding"))?;
            for coding in text
                .split(',')
                .map(str::trim)
                .filter(|coding| !coding.is_empty())
            {
                codings += 1;
                last_chunked = coding.eq_ignore_ascii_case("chunked");
            }
        }
        return match (codings, last_chunked) {
            (1, true) => Ok(Framing::Chunked),
            (_, true) => Err(HeadError::UnsupportedTransferCoding),
            _ => Err(HeadError::Malformed(
                "Transfer-Encoding does not end in chunked",
            )),
        };
    }
    Ok(
        match content_length(headers).map_err(HeadError::Malformed)? {
            None | Some(0) => Framing::Empty,
            Some(length) => Framing::Length(length),
        },
    )
}

/// The message's `Content-Length`: every value (repeated fields, comma lists) must be the same number.
///
/// # Errors
/// A value that is not a number, or two that differ, named for the error message.
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, &'static str> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let text = value.to_str().map_err(|_| "invalid Content-Length")?;
        for item in text.split(',') {
            let parsed = parse_length(item.trim()).ok_or("invalid Content-Length")?;
            if length.is_some_and(|seen| seen != parsed) {
                return Err("conflicting Content-Length values");
            }
            length = Some(parsed);
        }
    }
    Ok(length)
}

/// Whether the connection stays open after a message of `version` with these headers (RFC 9112 §9.3).
pub fn keep_alive(version: Version, headers: &HeaderMap) -> bool {
    let close = has_token(headers, &header::CONNECTION, "close");
    match version {
        Version::HTTP_10 => has_token(headers, &header::CONNECTION, "keep-alive") && !close,
        _ => !close,
    }
}

/// A chunk-size line (`1f4\r\n`) without allocating: at most 16 hex digits and CRLF.
pub fn chunk_size_line(size: usize) -> ([u8; 18], usize) {
    let mut line = [0u8; 18];
    let digits = (usize::BITS - size.leading_zeros()).div_ceil(4).max(1) as usize;
    for (index, slot) in line.iter_mut().take(digits).enumerate() {
        let shift = 4 * (digits - 1 - index);
        *slot = b"0123456789abcdef"[(size >> shift) & 0xf];
    }
    line[digits] = b'\r';
    line[digits + 1] = b'\n';
    (line, digits + 2)
}

/// A `Content-Length` value: 1 to 18 digits, so it cannot overflow.
pub fn parse_length(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 18 || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Whether a comma-separated header lists `token` (case-insensitive).
pub fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|byte| *byte == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// How a response's body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body is sent (`HEAD`, `204`, `205`, `304`).
    Bodiless,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Delimited by closing the connection (an HTTP/1.0 client and a body of unknown length).
    Close,
}

/// What the writer knows about a response before its head goes out.
#[derive(Debug, Clone, Copy)]
pub struct ResponseShape {
    /// The request was `HEAD`.
    pub head_request: bool,
    /// The request was HTTP/1.0.
    pub http10: bool,
    /// The body's length when known before sending.
    pub body_length: Option<u64>,
    /// The connection stays open after this response.
    pub keep_alive: bool,
}

/// Chooses the response framing and writes the head into `out`: the status line, `headers` without the
/// connection-level ones the caller may have left (they are the server's to choose), then framing,
/// `connection` and `date`.
pub fn write_response_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    shape: ResponseShape,
    date: &[u8],
) -> ResponseFraming {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_length);
    let bodiless_status = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::RESET_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if shape.head_request || bodiless_status {
        ResponseFraming::Bodiless
    } else if let Some(length) = declared.or(shape.body_length) {
        ResponseFraming::Length(length)
    } else if shape.http10 {
        ResponseFraming::Close
    } else {
        ResponseFraming::Chunked
    };
    let keep_alive = shape.keep_alive && framing != ResponseFraming::Close;

    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        let own = *name == header::CONNECTION
            || *name == header::TRANSFER_ENCODING
            || name.as_str() == "keep-alive"
            || (*name == header::CONTENT_LENGTH && !matches!(framing, ResponseFraming::Bodiless))
            || (*name == header::CONTENT_LENGTH && bodiless_status);
        if own {
            continue;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    match framing {
        ResponseFraming::Length(length) => {
            field(out, b"content-length", length.to_string().as_bytes());
        }
        ResponseFraming::Chunked => field(out, b"transfer-encoding", b"chunked"),
        // A HEAD response states the length a GET would get: only a body the server made itself says it
        // (the upstream's empty answer to HEAD does not).
        ResponseFraming::Bodiless
            if shape.head_request && declared.is_none() && !bodiless_status =>
        {
            if let Some(length) = shape.body_length.filter(|length| *length > 0) {
                field(out, b"content-length", length.to_string().as_bytes());
            }
        }
        ResponseFraming::Bodiless | ResponseFraming::Close => {}
    }
    if !keep_alive {
        field(out, b"connection", b"close");
    } else if shape.http10 {
        field(out, b"connection", b"keep-alive");
    }
    if !headers.contains_key(header::DATE) {
        field(out, b"date", date);
    }
    out.extend_from_slice(b"\r\n");
    framing
}

/// Fields that may not come as trailers (RFC 9110 §6.5.1): framing, routing, authentication, and fields
/// a client acts on before the body.
const FORBIDDEN_TRAILERS: [&str; 27] = [
    "age",
    "authorization",
    "cache-control",
    "connection",
    "content-encoding",
    "content-length",
    "content-range",
    "content-type",
    "cookie",
    "date",
    "expect",
    "expires",
    "host",
    "keep-alive",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "retry-after",
    "set-cookie",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "www-authenticate",
];

/// Writes trailer fields after a chunked body's last chunk, without those trailers may not carry.
pub fn write_trailers(out: &mut Vec<u8>, trailers: &HeaderMap) {
    for (name, value) in trailers {
        if !FORBIDDEN_TRAILERS.contains(&name.as_str()) {
            field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
}

/// Writes one `name: value` line.
pub fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Rough size of a response head, so its buffer is allocated once.
pub fn head_size_estimate(headers: &HeaderMap) -> usize {
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    fields + 160
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn parse(text: &str) -> Result<Option<(RequestHead, usize)>, HeadError> {
        parse_request_head(text.as_bytes())
    }

    fn head(text: &str) -> RequestHead {
        parse(text).unwrap().unwrap().0
    }

    #[test]
    fn a_complete_head_reports_its_length_and_leaves_the_body() {
        let text = "POST /v1/messages?x=1 HTTP/1.1\r\nHost: ai\r\nContent-Length: 5\r\n\r\nhello";
        let (head, length) = parse(text).unwrap().unwrap();
        assert_eq!(&text[length..], "hello");
        assert_eq!(head.parts.method, Method::POST);
        assert_eq!(head.parts.uri.path(), "/v1/messages");
        assert_eq!(head.parts.uri.query(), Some("x=1"));
        assert_eq!(head.parts.headers["host"], "ai");
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        assert!(!head.expects_continue);
    }

    #[test]
    fn a_partial_head_asks_for_more() {
        assert!(parse("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        assert!(parse("GET / HT").unwrap().is_none());
    }

    #[test]
    fn repeated_headers_keep_every_value_in_order() {
        let head = head("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\n\r\n");
        let values: Vec<_> = head.parts.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
    }

    #[test]
    fn framing_follows_rfc_9112() {
        assert_eq!(head("GET / HTTP/1.1\r\n\r\n").framing, Framing::Empty);
        assert_eq!(
            head("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").framing,
            Framing::Empty
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n").framing,
            Framing::Chunked
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n").framing,
            Framing::Length(7)
        );
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let refused = [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ];
        for text in refused {
            assert!(
                matches!(parse(text), Err(HeadError::Malformed(_))),
                "{text:?}"
            );
        }
        assert_eq!(
            parse("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").unwrap_err(),
            HeadError::UnsupportedTransferCoding
        );
    }

    #[test]
    fn malformed_heads_are_refused() {
        for text in [
            "GET / HTTP/1.1\r\nthis is not a header\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/1.1\r\nHo st: a\r\n\r\n",
            "G\0T / HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                matches!(parse(text), Err(HeadError::Malformed(_))),
                "{text:?}"
            );
        }
    }

    #[test]
    fn more_than_the_header_line_limit_is_too_large() {
        let mut text = String::from("GET / HTTP/1.1\r\n");
        for index in 0..=MAX_HEADERS {
            text.push_str(&format!("x-{index}: v\r\n"));
        }
        text.push_str("\r\n");
        assert_eq!(parse(&text).unwrap_err(), HeadError::TooLarge);
    }

    #[test]
    fn keep_alive_expect_and_te_follow_the_version_and_tokens() {
        assert!(!head("GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(head("POST / HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n").expects_continue);
        assert!(!head("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").expects_continue);
        assert!(head("GET / HTTP/1.1\r\nTE: deflate, trailers\r\n\r\n").accepts_trailers);
        assert!(!head("GET / HTTP/1.1\r\n\r\n").accepts_trailers);
    }

    #[test]
    fn the_end_of_a_head_is_found_across_reads_without_rescanning() {
        let text = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert!(head_may_end(text, 0));
        // The terminator split over two reads: only the last read's bytes (and two before) are scanned.
        assert!(head_may_end(text, text.len() - 1));
        assert!(head_may_end(b"GET / HTTP/1.1\n\n", 15));
        assert!(!head_may_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0));
    }

    fn response(
        status: u16,
        headers: &[(&str, &str)],
        shape: ResponseShape,
    ) -> (String, ResponseFraming) {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let mut out = Vec::new();
        let framing = write_response_head(
            &mut out,
            StatusCode::from_u16(status).unwrap(),
            &map,
            shape,
            b"Thu, 03 Dec 2026 00:00:00 GMT",
        );
        (String::from_utf8(out).unwrap(), framing)
    }

    const KEEP: ResponseShape = ResponseShape {
        head_request: false,
        http10: false,
        body_length: None,
        keep_alive: true,
    };

    #[test]
    fn response_framing_is_the_servers_choice() {
        let (text, framing) = response(200, &[("content-type", "text/event-stream")], KEEP);
        assert_eq!(framing, ResponseFraming::Chunked);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\
             date: Thu, 03 Dec 2026 00:00:00 GMT\r\n\r\n"
        );
        let (text, framing) = response(
            200,
            &[
                ("transfer-encoding", "chunked"),
                ("connection", "x"),
                ("date", "d"),
            ],
            ResponseShape {
                body_length: Some(3),
                ..KEEP
            },
        );
        assert_eq!(framing, ResponseFraming::Length(3));
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ndate: d\r\ncontent-length: 3\r\n\r\n"
        );
        let (text, framing) = response(
            200,
            &[],
            ResponseShape {
                http10: true,
                ..KEEP
            },
        );
        assert_eq!(framing, ResponseFraming::Close);
        assert!(text.contains("connection: close\r\n"), "{text}");
        let (text, framing) = response(
            204,
            &[("content-length", "0")],
            ResponseShape {
                keep_alive: false,
                ..KEEP
            },
        );
        assert_eq!(framing, ResponseFraming::Bodiless);
        assert!(!text.contains("content-length"), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        let (text, framing) = response(
            200,
            &[],
            ResponseShape {
                head_request: true,
                body_length: Some(9),
                ..KEEP
            },
        );
        assert_eq!(framing, ResponseFraming::Bodiless);
        assert!(text.contains("content-length: 9\r\n"), "{text}");
        // The upstream's empty answer to HEAD says nothing about the length a GET would get.
        let shape = ResponseShape {
            head_request: true,
            body_length: Some(0),
            ..KEEP
        };
        let (text, _) = response(200, &[], shape);
        assert!(!text.contains("content-length"), "{text}");
    }

    #[test]
    fn forbidden_trailer_fields_are_not_sent() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-checksum", HeaderValue::from_static("1"));
        trailers.insert("content-length", HeaderValue::from_static("5"));
        trailers.insert("set-cookie", HeaderValue::from_static("a=b"));
        let mut out = Vec::new();
        write_trailers(&mut out, &trailers);
        assert_eq!(out, b"x-checksum: 1\r\n");
    }
}
