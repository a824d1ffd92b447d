//! Start-up, configuration and the stream callbacks.

use host_harness::{Action, HarnessError};

use crate::support::plugin;

#[test]
fn a_header_added_in_request_headers_goes_upstream() {
    let plugin = plugin(
        r#"
        (data (i32.const 0) "x-added")
        (data (i32.const 16) "yes")
        (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
          (drop (call $proxy_add_header_map_value (i32.const 0) (i32.const 0) (i32.const 7) (i32.const 16) (i32.const 3)))
          (i32.const 0))
        "#,
    )
    .build()
    .unwrap();
    let mut vm = plugin.start_vm().unwrap();
    let mut stream = vm.stream().unwrap();
    let action = stream
        .request_headers(
            [(":method", "GET"), (":path", "/"), (":authority", "a")],
            true,
        )
        .unwrap();
    assert_eq!(action, Action::Continue);
    assert_eq!(
        stream
            .upstream_request_headers()
            .unwrap()
            .get_str("x-added"),
        Some("yes")
    );
    stream.finish().unwrap();
    assert!(vm.stream_ids().is_empty());
}

#[test]
fn a_rejected_configuration_carries_the_plugins_log() {
    let plugin = plugin(
        r#"
        (data (i32.const 0) "bad config: missing rules")
        (func (export "proxy_on_configure") (param i32 i32) (result i32)
          (drop (call $proxy_log (i32.const 4) (i32.const 0) (i32.const 25)))
          (i32.const 0))
        "#,
    )
    .build()
    .unwrap();
    match plugin.start_vm() {
        Err(error @ HarnessError::ConfigureRejected { .. }) => {
            assert!(
                error.to_string().ends_with("bad config: missing rules"),
                "{error}"
            );
        }
        other => panic!("expected a rejected configuration, got {other:?}"),
    }
}
