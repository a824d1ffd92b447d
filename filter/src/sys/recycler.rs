//! The module's global allocator: small blocks recycled through a free list per power-of-two size.
//!
//! A request allocates and frees the same few small blocks every time (its context, header lists, a
//! value or two). Freed blocks of up to 2 KiB are kept on a free list per size and handed out again,
//! a pop or a push, where the system allocator's bookkeeping costs about 200 instructions per
//! allocation and as much per free. Larger blocks, and the first block of each size, come from the
//! system allocator. A recycled block is never returned to it, so each size holds at most what was in
//! use at once: the free lists are bounded by the peak, as the memory of a Wasm module, which never
//! shrinks, is anyway.
//!
//! The free lists are plain cells, sound only without threads: the global instance exists on
//! `wasm32-wasip1` alone (a target with atomics refuses to compile), where the unit tests run on it
//! too, and the tests' own instances are each used on one thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ptr::null_mut;

#[cfg(target_feature = "atomics")]
compile_error!("the filter's allocator assumes a single-threaded target");

/// Smallest block: room for the free list's link at any alignment a small block needs.
const SMALLEST: usize = 8;
/// Largest recycled block.
const LARGEST: usize = 2048;
/// How many free lists: one per bit length, 0 to 11, of the block size less one. The lengths 0 to 3
/// (1 to 8 bytes) all hold 8-byte blocks: four lists where one would do, which spares every call the
/// step that would fold them into one.
const CLASSES: usize = LARGEST.trailing_zeros() as usize + 1;

/// A global allocator that recycles small blocks; see the module docs.
pub struct Recycler {
    /// The first free block of each size; each free block's first word links to the next.
    free: [Cell<*mut u8>; CLASSES],
}

impl Recycler {
    /// An allocator holding no free block yet.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            free: [const { Cell::new(null_mut()) }; CLASSES],
        }
    }

    /// A fresh block for `layout` from the system: of its class's size and alignment when recycled
    /// blocks serve it. Out of line and cold, so the recycling paths set up no stack frame for it.
    #[cold]
    #[inline(never)]
    fn fresh(layout: Layout) -> *mut u8 {
        let layout = match class(layout) {
            // SAFETY: a block size is a power of two from 8 to 2048, a valid size and alignment.
            Some(class) => unsafe {
                Layout::from_size_align_unchecked(block_size(class), block_size(class))
            },
            None => layout,
        };
        // SAFETY: `layout` has a non-zero size, or is the caller's own layout, as given.
        unsafe { System.alloc(layout) }
    }

    /// Frees a block the system allocator gave for `layout`. Out of line, as [`Self::fresh`].
    #[cold]
    #[inline(never)]
    fn release(block: *mut u8, layout: Layout) {
        // SAFETY: `dealloc` passes only blocks of no class, which `fresh` took from the system with
        // this layout.
        unsafe { System.dealloc(block, layout) }
    }
}

// SAFETY: wasm32-wasip1 has no threads (a target with atomics refuses to compile above), so the
// cells are never reached from two threads.
#[cfg(target_arch = "wasm32")]
unsafe impl Sync for Recycler {}

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: Recycler = Recycler::new();

impl Default for Recycler {
    fn default() -> Self {
        Self::new()
    }
}

/// The free list of `layout`'s blocks: the bit length of the block size less one; `None` for a block
/// the system allocator serves (larger than 2 KiB, or no size at all).
///
/// `(size - 1) | (align - 1)` has the bit length of the larger of `size - 1` and `align - 1`, and so
/// of the smallest power of two at least the size and the alignment (a power of two). A size of 0
/// wraps to all ones, which no class takes.
#[inline(always)]
fn class(layout: Layout) -> Option<usize> {
    let mask = layout.size().wrapping_sub(1) | (layout.align() - 1);
    // Below 2048: 0 to 11 bits.
    (mask < LARGEST).then(|| (usize::BITS - mask.leading_zeros()) as usize)
}

/// The size (and alignment) of the blocks of `class`: at least 8, for the free list's link.
fn block_size(class: usize) -> usize {
    (1 << class).max(SMALLEST)
}

// SAFETY: every block handed out is at least `layout.size()` bytes aligned to `layout.align()`: a
// recycled one was allocated from the system with its class's block size as both size and
// alignment, and the class of a layout is at least its size and its alignment. A block is on one
// free list only after `dealloc`, whose layout names the same class as the `alloc` that made it.
unsafe impl GlobalAlloc for Recycler {
    // Out of line: even the recycling path alone, inlined into every allocation, made the module
    // 7.5 KB larger for 180 instructions fewer per request.
    #[inline(never)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(list) = class(layout).and_then(|class| self.free.get(class)) {
            let block = list.get();
            if !block.is_null() {
                // SAFETY: `block` is a free block of this class, aligned to at least 8, whose first
                // word `dealloc` set to the next free block.
                list.set(unsafe { block.cast::<*mut u8>().read() });
                return block;
            }
        }
        Self::fresh(layout)
    }

    #[inline(never)]
    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        match class(layout).and_then(|class| self.free.get(class)) {
            Some(list) => {
                // SAFETY: `block` came from `alloc` with this class: at least 8 bytes, aligned to
                // at least 8, and no longer used by the caller.
                unsafe { block.cast::<*mut u8>().write(list.get()) };
                list.set(block);
            }
            None => Self::release(block, layout),
        }
    }

    #[inline(never)]
    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded up to the alignment, does not overflow.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class(layout), class(new_layout)) {
            // The block already has room: classes round up.
            (Some(was), Some(now)) if was == now => block,
            // SAFETY: both blocks are the system allocator's, with the caller's layouts.
            (None, None) => unsafe { System.realloc(block, layout, new_size) },
            (_, now) => {
                // A large block straight from the system, as `alloc` would get it: this second
                // caller also keeps `fresh` a function of its own, which wasm-opt would otherwise
                // inline into `alloc` (its only caller), stack frame and all.
                // SAFETY: a fresh block for the new layout; the old one is valid for
                // `layout.size()` bytes and freed once copied.
                unsafe {
                    let moved = match now {
                        Some(_) => self.alloc(new_layout),
                        None => Self::fresh(new_layout),
                    };
                    if !moved.is_null() {
                        std::ptr::copy_nonoverlapping(block, moved, layout.size().min(new_size));
                        self.dealloc(block, layout);
                    }
                    moved
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// Sizes around every class boundary and beyond the largest, and a few in between.
    fn sizes() -> impl Iterator<Item = usize> {
        (1..=40).chain((3..=13).flat_map(|shift| {
            let edge = 1usize << shift;
            [edge - 1, edge, edge + 1, edge + edge / 2]
        }))
    }

    fn layouts() -> impl Iterator<Item = Layout> {
        sizes().flat_map(|size| {
            (0..=12).map(move |shift| Layout::from_size_align(size, 1 << shift).unwrap())
        })
    }

    /// Allocates `layout`, checks the block is aligned and writable for its whole size, and fills
    /// it with `byte`.
    fn take(recycler: &Recycler, layout: Layout, byte: u8) -> *mut u8 {
        // SAFETY: a non-zero size.
        let block = unsafe { recycler.alloc(layout) };
        assert!(!block.is_null(), "{layout:?}");
        assert_eq!(block as usize % layout.align(), 0, "{layout:?}");
        // SAFETY: the block is at least `layout.size()` bytes.
        unsafe { block.write_bytes(byte, layout.size()) };
        block
    }

    #[test]
    fn class_is_the_smallest_power_of_two_holding_size_and_alignment() {
        for layout in layouts() {
            let needed = layout.size().max(layout.align()).max(SMALLEST);
            match class(layout) {
                Some(class) => {
                    let size = block_size(class);
                    assert!(size >= needed && size / 2 < needed, "{layout:?}");
                }
                None => assert!(needed > LARGEST, "{layout:?}"),
            }
        }
        assert_eq!(class(Layout::from_size_align(0, 1).unwrap()), None);
    }

    #[test]
    fn every_size_and_alignment_gets_an_aligned_block_of_its_own() {
        let recycler = Recycler::new();
        // Two blocks of each layout live at once, then freed and taken again (recycled).
        for round in 0..2u8 {
            let blocks: Vec<_> = layouts()
                .flat_map(|layout| [(layout, 0), (layout, 1)])
                .map(|(layout, n)| (layout, n, take(&recycler, layout, round ^ n)))
                .collect();
            for &(layout, n, block) in &blocks {
                // SAFETY: `block` holds `layout.size()` bytes written by `take`.
                let bytes = unsafe { std::slice::from_raw_parts(block, layout.size()) };
                assert!(bytes.iter().all(|&b| b == round ^ n), "{layout:?}: overlap");
            }
            for (layout, _, block) in blocks {
                // SAFETY: allocated above with this layout.
                unsafe { recycler.dealloc(block, layout) };
            }
        }
    }

    #[test]
    fn a_freed_small_block_is_handed_out_again() {
        let recycler = Recycler::new();
        let layout = Layout::from_size_align(24, 8).unwrap();
        let first = take(&recycler, layout, 1);
        // SAFETY: allocated above with this layout.
        unsafe { recycler.dealloc(first, layout) };
        // Another layout of the same class (32 bytes) gets the same block.
        let again = take(&recycler, Layout::from_size_align(32, 4).unwrap(), 2);
        assert_eq!(again, first);
        // SAFETY: allocated above with a layout of this class.
        unsafe { recycler.dealloc(again, Layout::from_size_align(32, 4).unwrap()) };
    }

    #[test]
    fn realloc_keeps_the_contents_across_classes_and_sizes() {
        let recycler = Recycler::new();
        for align in [1, 8, 64] {
            let mut layout = Layout::from_size_align(1, align).unwrap();
            let mut block = take(&recycler, layout, 0);
            // Grow through every class and past the largest, then shrink back.
            let steps = (0..14)
                .map(|shift| 1usize << shift)
                .chain([3000, 700, 9, 1]);
            for (step, new_size) in steps.enumerate() {
                // SAFETY: `block` was allocated (or reallocated) with `layout`; `new_size` is small.
                let moved = unsafe { recycler.realloc(block, layout, new_size) };
                assert!(!moved.is_null());
                assert_eq!(moved as usize % align, 0);
                let kept = layout.size().min(new_size);
                // SAFETY: the first `kept` bytes were written before the move.
                let bytes = unsafe { std::slice::from_raw_parts(moved, kept) };
                assert!(
                    bytes.iter().all(|&b| b == step as u8),
                    "{layout:?} to {new_size}"
                );
                layout = Layout::from_size_align(new_size, align).unwrap();
                // SAFETY: the block holds `new_size` bytes now.
                unsafe { moved.write_bytes(step as u8 + 1, new_size) };
                block = moved;
            }
            // SAFETY: the last layout the block was reallocated to.
            unsafe { recycler.dealloc(block, layout) };
        }
    }
}
