//! Differential conformance: the probe module with the same plan through real Envoy and through the
//! harness library; every observable (client responses, upstream and http-call requests, plugin logs,
//! custom metrics) must match. See `differential_runner` for how each side is driven.
//!
//! Without `ENVOY_BIN` (outside CI) each scenario still runs on the harness, so the plans stay valid.

use std::time::Duration;

use anyhow::Context as _;
use integration_tests::envoy::FailurePolicy;
use integration_tests::upstream::{FixedReply, Reply};
use serde_json::json;

use crate::differential_runner::{Scenario, Settle, request};

/// Results of the probe's operations, as the upstream saw them in `x-probe-<n>` headers.
fn probe_results(observation: &crate::differential_runner::Observation) -> Vec<String> {
    observation
        .upstream_requests
        .first()
        .map(|seen| {
            seen.headers
                .iter()
                .filter(|(name, _)| name.starts_with("x-probe-"))
                .map(|(_, value)| value.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// A plan that pauses the request on one http call to `path` on the side cluster and, in the call's
/// callback, reports its arguments, the raw `:status` and the body, then resumes; the scenarios that
/// use it make the call fail, so what is reported is the answer the host made up.
fn failing_http_call_plan(path: &str, timeout_ms: u64) -> serde_json::Value {
    json!({
        "on_request_headers": [
            {"op": "http_call", "cluster": "side", "headers": [[":method", "GET"], [":path", path], [":authority", "side.test"]], "timeout_ms": timeout_ms},
            {"op": "pause"}
        ],
        "on_http_call_response": [
            {"op": "callback_args"},
            {"op": "get_header_raw", "map": "http_call_response_headers", "name": ":status"},
            {"op": "get_buffer", "buffer": "http_call_response_body"},
            {"op": "emit_results", "map": "request_headers"},
            {"op": "resume_request"}
        ]
    })
}

#[test]
fn header_map_calls_agree() -> anyhow::Result<()> {
    let plan = json!({"on_request_headers": [
        {"op": "get_header", "map": "request_headers", "name": "x-test-keep"},
        {"op": "get_header", "map": "request_headers", "name": "x-test-absent"},
        {"op": "get_header", "map": "request_headers", "name": ":method"},
        {"op": "get_header", "map": "request_headers", "name": ":path"},
        {"op": "get_header", "map": "request_headers", "name": ":authority"},
        {"op": "get_header", "map": "request_headers", "name": "x-test-twice"},
        {"op": "add_header", "map": "request_headers", "name": "x-test-multi", "value": "1"},
        {"op": "add_header", "map": "request_headers", "name": "x-test-multi", "value": "2"},
        {"op": "replace_header", "map": "request_headers", "name": "x-test-created", "value": "by-replace"},
        {"op": "remove_header", "map": "request_headers", "name": "x-test-remove"},
        {"op": "remove_header", "map": "request_headers", "name": "x-test-never-there"},
        {"op": "get_headers", "map": "request_headers", "prefix": "x-test-"},
        {"op": "emit_results", "map": "request_headers"}
    ]});
    let sent = request("GET", "/headers?q=1")
        .header("x-test-keep", "kept")
        .header("x-test-remove", "gone")
        .header("x-test-twice", "a")
        .header("x-test-twice", "b");
    let seen = Scenario::new(plan).requests(vec![sent]).assert_same()?;
    let results = probe_results(&seen);
    assert_eq!(
        results.first().map(String::as_str),
        Some(r#"on_request_headers#1 get_header: ok "kept""#)
    );
    assert_eq!(
        results.get(1).map(String::as_str),
        Some("on_request_headers#1 get_header: not_found")
    );
    Ok(())
}

/// Envoy replaces a header by removing every value and appending the new one, so it moves to the end of
/// the map; the order shows in `get_headers` and on the wire.
#[test]
fn replacing_an_existing_header_moves_it_to_the_end() -> anyhow::Result<()> {
    let plan = json!({"on_request_headers": [
        {"op": "replace_header", "map": "request_headers", "name": "x-test-first", "value": "replaced"},
        {"op": "get_headers", "map": "request_headers", "prefix": "x-test-"},
        {"op": "emit_results", "map": "request_headers"}
    ]});
    let sent = request("GET", "/replace")
        .header("x-test-first", "a")
        .header("x-test-first", "b")
        .header("x-test-second", "c");
    let seen = Scenario::new(plan).requests(vec![sent]).assert_same()?;
    assert_eq!(
        probe_results(&seen).get(1).map(String::as_str),
        Some(
            r#"on_request_headers#1 get_headers: ok ["x-test-second": "c", "x-test-first": "replaced"]"#
        )
    );
    Ok(())
}

/// The new map keeps `x-forwarded-proto`: Envoy's router finds no route for a request without it (404),
/// which is routing, not the ABI.
#[test]
fn replacing_the_whole_request_header_map_agrees() -> anyhow::Result<()> {
    let plan = json!({"on_request_headers": [
        {"op": "set_headers", "map": "request_headers", "headers": [
            [":method", "GET"], [":path", "/rewritten"], [":authority", "probe.test"], [":scheme", "http"],
            ["x-forwarded-proto", "http"], ["x-test-only", "this"]
        ]},
        {"op": "get_headers", "map": "request_headers", "prefix": "x-test-"},
        {"op": "get_header", "map": "request_headers", "name": "x-test-dropped"},
        {"op": "emit_results", "map": "request_headers"}
    ]});
    let sent = request("GET", "/original").header("x-test-dropped", "yes");
    let seen = Scenario::new(plan).requests(vec![sent]).assert_same()?;
    assert_eq!(
        seen.upstream_requests
            .first()
            .map(|seen| seen.path.as_str()),
        Some("/rewritten")
    );
    Ok(())
}

#[test]
fn request_body_buffer_calls_agree() -> anyhow::Result<()> {
    let plan = json!({
        "on_request_headers": [
            {"op": "callback_args"},
            {"op": "remove_header", "map": "request_headers", "name": "content-length"}
        ],
        "on_request_body": [
            {"op": "pause", "until_end_of_stream": true},
            {"op": "callback_args"},
            {"op": "get_buffer", "buffer": "request_body"},
            {"op": "get_buffer", "buffer": "request_body", "start": 6, "size": 3},
            {"op": "get_buffer", "buffer": "request_body", "start": 100, "size": 3},
            {"op": "set_buffer", "buffer": "request_body", "start": 0, "size": 5, "data": "HOWDY"},
            {"op": "set_buffer", "buffer": "request_body", "start": 11, "size": 0, "data": "!"},
            {"op": "set_buffer", "buffer": "request_body", "start": 3, "size": 1, "data": "x"},
            {"op": "set_buffer", "buffer": "request_body", "start": 500, "size": 0, "data": "?"},
            {"op": "get_buffer", "buffer": "request_body"},
            {"op": "set_buffer", "buffer": "request_body", "start": 0, "size": 100, "data": "short"},
            {"op": "get_buffer", "buffer": "request_body"}
        ]
    });
    let sent = request("POST", "/body").body("hello world");
    let seen = Scenario::new(plan).requests(vec![sent]).assert_same()?;
    assert_eq!(
        seen.upstream_requests
            .first()
            .map(|seen| seen.body.as_str()),
        Some("short")
    );
    Ok(())
}

#[test]
fn response_header_and_body_calls_agree() -> anyhow::Result<()> {
    let plan = json!({
        "on_response_headers": [
            {"op": "get_header", "map": "response_headers", "name": ":status"},
            {"op": "get_header", "map": "response_headers", "name": "x-test-origin"},
            {"op": "add_header", "map": "response_headers", "name": "x-test-added", "value": "by-probe"},
            {"op": "remove_header", "map": "response_headers", "name": "content-length"},
            {"op": "emit_results", "map": "response_headers"}
        ],
        "on_response_body": [
            {"op": "pause", "until_end_of_stream": true},
            {"op": "get_buffer", "buffer": "response_body"},
            {"op": "set_buffer", "buffer": "response_body", "start": 0, "size": 8, "data": "replaced"}
        ],
        "on_log": [
            {"op": "get_header", "map": "response_headers", "name": "x-test-added"},
            {"op": "get_header", "map": "request_headers", "name": ":path"}
        ]
    });
    let upstream = Reply::Fixed(
        FixedReply::new(200)
            .header("x-test-origin", "upstream")
            .body("original body"),
    );
    let seen = Scenario::new(plan).upstream(upstream).assert_same()?;
    assert_eq!(seen.first_response_body(), Some("replaced body"));
    Ok(())
}

/// Which header maps each callback may read, seen through the raw call so that a refusal shows as a status.
/// Envoy answers BAD_ARGUMENT for a map the callback cannot see: response headers and request trailers
/// while the request headers are processed, http-call response headers outside their callback, request
/// headers while the response is processed; in `on_log` both header maps are readable again.
#[test]
fn header_map_availability_per_callback_agrees() -> anyhow::Result<()> {
    let plan = json!({
        "on_request_headers": [
            {"op": "get_header_raw", "map": "request_headers", "name": ":path"},
            {"op": "get_header_raw", "map": "response_headers", "name": ":status"},
            {"op": "get_header_raw", "map": "request_trailers", "name": "x-test-none"},
            {"op": "get_header_raw", "map": "http_call_response_headers", "name": ":status"}
        ],
        "on_response_headers": [
            {"op": "get_header_raw", "map": "request_headers", "name": ":path"},
            {"op": "get_header_raw", "map": "response_headers", "name": ":status"},
            {"op": "emit_results", "map": "response_headers"}
        ],
        "on_log": [
            {"op": "get_header_raw", "map": "request_headers", "name": ":path"},
            {"op": "get_header_raw", "map": "response_headers", "name": ":status"}
        ]
    });
    Scenario::new(plan).assert_same()?;
    Ok(())
}

#[test]
fn local_responses_agree() -> anyhow::Result<()> {
    let plan = json!({
        "on_request_headers": [
            {"op": "get_header", "map": "request_headers", "name": ":path"},
            {"op": "send_local_response", "status": 403, "headers": [["x-test-reason", "denied"], ["x-test-reason", "twice"]], "body": "denied by probe"},
            {"op": "pause"}
        ],
        "on_response_headers": [{"op": "get_headers", "map": "response_headers"}],
        "on_response_body": [{"op": "get_buffer", "buffer": "response_body"}],
        "on_log": [{"op": "get_header", "map": "request_headers", "name": ":path"}]
    });
    let seen = Scenario::new(plan).assert_same()?;
    assert_eq!(
        seen.exchanges.first().map(|exchange| exchange.status),
        Some(403)
    );
    assert!(seen.upstream_requests.is_empty());
    Ok(())
}

/// Envoy sends a local response through the response callbacks: the filter sees it as the response
/// (with the `content-length` and `content-type` Envoy adds to a body) and may change it.
#[test]
fn a_local_response_passes_the_response_callbacks_which_may_change_it() -> anyhow::Result<()> {
    let plan = json!({
        "on_request_headers": [
            {"op": "send_local_response", "status": 403, "headers": [["content-type", "application/json"]], "body": "{\"denied\":true}"},
            {"op": "pause"}
        ],
        "on_response_headers": [
            {"op": "get_headers", "map": "response_headers"},
            {"op": "replace_header", "map": "response_headers", "name": ":status", "value": "429"},
            {"op": "add_header", "map": "response_headers", "name": "x-test-encoded", "value": "yes"},
            // Envoy sends as many body bytes as `content-length` says, so a filter that changes the
            // body's length fixes it here.
            {"op": "replace_header", "map": "response_headers", "name": "content-length", "value": "21"}
        ],
        "on_response_body": [
            {"op": "get_buffer", "buffer": "response_body"},
            {"op": "set_buffer", "buffer": "response_body", "start": 0, "size": 0, "data": "note: "}
        ]
    });
    let seen = Scenario::new(plan).assert_same()?;
    let exchange = seen.exchanges.first().context("no exchange")?;
    assert_eq!(exchange.status, 429);
    assert_eq!(exchange.body, "note: {\"denied\":true}");
    assert!(
        exchange
            .headers
            .contains(&("x-test-encoded".to_owned(), "yes".to_owned())),
        "{:?}",
        exchange.headers
    );
    Ok(())
}

/// Without a body, the response callbacks see only the headers, and the stream ends there.
#[test]
fn a_local_response_without_a_body_ends_with_its_headers() -> anyhow::Result<()> {
    let plan = json!({
        "on_request_headers": [
            {"op": "send_local_response", "status": 204, "headers": [["x-test-reason", "empty"]]},
            {"op": "pause"}
        ],
        "on_response_headers": [{"op": "callback_args"}, {"op": "get_headers", "map": "response_headers"}],
        "on_response_body": [{"op": "get_buffer", "buffer": "response_body"}]
    });
    let seen = Scenario::new(plan).assert_same()?;
    assert_eq!(
        seen.exchanges.first().map(|exchange| exchange.status),
        Some(204)
    );
    Ok(())
}

#[test]
fn a_local_response_can_carry_the_journal() -> anyhow::Result<()> {
    let plan = json!({"on_request_headers": [
        {"op": "get_header", "map": "request_headers", "name": ":method"},
        {"op": "get_property", "path": ["request", "path"]},
        {"op": "send_local_response", "status": 200, "results_body": true},
        {"op": "pause"}
    ]});
    let seen = Scenario::new(plan)
        .requests(vec![request("DELETE", "/journal")])
        .assert_same()?;
    assert_eq!(
        seen.first_response_body(),
        Some(
            "on_request_headers#1 get_header: ok \"DELETE\"\non_request_headers#1 get_property: ok \"/journal\""
        )
    );
    Ok(())
}

#[test]
fn http_call_round_trips_agree() -> anyhow::Result<()> {
    let plan = json!({
        "on_request_headers": [
            {"op": "http_call", "cluster": "side", "headers": [
                [":method", "POST"], [":path", "/side?q=1"], [":authority", "side.test"], ["x-test-call", "yes"]
            ], "body": "ping", "timeout_ms": 5000},
            {"op": "pause"}
        ],
        "on_http_call_response": [
            {"op": "get_header", "map": "http_call_response_headers", "name": ":status"},
            {"op": "get_header", "map": "http_call_response_headers", "name": "x-test-side"},
            {"op": "get_headers", "map": "http_call_response_headers", "prefix": "x-test-"},
            {"op": "get_buffer", "buffer": "http_call_response_body"},
            {"op": "get_buffer", "buffer": "http_call_response_body", "start": 5, "size": 4},
            {"op": "emit_results", "map": "request_headers"},
            {"op": "resume_request"}
        ]
    });
    let side = Reply::Fixed(
        FixedReply::new(201)
            .header("x-test-side", "pong")
            .header("x-test-side", "again")
            .body("side body"),
    );
    let seen = Scenario::new(plan).side(side).assert_same()?;
    assert_eq!(seen.side_requests.len(), 1);
    assert_eq!(seen.upstream_requests.len(), 1);
    Ok(())
}

/// Envoy answers an http call that timed out with a response of its own: `:status` 504, three headers and
/// the body `upstream request timeout`, not with a callback without headers.
#[test]
fn a_timed_out_http_call_agrees() -> anyhow::Result<()> {
    let plan = failing_http_call_plan("/slow", 300);
    let side = Reply::delayed(Duration::from_secs(30), Reply::text(200, "too late"));
    let seen = Scenario::new(plan).side(side).assert_same()?;
    assert_eq!(seen.side_requests.len(), 1);
    Ok(())
}

/// Envoy answers an http call whose connection was refused with a response of its own: `:status` 503,
/// three headers and the body `upstream connect error or disconnect/reset before headers. reset reason:
/// remote connection failure`.
#[test]
fn a_refused_http_call_agrees() -> anyhow::Result<()> {
    let plan = failing_http_call_plan("/refused", 2000);
    Scenario::new(plan).side_unreachable().assert_same()?;
    Ok(())
}

#[test]
fn a_paused_response_resumed_from_an_http_call_agrees() -> anyhow::Result<()> {
    let plan = json!({
        "on_response_headers": [
            {"op": "http_call", "cluster": "side", "headers": [[":method", "GET"], [":path", "/during-response"], [":authority", "side.test"]]},
            {"op": "pause"}
        ],
        "on_http_call_response": [
            {"op": "get_buffer", "buffer": "http_call_response_body"},
            {"op": "add_header", "map": "response_headers", "name": "x-test-from-call", "value": "added after the call"},
            {"op": "emit_results", "map": "response_headers"},
            {"op": "resume_response"}
        ]
    });
    let seen = Scenario::new(plan)
        .side(Reply::text(200, "side says hi"))
        .assert_same()?;
    assert_eq!(seen.first_response_body(), Some("from upstream"));
    Ok(())
}

/// A local response sent from `on_response_headers`, before any response byte went downstream, replaces
/// the upstream's response in Envoy (and `on_log` sees its status).
#[test]
fn a_local_response_from_the_response_headers_agrees() -> anyhow::Result<()> {
    let plan = json!({
        "on_response_headers": [
            {"op": "get_header", "map": "response_headers", "name": ":status"},
            {"op": "send_local_response", "status": 502, "headers": [["x-test-replaced", "yes"]], "body": "replaced by probe"},
            {"op": "pause"}
        ],
        "on_log": [{"op": "get_header_raw", "map": "response_headers", "name": ":status"}]
    });
    Scenario::new(plan).assert_same()?;
    Ok(())
}

#[test]
fn rejected_http_calls_agree() -> anyhow::Result<()> {
    let plan = json!({"on_request_headers": [
        {"op": "http_call", "cluster": "no-such-cluster", "headers": [[":method", "GET"], [":path", "/"], [":authority", "x"]]},
        {"op": "http_call", "cluster": "side", "headers": [[":method", "GET"], [":path", "/"]]},
        {"op": "http_call", "cluster": "side", "headers": [[":method", "GET"], [":authority", "x"]]},
        {"op": "http_call", "cluster": "side", "headers": [[":path", "/"], [":authority", "x"]]},
        {"op": "emit_results", "map": "request_headers"}
    ]});
    let seen = Scenario::new(plan).assert_same()?;
    assert!(seen.side_requests.is_empty());
    Ok(())
}

#[test]
fn shared_data_cas_outcomes_agree() -> anyhow::Result<()> {
    let plan = json!({"on_request_headers": [
        {"op": "get_shared_data", "key": "probe.k"},
        {"op": "set_shared_data", "key": "probe.k", "value": "v1"},
        {"op": "get_shared_data", "key": "probe.k"},
        {"op": "set_shared_data", "key": "probe.k", "value": "v2", "cas": "last"},
        {"op": "set_shared_data", "key": "probe.k", "value": "v3", "cas": "last"},
        {"op": "set_shared_data", "key": "probe.k", "value": "v4", "cas": "stale"},
        {"op": "get_shared_data", "key": "probe.k"},
        {"op": "set_shared_data", "key": "probe.k", "value": "v5", "cas": "last"},
        {"op": "set_shared_data", "key": "probe.k", "value": "v6"},
        {"op": "get_shared_data", "key": "probe.k"},
        {"op": "set_shared_data", "key": "probe.fresh", "value": "x", "cas": 12345},
        {"op": "get_shared_data", "key": "probe.fresh"},
        {"op": "emit_results", "map": "request_headers"}
    ]});
    let seen = Scenario::new(plan).assert_same()?;
    let results = probe_results(&seen);
    assert_eq!(
        results.get(4).map(String::as_str),
        Some("on_request_headers#1 set_shared_data: cas_mismatch")
    );
    Ok(())
}

#[test]
fn shared_data_outlives_the_stream_that_wrote_it() -> anyhow::Result<()> {
    let plan = json!({"on_request_headers": [
        {"op": "get_shared_data", "key": "probe.visits"},
        {"op": "set_shared_data", "key": "probe.visits", "value": "seen", "cas": "last"},
        {"op": "emit_results", "map": "request_headers"}
    ]});
    let seen = Scenario::new(plan)
        .requests(vec![request("GET", "/one"), request("GET", "/two")])
        .assert_same()?;
    let second = seen
        .upstream_requests
        .get(1)
        .map(|seen| seen.headers.clone())
        .unwrap_or_default();
    assert_eq!(
        second.first().map(|(_, value)| value.as_str()),
        Some(r#"on_request_headers#1 get_shared_data: ok "seen""#)
    );
    Ok(())
}

#[test]
fn property_reads_agree() -> anyhow::Result<()> {
    let plan = json!({"on_request_headers": [
        {"op": "get_property", "path": ["request", "path"]},
        {"op": "get_property", "path": ["request", "url_path"]},
        {"op": "get_property", "path": ["request", "method"]},
        {"op": "get_property", "path": ["request", "host"]},
        {"op": "get_property", "path": ["request", "scheme"]},
        {"op": "get_property", "path": ["request", "query"]},
        {"op": "get_property", "path": ["request", "protocol"]},
        {"op": "get_property", "path": ["plugin_name"]},
        {"op": "get_property", "path": ["plugin_vm_id"]},
        {"op": "get_property", "path": ["plugin_root_id"]},
        {"op": "get_property", "path": ["request", "time"], "render": "length"},
        {"op": "get_property", "path": ["connection", "id"], "render": "length"},
        {"op": "get_property", "path": ["no", "such", "property"]},
        {"op": "emit_results", "map": "request_headers"}
    ]});
    Scenario::new(plan)
        .requests(vec![request("PUT", "/props/a?x=1&y=2")])
        .assert_same()?;
    Ok(())
}

#[test]
fn property_writes_agree() -> anyhow::Result<()> {
    let plan = json!({
        "on_request_headers": [
            {"op": "get_property", "path": ["probe_custom"]},
            {"op": "set_property", "path": ["probe_custom"], "value": "written"},
            {"op": "get_property", "path": ["probe_custom"]},
            {"op": "set_property", "path": ["probe_custom"], "value": "rewritten"},
            {"op": "get_property", "path": ["probe_custom"]},
            {"op": "emit_results", "map": "request_headers"}
        ],
        "on_log": [{"op": "get_property", "path": ["probe_custom"]}]
    });
    let seen = Scenario::new(plan).assert_same()?;
    assert_eq!(
        probe_results(&seen).get(4).map(String::as_str),
        Some(r#"on_request_headers#1 get_property: ok "rewritten""#)
    );
    Ok(())
}

#[test]
fn metric_calls_agree() -> anyhow::Result<()> {
    let plan = json!({
        "on_configure": [
            {"op": "define_metric", "kind": "counter", "name": "probe_counter"},
            {"op": "define_metric", "kind": "gauge", "name": "probe_gauge"},
            {"op": "define_metric", "kind": "histogram", "name": "probe_histogram"}
        ],
        "on_request_headers": [
            {"op": "increment_metric", "metric": "probe_counter", "by": 2},
            {"op": "get_metric", "metric": "probe_counter"},
            {"op": "increment_metric", "metric": "probe_counter", "by": -1},
            {"op": "record_metric", "metric": "probe_counter", "value": 40},
            {"op": "get_metric", "metric": "probe_counter"},
            {"op": "record_metric", "metric": "probe_gauge", "value": 7},
            {"op": "increment_metric", "metric": "probe_gauge", "by": -2},
            {"op": "get_metric", "metric": "probe_gauge"},
            {"op": "record_metric", "metric": "probe_histogram", "value": 10},
            {"op": "increment_metric", "metric": "probe_histogram", "by": 1},
            {"op": "get_metric", "metric": "probe_histogram"},
            {"op": "emit_results", "map": "request_headers"}
        ]
    });
    Scenario::new(plan).assert_same()?;
    Ok(())
}

/// Envoy keeps the metric kind in the low bits of a metric id, so its answer for an id it never issued
/// depends on those bits: 999999 (kind bits 3) gives increment BAD_ARGUMENT, record NOT_FOUND, get
/// BAD_ARGUMENT; 999996 (kind bits 0, a counter id) gives NOT_FOUND for all three.
#[test]
fn unknown_metric_ids_agree() -> anyhow::Result<()> {
    let plan = json!({"on_request_headers": [
        {"op": "increment_metric", "metric": 999999, "by": 1},
        {"op": "record_metric", "metric": 999999, "value": 1},
        {"op": "get_metric", "metric": 999999},
        {"op": "increment_metric", "metric": 999996, "by": 1},
        {"op": "record_metric", "metric": 999996, "value": 1},
        {"op": "get_metric", "metric": 999996},
        {"op": "emit_results", "map": "request_headers"}
    ]});
    Scenario::new(plan).assert_same()?;
    Ok(())
}

#[test]
fn queue_calls_agree() -> anyhow::Result<()> {
    let plan = json!({
        "on_configure": [{"op": "register_queue", "name": "probe-q"}],
        "on_request_headers": [
            {"op": "resolve_queue", "vm_id": "probe-vm", "name": "probe-q"},
            {"op": "resolve_queue", "vm_id": "probe-vm", "name": "no-such-queue"},
            {"op": "resolve_queue", "vm_id": "other-vm", "name": "probe-q"},
            {"op": "dequeue", "queue": "probe-q"},
            {"op": "enqueue", "queue": "probe-q", "value": "first"},
            {"op": "enqueue", "queue": "probe-q", "value": "second"},
            {"op": "dequeue", "queue": "probe-q"},
            {"op": "dequeue", "queue": "probe-q"},
            {"op": "dequeue", "queue": "probe-q"},
            {"op": "enqueue", "queue": 987654, "value": "x"},
            {"op": "dequeue", "queue": 987654},
            {"op": "emit_results", "map": "request_headers"}
        ]
    });
    Scenario::new(plan).assert_same()?;
    Ok(())
}

/// A value enqueued by a stream wakes the root context that registered the queue; a later request reports
/// what that root context saw.
#[test]
fn queue_ready_notifications_agree() -> anyhow::Result<()> {
    let plan = json!({
        "on_configure": [{"op": "register_queue", "name": "probe-q"}],
        "on_queue_ready": [
            {"op": "callback_args"},
            {"op": "dequeue", "queue": "probe-q"},
            {"op": "dequeue", "queue": "probe-q"}
        ],
        "on_request_headers": [
            {"op": "resolve_queue", "vm_id": "probe-vm", "name": "probe-q", "when": 1},
            {"op": "enqueue", "queue": "probe-q", "value": "wake up"},
            {"op": "emit_results", "map": "request_headers", "journal": "root"}
        ]
    });
    let seen = Scenario::new(plan)
        .without_metrics()
        .requests(vec![request("GET", "/enqueue"), request("GET", "/report")])
        .assert_same()?;
    let reported: Vec<String> = seen
        .upstream_requests
        .get(1)
        .map(|seen| {
            seen.headers
                .iter()
                .map(|(_, value)| value.clone())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        reported
            .iter()
            .any(|value| value == r#"on_queue_ready#1 dequeue: ok "wake up""#),
        "{reported:?}"
    );
    Ok(())
}

#[test]
fn log_calls_and_levels_agree() -> anyhow::Result<()> {
    let plan = json!({"on_request_headers": [
        {"op": "get_log_level"},
        {"op": "log", "level": "trace", "message": "probe-log trace"},
        {"op": "log", "level": "debug", "message": "probe-log debug"},
        {"op": "log", "level": "info", "message": "probe-log info"},
        {"op": "log", "level": "warn", "message": "probe-log warn"},
        {"op": "log", "level": "error", "message": "probe-log error"},
        {"op": "log", "level": "critical", "message": "probe-log critical"},
        {"op": "get_current_time"},
        {"op": "call_foreign_function", "name": "no_such_function", "argument": "x"},
        {"op": "emit_results", "map": "request_headers"}
    ]});
    let seen = Scenario::new(plan).assert_same()?;
    assert!(
        seen.logs
            .iter()
            .any(|line| line.level == "warning" && line.message == "probe-log warn")
    );
    Ok(())
}

#[test]
fn configuration_buffers_and_environment_agree() -> anyhow::Result<()> {
    let plan = json!({
        "on_configure": [
            {"op": "callback_args"},
            {"op": "get_buffer", "buffer": "plugin_configuration", "start": 0, "size": 16},
            {"op": "get_env", "name": "PROBE_ENV"}
        ],
        "on_request_headers": [
            {"op": "get_env", "name": "PROBE_ENV"},
            {"op": "get_env", "name": "PROBE_MISSING"},
            {"op": "emit_results", "map": "request_headers", "journal": "root"},
            {"op": "emit_results", "map": "request_headers"}
        ]
    });
    let vm_plan = json!({"on_vm_start": [
        {"op": "callback_args"},
        {"op": "get_buffer", "buffer": "vm_configuration", "start": 0, "size": 15}
    ]});
    Scenario::new(plan)
        .vm_plan(vm_plan)
        .env("PROBE_ENV", "from the vm config")
        .assert_same()?;
    Ok(())
}

#[test]
fn tick_counts_agree() -> anyhow::Result<()> {
    let plan = json!({
        "on_configure": [{"op": "set_tick_period", "ms": 100}],
        "on_tick": [
            {"op": "callback_args"},
            {"op": "set_tick_period", "ms": 0, "when": 3},
            {"op": "http_call", "cluster": "witness", "headers": [[":method", "GET"], [":path", "/after-the-last-tick"], [":authority", "witness.test"]], "timeout_ms": 200, "when": 3}
        ],
        "on_http_call_response": [{"op": "callback_args"}],
        "on_request_headers": [{"op": "emit_results", "map": "request_headers", "journal": "root"}]
    });
    let seen = Scenario::new(plan)
        .without_metrics()
        .settle(Settle::Ticks {
            period: Duration::from_millis(100),
            count: 3,
        })
        .assert_same()?;
    let ticks = seen.upstream_requests.first().map_or(0, |seen| {
        seen.headers
            .iter()
            .filter(|(_, value)| value.starts_with("on_tick#"))
            .count()
    });
    assert_eq!(
        ticks, 5,
        "three ticks with one result each, and the third stops the ticks and calls the witness"
    );
    Ok(())
}

#[test]
fn a_trap_under_fail_closed_agrees() -> anyhow::Result<()> {
    let plan = json!({"on_request_headers": [
        {"op": "get_header", "map": "request_headers", "name": ":path"},
        {"op": "trap"}
    ]});
    let requests = vec![request("GET", "/first"), request("GET", "/second")];
    let seen = Scenario::new(plan)
        .requests(requests)
        .failure_policy(FailurePolicy::FailClosed)
        .assert_same()?;
    assert!(seen.upstream_requests.is_empty());
    Ok(())
}

/// Under FAIL_OPEN Envoy still answers the stream whose callback trapped with 503; only later streams
/// skip the plugin.
#[test]
fn a_trap_under_fail_open_agrees() -> anyhow::Result<()> {
    let plan = json!({"on_request_headers": [
        {"op": "add_header", "map": "request_headers", "name": "x-test-filtered", "value": "yes"},
        {"op": "trap"}
    ]});
    let requests = vec![request("GET", "/first"), request("GET", "/second")];
    Scenario::new(plan)
        .requests(requests)
        .failure_policy(FailurePolicy::FailOpen)
        .assert_same()?;
    Ok(())
}

/// The Go SDK's examples send http calls with an empty `:authority`; Envoy only requires the header to be
/// there.
#[test]
fn an_http_call_with_an_empty_authority_is_dispatched() -> anyhow::Result<()> {
    let plan = json!({
        "on_request_headers": [
            {"op": "http_call", "cluster": "side", "headers": [[":method", "GET"], [":path", "/no-authority"], [":authority", ""]]},
            {"op": "pause"}
        ],
        "on_http_call_response": [
            {"op": "get_header", "map": "http_call_response_headers", "name": ":status"},
            {"op": "get_buffer", "buffer": "http_call_response_body"},
            {"op": "emit_results", "map": "request_headers"},
            {"op": "resume_request"}
        ]
    });
    let seen = Scenario::new(plan).assert_same()?;
    assert_eq!(seen.side_requests.len(), 1);
    assert_eq!(
        seen.exchanges.first().map(|exchange| exchange.status),
        Some(200)
    );
    Ok(())
}

/// Envoy holds no request body buffer while the response is processed (nor a response body while the
/// request is): a write there is BAD_ARGUMENT, not a write that is silently lost.
#[test]
fn writing_the_other_directions_body_is_refused() -> anyhow::Result<()> {
    let plan = json!({
        "on_request_headers": [
            {"op": "set_buffer", "buffer": "response_body", "start": 0, "size": 0, "data": "early"},
            {"op": "emit_results", "map": "request_headers"}
        ],
        "on_request_body": [
            {"op": "set_buffer", "buffer": "response_body", "start": 0, "size": 0, "data": "early"}
        ],
        "on_response_headers": [
            {"op": "set_buffer", "buffer": "request_body", "start": 0, "size": 0, "data": "late"},
            {"op": "emit_results", "map": "response_headers"}
        ],
        "on_response_body": [
            {"op": "set_buffer", "buffer": "request_body", "start": 0, "size": 0, "data": "late"},
            {"op": "set_buffer", "buffer": "request_body", "start": 5, "size": 0, "data": "late"}
        ]
    });
    let sent = request("POST", "/both-bodies").body("request body");
    let seen = Scenario::new(plan).requests(vec![sent]).assert_same()?;
    let refusals = seen
        .logs
        .iter()
        .filter(|line| line.message.ends_with("set_buffer: bad_argument"))
        .count();
    assert!(refusals >= 3, "{:?}", seen.logs);
    Ok(())
}

/// Envoy runs a stream's access log (`proxy_on_log`) before it tears the filter down (`proxy_on_done`).
#[test]
fn on_log_runs_before_on_done() -> anyhow::Result<()> {
    let plan = json!({
        "on_log": [{"op": "log", "level": "info", "message": "probe-order on_log"}],
        "on_done": [{"op": "log", "level": "info", "message": "probe-order on_done"}]
    });
    let seen = Scenario::new(plan).assert_same()?;
    let order: Vec<&str> = seen
        .logs
        .iter()
        .filter(|line| line.message.starts_with("probe-order "))
        .map(|line| line.message.as_str())
        .collect();
    assert_eq!(order, ["probe-order on_log", "probe-order on_done"]);
    Ok(())
}

/// A local response to a gRPC request becomes Envoy's trailers-only gRPC reply: HTTP 200,
/// `content-type: application/grpc`, `grpc-status` mapped from the HTTP status (or the filter's), and the
/// body as `grpc-message`. The response callbacks see it that way too.
#[test]
fn a_local_response_to_a_grpc_request_is_a_grpc_reply() -> anyhow::Result<()> {
    let plan = json!({
        "on_request_headers": [
            {"op": "send_local_response", "status": 403, "headers": [["x-test-reason", "denied"]], "body": "denied: 100%\n"},
            {"op": "pause"}
        ],
        "on_response_headers": [
            {"op": "callback_args"},
            {"op": "get_headers", "map": "response_headers"}
        ],
        "on_response_body": [{"op": "get_buffer", "buffer": "response_body"}]
    });
    let grpc = request("POST", "/pkg.Service/Method")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(vec![0, 0, 0, 0, 0]);
    let seen = Scenario::new(plan).requests(vec![grpc]).assert_same()?;
    let exchange = seen.exchanges.first().context("no exchange")?;
    assert_eq!(exchange.status, 200);
    assert!(
        exchange
            .headers
            .contains(&("grpc-status".to_owned(), "7".to_owned())),
        "{:?}",
        exchange.headers
    );
    Ok(())
}

/// Envoy sends the response headers before it runs `on_http_response_body`, so a trap there leaves the
/// client with the headers and a cut body, not with nothing. Compared here between Envoy and `serve`, the
/// harness's own proxy, reading the raw bytes off the connection.
#[test]
fn a_trap_in_the_response_body_leaves_the_client_the_headers() -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};

    let plan = json!({"on_response_body": [{"op": "trap"}]}).to_string();
    let upstream = integration_tests::upstream::Upstream::builder()
        .fallback(Reply::text(200, "from upstream"))
        .start()?;
    let raw_get = |addr: std::net::SocketAddr| -> anyhow::Result<String> {
        let mut stream = std::net::TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.write_all(b"GET /cut HTTP/1.1\r\nhost: probe.test\r\nconnection: close\r\n\r\n")?;
        let mut seen = Vec::new();
        // A reset after the headers is the expected end: keep what arrived.
        let _ = stream.read_to_end(&mut seen);
        let text = String::from_utf8_lossy(&seen).into_owned();
        Ok(text.lines().next().unwrap_or("(nothing)").to_owned())
    };
    let serve = integration_tests::proxy_support::proxy()
        .filter(env!("PROBE_WASM"))
        .plugin_config(&plan)
        .upstream(&format!("http://{}", upstream.addr()))
        .workers(1)
        .start()?;
    let from_serve = raw_get(serve.addr())?;
    assert_eq!(from_serve, "HTTP/1.1 200 OK", "serve");
    if let Some(binary) = integration_tests::envoy::binary()? {
        let envoy = integration_tests::envoy::Envoy::builder(binary, env!("PROBE_WASM"))
            .plugin_configuration(plan)
            .cluster("upstream", upstream.addr())
            .start()?;
        let from_envoy = raw_get(envoy.addr())?;
        assert_eq!(from_envoy, from_serve, "envoy and serve differ");
    }
    Ok(())
}

/// The Go module's own log lines. Its panic output is not compared line by line: Envoy logs each
/// `fd_write` as one record (the Go runtime writes "panic: ", the message and the newline separately),
/// the harness one record per line (a listed divergence).
fn go_module_lines(message: &str) -> bool {
    message.starts_with("go http ")
}

/// Every log line (the Go panic test reads the panic message from the harness's own records).
fn every_line(_: &str) -> bool {
    true
}

/// A Go module (`tests/modules/go`, built for wasip1 as a reactor): sleeping and yielding go through WASI
/// `poll_oneoff`, goroutines through the Go scheduler, then the clock and the environment; a local
/// response; `on_log` before `on_done` on every stream.
#[test]
fn a_go_module_sleeps_yields_and_reads_clock_and_environment_as_in_envoy() -> anyhow::Result<()> {
    let Some(module) = crate::differential_runner::test_module("go_module.wasm")? else {
        return Ok(());
    };
    let requests = ["/sleep", "/goroutine", "/clock", "/env", "/deny"]
        .into_iter()
        .map(|path| request("GET", path))
        .collect();
    let seen = Scenario::module(&module, json!(""))
        .system_clock()
        .env("GO_MODULE_ENV", "from the vm config")
        .logs_where(go_module_lines)
        .requests(requests)
        .assert_same()?;
    let header = |index: usize, name: &str| {
        seen.upstream_requests.get(index).and_then(|request| {
            request
                .headers
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        })
    };
    assert_eq!(header(0, "x-test-slept").as_deref(), Some("at least 20ms"));
    assert_eq!(
        header(1, "x-test-goroutine").as_deref(),
        Some("handed over")
    );
    assert_eq!(
        header(2, "x-test-clock").as_deref(),
        Some("wall clock after 2020, monotonic clock steady")
    );
    assert_eq!(
        header(3, "x-test-env").as_deref(),
        Some("from the vm config")
    );
    assert_eq!(
        seen.exchanges.get(4).map(|exchange| exchange.status),
        Some(403)
    );
    Ok(())
}

/// The Go SDK's `multiple_dispatches` pattern: several http calls with an empty `:authority`, the request
/// resumed when the last answers.
#[test]
fn a_go_module_dispatching_calls_without_authority_agrees() -> anyhow::Result<()> {
    let Some(module) = crate::differential_runner::test_module("go_module.wasm")? else {
        return Ok(());
    };
    let seen = Scenario::module(&module, json!(""))
        .system_clock()
        .logs_where(go_module_lines)
        .requests(vec![request("GET", "/callouts")])
        .assert_same()?;
    assert_eq!(seen.side_requests.len(), 3);
    assert_eq!(
        seen.exchanges.first().map(|exchange| exchange.status),
        Some(200)
    );
    Ok(())
}

/// A Go panic prints its message (the runtime needs `poll_oneoff` for that, or it reports "panic during
/// panic") and exits: the VM fails, and under fail-closed this and later streams get 503.
#[test]
fn a_go_panic_fails_the_vm_as_in_envoy() -> anyhow::Result<()> {
    let Some(module) = crate::differential_runner::test_module("go_module.wasm")? else {
        return Ok(());
    };
    let scenario = Scenario::module(&module, json!(""))
        .system_clock()
        .logs_where(go_module_lines)
        .requests(vec![request("GET", "/panic"), request("GET", "/env")]);
    let seen = scenario.assert_same()?;
    let harness = scenario.logs_where(every_line).harness_only()?;
    let messages: Vec<&str> = harness
        .logs
        .iter()
        .map(|line| line.message.as_str())
        .collect();
    assert!(
        messages.contains(&"panic: go module panics on request"),
        "{messages:?}"
    );
    assert!(
        !messages
            .iter()
            .any(|line| line.contains("panic during panic")),
        "{messages:?}"
    );
    assert_eq!(
        seen.exchanges
            .iter()
            .map(|exchange| exchange.status)
            .collect::<Vec<_>>(),
        [503, 503]
    );
    Ok(())
}

/// The AssemblyScript module's log lines, and the SDK's own line when the module aborts.
fn assemblyscript_module_lines(message: &str) -> bool {
    message.starts_with("as http ") || message.starts_with("the assemblyscript module aborts")
}

/// An AssemblyScript `proxy-runtime` module: it imports `wasi_unstable`, declares ABI 0.2.0 and picks its
/// root context by root id, as the SDK's README configures it.
#[test]
fn an_assemblyscript_module_runs_under_its_root_id_as_in_envoy() -> anyhow::Result<()> {
    let Some(module) = crate::differential_runner::test_module("assemblyscript_module.wasm")?
    else {
        return Ok(());
    };
    let seen = Scenario::module(&module, json!("as-config-value"))
        .root_id("harness_as")
        .logs_where(assemblyscript_module_lines)
        .requests(vec![request("GET", "/headers"), request("GET", "/deny")])
        .assert_same()?;
    assert_eq!(
        seen.upstream_requests
            .first()
            .map(|request| request.headers.clone()),
        Some(vec![(
            "x-test-as-config".to_owned(),
            "as-config-value".to_owned()
        )])
    );
    assert_eq!(
        seen.exchanges
            .iter()
            .map(|exchange| exchange.status)
            .collect::<Vec<_>>(),
        [200, 403]
    );
    Ok(())
}

/// An AssemblyScript module that throws logs through the SDK and exits through `wasi_unstable`'s
/// `proc_exit`: the VM fails as in Envoy.
#[test]
fn an_assemblyscript_abort_fails_the_vm_as_in_envoy() -> anyhow::Result<()> {
    let Some(module) = crate::differential_runner::test_module("assemblyscript_module.wasm")?
    else {
        return Ok(());
    };
    let seen = Scenario::module(&module, json!("as-config-value"))
        .root_id("harness_as")
        .logs_where(assemblyscript_module_lines)
        .requests(vec![request("GET", "/abort"), request("GET", "/headers")])
        .assert_same()?;
    assert_eq!(
        seen.exchanges
            .iter()
            .map(|exchange| exchange.status)
            .collect::<Vec<_>>(),
        [503, 503]
    );
    Ok(())
}

/// `serve` takes the root id (and VM id and configuration) as Envoy does, so the AssemblyScript module,
/// which finds its root context by root id, runs there too.
#[test]
fn serve_runs_the_assemblyscript_module_under_its_root_id() -> anyhow::Result<()> {
    let Some(module) = crate::differential_runner::test_module("assemblyscript_module.wasm")?
    else {
        return Ok(());
    };
    let upstream = integration_tests::upstream::Upstream::builder()
        .fallback(Reply::text(200, "from upstream"))
        .start()?;
    let module = module.to_string_lossy().into_owned();
    let serve = integration_tests::proxy_support::proxy()
        .filter(&module)
        .plugin_config("as-config-value")
        .config(r#"root_id = "harness_as""#)
        .config(r#"vm_id = "as-vm""#)
        .upstream(&format!("http://{}", upstream.addr()))
        .workers(1)
        .start()?;
    let passed = serve.send(request("GET", "/headers"))?;
    assert_eq!(passed.status, 200);
    assert!(
        passed
            .headers
            .contains(&("x-test-as".to_owned(), "response seen".to_owned())),
        "{:?}",
        passed.headers
    );
    let seen = upstream.requests();
    let forwarded = seen.first().context("the upstream saw nothing")?;
    assert!(
        forwarded
            .headers
            .contains(&("x-test-as-config".to_owned(), "as-config-value".to_owned())),
        "{:?}",
        forwarded.headers
    );
    assert_eq!(serve.send(request("GET", "/deny"))?.status, 403);
    Ok(())
}

/// A module built for ABI 0.1.0 (here the probe with its marker renamed, so its callbacks keep the 0.2.1
/// signatures) is refused by the harness with one line naming the version it declares, not with a
/// complaint about a callback's signature; Envoy does not run this module either.
#[test]
fn a_module_declaring_abi_0_1_0_is_refused_naming_the_version() -> anyhow::Result<()> {
    let probe = std::fs::read(env!("PROBE_WASM"))?;
    let marker = b"proxy_abi_version_0_2_1";
    let at = probe
        .windows(marker.len())
        .position(|window| window == marker)
        .context("the probe exports no ABI marker")?;
    let mut old_abi = probe;
    old_abi
        .get_mut(at..at + marker.len())
        .context("marker out of range")?
        .copy_from_slice(b"proxy_abi_version_0_1_0");
    let error = host_harness::Plugin::builder()
        .module_bytes(old_abi.clone())
        .build()
        .err()
        .context("the harness loaded an ABI 0.1.0 module")?;
    assert_eq!(
        error.to_string(),
        "module declares proxy-wasm ABI 0.1.0; this host runs ABI 0.2.1 (and the compatible 0.2.0)"
    );
    if let Some(binary) = integration_tests::envoy::binary()? {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("old_abi.wasm");
        std::fs::write(&path, &old_abi)?;
        let upstream = integration_tests::upstream::Upstream::builder().start()?;
        let started = integration_tests::envoy::Envoy::builder(binary, &path)
            .cluster("upstream", upstream.addr())
            .startup_timeout(Duration::from_secs(20))
            .start();
        // Envoy refuses it too: it links a 0.1.0 module against that version's imports, which this
        // module's 0.2.1 imports are not.
        let refusal = started
            .err()
            .context("envoy started with an ABI 0.1.0 marker on a 0.2.1 module")?;
        assert!(
            format!("{refusal:#}").contains("Unable to create Wasm plugin"),
            "{refusal:#}"
        );
    }
    Ok(())
}

/// `serve` calls the guest from inside its tokio runtime: the Go runtime's WASI calls (start-up, sleeping,
/// panicking) must all be answered without blocking on a runtime of their own.
#[test]
fn serve_runs_the_go_module_inside_its_runtime() -> anyhow::Result<()> {
    let Some(module) = crate::differential_runner::test_module("go_module.wasm")? else {
        return Ok(());
    };
    let upstream = integration_tests::upstream::Upstream::builder()
        .fallback(Reply::text(200, "from upstream"))
        .start()?;
    let side = integration_tests::upstream::Upstream::builder()
        .fallback(Reply::text(200, "from side"))
        .start()?;
    let module = module.to_string_lossy().into_owned();
    let serve = integration_tests::proxy_support::proxy()
        .filter(&module)
        .plugin_config("")
        .env("GO_MODULE_ENV", "through serve")
        .cluster("side", &format!("http://{}", side.addr()))
        .upstream(&format!("http://{}", upstream.addr()))
        .workers(1)
        .start()?;
    for path in ["/sleep", "/env", "/callouts"] {
        assert_eq!(serve.send(request("GET", path))?.status, 200, "{path}");
    }
    let seen = upstream.requests();
    let header = |index: usize, name: &str| {
        seen.get(index).and_then(|request| {
            request
                .headers
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        })
    };
    assert_eq!(header(0, "x-test-slept").as_deref(), Some("at least 20ms"));
    assert_eq!(header(1, "x-test-env").as_deref(), Some("through serve"));
    assert_eq!(header(2, "x-test-callout-status").as_deref(), Some("200"));
    assert_eq!(side.requests().len(), 3);
    assert_eq!(serve.send(request("GET", "/panic"))?.status, 503);
    Ok(())
}
