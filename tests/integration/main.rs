//! Integration tests: the real `filter.wasm` and the probe filter, built from the current sources by
//! `build.rs`, run through the harness, the standalone proxy and real Envoy. One binary, a module per area.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod access;
mod cli;
mod differential;
mod differential_runner;
mod envoy_filter;
mod envoy_fixture;
mod filter;
mod host_probe;
mod proxy_admin;
mod proxy_failures;
mod proxy_forwarding;
mod proxy_hardening;
mod proxy_identity;
mod proxy_oauth;
mod proxy_process;
mod token_envoy;
mod token_proxy;
mod token_refresh;
mod usage_envoy;
mod usage_harness;
mod usage_proxy;
