//! `rpoll`, `rselect` and `repoll_*`: waiting on rsockets and ordinary descriptors
//! together.
//!
//! An rsocket's number is a kernel descriptor that polls as the socket is (see
//! [`table`](super::table)), kept up to date by xrdma's service thread while no call is
//! in the socket. So the kernel's poll, select and epoll can do the waiting; `rpoll` first
//! spins, for rsocket's polling time, on the sockets themselves (no system call for an
//! rsocket), as rsocket's does, then sleeps in poll(2).

use std::collections::BTreeMap;
use std::ffi::c_int;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use xrdma_rsocket::{Config, Ready, Waiter};

use super::table::{self, Kind, Live, Look, Socket};
use super::{dgram, guard_int, last_errno, sys};

/// The events an rsocket shows now, looked at for `look`.
fn revents(sock: &Socket, events: i16, look: Look) -> i16 {
    match sock.live() {
        Some(live) => events_of(live.ready(look), events),
        // As Linux shows a TCP socket that is neither connected nor listening, and an
        // unbound UDP socket.
        None if sock.kind == Kind::Stream => {
            (libc::POLLOUT | libc::POLLWRNORM | libc::POLLHUP) & (events | libc::POLLHUP)
        }
        None => (libc::POLLOUT | libc::POLLWRNORM) & events,
    }
}

/// The events of `events` (and the errors, always reported) that `r` shows.
fn events_of(r: Ready, events: i16) -> i16 {
    let mut ev = 0;
    if r.readable {
        ev |= libc::POLLIN | libc::POLLRDNORM;
    }
    if r.writable {
        ev |= libc::POLLOUT | libc::POLLWRNORM;
    }
    ev & (events | libc::POLLERR | libc::POLLHUP)
}

/// An ordinary descriptor's events now, without waiting.
fn poll_now(p: &libc::pollfd) -> Result<i16, i32> {
    let mut one = *p;
    // SAFETY: one live pollfd.
    if unsafe { libc::poll(&mut one, 1, 0) } < 0 {
        return Err(last_errno());
    }
    Ok(one.revents)
}

/// One pass over `fds`: rsockets asked directly, other descriptors polled without waiting.
/// The number with events.
fn check(
    fds: &mut [libc::pollfd],
    socks: &[Option<Arc<Socket>>],
    look: Look,
) -> Result<c_int, i32> {
    let mut n = 0;
    for (p, sock) in fds.iter_mut().zip(socks) {
        p.revents = match sock {
            Some(sock) => revents(sock, p.events, look),
            None if p.fd < 0 => 0,
            None => poll_now(p)?,
        };
        n += c_int::from(p.revents != 0);
    }
    Ok(n)
}

/// `rpoll(3)`: `poll(2)` over rsockets and ordinary descriptors.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rpoll(
    fds: *mut libc::pollfd,
    nfds: libc::nfds_t,
    timeout: c_int,
) -> c_int {
    guard_int(|| {
        if nfds == 0 || fds.is_null() {
            if nfds != 0 {
                return Err(libc::EFAULT);
            }
            // SAFETY: no descriptors: poll only sleeps.
            return sys(unsafe { libc::poll(fds, 0, timeout) });
        }
        if nfds > (1 << 20) {
            return Err(libc::EINVAL);
        }
        // SAFETY: `nfds` pollfds, per poll(2)'s contract.
        let fds = unsafe { std::slice::from_raw_parts_mut(fds, nfds as usize) };
        poll_fds(fds, timeout)
    })
}

/// [`rpoll`] over a checked slice: spins on the rsockets for rsocket's polling time, then
/// sleeps on every descriptor and the rsockets' own events, taking what arrives itself
/// ([`Waiter`]), until something is ready or the timeout passes.
fn poll_fds(fds: &mut [libc::pollfd], timeout: c_int) -> Result<c_int, i32> {
    let socks: Vec<Option<Arc<Socket>>> = fds.iter().map(|p| table::lookup(p.fd)).collect();
    if socks.iter().all(Option::is_none) {
        // SAFETY: the caller's pollfds.
        return sys(unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) });
    }
    let deadline = (timeout >= 0).then(|| Instant::now() + Duration::from_millis(timeout as u64));
    let polling = Config::default().polling_time;
    loop {
        let spin_from = Instant::now();
        loop {
            let n = check(fds, &socks, Look::Spin)?;
            if n > 0 || timeout == 0 {
                return check(fds, &socks, Look::Return);
            }
            if spin_from.elapsed() >= polling {
                break;
            }
        }
        let mut waiter = Waiter::new();
        let n = check_adding(fds, &socks, &mut waiter)?;
        if n > 0 {
            return Ok(n);
        }
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            return Ok(0);
        }
        let n = waiter.wait(fds, left).map_err(|e| crate::io_errno(&e))?;
        drop(waiter);
        // What woke us may have been a socket's event, or one of the descriptors: look at
        // them all again, as the spin does.
        if n > 0 || deadline.is_some_and(|d| Instant::now() >= d) {
            return check(fds, &socks, Look::Return);
        }
    }
}

/// The pass before sleeping: every rsocket is added to `waiter` (its events armed), and
/// the other descriptors polled without waiting. The number with events.
fn check_adding(
    fds: &mut [libc::pollfd],
    socks: &[Option<Arc<Socket>>],
    waiter: &mut Waiter,
) -> Result<c_int, i32> {
    let mut n = 0;
    for (p, sock) in fds.iter_mut().zip(socks) {
        let added = sock.as_ref().and_then(|s| s.live()?.wait_in(waiter));
        p.revents = match (added, sock) {
            (Some(ready), _) => events_of(ready, p.events),
            (None, Some(sock)) => revents(sock, p.events, Look::Sleep),
            (None, None) if p.fd < 0 => 0,
            (None, None) => poll_now(p)?,
        };
        n += c_int::from(p.revents != 0);
    }
    Ok(n)
}

/// `rselect(3)`: `select(2)` over rsockets and ordinary descriptors, through [`rpoll`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn rselect(
    nfds: c_int,
    readfds: *mut libc::fd_set,
    writefds: *mut libc::fd_set,
    exceptfds: *mut libc::fd_set,
    timeout: *mut libc::timeval,
) -> c_int {
    guard_int(|| {
        if nfds < 0 || nfds > libc::FD_SETSIZE as c_int {
            return Err(libc::EINVAL);
        }
        // SAFETY: the caller's sets, each NULL or a live fd_set (select(2)'s contract).
        let is_set =
            |set: *mut libc::fd_set, fd| !set.is_null() && unsafe { libc::FD_ISSET(fd, set) };
        let mut fds = Vec::new();
        for fd in 0..nfds {
            let mut events = 0;
            if is_set(readfds, fd) {
                events |= libc::POLLIN;
            }
            if is_set(writefds, fd) {
                events |= libc::POLLOUT;
            }
            if events != 0 || is_set(exceptfds, fd) {
                fds.push(libc::pollfd {
                    fd,
                    events,
                    revents: 0,
                });
            }
        }
        let ms = if timeout.is_null() {
            -1
        } else {
            // SAFETY: a live timeval, per the contract.
            let tv = unsafe { *timeout };
            if tv.tv_sec < 0 || tv.tv_usec < 0 {
                return Err(libc::EINVAL);
            }
            // Rounded up, so that a short timeout still waits.
            let ms = tv
                .tv_sec
                .saturating_mul(1000)
                .saturating_add((tv.tv_usec + 999) / 1000);
            ms.min(c_int::MAX as libc::time_t) as c_int
        };
        let n = if fds.is_empty() {
            // SAFETY: no descriptors: poll only sleeps.
            sys(unsafe { libc::poll(std::ptr::null_mut(), 0, ms) })?
        } else {
            poll_fds(&mut fds, ms)?
        };
        for set in [readfds, writefds, exceptfds] {
            if !set.is_null() {
                // SAFETY: a live fd_set, per the contract.
                unsafe { libc::FD_ZERO(set) };
            }
        }
        if n == 0 {
            return Ok(0);
        }
        let mut count = 0;
        for p in &fds {
            let mut mark = |set: *mut libc::fd_set, hit: bool| {
                if hit && !set.is_null() {
                    // SAFETY: a live fd_set, and `p.fd < nfds <= FD_SETSIZE`.
                    unsafe { libc::FD_SET(p.fd, set) };
                    count += 1;
                }
            };
            mark(
                readfds,
                p.events & libc::POLLIN != 0
                    && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0,
            );
            mark(
                writefds,
                p.events & libc::POLLOUT != 0 && p.revents & (libc::POLLOUT | libc::POLLERR) != 0,
            );
            mark(exceptfds, p.revents & libc::POLLPRI != 0);
        }
        Ok(count)
    })
}

/// The rsockets of each repoll set, by its descriptor, so that `repoll_wait` can take
/// their events itself (as `rpoll` does) rather than wait for the service thread to bring
/// their descriptors up to date. Weak: a set does not keep a closed socket.
static SETS: Mutex<BTreeMap<c_int, BTreeMap<c_int, Weak<Socket>>>> = Mutex::new(BTreeMap::new());

/// `repoll_create(3)`: an epoll instance (`flags`: `EPOLL_CLOEXEC`) that takes rsockets
/// and ordinary descriptors; `rclose` closes it.
#[unsafe(no_mangle)]
pub extern "C" fn repoll_create(flags: c_int) -> c_int {
    guard_int(|| {
        // SAFETY: epoll_create1 takes no pointers.
        let epfd = sys(unsafe { libc::epoll_create1(flags) })?;
        // A number reused since an earlier set was closed with close(2) starts empty.
        SETS.lock().insert(epfd, BTreeMap::new());
        Ok(epfd)
    })
}

/// Forgets the repoll set `fd`, which something else closed (the preload library, for a
/// program's `close_range`); true if it was one.
pub fn forget_set(fd: c_int) -> bool {
    SETS.lock().remove(&fd).is_some()
}

/// `rclose` of a repoll set: true if `fd` is one (and is closed now).
pub(crate) fn close_set(fd: c_int) -> bool {
    if SETS.lock().remove(&fd).is_none() {
        return false;
    }
    // SAFETY: the set's descriptor, ours to close.
    unsafe { libc::close(fd) };
    true
}

/// `repoll_ctl(3)`: `epoll_ctl(2)`, -1 and errno on failure. An rsocket added or changed
/// has its descriptor brought up to date first; a datagram socket not yet bound is bound
/// to the wildcard address, so that its descriptor is final.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repoll_ctl(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    event: *mut libc::epoll_event,
) -> c_int {
    guard_int(|| {
        let sock = table::lookup(fd);
        if let (Some(sock), true) = (&sock, op != libc::EPOLL_CTL_DEL) {
            match sock.live() {
                Some(live) => {
                    live.ready(Look::Sleep);
                }
                None if sock.kind == Kind::Dgram => {
                    dgram(sock)?.sync_ready();
                }
                None => {}
            }
        }
        // SAFETY: the caller's event, per epoll_ctl(2)'s contract.
        let r = sys(unsafe { libc::epoll_ctl(epfd, op, fd, event) })?;
        let mut sets = SETS.lock();
        let set = sets.entry(epfd).or_default();
        match (op, sock) {
            (libc::EPOLL_CTL_DEL, _) => {
                set.remove(&fd);
            }
            (_, Some(sock)) => {
                set.insert(fd, Arc::downgrade(&sock));
            }
            _ => {}
        }
        Ok(r)
    })
}

/// `repoll_wait(3)`: `epoll_wait(2)` over rsockets and ordinary descriptors. Like
/// [`rpoll`], it spins on the set's rsockets for the polling time, then sleeps on the set
/// and the rsockets' own events, taking what arrives itself ([`Waiter`]).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn repoll_wait(
    epfd: c_int,
    events: *mut libc::epoll_event,
    maxevents: c_int,
    timeout: c_int,
) -> c_int {
    let collect = |ms: c_int| {
        // SAFETY: the caller's events array, per epoll_wait(2)'s contract.
        sys(unsafe { libc::epoll_wait(epfd, events, maxevents, ms) })
    };
    guard_int(|| {
        let socks: Vec<Arc<Socket>> = match SETS.lock().get(&epfd) {
            Some(set) => set.values().filter_map(Weak::upgrade).collect(),
            None => Vec::new(),
        };
        let lives: Vec<&Live> = socks.iter().filter_map(|s| s.live()).collect();
        if lives.is_empty() || timeout == 0 {
            for live in &lives {
                live.ready(Look::Return);
            }
            return collect(timeout);
        }
        let deadline =
            (timeout > 0).then(|| Instant::now() + Duration::from_millis(timeout as u64));
        let polling = Config::default().polling_time;
        loop {
            // Spin: the rsockets looked at (their descriptors brought up to date), the
            // set asked without waiting.
            let spin_from = Instant::now();
            loop {
                for live in &lives {
                    live.ready(Look::Return);
                }
                let n = collect(0)?;
                if n > 0 {
                    return Ok(n);
                }
                if spin_from.elapsed() >= polling {
                    break;
                }
            }
            let mut waiter = Waiter::new();
            for live in &lives {
                live.wait_in(&mut waiter);
            }
            let n = collect(0)?;
            if n > 0 {
                return Ok(n);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Ok(0);
            }
            let mut set = [libc::pollfd {
                fd: epfd,
                events: libc::POLLIN,
                revents: 0,
            }];
            waiter
                .wait(&mut set, left)
                .map_err(|e| crate::io_errno(&e))?;
        }
    })
}
