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
    byte.is_ascii_alphanumeric() || matches!(byte, b'@' | b'.' | b'_' | b':' | b'+' | b'-')
}

/// The label value for `raw`: each byte outside `[A-Za-z0-9@._:+-]` becomes `_` (so a multi-byte
/// character becomes several), cut at [`MAX_LABEL_BYTES`]; empty or absent is [`UNKNOWN`]. A value
/// that needs no change (the usual case, on every observed request) is borrowed, not copied.
pub fn sanitize(raw: Option<&[u8]>) -> Cow<'_, str> {
    let Some(raw) = raw.filter(|raw| !raw.is_empty()) else {
        return Cow::Borrowed(UNKNOWN);
    };
    let kept = raw.get(..MAX_LABEL_BYTES).unwrap_or(raw);
    if kept.iter().all(|&byte| allowed(byte))
        && let Ok(text) = std::str::from_utf8(kept)
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
    fn sanitize_keeps_the_allowed_set_and_replaces_every_other_byte() {
        assert_eq!(sanitize(Some(b"alice@example.com")), "alice@example.com");
        assert_eq!(sanitize(Some(b"tag:ci,tag:server")), "tag:ci_tag:server");
        assert_eq!(
            sanitize(Some(b"claude-sonnet-4-5+x_1.0")),
            "claude-sonnet-4-5+x_1.0"
        );
        assert_eq!(sanitize(Some(b"a;b=c\"d\\e\n")), "a_b_c_d_e_");
        assert_eq!(sanitize(Some("é".as_bytes())), "__");
        assert_eq!(
            sanitize(Some(b"spiffe://cluster.local/ns/a")),
            "spiffe:__cluster.local_ns_a"
        );
    }

    #[test]
    fn empty_or_absent_is_unknown_and_long_values_are_cut() {
        assert_eq!(sanitize(None), UNKNOWN);
        assert_eq!(sanitize(Some(b"")), UNKNOWN);
        let long = vec![b'a'; 500];
        assert_eq!(sanitize(Some(&long)).len(), MAX_LABEL_BYTES);
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
