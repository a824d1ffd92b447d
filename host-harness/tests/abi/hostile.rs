//! Hostile and broken modules: every misuse traps the callback with a message naming the host call, the
//! VM fails under its policy, and the host (and every other VM) carries on.

use std::time::Duration;

use host_harness::{Action, Plugin, TrapCause};

use crate::support::{
    StartVm, get, module, plugin, said, send_request_headers, trap_on_request_headers, vm,
};

/// A stream whose request headers callback runs `body`, on a fresh VM; returns the VM after the step.
fn run_request_headers(body: &str) -> host_harness::Vm {
    let callback = format!(
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) {body} (i32.const 0))"#
    );
    let mut vm = vm(&callback);
    send_request_headers(&mut vm);
    vm
}

#[test]
fn a_pointer_outside_memory_traps_naming_the_host_call_and_argument() {
    let vm = run_request_headers(
        "(drop (call $proxy_log (i32.const 2) (i32.const 200000) (i32.const 4)))",
    );
    let trap = vm.failure().unwrap();
    assert_eq!(trap.callback, "proxy_on_request_headers");
    assert_eq!(trap.context_id, 2);
    assert_eq!(trap.cause, TrapCause::HostCall { call: "proxy_log" });
    assert_eq!(
        trap.message,
        "proxy_log (context 2): message at 0x30d40 with length 4 is outside guest memory (131072 bytes)"
    );
}

#[test]
fn a_length_that_wraps_around_the_address_space_traps() {
    let vm = run_request_headers(
        "(drop (call $proxy_get_header_map_value (i32.const 0) (i32.const -16) (i32.const 32) (i32.const 1024) (i32.const 1028)))",
    );
    let trap = vm.failure().unwrap();
    assert_eq!(
        trap.cause,
        TrapCause::HostCall {
            call: "proxy_get_header_map_value"
        }
    );
    assert!(
        trap.message
            .contains("key at 0xfffffff0 with length 32 is outside guest memory"),
        "{}",
        trap.message
    );
}

#[test]
fn a_length_above_the_hosts_cap_traps_before_any_copy() {
    let vm =
        run_request_headers("(drop (call $proxy_log (i32.const 2) (i32.const 0) (i32.const -1)))");
    let trap = vm.failure().unwrap();
    assert!(
        trap.message
            .ends_with("message length 4294967295 exceeds the host's limit of 67108864 bytes"),
        "{}",
        trap.message
    );
}

#[test]
fn a_return_pointer_outside_memory_traps() {
    let vm = run_request_headers(
        "(drop (call $proxy_get_header_map_pairs (i32.const 0) (i32.const 1024) (i32.const 131070)))",
    );
    let trap = vm.failure().unwrap();
    assert!(
        trap.message
            .contains("return size pointer at 0x1fffe with length 4 is outside guest memory"),
        "{}",
        trap.message
    );
}

#[test]
fn an_allocator_returning_garbage_traps() {
    for (returned, described) in [("0", "0x0"), ("131070", "0x1fffe"), ("-8", "0xfffffff8")] {
        let wat = module(r#"
          (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
            (drop (call $proxy_get_header_map_pairs (i32.const 0) (i32.const 1024) (i32.const 1028)))
            (i32.const 0))
        "#)
        .replace("(local.get $block))", &format!("(drop (local.get $block)) (i32.const {returned}))"));
        let mut vm = Plugin::builder().module_bytes(wat).start();
        let trap = trap_on_request_headers(&mut vm);
        assert_eq!(
            trap.cause,
            TrapCause::HostCall {
                call: "proxy_get_header_map_pairs"
            }
        );
        assert!(
            trap.message.contains(&format!(
                "the guest allocator returned {described} for 72 bytes"
            )),
            "{}",
            trap.message
        );
    }
}

#[test]
fn an_endless_loop_is_interrupted_at_the_deadline() {
    let plugin = plugin(
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (loop $forever (br $forever))
             (i32.const 0))"#,
    )
    .callback_deadline(Duration::from_millis(50))
    .build()
    .unwrap();
    let mut vm = plugin.start_vm().unwrap();
    let mut stream = vm.stream().unwrap();
    assert_eq!(
        stream.request_headers(get("/"), true).unwrap(),
        Action::Pause
    );
    assert_eq!(stream.local_response().unwrap().status, 503);
    let trap = vm.failure().unwrap();
    assert_eq!(trap.cause, TrapCause::Deadline);
    assert_eq!(
        trap.message,
        "proxy_on_request_headers ran past its deadline of 50ms and was interrupted"
    );
}

#[test]
fn memory_growth_past_the_limit_is_refused_and_the_trap_says_so() {
    let plugin = plugin(
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (if (i32.eq (memory.grow (i32.const 100)) (i32.const -1)) (then unreachable))
             (i32.const 0))"#,
    )
    .memory_limit(1024 * 1024)
    .build()
    .unwrap();
    let mut vm = plugin.start_vm().unwrap();
    let trap = trap_on_request_headers(&mut vm);
    assert_eq!(trap.cause, TrapCause::MemoryLimit);
    assert_eq!(
        trap.message,
        "the guest asked for 6684672 bytes of linear memory, past the limit of 1048576 bytes"
    );
}

#[test]
fn a_guest_panic_message_on_stderr_is_part_of_the_trap() {
    let wat = crate::support::module_with(
        r#"(import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))"#,
        r#"
        (data (i32.const 0) "panicked at src/lib.rs:7:5:\nconfig is invalid\n")
        (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
          (i32.store (i32.const 512) (i32.const 0))
          (i32.store (i32.const 516) (i32.const 46))
          (drop (call $fd_write (i32.const 2) (i32.const 512) (i32.const 1) (i32.const 520)))
          unreachable)
        "#,
    );
    let mut vm = Plugin::builder().module_bytes(wat).start();
    let trap = trap_on_request_headers(&mut vm);
    assert_eq!(trap.cause, TrapCause::Guest);
    assert_eq!(
        trap.message,
        "wasm `unreachable` instruction executed (guest stderr: panicked at src/lib.rs:7:5: | config is invalid)"
    );
    assert_eq!(
        trap.to_string(),
        format!(
            "proxy_on_request_headers (context 2) trapped: {}",
            trap.message
        )
    );
}

#[test]
fn a_trap_in_one_vm_leaves_the_other_vms_of_the_plugin_running() {
    let plugin = plugin(
        r#"(data (i32.const 0) "boom")
           (func (export "proxy_on_request_headers") (param $id i32) (param i32 i32) (result i32)
             (drop (call $proxy_get_header_map_value (i32.const 0) (i32.const 0) (i32.const 4) (i32.const 1024) (i32.const 1028)))
             (if (i32.eqz (call $proxy_get_header_map_value (i32.const 0) (i32.const 0) (i32.const 4) (i32.const 1024) (i32.const 1028)))
               (then unreachable))
             (call $say (i32.const 0) (i32.const 4))
             (i32.const 0))"#,
    )
    .build()
    .unwrap();
    let mut broken = plugin.start_vm().unwrap();
    let mut healthy = plugin.start_vm().unwrap();
    broken
        .stream()
        .unwrap()
        .request_headers([("boom", "1")], true)
        .unwrap();
    assert!(broken.is_failed());
    let mut stream = healthy.stream().unwrap();
    assert_eq!(
        stream.request_headers(get("/"), true).unwrap(),
        Action::Continue
    );
    assert!(!healthy.is_failed());
    assert_eq!(said(&mut healthy), ["boom"]);
}

#[test]
fn a_trap_during_start_up_is_an_error_naming_the_callback() {
    let plugin =
        plugin(r#"(func (export "proxy_on_vm_start") (param i32 i32) (result i32) unreachable)"#)
            .build()
            .unwrap();
    let error = plugin.start_vm().unwrap_err();
    assert_eq!(
        error.to_string(),
        "proxy_on_vm_start (context 1) trapped: wasm `unreachable` instruction executed"
    );
}

#[test]
fn proc_exit_from_the_guest_is_a_trap_with_the_exit_code() {
    let wat = crate::support::module_with(
        r#"(import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))"#,
        r#"(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (call $proc_exit (i32.const 3)) (i32.const 0))"#,
    );
    let mut vm = Plugin::builder().module_bytes(wat).start();
    send_request_headers(&mut vm);
    assert_eq!(vm.failure().unwrap().cause, TrapCause::Exit(3));
}

/// Writes a three-letter name for `$n` at offset 0 (17 576 distinct names).
const NAME_OF_N: &str = r#"
  (func $name_of (param $n i32)
    (i32.store8 (i32.const 0) (i32.add (i32.const 97) (i32.rem_u (local.get $n) (i32.const 26))))
    (i32.store8 (i32.const 1) (i32.add (i32.const 97) (i32.rem_u (i32.div_u (local.get $n) (i32.const 26)) (i32.const 26))))
    (i32.store8 (i32.const 2) (i32.add (i32.const 97) (i32.div_u (local.get $n) (i32.const 676)))))
"#;

/// The signature of the VM start callback, for [`for_each_name`].
const VM_START: &str = r#"(export "proxy_on_vm_start") (param i32 i32) (result i32)"#;

/// The signature of the request headers callback, for [`for_each_name`].
const REQUEST_HEADERS: &str =
    r#"(export "proxy_on_request_headers") (param i32 i32 i32) (result i32)"#;

/// [`NAME_OF_N`] and a callback with `signature` that, for each `$n` below `times`, writes the name of `$n`
/// at offset 0 and makes host call `call` (its status dropped), then returns `result`: a guest that keeps
/// asking the host for something new until a limit stops it.
fn for_each_name(signature: &str, times: u32, call: &str, result: u32) -> String {
    format!(
        r#"{NAME_OF_N}
        (func {signature}
          (local $n i32)
          (loop $more
            (call $name_of (local.get $n))
            (drop {call})
            (local.set $n (i32.add (local.get $n) (i32.const 1)))
            (br_if $more (i32.lt_u (local.get $n) (i32.const {times}))))
          (i32.const {result}))"#
    )
}

#[test]
fn a_plugin_defining_metrics_without_end_is_stopped() {
    let vm_body = for_each_name(
        VM_START,
        10001,
        r#"(call $proxy_define_metric (i32.const 0) (i32.const 0) (i32.const 3) (i32.const 1024))"#,
        1,
    );
    let error = plugin(&vm_body).build().unwrap().start_vm().unwrap_err();
    assert!(
        error
            .to_string()
            .ends_with("the host keeps at most 10000 metrics per plugin"),
        "{error}"
    );
}

#[test]
fn a_plugin_registering_queues_without_end_is_stopped() {
    let vm_body = for_each_name(
        VM_START,
        1025,
        r#"(call $proxy_register_shared_queue (i32.const 0) (i32.const 3) (i32.const 1024))"#,
        1,
    );
    let error = plugin(&vm_body).build().unwrap().start_vm().unwrap_err();
    assert!(
        error
            .to_string()
            .ends_with("the host keeps at most 1024 shared queues"),
        "{error}"
    );
}

#[test]
fn properties_set_without_end_are_stopped_at_the_limit() {
    let body = for_each_name(
        REQUEST_HEADERS,
        3,
        r#"(call $proxy_set_property (i32.const 0) (i32.const 3) (i32.const 0) (i32.const 3))"#,
        0,
    );
    let limits = host_harness::Limits {
        max_guest_properties: 2,
        ..Default::default()
    };
    let mut vm = plugin(&body).limits(limits).start();
    let trap = trap_on_request_headers(&mut vm);
    assert_eq!(
        trap.cause,
        TrapCause::HostCall {
            call: "proxy_set_property"
        }
    );
    assert!(
        trap.message
            .ends_with("the host keeps at most 2 properties per context"),
        "{}",
        trap.message
    );
}

#[test]
fn http_calls_beyond_the_in_flight_limit_are_internal_failures() {
    let body = r#"
      (data (i32.const 0) "\03\00\00\00\07\00\00\00\04\00\00\00\05\00\00\00\01\00\00\00\0a\00\00\00\01\00\00\00:method\00POST\00:path\00/\00:authority\00a\00")
      (data (i32.const 100) "side")
      (func $call (result i32)
        (call $proxy_http_call (i32.const 100) (i32.const 4) (i32.const 0) (i32.const 62)
          (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 1000) (i32.const 1032)))
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (call $say_num (call $call))
        (call $say_num (call $call))
        (call $say_num (call $call))
        (i32.const 0))
    "#;
    let limits = host_harness::Limits {
        max_http_calls_in_flight: 2,
        ..Default::default()
    };
    let mut vm = plugin(body)
        .limits(limits)
        .cluster("side", host_harness::MockCluster::silent())
        .start();
    send_request_headers(&mut vm);
    assert_eq!(said(&mut vm), ["0", "0", "10"]);
    assert_eq!(vm.http_calls_in_flight(), 2);
}
