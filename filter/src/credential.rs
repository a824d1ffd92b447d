//! Where the credential comes from, and turning it into a header value.
//!
//! [`CredentialSource`] holds the static sources and the OAuth2 token
//! endpoint source, whose lifecycle lives in [`crate::token`]. Resolution takes the environment
//! as a lookup function: on `wasm32-wasip1` the glue passes `std::env::var`,
//! which reads the VM environment the host hands over through WASI.

use std::env::VarError;

use crate::secret::Secret;
use crate::token::config::OAuth2Config;

/// The default header that carries the credential.
pub const DEFAULT_HEADER: &str = "authorization";
/// The default text put before the token in the credential header.
pub const DEFAULT_PREFIX: &str = "Bearer ";

/// Where the token comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    /// A token written into the configuration itself.
    Inline(Secret),
    /// A token read once, at configure time, from this VM environment variable.
    Env(String),
    /// Tokens obtained from an OAuth2 token endpoint and refreshed at run time ([`crate::token`]).
    OAuth2(Box<OAuth2Config>),
}

/// The validated `credential` configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialConfig {
    /// Lower-case name of the header that carries the credential.
    pub header: String,
    /// Text put before the token (`"Bearer "`, or `""` for API-key headers).
    pub prefix: String,
    /// Where the token comes from.
    pub source: CredentialSource,
}

impl CredentialConfig {
    /// Whether requests carry an OAuth-style bearer token (`authorization: Bearer ...`).
    pub fn is_bearer(&self) -> bool {
        self.header == DEFAULT_HEADER && self.prefix.eq_ignore_ascii_case(DEFAULT_PREFIX)
    }
}

/// A usable credential: the complete value of the credential header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    header_value: Secret,
}

impl Credential {
    /// Builds the header value `prefix + token`.
    pub fn new(prefix: &str, token: &Secret) -> Self {
        Self {
            header_value: Secret::new(format!("{prefix}{}", token.expose())),
        }
    }

    /// The header value bytes, for the one place that puts it on the wire.
    pub fn header_value(&self) -> &[u8] {
        self.header_value.expose().as_bytes()
    }
}

/// Why no credential could be resolved. Messages never contain the value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The environment variable is not set.
    #[error("environment variable {name} is not set")]
    EnvMissing {
        /// Variable name.
        name: String,
    },
    /// The environment variable is set but empty (or only whitespace).
    #[error("environment variable {name} is empty")]
    EnvEmpty {
        /// Variable name.
        name: String,
    },
    /// The environment variable is not valid UTF-8.
    #[error("environment variable {name} is not valid UTF-8")]
    EnvNotUnicode {
        /// Variable name.
        name: String,
    },
    /// The source obtains its token at run time, not at configure time.
    #[error("the oauth2 source obtains its token from the token endpoint at run time")]
    NotStatic,
    /// The token contains bytes that cannot appear in a header value.
    #[error("the credential from {origin} contains {what}, which cannot appear in a header value")]
    InvalidValue {
        /// Where the token came from (`environment variable X`, `inline configuration`).
        origin: String,
        /// The offending kind of character.
        what: &'static str,
    },
}

/// Resolves the configured source into a usable credential.
///
/// Surrounding whitespace is trimmed from environment values: a trailing
/// newline from a secret file is a common accident, and tokens never contain
/// whitespace at their ends.
///
/// # Errors
/// A [`CredentialError`] when the variable is missing, empty, not UTF-8, or
/// holds characters a header value cannot carry.
pub fn resolve<F>(config: &CredentialConfig, env: F) -> Result<Credential, CredentialError>
where
    F: Fn(&str) -> Result<String, VarError>,
{
    let (token, origin) = match &config.source {
        CredentialSource::Inline(secret) => (secret.clone(), "inline configuration".to_owned()),
        CredentialSource::Env(name) => (
            Secret::new(env_value(name, &env)?),
            format!("environment variable {name}"),
        ),
        CredentialSource::OAuth2(_) => return Err(CredentialError::NotStatic),
    };
    if let Some(what) = forbidden_value_char(token.expose()) {
        return Err(CredentialError::InvalidValue { origin, what });
    }
    Ok(Credential::new(&config.prefix, &token))
}

/// Reads a variable that holds a secret or an identifier: trimmed, non-empty, usable in a header.
///
/// # Errors
/// A [`CredentialError`] naming the variable (never its value).
pub fn env_value<F>(name: &str, env: &F) -> Result<String, CredentialError>
where
    F: Fn(&str) -> Result<String, VarError>,
{
    let raw = env(name).map_err(|error| match error {
        VarError::NotPresent => CredentialError::EnvMissing { name: name.into() },
        VarError::NotUnicode(_) => CredentialError::EnvNotUnicode { name: name.into() },
    })?;
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(CredentialError::EnvEmpty { name: name.into() });
    }
    if let Some(what) = forbidden_value_char(trimmed) {
        return Err(CredentialError::InvalidValue {
            origin: format!("environment variable {name}"),
            what,
        });
    }
    Ok(trimmed.to_owned())
}

/// Names the first character that may not appear in a header value, if any.
// Out of line: called by configuration checks and credential resolution alike.
#[inline(never)]
pub fn forbidden_value_char(value: &str) -> Option<&'static str> {
    value.bytes().find_map(|byte| match byte {
        b'\r' => Some("a carriage return (CR)"),
        b'\n' => Some("a line feed (LF)"),
        0 => Some("a NUL byte"),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn env_config(name: &str) -> CredentialConfig {
        CredentialConfig {
            header: DEFAULT_HEADER.into(),
            prefix: DEFAULT_PREFIX.into(),
            source: CredentialSource::Env(name.into()),
        }
    }

    fn no_env(_: &str) -> Result<String, VarError> {
        Err(VarError::NotPresent)
    }

    #[test]
    fn env_token_is_trimmed_and_prefixed() {
        let credential = resolve(&env_config("TOKEN"), |name| {
            assert_eq!(name, "TOKEN");
            Ok("  sk-ant-oat01-abc\n".into())
        })
        .unwrap();
        assert_eq!(credential.header_value(), b"Bearer sk-ant-oat01-abc");
    }

    #[test]
    fn inline_token_with_empty_prefix() {
        let config = CredentialConfig {
            header: "x-api-key".into(),
            prefix: String::new(),
            source: CredentialSource::Inline(Secret::new("sk-ant-api03-xyz")),
        };
        assert_eq!(
            resolve(&config, no_env).unwrap().header_value(),
            b"sk-ant-api03-xyz"
        );
        assert!(!config.is_bearer());
    }

    #[test]
    fn missing_empty_and_non_unicode_env_are_distinct_errors() {
        let config = env_config("TOKEN");
        assert_eq!(
            resolve(&config, no_env),
            Err(CredentialError::EnvMissing {
                name: "TOKEN".into()
            })
        );
        assert_eq!(
            resolve(&config, |_| Ok(" \n".into())),
            Err(CredentialError::EnvEmpty {
                name: "TOKEN".into()
            })
        );
        assert_eq!(
            resolve(&config, |_| Err(VarError::NotUnicode("x".into()))),
            Err(CredentialError::EnvNotUnicode {
                name: "TOKEN".into()
            })
        );
    }

    #[test]
    fn token_with_line_break_is_rejected_without_echoing_it() {
        let error = resolve(&env_config("TOKEN"), |_| Ok("abc\r\nx-evil: 1".into())).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("TOKEN"), "{message}");
        assert!(message.contains("line feed") || message.contains("carriage return"));
        assert!(!message.contains("abc"), "{message}");
    }

    #[test]
    fn bearer_detection_needs_authorization_and_bearer_prefix() {
        assert!(env_config("T").is_bearer());
        let mut config = env_config("T");
        config.prefix = "bearer ".into();
        assert!(config.is_bearer());
        config.prefix = "Token ".into();
        assert!(!config.is_bearer());
    }

    #[test]
    fn credential_debug_is_redacted() {
        let credential = Credential::new("Bearer ", &Secret::new("secret-token"));
        let debug = format!("{credential:?}");
        assert!(!debug.contains("secret-token"), "{debug}");
    }
}
