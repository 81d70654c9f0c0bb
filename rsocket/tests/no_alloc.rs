//! The steady state of a stream rsocket allocates nothing: after a warm-up, rounds of writes
//! and reads of sizes from 1 byte to 64 KiB, both ways, make no heap allocation, on the
//! thread that calls them nor, while it does, on any other thread of the process.
//!
//! Two counts, because progress is shared: the calling thread drives completions inline
//! while it polls, but the rsocket service thread and the verbs helper threads take them
//! when they wake first. The per-thread count pins allocations to the caller; the
//! process-wide count covers the threads that make progress for it. The only other threads
//! are the test harness's, which waits for the test, and the simulator's clock.

use std::alloc::{GlobalAlloc, Layout};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use xrdma_rsocket::RsStream;
use xrdma_testnet::alloc::{CountingAlloc, allocations};

mod common;

use common::{pair, pattern};

/// [`CountingAlloc`]'s count per thread, and a count of the whole process's allocations.
struct CountingBoth;

static PROCESS_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to CountingAlloc unchanged, so its guarantees carry over;
// counting touches only an atomic.
unsafe impl GlobalAlloc for CountingBoth {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        PROCESS_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds GlobalAlloc::alloc's contract.
        unsafe { CountingAlloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        PROCESS_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for alloc.
        unsafe { CountingAlloc.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        PROCESS_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr` came from this allocator with `layout`.
        unsafe { CountingAlloc.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for realloc.
        unsafe { CountingAlloc.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingBoth = CountingBoth;

/// Sizes written and read each round: inline, around the inline limit, the first chunk,
/// chunks that double, a whole target SGE.
const SIZES: [usize; 9] = [1, 63, 64, 65, 1000, 2048, 4096, 20_000, 65_536];
/// Rounds of a batch, and how many batches may go by before one allocates nothing.
const ROUNDS: usize = 100;
const BATCHES: usize = 10;

/// Writes each size on `from` and reads it back on `to`, checking the bytes.
fn round(from: &RsStream, to: &RsStream, data: &[u8], buf: &mut [u8]) {
    for n in SIZES {
        (&*from).write_all(&data[..n]).unwrap();
        (&*to).read_exact(&mut buf[..n]).unwrap();
        assert!(buf[..n] == data[..n], "{n} bytes came back different");
    }
}

#[test]
fn writes_and_reads_allocate_nothing_once_warm() {
    let (client, server, _l) = pair(7301);
    let data = pattern(65_536);
    let mut buf = vec![0u8; 65_536];
    // Batches of rounds until one allocates nothing at all: the first ones may still grow
    // queues and pools to their working size (the simulator's frame pool grows whenever more
    // frames than ever are in flight), but an allocation per write or read shows in every
    // batch.
    let mut counts = Vec::new();
    loop {
        let (mine, all) = (allocations(), PROCESS_ALLOCATIONS.load(Ordering::Relaxed));
        for _ in 0..ROUNDS {
            round(&client, &server, &data, &mut buf);
            round(&server, &client, &data, &mut buf);
        }
        let mine = allocations() - mine;
        let all = PROCESS_ALLOCATIONS.load(Ordering::Relaxed) - all;
        counts.push((mine, all));
        if (mine, all) == (0, 0) {
            println!("allocations (caller, process) per batch until one made none: {counts:?}");
            break;
        }
        assert!(
            counts.len() < BATCHES,
            "allocations (on the calling thread, in the process) in each batch of {ROUNDS} \
             rounds of {SIZES:?} bytes both ways: {counts:?}"
        );
    }
}
