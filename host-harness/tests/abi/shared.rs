//! Shared data and shared queues across the VMs of a plugin, and metrics they share.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use host_harness::{MetricValue, Plugin, SharedRegistry, VmGroup};

use crate::support::{module, plugin, said, send_request_headers};

/// On request headers: reads key "k" (status, cas, value), then sets it to the request's `:path` with the
/// cas the request header `cas` carries in its first byte ('0' + n), logging the status.
const SHARED_DATA_FILTER: &str = r#"
  (data (i32.const 0) "k")
  (data (i32.const 16) ":path")
  (data (i32.const 32) "cas")
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $say_num (call $proxy_get_shared_data (i32.const 0) (i32.const 1) (i32.const 1024) (i32.const 1028) (i32.const 1032)))
    (call $say_num (i32.load (i32.const 1032)))
    (call $say_returned)
    (drop (call $proxy_get_header_map_value (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 1036) (i32.const 1040)))
    (drop (call $proxy_get_header_map_value (i32.const 0) (i32.const 32) (i32.const 3) (i32.const 1044) (i32.const 1048)))
    (call $say_num (call $proxy_set_shared_data (i32.const 0) (i32.const 1) (i32.load (i32.const 1036)) (i32.load (i32.const 1040))
      (i32.sub (i32.load8_u (i32.load (i32.const 1044))) (i32.const 48))))
    (i32.const 0))
"#;

#[test]
fn shared_data_is_seen_by_every_vm_and_a_stale_cas_is_refused() {
    let plugin = plugin(SHARED_DATA_FILTER).vm_id("tokens").build().unwrap();
    let mut first = plugin.start_vm().unwrap();
    let mut second = plugin.start_vm().unwrap();
    first
        .stream()
        .unwrap()
        .request_headers([(":path", "/one"), ("cas", "0")], true)
        .unwrap();
    assert_eq!(
        said(&mut first),
        ["1", "0", "", "0"],
        "absent, then an unconditional set"
    );
    second
        .stream()
        .unwrap()
        .request_headers([(":path", "/two"), ("cas", "1")], true)
        .unwrap();
    assert_eq!(
        said(&mut second),
        ["0", "1", "/one", "0"],
        "the first VM's value with cas 1; a matching cas wins"
    );
    first
        .stream()
        .unwrap()
        .request_headers([(":path", "/three"), ("cas", "1")], true)
        .unwrap();
    assert_eq!(
        said(&mut first),
        ["0", "2", "/two", "8"],
        "cas 1 is stale now: CAS_MISMATCH"
    );
    assert_eq!(plugin.shared_data("k"), Some((b"/two".to_vec(), 2)));
}

#[test]
fn shared_data_is_scoped_by_vm_id_within_one_registry() {
    let registry = SharedRegistry::new();
    let a = plugin(SHARED_DATA_FILTER)
        .vm_id("a")
        .shared_registry(registry.clone())
        .build()
        .unwrap();
    let b = plugin(SHARED_DATA_FILTER)
        .vm_id("b")
        .shared_registry(registry.clone())
        .build()
        .unwrap();
    a.start_vm()
        .unwrap()
        .stream()
        .unwrap()
        .request_headers([(":path", "/a"), ("cas", "0")], true)
        .unwrap();
    let mut vm_b = b.start_vm().unwrap();
    vm_b.stream()
        .unwrap()
        .request_headers([(":path", "/b"), ("cas", "0")], true)
        .unwrap();
    assert_eq!(
        said(&mut vm_b)[0],
        "1",
        "vm id b does not see vm id a's key"
    );
    assert_eq!(
        registry.get("a", b"k").map(|(value, _)| value),
        Some(b"/a".to_vec())
    );
}

/// Registers queue "jobs" at start; enqueues the request path on request headers; on queue-ready, logs the
/// queue id and drains it (logging each item, then the EMPTY status).
const QUEUE_FILTER: &str = r#"
  (data (i32.const 0) "jobs")
  (data (i32.const 16) ":path")
  (data (i32.const 32) "other")
  (global $queue (mut i32) (i32.const 0))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
    (drop (call $proxy_register_shared_queue (i32.const 0) (i32.const 4) (i32.const 1060)))
    (global.set $queue (i32.load (i32.const 1060)))
    (i32.const 1))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    (call $say_num (call $proxy_resolve_shared_queue (i32.const 32) (i32.const 5) (i32.const 0) (i32.const 4) (i32.const 1064)))
    (call $say_num (call $proxy_resolve_shared_queue (i32.const 48) (i32.const 6) (i32.const 0) (i32.const 4) (i32.const 1064)))
    (drop (call $proxy_get_header_map_value (i32.const 0) (i32.const 16) (i32.const 5) (i32.const 1036) (i32.const 1040)))
    (call $say_num (call $proxy_enqueue_shared_queue (i32.load (i32.const 1064)) (i32.load (i32.const 1036)) (i32.load (i32.const 1040))))
    (call $say_num (call $proxy_enqueue_shared_queue (i32.const 999) (i32.const 0) (i32.const 0)))
    (i32.const 0))
  (data (i32.const 48) "queues")
  (func (export "proxy_on_queue_ready") (param $root i32) (param $queue i32)
    (call $say_num (local.get $queue))
    (block $done
      (loop $next
        (br_if $done (call $proxy_dequeue_shared_queue (local.get $queue) (i32.const 1024) (i32.const 1028)))
        (call $say_returned)
        (br $next)))
    (call $say_num (call $proxy_dequeue_shared_queue (local.get $queue) (i32.const 1024) (i32.const 1028)))
    (call $say_num (call $proxy_dequeue_shared_queue (i32.const 999) (i32.const 1024) (i32.const 1028))))
"#;

#[test]
fn an_item_enqueued_by_one_vm_reaches_the_vm_that_registered_the_queue() {
    let plugin = plugin(QUEUE_FILTER).vm_id("queues").build().unwrap();
    let mut group = VmGroup::start(&plugin, 2).unwrap();
    said(group.vm(0).unwrap());
    said(group.vm(1).unwrap());
    // The second VM registered last, so it owns the notifications.
    let producer = group.vm(0).unwrap();
    producer
        .stream()
        .unwrap()
        .request_headers([(":path", "/job-1")], true)
        .unwrap();
    producer
        .stream()
        .unwrap()
        .request_headers([(":path", "/job-2")], true)
        .unwrap();
    assert_eq!(
        said(producer),
        ["1", "0", "0", "1", "1", "0", "0", "1"],
        "unknown vm id NOT_FOUND, resolved, enqueued, unknown queue NOT_FOUND"
    );
    group.advance(Duration::ZERO).unwrap();
    assert!(said(group.vm(0).unwrap()).is_empty());
    assert_eq!(
        said(group.vm(1).unwrap()),
        ["1", "/job-1", "/job-2", "7", "1"],
        "items in order, then EMPTY, then NOT_FOUND"
    );
}

#[test]
fn the_owner_is_woken_when_another_vm_enqueues() {
    let plugin = plugin(QUEUE_FILTER).vm_id("queues").build().unwrap();
    let mut producer = plugin.start_vm().unwrap();
    let owner = plugin.start_vm().unwrap();
    let wakes = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&wakes);
    owner.set_waker(Some(Arc::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    })));
    producer
        .stream()
        .unwrap()
        .request_headers([(":path", "/x")], true)
        .unwrap();
    assert_eq!(wakes.load(Ordering::SeqCst), 1);
    assert_eq!(
        owner.next_due_nanos(),
        Some(plugin.clock().now_nanos()),
        "a ready queue is due now"
    );
}

#[test]
fn metrics_defined_by_every_vm_are_one_metric_with_envoys_semantics() {
    let plugin = Plugin::builder()
        .module_bytes(module(r#"
          (data (i32.const 0) "requests")
          (data (i32.const 16) "in_flight")
          (data (i32.const 32) "latency_ms")
          (global $counter (mut i32) (i32.const 0))
          (global $gauge (mut i32) (i32.const 0))
          (global $histogram (mut i32) (i32.const 0))
          (func (export "proxy_on_vm_start") (param i32 i32) (result i32)
            (drop (call $proxy_define_metric (i32.const 0) (i32.const 0) (i32.const 8) (i32.const 1024)))
            (global.set $counter (i32.load (i32.const 1024)))
            (drop (call $proxy_define_metric (i32.const 1) (i32.const 16) (i32.const 9) (i32.const 1024)))
            (global.set $gauge (i32.load (i32.const 1024)))
            (drop (call $proxy_define_metric (i32.const 2) (i32.const 32) (i32.const 10) (i32.const 1024)))
            (global.set $histogram (i32.load (i32.const 1024)))
            (call $say_num (call $proxy_define_metric (i32.const 3) (i32.const 0) (i32.const 8) (i32.const 1024)))
            (i32.const 1))
          (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
            (call $say_num (call $proxy_increment_metric (global.get $counter) (i64.const 1)))
            (call $say_num (call $proxy_increment_metric (global.get $counter) (i64.const -1)))
            (call $say_num (call $proxy_increment_metric (global.get $gauge) (i64.const 3)))
            (call $say_num (call $proxy_increment_metric (global.get $gauge) (i64.const -1)))
            (call $say_num (call $proxy_record_metric (global.get $histogram) (i64.const 42)))
            (call $say_num (call $proxy_increment_metric (global.get $histogram) (i64.const 1)))
            (call $say_num (call $proxy_get_metric (global.get $histogram) (i32.const 1032)))
            (call $say_num (call $proxy_get_metric (i32.const 999) (i32.const 1032)))
            (call $say_num (call $proxy_record_metric (i32.const 999) (i64.const 1)))
            (call $say_num (call $proxy_get_metric (global.get $counter) (i32.const 1032)))
            (call $say_num64 (i64.load (i32.const 1032)))
            (i32.const 0))
        "#))
        .build()
        .unwrap();
    let mut first = plugin.start_vm().unwrap();
    let mut second = plugin.start_vm().unwrap();
    assert_eq!(
        said(&mut first),
        ["2"],
        "an unknown metric type is BAD_ARGUMENT"
    );
    send_request_headers(&mut first);
    send_request_headers(&mut second);
    assert_eq!(
        said(&mut first),
        ["0", "2", "0", "0", "0", "2", "2", "2", "1", "0", "1"]
    );
    assert_eq!(
        said(&mut second).last().map(String::as_str),
        Some("2"),
        "the second VM counts into the same counter"
    );
    assert_eq!(plugin.metric("requests"), Some(MetricValue::Counter(2)));
    assert_eq!(plugin.metric("in_flight"), Some(MetricValue::Gauge(4)));
    let Some(MetricValue::Histogram(latency)) = plugin.metric("latency_ms") else {
        panic!("no histogram")
    };
    assert_eq!((latency.count, latency.sum), (2, 84));
    assert_eq!(plugin.metrics().len(), 3);
}
