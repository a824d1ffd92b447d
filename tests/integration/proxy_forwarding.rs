//! `host-harness serve` end to end, the forwarding path: the real filter injects the credential, strips
//! client credentials and hop-by-hop headers, applies rules and answers locally; bodies stream both ways.

use std::time::Duration;

use integration_tests::client::HttpRequest;
use integration_tests::scenario::{Scenario, Scene};
use integration_tests::upstream::{FixedReply, Reply, Upstream};

const TOKEN: &str = "sk-ant-oat01-proxy-e2e-token";
const WAIT: Duration = Duration::from_secs(10);

#[test]
fn injects_the_bearer_token_and_strips_client_credentials() {
    let Scene { upstream, proxy } = Scenario::new().token(TOKEN).start().unwrap();
    let response = proxy
        .send(
            HttpRequest::post("/v1/messages?beta=true")
                .header("host", "proxy.internal")
                .header("authorization", "Bearer client-supplied")
                .header("x-api-key", "client-key")
                .header("anthropic-beta", "tools-2024-04-04")
                .header("content-type", "application/json")
                .body(r#"{"model":"m"}"#),
        )
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.body_text());

    let seen = upstream.wait_for_requests(1, WAIT).unwrap();
    let request = &seen[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/v1/messages?beta=true");
    assert_eq!(
        request.header_values("authorization"),
        [format!("Bearer {TOKEN}")]
    );
    assert!(request.header("x-api-key").is_none());
    assert_eq!(request.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        request.header("anthropic-beta"),
        Some("tools-2024-04-04,oauth-2025-04-20")
    );
    assert_eq!(request.body_text(), r#"{"model":"m"}"#);
    // The upstream's own host, never the client's.
    assert_eq!(request.header_values("host"), [upstream.addr().to_string()]);
    // No client address leaves the proxy unless `forward_client_address` says so.
    assert!(request.header("x-forwarded-for").is_none());
}

#[test]
fn hop_by_hop_headers_are_dropped_and_repeated_headers_kept() {
    let Scene { upstream, proxy } = Scenario::new()
        .upstream(
            Upstream::builder().fallback(Reply::Fixed(
                FixedReply::new(200)
                    .header("x-upstream", "one")
                    .header("x-upstream", "two")
                    .header("connection", "keep-alive, x-upstream-hop")
                    .header("x-upstream-hop", "secret-to-the-hop")
                    .header("keep-alive", "timeout=5")
                    .body("ok"),
            )),
        )
        .token(TOKEN)
        .config("forward_client_address = true")
        .start()
        .unwrap();
    let response = proxy
        .send(
            HttpRequest::get("/v1/models")
                .header("connection", "keep-alive, x-client-hop")
                .header("x-client-hop", "1")
                .header("keep-alive", "timeout=5")
                .header("proxy-connection", "keep-alive")
                .header("te", "trailers")
                .header("x-forwarded-for", "203.0.113.7")
                .header("x-multi", "a")
                .header("x-multi", "b"),
        )
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header_values("x-upstream"), ["one", "two"]);
    assert!(response.header("x-upstream-hop").is_none());
    assert!(response.header("keep-alive").is_none());

    let request = &upstream.wait_for_requests(1, WAIT).unwrap()[0];
    for hop in [
        "x-client-hop",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
        "transfer-encoding",
    ] {
        assert!(
            request.header(hop).is_none(),
            "{hop} was forwarded: {:?}",
            request.headers
        );
    }
    assert_eq!(request.header_values("x-multi"), ["a", "b"]);
    assert_eq!(
        request.header("x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
}

#[test]
fn request_and_response_rules_apply() {
    let config = r#"{
        "credential": {"source": {"env": "ANTHROPIC_OAUTH_TOKEN"}},
        "preset": "anthropic",
        "request_rules": [
            {"rewrite_path_prefix": {"from": "/anthropic/", "to": "/"}},
            {"set_if_absent": {"name": "x-team", "value": "ml"}},
            {"remove": {"name": "x-debug"}}
        ],
        "response_rules": [
            {"remove": {"name": "server"}},
            {"set": {"name": "x-served-by", "value": "ai-gateway"}}
        ]
    }"#;
    let Scene { upstream, proxy } = Scenario::new()
        .upstream(
            Upstream::builder().fallback(Reply::Fixed(
                FixedReply::new(200)
                    .header("server", "upstream/1.0")
                    .body("ok"),
            )),
        )
        .token(TOKEN)
        .plugin_config(config)
        .start()
        .unwrap();
    let response = proxy
        .send(HttpRequest::get("/anthropic/v1/models").header("x-debug", "1"))
        .unwrap();
    assert_eq!(response.status, 200);
    assert!(response.header("server").is_none());
    assert_eq!(response.header("x-served-by"), Some("ai-gateway"));

    let request = &upstream.wait_for_requests(1, WAIT).unwrap()[0];
    assert_eq!(request.path, "/v1/models");
    assert_eq!(request.header("x-team"), Some("ml"));
    assert!(request.header("x-debug").is_none());
}

#[test]
fn without_a_token_the_filter_answers_503_and_nothing_is_forwarded() {
    let Scene { upstream, proxy } = Scenario::new().start().unwrap();
    let response = proxy
        .send(HttpRequest::post("/v1/messages").body("{}"))
        .unwrap();
    assert_eq!(response.status, 503);
    let body = response.json().unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "credential_unavailable");
    assert_eq!(upstream.request_count(), 0);
}

/// A proxy whose filter admits only clients from `cidr`, in front of an echoing upstream.
fn proxy_admitting(cidr: &str) -> Scene {
    let config = serde_json::json!({
        "credential": {"source": {"env": "ANTHROPIC_OAUTH_TOKEN"}},
        "access": {"source_cidrs": [cidr]}
    });
    Scenario::new()
        .token(TOKEN)
        .plugin_config(&config.to_string())
        .start()
        .unwrap()
}

#[test]
fn access_policy_refusal_is_a_local_403() {
    let Scene { upstream, proxy } = proxy_admitting("10.0.0.0/8");
    let response = proxy.send(HttpRequest::get("/v1/models")).unwrap();
    assert_eq!(response.status, 403, "{}", response.body_text());
    assert_eq!(
        response.json().unwrap()["error"]["type"],
        "permission_error"
    );
    assert_eq!(upstream.request_count(), 0);
}

#[test]
fn access_policy_admits_a_client_inside_the_allowed_network() {
    let Scene { upstream, proxy } = proxy_admitting("127.0.0.0/8");
    let response = proxy.send(HttpRequest::get("/v1/models")).unwrap();
    assert_eq!(response.status, 200, "{}", response.body_text());
    assert_eq!(upstream.request_count(), 1);
}

#[test]
fn sse_events_reach_the_client_while_the_upstream_is_still_sending() {
    let Scene {
        upstream: _upstream,
        proxy,
    } = Scenario::new()
        .upstream(Upstream::builder().route(
            "/v1/messages",
            Reply::sse_numbered(4, Duration::from_millis(300)),
        ))
        .token(TOKEN)
        .start()
        .unwrap();
    let response = proxy
        .send(
            HttpRequest::post("/v1/messages")
                .header("accept", "text/event-stream")
                .body("{}"),
        )
        .unwrap();
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|value| value.starts_with("text/event-stream"))
    );
    let text = response.body_text();
    for n in 1..=4 {
        assert!(text.contains(&format!("data: {{\"n\":{n}}}")), "{text}");
    }
    // The upstream needs ~900 ms for its four events; the first must arrive long before the last.
    let first = response.chunks.first().unwrap();
    assert!(String::from_utf8_lossy(&first.data).contains("\"n\":1"));
    let spread = response.finished_at.duration_since(first.at);
    assert!(
        spread >= Duration::from_millis(600),
        "first event arrived only {spread:?} before the end: buffered"
    );
    assert!(
        response.chunks.len() >= 4,
        "{} chunks",
        response.chunks.len()
    );
}

#[test]
fn large_request_and_response_bodies_pass_through_intact() {
    let request_body: Vec<u8> = (0..8 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    let response_body: Vec<u8> = (0..6 * 1024 * 1024).map(|i: u32| (i % 241) as u8).collect();
    let reply = response_body.clone();
    let Scene { upstream, proxy } = Scenario::new()
        .upstream(Upstream::builder().fallback(Reply::handler(move |request| {
            FixedReply::new(200)
                .header("x-received", &request.body.len().to_string())
                .body(reply.clone())
        })))
        .token(TOKEN)
        .start()
        .unwrap();
    let response = proxy
        .send(HttpRequest::post("/v1/files").body(request_body.clone()))
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-received"), Some("8388608"));
    assert!(
        response.body == response_body,
        "response body differs ({} bytes)",
        response.body.len()
    );
    let seen = upstream.wait_for_requests(1, WAIT).unwrap();
    assert!(
        seen[0].body == request_body,
        "request body differs ({} bytes)",
        seen[0].body.len()
    );
}

#[test]
fn upstream_base_path_prefixes_every_request() {
    let Scene { upstream, proxy } = Scenario::new()
        .upstream_path("/api")
        .token(TOKEN)
        .start()
        .unwrap();
    assert_eq!(
        proxy
            .send(HttpRequest::get("/v1/models?limit=2"))
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        upstream.wait_for_requests(1, WAIT).unwrap()[0].path,
        "/api/v1/models?limit=2"
    );
}

#[test]
fn upstream_connections_are_kept_alive_and_reused() {
    let Scene { upstream, proxy } = Scenario::new()
        .token(TOKEN)
        .proxy(|proxy| proxy.workers(1))
        .start()
        .unwrap();
    for _ in 0..5 {
        let response = proxy.send(HttpRequest::get("/v1/models")).unwrap();
        assert_eq!(response.status, 200, "{}", response.body_text());
    }
    upstream.wait_for_requests(5, WAIT).unwrap();
    assert_eq!(upstream.connections_accepted(), 1);
}

#[test]
fn an_upstream_that_closes_after_each_response_gets_a_fresh_connection_each_time() {
    let Scene { upstream, proxy } = Scenario::new()
        .upstream(
            Upstream::builder().fallback(Reply::Fixed(
                FixedReply::new(200)
                    .header("connection", "close")
                    .body("bye"),
            )),
        )
        .token(TOKEN)
        .proxy(|proxy| proxy.workers(1))
        .start()
        .unwrap();
    for _ in 0..3 {
        let response = proxy.send(HttpRequest::get("/v1/models")).unwrap();
        assert_eq!(response.status, 200, "{}", response.body_text());
        assert_eq!(response.body_text(), "bye");
    }
    assert_eq!(upstream.connections_accepted(), 3);
}
