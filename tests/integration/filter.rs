//! The product filter (`filter.wasm`, built from the current sources) through the harness: every behaviour
//! of `specs/filter.md`, bad input included.

use host_harness::{
    Action, HarnessError, Headers, LogLevel, MetricValue, Plugin, PluginBuilder, StreamInfo, Vm,
};
use serde_json::{Value, json};

const TOKEN: &str = "sk-ant-oat01-test-token-never-logged";

/// A plugin of the real filter with this configuration and the token in the VM environment.
fn filter(config: Value) -> PluginBuilder {
    Plugin::builder()
        .module_file(env!("FILTER_WASM"))
        .plugin_config(config.to_string())
        .env("ANTHROPIC_OAUTH_TOKEN", TOKEN)
}

/// The flagship configuration: bearer token from the environment, Anthropic preset.
fn anthropic() -> Value {
    json!({"credential": {"source": {"env": "ANTHROPIC_OAUTH_TOKEN"}}, "preset": "anthropic"})
}

fn start(config: Value) -> Vm {
    filter(config).build().unwrap().start_vm().unwrap()
}

/// Request pseudo-headers for a POST to `path`, then `extra`.
fn request(path: &str, extra: &[(&str, &[u8])]) -> Headers {
    let mut headers: Headers = [
        (":method", "POST"),
        (":path", path),
        (":authority", "ai"),
        (":scheme", "http"),
    ]
    .into();
    for (name, value) in extra {
        headers.add(name, value);
    }
    headers
}

/// Runs one request; returns the headers as forwarded upstream, or panics when the filter answered locally.
fn forwarded(vm: &mut Vm, headers: Headers) -> Headers {
    let mut stream = vm.stream().unwrap();
    let action = stream.request_headers(headers, false).unwrap();
    assert_eq!(
        action,
        Action::Continue,
        "local response: {:?}",
        stream.local_response()
    );
    let upstream = stream.upstream_request_headers().unwrap().clone();
    stream.finish().unwrap();
    upstream
}

/// Runs one request that the filter must answer itself; returns (status, content-type, parsed body).
fn answered(vm: &mut Vm, info: StreamInfo, headers: Headers) -> (u32, String, Value) {
    let mut stream = vm.stream_with(info).unwrap();
    stream.request_headers(headers, true).unwrap();
    let local = stream
        .local_response()
        .cloned()
        .expect("the filter should answer locally");
    stream.finish().unwrap();
    let content_type = local
        .headers
        .get_str("content-type")
        .unwrap_or_default()
        .to_owned();
    (
        local.status,
        content_type,
        serde_json::from_slice(&local.body).unwrap(),
    )
}

fn values<'a>(headers: &'a Headers, name: &'a str) -> Vec<String> {
    headers
        .get_all(name.as_bytes())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

fn counter(plugin: &Plugin, name: &str) -> u64 {
    match plugin.metric(name) {
        Some(MetricValue::Counter(value) | MetricValue::Gauge(value)) => value,
        other => panic!("metric {name}: {other:?}"),
    }
}

/// The filter's rejection message for a configuration (its own log line, through the harness error).
fn rejection(config: Value) -> String {
    match filter(config).build().unwrap().start_vm() {
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
fn bearer_token_replaces_whatever_the_client_sent() {
    let mut vm = start(anthropic());
    let upstream = forwarded(
        &mut vm,
        request(
            "/v1/messages",
            &[
                ("authorization", b"Bearer client-own"),
                ("authorization", b"Basic second"),
                ("x-api-key", b"client-key"),
            ],
        ),
    );
    assert_eq!(
        values(&upstream, "authorization"),
        [format!("Bearer {TOKEN}")]
    );
    assert!(!upstream.contains("x-api-key"));
}

#[test]
fn api_key_style_credential_has_no_prefix_and_strips_listed_headers() {
    let config = json!({
        "credential": {"header": "x-api-key", "source": {"inline": "key-123"}},
        "strip_request_headers": ["authorization", "x-goog-api-key"],
    });
    let mut vm = start(config);
    let upstream = forwarded(
        &mut vm,
        request(
            "/",
            &[
                ("x-api-key", b"mine"),
                ("authorization", b"Bearer mine"),
                ("x-goog-api-key", b"g"),
                ("x-keep", b"1"),
            ],
        ),
    );
    assert_eq!(values(&upstream, "x-api-key"), ["key-123"]);
    assert!(!upstream.contains("authorization"));
    assert!(!upstream.contains("x-goog-api-key"));
    assert_eq!(values(&upstream, "x-keep"), ["1"]);
}

#[test]
fn missing_credential_answers_503_in_the_anthropic_error_shape() {
    let plugin = Plugin::builder()
        .module_file(env!("FILTER_WASM"))
        .plugin_config(anthropic().to_string())
        .build()
        .unwrap();
    let mut vm = plugin.start_vm().unwrap();
    let (status, content_type, body) =
        answered(&mut vm, StreamInfo::new(), request("/v1/messages", &[]));
    assert_eq!(status, 503);
    assert_eq!(content_type, "application/json");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "credential_unavailable");
    assert_eq!(
        counter(&plugin, "credential_filter_credential_unavailable_total"),
        1
    );
    assert_eq!(
        counter(&plugin, "credential_filter_credential_available"),
        0
    );
    assert_eq!(
        counter(&plugin, "credential_filter_credential_injected_total"),
        0
    );
}

#[test]
fn empty_credential_counts_as_missing() {
    let plugin = Plugin::builder()
        .module_file(env!("FILTER_WASM"))
        .plugin_config(anthropic().to_string())
        .env("ANTHROPIC_OAUTH_TOKEN", "  \n")
        .build()
        .unwrap();
    let mut vm = plugin.start_vm().unwrap();
    let (status, _, _) = answered(&mut vm, StreamInfo::new(), request("/", &[]));
    assert_eq!(status, 503);
}

#[test]
fn forward_mode_forwards_without_any_credential() {
    let mut config = anthropic();
    config["on_missing_credential"] = json!("forward");
    let plugin = Plugin::builder()
        .module_file(env!("FILTER_WASM"))
        .plugin_config(config.to_string())
        .build()
        .unwrap();
    let mut vm = plugin.start_vm().unwrap();
    let upstream = forwarded(
        &mut vm,
        request("/", &[("authorization", b"Bearer client")]),
    );
    assert!(
        !upstream.contains("authorization"),
        "client credentials are stripped even when forwarding"
    );
}

#[test]
fn preset_adds_version_and_merges_the_oauth_beta_flag_without_duplicates() {
    let mut vm = start(anthropic());
    let upstream = forwarded(
        &mut vm,
        request(
            "/v1/messages",
            &[
                ("anthropic-beta", b"tools-2024, oauth-2025-04-20"),
                ("anthropic-beta", b"files-api,tools-2024"),
            ],
        ),
    );
    assert_eq!(values(&upstream, "anthropic-version"), ["2023-06-01"]);
    let beta = values(&upstream, "anthropic-beta");
    assert_eq!(beta.len(), 1, "{beta:?}");
    let flags: Vec<&str> = beta[0].split(',').map(str::trim).collect();
    assert_eq!(
        flags.iter().filter(|f| **f == "oauth-2025-04-20").count(),
        1
    );
    assert!(
        flags.contains(&"tools-2024") && flags.contains(&"files-api"),
        "{flags:?}"
    );

    let upstream = forwarded(
        &mut vm,
        request("/v1/messages", &[("anthropic-version", b"2024-01-01")]),
    );
    assert_eq!(
        values(&upstream, "anthropic-version"),
        ["2024-01-01"],
        "the client's version is kept"
    );
    assert_eq!(values(&upstream, "anthropic-beta"), ["oauth-2025-04-20"]);
}

#[test]
fn preset_adds_no_oauth_flag_for_an_api_key_credential() {
    let config = json!({"credential": {"header": "x-api-key", "source": {"inline": "k"}}, "preset": "anthropic"});
    let mut vm = start(config);
    let upstream = forwarded(
        &mut vm,
        request("/v1/messages", &[("x-api-key", b"client")]),
    );
    assert_eq!(values(&upstream, "x-api-key"), ["k"]);
    assert!(!upstream.contains("anthropic-beta"));
}

#[test]
fn request_rules_set_append_rename_remove_and_rewrite() {
    let mut config = anthropic();
    config["request_rules"] = json!([
        {"set": {"name": "x-team", "value": "ml"}},
        {"append": {"name": "x-tag", "value": "b"}},
        {"set_if_absent": {"name": "x-default", "value": "d"}},
        {"set_if_absent": {"name": "x-present", "value": "ignored"}},
        {"remove": {"name": "x-debug"}},
        {"rename": {"from": "x-old", "to": "x-new"}},
        {"when": {"path_prefix": "/anthropic/"}, "rewrite_path_prefix": {"from": "/anthropic/", "to": "/"}},
        {"set_authority": {"value": "api.anthropic.com"}},
        {"when": {"path_prefix": "/v1/", "method": "POST", "header": {"name": "x-team", "value": "ml"}}, "set": {"name": "x-matched", "value": "yes"}},
        {"when": {"method": "GET"}, "set": {"name": "x-get-only", "value": "no"}},
    ]);
    let plugin = filter(config).build().unwrap();
    let mut vm = plugin.start_vm().unwrap();
    let upstream = forwarded(
        &mut vm,
        request(
            "/anthropic/v1/messages?beta=true",
            &[
                ("x-tag", b"a"),
                ("x-present", b"p"),
                ("x-debug", b"1"),
                ("x-old", b"o"),
            ],
        ),
    );
    assert_eq!(values(&upstream, "x-team"), ["ml"]);
    assert_eq!(values(&upstream, "x-tag"), ["a", "b"]);
    assert_eq!(values(&upstream, "x-default"), ["d"]);
    assert_eq!(values(&upstream, "x-present"), ["p"]);
    assert!(!upstream.contains("x-debug"));
    assert!(!upstream.contains("x-old"));
    assert_eq!(values(&upstream, "x-new"), ["o"]);
    assert_eq!(values(&upstream, ":path"), ["/v1/messages?beta=true"]);
    assert_eq!(values(&upstream, ":authority"), ["api.anthropic.com"]);
    assert_eq!(
        values(&upstream, "x-matched"),
        ["yes"],
        "later rules see the rewritten path"
    );
    assert!(!upstream.contains("x-get-only"));
    assert!(counter(&plugin, "credential_filter_rules_applied_total") >= 8);
}

#[test]
fn response_rules_apply_and_the_credential_never_reaches_the_client() {
    let mut config = anthropic();
    config["response_rules"] = json!([
        {"set": {"name": "x-served-by", "value": "ai-proxy"}},
        {"when": {"path_prefix": "/v1/"}, "remove": {"name": "server"}},
    ]);
    let mut vm = start(config);
    let mut stream = vm.stream().unwrap();
    stream
        .request_headers(request("/v1/messages", &[]), true)
        .unwrap();
    stream
        .response_headers(
            [
                (":status", "200"),
                ("server", "upstream"),
                ("authorization", "Bearer echoed"),
                ("content-type", "text/event-stream"),
            ],
            false,
        )
        .unwrap();
    let client = stream.downstream_response_headers().unwrap().clone();
    let chunk = stream.response_body(b"event: ping\n\n", false).unwrap();
    assert_eq!(
        chunk.forward, b"event: ping\n\n",
        "bodies pass through untouched"
    );
    stream.finish().unwrap();
    assert!(!client.contains("authorization"));
    assert!(!client.contains("server"));
    assert_eq!(values(&client, "x-served-by"), ["ai-proxy"]);
    assert_eq!(values(&client, "content-type"), ["text/event-stream"]);
}

#[test]
fn responses_end_up_the_same_whether_or_not_debug_logs_make_the_filter_read_them() {
    // Below debug level, with response rules that only set or append, the filter rewrites a response
    // without reading it; at debug level it reads it to log what it removed.
    let mut config = anthropic();
    config["response_rules"] = json!([
        {"set": {"name": "x-served-by", "value": "ai-proxy"}},
        {"when": {"path_prefix": "/v1/"}, "append": {"name": "x-trace", "value": "v1"}},
        {"when": {"method": "GET"}, "set": {"name": "x-get", "value": "1"}},
    ]);
    let upstream: Headers = [
        (":status", "200"),
        ("authorization", "Bearer echoed"),
        ("x-served-by", "upstream"),
        ("authorization", "Bearer echoed again"),
        ("x-trace", "upstream"),
        ("content-type", "text/event-stream"),
    ]
    .into();
    let mut client = Vec::new();
    for level in [LogLevel::Info, LogLevel::Trace] {
        let plugin = filter(config.clone()).log_level(level).build().unwrap();
        let mut vm = plugin.start_vm().unwrap();
        let mut stream = vm.stream().unwrap();
        let sent = request("/v1/messages", &[]);
        stream.request_headers(sent, true).unwrap();
        stream.response_headers(upstream.clone(), false).unwrap();
        let headers = stream.downstream_response_headers().unwrap().clone();
        stream.finish().unwrap();
        assert!(!headers.contains("authorization"), "{level:?}");
        assert_eq!(values(&headers, "x-served-by"), ["ai-proxy"], "{level:?}");
        assert_eq!(values(&headers, "x-trace"), ["upstream", "v1"], "{level:?}");
        assert!(!headers.contains("x-get"), "{level:?}");
        assert_eq!(
            counter(&plugin, "credential_filter_rules_applied_total"),
            2,
            "{level:?}"
        );
        // The same lines per name; the order between different names carries no meaning in HTTP.
        let mut pairs = headers.to_string_pairs();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        client.push(pairs);
    }
    assert_eq!(client[0], client[1]);
}

#[test]
fn request_bodies_stream_through_untouched() {
    let mut vm = start(anthropic());
    let mut stream = vm.stream().unwrap();
    stream
        .request_headers(request("/v1/messages", &[]), false)
        .unwrap();
    let body = vec![b'x'; 64 * 1024];
    let first = stream.request_body(&body, false).unwrap();
    assert_eq!(first.action, Action::Continue);
    assert_eq!(first.forward.len(), body.len());
    let last = stream.request_body(b"}", true).unwrap();
    assert_eq!(last.forward, b"}");
    stream.finish().unwrap();
}

#[test]
fn identity_allow_list_admits_listed_callers_and_refuses_others_with_403() {
    let mut config = anthropic();
    config["access"] =
        json!({"identity": {"property": "caller.id", "allow": ["alice@example.com"]}});
    let plugin = filter(config).build().unwrap();
    let mut vm = plugin.start_vm().unwrap();
    let mut stream = vm
        .stream_with(StreamInfo::new().property("caller.id", "Alice@Example.com"))
        .unwrap();
    let action = stream
        .request_headers(request("/v1/messages", &[]), false)
        .unwrap();
    assert_eq!(action, Action::Continue, "{:?}", stream.local_response());
    assert_eq!(
        values(stream.upstream_request_headers().unwrap(), "authorization"),
        [format!("Bearer {TOKEN}")]
    );
    stream.finish().unwrap();

    for (info, extra) in [
        (
            StreamInfo::new().property("caller.id", "mallory@example.com"),
            vec![],
        ),
        (StreamInfo::new(), vec![]),
        (
            StreamInfo::new(),
            vec![("tailscale-user-login", b"alice@example.com".as_slice())],
        ),
    ] {
        let (status, content_type, body) = answered(&mut vm, info, request("/v1/messages", &extra));
        assert_eq!(status, 403);
        assert_eq!(content_type, "application/json");
        assert_eq!(body["error"]["type"], "permission_error");
    }
    assert_eq!(counter(&plugin, "credential_filter_access_denied_total"), 3);
    assert_eq!(
        counter(&plugin, "credential_filter_credential_injected_total"),
        1
    );
}

#[test]
fn source_cidrs_read_the_source_address_property() {
    let mut config = anthropic();
    config["access"] = json!({"source_cidrs": ["100.64.0.0/10", "fd7a:115c:a1e0::/48"]});
    let mut vm = start(config);
    for allowed in ["100.101.102.103:40000", "[fd7a:115c:a1e0::1]:443"] {
        let mut stream = vm
            .stream_with(StreamInfo::new().source_address(allowed))
            .unwrap();
        assert_eq!(
            stream.request_headers(request("/", &[]), true).unwrap(),
            Action::Continue,
            "{allowed}"
        );
        assert!(stream.local_response().is_none(), "{allowed}");
        stream.finish().unwrap();
    }
    for refused in [
        StreamInfo::new().source_address("192.168.1.10:5555"),
        StreamInfo::new(),
    ] {
        let (status, _, body) = answered(&mut vm, refused, request("/", &[]));
        assert_eq!(status, 403);
        assert_eq!(body["error"]["type"], "permission_error");
    }
}

#[test]
fn either_check_suffices_when_any_is_required() {
    let mut config = anthropic();
    config["access"] = json!({
        "identity": {"property": "caller.id", "allow": ["alice@example.com"]},
        "source_cidrs": ["127.0.0.1"],
        "require": "any",
    });
    let mut vm = start(config);
    let mut stream = vm
        .stream_with(StreamInfo::new().source_address("127.0.0.1:9999"))
        .unwrap();
    assert_eq!(
        stream.request_headers(request("/", &[]), true).unwrap(),
        Action::Continue
    );
    stream.finish().unwrap();
    let mut stream = vm
        .stream_with(
            StreamInfo::new()
                .source_address("10.0.0.1:1")
                .property("caller.id", "alice@example.com"),
        )
        .unwrap();
    assert_eq!(
        stream.request_headers(request("/", &[]), true).unwrap(),
        Action::Continue
    );
    stream.finish().unwrap();
    let (status, _, _) = answered(
        &mut vm,
        StreamInfo::new().source_address("10.0.0.1:1"),
        request("/", &[]),
    );
    assert_eq!(status, 403);
}

#[test]
fn metrics_count_requests_injections_and_availability() {
    let plugin = filter(anthropic()).build().unwrap();
    let mut vm = plugin.start_vm().unwrap();
    for _ in 0..3 {
        forwarded(&mut vm, request("/v1/messages", &[]));
    }
    assert_eq!(counter(&plugin, "credential_filter_requests_total"), 3);
    assert_eq!(
        counter(&plugin, "credential_filter_credential_injected_total"),
        3
    );
    assert_eq!(
        counter(&plugin, "credential_filter_credential_available"),
        1
    );
    assert_eq!(counter(&plugin, "credential_filter_access_denied_total"), 0);
}

#[test]
fn header_values_that_are_not_utf8_pass_through_without_a_panic() {
    let mut config = anthropic();
    config["request_rules"] = json!([{"when": {"header": {"name": "x-bin", "present": true}}, "set": {"name": "x-seen", "value": "1"}}]);
    let mut vm = start(config);
    let upstream = forwarded(
        &mut vm,
        request(
            "/",
            &[
                ("x-bin", &[0xff, 0xfe, 0x80]),
                ("authorization", &[0xc3, 0x28]),
            ],
        ),
    );
    assert_eq!(upstream.get("x-bin"), Some([0xff, 0xfe, 0x80].as_slice()));
    assert_eq!(values(&upstream, "x-seen"), ["1"]);
    assert_eq!(
        values(&upstream, "authorization"),
        [format!("Bearer {TOKEN}")]
    );
    assert!(!vm.is_failed());
}

#[test]
fn the_token_never_appears_in_logs_even_at_debug_level() {
    let plugin = filter(anthropic())
        .log_level(LogLevel::Trace)
        .build()
        .unwrap();
    let mut vm = plugin.start_vm().unwrap();
    forwarded(
        &mut vm,
        request(
            "/v1/messages",
            &[
                ("authorization", b"Bearer client-secret-value"),
                ("cookie", b"session=abc"),
            ],
        ),
    );
    let logs = vm.logs();
    assert!(
        logs.iter().any(|r| r.level == LogLevel::Debug),
        "debug lines say what was done: {logs:?}"
    );
    for record in &logs {
        assert!(
            !record.message.contains(TOKEN),
            "token in log: {}",
            record.message
        );
        assert!(
            !record.message.contains("client-secret-value"),
            "client credential in log: {}",
            record.message
        );
        assert!(
            !record.message.contains("session=abc"),
            "cookie in log: {}",
            record.message
        );
    }
}

#[test]
fn invalid_configurations_are_refused_with_the_offending_field_named() {
    let cases = [
        (
            json!({"credential": {"source": {"env": "T"}}, "bogus": 1}),
            "bogus",
        ),
        (json!({"preset": "anthropic"}), "credential"),
        (
            json!({"credential": {"header": "x y", "source": {"env": "T"}}}),
            "credential.header",
        ),
        (
            json!({"credential": {"prefix": "Bearer\r\n", "source": {"env": "T"}}}),
            "credential.prefix",
        ),
        (
            json!({"credential": {"source": {"env": "T"}}, "request_rules": [{"set": {"name": "authorization", "value": "x"}}]}),
            "request_rules[0]",
        ),
        (
            json!({"credential": {"source": {"env": "T"}}, "strip_request_headers": ["x-k"], "request_rules": [{"append": {"name": "x-k", "value": "x"}}]}),
            "request_rules[0]",
        ),
        (
            json!({"credential": {"source": {"env": "T"}}, "request_rules": [{"set": {"name": "x", "value": "a\u{0}b"}}]}),
            "request_rules[0]",
        ),
        (
            json!({"credential": {"source": {"env": "T"}}, "response_rules": [{"set": {"name": "authorization", "value": "x"}}]}),
            "response_rules[0]",
        ),
        (
            json!({"credential": {"source": {"env": "T"}}, "access": {"source_cidrs": ["10.0.0.1/8"]}}),
            "access.source_cidrs[0]",
        ),
        (
            json!({"credential": {"source": {"env": "T"}}, "on_missing_credential": "allow"}),
            "on_missing_credential",
        ),
    ];
    for (config, field) in cases {
        let message = rejection(config.clone());
        assert!(
            message.contains(field),
            "{config} should name {field}: {message}"
        );
    }
}

#[test]
fn malformed_json_and_an_inline_secret_in_the_wrong_place_are_reported_without_echoing_it() {
    let plugin = Plugin::builder()
        .module_file(env!("FILTER_WASM"))
        .plugin_config("{\"credential\": ")
        .build()
        .unwrap();
    match plugin.start_vm() {
        Err(HarnessError::ConfigureRejected { logs }) => assert!(
            logs.iter().any(|r| r.message.contains("not valid JSON")),
            "{logs:?}"
        ),
        other => panic!("expected rejection, got {:?}", other.map(|_| ())),
    }
    let message =
        rejection(json!({"credential": {"source": {"inline": "sk-ant-leaked", "env": "X"}}}));
    assert!(message.contains("credential.source"), "{message}");
    assert!(!message.contains("sk-ant-leaked"), "{message}");
}

#[test]
fn each_vm_of_a_plugin_is_configured_and_counts_into_shared_metrics() {
    let plugin = filter(anthropic()).build().unwrap();
    let mut first = plugin.start_vm().unwrap();
    let mut second = plugin.start_vm().unwrap();
    forwarded(&mut first, request("/", &[]));
    forwarded(&mut second, request("/", &[]));
    assert_eq!(counter(&plugin, "credential_filter_requests_total"), 2);
}

/// The import and export names of a module, read from its sections (`module.name` for imports).
fn interface(wasm: &[u8]) -> (Vec<String>, Vec<String>) {
    fn leb(bytes: &[u8], at: &mut usize) -> usize {
        let (mut value, mut shift) = (0, 0);
        loop {
            let byte = bytes[*at];
            *at += 1;
            value |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte < 0x80 {
                return value;
            }
        }
    }
    fn name(bytes: &[u8], at: &mut usize) -> String {
        let len = leb(bytes, at);
        let text = String::from_utf8(bytes[*at..*at + len].to_vec()).unwrap();
        *at += len;
        text
    }
    let (mut imports, mut exports) = (Vec::new(), Vec::new());
    let mut at = 8;
    while at < wasm.len() {
        let id = wasm[at];
        at += 1;
        let size = leb(wasm, &mut at);
        let end = at + size;
        let mut cursor = at;
        if id == 2 || id == 7 {
            for _ in 0..leb(wasm, &mut cursor) {
                let first = name(wasm, &mut cursor);
                if id == 7 {
                    cursor += 1;
                    leb(wasm, &mut cursor);
                    exports.push(first);
                    continue;
                }
                let field = name(wasm, &mut cursor);
                let kind = wasm[cursor];
                cursor += 1;
                assert_eq!(kind, 0, "{first}.{field}: only functions are imported");
                leb(wasm, &mut cursor);
                imports.push(format!("{first}.{field}"));
            }
        }
        at = end;
    }
    (imports, exports)
}

#[test]
fn the_module_exports_the_http_callbacks_only_and_imports_the_abi_and_five_wasi_calls() {
    let wasm = std::fs::read(env!("FILTER_WASM")).unwrap();
    let (imports, exports) = interface(&wasm);
    // The shipped build's linker (scripts/link-filter.sh) keeps exactly these. No `malloc`: hosts prefer it to
    // `proxy_on_memory_allocate`, and the filter hands over blocks its allocator frees by size.
    let mut kept: Vec<&str> = exports.iter().map(String::as_str).collect();
    kept.sort_unstable();
    let mut expected = [
        "memory",
        "_initialize",
        "proxy_abi_version_0_2_1",
        "proxy_on_memory_allocate",
        "proxy_on_context_create",
        "proxy_on_vm_start",
        "proxy_on_configure",
        "proxy_on_tick",
        "proxy_on_http_call_response",
        "proxy_on_request_headers",
        "proxy_on_request_body",
        "proxy_on_request_trailers",
        "proxy_on_response_headers",
        "proxy_on_response_body",
        "proxy_on_response_trailers",
        "proxy_on_done",
        "proxy_on_log",
        "proxy_on_delete",
    ];
    expected.sort_unstable();
    assert_eq!(kept, expected);
    let wasi: Vec<&str> = imports
        .iter()
        .filter(|name| !name.starts_with("env.proxy_"))
        .map(String::as_str)
        .collect();
    let mut expected = [
        "wasi_snapshot_preview1.environ_get",
        "wasi_snapshot_preview1.environ_sizes_get",
        "wasi_snapshot_preview1.fd_write",
        "wasi_snapshot_preview1.proc_exit",
        "wasi_snapshot_preview1.random_get",
    ];
    let mut found = wasi.clone();
    found.sort_unstable();
    expected.sort_unstable();
    assert_eq!(found, expected);
}
