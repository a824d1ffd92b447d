//! The scaffold every test module shares: a memory, a bump allocator, the ABI marker and callbacks that
//! accept their configuration, so a test writes only the imports and functions it is about.

use host_harness::{ManualClock, Plugin, PluginBuilder};

/// Imports a test may use, declared once so modules can name them as `$proxy_*`.
pub const IMPORTS: &str = r#"
  (import "env" "proxy_log" (func $proxy_log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $proxy_add_header_map_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $proxy_get_header_map_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $proxy_get_header_map_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $proxy_send_local_response (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
"#;

/// A module of the scaffold plus `body` (functions and data; memory offsets below 1024 are free for data,
/// the allocator hands out memory from 64 KiB on).
pub fn module(body: &str) -> String {
    format!(
        r#"(module
  {IMPORTS}
  (memory (export "memory") 2)
  (global $bump (mut i32) (i32.const 65536))
  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $block i32)
    (local.set $block (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $size)))
    (local.get $block))
  (func (export "proxy_abi_version_0_2_1"))
  {body}
)"#
    )
}

/// A plugin builder for `body` on a fresh manual clock.
pub fn plugin(body: &str) -> PluginBuilder {
    Plugin::builder()
        .module_bytes(module(body))
        .clock(ManualClock::new())
}
