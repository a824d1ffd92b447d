//! What fits the generic proxy to the filter and the API it fronts: the plugin's name, the shared-data
//! key whose value the state file keeps, the metric readiness waits on, and the shape of the proxy's own
//! error bodies. Each is a setting of `serve`'s configuration; the defaults here are the credential
//! filter's and the Anthropic API's, the values the standalone product ships with. The candidates of the
//! embedded plugin configuration used when none is given (`[[default_credentials]]`) and the default
//! upstream live here too, so the rest of the proxy holds no knowledge of one filter or API.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use super::config::Secret;

/// One credential the embedded default plugin configuration can use (`[[default_credentials]]`): the
/// VM environment variable holding it, the header it goes upstream in, and the plugin configuration
/// that makes the filter do so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefaultCredential {
    /// The VM environment variable the credential is read from.
    pub env_var: String,
    /// The header that carries it upstream (shown, never the value).
    pub header: String,
    /// The plugin configuration handed to the filter when this credential is chosen.
    pub plugin_config: String,
}

impl DefaultCredential {
    /// The first candidate whose variable holds a non-blank value in the VM environment, else the first
    /// (the filter then reports its credential missing); `None` only without candidates.
    pub fn choose<'a>(
        candidates: &'a [DefaultCredential],
        vm_env: &BTreeMap<String, Secret>,
    ) -> Option<&'a DefaultCredential> {
        candidates
            .iter()
            .find(|candidate| {
                vm_env
                    .get(&candidate.env_var)
                    .is_some_and(|value| !value.expose().trim().is_empty())
            })
            .or_else(|| candidates.first())
    }

    /// The shipped candidates: the Anthropic preset with an API key from `ANTHROPIC_API_KEY` as
    /// `x-api-key`, else an OAuth token from `ANTHROPIC_OAUTH_TOKEN` as `authorization: Bearer`.
    pub fn anthropic() -> Vec<DefaultCredential> {
        vec![
            DefaultCredential {
                env_var: "ANTHROPIC_API_KEY".to_owned(),
                header: "x-api-key".to_owned(),
                plugin_config: r#"{"credential":{"header":"x-api-key","prefix":"","source":{"env":"ANTHROPIC_API_KEY"}},"strip_request_headers":["authorization"],"preset":"anthropic"}"#.to_owned(),
            },
            DefaultCredential {
                env_var: "ANTHROPIC_OAUTH_TOKEN".to_owned(),
                header: "authorization".to_owned(),
                plugin_config: r#"{"credential":{"header":"authorization","prefix":"Bearer ","source":{"env":"ANTHROPIC_OAUTH_TOKEN"}},"strip_request_headers":["x-api-key"],"preset":"anthropic"}"#.to_owned(),
            },
        ]
    }
}

impl fmt::Display for DefaultCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} as {}", self.env_var, self.header)
    }
}

/// Upstream used when none is configured.
pub const DEFAULT_UPSTREAM: &str = "https://api.anthropic.com";

/// The plugin name the filter's VMs are given when none is configured.
pub const DEFAULT_PLUGIN_NAME: &str = "credential-filter";

/// The credential filter's token state: `credential_filter.oauth2.<key>.state`, where `<key>` is the
/// oauth2 source's `shared_key`, or its token cluster when it has none.
pub const DEFAULT_STATE_KEY: &str = "credential_filter.oauth2.{/credential/source/oauth2/shared_key|/credential/source/oauth2/token_endpoint/cluster}.state";

/// The gauge the credential filter holds at 1 while it has a usable credential.
pub const DEFAULT_READINESS_METRIC: &str = "credential_filter_credential_available";

/// A shared-data key, literal text with placeholders filled from the plugin configuration (JSON).
///
/// A placeholder `{/a/b|/c}` holds JSON pointers (RFC 6901) tried in turn; the first one naming a
/// string in the plugin configuration fills it. Without placeholders the key is used as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    parts: Vec<KeyPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyPart {
    Text(String),
    /// JSON pointers, the first that resolves to a string wins.
    Pointers(Vec<String>),
}

/// Why a key template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyTemplateError {
    /// The template is empty.
    #[error("the key is empty")]
    Empty,
    /// A `{` without its `}`, or a `}` without its `{`.
    #[error("unbalanced braces")]
    Unbalanced,
    /// A placeholder alternative that is not a JSON pointer.
    #[error("a placeholder must hold JSON pointers starting with /, separated by |")]
    NotAPointer,
}

impl KeyTemplate {
    /// Parses `text`.
    ///
    /// # Errors
    /// The text is empty, its braces do not pair, or a placeholder holds something other than pointers.
    pub fn parse(text: &str) -> Result<Self, KeyTemplateError> {
        if text.is_empty() {
            return Err(KeyTemplateError::Empty);
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            let (literal, tail) = rest.split_at(open);
            if tail.starts_with('}') {
                return Err(KeyTemplateError::Unbalanced);
            }
            let close = tail.find('}').ok_or(KeyTemplateError::Unbalanced)?;
            let inner = tail.get(1..close).ok_or(KeyTemplateError::Unbalanced)?;
            if inner.contains('{') {
                return Err(KeyTemplateError::Unbalanced);
            }
            let pointers: Vec<String> = inner.split('|').map(str::to_owned).collect();
            if pointers.iter().any(|pointer| !pointer.starts_with('/')) {
                return Err(KeyTemplateError::NotAPointer);
            }
            if !literal.is_empty() {
                parts.push(KeyPart::Text(literal.to_owned()));
            }
            parts.push(KeyPart::Pointers(pointers));
            rest = tail.get(close + 1..).unwrap_or_default();
        }
        if !rest.is_empty() {
            parts.push(KeyPart::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// The key for this plugin configuration; `None` when a placeholder finds no string in it (the
    /// filter keeps no such state) or the configuration is not JSON.
    pub fn resolve(&self, plugin_config: &[u8]) -> Option<String> {
        let needs_config = self
            .parts
            .iter()
            .any(|part| matches!(part, KeyPart::Pointers(_)));
        let config: serde_json::Value = if needs_config {
            serde_json::from_slice(plugin_config).ok()?
        } else {
            serde_json::Value::Null
        };
        let mut key = String::new();
        for part in &self.parts {
            match part {
                KeyPart::Text(text) => key.push_str(text),
                KeyPart::Pointers(pointers) => key.push_str(
                    pointers
                        .iter()
                        .find_map(|pointer| config.pointer(pointer)?.as_str())?,
                ),
            }
        }
        Some(key)
    }
}

impl Default for KeyTemplate {
    fn default() -> Self {
        // The default is a constant known to parse; an empty template would only keep no state.
        Self::parse(DEFAULT_STATE_KEY).unwrap_or(Self { parts: Vec::new() })
    }
}

/// When the proxy reports itself ready, besides every worker having its filter configured and the
/// proxy not draining: a metric the filter defines has reached a minimum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessGate {
    /// The filter's metric (a gauge or counter); `None` gates on nothing.
    pub metric: Option<String>,
    /// The least value that means ready.
    pub minimum: u64,
    /// Shown on `/readyz` while the metric is below the minimum.
    pub unavailable_reason: String,
    /// Shown on `/readyz` while the filter has not defined the metric.
    pub unreported_reason: String,
}

impl Default for ReadinessGate {
    fn default() -> Self {
        Self {
            metric: Some(DEFAULT_READINESS_METRIC.to_owned()),
            minimum: 1,
            unavailable_reason: "credential unavailable".to_owned(),
            unreported_reason: "filter reports no credential state".to_owned(),
        }
    }
}

/// The JSON shape of the error bodies the proxy writes itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorShape {
    /// The Anthropic API's: `{"type":"error","error":{"type":..,"message":..},"request_id":..}`.
    #[default]
    Anthropic,
    /// RFC 9457 problem details: `{"type":"about:blank","title":..,"status":..,"detail":..,"request_id":..}`
    /// as `application/problem+json`.
    Problem,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn the_default_state_key_follows_the_oauth2_shared_key_then_the_token_cluster() {
        let template = KeyTemplate::default();
        let with_key = br#"{"credential":{"source":{"oauth2":{"shared_key":"team","token_endpoint":{"cluster":"idp"}}}}}"#;
        let with_cluster =
            br#"{"credential":{"source":{"oauth2":{"token_endpoint":{"cluster":"idp"}}}}}"#;
        let static_credential = br#"{"credential":{"source":{"env":"ANTHROPIC_API_KEY"}}}"#;
        assert_eq!(
            template.resolve(with_key).as_deref(),
            Some("credential_filter.oauth2.team.state")
        );
        assert_eq!(
            template.resolve(with_cluster).as_deref(),
            Some("credential_filter.oauth2.idp.state")
        );
        assert_eq!(template.resolve(static_credential), None);
        assert_eq!(template.resolve(b"not json"), None);
    }

    #[test]
    fn a_literal_key_needs_no_plugin_configuration() {
        let template = KeyTemplate::parse("tokens.state").unwrap();
        assert_eq!(template.resolve(b"").as_deref(), Some("tokens.state"));
    }

    #[test]
    fn malformed_templates_are_refused() {
        assert_eq!(KeyTemplate::parse(""), Err(KeyTemplateError::Empty));
        assert_eq!(
            KeyTemplate::parse("a{/b"),
            Err(KeyTemplateError::Unbalanced)
        );
        assert_eq!(KeyTemplate::parse("a}b"), Err(KeyTemplateError::Unbalanced));
        assert_eq!(
            KeyTemplate::parse("a{{/b}}"),
            Err(KeyTemplateError::Unbalanced)
        );
        assert_eq!(
            KeyTemplate::parse("a{b}"),
            Err(KeyTemplateError::NotAPointer)
        );
        assert_eq!(
            KeyTemplate::parse("a{/b|}"),
            Err(KeyTemplateError::NotAPointer)
        );
    }
}
