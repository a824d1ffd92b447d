//! A streaming JSON scanner that captures the few values usage needs and skips the rest.
//!
//! The scanner reads one JSON document a byte at a time and holds no part of it: it
//! follows only the objects on the paths it knows (`usage`, `message`, `message.usage`,
//! `delta`, all below the root object) and steps over every other value by counting
//! brackets, so a 100 MB `content` array costs a counter. What it keeps is bounded:
//! strings at known paths (`type`, `model`, `stop_reason`) up to [`MAX_STRING`] bytes,
//! keys up to [`MAX_KEY`] bytes, and integers.
//!
//! The same paths serve both bodies: a Messages API JSON answer keeps `model`,
//! `stop_reason` and `usage.*` at the root, an SSE `message_start` keeps them under
//! `message`, and `message_delta` has `usage.*` and `delta.stop_reason`.

/// Longest captured string value, in bytes; a longer one is cut (then read lossily as UTF-8).
pub(super) const MAX_STRING: usize = 256;

/// Longest key that can name a known field; longer keys are never known ones.
const MAX_KEY: usize = 32;

/// Deepest nesting of followed objects: root, `message`, `message.usage`.
const MAX_DEPTH: usize = 3;

/// Index of each count in [`Captured::counts`].
pub(super) const INPUT: usize = 0;
/// Index of `output_tokens` in [`Captured::counts`].
pub(super) const OUTPUT: usize = 1;
/// Index of `cache_creation_input_tokens` in [`Captured::counts`].
pub(super) const CACHE_CREATION: usize = 2;
/// Index of `cache_read_input_tokens` in [`Captured::counts`].
pub(super) const CACHE_READ: usize = 3;
/// Index of a root-level `input_tokens` (a `count_tokens` answer) in [`Captured::counts`].
pub(super) const ROOT_INPUT: usize = 4;

/// Object keys the scanner recognises; every other key is `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Other,
    Type,
    Model,
    StopReason,
    Usage,
    Message,
    Delta,
    InputTokens,
    OutputTokens,
    CacheCreationInputTokens,
    CacheReadInputTokens,
}

impl Key {
    fn from_bytes(name: &[u8]) -> Key {
        match name {
            b"type" => Key::Type,
            b"model" => Key::Model,
            b"stop_reason" => Key::StopReason,
            b"usage" => Key::Usage,
            b"message" => Key::Message,
            b"delta" => Key::Delta,
            b"input_tokens" => Key::InputTokens,
            b"output_tokens" => Key::OutputTokens,
            b"cache_creation_input_tokens" => Key::CacheCreationInputTokens,
            b"cache_read_input_tokens" => Key::CacheReadInputTokens,
            _ => Key::Other,
        }
    }
}

/// Which captured string a value fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StrField {
    Type,
    Model,
    StopReason,
}

/// What the value at the current path means to the scanner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// Not wanted: skipped.
    Skip,
    /// A string (or null) to capture.
    Str(StrField),
    /// A non-negative integer (or null); the index into [`Captured::counts`].
    Count(usize),
    /// An object (or null) to follow; `true` for a `usage` object.
    Object(bool),
}

/// The meaning of the value under `key` inside the followed objects `parents`.
fn slot(parents: &[Key], key: Key) -> Slot {
    use Key as K;
    let count = |key| match key {
        K::InputTokens => Slot::Count(INPUT),
        K::OutputTokens => Slot::Count(OUTPUT),
        K::CacheCreationInputTokens => Slot::Count(CACHE_CREATION),
        K::CacheReadInputTokens => Slot::Count(CACHE_READ),
        _ => Slot::Skip,
    };
    match (parents, key) {
        ([], K::Type) => Slot::Str(StrField::Type),
        ([] | [K::Message], K::Model) => Slot::Str(StrField::Model),
        ([] | [K::Message] | [K::Delta], K::StopReason) => Slot::Str(StrField::StopReason),
        ([], K::InputTokens) => Slot::Count(ROOT_INPUT),
        ([] | [K::Message], K::Usage) => Slot::Object(true),
        ([], K::Message | K::Delta) => Slot::Object(false),
        ([K::Usage] | [K::Message, K::Usage], key) => count(key),
        _ => Slot::Skip,
    }
}

/// The values captured from one document.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Captured {
    /// Root `type`.
    pub ty: Option<String>,
    /// Root `model` or `message.model`.
    pub model: Option<String>,
    /// Root, `message.` or `delta.stop_reason` when a string (null leaves it unset).
    pub stop_reason: Option<String>,
    /// Counts by index ([`INPUT`]..[`ROOT_INPUT`]); `None` when absent or null.
    pub counts: [Option<u64>; 5],
    /// A `usage` object (root or `message.usage`) was present.
    pub saw_usage: bool,
}

/// Where a document stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Status {
    /// Nothing but whitespace so far.
    Empty,
    /// Started, not finished.
    Partial,
    /// One complete document (and possibly trailing whitespace).
    Complete,
    /// Not JSON, or a known field with a value of the wrong kind.
    Failed,
}

/// A pending escape inside a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escape {
    None,
    Backslash,
    /// `\u` with this many hex digits read so far and their value.
    Unicode(u8, u32),
}

/// The scanner's position in the grammar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the root value.
    Start,
    /// After `{`: a key or `}`.
    FirstKey,
    /// After `,` in an object: a key.
    NextKey,
    /// Inside a key (`true`) or a string value (`false`).
    Str(bool),
    /// After a key: `:`.
    Colon,
    /// After `:`: a value.
    Value,
    /// Inside a number.
    Num,
    /// Inside `true`, `false` or `null`: the literal and how many bytes matched.
    Lit(&'static [u8], u8),
    /// Inside a skipped array or object.
    Skip,
    /// After a value in a followed object: `,` or `}`.
    After,
    /// After the root value.
    Done,
    /// Stopped at an error.
    Failed,
}

/// An incremental scanner of one JSON document; see the module docs.
#[derive(Debug)]
pub(super) struct Scanner {
    state: State,
    /// Keys under which the followed objects below the root sit (`parents` of the innermost).
    path: [Key; MAX_DEPTH],
    /// Followed objects open (root included).
    depth: usize,
    /// The key whose value comes next in the innermost followed object.
    key: Key,
    /// What the value being read means.
    slot: Slot,
    /// Key or captured string bytes.
    buf: Vec<u8>,
    /// Whether string bytes go to `buf`.
    capture: bool,
    /// `buf` would have grown past its cap.
    cut: bool,
    escape: Escape,
    /// The integer being read at a count slot.
    number: u64,
    /// Brackets open inside a skipped value.
    skip_depth: usize,
    /// A skipped value is inside a string / right after a backslash there.
    skip_in_str: bool,
    skip_escape: bool,
    /// What was captured so far.
    pub captured: Captured,
}

impl Scanner {
    /// A scanner before the first byte.
    pub fn new() -> Self {
        Scanner {
            state: State::Start,
            path: [Key::Other; MAX_DEPTH],
            depth: 0,
            key: Key::Other,
            slot: Slot::Skip,
            buf: Vec::new(),
            capture: false,
            cut: false,
            escape: Escape::None,
            number: 0,
            skip_depth: 0,
            skip_in_str: false,
            skip_escape: false,
            captured: Captured::default(),
        }
    }

    /// Back to the start for a new document (keeps the buffer's allocation).
    pub fn reset(&mut self) {
        let mut buf = core::mem::take(&mut self.buf);
        buf.clear();
        *self = Scanner {
            buf,
            ..Scanner::new()
        };
    }

    /// Where the document stands.
    pub fn status(&self) -> Status {
        match self.state {
            State::Start => Status::Empty,
            State::Done => Status::Complete,
            State::Failed => Status::Failed,
            _ => Status::Partial,
        }
    }

    /// The input ended: a root-level number ends here.
    pub fn end(&mut self) {
        if self.state == State::Num && self.depth == 0 {
            self.end_number();
        }
    }

    /// Reads the next bytes of the document.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while let Some((&b, rest)) = bytes.split_first() {
            // Fast paths for the bulk of a body: skipped string text and skipped containers.
            match self.state {
                State::Str(false) if !self.capture && self.escape == Escape::None => {
                    let run = bytes
                        .iter()
                        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                        .unwrap_or(bytes.len());
                    if run > 0 {
                        bytes = &bytes[run..];
                        continue;
                    }
                }
                State::Skip if self.skip_in_str && !self.skip_escape => {
                    let run = bytes
                        .iter()
                        .position(|&c| c == b'"' || c == b'\\')
                        .unwrap_or(bytes.len());
                    if run > 0 {
                        bytes = &bytes[run..];
                        continue;
                    }
                }
                State::Failed => return,
                _ => {}
            }
            self.byte(b);
            bytes = rest;
        }
    }

    /// Heap bytes held (tests check the bound).
    #[cfg(test)]
    pub fn held_bytes(&self) -> usize {
        let c = &self.captured;
        let strings = [&c.ty, &c.model, &c.stop_reason]
            .iter()
            .map(|s| s.as_ref().map_or(0, String::capacity))
            .sum::<usize>();
        self.buf.capacity() + strings
    }

    fn fail(&mut self) {
        self.state = State::Failed;
    }

    fn byte(&mut self, b: u8) {
        // A number ends at the first byte that is not part of it; that byte is read again.
        if self.state == State::Num {
            match b {
                b'0'..=b'9' => {
                    if let Slot::Count(_) = self.slot {
                        match self
                            .number
                            .checked_mul(10)
                            .and_then(|n| n.checked_add(u64::from(b - b'0')))
                        {
                            Some(n) => self.number = n,
                            None => self.fail(),
                        }
                    }
                    return;
                }
                b'.' | b'e' | b'E' | b'+' | b'-' => {
                    // Counts are non-negative integers; other numbers are skipped as they come.
                    if let Slot::Count(_) = self.slot {
                        self.fail();
                    }
                    return;
                }
                _ => self.end_number(),
            }
        }
        let ws = matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        match self.state {
            State::Start | State::Value => {
                if !ws {
                    self.value(b);
                }
            }
            State::FirstKey | State::NextKey => match b {
                b'"' => self.start_string(true),
                b'}' if self.state == State::FirstKey => self.close_object(),
                _ if ws => {}
                _ => self.fail(),
            },
            State::Colon => match b {
                b':' => self.state = State::Value,
                _ if ws => {}
                _ => self.fail(),
            },
            State::After => match b {
                b',' => self.state = State::NextKey,
                b'}' => self.close_object(),
                _ if ws => {}
                _ => self.fail(),
            },
            State::Done => {
                if !ws {
                    self.fail();
                }
            }
            State::Str(key) => self.string_byte(b, key),
            State::Lit(word, matched) => {
                let matched = usize::from(matched);
                if word.get(matched) != Some(&b) {
                    self.fail();
                } else if matched + 1 == word.len() {
                    self.value_done();
                } else {
                    self.state = State::Lit(word, (matched + 1) as u8);
                }
            }
            State::Skip => self.skip_byte(b),
            State::Num | State::Failed => {}
        }
    }

    /// The first byte of a value.
    fn value(&mut self, b: u8) {
        let slot = if self.state == State::Start {
            // Only an object root is followed; any other root value is stepped over.
            if b == b'{' {
                Slot::Object(false)
            } else {
                Slot::Skip
            }
        } else {
            let parents = self.path.get(..self.depth.saturating_sub(1)).unwrap_or(&[]);
            slot(parents, self.key)
        };
        self.slot = slot;
        match (b, slot) {
            (b'{', Slot::Object(usage)) => {
                if usage {
                    self.captured.saw_usage = true;
                }
                if self.depth > 0 {
                    match self.path.get_mut(self.depth - 1) {
                        Some(parent) => *parent = self.key,
                        None => return self.fail(),
                    }
                }
                self.depth += 1;
                self.key = Key::Other;
                self.state = State::FirstKey;
            }
            (b'{' | b'[', Slot::Skip) => {
                self.skip_depth = 1;
                self.skip_in_str = false;
                self.skip_escape = false;
                self.state = State::Skip;
            }
            (b'"', Slot::Skip | Slot::Str(_)) => self.start_string(false),
            (b'0'..=b'9', Slot::Skip | Slot::Count(_)) => {
                self.number = u64::from(b - b'0');
                self.state = State::Num;
            }
            (b'-', Slot::Skip) => self.state = State::Num,
            (b'n', _) => self.state = State::Lit(b"null", 1),
            (b't', Slot::Skip) => self.state = State::Lit(b"true", 1),
            (b'f', Slot::Skip) => self.state = State::Lit(b"false", 1),
            _ => self.fail(),
        }
    }

    fn start_string(&mut self, key: bool) {
        self.buf.clear();
        self.cut = false;
        self.escape = Escape::None;
        self.capture = key || matches!(self.slot, Slot::Str(_));
        self.state = State::Str(key);
    }

    fn push(&mut self, bytes: &[u8], key: bool) {
        if !self.capture {
            return;
        }
        let cap = if key { MAX_KEY } else { MAX_STRING };
        for &b in bytes {
            if self.buf.len() < cap {
                self.buf.push(b);
            } else {
                self.cut = true;
            }
        }
    }

    fn string_byte(&mut self, b: u8, key: bool) {
        match self.escape {
            Escape::None => match b {
                b'"' => self.end_string(key),
                b'\\' => self.escape = Escape::Backslash,
                0..=0x1f => self.fail(),
                _ => self.push(&[b], key),
            },
            Escape::Backslash => {
                self.escape = Escape::None;
                if b == b'u' {
                    self.escape = Escape::Unicode(0, 0);
                    return;
                }
                let Some(decoded) = crate::json::simple_escape(b) else {
                    return self.fail();
                };
                self.push(&[decoded], key);
            }
            Escape::Unicode(n, code) => {
                let Some(digit) = char::from(b).to_digit(16) else {
                    return self.fail();
                };
                let code = code * 16 + digit;
                if n < 3 {
                    self.escape = Escape::Unicode(n + 1, code);
                } else {
                    self.escape = Escape::None;
                    // Surrogates (pairs included) read as U+FFFD: captured values are labels.
                    let c = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
                    let mut utf8 = [0u8; 4];
                    self.push(c.encode_utf8(&mut utf8).as_bytes(), key);
                }
            }
        }
    }

    fn end_string(&mut self, key: bool) {
        if key {
            self.key = if self.cut {
                Key::Other
            } else {
                Key::from_bytes(&self.buf)
            };
            self.state = State::Colon;
            return;
        }
        if self.capture {
            let text = String::from_utf8_lossy(&self.buf).into_owned();
            match self.slot {
                Slot::Str(StrField::Type) => self.captured.ty = Some(text),
                Slot::Str(StrField::Model) => self.captured.model = Some(text),
                Slot::Str(StrField::StopReason) => self.captured.stop_reason = Some(text),
                _ => {}
            }
        }
        self.value_done();
    }

    fn end_number(&mut self) {
        if let Slot::Count(index) = self.slot
            && let Some(count) = self.captured.counts.get_mut(index)
        {
            *count = Some(self.number);
        }
        self.value_done();
    }

    fn skip_byte(&mut self, b: u8) {
        if self.skip_in_str {
            if self.skip_escape {
                self.skip_escape = false;
            } else if b == b'\\' {
                self.skip_escape = true;
            } else if b == b'"' {
                self.skip_in_str = false;
            }
            return;
        }
        match b {
            b'"' => self.skip_in_str = true,
            b'{' | b'[' => self.skip_depth = self.skip_depth.saturating_add(1),
            b'}' | b']' => {
                self.skip_depth = self.skip_depth.saturating_sub(1);
                if self.skip_depth == 0 {
                    self.value_done();
                }
            }
            _ => {}
        }
    }

    fn close_object(&mut self) {
        self.depth = self.depth.saturating_sub(1);
        if self.depth == 0 {
            self.state = State::Done;
        } else {
            self.key = self.path.get(self.depth - 1).copied().unwrap_or(Key::Other);
            self.state = State::After;
        }
    }

    fn value_done(&mut self) {
        self.state = if self.depth == 0 {
            State::Done
        } else {
            State::After
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str) -> (Status, Captured) {
        let mut s = Scanner::new();
        s.feed(text.as_bytes());
        s.end();
        (s.status(), s.captured)
    }

    #[test]
    fn captures_root_fields_and_skips_content() {
        let (status, c) = scan(
            r#"{"id":"msg_1","type":"message","content":[{"type":"text","text":"a \"}]{ b"}],
               "model":"claude-x","stop_reason":"end_turn","stop_sequence":null,
               "usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":3,
               "output_tokens":13,"service_tier":"standard","server_tool_use":{"input_tokens":99}}}"#,
        );
        assert_eq!(status, Status::Complete);
        assert_eq!(c.ty.as_deref(), Some("message"));
        assert_eq!(c.model.as_deref(), Some("claude-x"));
        assert_eq!(c.stop_reason.as_deref(), Some("end_turn"));
        assert_eq!(c.counts, [Some(25), Some(13), Some(0), Some(3), None]);
        assert!(c.saw_usage);
    }

    #[test]
    fn nested_paths_of_stream_events() {
        let (status, c) = scan(
            r#"{"type":"message_start","message":{"id":"m","model":"claude-y","stop_reason":null,
               "usage":{"input_tokens":7,"output_tokens":1}}}"#,
        );
        assert_eq!(status, Status::Complete);
        assert_eq!(c.model.as_deref(), Some("claude-y"));
        assert_eq!(c.stop_reason, None);
        assert_eq!(c.counts[INPUT], Some(7));
        let (_, c) = scan(
            r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":15}}"#,
        );
        assert_eq!(c.stop_reason.as_deref(), Some("max_tokens"));
        assert_eq!(c.counts[OUTPUT], Some(15));
    }

    #[test]
    fn escapes_in_keys_and_values_are_decoded() {
        let (status, c) = scan(r#"{"\u006dodel":"a\/b\u00e9\ud83d\n"}"#);
        assert_eq!(status, Status::Complete);
        assert_eq!(c.model.as_deref(), Some("a/b\u{e9}\u{fffd}\n"));
    }

    #[test]
    fn long_strings_are_cut() {
        let long = "m".repeat(MAX_STRING * 3);
        let (status, c) = scan(&format!(r#"{{"model":"{long}"}}"#));
        assert_eq!(status, Status::Complete);
        assert_eq!(c.model.map(|m| m.len()), Some(MAX_STRING));
    }

    #[test]
    fn wrong_kinds_at_known_paths_fail() {
        for bad in [
            r#"{"usage":{"input_tokens":-1}}"#,
            r#"{"usage":{"input_tokens":1.5}}"#,
            r#"{"usage":{"input_tokens":"1"}}"#,
            r#"{"usage":{"input_tokens":99999999999999999999999}}"#,
            r#"{"usage":[1]}"#,
            r#"{"model":3}"#,
            r#"{"model":true}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":"x
"}"#,
            r#"{"a":tru}"#,
            r#"{} x"#,
            r#"}"#,
        ] {
            assert_eq!(scan(bad).0, Status::Failed, "{bad}");
        }
    }

    #[test]
    fn other_roots_and_nulls_are_fine() {
        for ok in [
            r#"[1,{"usage":2}]"#,
            r#""text""#,
            "12",
            "-1.5e3",
            "null",
            "true",
            r#"{"usage":null,"model":null}"#,
        ] {
            assert_eq!(scan(ok).0, Status::Complete, "{ok}");
        }
        assert_eq!(scan("  ").0, Status::Empty);
        assert_eq!(scan(r#"{"a":[1,2"#).0, Status::Partial);
    }
}
