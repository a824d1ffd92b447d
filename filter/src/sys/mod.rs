//! The filter's only `unsafe` code, each use with a `SAFETY` note: [`abi`], the host calls of the
//! per-request path made without the SDK's wrappers and WASI's `random_get` (in the module only),
//! and `recycler`, the module's global allocator (in the module, and in the unit tests, which check
//! it natively too). Everything else in the crate is safe Rust.
#![allow(unsafe_code)]

#[cfg(all(target_arch = "wasm32", not(test)))]
pub(crate) mod abi;

mod recycler;
