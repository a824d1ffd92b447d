//! The Envoy fixture itself, with the probe module: start-up on free ports, routing to a loopback upstream,
//! plugin configuration and environment reaching the guest, custom metrics, plugin logs, and clean stops.

use std::time::Duration;

use integration_tests::client::{self, HttpRequest};
use integration_tests::envoy::{self, Envoy};
use integration_tests::upstream::{Reply, Upstream};

const TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn envoy_runs_the_probe_in_front_of_a_loopback_upstream() -> anyhow::Result<()> {
    let Some(binary) = envoy::binary()? else {
        return Ok(());
    };
    let upstream = Upstream::echo()?;
    let plan = serde_json::json!({
        "on_configure": [{"op": "define_metric", "kind": "counter", "name": "fixture_requests"}],
        "on_request_headers": [
            {"op": "increment_metric", "metric": "fixture_requests", "by": 1},
            {"op": "get_env", "name": "PROBE_ENV"},
            {"op": "get_property", "path": ["plugin_name"]},
            {"op": "log", "level": "warn", "message": "fixture says hello"},
            {"op": "emit_results", "map": "request_headers"}
        ]
    });
    let proxy = Envoy::builder(binary, env!("PROBE_WASM"))
        .plugin_configuration(plan.to_string())
        .env("PROBE_ENV", "from-envoy")
        .plugin_name("fixture-probe")
        .cluster("upstream", upstream.addr())
        .start()?;

    let response = client::send(proxy.addr(), HttpRequest::get("/hello"), TIMEOUT)?;
    assert_eq!(response.status, 200, "{}", response.body_text());
    let seen = upstream.wait_for_requests(1, TIMEOUT)?;
    assert_eq!(seen[0].path, "/hello");
    assert_eq!(
        seen[0].header("x-probe-1"),
        Some("on_request_headers#1 increment_metric: ok")
    );
    assert_eq!(
        seen[0].header("x-probe-2"),
        Some(r#"on_request_headers#1 get_env: ok "from-envoy""#)
    );
    assert_eq!(
        seen[0].header("x-probe-3"),
        Some(r#"on_request_headers#1 get_property: ok "fixture-probe""#)
    );
    assert_eq!(
        seen[0].header("x-probe-4"),
        Some("on_request_headers#1 log: ok")
    );

    assert_eq!(proxy.custom_metrics()?.get("fixture_requests"), Some(&1));
    let logged =
        proxy.wait_for_wasm_logs(1, TIMEOUT, |line| line.message == "fixture says hello")?;
    assert_eq!(logged[0].level, "warning");
    Ok(())
}

#[test]
fn envoy_stops_on_drop_and_reports_a_bad_module_with_its_log() -> anyhow::Result<()> {
    let Some(binary) = envoy::binary()? else {
        return Ok(());
    };
    let upstream = Upstream::echo()?;

    let missing = Envoy::builder(&binary, "/nonexistent/probe.wasm")
        .cluster("upstream", upstream.addr())
        .start()
        .unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/probe.wasm"),
        "{missing:#}"
    );

    let rejected = Envoy::builder(&binary, env!("PROBE_WASM"))
        .plugin_configuration(r#"{"on_configure": [{"op": "reject"}]}"#)
        .cluster("upstream", upstream.addr())
        .startup_timeout(Duration::from_secs(20))
        .start()
        .unwrap_err();
    assert!(
        format!("{rejected:#}").contains("log tail"),
        "start-up failures quote Envoy's log: {rejected:#}"
    );

    let mut proxy = Envoy::builder(&binary, env!("PROBE_WASM"))
        .cluster("upstream", upstream.addr())
        .start()?;
    let addr = proxy.addr();
    assert!(proxy.is_running());
    proxy.stop();
    assert!(!proxy.is_running());
    assert!(
        client::send(addr, HttpRequest::get("/"), Duration::from_secs(2)).is_err(),
        "nothing listens after stop"
    );
    Ok(())
}

/// Envoy configures the plugin in a base VM and in one VM per thread (the main thread and each worker), so
/// `on_configure` runs `workers + 2` times; ticks reach only the thread VMs, `workers + 1` of them. Tests
/// that count root callbacks must expect that.
#[test]
fn envoy_configures_one_vm_per_thread_plus_the_base_vm() -> anyhow::Result<()> {
    let Some(binary) = envoy::binary()? else {
        return Ok(());
    };
    let upstream = Upstream::echo()?;
    let plan = serde_json::json!({
        "on_configure": [
            {"op": "define_metric", "kind": "counter", "name": "vms_configured"},
            {"op": "increment_metric", "metric": "vms_configured", "by": 1},
            {"op": "define_metric", "kind": "counter", "name": "vms_ticked"},
            {"op": "set_tick_period", "ms": 50}
        ],
        "on_tick": [
            {"op": "increment_metric", "metric": "vms_ticked", "by": 1, "when": 1},
            {"op": "set_tick_period", "ms": 0, "when": 3}
        ]
    });
    for workers in [1_u32, 3] {
        let proxy = Envoy::builder(&binary, env!("PROBE_WASM"))
            .plugin_configuration(plan.to_string())
            .concurrency(workers)
            .cluster("upstream", upstream.addr())
            .start()?;
        let ticking = usize::try_from(workers)? + 1;
        // Each ticking VM counts its first tick and stops at its third: by then two more periods have
        // passed on the same timers, so a VM that ticks although it should not has ticked and counted.
        proxy.wait_for_wasm_logs(ticking, TIMEOUT, |line| {
            line.message.contains("on_tick#3 set_tick_period: ok")
        })?;
        let metrics = proxy.custom_metrics()?;
        assert_eq!(
            metrics.get("vms_configured").copied(),
            Some(i64::from(workers) + 2),
            "configured VMs with {workers} workers"
        );
        assert_eq!(
            metrics.get("vms_ticked").copied(),
            Some(i64::from(workers) + 1),
            "ticking VMs with {workers} workers"
        );
    }
    Ok(())
}

#[test]
fn envoy_streams_server_sent_events_through_the_probe() -> anyhow::Result<()> {
    let Some(binary) = envoy::binary()? else {
        return Ok(());
    };
    let interval = Duration::from_millis(200);
    let upstream = Upstream::builder()
        .fallback(Reply::sse_numbered(3, interval))
        .start()?;
    let plan = serde_json::json!({"on_response_headers": [{"op": "get_header", "map": "response_headers", "name": "content-type"}]});
    let proxy = Envoy::builder(binary, env!("PROBE_WASM"))
        .plugin_configuration(plan.to_string())
        .cluster("upstream", upstream.addr())
        .start()?;
    let response = client::send(proxy.addr(), HttpRequest::get("/v1/messages"), TIMEOUT)?;
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    assert_eq!(response.body_text().matches("event: message").count(), 3);
    let first = response
        .chunks
        .first()
        .map(|chunk| chunk.at)
        .unwrap_or(response.finished_at);
    // Two intervals separate the first event from the last; a buffering proxy would deliver all at once.
    assert!(
        response.finished_at.duration_since(first) >= interval,
        "first event arrived {:?} before the end",
        response.finished_at.duration_since(first)
    );
    Ok(())
}
