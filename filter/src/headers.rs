//! A small ordered header-list model.
//!
//! Names are stored lower-case (HTTP/2 and Envoy require it; HTTP/1 names are
//! case-insensitive) and values are raw bytes, so a client sending non-UTF-8
//! values can never make the filter panic. The order of entries and repeated
//! names are kept: `append` really adds a second line.
//!
//! Names and values are borrowed wherever they can be: [`HeaderList::view`]
//! gives the pipeline a list to rewrite that points into the host's headers,
//! and values set from the configuration point into the configuration, so a
//! request is rewritten without copying the headers it leaves alone.
//!
//! A [`Rewrite`] changes a list in place and hands each change to the host
//! as the edit that makes it, so the glue touches only the headers that
//! changed and never compares two lists.

use std::borrow::Cow;

/// An ordered list of header entries `(lower-case name, value bytes)`, each
/// borrowed for `'a` or owned.
#[derive(Clone, Default)]
pub struct HeaderList<'a> {
    // Names as bytes: a host's names are read without a UTF-8 check, and a name that is not text
    // can still be kept, passed on and never matched.
    entries: Vec<Line<'a>>,
    /// A bit per name the list has held ([`name_bit`]), set as lines come and never cleared: a
    /// name whose bit is clear is absent without a scan, and most names a request is asked for (a
    /// credential it did not send, a header a preset adds) are.
    name_bits: u64,
}

/// Names and the length of each value, never a value: a list may hold the injected credential.
impl std::fmt::Debug for HeaderList<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.entries
                    .iter()
                    .map(|(name, value)| Withheld { name, value }),
            )
            .finish()
    }
}

/// A header line as [`HeaderList`] and [`HeaderEdit`] show it: the name, and the value's length
/// in place of the value.
struct Withheld<'l> {
    name: &'l [u8],
    value: &'l [u8],
}

impl std::fmt::Debug for Withheld<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: <{} bytes>",
            crate::json::Quoted(&String::from_utf8_lossy(self.name)),
            self.value.len()
        )
    }
}

/// Lists are equal when their lines are; `name_bits` only says where not to look.
impl PartialEq for HeaderList<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Eq for HeaderList<'_> {}

/// The [`HeaderList::name_bits`] of `entries`.
fn name_bits_of(entries: &[Line<'_>]) -> u64 {
    entries
        .iter()
        .fold(0, |bits, (name, _)| bits | name_bit(name))
}

/// One header line: its lower-case name and its value.
type Line<'a> = (Cow<'a, [u8]>, Cow<'a, [u8]>);

/// Why a serialized header map could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MalformedMap {
    /// A size points past the end of the bytes.
    #[error("a size points past the end of the map")]
    Truncated,
    /// A name or value is not followed by its NUL.
    #[error("an entry is not NUL-terminated")]
    Unterminated,
}

/// A header map in the proxy-wasm wire form, its sizes checked against its length; the one reader
/// of the form, for [`HeaderList::from_serialized`] and [`first_values`].
struct Serialized<'a> {
    /// The name and value sizes, eight bytes per line.
    sizes: &'a [u8],
    /// The names and values, each followed by a NUL.
    data: &'a [u8],
}

impl<'a> Serialized<'a> {
    fn new(bytes: &'a [u8]) -> Result<Self, MalformedMap> {
        let Some((count, rest)) = bytes.split_first_chunk::<4>() else {
            return if bytes.is_empty() {
                Ok(Self {
                    sizes: &[],
                    data: &[],
                })
            } else {
                Err(MalformedMap::Truncated)
            };
        };
        let count =
            usize::try_from(u32::from_le_bytes(*count)).map_err(|_| MalformedMap::Truncated)?;
        // Each entry takes at least ten bytes (two sizes, two NULs): a forged count is refused
        // before anything is allocated for it.
        count
            .checked_mul(10)
            .filter(|&least| least <= rest.len())
            .ok_or(MalformedMap::Truncated)?;
        let (sizes, data) = rest
            .split_at_checked(count * 8)
            .ok_or(MalformedMap::Truncated)?;
        Ok(Self { sizes, data })
    }

    /// How many lines the map says it has.
    fn len(&self) -> usize {
        self.sizes.len() / 8
    }

    /// Hands `line` each name and value, as the host wrote them, in order.
    #[inline(always)]
    fn for_each(self, mut line: impl FnMut(&'a [u8], &'a [u8])) -> Result<(), MalformedMap> {
        let mut data = self.data;
        // One field and its NUL off the front of `data`.
        // The NUL is looked at first: once it is known to be there, the field and the rest need
        // no further bounds checks.
        let mut take = |size: u32| -> Result<&'a [u8], MalformedMap> {
            let size = usize::try_from(size).map_err(|_| MalformedMap::Truncated)?;
            match data.get(size) {
                Some(0) => {}
                Some(_) => return Err(MalformedMap::Unterminated),
                None if size == data.len() => return Err(MalformedMap::Unterminated),
                None => return Err(MalformedMap::Truncated),
            }
            let (field, after) = data.split_at_checked(size).ok_or(MalformedMap::Truncated)?;
            data = after.get(1..).unwrap_or_default();
            Ok(field)
        };
        for pair in self.sizes.as_chunks::<8>().0 {
            let (name_size, value_size) = pair.split_at(4);
            let word = |field: &[u8]| {
                field
                    .first_chunk::<4>()
                    .map_or(0, |word| u32::from_le_bytes(*word))
            };
            let name = take(word(name_size))?;
            let value = take(word(value_size))?;
            line(name, value);
        }
        Ok(())
    }
}

/// The first value of each of `names` (lower-case) in a header map in the proxy-wasm wire form,
/// read in place: for a map only looked up, neither a list nor its lines are built. The map is
/// checked whole, as [`HeaderList::from_serialized`] checks it.
pub fn first_values<'a, const N: usize>(
    bytes: &'a [u8],
    names: [&str; N],
) -> Result<[Option<&'a [u8]>; N], MalformedMap> {
    let keys = names.map(NameKey::new);
    // A bit per length of the names: a line of another length is passed over at once.
    let lengths = names.iter().fold(0_u64, |bits, name| {
        bits | 1_u64.rotate_left(name.len() as u32)
    });
    let mut found = [None; N];
    Serialized::new(bytes)?.for_each(|name, value| {
        // Truncation is harmless: the length only picks a bit.
        if lengths & 1_u64.rotate_left(name.len() as u32) == 0 {
            return;
        }
        let folded;
        // Every host hands over lower-case names; one that does not is compared lower-cased.
        let name = if has_upper_case(name) {
            folded = name.to_ascii_lowercase();
            &folded[..]
        } else {
            name
        };
        for (key, slot) in keys.iter().zip(found.iter_mut()) {
            if slot.is_none() && key.matches(name) {
                *slot = Some(value);
            }
        }
    })?;
    Ok(found)
}

/// One change to apply to a host header map, per header name.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum HeaderEdit<'h> {
    /// Remove every value of the header.
    Remove(&'h str),
    /// Give the header exactly this one value.
    Set(&'h str, &'h [u8]),
    /// Add one more value to the header, keeping the ones it has.
    Add(&'h str, &'h [u8]),
}

/// The kind and the name, and the value's length, never the value: it may be the credential.
impl std::fmt::Debug for HeaderEdit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, name, value) = match *self {
            Self::Remove(name) => return write!(f, "Remove({})", crate::json::Quoted(name)),
            Self::Set(name, value) => ("Set", name, value),
            Self::Add(name, value) => ("Add", name, value),
        };
        let line = Withheld {
            name: name.as_bytes(),
            value,
        };
        write!(f, "{kind}({line:?})")
    }
}

impl<'h> HeaderEdit<'h> {
    /// The header the edit changes.
    pub fn name(self) -> &'h str {
        match self {
            Self::Remove(name) | Self::Set(name, _) | Self::Add(name, _) => name,
        }
    }
}

/// A header value as the list takes it: text or bytes, borrowed when possible.
pub trait IntoValue<'a> {
    /// The value as bytes.
    fn into_value(self) -> Cow<'a, [u8]>;
}

impl<'a> IntoValue<'a> for &'a str {
    fn into_value(self) -> Cow<'a, [u8]> {
        Cow::Borrowed(self.as_bytes())
    }
}

impl<'a> IntoValue<'a> for &'a [u8] {
    fn into_value(self) -> Cow<'a, [u8]> {
        Cow::Borrowed(self)
    }
}

impl<'a> IntoValue<'a> for Vec<u8> {
    fn into_value(self) -> Cow<'a, [u8]> {
        Cow::Owned(self)
    }
}

/// Whether a stored (lower-case) name is `name`, compared ASCII case-insensitively.
/// Only `name` needs folding: the stored side is lower-case already.
#[cfg(test)]
fn is_named(stored: &[u8], name: &str) -> bool {
    NameKey::new(name).matches(stored)
}

/// A name folded once for comparing against many stored (lower-case) names: a scan then folds
/// only the words of the lines whose length matches, never the name again.
#[derive(Clone, Copy)]
struct NameKey<'n> {
    bytes: &'n [u8],
    /// `last_word` of the name, lower-cased.
    last: u64,
    /// `first_word` of the name, lower-cased; 0 for a name shorter than eight bytes.
    first: u64,
}

impl<'n> NameKey<'n> {
    #[inline(always)]
    fn new(name: &'n str) -> Self {
        let bytes = name.as_bytes();
        Self {
            bytes,
            last: to_ascii_lowercase(last_word(bytes)),
            first: first_word(bytes).map_or(0, to_ascii_lowercase),
        }
    }

    /// Whether `stored` is this name. Lengths settle almost every comparison; equal lengths are
    /// compared eight bytes at a time, which the names of every request make cheaper than a byte
    /// loop.
    #[inline(always)]
    fn matches(self, stored: &[u8]) -> bool {
        stored.len() == self.bytes.len()
            && last_word(stored) == self.last
            && first_word(stored).is_none_or(|first| first == self.first)
            && (stored.len() <= 16 || middle_words_match(stored, self.bytes))
    }
}

/// Whether every word of `stored` is the word of `name` lower-cased, for the rare names longer than
/// sixteen bytes: out of line, so the loop is not copied into every scan.
#[inline(never)]
fn middle_words_match(stored: &[u8], name: &[u8]) -> bool {
    stored
        .as_chunks::<8>()
        .0
        .iter()
        .zip(name.as_chunks::<8>().0)
        .all(|(stored, name)| {
            u64::from_le_bytes(*stored) == to_ascii_lowercase(u64::from_le_bytes(*name))
        })
}

/// Whether two byte strings are equal, compared eight bytes at a time: `==` on slices calls the
/// guest's byte-by-byte `memcmp`, which cost several times as much for the short strings a request
/// compares (a path prefix, a label).
#[inline]
pub(crate) fn same_bytes(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && last_word(left) == last_word(right)
        && first_word(left) == first_word(right)
        && (left.len() <= 16 || middle_words_equal(left, right))
}

/// Whether the words of two byte strings longer than sixteen bytes are equal: out of line, so the
/// loop is not copied into every comparison.
#[inline(never)]
fn middle_words_equal(left: &[u8], right: &[u8]) -> bool {
    left.as_chunks::<8>()
        .0
        .iter()
        .zip(right.as_chunks::<8>().0)
        .all(|(left, right)| u64::from_le_bytes(*left) == u64::from_le_bytes(*right))
}

/// Index of the first byte of `bytes` that is one of `needles`, looked at eight bytes per step: in
/// the guest every turn of a byte loop costs a dozen instructions besides its work.
pub(crate) fn position_of_any<const N: usize>(bytes: &[u8], needles: [u8; N]) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    // Each needle's mask may flag false bytes only above a true one, so the lowest flag of them
    // all is a true match.
    first_flagged(bytes, |word| {
        needles.iter().fold(0, |flags, &needle| {
            let zero = word ^ ONES.wrapping_mul(u64::from(needle));
            flags | (zero.wrapping_sub(ONES) & !zero & HIGHS)
        })
    })
}

/// Index of the first byte `flags` marks, given words of eight bytes (little-endian) and setting
/// the high bit of each byte it marks, where it may mark false bytes only above a true one.
/// Every byte is looked at in words: a tail is the last eight bytes again (overlapping bytes
/// already searched), and fewer than eight bytes fill a word with the last byte repeated.
pub(crate) fn first_flagged(bytes: &[u8], flags: impl Fn(u64) -> u64) -> Option<usize> {
    let lowest = |flagged: u64| (flagged.trailing_zeros() / 8) as usize;
    let (words, tail) = bytes.as_chunks::<8>();
    for (index, word) in words.iter().enumerate() {
        let flagged = flags(u64::from_le_bytes(*word));
        if flagged != 0 {
            return Some(index * 8 + lowest(flagged));
        }
    }
    if tail.is_empty() {
        return None;
    }
    if let Some(word) = bytes.last_chunk::<8>() {
        let flagged = flags(u64::from_le_bytes(*word));
        return (flagged != 0).then(|| bytes.len() - 8 + lowest(flagged));
    }
    let last = tail.len() - 1;
    let word = std::array::from_fn(|at| tail.get(at.min(last)).copied().unwrap_or_default());
    let flagged = flags(u64::from_le_bytes(word));
    (flagged != 0).then(|| lowest(flagged).min(last))
}

/// `name` as stored: borrowed when it is lower-case already, which every
/// validated configuration name is.
fn stored_name<'a>(name: impl Into<Cow<'a, str>>) -> Cow<'a, [u8]> {
    match name.into() {
        // Checked in place, the usual case: a call to `lower_case` cost more than the check.
        Cow::Borrowed(name) if !has_upper_case(name.as_bytes()) => Cow::Borrowed(name.as_bytes()),
        Cow::Borrowed(name) => lower_case(Cow::Borrowed(name.as_bytes())),
        Cow::Owned(name) => lower_case(Cow::Owned(name.into_bytes())),
    }
}

/// `name` lower-cased, borrowed when it is lower-case already (as every host's names are).
fn lower_case(mut name: Cow<'_, [u8]>) -> Cow<'_, [u8]> {
    if has_upper_case(&name) {
        name.to_mut().make_ascii_lowercase();
    }
    name
}

/// Whether `bytes` holds an ASCII upper-case letter, looked at eight bytes at a time: a byte loop
/// cost several times as much for the names of every request.
#[inline(always)]
fn has_upper_case(bytes: &[u8]) -> bool {
    ascii_uppercase(last_word(bytes)) | ascii_uppercase(first_word(bytes).unwrap_or_default()) != 0
        || (bytes.len() > 16 && middle_has_upper_case(bytes))
}

/// Whether a word of `bytes` holds an ASCII upper-case letter, for the rare names longer than
/// sixteen bytes: out of line, so the loop is not copied into every check.
#[inline(never)]
fn middle_has_upper_case(bytes: &[u8]) -> bool {
    bytes
        .as_chunks::<8>()
        .0
        .iter()
        .any(|word| ascii_uppercase(u64::from_le_bytes(*word)) != 0)
}

/// The first eight bytes of `bytes` as a little-endian word, when it has eight. With
/// [`last_word`] it covers every byte of up to sixteen, so most names need no loop, whose every
/// turn costs the guest more than a word's work.
#[inline(always)]
fn first_word(bytes: &[u8]) -> Option<u64> {
    bytes
        .first_chunk::<8>()
        .map(|first| u64::from_le_bytes(*first))
}

/// The last eight bytes of `bytes` as a little-endian word; fewer than eight as one word, from
/// four on of two overlapping halves. Together with the whole words of eight it covers every byte,
/// and two slices of one length are equal exactly when all these words are.
#[inline(always)]
fn last_word(bytes: &[u8]) -> u64 {
    if let Some(last) = bytes.last_chunk::<8>() {
        return u64::from_le_bytes(*last);
    }
    match (bytes.first_chunk::<4>(), bytes.last_chunk::<4>()) {
        (Some(first), Some(last)) => {
            u64::from(u32::from_le_bytes(*first)) | u64::from(u32::from_le_bytes(*last)) << 32
        }
        _ => bytes
            .iter()
            .fold(0, |word, byte| word << 8 | u64::from(*byte)),
    }
}

/// The high bit of every byte of `word` that is an ASCII upper-case letter.
#[inline(always)]
fn ascii_uppercase(word: u64) -> u64 {
    const LOW_BITS: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    // Per byte, with the high bit cleared so no sum carries into the next byte: adding 0x3f sets
    // the high bit from `A` up, adding 0x25 from `[` up; bytes from 0x80 are not ASCII.
    let low = word & LOW_BITS;
    (low + 0x3f3f_3f3f_3f3f_3f3f) & !(low + 0x2525_2525_2525_2525) & !word & HIGH_BITS
}

/// `word` with its ASCII upper-case letters lower-cased (0x20 is the high bit shifted by two).
#[inline(always)]
fn to_ascii_lowercase(word: u64) -> u64 {
    word | ascii_uppercase(word) >> 2
}

impl<'a> HeaderList<'a> {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a list from host pairs, lower-casing the names. Owned pairs are
    /// moved in, borrowed ones stay borrowed.
    pub fn from_pairs<N, V, I>(pairs: I) -> Self
    where
        N: Into<Cow<'a, str>>,
        V: Into<Cow<'a, [u8]>>,
        I: IntoIterator<Item = (N, V)>,
    {
        let entries = pairs
            .into_iter()
            .map(|(name, value)| (stored_name(name), value.into()))
            .collect::<Vec<_>>();
        let name_bits = name_bits_of(&entries);
        Self { entries, name_bits }
    }

    /// Reads a header map in the proxy-wasm wire form (a little-endian `u32` count, then a `u32`
    /// name size and value size per entry, then each name and value followed by a NUL), borrowing
    /// every name and value from `bytes`: the host's copy is the only one.
    pub fn from_serialized(bytes: &'a [u8]) -> Result<Self, MalformedMap> {
        Self::from_serialized_with_room(bytes, 0)
    }

    /// [`HeaderList::from_serialized`] with room for `extra` more lines, so a rewrite that adds
    /// headers does not grow the list.
    pub fn from_serialized_with_room(bytes: &'a [u8], extra: usize) -> Result<Self, MalformedMap> {
        let map = Serialized::new(bytes)?;
        let mut entries = Vec::with_capacity(map.len().saturating_add(extra));
        let mut name_bits = 0;
        map.for_each(|name, value| {
            name_bits |= name_bit(name);
            // Checked in place: every host hands over lower-case names, and a call per name cost
            // more than the check.
            let name = if has_upper_case(name) {
                Cow::Owned(name.to_ascii_lowercase())
            } else {
                Cow::Borrowed(name)
            };
            entries.push((name, Cow::Borrowed(value)));
        })?;
        Ok(Self { entries, name_bits })
    }

    /// A list with the same entries that borrows them from this one: a copy to rewrite that
    /// copies no name or value.
    pub fn view(&self) -> HeaderList<'_> {
        let entries = self
            .entries
            .iter()
            .map(|(name, value)| (Cow::Borrowed(&**name), Cow::Borrowed(&**value)))
            .collect();
        HeaderList {
            entries,
            name_bits: self.name_bits,
        }
    }

    /// Number of entries (header lines).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries in order; a name that is not UTF-8 (which no HTTP name is) is shown lossily.
    pub fn iter(&self) -> impl Iterator<Item = (Cow<'_, str>, &[u8])> {
        self.entries
            .iter()
            .map(|(name, value)| (String::from_utf8_lossy(name), &**value))
    }

    /// Every value of `name`, in order.
    pub fn get_all<'s, 'n>(
        &'s self,
        name: &'n str,
    ) -> impl Iterator<Item = &'s [u8]> + Clone + use<'s, 'a, 'n> {
        let key = NameKey::new(name);
        let lines: &[Line<'a>] = if self.may_hold(name) {
            &self.entries
        } else {
            &[]
        };
        lines
            .iter()
            .filter(move |(entry, _)| key.matches(entry))
            .map(|(_, value)| &**value)
    }

    /// The first value of `name`.
    pub fn first(&self, name: &str) -> Option<&[u8]> {
        // Not through `get_all`: its iterator cost more than the scan for a single value.
        self.value_at(self.position(name)?)
    }

    /// Whether `name` has at least one value.
    pub fn contains(&self, name: &str) -> bool {
        self.position(name).is_some()
    }

    /// How many values `name` has.
    pub fn count(&self, name: &str) -> usize {
        self.get_all(name).count()
    }

    /// The value of the line at `index`.
    fn value_at(&self, index: usize) -> Option<&[u8]> {
        self.entries.get(index).map(|(_, value)| &**value)
    }

    /// Whether a line of `name` may be in the list; false means it is not.
    fn may_hold(&self, name: &str) -> bool {
        self.name_bits & name_bit(name.as_bytes()) != 0
    }

    /// Index of the first line of `name`.
    #[inline]
    fn position(&self, name: &str) -> Option<usize> {
        self.find(name).map(|(first, _)| first)
    }

    /// Index of the first line of `name`, with the key that found it, for a scan of the rest.
    #[inline]
    fn find<'n>(&self, name: &'n str) -> Option<(usize, NameKey<'n>)> {
        if !self.may_hold(name) {
            return None;
        }
        let key = NameKey::new(name);
        self.entries
            .iter()
            .position(|(entry, _)| key.matches(entry))
            .map(|first| (first, key))
    }

    /// Replaces every value of `name` with `value`, keeping the position of the
    /// first existing line (or appending when absent).
    pub fn set(&mut self, name: &'a str, value: impl IntoValue<'a>) {
        Rewrite::new(self, &mut |_| {}).set(name, value);
    }

    /// Adds one more line for `name`, after any existing ones.
    pub fn append(&mut self, name: &'a str, value: impl IntoValue<'a>) {
        Rewrite::new(self, &mut |_| {}).append(name, value);
    }

    /// Removes every value of `name`; returns whether anything was removed.
    pub fn remove(&mut self, name: &str) -> bool {
        Rewrite::new(self, &mut |_| {}).remove(name)
    }

    /// Moves every value of `from` to `to`, replacing any existing `to` values.
    /// Returns false, changing nothing, when `from` is absent.
    pub fn rename(&mut self, from: &str, to: &'a str) -> bool {
        Rewrite::new(self, &mut |_| {}).rename(from, to)
    }

    /// Removes the lines `key` matches from index `from` on; returns whether there were any.
    fn remove_from(&mut self, key: NameKey<'_>, from: usize) -> bool {
        // The lines after a removed one move down one at a time, and nothing moves before the scan
        // meets a line of the name (a name almost always has one): `Vec::remove` moved them with a
        // call to the host's `memmove`, which cost more for the few lines of a request.
        let mut kept = from;
        for index in from..self.entries.len() {
            if self
                .entries
                .get(index)
                .is_some_and(|(entry, _)| !key.matches(entry))
            {
                if kept != index {
                    self.entries.swap(kept, index);
                }
                kept += 1;
            }
        }
        let removed = kept < self.entries.len();
        self.entries.truncate(kept);
        removed
    }

    /// The entries as owned pairs.
    pub fn into_pairs(self) -> Vec<(String, Vec<u8>)> {
        self.entries
            .into_iter()
            .map(|(name, value)| {
                (
                    String::from_utf8_lossy(&name).into_owned(),
                    value.into_owned(),
                )
            })
            .collect()
    }
}

/// A header list changed in place, each change handed to `edits` as the host edit that makes the
/// same change to the host's map: the host's map and the list then hold the same values per name
/// (a new line may land elsewhere; the order of different names carries no meaning in HTTP),
/// without a copy of the list to compare with afterwards. Reads go to the list.
pub struct Rewrite<'r, 'a> {
    list: &'r mut HeaderList<'a>,
    edits: &'r mut dyn FnMut(HeaderEdit<'_>),
}

impl<'a> std::ops::Deref for Rewrite<'_, 'a> {
    type Target = HeaderList<'a>;

    fn deref(&self) -> &HeaderList<'a> {
        self.list
    }
}

impl<'r, 'a> Rewrite<'r, 'a> {
    /// A rewrite of `list` that hands its edits to `edits`.
    pub fn new(list: &'r mut HeaderList<'a>, edits: &'r mut dyn FnMut(HeaderEdit<'_>)) -> Self {
        Self { list, edits }
    }

    /// [`HeaderList::set`]: one `Set` edit, an `Add` for a name the list lacks, none for a value
    /// set again.
    pub fn set(&mut self, name: &'a str, value: impl IntoValue<'a>) {
        let value = value.into_value();
        let list = &mut *self.list;
        match list.find(name) {
            Some((first, key)) => {
                let removed = list.remove_from(key, first + 1);
                let Some(entry) = list.entries.get_mut(first) else {
                    return;
                };
                if removed || !same_bytes(&entry.1, &value) {
                    (self.edits)(HeaderEdit::Set(name, &value));
                }
                entry.1 = value;
            }
            None => {
                // A header the map lacks is added: the same map as setting it, and a host need
                // not look for values to replace first.
                (self.edits)(HeaderEdit::Add(name, &value));
                list.name_bits |= name_bit(name.as_bytes());
                list.entries.push((stored_name(name), value));
            }
        }
    }

    /// [`HeaderList::append`]: one `Add` edit.
    pub fn append(&mut self, name: &'a str, value: impl IntoValue<'a>) {
        let value = value.into_value();
        (self.edits)(HeaderEdit::Add(name, &value));
        self.list.name_bits |= name_bit(name.as_bytes());
        self.list.entries.push((stored_name(name), value));
    }

    /// [`HeaderList::remove`]: one `Remove` edit when the name was there.
    pub fn remove(&mut self, name: &str) -> bool {
        // Most removed names are absent (clients rarely send a credential): one scan says so.
        let Some((first, key)) = self.list.find(name) else {
            return false;
        };
        self.list.remove_from(key, first);
        (self.edits)(HeaderEdit::Remove(name));
        true
    }

    /// [`HeaderList::rename`]: `to` and `from` removed, then an `Add` of `to` per value `from`
    /// had, in order.
    pub fn rename(&mut self, from: &str, to: &'a str) -> bool {
        if !self.list.contains(from) {
            return false;
        }
        if from.eq_ignore_ascii_case(to) {
            return true;
        }
        self.remove(to);
        (self.edits)(HeaderEdit::Remove(from));
        let key = NameKey::new(from);
        for (_, value) in self
            .list
            .entries
            .iter()
            .filter(|(name, _)| key.matches(name))
        {
            (self.edits)(HeaderEdit::Add(to, value));
        }
        let stored = stored_name(to);
        self.list.name_bits |= name_bit(&stored);
        for (entry, _) in &mut self.list.entries {
            if key.matches(entry) {
                entry.clone_from(&stored);
            }
        }
        true
    }
}

/// A bit for `name` from its length and its last byte, ASCII case folded (`| 0x20` maps a letter of
/// either case to its lower case, and any other byte to the same value for both names): names of
/// different bits cannot be equal. The last byte parts names of one length, such as `accept` and a
/// rule's `x-team`, that length alone would send to a scan.
fn name_bit(name: &[u8]) -> u64 {
    let last = name.last().map_or(0, |byte| byte | 0x20);
    // Truncation is harmless: the sum only picks a bit, and two names sharing one are compared.
    1_u64.rotate_left(name.len() as u32 + u32::from(last))
}

/// Test shorthand: a header list from text pairs.
#[cfg(test)]
pub(crate) fn test_list(pairs: &[(&str, &str)]) -> HeaderList<'static> {
    HeaderList::from_pairs(
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.as_bytes().to_vec())),
    )
}

/// Test reference: an edit as a test keeps it, the kind, the name, the value.
#[cfg(test)]
pub(crate) type Kept = (&'static str, String, Vec<u8>);

/// Test reference: `edit` kept past the borrow of its name and value.
#[cfg(test)]
pub(crate) fn keep(edit: HeaderEdit<'_>) -> Kept {
    match edit {
        HeaderEdit::Remove(name) => ("remove", name.to_owned(), Vec::new()),
        HeaderEdit::Set(name, value) => ("set", name.to_owned(), value.to_vec()),
        HeaderEdit::Add(name, value) => ("add", name.to_owned(), value.to_vec()),
    }
}

/// Test reference: carries out a kept edit the way a host does, per name, in order.
#[cfg(test)]
pub(crate) fn carry_out<'k>(map: &mut HeaderList<'k>, (kind, name, value): &'k Kept) {
    match *kind {
        "remove" => {
            map.remove(name);
        }
        "set" => map.set(name, &value[..]),
        _ => map.append(name, &value[..]),
    }
}

/// Test shorthand: a deterministic xorshift source for the randomised tests.
#[cfg(test)]
pub(crate) fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::headers::test_list as list;

    #[test]
    fn position_of_any_agrees_with_a_byte_scan() {
        let text = b"abc,def?ghij#klmnopq,rstu,,vwxyz0123456789";
        for start in 0..text.len() {
            for end in start..=text.len() {
                let bytes = &text[start..end];
                for needles in [[b','; 1], [b'?'; 1], [b'z'; 1]] {
                    let scan = bytes.iter().position(|byte| needles.contains(byte));
                    assert_eq!(position_of_any(bytes, needles), scan, "{start}..{end}");
                }
                let scan = bytes.iter().position(|&byte| byte == b'?' || byte == b'#');
                assert_eq!(position_of_any(bytes, [b'?', b'#']), scan, "{start}..{end}");
            }
        }
        assert_eq!(position_of_any(b"\x80\x81,", [b',']), Some(2));
        assert_eq!(position_of_any(b"\x01\x00\x2c\xac", [b',']), Some(2));
    }

    /// The proxy-wasm wire form of `pairs`, as a host writes it.
    fn serialized(pairs: &[(&str, &[u8])]) -> Vec<u8> {
        let mut bytes = u32::try_from(pairs.len()).unwrap().to_le_bytes().to_vec();
        for (name, value) in pairs {
            bytes.extend(u32::try_from(name.len()).unwrap().to_le_bytes());
            bytes.extend(u32::try_from(value.len()).unwrap().to_le_bytes());
        }
        for (name, value) in pairs {
            bytes.extend(name.as_bytes());
            bytes.push(0);
            bytes.extend(*value);
            bytes.push(0);
        }
        bytes
    }

    #[test]
    fn a_serialized_map_is_read_in_place() {
        let bytes = serialized(&[
            (":path", b"/v1/messages"),
            ("X-Api-Key", b"k"),
            ("x-bin", &[0xff, 0]),
            ("empty", b""),
        ]);
        let headers = HeaderList::from_serialized(&bytes).unwrap();
        assert_eq!(
            headers.iter().collect::<Vec<_>>(),
            vec![
                (":path".into(), &b"/v1/messages"[..]),
                ("x-api-key".into(), &b"k"[..]),
                ("x-bin".into(), &[0xff, 0][..]),
                ("empty".into(), &b""[..]),
            ]
        );
        assert!(HeaderList::from_serialized(&[]).unwrap().is_empty());
        assert!(
            HeaderList::from_serialized(&serialized(&[]))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_malformed_serialized_map_is_an_error_never_a_panic() {
        let good = serialized(&[("a", b"1"), ("bb", b"22")]);
        // Every truncation, and a forged count far beyond the bytes.
        for cut in 1..good.len() {
            assert!(
                HeaderList::from_serialized(&good[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut forged = good.clone();
        forged[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            HeaderList::from_serialized(&forged),
            Err(MalformedMap::Truncated)
        );
        let mut huge = good.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            HeaderList::from_serialized(&huge),
            Err(MalformedMap::Truncated)
        );
        let mut unterminated = good.clone();
        let nul = 4 + 16 + 1;
        unterminated[nul] = b'x';
        assert_eq!(
            HeaderList::from_serialized(&unterminated),
            Err(MalformedMap::Unterminated)
        );
        // The last value's size running to the end of the bytes leaves no room for its NUL; one
        // more points past the end.
        let mut to_the_end = good.clone();
        to_the_end[16..20].copy_from_slice(&3_u32.to_le_bytes());
        assert_eq!(
            HeaderList::from_serialized(&to_the_end),
            Err(MalformedMap::Unterminated)
        );
        let mut past_the_end = good.clone();
        past_the_end[16..20].copy_from_slice(&4_u32.to_le_bytes());
        assert_eq!(
            HeaderList::from_serialized(&past_the_end),
            Err(MalformedMap::Truncated)
        );
    }

    #[test]
    fn first_values_read_what_a_list_of_the_map_holds() {
        let names = [
            ":status",
            "content-type",
            "content-encoding",
            "authorization",
        ];
        let maps: [&[(&str, &[u8])]; 6] = [
            &[],
            &[(":status", b"200"), ("content-type", b"application/json")],
            &[
                ("server", b"s"),
                ("Content-Type", b"text/event-stream"),
                ("content-type", b"second"),
                ("content-encoding", b""),
                ("AUTHORIZATION", b"Bearer echoed"),
                (":status", b"401"),
            ],
            &[
                ("content-typ", b"x"),
                ("content-typex", b"y"),
                ("x-status", b"z"),
            ],
            &[
                ("a-very-long-header-name-here", b"1"),
                ("content-encoding", b"gzip"),
            ],
            &[("\u{e9}t", b"1"), ("authorization", b"k")],
        ];
        for pairs in maps {
            let bytes = serialized(pairs);
            let list = HeaderList::from_serialized(&bytes).unwrap();
            let expected = names.map(|name| list.first(name));
            assert_eq!(first_values(&bytes, names).unwrap(), expected, "{pairs:?}");
        }
        // Malformed maps are refused as a list of them is, at every cut.
        let good = serialized(&[(":status", b"200"), ("content-type", b"json")]);
        for cut in 1..good.len() {
            assert_eq!(
                first_values(&good[..cut], names).err(),
                HeaderList::from_serialized(&good[..cut]).err(),
                "cut at {cut}"
            );
        }
        assert_eq!(first_values(&[], names).unwrap(), [None; 4]);
    }

    #[test]
    fn a_name_that_is_not_utf8_is_kept_and_never_matched() {
        let mut bytes = serialized(&[("\u{e9}", b"1"), ("x-api-key", b"k")]);
        bytes[4 + 16] = 0xff;
        let headers = HeaderList::from_serialized(&bytes).unwrap();
        assert_eq!(headers.len(), 2);
        assert_eq!(headers.iter().next().unwrap().0, "\u{fffd}\u{fffd}");
        let mut cleaned = headers.view();
        assert!(cleaned.remove("x-api-key"));
        assert_eq!(cleaned.len(), 1);
    }

    #[test]
    fn names_are_lower_cased_on_the_way_in() {
        let headers = list(&[("X-Team", "ml")]);
        assert_eq!(headers.first("x-team"), Some(&b"ml"[..]));
        assert_eq!(headers.first("X-TEAM"), Some(&b"ml"[..]));
        assert_eq!(headers.iter().next().unwrap().0, "x-team");
    }

    #[test]
    fn set_replaces_all_values_in_place_of_the_first() {
        let mut headers = list(&[("a", "1"), ("b", "x"), ("b", "y"), ("c", "3")]);
        headers.set("b", "z");
        assert_eq!(headers, list(&[("a", "1"), ("b", "z"), ("c", "3")]));
        headers.set("d", "4");
        assert_eq!(headers.first("d"), Some(&b"4"[..]));
        assert_eq!(headers.len(), 4);
    }

    #[test]
    fn append_keeps_existing_values() {
        let mut headers = list(&[("accept", "a")]);
        headers.append("Accept", "b");
        assert_eq!(
            headers.get_all("accept").collect::<Vec<_>>(),
            vec![b"a", b"b"]
        );
        assert_eq!(headers.count("accept"), 2);
    }

    #[test]
    fn lookups_skip_absent_names_and_still_find_every_line() {
        let mut headers = list(&[("ab", "1")]);
        assert_eq!(headers.first("xyz"), None);
        assert!(!headers.contains("xyz"));
        assert!(headers.remove("ab"));
        headers.append("CD", "2");
        assert_eq!(headers.first("cd"), Some(&b"2"[..]));
        // `cd` and this name of 66 bytes share a bit: the names are still compared.
        let long = format!("{}D", "x".repeat(65));
        assert_eq!(name_bit(b"cd"), name_bit(long.as_bytes()));
        headers.append(&long, "3");
        assert_eq!(headers.first(&long), Some(&b"3"[..]));
        assert_eq!(headers.first("ef"), None);
        // A name's bit does not depend on its case; names of one length can differ.
        for byte in 0..=127_u8 {
            assert_eq!(name_bit(&[byte]), name_bit(&[byte.to_ascii_lowercase()]));
        }
        assert_ne!(name_bit(b"accept"), name_bit(b"x-team"));
        // Equality looks at the lines alone.
        let mut other = list(&[("cd", "2")]);
        other.append(&long, "3");
        assert_eq!(headers, other);
    }

    #[test]
    fn remove_reports_whether_anything_went() {
        let mut headers = list(&[("a", "1"), ("a", "2"), ("b", "3")]);
        assert!(headers.remove("A"));
        assert!(!headers.remove("a"));
        assert_eq!(headers, list(&[("b", "3")]));
        // Lines of the name anywhere, the others kept in order.
        let mut headers = list(&[("x", "1"), ("a", "1"), ("x", "2"), ("a", "2"), ("a", "3")]);
        assert!(headers.remove("a"));
        assert_eq!(headers, list(&[("x", "1"), ("x", "2")]));
        let mut headers = list(&[("a", "1"), ("x", "1"), ("a", "2"), ("y", "1"), ("a", "3")]);
        headers.set("A", "z");
        assert_eq!(headers, list(&[("a", "z"), ("x", "1"), ("y", "1")]));
    }

    #[test]
    fn rename_moves_every_value_and_replaces_the_target() {
        let mut headers = list(&[("old", "1"), ("new", "x"), ("old", "2")]);
        assert!(headers.rename("old", "new"));
        assert_eq!(headers, list(&[("new", "1"), ("new", "2")]));
        assert!(!headers.rename("missing", "other"));
        assert!(headers.rename("new", "NEW"));
        assert_eq!(headers.count("new"), 2);
    }

    #[test]
    fn word_wise_name_checks_agree_with_byte_wise_ones() {
        // Every length up to three words, with every ASCII byte in each position (a name is text:
        // non-ASCII bytes come in characters, tested below).
        let bytes: Vec<u8> = (0..=127_u8).collect();
        for len in 0..25 {
            for at in 0..len.max(1) {
                for probe in 0..=127_u8 {
                    let mut name: Vec<u8> = bytes
                        .iter()
                        .cycle()
                        .skip(len * 7)
                        .take(len)
                        .copied()
                        .collect();
                    if let Some(byte) = name.get_mut(at) {
                        *byte = probe;
                    }
                    let name = String::from_utf8(name).unwrap();
                    let stored = stored_name(name.as_str());
                    assert_eq!(*stored, *name.to_ascii_lowercase().as_bytes(), "{name:?}");
                    assert_eq!(
                        matches!(stored, Cow::Borrowed(_)),
                        *stored == *name.as_bytes(),
                        "{name:?}"
                    );
                    assert!(is_named(&stored, &name), "{name:?}");
                    let mut other = stored.clone().into_owned();
                    if let Some(byte) = other.get_mut(at).filter(|byte| byte.is_ascii()) {
                        *byte ^= 0x01;
                        let other = String::from_utf8(other).unwrap();
                        assert!(!is_named(&stored, &other), "{name:?} {other:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn word_wise_byte_comparison_agrees_with_slice_equality() {
        let text: Vec<u8> = (0..40_u8).map(|n| b'a' + n % 26).collect();
        for len in 0..text.len() {
            let left = &text[..len];
            assert!(same_bytes(left, left), "{len}");
            assert!(!same_bytes(left, &text[..=len]), "{len}");
            for at in 0..len {
                let mut right = left.to_vec();
                right[at] ^= 0x01;
                assert!(!same_bytes(left, &right), "{len} {at}");
            }
        }
    }

    #[test]
    fn names_match_case_insensitively_at_every_length() {
        for len in 0..25 {
            let stored: String = "abcdefghijklmnopqrstuvwxy-"[..len].to_owned();
            let upper = stored.to_ascii_uppercase();
            assert!(is_named(stored.as_bytes(), &stored));
            assert!(is_named(stored.as_bytes(), &upper));
            assert!(!is_named(stored.as_bytes(), &format!("{stored}a")));
            for at in 0..len {
                let mut other = upper.clone().into_bytes();
                other[at] = b'!';
                assert!(!is_named(
                    stored.as_bytes(),
                    std::str::from_utf8(&other).unwrap()
                ));
            }
        }
        assert!(is_named("x-\u{e9}t\u{e9}".as_bytes(), "X-\u{e9}T\u{e9}"));
        assert!(!is_named("x-\u{e9}".as_bytes(), "x-\u{c9}"));
    }

    #[test]
    fn non_utf8_values_are_kept_as_bytes() {
        let headers = HeaderList::from_pairs(vec![("x-bin", vec![0xff, 0xfe])]);
        assert_eq!(headers.first("x-bin"), Some(&[0xff, 0xfe][..]));
    }

    #[test]
    fn a_rewrite_hands_each_change_to_the_host_as_its_edit() {
        let mut headers = list(&[
            ("a", "1"),
            ("b", "2"),
            ("b", "3"),
            ("c", "4"),
            ("x-old", "o"),
            ("x-old", "p"),
            ("x-new", "n"),
        ]);
        let mut edits = Vec::new();
        let mut record = |edit: HeaderEdit<'_>| edits.push(keep(edit));
        let mut rewrite = Rewrite::new(&mut headers, &mut record);
        rewrite.set("a", "1");
        rewrite.set("a", "9");
        rewrite.set("b", "2");
        rewrite.set("new", "n");
        rewrite.append("c", "5");
        assert!(rewrite.remove("C"));
        assert!(!rewrite.remove("absent"));
        assert!(rewrite.rename("x-old", "x-new"));
        assert!(!rewrite.rename("absent", "x-new"));
        assert_eq!(rewrite.first("a"), Some(&b"9"[..]));
        let kept =
            |kind, name: &str, value: &str| (kind, name.to_owned(), value.as_bytes().to_vec());
        assert_eq!(
            edits,
            vec![
                kept("set", "a", "9"),
                kept("set", "b", "2"),
                kept("add", "new", "n"),
                kept("add", "c", "5"),
                kept("remove", "C", ""),
                kept("remove", "x-new", ""),
                kept("remove", "x-old", ""),
                kept("add", "x-new", "o"),
                kept("add", "x-new", "p"),
            ]
        );
        assert_eq!(
            headers,
            list(&[
                ("a", "9"),
                ("b", "2"),
                ("x-new", "o"),
                ("x-new", "p"),
                ("new", "n")
            ])
        );
    }

    #[test]
    fn a_host_carrying_out_a_rewrites_edits_holds_what_the_list_holds() {
        let names = ["a", "b", "A", "content-type", "x-a-very-long-header-name"];
        let values = ["1", "2", ""];
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        for _ in 0..2000 {
            let mut original = HeaderList::new();
            for _ in 0..(next() % 6) {
                let name = names[(next() % names.len() as u64) as usize];
                original.append(name, values[(next() % values.len() as u64) as usize]);
            }
            let mut edits = Vec::new();
            let mut rewritten = original.clone();
            let mut record = |edit: HeaderEdit<'_>| edits.push(keep(edit));
            let mut rewrite = Rewrite::new(&mut rewritten, &mut record);
            for _ in 0..(next() % 6) {
                let name = names[(next() % names.len() as u64) as usize];
                let other = names[(next() % names.len() as u64) as usize];
                let value = values[(next() % values.len() as u64) as usize];
                match next() % 4 {
                    0 => rewrite.set(name, value),
                    1 => rewrite.append(name, value),
                    2 => {
                        rewrite.remove(name);
                    }
                    _ => {
                        rewrite.rename(name, other);
                    }
                }
            }
            let mut host = original.clone();
            for edit in &edits {
                carry_out(&mut host, edit);
            }
            for name in names {
                assert_eq!(
                    host.get_all(name).collect::<Vec<_>>(),
                    rewritten.get_all(name).collect::<Vec<_>>(),
                    "{name} after {original:?}"
                );
            }
        }
    }

    #[test]
    fn debug_output_names_headers_and_never_shows_a_value() {
        let headers = list(&[("authorization", "Bearer sk-ant-oat01-secret"), ("x-a", "")]);
        let shown = format!("{headers:?}");
        assert_eq!(shown, r#"["authorization": <26 bytes>, "x-a": <0 bytes>]"#);
        let edits = [
            HeaderEdit::Set("authorization", b"Bearer sk-ant-oat01-secret"),
            HeaderEdit::Add("authorization", b"Bearer sk-ant-oat01-secret"),
            HeaderEdit::Remove("authorization"),
        ];
        assert_eq!(
            format!("{edits:?}"),
            r#"[Set("authorization": <26 bytes>), Add("authorization": <26 bytes>), Remove("authorization")]"#
        );
    }

    #[test]
    fn a_view_borrows_and_rewrites_without_touching_the_original() {
        let original = list(&[("a", "1"), ("b", "2")]);
        let mut view = original.view();
        view.set("a", "9");
        view.append("C", b"3".to_vec());
        assert_eq!(view, list(&[("a", "9"), ("b", "2"), ("c", "3")]));
        assert_eq!(original, list(&[("a", "1"), ("b", "2")]));
    }
}
