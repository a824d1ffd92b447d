//! Native cost of the filter's usage parser (`filter::usage::parse`) on recorded-shape Messages API
//! bodies: the event stream of the streaming bench case (message_start, content_block_start, ping, 400
//! content_block_delta events, content_block_stop, message_delta, message_stop) fed one event per
//! chunk as `serve` hands them over, the same stream whole, gzip-encoded, and a non-streaming JSON
//! answer with a 50 KiB text. Each body's result is checked against the counts it carries, so a
//! faster parser that reads wrong is caught here too.
//!
//! Run with `bench/run.sh` (`make bench`) or `cargo run --release --manifest-path
//! bench/usage-parse/Cargo.toml`. Figures are printed, never asserted: the cases are measured
//! interleaved, batch by batch, and the medians over the batches are reported (ns per event and per
//! decoded byte). `BENCH_BATCHES` (default 31) and `BENCH_PER_BATCH` (bodies per batch and case, default 40)
//! narrow or widen a run.

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use filter::usage::parse::{BodyKind, Encoding, Limits, TokenCounts, UsageParser};

/// Deltas in the stream, as in bench/bench.py's streaming case.
const DELTAS: usize = 400;

/// One recorded-shape event stream, one `Vec` per event (the chunks `serve` passes on).
fn stream_events() -> Vec<Vec<u8>> {
    let usage = r#"{"input_tokens":1200,"cache_creation_input_tokens":0,"cache_read_input_tokens":800,"output_tokens":1,"service_tier":"standard"}"#;
    let mut events = vec![
        format!(
            "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"msg_bench\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{usage}}}}}\n\n"
        ),
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n".to_owned(),
        "event: ping\ndata: {\"type\": \"ping\"}\n\n".to_owned(),
    ];
    let words = [
        "The", " proxy", " reads", " usage", " as", " events", " pass,", " never", " holding",
        " them.",
    ];
    for index in 0..DELTAS {
        let text: String = (0..3).map(|k| words[(index + k) % words.len()]).collect();
        events.push(format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"{text}\"}}}}\n\n"
        ));
    }
    events.push(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
            .to_owned(),
    );
    events.push(format!(
        "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{}}}}}\n\n",
        DELTAS * 3
    ));
    events.push("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".to_owned());
    events.into_iter().map(String::into_bytes).collect()
}

/// A non-streaming answer whose text is about 50 KiB.
fn json_answer() -> Vec<u8> {
    let text = "The proxy reads usage as bodies pass, never holding them. ".repeat(900);
    format!(
        "{{\"id\":\"msg_bench\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[{{\"type\":\"text\",\"text\":\"{text}\"}}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":{{\"input_tokens\":1200,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":800,\"output_tokens\":1200,\"service_tier\":\"standard\"}}}}"
    )
    .into_bytes()
}

/// A gzip member holding `data` (header, raw deflate, CRC-32, length).
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    out.extend(miniz_oxide::deflate::compress_to_vec(data, 6));
    out.extend(crc32(data).to_le_bytes());
    out.extend(u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// One measured body: how it is framed and encoded, its chunks, and what reading it must give.
struct Case {
    name: &'static str,
    kind: BodyKind,
    encoding: Encoding,
    chunks: Vec<Vec<u8>>,
    /// Bytes of the decoded body (what the per-byte figure divides by).
    decoded: usize,
    events: usize,
    expected: TokenCounts,
}

impl Case {
    /// Reads the body once; `false` when the result is not the expected one.
    fn read(&self) -> bool {
        let mut parser = UsageParser::new(self.kind, self.encoding, Limits::default());
        for chunk in &self.chunks {
            parser.feed(black_box(chunk));
        }
        let observed = parser.finish(true);
        observed.unparsed.is_none() && observed.tokens == self.expected
    }
}

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .filter(|&value| value > 0)
        .unwrap_or(default)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> ExitCode {
    let batches = knob("BENCH_BATCHES", 31);
    let per_batch = knob("BENCH_PER_BATCH", 40);
    let events = stream_events();
    let stream: Vec<u8> = events.concat();
    let stream_tokens = TokenCounts {
        input: 1200,
        output: u64::try_from(DELTAS * 3).unwrap_or(0),
        cache_creation_input: 0,
        cache_read_input: 800,
    };
    let json = json_answer();
    let cases = [
        Case {
            name: "sse, one event per chunk",
            kind: BodyKind::EventStream,
            encoding: Encoding::Identity,
            chunks: events.clone(),
            decoded: stream.len(),
            events: events.len(),
            expected: stream_tokens,
        },
        Case {
            name: "sse, whole body",
            kind: BodyKind::EventStream,
            encoding: Encoding::Identity,
            chunks: vec![stream.clone()],
            decoded: stream.len(),
            events: events.len(),
            expected: stream_tokens,
        },
        Case {
            name: "sse, gzip, 4 KiB chunks",
            kind: BodyKind::EventStream,
            encoding: Encoding::Gzip,
            chunks: gzip(&stream).chunks(4096).map(<[u8]>::to_vec).collect(),
            decoded: stream.len(),
            events: events.len(),
            expected: stream_tokens,
        },
        Case {
            name: "json, 50 KiB text",
            kind: BodyKind::Json,
            encoding: Encoding::Identity,
            chunks: json.chunks(16 * 1024).map(<[u8]>::to_vec).collect(),
            decoded: json.len(),
            events: 0,
            expected: TokenCounts {
                output: 1200,
                ..stream_tokens
            },
        },
    ];
    if let Some(wrong) = cases.iter().find(|case| !case.read()) {
        eprintln!("usage-parse bench: {} did not read as expected", wrong.name);
        return ExitCode::FAILURE;
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..batches {
        for (case, times) in cases.iter().zip(&mut samples) {
            let started = Instant::now();
            for _ in 0..per_batch {
                black_box(case.read());
            }
            times.push(started.elapsed().as_nanos() as f64 / per_batch as f64);
        }
    }
    println!(
        "usage parser, native: {batches} batches x {per_batch} bodies per case, interleaved, medians"
    );
    println!(
        "{:<28}{:>10}{:>9}{:>13}{:>12}{:>10}",
        "body", "bytes", "events", "µs / body", "ns / event", "ns / byte"
    );
    for (case, times) in cases.iter().zip(samples) {
        let per_body = median(times);
        let per_event = if case.events > 0 {
            format!("{:.0}", per_body / case.events as f64)
        } else {
            "-".to_owned()
        };
        let events = if case.events > 0 {
            case.events.to_string()
        } else {
            "-".to_owned()
        };
        println!(
            "{:<28}{:>10}{:>9}{:>13.1}{:>12}{:>10.2}",
            case.name,
            case.decoded,
            events,
            per_body / 1000.0,
            per_event,
            per_body / case.decoded as f64
        );
    }
    ExitCode::SUCCESS
}
