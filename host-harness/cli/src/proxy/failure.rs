//! Why the proxy answered a request itself, and the response each reason gets.
//!
//! Every answer the proxy makes on its own (overload, upstream trouble, a bad request, a failed filter)
//! carries a JSON body in the configured [`ErrorShape`]. The default is the Anthropic API's error shape,
//! `{"type":"error","error":{"type":..,"message":..}}`, so clients written for the API handle it like any
//! other API error: the same key order, the request id in the body and in a `request-id` header (the
//! access log's, so a user can quote it), and `x-should-retry` saying whether the SDKs should try again.
//! The other shape is RFC 9457 problem details, with the same headers.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::http1::head::HeadError;
use super::identity::IdentityRefusal;
use super::product::ErrorShape;

/// Why a request failed by the client's doing; the upstream is not at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// The body is not valid HTTP framing (a bad chunk size, say).
    Malformed,
    /// The client sent nothing for `request_body_timeout` while its body was being read.
    Stalled,
    /// The client closed the connection before its body ended.
    Gone,
}

/// A request the proxy answers itself; each variant maps to one status code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The concurrency limit and its queue are full, or the queue wait ran out.
    #[error("proxy is at its concurrency limit; retry later")]
    Overloaded,
    /// No connection to the upstream within the connect timeout.
    #[error("upstream connect timeout after {}", seconds(*.0))]
    ConnectTimeout(Duration),
    /// The upstream (or a paused filter) did not produce response headers in time.
    #[error("upstream did not respond within {}", seconds(*.0))]
    ResponseTimeout(Duration),
    /// The upstream could not be reached.
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    /// The upstream connection failed before a response arrived.
    #[error("upstream connection failed: {0}")]
    UpstreamBroken(String),
    /// The client's request cannot be proxied.
    #[error("{0}")]
    BadRequest(&'static str),
    /// The method is refused (`TRACE` would echo the injected credential back to the client).
    #[error("method {0} is not allowed")]
    MethodNotAllowed(&'static str),
    /// The client broke its request body off, sent it malformed, or stalled.
    #[error("{}", client_fault_message(*.0))]
    Client(ClientFault),
    /// The filter failed (trapped) on this request; the proxy fails closed.
    #[error("request filter unavailable")]
    FilterFailed,
    /// The filter produced headers that are not valid HTTP.
    #[error("request filter produced an invalid message: {0}")]
    FilterInvalid(String),
    /// The filter reset the stream.
    #[error("request was reset by the filter")]
    Reset,
    /// The caller's identity could not be resolved (mode `whois`).
    #[error(transparent)]
    Identity(IdentityRefusal),
    /// The request head could not be read.
    #[error(transparent)]
    Head(HeadError),
}

fn client_fault_message(fault: ClientFault) -> &'static str {
    match fault {
        ClientFault::Malformed => "the request body is malformed",
        ClientFault::Stalled => "the request body did not arrive in time",
        ClientFault::Gone => "the client closed the connection before the request body ended",
    }
}

/// nginx's code for a client that went away before its response: not a status any response carries.
const CLIENT_CLOSED_REQUEST: u16 = 499;

/// `{"type":"error","error":{"type":..,"message":..},"request_id":..}`, keys in the API's order (a JSON
/// map would sort them).
#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    r#type: &'static str,
    error: ErrorDetail<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
}

/// RFC 9457 problem details, with the request id as an extension member.
#[derive(serde::Serialize)]
struct ProblemBody<'a> {
    r#type: &'static str,
    title: &'a str,
    status: u16,
    detail: &'a str,
    request_id: &'a str,
}

#[derive(serde::Serialize)]
struct ErrorDetail<'a> {
    r#type: &'a str,
    message: &'a str,
}

fn seconds(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

impl Failure {
    /// The status code sent for this failure.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Overloaded | Self::FilterFailed => StatusCode::SERVICE_UNAVAILABLE,
            Self::ConnectTimeout(_) | Self::ResponseTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Unreachable(_) | Self::UpstreamBroken(_) => StatusCode::BAD_GATEWAY,
            Self::BadRequest(_) | Self::Client(ClientFault::Malformed) => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Client(ClientFault::Stalled) => StatusCode::REQUEST_TIMEOUT,
            Self::Client(ClientFault::Gone) => {
                StatusCode::from_u16(CLIENT_CLOSED_REQUEST).unwrap_or(StatusCode::BAD_REQUEST)
            }
            Self::FilterInvalid(_) | Self::Reset => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Identity(IdentityRefusal::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Identity(IdentityRefusal::Unknown) => StatusCode::FORBIDDEN,
            Self::Head(HeadError::TooLarge) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Head(HeadError::Malformed(_)) => StatusCode::BAD_REQUEST,
            Self::Head(HeadError::UnsupportedTransferCoding) => StatusCode::NOT_IMPLEMENTED,
        }
    }

    /// The Anthropic error type for this failure.
    fn error_type(&self) -> &'static str {
        match self {
            Self::Overloaded => "overloaded_error",
            Self::BadRequest(_)
            | Self::MethodNotAllowed(_)
            | Self::Head(_)
            | Self::Client(ClientFault::Malformed | ClientFault::Gone) => "invalid_request_error",
            Self::ConnectTimeout(_)
            | Self::ResponseTimeout(_)
            | Self::Client(ClientFault::Stalled) => "timeout_error",
            Self::Identity(IdentityRefusal::Unknown) => "permission_error",
            _ => "api_error",
        }
    }

    /// The full response: status, JSON body with `request_id`, the `request-id` header, `retry-after`
    /// with `x-should-retry: true` for overload, and `x-should-retry: false` where a retry cannot help
    /// (the request itself is wrong, or the filter failed closed).
    pub fn to_response(&self, request_id: &str, shape: ErrorShape) -> Response<Bytes> {
        let message = self.to_string();
        let status = self.status();
        let mut response = match shape {
            ErrorShape::Anthropic => json_response(
                status,
                error_body(self.error_type(), &message, Some(request_id)),
                APPLICATION_JSON,
            ),
            ErrorShape::Problem => json_response(
                status,
                problem_body(status, &message, request_id),
                APPLICATION_PROBLEM_JSON,
            ),
        };
        let headers = response.headers_mut();
        if let Ok(value) = HeaderValue::from_str(request_id) {
            headers.insert(REQUEST_ID, value);
        }
        match self {
            Self::Overloaded => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                headers.insert(X_SHOULD_RETRY, HeaderValue::from_static("true"));
            }
            Self::BadRequest(_)
            | Self::MethodNotAllowed(_)
            | Self::Head(_)
            | Self::Client(ClientFault::Malformed)
            | Self::FilterInvalid(_)
            | Self::Reset
            | Self::Identity(IdentityRefusal::Unknown) => {
                headers.insert(X_SHOULD_RETRY, HeaderValue::from_static("false"));
            }
            _ => {}
        }
        if matches!(self, Self::Client(_)) {
            // The rest of the request body is not read: the connection cannot carry another request.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// The header the Anthropic API names its request id in; the proxy's own errors carry the access log's.
pub const REQUEST_ID: header::HeaderName = header::HeaderName::from_static("request-id");

/// The header the Anthropic SDKs (and Claude Code) obey over their own retry rules.
pub const X_SHOULD_RETRY: header::HeaderName = header::HeaderName::from_static("x-should-retry");

/// `{"type":"error","error":{"type":..,"message":..},"request_id":..}` in the API's key order.
pub fn error_body(error_type: &str, message: &str, request_id: Option<&str>) -> Bytes {
    let body = ErrorBody {
        r#type: "error",
        error: ErrorDetail {
            r#type: error_type,
            message,
        },
        request_id,
    };
    // Serialising plain strings cannot fail; an empty body would still carry the status.
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// RFC 9457 problem details: `{"type":"about:blank","title":..,"status":..,"detail":..,"request_id":..}`.
pub fn problem_body(status: StatusCode, detail: &str, request_id: &str) -> Bytes {
    let body = ProblemBody {
        r#type: "about:blank",
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        detail,
        request_id,
    };
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const APPLICATION_PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");

/// A response with a JSON body and its content type.
pub fn json_response(
    status: StatusCode,
    body: Bytes,
    content_type: HeaderValue,
) -> Response<Bytes> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn overload_has_retry_after_and_anthropic_shape() {
        let response = Failure::Overloaded.to_response("rid-1", ErrorShape::Anthropic);
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(response.headers()[X_SHOULD_RETRY], "true");
        assert_eq!(response.headers()[REQUEST_ID], "rid-1");
        assert_eq!(
            std::str::from_utf8(response.body()).unwrap(),
            r#"{"type":"error","error":{"type":"overloaded_error","message":"proxy is at its concurrency limit; retry later"},"request_id":"rid-1"}"#
        );
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "overloaded_error");
    }

    #[test]
    fn the_problem_shape_is_rfc_9457_with_the_same_headers() {
        let response = Failure::Overloaded.to_response("rid-2", ErrorShape::Problem);
        assert_eq!(response.status(), 503);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(response.headers()[X_SHOULD_RETRY], "true");
        assert_eq!(response.headers()[REQUEST_ID], "rid-2");
        assert_eq!(
            std::str::from_utf8(response.body()).unwrap(),
            r#"{"type":"about:blank","title":"Service Unavailable","status":503,"detail":"proxy is at its concurrency limit; retry later","request_id":"rid-2"}"#
        );
    }

    #[test]
    fn statuses_follow_the_failure() {
        assert_eq!(
            Failure::ConnectTimeout(Duration::from_secs(5)).status(),
            504
        );
        assert_eq!(
            Failure::ResponseTimeout(Duration::from_millis(1500)).to_string(),
            "upstream did not respond within 1500ms"
        );
        assert_eq!(
            Failure::Unreachable("connection refused".into()).status(),
            502
        );
        assert_eq!(Failure::BadRequest("missing Host header").status(), 400);
        assert_eq!(Failure::Client(ClientFault::Malformed).status(), 400);
        assert_eq!(Failure::Client(ClientFault::Stalled).status(), 408);
        assert_eq!(Failure::Client(ClientFault::Gone).status().as_u16(), 499);
        assert_eq!(Failure::MethodNotAllowed("TRACE").status(), 405);
        let stalled =
            Failure::Client(ClientFault::Stalled).to_response("rid", ErrorShape::Anthropic);
        assert_eq!(stalled.headers()[header::CONNECTION], "close");
    }

    #[test]
    fn identity_refusals_say_what_failed_and_never_who() {
        let unknown =
            Failure::Identity(IdentityRefusal::Unknown).to_response("rid", ErrorShape::Anthropic);
        assert_eq!(unknown.status(), 403);
        let body: serde_json::Value = serde_json::from_slice(unknown.body()).unwrap();
        assert_eq!(body["error"]["type"], "permission_error");
        assert_eq!(
            body["error"]["message"],
            "the caller is not a known tailnet peer"
        );
        let down = Failure::Identity(IdentityRefusal::Unavailable(
            "tailscaled unreachable".into(),
        ))
        .to_response("rid", ErrorShape::Anthropic);
        assert_eq!(down.status(), 503);
        let body: serde_json::Value = serde_json::from_slice(down.body()).unwrap();
        assert_eq!(body["error"]["type"], "api_error");
        assert_eq!(
            body["error"]["message"],
            "caller identity lookup failed: tailscaled unreachable"
        );
    }
}
