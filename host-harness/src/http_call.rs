//! Out-of-band HTTP calls a plugin dispatches with `proxy_http_call`, and the clusters that answer them.
//!
//! A cluster is either a [`MockCluster`] (tests: it answers on the plugin's clock, after a virtual delay, with
//! a failure, or never) or the embedder ([`ClusterBackend::Embedder`]: calls are queued on the VM, the embedder
//! performs them and hands the outcome back with `Vm::deliver_http_call_response`). Either way the VM enforces
//! the call's timeout on its clock and reports a failure to the guest as a response with no headers.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::headers::Headers;

/// A call as the guest dispatched it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCallRequest {
    /// The cluster (upstream) name the guest gave.
    pub cluster: String,
    /// Request headers, including `:method`, `:path` and `:authority`.
    pub headers: Headers,
    /// Request body (empty when none).
    pub body: Vec<u8>,
    /// Request trailers.
    pub trailers: Headers,
    /// The guest's timeout; `None` when it passed 0.
    pub timeout: Option<Duration>,
}

/// A response to an http call; its headers carry `:status` first, as Envoy delivers them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCallResponse {
    /// Response headers, `:status` included.
    pub headers: Headers,
    /// Response body.
    pub body: Vec<u8>,
    /// Response trailers.
    pub trailers: Headers,
}

impl HttpCallResponse {
    /// A response with this status and nothing else.
    pub fn new(status: u16) -> Self {
        let mut headers = Headers::new();
        headers.add(":status", status.to_string());
        Self {
            headers,
            body: Vec::new(),
            trailers: Headers::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        self.headers.add(name, value);
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Adds a trailer.
    pub fn trailer(mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Self {
        self.trailers.add(name, value);
        self
    }

    /// A response as Envoy makes one up itself: `:status`, `content-length`, `content-type: text/plain`.
    pub fn local_reply(status: u16, body: impl Into<Vec<u8>>) -> Self {
        let body = body.into();
        Self::new(status)
            .header("content-length", body.len().to_string())
            .header("content-type", "text/plain")
            .body(body)
    }

    /// The numeric `:status`, if present and valid.
    pub fn status(&self) -> Option<u16> {
        self.headers
            .get_str(":status")
            .and_then(|status| status.parse().ok())
    }
}

/// Why an http call produced no response of the upstream's. The guest sees a reset as a response without
/// headers; the others as well by default, or as Envoy's made-up responses (see [`FailedCalls`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpCallFailure {
    /// The call's timeout passed first.
    #[error("http call timed out")]
    Timeout,
    /// The upstream reset the call.
    #[error("http call was reset")]
    Reset,
    /// The upstream could not be reached (refused, unreachable); Envoy's reason text is "remote connection
    /// failure".
    #[error("http call could not connect")]
    ConnectionFailure,
    /// The call failed for another reason (TLS, DNS, ...), given as Envoy's "reset reason" text.
    #[error("http call failed: {0}")]
    Failed(String),
}

/// How a timed-out or unreachable http call reaches the guest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailedCalls {
    /// Without headers or body, as the spec describes a failed call (`proxy_get_status` names the failure).
    #[default]
    Empty,
    /// As Envoy delivers it: the response its router makes up, 504 with the body "upstream request
    /// timeout" for a timeout, 503 with "upstream connect error or disconnect/reset before headers. reset
    /// reason: ..." for a connection failure. A reset arrives without headers either way.
    EnvoyReplies,
}

/// A call queued for the embedder to perform.
#[derive(Clone, Debug)]
pub struct PendingHttpCall {
    /// The token to deliver the outcome under.
    pub token: u32,
    /// What the guest asked for.
    pub request: HttpCallRequest,
}

/// What a mock cluster does with one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MockReply {
    /// Answer with a response after a delay on the plugin's clock.
    Respond {
        /// The response.
        response: HttpCallResponse,
        /// How long after dispatch it arrives.
        after: Duration,
    },
    /// Fail after a delay on the plugin's clock.
    Fail {
        /// How it fails.
        failure: HttpCallFailure,
        /// How long after dispatch.
        after: Duration,
    },
    /// Never answer (the call's timeout, if any, fires).
    Never,
}

impl MockReply {
    /// Answer at once (delivered the next time the VM's timers run).
    pub fn respond(response: HttpCallResponse) -> Self {
        MockReply::Respond {
            response,
            after: Duration::ZERO,
        }
    }

    /// Reset the call at once.
    pub fn reset() -> Self {
        MockReply::Fail {
            failure: HttpCallFailure::Reset,
            after: Duration::ZERO,
        }
    }

    /// Never answer.
    pub fn never() -> Self {
        MockReply::Never
    }

    /// The same reply, delayed by `delay` of virtual time.
    pub fn after(self, delay: Duration) -> Self {
        match self {
            MockReply::Respond { response, .. } => MockReply::Respond {
                response,
                after: delay,
            },
            MockReply::Fail { failure, .. } => MockReply::Fail {
                failure,
                after: delay,
            },
            MockReply::Never => MockReply::Never,
        }
    }
}

type Responder = dyn Fn(&HttpCallRequest) -> MockReply + Send + Sync;

/// A cluster answered by a function, for tests; clones share the function and the record of requests.
#[derive(Clone)]
pub struct MockCluster {
    responder: Arc<Responder>,
    requests: Arc<Mutex<Vec<HttpCallRequest>>>,
}

impl fmt::Debug for MockCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockCluster")
            .field("requests", &self.request_count())
            .finish_non_exhaustive()
    }
}

impl MockCluster {
    /// A cluster that answers each call with what `responder` returns for it.
    pub fn new(responder: impl Fn(&HttpCallRequest) -> MockReply + Send + Sync + 'static) -> Self {
        Self {
            responder: Arc::new(responder),
            requests: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// A cluster that answers every call with `response` at once.
    pub fn responding(response: HttpCallResponse) -> Self {
        Self::new(move |_| MockReply::respond(response.clone()))
    }

    /// A cluster that never answers.
    pub fn silent() -> Self {
        Self::new(|_| MockReply::Never)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<HttpCallRequest>> {
        self.requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every call this cluster received, in order.
    pub fn requests(&self) -> Vec<HttpCallRequest> {
        self.lock().clone()
    }

    /// How many calls this cluster received.
    pub fn request_count(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn answer(&self, request: &HttpCallRequest) -> MockReply {
        self.lock().push(request.clone());
        (self.responder)(request)
    }
}

/// Who answers calls to a cluster.
#[derive(Clone, Debug)]
pub enum ClusterBackend {
    /// A mock, answering on the plugin's clock.
    Mock(MockCluster),
    /// The embedder, through `Vm::take_pending_http_calls` and `Vm::deliver_http_call_response`.
    Embedder,
}

impl From<MockCluster> for ClusterBackend {
    fn from(mock: MockCluster) -> Self {
        ClusterBackend::Mock(mock)
    }
}
