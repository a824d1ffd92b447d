//! Usage accounting of the real filter through the harness, on a manual clock: recorded-shape Messages
//! API answers (JSON and event streams, plain and gzip) split at every byte boundary across body chunks,
//! malformed and truncated streams, huge lines, error answers, `count_tokens`, the caps on callers and
//! models across two VMs, and the exact metric values and usage line each request leaves. Every body
//! chunk must pass unchanged and at once (`Continue`).

use std::time::{Duration, UNIX_EPOCH};

use host_harness::{
    Action, Headers, LogLevel, ManualClock, MetricValue, Plugin, StreamInfo, Vm, VmGroup,
};
use integration_tests::messages_api::{Message, error_event, error_json, gzip};
use serde_json::{Value, json};

const TOKEN: &str = "sk-ant-oat01-usage-harness-token";
const MODEL: &str = "claude-sonnet-4-5-20250929";
const PROMPT: &str = "a prompt that must never reach a log";
/// 2025-12-03T09:08:29.123Z.
const START_MS: u64 = 1_764_752_909_123;

fn anthropic(extra: Value) -> Value {
    let mut config =
        json!({"credential": {"source": {"env": "ANTHROPIC_OAUTH_TOKEN"}}, "preset": "anthropic"});
    for (key, value) in extra.as_object().unwrap() {
        config[key] = value.clone();
    }
    config
}

fn clock() -> ManualClock {
    ManualClock::starting_at(UNIX_EPOCH + Duration::from_millis(START_MS))
}

fn plugin(config: Value, clock: &ManualClock) -> Plugin {
    Plugin::builder()
        .module_file(env!("FILTER_WASM"))
        .plugin_config(config.to_string())
        .env("ANTHROPIC_OAUTH_TOKEN", TOKEN)
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn message() -> Message {
    Message::new(MODEL)
        .tokens(25, 15)
        .cache(3, 7)
        .text(&["Hello", ", world", "!"])
}

/// One exchange: the request, the response's headers and body chunks, and the time each step takes.
struct Exchange<'a> {
    path: &'a str,
    info: StreamInfo,
    request_headers: Vec<(&'a str, &'a str)>,
    status: &'a str,
    response_headers: Vec<(&'a str, &'a str)>,
    chunks: Vec<Vec<u8>>,
    /// The last chunk carries end of stream; false: the stream ends (on_log) without it.
    complete: bool,
    ttfb: Duration,
    rest: Duration,
}

impl<'a> Exchange<'a> {
    fn new(path: &'a str) -> Self {
        Self {
            path,
            info: StreamInfo::new(),
            request_headers: Vec::new(),
            status: "200",
            response_headers: Vec::new(),
            chunks: Vec::new(),
            complete: true,
            ttfb: Duration::from_millis(250),
            rest: Duration::from_millis(1_250),
        }
    }

    fn sse(mut self, body: &[u8], chunks: &[usize]) -> Self {
        self.response_headers = vec![("content-type", "text/event-stream; charset=utf-8")];
        self.chunks = split(body, chunks);
        self
    }

    fn json(mut self, body: &[u8]) -> Self {
        self.response_headers = vec![("content-type", "application/json")];
        self.chunks = vec![body.to_vec()];
        self
    }

    fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.response_headers.push((name, value));
        self
    }

    fn caller(mut self, caller: &str) -> Self {
        self.info = self.info.property("caller.id", caller.as_bytes().to_vec());
        self
    }

    /// Runs the exchange on `vm`; asserts every body chunk passes unchanged with `Continue`.
    fn run(self, vm: &mut Vm, clock: &ManualClock) {
        let mut stream = vm.stream_with(self.info).unwrap();
        let mut request: Headers = [
            (":method", "POST"),
            (":path", self.path),
            (":authority", "api.anthropic.com"),
            ("content-type", "application/json"),
        ]
        .into();
        for (name, value) in &self.request_headers {
            request.add(name, value.as_bytes());
        }
        assert_eq!(
            stream.request_headers(request, false).unwrap(),
            Action::Continue
        );
        let body = json!({"model": MODEL, "messages": [{"role": "user", "content": PROMPT}]});
        let sent = stream
            .request_body(body.to_string().as_bytes(), true)
            .unwrap();
        assert_eq!(sent.action, Action::Continue);
        clock.advance(self.ttfb);
        let mut response: Headers = [(":status", self.status)].into();
        for (name, value) in &self.response_headers {
            response.add(name, value.as_bytes());
        }
        let no_body = self.chunks.is_empty();
        assert_eq!(
            stream.response_headers(response, no_body).unwrap(),
            Action::Continue
        );
        let count = self.chunks.len();
        for (index, chunk) in self.chunks.into_iter().enumerate() {
            let last = self.complete && index + 1 == count;
            let passed = stream.response_body(&chunk, last).unwrap();
            assert_eq!(passed.action, Action::Continue);
            assert_eq!(passed.forward, chunk, "a body chunk was changed or held");
        }
        clock.advance(self.rest);
        stream.finish().unwrap();
    }
}

/// `body` cut at the given offsets.
fn split(body: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut chunks = Vec::new();
    let mut from = 0;
    for &cut in cuts {
        chunks.push(body[from..cut].to_vec());
        from = cut;
    }
    chunks.push(body[from..].to_vec());
    chunks
}

/// The usage lines logged so far, parsed, taken from the VM.
fn usage_lines(vm: &mut Vm) -> Vec<Value> {
    vm.take_logs()
        .into_iter()
        .filter_map(|record| {
            let json = record.message.strip_prefix("usage ")?;
            assert_eq!(record.level, LogLevel::Info, "{record}");
            Some(serde_json::from_str(json).unwrap())
        })
        .collect()
}

fn counter(plugin: &Plugin, name: &str) -> u64 {
    match plugin.metric(name) {
        Some(MetricValue::Counter(value)) => value,
        None => 0,
        other => panic!("{name} is not a counter: {other:?}"),
    }
}

fn tokens(caller: &str, model: &str, kind: &str) -> String {
    format!("credential_filter_usage_tokens_total;caller={caller};model={model};type={kind}")
}

fn requests(caller: &str, model: &str, class: &str) -> String {
    format!(
        "credential_filter_usage_requests_total;caller={caller};model={model};status_class={class}"
    )
}

const UNPARSED: &str = "credential_filter_usage_unparsed_total";

/// Every usage metric by name (histograms as their sample count).
fn usage_metrics(plugin: &Plugin) -> Vec<(String, u64)> {
    plugin
        .metrics()
        .into_iter()
        .filter(|metric| metric.name.starts_with("credential_filter_usage_"))
        .map(|metric| {
            let value = match metric.value {
                MetricValue::Histogram(histogram) => histogram.count,
                other => other.as_u64().unwrap(),
            };
            (metric.name, value)
        })
        .collect()
}

#[test]
fn an_event_stream_split_at_every_byte_boundary_is_counted_exactly() {
    let clock = clock();
    let plugin = plugin(anthropic(json!({})), &clock);
    let mut vm = plugin.start_vm().unwrap();
    let lf = message().stream_body();
    let crlf = lf.replace('\n', "\r\n");
    let mut runs = 0;
    // Taken after every exchange: a VM keeps a bounded number of log records.
    let mut lines = Vec::new();
    for body in [lf.as_bytes(), crlf.as_bytes()] {
        for cut in 0..=body.len() {
            Exchange::new("/v1/messages")
                .caller("alice@example.com")
                .sse(body, &[cut])
                .run(&mut vm, &clock);
            lines.extend(usage_lines(&mut vm));
            runs += 1;
        }
        // And every byte its own chunk.
        let every: Vec<usize> = (1..body.len()).collect();
        Exchange::new("/v1/messages")
            .caller("alice@example.com")
            .sse(body, &every)
            .run(&mut vm, &clock);
        lines.extend(usage_lines(&mut vm));
        runs += 1;
    }
    assert_eq!(lines.len(), runs);
    for line in &lines {
        assert_eq!(
            (
                &line["input_tokens"],
                &line["output_tokens"],
                &line["cache_creation_input_tokens"],
                &line["cache_read_input_tokens"]
            ),
            (&json!(25), &json!(15), &json!(3), &json!(7)),
            "{line}"
        );
        assert_eq!(line["stop_reason"], "end_turn", "{line}");
        assert_eq!(line["parsed"], true, "{line}");
        assert_eq!(line["streamed"], true, "{line}");
    }
    let runs = runs as u64;
    let alice = "alice@example.com";
    assert_eq!(counter(&plugin, &requests(alice, MODEL, "2xx")), runs);
    assert_eq!(counter(&plugin, &tokens(alice, MODEL, "input")), 25 * runs);
    assert_eq!(counter(&plugin, &tokens(alice, MODEL, "output")), 15 * runs);
    assert_eq!(
        counter(&plugin, &tokens(alice, MODEL, "cache_creation")),
        3 * runs
    );
    assert_eq!(
        counter(&plugin, &tokens(alice, MODEL, "cache_read")),
        7 * runs
    );
    assert_eq!(counter(&plugin, UNPARSED), 0);
}

#[test]
fn a_json_answer_leaves_exact_metrics_and_one_usage_line() {
    let clock = clock();
    let plugin = plugin(anthropic(json!({})), &clock);
    let mut vm = plugin.start_vm().unwrap();
    let body = message().stop_reason("max_tokens").json();
    let mut exchange = Exchange::new("/v1/messages?beta=true")
        .caller("alice@example.com")
        .json(body.as_bytes());
    exchange.request_headers = vec![("x-request-id", "req-7f3a"), ("x-api-key", "client-key")];
    exchange.run(&mut vm, &clock);

    let logs = vm.logs();
    let lines = usage_lines(&mut vm);
    assert_eq!(lines.len(), 1);
    let expected = json!({
        "time": "2025-12-03T09:08:29.123Z",
        "request_id": "req-7f3a",
        "caller": "alice@example.com",
        "model": MODEL,
        "status": 200,
        "input_tokens": 25,
        "output_tokens": 15,
        "cache_creation_input_tokens": 3,
        "cache_read_input_tokens": 7,
        "stop_reason": "max_tokens",
        "duration_ms": 1500,
        "ttfb_ms": 250,
        "streamed": false,
        "parsed": true,
    });
    assert_eq!(lines[0], expected);
    // Keys in the documented order, on one line.
    let line = logs
        .iter()
        .find(|record| record.message.starts_with("usage "))
        .unwrap();
    let keys = [
        "time",
        "request_id",
        "caller",
        "model",
        "status",
        "input_tokens",
        "output_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "stop_reason",
        "duration_ms",
        "ttfb_ms",
        "streamed",
        "parsed",
    ];
    assert_eq!(keys.len(), expected.as_object().unwrap().len());
    let positions: Vec<usize> = keys
        .iter()
        .map(|key| line.message.find(&format!("\"{key}\":")).unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "{}",
        line.message
    );
    for record in &logs {
        assert!(!record.message.contains(TOKEN), "{record}");
        assert!(!record.message.contains(PROMPT), "{record}");
        assert!(!record.message.contains("Hello"), "{record}");
        assert!(!record.message.contains("client-key"), "{record}");
    }

    let alice = "alice@example.com";
    let metrics = usage_metrics(&plugin);
    let histogram =
        format!("credential_filter_usage_time_to_first_byte_milliseconds;model={MODEL}");
    let mut expected_metrics = vec![
        (UNPARSED.to_owned(), 0),
        (requests(alice, MODEL, "2xx"), 1),
        (tokens(alice, MODEL, "input"), 25),
        (tokens(alice, MODEL, "output"), 15),
        (tokens(alice, MODEL, "cache_read"), 7),
        (tokens(alice, MODEL, "cache_creation"), 3),
        (histogram.clone(), 1),
    ];
    let mut sorted = metrics.clone();
    sorted.sort();
    expected_metrics.sort();
    assert_eq!(sorted, expected_metrics);
    match plugin.metric(&histogram) {
        Some(MetricValue::Histogram(histogram)) => assert_eq!(histogram.sum, 250),
        other => panic!("{other:?}"),
    }
}

#[test]
fn gzip_streams_split_at_every_byte_boundary_are_decoded_on_the_side() {
    let clock = clock();
    let plugin = plugin(anthropic(json!({})), &clock);
    let mut vm = plugin.start_vm().unwrap();
    let body = gzip(message().stream_body().as_bytes());
    let mut lines = Vec::new();
    for cut in 0..=body.len() {
        Exchange::new("/v1/messages")
            .caller("bob@example.com")
            .sse(&body, &[cut])
            .header("content-encoding", "gzip")
            .run(&mut vm, &clock);
        lines.extend(usage_lines(&mut vm));
    }
    let every: Vec<usize> = (1..body.len()).collect();
    Exchange::new("/v1/messages")
        .caller("bob@example.com")
        .sse(&body, &every)
        .header("content-encoding", "gzip")
        .run(&mut vm, &clock);
    let json_body = gzip(message().json().as_bytes());
    Exchange::new("/v1/messages")
        .caller("bob@example.com")
        .json(&json_body)
        .header("content-encoding", "gzip")
        .run(&mut vm, &clock);
    let runs = body.len() as u64 + 3;
    lines.extend(usage_lines(&mut vm));
    assert_eq!(lines.len() as u64, runs);
    assert!(
        lines
            .iter()
            .all(|line| line["parsed"] == true && line["output_tokens"] == 15)
    );
    let bob = "bob@example.com";
    assert_eq!(counter(&plugin, &tokens(bob, MODEL, "input")), 25 * runs);
    assert_eq!(counter(&plugin, &tokens(bob, MODEL, "output")), 15 * runs);
    assert_eq!(counter(&plugin, UNPARSED), 0);
}

#[test]
fn malformed_truncated_and_oversized_streams_are_unparsed_and_pass_untouched() {
    let clock = clock();
    let config = anthropic(json!({"usage": {"max_event_bytes": 1024}}));
    let plugin = plugin(config, &clock);
    let mut vm = plugin.start_vm().unwrap();
    let stream = message().stream_body();
    let events = message().events();

    // Cut short: the client went away after message_start; what was read is kept.
    let mut truncated = Exchange::new("/v1/messages")
        .caller("carol")
        .sse(events[..3].concat().as_bytes(), &[]);
    truncated.complete = false;
    truncated.run(&mut vm, &clock);
    let line = &usage_lines(&mut vm)[0];
    assert_eq!(
        (line["parsed"].clone(), line["input_tokens"].clone()),
        (json!(false), json!(25))
    );
    assert_eq!(line["stop_reason"], Value::Null);

    // The upstream ended the body without message_stop.
    Exchange::new("/v1/messages")
        .caller("carol")
        .sse(events[..events.len() - 1].concat().as_bytes(), &[])
        .run(&mut vm, &clock);
    assert_eq!(usage_lines(&mut vm)[0]["parsed"], false);

    // Garbage in message_start's data.
    let garbage = stream.replacen(
        "\"usage\":{\"output_tokens\":15}",
        "\"usage\":{\"output_tokens\":15,,}",
        1,
    );
    assert_ne!(garbage, stream);
    Exchange::new("/v1/messages")
        .caller("carol")
        .sse(garbage.as_bytes(), &[40])
        .run(&mut vm, &clock);
    assert_eq!(usage_lines(&mut vm)[0]["parsed"], false);

    // A huge delta of text is stepped over (not a kept event): usage still read.
    let huge_text = "x".repeat(1 << 20);
    let huge_delta = message().text(&[&huge_text]).stream_body();
    Exchange::new("/v1/messages")
        .caller("carol")
        .sse(huge_delta.as_bytes(), &[1000, 70_000, 500_000])
        .run(&mut vm, &clock);
    let line = &usage_lines(&mut vm)[0];
    assert_eq!(
        (line["parsed"].clone(), line["output_tokens"].clone()),
        (json!(true), json!(15))
    );

    // A kept event over max_event_bytes: unparsed, parsing stops, the bytes still pass.
    let long_model = "m".repeat(2_000);
    let oversized = Message::new(&long_model).stream_body();
    Exchange::new("/v1/messages")
        .caller("carol")
        .sse(oversized.as_bytes(), &[100, 1500])
        .run(&mut vm, &clock);
    assert_eq!(usage_lines(&mut vm)[0]["parsed"], false);

    // An encoding the filter does not decode.
    Exchange::new("/v1/messages")
        .caller("carol")
        .sse(stream.as_bytes(), &[])
        .header("content-encoding", "br")
        .run(&mut vm, &clock);
    assert_eq!(usage_lines(&mut vm)[0]["parsed"], false);

    // gzip that is not gzip.
    Exchange::new("/v1/messages")
        .caller("carol")
        .sse(stream.as_bytes(), &[])
        .header("content-encoding", "gzip")
        .run(&mut vm, &clock);
    assert_eq!(usage_lines(&mut vm)[0]["parsed"], false);

    assert_eq!(counter(&plugin, UNPARSED), 6);
    assert_eq!(counter(&plugin, &requests("carol", MODEL, "2xx")), 4);
    assert!(!vm.is_failed());
}

#[test]
fn error_answers_count_requests_by_status_class_and_no_tokens() {
    let clock = clock();
    let plugin = plugin(anthropic(json!({})), &clock);
    let mut vm = plugin.start_vm().unwrap();
    let mut overloaded = Exchange::new("/v1/messages")
        .caller("dave")
        .json(error_json("overloaded_error", "Overloaded").as_bytes());
    overloaded.status = "529";
    overloaded.run(&mut vm, &clock);
    let mut limited = Exchange::new("/v1/messages")
        .caller("dave")
        .json(error_json("rate_limit_error", "slow down").as_bytes());
    limited.status = "429";
    limited.run(&mut vm, &clock);
    let lines = usage_lines(&mut vm);
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (
            lines[0]["status"].clone(),
            lines[0]["model"].clone(),
            lines[0]["parsed"].clone()
        ),
        (json!(529), json!("unknown"), json!(false))
    );
    assert_eq!(lines[1]["status"], 429);

    // An error event mid-stream: the counts so far are kept, no stop reason.
    let mut events = message().events();
    let cut = events.len() - 2;
    events.truncate(cut);
    events.push(error_event("overloaded_error", "Overloaded"));
    Exchange::new("/v1/messages")
        .caller("dave")
        .sse(events.concat().as_bytes(), &[])
        .run(&mut vm, &clock);
    let line = &usage_lines(&mut vm)[0];
    assert_eq!(line["input_tokens"], 25);
    assert_eq!(line["stop_reason"], Value::Null);

    assert_eq!(counter(&plugin, &requests("dave", "unknown", "5xx")), 1);
    assert_eq!(counter(&plugin, &requests("dave", "unknown", "4xx")), 1);
    assert_eq!(counter(&plugin, &requests("dave", MODEL, "2xx")), 1);
    assert_eq!(counter(&plugin, &tokens("dave", "unknown", "input")), 0);
    assert_eq!(counter(&plugin, &tokens("dave", MODEL, "input")), 25);
    // Error answers carry no usage by design and an error event ends a stream in order: nothing is
    // unparsed.
    assert_eq!(line["parsed"], true);
    assert_eq!(counter(&plugin, UNPARSED), 0);
}

#[test]
fn count_tokens_and_other_paths_are_not_usage() {
    let clock = clock();
    let plugin = plugin(anthropic(json!({})), &clock);
    let mut vm = plugin.start_vm().unwrap();
    for path in [
        "/v1/messages/count_tokens",
        "/v1/models",
        "/v1/messages/batches",
    ] {
        Exchange::new(path)
            .caller("erin")
            .json(br#"{"input_tokens": 42}"#)
            .run(&mut vm, &clock);
    }
    assert!(usage_lines(&mut vm).is_empty());
    assert_eq!(usage_metrics(&plugin), vec![(UNPARSED.to_owned(), 0)]);
}

#[test]
fn caps_overflow_to_other_across_two_vms_of_one_group() {
    let clock = clock();
    let config = anthropic(json!({"usage": {"max_callers": 2, "max_models": 1}}));
    let plugin = plugin(config, &clock);
    let mut group = VmGroup::start(&plugin, 2).unwrap();
    let run = |group: &mut VmGroup, vm: usize, caller: &str, model: &str| {
        let body = Message::new(model).tokens(1, 2).json();
        Exchange::new("/v1/messages")
            .caller(caller)
            .json(body.as_bytes())
            .run(group.vm(vm).unwrap(), &clock);
    };
    run(&mut group, 0, "alice", "model-a");
    run(&mut group, 1, "bob", "model-b");
    run(&mut group, 0, "carol", "model-a");
    run(&mut group, 1, "alice", "model-a");
    run(&mut group, 1, "carol;type=input", "model-a");
    run(&mut group, 0, "bob", "model-b");
    let mut metrics: Vec<(String, u64)> = usage_metrics(&plugin)
        .into_iter()
        .filter(|(name, _)| name.contains("requests_total") || name.contains("type=input"))
        .collect();
    metrics.sort();
    let mut expected = vec![
        (requests("alice", "model-a", "2xx"), 2),
        (requests("bob", "other", "2xx"), 2),
        (requests("other", "model-a", "2xx"), 2),
        (tokens("alice", "model-a", "input"), 2),
        (tokens("bob", "other", "input"), 2),
        (tokens("other", "model-a", "input"), 2),
    ];
    expected.sort();
    assert_eq!(metrics, expected);
    // The log keeps the real identity and model; only metrics are capped.
    let lines = usage_lines(group.vm(1).unwrap());
    assert_eq!(lines[0]["caller"], "bob");
    assert_eq!(lines[0]["model"], "model-b");
    assert_eq!(lines[2]["caller"], "carol;type=input");
    assert_eq!(
        plugin
            .shared_data("credential_filter.usage.callers")
            .unwrap()
            .0,
        b"alice\nbob"
    );
}

#[test]
fn labels_are_sanitised_and_callers_come_from_the_configured_source() {
    let clock = clock();
    // A trusted header policy: the caller is the header's value, never caller.id.
    let config = anthropic(
        json!({"access": {"identity": {"header": "x-caller", "trusted": true, "allow": ["tag:ci", "alice@example.com"]}}}),
    );
    let plugin = plugin(config, &clock);
    let mut vm = plugin.start_vm().unwrap();
    let body = message().json();
    let mut tagged = Exchange::new("/v1/messages")
        .caller("not-this-one")
        .json(body.as_bytes());
    tagged.request_headers = vec![("x-caller", "tag:ci,tag:server")];
    tagged.run(&mut vm, &clock);
    // Refused by the policy: answered locally, nothing used, no usage line.
    let mut stream = vm.stream().unwrap();
    let headers: Headers = [
        (":method", "POST"),
        (":path", "/v1/messages"),
        (":authority", "ai"),
        ("x-caller", "mallory"),
    ]
    .into();
    stream.request_headers(headers, true).unwrap();
    assert_eq!(stream.local_response().unwrap().status, 403);
    stream.finish().unwrap();
    let lines = usage_lines(&mut vm);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["caller"], "tag:ci,tag:server");
    assert_eq!(
        counter(&plugin, &requests("tag:ci_tag:server", MODEL, "2xx")),
        1
    );

    // Without an identity source: caller.id, then source.principal, else unknown.
    let plugin = self::plugin(anthropic(json!({})), &clock);
    let mut vm = plugin.start_vm().unwrap();
    let mut principal = Exchange::new("/v1/messages").json(body.as_bytes());
    principal.info = StreamInfo::new().property(
        "source.principal",
        "spiffe://cluster.local/ns/ml/sa/trainer",
    );
    principal.run(&mut vm, &clock);
    Exchange::new("/v1/messages")
        .json(body.as_bytes())
        .run(&mut vm, &clock);
    let lines = usage_lines(&mut vm);
    assert_eq!(
        lines[0]["caller"],
        "spiffe://cluster.local/ns/ml/sa/trainer"
    );
    assert_eq!(lines[1]["caller"], "unknown");
    assert_eq!(
        counter(
            &plugin,
            &requests("spiffe:__cluster.local_ns_ml_sa_trainer", MODEL, "2xx")
        ),
        1
    );
    assert_eq!(counter(&plugin, &requests("unknown", MODEL, "2xx")), 1);
}

#[test]
fn usage_off_reads_and_defines_nothing() {
    let clock = clock();
    let body = message().stream_body();
    for config in [
        anthropic(json!({"usage": {"enabled": false}})),
        json!({"credential": {"source": {"env": "ANTHROPIC_OAUTH_TOKEN"}}}),
    ] {
        let plugin = plugin(config, &clock);
        let mut vm = plugin.start_vm().unwrap();
        Exchange::new("/v1/messages")
            .caller("alice")
            .sse(body.as_bytes(), &[10])
            .run(&mut vm, &clock);
        assert!(usage_lines(&mut vm).is_empty());
        assert!(usage_metrics(&plugin).is_empty());
    }
}
