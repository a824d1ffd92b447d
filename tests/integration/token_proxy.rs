//! The standalone proxy with the `oauth2` source across a restart: a real token server and a real
//! upstream on 127.0.0.1; the rotated refresh token is written to the state file, and the restarted proxy
//! continues from it, never sending the spent one again.

use std::time::Duration;

use integration_tests::client::HttpRequest;
use integration_tests::proxy_support::{RunningProxy, proxy};
use integration_tests::upstream::{Reply, TokenEndpoint, Upstream};
use integration_tests::wait;

const WAIT: Duration = Duration::from_secs(15);

fn start(
    token_server: &Upstream,
    upstream: &Upstream,
    state_path: &std::path::Path,
) -> RunningProxy {
    let config = serde_json::json!({
        "credential": {"source": {"oauth2": {
            "token_endpoint": {"cluster": "oauth", "authority": "auth.example.com", "path": "/oauth/token"},
            "grant_type": "refresh_token",
            "client_id": "client-restart",
            "refresh_token": {"env": "REFRESH_TOKEN"}
        }}}
    });
    proxy()
        .upstream(&upstream.url(""))
        .cluster("oauth", &token_server.url(""))
        .env("REFRESH_TOKEN", "rt-0")
        .plugin_config(&config.to_string())
        .state_file(state_path)
        .start()
        .unwrap()
}

fn sent_refresh_tokens(tokens: &TokenEndpoint) -> Vec<String> {
    tokens
        .forms()
        .iter()
        .map(|form| {
            form.iter()
                .find(|(name, _)| name == "refresh_token")
                .map(|(_, value)| value.clone())
                .unwrap_or_default()
        })
        .collect()
}

fn authorization_of_one_request(proxy: &RunningProxy, upstream: &Upstream) -> String {
    let before = upstream.request_count();
    let response = proxy
        .send(HttpRequest::post("/v1/messages").body("{}"))
        .unwrap();
    assert_eq!(response.status, 200, "{}", response.body_text());
    let seen = upstream.wait_for_requests(before + 1, WAIT).unwrap();
    seen[before].header_values("authorization").join(",")
}

#[test]
fn a_restarted_proxy_continues_from_the_rotated_refresh_token() {
    // Eight-second tokens: a proactive refresh falls due four seconds after each issue.
    let tokens = TokenEndpoint::new().with_expires_in(8);
    let token_server = Upstream::builder()
        .route("/oauth/token", Reply::Token(tokens.clone()))
        .start()
        .unwrap();
    let upstream = Upstream::echo().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state_path = dir.path().join("token-state.json");

    let first = start(&token_server, &upstream, &state_path);
    assert_eq!(
        authorization_of_one_request(&first, &upstream),
        "Bearer at-1"
    );
    wait::until("the rotated refresh token in the state file", WAIT, || {
        std::fs::read_to_string(&state_path).is_ok_and(|state| state.contains("\"rt-1\""))
    })
    .unwrap();
    first.stop().unwrap();
    assert_eq!(
        sent_refresh_tokens(&tokens),
        ["rt-0"],
        "stopped before any proactive refresh"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&state_path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // The restart reads the state: the token still valid is used, and the next refresh sends rt-1.
    let second = start(&token_server, &upstream, &state_path);
    assert_eq!(
        authorization_of_one_request(&second, &upstream),
        "Bearer at-1"
    );
    wait::until("a refresh after the restart", WAIT, || tokens.issued() >= 2).unwrap();
    assert_eq!(
        sent_refresh_tokens(&tokens)[..2],
        ["rt-0", "rt-1"],
        "the spent rt-0 was never sent again"
    );
    assert_eq!(
        authorization_of_one_request(&second, &upstream),
        "Bearer at-2"
    );
    wait::until("rt-2 in the state file", WAIT, || {
        std::fs::read_to_string(&state_path).is_ok_and(|state| state.contains("\"rt-2\""))
    })
    .unwrap();
    second.stop().unwrap();
    let sent = sent_refresh_tokens(&tokens);
    let mut unique = sent.clone();
    unique.dedup();
    assert_eq!(sent, unique, "a refresh token was sent twice: {sent:?}");
}
