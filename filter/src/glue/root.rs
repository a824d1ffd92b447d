//! The root context: validates the configuration, resolves the credential, defines the metrics, and
//! with the `oauth2` source runs the VM's token manager and finishes the requests held for a token.

use std::cell::RefCell;
use std::env::VarError;
use std::rc::Rc;

use log::{debug, error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MapType};

use super::abi;
use super::effects::{MetricIds, finish_request, request_edits};
use super::stream::{FilterStream, ShareableStream, StreamShared, read_headers};
use super::{Configured, HostPort, Source, Tokens, now_ms, random_u64, usage};
use crate::by_context::ByContext;
use crate::config::{self, FilterConfig, MissingCredential};
use crate::credential::{self, CredentialError, CredentialSource};
use crate::engine::{self, RequestDecision};
use crate::headers::HeaderList;
use crate::metrics::Metric;
use crate::token::endpoint::Client;
use crate::token::manager::{Command, Level as TokenLevel, NoToken, TokenManager};

#[derive(Default)]
pub(super) struct FilterRoot {
    pub(super) context_id: u32,
    pub(super) state: Option<Rc<Configured>>,
    pub(super) metrics: Option<MetricIds>,
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
        let source = match resolve_source(&config, self.context_id) {
            Ok(source) => source,
            Err(problem) => {
                let consequence = match config.on_missing_credential {
                    MissingCredential::Deny => "requests will be answered with 503",
                    MissingCredential::Forward => "requests will be forwarded without a credential",
                };
                error!("credential filter has no credential: {problem}; {consequence}");
                Source::Unavailable
            }
        };
        // With `oauth2` the token manager reports availability as tokens come and go.
        match &source {
            Source::OAuth2(_) => {}
            Source::Static(_) => metrics.record(Metric::CredentialAvailable, 1),
            Source::Unavailable => metrics.record(Metric::CredentialAvailable, 0),
        }
        let state = Rc::new(Configured {
            usage: config.usage.map(usage::UsageState::new),
            config,
            source,
        });
        self.state = Some(Rc::clone(&state));
        if let Some(tokens) = state.tokens() {
            let commands = tokens.manager.borrow_mut().start(&mut HostPort, now_ms());
            carry_out(&state, tokens, metrics, commands, self.context_id);
        }
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

/// The credential source of a valid configuration: the static credential, or this VM's token
/// manager for `oauth2`. Logs which one is ready.
fn resolve_source(config: &FilterConfig, root_id: u32) -> Result<Source, CredentialError> {
    let CredentialSource::OAuth2(oauth2) = &config.credential.source else {
        let credential = credential::resolve(&config.credential, env_var)?;
        info!(
            "credential filter configured: credential ready for header {}",
            config.credential.header
        );
        return Ok(Source::Static(credential));
    };
    let client = Client::resolve(oauth2, env_var)?;
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
    Ok(Source::OAuth2(Rc::new(Tokens {
        manager: RefCell::new(manager),
        held: RefCell::new(ByContext::default()),
        root_id,
    })))
}

/// The VM environment, where `env` sources are read: one function, so every reader shares it.
fn env_var(name: &str) -> Result<String, VarError> {
    std::env::var(name)
}

/// Carries out the token manager's commands. Held requests are finished in their own context
/// (`proxy_set_effective_context`); afterwards the context of the running callback is restored, so
/// later host calls (an http call in particular) belong to it and not to a request.
pub(super) fn carry_out(
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
            Command::Log(level, line) => {
                let level = match level {
                    TokenLevel::Debug => log::Level::Debug,
                    TokenLevel::Info => log::Level::Info,
                    TokenLevel::Warn => log::Level::Warn,
                    TokenLevel::Error => log::Level::Error,
                };
                log::log!(level, "{line}");
            }
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
pub(super) fn finish_held(
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
    let bytes = abi::header_map(MapType::HttpRequestHeaders);
    // Room for every header the pipeline may add, so the list never grows.
    let room = state.config.request_header_names.len();
    let mut request = match read_headers(&bytes, room) {
        Ok(request) => request,
        Err(unreadable) => {
            warn!(
                "request {context_id}: headers unreadable ({unreadable}): answered without forwarding"
            );
            finish_request(
                state,
                metrics,
                &shared,
                context_id,
                &HeaderList::new(),
                RequestDecision::Respond(engine::headers_unreadable()),
                false,
            );
            return true;
        }
    };
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
                &mut request,
                &mut request_edits(context_id),
                engine::NO_CREDENTIAL_MESSAGE,
            )
        }
        (None, cause) => engine::handle_admitted(
            &state.config,
            &admitted,
            None,
            &mut request,
            &mut request_edits(context_id),
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
