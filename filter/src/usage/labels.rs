//! Metric label values and tagged metric names.
//!
//! proxy-wasm metrics have no labels, so a metric per label set is defined under a *tagged name*:
//! `<base>;<key>=<value>;<key>=<value>`. `serve` renders it as `<base>{key="value",...}`; Envoy's
//! `stats_tags` extract the same pairs. A value may therefore never contain `;`, `=`, `"`, `\` or a
//! control byte: [`sanitize`] keeps `[A-Za-z0-9@._:+-]` and turns everything else into `_`.

use std::borrow::Cow;

/// The label of a caller or model beyond the cap on distinct values.
pub const OTHER: &str = "other";

/// The label of an absent or empty caller or model.
pub const UNKNOWN: &str = "unknown";

/// Longest label value, in bytes; longer values are cut.
pub const MAX_LABEL_BYTES: usize = 128;

/// Whether `byte` may stand in a label value as it is.
#[inline]
fn allowed(byte: u8) -> bool {
    ALLOWED.get(usize::from(byte)).copied().unwrap_or(false)
}

/// Whether every byte of `bytes` is [`allowed`], eight table look-ups per step: in the guest every
/// turn of a byte loop costs a dozen instructions besides its work. A tail is the last eight bytes
/// again, fewer than eight are padded with their last byte.
fn all_allowed(bytes: &[u8]) -> bool {
    let eight = |word: &[u8; 8]| word.iter().all(|&byte| allowed(byte));
    let (words, tail) = bytes.as_chunks::<8>();
    if !words.iter().all(eight) {
        return false;
    }
    match (tail.len(), bytes.last_chunk::<8>()) {
        (0, _) => true,
        (_, Some(last)) => eight(last),
        (len, None) => eight(&std::array::from_fn(|at| {
            tail.get(at.min(len - 1)).copied().unwrap_or_default()
        })),
    }
}

/// [`allowed`] by byte, worked out once: a table look-up per byte, where the comparisons cost
/// several times as much on every observed request.
static ALLOWED: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] =
            b.is_ascii_alphanumeric() || matches!(b, b'@' | b'.' | b'_' | b':' | b'+' | b'-');
        byte += 1;
    }
    table
};

/// The label value for `raw`: each byte outside `[A-Za-z0-9@._:+-]` becomes `_` (so a multi-byte
/// character becomes several), cut at [`MAX_LABEL_BYTES`]; empty is [`UNKNOWN`]. A value
/// that needs no change (the usual case, on every observed request) is borrowed, not copied.
pub fn sanitize(raw: &str) -> Cow<'_, str> {
    if raw.is_empty() {
        return Cow::Borrowed(UNKNOWN);
    }
    let bytes = raw.as_bytes();
    let kept = bytes.get(..MAX_LABEL_BYTES).unwrap_or(bytes);
    // Every allowed byte is ASCII, so the cut then falls on a character boundary.
    if all_allowed(kept)
        && let Some(text) = raw.get(..kept.len())
    {
        return Cow::Borrowed(text);
    }
    Cow::Owned(
        kept.iter()
            .map(|&byte| if allowed(byte) { char::from(byte) } else { '_' })
            .collect(),
    )
}

/// The tagged metric name `<base>;<key>=<value>...` for already sanitised values.
pub fn tagged(base: &str, tags: &[(&str, &str)]) -> String {
    let length = tags.iter().fold(base.len(), |length, (key, value)| {
        length + key.len() + value.len() + 2
    });
    let mut name = String::with_capacity(length);
    name.push_str(base);
    for (key, value) in tags {
        name.push(';');
        name.push_str(key);
        name.push('=');
        name.push_str(value);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_allowed_agrees_with_a_byte_scan() {
        let text = b"alice@example.com:8080+x-y_z;a=b\"c d\xc3\xa9.0123456789";
        for start in 0..text.len() {
            for end in start..=text.len() {
                let bytes = &text[start..end];
                let scan = bytes.iter().all(|&byte| allowed(byte));
                assert_eq!(all_allowed(bytes), scan, "{start}..{end}");
            }
        }
    }

    #[test]
    fn sanitize_keeps_the_allowed_set_and_replaces_every_other_byte() {
        assert_eq!(sanitize("alice@example.com"), "alice@example.com");
        assert_eq!(sanitize("tag:ci,tag:server"), "tag:ci_tag:server");
        assert_eq!(
            sanitize("claude-sonnet-4-5+x_1.0"),
            "claude-sonnet-4-5+x_1.0"
        );
        assert_eq!(sanitize("a;b=c\"d\\e\n"), "a_b_c_d_e_");
        assert_eq!(sanitize("é"), "__");
        assert_eq!(
            sanitize("spiffe://cluster.local/ns/a"),
            "spiffe:__cluster.local_ns_a"
        );
    }

    #[test]
    fn empty_is_unknown_and_long_values_are_cut() {
        assert_eq!(sanitize(""), UNKNOWN);
        let long = "a".repeat(500);
        assert_eq!(sanitize(&long).len(), MAX_LABEL_BYTES);
        // A cut inside a character still gives one `_` per byte kept.
        let wide = format!("{}é", "a".repeat(MAX_LABEL_BYTES - 1));
        assert_eq!(
            sanitize(&wide),
            format!("{}_", "a".repeat(MAX_LABEL_BYTES - 1))
        );
    }

    #[test]
    fn tagged_names_join_pairs_in_order() {
        assert_eq!(
            tagged(
                "base_total",
                &[("caller", "a@b"), ("model", "m"), ("type", "input")]
            ),
            "base_total;caller=a@b;model=m;type=input"
        );
        assert_eq!(tagged("plain", &[]), "plain");
    }
}
