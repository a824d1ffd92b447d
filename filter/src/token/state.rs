//! What the VMs share about one credential: the token state and the refresh lease.
//!
//! Both are small JSON documents in proxy-wasm shared data, so every VM of a
//! `vm_id` (every Envoy worker, the main thread, every worker of the
//! standalone proxy) sees the same token, the same rotated refresh token and
//! the same backoff. This module is the one place that turns tokens into
//! bytes for shared data; [`Secret`] itself has no `Serialize`.

use crate::json::{self, Duplicates, Map, ObjectWriter, Value};

use super::endpoint::FailureReason;
use crate::secret::Secret;

/// Format version written into every state document.
pub const STATE_VERSION: u32 = 1;

/// How many superseded configuration fingerprints a state remembers.
pub const RETIRED_SEEDS: usize = 8;

/// The shared-data keys of one credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    /// `credential_filter.oauth2.<shared_key>.state`.
    pub state: String,
    /// `credential_filter.oauth2.<shared_key>.lease`.
    pub lease: String,
}

impl Keys {
    /// The keys for `shared_key`.
    pub fn new(shared_key: &str) -> Self {
        Self {
            state: format!("credential_filter.oauth2.{shared_key}.state"),
            lease: format!("credential_filter.oauth2.{shared_key}.lease"),
        }
    }
}

/// The token state every VM reads and the lease holder writes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TokenState {
    /// Bumped on every new token and on every configuration change; a refresh
    /// started on an older generation is never published.
    pub generation: u64,
    /// The current access token, if any.
    pub access_token: Option<Secret>,
    /// When the access token expires, in milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
    /// When the access token was requested, in milliseconds since the Unix epoch.
    pub obtained_at_ms: u64,
    /// The newest refresh token (refresh_token grant only).
    pub refresh_token: Option<Secret>,
    /// Fingerprint of the configuration this token family comes from.
    pub seed: String,
    /// Fingerprints of configurations this state has replaced, newest first.
    pub retired_seeds: Vec<String>,
    /// Set when refreshing stopped for good (e.g. `invalid_grant`) until the configuration changes.
    pub disabled: Option<FailureReason>,
    /// Consecutive failed attempts.
    pub failures: u32,
    /// No attempt starts before this time (milliseconds since the Unix epoch).
    pub retry_at_ms: u64,
    /// When an upstream 401 last invalidated a token (milliseconds since the Unix epoch).
    pub unauthorized_at_ms: u64,
}

impl TokenState {
    /// The state a configuration starts from: no access token yet, the configured refresh token.
    // Out of line: three builders of a fresh state call it.
    #[inline(never)]
    pub fn seeded(seed: &str, refresh_token: Option<Secret>) -> Self {
        Self {
            refresh_token,
            seed: seed.to_owned(),
            ..Self::default()
        }
    }

    /// This state taken over by a new configuration: a fresh start from its refresh token, the old
    /// fingerprint retired so VMs still running the old configuration leave the state alone.
    pub fn adopted_by(&self, seed: &str, refresh_token: Option<Secret>) -> Self {
        let mut retired = vec![self.seed.clone()];
        retired.extend(
            self.retired_seeds
                .iter()
                .filter(|old| old.as_str() != seed && **old != self.seed)
                .cloned(),
        );
        retired.truncate(RETIRED_SEEDS);
        Self {
            generation: self.generation.saturating_add(1),
            retired_seeds: retired,
            ..Self::seeded(seed, refresh_token)
        }
    }

    /// Lifetime of the current access token in milliseconds (0 without one).
    pub fn lifetime_ms(&self) -> u64 {
        self.expires_at_ms.saturating_sub(self.obtained_at_ms)
    }

    /// Encodes the state for shared data.
    pub fn encode(&self) -> Vec<u8> {
        // The field order is the document format: the host's state file holds these bytes as is.
        let mut stored = ObjectWriter::new();
        stored
            .number("v", u64::from(STATE_VERSION))
            .number("generation", self.generation)
            .optional_string(
                "access_token",
                self.access_token.as_ref().map(Secret::expose),
            )
            .number("expires_at_ms", self.expires_at_ms)
            .number("obtained_at_ms", self.obtained_at_ms)
            .optional_string(
                "refresh_token",
                self.refresh_token.as_ref().map(Secret::expose),
            )
            .string("seed", &self.seed)
            .strings("retired_seeds", &self.retired_seeds)
            .optional_string("disabled", self.disabled.map(FailureReason::name))
            .number("failures", u64::from(self.failures))
            .number("retry_at_ms", self.retry_at_ms)
            .number("unauthorized_at_ms", self.unauthorized_at_ms);
        stored.finish().into_bytes()
    }

    /// Decodes a state from shared data.
    ///
    /// # Errors
    /// [`StateError`] when the bytes are not a state document of this version.
    pub fn decode(bytes: &[u8]) -> Result<Self, StateError> {
        if bytes.is_empty() {
            return Err(StateError::Empty);
        }
        let Ok(Value::Object(loaded)) = json::parse(bytes, Duplicates::KeepLast) else {
            return Err(StateError::Unreadable);
        };
        let document = Document(&loaded);
        let version = document.whole("v")?.ok_or(StateError::Unreadable)?;
        let version = u32::try_from(version).map_err(|_| StateError::Unreadable)?;
        if version != STATE_VERSION {
            return Err(StateError::Version(version));
        }
        // A reason this version does not know makes the document unreadable like any other bad field.
        let disabled = match document.text("disabled")? {
            None => None,
            Some(name) => Some(FailureReason::from_name(name).ok_or(StateError::Unreadable)?),
        };
        let token = |field: &str| -> Result<Option<Secret>, StateError> {
            Ok(document
                .text(field)?
                .filter(|token| !token.is_empty())
                .map(Secret::new))
        };
        // Every field fails alike (unreadable), so the numbers are read first and the owned fields
        // last: an error then has fewer allocations to drop.
        let generation = document.whole("generation")?.unwrap_or(0);
        let expires_at_ms = document.whole("expires_at_ms")?.unwrap_or(0);
        let obtained_at_ms = document.whole("obtained_at_ms")?.unwrap_or(0);
        let failures = u32::try_from(document.whole("failures")?.unwrap_or(0))
            .map_err(|_| StateError::Unreadable)?;
        let retry_at_ms = document.whole("retry_at_ms")?.unwrap_or(0);
        let unauthorized_at_ms = document.whole("unauthorized_at_ms")?.unwrap_or(0);
        let seed = document.text("seed")?.unwrap_or_default();
        let access_token = token("access_token")?;
        let refresh_token = token("refresh_token")?;
        Ok(Self {
            generation,
            access_token,
            expires_at_ms,
            obtained_at_ms,
            refresh_token,
            seed: seed.to_owned(),
            retired_seeds: document.texts("retired_seeds")?,
            disabled,
            failures,
            retry_at_ms,
            unauthorized_at_ms,
        })
    }
}

/// Why shared data holds no usable state document. Never carries the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The value is empty (removed).
    #[error("the state entry is empty")]
    Empty,
    /// The value is not a state document.
    #[error("the state entry is not a token state document")]
    Unreadable,
    /// The value was written by another format version.
    #[error("the state entry has format version {0}, this filter reads version 1")]
    Version(u32),
}

/// A shared-data document being read: fields this version does not know are ignored (a newer
/// version may add some), a known field of the wrong type makes the document unreadable.
struct Document<'a>(&'a Map);

impl<'a> Document<'a> {
    /// A whole number, if present.
    fn whole(&self, field: &str) -> Result<Option<u64>, StateError> {
        match self.0.get(field) {
            None => Ok(None),
            Some(value) => value.as_u64().map(Some).ok_or(StateError::Unreadable),
        }
    }

    /// A string, if present and not null.
    fn text(&self, field: &str) -> Result<Option<&'a str>, StateError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(_) => Err(StateError::Unreadable),
        }
    }

    /// A list of strings, empty if absent.
    fn texts(&self, field: &str) -> Result<Vec<String>, StateError> {
        match self.0.get(field) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => {
                let mut texts = Vec::new();
                for item in items {
                    texts.push(item.as_str().ok_or(StateError::Unreadable)?.to_owned());
                }
                Ok(texts)
            }
            Some(_) => Err(StateError::Unreadable),
        }
    }
}

/// Who may refresh right now: one VM, until `until_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Lease {
    /// The holder's VM id; empty when free.
    pub holder: String,
    /// When the lease lapses, in milliseconds since the Unix epoch.
    pub until_ms: u64,
}

impl Lease {
    /// Whether `vm` may take the lease at `now_ms` (free, lapsed, or its own).
    pub fn available_to(&self, vm: &str, now_ms: u64) -> bool {
        self.holder.is_empty() || self.holder == vm || self.until_ms <= now_ms
    }

    /// Whether another VM holds a live lease at `now_ms`.
    pub fn held_by_other(&self, vm: &str, now_ms: u64) -> bool {
        !self.available_to(vm, now_ms)
    }

    /// Encodes the lease for shared data.
    pub fn encode(&self) -> Vec<u8> {
        let mut stored = ObjectWriter::new();
        stored
            .string("holder", &self.holder)
            .number("until_ms", self.until_ms);
        stored.finish().into_bytes()
    }

    /// Decodes a lease; anything unreadable (an empty value included) counts as free.
    pub fn decode(bytes: &[u8]) -> Self {
        let Ok(Value::Object(map)) = json::parse(bytes, Duplicates::KeepLast) else {
            return Self::default();
        };
        let document = Document(&map);
        match (document.text("holder"), document.whole("until_ms")) {
            (Ok(Some(holder)), Ok(Some(until_ms))) => Self {
                holder: holder.to_owned(),
                until_ms,
            },
            _ => Self::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn sample() -> TokenState {
        TokenState {
            generation: 3,
            access_token: Some(Secret::new("at-secret")),
            expires_at_ms: 2_000,
            obtained_at_ms: 1_000,
            refresh_token: Some(Secret::new("rt-secret")),
            seed: "seed-a".into(),
            retired_seeds: vec!["seed-0".into()],
            disabled: None,
            failures: 2,
            retry_at_ms: 5,
            unauthorized_at_ms: 7,
        }
    }

    #[test]
    fn state_round_trips_and_debug_hides_tokens() {
        let state = sample();
        let bytes = state.encode();
        assert_eq!(TokenState::decode(&bytes).unwrap(), state);
        let debug = format!("{state:?}");
        assert!(
            !debug.contains("at-secret") && !debug.contains("rt-secret"),
            "{debug}"
        );
        assert_eq!(state.lifetime_ms(), 1_000);
    }

    #[test]
    fn the_document_format_is_stable() {
        // Other VMs and the host's state file read these exact bytes.
        let mut state = sample();
        state.retired_seeds.push("quote\"d".into());
        assert_eq!(
            String::from_utf8(state.encode()).unwrap(),
            concat!(
                r#"{"v":1,"generation":3,"access_token":"at-secret","expires_at_ms":2000,"#,
                r#""obtained_at_ms":1000,"refresh_token":"rt-secret","seed":"seed-a","#,
                r#""retired_seeds":["seed-0","quote\"d"],"disabled":null,"failures":2,"#,
                r#""retry_at_ms":5,"unauthorized_at_ms":7}"#
            )
        );
        let lease = Lease {
            holder: "vm-a".into(),
            until_ms: 100,
        };
        assert_eq!(lease.encode(), br#"{"holder":"vm-a","until_ms":100}"#);
    }

    #[test]
    fn bad_values_are_typed_errors() {
        assert_eq!(TokenState::decode(b""), Err(StateError::Empty));
        assert_eq!(TokenState::decode(b"{"), Err(StateError::Unreadable));
        assert_eq!(
            TokenState::decode(br#"{"v": 9}"#),
            Err(StateError::Version(9))
        );
        assert_eq!(TokenState::decode(b"{}"), Err(StateError::Unreadable));
        assert_eq!(
            TokenState::decode(br#"{"v": 1, "generation": -1}"#),
            Err(StateError::Unreadable)
        );
        assert_eq!(
            TokenState::decode(br#"{"v": 1, "future_field": [1]}"#),
            Ok(TokenState::default())
        );
        assert_eq!(
            TokenState::decode(br#"{"v": 1, "access_token": ""}"#)
                .unwrap()
                .access_token,
            None
        );
    }

    #[test]
    fn disabled_is_stored_by_its_reason_name() {
        let state = TokenState {
            disabled: Some(FailureReason::InvalidGrant),
            ..sample()
        };
        let bytes = state.encode();
        assert!(String::from_utf8_lossy(&bytes).contains(r#""disabled":"invalid_grant""#));
        assert_eq!(TokenState::decode(&bytes).unwrap(), state);
        assert_eq!(
            TokenState::decode(br#"{"v": 1, "disabled": "no_such_reason"}"#),
            Err(StateError::Unreadable)
        );
    }

    #[test]
    fn adoption_resets_the_family_and_retires_the_old_seed() {
        let adopted = sample().adopted_by("seed-b", Some(Secret::new("rt-new")));
        assert_eq!(adopted.generation, 4);
        assert_eq!(adopted.seed, "seed-b");
        assert_eq!(adopted.retired_seeds, vec!["seed-a", "seed-0"]);
        assert_eq!(adopted.access_token, None);
        assert_eq!(adopted.refresh_token, Some(Secret::new("rt-new")));
        assert_eq!((adopted.failures, adopted.retry_at_ms), (0, 0));
        let mut state = sample();
        for n in 0..20 {
            state = state.adopted_by(&format!("s{n}"), None);
        }
        assert_eq!(state.retired_seeds.len(), RETIRED_SEEDS);
    }

    #[test]
    fn lease_availability() {
        let lease = Lease {
            holder: "vm-a".into(),
            until_ms: 100,
        };
        assert!(lease.held_by_other("vm-b", 99));
        assert!(lease.available_to("vm-a", 99));
        assert!(lease.available_to("vm-b", 100));
        assert!(Lease::decode(b"").available_to("vm-b", 0));
        assert_eq!(Lease::decode(&lease.encode()), lease);
        // Anything unreadable counts as free, a field of the wrong type or a missing one included.
        assert_eq!(
            Lease::decode(br#"{"holder": "vm-a", "until_ms": "soon"}"#),
            Lease::default()
        );
        assert_eq!(Lease::decode(br#"{"holder": "vm-a"}"#), Lease::default());
        assert_eq!(
            Keys::new("oauth").state,
            "credential_filter.oauth2.oauth.state"
        );
    }
}
