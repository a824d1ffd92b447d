//! Host calls for features the host lacks or leaves to the embedder: gRPC, foreign functions, stream
//! control where there is nothing to control. Each answers a status the SDK accepts and never traps.

use host_harness::{MockCluster, Plugin, abi::HOST_IMPORTS};

use crate::support::{StartVm, get, module, said, send_request_headers};

#[test]
fn grpc_calls_are_refused_with_statuses_the_sdk_accepts() {
    let mut vm = Plugin::builder()
        .module_bytes(module(r#"
          (data (i32.const 0) "known")
          (data (i32.const 16) "unknown")
          (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
            (call $say_num (call $proxy_grpc_call (i32.const 16) (i32.const 7) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
              (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 1032)))
            (call $say_num (call $proxy_grpc_call (i32.const 0) (i32.const 5) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
              (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 1032)))
            (call $say_num (call $proxy_grpc_stream (i32.const 16) (i32.const 7) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
              (i32.const 0) (i32.const 0) (i32.const 1032)))
            (call $say_num (call $proxy_grpc_send (i32.const 1) (i32.const 0) (i32.const 0) (i32.const 0)))
            (call $say_num (call $proxy_grpc_cancel (i32.const 1)))
            (call $say_num (call $proxy_grpc_close (i32.const 1)))
            (i32.const 0))
        "#))
        .cluster("known", MockCluster::silent())
        .start();
    send_request_headers(&mut vm);
    assert_eq!(said(&mut vm), ["4", "10", "4", "1", "1", "1"]);
    assert!(!vm.is_failed());
}

#[test]
fn foreign_functions_run_when_registered_and_are_not_found_otherwise() {
    let mut vm = Plugin::builder()
        .module_bytes(module(r#"
          (data (i32.const 0) "reverse")
          (data (i32.const 16) "fails")
          (data (i32.const 32) "absent")
          (data (i32.const 48) "abc")
          (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
            (call $say_num (call $proxy_call_foreign_function (i32.const 0) (i32.const 7) (i32.const 48) (i32.const 3) (i32.const 1024) (i32.const 1028)))
            (call $say_returned)
            (call $say_num (call $proxy_call_foreign_function (i32.const 16) (i32.const 5) (i32.const 48) (i32.const 3) (i32.const 1024) (i32.const 1028)))
            (call $say_num (call $proxy_call_foreign_function (i32.const 32) (i32.const 6) (i32.const 48) (i32.const 3) (i32.const 1024) (i32.const 1028)))
            (i32.const 1))
        "#))
        .foreign_function("reverse", |arguments| Ok(arguments.iter().rev().copied().collect()))
        .foreign_function("fails", |_| Err("no".into()))
        .start();
    assert_eq!(said(&mut vm), ["0", "cba", "10", "1"]);
}

#[test]
fn stream_control_without_a_stream_is_ok_and_logged_and_bad_types_are_bad_arguments() {
    let mut vm = Plugin::builder()
        .module_bytes(module(
            r#"
          (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
            (call $say_num (call $proxy_continue_stream (i32.const 0)))
            (call $say_num (call $proxy_close_stream (i32.const 1)))
            (call $say_num (call $proxy_continue_stream (i32.const 2)))
            (call $say_num (call $proxy_continue_stream (i32.const 9)))
            (call $say_num (call $proxy_set_effective_context (i32.const 77)))
            (call $say_num (call $proxy_done))
            (call $say_num (call $proxy_log (i32.const 6) (i32.const 0) (i32.const 0)))
            (call $say_num (call $proxy_get_log_level (i32.const 1032)))
            (call $say_num (i32.load (i32.const 1032)))
            (i32.const 1))
        "#,
        ))
        .start();
    let notes: Vec<String> = vm
        .logs()
        .into_iter()
        .filter(|r| r.source == host_harness::LogSource::Host)
        .map(|r| r.message)
        .collect();
    assert_eq!(said(&mut vm), ["0", "0", "0", "2", "2", "0", "2", "0", "0"]);
    assert_eq!(
        notes,
        [
            "host: proxy_continue_stream has no effect in the root context",
            "host: proxy_close_stream has no effect in the root context",
            "host: proxy_continue_stream has no effect for TCP streams in an HTTP filter",
        ]
    );
}

#[test]
fn the_import_table_lists_all_39_host_functions_once_and_the_scaffold_links_them_all() {
    let mut names: Vec<&str> = HOST_IMPORTS.iter().map(|import| import.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 39);
    for import in &HOST_IMPORTS {
        assert!(
            crate::support::PROXY_IMPORTS.contains(&format!("\"{}\"", import.name)),
            "{} missing from the scaffold",
            import.name
        );
        assert!(!import.statuses.is_empty());
    }
    Plugin::builder().module_bytes(module("")).build().unwrap();
}

#[test]
fn a_local_response_from_a_paused_stream_answers_it() {
    let mut vm = Plugin::builder()
        .module_bytes(module(r#"
          (data (i32.const 0) "\01\00\00\00\0c\00\00\00\0a\00\00\00content-type\00text/plain\00")
          (data (i32.const 64) "denied")
          (data (i32.const 80) "filter_denied")
          (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 1))
          (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
            (drop (call $proxy_set_tick_period_milliseconds (i32.const 1))) (i32.const 1))
          (func (export "proxy_on_tick") (param i32)
            (drop (call $proxy_set_effective_context (i32.const 2)))
            (drop (call $proxy_send_local_response (i32.const 403) (i32.const 80) (i32.const 13) (i32.const 64) (i32.const 6) (i32.const 0) (i32.const 36) (i32.const -1)))
            (drop (call $proxy_set_tick_period_milliseconds (i32.const 0))))
        "#))
        .clock(host_harness::ManualClock::new())
        .start();
    let id = vm.create_stream(Default::default()).unwrap();
    vm.request_headers(id, get("/").into(), true).unwrap();
    vm.advance(std::time::Duration::from_millis(1)).unwrap();
    let local = vm
        .stream_state(id)
        .unwrap()
        .local_response()
        .unwrap()
        .clone();
    assert_eq!(
        (
            local.status,
            local.body.as_slice(),
            local.details.as_str(),
            local.grpc_status
        ),
        (403, &b"denied"[..], "filter_denied", None)
    );
    assert_eq!(local.headers.get_str("content-type"), Some("text/plain"));
    assert_eq!(
        vm.take_stream_events(),
        [host_harness::StreamEvent::LocalResponse(id)]
    );
    vm.finish_stream(id).unwrap();
}
