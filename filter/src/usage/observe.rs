//! Which requests are observed, and one observed request from its arrival to its record.
//!
//! A request is observed when its path (query removed) ends in `/v1/messages`: a generation. Token
//! counting (`/v1/messages/count_tokens`) generates and bills nothing, so it is not observed. An
//! [`Observation`] is fed what the host reports (response headers, every body chunk as it passes)
//! and turns it into a [`UsageRecord`] at the end of the stream. It only reads: the bytes it is shown
//! are never held or changed.

use crate::headers::position_of_any;
use crate::usage::UsageConfig;
use crate::usage::parse::{
    BodyKind, Encoding, Limits, Observed, TokenCounts, Unparsed, UsageParser,
};
use crate::usage::record::{
    MAX_LOG_VALUE_BYTES, MAX_REQUEST_ID_BYTES, UsageRecord, cut_text, log_text,
};

/// The path suffix of a generation.
const MESSAGES_SUFFIX: &[u8] = b"/v1/messages";

/// Whether a request with this `:path` is observed.
pub fn observes(path: &[u8]) -> bool {
    let end = position_of_any(path, [b'?', b'#']).unwrap_or(path.len());
    path.get(..end)
        .is_some_and(|path| path.ends_with(MESSAGES_SUFFIX))
}

/// How the body is framed: an absent `content-type` is read as JSON, one the parser does not read
/// (an HTML error page, say) is not read at all.
fn body_kind(content_type: Option<&[u8]>) -> Option<BodyKind> {
    match content_type {
        None => Some(BodyKind::Json),
        Some(value) => BodyKind::from_content_type(value),
    }
}

/// The body's encoding.
fn encoding(content_encoding: Option<&[u8]>) -> Encoding {
    // Absent, as the API sends it: no value to look at.
    content_encoding.map_or(Encoding::Identity, Encoding::from_content_encoding)
}

/// A status code from its header value: one to three ASCII digits after trimming, else 0.
fn status_code(value: &[u8]) -> u16 {
    // Three digits, as every status is sent: read without a trim or a loop.
    if let [
        hundreds @ b'0'..=b'9',
        tens @ b'0'..=b'9',
        ones @ b'0'..=b'9',
    ] = *value
    {
        return u16::from(hundreds - b'0') * 100
            + u16::from(tens - b'0') * 10
            + u16::from(ones - b'0');
    }
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 3 || !digits.iter().all(u8::is_ascii_digit) {
        return 0;
    }
    digits
        .iter()
        .fold(0, |code, digit| code * 10 + u16::from(digit - b'0'))
}

/// What the host reported about a response's start.
#[derive(Clone, Copy, Debug, Default)]
pub struct ResponseStart<'a> {
    /// `:status`.
    pub status: Option<&'a [u8]>,
    /// `content-type`.
    pub content_type: Option<&'a [u8]>,
    /// `content-encoding`.
    pub content_encoding: Option<&'a [u8]>,
}

/// One observed request.
pub struct Observation {
    started_ms: u64,
    caller: Option<String>,
    request_id: Option<String>,
    status: u16,
    ttfb_ms: Option<u64>,
    streamed: bool,
    body: Reading,
    /// The body ended (end of stream or trailers) rather than being cut off.
    complete: bool,
    /// The parser's result, once the body has ended.
    observed: Option<Observed>,
}

/// Where the reading of the response body stands.
enum Reading {
    /// No response yet, or a body that is not read; also once the body has ended.
    Not,
    /// A body to read of which no byte has arrived: its reader is built with the first byte, so a
    /// response without a body never builds one.
    Unread(BodyKind, Encoding, Limits),
    /// A body being read. Boxed: the observation, moved whole from request to record, stays a few
    /// words long whether or not a body is read.
    Parser(Box<UsageParser>),
}

impl Observation {
    /// A request that arrived at `now_ms`, from `caller` (its identity as resolved, `None` when
    /// unknown), with header `x-request-id` = `request_id`.
    pub fn start(now_ms: u64, caller: Option<&[u8]>, request_id: Option<&[u8]>) -> Self {
        let caller = caller
            .filter(|caller| !caller.is_empty())
            .map(|caller| log_text(caller, MAX_LOG_VALUE_BYTES));
        Self {
            started_ms: now_ms,
            caller,
            request_id: request_id.map(|id| log_text(id, MAX_REQUEST_ID_BYTES)),
            status: 0,
            ttfb_ms: None,
            streamed: false,
            body: Reading::Not,
            complete: false,
            observed: None,
        }
    }

    /// The caller identity as resolved (`unknown` when absent).
    pub fn caller(&self) -> &str {
        self.caller
            .as_deref()
            .unwrap_or(crate::usage::labels::UNKNOWN)
    }

    /// The response headers arrived at `now_ms`; `end_of_stream` when there is no body.
    pub fn response_headers(
        &mut self,
        now_ms: u64,
        response: ResponseStart<'_>,
        end_of_stream: bool,
        config: &UsageConfig,
    ) {
        self.status = response.status.map_or(0, status_code);
        self.ttfb_ms = Some(now_ms.saturating_sub(self.started_ms));
        let kind = body_kind(response.content_type);
        self.streamed = kind == Some(BodyKind::EventStream);
        let limits = Limits {
            max_event_bytes: config.max_event_bytes,
        };
        self.body = match kind {
            Some(kind) => Reading::Unread(kind, encoding(response.content_encoding), limits),
            None => Reading::Not,
        };
        self.observed = None;
        self.complete = false;
        if end_of_stream {
            self.end_of_body();
        }
    }

    /// A body chunk passed; `end_of_stream` when it is the last.
    pub fn response_body(&mut self, chunk: &[u8], end_of_stream: bool) {
        if let (&Reading::Unread(kind, encoding, limits), false) = (&self.body, chunk.is_empty()) {
            self.body = Reading::Parser(Box::new(UsageParser::new(kind, encoding, limits)));
        }
        if let Reading::Parser(parser) = &mut self.body {
            parser.feed(chunk);
        }
        if end_of_stream {
            self.end_of_body();
        }
    }

    /// The body is complete (its last chunk, or the response trailers, arrived).
    pub fn end_of_body(&mut self) {
        self.complete = true;
        if let Some(observed) = std::mem::replace(&mut self.body, Reading::Not).finish(true) {
            self.observed = Some(observed);
        }
    }

    /// Whether the response body is still being read: false before the response headers, for a
    /// body that is not read, and once the parser has stopped for good (the host then need not copy
    /// the chunks out).
    pub fn reading_body(&self) -> bool {
        match &self.body {
            Reading::Not => false,
            Reading::Unread(_, encoding, _) => !UsageParser::done_unread(*encoding),
            Reading::Parser(parser) => !parser.done(),
        }
    }

    /// The record of the request, at the end of the stream (`now_ms`). A body that never ended is read
    /// as cut short: counts seen so far are kept, the response counts as unparsed. Boxed, as a stream
    /// holds it: the fields are read where they are rather than from a copy of the whole.
    #[allow(clippy::boxed_local)]
    pub fn finish(self: Box<Self>, now_ms: u64) -> UsageRecord {
        let observed = match self.observed {
            Some(observed) => Some(observed),
            None => self.body.finish(self.complete),
        };
        let (model, tokens, stop_reason, unparsed) = match observed {
            Some(observed) => (
                observed.model,
                observed.tokens,
                observed.stop_reason,
                observed.unparsed.map(Unparsed::as_str),
            ),
            None if self.ttfb_ms.is_none() => {
                (None, TokenCounts::default(), None, Some("no_response"))
            }
            None => (None, TokenCounts::default(), None, Some("content_type")),
        };
        UsageRecord {
            time_ms: self.started_ms,
            request_id: self.request_id,
            caller: self.caller,
            model: model
                .filter(|model| !model.is_empty())
                .map(|model| cut_text(model, MAX_LOG_VALUE_BYTES)),
            status: self.status,
            tokens,
            stop_reason: stop_reason.map(|reason| cut_text(reason, MAX_LOG_VALUE_BYTES)),
            duration_ms: now_ms.saturating_sub(self.started_ms),
            ttfb_ms: self.ttfb_ms,
            streamed: self.streamed,
            unparsed,
        }
    }
}

impl Reading {
    /// What was read of the body, now that it is over (`complete`: it ended rather than being cut
    /// off); `None` for a body that is not read.
    fn finish(self, complete: bool) -> Option<Observed> {
        match self {
            Reading::Not => None,
            Reading::Unread(kind, encoding, _) => {
                Some(UsageParser::finish_unread(kind, encoding, complete))
            }
            Reading::Parser(parser) => Some((*parser).finish(complete)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn a_status_is_one_to_three_digits_or_zero() {
        assert_eq!(status_code(b"200"), 200);
        assert_eq!(status_code(b" 404 "), 404);
        assert_eq!(status_code(b"5"), 5);
        for bad in [&b""[..], b"2000", b"+200", b"20x", b"\xff", b"-1"] {
            assert_eq!(status_code(bad), 0, "{bad:?}");
        }
    }

    const STREAM: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":3,\"cache_read_input_tokens\":7,\"output_tokens\":1}}}\n\n",
        "event: ping\ndata: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    fn sse_start() -> ResponseStart<'static> {
        ResponseStart {
            status: Some(b"200"),
            content_type: Some(b"text/event-stream; charset=utf-8"),
            content_encoding: None,
        }
    }

    #[test]
    fn generations_are_observed_token_counting_is_not() {
        for path in [
            &b"/v1/messages"[..],
            b"/v1/messages?beta=true",
            b"/anthropic/v1/messages",
            b"/v1/messages#x",
        ] {
            assert!(observes(path), "{}", String::from_utf8_lossy(path));
        }
        for path in [
            &b"/v1/messages/count_tokens"[..],
            b"/v1/messages/count_tokens?beta=true",
            b"/v1/messages/",
            b"/v1/models",
            b"/v1/messages/batches",
            b"",
            b"?/v1/messages",
        ] {
            assert!(!observes(path), "{}", String::from_utf8_lossy(path));
        }
    }

    #[test]
    fn a_stream_fed_byte_by_byte_yields_the_full_record() {
        let mut observation = Observation::start(1_000, Some(b"alice@example.com"), Some(b"r-1"));
        observation.response_headers(1_250, sse_start(), false, &UsageConfig::default());
        for byte in STREAM.as_bytes() {
            observation.response_body(std::slice::from_ref(byte), false);
        }
        observation.response_body(b"", true);
        let record = Box::new(observation).finish(3_000);
        assert_eq!(
            record,
            UsageRecord {
                time_ms: 1_000,
                request_id: Some("r-1".into()),
                caller: Some("alice@example.com".into()),
                model: Some("claude-sonnet-4-5".into()),
                status: 200,
                tokens: TokenCounts {
                    input: 25,
                    output: 15,
                    cache_creation_input: 3,
                    cache_read_input: 7
                },
                stop_reason: Some("end_turn".into()),
                duration_ms: 2_000,
                ttfb_ms: Some(250),
                streamed: true,
                unparsed: None,
            }
        );
    }

    #[test]
    fn a_json_answer_and_an_answer_without_end_of_stream() {
        let body = br#"{"id":"msg_2","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"text","text":"hi"}],"stop_reason":"max_tokens","stop_sequence":null,"usage":{"input_tokens":10,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":20}}"#;
        let json = ResponseStart {
            status: Some(b"200"),
            content_type: Some(b"application/json"),
            content_encoding: None,
        };
        let mut observation = Observation::start(0, None, None);
        assert_eq!(observation.caller(), "unknown");
        observation.response_headers(5, json, false, &UsageConfig::default());
        assert!(observation.reading_body());
        observation.response_body(body, true);
        assert!(!observation.reading_body());
        // The end of the body reported again (trailers after the last chunk) keeps what was read.
        observation.end_of_body();
        let record = Box::new(observation).finish(9);
        assert_eq!(record.model.as_deref(), Some("claude-haiku-4-5"));
        assert_eq!(record.tokens.output, 20);
        assert_eq!(record.stop_reason.as_deref(), Some("max_tokens"));
        assert!(record.unparsed.is_none() && !record.streamed);
        assert_eq!(record.request_id, None);

        // The client went away mid-stream: counts so far are kept, the response is unparsed.
        let mut cut = Observation::start(0, Some(b"bob"), None);
        cut.response_headers(1, sse_start(), false, &UsageConfig::default());
        cut.response_body(&STREAM.as_bytes()[..STREAM.len() / 2], false);
        let record = Box::new(cut).finish(2);
        assert_eq!(record.unparsed, Some("truncated"));
        assert_eq!(record.tokens.input, 25);
        assert_eq!(record.stop_reason, None);
    }

    #[test]
    fn unreadable_or_missing_responses_are_unparsed() {
        let mut html = Observation::start(0, Some(b""), None);
        html.response_headers(
            3,
            ResponseStart {
                status: Some(b"502"),
                content_type: Some(b"text/html"),
                content_encoding: None,
            },
            false,
            &UsageConfig::default(),
        );
        assert!(!html.reading_body());
        html.response_body(b"<html>bad gateway</html>", true);
        let record = Box::new(html).finish(4);
        assert_eq!(
            (record.status, record.unparsed, record.ttfb_ms),
            (502, Some("content_type"), Some(3))
        );
        assert_eq!((record.caller, record.model), (None, None));

        let none = Box::new(Observation::start(10, Some(b"carol"), None)).finish(15);
        assert_eq!(
            (none.status, none.ttfb_ms, none.unparsed),
            (0, None, Some("no_response"))
        );
        assert_eq!(none.duration_ms, 5);

        let mut brotli = Observation::start(0, Some(b"dave"), None);
        brotli.response_headers(
            1,
            ResponseStart {
                content_encoding: Some(b"br"),
                ..sse_start()
            },
            false,
            &UsageConfig::default(),
        );
        assert!(!brotli.reading_body());
        brotli.response_body(STREAM.as_bytes(), true);
        let record = Box::new(brotli).finish(2);
        assert_eq!(record.unparsed, Some("encoding"));
        assert!(record.streamed);
        assert_eq!(record.tokens, TokenCounts::default());
    }

    #[test]
    fn a_body_whose_reading_stopped_is_no_longer_read() {
        let mut observation = Observation::start(0, None, None);
        let json = ResponseStart {
            status: Some(b"200"),
            content_type: Some(b"application/json"),
            content_encoding: None,
        };
        observation.response_headers(1, json, false, &UsageConfig::default());
        observation.response_body(b"{\"model\" 1", false);
        assert!(!observation.reading_body());
        observation.response_body(b"", true);
        assert_eq!(Box::new(observation).finish(2).unparsed, Some("malformed"));
    }

    #[test]
    fn long_identities_and_request_ids_are_cut_for_the_log() {
        let caller = vec![b'a'; 1_000];
        let id = vec![b'i'; 1_000];
        let record = Box::new(Observation::start(0, Some(&caller), Some(&id))).finish(0);
        assert_eq!(record.caller.unwrap().len(), MAX_LOG_VALUE_BYTES);
        assert_eq!(record.request_id.unwrap().len(), MAX_REQUEST_ID_BYTES);
    }
}
