//! A proxy-wasm HTTP filter that injects a credential into upstream requests.
//!
//! Clients never hold the secret: the filter strips whatever credential a
//! client sends, sets the configured one (by default `authorization: Bearer
//! <token>`), applies header rules, an optional caller access policy and an
//! optional upstream preset (Anthropic), and removes the credential header
//! from responses. Requests are never forwarded without the credential unless
//! the configuration says so. `specs/filter.md` describes the behaviour and
//! every configuration field.
//!
//! # Layout
//! - [`config`]: JSON shape, validation, the validated [`config::FilterConfig`].
//! - [`secret`]: [`secret::Secret`], a string that prints as `[REDACTED]`.
//! - [`json`]: the JSON reader and writer for the configuration, token answers and shared state.
//! - [`headers`]: an ordered, byte-valued header list and per-name diffs.
//! - [`rules`]: the request and response header rule engine.
//! - [`access`]: identity allow-list and source CIDR checks.
//! - [`preset`]: upstream presets (Anthropic).
//! - [`credential`]: credential sources and their resolution.
//! - [`engine`]: the request and response pipelines as pure functions.
//! - [`metrics`]: metric names and kinds.
//! - [`redact`]: header rendering for debug logs.
//! - [`token`]: the `oauth2` source: token requests, shared state, single-flight refresh.
//! - [`by_context`]: values by context id (the requests held for a token).
//! - [`usage`]: token usage per caller read from responses ([`usage::parse`]: the pure body readers).
//! - `sys` (wasm32 and tests): the only `unsafe` code: the raw host calls and the global allocator,
//!   which recycles small blocks.
//! - `glue` (wasm32 only): the proxy-wasm root and HTTP contexts.
//!
//! Everything but `glue` and `sys` is pure (no host calls, no I/O) and unit-tested natively
//! and on `wasm32-wasip1`.

pub mod access;
pub mod by_context;
pub mod config;
pub mod credential;
pub mod engine;
pub mod headers;
pub mod json;
pub mod metrics;
pub mod preset;
pub mod redact;
pub mod rules;
pub mod secret;
pub mod token;
pub mod usage;

#[cfg(any(target_arch = "wasm32", test))]
mod sys;

#[cfg(all(target_arch = "wasm32", not(test)))]
mod glue;

#[cfg(all(target_arch = "wasm32", not(test)))]
proxy_wasm::main! {{
    glue::start();
}}
