//! Credential-injecting proxy-wasm HTTP filter.
