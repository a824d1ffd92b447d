//! Buffers: bodies, configurations, availability, and Envoy's `proxy_set_buffer_bytes` semantics.

use host_harness::Action;

use crate::support::{StartVm, get, plugin, said, send_request_headers, vm};

/// On each request body chunk: logs the body and a range of it, then replaces, appends and tries a middle edit.
const BODY_EDITOR: &str = r#"
  (data (i32.const 0) "<")
  (data (i32.const 8) ">>")
  (func (export "proxy_on_request_body") (param $id i32) (param $size i32) (param $eos i32) (result i32)
    (call $say_num (call $proxy_get_buffer_bytes (i32.const 0) (i32.const 0) (local.get $size) (i32.const 1024) (i32.const 1028)))
    (call $say_returned)
    (call $say_num (call $proxy_get_buffer_bytes (i32.const 0) (i32.const 1) (i32.const 2) (i32.const 1024) (i32.const 1028)))
    (call $say_returned)
    ;; replace the first two bytes with "<", append ">>", then try a middle edit (BAD_ARGUMENT)
    (call $say_num (call $proxy_set_buffer_bytes (i32.const 0) (i32.const 0) (i32.const 2) (i32.const 0) (i32.const 1)))
    (call $say_num (call $proxy_set_buffer_bytes (i32.const 0) (i32.const -1) (i32.const 0) (i32.const 8) (i32.const 2)))
    (call $say_num (call $proxy_set_buffer_bytes (i32.const 0) (i32.const 2) (i32.const 1) (i32.const 8) (i32.const 2)))
    (i32.const 0))
"#;

#[test]
fn bodies_are_read_in_ranges_and_edited_as_envoy_edits_them() {
    let mut vm = vm(BODY_EDITOR);
    let mut stream = vm.stream().unwrap();
    stream.request_headers(get("/"), false).unwrap();
    let chunk = stream.request_body(b"hello", true).unwrap();
    assert_eq!(chunk.action, Action::Continue);
    assert_eq!(chunk.forward, b"<llo>>");
    assert_eq!(said(&mut vm), ["0", "hello", "0", "el", "0", "0", "2"]);
}

#[test]
fn reading_past_the_end_returns_what_exists_and_a_start_past_it_returns_nothing() {
    let mut vm = vm(r#"
      (func (export "proxy_on_request_body") (param $id i32) (param $size i32) (param $eos i32) (result i32)
        (call $say_num (call $proxy_get_buffer_bytes (i32.const 0) (i32.const 3) (i32.const -1) (i32.const 1024) (i32.const 1028)))
        (call $say_returned)
        (i32.store (i32.const 1024) (i32.const 7))
        (call $say_num (call $proxy_get_buffer_bytes (i32.const 0) (i32.const 99) (i32.const 5) (i32.const 1024) (i32.const 1028)))
        (call $say_num (i32.load (i32.const 1024)))
        (i32.const 0))
    "#);
    let mut stream = vm.stream().unwrap();
    stream.request_headers(get("/"), false).unwrap();
    stream.request_body(b"abcdef", true).unwrap();
    assert_eq!(said(&mut vm), ["0", "def", "0", "0"]);
}

#[test]
fn paused_body_chunks_accumulate_until_the_filter_continues() {
    let mut vm = vm(r#"
      (func (export "proxy_on_request_body") (param $id i32) (param $size i32) (param $eos i32) (result i32)
        (call $say_num (local.get $size))
        (if (result i32) (local.get $eos) (then (i32.const 0)) (else (i32.const 1))))
    "#);
    let mut stream = vm.stream().unwrap();
    stream.request_headers(get("/"), false).unwrap();
    let first = stream.request_body(b"ab", false).unwrap();
    assert_eq!((first.action, first.forward.len()), (Action::Pause, 0));
    assert_eq!(stream.state().unwrap().held_request_body(), b"ab");
    let last = stream.request_body(b"cd", true).unwrap();
    assert_eq!(
        (last.action, last.forward.as_slice()),
        (Action::Continue, &b"abcd"[..])
    );
    assert_eq!(said(&mut vm), ["2", "4"]);
}

#[test]
fn configurations_are_readable_and_read_only() {
    let mut vm = plugin(r#"
      (func (export "proxy_on_configure") (param $id i32) (param $size i32) (result i32)
        (call $say_num (call $proxy_get_buffer_bytes (i32.const 7) (i32.const 0) (local.get $size) (i32.const 1024) (i32.const 1028)))
        (call $say_returned)
        (call $say_num (call $proxy_get_buffer_bytes (i32.const 6) (i32.const 0) (i32.const 100) (i32.const 1024) (i32.const 1028)))
        (call $say_returned)
        (call $say_num (call $proxy_set_buffer_bytes (i32.const 7) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))
        (call $say_num (call $proxy_get_buffer_status (i32.const 7) (i32.const 1032) (i32.const 1036)))
        (call $say_num (i32.load (i32.const 1032)))
        (i32.const 1))
    "#)
    .plugin_config("{\"rules\":[]}")
    .vm_config("vm-config")
    .start();
    assert_eq!(
        said(&mut vm),
        ["0", "{\"rules\":[]}", "0", "vm-config", "2", "0", "12"]
    );
}

#[test]
fn buffers_that_do_not_exist_are_not_found_and_unknown_types_are_bad_arguments() {
    let mut vm = vm(r#"
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (call $say_num (call $proxy_get_buffer_bytes (i32.const 2) (i32.const 0) (i32.const 10) (i32.const 1024) (i32.const 1028)))
        (call $say_num (call $proxy_get_buffer_bytes (i32.const 4) (i32.const 0) (i32.const 10) (i32.const 1024) (i32.const 1028)))
        (call $say_num (call $proxy_get_buffer_bytes (i32.const 8) (i32.const 0) (i32.const 10) (i32.const 1024) (i32.const 1028)))
        (call $say_num (call $proxy_get_buffer_bytes (i32.const 9) (i32.const 0) (i32.const 10) (i32.const 1024) (i32.const 1028)))
        (call $say_num (call $proxy_get_buffer_status (i32.const 5) (i32.const 1024) (i32.const 1028)))
        (call $say_num (call $proxy_set_buffer_bytes (i32.const 3) (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)))
        (i32.const 0))
      (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
        (call $say_num (call $proxy_get_buffer_bytes (i32.const 0) (i32.const 0) (i32.const 10) (i32.const 1024) (i32.const 1028)))
        (i32.const 1))
    "#);
    assert_eq!(said(&mut vm), ["1"], "no request body in the root context");
    send_request_headers(&mut vm);
    assert_eq!(said(&mut vm), ["1", "1", "1", "2", "1", "1"]);
}

#[test]
fn a_response_body_replaced_by_the_filter_is_what_goes_downstream() {
    let mut vm = vm(r#"
      (data (i32.const 0) "redacted")
      (func (export "proxy_on_response_body") (param $id i32) (param $size i32) (param $eos i32) (result i32)
        (drop (call $proxy_set_buffer_bytes (i32.const 1) (i32.const 0) (local.get $size) (i32.const 0) (i32.const 8)))
        (i32.const 0))
    "#);
    let mut stream = vm.stream().unwrap();
    stream.request_headers(get("/"), true).unwrap();
    stream
        .response_headers([(":status", "200")], false)
        .unwrap();
    assert_eq!(
        stream.response_body(b"secret-token", true).unwrap().forward,
        b"redacted"
    );
}
