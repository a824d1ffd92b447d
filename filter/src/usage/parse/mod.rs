//! Pure, incremental readers of the token usage in Anthropic Messages API responses.
//!
//! A [`UsageParser`] watches one response body pass by ([`UsageParser::feed`] per
//! chunk, at any byte boundaries) and says at the end what it read
//! ([`UsageParser::finish`] → [`Observed`]). It never fails and never panics: input it
//! cannot read ends as an [`Unparsed`] reason next to whatever counts it read before.
//! No proxy-wasm, no I/O, no clock.
//!
//! # What is read
//! - JSON ([`BodyKind::Json`]): the root object's `model`, `stop_reason` and `usage`
//!   counts (`input_tokens`, `output_tokens`, `cache_creation_input_tokens`,
//!   `cache_read_input_tokens`; others such as `service_tier` are ignored). A root `type`
//!   of `error` is [`Unparsed::NoUsage`]; a body with only a root `input_tokens` (a
//!   `count_tokens` answer) reads as that many input tokens.
//! - Server-sent events ([`BodyKind::EventStream`]): `message_start` (`message.model`,
//!   `message.usage.*`), `message_delta` (`usage.*`, each present count replacing the one
//!   before; `delta.stop_reason`), `message_stop` (the end) and `error` (the end, without
//!   a stop reason, counts so far kept). Other events (`ping`, `content_block_*`) are
//!   stepped over.
//! - `gzip` and `deflate` bodies are decoded as they pass ([`Encoding`]).
//!
//! # Cost
//! Time is linear in the body (each byte is looked at a bounded number of times;
//! decoding is linear). In an event stream only the data of events whose name leaves their
//! meaning open (unnamed) or that are kept goes through the JSON scanner; the data of every
//! other named event (`content_block_delta`, `ping`, ...: nearly all of a stream) is stepped
//! over with a search for the line end, 8 bytes at a time. `bench/usage-parse` (run by
//! `make bench`) measures it: 0.2–0.4 µs per event of a recorded-shape stream natively.
//! Memory per response is fixed and does not grow with the body or
//! with `max_event_bytes`: no event and no part of a JSON body is held. The JSON scanner
//! follows only the objects on known paths (at most 3 deep) and steps over every other
//! value with a bracket counter, so a 100 MB `content` array costs nothing. What is held:
//! captured `type`/`model`/`stop_reason` strings up to 256 bytes each (for the document
//! being read and for the stream's totals), one 256-byte string buffer, an event name up
//! to 32 bytes and a few integers: under 2 KiB. `gzip`/`deflate` add the inflate state
//! (under 6 KiB) and its 32 KiB window.
//!
//! `max_event_bytes` ([`Limits`]) still caps the data of a kept event (`message_start`,
//! `message_delta`): a larger one ends reading with [`Unparsed::TooLarge`], since no real
//! usage event comes near it.
//!
//! # Layout
//! - `json`: the streaming JSON scanner.
//! - `sse`: event-stream framing over the scanner.
//! - `inflate`: gzip/deflate framing and the inflater (RFC 1951) under it.

mod inflate;
mod json;
mod sse;

#[cfg(test)]
mod tests;

use inflate::{Format, Inflater};
use json::Scanner;
use sse::EventStream;

/// How the response body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// One JSON document (`application/json`).
    Json,
    /// Server-sent events (`text/event-stream`).
    EventStream,
}

impl BodyKind {
    /// The framing a `content-type` value names, if it is one the parser reads.
    pub fn from_content_type(value: &[u8]) -> Option<BodyKind> {
        // The API's own value first, as it is sent: one comparison settles almost every response.
        if value == b"application/json" {
            return Some(BodyKind::Json);
        }
        // Bytes compared in place, without a lower-cased copy or a UTF-8 check: this runs on every
        // observed response.
        let essence = value
            .split(|&byte| byte == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        let json_suffix = essence
            .len()
            .checked_sub(b"+json".len())
            .and_then(|start| essence.get(start..))
            .is_some_and(|suffix| suffix.eq_ignore_ascii_case(b"+json"));
        if essence.eq_ignore_ascii_case(b"text/event-stream") {
            Some(BodyKind::EventStream)
        } else if essence.eq_ignore_ascii_case(b"application/json") || json_suffix {
            Some(BodyKind::Json)
        } else {
            None
        }
    }
}

/// The response's content-encoding as far as the parser can read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// No content-encoding (or `identity`).
    Identity,
    /// `gzip` (or `x-gzip`).
    Gzip,
    /// `deflate`: zlib-wrapped, or raw deflate as some servers send it.
    Deflate,
    /// Anything else (`br`, `zstd`, several codings): not decoded.
    Unsupported,
}

impl Encoding {
    /// The encoding a `content-encoding` value names (absent: pass `""`).
    pub fn from_content_encoding(value: &[u8]) -> Encoding {
        let value = value.trim_ascii();
        let is = |name: &[u8]| value.eq_ignore_ascii_case(name);
        if value.is_empty() || is(b"identity") {
            Encoding::Identity
        } else if is(b"gzip") || is(b"x-gzip") {
            Encoding::Gzip
        } else if is(b"deflate") {
            Encoding::Deflate
        } else {
            Encoding::Unsupported
        }
    }
}

/// Memory bounds for one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest data of a kept event (`message_start`, `message_delta`), in bytes.
    pub max_event_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_bytes: 65_536,
        }
    }
}

/// Token counts of one response (absent counts are 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenCounts {
    /// `input_tokens`.
    pub input: u64,
    /// `output_tokens`.
    pub output: u64,
    /// `cache_creation_input_tokens`.
    pub cache_creation_input: u64,
    /// `cache_read_input_tokens`.
    pub cache_read_input: u64,
}

impl TokenCounts {
    fn from_counts(
        [input, output, cache_creation_input, cache_read_input]: [Option<u64>; 4],
    ) -> Self {
        TokenCounts {
            input: input.unwrap_or(0),
            output: output.unwrap_or(0),
            cache_creation_input: cache_creation_input.unwrap_or(0),
            cache_read_input: cache_read_input.unwrap_or(0),
        }
    }
}

/// Why a response's usage could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unparsed {
    /// The content-encoding is not one the parser decodes.
    Encoding,
    /// A kept event's data is over `max_event_bytes`.
    TooLarge,
    /// The body is not the JSON or event stream it should be.
    Malformed,
    /// The body ended early (counts read before are kept).
    Truncated,
    /// The body is complete and carries no usage (an error answer, for one).
    NoUsage,
    /// The gzip/deflate data is corrupt.
    Decompression,
}

impl Unparsed {
    /// A short lower-case name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Unparsed::Encoding => "encoding",
            Unparsed::TooLarge => "too_large",
            Unparsed::Malformed => "malformed",
            Unparsed::Truncated => "truncated",
            Unparsed::NoUsage => "no_usage",
            Unparsed::Decompression => "decompression",
        }
    }
}

/// What was read from one response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// The model the response names (`model`, or `message.model` of `message_start`).
    pub model: Option<String>,
    /// Token counts read (also those read before an [`Unparsed`] reason arose).
    pub tokens: TokenCounts,
    /// The last stop reason read; `None` when absent, null, or after an `error` event.
    pub stop_reason: Option<String>,
    /// Why the usage is not (fully) known; `None` when it is.
    pub unparsed: Option<Unparsed>,
}

/// The decoded-body reader.
#[derive(Debug)]
enum Body {
    Json { scanner: Scanner },
    EventStream(EventStream),
}

impl Body {
    fn feed(&mut self, bytes: &[u8]) {
        match self {
            Body::Json { scanner } => scanner.feed(bytes),
            Body::EventStream(stream) => stream.feed(bytes),
        }
    }

    /// Reading stopped for good: more input changes nothing.
    fn stopped(&self) -> bool {
        match self {
            Body::Json { scanner } => scanner.status() == json::Status::Failed,
            Body::EventStream(stream) => stream.stopped.is_some(),
        }
    }

    fn finish(self, complete: bool) -> Observed {
        match self {
            Body::Json { mut scanner } => {
                scanner.end();
                let status = scanner.status();
                let c = scanner.captured;
                let [input, output, cache_creation, cache_read, root_input] = c.counts;
                let mut tokens =
                    TokenCounts::from_counts([input, output, cache_creation, cache_read]);
                let unparsed = match status {
                    json::Status::Empty if complete => Some(Unparsed::NoUsage),
                    json::Status::Empty | json::Status::Partial => Some(Unparsed::Truncated),
                    json::Status::Failed => Some(Unparsed::Malformed),
                    json::Status::Complete if c.ty.as_deref() == Some("error") => {
                        Some(Unparsed::NoUsage)
                    }
                    json::Status::Complete if c.saw_usage => None,
                    json::Status::Complete => match root_input {
                        Some(count) => {
                            tokens.input = count;
                            None
                        }
                        None => Some(Unparsed::NoUsage),
                    },
                };
                Observed {
                    model: c.model,
                    tokens,
                    stop_reason: c.stop_reason,
                    unparsed,
                }
            }
            Body::EventStream(stream) => {
                let unparsed = stream.verdict();
                let totals = stream.totals;
                Observed {
                    model: totals.model,
                    tokens: TokenCounts::from_counts(totals.counts),
                    stop_reason: totals.stop_reason,
                    unparsed,
                }
            }
        }
    }
}

/// The content decoding in front of the body reader.
#[derive(Debug)]
enum Decoder {
    Identity,
    Inflate(Box<Inflater>),
    /// Nothing is decoded (unsupported encoding).
    Refused,
    /// Decoding failed; nothing more is read.
    Corrupt,
}

/// Incremental reader of one response body; memory bounded by `Limits` (+ the inflate window for gzip).
#[derive(Debug)]
pub struct UsageParser {
    decoder: Decoder,
    body: Body,
}

impl UsageParser {
    /// A reader for a body of this framing and content-encoding.
    pub fn new(kind: BodyKind, encoding: Encoding, limits: Limits) -> Self {
        let decoder = match encoding {
            Encoding::Identity => Decoder::Identity,
            Encoding::Gzip => Decoder::Inflate(Box::new(Inflater::new(Format::Gzip))),
            Encoding::Deflate => Decoder::Inflate(Box::new(Inflater::new(Format::Deflate))),
            Encoding::Unsupported => Decoder::Refused,
        };
        let body = match kind {
            BodyKind::Json => Body::Json {
                scanner: Scanner::new(),
            },
            BodyKind::EventStream => Body::EventStream(EventStream::new(limits.max_event_bytes)),
        };
        UsageParser { decoder, body }
    }

    /// Whether reading has stopped for good (an encoding it does not decode, corrupt
    /// compressed data, a malformed or oversized body): more input changes nothing, so the
    /// host need not copy it out.
    pub fn done(&self) -> bool {
        matches!(self.decoder, Decoder::Refused | Decoder::Corrupt) || self.body.stopped()
    }

    /// Feeds the next body bytes as they pass; never fails, never panics, linear in input.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.body.stopped() {
            return;
        }
        match &mut self.decoder {
            Decoder::Identity => self.body.feed(chunk),
            Decoder::Inflate(inflater) => {
                let body = &mut self.body;
                let mut out = |decoded: &[u8]| {
                    body.feed(decoded);
                    !body.stopped()
                };
                if inflater.feed(chunk, &mut out).is_err() {
                    self.decoder = Decoder::Corrupt;
                }
            }
            Decoder::Refused | Decoder::Corrupt => {}
        }
    }

    /// The end of the body (end_of_stream, or the stream ended early: `complete == false`).
    ///
    /// Whether the body was cut short is read from the body itself (a JSON document not
    /// closed, no `message_stop` or `error` event, compressed data not ended); `complete`
    /// only tells an empty body (no usage) from one cut before its first byte.
    pub fn finish(self, complete: bool) -> Observed {
        match self.decoder {
            Decoder::Refused => Observed {
                unparsed: Some(Unparsed::Encoding),
                ..Observed::default()
            },
            Decoder::Corrupt => Observed {
                unparsed: Some(Unparsed::Decompression),
                ..self.body.finish(complete)
            },
            Decoder::Inflate(inflater) => {
                let decoded_all = inflater.at_end();
                let stopped = self.body.stopped();
                let mut observed = self.body.finish(complete && decoded_all);
                // Compressed data cut short, behind a body that reads as whole.
                if !decoded_all && !stopped && observed.unparsed.is_none() {
                    observed.unparsed = Some(Unparsed::Truncated);
                }
                observed
            }
            Decoder::Identity => self.body.finish(complete),
        }
    }
}

impl UsageParser {
    /// What [`UsageParser::done`] says of a reader of this encoding fed nothing: done at once only
    /// for an encoding it does not decode.
    pub fn done_unread(encoding: Encoding) -> bool {
        encoding == Encoding::Unsupported
    }

    /// What [`UsageParser::finish`] says of a body of this framing and encoding of which no byte
    /// was fed, without building the reader: a response without a body builds none.
    pub fn finish_unread(kind: BodyKind, encoding: Encoding, complete: bool) -> Observed {
        let unparsed = match (encoding, kind) {
            (Encoding::Unsupported, _) => Unparsed::Encoding,
            // An empty body that ended, compressed or not, is an empty document: complete, and it
            // says nothing. An event stream is cut short until its end event.
            (_, BodyKind::Json) if complete => Unparsed::NoUsage,
            _ => Unparsed::Truncated,
        };
        Observed {
            unparsed: Some(unparsed),
            ..Observed::default()
        }
    }
}

#[cfg(test)]
impl UsageParser {
    /// Heap bytes the parser holds now (tests check the bound the module docs state).
    fn held_bytes(&self) -> usize {
        let body = match &self.body {
            Body::Json { scanner } => scanner.held_bytes(),
            Body::EventStream(stream) => stream.held_bytes(),
        };
        let decoder = match &self.decoder {
            Decoder::Inflate(inflater) => inflater.held_bytes(),
            _ => 0,
        };
        body + decoder
    }
}
