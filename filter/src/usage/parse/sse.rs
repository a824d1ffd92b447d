//! Server-sent events framing (the `text/event-stream` rules of the HTML standard) over
//! the JSON scanner.
//!
//! Lines end in CRLF, LF or CR, at any byte boundary; a blank line dispatches the event;
//! a line starting with `:` is a comment; `field:value` loses one space after the colon;
//! `data` lines join with LF; an event cut off by the end of the stream is dropped. The
//! data of an event whose meaning may depend on it streams through the [`Scanner`] as it
//! arrives (LF joins read as JSON whitespace), so no event is held: what an event means is
//! decided at its blank line from its `event:` name (or, without one, its data's `type`).
//!
//! Most of a stream is events whose name already says they are not read
//! (`content_block_delta`, `ping`, ...): their data is stepped over line by line with a
//! search for the line end, never scanned. Should a later `event:` line of the same event
//! rename it to one whose data matters (a kept event, or an empty name that defers to the
//! data's `type`), the data stepped over is gone, and the stream is read as malformed; no
//! server sends that.

use super::Unparsed;
use super::json::{Scanner, Status};

/// Longest event name kept; a longer one is no name the parser acts on.
const MAX_EVENT_NAME: usize = 32;

/// A field name the parser acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Data,
    Event,
    Other,
}

/// Where in a line the framer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    /// At the first byte of a line.
    Start,
    /// Inside a field name: its first 5 bytes and its length (6: longer than 5).
    Name([u8; 5], u8),
    /// Right after the colon: one space is dropped.
    ValueStart(Field),
    /// Inside a value.
    Value(Field),
    /// Inside a comment line.
    Comment,
}

/// What the stream said so far.
#[derive(Debug, Default)]
pub(super) struct Totals {
    /// `message.model` of `message_start`.
    pub model: Option<String>,
    /// The four usage counts, later events' present values winning.
    pub counts: [Option<u64>; 4],
    /// The last string `stop_reason`; cleared by an `error` event.
    pub stop_reason: Option<String>,
    /// Some usage object was read.
    pub saw_usage: bool,
    /// `message_stop` was read.
    pub saw_stop: bool,
    /// An `error` event was read.
    pub saw_error: bool,
}

/// An incremental reader of one event stream.
#[derive(Debug)]
pub(super) struct EventStream {
    max_event_bytes: usize,
    line: Line,
    /// The last byte was CR: an LF right after it ends nothing.
    after_cr: bool,
    /// Bytes of a leading byte order mark matched so far (`None` once past it).
    bom: Option<u8>,
    /// The current event's name (`event:`), if set and not too long.
    name: Vec<u8>,
    name_set: bool,
    name_cut: bool,
    /// `data` lines in the current event.
    data_lines: u64,
    /// Bytes of the current event's data (LF joins included).
    data_bytes: usize,
    /// Some of the current event's data was stepped over, not scanned.
    skipped: bool,
    scanner: Scanner,
    /// What the stream said so far.
    pub totals: Totals,
    /// Why reading stopped, if it did.
    pub stopped: Option<Unparsed>,
    /// Tests only: scan the data of every event, never stepping over any (the reference
    /// the stepping over is checked against).
    #[cfg(test)]
    pub scan_all: bool,
}

impl EventStream {
    /// A reader before the first byte.
    pub fn new(max_event_bytes: usize) -> Self {
        EventStream {
            max_event_bytes,
            line: Line::Start,
            after_cr: false,
            bom: Some(0),
            name: Vec::new(),
            name_set: false,
            name_cut: false,
            data_lines: 0,
            data_bytes: 0,
            skipped: false,
            scanner: Scanner::new(),
            totals: Totals::default(),
            stopped: None,
            #[cfg(test)]
            scan_all: false,
        }
    }

    /// Reads the next bytes of the stream.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.stopped.is_none() {
            if let Some(matched) = self.bom {
                const BOM: [u8; 3] = [0xef, 0xbb, 0xbf];
                let Some((&b, rest)) = bytes.split_first() else {
                    return;
                };
                if BOM.get(usize::from(matched)) == Some(&b) {
                    self.bom = (matched < 2).then_some(matched + 1);
                    bytes = rest;
                    continue;
                }
                self.bom = None;
                if matched > 0 {
                    // A partial mark starts a field name no one knows.
                    self.line = Line::Name([0; 5], 6);
                }
            }
            // Values and comments are taken a run at a time, up to the line end.
            if let Line::Value(_) | Line::Comment = self.line {
                let run = line_end(bytes);
                if run > 0 {
                    let (value, rest) = bytes.split_at(run);
                    match self.line {
                        Line::Value(Field::Data) => self.data(value),
                        Line::Value(Field::Event) => self.name_bytes(value),
                        _ => {}
                    }
                    self.after_cr = false;
                    bytes = rest;
                    continue;
                }
            }
            let Some((&b, rest)) = bytes.split_first() else {
                return;
            };
            self.byte(b);
            bytes = rest;
        }
    }

    /// Heap bytes held (tests check the bound).
    #[cfg(test)]
    pub fn held_bytes(&self) -> usize {
        let t = &self.totals;
        let strings = [&t.model, &t.stop_reason]
            .iter()
            .map(|s| s.as_ref().map_or(0, String::capacity))
            .sum::<usize>();
        self.name.capacity() + self.scanner.held_bytes() + strings
    }

    fn byte(&mut self, b: u8) {
        if b == b'\n' && self.after_cr {
            self.after_cr = false;
            return;
        }
        self.after_cr = b == b'\r';
        if b == b'\r' || b == b'\n' {
            return self.end_line();
        }
        match self.line {
            Line::Start if b == b':' => self.line = Line::Comment,
            Line::Start => self.line = Line::Name([b, 0, 0, 0, 0], 1),
            Line::Name(name, len) => {
                if b == b':' {
                    let field = field(&name, len);
                    self.start_value(field);
                    self.line = Line::ValueStart(field);
                } else {
                    let mut name = name;
                    if let Some(at) = name.get_mut(usize::from(len)) {
                        *at = b;
                    }
                    // Past 5 bytes the name is none the parser acts on; the length stops at 6.
                    self.line = Line::Name(name, (len + 1).min(6));
                }
            }
            Line::ValueStart(field) => {
                self.line = Line::Value(field);
                if b != b' ' {
                    self.value_byte(field, b);
                }
            }
            Line::Value(field) => self.value_byte(field, b),
            Line::Comment => {}
        }
    }

    fn value_byte(&mut self, field: Field, b: u8) {
        match field {
            Field::Data => self.data(&[b]),
            Field::Event => self.name_bytes(&[b]),
            Field::Other => {}
        }
    }

    /// More bytes of the event name; past [`MAX_EVENT_NAME`] the name is cut.
    fn name_bytes(&mut self, bytes: &[u8]) {
        let room = MAX_EVENT_NAME.saturating_sub(self.name.len());
        let kept = bytes.get(..room).unwrap_or(bytes);
        self.name.extend_from_slice(kept);
        if kept.len() < bytes.len() {
            self.name_cut = true;
        }
    }

    /// A field's value begins.
    fn start_value(&mut self, field: Field) {
        match field {
            Field::Data => {
                if self.data_lines > 0 {
                    self.data(b"\n");
                }
                self.data_lines += 1;
            }
            Field::Event => {
                self.name.clear();
                self.name_set = true;
                self.name_cut = false;
            }
            Field::Other => {}
        }
    }

    fn data(&mut self, bytes: &[u8]) {
        self.data_bytes = self.data_bytes.saturating_add(bytes.len());
        if self.skipped || self.steps_over() {
            // Stepped over: the event's name says its data means nothing.
            self.skipped |= !bytes.is_empty();
        } else {
            self.scanner.feed(bytes);
        }
        if self.data_bytes > self.max_event_bytes && self.kept() {
            self.stopped = Some(Unparsed::TooLarge);
        }
    }

    fn end_line(&mut self) {
        match self.line {
            Line::Start => self.dispatch(),
            // A field name alone is that field with an empty value.
            Line::Name(name, len) => self.start_value(field(&name, len)),
            _ => {}
        }
        self.line = Line::Start;
    }

    /// The current event's type: its `event:` name, else its data's `type`.
    fn event_type(&self) -> &[u8] {
        if self.name_set && !self.name.is_empty() {
            if self.name_cut { b"" } else { &self.name }
        } else {
            self.scanner
                .captured
                .ty
                .as_deref()
                .map_or(b"", str::as_bytes)
        }
    }

    /// Whether the current event's data is read for usage (and so limited in size).
    fn kept(&self) -> bool {
        matches!(self.event_type(), b"message_start" | b"message_delta")
    }

    /// Whether data arriving now is stepped over rather than scanned.
    #[cfg(not(test))]
    fn steps_over(&self) -> bool {
        !self.reads_data()
    }

    #[cfg(test)]
    fn steps_over(&self) -> bool {
        !self.scan_all && !self.reads_data()
    }

    /// Whether the current event's data can matter: it has no name (its data's `type` says
    /// what it is) or a kept one. Any other name decides the event without its data.
    fn reads_data(&self) -> bool {
        let named = self.name_set && !self.name.is_empty();
        !named
            || (!self.name_cut
                && matches!(self.name.as_slice(), b"message_start" | b"message_delta"))
    }

    fn dispatch(&mut self) {
        if self.data_lines > 0 {
            self.scanner.end();
            if self.data_bytes > self.max_event_bytes && self.kept() {
                self.stopped = Some(Unparsed::TooLarge);
                return;
            }
            if self.skipped && self.reads_data() {
                // Renamed after its data was stepped over: what it says is unknown.
                self.stopped = Some(Unparsed::Malformed);
                return;
            }
            match self.event_type() {
                b"message_start" | b"message_delta" => {
                    if self.scanner.status() != Status::Complete {
                        self.stopped = Some(Unparsed::Malformed);
                        return;
                    }
                    let captured = core::mem::take(&mut self.scanner.captured);
                    let totals = &mut self.totals;
                    if captured.model.is_some() {
                        totals.model = captured.model;
                    }
                    if captured.stop_reason.is_some() {
                        totals.stop_reason = captured.stop_reason;
                    }
                    for (total, count) in totals.counts.iter_mut().zip(captured.counts) {
                        if count.is_some() {
                            *total = count;
                        }
                    }
                    totals.saw_usage |= captured.saw_usage;
                }
                b"message_stop" => self.totals.saw_stop = true,
                b"error" => {
                    self.totals.saw_error = true;
                    self.totals.stop_reason = None;
                }
                _ => {}
            }
        }
        self.name.clear();
        self.name_set = false;
        self.name_cut = false;
        self.data_lines = 0;
        self.data_bytes = 0;
        self.skipped = false;
        self.scanner.reset();
    }

    /// Why the stream's usage is not (fully) known at its end, if it is not.
    pub fn verdict(&self) -> Option<Unparsed> {
        if let Some(stopped) = self.stopped {
            Some(stopped)
        } else if self.totals.saw_error || self.totals.saw_stop {
            (!self.totals.saw_usage).then_some(Unparsed::NoUsage)
        } else {
            Some(Unparsed::Truncated)
        }
    }
}

/// The length of the run before the first CR or LF (all of `bytes` when there is none).
///
/// Eight bytes at a time while none of them is a line end (a word with a zero byte after
/// XOR with CR or LF repeated has one), then byte by byte from the word that has one.
fn line_end(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const CRS: u64 = u64::from_ne_bytes([b'\r'; 8]);
    const LFS: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let has_zero = |word: u64| word.wrapping_sub(ONES) & !word & HIGHS != 0;
    let mut start = 0;
    for word in bytes.chunks_exact(8) {
        let Ok(word) = <[u8; 8]>::try_from(word) else {
            break;
        };
        let word = u64::from_ne_bytes(word);
        if has_zero(word ^ CRS) || has_zero(word ^ LFS) {
            break;
        }
        start += 8;
    }
    let rest = bytes.get(start..).unwrap_or_default();
    start
        + rest
            .iter()
            .position(|&c| c == b'\r' || c == b'\n')
            .unwrap_or(rest.len())
}

/// The field a name of `len` bytes (6: longer than any known one) stands for.
fn field(name: &[u8; 5], len: u8) -> Field {
    match name.get(..usize::from(len)) {
        Some(b"data") => Field::Data,
        Some(b"event") => Field::Event,
        _ => Field::Other,
    }
}
