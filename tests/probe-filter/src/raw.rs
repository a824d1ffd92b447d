//! Host calls made directly instead of through the SDK, where the SDK's wrapper would panic on a status a
//! conforming host may return; the probe exists to observe such statuses.
//!
//! The only call here is `proxy_set_buffer_bytes`: the SDK accepts only OK, but Envoy answers a start
//! offset inside the body with BAD_ARGUMENT, and the differential suite must see that status.
#![allow(unsafe_code)]

/// Calls `proxy_set_buffer_bytes` and returns the raw status code.
#[cfg(target_arch = "wasm32")]
pub fn set_buffer_bytes(buffer_type: u32, start: usize, size: usize, data: &[u8]) -> u32 {
    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        fn proxy_set_buffer_bytes(
            buffer_type: u32,
            start: usize,
            size: usize,
            buffer_data: *const u8,
            buffer_size: usize,
        ) -> u32;
    }
    // SAFETY: the host only reads `data.len()` bytes at `data.as_ptr()`, a live borrowed slice; every
    // argument is a plain integer and any u32 return value is valid, so no status can be undefined.
    unsafe { proxy_set_buffer_bytes(buffer_type, start, size, data.as_ptr(), data.len()) }
}

/// Native builds (unit tests) have no host: the call reports `unimplemented` (12).
#[cfg(not(target_arch = "wasm32"))]
pub fn set_buffer_bytes(_buffer_type: u32, _start: usize, _size: usize, _data: &[u8]) -> u32 {
    12
}
