//! The `oauth2` credential source: tokens fetched from a token endpoint, refreshed before they expire,
//! shared by every VM.
//!
//! Everything here is pure: no host calls, time passed in as milliseconds since the Unix epoch, shared
//! data and the http call reached through the [`manager::Host`] port, all other effects returned as
//! [`manager::Command`]s. The glue (`glue.rs`) is the only caller that talks to a real host; the unit
//! tests drive several managers over one in-memory shared-data store that behaves as Envoy's does.
//!
//! # Layout
//! - [`config`]: the `oauth2` configuration object and its validation.
//! - [`endpoint`]: the token request (RFC 6749 form or JSON, client authentication) and the
//!   classification of answers into a token or a failure reason.
//! - [`state`]: the token state and lease documents kept in shared data.
//! - [`backoff`]: jittered exponential backoff and its injected random source.
//! - [`fingerprint`]: a SHA-256 fingerprint of the configuration a token family comes from.
//! - [`manager`]: the per-VM state machine: single-flight refresh, held requests, 401 invalidation.

pub mod backoff;
pub mod config;
pub mod endpoint;
pub mod fingerprint;
pub mod manager;
pub mod state;

/// Whole milliseconds of `duration`, saturating. Out of line and shared: the 128-bit arithmetic of
/// `Duration::as_millis` was inlined at each of the token manager's many uses.
#[inline(never)]
pub(crate) fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
