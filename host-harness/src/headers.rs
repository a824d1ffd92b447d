//! An ordered multi-map of HTTP header (or trailer) fields, as a proxy holds them.
//!
//! Names are stored lower-case, as Envoy stores them, so lookups are case-insensitive; values are bytes, since
//! HTTP allows values that are not UTF-8. `Debug` output redacts credential-bearing headers.
//!
//! A map is one byte buffer holding every field as `name\0value\0`, back to back, plus one span per field:
//! copying a map costs two allocations however many fields it has, a filter's edits change it in place, and
//! the buffer is already the data part of the ABI's serialized form, so handing a map to a guest copies it
//! in one piece.

use std::fmt;
use std::ops::Range;

/// Header names whose values never appear in `Debug` output.
const REDACTED_NAMES: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "cookie",
];

/// Where one field sits in the map's buffer: the name at `start`, its NUL, the value, the value's NUL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: usize,
    name_len: usize,
    value_len: usize,
}

impl Span {
    fn name(self) -> Range<usize> {
        self.start..self.start + self.name_len
    }

    fn value(self) -> Range<usize> {
        let value_start = self.start + self.name_len + 1;
        value_start..value_start + self.value_len
    }

    /// Where the next field starts: past the value's NUL.
    fn end(self) -> usize {
        self.start + self.name_len + self.value_len + FIELD_NULS
    }
}

/// The NULs each field carries in the buffer, one after the name and one after the value.
const FIELD_NULS: usize = 2;

/// Room a copy of a map keeps for edits: a filter typically adds or replaces a field or two (a credential,
/// a tag) in a map it was handed, and a copy at its exact size would have to grow both buffers for the first.
const EDIT_ROOM_FIELDS: usize = 4;
/// Bytes of names and values a copy keeps room for (see [`EDIT_ROOM_FIELDS`]).
const EDIT_ROOM_BYTES: usize = 256;

/// Ordered header fields; a name may repeat.
#[derive(Default)]
pub struct Headers {
    /// Every field as its lower-case name, a NUL, its value and a NUL, back to back in field order, with
    /// no gaps: the data part of the map's ABI encoding.
    bytes: Vec<u8>,
    spans: Vec<Span>,
}

impl Headers {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty map with room for `fields` fields of `bytes` bytes of names and values in all.
    pub(crate) fn with_capacity(fields: usize, bytes: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(bytes),
            spans: Vec::with_capacity(fields),
        }
    }

    /// The number of fields (repeated names count once per field).
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The total size of every name and value, the part of a map's size that is not per-field overhead.
    pub(crate) fn byte_len(&self) -> usize {
        self.bytes.len() - self.spans.len() * FIELD_NULS
    }

    /// Every field as `name\0value\0`, back to back in field order: the data part of the map's encoding.
    pub(crate) fn field_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Each field's name and value lengths, in field order.
    pub(crate) fn field_lens(&self) -> impl ExactSizeIterator<Item = (usize, usize)> + '_ {
        self.spans
            .iter()
            .map(|span| (span.name_len, span.value_len))
    }

    fn slice(&self, range: Range<usize>) -> &[u8] {
        // Spans always lie inside the buffer; an empty slice stands in for the impossible case.
        self.bytes.get(range).unwrap_or_default()
    }

    fn name_of(&self, span: Span) -> &[u8] {
        self.slice(span.name())
    }

    /// Whether `span` holds the field `name` (in any case). Lengths first: most names differ in length,
    /// which settles them without reading a byte. Stored names are lower-case and so, nearly always, is
    /// the name asked for: a plain comparison settles a match, and only a mismatch folds `name`'s case.
    fn is_named(&self, span: Span, name: &[u8]) -> bool {
        if span.name_len != name.len() {
            return false;
        }
        let stored = self.name_of(span);
        stored == name
            || stored
                .iter()
                .zip(name)
                .all(|(stored, wanted)| *stored == wanted.to_ascii_lowercase())
    }

    /// The index of the first field named `name`.
    pub(crate) fn position(&self, name: &[u8]) -> Option<usize> {
        self.position_from(0, name)
    }

    /// The index of the first field named `name` at or after `from`.
    fn position_from(&self, from: usize, name: &[u8]) -> Option<usize> {
        let later = self.spans.get(from..)?;
        let offset = later.iter().position(|span| self.is_named(*span, name))?;
        Some(from + offset)
    }

    /// Field `index`'s name and value.
    pub(crate) fn field(&self, index: usize) -> Option<(&[u8], &[u8])> {
        let span = *self.spans.get(index)?;
        Some((self.name_of(span), self.slice(span.value())))
    }

    /// The first value of `name`.
    pub fn get(&self, name: impl AsRef<[u8]>) -> Option<&[u8]> {
        self.field(self.position(name.as_ref())?)
            .map(|(_, value)| value)
    }

    /// The first value of `name` as UTF-8 text, if it is present and valid UTF-8.
    pub fn get_str(&self, name: impl AsRef<[u8]>) -> Option<&str> {
        self.get(name)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.iter()
            .filter(move |(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: impl AsRef<[u8]>) -> bool {
        self.position(name.as_ref()).is_some()
    }

    /// All fields in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans
            .iter()
            .map(|span| (self.name_of(*span), self.slice(span.value())))
    }

    /// Appends a field, keeping any existing values of the name.
    pub fn add(&mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let (name, value) = (name.as_ref(), value.as_ref());
        let start = self.bytes.len();
        self.bytes
            .reserve(name.len().saturating_add(value.len()) + FIELD_NULS);
        self.bytes.extend_from_slice(name);
        if let Some(stored) = self.bytes.get_mut(start..) {
            stored.make_ascii_lowercase();
        }
        self.bytes.push(0);
        self.bytes.extend_from_slice(value);
        self.bytes.push(0);
        self.spans.push(Span {
            start,
            name_len: name.len(),
            value_len: value.len(),
        });
    }

    /// Sets `name` to one value: the first field keeps its position, later ones go.
    pub fn replace(&mut self, name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let name = name.as_ref();
        let Some(first) = self.position(name) else {
            self.add(name, value);
            return;
        };
        self.set_value(first, value.as_ref());
        if let Some(repeat) = self.position_from(first + 1, name) {
            self.remove_from(repeat, name);
        }
    }

    /// Removes every field named `name`; removing an absent name is not an error.
    pub fn remove(&mut self, name: impl AsRef<[u8]>) {
        let name = name.as_ref();
        if let Some(first) = self.position(name) {
            self.remove_from(first, name);
        }
    }

    /// Removes every field.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
    }

    /// The fields as owned pairs.
    pub fn into_vec(self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.iter()
            .map(|(key, value)| (key.to_vec(), value.to_vec()))
            .collect()
    }

    /// The fields as text pairs, with invalid UTF-8 replaced; handy in assertions.
    pub fn to_string_pairs(&self) -> Vec<(String, String)> {
        self.iter()
            .map(|(key, value)| {
                (
                    String::from_utf8_lossy(key).into_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                )
            })
            .collect()
    }

    /// Gives field `index` a new value in place, moving the fields after it as its length changes.
    fn set_value(&mut self, index: usize, value: &[u8]) {
        let Some(span) = self.spans.get_mut(index) else {
            return;
        };
        let old = span.value();
        span.value_len = value.len();
        if old.len() == value.len() {
            if let Some(stored) = self.bytes.get_mut(old) {
                stored.copy_from_slice(value);
            }
            return;
        }
        let (old_len, new_len) = (old.len(), value.len());
        self.bytes.splice(old, value.iter().copied());
        for later in self.spans.iter_mut().skip(index + 1) {
            // Every later field starts past the old value, so the subtraction cannot underflow.
            later.start = later.start - old_len + new_len;
        }
    }

    /// Removes the fields named `name` from index `first` (the first of them) on, closing the gaps in one
    /// pass; the fields before `first` do not move.
    fn remove_from(&mut self, first: usize, name: &[u8]) {
        let Some(mut write) = self.spans.get(first).map(|span| span.start) else {
            return;
        };
        let mut kept = first;
        for index in first..self.spans.len() {
            let Some(span) = self.spans.get(index).copied() else {
                break;
            };
            if self.is_named(span, name) {
                continue;
            }
            if span.start != write {
                self.bytes.copy_within(span.start..span.end(), write);
            }
            if let Some(slot) = self.spans.get_mut(kept) {
                *slot = Span {
                    start: write,
                    ..span
                };
            }
            write += span.end() - span.start;
            kept += 1;
        }
        self.spans.truncate(kept);
        self.bytes.truncate(write);
    }
}

/// A copy has room for a few edits beyond the fields it holds, so a filter's first additions do not move it.
impl Clone for Headers {
    fn clone(&self) -> Self {
        if self.is_empty() {
            // Trailers are mostly absent: an empty copy stays unallocated.
            return Self::new();
        }
        let mut copy = Self::with_capacity(
            self.spans.len().saturating_add(EDIT_ROOM_FIELDS),
            self.bytes.len().saturating_add(EDIT_ROOM_BYTES),
        );
        copy.bytes.extend_from_slice(&self.bytes);
        copy.spans.extend_from_slice(&self.spans);
        copy
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_list();
        for (key, value) in self.iter() {
            let key_text = String::from_utf8_lossy(key);
            if REDACTED_NAMES
                .iter()
                .any(|redacted| key.eq_ignore_ascii_case(redacted.as_bytes()))
            {
                map.entry(&(key_text, "[REDACTED]"));
            } else {
                map.entry(&(key_text, String::from_utf8_lossy(value)));
            }
        }
        map.finish()
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut headers = Headers::new();
        for (key, value) in iter {
            headers.add(key, value);
        }
        headers
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>, const N: usize> From<[(K, V); N]> for Headers {
    fn from(fields: [(K, V); N]) -> Self {
        fields.into_iter().collect()
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> From<Vec<(K, V)>> for Headers {
    fn from(fields: Vec<(K, V)>) -> Self {
        fields.into_iter().collect()
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> From<&[(K, V)]> for Headers {
    fn from(fields: &[(K, V)]) -> Self {
        fields
            .iter()
            .map(|(key, value)| (key.as_ref(), value.as_ref()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_ignore_case_and_names_are_stored_lower_case() {
        let headers = Headers::from([("Content-Type", "text/plain")]);
        assert_eq!(headers.get("content-type"), Some(&b"text/plain"[..]));
        assert_eq!(
            headers.iter().next().map(|(key, _)| key),
            Some(&b"content-type"[..])
        );
    }

    #[test]
    fn replace_keeps_the_first_position_and_drops_repeats() {
        let mut headers = Headers::from([("a", "1"), ("b", "2"), ("a", "3")]);
        headers.replace("A", "9");
        assert_eq!(
            headers.to_string_pairs(),
            vec![("a".into(), "9".into()), ("b".into(), "2".into())]
        );
    }

    #[test]
    fn debug_output_redacts_credentials() {
        let headers = Headers::from([
            ("Authorization", "Bearer secret-token"),
            ("x-api-key", "k"),
            ("accept", "*/*"),
        ]);
        let printed = format!("{headers:?}");
        assert!(!printed.contains("secret-token"));
        assert!(!printed.contains("\"k\""));
        assert!(printed.contains("*/*"));
    }

    #[test]
    fn edits_in_the_middle_keep_the_other_fields_intact() {
        let mut headers = Headers::from([("a", "1"), ("b", "22"), ("a", "333"), ("c", "4")]);
        headers.replace("a", "a-much-longer-value");
        assert_eq!(
            headers.to_string_pairs(),
            vec![
                ("a".into(), "a-much-longer-value".into()),
                ("b".into(), "22".into()),
                ("c".into(), "4".into())
            ]
        );
        headers.replace("b", "");
        headers.remove("a");
        headers.add("D", "5");
        assert_eq!(headers, Headers::from([("b", ""), ("c", "4"), ("d", "5")]));
        assert_eq!(headers.byte_len(), "bc4d5".len());
        assert_eq!(headers.field_bytes(), b"b\0\0c\x004\0d\x005\0");
        headers.remove("absent");
        assert_eq!(headers.len(), 3);
        headers.clear();
        assert!(headers.is_empty() && headers.byte_len() == 0);
    }

    #[test]
    fn equal_maps_compare_equal_however_they_were_built() {
        let mut edited = Headers::from([("x", "old"), ("y", "1")]);
        edited.remove("x");
        edited.add("z", "2");
        assert_eq!(edited, Headers::from([("y", "1"), ("z", "2")]));
        assert_ne!(edited, Headers::from([("z", "2"), ("y", "1")]));
    }
}
