//! Shared fixtures for the integration and end-to-end tests.
//!
//! Layout:
//! - [`upstream`]: a loopback HTTP/1.1 upstream on `127.0.0.1:0` that records requests and answers by
//!   configurable replies (echo, fixed, SSE stream, delayed, never, OAuth2 token endpoint).
//! - [`client`]: a bounded HTTP/1.1 client that keeps every header value and each body chunk's arrival time.
//! - [`envoy`]: real Envoy on 127.0.0.1 with a Wasm filter, its clusters pointing at loopback servers.
//! - `header_list`: case-insensitive lookups in an ordered header list, for the client and the upstream.
//! - [`messages_api`]: a loopback fake of the Messages API with known usage (JSON, SSE, gzip, errors).
//! - [`proxy_support`]: the standalone proxy (`host-harness serve`'s library entry, or the binary as a child
//!   process) on `127.0.0.1:0`.
//! - [`scenario`]: an upstream and the standalone proxy in front of it, started by one builder.
//! - [`wait`]: bounded waits for something observable: a condition, a value, a log line.
//! - [`whois`]: a stand-in for tailscaled's LocalAPI WhoIs on a unix socket.

pub mod client;
pub mod envoy;
mod header_list;
pub mod messages_api;
pub mod proxy_support;
pub mod scenario;
pub mod upstream;
pub mod wait;
pub mod whois;

#[cfg(test)]
mod fixture_tests;
