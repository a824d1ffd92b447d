//! The host calls of the per-request path made without the SDK's wrappers, and WASI's `random_get`. The SDK's wrappers turn
//! a status into a `Result` and panic on one they do not expect; these hand back the host's number
//! and leave the decision to the caller.
//!
//! The SDK decodes a header map into an owned `String` and `Vec` per name and value (two allocations
//! per header, and a panic on a name that is not UTF-8), serialises a property path into a fresh `Vec`
//! and turns the clock into a `SystemTime`. Here the host's single allocation is kept as it is:
//! [`HeaderList::from_serialized`](crate::headers::HeaderList::from_serialized) borrows every header
//! from it, property paths are constants in the wire form, and the time stays a number. The imports are
//! the same `env` functions the SDK imports; a status is returned as the host's number, never assumed
//! to be one the SDK knows.

use std::ptr::null_mut;

use proxy_wasm::types::{LogLevel, MapType};

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
    fn proxy_log(level: LogLevel, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_add_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
}

#[link(wasm_import_module = "wasi_snapshot_preview1")]
unsafe extern "C" {
    fn random_get(buffer: *mut u8, length: usize) -> i32;
}

/// `Ok`, in the ABI's numbering.
const OK: u32 = 0;
/// `NotFound`, in the ABI's numbering.
const NOT_FOUND: u32 = 1;
/// Not a status: `Ok` with a size but no block, reported as this number (outside the ABI's).
pub(crate) const NO_BLOCK: u32 = u32::MAX;

/// A status other than `Ok` from the host, by its ABI number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HostStatus(pub(crate) u32);

impl std::fmt::Display for HostStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            NO_BLOCK => f.write_str("the host answered Ok with a size but no data"),
            status => write!(f, "the host answered with status {status}"),
        }
    }
}

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

/// The serialized pairs of a header map, in the host's own block. A host that answers `Ok` with a
/// size but no block is refused as [`NO_BLOCK`] rather than read as an empty map, which would hide
/// every header the filter must strip.
pub(crate) fn header_map(map: MapType) -> Result<Vec<u8>, HostStatus> {
    let (mut data, mut size) = (null_mut(), 0);
    // SAFETY: the host writes a pointer and a size into the two locals, nothing else.
    let status = unsafe { proxy_get_header_map_pairs(map, &mut data, &mut size) };
    match status {
        OK if data.is_null() && size != 0 => Err(HostStatus(NO_BLOCK)),
        OK => Ok(host_block(data, size)),
        other => Err(HostStatus(other)),
    }
}

/// The value of a property, by its path in the wire form (segments separated by NUL); `None` when
/// the host has no such property.
pub(crate) fn property(path: &[u8]) -> Result<Option<Vec<u8>>, HostStatus> {
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

/// One change to one name of a header map.
#[derive(Clone, Copy)]
pub(crate) enum MapChange<'v> {
    /// One more value, after those the name has.
    Add(&'v [u8]),
    /// This one value in place of those the name has.
    Replace(&'v [u8]),
    /// No value.
    Remove,
}

/// Changes the header `name` of `map`.
pub(crate) fn change_header(
    map: MapType,
    name: &str,
    change: MapChange<'_>,
) -> Result<(), HostStatus> {
    let key = name.as_bytes();
    // SAFETY: the host reads the name and the value, each valid for its length.
    let status = unsafe {
        match change {
            MapChange::Add(value) => proxy_add_header_map_value(
                map,
                key.as_ptr(),
                key.len(),
                value.as_ptr(),
                value.len(),
            ),
            MapChange::Replace(value) => proxy_replace_header_map_value(
                map,
                key.as_ptr(),
                key.len(),
                value.as_ptr(),
                value.len(),
            ),
            MapChange::Remove => proxy_remove_header_map_value(map, key.as_ptr(), key.len()),
        }
    };
    match status {
        OK => Ok(()),
        other => Err(HostStatus(other)),
    }
}

/// Adds `offset` to the counter `id`.
pub(crate) fn increment_metric(id: u32, offset: i64) -> Result<(), HostStatus> {
    // SAFETY: plain numbers cross; the host writes nothing.
    match unsafe { proxy_increment_metric(id, offset) } {
        OK => Ok(()),
        other => Err(HostStatus(other)),
    }
}

/// Records `value` in the gauge or histogram `id`.
pub(crate) fn record_metric(id: u32, value: u64) -> Result<(), HostStatus> {
    // SAFETY: plain numbers cross; the host writes nothing.
    match unsafe { proxy_record_metric(id, value) } {
        OK => Ok(()),
        other => Err(HostStatus(other)),
    }
}

/// Logs `message` at `level`. Bytes, so a line written as bytes (text and ASCII only) reaches the
/// host without a UTF-8 check; a failure is the host's status, for the caller to handle.
pub(crate) fn log(level: LogLevel, message: &[u8]) -> Result<(), HostStatus> {
    // SAFETY: the host reads `message`, valid for its length.
    match unsafe { proxy_log(level, message.as_ptr(), message.len()) } {
        OK => Ok(()),
        other => Err(HostStatus(other)),
    }
}

/// The host's time in nanoseconds since the Unix epoch; 0 if the host will not say.
pub(crate) fn now_nanos() -> u64 {
    let mut nanos = 0;
    // SAFETY: the host writes one `u64` into the local.
    match unsafe { proxy_get_current_time_nanoseconds(&mut nanos) } {
        OK => nanos,
        _ => 0,
    }
}

/// The host's time in milliseconds since the Unix epoch; 0 if the host will not say.
pub(crate) fn now_ms() -> u64 {
    now_nanos() / 1_000_000
}

/// 64 bits from WASI `random_get`; `None` when the host fails it. Called directly: the standard
/// library reaches it only through `RandomState`, whose SipHash and error tables cost kilobytes.
pub(crate) fn random_u64() -> Option<u64> {
    let mut bytes = [0; 8];
    // SAFETY: the host writes at most `bytes.len()` bytes into the local array.
    let errno = unsafe { random_get(bytes.as_mut_ptr(), bytes.len()) };
    (errno == 0).then(|| u64::from_le_bytes(bytes))
}

/// The value of a property by its dotted path (`caller.id`), which has no NUL and no escaped dot
/// (a [`PropertyPath`](crate::access::PropertyPath) or a constant): each dot becomes the wire form's
/// NUL in a stack buffer, so a lookup allocates only for the value.
pub(crate) fn dotted_property(path: &str) -> Result<Option<Vec<u8>>, HostStatus> {
    // Room for the paths a filter reads (`source.principal` is 16 bytes) in a few stores: 128 bytes
    // to clear cost a call of their own on every read.
    let mut buffer = [0; 32];
    let bytes = path.as_bytes();
    let Some(wire) = buffer.get_mut(..bytes.len()) else {
        let wire: Vec<u8> = bytes.iter().map(|&byte| nul_for_dot(byte)).collect();
        return property(&wire);
    };
    // Eight bytes per step (a byte loop costs a dozen instructions a turn in the guest); the tail
    // as the last eight bytes again, which rewrites some bytes to what they already are.
    let (words, tail) = bytes.as_chunks::<8>();
    for (slot, word) in wire.as_chunks_mut::<8>().0.iter_mut().zip(words) {
        *slot = nuls_for_dots(*word);
    }
    if !tail.is_empty() {
        match (bytes.last_chunk::<8>(), wire.last_chunk_mut::<8>()) {
            (Some(word), Some(slot)) => *slot = nuls_for_dots(*word),
            _ => {
                for (slot, &byte) in wire.iter_mut().zip(bytes) {
                    *slot = nul_for_dot(byte);
                }
            }
        }
    }
    property(wire)
}

/// Eight bytes with each dot made a NUL: an exact per-byte test, no carry between bytes.
fn nuls_for_dots(word: [u8; 8]) -> [u8; 8] {
    const LOWS: u64 = u64::from_le_bytes([0x7f; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    let word = u64::from_le_bytes(word);
    let other = word ^ u64::from_le_bytes([b'.'; 8]);
    // High bit of each byte that differs from a dot.
    let differs = (((other & LOWS) + LOWS) | other) & HIGHS;
    let dots = (!differs & HIGHS) >> 7;
    (word & !(dots * 0xff)).to_le_bytes()
}

fn nul_for_dot(byte: u8) -> u8 {
    if byte == b'.' { 0 } else { byte }
}
