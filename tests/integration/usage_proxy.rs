//! Usage accounting end to end through `host-harness serve` (the real binary, as an operator runs it):
//! the caller is resolved by tailnet WhoIs (the LocalAPI stand-in), the upstream is the fake Messages
//! API, and a streaming and a non-streaming request show their exact token counts in `/metrics` under
//! the caller's identity, with one usage line each in the proxy's JSON log.

use std::time::Duration;

use integration_tests::client::HttpRequest;
use integration_tests::messages_api::{Message, MessagesApi, request_body};
use integration_tests::proxy_support::{ServeProcess, labelled_value, serve_process};
use integration_tests::whois::{PeerNode, WhoIs};
use serde_json::{Value, json};

const TOKEN: &str = "sk-ant-oat01-usage-proxy-token";
const MODEL: &str = "claude-opus-4-1-20250805";
const TIMEOUT: Duration = Duration::from_secs(10);

/// `serve` in front of `api`, resolving callers through `whois`.
fn serve(api: &MessagesApi, whois: &WhoIs, plugin_config: Option<&Value>) -> ServeProcess {
    let socket = whois.socket_path().to_str().unwrap().to_owned();
    let mut builder = serve_process().args(&[
        "--upstream",
        &api.url(""),
        "--env",
        &format!("ANTHROPIC_OAUTH_TOKEN={TOKEN}"),
        "--identity",
        "whois",
        "--whois-socket",
        &socket,
    ]);
    if let Some(config) = plugin_config {
        builder = builder.plugin_config(&config.to_string());
    }
    builder.start().unwrap()
}

fn generation(stream: bool, request_id: &str) -> HttpRequest {
    HttpRequest::post("/v1/messages")
        .header("content-type", "application/json")
        .header("x-request-id", request_id)
        // A client claiming to be someone else: serve removes it, WhoIs decides.
        .header("tailscale-user-login", "mallory@example.com")
        .body(request_body(MODEL, stream))
}

fn usage_lines(proxy: &mut ServeProcess, count: usize) -> Vec<Value> {
    proxy
        .wait_for_lines(count, TIMEOUT, |record| {
            record["target"] == "filter"
                && record["message"]
                    .as_str()
                    .is_some_and(|message| message.starts_with("usage "))
        })
        .unwrap()
        .into_iter()
        .map(|record| {
            assert_eq!(record["level"], "INFO", "{record}");
            let message = record["message"].as_str().unwrap();
            serde_json::from_str(message.strip_prefix("usage ").unwrap()).unwrap()
        })
        .collect()
}

#[test]
fn serve_counts_tokens_per_tailnet_caller_and_logs_one_usage_line_per_request() {
    let api = MessagesApi::builder()
        .message(Message::new(MODEL).tokens(120, 48).cache(30, 900))
        .start()
        .unwrap();
    let whois = WhoIs::builder()
        .peer(
            "127.0.0.1".parse().unwrap(),
            PeerNode::user("alice@example.com", "Alice Example", "laptop"),
        )
        .start()
        .unwrap();
    let mut proxy = serve(&api, &whois, None);

    for (stream, request_id) in [(true, "req-stream"), (false, "req-json")] {
        let response = proxy.send(generation(stream, request_id)).unwrap();
        assert_eq!(response.status, 200, "{}", response.body_text());
        let expected = if stream {
            api.message().stream_body()
        } else {
            api.message().json()
        };
        assert_eq!(
            response.body_text(),
            expected,
            "the body reached the client changed"
        );
    }
    // Token counting is not usage.
    let count = proxy
        .send(
            HttpRequest::post("/v1/messages/count_tokens")
                .header("content-type", "application/json")
                .body(request_body(MODEL, false)),
        )
        .unwrap();
    assert_eq!(count.status, 200);

    let lines = usage_lines(&mut proxy, 2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (record, (request_id, streamed)) in lines
        .iter()
        .zip([("req-stream", true), ("req-json", false)])
    {
        assert_eq!(record["request_id"], request_id, "{record}");
        assert_eq!(record["caller"], "alice@example.com", "{record}");
        assert_eq!(record["model"], MODEL, "{record}");
        assert_eq!(record["status"], 200, "{record}");
        assert_eq!(
            [
                &record["input_tokens"],
                &record["output_tokens"],
                &record["cache_creation_input_tokens"],
                &record["cache_read_input_tokens"]
            ],
            [&json!(120), &json!(48), &json!(30), &json!(900)],
            "{record}"
        );
        assert_eq!(record["stop_reason"], "end_turn", "{record}");
        assert_eq!(record["streamed"], streamed, "{record}");
        assert_eq!(record["parsed"], true, "{record}");
        assert!(
            record["ttfb_ms"].is_u64() && record["duration_ms"].is_u64(),
            "{record}"
        );
    }

    let metrics = proxy.metrics().unwrap();
    let caller = ("caller", "alice@example.com");
    let model = ("model", MODEL);
    for (kind, value) in [
        ("input", 240.0),
        ("output", 96.0),
        ("cache_creation", 60.0),
        ("cache_read", 1800.0),
    ] {
        assert_eq!(
            labelled_value(
                &metrics,
                "credential_filter_usage_tokens_total",
                &[caller, model, ("type", kind)]
            ),
            Some(value),
            "{kind} tokens in:\n{metrics}"
        );
    }
    assert_eq!(
        labelled_value(
            &metrics,
            "credential_filter_usage_requests_total",
            &[caller, model, ("status_class", "2xx")]
        ),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        labelled_value(&metrics, "credential_filter_usage_unparsed_total", &[]),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        labelled_value(
            &metrics,
            "credential_filter_usage_time_to_first_byte_milliseconds_count",
            &[model]
        ),
        Some(2.0),
        "{metrics}"
    );
    assert!(!metrics.contains("mallory"), "{metrics}");
    let logged = proxy.logged().join("\n");
    assert!(!logged.contains(TOKEN), "the token reached the log");
    assert!(
        !logged.contains("Hello, Claude"),
        "the prompt reached the log"
    );
    assert!(
        !logged.contains("mallory"),
        "the forged identity reached the log"
    );
}

#[test]
fn serve_counts_gzip_streams_and_nothing_when_usage_is_off() {
    let api = MessagesApi::builder()
        .message(Message::new(MODEL).tokens(7, 9))
        .gzip()
        .start()
        .unwrap();
    let whois = WhoIs::builder()
        .peer(
            "127.0.0.1".parse().unwrap(),
            PeerNode::tagged(&["tag:ci", "tag:server"], "runner"),
        )
        .start()
        .unwrap();
    let mut proxy = serve(&api, &whois, None);
    let response = proxy.send(generation(true, "req-gzip")).unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-encoding"), Some("gzip"));
    let lines = usage_lines(&mut proxy, 1);
    assert_eq!(lines[0]["caller"], "tag:ci,tag:server");
    assert_eq!(lines[0]["output_tokens"], 9);
    assert_eq!(lines[0]["parsed"], true);
    let metrics = proxy.metrics().unwrap();
    assert_eq!(
        labelled_value(
            &metrics,
            "credential_filter_usage_tokens_total",
            &[
                ("caller", "tag:ci_tag:server"),
                ("model", MODEL),
                ("type", "output")
            ]
        ),
        Some(9.0),
        "{metrics}"
    );
    drop(proxy);

    let off = json!({"credential": {"source": {"env": "ANTHROPIC_OAUTH_TOKEN"}}, "preset": "anthropic", "usage": {"enabled": false}});
    let mut proxy = serve(&api, &whois, Some(&off));
    let response = proxy.send(generation(true, "req-off")).unwrap();
    assert_eq!(response.status, 200);
    // The access line comes after the filter's on_log: once it is there, a usage line would be too.
    proxy
        .wait_for_lines(1, TIMEOUT, |record| record["target"] == "access")
        .unwrap();
    assert!(
        !proxy.logged().iter().any(|line| line.contains("usage {")),
        "a usage line with usage off"
    );
    assert!(
        !proxy
            .metrics()
            .unwrap()
            .contains("credential_filter_usage_")
    );
}

#[test]
fn serve_passes_each_event_on_as_it_arrives_while_counting() {
    let api = MessagesApi::builder()
        .message(Message::new(MODEL).tokens(11, 22).text(&["a", "b", "c"]))
        .events_every(Duration::from_millis(150))
        .start()
        .unwrap();
    let whois = WhoIs::builder()
        .peer(
            "127.0.0.1".parse().unwrap(),
            PeerNode::user("bob@example.com", "Bob Example", "desktop"),
        )
        .start()
        .unwrap();
    let mut proxy = serve(&api, &whois, None);
    let response = proxy.send(generation(true, "req-paced")).unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body_text(), api.message().stream_body());
    // Ten events 150 ms apart: had anything held them, the first would arrive with the last.
    let first = response.chunks.first().unwrap();
    assert!(
        String::from_utf8_lossy(&first.data).contains("message_start"),
        "{:?}",
        String::from_utf8_lossy(&first.data)
    );
    let spread = response.finished_at.duration_since(first.at);
    assert!(
        spread >= Duration::from_millis(900),
        "the events arrived together ({spread:?} from the first to the end)"
    );
    let lines = usage_lines(&mut proxy, 1);
    assert_eq!(lines[0]["caller"], "bob@example.com");
    assert_eq!(
        (
            lines[0]["input_tokens"].clone(),
            lines[0]["output_tokens"].clone()
        ),
        (json!(11), json!(22))
    );
    assert_eq!(lines[0]["parsed"], true);
    assert!(
        lines[0]["duration_ms"].as_u64().unwrap() >= 1_000,
        "{}",
        lines[0]
    );
}
