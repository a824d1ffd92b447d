//! One VM's side of the token lifecycle, as a state machine over shared data.
//!
//! Every VM runs a [`TokenManager`]. They coordinate only through two shared
//! data entries (see [`super::state`]): the token state, and a lease that
//! lets exactly one VM talk to the token endpoint at a time. The lease is
//! taken with compare-and-swap and lapses on its own `request_timeout +
//! LEASE_SLACK` after it was taken, so a VM that dies holding it blocks the
//! others only that long. The holder reads the newest refresh token after it
//! took the lease and publishes the rotated one before it lets go, so a
//! refresh token spent by one VM is never sent again by another.
//!
//! The manager does no I/O of its own. Operations whose result steers the
//! next step (reading and compare-and-swapping shared data, starting the http
//! call) go through the [`Host`] port; everything else (resume or refuse a
//! held request, change the tick period, metrics, log lines) comes back as
//! [`Command`]s for the glue to carry out. Time is always an argument, in
//! milliseconds since the Unix epoch.

use std::time::Duration;

use super::backoff::{self, Rng};
use super::config::{Grant, OAuth2Config, show};
use super::endpoint::{
    CallOutcome, Client, FailureReason, IssuedToken, RefreshFailure, TokenRequest, build_request,
    parse_response,
};
use super::fingerprint::fingerprint;
use super::millis;
use super::state::{Keys, Lease, TokenState};
use crate::credential::Credential;
use crate::metrics::Metric;
use crate::secret::Secret;

/// Tick period with nothing to wait for: proactive refresh and new tokens from other VMs are seen
/// within a second.
pub const IDLE_TICK: Duration = Duration::from_secs(1);
/// Tick period while requests are held: they resume within this long after another VM published a token.
pub const WAITING_TICK: Duration = Duration::from_millis(100);
/// Tick period that asks for an attempt soon: only the root context may start http calls whose answer
/// must outlive any one request, so a request that needs a token asks the root this way.
pub const KICK_TICK: Duration = Duration::from_millis(10);
/// How much longer than `request_timeout` a lease lives.
pub const LEASE_SLACK: Duration = Duration::from_secs(5);
/// A token is not used in its last few seconds (at most a quarter of its lifetime).
pub const EXPIRY_SKEW_MS: u64 = 5_000;
/// After an upstream 401 invalidated a token, further 401s are ignored this long, so an upstream that
/// rejects every token cannot drive the token endpoint in a loop.
pub const UNAUTHORIZED_COOLDOWN_MS: u64 = 60_000;
/// Attempts at one compare-and-swap write before giving up.
const CAS_RETRIES: usize = 8;

/// How a shared-data write is conditioned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// Only when the key does not exist yet.
    IfAbsent,
    /// Only when the stored value still has this cas.
    IfCas(u32),
}

/// Why a shared-data write did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetError {
    /// Another VM wrote first.
    CasMismatch,
    /// The host refused the write.
    Failed,
}

/// Why the host refused to start a token request: its proxy-wasm status, the only part of the
/// refusal the host reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// `BadArgument`: an unknown cluster, or headers the host does not accept.
    #[error("BadArgument")]
    BadArgument,
    /// `InternalFailure`: the host could not start the call.
    #[error("InternalFailure")]
    InternalFailure,
    /// A status the ABI does not list for `proxy_http_call`.
    #[error("an unexpected status")]
    Unexpected,
}

/// The host operations the manager needs answers from.
pub trait Host {
    /// A shared-data value and its cas; `None` when the key does not exist.
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Writes a shared-data value under a condition.
    ///
    /// # Errors
    /// [`SetError::CasMismatch`] when the condition does not hold.
    fn set(&mut self, key: &str, value: &[u8], write: Write) -> Result<(), SetError>;
    /// Starts the http call; returns its token.
    ///
    /// # Errors
    /// [`DispatchError`]: the host refused to start it.
    fn dispatch(&mut self, request: &TokenRequest) -> Result<u32, DispatchError>;
}

/// Severity of a log line the manager asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Detail for debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Something failed and will be retried.
    Warn,
    /// Something needs the operator.
    Error,
}

/// Why a request gets no token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoToken {
    /// It waited `max_request_wait` without a token arriving.
    TimedOut,
    /// Refreshing stopped (e.g. `invalid_grant`) and no valid token is left.
    Disabled,
    /// The last attempts failed and the next one is not due before the request's wait would end.
    BackingOff,
}

/// What the glue does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// A held request may go on: inject the current credential and resume it.
    Resume(u32),
    /// A held request gets no token: answer it as the configuration says for a missing credential.
    Reject {
        /// The request's context id.
        context_id: u32,
        /// Why.
        cause: NoToken,
    },
    /// Set the root context's tick period.
    TickPeriod(Duration),
    /// Add to a counter.
    Count(Metric, u64),
    /// Set a gauge.
    Gauge(Metric, u64),
    /// Write a log line (it never contains a token).
    Log(Level, String),
}

/// What a request should do with the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Use this credential.
    Ready {
        /// The header value.
        credential: Credential,
        /// The generation it belongs to, for a later 401.
        generation: u64,
    },
    /// Pause the request; a [`Command::Resume`] or [`Command::Reject`] for it follows.
    Hold,
    /// No token now, and none expected in time.
    Unavailable(NoToken),
}

/// A held request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Waiter {
    context_id: u32,
    deadline_ms: u64,
}

/// This VM's part in a refresh.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Flight {
    /// Not refreshing.
    Idle,
    /// Waiting for the token endpoint; this VM holds the lease.
    Waiting {
        call: u32,
        started_ms: u64,
        generation: u64,
        seed: String,
    },
    /// A new token could not be written to shared data; keep the lease and retry on every tick.
    Unpublished { state: TokenState, generation: u64 },
}

/// Gauges as last reported, to report only changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Gauges {
    available: u64,
    seconds_to_expiry: u64,
    disabled: u64,
}

/// One VM's token lifecycle for one `oauth2` credential.
#[derive(Debug)]
pub struct TokenManager {
    config: OAuth2Config,
    client: Client,
    prefix: String,
    keys: Keys,
    vm: String,
    rng: Rng,
    seed: String,
    view: Option<(u32, TokenState)>,
    unreadable_logged: bool,
    disabled_logged: bool,
    credential: Option<(u64, Credential)>,
    flight: Flight,
    waiters: Vec<Waiter>,
    kick: bool,
    tick: Option<Duration>,
    gauges: Option<Gauges>,
}

impl TokenManager {
    /// A manager for `config`; `vm` identifies this VM in the lease, `random` seeds the backoff jitter.
    pub fn new(
        config: OAuth2Config,
        client: Client,
        prefix: &str,
        vm: String,
        random: u64,
    ) -> Self {
        let seed = fingerprint(&config, &client);
        Self {
            keys: Keys::new(&config.shared_key),
            config,
            client,
            prefix: prefix.to_owned(),
            vm,
            rng: Rng::new(random),
            seed,
            view: None,
            unreadable_logged: false,
            disabled_logged: false,
            credential: None,
            flight: Flight::Idle,
            waiters: Vec::new(),
            kick: false,
            tick: None,
            gauges: None,
        }
    }

    /// The shared-data keys this manager uses.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The configuration fingerprint recorded in the state.
    pub fn seed(&self) -> &str {
        &self.seed
    }

    /// How many requests this VM holds.
    pub fn held(&self) -> usize {
        self.waiters.len()
    }

    /// Called once the plugin is configured: makes sure the shared state exists and belongs to this
    /// configuration, then asks for a first attempt at the next tick when there is no token.
    pub fn start(&mut self, host: &mut dyn Host, now: u64) -> Vec<Command> {
        let mut out = Vec::new();
        self.seed_state(host, &mut out);
        self.load(host, &mut out);
        self.kick = true;
        self.settle(now, &mut out);
        out
    }

    /// The root context's tick: picks up tokens other VMs published, refreshes when due, resumes or
    /// refuses held requests.
    pub fn on_tick(&mut self, host: &mut dyn Host, now: u64) -> Vec<Command> {
        let mut out = Vec::new();
        self.load(host, &mut out);
        if self.view.is_none() {
            self.seed_state(host, &mut out);
            self.load(host, &mut out);
        }
        self.kick = false;
        self.check_flight(host, now, &mut out);
        self.maybe_refresh(host, now, &mut out);
        self.settle(now, &mut out);
        out
    }

    /// A request arrived: use the token, hold the request until one arrives, or give up at once.
    pub fn on_request(
        &mut self,
        host: &mut dyn Host,
        now: u64,
        context_id: u32,
    ) -> (Verdict, Vec<Command>) {
        let mut out = Vec::new();
        self.load(host, &mut out);
        if let Some((credential, generation)) = self.current(now) {
            return (
                Verdict::Ready {
                    credential,
                    generation,
                },
                out,
            );
        }
        let verdict = match self.arrival_outlook(now) {
            Some(cause) => {
                push(&mut out, Command::Count(Metric::RequestsFailedNoToken, 1));
                Verdict::Unavailable(cause)
            }
            None => {
                self.waiters.push(Waiter {
                    context_id,
                    deadline_ms: now.saturating_add(millis(self.config.max_request_wait)),
                });
                push(&mut out, Command::Count(Metric::RequestsHeld, 1));
                self.kick = true;
                Verdict::Hold
            }
        };
        self.settle(now, &mut out);
        (verdict, out)
    }

    /// The token endpoint answered (`Some((status, body))`) or the call failed (`None`).
    pub fn on_response(
        &mut self,
        host: &mut dyn Host,
        now: u64,
        call: u32,
        answer: Option<(u16, Vec<u8>)>,
    ) -> Vec<Command> {
        let mut out = Vec::new();
        match &self.flight {
            Flight::Waiting { call: expected, .. } if *expected == call => {}
            Flight::Waiting { .. } => return out,
            Flight::Idle | Flight::Unpublished { .. } => {
                log(
                    &mut out,
                    Level::Debug,
                    format!(
                        "oauth2: ignoring the answer to call {call}, which this VM no longer waits for"
                    ),
                );
                return out;
            }
        }
        let Flight::Waiting {
            started_ms,
            generation,
            seed,
            ..
        } = std::mem::replace(&mut self.flight, Flight::Idle)
        else {
            return out;
        };
        let outcome = match answer {
            Some((status, body)) => CallOutcome::Response { status, body },
            None => CallOutcome::NoResponse {
                // proxy-wasm reports a timeout and a refused connection alike; the clock tells them apart.
                timed_out: now.saturating_add(50)
                    >= started_ms.saturating_add(millis(self.config.request_timeout)),
            },
        };
        let secrets = self.known_secrets();
        let secret_refs: Vec<&Secret> = secrets.iter().collect();
        match parse_response(&outcome, &secret_refs) {
            Ok(issued) => {
                push(&mut out, Command::Count(Metric::TokenRefreshSuccess, 1));
                self.publish_success(host, now, started_ms, generation, &seed, issued, &mut out);
            }
            Err(failure) => self.record_failure(host, now, generation, &seed, &failure, &mut out),
        }
        if matches!(self.flight, Flight::Idle) {
            self.release_lease(host);
        }
        self.load(host, &mut out);
        self.settle(now, &mut out);
        out
    }

    /// The upstream answered 401 to a request sent with token `generation`.
    pub fn on_unauthorized(
        &mut self,
        host: &mut dyn Host,
        now: u64,
        generation: u64,
    ) -> Vec<Command> {
        let mut out = Vec::new();
        if !self.config.refresh_on_unauthorized {
            return out;
        }
        for _ in 0..CAS_RETRIES {
            let Some((cas, state)) = self.read_state(host) else {
                return out;
            };
            if state.generation != generation || state.access_token.is_none() {
                return out;
            }
            if now
                < state
                    .unauthorized_at_ms
                    .saturating_add(UNAUTHORIZED_COOLDOWN_MS)
            {
                log_text(
                    &mut out,
                    Level::Debug,
                    "oauth2: upstream answered 401 again within the cooldown; the token is kept",
                );
                return out;
            }
            let invalidated = TokenState {
                access_token: None,
                expires_at_ms: 0,
                unauthorized_at_ms: now,
                ..state
            };
            match host.set(&self.keys.state, &invalidated.encode(), Write::IfCas(cas)) {
                Ok(()) => {
                    push(&mut out, Command::Count(Metric::TokenInvalidated, 1));
                    log(
                        &mut out,
                        Level::Warn,
                        format!(
                            "oauth2: upstream answered 401 to token generation {generation}; the token is dropped and a new one requested"
                        ),
                    );
                    self.kick = true;
                    self.load(host, &mut out);
                    self.settle(now, &mut out);
                    return out;
                }
                Err(SetError::CasMismatch) => {}
                Err(SetError::Failed) => return out,
            }
        }
        out
    }

    /// A held request ended on its own (the client went away): stop tracking it.
    pub fn forget(&mut self, context_id: u32) {
        self.waiters
            .retain(|waiter| waiter.context_id != context_id);
    }

    /// The credential to inject now, with its generation, if the current token is usable.
    pub fn current(&mut self, now: u64) -> Option<(Credential, u64)> {
        let (_, state) = self.view.as_ref()?;
        if !usable(state, now) {
            return None;
        }
        let generation = state.generation;
        if let Some((cached, credential)) = &self.credential
            && *cached == generation
        {
            return Some((credential.clone(), generation));
        }
        let credential = Credential::new(&self.prefix, state.access_token.as_ref()?);
        self.credential = Some((generation, credential.clone()));
        Some((credential, generation))
    }

    // ------------------------------------------------------------------
    // Shared state
    // ------------------------------------------------------------------

    #[inline(never)]
    fn read_state(&self, host: &dyn Host) -> Option<(u32, TokenState)> {
        let (bytes, cas) = host.get(&self.keys.state)?;
        TokenState::decode(&bytes).ok().map(|state| (cas, state))
    }

    /// Refreshes the local view of the state when its cas changed.
    fn load(&mut self, host: &dyn Host, out: &mut Vec<Command>) {
        let Some((bytes, cas)) = host.get(&self.keys.state) else {
            self.view = None;
            return;
        };
        if self.view.as_ref().is_some_and(|(seen, _)| *seen == cas) {
            return;
        }
        match TokenState::decode(&bytes) {
            Ok(state) => {
                self.unreadable_logged = false;
                self.view = Some((cas, state));
            }
            Err(problem) => {
                if !self.unreadable_logged {
                    log(
                        out,
                        Level::Warn,
                        format!(
                            "oauth2: shared data {}: {problem}; it will be replaced",
                            self.keys.state
                        ),
                    );
                    self.unreadable_logged = true;
                }
                self.view = None;
            }
        }
    }

    /// Creates the state for this configuration, or takes it over when the configuration changed.
    fn seed_state(&mut self, host: &mut dyn Host, out: &mut Vec<Command>) {
        for _ in 0..CAS_RETRIES {
            let existing = host.get(&self.keys.state);
            let (write, value, message) = match &existing {
                None => (
                    Write::IfAbsent,
                    TokenState::seeded(&self.seed, self.client.refresh_token.clone()),
                    None,
                ),
                Some((bytes, cas)) => match TokenState::decode(bytes) {
                    Ok(state) if state.seed == self.seed => return,
                    Ok(state) if state.retired_seeds.contains(&self.seed) => {
                        log_text(
                            out,
                            Level::Warn,
                            "oauth2: a newer configuration has replaced this one's credential; this VM uses the newer tokens until it is reconfigured",
                        );
                        return;
                    }
                    Ok(state) => (
                        Write::IfCas(*cas),
                        state.adopted_by(&self.seed, self.client.refresh_token.clone()),
                        Some(
                            "oauth2: the configuration changed (new refresh token, client or scopes): the token state starts afresh from it",
                        ),
                    ),
                    Err(_) => (
                        Write::IfCas(*cas),
                        TokenState::seeded(&self.seed, self.client.refresh_token.clone()),
                        None,
                    ),
                },
            };
            match host.set(&self.keys.state, &value.encode(), write) {
                Ok(()) => {
                    if let Some(message) = message {
                        log_text(out, Level::Info, message);
                    }
                    return;
                }
                Err(SetError::CasMismatch) => {}
                Err(SetError::Failed) => break,
            }
        }
        log(
            out,
            Level::Error,
            format!("oauth2: cannot write shared data {}", self.keys.state),
        );
    }

    // ------------------------------------------------------------------
    // Lease
    // ------------------------------------------------------------------

    fn lease_ms(&self) -> u64 {
        millis(self.config.request_timeout).saturating_add(millis(LEASE_SLACK))
    }

    #[inline(never)]
    fn read_lease(&self, host: &dyn Host) -> Option<(Lease, u32)> {
        host.get(&self.keys.lease)
            .map(|(bytes, cas)| (Lease::decode(&bytes), cas))
    }

    /// Takes (or renews) the lease; true when this VM holds it afterwards.
    fn acquire_lease(&self, host: &mut dyn Host, now: u64) -> bool {
        let mine = Lease {
            holder: self.vm.clone(),
            until_ms: now.saturating_add(self.lease_ms()),
        }
        .encode();
        let written = match self.read_lease(host) {
            None => host.set(&self.keys.lease, &mine, Write::IfAbsent),
            Some((lease, cas)) if lease.available_to(&self.vm, now) => {
                host.set(&self.keys.lease, &mine, Write::IfCas(cas))
            }
            Some(_) => return false,
        };
        // Read back: only the value that is stored counts.
        written.is_ok()
            && self
                .read_lease(host)
                .is_some_and(|(lease, _)| lease.holder == self.vm)
    }

    fn release_lease(&self, host: &mut dyn Host) {
        if let Some((lease, cas)) = self.read_lease(host)
            && lease.holder == self.vm
        {
            // A mismatch means another VM took a lapsed lease: it is theirs now.
            let _ = host.set(
                &self.keys.lease,
                &Lease::default().encode(),
                Write::IfCas(cas),
            );
        }
    }

    // ------------------------------------------------------------------
    // Refresh
    // ------------------------------------------------------------------

    /// Whether a new token should be requested now according to `state`.
    #[inline(never)]
    fn wants_refresh(&self, state: &TokenState, now: u64) -> bool {
        let has_grant = match self.config.grant {
            Grant::RefreshToken { .. } => state.refresh_token.is_some(),
            Grant::ClientCredentials => true,
        };
        let due = match state.access_token {
            None => true,
            Some(_) => now >= refresh_at(state, millis(self.config.refresh_before_expiry)),
        };
        has_grant && due && state.disabled.is_none() && now >= state.retry_at_ms
    }

    fn maybe_refresh(&mut self, host: &mut dyn Host, now: u64, out: &mut Vec<Command>) {
        if !matches!(self.flight, Flight::Idle) {
            return;
        }
        let wanted = self
            .view
            .as_ref()
            .is_some_and(|(_, state)| self.wants_refresh(state, now));
        if !wanted || !self.acquire_lease(host, now) {
            return;
        }
        // The previous holder may have published a token between our read and our lease: read again.
        let fresh = self.read_state(host);
        let Some((_, state)) = fresh.filter(|(_, state)| self.wants_refresh(state, now)) else {
            self.release_lease(host);
            return;
        };
        let refresh_token = match self.config.grant {
            Grant::RefreshToken { .. } => state.refresh_token.clone(),
            Grant::ClientCredentials => None,
        };
        let request = build_request(&self.config, &self.client, refresh_token.as_ref());
        push(out, Command::Count(Metric::TokenRefreshAttempts, 1));
        match host.dispatch(&request) {
            Ok(call) => {
                log(
                    out,
                    Level::Debug,
                    format!(
                        "oauth2: requesting a token from cluster {} (generation {}, {})",
                        self.config.endpoint.cluster,
                        state.generation,
                        if state.access_token.is_some() {
                            "proactive"
                        } else {
                            "no valid token"
                        }
                    ),
                );
                self.flight = Flight::Waiting {
                    call,
                    started_ms: now,
                    generation: state.generation,
                    seed: state.seed.clone(),
                };
            }
            Err(why) => {
                let failure = RefreshFailure::new(
                    FailureReason::Dispatch,
                    format!(
                        "the host refused the call to cluster {}: {why}",
                        self.config.endpoint.cluster
                    ),
                );
                self.record_failure(host, now, state.generation, &state.seed, &failure, out);
                self.release_lease(host);
                self.load(host, out);
            }
        }
    }

    /// Gives up on a call the host never answered, and retries a publication that failed.
    fn check_flight(&mut self, host: &mut dyn Host, now: u64, out: &mut Vec<Command>) {
        match &self.flight {
            Flight::Idle => {}
            Flight::Waiting { started_ms, .. } => {
                if now >= started_ms.saturating_add(self.lease_ms()) {
                    log_text(
                        out,
                        Level::Warn,
                        "oauth2: the host never reported the end of the token request; giving up on it",
                    );
                    self.flight = Flight::Idle;
                }
            }
            Flight::Unpublished { .. } => {
                let Flight::Unpublished { state, generation } =
                    std::mem::replace(&mut self.flight, Flight::Idle)
                else {
                    return;
                };
                if !self.acquire_lease(host, now) {
                    log_text(
                        out,
                        Level::Error,
                        "oauth2: lost the lease before the new token could be published; it is discarded",
                    );
                    return;
                }
                self.publish(host, state, generation, out);
                if matches!(self.flight, Flight::Idle) {
                    self.release_lease(host);
                }
                self.load(host, out);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn publish_success(
        &mut self,
        host: &mut dyn Host,
        now: u64,
        started_ms: u64,
        generation: u64,
        seed: &str,
        issued: IssuedToken,
        out: &mut Vec<Command>,
    ) {
        let Some((_, current)) = self.read_state(host) else {
            return;
        };
        if current.generation != generation || current.seed != seed {
            log_text(
                out,
                Level::Warn,
                "oauth2: the token state changed while this refresh was in flight (configuration change or another VM); its result is discarded",
            );
            return;
        }
        let lifetime = issued.expires_in.unwrap_or(self.config.default_expires_in);
        let rotated = issued.refresh_token.is_some();
        let next = TokenState {
            generation: generation.saturating_add(1),
            access_token: Some(issued.access_token),
            expires_at_ms: started_ms.saturating_add(millis(lifetime)),
            obtained_at_ms: started_ms,
            refresh_token: issued.refresh_token.or(current.refresh_token.clone()),
            disabled: None,
            failures: 0,
            retry_at_ms: 0,
            ..current
        };
        let message = format!(
            "oauth2: new token (generation {}), valid for {}{}; fetched in {} ms",
            next.generation,
            show(Duration::from_secs(lifetime.as_secs())),
            if rotated {
                ", refresh token rotated"
            } else {
                ""
            },
            now.saturating_sub(started_ms),
        );
        self.publish(host, next, generation, out);
        log(out, Level::Info, message);
    }

    /// Writes a new state unless its generation was overtaken; on a host failure keeps it for later.
    fn publish(
        &mut self,
        host: &mut dyn Host,
        next: TokenState,
        generation: u64,
        out: &mut Vec<Command>,
    ) {
        for _ in 0..CAS_RETRIES {
            let Some((cas, current)) = self.read_state(host) else {
                break;
            };
            if current.generation != generation || current.seed != next.seed {
                return;
            }
            // Keep what others recorded meanwhile (a 401 invalidation time).
            let merged = TokenState {
                unauthorized_at_ms: current.unauthorized_at_ms.max(next.unauthorized_at_ms),
                ..next.clone()
            };
            match host.set(&self.keys.state, &merged.encode(), Write::IfCas(cas)) {
                Ok(()) => return,
                Err(SetError::CasMismatch) => {}
                Err(SetError::Failed) => break,
            }
        }
        log_text(
            out,
            Level::Error,
            "oauth2: could not publish the new token to shared data; keeping the lease and retrying",
        );
        self.flight = Flight::Unpublished {
            state: next,
            generation,
        };
    }

    fn record_failure(
        &mut self,
        host: &mut dyn Host,
        now: u64,
        generation: u64,
        seed: &str,
        failure: &RefreshFailure,
        out: &mut Vec<Command>,
    ) {
        push(out, Command::Count(failure_metric(failure.reason), 1));
        let disable = failure.reason == FailureReason::InvalidGrant;
        for _ in 0..CAS_RETRIES {
            let Some((cas, current)) = self.read_state(host) else {
                return;
            };
            if current.generation != generation || current.seed != seed {
                // A newer token or configuration arrived meanwhile: this failure is about the past.
                return;
            }
            let failures = current.failures.saturating_add(1);
            let delay = backoff::delay(&self.config.backoff, failures, &mut self.rng);
            let next = TokenState {
                failures,
                retry_at_ms: now.saturating_add(millis(delay)),
                disabled: if disable {
                    Some(failure.reason)
                } else {
                    current.disabled
                },
                ..current.clone()
            };
            match host.set(&self.keys.state, &next.encode(), Write::IfCas(cas)) {
                Ok(()) => {
                    out.push(self.failure_log(&current, now, failure, delay, failures));
                    if disable {
                        self.disabled_logged = true;
                    }
                    return;
                }
                Err(SetError::CasMismatch) => {}
                Err(SetError::Failed) => break,
            }
        }
        log(
            out,
            Level::Warn,
            format!(
                "oauth2: token request failed ({}): {}",
                failure.reason.name(),
                failure.detail
            ),
        );
    }

    fn failure_log(
        &self,
        state: &TokenState,
        now: u64,
        failure: &RefreshFailure,
        delay: Duration,
        failures: u32,
    ) -> Command {
        let remaining = match &state.access_token {
            Some(_) if state.expires_at_ms > now => format!(
                "the current token stays in use for {} s",
                (state.expires_at_ms - now) / 1000
            ),
            _ => "there is no valid token until a request succeeds".to_owned(),
        };
        if failure.reason == FailureReason::InvalidGrant {
            return Command::Log(
                Level::Error,
                format!(
                    "oauth2: token refresh disabled: the token endpoint rejected the grant (invalid_grant: {}); {remaining}; configure a new refresh token to resume",
                    failure.detail
                ),
            );
        }
        Command::Log(
            Level::Warn,
            format!(
                "oauth2: token request failed ({}): {}; attempt {failures}, next in {} ms; {remaining}",
                failure.reason.name(),
                failure.detail,
                millis(delay)
            ),
        )
    }

    /// Secrets an endpoint might echo back, to strip from quoted error text.
    fn known_secrets(&self) -> Vec<Secret> {
        let mut secrets: Vec<Secret> = self.client.client_secret.iter().cloned().collect();
        secrets.extend(self.client.refresh_token.iter().cloned());
        if let Some((_, state)) = &self.view {
            secrets.extend(state.refresh_token.iter().cloned());
            secrets.extend(state.access_token.iter().cloned());
        }
        secrets
    }

    // ------------------------------------------------------------------
    // Held requests, ticks, gauges
    // ------------------------------------------------------------------

    /// `None` when a request without a token should wait; otherwise why it should not.
    fn arrival_outlook(&self, now: u64) -> Option<NoToken> {
        let Some((_, state)) = &self.view else {
            // The state is being (re)created; the next tick starts an attempt.
            return None;
        };
        if state.disabled.is_some() {
            return Some(NoToken::Disabled);
        }
        let deadline = now.saturating_add(millis(self.config.max_request_wait));
        if !matches!(self.flight, Flight::Idle) || state.retry_at_ms <= deadline {
            None
        } else {
            Some(NoToken::BackingOff)
        }
    }

    /// Resumes or refuses held requests, sets the tick period and reports gauges.
    fn settle(&mut self, now: u64, out: &mut Vec<Command>) {
        let usable_now = self.current(now).is_some();
        let (disabled, retry_at) = match &self.view {
            Some((_, state)) => (state.disabled, state.retry_at_ms),
            None => (None, 0),
        };
        if let Some(reason) = disabled
            && !self.disabled_logged
        {
            log(
                out,
                Level::Error,
                format!(
                    "oauth2: token refresh is disabled ({}) until the configuration changes; requests get 503 once the current token expires",
                    reason.name()
                ),
            );
            self.disabled_logged = true;
        }
        if disabled.is_none() {
            self.disabled_logged = false;
        }
        let idle = matches!(self.flight, Flight::Idle);
        let waiters = std::mem::take(&mut self.waiters);
        for waiter in waiters {
            let cause = if usable_now {
                push(out, Command::Resume(waiter.context_id));
                continue;
            } else if disabled.is_some() {
                NoToken::Disabled
            } else if waiter.deadline_ms <= now {
                NoToken::TimedOut
            } else if idle && retry_at > waiter.deadline_ms {
                NoToken::BackingOff
            } else {
                self.waiters.push(waiter);
                continue;
            };
            push(out, Command::Count(Metric::RequestsFailedNoToken, 1));
            push(
                out,
                Command::Reject {
                    context_id: waiter.context_id,
                    cause,
                },
            );
        }
        let tick = if self.kick && idle {
            KICK_TICK
        } else if self.waiters.is_empty() {
            IDLE_TICK
        } else {
            WAITING_TICK
        };
        if self.tick != Some(tick) {
            self.tick = Some(tick);
            push(out, Command::TickPeriod(tick));
        }
        let gauges = Gauges {
            available: u64::from(usable_now),
            seconds_to_expiry: match &self.view {
                Some((_, state)) if state.access_token.is_some() => {
                    state.expires_at_ms.saturating_sub(now) / 1000
                }
                _ => 0,
            },
            disabled: u64::from(disabled.is_some()),
        };
        let last = self.gauges.replace(gauges);
        if last.map(|g| g.available) != Some(gauges.available) {
            push(
                out,
                Command::Gauge(Metric::CredentialAvailable, gauges.available),
            );
        }
        if last.map(|g| g.seconds_to_expiry) != Some(gauges.seconds_to_expiry) {
            push(
                out,
                Command::Gauge(Metric::TokenSecondsToExpiry, gauges.seconds_to_expiry),
            );
        }
        if last.map(|g| g.disabled) != Some(gauges.disabled) {
            push(
                out,
                Command::Gauge(Metric::TokenRefreshDisabled, gauges.disabled),
            );
        }
    }
}

/// Asks for a log line. Out of line: each of the manager's log lines would otherwise carry its own
/// copy of the push.
#[inline(never)]
fn log(out: &mut Vec<Command>, level: Level, line: String) {
    push(out, Command::Log(level, line));
}

/// Adds a command. Out of line, like [`log`].
#[inline(never)]
fn push(out: &mut Vec<Command>, command: Command) {
    out.push(command);
}

/// Asks for a fixed log line.
#[inline(never)]
fn log_text(out: &mut Vec<Command>, level: Level, line: &str) {
    log(out, level, line.to_owned());
}

/// When a proactive refresh is due: `margin` before expiry, but no earlier than half the lifetime.
fn refresh_at(state: &TokenState, margin_ms: u64) -> u64 {
    state
        .expires_at_ms
        .saturating_sub(margin_ms.min(state.lifetime_ms() / 2))
}

/// Whether the state's token may be sent at `now`.
fn usable(state: &TokenState, now: u64) -> bool {
    let skew = EXPIRY_SKEW_MS.min(state.lifetime_ms() / 4);
    state.access_token.is_some() && now.saturating_add(skew) < state.expires_at_ms
}

/// The failure counter of a reason.
pub fn failure_metric(reason: FailureReason) -> Metric {
    match reason {
        FailureReason::Dispatch => Metric::RefreshFailedDispatch,
        FailureReason::Timeout => Metric::RefreshFailedTimeout,
        FailureReason::Unreachable => Metric::RefreshFailedUnreachable,
        FailureReason::HttpStatus => Metric::RefreshFailedHttpStatus,
        FailureReason::Malformed => Metric::RefreshFailedMalformed,
        FailureReason::MissingField => Metric::RefreshFailedMissingField,
        FailureReason::InvalidGrant => Metric::RefreshFailedInvalidGrant,
        FailureReason::OAuthError => Metric::RefreshFailedOAuthError,
    }
}
