//! The access policy of the real filter through the harness: the caller identity comes from a host
//! property (`caller.id` as `host-harness serve` sets it, `source.principal` as Envoy and Istio set it) or
//! from a header the operator declared trusted, never from a header a client can send.

use host_harness::{
    Action, HarnessError, Headers, LogLevel, Plugin, PluginBuilder, StreamInfo, Vm,
};
use serde_json::{Value, json};

const TOKEN: &str = "sk-ant-oat01-access-test-token";

/// The real filter with the Anthropic preset and this access policy.
fn filter(access: Value) -> PluginBuilder {
    let config = json!({
        "credential": {"source": {"env": "ANTHROPIC_OAUTH_TOKEN"}},
        "preset": "anthropic",
        "access": access,
    });
    Plugin::builder()
        .module_file(env!("FILTER_WASM"))
        .plugin_config(config.to_string())
        .env("ANTHROPIC_OAUTH_TOKEN", TOKEN)
}

fn start(access: Value) -> Vm {
    filter(access).build().unwrap().start_vm().unwrap()
}

fn request(extra: &[(&str, &str)]) -> Headers {
    let mut headers: Headers = [
        (":method", "POST"),
        (":path", "/v1/messages"),
        (":authority", "ai"),
        (":scheme", "http"),
    ]
    .into();
    for (name, value) in extra {
        headers.add(name, value.as_bytes());
    }
    headers
}

/// Runs one request; `Ok(authorization sent upstream)` when forwarded, `Err((status, error type,
/// message))` when the filter answered itself.
fn outcome(
    vm: &mut Vm,
    info: StreamInfo,
    extra: &[(&str, &str)],
) -> Result<String, (u32, String, String)> {
    let mut stream = vm.stream_with(info).unwrap();
    let action = stream.request_headers(request(extra), true).unwrap();
    let result = match stream.local_response() {
        Some(local) => {
            let body: Value = serde_json::from_slice(&local.body).unwrap();
            Err((
                local.status,
                body["error"]["type"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                body["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ))
        }
        None => {
            assert_eq!(action, Action::Continue);
            let upstream = stream.upstream_request_headers().unwrap();
            Ok(upstream
                .get_str("authorization")
                .unwrap_or_default()
                .to_owned())
        }
    };
    stream.finish().unwrap();
    result
}

fn caller(id: &str) -> StreamInfo {
    StreamInfo::new().property("caller.id", id)
}

fn refused(result: Result<String, (u32, String, String)>) -> String {
    match result {
        Err((status, kind, message)) => {
            assert_eq!(
                (status, kind.as_str()),
                (403, "permission_error"),
                "{message}"
            );
            message
        }
        Ok(authorization) => panic!("forwarded with {authorization:?}, expected a 403"),
    }
}

/// The filter's rejection message for an access policy (its one error log line).
fn rejection(access: Value) -> String {
    match filter(access).build().unwrap().start_vm() {
        Err(HarnessError::ConfigureRejected { logs }) => {
            let errors: Vec<_> = logs.iter().filter(|r| r.level >= LogLevel::Error).collect();
            assert_eq!(errors.len(), 1, "exactly one error line: {logs:?}");
            errors[0].message.clone()
        }
        Err(other) => panic!("expected a rejected configuration, got {other}"),
        Ok(_) => panic!("configuration was accepted"),
    }
}

#[test]
fn caller_id_property_admits_listed_users_and_tags_and_refuses_the_rest() {
    let mut vm = start(
        json!({"identity": {"property": "caller.id", "allow": ["alice@example.com", "tag:ci"]}}),
    );
    let bearer = format!("Bearer {TOKEN}");
    for allowed in [
        "alice@example.com",
        "ALICE@example.COM",
        "tag:ci",
        "tag:ci,tag:server",
        "tag:server,tag:ci",
    ] {
        assert_eq!(
            outcome(&mut vm, caller(allowed), &[]),
            Ok(bearer.clone()),
            "{allowed}"
        );
    }
    for (info, message) in [
        (
            caller("bob@example.com"),
            "the caller identity is not allowed to use this upstream",
        ),
        (
            caller("tag:server"),
            "the caller identity is not allowed to use this upstream",
        ),
        (caller(""), "the request carries no caller identity"),
        (StreamInfo::new(), "the request carries no caller identity"),
    ] {
        assert_eq!(refused(outcome(&mut vm, info, &[])), message);
    }
}

#[test]
fn client_headers_never_pass_a_property_policy() {
    let mut vm =
        start(json!({"identity": {"property": "caller.id", "allow": ["alice@example.com"]}}));
    let forgeries: [&[(&str, &str)]; 7] = [
        &[("caller.id", "alice@example.com")],
        &[("caller-id", "alice@example.com")],
        &[("tailscale-user-login", "alice@example.com")],
        &[("Tailscale-User-Login", "ALICE@EXAMPLE.COM")],
        &[("tailscale-user-login", " alice@example.com\t")],
        &[
            ("tailscale-user-login", "alice@example.com"),
            ("tailscale-user-login", "alice@example.com"),
        ],
        &[
            ("x-forwarded-user", "alice@example.com"),
            ("caller.id", "alice@example.com"),
        ],
    ];
    for forged in forgeries {
        // No identity from the host: the headers are not one.
        assert_eq!(
            refused(outcome(&mut vm, StreamInfo::new(), forged)),
            "the request carries no caller identity",
            "{forged:?}"
        );
        // The host names someone else: the headers do not override it.
        assert_eq!(
            refused(outcome(&mut vm, caller("mallory@example.com"), forged)),
            "the caller identity is not allowed to use this upstream",
            "{forged:?}"
        );
    }
}

#[test]
fn source_principal_from_mtls_is_an_identity_source() {
    let principal = "spiffe://cluster.local/ns/ci/sa/runner";
    let mut vm = start(json!({"identity": {"property": "source.principal", "allow": [principal]}}));
    let peer = |value: &str| StreamInfo::new().property("source.principal", value);
    assert_eq!(
        outcome(&mut vm, peer(principal), &[]),
        Ok(format!("Bearer {TOKEN}"))
    );
    refused(outcome(
        &mut vm,
        peer("spiffe://cluster.local/ns/ci/sa/other"),
        &[],
    ));
    // No client certificate: no principal; neither caller.id nor a header stands in for it.
    refused(outcome(
        &mut vm,
        caller(principal),
        &[("source.principal", principal)],
    ));
}

#[test]
fn a_header_without_trusted_true_is_rejected_with_what_to_use_instead() {
    for identity in [
        json!({"header": "tailscale-user-login", "allow": ["alice@example.com"]}),
        json!({"header": "x-user", "trusted": false, "allow": ["alice@example.com"]}),
    ] {
        let message = rejection(json!({"identity": identity}));
        assert!(
            message
                .starts_with("credential filter configuration rejected: access.identity.header: "),
            "{message}"
        );
        for hint in [
            "any client can send a header",
            "{\"property\": \"caller.id\"}",
            "source.principal",
            "\"trusted\": true",
        ] {
            assert!(message.contains(hint), "{hint:?} missing from: {message}");
        }
    }
    let both = rejection(
        json!({"identity": {"property": "caller.id", "header": "x-user", "trusted": true, "allow": ["a"]}}),
    );
    assert!(
        both.contains("access.identity: give exactly one source"),
        "{both}"
    );
    let client_written =
        rejection(json!({"identity": {"property": "request.headers.x-user", "allow": ["a"]}}));
    assert!(
        client_written.contains("access.identity.property: "),
        "{client_written}"
    );
}

#[test]
fn a_trusted_header_is_read_when_declared_so() {
    let mut vm = start(
        json!({"identity": {"header": "x-user", "trusted": true, "allow": ["alice@example.com"]}}),
    );
    assert_eq!(
        outcome(
            &mut vm,
            StreamInfo::new(),
            &[("X-User", "alice@example.com")]
        ),
        Ok(format!("Bearer {TOKEN}"))
    );
    assert_eq!(
        refused(outcome(
            &mut vm,
            StreamInfo::new(),
            &[
                ("x-user", "alice@example.com"),
                ("x-user", "bob@example.com")
            ]
        )),
        "the request carries more than one caller identity"
    );
    assert_eq!(
        refused(outcome(&mut vm, caller("alice@example.com"), &[])),
        "the request carries no caller identity"
    );
}
