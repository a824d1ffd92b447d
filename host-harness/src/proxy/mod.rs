//! Standalone reverse proxy that runs a proxy-wasm filter on every request (`host-harness serve`).
