//! A global allocator that counts the allocations each thread makes, for tests that prove a
//! path allocates nothing. A test binary installs it with
//!
//! ```
//! #[global_allocator]
//! static ALLOC: xrdma_testnet::alloc::CountingAlloc = xrdma_testnet::alloc::CountingAlloc;
//! # fn main() {
//! # let before = xrdma_testnet::alloc::allocations();
//! # let boxed = std::hint::black_box(Box::new(1u8));
//! # assert!(xrdma_testnet::alloc::allocations() > before, "{boxed}");
//! # }
//! ```
//!
//! and compares [`allocations`] before and after the code under test. Only the calling
//! thread's allocations count, so the test harness's other threads do not disturb it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Counts allocations per thread, then defers to the system allocator.
pub struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    // try_with: the thread-local may already be gone while a thread exits.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

/// Allocations (including reallocations) the calling thread has made so far.
pub fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: every method forwards to `System` unchanged, so its guarantees carry over;
// counting touches only a const-initialised thread-local Cell, which never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: the caller upholds GlobalAlloc::alloc's contract, which is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: as for alloc.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: `ptr` came from System through this allocator with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for realloc.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Runs `round` 200 times to warm up (queues reach their working size), then `rounds`
/// times more, and panics naming `what` if the calling thread allocated in those.
pub fn assert_allocates_nothing(what: &str, rounds: u64, mut round: impl FnMut()) {
    for _ in 0..200 {
        round();
    }
    let before = allocations();
    for _ in 0..rounds {
        round();
    }
    let allocated = allocations() - before;
    assert_eq!(
        allocated, 0,
        "{allocated} heap allocations in {rounds} rounds of {what}"
    );
}
