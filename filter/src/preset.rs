//! Upstream presets: header conventions of a known API.
//!
//! The Anthropic preset makes a plain client work against the Messages API:
//! it pins `anthropic-version` when the client sent none, declares the OAuth
//! beta flag when the injected credential is a bearer token (keeping the
//! client's own beta flags), and strips `x-api-key` so a client key never
//! reaches the upstream.

use crate::headers::HeaderList;

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
    pub fn apply(self, headers: &mut HeaderList<'_>, bearer: bool) -> PresetOutcome {
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

/// Joins the comma-separated flags of every header line into one line, drops
/// empty and repeated flags, and adds `flag` when missing. Returns the line and
/// whether `flag` was added.
pub fn merge_flags<'a>(mut lines: impl Iterator<Item = &'a [u8]>, flag: &[u8]) -> (Vec<u8>, bool) {
    // One buffer, sized for the usual single line without a second look at the headers (a further
    // line grows it): the flags seen so far are the merged line itself.
    let first = lines.next().unwrap_or_default();
    let mut merged = Vec::with_capacity(first.len() + 1 + flag.len());
    for line in std::iter::once(first).chain(lines) {
        for part in line.split(|byte| *byte == b',') {
            push_flag(&mut merged, part.trim_ascii());
        }
    }
    let added = push_flag(&mut merged, flag);
    (merged, added)
}

/// Appends `flag` to a merged line unless it is empty or already there; returns whether it was added.
fn push_flag(merged: &mut Vec<u8>, flag: &[u8]) -> bool {
    if flag.is_empty() || merged.split(|byte| *byte == b',').any(|seen| seen == flag) {
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
        let outcome = Preset::Anthropic.apply(&mut headers, false);
        assert!(outcome.added_version);
        assert_eq!(headers.first("anthropic-version"), Some(&b"2023-06-01"[..]));

        let mut headers = list(&[("anthropic-version", "2024-01-01")]);
        assert!(!Preset::Anthropic.apply(&mut headers, false).added_version);
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
        let outcome = Preset::Anthropic.apply(&mut headers, true);
        assert!(!outcome.added_oauth_beta);
        assert_eq!(
            headers.get_all("anthropic-beta").collect::<Vec<_>>(),
            vec![&b"prompt-caching-2024-07-31,files-api-2025-04-14,oauth-2025-04-20"[..]]
        );
    }

    #[test]
    fn bearer_adds_oauth_flag_when_client_sent_none() {
        let mut headers = list(&[]);
        assert!(Preset::Anthropic.apply(&mut headers, true).added_oauth_beta);
        assert_eq!(
            headers.first("anthropic-beta"),
            Some(&b"oauth-2025-04-20"[..])
        );
    }

    #[test]
    fn api_key_style_leaves_beta_alone() {
        let mut headers = list(&[("anthropic-beta", "a , b")]);
        Preset::Anthropic.apply(&mut headers, false);
        assert_eq!(headers.first("anthropic-beta"), Some(&b"a , b"[..]));
    }

    #[test]
    fn merge_keeps_non_utf8_flags_as_bytes() {
        let line: &[u8] = &[b'a', 0xff, b',', b'b'];
        let (merged, added) = merge_flags(std::iter::once(line), b"c");
        assert!(added);
        assert_eq!(merged, vec![b'a', 0xff, b',', b'b', b',', b'c']);
    }
}
