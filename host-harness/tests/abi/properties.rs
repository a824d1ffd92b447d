//! Properties: Envoy's paths and encodings, embedder-given values, and values the guest sets.

use host_harness::StreamInfo;

use crate::support::{StartVm, plugin, said};

/// Logs the status and value of each NUL-separated path in the data segment at 0, one per 64 bytes
/// (length in the first byte, path from the second).
fn property_reader(paths: &[&str]) -> String {
    let mut data = String::new();
    let mut reads = String::new();
    for (index, path) in paths.iter().enumerate() {
        let offset = index * 64;
        let escaped: String = path.bytes().map(|byte| format!("\\{byte:02x}")).collect();
        data.push_str(&format!("(data (i32.const {offset}) \"{escaped}\")\n"));
        reads.push_str(&format!(
            "(call $say_num (call $proxy_get_property (i32.const {offset}) (i32.const {}) (i32.const 1024) (i32.const 1028)))
             (call $say_returned)
             (i32.store (i32.const 1028) (i32.const 0))\n",
            path.len()
        ));
    }
    format!(
        r#"{data}
        (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
          {reads}
          (i32.const 0))"#
    )
}

#[test]
fn request_properties_come_from_the_headers_and_the_embedders_connection_details() {
    let paths = [
        "request\0path",
        "request\0url_path",
        "request\0query",
        "request\0host",
        "request\0method",
        "request\0scheme",
        "request\0headers\0x-trace",
        "request\0protocol",
        "source\0address",
        "destination\0address",
        "plugin_name",
        "plugin_root_id",
        "plugin_vm_id",
        "node\0id",
    ];
    let mut vm = plugin(&property_reader(&paths))
        .name("credential-injector")
        .root_id("root-a")
        .vm_id("vm-a")
        .property("node.id", "sidecar~10.0.0.1")
        .start();
    let info = StreamInfo::new()
        .source_address("10.1.2.3:5555")
        .destination_address("10.9.9.9:8080")
        .protocol("HTTP/1.1")
        .connection_id(77);
    let mut stream = vm.stream_with(info).unwrap();
    let headers = [
        (":method", "POST"),
        (":path", "/v1/messages?beta=true"),
        (":authority", "api.example"),
        (":scheme", "https"),
        ("x-trace", "t-1"),
    ];
    stream.request_headers(headers, true).unwrap();
    let expected = [
        "/v1/messages?beta=true",
        "/v1/messages",
        "beta=true",
        "api.example",
        "POST",
        "https",
        "t-1",
        "HTTP/1.1",
        "10.1.2.3:5555",
        "10.9.9.9:8080",
        "credential-injector",
        "root-a",
        "vm-a",
        "sidecar~10.0.0.1",
    ];
    let said = said(&mut vm);
    for (index, value) in expected.iter().enumerate() {
        assert_eq!(
            (said[2 * index].as_str(), said[2 * index + 1].as_str()),
            ("0", *value),
            "path {:?}",
            paths[index]
        );
    }
}

#[test]
fn integer_properties_are_eight_byte_little_endian() {
    let mut vm = plugin(
        r#"(data (i32.const 0) "connection\00id")
           (data (i32.const 64) "source\00port")
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (drop (call $proxy_get_property (i32.const 0) (i32.const 13) (i32.const 1024) (i32.const 1028)))
             (call $say_num (i32.load (i32.const 1028)))
             (call $say_num64 (i64.load (i32.load (i32.const 1024))))
             (drop (call $proxy_get_property (i32.const 64) (i32.const 11) (i32.const 1024) (i32.const 1028)))
             (call $say_num64 (i64.load (i32.load (i32.const 1024))))
             (i32.const 0))"#,
    )
    .start();
    let info = StreamInfo::new()
        .connection_id(0x0102_0304_0506)
        .source_address("[::1]:40123");
    vm.stream_with(info)
        .unwrap()
        .request_headers(crate::support::get("/"), true)
        .unwrap();
    assert_eq!(said(&mut vm), ["8", "1108152157446", "40123"]);
}

#[test]
fn unknown_paths_and_stream_paths_in_the_root_context_are_not_found() {
    let mut vm = plugin(
        r#"(data (i32.const 0) "request\00path")
           (data (i32.const 32) "no\00such")
           (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
             (call $say_num (call $proxy_get_property (i32.const 0) (i32.const 12) (i32.const 1024) (i32.const 1028)))
             (call $say_num (call $proxy_get_property (i32.const 32) (i32.const 7) (i32.const 1024) (i32.const 1028)))
             (i32.const 1))"#,
    )
    .start();
    assert_eq!(said(&mut vm), ["1", "1"]);
}

#[test]
fn a_property_the_guest_sets_is_read_back_in_its_own_context_only() {
    let mut vm = plugin(
        r#"(data (i32.const 0) "filter_state\00tenant")
           (data (i32.const 32) "acme")
           (global $first (mut i32) (i32.const 1))
           (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
             (if (global.get $first) (then
               (global.set $first (i32.const 0))
               (call $say_num (call $proxy_set_property (i32.const 0) (i32.const 19) (i32.const 32) (i32.const 4)))))
             (call $say_num (call $proxy_get_property (i32.const 0) (i32.const 19) (i32.const 1024) (i32.const 1028)))
             (i32.const 0))"#,
    )
    .start();
    vm.stream()
        .unwrap()
        .request_headers(crate::support::get("/"), true)
        .unwrap();
    assert_eq!(said(&mut vm), ["0", "0"]);
    vm.stream()
        .unwrap()
        .request_headers(crate::support::get("/"), true)
        .unwrap();
    assert_eq!(said(&mut vm), ["1"], "another stream does not see it");
}
