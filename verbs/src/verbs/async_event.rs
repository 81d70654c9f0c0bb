//! Asynchronous events (`ibv_get_async_event`): what happens to a CQ or SRQ outside any
//! work request, queued on the context and signalled through a real file descriptor.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use parking_lot::Mutex;

/// An event as queued: which object, by handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pending {
    /// A CQ lost a completion because it was full (`IBV_EVENT_CQ_ERR`).
    CqErr(u64),
    /// An SRQ fell below its armed limit (`IBV_EVENT_SRQ_LIMIT_REACHED`).
    SrqLimit(u64),
}

/// The context's event queue. The descriptor is a semaphore eventfd: readable while events
/// wait, one read per event; blocking unless the application sets O_NONBLOCK on it, as
/// with libibverbs' `async_fd`.
pub(crate) struct AsyncQueue {
    fd: OwnedFd,
    queue: Mutex<VecDeque<Pending>>,
}

impl AsyncQueue {
    pub(crate) fn new() -> io::Result<AsyncQueue> {
        // SAFETY: eventfd takes no pointers.
        let fd = unsafe { libc::eventfd(0, libc::EFD_SEMAPHORE | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is new and owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(AsyncQueue {
            fd,
            queue: Mutex::new(VecDeque::new()),
        })
    }

    /// Queues an event and makes the descriptor readable.
    pub(crate) fn raise(&self, event: Pending) {
        self.queue.lock().push_back(event);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd; it cannot overflow in
        // practice (2^64 - 2 unread events).
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Takes the oldest event, waiting for one unless the descriptor is non-blocking.
    pub(crate) fn take(&self) -> io::Result<Pending> {
        let mut v = 0u64;
        loop {
            // SAFETY: reads 8 bytes into a live u64 from our eventfd.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
            if n == 8 {
                break;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
        // Every successful read matches one queued event.
        self.queue
            .lock()
            .pop_front()
            .ok_or_else(|| io::Error::other("async event queue out of step"))
    }

    pub(crate) fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
