//! proxy-wasm host on wasmtime.
#![forbid(unsafe_code)]
