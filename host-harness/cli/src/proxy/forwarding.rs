//! Header plumbing between HTTP messages and the filter: pseudo-headers, hop-by-hop removal, forwarding
//! headers.
//!
//! The filter sees headers the way Envoy shows them: `:method`, `:scheme`, `:authority`, `:path` (or
//! `:status`) first, then the end-to-end headers in arrival order, with repeated names kept as separate
//! entries. Hop-by-hop headers never reach the filter nor the other side.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request;
use http::{Method, StatusCode};

use host_harness::headers::Headers;

/// Forwarding headers the proxy maintains, parsed once: lookups by `&str` would parse the name each time.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The names above: a request carries them even when the client sent none, so none is parsed per request.
const PROXY_NAMES: [HeaderName; 3] = [X_FORWARDED_FOR, X_FORWARDED_PROTO, X_REQUEST_ID];

/// Hop-by-hop headers outside the standard set of the `http` crate (legacy, but still sent).
const HOP_BY_HOP_LEGACY: [&str; 2] = ["keep-alive", "proxy-connection"];

/// Why headers could not be turned into an HTTP message.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// A pseudo-header the message needs is missing.
    #[error("missing {0} pseudo-header")]
    MissingPseudo(&'static str),
    /// A pseudo-header's value is not usable.
    #[error("invalid {name} pseudo-header value")]
    InvalidPseudo {
        /// The pseudo-header.
        name: &'static str,
    },
    /// A header name is not a valid HTTP field name.
    #[error("invalid header name {0:?}")]
    InvalidName(String),
    /// A header value is not a valid HTTP field value.
    #[error("invalid value for header {0:?}")]
    InvalidValue(String),
}

/// Whether a header belongs to a single connection (RFC 9110 §7.6.1). `Trailer` is not one: it names
/// the trailer fields end to end.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    // Standard names compare as enum values, cheaper than comparing every name's text.
    *name == header::CONNECTION
        || *name == header::TE
        || *name == header::TRANSFER_ENCODING
        || *name == header::UPGRADE
        || HOP_BY_HOP_LEGACY.contains(&name.as_str())
}

/// Names listed in `Connection` headers: these are hop-by-hop too.
fn connection_tokens(headers: &HeaderMap) -> Vec<String> {
    let mut tokens = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        if let Ok(text) = value.to_str() {
            tokens.extend(
                text.split(',')
                    .map(|token| token.trim().to_ascii_lowercase())
                    .filter(|token| !token.is_empty()),
            );
        }
    }
    tokens
}

/// Appends the end-to-end headers of `headers` to `fields`, dropping hop-by-hop ones and any in `skip`.
fn push_end_to_end(headers: &HeaderMap, fields: &mut Headers, skip: &[HeaderName]) {
    let listed = if headers.contains_key(header::CONNECTION) {
        connection_tokens(headers)
    } else {
        Vec::new()
    };
    for (name, value) in headers {
        if is_hop_by_hop(name)
            || skip.contains(name)
            || listed.iter().any(|token| token == name.as_str())
        {
            continue;
        }
        fields.add(name.as_str(), value.as_bytes());
    }
}

/// The client's authority (RFC 9112 §3.2): the authority of an absolute-form request target, which
/// overrides `Host`, else the `Host` header. `None` (a `400`) for an HTTP/1.1 request without a
/// non-empty `Host`, whatever its target says, and for any request with no authority at all.
pub fn request_authority(parts: &request::Parts) -> Option<String> {
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .filter(|host| !host.is_empty());
    if host.is_none() && parts.version == http::Version::HTTP_11 {
        return None;
    }
    parts
        .uri
        .authority()
        .map(|authority| authority.as_str().to_owned())
        .or_else(|| host.map(str::to_owned))
}

/// The request headers the filter sees: pseudo-headers, end-to-end headers, then the proxy's own
/// `x-forwarded-for`, `x-forwarded-proto` and `x-request-id` (kept if present).
///
/// `Proxy-Authorization` is meant for this proxy, which takes none, so it never goes further (like the
/// credential, it must not reach a third party). `x-forwarded-for` is sent only with `client_ip` (the
/// client address appended to what the client sent); without it the upstream learns no address at all,
/// not even one a front proxy set.
pub fn request_fields(
    parts: &request::Parts,
    authority: &str,
    client_ip: Option<&str>,
    request_id: &str,
) -> Headers {
    let mut fields = Headers::new();
    fields.add(":method", parts.method.as_str());
    fields.add(":scheme", "http");
    fields.add(":authority", authority);
    let path = parts.uri.path_and_query().map_or("/", |path| path.as_str());
    fields.add(":path", path);
    push_end_to_end(
        &parts.headers,
        &mut fields,
        &[
            header::HOST,
            header::EXPECT,
            header::PROXY_AUTHORIZATION,
            X_FORWARDED_FOR,
        ],
    );

    if let Some(client_ip) = client_ip {
        let mut forwarded_for = Vec::new();
        for value in parts.headers.get_all(X_FORWARDED_FOR) {
            if !forwarded_for.is_empty() {
                forwarded_for.extend_from_slice(b", ");
            }
            forwarded_for.extend_from_slice(value.as_bytes());
        }
        if !forwarded_for.is_empty() {
            forwarded_for.extend_from_slice(b", ");
        }
        forwarded_for.extend_from_slice(client_ip.as_bytes());
        fields.add(X_FORWARDED_FOR.as_str(), forwarded_for);
    }
    if !parts.headers.contains_key(X_FORWARDED_PROTO) {
        fields.add(X_FORWARDED_PROTO.as_str(), "http");
    }
    if !parts.headers.contains_key(X_REQUEST_ID) {
        fields.add(X_REQUEST_ID.as_str(), request_id);
    }
    fields
}

/// The response headers the filter sees: `:status`, then the end-to-end headers.
///
/// A response framed both ways (`Transfer-Encoding` and `Content-Length`) was read by its
/// `Transfer-Encoding`; its `Content-Length` is stale and is dropped (RFC 9112 §6.3), or the client would
/// frame the body by it.
pub fn response_fields(status: StatusCode, headers: &HeaderMap) -> Headers {
    let mut fields = Headers::new();
    fields.add(":status", status.as_str());
    let skip: &[HeaderName] = if headers.contains_key(header::TRANSFER_ENCODING) {
        &[header::CONTENT_LENGTH]
    } else {
        &[]
    };
    push_end_to_end(headers, &mut fields, skip);
    fields
}

/// Whether an upstream response is framed both by `Transfer-Encoding` and by `Content-Length`: a sign of
/// response smuggling, so its connection must not carry another request.
pub fn framed_twice(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING) && headers.contains_key(header::CONTENT_LENGTH)
}

/// Trailers as the filter sees them.
pub fn trailer_fields(trailers: &HeaderMap) -> Headers {
    let mut fields = Headers::new();
    push_end_to_end(trailers, &mut fields, &[]);
    fields
}

fn pseudo<'a>(fields: &'a Headers, name: &'static str) -> Option<&'a [u8]> {
    fields.get(name)
}

/// Copies the regular headers of `fields` into `headers`, skipping pseudo-headers, `host` and
/// hop-by-hop headers (a filter may have added one).
///
/// # Errors
/// A name or value the filter produced is not valid HTTP.
pub fn fill_header_map(fields: &Headers, headers: &mut HeaderMap) -> Result<(), HeaderError> {
    headers.reserve(fields.len());
    for (name, value) in fields.iter() {
        if name.starts_with(b":") {
            continue;
        }
        let header_name = match PROXY_NAMES
            .iter()
            .find(|known| known.as_str().as_bytes() == name)
        {
            Some(known) => known.clone(),
            None => HeaderName::from_bytes(name).map_err(|_| {
                HeaderError::InvalidName(String::from_utf8_lossy(name).into_owned())
            })?,
        };
        if is_hop_by_hop(&header_name) || header_name == header::HOST {
            continue;
        }
        let header_value = HeaderValue::from_bytes(value)
            .map_err(|_| HeaderError::InvalidValue(header_name.as_str().to_owned()))?;
        headers.append(header_name, header_value);
    }
    Ok(())
}

/// The parts of the upstream request the filter decides: method, path and the `Host` to send.
pub struct UpstreamHead {
    /// `:method` after the filter.
    pub method: Method,
    /// `:path` after the filter, always starting with `/`.
    pub path: String,
    /// The filter's `:authority` when it rewrote it; otherwise `None` and the upstream's host is used.
    pub rewritten_authority: Option<HeaderValue>,
}

/// Reads the pseudo-headers the filter left for the upstream request.
///
/// # Errors
/// `:method` or `:path` is missing or invalid, or `:authority` was rewritten to an invalid value.
pub fn upstream_head(
    fields: &Headers,
    original_authority: &str,
) -> Result<UpstreamHead, HeaderError> {
    let method_bytes = pseudo(fields, ":method").ok_or(HeaderError::MissingPseudo(":method"))?;
    let method = Method::from_bytes(method_bytes)
        .map_err(|_| HeaderError::InvalidPseudo { name: ":method" })?;
    let path_bytes = pseudo(fields, ":path").ok_or(HeaderError::MissingPseudo(":path"))?;
    let path = std::str::from_utf8(path_bytes)
        .ok()
        .filter(|path| path.starts_with('/'))
        .ok_or(HeaderError::InvalidPseudo { name: ":path" })?
        .to_owned();
    let rewritten_authority = match pseudo(fields, ":authority") {
        Some(authority) if authority != original_authority.as_bytes() => Some(
            HeaderValue::from_bytes(authority)
                .map_err(|_| HeaderError::InvalidPseudo { name: ":authority" })?,
        ),
        _ => None,
    };
    Ok(UpstreamHead {
        method,
        path,
        rewritten_authority,
    })
}

/// The response status the filter left in `:status`.
///
/// # Errors
/// `:status` is missing or not a valid status code.
pub fn response_status(fields: &Headers) -> Result<StatusCode, HeaderError> {
    let status = pseudo(fields, ":status").ok_or(HeaderError::MissingPseudo(":status"))?;
    StatusCode::from_bytes(status)
        .ok()
        // A 1xx is never a final response: sent as one, the client would wait for another or switch protocols.
        .filter(|status| !status.is_informational())
        .ok_or(HeaderError::InvalidPseudo { name: ":status" })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn the_authority_follows_rfc_9112() {
        let request = |target: &str, version: http::Version, host: Option<&str>| {
            let mut builder = http::Request::builder().uri(target).version(version);
            if let Some(host) = host {
                builder = builder.header("host", host);
            }
            builder.body(()).unwrap().into_parts().0
        };
        let v11 = http::Version::HTTP_11;
        let v10 = http::Version::HTTP_10;
        assert_eq!(
            request_authority(&request("/a", v11, Some("ai"))).as_deref(),
            Some("ai")
        );
        // An absolute-form target wins over Host.
        assert_eq!(
            request_authority(&request("http://api.test/a", v11, Some("ai"))).as_deref(),
            Some("api.test")
        );
        // HTTP/1.1 needs Host even with an absolute-form target; HTTP/1.0 does not.
        assert_eq!(
            request_authority(&request("http://api.test/a", v11, None)),
            None
        );
        assert_eq!(request_authority(&request("/a", v11, Some(""))), None);
        assert_eq!(
            request_authority(&request("http://api.test/a", v10, None)).as_deref(),
            Some("api.test")
        );
        assert_eq!(request_authority(&request("/a", v10, None)), None);
    }

    fn parts(headers: &[(&str, &str)]) -> request::Parts {
        let mut builder = http::Request::builder()
            .method("POST")
            .uri("/v1/messages?beta=true");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn names(fields: &Headers) -> Vec<&str> {
        fields
            .iter()
            .map(|(name, _)| std::str::from_utf8(name).unwrap())
            .collect()
    }

    #[test]
    fn pseudo_headers_come_first_and_hop_by_hop_go() {
        let parts = parts(&[
            ("host", "client.example"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("accept", "a"),
            ("accept", "b"),
        ]);
        let fields = request_fields(&parts, "client.example", Some("10.0.0.1"), "rid");
        assert_eq!(
            names(&fields),
            [
                ":method",
                ":scheme",
                ":authority",
                ":path",
                "accept",
                "accept",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-request-id"
            ]
        );
        assert_eq!(pseudo(&fields, ":path").unwrap(), b"/v1/messages?beta=true");
    }

    #[test]
    fn forwarded_for_is_appended() {
        let parts = parts(&[
            ("host", "h"),
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        let fields = request_fields(&parts, "h", Some("127.0.0.1"), "rid");
        assert_eq!(
            pseudo(&fields, "x-forwarded-for").unwrap(),
            b"1.1.1.1, 2.2.2.2, 127.0.0.1"
        );
    }

    #[test]
    fn no_address_and_no_proxy_credentials_go_upstream_by_default() {
        let parts = parts(&[
            ("host", "h"),
            ("x-forwarded-for", "100.64.0.7"),
            ("proxy-authorization", "Basic c2VjcmV0"),
        ]);
        let fields = request_fields(&parts, "h", None, "rid");
        assert!(pseudo(&fields, "x-forwarded-for").is_none());
        assert!(pseudo(&fields, "proxy-authorization").is_none());
    }

    #[test]
    fn a_response_framed_twice_loses_its_content_length() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::TRAILER, HeaderValue::from_static("x-checksum"));
        assert!(framed_twice(&headers));
        let fields = response_fields(StatusCode::OK, &headers);
        assert_eq!(names(&fields), [":status", "trailer"]);
    }

    #[test]
    fn authority_rewrite_is_detected() {
        let mut fields = request_fields(
            &parts(&[("host", "client.example")]),
            "client.example",
            Some("::1"),
            "rid",
        );
        assert!(
            upstream_head(&fields, "client.example")
                .unwrap()
                .rewritten_authority
                .is_none()
        );
        fields.replace(":authority", "other.example");
        let head = upstream_head(&fields, "client.example").unwrap();
        assert_eq!(head.rewritten_authority.unwrap(), "other.example");
        assert_eq!(head.method, Method::POST);
    }

    #[test]
    fn filter_added_hop_by_hop_headers_are_not_sent() {
        let fields = Headers::from([("connection", "close"), ("x-a", "1"), ("x-a", "2")]);
        let mut map = HeaderMap::new();
        fill_header_map(&fields, &mut map).unwrap();
        assert!(!map.contains_key("connection"));
        assert_eq!(map.get_all("x-a").iter().count(), 2);
    }

    #[test]
    fn invalid_filter_header_is_an_error() {
        let fields = Headers::from([("bad name", "1")]);
        assert!(fill_header_map(&fields, &mut HeaderMap::new()).is_err());
        let fields = Headers::from([("x", "a\nb")]);
        assert!(fill_header_map(&fields, &mut HeaderMap::new()).is_err());
    }

    #[test]
    fn the_proxy_forwarding_headers_are_sent_under_their_names() {
        let fields = request_fields(&parts(&[("host", "h")]), "h", Some("10.0.0.1"), "rid-1");
        let mut map = HeaderMap::new();
        fill_header_map(&fields, &mut map).unwrap();
        assert_eq!(map.get("x-forwarded-for").unwrap(), "10.0.0.1");
        assert_eq!(map.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(map.get("x-request-id").unwrap(), "rid-1");
        assert_eq!(map.len(), 3);
    }
}
