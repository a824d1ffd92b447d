//! Usage accounting in real Envoy (V8): a streaming and a non-streaming request to the fake Messages API
//! show their exact token counts in Envoy's Prometheus stats, labelled by caller and model through the
//! bootstrap's `stats_tags`, and leave one usage line each in the plugin's log.

use std::time::Duration;

use integration_tests::client::{self, HttpRequest};
use integration_tests::envoy::{self, Envoy};
use integration_tests::messages_api::{Message, MessagesApi, request_body};
use integration_tests::wait;
use serde_json::{Value, json};

use integration_tests::proxy_support::labelled_value as labelled;

const TIMEOUT: Duration = Duration::from_secs(10);
const TOKEN: &str = "sk-ant-oat01-usage-envoy-token";
const MODEL: &str = "claude-sonnet-4-5-20250929";

#[test]
fn envoy_exports_usage_by_caller_and_model_and_logs_one_line_per_request() -> anyhow::Result<()> {
    let Some(binary) = envoy::binary()? else {
        return Ok(());
    };
    let api = MessagesApi::builder()
        .message(Message::new(MODEL).tokens(25, 15).cache(3, 7))
        .start()?;
    // Behind a front proxy that sets x-caller (declared trusted); Envoy itself has no tailnet identity.
    let config = json!({
        "credential": {"source": {"env": "ANTHROPIC_OAUTH_TOKEN"}},
        "preset": "anthropic",
        "access": {"identity": {"header": "x-caller", "trusted": true, "allow": ["alice@example.com"]}},
    });
    let proxy = Envoy::builder(binary, env!("FILTER_WASM"))
        .plugin_configuration(config.to_string())
        .plugin_name("credential_filter")
        .root_id("credential_filter")
        .env("ANTHROPIC_OAUTH_TOKEN", TOKEN)
        .cluster("upstream", api.upstream().addr())
        .route_to("upstream")
        .start()?;

    for (stream, request_id) in [(true, "req-stream"), (false, "req-json")] {
        let request = HttpRequest::post("/v1/messages")
            .header("x-caller", "alice@example.com")
            .header("x-request-id", request_id)
            .header("content-type", "application/json")
            .body(request_body(MODEL, stream));
        let response = client::send(proxy.addr(), request, TIMEOUT)?;
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

    let lines = proxy.wait_for_wasm_logs(2, TIMEOUT, |line| line.message.starts_with("usage "))?;
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (line, (request_id, streamed)) in lines
        .iter()
        .zip([("req-stream", true), ("req-json", false)])
    {
        assert_eq!(line.level, "info");
        let record: Value = serde_json::from_str(line.message.strip_prefix("usage ").unwrap())?;
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
            [&json!(25), &json!(15), &json!(3), &json!(7)],
            "{record}"
        );
        assert_eq!(record["streamed"], streamed, "{record}");
        assert_eq!(record["parsed"], true, "{record}");
        assert_eq!(record["stop_reason"], "end_turn", "{record}");
    }

    let exposition = proxy.admin_get("/stats/prometheus")?;
    let caller = ("caller", "alice@example.com");
    let model = ("model", MODEL);
    for (kind, value) in [
        ("input", 50.0),
        ("output", 30.0),
        ("cache_creation", 6.0),
        ("cache_read", 14.0),
    ] {
        assert_eq!(
            labelled(
                &exposition,
                "credential_filter_usage_tokens_total",
                &[caller, model, ("type", kind)]
            ),
            Some(value),
            "{kind} tokens in:\n{exposition}"
        );
    }
    assert_eq!(
        labelled(
            &exposition,
            "credential_filter_usage_requests_total",
            &[caller, model, ("status_class", "2xx")]
        ),
        Some(2.0),
        "{exposition}"
    );
    assert_eq!(
        labelled(&exposition, "credential_filter_usage_unparsed_total", &[]),
        Some(0.0),
        "{exposition}"
    );
    // Histograms reach the admin output when Envoy flushes its stats (every 5 s by default).
    wait::until("the time-to-first-byte histogram", TIMEOUT, || {
        proxy.admin_get("/stats/prometheus").is_ok_and(|text| {
            labelled(
                &text,
                "credential_filter_usage_time_to_first_byte_milliseconds_count",
                &[model],
            ) == Some(2.0)
        })
    })?;
    let log = proxy.log()?;
    assert!(!log.contains(TOKEN), "the token reached Envoy's log");
    assert!(
        !log.contains("Hello, Claude"),
        "the prompt reached Envoy's log"
    );
    Ok(())
}
