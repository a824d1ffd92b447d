//! Timers on the plugin's clock: ticks, http-call outcomes and timeouts, queue notifications.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{MAX_TIMER_ROUNDS, Pick, Vm, len_u32};
use crate::clock::duration_nanos;
use crate::error::HarnessError;
use crate::http_call::{HttpCallFailure, HttpCallResponse, PendingHttpCall};
use crate::logs::LogLevel;
use crate::state::DeliveredResponse;

impl Vm {
    /// The tick period the plugin set, if ticks are on.
    pub fn tick_period(&self) -> Option<Duration> {
        let period = self.live.as_ref()?.store.data().ticks.period_nanos;
        (period > 0).then(|| Duration::from_nanos(period))
    }

    /// When the next timer (tick, http-call response or timeout, queue notification, or the reload of a
    /// failed VM under `FailReload`) is due, in nanoseconds since the epoch on the plugin's clock.
    pub fn next_due_nanos(&self) -> Option<u64> {
        let Some(instance) = self.live.as_ref() else {
            // The reload is a timer too, so an embedder's timer loop restarts the VM (and its ticks, which
            // may refresh state the next request needs) without waiting for a request.
            return self.reload_due();
        };
        let state = instance.store.data();
        let calls = state
            .http
            .in_flight
            .values()
            .filter_map(|call| call.next_due());
        let queued = self.queues.has_ready().then(|| self.now_nanos());
        state
            .ticks
            .next_due
            .into_iter()
            .chain(calls)
            .chain(queued)
            .min()
    }

    /// When the next timer is due, for an embedder on the system clock that sleeps until then.
    pub fn next_deadline(&self) -> Option<SystemTime> {
        self.next_due_nanos()
            .map(|nanos| UNIX_EPOCH + Duration::from_nanos(nanos))
    }

    /// Fires everything due by the plugin clock's "now": ticks, mock http-call outcomes, timeouts, queue
    /// notifications. Traps fail the VM as usual.
    pub fn run_timers(&mut self) {
        let now = self.now_nanos();
        self.fire_due(now);
    }

    /// Moves the manual clock forward by `by`, firing every timer that falls due on the way at its own
    /// time, in order.
    ///
    /// # Errors
    /// [`HarnessError::NotManualClock`] when the plugin runs on the system clock.
    pub fn advance(&mut self, by: Duration) -> Result<(), HarnessError> {
        let manual = self
            .plugin
            .clock()
            .as_manual()
            .cloned()
            .ok_or(HarnessError::NotManualClock("Vm::advance"))?;
        let target = manual.now_nanos().saturating_add(duration_nanos(by));
        let mut rounds = 0usize;
        while let Some(due) = self.next_due_nanos().filter(|due| *due <= target) {
            manual.set_nanos(due);
            if !self.fire_due(manual.now_nanos()) {
                break;
            }
            rounds += 1;
            if rounds >= MAX_TIMER_ROUNDS {
                self.host_log(
                    LogLevel::Warn,
                    format!("host: stopped advancing after {rounds} timer rounds"),
                );
                break;
            }
        }
        manual.set_nanos(target);
        self.fire_due(target);
        Ok(())
    }

    /// Fires what is due at `now`; returns whether anything fired.
    pub(crate) fn fire_due(&mut self, now: u64) -> bool {
        let mut fired = false;
        if self.live.is_none() && self.reload_due().is_some_and(|due| due <= now) {
            // A failed reload schedules the next attempt, which is a later timer: this round still counts.
            self.maybe_reload();
            fired = true;
        }
        for queue_id in self.queues.take_ready() {
            let Some(instance) = self.live.as_mut() else {
                break;
            };
            let root = instance.root_id;
            let func: Pick<_, _> = |callbacks| callbacks.on_queue_ready.as_ref();
            fired = true;
            if let Err(trap) = instance.invoke(
                &self.plugin,
                &self.log,
                "proxy_on_queue_ready",
                root,
                func,
                (root, queue_id),
            ) {
                self.fail(trap, None);
            }
            self.settle();
        }
        loop {
            let Some(instance) = self.live.as_mut() else {
                return fired;
            };
            let state = instance.store.data();
            let tick = state.ticks.next_due.filter(|due| *due <= now);
            let call = state
                .http
                .in_flight
                .iter()
                .filter_map(|(token, call)| {
                    call.next_due()
                        .filter(|due| *due <= now)
                        .map(|due| (due, *token))
                })
                .min();
            match (tick, call) {
                (None, None) => return fired,
                (Some(tick_due), Some((call_due, token))) if call_due < tick_due => {
                    self.fire_call(token)
                }
                (Some(tick_due), _) => self.fire_tick(tick_due, now),
                (None, Some((_, token))) => self.fire_call(token),
            }
            fired = true;
        }
    }

    fn fire_tick(&mut self, due: u64, now: u64) {
        let Some(instance) = self.live.as_mut() else {
            return;
        };
        let ticks = &mut instance.store.data_mut().ticks;
        let next = due.saturating_add(ticks.period_nanos);
        ticks.next_due = Some(if next > now {
            next
        } else {
            now.saturating_add(ticks.period_nanos)
        });
        let root = instance.root_id;
        let func: Pick<_, _> = |callbacks| callbacks.on_tick.as_ref();
        if let Err(trap) =
            instance.invoke(&self.plugin, &self.log, "proxy_on_tick", root, func, root)
        {
            self.fail(trap, None);
        }
        self.settle();
    }

    fn fire_call(&mut self, token: u32) {
        let Some(instance) = self.live.as_mut() else {
            return;
        };
        let http = &mut instance.store.data_mut().http;
        let Some(call) = http.in_flight.remove(&token) else {
            return;
        };
        http.for_embedder.retain(|pending| pending.token != token);
        let outcome = match call.mock_outcome {
            Some((due, outcome)) if call.deadline.is_none_or(|deadline| due <= deadline) => outcome,
            _ => Err(HttpCallFailure::Timeout),
        };
        self.deliver(token, outcome);
    }

    fn deliver(&mut self, token: u32, outcome: Result<HttpCallResponse, HttpCallFailure>) {
        let Some(instance) = self.live.as_mut() else {
            return;
        };
        let delivered = DeliveredResponse::from_outcome(outcome, self.plugin.shared.failed_calls);
        let counts = (
            len_u32(delivered.headers.len()),
            len_u32(delivered.body.len()),
            len_u32(delivered.trailers.len()),
        );
        instance.store.data_mut().http.delivering = Some(delivered);
        let root = instance.root_id;
        let func: Pick<_, _> = |callbacks| callbacks.on_http_call_response.as_ref();
        let result = instance.invoke(
            &self.plugin,
            &self.log,
            "proxy_on_http_call_response",
            root,
            func,
            (root, token, counts.0, counts.1, counts.2),
        );
        instance.store.data_mut().http.delivering = None;
        if let Err(trap) = result {
            self.fail(trap, None);
        }
        self.settle();
    }

    /// Http calls to embedder clusters dispatched since the last take; perform each and hand the outcome
    /// back with [`Vm::deliver_http_call_response`].
    pub fn take_pending_http_calls(&mut self) -> Vec<PendingHttpCall> {
        self.live
            .as_mut()
            .map(|instance| std::mem::take(&mut instance.store.data_mut().http.for_embedder))
            .unwrap_or_default()
    }

    /// How many http calls wait for an outcome.
    pub fn http_calls_in_flight(&self) -> usize {
        self.live
            .as_ref()
            .map_or(0, |instance| instance.store.data().http.in_flight.len())
    }

    /// Delivers the outcome of an http call to `proxy_on_http_call_response` (a failure arrives as a
    /// response without headers, as in Envoy).
    ///
    /// # Errors
    /// [`HarnessError::UnknownHttpCall`] when no call with this token waits (unknown, timed out, or the VM
    /// failed since).
    pub fn deliver_http_call_response(
        &mut self,
        token: u32,
        outcome: Result<HttpCallResponse, HttpCallFailure>,
    ) -> Result<(), HarnessError> {
        let Some(instance) = self.live.as_mut() else {
            return Err(HarnessError::UnknownHttpCall(token));
        };
        let http = &mut instance.store.data_mut().http;
        if http.in_flight.remove(&token).is_none() {
            return Err(HarnessError::UnknownHttpCall(token));
        }
        http.for_embedder.retain(|pending| pending.token != token);
        self.deliver(token, outcome);
        Ok(())
    }
}
