//! A non-reversible fingerprint of everything that defines a token family.
//!
//! The state in shared data records the fingerprint of the configuration its
//! refresh token came from. A VM whose configuration has another fingerprint
//! knows the operator changed something (a new refresh token, another client,
//! other scopes) and starts a fresh family; the secrets themselves are never
//! stored for that comparison, only a SHA-256 over them.

use sha2::{Digest, Sha256};

use super::config::OAuth2Config;
use super::endpoint::Client;

/// Hex SHA-256 (first 128 bits) over the grant, the endpoint, the client and its secrets.
pub fn fingerprint(config: &OAuth2Config, client: &Client) -> String {
    let mut hasher = Sha256::new();
    let mut field = |name: &str, value: &[u8]| {
        // Length-prefixed fields: no two different configurations hash the same input.
        for part in [name.as_bytes(), value] {
            hasher.update(u64::try_from(part.len()).unwrap_or(u64::MAX).to_le_bytes());
            hasher.update(part);
        }
    };
    field("domain", b"credential_filter.oauth2.v1");
    field("grant", config.grant.name().as_bytes());
    field("cluster", config.endpoint.cluster.as_bytes());
    field("authority", config.endpoint.authority.as_bytes());
    field("path", config.endpoint.path.as_bytes());
    field("client_id", client.client_id.as_bytes());
    if let Some(secret) = &client.client_secret {
        field("client_secret", secret.expose().as_bytes());
    }
    if let Some(token) = &client.refresh_token {
        field("refresh_token", token.expose().as_bytes());
    }
    for scope in &config.scopes {
        field("scope", scope.as_bytes());
    }
    for (name, value) in &config.extra_params {
        field("param", name.as_bytes());
        field("value", value.as_bytes());
    }
    let digest = hasher.finalize();
    digest
        .iter()
        .take(16)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::json::from_serde;
    use crate::secret::Secret;
    use serde_json::json;

    #[test]
    fn fingerprint_follows_the_refresh_token_and_hides_it() {
        let config = crate::token::config::parse(&from_serde(&json!({
            "token_endpoint": {"cluster": "oauth", "authority": "a", "path": "/t"},
            "grant_type": "refresh_token", "client_id": "c", "refresh_token": {"env": "RT"}
        })))
        .unwrap();
        let client = |token: &str| Client {
            client_id: "c".into(),
            client_secret: None,
            refresh_token: Some(Secret::new(token)),
        };
        let first = fingerprint(&config, &client("rt-1"));
        assert_eq!(first.len(), 32);
        assert_eq!(first, fingerprint(&config, &client("rt-1")));
        assert_ne!(first, fingerprint(&config, &client("rt-2")));
        assert!(!first.contains("rt-1"));
        let mut scoped = config.clone();
        scoped.scopes = vec!["x".into()];
        assert_ne!(first, fingerprint(&scoped, &client("rt-1")));
    }
}
