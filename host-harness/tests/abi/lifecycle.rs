//! Start-up, configuration, module checks, and the order of stream callbacks.

use host_harness::{Action, HarnessError, Plugin, StreamId};

use crate::support::{StartVm, get, module, plugin, said, vm};

/// Callbacks that log their own names, to check the order the host calls them in.
const LOGGING_CALLBACKS: &str = r#"
  (data (i32.const 0) "initialize")
  (data (i32.const 16) "create")
  (data (i32.const 32) "vm_start")
  (data (i32.const 48) "configure")
  (data (i32.const 64) "request_headers")
  (data (i32.const 80) "request_body")
  (data (i32.const 96) "request_trailers")
  (data (i32.const 128) "response_headers")
  (data (i32.const 160) "response_body")
  (data (i32.const 192) "response_trailers")
  (data (i32.const 224) "done")
  (data (i32.const 240) "log")
  (data (i32.const 256) "delete")
  (func (export "_initialize") (call $say (i32.const 0) (i32.const 10)))
  (func (export "proxy_on_context_create") (param $id i32) (param $parent i32)
    (call $say (i32.const 16) (i32.const 6)) (call $say_num (local.get $id)) (call $say_num (local.get $parent)))
  (func (export "proxy_on_vm_start") (param $id i32) (param $size i32) (result i32)
    (call $say (i32.const 32) (i32.const 8)) (call $say_num (local.get $size)) (i32.const 1))
  (func (export "proxy_on_configure") (param $id i32) (param $size i32) (result i32)
    (call $say (i32.const 48) (i32.const 9)) (call $say_num (local.get $size)) (i32.const 1))
  (func (export "proxy_on_request_headers") (param $id i32) (param $n i32) (param $eos i32) (result i32)
    (call $say (i32.const 64) (i32.const 15)) (call $say_num (local.get $n)) (call $say_num (local.get $eos)) (i32.const 0))
  (func (export "proxy_on_request_body") (param $id i32) (param $size i32) (param $eos i32) (result i32)
    (call $say (i32.const 80) (i32.const 12)) (call $say_num (local.get $size)) (call $say_num (local.get $eos)) (i32.const 0))
  (func (export "proxy_on_request_trailers") (param $id i32) (param $n i32) (result i32)
    (call $say (i32.const 96) (i32.const 16)) (call $say_num (local.get $n)) (i32.const 0))
  (func (export "proxy_on_response_headers") (param $id i32) (param $n i32) (param $eos i32) (result i32)
    (call $say (i32.const 128) (i32.const 16)) (call $say_num (local.get $n)) (i32.const 0))
  (func (export "proxy_on_response_body") (param $id i32) (param $size i32) (param $eos i32) (result i32)
    (call $say (i32.const 160) (i32.const 13)) (call $say_num (local.get $size)) (i32.const 0))
  (func (export "proxy_on_response_trailers") (param $id i32) (param $n i32) (result i32)
    (call $say (i32.const 192) (i32.const 17)) (i32.const 0))
  (func (export "proxy_on_done") (param $id i32) (result i32) (call $say (i32.const 224) (i32.const 4)) (i32.const 1))
  (func (export "proxy_on_log") (param $id i32) (call $say (i32.const 240) (i32.const 3)))
  (func (export "proxy_on_delete") (param $id i32) (call $say (i32.const 256) (i32.const 6)))
"#;

#[test]
fn start_up_runs_initialize_then_root_context_creation_vm_start_and_configure_with_their_sizes() {
    let plugin = plugin(LOGGING_CALLBACKS)
        .vm_config("vm!")
        .plugin_config("{\"a\":1}")
        .build()
        .unwrap();
    let mut vm = plugin.start_vm().unwrap();
    assert_eq!(
        said(&mut vm),
        [
            "initialize",
            "create",
            "1",
            "0",
            "vm_start",
            "3",
            "configure",
            "7"
        ]
    );
}

#[test]
fn a_stream_sees_every_callback_in_order_and_ends_with_log_done_delete() {
    let mut vm = vm(LOGGING_CALLBACKS);
    said(&mut vm);
    let mut stream = vm.stream().unwrap();
    assert_eq!(stream.id(), StreamId(2));
    stream.request_headers(get("/"), false).unwrap();
    let chunk = stream.request_body(b"hello", false).unwrap();
    assert_eq!(
        (chunk.action, chunk.forward.as_slice()),
        (Action::Continue, &b"hello"[..])
    );
    stream.request_trailers([("grpc-status", "0")]).unwrap();
    stream
        .response_headers([(":status", "200"), ("a", "b")], false)
        .unwrap();
    stream.response_body(b"abc", true).unwrap();
    stream.finish().unwrap();
    let expected = [
        "create",
        "2",
        "1",
        "request_headers",
        "3",
        "0",
        "request_body",
        "5",
        "0",
        "request_trailers",
        "1",
        "response_headers",
        "2",
        "response_body",
        "3",
        "log",
        "done",
        "delete",
    ];
    assert_eq!(said(&mut vm), expected);
    assert!(vm.stream_ids().is_empty());
}

#[test]
fn streams_interleave_on_one_vm_with_distinct_contexts() {
    let mut vm = vm(LOGGING_CALLBACKS);
    let first = vm.create_stream(Default::default()).unwrap();
    let second = vm.create_stream(Default::default()).unwrap();
    assert_ne!(first, second);
    vm.request_headers(second, get("/b").into(), true).unwrap();
    vm.request_headers(first, get("/a").into(), true).unwrap();
    vm.finish_stream(second).unwrap();
    assert_eq!(vm.stream_ids(), vec![first]);
    assert_eq!(
        vm.stream_state(first)
            .unwrap()
            .request_headers()
            .get_str(":path"),
        Some("/a")
    );
    vm.finish_stream(first).unwrap();
    assert!(matches!(
        vm.finish_stream(first),
        Err(HarnessError::UnknownStream(_))
    ));
}

#[test]
fn steps_out_of_order_are_refused_with_the_step_named() {
    let mut vm = vm("");
    let mut stream = vm.stream().unwrap();
    let error = stream.request_body(b"x", true).unwrap_err();
    assert_eq!(
        error.to_string(),
        "stream 2: request body came before the headers"
    );
    stream.request_headers(get("/"), true).unwrap();
    let error = stream.request_headers(get("/"), true).unwrap_err();
    assert!(
        matches!(
            error,
            HarnessError::StreamOrder {
                step: "request headers",
                ..
            }
        ),
        "{error}"
    );
    let error = stream.request_body(b"late", false).unwrap_err();
    assert!(
        error.to_string().contains("after the end of stream"),
        "{error}"
    );
}

#[test]
fn vm_start_returning_false_is_a_rejection_with_the_logs() {
    let plugin = plugin(
        r#"(data (i32.const 0) "no vm config")
           (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
             (drop (call $proxy_log (i32.const 4) (i32.const 0) (i32.const 12))) (i32.const 0))"#,
    )
    .build()
    .unwrap();
    let error = plugin.start_vm().unwrap_err();
    assert!(matches!(error, HarnessError::VmStartRejected { .. }));
    assert!(error.to_string().ends_with(": no vm config"), "{error}");
}

#[test]
fn a_rejected_configuration_carries_the_plugins_own_error_line() {
    let plugin = plugin(
        r#"(data (i32.const 0) "bad config: missing rules")
           (func (export "proxy_on_configure") (param i32 i32) (result i32)
             (call $say (i32.const 0) (i32.const 4))
             (drop (call $proxy_log (i32.const 4) (i32.const 0) (i32.const 25)))
             (i32.const 0))"#,
    )
    .build()
    .unwrap();
    match plugin.start_vm() {
        Err(error @ HarnessError::ConfigureRejected { .. }) => {
            assert!(
                error.to_string().ends_with(": bad config: missing rules"),
                "{error}"
            );
        }
        other => panic!("expected a rejected configuration, got {other:?}"),
    }
}

#[test]
fn on_done_false_defers_delete_until_proxy_done() {
    let mut vm = vm(r#"
      (global $waiting (mut i32) (i32.const 0))
      (data (i32.const 0) "log")
      (data (i32.const 8) "delete")
      (func (export "proxy_on_delete") (param i32) (call $say (i32.const 8) (i32.const 6)))
      (func (export "proxy_on_done") (param $id i32) (result i32) (global.set $waiting (local.get $id)) (i32.const 0))
      (func (export "proxy_on_log") (param i32) (call $say (i32.const 0) (i32.const 3)))
      (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
        (drop (call $proxy_set_tick_period_milliseconds (i32.const 10))) (i32.const 1))
      (func (export "proxy_on_tick") (param i32)
        (if (global.get $waiting) (then
          (drop (call $proxy_set_effective_context (global.get $waiting)))
          (drop (call $proxy_done))
          (global.set $waiting (i32.const 0)))))
    "#);
    let id = vm.create_stream(Default::default()).unwrap();
    vm.finish_stream(id).unwrap();
    assert_eq!(vm.stream_ids(), vec![id], "the stream waits for proxy_done");
    assert_eq!(
        said(&mut vm),
        ["log"],
        "on_log runs before on_done, as in Envoy"
    );
    vm.advance(std::time::Duration::from_millis(10)).unwrap();
    assert_eq!(said(&mut vm), ["delete"]);
    assert!(vm.stream_ids().is_empty());
}

#[test]
fn shutdown_runs_on_done_and_on_delete_for_the_root_context() {
    let mut vm = vm(LOGGING_CALLBACKS);
    said(&mut vm);
    assert!(vm.shutdown().unwrap());
    assert_eq!(said(&mut vm), ["done", "delete"]);
    assert!(vm.is_shut_down());
    assert!(matches!(
        vm.create_stream(Default::default()),
        Err(HarnessError::VmShutDown)
    ));
}

#[test]
fn abi_0_1_0_modules_are_refused_naming_the_version() {
    let wat = module("").replace("proxy_abi_version_0_2_1", "proxy_abi_version_0_1_0");
    let error = Plugin::builder().module_bytes(wat).build().unwrap_err();
    assert_eq!(
        error.to_string(),
        "module declares proxy-wasm ABI 0.1.0; this host runs ABI 0.2.1 (and the compatible 0.2.0)"
    );
}

#[test]
fn a_module_without_an_abi_marker_is_refused() {
    let wat = module("").replace("(func (export \"proxy_abi_version_0_2_1\"))", "");
    let error = Plugin::builder().module_bytes(wat).build().unwrap_err();
    assert!(matches!(error, HarnessError::MissingAbiMarker), "{error}");
}

#[test]
fn a_callback_with_the_wrong_signature_is_refused_by_name() {
    let error = Plugin::builder()
        .module_bytes(module(r#"(func (export "proxy_on_request_headers") (param i32 i32) (result i32) (i32.const 0))"#))
        .build()
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "module export proxy_on_request_headers: has type (i32, i32) -> (i32) but this host calls it with 3 i32 parameter(s) and 1 i32 result(s)"
    );
}

#[test]
fn an_unknown_import_is_refused_by_name() {
    let wat = module("").replacen(
        "(module",
        r#"(module (import "env" "proxy_get_configuration" (func (param i32 i32) (result i32)))"#,
        1,
    );
    let error = Plugin::builder().module_bytes(wat).build().unwrap_err();
    assert_eq!(
        error.to_string(),
        "module imports env.proxy_get_configuration, which this host does not provide"
    );
}

#[test]
fn a_module_that_exports_only_malloc_is_served_through_it() {
    let mut vm = vm_malloc();
    let mut stream = vm.stream().unwrap();
    stream.request_headers(get("/via-malloc"), true).unwrap();
    assert_eq!(said(&mut vm), ["/via-malloc"]);
}

fn vm_malloc() -> host_harness::Vm {
    let wat = module(
        r#"(data (i32.const 0) ":path")
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (drop (call $proxy_get_header_map_value (i32.const 0) (i32.const 0) (i32.const 5) (i32.const 1024) (i32.const 1028)))
             (call $say_returned)
             (i32.const 0))"#,
    )
    .replace("\"proxy_on_memory_allocate\"", "\"malloc\"");
    Plugin::builder().module_bytes(wat).start()
}

#[test]
fn a_missing_module_file_names_the_path() {
    let error = Plugin::builder()
        .module_file("/nonexistent/filter.wasm")
        .build()
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("cannot read module /nonexistent/filter.wasm:"),
        "{error}"
    );
    let error = Plugin::builder().build().unwrap_err();
    assert!(matches!(error, HarnessError::NoModule));
    let error = Plugin::builder()
        .module_bytes(b"not wasm".to_vec())
        .build()
        .unwrap_err();
    assert!(matches!(error, HarnessError::Compile(_)), "{error}");
}

#[test]
fn abi_0_1_0_modules_with_their_own_callback_signatures_are_refused_naming_the_version() {
    // ABI 0.1.0 callbacks have other signatures (`proxy_on_request_headers(context, headers)` without
    // end_of_stream); the version is what the author needs to hear, not a signature mismatch.
    let wat = module(
        r#"(func (export "proxy_on_request_headers") (param i32 i32) (result i32) (i32.const 0))
           (func (export "proxy_on_response_headers") (param i32 i32) (result i32) (i32.const 0))"#,
    )
    .replace("proxy_abi_version_0_2_1", "proxy_abi_version_0_1_0");
    let error = Plugin::builder().module_bytes(wat).build().unwrap_err();
    assert_eq!(
        error.to_string(),
        "module declares proxy-wasm ABI 0.1.0; this host runs ABI 0.2.1 (and the compatible 0.2.0)"
    );
}

#[test]
fn a_module_with_start_and_no_initialize_is_started_through_start() {
    // TinyGo and other WASI-command builds set themselves up in `_start`; Envoy runs it when there is no
    // `_initialize`, before any proxy-wasm callback.
    let mut vm = vm(r#"
      (data (i32.const 0) "start")
      (data (i32.const 8) "vm_start")
      (func (export "_start") (call $say (i32.const 0) (i32.const 5)))
      (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
        (call $say (i32.const 8) (i32.const 8)) (i32.const 1))
    "#);
    assert_eq!(said(&mut vm), ["start", "vm_start"]);
}

#[test]
fn start_is_not_run_when_initialize_exists() {
    let mut vm = vm(r#"
      (data (i32.const 0) "start")
      (data (i32.const 8) "initialize")
      (func (export "_start") (call $say (i32.const 0) (i32.const 5)))
      (func (export "_initialize") (call $say (i32.const 8) (i32.const 10)))
    "#);
    assert_eq!(said(&mut vm), ["initialize"]);
}
