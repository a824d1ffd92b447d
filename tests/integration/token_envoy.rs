//! The `oauth2` source in real Envoy with two workers (three VMs with the main thread's): the token
//! endpoint is a second cluster on a loopback token server; one refresh serves every worker, and each
//! rotated refresh token is sent exactly once.

use std::time::Duration;

use integration_tests::client::{self, HttpRequest};
use integration_tests::envoy::{self, Envoy};
use integration_tests::upstream::{Reply, TokenEndpoint, Upstream};
use integration_tests::wait;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(10);

fn config() -> serde_json::Value {
    json!({
        "credential": {"source": {"oauth2": {
            "token_endpoint": {"cluster": "oauth", "authority": "auth.example.com", "path": "/oauth/token"},
            "grant_type": "refresh_token",
            "client_id": "client-1",
            "refresh_token": {"env": "REFRESH_TOKEN"},
            "request_timeout": "2s"
        }}},
        "preset": "anthropic"
    })
}

/// The refresh tokens the endpoint received, in order.
fn sent_refresh_tokens(tokens: &TokenEndpoint) -> Vec<String> {
    tokens
        .forms()
        .iter()
        .map(|form| {
            assert!(
                form.contains(&("grant_type".to_owned(), "refresh_token".to_owned())),
                "{form:?}"
            );
            assert!(
                form.contains(&("client_id".to_owned(), "client-1".to_owned())),
                "{form:?}"
            );
            form.iter()
                .find(|(name, _)| name == "refresh_token")
                .map(|(_, value)| value.clone())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn envoy_workers_share_one_refresh_and_each_rotation_is_used_once() -> anyhow::Result<()> {
    let Some(binary) = envoy::binary()? else {
        return Ok(());
    };
    // Six-second tokens: with the default five-minute margin a refresh is due at half the lifetime.
    let tokens = TokenEndpoint::new().with_expires_in(6);
    let token_server = Upstream::builder()
        .route("/oauth/token", Reply::Token(tokens.clone()))
        .start()?;
    let upstream = Upstream::echo()?;
    let proxy = Envoy::builder(binary, env!("FILTER_WASM"))
        .plugin_configuration(config().to_string())
        .plugin_name("credential_filter")
        .root_id("credential_filter")
        .env("REFRESH_TOKEN", "rt-0")
        .concurrency(2)
        .cluster("upstream", upstream.addr())
        .cluster("oauth", token_server.addr())
        .route_to("upstream")
        .start()?;

    // Every VM starts without a token and wants one at once: exactly one of them asks (checked below,
    // once later refreshes prove every VM has long seen the first token).
    wait::until("the first token", TIMEOUT, || tokens.issued() >= 1)?;

    // Many connections, spread by the kernel over both workers: all carry the one token.
    for _ in 0..12 {
        let request = HttpRequest::post("/v1/messages")
            .header("authorization", "Bearer client-own")
            .header("content-type", "application/json")
            .body("{}");
        let response = client::send(proxy.addr(), request, TIMEOUT)?;
        assert_eq!(response.status, 200, "{}", response.body_text());
    }
    let seen = upstream.wait_for_requests(12, TIMEOUT)?;
    let issued = tokens.issued();
    for request in &seen {
        let authorization = request.header_values("authorization");
        let valid = (1..=issued)
            .any(|n| authorization == [format!("Bearer {}", TokenEndpoint::access_token(n))]);
        assert!(valid, "{authorization:?}");
        assert_eq!(request.header("anthropic-beta"), Some("oauth-2025-04-20"));
    }

    // Proactive refreshes: every rotated refresh token is sent exactly once, in order.
    wait::until("two proactive refreshes", TIMEOUT, || tokens.issued() >= 3)?;
    let metrics = proxy.custom_metrics()?;
    let sent = sent_refresh_tokens(&tokens);
    assert_eq!(
        sent.iter().filter(|token| *token == "rt-0").count(),
        1,
        "one refresh for the main thread and both workers: {sent:?}"
    );
    let expected: Vec<String> = std::iter::once("rt-0".to_owned())
        .chain((1..sent.len() as u32).map(TokenEndpoint::refresh_token))
        .collect();
    assert_eq!(
        sent, expected,
        "a refresh token was sent twice or out of order"
    );
    // Counters add up over the three VMs: never more than one attempt beyond what the endpoint saw.
    let attempts = metrics
        .get("credential_filter_token_refresh_attempts_total")
        .copied()
        .unwrap_or(0);
    let successes = metrics
        .get("credential_filter_token_refresh_success_total")
        .copied()
        .unwrap_or(0);
    assert!(
        attempts >= 3 && attempts <= sent.len() as i64 + 1,
        "{metrics:?} vs {sent:?}"
    );
    assert!(successes >= 2 && successes <= attempts, "{metrics:?}");
    assert_eq!(
        metrics.get("credential_filter_credential_available"),
        Some(&1),
        "{metrics:?}"
    );

    // No token reaches Envoy's log through the plugin.
    let lines = proxy.wasm_logs()?;
    for line in &lines {
        for n in 0..=tokens.issued() {
            assert!(
                !line.message.contains(&format!("at-{n}")),
                "an access token was logged: {}",
                line.message
            );
            assert!(
                !line.message.contains(&format!("rt-{n}")),
                "a refresh token was logged: {}",
                line.message
            );
        }
    }
    assert!(
        lines
            .iter()
            .any(|line| line.message.contains("oauth2: new token")),
        "{lines:?}"
    );
    Ok(())
}
