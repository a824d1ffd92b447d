//! Runs a WASI preview 1 command module (a `_start` export), such as a test binary built for `wasm32-wasip1`.
