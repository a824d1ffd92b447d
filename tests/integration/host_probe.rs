//! The host with a module built by the Rust SDK: the probe filter (`PROBE_WASM`) drives host calls from a
//! plan, so these tests check what the SDK makes of each answer: no status it cannot take, contexts
//! routed right when many streams interleave, http calls routed back to the stream that made them, and
//! the failure policies with a real SDK module.

use std::time::Duration;

use host_harness::{
    Action, FailurePolicy, HttpCallResponse, LogSource, ManualClock, MockCluster, MockReply,
    Plugin, PluginBuilder, ReloadBackoff, StreamEvent, StreamId, Vm, VmGroup,
};
use serde_json::{Value, json};

/// A plugin of the probe with `plan` as its configuration, on a fresh manual clock.
fn probe(plan: &Value) -> PluginBuilder {
    Plugin::builder()
        .module_file(env!("PROBE_WASM"))
        .plugin_config(plan.to_string())
        .clock(ManualClock::new())
}

/// The probe's result lines since the last call: `<root|http> <callback>#<n> <op>: <result>`.
fn results(vm: &mut Vm) -> Vec<String> {
    vm.take_logs()
        .into_iter()
        .filter(|record| record.source == LogSource::ProxyLog)
        .filter_map(|record| record.message.strip_prefix("probe ").map(str::to_owned))
        .collect()
}

fn request(path: &str) -> [(&'static str, String); 4] {
    [
        (":method", "GET".to_owned()),
        (":path", path.to_owned()),
        (":authority", "probe.test".to_owned()),
        (":scheme", "http".to_owned()),
    ]
}

/// Every call here has an answer the SDK's wrapper must take without panicking: absent values,
/// refusals, empty queues, unknown ids. A panic would trap the VM. (The request trailers are out of reach
/// while the request headers are processed; Envoy answers BAD_ARGUMENT, which the SDK's own wrappers do
/// not take, so that one is read with the probe's raw call.)
#[test]
fn the_sdk_takes_every_refusal_and_absence_the_host_answers_with() {
    let plan = json!({
        "on_configure": [
            {"op": "register_queue", "name": "jobs"},
            {"op": "define_metric", "kind": "counter", "name": "probe_requests"}
        ],
        "on_request_headers": [
            {"op": "get_header", "map": "request_headers", "name": "x-absent"},
            {"op": "get_header_raw", "map": "request_trailers", "name": "x-absent"},
            {"op": "get_buffer", "buffer": "request_body"},
            {"op": "get_property", "path": ["no", "such", "property"]},
            {"op": "get_property", "path": ["request", "path"]},
            {"op": "get_shared_data", "key": "absent"},
            {"op": "set_shared_data", "key": "k", "value": "v", "cas": 12345},
            {"op": "get_shared_data", "key": "k"},
            {"op": "set_shared_data", "key": "k", "value": "w", "cas": "stale"},
            {"op": "dequeue", "queue": "jobs"},
            {"op": "dequeue", "queue": 4242},
            {"op": "enqueue", "queue": 4242, "value": "x"},
            {"op": "resolve_queue", "vm_id": "other", "name": "jobs"},
            {"op": "increment_metric", "metric": "probe_requests", "by": -1},
            {"op": "increment_metric", "metric": 999996, "by": 1},
            {"op": "get_metric", "metric": 999999},
            {"op": "http_call", "cluster": "absent", "headers": [[":method", "GET"], [":path", "/"], [":authority", "a"]]},
            {"op": "http_call", "cluster": "side", "headers": [[":method", "GET"], [":path", "/"]]},
            {"op": "call_foreign_function", "name": "absent", "argument": ""},
            {"op": "get_log_level"},
            {"op": "get_current_time"}
        ],
        "on_log": [
            {"op": "get_header", "map": "request_trailers", "name": "x-absent"},
            {"op": "get_header", "map": "request_headers", "name": ":path"}
        ]
    });
    let mut vm = probe(&plan)
        .cluster("side", MockCluster::silent())
        .build()
        .unwrap()
        .start_vm()
        .unwrap();
    results(&mut vm);
    let id = vm.create_stream(Default::default()).unwrap();
    let action = vm
        .request_headers(id, request("/refusals").into(), true)
        .unwrap();
    assert!(!vm.is_failed(), "the probe trapped: {:?}", vm.failure());
    assert_eq!(action, Action::Continue);
    vm.finish_stream(id).unwrap();
    let lines = results(&mut vm);
    let expected = [
        "http on_request_headers#1 get_header: not_found",
        "http on_request_headers#1 get_header_raw: bad_argument",
        "http on_request_headers#1 get_buffer: ok none",
        "http on_request_headers#1 get_property: none",
        "http on_request_headers#1 get_property: ok \"/refusals\"",
        "http on_request_headers#1 get_shared_data: not_found",
        "http on_request_headers#1 set_shared_data: ok",
        "http on_request_headers#1 get_shared_data: ok \"v\"",
        "http on_request_headers#1 set_shared_data: cas_mismatch",
        "http on_request_headers#1 dequeue: empty",
        "http on_request_headers#1 dequeue: not_found",
        "http on_request_headers#1 enqueue: not_found",
        "http on_request_headers#1 resolve_queue: not_found",
        "http on_request_headers#1 increment_metric: bad_argument",
        "http on_request_headers#1 increment_metric: not_found",
        "http on_request_headers#1 get_metric: bad_argument",
        "http on_request_headers#1 http_call: bad_argument",
        "http on_request_headers#1 http_call: bad_argument",
        "http on_request_headers#1 call_foreign_function: not_found",
        "http on_request_headers#1 get_log_level: ok trace",
        "http on_request_headers#1 get_current_time: ok after_2020",
        "http on_log#1 get_header: not_found",
        "http on_log#1 get_header: ok \"/refusals\"",
    ];
    assert_eq!(lines, expected);
}

/// Many streams on one VM, stepped in a scrambled order: the SDK's dispatcher panics on a context it never
/// saw, so every callback reaching the right context shows in each stream's own header.
#[test]
fn interleaved_streams_each_reach_their_own_context() {
    let plan = json!({
        "on_request_headers": [
            {"op": "get_header", "map": "request_headers", "name": ":path"},
            {"op": "emit_results", "map": "request_headers"}
        ],
        "on_response_headers": [
            {"op": "callback_args"},
            {"op": "emit_results", "map": "response_headers"}
        ]
    });
    let mut vm = probe(&plan).build().unwrap().start_vm().unwrap();
    let ids: Vec<StreamId> = (0..24)
        .map(|_| vm.create_stream(Default::default()).unwrap())
        .collect();
    for (index, id) in ids.iter().enumerate().rev() {
        vm.request_headers(*id, request(&format!("/stream/{index}")).into(), true)
            .unwrap();
    }
    for (index, id) in ids.iter().enumerate().filter(|(index, _)| index % 2 == 0) {
        vm.response_headers(*id, [(":status", "200")].into(), true)
            .unwrap();
        vm.finish_stream(*id).unwrap();
        assert!(index % 2 == 0);
    }
    for (index, id) in ids.iter().enumerate() {
        if index % 2 == 0 {
            assert!(vm.stream_state(*id).is_none(), "finished streams are gone");
            continue;
        }
        let upstream = vm.stream_state(*id).unwrap().request_headers();
        let expected = format!("on_request_headers#1 get_header: ok \"/stream/{index}\"");
        assert_eq!(upstream.get_str("x-probe-1"), Some(expected.as_str()));
        vm.finish_stream(*id).unwrap();
    }
    assert!(!vm.is_failed());
    assert!(vm.stream_ids().is_empty());
}

/// Calls from several paused streams to an embedder cluster, answered out of order: the SDK routes each
/// response to the stream that made the call, which adds the body it got and resumes.
#[test]
fn http_call_responses_reach_the_stream_that_made_the_call() {
    let plan = json!({
        "on_request_headers": [
            {"op": "http_call", "cluster": "tokens", "headers": [[":method", "GET"], [":path", "/token"], [":authority", "tokens.test"]], "timeout_ms": 5000},
            {"op": "pause"}
        ],
        "on_http_call_response": [
            {"op": "callback_args"},
            {"op": "get_buffer", "buffer": "http_call_response_body"},
            {"op": "emit_results", "map": "request_headers"},
            {"op": "resume_request"}
        ]
    });
    let mut vm = probe(&plan)
        .embedder_cluster("tokens")
        .build()
        .unwrap()
        .start_vm()
        .unwrap();
    let first = vm.create_stream(Default::default()).unwrap();
    let second = vm.create_stream(Default::default()).unwrap();
    assert_eq!(
        vm.request_headers(first, request("/a").into(), true)
            .unwrap(),
        Action::Pause
    );
    assert_eq!(
        vm.request_headers(second, request("/b").into(), true)
            .unwrap(),
        Action::Pause
    );
    let calls = vm.take_pending_http_calls();
    assert_eq!(calls.len(), 2);
    vm.deliver_http_call_response(
        calls[1].token,
        Ok(HttpCallResponse::new(200).body("for-second")),
    )
    .unwrap();
    vm.deliver_http_call_response(
        calls[0].token,
        Ok(HttpCallResponse::new(200).body("for-first")),
    )
    .unwrap();
    assert_eq!(
        vm.take_stream_events(),
        [
            StreamEvent::RequestResumed(second),
            StreamEvent::RequestResumed(first)
        ]
    );
    for (id, body) in [(first, "for-first"), (second, "for-second")] {
        let headers = vm.stream_state(id).unwrap().request_headers();
        let got = headers
            .iter()
            .filter(|(name, _)| name.starts_with(b"x-probe-"))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
        let got: Vec<String> = got.collect();
        let expected = [
            "on_request_headers#1 http_call: ok".to_owned(),
            format!(
                "on_http_call_response#1 callback_args: ok headers=1 body_size={} trailers=0",
                body.len()
            ),
            format!("on_http_call_response#1 get_buffer: ok \"{body}\""),
        ];
        assert_eq!(got, expected);
        assert!(!vm.stream_state(id).unwrap().is_request_paused());
    }
}

/// Shared data written by one VM is read by another with the cas the host issued; a stale cas loses.
#[test]
fn shared_data_through_the_sdk_across_vms() {
    let plan = json!({
        "on_request_headers": [
            {"op": "get_shared_data", "key": "lease"},
            {"op": "set_shared_data", "key": "lease", "value": "taken", "cas": "last"},
            {"op": "get_shared_data", "key": "lease"}
        ]
    });
    let plugin = probe(&plan).vm_id("probes").build().unwrap();
    let mut group = VmGroup::start(&plugin, 2).unwrap();
    for vm in group.vms() {
        results(vm);
    }
    let first = group.vm(0).unwrap();
    first
        .stream()
        .unwrap()
        .request_headers(request("/"), true)
        .unwrap();
    assert_eq!(
        results(first),
        [
            "http on_request_headers#1 get_shared_data: not_found",
            "http on_request_headers#1 set_shared_data: ok",
            "http on_request_headers#1 get_shared_data: ok \"taken\"",
        ]
    );
    let second = group.vm(1).unwrap();
    second
        .stream()
        .unwrap()
        .request_headers(request("/"), true)
        .unwrap();
    assert_eq!(
        results(second)[0],
        "http on_request_headers#1 get_shared_data: ok \"taken\""
    );
    assert_eq!(
        plugin.shared_data("lease").map(|(value, _)| value),
        Some(b"taken".to_vec())
    );
}

/// A queue registered at configuration is drained by its VM when another VM enqueues.
#[test]
fn queue_items_reach_the_registering_vm_through_the_sdk() {
    let plan = json!({
        "on_configure": [{"op": "register_queue", "name": "jobs"}],
        "on_request_headers": [
            {"op": "resolve_queue", "vm_id": "probes", "name": "jobs"},
            {"op": "enqueue", "queue": "jobs", "value": "job-1"}
        ],
        "on_queue_ready": [
            {"op": "callback_args"},
            {"op": "dequeue", "queue": "jobs"},
            {"op": "dequeue", "queue": "jobs"}
        ]
    });
    let plugin = probe(&plan).vm_id("probes").build().unwrap();
    let mut group = VmGroup::start(&plugin, 2).unwrap();
    for vm in group.vms() {
        results(vm);
    }
    group
        .vm(0)
        .unwrap()
        .stream()
        .unwrap()
        .request_headers(request("/"), true)
        .unwrap();
    group.advance(Duration::ZERO).unwrap();
    let owner = results(group.vm(1).unwrap());
    assert_eq!(owner.len(), 3, "{owner:?}");
    assert_eq!(owner[1], "root on_queue_ready#1 dequeue: ok \"job-1\"");
    assert_eq!(owner[2], "root on_queue_ready#1 dequeue: empty");
}

/// Ticks through the SDK's `set_tick_period`, on every VM of a group.
#[test]
fn ticks_through_the_sdk_on_every_vm() {
    let plan = json!({
        "on_configure": [{"op": "set_tick_period", "ms": 250}],
        "on_tick": [{"op": "get_current_time"}]
    });
    let plugin = probe(&plan).build().unwrap();
    let mut group = VmGroup::start(&plugin, 2).unwrap();
    group.advance(Duration::from_secs(1)).unwrap();
    for vm in group.vms() {
        let ticks: Vec<String> = results(vm)
            .into_iter()
            .filter(|line| line.starts_with("root on_tick"))
            .collect();
        assert_eq!(ticks.len(), 4, "{ticks:?}");
        assert_eq!(ticks[3], "root on_tick#4 get_current_time: ok after_2020");
    }
}

/// An SDK module that traps under fail-reload: 503 meanwhile, a fresh VM after the backoff that serves
/// again (its configuration ran anew).
#[test]
fn fail_reload_replaces_a_trapped_sdk_vm() {
    let plan = json!({
        "on_request_body": [{"op": "trap"}],
        "on_request_headers": [{"op": "get_header", "map": "request_headers", "name": ":path"}]
    });
    let clock = ManualClock::new();
    let mut vm = probe(&plan)
        .clock(clock.clone())
        .failure_policy(FailurePolicy::FailReload)
        .reload_backoff(ReloadBackoff {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(2),
        })
        .build()
        .unwrap()
        .start_vm()
        .unwrap();
    let mut doomed = vm.stream().unwrap();
    doomed.request_headers(request("/doomed"), false).unwrap();
    let chunk = doomed.request_body(b"boom", true).unwrap();
    assert_eq!(chunk.action, Action::Pause);
    assert_eq!(doomed.local_response().map(|local| local.status), Some(503));
    let trap = vm.failure().unwrap().clone();
    assert_eq!(trap.callback, "proxy_on_request_body");
    assert!(trap.message.contains("unreachable"), "{trap}");
    assert_eq!(
        vm.stream()
            .unwrap()
            .local_response()
            .map(|local| local.status),
        Some(503)
    );
    clock.advance(Duration::from_secs(2));
    results(&mut vm);
    let mut healthy = vm.stream().unwrap();
    assert_eq!(
        healthy.request_headers(request("/after"), true).unwrap(),
        Action::Continue
    );
    assert!(!vm.is_failed());
    assert_eq!(
        results(&mut vm),
        ["http on_request_headers#1 get_header: ok \"/after\""]
    );
}

/// A mock token endpoint answering after a delay, through the SDK's callout bookkeeping.
#[test]
fn a_delayed_mock_response_resumes_the_request_through_the_sdk() {
    let plan = json!({
        "on_request_headers": [
            {"op": "http_call", "cluster": "side", "headers": [[":method", "POST"], [":path", "/token"], [":authority", "side"]], "body": "grant", "timeout_ms": 1000},
            {"op": "pause"}
        ],
        "on_http_call_response": [
            {"op": "get_header", "map": "http_call_response_headers", "name": ":status"},
            {"op": "add_header", "map": "request_headers", "name": "authorization", "value": "Bearer from-side"},
            {"op": "resume_request"}
        ]
    });
    let side = MockCluster::new(|_| {
        MockReply::respond(HttpCallResponse::new(200)).after(Duration::from_millis(40))
    });
    let mut vm = probe(&plan)
        .cluster("side", side.clone())
        .build()
        .unwrap()
        .start_vm()
        .unwrap();
    let id = vm.create_stream(Default::default()).unwrap();
    assert_eq!(
        vm.request_headers(id, request("/").into(), true).unwrap(),
        Action::Pause
    );
    assert_eq!(side.requests()[0].body, b"grant");
    vm.advance(Duration::from_millis(39)).unwrap();
    assert!(vm.stream_state(id).unwrap().is_request_paused());
    vm.advance(Duration::from_millis(1)).unwrap();
    let state = vm.stream_state(id).unwrap();
    assert!(!state.is_request_paused());
    assert_eq!(
        state.request_headers().get_str("authorization"),
        Some("Bearer from-side")
    );
    assert!(
        results(&mut vm)
            .contains(&"http on_http_call_response#1 get_header: ok \"200\"".to_owned())
    );
}
