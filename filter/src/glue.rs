//! The proxy-wasm glue: the only module that talks to the host.
//!
//! The root context validates the configuration, resolves the credential and
//! defines the metrics; each HTTP context fetches headers (as bytes, so
//! non-UTF-8 values are fine), asks [`crate::engine`] what to do and carries
//! the decision out. Trailers lose the credential and stripped headers too.
//! Request bodies are never looked at; with usage accounting on, the response
//! bodies of generations are read as they pass (see [`usage`]), never held or
//! changed.
//!
//! With the `oauth2` source the root context also owns the VM's
//! [`TokenManager`]: it ticks it, starts its token requests (only the root
//! context starts them, so an answer never depends on a request that may have
//! gone away), and carries out its commands. A request without a token is
//! paused and remembered; when a token arrives (or the wait ends) the root
//! switches to that request's context with `proxy_set_effective_context`,
//! finishes its pipeline and resumes it (or answers it), then switches back.
//! While a request is held its body and trailer callbacks return `Pause`, so
//! the host cannot send it on without a credential.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use log::{Level, debug, error, info, log_enabled, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType, Status};

use crate::access::CallerFacts;
use crate::config::{self, FilterConfig, MissingCredential};
use crate::credential::{self, Credential, CredentialSource};
use crate::engine::{self, LocalResponse, RequestDecision, count};
use crate::headers::{HeaderEdit, HeaderList, diff};
use crate::metrics::{Metric, MetricKind};
use crate::preset::PresetOutcome;
use crate::redact::render_headers;
use crate::rules::RequestSummary;
use crate::token::endpoint::{Client, TokenRequest};
use crate::token::manager::{
    Command, DispatchError, Host, Level as TokenLevel, NoToken, SetError, TokenManager, Verdict,
    Write,
};
use crate::usage::observe::Observation;

mod usage;

/// Registers the root context with the SDK; called once from `_initialize`.
pub fn start() {
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| {
        Box::new(FilterRoot {
            context_id,
            ..FilterRoot::default()
        })
    });
}

/// What every HTTP context of a configured root shares.
struct Configured {
    config: FilterConfig,
    /// Where the credential comes from: one source, never both.
    source: Source,
    /// Usage accounting, when on.
    usage: Option<usage::UsageState>,
}

/// The configured credential at run time.
enum Source {
    /// An `env` or `inline` credential, resolved once at configure time.
    Static(Credential),
    /// `oauth2`: tokens fetched and refreshed by this VM's token manager.
    OAuth2(Rc<Tokens>),
    /// The source could not be resolved (logged at configure time); requests follow
    /// `on_missing_credential`.
    Unavailable,
}

impl Configured {
    /// The static credential, if that is the source.
    fn credential(&self) -> Option<&Credential> {
        match &self.source {
            Source::Static(credential) => Some(credential),
            Source::OAuth2(_) | Source::Unavailable => None,
        }
    }

    /// The token state, if the source is `oauth2` and its client could be set up.
    fn tokens(&self) -> Option<&Rc<Tokens>> {
        match &self.source {
            Source::OAuth2(tokens) => Some(tokens),
            Source::Static(_) | Source::Unavailable => None,
        }
    }
}

/// The `oauth2` source's run-time state in this VM.
struct Tokens {
    manager: RefCell<TokenManager>,
    /// Requests paused for a token, by context id.
    held: RefCell<HashMap<u32, Rc<StreamShared>>>,
    root_id: u32,
}

/// What a stream shares with the root context, so the root can finish a held request.
#[derive(Default)]
struct StreamShared {
    /// The client's request, kept only when response rules need it.
    request: RefCell<Option<RequestSummary>>,
    /// Where the request is: one value, so it cannot be both held and answered.
    phase: RefCell<RequestPhase>,
    /// The token generation injected, to report a 401 against.
    generation: Cell<Option<u64>>,
}

/// Where a stream's request is.
#[derive(Debug, Default)]
enum RequestPhase {
    /// Not decided yet, or forwarded upstream.
    #[default]
    Open,
    /// Admitted by the access policy (the proof kept, so it never runs again) and paused until a
    /// token arrives.
    Held(engine::Admitted),
    /// Answered by the filter itself; nothing went upstream.
    AnsweredLocally,
}

impl StreamShared {
    /// Whether the request waits for a token.
    fn is_held(&self) -> bool {
        matches!(*self.phase.borrow(), RequestPhase::Held(_))
    }

    /// Whether the filter answered the request itself.
    fn answered_locally(&self) -> bool {
        matches!(*self.phase.borrow(), RequestPhase::AnsweredLocally)
    }

    /// Moves the request to `phase`.
    fn enter(&self, phase: RequestPhase) {
        *self.phase.borrow_mut() = phase;
    }

    /// Ends a hold: the request is open again, and the access policy's proof is returned.
    fn release(&self) -> Option<engine::Admitted> {
        let mut phase = self.phase.borrow_mut();
        match std::mem::take(&mut *phase) {
            RequestPhase::Held(admitted) => Some(admitted),
            other => {
                *phase = other;
                None
            }
        }
    }
}

/// A stream's [`StreamShared`]: its own until the root context must finish the request too, then
/// behind an `Rc`. Most requests are never held, and so cost no second allocation.
enum ShareableStream {
    Own(StreamShared),
    WithRoot(Rc<StreamShared>),
}

impl ShareableStream {
    /// The state for the root context to keep, moved behind an `Rc` the first time.
    fn share(&mut self) -> Rc<StreamShared> {
        let shared = match std::mem::replace(self, Self::Own(StreamShared::default())) {
            Self::Own(own) => Rc::new(own),
            Self::WithRoot(shared) => shared,
        };
        *self = Self::WithRoot(Rc::clone(&shared));
        shared
    }
}

impl std::ops::Deref for ShareableStream {
    type Target = StreamShared;

    fn deref(&self) -> &StreamShared {
        match self {
            Self::Own(own) => own,
            Self::WithRoot(shared) => shared,
        }
    }
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
                MetricKind::Histogram => MetricType::Histogram,
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
    context_id: u32,
    state: Option<Rc<Configured>>,
    metrics: Option<MetricIds>,
}

impl Context for FilterRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let Some(state) = self.state.clone() else {
            return;
        };
        let Some(tokens) = state.tokens().cloned() else {
            return;
        };
        // Zero headers is how proxy-wasm reports a call that failed or timed out.
        let answer = (num_headers > 0).then(|| {
            // Bytes, not the string getter: it panics on a non-UTF-8 value.
            let status =
                hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
                    .ok()
                    .flatten()
                    .and_then(|status| std::str::from_utf8(&status).ok()?.parse::<u16>().ok())
                    .unwrap_or(0);
            let body = hostcalls::get_buffer(
                proxy_wasm::types::BufferType::HttpCallResponseBody,
                0,
                body_size,
            )
            .ok()
            .flatten()
            .unwrap_or_default();
            (status, body)
        });
        let commands =
            tokens
                .manager
                .borrow_mut()
                .on_response(&mut HostPort, now_ms(), token_id, answer);
        carry_out(&state, &tokens, self.metrics(), commands, self.context_id);
    }
}

impl FilterRoot {
    fn metrics(&self) -> MetricIds {
        self.metrics.unwrap_or_default()
    }
}

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
        let consequence = match config.on_missing_credential {
            MissingCredential::Deny => "requests will be answered with 503",
            MissingCredential::Forward => "requests will be forwarded without a credential",
        };
        if let CredentialSource::OAuth2(oauth2) = &config.credential.source {
            let tokens = match Client::resolve(oauth2, |name| std::env::var(name)) {
                Ok(client) => {
                    let random = random_u64();
                    let manager = TokenManager::new(
                        (**oauth2).clone(),
                        client,
                        &config.credential.prefix,
                        format!("{random:016x}"),
                        random.rotate_left(29) ^ 0x5bd1_e995,
                    );
                    info!(
                        "credential filter configured: oauth2 tokens from cluster {} for header {} (shared data {})",
                        oauth2.endpoint.cluster,
                        config.credential.header,
                        manager.keys().state
                    );
                    Some(Rc::new(Tokens {
                        manager: RefCell::new(manager),
                        held: RefCell::new(HashMap::new()),
                        root_id: self.context_id,
                    }))
                }
                Err(problem) => {
                    error!("credential filter has no credential: {problem}; {consequence}");
                    metrics.record(Metric::CredentialAvailable, 0);
                    None
                }
            };
            let state = Rc::new(Configured {
                usage: config.usage.map(usage::UsageState::new),
                config,
                source: tokens.clone().map_or(Source::Unavailable, Source::OAuth2),
            });
            self.state = Some(Rc::clone(&state));
            if let Some(tokens) = tokens {
                let commands = tokens.manager.borrow_mut().start(&mut HostPort, now_ms());
                carry_out(&state, &tokens, metrics, commands, self.context_id);
            }
            return true;
        }
        let credential = match credential::resolve(&config.credential, |name| std::env::var(name)) {
            Ok(credential) => {
                info!(
                    "credential filter configured: credential ready for header {}",
                    config.credential.header
                );
                Some(credential)
            }
            Err(problem) => {
                error!("credential filter has no credential: {problem}; {consequence}");
                None
            }
        };
        metrics.record(Metric::CredentialAvailable, u64::from(credential.is_some()));
        self.state = Some(Rc::new(Configured {
            usage: config.usage.map(usage::UsageState::new),
            config,
            source: credential.map_or(Source::Unavailable, Source::Static),
        }));
        true
    }

    fn on_tick(&mut self) {
        let Some(state) = self.state.clone() else {
            return;
        };
        let Some(tokens) = state.tokens().cloned() else {
            return;
        };
        let commands = tokens.manager.borrow_mut().on_tick(&mut HostPort, now_ms());
        carry_out(&state, &tokens, self.metrics(), commands, self.context_id);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(FilterStream {
            context_id,
            state: self.state.clone(),
            metrics: self.metrics.unwrap_or_default(),
            shared: ShareableStream::Own(StreamShared::default()),
            usage: None,
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
    shared: ShareableStream,
    /// The usage observation of a generation, when usage is on.
    usage: Option<Box<Observation>>,
}

impl Context for FilterStream {}

impl Drop for FilterStream {
    fn drop(&mut self) {
        // A held request whose client went away: the root must not touch its context again.
        if self.shared.is_held()
            && let Some(tokens) = self.state.as_ref().and_then(|state| state.tokens())
        {
            tokens.held.borrow_mut().remove(&self.context_id);
            tokens.manager.borrow_mut().forget(self.context_id);
        }
    }
}

impl HttpContext for FilterStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(state) = self.state.clone() else {
            // Never forward without a valid configuration: fail closed.
            self.metrics.increment(Metric::Requests, 1);
            self.metrics.increment(Metric::CredentialUnavailable, 1);
            return self.respond(&engine::not_configured());
        };
        let request = HeaderList::from_pairs(self.get_http_request_headers_bytes());
        let source = caller_facts(&state.config, self.context_id);
        self.usage = usage::start(
            &state.config,
            state.usage.as_ref(),
            &request,
            source.as_ref(),
            self.context_id,
        );
        // The access policy runs here and only here: a caller who will be refused is never held.
        let admitted = match engine::admit(&state.config, &request, source.as_ref()) {
            Ok(admitted) => admitted,
            Err(denied) => {
                return self.finish(&state, &request, RequestDecision::Respond(denied));
            }
        };
        let Some(tokens) = state.tokens().cloned() else {
            let decision = engine::handle_admitted(
                &state.config,
                &admitted,
                state.credential(),
                &request,
                engine::NO_CREDENTIAL_MESSAGE,
            );
            return self.finish(&state, &request, decision);
        };
        let (verdict, commands) =
            tokens
                .manager
                .borrow_mut()
                .on_request(&mut HostPort, now_ms(), self.context_id);
        let action = match verdict {
            Verdict::Ready {
                credential,
                generation,
            } => {
                self.shared.generation.set(Some(generation));
                let decision = engine::handle_admitted(
                    &state.config,
                    &admitted,
                    Some(&credential),
                    &request,
                    engine::NO_CREDENTIAL_MESSAGE,
                );
                self.finish(&state, &request, decision)
            }
            Verdict::Hold => {
                self.metrics.increment(Metric::Requests, 1);
                self.shared.enter(RequestPhase::Held(admitted));
                tokens
                    .held
                    .borrow_mut()
                    .insert(self.context_id, self.shared.share());
                debug!("request {}: held until a token arrives", self.context_id);
                Action::Pause
            }
            Verdict::Unavailable(cause) => {
                let decision = engine::handle_admitted(
                    &state.config,
                    &admitted,
                    None,
                    &request,
                    engine::no_token_message(cause),
                );
                debug!("request {}: no token ({cause:?})", self.context_id);
                self.finish(&state, &request, decision)
            }
        };
        carry_out(&state, &tokens, self.metrics, commands, self.context_id);
        action
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        // Continuing a body would release headers still waiting for their credential.
        if self.shared.is_held() {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.clean_trailers(
            MapType::HttpRequestTrailers,
            engine::handle_request_trailers,
            |config| &config.stripped_request_headers,
        );
        if self.shared.is_held() {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let Some(observation) = self.usage.as_deref_mut() {
            usage::response_body(observation, body_size, end_of_stream);
        }
        // Always: the body is read on the side, never held.
        Action::Continue
    }

    fn on_log(&mut self) {
        let Some(observation) = self.usage.take() else {
            return;
        };
        // A request the filter answered itself never reached the upstream: nothing was used.
        if self.shared.answered_locally() {
            return;
        }
        if let Some(usage) = self.state.as_ref().and_then(|state| state.usage.as_ref()) {
            usage::finish(*observation, usage);
        }
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        if let Some(observation) = self.usage.as_deref_mut() {
            observation.end_of_body();
        }
        self.clean_trailers(
            MapType::HttpResponseTrailers,
            engine::handle_response_trailers,
            |config| std::slice::from_ref(&config.credential.header),
        );
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if self.shared.answered_locally() {
            return Action::Continue;
        }
        let Some(state) = self.state.clone() else {
            return Action::Continue;
        };
        if let (Some(observation), Some(usage)) = (self.usage.as_deref_mut(), state.usage.as_ref())
        {
            usage::response_headers(observation, usage, end_of_stream);
        }
        let request = self.shared.request.borrow_mut().take().unwrap_or_default();
        // Unless a rule needs the response (or debug logs say what was removed), its edits are
        // known without reading it: the response is not copied into the guest.
        if !state.config.response_rules_read_response && !log_enabled!(Level::Debug) {
            if self.watches_for_401(&state) {
                // Bytes, not the string getter: it panics on a non-UTF-8 value.
                let status =
                    hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, ":status")
                        .ok()
                        .flatten();
                self.on_status(&state, status.as_deref());
            }
            let applied = engine::unread_response_edits(&state.config, &request, |edit| {
                apply_edit(
                    self.context_id,
                    MapType::HttpResponseHeaders,
                    &HeaderList::new(),
                    edit,
                );
            });
            if applied > 0 {
                self.metrics.increment(Metric::RulesApplied, count(applied));
            }
            return Action::Continue;
        }
        let response = HeaderList::from_pairs(self.get_http_response_headers_bytes());
        self.on_status(&state, response.first(":status"));
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
        let names = &state.config.response_header_names;
        for edit in diff(&response, &outcome.headers, names) {
            apply_edit(
                self.context_id,
                MapType::HttpResponseHeaders,
                &outcome.headers,
                edit,
            );
        }
        Action::Continue
    }
}

impl FilterStream {
    /// Whether a response status matters: an upstream 401 may drop the token this request was sent
    /// with.
    fn watches_for_401(&self, state: &Configured) -> bool {
        state.tokens().is_some() && self.shared.generation.get().is_some()
    }

    /// Tells the token manager about an upstream 401 for the token this request was sent with.
    fn on_status(&self, state: &Configured, status: Option<&[u8]>) {
        if let (Some(tokens), Some(generation)) = (state.tokens(), self.shared.generation.get())
            && status == Some(&b"401"[..])
        {
            let commands =
                tokens
                    .manager
                    .borrow_mut()
                    .on_unauthorized(&mut HostPort, now_ms(), generation);
            carry_out(state, tokens, self.metrics, commands, self.context_id);
        }
    }

    /// Carries out a decision for this stream's own request.
    fn finish(
        &self,
        state: &Configured,
        request: &HeaderList<'_>,
        decision: RequestDecision<'_>,
    ) -> Action {
        finish_request(
            state,
            self.metrics,
            &self.shared,
            self.context_id,
            request,
            decision,
            true,
        )
    }

    fn respond(&mut self, response: &LocalResponse) -> Action {
        self.shared.enter(RequestPhase::AnsweredLocally);
        send_local(response);
        Action::Pause
    }

    /// Applies a trailer pass of the engine to one trailer map; `names` are the names the pass may
    /// change.
    fn clean_trailers(
        &self,
        map: MapType,
        pass: for<'t> fn(&FilterConfig, &'t HeaderList<'_>) -> HeaderList<'t>,
        names: fn(&FilterConfig) -> &[String],
    ) {
        let Some(state) = self.state.as_ref() else {
            return;
        };
        let Ok(pairs) = hostcalls::get_map_bytes(map) else {
            return;
        };
        let trailers = HeaderList::from_pairs(pairs);
        let cleaned = pass(&state.config, &trailers);
        for edit in diff(&trailers, &cleaned, names(&state.config)) {
            apply_edit(self.context_id, map, &cleaned, edit);
        }
    }
}

/// Carries out a request decision on the effective context: counts it, logs it, and either changes
/// the request headers or answers locally. `count_request` is false for a held request, which was
/// counted when it arrived. Returns the action for a callback that is still running.
fn finish_request(
    state: &Configured,
    metrics: MetricIds,
    shared: &StreamShared,
    context_id: u32,
    request: &HeaderList<'_>,
    decision: RequestDecision<'_>,
    count_request: bool,
) -> Action {
    for (metric, by) in decision.counter_increments(&state.config) {
        if count_request || metric != Metric::Requests {
            metrics.increment(metric, by);
        }
    }
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
                    "request {context_id}: forwarded; credential {}; stripped {:?}; rules applied {:?}; preset {}; upstream headers {}",
                    if forward.credential_injected {
                        "injected"
                    } else {
                        "missing"
                    },
                    engine::stripped_headers(&state.config, request).collect::<Vec<_>>(),
                    forward.rules_applied,
                    describe_preset(&state.config, forward.preset),
                    render_headers(&forward.headers, &state.config.credential.header),
                );
            }
            let names = &state.config.request_header_names;
            for edit in diff(request, &forward.headers, names) {
                apply_edit(
                    context_id,
                    MapType::HttpRequestHeaders,
                    &forward.headers,
                    edit,
                );
            }
            if forward.request.is_some() {
                *shared.request.borrow_mut() = forward.request;
            }
            Action::Continue
        }
    }
}

fn send_local(response: &LocalResponse) {
    if let Err(status) = hostcalls::send_http_response(
        response.status,
        response.headers.clone(),
        Some(response.body.as_bytes()),
    ) {
        warn!("sending a local {} failed: {status:?}", response.status);
    }
}

/// Carries out one header edit on a request or response header or trailer map; `after` holds the
/// new values. One value (the usual case) is one host call.
fn apply_edit(context_id: u32, map: MapType, after: &HeaderList<'_>, edit: HeaderEdit<'_>) {
    let result = match edit {
        HeaderEdit::Remove(name) => hostcalls::remove_map_value(map, name),
        HeaderEdit::Set(name, value) => hostcalls::set_map_value_bytes(map, name, Some(value)),
        HeaderEdit::Add(name, value) => hostcalls::add_map_value_bytes(map, name, value),
        HeaderEdit::Replace(name) => hostcalls::remove_map_value(map, name).and_then(|()| {
            after
                .get_all(name)
                .try_for_each(|value| hostcalls::add_map_value_bytes(map, name, value))
        }),
    };
    // The SDK aborts the VM on a status it does not expect (the host's failure policy then closes the
    // stream, so a request never leaves half-edited); what it does return is logged here.
    if let Err(status) = result {
        // Only the name: the value may be the credential.
        let name = edit.name();
        warn!("context {context_id}: changing header {name} failed: {status:?}");
    }
}

/// Carries out the token manager's commands. Held requests are finished in their own context
/// (`proxy_set_effective_context`); afterwards the context of the running callback is restored, so
/// later host calls (an http call in particular) belong to it and not to a request.
fn carry_out(
    state: &Configured,
    tokens: &Tokens,
    metrics: MetricIds,
    commands: Vec<Command>,
    current_context: u32,
) {
    let mut switched = false;
    for command in commands {
        match command {
            Command::Count(metric, by) => metrics.increment(metric, by),
            Command::Gauge(metric, value) => metrics.record(metric, value),
            Command::TickPeriod(period) => {
                if let Err(status) = hostcalls::set_tick_period(period) {
                    warn!("cannot set the tick period: {status:?}");
                }
            }
            Command::Log(level, line) => match level {
                TokenLevel::Debug => debug!("{line}"),
                TokenLevel::Info => info!("{line}"),
                TokenLevel::Warn => warn!("{line}"),
                TokenLevel::Error => error!("{line}"),
            },
            Command::Resume(context_id) => {
                switched |= finish_held(state, tokens, metrics, context_id, None);
            }
            Command::Reject { context_id, cause } => {
                switched |= finish_held(state, tokens, metrics, context_id, Some(cause));
            }
        }
    }
    if switched && hostcalls::set_effective_context(current_context).is_err() {
        let _ = hostcalls::set_effective_context(tokens.root_id);
    }
}

/// Finishes a held request: with the current credential (`cause` None) or without a token. Returns
/// whether the effective context was switched.
fn finish_held(
    state: &Configured,
    tokens: &Tokens,
    metrics: MetricIds,
    context_id: u32,
    cause: Option<NoToken>,
) -> bool {
    let Some(shared) = tokens.held.borrow_mut().remove(&context_id) else {
        return false;
    };
    let admitted = shared.release();
    if let Err(status) = hostcalls::set_effective_context(context_id) {
        debug!("request {context_id}: gone before it could be resumed: {status:?}");
        return false;
    }
    let Ok(pairs) = hostcalls::get_map_bytes(MapType::HttpRequestHeaders) else {
        return true;
    };
    let request = HeaderList::from_pairs(pairs);
    // Only an admitted request is ever held; without the verdict the request is refused as
    // unconfigured rather than forwarded unchecked.
    let Some(admitted) = admitted else {
        finish_request(
            state,
            metrics,
            &shared,
            context_id,
            &request,
            RequestDecision::Respond(engine::not_configured()),
            false,
        );
        return true;
    };
    let current = match cause {
        None => tokens.manager.borrow_mut().current(now_ms()),
        Some(_) => None,
    };
    let decision = match (&current, cause) {
        (Some((credential, generation)), _) => {
            shared.generation.set(Some(*generation));
            engine::handle_admitted(
                &state.config,
                &admitted,
                Some(credential),
                &request,
                engine::NO_CREDENTIAL_MESSAGE,
            )
        }
        (None, cause) => engine::handle_admitted(
            &state.config,
            &admitted,
            None,
            &request,
            engine::no_token_message(cause.unwrap_or(NoToken::TimedOut)),
        ),
    };
    let action = finish_request(
        state, metrics, &shared, context_id, &request, decision, false,
    );
    if action == Action::Continue
        && let Err(status) = hostcalls::resume_http_request()
    {
        warn!("request {context_id}: resuming failed: {status:?}");
    }
    true
}

/// Fetches what the access policy reads from the host, and nothing it does not: `source.address`
/// with `source_cidrs`, the identity property with a property identity source.
fn caller_facts(config: &FilterConfig, context_id: u32) -> Option<CallerFacts> {
    let access = config.access.as_ref()?;
    let property = access.identity_property();
    if property.is_none() && !access.needs_source_address() {
        return None;
    }
    // Called directly: the SDK wrapper panics on the statuses a host may legitimately return for
    // an unavailable property.
    let fetch = |path: Vec<&str>| {
        hostcalls::get_property(path.clone()).unwrap_or_else(|status| {
            debug!("request {context_id}: no {}: {status:?}", path.join("."));
            None
        })
    };
    Some(CallerFacts {
        source_address: access
            .needs_source_address()
            .then(|| fetch(vec!["source", "address"]))
            .flatten(),
        identity_property: property.and_then(|path| fetch(path.segments())),
    })
}

/// The shared-data and http-call host calls the token manager needs.
struct HostPort;

impl Host for HostPort {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match hostcalls::get_shared_data(key) {
            Ok((value, Some(cas))) => Some((value.unwrap_or_default(), cas)),
            _ => None,
        }
    }

    fn set(&mut self, key: &str, value: &[u8], write: Write) -> Result<(), SetError> {
        // A cas no stored value can have: Envoy (and the harness) insert an absent key whatever the
        // cas, and refuse to overwrite a present one unless the cas matches.
        let cas = match write {
            Write::IfAbsent => u32::MAX,
            Write::IfCas(cas) => cas,
        };
        match hostcalls::set_shared_data(key, Some(value), Some(cas)) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(SetError::CasMismatch),
            Err(_) => Err(SetError::Failed),
        }
    }

    fn dispatch(&mut self, request: &TokenRequest) -> Result<u32, DispatchError> {
        let mut headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        if let Some(authorization) = &request.authorization {
            headers.push(("authorization", authorization.expose()));
        }
        hostcalls::dispatch_http_call(
            &request.cluster,
            headers,
            Some(request.body.expose().as_bytes()),
            Vec::new(),
            request.timeout,
        )
        .map_err(|status| match status {
            Status::BadArgument => DispatchError::BadArgument,
            Status::InternalFailure => DispatchError::InternalFailure,
            _ => DispatchError::Unexpected,
        })
    }
}

/// The host's time in milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// 64 random bits: the standard library seeds `RandomState` from WASI `random_get`; the clock is mixed
/// in so two VMs differ even on a host whose random source is weak.
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = hostcalls::get_current_time()
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .unwrap_or(Duration::ZERO);
    hasher.write_u128(nanos.as_nanos());
    hasher.finish()
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
