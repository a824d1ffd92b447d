//! Time: the manual clock as the guest reads it, ticks per VM, and several VMs advanced together.

use std::time::Duration;

use host_harness::{HarnessError, ManualClock, Plugin, VmGroup};

use crate::support::{StartVm, module, plugin, said};

/// Sets a tick period of `period` ms at start; each tick logs the time in ms since the epoch.
fn ticking(period: u32) -> String {
    format!(
        r#"
      (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
        (drop (call $proxy_set_tick_period_milliseconds (i32.const {period}))) (i32.const 1))
      (func (export "proxy_on_tick") (param i32)
        (drop (call $proxy_get_current_time_nanoseconds (i32.const 1032)))
        (call $say_num64 (i64.div_u (i64.load (i32.const 1032)) (i64.const 1000000))))
    "#
    )
}

#[test]
fn ticks_fire_at_each_period_with_the_clock_at_the_tick_time() {
    let clock = ManualClock::new();
    let start_ms = clock.now_nanos() / 1_000_000;
    let mut vm = plugin(&ticking(100)).clock(clock.clone()).start();
    assert_eq!(vm.tick_period(), Some(Duration::from_millis(100)));
    vm.advance(Duration::from_millis(350)).unwrap();
    let expected: Vec<String> = [100, 200, 300]
        .iter()
        .map(|offset| (start_ms + offset).to_string())
        .collect();
    assert_eq!(said(&mut vm), expected);
    assert_eq!(clock.now_nanos() / 1_000_000, start_ms + 350);
}

#[test]
fn a_zero_period_stops_the_ticks() {
    let stops_after_one = ticking(10).replace(
        "(func (export \"proxy_on_tick\") (param i32)",
        "(func (export \"proxy_on_tick\") (param i32) (drop (call $proxy_set_tick_period_milliseconds (i32.const 0)))",
    );
    let mut vm = plugin(&stops_after_one).start();
    vm.advance(Duration::from_secs(1)).unwrap();
    assert_eq!(said(&mut vm).len(), 1);
    assert_eq!(vm.tick_period(), None);
    assert_eq!(vm.next_due_nanos(), None);
}

#[test]
fn every_vm_of_a_group_ticks_on_its_own_root_context() {
    let plugin = plugin(&ticking(50)).build().unwrap();
    let mut group = VmGroup::start(&plugin, 3).unwrap();
    group.advance(Duration::from_millis(100)).unwrap();
    for vm in group.vms() {
        assert_eq!(said(vm).len(), 2);
    }
}

#[test]
fn wasi_clocks_follow_the_manual_clock() {
    let wat = crate::support::module_with(
        r#"(import "wasi_snapshot_preview1" "clock_time_get" (func $clock_time_get (param i32 i64 i32) (result i32)))"#,
        r#"(func (export "proxy_on_vm_start") (param i32 i32) (result i32)
             (call $say_num (call $clock_time_get (i32.const 0) (i64.const 1) (i32.const 1032)))
             (call $say_num64 (i64.load (i32.const 1032)))
             (call $say_num (call $clock_time_get (i32.const 1) (i64.const 1) (i32.const 1032)))
             (call $say_num64 (i64.load (i32.const 1032)))
             (i32.const 1))"#,
    );
    let clock = ManualClock::new();
    let mut vm = Plugin::builder()
        .module_bytes(wat)
        .clock(clock.clone())
        .start();
    let now = clock.now_nanos().to_string();
    assert_eq!(said(&mut vm), ["0", now.as_str(), "0", now.as_str()]);
}

#[test]
fn advancing_needs_a_manual_clock() {
    let mut vm = Plugin::builder().module_bytes(module("")).start();
    assert!(matches!(
        vm.advance(Duration::from_secs(1)),
        Err(HarnessError::NotManualClock(_))
    ));
    vm.run_timers();
}

#[test]
fn on_the_system_clock_the_next_deadline_is_one_period_ahead_and_nothing_is_due_yet() {
    let before = std::time::SystemTime::now();
    let mut vm = Plugin::builder()
        .module_bytes(module(&ticking(60_000)))
        .start();
    let deadline = vm.next_deadline().unwrap();
    let after = std::time::SystemTime::now();
    assert!(
        deadline >= before + Duration::from_secs(60) && deadline <= after + Duration::from_secs(60)
    );
    vm.run_timers();
    assert!(
        said(&mut vm).is_empty(),
        "a tick a minute away has not fired"
    );
}
