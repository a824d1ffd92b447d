//! Upstream presets: header conventions of a known API.
//!
//! The Anthropic preset makes a plain client work against the Messages API:
//! it pins `anthropic-version` when the client sent none, declares the OAuth
//! beta flag when the injected credential is a bearer token (keeping the
//! client's own beta flags), and strips `x-api-key` so a client key never
//! reaches the upstream.

use crate::headers::{Rewrite, position_of_any, same_bytes};

/// The header naming the Anthropic API version.
pub const ANTHROPIC_VERSION_HEADER: &str = "anthropic-version";
/// The API version added when the client sent none.
pub const ANTHROPIC_DEFAULT_VERSION: &str = "2023-06-01";
/// The header listing Anthropic beta flags, comma-separated.
pub const ANTHROPIC_BETA_HEADER: &str = "anthropic-beta";
/// The beta flag the API requires with an OAuth bearer token.
pub const ANTHROPIC_OAUTH_BETA_FLAG: &str = "oauth-2025-04-20";

/// A named set of upstream conventions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// The Anthropic API (`api.anthropic.com`).
    Anthropic,
}

/// What a preset changed on one request, for logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PresetOutcome {
    /// `anthropic-version` was added.
    pub added_version: bool,
    /// The OAuth beta flag was added to `anthropic-beta`.
    pub added_oauth_beta: bool,
}

impl Preset {
    /// The configuration name of the preset.
    pub fn name(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
        }
    }

    /// Request headers the preset always removes before the credential is set.
    pub fn stripped_request_headers(self) -> &'static [&'static str] {
        match self {
            Self::Anthropic => &["x-api-key"],
        }
    }

    /// Request headers the preset may add or change.
    pub fn written_request_headers(self) -> &'static [&'static str] {
        match self {
            Self::Anthropic => &[ANTHROPIC_VERSION_HEADER, ANTHROPIC_BETA_HEADER],
        }
    }

    /// Applies the preset to request headers. `bearer` says whether a bearer
    /// token is being injected into `authorization`.
    pub fn apply(self, headers: &mut Rewrite<'_, '_>, bearer: bool) -> PresetOutcome {
        match self {
            Self::Anthropic => {
                let mut outcome = PresetOutcome::default();
                if !headers.contains(ANTHROPIC_VERSION_HEADER) {
                    // Absent, so appending is setting without looking for it again.
                    headers.append(ANTHROPIC_VERSION_HEADER, ANTHROPIC_DEFAULT_VERSION);
                    outcome.added_version = true;
                }
                if bearer {
                    let (merged, added) = merge_flags(
                        headers.get_all(ANTHROPIC_BETA_HEADER),
                        ANTHROPIC_OAUTH_BETA_FLAG.as_bytes(),
                    );
                    headers.set(ANTHROPIC_BETA_HEADER, merged);
                    outcome.added_oauth_beta = added;
                }
                outcome
            }
        }
    }
}

/// Most distinct beta flags kept from a client's `anthropic-beta` lines; later ones are dropped. The API
/// defines a few dozen flags, so a real client never comes near it, while a hostile one cannot make the
/// merge (or the upstream) work through thousands.
pub const MAX_BETA_FLAGS: usize = 64;

/// Longest single beta flag kept; a longer one is no flag the API knows and is dropped.
pub const MAX_BETA_FLAG_BYTES: usize = 128;

/// Joins the comma-separated flags of every header line into one line, drops
/// empty, repeated and over-long flags and every flag past [`MAX_BETA_FLAGS`],
/// and adds `flag` when missing (it is kept even past the cap). Returns the line
/// and whether `flag` was added.
///
/// Linear in the input: each flag is compared with at most [`MAX_BETA_FLAGS`]
/// kept ones, never with the whole merged line.
pub fn merge_flags<'a>(mut lines: impl Iterator<Item = &'a [u8]>, flag: &[u8]) -> (Vec<u8>, bool) {
    // One buffer, sized for the usual single line without a second look at the headers (a further
    // line grows it), capped so a huge header does not reserve its own size again.
    let first = lines.next().unwrap_or_default();
    let capacity = first.len().min(MAX_BETA_FLAGS * (MAX_BETA_FLAG_BYTES + 1)) + 1 + flag.len();
    let mut merged = Vec::with_capacity(capacity);
    // The kept flags on the stack: the cap bounds them, and this runs for every request.
    let mut kept: [&[u8]; MAX_BETA_FLAGS] = [&[]; MAX_BETA_FLAGS];
    let mut count = 0;
    'lines: for line in std::iter::once(first).chain(lines) {
        for part in Flags(Some(line)) {
            if count == MAX_BETA_FLAGS {
                break 'lines;
            }
            let part = part.trim_ascii();
            if part.len() <= MAX_BETA_FLAG_BYTES
                && push_flag(&mut merged, kept.get(..count).unwrap_or_default(), part)
                && let Some(slot) = kept.get_mut(count)
            {
                *slot = part;
                count += 1;
            }
        }
    }
    let added = push_flag(&mut merged, kept.get(..count).unwrap_or_default(), flag);
    (merged, added)
}

/// The comma-separated parts of a line, as `split(',')` gives them (an empty line is one empty
/// part), found eight bytes per step.
struct Flags<'a>(Option<&'a [u8]>);

impl<'a> Iterator for Flags<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.0?;
        let Some(comma) = position_of_any(rest, [b',']) else {
            self.0 = None;
            return Some(rest);
        };
        self.0 = rest.get(comma + 1..);
        rest.get(..comma)
    }
}

/// Appends `flag` to a merged line unless it is empty or already `kept`; returns whether it was added.
fn push_flag(merged: &mut Vec<u8>, kept: &[&[u8]], flag: &[u8]) -> bool {
    if flag.is_empty() || kept.iter().any(|kept| same_bytes(kept, flag)) {
        return false;
    }
    if !merged.is_empty() {
        merged.push(b',');
    }
    merged.extend_from_slice(flag);
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::headers::test_list as list;

    #[test]
    fn adds_version_only_when_absent() {
        let mut headers = list(&[]);
        let outcome = Preset::Anthropic.apply(&mut Rewrite::new(&mut headers, &mut |_| {}), false);
        assert!(outcome.added_version);
        assert_eq!(headers.first("anthropic-version"), Some(&b"2023-06-01"[..]));

        let mut headers = list(&[("anthropic-version", "2024-01-01")]);
        assert!(
            !Preset::Anthropic
                .apply(&mut Rewrite::new(&mut headers, &mut |_| {}), false)
                .added_version
        );
        assert_eq!(headers.first("anthropic-version"), Some(&b"2024-01-01"[..]));
    }

    #[test]
    fn bearer_merges_oauth_flag_keeping_client_flags_from_several_lines() {
        let mut headers = list(&[
            (
                "anthropic-beta",
                "prompt-caching-2024-07-31, files-api-2025-04-14",
            ),
            ("anthropic-beta", "files-api-2025-04-14,,oauth-2025-04-20"),
        ]);
        let outcome = Preset::Anthropic.apply(&mut Rewrite::new(&mut headers, &mut |_| {}), true);
        assert!(!outcome.added_oauth_beta);
        assert_eq!(
            headers.get_all("anthropic-beta").collect::<Vec<_>>(),
            vec![&b"prompt-caching-2024-07-31,files-api-2025-04-14,oauth-2025-04-20"[..]]
        );
    }

    #[test]
    fn bearer_adds_oauth_flag_when_client_sent_none() {
        let mut headers = list(&[]);
        assert!(
            Preset::Anthropic
                .apply(&mut Rewrite::new(&mut headers, &mut |_| {}), true)
                .added_oauth_beta
        );
        assert_eq!(
            headers.first("anthropic-beta"),
            Some(&b"oauth-2025-04-20"[..])
        );
    }

    #[test]
    fn api_key_style_leaves_beta_alone() {
        let mut headers = list(&[("anthropic-beta", "a , b")]);
        Preset::Anthropic.apply(&mut Rewrite::new(&mut headers, &mut |_| {}), false);
        assert_eq!(headers.first("anthropic-beta"), Some(&b"a , b"[..]));
    }

    #[test]
    fn merge_keeps_the_first_flags_up_to_the_cap_and_still_adds_the_oauth_flag() {
        let line: Vec<u8> = (0..10_000)
            .map(|n| format!("f{n}"))
            .collect::<Vec<_>>()
            .join(",")
            .into_bytes();
        let (merged, added) = merge_flags(std::iter::once(&line[..]), b"oauth-2025-04-20");
        assert!(added);
        let flags: Vec<&[u8]> = merged.split(|byte| *byte == b',').collect();
        assert_eq!(flags.len(), MAX_BETA_FLAGS + 1);
        assert_eq!(flags[0], b"f0");
        assert_eq!(
            flags[MAX_BETA_FLAGS - 1],
            format!("f{}", MAX_BETA_FLAGS - 1).as_bytes()
        );
        assert_eq!(flags[MAX_BETA_FLAGS], b"oauth-2025-04-20");
    }

    #[test]
    fn merge_drops_over_long_flags_and_keeps_a_repeated_oauth_flag_once() {
        let long = "x".repeat(MAX_BETA_FLAG_BYTES + 1);
        let line = format!("{long},a,a,oauth-2025-04-20");
        let (merged, added) = merge_flags(std::iter::once(line.as_bytes()), b"oauth-2025-04-20");
        assert!(!added);
        assert_eq!(merged, b"a,oauth-2025-04-20");
    }

    #[test]
    fn merge_keeps_non_utf8_flags_as_bytes() {
        let line: &[u8] = &[b'a', 0xff, b',', b'b'];
        let (merged, added) = merge_flags(std::iter::once(line), b"c");
        assert!(added);
        assert_eq!(merged, vec![b'a', 0xff, b',', b'b', b',', b'c']);
    }
}
