//! The ABI's byte encodings: serialized header maps and property paths.
//!
//! A map is a LE u32 count, then a (key length, value length) LE u32 pair per field, then each field as
//! `key\0value\0`. An empty map goes to the guest as zero bytes: the Rust SDK slices the first four bytes of
//! any non-empty input, so the spec's one-byte empty form would panic it.

use crate::headers::Headers;

/// Why a serialized map from the guest was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum MapDecodeError {
    /// The bytes end before the structure they announce.
    #[error("serialized map is truncated: {0}")]
    Truncated(&'static str),
    /// More fields than the host accepts.
    #[error("serialized map has {count} fields; the host accepts at most {limit}")]
    TooManyFields {
        /// Fields announced.
        count: u64,
        /// The limit.
        limit: usize,
    },
    /// A key or value is not followed by its NUL separator.
    #[error("serialized map field {0} is not NUL-terminated")]
    MissingTerminator(usize),
}

/// The encoded size of `headers`; 0 for an empty map. Constant time: the map keeps its byte total.
pub(crate) fn encoded_map_len(headers: &Headers) -> usize {
    if headers.is_empty() {
        return 0;
    }
    // A count, then per field two sizes and two NUL terminators, then the names and values themselves.
    headers
        .len()
        .saturating_mul(10)
        .saturating_add(4)
        .saturating_add(headers.byte_len())
}

/// Encodes `headers` into `out`, which must be exactly [`encoded_map_len`] bytes long (an empty map
/// encodes as nothing); `None` when it is not.
pub(crate) fn encode_map(headers: &Headers, out: &mut [u8]) -> Option<()> {
    if out.len() != encoded_map_len(headers) {
        return None;
    }
    if headers.is_empty() {
        return Some(());
    }
    // The map holds its fields as `key\0value\0` already: only the sizes are written field by field.
    let sizes_len = headers.len().saturating_mul(8).saturating_add(4);
    let (mut sizes, mut data) = out.split_at_mut_checked(sizes_len)?;
    put_u32(&mut sizes, len_u32(headers.len()))?;
    for (key_len, value_len) in headers.field_lens() {
        put_u32(&mut sizes, len_u32(key_len))?;
        put_u32(&mut sizes, len_u32(value_len))?;
    }
    put(&mut data, headers.field_bytes())
}

/// Writes a little-endian u32 at the front of `out` and moves `out` past it: a fixed-size store, where
/// [`put`] would call `memcpy` for four bytes.
fn put_u32(out: &mut &mut [u8], value: u32) -> Option<()> {
    let (word, tail) = std::mem::take(out).split_first_chunk_mut::<4>()?;
    *word = value.to_le_bytes();
    *out = tail;
    Some(())
}

/// Writes `bytes` at the front of `out` and moves `out` past them; `None` when they do not fit.
fn put(out: &mut &mut [u8], bytes: &[u8]) -> Option<()> {
    let (head, tail) = std::mem::take(out).split_at_mut_checked(bytes.len())?;
    head.copy_from_slice(bytes);
    *out = tail;
    Some(())
}

fn len_u32(len: usize) -> u32 {
    // Guest-visible sizes are capped far below 4 GiB before they get here.
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// Decodes a map the guest sent, lower-casing names. Both empty forms (no bytes, or a zero count) give an
/// empty map.
pub(crate) fn decode_map(bytes: &[u8], max_fields: usize) -> Result<Headers, MapDecodeError> {
    if bytes.len() < 4 {
        // Zero bytes or the spec's single NUL byte: the empty map.
        return Ok(Headers::new());
    }
    let (count_bytes, rest) = bytes.split_at(4);
    let count = u64::from(read_u32(count_bytes));
    if count > max_fields as u64 {
        return Err(MapDecodeError::TooManyFields {
            count,
            limit: max_fields,
        });
    }
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    let sizes_len = count
        .checked_mul(8)
        .ok_or(MapDecodeError::Truncated("field sizes"))?;
    if rest.len() < sizes_len {
        return Err(MapDecodeError::Truncated("field sizes"));
    }
    let (sizes, mut data) = rest.split_at(sizes_len);
    let mut headers = Headers::with_capacity(count, data.len());
    for (index, size_pair) in sizes.chunks_exact(8).enumerate() {
        let (key_len, value_len) = size_pair.split_at(4);
        let key = take_terminated(&mut data, read_u32(key_len), index)?;
        let value = take_terminated(&mut data, read_u32(value_len), index)?;
        headers.add(key, value);
    }
    Ok(headers)
}

fn take_terminated<'a>(
    data: &mut &'a [u8],
    len: u32,
    index: usize,
) -> Result<&'a [u8], MapDecodeError> {
    let len = usize::try_from(len).map_err(|_| MapDecodeError::Truncated("field data"))?;
    let with_nul = len
        .checked_add(1)
        .ok_or(MapDecodeError::Truncated("field data"))?;
    if data.len() < with_nul {
        return Err(MapDecodeError::Truncated("field data"));
    }
    let (field, rest) = data.split_at(with_nul);
    let (text, nul) = field.split_at(len);
    if nul != [0] {
        return Err(MapDecodeError::MissingTerminator(index));
    }
    *data = rest;
    Ok(text)
}

fn read_u32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    for (slot, byte) in word.iter_mut().zip(bytes) {
        *slot = *byte;
    }
    u32::from_le_bytes(word)
}

/// The most segments a property path the host derives a value for has (`request.headers.<name>`).
const MAX_PATH_SEGMENTS: usize = 3;

/// A property path's NUL-separated segments, held without allocating.
pub(crate) struct PathSegments<'a> {
    segments: [&'a [u8]; MAX_PATH_SEGMENTS],
    len: usize,
}

impl<'a> PathSegments<'a> {
    /// The segments in order.
    pub(crate) fn as_slice(&self) -> &[&'a [u8]] {
        self.segments.get(..self.len).unwrap_or_default()
    }
}

/// Splits a property path into its NUL-separated segments; `None` when it has more than any property the
/// host derives.
pub(crate) fn split_path(path: &[u8]) -> Option<PathSegments<'_>> {
    let mut segments = PathSegments {
        segments: [&[]; MAX_PATH_SEGMENTS],
        len: 0,
    };
    for segment in path.split(|byte| *byte == 0) {
        *segments.segments.get_mut(segments.len)? = segment;
        segments.len += 1;
    }
    Some(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(headers: &Headers) -> Vec<u8> {
        let mut out = vec![0; encoded_map_len(headers)];
        assert_eq!(encode_map(headers, &mut out), Some(()));
        out
    }

    #[test]
    fn the_spec_example_encodes_byte_for_byte() {
        let expected: Vec<u8> = [
            &2u32.to_le_bytes()[..],
            &1u32.to_le_bytes(),
            &1u32.to_le_bytes(),
            &1u32.to_le_bytes(),
            &2u32.to_le_bytes(),
            b"a\x001\x00b\x0022\x00",
        ]
        .concat();
        let headers = Headers::from([("a", "1"), ("b", "22")]);
        assert_eq!(encoded_map_len(&headers), expected.len());
        assert_eq!(encoded(&headers), expected);
    }

    #[test]
    fn encoding_refuses_a_target_of_the_wrong_size() {
        let headers = Headers::from([("a", "1")]);
        let len = encoded_map_len(&headers);
        assert_eq!(encode_map(&headers, &mut vec![0; len - 1]), None);
        assert_eq!(encode_map(&headers, &mut vec![0; len + 1]), None);
    }

    #[test]
    fn an_empty_map_encodes_as_nothing_and_both_empty_forms_decode() {
        assert!(encoded(&Headers::new()).is_empty());
        assert_eq!(decode_map(&[], 10), Ok(Headers::new()));
        assert_eq!(decode_map(&[0], 10), Ok(Headers::new()));
    }

    #[test]
    fn decoding_round_trips_lower_cases_names_and_refuses_malformed_input() {
        let original = Headers::from([(":path", "/v1"), ("x", "")]);
        let out = encoded(&original);
        assert_eq!(decode_map(&out, 10), Ok(original));
        let upper = encoded(&Headers::from([("X-Upper", "V")]));
        let mut shouting = upper.clone();
        if let Some(name) = shouting.get_mut(12..19) {
            name.copy_from_slice(b"X-UPPER");
        }
        assert_eq!(
            decode_map(&shouting, 10),
            Ok(Headers::from([("x-upper", "V")]))
        );
        assert!(matches!(
            decode_map(&out[..out.len() - 1], 10),
            Err(MapDecodeError::Truncated(_))
        ));
        assert!(matches!(
            decode_map(&out, 1),
            Err(MapDecodeError::TooManyFields { count: 2, .. })
        ));
        let mut unterminated = out.clone();
        if let Some(last) = unterminated.last_mut() {
            *last = b'!';
        }
        assert_eq!(
            decode_map(&unterminated, 10),
            Err(MapDecodeError::MissingTerminator(1))
        );
        assert!(decode_map(&u32::MAX.to_le_bytes(), usize::MAX).is_err());
    }
}
