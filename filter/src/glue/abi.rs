//! The host calls of the per-request path made without the SDK's wrappers, and the filter's only
//! `unsafe` code.
//!
//! The SDK decodes a header map into an owned `String` and `Vec` per name and value (two allocations
//! per header, and a panic on a name that is not UTF-8), serialises a property path into a fresh `Vec`
//! and turns the clock into a `SystemTime`. Here the host's single allocation is kept as it is:
//! [`HeaderList::from_serialized`](crate::headers::HeaderList::from_serialized) borrows every header
//! from it, property paths are constants in the wire form, and the time stays a number. The imports are
//! the same `env` functions the SDK imports; a status is returned as the host's number, never assumed
//! to be one the SDK knows.
#![allow(unsafe_code)]

use std::ptr::null_mut;

use proxy_wasm::types::MapType;

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
}

/// `Ok`, in the ABI's numbering.
const OK: u32 = 0;
/// `NotFound`, in the ABI's numbering.
const NOT_FOUND: u32 = 1;

/// A status other than `Ok` from the host, by its ABI number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct HostStatus(pub(super) u32);

/// Takes ownership of a block the host filled: it allocated it through the SDK's
/// `proxy_on_memory_allocate`, which hands out a leaked `Box<[u8]>` of exactly `size` bytes.
fn host_block(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        return Vec::new();
    }
    // SAFETY: a non-null `data` is the start of a `Box<[u8]>` of `size` bytes, allocated with the
    // global allocator by `proxy_on_memory_allocate` and given to the guest by this call; a `Vec`
    // with length and capacity `size` has that box's layout, and nothing else owns the block.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

/// The serialized pairs of a header map, in the host's own block.
pub(super) fn header_map(map: MapType) -> Result<Vec<u8>, HostStatus> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: the host writes a pointer and a size into the two locals, nothing else.
    let status = unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) };
    match status {
        OK => Ok(host_block(data, size)),
        other => Err(HostStatus(other)),
    }
}

/// The value of a property, by its path in the wire form (segments separated by NUL); `None` when
/// the host has no such property.
pub(super) fn property(path: &[u8]) -> Result<Option<Vec<u8>>, HostStatus> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: the host reads `path` (valid for its length) and writes a pointer and a size into the
    // two locals.
    let status = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    match status {
        OK if data.is_null() => Ok(None),
        OK => Ok(Some(host_block(data, size))),
        NOT_FOUND => Ok(None),
        other => Err(HostStatus(other)),
    }
}

/// The host's time in milliseconds since the Unix epoch; 0 if the host will not say.
pub(super) fn now_ms() -> u64 {
    let mut nanos = 0;
    // SAFETY: the host writes one `u64` into the local.
    match unsafe { proxy_get_current_time_nanoseconds(&mut nanos) } {
        OK => nanos / 1_000_000,
        _ => 0,
    }
}

/// The value of a property by its dotted path (`caller.id`), which has no NUL and no escaped dot
/// (a [`PropertyPath`](crate::access::PropertyPath) or a constant): each dot becomes the wire form's
/// NUL in a stack buffer, so a lookup allocates only for the value.
pub(super) fn dotted_property(path: &str) -> Result<Option<Vec<u8>>, HostStatus> {
    let mut buffer = [0; 128];
    let Some(wire) = buffer.get_mut(..path.len()) else {
        let wire: Vec<u8> = path.bytes().map(nul_for_dot).collect();
        return property(&wire);
    };
    for (slot, byte) in wire.iter_mut().zip(path.bytes()) {
        *slot = nul_for_dot(byte);
    }
    property(wire)
}

fn nul_for_dot(byte: u8) -> u8 {
    if byte == b'.' { 0 } else { byte }
}
