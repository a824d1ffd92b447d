//! Header maps: the exact encoding the guest receives, every map operation, phases and limits.

use host_harness::{Headers, TrapCause};

use crate::support::{StartVm, get, said, send_request_headers, trap_on_request_headers, vm};

/// Logs every status and the returned bytes, so the test sees exactly what the guest received.
const ECHO_REQUEST_HEADERS: &str = r#"
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $say_num (call $proxy_get_header_map_pairs (i32.const 0) (i32.const 1024) (i32.const 1028)))
    (call $say_num (i32.load (i32.const 1028)))
    (call $say_returned)
    (i32.const 0))
"#;

#[test]
fn header_pairs_arrive_in_the_spec_encoding() {
    let mut vm = vm(ECHO_REQUEST_HEADERS);
    let mut stream = vm.stream().unwrap();
    stream
        .request_headers([("a", "1"), ("b", "22")], true)
        .unwrap();
    let said = said(&mut vm);
    let expected: Vec<u8> = [
        &2u32.to_le_bytes()[..],
        &1u32.to_le_bytes(),
        &1u32.to_le_bytes(),
        &1u32.to_le_bytes(),
        &2u32.to_le_bytes(),
        b"a\x001\x00b\x0022\x00",
    ]
    .concat();
    assert_eq!(said[0], "0");
    assert_eq!(said[1], expected.len().to_string());
    assert_eq!(said[2].as_bytes(), expected.as_slice());
}

#[test]
fn an_empty_map_is_returned_as_size_zero() {
    let mut vm = vm(ECHO_REQUEST_HEADERS);
    let mut stream = vm.stream().unwrap();
    stream.request_headers(Headers::new(), true).unwrap();
    assert_eq!(said(&mut vm)[..2], ["0", "0"]);
}

#[test]
fn single_values_are_read_added_replaced_and_removed() {
    let mut vm = vm(r#"
      (data (i32.const 0) "x-one")
      (data (i32.const 16) "missing")
      (data (i32.const 32) "new")
      (data (i32.const 48) "x-drop")
      (data (i32.const 64) "X-Case")
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (call $say_num (call $proxy_get_header_map_value (i32.const 0) (i32.const 0) (i32.const 5) (i32.const 1024) (i32.const 1028)))
        (call $say_returned)
        (call $say_num (call $proxy_get_header_map_value (i32.const 0) (i32.const 16) (i32.const 7) (i32.const 1024) (i32.const 1028)))
        (call $say_num (call $proxy_add_header_map_value (i32.const 0) (i32.const 0) (i32.const 5) (i32.const 32) (i32.const 3)))
        (call $say_num (call $proxy_replace_header_map_value (i32.const 0) (i32.const 64) (i32.const 6) (i32.const 32) (i32.const 3)))
        (call $say_num (call $proxy_remove_header_map_value (i32.const 0) (i32.const 48) (i32.const 6)))
        (call $say_num (call $proxy_remove_header_map_value (i32.const 0) (i32.const 16) (i32.const 7)))
        (call $say_num (call $proxy_get_header_map_size (i32.const 0) (i32.const 1032)))
        (call $say_num (i32.load (i32.const 1032)))
        (i32.const 0))
    "#);
    let mut stream = vm.stream().unwrap();
    stream
        .request_headers([("x-one", "first"), ("x-drop", "a"), ("x-drop", "b")], true)
        .unwrap();
    let upstream = stream.upstream_request_headers().unwrap().to_string_pairs();
    let pairs: Vec<(&str, &str)> = upstream
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [("x-one", "first"), ("x-one", "new"), ("x-case", "new")]
    );
    // value, NOT_FOUND, then OK for add, replace, remove and removing an absent key; size of the final map.
    let size = 4
        + 3 * 8
        + ("x-one".len() + "first".len() + 2)
        + ("x-one".len() + 3 + 2)
        + ("x-case".len() + 3 + 2);
    assert_eq!(
        said(&mut vm),
        [
            "0",
            "first",
            "1",
            "0",
            "0",
            "0",
            "0",
            "0",
            &size.to_string()
        ]
    );
}

#[test]
fn set_pairs_replaces_the_whole_map_and_accepts_both_empty_forms() {
    let mut vm = vm(r#"
      (data (i32.const 0) "\01\00\00\00\02\00\00\00\01\00\00\00k2\00v\00")
      (data (i32.const 64) "\00")
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (call $say_num (call $proxy_set_header_map_pairs (i32.const 0) (i32.const 0) (i32.const 21)))
        (i32.const 0))
      (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32)
        (call $say_num (call $proxy_set_header_map_pairs (i32.const 2) (i32.const 64) (i32.const 1)))
        (i32.const 0))
    "#);
    let mut stream = vm.stream().unwrap();
    stream.request_headers(get("/"), true).unwrap();
    stream.response_headers([(":status", "200")], true).unwrap();
    let state = stream.state().unwrap();
    assert_eq!(
        state.request_headers().to_string_pairs(),
        [("k2".to_owned(), "v".to_owned())]
    );
    assert!(state.response_headers().is_empty());
    assert_eq!(said(&mut vm), ["0", "0"]);
}

#[test]
fn an_unknown_map_type_is_bad_argument() {
    let mut vm = vm(r#"
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (call $say_num (call $proxy_get_header_map_pairs (i32.const 8) (i32.const 1024) (i32.const 1028)))
        (call $say_num (call $proxy_remove_header_map_value (i32.const 99) (i32.const 0) (i32.const 0)))
        (i32.const 0))
    "#);
    send_request_headers(&mut vm);
    assert_eq!(said(&mut vm), ["2", "2"]);
}

#[test]
fn grpc_metadata_maps_are_empty() {
    let mut vm = vm(r#"
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (call $say_num (call $proxy_get_header_map_pairs (i32.const 4) (i32.const 1024) (i32.const 1028)))
        (call $say_num (i32.load (i32.const 1028)))
        (i32.const 0))
    "#);
    send_request_headers(&mut vm);
    assert_eq!(said(&mut vm), ["0", "0"]);
}

/// Reads `:path` from the request headers and `:status` from the response headers, and the request
/// trailer `t`, logging each status; in `on_log` also tries to add a request header.
const AVAILABILITY_PROBE: &str = r#"
  (data (i32.const 0) ":path")
  (data (i32.const 16) ":status")
  (data (i32.const 32) "t")
  (func $probe
    (call $say_num (call $proxy_get_header_map_value (i32.const 0) (i32.const 0) (i32.const 5) (i32.const 1024) (i32.const 1028)))
    (call $say_num (call $proxy_get_header_map_value (i32.const 2) (i32.const 16) (i32.const 7) (i32.const 1024) (i32.const 1028)))
    (call $say_num (call $proxy_get_header_map_value (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 1024) (i32.const 1028))))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (call $probe) (i32.const 0))
  (func (export "proxy_on_request_trailers") (param i32 i32) (result i32) (call $probe) (i32.const 0))
  (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) (call $probe) (i32.const 0))
  (func (export "proxy_on_log") (param i32)
    (call $probe)
    (call $say_num (call $proxy_add_header_map_value (i32.const 0) (i32.const 32) (i32.const 1) (i32.const 32) (i32.const 1)))
    (call $say_num (call $proxy_get_header_map_pairs (i32.const 1) (i32.const 1024) (i32.const 1028)))
    (call $say_num (i32.load (i32.const 1028))))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (call $say_num (call $proxy_get_header_map_pairs (i32.const 0) (i32.const 1024) (i32.const 1028)))
    (call $say_num (call $proxy_get_header_map_pairs (i32.const 6) (i32.const 1024) (i32.const 1028)))
    (i32.const 1))
"#;

#[test]
fn maps_are_reachable_only_where_envoy_lets_a_filter_reach_them() {
    let mut vm = vm(AVAILABILITY_PROBE);
    assert_eq!(
        said(&mut vm),
        ["2", "2"],
        "no stream map, no http-call map in the root context"
    );
    let mut stream = vm.stream().unwrap();
    stream.request_headers(get("/"), false).unwrap();
    stream.request_trailers([("t", "1")]).unwrap();
    stream.response_headers([(":status", "200")], true).unwrap();
    stream.finish().unwrap();
    let expected = [
        "0", "2", "2", // request headers: only the request headers
        "2", "2", "0", // request trailers: only the trailers (the headers were let go)
        "2", "0", "2", // response headers: only the response headers
        "0", "0", "1", "2", "0",
        "0", // on_log: headers readable, request trailers absent, nothing writable
    ];
    assert_eq!(said(&mut vm), expected);
    assert!(
        !vm.is_failed(),
        "a map out of reach is a status, not a trap"
    );
}

#[test]
fn headers_held_by_a_pause_stay_reachable_from_other_callbacks() {
    let mut vm = vm(r#"
      (data (i32.const 0) "x-token")
      (data (i32.const 16) "granted")
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) (i32.const 1))
      (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
        (drop (call $proxy_set_tick_period_milliseconds (i32.const 1))) (i32.const 1))
      (func (export "proxy_on_tick") (param i32)
        (drop (call $proxy_set_tick_period_milliseconds (i32.const 0)))
        (call $say_num (call $proxy_set_effective_context (i32.const 2)))
        (call $say_num (call $proxy_add_header_map_value (i32.const 0) (i32.const 0) (i32.const 7) (i32.const 16) (i32.const 7)))
        (call $say_num (call $proxy_continue_stream (i32.const 0))))
    "#);
    let id = vm.create_stream(Default::default()).unwrap();
    vm.request_headers(id, get("/").into(), true).unwrap();
    vm.advance(std::time::Duration::from_millis(1)).unwrap();
    assert_eq!(said(&mut vm), ["0", "0", "0"]);
    assert_eq!(
        vm.stream_state(id)
            .unwrap()
            .request_headers()
            .get_str("x-token"),
        Some("granted")
    );
    assert!(!vm.stream_state(id).unwrap().is_request_paused());
}

#[test]
fn a_map_with_more_fields_than_the_limit_is_refused() {
    let mut vm = vm(r#"
      (data (i32.const 0) "\ff\ff\ff\7f")
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (drop (call $proxy_set_header_map_pairs (i32.const 0) (i32.const 0) (i32.const 4)))
        (i32.const 0))
    "#);
    let trap = trap_on_request_headers(&mut vm);
    assert_eq!(
        trap.cause,
        TrapCause::HostCall {
            call: "proxy_set_header_map_pairs"
        }
    );
    assert!(
        trap.message
            .ends_with("serialized map has 2147483647 fields; the host accepts at most 1024"),
        "{}",
        trap.message
    );
}

#[test]
fn adding_past_the_field_limit_traps() {
    let plugin = crate::support::plugin(
        r#"
      (data (i32.const 0) "k")
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (loop $more
          (drop (call $proxy_add_header_map_value (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 1)))
          (br $more))
        (i32.const 0))
    "#,
    );
    let limits = host_harness::Limits {
        max_header_fields: 50,
        ..Default::default()
    };
    let mut vm = plugin.limits(limits).start();
    let trap = trap_on_request_headers(&mut vm);
    assert!(
        trap.message
            .ends_with("the map would hold 51 fields; the host accepts at most 50"),
        "{}",
        trap.message
    );
}

#[test]
fn a_truncated_map_is_refused() {
    let mut vm = vm(r#"
      (data (i32.const 0) "\01\00\00\00\05\00\00\00\05\00\00\00ab")
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
        (drop (call $proxy_set_header_map_pairs (i32.const 0) (i32.const 0) (i32.const 14)))
        (i32.const 0))
    "#);
    send_request_headers(&mut vm);
    assert!(
        vm.failure()
            .unwrap()
            .message
            .ends_with("serialized map is truncated: field data")
    );
}
