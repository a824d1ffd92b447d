//! The usage record of one request: its log line and the metric updates it accounts for.
//!
//! The log line is `usage ` followed by one JSON object whose keys keep the documented order; the
//! time is written by hand from the host clock (RFC 3339, UTC, milliseconds). It never holds a prompt,
//! response text or credential: only the caller, the model, counts, status and timings.

use crate::json;
use crate::metrics::{
    MetricKind, USAGE_REQUESTS_TOTAL, USAGE_TIME_TO_FIRST_BYTE_MILLISECONDS, USAGE_TOKENS_TOTAL,
    USAGE_UNPARSED_TOTAL,
};
use crate::usage::labels::tagged;
use crate::usage::parse::TokenCounts;

/// Longest caller, model or stop reason written to the log, in bytes; longer values are cut.
pub const MAX_LOG_VALUE_BYTES: usize = 256;

/// Longest request id written to the log, in bytes.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// What one observed request used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRecord {
    /// When the request arrived, milliseconds since the Unix epoch (host clock).
    pub time_ms: u64,
    /// The request's `x-request-id`, if it had one.
    pub request_id: Option<String>,
    /// The caller identity as resolved (not capped); `None` when absent, written and counted as
    /// `unknown`.
    pub caller: Option<String>,
    /// The model the response names; `None` when it names none, written and counted as `unknown`.
    pub model: Option<String>,
    /// The response status; 0 when no response arrived.
    pub status: u16,
    /// Token counts read from the response (0 where absent).
    pub tokens: TokenCounts,
    /// Why generation stopped, when the response says so.
    pub stop_reason: Option<String>,
    /// From the request's arrival to the end of the stream, in milliseconds.
    pub duration_ms: u64,
    /// From the request's arrival to the response headers, in milliseconds; `None` without a response.
    pub ttfb_ms: Option<u64>,
    /// Whether the response was an event stream.
    pub streamed: bool,
    /// Why the response's usage could not be read (a short name such as `truncated`, `encoding`,
    /// `content_type` or `no_response`); `None` when it was read.
    pub unparsed: Option<&'static str>,
}

/// What to do with one metric: define it (once) under `name`, then add to it or record a sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricUpdate {
    /// The tagged metric name.
    pub name: String,
    /// Counter (the value is added) or histogram (the value is a sample).
    pub kind: MetricKind,
    /// The increment or the sample.
    pub value: u64,
}

/// The status class label of a status: `1xx` to `5xx`, `unknown` otherwise (no response).
pub fn status_class(status: u16) -> &'static str {
    StatusClass::of(status).label()
}

/// What every usage line starts with, up to its time.
const HEAD_START: &[u8] = b"usage {\"time\":\"";
/// What follows the time in every usage line, up to the request id.
const HEAD_END: &[u8] = b"\",\"request_id\":";
/// The length of a line's head (its start, time and end) while the year has four digits.
const HEAD_LEN: usize = HEAD_START.len() + STAMP_LEN + HEAD_END.len();
/// The length of an RFC 3339 time with milliseconds and a four-digit year.
const STAMP_LEN: usize = 24;
/// Where a head holds the hundreds digit of the milliseconds (`.123Z` ends the time).
const HEAD_MILLIS_AT: usize = HEAD_START.len() + STAMP_LEN - 4;

/// Writes a VM's usage lines, one at a time, into one buffer kept from request to request.
///
/// The head of a line (up to its request id) has a time that is all but its milliseconds the same
/// for every request of one second: a line of the same second as the one before keeps that head
/// where it is in the buffer and rewrites three digits, instead of working out the date and time
/// again.
#[derive(Debug)]
pub struct LineWriter {
    /// The last line; nothing else writes to it, so its first [`HEAD_LEN`] bytes are the head of
    /// the line of `second`.
    line: Vec<u8>,
    /// The second since the Unix epoch whose head starts `line`; `u64::MAX`, never a second of a
    /// `u64` of milliseconds, while it holds none.
    second: u64,
}

impl Default for LineWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl LineWriter {
    /// A writer with room for a usual line and no head yet.
    pub fn new() -> Self {
        Self {
            line: Vec::with_capacity(512),
            second: u64::MAX,
        }
    }

    /// The log line of `record` ([`UsageRecord::log_line`]) as bytes: every piece written is text or
    /// ASCII, so the line goes to the host without a UTF-8 check. Valid until the next line.
    pub fn write(&mut self, record: &UsageRecord) -> &[u8] {
        let ms = record.time_ms;
        if ms / 1000 == self.second {
            self.line.truncate(HEAD_LEN);
            let millis = ms % 1000;
            let digits = [
                b'0' + (millis / 100) as u8,
                b'0' + (millis / 10 % 10) as u8,
                b'0' + (millis % 10) as u8,
            ];
            if let Some(slot) = self.line.get_mut(HEAD_MILLIS_AT..HEAD_MILLIS_AT + 3) {
                slot.copy_from_slice(&digits);
            }
        } else {
            self.write_head(ms);
        }
        record.write_after_head(&mut self.line);
        &self.line
    }

    /// Writes the head of a line of time `ms` into `line`, which it empties first, and keeps it for
    /// the rest of its second unless the year has more than four digits (the head is then longer
    /// than [`HEAD_LEN`]). Out of line: it runs once a second at most.
    #[inline(never)]
    fn write_head(&mut self, ms: u64) {
        self.line.clear();
        self.line.extend_from_slice(HEAD_START);
        push_rfc3339_millis(&mut self.line, ms);
        self.line.extend_from_slice(HEAD_END);
        self.second = if self.line.len() == HEAD_LEN {
            ms / 1000
        } else {
            u64::MAX
        };
    }
}

impl UsageRecord {
    /// The log line: `usage {...}`.
    pub fn log_line(&self) -> String {
        let mut writer = LineWriter::new();
        // Every piece written is text or ASCII: the check never replaces anything.
        String::from_utf8_lossy(writer.write(self)).into_owned()
    }

    /// Writes the log line after its head (the time and the `request_id` key), into `line`.
    fn write_after_head(&self, line: &mut Vec<u8>) {
        let tokens = &self.tokens;
        // Member by member with each key a constant, separator included: a constant copy is a few
        // stores, and this line is written for every observed request.
        optional_text(line, self.request_id.as_deref());
        line.extend_from_slice(b",\"caller\":");
        label_text(line, self.caller.as_deref());
        line.extend_from_slice(b",\"model\":");
        label_text(line, self.model.as_deref());
        write_status(line, self.status);
        line.extend_from_slice(b",\"input_tokens\":");
        write_number(line, tokens.input);
        line.extend_from_slice(b",\"output_tokens\":");
        write_number(line, tokens.output);
        line.extend_from_slice(b",\"cache_creation_input_tokens\":");
        write_number(line, tokens.cache_creation_input);
        line.extend_from_slice(b",\"cache_read_input_tokens\":");
        write_number(line, tokens.cache_read_input);
        line.extend_from_slice(b",\"stop_reason\":");
        optional_text(line, self.stop_reason.as_deref());
        line.extend_from_slice(b",\"duration_ms\":");
        write_number(line, self.duration_ms);
        line.extend_from_slice(b",\"ttfb_ms\":");
        match self.ttfb_ms {
            Some(ttfb) => write_number(line, ttfb),
            None => line.extend_from_slice(b"null"),
        }
        write_tail(line, self.streamed, self.unparsed.is_none());
    }

    /// The metric updates this record accounts for, given the caller and model labels after the caps:
    /// one request by status class, each non-zero token count by type, the time to first byte by model,
    /// and an unparsed response when a successful (2xx) response's usage could not be read.
    pub fn metric_updates(&self, caller: &str, model: &str) -> Vec<MetricUpdate> {
        let mut updates = Vec::new();
        self.for_each_sample(|series, value| {
            updates.push(MetricUpdate {
                name: series.name(caller, model),
                kind: series.kind(),
                value,
            });
        });
        updates
    }

    /// Hands `sample` each series [`UsageRecord::metric_updates`] updates, in the same order, with its
    /// value; a series is named (and its name formatted) only when a VM first defines it. A call per
    /// sample rather than an iterator: a chain of iterators cost a state check per step.
    pub fn for_each_sample(&self, mut sample: impl FnMut(UsageSeries, u64)) {
        sample(UsageSeries::Requests(StatusClass::of(self.status)), 1);
        let tokens = [
            (TokenType::Input, self.tokens.input),
            (TokenType::Output, self.tokens.output),
            (TokenType::CacheRead, self.tokens.cache_read_input),
            (TokenType::CacheCreation, self.tokens.cache_creation_input),
        ];
        for (kind, value) in tokens {
            if value > 0 {
                sample(UsageSeries::Tokens(kind), value);
            }
        }
        if let Some(ttfb) = self.ttfb_ms {
            sample(UsageSeries::TimeToFirstByte, ttfb);
        }
        if self.unparsed.is_some() && (200..300).contains(&self.status) {
            sample(UsageSeries::Unparsed, 1);
        }
    }
}

/// A status class label: `1xx` to `5xx`, or `unknown` (no response).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusClass {
    /// `1xx`.
    Informational,
    /// `2xx`.
    Success,
    /// `3xx`.
    Redirection,
    /// `4xx`.
    ClientError,
    /// `5xx`.
    ServerError,
    /// No response, or a status outside 100 to 599.
    Unknown,
}

impl StatusClass {
    /// Every class, in [`StatusClass::index`] order.
    pub const ALL: [StatusClass; 6] = [
        StatusClass::Informational,
        StatusClass::Success,
        StatusClass::Redirection,
        StatusClass::ClientError,
        StatusClass::ServerError,
        StatusClass::Unknown,
    ];

    /// The class of a status.
    pub fn of(status: u16) -> Self {
        match status {
            100..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            500..=599 => StatusClass::ServerError,
            _ => StatusClass::Unknown,
        }
    }

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
            StatusClass::Unknown => "unknown",
        }
    }
}

/// A token type label of the tokens counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    /// `input`.
    Input,
    /// `output`.
    Output,
    /// `cache_read`.
    CacheRead,
    /// `cache_creation`.
    CacheCreation,
}

impl TokenType {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            TokenType::Input => "input",
            TokenType::Output => "output",
            TokenType::CacheRead => "cache_read",
            TokenType::CacheCreation => "cache_creation",
        }
    }
}

/// One usage metric series for a caller and model label: which base metric, and its own labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageSeries {
    /// Observed requests of a status class.
    Requests(StatusClass),
    /// Tokens of a type.
    Tokens(TokenType),
    /// Time to first byte (tagged by model only).
    TimeToFirstByte,
    /// Unreadable successful responses (untagged).
    Unparsed,
}

impl UsageSeries {
    /// How many distinct series one caller and model label pair has: [`UsageSeries::index`] is below it.
    pub const COUNT: usize = StatusClass::ALL.len() + 4 + 2;

    /// A dense index of the series among those of one label pair, for a table of metric ids.
    pub fn index(self) -> usize {
        match self {
            UsageSeries::Requests(class) => class as usize,
            UsageSeries::Tokens(kind) => StatusClass::ALL.len() + kind as usize,
            UsageSeries::TimeToFirstByte => StatusClass::ALL.len() + 4,
            UsageSeries::Unparsed => StatusClass::ALL.len() + 5,
        }
    }

    /// The metric kind.
    pub fn kind(self) -> MetricKind {
        match self {
            UsageSeries::TimeToFirstByte => MetricKind::Histogram,
            UsageSeries::Requests(_) | UsageSeries::Tokens(_) | UsageSeries::Unparsed => {
                MetricKind::Counter
            }
        }
    }

    /// The tagged metric name for already capped and sanitised labels.
    pub fn name(self, caller: &str, model: &str) -> String {
        match self {
            UsageSeries::Requests(class) => tagged(
                USAGE_REQUESTS_TOTAL,
                &[
                    ("caller", caller),
                    ("model", model),
                    ("status_class", class.label()),
                ],
            ),
            UsageSeries::Tokens(kind) => tagged(
                USAGE_TOKENS_TOTAL,
                &[("caller", caller), ("model", model), ("type", kind.label())],
            ),
            UsageSeries::TimeToFirstByte => {
                tagged(USAGE_TIME_TO_FIRST_BYTE_MILLISECONDS, &[("model", model)])
            }
            UsageSeries::Unparsed => USAGE_UNPARSED_TOTAL.to_owned(),
        }
    }
}

/// `bytes` as text for the log: invalid UTF-8 replaced, cut at `max` bytes on a character boundary.
pub fn log_text(bytes: &[u8], max: usize) -> String {
    cut_text(String::from_utf8_lossy(bytes).into_owned(), max)
}

/// [`log_text`] of text that is already a `String`: cut in place, without a copy.
#[inline(never)]
pub fn cut_text(mut text: String, max: usize) -> String {
    text.truncate(text.floor_char_boundary(max));
    text
}

/// A JSON string, or `"unknown"`: the caller or model as written when absent.
fn label_text(line: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => json::write_string(line, text),
        // `UNKNOWN` as JSON, written as one constant: escaping it on every request cost more.
        None => line.extend_from_slice(b"\"unknown\""),
    }
}

/// The status member, key included: a status of three digits, as every response has, is one
/// piece of constant length.
fn write_status(line: &mut Vec<u8>, status: u16) {
    if (100..=999).contains(&status) {
        let mut piece = *b",\"status\":000";
        let [.., hundreds, tens, ones] = &mut piece;
        *hundreds += (status / 100) as u8;
        *tens += (status / 10 % 10) as u8;
        *ones += (status % 10) as u8;
        line.extend_from_slice(&piece);
    } else {
        line.extend_from_slice(b",\"status\":");
        write_number(line, u64::from(status));
    }
}

/// The longest end of a line: see [`TAILS`].
const TAIL_LEN: usize = 33;

/// The end of a line after the time to first byte, by `streamed` (twice) plus `parsed`: the two
/// flags and the closing brace. Padded to one length, so that each is one copy of a constant
/// length, cut back to its own: texts of different lengths would be a copy of a run-time length, a
/// call to the host's `memory.copy`.
const TAILS: [&[u8; TAIL_LEN]; 4] = [
    b",\"streamed\":false,\"parsed\":false}",
    b",\"streamed\":false,\"parsed\":true}\0",
    b",\"streamed\":true,\"parsed\":false}\0",
    b",\"streamed\":true,\"parsed\":true}\0\0",
];

/// Appends the [`TAILS`] entry of `streamed` and `parsed`; each `true` is a byte shorter.
fn write_tail(line: &mut Vec<u8>, streamed: bool, parsed: bool) {
    let end = line.len() + TAIL_LEN - usize::from(streamed) - usize::from(parsed);
    if let Some(tail) = TAILS.get(usize::from(streamed) * 2 + usize::from(parsed)) {
        line.extend_from_slice(*tail);
    }
    line.truncate(end);
}

/// `number` as [`json::write_u64`] writes it, a single digit (a count of zero, most often) without
/// a call: inlined, a call per number cost more than the writing.
#[inline(always)]
fn write_number(line: &mut Vec<u8>, number: u64) {
    if number < 10 {
        line.push(b'0' + number as u8);
    } else {
        write_wider_number(line, number);
    }
}

/// [`write_number`] past one digit, three digits written here from the table. Out of line:
/// inlined at each number it made the module a kilobyte larger.
#[inline(never)]
fn write_wider_number(line: &mut Vec<u8>, number: u64) {
    match (number, json::two_digits(number % 100)) {
        (100..=999, Some(&[tens, ones])) => {
            line.extend_from_slice(&[b'0' + (number / 100) as u8, tens, ones]);
        }
        _ => json::write_u64(line, number),
    }
}

/// A JSON string, or `null`.
fn optional_text(line: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => json::write_string(line, text),
        None => line.extend_from_slice(b"null"),
    }
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC with milliseconds: `2026-12-03T09:08:29.123Z`.
pub fn rfc3339_millis(ms: u64) -> String {
    let mut text = Vec::with_capacity(STAMP_LEN);
    push_rfc3339_millis(&mut text, ms);
    String::from_utf8_lossy(&text).into_owned()
}

/// Appends [`rfc3339_millis`] of `ms` to `text`.
fn push_rfc3339_millis(text: &mut Vec<u8>, ms: u64) {
    let (stamp, century) = stamp(ms);
    push_stamp(text, &stamp, century);
}

/// Appends a [`stamp`] and its century as RFC 3339.
fn push_stamp(text: &mut Vec<u8>, stamp: &[u8; STAMP_LEN], century: u64) {
    if century < 100 {
        text.extend_from_slice(stamp);
    } else {
        // Past the template's four digits (the year 10000 is 253 billion seconds away).
        json::write_u64(text, century);
        text.extend_from_slice(stamp.get(2..).unwrap_or_default());
    }
}

/// [`rfc3339_millis`] of `ms` in a fixed 24-byte template, and the century: the template holds the
/// whole year while the century is below 100, else only its last two digits.
fn stamp(ms: u64) -> ([u8; STAMP_LEN], u64) {
    let days = ms / 86_400_000;
    let of_day = ms % 86_400_000;
    let (year, month, day) = civil_date(days);
    let seconds = of_day / 1000;
    let minutes = seconds / 60;
    let century = year / 100;
    // Filled in place, two digits at a time from a table.
    let mut stamp = *b"0000-00-00T00:00:00.000Z";
    let pairs = [
        (0, century % 100),
        (2, year % 100),
        (5, month),
        (8, day),
        (11, minutes / 60),
        (14, minutes % 60),
        (17, seconds % 60),
        (20, of_day % 1000 / 10),
    ];
    for (at, value) in pairs {
        if let (Some(slot), Some(digits)) = (stamp.get_mut(at..at + 2), json::two_digits(value)) {
            slot.copy_from_slice(digits);
        }
    }
    if let Some(last) = stamp.get_mut(22) {
        *last = b'0' + (of_day % 10) as u8;
    }
    (stamp, century)
}

/// The proleptic Gregorian date `days` after 1970-01-01: the date is counted in 400-year eras
/// (146,097 days each) from 0000-03-01, so that the leap day falls at the end of each counted year.
fn civil_date(days: u64) -> (u64, u64, u64) {
    // 719,468 days from 0000-03-01 to 1970-01-01.
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March: 0 = March ... 11 = February.
    let march_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_month + 2) / 5 + 1;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn record() -> UsageRecord {
        UsageRecord {
            time_ms: 1_764_752_909_123,
            request_id: Some("req-1".into()),
            caller: Some("alice@example.com".into()),
            model: Some("claude-sonnet-4-5".into()),
            status: 200,
            tokens: TokenCounts {
                input: 12,
                output: 34,
                cache_creation_input: 0,
                cache_read_input: 5,
            },
            stop_reason: Some("end_turn".into()),
            duration_ms: 1500,
            ttfb_ms: Some(250),
            streamed: true,
            unparsed: None,
        }
    }

    #[test]
    fn rfc3339_is_exact_across_epochs_leap_days_and_centuries() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_millis(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(
            rfc3339_millis(1_709_251_199_001),
            "2024-02-29T23:59:59.001Z"
        );
        assert_eq!(
            rfc3339_millis(1_764_752_909_123),
            "2025-12-03T09:08:29.123Z"
        );
        assert_eq!(
            rfc3339_millis(4_107_542_400_000),
            "2100-03-01T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339_millis(253_402_300_799_999),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(
            rfc3339_millis(253_402_300_800_000),
            "10000-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn civil_dates_agree_with_day_by_day_counting() {
        let month_days = |year: u64, month: u64| match month {
            2 if (year.is_multiple_of(4) && !year.is_multiple_of(100))
                || year.is_multiple_of(400) =>
            {
                29
            }
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let (mut year, mut month, mut day) = (1970, 1, 1);
        for days in 0..200_000 {
            assert_eq!(civil_date(days), (year, month, day), "{days}");
            day += 1;
            if day > month_days(year, month) {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
    }

    #[test]
    fn the_log_line_has_every_key_in_order() {
        assert_eq!(
            record().log_line(),
            r#"usage {"time":"2025-12-03T09:08:29.123Z","request_id":"req-1","caller":"alice@example.com","model":"claude-sonnet-4-5","status":200,"input_tokens":12,"output_tokens":34,"cache_creation_input_tokens":0,"cache_read_input_tokens":5,"stop_reason":"end_turn","duration_ms":1500,"ttfb_ms":250,"streamed":true,"parsed":true}"#
        );
        let bare = UsageRecord {
            request_id: None,
            stop_reason: None,
            ttfb_ms: None,
            caller: Some("a\"b\n".into()),
            ..record()
        };
        let line = bare.log_line();
        let json: serde_json::Value =
            serde_json::from_str(line.strip_prefix("usage ").unwrap()).unwrap();
        assert_eq!(json["request_id"], serde_json::Value::Null);
        assert_eq!(json["stop_reason"], serde_json::Value::Null);
        assert_eq!(json["ttfb_ms"], serde_json::Value::Null);
        assert_eq!(json["caller"], "a\"b\n");
        let unknown = UsageRecord {
            caller: None,
            model: None,
            streamed: false,
            unparsed: Some("truncated"),
            ..record()
        };
        assert!(
            unknown
                .log_line()
                .contains(r#""caller":"unknown","model":"unknown","status":200,"#)
        );
        assert!(
            unknown
                .log_line()
                .ends_with(r#","ttfb_ms":250,"streamed":false,"parsed":false}"#)
        );
    }

    #[test]
    fn a_writer_reusing_its_head_writes_what_a_fresh_one_writes() {
        let mut writer = LineWriter::new();
        // The same second again, the next, an earlier one, past the year 9999 and back.
        for time_ms in [
            1_764_752_909_123,
            1_764_752_909_000,
            1_764_752_909_999,
            1_764_752_910_007,
            1_764_752_909_450,
            951_868_799_999,
            253_402_300_800_042,
            253_402_300_800_043,
            1_764_752_909_123,
            0,
        ] {
            let record = UsageRecord {
                time_ms,
                ..record()
            };
            let fresh = LineWriter::new().write(&record).to_vec();
            assert_eq!(writer.write(&record), &fresh[..], "{time_ms}");
            let time = format!(
                r#"usage {{"time":"{}","request_id":"#,
                rfc3339_millis(time_ms)
            );
            assert!(fresh.starts_with(time.as_bytes()), "{time_ms}");
        }
    }

    #[test]
    fn every_status_and_pair_of_flags_is_written_as_json() {
        for status in [0, 5, 99, 100, 200, 529, 999, 1000, u16::MAX] {
            for streamed in [false, true] {
                for unparsed in [None, Some("truncated")] {
                    let line = UsageRecord {
                        status,
                        streamed,
                        unparsed,
                        ..record()
                    }
                    .log_line();
                    let json: serde_json::Value =
                        serde_json::from_str(line.strip_prefix("usage ").unwrap()).unwrap();
                    assert_eq!(json["status"], status, "{line}");
                    assert_eq!(json["streamed"], streamed, "{line}");
                    assert_eq!(json["parsed"], unparsed.is_none(), "{line}");
                    let tail = format!(
                        r#","streamed":{streamed},"parsed":{}}}"#,
                        unparsed.is_none()
                    );
                    assert!(line.ends_with(&tail), "{line}");
                    assert!(line.contains(&format!(r#","status":{status},"#)), "{line}");
                }
            }
        }
    }

    #[test]
    fn metric_updates_name_every_label_and_skip_zero_counts() {
        let updates = record().metric_updates("alice@example.com", "claude-sonnet-4-5");
        let rendered: Vec<(String, MetricKind, u64)> = updates
            .into_iter()
            .map(|update| (update.name, update.kind, update.value))
            .collect();
        let counter = MetricKind::Counter;
        assert_eq!(
            rendered,
            vec![
                ("credential_filter_usage_requests_total;caller=alice@example.com;model=claude-sonnet-4-5;status_class=2xx".to_owned(), counter, 1),
                ("credential_filter_usage_tokens_total;caller=alice@example.com;model=claude-sonnet-4-5;type=input".to_owned(), counter, 12),
                ("credential_filter_usage_tokens_total;caller=alice@example.com;model=claude-sonnet-4-5;type=output".to_owned(), counter, 34),
                ("credential_filter_usage_tokens_total;caller=alice@example.com;model=claude-sonnet-4-5;type=cache_read".to_owned(), counter, 5),
                ("credential_filter_usage_time_to_first_byte_milliseconds;model=claude-sonnet-4-5".to_owned(), MetricKind::Histogram, 250),
            ]
        );
    }

    #[test]
    fn unparsed_counts_only_successful_responses() {
        let unparsed = UsageRecord {
            unparsed: Some("truncated"),
            ..record()
        };
        let names = |record: &UsageRecord| {
            record
                .metric_updates("c", "m")
                .into_iter()
                .map(|update| update.name)
                .collect::<Vec<_>>()
        };
        assert!(names(&unparsed).contains(&USAGE_UNPARSED_TOTAL.to_owned()));
        let error = UsageRecord {
            unparsed: Some("truncated"),
            status: 529,
            tokens: TokenCounts::default(),
            ..record()
        };
        let error_names = names(&error);
        assert!(!error_names.contains(&USAGE_UNPARSED_TOTAL.to_owned()));
        assert_eq!(
            error_names[0],
            "credential_filter_usage_requests_total;caller=c;model=m;status_class=5xx"
        );
        assert_eq!(error_names.len(), 2, "{error_names:?}");
    }

    #[test]
    fn every_series_has_its_own_index_below_the_count() {
        let mut series: Vec<UsageSeries> = StatusClass::ALL
            .into_iter()
            .map(UsageSeries::Requests)
            .collect();
        series.extend(
            [
                TokenType::Input,
                TokenType::Output,
                TokenType::CacheRead,
                TokenType::CacheCreation,
            ]
            .map(UsageSeries::Tokens),
        );
        series.extend([UsageSeries::TimeToFirstByte, UsageSeries::Unparsed]);
        let mut indices: Vec<usize> = series.iter().map(|series| series.index()).collect();
        indices.sort_unstable();
        assert_eq!(indices, (0..UsageSeries::COUNT).collect::<Vec<_>>());
    }

    #[test]
    fn status_classes_and_log_text() {
        assert_eq!(status_class(101), "1xx");
        assert_eq!(status_class(429), "4xx");
        assert_eq!(status_class(0), "unknown");
        assert_eq!(status_class(600), "unknown");
        assert_eq!(log_text("aé".as_bytes(), 2), "a");
        assert_eq!(log_text(b"\xffz", 10), "\u{fffd}z");
        for (text, max) in [("aé", 2), ("aé", 3), ("aé", 0), ("abc", 10), ("日本語", 4)] {
            assert_eq!(
                cut_text(text.to_owned(), max),
                log_text(text.as_bytes(), max)
            );
        }
    }
}
