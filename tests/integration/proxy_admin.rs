//! `host-harness serve` end to end, the admin side and shutdown: health, readiness from the filter's
//! credential gauge, Prometheus metrics, and draining with a stream in flight.

use std::time::Duration;

use integration_tests::client::{self, HttpRequest};
use integration_tests::proxy_support::proxy;
use integration_tests::scenario::{Scenario, Scene};
use integration_tests::upstream::{Reply, Upstream};
use integration_tests::wait;

const TOKEN: &str = "sk-ant-oat01-proxy-admin";
const WAIT: Duration = Duration::from_secs(10);

#[test]
fn ready_only_with_a_credential_and_healthy_either_way() {
    let Scene {
        upstream: _upstream,
        proxy: without,
    } = Scenario::new().start().unwrap();
    assert_eq!(without.admin("/healthz").unwrap().status, 200);
    let not_ready = without.admin("/readyz").unwrap();
    assert_eq!(not_ready.status, 503);
    assert!(
        not_ready.body_text().contains("credential unavailable"),
        "{}",
        not_ready.body_text()
    );

    let Scene {
        upstream: _upstream,
        proxy: with,
    } = Scenario::new().token(TOKEN).start().unwrap();
    assert_eq!(with.admin("/readyz").unwrap().status, 200);
    assert_eq!(with.admin("/nope").unwrap().status, 404);
}

#[test]
fn metrics_cover_the_proxy_and_the_filter() {
    let Scene {
        upstream: _upstream,
        proxy,
    } = Scenario::new().token(TOKEN).start().unwrap();
    for _ in 0..3 {
        assert_eq!(
            proxy.send(HttpRequest::get("/v1/models")).unwrap().status,
            200
        );
    }
    // The proxy counts a request when it has finished writing the response, which can be just after
    // the client has read it all.
    wait::until("the three requests to be counted as answered", WAIT, || {
        proxy.metric("proxy_requests_total{class=\"2xx\"}").ok() == Some(3.0)
            && proxy.metric("proxy_in_flight_requests").ok() == Some(0.0)
    })
    .unwrap();
    let scrape = proxy.admin("/metrics").unwrap();
    assert_eq!(scrape.status, 200);
    let text = scrape.body_text();
    assert!(!text.contains(TOKEN));
    assert_eq!(
        proxy.metric("proxy_requests_total{class=\"2xx\"}").unwrap(),
        3.0,
        "{text}"
    );
    assert_eq!(
        proxy
            .metric("proxy_upstream_latency_seconds_count")
            .unwrap(),
        3.0,
        "{text}"
    );
    assert!(
        text.contains("proxy_upstream_latency_seconds_bucket{le=\"0.005\"}"),
        "{text}"
    );
    assert_eq!(
        proxy.metric("proxy_in_flight_requests").unwrap(),
        0.0,
        "{text}"
    );
    assert_eq!(
        proxy
            .metric("credential_filter_credential_available")
            .unwrap(),
        1.0,
        "{text}"
    );
    assert_eq!(
        proxy.metric("credential_filter_requests_total").unwrap(),
        3.0,
        "{text}"
    );
    assert_eq!(
        proxy
            .metric("credential_filter_credential_injected_total")
            .unwrap(),
        3.0,
        "{text}"
    );
}

#[test]
fn shutdown_lets_a_stream_in_flight_finish_and_refuses_new_connections() {
    let Scene {
        upstream,
        mut proxy,
    } = Scenario::new()
        .upstream(Upstream::builder().route(
            "/v1/messages",
            Reply::sse_numbered(5, Duration::from_millis(200)),
        ))
        .token(TOKEN)
        .config("drain_timeout = \"10s\"")
        .start()
        .unwrap();
    let addr = proxy.addr();
    let stream = std::thread::spawn(move || {
        client::send(
            addr,
            HttpRequest::post("/v1/messages").body("{}"),
            Duration::from_secs(20),
        )
    });
    upstream
        .wait_for_requests(1, Duration::from_secs(10))
        .unwrap();

    proxy.begin_shutdown();
    let response = stream.join().unwrap().unwrap();
    assert_eq!(response.status, 200);
    assert!(
        response.body_text().contains("\"n\":5"),
        "the stream was cut: {}",
        response.body_text()
    );
    // Readiness turns off while draining, so load balancers stop sending traffic.
    let readiness = proxy.admin("/readyz");
    assert!(readiness.is_err() || readiness.is_ok_and(|response| response.status == 503));
    proxy.stop().unwrap();
    assert!(client::send(addr, HttpRequest::get("/v1/models"), Duration::from_secs(2)).is_err());
}

#[test]
fn drain_timeout_bounds_the_wait_for_a_stuck_request() {
    let Scene {
        upstream,
        mut proxy,
    } = Scenario::new()
        .upstream(Upstream::builder().route("/stuck", Reply::Never))
        .token(TOKEN)
        .config("drain_timeout = \"300ms\"")
        .start()
        .unwrap();
    let addr = proxy.addr();
    let stuck = std::thread::spawn(move || {
        client::send(addr, HttpRequest::get("/stuck"), Duration::from_secs(20))
    });
    upstream
        .wait_for_requests(1, Duration::from_secs(10))
        .unwrap();
    let started = std::time::Instant::now();
    proxy.begin_shutdown();
    proxy.stop().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    // The stuck request's connection is closed, not left hanging.
    assert!(stuck.join().unwrap().is_err());
}

#[test]
fn admin_connections_are_capped_and_freed_when_their_clients_leave() {
    let proxy = proxy().token(TOKEN).start().unwrap();
    // Clients that connect and send nothing: they hold connections until the head timeout.
    let idle: Vec<std::net::TcpStream> = (0..64)
        .map(|_| std::net::TcpStream::connect(proxy.admin_addr()).unwrap())
        .collect();
    // The kernel completes those connects before the proxy accepts them: once it has accepted all 64, a
    // 65th is refused; a missing cap would serve it and this wait would time out.
    wait::until("a 65th admin connection to be refused", WAIT, || {
        proxy.admin("/healthz").is_err()
    })
    .unwrap();
    drop(idle);
    wait::until("the admin endpoint to serve again", WAIT, || {
        proxy.admin("/healthz").is_ok()
    })
    .unwrap();
}
