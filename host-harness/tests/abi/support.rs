//! The scaffold every test module shares: all 39 proxy-wasm imports, a memory, a growing bump allocator,
//! the ABI marker and a few helpers, so a test writes only the callbacks it is about.
//!
//! Memory map: offsets 0..1024 hold a test's data segments, 1024..2048 are return slots (`1024` and `1028`
//! receive the pointer and size of returned data), 2048..2100 format numbers, and the allocator hands out
//! memory from 64 KiB on. Helpers: `$say(ptr, len)` logs bytes at INFO, `$say_num(n)` / `$say_num64(n)` log a
//! number in decimal, `$say_returned` logs the data whose pointer and size sit at 1024/1028.

use host_harness::{GuestTrap, LogSource, ManualClock, Plugin, PluginBuilder, Vm};

/// Every host function of ABI v0.2.1, as `$name`.
pub const PROXY_IMPORTS: &str = r#"
  (import "env" "proxy_done" (func $proxy_done (result i32)))
  (import "env" "proxy_set_effective_context" (func $proxy_set_effective_context (param i32) (result i32)))
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_log_level" (func $proxy_get_log_level (param i32) (result i32)))
  (import "env" "proxy_get_current_time_nanoseconds" (func $proxy_get_current_time_nanoseconds (param i32) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $proxy_set_tick_period_milliseconds (param i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $proxy_set_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_bytes" (func $proxy_get_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_buffer_status" (func $proxy_get_buffer_status (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_size" (func $proxy_get_header_map_size (param i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $proxy_get_header_map_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_header_map_pairs" (func $proxy_set_header_map_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $proxy_get_header_map_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $proxy_add_header_map_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_replace_header_map_value" (func $proxy_replace_header_map_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_remove_header_map_value" (func $proxy_remove_header_map_value (param i32 i32 i32) (result i32)))
  (import "env" "proxy_continue_stream" (func $proxy_continue_stream (param i32) (result i32)))
  (import "env" "proxy_close_stream" (func $proxy_close_stream (param i32) (result i32)))
  (import "env" "proxy_get_status" (func $proxy_get_status (param i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $proxy_send_local_response (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_http_call" (func $proxy_http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_call" (func $proxy_grpc_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_stream" (func $proxy_grpc_stream (param i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_send" (func $proxy_grpc_send (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_grpc_cancel" (func $proxy_grpc_cancel (param i32) (result i32)))
  (import "env" "proxy_grpc_close" (func $proxy_grpc_close (param i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $proxy_set_shared_data (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $proxy_get_shared_data (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_register_shared_queue" (func $proxy_register_shared_queue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_resolve_shared_queue" (func $proxy_resolve_shared_queue (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_enqueue_shared_queue" (func $proxy_enqueue_shared_queue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_dequeue_shared_queue" (func $proxy_dequeue_shared_queue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_define_metric" (func $proxy_define_metric (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_record_metric" (func $proxy_record_metric (param i32 i64) (result i32)))
  (import "env" "proxy_increment_metric" (func $proxy_increment_metric (param i32 i64) (result i32)))
  (import "env" "proxy_get_metric" (func $proxy_get_metric (param i32 i32) (result i32)))
  (import "env" "proxy_get_property" (func $proxy_get_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_property" (func $proxy_set_property (param i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_call_foreign_function" (func $proxy_call_foreign_function (param i32 i32 i32 i32 i32 i32) (result i32)))
"#;

/// The scaffold's own functions and exports (after the imports).
const SCAFFOLD: &str = r#"
  (memory (export "memory") 2)
  (global $bump (mut i32) (i32.const 65536))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $block i32)
    (local $end i32)
    (local.set $block (global.get $bump))
    (local.set $end (i32.add (local.get $block) (local.get $size)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.const 1)
        (i32.div_u (i32.sub (local.get $end) (i32.mul (memory.size) (i32.const 65536))) (i32.const 65536)))))))
    (global.set $bump (local.get $end))
    (local.get $block))
  (func (export "proxy_abi_version_0_2_1"))
  (func $say (param $ptr i32) (param $len i32)
    (drop (call $proxy_log (i32.const 2) (local.get $ptr) (local.get $len))))
  (func $say_num (param $n i32)
    (local $at i32)
    (local.set $at (i32.const 2100))
    (loop $digits
      (local.set $at (i32.sub (local.get $at) (i32.const 1)))
      (i32.store8 (local.get $at) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
      (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
      (br_if $digits (local.get $n)))
    (call $say (local.get $at) (i32.sub (i32.const 2100) (local.get $at))))
  (func $say_num64 (param $n i64)
    (local $at i32)
    (local.set $at (i32.const 2100))
    (loop $digits
      (local.set $at (i32.sub (local.get $at) (i32.const 1)))
      (i64.store8 (local.get $at) (i64.add (i64.const 48) (i64.rem_u (local.get $n) (i64.const 10))))
      (local.set $n (i64.div_u (local.get $n) (i64.const 10)))
      (br_if $digits (i64.ne (local.get $n) (i64.const 0))))
    (call $say (local.get $at) (i32.sub (i32.const 2100) (local.get $at))))
  (func $say_returned
    (call $say (i32.load (i32.const 1024)) (i32.load (i32.const 1028))))
"#;

/// A module of the scaffold plus `body`.
pub fn module(body: &str) -> String {
    module_with("", body)
}

/// A module of the scaffold with extra imports (WASI, say) and `body`.
pub fn module_with(extra_imports: &str, body: &str) -> String {
    format!("(module\n{PROXY_IMPORTS}\n{extra_imports}\n{SCAFFOLD}\n{body}\n)")
}

/// A plugin builder for `body` on a fresh manual clock.
pub fn plugin(body: &str) -> PluginBuilder {
    Plugin::builder()
        .module_bytes(module(body))
        .clock(ManualClock::new())
}

/// Builds the plugin and starts one VM of it, in tests where neither may fail.
pub trait StartVm {
    /// The started VM.
    fn start(self) -> Vm;
}

impl StartVm for PluginBuilder {
    fn start(self) -> Vm {
        self.build().unwrap().start_vm().unwrap()
    }
}

/// Starts one VM of a plugin for `body`.
pub fn vm(body: &str) -> Vm {
    plugin(body).start()
}

/// What the guest logged through `proxy_log` since the last call, in order.
pub fn said(vm: &mut Vm) -> Vec<String> {
    vm.take_logs()
        .into_iter()
        .filter(|record| record.source == LogSource::ProxyLog)
        .map(|record| record.message)
        .collect()
}

/// Request headers of a plain GET.
pub fn get(path: &str) -> [(&'static str, String); 3] {
    [
        (":method", "GET".to_owned()),
        (":path", path.to_owned()),
        (":authority", "example.test".to_owned()),
    ]
}

/// Runs the request headers of a plain `GET /` (ending the stream) on a new stream of `vm`.
pub fn send_request_headers(vm: &mut Vm) {
    vm.stream()
        .unwrap()
        .request_headers(get("/"), true)
        .unwrap();
}

/// The trap that failed `vm` while it ran the request headers of a plain `GET /`, for tests of a callback
/// that must trap.
pub fn trap_on_request_headers(vm: &mut Vm) -> &GuestTrap {
    send_request_headers(vm);
    vm.failure().unwrap()
}
