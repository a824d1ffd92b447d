//! `host-harness serve` end to end with the filter's `oauth2` source: the filter's `dispatch_http_call`
//! goes out through the proxy's client to a configured cluster, held requests resume when the token
//! arrives, every worker shares the token, and the rotated refresh token lands in the state file.

use std::time::Duration;

use integration_tests::client::HttpRequest;
use integration_tests::scenario::{Scenario, Scene};
use integration_tests::upstream::{Reply, TokenEndpoint, Upstream};

const WAIT: Duration = Duration::from_secs(10);

fn oauth_config() -> String {
    serde_json::json!({
        "credential": {"source": {"oauth2": {
            "token_endpoint": {"cluster": "idp", "authority": "idp.example.com", "path": "/oauth2/token"},
            "grant_type": "refresh_token",
            "client_id": "proxy-e2e",
            "refresh_token": {"env": "REFRESH_TOKEN"}
        }}},
        "preset": "anthropic"
    })
    .to_string()
}

/// A proxy whose filter gets tokens from `idp` (cluster `idp`, refresh token `rt-initial`) and
/// persists the rotation to `state_path`, in front of an echoing upstream.
fn oauth_scenario(idp: &Upstream, state_path: &std::path::Path) -> Scenario {
    Scenario::new()
        .plugin_config(&oauth_config())
        .proxy(|proxy| {
            proxy
                .cluster("idp", &idp.url(""))
                .env("REFRESH_TOKEN", "rt-initial")
                .state_file(state_path)
        })
}

#[test]
fn token_from_the_cluster_is_injected_and_the_rotation_is_persisted() {
    let endpoint = TokenEndpoint::new();
    let idp = Upstream::builder()
        .route("/oauth2/token", Reply::Token(endpoint.clone()))
        .start()
        .unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    let state_path = state_dir.path().join("token-state.json");
    let Scene { upstream, proxy } = oauth_scenario(&idp, &state_path).start().unwrap();

    // The first request waits while the filter fetches a token through the proxy's cluster; its body
    // waits with it and arrives intact.
    let first = proxy
        .send(HttpRequest::post("/v1/messages").body(r#"{"held":true}"#))
        .unwrap();
    assert_eq!(first.status, 200, "{}", first.body_text());
    let token_request = &idp.wait_for_requests(1, WAIT).unwrap()[0];
    assert_eq!(token_request.method, "POST");
    assert_eq!(token_request.header("host"), Some("idp.example.com"));
    let form = &endpoint.forms()[0];
    assert!(
        form.contains(&("grant_type".to_owned(), "refresh_token".to_owned())),
        "{form:?}"
    );
    assert!(
        form.contains(&("refresh_token".to_owned(), "rt-initial".to_owned())),
        "{form:?}"
    );

    // Both workers use the one token: several requests, one issue.
    for _ in 0..6 {
        assert_eq!(
            proxy.send(HttpRequest::get("/v1/models")).unwrap().status,
            200
        );
    }
    assert_eq!(endpoint.issued(), 1);
    let seen = upstream.wait_for_requests(7, WAIT).unwrap();
    assert_eq!(seen[0].body_text(), r#"{"held":true}"#);
    for request in &seen {
        assert_eq!(
            request.header_values("authorization"),
            [format!("Bearer {}", TokenEndpoint::access_token(1))]
        );
    }
    assert_eq!(proxy.admin("/readyz").unwrap().status, 200);

    proxy.stop().unwrap();
    let state = std::fs::read_to_string(&state_path).unwrap();
    assert!(
        state.contains(&TokenEndpoint::refresh_token(1)),
        "the rotated refresh token was not persisted"
    );
}

#[test]
fn shutdown_waits_for_a_token_refresh_in_flight_and_persists_its_rotation() {
    let endpoint = TokenEndpoint::new();
    let idp = Upstream::builder()
        .route(
            "/oauth2/token",
            Reply::Delayed {
                delay: Duration::from_millis(800),
                then: Box::new(Reply::Token(endpoint.clone())),
            },
        )
        .start()
        .unwrap();
    let state_dir = tempfile::tempdir().unwrap();
    let state_path = state_dir.path().join("token-state.json");
    let Scene {
        upstream: _upstream,
        proxy,
    } = oauth_scenario(&idp, &state_path).start().unwrap();
    // The refresh started at configuration is on its way when the shutdown begins, with no request
    // open: the worker must still wait for its answer.
    idp.wait_for_requests(1, WAIT).unwrap();
    proxy.stop().unwrap();
    let state = std::fs::read_to_string(&state_path).unwrap_or_default();
    assert!(
        state.contains(&TokenEndpoint::refresh_token(1)),
        "the rotation that arrived during the drain was lost: {state}"
    );
}

#[test]
fn unknown_cluster_leaves_the_filter_without_a_credential() {
    let config = oauth_config().replace("\"idp\"", "\"not-configured\"");
    let Scene { upstream, proxy } = Scenario::new()
        .plugin_config(&config)
        .proxy(|proxy| proxy.env("REFRESH_TOKEN", "rt-initial"))
        .start()
        .unwrap();
    let response = proxy.send(HttpRequest::get("/v1/models")).unwrap();
    assert_eq!(response.status, 503, "{}", response.body_text());
    assert_eq!(upstream.request_count(), 0);
}
