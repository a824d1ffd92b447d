//! The HTTP context of one request: fetches what the pipeline needs, asks [`crate::engine`] and carries
//! the decision out; what it shares with the root context, so the root can finish a held request.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use log::{Level, debug, log_enabled, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, Bytes, GrpcStatusCode, MapType};

use super::abi::{self, HostStatus};
use super::effects::{MetricIds, apply_edit, finish_request, request_edits, send_local};
use super::root::carry_out;
use super::{Configured, HostPort, now_ms, usage};
use crate::access::CallerFacts;
use crate::config::FilterConfig;
use crate::engine::{self, LocalResponse, RequestDecision, count};
use crate::headers::{self, HeaderEdit, HeaderList, MalformedMap, same_bytes};
use crate::metrics::Metric;
use crate::rules::RequestSummary;
use crate::token::manager::Verdict;
use crate::usage::observe::{Observation, ResponseStart};

/// What a stream shares with the root context, so the root can finish a held request.
#[derive(Default)]
pub(super) struct StreamShared {
    /// The client's request, kept only when response rules need it.
    pub(super) request: RefCell<Option<RequestSummary>>,
    /// Where the request is: one value, so it cannot be both held and answered.
    pub(super) phase: RefCell<RequestPhase>,
    /// The token generation injected, to report a 401 against.
    pub(super) generation: Cell<Option<u64>>,
}

/// Where a stream's request is.
#[derive(Debug, Default)]
pub(super) enum RequestPhase {
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
    pub(super) fn is_held(&self) -> bool {
        matches!(*self.phase.borrow(), RequestPhase::Held(_))
    }

    /// Whether the filter answered the request itself.
    pub(super) fn answered_locally(&self) -> bool {
        matches!(*self.phase.borrow(), RequestPhase::AnsweredLocally)
    }

    /// Moves the request to `phase`.
    pub(super) fn enter(&self, phase: RequestPhase) {
        *self.phase.borrow_mut() = phase;
    }

    /// Ends a hold: the request is open again, and the access policy's proof is returned.
    pub(super) fn release(&self) -> Option<engine::Admitted> {
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
pub(super) enum ShareableStream {
    Own(StreamShared),
    WithRoot(Rc<StreamShared>),
}

impl ShareableStream {
    /// The state for the root context to keep, moved behind an `Rc` the first time.
    pub(super) fn share(&mut self) -> Rc<StreamShared> {
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

pub(super) struct FilterStream {
    pub(super) context_id: u32,
    pub(super) state: Option<Rc<Configured>>,
    pub(super) metrics: MetricIds,
    pub(super) shared: ShareableStream,
    /// The usage observation of a generation, when usage is on.
    pub(super) usage: Option<Box<Observation>>,
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
    super::unused::unused_http_helpers! {
        fn get_http_request_headers() -> Vec<(String, String)>;
        fn get_http_request_headers_bytes() -> Vec<(String, Bytes)>;
        fn set_http_request_headers(Vec<(&str, &str)>);
        fn set_http_request_headers_bytes(Vec<(&str, &[u8])>);
        fn get_http_request_header(&str) -> Option<String>;
        fn get_http_request_header_bytes(&str) -> Option<Bytes>;
        fn set_http_request_header(&str, Option<&str>);
        fn set_http_request_header_bytes(&str, Option<&[u8]>);
        fn add_http_request_header(&str, &str);
        fn add_http_request_header_bytes(&str, &[u8]);
        fn remove_http_request_header(&str);
        fn get_http_request_body(usize, usize) -> Option<Bytes>;
        fn set_http_request_body(usize, usize, &[u8]);
        fn get_http_request_trailers() -> Vec<(String, String)>;
        fn get_http_request_trailers_bytes() -> Vec<(String, Bytes)>;
        fn set_http_request_trailers(Vec<(&str, &str)>);
        fn set_http_request_trailers_bytes(Vec<(&str, &[u8])>);
        fn get_http_request_trailer(&str) -> Option<String>;
        fn get_http_request_trailer_bytes(&str) -> Option<Bytes>;
        fn set_http_request_trailer(&str, Option<&str>);
        fn set_http_request_trailer_bytes(&str, Option<&[u8]>);
        fn add_http_request_trailer(&str, &str);
        fn add_http_request_trailer_bytes(&str, &[u8]);
        fn remove_http_request_trailer(&str);
        fn resume_http_request();
        fn reset_http_request();
        fn get_http_response_headers() -> Vec<(String, String)>;
        fn get_http_response_headers_bytes() -> Vec<(String, Bytes)>;
        fn set_http_response_headers(Vec<(&str, &str)>);
        fn set_http_response_headers_bytes(Vec<(&str, &[u8])>);
        fn get_http_response_header(&str) -> Option<String>;
        fn get_http_response_header_bytes(&str) -> Option<Bytes>;
        fn set_http_response_header(&str, Option<&str>);
        fn set_http_response_header_bytes(&str, Option<&[u8]>);
        fn add_http_response_header(&str, &str);
        fn add_http_response_header_bytes(&str, &[u8]);
        fn remove_http_response_header(&str);
        fn get_http_response_body(usize, usize) -> Option<Bytes>;
        fn set_http_response_body(usize, usize, &[u8]);
        fn get_http_response_trailers() -> Vec<(String, String)>;
        fn get_http_response_trailers_bytes() -> Vec<(String, Bytes)>;
        fn set_http_response_trailers(Vec<(&str, &str)>);
        fn set_http_response_trailers_bytes(Vec<(&str, &[u8])>);
        fn get_http_response_trailer(&str) -> Option<String>;
        fn get_http_response_trailer_bytes(&str) -> Option<Bytes>;
        fn set_http_response_trailer(&str, Option<&str>);
        fn set_http_response_trailer_bytes(&str, Option<&[u8]>);
        fn add_http_response_trailer(&str, &str);
        fn add_http_response_trailer_bytes(&str, &[u8]);
        fn remove_http_response_trailer(&str);
        fn resume_http_response();
        fn reset_http_response();
        fn send_http_response(u32, Vec<(&str, &str)>, Option<&[u8]>);
        fn send_grpc_response(GrpcStatusCode, Option<&str>, Vec<(&str, &[u8])>);
    }

    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(state) = self.state.clone() else {
            // Never forward without a valid configuration: fail closed.
            self.metrics.increment(Metric::Requests, 1);
            self.metrics.increment(Metric::CredentialUnavailable, 1);
            return self.respond(&engine::not_configured());
        };
        let bytes = abi::header_map(MapType::HttpRequestHeaders);
        // Room for every header the pipeline may add, so the list never grows.
        let room = state.config.request_header_names.len();
        let mut request = match read_headers(&bytes, room) {
            Ok(request) => request,
            Err(unreadable) => {
                warn!(
                    "request {}: headers unreadable ({unreadable}): answered without forwarding",
                    self.context_id
                );
                self.metrics.increment(Metric::Requests, 1);
                return self.respond(&engine::headers_unreadable());
            }
        };
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
                &mut request,
                &mut request_edits(self.context_id),
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
                    &mut request,
                    &mut request_edits(self.context_id),
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
                    &mut request,
                    &mut request_edits(self.context_id),
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
            usage::finish(observation, usage);
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
        let observing = self.usage.is_some() && state.usage.is_some();
        // Unless a rule needs the response (or debug logs say what was removed), its edits are
        // known without reading it.
        let rules_read = state.config.response_rules_read_response;
        let reads_response = rules_read || log_enabled!(Level::Debug);
        let watching = self.watches_for_401(&state);
        if watching && !observing && !reads_response {
            // Only the status matters: one value, not the whole map. Bytes, not the string getter:
            // it panics on a non-UTF-8 value.
            let status = hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, ":status")
                .ok()
                .flatten();
            self.on_status(&state, status.as_deref());
        }
        // One copy of the map serves usage, the 401 watch and the rules; without any of them the
        // response is not copied into the guest at all. Usage and the watch only look up a few
        // values, so unless the rules need the whole list none is built.
        let bytes =
            (observing || reads_response).then(|| abi::header_map(MapType::HttpResponseHeaders));
        let credential_header = state.config.credential.header.as_str();
        let read = bytes.as_ref().map(|bytes| {
            if reads_response {
                let room = state.config.response_header_names.len();
                read_headers(bytes, room).map(ResponseRead::Whole)
            } else {
                look_up_response(bytes, credential_header)
            }
        });
        let read = match read.transpose() {
            Ok(read) => read,
            Err(unreadable) => {
                warn!(
                    "response {}: headers unreadable ({unreadable}): usage counts no status{}",
                    self.context_id,
                    if rules_read {
                        ", and only the credential header is removed"
                    } else {
                        ""
                    }
                );
                None
            }
        };
        // A map that could not be read has none of them: usage counts a response without a status.
        let start = read.as_ref().map(ResponseRead::start).unwrap_or_default();
        if let (Some(observation), Some(usage)) = (self.usage.as_deref_mut(), state.usage.as_ref())
        {
            usage::response_headers(observation, usage, start, end_of_stream);
        }
        // Only a watched request looks its status up: with a static credential nothing reads it.
        if watching && (observing || reads_response) {
            self.on_status(&state, start.status);
        }
        let request = self.shared.request.borrow_mut().take().unwrap_or_default();
        let (response, has_credential) = match read {
            Some(ResponseRead::Whole(response)) => (Some(response), true),
            Some(ResponseRead::Looked { has_credential, .. }) => (None, has_credential),
            None => (None, true),
        };
        let Some(mut response) = response else {
            // Until the first edit the host's map is the one looked up for usage (when it was):
            // removing the credential header it lacks would change nothing, and is skipped.
            let mut credential_absent = !has_credential;
            let mut apply = |edit| {
                if credential_absent
                    && let HeaderEdit::Remove(name) = edit
                    && same_bytes(name.as_bytes(), credential_header.as_bytes())
                {
                    return;
                }
                credential_absent = false;
                apply_edit(self.context_id, MapType::HttpResponseHeaders, edit);
            };
            if rules_read {
                // The rules cannot be judged on a response that cannot be read; the credential
                // header goes whatever it said.
                apply(HeaderEdit::Remove(&state.config.credential.header));
                return Action::Continue;
            }
            let applied = engine::unread_response_edits(&state.config, &request, apply);
            if applied > 0 {
                self.metrics.increment(Metric::RulesApplied, count(applied));
            }
            return Action::Continue;
        };
        let context_id = self.context_id;
        let outcome =
            engine::handle_response(&state.config, &mut response, &request, &mut |edit| {
                apply_edit(context_id, MapType::HttpResponseHeaders, edit)
            });
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
        decision: RequestDecision,
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
    /// change, removed without a look when the map cannot be read.
    fn clean_trailers(
        &self,
        map: MapType,
        pass: engine::TrailerPass,
        names: fn(&FilterConfig) -> &[String],
    ) {
        let Some(state) = self.state.as_ref() else {
            return;
        };
        let bytes = abi::header_map(map);
        let mut trailers = match read_headers(&bytes, 0) {
            Ok(trailers) => trailers,
            Err(unreadable) => {
                // The pass only removes names: removing each one blind (an absent name is no error)
                // keeps a credential smuggled in trailers from passing when the map cannot be read.
                warn!(
                    "context {}: trailers unreadable ({unreadable}): removing the stripped names without reading them",
                    self.context_id
                );
                for name in names(&state.config) {
                    apply_edit(self.context_id, map, HeaderEdit::Remove(name));
                }
                return;
            }
        };
        let context_id = self.context_id;
        pass(&state.config, &mut trailers, &mut |edit| {
            apply_edit(context_id, map, edit);
        });
    }
}

/// Why a header map the filter reads could not be read.
#[derive(Debug, thiserror::Error)]
pub(super) enum MapUnreadable {
    /// The host refused it with this status.
    #[error("{0}")]
    Host(HostStatus),
    /// The host's bytes are not a well-formed map.
    #[error("{0}")]
    Malformed(MalformedMap),
}

/// The response headers as the response path read them.
enum ResponseRead<'b> {
    /// The whole list, for rules that read the response (or a debug log).
    Whole(HeaderList<'b>),
    /// What usage and the 401 watch need, looked up without a list, and whether the credential
    /// header is there.
    Looked {
        start: ResponseStart<'b>,
        has_credential: bool,
    },
}

impl ResponseRead<'_> {
    /// The response's status, content type and encoding.
    fn start(&self) -> ResponseStart<'_> {
        match self {
            Self::Whole(response) => ResponseStart {
                status: response.first(":status"),
                content_type: response.first("content-type"),
                content_encoding: response.first("content-encoding"),
            },
            Self::Looked { start, .. } => *start,
        }
    }
}

/// Looks up what usage and the 401 watch need in a response map, and the credential header,
/// without building a list.
fn look_up_response<'b>(
    bytes: &'b Result<Vec<u8>, HostStatus>,
    credential_header: &str,
) -> Result<ResponseRead<'b>, MapUnreadable> {
    let bytes = bytes
        .as_ref()
        .map_err(|status| MapUnreadable::Host(*status))?;
    let names = [
        ":status",
        "content-type",
        "content-encoding",
        credential_header,
    ];
    let [status, content_type, content_encoding, credential] =
        headers::first_values(bytes, names).map_err(MapUnreadable::Malformed)?;
    Ok(ResponseRead::Looked {
        start: ResponseStart {
            status,
            content_type,
            content_encoding,
        },
        has_credential: credential.is_some(),
    })
}

/// The header list in a map the host handed over, borrowed from its bytes, with room for `extra`
/// more lines.
pub(super) fn read_headers(
    bytes: &Result<Vec<u8>, HostStatus>,
    extra: usize,
) -> Result<HeaderList<'_>, MapUnreadable> {
    let bytes = bytes
        .as_ref()
        .map_err(|status| MapUnreadable::Host(*status))?;
    HeaderList::from_serialized_with_room(bytes, extra).map_err(MapUnreadable::Malformed)
}

/// Fetches what the access policy reads from the host, and nothing it does not: `source.address`
/// with `source_cidrs`, the identity property with a property identity source.
pub(super) fn caller_facts(config: &FilterConfig, context_id: u32) -> Option<CallerFacts> {
    let access = config.access.as_ref()?;
    let identity = access.identity_property();
    if identity.is_none() && !access.needs_source_address() {
        return None;
    }
    let fetch = |path: &str| property(path, context_id);
    Some(CallerFacts {
        source_address: access
            .needs_source_address()
            .then(|| fetch("source.address"))
            .flatten(),
        identity_property: identity.and_then(|path| fetch(path.as_str())),
    })
}

/// A property of the request by its dotted path; `None` when the host has none. Not the SDK's
/// wrapper: it panics on the statuses a host may legitimately return for an unavailable property.
pub(super) fn property(path: &str, context_id: u32) -> Option<Vec<u8>> {
    abi::dotted_property(path).unwrap_or_else(|status| {
        debug!("request {context_id}: no {path}: {status:?}");
        None
    })
}
