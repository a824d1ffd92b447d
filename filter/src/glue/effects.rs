//! Carrying a decision out on the host: metric updates, header edits, local answers.

use log::{Level, debug, error, log_enabled, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, MapType, MetricType};

use super::Configured;
use super::abi::{self, HostStatus, MapChange};
use super::stream::{RequestPhase, StreamShared};
use crate::config::FilterConfig;
use crate::engine::{self, LocalResponse, RequestDecision};
use crate::headers::{HeaderEdit, HeaderList};
use crate::json;
use crate::metrics::{Metric, MetricKind};
use crate::preset::PresetOutcome;
use crate::redact::render_headers;

/// Host ids of the metrics, by [`Metric::index`]; `None` when definition failed.
type MetricTable = [Option<u32>; Metric::ALL.len()];

/// No metric defined.
static UNDEFINED: MetricTable = [None; Metric::ALL.len()];

/// The host ids of the metrics, as a reference every stream copies: the table itself is made once
/// per root context and kept for the life of the VM, as root contexts are, where a copy of the
/// whole table into every stream cost a memory.copy call per request.
#[derive(Clone, Copy)]
pub(super) struct MetricIds(&'static MetricTable);

impl Default for MetricIds {
    fn default() -> Self {
        Self(&UNDEFINED)
    }
}

impl MetricIds {
    pub(super) fn define() -> Self {
        let mut ids: MetricTable = [None; Metric::ALL.len()];
        for metric in Metric::ALL {
            let kind = match metric.kind() {
                MetricKind::Counter => MetricType::Counter,
                MetricKind::Gauge => MetricType::Gauge,
                MetricKind::Histogram => MetricType::Histogram,
            };
            match hostcalls::define_metric(kind, metric.name()) {
                Ok(id) => {
                    if let Some(slot) = ids.get_mut(metric.index()) {
                        *slot = Some(id);
                    }
                }
                Err(status) => warn!("cannot define metric {}: {status:?}", metric.name()),
            }
        }
        // Once per root context (`FilterRoot` keeps the first), which lives as long as the VM.
        Self(Box::leak(Box::new(ids)))
    }

    fn id(self, metric: Metric) -> Option<u32> {
        self.0.get(metric.index()).copied().flatten()
    }

    pub(super) fn increment(self, metric: Metric, by: u64) {
        let Some(id) = self.id(metric) else { return };
        let offset = i64::try_from(by).unwrap_or(i64::MAX);
        if let Err(status) = abi::increment_metric(id, offset) {
            metric_failed("increment", metric, status);
        }
    }

    pub(super) fn record(self, metric: Metric, value: u64) {
        let Some(id) = self.id(metric) else { return };
        if let Err(status) = abi::record_metric(id, value) {
            metric_failed("record", metric, status);
        }
    }
}

/// Logs a metric update the host refused. Out of line, as [`edit_failed`].
#[cold]
#[inline(never)]
fn metric_failed(verb: &str, metric: Metric, status: HostStatus) {
    debug!("cannot {verb} {}: {status}", metric.name());
}

/// Carries out a request decision on the effective context: counts it, logs it, and answers
/// locally or lets the request go on. The pipeline has changed the request headers already, through
/// [`request_edits`]; `request` is the list as it left them. `count_request` is false for a held
/// request, which was counted when it arrived. Returns the action for a callback that is still
/// running.
pub(super) fn finish_request(
    state: &Configured,
    metrics: MetricIds,
    shared: &StreamShared,
    context_id: u32,
    request: &HeaderList<'_>,
    decision: RequestDecision,
    count_request: bool,
) -> Action {
    decision.counter_increments(&state.config, |metric, by| {
        if count_request || metric != Metric::Requests {
            metrics.increment(metric, by);
        }
    });
    match decision {
        RequestDecision::Respond(response) => {
            debug!(
                "request {context_id}: answered locally with {} ({:?})",
                response.status, response.reason
            );
            shared.enter(RequestPhase::AnsweredLocally);
            send_local(&response);
            Action::Pause
        }
        RequestDecision::Forward(forward) => {
            if log_enabled!(Level::Debug) {
                debug!(
                    "request {context_id}: forwarded; credential {}; stripped {}; rules applied {:?}; preset {}; upstream headers {}",
                    if forward.credential_injected {
                        "injected"
                    } else {
                        "missing"
                    },
                    json::quoted_list(engine::stripped_headers(&state.config, &forward)),
                    forward.rules_applied,
                    describe_preset(&state.config, forward.preset),
                    render_headers(request, &state.config.credential.header),
                );
            }
            if forward.request.is_some() {
                *shared.request.borrow_mut() = forward.request;
            }
            Action::Continue
        }
    }
}

pub(super) fn send_local(response: &LocalResponse) {
    if let Err(status) = hostcalls::send_http_response(
        response.status,
        response.headers.clone(),
        Some(response.body.as_bytes()),
    ) {
        warn!("sending a local {} failed: {status:?}", response.status);
    }
}

/// Carries out one header edit on a request or response header or trailer map: one host call.
pub(super) fn apply_edit(context_id: u32, map: MapType, edit: HeaderEdit<'_>) {
    let (name, change) = match edit {
        HeaderEdit::Remove(name) => (name, MapChange::Remove),
        HeaderEdit::Set(name, value) => (name, MapChange::Replace(value)),
        HeaderEdit::Add(name, value) => (name, MapChange::Add(value)),
    };
    if let Err(status) = abi::change_header(map, name, change) {
        edit_failed(context_id, name, status);
    }
}

/// The edits of the request pipeline as it makes them, carried out on the effective context's
/// request headers.
pub(super) fn request_edits(context_id: u32) -> impl FnMut(HeaderEdit<'_>) {
    move |edit| apply_edit(context_id, MapType::HttpRequestHeaders, edit)
}

/// Stops the VM on a header edit the host refused: the host's failure policy then closes the
/// stream, so a request never leaves half-edited (a client's credential not stripped, say). No
/// host refuses an edit of a map that exists; out of line, as the formatting made every edit set
/// up a stack frame for it.
#[cold]
#[inline(never)]
fn edit_failed(context_id: u32, name: &str, status: HostStatus) -> ! {
    // Only the name: the value may be the credential.
    error!("context {context_id}: changing header {name} failed ({status}): stopping the VM");
    std::process::abort()
}

/// Says in words what the preset did, for the per-request debug line.
pub(super) fn describe_preset(config: &FilterConfig, outcome: Option<PresetOutcome>) -> String {
    match (config.preset, outcome) {
        (Some(preset), Some(outcome)) => {
            let mut changes = Vec::new();
            if outcome.added_version {
                changes.push("added anthropic-version");
            }
            if outcome.added_oauth_beta {
                changes.push("added the oauth beta flag");
            }
            if changes.is_empty() {
                changes.push("no change");
            }
            format!("{} ({})", preset.name(), changes.join(", "))
        }
        _ => "none".to_owned(),
    }
}
