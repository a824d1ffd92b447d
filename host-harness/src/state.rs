//! The store data of one VM: one [`HostState`] built of per-area parts.
//!
//! Host functions reach the part they need (`contexts`, `http`, `ticks`, ...) through the caller; nothing is
//! global. What all VMs of a plugin share (metrics, shared data, clusters, configuration) sits behind
//! `plugin`, an `Arc` of data that is read-only or guarded by its own lock.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use wasmtime::{Memory, ResourceLimiter, StoreLimits, TypedFunc};

use crate::headers::Headers;
use crate::http_call::{FailedCalls, HttpCallFailure, HttpCallResponse, PendingHttpCall};
use crate::logs::LogCapture;
use crate::plugin::PluginShared;
use crate::shared::QueueInbox;
use crate::stream::{StreamEvent, StreamState};
use crate::trace::Tracer;
use crate::wasi::WasiState;

/// A map keyed by ids the host hands out itself (context ids, call tokens): keys no guest or peer chooses, so
/// it needs none of the default hasher's defence against chosen keys, and is looked up on every host call.
pub(crate) type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// Hashes one `u32` id with a single multiplication (Fibonacci hashing), which spreads sequential ids over
/// both the bucket bits and the tag bits of the table.
#[derive(Clone, Copy, Default)]
pub(crate) struct IdHasher(u64);

/// 2^64 divided by the golden ratio, the multiplier of Fibonacci hashing.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than a lone u32; kept correct rather than fast.
        for byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*byte)).wrapping_mul(GOLDEN);
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = (self.0 ^ u64::from(id)).wrapping_mul(GOLDEN);
    }
}

/// Everything a VM's host functions work on.
pub(crate) struct HostState {
    /// WASI preview 1 state (the monotonic clock's origin; environment and stdio come from `plugin`).
    pub(crate) wasi: WasiState,
    /// Memory and table limits, enforced by wasmtime.
    pub(crate) limits: GuestLimits,
    /// What all VMs of the plugin share.
    pub(crate) plugin: Arc<PluginShared>,
    /// The guest's memory and allocator, known once instantiated.
    pub(crate) guest: GuestExports,
    /// Root and stream contexts, and which one the running callback acts for.
    pub(crate) contexts: Contexts,
    /// Captured log records.
    pub(crate) log: LogCapture,
    /// The tick timer.
    pub(crate) ticks: TickTimer,
    /// Http calls in flight.
    pub(crate) http: HttpCalls,
    /// Queue ids ready for this VM.
    pub(crate) queues: Arc<QueueInbox>,
    /// Properties the guest set in the root context.
    pub(crate) root_properties: Vec<(Vec<u8>, Vec<u8>)>,
    /// Changes to streams made outside their own callbacks, for the embedder.
    pub(crate) events: Vec<StreamEvent>,
    /// Streams answered locally before their response started: the local response still goes through
    /// the response callbacks once the running callback returns, as Envoy sends it through its encoders.
    pub(crate) local_encodes: Vec<u32>,
    /// Reused for a value copied out from under a lock (shared data) before it goes to the guest, so such a
    /// read does not allocate on the host each time.
    pub(crate) scratch: Vec<u8>,
    /// The host-call trace, recording only when turned on.
    pub(crate) trace: Tracer,
}

/// The store's resource limits, remembering a refused memory growth so the trap it leads to can say so.
pub(crate) struct GuestLimits {
    pub(crate) limits: StoreLimits,
    pub(crate) memory_limit: usize,
    /// The size the guest last asked to grow its memory to and was refused.
    pub(crate) refused_growth: Option<usize>,
}

impl ResourceLimiter for GuestLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if !allowed {
            self.refused_growth = Some(desired);
        }
        Ok(allowed)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

/// The guest exports host calls need.
#[derive(Default)]
pub(crate) struct GuestExports {
    pub(crate) memory: Option<Memory>,
    pub(crate) allocate: Option<TypedFunc<u32, u32>>,
}

/// The VM's contexts and the callback frame.
pub(crate) struct Contexts {
    pub(crate) root_id: u32,
    pub(crate) streams: IdMap<StreamState>,
    /// The callback running now (`"none"` between callbacks).
    pub(crate) callback: &'static str,
    /// The context the running callback was invoked for.
    pub(crate) callback_context: u32,
    /// The context host calls act for: the callback's, unless the guest changed it.
    pub(crate) effective: u32,
    /// The root context returned false from `proxy_on_done` and has not called `proxy_done` yet.
    pub(crate) root_awaiting_done: bool,
    /// The root context called `proxy_done` after `proxy_on_done` returned false.
    pub(crate) root_done_signalled: bool,
    /// Some stream called `proxy_done` since the host last finished deferred streams.
    pub(crate) done_signalled: bool,
}

impl Contexts {
    pub(crate) fn new(root_id: u32) -> Self {
        Self {
            root_id,
            streams: IdMap::default(),
            callback: "none",
            callback_context: root_id,
            effective: root_id,
            root_awaiting_done: false,
            root_done_signalled: false,
            done_signalled: false,
        }
    }

    /// Whether `id` names a live context of this VM.
    pub(crate) fn exists(&self, id: u32) -> bool {
        id == self.root_id || self.streams.contains_key(&id)
    }

    /// Whether a change to stream `id` happens outside that stream's own callbacks, so the embedder must be told.
    pub(crate) fn is_async_for(&self, id: u32) -> bool {
        self.callback_context != id
    }

    /// The stream the running callback acts for, if it acts for a stream.
    pub(crate) fn effective_stream(&mut self) -> Option<&mut StreamState> {
        self.streams.get_mut(&self.effective)
    }
}

/// The tick timer of the root context.
#[derive(Default)]
pub(crate) struct TickTimer {
    pub(crate) period_nanos: u64,
    pub(crate) next_due: Option<u64>,
}

/// Http calls the VM dispatched and has not answered yet.
#[derive(Default)]
pub(crate) struct HttpCalls {
    pub(crate) last_token: u32,
    pub(crate) in_flight: IdMap<InFlightCall>,
    pub(crate) for_embedder: Vec<PendingHttpCall>,
    /// The response being delivered to `proxy_on_http_call_response`.
    pub(crate) delivering: Option<DeliveredResponse>,
}

/// One call waiting for its outcome.
pub(crate) struct InFlightCall {
    /// When the timeout fires, if the guest set one.
    pub(crate) deadline: Option<u64>,
    /// When a mock's outcome arrives, and what it is.
    pub(crate) mock_outcome: Option<(u64, Result<HttpCallResponse, HttpCallFailure>)>,
}

impl InFlightCall {
    /// When something next happens to this call.
    pub(crate) fn next_due(&self) -> Option<u64> {
        let outcome = self.mock_outcome.as_ref().map(|(due, _)| *due);
        match (outcome, self.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A response (or failure) during its `proxy_on_http_call_response`.
pub(crate) struct DeliveredResponse {
    pub(crate) headers: Headers,
    pub(crate) body: Vec<u8>,
    pub(crate) trailers: Headers,
    /// The code and message `proxy_get_status` reports during the callback.
    pub(crate) status_code: u32,
    pub(crate) status_message: String,
}

/// `proxy_get_status` code after a reset call: the ABI's BROKEN_CONNECTION, as Envoy reports it.
const BROKEN_CONNECTION: u32 = 11;

impl DeliveredResponse {
    /// What the guest sees for an outcome. A reset arrives without headers, with status BROKEN_CONNECTION
    /// and message "reset", as Envoy delivers it. A timeout or a connection failure arrives without headers
    /// too (the spec's "0 headers means the call failed"), or, with [`FailedCalls::EnvoyReplies`], as the
    /// response Envoy's router makes up for it: 504 "upstream request timeout", or 503 with a "reset reason".
    pub(crate) fn from_outcome(
        outcome: Result<HttpCallResponse, HttpCallFailure>,
        style: FailedCalls,
    ) -> Self {
        let failure = match outcome {
            Ok(response) => return Self::answered(response),
            Err(failure) => failure,
        };
        let reason = match &failure {
            HttpCallFailure::Reset => "reset".to_owned(),
            HttpCallFailure::Timeout => "timeout".to_owned(),
            HttpCallFailure::ConnectionFailure => "remote connection failure".to_owned(),
            HttpCallFailure::Failed(reason) => reason.clone(),
        };
        let made_up = match (&failure, style) {
            (HttpCallFailure::Reset, _) | (_, FailedCalls::Empty) => None,
            (HttpCallFailure::Timeout, FailedCalls::EnvoyReplies) => {
                Some((504, "upstream request timeout".to_owned()))
            }
            (_, FailedCalls::EnvoyReplies) => Some((503, connect_error(&reason))),
        };
        match made_up {
            Some((status, body)) => Self::answered(HttpCallResponse::local_reply(status, body)),
            None => Self {
                headers: Headers::new(),
                body: Vec::new(),
                trailers: Headers::new(),
                status_code: BROKEN_CONNECTION,
                status_message: reason,
            },
        }
    }

    fn answered(response: HttpCallResponse) -> Self {
        Self {
            headers: response.headers,
            body: response.body,
            trailers: response.trailers,
            status_code: 0,
            status_message: String::new(),
        }
    }
}

/// Envoy's body for a call whose upstream could not be reached.
fn connect_error(reason: &str) -> String {
    format!("upstream connect error or disconnect/reset before headers. reset reason: {reason}")
}

impl HttpCalls {
    /// A fresh token: unique among calls in flight, never 0.
    pub(crate) fn next_token(&mut self) -> u32 {
        loop {
            self.last_token = self.last_token.wrapping_add(1);
            if self.last_token != 0 && !self.in_flight.contains_key(&self.last_token) {
                return self.last_token;
            }
        }
    }
}
