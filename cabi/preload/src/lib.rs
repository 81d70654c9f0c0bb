//! `libxrdma_preload.so`: an unmodified program's TCP sockets over xrdma's rsockets.
//!
//! ```sh
//! LD_PRELOAD=target/release/libxrdma_preload.so iperf3 -s      # or: xrdma run -- iperf3 -s
//! ```
//!
//! The library defines the socket calls of the C library (socket, connect, read, poll,
//! epoll_wait, ...) in front of it. A TCP socket starts on the kernel, as it would without
//! us; where it goes is decided when it connects or listens (`policy.rs`):
//!
//! - **connect**: to a destination that matches `XRDMA_TCP` (everything, by default), an
//!   rsocket connects first. If the peer has no xrdma (no RoCEv2 endpoint, or nothing
//!   listening there), the socket connects on the kernel as it was, and the destination is
//!   remembered for a minute so that the next connection goes straight there.
//! - **listen**: the kernel socket listens, and an rsocket listens on the same address and
//!   port; `accept` gives whichever connection comes, so kernel TCP clients are served too.
//!
//! Everything else (files, pipes, UDP, Unix sockets, TCP the configuration leaves out)
//! reaches the kernel untouched. The program's descriptor numbers are real descriptors
//! (`fds.rs`), so poll, select and epoll see them; the calls that wait (poll, select, epoll)
//! wait on xrdma's sockets as `rpoll` does, spinning briefly and then sleeping on their own
//! events.
//!
//! Calls the library itself makes (xrdma's own descriptors, its threads) pass straight
//! through: a thread-local mark (`Inside`) says a call comes from within.
//!
//! After `fork`, xrdma (its devices, queue pairs and threads) stays the parent's: the
//! child's own sockets go over the kernel, and a child goes on using the connections over
//! xrdma it inherited through a relay in the parent (`fork.rs`); one that execs or exits
//! changes nothing. A forked child accepts on an inherited listener the kernel's
//! connections only. UDP sockets stay on the kernel.

#![deny(unsafe_op_in_unsafe_fn)]
// The exports' contracts are the C library's own (socket(2), read(2), ...).
#![allow(clippy::missing_safety_doc)]

mod calls;
mod fds;
mod fork;
mod next;
mod policy;
use xrdma_capi as rs;
mod wait;

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};

thread_local! {
    /// How deep the thread is in this library's own work.
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// A mark that the calling thread is inside the library: every socket call it makes
/// passes straight through to the C library until the mark is dropped.
pub(crate) struct Inside(());

impl Inside {
    pub(crate) fn enter() -> Inside {
        let _ = DEPTH.try_with(|d| d.set(d.get() + 1));
        Inside(())
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        let _ = DEPTH.try_with(|d| d.set(d.get() - 1));
    }
}

/// Whether the calling thread is inside the library (or tearing down, when thread-local
/// storage is gone: then nothing of ours is used either).
pub(crate) fn inside() -> bool {
    DEPTH.try_with(|d| d.get() > 0).unwrap_or(true)
}

/// How long the process's exit waits for its connections over xrdma to deliver what they
/// were given (rsocket's own close waits as long).
const EXIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs as the library loads: registers the exit and fork hooks.
extern "C" fn init() {
    // SAFETY: plain registrations of functions that live as long as the process.
    unsafe {
        libc::atexit(at_exit);
        libc::pthread_atfork(
            Some(fork::prepare),
            Some(fork::in_parent),
            Some(fork::in_child),
        );
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn() = init;

/// At exit, the process's connections over xrdma close as the kernel closes a process's
/// sockets, and the exit waits (up to [`EXIT_LIMIT`]) for them to deliver what they were
/// given: once the process is gone, nothing would.
extern "C" fn at_exit() {
    if fds::in_forked_child() {
        // The connections are the parent's, and so is the thread that would close them.
        return;
    }
    let _inside = Inside::enter();
    let _ = catch_unwind(|| {
        if !fork::wait_relays(EXIT_LIMIT) {
            policy::say("exiting while a child still uses a connection relayed for it");
        }
        fds::close_all();
        if !xrdma_rsocket::wait_closing(EXIT_LIMIT) {
            policy::say("exiting before every connection delivered what it was given");
        }
    });
}

/// Sets the calling thread's errno.
pub(crate) fn set_errno(e: i32) {
    // SAFETY: __errno_location returns the calling thread's errno, always valid.
    unsafe { *libc::__errno_location() = e };
}

pub(crate) fn errno() -> i32 {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() }
}

/// Runs the body of an export inside the library: its `Err(errno)` becomes `fail` with
/// errno set, and a panic becomes `fail` with EIO, so that none crosses into C.
pub(crate) fn run<T: Copy>(fail: T, body: impl FnOnce() -> Result<T, i32>) -> T {
    let _inside = Inside::enter();
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            set_errno(e);
            fail
        }
        Err(_) => {
            set_errno(libc::EIO);
            fail
        }
    }
}

/// A C call's result: `Ok` if it did not fail, else the errno it set.
pub(crate) fn sys(r: i32) -> Result<i32, i32> {
    if r < 0 { Err(errno()) } else { Ok(r) }
}
