//! Why the proxy answered a request itself, and the response each reason gets.
//!
//! Every answer the proxy makes on its own (overload, upstream trouble, a bad request, a failed filter)
//! carries a JSON body in the Anthropic API's error shape, `{"type":"error","error":{"type":..,"message":..}}`,
//! so clients written for the API handle it like any other API error.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::identity::IdentityRefusal;

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
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::FilterInvalid(_) | Self::Reset => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Identity(IdentityRefusal::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Identity(IdentityRefusal::Unknown) => StatusCode::FORBIDDEN,
        }
    }

    /// The Anthropic error type for this failure.
    fn error_type(&self) -> &'static str {
        match self {
            Self::Overloaded => "overloaded_error",
            Self::BadRequest(_) => "invalid_request_error",
            Self::ConnectTimeout(_) | Self::ResponseTimeout(_) => "timeout_error",
            Self::Identity(IdentityRefusal::Unknown) => "permission_error",
            _ => "api_error",
        }
    }

    /// The full response: status, JSON body, and `Retry-After` when retrying helps.
    pub fn to_response(&self) -> Response<Bytes> {
        let body = error_body(self.error_type(), &self.to_string());
        let mut response = json_response(self.status(), body);
        if matches!(self, Self::Overloaded) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// `{"type":"error","error":{"type":..,"message":..}}`.
pub fn error_body(error_type: &str, message: &str) -> Bytes {
    let value =
        serde_json::json!({"type": "error", "error": {"type": error_type, "message": message}});
    Bytes::from(value.to_string())
}

/// A response with a JSON body and its content type.
pub fn json_response(status: StatusCode, body: Bytes) -> Response<Bytes> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn overload_has_retry_after_and_anthropic_shape() {
        let response = Failure::Overloaded.to_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "overloaded_error");
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
    }

    #[test]
    fn identity_refusals_say_what_failed_and_never_who() {
        let unknown = Failure::Identity(IdentityRefusal::Unknown).to_response();
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
        .to_response();
        assert_eq!(down.status(), 503);
        let body: serde_json::Value = serde_json::from_slice(down.body()).unwrap();
        assert_eq!(body["error"]["type"], "api_error");
        assert_eq!(
            body["error"]["message"],
            "caller identity lookup failed: tailscaled unreachable"
        );
    }
}
