//! proxy-wasm host on wasmtime.
#![forbid(unsafe_code)]

pub mod proxy;
pub mod wasi_command;
