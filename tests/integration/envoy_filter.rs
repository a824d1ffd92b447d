//! The product filter in real Envoy (V8) on 127.0.0.1, asserting what the harness tests assert: injection,
//! stripping, the preset, request and response rules, the access policy, local responses, and the metrics
//! as Envoy exposes them (`wasmcustom.*`).

use std::time::Duration;

use integration_tests::client::{self, HttpRequest};
use integration_tests::envoy::{self, Envoy};
use integration_tests::upstream::Upstream;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(10);
const TOKEN: &str = "sk-ant-oat01-envoy-test-token";

fn config() -> Value {
    json!({
        "credential": {"source": {"env": "ANTHROPIC_OAUTH_TOKEN"}},
        "preset": "anthropic",
        "strip_request_headers": ["x-goog-api-key"],
        "request_rules": [
            {"when": {"path_prefix": "/anthropic/"}, "rewrite_path_prefix": {"from": "/anthropic/", "to": "/"}},
            {"set_authority": {"value": "api.anthropic.com"}},
            {"when": {"method": "POST"}, "append": {"name": "x-tag", "value": "proxied"}},
        ],
        "response_rules": [{"set": {"name": "x-served-by", "value": "ai-proxy"}}],
        // The listener is on loopback and the test client is the only front: the header stands for one a
        // front proxy strips and sets (`source.principal` needs mTLS, which this fixture does not set up).
        "access": {"identity": {"header": "x-user", "trusted": true, "allow": ["alice@example.com"]}},
    })
}

fn start(
    binary: std::path::PathBuf,
    upstream: &Upstream,
    token: Option<&str>,
) -> anyhow::Result<Envoy> {
    let mut builder = Envoy::builder(binary, env!("FILTER_WASM"))
        .plugin_configuration(config().to_string())
        .plugin_name("credential_filter")
        .root_id("credential_filter")
        .cluster("upstream", upstream.addr())
        .route_to("upstream");
    if let Some(token) = token {
        builder = builder.env("ANTHROPIC_OAUTH_TOKEN", token);
    }
    builder.start()
}

#[test]
fn envoy_injects_strips_rewrites_and_counts() -> anyhow::Result<()> {
    let Some(binary) = envoy::binary()? else {
        return Ok(());
    };
    let upstream = Upstream::echo()?;
    let proxy = start(binary, &upstream, Some(TOKEN))?;

    let request = HttpRequest::post("/anthropic/v1/messages")
        .header("x-user", "alice@example.com")
        .header("authorization", "Bearer client-own")
        .header("x-api-key", "client-key")
        .header("x-goog-api-key", "other-key")
        .header("anthropic-beta", "tools-2024")
        .header("x-tag", "client")
        .header("content-type", "application/json")
        .body("{}");
    let response = client::send(proxy.addr(), request, TIMEOUT)?;
    assert_eq!(response.status, 200, "{}", response.body_text());
    assert_eq!(response.header("x-served-by"), Some("ai-proxy"));
    assert!(response.header("authorization").is_none());

    let seen = upstream.wait_for_requests(1, TIMEOUT)?;
    let forwarded = &seen[0];
    assert_eq!(
        forwarded.header_values("authorization"),
        [format!("Bearer {TOKEN}")]
    );
    assert!(forwarded.header("x-api-key").is_none());
    assert!(forwarded.header("x-goog-api-key").is_none());
    assert_eq!(forwarded.path_only(), "/v1/messages");
    assert_eq!(forwarded.header("host"), Some("api.anthropic.com"));
    assert_eq!(forwarded.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        forwarded.header("anthropic-beta"),
        Some("tools-2024,oauth-2025-04-20")
    );
    assert_eq!(forwarded.header_values("x-tag"), ["client", "proxied"]);

    let metrics = proxy.custom_metrics()?;
    let metric = |name: &str| metrics.get(name).copied().unwrap_or(-1);
    assert_eq!(metric("credential_filter_requests_total"), 1, "{metrics:?}");
    assert_eq!(
        metric("credential_filter_credential_injected_total"),
        1,
        "{metrics:?}"
    );
    assert_eq!(
        metric("credential_filter_access_denied_total"),
        0,
        "{metrics:?}"
    );
    assert!(
        metric("credential_filter_rules_applied_total") >= 4,
        "{metrics:?}"
    );
    assert!(
        metric("credential_filter_credential_available") >= 1,
        "{metrics:?}"
    );

    let log = proxy.log()?;
    assert!(!log.contains(TOKEN), "the token reached Envoy's log");
    Ok(())
}

#[test]
fn envoy_refuses_callers_outside_the_policy_and_answers_503_without_a_credential()
-> anyhow::Result<()> {
    let Some(binary) = envoy::binary()? else {
        return Ok(());
    };
    let upstream = Upstream::echo()?;
    let with_token = start(binary.clone(), &upstream, Some(TOKEN))?;
    for caller in [Some("mallory@example.com"), None] {
        let mut request = HttpRequest::post("/v1/messages").body("{}");
        if let Some(caller) = caller {
            request = request.header("x-user", caller);
        }
        let response = client::send(with_token.addr(), request, TIMEOUT)?;
        assert_eq!(response.status, 403, "{caller:?}: {}", response.body_text());
        assert_eq!(response.header("content-type"), Some("application/json"));
        let body = response.json()?;
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "permission_error");
    }
    assert_eq!(
        with_token
            .custom_metrics()?
            .get("credential_filter_access_denied_total")
            .copied(),
        Some(2)
    );

    let without_token = start(binary, &upstream, None)?;
    let request = HttpRequest::post("/v1/messages")
        .header("x-user", "alice@example.com")
        .body("{}");
    let response = client::send(without_token.addr(), request, TIMEOUT)?;
    assert_eq!(response.status, 503, "{}", response.body_text());
    assert_eq!(response.json()?["error"]["type"], "credential_unavailable");
    let metrics = without_token.custom_metrics()?;
    assert_eq!(
        metrics
            .get("credential_filter_credential_unavailable_total")
            .copied(),
        Some(1),
        "{metrics:?}"
    );
    assert_eq!(
        metrics
            .get("credential_filter_credential_available")
            .copied(),
        Some(0),
        "{metrics:?}"
    );
    assert!(
        upstream.requests().is_empty(),
        "nothing may reach the upstream"
    );
    Ok(())
}
