//! `CompletionQueue::push` and `poll` must not allocate after creation.
//!
//! A counting global allocator wraps `System` and counts allocations made by
//! the current thread only, so the test harness's own threads do not
//! disturb the count.

use std::hint::black_box;

use xrdma_testnet::alloc::{CountingAlloc, allocations};
use xrdma_verbs::verbs::completion::{
    CompletionQueue, IbvWc, Notify, WcOpcode, WcStatus, WorkCompletion,
};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[test]
fn counter_sees_allocations() {
    // The test below would pass vacuously if counting were broken.
    let before = allocations();
    let v = black_box(vec![1u8; 100]);
    drop(v);
    assert!(allocations() > before);
}

#[test]
fn push_and_poll_do_not_allocate() {
    let mut cq = CompletionQueue::new(64).unwrap();
    let mut out = [WorkCompletion::default(); 16];
    let mut out_ibv = [IbvWc::default(); 16];
    let mut fired = 0u64;
    let mut polled = 0u64;
    let mut overruns = 0u64;

    let before = allocations();
    for i in 0..10_000u64 {
        if i % 3 == 0 {
            cq.req_notify(i % 2 == 0);
        }
        let wc = WorkCompletion {
            wr_id: i,
            status: if i % 97 == 0 {
                WcStatus::WrFlushErr
            } else {
                WcStatus::Success
            },
            opcode: if i % 2 == 0 {
                WcOpcode::Recv
            } else {
                WcOpcode::Send
            },
            byte_len: i as u32,
            ..Default::default()
        };
        match cq.push(wc, i % 5 == 0) {
            Ok(Notify::Fire) => fired += 1,
            Ok(Notify::None) => {}
            Err(_) => overruns += 1,
        }
        if i % 7 == 0 {
            polled += cq.poll(&mut out[..1 + (i as usize % 16)]) as u64;
        }
        if i % 11 == 0 {
            polled += cq.poll_ibv(&mut out_ibv) as u64;
        }
    }
    polled += cq.poll(&mut out) as u64;
    let after = allocations();

    assert_eq!(after - before, 0, "push/poll allocated");
    // The loop really exercised the paths.
    assert_eq!(overruns, 0);
    assert!(fired > 1000, "fired {fired}");
    assert!(polled > 9000, "polled {polled}");
    black_box((&out, &out_ibv));
}

#[test]
fn overrun_path_does_not_allocate() {
    let mut cq = CompletionQueue::new(4).unwrap();
    let mut out = [WorkCompletion::default(); 4];
    let before = allocations();
    for i in 0..10_000u64 {
        let _ = cq.push(
            WorkCompletion {
                wr_id: i,
                ..Default::default()
            },
            false,
        );
        if i % 1000 == 0 {
            cq.poll(&mut out[..2]);
        }
    }
    assert_eq!(allocations() - before, 0);
    assert!(cq.is_overrun());
}
