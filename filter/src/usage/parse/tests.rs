//! Recorded-shape bodies fed at every byte boundary, encodings, limits and garbage.

use super::inflate::crc32;
use super::*;

const MODEL: &str = "claude-sonnet-4-5-20250929";

/// A non-streaming answer in the Messages API's shape.
const MESSAGE_JSON: &str = r#"{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Hello! {\"usage\":{\"input_tokens\":999}} \\ \u00e9"},{"type":"tool_use","id":"toolu_01","name":"get_weather","input":{"usage":{"output_tokens":999},"model":"x"}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":7,"cache_read_input_tokens":3,"output_tokens":13,"service_tier":"standard","server_tool_use":{"web_search_requests":0},"cache_creation":{"ephemeral_5m_input_tokens":7,"ephemeral_1h_input_tokens":0}}}"#;

/// A streamed answer in the Messages API's shape (LF line ends).
const MESSAGE_SSE: &str = concat!(
    "event: message_start\n",
    r#"data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":7,"cache_read_input_tokens":3,"output_tokens":1,"service_tier":"standard"}}}"#,
    "\n\n",
    "event: content_block_start\n",
    r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
    "\n\n",
    "event: ping\n",
    r#"data: {"type": "ping"}"#,
    "\n\n",
    "event: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#,
    "\n\n",
    "event: content_block_delta\n",
    r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"!\n\n{\"usage\":{\"output_tokens\":999}}\r\n"}}"#,
    "\n\n",
    "event: content_block_stop\n",
    r#"data: {"type":"content_block_stop","index":0}"#,
    "\n\n",
    "event: message_delta\n",
    r#"data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}"#,
    "\n\n",
    "event: message_stop\n",
    r#"data: {"type":"message_stop"}"#,
    "\n\n",
);

fn message_tokens() -> TokenCounts {
    TokenCounts {
        input: 25,
        output: 13,
        cache_creation_input: 7,
        cache_read_input: 3,
    }
}

fn stream_tokens() -> TokenCounts {
    TokenCounts {
        output: 15,
        ..message_tokens()
    }
}

fn parsed(tokens: TokenCounts, stop_reason: &str) -> Observed {
    Observed {
        model: Some(MODEL.to_owned()),
        tokens,
        stop_reason: Some(stop_reason.to_owned()),
        unparsed: None,
    }
}

fn unparsed(reason: Unparsed) -> Observed {
    Observed {
        unparsed: Some(reason),
        ..Observed::default()
    }
}

fn limits() -> Limits {
    Limits::default()
}

fn run<'a>(
    kind: BodyKind,
    encoding: Encoding,
    limits: Limits,
    chunks: impl IntoIterator<Item = &'a [u8]>,
    complete: bool,
) -> Observed {
    let mut parser = UsageParser::new(kind, encoding, limits);
    for chunk in chunks {
        parser.feed(chunk);
    }
    parser.finish(complete)
}

fn whole(kind: BodyKind, encoding: Encoding, body: &[u8]) -> Observed {
    run(kind, encoding, limits(), [body], true)
}

/// The body read whole, split in two at every byte boundary, and in 1-byte chunks: one answer.
fn every_split(kind: BodyKind, encoding: Encoding, body: &[u8]) -> Observed {
    let expected = whole(kind, encoding, body);
    for at in 0..=body.len() {
        let (head, tail) = body.split_at(at);
        assert_eq!(
            run(kind, encoding, limits(), [head, tail], true),
            expected,
            "split at {at}"
        );
    }
    assert_eq!(
        run(kind, encoding, limits(), body.chunks(1), true),
        expected,
        "1-byte chunks"
    );
    expected
}

fn gzip_with_header(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = header.to_vec();
    out.extend(miniz_oxide::deflate::compress_to_vec(data, 6));
    out.extend(crc32(0, data).to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    gzip_with_header(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255], data)
}

fn zlib(data: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec_zlib(data, 6)
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec(data, 6)
}

#[test]
fn json_message_at_every_split() {
    let observed = every_split(BodyKind::Json, Encoding::Identity, MESSAGE_JSON.as_bytes());
    assert_eq!(observed, parsed(message_tokens(), "end_turn"));
}

#[test]
fn sse_stream_at_every_split() {
    let observed = every_split(
        BodyKind::EventStream,
        Encoding::Identity,
        MESSAGE_SSE.as_bytes(),
    );
    assert_eq!(observed, parsed(stream_tokens(), "end_turn"));
}

#[test]
fn sse_crlf_and_cr_line_ends_at_every_split() {
    for line_end in ["\r\n", "\r"] {
        let body = MESSAGE_SSE.replace('\n', line_end);
        let observed = every_split(BodyKind::EventStream, Encoding::Identity, body.as_bytes());
        assert_eq!(
            observed,
            parsed(stream_tokens(), "end_turn"),
            "{line_end:?}"
        );
    }
}

#[test]
fn gzip_sse_and_json_at_every_split() {
    let observed = every_split(
        BodyKind::EventStream,
        Encoding::Gzip,
        &gzip(MESSAGE_SSE.as_bytes()),
    );
    assert_eq!(observed, parsed(stream_tokens(), "end_turn"));
    let observed = every_split(
        BodyKind::Json,
        Encoding::Gzip,
        &gzip(MESSAGE_JSON.as_bytes()),
    );
    assert_eq!(observed, parsed(message_tokens(), "end_turn"));
}

#[test]
fn deflate_zlib_and_raw_at_every_split() {
    for body in [
        zlib(MESSAGE_SSE.as_bytes()),
        raw_deflate(MESSAGE_SSE.as_bytes()),
    ] {
        let observed = every_split(BodyKind::EventStream, Encoding::Deflate, &body);
        assert_eq!(observed, parsed(stream_tokens(), "end_turn"));
    }
    let observed = every_split(
        BodyKind::Json,
        Encoding::Deflate,
        &zlib(MESSAGE_JSON.as_bytes()),
    );
    assert_eq!(observed, parsed(message_tokens(), "end_turn"));
}

#[test]
fn gzip_optional_header_fields_and_members_are_read() {
    // FHCRC | FEXTRA | FNAME | FCOMMENT, each with content.
    let mut header = vec![0x1f, 0x8b, 8, 0x02 | 0x04 | 0x08 | 0x10, 1, 2, 3, 4, 0, 3];
    header.extend([5, 0, b'A', b'B', 3, 0, 9]);
    header.extend(b"reply.sse\0");
    header.extend(b"a comment\0");
    header.extend([0xaa, 0xbb]);
    let body = gzip_with_header(&header, MESSAGE_SSE.as_bytes());
    let observed = every_split(BodyKind::EventStream, Encoding::Gzip, &body);
    assert_eq!(observed, parsed(stream_tokens(), "end_turn"));

    // Two members: the body split between them, as `cat a.gz b.gz` makes it.
    let (first, second) = MESSAGE_SSE.split_at(MESSAGE_SSE.len() / 2);
    let mut body = gzip(first.as_bytes());
    body.extend(gzip(second.as_bytes()));
    let observed = every_split(BodyKind::EventStream, Encoding::Gzip, &body);
    assert_eq!(observed, parsed(stream_tokens(), "end_turn"));
}

#[test]
fn corrupt_compressed_data_is_a_decompression_error() {
    let good = gzip(MESSAGE_SSE.as_bytes());
    let mut bad_crc = good.clone();
    let crc_at = bad_crc.len() - 8;
    bad_crc[crc_at] ^= 1;
    let observed = every_split(BodyKind::EventStream, Encoding::Gzip, &bad_crc);
    // Everything was read before the trailer said the data is corrupt.
    assert_eq!(
        observed,
        Observed {
            unparsed: Some(Unparsed::Decompression),
            ..parsed(stream_tokens(), "end_turn")
        }
    );

    let mut bad_magic = good.clone();
    bad_magic[1] = 0x8c;
    assert_eq!(
        whole(BodyKind::EventStream, Encoding::Gzip, &bad_magic),
        unparsed(Unparsed::Decompression)
    );
    let mut reserved_flag = good;
    reserved_flag[3] = 0x20;
    assert_eq!(
        whole(BodyKind::EventStream, Encoding::Gzip, &reserved_flag),
        unparsed(Unparsed::Decompression)
    );

    let mut bad_adler = zlib(MESSAGE_JSON.as_bytes());
    let last = bad_adler.len() - 1;
    bad_adler[last] ^= 0xff;
    let observed = whole(BodyKind::Json, Encoding::Deflate, &bad_adler);
    assert_eq!(observed.unparsed, Some(Unparsed::Decompression));
    // Not deflate data at all: a reserved block type.
    assert_eq!(
        whole(BodyKind::Json, Encoding::Deflate, &[0x07, 0xff, 0xff]).unparsed,
        Some(Unparsed::Decompression)
    );
}

#[test]
fn compressed_body_cut_short_is_truncated() {
    for (encoding, body) in [
        (Encoding::Gzip, gzip(MESSAGE_SSE.as_bytes())),
        (Encoding::Deflate, zlib(MESSAGE_SSE.as_bytes())),
    ] {
        // Only the trailer missing: the events were all read, the body was still cut.
        let cut = &body[..body.len() - 4];
        let observed = run(BodyKind::EventStream, encoding, limits(), [cut], true);
        assert_eq!(
            observed,
            Observed {
                unparsed: Some(Unparsed::Truncated),
                ..parsed(stream_tokens(), "end_turn")
            }
        );
    }
    // An empty body with a content-encoding is a complete body without usage.
    assert_eq!(
        whole(BodyKind::Json, Encoding::Gzip, b""),
        unparsed(Unparsed::NoUsage)
    );
    assert_eq!(
        run(BodyKind::Json, Encoding::Gzip, limits(), [&b""[..]], false),
        unparsed(Unparsed::Truncated)
    );
}

#[test]
fn huge_content_costs_no_memory() {
    let text = "lorem ipsum \\\"quoted\\\" {[ ".repeat(5 * 1024 * 1024 / 26);
    let body = MESSAGE_JSON.replacen("Hello! ", &text, 1);
    assert!(body.len() > 5_000_000);
    let mut parser = UsageParser::new(BodyKind::Json, Encoding::Identity, limits());
    for chunk in body.as_bytes().chunks(16 * 1024) {
        parser.feed(chunk);
    }
    assert!(
        parser.held_bytes() < 1024,
        "{} bytes held",
        parser.held_bytes()
    );
    assert_eq!(parser.finish(true), parsed(message_tokens(), "end_turn"));

    // The same text in one content_block_delta event: not a kept event, so no limit applies.
    let delta = format!(
        r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"{text}"}}}}"#
    );
    let body = MESSAGE_SSE.replacen(
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#,
        &delta,
        1,
    );
    let mut parser = UsageParser::new(BodyKind::EventStream, Encoding::Gzip, limits());
    for chunk in gzip(body.as_bytes()).chunks(16 * 1024) {
        parser.feed(chunk);
    }
    assert!(
        parser.held_bytes() < 64 * 1024,
        "{} bytes held",
        parser.held_bytes()
    );
    assert_eq!(parser.finish(true), parsed(stream_tokens(), "end_turn"));
}

#[test]
fn kept_event_over_max_event_bytes_is_too_large() {
    let padding = "x".repeat(2000);
    let body = MESSAGE_SSE.replacen(r#""id":"msg_01""#, &format!(r#""id":"{padding}""#), 1);
    let small = Limits {
        max_event_bytes: 1024,
    };
    let observed = run(
        BodyKind::EventStream,
        Encoding::Identity,
        small,
        [body.as_bytes()],
        true,
    );
    assert_eq!(observed, unparsed(Unparsed::TooLarge));
    // The same in 1-byte chunks, and without `event:` lines (the type is read from the data).
    let observed = run(
        BodyKind::EventStream,
        Encoding::Identity,
        small,
        body.as_bytes().chunks(1),
        true,
    );
    assert_eq!(observed, unparsed(Unparsed::TooLarge));
    let nameless: String = body
        .lines()
        .filter(|line| !line.starts_with("event:"))
        .map(|line| format!("{line}\n"))
        .collect();
    let observed = run(
        BodyKind::EventStream,
        Encoding::Identity,
        small,
        [nameless.as_bytes()],
        true,
    );
    assert_eq!(observed, unparsed(Unparsed::TooLarge));
    // Under the limit: read.
    assert_eq!(
        whole(BodyKind::EventStream, Encoding::Identity, body.as_bytes()),
        parsed(stream_tokens(), "end_turn")
    );
    // A later kept event over the limit keeps the counts read before it.
    let body = MESSAGE_SSE.replacen(
        r#""stop_sequence":null},"#,
        &format!(r#""stop_sequence":"{padding}"}},"#),
        1,
    );
    let observed = run(
        BodyKind::EventStream,
        Encoding::Identity,
        small,
        [body.as_bytes()],
        true,
    );
    let start_tokens = TokenCounts {
        output: 1,
        ..stream_tokens()
    };
    assert_eq!(
        observed,
        Observed {
            stop_reason: None,
            unparsed: Some(Unparsed::TooLarge),
            ..parsed(start_tokens, "")
        }
    );
}

#[test]
fn malformed_bodies() {
    for body in [
        "{\"usage\":{\"input_tokens\":1}",
        "not json",
        "{\"a\":1}}",
        "<html>502</html>",
    ] {
        let observed = whole(BodyKind::Json, Encoding::Identity, body.as_bytes());
        let expected = if body.starts_with("{\"usage") {
            Unparsed::Truncated
        } else {
            Unparsed::Malformed
        };
        assert_eq!(observed.unparsed, Some(expected), "{body}");
    }
    // A kept event whose data is not JSON stops reading; counts before it are kept.
    let body = MESSAGE_SSE.replacen(
        r#"{"type":"message_delta","#,
        r#"{"type":"message_delta",,"#,
        1,
    );
    let observed = every_split(BodyKind::EventStream, Encoding::Identity, body.as_bytes());
    let start_tokens = TokenCounts {
        output: 1,
        ..stream_tokens()
    };
    assert_eq!(
        observed,
        Observed {
            stop_reason: None,
            unparsed: Some(Unparsed::Malformed),
            ..parsed(start_tokens, "")
        }
    );
    // An event skipped anyway may carry anything.
    let body = MESSAGE_SSE.replacen(r#"{"type": "ping"}"#, "{{{ not json", 1);
    assert_eq!(
        whole(BodyKind::EventStream, Encoding::Identity, body.as_bytes()),
        parsed(stream_tokens(), "end_turn")
    );
    // HTML instead of events: nothing that reads as the end.
    assert_eq!(
        whole(
            BodyKind::EventStream,
            Encoding::Identity,
            b"<html>502</html>"
        ),
        unparsed(Unparsed::Truncated)
    );
}

#[test]
fn every_truncation_keeps_counts_read_so_far() {
    let sse = MESSAGE_SSE.as_bytes();
    let stop_at = MESSAGE_SSE.find("event: message_stop").unwrap_or(0);
    // Up to the last byte (the LF that dispatches message_stop), the stream is cut short.
    for cut in 0..sse.len() {
        for complete in [true, false] {
            let observed = run(
                BodyKind::EventStream,
                Encoding::Identity,
                limits(),
                [&sse[..cut]],
                complete,
            );
            assert_eq!(observed.unparsed, Some(Unparsed::Truncated), "cut at {cut}");
            if cut >= stop_at {
                assert_eq!(
                    observed,
                    Observed {
                        unparsed: Some(Unparsed::Truncated),
                        ..parsed(stream_tokens(), "end_turn")
                    }
                );
            }
        }
    }
    let json = MESSAGE_JSON.as_bytes();
    for cut in 0..json.len() {
        let observed = run(
            BodyKind::Json,
            Encoding::Identity,
            limits(),
            [&json[..cut]],
            false,
        );
        assert_eq!(observed.unparsed, Some(Unparsed::Truncated), "cut at {cut}");
    }
    for body in [gzip(sse), zlib(sse)] {
        let encoding = if body.starts_with(&[0x1f, 0x8b]) {
            Encoding::Gzip
        } else {
            Encoding::Deflate
        };
        for cut in 1..body.len() {
            let observed = run(
                BodyKind::EventStream,
                encoding,
                limits(),
                [&body[..cut]],
                true,
            );
            assert_eq!(observed.unparsed, Some(Unparsed::Truncated), "cut at {cut}");
        }
    }
}

#[test]
fn error_event_mid_stream_keeps_counts_without_stop_reason() {
    let at = MESSAGE_SSE.find("event: content_block_stop").unwrap_or(0);
    let body = format!(
        "{}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n",
        &MESSAGE_SSE[..at]
    );
    let observed = every_split(BodyKind::EventStream, Encoding::Identity, body.as_bytes());
    let start_tokens = TokenCounts {
        output: 1,
        ..stream_tokens()
    };
    assert_eq!(
        observed,
        Observed {
            stop_reason: None,
            ..parsed(start_tokens, "")
        }
    );
    // An error before any usage: nothing to count.
    let body = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
    assert_eq!(
        whole(BodyKind::EventStream, Encoding::Identity, body.as_bytes()),
        unparsed(Unparsed::NoUsage)
    );
}

#[test]
fn message_delta_with_repeated_counts_wins_per_present_field() {
    let body = MESSAGE_SSE.replacen(
        r#""usage":{"output_tokens":15}"#,
        r#""usage":{"input_tokens":30,"cache_creation_input_tokens":null,"cache_read_input_tokens":4,"output_tokens":15}"#,
        1,
    );
    let observed = every_split(BodyKind::EventStream, Encoding::Identity, body.as_bytes());
    let tokens = TokenCounts {
        input: 30,
        output: 15,
        cache_creation_input: 7,
        cache_read_input: 4,
    };
    assert_eq!(observed, parsed(tokens, "end_turn"));
}

#[test]
fn error_json_count_tokens_and_empty_bodies() {
    let error = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#;
    assert_eq!(
        every_split(BodyKind::Json, Encoding::Identity, error.as_bytes()),
        unparsed(Unparsed::NoUsage)
    );
    let count = every_split(
        BodyKind::Json,
        Encoding::Identity,
        br#"{"input_tokens": 12}"#,
    );
    assert_eq!(
        count,
        Observed {
            tokens: TokenCounts {
                input: 12,
                ..TokenCounts::default()
            },
            ..Observed::default()
        }
    );
    assert_eq!(
        whole(BodyKind::Json, Encoding::Identity, b""),
        unparsed(Unparsed::NoUsage)
    );
    assert_eq!(
        run(
            BodyKind::Json,
            Encoding::Identity,
            limits(),
            [&b"  "[..]],
            false
        ),
        unparsed(Unparsed::Truncated)
    );
    assert_eq!(
        whole(BodyKind::Json, Encoding::Identity, b"[1,2]"),
        unparsed(Unparsed::NoUsage)
    );
    assert_eq!(
        whole(BodyKind::EventStream, Encoding::Identity, b""),
        unparsed(Unparsed::Truncated)
    );
    let no_usage = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    assert_eq!(
        whole(
            BodyKind::EventStream,
            Encoding::Identity,
            no_usage.as_bytes()
        ),
        unparsed(Unparsed::NoUsage)
    );
}

#[test]
fn unsupported_encoding_reads_nothing() {
    for kind in [BodyKind::Json, BodyKind::EventStream] {
        let observed = whole(kind, Encoding::Unsupported, MESSAGE_SSE.as_bytes());
        assert_eq!(observed, unparsed(Unparsed::Encoding));
    }
}

#[test]
fn sse_framing_rules() {
    // A BOM, comments, no space after the colon, data split over lines, `event:` after
    // `data:`, unknown fields, a field name alone, a too-long event name ignored.
    let body = concat!(
        "\u{feff}: a comment\n",
        "id: 1\nretry: 10\nunknown: x\n",
        "data:{\"type\":\"message_start\",\n",
        "data: \"message\":{\"model\":\"claude-sonnet-4-5-20250929\",\n",
        "data:  \"usage\":{\"input_tokens\":25}}}\n",
        "event:message_start\n",
        "\n",
        ":\n",
        "event: a_very_long_event_name_that_is_no_known_event_at_all\n",
        "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":99}}\n\n",
        "data\n\n",
        "event\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"output_tokens\":4}}\n\n",
        "event: message_stop\ndata: {}\n\n",
        "data: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":1000}}\n",
    );
    let observed = every_split(BodyKind::EventStream, Encoding::Identity, body.as_bytes());
    let tokens = TokenCounts {
        input: 25,
        output: 4,
        ..TokenCounts::default()
    };
    assert_eq!(observed, parsed(tokens, "max_tokens"));
    // An event named one thing with data of another type is what its name says.
    let body = "event: ping\ndata: {\"type\":\"message_stop\"}\n\n";
    assert_eq!(
        whole(BodyKind::EventStream, Encoding::Identity, body.as_bytes()),
        unparsed(Unparsed::Truncated)
    );
}

#[test]
fn header_values_map_to_kinds_and_encodings() {
    assert_eq!(
        BodyKind::from_content_type(b"text/event-stream; charset=utf-8"),
        Some(BodyKind::EventStream)
    );
    assert_eq!(
        BodyKind::from_content_type(b"Application/JSON"),
        Some(BodyKind::Json)
    );
    assert_eq!(
        BodyKind::from_content_type(b"application/problem+json"),
        Some(BodyKind::Json)
    );
    assert_eq!(BodyKind::from_content_type(b"text/html"), None);
    assert_eq!(BodyKind::from_content_type(b""), None);
    assert_eq!(Encoding::from_content_encoding(b""), Encoding::Identity);
    assert_eq!(Encoding::from_content_encoding(b" GZIP "), Encoding::Gzip);
    assert_eq!(Encoding::from_content_encoding(b"x-gzip"), Encoding::Gzip);
    assert_eq!(
        Encoding::from_content_encoding(b"deflate"),
        Encoding::Deflate
    );
    assert_eq!(
        Encoding::from_content_encoding(b"br"),
        Encoding::Unsupported
    );
    assert_eq!(
        Encoding::from_content_encoding(b"gzip, br"),
        Encoding::Unsupported
    );
    assert_eq!(Unparsed::TooLarge.as_str(), "too_large");
}

/// xorshift64*: deterministic pseudo-random bytes for the garbage tests (and the inflater's).
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const ALL: [(BodyKind, Encoding); 8] = [
    (BodyKind::Json, Encoding::Identity),
    (BodyKind::Json, Encoding::Gzip),
    (BodyKind::Json, Encoding::Deflate),
    (BodyKind::Json, Encoding::Unsupported),
    (BodyKind::EventStream, Encoding::Identity),
    (BodyKind::EventStream, Encoding::Gzip),
    (BodyKind::EventStream, Encoding::Deflate),
    (BodyKind::EventStream, Encoding::Unsupported),
];

/// Feeds `body` in random chunk sizes and finishes; the point is that it returns.
fn feed_randomly(rng: &mut Rng, kind: BodyKind, encoding: Encoding, body: &[u8]) -> Observed {
    let mut parser = UsageParser::new(
        kind,
        encoding,
        Limits {
            max_event_bytes: 1 + rng.below(300),
        },
    );
    let mut rest = body;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(1 + rng.below(rest.len().min(64)));
        parser.feed(chunk);
        rest = tail;
    }
    parser.finish(rng.below(2) == 0)
}

#[test]
fn garbage_never_panics() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let alphabet = b"{}[]\":,\\ \n\r\t0123456789-.eEtrufalsn data:event:message_start message_delta usage input_tokens u00";
    for round in 0..400 {
        let len = rng.below(600);
        let body: Vec<u8> = (0..len)
            .map(|_| {
                if round % 2 == 0 {
                    rng.next() as u8
                } else {
                    alphabet[rng.below(alphabet.len())]
                }
            })
            .collect();
        for (kind, encoding) in ALL {
            feed_randomly(&mut rng, kind, encoding, &body);
        }
    }
    // Valid bodies with bytes flipped, in every framing and encoding.
    let vectors = [
        (
            BodyKind::Json,
            Encoding::Identity,
            MESSAGE_JSON.as_bytes().to_vec(),
        ),
        (
            BodyKind::EventStream,
            Encoding::Identity,
            MESSAGE_SSE.as_bytes().to_vec(),
        ),
        (
            BodyKind::EventStream,
            Encoding::Gzip,
            gzip(MESSAGE_SSE.as_bytes()),
        ),
        (
            BodyKind::Json,
            Encoding::Gzip,
            gzip(MESSAGE_JSON.as_bytes()),
        ),
        (
            BodyKind::EventStream,
            Encoding::Deflate,
            zlib(MESSAGE_SSE.as_bytes()),
        ),
        (
            BodyKind::EventStream,
            Encoding::Deflate,
            raw_deflate(MESSAGE_SSE.as_bytes()),
        ),
    ];
    for (kind, encoding, body) in &vectors {
        for _ in 0..300 {
            let mut body = body.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(body.len());
                body[at] = rng.next() as u8;
            }
            feed_randomly(&mut rng, *kind, *encoding, &body);
        }
        // Every truncation, read as complete and as cut short, in every framing.
        for cut in 0..body.len() {
            for (other_kind, other_encoding) in ALL {
                run(
                    other_kind,
                    other_encoding,
                    limits(),
                    [&body[..cut]],
                    cut % 2 == 0,
                );
            }
            run(*kind, *encoding, limits(), body[..cut].chunks(7), false);
        }
    }
}

#[test]
fn data_of_events_named_as_not_read_is_stepped_over() {
    // Named events the parser does not read: their data is never scanned, so data that is
    // no JSON, or over max_event_bytes, changes nothing; a cut (too long) name is no name.
    let huge = "x".repeat(Limits::default().max_event_bytes * 2);
    let noise = format!(
        concat!(
            "event: content_block_delta\ndata: {{\"type\":\"message_delta\",\"usage\":{{\"output_tokens\":99}}}}\n\n",
            "event: ping\ndata: {{not json\ndata: at all\n\n",
            "event: content_block_delta\ndata: \"{huge}\"\n\n",
            "event: content_block_delta\r\ndata: {{\"usage\":{{\"input_tokens\":1}}}}\r\rdata\r\n\r\n",
            "event: a_very_long_event_name_that_is_no_known_event_at_all\ndata: {{\"type\":\"message_delta\",\n\n",
            "event: ping\nevent: content_block_stop\ndata: {{\"type\":\"message_delta\"\n\n",
        ),
        huge = huge
    );
    let body = MESSAGE_SSE.replacen("event: ping\n", &format!("{noise}event: ping\n"), 1);
    assert_eq!(
        whole(BodyKind::EventStream, Encoding::Identity, body.as_bytes()),
        parsed(stream_tokens(), "end_turn")
    );
    let short = MESSAGE_SSE.replacen(
        "event: ping\n",
        "event: ping\ndata: {not json\ndata: at all\n\nevent: ping\n",
        1,
    );
    let observed = every_split(BodyKind::EventStream, Encoding::Identity, short.as_bytes());
    assert_eq!(observed, parsed(stream_tokens(), "end_turn"));
    // Named `message_stop` and `error` events are decided by their names alone.
    let body = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3}}}\n\nevent: error\ndata: {oops\n\n";
    let observed = every_split(BodyKind::EventStream, Encoding::Identity, body.as_bytes());
    let tokens = TokenCounts {
        input: 3,
        ..TokenCounts::default()
    };
    assert_eq!(
        observed,
        Observed {
            tokens,
            ..Observed::default()
        }
    );
}

#[test]
fn an_event_renamed_after_its_data_was_stepped_over_is_malformed() {
    let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3}}}\n\n";
    for renamed in [
        "event: ping\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":4}}\nevent: message_delta\n\n",
        "event: ping\ndata: {\"type\":\"message_delta\",\nevent: message_delta\ndata: \"usage\":{\"output_tokens\":4}}\n\n",
        "event: ping\ndata: {\"type\":\"message_stop\"}\nevent\n\n",
    ] {
        let body = format!("{start}{renamed}event: message_stop\ndata: {{}}\n\n");
        let observed = every_split(BodyKind::EventStream, Encoding::Identity, body.as_bytes());
        assert_eq!(observed.unparsed, Some(Unparsed::Malformed), "{renamed:?}");
        assert_eq!(observed.tokens.input, 3, "{renamed:?}");
    }
    // Renamed before any data, or to another name not read: read as before.
    for renamed in [
        "event: ping\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":4}}\n\n",
        "event: ping\ndata:\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":4}}\n\n",
        "event: ping\ndata: {\nevent: content_block_stop\n\nevent: message_delta\ndata: {\"usage\":{\"output_tokens\":4}}\n\n",
    ] {
        let body = format!("{start}{renamed}event: message_stop\ndata: {{}}\n\n");
        let observed = every_split(BodyKind::EventStream, Encoding::Identity, body.as_bytes());
        assert_eq!(observed.unparsed, None, "{renamed:?}");
        assert_eq!((observed.tokens.input, observed.tokens.output), (3, 4));
    }
}

#[test]
fn a_parser_that_stopped_is_done() {
    let mut parser = UsageParser::new(BodyKind::EventStream, Encoding::Identity, limits());
    parser.feed(MESSAGE_SSE.as_bytes());
    assert!(!parser.done());
    let mut parser = UsageParser::new(BodyKind::Json, Encoding::Identity, limits());
    parser.feed(b"{\"a\" 1");
    assert!(parser.done());
    assert!(UsageParser::new(BodyKind::Json, Encoding::Unsupported, limits()).done());
    let mut parser = UsageParser::new(BodyKind::Json, Encoding::Gzip, limits());
    parser.feed(b"not gzip");
    assert!(parser.done());
    assert_eq!(parser.finish(true).unparsed, Some(Unparsed::Decompression));
}

/// A random event stream in which no event is renamed after data it stepped over: event
/// names read and not read, cut and empty, data lines holding pieces of real events or
/// garbage, comments, other fields, every line end.
fn random_stream(rng: &mut Rng) -> Vec<u8> {
    const NAMES: [&str; 11] = [
        "message_start",
        "message_delta",
        "message_stop",
        "error",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "",
        "message_sta",
        "message_deltas",
        "a_very_long_event_name_that_is_no_known_event_at_all",
    ];
    let datas: Vec<&str> = MESSAGE_SSE
        .split("\n\n")
        .filter_map(|event| event.split_once("data: ").map(|(_, data)| data))
        .chain([
            r#"{"type":"message_delta","usage":{"output_tokens":1"#,
            r#"{"type":"error","error":{"type":"overloaded_error"}}"#,
            "{oops",
            "",
        ])
        .collect();
    let line_ends = ["\n", "\r\n", "\r"];
    let mut out = String::new();
    let events = 1 + rng.below(8);
    for event in 0..events {
        let end = line_ends[rng.below(3)];
        let line = |out: &mut String, text: &str| {
            out.push_str(text);
            out.push_str(end);
        };
        if rng.below(5) == 0 {
            line(&mut out, ": comment");
        }
        let named_first = rng.below(4) != 0;
        if named_first {
            for _ in 0..1 + rng.below(2) {
                let name = NAMES[rng.below(NAMES.len())];
                line(
                    &mut out,
                    &format!("event:{}{name}", [" ", ""][rng.below(2)]),
                );
            }
        }
        if rng.below(6) == 0 {
            line(&mut out, "id: 7");
        }
        let data = datas[rng.below(datas.len())];
        let cut = rng.below(data.len() + 1);
        let (head, tail) = data.split_at(cut);
        if rng.below(2) == 0 {
            line(&mut out, &format!("data: {data}"));
        } else {
            line(&mut out, &format!("data:{head}"));
            line(&mut out, &format!("data: {tail}"));
        }
        if !named_first && rng.below(2) == 0 {
            // Named after data that was scanned: nothing was stepped over.
            line(
                &mut out,
                &format!("event: {}", NAMES[rng.below(NAMES.len())]),
            );
        }
        // The last event may be cut off; one without its blank line would merge into the next.
        if event + 1 < events || rng.below(10) != 0 {
            line(&mut out, "");
        }
    }
    out.into_bytes()
}

#[test]
fn stepping_over_data_reads_as_scanning_it_all() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut outcomes = Vec::new();
    for _ in 0..3_000 {
        let body = random_stream(&mut rng);
        let limits = Limits {
            max_event_bytes: [8, 64, 65_536][rng.below(3)],
        };
        let mut chunks = Vec::new();
        let mut rest = &body[..];
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(1 + rng.below(rest.len().min(40)));
            chunks.push(chunk);
            rest = tail;
        }
        let read = |scan_all: bool| {
            let mut parser = UsageParser::new(BodyKind::EventStream, Encoding::Identity, limits);
            if let Body::EventStream(stream) = &mut parser.body {
                stream.scan_all = scan_all;
            }
            for chunk in &chunks {
                parser.feed(chunk);
            }
            parser.finish(true)
        };
        let observed = read(false);
        assert_eq!(observed, read(true), "{:?}", String::from_utf8_lossy(&body));
        if !outcomes.contains(&observed.unparsed) {
            outcomes.push(observed.unparsed);
        }
    }
    // The streams reach every verdict, so the comparison covers them all.
    for verdict in [
        None,
        Some(Unparsed::TooLarge),
        Some(Unparsed::Malformed),
        Some(Unparsed::Truncated),
        Some(Unparsed::NoUsage),
    ] {
        assert!(outcomes.contains(&verdict), "{verdict:?} never reached");
    }
}

#[test]
fn an_unread_body_finishes_as_a_reader_fed_nothing_would() {
    let kinds = [BodyKind::Json, BodyKind::EventStream];
    let encodings = [
        Encoding::Identity,
        Encoding::Gzip,
        Encoding::Deflate,
        Encoding::Unsupported,
    ];
    for kind in kinds {
        for encoding in encodings {
            assert_eq!(
                UsageParser::done_unread(encoding),
                UsageParser::new(kind, encoding, limits()).done(),
                "{kind:?} {encoding:?}"
            );
            for complete in [false, true] {
                let fed_nothing = UsageParser::new(kind, encoding, limits()).finish(complete);
                assert_eq!(
                    UsageParser::finish_unread(kind, encoding, complete),
                    fed_nothing,
                    "{kind:?} {encoding:?} complete {complete}"
                );
            }
        }
    }
}
