//! JSON (RFC 8259) as the filter reads and writes it: one small reader and one small writer.
//!
//! The reader builds a [`Value`] tree for the configuration, the token endpoint's answers and the
//! shared token state. Objects keep their members sorted by key, so a key named twice is found as
//! it is inserted and iteration order does not depend on how a document was written. Nesting depth
//! and members per object are capped: a hostile document costs bounded time. Numbers are kept as
//! the literal that was written and read only as the caller needs them (a whole number, or seconds
//! as a [`Duration`]); no floating point is involved anywhere. Errors name a position and a
//! reason, never a string from the document (a duplicate key, which is a field name, excepted).
//!
//! The writer, [`ObjectWriter`], emits compact objects field by field in the order it is called.
//! [`Quoted`] shows a value in a message the same way, as a JSON string.

use std::fmt;
use std::time::Duration;

use crate::headers::first_flagged;

/// Deepest nesting of arrays and objects a document may use.
pub const MAX_DEPTH: usize = 128;

/// Most members one object may have.
pub const MAX_MEMBERS: usize = 1024;

/// A JSON value.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(Debug))]
pub enum Value {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as written.
    Number(Number),
    /// A string.
    String(String),
    /// An array.
    Array(Vec<Value>),
    /// An object.
    Object(Map),
}

impl Value {
    /// Whether this is a string.
    pub fn is_string(&self) -> bool {
        matches!(self, Self::String(_))
    }

    /// Whether this is an object.
    pub fn is_object(&self) -> bool {
        matches!(self, Self::Object(_))
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(text) => Some(text),
            _ => None,
        }
    }

    /// The number as a non-negative whole number, if it is one that fits.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Number(number) => number.as_u64(),
            _ => None,
        }
    }
}

/// A number literal that follows RFC 8259's grammar.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(test, derive(Debug))]
pub struct Number(String);

impl Number {
    /// The literal as written in the document.
    pub fn literal(&self) -> &str {
        &self.0
    }

    /// The value, when the literal is a plain non-negative integer that fits a `u64`. Out of line:
    /// it was inlined at every numeric field of the configuration and of the token state.
    #[inline(never)]
    pub fn as_u64(&self) -> Option<u64> {
        let digits = self.0.as_bytes();
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        digits.iter().try_fold(0u64, |total, digit| {
            total
                .checked_mul(10)
                .and_then(|total| total.checked_add(u64::from(digit - b'0')))
        })
    }

    /// The number read as seconds, when it is not negative and less than `limit` seconds.
    pub fn seconds_below(&self, limit: u64) -> Option<Duration> {
        seconds_below(&self.0, limit)
    }
}

/// A decimal number of seconds (`30`, `1.5`, `+2`, `3.6e3`, `5.`), when not negative and less than
/// `limit`; digits beyond nanoseconds are dropped.
pub fn seconds_below(text: &str, limit: u64) -> Option<Duration> {
    let bytes = text.strip_prefix('+').unwrap_or(text).as_bytes();
    let (mantissa, exponent) = match bytes.iter().position(|&byte| byte == b'e' || byte == b'E') {
        Some(at) => (bytes.get(..at)?, exponent(bytes.get(at + 1..)?)?),
        None => (bytes, 0),
    };
    let point = mantissa.iter().position(|&byte| byte == b'.');
    let (whole, fraction) = match point {
        Some(at) => (mantissa.get(..at)?, mantissa.get(at + 1..)?),
        None => (mantissa, &[][..]),
    };
    if whole.len() + fraction.len() == 0 || !whole.iter().chain(fraction).all(u8::is_ascii_digit) {
        return None;
    }
    // Leading zeros carry nothing and would only count against the length bound below.
    let first = whole
        .iter()
        .position(|&digit| digit != b'0')
        .unwrap_or(whole.len());
    let whole = whole.get(first..)?;
    let digits = whole.iter().chain(fraction);
    // The decimal point moves `exponent` places; seconds are the digits left of it.
    let point = i64::try_from(whole.len()).ok()?.checked_add(exponent)?;
    let mut seconds = 0u64;
    let mut nanos = 0u32;
    let mut position = 0i64;
    for digit in digits {
        let digit = u32::from(digit - b'0');
        if position < point {
            seconds = seconds.checked_mul(10)?.checked_add(u64::from(digit))?;
        } else if let Ok(place @ 0..9) = u32::try_from(position - point) {
            nanos += digit * 10u32.pow(8 - place);
        }
        position += 1;
        if seconds >= limit {
            return None;
        }
    }
    // Places before the decimal point that the exponent adds past the last digit.
    while position < point {
        seconds = seconds.checked_mul(10)?;
        if seconds >= limit {
            return None;
        }
        position += 1;
    }
    Some(Duration::new(seconds, nanos))
}

/// `[+|-]digits` of an exponent, bounded so no shift overflows.
fn exponent(bytes: &[u8]) -> Option<i64> {
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() || digits.len() > 4 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let magnitude = digits
        .iter()
        .fold(0i64, |total, digit| total * 10 + i64::from(digit - b'0'));
    Some(if negative { -magnitude } else { magnitude })
}

/// An object's members, sorted by key, each key once.
#[derive(Clone, PartialEq, Eq, Default)]
#[cfg_attr(test, derive(Debug))]
pub struct Map(Vec<(String, Value)>);

impl Map {
    /// The value of `key`. Out of line: a binary search inlined at each of the configuration's
    /// many lookups cost more than the call.
    #[inline(never)]
    pub fn get(&self, key: &str) -> Option<&Value> {
        let index = self.find(key).ok()?;
        self.0.get(index).map(|(_, value)| value)
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &String> {
        self.0.iter().map(|(key, _)| key)
    }

    /// The members, in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&String, &Value)> {
        self.0.iter().map(|(key, value)| (key, value))
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0
            .binary_search_by(|(probe, _)| probe.as_str().cmp(key))
    }
}

/// What to do with a key an object names twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Duplicates {
    /// The document is refused.
    Refuse,
    /// The last one wins, as in most JSON readers.
    KeepLast,
}

/// Why a document could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The document ended inside a value.
    Eof,
    /// A value was expected.
    ExpectedValue,
    /// `:` was expected after a key.
    ExpectedColon,
    /// `,` or `]` was expected in an array.
    ExpectedListEnd,
    /// `,` or `}` was expected in an object.
    ExpectedObjectEnd,
    /// An object key was not a string.
    KeyNotString,
    /// A number does not follow the grammar.
    InvalidNumber,
    /// A backslash escape that does not exist.
    InvalidEscape,
    /// A `\u` escape naming a lone surrogate or not four hex digits.
    InvalidUnicode,
    /// An unescaped control character inside a string.
    ControlCharacter,
    /// Bytes that are not UTF-8.
    InvalidUtf8,
    /// Something after the document's value.
    TrailingCharacters,
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// An object with more than [`MAX_MEMBERS`] members.
    TooManyMembers,
    /// A key named twice in one object.
    Duplicate(String),
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::Eof => "EOF while parsing a value",
            Self::ExpectedValue => "expected value",
            Self::ExpectedColon => "expected `:`",
            Self::ExpectedListEnd => "expected `,` or `]`",
            Self::ExpectedObjectEnd => "expected `,` or `}`",
            Self::KeyNotString => "key must be a string",
            Self::InvalidNumber => "invalid number",
            Self::InvalidEscape => "invalid escape",
            Self::InvalidUnicode => "invalid unicode code point",
            Self::ControlCharacter => {
                "control character (\\u0000-\\u001F) found while parsing a string"
            }
            Self::InvalidUtf8 => "invalid UTF-8",
            Self::TrailingCharacters => "trailing characters",
            Self::TooDeep => "recursion limit exceeded",
            Self::TooManyMembers => "too many members in one object",
            Self::Duplicate(key) => return write!(formatter, "duplicate field `{key}`"),
        };
        formatter.write_str(text)
    }
}

/// A document that could not be read, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// Why.
    pub kind: ErrorKind,
    /// 1-based line.
    pub line: usize,
    /// Column within the line, counted in bytes.
    pub column: usize,
}

impl fmt::Display for Error {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} at line {} column {}",
            self.kind, self.line, self.column
        )
    }
}

/// Reads one JSON document.
///
/// # Errors
/// [`Error`] for anything that is not exactly one well-formed value within the caps, and for a
/// duplicate key when `duplicates` says so.
pub fn parse(bytes: &[u8], duplicates: Duplicates) -> Result<Value, Error> {
    let mut reader = Reader {
        bytes,
        at: 0,
        duplicates,
    };
    let value = reader.value(0).and_then(|value| match reader.skip_space() {
        None => Ok(value),
        Some(_) => Err(reader.fail(ErrorKind::TrailingCharacters)),
    });
    value.map_err(|failure| failure.locate(bytes))
}

/// An error and the offset it was found at, before line and column are worked out.
struct Failure {
    kind: ErrorKind,
    at: usize,
}

impl Failure {
    fn locate(self, bytes: &[u8]) -> Error {
        // The offending byte counts as read, as a streaming reader reports it.
        let read = bytes.get(..self.at.saturating_add(1)).unwrap_or(bytes);
        let line = 1 + read.iter().filter(|&&byte| byte == b'\n').count();
        let line_start = read
            .iter()
            .rposition(|&byte| byte == b'\n')
            .map_or(0, |newline| newline + 1);
        Error {
            kind: self.kind,
            line,
            column: read.len() - line_start,
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    duplicates: Duplicates,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    #[cold]
    fn fail(&self, kind: ErrorKind) -> Failure {
        Failure { kind, at: self.at }
    }

    /// The next byte that is not whitespace, left unread.
    // Out of line, like `digits`: called from every reading step.
    #[inline(never)]
    fn skip_space(&mut self) -> Option<u8> {
        while let Some(byte) = self.peek() {
            if !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(byte);
            }
            self.at += 1;
        }
        None
    }

    fn value(&mut self, depth: usize) -> Result<Value, Failure> {
        let Some(byte) = self.skip_space() else {
            return Err(self.fail(ErrorKind::Eof));
        };
        match byte {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => self.string().map(Value::String),
            b't' => self.word(b"true", Value::Bool(true)),
            b'f' => self.word(b"false", Value::Bool(false)),
            b'n' => self.word(b"null", Value::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(self.fail(ErrorKind::ExpectedValue)),
        }
    }

    #[inline(never)]
    fn word(&mut self, word: &[u8], value: Value) -> Result<Value, Failure> {
        for &expected in word {
            match self.peek() {
                None => return Err(self.fail(ErrorKind::Eof)),
                Some(byte) if byte == expected => self.at += 1,
                Some(_) => return Err(self.fail(ErrorKind::ExpectedValue)),
            }
        }
        Ok(value)
    }

    // Out of line: three loops of it in `number` alone.
    #[inline(never)]
    fn digits(&mut self) -> usize {
        let start = self.at;
        while self.peek().is_some_and(|byte| byte.is_ascii_digit()) {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> Result<Value, Failure> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            None => return Err(self.fail(ErrorKind::Eof)),
            Some(_) => return Err(self.fail(ErrorKind::InvalidNumber)),
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return Err(self.number_end());
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if self.digits() == 0 {
                return Err(self.number_end());
            }
        }
        // A digit right after `0` (a leading zero) is not a continuation of the number.
        if self.peek().is_some_and(|byte| byte.is_ascii_digit()) {
            return Err(self.fail(ErrorKind::InvalidNumber));
        }
        let literal = self.bytes.get(start..self.at).unwrap_or_default();
        // The grammar above admits ASCII only.
        let literal = String::from_utf8_lossy(literal).into_owned();
        Ok(Value::Number(Number(literal)))
    }

    fn number_end(&self) -> Failure {
        self.fail(if self.peek().is_none() {
            ErrorKind::Eof
        } else {
            ErrorKind::InvalidNumber
        })
    }

    /// A string starting at the opening quote.
    fn string(&mut self) -> Result<String, Failure> {
        self.at += 1;
        let mut out = Vec::new();
        loop {
            let start = self.at;
            while self
                .peek()
                .is_some_and(|byte| byte != b'"' && byte != b'\\' && byte >= 0x20)
            {
                self.at += 1;
            }
            out.extend_from_slice(self.bytes.get(start..self.at).unwrap_or_default());
            match self.peek() {
                None => return Err(self.fail(ErrorKind::Eof)),
                Some(b'"') => {
                    self.at += 1;
                    break;
                }
                Some(b'\\') => {
                    self.at += 1;
                    self.escape(&mut out)?;
                }
                Some(_) => return Err(self.fail(ErrorKind::ControlCharacter)),
            }
        }
        String::from_utf8(out).map_err(|_| Failure {
            kind: ErrorKind::InvalidUtf8,
            at: self.at.saturating_sub(1),
        })
    }

    /// One escape after its backslash.
    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), Failure> {
        let Some(byte) = self.peek() else {
            return Err(self.fail(ErrorKind::Eof));
        };
        let simple = match byte {
            b'u' => {
                self.at += 1;
                let code = self.hex4()?;
                let scalar = match code {
                    0xd800..=0xdbff => {
                        // A high surrogate must be followed by an escaped low surrogate.
                        if self.peek() != Some(b'\\') {
                            return Err(self.fail(ErrorKind::InvalidUnicode));
                        }
                        self.at += 1;
                        if self.peek() != Some(b'u') {
                            return Err(self.fail(ErrorKind::InvalidUnicode));
                        }
                        self.at += 1;
                        let low = self.hex4()?;
                        if !(0xdc00..=0xdfff).contains(&low) {
                            return Err(self.fail(ErrorKind::InvalidUnicode));
                        }
                        0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00)
                    }
                    other => other,
                };
                let Some(character) = char::from_u32(scalar) else {
                    return Err(self.fail(ErrorKind::InvalidUnicode));
                };
                let mut buffer = [0; 4];
                out.extend_from_slice(character.encode_utf8(&mut buffer).as_bytes());
                return Ok(());
            }
            other => match simple_escape(other) {
                Some(decoded) => decoded,
                None => return Err(self.fail(ErrorKind::InvalidEscape)),
            },
        };
        self.at += 1;
        out.push(simple);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, Failure> {
        let mut code = 0;
        for _ in 0..4 {
            let digit = match self.peek() {
                None => return Err(self.fail(ErrorKind::Eof)),
                Some(byte) => char::from(byte).to_digit(16),
            };
            let Some(digit) = digit else {
                return Err(self.fail(ErrorKind::InvalidUnicode));
            };
            code = code * 16 + digit;
            self.at += 1;
        }
        Ok(code)
    }

    fn array(&mut self, depth: usize) -> Result<Value, Failure> {
        if depth > MAX_DEPTH {
            return Err(self.fail(ErrorKind::TooDeep));
        }
        self.at += 1;
        let mut items = Vec::new();
        if self.skip_space() == Some(b']') {
            self.at += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            match self.skip_space() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Value::Array(items));
                }
                None => return Err(self.fail(ErrorKind::Eof)),
                Some(_) => return Err(self.fail(ErrorKind::ExpectedListEnd)),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, Failure> {
        if depth > MAX_DEPTH {
            return Err(self.fail(ErrorKind::TooDeep));
        }
        self.at += 1;
        let mut members: Vec<(String, Value)> = Vec::new();
        if self.skip_space() == Some(b'}') {
            self.at += 1;
            return Ok(Value::Object(Map(members)));
        }
        loop {
            match self.skip_space() {
                Some(b'"') => {}
                None => return Err(self.fail(ErrorKind::Eof)),
                Some(_) => return Err(self.fail(ErrorKind::KeyNotString)),
            }
            let key_at = self.at;
            let key = self.string()?;
            match self.skip_space() {
                Some(b':') => self.at += 1,
                None => return Err(self.fail(ErrorKind::Eof)),
                Some(_) => return Err(self.fail(ErrorKind::ExpectedColon)),
            }
            let value = self.value(depth)?;
            match members.binary_search_by(|(probe, _)| probe.as_str().cmp(&key)) {
                Ok(index) => match self.duplicates {
                    Duplicates::Refuse => {
                        return Err(Failure {
                            kind: ErrorKind::Duplicate(key),
                            at: key_at,
                        });
                    }
                    Duplicates::KeepLast => {
                        if let Some(slot) = members.get_mut(index) {
                            slot.1 = value;
                        }
                    }
                },
                Err(index) => {
                    if members.len() >= MAX_MEMBERS {
                        return Err(self.fail(ErrorKind::TooManyMembers));
                    }
                    members.insert(index, (key, value));
                }
            }
            match self.skip_space() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Value::Object(Map(members)));
                }
                None => return Err(self.fail(ErrorKind::Eof)),
                Some(_) => return Err(self.fail(ErrorKind::ExpectedObjectEnd)),
            }
        }
    }
}

/// Writes one compact JSON object, member by member in call order.
pub struct ObjectWriter {
    out: String,
    first: bool,
}

impl Default for ObjectWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ObjectWriter {
    /// An object with no members yet.
    pub fn new() -> Self {
        Self::after("")
    }

    /// An object with no members yet, written after `prefix` (a log line's tag).
    pub fn after(prefix: &str) -> Self {
        let mut out = String::with_capacity(prefix.len() + 512);
        out.push_str(prefix);
        out.push('{');
        Self { out, first: true }
    }

    // Out of line: every member writer starts with it.
    #[inline(never)]
    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        write_string(&mut self.out, key);
        self.out.push(':');
    }

    /// `"key":"text"`.
    pub fn string(&mut self, key: &str, text: &str) -> &mut Self {
        self.key(key);
        write_string(&mut self.out, text);
        self
    }

    /// `"key":"text"`, or `"key":null` without one.
    pub fn optional_string(&mut self, key: &str, text: Option<&str>) -> &mut Self {
        match text {
            Some(text) => self.string(key, text),
            None => self.null(key),
        }
    }

    /// `"key":null`.
    pub fn null(&mut self, key: &str) -> &mut Self {
        self.key(key);
        self.out.push_str("null");
        self
    }

    /// `"key":123`.
    pub fn number(&mut self, key: &str, number: u64) -> &mut Self {
        self.key(key);
        write_u64(&mut self.out, number);
        self
    }

    /// `"key":123`, or `"key":null` without one.
    pub fn optional_number(&mut self, key: &str, number: Option<u64>) -> &mut Self {
        match number {
            Some(number) => self.number(key, number),
            None => self.null(key),
        }
    }

    /// `"key":true`.
    pub fn boolean(&mut self, key: &str, flag: bool) -> &mut Self {
        self.key(key);
        self.out.push_str(if flag { "true" } else { "false" });
        self
    }

    /// `"key":["a","b"]`.
    pub fn strings(&mut self, key: &str, texts: &[String]) -> &mut Self {
        self.key(key);
        self.out.push('[');
        for (index, text) in texts.iter().enumerate() {
            if index > 0 {
                self.out.push(',');
            }
            write_string(&mut self.out, text);
        }
        self.out.push(']');
        self
    }

    /// `"key":{...}`, the nested object written by `inner`.
    pub fn object(&mut self, key: &str, inner: ObjectWriter) -> &mut Self {
        self.key(key);
        self.out.push_str(&inner.out);
        self.out.push('}');
        self
    }

    /// The finished object.
    pub fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}

/// Where JSON text is written: a `String`, or the bytes of a log line handed to the host as they
/// are (no UTF-8 check on the way out: every piece written is text or ASCII).
pub(crate) trait Sink {
    /// Appends text.
    fn put(&mut self, text: &str);
    /// Appends ASCII bytes (digits, escapes).
    fn put_ascii(&mut self, ascii: &[u8]);
    /// Appends the first `len` (at most eight) of eight ASCII bytes.
    fn put_ascii_window(&mut self, window: &[u8; 8], len: usize);
}

impl Sink for String {
    fn put(&mut self, text: &str) {
        self.push_str(text);
    }

    fn put_ascii(&mut self, ascii: &[u8]) {
        ascii.iter().for_each(|&byte| self.push(char::from(byte)));
    }

    fn put_ascii_window(&mut self, window: &[u8; 8], len: usize) {
        self.put_ascii(window.get(..len).unwrap_or(window));
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, text: &str) {
        self.extend_from_slice(text.as_bytes());
    }

    fn put_ascii(&mut self, ascii: &[u8]) {
        self.extend_from_slice(ascii);
    }

    fn put_ascii_window(&mut self, window: &[u8; 8], len: usize) {
        // All eight as one store, then cut back: a copy of a length known only at run time is a
        // call to the host's memory.copy, several times the cost for a few bytes.
        let end = self.len() + len.min(8);
        self.extend_from_slice(window);
        self.truncate(end);
    }
}

/// A value as a message quotes it: a JSON string, with quotes, backslashes, control characters
/// (DEL and C1 too) and the invisible characters of [`hides_or_reorders`] escaped, so an odd
/// character can neither end the quote, reach a terminal raw, nor hide or reorder words of the line.
///
/// Messages use this, never `{:?}`: `str`'s `Debug` brings Unicode printability tables into the
/// module, several kilobytes for error and debug text alone.
pub struct Quoted<'a>(pub &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::with_capacity(self.0.len() + 2);
        write_quoted(&mut text, self.0);
        f.write_str(&text)
    }
}

/// `names` as a list of quoted values, `["a", "b"]`, for a message.
pub(crate) fn quoted_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::from("[");
    for (index, name) in names.into_iter().enumerate() {
        if index > 0 {
            out.push_str(", ");
        }
        write_quoted(&mut out, name);
    }
    out.push(']');
    out
}

/// `text` as [`Quoted`] shows it: a JSON string, and as `\\uXXXX` (a surrogate pair above the Basic
/// Multilingual Plane) each character JSON may carry raw but a log line must not.
fn write_quoted(out: &mut String, text: &str) {
    out.push('"');
    let mut rest = text;
    while let Some((at, character)) = rest
        .char_indices()
        .find(|&(_, character)| escaped_in_messages(character))
    {
        write_string_body(out, rest.get(..at).unwrap_or_default());
        let mut units = [0_u16; 2];
        for unit in character.encode_utf16(&mut units) {
            push_unicode_escape(out, *unit);
        }
        rest = rest.get(at + character.len_utf8()..).unwrap_or_default();
    }
    write_string_body(out, rest);
    out.push('"');
}

/// `\\u` and four lower-case hex digits of `unit`.
fn push_unicode_escape(out: &mut String, unit: u16) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push_str("\\u");
    for shift in [12, 8, 4, 0] {
        let digit = usize::from((unit >> shift) & 0xf);
        out.push(char::from(HEX.get(digit).copied().unwrap_or(b'0')));
    }
}

/// What [`write_quoted`] escapes beyond JSON's own escapes: DEL, the C1 controls, and the
/// invisible characters of [`hides_or_reorders`].
fn escaped_in_messages(character: char) -> bool {
    matches!(character, '\u{7f}'..='\u{9f}') || hides_or_reorders(character)
}

/// Invisible characters that change how a line reads: the soft hyphen, zero-width characters,
/// bidirectional marks, embeddings, overrides and isolates, line and paragraph separators,
/// invisible operators, the byte order mark, interlinear annotation controls and tag characters.
/// Someone who controls the text could hide or reorder words of a log line with them.
pub(crate) fn hides_or_reorders(character: char) -> bool {
    matches!(
        character,
        '\u{ad}'
            | '\u{61c}'
            | '\u{180e}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}'
            | '\u{e0000}'..='\u{e007f}'
    )
}

/// `text` as a JSON string: quotes, backslashes and control characters escaped, the rest as is.
///
/// Runs of plain bytes are copied whole: the usage line is written on every observed request, and
/// almost none of it needs escaping.
pub(crate) fn write_string(out: &mut impl Sink, text: &str) {
    out.put_ascii(b"\"");
    write_string_body(out, text);
    out.put_ascii(b"\"");
}

/// [`write_string`] without the quotation marks.
fn write_string_body(out: &mut impl Sink, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut rest = text;
    // Every byte to escape is ASCII, so each cut falls on a character boundary.
    while let Some((plain, from)) = rest.split_at_checked(plain_prefix(rest.as_bytes()))
        && let Some(&special) = from.as_bytes().first()
    {
        out.put(plain);
        rest = from.get(1..).unwrap_or_default();
        let letter = match special {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            _ => {
                let hex = |nibble: u8| HEX.get(usize::from(nibble)).copied().unwrap_or(b'0');
                out.put_ascii(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    hex(special >> 4),
                    hex(special & 15),
                ]);
                continue;
            }
        };
        out.put_ascii(&[b'\\', letter]);
    }
    out.put(rest);
}

/// How many bytes at the start of `bytes` a JSON string holds as they are (no quote, backslash or
/// control byte), looked at eight at a time: a byte at a time, the scan was most of the usage line's
/// cost.
fn plain_prefix(bytes: &[u8]) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // High bit set in each byte of `word` that is below `limit` (at most 0x80); false positives only
    // above a true one.
    let below = |word: u64, limit: u8| word.wrapping_sub(ONES * u64::from(limit)) & !word & HIGHS;
    let zero = |word: u64| below(word, 1);
    first_flagged(bytes, |word| {
        below(word, 0x20)
            | zero(word ^ (ONES * u64::from(b'"')))
            | zero(word ^ (ONES * u64::from(b'\\')))
    })
    .unwrap_or(bytes.len())
}

/// `number` in decimal.
pub(crate) fn write_u64(out: &mut impl Sink, mut number: u64) {
    // One digit (a zero count, most often) as one byte.
    if number < 10 {
        out.put_ascii(&[b'0' + number as u8]);
        return;
    }
    // Right to left, two digits per step from a table, ending at `END`: room after them for a
    // window of eight.
    const END: usize = 20;
    let mut digits = [b'0'; END + 8];
    let mut start = END;
    let mut put_pair = |start: usize, pair: u64| {
        if let (Some(slot), Some(pair)) = (digits.get_mut(start..start + 2), two_digits(pair)) {
            slot.copy_from_slice(pair);
        }
    };
    while number >= 100 {
        start -= 2;
        put_pair(start, number % 100);
        number /= 100;
    }
    if number >= 10 {
        start -= 2;
        put_pair(start, number);
    } else {
        start -= 1;
        if let Some(slot) = digits.get_mut(start) {
            *slot = b'0' + number as u8;
        }
    }
    let len = END - start;
    match digits.get(start..).and_then(<[u8]>::first_chunk::<8>) {
        Some(window) if len <= 8 => out.put_ascii_window(window, len),
        _ => out.put_ascii(digits.get(start..END).unwrap_or_default()),
    }
}

/// The two decimal digits of `value` (below 100), from a table.
pub(crate) fn two_digits(value: u64) -> Option<&'static [u8]> {
    const TABLE: &[u8; 200] = b"\
        0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let at = usize::try_from(value).ok()?.checked_mul(2)?;
    TABLE.get(at..at.checked_add(2)?)
}

/// The same document as a [`Value`], for tests that write their input with `serde_json::json!`.
#[cfg(test)]
#[allow(clippy::panic)]
pub fn from_serde(value: &serde_json::Value) -> Value {
    match parse(value.to_string().as_bytes(), Duplicates::Refuse) {
        Ok(value) => value,
        Err(error) => panic!("{error}"),
    }
}

/// `serde_json::json!` read into a [`Value`]: test input written as JSON literals.
#[cfg(test)]
macro_rules! test_json {
    ($($json:tt)+) => {
        $crate::json::from_serde(&serde_json::json!($($json)+))
    };
}
#[cfg(test)]
pub(crate) use test_json;

/// The byte a one-letter JSON escape (`\n`, `\"`, ...) stands for; `None` for `u` and for letters
/// JSON has no escape for. Shared by the document reader and the usage parser's streaming scanner.
pub(crate) fn simple_escape(letter: u8) -> Option<u8> {
    Some(match letter {
        b'"' | b'\\' | b'/' => letter,
        b'b' => 0x08,
        b'f' => 0x0c,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn plain_prefix_agrees_with_a_byte_scan() {
        let text = b"abc\"def\\ghij\nklm\x1fnop\x7f\xc3\xa9qrstuvwxyz0123456789\"";
        for start in 0..text.len() {
            for end in start..=text.len() {
                let bytes = &text[start..end];
                let scan = bytes
                    .iter()
                    .position(|&byte| byte < 0x20 || byte == b'"' || byte == b'\\')
                    .unwrap_or(bytes.len());
                assert_eq!(plain_prefix(bytes), scan, "{start}..{end}");
            }
        }
    }

    #[test]
    fn quoted_values_escape_what_could_end_the_quote_or_reach_a_log_raw() {
        assert_eq!(Quoted("x-team").to_string(), r#""x-team""#);
        assert_eq!(
            Quoted("a \"b\" \\ c\r\nd\0\x1b é").to_string(),
            r#""a \"b\" \\ c\r\nd\u0000\u001b é""#
        );
        assert_eq!(format!("{}: bad", Quoted("")), r#""": bad"#);
        assert_eq!(quoted_list(["a", "b\"c"]), r#"["a", "b\"c"]"#);
        assert_eq!(quoted_list([]), "[]");
        // What JSON may carry raw but a log line must not: DEL, C1, bidirectional and invisible
        // characters, a tag character (a surrogate pair).
        assert_eq!(
            Quoted("a\u{7f}b\u{9b}c\u{202e}d\u{2066}e\u{200b}f\u{2028}g\u{e0041}h é").to_string(),
            r#""a\u007fb\u009bc\u202ed\u2066e\u200bf\u2028g\udb40\udc41h é""#
        );
        assert_eq!(quoted_list(["x\u{202e}y"]), r#"["x\u202ey"]"#);
    }

    #[test]
    fn numbers_are_written_alike_into_bytes_and_text() {
        let mut samples: Vec<u64> = (0..1_000).collect();
        let mut power = 1_u64;
        while let Some(next) = power.checked_mul(10) {
            samples.extend([power - 1, power, power + 1, next - 1]);
            power = next;
        }
        samples.extend([u64::MAX - 1, u64::MAX]);
        for number in samples {
            let mut bytes = b"x".to_vec();
            write_u64(&mut bytes, number);
            let mut text = String::from("x");
            write_u64(&mut text, number);
            assert_eq!(bytes, format!("x{number}").into_bytes());
            assert_eq!(text, format!("x{number}"));
        }
    }

    fn read(text: &str) -> Result<Value, Error> {
        parse(text.as_bytes(), Duplicates::Refuse)
    }

    fn kind(text: &str) -> ErrorKind {
        read(text).unwrap_err().kind
    }

    fn text(value: &str) -> Value {
        Value::String(value.into())
    }

    #[test]
    fn reads_every_kind_of_value() {
        let value =
            read(" {\"b\": [1, -2, 1.5e-3, null, true, false], \"a\": {\"c\": \"d\"}} ").unwrap();
        let Value::Object(map) = &value else {
            panic!("{value:?}")
        };
        assert_eq!(map.keys().collect::<Vec<_>>(), ["a", "b"]);
        let Some(Value::Array(items)) = map.get("b") else {
            panic!()
        };
        assert_eq!(items.len(), 6);
        assert_eq!(items.first().unwrap().as_u64(), Some(1));
        assert_eq!(items.get(1).unwrap().as_u64(), None);
        assert_eq!(items.get(3), Some(&Value::Null));
        assert_eq!(items.get(4), Some(&Value::Bool(true)));
        assert_eq!(
            map.get("a").and_then(|a| match a {
                Value::Object(inner) => inner.get("c").cloned(),
                _ => None,
            }),
            Some(text("d"))
        );
        assert_eq!(read("[]").unwrap(), Value::Array(Vec::new()));
        assert_eq!(read("{}").unwrap(), Value::Object(Map::default()));
        assert_eq!(read("\"\"").unwrap(), text(""));
    }

    #[test]
    fn escapes_and_surrogate_pairs_decode() {
        assert_eq!(
            read(r#""\"\\\/\b\f\n\r\t\u0041\u00e9\u20ac\ud83d\ude00""#).unwrap(),
            text("\"\\/\u{8}\u{c}\n\r\tAé€😀")
        );
        assert_eq!(read("\"é€😀\"").unwrap(), text("é€😀"));
        assert_eq!(kind(r#""\ud83d""#), ErrorKind::InvalidUnicode);
        assert_eq!(kind(r#""\ud83dx""#), ErrorKind::InvalidUnicode);
        assert_eq!(kind(r#""\ud83d\u0041""#), ErrorKind::InvalidUnicode);
        assert_eq!(kind(r#""\ude00""#), ErrorKind::InvalidUnicode);
        assert_eq!(kind(r#""\u12""#), ErrorKind::InvalidUnicode);
        assert_eq!(kind(r#""\x""#), ErrorKind::InvalidEscape);
        assert_eq!(kind("\"a\nb\""), ErrorKind::ControlCharacter);
        assert_eq!(
            parse(b"\"\xff\"", Duplicates::Refuse).unwrap_err().kind,
            ErrorKind::InvalidUtf8
        );
    }

    #[test]
    fn malformed_documents_are_refused_with_a_position() {
        for (input, expected) in [
            ("", ErrorKind::Eof),
            ("   ", ErrorKind::Eof),
            ("{", ErrorKind::Eof),
            ("[1,", ErrorKind::Eof),
            ("\"abc", ErrorKind::Eof),
            ("tru", ErrorKind::Eof),
            ("trux", ErrorKind::ExpectedValue),
            ("{1: 2}", ErrorKind::KeyNotString),
            ("{\"a\" 2}", ErrorKind::ExpectedColon),
            ("{\"a\": 2 \"b\": 3}", ErrorKind::ExpectedObjectEnd),
            ("[1 2]", ErrorKind::ExpectedListEnd),
            ("[1,]", ErrorKind::ExpectedValue),
            ("{\"a\": 1,}", ErrorKind::KeyNotString),
            ("01", ErrorKind::InvalidNumber),
            ("-", ErrorKind::Eof),
            ("-a", ErrorKind::InvalidNumber),
            ("1.", ErrorKind::Eof),
            ("1.e3", ErrorKind::InvalidNumber),
            ("1e", ErrorKind::Eof),
            ("+1", ErrorKind::ExpectedValue),
            (".5", ErrorKind::ExpectedValue),
            ("NaN", ErrorKind::ExpectedValue),
            ("1 2", ErrorKind::TrailingCharacters),
            ("{} x", ErrorKind::TrailingCharacters),
            ("'a'", ErrorKind::ExpectedValue),
            ("\u{feff}{}", ErrorKind::ExpectedValue),
        ] {
            assert_eq!(kind(input), expected, "{input:?}");
        }
        let error = read("{\n  \"a\": x\n}").unwrap_err();
        assert_eq!((error.line, error.column), (2, 8));
        assert_eq!(error.to_string(), "expected value at line 2 column 8");
    }

    #[test]
    fn duplicate_keys_are_refused_or_the_last_kept() {
        let error = read(r#"{"a": {"b": 1, "b": 2}}"#).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Duplicate("b".into()));
        assert!(
            error
                .to_string()
                .starts_with("duplicate field `b` at line 1")
        );
        let value = parse(br#"{"b": 1, "b": "two"}"#, Duplicates::KeepLast).unwrap();
        let Value::Object(map) = value else { panic!() };
        assert_eq!(map.len(), 1);
        assert_eq!(map.get("b"), Some(&text("two")));
    }

    #[test]
    fn hostile_documents_cost_bounded_work() {
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert_eq!(kind(&deep), ErrorKind::TooDeep);
        let nested_ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(read(&nested_ok).is_ok());
        let wide = (0..=MAX_MEMBERS)
            .map(|index| format!("\"k{index}\":0"))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(kind(&format!("{{{wide}}}")), ErrorKind::TooManyMembers);
        let long_array = format!("[{}0]", "0,".repeat(100_000));
        assert!(read(&long_array).is_ok());
    }

    #[test]
    fn whole_numbers_and_seconds_read_exactly() {
        let number = |text: &str| match read(text).unwrap() {
            Value::Number(number) => number,
            other => panic!("{other:?}"),
        };
        assert_eq!(number("0").as_u64(), Some(0));
        assert_eq!(number("18446744073709551615").as_u64(), Some(u64::MAX));
        assert_eq!(number("18446744073709551616").as_u64(), None);
        assert_eq!(number("1.0").as_u64(), None);
        assert_eq!(number("1e3").as_u64(), None);
        assert_eq!(number("-1").as_u64(), None);
        let seconds = |text: &str| seconds_below(text, 1_000_000_000);
        assert_eq!(seconds("30"), Some(Duration::from_secs(30)));
        assert_eq!(seconds("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(seconds("0.001"), Some(Duration::from_millis(1)));
        assert_eq!(seconds("3.6e3"), Some(Duration::from_secs(3600)));
        assert_eq!(seconds("36E+2"), Some(Duration::from_secs(3600)));
        assert_eq!(seconds("1500e-3"), Some(Duration::from_millis(1500)));
        assert_eq!(seconds("15e-4"), Some(Duration::from_micros(1500)));
        assert_eq!(seconds("+2"), Some(Duration::from_secs(2)));
        assert_eq!(seconds("5."), Some(Duration::from_secs(5)));
        assert_eq!(seconds(".5"), Some(Duration::from_millis(500)));
        assert_eq!(seconds("0000000000000001"), Some(Duration::from_secs(1)));
        assert_eq!(seconds("1.0000000019"), Some(Duration::new(1, 1)));
        assert_eq!(
            seconds("999999999.5"),
            Some(Duration::new(999_999_999, 500_000_000))
        );
        for bad in [
            "",
            ".",
            "-1",
            "1e",
            "1e99999",
            "1e10",
            "1000000000",
            "inf",
            "NaN",
            "1x",
            "1 ",
        ] {
            assert_eq!(seconds(bad), None, "{bad:?}");
        }
        assert_eq!(seconds("1e-99"), Some(Duration::ZERO));
    }

    #[test]
    fn plain_prefix_stops_at_the_first_byte_to_escape_wherever_it_is() {
        for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
            for at in 0..20 {
                let mut bytes = vec![b'a'; 20];
                bytes.extend_from_slice("\u{7f}é".as_bytes());
                bytes[at] = special;
                assert_eq!(plain_prefix(&bytes), at, "{special:#x} at {at}");
            }
        }
        let plain = "plain text, é and ~\u{7f}";
        assert_eq!(plain_prefix(plain.as_bytes()), plain.len());
        assert_eq!(plain_prefix(b""), 0);
    }

    #[test]
    fn writer_output_reads_back_and_escapes_like_serde_json() {
        let tricky = "q\"b\\s/n\nt\tc\u{1}\u{7f}é😀";
        let mut inner = ObjectWriter::new();
        inner.string("type", "x");
        let mut writer = ObjectWriter::new();
        writer
            .string("text", tricky)
            .optional_string("none", None)
            .number("max", u64::MAX)
            .number("zero", 0)
            .optional_number("n", Some(7))
            .boolean("yes", true)
            .strings("list", &["a".into(), "b\"".into()])
            .object("inner", inner);
        let written = writer.finish();
        let expected = serde_json::json!({
            "text": tricky, "none": null, "max": u64::MAX, "zero": 0, "n": 7, "yes": true,
            "list": ["a", "b\""], "inner": {"type": "x"}
        });
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&written).unwrap(),
            expected
        );
        assert!(written.starts_with(&format!(
            "{{\"text\":{},",
            serde_json::to_string(tricky).unwrap()
        )));
        let Value::Object(map) = read(&written).unwrap() else {
            panic!()
        };
        assert_eq!(map.get("text"), Some(&text(tricky)));
    }
}
