//! The proxy-wasm glue: the only module that talks to the host.
//!
//! The root context validates the configuration, resolves the credential and
//! defines the metrics; each HTTP context fetches headers (as bytes, so
//! non-UTF-8 values are fine), asks [`crate::engine`] what to do and carries
//! the decision out. Trailers lose the credential and stripped headers too.
//! Bodies are never looked at: the body callbacks are left to the SDK
//! defaults, which continue.

use std::rc::Rc;

use log::{Level, debug, error, info, log_enabled, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType};

use crate::config::{self, FilterConfig, MissingCredential};
use crate::credential::{self, Credential};
use crate::engine::{self, LocalResponse, RequestDecision, count};
use crate::headers::{HeaderEdit, HeaderList, diff};
use crate::metrics::{Metric, MetricKind};
use crate::preset::PresetOutcome;
use crate::redact::render_headers;
use crate::rules::RequestSummary;

/// Registers the root context with the SDK; called once from `_initialize`.
pub fn start() {
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| Box::new(FilterRoot::default()));
}

/// What every HTTP context of a configured root shares.
struct Configured {
    config: FilterConfig,
    credential: Option<Credential>,
}

/// Host ids of the metrics, by [`Metric::index`]; `None` when definition failed.
#[derive(Clone, Copy, Default)]
struct MetricIds([Option<u32>; Metric::ALL.len()]);

impl MetricIds {
    fn define() -> Self {
        let mut ids = Self::default();
        for metric in Metric::ALL {
            let kind = match metric.kind() {
                MetricKind::Counter => MetricType::Counter,
                MetricKind::Gauge => MetricType::Gauge,
            };
            match hostcalls::define_metric(kind, metric.name()) {
                Ok(id) => {
                    if let Some(slot) = ids.0.get_mut(metric.index()) {
                        *slot = Some(id);
                    }
                }
                Err(status) => warn!("cannot define metric {}: {status:?}", metric.name()),
            }
        }
        ids
    }

    fn id(self, metric: Metric) -> Option<u32> {
        self.0.get(metric.index()).copied().flatten()
    }

    fn increment(self, metric: Metric, by: u64) {
        let Some(id) = self.id(metric) else { return };
        let offset = i64::try_from(by).unwrap_or(i64::MAX);
        if let Err(status) = hostcalls::increment_metric(id, offset) {
            debug!("cannot increment {}: {status:?}", metric.name());
        }
    }

    fn record(self, metric: Metric, value: u64) {
        let Some(id) = self.id(metric) else { return };
        if let Err(status) = hostcalls::record_metric(id, value) {
            debug!("cannot record {}: {status:?}", metric.name());
        }
    }
}

#[derive(Default)]
struct FilterRoot {
    state: Option<Rc<Configured>>,
    metrics: Option<MetricIds>,
}

impl Context for FilterRoot {}

impl RootContext for FilterRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        // Follow the host's log level so disabled debug lines cost nothing.
        if let Ok(level) = hostcalls::get_log_level() {
            proxy_wasm::set_log_level(level);
        }
        let metrics = *self.metrics.get_or_insert_with(MetricIds::define);
        let raw = self.get_plugin_configuration().unwrap_or_default();
        let config = match config::parse(&raw) {
            Ok(config) => config,
            Err(problem) => {
                error!("credential filter configuration rejected: {problem}");
                self.state = None;
                metrics.record(Metric::CredentialAvailable, 0);
                return false;
            }
        };
        let credential = match credential::resolve(&config.credential, |name| std::env::var(name)) {
            Ok(credential) => {
                info!(
                    "credential filter configured: credential ready for header {}",
                    config.credential.header
                );
                Some(credential)
            }
            Err(problem) => {
                let consequence = match config.on_missing_credential {
                    MissingCredential::Deny => "requests will be answered with 503",
                    MissingCredential::Forward => "requests will be forwarded without a credential",
                };
                error!("credential filter has no credential: {problem}; {consequence}");
                None
            }
        };
        metrics.record(Metric::CredentialAvailable, u64::from(credential.is_some()));
        self.state = Some(Rc::new(Configured { config, credential }));
        true
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(FilterStream {
            context_id,
            state: self.state.clone(),
            metrics: self.metrics.unwrap_or_default(),
            request: None,
            answered_locally: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct FilterStream {
    context_id: u32,
    state: Option<Rc<Configured>>,
    metrics: MetricIds,
    /// The client's request, kept only when response rules need it.
    request: Option<RequestSummary>,
    answered_locally: bool,
}

impl Context for FilterStream {}

impl HttpContext for FilterStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(state) = self.state.clone() else {
            // Never forward without a valid configuration: fail closed.
            self.metrics.increment(Metric::Requests, 1);
            self.metrics.increment(Metric::CredentialUnavailable, 1);
            return self.respond(&engine::not_configured());
        };
        let request = HeaderList::from_pairs(self.get_http_request_headers_bytes());
        let source = if state.config.needs_source_address() {
            // Called directly: the SDK wrapper panics on the statuses a host may
            // legitimately return for an unavailable property.
            hostcalls::get_property(vec!["source", "address"]).unwrap_or_else(|status| {
                debug!("request {}: no source.address: {status:?}", self.context_id);
                None
            })
        } else {
            None
        };
        let decision = engine::handle_request(
            &state.config,
            state.credential.as_ref(),
            &request,
            source.as_deref(),
        );
        for (metric, by) in decision.counter_increments(&state.config) {
            self.metrics.increment(metric, by);
        }
        match decision {
            RequestDecision::Respond(response) => {
                debug!(
                    "request {}: answered locally with {} ({:?})",
                    self.context_id, response.status, response.reason
                );
                self.respond(&response)
            }
            RequestDecision::Forward(forward) => {
                if log_enabled!(Level::Debug) {
                    debug!(
                        "request {}: forwarded; credential {}; stripped {:?}; rules applied {:?}; preset {}; upstream headers {}",
                        self.context_id,
                        if forward.credential_injected {
                            "injected"
                        } else {
                            "missing"
                        },
                        forward.stripped,
                        forward.rules_applied,
                        describe_preset(&state.config, forward.preset),
                        render_headers(&forward.headers, &state.config.credential.header),
                    );
                }
                for edit in diff(&request, &forward.headers) {
                    self.apply_edit(MapType::HttpRequestHeaders, edit);
                }
                if !state.config.response_rules.is_empty() {
                    self.request = Some(forward.request);
                }
                Action::Continue
            }
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.clean_trailers(
            MapType::HttpRequestTrailers,
            engine::handle_request_trailers,
        );
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        self.clean_trailers(
            MapType::HttpResponseTrailers,
            engine::handle_response_trailers,
        );
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.answered_locally {
            return Action::Continue;
        }
        let Some(state) = self.state.clone() else {
            return Action::Continue;
        };
        let response = HeaderList::from_pairs(self.get_http_response_headers_bytes());
        let request = self.request.take().unwrap_or_default();
        let outcome = engine::handle_response(&state.config, &response, &request);
        if !outcome.rules_applied.is_empty() {
            self.metrics
                .increment(Metric::RulesApplied, count(outcome.rules_applied.len()));
        }
        if outcome.credential_removed || !outcome.rules_applied.is_empty() {
            debug!(
                "response {}: credential header removed {}; rules applied {:?}",
                self.context_id, outcome.credential_removed, outcome.rules_applied
            );
        }
        for edit in diff(&response, &outcome.headers) {
            self.apply_edit(MapType::HttpResponseHeaders, edit);
        }
        Action::Continue
    }
}

impl FilterStream {
    fn respond(&mut self, response: &LocalResponse) -> Action {
        self.answered_locally = true;
        self.send_http_response(
            response.status,
            response.headers.clone(),
            Some(response.body.as_bytes()),
        );
        Action::Pause
    }

    /// Applies a trailer pass of the engine to one trailer map.
    fn clean_trailers(&self, map: MapType, pass: fn(&FilterConfig, &HeaderList) -> HeaderList) {
        let Some(state) = self.state.as_ref() else {
            return;
        };
        let Ok(pairs) = hostcalls::get_map_bytes(map) else {
            return;
        };
        let trailers = HeaderList::from_pairs(pairs);
        for edit in diff(&trailers, &pass(&state.config, &trailers)) {
            self.apply_edit(map, edit);
        }
    }

    /// Carries out one header edit on a request or response header or trailer map.
    fn apply_edit(&self, map: MapType, edit: HeaderEdit) {
        let name = match &edit {
            HeaderEdit::Remove { name } | HeaderEdit::Replace { name, .. } => name.as_str(),
        };
        let result = match &edit {
            HeaderEdit::Remove { name } => hostcalls::remove_map_value(map, name),
            HeaderEdit::Replace { name, values } => match values.as_slice() {
                [single] => hostcalls::set_map_value_bytes(map, name, Some(single)),
                _ => hostcalls::remove_map_value(map, name).and_then(|()| {
                    values
                        .iter()
                        .try_for_each(|value| hostcalls::add_map_value_bytes(map, name, value))
                }),
            },
        };
        if let Err(status) = result {
            // Only the name: the value may be the credential.
            warn!(
                "context {}: changing header {name} failed: {status:?}",
                self.context_id
            );
        }
    }
}

/// Says in words what the preset did, for the per-request debug line.
fn describe_preset(config: &FilterConfig, outcome: Option<PresetOutcome>) -> String {
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
