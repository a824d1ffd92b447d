//! The host-call trace: off by default, the exact calls with decoded arguments and statuses when on, values
//! recorded by length only, traps recorded as such, and a bounded number of records.

use host_harness::abi::Status;
use host_harness::trace::MAX_RECORDS;
use host_harness::{HostCallArg, HostCallStatus, Plugin, Vm};

use crate::support::{StartVm, module_with};

const FD_WRITE: &str = r#"(import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))"#;

/// A filter whose request-headers callback reads the credential, misses a header, replaces the API key,
/// names a map that does not exist, reads a property and writes to stdout and to a bad descriptor.
const CALLS: &str = r#"
  (data (i32.const 0) "authorization")
  (data (i32.const 16) "x-missing")
  (data (i32.const 32) "x-api-key")
  (data (i32.const 48) "sk-live-secret")
  (data (i32.const 64) "request\00path")
  (data (i32.const 512) "\58\02\00\00\03\00\00\00")
  (data (i32.const 600) "hi\n")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (drop (call $proxy_get_header_map_value (i32.const 0) (i32.const 0) (i32.const 13) (i32.const 1024) (i32.const 1028)))
    (drop (call $proxy_get_header_map_value (i32.const 0) (i32.const 16) (i32.const 9) (i32.const 1024) (i32.const 1028)))
    (drop (call $proxy_replace_header_map_value (i32.const 0) (i32.const 32) (i32.const 9) (i32.const 48) (i32.const 14)))
    (drop (call $proxy_get_header_map_value (i32.const 9) (i32.const 0) (i32.const 13) (i32.const 1024) (i32.const 1028)))
    (drop (call $proxy_get_property (i32.const 64) (i32.const 12) (i32.const 1024) (i32.const 1028)))
    (drop (call $fd_write (i32.const 1) (i32.const 512) (i32.const 1) (i32.const 1040)))
    (drop (call $fd_write (i32.const 9) (i32.const 512) (i32.const 1) (i32.const 1040)))
    (i32.const 0))
"#;

/// The credential the downstream request carries.
const CREDENTIAL: &str = "Bearer sk-downstream-credential";

fn plugin(body: &str) -> host_harness::PluginBuilder {
    Plugin::builder().module_bytes(module_with(FD_WRITE, body))
}

/// Runs the request headers of a request carrying [`CREDENTIAL`]; returns the stream's context id.
fn send_request(vm: &mut Vm) -> u32 {
    let mut stream = vm.stream().unwrap();
    stream
        .request_headers(
            [
                (":method", "GET"),
                (":path", "/v1/messages"),
                (":authority", "api.example.test"),
                ("authorization", CREDENTIAL),
            ],
            true,
        )
        .unwrap();
    stream.id().0
}

#[test]
fn the_trace_lists_each_call_with_decoded_arguments_and_its_status() {
    let mut vm = plugin(CALLS).trace_host_calls(true).start();
    let stream_id = send_request(&mut vm);
    let calls = vm.take_host_calls();
    let shown: Vec<String> = calls.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            format!(
                r#"proxy_get_header_map_value(map=request_headers, key="authorization") -> Ok (returned {} bytes)"#,
                CREDENTIAL.len()
            ),
            r#"proxy_get_header_map_value(map=request_headers, key="x-missing") -> NotFound"#
                .to_owned(),
            r#"proxy_replace_header_map_value(map=request_headers, key="x-api-key", value=<14 bytes>) -> Ok"#
                .to_owned(),
            "proxy_get_header_map_value(map=9) -> BadArgument".to_owned(),
            r#"proxy_get_property(path="request.path") -> Ok (returned 12 bytes)"#.to_owned(),
            "fd_write(1, 512, 1, 1040) -> SUCCESS".to_owned(),
            "fd_write(9, 512, 1, 1040) -> EBADF".to_owned(),
        ]
    );
    assert!(calls.iter().all(|call| call.context_id == stream_id));
    assert_eq!(calls[1].status, HostCallStatus::Status(Status::NotFound));
    assert_eq!(
        calls[2].args[2],
        HostCallArg::Bytes {
            name: "value",
            len: 14
        }
    );
    assert_eq!(calls[6].status, HostCallStatus::Errno(8));
    assert!(
        vm.take_host_calls().is_empty(),
        "a take removes the records"
    );
}

#[test]
fn values_and_credentials_never_reach_the_trace() {
    let mut vm = plugin(CALLS).trace_host_calls(true).start();
    send_request(&mut vm);
    let calls = vm.host_calls();
    assert!(!calls.is_empty());
    let everything = format!(
        "{calls:?} {}",
        calls.iter().map(ToString::to_string).collect::<String>()
    );
    for secret in [
        "sk-downstream-credential",
        "Bearer",
        "sk-live-secret",
        "hi\n",
    ] {
        assert!(!everything.contains(secret), "{secret:?} in {everything}");
    }
}

#[test]
fn tracing_is_off_unless_asked_for_and_can_be_switched_per_vm() {
    let mut vm = plugin(CALLS).start();
    send_request(&mut vm);
    assert!(vm.host_calls().is_empty());
    assert_eq!(vm.dropped_host_calls(), 0);

    vm.trace_host_calls(true);
    send_request(&mut vm);
    assert_eq!(vm.take_host_calls().len(), 7);

    vm.trace_host_calls(false);
    send_request(&mut vm);
    assert!(vm.host_calls().is_empty());
}

#[test]
fn a_trapping_call_is_recorded_as_a_trap() {
    let mut vm = plugin(
        r#"
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (drop (call $proxy_get_header_map_value (i32.const 0) (i32.const 200000) (i32.const 13) (i32.const 1024) (i32.const 1028)))
        (i32.const 0))
    "#,
    )
    .trace_host_calls(true)
    .start();
    send_request(&mut vm);
    assert!(vm.is_failed());
    let calls = vm.take_host_calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].name, "proxy_get_header_map_value");
    let HostCallStatus::Trap(message) = &calls[0].status else {
        panic!("not a trap: {calls:?}");
    };
    assert!(message.contains("outside guest memory"), "{message}");
    assert!(calls[0].to_string().contains("-> trap: "), "{}", calls[0]);
}

#[test]
fn the_trace_keeps_at_most_max_records_and_counts_the_rest() {
    let extra = 5;
    let body = format!(
        r#"
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (local $left i32)
        (local.set $left (i32.const {}))
        (loop $again
          (drop (call $proxy_get_log_level (i32.const 1024)))
          (local.set $left (i32.sub (local.get $left) (i32.const 1)))
          (br_if $again (local.get $left)))
        (i32.const 0))
    "#,
        MAX_RECORDS + extra
    );
    let mut vm = plugin(&body).trace_host_calls(true).start();
    send_request(&mut vm);
    assert_eq!(vm.dropped_host_calls(), extra as u64);
    let calls = vm.take_host_calls();
    assert_eq!(calls.len(), MAX_RECORDS);
    assert_eq!(
        calls[0].status,
        HostCallStatus::Status(Status::Ok),
        "the oldest records are the ones kept"
    );
    assert_eq!(vm.dropped_host_calls(), 0, "a take resets the count");
}
