//! `host-harness serve` end to end, when things go wrong: upstream timeouts and outages, overload,
//! malformed and oversized requests, a filter that traps or resets, and a configuration the filter
//! refuses.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use integration_tests::client::{self, HttpRequest};
use integration_tests::proxy_support::{closed_port_url, proxy};
use integration_tests::scenario::{Scenario, Scene};
use integration_tests::upstream::{FixedReply, Reply, Upstream};
use integration_tests::wait;

const TOKEN: &str = "sk-ant-oat01-proxy-failures";
const WAIT: Duration = Duration::from_secs(10);

fn assert_anthropic_error(response: &client::HttpResponse, error_type: &str) {
    assert_eq!(response.header("content-type"), Some("application/json"));
    let body = response.json().unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], error_type, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "{body}"
    );
}

#[test]
fn upstream_that_never_answers_gets_504() {
    let Scene {
        upstream: _upstream,
        proxy,
    } = Scenario::new()
        .upstream(Upstream::builder().fallback(Reply::Never))
        .token(TOKEN)
        .config("request_timeout = \"300ms\"")
        .start()
        .unwrap();
    let response = proxy.send(HttpRequest::get("/v1/models")).unwrap();
    assert_eq!(response.status, 504);
    assert_anthropic_error(&response, "timeout_error");
    assert!(
        response.body_text().contains("300ms"),
        "{}",
        response.body_text()
    );
}

#[test]
fn upstream_that_accepts_no_connection_in_time_gets_504() {
    // A listener with a backlog of one whose accept queue is full: the kernel drops further SYNs, so a
    // connect neither succeeds nor fails until it times out.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let _queued: Vec<TcpStream> = (0..4)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok())
        .collect();
    let proxy = proxy()
        .upstream(&format!("http://{addr}"))
        .token(TOKEN)
        .config("connect_timeout = \"300ms\"")
        .start()
        .unwrap();
    let response = proxy.send(HttpRequest::get("/v1/models")).unwrap();
    assert_eq!(response.status, 504, "{}", response.body_text());
    assert_anthropic_error(&response, "timeout_error");
    assert!(
        response.body_text().contains("connect timeout after 300ms"),
        "{}",
        response.body_text()
    );
    drop(listener);
}

#[test]
fn a_stream_silent_past_the_idle_timeout_is_cut_off() {
    let Scene { upstream, proxy } = Scenario::new()
        .upstream(Upstream::builder().route(
            "/v1/messages",
            Reply::sse_numbered(3, Duration::from_millis(900)),
        ))
        .token(TOKEN)
        .config("idle_timeout = \"300ms\"")
        .start()
        .unwrap();
    let started = std::time::Instant::now();
    let cut = proxy.send(HttpRequest::post("/v1/messages").body("{}"));
    assert!(
        cut.is_err(),
        "the stream was not cut: {:?}",
        cut.map(|response| response.body_text())
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "cut only after {:?}",
        started.elapsed()
    );
    // A response that keeps talking is not affected.
    upstream.set_route(
        "/v1/messages",
        Reply::sse_numbered(3, Duration::from_millis(100)),
    );
    assert_eq!(
        proxy
            .send(HttpRequest::post("/v1/messages").body("{}"))
            .unwrap()
            .status,
        200
    );
}

#[test]
fn a_client_that_stops_reading_is_cut_off_and_frees_its_slot() {
    // Far more than the loopback socket buffers hold, so the proxy's writes to the client block.
    let big = vec![b'x'; 64 << 20];
    let Scene { upstream, proxy } = Scenario::new()
        .upstream(Upstream::builder().route("/big", Reply::Fixed(FixedReply::new(200).body(big))))
        .token(TOKEN)
        .config("max_concurrency = 1\nqueue = 0\nidle_timeout = \"300ms\"")
        .start()
        .unwrap();
    let mut stalled = TcpStream::connect(proxy.addr()).unwrap();
    stalled
        .write_all(b"GET /big HTTP/1.1\r\nhost: ai\r\n\r\n")
        .unwrap();
    upstream.wait_for_requests(1, WAIT).unwrap();

    // While the stalled response holds the only slot, others are refused; once the send timeout cuts
    // it off, the slot is free again.
    let status = wait::until_some("a request that is not refused with 503", WAIT, || {
        let status = proxy.send(HttpRequest::get("/v1/models")).unwrap().status;
        (status != 503).then_some(status)
    })
    .unwrap();
    assert_eq!(status, 200, "the stalled client still holds the slot");
    // The answered request leaves the gauge once its response is written, which the client may see first.
    wait::until("no request in flight", WAIT, || {
        proxy.metric("proxy_in_flight_requests").ok() == Some(0.0)
    })
    .unwrap();
    drop(stalled);
}

#[test]
fn unreachable_upstream_gets_502() {
    let proxy = proxy()
        .upstream(&closed_port_url().unwrap())
        .token(TOKEN)
        .start()
        .unwrap();
    let response = proxy.send(HttpRequest::get("/v1/models")).unwrap();
    assert_eq!(response.status, 502);
    assert_anthropic_error(&response, "api_error");
    assert!(
        response.body_text().contains("refused"),
        "{}",
        response.body_text()
    );
    // Nothing about the credential leaks into the error.
    assert!(!response.body_text().contains(TOKEN));
}

#[test]
fn requests_beyond_the_limit_and_queue_get_503_with_retry_after() {
    let Scene { upstream, proxy } = Scenario::new()
        .upstream(Upstream::builder().route("/hold", Reply::Never))
        .token(TOKEN)
        .config("max_concurrency = 1\nqueue = 0")
        .start()
        .unwrap();
    let addr = proxy.addr();
    let held = std::thread::spawn(move || {
        client::send(addr, HttpRequest::get("/hold"), Duration::from_secs(20))
    });
    upstream.wait_for_requests(1, WAIT).unwrap();

    let refused = proxy.send(HttpRequest::get("/v1/models")).unwrap();
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_anthropic_error(&refused, "overloaded_error");
    assert!(
        proxy
            .metric("proxy_errors_total{kind=\"overload\"}")
            .unwrap()
            >= 1.0
    );

    // Admin endpoints are outside the limit.
    assert_eq!(proxy.admin("/healthz").unwrap().status, 200);

    // Ending the held upstream exchange frees the slot: the held request gets its answer (502) and the
    // next one goes through.
    drop(upstream);
    let held = held.join().unwrap().unwrap();
    assert_eq!(held.status, 502);
}

#[test]
fn queued_request_waits_for_a_free_slot() {
    let Scene { upstream, proxy } = Scenario::new()
        .upstream(Upstream::builder().route(
            "/slow",
            Reply::delayed(Duration::from_millis(400), Reply::text(200, "slow")),
        ))
        .token(TOKEN)
        .config("max_concurrency = 1\nqueue = 4")
        .start()
        .unwrap();
    let addr = proxy.addr();
    let first = std::thread::spawn(move || {
        client::send(addr, HttpRequest::get("/slow"), Duration::from_secs(20))
    });
    upstream.wait_for_requests(1, WAIT).unwrap();
    let second = proxy.send(HttpRequest::get("/fast")).unwrap();
    assert_eq!(second.status, 200);
    assert_eq!(first.join().unwrap().unwrap().status, 200);
}

/// Writes raw bytes to the proxy and returns what it answers, up to the end of the connection.
fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buffer[..n]);
                if answer.windows(4).any(|window| window == b"\r\n\r\n") && answer.len() > 12 {
                    // Enough for the status line; the proxy may keep the connection open.
                    stream
                        .set_read_timeout(Some(Duration::from_millis(300)))
                        .unwrap();
                }
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn malformed_request_gets_400() {
    let Scene { upstream, proxy } = Scenario::new().token(TOKEN).start().unwrap();
    let answer = raw_exchange(
        proxy.addr(),
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nthis is not a header\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let answer = raw_exchange(proxy.addr(), b"GET /v1/models HTTP/1.1\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("invalid_request_error"), "{answer}");
    assert_eq!(upstream.request_count(), 0);
}

#[test]
fn oversized_request_headers_get_431() {
    let Scene { upstream, proxy } = Scenario::new()
        .token(TOKEN)
        .config("max_request_header_bytes = 16384")
        .start()
        .unwrap();
    let big = "a".repeat(20 * 1024);
    let request = format!("GET /v1/models HTTP/1.1\r\nHost: x\r\nx-big: {big}\r\n\r\n");
    let answer = raw_exchange(proxy.addr(), request.as_bytes());
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        answer.lines().next().unwrap_or_default()
    );
    assert_eq!(upstream.request_count(), 0);
    // A request within the limit still works.
    assert_eq!(
        proxy
            .send(HttpRequest::get("/v1/models").header("x-small", &"b".repeat(4096)))
            .unwrap()
            .status,
        200
    );
}

/// What a request gets from a proxy running the probe filter with `plan`: the response, the
/// `filter_failure` count, and how many requests reached the upstream.
fn through_probe(plan: &str) -> (client::HttpResponse, f64, usize) {
    let Scene { upstream, proxy } = Scenario::new()
        .plugin_config(plan)
        .proxy(|proxy| proxy.filter(env!("PROBE_WASM")).workers(1))
        .start()
        .unwrap();
    let response = proxy.send(HttpRequest::get("/v1/models")).unwrap();
    let failures = proxy
        .metric(r#"proxy_errors_total{kind="filter_failure"}"#)
        .unwrap();
    (response, failures, upstream.requests().len())
}

#[test]
fn a_filter_that_traps_gets_the_proxys_503_and_counts_as_a_filter_failure() {
    let (response, failures, forwarded) =
        through_probe(r#"{"on_request_headers": [{"op": "trap"}]}"#);
    assert_eq!(response.status, 503);
    assert_anthropic_error(&response, "api_error");
    assert!(
        response.body_text().contains("request filter unavailable"),
        "{}",
        response.body_text()
    );
    assert_eq!((failures, forwarded), (1.0, 0));
}

#[test]
fn a_local_response_passes_the_filters_response_callbacks_as_in_envoy() {
    let (response, failures, forwarded) = through_probe(
        r#"{"on_request_headers": [{"op": "send_local_response", "status": 403, "body": "denied"}, {"op": "pause"}],
            "on_response_headers": [{"op": "add_header", "map": "response_headers", "name": "x-test-encoded", "value": "yes"}],
            "on_response_body": [{"op": "set_buffer", "buffer": "response_body", "start": 0, "size": 0, "data": "request "}]}"#,
    );
    assert_eq!(response.status, 403);
    assert_eq!(response.header("x-test-encoded"), Some("yes"));
    assert_eq!(response.header("content-type"), Some("text/plain"));
    assert_eq!(response.body_text(), "request denied");
    assert_eq!((failures, forwarded), (0.0, 0));
}

#[test]
fn a_filter_that_traps_on_its_own_local_response_gets_the_proxys_503() {
    let (response, failures, forwarded) = through_probe(
        r#"{"on_request_headers": [{"op": "send_local_response", "status": 401, "body": "no"}, {"op": "pause"}],
            "on_response_headers": [{"op": "trap"}]}"#,
    );
    assert_eq!(response.status, 503);
    assert_anthropic_error(&response, "api_error");
    assert_eq!((failures, forwarded), (1.0, 0));
}

#[test]
fn a_filter_that_resets_the_request_gets_500() {
    let (response, failures, forwarded) =
        through_probe(r#"{"on_request_headers": [{"op": "reset_request"}]}"#);
    assert_eq!(response.status, 500);
    assert_anthropic_error(&response, "api_error");
    assert!(
        response.body_text().contains("reset by the filter"),
        "{}",
        response.body_text()
    );
    assert_eq!((failures, forwarded), (0.0, 0));
}

#[test]
fn configuration_the_filter_rejects_stops_start_up_with_its_reason() {
    let err = proxy()
        .plugin_config(r#"{"credential": {}}"#)
        .start()
        .unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("credential.source"), "{message}");
}
