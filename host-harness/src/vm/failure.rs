//! What a trap means for a VM's streams (the failure policy), and replacing a failed instance.

use super::{FAIL_CLOSED_STATUS, FAIL_STREAM_DETAILS, Vm};
use crate::clock::duration_nanos;
use crate::error::GuestTrap;
use crate::headers::Headers;
use crate::logs::LogLevel;
use crate::plugin::FailurePolicy;
use crate::stream::{LocalResponse, StreamEvent, StreamId, StreamState};

/// Applies the failure policy to a stream of a failed VM; returns the event the embedder must see.
pub(super) fn apply_failure_policy(
    policy: FailurePolicy,
    stream: &mut StreamState,
) -> Option<StreamEvent> {
    if stream.is_terminated() || stream.bypassed {
        return None;
    }
    let id = StreamId(stream.id);
    match policy {
        FailurePolicy::FailOpen => {
            stream.bypassed = true;
            let request_was_held = stream.request.paused;
            let response_was_held = stream.response.paused;
            stream.request.resume();
            stream.response.resume();
            if request_was_held {
                Some(StreamEvent::RequestResumed(id))
            } else if response_was_held {
                Some(StreamEvent::ResponseResumed(id))
            } else {
                None
            }
        }
        FailurePolicy::FailClosed | FailurePolicy::FailReload => {
            if stream.response.headers_released {
                stream.reset = true;
                return Some(StreamEvent::Reset(id));
            }
            stream.local_response = Some(LocalResponse {
                status: FAIL_CLOSED_STATUS,
                headers: Headers::new(),
                body: Vec::new(),
                details: FAIL_STREAM_DETAILS.to_owned(),
                grpc_status: None,
            });
            stream.request.paused = false;
            stream.response.paused = false;
            Some(StreamEvent::LocalResponse(id))
        }
    }
}

impl Vm {
    /// Ends the current instance after a trap and applies the failure policy to its streams.
    pub(super) fn fail(&mut self, trap: GuestTrap, current_stream: Option<u32>) {
        self.host_log(LogLevel::Critical, format!("host: VM failed: {trap}"));
        let Some(instance) = self.live.take() else {
            return;
        };
        let mut state = instance.store.into_data();
        self.events.append(&mut state.events);
        let policy = self.plugin.failure_policy();
        for (id, mut stream) in state.contexts.streams.drain() {
            // Envoy answers the stream whose callback trapped with 503 even under fail-open; only the
            // others skip the filter.
            let stream_policy = if current_stream == Some(id) {
                FailurePolicy::FailClosed
            } else {
                policy
            };
            let event = apply_failure_policy(stream_policy, &mut stream);
            if let Some(event) = event
                && current_stream != Some(id)
            {
                self.events.push(event);
            }
            self.detached.insert(id, stream);
        }
        self.failure = Some(trap);
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.total_failures = self.total_failures.saturating_add(1);
        if policy == FailurePolicy::FailReload {
            let delay = self
                .plugin
                .shared
                .reload_backoff
                .delay(self.consecutive_failures);
            self.reload_at = Some(self.now_nanos().saturating_add(duration_nanos(delay)));
        }
    }

    /// When a failed VM is to be reloaded: under `FailReload`, once its backoff has passed.
    pub(super) fn reload_due(&self) -> Option<u64> {
        if self.live.is_some() || self.plugin.failure_policy() != FailurePolicy::FailReload {
            return None;
        }
        self.reload_at
    }

    /// Under `FailReload`, replaces a failed instance once its backoff has passed.
    pub(super) fn maybe_reload(&mut self) {
        if self.live.is_some() || self.plugin.failure_policy() != FailurePolicy::FailReload {
            return;
        }
        let Some(at) = self.reload_at else { return };
        let now = self.now_nanos();
        if now < at {
            return;
        }
        match self.instantiate() {
            Ok(instance) => {
                self.live = Some(instance);
                self.failure = None;
                self.consecutive_failures = 0;
                self.reload_at = None;
                self.host_log(
                    LogLevel::Info,
                    "host: VM reloaded after a failure".to_owned(),
                );
            }
            Err(error) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.total_failures = self.total_failures.saturating_add(1);
                let delay = self
                    .plugin
                    .shared
                    .reload_backoff
                    .delay(self.consecutive_failures);
                self.reload_at = Some(now.saturating_add(duration_nanos(delay)));
                self.host_log(
                    LogLevel::Error,
                    format!("host: reloading the VM failed: {error}"),
                );
            }
        }
    }
}
