//! The `oauth2` source of the real filter through the harness: several VMs on one manual clock, a mock
//! token cluster, virtual time only. One refresh for all VMs, proactive refresh with rotation, held
//! requests, a lease holder that traps, every failure mode, 401 invalidation.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use host_harness::{
    Action, HttpCallFailure, HttpCallRequest, HttpCallResponse, LogLevel, ManualClock, MetricValue,
    MockCluster, MockReply, Plugin, PluginBuilder, StreamEvent, StreamId, Vm, VmGroup,
};
use serde_json::{Value, json};

const STATE_KEY: &str = "credential_filter.oauth2.oauth.state";
const LEASE_KEY: &str = "credential_filter.oauth2.oauth.lease";
const INITIAL_REFRESH: &str = "tok-refresh-0";

fn access(n: u32) -> String {
    format!("tok-access-{n}")
}

fn refresh(n: u32) -> String {
    format!("tok-refresh-{n}")
}

/// A token endpoint behind a mock cluster: issues numbered token pairs, or what the test planned; records
/// when each call arrived (virtual milliseconds) and which refresh token it carried.
#[derive(Clone)]
struct Issuer {
    inner: Arc<Mutex<IssuerState>>,
    clock: ManualClock,
}

struct IssuerState {
    issued: u32,
    expires_in: u64,
    plan: VecDeque<MockReply>,
    calls: Vec<(u64, String)>,
}

impl Issuer {
    fn new(clock: &ManualClock, expires_in: u64) -> Self {
        let state = IssuerState {
            issued: 0,
            expires_in,
            plan: VecDeque::new(),
            calls: Vec::new(),
        };
        Self {
            inner: Arc::new(Mutex::new(state)),
            clock: clock.clone(),
        }
    }

    fn cluster(&self) -> MockCluster {
        let issuer = self.clone();
        MockCluster::new(move |request| issuer.answer(request))
    }

    fn plan(&self, reply: MockReply) {
        self.inner.lock().unwrap().plan.push_back(reply);
    }

    fn answer(&self, request: &HttpCallRequest) -> MockReply {
        let mut state = self.inner.lock().unwrap();
        let sent = form_value(&request.body, "refresh_token").unwrap_or_default();
        state.calls.push((self.clock.now_nanos() / 1_000_000, sent));
        if let Some(planned) = state.plan.pop_front() {
            return planned;
        }
        state.issued += 1;
        let n = state.issued;
        let body = json!({"access_token": access(n), "token_type": "Bearer", "expires_in": state.expires_in, "refresh_token": refresh(n)});
        MockReply::respond(json_response(200, &body))
    }

    fn calls(&self) -> Vec<(u64, String)> {
        self.inner.lock().unwrap().calls.clone()
    }

    fn sent_refresh_tokens(&self) -> Vec<String> {
        self.calls().into_iter().map(|(_, token)| token).collect()
    }
}

fn json_response(status: u16, body: &Value) -> HttpCallResponse {
    HttpCallResponse::new(status)
        .header("content-type", "application/json")
        .body(body.to_string())
}

fn form_value(body: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .find_map(|pair| pair.strip_prefix(&format!("{name}=")).map(str::to_owned))
}

fn oauth2(extra: Value) -> Value {
    let mut source = json!({
        "token_endpoint": {"cluster": "oauth", "authority": "auth.example.com", "path": "/oauth/token"},
        "grant_type": "refresh_token",
        "client_id": "client-1",
        "refresh_token": {"env": "REFRESH_TOKEN"},
        "refresh_before_expiry": "5m",
        "request_timeout": "5s",
        "max_request_wait": "10s",
        "backoff": {"initial": "1s", "max": "2s"}
    });
    for (key, value) in extra.as_object().unwrap() {
        source[key] = value.clone();
    }
    json!({"credential": {"source": {"oauth2": source}}, "preset": "anthropic"})
}

fn builder(config: Value, issuer: &Issuer) -> PluginBuilder {
    builder_with(config, issuer, INITIAL_REFRESH)
}

/// A plugin of the real filter whose VM environment holds `refresh_token`.
fn builder_with(config: Value, issuer: &Issuer, refresh_token: &str) -> PluginBuilder {
    Plugin::builder()
        .module_file(env!("FILTER_WASM"))
        .plugin_config(config.to_string())
        .env("REFRESH_TOKEN", refresh_token)
        .cluster("oauth", issuer.cluster())
        .clock(issuer.clock.clone())
}

fn request_headers() -> [(&'static str, &'static str); 4] {
    [
        (":method", "POST"),
        (":path", "/v1/messages"),
        (":authority", "ai"),
        ("authorization", "Bearer client-own"),
    ]
}

/// Sends request headers on a new stream; returns the stream and the filter's action.
fn send(vm: &mut Vm, end_of_stream: bool) -> (StreamId, Action) {
    let mut stream = vm.stream().unwrap();
    let action = stream
        .request_headers(request_headers(), end_of_stream)
        .unwrap();
    (stream.id(), action)
}

fn authorization(vm: &Vm, id: StreamId) -> Option<String> {
    vm.stream_state(id)
        .unwrap()
        .request_headers()
        .get_str("authorization")
        .map(str::to_owned)
}

/// A request that must go through with `token`.
fn forwarded_with(vm: &mut Vm, token: &str) {
    let (id, action) = send(vm, true);
    assert_eq!(
        action,
        Action::Continue,
        "local response: {:?}",
        vm.stream_state(id).unwrap().local_response()
    );
    assert_eq!(
        authorization(vm, id).as_deref(),
        Some(format!("Bearer {token}").as_str())
    );
    vm.finish_stream(id).unwrap();
}

fn metric(plugin: &Plugin, name: &str) -> u64 {
    match plugin.metric(name) {
        Some(MetricValue::Counter(value) | MetricValue::Gauge(value)) => value,
        other => panic!("metric {name}: {other:?}"),
    }
}

fn shared_state(plugin: &Plugin) -> Value {
    let (bytes, _) = plugin
        .shared_data(STATE_KEY)
        .expect("the state is in shared data");
    serde_json::from_slice(&bytes).unwrap()
}

/// No token, refresh token or client secret in any log line of these VMs.
fn assert_no_secret_logged(vms: &mut [Vm]) {
    for vm in vms {
        for record in vm.logs() {
            assert!(
                !record.message.contains("tok-"),
                "a token reached a log line: {}",
                record.message
            );
        }
    }
}

fn local_503(vm: &Vm, id: StreamId) -> Value {
    let local = vm
        .stream_state(id)
        .unwrap()
        .local_response()
        .cloned()
        .expect("a local response");
    assert_eq!(local.status, 503);
    let body: Value = serde_json::from_slice(&local.body).unwrap();
    assert_eq!(body["error"]["type"], "credential_unavailable");
    body
}

#[test]
fn four_vms_share_one_refresh() {
    let clock = ManualClock::new();
    let issuer = Issuer::new(&clock, 3600);
    let plugin = builder(oauth2(json!({})), &issuer).build().unwrap();
    let mut group = VmGroup::start(&plugin, 4).unwrap();
    group.advance(Duration::from_secs(2)).unwrap();
    assert_eq!(
        issuer.sent_refresh_tokens(),
        [INITIAL_REFRESH],
        "one refresh for all VMs"
    );
    for vm in group.vms() {
        forwarded_with(vm, &access(1));
    }
    let state = shared_state(&plugin);
    assert_eq!(state["refresh_token"], refresh(1));
    assert_eq!(state["generation"], 1);
    assert_eq!(
        metric(&plugin, "credential_filter_token_refresh_attempts_total"),
        1
    );
    assert_eq!(
        metric(&plugin, "credential_filter_token_refresh_success_total"),
        1
    );
    assert_eq!(metric(&plugin, "credential_filter_credential_available"), 1);
    assert!((3590..=3600).contains(&metric(
        &plugin,
        "credential_filter_token_seconds_to_expiry"
    )));
    assert_eq!(
        metric(&plugin, "credential_filter_credential_injected_total"),
        4
    );
    assert_no_secret_logged(group.vms());
}

#[test]
fn proactive_refresh_rotates_and_never_reuses_a_refresh_token() {
    let clock = ManualClock::new();
    let issuer = Issuer::new(&clock, 3600);
    let plugin = builder(oauth2(json!({})), &issuer).build().unwrap();
    let mut group = VmGroup::start(&plugin, 4).unwrap();
    group.advance(Duration::from_secs(1)).unwrap();
    let first = issuer.calls()[0].0;
    // Five minutes before expiry, not earlier.
    group.advance(Duration::from_secs(3600 - 300 - 2)).unwrap();
    assert_eq!(issuer.calls().len(), 1);
    group.advance(Duration::from_secs(3)).unwrap();
    let calls = issuer.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    let due = first + (3600 - 300) * 1000;
    assert!(
        calls[1].0 >= due && calls[1].0 <= due + 1000,
        "refresh at {} for due {due}",
        calls[1].0
    );
    for vm in group.vms() {
        forwarded_with(vm, &access(2));
    }
    // Three more rounds: every refresh token is sent exactly once, the newest each time.
    group.advance(Duration::from_secs(3 * 3300 + 10)).unwrap();
    assert_eq!(
        issuer.sent_refresh_tokens(),
        [
            INITIAL_REFRESH,
            &refresh(1),
            &refresh(2),
            &refresh(3),
            &refresh(4)
        ]
    );
    assert_eq!(shared_state(&plugin)["refresh_token"], refresh(5));
    assert_no_secret_logged(group.vms());
}

#[test]
fn requests_without_a_token_are_held_and_resumed_when_it_arrives() {
    let clock = ManualClock::new();
    let issuer = Issuer::new(&clock, 3600);
    let slow = json_response(
        200,
        &json!({"access_token": access(1), "expires_in": 3600, "refresh_token": refresh(1)}),
    );
    issuer.plan(MockReply::respond(slow).after(Duration::from_secs(2)));
    let plugin = builder(oauth2(json!({})), &issuer).build().unwrap();
    let mut group = VmGroup::start(&plugin, 2).unwrap();
    let vm = group.vm(1).unwrap();
    let (id, action) = send(vm, false);
    assert_eq!(action, Action::Pause, "held while no token exists");
    // The body must not release the held headers.
    let chunk = vm.request_body(id, b"{\"model\":\"x\"}", true).unwrap();
    assert_eq!(chunk.action, Action::Pause);
    assert!(chunk.forward.is_empty());
    assert_eq!(
        authorization(vm, id).as_deref(),
        Some("Bearer client-own"),
        "nothing injected yet"
    );
    group.advance(Duration::from_millis(1500)).unwrap();
    assert!(group.vm(1).unwrap().take_stream_events().is_empty());
    group.advance(Duration::from_secs(1)).unwrap();
    let vm = group.vm(1).unwrap();
    assert_eq!(vm.take_stream_events(), [StreamEvent::RequestResumed(id)]);
    assert_eq!(authorization(vm, id), Some(format!("Bearer {}", access(1))));
    assert_eq!(vm.drain_request_body(id), b"{\"model\":\"x\"}");
    assert_eq!(metric(&plugin, "credential_filter_requests_held_total"), 1);
    assert_eq!(
        metric(&plugin, "credential_filter_credential_injected_total"),
        1
    );
    assert_eq!(metric(&plugin, "credential_filter_requests_total"), 1);
}

#[test]
fn an_expired_token_without_refresh_holds_requests_then_resumes_them() {
    let clock = ManualClock::new();
    let issuer = Issuer::new(&clock, 600);
    let plugin = builder(oauth2(json!({})), &issuer).build().unwrap();
    let mut group = VmGroup::start(&plugin, 2).unwrap();
    group.advance(Duration::from_secs(1)).unwrap();
    forwarded_with(group.vm(0).unwrap(), &access(1));
    // The endpoint fails from the proactive refresh (at half the 10-minute lifetime) until past expiry.
    for _ in 0..400 {
        issuer.plan(MockReply::respond(
            HttpCallResponse::new(502).body("bad gateway"),
        ));
    }
    group.advance(Duration::from_secs(590)).unwrap();
    assert!(
        issuer.calls().len() > 2,
        "retries while the old token is still used"
    );
    forwarded_with(group.vm(1).unwrap(), &access(1));
    group.advance(Duration::from_secs(15)).unwrap();
    assert_eq!(metric(&plugin, "credential_filter_credential_available"), 0);
    // Expired: requests wait; the endpoint recovers; they go on with the new token.
    issuer.inner.lock().unwrap().plan.clear();
    let (id, action) = send(group.vm(1).unwrap(), true);
    assert_eq!(action, Action::Pause);
    group.advance(Duration::from_secs(3)).unwrap();
    let vm = group.vm(1).unwrap();
    assert_eq!(vm.take_stream_events(), [StreamEvent::RequestResumed(id)]);
    assert_eq!(authorization(vm, id), Some(format!("Bearer {}", access(2))));
    assert_eq!(metric(&plugin, "credential_filter_credential_available"), 1);
    assert!(
        metric(
            &plugin,
            "credential_filter_token_refresh_failures_http_status_total"
        ) >= 2
    );
}

#[test]
fn a_held_request_gets_503_after_the_maximum_wait() {
    let clock = ManualClock::new();
    let issuer = Issuer::new(&clock, 3600);
    issuer.plan(MockReply::never());
    let plugin = builder(
        oauth2(json!({"max_request_wait": "3s", "request_timeout": "20s"})),
        &issuer,
    )
    .build()
    .unwrap();
    let mut vm = plugin.start_vm().unwrap();
    let (id, action) = send(&mut vm, true);
    assert_eq!(action, Action::Pause);
    vm.advance(Duration::from_millis(2900)).unwrap();
    assert!(vm.take_stream_events().is_empty());
    vm.advance(Duration::from_millis(200)).unwrap();
    assert_eq!(vm.take_stream_events(), [StreamEvent::LocalResponse(id)]);
    let body = local_503(&vm, id);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("in time"),
        "{body}"
    );
    assert_eq!(
        authorization(&vm, id).as_deref(),
        Some("Bearer client-own"),
        "never forwarded"
    );
    assert_eq!(metric(&plugin, "credential_filter_requests_held_total"), 1);
    assert_eq!(
        metric(&plugin, "credential_filter_requests_failed_no_token_total"),
        1
    );
    assert_eq!(
        metric(&plugin, "credential_filter_credential_unavailable_total"),
        1
    );
    // The response phase of a locally answered request is left alone.
    vm.finish_stream(id).unwrap();
}

#[test]
fn a_lease_holder_that_traps_is_replaced_after_the_lease_lapses() {
    let clock = ManualClock::new();
    let issuer = Issuer::new(&clock, 3600);
    // The first answer is larger than the VM may allocate: the holder traps while reading it.
    let huge = HttpCallResponse::new(200).body(vec![b'x'; 24 * 1024 * 1024]);
    issuer.plan(MockReply::respond(huge).after(Duration::from_secs(1)));
    let plugin = builder(
        oauth2(json!({"request_timeout": "5s", "max_request_wait": "30s"})),
        &issuer,
    )
    .memory_limit(16 * 1024 * 1024)
    .build()
    .unwrap();
    let mut group = VmGroup::start(&plugin, 4).unwrap();
    let (held, action) = send(group.vm(2).unwrap(), true);
    assert_eq!(action, Action::Pause);
    group.advance(Duration::from_secs(2)).unwrap();
    let failed: Vec<usize> = (0..4)
        .filter(|&i| group.vm(i).unwrap().is_failed())
        .collect();
    assert_eq!(failed.len(), 1, "exactly the lease holder failed");
    assert_eq!(issuer.calls().len(), 1);
    let (bytes, _) = plugin.shared_data(LEASE_KEY).unwrap();
    let lease: Value = serde_json::from_slice(&bytes).unwrap();
    let until = lease["until_ms"].as_u64().unwrap();
    assert!(
        !lease["holder"].as_str().unwrap().is_empty(),
        "the dead VM still holds the lease"
    );
    // Nobody calls while the lease lives (5 s timeout + 5 s slack); then one VM takes over.
    group.advance(Duration::from_secs(7)).unwrap();
    assert_eq!(issuer.calls().len(), 1);
    group.advance(Duration::from_secs(2)).unwrap();
    let calls = issuer.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls[1].0 >= until && calls[1].0 <= until + 1000,
        "took over at {} (lease until {until})",
        calls[1].0
    );
    assert_eq!(
        calls[1].1, INITIAL_REFRESH,
        "the trapped holder never published a rotation"
    );
    let vm = group.vm(2).unwrap();
    if failed[0] != 2 {
        assert_eq!(vm.take_stream_events(), [StreamEvent::RequestResumed(held)]);
        assert_eq!(
            authorization(vm, held),
            Some(format!("Bearer {}", access(1)))
        );
    }
    for index in (0..4).filter(|i| *i != failed[0]) {
        forwarded_with(group.vm(index).unwrap(), &access(1));
    }
}

/// One failure mode: the first attempt gets `reply`; the token issued before is kept.
fn failure_case(reply: MockReply, counter: &str) -> (Plugin, Vm) {
    let clock = ManualClock::new();
    let issuer = Issuer::new(&clock, 900);
    // A long backoff: the one failure is all that happens in the window the test looks at.
    let config = oauth2(json!({"backoff": {"initial": "5m", "max": "5m"}}));
    let plugin = builder(config, &issuer).build().unwrap();
    let mut vm = plugin.start_vm().unwrap();
    vm.advance(Duration::from_secs(1)).unwrap();
    forwarded_with(&mut vm, &access(1));
    issuer.plan(reply);
    // Lifetime 15 min, margin 5 min: the refresh is due after 10 minutes.
    vm.advance(Duration::from_secs(600 + 6)).unwrap();
    assert_eq!(metric(&plugin, counter), 1, "{counter}");
    assert_eq!(
        metric(&plugin, "credential_filter_token_refresh_success_total"),
        1
    );
    forwarded_with(&mut vm, &access(1));
    assert_eq!(shared_state(&plugin)["failures"], 1);
    assert_no_secret_logged(std::slice::from_mut(&mut vm));
    (plugin, vm)
}

#[test]
fn each_failure_mode_is_counted_and_the_current_token_kept() {
    let refused = MockReply::Fail {
        failure: HttpCallFailure::Failed("connection refused".into()),
        after: Duration::ZERO,
    };
    failure_case(
        refused,
        "credential_filter_token_refresh_failures_unreachable_total",
    );
    failure_case(
        MockReply::never(),
        "credential_filter_token_refresh_failures_timeout_total",
    );
    let status = MockReply::respond(HttpCallResponse::new(500).body("oops"));
    failure_case(
        status,
        "credential_filter_token_refresh_failures_http_status_total",
    );
    let html = MockReply::respond(HttpCallResponse::new(200).body("<html>login</html>"));
    failure_case(
        html,
        "credential_filter_token_refresh_failures_malformed_total",
    );
    let missing = MockReply::respond(json_response(200, &json!({"token_type": "Bearer"})));
    failure_case(
        missing,
        "credential_filter_token_refresh_failures_missing_field_total",
    );
    let client = MockReply::respond(json_response(401, &json!({"error": "invalid_client"})));
    failure_case(
        client,
        "credential_filter_token_refresh_failures_oauth_error_total",
    );
}

#[test]
fn invalid_grant_stops_refreshing_and_says_so() {
    let description = format!("refresh token {} was already used", refresh(1));
    let reply = MockReply::respond(json_response(
        400,
        &json!({"error": "invalid_grant", "error_description": description}),
    ));
    let (plugin, mut vm) = failure_case(
        reply,
        "credential_filter_token_refresh_failures_invalid_grant_total",
    );
    assert_eq!(
        metric(&plugin, "credential_filter_token_refresh_disabled"),
        1
    );
    assert_eq!(shared_state(&plugin)["disabled"], "invalid_grant");
    let errors: Vec<String> = vm
        .logs()
        .into_iter()
        .filter(|r| r.level >= LogLevel::Error)
        .map(|r| r.message)
        .collect();
    assert!(
        errors
            .iter()
            .any(|line| line.contains("invalid_grant")
                && line.contains("configure a new refresh token")),
        "{errors:?}"
    );
    // No attempt ever again; once the token expires requests get 503 at once.
    vm.advance(Duration::from_secs(3600)).unwrap();
    assert_eq!(
        metric(&plugin, "credential_filter_token_refresh_attempts_total"),
        2
    );
    let (id, action) = send(&mut vm, true);
    assert_eq!(action, Action::Pause);
    let body = local_503(&vm, id);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rejected"),
        "{body}"
    );
    assert_eq!(metric(&plugin, "credential_filter_credential_available"), 0);
}

#[test]
fn an_unknown_token_cluster_is_a_dispatch_failure() {
    let clock = ManualClock::new();
    let issuer = Issuer::new(&clock, 3600);
    let config =
        oauth2(json!({"token_endpoint": {"cluster": "missing", "authority": "a", "path": "/t"}}));
    let plugin = builder(config, &issuer).build().unwrap();
    let mut vm = plugin.start_vm().unwrap();
    vm.advance(Duration::from_secs(1)).unwrap();
    assert_eq!(
        metric(
            &plugin,
            "credential_filter_token_refresh_failures_dispatch_total"
        ),
        1
    );
    assert!(
        vm.logs()
            .iter()
            .any(|r| r.message.contains("cluster missing"))
    );
    assert!(issuer.calls().is_empty());
}

#[test]
fn an_upstream_401_drops_the_token_and_triggers_one_refresh() {
    let clock = ManualClock::new();
    let issuer = Issuer::new(&clock, 3600);
    let plugin = builder(oauth2(json!({"refresh_on_unauthorized": true})), &issuer)
        .build()
        .unwrap();
    let mut group = VmGroup::start(&plugin, 2).unwrap();
    group.advance(Duration::from_secs(1)).unwrap();
    let mut rejected = Vec::new();
    for index in 0..2 {
        let vm = group.vm(index).unwrap();
        let (id, action) = send(vm, true);
        assert_eq!(action, Action::Continue);
        rejected.push((index, id));
    }
    for (index, id) in rejected {
        let vm = group.vm(index).unwrap();
        vm.response_headers(id, [(":status", "401")].into(), true)
            .unwrap();
        vm.finish_stream(id).unwrap();
    }
    assert_eq!(
        metric(&plugin, "credential_filter_token_invalidated_total"),
        1,
        "one invalidation for two 401s"
    );
    let (id, action) = send(group.vm(0).unwrap(), true);
    assert_eq!(action, Action::Pause, "the dropped token is not used again");
    group.advance(Duration::from_millis(100)).unwrap();
    assert_eq!(issuer.sent_refresh_tokens(), [INITIAL_REFRESH, &refresh(1)]);
    let vm = group.vm(0).unwrap();
    assert_eq!(vm.take_stream_events(), [StreamEvent::RequestResumed(id)]);
    assert_eq!(authorization(vm, id), Some(format!("Bearer {}", access(2))));
}

#[test]
fn an_upstream_401_is_noticed_below_debug_level_too() {
    // Below debug level the filter reads only the status of a response, not the whole response.
    let clock = ManualClock::new();
    let issuer = Issuer::new(&clock, 3600);
    let plugin = builder(oauth2(json!({"refresh_on_unauthorized": true})), &issuer)
        .log_level(LogLevel::Info)
        .build()
        .unwrap();
    let mut vm = plugin.start_vm().unwrap();
    vm.advance(Duration::from_secs(1)).unwrap();
    let (id, action) = send(&mut vm, true);
    assert_eq!(action, Action::Continue);
    vm.response_headers(id, [(":status", "401")].into(), true)
        .unwrap();
    vm.finish_stream(id).unwrap();
    assert_eq!(
        metric(&plugin, "credential_filter_token_invalidated_total"),
        1
    );
    let (_, action) = send(&mut vm, true);
    assert_eq!(action, Action::Pause, "the dropped token is not used again");
}

#[test]
fn a_401_is_passed_on_without_a_refresh_unless_configured() {
    let clock = ManualClock::new();
    let issuer = Issuer::new(&clock, 3600);
    let plugin = builder(oauth2(json!({})), &issuer).build().unwrap();
    let mut vm = plugin.start_vm().unwrap();
    vm.advance(Duration::from_secs(1)).unwrap();
    let (id, _) = send(&mut vm, true);
    vm.response_headers(id, [(":status", "401")].into(), true)
        .unwrap();
    vm.advance(Duration::from_secs(5)).unwrap();
    assert_eq!(issuer.calls().len(), 1);
    forwarded_with(&mut vm, &access(1));
}

#[test]
fn a_new_configured_refresh_token_replaces_a_disabled_state() {
    let clock = ManualClock::new();
    let issuer = Issuer::new(&clock, 3600);
    issuer.plan(MockReply::respond(json_response(
        400,
        &json!({"error": "invalid_grant"}),
    )));
    let registry = host_harness::SharedRegistry::new();
    let plugin = builder(oauth2(json!({})), &issuer)
        .shared_registry(registry.clone())
        .build()
        .unwrap();
    let mut old = plugin.start_vm().unwrap();
    old.advance(Duration::from_secs(1)).unwrap();
    assert_eq!(shared_state(&plugin)["disabled"], "invalid_grant");
    // The operator puts a fresh refresh token in place; a VM with it adopts the state.
    let fixed = builder_with(oauth2(json!({})), &issuer, "tok-refresh-fresh")
        .shared_registry(registry)
        .build()
        .unwrap();
    let mut new = fixed.start_vm().unwrap();
    new.advance(Duration::from_secs(1)).unwrap();
    assert_eq!(
        issuer.sent_refresh_tokens(),
        [INITIAL_REFRESH, "tok-refresh-fresh"]
    );
    forwarded_with(&mut new, &access(1));
    old.advance(Duration::from_secs(1)).unwrap();
    forwarded_with(&mut old, &access(1));
    assert_eq!(shared_state(&fixed)["disabled"], Value::Null);
}
