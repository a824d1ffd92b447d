//! A credential value that cannot leak through formatting.
//!
//! Tokens and keys are held in [`Secret`] from the moment they are read, so
//! `{:?}` on a configuration, an error or a log line can never print them.
//! There is deliberately no `Serialize` implementation.

use std::fmt;

/// A secret string whose `Debug` and `Display` print `[REDACTED]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

/// The text printed in place of a secret value.
pub const REDACTED: &str = "[REDACTED]";

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must put it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("sk-ant-oat01-very-secret");
        assert_eq!(format!("{secret:?}"), "[REDACTED]");
        assert_eq!(format!("{secret}"), "[REDACTED]");
        assert_eq!(format!("{:?}", Some(&secret)), "Some([REDACTED])");
    }

    #[test]
    fn expose_returns_the_value() {
        let secret = Secret::new("token");
        assert_eq!(secret.expose(), "token");
        assert!(!secret.is_empty());
        assert!(Secret::new("").is_empty());
    }
}
