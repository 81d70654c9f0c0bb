//! Completion channel: the file descriptor that delivers completion events
//! (`ibv_create_comp_channel`, `ibv_get_cq_event`, `ibv_ack_cq_events`).
//!
//! A [`CompletionChannel`] is an eventfd plus a FIFO of the CQ handles that
//! fired. The eventfd is readable exactly while the FIFO is not empty, so an
//! application can wait for events with `poll`/`epoll`/`select` on
//! [`as_raw_fd`](std::os::fd::AsRawFd::as_raw_fd), like on the fd of a
//! libibverbs `struct ibv_comp_channel`.
//!
//! The owner drives it in this order:
//!
//! 1. [`CompletionChannel::new`] (`ibv_create_comp_channel`).
//! 2. [`attach`](CompletionChannel::attach) each CQ created on the channel
//!    (`ibv_create_cq` with `channel != NULL`); keep the returned
//!    [`EventCounts`] in the CQ object.
//! 3. [`signal`](CompletionChannel::signal) when
//!    [`CompletionQueue::push`](crate::verbs::completion::CompletionQueue::push) returns
//!    `Notify::Fire`.
//! 4. [`get_event`](CompletionChannel::get_event) from `ibv_get_cq_event`;
//!    it counts the delivery on the CQ's [`EventCounts`].
//!    [`EventCounts::ack_events`] from `ibv_ack_cq_events`.
//! 5. [`detach`](CompletionChannel::detach) from `ibv_destroy_cq`: refused
//!    while the CQ has unacknowledged events (the owner returns `EBUSY` or
//!    waits with [`EventCounts::wait_all_acked`], as libibverbs blocks).
//!    Queued, not yet delivered events of that CQ are discarded.
//! 6. Drop the channel (`ibv_destroy_comp_channel`) once
//!    [`attached`](CompletionChannel::attached) is 0; dropping closes the fd.
//!
//! # Blocking
//!
//! The fd is created blocking (with `O_CLOEXEC`), like libibverbs': whether
//! [`get_event`](CompletionChannel::get_event) waits is decided by the fd's
//! `O_NONBLOCK` flag, which the application may set with `fcntl` (the
//! non-blocking example of `ibv_get_cq_event(3)`) or the owner with
//! [`set_nonblocking`](CompletionChannel::set_nonblocking). The channel's own
//! reads and writes of the eventfd never block: they happen under the FIFO
//! lock and only when the counter is known to be non-zero.
//!
//! The application must only wait on the fd, never read or write it; doing
//! so cannot corrupt the FIFO but may leave the fd's readability wrong until
//! the next event.
//!
//! # Thread safety
//!
//! [`CompletionChannel`] and [`EventCounts`] are `Send + Sync`; all methods
//! take `&self`. Several threads may block in `get_event` at once; each
//! event goes to exactly one of them.
//!
//! # Example
//!
//! ```
//! use std::os::fd::AsRawFd;
//! use xrdma_verbs::verbs::channel::CompletionChannel;
//!
//! let channel = CompletionChannel::new().unwrap();
//! let counts = channel.attach(0xc0ffee).unwrap();
//! assert!(channel.signal(0xc0ffee).unwrap());
//! assert!(channel.as_raw_fd() >= 0);
//! assert_eq!(channel.get_event().unwrap(), 0xc0ffee);
//! assert_eq!(channel.detach(0xc0ffee), Err(xrdma_verbs::verbs::channel::DetachError::Unacked(1)));
//! counts.ack_events(1).unwrap();
//! channel.detach(0xc0ffee).unwrap();
//! ```

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Per-CQ completion event accounting, as libibverbs keeps in `struct
/// ibv_cq` (`comp_events_completed` against the events reported).
///
/// Every event [`CompletionChannel::get_event`] hands out for a CQ counts as
/// delivered; [`ack_events`](Self::ack_events) counts acknowledgements. A CQ
/// may be destroyed only when [`unacked`](Self::unacked) is 0. The same type
/// can count a CQ's asynchronous events (`IBV_EVENT_CQ_ERR` from
/// `ibv_get_async_event` against `ibv_ack_async_event`).
#[derive(Debug, Default)]
pub struct EventCounts {
    counts: Mutex<Counts>,
    all_acked: Condvar,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    delivered: u64,
    acked: u64,
}

/// [`EventCounts::ack_events`] was asked to acknowledge more events than
/// were delivered and not yet acknowledged; nothing was acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverAck {
    /// Events delivered and not yet acknowledged.
    pub unacked: u64,
}

impl fmt::Display for OverAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "acknowledging more events than the {} unacknowledged",
            self.unacked
        )
    }
}

impl std::error::Error for OverAck {}

impl EventCounts {
    /// No event delivered, none acknowledged.
    pub fn new() -> EventCounts {
        EventCounts::default()
    }

    /// Counts one more event handed to the application.
    pub fn record_delivered(&self) {
        self.counts.lock().delivered += 1;
    }

    /// Acknowledges `nevents` delivered events (`ibv_ack_cq_events`).
    ///
    /// libibverbs does not check the count; acknowledging more than were
    /// delivered would make `ibv_destroy_cq` wait forever. Here it is
    /// refused and nothing changes (the C shim, returning `void`, ignores
    /// the error).
    pub fn ack_events(&self, nevents: u32) -> Result<(), OverAck> {
        let mut c = self.counts.lock();
        let unacked = c.delivered - c.acked;
        if u64::from(nevents) > unacked {
            return Err(OverAck { unacked });
        }
        c.acked += u64::from(nevents);
        if c.acked == c.delivered {
            self.all_acked.notify_all();
        }
        Ok(())
    }

    /// Events delivered so far.
    pub fn delivered(&self) -> u64 {
        self.counts.lock().delivered
    }

    /// Events acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.counts.lock().acked
    }

    /// Events delivered and not yet acknowledged.
    pub fn unacked(&self) -> u64 {
        let c = self.counts.lock();
        c.delivered - c.acked
    }

    /// Waits until every delivered event is acknowledged, or `timeout`
    /// passes. Returns `true` if all are acknowledged.
    ///
    /// Events delivered after this returns are not covered: detaching after
    /// it may still fail, and the owner retries.
    pub fn wait_all_acked(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut c = self.counts.lock();
        while c.acked != c.delivered {
            if self.all_acked.wait_until(&mut c, deadline).timed_out() {
                return c.acked == c.delivered;
            }
        }
        true
    }
}

/// Why [`CompletionChannel::attach`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachError {
    /// A CQ with this handle is already attached.
    AlreadyAttached,
}

impl AttachError {
    /// The errno for the C ABI.
    pub const fn errno(self) -> i32 {
        match self {
            AttachError::AlreadyAttached => libc::EEXIST,
        }
    }
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CQ handle already attached to this channel")
    }
}

impl std::error::Error for AttachError {}

/// Why [`CompletionChannel::detach`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetachError {
    /// No CQ with this handle is attached.
    NotAttached,
    /// The CQ has this many delivered, unacknowledged events.
    Unacked(u64),
}

impl DetachError {
    /// The errno `ibv_destroy_cq` returns for this error.
    pub const fn errno(self) -> i32 {
        match self {
            DetachError::NotAttached => libc::EINVAL,
            DetachError::Unacked(_) => libc::EBUSY,
        }
    }
}

impl fmt::Display for DetachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DetachError::NotAttached => f.write_str("CQ handle not attached to this channel"),
            DetachError::Unacked(n) => write!(f, "CQ has {n} unacknowledged events"),
        }
    }
}

impl std::error::Error for DetachError {}

/// Completion event channel: an eventfd and the FIFO of CQs that fired.
///
/// See the [module documentation](self) for the call order, blocking and
/// thread safety.
#[derive(Debug)]
pub struct CompletionChannel {
    fd: OwnedFd,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Handles of CQs that fired, oldest first. Invariant (under the lock):
    /// non-empty implies the eventfd counter was written since it was last
    /// drained, so the fd is readable.
    pending: VecDeque<u64>,
    /// CQs attached to this channel.
    cqs: HashMap<u64, Arc<EventCounts>>,
}

impl CompletionChannel {
    /// Creates a channel with a fresh eventfd (blocking, close-on-exec).
    pub fn new() -> io::Result<CompletionChannel> {
        // SAFETY: eventfd takes no pointers; any flag combination is
        // memory-safe and errors are reported by a negative return.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a file descriptor eventfd just opened; nothing
        // else owns it, so OwnedFd may close it on drop.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(CompletionChannel {
            fd,
            state: Mutex::new(State::default()),
        })
    }

    /// Registers a CQ `handle` on this channel and returns its event counts.
    ///
    /// Only attached CQs can be signalled. The handle is the owner's name for
    /// the CQ (in the C ABI, the `struct ibv_cq *`).
    pub fn attach(&self, handle: u64) -> Result<Arc<EventCounts>, AttachError> {
        let mut st = self.state.lock();
        if st.cqs.contains_key(&handle) {
            return Err(AttachError::AlreadyAttached);
        }
        let counts = Arc::new(EventCounts::new());
        st.cqs.insert(handle, Arc::clone(&counts));
        // Room for a few queued events per CQ, so signalling rarely grows
        // the FIFO.
        st.pending.reserve(4);
        Ok(counts)
    }

    /// Unregisters CQ `handle` (`ibv_destroy_cq`).
    ///
    /// Refused with [`DetachError::Unacked`] while the CQ has delivered,
    /// unacknowledged events; nothing changes then. On success the CQ's
    /// queued, undelivered events are discarded, as the kernel does when a
    /// CQ is destroyed.
    pub fn detach(&self, handle: u64) -> Result<(), DetachError> {
        let mut st = self.state.lock();
        let unacked = match st.cqs.get(&handle) {
            None => return Err(DetachError::NotAttached),
            Some(counts) => counts.unacked(),
        };
        if unacked != 0 {
            return Err(DetachError::Unacked(unacked));
        }
        st.cqs.remove(&handle);
        let before = st.pending.len();
        st.pending.retain(|&h| h != handle);
        if before != 0 && st.pending.is_empty() {
            self.clear_readable_locked();
        }
        Ok(())
    }

    /// Number of CQs attached. `ibv_destroy_comp_channel` fails with `EBUSY`
    /// unless it is 0.
    pub fn attached(&self) -> usize {
        self.state.lock().cqs.len()
    }

    /// Delivered, unacknowledged events of CQ `handle`; 0 if it is not
    /// attached.
    pub fn unacked(&self, handle: u64) -> u64 {
        self.state
            .lock()
            .cqs
            .get(&handle)
            .map_or(0, |counts| counts.unacked())
    }

    /// Queues one completion event for CQ `handle` and makes the fd
    /// readable.
    ///
    /// Returns `Ok(false)` and queues nothing if `handle` is not attached
    /// (for example a CQ being destroyed). An `Err` means the eventfd write
    /// failed: the event is queued and [`get_event`](Self::get_event) will
    /// return it, but the fd may not show readable until the next signal.
    pub fn signal(&self, handle: u64) -> io::Result<bool> {
        let mut st = self.state.lock();
        if !st.cqs.contains_key(&handle) {
            return Ok(false);
        }
        st.pending.push_back(handle);
        // Written on every signal, not only on empty -> non-empty, so that
        // readability recovers even if someone else read the fd.
        write_eventfd(self.fd.as_fd(), 1)?;
        Ok(true)
    }

    /// Takes the oldest event and returns the handle of the CQ that fired
    /// (`ibv_get_cq_event`), counting it as delivered on that CQ.
    ///
    /// With no event queued it blocks until one is signalled, unless the fd
    /// has `O_NONBLOCK`: then it fails with [`io::ErrorKind::WouldBlock`]
    /// (`EAGAIN`). A signal interrupting the wait makes it fail with
    /// [`io::ErrorKind::Interrupted`] (`EINTR`), as the blocking `read` in
    /// libibverbs does. The fd stops being readable when the last queued
    /// event is taken.
    pub fn get_event(&self) -> io::Result<u64> {
        self.wait_event(None)
    }

    /// [`get_event`](Self::get_event), but while it waits it also watches `backend`:
    /// whenever that is readable, or the timeout `drive` last returned (milliseconds, -1
    /// for none) passes, it calls `drive`, which makes progress and may signal the event
    /// waited for. The waiting thread then turns an arriving packet into its event itself,
    /// instead of sleeping until another thread does.
    pub(crate) fn get_event_driving(
        &self,
        backend: RawFd,
        drive: &mut dyn FnMut() -> i32,
    ) -> io::Result<u64> {
        self.wait_event(Some((backend, drive)))
    }

    fn wait_event(&self, mut driving: Option<(RawFd, &mut dyn FnMut() -> i32)>) -> io::Result<u64> {
        let mut woken = false;
        let mut timeout = match &mut driving {
            Some((_, drive)) => drive(),
            None => -1,
        };
        loop {
            {
                let mut st = self.state.lock();
                if let Some(handle) = st.pending.pop_front() {
                    if st.pending.is_empty() {
                        // The counter was written for this event (the invariant of
                        // `pending`), so the read cannot block: no poll to check first.
                        let _ = read_eventfd(self.fd.as_fd());
                    }
                    if let Some(counts) = st.cqs.get(&handle) {
                        counts.record_delivered();
                    }
                    return Ok(handle);
                }
                if woken {
                    // The fd was readable with nothing queued: another
                    // thread took the event, or someone wrote to the fd.
                    // Clear stale readability so the next wait sleeps.
                    self.clear_readable_locked();
                }
            }
            if self.is_nonblocking()? {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            match &mut driving {
                None => woken = wait_readable(self.fd.as_fd(), -1)?,
                Some((backend, drive)) => {
                    woken = wait_either(self.fd.as_fd(), Some(*backend), timeout)?;
                    timeout = drive();
                }
            }
        }
    }

    /// Number of events queued and not yet taken.
    pub fn pending(&self) -> usize {
        self.state.lock().pending.len()
    }

    /// `true` if the fd has `O_NONBLOCK` (then `get_event` never waits).
    pub fn is_nonblocking(&self) -> io::Result<bool> {
        Ok(get_fl(self.fd.as_fd())? & libc::O_NONBLOCK != 0)
    }

    /// Sets or clears `O_NONBLOCK` on the fd, as
    /// `fcntl(fd, F_SETFL, flags | O_NONBLOCK)` would.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        let fd = self.fd.as_fd();
        let flags = get_fl(fd)?;
        let new = if nonblocking {
            flags | libc::O_NONBLOCK
        } else {
            flags & !libc::O_NONBLOCK
        };
        if new != flags {
            // SAFETY: F_SETFL takes an int argument and no pointers; `fd`
            // is a valid descriptor borrowed from `self.fd`.
            let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, new) };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Resets the eventfd counter to 0 if it is non-zero. Called with the
    /// state lock held and the FIFO empty.
    ///
    /// Errors are ignored: readability is only a hint; at worst a waiter
    /// wakes, finds nothing and clears it again.
    fn clear_readable_locked(&self) {
        let fd = self.fd.as_fd();
        // Check first: on a blocking fd, reading a zero counter would block
        // while holding the lock.
        if matches!(wait_readable(fd, 0), Ok(true)) {
            let _ = read_eventfd(fd);
        }
    }
}

impl AsRawFd for CompletionChannel {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for CompletionChannel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `fcntl(fd, F_GETFL)`.
fn get_fl(fd: BorrowedFd<'_>) -> io::Result<i32> {
    // SAFETY: F_GETFL takes no argument and no pointers; `fd` is a valid
    // descriptor for the duration of the borrow.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(flags)
    }
}

/// Polls `fd` for `POLLIN` for up to `timeout_ms` (-1: forever). Returns
/// whether it is readable; `EINTR` is returned as an error.
fn wait_readable(fd: BorrowedFd<'_>, timeout_ms: i32) -> io::Result<bool> {
    wait_either(fd, None, timeout_ms)
}

/// [`wait_readable`], waking as well when `other` (which the caller keeps open) is
/// readable.
fn wait_either(fd: BorrowedFd<'_>, other: Option<RawFd>, timeout_ms: i32) -> io::Result<bool> {
    let mut pfd = [fd.as_raw_fd(), other.unwrap_or(-1)].map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    let count = if other.is_some() { 2 } else { 1 };
    // SAFETY: `pfd` holds two valid, exclusively borrowed pollfds and `count` is at most
    // 2, so poll writes only their `revents`; `fd` is borrowed for the call, and the
    // caller keeps `other` open.
    let r = unsafe { libc::poll(pfd.as_mut_ptr(), count, timeout_ms) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pfd[0].revents & libc::POLLIN != 0)
}

/// Adds `value` to the eventfd counter.
fn write_eventfd(fd: BorrowedFd<'_>, value: u64) -> io::Result<()> {
    let buf = value.to_ne_bytes();
    // SAFETY: `buf` is a live 8-byte buffer and we pass its exact length;
    // write only reads from it. `fd` stays open for the call.
    let r = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    if r == buf.len() as isize {
        Ok(())
    } else if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Err(io::ErrorKind::WriteZero.into())
    }
}

/// Reads (and so resets) the eventfd counter.
fn read_eventfd(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut buf = [0u8; 8];
    // SAFETY: `buf` is a live, exclusively borrowed 8-byte buffer and we
    // pass its exact length, so read writes only inside it. `fd` stays open
    // for the call.
    let r = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if r == buf.len() as isize {
        Ok(u64::from_ne_bytes(buf))
    } else if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Err(io::ErrorKind::UnexpectedEof.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread;

    fn readable(ch: &CompletionChannel) -> bool {
        wait_readable(ch.as_fd(), 0).unwrap()
    }

    fn set_o_nonblock_with_fcntl(ch: &CompletionChannel) {
        let fd = ch.as_raw_fd();
        // SAFETY: F_GETFL/F_SETFL take no pointers; `fd` belongs to `ch`,
        // which outlives the calls.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            assert!(flags >= 0);
            assert_eq!(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK), 0);
        }
    }

    #[test]
    fn fd_is_cloexec_and_blocking_by_default() {
        let ch = CompletionChannel::new().unwrap();
        // SAFETY: F_GETFD takes no argument; the fd belongs to `ch`.
        let fdflags = unsafe { libc::fcntl(ch.as_raw_fd(), libc::F_GETFD) };
        assert!(fdflags & libc::FD_CLOEXEC != 0);
        assert!(!ch.is_nonblocking().unwrap());
        ch.set_nonblocking(true).unwrap();
        assert!(ch.is_nonblocking().unwrap());
        ch.set_nonblocking(false).unwrap();
        assert!(!ch.is_nonblocking().unwrap());
    }

    #[test]
    fn readable_only_while_events_pending() {
        let ch = CompletionChannel::new().unwrap();
        let _counts = ch.attach(42).unwrap();
        assert!(!readable(&ch));
        assert!(ch.signal(42).unwrap());
        assert!(readable(&ch));
        assert_eq!(ch.get_event().unwrap(), 42);
        assert!(!readable(&ch));
        assert_eq!(ch.pending(), 0);
    }

    #[test]
    fn events_queue_in_order() {
        let ch = CompletionChannel::new().unwrap();
        for h in [1, 2, 3] {
            ch.attach(h).unwrap();
        }
        for h in [2, 1, 3, 2] {
            assert!(ch.signal(h).unwrap());
        }
        assert_eq!(ch.pending(), 4);
        for expected in [2, 1, 3] {
            assert_eq!(ch.get_event().unwrap(), expected);
            // Still readable while something is left.
            assert!(readable(&ch));
        }
        assert_eq!(ch.get_event().unwrap(), 2);
        assert!(!readable(&ch));
    }

    #[test]
    fn unattached_handle_is_not_queued() {
        let ch = CompletionChannel::new().unwrap();
        assert!(!ch.signal(7).unwrap());
        assert!(!readable(&ch));
        assert_eq!(ch.pending(), 0);
    }

    /// Runs `get_event` on another thread; `None` if it has not returned
    /// within `timeout` (so a test cannot hang on a wrongly blocking call).
    fn get_event_within(ch: &Arc<CompletionChannel>, timeout: Duration) -> Option<io::Result<u64>> {
        let (tx, rx) = mpsc::channel();
        let ch = Arc::clone(ch);
        thread::spawn(move || {
            let _ = tx.send(ch.get_event());
        });
        rx.recv_timeout(timeout).ok()
    }

    #[test]
    fn nonblocking_fd_gives_eagain_when_empty() {
        let ch = Arc::new(CompletionChannel::new().unwrap());
        ch.attach(5).unwrap();
        set_o_nonblock_with_fcntl(&ch);
        let err = get_event_within(&ch, Duration::from_secs(5))
            .expect("get_event blocked on an O_NONBLOCK fd")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(err.raw_os_error().unwrap_or(libc::EAGAIN), libc::EAGAIN);
        ch.signal(5).unwrap();
        assert_eq!(ch.get_event().unwrap(), 5);
        let err = get_event_within(&ch, Duration::from_secs(5))
            .expect("get_event blocked on an O_NONBLOCK fd")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn blocking_get_event_wakes_on_signal_from_another_thread() {
        let ch = Arc::new(CompletionChannel::new().unwrap());
        ch.attach(0xabc).unwrap();
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let ch = Arc::clone(&ch);
            thread::spawn(move || {
                let _ = tx.send(ch.get_event().map_err(|e| e.kind()));
            })
        };
        // The waiter must really be blocked: nothing arrives before signal.
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        ch.signal(0xabc).unwrap();
        let got = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("get_event did not wake up within 5 s");
        assert_eq!(got, Ok(0xabc));
        waiter.join().unwrap();
        assert!(!readable(&ch));
    }

    #[test]
    fn two_blocked_waiters_each_get_one_event() {
        let ch = Arc::new(CompletionChannel::new().unwrap());
        ch.attach(1).unwrap();
        ch.attach(2).unwrap();
        let (tx, rx) = mpsc::channel();
        for _ in 0..2 {
            let ch = Arc::clone(&ch);
            let tx = tx.clone();
            thread::spawn(move || {
                let _ = tx.send(ch.get_event().map_err(|e| e.kind()));
            });
        }
        thread::sleep(Duration::from_millis(20));
        ch.signal(1).unwrap();
        let first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        // Only one event: the other waiter stays blocked.
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        ch.signal(2).unwrap();
        let second = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let mut got = [first.unwrap(), second.unwrap()];
        got.sort();
        assert_eq!(got, [1, 2]);
    }

    #[test]
    fn delivered_and_acked_accounting() {
        let ch = CompletionChannel::new().unwrap();
        let counts = ch.attach(9).unwrap();
        let other = ch.attach(10).unwrap();
        for _ in 0..3 {
            ch.signal(9).unwrap();
        }
        ch.signal(10).unwrap();
        // Queued but not delivered events are not "unacknowledged".
        assert_eq!(ch.unacked(9), 0);
        for _ in 0..3 {
            assert_eq!(ch.get_event().unwrap(), 9);
        }
        assert_eq!(counts.delivered(), 3);
        assert_eq!(ch.unacked(9), 3);
        assert_eq!(other.delivered(), 0);

        assert_eq!(ch.detach(9), Err(DetachError::Unacked(3)));
        assert_eq!(DetachError::Unacked(3).errno(), libc::EBUSY);
        assert_eq!(counts.ack_events(4), Err(OverAck { unacked: 3 }));
        assert_eq!(counts.acked(), 0);
        counts.ack_events(2).unwrap();
        assert_eq!(ch.detach(9), Err(DetachError::Unacked(1)));
        assert!(!counts.wait_all_acked(Duration::from_millis(10)));
        counts.ack_events(1).unwrap();
        assert!(counts.wait_all_acked(Duration::from_millis(10)));
        assert_eq!(ch.detach(9), Ok(()));
        assert_eq!(ch.detach(9), Err(DetachError::NotAttached));
        assert_eq!(ch.unacked(9), 0);
        assert_eq!(ch.attached(), 1);

        // The event for CQ 10 is still there and still readable.
        assert!(readable(&ch));
        assert_eq!(ch.get_event().unwrap(), 10);
        assert_eq!(other.unacked(), 1);
    }

    #[test]
    fn detach_discards_queued_events_of_that_cq() {
        let ch = CompletionChannel::new().unwrap();
        ch.attach(1).unwrap();
        ch.attach(2).unwrap();
        ch.signal(1).unwrap();
        ch.signal(2).unwrap();
        ch.signal(1).unwrap();
        ch.detach(1).unwrap();
        assert_eq!(ch.pending(), 1);
        assert!(readable(&ch));
        assert_eq!(ch.get_event().unwrap(), 2);
        assert!(!readable(&ch));

        ch.signal(2).unwrap();
        ch.detach(2).unwrap_err(); // one delivered, unacked
        ch.attach(3).unwrap();
        ch.signal(3).unwrap();
        ch.detach(3).unwrap();
        // Only CQ 2's event is left.
        assert!(readable(&ch));
        assert_eq!(ch.get_event().unwrap(), 2);
        assert!(!readable(&ch));
        // Signalling a detached CQ queues nothing.
        assert!(!ch.signal(1).unwrap());
        assert!(!readable(&ch));
    }

    #[test]
    fn wait_all_acked_wakes_on_ack_from_another_thread() {
        let counts = Arc::new(EventCounts::new());
        counts.record_delivered();
        let acker = {
            let counts = Arc::clone(&counts);
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(20));
                counts.ack_events(1).unwrap();
            })
        };
        assert!(counts.wait_all_acked(Duration::from_secs(5)));
        acker.join().unwrap();
    }

    #[test]
    fn stale_readability_is_cleared() {
        // Someone writes to the fd behind our back: a blocking get_event
        // must not spin or return a bogus event; it clears the fd and keeps
        // waiting for a real signal.
        let ch = Arc::new(CompletionChannel::new().unwrap());
        ch.attach(77).unwrap();
        write_eventfd(ch.as_fd(), 1).unwrap();
        let (tx, rx) = mpsc::channel();
        {
            let ch = Arc::clone(&ch);
            thread::spawn(move || {
                let _ = tx.send(ch.get_event().map_err(|e| e.kind()));
            });
        }
        assert!(rx.recv_timeout(Duration::from_millis(50)).is_err());
        assert!(!readable(&ch));
        ch.signal(77).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), Ok(77));
    }

    #[test]
    fn channel_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<CompletionChannel>();
        assert_send_sync::<EventCounts>();
    }
}
