//! The calls that wait: poll, ppoll, select, pselect and epoll.
//!
//! A connection over xrdma is waited on as `rpoll` and `repoll_wait` wait on an rsocket:
//! a brief spin on the socket itself, then a sleep on its own events, taking what arrives
//! without waiting for xrdma's service thread. Calls with none of our connections in them
//! go to the C library unchanged.

use std::ffi::c_int;
use std::sync::atomic::{AtomicU64, Ordering};

use libc::{epoll_event, fd_set, nfds_t, pollfd, sigset_t, timespec, timeval};

use crate::calls::ours;
use crate::fds::Sock;
use crate::{inside, next, rs, run, sys};

/// The rsocket behind the program's `fd`, for a connection over xrdma.
fn rsocket_of(fd: c_int) -> Option<c_int> {
    match ours(fd)?.as_ref() {
        Sock::Stream { rs } => Some(*rs),
        _ => None,
    }
}

/// `fds` with each connection over xrdma replaced by its rsocket, if any is one. One look
/// at the table per descriptor: this is every poll's cost.
fn translated(fds: &[pollfd]) -> Option<Vec<pollfd>> {
    let mut mapped: Option<Vec<pollfd>> = None;
    for (k, p) in fds.iter().enumerate() {
        if let Some(rs) = rsocket_of(p.fd) {
            mapped.get_or_insert_with(|| fds.to_vec())[k].fd = rs;
        }
    }
    mapped
}

/// `rpoll` over the program's `fds`, whose connections over xrdma are `mapped`'s rsockets.
fn rpoll_mapped(fds: &mut [pollfd], mut mapped: Vec<pollfd>, timeout: c_int) -> c_int {
    run(-1, || {
        // SAFETY: a live array of `mapped.len()` pollfds.
        let n = sys(unsafe { rs::rpoll(mapped.as_mut_ptr(), mapped.len() as nfds_t, timeout) })?;
        for (p, m) in fds.iter_mut().zip(&mapped) {
            p.revents = m.revents;
        }
        Ok(n)
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn poll(fds: *mut pollfd, nfds: nfds_t, timeout: c_int) -> c_int {
    if inside() || fds.is_null() || nfds == 0 || nfds > 1 << 20 {
        // SAFETY: poll(2)'s contract.
        return unsafe { next::poll(fds, nfds, timeout) };
    }
    // SAFETY: the caller's `nfds` pollfds.
    let slice = unsafe { std::slice::from_raw_parts_mut(fds, nfds as usize) };
    match translated(slice) {
        Some(mapped) => rpoll_mapped(slice, mapped, timeout),
        // SAFETY: as above.
        None => unsafe { next::poll(fds, nfds, timeout) },
    }
}

/// The fortified `poll` (`_FORTIFY_SOURCE`): `fdslen` is the array's size in pollfds.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __poll_chk(
    fds: *mut pollfd,
    nfds: nfds_t,
    timeout: c_int,
    fdslen: usize,
) -> c_int {
    if (fdslen / size_of::<pollfd>()) < nfds as usize {
        // As glibc's: a buffer overflow ends the process.
        // SAFETY: plain call.
        unsafe { libc::abort() };
    }
    // SAFETY: poll(2)'s contract.
    unsafe { poll(fds, nfds, timeout) }
}

/// Milliseconds of a timespec, rounded up (-1 for none), as poll takes them.
fn ms_of(ts: Option<&timespec>) -> c_int {
    match ts {
        None => -1,
        Some(t) => {
            let ms = t
                .tv_sec
                .saturating_mul(1000)
                .saturating_add((t.tv_nsec + 999_999) / 1_000_000);
            ms.clamp(0, i64::from(c_int::MAX)) as c_int
        }
    }
}

/// Runs `f` with the thread's signal mask set to `mask` (if given), as ppoll and pselect
/// do, restoring it after.
fn with_mask<T>(mask: *const sigset_t, f: impl FnOnce() -> T) -> T {
    if mask.is_null() {
        return f();
    }
    // SAFETY: sigset_t is plain data.
    let mut old: sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: the caller's mask; a live out-set.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, mask, &mut old) };
    let r = f();
    // SAFETY: the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    r
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ppoll(
    fds: *mut pollfd,
    nfds: nfds_t,
    timeout: *const timespec,
    sigmask: *const sigset_t,
) -> c_int {
    if inside() || fds.is_null() || nfds == 0 || nfds > 1 << 20 {
        // SAFETY: ppoll(2)'s contract.
        return unsafe { next::ppoll(fds, nfds, timeout, sigmask) };
    }
    // SAFETY: the caller's `nfds` pollfds.
    let slice = unsafe { std::slice::from_raw_parts_mut(fds, nfds as usize) };
    match translated(slice) {
        // SAFETY: the caller's timeout, if any.
        Some(mapped) => with_mask(sigmask, || {
            rpoll_mapped(slice, mapped, ms_of(unsafe { timeout.as_ref() }))
        }),
        // SAFETY: as above.
        None => unsafe { next::ppoll(fds, nfds, timeout, sigmask) },
    }
}

/// The descriptors below `nfds` in any of the three sets, as pollfds, and the same with
/// each connection over xrdma replaced by its rsocket ([`translated`]); `None` if none of
/// them is one.
///
/// # Safety
///
/// Each set is NULL or a live fd_set.
unsafe fn select_fds(
    nfds: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
) -> Option<(Vec<pollfd>, Vec<pollfd>)> {
    let nfds = nfds.clamp(0, libc::FD_SETSIZE as c_int);
    // SAFETY: per the contract.
    let has = |set: *mut fd_set, fd| !set.is_null() && unsafe { libc::FD_ISSET(fd, set) };
    let mut fds = Vec::new();
    for fd in 0..nfds {
        let mut events = 0;
        if has(r, fd) {
            events |= libc::POLLIN;
        }
        if has(w, fd) {
            events |= libc::POLLOUT;
        }
        if has(e, fd) {
            events |= libc::POLLPRI;
        }
        if events != 0 {
            fds.push(pollfd {
                fd,
                events,
                revents: 0,
            });
        }
    }
    let mapped = translated(&fds)?;
    Some((fds, mapped))
}

/// Waits on `fds` (from [`select_fds`], with `mapped`) and fills the three sets as select
/// does; the number of bits set.
///
/// # Safety
///
/// As [`select_fds`].
unsafe fn select_wait(
    mut fds: Vec<pollfd>,
    mapped: Vec<pollfd>,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    timeout: c_int,
) -> c_int {
    let n = rpoll_mapped(&mut fds, mapped, timeout);
    if n < 0 {
        return n;
    }
    for set in [r, w, e] {
        if !set.is_null() {
            // SAFETY: per the contract.
            unsafe { libc::FD_ZERO(set) };
        }
    }
    let mut count = 0;
    let mut mark = |set: *mut fd_set, fd, on: bool| {
        if on && !set.is_null() {
            // SAFETY: per the contract.
            unsafe { libc::FD_SET(fd, set) };
            count += 1;
        }
    };
    for p in &fds {
        let failed = p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0;
        mark(
            r,
            p.fd,
            p.events & libc::POLLIN != 0 && (p.revents & libc::POLLIN != 0 || failed),
        );
        mark(
            w,
            p.fd,
            p.events & libc::POLLOUT != 0 && (p.revents & libc::POLLOUT != 0 || failed),
        );
        mark(
            e,
            p.fd,
            p.events & libc::POLLPRI != 0 && p.revents & libc::POLLPRI != 0,
        );
    }
    count
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn select(
    nfds: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    timeout: *mut timeval,
) -> c_int {
    // SAFETY: the caller's timeout, if any.
    let ms = unsafe { timeout.as_ref() }.map(|tv| timespec {
        tv_sec: tv.tv_sec,
        tv_nsec: tv.tv_usec * 1000,
    });
    // SAFETY: select(2)'s contract.
    unsafe {
        select_or(nfds, r, w, e, ms_of(ms.as_ref()), std::ptr::null(), || {
            next::select(nfds, r, w, e, timeout)
        })
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn pselect(
    nfds: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    timeout: *const timespec,
    sigmask: *const sigset_t,
) -> c_int {
    // SAFETY: pselect(2)'s contract.
    unsafe {
        select_or(nfds, r, w, e, ms_of(timeout.as_ref()), sigmask, || {
            next::pselect(nfds, r, w, e, timeout, sigmask)
        })
    }
}

/// select and pselect: over `rpoll` (with `sigmask`, if any, in force) if a connection
/// over xrdma is among the sets, else the C library's call, `kernel`.
///
/// # Safety
///
/// As [`select_fds`].
unsafe fn select_or(
    nfds: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    ms: c_int,
    sigmask: *const sigset_t,
    kernel: impl FnOnce() -> c_int,
) -> c_int {
    // SAFETY: per the contract.
    let fds = if inside() {
        None
    } else {
        unsafe { select_fds(nfds, r, w, e) }
    };
    match fds {
        // SAFETY: as above.
        Some((fds, mapped)) => {
            with_mask(sigmask, || unsafe { select_wait(fds, mapped, r, w, e, ms) })
        }
        None => kernel(),
    }
}

/// Epoll sets that have held a connection over xrdma, by number: `repoll_wait` waits on
/// them, and closing one tells libxrdma's set table.
const SET_BITS: usize = 1 << 16;
static SETS: [AtomicU64; SET_BITS / 64] = [const { AtomicU64::new(0) }; SET_BITS / 64];

fn is_set(epfd: c_int) -> bool {
    let i = epfd as usize;
    epfd >= 0 && i < SET_BITS && SETS[i / 64].load(Ordering::Acquire) & (1 << (i % 64)) != 0
}

/// The epoll sets that held a connection over xrdma, numbered from `first` to `last`,
/// taken out of the record.
pub(crate) fn sets_in(first: std::ffi::c_uint, last: std::ffi::c_uint) -> Vec<c_int> {
    let last = (last as usize).min(SET_BITS - 1);
    let mut sets = Vec::new();
    for i in first as usize..=last {
        let bit = 1u64 << (i % 64);
        if SETS[i / 64].fetch_and(!bit, Ordering::AcqRel) & bit != 0 {
            sets.push(i as c_int);
        }
    }
    sets
}

/// Tells libxrdma's set table that `sets`, closed by the kernel, are gone.
pub(crate) fn forget_closed_sets(sets: &[c_int]) {
    for &set in sets {
        rs::forget_set(set);
    }
}

/// If `fd` is an epoll set that held a connection over xrdma, closes it (telling
/// libxrdma's set table) and says so.
pub(crate) fn forget_set(fd: c_int) -> bool {
    if !is_set(fd) {
        return false;
    }
    let i = fd as usize;
    SETS[i / 64].fetch_and(!(1 << (i % 64)), Ordering::AcqRel);
    run(-1, || sys(rs::rclose(fd))) == 0
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_ctl(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    event: *mut epoll_event,
) -> c_int {
    match ours(fd).as_deref() {
        // SAFETY: epoll_ctl(2)'s contract.
        Some(Sock::Stream { rs }) => run(-1, || unsafe { stream_ctl(epfd, op, *rs, event) }),
        Some(Sock::Fresh { fresh, .. }) => {
            // SAFETY: as above.
            let r = unsafe { next::epoll_ctl(epfd, op, fd, event) };
            if r == 0 {
                // SAFETY: as above: a non-NULL event is the caller's.
                let ev = unsafe { event.as_ref() }.map(|e| (e.events, e.u64));
                fresh.lock().epoll(epfd, op, ev);
            }
            r
        }
        // SAFETY: as above.
        _ => unsafe { next::epoll_ctl(epfd, op, fd, event) },
    }
}

/// `epoll_ctl` of the connection over xrdma whose rsocket is `rs`: its descriptor (the same
/// file as the program's number) goes in the set, and the set is one `epoll_wait` takes
/// through `repoll_wait`.
///
/// # Safety
///
/// epoll_ctl(2)'s contract for `event`.
unsafe fn stream_ctl(
    epfd: c_int,
    op: c_int,
    rs: c_int,
    event: *mut epoll_event,
) -> Result<c_int, i32> {
    let i = epfd as usize;
    if epfd >= 0 && i < SET_BITS {
        SETS[i / 64].fetch_or(1 << (i % 64), Ordering::AcqRel);
    }
    // SAFETY: per the contract.
    sys(unsafe { rs::repoll_ctl(epfd, op, rs, event) })
}

/// Puts the program's socket back in the epoll sets it was in as a kernel socket, now that
/// its number is a connection over xrdma (`rs`) or a listener (`rs` is `None`): the kernel
/// dropped it from them as the number changed files.
pub(crate) fn register_again(fd: c_int, rs: Option<c_int>, sets: &[(c_int, u32, u64)]) {
    for &(epfd, events, data) in sets {
        let mut ev = epoll_event { events, u64: data };
        // SAFETY: a live event; the sets are the program's.
        let _ = unsafe {
            match rs {
                Some(rs) => stream_ctl(epfd, libc::EPOLL_CTL_ADD, rs, &mut ev),
                None => sys(next::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd, &mut ev)),
            }
        };
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_wait(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: c_int,
) -> c_int {
    if inside() || !is_set(epfd) {
        // SAFETY: epoll_wait(2)'s contract.
        return unsafe { next::epoll_wait(epfd, events, max, timeout) };
    }
    // SAFETY: as above.
    run(-1, || {
        sys(unsafe { rs::repoll_wait(epfd, events, max, timeout) })
    })
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_pwait(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: c_int,
    sigmask: *const sigset_t,
) -> c_int {
    if inside() || !is_set(epfd) {
        // SAFETY: epoll_pwait(2)'s contract.
        return unsafe { next::epoll_pwait(epfd, events, max, timeout, sigmask) };
    }
    // SAFETY: as above.
    with_mask(sigmask, || {
        run(-1, || {
            sys(unsafe { rs::repoll_wait(epfd, events, max, timeout) })
        })
    })
}
