//! Host calls made directly instead of through the SDK, where the SDK's wrapper would panic on a status a
//! conforming host may return; the probe exists to observe such statuses.
//!
//! `proxy_set_buffer_bytes`: the SDK accepts only OK, but Envoy answers a start offset inside the body
//! with BAD_ARGUMENT. `proxy_get_header_map_value`: the SDK accepts OK and NOT_FOUND, but Envoy answers
//! BAD_ARGUMENT for a map that is not available in the current callback (request headers while the
//! response is processed). The differential suite must see those statuses instead of a dead VM.
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

/// Calls `proxy_get_header_map_value` and returns the raw status code with the value, if one was returned.
#[cfg(target_arch = "wasm32")]
pub fn get_header_map_value(map_type: u32, key: &str) -> (u32, Option<Vec<u8>>) {
    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        fn proxy_get_header_map_value(
            map_type: u32,
            key_data: *const u8,
            key_size: usize,
            return_value_data: *mut *mut u8,
            return_value_size: *mut usize,
        ) -> u32;
    }
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the host reads `key.len()` bytes of a live borrowed str and writes one pointer and one size
    // into the two locals whose addresses are passed; any u32 return value is valid.
    let status = unsafe {
        proxy_get_header_map_value(map_type, key.as_ptr(), key.len(), &mut data, &mut size)
    };
    if status != 0 || data.is_null() {
        // Without OK the host handed over no buffer; a non-null pointer then is not ours to free.
        return (status, None);
    }
    // SAFETY: with OK the host returned a buffer of exactly `size` bytes that it obtained from this module's
    // `proxy_on_memory_allocate` (the SDK allocates it as a `Vec<u8>` with that capacity and forgets it), so
    // ownership passes to this Vec, which frees it with the same allocator.
    let value = unsafe { Vec::from_raw_parts(data, size, size) };
    (status, Some(value))
}

/// Native builds (unit tests) have no host: the call reports `unimplemented` (12).
#[cfg(not(target_arch = "wasm32"))]
pub fn get_header_map_value(_map_type: u32, _key: &str) -> (u32, Option<Vec<u8>>) {
    (12, None)
}
