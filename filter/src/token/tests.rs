//! Several [`TokenManager`]s (one per simulated VM) over one in-memory shared-data store with Envoy's
//! semantics: one cas counter from 1, a cas of 0 is unconditional, a write to an absent key always
//! inserts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use serde_json::{Value, json};

use super::config::parse;
use super::endpoint::{Client, FailureReason, TokenRequest};
use super::manager::{
    Command, DispatchError, Host, KICK_TICK, NoToken, SetError, TokenManager, Verdict,
    WAITING_TICK, Write,
};
use super::state::{Lease, TokenState};
use crate::metrics::Metric;
use crate::secret::Secret;

const T0: u64 = 1_700_000_000_000;
const HOUR: u64 = 3_600_000;

#[derive(Default)]
struct Store {
    data: HashMap<String, (Vec<u8>, u32)>,
    next_cas: u32,
}

impl Store {
    fn set_raw(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), SetError> {
        if let Some((_, stored)) = self.data.get(key)
            && cas != 0
            && cas != *stored
        {
            return Err(SetError::CasMismatch);
        }
        self.next_cas += 1;
        self.data
            .insert(key.to_owned(), (value.to_vec(), self.next_cas));
        Ok(())
    }
}

/// One VM's view of the host: the shared store plus its own http calls.
struct Vm {
    store: Rc<RefCell<Store>>,
    calls: Vec<(u32, TokenRequest)>,
    next_call: u32,
    refuse: bool,
    manager: TokenManager,
    log: Vec<String>,
    resumed: Vec<u32>,
    rejected: Vec<(u32, NoToken)>,
    counts: HashMap<Metric, u64>,
    gauges: HashMap<Metric, u64>,
    tick: Option<std::time::Duration>,
}

struct Port<'a> {
    store: &'a Rc<RefCell<Store>>,
    calls: &'a mut Vec<(u32, TokenRequest)>,
    next_call: &'a mut u32,
    refuse: bool,
}

impl Host for Port<'_> {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.store.borrow().data.get(key).cloned()
    }

    fn set(&mut self, key: &str, value: &[u8], write: Write) -> Result<(), SetError> {
        let cas = match write {
            Write::IfAbsent => u32::MAX,
            Write::IfCas(cas) => cas,
        };
        self.store.borrow_mut().set_raw(key, value, cas)
    }

    fn dispatch(&mut self, request: &TokenRequest) -> Result<u32, DispatchError> {
        if self.refuse {
            return Err(DispatchError::BadArgument);
        }
        *self.next_call += 1;
        self.calls.push((*self.next_call, request.clone()));
        Ok(*self.next_call)
    }
}

fn config(extra: Value) -> super::config::OAuth2Config {
    let mut value = json!({
        "token_endpoint": {"cluster": "oauth", "authority": "auth.example.com", "path": "/token"},
        "grant_type": "refresh_token",
        "client_id": "client",
        "refresh_token": {"env": "RT"},
        "refresh_before_expiry": "5m",
        "request_timeout": "10s",
        "max_request_wait": "10s",
        "backoff": {"initial": "1s", "max": "1m"}
    });
    for (key, field) in extra.as_object().unwrap() {
        value[key] = field.clone();
    }
    parse(&crate::json::from_serde(&value)).unwrap()
}

fn client(refresh: &str) -> Client {
    Client {
        client_id: "client".into(),
        client_secret: None,
        refresh_token: Some(Secret::new(refresh)),
    }
}

impl Vm {
    fn new(store: &Rc<RefCell<Store>>, name: &str, extra: Value, refresh: &str) -> Self {
        Self {
            store: Rc::clone(store),
            calls: Vec::new(),
            next_call: 100,
            refuse: false,
            manager: TokenManager::new(config(extra), client(refresh), "Bearer ", name.into(), 42),
            log: Vec::new(),
            resumed: Vec::new(),
            rejected: Vec::new(),
            counts: HashMap::new(),
            gauges: HashMap::new(),
            tick: None,
        }
    }

    fn run<R>(
        &mut self,
        step: impl FnOnce(&mut TokenManager, &mut Port<'_>) -> (R, Vec<Command>),
    ) -> R {
        let mut port = Port {
            store: &self.store,
            calls: &mut self.calls,
            next_call: &mut self.next_call,
            refuse: self.refuse,
        };
        let (result, commands) = step(&mut self.manager, &mut port);
        for command in commands {
            match command {
                Command::Resume(id) => self.resumed.push(id),
                Command::Reject { context_id, cause } => self.rejected.push((context_id, cause)),
                Command::TickPeriod(period) => self.tick = Some(period),
                Command::Count(metric, by) => *self.counts.entry(metric).or_default() += by,
                Command::Gauge(metric, value) => {
                    self.gauges.insert(metric, value);
                }
                Command::Log(_, line) => self.log.push(line),
            }
        }
        result
    }

    fn start(&mut self, now: u64) {
        self.run(|manager, port| ((), manager.start(port, now)));
    }

    fn tick(&mut self, now: u64) {
        self.run(|manager, port| ((), manager.on_tick(port, now)));
    }

    fn request(&mut self, now: u64, id: u32) -> Verdict {
        self.run(|manager, port| manager.on_request(port, now, id))
    }

    fn answer(&mut self, now: u64, answer: Option<(u16, Value)>) {
        let (call, _) = self.calls.last().cloned().expect("a call was dispatched");
        let answer = answer.map(|(status, body)| (status, body.to_string().into_bytes()));
        self.run(|manager, port| ((), manager.on_response(port, now, call, answer)));
    }

    fn unauthorized(&mut self, now: u64, generation: u64) {
        self.run(|manager, port| ((), manager.on_unauthorized(port, now, generation)));
    }

    fn count(&self, metric: Metric) -> u64 {
        self.counts.get(&metric).copied().unwrap_or(0)
    }

    fn sent_refresh_tokens(&self) -> Vec<String> {
        self.calls
            .iter()
            .map(|(_, request)| {
                let body = request.body.expose();
                body.split('&')
                    .find_map(|pair| pair.strip_prefix("refresh_token="))
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    }
}

fn token(n: u32, expires_in: u64) -> (u16, Value) {
    (
        200,
        json!({"access_token": format!("at-{n}"), "token_type": "Bearer", "expires_in": expires_in, "refresh_token": format!("rt-{n}")}),
    )
}

fn state(store: &Rc<RefCell<Store>>) -> TokenState {
    let (bytes, _) = store
        .borrow()
        .data
        .get("credential_filter.oauth2.oauth.state")
        .cloned()
        .unwrap();
    TokenState::decode(&bytes).unwrap()
}

fn lease_holder(store: &Rc<RefCell<Store>>) -> String {
    let (bytes, _) = store
        .borrow()
        .data
        .get("credential_filter.oauth2.oauth.lease")
        .cloned()
        .unwrap();
    Lease::decode(&bytes).holder
}

fn ready(verdict: &Verdict) -> Option<(Vec<u8>, u64)> {
    match verdict {
        Verdict::Ready {
            credential,
            generation,
        } => Some((credential.header_value().to_vec(), *generation)),
        _ => None,
    }
}

fn group(count: usize, extra: Value) -> (Rc<RefCell<Store>>, Vec<Vm>) {
    let store = Rc::new(RefCell::new(Store::default()));
    let mut vms: Vec<Vm> = (0..count)
        .map(|n| Vm::new(&store, &format!("vm-{n}"), extra.clone(), "rt-0"))
        .collect();
    for vm in &mut vms {
        vm.start(T0);
    }
    (store, vms)
}

fn assert_no_secret_logged(vms: &[Vm]) {
    for vm in vms {
        for line in &vm.log {
            for needle in ["at-", "rt-"] {
                assert!(!line.contains(needle), "a token reached a log line: {line}");
            }
        }
    }
}

#[test]
fn four_vms_fetch_the_first_token_once_and_all_use_it() {
    let (store, mut vms) = group(4, json!({}));
    assert_eq!(
        vms[0].tick,
        Some(KICK_TICK),
        "start asks for an early attempt"
    );
    for vm in &mut vms {
        vm.tick(T0 + 10);
    }
    let calls: usize = vms.iter().map(|vm| vm.calls.len()).sum();
    assert_eq!(calls, 1, "exactly one VM calls the token endpoint");
    assert_eq!(vms[0].sent_refresh_tokens(), vec!["rt-0"]);
    vms[0].answer(T0 + 50, Some(token(1, 3600)));
    for vm in &mut vms {
        vm.tick(T0 + 1000);
    }
    for (index, vm) in vms.iter_mut().enumerate() {
        let verdict = vm.request(T0 + 1100, index as u32 + 1);
        assert_eq!(ready(&verdict), Some((b"Bearer at-1".to_vec(), 1)));
        assert_eq!(vm.gauges.get(&Metric::CredentialAvailable), Some(&1));
    }
    let shared = state(&store);
    assert_eq!(shared.refresh_token, Some(Secret::new("rt-1")));
    assert_eq!(shared.expires_at_ms, T0 + 10 + HOUR);
    assert_eq!(vms[0].count(Metric::TokenRefreshSuccess), 1);
    assert_no_secret_logged(&vms);
}

#[test]
fn proactive_refresh_rotates_and_never_resends_a_spent_refresh_token() {
    let (store, mut vms) = group(2, json!({}));
    vms[0].tick(T0);
    vms[0].answer(T0, Some(token(1, 3600)));
    // Not due yet, 6 minutes before expiry.
    for vm in &mut vms {
        vm.tick(T0 + HOUR - 6 * 60_000);
    }
    assert_eq!(vms[0].calls.len() + vms[1].calls.len(), 1);
    // Due at 5 minutes before expiry; VM 1 ticks first this time.
    let due = T0 + HOUR - 5 * 60_000;
    vms[1].tick(due);
    vms[0].tick(due);
    assert_eq!(vms[1].calls.len(), 1);
    assert_eq!(vms[0].calls.len(), 1, "VM 0 sees the lease and stays out");
    assert_eq!(vms[1].sent_refresh_tokens(), vec!["rt-1"]);
    // Requests keep using the old token while the refresh is in flight.
    assert!(ready(&vms[0].request(due + 5, 9)).is_some());
    vms[1].answer(due + 20, Some(token(2, 3600)));
    vms[0].tick(due + 1000);
    assert_eq!(
        ready(&vms[0].request(due + 1000, 10)),
        Some((b"Bearer at-2".to_vec(), 2))
    );
    assert_eq!(state(&store).refresh_token, Some(Secret::new("rt-2")));
    // Next round: whoever refreshes sends rt-2, and rt-0/rt-1 never again.
    let due = due + HOUR;
    vms[0].tick(due);
    vms[1].tick(due);
    let mut sent: Vec<String> = vms.iter().flat_map(Vm::sent_refresh_tokens).collect();
    sent.sort();
    assert_eq!(
        sent,
        vec!["rt-0", "rt-1", "rt-2"],
        "each refresh token is sent exactly once"
    );
}

#[test]
fn a_provider_that_does_not_rotate_keeps_the_refresh_token() {
    let (store, mut vms) = group(1, json!({}));
    vms[0].tick(T0);
    vms[0].answer(
        T0,
        Some((200, json!({"access_token": "at-1", "expires_in": 600}))),
    );
    assert_eq!(state(&store).refresh_token, Some(Secret::new("rt-0")));
    // Lifetime 10 min, margin 5 min: due at half the lifetime.
    vms[0].tick(T0 + 299_000);
    assert_eq!(vms[0].calls.len(), 1);
    vms[0].tick(T0 + 300_000);
    assert_eq!(vms[0].sent_refresh_tokens(), vec!["rt-0", "rt-0"]);
}

#[test]
fn requests_without_a_token_are_held_then_resumed() {
    let (_, mut vms) = group(2, json!({}));
    assert_eq!(vms[1].request(T0, 7), Verdict::Hold);
    assert_eq!(vms[1].count(Metric::RequestsHeld), 1);
    assert_eq!(vms[1].tick, Some(KICK_TICK));
    vms[0].tick(T0 + 5);
    vms[1].tick(T0 + 10);
    assert_eq!(
        vms[1].tick,
        Some(WAITING_TICK),
        "VM 1 waits for VM 0's refresh"
    );
    assert_eq!(vms[0].calls.len() + vms[1].calls.len(), 1);
    vms[0].answer(T0 + 200, Some(token(1, 3600)));
    assert!(vms[1].resumed.is_empty());
    vms[1].tick(T0 + 210);
    assert_eq!(vms[1].resumed, vec![7]);
    assert!(vms[1].rejected.is_empty());
}

#[test]
fn a_held_request_times_out_after_the_maximum_wait() {
    let (_, mut vms) = group(1, json!({"max_request_wait": "2s"}));
    assert_eq!(vms[0].request(T0, 3), Verdict::Hold);
    vms[0].tick(T0 + 10);
    assert_eq!(vms[0].calls.len(), 1);
    vms[0].tick(T0 + 1_999);
    assert!(vms[0].rejected.is_empty());
    vms[0].tick(T0 + 2_000);
    assert_eq!(vms[0].rejected, vec![(3, NoToken::TimedOut)]);
    assert_eq!(vms[0].count(Metric::RequestsFailedNoToken), 1);
    assert_eq!(vms[0].tick, Some(super::manager::IDLE_TICK));
    vms[0].manager.forget(3);
    assert_eq!(vms[0].manager.held(), 0);
}

#[test]
fn failures_back_off_across_vms_and_keep_the_current_token() {
    let (store, mut vms) = group(2, json!({}));
    vms[0].tick(T0);
    vms[0].answer(T0, Some(token(1, 3600)));
    let due = T0 + HOUR - 5 * 60_000;
    vms[0].tick(due);
    vms[0].answer(due + 10_000, None);
    assert_eq!(vms[0].count(Metric::RefreshFailedTimeout), 1);
    let after = state(&store);
    assert_eq!(after.failures, 1);
    assert!(after.retry_at_ms >= due + 10_000 + 500 && after.retry_at_ms <= due + 11_000);
    // Neither VM retries before retry_at; the old token is still used.
    vms[1].tick(due + 10_001);
    vms[0].tick(due + 10_001);
    assert_eq!(
        vms[0].calls.len() + vms[1].calls.len(),
        2,
        "the first token and the failed refresh"
    );
    assert!(ready(&vms[1].request(due + 10_002, 1)).is_some());
    vms[1].tick(after.retry_at_ms);
    assert_eq!(vms[1].calls.len(), 1);
    vms[1].answer(after.retry_at_ms + 5, Some((503, json!("busy"))));
    assert_eq!(vms[1].count(Metric::RefreshFailedHttpStatus), 1);
    let second = state(&store);
    assert_eq!(second.failures, 2);
    let wait = second.retry_at_ms - (after.retry_at_ms + 5);
    assert!((1_000..=2_000).contains(&wait), "{wait}");
    for (status, body, metric) in [
        (200, json!("not an object"), Metric::RefreshFailedMalformed),
        (
            200,
            json!({"token_type": "Bearer"}),
            Metric::RefreshFailedMissingField,
        ),
        (
            400,
            json!({"error": "invalid_scope"}),
            Metric::RefreshFailedOAuthError,
        ),
    ] {
        let at = state(&store).retry_at_ms;
        vms[1].tick(at);
        vms[1].answer(at + 1, Some((status, body)));
        assert_eq!(vms[1].count(metric), 1, "{metric:?}");
    }
    vms[1].tick(state(&store).retry_at_ms);
    vms[1].answer(state(&store).retry_at_ms, None);
    assert_eq!(vms[1].count(Metric::RefreshFailedUnreachable), 1);
    assert_eq!(
        state(&store).access_token,
        Some(Secret::new("at-1")),
        "the token is kept"
    );
    assert_no_secret_logged(&vms);
}

#[test]
fn a_request_is_refused_at_once_when_the_next_attempt_is_too_far_away() {
    let (store, mut vms) = group(1, json!({"backoff": {"initial": "1m", "max": "10m"}}));
    vms[0].tick(T0);
    vms[0].answer(T0 + 5, Some((500, json!({}))));
    assert!(state(&store).retry_at_ms > T0 + 10_000);
    assert_eq!(
        vms[0].request(T0 + 10, 1),
        Verdict::Unavailable(NoToken::BackingOff)
    );
    assert_eq!(vms[0].count(Metric::RequestsFailedNoToken), 1);
}

#[test]
fn invalid_grant_stops_refreshing_until_the_configuration_changes() {
    let (store, mut vms) = group(2, json!({}));
    assert_eq!(vms[1].request(T0, 5), Verdict::Hold);
    vms[0].tick(T0);
    vms[0].answer(
        T0 + 5,
        Some((
            400,
            json!({"error": "invalid_grant", "error_description": "refresh token rt-0 revoked"}),
        )),
    );
    assert_eq!(state(&store).disabled, Some(FailureReason::InvalidGrant));
    assert_eq!(vms[0].count(Metric::RefreshFailedInvalidGrant), 1);
    assert_eq!(vms[0].gauges.get(&Metric::TokenRefreshDisabled), Some(&1));
    assert!(
        vms[0]
            .log
            .iter()
            .any(|line| line.contains("token refresh disabled") && line.contains("invalid_grant"))
    );
    vms[1].tick(T0 + 100);
    assert_eq!(vms[1].rejected, vec![(5, NoToken::Disabled)]);
    assert!(vms[1].log.iter().any(|line| line.contains("disabled")));
    for vm in &mut vms {
        vm.tick(T0 + 10 * HOUR);
    }
    assert_eq!(
        vms[0].calls.len() + vms[1].calls.len(),
        1,
        "no further attempts"
    );
    assert_eq!(
        vms[0].request(T0 + 10 * HOUR, 6),
        Verdict::Unavailable(NoToken::Disabled)
    );
    // The same configuration restarted does not reset it.
    let mut same = Vm::new(&store, "vm-same", json!({}), "rt-0");
    same.start(T0 + 10 * HOUR);
    assert!(state(&store).disabled.is_some());
    // A new refresh token does, and the old configuration's VMs leave it alone afterwards.
    let mut fixed = Vm::new(&store, "vm-new", json!({}), "rt-fresh");
    fixed.start(T0 + 10 * HOUR);
    let adopted = state(&store);
    assert_eq!(adopted.disabled, None);
    assert_eq!(adopted.refresh_token, Some(Secret::new("rt-fresh")));
    assert_eq!(adopted.retired_seeds.len(), 1);
    let mut old = Vm::new(&store, "vm-old", json!({}), "rt-0");
    old.start(T0 + 10 * HOUR);
    assert_eq!(state(&store).refresh_token, Some(Secret::new("rt-fresh")));
    fixed.tick(T0 + 10 * HOUR + 10);
    assert_eq!(fixed.sent_refresh_tokens(), vec!["rt-fresh"]);
    assert_no_secret_logged(&vms);
}

#[test]
fn a_lease_holder_that_dies_blocks_others_only_until_the_lease_lapses() {
    let (store, mut vms) = group(3, json!({"max_request_wait": "30s"}));
    vms[0].tick(T0);
    assert_eq!(vms[0].calls.len(), 1);
    // VM 0 dies with the call in flight: its manager is gone for good.
    let dead = vms.remove(0);
    drop(dead);
    assert_eq!(vms[0].request(T0 + 1, 1), Verdict::Hold);
    for at in [T0 + 100, T0 + 10_000, T0 + 14_999] {
        vms[0].tick(at);
        vms[1].tick(at);
    }
    assert_eq!(
        vms[0].calls.len() + vms[1].calls.len(),
        0,
        "the lease still holds"
    );
    vms[0].tick(T0 + 15_000);
    vms[1].tick(T0 + 15_000);
    assert_eq!(
        vms[0].calls.len() + vms[1].calls.len(),
        1,
        "one VM takes over"
    );
    let taker = if vms[0].calls.is_empty() { 1 } else { 0 };
    assert_eq!(vms[taker].sent_refresh_tokens(), vec!["rt-0"]);
    vms[taker].answer(T0 + 15_100, Some(token(1, 3600)));
    vms[0].tick(T0 + 15_200);
    assert_eq!(
        vms[0].resumed,
        vec![1],
        "the request held past the takeover resumes"
    );
    assert!(lease_holder(&store).is_empty(), "the lease is released");
}

#[test]
fn a_late_answer_after_a_takeover_is_not_published() {
    let (store, mut vms) = group(2, json!({}));
    vms[0].tick(T0);
    // VM 0's host never answers; VM 1 takes over after the lease lapses and succeeds.
    vms[1].tick(T0 + 15_000);
    vms[1].answer(T0 + 15_010, Some(token(1, 3600)));
    // VM 0 still gets an answer eventually, carrying a different token pair.
    vms[0].answer(T0 + 15_020, Some(token(9, 3600)));
    let shared = state(&store);
    assert_eq!(shared.access_token, Some(Secret::new("at-1")));
    assert_eq!(shared.refresh_token, Some(Secret::new("rt-1")));
    assert!(vms[0].log.iter().any(|line| line.contains("discarded")));
    // A late failure is not recorded against the newer token either.
    let (_, mut more) = (0, Vm::new(&store, "vm-x", json!({}), "rt-0"));
    more.start(T0 + 15_030);
    assert_eq!(state(&store).failures, 0);
}

#[test]
fn an_upstream_401_invalidates_the_token_once() {
    let (store, mut vms) = group(2, json!({"refresh_on_unauthorized": true}));
    vms[0].tick(T0);
    vms[0].answer(T0, Some(token(1, 3600)));
    let now = T0 + 60_000;
    vms[1].tick(now);
    let (_, generation) = ready(&vms[1].request(now, 1)).unwrap();
    vms[1].unauthorized(now + 1, generation);
    vms[0].unauthorized(now + 2, generation);
    assert_eq!(
        vms[1].count(Metric::TokenInvalidated) + vms[0].count(Metric::TokenInvalidated),
        1
    );
    assert_eq!(state(&store).access_token, None);
    assert_eq!(vms[1].tick, Some(KICK_TICK));
    assert_eq!(vms[1].request(now + 3, 2), Verdict::Hold);
    vms[1].tick(now + 10);
    assert_eq!(vms[1].sent_refresh_tokens(), vec!["rt-1"]);
    vms[1].answer(now + 20, Some(token(2, 3600)));
    assert_eq!(vms[1].resumed, vec![2]);
    // A 401 for the new token within the cooldown is ignored; after it, honoured again.
    vms[1].unauthorized(now + 30, generation + 1);
    assert!(state(&store).access_token.is_some());
    vms[1].unauthorized(now + 70_000, generation + 1);
    assert!(state(&store).access_token.is_none());
    // Without the option a 401 changes nothing.
    let (store, mut plain) = group(1, json!({}));
    plain[0].tick(T0);
    plain[0].answer(T0, Some(token(1, 3600)));
    plain[0].unauthorized(T0 + 1, 1);
    assert!(state(&store).access_token.is_some());
}

#[test]
fn a_refused_dispatch_counts_as_a_failure_and_releases_the_lease() {
    let (store, mut vms) = group(1, json!({}));
    vms[0].refuse = true;
    vms[0].tick(T0);
    assert_eq!(vms[0].count(Metric::RefreshFailedDispatch), 1);
    assert_eq!(vms[0].count(Metric::TokenRefreshAttempts), 1);
    assert_eq!(state(&store).failures, 1);
    assert!(lease_holder(&store).is_empty());
    assert!(vms[0].log.iter().any(|line| line.contains("cluster oauth")));
}

#[test]
fn client_credentials_tokens_are_fetched_again_before_expiry() {
    let store = Rc::new(RefCell::new(Store::default()));
    let mut config = config(json!({}));
    config.grant = super::config::Grant::ClientCredentials;
    config.client_secret = Some("S".into());
    let client = Client {
        client_id: "client".into(),
        client_secret: Some(Secret::new("cs")),
        refresh_token: None,
    };
    let mut vm = Vm::new(&store, "vm-cc", json!({}), "unused");
    vm.manager = TokenManager::new(config, client, "Bearer ", "vm-cc".into(), 1);
    vm.start(T0);
    vm.tick(T0);
    assert!(
        vm.calls[0]
            .1
            .body
            .expose()
            .starts_with("grant_type=client_credentials")
    );
    vm.answer(
        T0,
        Some((200, json!({"access_token": "at-cc", "expires_in": 3600}))),
    );
    assert_eq!(state(&store).refresh_token, None);
    vm.tick(T0 + HOUR - 300_000);
    assert_eq!(vm.calls.len(), 2);
}

#[test]
fn unreadable_shared_state_is_replaced() {
    let store = Rc::new(RefCell::new(Store::default()));
    store
        .borrow_mut()
        .set_raw("credential_filter.oauth2.oauth.state", b"garbage", 0)
        .unwrap();
    let mut vm = Vm::new(&store, "vm", json!({}), "rt-0");
    vm.start(T0);
    assert_eq!(state(&store).refresh_token, Some(Secret::new("rt-0")));
    vm.tick(T0);
    assert_eq!(vm.sent_refresh_tokens(), vec!["rt-0"]);
}
