//! A loopback fake of the Anthropic Messages API, on top of [`crate::upstream`], with known usage.
//!
//! Replies have the recorded shapes of the real API: a non-streaming `message` object, or (when the
//! request body says `"stream": true`) the `text/event-stream` sequence `message_start`,
//! `content_block_start`, `ping`, `content_block_delta`..., `content_block_stop`, `message_delta`,
//! `message_stop`. The token counts are the test's, so what a proxy counts can be compared exactly. A
//! reply can be gzip-encoded (`content-encoding: gzip`, as the API has been seen to send event streams),
//! be an API error, or stream event by event with a pause between events. `count_tokens` answers
//! `{"input_tokens": N}`.
//!
//! ```no_run
//! # use integration_tests::messages_api::{MessagesApi, Message};
//! let api = MessagesApi::builder().message(Message::new("claude-sonnet-4-5").tokens(25, 15)).start()?;
//! // ... POST {"model": ..., "stream": true} to api.url("/v1/messages") through the proxy ...
//! # anyhow::Ok(())
//! ```
//!
//! The body builders ([`Message::json`], [`Message::events`], [`gzip`]) are public so that harness tests
//! feed the very same bytes to the filter without a network.

use std::io::Write as _;
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;

use crate::upstream::{FixedReply, RecordedRequest, Reply, SseReply, Upstream};

/// One answer of the API: the model, the four token counts, the stop reason and the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// `model` of the answer.
    pub model: String,
    /// `usage.input_tokens`.
    pub input_tokens: u64,
    /// `usage.output_tokens` (the final count; `message_start` reports 1, as the API does).
    pub output_tokens: u64,
    /// `usage.cache_creation_input_tokens`.
    pub cache_creation_input_tokens: u64,
    /// `usage.cache_read_input_tokens`.
    pub cache_read_input_tokens: u64,
    /// `stop_reason` (`end_turn`, `max_tokens`, ...).
    pub stop_reason: String,
    /// The answer's text; streamed as one `text_delta` per piece.
    pub text: Vec<String>,
    /// Whether `message_delta` repeats every count (as newer API versions do) rather than only
    /// `output_tokens`.
    pub full_delta_usage: bool,
}

impl Message {
    /// An answer from `model` with 10 input and 20 output tokens, no cache, `end_turn`, text "Hello!".
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            input_tokens: 10,
            output_tokens: 20,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: 0,
            stop_reason: "end_turn".to_owned(),
            text: vec!["Hello".to_owned(), "!".to_owned()],
            full_delta_usage: false,
        }
    }

    /// Sets the input and output token counts.
    pub fn tokens(mut self, input: u64, output: u64) -> Self {
        self.input_tokens = input;
        self.output_tokens = output;
        self
    }

    /// Sets the cache creation and cache read token counts.
    pub fn cache(mut self, creation: u64, read: u64) -> Self {
        self.cache_creation_input_tokens = creation;
        self.cache_read_input_tokens = read;
        self
    }

    /// Sets the stop reason.
    pub fn stop_reason(mut self, reason: &str) -> Self {
        self.stop_reason = reason.to_owned();
        self
    }

    /// Sets the text pieces (one `content_block_delta` each when streamed).
    pub fn text(mut self, pieces: &[&str]) -> Self {
        self.text = pieces.iter().map(|piece| (*piece).to_owned()).collect();
        self
    }

    /// Makes `message_delta` carry every count, not only `output_tokens`.
    pub fn full_delta_usage(mut self) -> Self {
        self.full_delta_usage = true;
        self
    }

    /// The `usage` object, keys in the API's order.
    fn usage(&self, output_tokens: u64) -> String {
        format!(
            r#"{{"input_tokens":{},"cache_creation_input_tokens":{},"cache_read_input_tokens":{},"output_tokens":{output_tokens},"service_tier":"standard"}}"#,
            self.input_tokens, self.cache_creation_input_tokens, self.cache_read_input_tokens
        )
    }

    /// The non-streaming answer: one `message` object, keys in the API's order.
    pub fn json(&self) -> String {
        format!(
            r#"{{"id":"{MESSAGE_ID}","type":"message","role":"assistant","model":{},"content":[{{"type":"text","text":{}}}],"stop_reason":{},"stop_sequence":null,"usage":{}}}"#,
            quoted(&self.model),
            quoted(&self.text.concat()),
            quoted(&self.stop_reason),
            self.usage(self.output_tokens)
        )
    }

    /// The streaming answer, one string per event (each ends with its blank line), data in the API's
    /// key order.
    pub fn events(&self) -> Vec<String> {
        let event = |name: &str, data: String| format!("event: {name}\ndata: {data}\n\n");
        let mut events = vec![
            event(
                "message_start",
                format!(
                    r#"{{"type":"message_start","message":{{"id":"{MESSAGE_ID}","type":"message","role":"assistant","model":{},"content":[],"stop_reason":null,"stop_sequence":null,"usage":{}}}}}"#,
                    quoted(&self.model),
                    self.usage(1)
                ),
            ),
            event(
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#
                    .to_owned(),
            ),
            // The API writes this one with a space after the colon.
            "event: ping\ndata: {\"type\": \"ping\"}\n\n".to_owned(),
        ];
        for piece in &self.text {
            events.push(event(
                "content_block_delta",
                format!(
                    r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":{}}}}}"#,
                    quoted(piece)
                ),
            ));
        }
        events.push(event(
            "content_block_stop",
            r#"{"type":"content_block_stop","index":0}"#.to_owned(),
        ));
        let usage = if self.full_delta_usage {
            self.usage(self.output_tokens)
        } else {
            format!(r#"{{"output_tokens":{}}}"#, self.output_tokens)
        };
        events.push(event(
            "message_delta",
            format!(
                r#"{{"type":"message_delta","delta":{{"stop_reason":{},"stop_sequence":null}},"usage":{usage}}}"#,
                quoted(&self.stop_reason)
            ),
        ));
        events.push(event(
            "message_stop",
            r#"{"type":"message_stop"}"#.to_owned(),
        ));
        events
    }

    /// The streaming answer as one body.
    pub fn stream_body(&self) -> String {
        self.events().concat()
    }
}

/// The id of every answer.
const MESSAGE_ID: &str = "msg_01XFDUDYJgAACzvnptvVoYEL";

/// `text` as a JSON string.
fn quoted(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// An API error body: `{"type":"error","error":{"type":kind,"message":message},"request_id":...}`.
pub fn error_json(kind: &str, message: &str) -> String {
    format!(
        r#"{{"type":"error","error":{{"type":{},"message":{}}},"request_id":"req_011CSHoEeqs5C35K2UUqR7Fy"}}"#,
        quoted(kind),
        quoted(message)
    )
}

/// An `error` event, as the API sends one mid-stream (for instance `overloaded_error`).
pub fn error_event(kind: &str, message: &str) -> String {
    format!(
        "event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":{},\"message\":{}}}}}\n\n",
        quoted(kind),
        quoted(message)
    )
}

/// `bytes` gzip-compressed (RFC 1952).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

/// How the fake answers `/v1/messages`.
#[derive(Clone, Debug)]
enum Answer {
    /// The message, as JSON or as one event-stream body, by the request's `stream`.
    Message,
    /// An API error with this status, type and message.
    Error(u16, String, String),
    /// Always an event stream, event by event, `interval` apart (whatever the request says).
    Events(Duration),
}

/// Builds a [`MessagesApi`].
#[derive(Clone, Debug)]
pub struct MessagesApiBuilder {
    message: Message,
    gzip: bool,
    answer: Answer,
    count_tokens: u64,
}

impl MessagesApiBuilder {
    /// The answer to every generation.
    pub fn message(mut self, message: Message) -> Self {
        self.message = message;
        self
    }

    /// Sends every answer gzip-encoded, with `content-encoding: gzip`.
    pub fn gzip(mut self) -> Self {
        self.gzip = true;
        self
    }

    /// Answers every generation with an API error (`status`, error `kind`, `message`).
    pub fn error(mut self, status: u16, kind: &str, message: &str) -> Self {
        self.answer = Answer::Error(status, kind.to_owned(), message.to_owned());
        self
    }

    /// Streams every generation event by event, `interval` apart, whatever the request says.
    pub fn events_every(mut self, interval: Duration) -> Self {
        self.answer = Answer::Events(interval);
        self
    }

    /// What `count_tokens` answers as `input_tokens` (default 42).
    pub fn count_tokens(mut self, input_tokens: u64) -> Self {
        self.count_tokens = input_tokens;
        self
    }

    /// Starts the fake on `127.0.0.1:0`.
    ///
    /// # Errors
    /// As [`crate::upstream::UpstreamBuilder::start`].
    pub fn start(self) -> anyhow::Result<MessagesApi> {
        let message = self.message.clone();
        let gzip_replies = self.gzip;
        let generation = match self.answer {
            Answer::Message => {
                Reply::handler(move |request| reply(&message, request, gzip_replies))
            }
            Answer::Error(status, kind, text) => Reply::handler(move |_| {
                encoded(
                    FixedReply::new(status)
                        .header("content-type", "application/json")
                        .header("request-id", "req_011CSHoEeqs5C35K2UUqR7Fy"),
                    error_json(&kind, &text).into_bytes(),
                    gzip_replies,
                )
            }),
            Answer::Events(interval) => Reply::Sse(SseReply {
                events: message.events(),
                interval,
            }),
        };
        let count = json!({"input_tokens": self.count_tokens});
        let upstream = Upstream::builder()
            .route("/v1/messages", generation)
            .route("/v1/messages/count_tokens", Reply::json(200, &count))
            .start()?;
        Ok(MessagesApi {
            upstream,
            message: self.message,
        })
    }
}

fn encoded(reply: FixedReply, body: Vec<u8>, gzip_body: bool) -> FixedReply {
    if gzip_body {
        reply.header("content-encoding", "gzip").body(gzip(&body))
    } else {
        reply.body(body)
    }
}

fn reply(message: &Message, request: &RecordedRequest, gzip_body: bool) -> FixedReply {
    let streamed = serde_json::from_slice::<serde_json::Value>(&request.body)
        .ok()
        .and_then(|body| body.get("stream").and_then(serde_json::Value::as_bool))
        .unwrap_or(false);
    let base = FixedReply::new(200).header("request-id", "req_011CSHoEeqs5C35K2UUqR7Fy");
    if streamed {
        encoded(
            base.header("content-type", "text/event-stream; charset=utf-8")
                .header("cache-control", "no-cache"),
            message.stream_body().into_bytes(),
            gzip_body,
        )
    } else {
        encoded(
            base.header("content-type", "application/json"),
            message.json().into_bytes(),
            gzip_body,
        )
    }
}

/// A running fake; dropping it stops it.
#[derive(Debug)]
pub struct MessagesApi {
    upstream: Upstream,
    message: Message,
}

impl MessagesApi {
    /// A builder answering with [`Message::new`]`("claude-sonnet-4-5")`.
    pub fn builder() -> MessagesApiBuilder {
        MessagesApiBuilder {
            message: Message::new("claude-sonnet-4-5"),
            gzip: false,
            answer: Answer::Message,
            count_tokens: 42,
        }
    }

    /// The underlying upstream (its recorded requests, its address).
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        self.upstream.url(path)
    }

    /// The answer it gives.
    pub fn message(&self) -> &Message {
        &self.message
    }
}

/// A request body for `/v1/messages`.
pub fn request_body(model: &str, stream: bool) -> String {
    json!({
        "model": model,
        "max_tokens": 1024,
        "stream": stream,
        "messages": [{"role": "user", "content": "Hello, Claude"}],
    })
    .to_string()
}
