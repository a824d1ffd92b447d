//! The one place guest pointers are dereferenced: bounds-checked reads and writes of guest memory, and
//! returning host data through the guest's allocator.
//!
//! Every pointer/length pair is checked with `checked_add` against the memory's current size, and every
//! length against the plugin's per-argument cap, before a byte is touched. A failed check traps, naming the
//! host call, the context and the argument, so a hostile or buggy module stops with a clear message and the
//! host carries on.

use std::fmt::Display;
use std::ops::Range;

use wasmtime::{Caller, Memory};

use crate::error::HostCallTrap;
use crate::state::HostState;
use crate::trace::{HostCallArg, guest_bytes_arg};

/// The bounds of `ptr..ptr+len` when the range lies inside guest memory of `memory_len` bytes and is no longer
/// than `cap`; `None` otherwise ([`HostCall::checked_range`] says which check failed).
fn guest_range(ptr: u32, len: u32, cap: usize, memory_len: usize) -> Option<Range<usize>> {
    let start = usize::try_from(ptr).ok()?;
    let len = usize::try_from(len).ok()?;
    if len > cap {
        return None;
    }
    let end = start.checked_add(len)?;
    (end <= memory_len).then_some(start..end)
}

/// Stores a little-endian u32 at `at` in guest memory `data`; `false` when the word lies outside it.
fn store_u32(data: &mut [u8], at: u32, value: u32, cap: usize) -> bool {
    let word = guest_range(at, 4, cap, data.len())
        .and_then(|range| data.get_mut(range))
        .and_then(|word| <&mut [u8; 4]>::try_from(word).ok());
    match word {
        Some(word) => {
            *word = value.to_le_bytes();
            true
        }
        None => false,
    }
}

/// How traps name the two return slots of a call that hands data back.
const RETURN_DATA: &str = "return data pointer";
/// See [`RETURN_DATA`].
const RETURN_SIZE: &str = "return size pointer";

/// A host call in progress: the caller, plus the call's name for trap messages.
pub(crate) struct HostCall<'a, 'c> {
    caller: &'a mut Caller<'c, HostState>,
    name: &'static str,
}

impl<'a, 'c> HostCall<'a, 'c> {
    pub(crate) fn new(caller: &'a mut Caller<'c, HostState>, name: &'static str) -> Self {
        Self { caller, name }
    }

    /// The host call's ABI name.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// The VM's host state.
    pub(crate) fn state(&mut self) -> &mut HostState {
        self.caller.data_mut()
    }

    /// The VM's host state, read-only.
    pub(crate) fn state_ref(&self) -> &HostState {
        self.caller.data()
    }

    /// Adds a decoded argument (a map type, a context id) to the call's record in the host-call trace.
    pub(crate) fn trace_arg(&mut self, arg: impl FnOnce() -> HostCallArg) {
        self.state().trace.arg(arg);
    }

    /// A trap naming this host call and the effective context.
    pub(crate) fn trap(&self, reason: impl Display) -> wasmtime::Error {
        let context_id = self.caller.data().contexts.effective;
        wasmtime::Error::new(HostCallTrap {
            call: self.name,
            context_id,
            reason: reason.to_string(),
        })
    }

    /// A trap for a call made where its data does not exist (a phase violation).
    pub(crate) fn phase_trap(&self, what: &str, allowed: &str) -> wasmtime::Error {
        let contexts = &self.caller.data().contexts;
        let place = if contexts.effective == contexts.root_id {
            "the root context"
        } else {
            "a stream context"
        };
        self.trap(format!(
            "{what} is available only {allowed}; called from {} in {place}",
            contexts.callback
        ))
    }

    fn memory(&self) -> wasmtime::Result<Memory> {
        self.caller
            .data()
            .guest
            .memory
            .ok_or_else(|| self.trap("the module exports no memory"))
    }

    /// The plugin's cap on one guest byte range.
    fn cap(&self) -> usize {
        self.caller.data().plugin.limits.max_guest_buffer_bytes
    }

    /// The trap for a range [`guest_range`] refused, saying why.
    fn range_trap(&self, ptr: u32, len: u32, memory_len: usize, what: &str) -> wasmtime::Error {
        self.checked_range(ptr, len, memory_len, what)
            .err()
            .unwrap_or_else(|| wasmtime::Error::msg("checked range out of bounds"))
    }

    fn checked_range(
        &self,
        ptr: u32,
        len: u32,
        memory_len: usize,
        what: &str,
    ) -> wasmtime::Result<Range<usize>> {
        let cap = self.caller.data().plugin.limits.max_guest_buffer_bytes;
        let start = usize::try_from(ptr)
            .map_err(|_| self.trap(format!("{what} pointer {ptr:#x} does not fit")))?;
        let len_usize = usize::try_from(len)
            .map_err(|_| self.trap(format!("{what} length {len} does not fit")))?;
        if len_usize > cap {
            return Err(self.trap(format!(
                "{what} length {len} exceeds the host's limit of {cap} bytes"
            )));
        }
        match start.checked_add(len_usize) {
            Some(end) if end <= memory_len => Ok(start..end),
            _ => Err(self.trap(format!(
                "{what} at {ptr:#x} with length {len} is outside guest memory ({memory_len} bytes)"
            ))),
        }
    }

    /// Runs `f` on the guest bytes at `ptr..ptr+len` and the host state, without copying. The bytes are
    /// the call's argument `what` in the host-call trace.
    pub(crate) fn with_bytes<R>(
        &mut self,
        ptr: u32,
        len: u32,
        what: &'static str,
        f: impl FnOnce(&[u8], &mut HostState) -> R,
    ) -> wasmtime::Result<R> {
        let memory = self.memory()?;
        let cap = self.cap();
        let (data, state) = memory.data_and_store_mut(&mut *self.caller);
        let memory_len = data.len();
        match guest_range(ptr, len, cap, memory_len).and_then(|range| data.get(range)) {
            Some(bytes) => {
                state.trace.arg(|| guest_bytes_arg(what, bytes));
                Ok(f(bytes, state))
            }
            None => Err(self.range_trap(ptr, len, memory_len, what)),
        }
    }

    /// Runs `f` on two guest byte ranges (typically a key and a value) and the host state.
    pub(crate) fn with_two<R>(
        &mut self,
        first: (u32, u32, &'static str),
        second: (u32, u32, &'static str),
        f: impl FnOnce(&[u8], &[u8], &mut HostState) -> R,
    ) -> wasmtime::Result<R> {
        let memory = self.memory()?;
        let cap = self.cap();
        let (data, state) = memory.data_and_store_mut(&mut *self.caller);
        let data: &[u8] = data;
        let memory_len = data.len();
        let Some(a) = guest_range(first.0, first.1, cap, memory_len).and_then(|r| data.get(r))
        else {
            return Err(self.range_trap(first.0, first.1, memory_len, first.2));
        };
        let Some(b) = guest_range(second.0, second.1, cap, memory_len).and_then(|r| data.get(r))
        else {
            return Err(self.range_trap(second.0, second.1, memory_len, second.2));
        };
        state.trace.arg(|| guest_bytes_arg(first.2, a));
        state.trace.arg(|| guest_bytes_arg(second.2, b));
        Ok(f(a, b, state))
    }

    /// A copy of the guest bytes at `ptr..ptr+len`.
    pub(crate) fn read(
        &mut self,
        ptr: u32,
        len: u32,
        what: &'static str,
    ) -> wasmtime::Result<Vec<u8>> {
        self.with_bytes(ptr, len, what, |bytes, _| bytes.to_vec())
    }

    /// Writes the `N` bytes of a return value at `ptr`: a fixed-size store, with no copy loop.
    fn write_array<const N: usize>(
        &mut self,
        ptr: u32,
        bytes: [u8; N],
        what: &str,
    ) -> wasmtime::Result<()> {
        let memory = self.memory()?;
        let cap = self.cap();
        let len = u32::try_from(N).unwrap_or(u32::MAX);
        let data = memory.data_mut(&mut *self.caller);
        let memory_len = data.len();
        let target = guest_range(ptr, len, cap, memory_len)
            .and_then(|range| data.get_mut(range))
            .and_then(|target| <&mut [u8; N]>::try_from(target).ok());
        match target {
            Some(target) => {
                *target = bytes;
                Ok(())
            }
            None => Err(self.range_trap(ptr, len, memory_len, what)),
        }
    }

    /// The bounds of `ptr..ptr+len` in guest memory, or `None` when they fall outside it (for WASI calls,
    /// which report EFAULT rather than trap).
    fn try_range(&self, ptr: u32, len: u32) -> Option<Range<usize>> {
        let memory = self.caller.data().guest.memory?;
        let memory_len = memory.data_size(&*self.caller);
        let start = usize::try_from(ptr).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        (end <= memory_len).then_some(start..end)
    }

    /// A copy of the guest bytes at `ptr..ptr+len`, or `None` when out of bounds.
    pub(crate) fn try_read(&mut self, ptr: u32, len: u32) -> Option<Vec<u8>> {
        let range = self.try_range(ptr, len)?;
        let memory = self.caller.data().guest.memory?;
        memory.data(&*self.caller).get(range).map(<[u8]>::to_vec)
    }

    /// Writes `bytes` at `ptr`; `false` when out of bounds.
    pub(crate) fn try_write(&mut self, ptr: u32, bytes: &[u8]) -> bool {
        let Ok(len) = u32::try_from(bytes.len()) else {
            return false;
        };
        let (Some(range), Some(memory)) =
            (self.try_range(ptr, len), self.caller.data().guest.memory)
        else {
            return false;
        };
        match memory.data_mut(&mut *self.caller).get_mut(range) {
            Some(target) => {
                target.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }

    /// Runs `f` on the guest bytes at `ptr..ptr+len`, to fill them in place; `None` when out of bounds.
    pub(crate) fn try_fill<R>(
        &mut self,
        ptr: u32,
        len: u32,
        f: impl FnOnce(&mut [u8]) -> R,
    ) -> Option<R> {
        let range = self.try_range(ptr, len)?;
        let memory = self.caller.data().guest.memory?;
        memory.data_mut(&mut *self.caller).get_mut(range).map(f)
    }

    /// Writes a little-endian u32 at `ptr`.
    pub(crate) fn write_u32(&mut self, ptr: u32, value: u32, what: &str) -> wasmtime::Result<()> {
        self.write_array(ptr, value.to_le_bytes(), what)
    }

    /// Writes a little-endian u64 at `ptr`.
    pub(crate) fn write_u64(&mut self, ptr: u32, value: u64, what: &str) -> wasmtime::Result<()> {
        self.write_array(ptr, value.to_le_bytes(), what)
    }

    /// Checks that a return slot of `size` bytes at `ptr` is writable, before any work is done for it.
    pub(crate) fn check_slot(&mut self, ptr: u32, size: u32, what: &str) -> wasmtime::Result<()> {
        let memory = self.memory()?;
        self.checked_range(ptr, size, memory.data_size(&*self.caller), what)
            .map(|_| ())
    }

    /// Allocates `size` bytes in the guest with its own allocator. The caller checks the block against
    /// the guest's memory with [`HostCall::allocator_trap`] as it fills it.
    fn allocate(&mut self, size: u32) -> wasmtime::Result<u32> {
        // Taken out for the call rather than cloned (a clone touches atomics every VM of the engine shares);
        // an allocator that re-enters a host call needing an allocation finds none and traps.
        let allocate = self.caller.data_mut().guest.allocate.take().ok_or_else(|| {
            self.trap("the module exports no allocator (proxy_on_memory_allocate or malloc), or it called back into the host")
        })?;
        let called = allocate.call(&mut *self.caller, size);
        self.caller.data_mut().guest.allocate = Some(allocate);
        called
    }

    /// The trap for a block the guest's allocator returned that is null or outside its memory.
    fn allocator_trap(&self, ptr: u32, size: u32, memory_len: usize) -> wasmtime::Error {
        self.trap(format!(
            "the guest allocator returned {ptr:#x} for {size} bytes, which is not a usable block of guest memory ({memory_len} bytes)"
        ))
    }

    /// Hands `len` bytes to the guest: allocates them in the guest, lets `fill` write them from the host
    /// state, and stores `(ptr, len)` at the two return pointers. Empty data is returned as `(0, 0)` without
    /// allocating, which the SDK reads as "none" for buffers and as empty for values. `fill` returns `None`
    /// when the data no longer has the length the block was allocated for (the guest's allocator changed
    /// it through another host call), which traps.
    pub(crate) fn return_with(
        &mut self,
        ptr_ptr: u32,
        size_ptr: u32,
        len: usize,
        fill: impl FnOnce(&mut HostState, &mut [u8]) -> Option<()>,
    ) -> wasmtime::Result<()> {
        let memory = self.memory()?;
        let memory_len = memory.data_size(&*self.caller);
        let cap = self.cap();
        for (slot, what) in [(ptr_ptr, RETURN_DATA), (size_ptr, RETURN_SIZE)] {
            if guest_range(slot, 4, cap, memory_len).is_none() {
                return Err(self.range_trap(slot, 4, memory_len, what));
            }
        }
        if len == 0 {
            self.write_u32(ptr_ptr, 0, RETURN_DATA)?;
            self.write_u32(size_ptr, 0, RETURN_SIZE)?;
            self.state().trace.returned(0);
            return Ok(());
        }
        let size = u32::try_from(len)
            .map_err(|_| self.trap(format!("cannot return {len} bytes to a 32-bit guest")))?;
        let ptr = self.allocate(size)?;
        let (data, state) = memory.data_and_store_mut(&mut *self.caller);
        let memory_len = data.len();
        if ptr == 0 || guest_range(ptr, size, usize::MAX, memory_len).is_none() {
            return Err(self.allocator_trap(ptr, size, memory_len));
        }
        let Some(target) = guest_range(ptr, size, cap, memory_len).and_then(|r| data.get_mut(r))
        else {
            return Err(self.range_trap(ptr, size, memory_len, "allocated block"));
        };
        if fill(state, target).is_none() {
            return Err(
                self.trap("the data to return changed while the guest allocated room for it")
            );
        }
        // The pointer and size go into the memory already at hand; both slots were checked before the
        // guest allocated, and its memory can only have grown since.
        for (slot, value, what) in [(ptr_ptr, ptr, RETURN_DATA), (size_ptr, size, RETURN_SIZE)] {
            if !store_u32(data, slot, value, cap) {
                return Err(self.range_trap(slot, 4, memory_len, what));
            }
        }
        state.trace.returned(len);
        Ok(())
    }

    /// Hands owned bytes to the guest (see [`HostCall::return_with`]).
    pub(crate) fn return_bytes(
        &mut self,
        ptr_ptr: u32,
        size_ptr: u32,
        bytes: &[u8],
    ) -> wasmtime::Result<()> {
        self.return_with(ptr_ptr, size_ptr, bytes.len(), |_, target| {
            target.copy_from_slice(bytes);
            Some(())
        })
    }

    /// Hands the host state's scratch buffer to the guest; the buffer is kept for reuse.
    pub(crate) fn return_scratch(&mut self, ptr_ptr: u32, size_ptr: u32) -> wasmtime::Result<()> {
        let len = self.state_ref().scratch.len();
        self.return_with(ptr_ptr, size_ptr, len, |state, target| {
            (target.len() == state.scratch.len()).then(|| target.copy_from_slice(&state.scratch))
        })
    }
}
