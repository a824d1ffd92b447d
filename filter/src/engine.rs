//! The request and response pipelines, as pure functions.
//!
//! Given the validated configuration, the credential (if any) and what the
//! host reported, [`handle_request`] decides whether to forward the request
//! or to answer locally, and rewrites the headers it forwards;
//! [`handle_response`] rewrites response headers. Both change the list they
//! are given in place and hand each change, as it is made, to the caller as
//! the edit of the host's map that makes it (see [`Rewrite`]). The glue only
//! fetches inputs, carries out edits and carries out decisions.
//!
//! Request pipeline, in order:
//! 1. access policy on the headers as the client sent them and what the host
//!    reported about the caller (403 on failure);
//! 2. credential availability (503 unless `on_missing_credential: forward`);
//! 3. removal of the credential header and every stripped header;
//! 4. request rules, in order;
//! 5. the preset (Anthropic: version, OAuth beta flag);
//! 6. the credential header is set.
//!
//! Response pipeline: the credential header is removed, then response rules run.
//!
//! The header lists a pipeline rewrites borrow from its inputs (the host's
//! headers, the configuration, the credential): only what a step computes,
//! such as a merged beta line or a rewritten path, is allocated.

use crate::json::ObjectWriter;

use crate::access::{CallerFacts, DenyReason};
use crate::config::{FilterConfig, MissingCredential};
use crate::credential::Credential;
use crate::headers::{HeaderEdit, HeaderList, Rewrite};
use crate::metrics::Metric;
use crate::preset::PresetOutcome;
use crate::rules::{
    AppliedRules, RequestSummary, apply_request_rules, apply_response_rules,
    unread_response_rule_edits,
};
use crate::token::manager::NoToken;

/// What to do with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestDecision {
    /// Forward upstream, with the headers as rewritten.
    Forward(Forward),
    /// Answer the client locally; nothing is forwarded.
    Respond(LocalResponse),
}

/// A request to forward and what was done to it. Only the names in
/// [`FilterConfig::request_header_names`] were changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forward {
    /// Whether the credential header was set.
    pub credential_injected: bool,
    /// Indices of request rules that changed something.
    pub rules_applied: AppliedRules,
    /// What the preset changed, if a preset is configured.
    pub preset: Option<PresetOutcome>,
    /// Which of [`FilterConfig::stripped_request_headers`] the request carried, a bit per name
    /// (the first 64), for the debug line ([`stripped_headers`]).
    pub stripped: u64,
    /// The request as the client sent it, kept only when a response rule
    /// tests it ([`FilterConfig::response_rules_read_request`]).
    pub request: Option<RequestSummary>,
}

/// Why the filter answered locally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalReason {
    /// The access policy refused the caller.
    AccessDenied(DenyReason),
    /// No usable credential and `on_missing_credential` is `deny`.
    CredentialUnavailable,
    /// The filter has no valid configuration.
    NotConfigured,
    /// The host's request headers could not be read, so the client's credential could not be
    /// stripped.
    HeadersUnreadable,
}

/// A response the filter sends itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalResponse {
    /// HTTP status code.
    pub status: u32,
    /// Why the response was sent.
    pub reason: LocalReason,
    /// Response headers.
    pub headers: Vec<(&'static str, &'static str)>,
    /// JSON body in the Anthropic error format.
    pub body: String,
}

/// What the response pipeline did. Only the names in
/// [`FilterConfig::response_header_names`] were changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseOutcome {
    /// Whether an upstream credential header was removed.
    pub credential_removed: bool,
    /// Indices of response rules that changed something.
    pub rules_applied: AppliedRules,
}

/// What a 503 says when no credential is configured at all.
pub const NO_CREDENTIAL_MESSAGE: &str =
    "the proxy has no credential for the upstream API; the operator must configure one";

/// What a 503 says when a request found no token, by cause.
pub fn no_token_message(cause: NoToken) -> &'static str {
    match cause {
        NoToken::TimedOut => {
            "the proxy could not obtain a credential for the upstream API in time; retry shortly"
        }
        NoToken::BackingOff => {
            "the proxy cannot obtain a credential for the upstream API right now; retry later"
        }
        NoToken::Disabled => {
            "the token endpoint rejected the proxy's credential for the upstream API; the operator must configure a new one"
        }
    }
}

/// Proof that the access policy admitted a request. Only [`admit`] makes one, so the pipeline that
/// takes it ([`handle_admitted`]) never runs the policy again, not even for a request held while a
/// token is fetched.
#[derive(Debug, Default)]
pub struct Admitted(());

/// Runs the access policy, once per request, on the headers as the client sent them and what the
/// host reported about the caller.
///
/// # Errors
/// The `403` to answer when the access policy refuses the caller.
pub fn admit(
    config: &FilterConfig,
    request: &HeaderList<'_>,
    caller: Option<&CallerFacts>,
) -> Result<Admitted, LocalResponse> {
    if let Some(access) = &config.access {
        access.check(request, caller).map_err(access_denied)?;
    }
    Ok(Admitted(()))
}

/// Runs the request pipeline, the access policy included, on `request`; each change is handed to
/// `edits` as it is made.
pub fn handle_request<'a>(
    config: &'a FilterConfig,
    credential: Option<&'a Credential>,
    request: &mut HeaderList<'a>,
    caller: Option<&CallerFacts>,
    edits: &mut dyn FnMut(HeaderEdit<'_>),
) -> RequestDecision {
    match admit(config, request, caller) {
        Ok(admitted) => handle_admitted(
            config,
            &admitted,
            credential,
            request,
            edits,
            NO_CREDENTIAL_MESSAGE,
        ),
        Err(response) => RequestDecision::Respond(response),
    }
}

/// Runs the request pipeline after [`admit`] on `request`, handing each change to `edits` as it
/// is made; `missing_message` explains a 503 when there is no credential (see
/// [`no_token_message`]). A request answered locally is not changed.
pub fn handle_admitted<'a>(
    config: &'a FilterConfig,
    _admitted: &Admitted,
    credential: Option<&'a Credential>,
    request: &mut HeaderList<'a>,
    edits: &mut dyn FnMut(HeaderEdit<'_>),
    missing_message: &str,
) -> RequestDecision {
    if credential.is_none() && config.on_missing_credential == MissingCredential::Deny {
        return RequestDecision::Respond(credential_unavailable(missing_message));
    }
    // Before any change: response rules test the request as the client sent it.
    let summary = config
        .response_rules_read_request
        .then(|| RequestSummary::from_request(request));
    let mut headers = Rewrite::new(request, edits);
    let stripped = strip(config, &mut headers);
    let rules_applied = apply_request_rules(&config.request_rules, &mut headers);
    let preset = config.preset.map(|preset| {
        let bearer = credential.is_some() && config.credential_is_bearer;
        preset.apply(&mut headers, bearer)
    });
    if let Some(credential) = credential {
        headers.set(&config.credential.header, credential.header_value());
    }
    RequestDecision::Forward(Forward {
        credential_injected: credential.is_some(),
        rules_applied,
        preset,
        stripped,
        request: summary,
    })
}

/// Runs the response pipeline on `response`, handing each change to `edits` as it is made.
pub fn handle_response<'a>(
    config: &'a FilterConfig,
    response: &mut HeaderList<'a>,
    request: &RequestSummary,
    edits: &mut dyn FnMut(HeaderEdit<'_>),
) -> ResponseOutcome {
    let mut headers = Rewrite::new(response, edits);
    let credential_removed = headers.remove(&config.credential.header);
    let rules_applied = apply_response_rules(&config.response_rules, &mut headers, request);
    ResponseOutcome {
        credential_removed,
        rules_applied,
    }
}

/// The response pipeline for a response that is not read, possible when no
/// response rule needs it ([`FilterConfig::response_rules_read_response`] is
/// false): the credential header is removed, then each response rule whose
/// request conditions hold sets or adds its header. `apply` gets these edits in
/// order; carried out on the host's map they leave it as [`handle_response`]'s
/// edits would. Returns how many rules applied.
pub fn unread_response_edits<'a>(
    config: &'a FilterConfig,
    request: &RequestSummary,
    mut apply: impl FnMut(HeaderEdit<'a>),
) -> usize {
    apply(HeaderEdit::Remove(&config.credential.header));
    unread_response_rule_edits(&config.response_rules, request, apply)
}

/// A trailer pass ([`handle_request_trailers`], [`handle_response_trailers`]): the configuration,
/// the trailers, where their edits go.
pub type TrailerPass = fn(&FilterConfig, &mut HeaderList<'_>, &mut dyn FnMut(HeaderEdit<'_>));

/// Removes every stripped header (the credential header included) from request trailers, so a
/// client cannot smuggle a credential in trailers; each removal goes to `edits`. Only the names
/// in [`FilterConfig::stripped_request_headers`] change.
pub fn handle_request_trailers(
    config: &FilterConfig,
    trailers: &mut HeaderList<'_>,
    edits: &mut dyn FnMut(HeaderEdit<'_>),
) {
    strip(config, &mut Rewrite::new(trailers, edits));
}

/// Removes every stripped header (the credential header included); returns which the request
/// carried, a bit per name (the first 64).
fn strip(config: &FilterConfig, headers: &mut Rewrite<'_, '_>) -> u64 {
    let mut carried = 0;
    for (index, name) in config.stripped_request_headers.iter().enumerate() {
        if headers.remove(name) && index < 64 {
            carried |= 1 << index;
        }
    }
    carried
}

/// The stripped headers a forwarded request carried ([`Forward::stripped`]), which the request
/// pipeline removed: named only when a debug log asks, so a request pays nothing for it.
pub fn stripped_headers<'c>(
    config: &'c FilterConfig,
    forward: &Forward,
) -> impl Iterator<Item = &'c str> {
    let carried = forward.stripped;
    config
        .stripped_request_headers
        .iter()
        .take(64)
        .enumerate()
        .filter(move |(index, _)| carried & (1 << index) != 0)
        .map(|(_, name)| name.as_str())
}

/// Removes the credential header, the only name that changes, from response trailers; the
/// removal goes to `edits`.
pub fn handle_response_trailers(
    config: &FilterConfig,
    trailers: &mut HeaderList<'_>,
    edits: &mut dyn FnMut(HeaderEdit<'_>),
) {
    Rewrite::new(trailers, edits).remove(&config.credential.header);
}

/// The 503 sent when the filter has no valid configuration.
pub fn not_configured() -> LocalResponse {
    LocalResponse {
        reason: LocalReason::NotConfigured,
        ..credential_unavailable("the credential filter is not configured")
    }
}

/// The 500 sent when the host's request headers cannot be read: without them the client's own
/// credential could not be stripped, so nothing is forwarded.
pub fn headers_unreadable() -> LocalResponse {
    LocalResponse {
        status: 500,
        reason: LocalReason::HeadersUnreadable,
        headers: json_headers(),
        body: error_body("api_error", "the proxy could not read the request headers"),
    }
}

fn access_denied(reason: DenyReason) -> LocalResponse {
    LocalResponse {
        status: 403,
        reason: LocalReason::AccessDenied(reason),
        headers: json_headers(),
        body: error_body("permission_error", reason.message()),
    }
}

/// Seconds a client is asked to wait before retrying a 503 whose cause passes on its own (a token
/// fetch that ran out of time, or a refresh backing off).
pub const CREDENTIAL_RETRY_AFTER_SECONDS: &str = "5";

fn credential_unavailable(message: &str) -> LocalResponse {
    let mut headers = json_headers();
    // The SDKs and Claude Code retry a 503 for minutes unless told otherwise: only a cause that passes on
    // its own is worth retrying; a missing or revoked credential needs an operator.
    let transient = [NoToken::TimedOut, NoToken::BackingOff]
        .into_iter()
        .any(|cause| no_token_message(cause) == message);
    if transient {
        headers.push(("x-should-retry", "true"));
        headers.push(("retry-after", CREDENTIAL_RETRY_AFTER_SECONDS));
    } else {
        headers.push(("x-should-retry", "false"));
    }
    LocalResponse {
        status: 503,
        reason: LocalReason::CredentialUnavailable,
        headers,
        body: error_body("credential_unavailable", message),
    }
}

fn json_headers() -> Vec<(&'static str, &'static str)> {
    vec![("content-type", "application/json")]
}

/// An error body in the shape the Anthropic API uses, so clients parse it as one.
/// The field order is `type`, `error`, `type`, `message`.
fn error_body(kind: &str, message: &str) -> String {
    let mut error = ObjectWriter::new();
    error.string("type", kind).string("message", message);
    let mut body = ObjectWriter::new();
    body.string("type", "error").object("error", error);
    body.finish()
}

impl RequestDecision {
    /// Counter increments this decision accounts for, in order.
    ///
    /// Handed to `count` one by one rather than as an iterator: a chain of iterators cost a state
    /// check per step on every request.
    pub fn counter_increments(
        &self,
        config: &FilterConfig,
        mut increment: impl FnMut(Metric, u64),
    ) {
        increment(Metric::Requests, 1);
        let outcome = match self {
            Self::Forward(forward) => {
                if forward.credential_injected {
                    Some((Metric::CredentialInjected, 1))
                } else if config.on_missing_credential == MissingCredential::Forward {
                    Some((Metric::CredentialUnavailable, 1))
                } else {
                    None
                }
            }
            Self::Respond(response) => match response.reason {
                LocalReason::AccessDenied(_) => Some((Metric::AccessDenied, 1)),
                LocalReason::CredentialUnavailable | LocalReason::NotConfigured => {
                    Some((Metric::CredentialUnavailable, 1))
                }
                LocalReason::HeadersUnreadable => None,
            },
        };
        if let Some((metric, by)) = outcome {
            increment(metric, by);
        }
        if let Self::Forward(forward) = self
            && !forward.rules_applied.is_empty()
        {
            increment(Metric::RulesApplied, count(forward.rules_applied.len()));
        }
    }
}

/// Widens a count for a metric; saturates rather than wrapping.
pub fn count(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::config::parse;
    use crate::headers::{carry_out, keep, test_list as list, xorshift};
    use crate::secret::Secret;
    use std::sync::LazyLock;

    /// Runs `pipeline` on a view of `headers`, as the glue runs it on the host's list, and checks
    /// that the edits it hands out, carried out on another view as a host would, leave every name
    /// with the values the list holds. Returns the pipeline's result and the list.
    fn rewritten<'a, T>(
        headers: &'a HeaderList<'_>,
        pipeline: impl FnOnce(&mut HeaderList<'a>, &mut dyn FnMut(HeaderEdit<'_>)) -> T,
    ) -> (T, HeaderList<'a>) {
        let mut edits = Vec::new();
        let mut after = headers.view();
        let result = pipeline(&mut after, &mut |edit| edits.push(keep(edit)));
        let mut host = headers.view();
        for edit in &edits {
            carry_out(&mut host, edit);
        }
        for (name, _) in headers.iter().chain(after.iter()) {
            assert_eq!(
                host.get_all(&name).collect::<Vec<_>>(),
                after.get_all(&name).collect::<Vec<_>>(),
                "{name} after {edits:?}"
            );
        }
        (result, after)
    }

    /// A request decision as tests look at it: with the request's headers as the pipeline left
    /// them.
    #[derive(Debug)]
    enum Decided<'a> {
        Forward(Forwarded<'a>),
        Respond(LocalResponse),
    }

    /// A forwarded request and its headers.
    #[derive(Debug)]
    struct Forwarded<'a> {
        decision: Forward,
        headers: HeaderList<'a>,
    }

    impl std::ops::Deref for Forwarded<'_> {
        type Target = Forward;

        fn deref(&self) -> &Forward {
            &self.decision
        }
    }

    /// [`super::handle_request`] on a view of `request`, through [`rewritten`].
    fn handle_request<'a>(
        config: &'a FilterConfig,
        credential: Option<&'a Credential>,
        request: &'a HeaderList<'_>,
        caller: Option<&CallerFacts>,
    ) -> Decided<'a> {
        let (decision, headers) = rewritten(request, |headers, edits| {
            super::handle_request(config, credential, headers, caller, edits)
        });
        match decision {
            RequestDecision::Forward(decision) => Decided::Forward(Forwarded { decision, headers }),
            RequestDecision::Respond(response) => {
                assert_eq!(
                    &headers, request,
                    "a request answered locally is not changed"
                );
                Decided::Respond(response)
            }
        }
    }

    /// A response outcome and the response's headers as the pipeline left them.
    struct Responded<'a> {
        outcome: ResponseOutcome,
        headers: HeaderList<'a>,
    }

    impl std::ops::Deref for Responded<'_> {
        type Target = ResponseOutcome;

        fn deref(&self) -> &ResponseOutcome {
            &self.outcome
        }
    }

    /// [`super::handle_response`] on a view of `response`, through [`rewritten`].
    fn handle_response<'a>(
        config: &'a FilterConfig,
        response: &'a HeaderList<'_>,
        request: &RequestSummary,
    ) -> Responded<'a> {
        let (outcome, headers) = rewritten(response, |headers, edits| {
            super::handle_response(config, headers, request, edits)
        });
        Responded { outcome, headers }
    }

    /// A trailer pass on a view of `trailers`, through [`rewritten`].
    fn trailer_pass<'a>(
        config: &'a FilterConfig,
        trailers: &'a HeaderList<'_>,
        pass: TrailerPass,
    ) -> HeaderList<'a> {
        rewritten(trailers, |headers, edits| pass(config, headers, edits)).1
    }

    fn config(json: &str) -> FilterConfig {
        parse(json.as_bytes()).unwrap()
    }

    fn bearer() -> &'static Credential {
        static BEARER: LazyLock<Credential> =
            LazyLock::new(|| Credential::new("Bearer ", &Secret::new("sk-ant-oat01-token")));
        &BEARER
    }

    fn client_request() -> HeaderList<'static> {
        list(&[
            (":method", "POST"),
            (":path", "/v1/messages"),
            (":authority", "api.anthropic.com"),
            ("authorization", "Bearer client-token"),
            ("x-api-key", "client-key"),
            ("anthropic-beta", "prompt-caching-2024-07-31"),
            ("content-type", "application/json"),
        ])
    }

    fn forward(decision: Decided<'_>) -> Forwarded<'_> {
        match decision {
            Decided::Forward(forward) => forward,
            Decided::Respond(response) => panic!("expected forward, got {response:?}"),
        }
    }

    fn respond(decision: Decided<'_>) -> LocalResponse {
        match decision {
            Decided::Respond(response) => response,
            Decided::Forward(forward) => panic!("expected local response, got {forward:?}"),
        }
    }

    const ANTHROPIC: &str = r#"{"credential": {"source": {"env": "T"}}, "preset": "anthropic"}"#;

    #[test]
    fn anthropic_bearer_request_is_rewritten_end_to_end() {
        let config = config(ANTHROPIC);
        let request = client_request();
        let forward = forward(handle_request(&config, Some(bearer()), &request, None));
        let headers = &forward.headers;
        assert_eq!(
            headers.get_all("authorization").collect::<Vec<_>>(),
            vec![&b"Bearer sk-ant-oat01-token"[..]]
        );
        assert!(!headers.contains("x-api-key"));
        assert_eq!(headers.first("anthropic-version"), Some(&b"2023-06-01"[..]));
        assert_eq!(
            headers.first("anthropic-beta"),
            Some(&b"prompt-caching-2024-07-31,oauth-2025-04-20"[..])
        );
        assert_eq!(
            headers.first("content-type"),
            Some(&b"application/json"[..])
        );
        assert!(forward.credential_injected);
        assert_eq!(
            stripped_headers(&config, &forward).collect::<Vec<_>>(),
            vec!["authorization", "x-api-key"]
        );
        assert_eq!(
            forward.counter_increments_for_test(&config),
            vec![(Metric::Requests, 1), (Metric::CredentialInjected, 1)]
        );
    }

    impl Forwarded<'_> {
        fn counter_increments_for_test(&self, config: &FilterConfig) -> Vec<(Metric, u64)> {
            increments(
                &Decided::Forward(Forwarded {
                    decision: self.decision.clone(),
                    headers: HeaderList::new(),
                }),
                config,
            )
        }
    }

    fn increments(decision: &Decided<'_>, config: &FilterConfig) -> Vec<(Metric, u64)> {
        let decision = match decision {
            Decided::Forward(forward) => RequestDecision::Forward(forward.decision.clone()),
            Decided::Respond(response) => RequestDecision::Respond(response.clone()),
        };
        let mut increments = Vec::new();
        decision.counter_increments(config, |metric, by| increments.push((metric, by)));
        increments
    }

    #[test]
    fn api_key_style_injects_x_api_key_without_oauth_flag() {
        let config = config(
            r#"{"credential": {"header": "x-api-key", "source": {"env": "T"}}, "preset": "anthropic"}"#,
        );
        let credential = Credential::new("", &Secret::new("sk-ant-api03-key"));
        let request = client_request();
        let forward = forward(handle_request(&config, Some(&credential), &request, None));
        assert_eq!(
            forward.headers.get_all("x-api-key").collect::<Vec<_>>(),
            vec![&b"sk-ant-api03-key"[..]]
        );
        // A client's authorization header is not the credential header here and passes through.
        assert_eq!(
            forward.headers.first("authorization"),
            Some(&b"Bearer client-token"[..])
        );
        assert_eq!(
            forward.headers.first("anthropic-beta"),
            Some(&b"prompt-caching-2024-07-31"[..])
        );
    }

    #[test]
    fn missing_credential_answers_503_and_forwards_nothing() {
        let config = config(ANTHROPIC);
        let response = respond(handle_request(&config, None, &client_request(), None));
        assert_eq!(response.status, 503);
        assert_eq!(
            response.headers,
            vec![
                ("content-type", "application/json"),
                ("x-should-retry", "false")
            ]
        );
        let body: serde_json::Value = serde_json::from_str(&response.body).unwrap();
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "credential_unavailable");
        assert!(body["error"]["message"].as_str().unwrap().len() > 10);
        let decision = Decided::Respond(response);
        assert_eq!(
            increments(&decision, &config),
            vec![(Metric::Requests, 1), (Metric::CredentialUnavailable, 1)]
        );
    }

    #[test]
    fn forward_policy_still_strips_client_credentials() {
        let config = config(
            r#"{"credential": {"source": {"env": "T"}}, "preset": "anthropic", "on_missing_credential": "forward"}"#,
        );
        let request = client_request();
        let decision = handle_request(&config, None, &request, None);
        assert_eq!(
            increments(&decision, &config),
            vec![(Metric::Requests, 1), (Metric::CredentialUnavailable, 1)]
        );
        let forward = forward(decision);
        assert!(!forward.credential_injected);
        assert!(!forward.headers.contains("authorization"));
        assert!(!forward.headers.contains("x-api-key"));
        // Without an injected bearer token the OAuth flag would be a lie.
        assert_eq!(
            forward.headers.first("anthropic-beta"),
            Some(&b"prompt-caching-2024-07-31"[..])
        );
    }

    #[test]
    fn client_can_never_set_or_duplicate_the_credential() {
        let config = config(
            r#"{"credential": {"source": {"env": "T"}}, "strip_request_headers": ["x-goog-api-key"]}"#,
        );
        let request = list(&[
            (":path", "/"),
            ("Authorization", "Bearer a"),
            ("authorization", "Bearer b"),
            ("x-goog-api-key", "k"),
        ]);
        let forward = forward(handle_request(&config, Some(bearer()), &request, None));
        assert_eq!(forward.headers.count("authorization"), 1);
        assert_eq!(
            forward.headers.first("authorization"),
            Some(&b"Bearer sk-ant-oat01-token"[..])
        );
        assert!(!forward.headers.contains("x-goog-api-key"));
    }

    fn from(source: &str) -> CallerFacts {
        CallerFacts {
            source_address: Some(source.as_bytes().to_vec()),
            identity_property: None,
        }
    }

    #[test]
    fn access_denied_is_403_without_credential() {
        let config = config(
            r#"{"credential": {"source": {"env": "T"}},
                "access": {"identity": {"property": "caller.id", "allow": ["alice@example.com"]},
                           "source_cidrs": ["100.64.0.0/10"]}}"#,
        );
        let mut request = client_request();
        // A client header named like the identity is never read.
        request.append("caller.id", "alice@example.com");
        request.append("tailscale-user-login", "alice@example.com");
        let eve = CallerFacts {
            identity_property: Some(b"eve@example.com".to_vec()),
            ..from("100.100.1.1:5555")
        };
        let response = respond(handle_request(
            &config,
            Some(bearer()),
            &request,
            Some(&eve),
        ));
        assert_eq!(response.status, 403);
        assert_eq!(
            response.reason,
            LocalReason::AccessDenied(DenyReason::IdentityNotAllowed)
        );
        assert!(!response.body.contains("sk-ant"));
        let body: serde_json::Value = serde_json::from_str(&response.body).unwrap();
        assert_eq!(body["error"]["type"], "permission_error");
        assert_eq!(
            increments(&Decided::Respond(response), &config),
            vec![(Metric::Requests, 1), (Metric::AccessDenied, 1)]
        );
        let nobody = respond(handle_request(
            &config,
            Some(bearer()),
            &request,
            Some(&from("100.100.1.1:5555")),
        ));
        assert_eq!(
            nobody.reason,
            LocalReason::AccessDenied(DenyReason::IdentityMissing)
        );

        let alice = CallerFacts {
            identity_property: Some(b"alice@example.com".to_vec()),
            ..from("100.100.1.1:5555")
        };
        assert!(matches!(
            handle_request(&config, Some(bearer()), &client_request(), Some(&alice)),
            Decided::Forward(_)
        ));
        let outside = respond(handle_request(
            &config,
            Some(bearer()),
            &client_request(),
            Some(&CallerFacts {
                source_address: Some(b"[2001:db8::1]:80".to_vec()),
                ..alice.clone()
            }),
        ));
        assert_eq!(
            outside.reason,
            LocalReason::AccessDenied(DenyReason::SourceNotAllowed)
        );
        let unknown = respond(handle_request(
            &config,
            Some(bearer()),
            &client_request(),
            Some(&CallerFacts {
                source_address: None,
                ..alice
            }),
        ));
        assert_eq!(
            unknown.reason,
            LocalReason::AccessDenied(DenyReason::SourceUnknown)
        );
    }

    #[test]
    fn trusted_identity_header_can_be_checked_and_then_stripped() {
        let config = config(
            r#"{"credential": {"source": {"env": "T"}},
                "strip_request_headers": ["x-user"],
                "access": {"identity": {"header": "x-user", "trusted": true, "allow": ["alice@example.com"]}}}"#,
        );
        let mut alice = client_request();
        alice.append("x-user", "alice@example.com");
        let forward = forward(handle_request(&config, Some(bearer()), &alice, None));
        assert!(!forward.headers.contains("x-user"));
    }

    #[test]
    fn access_is_checked_before_credential_availability() {
        let config = config(
            r#"{"credential": {"source": {"env": "T"}}, "access": {"source_cidrs": ["10.0.0.0/8"]}}"#,
        );
        let response = respond(handle_request(
            &config,
            None,
            &client_request(),
            Some(&from("192.168.0.1:1")),
        ));
        assert_eq!(response.status, 403);
    }

    #[test]
    fn rules_run_after_stripping_and_before_the_preset() {
        let config = config(
            r#"{"credential": {"source": {"env": "T"}}, "preset": "anthropic",
                "request_rules": [
                    {"set": {"name": "anthropic-version", "value": "2099-01-01"}},
                    {"remove": {"name": "anthropic-beta"}},
                    {"when": {"path_prefix": "/v1/"}, "rewrite_path_prefix": {"from": "/v1/", "to": "/v2/"}},
                    {"when": {"method": "GET"}, "set": {"name": "x-never", "value": "1"}}
                ],
                "response_rules": [{"when": {"path_prefix": "/v1/"}, "set": {"name": "x-v1", "value": "1"}}]}"#,
        );
        let request = client_request();
        let decision = handle_request(&config, Some(bearer()), &request, None);
        assert_eq!(
            increments(&decision, &config),
            vec![
                (Metric::Requests, 1),
                (Metric::CredentialInjected, 1),
                (Metric::RulesApplied, 3)
            ]
        );
        let forward = forward(decision);
        assert_eq!(forward.rules_applied, vec![0, 1, 2]);
        assert_eq!(
            forward.headers.first("anthropic-version"),
            Some(&b"2099-01-01"[..])
        );
        assert_eq!(
            forward.headers.first("anthropic-beta"),
            Some(&b"oauth-2025-04-20"[..])
        );
        assert_eq!(forward.headers.first(":path"), Some(&b"/v2/messages"[..]));
        assert!(!forward.headers.contains("x-never"));
        // Response rules match the request as the client sent it, not as rewritten.
        let sent = forward
            .request
            .as_ref()
            .and_then(|request| request.path.as_deref());
        assert_eq!(sent, Some(&b"/v1/messages"[..]));
    }

    #[test]
    fn the_request_is_kept_only_for_response_rules_that_read_it() {
        let request = client_request();
        for (response_rules, kept) in [
            ("[]", false),
            (r#"[{"set": {"name": "x-a", "value": "1"}}]"#, false),
            (
                r#"[{"when": {"header": {"name": "x-a"}}, "remove": {"name": "x-a"}}]"#,
                false,
            ),
            (
                r#"[{"when": {"method": "POST"}, "set": {"name": "x-a", "value": "1"}}]"#,
                true,
            ),
            (
                r#"[{"when": {"authority": "ai"}, "set": {"name": "x-a", "value": "1"}}]"#,
                true,
            ),
        ] {
            let config = config(&format!(
                r#"{{"credential": {{"source": {{"env": "T"}}}}, "response_rules": {response_rules}}}"#
            ));
            let forward = forward(handle_request(&config, Some(bearer()), &request, None));
            assert_eq!(forward.request.is_some(), kept, "{response_rules}");
        }
    }

    #[test]
    fn response_pipeline_removes_credential_then_runs_rules() {
        let config = config(
            r#"{"credential": {"source": {"env": "T"}},
                "response_rules": [{"when": {"path_prefix": "/v1/"}, "set": {"name": "x-served-by", "value": "proxy"}}]}"#,
        );
        let response = list(&[
            (":status", "200"),
            ("authorization", "Bearer echoed"),
            ("content-type", "text/event-stream"),
        ]);
        let summary = RequestSummary::from_request(&client_request());
        let outcome = handle_response(&config, &response, &summary);
        assert!(outcome.credential_removed);
        assert!(!outcome.headers.contains("authorization"));
        assert_eq!(outcome.headers.first("x-served-by"), Some(&b"proxy"[..]));
        assert_eq!(outcome.rules_applied, vec![0]);
    }

    #[test]
    fn trailers_lose_stripped_and_credential_headers() {
        let config = config(ANTHROPIC);
        let trailers = list(&[
            ("authorization", "Bearer smuggled"),
            ("x-api-key", "k"),
            ("x-checksum", "1"),
        ]);
        assert_eq!(
            trailer_pass(&config, &trailers, handle_request_trailers),
            list(&[("x-checksum", "1")])
        );
        assert_eq!(
            trailer_pass(&config, &trailers, handle_response_trailers),
            list(&[("x-api-key", "k"), ("x-checksum", "1")])
        );
    }

    #[test]
    fn edits_touch_only_written_names_and_miss_nothing() {
        // Every kind of action, on both sides, so each kind's names must be in the configured lists.
        let config = config(
            r#"{"credential": {"source": {"env": "T"}}, "preset": "anthropic",
                "strip_request_headers": ["x-strip"],
                "request_rules": [
                    {"when": {"header": {"name": "x", "present": true}}, "set": {"name": "x-set", "value": "1"}},
                    {"append": {"name": "x", "value": "more"}},
                    {"set_if_absent": {"name": "x-maybe", "value": "m"}},
                    {"when": {"path_prefix": "/a"}, "remove": {"name": "x-set"}},
                    {"rename": {"from": "x-old", "to": "x-new"}},
                    {"rewrite_path_prefix": {"from": "/a", "to": "/b"}},
                    {"when": {"method": "GET"}, "set_authority": {"value": "up.example"}}
                ],
                "response_rules": [
                    {"when": {"path_prefix": "/a"}, "set": {"name": "x-resp", "value": "1"}},
                    {"rename": {"from": "x-old", "to": "x-new"}},
                    {"remove": {"name": "server"}}
                ]}"#,
        );
        let names = [
            ":path",
            ":method",
            ":authority",
            "host",
            "authorization",
            "x-api-key",
            "x-strip",
            "anthropic-beta",
            "anthropic-version",
            "x",
            "x-set",
            "x-maybe",
            "x-old",
            "x-new",
            "x-resp",
            "server",
            "other",
        ];
        let values: [&[u8]; 6] = [b"/a/1", b"GET", b"1", b"m", b"", b"x,oauth-2025-04-20"];
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..3000 {
            let mut request = HeaderList::new();
            for _ in 0..(next() % 10) {
                let name = names[(next() % names.len() as u64) as usize];
                let value = values[(next() % values.len() as u64) as usize];
                request.append(name, value);
            }
            // `handle_request` and `handle_response` check that the edits, carried out, leave
            // what the lists hold; here, that they touch only names the pipelines may write.
            let mut written = Vec::new();
            let forward = forward(handle_request(&config, Some(bearer()), &request, None));
            super::handle_request(
                &config,
                Some(bearer()),
                &mut request.view(),
                None,
                &mut |edit| written.push(edit.name().to_owned()),
            );
            assert!(
                written
                    .iter()
                    .all(|name| config.request_header_names.contains(name)),
                "{written:?}"
            );
            written.clear();
            let summary = forward.decision.request.clone().unwrap_or_default();
            super::handle_response(&config, &mut request.view(), &summary, &mut |edit| {
                written.push(edit.name().to_owned());
            });
            assert!(
                written
                    .iter()
                    .all(|name| config.response_header_names.contains(name)),
                "{written:?}"
            );
            handle_response(&config, &request, &summary);
        }
    }

    #[test]
    fn unread_responses_end_up_as_read_ones() {
        let config = config(
            r#"{"credential": {"source": {"env": "T"}},
                "response_rules": [
                    {"when": {"path_prefix": "/a"}, "set": {"name": "x-a", "value": "1"}},
                    {"append": {"name": "x-a", "value": "2"}},
                    {"when": {"method": ["GET"]}, "set": {"name": "x-b", "value": "b"}},
                    {"append": {"name": "x-c", "value": "c"}},
                    {"set": {"name": "x-c", "value": "c"}}
                ]}"#,
        );
        assert!(!config.response_rules_read_response);
        let names = ["authorization", "x-a", "x-b", "x-c", ":status", "server"];
        let values: [&[u8]; 4] = [b"1", b"2", b"c", b"Bearer echoed"];
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        for _ in 0..2000 {
            let mut response = HeaderList::new();
            for _ in 0..(next() % 8) {
                let name = names[(next() % names.len() as u64) as usize];
                response.append(name, values[(next() % values.len() as u64) as usize]);
            }
            let request = RequestSummary {
                method: next().is_multiple_of(2).then(|| b"GET".to_vec()),
                path: next().is_multiple_of(2).then(|| b"/a/b".to_vec()),
                authority: None,
            };
            let outcome = handle_response(&config, &response, &request);
            let read = &outcome.headers;
            let mut edits = Vec::new();
            let applied = unread_response_edits(&config, &request, |edit| edits.push(keep(edit)));
            let mut unread = response.clone();
            for edit in &edits {
                carry_out(&mut unread, edit);
            }
            assert_eq!(applied, outcome.rules_applied.len());
            for name in names {
                assert_eq!(
                    read.get_all(name).collect::<Vec<_>>(),
                    unread.get_all(name).collect::<Vec<_>>(),
                    "{name} in {response:?}"
                );
            }
            assert_eq!(read.len(), unread.len());
        }
    }

    #[test]
    fn responses_are_read_when_a_rule_needs_them() {
        for rules in [
            r#"[{"when": {"header": {"name": "server"}}, "set": {"name": "x-a", "value": "1"}}]"#,
            r#"[{"remove": {"name": "server"}}]"#,
            r#"[{"set_if_absent": {"name": "x-a", "value": "1"}}]"#,
            r#"[{"rename": {"from": "server", "to": "x-server"}}]"#,
        ] {
            let config = config(&format!(
                r#"{{"credential": {{"source": {{"env": "T"}}}}, "response_rules": {rules}}}"#
            ));
            assert!(config.response_rules_read_response, "{rules}");
        }
    }

    #[test]
    fn random_requests_never_leak_or_duplicate_the_credential() {
        let config = config(
            r#"{"credential": {"source": {"env": "T"}}, "preset": "anthropic",
                "request_rules": [{"when": {"path_prefix": "/a"}, "rewrite_path_prefix": {"from": "/a", "to": "/"}},
                                  {"append": {"name": "anthropic-beta", "value": "x"}}],
                "access": {"source_cidrs": ["0.0.0.0/0", "::/0"]}}"#,
        );
        let names = [
            ":path",
            ":authority",
            "authorization",
            "AUTHORIZATION",
            "x-api-key",
            "anthropic-beta",
            "anthropic-version",
            "x",
        ];
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        for _ in 0..2000 {
            let mut request = HeaderList::new();
            for _ in 0..(next() % 8) {
                let name = names[(next() % names.len() as u64) as usize];
                let value: Vec<u8> = (0..(next() % 12)).map(|_| (next() & 0xff) as u8).collect();
                request.append(name, value);
            }
            let source = CallerFacts {
                source_address: Some(
                    (0..(next() % 20))
                        .map(|_| b"0123456789.:[]abcdef"[(next() % 20) as usize])
                        .collect(),
                ),
                identity_property: None,
            };
            match handle_request(&config, Some(bearer()), &request, Some(&source)) {
                Decided::Forward(forward) => {
                    assert_eq!(
                        forward.headers.get_all("authorization").collect::<Vec<_>>(),
                        vec![&b"Bearer sk-ant-oat01-token"[..]]
                    );
                    assert!(!forward.headers.contains("x-api-key"));
                    assert_eq!(forward.headers.count("anthropic-beta"), 1);
                }
                Decided::Respond(response) => {
                    assert_eq!(response.status, 403, "{response:?}");
                }
            }
        }
    }

    #[test]
    fn non_utf8_client_headers_pass_through() {
        let config = config(ANTHROPIC);
        let mut request = client_request();
        request.append("x-binary", vec![0xff, 0xfe, 0x80]);
        request.append("anthropic-beta", vec![0xc3, 0x28]);
        let forward = forward(handle_request(
            &config,
            Some(bearer()),
            &request,
            Some(&CallerFacts {
                source_address: Some(vec![0xff]),
                identity_property: Some(vec![0xff]),
            }),
        ));
        assert_eq!(
            forward.headers.first("x-binary"),
            Some(&[0xff, 0xfe, 0x80][..])
        );
        assert!(
            forward
                .headers
                .first("anthropic-beta")
                .unwrap()
                .ends_with(b"oauth-2025-04-20")
        );
    }

    #[test]
    fn error_bodies_keep_the_anthropic_field_order() {
        assert_eq!(
            error_body("permission_error", "say \"no\""),
            r#"{"type":"error","error":{"type":"permission_error","message":"say \"no\""}}"#
        );
    }

    #[test]
    fn only_a_503_that_passes_on_its_own_asks_for_a_retry() {
        let missing = credential_unavailable(NO_CREDENTIAL_MESSAGE);
        assert!(missing.headers.contains(&("x-should-retry", "false")));
        assert!(
            !missing
                .headers
                .iter()
                .any(|(name, _)| *name == "retry-after")
        );
        let revoked = credential_unavailable(no_token_message(NoToken::Disabled));
        assert!(revoked.headers.contains(&("x-should-retry", "false")));
        for cause in [NoToken::TimedOut, NoToken::BackingOff] {
            let transient = credential_unavailable(no_token_message(cause));
            assert!(transient.headers.contains(&("x-should-retry", "true")));
            assert!(transient.headers.contains(&("retry-after", "5")));
        }
    }

    #[test]
    fn not_configured_is_a_503_credential_unavailable() {
        let response = not_configured();
        assert_eq!(response.status, 503);
        assert_eq!(response.reason, LocalReason::NotConfigured);
        assert!(response.body.contains("credential_unavailable"));
    }
}
