//! Failure policies: what a trap means for the stream it happened in, for the VM's other streams, and for
//! later streams.

use std::time::Duration;

use host_harness::{Action, FailurePolicy, ManualClock, Plugin, ReloadBackoff, StreamEvent};

use crate::support::{StartVm, get, module, said};

/// Traps on request headers when the path is "/boom"; pauses on "/hold"; continues (and says so) otherwise.
const FRAGILE: &str = r#"
  (data (i32.const 0) ":path")
  (data (i32.const 16) "passed")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $proxy_get_header_map_value (i32.const 0) (i32.const 0) (i32.const 5) (i32.const 1024) (i32.const 1028)))
    (if (i32.eq (i32.load (i32.const 1028)) (i32.const 5)) (then
      (if (i32.eq (i32.load8_u (i32.add (i32.load (i32.const 1024)) (i32.const 1))) (i32.const 98)) (then unreachable))
      (return (i32.const 1))))
    (call $say (i32.const 16) (i32.const 6))
    (i32.const 0))
"#;

fn fragile(policy: FailurePolicy, clock: &ManualClock) -> Plugin {
    Plugin::builder()
        .module_bytes(module(FRAGILE))
        .clock(clock.clone())
        .failure_policy(policy)
        .reload_backoff(ReloadBackoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
        })
        .build()
        .unwrap()
}

#[test]
fn fail_closed_answers_503_for_the_trapping_stream_the_held_ones_and_every_later_one() {
    let clock = ManualClock::new();
    let mut vm = fragile(FailurePolicy::FailClosed, &clock)
        .start_vm()
        .unwrap();
    let held = vm.create_stream(Default::default()).unwrap();
    assert_eq!(
        vm.request_headers(held, get("/hold").into(), true).unwrap(),
        Action::Pause
    );
    let boom = vm.create_stream(Default::default()).unwrap();
    assert_eq!(
        vm.request_headers(boom, get("/boom").into(), true).unwrap(),
        Action::Pause
    );
    assert!(vm.is_failed());
    for id in [held, boom] {
        let local = vm.stream_state(id).unwrap().local_response().unwrap();
        assert_eq!(
            (local.status, local.details.as_str()),
            (503, "wasm_fail_stream")
        );
    }
    assert_eq!(
        vm.take_stream_events(),
        [StreamEvent::LocalResponse(held)],
        "the held stream learns through an event"
    );
    let mut later = vm.stream().unwrap();
    assert_eq!(
        later.request_headers(get("/ok"), true).unwrap(),
        Action::Pause
    );
    assert_eq!(later.local_response().unwrap().status, 503);
    later.finish().unwrap();
    clock.advance(Duration::from_secs(3600));
    assert!(
        vm.stream().unwrap().local_response().is_some(),
        "fail-closed never reloads"
    );
}

#[test]
fn fail_open_answers_the_trapping_stream_with_503_and_skips_the_filter_for_the_others() {
    let clock = ManualClock::new();
    let mut vm = fragile(FailurePolicy::FailOpen, &clock).start_vm().unwrap();
    let held = vm.create_stream(Default::default()).unwrap();
    vm.request_headers(held, get("/hold").into(), false)
        .unwrap();
    let mut boom = vm.stream().unwrap();
    assert_eq!(
        boom.request_headers(get("/boom"), false).unwrap(),
        Action::Pause
    );
    assert_eq!(
        boom.local_response().unwrap().status,
        503,
        "as Envoy, even under fail-open"
    );
    boom.finish().unwrap();
    assert_eq!(vm.take_stream_events(), [StreamEvent::RequestResumed(held)]);
    assert!(vm.stream_state(held).unwrap().is_bypassed());
    assert_eq!(
        vm.request_body(held, b"data", true).unwrap().forward,
        b"data"
    );
    let mut later = vm.stream().unwrap();
    assert_eq!(
        later.request_headers(get("/ok"), true).unwrap(),
        Action::Continue
    );
    assert!(later.local_response().is_none());
    assert!(said(&mut vm).is_empty(), "the filter did not run");
}

#[test]
fn fail_reload_starts_a_fresh_vm_after_the_backoff_and_fails_closed_meanwhile() {
    let clock = ManualClock::new();
    let mut vm = fragile(FailurePolicy::FailReload, &clock)
        .start_vm()
        .unwrap();
    vm.stream()
        .unwrap()
        .request_headers(get("/boom"), true)
        .unwrap();
    assert!(vm.is_failed());
    clock.advance(Duration::from_millis(999));
    assert_eq!(
        vm.stream()
            .unwrap()
            .local_response()
            .map(|local| local.status),
        Some(503)
    );
    clock.advance(Duration::from_millis(1));
    let mut stream = vm.stream().unwrap();
    assert_eq!(
        stream.request_headers(get("/ok"), true).unwrap(),
        Action::Continue
    );
    assert!(!vm.is_failed());
    assert_eq!(vm.failure_count(), 1);
    assert!(
        vm.logs()
            .iter()
            .any(|record| record.message == "host: VM reloaded after a failure")
    );
    assert_eq!(said(&mut vm), ["passed"]);
}

#[test]
fn reload_backoff_doubles_up_to_its_maximum() {
    let backoff = ReloadBackoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(4),
    };
    let delays: Vec<u64> = (1..=5)
        .map(|failures| backoff.delay(failures).as_secs())
        .collect();
    assert_eq!(delays, [1, 2, 4, 4, 4]);
}

#[test]
fn a_trap_in_a_timer_fails_the_vm_and_its_held_streams_learn_through_events() {
    let clock = ManualClock::new();
    let wat = module(&format!(
        "{FRAGILE}{}",
        r#"(func (export "proxy_on_vm_start") (param i32 i32) (result i32)
             (drop (call $proxy_set_tick_period_milliseconds (i32.const 10))) (i32.const 1))
           (func (export "proxy_on_tick") (param i32) unreachable)"#
    ));
    let mut vm = Plugin::builder().module_bytes(wat).clock(clock).start();
    let held = vm.create_stream(Default::default()).unwrap();
    vm.request_headers(held, get("/hold").into(), true).unwrap();
    vm.advance(Duration::from_millis(10)).unwrap();
    assert_eq!(vm.failure().unwrap().callback, "proxy_on_tick");
    assert_eq!(vm.take_stream_events(), [StreamEvent::LocalResponse(held)]);
    assert_eq!(vm.next_due_nanos(), None, "a failed VM has no timers");
}

#[test]
fn a_reloaded_vm_ticks_again_without_waiting_for_a_stream() {
    // A filter that refreshes state from its ticks (a token) must not wait for the next request after a
    // failure: the reload is itself a timer, so an embedder's timer loop brings the VM and its ticks back.
    let clock = ManualClock::new();
    let wat = module(&format!(
        "{FRAGILE}{}",
        r#"(data (i32.const 32) "tick")
           (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
             (drop (call $proxy_set_tick_period_milliseconds (i32.const 100))) (i32.const 1))
           (func (export "proxy_on_tick") (param i32) (call $say (i32.const 32) (i32.const 4)))"#
    ));
    let mut vm = Plugin::builder()
        .module_bytes(wat)
        .clock(clock.clone())
        .failure_policy(FailurePolicy::FailReload)
        .reload_backoff(ReloadBackoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
        })
        .start();
    vm.stream()
        .unwrap()
        .request_headers(get("/boom"), true)
        .unwrap();
    assert!(vm.is_failed());
    said(&mut vm);
    let reload_at = vm.next_due_nanos().unwrap();
    assert_eq!(reload_at, clock.now_nanos() + 1_000_000_000);
    vm.advance(Duration::from_millis(1_250)).unwrap();
    assert!(
        !vm.is_failed(),
        "the backoff passed: the timer reloaded the VM"
    );
    assert_eq!(said(&mut vm), ["tick", "tick"]);
}
